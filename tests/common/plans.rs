//! Topology plans the pure tests start from.

use meridian_operator::topology_plan::{
    self, NodeReport, ObservedPod, RegionPods, TopologyDecision,
};
use meridian_topology::TopologyMap;

/// The first map the planner pushes to `pods` when they are fresh nodes (none
/// reports a map yet).
pub fn bootstrap_map(cluster: &str, region: &str, pods: &RegionPods) -> TopologyMap {
    let reports: Vec<NodeReport> = pods
        .iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: None,
        })
        .collect();
    let TopologyDecision::Push { map, .. } =
        topology_plan::plan(cluster, region, pods, &reports, 0).unwrap()
    else {
        panic!("expected a push to fresh nodes");
    };
    map
}

/// Pod `ordinal` of shard `shard` of region `orders-eu`, running (and Ready when `ready`).
pub fn pod(shard: u16, ordinal: u16, ready: bool) -> ObservedPod {
    ObservedPod {
        name: format!("orders-eu-{shard}-{ordinal}").into(),
        shard,
        ordinal,
        ip: Some(format!("127.0.{}.{}", shard + 1, ordinal + 1)),
        ready,
        running: ready,
    }
}

/// Every pod of `shards` shards of `pods_per_shard` pods, all Ready.
pub fn all_pods(shards: u16, pods_per_shard: u16) -> Vec<ObservedPod> {
    (0..shards)
        .flat_map(|shard| (0..pods_per_shard).map(move |ordinal| pod(shard, ordinal, true)))
        .collect()
}
