//! The write-behind flusher: sends the queue's due entries to the origin in
//! concurrent batches, drops an entry once the origin took its latest write and tells
//! the replicas (`MERIDIAN.WRITEBEHIND FLUSHED <key> <version>` in the replication
//! stream), backs a refused key off. A replica never flushes: its copy of the queue
//! waits for a promotion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::write_behind::{PendingOp, PendingWrite};
use super::{FLUSHED, Origin, WRITE_BEHIND_COMMAND};
use crate::state::Shared;

/// Runs until aborted: a round whenever a write was queued or the interval passed.
pub async fn run_forever(shared: Arc<Shared>) {
    let Some(origin) = shared.origin.clone() else {
        return;
    };
    let Some(queue) = origin.write_behind.as_ref() else {
        return;
    };
    let interval = queue.config.flush_interval;
    loop {
        let started = tokio::time::Instant::now();
        let sent = flush_round(&shared, &origin).await;
        if sent >= queue.config.batch {
            // more is due: no pause
            continue;
        }
        let idle = queue.is_empty();
        tokio::select! {
            () = queue.queued.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        // the first write after an idle spell goes at once; otherwise at most one
        // round per interval: writes arriving meanwhile coalesce, and a queue backing
        // off is not scanned at every write
        if !idle {
            tokio::time::sleep_until(started + interval).await;
        }
    }
}

/// Flushes until the queue is empty or `deadline` passed (shutdown); false when
/// writes are left.
pub async fn final_flush(shared: &Shared, deadline: Duration) -> bool {
    let Some(origin) = shared.origin.clone() else {
        return true;
    };
    let Some(queue) = origin.write_behind.as_ref() else {
        return true;
    };
    // the aborted flusher's requests were dropped with it: their entries go again
    queue.release_in_flight();
    let flushed = tokio::time::timeout(deadline, async {
        while !queue.is_empty() && !shared.repl.is_replica() {
            if flush_round(shared, &origin).await == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    let left = queue.stats(Instant::now()).depth;
    if flushed.is_err() || left > 0 {
        tracing::warn!(
            pending = left,
            "write-behind writes not at the origin at shutdown"
        );
    }
    left == 0
}

/// One round: every due entry sent concurrently; returns how many were sent.
async fn flush_round(shared: &Shared, origin: &Arc<Origin>) -> usize {
    let Some(queue) = origin.write_behind.as_ref() else {
        return 0;
    };
    if shared.repl.is_replica() {
        return 0;
    }
    let batch = queue.take_due(Instant::now());
    let sent = batch.len();
    let mut requests = JoinSet::new();
    for write in batch {
        let origin = origin.clone();
        requests.spawn(async move {
            let value = match &write.op {
                PendingOp::Put(value) => Some(value.clone()),
                PendingOp::Delete => None,
            };
            let result = origin.send(&write.key, value).await;
            (write, result)
        });
    }
    let mut answers = Vec::with_capacity(sent);
    let (mut failed, mut first_error) = (0, None);
    while let Some(joined) = requests.join_next().await {
        if let Ok((write, result)) = joined {
            let succeeded = result.is_ok();
            if let Err(error) = result {
                failed += 1;
                first_error.get_or_insert((write.key.clone(), error));
            }
            answers.push((write, succeeded));
        }
    }
    // one line per round, not per key: an origin outage fails every key
    if let Some((key, error)) = first_error {
        tracing::warn!(
            failed,
            sent,
            key = %String::from_utf8_lossy(&key),
            %error,
            "write-behind flush failed, retrying with backoff"
        );
    }
    if shared.repl.is_replica() {
        // demoted meanwhile: the new primary's stream decides what stays pending
        queue.release_in_flight();
        return sent;
    }
    // a request task that panicked left its entry in flight: released for the next round
    let lost = answers.len() < sent;
    let now = Instant::now();
    for (write, succeeded) in answers {
        if queue.complete(&write.key, write.version, succeeded, now) {
            acknowledge(shared, &write);
        }
    }
    if lost {
        queue.release_in_flight();
    }
    sent
}

/// Tells the replicas that `write` reached the origin, so a promoted replica does not
/// send it again (one that missed this still does: at-least-once).
fn acknowledge(shared: &Shared, write: &PendingWrite) {
    let log = &shared.repl.log;
    if log.is_active() && !shared.repl.is_replica() {
        let version = write.version.to_string();
        log.append_command(&[
            WRITE_BEHIND_COMMAND,
            FLUSHED,
            &write.key,
            version.as_bytes(),
        ]);
    }
}
