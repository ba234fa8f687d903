//! The write-behind queue: per key, the latest write the origin has not taken yet.
//!
//! A write is acknowledged once the cache has it; the queue keeps one entry per key
//! (a newer write replaces the pending operation, so writes coalesce, but keeps the
//! entry's age) and the flusher (`origin::flusher`) sends due entries to the origin.
//! Every entry carries a version: a flush removes the entry only when the version it
//! sent is still the entry's, so a write that arrived meanwhile is sent afterwards
//! (at most one request per key is in flight: per-key order is the write order).
//!
//! Replicas keep a copy of the queue (the primary streams every queued write and every
//! flush acknowledgement, `MERIDIAN.WRITEBEHIND`) and never flush while replicas; a
//! promoted replica flushes what is still pending.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::CommandError;

/// What the origin must be told about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOp {
    /// `PUT <origin>/<key>` with the value.
    Put(Bytes),
    /// `DELETE <origin>/<key>`.
    Delete,
}

/// A queued write as replicated and carried by full syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWrite {
    pub key: Vec<u8>,
    pub version: u64,
    pub op: PendingOp,
}

/// Settings of the queue and its flusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehindConfig {
    /// Keys pending at most; a write to another key is refused beyond it.
    pub max_keys: usize,
    /// How often the flusher looks for due entries (it is also woken by new writes).
    pub flush_interval: Duration,
    /// Entries sent per round, concurrently.
    pub batch: usize,
}

/// Longest wait before retrying a key the origin refused.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First retry delay; doubled after every failure of the key.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Entry {
    op: PendingOp,
    version: u64,
    /// When the oldest write not yet at the origin was queued (coalescing keeps it).
    queued_at: Instant,
    /// A request for this key is on its way (never two at once: per-key order).
    in_flight: bool,
    failures: u32,
    /// Not sent again before this (backoff after a failure).
    retry_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Vec<u8>, Entry>,
    next_version: u64,
}

/// Counters read by metrics and INFO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: usize,
    pub oldest_age: Duration,
    pub flushed: u64,
    pub failures: u64,
    pub refused: u64,
}

/// Totals since start (metrics counters).
#[derive(Debug, Default)]
struct Counters {
    flushed: AtomicU64,
    failures: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug)]
pub struct WriteBehind {
    pub config: WriteBehindConfig,
    inner: Mutex<Inner>,
    counters: Counters,
    /// Wakes the flusher when a write was queued.
    pub queued: Notify,
}

/// The backoff after `failures` consecutive failures of one key.
pub fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

impl WriteBehind {
    pub fn new(config: WriteBehindConfig) -> Self {
        WriteBehind {
            config,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                next_version: 1,
            }),
            counters: Counters::default(),
            queued: Notify::new(),
        }
    }

    /// Whether a write to `key` may run now: the key is queued already (it coalesces)
    /// or the queue has room. Checked before the write changes the cache.
    pub fn admit(&self, key: &[u8]) -> Result<(), CommandError> {
        let inner = self.inner.lock();
        let pending = inner.entries.len();
        if pending < self.config.max_keys || inner.entries.contains_key(key) {
            return Ok(());
        }
        drop(inner);
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        Err(CommandError::WriteBehindQueueFull { pending })
    }

    /// Queues a client's write on this primary; returns the entry's new version.
    pub fn enqueue(&self, key: &[u8], op: PendingOp, now: Instant) -> u64 {
        let mut inner = self.inner.lock();
        let version = inner.next_version;
        inner.next_version += 1;
        Self::put(&mut inner, key, version, op, now);
        drop(inner);
        self.queued.notify_one();
        version
    }

    /// Applies a write the primary queued (replication stream or full sync).
    pub fn apply_queued(&self, write: PendingWrite, now: Instant) {
        let mut inner = self.inner.lock();
        inner.next_version = inner.next_version.max(write.version + 1);
        Self::put(&mut inner, &write.key, write.version, write.op, now);
    }

    fn put(inner: &mut Inner, key: &[u8], version: u64, op: PendingOp, now: Instant) {
        match inner.entries.get_mut(key) {
            Some(entry) => {
                entry.op = op;
                entry.version = version;
            }
            None => {
                inner.entries.insert(
                    key.to_vec(),
                    Entry {
                        op,
                        version,
                        queued_at: now,
                        in_flight: false,
                        failures: 0,
                        retry_at: None,
                    },
                );
            }
        }
    }

    /// Applies the primary's acknowledgement that `version` of `key` reached the origin.
    pub fn apply_flushed(&self, key: &[u8], version: u64) {
        let mut inner = self.inner.lock();
        if inner
            .entries
            .get(key)
            .is_some_and(|entry| entry.version == version)
        {
            inner.entries.remove(key);
        }
    }

    /// Replaces the whole queue (a full sync: the primary's queue at the snapshot).
    pub fn replace_all(&self, writes: Vec<PendingWrite>, now: Instant) {
        let mut inner = self.inner.lock();
        inner.entries.clear();
        for write in writes {
            inner.next_version = inner.next_version.max(write.version + 1);
            Self::put(&mut inner, &write.key, write.version, write.op, now);
        }
    }

    /// Every pending write, in no particular order (a full sync's snapshot takes them
    /// under every shard lock: a copy, values shared, nothing sorted).
    pub fn pending(&self) -> Vec<PendingWrite> {
        self.inner
            .lock()
            .entries
            .iter()
            .map(|(key, entry)| PendingWrite {
                key: key.clone(),
                version: entry.version,
                op: entry.op.clone(),
            })
            .collect()
    }

    /// Takes up to `batch` due entries (not in flight, past their backoff), oldest
    /// first, and marks them in flight.
    pub fn take_due(&self, now: Instant) -> Vec<PendingWrite> {
        let mut inner = self.inner.lock();
        let mut due: Vec<(Instant, &Vec<u8>)> = inner
            .entries
            .iter()
            .filter(|(_, entry)| !entry.in_flight && entry.retry_at.is_none_or(|at| at <= now))
            .map(|(key, entry)| (entry.queued_at, key))
            .collect();
        due.sort_unstable_by_key(|(queued_at, _)| *queued_at);
        let keys: Vec<Vec<u8>> = due
            .into_iter()
            .take(self.config.batch)
            .map(|(_, key)| key.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| {
                let entry = inner.entries.get_mut(&key)?;
                entry.in_flight = true;
                Some(PendingWrite {
                    version: entry.version,
                    op: entry.op.clone(),
                    key,
                })
            })
            .collect()
    }

    /// Records the origin's answer for a write `take_due` handed out; true when the
    /// entry was removed (the origin has the key's latest write).
    pub fn complete(&self, key: &[u8], version: u64, succeeded: bool, now: Instant) -> bool {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.entries.get_mut(key) else {
            return false;
        };
        entry.in_flight = false;
        let removed = if succeeded {
            entry.failures = 0;
            entry.retry_at = None;
            // a newer write arrived while this one was sent: it goes next
            let current = entry.version == version;
            if current {
                inner.entries.remove(key);
            }
            current
        } else {
            entry.failures = entry.failures.saturating_add(1);
            entry.retry_at = Some(now + backoff(entry.failures));
            false
        };
        drop(inner);
        let counter = if succeeded {
            &self.counters.flushed
        } else {
            &self.counters.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        removed
    }

    /// Marks every in-flight entry as not sent (a flush abandoned by a demotion).
    pub fn release_in_flight(&self) {
        for entry in self.inner.lock().entries.values_mut() {
            entry.in_flight = false;
        }
    }

    pub fn stats(&self, now: Instant) -> QueueStats {
        let inner = self.inner.lock();
        let depth = inner.entries.len();
        let oldest_age = inner
            .entries
            .values()
            .map(|entry| now.saturating_duration_since(entry.queued_at))
            .max()
            .unwrap_or_default();
        drop(inner);
        QueueStats {
            depth,
            oldest_age,
            flushed: self.counters.flushed.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
        }
    }

    /// Whether a write to `key` waits for the origin (the origin's copy is older).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.lock().entries.contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max_keys: usize) -> WriteBehind {
        WriteBehind::new(WriteBehindConfig {
            max_keys,
            flush_interval: Duration::from_millis(100),
            batch: 10,
        })
    }

    fn put(value: &'static [u8]) -> PendingOp {
        PendingOp::Put(Bytes::from_static(value))
    }

    #[test]
    fn writes_coalesce_and_keep_their_age() {
        let queue = queue(10);
        let start = Instant::now();
        queue.enqueue(b"k", put(b"1"), start);
        let later = start + Duration::from_secs(5);
        let version = queue.enqueue(b"k", put(b"2"), later);
        let stats = queue.stats(later);
        assert_eq!((stats.depth, stats.oldest_age), (1, Duration::from_secs(5)));
        let due = queue.take_due(later);
        assert_eq!(
            due,
            vec![PendingWrite {
                key: b"k".to_vec(),
                version,
                op: put(b"2")
            }]
        );
        // in flight: not handed out twice
        assert!(queue.take_due(later).is_empty());
        assert!(queue.complete(b"k", version, true, later));
        assert!(queue.is_empty());
    }

    #[test]
    fn a_write_during_a_flush_is_sent_afterwards() {
        let queue = queue(10);
        let now = Instant::now();
        queue.enqueue(b"k", put(b"1"), now);
        let sent = queue.take_due(now);
        let newer = queue.enqueue(b"k", PendingOp::Delete, now);
        assert!(!queue.complete(b"k", sent[0].version, true, now));
        let next = queue.take_due(now);
        assert_eq!((next[0].version, &next[0].op), (newer, &PendingOp::Delete));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_a_cap() {
        let queue = queue(10);
        let now = Instant::now();
        queue.enqueue(b"k", put(b"1"), now);
        let sent = queue.take_due(now);
        assert!(!queue.complete(b"k", sent[0].version, false, now));
        assert!(queue.take_due(now + Duration::from_millis(50)).is_empty());
        assert_eq!(queue.take_due(now + FIRST_BACKOFF).len(), 1);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(40), MAX_BACKOFF);
        assert_eq!(queue.stats(now).failures, 1);
    }

    #[test]
    fn a_full_queue_refuses_new_keys_only() {
        let queue = queue(2);
        let now = Instant::now();
        queue.enqueue(b"a", put(b"1"), now);
        queue.enqueue(b"b", put(b"1"), now);
        let full = queue.admit(b"c").expect_err("full");
        assert_eq!(full, CommandError::WriteBehindQueueFull { pending: 2 });
        assert_eq!(queue.admit(b"a"), Ok(()));
        assert_eq!(
            full.to_string(),
            "ERR write-behind queue full (2 keys pending); retry later"
        );
        assert_eq!(queue.stats(now).refused, 1);
    }

    #[test]
    fn replicas_follow_the_primary_versions() {
        let primary = queue(10);
        let replica = queue(10);
        let now = Instant::now();
        let first = primary.enqueue(b"k", put(b"1"), now);
        replica.apply_queued(primary.pending()[0].clone(), now);
        let second = primary.enqueue(b"k", put(b"2"), now);
        replica.apply_queued(primary.pending()[0].clone(), now);
        // a stale acknowledgement leaves the newer write pending
        replica.apply_flushed(b"k", first);
        assert_eq!(replica.stats(now).depth, 1);
        replica.apply_flushed(b"k", second);
        assert!(replica.is_empty());
        // promoted, it numbers after what it saw
        replica.apply_queued(primary.pending()[0].clone(), now);
        assert!(replica.enqueue(b"x", PendingOp::Delete, now) > second);
    }
}
