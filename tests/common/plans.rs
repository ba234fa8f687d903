//! Topology plans the pure tests start from.

use meridian_operator::topology_plan::{self, NodeReport, RegionPods, TopologyDecision};
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
