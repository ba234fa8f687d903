//! Pure resharding planner: the current map (as the nodes report it) and the desired
//! shard count → the next slot move.
//!
//! Nothing here remembers anything between reconciles: the target assignment, the slots
//! still to move and a move left half-done by a restarted operator are all derived from
//! the map and from the slots the nodes report MIGRATING / IMPORTING, so any operator
//! replica reaches the same next step.
//!
//! Target: the desired shards each end with 16384 / n slots (the remainder going to the
//! shards that hold the most already), shards at or above the desired count end with
//! none. Only slots above a shard's quota move, so the number of moved slots is minimal:
//! new shards take slots from the largest ones, removed shards give all of theirs away.

use std::collections::{BTreeMap, BTreeSet};

use meridian_topology::{SLOT_COUNT, ShardTopology, SlotSet, TopologyMap, cluster_node_id};

use crate::names::PodName;

/// Slots a node reports in transit (`CLUSTER NODES` markers of its own line), each with
/// the 40-hex cluster id of the peer node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenSlots {
    pub migrating: BTreeMap<u16, String>,
    pub importing: BTreeMap<u16, String>,
}

impl OpenSlots {
    /// Reads the `[slot->-id]` (migrating) and `[slot-<-id]` (importing) markers of the
    /// `myself` line of a `CLUSTER NODES` reply. Other lines and malformed markers are
    /// ignored.
    pub fn parse_cluster_nodes(text: &str) -> OpenSlots {
        let mut open = OpenSlots::default();
        let Some(line) = text.lines().find(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"))
        }) else {
            return open;
        };
        for marker in line.split_whitespace() {
            let Some(inner) = marker
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                continue;
            };
            let (slot, peer, migrating) = if let Some((slot, peer)) = inner.split_once("->-") {
                (slot, peer, true)
            } else if let Some((slot, peer)) = inner.split_once("-<-") {
                (slot, peer, false)
            } else {
                continue;
            };
            let Some(slot) = slot.parse::<u16>().ok().filter(|slot| *slot < SLOT_COUNT) else {
                continue;
            };
            if migrating {
                open.migrating.insert(slot, peer.to_string());
            } else {
                open.importing.insert(slot, peer.to_string());
            }
        }
        open
    }

    pub fn is_empty(&self) -> bool {
        self.migrating.is_empty() && self.importing.is_empty()
    }
}

/// What one node (by pod name) reported in transit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOpenSlots {
    pub pod: PodName,
    pub open: OpenSlots,
}

/// A batch of slots moving from one shard's primary to another's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMove {
    pub from: u32,
    pub to: u32,
    /// Ascending.
    pub slots: Vec<u16>,
}

impl SlotMove {
    /// The slots as compact ranges, e.g. `5461-5524`.
    pub fn ranges(&self) -> Vec<String> {
        let mut set = SlotSet::new();
        for slot in &self.slots {
            set.insert(*slot);
        }
        set.ranges().map(|range| range.to_string()).collect()
    }
}

/// The planner's verdict for the next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReshardStep {
    /// The map has the desired shards and every slot sits at its target.
    Done,
    /// Move `batch`; `resumed` when the nodes already report its slots in transit (an
    /// earlier step was interrupted and is finished rather than restarted).
    Move { batch: SlotMove, resumed: bool },
    /// Every slot is at its target; the shards in `removed` own nothing and leave the map.
    DropShards { removed: Vec<u32> },
    /// Resharding cannot proceed from this map (the message says why).
    Blocked(String),
}

/// Next step plus progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReshardPlan {
    pub step: ReshardStep,
    /// Slots not yet at their target (including the batch of this step).
    pub remaining: usize,
}

/// One slot that has to change owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PendingMove {
    pub slot: u16,
    pub from: u32,
    pub to: u32,
}

/// Shard count the region must keep running: the desired count, or more while shards
/// above it are still in the map (they are drained, then dropped from the map, and only
/// then their StatefulSets go away).
pub fn effective_shards(current: Option<&TopologyMap>, desired: u16) -> u16 {
    current
        .into_iter()
        .flat_map(|map| map.shards.iter())
        .filter_map(|shard| u16::try_from(shard.index).ok()?.checked_add(1))
        .fold(desired, u16::max)
}

/// Shards at or above `desired` that the map still lists (draining, or drained but not
/// yet dropped): their StatefulSets must stay.
pub fn draining_shards(current: Option<&TopologyMap>, desired: u16) -> BTreeSet<u16> {
    current
        .into_iter()
        .flat_map(|map| map.shards.iter())
        .filter_map(|shard| u16::try_from(shard.index).ok())
        .filter(|index| *index >= desired)
        .collect()
}

/// Every slot that is not where the target wants it, in slot order, from a map that
/// covers every slot. Deterministic: givers give their highest slots, receivers (by
/// index) take the pool in ascending order.
pub fn pending_moves(current: &TopologyMap, desired: u16) -> Result<Vec<PendingMove>, String> {
    if desired == 0 {
        return Err("the desired shard count is 0".into());
    }
    current
        .validate()
        .map_err(|error| format!("the current map is not complete: {error}"))?;
    let desired_indexes: Vec<u32> = (0..u32::from(desired)).collect();
    let counts: BTreeMap<u32, usize> = current
        .shards
        .iter()
        .map(|shard| (shard.index, shard.slot_set().len()))
        .collect();
    if let Some(missing) = desired_indexes
        .iter()
        .find(|index| !counts.contains_key(index))
    {
        return Err(format!("shard {missing} is not in the map yet"));
    }
    let total = usize::from(SLOT_COUNT);
    let base = total / usize::from(desired);
    let extra = total % usize::from(desired);
    // The remainder goes to the shards holding the most, so fewer slots move.
    let mut by_size = desired_indexes.clone();
    by_size.sort_by_key(|index| (std::cmp::Reverse(counts[index]), *index));
    let quota: BTreeMap<u32, usize> = by_size
        .iter()
        .enumerate()
        .map(|(rank, index)| (*index, base + usize::from(rank < extra)))
        .collect();

    let mut pool: Vec<(u16, u32)> = Vec::new();
    for shard in &current.shards {
        let slots: Vec<u16> = shard.slot_set().iter().collect();
        let keep = quota.get(&shard.index).copied().unwrap_or(0);
        let surplus = slots.len().saturating_sub(keep);
        pool.extend(
            slots[slots.len() - surplus..]
                .iter()
                .map(|slot| (*slot, shard.index)),
        );
    }
    pool.sort_unstable();
    let mut pool = pool.into_iter();
    let mut moves = Vec::new();
    for index in &desired_indexes {
        let deficit = quota[index].saturating_sub(counts[index]);
        for (slot, from) in pool.by_ref().take(deficit) {
            moves.push(PendingMove {
                slot,
                from,
                to: *index,
            });
        }
    }
    moves.sort_unstable();
    Ok(moves)
}

/// Slots in transit according to the nodes, resolved against the map: the owner in the
/// map is the source (after a failover that is the promoted replica), the destination
/// is the shard of the node reporting IMPORTING, else the shard of the MIGRATING peer.
fn in_flight(current: &TopologyMap, reports: &[NodeOpenSlots]) -> BTreeMap<u16, (u32, u32)> {
    let shard_of_cluster_id = |id: &str| {
        current
            .shards
            .iter()
            .find(|shard| shard.nodes().any(|node| cluster_node_id(&node.id) == id))
            .map(|shard| shard.index)
    };
    let owner = |slot: u16| current.owner_of_slot(slot).map(|shard| shard.index);
    let mut found: BTreeMap<u16, (u32, u32)> = BTreeMap::new();
    for report in reports {
        let Some(reporter) = current.shard_of_node(report.pod.as_str()) else {
            continue;
        };
        for slot in report.open.importing.keys() {
            if let Some(from) = owner(*slot).filter(|from| *from != reporter.index) {
                found.insert(*slot, (from, reporter.index));
            }
        }
    }
    for report in reports {
        let Some(reporter) = current.shard_of_node(report.pod.as_str()) else {
            continue;
        };
        for (slot, peer) in &report.open.migrating {
            if found.contains_key(slot) || owner(*slot) != Some(reporter.index) {
                continue;
            }
            if let Some(to) = shard_of_cluster_id(peer).filter(|to| *to != reporter.index) {
                found.insert(*slot, (reporter.index, to));
            }
        }
    }
    found
}

/// The next step towards `desired` shards. `max_batch` bounds how many slots one step
/// moves (one epoch bump per step).
pub fn plan_step(
    current: &TopologyMap,
    desired: u16,
    open: &[NodeOpenSlots],
    max_batch: usize,
) -> ReshardPlan {
    let moves = match pending_moves(current, desired) {
        Ok(moves) => moves,
        Err(reason) => {
            return ReshardPlan {
                step: ReshardStep::Blocked(reason),
                remaining: 0,
            };
        }
    };
    let resume = in_flight(current, open);
    let mut remaining = moves.len()
        + resume
            .keys()
            .filter(|slot| !moves.iter().any(|pending| pending.slot == **slot))
            .count();
    if let Some((_, (from, to))) = resume.iter().next() {
        let (from, to) = (*from, *to);
        let slots = resume
            .iter()
            .filter(|(_, pair)| **pair == (from, to))
            .map(|(slot, _)| *slot)
            .collect();
        return ReshardPlan {
            step: ReshardStep::Move {
                batch: SlotMove { from, to, slots },
                resumed: true,
            },
            remaining,
        };
    }
    if let Some(first) = moves.first() {
        let slots = moves
            .iter()
            .filter(|pending| pending.from == first.from && pending.to == first.to)
            .take(max_batch.max(1))
            .map(|pending| pending.slot)
            .collect();
        return ReshardPlan {
            step: ReshardStep::Move {
                batch: SlotMove {
                    from: first.from,
                    to: first.to,
                    slots,
                },
                resumed: false,
            },
            remaining,
        };
    }
    remaining = 0;
    let removed: Vec<u32> = current
        .shards
        .iter()
        .map(|shard| shard.index)
        .filter(|index| *index >= u32::from(desired))
        .collect();
    ReshardPlan {
        step: if removed.is_empty() {
            ReshardStep::Done
        } else {
            ReshardStep::DropShards { removed }
        },
        remaining,
    }
}

/// `current` with the batch's slots owned by its destination shard, at `epoch`.
pub fn map_after_move(current: &TopologyMap, batch: &SlotMove, epoch: u64) -> TopologyMap {
    let moving: BTreeSet<u16> = batch.slots.iter().copied().collect();
    let shards = current
        .shards
        .iter()
        .map(|shard| {
            let mut set = shard.slot_set();
            for slot in &moving {
                if shard.index == batch.to {
                    set.insert(*slot);
                } else {
                    set.remove(*slot);
                }
            }
            ShardTopology {
                slots: set.ranges().collect(),
                ..shard.clone()
            }
        })
        .collect();
    TopologyMap {
        epoch,
        shards,
        ..current.clone()
    }
}

/// `current` without the shards in `removed`, at `epoch`.
pub fn map_without_shards(current: &TopologyMap, removed: &[u32], epoch: u64) -> TopologyMap {
    TopologyMap {
        epoch,
        shards: current
            .shards
            .iter()
            .filter(|shard| !removed.contains(&shard.index))
            .cloned()
            .collect(),
        ..current.clone()
    }
}

/// Pod names in the order a post-move map is pushed: the destination primary first (it
/// starts serving the slots without ASKING), then the source primary (it stops
/// redirecting with ASK and answers MOVED), then every other node of `map`. Until the
/// source has the map, its MIGRATING state keeps sending clients to the destination.
pub fn push_order(map: &TopologyMap, batch: &SlotMove) -> Vec<PodName> {
    let primary_of = |index: u32| {
        map.shards
            .iter()
            .find(|shard| shard.index == index)
            .map(|shard| PodName::of(&shard.primary))
    };
    let mut order: Vec<PodName> = [primary_of(batch.to), primary_of(batch.from)]
        .into_iter()
        .flatten()
        .collect();
    for node in map.nodes() {
        if !order.iter().any(|pod| *pod == node.id) {
            order.push(PodName::of(node));
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_topology::{NodeAddr, SlotRange, split_evenly};

    fn node(id: String) -> NodeAddr {
        NodeAddr {
            id,
            ip: "127.0.0.1".into(),
            port: 6379,
        }
    }

    fn shard(index: u32, slots: Vec<SlotRange>) -> ShardTopology {
        ShardTopology {
            index,
            slots,
            primary: node(format!("r-{index}-0")),
            replicas: vec![node(format!("r-{index}-1"))],
        }
    }

    /// `shards` shards split evenly, plus `empty` more shards without slots.
    fn even_map(shards: u16, empty: u16) -> TopologyMap {
        let mut list: Vec<ShardTopology> = split_evenly(shards)
            .into_iter()
            .enumerate()
            .map(|(index, range)| shard(index as u32, vec![range]))
            .collect();
        for index in shards..shards + empty {
            list.push(shard(u32::from(index), Vec::new()));
        }
        TopologyMap {
            epoch: 7,
            cluster: "orders".into(),
            region: "eu".into(),
            shards: list,
        }
    }

    fn counts(map: &TopologyMap) -> Vec<usize> {
        map.shards
            .iter()
            .map(|shard| shard.slot_set().len())
            .collect()
    }

    /// Runs the planner to completion (no nodes in transit), returning the final map and
    /// how many slots moved.
    fn run_to_completion(mut map: TopologyMap, desired: u16, batch: usize) -> (TopologyMap, usize) {
        let mut moved = 0;
        for _ in 0..100_000 {
            let plan = plan_step(&map, desired, &[], batch);
            match plan.step {
                ReshardStep::Done => return (map, moved),
                ReshardStep::Move { batch, resumed } => {
                    assert!(!resumed);
                    assert_ne!(batch.from, batch.to);
                    moved += batch.slots.len();
                    map = map_after_move(&map, &batch, map.epoch + 1);
                    map.validate().expect("every intermediate map is complete");
                }
                ReshardStep::DropShards { removed } => {
                    map = map_without_shards(&map, &removed, map.epoch + 1);
                }
                ReshardStep::Blocked(reason) => panic!("blocked: {reason}"),
            }
        }
        panic!("planner did not converge");
    }

    fn balanced(map: &TopologyMap) -> bool {
        let counts = counts(map);
        let (min, max) = (counts.iter().min(), counts.iter().max());
        matches!((min, max), (Some(min), Some(max)) if max - min <= 1)
            && counts.iter().sum::<usize>() == usize::from(SLOT_COUNT)
    }

    #[test]
    fn scale_out_moves_only_what_the_new_shard_needs() {
        let start = even_map(2, 1);
        let moves = pending_moves(&start, 3).unwrap();
        // the new shard ends with 5461 (16384 = 5462 + 5461 + 5461), nothing else moves
        assert_eq!(moves.len(), 5461);
        assert!(moves.iter().all(|pending| pending.to == 2));
        let from_zero = moves.iter().filter(|pending| pending.from == 0).count();
        assert!((2730..=2731).contains(&from_zero), "{from_zero}");
        let (done, moved) = run_to_completion(start, 3, 64);
        assert_eq!(moved, 5461);
        assert!(balanced(&done), "{:?}", counts(&done));
        // one epoch per batch; a batch has one source, so each giver's share is batched
        assert_eq!(
            done.epoch - 7,
            (2730u64.div_ceil(64) + 2731u64.div_ceil(64))
        );
    }

    #[test]
    fn three_to_four_to_two_stays_balanced_with_minimal_moves() {
        let (four, moved) = run_to_completion(even_map(3, 1), 4, 100);
        assert_eq!(moved, 4096);
        assert!(balanced(&four));
        assert_eq!(four.shards.len(), 4);
        // scale-in: shards 2 and 3 give everything away, 0 and 1 keep theirs
        let moves = pending_moves(&four, 2).unwrap();
        assert_eq!(moves.len(), 8192);
        assert!(
            moves
                .iter()
                .all(|pending| pending.from >= 2 && pending.to < 2)
        );
        let (two, moved) = run_to_completion(four, 2, 100);
        assert_eq!(moved, 8192);
        assert_eq!(two.shards.len(), 2, "drained shards left the map");
        assert_eq!(counts(&two), [8192, 8192]);
    }

    #[test]
    fn done_when_balanced_and_idempotent() {
        for shards in [1u16, 2, 3, 5, 16] {
            let map = even_map(shards, 0);
            let plan = plan_step(&map, shards, &[], 10);
            assert_eq!(
                plan,
                ReshardPlan {
                    step: ReshardStep::Done,
                    remaining: 0
                },
                "{shards} shards"
            );
        }
        let (done, _) = run_to_completion(even_map(3, 2), 5, 500);
        assert_eq!(plan_step(&done, 5, &[], 500).step, ReshardStep::Done);
    }

    #[test]
    fn batches_share_one_source_and_destination() {
        let plan = plan_step(&even_map(2, 1), 3, &[], 16);
        let ReshardStep::Move { batch, resumed } = plan.step else {
            panic!("expected a move: {plan:?}");
        };
        assert!(!resumed);
        assert_eq!(plan.remaining, 5461);
        assert_eq!(batch.slots.len(), 16);
        assert_eq!((batch.from, batch.to), (0, 2));
        assert!(batch.slots.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(
            batch.ranges(),
            [format!("{}-{}", batch.slots[0], batch.slots[15])]
        );
    }

    #[test]
    fn resumes_a_half_migrated_slot_from_node_reports() {
        let map = even_map(2, 1);
        // shard 0 owns slot 100; an interrupted step left it IMPORTING on shard 2 and
        // MIGRATING on shard 0
        let id_source = cluster_node_id("r-0-0");
        let id_dest = cluster_node_id("r-2-0");
        let open = [
            NodeOpenSlots {
                pod: "r-2-0".into(),
                open: OpenSlots {
                    importing: BTreeMap::from([(100, id_source.clone())]),
                    ..OpenSlots::default()
                },
            },
            NodeOpenSlots {
                pod: "r-0-0".into(),
                open: OpenSlots {
                    migrating: BTreeMap::from([(100, id_dest.clone()), (101, id_dest)]),
                    ..OpenSlots::default()
                },
            },
        ];
        let plan = plan_step(&map, 3, &open, 64);
        assert_eq!(
            plan.step,
            ReshardStep::Move {
                batch: SlotMove {
                    from: 0,
                    to: 2,
                    slots: vec![100, 101]
                },
                resumed: true
            }
        );
        // 100 and 101 are not in the planned set (shard 0 gives its highest slots)
        assert_eq!(plan.remaining, 5461 + 2);
        // finished forward even when the user went back to 2 shards meanwhile (the
        // slot's keys may already be split between both); draining brings it back later
        let plan = plan_step(&map, 2, &open[..1], 64);
        assert_eq!(plan.remaining, 1);
        assert!(matches!(
            plan.step,
            ReshardStep::Move { ref batch, resumed: true } if batch.slots == [100] && batch.to == 2
        ));
    }

    #[test]
    fn stale_markers_are_ignored() {
        let map = even_map(2, 1);
        // importing a slot the reporter already owns, migrating a slot it does not own
        let open = [NodeOpenSlots {
            pod: "r-0-0".into(),
            open: OpenSlots {
                importing: BTreeMap::from([(5, cluster_node_id("r-1-0"))]),
                migrating: BTreeMap::from([(9000, cluster_node_id("r-1-0"))]),
            },
        }];
        let plan = plan_step(&map, 2, &open, 64);
        assert_eq!(plan.step, ReshardStep::DropShards { removed: vec![2] });
    }

    #[test]
    fn blocked_when_a_desired_shard_is_not_in_the_map() {
        let map = even_map(2, 0);
        let plan = plan_step(&map, 3, &[], 64);
        assert_eq!(
            plan.step,
            ReshardStep::Blocked("shard 2 is not in the map yet".into())
        );
        let mut gap = even_map(2, 0);
        gap.shards[1].slots.clear();
        assert!(matches!(
            plan_step(&gap, 2, &[], 64).step,
            ReshardStep::Blocked(_)
        ));
    }

    #[test]
    fn effective_and_draining_shards_follow_the_map() {
        let four = even_map(4, 0);
        assert_eq!(effective_shards(Some(&four), 2), 4);
        assert_eq!(effective_shards(Some(&four), 6), 6);
        assert_eq!(effective_shards(None, 3), 3);
        assert_eq!(draining_shards(Some(&four), 2), BTreeSet::from([2, 3]));
        assert!(draining_shards(Some(&four), 4).is_empty());
        assert!(draining_shards(None, 1).is_empty());
    }

    #[test]
    fn push_order_is_destination_source_then_everyone() {
        let map = even_map(3, 0);
        let batch = SlotMove {
            from: 2,
            to: 0,
            slots: vec![16000],
        };
        let order = push_order(&map, &batch);
        assert_eq!(&order[..2], ["r-0-0", "r-2-0"]);
        assert_eq!(order.len(), 6);
        let after = map_after_move(&map, &batch, 8);
        assert_eq!(after.owner_of_slot(16000).map(|shard| shard.index), Some(0));
        after.validate().unwrap();
    }

    #[test]
    fn parses_open_slot_markers_of_the_own_line_only() {
        let text = "\
abc 127.0.0.1:7000@17000 myself,master - 0 0 3 connected 0-8191 [100->-def] [200-<-fed] [x->-y] [99999-<-z]
def 127.0.0.1:7001@17001 master - 0 0 3 connected 8192-16383 [300->-abc]
";
        let open = OpenSlots::parse_cluster_nodes(text);
        assert_eq!(open.migrating, BTreeMap::from([(100, "def".to_string())]));
        assert_eq!(open.importing, BTreeMap::from([(200, "fed".to_string())]));
        assert!(!open.is_empty());
        assert!(OpenSlots::parse_cluster_nodes("").is_empty());
    }
}
