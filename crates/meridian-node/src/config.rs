//! Command-line flags and environment variables.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::error::NodeError;
use crate::store::Policy;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "meridian-node",
    version,
    about = "Meridian cache node: a Redis-compatible cache server"
)]
pub struct Config {
    /// Address every listener (RESP, metrics) binds to.
    #[arg(long, env = "MERIDIAN_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// RESP port.
    #[arg(long, env = "MERIDIAN_PORT", default_value_t = 6379)]
    pub port: u16,
    /// Prometheus metrics, /healthz and /readyz port.
    #[arg(long, env = "MERIDIAN_METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Node id (pod name); defaults to the hostname.
    #[arg(long, env = "MERIDIAN_NODE_ID")]
    pub node_id: Option<String>,
    /// Memory limit: 0 (none), bytes, or with a unit (100mb, 1gb, 256Mi, 1Gi).
    #[arg(long, env = "MERIDIAN_MAXMEMORY", default_value = "0", value_parser = parse_memory)]
    pub maxmemory: u64,
    /// Eviction policy: sieve, allkeys-lru, allkeys-lfu, allkeys-random, volatile-lru,
    /// volatile-lfu, volatile-random, volatile-ttl, noeviction.
    #[arg(long, env = "MERIDIAN_MAXMEMORY_POLICY", default_value = "sieve")]
    pub maxmemory_policy: Policy,
    /// Password required from clients (AUTH / HELLO AUTH).
    #[arg(long, env = "MERIDIAN_PASSWORD", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Threads serving client connections, each with its own runtime (0 = one per core).
    #[arg(long, env = "MERIDIAN_IO_THREADS", default_value_t = 0)]
    pub io_threads: usize,
    /// Lock-striped keyspace shards (rounded up to a power of two).
    #[arg(long, env = "MERIDIAN_SHARDS", default_value_t = 64)]
    pub shards: usize,
    /// Seconds to wait for in-flight connections on SIGTERM.
    #[arg(long, env = "MERIDIAN_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// Largest accepted bulk argument (Redis proto-max-bulk-len; CONFIG SET changes it).
    #[arg(long, env = "MERIDIAN_PROTO_MAX_BULK_LEN", default_value = "512mb", value_parser = parse_memory)]
    pub proto_max_bulk_len: u64,
    /// Seconds of silence after which a client connection's socket sends TCP keepalive
    /// probes (Redis `tcp-keepalive`; 0 = none); a peer that stopped answering them
    /// is disconnected. CONFIG SET tcp-keepalive changes it for new connections.
    #[arg(long, env = "MERIDIAN_TCP_KEEPALIVE", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=i32::MAX as u64))]
    pub tcp_keepalive: u64,
    /// Largest unparsed input per client before it is disconnected (client-query-buffer-limit).
    #[arg(long, env = "MERIDIAN_CLIENT_QUERY_BUFFER_LIMIT", default_value = "1gb", value_parser = parse_memory)]
    pub client_query_buffer_limit: u64,
    /// Password for the link to the primary; defaults to --requirepass.
    #[arg(long, env = "MERIDIAN_PRIMARY_AUTH", hide_env_values = true)]
    pub primary_auth: Option<String>,
    /// ACL user the link to the primary logs in as (`AUTH <user> <password>` with the
    /// primary auth password); without it the link sends `AUTH <password>` (the
    /// primary's default user). The user needs `+psync +replconf +ping` (see docs/node.md).
    #[arg(long, env = "MERIDIAN_PRIMARY_USER")]
    pub primary_user: Option<String>,
    /// Redis aclfile with the node's users (`user <name> <rules...>` per line); loaded
    /// at start (a bad file stops the node), reloaded when it changes (checked every
    /// 5 s; a bad reload keeps the users in force) and by ACL LOAD.
    #[arg(long, env = "MERIDIAN_ACL_FILE")]
    pub acl_file: Option<PathBuf>,
    /// Replication backlog kept for partial resynchronisation.
    #[arg(long, env = "MERIDIAN_REPL_BACKLOG_SIZE", default_value = "16mb", value_parser = parse_memory)]
    pub repl_backlog_size: u64,
    /// Seconds without progress before a replication link is dropped (Redis
    /// repl-timeout): a replica's silent primary (keep above the primary's 10 s PING
    /// period) or stalled snapshot, a primary's write to a replica that stopped reading.
    #[arg(long, env = "MERIDIAN_REPL_TIMEOUT", default_value_t = crate::replication::DEFAULT_TIMEOUT_SECS)]
    pub repl_timeout: u64,
    /// Refuse writes unless this many replicas are connected with little lag (0 = off).
    #[arg(long, env = "MERIDIAN_MIN_REPLICAS_TO_WRITE", default_value_t = 0)]
    pub min_replicas_to_write: u64,
    /// Largest ACK age in seconds for a replica to count for --min-replicas-to-write.
    #[arg(long, env = "MERIDIAN_MIN_REPLICAS_MAX_LAG", default_value_t = 10)]
    pub min_replicas_max_lag: u64,
    /// HTTP API port (GET/PUT/DELETE /cache/{key}, POST /invalidate); 0 disables it.
    #[arg(long, env = "MERIDIAN_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Seconds a RESP client may stay idle before it is disconnected (Redis `timeout`;
    /// 0 = never). Pub/sub subscribers and replicas are exempt.
    #[arg(long, env = "MERIDIAN_TIMEOUT", default_value_t = 0)]
    pub timeout: u64,
    /// Redis `notify-keyspace-events`: which keyspace events writes publish (letters
    /// K E g $ l s h z x e t m n d A as in Redis; empty = none, the default).
    #[arg(long, env = "MERIDIAN_NOTIFY_KEYSPACE_EVENTS", default_value = "",
          value_parser = parse_notify_flags)]
    pub notify_keyspace_events: u32,
    /// RESP clients connected at once (Redis `maxclients`); one more is answered `-ERR max
    /// number of clients reached` and closed, unless it comes from a node of this
    /// region's topology (replicas, slot migrations).
    #[arg(long, env = "MERIDIAN_MAXCLIENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub maxclients: u64,
    /// Redis `protected-mode`: while the `default` user has no password, only loopback
    /// clients are served (RESP and the HTTP API); others are told why and closed.
    #[arg(long, env = "MERIDIAN_PROTECTED_MODE", default_value = "yes", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub protected_mode: bool,
    /// Redis `disable-thp`: no transparent huge pages for this process (their first
    /// touch zeroes 2 MiB inside whatever request allocates there).
    #[arg(long, env = "MERIDIAN_DISABLE_THP", default_value = "yes", value_parser = parse_yes_no, action = clap::ArgAction::Set)]
    pub disable_thp: bool,
    /// HTTP API connections at once; one more is answered 503 and closed.
    #[arg(long, env = "MERIDIAN_HTTP_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// Milliseconds an HTTP client has to send a request's headers before its
    /// connection is closed (slow clients cannot hold connections).
    #[arg(long, env = "MERIDIAN_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_ms: u64,
    /// Milliseconds an HTTP client has to send a request's body (408 after that).
    #[arg(long, env = "MERIDIAN_HTTP_BODY_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout_ms: u64,
    /// Origin base URL (http://...) for read-through / write-through.
    #[arg(long, env = "MERIDIAN_ORIGIN_URL")]
    pub origin_url: Option<String>,
    /// On a miss, fetch `<origin>/<key>` and cache it (single-flight per key).
    #[arg(long, env = "MERIDIAN_ORIGIN_READ_THROUGH", action = clap::ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub origin_read_through: bool,
    /// Write SET / DEL / HTTP PUT / DELETE to the origin before the cache.
    #[arg(long, env = "MERIDIAN_ORIGIN_WRITE_THROUGH", action = clap::ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub origin_write_through: bool,
    /// Acknowledge SET / DEL / HTTP PUT / DELETE once cached and send them to the
    /// origin later (queued per key, replicated); excludes write-through.
    #[arg(long, env = "MERIDIAN_ORIGIN_WRITE_BEHIND", action = clap::ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub origin_write_behind: bool,
    /// Keys the write-behind queue holds at most; writes to other keys are refused
    /// beyond it (writes to queued keys still coalesce).
    #[arg(long, env = "MERIDIAN_ORIGIN_WRITE_BEHIND_MAX_KEYS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub origin_write_behind_max_keys: u64,
    /// Milliseconds between write-behind flush rounds when no write wakes the flusher.
    #[arg(long, env = "MERIDIAN_ORIGIN_WRITE_BEHIND_FLUSH_INTERVAL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub origin_write_behind_flush_interval_ms: u64,
    /// Origin requests one write-behind flush round sends concurrently at most.
    #[arg(long, env = "MERIDIAN_ORIGIN_WRITE_BEHIND_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub origin_write_behind_batch: u64,
    /// Timeout of one origin request in milliseconds.
    #[arg(long, env = "MERIDIAN_ORIGIN_TIMEOUT_MS", default_value_t = 1000)]
    pub origin_timeout_ms: u64,
    /// TTL in seconds of entries filled from the origin (0 = none).
    #[arg(long, env = "MERIDIAN_DEFAULT_TTL_SECONDS", default_value_t = 0)]
    pub default_ttl_seconds: u64,
    /// Cluster name; region links from another cluster are refused.
    #[arg(long, env = "MERIDIAN_CLUSTER", default_value = "meridian")]
    pub cluster: String,
    /// This node's region (event origin, link handshake).
    #[arg(long, env = "MERIDIAN_REGION", default_value = "default")]
    pub region: String,
    /// ACL user this node's region links (LINK.HELLO) and region fan-out
    /// (INVALIDATE on the other primaries) log in as, with the password they already
    /// use (--requirepass). Without it they authenticate as the peers' default user.
    #[arg(long, env = "MERIDIAN_REGION_LINK_USER")]
    pub region_link_user: Option<String>,
    /// Region link port (peer regions connect here); 0 disables the listener.
    #[arg(
        long = "region-port",
        env = "MERIDIAN_LINK_PORT",
        default_value_t = 16379
    )]
    pub region_port: u16,
    /// Directory with tls.crt, tls.key and ca.crt (a kubernetes.io/tls Secret): the
    /// RESP, HTTP API and region-link ports then accept only TLS, and connections to
    /// other nodes (replication, migration, fan-out, region links) use TLS, verified
    /// against ca.crt. The metrics/health port stays plain text.
    #[arg(long, env = "MERIDIAN_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Name (DNS SAN) other nodes' certificates are verified for on outbound
    /// connections, instead of the dialed host; lets one certificate serve every node.
    #[arg(long, env = "MERIDIAN_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// With --tls-dir: replicas (PSYNC/SYNC) and region links must present a client
    /// certificate issued by ca.crt (mutual TLS between the cluster's nodes).
    #[arg(long, env = "MERIDIAN_TLS_REQUIRE_PEER_CERTS", default_value_t = false)]
    pub tls_require_peer_certs: bool,
    /// What peer regions do with this region's writes: invalidate or replicate.
    #[arg(
        long,
        env = "MERIDIAN_CROSS_REGION_MODE",
        value_enum,
        default_value = "invalidate"
    )]
    pub cross_region_mode: CrossRegionMode,
    /// eventual: acknowledge locally; strong: only after every peer region acknowledged.
    #[arg(
        long,
        env = "MERIDIAN_CONSISTENCY",
        value_enum,
        default_value = "eventual"
    )]
    pub consistency: Consistency,
    /// How long a strong write waits for the peer regions.
    #[arg(long, env = "MERIDIAN_STRONG_TIMEOUT_MS", default_value_t = 500)]
    pub strong_timeout_ms: u64,
    /// How long key versions and remote-invalidation tombstones are remembered.
    #[arg(long, env = "MERIDIAN_REGION_TOMBSTONE_MS", default_value_t = 10_000)]
    pub region_tombstone_ms: u64,
    /// Events queued per peer region before slots are marked dirty instead.
    #[arg(long, env = "MERIDIAN_REGION_QUEUE_LIMIT", default_value_t = 100_000)]
    pub region_queue_limit: usize,
    /// Bytes of replicated values queued per peer region before slots are
    /// marked dirty instead (replicate mode; invalidations hold no value).
    #[arg(long, env = "MERIDIAN_REGION_QUEUE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub region_queue_max_bytes: usize,
    /// Replicate mode: the largest value (a string's length, another type's DUMP
    /// payload) shipped to peer regions; a key with a larger value is invalidated
    /// there instead.
    #[arg(long, env = "MERIDIAN_REGION_REPLICATE_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub region_replicate_max_bytes: usize,
    /// Largest lead, in milliseconds, of a peer region's clock over this node's:
    /// a region-link event stamped further ahead is refused and the link
    /// dropped (CLOCKDRIFT), so a broken clock cannot drag every later version
    /// into the future. 0 disables the check. The default is far above what
    /// NTP-synced hosts drift (milliseconds) and what a link adds; a skew under
    /// it can let an earlier write beat a concurrent later one by at most that much.
    #[arg(long, env = "MERIDIAN_MAX_CLOCK_DRIFT_MS", default_value_t = 5000)]
    pub max_clock_drift_ms: u64,
    /// Started by the Meridian operator: the node's role comes from topology maps; until
    /// a map it accepted after start names it primary (or REPLICAOF NO ONE) it serves no
    /// PSYNC (it started without its data). A bare node (the default) serves PSYNC from
    /// the start, like redis-server.
    #[arg(long, env = "MERIDIAN_MANAGED", action = clap::ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub managed: bool,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "MERIDIAN_LOG", default_value = "info")]
    pub log: String,
    /// Log format: text or json (one JSON object per line, for log pipelines).
    #[arg(long, env = "MERIDIAN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    /// Where the TLS files are and how they are used; None without --tls-dir.
    pub fn tls_settings(&self) -> Option<crate::tls::TlsSettings> {
        let dir = self
            .tls_dir
            .clone()
            .filter(|dir| !dir.as_os_str().is_empty())?;
        Some(crate::tls::TlsSettings {
            dir,
            server_name: self.tls_server_name.clone().filter(|name| !name.is_empty()),
            require_peer_certs: self.tls_require_peer_certs,
        })
    }

    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(hostname)
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "meridian-node".to_string())
}

/// Parses "0", "1048576", "100mb", "1gb", "256Mi", "1Gi", "64k" (Redis units are
/// case-insensitive: k/kb = 1000/1024 like Redis's memtoull).
pub fn parse_memory(text: &str) -> Result<u64, NodeError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| NodeError::MemorySize(text.to_string()))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" | "ki" | "kib" => 1024,
        "m" => 1000 * 1000,
        "mb" | "mi" | "mib" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" | "gi" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(NodeError::MemorySize(text.to_string())),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| NodeError::MemorySize(text.to_string()))
}

/// What a peer region does with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CrossRegionMode {
    /// Drop the peer's copy (it is refetched on the next miss).
    Invalidate,
    /// Apply the value at the peer, last writer (highest version) wins.
    Replicate,
}

/// When a client write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Locally; peers are told asynchronously.
    Eventual,
    /// Once every peer region acknowledged the invalidation (bounded by a timeout).
    Strong,
}

/// `notify-keyspace-events` letters, refused like CONFIG SET refuses them.
fn parse_notify_flags(value: &str) -> Result<u32, String> {
    crate::notify::parse_flags(value).ok_or_else(|| crate::notify::INVALID_FLAGS.to_string())
}

/// `yes`/`no` (Redis's spelling), also `true`/`false`.
fn parse_yes_no(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("'{value}': use yes or no")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("0").ok(), Some(0));
        assert_eq!(parse_memory("1234").ok(), Some(1234));
        assert_eq!(parse_memory("100mb").ok(), Some(100 << 20));
        assert_eq!(parse_memory("1gb").ok(), Some(1 << 30));
        assert_eq!(parse_memory("256Mi").ok(), Some(256 << 20));
        assert_eq!(parse_memory("1Gi").ok(), Some(1 << 30));
        assert_eq!(parse_memory("1GB").ok(), Some(1 << 30));
        assert!(parse_memory("abc").is_err());
        assert!(parse_memory("10xb").is_err());
        assert!(parse_memory("").is_err());
        assert!(parse_memory("99999999999999999999gb").is_err());
    }

    #[test]
    fn flags_parse() {
        let config = Config::try_parse_from([
            "meridian-node",
            "--bind",
            "127.0.11.3",
            "--port",
            "7000",
            "--maxmemory",
            "1Gi",
            "--maxmemory-policy",
            "allkeys-lru",
            "--node-id",
            "pod-0",
        ])
        .expect("valid flags");
        assert_eq!(config.bind.to_string(), "127.0.11.3");
        assert_eq!(config.maxmemory, 1 << 30);
        assert_eq!(config.maxmemory_policy, Policy::AllKeysLru);
        assert_eq!(config.node_id(), "pod-0");
        assert!(!config.managed, "a bare node unless told otherwise");
    }

    #[test]
    fn managed_flag() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("meridian-node").chain(args.iter().copied()))
                .expect("valid flags")
                .managed
        };
        assert!(parse(&["--managed"]));
        assert!(parse(&["--managed", "true"]));
        assert!(parse(&["--managed=true"]));
        assert!(!parse(&["--managed=false"]));
        assert!(Config::try_parse_from(["meridian-node", "--managed=yes please"]).is_err());
    }
}
