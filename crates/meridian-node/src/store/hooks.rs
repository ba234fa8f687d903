//! What the store tells the rest of the node about its writes: the [`WriteHooks`]
//! it calls wherever a key changes or goes away, and the [`SnapshotSink`] a shard
//! copies itself into before its first change during a full sync. The node
//! implements them (CLIENT TRACKING, the replication log: see the `write_hooks` module),
//! so the store imports none of the subsystems that react to its writes.

use super::entry::Entry;

/// Called by the shards, under their lock, for every change of the keyspace.
pub trait WriteHooks: Send + Sync + std::fmt::Debug {
    /// Whether [`WriteHooks::key_changed`] and [`WriteHooks::flushed`] have anyone
    /// to tell (checked before each, so an idle node pays one call per write).
    fn watches_keys(&self) -> bool;

    /// `key` changed or went away (commands, region links, replication, expiry,
    /// eviction, migration); `writer` is the client whose command changed it.
    fn key_changed(&self, key: &[u8], writer: Option<u64>);

    /// Every key went away (FLUSHDB / FLUSHALL).
    fn flushed(&self, writer: Option<u64>);

    /// `key` did not exist and now does (an overwrite is no creation), before the
    /// command that created it goes on (Redis's `new` keyspace event).
    fn key_created(&self, key: &[u8]);

    /// The store removed `key` on its own (expiry, eviction): replicas must too.
    fn removed_by_store(&self, key: &[u8], cause: Removal);
}

/// Why the store removed a key on its own (keyspace events tell them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Its TTL passed (lazy or active expiry).
    Expired,
    /// maxmemory eviction chose it.
    Evicted,
}

/// A store nobody watches (unit tests, tools).
#[derive(Debug)]
pub struct NoHooks;

impl WriteHooks for NoHooks {
    fn watches_keys(&self) -> bool {
        false
    }

    fn key_changed(&self, _key: &[u8], _writer: Option<u64>) {}

    fn flushed(&self, _writer: Option<u64>) {}

    fn key_created(&self, _key: &[u8]) {}

    fn removed_by_store(&self, _key: &[u8], _cause: Removal) {}
}

/// A consistent copy of the keyspace in progress: each shard puts its entries
/// once, before its first change after the copy began (copy-on-iterate).
pub trait SnapshotSink: Send + Sync {
    fn put(&self, shard: usize, entries: &mut dyn Iterator<Item = &Entry>);
    /// The bytes [`SnapshotSink::put`] would produce for `entries` (the length of a
    /// streamed snapshot is declared before its shards are encoded).
    fn measure(&self, entries: &mut dyn Iterator<Item = &Entry>) -> usize;
}
