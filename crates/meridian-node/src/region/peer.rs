//! The outbound side of one peer region.
//!
//! * [`Peer`] holds what writers and `MERIDIAN.PEERS GET` touch: the outbox of
//!   unacknowledged events (bounded; a full outbox marks slots dirty instead),
//!   the dirty slots, and the link status.
//! * A coordinator task learns the peer's topology (a watcher task asks a seed
//!   every second, and at once after a `MOVED`), keeps one lane per primary of
//!   the peer region and routes each queued event to the lane(s) that must
//!   acknowledge it.
//! * Each lane ([`super::lane`]) streams its events over its own connection
//!   with a window of requests in flight, concurrently with the other lanes.
//!
//! An event leaves the outbox only when every lane it was routed to
//! acknowledged it, so a broken link loses nothing (see docs/region-links.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::RegionHost;
use super::lane::{self, LaneHandle, LaneMessage, LaneOwner, LaneReport, MAX_BACKOFF, MIN_BACKOFF};
use super::link::LinkConn;
use super::outbox::Outbox;
use super::{Event, EventKind, PeerConfig, REGION_METRICS, peer_label};
use meridian_topology::{SLOT_COUNT, TopologyMap};

/// Dirty slots re-sent at once after an overflow.
const DIRTY_BATCH: usize = 1024;
/// How often the peer's topology is asked for (also a liveness check).
const TOPOLOGY_REFRESH: Duration = Duration::from_secs(1);
const TOPOLOGY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Peer {
    pub config: PeerConfig,
    outbox: Mutex<Outbox>,
    dirty: Mutex<BTreeSet<u16>>,
    limit: usize,
    /// Bytes of values queued before further events overflow (see [`Peer::push`]).
    max_bytes: usize,
    /// Wakes the coordinator: events were queued, or the outbox drained.
    wake: Notify,
    up: AtomicBool,
    /// Epoch of the peer's map as last learnt (None: unknown or standalone).
    epoch: Mutex<Option<u64>>,
    last_error: Mutex<String>,
    /// Origin-to-acknowledgement time of the last acknowledged event.
    last_lag_ms: AtomicU64,
    metrics: PeerMetrics,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// This peer's series of the region metrics.
struct PeerMetrics {
    link_up: Gauge,
    events_sent: Counter,
    queue_depth: Gauge,
    dirty_slots: Gauge,
    overflows: Counter,
}

impl PeerMetrics {
    fn new(region: &str) -> PeerMetrics {
        let label = peer_label(region);
        let metrics = &*REGION_METRICS;
        PeerMetrics {
            link_up: metrics.link_up.get_or_create(&label).clone(),
            events_sent: metrics.events_sent.get_or_create(&label).clone(),
            queue_depth: metrics.queue_depth.get_or_create(&label).clone(),
            dirty_slots: metrics.dirty_slots.get_or_create(&label).clone(),
            overflows: metrics.overflows.get_or_create(&label).clone(),
        }
    }
}

/// A peer's state as `MERIDIAN.PEERS GET` shows it.
#[derive(serde::Serialize)]
pub struct PeerStatus {
    pub region: String,
    pub seeds: Vec<String>,
    pub up: bool,
    pub queued: usize,
    pub dirty_slots: usize,
    pub epoch: Option<u64>,
    pub last_error: String,
    /// How far behind the peer is: the last acknowledged event's delivery lag,
    /// or the age of the oldest event still waiting when that is larger.
    pub lag_ms: u64,
}

impl LaneOwner for Peer {
    fn region(&self) -> &str {
        &self.config.region
    }

    /// Lane `target` (of lane generation `generation`) answered event `seq`;
    /// `applied`: with `+OK`. A strong write is acknowledged only when every
    /// lane the event went to applied it; a refused event still leaves the
    /// outbox, and the write waiting for it reports TIMEOUT.
    fn delivered(&self, generation: u64, seq: u64, target: &str, applied: bool) {
        let Some(delivered) = self
            .outbox
            .lock()
            .acknowledge(generation, seq, target, applied)
        else {
            return;
        };
        let event = delivered.event;
        if delivered.applied
            && let Some(ack) = &event.ack
        {
            ack.acknowledged(&self.config.region);
        }
        self.last_lag_ms.store(
            crate::store::now_ms().saturating_sub(event.origin_ms),
            Ordering::Relaxed,
        );
        self.metrics.events_sent.inc();
        self.metrics.queue_depth.set(delivered.remaining as i64);
        if delivered.remaining == 0 && !self.dirty.lock().is_empty() {
            // dirty slots are re-sent once the queue drained
            self.wake.notify_one();
        }
    }
}

impl Peer {
    pub fn start(shared: &Arc<dyn RegionHost>, config: PeerConfig) -> Arc<Peer> {
        let metrics = PeerMetrics::new(&config.region);
        metrics.link_up.set(0);
        let peer = Arc::new(Peer {
            config,
            outbox: Mutex::new(Outbox::default()),
            dirty: Mutex::new(BTreeSet::new()),
            limit: shared.regions().settings.queue_limit,
            max_bytes: shared.regions().settings.queue_max_bytes,
            wake: Notify::new(),
            up: AtomicBool::new(false),
            epoch: Mutex::new(None),
            last_error: Mutex::new(String::new()),
            last_lag_ms: AtomicU64::new(0),
            metrics,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(Coordinator::run(peer.clone(), shared.clone()));
        *peer.task.lock() = Some(task);
        peer
    }

    /// Stops the coordinator, and with it the topology watcher and every lane.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        self.set_up(false);
    }

    pub fn status(&self) -> PeerStatus {
        let (queued, oldest_ms) = {
            let outbox = self.outbox.lock();
            (outbox.len(), outbox.oldest_origin_ms())
        };
        let waiting_ms =
            oldest_ms.map_or(0, |oldest| crate::store::now_ms().saturating_sub(oldest));
        PeerStatus {
            region: self.config.region.clone(),
            seeds: self.config.seeds.clone(),
            up: self.up.load(Ordering::Relaxed),
            queued,
            dirty_slots: self.dirty.lock().len(),
            epoch: *self.epoch.lock(),
            last_error: self.last_error.lock().clone(),
            lag_ms: waiting_ms.max(self.last_lag_ms.load(Ordering::Relaxed)),
        }
    }

    /// Queues an event; when the queue is full the event's slots are marked
    /// dirty instead (invalidated wholesale once the link drains).
    pub fn push(&self, event: Event) {
        let mut outbox = self.outbox.lock();
        let bytes = event.kind.value_bytes();
        // a value alone larger than the bound still goes into an empty queue
        let over_bytes = bytes > 0
            && outbox.value_bytes() > 0
            && outbox.value_bytes().saturating_add(bytes) > self.max_bytes;
        if outbox.client_events() >= self.limit || over_bytes {
            drop(outbox);
            let mut dirty = self.dirty.lock();
            match event.kind.slot() {
                Some(slot) => {
                    dirty.insert(slot);
                }
                None => dirty.extend(0..SLOT_COUNT),
            }
            self.metrics.overflows.inc();
            self.metrics.dirty_slots.set(dirty.len() as i64);
        } else {
            outbox.push(event, false);
            self.metrics.queue_depth.set(outbox.len() as i64);
        }
        self.wake.notify_one();
    }

    /// Moves dirty slots into the (drained) outbox as slot invalidations.
    fn recover_dirty_slots(&self, shared: &dyn RegionHost) {
        let mut outbox = self.outbox.lock();
        if !outbox.is_empty() {
            return;
        }
        let mut dirty = self.dirty.lock();
        if dirty.is_empty() {
            return;
        }
        let version = shared.regions().tick();
        let slots: Vec<u16> = dirty.iter().take(DIRTY_BATCH).copied().collect();
        for slot in slots {
            // from here the outbox keeps the slot until the peer acknowledged it;
            // a later overflow marks it dirty again
            dirty.remove(&slot);
            outbox.push(
                Event {
                    kind: EventKind::Slot(slot),
                    version,
                    origin_region: shared.regions().region_name.clone(),
                    origin_ms: crate::store::now_ms(),
                    ack: None,
                },
                true,
            );
        }
        self.metrics.dirty_slots.set(dirty.len() as i64);
        self.metrics.queue_depth.set(outbox.len() as i64);
    }

    fn set_up(&self, up: bool) {
        self.metrics.link_up.set(i64::from(up));
        self.up.store(up, Ordering::Relaxed);
    }

    fn record_error(&self, error: String) {
        *self.last_error.lock() = error;
    }

    /// The link port every node of the peer region listens on (the seeds').
    fn link_port(&self) -> &str {
        self.config
            .seeds
            .first()
            .and_then(|seed| seed.rsplit_once(':'))
            .map_or("16379", |(_, port)| port)
    }

    /// Learns the peer region's topology through the control connection, or any seed.
    async fn learn_topology(
        &self,
        shared: &dyn RegionHost,
        control: &mut Option<LinkConn>,
    ) -> Result<Option<Arc<TopologyMap>>, String> {
        if let Some(conn) = control.as_mut() {
            match tokio::time::timeout(TOPOLOGY_TIMEOUT, conn.topology()).await {
                Ok(Ok(map)) => return Ok(map.map(Arc::new)),
                _ => *control = None,
            }
        }
        let settings = &shared.regions().settings;
        let password = shared.password().unwrap_or_default();
        let tls = shared.dialer();
        let mut errors = Vec::new();
        for seed in &self.config.seeds {
            let connected = lane::connect(
                seed,
                tls.as_ref(),
                &settings.cluster,
                &settings.region,
                settings.link_user.as_deref(),
                &password,
            );
            let mut conn = match connected.await {
                Ok(conn) => conn,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            match tokio::time::timeout(TOPOLOGY_TIMEOUT, conn.topology()).await {
                Ok(Ok(map)) => {
                    *control = Some(conn);
                    return Ok(map.map(Arc::new));
                }
                Ok(Err(error)) => errors.push(format!("{seed}: {error}")),
                Err(_) => errors.push(format!("{seed}: topology request timed out")),
            }
        }
        Err(if errors.is_empty() {
            "no seeds configured".to_string()
        } else {
            errors.join("; ")
        })
    }
}

/// Asks the peer for its topology every second (at once when poked) and
/// passes each answer to the coordinator; runs beside it so routing never
/// waits for the round trip.
async fn watch_topology(
    peer: Arc<Peer>,
    shared: Arc<dyn RegionHost>,
    maps: mpsc::UnboundedSender<Result<Option<Arc<TopologyMap>>, String>>,
    relearn: Arc<Notify>,
) {
    let mut control = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let learnt = peer.learn_topology(&*shared, &mut control).await;
        let pause = if learnt.is_ok() {
            backoff = MIN_BACKOFF;
            TOPOLOGY_REFRESH
        } else {
            let pause = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            pause
        };
        if maps.send(learnt).is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = relearn.notified() => {}
        }
    }
}

/// Where events go: the link endpoint of the primary owning each slot.
struct Routes {
    map: Option<Arc<TopologyMap>>,
    slot_owner: Vec<Option<Arc<str>>>,
    /// Every primary, once (pattern events go to all).
    primaries: Vec<Arc<str>>,
}

impl Routes {
    fn new(peer: &Peer, map: Option<Arc<TopologyMap>>) -> Routes {
        let Some(topology) = &map else {
            // standalone peer: its first seed serves every slot
            let primaries: Vec<Arc<str>> = peer
                .config
                .seeds
                .first()
                .map(|seed| Arc::from(seed.as_str()))
                .into_iter()
                .collect();
            let slot_owner = vec![primaries.first().cloned(); usize::from(SLOT_COUNT)];
            return Routes {
                map,
                slot_owner,
                primaries,
            };
        };
        let port = peer.link_port();
        let endpoint = |ip: &str| -> String {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        let mut by_ip: BTreeMap<String, Arc<str>> = BTreeMap::new();
        for shard in &topology.shards {
            let address = endpoint(&shard.primary.ip);
            by_ip
                .entry(shard.primary.ip.clone())
                .or_insert_with(|| Arc::from(address));
        }
        let slot_owner = (0..SLOT_COUNT)
            .map(|slot| {
                topology
                    .owner_of_slot(slot)
                    .and_then(|shard| by_ip.get(&shard.primary.ip).cloned())
            })
            .collect();
        Routes {
            slot_owner,
            primaries: by_ip.into_values().collect(),
            map,
        }
    }

    /// The lanes that must acknowledge `event`; None when nobody owns its slot.
    fn targets(&self, event: &Event) -> Option<Vec<Arc<str>>> {
        match event.kind.slot() {
            Some(slot) => self
                .slot_owner
                .get(usize::from(slot))
                .cloned()
                .flatten()
                .map(|lane| vec![lane]),
            None => (!self.primaries.is_empty()).then(|| self.primaries.clone()),
        }
    }
}

/// The coordinator task's state: routes, lanes and what it heard from them.
struct Coordinator {
    peer: Arc<Peer>,
    shared: Arc<dyn RegionHost>,
    routes: Option<Routes>,
    lanes: HashMap<Arc<str>, LaneHandle>,
    generation: u64,
    reports: mpsc::UnboundedSender<LaneMessage>,
    relearn: Arc<Notify>,
    /// The last topology request succeeded.
    seeds_reachable: bool,
    /// A lane saw `MOVED`: replace every lane even if the map looks unchanged.
    rebuild_requested: bool,
}

/// Aborts a helper task when its owner goes away.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Coordinator {
    async fn run(peer: Arc<Peer>, shared: Arc<dyn RegionHost>) {
        let (reports, mut lane_messages) = mpsc::unbounded_channel();
        let (maps, mut learnt_maps) = mpsc::unbounded_channel();
        let relearn = Arc::new(Notify::new());
        let _watcher = AbortOnDrop(tokio::spawn(watch_topology(
            peer.clone(),
            shared.clone(),
            maps,
            relearn.clone(),
        )));
        let mut coordinator = Coordinator {
            peer,
            shared,
            routes: None,
            lanes: HashMap::new(),
            generation: 0,
            reports,
            relearn,
            seeds_reachable: false,
            rebuild_requested: false,
        };
        loop {
            tokio::select! {
                _ = coordinator.peer.wake.notified() => {}
                Some(message) = lane_messages.recv() => coordinator.on_lane_message(message),
                Some(learnt) = learnt_maps.recv() => coordinator.on_topology(learnt),
            }
            coordinator.dispatch();
            coordinator.update_status();
        }
    }

    fn on_topology(&mut self, learnt: Result<Option<Arc<TopologyMap>>, String>) {
        match learnt {
            Ok(map) => {
                self.seeds_reachable = true;
                *self.peer.epoch.lock() = map.as_ref().map(|map| map.epoch);
                let changed = self.routes.as_ref().is_none_or(|routes| routes.map != map);
                if changed || self.rebuild_requested {
                    self.rebuild(map);
                }
            }
            Err(error) => {
                if self.seeds_reachable {
                    tracing::warn!(peer = %self.peer.config.region, %error, "peer region topology unreachable");
                }
                self.seeds_reachable = false;
                self.peer.record_error(error);
            }
        }
    }

    /// Replaces every lane for a new map; every waiting event is routed again
    /// (duplicates of events already applied are harmless).
    fn rebuild(&mut self, map: Option<Arc<TopologyMap>>) {
        self.rebuild_requested = false;
        let routes = Routes::new(&self.peer, map);
        self.generation = self.peer.outbox.lock().reroute_all();
        self.lanes.clear();
        for target in &routes.primaries {
            let lane = LaneHandle::start(
                self.peer.clone(),
                self.shared.clone(),
                target.clone(),
                self.generation,
                self.reports.clone(),
            );
            self.lanes.insert(target.clone(), lane);
        }
        self.routes = Some(routes);
    }

    fn on_lane_message(&mut self, message: LaneMessage) {
        if message.generation != self.generation {
            return;
        }
        let Some(lane) = self.lanes.get_mut(&message.target) else {
            return;
        };
        match message.report {
            LaneReport::Up => lane.up = true,
            LaneReport::Down(error) => {
                if lane.up {
                    tracing::warn!(peer = %self.peer.config.region, target = %message.target, %error, "region link down");
                }
                lane.up = false;
                self.peer.record_error(error);
            }
            LaneReport::Moved => {
                // ownership changed in the peer region: relearn, then resend
                tracing::debug!(peer = %self.peer.config.region, target = %message.target, "MOVED: relearning the peer topology");
                lane.up = false;
                self.rebuild_requested = true;
                self.relearn.notify_one();
            }
        }
    }

    /// Hands every newly queued event to its lanes.
    fn dispatch(&mut self) {
        let Some(routes) = &self.routes else {
            return;
        };
        self.peer.recover_dirty_slots(&*self.shared);
        let lanes = &self.lanes;
        let routed = self.peer.outbox.lock().route(
            |event| routes.targets(event),
            |target, routed| {
                if let Some(lane) = lanes.get(target) {
                    lane.send(routed);
                }
            },
        );
        if let Err(event) = routed {
            // waits in the outbox for the next map (refreshed every second)
            self.peer.record_error(format!(
                "peer region {} has no owner for slot {:?}",
                self.peer.config.region,
                event.kind.slot()
            ));
        }
    }

    fn update_status(&self) {
        let up = self.seeds_reachable
            && !self.lanes.is_empty()
            && self.lanes.values().all(|lane| lane.up);
        self.peer.set_up(up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Ack, Version};

    fn idle_peer(region: &str) -> Peer {
        Peer {
            config: PeerConfig {
                region: region.to_string(),
                seeds: Vec::new(),
            },
            outbox: Mutex::new(Outbox::default()),
            dirty: Mutex::new(BTreeSet::new()),
            limit: 100,
            max_bytes: 100,
            wake: Notify::new(),
            up: AtomicBool::new(false),
            epoch: Mutex::new(None),
            last_error: Mutex::new(String::new()),
            last_lag_ms: AtomicU64::new(0),
            metrics: PeerMetrics::new(region),
            task: Mutex::new(None),
        }
    }

    /// A strong write of `key` waiting for `peer`.
    fn strong_write(peer: &Peer, key: &str) -> Arc<Ack> {
        let ack = Ack::new();
        ack.expect(&peer.config.region);
        peer.push(Event {
            kind: EventKind::Key(key.as_bytes().to_vec()),
            version: Version::default(),
            origin_region: Arc::from("region-a"),
            origin_ms: 0,
            ack: Some(ack.clone()),
        });
        ack
    }

    fn route_all(peer: &Peer, lane: &str) -> u64 {
        let lane: Arc<str> = Arc::from(lane);
        let mut outbox = peer.outbox.lock();
        outbox
            .route(|_| Some(vec![lane.clone()]), |_, _| {})
            .expect("routable");
        outbox.generation()
    }

    #[test]
    fn values_past_the_byte_bound_mark_their_slot_dirty() {
        let peer = idle_peer("region-b");
        let push = |key: &[u8], len: usize| {
            peer.push(Event {
                kind: EventKind::Set {
                    key: key.to_vec(),
                    value: bytes::Bytes::from(vec![b'v'; len]),
                    ttl_ms: 0,
                },
                version: Version::default(),
                origin_region: Arc::from("region-a"),
                origin_ms: 0,
                ack: None,
            })
        };
        // alone, a value above the bound is still queued
        push(b"big", 150);
        push(b"next", 10);
        assert_eq!(peer.outbox.lock().len(), 1);
        assert_eq!(
            peer.dirty.lock().iter().copied().collect::<Vec<_>>(),
            vec![meridian_topology::key_slot(b"next")]
        );
        // invalidations hold no value: the byte bound does not refuse them
        peer.push(Event {
            kind: EventKind::Key(b"k".to_vec()),
            version: Version::default(),
            origin_region: Arc::from("region-a"),
            origin_ms: 0,
            ack: None,
        });
        assert_eq!(peer.outbox.lock().len(), 2);
    }

    #[test]
    fn a_strong_write_is_acknowledged_only_by_an_ok_to_its_own_event() {
        let peer = idle_peer("region-b");
        let applied = strong_write(&peer, "k1");
        let refused = strong_write(&peer, "k2");
        let unanswered = strong_write(&peer, "k3");
        let generation = route_all(&peer, "b1");

        // a reply from a lane of another generation, or another lane, counts for nothing
        peer.delivered(generation + 1, 0, "b1", true);
        peer.delivered(generation, 0, "b2", true);
        assert_eq!(applied.missing(), vec!["region-b".to_string()]);

        peer.delivered(generation, 0, "b1", true);
        assert!(applied.missing().is_empty());
        // the reply to k1 completes k1 only
        assert_eq!(refused.missing(), vec!["region-b".to_string()]);
        assert_eq!(unanswered.missing(), vec!["region-b".to_string()]);

        // an -ERR reply drops the event but does not acknowledge the write
        peer.delivered(generation, 1, "b1", false);
        assert_eq!(refused.missing(), vec!["region-b".to_string()]);
        assert_eq!(peer.status().queued, 1);

        // a frozen peer sends nothing: the last write keeps waiting
        assert_eq!(unanswered.missing(), vec!["region-b".to_string()]);
    }
}
