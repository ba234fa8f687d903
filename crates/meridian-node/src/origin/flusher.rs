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
    let Some(interval) = origin
        .write_behind
        .as_ref()
        .map(|queue| queue.config.flush_interval)
    else {
        return;
    };
    loop {
        if let Some(queue) = origin.write_behind.as_ref() {
            tokio::select! {
                () = queue.queued.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        flush_round(&shared, &origin).await;
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
            let result = origin.write(&write.key, value).await;
            (write, result.is_ok())
        });
    }
    let mut answers = Vec::with_capacity(sent);
    while let Some(joined) = requests.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
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
