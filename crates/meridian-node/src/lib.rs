//! Meridian cache node: a Redis-compatible (RESP2/RESP3) cache server whose
//! keyspace is partitioned by cluster hash slot.

pub mod acl;
pub mod acl_file;
pub mod blocking;
pub mod broker;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod exec;
pub mod file_watch;
#[doc(hidden)]
pub mod fuzzing;
pub mod glob;
pub mod http;
pub mod io_threads;
pub mod metrics;
pub mod migration;
pub mod net;
pub mod notify;
pub mod origin;
pub mod orphans;
pub mod os;
pub mod protocol;
pub mod region;
pub mod replication;
pub mod scripting;
pub mod server;
pub mod settings;
pub mod state;
pub mod store;
pub mod tls;
pub mod tracking;
pub mod write_hooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::error::NodeError;
use crate::protocol::Limits;
use crate::state::{Counters, RuntimeConfig, Shared};
use crate::store::Db;

/// Connections the kernel completes before the node accepts them (the kernel caps it
/// at `net.core.somaxconn`). The default of 128 drops the handshakes of a burst of
/// clients reconnecting at once (after a failover, or a flood beyond maxclients), and
/// each dropped handshake costs its client a one-second SYN retransmission.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| NodeError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Builds the shared state from configuration, without TLS.
pub fn build_shared(config: &Config) -> Arc<Shared> {
    build_shared_with(config, tls::Tls::default())
}

/// Builds the shared state from configuration and the node's loaded TLS.
/// Longest a Lua script may run before the node stops it (Redis's busy-reply threshold).
const SCRIPT_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn build_shared_with(config: &Config, tls: tls::Tls) -> Arc<Shared> {
    let repl = replication::Replication::new(
        config.min_replicas_to_write,
        config.min_replicas_max_lag,
        config.primary_auth.clone(),
        config.managed,
    );
    *repl.primary_user.lock() = config.primary_user.clone().filter(|user| !user.is_empty());
    repl.log
        .set_capacity(usize::try_from(config.repl_backlog_size).unwrap_or(usize::MAX));
    let tracking = Arc::new(tracking::Tracking::default());
    let broker = Arc::new(broker::Broker::default());
    let keyspace_events = Arc::new(notify::KeyspaceEvents::new(
        broker.clone(),
        config.notify_keyspace_events,
    ));
    let hooks = write_hooks::NodeWriteHooks {
        log: repl.log.clone(),
        tracking: tracking.clone(),
        keyspace_events: keyspace_events.clone(),
    };
    let db = Db::with_hooks(
        config.shards,
        config.maxmemory,
        config.maxmemory_policy,
        Arc::new(hooks),
    );
    repl.timeout_secs
        .store(config.repl_timeout, std::sync::atomic::Ordering::Relaxed);
    Arc::new_cyclic(|me| Shared {
        me: me.clone(),
        db,
        repl,
        config: RuntimeConfig {
            requirepass: RwLock::new(
                config
                    .requirepass
                    .clone()
                    .filter(|password| !password.is_empty()),
            ),
            limits: Limits {
                max_bulk_len: usize::try_from(config.proto_max_bulk_len).unwrap_or(usize::MAX),
                max_query_buffer: usize::try_from(config.client_query_buffer_limit)
                    .unwrap_or(usize::MAX),
                ..Limits::default()
            },
            settings: settings::Settings::new(&[
                (
                    settings::Num::TcpKeepalive,
                    i64::try_from(config.tcp_keepalive).unwrap_or(i64::MAX),
                ),
                (
                    settings::Num::ProtoMaxBulkLen,
                    i64::try_from(config.proto_max_bulk_len).unwrap_or(i64::MAX),
                ),
            ]),
            idle_timeout_secs: AtomicU64::new(config.timeout),
            maxclients: AtomicU64::new(config.maxclients),
            protected_mode: AtomicBool::new(config.protected_mode),
        },
        node_id: config.node_id(),
        bind: config.bind.to_string(),
        port: config.port,
        started: Instant::now(),
        run_id: replication::backlog::new_replid(),
        clients: Mutex::new(BTreeMap::new()),
        next_client_id: AtomicU64::new(1),
        broker,
        keyspace_events,
        blocking: Default::default(),
        scripts: crate::scripting::Scripts::new(SCRIPT_TIME_LIMIT),
        tracking,
        counters: Counters::default(),
        command_calls: state::CommandCalls::new(commands::COMMANDS.len()),
        topology: Default::default(),
        topology_update: Mutex::new(()),
        migrations: Default::default(),
        in_flight: Default::default(),
        orphans: Default::default(),
        shutting_down: AtomicBool::new(false),
        origin: origin::config_from(config).map(|origin| Arc::new(origin::Origin::new(origin))),
        regions: region::Regions::new(region::RegionSettings::from_config(config)),
        pause: Default::default(),
        over_limit_pending: Default::default(),
        tls: Arc::new(tls),
        acl: acl::Acl::new(
            commands::acl_catalog(),
            config
                .requirepass
                .as_deref()
                .filter(|password| !password.is_empty())
                .map(str::as_bytes),
        ),
        acl_file: config
            .acl_file
            .clone()
            .filter(|path| !path.as_os_str().is_empty()),
    })
}

/// Runs the node until `stop` resolves, then drains connections and returns.
pub async fn run(
    config: Config,
    io_threads: Arc<io_threads::IoThreads>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    origin::check(&config).map_err(NodeError::Config)?;
    let tls = tls::Tls::start(config.tls_settings()).map_err(NodeError::Config)?;
    let shared = build_shared_with(&config, tls);
    // a bad ACL file stops the node: starting with other users than intended is worse
    acl_file::load(&shared)
        .await
        .map_err(|error| NodeError::Config(format!("--acl-file: {error}")))?;
    let resp_listener = bind(SocketAddr::new(config.bind, config.port))?;
    let metrics_listener = bind(SocketAddr::new(config.bind, config.metrics_port))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let http_listener = match config.http_port {
        0 => None,
        port => Some(bind(SocketAddr::new(config.bind, port))?),
    };
    let link_listener = match config.region_port {
        0 => None,
        port => Some(bind(SocketAddr::new(config.bind, port))?),
    };
    let mut registry = metrics::registry(shared.clone());
    http::metrics::register(&mut registry);
    region::register_metrics(&mut registry);
    let registry = Arc::new(registry);
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        registry,
        ready.clone(),
        shutdown_rx.clone(),
    ));
    let http_task = http_listener.map(|listener| {
        tokio::spawn(http::serve(
            shared.clone(),
            listener,
            config.http_port,
            http::HttpLimits::from_config(&config),
            shutdown_rx.clone(),
        ))
    });
    // Certificates renewed in the mounted Secret take effect without a restart.
    tokio::spawn(shared.tls.clone().reload_on_change(shutdown_rx.clone()));
    if shared.acl_file.is_some() {
        tokio::spawn(acl_file::watch(shared.clone(), shutdown_rx.clone()));
    }
    let link_task = link_listener.map(|listener| {
        tokio::spawn(region::link::serve(
            shared.clone(),
            listener,
            shutdown_rx.clone(),
        ))
    });
    let prune_task = tokio::spawn({
        let shared = shared.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                shared.regions.versions.prune();
            }
        }
    });
    let expiry_task = tokio::spawn(store::expiry::run_forever(shared.clone(), |shared| {
        &shared.db
    }));
    let ping_task = tokio::spawn(replication::primary::ping_forever(shared.clone()));
    let orphans_task = tokio::spawn(orphans::sweep::run_forever(shared.clone()));
    let flusher_task = tokio::spawn(origin::flusher::run_forever(shared.clone()));
    let (active_tx, mut active_rx) = mpsc::channel::<()>(1);
    let accept_task = tokio::spawn(server::accept_loop(
        shared.clone(),
        resp_listener,
        io_threads.clone(),
        shutdown_rx,
        active_tx,
    ));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        node_id = %shared.node_id,
        addr = %SocketAddr::new(config.bind, config.port),
        metrics = %SocketAddr::new(config.bind, config.metrics_port),
        maxmemory = config.maxmemory,
        policy = %config.maxmemory_policy,
        managed = config.managed,
        io_threads = io_threads.count(),
        "meridian-node ready"
    );
    stop.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    shared.shutting_down.store(true, Ordering::Relaxed);
    ready.store(false, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    // client connections read the stop from `shutting_down`; this wakes the idle ones
    for handle in shared.clients.lock().values() {
        let _ = handle.events.send(client::ClientEvent::NodeStopping);
    }
    let _ = accept_task.await;
    // every connection task holds a sender; recv() returns None once all ended
    let drained = tokio::time::timeout(
        Duration::from_secs(config.shutdown_timeout),
        active_rx.recv(),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown timeout reached with connections still open");
    }
    // write-behind: the writes still queued get one last chance (replicas keep theirs)
    flusher_task.abort();
    let _ = flusher_task.await;
    origin::flusher::final_flush(&shared, Duration::from_secs(config.shutdown_timeout.max(1)))
        .await;
    expiry_task.abort();
    orphans_task.abort();
    prune_task.abort();
    if let Some(task) = link_task {
        task.abort();
    }
    for peer in shared.regions.peers() {
        peer.stop();
    }
    ping_task.abort();
    if let Some(task) = http_task {
        task.abort();
    }
    let _ = metrics_task.await;
    tracing::info!("bye");
    Ok(())
}
