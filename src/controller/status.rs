//! Status: what a CacheRegion's status says after a reconcile, from the observation and
//! the outcome of the node step. Pure: the time is passed in, and the tests build it
//! from fixtures.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use meridian_api::{CacheRegionStatus, PeerStatus, ReshardingStatus, conditions};

use super::orchestration::{Orchestration, PRIMARY_LOST_DATA, ReshardProgress, join};
use crate::Error;
use crate::conditions::{DesiredCondition, merge};
use crate::names::PodName;
use crate::nodes::ReplicationInfo;
use crate::reshard::SlotMove;
use crate::resources::RegionPlan;
use crate::topology_plan::{self, RegionPods};
use meridian_api::CacheRegion;

/// The status to write. Pure: `now` is passed in.
#[allow(clippy::too_many_arguments)]
pub fn region_status(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    orchestration: Option<&Orchestration>,
    node_error: Option<&Error>,
    peer_links: Option<&[PeerStatus]>,
    replication: &HashMap<PodName, ReplicationInfo>,
    now: Timestamp,
) -> CacheRegionStatus {
    let previous = region.status.clone().unwrap_or_default();
    let peers = match peer_links {
        Some(links) => links.to_vec(),
        // Not asked this time (no topology yet, or the nodes were unreachable): keep what
        // was known for the configured remote peers and the in-cluster ones seen before.
        None => previous.peers.clone(),
    };
    let down_peers: Vec<String> = peers
        .iter()
        .filter(|peer| !peer.connected)
        .map(|peer| match &peer.message {
            Some(why) => format!("{} ({why})", peer.region),
            None => peer.region.clone(),
        })
        .collect();
    let map = orchestration.and_then(Orchestration::map);
    let resharding = match orchestration {
        Some(Orchestration::Resharding { progress, .. }) => {
            Some(resharding_status(previous.resharding.as_ref(), progress))
        }
        Some(Orchestration::InSync { .. }) => None,
        // Interrupted (pods, failover, refused push): the change is still under way.
        _ => previous.resharding.clone(),
    };
    let rollout = match orchestration {
        Some(Orchestration::Updating { rollout, .. }) => Some(rollout.clone()),
        Some(Orchestration::InSync { .. }) => None,
        // Interrupted (a replaced pod is coming back, a failover): still under way.
        _ => previous.rollout.clone(),
    };
    let updating = matches!(orchestration, Some(Orchestration::Updating { .. }));
    let ready_shards = topology_plan::ready_shards(map, pods);
    // Shards whose primary restarted without the data a replica kept: the failover
    // decided this reconcile, or what the nodes show now.
    let mut lost_data: Vec<u32> = match orchestration {
        Some(Orchestration::Recovering { lost_data, .. }) => lost_data.clone(),
        _ => Vec::new(),
    };
    for shard in map.iter().flat_map(|map| &map.shards) {
        if topology_plan::primary_lost_data(shard, replication).is_some() {
            lost_data.push(shard.index);
        }
    }
    lost_data.sort_unstable();
    lost_data.dedup();
    // A rolling update between two pod replacements serves every slot: Ready. A shard
    // that lost data a replica could keep never is.
    let all_ready = ready_shards == i32::from(plan.shards)
        && lost_data.is_empty()
        && matches!(
            orchestration,
            Some(Orchestration::InSync { .. } | Orchestration::Updating { .. })
        );
    let (progress_reason, progress_message) = match (orchestration, node_error) {
        (_, Some(error)) => (error.condition_reason(), error.to_string()),
        _ if !lost_data.is_empty() => (
            PRIMARY_LOST_DATA,
            format!(
                "shard(s) {}: the primary restarted without its data, which a replica kept; \
                 failing over to that replica instead of making the empty node primary again",
                join(&lost_data)
            ),
        ),
        (Some(Orchestration::WaitingForPods { ready, expected }), _) => (
            "PodsNotReady",
            format!("{ready}/{expected} cache node pods are ready"),
        ),
        (Some(Orchestration::Recovering { headless, .. }), _) if !headless.is_empty() => (
            "NoReachablePrimary",
            format!(
                "shard(s) {} have no reachable primary and no replica to promote",
                headless
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            Some(Orchestration::Recovering {
                ready,
                expected,
                map,
                ..
            }),
            _,
        ) => (
            "PodsNotReady",
            format!(
                "{ready}/{expected} cache node pods are ready; serving at topology epoch {}",
                map.epoch
            ),
        ),
        (Some(Orchestration::Resharding { .. }), _) => (
            "Resharding",
            resharding
                .as_ref()
                .map(resharding_message)
                .unwrap_or_default(),
        ),
        (Some(Orchestration::Updating { rollout, .. }), _) => (
            "RollingUpdate",
            format!(
                "{}/{} pods run the latest template; {}",
                rollout.updated_pods, rollout.pods, rollout.step
            ),
        ),
        (Some(Orchestration::PushIncomplete { stale, .. }), _) => (
            "TopologyPushIncomplete",
            format!("nodes refused the topology: {}", stale.join("; ")),
        ),
        (Some(Orchestration::InSync { map }), _) if all_ready => (
            "AllShardsReady",
            format!(
                "{} shard(s) serving at topology epoch {}",
                plan.shards, map.epoch
            ),
        ),
        (Some(Orchestration::InSync { .. }), _) => (
            "ShardsNotReady",
            format!("{ready_shards}/{} shards ready", plan.shards),
        ),
        (None, None) => ("Reconciling", String::new()),
    };
    let desired = [
        DesiredCondition::new(
            conditions::READY,
            all_ready,
            progress_reason,
            progress_message.clone(),
        ),
        DesiredCondition::new(
            conditions::PROGRESSING,
            (!all_ready || updating) && node_error.is_none(),
            if all_ready && !updating {
                "Reconciled"
            } else {
                progress_reason
            },
            if all_ready && !updating {
                String::new()
            } else {
                progress_message.clone()
            },
        ),
        match (node_error, orchestration) {
            (Some(error), _) => DesiredCondition::new(
                conditions::DEGRADED,
                true,
                error.condition_reason(),
                error.to_string(),
            ),
            (None, _) if !lost_data.is_empty() => DesiredCondition::new(
                conditions::DEGRADED,
                true,
                progress_reason,
                progress_message.clone(),
            ),
            (None, Some(Orchestration::Recovering { headless, .. })) if !headless.is_empty() => {
                DesiredCondition::new(
                    conditions::DEGRADED,
                    true,
                    progress_reason,
                    progress_message.clone(),
                )
            }
            // A peer region being down does not stop this region serving (eventual writes
            // go on; strong writes report TIMEOUT), so it is Degraded, not un-Ready.
            (None, _) if peer_links.is_some() && !down_peers.is_empty() => DesiredCondition::new(
                conditions::DEGRADED,
                true,
                super::cluster::PEER_LINK_DOWN,
                format!(
                    "region link(s) to {} not connected; serving locally, peers converge once reachable",
                    down_peers.join(", ")
                ),
            ),
            (None, _) => DesiredCondition::new(conditions::DEGRADED, false, "AsExpected", ""),
        },
    ];
    CacheRegionStatus {
        observed_generation: region.metadata.generation,
        conditions: conditions_at(region, &previous, &desired, now),
        epoch: map.map_or(previous.epoch, |map| map.epoch),
        shards: if map.is_some() || previous.shards.is_empty() {
            topology_plan::shard_statuses(map, pods, replication)
        } else {
            // Keep the last known assignment while nodes are unreachable; refresh what
            // is known of the replicas.
            previous
                .shards
                .iter()
                .cloned()
                .map(|mut shard| {
                    let sync = topology_plan::replica_sync(
                        shard.primary.as_deref(),
                        &shard.replicas,
                        pods,
                        replication,
                    );
                    shard.ready_replicas = sync.in_sync;
                    shard.replication_lag_bytes = sync.largest_lag;
                    shard
                })
                .collect()
        },
        peers,
        ready_shards,
        resharding,
        rollout,
    }
}

/// `previous`'s conditions moved to `desired` as of `now`, for the region's generation.
fn conditions_at(
    region: &CacheRegion,
    previous: &CacheRegionStatus,
    desired: &[DesiredCondition],
    now: Timestamp,
) -> Vec<Condition> {
    merge(
        &previous.conditions,
        desired,
        region.metadata.generation,
        now,
    )
}

/// Resharding progress for status: totals carry over from the previous status while the
/// target shard count is the same (display only; decisions come from the nodes). Pure.
pub fn resharding_status(
    previous: Option<&ReshardingStatus>,
    progress: &ReshardProgress,
) -> ReshardingStatus {
    let remaining = i32::try_from(progress.remaining).unwrap_or(i32::MAX);
    let moved_now = i32::try_from(progress.moved).unwrap_or(i32::MAX);
    let continuing =
        previous.filter(|previous| previous.to_shards == i32::from(progress.to_shards));
    let slots_to_move = match continuing {
        Some(previous) if previous.slots_to_move >= remaining => previous.slots_to_move,
        _ => remaining.saturating_add(moved_now),
    };
    ReshardingStatus {
        from_shards: continuing.map_or(i32::from(progress.from_shards), |previous| {
            previous.from_shards
        }),
        to_shards: i32::from(progress.to_shards),
        slots_to_move,
        slots_moved: slots_to_move - remaining,
        moving_slots: progress
            .next
            .as_ref()
            .map(SlotMove::ranges)
            .unwrap_or_default(),
        moving_from_shard: progress.next.as_ref().map(|batch| batch.from as i32),
        moving_to_shard: progress.next.as_ref().map(|batch| batch.to as i32),
    }
}

/// `moved N of M slots (from → to shards)`, plus what moves next or was dropped.
pub fn resharding_message(status: &ReshardingStatus) -> String {
    let mut message = format!(
        "moved {} of {} slots ({} → {} shards)",
        status.slots_moved, status.slots_to_move, status.from_shards, status.to_shards
    );
    if let (Some(from), Some(to)) = (status.moving_from_shard, status.moving_to_shard) {
        message.push_str(&format!(
            "; next {} from shard {from} to shard {to}",
            status.moving_slots.join(",")
        ));
    } else if status.slots_moved == status.slots_to_move {
        message.push_str("; removing drained shards");
    }
    message
}

/// Previous status with Ready/Progressing False and Degraded True. Pure.
pub fn degraded_status(region: &CacheRegion, error: &Error, now: Timestamp) -> CacheRegionStatus {
    let previous = region.status.clone().unwrap_or_default();
    let reason = error.condition_reason();
    let message = error.to_string();
    let desired = [
        DesiredCondition::new(conditions::READY, false, reason, message.clone()),
        DesiredCondition::new(conditions::PROGRESSING, false, reason, message.clone()),
        DesiredCondition::new(conditions::DEGRADED, true, reason, message),
    ];
    CacheRegionStatus {
        observed_generation: region.metadata.generation,
        conditions: conditions_at(region, &previous, &desired, now),
        ..previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(remaining: usize, moved: usize, next: Option<SlotMove>) -> ReshardProgress {
        ReshardProgress {
            from_shards: 3,
            to_shards: 4,
            remaining,
            moved,
            next,
            dropped: Vec::new(),
        }
    }

    #[test]
    fn resharding_status_counts_moved_slots_across_reconciles() {
        let batch = SlotMove {
            from: 0,
            to: 3,
            slots: (5333..=5460).collect(),
        };
        let first = resharding_status(None, &progress(3840, 256, Some(batch.clone())));
        assert_eq!(
            first,
            ReshardingStatus {
                from_shards: 3,
                to_shards: 4,
                slots_to_move: 4096,
                slots_moved: 256,
                moving_slots: vec!["5333-5460".into()],
                moving_from_shard: Some(0),
                moving_to_shard: Some(3),
            }
        );
        assert_eq!(
            resharding_message(&first),
            "moved 256 of 4096 slots (3 → 4 shards); next 5333-5460 from shard 0 to shard 3"
        );
        // the next reconcile's map already has 4 shards: totals carry over
        let mut later = progress(1000, 2840, None);
        later.from_shards = 4;
        let second = resharding_status(Some(&first), &later);
        assert_eq!(
            (second.from_shards, second.slots_to_move, second.slots_moved),
            (3, 4096, 3096)
        );
        // a new target starts over
        let mut other = progress(500, 0, None);
        other.to_shards = 2;
        let restarted = resharding_status(Some(&second), &other);
        assert_eq!(
            (
                restarted.to_shards,
                restarted.slots_to_move,
                restarted.slots_moved
            ),
            (2, 500, 0)
        );
        let done = resharding_status(Some(&second), &progress(0, 1000, None));
        assert_eq!(
            resharding_message(&done),
            "moved 4096 of 4096 slots (3 → 4 shards); removing drained shards"
        );
    }
}
