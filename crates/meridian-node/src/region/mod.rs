//! Region links: every primary streams invalidations (or values, in
//! `replicate` mode) of the writes it executed to the owning primaries of the
//! peer regions, so a write in one region never leaves a stale copy in another.
//!
//! Ordering: events carry a [`Version`] (hybrid logical clock + region id).
//! Every primary remembers, for a bounded time, the newest version it saw per
//! key (its own writes, remote invalidations = tombstones, remote values), per
//! glob pattern and per slot. A remote event older than the local copy is
//! ignored; an origin fill that started before a newer invalidation is refused.
//! See docs/region-links.md.

pub mod fanout;
mod lane;
pub mod link;
mod outbox;
pub mod peer;
pub mod versions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::CommandError;
use crate::exec::{ExecContext, RegionGuard};
use crate::protocol::{Out, Written};
use crate::store::{Access, Entry, ValueRef};

pub use versions::{Version, Versions};

pub use crate::config::{Consistency, CrossRegionMode};

/// What the region links (peers and their lanes) need of the node: its region
/// state and the password peers authenticate with. The node state implements it,
/// so the links hold no reference to everything else the node owns.
pub trait RegionHost: Send + Sync + 'static {
    fn regions(&self) -> &Regions;
    /// The password a peer's node expects (the same `requirepass` as this node's).
    fn password(&self) -> Option<String>;
    /// How to dial a peer's node over TLS (None: plain TCP).
    fn dialer(&self) -> Option<crate::tls::ClientTls>;
}

/// Region-link settings taken from the command line.
#[derive(Clone, Debug)]
pub struct RegionSettings {
    pub cluster: String,
    pub region: String,
    pub mode: CrossRegionMode,
    pub consistency: Consistency,
    pub strong_timeout: Duration,
    pub tombstone_ttl: Duration,
    pub queue_limit: usize,
    /// Bytes of values queued per peer region before slots are marked dirty instead.
    pub queue_max_bytes: usize,
    /// Replicate mode: largest value shipped; a larger one is invalidated.
    pub replicate_max_bytes: usize,
    /// How far ahead of this node's clock a peer's event may be stamped (ms; 0 = no bound).
    pub max_clock_drift_ms: u64,
    /// `--region-link-user`: the ACL user this node's links log in as on their peers.
    pub link_user: Option<String>,
}

impl RegionSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        RegionSettings {
            cluster: config.cluster.clone(),
            region: config.region.clone(),
            mode: config.cross_region_mode,
            consistency: config.consistency,
            strong_timeout: Duration::from_millis(config.strong_timeout_ms),
            tombstone_ttl: Duration::from_millis(config.region_tombstone_ms),
            queue_limit: config.region_queue_limit.max(1),
            queue_max_bytes: config.region_queue_max_bytes.max(1),
            replicate_max_bytes: config.region_replicate_max_bytes,
            max_clock_drift_ms: config.max_clock_drift_ms,
            link_user: config
                .region_link_user
                .clone()
                .filter(|user| !user.is_empty()),
        }
    }
}

/// Bits of the HLC holding the logical counter.
const LOGICAL_BITS: u32 = 16;

/// FNV-1a of the region name: a stable id for tie-breaking.
pub fn region_id(name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// What an event asks the peer to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Drop one key.
    Key(Vec<u8>),
    /// Drop every key matching a glob pattern.
    Pattern(Vec<u8>),
    /// Drop every key of a slot (recovery after a queue overflow).
    Slot(u16),
    /// Store a string value (replicate mode); `ttl_ms` 0 = persistent.
    Set {
        key: Vec<u8>,
        value: Bytes,
        ttl_ms: u64,
    },
    /// Store a value of any other type (replicate mode) from its DUMP payload;
    /// `ttl_ms` 0 = persistent. A peer that predates it is sent [`EventKind::Key`].
    Restore {
        key: Vec<u8>,
        payload: Bytes,
        ttl_ms: u64,
    },
}

impl EventKind {
    /// Slot the event is routed by; None for patterns (sent to every primary).
    pub fn slot(&self) -> Option<u16> {
        match self {
            EventKind::Key(key) | EventKind::Set { key, .. } | EventKind::Restore { key, .. } => {
                Some(meridian_topology::key_slot(key))
            }
            EventKind::Slot(slot) => Some(*slot),
            EventKind::Pattern(_) => None,
        }
    }

    /// Bytes of value the event holds (what the outbox's byte bound counts).
    pub fn value_bytes(&self) -> usize {
        match self {
            EventKind::Set { value, .. } => value.len(),
            EventKind::Restore { payload, .. } => payload.len(),
            EventKind::Key(_) | EventKind::Pattern(_) | EventKind::Slot(_) => 0,
        }
    }
}

/// What replicate mode ships for `key` after a write: its value (a string as it
/// is, any other type as a DUMP payload) with the remaining TTL, or an
/// invalidation when the key is gone or its value is larger than `max_bytes`
/// (shipping a big collection on every write would cost more than a miss).
pub fn replicated(entry: Option<&Entry>, key: &[u8], now: u64, max_bytes: usize) -> EventKind {
    let invalidate = || EventKind::Key(key.to_vec());
    let Some(entry) = entry.filter(|entry| entry.expire_at() == 0 || entry.expire_at() > now)
    else {
        return invalidate();
    };
    let ttl_ms = match entry.expire_at() {
        0 => 0,
        at => at - now,
    };
    match entry.value() {
        ValueRef::Str(value) if value.len() <= max_bytes => EventKind::Set {
            key: key.to_vec(),
            value: Bytes::copy_from_slice(value),
            ttl_ms,
        },
        ValueRef::Str(_) => invalidate(),
        // the in-memory size bounds the payload's from above: skip the copy
        // only when even the payload cannot fit
        other if entry.memory() <= max_bytes.saturating_mul(2) => {
            let payload = crate::migration::dump(other);
            if payload.len() > max_bytes {
                return invalidate();
            }
            EventKind::Restore {
                key: key.to_vec(),
                payload: Bytes::from(payload),
                ttl_ms,
            }
        }
        _ => invalidate(),
    }
}

#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub version: Version,
    pub origin_region: Arc<str>,
    /// Unix milliseconds of the origin write (link lag metric).
    pub origin_ms: u64,
    /// Strong consistency: the write waiting for this event's acknowledgement.
    pub ack: Option<Arc<Ack>>,
}

/// Acknowledgements a strong write waits for: outstanding events per region.
pub struct Ack {
    outstanding: Mutex<BTreeMap<String, usize>>,
    done: watch::Sender<bool>,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("outstanding", &*self.outstanding.lock())
            .finish()
    }
}

impl Ack {
    fn new() -> Arc<Ack> {
        Arc::new(Ack {
            outstanding: Mutex::new(BTreeMap::new()),
            done: watch::channel(true).0,
        })
    }

    fn expect(&self, region: &str) {
        *self
            .outstanding
            .lock()
            .entry(region.to_string())
            .or_insert(0) += 1;
        self.done.send_replace(false);
    }

    /// One event reached `region`.
    pub fn acknowledged(&self, region: &str) {
        let mut outstanding = self.outstanding.lock();
        if let Some(count) = outstanding.get_mut(region) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                outstanding.remove(region);
            }
        }
        if outstanding.is_empty() {
            self.done.send_replace(true);
        }
    }

    /// Regions that have not acknowledged everything yet.
    pub fn missing(&self) -> Vec<String> {
        self.outstanding.lock().keys().cloned().collect()
    }

    async fn wait(&self) {
        let mut done = self.done.subscribe();
        let _ = done.wait_for(|done| *done).await;
    }
}

/// A strong write's reply, held back until the peers acknowledged.
#[derive(Debug, Clone)]
pub struct RegionWait {
    /// Strong consistency: the peer regions that must acknowledge.
    pub ack: Option<Arc<Ack>>,
    pub reply: Written,
    /// Pattern invalidation: the other primaries of this region that must confirm.
    pub fanout: Option<fanout::Fanout>,
}

impl RegionWait {
    /// A strong write waiting for the peer regions.
    pub fn peers(ack: Arc<Ack>, reply: Written) -> RegionWait {
        RegionWait {
            ack: Some(ack),
            reply,
            fanout: None,
        }
    }
}

impl PartialEq for RegionWait {
    fn eq(&self, other: &Self) -> bool {
        let same_ack = match (&self.ack, &other.ack) {
            (Some(mine), Some(theirs)) => Arc::ptr_eq(mine, theirs),
            (None, None) => true,
            _ => false,
        };
        same_ack && self.reply == other.reply && self.fanout == other.fanout
    }
}

impl Eq for RegionWait {}

/// One configured peer region as the operator pushed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    pub region: String,
    pub seeds: Vec<String>,
}

/// Region-link state of the node.
pub struct Regions {
    pub settings: RegionSettings,
    pub region_id: u32,
    pub region_name: Arc<str>,
    clock: Mutex<u64>,
    pub versions: Versions,
    peers: RwLock<Vec<Arc<peer::Peer>>>,
    /// Peers are configured: writes are versioned and streamed.
    active: AtomicBool,
    refusals: Mutex<Refusals>,
}

/// Links this node dropped (for INFO; the metric has them per peer and reason).
#[derive(Debug, Default, Clone)]
pub struct Refusals {
    pub total: u64,
    pub clock_drift: u64,
    /// The last refusal's error, as sent to the peer.
    pub last: String,
}

/// Why an inbound link was dropped: the `reason` label of
/// `meridian_region_link_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// LINK.HELLO refused (other cluster, wrong password, no hello).
    Denied,
    /// A request broke the framing or its bounds (count, length).
    Protocol,
    /// A request longer than the link accepts.
    FrameTooLarge,
    /// An event stamped too far ahead of this node's clock.
    ClockDrift,
    /// A reply on an outbound link broke the protocol or its bounds.
    BadReply,
}

impl RefusalReason {
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::Denied => "denied",
            RefusalReason::Protocol => "protocol",
            RefusalReason::FrameTooLarge => "frame_too_large",
            RefusalReason::ClockDrift => "clock_drift",
            RefusalReason::BadReply => "bad_reply",
        }
    }
}

impl Regions {
    pub fn new(settings: RegionSettings) -> Self {
        Regions {
            region_id: region_id(&settings.region),
            region_name: Arc::from(settings.region.as_str()),
            versions: Versions::new(settings.tombstone_ttl),
            settings,
            clock: Mutex::new(0),
            peers: RwLock::new(Vec::new()),
            active: AtomicBool::new(false),
            refusals: Mutex::new(Refusals::default()),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// A new version, later than every version this node produced or saw.
    pub fn tick(&self) -> Version {
        let physical = crate::store::now_ms() << LOGICAL_BITS;
        let mut clock = self.clock.lock();
        *clock = clock.saturating_add(1).max(physical);
        Version {
            hlc: *clock,
            region: self.region_id,
        }
    }

    /// Refuses a remote version whose wall-clock part is more than
    /// `--max-clock-drift-ms` ahead of this node's clock. Observing it would
    /// drag this node's clock (and every later version it stamps) into the
    /// future, so the peer's skew would decide last-writer-wins for as long.
    /// Versions behind the clock are fine: events that waited in a queue
    /// during a partition are legitimately old, and lose to newer writes.
    pub fn check_drift(&self, from: &str, hlc: u64) -> Result<(), CommandError> {
        let limit_ms = self.settings.max_clock_drift_ms;
        let ahead_ms = (hlc >> LOGICAL_BITS).saturating_sub(crate::store::now_ms());
        if limit_ms == 0 || ahead_ms <= limit_ms {
            return Ok(());
        }
        Err(CommandError::ClockDrift {
            region: from.to_string(),
            ahead_ms,
            limit_ms,
        })
    }

    /// Counts and remembers a link this node dropped (the caller logs it);
    /// `peer` is the region the link said hello as (None before the hello).
    pub fn record_refusal(&self, peer: Option<&str>, reason: RefusalReason, error: &str) {
        // Only configured regions get a series of their own: a peer names
        // itself in the hello, and must not mint a new series per connection.
        let configured = peer.filter(|name| {
            self.peers()
                .iter()
                .any(|known| known.config.region == *name)
        });
        let peer = configured.unwrap_or("unknown");
        REGION_METRICS
            .link_refusals
            .get_or_create(&vec![
                ("peer", peer.to_string()),
                ("reason", reason.label().to_string()),
            ])
            .inc();
        let mut refusals = self.refusals.lock();
        refusals.total += 1;
        if reason == RefusalReason::ClockDrift {
            refusals.clock_drift += 1;
        }
        // shown as one INFO line: a peer-chosen region name must not break it
        refusals.last = error
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
    }

    pub fn refusals(&self) -> Refusals {
        self.refusals.lock().clone()
    }

    /// Moves the clock past a remote version (HLC receive rule).
    pub fn observe(&self, version: Version) {
        let mut clock = self.clock.lock();
        *clock = (*clock).max(version.hlc);
    }

    pub fn peers(&self) -> Vec<Arc<peer::Peer>> {
        self.peers.read().clone()
    }

    /// Replaces the peer list; unchanged peers keep their link and queue, new
    /// ones are started with the links' view of the node, `host`.
    pub fn set_peers(&self, host: &Arc<dyn RegionHost>, configs: Vec<PeerConfig>) {
        let mut peers = self.peers.write();
        let mut kept = Vec::new();
        for config in configs {
            match peers.iter().position(|peer| peer.config == config) {
                Some(position) => kept.push(peers.remove(position)),
                None => kept.push(peer::Peer::start(host, config)),
            }
        }
        for removed in peers.drain(..) {
            removed.stop();
        }
        self.active.store(!kept.is_empty(), Ordering::Relaxed);
        *peers = kept;
    }

    /// Queues an event for every peer; returns what a strong write waits for.
    fn publish(&self, kinds: Vec<EventKind>, version: Version) -> Option<Arc<Ack>> {
        let peers = self.peers();
        if peers.is_empty() || kinds.is_empty() {
            return None;
        }
        let ack = (self.settings.consistency == Consistency::Strong).then(Ack::new);
        let origin_ms = crate::store::now_ms();
        for peer in &peers {
            for kind in &kinds {
                if let Some(ack) = &ack {
                    ack.expect(&peer.config.region);
                }
                peer.push(Event {
                    kind: kind.clone(),
                    version,
                    origin_region: self.region_name.clone(),
                    origin_ms,
                    ack: ack.clone(),
                });
            }
        }
        ack
    }

    /// `INVALIDATE` / `POST /invalidate`: tells every peer region to drop
    /// the keys matching `pattern`.
    pub fn publish_pattern(&self, pattern: &[u8]) -> Option<Arc<Ack>> {
        if !self.is_active() {
            return None;
        }
        let version = self.tick();
        self.versions.record_pattern(pattern, version);
        self.publish(vec![EventKind::Pattern(pattern.to_vec())], version)
    }
}

// ---------------------------------------------------------------------------
// Writes: admission and events (called by the dispatcher under the write's shard locks)

/// Error reply of a guarded write refused because a newer version is known.
pub const STALE_REPLY: &str = "STALE a newer version of the key is known";

impl Regions {
    /// Before a write runs: refuses guarded writes (remote events, origin fills)
    /// older than what is known for one of its keys (`keys`, asked only then).
    pub fn admit<'k>(
        &self,
        exec: ExecContext,
        keys: impl FnOnce() -> Vec<&'k [u8]>,
    ) -> Result<(), &'static str> {
        let Some(RegionGuard { version, record }) = exec.region_guard() else {
            return Ok(());
        };
        let keys = keys();
        let versions = &self.versions;
        if keys
            .iter()
            .any(|key| versions.newest(key).is_some_and(|known| known > version))
        {
            return Err(STALE_REPLY);
        }
        if record {
            for key in keys {
                versions.record_key(key, version);
            }
        }
        Ok(())
    }

    /// After a write of this region succeeded (a command flagged WRITE that is not
    /// a slot migration's RESTORE): versions the `written` keys (every key when it
    /// `flushes_all`) and queues the events, reading values through `keys`.
    /// Returns what a strong write must wait for.
    pub fn originate(
        &self,
        exec: ExecContext,
        written: &[&[u8]],
        flushes_all: bool,
        keys: &mut Access<'_, '_>,
    ) -> Option<Arc<Ack>> {
        let regions = self;
        if !regions.is_active() || !exec.streams_to_regions() {
            return None;
        }
        let version = regions.tick();
        let mut kinds = Vec::with_capacity(written.len().max(1));
        if written.is_empty() {
            // FLUSHDB / FLUSHALL: every key
            if flushes_all {
                regions.versions.record_pattern(b"*", version);
                kinds.push(EventKind::Pattern(b"*".to_vec()));
            }
        }
        let now = crate::store::now_ms();
        let max_bytes = regions.settings.replicate_max_bytes;
        for &key in written {
            regions.versions.record_key(key, version);
            let kind = match regions.settings.mode {
                CrossRegionMode::Invalidate => EventKind::Key(key.to_vec()),
                CrossRegionMode::Replicate => keys.with_key(key, |shard, _| {
                    replicated(shard.peek(key), key, now, max_bytes)
                }),
            };
            kinds.push(kind);
        }
        regions.publish(kinds, version)
    }

    /// Writes a strong write's reply once the peers acknowledged, or the TIMEOUT
    /// error naming the regions that did not.
    pub async fn finish(&self, wait: RegionWait, out: &mut Out) {
        let timeout = self.settings.strong_timeout;
        let peers = async {
            match &wait.ack {
                Some(ack) => tokio::time::timeout(timeout, ack.wait())
                    .await
                    .map_err(|_| ack.missing()),
                None => Ok(()),
            }
        };
        let local = async {
            match wait.fanout {
                Some(fanout) => fanout.run().await,
                None => Vec::new(),
            }
        };
        let (peers, failed_primaries) = tokio::join!(peers, local);
        match peers {
            _ if !failed_primaries.is_empty() => {
                out.error(&fanout::fanout_message(&failed_primaries))
            }
            Ok(()) => out.put(wait.reply),
            Err(missing) => out.error(&timeout_message(&missing, timeout)),
        }
    }

    /// The `# Regions` section of INFO: link state and what inbound links were refused.
    pub fn info_section(&self) -> String {
        let regions = self;
        let peers = regions.peers();
        let up = peers.iter().filter(|peer| peer.status().up).count();
        let refusals = regions.refusals();
        format!(
            "region:{}\r\nregion_peers:{}\r\nregion_links_up:{up}\r\nregion_max_clock_drift_ms:{}\r\nregion_link_refusals:{}\r\nregion_clock_drift_refusals:{}\r\nregion_last_link_refusal:{}\r\n",
            regions.settings.region,
            peers.len(),
            regions.settings.max_clock_drift_ms,
            refusals.total,
            refusals.clock_drift,
            refusals.last,
        )
    }
}

pub fn timeout_message(missing: &[String], timeout: Duration) -> String {
    format!(
        "TIMEOUT write applied locally but not acknowledged within {}ms by regions: {}",
        timeout.as_millis(),
        missing.join(", ")
    )
}

// ---------------------------------------------------------------------------
// Metrics

type PeerLabel = Vec<(&'static str, String)>;

pub struct RegionMetrics {
    pub link_up: Family<PeerLabel, Gauge>,
    pub events_sent: Family<PeerLabel, Counter>,
    pub events_received: Family<PeerLabel, Counter>,
    pub queue_depth: Family<PeerLabel, Gauge>,
    pub dirty_slots: Family<PeerLabel, Gauge>,
    pub overflows: Family<PeerLabel, Counter>,
    pub lag: Family<PeerLabel, Histogram>,
    /// Labels `peer` and `reason` ([`RefusalReason::label`]).
    pub link_refusals: Family<PeerLabel, Counter>,
}

pub fn peer_label(peer: &str) -> PeerLabel {
    vec![("peer", peer.to_string())]
}

pub static REGION_METRICS: LazyLock<RegionMetrics> = LazyLock::new(|| RegionMetrics {
    link_up: Family::default(),
    events_sent: Family::default(),
    events_received: Family::default(),
    queue_depth: Family::default(),
    dirty_slots: Family::default(),
    overflows: Family::default(),
    link_refusals: Family::default(),
    lag: Family::new_with_constructor(|| {
        Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])
    }),
});

pub fn register_metrics(registry: &mut Registry) {
    let metrics = &*REGION_METRICS;
    registry.register(
        "meridian_region_link_up",
        "1 when the link to the peer region is connected",
        metrics.link_up.clone(),
    );
    registry.register(
        "meridian_region_events_sent",
        "Events acknowledged by the peer region",
        metrics.events_sent.clone(),
    );
    registry.register(
        "meridian_region_events_received",
        "Events received from the peer region",
        metrics.events_received.clone(),
    );
    registry.register(
        "meridian_region_queue_depth",
        "Events queued for the peer region",
        metrics.queue_depth.clone(),
    );
    registry.register(
        "meridian_region_dirty_slots",
        "Slots marked dirty after a queue overflow, invalidated wholesale when the link returns",
        metrics.dirty_slots.clone(),
    );
    registry.register(
        "meridian_region_queue_overflows",
        "Events dropped from a full queue (their slots were marked dirty)",
        metrics.overflows.clone(),
    );
    registry.register(
        "meridian_region_link_refusals",
        "Region links this node dropped, by peer region and reason (denied, protocol, frame_too_large, clock_drift, bad_reply)",
        metrics.link_refusals.clone(),
    );
    registry.register(
        "meridian_region_link_lag_seconds",
        "Time from the origin write to its application in this region",
        metrics.lag.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_clock_then_region() {
        let early = Version { hlc: 5, region: 9 };
        let late = Version { hlc: 6, region: 1 };
        assert!(late > early);
        assert!(Version { hlc: 5, region: 10 } > early);
    }

    /// Region `a` of cluster `c`, eventual, with the given clock drift bound.
    fn settings(max_clock_drift_ms: u64) -> RegionSettings {
        RegionSettings {
            cluster: "c".into(),
            region: "a".into(),
            mode: CrossRegionMode::Invalidate,
            consistency: Consistency::Eventual,
            strong_timeout: Duration::from_millis(10),
            tombstone_ttl: Duration::from_secs(1),
            queue_limit: 10,
            queue_max_bytes: 1 << 20,
            replicate_max_bytes: 1 << 20,
            max_clock_drift_ms,
            link_user: None,
        }
    }

    #[test]
    fn clock_is_monotonic_and_passes_remote_versions() {
        let regions = Regions::new(settings(0));
        let first = regions.tick();
        let second = regions.tick();
        assert!(second > first);
        let future = Version {
            hlc: second.hlc + (1 << 30),
            region: 7,
        };
        regions.observe(future);
        assert!(regions.tick().hlc > future.hlc);
    }

    #[test]
    fn events_far_ahead_of_the_clock_are_refused() {
        let regions = Regions::new(settings(5000));
        let at = |ms: u64| ms << LOGICAL_BITS;
        let now = crate::store::now_ms();
        // behind (a queued event) or slightly ahead: fine
        assert_eq!(regions.check_drift("b", 0), Ok(()));
        assert_eq!(regions.check_drift("b", at(now + 1000)), Ok(()));
        let Err(CommandError::ClockDrift {
            region, limit_ms, ..
        }) = regions.check_drift("b", at(now + 60_000))
        else {
            panic!("an event a minute ahead was accepted");
        };
        assert_eq!((region.as_str(), limit_ms), ("b", 5000));
        assert!(regions.check_drift("b", u64::MAX).is_err());
        // 0 turns the bound off; the clock then saturates instead of wrapping
        let unbounded = Regions::new(settings(0));
        assert_eq!(unbounded.check_drift("b", u64::MAX), Ok(()));
        unbounded.observe(Version {
            hlc: u64::MAX,
            region: 1,
        });
        assert_eq!(unbounded.tick().hlc, u64::MAX);
    }

    #[test]
    fn ack_tracks_regions() {
        let ack = Ack::new();
        ack.expect("b");
        ack.expect("b");
        ack.expect("c");
        ack.acknowledged("b");
        assert_eq!(ack.missing(), vec!["b".to_string(), "c".to_string()]);
        ack.acknowledged("b");
        ack.acknowledged("c");
        assert!(ack.missing().is_empty());
        assert!(*ack.done.borrow());
    }
}
