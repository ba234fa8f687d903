//! The planner benchmark's fixtures (benches/support/fixtures.rs) are what it claims at
//! every size it runs, so `cargo xtask bench planners` cannot time garbage.

#[path = "../benches/support/fixtures.rs"]
mod fixtures;

use std::collections::BTreeSet;

use fixtures::{PODS_PER_SHARD, Region};
use meridian_operator::reshard::OpenSlots;
use meridian_operator::topology_plan::{self, TopologyDecision};
use meridian_topology::SLOT_COUNT;

fn assert_valid(region: &Region) {
    let shards = usize::from(region.shards);
    let map = &region.map;
    map.validate().expect("every slot covered exactly once");
    assert_eq!(map.assigned_slots(), usize::from(SLOT_COUNT));
    assert_eq!(map.shards.len(), shards);
    assert_eq!(map.nodes().count(), shards * usize::from(PODS_PER_SHARD));
    // every shard owns slots, a primary and one replica, all pods of its own
    for (index, shard) in map.shards.iter().enumerate() {
        assert_eq!(shard.index, index as u32);
        assert!(!shard.slots.is_empty(), "shard {index} owns no slot");
        assert_eq!(shard.replicas.len(), 1);
        let pods: Vec<&str> = region.pods.shards[index]
            .iter()
            .map(|pod| pod.name.as_str())
            .collect();
        assert!(shard.nodes().all(|node| pods.contains(&node.id.as_str())));
    }
    // every pod ready with its own IP, every node reports the map and answers INFO
    assert!(region.pods.all_ready());
    let ips: BTreeSet<&str> = region
        .pods
        .iter()
        .filter_map(|pod| pod.ip.as_deref())
        .collect();
    assert_eq!(ips.len(), region.pods.expected());
    assert_eq!(region.reports.len(), region.pods.expected());
    assert!(
        region
            .reports
            .iter()
            .all(|report| report.map.as_ref() == Some(map))
    );
    assert_eq!(region.replication.len(), region.pods.expected());
    assert_eq!(region.answered.len(), region.pods.expected());
    // the planner agrees the region is settled
    assert!(matches!(
        topology_plan::plan(
            fixtures::CLUSTER,
            fixtures::REGION,
            &region.pods,
            &region.reports,
            map.epoch
        )
        .unwrap(),
        TopologyDecision::InSync { .. }
    ));
    // each shard's replica counts in sync with no lag
    let statuses = topology_plan::shard_statuses(Some(map), &region.pods, &region.replication);
    assert!(
        statuses
            .iter()
            .all(|status| status.ready_replicas == 1 && status.replication_lag_bytes == Some(0))
    );
}

#[test]
fn a_thousand_shard_region_is_complete_and_settled() {
    assert_valid(&Region::settled(1000));
}

#[test]
fn every_benchmarked_size_is_complete_and_settled() {
    for shards in [3, 30, 300] {
        assert_valid(&Region::settled(shards));
    }
}

#[test]
fn joined_maps_add_empty_shards_to_a_complete_map() {
    for (from, to) in [(3, 4), (3, 6), (1000, 1001), (1000, 2000)] {
        let map = fixtures::joined_map(from, to);
        map.validate().expect("complete");
        assert_eq!(map.shards.len(), usize::from(to));
        let counts = fixtures::slot_counts(&map);
        assert!(
            counts
                .range(u32::from(from)..)
                .all(|(_, count)| *count == 0)
        );
        assert!(counts.range(..u32::from(from)).all(|(_, count)| *count > 0));
    }
}

#[test]
fn the_cluster_nodes_text_lists_every_node_and_parses_without_open_slots() {
    let region = Region::settled(30);
    let me = &region.map.shards[7].primary.id;
    let text = fixtures::cluster_nodes_text(&region.map, me);
    assert_eq!(text.lines().count(), region.pods.expected());
    assert_eq!(
        text.lines()
            .filter(|line| line.contains(" myself,master "))
            .count(),
        1
    );
    assert!(OpenSlots::parse_cluster_nodes(&text).is_empty());
    let marked = text.replace(
        " myself,master - 0 0 1 connected",
        " myself,master - 0 0 1 connected [5->-abc]",
    );
    assert_eq!(OpenSlots::parse_cluster_nodes(&marked).migrating.len(), 1);
}
