//! The outbound side of one peer region: a bounded queue of events, the
//! peer's topology (learnt from the peer itself) and one pipelined link per
//! peer primary. Events leave the queue only once acknowledged, so a broken
//! link loses nothing; a full queue marks slots dirty instead (see
//! docs/region-links.md).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::link::{LinkConn, LinkReply};
use super::{Event, EventKind, PeerConfig, REGION_METRICS, peer_label};
use crate::state::Shared;
use meridian_topology::{SLOT_COUNT, TopologyMap};

/// Events sent per round (per peer).
const BATCH: usize = 1024;
const IDLE_REFRESH: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct Peer {
    pub config: PeerConfig,
    queue: Mutex<VecDeque<Event>>,
    dirty: Mutex<BTreeSet<u16>>,
    limit: usize,
    wake: Notify,
    up: AtomicBool,
    /// The peer region's map (None until learnt; Some(None) = standalone peer).
    topology: Mutex<Option<Option<Arc<TopologyMap>>>>,
    last_error: Mutex<String>,
    /// Origin-to-acknowledgement time of the oldest event of the last delivered batch.
    last_lag_ms: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
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
    /// How far behind the peer is: the last batch's delivery lag, or the age of the
    /// oldest event still waiting when that is larger.
    pub lag_ms: u64,
}

impl Peer {
    pub fn start(shared: &Arc<Shared>, config: PeerConfig) -> Arc<Peer> {
        let peer = Arc::new(Peer {
            config,
            queue: Mutex::new(VecDeque::new()),
            dirty: Mutex::new(BTreeSet::new()),
            limit: shared.regions.settings.queue_limit,
            wake: Notify::new(),
            up: AtomicBool::new(false),
            topology: Mutex::new(None),
            last_error: Mutex::new(String::new()),
            last_lag_ms: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        REGION_METRICS
            .link_up
            .get_or_create(&peer_label(&peer.config.region))
            .set(0);
        let task = tokio::spawn(peer.clone().run(shared.clone()));
        *peer.task.lock() = Some(task);
        peer
    }

    pub fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        self.set_up(false);
    }

    pub fn status(&self) -> PeerStatus {
        let waiting_ms = self.queue.lock().front().map_or(0, |oldest| {
            crate::store::now_ms().saturating_sub(oldest.origin_ms)
        });
        PeerStatus {
            region: self.config.region.clone(),
            seeds: self.config.seeds.clone(),
            up: self.up.load(Ordering::Relaxed),
            queued: self.queue.lock().len(),
            dirty_slots: self.dirty.lock().len(),
            epoch: self
                .topology
                .lock()
                .as_ref()
                .and_then(|map| map.as_ref().map(|map| map.epoch)),
            last_error: self.last_error.lock().clone(),
            lag_ms: waiting_ms.max(self.last_lag_ms.load(Ordering::Relaxed)),
        }
    }

    /// Queues an event; when the queue is full the event's slots are marked
    /// dirty instead (invalidated wholesale once the link drains).
    pub fn push(&self, event: Event) {
        let label = peer_label(&self.config.region);
        let mut queue = self.queue.lock();
        if queue.len() >= self.limit {
            drop(queue);
            let mut dirty = self.dirty.lock();
            match event.kind.slot() {
                Some(slot) => {
                    dirty.insert(slot);
                }
                None => dirty.extend(0..SLOT_COUNT),
            }
            REGION_METRICS.overflows.get_or_create(&label).inc();
            REGION_METRICS
                .dirty_slots
                .get_or_create(&label)
                .set(dirty.len() as i64);
        } else {
            queue.push_back(event);
            REGION_METRICS
                .queue_depth
                .get_or_create(&label)
                .set(queue.len() as i64);
        }
        self.wake.notify_one();
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        REGION_METRICS
            .link_up
            .get_or_create(&peer_label(&self.config.region))
            .set(i64::from(up));
    }

    async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let mut links: HashMap<String, LinkConn> = HashMap::new();
        let mut backoff = Duration::from_millis(50);
        loop {
            let idle = self.queue.lock().is_empty() && self.dirty.lock().is_empty();
            if idle && self.up.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_REFRESH) => {
                        // periodic topology refresh doubles as a liveness check
                        *self.topology.lock() = None;
                    }
                }
            }
            match self.round(&shared, &mut links).await {
                Ok(()) => {
                    self.set_up(true);
                    backoff = Duration::from_millis(50);
                }
                Err(error) => {
                    if self.up.load(Ordering::Relaxed) {
                        tracing::warn!(peer = %self.config.region, %error, "region link down");
                    }
                    self.set_up(false);
                    *self.last_error.lock() = error;
                    links.clear();
                    *self.topology.lock() = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connect(&self, shared: &Shared, addr: &str) -> Result<LinkConn, String> {
        let settings = &shared.regions.settings;
        let password = shared.requirepass().unwrap_or_default();
        tokio::time::timeout(
            Duration::from_secs(2),
            LinkConn::connect(addr, &settings.cluster, &settings.region, &password),
        )
        .await
        .map_err(|_| format!("{addr}: connect timed out"))?
        .map_err(|error| format!("{addr}: {error}"))
    }

    /// Learns the peer region's topology from any seed.
    async fn learn_topology(
        &self,
        shared: &Shared,
        links: &mut HashMap<String, LinkConn>,
    ) -> Result<Option<Arc<TopologyMap>>, String> {
        if let Some(known) = self.topology.lock().clone() {
            return Ok(known);
        }
        let mut errors = Vec::new();
        for seed in &self.config.seeds {
            let mut link = match links.remove(seed) {
                Some(link) => link,
                None => match self.connect(shared, seed).await {
                    Ok(link) => link,
                    Err(error) => {
                        errors.push(error);
                        continue;
                    }
                },
            };
            match tokio::time::timeout(Duration::from_secs(2), link.topology()).await {
                Ok(Ok(map)) => {
                    let map = map.map(Arc::new);
                    links.insert(seed.clone(), link);
                    *self.topology.lock() = Some(map.clone());
                    return Ok(map);
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

    /// The link port every node of the peer region listens on (the seeds').
    fn link_port(&self) -> &str {
        self.config
            .seeds
            .first()
            .and_then(|seed| seed.rsplit_once(':'))
            .map_or("16379", |(_, port)| port)
    }

    /// Addresses (link endpoints) an event must reach.
    fn targets(&self, map: &Option<Arc<TopologyMap>>, event: &Event) -> Vec<String> {
        let Some(map) = map else {
            // standalone peer: its seed serves every slot
            return self.config.seeds.first().cloned().into_iter().collect();
        };
        let endpoint = |ip: &str| {
            if ip.contains(':') {
                format!("[{ip}]:{}", self.link_port())
            } else {
                format!("{ip}:{}", self.link_port())
            }
        };
        match event.kind.slot() {
            Some(slot) => map
                .owner_of_slot(slot)
                .map(|shard| endpoint(&shard.primary.ip))
                .into_iter()
                .collect(),
            None => {
                let all: BTreeSet<String> = map
                    .shards
                    .iter()
                    .map(|shard| endpoint(&shard.primary.ip))
                    .collect();
                all.into_iter().collect()
            }
        }
    }

    /// One round: make sure the topology is known, then deliver a batch.
    async fn round(
        &self,
        shared: &Shared,
        links: &mut HashMap<String, LinkConn>,
    ) -> Result<(), String> {
        let map = self.learn_topology(shared, links).await?;
        let mut batch: Vec<Event> = self.queue.lock().iter().take(BATCH).cloned().collect();
        let mut dirty_taken = Vec::new();
        if batch.is_empty() {
            // the queue drained: now the slots whose events were dropped
            let dirty = self.dirty.lock().clone();
            if !dirty.is_empty() {
                let version = shared.regions.tick();
                for slot in dirty.iter().take(BATCH) {
                    dirty_taken.push(*slot);
                    batch.push(Event {
                        kind: EventKind::Slot(*slot),
                        version,
                        origin_region: shared.regions.region_name.clone(),
                        origin_ms: crate::store::now_ms(),
                        ack: None,
                    });
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut by_target: HashMap<String, Vec<&Event>> = HashMap::new();
        for event in &batch {
            let targets = self.targets(&map, event);
            if targets.is_empty() {
                return Err(format!(
                    "peer region {} has no owner for an event's slot",
                    self.config.region
                ));
            }
            for target in targets {
                by_target.entry(target).or_default().push(event);
            }
        }
        for (target, events) in by_target {
            let mut link = match links.remove(&target) {
                Some(link) => link,
                None => self.connect(shared, &target).await?,
            };
            let replies = tokio::time::timeout(Duration::from_secs(5), link.send(&events))
                .await
                .map_err(|_| format!("{target}: no acknowledgement within 5s"))?
                .map_err(|error| format!("{target}: {error}"))?;
            links.insert(target.clone(), link);
            for reply in replies {
                match reply {
                    LinkReply::Ok => {}
                    LinkReply::Error(error) if error.starts_with("MOVED") => {
                        // ownership changed in the peer region: relearn and resend
                        *self.topology.lock() = None;
                        return Ok(());
                    }
                    LinkReply::Error(error) => {
                        tracing::warn!(peer = %self.config.region, %target, %error, "peer refused an event");
                    }
                    LinkReply::Bulk(_) => {}
                }
            }
        }
        let label = peer_label(&self.config.region);
        if dirty_taken.is_empty() {
            let mut queue = self.queue.lock();
            let delivered = batch.len().min(queue.len());
            if let Some(oldest) = batch.iter().map(|event| event.origin_ms).min() {
                self.last_lag_ms.store(
                    crate::store::now_ms().saturating_sub(oldest),
                    Ordering::Relaxed,
                );
            }
            for event in queue.drain(..delivered) {
                if let Some(ack) = &event.ack {
                    ack.acknowledged(&self.config.region);
                }
            }
            REGION_METRICS
                .queue_depth
                .get_or_create(&label)
                .set(queue.len() as i64);
        } else {
            let mut dirty = self.dirty.lock();
            for slot in &dirty_taken {
                dirty.remove(slot);
            }
            REGION_METRICS
                .dirty_slots
                .get_or_create(&label)
                .set(dirty.len() as i64);
        }
        REGION_METRICS
            .events_sent
            .get_or_create(&label)
            .inc_by(batch.len() as u64);
        Ok(())
    }
}
