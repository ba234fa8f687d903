//! Where a region stands after a reconcile's node step: the outcome the failover,
//! push, resharding and rolling-update steps return, and what status is written from.
//! Plain data, so the steps (`region.rs`, `rollout.rs`) share it without importing
//! each other.

use meridian_api::RolloutStatus;
use meridian_topology::TopologyMap;

use crate::reshard::SlotMove;

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
}
