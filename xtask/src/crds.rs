//! `cargo xtask crds [--check]` (owned by the API work).

use anyhow::Result;

#[derive(clap::Args)]
pub struct CrdsArgs {
    /// Fail if crds/ differs from what the Rust types generate.
    #[arg(long)]
    pub check: bool,
}

pub fn run(_args: CrdsArgs) -> Result<()> {
    anyhow::bail!("crds: not implemented yet")
}
