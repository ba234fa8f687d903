//! A region of any size as one reconcile observes it, for the planner benchmark
//! (`benches/planners.rs`) and its check (`tests/planner_fixtures.rs`): every shard a
//! primary and one replica, every pod Running+Ready with its own IP, every node holding
//! the map and answering `INFO replication` as a healthy shard does.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meridian_operator::names::{self, PodName};
use meridian_operator::nodes::{AttachedReplica, ReplicationInfo, ReplicationRole};
use meridian_operator::topology_plan::{self, NodeReport, ObservedPod, RegionPods};
use meridian_topology::TopologyMap;

pub const CLUSTER: &str = "bench";
pub const REGION: &str = "eu";
/// `metadata.name` of the CacheRegion: the pods' name prefix.
pub const BASE: &str = "bench-eu";
pub const PODS_PER_SHARD: u16 = 2;
/// The replication offset every node of the fixture reports.
pub const OFFSET: u64 = 1 << 20;

/// A distinct IPv4 per pod, as a pod network hands them out.
pub fn pod_ip(shard: u16, ordinal: u16) -> String {
    let index = u32::from(shard) * u32::from(PODS_PER_SHARD) + u32::from(ordinal) + 1;
    format!(
        "10.{}.{}.{}",
        (index >> 16) & 255,
        (index >> 8) & 255,
        index & 255
    )
}

pub fn pod(shard: u16, ordinal: u16) -> ObservedPod {
    ObservedPod {
        name: names::pod(BASE, shard, ordinal),
        shard,
        ordinal,
        ip: Some(pod_ip(shard, ordinal)),
        ready: true,
        running: true,
    }
}

/// Every pod of `shards` shards, Ready.
pub fn region_pods(shards: u16) -> RegionPods {
    let pods = (0..shards)
        .flat_map(|shard| (0..PODS_PER_SHARD).map(move |ordinal| pod(shard, ordinal)))
        .collect();
    RegionPods::group(pods, shards, PODS_PER_SHARD)
}

/// What fresh nodes answer: no map.
pub fn fresh_reports(pods: &RegionPods) -> Vec<NodeReport> {
    pods.iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: None,
        })
        .collect()
}

/// Every node of `pods` holding `map`.
pub fn reports_holding(pods: &RegionPods, map: &TopologyMap) -> Vec<NodeReport> {
    pods.iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: Some(map.clone()),
        })
        .collect()
}

/// `INFO replication` of a healthy shard: the primary lists its replicas at its offset,
/// the replicas follow it with the link up.
pub fn healthy_replication(map: &TopologyMap) -> HashMap<PodName, ReplicationInfo> {
    let mut replication = HashMap::new();
    for shard in &map.shards {
        let replid = format!("{:040x}", shard.index);
        replication.insert(
            PodName::of(&shard.primary),
            ReplicationInfo {
                role: ReplicationRole::Primary,
                offset: OFFSET,
                connected_replicas: shard.replicas.len() as u32,
                replid: replid.clone(),
                attached: shard
                    .replicas
                    .iter()
                    .map(|replica| AttachedReplica {
                        ip: replica.ip.clone(),
                        offset: OFFSET,
                    })
                    .collect(),
                ..ReplicationInfo::default()
            },
        );
        for replica in &shard.replicas {
            replication.insert(
                PodName::of(replica),
                ReplicationInfo {
                    role: ReplicationRole::Replica,
                    offset: OFFSET,
                    link_up: true,
                    master_host: shard.primary.ip.clone(),
                    replid: replid.clone(),
                    ..ReplicationInfo::default()
                },
            );
        }
    }
    replication
}

/// A settled region of `shards` shards: the map the planner gives fresh nodes, held by
/// every node.
pub struct Region {
    pub shards: u16,
    pub pods: RegionPods,
    pub map: TopologyMap,
    pub reports: Vec<NodeReport>,
    pub replication: HashMap<PodName, ReplicationInfo>,
    /// Every pod answered this reconcile's read.
    pub answered: BTreeSet<PodName>,
}

impl Region {
    pub fn settled(shards: u16) -> Region {
        let pods = region_pods(shards);
        let map = first_map(&pods);
        Region {
            shards,
            reports: reports_holding(&pods, &map),
            replication: healthy_replication(&map),
            answered: pods.iter().map(|pod| pod.name.clone()).collect(),
            pods,
            map,
        }
    }

    /// The pods without the primaries of `down` (their pods are gone).
    pub fn pods_without_primaries(&self, down: &[u32]) -> RegionPods {
        let gone: BTreeSet<&str> = self
            .map
            .shards
            .iter()
            .filter(|shard| down.contains(&shard.index))
            .map(|shard| shard.primary.id.as_str())
            .collect();
        let pods = self
            .pods
            .iter()
            .filter(|pod| !gone.contains(pod.name.as_str()))
            .cloned()
            .collect();
        RegionPods::group(pods, self.shards, PODS_PER_SHARD)
    }

    /// `count` shards spread evenly over the region (for "10% of the primaries down").
    pub fn spread_shards(&self, count: usize) -> Vec<u32> {
        let shards = usize::from(self.shards);
        let count = count.clamp(1, shards);
        (0..count)
            .map(|rank| (rank * shards / count) as u32)
            .collect()
    }
}

/// The first map of `pods` (fresh nodes, epoch 1, slots split evenly).
pub fn first_map(pods: &RegionPods) -> TopologyMap {
    topology_plan::plan(CLUSTER, REGION, pods, &fresh_reports(pods), 0)
        .expect("the first plan of a ready region")
        .map()
        .clone()
}

/// The map a region of `from` shards has once `to` (> `from`) shards' pods are ready:
/// the new shards join empty, the slots still where they were.
pub fn joined_map(from: u16, to: u16) -> TopologyMap {
    let before = first_map(&region_pods(from));
    let pods = region_pods(to);
    topology_plan::plan(
        CLUSTER,
        REGION,
        &pods,
        &reports_holding(&region_pods(from), &before),
        1,
    )
    .expect("new shards join the map")
    .map()
    .clone()
}

/// Slot counts per shard index.
pub fn slot_counts(map: &TopologyMap) -> BTreeMap<u32, usize> {
    map.shards
        .iter()
        .map(|shard| (shard.index, shard.slot_set().len()))
        .collect()
}

/// The `CLUSTER NODES` text a meridian-node answers for `map` as node `me` (one line per
/// node, as `nodes_text` in crates/meridian-node/src/commands/cluster.rs writes them):
/// what the resharding step reads from every primary to find slots in transit.
pub fn cluster_nodes_text(map: &TopologyMap, me: &str) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    for shard in &map.shards {
        for node in shard.nodes() {
            let primary = node.id == shard.primary.id;
            let flags = match (node.id == me, primary) {
                (true, true) => "myself,master",
                (true, false) => "myself,slave",
                (false, true) => "master",
                (false, false) => "slave",
            };
            let master = if primary {
                "-".to_string()
            } else {
                meridian_topology::cluster_node_id(&shard.primary.id)
            };
            let _ = write!(
                text,
                "{} {}:{}@{} {flags} {master} 0 0 {} connected",
                meridian_topology::cluster_node_id(&node.id),
                node.ip,
                node.port,
                u32::from(node.port) + 10000,
                map.epoch
            );
            if primary {
                for range in &shard.slots {
                    let _ = write!(text, " {range}");
                }
            }
            text.push('\n');
        }
    }
    text
}
