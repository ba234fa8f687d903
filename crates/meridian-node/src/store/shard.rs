//! One lock-striped partition of the keyspace: a slab of entries indexed by a
//! hash table, the volatile-key vector used by active expiry and the volatile
//! policies, the SIEVE queue, per-slot key counts and WATCH registrations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Slab = allocator_api2::vec::Vec<Option<Entry>, Pages>;

use super::SharedStats;
use super::entry::{Entry, NIL, Pages, Src, prefetch};
use super::eviction::sieve::SieveList;
use super::eviction::{Policy, Rng, lfu, lru};
use super::hooks::{Removal, SnapshotSink};
use super::table::IndexTable;
use super::value::{Value, alloc_size};

/// Set by the store when a watched key changes; read by EXEC.
pub type WatchFlag = Arc<AtomicBool>;

/// What the store knows of whoever holds a shard's lock: the part of the caller's
/// execution context that changes what the store does. Set for the span of one
/// access by [`super::Access`] and restored when it ends (also on a panic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// The client whose command writes, if any (CLIENT TRACKING: NOLOOP, and its
    /// own invalidations follow its reply).
    pub writer: Option<u64>,
    /// A replica applying its primary's stream: expired keys are still there for it.
    pub primary_stream: bool,
}

pub struct Shard {
    pub(crate) slab: Slab,
    free: Vec<u32>,
    table: IndexTable,
    /// Bytes of `table` counted in the store's memory.
    table_bytes: usize,
    hasher: foldhash::fast::RandomState,
    pub(crate) volatile: allocator_api2::vec::Vec<u32, Pages>,
    sieve: SieveList,
    pool: Vec<u32>,
    /// Key counts for the slots this shard owns, indexed by `slot >> shift`.
    slot_counts: Vec<u32>,
    shift: u32,
    watchers: hashbrown::HashMap<Box<[u8]>, Vec<WatchFlag>>,
    /// Slab positions of the keys of each slot, from one scan of the slab, for a
    /// resharding that moves this shard's slots one after another (each would
    /// otherwise scan the whole slab again). Positions may be stale (freed or reused
    /// since): [`Shard::keys_of_slot`] checks each one, and scans when a slot holds
    /// keys the index does not name. Built on the first use, dropped when used up.
    slot_positions: Option<hashbrown::HashMap<u16, Vec<u32>>>,
    /// Bytes of `slot_positions` counted in the store's memory.
    slot_positions_bytes: usize,
    pub(crate) rng: Rng,
    stats: Arc<SharedStats>,
    index: usize,
    /// Who holds the lock during the current access.
    holder: Holder,
    /// A full-sync snapshot waiting for this shard's copy (copy-on-iterate).
    pub snapshot: Option<Arc<dyn SnapshotSink>>,
    pub hits: u64,
    pub misses: u64,
    pub expired: u64,
    pub evicted: u64,
}

/// Result of a lookup that also reports why nothing was found.
fn hash_key(hasher: &foldhash::fast::RandomState, key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one(key)
}

impl Shard {
    pub fn new(index: usize, shard_count: usize, stats: Arc<SharedStats>) -> Self {
        let shift = shard_count.trailing_zeros();
        Shard {
            slab: Slab::new_in(Pages),
            free: Vec::new(),
            table: IndexTable::new(),
            table_bytes: 0,
            hasher: foldhash::fast::RandomState::default(),
            volatile: allocator_api2::vec::Vec::new_in(Pages),
            sieve: SieveList::default(),
            pool: Vec::new(),
            slot_counts: vec![0; (usize::from(meridian_topology::SLOT_COUNT) >> shift).max(1)],
            shift,
            watchers: hashbrown::HashMap::new(),
            slot_positions: None,
            slot_positions_bytes: 0,
            rng: Rng::new(
                0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            ),
            stats,
            index,
            holder: Holder::default(),
            snapshot: None,
            hits: 0,
            misses: 0,
            expired: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    pub fn keys_in_slot(&self, slot: u16) -> u32 {
        self.slot_counts
            .get(usize::from(slot) >> self.shift)
            .copied()
            .unwrap_or(0)
    }

    pub fn entry(&self, index: u32) -> &Entry {
        match self.slab.get(index as usize) {
            Some(Some(entry)) => entry,
            _ => unreachable!("shard index {index} is vacant"),
        }
    }

    fn entry_mut(&mut self, index: u32) -> &mut Entry {
        match self.slab.get_mut(index as usize) {
            Some(Some(entry)) => entry,
            _ => unreachable!("shard index {index} is vacant"),
        }
    }

    /// Occupied slab positions (used by SCAN, KEYS and sampling).
    /// Up to `count` live keys of `slot` (expired ones left out).
    pub fn keys_of_slot(&mut self, slot: u16, count: usize, now_ms: u64) -> Vec<Vec<u8>> {
        let present = self.keys_in_slot(slot) as usize;
        if present == 0 || count == 0 {
            return Vec::new();
        }
        let Shard {
            slot_positions,
            slab,
            ..
        } = self;
        let index = slot_positions.get_or_insert_with(|| {
            let mut index: hashbrown::HashMap<u16, Vec<u32>> = hashbrown::HashMap::new();
            for (position, entry) in slab.iter().enumerate() {
                if let Some(entry) = entry {
                    index.entry(entry.slot()).or_default().push(position as u32);
                }
            }
            index
        });
        let live = |entry: &Entry| entry.expire_at() == 0 || entry.expire_at() > now_ms;
        let mut keys = Vec::new();
        if let Some(positions) = index.get_mut(&slot) {
            while keys.len() < count
                && let Some(position) = positions.pop()
            {
                if let Some(Some(entry)) = slab.get(position as usize)
                    && entry.slot() == slot
                {
                    // an expired key is counted, but not sent
                    if live(entry) {
                        keys.push(entry.key().to_vec());
                    }
                }
            }
            if positions.is_empty() {
                index.remove(&slot);
            }
        }
        if index.is_empty() {
            *slot_positions = None;
        }
        self.sync_slot_positions_memory();
        if keys.len() < count && keys.len() < present {
            // keys the index does not name (written since it was built, or named by
            // positions an earlier batch took but did not move): scan
            return self.scan_slot(slot, count, now_ms);
        }
        keys
    }

    fn scan_slot(&self, slot: u16, count: usize, now_ms: u64) -> Vec<Vec<u8>> {
        self.slab
            .iter()
            .flatten()
            .filter(|entry| {
                entry.slot() == slot && (entry.expire_at() == 0 || entry.expire_at() > now_ms)
            })
            .take(count)
            .map(|entry| entry.key().to_vec())
            .collect()
    }

    fn sync_slot_positions_memory(&mut self) {
        let bytes = self.slot_positions.as_ref().map_or(0, |index| {
            index.capacity() * (size_of::<(u16, Vec<u32>)>() + 1)
                + index
                    .values()
                    .map(|positions| alloc_size(positions.capacity() * size_of::<u32>()))
                    .sum::<usize>()
        });
        self.account(bytes as isize - self.slot_positions_bytes as isize);
        self.slot_positions_bytes = bytes;
    }

    pub fn slab_len(&self) -> usize {
        self.slab.len()
    }

    pub fn entry_at(&self, position: usize) -> Option<&Entry> {
        self.slab.get(position).and_then(Option::as_ref)
    }

    fn find_raw(&self, key: &[u8]) -> Option<u32> {
        let hash = hash_key(&self.hasher, key);
        let slab = &self.slab;
        self.table.find(hash, |index| {
            slab[index as usize]
                .as_ref()
                .is_some_and(|entry| entry.key() == key)
        })
    }

    /// The hash under which this shard's table files `key`.
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        hash_key(&self.hasher, key)
    }

    /// Starts loading what a lookup of `hash` reads first, then second, then third
    /// (`stage` 0, 1, 2: the table's bucket, the candidates' slab slots, their
    /// records); each stage expects the previous one's loads to have arrived, so a
    /// batch of keys runs every key's stage 0, then every stage 1, then every stage 2
    /// and the lookups that follow find their memory in the cache.
    pub fn prefetch(&self, hash: u64, stage: u8) {
        match stage {
            0 => self.table.prefetch(hash),
            1 => self.table.home_candidates(hash, |index| {
                if let Some(slot) = self.slab.get(index as usize) {
                    prefetch(slot);
                }
            }),
            _ => self.table.home_candidates(hash, |index| {
                if let Some(Some(entry)) = self.slab.get(index as usize) {
                    entry.prefetch_record();
                }
            }),
        }
    }

    /// Finds a live key; an expired one is deleted on the spot (lazy expiry).
    /// A replica never expires on its own clock: it hides expired keys from
    /// clients and applies its primary's stream as if they were alive.
    pub fn find(&mut self, key: &[u8], now_ms: u64) -> Option<u32> {
        let index = self.find_raw(key)?;
        let expire_at = self.entry(index).expire_at();
        if expire_at != 0 && expire_at <= now_ms {
            if self.is_replica() {
                return self.holder.primary_stream.then_some(index);
            }
            // CLIENT PAUSE: served as missing, deleted (and propagated) once the pause ends
            if self.stats.deletions_held(now_ms) {
                return None;
            }
            self.expire_entry(index);
            return None;
        }
        Some(index)
    }

    /// Who holds the lock during the current access.
    pub fn holder(&self) -> Holder {
        self.holder
    }

    /// Runs `f` with this shard held by `holder`; the previous holder is back
    /// afterwards, even when `f` panics.
    pub fn held_by<R>(&mut self, holder: Holder, f: impl FnOnce(&mut Shard) -> R) -> R {
        struct Restore<'s> {
            shard: &'s mut Shard,
            previous: Holder,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.shard.holder = self.previous;
            }
        }
        let previous = std::mem::replace(&mut self.holder, holder);
        let restore = Restore {
            shard: self,
            previous,
        };
        f(&mut *restore.shard)
    }

    /// A key's entry without expiry checks or access recording.
    pub fn peek(&self, key: &[u8]) -> Option<&Entry> {
        self.find_raw(key).map(|index| self.entry(index))
    }

    fn is_replica(&self) -> bool {
        self.stats.replica.load(Ordering::Relaxed)
    }

    /// Removes an expired entry and tells the replicas (DEL).
    fn expire_entry(&mut self, index: u32) -> Entry {
        let entry = self.remove(index);
        self.expired += 1;
        self.stats
            .hooks
            .removed_by_store(entry.key(), Removal::Expired);
        entry
    }

    /// The bytes this shard's pending snapshot copy will take; None when no copy is
    /// pending (it was made, or no snapshot marked this shard).
    pub fn pending_snapshot_len(&self) -> Option<usize> {
        let job = self.snapshot.as_ref()?;
        Some(job.measure(&mut self.slab.iter().flatten()))
    }

    /// Drops a pending snapshot copy without making it (its full sync ended early).
    pub fn abandon_snapshot(&mut self) {
        self.snapshot = None;
    }

    /// Encodes this shard into a pending snapshot before its first change.
    pub fn preserve(&mut self) {
        if let Some(job) = self.snapshot.take() {
            job.put(self.index, &mut self.slab.iter().flatten());
        }
    }

    /// Finds a key for a read command: counts hit/miss and records the access.
    pub fn read(&mut self, key: &[u8], now_ms: u64) -> Option<u32> {
        match self.find(key, now_ms) {
            Some(index) => {
                self.hits += 1;
                self.touch(index);
                Some(index)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Records an access for the eviction policies.
    pub fn touch(&mut self, index: u32) {
        let clock = lru::clock();
        let stamp = if self.uses_lfu() {
            lfu::touch(self.entry(index).stamp(), clock, &mut self.rng)
        } else {
            clock
        };
        let entry = self.entry_mut(index);
        entry.set_visited(true);
        entry.set_stamp(stamp);
    }

    /// The eviction policy in force (it says how access stamps are to be read).
    pub fn policy(&self) -> Policy {
        Policy::from_u8(self.stats.policy.load(Ordering::Relaxed))
    }

    /// Whether access stamps hold LFU state (else the LRU clock). Like Redis's
    /// `lru` field, a stamp is read under the policy in force when it is used.
    fn uses_lfu(&self) -> bool {
        Policy::from_u8(self.stats.policy.load(Ordering::Relaxed)).uses_lfu()
    }

    /// Counts the hash table's bytes (it grows by doubling and only shrinks
    /// when emptied), so `used_memory` follows the real allocation.
    fn sync_table_memory(&mut self) {
        let bytes = alloc_size(self.table.allocated_bytes());
        if bytes != self.table_bytes {
            self.account(bytes as isize - self.table_bytes as isize);
            self.table_bytes = bytes;
        }
    }

    /// WATCH and client-side caching hear of a change to the key at `index`.
    fn signal_modified_at(&mut self, index: u32) {
        if self.watchers.is_empty() && !self.stats.hooks.watches_keys() {
            return;
        }
        let key = self.entry(index).key().to_vec();
        self.signal_modified(&key);
    }

    fn account(&self, delta: isize) {
        self.stats.add_memory(self.index, delta);
    }

    fn notify_watchers(&mut self, key: &[u8]) {
        if self.watchers.is_empty() {
            return;
        }
        if let Some(flags) = self.watchers.remove(key) {
            for flag in flags {
                flag.store(true, Ordering::Release);
            }
        }
    }

    /// A key is about to change or go away: wake WATCHers and invalidate
    /// client-side caches (Redis's signalModifiedKey).
    fn signal_modified(&mut self, key: &[u8]) {
        self.notify_watchers(key);
        if self.stats.hooks.watches_keys() {
            self.stats.hooks.key_changed(key, self.holder.writer);
        }
    }

    /// Registers a WATCH on `key`.
    pub fn watch(&mut self, key: &[u8], flag: WatchFlag) {
        self.watchers.entry(key.into()).or_default().push(flag);
    }

    /// Removes WATCH registrations of `flag`.
    pub fn unwatch(&mut self, key: &[u8], flag: &WatchFlag) {
        if let Some(flags) = self.watchers.get_mut(key) {
            flags.retain(|existing| !Arc::ptr_eq(existing, flag));
            if flags.is_empty() {
                self.watchers.remove(key);
            }
        }
    }

    /// Inserts or replaces `key`. A replaced key keeps its queue position and
    /// counts as accessed; its TTL is replaced by `expire_at`.
    pub fn insert(&mut self, key: &[u8], slot: u16, value: Value, expire_at: u64) -> u32 {
        self.insert_src(key, slot, value.into(), expire_at)
    }

    /// [`Shard::insert`] of a string value copied from `value` (SET and friends:
    /// a short value goes straight into the key's record).
    pub fn insert_str(&mut self, key: &[u8], slot: u16, value: &[u8], expire_at: u64) -> u32 {
        self.insert_src(key, slot, Src::Bytes(value), expire_at)
    }

    fn insert_src(&mut self, key: &[u8], slot: u16, value: Src<'_>, expire_at: u64) -> u32 {
        debug_assert_eq!(slot, meridian_topology::key_slot(key));
        self.preserve();
        self.signal_modified(key);
        if let Some(index) = self.find_raw(key) {
            let before = self.entry(index).memory();
            self.entry_mut(index).set_value(value);
            self.set_expire_inner(index, expire_at);
            let after = self.entry(index).memory();
            self.account(after as isize - before as isize);
            self.touch(index);
            return index;
        }
        let clock = lru::clock();
        let stamp = if self.uses_lfu() {
            lfu::fresh(clock)
        } else {
            clock
        };
        let index = match self.free.last() {
            Some(&index) => index,
            None => self.slab.len() as u32,
        };
        let ttl = (expire_at != 0).then_some((expire_at, self.volatile.len() as u32));
        let entry = Entry::new(key, value, ttl, stamp);
        if ttl.is_some() {
            self.volatile.push(index);
        }
        if self.free.pop().is_some() {
            self.slab[index as usize] = Some(entry);
        } else {
            self.slab.push(Some(entry));
        }
        let hash = hash_key(&self.hasher, key);
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.table.insert_unique(hash, index, |other| {
            slab[other as usize]
                .as_ref()
                .map_or(0, |entry| hash_key(hasher, entry.key()))
        });
        self.sieve.push_head(&mut self.slab, index);
        if let Some(count) = self.slot_counts.get_mut(usize::from(slot) >> self.shift) {
            *count += 1;
        }
        let memory = self.entry(index).memory();
        self.account(memory as isize);
        self.sync_table_memory();
        self.stats.hooks.key_created(key);
        index
    }

    /// Deletes the entry at `index` and returns it.
    pub fn remove(&mut self, index: u32) -> Entry {
        self.preserve();
        let key_hash = hash_key(&self.hasher, self.entry(index).key());
        let memory = self.entry(index).memory();
        self.set_expire_inner(index, 0);
        self.sieve.unlink(&mut self.slab, index);
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.table.remove(key_hash, index, |other| {
            slab[other as usize]
                .as_ref()
                .map_or(0, |entry| hash_key(hasher, entry.key()))
        });
        let Some(entry) = self.slab.get_mut(index as usize).and_then(Option::take) else {
            unreachable!("removing vacant index {index}");
        };
        self.free.push(index);
        if let Some(count) = self
            .slot_counts
            .get_mut(usize::from(entry.slot()) >> self.shift)
        {
            *count = count.saturating_sub(1);
        }
        self.account(-(memory as isize));
        self.signal_modified(entry.key());
        // an emptied table gave its memory back, a rebuilt one may have grown
        self.sync_table_memory();
        self.shrink_if_sparse();
        entry
    }

    fn shrink_if_sparse(&mut self) {
        // Drop vacant tail slots so random sampling and SCAN stay efficient.
        if self.free.len() > 1024 && self.free.len() * 2 > self.slab.len() {
            while matches!(self.slab.last(), Some(None)) {
                self.slab.pop();
            }
            let len = self.slab.len() as u32;
            self.free.retain(|&index| index < len);
            if self.table.is_empty() {
                self.slab = Slab::new_in(Pages);
                self.free = Vec::new();
            }
        }
    }

    /// Mutates a value in place, keeping memory accounting and WATCH in sync.
    pub fn modify<R>(&mut self, index: u32, change: impl FnOnce(&mut Value) -> R) -> R {
        self.preserve();
        self.signal_modified_at(index);
        let before = self.entry(index).memory();
        let result = self.entry_mut(index).modify(change);
        let after = self.entry(index).memory();
        self.account(after as isize - before as isize);
        self.touch(index);
        result
    }

    pub fn set_expire(&mut self, index: u32, expire_at: u64) {
        self.preserve();
        self.signal_modified_at(index);
        let before = self.entry(index).memory();
        self.set_expire_inner(index, expire_at);
        let after = self.entry(index).memory();
        self.account(after as isize - before as isize);
    }

    fn set_expire_inner(&mut self, index: u32, expire_at: u64) {
        let position = self.entry(index).volatile_pos();
        match (position == NIL, expire_at == 0) {
            (true, true) => {}
            (true, false) => {
                let position = self.volatile.len() as u32;
                self.volatile.push(index);
                self.entry_mut(index).set_ttl(Some((expire_at, position)));
            }
            (false, true) => {
                self.volatile.swap_remove(position as usize);
                if let Some(&moved) = self.volatile.get(position as usize) {
                    self.entry_mut(moved).set_volatile_pos(position);
                }
                self.entry_mut(index).set_ttl(None);
            }
            (false, false) => self.entry_mut(index).set_ttl(Some((expire_at, position))),
        }
    }

    /// Removes every key (FLUSHDB/FLUSHALL), waking every watcher.
    pub fn clear(&mut self) {
        self.announce_flush();
        let memory: usize = self.slab.iter().flatten().map(Entry::memory).sum();
        self.account(-(memory as isize));
        self.slab = Slab::new_in(Pages);
        self.free = Vec::new();
        self.table = IndexTable::new();
        self.sync_table_memory();
        self.slot_positions = None;
        self.sync_slot_positions_memory();
        self.volatile = allocator_api2::vec::Vec::new_in(Pages);
        self.sieve = SieveList::default();
        self.pool.clear();
        self.slot_counts.iter_mut().for_each(|count| *count = 0);
        self.fire_all_watches();
    }

    /// Before every key of this shard goes: an ongoing snapshot copies it first, and the
    /// hooks hear of a flush (every flush clears all shards: shard 0 speaks for the whole
    /// keyspace).
    fn announce_flush(&mut self) {
        self.preserve();
        if self.index == 0 && self.stats.hooks.watches_keys() {
            self.stats.hooks.flushed(self.holder.writer);
        }
    }

    /// Every WATCH of this shard's keys fires (they all changed).
    fn fire_all_watches(&mut self) {
        for (_, flags) in self.watchers.drain() {
            for flag in flags {
                flag.store(true, Ordering::Release);
            }
        }
    }

    /// Takes the keys of `staged` (the same shard of a store built aside, such as a
    /// replica's incoming snapshot, holding `staged_memory` accounted bytes) in place of
    /// this shard's, as a flush followed by their writes would: watchers fire and, for
    /// shard 0, the hooks hear of a flush. Returns the old keys, in a shard the caller
    /// drops once the lock is released.
    pub fn adopt(&mut self, mut staged: Shard, staged_memory: i64) -> Shard {
        self.announce_flush();
        let old_memory = self.stats.shard_memory(self.index);
        std::mem::swap(self, &mut staged);
        // what belongs to the shard rather than to its keys stays with it
        let old = &mut staged;
        std::mem::swap(&mut self.stats, &mut old.stats);
        std::mem::swap(&mut self.holder, &mut old.holder);
        std::mem::swap(&mut self.snapshot, &mut old.snapshot);
        std::mem::swap(&mut self.watchers, &mut old.watchers);
        std::mem::swap(&mut self.hits, &mut old.hits);
        std::mem::swap(&mut self.misses, &mut old.misses);
        std::mem::swap(&mut self.expired, &mut old.expired);
        std::mem::swap(&mut self.evicted, &mut old.evicted);
        self.account((staged_memory - old_memory) as isize);
        self.fire_all_watches();
        staged
    }

    /// A random live key's index.
    pub fn random_index(&mut self, now_ms: u64) -> Option<u32> {
        for _ in 0..64 {
            if self.table.is_empty() {
                return None;
            }
            let mut position = self.rng.below(self.slab.len());
            // probe forward a little for an occupied slot
            let mut found = None;
            for _ in 0..self.slab.len().min(64) {
                if self.slab[position].is_some() {
                    found = Some(position as u32);
                    break;
                }
                position = (position + 1) % self.slab.len();
            }
            let Some(index) = found else { continue };
            let expire_at = self.entry(index).expire_at();
            if expire_at != 0 && expire_at <= now_ms && !self.is_replica() {
                if !self.stats.deletions_held(now_ms) {
                    self.expire_entry(index);
                }
                continue;
            }
            return Some(index);
        }
        // fall back to a linear walk
        self.slab
            .iter()
            .position(Option::is_some)
            .map(|position| position as u32)
    }

    /// One round of active expiry: samples up to `samples` volatile keys,
    /// deletes the expired ones and returns (sampled, expired).
    pub fn expire_sample(&mut self, samples: usize, now_ms: u64) -> (usize, usize) {
        let mut sampled = 0;
        let mut expired = 0;
        if self.is_replica() || self.stats.deletions_held(now_ms) {
            return (0, 0);
        }
        for _ in 0..samples {
            if self.volatile.is_empty() {
                break;
            }
            let position = self.rng.below(self.volatile.len());
            let index = self.volatile[position];
            sampled += 1;
            let expire_at = self.entry(index).expire_at();
            if expire_at != 0 && expire_at <= now_ms {
                self.expire_entry(index);
                expired += 1;
            }
        }
        (sampled, expired)
    }

    /// Evicts one entry under `policy`; returns the bytes freed, or None when
    /// no candidate exists.
    pub fn evict_one(&mut self, policy: Policy, samples: usize) -> Option<usize> {
        let victim = match policy {
            Policy::NoEviction => None,
            Policy::Sieve => self.sieve.select(&mut self.slab),
            Policy::AllKeysRandom => self.random_index(0),
            Policy::VolatileRandom => (!self.volatile.is_empty())
                .then(|| self.volatile[self.rng.below(self.volatile.len())]),
            Policy::AllKeysLru
            | Policy::AllKeysLfu
            | Policy::VolatileLru
            | Policy::VolatileLfu
            | Policy::VolatileTtl => self.pooled_victim(policy, samples),
        }?;
        let freed = self.entry(victim).memory();
        let entry = self.remove(victim);
        self.evicted += 1;
        self.stats
            .hooks
            .removed_by_store(entry.key(), Removal::Evicted);
        Some(freed)
    }

    /// Redis-style approximation: sample candidates, merge them with the
    /// surviving pool of earlier samples and evict the best-scored one.
    fn pooled_victim(&mut self, policy: Policy, samples: usize) -> Option<u32> {
        const POOL_SIZE: usize = 16;
        let volatile = policy.volatile_only();
        if (volatile && self.volatile.is_empty()) || self.table.is_empty() {
            self.pool.clear();
            return None;
        }
        let mut candidates = std::mem::take(&mut self.pool);
        candidates.retain(|&index| {
            matches!(self.slab.get(index as usize), Some(Some(entry)) if !volatile || entry.volatile_pos() != NIL)
        });
        for _ in 0..samples.max(1) {
            let index = if volatile {
                self.volatile[self.rng.below(self.volatile.len())]
            } else {
                match self.random_index(0) {
                    Some(index) => index,
                    None => break,
                }
            };
            if !candidates.contains(&index) {
                candidates.push(index);
            }
        }
        let clock = lru::clock();
        let score = |entry: &Entry| -> u64 {
            match policy {
                Policy::AllKeysLfu | Policy::VolatileLfu => {
                    255 - u64::from(lfu::decayed(entry.stamp(), clock))
                }
                Policy::VolatileTtl => u64::MAX - entry.expire_at(),
                _ => u64::from(lru::idle(clock, entry.stamp())),
            }
        };
        candidates.sort_by_key(|&index| std::cmp::Reverse(score(self.entry(index))));
        let victim = candidates.first().copied();
        candidates.truncate(POOL_SIZE + 1);
        if !candidates.is_empty() {
            candidates.remove(0);
        }
        self.pool = candidates;
        victim
    }
}
