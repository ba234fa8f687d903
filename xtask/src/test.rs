//! `cargo xtask test`: everything CI runs, in order, on a fresh machine.
//!
//! Formatting and lints, generated-file drift, a short fuzzing run of every network
//! decoder, unit and process-level tests, then the local control plane (built once,
//! cached) and the e2e suite against it. The control plane is always taken down again,
//! also when a step fails.

use crate::{cluster, crds, fuzz, images, manifests, test_report, util};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::process::Command;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the local control plane and the e2e suite (unit and process tests only).
    #[arg(long)]
    pub no_cluster: bool,
    /// Leave the control plane running afterwards (for debugging a failure).
    #[arg(long)]
    pub keep_cluster: bool,
    /// Skip `cargo fmt --check` and clippy (faster local iterations).
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the short fuzzing run of every fuzz target (`cargo xtask fuzz`).
    #[arg(long)]
    pub no_fuzz: bool,
    /// Skip the benchmark smoke (`cargo xtask bench node --quick`, `bench memory --quick`).
    #[arg(long)]
    pub no_bench: bool,
}

pub fn run(args: TestArgs) -> Result<()> {
    let root = util::workspace_root();
    util::ensure_tools()?;

    if !args.no_lint {
        step("formatting");
        util::run(
            Command::new("cargo")
                .current_dir(&root)
                .args(["fmt", "--all", "--check"]),
        )
        .context("code is not formatted: run `cargo fmt --all`")?;
    }
    step("generated files");
    crds::run(crds::CrdsArgs { check: true })?;
    manifests::run(manifests::ManifestsArgs { check: true })?;
    if !args.no_lint {
        step("clippy");
        util::run(Command::new("cargo").current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    step("build the binaries the process tests start");
    util::build_binaries()?;
    if !args.no_fuzz {
        step(&format!(
            "fuzzing every decoder target for {}s (longer: cargo xtask fuzz --seconds N)",
            fuzz::TEST_SECONDS
        ));
        fuzz::smoke()?;
    }

    if args.no_cluster {
        step("tests (no cluster: e2e and API tests skip)");
        return cargo_test(&[])
            .map(Outcome::report)
            .map_err(TestFailure::report);
    }

    step("local cluster");
    // Tear down also when `up` itself fails halfway, so no component outlives the run.
    let result = cluster::up()
        .map_err(TestFailure::from)
        .and_then(|()| test_against_cluster());
    if result.is_err() {
        util::print_cluster_logs_tail();
    }
    if !args.keep_cluster {
        step("stopping the local cluster");
        if let Err(e) = cluster::down() {
            eprintln!("warning: cluster down failed: {e:#}");
        }
    }
    let result = result.and_then(|outcome| {
        if !args.no_bench {
            bench_smoke()?;
        }
        Ok(outcome)
    });
    // Last, so that the tail CI shows names what failed.
    result.map(Outcome::report).map_err(TestFailure::report)
}

/// The benchmarks' harness still runs: one short round of the throughput and memory
/// benchmarks against redis-server and Valkey, and three side-by-side rounds of CPU per
/// request (tables printed, no bound checked: the machine is shared, docs/benchmarks.md
/// holds the measured runs). After the cluster is gone, so nothing else competes for the
/// cores.
fn bench_smoke() -> Result<()> {
    step("benchmark smoke (bench node --quick [--side-by-side], bench memory --quick)");
    crate::bench::run(&["node".into(), "--quick".into()])?;
    crate::bench::run(&["node".into(), "--quick".into(), "--side-by-side".into()])?;
    crate::bench::run(&["memory".into(), "--quick".into()])
}

/// Tests that passed only when run a second time.
#[derive(Default)]
struct Outcome {
    flaky: Vec<test_report::Failure>,
}

impl Outcome {
    fn report(self) {
        if !self.flaky.is_empty() {
            eprint!("{}", test_report::render_flaky(&self.flaky));
        }
    }
}

/// A failed step, with the failure summary when the failure came from `cargo test`.
struct TestFailure {
    error: anyhow::Error,
    summary: Option<String>,
    flaky: Vec<test_report::Failure>,
}

impl From<anyhow::Error> for TestFailure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            error,
            summary: None,
            flaky: Vec::new(),
        }
    }
}

impl TestFailure {
    fn report(self) -> anyhow::Error {
        Outcome { flaky: self.flaky }.report();
        if let Some(summary) = &self.summary {
            eprint!("{summary}");
        }
        self.error
    }
}

fn test_against_cluster() -> Result<Outcome, TestFailure> {
    let env = cluster_test_env()?;
    step("tests against the local cluster");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cargo_test(&env)
}

/// What the e2e suite needs to find the local cluster, its tools and images.
pub fn cluster_test_env() -> Result<Vec<(&'static str, String)>> {
    let lossy = |path: std::path::PathBuf| path.to_string_lossy().into_owned();
    Ok(vec![
        ("KUBECONFIG", lossy(cluster::kubeconfig_path())),
        ("KUBECTL", lossy(cluster::kubectl_path())),
        ("HELM", lossy(cluster::go_install_helm()?)),
        // The image `cluster up` built and imported into every node.
        (
            "MERIDIAN_NODE_IMAGE",
            format!("{}:{}", images::NODE_REPOSITORY, images::app_version()?),
        ),
        // The nodes run real meridian-node pods, so API tests may wait for bootstrap.
        ("MERIDIAN_TEST_WAIT_READY", "1".into()),
    ])
}

/// Runs the workspace's tests; a test that fails is run once more, alone. It counts
/// as failed only if it fails again, and is reported as flaky (printed last) if not:
/// the e2e and process tests share two cores with a control plane, and one slow
/// moment should not hide every other result. The output is echoed as it comes and
/// kept in `<target dir>/xtask-test-output.log`.
fn cargo_test(env: &[(&str, &str)]) -> Result<Outcome, TestFailure> {
    let log_path = util::target_dir().join("xtask-test-output.log");
    std::fs::create_dir_all(util::target_dir()).context("cannot create the target dir")?;
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let args: Vec<String> = ["test", "--workspace", "--no-fail-fast"]
        .map(String::from)
        .into();
    let (passed, output) = cargo_streamed(&args, env, &mut log)?;
    if passed {
        return Ok(Outcome::default());
    }
    let failed = test_report::failures(&output);
    let mut flaky = Vec::new();
    let mut still_failing = Vec::new();
    // A crashed binary or a build error cannot be cleared by running one test again.
    if failed.unexplained.is_empty() {
        for failure in failed.tests {
            step(&format!(
                "running {} :: {} again, alone",
                failure.binary, failure.test
            ));
            let (passed, _) = cargo_streamed(&failure.rerun_args(), env, &mut log)?;
            if passed {
                flaky.push(failure);
            } else {
                still_failing.push(failure);
            }
        }
    } else {
        still_failing = failed.tests;
    }
    if !still_failing.is_empty() || !failed.unexplained.is_empty() || flaky.is_empty() {
        return Err(TestFailure {
            error: anyhow::anyhow!(
                "cargo test failed (full output: {}; re-run one test with \
                 `cargo test -p <crate> --test <file> <name> -- --nocapture`)",
                log_path.display()
            ),
            summary: Some(test_report::render_failures(
                &still_failing,
                &failed.unexplained,
                &output,
            )),
            flaky,
        });
    }
    Ok(Outcome { flaky })
}

/// Runs `cargo <args>`, echoing stdout and stderr merged in order (cargo's "Running
/// <binary>" lines go to stderr, the results to stdout) and appending them to `log`.
fn cargo_streamed(
    args: &[String],
    env: &[(&str, &str)],
    log: &mut std::fs::File,
) -> Result<(bool, String), TestFailure> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::workspace_root())
        .args(args)
        // The e2e suite shares one control plane; its tests create their own namespaces.
        .env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    eprintln!("+ {}", util::display(&cmd));
    let (reader, writer) = std::io::pipe().context("cannot create a pipe for cargo test")?;
    cmd.stdout(writer.try_clone().context("cannot clone the pipe")?)
        .stderr(writer);
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    // The parent's copies of the write end must go, or the reader never sees the end.
    drop(cmd);

    let mut output = String::new();
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(reader).split(b'\n') {
        let line = line.context("cannot read cargo test output")?;
        let line = String::from_utf8_lossy(&line);
        // Echo and log failures must not stop the run: the copy in memory is what counts.
        let _ = writeln!(stdout, "{line}");
        let _ = writeln!(log, "{line}");
        output.push_str(&line);
        output.push('\n');
    }
    drop(stdout);
    let status = child.wait().context("cannot wait for cargo test")?;
    Ok((status.success(), output))
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}
