//! The orphan sweeper: the background task that deletes the keys a primary holds
//! in dirty slots (see the parent module for the rule), in bounded batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_topology::{NodeRole, SLOT_COUNT, TopologyMap};

use super::deletable;
use crate::state::Shared;
use crate::store::now_ms;

/// Keys deleted per batch (one store shard lock hold, one replicated `DEL`).
const BATCH_KEYS: usize = 256;
/// Slab positions looked at per batch.
const BATCH_SCAN: usize = 4096;
/// How often a sweep held back by CLIENT PAUSE looks again.
const PAUSE_RETRY: Duration = Duration::from_millis(50);

/// What one batch found.
enum Step {
    /// Deleted this many; more of the shard is left to look at.
    More(usize),
    /// Deleted this many; the shard is done.
    Done(usize),
    /// CLIENT PAUSE holds deletions: try again shortly.
    Paused,
    /// No longer a primary (or no map): stop the sweep.
    Stop,
}

/// Whether the map names this node primary and it follows no primary.
fn is_primary(shared: &Shared, map: &TopologyMap) -> bool {
    matches!(map.role_of(&shared.node_id), Some(NodeRole::Primary)) && !shared.repl.is_replica()
}

/// Forgets dirty slots the node's shard owns again under the current map, and
/// those without keys (cleaned, or the primary's deletes reached this replica).
fn prune(shared: &Shared) {
    let (slots, generation) = {
        let dirty = shared.orphans.dirty.lock();
        (dirty.slots.clone(), dirty.generation)
    };
    if slots.is_empty() {
        return;
    }
    let Some(map) = shared.topology.load_full() else {
        return;
    };
    let shard = map.shard_of_node(&shared.node_id);
    let clean: Vec<u16> = slots
        .into_iter()
        .filter(|&slot| {
            shard.is_some_and(|shard| shard.owns_slot(slot))
                || shared.db.count_keys_in_slot(slot) == 0
        })
        .collect();
    let mut dirty = shared.orphans.dirty.lock();
    // a map accepted meanwhile may have marked some of them again: next time
    if dirty.generation == generation {
        for slot in clean {
            dirty.slots.remove(&slot);
        }
    }
}

/// One batch on store shard `index`: deletes up to [`BATCH_KEYS`] keys of the
/// deletable ones among `slots`, looking at slab positions from `cursor` on.
fn delete_batch(
    shared: &Shared,
    index: usize,
    slots: &[u16],
    allowed: &mut [bool],
    cursor: &mut usize,
) -> Step {
    let db = &shared.db;
    let mut shard = db.lock(index);
    let now = now_ms();
    if db.stats.deletions_held(now) {
        return Step::Paused;
    }
    // re-checked under the shard lock: a write routed by a newer map waits for it
    let Some(map) = shared.topology.load_full() else {
        return Step::Stop;
    };
    if !is_primary(shared, &map) {
        return Step::Stop;
    }
    let mut any = false;
    {
        let migrations = shared.migrations.read();
        for &slot in slots {
            let ok =
                deletable(&map, &shared.node_id, &migrations, slot) && shard.keys_in_slot(slot) > 0;
            allowed[usize::from(slot)] = ok;
            any |= ok;
        }
    }
    if !any {
        return Step::Done(0);
    }
    let end = shard.slab_len().min(cursor.saturating_add(BATCH_SCAN));
    let mut victims = Vec::new();
    let mut position = *cursor;
    while position < end && victims.len() < BATCH_KEYS {
        if let Some(entry) = shard.entry_at(position)
            && allowed[usize::from(entry.slot())]
        {
            victims.push(position as u32);
        }
        position += 1;
    }
    *cursor = position;
    let mut keys: Vec<Box<[u8]>> = Vec::with_capacity(victims.len());
    // ascending: a removal only trims vacant slab positions after the last entry
    for victim in victims {
        keys.push(shard.remove(victim).key().into());
    }
    if !keys.is_empty() && shared.repl.log.is_active() {
        // the replicas drop them in the same order, still under the shard lock
        let mut command: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        command.push(b"DEL");
        command.extend(keys.iter().map(|key| &key[..]));
        shared.repl.log.append_command(&command);
    }
    let count = keys.len();
    shared
        .orphans
        .deleted
        .fetch_add(count as u64, Ordering::Relaxed);
    if *cursor >= shard.slab_len() {
        Step::Done(count)
    } else {
        Step::More(count)
    }
}

/// One pass over the dirty slots; returns the keys deleted, or None when the
/// node stopped being a primary on the way.
async fn sweep(shared: &Shared) -> Option<u64> {
    let dirty: Vec<u16> = shared.orphans.dirty.lock().slots.iter().copied().collect();
    let mut allowed = vec![false; usize::from(SLOT_COUNT)];
    let mut removed = 0u64;
    for index in 0..shared.db.shard_count() {
        let slots: Vec<u16> = dirty
            .iter()
            .copied()
            .filter(|&slot| shared.db.shard_of_slot(slot) == index)
            .collect();
        if slots.is_empty() {
            continue;
        }
        let mut cursor = 0;
        loop {
            match delete_batch(shared, index, &slots, &mut allowed, &mut cursor) {
                Step::More(count) => removed += count as u64,
                Step::Done(count) => {
                    removed += count as u64;
                    break;
                }
                Step::Paused => {
                    if shared.shutting_down.load(Ordering::Relaxed) {
                        return None;
                    }
                    tokio::time::sleep(PAUSE_RETRY).await;
                    continue;
                }
                Step::Stop => return None,
            }
            // other tasks run between batches
            tokio::task::yield_now().await;
        }
        for &slot in &slots {
            allowed[usize::from(slot)] = false;
        }
    }
    Some(removed)
}

/// Background task: after every accepted map, forgets dirty slots that no longer
/// need cleaning and, on a primary, deletes the orphan keys.
pub async fn run_forever(shared: Arc<Shared>) {
    loop {
        shared.orphans.wake.notified().await;
        prune(&shared);
        let Some(map) = shared.topology.load_full() else {
            continue;
        };
        let dirty = shared.orphans.dirty_slots();
        if dirty == 0 || !is_primary(&shared, &map) {
            continue;
        }
        match sweep(&shared).await {
            Some(removed) => {
                prune(&shared);
                tracing::info!(
                    epoch = map.epoch,
                    dirty_slots = dirty,
                    removed,
                    left = shared.orphans.dirty_slots(),
                    "orphan keys deleted from slots another shard owns"
                );
            }
            None => tracing::info!(
                epoch = map.epoch,
                "orphan key cleanup stopped: no longer a primary"
            ),
        }
    }
}
