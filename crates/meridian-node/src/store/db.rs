//! The sharded database, shared counters, and how commands reach shards
//! ([`Access`]): one lock per access, or guards held for atomic operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

use super::eviction::Policy;
use super::hooks::{NoHooks, WriteHooks};
use super::shard::{Holder, Shard};

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    super::clock_ms(libc::CLOCK_REALTIME)
}

/// Keys sampled per eviction at most, whatever maxmemory-samples says.
pub const MAX_SAMPLES: usize = 64;

/// Counters and settings shared by all shards without locking.
#[derive(Debug)]
pub struct SharedStats {
    used_memory: AtomicI64,
    shard_memory: Box<[AtomicI64]>,
    pub maxmemory: AtomicU64,
    pub policy: AtomicU8,
    pub samples: AtomicUsize,
    /// Told about every key change, and about the store's own deletions.
    pub hooks: Arc<dyn WriteHooks>,
    /// This node replicates a primary: no expiry or eviction of its own.
    pub replica: AtomicBool,
    /// CLIENT PAUSE: until this Unix time (ms) the node deletes nothing on
    /// its own (no active or lazy expiry, no eviction), so the replication
    /// offset stands still.
    deletions_held_until: AtomicU64,
}

impl SharedStats {
    pub fn add_memory(&self, shard: usize, delta: isize) {
        if delta != 0 {
            self.used_memory.fetch_add(delta as i64, Ordering::Relaxed);
            if let Some(counter) = self.shard_memory.get(shard) {
                counter.fetch_add(delta as i64, Ordering::Relaxed);
            }
        }
    }

    pub fn used_memory(&self) -> u64 {
        self.used_memory.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn hold_deletions_until(&self, until_ms: u64) {
        self.deletions_held_until.store(until_ms, Ordering::Release);
    }

    /// True while CLIENT PAUSE holds the node's own deletions.
    pub fn deletions_held(&self, now_ms: u64) -> bool {
        self.deletions_held_until.load(Ordering::Acquire) > now_ms
    }

    pub(crate) fn shard_memory(&self, shard: usize) -> i64 {
        self.shard_memory
            .get(shard)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }
}

/// Refusal to write because memory is full and nothing can be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

pub struct Db {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    pub stats: Arc<SharedStats>,
    /// The shard whose turn it is to evict under SIEVE.
    eviction_turn: AtomicUsize,
    /// Held by the one holder that may take shards as it goes ([`Db::lock_growing`]).
    growing: Mutex<()>,
}

/// How long a holder of several shards waits for its next one before it lets go of
/// the ones it has: a script that holds that shard may be waiting for one of them.
const BACK_OFF: std::time::Duration = std::time::Duration::from_millis(1);

/// Shard guards held for an atomic multi-key operation, a transaction or a script.
///
/// Deadlock freedom: a fixed set ([`Db::lock_many`], [`Db::lock_all`]) is taken in
/// ascending order, and past its first shard the holder waits at most [`BACK_OFF`]
/// before it lets go of everything and starts over; a single-shard holder waits for no
/// other shard. So the one growing holder (a script, under [`Db::lock_growing`]'s gate)
/// may wait for any shard in any order: whoever holds it either finishes or lets go.
pub struct Held<'a> {
    /// A fixed set, indexed by shard number; `None` for shards not in it.
    guards: Vec<Option<MutexGuard<'a, Shard>>>,
    /// The shards a growing holder took as it ran (a script reaches one or two: a
    /// short list, not a slot per shard to allocate, clear and drop every run).
    taken: Vec<(usize, MutexGuard<'a, Shard>)>,
    /// The gate of a holder that may take more shards as it runs.
    growing: Option<MutexGuard<'a, ()>>,
}

impl<'a> Held<'a> {
    /// The shard if it is held.
    pub fn shard(&mut self, index: usize) -> Option<&mut Shard> {
        if let Some(Some(guard)) = self.guards.get_mut(index) {
            return Some(&mut **guard);
        }
        self.taken
            .iter_mut()
            .find(|(taken, _)| *taken == index)
            .map(|(_, guard)| &mut **guard)
    }

    /// Every shard held.
    pub fn shards(&mut self) -> impl Iterator<Item = &mut Shard> {
        let fixed = self.guards.iter_mut().flatten();
        let taken = self.taken.iter_mut().map(|(_, guard)| guard);
        fixed.chain(taken).map(|guard| &mut **guard)
    }

    /// The shard, locked now and kept until the end if it was not held. Only a growing
    /// holder may take more shards (see [`Held`]); a fixed set missing one is a bug in
    /// its planning (a command reaching a key its key specification does not name).
    fn take(&mut self, db: &'a Db, index: usize) -> &mut Shard {
        let held = matches!(self.guards.get(index), Some(Some(_)))
            || self.taken.iter().any(|(taken, _)| *taken == index);
        if !held {
            debug_assert!(
                self.growing.is_some(),
                "shard {index} reached outside a fixed lock set"
            );
            self.taken.push((index, db.shards[index].lock()));
        }
        self.shard(index).expect("held")
    }
}

impl Db {
    /// A store whose writes nobody watches; `shard_count` is rounded up to a power
    /// of two in 1..=16384.
    pub fn new(shard_count: usize, maxmemory: u64, policy: Policy) -> Self {
        Self::with_hooks(shard_count, maxmemory, policy, Arc::new(NoHooks))
    }

    /// A store that tells `hooks` about its writes.
    pub fn with_hooks(
        shard_count: usize,
        maxmemory: u64,
        policy: Policy,
        hooks: Arc<dyn WriteHooks>,
    ) -> Self {
        let shard_count = shard_count
            .clamp(1, usize::from(meridian_topology::SLOT_COUNT))
            .next_power_of_two();
        let stats = Arc::new(SharedStats {
            used_memory: AtomicI64::new(0),
            shard_memory: (0..shard_count).map(|_| AtomicI64::new(0)).collect(),
            maxmemory: AtomicU64::new(maxmemory),
            policy: AtomicU8::new(policy.to_u8()),
            samples: AtomicUsize::new(5),
            hooks,
            replica: AtomicBool::new(false),
            deletions_held_until: AtomicU64::new(0),
        });
        let shards = (0..shard_count)
            .map(|index| Mutex::new(Shard::new(index, shard_count, stats.clone())))
            .collect();
        Db {
            shards,
            mask: shard_count - 1,
            stats,
            eviction_turn: AtomicUsize::new(0),
            growing: Mutex::new(()),
        }
    }

    /// Most keys one [`Db::prefetch`] starts loading.
    pub const PREFETCH_MAX: usize = 32;

    /// Starts loading the memory that lookups of `keys` will read (a pipeline's
    /// keys, or a lone command's, about to be run): every key's table bucket, then
    /// every candidate's slab slot, then every candidate's record, so the cache misses
    /// of the batch overlap instead of coming one after another (as Valkey does for a
    /// batch of commands). A single key gets its bucket only: its later loads would
    /// wait for it here, with nothing to overlap, instead of while the command is
    /// checked and routed. Only a hint: a shard that is busy is skipped, never waited for.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        match keys {
            [] => return,
            [key] => {
                self.prefetch_bucket(key);
                return;
            }
            _ => {}
        }
        let mut hashes = [(usize::MAX, 0u64); Self::PREFETCH_MAX];
        let count = keys.len().min(Self::PREFETCH_MAX);
        for (target, key) in hashes.iter_mut().zip(keys) {
            if let Some(started) = self.prefetch_bucket(key) {
                *target = started;
            }
        }
        for stage in 1..=2 {
            for &(shard, hash) in &hashes[..count] {
                if let Some(guard) = self.shards.get(shard).and_then(Mutex::try_lock) {
                    guard.prefetch(hash, stage);
                }
            }
        }
    }

    /// Starts loading the table bucket of `key`, the first of its lookup's three
    /// dependent loads; its shard and hash, or `None` when the shard is busy.
    fn prefetch_bucket(&self, key: &[u8]) -> Option<(usize, u64)> {
        let shard = self.shard_of_slot(meridian_topology::key_slot(key));
        let guard = self.shards[shard].try_lock()?;
        let hash = guard.key_hash(key);
        guard.prefetch(hash, 0);
        Some((shard, hash))
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn shard_of_slot(&self, slot: u16) -> usize {
        usize::from(slot) & self.mask
    }

    pub fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard & self.mask].lock()
    }

    /// The shard's lock if nobody holds it (background work skips a busy shard rather
    /// than parking a runtime thread behind a long command or script).
    pub fn try_lock(&self, shard: usize) -> Option<MutexGuard<'_, Shard>> {
        self.shards[shard & self.mask].try_lock()
    }

    /// Locks the given shards, a fixed set (see [`Held`]); none wanted, nothing to
    /// allocate (a script run on its own starts so).
    pub fn lock_many(&self, wanted: &[bool]) -> Held<'_> {
        let guards = if wanted.contains(&true) {
            self.lock_set(wanted)
        } else {
            Vec::new()
        };
        Held {
            guards,
            taken: Vec::new(),
            growing: None,
        }
    }

    /// Locks every shard, a fixed set.
    pub fn lock_all(&self) -> Held<'_> {
        self.lock_many(&vec![true; self.shards.len()])
    }

    /// Locks the given shards (none, for a script run on its own) for a holder that may
    /// take any other shard as it runs, kept until it is done: a script, whose keys are
    /// known only as it calls commands. One such holder at a time: the gate is taken
    /// before any shard.
    pub fn lock_growing(&self, wanted: &[bool]) -> Held<'_> {
        let gate = self.growing.lock();
        let mut held = self.lock_many(wanted);
        held.growing = Some(gate);
        held
    }

    /// The wanted shards in ascending order; past the first, a shard busy for longer
    /// than [`BACK_OFF`] makes it let go of all of them, wait for that one while holding
    /// nothing, and start over.
    fn lock_set(&self, wanted: &[bool]) -> Vec<Option<MutexGuard<'_, Shard>>> {
        let mut guards = Vec::with_capacity(self.shards.len());
        'start: loop {
            guards.clear();
            let mut holding = false;
            for (index, shard) in self.shards.iter().enumerate() {
                if !wanted.get(index).copied().unwrap_or(false) {
                    guards.push(None);
                    continue;
                }
                let guard = if holding {
                    match shard.try_lock_for(BACK_OFF) {
                        Some(guard) => guard,
                        None => {
                            guards.clear();
                            drop(shard.lock());
                            continue 'start;
                        }
                    }
                } else {
                    shard.lock()
                };
                holding = true;
                guards.push(Some(guard));
            }
            return guards;
        }
    }

    pub fn policy(&self) -> Policy {
        Policy::from_u8(self.stats.policy.load(Ordering::Relaxed))
    }

    pub fn set_policy(&self, policy: Policy) {
        self.stats.policy.store(policy.to_u8(), Ordering::Relaxed);
    }

    pub fn maxmemory(&self) -> u64 {
        self.stats.maxmemory.load(Ordering::Relaxed)
    }

    pub fn used_memory(&self) -> u64 {
        self.stats.used_memory()
    }

    pub fn over_limit(&self) -> bool {
        let limit = self.maxmemory();
        limit != 0 && self.used_memory() > limit
    }

    /// Evicts until under `maxmemory`. Fails when the policy forbids eviction
    /// or nothing evictable is left.
    pub fn make_room(&self) -> Result<(), OutOfMemory> {
        // like Redis, no eviction while clients are paused
        if !self.over_limit() || self.stats.deletions_held(now_ms()) {
            return Ok(());
        }
        let policy = self.policy();
        if policy == Policy::NoEviction {
            return Err(OutOfMemory);
        }
        // maxmemory-samples as set (Redis takes up to 2^31 - 1); more than
        // MAX_SAMPLES per eviction would only hold the shard's lock longer
        let samples = self.stats.samples.load(Ordering::Relaxed).min(MAX_SAMPLES);
        let shard_count = self.shards.len();
        let mut seed = now_ms() as usize ^ (self.used_memory() as usize).rotate_left(17);
        let mut failures = 0;
        while self.over_limit() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let shard = match self.sieve_turn(policy) {
                Some(shard) => shard,
                None => {
                    // power of two choices: evict from the fuller of two random shards
                    let first = (seed >> 33) % shard_count;
                    let second = (seed >> 13) % shard_count;
                    if self.stats.shard_memory(first) >= self.stats.shard_memory(second) {
                        first
                    } else {
                        second
                    }
                }
            };
            let evicted = self.shards[shard].lock().evict_one(policy, samples);
            if evicted.is_none() {
                failures += 1;
                if failures > shard_count * 2 {
                    // maybe everything is gone from sampled shards: sweep all once
                    let any = (0..shard_count).any(|index| {
                        self.shards[index]
                            .lock()
                            .evict_one(policy, samples)
                            .is_some()
                    });
                    if !any {
                        return Err(OutOfMemory);
                    }
                    failures = 0;
                }
            }
        }
        Ok(())
    }

    /// Under SIEVE the shards evict in turn, so every shard's hand sweeps its keys at the
    /// pace of the others and together they act like one hand over the whole keyspace
    /// (with the fuller of two random shards, some hands ran ahead and evicted keys that
    /// would have been visited again: 49.6% hits where one shard scored 54.3-54.7%, Zipf
    /// 0.8, 1 KiB values). A shard holding less than half its share (hash tags crowding
    /// keys elsewhere) passes its turn to the random choice.
    fn sieve_turn(&self, policy: Policy) -> Option<usize> {
        if policy != Policy::Sieve {
            return None;
        }
        let shard = self.eviction_turn.fetch_add(1, Ordering::Relaxed) & self.mask;
        let share = self.stats.used_memory() / self.shards.len() as u64;
        (self.stats.shard_memory(shard).max(0) as u64 * 2 >= share).then_some(shard)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn volatile_len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().volatile_len())
            .sum()
    }

    /// (hits, misses, expired, evicted) summed over shards.
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        self.shards.iter().fold((0, 0, 0, 0), |acc, shard| {
            let shard = shard.lock();
            (
                acc.0 + shard.hits,
                acc.1 + shard.misses,
                acc.2 + shard.expired,
                acc.3 + shard.evicted,
            )
        })
    }

    pub fn count_keys_in_slot(&self, slot: u16) -> u32 {
        self.lock(self.shard_of_slot(slot)).keys_in_slot(slot)
    }

    /// Replaces every key with those of `staged`, a store of the same shard count built
    /// aside (a replica's incoming snapshot): all shards at once, as a flush followed by
    /// the writes would. The old keys are freed after the locks are released.
    pub fn adopt(&self, staged: Db) {
        let Db { shards, stats, .. } = staged;
        let mut old = Vec::with_capacity(shards.len());
        {
            let mut held = self.lock_all();
            for (index, staged) in shards.into_vec().into_iter().enumerate() {
                if let Some(shard) = held.shard(index) {
                    old.push(shard.adopt(staged.into_inner(), stats.shard_memory(index)));
                }
            }
        }
        drop(old);
    }

    pub fn flush(&self) {
        let mut held = self.lock_all();
        for shard in held.shards() {
            shard.clear();
        }
    }
}

/// How a command reaches shards: lock per access, or through guards already
/// held by an atomic operation (EXEC, MSET across shards); and who the shards are
/// held by while it does ([`Holder`]).
pub struct Access<'a, 'h> {
    db: &'a Db,
    holder: Holder,
    locks: Locks<'a, 'h>,
}

/// The shard locks an [`Access`] works with.
enum Locks<'a, 'h> {
    /// Each access locks the shard it needs.
    PerAccess,
    /// Guards held for the whole operation (`None`: shards not needed).
    Held(&'h mut Held<'a>),
    /// One shard's guard, held by a single-shard write until it was propagated.
    One(usize, &'h mut MutexGuard<'a, Shard>),
}

impl<'a, 'h> Access<'a, 'h> {
    /// Locks per access, for a caller the store knows nothing about.
    pub fn direct(db: &'a Db) -> Self {
        Self::direct_as(db, Holder::default())
    }

    pub fn direct_as(db: &'a Db, holder: Holder) -> Self {
        Access {
            db,
            holder,
            locks: Locks::PerAccess,
        }
    }

    /// The same access for a nested run (a script's commands), its locks lent to it.
    pub fn reborrow(&mut self) -> Access<'a, '_> {
        Access {
            db: self.db,
            holder: self.holder,
            locks: match &mut self.locks {
                Locks::PerAccess => Locks::PerAccess,
                Locks::Held(held) => Locks::Held(held),
                Locks::One(shard, guard) => Locks::One(*shard, guard),
            },
        }
    }

    pub fn held(db: &'a Db, held: &'h mut Held<'a>, holder: Holder) -> Self {
        Access {
            db,
            holder,
            locks: Locks::Held(held),
        }
    }

    pub fn one(
        db: &'a Db,
        shard: usize,
        guard: &'h mut MutexGuard<'a, Shard>,
        holder: Holder,
    ) -> Self {
        Access {
            db,
            holder,
            locks: Locks::One(shard, guard),
        }
    }

    /// The same locks, held by `holder`.
    pub fn held_by(self, holder: Holder) -> Self {
        Access { holder, ..self }
    }

    pub fn db(&self) -> &'a Db {
        self.db
    }

    pub fn holder(&self) -> Holder {
        self.holder
    }

    /// True when every access locks for itself (no guards held by the caller).
    pub fn is_direct(&self) -> bool {
        matches!(self.locks, Locks::PerAccess)
    }

    /// Runs `f` on the shard owning `slot`.
    pub fn with_slot<R>(&mut self, slot: u16, f: impl FnOnce(&mut Shard) -> R) -> R {
        let db = self.db;
        let holder = self.holder;
        let shard = db.shard_of_slot(slot);
        match &mut self.locks {
            Locks::PerAccess => db.lock(shard).held_by(holder, f),
            // (a script's set grows here; EXEC's planner locks every shard a queued
            // command other than a script can reach)
            Locks::Held(held) => held.take(db, shard).held_by(holder, f),
            Locks::One(held, guard) if *held == shard => guard.held_by(holder, f),
            Locks::One(..) => {
                // the dispatcher holds one shard only for commands whose keys are all
                // in it; waiting for another while holding it could deadlock (see Held)
                debug_assert!(false, "shard {shard} reached by a single-shard command");
                db.lock(shard).held_by(holder, f)
            }
        }
    }

    pub fn with_key<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Shard, u16) -> R) -> R {
        let slot = meridian_topology::key_slot(key);
        self.with_slot(slot, |shard| f(shard, slot))
    }

    /// Runs `f` on every shard in order.
    pub fn each_shard(&mut self, mut f: impl FnMut(&mut Shard)) {
        let db = self.db;
        let holder = self.holder;
        for index in 0..db.shards.len() {
            match &mut self.locks {
                Locks::PerAccess => db.shards[index].lock().held_by(holder, &mut f),
                Locks::Held(held) => held.take(db, index).held_by(holder, &mut f),
                Locks::One(held, guard) if *held == index => guard.held_by(holder, &mut f),
                Locks::One(..) => {
                    debug_assert!(false, "shard {index} reached by a single-shard command");
                    db.shards[index].lock().held_by(holder, &mut f)
                }
            }
        }
    }

    /// Runs `f` with all shards of `keys` locked at once, for atomic multi-key commands.
    pub fn atomically<R>(&mut self, keys: &[&[u8]], f: impl FnOnce(&mut Access<'a, '_>) -> R) -> R {
        match self.locks {
            Locks::Held(_) | Locks::One(..) => f(self),
            // a single key needs no multi-shard locking
            Locks::PerAccess if keys.len() <= 1 => f(self),
            Locks::PerAccess => {
                let db = self.db;
                let mut wanted = vec![false; db.shard_count()];
                for key in keys {
                    wanted[db.shard_of_slot(meridian_topology::key_slot(key))] = true;
                }
                let mut held = db.lock_many(&wanted);
                f(&mut Access::held(db, &mut held, self.holder))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Value, WatchFlag};

    fn string(value: &str) -> Value {
        Value::Str(value.as_bytes().to_vec())
    }

    /// Stores the string `value` under `key`, without expiry.
    fn set(db: &Db, key: &str, value: &str) {
        Access::direct(db).with_key(key.as_bytes(), |shard, slot| {
            shard.insert(key.as_bytes(), slot, string(value), 0);
        });
    }

    /// A resharding takes a slot's keys from the slot index built by one scan: every
    /// live key of the slot comes back once, including keys written after the index
    /// was built and keys a failed batch took; deleted keys never do.
    #[test]
    fn keys_of_a_slot_come_from_the_index_and_the_keys_written_since() {
        let db = Db::new(4, 0, Policy::Sieve);
        let mut keys_by_slot: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
        for index in 0..2000 {
            let key = format!("key:{index}");
            set(&db, &key, "v");
            keys_by_slot
                .entry(meridian_topology::key_slot(key.as_bytes()))
                .or_default()
                .push(key);
        }
        let take = |slot: u16, count: usize| -> Vec<String> {
            let mut keys: Vec<String> = db
                .lock(db.shard_of_slot(slot))
                .keys_of_slot(slot, count, now_ms())
                .into_iter()
                .map(|key| String::from_utf8(key).unwrap())
                .collect();
            keys.sort();
            keys
        };
        let delete = |key: &str| {
            Access::direct(&db).with_key(key.as_bytes(), |shard, _| {
                let index = shard.find(key.as_bytes(), now_ms()).unwrap();
                shard.remove(index);
            });
        };
        let slots: Vec<u16> = keys_by_slot.keys().copied().collect();
        let (first, second) = (slots[0], slots[1]);
        // the first call builds the index; a batch of one, not moved (it stays)
        assert_eq!(take(first, 1).len(), 1);
        // written after the index was built, to a slot the index knows
        let late = (0..)
            .map(|n| format!("late:{n}"))
            .find(|key| meridian_topology::key_slot(key.as_bytes()) == second)
            .unwrap();
        set(&db, &late, "v");
        keys_by_slot.get_mut(&second).unwrap().push(late);
        for &slot in &slots {
            let mut expected = keys_by_slot[&slot].clone();
            expected.sort();
            assert_eq!(take(slot, 10_000), expected, "slot {slot}");
            for key in &expected {
                delete(key);
            }
            assert!(
                take(slot, 10_000).is_empty(),
                "slot {slot} after its keys went"
            );
        }
        assert_eq!(db.used_memory(), 0, "the index's memory is given back");
    }

    /// Adopting a store built aside replaces the keys and their accounted memory, fires
    /// WATCHes like a flush, and keeps the shards' own counters.
    #[test]
    fn adopting_a_staged_store_replaces_keys_like_a_flush() {
        let db = Db::new(4, 0, Policy::Sieve);
        let mut access = Access::direct(&db);
        for index in 0..100 {
            let key = format!("old{index}");
            set(&db, &key, "v");
        }
        let flag = WatchFlag::default();
        access.with_key(b"old1", |shard, _| shard.watch(b"old1", flag.clone()));
        access.with_key(b"old1", |shard, _| shard.read(b"old1", now_ms()));
        let hits: u64 = (0..4).map(|index| db.lock(index).hits).sum();

        let staged = Db::new(4, 0, Policy::Sieve);
        for index in 0..10 {
            let key = format!("new{index}");
            set(&staged, &key, "value");
        }
        let staged_memory = staged.used_memory();
        db.adopt(staged);
        assert_eq!(db.len(), 10);
        assert_eq!(db.used_memory(), staged_memory);
        assert!(flag.load(Ordering::Acquire), "a WATCH of an old key fires");
        assert_eq!((0..4).map(|index| db.lock(index).hits).sum::<u64>(), hits);
        db.flush();
        assert_eq!(db.used_memory(), 0);
    }

    /// Under SIEVE the shards take turns: over a burst of evictions each shard evicts as
    /// often as the others (a random choice of shard lets their counts drift apart).
    /// In the long run a shard evicts what it is given, so the burst is short.
    #[test]
    fn sieve_shards_evict_in_turn() {
        let db = Db::new(16, 200_000, Policy::Sieve);
        let evicted =
            |db: &Db| -> Vec<u64> { (0..16).map(|index| db.lock(index).evicted).collect() };
        let mut index = 0;
        let mut insert = |db: &Db| {
            let key = format!("key:{index}");
            index += 1;
            set(db, &key, "value");
            db.make_room().expect("evicts");
        };
        while evicted(&db).iter().sum::<u64>() == 0 {
            insert(&db);
        }
        let before = evicted(&db);
        for _ in 0..1600 {
            insert(&db);
        }
        let burst: Vec<u64> = evicted(&db)
            .iter()
            .zip(&before)
            .map(|(after, before)| after - before)
            .collect();
        // about one eviction per new key (the table's own growth is accounted too)
        assert!(burst.iter().sum::<u64>() >= 1000, "{burst:?}");
        let (least, most) = (burst.iter().min(), burst.iter().max());
        assert!(
            most.zip(least)
                .is_some_and(|(most, least)| most - least <= 2),
            "evictions per shard in the burst {burst:?}"
        );
    }

    #[test]
    fn memory_accounting_returns_to_zero() {
        let db = Db::new(4, 0, Policy::Sieve);
        let mut access = Access::direct(&db);
        for index in 0..1000 {
            let key = format!("key:{index}");
            access.with_key(key.as_bytes(), |shard, slot| {
                shard.insert(
                    key.as_bytes(),
                    slot,
                    string("value"),
                    if index % 2 == 0 { now_ms() + 60_000 } else { 0 },
                );
            });
        }
        // slab slot, one 24- or 40-byte record (with TTL), table slot
        assert!(db.used_memory() > 1000 * 40, "{}", db.used_memory());
        assert_eq!(db.len(), 1000);
        assert_eq!(db.volatile_len(), 500);
        for index in 0..1000 {
            let key = format!("key:{index}");
            access.with_key(key.as_bytes(), |shard, _| {
                let found = shard.find(key.as_bytes(), now_ms()).expect("present");
                shard.remove(found);
            });
        }
        assert_eq!(db.used_memory(), 0);
        assert_eq!(db.len(), 0);
    }

    #[test]
    fn small_keys_cost_less_than_valkey() {
        // 13-byte keys with 32-byte values: Valkey 9 needs about 84 bytes a key;
        // the layout with a boxed key and value in an 80-byte slot needed 158
        let db = Db::new(64, 0, Policy::Sieve);
        let mut access = Access::direct(&db);
        let value = [b'v'; 32];
        for index in 0..100_000 {
            let key = format!("key:{index:09}");
            assert_eq!(key.len(), 13);
            access.with_key(key.as_bytes(), |shard, slot| {
                shard.insert_str(key.as_bytes(), slot, &value, 0);
            });
        }
        let per_key = db.used_memory() / 100_000;
        assert!(per_key <= 80, "{per_key} bytes per key");
        assert!(per_key >= 20 + 48, "{per_key} bytes per key");
    }

    #[test]
    fn every_policy_evicts_below_limit() {
        for policy in Policy::ALL
            .into_iter()
            .filter(|&policy| policy != Policy::NoEviction)
        {
            let db = Db::new(4, 200_000, policy);
            let mut access = Access::direct(&db);
            for index in 0..5000 {
                let key = format!("key:{index}");
                let expire_at = now_ms() + 600_000 + index;
                access.with_key(key.as_bytes(), |shard, slot| {
                    shard.insert(key.as_bytes(), slot, string(&"x".repeat(100)), expire_at);
                });
                db.make_room().expect("room");
            }
            assert!(
                db.used_memory() <= 200_000,
                "{policy}: {}",
                db.used_memory()
            );
            assert!(
                db.len() > 500 && db.len() < 5000,
                "{policy}: {} keys",
                db.len()
            );
        }
    }

    #[test]
    fn noeviction_and_empty_volatile_refuse() {
        let db = Db::new(2, 1000, Policy::NoEviction);
        for index in 0..50 {
            let key = format!("k{index}");
            set(&db, &key, "v");
        }
        assert_eq!(db.make_room(), Err(OutOfMemory));
        db.set_policy(Policy::VolatileLru);
        assert_eq!(db.make_room(), Err(OutOfMemory));
        db.set_policy(Policy::AllKeysLru);
        assert_eq!(db.make_room(), Ok(()));
    }

    #[test]
    fn sieve_keeps_hot_keys() {
        let db = Db::new(1, 0, Policy::Sieve);
        let mut access = Access::direct(&db);
        for index in 0..100 {
            let key = format!("k{index}");
            set(&db, &key, "v");
        }
        // touch the first ten
        for index in 0..10 {
            let key = format!("k{index}");
            access.with_key(key.as_bytes(), |shard, _| {
                shard.read(key.as_bytes(), now_ms())
            });
        }
        let limit = db.used_memory() / 2;
        db.stats.maxmemory.store(limit, Ordering::Relaxed);
        db.make_room().expect("room");
        for index in 0..10 {
            let key = format!("k{index}");
            assert!(access.with_key(key.as_bytes(), |shard, _| {
                shard.find(key.as_bytes(), now_ms()).is_some()
            }));
        }
    }

    #[test]
    fn a_panicking_access_leaves_no_holder_behind() {
        let db = Db::new(1, 0, Policy::Sieve);
        let holder = Holder {
            writer: Some(7),
            primary_stream: true,
        };
        let seen = Access::direct_as(&db, holder).with_slot(0, |shard| shard.holder());
        assert_eq!(seen, holder);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Access::direct_as(&db, holder).with_slot(0, |_| panic!("a failing command"))
        }));
        assert!(result.is_err());
        assert_eq!(db.lock(0).holder(), Holder::default());
    }

    #[test]
    fn slot_counts_follow_inserts_and_removes() {
        let db = Db::new(8, 0, Policy::Sieve);
        for key in ["{a}1", "{a}2", "{a}3", "b"] {
            set(&db, key, "v");
        }
        let slot = meridian_topology::key_slot(b"a");
        assert_eq!(db.count_keys_in_slot(slot), 3);
        db.flush();
        assert_eq!(db.count_keys_in_slot(slot), 0);
        assert_eq!(db.used_memory(), 0);
    }

    /// Prefetching is only a hint: it never waits for a shard a command holds (a
    /// connection's own lone command would otherwise stall behind a long one), and it
    /// changes nothing, for keys that exist or not, in empty or filled tables.
    /// A key stored in shard `index` of `db`.
    fn key_in_shard(db: &Db, index: usize) -> String {
        (0..)
            .map(|n| format!("key:{n}"))
            .find(|key| db.shard_of_slot(meridian_topology::key_slot(key.as_bytes())) == index)
            .expect("some key")
    }

    /// A script takes shards as it reaches them, in any order; a holder of a fixed set
    /// waiting for a shard the script holds lets go of the ones the script then wants,
    /// so neither waits for the other forever (this test hung before the back-off).
    #[test]
    fn a_growing_holder_and_a_fixed_set_never_deadlock() {
        let db = Arc::new(Db::new(4, 0, Policy::Sieve));
        let (low, high) = (key_in_shard(&db, 1), key_in_shard(&db, 3));
        let (done, finished) = std::sync::mpsc::channel();
        let (script_has_high, fixed_may_start) = std::sync::mpsc::channel();
        let script = {
            let (db, done, low, high) = (db.clone(), done.clone(), low.clone(), high.clone());
            std::thread::spawn(move || {
                let mut held = db.lock_growing(&[]);
                let mut access = Access::held(&db, &mut held, Holder::default());
                access.with_key(high.as_bytes(), |shard, slot| {
                    shard.insert(high.as_bytes(), slot, string("script"), 0);
                });
                script_has_high.send(()).expect("signal");
                // the fixed set has taken shard 1 and waits for shard 3
                while db.try_lock(1).is_some() {
                    std::thread::yield_now();
                }
                access.with_key(low.as_bytes(), |shard, slot| {
                    shard.insert(low.as_bytes(), slot, string("script"), 0);
                });
                drop(held);
                done.send("script").expect("done");
            })
        };
        let fixed = {
            let db = db.clone();
            std::thread::spawn(move || {
                fixed_may_start.recv().expect("script started");
                let mut held = db.lock_many(&[false, true, false, true]);
                let seen: Vec<bool> = [&low, &high]
                    .iter()
                    .map(|key| {
                        let index = db.shard_of_slot(meridian_topology::key_slot(key.as_bytes()));
                        held.shard(index)
                            .is_some_and(|shard| shard.find(key.as_bytes(), now_ms()).is_some())
                    })
                    .collect();
                done.send(if seen == [true, true] {
                    "fixed, after the script"
                } else {
                    "fixed, before the script"
                })
                .expect("done");
            })
        };
        let timeout = std::time::Duration::from_secs(20);
        let order: Vec<&str> = (0..2)
            .map(|_| {
                finished
                    .recv_timeout(timeout)
                    .expect("a holder waited forever")
            })
            .collect();
        assert_eq!(order, ["script", "fixed, after the script"]);
        script.join().expect("script");
        fixed.join().expect("fixed");
    }

    #[test]
    fn prefetches_skip_busy_shards_and_change_nothing() {
        let db = Db::new(2, 0, Policy::Sieve);
        db.prefetch(&[b"missing"]);
        db.prefetch(&[b"missing", b"absent"]);
        for index in 0..100 {
            set(&db, &format!("key:{index}"), "v");
        }
        let memory = db.used_memory();
        let busy = db.lock(db.shard_of_slot(meridian_topology::key_slot(b"key:1")));
        // the same thread holds the shard: a wait would never end
        db.prefetch(&[b"key:1"]);
        db.prefetch(&[b"key:1", b"key:2", b"key:3"]);
        drop(busy);
        db.prefetch(&[b"key:1"]);
        db.prefetch(&[b"key:1", b"key:2", b"missing"]);
        assert_eq!(db.used_memory(), memory);
        for index in 0..100 {
            let key = format!("key:{index}");
            assert!(Access::direct(&db).with_key(key.as_bytes(), |shard, _| {
                shard.find(key.as_bytes(), now_ms()).is_some()
            }));
        }
    }
}
