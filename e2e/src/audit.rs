//! The fault matrix's load: a writer that records every write a replica acknowledged
//! (`SET` then `WAIT 1` on the same connection), and a reader that checks each value it
//! reads against what had been acknowledged when the read began. After a fault, the
//! ledger proves that no acknowledged write was lost and no stale value was served, and
//! says how long writes were unavailable.
//!
//! The writer cycles over [`KEYS`] keys of one shard with an increasing sequence number as
//! the value, so for every key "acknowledged" is a floor (the newest acknowledged value)
//! and "attempted" a ceiling (the newest value ever sent): a read below the floor is a
//! lost or stale write, a read above the ceiling a corrupted one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::ShardClient;

/// How many keys the writer cycles over.
pub const KEYS: usize = 64;

/// How long a write waits for its replica (`WAIT 1 <ms>`).
const WAIT_MS: u64 = 500;

/// Replies may take the whole `WAIT` and a little more.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct Ledger {
    /// Per key: the newest value a replica acknowledged (0: none).
    acked: Vec<u64>,
    /// Per key: the newest value ever sent.
    attempted: Vec<u64>,
    /// Every write attempt: when it ended and whether it was acknowledged.
    writes: Vec<(Instant, bool)>,
    reads: u64,
    failed_reads: u64,
    /// Reads that returned less than was acknowledged before they began.
    violations: Vec<String>,
}

/// What the load saw between start and [`AuditedLoad::stop`].
#[derive(Debug)]
pub struct Audit {
    pub acked_writes: usize,
    pub failed_writes: usize,
    pub reads: u64,
    pub failed_reads: u64,
    /// Stale, missing or impossible reads, as they happened.
    pub violations: Vec<String>,
    acked: Vec<u64>,
    attempted: Vec<u64>,
    writes: Vec<(Instant, bool)>,
}

/// A writer and a reader on one shard, both following MOVED and failing over to the
/// other nodes they know.
pub struct AuditedLoad {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn key(tag: &str, index: usize) -> String {
    format!("{{{tag}}}:audit:{index}")
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // A panicked task cannot leave the ledger half-written: every update is one statement.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AuditedLoad {
    /// Starts writing and reading keys `{tag}:audit:<n>` through `endpoints` (the shard's
    /// nodes). `replicated`: whether the shard has a replica, so a write counts only once
    /// `WAIT 1` says a replica has it.
    pub fn start(endpoints: Vec<String>, tag: &str, replicated: bool) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger {
            acked: vec![0; KEYS],
            attempted: vec![0; KEYS],
            ..Ledger::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (ledger, stop, tag) = (ledger.clone(), stop.clone(), tag.to_string());
            let mut client =
                ShardClient::with_response_timeout(endpoints.clone(), RESPONSE_TIMEOUT);
            tokio::spawn(async move {
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    let index = (sequence as usize) % KEYS;
                    let started = Instant::now();
                    lock(&ledger).attempted[index] = sequence;
                    let mut commands = vec![redis::cmd("SET")];
                    commands[0].arg(key(&tag, index)).arg(sequence);
                    if replicated {
                        let mut wait = redis::cmd("WAIT");
                        wait.arg(1).arg(WAIT_MS);
                        commands.push(wait);
                    }
                    let acked = match client.run(&commands).await {
                        Ok(replies) if replicated => {
                            matches!(replies.get(1), Some(redis::Value::Int(n)) if *n >= 1)
                        }
                        Ok(_) => true,
                        Err(_) => false,
                    };
                    {
                        let mut ledger = lock(&ledger);
                        if acked {
                            ledger.acked[index] = ledger.acked[index].max(sequence);
                        }
                        ledger.writes.push((Instant::now(), acked));
                    }
                    let pause = if acked { 10 } else { 50 };
                    tokio::time::sleep(
                        Duration::from_millis(pause).saturating_sub(started.elapsed()),
                    )
                    .await;
                }
            })
        };
        let reader = {
            let (ledger, stop, tag) = (ledger.clone(), stop.clone(), tag.to_string());
            let mut client = ShardClient::with_response_timeout(endpoints, RESPONSE_TIMEOUT);
            tokio::spawn(async move {
                let mut index = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    index = (index + 7) % KEYS;
                    let floor = lock(&ledger).acked[index];
                    let mut get = redis::cmd("GET");
                    get.arg(key(&tag, index));
                    let read = client.run(&[get]).await;
                    {
                        let mut ledger = lock(&ledger);
                        let ceiling = ledger.attempted[index];
                        match read.map(|mut replies| replies.pop()) {
                            Ok(Some(value)) => {
                                ledger.reads += 1;
                                if let Some(problem) =
                                    judge(&key(&tag, index), &value, floor, ceiling)
                                {
                                    ledger.violations.push(problem);
                                }
                            }
                            _ => ledger.failed_reads += 1,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            })
        };
        Self {
            ledger,
            stop,
            tasks: vec![writer, reader],
        }
    }

    /// Writes acknowledged so far.
    pub fn acked_writes(&self) -> usize {
        lock(&self.ledger)
            .writes
            .iter()
            .filter(|(_, ok)| *ok)
            .count()
    }

    /// Waits until at least `count` more writes were acknowledged than now.
    pub async fn wait_acked(&self, count: usize, give_up: Duration) -> Result<()> {
        let target = self.acked_writes() + count;
        let started = Instant::now();
        while self.acked_writes() < target {
            if started.elapsed() > give_up {
                bail!(
                    "only {} of {target} writes acknowledged within {give_up:?}",
                    self.acked_writes()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// How long after `since` writes were acknowledged again: until the first of a steady
    /// run of acknowledged writes after a failed one or a pause (the node may still
    /// answer for a moment after the fault), or 0 when the 100 writes after it went
    /// through undisturbed.
    pub async fn recovered_after(&self, since: Instant, give_up: Duration) -> Result<Duration> {
        loop {
            if let Some(at) = recovery(&lock(&self.ledger).writes, since) {
                return Ok(at.saturating_duration_since(since));
            }
            if since.elapsed() > give_up {
                bail!("no write was acknowledged within {give_up:?} of the fault");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The longest pause between acknowledged writes since `since`.
    pub fn longest_gap(&self, since: Instant) -> Duration {
        longest_gap(&lock(&self.ledger).writes, since)
    }

    /// The first `count` write outcomes after `since`, as `+<ms>`/`-<ms>` (acknowledged or
    /// not, ms after `since`): what a failing scenario prints.
    pub fn outcomes_after(&self, since: Instant, count: usize) -> String {
        lock(&self.ledger)
            .writes
            .iter()
            .filter(|(at, _)| *at > since)
            .take(count)
            .map(|(at, ok)| {
                format!(
                    "{}{}",
                    if *ok { '+' } else { '-' },
                    at.duration_since(since).as_millis()
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Stops the load and returns what it saw.
    pub async fn stop(self) -> Result<Audit> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await?;
        }
        let ledger = std::mem::take(&mut *lock(&self.ledger));
        Ok(Audit {
            acked_writes: ledger.writes.iter().filter(|(_, ok)| *ok).count(),
            failed_writes: ledger.writes.iter().filter(|(_, ok)| !ok).count(),
            reads: ledger.reads,
            failed_reads: ledger.failed_reads,
            violations: ledger.violations,
            acked: ledger.acked,
            attempted: ledger.attempted,
            writes: ledger.writes,
        })
    }
}

impl Audit {
    /// Reads every key through `endpoints` and returns the acknowledged writes that are
    /// gone (or impossible values), one line each.
    pub async fn lost_writes(&self, endpoints: Vec<String>, tag: &str) -> Result<Vec<String>> {
        let mut client = ShardClient::with_response_timeout(endpoints, RESPONSE_TIMEOUT);
        let mut lost = Vec::new();
        for index in 0..KEYS {
            let mut get = redis::cmd("GET");
            get.arg(key(tag, index));
            let value = client.run(&[get]).await?.pop().unwrap_or(redis::Value::Nil);
            if let Some(problem) = judge(
                &key(tag, index),
                &value,
                self.acked[index],
                self.attempted[index],
            ) {
                lost.push(problem);
            }
        }
        Ok(lost)
    }

    /// Writes attempted after `since` that were not acknowledged.
    pub fn failed_after(&self, since: Instant) -> usize {
        self.writes
            .iter()
            .filter(|(at, ok)| *at > since && !ok)
            .count()
    }
}

/// `None` when `value` (read from `key`) is allowed: at least the acknowledged `floor`
/// and at most the `ceiling` ever sent.
fn judge(key: &str, value: &redis::Value, floor: u64, ceiling: u64) -> Option<String> {
    let read = match value {
        redis::Value::Nil => 0,
        redis::Value::BulkString(bytes) => match std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        {
            Some(number) => number,
            None => return Some(format!("{key}: unexpected value {value:?}")),
        },
        other => return Some(format!("{key}: unexpected reply {other:?}")),
    };
    if read < floor {
        Some(format!(
            "{key}: read {read}, but {floor} had been acknowledged"
        ))
    } else if read > ceiling {
        Some(format!(
            "{key}: read {read}, never written (newest {ceiling})"
        ))
    } else {
        None
    }
}

/// A pause between acknowledged writes longer than this is an outage (the writer
/// writes every 10 ms; a write that hangs on a lost node and then lands elsewhere is
/// acknowledged, late).
const GAP: Duration = Duration::from_millis(250);

/// Acknowledged writes in a row that end an outage.
const STEADY: usize = 50;

/// When writes were acknowledged again after `since` (see
/// [`AuditedLoad::recovered_after`]): the first acknowledged write of the first run of
/// [`STEADY`] that follows a failed write or a [`GAP`]; `since` itself when the first 100
/// writes after it were acknowledged without either.
fn recovery(writes: &[(Instant, bool)], since: Instant) -> Option<Instant> {
    let mut previous_ack = since;
    let mut disrupted = false;
    let mut recovered_at = since;
    let mut streak = 0usize;
    let mut clean = 0usize;
    for &(at, ok) in writes.iter().filter(|(at, _)| *at > since) {
        if !ok {
            disrupted = true;
            streak = 0;
            continue;
        }
        let gap = at.saturating_duration_since(previous_ack);
        previous_ack = at;
        if gap > GAP {
            disrupted = true;
            streak = 0;
        }
        if !disrupted {
            clean += 1;
            if clean >= 100 {
                return Some(since);
            }
            continue;
        }
        if streak == 0 {
            recovered_at = at;
        }
        streak += 1;
        if streak >= STEADY {
            return Some(recovered_at);
        }
    }
    None
}

/// The longest pause between acknowledged writes after `since` (from `since` to the
/// first one, then between each two).
fn longest_gap(writes: &[(Instant, bool)], since: Instant) -> Duration {
    let mut previous = since;
    let mut longest = Duration::ZERO;
    for &(at, _) in writes.iter().filter(|(at, ok)| *ok && *at > since) {
        longest = longest.max(at.saturating_duration_since(previous));
        previous = at;
    }
    longest
}

/// One fault's outcome, printed as a `CHAOS` line (and appended to the file named by
/// `MERIDIAN_CHAOS_REPORT`, which `cargo xtask chaos` reads).
#[derive(Debug, serde::Serialize)]
pub struct FaultOutcome {
    pub fault: String,
    pub recovery_ms: u128,
    pub acked_writes: usize,
    pub lost_writes: usize,
    pub stale_reads: usize,
}

impl FaultOutcome {
    pub fn record(&self) -> Result<()> {
        println!(
            "CHAOS fault={} recovery_ms={} acked_writes={} lost_writes={} stale_reads={}",
            self.fault, self.recovery_ms, self.acked_writes, self.lost_writes, self.stale_reads
        );
        if let Some(path) = std::env::var_os("MERIDIAN_CHAOS_REPORT") {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(file, "{}", serde_json::to_string(self)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> redis::Value {
        redis::Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_read_below_the_acknowledged_floor_is_a_violation() {
        assert!(judge("k", &bulk("5"), 6, 9).is_some());
        assert!(judge("k", &redis::Value::Nil, 1, 9).is_some());
        assert!(judge("k", &bulk("10"), 6, 9).is_some());
        assert!(judge("k", &bulk("x"), 0, 9).is_some());
        assert!(judge("k", &bulk("6"), 6, 9).is_none());
        assert!(judge("k", &bulk("9"), 6, 9).is_none());
        assert!(judge("k", &redis::Value::Nil, 0, 9).is_none());
    }

    #[test]
    fn recovery_is_the_start_of_a_steady_run_after_a_failure_or_a_pause() {
        let since = Instant::now();
        let at = |ms: u64| since + Duration::from_millis(ms);
        let steady = |from: u64| (0..STEADY as u64).map(move |n| (at(from + 10 * n), true));
        // a failure, a lone success, another failure, then steady writes
        let mut writes = vec![
            (at(5), true),
            (at(10), false),
            (at(20), true),
            (at(30), false),
        ];
        writes.extend(steady(40));
        assert_eq!(recovery(&writes, since), Some(at(40)));
        assert_eq!(recovery(&writes[..20], since), None);
        // a write that hung for 2 s and then landed: the pause is the outage
        let mut hung = vec![(at(5), true), (at(2005), true)];
        hung.extend(steady(2015));
        assert_eq!(recovery(&hung, since), Some(at(2005)));
        assert_eq!(longest_gap(&hung, since), Duration::from_millis(2000));
        let healthy: Vec<_> = (1..=100).map(|n| (at(10 * n), true)).collect();
        assert_eq!(recovery(&healthy, since), Some(since));
    }
}
