//! One key's record: a shard's slab slot ([`Entry`], 20 bytes: the record pointer,
//! the SIEVE list links and the access stamp) and the key's single heap
//! allocation, the packed record:
//!
//! ```text
//! [flags u8][key len varint][value len varint, inline strings only]
//! [expire_at u64][volatile position u32]   only when the key has a TTL
//! [key bytes][value bytes | long string's Vec parts (ptr, len, cap) | collection's Box pointer]
//! ```
//!
//! Short strings live inline (13-byte key, 32-byte value: 48 bytes, one mimalloc
//! class); a string goes out of line when inline would cost more after size-class
//! rounding, or when it is longer than [`INLINE_MAX`] (APPEND then grows it in place).
//!
//! All of the store's `unsafe` code is in this module, behind [`Entry`]'s safe API
//! (the record is owned by its entry exactly like a `Box` is, and is only read
//! through `&self` and changed through `&mut self`) and [`Pages`], the allocator
//! of the shards' slabs and hash tables.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

use super::value::{HashValue, ListValue, SetValue, Value, ValueRef, ZSetValue, alloc_size};

pub const NIL: u32 = u32::MAX;

const KIND_MASK: u8 = 0b111;
const KIND_INLINE: u8 = 0;
const KIND_HEAP: u8 = 1;
const KIND_HASH: u8 = 2;
const KIND_LIST: u8 = 3;
const KIND_SET: u8 = 4;
const KIND_ZSET: u8 = 5;
const FLAG_TTL: u8 = 0b1000;

const WORD: usize = size_of::<usize>();
/// A long string's `Vec<u8>` parts: pointer, length, capacity.
const HEAP_PARTS: usize = 3 * WORD;
/// A collection's `Box` pointer (`Box<HashValue>`, `Box<ListValue>`, `Box<SetValue>`).
const BOX_PARTS: usize = WORD;
/// expire_at (u64) and the position in the shard's volatile vector (u32).
const TTL_BYTES: usize = 12;
/// Longest string kept inline: longer ones are appended to in place.
pub const INLINE_MAX: usize = 1024;
const VISITED: u32 = 1 << 31;

/// Bytes per key outside the record: the slab slot and, for keys with a TTL,
/// their volatile-vector slot. (The shard accounts its hash table itself.)
pub const SLOT_BYTES: usize = size_of::<Option<Entry>>();

fn varint_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

/// Whether a string of `len` bytes costs no more inline than out of line, for a
/// record whose other fields take `fixed` bytes.
fn inline_fits(fixed: usize, len: usize) -> bool {
    len <= INLINE_MAX
        && alloc_size(fixed + varint_len(len) + len)
            <= alloc_size(fixed + HEAP_PARTS) + alloc_size(len)
}

/// A value on its way into a record.
pub enum Src<'a> {
    Bytes(&'a [u8]),
    Vec(Vec<u8>),
    Collection(Collection),
}

/// A value the record keeps behind a `Box` pointer.
pub enum Collection {
    Hash(Box<HashValue>),
    List(Box<ListValue>),
    Set(Box<SetValue>),
    ZSet(Box<ZSetValue>),
}

impl Collection {
    fn kind(&self) -> u8 {
        match self {
            Collection::Hash(_) => KIND_HASH,
            Collection::List(_) => KIND_LIST,
            Collection::Set(_) => KIND_SET,
            Collection::ZSet(_) => KIND_ZSET,
        }
    }

    /// The owned pointer the record keeps (freed by [`Collection::from_raw`]).
    fn into_raw(self) -> *mut u8 {
        match self {
            Collection::Hash(hash) => Box::into_raw(hash).cast(),
            Collection::List(list) => Box::into_raw(list).cast(),
            Collection::Set(set) => Box::into_raw(set).cast(),
            Collection::ZSet(zset) => Box::into_raw(zset).cast(),
        }
    }

    /// Takes back ownership of what [`Collection::into_raw`] gave for a record of `kind`.
    ///
    /// # Safety
    /// `pointer` comes from `into_raw` of a collection of `kind`, and nothing else owns
    /// it any more.
    unsafe fn from_raw(kind: u8, pointer: *mut u8) -> Value {
        // SAFETY: as the caller promises, the pointer is a Box of the kind's type.
        unsafe {
            match kind {
                KIND_HASH => Value::Hash(Box::from_raw(pointer.cast::<HashValue>())),
                KIND_LIST => Value::List(Box::from_raw(pointer.cast::<ListValue>())),
                KIND_SET => Value::Set(Box::from_raw(pointer.cast::<SetValue>())),
                _ => Value::ZSet(Box::from_raw(pointer.cast::<ZSetValue>())),
            }
        }
    }
}

impl From<Value> for Src<'_> {
    fn from(value: Value) -> Self {
        match value {
            Value::Str(bytes) => Src::Vec(bytes),
            Value::Hash(hash) => Src::Collection(Collection::Hash(hash)),
            Value::List(list) => Src::Collection(Collection::List(list)),
            Value::Set(set) => Src::Collection(Collection::Set(set)),
            Value::ZSet(zset) => Src::Collection(Collection::ZSet(zset)),
        }
    }
}

/// A record's decoded header.
#[derive(Clone, Copy, Debug)]
struct Parts {
    kind: u8,
    ttl: bool,
    key_len: usize,
    /// Inline strings only.
    val_len: usize,
    ttl_off: usize,
    key_off: usize,
}

impl Parts {
    fn val_off(&self) -> usize {
        self.key_off + self.key_len
    }

    fn total(&self) -> usize {
        self.val_off()
            + match self.kind {
                KIND_INLINE => self.val_len,
                KIND_HEAP => HEAP_PARTS,
                _ => BOX_PARTS,
            }
    }

    /// Header and key bytes, without the inline value's length.
    fn fixed(&self) -> usize {
        fixed_len(self.key_len, self.ttl)
    }

    fn layout(&self) -> Layout {
        record_layout(self.total())
    }
}

fn fixed_len(key_len: usize, ttl: bool) -> usize {
    1 + varint_len(key_len) + if ttl { TTL_BYTES } else { 0 } + key_len
}

fn record_layout(total: usize) -> Layout {
    Layout::from_size_align(total, 1).expect("record size overflows")
}

/// Writes a record at a fresh allocation.
struct Writer {
    ptr: NonNull<u8>,
    pos: usize,
    len: usize,
}

impl Writer {
    fn new(len: usize) -> Self {
        let layout = record_layout(len);
        // SAFETY: `len` > 0 (every record has its flags byte).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        Writer { ptr, pos: 0, len }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        assert!(self.pos + bytes.len() <= self.len);
        // SAFETY: in bounds of the allocation (checked above); `bytes` cannot
        // overlap a block that was just allocated.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.pos),
                bytes.len(),
            );
        }
        self.pos += bytes.len();
    }

    fn varint(&mut self, mut n: usize) {
        while n >= 0x80 {
            self.bytes(&[(n as u8) | 0x80]);
            n >>= 7;
        }
        self.bytes(&[n as u8]);
    }

    /// Writes a pointer (unaligned, keeping its provenance).
    fn pointer(&mut self, pointer: *mut u8) {
        assert!(self.pos + WORD <= self.len);
        // SAFETY: in bounds of the allocation (checked above).
        unsafe {
            self.ptr
                .as_ptr()
                .add(self.pos)
                .cast::<*mut u8>()
                .write_unaligned(pointer);
        }
        self.pos += WORD;
    }

    fn finish(self) -> NonNull<u8> {
        assert_eq!(self.pos, self.len, "record layout mismatch");
        self.ptr
    }
}

/// Builds a record; the value's parts move into it.
fn encode(key: &[u8], src: Src<'_>, ttl: Option<(u64, u32)>) -> NonNull<u8> {
    let fixed = fixed_len(key.len(), ttl.is_some());
    let kind = match &src {
        Src::Bytes(bytes) if inline_fits(fixed, bytes.len()) => KIND_INLINE,
        Src::Vec(bytes) if inline_fits(fixed, bytes.len()) => KIND_INLINE,
        Src::Bytes(_) | Src::Vec(_) => KIND_HEAP,
        Src::Collection(collection) => collection.kind(),
    };
    let inline_len = match (&src, kind) {
        (Src::Bytes(bytes), KIND_INLINE) => bytes.len(),
        (Src::Vec(bytes), KIND_INLINE) => bytes.len(),
        _ => 0,
    };
    let total = fixed
        + match kind {
            KIND_INLINE => varint_len(inline_len) + inline_len,
            KIND_HEAP => HEAP_PARTS,
            _ => BOX_PARTS,
        };
    let mut out = Writer::new(total);
    out.bytes(&[kind | if ttl.is_some() { FLAG_TTL } else { 0 }]);
    out.varint(key.len());
    if kind == KIND_INLINE {
        out.varint(inline_len);
    }
    if let Some((expire_at, position)) = ttl {
        out.bytes(&expire_at.to_ne_bytes());
        out.bytes(&position.to_ne_bytes());
    }
    out.bytes(key);
    match src {
        Src::Bytes(bytes) if kind == KIND_INLINE => out.bytes(bytes),
        Src::Vec(bytes) if kind == KIND_INLINE => out.bytes(&bytes),
        Src::Bytes(bytes) => write_vec(&mut out, bytes.to_vec()),
        Src::Vec(bytes) => write_vec(&mut out, bytes),
        Src::Collection(collection) => out.pointer(collection.into_raw()),
    }
    out.finish()
}

fn write_vec(out: &mut Writer, bytes: Vec<u8>) {
    let mut bytes = std::mem::ManuallyDrop::new(bytes);
    out.pointer(bytes.as_mut_ptr());
    out.bytes(&bytes.len().to_ne_bytes());
    out.bytes(&bytes.capacity().to_ne_bytes());
}

/// One key in a shard's slab: its record and the eviction bookkeeping.
/// Packed to 4-byte alignment: 20 bytes instead of 24.
#[repr(C, packed(4))]
pub struct Entry {
    /// The packed record, owned (freed on drop).
    record: NonNull<u8>,
    /// Neighbours in the shard's insertion-ordered list (SIEVE/FIFO order).
    pub prev: u32,
    pub next: u32,
    /// Bit 31: SIEVE visited. Bits 0-30: the access stamp, the LRU clock or,
    /// under an LFU policy, the LFU state (like Redis's 24-bit `lru` field).
    access: u32,
}

// SAFETY: an entry owns its record and the value parts the record points to
// (like a `Box`); they are only read through `&Entry` and changed through
// `&mut Entry`, and the collections (`HashValue`, `ListValue`, `SetValue`) are Send + Sync.
unsafe impl Send for Entry {}
// SAFETY: see above; `&Entry` gives read-only access.
unsafe impl Sync for Entry {}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("value", &self.value())
            .field("expire_at", &self.expire_at())
            .finish()
    }
}

impl Entry {
    /// A new entry; `ttl` is (expire_at, volatile position) for a key with a TTL.
    pub fn new(key: &[u8], value: Src<'_>, ttl: Option<(u64, u32)>, stamp: u32) -> Self {
        Entry {
            record: encode(key, value, ttl),
            prev: NIL,
            next: NIL,
            access: stamp & !VISITED,
        }
    }

    fn ptr(&self) -> *mut u8 {
        // a copy of the packed field, not a reference to it
        let record = self.record;
        record.as_ptr()
    }

    /// Starts loading the record's first cache line (its head and the key).
    pub fn prefetch_record(&self) {
        prefetch(self.ptr());
    }

    fn parts(&self) -> Parts {
        let ptr = self.ptr();
        // SAFETY: every record starts with its flags byte.
        let flags = unsafe { ptr.read() };
        let mut pos = 1;
        let mut varint = || {
            let mut value = 0usize;
            let mut shift = 0;
            loop {
                // SAFETY: the varints follow the flags byte inside the record,
                // as `encode` wrote them.
                let byte = unsafe { ptr.add(pos).read() };
                pos += 1;
                value |= usize::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return value;
                }
                shift += 7;
            }
        };
        let kind = flags & KIND_MASK;
        let key_len = varint();
        let val_len = if kind == KIND_INLINE { varint() } else { 0 };
        let ttl = flags & FLAG_TTL != 0;
        let ttl_off = pos;
        Parts {
            kind,
            ttl,
            key_len,
            val_len,
            ttl_off,
            key_off: ttl_off + if ttl { TTL_BYTES } else { 0 },
        }
    }

    /// Reads a plain word at `offset` of the record.
    fn word(&self, offset: usize) -> usize {
        // SAFETY: callers pass offsets of fields `encode` wrote inside the record.
        unsafe { self.ptr().add(offset).cast::<usize>().read_unaligned() }
    }

    /// Reads a pointer at `offset` of the record.
    fn pointer(&self, offset: usize) -> *mut u8 {
        // SAFETY: callers pass offsets of pointers `encode` wrote inside the record.
        unsafe { self.ptr().add(offset).cast::<*mut u8>().read_unaligned() }
    }

    fn set_pointer(&mut self, offset: usize, pointer: *mut u8) {
        // SAFETY: as in `pointer`; `&mut self` owns the record.
        unsafe {
            self.ptr()
                .add(offset)
                .cast::<*mut u8>()
                .write_unaligned(pointer)
        }
    }

    fn set_word(&mut self, offset: usize, value: usize) {
        // SAFETY: as in `word`; `&mut self` owns the record.
        unsafe {
            self.ptr()
                .add(offset)
                .cast::<usize>()
                .write_unaligned(value)
        }
    }

    pub fn key(&self) -> &[u8] {
        let parts = self.parts();
        // SAFETY: the key bytes are inside the record, initialized by `encode`,
        // and live as long as `&self`.
        unsafe { std::slice::from_raw_parts(self.ptr().add(parts.key_off), parts.key_len) }
    }

    pub fn value(&self) -> ValueRef<'_> {
        let parts = self.parts();
        let at = parts.val_off();
        match parts.kind {
            // SAFETY: the inline value is inside the record.
            KIND_INLINE => ValueRef::Str(unsafe {
                std::slice::from_raw_parts(self.ptr().add(at), parts.val_len)
            }),
            // SAFETY: the parts of a Vec<u8> this entry owns.
            KIND_HEAP => ValueRef::Str(unsafe {
                std::slice::from_raw_parts(self.pointer(at), self.word(at + WORD))
            }),
            // SAFETY: a pointer from Box::into_raw of a HashValue that this entry owns.
            KIND_HASH => ValueRef::Hash(unsafe { &*self.pointer(at).cast::<HashValue>() }),
            // SAFETY: a pointer from Box::into_raw of a ListValue that this entry owns.
            KIND_LIST => ValueRef::List(unsafe { &*self.pointer(at).cast::<ListValue>() }),
            // SAFETY: a pointer from Box::into_raw of a SetValue that this entry owns.
            KIND_SET => ValueRef::Set(unsafe { &*self.pointer(at).cast::<SetValue>() }),
            // SAFETY: a pointer from Box::into_raw of a ZSetValue that this entry owns.
            _ => ValueRef::ZSet(unsafe { &*self.pointer(at).cast::<ZSetValue>() }),
        }
    }

    /// Absolute expiry in Unix milliseconds; 0 when the key is persistent.
    pub fn expire_at(&self) -> u64 {
        let parts = self.parts();
        if !parts.ttl {
            return 0;
        }
        // SAFETY: a key with a TTL has expire_at at `ttl_off`.
        unsafe { self.ptr().add(parts.ttl_off).cast::<u64>().read_unaligned() }
    }

    /// Position in the shard's volatile-key vector, or NIL.
    pub fn volatile_pos(&self) -> u32 {
        let parts = self.parts();
        if !parts.ttl {
            return NIL;
        }
        // SAFETY: a key with a TTL has its volatile position after expire_at.
        unsafe {
            self.ptr()
                .add(parts.ttl_off + 8)
                .cast::<u32>()
                .read_unaligned()
        }
    }

    /// Moves a key with a TTL to another volatile position.
    pub fn set_volatile_pos(&mut self, position: u32) {
        let parts = self.parts();
        assert!(parts.ttl, "volatile position of a persistent key");
        // SAFETY: as in `volatile_pos`; `&mut self` owns the record.
        unsafe {
            self.ptr()
                .add(parts.ttl_off + 8)
                .cast::<u32>()
                .write_unaligned(position)
        }
    }

    /// Sets or removes (`None`) the TTL; re-encodes the record only when the key
    /// gains or loses its TTL.
    pub fn set_ttl(&mut self, ttl: Option<(u64, u32)>) {
        let parts = self.parts();
        match ttl {
            Some((expire_at, position)) if parts.ttl => {
                // SAFETY: as in `expire_at` and `volatile_pos`.
                unsafe {
                    let at = self.ptr().add(parts.ttl_off);
                    at.cast::<u64>().write_unaligned(expire_at);
                    at.add(8).cast::<u32>().write_unaligned(position);
                }
            }
            None if !parts.ttl => {}
            _ => {
                let value = match parts.kind {
                    // SAFETY: the inline value is inside the old record, which
                    // `reencode` frees only after the new one was written.
                    KIND_INLINE => Src::Bytes(unsafe {
                        std::slice::from_raw_parts(self.ptr().add(parts.val_off()), parts.val_len)
                    }),
                    _ => self.take_value(parts).into(),
                };
                self.reencode(parts, value, ttl);
            }
        }
    }

    fn ttl_parts(&self) -> Option<(u64, u32)> {
        self.parts()
            .ttl
            .then(|| (self.expire_at(), self.volatile_pos()))
    }

    /// Replaces the value; keeps the key, TTL and list position.
    pub fn set_value(&mut self, value: Src<'_>) {
        let parts = self.parts();
        let same_size = match &value {
            Src::Bytes(bytes) => Some(&bytes[..]),
            Src::Vec(bytes) => Some(&bytes[..]),
            Src::Collection(_) => None,
        }
        .filter(|bytes| parts.kind == KIND_INLINE && bytes.len() == parts.val_len);
        if let Some(bytes) = same_size {
            // same length (SET over a value of the same size): copy in place
            // SAFETY: the inline value's bytes are inside the record; `bytes`
            // comes from elsewhere (`&mut self` excludes borrows of this record).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.ptr().add(parts.val_off()),
                    bytes.len(),
                );
            }
            return;
        }
        let ttl = self.ttl_parts();
        self.drop_value_parts(parts);
        self.reencode(parts, value, ttl);
    }

    /// Drops an out-of-line value; its parts in the record are stale afterwards.
    fn drop_value_parts(&mut self, parts: Parts) {
        if parts.kind != KIND_INLINE {
            drop(self.take_value(parts));
        }
    }

    /// Changes the value through `change`; the record is rewritten afterwards
    /// (also when `change` panics), in place when the value's shape allows.
    pub fn modify<R>(&mut self, change: impl FnOnce(&mut Value) -> R) -> R {
        struct PutBack<'e> {
            entry: &'e mut Entry,
            value: Value,
        }
        impl Drop for PutBack<'_> {
            fn drop(&mut self) {
                let value = std::mem::replace(&mut self.value, Value::Str(Vec::new()));
                self.entry.put_value(value);
            }
        }
        let parts = self.parts();
        let value = self.take_value(parts);
        let mut guard = PutBack { entry: self, value };
        change(&mut guard.value)
    }

    /// Moves the value out of the record. The record's value parts are stale
    /// until `reencode` or `put_value` writes new ones (nothing may read or drop
    /// them in between).
    fn take_value(&mut self, parts: Parts) -> Value {
        let at = parts.val_off();
        match parts.kind {
            // SAFETY: the inline value is inside the record.
            KIND_INLINE => Value::Str(
                unsafe { std::slice::from_raw_parts(self.ptr().add(at), parts.val_len) }.to_vec(),
            ),
            // SAFETY: the parts of a Vec<u8> this entry owns; ownership moves out.
            KIND_HEAP => Value::Str(unsafe {
                Vec::from_raw_parts(
                    self.pointer(at),
                    self.word(at + WORD),
                    self.word(at + 2 * WORD),
                )
            }),
            // SAFETY: a pointer from Collection::into_raw of the record's kind, which
            // this entry owns; ownership moves out.
            kind => unsafe { Collection::from_raw(kind, self.pointer(at)) },
        }
    }

    /// Writes back a value taken with `take_value`.
    fn put_value(&mut self, value: Value) {
        let parts = self.parts();
        let at = parts.val_off();
        match value {
            Value::Hash(hash) if parts.kind == KIND_HASH => {
                self.set_pointer(at, Collection::Hash(hash).into_raw());
            }
            Value::List(list) if parts.kind == KIND_LIST => {
                self.set_pointer(at, Collection::List(list).into_raw());
            }
            Value::Set(set) if parts.kind == KIND_SET => {
                self.set_pointer(at, Collection::Set(set).into_raw());
            }
            Value::ZSet(zset) if parts.kind == KIND_ZSET => {
                self.set_pointer(at, Collection::ZSet(zset).into_raw());
            }
            Value::Str(bytes) if parts.kind == KIND_INLINE && bytes.len() == parts.val_len => {
                // SAFETY: as in `set_value`.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr().add(at), bytes.len());
                }
            }
            Value::Str(bytes)
                if parts.kind == KIND_HEAP && !inline_fits(parts.fixed(), bytes.len()) =>
            {
                let mut bytes = std::mem::ManuallyDrop::new(bytes);
                self.set_pointer(at, bytes.as_mut_ptr());
                self.set_word(at + WORD, bytes.len());
                self.set_word(at + 2 * WORD, bytes.capacity());
            }
            value => {
                let ttl = self.ttl_parts();
                self.reencode(parts, value.into(), ttl);
            }
        }
    }

    /// Replaces the record by a new one with the same key; the old record's value
    /// parts must have been taken already.
    fn reencode(&mut self, parts: Parts, value: Src<'_>, ttl: Option<(u64, u32)>) {
        let record = encode(self.key(), value, ttl);
        let old = self.ptr();
        self.record = record;
        // SAFETY: `old` was allocated by `encode` with this layout; its value
        // parts were moved out, so only the record itself is freed.
        unsafe { dealloc(old, parts.layout()) };
    }

    pub fn visited(&self) -> bool {
        self.access & VISITED != 0
    }

    pub fn set_visited(&mut self, visited: bool) {
        self.access = if visited {
            self.access | VISITED
        } else {
            self.access & !VISITED
        };
    }

    /// The LRU clock or LFU state of the last access (31 bits).
    pub fn stamp(&self) -> u32 {
        self.access & !VISITED
    }

    pub fn set_stamp(&mut self, stamp: u32) {
        self.access = (self.access & VISITED) | (stamp & !VISITED);
    }

    /// The key's cluster slot (recomputed: CRC16 of the key or its hash tag).
    pub fn slot(&self) -> u16 {
        meridian_topology::key_slot(self.key())
    }

    /// Bytes this key costs: slab slot, record, out-of-line value, volatile slot.
    pub fn memory(&self) -> usize {
        let parts = self.parts();
        let at = parts.val_off();
        SLOT_BYTES
            + alloc_size(parts.total())
            + match parts.kind {
                KIND_INLINE => 0,
                KIND_HEAP => alloc_size(self.word(at + 2 * WORD)),
                _ => self.value().collection_size(),
            }
            + if parts.ttl { 4 } else { 0 }
    }

    /// The value, moved out of the removed entry.
    pub fn into_value(mut self) -> Value {
        let parts = self.parts();
        let value = self.take_value(parts);
        // the record still has to go, but not the moved-out value parts
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: allocated by `encode` with this layout; value parts moved out.
        unsafe { dealloc(this.ptr(), parts.layout()) };
        value
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let parts = self.parts();
        self.drop_value_parts(parts);
        // SAFETY: allocated by `encode` with this layout; the value parts were
        // just dropped.
        unsafe { dealloc(self.ptr(), parts.layout()) };
    }
}

/// Hints the CPU to start loading the cache line at `pointer`. Never faults.
#[inline(always)]
pub fn prefetch<T>(pointer: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is only a hint; it reads nothing and cannot fault,
        // whatever the address.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(pointer.cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = pointer;
}

/// Allocator for the shards' growing arrays (slab, hash table, volatile keys):
/// blocks of a page and more are mapped from the OS and unmapped when freed.
/// Through the node's allocator, each doubling left the old block behind in a
/// size class that nothing else reuses (about as much memory again as the
/// arrays, never given back); mapped blocks give it back at once, and cost only
/// the pages they touch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pages;

const PAGE: usize = 4096;
const MAPPED_MIN: usize = PAGE;

fn mapped(layout: Layout) -> Option<usize> {
    (layout.size() >= MAPPED_MIN && layout.align() <= PAGE)
        .then(|| layout.size().next_multiple_of(PAGE))
}

// SAFETY: blocks come either from the global allocator (small ones) or from a
// private anonymous mapping of at least the requested size, page-aligned (so
// aligned for any layout up to a page); `deallocate` tells the two apart by the
// same layout test and unmaps exactly the mapped length.
unsafe impl allocator_api2::alloc::Allocator for Pages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let Some(len) = mapped(layout) else {
            return allocator_api2::alloc::Global.allocate(layout);
        };
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(allocator_api2::alloc::AllocError);
        }
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match mapped(layout) {
            // SAFETY: mapped by `allocate` with this length (same layout).
            Some(len) => unsafe {
                libc::munmap(ptr.as_ptr().cast(), len);
            },
            // SAFETY: allocated by the global allocator with this layout.
            None => unsafe { allocator_api2::alloc::Global.deallocate(ptr, layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_string_is_one_48_byte_record() {
        let entry = Entry::new(&[b'k'; 13], Src::Bytes(&[b'v'; 32]), None, 0);
        assert_eq!(entry.parts().total(), 48);
        assert_eq!(SLOT_BYTES, 20);
        assert_eq!(entry.memory(), 20 + 48);
        let long = Entry::new(&[b'k'; 64], Src::Bytes(&[b'v'; 1024]), None, 0);
        // out of line: 96-byte record + 1024-byte value beats a 1280-byte record
        assert_eq!(long.parts().kind, KIND_HEAP);
        assert_eq!(long.memory(), 20 + 96 + 1024);
    }

    #[derive(Clone, Debug)]
    enum Op {
        SetStr(usize, u8),
        SetHash(usize),
        SetList(usize),
        SetSet(usize),
        SetZSet(usize),
        Ttl(u64, u32),
        Persist,
        Append(usize),
        VolatilePos(u32),
        Stamp(u32, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let len = prop_oneof![0usize..80, 80usize..300, 900usize..1200, 3000usize..5000];
        prop_oneof![
            (len.clone(), any::<u8>()).prop_map(|(len, byte)| Op::SetStr(len, byte)),
            (0usize..20).prop_map(Op::SetHash),
            (0usize..20).prop_map(Op::SetList),
            (0usize..20).prop_map(Op::SetSet),
            (0usize..20).prop_map(Op::SetZSet),
            (1u64..u64::MAX, any::<u32>()).prop_map(|(at, pos)| Op::Ttl(at, pos)),
            Just(Op::Persist),
            len.prop_map(Op::Append),
            any::<u32>().prop_map(Op::VolatilePos),
            (any::<u32>(), any::<bool>()).prop_map(|(stamp, visited)| Op::Stamp(stamp, visited)),
        ]
    }

    fn hash_of(fields: usize) -> HashValue {
        let mut hash = HashValue::default();
        for field in 0..fields {
            hash.insert(format!("f{field}").as_bytes(), &vec![b'x'; field]);
        }
        hash
    }

    fn list_of(items: usize) -> ListValue {
        let mut list = ListValue::default();
        for item in 0..items {
            list.push_back(&vec![b'i'; item]);
        }
        list
    }

    fn set_of(members: usize) -> SetValue {
        let mut set = SetValue::default();
        for member in 0..members {
            set.insert(format!("m{member}").as_bytes());
        }
        set
    }

    fn zset_of(members: usize) -> ZSetValue {
        let mut zset = ZSetValue::default();
        for member in 0..members {
            zset.insert(format!("m{member}").as_bytes(), (members - member) as f64);
        }
        zset
    }

    fn same(entry: &Entry, value: &Value, ttl: Option<(u64, u32)>) -> bool {
        let values = match (entry.value(), value) {
            (ValueRef::Str(got), Value::Str(want)) => got == &want[..],
            (ValueRef::Hash(got), Value::Hash(want)) => {
                got.len() == want.len() && got.iter().eq(want.iter())
            }
            (ValueRef::List(got), Value::List(want)) => got.iter().eq(want.iter()),
            (ValueRef::Set(got), Value::Set(want)) => got.iter().eq(want.iter()),
            (ValueRef::ZSet(got), Value::ZSet(want)) => got.iter().eq(want.iter()),
            _ => false,
        };
        values
            && entry.expire_at() == ttl.map_or(0, |ttl| ttl.0)
            && entry.volatile_pos() == ttl.map_or(NIL, |ttl| ttl.1)
    }

    proptest! {
        #[test]
        fn record_matches_model(
            key_len in prop_oneof![0usize..20, 100usize..200, 20000usize..20001],
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let key: Vec<u8> = (0..key_len).map(|index| index as u8).collect();
            let mut value = Value::Str(b"first".to_vec());
            let mut ttl: Option<(u64, u32)> = None;
            let (mut stamp, mut visited) = (7u32, false);
            let mut entry = Entry::new(&key, Src::Bytes(b"first"), None, stamp);
            for op in ops {
                match op {
                    Op::SetStr(len, byte) => {
                        value = Value::Str(vec![byte; len]);
                        if byte % 2 == 0 {
                            entry.set_value(Src::Bytes(&vec![byte; len]));
                        } else {
                            entry.set_value(Src::Vec(vec![byte; len]));
                        }
                    }
                    Op::SetHash(fields) => {
                        value = Value::Hash(Box::new(hash_of(fields)));
                        entry.set_value(Src::Collection(Collection::Hash(Box::new(hash_of(
                            fields,
                        )))));
                    }
                    Op::SetList(items) => {
                        value = Value::List(Box::new(list_of(items)));
                        entry.set_value(Src::Collection(Collection::List(Box::new(list_of(
                            items,
                        )))));
                    }
                    Op::SetSet(members) => {
                        value = Value::Set(Box::new(set_of(members)));
                        entry.set_value(Src::Collection(Collection::Set(Box::new(set_of(
                            members,
                        )))));
                    }
                    Op::SetZSet(members) => {
                        value = Value::ZSet(Box::new(zset_of(members)));
                        entry.set_value(Src::Collection(Collection::ZSet(Box::new(zset_of(
                            members,
                        )))));
                    }
                    Op::Ttl(at, pos) => {
                        ttl = Some((at, pos));
                        entry.set_ttl(ttl);
                    }
                    Op::Persist => {
                        ttl = None;
                        entry.set_ttl(None);
                    }
                    Op::VolatilePos(pos) => {
                        if let Some(ttl) = ttl.as_mut() {
                            ttl.1 = pos;
                            entry.set_volatile_pos(pos);
                        }
                    }
                    Op::Append(len) => {
                        let apply = |value: &mut Value| match value {
                            Value::Str(bytes) => bytes.extend(std::iter::repeat_n(b'a', len)),
                            Value::Hash(hash) => {
                                hash.insert(format!("a{len}").as_bytes(), b"v");
                            }
                            Value::List(list) => list.push_front(&vec![b'a'; len]),
                            Value::Set(set) => {
                                set.insert(format!("a{len}").as_bytes());
                            }
                            Value::ZSet(zset) => {
                                zset.insert(format!("a{len}").as_bytes(), len as f64);
                            }
                        };
                        apply(&mut value);
                        entry.modify(apply);
                    }
                    Op::Stamp(new, flag) => {
                        stamp = new & !VISITED;
                        visited = flag;
                        entry.set_stamp(new);
                        entry.set_visited(flag);
                    }
                }
                prop_assert_eq!(entry.key(), &key[..]);
                prop_assert!(same(&entry, &value, ttl), "{:?} vs {:?} {:?}", entry, value, ttl);
                prop_assert_eq!((entry.stamp(), entry.visited()), (stamp, visited));
                prop_assert!(entry.memory() >= SLOT_BYTES + key.len());
            }
            // the value moves out intact; dropping the rest frees the record
            let moved = entry.into_value();
            match (moved, value) {
                (Value::Str(got), Value::Str(want)) => prop_assert_eq!(got, want),
                (Value::Hash(got), Value::Hash(want)) => prop_assert_eq!(got.len(), want.len()),
                (Value::List(got), Value::List(want)) => {
                    prop_assert!(got.iter().eq(want.iter()))
                }
                (Value::Set(got), Value::Set(want)) => prop_assert!(got.iter().eq(want.iter())),
                (Value::ZSet(got), Value::ZSet(want)) => prop_assert!(got.iter().eq(want.iter())),
                _ => prop_assert!(false, "type changed"),
            }
        }
    }

    #[test]
    fn pages_hold_big_and_small_arrays() {
        let mut big: allocator_api2::vec::Vec<u64, Pages> = allocator_api2::vec::Vec::new_in(Pages);
        for index in 0..100_000u64 {
            big.push(index);
        }
        assert_eq!(big.iter().sum::<u64>(), 100_000 * 99_999 / 2);
        big.truncate(10);
        big.shrink_to_fit();
        assert_eq!(big[..], (0..10).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn a_panicking_modify_keeps_the_record_valid() {
        let mut entry = Entry::new(b"key", Src::Bytes(&[b'v'; 4000]), Some((5, 1)), 0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            entry.modify(|value| {
                if let Value::Str(bytes) = value {
                    bytes.truncate(3);
                }
                panic!("a failing command")
            })
        }));
        assert!(result.is_err());
        assert!(matches!(entry.value(), ValueRef::Str(b"vvv")));
        assert_eq!((entry.expire_at(), entry.volatile_pos()), (5, 1));
    }
}
