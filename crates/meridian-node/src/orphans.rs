//! Orphan keys: keys a primary holds in slots its shard no longer owns (Redis
//! Cluster's "dirty slots").
//!
//! A resharding batch deletes its keys from the source after the destination has
//! them, and the map moving the slots follows. When the source dies before those
//! deletes reached its replica (replication is asynchronous), the promoted replica
//! keeps them: clients are redirected away from them, but they take memory, are
//! counted by DBSIZE and listed by SCAN / KEYS, and would come back as stale values
//! if the slot ever returned to this shard.
//!
//! The rule: when a map this node accepts takes a slot away from the node's shard
//! (its shard owned it in the previous map, another shard owns it now), the slot is
//! marked dirty, on primaries and replicas alike. A primary named by the current map
//! deletes the keys it holds in dirty slots, in bounded batches under one store
//! shard lock each, re-checking before every batch that it is still the primary,
//! that another shard owns the slot and that the slot is not in transit (MIGRATING,
//! IMPORTING, or a `MERIDIAN.MIGRATE SLOT` running). The deletes go to the replicas
//! as `DEL` (so they drop the orphans too) and invalidate CLIENT TRACKING caches, but
//! are not region events: the owner still holds the data.
//!
//! Only slots that left this node's shard are cleaned, not every slot another shard
//! owns: a replica of an importing destination holds the keys moved so far (the
//! batches wait for it, so that a failover of the destination keeps them), and when it
//! is promoted before the map hands it the slot those keys are the only copy; the
//! resumed migration completes the slot on it. A replica never deletes on its own: it
//! forgets dirty slots that hold no keys any more (its primary's deletes arrived) and
//! keeps the others in case it is promoted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_topology::{NodeRole, SLOT_COUNT, TopologyMap};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::migration::SlotMigrations;
use crate::state::Shared;
use crate::store::now_ms;

/// Keys deleted per batch (one store shard lock hold, one replicated `DEL`).
const BATCH_KEYS: usize = 256;
/// Slab positions looked at per batch.
const BATCH_SCAN: usize = 4096;
/// How often a sweep held back by CLIENT PAUSE looks again.
const PAUSE_RETRY: Duration = Duration::from_millis(50);

/// Dirty slots and the sweeper's wake-up.
#[derive(Default)]
pub struct Orphans {
    dirty: Mutex<Dirty>,
    wake: Notify,
    /// Orphan keys deleted since start (`INFO stats` `orphan_keys_deleted`).
    pub deleted: AtomicU64,
}

#[derive(Default)]
struct Dirty {
    /// Slots that left this node's shard in a map it accepted and may still hold keys.
    slots: BTreeSet<u16>,
    /// Bumped by every map that marked slots: a prune decided on an older map
    /// must not forget what a newer one marked.
    generation: u64,
}

impl Orphans {
    /// Called with the map being replaced and the one accepted (under the topology
    /// lock): marks the slots the node's shard owned in `old` that another shard owns
    /// in `new`.
    pub fn record_transition(&self, old: &TopologyMap, new: &TopologyMap, me: &str) {
        let (Some(before), Some(after)) = (old.shard_of_node(me), new.shard_of_node(me)) else {
            return;
        };
        if before.slots == after.slots {
            return;
        }
        let lost: Vec<u16> = before
            .slot_set()
            .ranges()
            .flat_map(|range| range.start..=range.end)
            .filter(|&slot| !after.owns_slot(slot) && new.owner_of_slot(slot).is_some())
            .collect();
        if !lost.is_empty() {
            let mut dirty = self.dirty.lock();
            dirty.slots.extend(lost);
            dirty.generation += 1;
        }
    }

    /// Asks the sweeper to look at the dirty slots (after every accepted map).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// How many slots are marked dirty.
    pub fn dirty_slots(&self) -> usize {
        self.dirty.lock().slots.len()
    }
}

/// Whether the map names this node primary and it follows no primary.
fn is_primary(shared: &Shared, map: &TopologyMap) -> bool {
    matches!(map.role_of(&shared.node_id), Some(NodeRole::Primary)) && !shared.repl.is_replica()
}

/// Whether the keys of `slot` may be deleted now: another shard owns it and it is
/// not in transit here.
fn deletable(map: &TopologyMap, me: &str, migrations: &SlotMigrations, slot: u16) -> bool {
    let Some(owner) = map.owner_of_slot(slot) else {
        return false;
    };
    owner.role_of(me).is_none()
        && !migrations.migrating.contains_key(&slot)
        && !migrations.importing.contains_key(&slot)
        && !migrations.moving.contains_key(&slot)
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
    let Some(map) = shared.topology.read().clone() else {
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
    let Some(map) = shared.topology.read().clone() else {
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
            && allowed[usize::from(entry.slot)]
        {
            victims.push(position as u32);
        }
        position += 1;
    }
    *cursor = position;
    let mut keys: Vec<Box<[u8]>> = Vec::with_capacity(victims.len());
    // ascending: a removal only trims vacant slab positions after the last entry
    for victim in victims {
        keys.push(shard.remove(victim).key);
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
        let Some(map) = shared.topology.read().clone() else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_topology::{NodeAddr, ShardTopology, SlotRange};

    fn node(id: &str) -> NodeAddr {
        NodeAddr {
            id: id.into(),
            ip: "127.0.0.1".into(),
            port: 7000,
        }
    }

    fn map(epoch: u64, first: Vec<SlotRange>, second: Vec<SlotRange>) -> TopologyMap {
        TopologyMap {
            epoch,
            cluster: "demo".into(),
            region: "eu".into(),
            shards: vec![
                ShardTopology {
                    index: 0,
                    slots: first,
                    primary: node("p0"),
                    replicas: vec![node("r0")],
                },
                ShardTopology {
                    index: 1,
                    slots: second,
                    primary: node("p1"),
                    replicas: Vec::new(),
                },
            ],
        }
    }

    fn range(start: u16, end: u16) -> SlotRange {
        SlotRange { start, end }
    }

    #[test]
    fn only_slots_the_shard_lost_to_another_shard_are_marked() {
        let before = map(1, vec![range(0, 8191)], vec![range(8192, 16383)]);
        let after = map(
            2,
            vec![range(0, 99), range(110, 8191)],
            vec![range(100, 109), range(8192, 16383)],
        );
        let orphans = Orphans::default();
        // the shard that gained slots marks nothing; a map that changes nothing neither
        orphans.record_transition(&before, &after, "p1");
        orphans.record_transition(&before, &before, "p0");
        assert_eq!(orphans.dirty_slots(), 0);
        // primary and replica of the shard that lost them mark the same slots
        orphans.record_transition(&before, &after, "r0");
        orphans.record_transition(&before, &after, "p0");
        assert_eq!(
            orphans
                .dirty
                .lock()
                .slots
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            (100..110).collect::<Vec<u16>>()
        );
        assert_eq!(orphans.dirty.lock().generation, 2);
        // slots left unowned (a PARTIAL map) are not another shard's: not marked
        let partial = map(3, vec![range(0, 8191)], vec![range(8200, 16383)]);
        let orphans = Orphans::default();
        orphans.record_transition(
            &map(2, vec![range(0, 8199)], vec![range(8200, 16383)]),
            &partial,
            "p0",
        );
        assert_eq!(orphans.dirty_slots(), 0);
        // a node the new map leaves out marks nothing
        orphans.record_transition(&before, &after, "gone");
        assert_eq!(orphans.dirty_slots(), 0);
    }
}
