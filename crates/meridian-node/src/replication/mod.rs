//! Replication engine: primary → replica command stream with a backlog for
//! partial resync, full sync by snapshot, ROLE / REPLICAOF / WAIT state.
//!
//! Propagation: every write that changes the store is appended to the
//! [`backlog::ReplLog`] while the shard locks it took are still held, so the
//! stream has the same per-key order as execution. Expirations and evictions
//! go through the log as DEL from the shard itself.

pub mod backlog;
pub mod link;
pub mod primary;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::{SyncError, SyncFailure};

/// Default `--repl-timeout` (Redis repl-timeout).
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// One replica attached to this primary.
#[derive(Debug)]
pub struct ReplicaInfo {
    pub client_id: u64,
    pub ip: String,
    pub listening_port: u16,
    pub ack_offset: AtomicU64,
    /// Whether the replica acknowledged an offset since it attached. Until then its
    /// `ack_offset` of 0 means nothing: a replica still receiving or loading its
    /// snapshot must not count for `WAIT`, not even for offset 0.
    pub has_acked: AtomicBool,
    pub last_ack: Mutex<Instant>,
    /// "wait_bgsave" while the snapshot is built and sent, then "online".
    pub state: Mutex<&'static str>,
}

/// The link of a replica to its primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryTarget {
    pub host: String,
    pub port: u16,
}

#[derive(Debug)]
pub struct LinkState {
    pub target: PrimaryTarget,
    /// "connect", "connecting", "sync", "connected".
    pub status: &'static str,
    pub last_io: Instant,
    pub task: Option<tokio::task::AbortHandle>,
    /// Whether a full sync may replace this replica's data with another history: only
    /// until the link's first sync, because the link itself was the instruction
    /// (`REPLICAOF host port`, or a map that named a new primary for this node). After
    /// that the data came through this link, and a primary that answers at the same
    /// address with another history restarted without it (issue 14).
    pub may_replace: bool,
    /// Full syncs refused since the link last synced (INFO `master_full_sync_refused`).
    pub refused: u64,
    /// Failed syncs and streams on this link since it was made (INFO
    /// `master_sync_failures`), and the last one's reason and message
    /// (`master_last_sync_error`).
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What entitles this node to serve PSYNC (be the source of replicas' data).
///
/// A node keeps nothing across a restart. A managed node (`--managed`: started by the
/// operator, its role comes from topology maps) therefore starts with
/// [`PrimaryMandate::None`] and serves no PSYNC until it is named primary after it
/// started: by a topology map it accepted, or by `REPLICAOF NO ONE`. A bare node starts
/// [`PrimaryMandate::Standalone`] and serves PSYNC like redis-server; its replicas are
/// protected by their own refusal of another history on a link that already synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryMandate {
    /// Not named primary since it started (managed nodes), or named replica (or left
    /// out by a map) since.
    None,
    /// A bare node since it started, never named replica or left out by a map since:
    /// a primary by default, like redis-server.
    Standalone,
    /// The topology map of this epoch, accepted after the node started, names it primary.
    Map { epoch: u64 },
    /// `REPLICAOF NO ONE`.
    Command,
}

impl PrimaryMandate {
    /// The mandate a node starts with: none when managed, standalone when bare.
    pub fn at_start(managed: bool) -> Self {
        if managed {
            PrimaryMandate::None
        } else {
            PrimaryMandate::Standalone
        }
    }

    /// INFO replication `primary_named_by`.
    pub fn name(self) -> &'static str {
        match self {
            PrimaryMandate::None => "none",
            PrimaryMandate::Standalone => "standalone",
            PrimaryMandate::Map { .. } => "map",
            PrimaryMandate::Command => "replicaof",
        }
    }
}

#[derive(Default)]
pub struct ReplCounters {
    pub sync_full: AtomicU64,
    pub sync_partial_ok: AtomicU64,
    pub sync_partial_err: AtomicU64,
    /// Full syncs this replica refused (they would have replaced its data).
    pub sync_full_refused: AtomicU64,
    /// Failed syncs and streams of this replica, indexed like [`SyncFailure::ALL`].
    pub sync_failures: [AtomicU64; SyncFailure::ALL.len()],
    /// REPLCONF ACKs (on this primary) for more than was sent to the replica: clamped.
    pub acks_clamped: AtomicU64,
    /// REPLCONF ACKs (on this primary) whose offset is negative or not a number: ignored.
    pub acks_invalid: AtomicU64,
    /// Replicas this primary dropped because writing to them stalled for the timeout.
    pub replicas_timed_out: AtomicU64,
}

impl ReplCounters {
    pub fn sync_failures(&self, failure: SyncFailure) -> u64 {
        self.sync_failures[failure as usize].load(Ordering::Relaxed)
    }

    fn count_sync_failure(&self, failure: SyncFailure) {
        self.sync_failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn sync_failures_total(&self) -> u64 {
        self.sync_failures
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }
}

pub struct Replication {
    /// Some while this node replicates a primary.
    pub link: Mutex<Option<LinkState>>,
    mandate: Mutex<PrimaryMandate>,
    /// Whether `mandate` is not None, for the routing check every command makes
    /// (one load instead of a lock every I/O thread takes). Written under `mandate`.
    mandated: AtomicBool,
    pub replicas: Mutex<BTreeMap<u64, Arc<ReplicaInfo>>>,
    pub counters: ReplCounters,
    pub min_replicas_to_write: AtomicU64,
    pub min_replicas_max_lag: AtomicU64,
    /// Password for the link to the primary (falls back to requirepass).
    pub primary_auth: Mutex<Option<String>>,
    /// ACL user of the link to the primary (`--primary-user`, CONFIG SET masteruser).
    pub primary_user: Mutex<Option<String>>,
    /// Serialises full syncs: a streamed snapshot keeps its marks on the shards until
    /// it was sent (a shard holds one pending copy).
    pub full_sync: tokio::sync::Mutex<()>,
    /// Generation of the current primary link; a link applies a batch only
    /// while holding this with its own generation, so REPLICAOF never races
    /// with a half-applied batch.
    pub apply_gate: Mutex<u64>,
    /// Woken by every replica acknowledgement (`REPLCONF ACK`), so `WAIT` answers as
    /// soon as enough replicas have an offset instead of on a polling tick.
    pub acks: tokio::sync::Notify,
    /// Seconds without progress after which a link is dropped (`--repl-timeout`): a
    /// replica's silent primary, a primary's stalled write to a replica.
    pub timeout_secs: AtomicU64,
    /// The stream of writes replicas receive, with its backlog for partial resync.
    pub log: Arc<backlog::ReplLog>,
}

impl Replication {
    /// `managed`: started by the operator (see [`PrimaryMandate::at_start`]).
    pub fn new(
        min_to_write: u64,
        max_lag: u64,
        primary_auth: Option<String>,
        managed: bool,
    ) -> Self {
        Replication {
            link: Mutex::new(None),
            mandate: Mutex::new(PrimaryMandate::at_start(managed)),
            mandated: AtomicBool::new(PrimaryMandate::at_start(managed) != PrimaryMandate::None),
            replicas: Mutex::new(BTreeMap::new()),
            counters: ReplCounters::default(),
            min_replicas_to_write: AtomicU64::new(min_to_write),
            min_replicas_max_lag: AtomicU64::new(max_lag),
            primary_auth: Mutex::new(primary_auth.filter(|auth| !auth.is_empty())),
            primary_user: Mutex::new(None),
            full_sync: tokio::sync::Mutex::new(()),
            acks: tokio::sync::Notify::new(),
            apply_gate: Mutex::new(0),
            timeout_secs: AtomicU64::new(DEFAULT_TIMEOUT_SECS),
            log: Arc::new(backlog::ReplLog::new(backlog::DEFAULT_BACKLOG)),
        }
    }

    pub fn is_replica(&self) -> bool {
        self.link.lock().is_some()
    }

    /// Whether this node may be the source of a replica's data (see [`PrimaryMandate`]).
    pub fn serves_psync(&self) -> bool {
        !self.is_replica() && *self.mandate.lock() != PrimaryMandate::None
    }

    /// Whether anything told this node its role since it started (a replica link, or a
    /// mandate to be primary). A managed node that restarted holds none of its shard's
    /// data, so until then it serves no keys either (outside a topology map).
    pub fn knows_its_role(&self) -> bool {
        self.mandated.load(Ordering::Acquire) || self.is_replica()
    }

    pub fn mandate(&self) -> PrimaryMandate {
        *self.mandate.lock()
    }

    /// Sets the mandate to be primary; returns the one before.
    pub fn set_mandate(&self, mandate: PrimaryMandate) -> PrimaryMandate {
        let mut current = self.mandate.lock();
        self.mandated
            .store(mandate != PrimaryMandate::None, Ordering::Release);
        std::mem::replace(&mut *current, mandate)
    }

    pub fn target(&self) -> Option<PrimaryTarget> {
        self.link.lock().as_ref().map(|link| link.target.clone())
    }

    pub fn set_status(&self, status: &'static str) {
        if let Some(link) = self.link.lock().as_mut() {
            link.status = status;
            link.last_io = Instant::now();
        }
    }

    /// The replication timeout (at least one second).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs.load(Ordering::Relaxed).max(1))
    }

    /// Records a failed sync or stream of this replica's link: counted by reason
    /// (when it is a counted failure) and kept for INFO.
    pub fn record_link_error(&self, error: &SyncError) {
        let Some(failure) = error.failure() else {
            return;
        };
        self.counters.count_sync_failure(failure);
        if let Some(link) = self.link.lock().as_mut() {
            link.failures += 1;
            // one INFO line: no control characters from what the primary sent
            let text: String = format!("{}: {error}", failure.name())
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(256)
                .collect();
            link.last_error = Some(text);
        }
    }

    pub fn touch_io(&self) {
        if let Some(link) = self.link.lock().as_mut() {
            link.last_io = Instant::now();
        }
    }

    /// Online replicas whose last ACK is at most `max_lag` seconds old.
    pub fn good_replicas(&self, max_lag: u64) -> usize {
        self.replicas
            .lock()
            .values()
            .filter(|replica| {
                *replica.state.lock() == "online"
                    && replica.last_ack.lock().elapsed().as_secs() <= max_lag
            })
            .count()
    }

    /// Online replicas that acknowledged at least `offset` (`WAIT`, and through it
    /// slot migration before it deletes the source's keys). Acknowledged offsets never
    /// exceed what was sent to the replica (see `primary::read_acks`).
    pub fn acked(&self, offset: u64) -> usize {
        self.replicas
            .lock()
            .values()
            .filter(|replica| {
                replica.has_acked.load(Ordering::Acquire)
                    && replica.ack_offset.load(Ordering::Acquire) >= offset
                    && *replica.state.lock() == "online"
            })
            .count()
    }

    /// Whether writes are refused by min-replicas-to-write.
    pub fn not_enough_replicas(&self) -> bool {
        let wanted = self.min_replicas_to_write.load(Ordering::Relaxed);
        wanted > 0
            && (self.good_replicas(self.min_replicas_max_lag.load(Ordering::Relaxed)) as u64)
                < wanted
    }

    /// Largest lag (seconds since the last ACK) among attached replicas.
    pub fn max_lag_seconds(&self) -> u64 {
        self.replicas
            .lock()
            .values()
            .map(|replica| replica.lag_seconds())
            .max()
            .unwrap_or(0)
    }

    /// Largest lag in bytes (this primary's offset minus the acknowledged one) among
    /// attached replicas.
    pub fn max_lag_bytes(&self, offset: u64) -> u64 {
        self.replicas
            .lock()
            .values()
            .map(|replica| replica.lag_bytes(offset))
            .max()
            .unwrap_or(0)
    }
}

impl ReplicaInfo {
    /// Seconds since the replica's last acknowledgement (INFO `lag=`).
    pub fn lag_seconds(&self) -> u64 {
        self.last_ack.lock().elapsed().as_secs()
    }

    /// Bytes of the stream up to `offset` (this primary's) the replica has not
    /// acknowledged; acknowledgements never exceed what was sent, so this is exact.
    pub fn lag_bytes(&self, offset: u64) -> u64 {
        offset.saturating_sub(self.ack_offset.load(Ordering::Acquire))
    }

    /// `ip:port` the replica announced (metric label).
    pub fn name(&self) -> String {
        format!("{}:{}", self.ip, self.listening_port)
    }
}

/// How often a primary with replicas sends PING through the stream, so
/// replicas can tell a silent primary from an idle one.
pub const PING_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

impl Replication {
    /// The INFO replication section body.
    pub fn info_section(&self) -> String {
        use std::fmt::Write as _;
        let log = &self.log;
        let repl = self;
        let offset = log.offset();
        let mut text = String::new();
        let link = repl.link.lock().as_ref().map(|link| {
            (
                link.target.clone(),
                link.status,
                link.last_io.elapsed().as_secs(),
                link.refused,
                link.failures,
                link.last_error.clone().unwrap_or_default(),
            )
        });
        match &link {
            Some((target, status, idle, refused, failures, last_error)) => {
                let up = *status == "connected";
                let _ = write!(
                    text,
                    "role:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{offset}\r\nslave_repl_offset:{offset}\r\nslave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\n",
                    target.host,
                    target.port,
                    if up { "up" } else { "down" },
                    if up { *idle as i64 } else { -1 },
                    u8::from(*status == "sync"),
                );
                let _ = write!(
                    text,
                    "master_full_sync_refused:{refused}\r\nmaster_sync_failures:{failures}\r\nmaster_last_sync_error:{last_error}\r\n"
                );
            }
            None => text.push_str("role:master\r\n"),
        }
        let mandate = repl.mandate();
        let _ = write!(text, "primary_named_by:{}\r\n", mandate.name());
        if let PrimaryMandate::Map { epoch } = mandate {
            let _ = write!(text, "primary_named_epoch:{epoch}\r\n");
        }
        let replicas: Vec<Arc<ReplicaInfo>> = repl.replicas.lock().values().cloned().collect();
        let _ = write!(text, "connected_slaves:{}\r\n", replicas.len());
        for (index, replica) in replicas.iter().enumerate() {
            let _ = write!(
                text,
                "slave{index}:ip={},port={},state={},offset={},lag={}\r\n",
                replica.ip,
                replica.listening_port,
                replica.state.lock(),
                replica.ack_offset.load(Ordering::Relaxed),
                replica.lag_seconds(),
            );
        }
        if link.is_none() {
            let _ = write!(
                text,
                "min_slaves_good_slaves:{}\r\n",
                repl.good_replicas(repl.min_replicas_max_lag.load(Ordering::Relaxed))
            );
        }
        let ids = log.ids.lock();
        let second = ids.second_offset.map_or(-1, |offset| offset as i64 + 1);
        let _ = write!(
            text,
            "master_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:{offset}\r\nsecond_repl_offset:{second}\r\n",
            ids.replid, ids.replid2,
        );
        drop(ids);
        let (first, histlen, capacity) = log.extent();
        let _ = write!(
            text,
            "repl_backlog_active:{}\r\nrepl_backlog_size:{capacity}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{histlen}\r\n",
            u8::from(log.is_active()),
            first + 1,
        );
        text
    }

    /// Lines for INFO stats.
    pub fn stats_lines(&self) -> String {
        let counters = &self.counters;
        format!(
            "sync_full:{}\r\nsync_partial_ok:{}\r\nsync_partial_err:{}\r\nsync_full_refused:{}\r\nsync_failures:{}\r\nrepl_acks_clamped:{}\r\nrepl_acks_invalid:{}\r\nrepl_replicas_timed_out:{}\r\n",
            counters.sync_full.load(Ordering::Relaxed),
            counters.sync_partial_ok.load(Ordering::Relaxed),
            counters.sync_partial_err.load(Ordering::Relaxed),
            counters.sync_full_refused.load(Ordering::Relaxed),
            counters.sync_failures_total(),
            counters.acks_clamped.load(Ordering::Relaxed),
            counters.acks_invalid.load(Ordering::Relaxed),
            counters.replicas_timed_out.load(Ordering::Relaxed),
        )
    }
}
