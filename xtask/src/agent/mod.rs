//! Test-fixture node agent (owned by the node-agent work).

use anyhow::Result;

#[derive(clap::Args)]
pub struct AgentArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(_args: AgentArgs) -> Result<()> {
    anyhow::bail!("agent: not implemented yet")
}
