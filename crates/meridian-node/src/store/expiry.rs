//! Active expiry: Redis's adaptive sampling cycle. Ten times a second, sample
//! volatile keys shard by shard; keep going on a shard while more than a quarter
//! of the sample was expired, and stop once the cycle's time budget is spent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Db, now_ms};

const SAMPLES_PER_ROUND: usize = 20;
/// 25% of the 100 ms period, like Redis's slow cycle.
const CYCLE_BUDGET: Duration = Duration::from_millis(25);
const PERIOD: Duration = Duration::from_millis(100);

/// Runs one bounded cycle starting at shard `start`; returns the next shard
/// to start from and the number of keys removed.
pub fn run_cycle(db: &Db, start: usize) -> (usize, usize) {
    let began = Instant::now();
    let shard_count = db.shard_count();
    let mut removed = 0;
    for step in 0..shard_count {
        let index = (start + step) % shard_count;
        loop {
            // a busy shard waits for the next cycle: never park a runtime thread here
            let Some(mut shard) = db.try_lock(index) else {
                break;
            };
            let (sampled, expired) = shard.expire_sample(SAMPLES_PER_ROUND, now_ms());
            drop(shard);
            removed += expired;
            if began.elapsed() > CYCLE_BUDGET {
                return (index, removed);
            }
            if sampled == 0 || expired * 4 <= sampled {
                break;
            }
        }
    }
    (start, removed)
}

/// Background task: runs the active expiry cycle forever on the store `db` finds
/// in `owner`.
pub async fn run_forever<T: Send + Sync>(owner: Arc<T>, db: fn(&T) -> &Db) {
    let mut interval = tokio::time::interval(PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    loop {
        interval.tick().await;
        next = run_cycle(db(&owner), next).0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Access, Policy, Value};

    #[test]
    fn cycle_removes_expired_keys_without_access() {
        let db = Db::new(4, 0, Policy::Sieve);
        let mut access = Access::direct(&db);
        let past = now_ms() - 1;
        for index in 0..500 {
            let key = format!("k{index}");
            let expire_at = if index < 400 { past } else { now_ms() + 60_000 };
            access.with_key(key.as_bytes(), |shard, slot| {
                shard.insert(key.as_bytes(), slot, Value::Str(b"v".to_vec()), expire_at)
            });
        }
        let mut next = 0;
        for _ in 0..50 {
            next = run_cycle(&db, next).0;
        }
        // adaptive sampling stops at <=25% expired per sample, so a few may remain
        assert!(db.len() < 150, "{} keys left", db.len());
        assert!(db.len() >= 100);
    }
}
