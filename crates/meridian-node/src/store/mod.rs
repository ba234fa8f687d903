//! The keyspace: `shard_count` lock-striped shards, each owning the hash slots
//! `slot % shard_count`, so a slot's keys always live in one shard (cheap
//! COUNTKEYSINSLOT/GETKEYSINSLOT and, later, slot migration).

pub mod db;
pub mod entry;
pub mod eviction;
pub mod expiry;
pub mod hooks;
pub mod shard;
pub mod table;
pub mod value;

pub use db::{Access, Db, Held, OutOfMemory, SharedStats, now_ms};
pub use entry::Entry;
pub use eviction::Policy;
pub use eviction::lru::coarse_ms;
pub use hooks::{NoHooks, Removal, SnapshotSink, WriteHooks};
pub use shard::{Holder, Shard, WatchFlag};
pub use value::{
    HashValue, KeyCollection, ListValue, SetValue, Value, ValueRef, ZSetValue, sorts_before,
};
