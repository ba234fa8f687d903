//! Slot assignment, primary choice and epochs planned from observed pods and node reports.

mod common;

use common::plans::{all_pods, pod};
use k8s_openapi::api::core::v1::Pod;
use meridian_operator::names::PodName;
use meridian_operator::nodes::{AttachedReplica, ReplicationInfo, ReplicationRole};
use meridian_operator::topology_plan::{
    self, NodeReport, ObservedPod, PrimaryReason, RegionPods, ReplicaSync, TopologyDecision,
};
use meridian_topology::{NodeRole, SlotRange, TopologyMap};
use std::collections::HashMap;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn region(shards: u16, pods_per_shard: u16) -> RegionPods {
    RegionPods::group(all_pods(shards, pods_per_shard), shards, pods_per_shard)
}

fn empty_reports(pods: &RegionPods) -> Vec<NodeReport> {
    pods.iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: None,
        })
        .collect()
}

fn reports_holding(pods: &RegionPods, map: &TopologyMap) -> Vec<NodeReport> {
    pods.iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: Some(map.clone()),
        })
        .collect()
}

fn pushed(decision: TopologyDecision) -> (TopologyMap, Vec<PodName>, bool) {
    match decision {
        TopologyDecision::Push {
            map,
            targets,
            new_epoch,
            ..
        } => (map, targets, new_epoch),
        other => panic!("expected a push, got {other:?}"),
    }
}

#[test]
fn pods_are_read_from_their_labels_name_and_status() {
    let ready = ObservedPod::from_pod(&fixture::<Pod>("pod-ready.yaml")).unwrap();
    assert_eq!(ready.shard, 1);
    assert_eq!(ready.ordinal, 0);
    assert_eq!(ready.ip.as_deref(), Some("127.0.10.7"));
    assert!(ready.ready);
    let starting = ObservedPod::from_pod(&fixture::<Pod>("pod-starting.yaml")).unwrap();
    assert_eq!((starting.shard, starting.ordinal), (2, 1));
    assert!(!starting.ready);
    let mut unlabelled: Pod = fixture("pod-ready.yaml");
    unlabelled.metadata.labels = None;
    assert!(ObservedPod::from_pod(&unlabelled).is_none());
}

#[test]
fn grouping_drops_surplus_pods_and_requires_every_pod_ready() {
    let mut pods: Vec<_> = (0..3)
        .flat_map(|shard| (0..2).map(move |ordinal| pod(shard, ordinal, true)))
        .collect();
    pods.push(pod(3, 0, false)); // shard beyond the desired count (scale-in)
    pods.push(pod(0, 2, false)); // ordinal beyond the desired replicas
    let grouped = RegionPods::group(pods.clone(), 3, 2);
    assert_eq!(grouped.expected(), 6);
    assert_eq!(grouped.ready_count(), 6);
    assert!(grouped.all_ready());

    pods.retain(|pod| pod.name != "orders-eu-1-1");
    let missing = RegionPods::group(pods, 3, 2);
    assert!(!missing.all_ready());
    assert_eq!(missing.ready_in_shard(1), 1);
}

#[test]
fn bootstrap_splits_slots_evenly_with_ordinal_zero_primaries() {
    let pods = region(3, 2);
    let decision =
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 0).unwrap();
    let TopologyDecision::Push {
        map,
        targets,
        new_epoch,
        primaries,
        slots_reassigned,
    } = decision
    else {
        panic!("expected a push");
    };
    assert!(new_epoch);
    assert!(slots_reassigned);
    assert_eq!(map.epoch, 1);
    assert_eq!(map.cluster, "orders");
    assert_eq!(map.region, "eu-west-1");
    map.validate().unwrap();
    assert_eq!(targets.len(), 6);
    let slots: Vec<String> = map.shards.iter().map(|s| s.slots[0].to_string()).collect();
    assert_eq!(slots, ["0-5460", "5461-10922", "10923-16383"]);
    for (index, shard) in map.shards.iter().enumerate() {
        assert_eq!(shard.primary.id, format!("orders-eu-{index}-0"));
        assert_eq!(shard.primary.port, 6379);
        assert_eq!(shard.primary.ip, format!("127.0.{}.1", index + 1));
        assert_eq!(shard.replicas.len(), 1);
        assert_eq!(shard.replicas[0].id, format!("orders-eu-{index}-1"));
    }
    assert!(
        primaries
            .iter()
            .all(|choice| choice.reason == PrimaryReason::LowestOrdinal)
    );
}

#[test]
fn epoch_is_one_above_anything_seen_on_nodes_or_in_status() {
    let pods = region(1, 1);
    let (map, _, _) = pushed(
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 41).unwrap(),
    );
    assert_eq!(map.epoch, 42);

    // A node holds a foreign, newer map (e.g. left over): the new epoch must beat it.
    let mut foreign = map.clone();
    foreign.epoch = 90;
    foreign.region = "somewhere-else".into();
    let (next, _, new_epoch) = pushed(
        topology_plan::plan(
            "orders",
            "eu-west-1",
            &pods,
            &reports_holding(&pods, &foreign),
            41,
        )
        .unwrap(),
    );
    assert!(new_epoch);
    assert_eq!(next.epoch, 91);
}

#[test]
fn nodes_holding_the_current_map_are_in_sync() {
    let pods = region(2, 2);
    let (map, _, _) = pushed(
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 0).unwrap(),
    );
    let decision = topology_plan::plan(
        "orders",
        "eu-west-1",
        &pods,
        &reports_holding(&pods, &map),
        1,
    )
    .unwrap();
    assert_eq!(decision, TopologyDecision::InSync { map });
}

#[test]
fn restarted_node_gets_the_same_map_again() {
    let pods = region(2, 2);
    let (map, _, _) = pushed(
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 0).unwrap(),
    );
    let mut reports = reports_holding(&pods, &map);
    reports[3].map = None; // orders-eu-1-1 restarted with the same IP and lost its map
    let (again, targets, new_epoch) =
        pushed(topology_plan::plan("orders", "eu-west-1", &pods, &reports, map.epoch).unwrap());
    assert!(!new_epoch);
    assert_eq!(again, map);
    assert_eq!(targets, ["orders-eu-1-1"]);
}

#[test]
fn membership_change_bumps_epoch_keeps_slots_and_reported_primary() {
    let pods = region(2, 2);
    let (mut map, _, _) = pushed(
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 0).unwrap(),
    );
    // Earlier failover made ordinal 1 primary of shard 0, with custom slot ranges.
    let shard0 = &mut map.shards[0];
    std::mem::swap(&mut shard0.primary, &mut shard0.replicas[0]);
    map.shards[0].slots = vec![SlotRange {
        start: 0,
        end: 8000,
    }];
    map.shards[1].slots = vec![SlotRange {
        start: 8001,
        end: 16383,
    }];
    map.epoch = 7;
    map.validate().unwrap();
    let reports = reports_holding(&pods, &map);

    // Pod orders-eu-1-1 was rescheduled with a new IP.
    let mut moved: Vec<ObservedPod> = pods.iter().cloned().collect();
    moved[3].ip = Some("127.0.9.9".into());
    let moved = RegionPods::group(moved, 2, 2);
    let decision = topology_plan::plan("orders", "eu-west-1", &moved, &reports, 7).unwrap();
    let TopologyDecision::Push {
        map: next,
        new_epoch,
        primaries,
        slots_reassigned,
        targets,
    } = decision
    else {
        panic!("expected a push");
    };
    assert!(new_epoch);
    assert!(!slots_reassigned);
    assert_eq!(next.epoch, 8);
    assert_eq!(targets.len(), 4);
    assert_eq!(
        next.shards[0].slots,
        [SlotRange {
            start: 0,
            end: 8000
        }]
    );
    assert_eq!(next.shards[0].primary.id, "orders-eu-0-1");
    assert_eq!(primaries[0].reason, PrimaryReason::KeptFromCurrentMap);
    assert_eq!(next.role_of("orders-eu-0-0"), Some(NodeRole::Replica));
    assert_eq!(next.node("orders-eu-1-1").unwrap().ip, "127.0.9.9");
}

#[test]
fn node_self_reported_primary_wins_when_the_newest_primary_is_gone() {
    let pods = region(1, 3);
    let (base, _, _) = pushed(
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 0).unwrap(),
    );
    // Epoch 3 (held by ordinal 1 only): ordinal 1 is primary.
    let mut older = base.clone();
    older.epoch = 3;
    let shard = &mut older.shards[0];
    std::mem::swap(&mut shard.primary, &mut shard.replicas[0]);
    // Epoch 5 (held by ordinal 0): the primary is a pod that no longer exists.
    let mut newer = base.clone();
    newer.epoch = 5;
    newer.shards[0].primary.id = "orders-eu-0-9".into();
    let reports = vec![
        NodeReport {
            pod: "orders-eu-0-0".into(),
            map: Some(newer),
        },
        NodeReport {
            pod: "orders-eu-0-1".into(),
            map: Some(older),
        },
        NodeReport {
            pod: "orders-eu-0-2".into(),
            map: None,
        },
    ];
    let TopologyDecision::Push { map, primaries, .. } =
        topology_plan::plan("orders", "eu-west-1", &pods, &reports, 5).unwrap()
    else {
        panic!("expected a push");
    };
    assert_eq!(map.epoch, 6);
    assert_eq!(map.shards[0].primary.id, "orders-eu-0-1");
    assert_eq!(primaries[0].reason, PrimaryReason::ReportedByNode);
    let replicas: Vec<_> = map.shards[0]
        .replicas
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(replicas, ["orders-eu-0-0", "orders-eu-0-2"]);
}

#[test]
fn shard_count_change_keeps_slots_and_adds_empty_shards() {
    let pods = region(2, 1);
    let (map, _, _) = pushed(
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 0).unwrap(),
    );
    let three = region(3, 1);
    let mut reports = empty_reports(&three);
    reports[0].map = Some(map.clone());
    let TopologyDecision::Push {
        map: next,
        slots_reassigned,
        ..
    } = topology_plan::plan("orders", "eu-west-1", &three, &reports, 1).unwrap()
    else {
        panic!("expected a push");
    };
    // no slot changes owner here (keys would become unreachable); the new shard joins
    // empty and resharding migrates slots to it
    assert!(!slots_reassigned);
    assert_eq!(next.shards.len(), 3);
    assert_eq!(next.shards[0].slots, map.shards[0].slots);
    assert_eq!(next.shards[1].slots, map.shards[1].slots);
    assert!(next.shards[2].slots.is_empty());
    assert_eq!(next.epoch, map.epoch + 1);
    next.validate().unwrap();
}

#[test]
fn shard_status_lines_come_from_the_map() {
    let pods = region(2, 2);
    let (map, _, _) = pushed(
        topology_plan::plan("orders", "eu-west-1", &pods, &empty_reports(&pods), 0).unwrap(),
    );
    // Shard 1's replica follows its primary (127.0.2.1), 300 bytes behind; shard 0's
    // replica has not reported.
    let replication = HashMap::from([
        (PodName::from("orders-eu-1-0"), primary_info(1300)),
        (
            PodName::from("orders-eu-1-1"),
            replica_info("127.0.2.1", true, 1000),
        ),
    ]);
    let lines = topology_plan::shard_statuses(Some(&map), &pods, &replication);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1].index, 1);
    assert_eq!(lines[1].primary.as_deref(), Some("orders-eu-1-0"));
    assert_eq!(lines[1].replicas, ["orders-eu-1-1"]);
    assert_eq!(lines[1].slots, ["8192-16383"]);
    assert_eq!(lines[1].ready_replicas, 1);
    assert_eq!(lines[1].replication_lag_bytes, Some(300));
    assert_eq!(lines[0].ready_replicas, 0, "no report, not counted in sync");
    assert_eq!(lines[0].replication_lag_bytes, None);
    assert_eq!(topology_plan::ready_shards(Some(&map), &pods), 2);
    assert_eq!(topology_plan::ready_shards(None, &pods), 0);
    let unknown = topology_plan::shard_statuses(None, &pods, &replication);
    assert!(unknown.iter().all(|line| line.primary.is_none()));
}

fn primary_info(offset: u64) -> ReplicationInfo {
    ReplicationInfo {
        role: ReplicationRole::Primary,
        offset,
        connected_replicas: 1,
        ..ReplicationInfo::default()
    }
}

fn replica_info(master_host: &str, link_up: bool, offset: u64) -> ReplicationInfo {
    ReplicationInfo {
        role: ReplicationRole::Replica,
        offset,
        link_up,
        master_host: master_host.into(),
        ..ReplicationInfo::default()
    }
}

#[test]
fn a_replica_is_in_sync_only_when_it_follows_this_primary_with_the_link_up() {
    let mut pods = region(1, 4);
    let replicas: Vec<String> = (1..4)
        .map(|ordinal| format!("orders-eu-0-{ordinal}"))
        .collect();
    let primary_ip = "127.0.1.1";
    let sync = |pods: &RegionPods, replication: &HashMap<PodName, ReplicationInfo>| {
        topology_plan::replica_sync(Some("orders-eu-0-0"), &replicas, pods, replication)
    };
    let mut replication = HashMap::from([
        (PodName::from("orders-eu-0-0"), primary_info(5000)),
        (
            PodName::from(replicas[0].as_str()),
            replica_info(primary_ip, true, 4990),
        ),
        (
            PodName::from(replicas[1].as_str()),
            replica_info(primary_ip, true, 4000),
        ),
        (
            PodName::from(replicas[2].as_str()),
            replica_info(primary_ip, true, 5000),
        ),
    ]);
    assert_eq!(
        sync(&pods, &replication),
        ReplicaSync {
            in_sync: 3,
            largest_lag: Some(1000)
        }
    );

    // Link down, following another node (e.g. a deposed primary), or a pod not Ready:
    // each leaves the count. A replica of this primary with its link down (resyncing)
    // still lags, and counts in the lag; one following another node does not.
    replication.get_mut(replicas[0].as_str()).unwrap().link_up = false;
    replication
        .get_mut(replicas[1].as_str())
        .unwrap()
        .master_host = "127.0.9.9".into();
    assert_eq!(
        sync(&pods, &replication),
        ReplicaSync {
            in_sync: 1,
            largest_lag: Some(10)
        }
    );
    let not_ready = pods
        .iter()
        .cloned()
        .map(|mut pod| {
            pod.ready = pod.name != replicas[2];
            pod
        })
        .collect();
    pods = RegionPods::group(not_ready, 1, 4);
    assert_eq!(
        sync(&pods, &replication),
        ReplicaSync {
            in_sync: 0,
            largest_lag: Some(10)
        }
    );

    // Without the primary's own report the count stands, the lag is unknown.
    let region = region(1, 4);
    replication.remove("orders-eu-0-0");
    assert_eq!(
        sync(&region, &replication),
        ReplicaSync {
            in_sync: 1,
            largest_lag: None
        }
    );
}

/// The lag is the primary's view: its offset minus the offset it lists each replica at
/// (acknowledged), whether or not the replica answers its own probe (stopped,
/// overloaded); a replica the primary does not list lags by what its own offset misses.
#[test]
fn replication_lag_comes_from_offsets_even_without_the_replicas_report() {
    let pods = region(1, 3);
    let replicas: Vec<String> = (1..3)
        .map(|ordinal| format!("orders-eu-0-{ordinal}"))
        .collect();
    let primary_ip = "127.0.1.1";
    let mut primary = primary_info(10_000);
    primary.attached = vec![
        AttachedReplica {
            ip: "127.0.1.2".into(),
            offset: 9_990,
        },
        AttachedReplica {
            ip: "127.0.1.3".into(),
            offset: 2_500,
        },
    ];
    // orders-eu-0-2 did not answer: its primary's view gives 7500 bytes of lag
    let mut replication = HashMap::from([
        (PodName::from("orders-eu-0-0"), primary),
        (
            PodName::from(replicas[0].as_str()),
            replica_info(primary_ip, true, 10_050),
        ),
    ]);
    assert_eq!(
        topology_plan::replica_sync(Some("orders-eu-0-0"), &replicas, &pods, &replication),
        ReplicaSync {
            in_sync: 1,
            largest_lag: Some(7_500)
        }
    );
    // both answer: the lag is still the primary's view (its offset and what each replica
    // acknowledged, read together), not a replica's report read a moment later
    replication.insert(
        PodName::from(replicas[1].as_str()),
        replica_info(primary_ip, true, 10_000),
    );
    assert_eq!(
        topology_plan::replica_sync(Some("orders-eu-0-0"), &replicas, &pods, &replication),
        ReplicaSync {
            in_sync: 2,
            largest_lag: Some(7_500)
        }
    );
    // a replica the primary does not list (resyncing) but that follows it lags by what
    // its own offset misses
    let mut resyncing = replica_info(primary_ip, false, 1_000);
    resyncing.link_up = false;
    replication.insert(PodName::from(replicas[1].as_str()), resyncing);
    let primary = replication.get_mut("orders-eu-0-0").unwrap();
    primary.attached.retain(|listed| listed.ip != "127.0.1.3");
    assert_eq!(
        topology_plan::replica_sync(Some("orders-eu-0-0"), &replicas, &pods, &replication),
        ReplicaSync {
            in_sync: 1,
            largest_lag: Some(9_000)
        }
    );
}

#[test]
fn highest_epoch_covers_node_maps_status_and_the_map_itself() {
    let pods = region(2, 1);
    let (map, _, _) =
        pushed(topology_plan::plan("demo", "region-a", &pods, &empty_reports(&pods), 0).unwrap());
    let mut newer = map.clone();
    newer.epoch = 9;
    let mut reports = reports_holding(&pods, &map);
    assert_eq!(topology_plan::highest_epoch(&reports, 0, &map), map.epoch);
    assert_eq!(topology_plan::highest_epoch(&reports, 5, &map), 5);
    reports[1].map = Some(newer);
    assert_eq!(topology_plan::highest_epoch(&reports, 5, &map), 9);
    assert_eq!(topology_plan::highest_epoch(&[], 0, &map), map.epoch);
}
