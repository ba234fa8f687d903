//! State shared by every connection: the keyspace, runtime configuration,
//! connected clients, pub/sub broker, topology map and counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::protocol::Limits;
use crate::store::Db;
use meridian_topology::TopologyMap;

/// Something delivered to a connection from outside its own request stream.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Message {
        channel: Bytes,
        payload: Bytes,
    },
    PMessage {
        pattern: Bytes,
        channel: Bytes,
        payload: Bytes,
    },
    /// Client-side caching: an invalidation (or broken-redirect notice).
    Tracking(crate::tracking::TrackingPush),
    Kill,
}

impl ClientEvent {
    /// Bytes accounted against the subscriber's output limit.
    pub fn size(&self) -> usize {
        match self {
            ClientEvent::Message { channel, payload } => channel.len() + payload.len() + 32,
            ClientEvent::PMessage {
                pattern,
                channel,
                payload,
            } => pattern.len() + channel.len() + payload.len() + 40,
            ClientEvent::Tracking(push) => push.size(),
            ClientEvent::Kill => 0,
        }
    }
}

/// The registry's view of one connection (CLIENT LIST / KILL, pub/sub delivery).
#[derive(Debug)]
pub struct ClientHandle {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub created: Instant,
    pub name: Mutex<Option<String>>,
    pub events: mpsc::UnboundedSender<ClientEvent>,
    /// Bytes of pub/sub payload queued but not yet written.
    pub pending_bytes: AtomicUsize,
    pub last_command: AtomicUsize,
    pub last_active: Mutex<Instant>,
    pub resp3: AtomicBool,
    pub subscriptions: AtomicUsize,
    pub pattern_subscriptions: AtomicUsize,
    pub in_multi: AtomicBool,
}

/// Pub/sub output limit per subscriber (Redis: client-output-buffer-limit pubsub 32mb).
pub const PUBSUB_OUTPUT_LIMIT: usize = 32 * 1024 * 1024;

impl ClientHandle {
    /// Queues an event; a subscriber that fell too far behind is disconnected.
    pub fn deliver(&self, event: ClientEvent) -> bool {
        let size = event.size();
        let pending = self.pending_bytes.fetch_add(size, Ordering::Relaxed) + size;
        if pending > PUBSUB_OUTPUT_LIMIT {
            let _ = self.events.send(ClientEvent::Kill);
            return false;
        }
        self.events.send(event).is_ok()
    }
}

#[derive(Default)]
pub struct Counters {
    pub connections_received: AtomicU64,
    pub commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub pubsub_messages: AtomicU64,
}

/// Runtime-settable configuration (CONFIG SET).
pub struct RuntimeConfig {
    pub requirepass: RwLock<Option<String>>,
    pub limits: Limits,
    /// Parameters accepted for compatibility but without effect (save, appendonly, ...).
    pub compat: Mutex<BTreeMap<String, String>>,
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
    pub clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    pub next_client_id: AtomicU64,
    pub broker: Broker,
    pub counters: Counters,
    /// Calls per command, indexed like the command table.
    pub command_calls: Box<[AtomicU64]>,
    pub topology: RwLock<Option<Arc<TopologyMap>>>,
    /// Slots this node is migrating away or importing (CLUSTER SETSLOT).
    pub migrations: RwLock<crate::migration::SlotMigrations>,
    pub shutting_down: AtomicBool,
    /// Optional HTTP origin for read-through / write-through.
    pub origin: Option<Arc<crate::origin::Origin>>,
    /// Links to peer regions (cross-region invalidation / replication).
    pub regions: crate::region::Regions,
}

impl Shared {
    pub fn requirepass(&self) -> Option<String> {
        self.config.requirepass.read().clone()
    }

    pub fn connected_clients(&self) -> usize {
        self.clients.lock().len()
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
