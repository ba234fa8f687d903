//! Stored values (owned and borrowed) and the allocator model the store's memory
//! accounting uses.

use indexmap::IndexMap;

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

impl Value {
    pub fn borrowed(&self) -> ValueRef<'_> {
        match self {
            Value::Str(bytes) => ValueRef::Str(bytes),
            Value::Hash(hash) => ValueRef::Hash(hash),
        }
    }
}

/// A stored value, borrowed from its key's record.
#[derive(Clone, Copy, Debug)]
pub enum ValueRef<'a> {
    Str(&'a [u8]),
    Hash(&'a HashValue),
}

impl ValueRef<'_> {
    pub fn type_name(self) -> &'static str {
        match self {
            ValueRef::Str(_) => "string",
            ValueRef::Hash(_) => "hash",
        }
    }

    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Str(bytes) => Value::Str(bytes.to_vec()),
            ValueRef::Hash(hash) => Value::Hash(Box::new(hash.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::alloc_size;

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
