//! `cargo xtask agent`: the test-fixture node agent. It registers a handful of Nodes with
//! topology labels and runs the pods scheduled onto them as local processes, each with its
//! own loopback address. It stands in for kubelet on machines that cannot run containers;
//! it is NOT a kubelet (no images, cgroups, CNI or kube-proxy). See docs/local-node-agent.md.

mod envvars;
mod image;
mod node;
mod pod;
mod probe;
mod process;
mod volumes;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Admin kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Directory for per-pod state (volumes, pid files) and container logs
    /// (<state-dir>/pods/<namespace>_<pod>/<container>.log).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Directory holding the binaries that stand in for images (e.g. <workspace>/target/debug).
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// Number of regions (region-a, region-b, ...).
    #[arg(long, default_value_t = 2)]
    pub regions: usize,
    /// Zones per region (region-a-1, region-a-2, ...).
    #[arg(long, default_value_t = 3)]
    pub zones_per_region: usize,
    /// Nodes per zone.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_zone: usize,
}

pub fn run(args: AgentArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(agent(args))
}

/// API server address and CA, read from the kubeconfig: pods are pointed at the real API
/// server address (never a ClusterIP, which nothing here would route).
struct ApiEndpoint {
    host: String,
    port: u16,
    ca_pem: Vec<u8>,
}

fn api_endpoint(kubeconfig: &Kubeconfig, path: &Path) -> Result<ApiEndpoint> {
    use base64::Engine;
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .or_else(|| kubeconfig.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .context("kubeconfig has no cluster")?;
    let server = cluster
        .server
        .clone()
        .context("kubeconfig cluster has no server")?;
    let (host, port) = split_server(&server)
        .with_context(|| format!("cannot parse kubeconfig server {server:?}"))?;
    let ca_pem = if let Some(data) = &cluster.certificate_authority_data {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("decoding certificate-authority-data")?
    } else if let Some(file) = &cluster.certificate_authority {
        let file = path.parent().unwrap_or(Path::new(".")).join(file);
        std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
    } else {
        anyhow::bail!(
            "kubeconfig names no certificate authority; pods could not verify the API server"
        )
    };
    Ok(ApiEndpoint { host, port, ca_pem })
}

/// `https://127.0.0.1:6443/` → (`127.0.0.1`, 6443); IPv6 literals keep no brackets.
fn split_server(server: &str) -> Option<(String, u16)> {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        (host, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

async fn agent(args: AgentArgs) -> Result<()> {
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
    let endpoint = api_endpoint(&kubeconfig, &args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    let client = kube::Client::try_from(config).context("building the API client")?;
    let nodes = node::plan(args.regions, args.zones_per_region, args.nodes_per_zone)?;
    let state_dir = std::path::absolute(&args.state_dir).unwrap_or(args.state_dir.clone());
    let pods_dir = state_dir.join("pods");
    std::fs::create_dir_all(&pods_dir)
        .with_context(|| format!("creating {}", pods_dir.display()))?;
    let bin_dir = std::path::absolute(&args.bin_dir).unwrap_or(args.bin_dir.clone());

    let strays = process::kill_strays(&pods_dir);
    if strays > 0 {
        tracing::info!(
            count = strays,
            "killed processes left by a previous agent run"
        );
    }
    let namespaces = process::mount_namespaces_work().await;
    if namespaces {
        tracing::info!(
            "containers run in private mount namespaces with volumes at their mountPath"
        );
    } else {
        tracing::warn!(
            "mount namespaces unavailable: volumes are not visible at their mountPath; pods get KUBECONFIG instead"
        );
    }

    // One token for SIGTERM / SIGINT, so the agent also stops while still registering.
    let stopping = tokio_util::sync::CancellationToken::new();
    {
        let stopping = stopping.clone();
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received: stopping"),
                _ = sigterm.recv() => tracing::info!("SIGTERM received: stopping"),
            }
            stopping.cancel();
        });
    }

    let since = Timestamp::now();
    for n in &nodes {
        let mut delay = Duration::from_millis(500);
        loop {
            match node::register(&client, n, &since).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(node = %n.name, "registering node failed (retrying in {delay:?}): {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopping.cancelled() => return Ok(()),
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    let ctx = Arc::new(pod::Ctx {
        client: client.clone(),
        bin_dir,
        pods_dir,
        claims_dir: state_dir.join("claims"),
        api_host: endpoint.host,
        api_port: endpoint.port,
        ca_pem: endpoint.ca_pem,
        namespaces,
        nodes,
    });
    let heartbeat = tokio::spawn(heartbeats(ctx.clone(), since));
    tracing::info!(
        nodes = ?ctx.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        bin_dir = %ctx.bin_dir.display(),
        state_dir = %state_dir.display(),
        "node agent ready"
    );

    let result = watch_pods(ctx.clone(), stopping).await;

    heartbeat.abort();
    for n in &ctx.nodes {
        if let Err(e) = node::report_status(&ctx.client, n, false, &Timestamp::now()).await {
            tracing::warn!(node = %n.name, "marking node NotReady: {e}");
        }
    }
    tracing::info!("node agent stopped; nodes marked NotReady");
    result
}

/// Renews every node's Lease every 10s and re-posts node status every minute.
async fn heartbeats(ctx: Arc<pod::Ctx>, since: Timestamp) {
    let nodes_api: Api<Node> = Api::all(ctx.client.clone());
    let mut uids: HashMap<String, String> = HashMap::new();
    let mut last_status = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(node::LEASE_RENEW_INTERVAL);
    loop {
        interval.tick().await;
        let post_status = last_status.elapsed() >= node::STATUS_INTERVAL;
        for n in &ctx.nodes {
            if !uids.contains_key(&n.name)
                && let Ok(Some(obj)) = nodes_api.get_opt(&n.name).await
                && let Some(uid) = obj.metadata.uid
            {
                uids.insert(n.name.clone(), uid);
            }
            if let Err(e) =
                node::renew_lease(&ctx.client, n, uids.get(&n.name).map(String::as_str)).await
            {
                tracing::warn!(node = %n.name, "renewing node lease: {e}");
            }
            if post_status {
                // A node deleted behind our back is registered again.
                let result = match nodes_api.get_opt(&n.name).await {
                    Ok(None) => {
                        uids.remove(&n.name);
                        node::register(&ctx.client, n, &since).await
                    }
                    _ => node::report_status(&ctx.client, n, true, &since).await,
                };
                if let Err(e) = result {
                    tracing::warn!(node = %n.name, "posting node status: {e}");
                }
            }
        }
        if post_status {
            last_status = tokio::time::Instant::now();
        }
    }
}

/// Watches pods bound to any node (filtering to ours) and drives one worker per pod until
/// SIGTERM / SIGINT.
async fn watch_pods(
    ctx: Arc<pod::Ctx>,
    stopping: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, pod::PodHandle> = HashMap::new();
    // Pods whose worker already finished (deleted by us): later events about them are stale.
    let mut finished: HashSet<String> = HashSet::new();
    let mut relist: Option<HashSet<String>> = None;

    let ours = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| ctx.node(n).is_some())
    };

    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                match event {
                    Ok(Event::Init) => relist = Some(HashSet::new()),
                    Ok(Event::InitDone) => {
                        if let Some(seen) = relist.take() {
                            for (uid, handle) in workers.iter() {
                                if !seen.contains(uid) {
                                    handle.gone.cancel();
                                }
                            }
                            finished.retain(|uid| seen.contains(uid));
                        }
                    }
                    Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                        if !ours(&p) {
                            continue;
                        }
                        let Some(uid) = p.metadata.uid.clone() else { continue };
                        if let Some(seen) = relist.as_mut() {
                            seen.insert(uid.clone());
                        }
                        if finished.contains(&uid) {
                            continue;
                        }
                        match workers.get(&uid) {
                            Some(handle) => {
                                let _ = handle.updates.send(Arc::new(p));
                            }
                            None => {
                                workers.insert(uid, pod::start(ctx.clone(), p, done_tx.clone()));
                            }
                        }
                    }
                    Ok(Event::Delete(p)) => {
                        if let Some(uid) = p.metadata.uid.as_ref() {
                            if let Some(handle) = workers.get(uid) {
                                handle.gone.cancel();
                            }
                            finished.remove(uid);
                        }
                    }
                    Err(e) => tracing::warn!("pod watch error (retrying): {e}"),
                }
            }
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                finished.insert(uid);
            }
            _ = stopping.cancelled() => break,
        }
    }

    for handle in workers.values() {
        handle.shutdown.cancel();
    }
    let deadline = tokio::time::Instant::now() + pod::SHUTDOWN_GRACE + Duration::from_secs(5);
    while !workers.is_empty() {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(uid)) => {
                workers.remove(&uid);
            }
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_split_into_host_and_port() {
        assert_eq!(
            split_server("https://127.0.0.1:6443"),
            Some(("127.0.0.1".into(), 6443))
        );
        assert_eq!(
            split_server("https://localhost/"),
            Some(("localhost".into(), 443))
        );
        assert_eq!(
            split_server("https://[::1]:6443/x"),
            Some(("::1".into(), 6443))
        );
        assert_eq!(split_server("127.0.0.1:6443"), None);
    }
}
