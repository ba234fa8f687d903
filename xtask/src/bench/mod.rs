//! `cargo xtask bench <name>` (owned by the node work).

use anyhow::Result;

pub fn run(args: &[String]) -> Result<()> {
    anyhow::bail!("bench {args:?}: not implemented yet")
}
