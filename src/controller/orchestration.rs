//! Where a region stands after a reconcile's node step: the outcome the failover,
//! push, resharding and rolling-update steps return, and what status is written from.
//! Plain data, so the steps (failover, resharding, rollout) and status share it without
//! importing each other.

use std::time::Duration;

use meridian_api::RolloutStatus;
use meridian_topology::TopologyMap;

use crate::reshard::SlotMove;

/// Requeue while pods start or a push is in flight.
const REQUEUE_PROGRESSING: Duration = Duration::from_secs(10);
/// Periodic drift check once everything is ready; also how old the status's replication
/// lag and link state may get, since nothing else triggers a reconcile when a replica
/// falls behind.
const REQUEUE_READY: Duration = Duration::from_secs(30);
/// Requeue while a bootstrapped region recovers (failed-over pods coming back).
const REQUEUE_RECOVERING: Duration = Duration::from_secs(2);
/// Requeue while a region link is down (links come up within a second or two).
const REQUEUE_PEERS_DOWN: Duration = Duration::from_secs(3);
/// Requeue while slots migrate (each reconcile moves a few batches).
const REQUEUE_RESHARDING: Duration = Duration::from_millis(200);
/// Requeue during a rolling update (pod changes also trigger reconciles).
const REQUEUE_ROLLING: Duration = Duration::from_millis(500);
/// Condition reason and event while a shard's primary restarted without the data a
/// replica kept.
pub const PRIMARY_LOST_DATA: &str = "PrimaryLostData";

/// Shard indexes as `1, 2, 3`.
pub fn join(indexes: &[u32]) -> String {
    indexes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the region's nodes stand after the orchestration step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orchestration {
    /// Not every pod is Running+Ready with an IP yet.
    WaitingForPods { ready: usize, expected: usize },
    /// Every node holds `map`.
    InSync { map: TopologyMap },
    /// Pushed `map`, but some nodes refused it (stale epoch); recompute soon.
    PushIncomplete {
        map: TopologyMap,
        stale: Vec<String>,
    },
    /// The region is bootstrapped (`map` is current) but not every pod is ready, or a
    /// shard lost its primary: failed over where a replica could take over; `headless`
    /// lists the shards that have no reachable primary and nothing to promote.
    Recovering {
        map: TopologyMap,
        ready: usize,
        expected: usize,
        headless: Vec<u32>,
        /// Shards whose primary restarted without the data a replica kept: failed over
        /// to that replica (or waiting for one to be usable), never given the map back.
        lost_data: Vec<u32>,
    },
    /// Every node holds `map`; pods are being replaced by a rolling update.
    Updating {
        map: TopologyMap,
        rollout: RolloutStatus,
    },
    /// Every node holds `map`; slots are moving towards the desired shard count.
    Resharding {
        map: TopologyMap,
        progress: ReshardProgress,
    },
}

/// Where a shard-count change stands after this reconcile's steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReshardProgress {
    /// Shards owning slots before this reconcile moved anything.
    pub from_shards: u16,
    pub to_shards: u16,
    /// Slots not yet at their target owner.
    pub remaining: usize,
    /// Slots moved by this reconcile.
    pub moved: usize,
    /// The batch to move next (or waiting for its primaries to be up).
    pub next: Option<SlotMove>,
    /// Drained shards just dropped from the map (their StatefulSets go next).
    pub dropped: Vec<u32>,
}

impl Orchestration {
    /// The topology map the region's nodes hold (or were given), once there is one.
    pub fn map(&self) -> Option<&TopologyMap> {
        match self {
            Orchestration::WaitingForPods { .. } => None,
            Orchestration::InSync { map }
            | Orchestration::PushIncomplete { map, .. }
            | Orchestration::Recovering { map, .. }
            | Orchestration::Updating { map, .. }
            | Orchestration::Resharding { map, .. } => Some(map),
        }
    }

    /// When to reconcile again after this outcome; `links_down` when a region link is
    /// not up, `pods_ready` when every pod is.
    pub fn requeue_after(&self, links_down: bool, pods_ready: bool) -> Duration {
        match self {
            Orchestration::Recovering { .. } => REQUEUE_RECOVERING,
            Orchestration::Resharding { .. } => REQUEUE_RESHARDING,
            Orchestration::Updating { .. } => REQUEUE_ROLLING,
            _ if links_down => REQUEUE_PEERS_DOWN,
            Orchestration::InSync { .. } if pods_ready => REQUEUE_READY,
            _ => REQUEUE_PROGRESSING,
        }
    }
}
