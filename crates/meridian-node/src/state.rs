//! State shared by every connection: the keyspace, runtime configuration,
//! connected clients, pub/sub broker, topology map and counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::broker::Broker;
use crate::client::ClientHandle;
use crate::exec::ClientId;
use crate::protocol::Limits;
use crate::store::Db;
use meridian_topology::TopologyMap;

#[derive(Default)]
pub struct Counters {
    pub connections_received: AtomicU64,
    pub commands_processed: StripedCounter,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: StripedCounter,
    pub net_output_bytes: StripedCounter,
    pub pubsub_messages: AtomicU64,
}

/// Stripes of the counters every request adds to.
const COUNTER_STRIPES: usize = 16;

fn stripe_of(client: ClientId) -> usize {
    client as usize % COUNTER_STRIPES
}

/// Two cache lines: the adjacent-line prefetcher pulls lines in pairs.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// A counter every request adds to. With one atomic, the I/O threads took its cache
/// line from each other on every request; here a connection adds to the stripe of its
/// client id, and readers (INFO, metrics) add the stripes up.
#[derive(Default)]
pub struct StripedCounter([Stripe; COUNTER_STRIPES]);

impl StripedCounter {
    pub fn add(&self, client: ClientId, amount: u64) {
        self.0[stripe_of(client)]
            .0
            .fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Calls per command (indexed like the command table), striped like [`StripedCounter`]:
/// one array per stripe, so a stripe's lines are written by its own connections only.
pub struct CommandCalls(Box<[Box<[AtomicU64]>]>);

impl CommandCalls {
    pub fn new(commands: usize) -> Self {
        CommandCalls(
            (0..COUNTER_STRIPES)
                .map(|_| (0..commands).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        )
    }

    pub fn add(&self, client: ClientId, position: usize) {
        self.0[stripe_of(client)][position].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls of the command at `position`.
    pub fn get(&self, position: usize) -> u64 {
        self.0
            .iter()
            .map(|stripe| stripe[position].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Runtime-settable configuration (CONFIG SET).
pub struct RuntimeConfig {
    pub requirepass: RwLock<Option<String>>,
    /// The request limits as the node started; `max_bulk_len` follows CONFIG SET
    /// proto-max-bulk-len, so read them with [`RuntimeConfig::limits`].
    pub limits: Limits,
    /// Redis parameters CONFIG SET changes: numeric ones (tcp-keepalive,
    /// proto-max-bulk-len, encoding thresholds, ...) and ones kept as text (save,
    /// client-output-buffer-limit, ...); see crate::settings.
    pub settings: crate::settings::Settings,
    /// Seconds a client may stay idle before it is disconnected (Redis `timeout`; 0 =
    /// never). Subscribers and replicas are exempt.
    pub idle_timeout_secs: AtomicU64,
    /// Clients connected at once (Redis `maxclients`); one more is refused unless it
    /// comes from a node of this region's topology (a replica, a migration).
    pub maxclients: AtomicU64,
    /// Redis `protected-mode` (see [`Shared::protected_from`]).
    pub protected_mode: std::sync::atomic::AtomicBool,
}

impl RuntimeConfig {
    /// The request limits in force (proto-max-bulk-len as last set).
    pub fn limits(&self) -> Limits {
        Limits {
            max_bulk_len: self.settings.size(crate::settings::Num::ProtoMaxBulkLen),
            ..self.limits
        }
    }
}

pub struct Shared {
    /// This state's own Arc, for commands that start background tasks.
    pub me: std::sync::Weak<Shared>,
    pub db: Db,
    pub repl: crate::replication::Replication,
    pub config: RuntimeConfig,
    pub node_id: String,
    pub bind: String,
    pub port: u16,
    pub started: Instant,
    /// INFO server `run_id`: 40 hex digits, new at every start of the process.
    pub run_id: String,
    pub clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    pub next_client_id: AtomicU64,
    pub broker: Arc<Broker>,
    /// `notify-keyspace-events`: what writes publish through [`Shared::broker`].
    pub keyspace_events: Arc<crate::notify::KeyspaceEvents>,
    /// Clients blocked on list keys (BLPOP and friends).
    pub blocking: crate::blocking::Blocking,
    /// The Lua interpreter and the scripts EVAL and SCRIPT LOAD cached.
    pub scripts: crate::scripting::Scripts,
    /// Client-side caching (CLIENT TRACKING), told about key changes by the store.
    pub tracking: Arc<crate::tracking::Tracking>,
    pub counters: Counters,
    pub command_calls: CommandCalls,
    /// Read by every command's routing check. Writers take `topology_update` first.
    pub topology: arc_swap::ArcSwapOption<TopologyMap>,
    /// Serialises map updates (compare the epoch, then store).
    pub topology_update: Mutex<()>,
    /// Slots this node is migrating away or importing (CLUSTER SETSLOT).
    pub migrations: crate::migration::Migrations,
    /// Keys a MIGRATE batch has in flight: writes to them get TRYAGAIN.
    pub in_flight: crate::migration::InFlight,
    /// Keys left in slots this node's shard lost (see crate::orphans).
    pub orphans: crate::orphans::Orphans,
    pub shutting_down: AtomicBool,
    /// Optional HTTP origin for read-through / write-through.
    pub origin: Option<Arc<crate::origin::Origin>>,
    /// Links to peer regions (cross-region invalidation / replication).
    pub regions: crate::region::Regions,
    /// CLIENT PAUSE: clients held back, expiry and eviction suspended.
    pub pause: ClientPause,
    /// Connections beyond maxclients still waiting to log in as the operator or a replica.
    pub over_limit_pending: std::sync::atomic::AtomicUsize,
    /// TLS of the data ports and of connections to other nodes (none: plain text).
    pub tls: Arc<crate::tls::Tls>,
    /// ACL users (without `--acl-file`, `default` alone with `requirepass`).
    pub acl: crate::acl::Acl,
    /// `--acl-file`: ACL LOAD and the reload watch read it.
    pub acl_file: Option<std::path::PathBuf>,
}

/// The region links' view of the node.
impl crate::region::RegionHost for Shared {
    fn regions(&self) -> &crate::region::Regions {
        &self.regions
    }

    fn password(&self) -> Option<String> {
        self.requirepass()
    }

    fn dialer(&self) -> Option<crate::tls::ClientTls> {
        self.tls.dialer()
    }
}

/// Redis's answer to a client protected mode refuses (it names Redis's remedies; ours
/// are the same flag and a password).
pub const PROTECTED_MODE_DENIED: &str = "-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Redis you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Set up an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

impl Shared {
    /// Whether protected mode refuses a client from `ip`: it is on, the `default` user
    /// has no password, and the client is not on a loopback address.
    pub fn protected_from(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.config
            .protected_mode
            .load(std::sync::atomic::Ordering::Relaxed)
            && !ip.is_loopback()
            && self
                .acl
                .user("default")
                .is_none_or(|user| user.enabled() && user.nopass())
    }

    pub fn requirepass(&self) -> Option<String> {
        self.config.requirepass.read().clone()
    }

    /// Closes the connections logged in as one of `users` (ACL DELUSER, a reload
    /// that dropped them), except `except` (the caller closes its own after replying).
    pub fn disconnect_users(&self, users: &[String], except: u64) {
        if users.is_empty() {
            return;
        }
        for handle in self.clients.lock().values() {
            let user = handle.user.lock().clone();
            if handle.id != except && users.iter().any(|name| **name == *user) {
                handle.close();
            }
        }
    }

    pub fn connected_clients(&self) -> usize {
        self.clients.lock().len()
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// What CLIENT PAUSE holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseMode {
    /// Commands that may change the dataset or replicate (writes, PUBLISH, MIGRATE).
    Write,
    /// Every client command except the ones that end the pause or keep
    /// replication and the operator's control plane working.
    All,
}

impl PauseMode {
    pub fn name(self) -> &'static str {
        match self {
            PauseMode::Write => "write",
            PauseMode::All => "all",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PauseWindow {
    mode: PauseMode,
    /// Unix time in milliseconds the pause ends at.
    until_ms: u64,
}

/// CLIENT PAUSE state. Blocked connections wait on `changed` (no polling);
/// a pause also ends by itself at its deadline, which each waiter sleeps
/// until, so a timeout needs no background task.
#[derive(Default)]
pub struct ClientPause {
    window: Mutex<Option<PauseWindow>>,
    /// Fast path for every command: false when no pause was ever set or it was lifted.
    armed: AtomicBool,
    changed: tokio::sync::Notify,
    /// Connections waiting for the pause to end (INFO blocked_clients).
    pub blocked: AtomicUsize,
}

impl ClientPause {
    /// Starts (or extends) a pause. Like Redis 7.2, the latest mode wins and
    /// the later of the two deadlines is kept.
    pub fn pause(&self, db: &crate::store::Db, mode: PauseMode, timeout_ms: u64) {
        let until_ms = crate::store::now_ms().saturating_add(timeout_ms);
        let mut window = self.window.lock();
        let until_ms = match *window {
            Some(current) if current.until_ms > until_ms => current.until_ms,
            _ => until_ms,
        };
        *window = Some(PauseWindow { mode, until_ms });
        db.stats.hold_deletions_until(until_ms);
        self.armed.store(true, Ordering::Release);
        drop(window);
        // a changed mode (ALL -> WRITE) may release some waiters
        self.changed.notify_waiters();
    }

    /// CLIENT UNPAUSE: releases every blocked client at once.
    pub fn unpause(&self, db: &crate::store::Db) {
        let mut window = self.window.lock();
        *window = None;
        db.stats.hold_deletions_until(0);
        self.armed.store(false, Ordering::Release);
        drop(window);
        self.changed.notify_waiters();
    }

    /// The pause in force now, with its remaining milliseconds.
    pub fn current(&self) -> Option<(PauseMode, u64)> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut window = self.window.lock();
        let current = (*window)?;
        let now = crate::store::now_ms();
        if current.until_ms > now {
            return Some((current.mode, current.until_ms - now));
        }
        // timed out: back to the lock-free fast path
        *window = None;
        self.armed.store(false, Ordering::Release);
        None
    }

    /// INFO clients lines, named like Valkey's: `paused_reason`,
    /// `paused_actions`, `paused_timeout_milliseconds`.
    pub fn info_fields(&self) -> String {
        let (reason, actions, remaining_ms) = match self.current() {
            Some((mode, remaining_ms)) => ("client_pause", mode.name(), remaining_ms),
            None => ("none", "none", 0),
        };
        format!(
            "paused_reason:{reason}\r\npaused_actions:{actions}\r\npaused_timeout_milliseconds:{remaining_ms}\r\n"
        )
    }

    /// Waits until `blocked` no longer holds for the pause in force (it ended,
    /// timed out or changed mode). Returns at once when nothing is paused.
    pub async fn wait_while(&self, blocked: impl Fn(PauseMode) -> bool) {
        loop {
            // registered before the state is read, so an UNPAUSE in between is not missed
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some((mode, remaining_ms)) = self.current() else {
                return;
            };
            if !blocked(mode) {
                return;
            }
            let deadline =
                tokio::time::Instant::now() + std::time::Duration::from_millis(remaining_ms);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, Policy};
    use std::time::Duration;

    #[tokio::test]
    async fn unpause_releases_waiters_and_timeouts_end_the_pause() {
        let db = Db::new(1, 0, Policy::Sieve);
        let pause = Arc::new(ClientPause::default());
        assert_eq!(pause.current(), None);
        pause.pause(&db, PauseMode::Write, 60_000);
        assert!(db.stats.deletions_held(crate::store::now_ms()));
        let waiter = tokio::spawn({
            let pause = pause.clone();
            async move { pause.wait_while(|_| true).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        pause.unpause(&db);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("released by UNPAUSE")
            .expect("waiter");
        assert!(!db.stats.deletions_held(crate::store::now_ms()));

        pause.pause(&db, PauseMode::All, 100);
        let began = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(2), pause.wait_while(|_| true))
            .await
            .expect("released by the timeout");
        assert!(began.elapsed() >= Duration::from_millis(80));
        assert_eq!(pause.current(), None);
    }

    #[tokio::test]
    async fn latest_mode_wins_and_the_later_deadline_is_kept() {
        let db = Db::new(1, 0, Policy::Sieve);
        let pause = ClientPause::default();
        pause.pause(&db, PauseMode::All, 60_000);
        pause.pause(&db, PauseMode::Write, 10);
        let (mode, remaining) = pause.current().expect("paused");
        assert_eq!(mode, PauseMode::Write);
        assert!(remaining > 50_000, "{remaining}");
        // a reader only held by ALL goes on under WRITE
        tokio::time::timeout(
            Duration::from_millis(500),
            pause.wait_while(|mode| mode == PauseMode::All),
        )
        .await
        .expect("reads are not held by WRITE");
        assert!(pause.info_fields().contains("paused_actions:write\r\n"));
    }

    #[test]
    fn striped_counters_add_up_every_clients_stripe() {
        let counter = StripedCounter::default();
        let calls = CommandCalls::new(3);
        for client in 0..100u64 {
            counter.add(client, client);
            calls.add(client, 2);
        }
        counter.add(u64::MAX, 1);
        assert_eq!(counter.get(), (0..100).sum::<u64>() + 1);
        assert_eq!((calls.get(0), calls.get(1), calls.get(2)), (0, 0, 100));
    }
}
