//! Rolling updates of cache node pods, planned from observed state only.
//!
//! StatefulSets use `OnDelete`, so a pod template change (image, settings) replaces no
//! pod by itself: the operator replaces them, one shard at a time — outdated replicas
//! first, then a graceful handover of the primary to an updated replica (writes paused,
//! the replica catches up, the map names it primary at the next epoch), then the old
//! primary, now a replica. Whether a pod is up to date comes from its
//! `controller-revision-hash` label against its StatefulSet's `status.updateRevision`,
//! so a restarted operator picks up where the last one stopped.

use std::collections::BTreeMap;

use meridian_api::RolloutStatus;
use meridian_topology::{NodeAddr, TopologyMap};

use crate::names::PodName;
use crate::topology_plan::RegionPods;

/// Pod label the StatefulSet controller sets to the revision a pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the StatefulSets and pods say about revisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revisions {
    /// Shard → its StatefulSet's `status.updateRevision`; `None` while the StatefulSet
    /// controller has not yet observed the latest template (`observedGeneration` behind).
    pub update_revision: BTreeMap<u16, Option<String>>,
    /// Pod name → its `controller-revision-hash` label.
    pub pod_revision: BTreeMap<PodName, String>,
}

impl Revisions {
    /// `Some(true)` when the pod runs its StatefulSet's latest template, `None` when that
    /// is not known yet.
    fn is_updated(&self, shard: u16, pod: &str) -> Option<bool> {
        let wanted = self.update_revision.get(&shard)?.as_ref()?;
        Some(self.pod_revision.get(pod) == Some(wanted))
    }
}

/// The next thing a rolling update does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutStep {
    /// Every pod runs the latest template.
    Done,
    /// A StatefulSet has not observed its latest template yet; look again shortly.
    WaitForStatefulSet { shard: u16 },
    /// Delete this outdated replica; its StatefulSet recreates it from the new template.
    ReplaceReplica { shard: u16, pod: PodName },
    /// The primary is outdated and an updated replica can take over gracefully.
    HandOver {
        shard: u16,
        from: NodeAddr,
        to: NodeAddr,
    },
    /// The primary is outdated and the shard has no replica: restarting it makes the
    /// shard unavailable until the new pod is back (and it comes back empty).
    ReplacePrimary { shard: u16, pod: PodName },
}

impl RolloutStep {
    pub fn shard(&self) -> Option<u16> {
        match self {
            RolloutStep::Done => None,
            RolloutStep::WaitForStatefulSet { shard }
            | RolloutStep::ReplaceReplica { shard, .. }
            | RolloutStep::HandOver { shard, .. }
            | RolloutStep::ReplacePrimary { shard, .. } => Some(*shard),
        }
    }

    /// One line for status and events.
    pub fn describe(&self) -> String {
        match self {
            RolloutStep::Done => "every pod runs the latest template".to_string(),
            RolloutStep::WaitForStatefulSet { shard } => {
                format!("shard {shard}: waiting for the StatefulSet to observe the new template")
            }
            RolloutStep::ReplaceReplica { shard, pod } => {
                format!("shard {shard}: replacing replica {pod}")
            }
            RolloutStep::HandOver { shard, from, to } => format!(
                "shard {shard}: handing the primary over from {} to {}",
                from.id, to.id
            ),
            RolloutStep::ReplacePrimary { shard, pod } => format!(
                "shard {shard}: replacing primary {pod} (no replica to hand over to; the shard is unavailable until it is back)"
            ),
        }
    }
}

/// The next step and the progress so far. Pure.
///
/// Called only when the region is settled (every pod Ready, every node at `map`, no
/// resharding), so one step at a time: the next reconcile sees its effect.
pub fn next_step(
    map: &TopologyMap,
    pods: &RegionPods,
    revisions: &Revisions,
) -> (RolloutStep, RolloutStatus) {
    let mut updated = 0;
    let mut total = 0;
    let mut unknown = None;
    for pod in pods.iter() {
        total += 1;
        match revisions.is_updated(pod.shard, pod.name.as_str()) {
            Some(true) => updated += 1,
            Some(false) => {}
            None => {
                unknown.get_or_insert(pod.shard);
            }
        }
    }
    let step = match unknown {
        Some(shard) => RolloutStep::WaitForStatefulSet { shard },
        None => first_step(map, revisions),
    };
    let status = RolloutStatus {
        updated_pods: updated,
        pods: total,
        shard: step.shard().map(i32::from),
        step: step.describe(),
    };
    (step, status)
}

fn first_step(map: &TopologyMap, revisions: &Revisions) -> RolloutStep {
    let mut shards: Vec<_> = map.shards.iter().collect();
    shards.sort_by_key(|shard| shard.index);
    for shard in shards {
        let Ok(index) = u16::try_from(shard.index) else {
            continue;
        };
        let updated = |node: &NodeAddr| revisions.is_updated(index, &node.id) == Some(true);
        if let Some(replica) = shard.replicas.iter().find(|replica| !updated(replica)) {
            return RolloutStep::ReplaceReplica {
                shard: index,
                pod: PodName::of(replica),
            };
        }
        if updated(&shard.primary) {
            continue;
        }
        // Every replica is updated here (the loop above returned otherwise).
        return match shard.replicas.first() {
            Some(replica) => RolloutStep::HandOver {
                shard: index,
                from: shard.primary.clone(),
                to: replica.clone(),
            },
            None => RolloutStep::ReplacePrimary {
                shard: index,
                pod: PodName::of(&shard.primary),
            },
        };
    }
    RolloutStep::Done
}

/// The map after handing shard `shard`'s primary over to `to`: `to` becomes primary, the
/// old primary its replica, at `epoch`. Pure.
pub fn handover_map(map: &TopologyMap, shard: u16, to: &NodeAddr, epoch: u64) -> TopologyMap {
    let mut next = map.clone();
    next.epoch = epoch;
    if let Some(topology) = next
        .shards
        .iter_mut()
        .find(|topology| topology.index == u32::from(shard))
        && topology.replicas.iter().any(|replica| replica.id == to.id)
    {
        let old = std::mem::replace(&mut topology.primary, to.clone());
        topology.replicas.retain(|replica| replica.id != to.id);
        topology.replicas.push(old);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology_plan::ObservedPod;
    use meridian_topology::{ShardTopology, SlotRange};

    fn addr(pod: &str) -> NodeAddr {
        NodeAddr {
            id: pod.to_string(),
            ip: "127.0.10.1".to_string(),
            port: 6379,
        }
    }

    /// Two shards; shard s has pods r-s-0 (primary) and r-s-1..replicas.
    fn fixture(replicas: u16) -> (TopologyMap, RegionPods) {
        let mut shards = Vec::new();
        let mut pods = Vec::new();
        for shard in 0..2u16 {
            for ordinal in 0..=replicas {
                pods.push(ObservedPod {
                    name: format!("r-{shard}-{ordinal}").into(),
                    shard,
                    ordinal,
                    ip: Some("127.0.10.1".into()),
                    ready: true,
                    running: true,
                });
            }
            shards.push(ShardTopology {
                index: u32::from(shard),
                slots: vec![SlotRange::new(shard * 8192, shard * 8192 + 8191).unwrap()],
                primary: addr(&format!("r-{shard}-0")),
                replicas: (1..=replicas)
                    .map(|ordinal| addr(&format!("r-{shard}-{ordinal}")))
                    .collect(),
            });
        }
        let map = TopologyMap {
            epoch: 7,
            cluster: "c".into(),
            region: "r".into(),
            shards,
        };
        (map, RegionPods::group(pods, 2, replicas + 1))
    }

    /// Every pod at `old` except `updated`, StatefulSets wanting `new`.
    fn revisions(pods: &RegionPods, updated: &[&str]) -> Revisions {
        Revisions {
            update_revision: (0..2).map(|shard| (shard, Some("new".into()))).collect(),
            pod_revision: pods
                .iter()
                .map(|pod| {
                    let revision = if updated.contains(&pod.name.as_str()) {
                        "new"
                    } else {
                        "old"
                    };
                    (pod.name.clone(), revision.to_string())
                })
                .collect(),
        }
    }

    #[test]
    fn replicas_first_then_handover_then_next_shard() {
        let (map, pods) = fixture(2);
        let (step, status) = next_step(&map, &pods, &revisions(&pods, &[]));
        assert_eq!(
            step,
            RolloutStep::ReplaceReplica {
                shard: 0,
                pod: "r-0-1".into()
            }
        );
        assert_eq!(
            (status.updated_pods, status.pods, status.shard),
            (0, 6, Some(0))
        );

        let (step, _) = next_step(&map, &pods, &revisions(&pods, &["r-0-1"]));
        assert_eq!(
            step,
            RolloutStep::ReplaceReplica {
                shard: 0,
                pod: "r-0-2".into()
            }
        );

        let (step, _) = next_step(&map, &pods, &revisions(&pods, &["r-0-1", "r-0-2"]));
        assert_eq!(
            step,
            RolloutStep::HandOver {
                shard: 0,
                from: addr("r-0-0"),
                to: addr("r-0-1")
            }
        );

        // After the handover the old primary is an outdated replica: replaced next.
        let handed = handover_map(&map, 0, &addr("r-0-1"), 8);
        let (step, _) = next_step(&handed, &pods, &revisions(&pods, &["r-0-1", "r-0-2"]));
        assert_eq!(
            step,
            RolloutStep::ReplaceReplica {
                shard: 0,
                pod: "r-0-0".into()
            }
        );

        // Shard 0 done: shard 1 starts.
        let (step, status) = next_step(
            &handed,
            &pods,
            &revisions(&pods, &["r-0-0", "r-0-1", "r-0-2"]),
        );
        assert_eq!(
            step,
            RolloutStep::ReplaceReplica {
                shard: 1,
                pod: "r-1-1".into()
            }
        );
        assert_eq!(status.updated_pods, 3);
    }

    #[test]
    fn done_when_every_pod_is_updated() {
        let (map, pods) = fixture(1);
        let all: Vec<&str> = pods.iter().map(|pod| pod.name.as_str()).collect();
        let (step, status) = next_step(&map, &pods, &revisions(&pods, &all));
        assert_eq!(step, RolloutStep::Done);
        assert_eq!(
            (status.updated_pods, status.pods, status.shard),
            (4, 4, None)
        );
    }

    #[test]
    fn without_replicas_the_primary_is_replaced() {
        let (map, pods) = fixture(0);
        let (step, _) = next_step(&map, &pods, &revisions(&pods, &["r-0-0"]));
        assert_eq!(
            step,
            RolloutStep::ReplacePrimary {
                shard: 1,
                pod: "r-1-0".into()
            }
        );
    }

    #[test]
    fn waits_for_a_statefulset_that_has_not_observed_its_template() {
        let (map, pods) = fixture(1);
        let mut revisions = revisions(&pods, &[]);
        revisions.update_revision.insert(1, None);
        let (step, _) = next_step(&map, &pods, &revisions);
        assert_eq!(step, RolloutStep::WaitForStatefulSet { shard: 1 });
    }

    #[test]
    fn handover_map_swaps_roles_at_the_new_epoch() {
        let (map, _) = fixture(2);
        let next = handover_map(&map, 1, &addr("r-1-2"), 9);
        assert_eq!(next.epoch, 9);
        let shard = &next.shards[1];
        assert_eq!(shard.primary.id, "r-1-2");
        let replicas: Vec<&str> = shard.replicas.iter().map(|node| node.id.as_str()).collect();
        assert_eq!(replicas, ["r-1-1", "r-1-0"]);
        assert_eq!(next.shards[0], map.shards[0]);
        next.validate().unwrap();
    }

    #[test]
    fn handover_to_a_node_that_is_not_a_replica_changes_nothing_but_the_epoch() {
        let (map, _) = fixture(1);
        let next = handover_map(&map, 0, &addr("elsewhere"), 8);
        assert_eq!(next.shards, map.shards);
    }
}
