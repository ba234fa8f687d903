//! `cargo xtask bench planners [--quick]`: the operator's pure planners timed at 3, 30,
//! 300 and 1000 shards (benches/planners.rs in the operator crate; docs/benchmarks.md).

use std::process::Command;

use anyhow::{Context, Result, bail};

pub fn run(rest: &[String]) -> Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args([
            "bench",
            "-p",
            "meridian-operator",
            "--bench",
            "planners",
            "--",
        ])
        .args(rest)
        .current_dir(super::workspace_root());
    let status = command
        .status()
        .context("cargo bench -p meridian-operator --bench planners")?;
    if !status.success() {
        bail!("the planner benchmark failed");
    }
    Ok(())
}
