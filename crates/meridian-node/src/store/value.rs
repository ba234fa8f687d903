//! Stored values (owned and borrowed) and the allocator model the store's memory
//! accounting uses.

use std::collections::VecDeque;

use indexmap::{IndexMap, IndexSet};

/// Bytes an allocation of `len` bytes really costs with mimalloc, the node's
/// allocator: no per-block header; 8 bytes, then 16-byte classes up to 64 bytes
/// (its 16-byte minimal alignment: 48 and 64, no 40 or 56), then four classes
/// per power of two (12.5% worst rounding); blocks above 64 KiB only cost the
/// 4 KiB pages they touch.
pub fn alloc_size(len: usize) -> usize {
    const WORD: usize = 8;
    if len <= WORD {
        return if len == 0 { 0 } else { WORD };
    }
    if len <= 8 * WORD {
        return len.next_multiple_of(2 * WORD);
    }
    if len > 64 * 1024 {
        return len.next_multiple_of(4096);
    }
    let words = len.div_ceil(WORD) - 1;
    let bit = usize::BITS - 1 - words.leading_zeros();
    let step = 1usize << (bit - 2);
    ((words >> (bit - 2)) + 1) * step * WORD
}

type FieldMap = IndexMap<Box<[u8]>, Vec<u8>, foldhash::fast::RandomState>;

/// Below this many fields, deletes keep insertion order (like Redis's listpack
/// encoding); above it they use O(1) swap removal.
const ORDERED_HASH_LIMIT: usize = 128;

/// A hash value; tracks the heap bytes of its fields and values.
#[derive(Clone, Debug, Default)]
pub struct HashValue {
    map: FieldMap,
    payload: usize,
}

impl HashValue {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, field: &[u8]) -> Option<&Vec<u8>> {
        self.map.get(field)
    }

    pub fn get_index(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.map
            .get_index(index)
            .map(|(field, value)| (&field[..], &value[..]))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map
            .iter()
            .map(|(field, value)| (&field[..], &value[..]))
    }

    /// Sets a field; returns true when the field is new.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        if let Some(existing) = self.map.get_mut(field) {
            self.payload -= alloc_size(existing.capacity());
            *existing = value.to_vec();
            self.payload += alloc_size(existing.capacity());
            return false;
        }
        self.payload += alloc_size(field.len()) + alloc_size(value.len());
        self.map.insert(field.into(), value.to_vec());
        true
    }

    pub fn remove(&mut self, field: &[u8]) -> bool {
        let removed = if self.map.len() <= ORDERED_HASH_LIMIT {
            self.map.shift_remove_entry(field)
        } else {
            self.map.swap_remove_entry(field)
        };
        match removed {
            Some((field, value)) => {
                self.payload -= alloc_size(field.len()) + alloc_size(value.capacity());
                true
            }
            None => false,
        }
    }

    /// Approximate heap bytes: field/value allocations plus the index map's
    /// bucket (hash + key + value headers) and index slots.
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.payload
            + self.map.capacity() * (std::mem::size_of::<(Box<[u8]>, Vec<u8>)>() + 8 + 9)
    }
}

/// A list value: elements in order, each its own allocation; tracks their heap bytes.
#[derive(Clone, Debug, Default)]
pub struct ListValue {
    items: VecDeque<Box<[u8]>>,
    payload: usize,
}

impl ListValue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.items.get(index).map(|item| &item[..])
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        self.items.iter().map(|item| &item[..])
    }

    /// Elements `start..=stop` (indexes already clamped to the list).
    pub fn range(&self, start: usize, stop: usize) -> impl Iterator<Item = &[u8]> {
        self.items.range(start..=stop).map(|item| &item[..])
    }

    pub fn push_front(&mut self, item: &[u8]) {
        self.payload += alloc_size(item.len());
        self.items.push_front(item.into());
    }

    pub fn push_back(&mut self, item: &[u8]) {
        self.payload += alloc_size(item.len());
        self.items.push_back(item.into());
    }

    pub fn pop_front(&mut self) -> Option<Box<[u8]>> {
        let item = self.items.pop_front()?;
        self.payload -= alloc_size(item.len());
        Some(item)
    }

    pub fn pop_back(&mut self) -> Option<Box<[u8]>> {
        let item = self.items.pop_back()?;
        self.payload -= alloc_size(item.len());
        Some(item)
    }

    /// Replaces the element at `index`; false when there is none.
    pub fn set(&mut self, index: usize, item: &[u8]) -> bool {
        let Some(slot) = self.items.get_mut(index) else {
            return false;
        };
        self.payload = self.payload - alloc_size(slot.len()) + alloc_size(item.len());
        *slot = item.into();
        true
    }

    /// Inserts `item` before the element at `index` (`index == len`: at the end).
    pub fn insert(&mut self, index: usize, item: &[u8]) {
        self.payload += alloc_size(item.len());
        self.items.insert(index, item.into());
    }

    /// Removes up to `limit` elements equal to `item` (0: all of them), from the front
    /// or, with `from_back`, from the back; returns how many.
    pub fn remove_matching(&mut self, item: &[u8], limit: usize, from_back: bool) -> usize {
        let mut removed = 0;
        let mut payload = self.payload;
        let mut keep = |element: &[u8]| {
            if (limit == 0 || removed < limit) && element == item {
                removed += 1;
                payload -= alloc_size(element.len());
                false
            } else {
                true
            }
        };
        if from_back {
            let mut kept: VecDeque<Box<[u8]>> = VecDeque::with_capacity(self.items.len());
            while let Some(element) = self.items.pop_back() {
                if keep(&element[..]) {
                    kept.push_front(element);
                }
            }
            self.items = kept;
        } else {
            self.items.retain(|element| keep(element));
        }
        self.payload = payload;
        removed
    }

    /// Keeps only the elements `start..=stop`; `None` removes every element.
    pub fn keep_range(&mut self, range: Option<(usize, usize)>) {
        let (start, stop) = range.unwrap_or((self.items.len(), self.items.len()));
        for item in self
            .items
            .drain(stop.saturating_add(1).min(self.items.len())..)
        {
            self.payload -= alloc_size(item.len());
        }
        for item in self.items.drain(..start.min(self.items.len())) {
            self.payload -= alloc_size(item.len());
        }
        self.items.shrink_to_fit();
    }

    /// Approximate heap bytes: the elements' allocations and the ring buffer's slots.
    pub fn heap_size(&self) -> usize {
        self.payload + alloc_size(self.items.capacity() * std::mem::size_of::<Box<[u8]>>())
    }
}

type MemberSet = IndexSet<Box<[u8]>, foldhash::fast::RandomState>;

/// A set value: members in an index set (O(1) membership, random picks and removals);
/// tracks the heap bytes of its members.
#[derive(Clone, Debug, Default)]
pub struct SetValue {
    members: MemberSet,
    payload: usize,
}

impl SetValue {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, member: &[u8]) -> bool {
        self.members.contains(member)
    }

    pub fn get_index(&self, index: usize) -> Option<&[u8]> {
        self.members.get_index(index).map(|member| &member[..])
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.members.iter().map(|member| &member[..])
    }

    /// Adds a member; true when it is new.
    pub fn insert(&mut self, member: &[u8]) -> bool {
        if self.members.contains(member) {
            return false;
        }
        self.payload += alloc_size(member.len());
        self.members.insert(member.into());
        true
    }

    /// Removes a member (the last one takes its index); true when it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.members.swap_remove(member) {
            true => {
                self.payload -= alloc_size(member.len());
                true
            }
            false => false,
        }
    }

    /// Removes and returns the member at `index` (the last one takes its place).
    pub fn take_index(&mut self, index: usize) -> Option<Box<[u8]>> {
        let member = self.members.swap_remove_index(index)?;
        self.payload -= alloc_size(member.len());
        Some(member)
    }

    /// Approximate heap bytes: member allocations plus the index set's entries (hash
    /// and pointer) and index slots.
    pub fn heap_size(&self) -> usize {
        self.payload + self.members.capacity() * (std::mem::size_of::<(u64, Box<[u8]>)>() + 8 + 1)
    }
}

type ScoreMap = IndexMap<Box<[u8]>, f64, foldhash::fast::RandomState>;

/// Most members one run of a sorted set's order holds: inserting shifts at most this
/// many, and finding a rank adds one length per run.
const RUN_MAX: usize = 256;

/// Whether `(score, member)` sorts before `(other_score, other)`: by score, then by
/// member bytes (Redis's order; scores are never NaN, and -0 equals 0).
pub fn sorts_before(score: f64, member: &[u8], other_score: f64, other: &[u8]) -> bool {
    score < other_score || (score == other_score && member < other)
}

/// One member of a sorted set in its place in score order.
#[derive(Clone, Debug)]
struct Scored {
    score: f64,
    member: Box<[u8]>,
}

/// A sorted set: each member's score by member in an index map (O(1) lookups and
/// random picks; a removal moves the last member into the hole, which ZSCAN's cursor
/// relies on), and the members in (score, member) order in runs of at most [`RUN_MAX`] (ranks and ranges in
/// O(runs + log n), as fast to iterate as a vector); tracks its heap bytes.
#[derive(Clone, Debug, Default)]
pub struct ZSetValue {
    scores: ScoreMap,
    runs: Vec<Vec<Scored>>,
    /// Bytes of the members' allocations (each member is kept twice) and the runs' buffers.
    payload: usize,
}

fn run_bytes(run: &Vec<Scored>) -> usize {
    alloc_size(run.capacity() * std::mem::size_of::<Scored>())
}

impl ZSetValue {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; returns its previous score (None: the member is new).
    /// A score of -0 is kept as 0, as Redis's compact encoding keeps it.
    pub fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        let score = if score == 0.0 { 0.0 } else { score };
        if let Some(current) = self.scores.get_mut(member) {
            let previous = *current;
            if previous.to_bits() != score.to_bits() {
                *current = score;
                let boxed = self.unlink(previous, member);
                self.link(score, boxed);
            }
            return Some(previous);
        }
        self.payload += 2 * alloc_size(member.len());
        self.scores.insert(member.into(), score);
        self.link(score, member.into());
        None
    }

    /// Removes `member`; returns its score when it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let score = self.scores.swap_remove(member)?;
        self.payload -= 2 * alloc_size(member.len());
        self.unlink(score, member);
        Some(score)
    }

    /// The member and score at `index` of the score map (not the rank).
    pub fn get_index(&self, index: usize) -> Option<(&[u8], f64)> {
        self.scores
            .get_index(index)
            .map(|(member, score)| (&member[..], *score))
    }

    /// The rank of the first member for which `before` is false (`before` is true for
    /// a prefix of the order, false after it): where a range bound falls.
    pub fn partition_point(&self, before: impl Fn(f64, &[u8]) -> bool) -> usize {
        let run = self.runs.partition_point(|run| {
            run.last()
                .is_some_and(|last| before(last.score, &last.member))
        });
        let preceding: usize = self.runs[..run].iter().map(Vec::len).sum();
        preceding
            + self.runs.get(run).map_or(0, |run| {
                run.partition_point(|entry| before(entry.score, &entry.member))
            })
    }

    /// The 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(self.partition_point(|s, m| sorts_before(s, m, score, member)))
    }

    /// The run and position within it of rank `rank` (`(runs, 0)` past the end).
    fn locate(&self, mut rank: usize) -> (usize, usize) {
        for (index, run) in self.runs.iter().enumerate() {
            if rank < run.len() {
                return (index, rank);
            }
            rank -= run.len();
        }
        (self.runs.len(), 0)
    }

    /// The member and score at `rank` in ascending order.
    pub fn get(&self, rank: usize) -> Option<(&[u8], f64)> {
        let (run, at) = self.locate(rank);
        let entry = self.runs.get(run)?.get(at)?;
        Some((&entry.member, entry.score))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], f64)> {
        self.ascending(0)
    }

    /// Members from rank `rank` upward.
    pub fn ascending(&self, rank: usize) -> impl Iterator<Item = (&[u8], f64)> {
        let (run, at) = self.locate(rank);
        let first = self.runs.get(run).map_or(&[][..], |run| &run[at..]);
        first
            .iter()
            .chain(self.runs.iter().skip(run + 1).flatten())
            .map(|entry| (&entry.member[..], entry.score))
    }

    /// Members from rank `rank` downward (nothing when `rank` is past the end).
    pub fn descending(&self, rank: usize) -> impl Iterator<Item = (&[u8], f64)> {
        let (run, at) = self.locate(rank);
        let first = self.runs.get(run).map_or(&[][..], |run| &run[..=at]);
        let before = if run < self.runs.len() {
            &self.runs[..run]
        } else {
            &[][..]
        };
        first
            .iter()
            .rev()
            .chain(before.iter().rev().flat_map(|run| run.iter().rev()))
            .map(|entry| (&entry.member[..], entry.score))
    }

    /// Puts `member` in its place in the order.
    fn link(&mut self, score: f64, member: Box<[u8]>) {
        if self.runs.is_empty() {
            self.runs.push(Vec::new());
        }
        let run = self
            .runs
            .partition_point(|run| {
                run.last()
                    .is_some_and(|last| sorts_before(last.score, &last.member, score, &member))
            })
            .min(self.runs.len() - 1);
        let target = &mut self.runs[run];
        let at = target
            .partition_point(|entry| sorts_before(entry.score, &entry.member, score, &member));
        self.payload -= run_bytes(target);
        target.insert(at, Scored { score, member });
        if target.len() > RUN_MAX {
            let tail = target.split_off(target.len() / 2);
            target.shrink_to(RUN_MAX);
            self.payload += run_bytes(&self.runs[run]) + run_bytes(&tail);
            self.runs.insert(run + 1, tail);
        } else {
            self.payload += run_bytes(target);
        }
    }

    /// Takes `member` (whose score is `score`) out of the order.
    fn unlink(&mut self, score: f64, member: &[u8]) -> Box<[u8]> {
        let run = self.runs.partition_point(|run| {
            run.last()
                .is_some_and(|last| sorts_before(last.score, &last.member, score, member))
        });
        let target = &mut self.runs[run];
        let at =
            target.partition_point(|entry| sorts_before(entry.score, &entry.member, score, member));
        debug_assert!(&*target[at].member == member);
        let removed = target.remove(at).member;
        self.tidy(run);
        removed
    }

    /// Takes the lowest member (the highest with `max`) out of the set: no search, the
    /// order's first or last entry, its member handed over instead of copied.
    pub fn pop_end(&mut self, max: bool) -> Option<(Box<[u8]>, f64)> {
        let run = if max {
            self.runs.len().checked_sub(1)?
        } else {
            0
        };
        let target = self.runs.get_mut(run)?;
        let entry = if max {
            target.pop()?
        } else if target.is_empty() {
            return None;
        } else {
            target.remove(0)
        };
        self.scores.swap_remove(&entry.member);
        self.payload -= 2 * alloc_size(entry.member.len());
        self.tidy(run);
        Some((entry.member, entry.score))
    }

    /// After a removal from run `run`: an emptied run goes, a thin one joins the next.
    fn tidy(&mut self, run: usize) {
        let len = self.runs[run].len();
        if len == 0 {
            self.payload -= run_bytes(&self.runs.remove(run));
        } else if len < RUN_MAX / 4
            && run + 1 < self.runs.len()
            && len + self.runs[run + 1].len() <= RUN_MAX
        {
            // keeps runs from thinning out after many removals
            let next = self.runs.remove(run + 1);
            self.payload -= run_bytes(&next) + run_bytes(&self.runs[run]);
            self.runs[run].extend(next);
            self.payload += run_bytes(&self.runs[run]);
        }
    }

    /// Approximate heap bytes: members (twice), the runs' buffers and the score map's
    /// entries (hash, member pointer, score) and index slots.
    pub fn heap_size(&self) -> usize {
        self.payload
            + alloc_size(self.runs.capacity() * std::mem::size_of::<Vec<Scored>>())
            + self.scores.capacity() * (std::mem::size_of::<(u64, Box<[u8]>, f64)>() + 8 + 1)
    }
}

/// A collection type a key can hold (hash, list, set, sorted set): what the commands' one read
/// path and one write path need to know of it (see `commands::read_collection`).
pub trait KeyCollection: Default {
    /// The collection of this type a stored value is, if it is one.
    fn of(value: ValueRef<'_>) -> Option<&Self>;
    fn of_mut(value: &mut Value) -> Option<&mut Self>;
    /// The stored value holding this collection.
    fn into_value(self) -> Value;
    /// A key holds a collection only while it has something in it.
    fn is_empty(&self) -> bool;
}

macro_rules! key_collection {
    ($type:ty, $variant:ident) => {
        impl KeyCollection for $type {
            fn of(value: ValueRef<'_>) -> Option<&Self> {
                match value {
                    ValueRef::$variant(collection) => Some(collection),
                    _ => None,
                }
            }

            fn of_mut(value: &mut Value) -> Option<&mut Self> {
                match value {
                    Value::$variant(collection) => Some(collection),
                    _ => None,
                }
            }

            fn into_value(self) -> Value {
                Value::$variant(Box::new(self))
            }

            fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    };
}

key_collection!(HashValue, Hash);
key_collection!(ListValue, List);
key_collection!(SetValue, Set);
key_collection!(ZSetValue, ZSet);

#[derive(Clone, Debug)]
pub enum Value {
    Str(Vec<u8>),
    Hash(Box<HashValue>),
    List(Box<ListValue>),
    Set(Box<SetValue>),
    ZSet(Box<ZSetValue>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        self.borrowed().type_name()
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(bytes) => alloc_size(bytes.capacity()),
            Value::Hash(hash) => alloc_size(std::mem::size_of::<HashValue>()) + hash.heap_size(),
            Value::List(list) => alloc_size(std::mem::size_of::<ListValue>()) + list.heap_size(),
            Value::Set(set) => alloc_size(std::mem::size_of::<SetValue>()) + set.heap_size(),
            Value::ZSet(zset) => alloc_size(std::mem::size_of::<ZSetValue>()) + zset.heap_size(),
        }
    }
}

impl Value {
    pub fn borrowed(&self) -> ValueRef<'_> {
        match self {
            Value::Str(bytes) => ValueRef::Str(bytes),
            Value::Hash(hash) => ValueRef::Hash(hash),
            Value::List(list) => ValueRef::List(list),
            Value::Set(set) => ValueRef::Set(set),
            Value::ZSet(zset) => ValueRef::ZSet(zset),
        }
    }
}

/// A stored value, borrowed from its key's record.
#[derive(Clone, Copy, Debug)]
pub enum ValueRef<'a> {
    Str(&'a [u8]),
    Hash(&'a HashValue),
    List(&'a ListValue),
    Set(&'a SetValue),
    ZSet(&'a ZSetValue),
}

impl ValueRef<'_> {
    pub fn type_name(self) -> &'static str {
        match self {
            ValueRef::Str(_) => "string",
            ValueRef::Hash(_) => "hash",
            ValueRef::List(_) => "list",
            ValueRef::Set(_) => "set",
            ValueRef::ZSet(_) => "zset",
        }
    }

    /// Heap bytes of a collection's own allocation and contents (0 for strings, which
    /// the record accounts itself).
    pub fn collection_size(self) -> usize {
        match self {
            ValueRef::Str(_) => 0,
            ValueRef::Hash(hash) => alloc_size(std::mem::size_of::<HashValue>()) + hash.heap_size(),
            ValueRef::List(list) => alloc_size(std::mem::size_of::<ListValue>()) + list.heap_size(),
            ValueRef::Set(set) => alloc_size(std::mem::size_of::<SetValue>()) + set.heap_size(),
            ValueRef::ZSet(zset) => alloc_size(std::mem::size_of::<ZSetValue>()) + zset.heap_size(),
        }
    }

    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Str(bytes) => Value::Str(bytes.to_vec()),
            ValueRef::Hash(hash) => Value::Hash(Box::new(hash.clone())),
            ValueRef::List(list) => Value::List(Box::new(list.clone())),
            ValueRef::Set(set) => Value::Set(Box::new(set.clone())),
            ValueRef::ZSet(zset) => Value::ZSet(Box::new(zset.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ListValue, ZSetValue, alloc_size, sorts_before};
    use proptest::prelude::*;

    /// Members in (score, member) order, as a sorted set must hold them.
    fn model_order(model: &std::collections::HashMap<Vec<u8>, f64>) -> Vec<(Vec<u8>, f64)> {
        let mut order: Vec<(Vec<u8>, f64)> = model.iter().map(|(m, s)| (m.clone(), *s)).collect();
        order.sort_by(|a, b| {
            if sorts_before(a.1, &a.0, b.1, &b.0) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        order
    }

    proptest! {
        // inserts, score changes and removals (enough to split and merge runs) against
        // a map sorted afresh: order, ranks, positions, both directions, accounting
        #[test]
        fn sorted_set_keeps_score_order(
            ops in proptest::collection::vec((0u16..700, -4i8..4, 0u8..10), 1..2500)
        ) {
            let mut zset = ZSetValue::default();
            let mut model = std::collections::HashMap::new();
            for (member, score, op) in ops {
                let member = format!("m{member}").into_bytes();
                let score = f64::from(score) / 2.0;
                match op {
                    0..=3 => prop_assert_eq!(zset.remove(&member), model.remove(&member)),
                    // pops from either end (ZPOPMIN, ZPOPMAX)
                    4 | 5 => {
                        let order = model_order(&model);
                        let end = if op == 5 { order.last() } else { order.first() }.cloned();
                        if let Some((member, _)) = &end {
                            model.remove(member);
                        }
                        let popped = zset.pop_end(op == 5).map(|(m, s)| (m.into_vec(), s));
                        prop_assert_eq!(popped, end);
                    }
                    _ => prop_assert_eq!(zset.insert(&member, score), model.insert(member, score)),
                }
            }
            let order = model_order(&model);
            prop_assert_eq!(zset.len(), order.len());
            let got: Vec<(Vec<u8>, f64)> = zset.iter().map(|(m, s)| (m.to_vec(), s)).collect();
            prop_assert_eq!(&got, &order);
            for (rank, (member, score)) in order.iter().enumerate() {
                prop_assert_eq!(zset.rank(member), Some(rank));
                prop_assert_eq!(zset.get(rank), Some((&member[..], *score)));
                prop_assert_eq!(zset.ascending(rank).count(), order.len() - rank);
                let down: Vec<&[u8]> = zset.descending(rank).map(|(m, _)| m).collect();
                let want: Vec<&[u8]> = order[..=rank].iter().rev().map(|(m, _)| &m[..]).collect();
                prop_assert_eq!(down, want);
            }
            prop_assert_eq!(zset.descending(order.len()).count(), 0);
            prop_assert_eq!(zset.ascending(order.len()).count(), 0);
            let below_zero = order.iter().filter(|(_, s)| *s < 0.0).count();
            prop_assert_eq!(zset.partition_point(|s, _| s < 0.0), below_zero);
            let members: usize = order.iter().map(|(m, _)| 2 * alloc_size(m.len())).sum();
            let runs: usize = zset.runs.iter().map(super::run_bytes).sum();
            prop_assert_eq!(zset.payload, members + runs);
            prop_assert!(zset.runs.iter().all(|run| !run.is_empty() && run.len() <= super::RUN_MAX));
        }
    }

    #[test]
    fn a_negative_zero_score_is_kept_as_zero() {
        let mut zset = ZSetValue::default();
        zset.insert(b"a", -0.0);
        assert!(zset.score(b"a").unwrap().is_sign_positive());
    }

    #[test]
    fn list_payload_follows_its_elements() {
        let mut list = ListValue::default();
        for item in ["a", "bb", "a", "ccc", "a"] {
            list.push_back(item.as_bytes());
        }
        assert_eq!(list.remove_matching(b"a", 2, true), 2);
        let items: Vec<&[u8]> = list.iter().collect();
        assert_eq!(items, [&b"a"[..], b"bb", b"ccc"]);
        list.keep_range(Some((1, 1)));
        assert_eq!(list.iter().collect::<Vec<_>>(), [&b"bb"[..]]);
        assert_eq!(list.payload, alloc_size(2));
        list.keep_range(None);
        assert!(list.is_empty());
        assert_eq!(list.payload, 0);
    }

    #[test]
    fn alloc_size_follows_mimalloc_classes() {
        let classes: Vec<usize> = [
            1, 8, 9, 48, 49, 64, 65, 80, 81, 96, 128, 129, 160, 161, 1024, 1025, 1092,
        ]
        .iter()
        .map(|&len| alloc_size(len))
        .collect();
        assert_eq!(
            classes,
            [
                8, 8, 16, 48, 64, 64, 80, 80, 96, 96, 128, 160, 160, 192, 1024, 1280, 1280
            ]
        );
        assert_eq!(alloc_size(0), 0);
        assert_eq!(alloc_size(100_000), 102_400);
    }
}
