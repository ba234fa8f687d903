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

use parking_lot::Mutex;

use crate::store::entry::Entry;
use crate::store::{Access, Db, HashValue, Value};

const MAGIC: &[u8] = b"MRDSNAP1";
const TYPE_STRING: u8 = 0;
const TYPE_HASH: u8 = 1;
const END: u8 = 0xFF;

/// Per-shard encodings of one snapshot in progress.
pub struct SnapshotJob {
    parts: Mutex<Vec<Option<Vec<u8>>>>,
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

    /// The whole snapshot, once every shard was encoded.
    pub fn finish(&self) -> Vec<u8> {
        let parts = std::mem::take(&mut *self.parts.lock());
        let total: usize = parts.iter().flatten().map(Vec::len).sum();
        let mut payload = Vec::with_capacity(total + MAGIC.len() + 1);
        payload.extend_from_slice(MAGIC);
        for part in parts.into_iter().flatten() {
            payload.extend_from_slice(&part);
        }
        payload.push(END);
        payload
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

fn encode_entry(buf: &mut Vec<u8>, entry: &Entry) {
    match &entry.value {
        Value::Str(bytes) => {
            buf.push(TYPE_STRING);
            put_bytes(buf, &entry.key);
            buf.extend_from_slice(&entry.expire_at.to_le_bytes());
            put_bytes(buf, bytes);
        }
        Value::Hash(hash) => {
            buf.push(TYPE_HASH);
            put_bytes(buf, &entry.key);
            buf.extend_from_slice(&entry.expire_at.to_le_bytes());
            buf.extend_from_slice(&(hash.len() as u32).to_le_bytes());
            for (field, value) in hash.iter() {
                put_bytes(buf, field);
                put_bytes(buf, value);
            }
        }
    }
}

/// Takes a consistent snapshot of `db` at the replication offset current
/// when every shard was marked; returns (offset, payload).
pub fn take(db: &Db) -> (u64, Vec<u8>) {
    let job = std::sync::Arc::new(SnapshotJob::new(db.shard_count()));
    let offset = {
        let mut held = db.lock_all();
        db.repl.activate();
        for shard in held.iter_mut().flatten() {
            shard.snapshot = Some(job.clone());
        }
        db.repl.offset()
    };
    for index in 0..db.shard_count() {
        db.lock(index).preserve();
    }
    (offset, job.finish())
}

#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt;

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], Corrupt> {
        if self.data.len() < len {
            return Err(Corrupt);
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        let bytes = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(array))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Replaces the content of `db` with the snapshot; returns the key count.
pub fn load(db: &Db, payload: &[u8]) -> Result<usize, Corrupt> {
    let mut reader = Reader { data: payload };
    if reader.take(MAGIC.len())? != MAGIC {
        return Err(Corrupt);
    }
    db.flush();
    let mut access = Access::Direct(db);
    let mut loaded = 0;
    loop {
        let kind = reader.take(1)?[0];
        if kind == END {
            return Ok(loaded);
        }
        let key = reader.bytes()?;
        let expire_at = reader.u64()?;
        let value = match kind {
            TYPE_STRING => Value::Str(reader.bytes()?.to_vec()),
            TYPE_HASH => {
                let count = reader.u32()?;
                let mut hash = HashValue::default();
                for _ in 0..count {
                    let field = reader.bytes()?;
                    let value = reader.bytes()?;
                    hash.insert(field, value);
                }
                Value::Hash(Box::new(hash))
            }
            _ => return Err(Corrupt),
        };
        access.with_key(key, |shard, slot| shard.insert(key, slot, value, expire_at));
        loaded += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Policy;

    #[test]
    fn snapshot_round_trips() {
        let source = Db::new(4, 0, Policy::Sieve);
        let mut access = Access::Direct(&source);
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
        let (offset, payload) = take(&source);
        assert_eq!(offset, 0);
        let target = Db::new(8, 0, Policy::Sieve);
        assert_eq!(load(&target, &payload), Ok(200));
        assert_eq!(target.len(), 200);
        assert_eq!(load(&target, &payload[..payload.len() - 3]), Err(Corrupt));
    }
}
