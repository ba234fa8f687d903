//! A connection as the rest of the node sees it: the registry's [`ClientHandle`]
//! (CLIENT LIST / KILL, pub/sub and tracking delivery) and the [`ClientEvent`]s
//! queued to it from outside its own request stream.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

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
    Tracking(TrackingPush),
    Kill,
    /// CLIENT UNBLOCK: a blocked command answers now, as a timeout or with an error.
    Unblock {
        error: bool,
    },
    /// The node is stopping (`Shared::shutting_down` is set): wakes an idle connection
    /// so it starts draining. Carries nothing to the client.
    NodeStopping,
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
            ClientEvent::Kill | ClientEvent::Unblock { .. } | ClientEvent::NodeStopping => 0,
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
    /// When the client last sent something: [`crate::store::coarse_ms`], stored on
    /// every read (a precise clock and a lock per read cost more than CLIENT LIST needs).
    pub last_active_ms: AtomicU64,
    pub resp3: AtomicBool,
    pub subscriptions: AtomicUsize,
    pub pattern_subscriptions: AtomicUsize,
    pub in_multi: AtomicBool,
    /// Waiting in a blocking command (CLIENT UNBLOCK may end the wait).
    pub blocked: AtomicBool,
    /// The ACL user the connection is logged in as (CLIENT LIST `user=`; ACL DELUSER
    /// closes its connections).
    pub user: Mutex<std::sync::Arc<str>>,
    /// Queued bytes past which the connection is closed (the hard limit of Redis's
    /// `client-output-buffer-limit pubsub` class; 0 = none), shared with the settings
    /// so CONFIG SET moves it for every connection.
    output_limit: std::sync::Arc<AtomicUsize>,
    /// Set once the connection must close now (over its output limit, CLIENT KILL,
    /// ACL DELUSER): it stops writing what is queued and closes, as Redis does.
    closing: AtomicBool,
    /// Wakes the connection out of a write its client does not read.
    close_now: tokio::sync::Notify,
}

/// Pub/sub output limit per subscriber, Redis's default (client-output-buffer-limit
/// pubsub 32mb): what a handle has unless given the node's setting.
pub const PUBSUB_OUTPUT_LIMIT: usize = 32 * 1024 * 1024;

impl ClientHandle {
    /// A connection's handle as it starts: no name, RESP2, the `default` user.
    pub fn new(
        id: u64,
        addr: String,
        laddr: String,
        events: mpsc::UnboundedSender<ClientEvent>,
    ) -> ClientHandle {
        ClientHandle {
            id,
            addr,
            laddr,
            created: Instant::now(),
            name: Default::default(),
            events,
            pending_bytes: Default::default(),
            last_command: Default::default(),
            last_active_ms: AtomicU64::new(crate::store::coarse_ms()),
            resp3: Default::default(),
            subscriptions: Default::default(),
            pattern_subscriptions: Default::default(),
            in_multi: Default::default(),
            blocked: Default::default(),
            user: Mutex::new("default".into()),
            output_limit: std::sync::Arc::new(AtomicUsize::new(PUBSUB_OUTPUT_LIMIT)),
            closing: AtomicBool::new(false),
            close_now: tokio::sync::Notify::new(),
        }
    }

    /// Closes the connection at once, whatever it has queued or is writing.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close_now.notify_one();
        // (wakes a connection waiting for events)
        let _ = self.events.send(ClientEvent::Kill);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Completes once [`close`](Self::close) was called (at once if it was already).
    pub async fn closed(&self) {
        if !self.is_closing() {
            self.close_now.notified().await;
        }
    }

    /// The handle, its output limit following `limit` (the node's setting).
    pub fn with_output_limit(self, limit: std::sync::Arc<AtomicUsize>) -> ClientHandle {
        ClientHandle {
            output_limit: limit,
            ..self
        }
    }

    /// Queues an event; a subscriber that fell too far behind is disconnected.
    pub fn deliver(&self, event: ClientEvent) -> bool {
        let size = event.size();
        let pending = self.pending_bytes.fetch_add(size, Ordering::Relaxed) + size;
        let limit = self.output_limit.load(Ordering::Relaxed);
        if limit > 0 && pending > limit {
            self.close();
            return false;
        }
        self.events.send(event).is_ok()
    }
}

/// What a tracking push carries to a connection.
#[derive(Debug, Clone)]
pub enum TrackingPush {
    /// Keys to drop from the near cache; `None` means everything (FLUSHALL).
    Invalidate(Option<Vec<Bytes>>),
    /// The REDIRECT target is gone (sent to RESP3 tracking clients).
    RedirectBroken(u64),
}

impl TrackingPush {
    pub fn size(&self) -> usize {
        match self {
            TrackingPush::Invalidate(keys) => {
                32 + keys
                    .as_ref()
                    .map_or(0, |keys| keys.iter().map(|key| key.len() + 16).sum())
            }
            TrackingPush::RedirectBroken(_) => 48,
        }
    }
}
