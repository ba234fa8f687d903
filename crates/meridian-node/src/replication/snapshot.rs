//! The full-sync snapshot: Meridian's own compact format (not RDB).
//!
//! `MRDSNAP1`, then records `type:u8 key_len:u32 key expire_at:u64 value`,
//! where a string value is `len:u32 bytes` and a hash is `count:u32` pairs of
//! `len:u32 bytes`; 0xFF ends the stream. Integers are little-endian.
//!
//! Copy-on-iterate: the primary marks every shard (all locks held for a
//! moment, at the snapshot's offset); each shard is then encoded either by the
//! snapshot walk or by the first writer that touches it, whichever comes
//! first, so writers wait for one shard's copy at most.
//!
//! Streamed ([`Streamed`]): the length is measured first (a marked shard's entries
//! cannot change before they are copied, so their measure holds), then the shards are
//! encoded and sent one at a time; only the shards writers copied early wait in memory,
//! never a second copy of the whole dataset.

use std::borrow::Cow;

use parking_lot::Mutex;

use super::backlog::ReplLog;
use crate::error::SyncError;
use crate::store::entry::Entry;
use crate::store::{Access, Db, HashValue, SnapshotSink, Value, ValueRef};

const MAGIC: &[u8] = b"MRDSNAP1";
const TYPE_STRING: u8 = 0;
const TYPE_HASH: u8 = 1;
const END: u8 = 0xFF;

/// Per-shard encodings of one snapshot in progress.
pub struct SnapshotJob {
    parts: Mutex<Vec<Option<Vec<u8>>>>,
}

impl SnapshotSink for SnapshotJob {
    fn put(&self, shard: usize, entries: &mut dyn Iterator<Item = &Entry>) {
        SnapshotJob::put(self, shard, entries)
    }

    fn measure(&self, entries: &mut dyn Iterator<Item = &Entry>) -> usize {
        entries.map(encoded_len).sum()
    }
}

impl SnapshotJob {
    pub fn new(shards: usize) -> Self {
        SnapshotJob {
            parts: Mutex::new(vec![None; shards]),
        }
    }

    pub fn put(&self, shard: usize, entries: &mut dyn Iterator<Item = &Entry>) {
        let mut encoded = Vec::new();
        for entry in entries {
            encode_entry(&mut encoded, entry);
        }
        if let Some(part) = self.parts.lock().get_mut(shard) {
            part.get_or_insert(encoded);
        }
    }

    /// Length of shard `shard`'s copy, if it was made.
    fn part_len(&self, shard: usize) -> Option<usize> {
        self.parts.lock().get(shard)?.as_ref().map(Vec::len)
    }

    /// Takes shard `shard`'s copy out (empty if it was never made).
    fn take_part(&self, shard: usize) -> Vec<u8> {
        self.parts
            .lock()
            .get_mut(shard)
            .and_then(Option::take)
            .unwrap_or_default()
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// The bytes [`encode_entry`] writes for `entry`.
fn encoded_len(entry: &Entry) -> usize {
    // type, key, expire_at
    let head = 1 + 4 + entry.key().len() + 8;
    head + match entry.value() {
        ValueRef::Str(bytes) => 4 + bytes.len(),
        ValueRef::Hash(hash) => {
            4 + hash
                .iter()
                .map(|(field, value)| 8 + field.len() + value.len())
                .sum::<usize>()
        }
    }
}

fn encode_entry(buf: &mut Vec<u8>, entry: &Entry) {
    match entry.value() {
        ValueRef::Str(bytes) => {
            buf.push(TYPE_STRING);
            put_bytes(buf, entry.key());
            buf.extend_from_slice(&entry.expire_at().to_le_bytes());
            put_bytes(buf, bytes);
        }
        ValueRef::Hash(hash) => {
            buf.push(TYPE_HASH);
            put_bytes(buf, entry.key());
            buf.extend_from_slice(&entry.expire_at().to_le_bytes());
            buf.extend_from_slice(&(hash.len() as u32).to_le_bytes());
            for (field, value) in hash.iter() {
                put_bytes(buf, field);
                put_bytes(buf, value);
            }
        }
    }
}

/// Takes a consistent snapshot of `db` at the offset of `log` current when
/// every shard was marked; returns (offset, payload).
pub fn take(db: &Db, log: &ReplLog) -> (u64, Vec<u8>) {
    let snapshot = Streamed::start(db, log);
    let mut payload = Vec::with_capacity(snapshot.len);
    payload.extend_from_slice(Streamed::head());
    for index in 0..snapshot.shards() {
        payload.extend_from_slice(&snapshot.part(db, index));
    }
    payload.extend_from_slice(Streamed::tail());
    (snapshot.offset, payload)
}

/// A snapshot sent as it is encoded: its declared length, then the magic, each shard's
/// records, the end marker. Full syncs run one at a time (a shard holds one pending
/// copy); a sync that ends early drops the copies it did not make ([`Streamed::abandon`]).
pub struct Streamed {
    job: std::sync::Arc<SnapshotJob>,
    shards: usize,
    /// The replication offset the snapshot is at.
    pub offset: u64,
    /// Bytes of the whole payload.
    pub len: usize,
}

impl Streamed {
    /// Marks every shard at the log's current offset and measures the payload.
    pub fn start(db: &Db, log: &ReplLog) -> Streamed {
        let shards = db.shard_count();
        let job = std::sync::Arc::new(SnapshotJob::new(shards));
        let offset = {
            let mut held = db.lock_all();
            log.activate();
            for shard in held.iter_mut().flatten() {
                shard.snapshot = Some(job.clone());
            }
            log.offset()
        };
        let mut len = MAGIC.len() + 1;
        for index in 0..shards {
            // under the shard's lock: either its copy is still pending (its entries are
            // the snapshot's) or a writer made it
            let shard = db.lock(index);
            len += shard
                .pending_snapshot_len()
                .or_else(|| job.part_len(index))
                .unwrap_or(0);
        }
        Streamed {
            job,
            shards,
            offset,
            len,
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The bytes before the first shard's records.
    pub fn head() -> &'static [u8] {
        MAGIC
    }

    /// Shard `index`'s records: copied now unless a writer copied them first.
    pub fn part(&self, db: &Db, index: usize) -> Vec<u8> {
        db.lock(index).preserve();
        self.job.take_part(index)
    }

    /// The bytes after the last shard's records.
    pub fn tail() -> &'static [u8] {
        &[END]
    }

    /// Ends the snapshot early: shards from `from` on forget their pending copies.
    pub fn abandon(&self, db: &Db, from: usize) {
        for index in from..self.shards {
            db.lock(index).abandon_snapshot();
            drop(self.job.take_part(index));
        }
    }
}

/// Size of the chunks a received snapshot is kept in.
pub const CHUNK: usize = 1024 * 1024;

/// A snapshot as it arrives from the primary, in chunks of [`CHUNK`] bytes, each
/// allocated when the previous one is full and never larger than the bytes still
/// expected: it holds what arrived plus one chunk at most, whatever length the
/// primary declared. Never reallocated, so nothing is copied as it grows.
#[derive(Debug, Default)]
pub struct Received {
    chunks: Vec<Vec<u8>>,
    total: usize,
}

impl Received {
    /// An empty buffer for a snapshot of `total` declared bytes.
    pub fn new(total: usize) -> Self {
        Received {
            chunks: Vec::new(),
            total,
        }
    }

    /// A whole snapshot (tests, and the primary's own payload).
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut received = Received::new(bytes.len());
        received.extend(bytes);
        received
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes still expected.
    pub fn missing(&self) -> usize {
        self.total - self.len()
    }

    /// The chunk the next bytes go to, with room for at most the missing bytes; the
    /// caller appends at most [`Received::room`] bytes to it.
    pub fn tail(&mut self) -> &mut Vec<u8> {
        let missing = self.missing();
        if self.chunks.last().is_none_or(|last| last.len() >= CHUNK) {
            self.chunks.push(Vec::with_capacity(missing.min(CHUNK)));
        }
        let last = self.chunks.len() - 1;
        &mut self.chunks[last]
    }

    /// How many bytes may be appended to [`Received::tail`] now.
    pub fn room(&self) -> usize {
        let in_chunk = self.chunks.last().map_or(CHUNK, |last| {
            if last.len() >= CHUNK {
                CHUNK
            } else {
                CHUNK - last.len()
            }
        });
        in_chunk.min(self.missing())
    }

    /// Appends the start of `bytes`, up to the declared length; returns how many.
    pub fn extend(&mut self, mut bytes: &[u8]) -> usize {
        let mut taken = 0;
        while !bytes.is_empty() && self.missing() > 0 {
            let room = self.room();
            let (head, rest) = bytes.split_at(room.min(bytes.len()));
            self.tail().extend_from_slice(head);
            taken += head.len();
            bytes = rest;
        }
        taken
    }

    /// `len` bytes at `at`, borrowed unless they straddle two chunks.
    fn get(&self, at: usize, len: usize) -> Option<Cow<'_, [u8]>> {
        let end = at.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        let (first, offset) = (at / CHUNK, at % CHUNK);
        let chunk = self.chunks.get(first)?;
        if offset + len <= chunk.len() {
            return Some(Cow::Borrowed(&chunk[offset..offset + len]));
        }
        let mut owned = Vec::with_capacity(len);
        let mut position = at;
        while position < end {
            let chunk = self.chunks.get(position / CHUNK)?;
            let offset = position % CHUNK;
            let take = (end - position).min(chunk.len() - offset);
            owned.extend_from_slice(&chunk[offset..offset + take]);
            position += take;
        }
        Some(Cow::Owned(owned))
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let bytes = self.get(at, 4)?;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64_at(&self, at: usize) -> Option<u64> {
        let bytes = self.get(at, 8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(&bytes);
        Some(u64::from_le_bytes(array))
    }
}

/// Where a [`Scanner`] is in the record grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Magic,
    Type,
    Key {
        kind: u8,
    },
    Expire {
        kind: u8,
    },
    StrValue,
    HashCount,
    /// `left` field/value pairs still to come, the current one included.
    Field {
        left: u32,
    },
    FieldValue {
        left: u32,
    },
    End,
}

/// Checks a snapshot as its bytes arrive, without copying or allocating: a flat
/// state machine (no recursion) that resumes where the previous call stopped.
///
/// Every length and count is checked against the bytes the snapshot declared it has
/// left as soon as its prefix arrived, so a record claiming gigabytes fails at once
/// instead of after the primary sent (or failed to send) them.
#[derive(Debug)]
pub struct Scanner {
    /// Largest single key, field or value (proto-max-bulk-len).
    max_len: usize,
    /// Bytes checked so far: always at a record element boundary.
    pos: usize,
    step: Step,
    records: usize,
}

fn corrupt(at: usize, detail: String) -> SyncError {
    SyncError::SnapshotCorrupt {
        at: at as u64,
        detail,
    }
}

impl Scanner {
    pub fn new(max_len: usize) -> Self {
        Scanner {
            max_len,
            pos: 0,
            step: Step::Magic,
            records: 0,
        }
    }

    /// Records (keys) checked so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Checks what arrived of `data` since the previous call. Ok(true) once the end
    /// marker was seen exactly at the declared length; Ok(false) while more bytes are
    /// needed; an error as soon as the arrived bytes break the format.
    pub fn scan(&mut self, data: &Received) -> Result<bool, SyncError> {
        let (total, arrived) = (data.total, data.len());
        loop {
            let at = self.pos;
            // bytes the current element needs before the scanner can step past it
            let need = match self.step {
                Step::End => return Ok(true),
                Step::Magic => MAGIC.len(),
                Step::Type => 1,
                Step::Expire { .. } => 8,
                Step::HashCount => 4,
                Step::Key { .. }
                | Step::StrValue
                | Step::Field { .. }
                | Step::FieldValue { .. } => match data.u32_at(at) {
                    Some(len) => {
                        let len = len as usize;
                        if len > self.max_len {
                            return Err(corrupt(
                                at,
                                format!("length {len} exceeds the {} byte limit", self.max_len),
                            ));
                        }
                        4 + len
                    }
                    None => 4,
                },
            };
            if need > total - at {
                return Err(corrupt(
                    at,
                    format!(
                        "element of {need} bytes runs past the declared end ({} bytes left)",
                        total - at
                    ),
                ));
            }
            if need > arrived - at {
                return Ok(false);
            }
            self.step = match self.step {
                Step::Magic if data.get(at, need).as_deref() == Some(MAGIC) => Step::Type,
                Step::Magic => return Err(corrupt(at, "no MRDSNAP1 magic".into())),
                Step::Type => match data.get(at, 1).map_or(END, |kind| kind[0]) {
                    END if at + 1 == total => Step::End,
                    END => {
                        return Err(corrupt(
                            at,
                            format!(
                                "end marker {} bytes before the declared end",
                                total - at - 1
                            ),
                        ));
                    }
                    kind @ (TYPE_STRING | TYPE_HASH) => Step::Key { kind },
                    other => return Err(corrupt(at, format!("unknown record type 0x{other:02x}"))),
                },
                Step::Key { kind } => Step::Expire { kind },
                Step::Expire { kind: TYPE_STRING } => Step::StrValue,
                Step::Expire { .. } => Step::HashCount,
                Step::StrValue => {
                    self.records += 1;
                    Step::Type
                }
                Step::HashCount => {
                    let count = data.u32_at(at).unwrap_or(0);
                    // each pair takes at least its two length prefixes
                    let left = total - at - 4;
                    if count == 0 || count as usize > left / 8 {
                        return Err(corrupt(
                            at,
                            format!("hash of {count} fields cannot fit in the {left} bytes left"),
                        ));
                    }
                    Step::Field { left: count }
                }
                Step::Field { left } => Step::FieldValue { left },
                Step::FieldValue { left: 1 } => {
                    self.records += 1;
                    Step::Type
                }
                Step::FieldValue { left } => Step::Field { left: left - 1 },
                Step::End => return Ok(true),
            };
            self.pos = at + need;
        }
    }
}

/// Reads the records of a snapshot a [`Scanner`] accepted whole.
struct Reader<'a> {
    data: &'a Received,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<Cow<'a, [u8]>> {
        let data: &'a Received = self.data;
        let bytes = data.get(self.pos, len)?;
        self.pos += len;
        Some(bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        let value = self.data.u32_at(self.pos)?;
        self.pos += 4;
        Some(value)
    }

    fn u64(&mut self) -> Option<u64> {
        let value = self.data.u64_at(self.pos)?;
        self.pos += 8;
        Some(value)
    }

    fn bytes(&mut self) -> Option<Cow<'a, [u8]>> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Replaces the content of `db` with the snapshot; returns the key count.
///
/// The whole payload is checked first (again, if the receiver already did): a broken
/// snapshot leaves `db` untouched.
pub fn load(db: &Db, payload: &Received, max_len: usize) -> Result<usize, SyncError> {
    let mut scanner = Scanner::new(max_len);
    if !scanner.scan(payload)? {
        return Err(corrupt(payload.len(), "no end marker".into()));
    }
    db.flush();
    let mut access = Access::direct(db);
    let mut reader = Reader {
        data: payload,
        pos: MAGIC.len(),
    };
    let mut loaded = 0;
    // checked above: every read below succeeds; a None would only end the load early
    while let Some(kind) = reader.take(1).map(|kind| kind[0]) {
        if kind == END {
            break;
        }
        let Some(key) = reader.bytes() else { break };
        let Some(expire_at) = reader.u64() else { break };
        let value = if kind == TYPE_STRING {
            let Some(bytes) = reader.bytes() else { break };
            Value::Str(bytes.into_owned())
        } else {
            let mut hash = HashValue::default();
            for _ in 0..reader.u32().unwrap_or(0) {
                let (Some(field), Some(value)) = (reader.bytes(), reader.bytes()) else {
                    break;
                };
                hash.insert(&field, &value);
            }
            Value::Hash(Box::new(hash))
        };
        access.with_key(&key, |shard, slot| {
            shard.insert(&key, slot, value, expire_at)
        });
        loaded += 1;
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Policy;
    use proptest::prelude::*;

    const MAX_LEN: usize = 512 * 1024 * 1024;

    fn string_record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut record = vec![TYPE_STRING];
        put_bytes(&mut record, key);
        record.extend_from_slice(&0u64.to_le_bytes());
        put_bytes(&mut record, value);
        record
    }

    fn snapshot(records: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = MAGIC.to_vec();
        for record in records {
            payload.extend_from_slice(record);
        }
        payload.push(END);
        payload
    }

    fn db_with_keys(count: usize) -> Db {
        let db = Db::new(4, 0, Policy::Sieve);
        let mut access = Access::direct(&db);
        for index in 0..count {
            let key = format!("own{index}");
            access.with_key(key.as_bytes(), |shard, slot| {
                shard.insert(key.as_bytes(), slot, Value::Str(b"v".to_vec()), 0)
            });
        }
        db
    }

    #[test]
    fn snapshot_round_trips() {
        let source = Db::new(4, 0, Policy::Sieve);
        let mut access = Access::direct(&source);
        for index in 0..200 {
            let key = format!("k{index}");
            let value = if index % 3 == 0 {
                let mut hash = HashValue::default();
                hash.insert(b"f", key.as_bytes());
                Value::Hash(Box::new(hash))
            } else {
                Value::Str(key.as_bytes().to_vec())
            };
            access.with_key(key.as_bytes(), |shard, slot| {
                shard.insert(key.as_bytes(), slot, value, index)
            });
        }
        let (offset, payload) = take(&source, &ReplLog::new(1024));
        assert_eq!(offset, 0);
        let target = Db::new(8, 0, Policy::Sieve);
        let received = Received::from_slice(&payload);
        assert_eq!(load(&target, &received, MAX_LEN).ok(), Some(200));
        assert_eq!(target.len(), 200);

        // byte by byte: done only at the last byte
        let mut scanner = Scanner::new(MAX_LEN);
        let mut partial = Received::new(payload.len());
        for (index, byte) in payload.iter().enumerate() {
            assert_eq!(partial.extend(&[*byte]), 1);
            let done = scanner.scan(&partial).expect("valid prefix");
            assert_eq!(done, index + 1 == payload.len());
        }
        assert_eq!(scanner.records(), 200);
    }

    fn mixed_db(keys: usize) -> Db {
        let db = Db::new(4, 0, Policy::Sieve);
        let mut access = Access::direct(&db);
        for index in 0..keys {
            let key = format!("k{index}");
            let value = if index % 3 == 0 {
                let mut hash = HashValue::default();
                hash.insert(b"field", key.as_bytes());
                hash.insert(b"other", b"value");
                Value::Hash(Box::new(hash))
            } else {
                Value::Str(key.repeat(index % 7 + 1).into_bytes())
            };
            access.with_key(key.as_bytes(), |shard, slot| {
                shard.insert(key.as_bytes(), slot, value, index as u64)
            });
        }
        db
    }

    /// Streamed: the declared length is the bytes sent, and the snapshot is the data as
    /// it was when it started, though writes change every shard while it is sent.
    #[test]
    fn a_streamed_snapshot_is_the_data_when_it_started() {
        let db = mixed_db(300);
        let (_, whole) = take(&mixed_db(300), &ReplLog::new(1024));
        let snapshot = Streamed::start(&db, &ReplLog::new(1024));
        let mut sent = Streamed::head().to_vec();
        for index in 0..snapshot.shards() {
            // a writer touches every shard not sent yet: it copies it first
            let mut access = Access::direct(&db);
            for key in 0..300 {
                let key = format!("k{key}");
                access.with_key(key.as_bytes(), |shard, slot| {
                    shard.insert(key.as_bytes(), slot, Value::Str(b"new".to_vec()), 0)
                });
            }
            sent.extend_from_slice(&snapshot.part(&db, index));
        }
        sent.extend_from_slice(Streamed::tail());
        assert_eq!(sent.len(), snapshot.len, "declared length");
        assert_eq!(
            sent, whole,
            "the same bytes as a snapshot of the untouched data"
        );
        let target = Db::new(8, 0, Policy::Sieve);
        assert_eq!(
            load(&target, &Received::from_slice(&sent), MAX_LEN).ok(),
            Some(300)
        );
    }

    /// A streamed snapshot ended early leaves no shard with a pending copy.
    #[test]
    fn an_abandoned_snapshot_leaves_no_pending_copy() {
        let db = mixed_db(50);
        let snapshot = Streamed::start(&db, &ReplLog::new(1024));
        let _first = snapshot.part(&db, 0);
        snapshot.abandon(&db, 1);
        for index in 0..db.shard_count() {
            assert_eq!(db.lock(index).pending_snapshot_len(), None, "shard {index}");
        }
    }

    #[test]
    fn records_straddling_chunks_load() {
        let big = vec![7u8; CHUNK + 100];
        let payload = snapshot(&[
            string_record(b"first", &big),
            string_record(b"second", b"small"),
        ]);
        let received = Received::from_slice(&payload);
        assert_eq!(received.len(), payload.len());
        let db = Db::new(4, 0, Policy::Sieve);
        assert_eq!(load(&db, &received, MAX_LEN).ok(), Some(2));
        let mut access = Access::direct(&db);
        let stored = access.with_key(b"first", |shard, _| {
            match shard.peek(b"first").map(|entry| entry.value()) {
                Some(ValueRef::Str(bytes)) => bytes.to_vec(),
                _ => Vec::new(),
            }
        });
        assert_eq!(stored, big);
    }

    /// Every kind of broken snapshot fails before the store is flushed.
    #[test]
    fn a_broken_snapshot_leaves_the_data_alone() {
        let valid = snapshot(&[string_record(b"k", b"v")]);
        let mut huge_key = MAGIC.to_vec();
        huge_key.push(TYPE_STRING);
        huge_key.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut huge_count = MAGIC.to_vec();
        huge_count.push(TYPE_HASH);
        put_bytes(&mut huge_count, b"h");
        huge_count.extend_from_slice(&0u64.to_le_bytes());
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        huge_count.extend_from_slice(&[0; 64]);
        huge_count.push(END);
        let mut empty_hash = MAGIC.to_vec();
        empty_hash.push(TYPE_HASH);
        put_bytes(&mut empty_hash, b"h");
        empty_hash.extend_from_slice(&0u64.to_le_bytes());
        empty_hash.extend_from_slice(&0u32.to_le_bytes());
        empty_hash.push(END);
        let mut garbage_type = valid.clone();
        garbage_type[MAGIC.len()] = 7;
        let mut early_end = valid.clone();
        early_end.insert(MAGIC.len(), END);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", valid[..valid.len() - 3].to_vec()),
            ("no end marker", valid[..valid.len() - 1].to_vec()),
            ("no magic", b"MRDSNAP2\xff".to_vec()),
            ("empty", Vec::new()),
            ("huge key length", huge_key),
            ("huge hash count", huge_count),
            ("empty hash", empty_hash),
            ("garbage type", garbage_type),
            ("end marker early", early_end),
        ];
        let db = db_with_keys(50);
        for (name, payload) in cases {
            let result = load(&db, &Received::from_slice(&payload), MAX_LEN);
            assert!(
                matches!(result, Err(SyncError::SnapshotCorrupt { .. })),
                "{name}: {result:?}"
            );
            assert_eq!(db.len(), 50, "{name}");
        }
    }

    /// A declared length of gigabytes costs nothing until bytes arrive, and a record
    /// claiming more than is left fails as soon as its length prefix arrived.
    #[test]
    fn lengths_fail_as_soon_as_their_prefix_arrived() {
        let declared = 40usize << 30;
        let mut huge_value = MAGIC.to_vec();
        huge_value.push(TYPE_STRING);
        put_bytes(&mut huge_value, b"k");
        huge_value.extend_from_slice(&0u64.to_le_bytes());
        huge_value.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut received = Received::new(declared);
        received.extend(&huge_value);
        let mut scanner = Scanner::new(MAX_LEN);
        let error = scanner
            .scan(&received)
            .expect_err("value over the bulk limit");
        assert!(error.to_string().contains("exceeds"), "{error}");

        let mut garbage = MAGIC.to_vec();
        garbage.push(0x42);
        let mut received = Received::new(declared);
        received.extend(&garbage);
        assert!(Scanner::new(MAX_LEN).scan(&received).is_err());

        // a valid prefix waits for more, holding what arrived plus one chunk at most
        let mut received = Received::new(declared);
        received.extend(MAGIC);
        received.extend(&string_record(b"k", b"v"));
        assert_eq!(Scanner::new(MAX_LEN).scan(&received).ok(), Some(false));
        assert!(received.chunks.iter().map(Vec::capacity).sum::<usize>() <= CHUNK);
        assert_eq!(received.missing(), declared - received.len());

        // within the bulk limit but past the declared end
        let mut short = MAGIC.to_vec();
        short.push(TYPE_STRING);
        short.extend_from_slice(&1000u32.to_le_bytes());
        let mut received = Received::new(short.len() + 10);
        received.extend(&short);
        let error = Scanner::new(MAX_LEN)
            .scan(&received)
            .expect_err("past the end");
        assert!(error.to_string().contains("runs past"), "{error}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_flush(bytes in proptest::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
            let mut payload = if magic { MAGIC.to_vec() } else { Vec::new() };
            payload.extend_from_slice(&bytes);
            let db = db_with_keys(3);
            let received = Received::from_slice(&payload);
            if load(&db, &received, MAX_LEN).is_err() {
                prop_assert_eq!(db.len(), 3);
            }
        }

        #[test]
        fn mutated_snapshots_load_or_fail_cleanly(position in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut hash = vec![TYPE_HASH];
            put_bytes(&mut hash, b"h");
            hash.extend_from_slice(&0u64.to_le_bytes());
            hash.extend_from_slice(&2u32.to_le_bytes());
            for part in [b"f1", b"v1", b"f2", b"v2"] {
                put_bytes(&mut hash, part);
            }
            let mut payload = snapshot(&[string_record(b"a", b"1"), hash, string_record(b"b", b"22")]);
            let at = position.index(payload.len());
            payload[at] = byte;
            payload.truncate(cut.index(payload.len() + 1).max(1));
            let db = db_with_keys(3);
            // split in two arrivals: the resumed scan must agree with a whole one
            let mut scanner = Scanner::new(MAX_LEN);
            let mut received = Received::new(payload.len());
            received.extend(&payload[..payload.len() / 2]);
            let first = scanner.scan(&received);
            received.extend(&payload[payload.len() / 2..]);
            let resumed = first.and_then(|_| scanner.scan(&received));
            let whole = load(&db, &received, MAX_LEN);
            prop_assert_eq!(resumed.is_ok(), whole.is_ok());
            if whole.is_err() {
                prop_assert_eq!(db.len(), 3);
            }
        }
    }
}
