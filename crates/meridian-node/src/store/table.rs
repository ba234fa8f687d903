//! A shard's hash index: from a key's hash to the slab positions of the keys
//! with that hash, one cache line per bucket.
//!
//! Each 64-byte bucket holds up to 12 slab positions with a one-byte tag of
//! each one's hash, so a lookup reads one line to find its candidates, then the
//! slab slot and the record: three dependent memory loads, where a swiss table
//! of `u32` reads its control bytes and its slots from two places (four). A
//! lookup's first load can also be started ahead of time ([`IndexTable::prefetch`]):
//! the connection does that for the keys of a pipelined batch, so their misses
//! overlap instead of following each other.
//!
//! Collisions probe the next buckets (linear probing by bucket). A bucket that
//! was ever full says so, and only then does a lookup go on past it; removals
//! leave that mark, so the table rebuilds itself when too many buckets carry it.

use allocator_api2::vec::Vec;

use super::entry::{Pages, prefetch};

/// Positions per bucket.
const SLOTS: usize = 12;
/// The presence bits of all slots.
const ALL: u16 = (1 << SLOTS) - 1;
/// This bucket was full at some point: a key of it may sit in a later bucket.
const OVERFLOWED: u16 = 1 << 15;
/// Keys per bucket on average before the table doubles (87.5% of the slots,
/// as hashbrown's load factor).
const LOAD_PER_BUCKET_X2: usize = 21;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    /// Bit i: slot i is taken; bit 15: [`OVERFLOWED`].
    meta: u16,
    tags: [u8; SLOTS],
    _pad: [u8; 2],
    positions: [u32; SLOTS],
}

const _: () = assert!(size_of::<Bucket>() == 64);

impl Bucket {
    /// Taken slots whose tag is `tag`.
    fn matching(&self, tag: u8) -> u16 {
        let mut found = 0u16;
        for (slot, &other) in self.tags.iter().enumerate() {
            found |= u16::from(other == tag) << slot;
        }
        found & self.meta & ALL
    }

    fn taken(&self) -> u16 {
        self.meta & ALL
    }
}

/// The part of the hash a bucket keeps (its top byte; the low bits pick the bucket).
fn tag(hash: u64) -> u8 {
    (hash >> 56) as u8
}

pub struct IndexTable {
    buckets: Vec<Bucket, Pages>,
    len: usize,
    /// Buckets marked [`OVERFLOWED`].
    overflowed: usize,
}

impl Default for IndexTable {
    fn default() -> Self {
        IndexTable::new()
    }
}

impl IndexTable {
    pub fn new() -> Self {
        IndexTable {
            buckets: Vec::new_in(Pages),
            len: 0,
            overflowed: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the buckets take.
    pub fn allocated_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>()
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// Starts loading the bucket where a lookup of `hash` begins.
    pub fn prefetch(&self, hash: u64) {
        if !self.buckets.is_empty() {
            prefetch(&self.buckets[hash as usize & self.mask()]);
        }
    }

    /// Calls `found` with each position of the home bucket of `hash` whose tag
    /// matches: the candidates a lookup will compare first.
    pub fn home_candidates(&self, hash: u64, mut found: impl FnMut(u32)) {
        if self.buckets.is_empty() {
            return;
        }
        let bucket = &self.buckets[hash as usize & self.mask()];
        let mut matching = bucket.matching(tag(hash));
        while matching != 0 {
            found(bucket.positions[matching.trailing_zeros() as usize]);
            matching &= matching - 1;
        }
    }

    /// The first position with this hash for which `eq` holds.
    pub fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.locate(hash, eq)
            .map(|(at, slot)| self.buckets[at].positions[slot])
    }

    /// Bucket and slot of the first position with this hash for which `eq` holds.
    fn locate(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<(usize, usize)> {
        if self.buckets.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mask = self.mask();
        let mut at = hash as usize & mask;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[at];
            let mut matching = bucket.matching(tag);
            while matching != 0 {
                let slot = matching.trailing_zeros() as usize;
                if eq(bucket.positions[slot]) {
                    return Some((at, slot));
                }
                matching &= matching - 1;
            }
            if bucket.meta & OVERFLOWED == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// Adds `position` under `hash`, which must not be there yet. `rehash`
    /// gives the hash of a position already in the table, for growing.
    pub fn insert_unique(&mut self, hash: u64, position: u32, rehash: impl Fn(u32) -> u64) {
        if (self.len + 1) * 2 > self.buckets.len() * LOAD_PER_BUCKET_X2 {
            let buckets = (self.buckets.len() * 2).max(1);
            self.rebuild(buckets, &rehash);
        }
        self.place(hash, position);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, position: u32) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        // the load factor leaves free slots, so this ends within the table
        loop {
            let bucket = &mut self.buckets[at];
            let free = !bucket.meta & ALL;
            if free != 0 {
                let slot = free.trailing_zeros() as usize;
                bucket.meta |= 1 << slot;
                bucket.tags[slot] = tag(hash);
                bucket.positions[slot] = position;
                return;
            }
            if bucket.meta & OVERFLOWED == 0 {
                bucket.meta |= OVERFLOWED;
                self.overflowed += 1;
            }
            at = (at + 1) & mask;
        }
    }

    /// Removes `position`, stored under `hash`. False when it is not there.
    pub fn remove(&mut self, hash: u64, position: u32, rehash: impl Fn(u32) -> u64) -> bool {
        let Some((at, slot)) = self.locate(hash, |other| other == position) else {
            return false;
        };
        self.buckets[at].meta &= !(1 << slot);
        self.len -= 1;
        if self.len == 0 {
            // an emptied table gives its memory back
            *self = IndexTable::new();
        } else if self.overflowed * 4 > self.buckets.len() * 3 {
            // overflow marks outlive the keys that made them: when most buckets
            // send lookups on, start over (a table at full load has about half of
            // them marked; should a fresh table still be over the bar, it doubles,
            // so this cannot repeat on every removal)
            self.rebuild(self.buckets.len(), &rehash);
            if self.overflowed * 4 > self.buckets.len() * 3 {
                self.rebuild(self.buckets.len() * 2, &rehash);
            }
        }
        true
    }

    /// Moves every position into a fresh table of `buckets` buckets.
    fn rebuild(&mut self, buckets: usize, rehash: &impl Fn(u32) -> u64) {
        let mut fresh = Vec::with_capacity_in(buckets, Pages);
        fresh.resize(buckets, Bucket::default());
        let old = std::mem::replace(&mut self.buckets, fresh);
        self.overflowed = 0;
        for bucket in &old {
            let mut taken = bucket.taken();
            while taken != 0 {
                let position = bucket.positions[taken.trailing_zeros() as usize];
                self.place(rehash(position), position);
                taken &= taken - 1;
            }
        }
    }

    /// Every position, in table order.
    #[cfg(test)]
    fn positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets.iter().flat_map(|bucket| {
            let mut taken = bucket.taken();
            std::iter::from_fn(move || {
                (taken != 0).then(|| {
                    let slot = taken.trailing_zeros() as usize;
                    taken &= taken - 1;
                    bucket.positions[slot]
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Hashes that collide on purpose when `spread` is small: few buckets, one tag.
    fn hash_of(key: u32, spread: u32) -> u64 {
        let low = u64::from(key % spread.max(1));
        // the same top byte for every key in a bucket when spread is tiny
        low | (u64::from(key % 3) << 56)
    }

    fn assert_all_found(
        table: &IndexTable,
        positions: std::ops::Range<u32>,
        hash: impl Fn(u32) -> u64,
    ) {
        for position in positions {
            assert_eq!(
                table.find(hash(position), |p| p == position),
                Some(position)
            );
        }
    }

    #[test]
    fn empty_table_finds_nothing_and_takes_no_memory() {
        let table = IndexTable::new();
        assert_eq!(table.find(7, |_| true), None);
        assert_eq!(table.allocated_bytes(), 0);
        assert!(table.is_empty());
    }

    #[test]
    fn grows_by_doubling_at_seven_eighths() {
        let mut table = IndexTable::new();
        let hash = |position: u32| u64::from(position).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for position in 0..10 {
            table.insert_unique(hash(position), position, hash);
        }
        assert_eq!(table.allocated_bytes(), 64);
        table.insert_unique(hash(10), 10, hash);
        assert_eq!(table.allocated_bytes(), 128);
        for position in 11..1000 {
            table.insert_unique(hash(position), position, hash);
        }
        // 1000 keys need 96 buckets at 10.5 per bucket: 128
        assert_eq!(table.allocated_bytes(), 128 * 64);
        assert_all_found(&table, 0..1000, hash);
    }

    #[test]
    fn a_full_table_is_below_the_rebuild_bar() {
        let mut table = IndexTable::new();
        let hash = |position: u32| {
            use std::hash::BuildHasher;
            foldhash::fast::FixedState::with_seed(1).hash_one(position)
        };
        // 172,032 keys: 16,384 buckets just before doubling
        for position in 0..172_032 {
            table.insert_unique(hash(position), position, hash);
        }
        assert_eq!(table.allocated_bytes(), 16_384 * 64);
        // 49% with this seed: well below the 75% at which removals rebuild the table
        let share = table.overflowed as f64 / 16_384.0;
        assert!(share < 0.55, "{share} of the buckets overflowed");
    }

    #[test]
    fn full_buckets_spill_over_and_are_still_found_after_removals() {
        let mut table = IndexTable::new();
        // every key in bucket 0 of whatever size: the table must probe on
        let hash = |_: u32| 0u64;
        for position in 0..100 {
            table.insert_unique(0, position, hash);
        }
        for position in (0..100).step_by(2) {
            assert!(table.remove(0, position, hash));
        }
        for position in 0..100 {
            let found = table.find(0, |p| p == position);
            assert_eq!(found.is_some(), position % 2 == 1, "position {position}");
        }
        assert!(!table.remove(0, 0, hash));
    }

    #[test]
    fn removals_rebuild_a_table_that_overflow_marks_have_filled() {
        let mut table = IndexTable::new();
        // the low bits pick the home bucket, the top byte is the tag
        let hash = |position: u32| u64::from(position % 16) | (u64::from(position) << 56);
        for position in 0..160 {
            table.insert_unique(hash(position), position, hash);
        }
        assert_eq!((table.allocated_bytes(), table.overflowed), (16 * 64, 0));
        // three extra keys in one bucket at a time spill into the next one and leave
        // their mark behind when they go; the 13th mark is over three quarters
        for extra in 1000..1013 {
            let added: Vec<u32> = (0..3).map(|n| extra + 16 * n).collect();
            for &position in &added {
                table.insert_unique(hash(position), position, hash);
            }
            for &position in &added {
                assert!(table.remove(hash(position), position, hash));
            }
        }
        assert_eq!((table.allocated_bytes(), table.overflowed), (16 * 64, 0));
        assert_all_found(&table, 0..160, hash);
    }

    #[test]
    fn emptied_table_gives_its_memory_back() {
        let mut table = IndexTable::new();
        let hash = u64::from;
        for position in 0..100 {
            table.insert_unique(hash(position), position, hash);
        }
        for position in 0..100 {
            assert!(table.remove(hash(position), position, hash));
        }
        assert_eq!(table.allocated_bytes(), 0);
    }

    #[test]
    fn home_candidates_name_the_positions_with_the_tag() {
        let mut table = IndexTable::new();
        let hash = |position: u32| u64::from(position % 2) << 56;
        for position in 0..6 {
            table.insert_unique(hash(position), position, hash);
        }
        let mut seen = Vec::new();
        table.home_candidates(hash(1), |position| seen.push(position));
        assert_eq!(seen, [1, 3, 5]);
    }

    proptest! {
        /// The table agrees with a map under any sequence of inserts and
        /// removals, with colliding hashes and tags (spread 1 puts every key
        /// in one home bucket with one of three tags).
        #[test]
        fn agrees_with_a_map(
            ops in proptest::collection::vec((any::<bool>(), 0u32..300), 1..600),
            spread in prop_oneof![Just(1u32), Just(7), Just(1 << 20)],
        ) {
            let mut table = IndexTable::new();
            let mut model: HashMap<u32, ()> = HashMap::new();
            let hash = |key: u32| hash_of(key, spread);
            for (insert, key) in ops {
                if insert {
                    if model.insert(key, ()).is_none() {
                        table.insert_unique(hash(key), key, hash);
                    }
                } else {
                    let removed = table.remove(hash(key), key, hash);
                    prop_assert_eq!(removed, model.remove(&key).is_some());
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for key in 0..300 {
                let found = table.find(hash(key), |position| position == key);
                prop_assert_eq!(found.is_some(), model.contains_key(&key));
            }
            let mut positions: Vec<u32> = table.positions().collect();
            positions.sort_unstable();
            let mut expected: Vec<u32> = model.keys().copied().collect();
            expected.sort_unstable();
            prop_assert_eq!(positions, expected);
        }
    }
}
