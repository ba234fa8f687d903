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

/// A collection type a key can hold (hash, list, set): what the commands' one read
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

#[derive(Clone, Debug)]
pub enum Value {
    Str(Vec<u8>),
    Hash(Box<HashValue>),
    List(Box<ListValue>),
    Set(Box<SetValue>),
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
}

impl ValueRef<'_> {
    pub fn type_name(self) -> &'static str {
        match self {
            ValueRef::Str(_) => "string",
            ValueRef::Hash(_) => "hash",
            ValueRef::List(_) => "list",
            ValueRef::Set(_) => "set",
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
        }
    }

    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Str(bytes) => Value::Str(bytes.to_vec()),
            ValueRef::Hash(hash) => Value::Hash(Box::new(hash.clone())),
            ValueRef::List(list) => Value::List(Box::new(list.clone())),
            ValueRef::Set(set) => Value::Set(Box::new(set.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ListValue, alloc_size};

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
