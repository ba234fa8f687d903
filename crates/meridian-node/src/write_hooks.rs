//! The node's side of the store's write hooks ([`crate::store::WriteHooks`]): a key
//! change invalidates CLIENT TRACKING near caches, and a key the store removes on
//! its own (expiry, eviction) is propagated to the replicas as a DEL and published
//! as an `expired` / `evicted` keyspace event; a created key is published as `new`. Commands' writes reach the
//! replication log through the dispatcher instead, which encodes their effects
//! once the command succeeded (see `commands::run_write`).

use std::sync::Arc;

use crate::notify::{KeyspaceEvents, NotifyClass};
use crate::replication::backlog::ReplLog;
use crate::store::{Removal, WriteHooks};
use crate::tracking::Tracking;

/// What the node does about the store's writes.
#[derive(Debug)]
pub struct NodeWriteHooks {
    pub log: Arc<ReplLog>,
    pub tracking: Arc<Tracking>,
    pub keyspace_events: Arc<KeyspaceEvents>,
}

impl WriteHooks for NodeWriteHooks {
    #[inline]
    fn watches_keys(&self) -> bool {
        self.tracking.is_active()
    }

    fn key_changed(&self, key: &[u8], writer: Option<u64>) {
        self.tracking.key_changed(key, writer);
    }

    fn flushed(&self, writer: Option<u64>) {
        self.tracking.flushed(writer);
    }

    #[inline]
    fn key_created(&self, key: &[u8]) {
        self.keyspace_events.notify(NotifyClass::New, "new", key);
    }

    fn removed_by_store(&self, key: &[u8], cause: Removal) {
        if self.log.is_active() {
            self.log.append_command(&[b"DEL", key]);
        }
        // like Redis: the deletion is propagated first, then published
        match cause {
            Removal::Expired => self
                .keyspace_events
                .notify(NotifyClass::Expired, "expired", key),
            Removal::Evicted => self
                .keyspace_events
                .notify(NotifyClass::Evicted, "evicted", key),
        }
    }
}
