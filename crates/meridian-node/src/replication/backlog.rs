//! The replication log: replication ids, the master offset and the backlog
//! ring buffer every propagated byte goes through. Nothing is recorded until
//! the first replica attaches (`active`), so a node without replicas pays one
//! relaxed atomic load per write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Appends one command as a RESP array of bulk strings.
pub fn encode_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.push(b'*');
    buf.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    buf.extend_from_slice(b"\r\n");
    for arg in args {
        buf.push(b'$');
        buf.extend_from_slice(itoa::Buffer::new().format(arg.len()).as_bytes());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}

/// A new 40-hex-digit replication id.
pub fn new_replid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut id = String::with_capacity(40);
    let mut seed = crate::store::now_ms();
    while id.len() < 40 {
        let mut hasher = foldhash::quality::RandomState::default().build_hasher();
        hasher.write_u64(seed);
        hasher.write_u64(std::process::id().into());
        let value = hasher.finish();
        seed = seed.wrapping_add(value);
        id.push_str(&format!("{value:016x}"));
    }
    id.truncate(40);
    id
}

/// The last `capacity` bytes of the stream. Byte `offset` sits at
/// `(offset - base) % capacity`, `base` being where the ring (re)started, so the
/// buffer fills from its front and only needs to be as long as what was written:
/// the first write after a replica attaches touches a few bytes, not the whole
/// backlog (zeroing 16 MB there stalled that write and `WAIT` by 100 ms and more).
struct Ring {
    data: Vec<u8>,
    capacity: usize,
    /// Offset of the ring's position 0.
    base: u64,
    /// Offset of the first byte still held.
    start: u64,
    /// Offset after the last byte (the master replication offset).
    end: u64,
}

impl Ring {
    fn empty(capacity: usize, at: u64) -> Self {
        Ring {
            data: Vec::new(),
            capacity,
            base: at,
            start: at,
            end: at,
        }
    }

    fn position(&self, offset: u64) -> usize {
        ((offset - self.base) % self.capacity.max(1) as u64) as usize
    }

    fn push(&mut self, bytes: &[u8]) {
        let capacity = self.capacity.max(1);
        let written =
            usize::try_from(self.end - self.base + bytes.len() as u64).unwrap_or(usize::MAX);
        let needed = written.min(capacity);
        if self.data.len() < needed {
            if self.data.capacity() < capacity {
                // reserved, not touched: the pages are faulted in as the stream fills them
                self.data.reserve_exact(capacity - self.data.len());
            }
            self.data.resize(needed, 0);
        }
        // only the tail that fits matters when one append exceeds the ring
        let skip = bytes.len().saturating_sub(capacity);
        let mut position = self.position(self.end + skip as u64);
        for chunk in bytes[skip..].chunks(capacity) {
            let first = chunk.len().min(capacity - position);
            self.data[position..position + first].copy_from_slice(&chunk[..first]);
            self.data[..chunk.len() - first].copy_from_slice(&chunk[first..]);
            position = (position + chunk.len()) % capacity;
        }
        self.end += bytes.len() as u64;
        self.start = self.start.max(self.end.saturating_sub(capacity as u64));
    }

    /// Copies up to `max` bytes from `from`; None when `from` left the ring.
    fn read(&self, from: u64, max: usize, out: &mut Vec<u8>) -> Option<usize> {
        if from < self.start || from > self.end {
            return None;
        }
        let len = ((self.end - from) as usize).min(max);
        let mut position = self.position(from);
        let mut left = len;
        while left > 0 {
            let take = left.min(self.data.len() - position);
            out.extend_from_slice(&self.data[position..position + take]);
            left -= take;
            position = (position + take) % self.data.len();
        }
        Some(len)
    }
}

pub struct Ids {
    pub replid: String,
    /// The previous primary's id, accepted for partial resync up to `second_offset`.
    pub replid2: String,
    pub second_offset: Option<u64>,
}

impl std::fmt::Debug for ReplLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplLog")
            .field("active", &self.is_active())
            .field("offset", &self.offset())
            .finish()
    }
}

/// Backlog size until configuration says otherwise (Redis: 1mb; ours 16mb).
pub const DEFAULT_BACKLOG: usize = 16 * 1024 * 1024;

pub struct ReplLog {
    active: AtomicBool,
    offset: AtomicU64,
    ring: Mutex<Ring>,
    pub ids: Mutex<Ids>,
    /// Woken on every append (replica feeders wait on it).
    pub appended: Notify,
}

impl ReplLog {
    pub fn new(capacity: usize) -> Self {
        ReplLog {
            active: AtomicBool::new(false),
            offset: AtomicU64::new(0),
            ring: Mutex::new(Ring::empty(capacity, 0)),
            ids: Mutex::new(Ids {
                replid: new_replid(),
                replid2: "0".repeat(40),
                second_offset: None,
            }),
            appended: Notify::new(),
        }
    }

    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Starts recording. Callers hold every shard lock (or no writer can run).
    pub fn activate(&self) {
        self.active.store(true, Ordering::Relaxed);
    }

    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Acquire)
    }

    pub fn append(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut ring = self.ring.lock();
        ring.push(bytes);
        self.offset.store(ring.end, Ordering::Release);
        drop(ring);
        self.appended.notify_waiters();
    }

    pub fn append_command(&self, args: &[&[u8]]) {
        let mut buf = Vec::with_capacity(64);
        encode_command(&mut buf, args);
        self.append(&buf);
    }

    pub fn read(&self, from: u64, max: usize, out: &mut Vec<u8>) -> Option<usize> {
        self.ring.lock().read(from, max, out)
    }

    /// (first offset held, bytes held, capacity).
    pub fn extent(&self) -> (u64, u64, usize) {
        let ring = self.ring.lock();
        (ring.start, ring.end - ring.start, ring.capacity)
    }

    pub fn set_capacity(&self, capacity: usize) {
        let mut ring = self.ring.lock();
        *ring = Ring::empty(capacity, ring.end);
    }

    /// Restarts the log at `offset` under `replid` (after a full sync).
    pub fn reset(&self, replid: &str, offset: u64) {
        let mut ring = self.ring.lock();
        // the buffer is kept: its bytes are overwritten from position 0 on
        ring.base = offset;
        ring.start = offset;
        ring.end = offset;
        self.offset.store(offset, Ordering::Release);
        drop(ring);
        let mut ids = self.ids.lock();
        ids.replid = replid.to_string();
        ids.replid2 = "0".repeat(40);
        ids.second_offset = None;
        self.activate();
    }

    /// A promoted replica: keeps the old id as replid2 so sibling replicas
    /// can continue from it, and starts a new history.
    pub fn shift_replid(&self) {
        let offset = self.offset();
        let mut ids = self.ids.lock();
        ids.replid2 = std::mem::replace(&mut ids.replid, new_replid());
        ids.second_offset = Some(offset);
    }

    /// The primary switched history (PSYNC answered +CONTINUE with a new id).
    pub fn adopt_replid(&self, replid: &str) {
        let offset = self.offset();
        let mut ids = self.ids.lock();
        if ids.replid != replid {
            ids.replid2 = std::mem::replace(&mut ids.replid, replid.to_string());
            ids.second_offset = Some(offset);
        }
    }

    /// Whether a replica at (`replid`, `offset`) can continue from the backlog.
    pub fn can_continue(&self, replid: &str, offset: u64) -> bool {
        if !self.is_active() {
            return false;
        }
        let ids = self.ids.lock();
        let known = replid == ids.replid
            || (replid == ids.replid2 && ids.second_offset.is_some_and(|limit| offset <= limit));
        drop(ids);
        let ring = self.ring.lock();
        known && offset >= ring.start && offset <= ring.end
    }

    pub fn replid(&self) -> String {
        self.ids.lock().replid.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prop_assert;
    use proptest::prop_assert_eq;

    #[test]
    fn ring_wraps_and_forgets_old_bytes() {
        let log = ReplLog::new(8);
        log.activate();
        log.append(b"abcdef");
        log.append(b"ghij");
        assert_eq!(log.offset(), 10);
        let mut out = Vec::new();
        assert_eq!(log.read(0, 100, &mut out), None);
        assert_eq!(log.read(2, 100, &mut out), Some(8));
        assert_eq!(out, b"cdefghij");
        out.clear();
        assert_eq!(log.read(7, 2, &mut out), Some(2));
        assert_eq!(out, b"hi");
        log.append(b"0123456789xy");
        out.clear();
        assert_eq!(log.read(14, 100, &mut out), Some(8));
        assert_eq!(out, b"456789xy");
    }

    #[test]
    fn the_buffer_holds_what_was_written_not_the_whole_capacity() {
        // The first write after a replica attached used to zero the whole backlog
        // (16 MB by default) under the log's lock.
        let log = ReplLog::new(16 * 1024 * 1024);
        log.activate();
        log.append(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(log.ring.lock().data.len(), 14);
        log.append(&[b'x'; 1000]);
        assert_eq!(log.ring.lock().data.len(), 1014);
        // a restart at another offset fills the buffer from its front again
        log.reset(&new_replid(), 5_000_000);
        log.append(b"abc");
        assert_eq!(log.ring.lock().data.len(), 1014);
        let mut out = Vec::new();
        assert_eq!(log.read(5_000_000, 10, &mut out), Some(3));
        assert_eq!(out, b"abc");
        log.set_capacity(64);
        log.append(b"de");
        assert_eq!(log.ring.lock().data.len(), 2);
    }

    proptest::proptest! {
        /// Whatever the capacity, the offsets the ring starts at and the sizes of the
        /// appends, a read returns exactly the stream's bytes it still holds.
        #[test]
        fn reads_return_the_stream(
            capacity in 1usize..40,
            first in 0u64..1000,
            steps in proptest::collection::vec((0usize..50, proptest::bool::ANY), 1..40),
        ) {
            let log = ReplLog::new(capacity);
            log.activate();
            log.reset(&new_replid(), first);
            let mut stream: Vec<u8> = Vec::new();
            let mut begin = first;
            for (index, (size, restart)) in steps.into_iter().enumerate() {
                if restart && index % 7 == 3 {
                    begin = log.offset() + 11;
                    log.reset(&new_replid(), begin);
                    stream.clear();
                }
                let bytes: Vec<u8> = (0..size).map(|i| (index * 31 + i) as u8).collect();
                log.append(&bytes);
                stream.extend_from_slice(&bytes);
                let end = begin + stream.len() as u64;
                prop_assert_eq!(log.offset(), end);
                let held = (stream.len()).min(capacity);
                let oldest = end - held as u64;
                for from in oldest..=end {
                    let mut out = Vec::new();
                    prop_assert_eq!(log.read(from, usize::MAX, &mut out), Some((end - from) as usize));
                    prop_assert_eq!(&out[..], &stream[(from - begin) as usize..]);
                }
                if oldest > begin {
                    prop_assert_eq!(log.read(oldest - 1, 1, &mut Vec::new()), None);
                }
                prop_assert!(log.ring.lock().data.len() <= capacity);
            }
        }
    }

    #[test]
    fn continue_rules() {
        let log = ReplLog::new(1024);
        assert!(!log.can_continue(&log.replid(), 0));
        log.activate();
        log.append(b"hello");
        let old = log.replid();
        assert!(log.can_continue(&old, 5));
        assert!(!log.can_continue(&old, 6));
        log.shift_replid();
        log.append(b"more");
        assert!(log.can_continue(&old, 5));
        assert!(log.can_continue(&log.replid(), 9));
        log.append(b"x");
        assert!(!log.can_continue(&old, 10));
        assert!(!log.can_continue("nope", 5));
    }

    #[test]
    fn commands_encode_as_resp() {
        let mut buf = Vec::new();
        encode_command(&mut buf, &[b"DEL", b"k"]);
        assert_eq!(buf, b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n");
    }
}
