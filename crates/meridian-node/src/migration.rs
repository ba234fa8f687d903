//! Live slot migration: which slots this node is handing over (MIGRATING) or
//! receiving (IMPORTING), the DUMP/RESTORE payload format, and the small
//! async client MIGRATE uses to talk to the destination (its replies go
//! through the bounded decoder of [`crate::protocol::reply`]).
//!
//! Payload format (Meridian's own, not RDB): `type:u8`, the value (a string is
//! `len:u32 bytes`, a hash is `count:u32` pairs of `len:u32 bytes`), then
//! `version:u16` and a CRC-32 (IEEE) of everything before it. Integers are
//! little-endian.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, lookup_host};

use meridian_topology::{Route, TopologyMap, cluster_node_id};

use crate::error::CommandError;
use crate::net::Stream;
use crate::protocol::{Decoded, Reply, ReplyLimits, parse_reply};
use crate::replication::backlog::encode_command;
use crate::replication::snapshot::split_scored;
use crate::store::{HashValue, ListValue, SetValue, Value, ValueRef, ZSetValue};
use crate::tls::ClientTls;

const TYPE_STRING: u8 = 0;
const TYPE_HASH: u8 = 1;
const TYPE_LIST: u8 = 2;
const TYPE_SET: u8 = 3;
const TYPE_ZSET: u8 = 4;
const PAYLOAD_VERSION: u16 = 1;

/// Slots in transit, keyed by slot, valued by the 40-hex id of the peer node.
#[derive(Debug, Default, Clone)]
pub struct SlotMigrations {
    pub migrating: HashMap<u16, String>,
    pub importing: HashMap<u16, String>,
    /// Slots a `MERIDIAN.MIGRATE SLOT` is moving right now, with how many run. A map
    /// does not settle them: their keys stay until their batch moved them.
    pub moving: HashMap<u16, usize>,
}

/// [`SlotMigrations`] behind a lock, with a flag for the check every command routed to a
/// local slot makes (is it MIGRATING?): while no slot is, which is nearly always, that is
/// one load instead of a lock every I/O thread takes in turn.
#[derive(Debug, Default)]
pub struct Migrations {
    state: RwLock<SlotMigrations>,
    /// `state.migrating` is not empty; written under the write lock.
    any_migrating: AtomicBool,
}

impl Migrations {
    pub fn read(&self) -> RwLockReadGuard<'_, SlotMigrations> {
        self.state.read()
    }

    pub fn write(&self) -> MigrationsWrite<'_> {
        MigrationsWrite {
            state: self.state.write(),
            any_migrating: &self.any_migrating,
        }
    }

    /// False when no slot is MIGRATING; true may still not be the slot asked about.
    pub fn any_migrating(&self) -> bool {
        self.any_migrating.load(Ordering::Acquire)
    }
}

/// The write lock of [`Migrations`]; sets its flag before the lock is released.
pub struct MigrationsWrite<'a> {
    state: RwLockWriteGuard<'a, SlotMigrations>,
    any_migrating: &'a AtomicBool,
}

impl Deref for MigrationsWrite<'_> {
    type Target = SlotMigrations;

    fn deref(&self) -> &SlotMigrations {
        &self.state
    }
}

impl DerefMut for MigrationsWrite<'_> {
    fn deref_mut(&mut self) -> &mut SlotMigrations {
        &mut self.state
    }
}

impl Drop for MigrationsWrite<'_> {
    fn drop(&mut self) {
        self.any_migrating
            .store(!self.state.migrating.is_empty(), Ordering::Release);
    }
}

impl SlotMigrations {
    /// Drops the states a new map settles: a MIGRATING slot ends when this
    /// node no longer owns it, an IMPORTING slot when it does.
    pub fn settle(&mut self, map: &TopologyMap, me: &str) {
        let owns = |slot: u16| matches!(map.route(slot, me, false), Route::Local);
        self.migrating.retain(|&slot, _| owns(slot));
        self.importing.retain(|&slot, _| !owns(slot));
    }
}

/// Keys a MIGRATE (or `MERIDIAN.MIGRATE SLOT`) batch has in flight: dumped,
/// sent, and not yet settled by the source after the destination's answer.
/// Writes to them are refused with TRYAGAIN meanwhile (see
/// `commands::cluster::in_flight_refusal`), so no acknowledged write can be
/// overwritten or deleted by the batch's copy or its tombstone.
#[derive(Debug, Default)]
pub struct InFlight {
    /// How many keys are in flight: writes skip the lookup while it is 0.
    count: AtomicUsize,
    /// Key -> how many running batches carry it.
    keys: Mutex<HashMap<Vec<u8>, usize>>,
}

impl InFlight {
    /// True when any of `keys` is in flight.
    pub fn any<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let in_flight = self.keys.lock();
        keys.into_iter().any(|key| in_flight.contains_key(key))
    }

    /// Marks `keys` in flight until the returned guard is dropped (the batch
    /// settled, failed, or its connection went away). Call it under the keys'
    /// shard locks, so a write sees the mark or the key as it was before.
    pub fn hold(&self, keys: Vec<Vec<u8>>) -> InFlightGuard<'_> {
        if !keys.is_empty() {
            let mut in_flight = self.keys.lock();
            for key in &keys {
                *in_flight.entry(key.clone()).or_default() += 1;
            }
            self.count.fetch_add(keys.len(), Ordering::AcqRel);
        }
        InFlightGuard {
            in_flight: self,
            keys,
        }
    }
}

/// Keys marked in flight by [`InFlight::hold`]; dropping it releases them.
#[must_use]
pub struct InFlightGuard<'a> {
    in_flight: &'a InFlight,
    keys: Vec<Vec<u8>>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut in_flight = self.in_flight.keys.lock();
        for key in &self.keys {
            if let Some(batches) = in_flight.get_mut(key) {
                *batches -= 1;
                if *batches == 0 {
                    in_flight.remove(key);
                }
            }
        }
        self.in_flight
            .count
            .fetch_sub(self.keys.len(), Ordering::AcqRel);
    }
}

/// `ip:port` of the map node whose cluster id is `id`.
pub fn endpoint_of(map: &TopologyMap, id: &str) -> Option<String> {
    map.nodes()
        .find(|node| cluster_node_id(&node.id) == id)
        .map(|node| format!("{}:{}", node.ip, node.port))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Serializes a value for DUMP / MIGRATE.
pub fn dump(value: ValueRef<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    match value {
        ValueRef::Str(bytes) => {
            buf.push(TYPE_STRING);
            put_bytes(&mut buf, bytes);
        }
        ValueRef::Hash(hash) => {
            buf.push(TYPE_HASH);
            buf.extend_from_slice(&(hash.len() as u32).to_le_bytes());
            for (field, value) in hash.iter() {
                put_bytes(&mut buf, field);
                put_bytes(&mut buf, value);
            }
        }
        ValueRef::List(list) => {
            buf.push(TYPE_LIST);
            buf.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for item in list.iter() {
                put_bytes(&mut buf, item);
            }
        }
        ValueRef::Set(set) => {
            buf.push(TYPE_SET);
            buf.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for member in set.iter() {
                put_bytes(&mut buf, member);
            }
        }
        ValueRef::ZSet(zset) => {
            buf.push(TYPE_ZSET);
            buf.extend_from_slice(&(zset.len() as u32).to_le_bytes());
            for (member, score) in zset.iter() {
                buf.extend_from_slice(&((8 + member.len()) as u32).to_le_bytes());
                buf.extend_from_slice(&score.to_le_bytes());
                buf.extend_from_slice(member);
            }
        }
    }
    buf.extend_from_slice(&PAYLOAD_VERSION.to_le_bytes());
    let checksum = crc32(&buf);
    buf.extend_from_slice(&checksum.to_le_bytes());
    buf
}

/// A payload that fails its version, checksum or structure check.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPayload;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], BadPayload> {
        if self.0.len() < len {
            return Err(BadPayload);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, BadPayload> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], BadPayload> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Checks and decodes a DUMP payload.
pub fn restore(payload: &[u8]) -> Result<Value, BadPayload> {
    if payload.len() < 7 {
        return Err(BadPayload);
    }
    let (body, checksum) = payload.split_at(payload.len() - 4);
    if crc32(body) != u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]) {
        return Err(BadPayload);
    }
    let (data, version) = body.split_at(body.len() - 2);
    if u16::from_le_bytes([version[0], version[1]]) != PAYLOAD_VERSION {
        return Err(BadPayload);
    }
    let mut reader = Reader(data);
    let value = match reader.take(1)?[0] {
        TYPE_STRING => Value::Str(reader.bytes()?.to_vec()),
        TYPE_HASH => {
            let count = reader.u32()?;
            let mut hash = HashValue::default();
            for _ in 0..count {
                let field = reader.bytes()?;
                let value = reader.bytes()?;
                hash.insert(field, value);
            }
            if hash.is_empty() {
                return Err(BadPayload);
            }
            Value::Hash(Box::new(hash))
        }
        TYPE_LIST => {
            let count = reader.u32()?;
            let mut list = ListValue::default();
            for _ in 0..count {
                list.push_back(reader.bytes()?);
            }
            if list.is_empty() {
                return Err(BadPayload);
            }
            Value::List(Box::new(list))
        }
        TYPE_SET => {
            let count = reader.u32()?;
            let mut set = SetValue::default();
            for _ in 0..count {
                // a member twice is a broken payload, not a smaller set
                if !set.insert(reader.bytes()?) {
                    return Err(BadPayload);
                }
            }
            if set.is_empty() {
                return Err(BadPayload);
            }
            Value::Set(Box::new(set))
        }
        TYPE_ZSET => {
            let count = reader.u32()?;
            let mut zset = ZSetValue::default();
            for _ in 0..count {
                let (score, member) = split_scored(reader.bytes()?).ok_or(BadPayload)?;
                if zset.insert(member, score).is_some() {
                    return Err(BadPayload);
                }
            }
            if zset.is_empty() {
                return Err(BadPayload);
            }
            Value::ZSet(Box::new(zset))
        }
        _ => return Err(BadPayload),
    };
    if !reader.0.is_empty() {
        return Err(BadPayload);
    }
    Ok(value)
}

/// Bounds on a reply from a MIGRATE destination or a fan-out primary. The
/// replies asked for (AUTH, RESTORE, ROLE, WAIT, INVALIDATE) are a status, an
/// error, an integer or ROLE's list of replicas (three levels); a reply beyond
/// these bounds comes from a broken or hostile target.
pub const PEER_REPLY_LIMITS: ReplyLimits = ReplyLimits {
    max_len: 1024 * 1024,
    max_bulk_len: 64 * 1024,
    max_elements: 64 * 1024,
    max_depth: 4,
};

/// Connection from a migrating source to the destination. Async, so a batch in
/// flight holds neither a worker thread nor a shard lock: MIGRATE reads its keys
/// under the locks, releases them, and sends from here (bounded by timeout).
pub struct PeerConnection {
    stream: Stream,
    /// Bytes read but not decoded yet (at most one reply plus one read).
    buffer: Vec<u8>,
    /// How long connecting, one write or one reply may take.
    timeout: Duration,
}

fn io_error(error: std::io::Error) -> CommandError {
    CommandError::TargetIo(error.to_string())
}

impl PeerConnection {
    /// Connects to `host:port`, over TLS with `tls` (the node's dialer).
    pub async fn connect(
        host: &str,
        port: u16,
        tls: Option<&ClientTls>,
        timeout: Duration,
    ) -> Result<Self, CommandError> {
        let addr = lookup_host((host, port))
            .await
            .map_err(io_error)?
            .next()
            .ok_or_else(|| CommandError::TargetUnresolved(format!("{host}:{port}")))?;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| CommandError::TargetIo("connection timed out".into()))?
            .map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => tls.connect(stream, host).await.map_err(io_error)?,
        };
        Ok(PeerConnection {
            stream,
            buffer: Vec::new(),
            timeout,
        })
    }

    /// Sends one command that may take up to `takes` on the destination (WAIT),
    /// reading its reply with that much more patience than the connect timeout.
    pub async fn slow_command(
        &mut self,
        command: Vec<&[u8]>,
        takes: Duration,
    ) -> Result<Reply, CommandError> {
        self.send(&[command]).await?;
        self.read_reply(self.timeout.max(takes) + Duration::from_secs(1))
            .await
    }

    /// Sends pipelined commands and reads one reply per command.
    pub async fn pipeline(&mut self, commands: &[Vec<&[u8]>]) -> Result<Vec<Reply>, CommandError> {
        self.send(commands).await?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.read_reply(self.timeout).await?);
        }
        Ok(replies)
    }

    async fn send(&mut self, commands: &[Vec<&[u8]>]) -> Result<(), CommandError> {
        let mut buf = Vec::new();
        for command in commands {
            encode_command(&mut buf, command);
        }
        let written = async {
            self.stream.write_all(&buf).await?;
            // TLS holds written records until flushed (a no-op on TCP)
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeout, written)
            .await
            .map_err(|_| CommandError::TargetIo("write timed out".into()))?
            .map_err(io_error)
    }

    /// Reads one reply, which must arrive whole within `patience`: a target
    /// trickling bytes cannot hold the caller longer.
    async fn read_reply(&mut self, patience: Duration) -> Result<Reply, CommandError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Decoded::Reply { reply, consumed } =
                parse_reply(&self.buffer, &PEER_REPLY_LIMITS).map_err(CommandError::TargetReply)?
            {
                self.buffer.drain(..consumed);
                return Ok(reply);
            }
            self.buffer.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buffer)).await {
                Err(_) => {
                    return Err(CommandError::TargetIo(format!(
                        "no complete reply within {} ms",
                        patience.as_millis()
                    )));
                }
                Ok(Ok(0)) => return Err(CommandError::TargetClosed),
                Ok(Ok(_)) => {}
                // the deadline above decides; a signal just reads again
                Ok(Err(error)) if error.kind() == ErrorKind::Interrupted => {}
                Ok(Err(error)) => return Err(io_error(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_refuse_corruption() {
        let mut hash = HashValue::default();
        hash.insert(b"field", b"value");
        hash.insert(b"other", b"");
        let mut list = ListValue::default();
        for item in [&b"a"[..], b"", b"a", b"tail"] {
            list.push_back(item);
        }
        let mut set = SetValue::default();
        for member in [&b"x"[..], b"", b"yz"] {
            set.insert(member);
        }
        let mut zset = ZSetValue::default();
        for (member, score) in [(&b"x"[..], 1.5), (b"", f64::NEG_INFINITY), (b"yz", 1.5)] {
            zset.insert(member, score);
        }
        for value in [
            Value::Str(b"hello".to_vec()),
            Value::Hash(Box::new(hash)),
            Value::List(Box::new(list)),
            Value::Set(Box::new(set)),
            Value::ZSet(Box::new(zset)),
        ] {
            let payload = dump(value.borrowed());
            let restored = restore(&payload).expect("valid payload");
            assert_eq!(dump(restored.borrowed()), payload);
            for position in 0..payload.len() {
                let mut corrupted = payload.clone();
                corrupted[position] ^= 0x40;
                assert!(restore(&corrupted).is_err(), "byte {position}");
            }
            assert!(restore(&payload[..payload.len() - 1]).is_err());
        }
        assert!(restore(b"").is_err());
    }

    #[test]
    fn crc_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
