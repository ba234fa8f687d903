//! `cargo xtask test`: everything CI runs, in order, on a fresh machine.
//!
//! Formatting and lints, generated-file drift, unit and process-level tests, then the
//! local control plane (built once, cached) and the e2e suite against it. The control
//! plane is always taken down again, also when a step fails.

use crate::{cluster, crds, manifests, util};
use anyhow::{Context, Result};
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
    step("build binaries used as pod images");
    util::build_binaries()?;

    if args.no_cluster {
        step("tests (no cluster: e2e and API tests skip)");
        return cargo_test(&[]);
    }

    step("local control plane");
    // Tear down also when `up` itself fails halfway, so no component outlives the run.
    let result = cluster::up().and_then(|()| test_against_cluster());
    if result.is_err() {
        util::print_cluster_logs_tail();
    }
    if !args.keep_cluster {
        step("stopping the local control plane");
        if let Err(e) = cluster::down() {
            eprintln!("warning: cluster down failed: {e:#}");
        }
    }
    result
}

fn test_against_cluster() -> Result<()> {
    let kubeconfig = cluster::kubeconfig_path();
    let kubectl = cluster::kubectl_path();
    let helm = cluster::go_install_helm()?;
    step("tests against the local control plane");
    cargo_test(&[
        ("KUBECONFIG", kubeconfig.to_string_lossy().as_ref()),
        ("KUBECTL", kubectl.to_string_lossy().as_ref()),
        ("HELM", helm.to_string_lossy().as_ref()),
        // The node agent runs real meridian-node pods, so API tests may wait for bootstrap.
        ("MERIDIAN_TEST_WAIT_READY", "1"),
    ])
}

fn cargo_test(env: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::workspace_root())
        .args(["test", "--workspace", "--no-fail-fast"])
        // The e2e suite shares one control plane; its tests create their own namespaces.
        .env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    util::run(&mut cmd).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n(re-run one test with `cargo test -p <crate> <name> -- --nocapture`)"
        )
    })?;
    Ok(())
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}
