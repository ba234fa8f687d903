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
use std::sync::atomic::AtomicU64;

use meridian_topology::TopologyMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::migration::SlotMigrations;

pub mod sweep;

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
