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

/// `clock` (a `libc::CLOCK_*`) in milliseconds: `clock_gettime` directly, as every
/// command and every access reads a clock (no `SystemTime` checked subtraction or
/// 128-bit millisecond math).
fn clock_ms(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(clock, &mut now) };
    (now.tv_sec.max(0) as u64) * 1000 + (now.tv_nsec as u64) / 1_000_000
}

pub use db::{Access, Db, Held, OutOfMemory, SharedStats, now_ms};
pub use entry::Entry;
pub use eviction::Policy;
pub use eviction::lru::coarse_ms;
pub use hooks::{NoHooks, Removal, SnapshotSink, WriteHooks};
pub use shard::{Holder, Shard, WatchFlag};
pub use value::{
    HashValue, KeyCollection, ListValue, SetValue, Value, ValueRef, ZSetValue, sorts_before,
};
