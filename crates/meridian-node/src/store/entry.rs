//! Stored values and the per-key record, with honest memory accounting.

use indexmap::IndexMap;

pub const NIL: u32 = u32::MAX;

/// Bytes an allocation of `len` bytes really costs with a typical malloc
/// (8-byte header, 16-byte size classes, 32-byte minimum chunk).
pub fn alloc_size(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        ((len + 8 + 15) & !15).max(32)
    }
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

#[derive(Clone, Debug)]
pub enum Value {
    Str(Vec<u8>),
    Hash(Box<HashValue>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(bytes) => alloc_size(bytes.capacity()),
            Value::Hash(hash) => alloc_size(std::mem::size_of::<HashValue>()) + hash.heap_size(),
        }
    }
}

/// One key's record in a shard's slab.
#[derive(Debug)]
pub struct Entry {
    pub key: Box<[u8]>,
    pub value: Value,
    /// Absolute expiry in Unix milliseconds; 0 when the key is persistent.
    pub expire_at: u64,
    /// Neighbours in the shard's insertion-ordered list (SIEVE/FIFO order).
    pub prev: u32,
    pub next: u32,
    /// Position in the shard's volatile-key vector, or NIL.
    pub volatile_pos: u32,
    /// LRU clock at last access (milliseconds, wrapping).
    pub last_access: u32,
    /// LFU state: minutes-of-last-decrement << 8 | logarithmic counter.
    pub lfu: u32,
    pub slot: u16,
    /// SIEVE visited bit.
    pub visited: bool,
}

/// Per-entry bookkeeping the store adds on top of key and value bytes:
/// the slab slot, the hash-table slot (u32 + control byte, at 7/8 load) and
/// the volatile index slot when the key has a TTL.
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Option<Entry>>() + 6;

impl Entry {
    pub fn memory(&self) -> usize {
        ENTRY_OVERHEAD
            + alloc_size(self.key.len())
            + self.value.heap_size()
            + if self.volatile_pos != NIL { 4 } else { 0 }
    }
}
