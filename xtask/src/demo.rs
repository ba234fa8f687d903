//! `cargo xtask demo`: a local control plane running the operator and a two-region cache.

use crate::{cluster, util};
use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::{Duration, Instant};

pub const DEMO_NAMESPACE: &str = "meridian-demo";

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    util::ensure_tools()?;
    util::build_binaries()?;
    cluster::up()?;
    let kubectl = |args: &[&str]| -> Result<String> {
        util::output(
            Command::new(cluster::kubectl_path())
                .env("KUBECONFIG", cluster::kubeconfig_path())
                .current_dir(&root)
                .args(args),
        )
    };
    kubectl(&["apply", "--server-side", "-f", "crds/"])?;
    kubectl(&["apply", "--server-side", "-f", "manifests/install.yaml"])?;
    kubectl(&[
        "-n",
        "meridian-system",
        "rollout",
        "status",
        "deployment/meridian-operator",
        "--timeout=180s",
    ])
    .context("the operator did not become ready (logs: target/localkube/agent/pods/)")?;
    kubectl(&["create", "namespace", DEMO_NAMESPACE]).or_else(|e| {
        if format!("{e}").contains("AlreadyExists") {
            Ok(String::new())
        } else {
            Err(e)
        }
    })?;
    kubectl(&[
        "-n",
        DEMO_NAMESPACE,
        "apply",
        "--server-side",
        "-f",
        "examples/two-regions.yaml",
    ])?;

    eprintln!("waiting for both regions to become Ready ...");
    let start = Instant::now();
    loop {
        let out = kubectl(&[
            "-n",
            DEMO_NAMESPACE,
            "get",
            "cacheregions",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ])?;
        let states: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        if states.len() == 2 && states.iter().all(|l| l.ends_with("=True")) {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("regions not Ready after 5 minutes: {states:?}");
        }
        std::thread::sleep(Duration::from_secs(3));
    }

    let pods = kubectl(&[
        "-n",
        DEMO_NAMESPACE,
        "get",
        "pods",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}"#,
    ])?;
    println!("\nMeridian demo is up: two regions (region-a, region-b) of CacheCluster `demo`.\n");
    println!(
        "  export KUBECONFIG={}",
        cluster::kubeconfig_path().display()
    );
    println!("  alias kubectl={}", cluster::kubectl_path().display());
    println!("  kubectl -n {DEMO_NAMESPACE} get cacheclusters,cacheregions,pods\n");
    println!("Cache nodes (pods run as local processes, each on its own loopback address):");
    for line in pods.lines().filter(|l| !l.is_empty()) {
        println!("  {line}");
    }
    if let Some(ip) = pods.lines().find_map(|l| l.split_whitespace().nth(1)) {
        println!(
            "\nTry:  redis-cli -c -h {ip} -p 6379 SET greeting hello && redis-cli -c -h {ip} GET greeting"
        );
    }
    println!("Stop: cargo xtask cluster down");
    Ok(())
}
