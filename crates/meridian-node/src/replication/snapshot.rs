//! The full-sync snapshot: Meridian's own compact format (not RDB).
//!
//! `MRDSNAP1`, then records `type:u8 key_len:u32 key expire_at:u64 value`,
//! where a string value is `len:u32 bytes`, a hash is `count:u32` pairs of
//! `len:u32 bytes`, a list or a set `count:u32` elements of `len:u32 bytes`, a sorted
//! set `count:u32` elements of `len:u32 score:f64 member`; 0xFF ends the stream.
//! Integers and scores are little-endian.
//!
//! After the keys, the write-behind queue at the snapshot's offset (records of type
//! 0x10, `key_len:u32 key version:u64 len:u32 op`, where op is `P` and the value or
//! `D`): a replica full-synced while writes wait for the origin keeps them pending.
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

use parking_lot::Mutex;

use super::backlog::ReplLog;
use crate::error::SyncError;
use crate::origin::write_behind::{PendingOp, PendingWrite, WriteBehind};
use crate::store::entry::Entry;
use crate::store::{
    Access, Db, HashValue, ListValue, SetValue, SnapshotSink, Value, ValueRef, ZSetValue,
};

const MAGIC: &[u8] = b"MRDSNAP1";
const TYPE_STRING: u8 = 0;
const TYPE_HASH: u8 = 1;
const TYPE_LIST: u8 = 2;
const TYPE_SET: u8 = 3;
const TYPE_ZSET: u8 = 4;
/// A write-behind write not at the origin yet (not a key).
const TYPE_PENDING_WRITE: u8 = 0x10;
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
        ValueRef::List(list) => 4 + list.iter().map(|item| 4 + item.len()).sum::<usize>(),
        ValueRef::Set(set) => 4 + set.iter().map(|member| 4 + member.len()).sum::<usize>(),
        ValueRef::ZSet(zset) => {
            4 + zset
                .iter()
                .map(|(member, _)| 12 + member.len())
                .sum::<usize>()
        }
    }
}

fn encode_entry(buf: &mut Vec<u8>, entry: &Entry) {
    let value = entry.value();
    buf.push(match value {
        ValueRef::Str(_) => TYPE_STRING,
        ValueRef::Hash(_) => TYPE_HASH,
        ValueRef::List(_) => TYPE_LIST,
        ValueRef::Set(_) => TYPE_SET,
        ValueRef::ZSet(_) => TYPE_ZSET,
    });
    put_bytes(buf, entry.key());
    buf.extend_from_slice(&entry.expire_at().to_le_bytes());
    match value {
        ValueRef::Str(bytes) => put_bytes(buf, bytes),
        ValueRef::Hash(hash) => {
            buf.extend_from_slice(&(hash.len() as u32).to_le_bytes());
            for (field, value) in hash.iter() {
                put_bytes(buf, field);
                put_bytes(buf, value);
            }
        }
        ValueRef::List(list) => put_elements(buf, list.len(), list.iter()),
        ValueRef::Set(set) => put_elements(buf, set.len(), set.iter()),
        ValueRef::ZSet(zset) => {
            buf.extend_from_slice(&(zset.len() as u32).to_le_bytes());
            for (member, score) in zset.iter() {
                buf.extend_from_slice(&((8 + member.len()) as u32).to_le_bytes());
                buf.extend_from_slice(&score.to_le_bytes());
                buf.extend_from_slice(member);
            }
        }
    }
}

/// A sorted set element's score (8 bytes, little-endian) and member; None when it is
/// too short or the score is NaN.
pub fn split_scored(element: &[u8]) -> Option<(f64, &[u8])> {
    let (score, member) = element.split_first_chunk::<8>()?;
    let score = f64::from_le_bytes(*score);
    (!score.is_nan()).then_some((score, member))
}

/// A list's or a set's elements: their count, then each.
fn put_elements<'e>(buf: &mut Vec<u8>, count: usize, elements: impl Iterator<Item = &'e [u8]>) {
    buf.extend_from_slice(&(count as u32).to_le_bytes());
    for element in elements {
        put_bytes(buf, element);
    }
}

/// Takes a consistent snapshot of `db` at the offset of `log` current when
/// every shard was marked; returns (offset, payload).
pub fn take(db: &Db, log: &ReplLog, queue: Option<&WriteBehind>) -> (u64, Vec<u8>) {
    let snapshot = Streamed::start(db, log, queue);
    let mut payload = Vec::with_capacity(snapshot.len);
    payload.extend_from_slice(Streamed::head());
    for index in 0..snapshot.shards() {
        payload.extend_from_slice(&snapshot.part(db, index));
    }
    payload.extend_from_slice(&snapshot.tail());
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
    /// The write-behind queue's records, sent after the keys.
    pending_writes: Vec<u8>,
}

fn encode_pending_write(buf: &mut Vec<u8>, write: &PendingWrite) {
    buf.push(TYPE_PENDING_WRITE);
    put_bytes(buf, &write.key);
    buf.extend_from_slice(&write.version.to_le_bytes());
    match &write.op {
        PendingOp::Put(value) => {
            buf.extend_from_slice(&(value.len() as u32 + 1).to_le_bytes());
            buf.push(b'P');
            buf.extend_from_slice(value);
        }
        PendingOp::Delete => {
            buf.extend_from_slice(&1u32.to_le_bytes());
            buf.push(b'D');
        }
    }
}

impl Streamed {
    /// Marks every shard at the log's current offset and measures the payload.
    pub fn start(db: &Db, log: &ReplLog, queue: Option<&WriteBehind>) -> Streamed {
        let shards = db.shard_count();
        let job = std::sync::Arc::new(SnapshotJob::new(shards));
        let (offset, pending) = {
            let mut held = db.lock_all();
            log.activate();
            for shard in held.shards() {
                shard.snapshot = Some(job.clone());
            }
            // writes are queued under their shard lock: the queue is the offset's too
            // (a flush acknowledged after it is in the stream, applied by version)
            (
                log.offset(),
                queue.map(WriteBehind::pending).unwrap_or_default(),
            )
        };
        let mut pending_writes = Vec::new();
        for write in &pending {
            encode_pending_write(&mut pending_writes, write);
        }
        let mut len = MAGIC.len() + 1 + pending_writes.len();
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
            pending_writes,
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

    /// The bytes after the last shard's records: the write-behind queue, the end.
    pub fn tail(&self) -> Vec<u8> {
        let mut tail = self.pending_writes.clone();
        tail.push(END);
        tail
    }

    /// Ends the snapshot early: shards from `from` on forget their pending copies.
    pub fn abandon(&self, db: &Db, from: usize) {
        for index in from..self.shards {
            db.lock(index).abandon_snapshot();
            drop(self.job.take_part(index));
        }
    }
}

/// Where a [`Loader`] is in the record grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Magic,
    Type,
    Key,
    Expire,
    StrValue,
    HashCount,
    /// A field name; `left` field/value pairs still to come, this one included.
    Field {
        left: u32,
    },
    FieldValue {
        left: u32,
    },
    /// A list's or a set's element count.
    ListCount,
    /// A list element; `left` elements still to come, this one included.
    Item {
        left: u32,
    },
    End,
}

fn corrupt(at: usize, detail: String) -> SyncError {
    SyncError::SnapshotCorrupt {
        at: at as u64,
        detail,
    }
}

fn u32_le(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Loads a snapshot as its bytes arrive: a flat state machine (no recursion) that
/// checks each element as soon as its bytes (or its length prefix) arrived and puts
/// each complete record into a store of its own, which replaces the node's keys only
/// once the whole snapshot arrived and checked out ([`Loader::finish`]). The node keeps
/// serving its old keys meanwhile, a broken snapshot leaves them untouched, and the
/// received bytes are never held whole: only the element being received waits in a
/// buffer, so a replica's peak is its old keys plus the new ones.
///
/// Every length and count is checked against the bytes the snapshot declared it has
/// left as soon as its prefix arrived, so a record claiming gigabytes fails at once
/// instead of after the primary sent (or failed to send) them.
pub struct Loader {
    /// Where the records go until the snapshot is complete.
    staged: Db,
    /// Received bytes not consumed yet: the start of the element being received.
    pending: Vec<u8>,
    /// Snapshot position of `pending[0]`: bytes checked and consumed before it.
    consumed: usize,
    /// Declared length of the snapshot.
    total: usize,
    /// Largest single key, field or value (proto-max-bulk-len).
    max_len: usize,
    step: Step,
    kind: u8,
    key: Vec<u8>,
    expire_at: u64,
    hash: HashValue,
    field: Vec<u8>,
    list: ListValue,
    set: SetValue,
    zset: ZSetValue,
    records: usize,
    pending_writes: Vec<PendingWrite>,
}

impl Loader {
    /// A loader for a snapshot of `total` declared bytes, for a store like `db`
    /// (same shard count and eviction policy).
    pub fn new(db: &Db, total: usize, max_len: usize) -> Self {
        Loader {
            staged: Db::new(db.shard_count(), 0, db.policy()),
            pending: Vec::new(),
            consumed: 0,
            total,
            max_len,
            step: Step::Magic,
            kind: TYPE_STRING,
            key: Vec::new(),
            expire_at: 0,
            hash: HashValue::default(),
            field: Vec::new(),
            list: ListValue::default(),
            set: SetValue::default(),
            zset: ZSetValue::default(),
            records: 0,
            pending_writes: Vec::new(),
        }
    }

    /// Bytes still expected.
    pub fn missing(&self) -> usize {
        self.total - self.consumed - self.pending.len()
    }

    /// Records (keys) loaded so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// True once the end marker arrived exactly at the declared length.
    pub fn done(&self) -> bool {
        self.step == Step::End
    }

    /// Takes the start of `bytes`, up to the declared length, and loads every record
    /// they complete; returns how many bytes it took. An error as soon as the arrived
    /// bytes break the format.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, SyncError> {
        let taken = bytes.len().min(self.missing());
        self.pending.extend_from_slice(&bytes[..taken]);
        let mut at = 0;
        let result = self.advance(&mut at);
        self.pending.drain(..at);
        self.consumed += at;
        result.map(|()| taken)
    }

    /// Steps past every element complete in `pending` from `*at` on.
    fn advance(&mut self, at: &mut usize) -> Result<(), SyncError> {
        loop {
            let available = &self.pending[*at..];
            let position = self.consumed + *at;
            let left = self.total - position;
            // bytes the current element needs before the loader can step past it
            let need = match self.step {
                Step::End => return Ok(()),
                Step::Magic => MAGIC.len(),
                Step::Type => 1,
                Step::Expire => 8,
                Step::HashCount | Step::ListCount => 4,
                Step::Key
                | Step::StrValue
                | Step::Field { .. }
                | Step::FieldValue { .. }
                | Step::Item { .. } => {
                    if available.len() < 4 {
                        4
                    } else {
                        let len = u32_le(available) as usize;
                        if len > self.max_len {
                            return Err(corrupt(
                                position,
                                format!("length {len} exceeds the {} byte limit", self.max_len),
                            ));
                        }
                        4 + len
                    }
                }
            };
            if need > left {
                return Err(corrupt(
                    position,
                    format!(
                        "element of {need} bytes runs past the declared end ({left} bytes left)"
                    ),
                ));
            }
            if need > available.len() {
                return Ok(());
            }
            let element = &available[..need];
            self.step = match self.step {
                Step::Magic if element == MAGIC => Step::Type,
                Step::Magic => return Err(corrupt(position, "no MRDSNAP1 magic".into())),
                Step::Type => match element[0] {
                    END if left == 1 => Step::End,
                    END => {
                        return Err(corrupt(
                            position,
                            format!("end marker {} bytes before the declared end", left - 1),
                        ));
                    }
                    kind @ (TYPE_STRING | TYPE_HASH | TYPE_LIST | TYPE_SET | TYPE_ZSET
                    | TYPE_PENDING_WRITE) => {
                        self.kind = kind;
                        Step::Key
                    }
                    other => {
                        return Err(corrupt(
                            position,
                            format!("unknown record type 0x{other:02x}"),
                        ));
                    }
                },
                Step::Key => {
                    self.key.clear();
                    self.key.extend_from_slice(&element[4..]);
                    Step::Expire
                }
                Step::Expire => {
                    let mut expire = [0u8; 8];
                    expire.copy_from_slice(element);
                    self.expire_at = u64::from_le_bytes(expire);
                    match self.kind {
                        // a pending write's version takes the expiry's place
                        TYPE_STRING | TYPE_PENDING_WRITE => Step::StrValue,
                        TYPE_HASH => Step::HashCount,
                        _ => Step::ListCount,
                    }
                }
                Step::StrValue if self.kind == TYPE_PENDING_WRITE => {
                    let op = match &element[4..] {
                        [b'D'] => PendingOp::Delete,
                        [b'P', value @ ..] => PendingOp::Put(bytes::Bytes::copy_from_slice(value)),
                        _ => {
                            return Err(corrupt(
                                position,
                                "a pending write without its operation".into(),
                            ));
                        }
                    };
                    self.pending_writes.push(PendingWrite {
                        key: self.key.clone(),
                        version: self.expire_at,
                        op,
                    });
                    Step::Type
                }
                Step::StrValue => {
                    self.store(Value::Str(element[4..].to_vec()));
                    Step::Type
                }
                Step::HashCount => {
                    let count = u32_le(element);
                    // each pair takes at least its two length prefixes
                    let room = left - 4;
                    if count == 0 || count as usize > room / 8 {
                        return Err(corrupt(
                            position,
                            format!("hash of {count} fields cannot fit in the {room} bytes left"),
                        ));
                    }
                    self.hash = HashValue::default();
                    Step::Field { left: count }
                }
                Step::Field { left } => {
                    self.field.clear();
                    self.field.extend_from_slice(&element[4..]);
                    Step::FieldValue { left }
                }
                Step::FieldValue { left } => {
                    self.hash.insert(&self.field, &element[4..]);
                    if left == 1 {
                        let hash = std::mem::take(&mut self.hash);
                        self.store(Value::Hash(Box::new(hash)));
                        Step::Type
                    } else {
                        Step::Field { left: left - 1 }
                    }
                }
                Step::ListCount => {
                    let count = u32_le(element);
                    // each element takes at least its length prefix
                    let room = left - 4;
                    if count == 0 || count as usize > room / 4 {
                        return Err(corrupt(
                            position,
                            format!(
                                "list or set of {count} elements cannot fit in the {room} bytes left"
                            ),
                        ));
                    }
                    self.list = ListValue::default();
                    self.set = SetValue::default();
                    self.zset = ZSetValue::default();
                    Step::Item { left: count }
                }
                // a list's element, a set's member or a sorted set's score and member
                Step::Item { left } => {
                    let element = &element[4..];
                    match self.kind {
                        TYPE_SET => {
                            if !self.set.insert(element) {
                                return Err(corrupt(position, "a set member twice".into()));
                            }
                        }
                        TYPE_ZSET => {
                            let Some((score, member)) = split_scored(element) else {
                                return Err(corrupt(
                                    position,
                                    "a sorted set member without a valid score".into(),
                                ));
                            };
                            if self.zset.insert(member, score).is_some() {
                                return Err(corrupt(position, "a sorted set member twice".into()));
                            }
                        }
                        _ => self.list.push_back(element),
                    }
                    if left == 1 {
                        let value = match self.kind {
                            TYPE_SET => Value::Set(Box::new(std::mem::take(&mut self.set))),
                            TYPE_ZSET => Value::ZSet(Box::new(std::mem::take(&mut self.zset))),
                            _ => Value::List(Box::new(std::mem::take(&mut self.list))),
                        };
                        self.store(value);
                        Step::Type
                    } else {
                        Step::Item { left: left - 1 }
                    }
                }
                Step::End => return Ok(()),
            };
            *at += need;
        }
    }

    fn store(&mut self, value: Value) {
        let (key, expire_at) = (&self.key, self.expire_at);
        Access::direct(&self.staged)
            .with_key(key, |shard, slot| shard.insert(key, slot, value, expire_at));
        self.records += 1;
    }

    /// The write-behind writes the snapshot carried (the primary's queue at its offset).
    pub fn take_pending_writes(&mut self) -> Vec<PendingWrite> {
        std::mem::take(&mut self.pending_writes)
    }

    /// Replaces the keys of `db` with the snapshot's (see [`Db::adopt`]); returns the
    /// key count. Fails, leaving `db` untouched, unless the whole snapshot arrived.
    pub fn finish(self, db: &Db) -> Result<usize, SyncError> {
        if !self.done() {
            return Err(corrupt(
                self.consumed,
                format!(
                    "no end marker ({} of {} bytes arrived)",
                    self.consumed + self.pending.len(),
                    self.total
                ),
            ));
        }
        db.adopt(self.staged);
        Ok(self.records)
    }
}

/// Replaces the content of `db` with a whole snapshot; returns the key count. A
/// broken snapshot leaves `db` untouched.
pub fn load(db: &Db, payload: &[u8], max_len: usize) -> Result<usize, SyncError> {
    let mut loader = Loader::new(db, payload.len(), max_len);
    loader.feed(payload)?;
    loader.finish(db)
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

    fn string_of(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
        Access::direct(db).with_key(key, |shard, _| {
            match shard.peek(key).map(|entry| entry.value()) {
                Some(ValueRef::Str(bytes)) => Some(bytes.to_vec()),
                _ => None,
            }
        })
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
    fn the_write_behind_queue_travels_with_the_snapshot() {
        use crate::origin::write_behind::WriteBehindConfig;
        let config = WriteBehindConfig {
            max_keys: 10,
            flush_interval: std::time::Duration::from_millis(100),
            batch: 10,
        };
        let queue = WriteBehind::new(config);
        let now = std::time::Instant::now();
        queue.enqueue(
            b"put",
            PendingOp::Put(bytes::Bytes::from_static(b"value")),
            now,
        );
        queue.enqueue(b"empty", PendingOp::Put(bytes::Bytes::new()), now);
        queue.enqueue(b"gone", PendingOp::Delete, now);
        let source = db_with_keys(3);
        let (_, payload) = take(&source, &ReplLog::new(1024), Some(&queue));
        let target = Db::new(2, 0, Policy::Sieve);
        let mut loader = Loader::new(&target, payload.len(), MAX_LEN);
        // byte by byte: the records split anywhere
        for byte in &payload {
            assert_eq!(loader.feed(std::slice::from_ref(byte)).ok(), Some(1));
        }
        let mut writes = loader.take_pending_writes();
        assert_eq!(
            loader.finish(&target).ok(),
            Some(3),
            "pending writes are not keys"
        );
        let mut expected = queue.pending();
        writes.sort_by(|a, b| a.key.cmp(&b.key));
        expected.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(writes, expected);
        let replica = WriteBehind::new(config);
        replica.replace_all(writes, now);
        assert_eq!(replica.stats(now).depth, 3);
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
            } else if index % 5 == 0 {
                let mut list = ListValue::default();
                list.push_back(key.as_bytes());
                list.push_back(b"");
                Value::List(Box::new(list))
            } else {
                Value::Str(key.as_bytes().to_vec())
            };
            access.with_key(key.as_bytes(), |shard, slot| {
                shard.insert(key.as_bytes(), slot, value, index)
            });
        }
        let (offset, payload) = take(&source, &ReplLog::new(1024), None);
        assert_eq!(offset, 0);
        let target = Db::new(8, 0, Policy::Sieve);
        assert_eq!(load(&target, &payload, MAX_LEN).ok(), Some(200));
        assert_eq!(target.len(), 200);

        // byte by byte: done only at the last byte, the keys loaded as they arrive, the
        // node's own keys untouched until the end
        let target = db_with_keys(5);
        let mut loader = Loader::new(&target, payload.len(), MAX_LEN);
        for (index, byte) in payload.iter().enumerate() {
            assert_eq!(loader.feed(&[*byte]).expect("valid prefix"), 1);
            assert_eq!(loader.done(), index + 1 == payload.len());
            assert!(
                loader.pending.len() <= 64,
                "holds only the element arriving"
            );
        }
        assert_eq!(loader.records(), 200);
        assert_eq!(target.len(), 5);
        assert_eq!(loader.finish(&target).ok(), Some(200));
        assert_eq!(target.len(), 200);
        assert_eq!(string_of(&target, b"k1"), Some(b"k1".to_vec()));
        assert_eq!(string_of(&target, b"own1"), None);
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
            } else if index % 5 == 0 {
                let mut list = ListValue::default();
                for item in 0..index % 4 + 1 {
                    list.push_back(format!("{key}-{item}").as_bytes());
                }
                Value::List(Box::new(list))
            } else if index % 11 == 0 {
                let mut zset = ZSetValue::default();
                for member in 0..index % 4 + 1 {
                    zset.insert(format!("{key}-{member}").as_bytes(), member as f64 / 3.0);
                }
                Value::ZSet(Box::new(zset))
            } else if index % 7 == 0 {
                let mut set = SetValue::default();
                for member in 0..index % 3 + 1 {
                    set.insert(format!("{key}-{member}").as_bytes());
                }
                Value::Set(Box::new(set))
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
        let (_, whole) = take(&mixed_db(300), &ReplLog::new(1024), None);
        let snapshot = Streamed::start(&db, &ReplLog::new(1024), None);
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
        sent.extend_from_slice(&snapshot.tail());
        assert_eq!(sent.len(), snapshot.len, "declared length");
        assert_eq!(
            sent, whole,
            "the same bytes as a snapshot of the untouched data"
        );
        let target = Db::new(8, 0, Policy::Sieve);
        assert_eq!(load(&target, &sent, MAX_LEN).ok(), Some(300));
    }

    /// A streamed snapshot ended early leaves no shard with a pending copy.
    #[test]
    fn an_abandoned_snapshot_leaves_no_pending_copy() {
        let db = mixed_db(50);
        let snapshot = Streamed::start(&db, &ReplLog::new(1024), None);
        let _first = snapshot.part(&db, 0);
        snapshot.abandon(&db, 1);
        for index in 0..db.shard_count() {
            assert_eq!(db.lock(index).pending_snapshot_len(), None, "shard {index}");
        }
    }

    /// A snapshot split anywhere loads the same keys, with the same accounted memory
    /// as writing them, and an adopted store's memory replaces the old keys'.
    #[test]
    fn a_snapshot_split_anywhere_loads_the_same() {
        let big = vec![7u8; 100_000];
        let payload = snapshot(&[
            string_record(b"first", &big),
            string_record(b"second", b"small"),
        ]);
        for split in [1, 7, 13, 20, 5000, payload.len() - 1] {
            let db = db_with_keys(30);
            let mut loader = Loader::new(&db, payload.len(), MAX_LEN);
            assert_eq!(loader.feed(&payload[..split]).ok(), Some(split));
            assert_eq!(
                loader.feed(&payload[split..]).ok(),
                Some(payload.len() - split)
            );
            assert_eq!(loader.finish(&db).ok(), Some(2));
            assert_eq!(string_of(&db, b"first"), Some(big.clone()), "split {split}");
            assert_eq!(db.len(), 2);
            let written = Db::new(4, 0, Policy::Sieve);
            let mut access = Access::direct(&written);
            for (key, value) in [(&b"first"[..], &big[..]), (b"second", b"small")] {
                access.with_key(key, |shard, slot| {
                    shard.insert(key, slot, Value::Str(value.to_vec()), 0)
                });
            }
            assert_eq!(db.used_memory(), written.used_memory(), "split {split}");
        }
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
            let result = load(&db, &payload, MAX_LEN);
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
        let db = db_with_keys(3);
        let mut loader = Loader::new(&db, declared, MAX_LEN);
        let error = loader
            .feed(&huge_value)
            .expect_err("value over the bulk limit");
        assert!(error.to_string().contains("exceeds"), "{error}");

        let mut garbage = MAGIC.to_vec();
        garbage.push(0x42);
        assert!(Loader::new(&db, declared, MAX_LEN).feed(&garbage).is_err());

        // a valid prefix waits for more, holding only the element arriving
        let mut loader = Loader::new(&db, declared, MAX_LEN);
        let mut prefix = MAGIC.to_vec();
        prefix.extend(&string_record(b"k", b"v"));
        prefix.extend(&string_record(b"key", b"value")[..7]);
        assert_eq!(loader.feed(&prefix).ok(), Some(prefix.len()));
        assert!(!loader.done());
        assert_eq!(loader.records(), 1);
        // the record's type byte was taken; its key's length and first bytes wait
        assert_eq!(loader.pending.len(), 6);
        assert_eq!(loader.missing(), declared - prefix.len());
        assert!(loader.finish(&db).is_err());
        assert_eq!(db.len(), 3);

        // within the bulk limit but past the declared end
        let mut short = MAGIC.to_vec();
        short.push(TYPE_STRING);
        short.extend_from_slice(&1000u32.to_le_bytes());
        let error = Loader::new(&db, short.len() + 10, MAX_LEN)
            .feed(&short)
            .expect_err("past the end");
        assert!(error.to_string().contains("runs past"), "{error}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_flush(bytes in proptest::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
            let mut payload = if magic { MAGIC.to_vec() } else { Vec::new() };
            payload.extend_from_slice(&bytes);
            let db = db_with_keys(3);
            if load(&db, &payload, MAX_LEN).is_err() {
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
            // split in two arrivals: the resumed load must agree with a whole one
            let split = db_with_keys(3);
            let mut loader = Loader::new(&split, payload.len(), MAX_LEN);
            let resumed = loader
                .feed(&payload[..payload.len() / 2])
                .and_then(|_| loader.feed(&payload[payload.len() / 2..]))
                .and_then(|_| loader.finish(&split));
            let whole = load(&db, &payload, MAX_LEN);
            prop_assert_eq!(resumed.as_ref().ok(), whole.as_ref().ok());
            prop_assert_eq!(split.len(), db.len());
            if whole.is_err() {
                prop_assert_eq!(db.len(), 3);
            }
        }
    }
}
