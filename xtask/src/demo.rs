//! `cargo xtask demo`: a local control plane running the operator and a two-region cache.

use crate::{cluster, util};
use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::{Duration, Instant};

pub const DEMO_NAMESPACE: &str = "meridian-demo";

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    util::ensure_tools()?;
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
    .context("the operator did not become ready (`kubectl -n meridian-system logs deploy/meridian-operator`)")?;
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
    // The cache pods' NetworkPolicy (enforced on these nodes) admits the namespace's pods;
    // this demo talks to them from this machine, so it admits the node network too.
    let clients = serde_json::json!({"spec": {"networkPolicy": {"clients": [
        {"podSelector": {}},
        {"ipBlock": {"cidr": cluster::NODE_NETWORK}},
    ]}}});
    kubectl(&[
        "-n",
        DEMO_NAMESPACE,
        "patch",
        "cachecluster",
        "demo",
        "--type=merge",
        "-p",
        &clients.to_string(),
    ])?;

    eprintln!("waiting for both regions to become Ready with their region links up ...");
    let start = Instant::now();
    loop {
        let out = kubectl(&[
            "-n",
            DEMO_NAMESPACE,
            "get",
            "cacheregions",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}/{.status.peers[*].connected}{"\n"}{end}"#,
        ])?;
        let states: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        if states.len() == 2 && states.iter().all(|l| l.ends_with("=True/true")) {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("regions not Ready and linked after 5 minutes (name=Ready/linked): {states:?}");
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let region_ip = |region: &str| -> Result<String> {
        let ips = kubectl(&[
            "-n",
            DEMO_NAMESPACE,
            "get",
            "pods",
            "-l",
            &format!("cache.meridian.dev/region={region}"),
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])?;
        ips.split_whitespace()
            .next()
            .map(str::to_string)
            .with_context(|| format!("no pod IP in {region}"))
    };
    let (ip_a, ip_b) = (region_ip("region-a")?, region_ip("region-b")?);
    // authentication is on by default: the operator generated the password Secret
    let password = kubectl(&[
        "-n",
        DEMO_NAMESPACE,
        "get",
        "secret",
        "demo-auth",
        "-o",
        "go-template={{.data.password | base64decode}}",
    ])?;
    show_cross_region_invalidation(&ip_a, &ip_b, &password)?;

    // The region's client Service (named like the CacheRegion), reached the way an
    // application pod would: through kube-proxy's rules on a node.
    let service_ip = kubectl(&[
        "-n",
        DEMO_NAMESPACE,
        "get",
        "service",
        "demo-region-a",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let node_netns = cluster::node_netns(0);
    let through_service = |args: &[&str]| -> Result<String> {
        util::output(
            Command::new("ip")
                .env("REDISCLI_AUTH", &password)
                .args(["netns", "exec", &node_netns, "redis-cli", "-c"])
                .args(["-h", &service_ip, "-p", "6379"])
                .args(args),
        )
        .map(|out| out.trim().to_string())
    };
    println!("\nThrough region-a's client Service demo-region-a ({service_ip}), from a node:");
    println!(
        "  SET via-service yes -> {}",
        through_service(&["SET", "via-service", "yes"])?
    );
    println!(
        "  GET via-service     -> {}",
        through_service(&["GET", "via-service"])?
    );

    println!("\nNodes (kubelet + containerd, one network namespace each):");
    println!("{}", kubectl(&["get", "nodes", "-o", "wide"])?.trim_end());

    let pods = kubectl(&[
        "-n",
        DEMO_NAMESPACE,
        "get",
        "pods",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}"#,
    ])?;
    println!("\nMeridian demo is up: two regions (region-a, region-b) of CacheCluster `demo`.\n");
    println!(
        "  export KUBECONFIG={}",
        cluster::kubeconfig_path().display()
    );
    println!("  alias kubectl={}", cluster::kubectl_path().display());
    println!("  kubectl -n {DEMO_NAMESPACE} get cacheclusters,cacheregions,pods\n");
    println!("Cache nodes (pod, pod IP, node; pod IPs are routed from this machine):");
    for line in pods.lines().filter(|l| !l.is_empty()) {
        println!("  {line}");
    }
    if let Some(ip) = pods.lines().find_map(|l| l.split_whitespace().nth(1)) {
        println!(
            "\nThe client password is in Secret demo-auth (generated by the operator):\n  \
             export REDISCLI_AUTH=$(kubectl -n {DEMO_NAMESPACE} get secret demo-auth -o \
             go-template='{{{{.data.password | base64decode}}}}')\n\
             Try:  redis-cli -c -h {ip} -p 6379 SET greeting hello && redis-cli -c -h {ip} GET greeting"
        );
    }
    println!(
        "\nThe cache pods' NetworkPolicy (enforced on these nodes) admits the namespace's pods \
         and, for this demo, this machine ({}): other pods get no connection.",
        cluster::NODE_NETWORK
    );
    println!("Stop: cargo xtask cluster down");
    Ok(())
}

/// Caches a key in region-b, overwrites it in region-a and shows region-b's copy gone.
fn show_cross_region_invalidation(ip_a: &str, ip_b: &str, password: &str) -> Result<()> {
    let redis_cli = |ip: &str, args: &[&str]| -> Result<String> {
        util::output(
            Command::new("redis-cli")
                .env("REDISCLI_AUTH", password)
                .args(["-c", "-h", ip, "-p", "6379"])
                .args(args),
        )
        .map(|out| out.trim().to_string())
    };
    println!("\nCross-region invalidation (region links wired by the operator):");
    println!(
        "  region-b {ip_b}: SET greeting hello -> {}",
        redis_cli(ip_b, &["SET", "greeting", "hello"])?
    );
    println!(
        "  region-b {ip_b}: GET greeting       -> {}",
        redis_cli(ip_b, &["GET", "greeting"])?
    );
    // region-b's own event reaches region-a first, so region-a's write is the newer one
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "  region-a {ip_a}: SET greeting bonjour -> {}",
        redis_cli(ip_a, &["SET", "greeting", "bonjour"])?
    );
    let written = Instant::now();
    loop {
        let seen = redis_cli(ip_b, &["GET", "greeting"])?;
        if seen.is_empty() || seen == "(nil)" {
            println!(
                "  region-b {ip_b}: GET greeting       -> (nil): stale copy invalidated within {:?}",
                written.elapsed()
            );
            return Ok(());
        }
        if written.elapsed() > Duration::from_secs(10) {
            bail!("region-b still serves {seen:?} 10 s after the write in region-a");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
