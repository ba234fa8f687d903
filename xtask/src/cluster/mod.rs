//! `cargo xtask cluster up|down|status` (owned by the control-plane work).

use anyhow::Result;

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(_args: ClusterArgs) -> Result<()> {
    anyhow::bail!("cluster: not implemented yet")
}
