//! Pure topology planning: observed pods + what every node reports → the map to push.
//!
//! Decisions derive from observed state only (pods and node-reported maps), never from
//! operator memory, so a restarted or newly elected operator reaches the same answer.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use meridian_api::{ShardStatus, labels, ports};
use meridian_topology::{NodeAddr, NodeRole, ShardTopology, SlotRange, TopologyMap, split_evenly};

use crate::Error;
use crate::names::PodName;
use crate::nodes::{ReplicationInfo, ReplicationRole};

/// One cache node pod as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPod {
    pub name: PodName,
    pub shard: u16,
    pub ordinal: u16,
    pub ip: Option<String>,
    /// Running, Ready condition True and not being deleted.
    pub ready: bool,
    /// Running and not being deleted, whatever its Ready condition says: the node
    /// controller clears Ready on every pod of a node it has not heard from lately (all of
    /// them after an API server outage) while their processes run on.
    pub running: bool,
}

impl ObservedPod {
    /// Reads shard (label) and ordinal (name suffix) of a StatefulSet pod; `None` for pods
    /// that are not ours or not in the expected shape.
    pub fn from_pod(pod: &Pod) -> Option<ObservedPod> {
        let name = PodName::from(pod.name_any());
        let shard = pod.labels().get(labels::SHARD)?.parse::<u16>().ok()?;
        let ordinal = name.as_str().rsplit_once('-')?.1.parse::<u16>().ok()?;
        let status = pod.status.as_ref();
        let running = status.and_then(|status| status.phase.as_deref()) == Some("Running");
        let ready_condition = status
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True")
            });
        let ip = status
            .and_then(|status| status.pod_ip.clone())
            .filter(|ip| !ip.is_empty());
        let running = running && ip.is_some() && pod.metadata.deletion_timestamp.is_none();
        Some(ObservedPod {
            name,
            shard,
            ordinal,
            ready: running && ready_condition,
            running,
            ip,
        })
    }

    /// The node's RESP address, once the pod has an IP.
    pub fn addr(&self) -> Option<NodeAddr> {
        Some(NodeAddr {
            id: self.name.to_string(),
            ip: self.ip.clone()?,
            port: ports::RESP as u16,
        })
    }
}

/// The pods a region should have, grouped by shard, surplus ones dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionPods {
    /// `shards[s]` holds the pods of shard `s` with ordinal below the desired pod count,
    /// sorted by ordinal.
    pub shards: Vec<Vec<ObservedPod>>,
    pub pods_per_shard: u16,
}

impl RegionPods {
    pub fn group(pods: Vec<ObservedPod>, shards: u16, pods_per_shard: u16) -> RegionPods {
        let mut grouped = vec![Vec::new(); usize::from(shards)];
        for pod in pods {
            if pod.ordinal < pods_per_shard
                && let Some(shard) = grouped.get_mut(usize::from(pod.shard))
            {
                shard.push(pod);
            }
        }
        for shard in &mut grouped {
            shard.sort_by_key(|pod| pod.ordinal);
        }
        RegionPods {
            shards: grouped,
            pods_per_shard,
        }
    }

    pub fn ready_in_shard(&self, shard: usize) -> i32 {
        self.shards
            .get(shard)
            .map_or(0, |pods| pods.iter().filter(|pod| pod.ready).count() as i32)
    }

    /// Every expected pod exists, is Running+Ready and has an IP.
    pub fn all_ready(&self) -> bool {
        self.shards.iter().all(|pods| {
            pods.len() == usize::from(self.pods_per_shard) && pods.iter().all(|pod| pod.ready)
        })
    }

    pub fn expected(&self) -> usize {
        self.shards.len() * usize::from(self.pods_per_shard)
    }

    pub fn ready_count(&self) -> usize {
        self.shards.iter().flatten().filter(|pod| pod.ready).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ObservedPod> {
        self.shards.iter().flatten()
    }
}

/// The highest epoch anyone has seen: every node's map, the status and `map`. A new map
/// must be numbered above it so that every node accepts it.
pub fn highest_epoch(reports: &[NodeReport], status_epoch: u64, map: &TopologyMap) -> u64 {
    reports
        .iter()
        .filter_map(|report| report.map.as_ref().map(|held| held.epoch))
        .fold(status_epoch.max(map.epoch), u64::max)
}

/// What one node answered to `MERIDIAN.TOPOLOGY GET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    pub pod: PodName,
    pub map: Option<TopologyMap>,
}

impl NodeReport {
    fn epoch(&self) -> u64 {
        self.map.as_ref().map_or(0, |map| map.epoch)
    }
}

/// Why a pod became (or stayed) primary of its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryReason {
    /// The newest map on the nodes already names it primary of this shard.
    KeptFromCurrentMap,
    /// The node's own stored map says it is primary of this shard.
    ReportedByNode,
    /// No node claims the shard: the lowest ordinal wins.
    LowestOrdinal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryChoice {
    pub shard: u32,
    pub pod: PodName,
    pub reason: PrimaryReason,
}

/// The planner's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologyDecision {
    /// Every node already holds `map`.
    InSync { map: TopologyMap },
    /// Push `map` to `targets` (pod names). `new_epoch` is false when the map is the
    /// current one re-sent to nodes that lag behind (e.g. a restarted pod).
    Push {
        map: TopologyMap,
        targets: Vec<PodName>,
        new_epoch: bool,
        primaries: Vec<PrimaryChoice>,
        slots_reassigned: bool,
    },
}

impl TopologyDecision {
    pub fn map(&self) -> &TopologyMap {
        match self {
            TopologyDecision::InSync { map } | TopologyDecision::Push { map, .. } => map,
        }
    }
}

/// The newest map any node reports.
pub fn newest_reported(reports: &[NodeReport]) -> Option<&TopologyMap> {
    reports
        .iter()
        .filter_map(|report| report.map.as_ref())
        .max_by_key(|map| map.epoch)
}

fn same_membership(map: &TopologyMap, pods: &RegionPods) -> bool {
    map.shards.len() == pods.shards.len()
        && pods.shards.iter().enumerate().all(|(index, shard_pods)| {
            let Some(shard) = map.shards.iter().find(|shard| shard.index == index as u32) else {
                return false;
            };
            let mut in_map: Vec<(&str, &str)> = shard
                .nodes()
                .map(|node| (node.id.as_str(), node.ip.as_str()))
                .collect();
            let mut observed: Vec<(&str, &str)> = shard_pods
                .iter()
                .map(|pod| (pod.name.as_str(), pod.ip.as_deref().unwrap_or_default()))
                .collect();
            in_map.sort_unstable();
            observed.sort_unstable();
            in_map == observed
        })
}

/// Plans the topology of a region whose pods are all ready (see [`RegionPods::all_ready`]).
pub fn plan(
    cluster: &str,
    region: &str,
    pods: &RegionPods,
    reports: &[NodeReport],
    status_epoch: u64,
) -> Result<TopologyDecision, Error> {
    // Maps of another cluster or region (leftovers) only count for the epoch.
    let current = newest_reported(reports)
        .filter(|current| current.cluster == cluster && current.region == region);

    if let Some(current) = current
        && current.epoch >= status_epoch
        && same_membership(current, pods)
        && current.validate().is_ok()
    {
        let targets: Vec<PodName> = pods
            .iter()
            .filter(|pod| {
                reports
                    .iter()
                    .find(|report| report.pod == pod.name)
                    .is_none_or(|report| report.epoch() != current.epoch)
            })
            .map(|pod| pod.name.clone())
            .collect();
        return Ok(if targets.is_empty() {
            TopologyDecision::InSync {
                map: current.clone(),
            }
        } else {
            TopologyDecision::Push {
                map: current.clone(),
                targets,
                new_epoch: false,
                primaries: Vec::new(),
                slots_reassigned: false,
            }
        });
    }

    // Slot ownership never changes here once a complete map exists: shards keep their
    // slots and new shards join with none (the resharding steps migrate slots to them
    // with their keys). Only a region without a usable map gets an even split. A shard
    // of the current map missing from `pods` would leave its slots unassigned, which
    // `validate` below refuses (callers keep draining shards in `pods`).
    let keep_slots = current.filter(|current| current.validate().is_ok());
    let even = split_evenly(pods.shards.len() as u16);
    let mut shards = Vec::with_capacity(pods.shards.len());
    let mut primaries = Vec::with_capacity(pods.shards.len());
    for (index, shard_pods) in pods.shards.iter().enumerate() {
        let index = index as u32;
        let slots: Vec<SlotRange> = keep_slots
            .and_then(|current| current.shards.iter().find(|shard| shard.index == index))
            .map(|shard| shard.slots.clone())
            .unwrap_or_else(|| match keep_slots {
                Some(_) => Vec::new(),
                None => even.get(index as usize).copied().into_iter().collect(),
            });
        let (primary_pod, reason) = choose_primary(index, shard_pods, current, reports)
            .ok_or_else(|| Error::InvalidSpec(format!("shard {index} has no pods")))?;
        let mut replicas = Vec::new();
        let mut primary = None;
        for pod in shard_pods {
            let addr = pod
                .addr()
                .ok_or(Error::MissingObjectField("pod status.podIP"))?;
            if pod.name == primary_pod {
                primary = Some(addr);
            } else {
                replicas.push(addr);
            }
        }
        let primary = primary.ok_or(Error::MissingObjectField("pod status.podIP"))?;
        primaries.push(PrimaryChoice {
            shard: index,
            pod: primary_pod,
            reason,
        });
        shards.push(ShardTopology {
            index,
            slots,
            primary,
            replicas,
        });
    }
    let highest_seen = reports
        .iter()
        .map(NodeReport::epoch)
        .chain([status_epoch])
        .max()
        .unwrap_or(0);
    let map = TopologyMap {
        epoch: highest_seen + 1,
        cluster: cluster.to_string(),
        region: region.to_string(),
        shards,
    };
    map.validate()?;
    Ok(TopologyDecision::Push {
        targets: pods.iter().map(|pod| pod.name.clone()).collect(),
        new_epoch: true,
        primaries,
        slots_reassigned: keep_slots.is_none(),
        map,
    })
}

fn choose_primary(
    index: u32,
    shard_pods: &[ObservedPod],
    current: Option<&TopologyMap>,
    reports: &[NodeReport],
) -> Option<(PodName, PrimaryReason)> {
    let is_member = |id: &str| shard_pods.iter().any(|pod| pod.name == id);
    if let Some(primary) = current
        .and_then(|map| map.shards.iter().find(|shard| shard.index == index))
        .map(|shard| &shard.primary)
        .filter(|primary| is_member(&primary.id))
    {
        return Some((PodName::of(primary), PrimaryReason::KeptFromCurrentMap));
    }
    let self_claimed = reports
        .iter()
        .filter(|report| is_member(report.pod.as_str()))
        .filter_map(|report| {
            let map = report.map.as_ref()?;
            let shard = map.shard_of_node(report.pod.as_str())?;
            (shard.index == index && shard.role_of(report.pod.as_str()) == Some(NodeRole::Primary))
                .then_some((map.epoch, report.pod.clone()))
        })
        .max();
    if let Some((_, pod)) = self_claimed {
        return Some((pod, PrimaryReason::ReportedByNode));
    }
    shard_pods
        .iter()
        .min_by_key(|pod| pod.ordinal)
        .map(|pod| (pod.name.clone(), PrimaryReason::LowestOrdinal))
}

/// Per-shard status lines: from the map when there is one, else just readiness.
/// `replication` holds the `INFO replication` of the nodes that answered, by pod name.
pub fn shard_statuses(
    map: Option<&TopologyMap>,
    pods: &RegionPods,
    replication: &HashMap<PodName, ReplicationInfo>,
) -> Vec<ShardStatus> {
    let by_index: BTreeMap<u32, &ShardTopology> = map
        .map(|map| {
            map.shards
                .iter()
                .map(|shard| (shard.index, shard))
                .collect()
        })
        .unwrap_or_default();
    (0..pods.shards.len())
        .map(|index| {
            let shard = by_index.get(&(index as u32));
            let primary = shard.map(|shard| shard.primary.id.clone());
            let replicas: Vec<String> = shard
                .map(|shard| shard.replicas.iter().map(|node| node.id.clone()).collect())
                .unwrap_or_default();
            let sync = replica_sync(primary.as_deref(), &replicas, pods, replication);
            ShardStatus {
                index: index as i32,
                primary,
                replicas,
                slots: shard
                    .map(|shard| shard.slots.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                ready_replicas: sync.in_sync,
                replication_lag_bytes: sync.largest_lag,
            }
        })
        .collect()
}

/// How a shard's replicas follow its primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSync {
    /// Replicas whose pod is Ready and whose link to this primary is up.
    pub in_sync: i32,
    /// The largest `primary offset - acknowledged offset` among the replicas the primary
    /// lists, and `primary offset - replica offset` for a replica that follows this
    /// primary without being listed (resyncing, link down), when the primary's offset is
    /// known.
    pub largest_lag: Option<i64>,
}

/// Counts a replica in sync only when the node itself says it follows the shard's
/// primary (its pod IP) with the link up: a Ready pod can still be syncing, or follow
/// a node that is no longer primary.
pub fn replica_sync(
    primary: Option<&str>,
    replicas: &[String],
    pods: &RegionPods,
    replication: &HashMap<PodName, ReplicationInfo>,
) -> ReplicaSync {
    let pod = |name: &str| pods.iter().find(|pod| pod.name == name);
    let Some(primary_ip) = primary.and_then(pod).and_then(|pod| pod.ip.as_deref()) else {
        return ReplicaSync::default();
    };
    let primary_offset = primary
        .and_then(|name| replication.get(name))
        .filter(|info| info.role == ReplicationRole::Primary)
        .map(|info| info.offset);
    let attached = primary
        .and_then(|name| replication.get(name))
        .map_or(&[][..], |info| &info.attached[..]);
    let mut sync = ReplicaSync::default();
    let mut lag_behind = |offset: u64| {
        if let Some(primary_offset) = primary_offset {
            // both are offsets of one stream; probed at different moments a replica can
            // be ahead of the primary's report: no lag then, never a negative one
            let lag = i64::try_from(primary_offset.saturating_sub(offset)).unwrap_or(i64::MAX);
            sync.largest_lag = Some(sync.largest_lag.map_or(lag, |largest| largest.max(lag)));
        }
    };
    for replica in replicas {
        let ready = pod(replica).is_some_and(|pod| pod.ready);
        // The primary's own listing measures the lag: its offset and the offset each
        // replica acknowledged, read together (what `meridian_replica_lag_bytes` says).
        // A replica's report, read a moment later, is always nearly caught up with the
        // primary's earlier one and would hide a replica that keeps falling behind.
        let ip = pod(replica).and_then(|pod| pod.ip.as_deref());
        let acked = attached
            .iter()
            .filter(|listed| Some(listed.ip.as_str()) == ip)
            .map(|listed| listed.offset)
            .min();
        let info = replication.get(replica.as_str());
        let follows = info.is_some_and(|info| info.follows(primary_ip));
        match (acked, info) {
            (Some(acked), _) => lag_behind(acked),
            // Not listed but following this primary: resyncing or its link dropped (a
            // starved replica falls out of the backlog and resyncs over and over); it
            // lags by all it has not applied.
            (None, Some(info)) if follows => lag_behind(info.offset),
            // Neither listed nor answering: nothing to measure.
            _ => {}
        }
        if follows && ready && info.is_some_and(|info| info.link_up) {
            sync.in_sync += 1;
        }
    }
    sync
}

/// A shard counts as ready when the map gives it a primary and all its pods are ready.
pub fn ready_shards(map: Option<&TopologyMap>, pods: &RegionPods) -> i32 {
    let Some(map) = map else { return 0 };
    pods.shards
        .iter()
        .enumerate()
        .filter(|(index, shard_pods)| {
            map.shards.iter().any(|shard| shard.index == *index as u32)
                && shard_pods.len() == usize::from(pods.pods_per_shard)
                && shard_pods.iter().all(|pod| pod.ready)
        })
        .count() as i32
}

/// Why the operator considers a shard's primary gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryDown {
    /// Its pod no longer exists.
    PodMissing,
    /// Its pod is not running, or is being deleted (also stuck Terminating on a dead node).
    PodNotRunning,
    /// A pod with its name exists but has another IP: the node the map names is gone.
    PodReplaced,
    /// Consecutive probes (PING) failed although the pod looks fine.
    Unreachable,
    /// The node answers at its address but restarted without its data (nodes keep
    /// nothing across a restart), which a replica still holds: see
    /// [`primary_lost_data`]. Pushing the map back would make it primary again, empty.
    RestartedEmpty,
}

impl std::fmt::Display for PrimaryDown {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            PrimaryDown::PodMissing => "its pod is gone",
            PrimaryDown::PodNotRunning => "its pod is not running or is terminating",
            PrimaryDown::PodReplaced => "its pod was recreated with a new IP",
            PrimaryDown::Unreachable => "it failed consecutive probes",
            PrimaryDown::RestartedEmpty => {
                "it restarted without its data, which a replica still holds"
            }
        })
    }
}

/// Whether the pod behind `node` (as the map names it) is usable: it exists, runs, is not
/// terminating, and still has the IP the map knows. A pod that runs but is not Ready is
/// judged by the probes (`unreachable`) alone: the node controller clears Ready on every
/// pod of a node it has not heard from (all of them after an API server outage), and
/// failing over primaries that serve would only disrupt.
pub fn node_down(node: &NodeAddr, pods: &RegionPods, unreachable: bool) -> Option<PrimaryDown> {
    let Some(pod) = pods.iter().find(|pod| pod.name == node.id) else {
        return Some(PrimaryDown::PodMissing);
    };
    if pod.ip.as_deref().is_some_and(|ip| ip != node.ip) {
        return Some(PrimaryDown::PodReplaced);
    }
    if !pod.running {
        return Some(PrimaryDown::PodNotRunning);
    }
    unreachable.then_some(PrimaryDown::Unreachable)
}

/// Whether `replica` may be promoted: its pod runs at the address the map knows and is not
/// being deleted. Its Ready condition is not asked for (see [`ObservedPod::running`]):
/// the operator reads the replica itself before it promotes it.
pub fn promotable(replica: &NodeAddr, pods: &RegionPods) -> bool {
    pods.iter().any(|pod| {
        pod.name == replica.id && pod.running && pod.ip.as_deref() == Some(replica.ip.as_str())
    })
}

/// The primaries `map` still names for shards that lost their data (`lost_data`) and got
/// no new primary (`headless`): they must not get the map.
pub fn withheld_primaries<'a>(
    map: &'a TopologyMap,
    headless: &[u32],
    lost_data: &[u32],
) -> Vec<&'a str> {
    map.shards
        .iter()
        .filter(|shard| headless.contains(&shard.index) && lost_data.contains(&shard.index))
        .map(|shard| shard.primary.id.as_str())
        .collect()
}

/// Whether the primary of `shard` restarted: it answers without any map while a replica
/// of its shard holds one. Nodes keep nothing across a restart, the map included, so the
/// data is on the replica alone; found this way before the replicas' INFO shows it.
/// Returns the replica that holds a map.
pub fn primary_restarted<'a>(shard: &'a ShardTopology, reports: &[NodeReport]) -> Option<&'a str> {
    let holds_map = |id: &str| {
        reports
            .iter()
            .find(|report| report.pod == id)
            .map(|report| report.map.is_some())
    };
    if holds_map(&shard.primary.id) != Some(false) {
        return None;
    }
    shard
        .replicas
        .iter()
        .find(|replica| holds_map(&replica.id) == Some(true))
        .map(|replica| replica.id.as_str())
}

/// Whether the primary of `shard` restarted without the data a replica of it kept.
/// `replication` holds the `INFO replication` of the nodes that answered, by pod name.
///
/// A replica that follows the primary's address (`master_host`) shows it when
/// - it refuses the full syncs the primary offers (they would replace its data with
///   another history: the node refuses them on the link its data came from), or
/// - its offset is above the primary's and its replication id is neither of the
///   primary's two (a restarted node starts a new history at offset 0). The offsets
///   alone would not do: the two INFO reads are not simultaneous, so a replica read a
///   moment after its primary can be ahead of what the primary reported.
///
/// Returns the replica that shows it.
pub fn primary_lost_data<'a>(
    shard: &'a ShardTopology,
    replication: &HashMap<PodName, ReplicationInfo>,
) -> Option<&'a str> {
    let primary = replication
        .get(shard.primary.id.as_str())
        .filter(|info| info.role == ReplicationRole::Primary)?;
    shard
        .replicas
        .iter()
        .find(|replica| {
            let Some(info) = replication.get(replica.id.as_str()) else {
                return false;
            };
            let follows = info.follows(&shard.primary.ip);
            let other_history = !info.replid.is_empty()
                && info.replid != primary.replid
                && info.replid != primary.replid2;
            follows
                && (info.full_sync_refused > 0 || (info.offset > primary.offset && other_history))
        })
        .map(|replica| replica.id.as_str())
}

/// The shards of `current` whose primary is gone or lost its data, and why. A primary
/// whose pod is back with a new IP while no replica can take over rejoins through the
/// plan instead ([`rejoins_by_plan`]). `probed_dead` says whether the probes (and this
/// reconcile's own read) found a node unreachable; `reports` are the maps the nodes hold.
pub fn shards_down(
    current: &TopologyMap,
    pods: &RegionPods,
    probed_dead: impl Fn(&NodeAddr) -> bool,
    reports: &[NodeReport],
    replication: &HashMap<PodName, ReplicationInfo>,
) -> BTreeMap<u32, PrimaryDown> {
    current
        .shards
        .iter()
        .filter_map(|shard| {
            let reason = match node_down(&shard.primary, pods, probed_dead(&shard.primary)) {
                Some(reason) => {
                    Some(reason).filter(|reason| !rejoins_by_plan(shard, *reason, pods))
                }
                None => primary_restarted(shard, reports)
                    .or_else(|| primary_lost_data(shard, replication))
                    .map(|_| PrimaryDown::RestartedEmpty),
            };
            reason.map(|reason| (shard.index, reason))
        })
        .collect()
}

/// Whether a shard whose primary is down (`reason`) rejoins through the regular plan
/// rather than a failover: its primary's pod is back, Ready, with a new IP (a fresh
/// process that only lacks the map) and none of its replicas could be promoted (e.g.
/// every pod of the shard restarted at once). The plan then keeps the shard's slots and
/// names the recreated pod primary again, instead of waiting forever for a replica.
pub fn rejoins_by_plan(shard: &ShardTopology, reason: PrimaryDown, pods: &RegionPods) -> bool {
    let primary_back = reason == PrimaryDown::PodReplaced
        && pods
            .iter()
            .any(|pod| pod.name == shard.primary.id && pod.ready);
    let no_usable_replica = shard
        .replicas
        .iter()
        .all(|replica| node_down(replica, pods, false).is_some());
    primary_back && no_usable_replica
}

/// A replica that could take over, with the replication offset it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromotionCandidate {
    pub pod: PodName,
    pub offset: u64,
}

/// One shard's primary replaced by one of its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub shard: u32,
    pub old_primary: PodName,
    pub new_primary: PodName,
    pub offset: u64,
    pub reason: PrimaryDown,
}

/// Result of [`plan_failover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverPlan {
    /// The next map when at least one shard gets a new primary.
    pub map: Option<TopologyMap>,
    pub promotions: Vec<Promotion>,
    /// Shards whose primary is down and that have no usable replica.
    pub headless: Vec<u32>,
}

/// The replica of `shard` with the highest replication offset among `candidates`
/// (reachable, ready replicas); ties go to the lowest pod name so every operator agrees.
pub fn choose_promotion<'a>(
    shard: &ShardTopology,
    candidates: &'a [PromotionCandidate],
) -> Option<&'a PromotionCandidate> {
    candidates
        .iter()
        .filter(|candidate| shard.replicas.iter().any(|node| candidate.pod == node.id))
        .max_by(|left, right| {
            left.offset
                .cmp(&right.offset)
                .then_with(|| right.pod.cmp(&left.pod))
        })
}

/// Plans the promotions for the shards in `down` (shard index → why its primary is gone).
///
/// The next map has epoch `next_epoch`; in each promoted shard the chosen replica becomes
/// primary, the other replicas stay, and the failed primary is dropped (its pod rejoins
/// as a replica through the regular plan once it is back and Ready).
pub fn plan_failover(
    current: &TopologyMap,
    down: &BTreeMap<u32, PrimaryDown>,
    candidates: &[PromotionCandidate],
    next_epoch: u64,
) -> FailoverPlan {
    let mut promotions = Vec::new();
    let mut headless = Vec::new();
    let mut shards = current.shards.clone();
    for shard in &mut shards {
        let Some(reason) = down.get(&shard.index) else {
            continue;
        };
        let Some(chosen) = choose_promotion(shard, candidates) else {
            headless.push(shard.index);
            continue;
        };
        let Some(position) = shard.replicas.iter().position(|node| chosen.pod == node.id) else {
            headless.push(shard.index);
            continue;
        };
        let new_primary = shard.replicas.remove(position);
        let old_primary = std::mem::replace(&mut shard.primary, new_primary);
        if *reason == PrimaryDown::RestartedEmpty {
            // It runs and answers, only without its data: it follows the new primary at
            // once instead of waiting, outside the map, for every pod to be Ready.
            shard.replicas.push(old_primary.clone());
        }
        promotions.push(Promotion {
            shard: shard.index,
            old_primary: old_primary.id.into(),
            new_primary: chosen.pod.clone(),
            offset: chosen.offset,
            reason: *reason,
        });
    }
    let map = (!promotions.is_empty()).then(|| TopologyMap {
        epoch: next_epoch.max(current.epoch + 1),
        cluster: current.cluster.clone(),
        region: current.region.clone(),
        shards,
    });
    FailoverPlan {
        map,
        promotions,
        headless,
    }
}
