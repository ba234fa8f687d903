//! Failover planning: which primaries count as down, which replica is promoted, and the
//! map that follows — including the pod coming back and rejoining as a replica.

mod common;

use common::plans::{all_pods, pod};

use std::collections::{BTreeMap, HashMap};

use meridian_operator::names::PodName;
use meridian_operator::nodes::{ReplicationInfo, ReplicationRole};
use meridian_operator::topology_plan::{
    self, NodeReport, ObservedPod, PrimaryDown, PromotionCandidate, RegionPods, TopologyDecision,
};
use meridian_topology::{NodeRole, TopologyMap};

/// The bootstrapped map of a region whose pods are all ready.
fn bootstrapped(shards: u16, pods_per_shard: u16) -> TopologyMap {
    let pods = RegionPods::group(all_pods(shards, pods_per_shard), shards, pods_per_shard);
    common::plans::bootstrap_map("orders", "eu", &pods)
}

fn candidate(pod: &str, offset: u64) -> PromotionCandidate {
    PromotionCandidate {
        pod: pod.into(),
        offset,
    }
}

#[test]
fn primary_health_comes_from_pods_and_probes() {
    let map = bootstrapped(2, 2);
    let primary = &map.shards[0].primary;
    let healthy = RegionPods::group(all_pods(2, 2), 2, 2);
    assert_eq!(topology_plan::node_down(primary, &healthy, false), None);
    assert_eq!(
        topology_plan::node_down(primary, &healthy, true),
        Some(PrimaryDown::Unreachable)
    );

    let without: Vec<ObservedPod> = all_pods(2, 2)
        .into_iter()
        .filter(|pod| pod.name != primary.id)
        .collect();
    let missing = RegionPods::group(without.clone(), 2, 2);
    assert_eq!(
        topology_plan::node_down(primary, &missing, false),
        Some(PrimaryDown::PodMissing)
    );

    let mut terminating = without.clone();
    terminating.push(pod(0, 0, false));
    let terminating = RegionPods::group(terminating, 2, 2);
    assert_eq!(
        topology_plan::node_down(primary, &terminating, false),
        Some(PrimaryDown::PodNotRunning)
    );

    // Running but not Ready (the node controller's mark after an API server outage):
    // only the probes say whether it is down.
    let mut unready = without.clone();
    let mut marked = pod(0, 0, true);
    marked.ready = false;
    unready.push(marked);
    let unready = RegionPods::group(unready, 2, 2);
    assert_eq!(topology_plan::node_down(primary, &unready, false), None);
    assert_eq!(
        topology_plan::node_down(primary, &unready, true),
        Some(PrimaryDown::Unreachable)
    );

    let mut recreated = without;
    let mut new_pod = pod(0, 0, true);
    new_pod.ip = Some("127.0.9.9".into());
    recreated.push(new_pod);
    let recreated = RegionPods::group(recreated, 2, 2);
    assert_eq!(
        topology_plan::node_down(primary, &recreated, false),
        Some(PrimaryDown::PodReplaced)
    );
}

#[test]
fn the_replica_with_the_highest_offset_is_promoted() {
    let map = bootstrapped(2, 3);
    let shard = &map.shards[0];
    assert_eq!(shard.primary.id, "orders-eu-0-0");
    let candidates = [
        candidate("orders-eu-0-1", 100),
        candidate("orders-eu-0-2", 250),
        // A replica of another shard never qualifies, whatever its offset.
        candidate("orders-eu-1-1", 9_000),
    ];
    let chosen = topology_plan::choose_promotion(shard, &candidates).unwrap();
    assert_eq!(chosen.pod, "orders-eu-0-2");

    // Equal offsets: the lowest name wins, so two operators agree.
    let tied = [candidate("orders-eu-0-2", 7), candidate("orders-eu-0-1", 7)];
    assert_eq!(
        topology_plan::choose_promotion(shard, &tied).unwrap().pod,
        "orders-eu-0-1"
    );
    assert_eq!(topology_plan::choose_promotion(shard, &[]), None);
}

#[test]
fn failover_builds_the_next_map_and_drops_the_dead_primary() {
    let map = bootstrapped(2, 3);
    let down = BTreeMap::from([(0, PrimaryDown::PodMissing)]);
    let candidates = [
        candidate("orders-eu-0-1", 10),
        candidate("orders-eu-0-2", 30),
    ];
    let plan = topology_plan::plan_failover(&map, &down, &candidates, map.epoch + 1);
    let next = plan.map.expect("a promotion yields a map");
    next.validate().unwrap();
    assert_eq!(next.epoch, map.epoch + 1);
    assert!(plan.headless.is_empty());
    assert_eq!(plan.promotions.len(), 1);
    let promotion = &plan.promotions[0];
    assert_eq!(promotion.shard, 0);
    assert_eq!(promotion.old_primary, "orders-eu-0-0");
    assert_eq!(promotion.new_primary, "orders-eu-0-2");
    assert_eq!(promotion.offset, 30);
    assert_eq!(promotion.reason, PrimaryDown::PodMissing);

    let shard = &next.shards[0];
    assert_eq!(shard.primary.id, "orders-eu-0-2");
    let replicas: Vec<&str> = shard.replicas.iter().map(|node| node.id.as_str()).collect();
    assert_eq!(replicas, ["orders-eu-0-1"]);
    assert_eq!(
        next.role_of("orders-eu-0-0"),
        None,
        "the dead primary is dropped"
    );
    // Slots and the healthy shard are untouched.
    assert_eq!(shard.slots, map.shards[0].slots);
    assert_eq!(next.shards[1], map.shards[1]);
}

#[test]
fn a_shard_without_usable_replicas_is_headless() {
    let map = bootstrapped(2, 2);
    let down = BTreeMap::from([(1, PrimaryDown::Unreachable)]);
    let plan = topology_plan::plan_failover(&map, &down, &[], map.epoch + 1);
    assert_eq!(plan.map, None);
    assert!(plan.promotions.is_empty());
    assert_eq!(plan.headless, [1]);
}

#[test]
fn epoch_moves_past_everything_seen() {
    let map = bootstrapped(1, 2);
    let down = BTreeMap::from([(0, PrimaryDown::PodNotRunning)]);
    let plan = topology_plan::plan_failover(&map, &down, &[candidate("orders-eu-0-1", 0)], 41);
    assert_eq!(plan.map.unwrap().epoch, 41);
    let plan = topology_plan::plan_failover(&map, &down, &[candidate("orders-eu-0-1", 0)], 0);
    assert_eq!(plan.map.unwrap().epoch, map.epoch + 1);
}

#[test]
fn the_recreated_pod_rejoins_as_a_replica_of_the_promoted_node() {
    let map = bootstrapped(1, 2);
    let down = BTreeMap::from([(0, PrimaryDown::PodMissing)]);
    let failed_over =
        topology_plan::plan_failover(&map, &down, &[candidate("orders-eu-0-1", 5)], map.epoch + 1)
            .map
            .unwrap();

    // The StatefulSet recreates orders-eu-0-0 with a new IP; it is Ready and empty.
    let mut returned = pod(0, 0, true);
    returned.ip = Some("127.0.1.77".into());
    let pods = RegionPods::group(vec![returned, pod(0, 1, true)], 1, 2);
    let reports = vec![
        NodeReport {
            pod: "orders-eu-0-0".into(),
            map: None,
        },
        NodeReport {
            pod: "orders-eu-0-1".into(),
            map: Some(failed_over.clone()),
        },
    ];
    let decision = topology_plan::plan("orders", "eu", &pods, &reports, failed_over.epoch).unwrap();
    let TopologyDecision::Push { map: next, .. } = decision else {
        panic!("membership changed: a new epoch is expected, got {decision:?}");
    };
    assert_eq!(next.epoch, failed_over.epoch + 1);
    assert_eq!(next.role_of("orders-eu-0-1"), Some(NodeRole::Primary));
    assert_eq!(next.role_of("orders-eu-0-0"), Some(NodeRole::Replica));
    assert_eq!(next.node("orders-eu-0-0").unwrap().ip, "127.0.1.77");
}

#[test]
fn a_restarted_operator_adopts_a_promotion_already_on_the_nodes() {
    // The promoted node holds the failover map, the others were not reached yet: the
    // newest reported map wins and is re-sent, no second promotion happens.
    let map = bootstrapped(1, 3);
    let down = BTreeMap::from([(0, PrimaryDown::PodMissing)]);
    let failed_over =
        topology_plan::plan_failover(&map, &down, &[candidate("orders-eu-0-2", 9)], map.epoch + 1)
            .map
            .unwrap();
    let reports = [
        NodeReport {
            pod: "orders-eu-0-1".into(),
            map: Some(map.clone()),
        },
        NodeReport {
            pod: "orders-eu-0-2".into(),
            map: Some(failed_over.clone()),
        },
    ];
    let newest = topology_plan::newest_reported(&reports).unwrap();
    assert_eq!(newest, &failed_over);
    let pods = RegionPods::group(vec![pod(0, 1, true), pod(0, 2, true)], 1, 3);
    let primary = &newest.shards[0].primary;
    assert_eq!(topology_plan::node_down(primary, &pods, false), None);
}

#[test]
fn a_shard_whose_pods_all_restarted_rejoins_by_the_plan_with_its_slots() {
    let map = bootstrapped(2, 2);
    let shard = &map.shards[1];
    let recreated = |ordinal: u16, ready: bool| {
        let mut pod = pod(1, ordinal, ready);
        pod.ip = Some(format!("127.0.9.{}", ordinal + 1));
        pod
    };
    let region = |shard_one: Vec<ObservedPod>| {
        let mut pods = vec![pod(0, 0, true), pod(0, 1, true)];
        pods.extend(shard_one);
        RegionPods::group(pods, 2, 2)
    };

    // Both pods of shard 1 are back with new IPs: no replica to promote, plan anew.
    let both_back = region(vec![recreated(0, true), recreated(1, true)]);
    let reason = topology_plan::node_down(&shard.primary, &both_back, false).unwrap();
    assert_eq!(reason, PrimaryDown::PodReplaced);
    assert!(topology_plan::rejoins_by_plan(shard, reason, &both_back));
    // The primary back while its replica still starts: the same.
    let replica_starting = region(vec![recreated(0, true), recreated(1, false)]);
    assert!(topology_plan::rejoins_by_plan(
        shard,
        reason,
        &replica_starting
    ));
    // The primary's pod not Ready yet, or a replica that can take over: no.
    let primary_starting = region(vec![recreated(0, false), recreated(1, true)]);
    assert!(!topology_plan::rejoins_by_plan(
        shard,
        PrimaryDown::PodReplaced,
        &primary_starting
    ));
    let replica_kept = region(vec![recreated(0, true), pod(1, 1, true)]);
    assert!(!topology_plan::rejoins_by_plan(
        shard,
        reason,
        &replica_kept
    ));
    assert!(!topology_plan::rejoins_by_plan(
        shard,
        PrimaryDown::Unreachable,
        &both_back
    ));

    // The plan keeps every shard's slots (no fresh bootstrap over shard 0's data) and
    // names the recreated pods at their new IPs.
    let reports: Vec<NodeReport> = both_back
        .iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: (pod.shard == 0).then(|| map.clone()),
        })
        .collect();
    let decision = topology_plan::plan("orders", "eu", &both_back, &reports, map.epoch).unwrap();
    let TopologyDecision::Push { map: next, .. } = decision else {
        panic!("membership changed: a new epoch is expected, got {decision:?}");
    };
    assert_eq!(next.epoch, map.epoch + 1);
    assert_eq!(next.shards[0], map.shards[0]);
    assert_eq!(next.shards[1].slots, shard.slots);
    assert_eq!(next.shards[1].primary.id, "orders-eu-1-0");
    assert_eq!(next.shards[1].primary.ip, "127.0.9.1");
    assert_eq!(next.node("orders-eu-1-1").unwrap().ip, "127.0.9.2");
}

/// `INFO replication` of a primary: `replid` is its history, `replid2` the one before.
fn primary_info(offset: u64, replid: &str, replid2: &str) -> ReplicationInfo {
    ReplicationInfo {
        role: ReplicationRole::Primary,
        offset,
        replid: replid.into(),
        replid2: replid2.into(),
        ..ReplicationInfo::default()
    }
}

/// `INFO replication` of a replica following `master_host` with history `replid`.
fn replica_info(master_host: &str, offset: u64, replid: &str) -> ReplicationInfo {
    ReplicationInfo {
        role: ReplicationRole::Replica,
        offset,
        master_host: master_host.into(),
        replid: replid.into(),
        ..ReplicationInfo::default()
    }
}

const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";
const NONE: &str = "0000000000000000000000000000000000000000";

/// Issue 14: shard 0's primary restarts in place (same pod, same IP, Ready) with an
/// empty dataset; its replicas kept the data.
fn restarted_primary_of_shard_zero(map: &TopologyMap) -> HashMap<PodName, ReplicationInfo> {
    let shard = &map.shards[0];
    let ip = shard.primary.ip.as_str();
    let mut replication = HashMap::from([
        (PodName::of(&shard.primary), primary_info(0, NEW, NONE)),
        (
            PodName::of(&shard.replicas[0]),
            replica_info(ip, 48_000, OLD),
        ),
        (
            PodName::of(&shard.replicas[1]),
            replica_info(ip, 51_000, OLD),
        ),
    ]);
    // shard 1 is healthy
    let healthy = &map.shards[1];
    replication.insert(
        PodName::of(&healthy.primary),
        primary_info(7_000, OLD, NONE),
    );
    for replica in &healthy.replicas {
        replication.insert(
            PodName::of(replica),
            replica_info(&healthy.primary.ip, 7_000, OLD),
        );
    }
    replication
}

#[test]
fn a_primary_restarted_without_its_data_fails_over_to_the_replica_with_the_highest_offset() {
    let map = bootstrapped(2, 3);
    let pods = RegionPods::group(all_pods(2, 3), 2, 3);
    let replication = restarted_primary_of_shard_zero(&map);
    // Its pod is Ready with the same IP: the pods alone see nothing wrong.
    assert_eq!(
        topology_plan::node_down(&map.shards[0].primary, &pods, false),
        None
    );
    assert_eq!(
        topology_plan::primary_lost_data(&map.shards[0], &replication),
        Some("orders-eu-0-1")
    );
    let down = topology_plan::shards_down(&map, &pods, |_| false, &[], &replication);
    assert_eq!(down, BTreeMap::from([(0, PrimaryDown::RestartedEmpty)]));

    let candidates = [
        candidate("orders-eu-0-1", 48_000),
        candidate("orders-eu-0-2", 51_000),
    ];
    let plan = topology_plan::plan_failover(&map, &down, &candidates, map.epoch + 1);
    assert!(plan.headless.is_empty());
    let promotion = &plan.promotions[0];
    assert_eq!(
        (
            promotion.old_primary.as_str(),
            promotion.new_primary.as_str()
        ),
        ("orders-eu-0-0", "orders-eu-0-2")
    );
    assert_eq!(promotion.reason, PrimaryDown::RestartedEmpty);
    let next = plan
        .map
        .expect("a failover map, not the old one pushed back");
    next.validate().unwrap();
    assert!(next.epoch > map.epoch);
    assert_ne!(next, map);
    assert_eq!(next.role_of("orders-eu-0-2"), Some(NodeRole::Primary));
    assert_eq!(next.role_of("orders-eu-0-1"), Some(NodeRole::Replica));
    // The empty node is not primary: it follows the promoted node in the same map (it
    // runs and answers; waiting for the plan would wait for every pod to be Ready).
    assert_eq!(next.role_of("orders-eu-0-0"), Some(NodeRole::Replica));
    assert_eq!(
        next.shard_of_node("orders-eu-0-0")
            .map(|shard| shard.primary.id.as_str()),
        Some("orders-eu-0-2")
    );
    assert_eq!(next.shards[1], map.shards[1]);

    // The plan then keeps that map: nothing left to rejoin.
    let reports: Vec<NodeReport> = pods
        .iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: Some(next.clone()),
        })
        .collect();
    let decision = topology_plan::plan("orders", "eu", &pods, &reports, next.epoch).unwrap();
    assert!(
        matches!(&decision, TopologyDecision::InSync { map } if *map == next),
        "{decision:?}"
    );
}

#[test]
fn without_the_failover_the_plan_would_push_the_old_map_back() {
    // Why the restarted-primary check runs before the plan: the restarted node holds no
    // map, every other node holds the current one, membership is unchanged, so the plan
    // re-sends the current map, which names the empty node primary again.
    let map = bootstrapped(2, 3);
    let pods = RegionPods::group(all_pods(2, 3), 2, 3);
    let reports: Vec<NodeReport> = pods
        .iter()
        .map(|pod| NodeReport {
            pod: pod.name.clone(),
            map: (pod.name != "orders-eu-0-0").then(|| map.clone()),
        })
        .collect();
    let decision = topology_plan::plan("orders", "eu", &pods, &reports, map.epoch).unwrap();
    let TopologyDecision::Push {
        map: resent,
        targets,
        new_epoch,
        ..
    } = decision
    else {
        panic!("expected the catch-up push, got {decision:?}");
    };
    assert_eq!(
        (resent, targets, new_epoch),
        (map.clone(), vec![PodName::from("orders-eu-0-0")], false)
    );
    // The orchestrator asks shards_down first, which sends this shard to the failover.
    let replication = restarted_primary_of_shard_zero(&map);
    assert!(topology_plan::shards_down(&map, &pods, |_| false, &[], &replication).contains_key(&0));
}

#[test]
fn a_replica_refusing_full_syncs_shows_its_primary_lost_data() {
    let map = bootstrapped(1, 2);
    let shard = &map.shards[0];
    // The old map was pushed back: the restarted node serves PSYNC, at an offset that
    // writes moved past the replica's already; the replica refuses its full syncs.
    let mut refusing = replica_info(&shard.primary.ip, 900, OLD);
    refusing.full_sync_refused = 4;
    let replication = HashMap::from([
        (PodName::of(&shard.primary), primary_info(5_000, NEW, NONE)),
        (PodName::of(&shard.replicas[0]), refusing),
    ]);
    assert_eq!(
        topology_plan::primary_lost_data(shard, &replication),
        Some("orders-eu-0-1")
    );
}

#[test]
fn healthy_shards_are_not_mistaken_for_lost_data() {
    let map = bootstrapped(1, 3);
    let shard = &map.shards[0];
    let ip = shard.primary.ip.as_str();
    let lost = |primary: ReplicationInfo, replicas: [ReplicationInfo; 2]| {
        let mut replication = HashMap::from([(PodName::of(&shard.primary), primary)]);
        for (node, info) in shard.replicas.iter().zip(replicas) {
            replication.insert(PodName::of(node), info);
        }
        topology_plan::primary_lost_data(shard, &replication)
    };
    // A replica read a moment after its primary is ahead of it, in the same history.
    assert_eq!(
        lost(
            primary_info(100, OLD, NONE),
            [replica_info(ip, 150, OLD), replica_info(ip, 100, OLD)]
        ),
        None
    );
    // Just after a failover: the promoted primary continues the old history (replid2).
    assert_eq!(
        lost(
            primary_info(100, NEW, OLD),
            [replica_info(ip, 120, OLD), replica_info(ip, 100, NEW)]
        ),
        None
    );
    // A fresh replica (no data yet, its own id) and one following another address.
    assert_eq!(
        lost(
            primary_info(100, OLD, NONE),
            [
                replica_info(ip, 0, NEW),
                replica_info("127.0.99.99", 5_000, NEW)
            ]
        ),
        None
    );
    // Nothing known of the primary: nothing to conclude.
    let replication = HashMap::from([(
        PodName::of(&shard.replicas[0]),
        replica_info(ip, 5_000, OLD),
    )]);
    assert_eq!(topology_plan::primary_lost_data(shard, &replication), None);
}

/// Issue 14 (API server down, then a primary killed): the restarted primary answers with
/// no map while its replicas hold one. That alone says it restarted, before any replica's
/// INFO shows a refused sync.
#[test]
fn a_primary_answering_without_a_map_while_its_replica_holds_one_restarted() {
    let map = bootstrapped(2, 2);
    let pods = RegionPods::group(all_pods(2, 2), 2, 2);
    let report = |pod: &str, held: bool| NodeReport {
        pod: pod.into(),
        map: held.then(|| map.clone()),
    };
    let restarted = [
        report("orders-eu-0-0", false),
        report("orders-eu-0-1", true),
        report("orders-eu-1-0", true),
        report("orders-eu-1-1", true),
    ];
    assert_eq!(
        topology_plan::primary_restarted(&map.shards[0], &restarted),
        Some("orders-eu-0-1")
    );
    let down = topology_plan::shards_down(&map, &pods, |_| false, &restarted, &HashMap::new());
    assert_eq!(down, BTreeMap::from([(0, PrimaryDown::RestartedEmpty)]));

    // Bootstrap (nobody holds a map) and a shard whose every node restarted are no
    // failover: no replica kept anything.
    let fresh: Vec<NodeReport> = restarted
        .iter()
        .map(|r| report(r.pod.as_str(), false))
        .collect();
    assert!(topology_plan::shards_down(&map, &pods, |_| false, &fresh, &HashMap::new()).is_empty());
    // A primary that did not answer says nothing about its map.
    assert_eq!(
        topology_plan::primary_restarted(&map.shards[0], &restarted[1..]),
        None
    );
}

/// After an API server outage the node controller marks every pod NotReady for a while:
/// a running replica the operator can read is still promoted; one being deleted, gone or
/// at another address is not.
#[test]
fn a_running_replica_is_promotable_whatever_its_ready_condition() {
    let map = bootstrapped(1, 2);
    let replica = &map.shards[0].replicas[0];
    let with = |edit: &dyn Fn(&mut ObservedPod)| {
        let mut pods = all_pods(1, 2);
        edit(&mut pods[1]);
        RegionPods::group(pods, 1, 2)
    };
    assert!(topology_plan::promotable(replica, &with(&|_| {})));
    assert!(topology_plan::promotable(
        replica,
        &with(&|pod| pod.ready = false)
    ));
    assert!(!topology_plan::promotable(
        replica,
        &with(&|pod| {
            pod.ready = false;
            pod.running = false;
        })
    ));
    assert!(!topology_plan::promotable(
        replica,
        &with(&|pod| pod.ip = Some("127.9.9.9".into()))
    ));
    let gone = RegionPods::group(all_pods(1, 1), 1, 2);
    assert!(!topology_plan::promotable(replica, &gone));
}

/// A shard whose primary lost its data and has no replica to promote yet keeps its old
/// primary in the map the other shards' failover pushes, but that node does not get it.
#[test]
fn a_primary_that_lost_its_data_gets_no_map_while_its_shard_has_no_new_primary() {
    let map = bootstrapped(2, 2);
    assert_eq!(
        topology_plan::withheld_primaries(&map, &[0], &[0]),
        vec!["orders-eu-0-0"]
    );
    // headless for another reason (its pod is gone): nothing to withhold from
    assert!(topology_plan::withheld_primaries(&map, &[0], &[]).is_empty());
    assert!(topology_plan::withheld_primaries(&map, &[], &[0]).is_empty());
}
