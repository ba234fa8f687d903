//! Prometheus metrics (read from the node's counters at scrape time) and the
//! small HTTP server for /metrics, /healthz and /readyz.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::commands::COMMANDS;
use crate::error::SyncFailure;
use crate::state::Shared;

struct NodeCollector {
    shared: Arc<Shared>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeCollector")
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let shared = &self.shared;
        let db = &shared.db;
        let counters = &shared.counters;
        let (hits, misses, expired, evicted) = db.counters();
        gauge(
            &mut encoder,
            "meridian_connected_clients",
            "Connected clients",
            shared.connected_clients() as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_repl_offset",
            "Replication offset (bytes of the replication stream produced or applied)",
            shared.repl.log.offset() as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_connected_replicas",
            "Replicas attached to this primary",
            shared.repl.replicas.lock().len() as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_repl_lag_seconds",
            "Largest time since an attached replica's last acknowledgement",
            shared.repl.max_lag_seconds() as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_repl_link_up",
            "1 when this replica's link to its primary is up, 0 when down or not a replica",
            i64::from(
                shared
                    .repl
                    .link
                    .lock()
                    .as_ref()
                    .is_some_and(|link| link.status == "connected"),
            ),
        )?;
        let offset = shared.repl.log.offset();
        gauge(
            &mut encoder,
            "meridian_repl_lag_bytes",
            "Largest replication lag in bytes (this primary's offset minus the replica's \
             acknowledged offset) among attached replicas",
            i64::try_from(shared.repl.max_lag_bytes(offset)).unwrap_or(i64::MAX),
        )?;
        {
            let replicas: Vec<_> = shared.repl.replicas.lock().values().cloned().collect();
            let mut metric = encoder.encode_descriptor(
                "meridian_replica_lag_bytes",
                "Replication lag of each attached replica in bytes (this primary's offset \
                 minus the replica's acknowledged offset), by the replica's ip:port",
                None,
                MetricType::Gauge,
            )?;
            for replica in &replicas {
                let labels = [("replica", replica.name())];
                let lag = i64::try_from(replica.lag_bytes(offset)).unwrap_or(i64::MAX);
                ConstGauge::new(lag).encode(metric.encode_family(&labels)?)?;
            }
            let mut metric = encoder.encode_descriptor(
                "meridian_replica_lag_seconds",
                "Seconds since each attached replica's last acknowledgement, by its ip:port",
                None,
                MetricType::Gauge,
            )?;
            for replica in &replicas {
                let labels = [("replica", replica.name())];
                let lag = i64::try_from(replica.lag_seconds()).unwrap_or(i64::MAX);
                ConstGauge::new(lag).encode(metric.encode_family(&labels)?)?;
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "meridian_repl_sync_failures",
                "Full syncs and streams from the primary this replica failed, by reason \
                 (it kept its data and retried)",
                None,
                MetricType::Counter,
            )?;
            for failure in SyncFailure::ALL {
                let labels = [("reason", failure.name())];
                let count = shared.repl.counters.sync_failures(failure);
                ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut encoder,
            "meridian_repl_acks_clamped",
            "Replica acknowledgements for more than this primary sent them, clamped to the \
             sent offset",
            shared.repl.counters.acks_clamped.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "meridian_repl_acks_invalid",
            "Replica acknowledgements with a negative or non-numeric offset, ignored",
            shared.repl.counters.acks_invalid.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "meridian_repl_replicas_timed_out",
            "Replicas this primary dropped because they stopped reading for the replication \
             timeout",
            shared
                .repl
                .counters
                .replicas_timed_out
                .load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "meridian_repl_full_sync_refused",
            "Full syncs this replica refused because they would have replaced its data with \
             another history (its primary restarted without its data)",
            shared
                .repl
                .counters
                .sync_full_refused
                .load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "meridian_connections_received",
            "Connections accepted",
            counters.connections_received.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "meridian_commands_processed",
            "Commands processed",
            counters.commands_processed.get(),
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "meridian_command_calls",
                "Calls per command",
                None,
                MetricType::Counter,
            )?;
            for (position, spec) in COMMANDS.iter().enumerate() {
                let calls = shared.command_calls.get(position);
                if calls > 0 {
                    let labels = [("command", spec.name)];
                    let family = metric.encode_family(&labels)?;
                    ConstCounter::new(calls).encode(family)?;
                }
            }
        }
        gauge(
            &mut encoder,
            "meridian_keys",
            "Keys stored",
            db.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_expiring_keys",
            "Keys with a TTL",
            db.volatile_len() as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_memory_used_bytes",
            "Accounted memory of stored data",
            db.used_memory() as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_memory_max_bytes",
            "maxmemory (0 = unlimited)",
            db.maxmemory() as i64,
        )?;
        counter(
            &mut encoder,
            "meridian_keyspace_hits",
            "Successful key lookups",
            hits,
        )?;
        counter(
            &mut encoder,
            "meridian_keyspace_misses",
            "Failed key lookups",
            misses,
        )?;
        counter(
            &mut encoder,
            "meridian_expired_keys",
            "Keys removed by expiry",
            expired,
        )?;
        counter(
            &mut encoder,
            "meridian_evicted_keys",
            "Keys removed by eviction",
            evicted,
        )?;
        counter(
            &mut encoder,
            "meridian_orphan_keys_deleted",
            "Keys a primary deleted from slots its shard lost (see docs/node.md)",
            shared.orphans.deleted.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "meridian_net_input_bytes",
            "Bytes read from clients",
            counters.net_input_bytes.get(),
        )?;
        counter(
            &mut encoder,
            "meridian_net_output_bytes",
            "Bytes written to clients",
            counters.net_output_bytes.get(),
        )?;
        counter(
            &mut encoder,
            "meridian_pubsub_messages",
            "Messages published",
            counters.pubsub_messages.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "meridian_pubsub_channels",
            "Channels with subscribers",
            shared.broker.channel_count() as i64,
        )?;
        let epoch = shared.topology.load().as_ref().map_or(0, |map| map.epoch);
        gauge(
            &mut encoder,
            "meridian_topology_epoch",
            "Epoch of the applied topology map",
            epoch as i64,
        )?;
        gauge(
            &mut encoder,
            "meridian_uptime_seconds",
            "Seconds since start",
            shared.uptime_seconds() as i64,
        )?;
        if let Some(queue) = shared
            .origin
            .as_ref()
            .and_then(|origin| origin.write_behind.as_ref())
        {
            write_behind(&mut encoder, &queue.stats(std::time::Instant::now()))?;
        }
        Ok(())
    }
}

/// The write-behind queue, on nodes that have one (replicas report their copy).
fn write_behind(
    encoder: &mut DescriptorEncoder,
    stats: &crate::origin::write_behind::QueueStats,
) -> fmt::Result {
    gauge(
        encoder,
        "meridian_origin_write_behind_depth",
        "Keys whose latest write the origin has not taken yet (write-behind queue)",
        i64::try_from(stats.depth).unwrap_or(i64::MAX),
    )?;
    let metric = encoder.encode_descriptor(
        "meridian_origin_write_behind_oldest_age_seconds",
        "Age of the oldest write-behind write not at the origin yet (0 when none)",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(stats.oldest_age.as_secs_f64()).encode(metric)?;
    counter(
        encoder,
        "meridian_origin_write_behind_flushed",
        "Write-behind origin requests that succeeded",
        stats.flushed,
    )?;
    counter(
        encoder,
        "meridian_origin_write_behind_failures",
        "Write-behind origin requests that failed (retried with backoff)",
        stats.failures,
    )?;
    counter(
        encoder,
        "meridian_origin_write_behind_refused",
        "Writes refused because the write-behind queue was full",
        stats.refused,
    )
}

pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector { shared }));
    registry
}

pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    text
}

/// Scrapes and probes answered at once: a client that opens connections and sends
/// nothing holds each for the 5 s request timeout, never more than these.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves /metrics, /healthz and /readyz until shutdown; beyond [`MAX_CONNECTIONS`] a
/// connection is answered 503 and closed.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    tokio::spawn(crate::net::answer_and_close(
                        crate::net::Stream::Plain(stream),
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    ));
                    continue;
                };
                let registry = registry.clone();
                let ready = ready.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &registry, &ready)).await;
                    drop(permit);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    registry: &Registry,
    ready: &AtomicBool,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || request.len() > 16 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let line = request
        .split(|&byte| byte == b'\r')
        .next()
        .unwrap_or_default();
    let mut parts = line.split(|&byte| byte == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split(|&byte| byte == b'?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(registry),
        ),
        (b"GET" | b"HEAD", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        (b"GET" | b"HEAD", b"/readyz") if ready.load(Ordering::Relaxed) => {
            ("200 OK", "text/plain", "ready\n".to_string())
        }
        (b"GET" | b"HEAD", b"/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        (b"GET" | b"HEAD", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != b"HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
