//! What the operator does next to a region's nodes, decided from one observation: fail
//! over, catch lagging nodes up, wait for pods, push a new map, or settle (resharding and
//! rolling updates, planned by [`crate::reshard`] and [`crate::rollout`]). Pure: no
//! client, no clock; the controller's executor carries the step out, and the tests feed
//! it fixtures.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meridian_topology::{NodeAddr, TopologyMap};

use crate::Error;
use crate::names::PodName;
use crate::nodes::ReplicationInfo;
use crate::reshard;
use crate::topology_plan::{
    self, FailoverPlan, NodeReport, PrimaryDown, PromotionCandidate, RegionPods, TopologyDecision,
};

/// What one reconcile observed of a region's nodes, as planning needs it.
pub struct NodeView<'a> {
    pub cluster: &'a str,
    pub region: &'a str,
    pub pods: &'a RegionPods,
    /// The maps the nodes that answered hold.
    pub reports: &'a [NodeReport],
    /// `INFO replication` of the nodes that answered it, by pod name.
    pub replication: &'a HashMap<PodName, ReplicationInfo>,
    /// Pods this reconcile holds a connection to (they answered its read).
    pub answered: &'a BTreeSet<PodName>,
    /// The epoch status shows (the highest this operator wrote down).
    pub status_epoch: u64,
}

/// The next step for the region's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStep {
    /// Shards of `current` lost their primary: promote replicas.
    FailOver(Failover),
    /// Not every pod is ready; the nodes serve `map`. Re-send it to `lagging` (nodes it
    /// lists that hold an older epoch or none, e.g. after an operator restart in the
    /// middle of a failover); new pods join once everything is ready.
    CatchUp {
        map: TopologyMap,
        lagging: Vec<PodName>,
    },
    /// No topology yet and not every pod is ready.
    WaitForPods { ready: usize, expected: usize },
    /// A new epoch needs every node's answer and `pod` gave none.
    NeedsAnswer { pod: PodName },
    /// Every pod ready and answering: what [`topology_plan::plan`] says. `InSync`: every
    /// node holds the map, go on with moving slots or replacing pods; `Push`: push the
    /// map to its targets first.
    Plan(TopologyDecision),
}

/// A failover decided from the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    /// The map the nodes serve now.
    pub current: TopologyMap,
    /// Why each shard's primary counts as gone.
    pub down: BTreeMap<u32, PrimaryDown>,
    /// Promotions and the next map (none when no replica can take over).
    pub plan: FailoverPlan,
    /// Shards whose primary restarted without the data a replica kept.
    pub lost_data: Vec<u32>,
    /// Primaries that lost their data and got no replacement: they must not get the map
    /// (it would make them primary, empty).
    pub withheld: Vec<PodName>,
}

impl Failover {
    /// Pods that get the next map after the promoted ones: everyone reachable else.
    pub fn others<'a>(
        &'a self,
        answered: &'a BTreeSet<PodName>,
    ) -> impl Iterator<Item = &'a PodName> {
        answered.iter().filter(|pod| {
            !self
                .plan
                .promotions
                .iter()
                .any(|promotion| promotion.new_primary == **pod)
                && !self.withheld.contains(pod)
        })
    }
}

/// The newest map the nodes hold for this region (`cluster`, `region`).
pub fn current_map<'a>(
    reports: &'a [NodeReport],
    cluster: &str,
    region: &str,
) -> Option<&'a TopologyMap> {
    topology_plan::newest_reported(reports)
        .filter(|map| map.cluster == cluster && map.region == region)
}

/// Decides the next step. `probed_dead` says whether the primary probes found a node
/// unreachable; their verdict holds only if this reconcile could not read the node
/// either (one slow moment on a loaded node is no failover).
pub fn next_step(
    view: &NodeView<'_>,
    probed_dead: impl Fn(&NodeAddr) -> bool,
) -> Result<NodeStep, Error> {
    if let Some(current) = current_map(view.reports, view.cluster, view.region) {
        // A primary that lost its data to a restart fails over too, rather than getting
        // the map back.
        let down = topology_plan::shards_down(
            current,
            view.pods,
            |primary| probed_dead(primary) && !view.answered.contains(primary.id.as_str()),
            view.reports,
            view.replication,
        );
        if !down.is_empty() {
            return Ok(NodeStep::FailOver(fail_over(view, current, down)));
        }
        if !view.pods.all_ready() {
            return Ok(NodeStep::CatchUp {
                map: current.clone(),
                lagging: lagging(current, view.reports),
            });
        }
    }
    if !view.pods.all_ready() {
        return Ok(NodeStep::WaitForPods {
            ready: view.pods.ready_count(),
            expected: view.pods.expected(),
        });
    }
    if let Some(pod) = view
        .pods
        .iter()
        .find(|pod| !view.answered.contains(&pod.name))
    {
        return Ok(NodeStep::NeedsAnswer {
            pod: pod.name.clone(),
        });
    }
    Ok(NodeStep::Plan(topology_plan::plan(
        view.cluster,
        view.region,
        view.pods,
        view.reports,
        view.status_epoch,
    )?))
}

/// Promotes, in every shard of `down`, the reachable replica with the highest replication
/// offset this reconcile read.
fn fail_over(
    view: &NodeView<'_>,
    current: &TopologyMap,
    down: BTreeMap<u32, PrimaryDown>,
) -> Failover {
    let candidates: Vec<PromotionCandidate> = current
        .shards
        .iter()
        .filter(|shard| down.contains_key(&shard.index))
        .flat_map(|shard| &shard.replicas)
        .filter(|replica| {
            topology_plan::promotable(replica, view.pods)
                && view.answered.contains(replica.id.as_str())
        })
        .filter_map(|replica| {
            Some(PromotionCandidate {
                pod: PodName::of(replica),
                offset: view.replication.get(replica.id.as_str())?.offset,
            })
        })
        .collect();
    let highest_seen = topology_plan::highest_epoch(view.reports, view.status_epoch, current);
    let plan = topology_plan::plan_failover(current, &down, &candidates, highest_seen + 1);
    let lost_data: Vec<u32> = down
        .iter()
        .filter(|(_, reason)| **reason == PrimaryDown::RestartedEmpty)
        .map(|(shard, _)| *shard)
        .collect();
    let withheld = plan
        .map
        .as_ref()
        .map(|map| {
            topology_plan::withheld_primaries(map, &plan.headless, &lost_data)
                .into_iter()
                .map(PodName::from)
                .collect()
        })
        .unwrap_or_default();
    Failover {
        current: current.clone(),
        down,
        plan,
        lost_data,
        withheld,
    }
}

/// Nodes `map` lists whose reported map is older, or missing.
fn lagging(map: &TopologyMap, reports: &[NodeReport]) -> Vec<PodName> {
    reports
        .iter()
        .filter(|report| {
            report
                .map
                .as_ref()
                .is_none_or(|held| held.epoch < map.epoch)
                && map.node(report.pod.as_str()).is_some()
        })
        .map(|report| report.pod.clone())
        .collect()
}

/// Which shards' StatefulSets must exist, from the map the nodes report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Shards at or above the desired count to keep (the map still lists them).
    pub keep: BTreeSet<u16>,
    /// Shards to run: the desired count, or more while shards above it drain.
    pub shards: u16,
    /// False when no node answered although the region was bootstrapped: then nothing
    /// is deleted (the shards above the count may still hold keys).
    pub known: bool,
}

/// [`Retention`] from the map the nodes hold (`current`), the desired shard count and
/// what status last showed (`status_epoch`, `status_shards`).
pub fn retention(
    current: Option<&TopologyMap>,
    desired_shards: u16,
    status_epoch: u64,
    status_shards: usize,
) -> Retention {
    match current {
        Some(map) => Retention {
            keep: reshard::draining_shards(Some(map), desired_shards),
            shards: reshard::effective_shards(Some(map), desired_shards),
            known: true,
        },
        None if status_epoch > 0 => {
            // Keep what status last showed; delete nothing until a node answers.
            let shown = status_shards.min(usize::from(u16::MAX)) as u16;
            Retention {
                keep: (desired_shards..shown).collect(),
                shards: desired_shards.max(shown),
                known: false,
            }
        }
        None => Retention {
            keep: BTreeSet::new(),
            shards: desired_shards,
            known: true,
        },
    }
}

impl Retention {
    /// Whether shard `shard`'s StatefulSet and PDB go (scale-in, drained of every slot).
    pub fn removes(&self, shard: u16, desired_shards: u16) -> bool {
        self.known && shard >= desired_shards && !self.keep.contains(&shard)
    }
}
