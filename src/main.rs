//! `meridian-operator`: runs the CacheCluster and CacheRegion controllers while holding
//! the leader lease, and serves `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Parser;
use meridian_operator::controller::{self, Context};
use meridian_operator::leader::{LeaderElector, LeaseTiming};
use meridian_operator::metrics::Metrics;
use meridian_operator::resources::BuildConfig;
use meridian_operator::server::{self, Health};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "meridian-operator", version, about)]
struct Args {
    /// Address of the /metrics, /healthz and /readyz server. In clusters whose pods share
    /// a host (the local test cluster), set it to the pod IP.
    #[arg(
        long,
        env = "MERIDIAN_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    metrics_addr: SocketAddr,

    /// Cache node image used when a CacheCluster does not set spec.image.
    #[arg(
        long,
        env = "MERIDIAN_NODE_IMAGE",
        default_value = "ghcr.io/meridian-dev/meridian-node:0.1.0"
    )]
    node_image: String,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MERIDIAN_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Namespace of the leader election Lease (default: POD_NAMESPACE, else the
    /// kubeconfig's namespace).
    #[arg(long, env = "MERIDIAN_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "MERIDIAN_LEASE_NAME",
        default_value = "meridian-operator-leader"
    )]
    lease_name: String,

    /// Identity in the Lease (default: POD_NAME, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Run controllers without a Lease (one replica only; for development).
    #[arg(long, env = "MERIDIAN_DISABLE_LEADER_ELECTION")]
    disable_leader_election: bool,

    /// Log format: json or text.
    #[arg(long, env = "MERIDIAN_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                tokio::select! {
                    _ = sigterm.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "meridian-operator".to_string());
    format!("{host}-{}", std::process::id())
}

/// The API server's version, asked again (1 s, doubling to 10 s) until it answers.
async fn wait_for_api_server(
    client: &kube::Client,
) -> k8s_openapi::apimachinery::pkg::version::Info {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match client.apiserver_version().await {
            Ok(version) => return version,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?pause, "the API server does not answer yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    };
    tokio::spawn(async move {
        termination().await;
        tracing::info!("termination signal received, shutting down");
        let _ = shutdown_tx.send(true);
    });

    let metrics = Arc::new(Metrics::default());
    let health = Health::new(metrics.clone());
    let server = tokio::spawn(server::serve(args.metrics_addr, health.clone(), shutdown()));

    let client = kube::Client::try_default().await?;
    // An API server that is down (restarting, upgraded) is waited for: exiting would put
    // the pod in CrashLoopBackOff, and its back-off would outlast the outage.
    let version = tokio::select! {
        version = wait_for_api_server(&client) => version,
        _ = shutdown() => {
            let _ = server.await;
            return Ok(());
        }
    };
    tracing::info!(
        apiserver = %version.git_version,
        node_image = %args.node_image,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        "connected to the API server"
    );
    health.ready.store(true, Ordering::Relaxed);

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let lease_namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let elector = LeaderElector::new(
        client.clone(),
        &lease_namespace,
        &args.lease_name,
        &identity,
        LeaseTiming::default(),
    );

    if !args.disable_leader_election {
        tracing::info!(lease = %args.lease_name, %lease_namespace, %identity, "waiting for leadership");
        tokio::select! {
            acquired = elector.acquire() => acquired?,
            _ = shutdown() => {
                let _ = server.await;
                return Ok(());
            }
        }
        tracing::info!(%identity, "acquired leadership");
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        BuildConfig {
            default_node_image: args.node_image.clone(),
            operator_namespace: std::env::var("POD_NAMESPACE").ok(),
        },
        Some(identity.clone()),
    ));
    let controllers = futures::future::join(
        controller::region::run(ctx.clone(), args.namespace.clone()),
        controller::cluster::run(ctx.clone(), args.namespace.clone()),
    );
    let lease_lost = async {
        if args.disable_leader_election {
            std::future::pending::<()>().await;
        }
        let error = elector.hold().await;
        tracing::error!(%error, "lost leadership; exiting so the pod restarts as a standby");
        std::process::exit(1);
    };
    tokio::select! {
        _ = controllers => tracing::warn!("controllers stopped"),
        _ = lease_lost => {}
        _ = shutdown() => tracing::info!("stopping controllers"),
    }
    metrics.leader.set(0);
    if !args.disable_leader_election
        && let Err(error) = elector.release().await
    {
        tracing::warn!(%error, "could not release the lease");
    }
    let _ = server.await;
    Ok(())
}
