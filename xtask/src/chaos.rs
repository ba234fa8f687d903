//! `cargo xtask chaos`: the fault matrix (`e2e/tests/fault_matrix.rs`, and the region
//! link partitions of `e2e/tests/cross_region.rs`) run again and
//! again on the local cluster, with a table per fault: how long writes took to be
//! acknowledged again (p50 and max) and how many acknowledged writes were lost or read
//! stale (both must be 0). The table goes into docs/benchmarks.md.
//!
//! Each scenario appends one JSON line to the file named by `MERIDIAN_CHAOS_REPORT`;
//! this command runs the suite `--runs` times and summarises those lines.

use crate::{cluster, test, util};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::process::Command;

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// How many times to run the whole matrix.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Only the scenarios whose test name contains this (as `cargo test` filters).
    #[arg(long)]
    pub filter: Option<String>,
    /// Leave the local cluster running afterwards.
    #[arg(long)]
    pub keep_cluster: bool,
}

/// One scenario's outcome, as the e2e suite writes it.
#[derive(Debug, serde::Deserialize)]
struct Outcome {
    fault: String,
    recovery_ms: u64,
    acked_writes: u64,
    lost_writes: u64,
    stale_reads: u64,
}

pub fn run(args: ChaosArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    util::ensure_tools()?;
    util::build_binaries()?;
    let result = cluster::up().and_then(|()| run_matrix(&args));
    if !args.keep_cluster {
        eprintln!("\n==> stopping the local cluster");
        if let Err(e) = cluster::down() {
            eprintln!("warning: cluster down failed: {e:#}");
        }
    }
    result
}

fn run_matrix(args: &ChaosArgs) -> Result<()> {
    let report = util::target_dir().join("chaos-report.jsonl");
    // A fresh report per invocation: the table covers these runs only.
    let _ = std::fs::remove_file(&report);
    let env = test::cluster_test_env()?;
    let mut failed_runs = Vec::new();
    for run in 1..=args.runs {
        eprintln!("\n==> fault matrix, run {run} of {}", args.runs);
        let mut cargo = Command::new("cargo");
        cargo
            .current_dir(util::workspace_root())
            // every scenario runs even when one fails
            .args(["test", "--no-fail-fast", "-p", "meridian-e2e"])
            .args(["--test", "fault_matrix", "--test", "cross_region"]);
        if let Some(filter) = &args.filter {
            cargo.arg(filter);
        }
        cargo
            .args(["--", "--nocapture"])
            .env("MERIDIAN_CHAOS_REPORT", &report);
        for (key, value) in &env {
            cargo.env(key, value);
        }
        // Every run counts: a failed scenario is reported in the table's last column.
        if let Err(error) = util::run(&mut cargo) {
            eprintln!("run {run} failed: {error:#}");
            failed_runs.push(run);
        }
    }
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("no scenario reported anything ({})", report.display()))?;
    let outcomes: Vec<Outcome> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", report.display()))?;
    let table = render(&outcomes, args.runs);
    println!("\n{table}");
    let lost: u64 = outcomes.iter().map(|o| o.lost_writes + o.stale_reads).sum();
    if lost > 0 {
        bail!("{lost} acknowledged write(s) lost or read stale (table above)");
    }
    if !failed_runs.is_empty() {
        bail!("run(s) {failed_runs:?} had failing scenarios (output above)");
    }
    Ok(())
}

/// The markdown table: one row per fault, in the order faults first appear.
fn render(outcomes: &[Outcome], runs: u32) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut by_fault: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for outcome in outcomes {
        if !order.contains(&outcome.fault.as_str()) {
            order.push(&outcome.fault);
        }
        by_fault.entry(&outcome.fault).or_default().push(outcome);
    }
    let mut table = format!(
        "| fault ({runs} run(s)) | runs recorded | writes acknowledged again after: p50 | max | acknowledged writes | lost | stale reads |\n|---|---|---|---|---|---|---|\n"
    );
    for fault in order {
        let rows = &by_fault[fault];
        let mut recoveries: Vec<u64> = rows.iter().map(|o| o.recovery_ms).collect();
        recoveries.sort_unstable();
        let p50 = recoveries[(recoveries.len() - 1) / 2];
        let max = recoveries.last().copied().unwrap_or(0);
        let sum = |f: fn(&Outcome) -> u64| rows.iter().map(|o| f(o)).sum::<u64>();
        table.push_str(&format!(
            "| {fault} | {} | {} | {} | {} | {} | {} |\n",
            rows.len(),
            seconds(p50),
            seconds(max),
            sum(|o| o.acked_writes),
            sum(|o| o.lost_writes),
            sum(|o| o.stale_reads),
        ));
    }
    table
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(fault: &str, recovery_ms: u64, lost_writes: u64) -> Outcome {
        Outcome {
            fault: fault.into(),
            recovery_ms,
            acked_writes: 100,
            lost_writes,
            stale_reads: 0,
        }
    }

    #[test]
    fn the_table_has_one_row_per_fault_with_median_and_max() {
        let table = render(
            &[
                outcome("primary killed", 3000, 0),
                outcome("replica killed", 500, 0),
                outcome("primary killed", 1000, 0),
                outcome("primary killed", 2000, 1),
            ],
            3,
        );
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| primary killed | 3 | 2.0 s | 3.0 s | 300 | 1 | 0 |",
                "| replica killed | 1 | 0.5 s | 0.5 s | 100 | 0 | 0 |",
            ]
        );
    }
}
