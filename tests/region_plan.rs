//! The node step a reconcile takes, decided from one observation (`region_plan`): no
//! client, only fixtures. Each case is a region as the operator would observe it.

mod common;

use common::plans::all_pods;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meridian_operator::names::PodName;
use meridian_operator::nodes::{ReplicationInfo, ReplicationRole};
use meridian_operator::region_plan::{self, NodeStep, NodeView, Retention};
use meridian_operator::topology_plan::{NodeReport, PrimaryDown, RegionPods, TopologyDecision};
use meridian_topology::TopologyMap;

/// What a reconcile observes: pods, the maps the answering nodes hold, their replication.
struct Observed {
    pods: RegionPods,
    reports: Vec<NodeReport>,
    replication: HashMap<PodName, ReplicationInfo>,
    answered: BTreeSet<PodName>,
    status_epoch: u64,
}

impl Observed {
    /// Every pod ready, answering, and holding `map` (or no map).
    fn settled(shards: u16, pods_per_shard: u16, map: Option<&TopologyMap>) -> Observed {
        let pods = RegionPods::group(all_pods(shards, pods_per_shard), shards, pods_per_shard);
        let reports = pods
            .iter()
            .map(|pod| NodeReport {
                pod: pod.name.clone(),
                map: map.cloned(),
            })
            .collect();
        let answered = pods.iter().map(|pod| pod.name.clone()).collect();
        Observed {
            pods,
            reports,
            replication: HashMap::new(),
            answered,
            status_epoch: map.map_or(0, |map| map.epoch),
        }
    }

    fn view(&self) -> NodeView<'_> {
        NodeView {
            cluster: "orders",
            region: "eu",
            pods: &self.pods,
            reports: &self.reports,
            replication: &self.replication,
            answered: &self.answered,
            status_epoch: self.status_epoch,
        }
    }

    /// The pod stops answering (gone from the reads).
    fn silent(&mut self, pod: &str) {
        self.answered.remove(pod);
        self.reports.retain(|report| report.pod != pod);
    }

    fn offset(&mut self, pod: &str, offset: u64) {
        self.replication.insert(
            pod.into(),
            ReplicationInfo {
                role: ReplicationRole::Replica,
                offset,
                link_up: false,
                ..ReplicationInfo::default()
            },
        );
    }
}

fn bootstrap(shards: u16, pods_per_shard: u16) -> TopologyMap {
    let pods = RegionPods::group(all_pods(shards, pods_per_shard), shards, pods_per_shard);
    common::plans::bootstrap_map("orders", "eu", &pods)
}

#[test]
fn a_fresh_region_waits_for_its_pods_then_gets_its_first_map() {
    let mut observed = Observed::settled(2, 2, None);
    let mut starting = all_pods(2, 2);
    starting[3].ready = false;
    observed.pods = RegionPods::group(starting, 2, 2);
    assert_eq!(
        region_plan::next_step(&observed.view(), |_| false).unwrap(),
        NodeStep::WaitForPods {
            ready: 3,
            expected: 4
        }
    );

    let observed = Observed::settled(2, 2, None);
    match region_plan::next_step(&observed.view(), |_| false).unwrap() {
        NodeStep::Plan(TopologyDecision::Push {
            map,
            targets,
            new_epoch,
            slots_reassigned,
            ..
        }) => {
            assert_eq!(map.epoch, 1);
            assert_eq!(map.shards.len(), 2);
            assert_eq!(targets.len(), 4);
            assert!(new_epoch && slots_reassigned);
        }
        other => panic!("expected the first map, got {other:?}"),
    }
}

#[test]
fn a_settled_region_settles_and_a_new_epoch_needs_every_answer() {
    let map = bootstrap(2, 2);
    let observed = Observed::settled(2, 2, Some(&map));
    assert_eq!(
        region_plan::next_step(&observed.view(), |_| false).unwrap(),
        NodeStep::Plan(TopologyDecision::InSync { map: map.clone() })
    );

    // No map yet, every pod ready, one did not answer: nothing is planned without it.
    let mut observed = Observed::settled(2, 2, None);
    observed.silent("orders-eu-1-1");
    assert_eq!(
        region_plan::next_step(&observed.view(), |_| false).unwrap(),
        NodeStep::NeedsAnswer {
            pod: "orders-eu-1-1".into()
        }
    );
}

#[test]
fn a_dead_primary_fails_over_to_the_replica_furthest_ahead() {
    let map = bootstrap(1, 3);
    let primary = map.shards[0].primary.id.clone();
    let mut observed = Observed::settled(1, 3, Some(&map));
    observed.silent(&primary);
    observed.offset("orders-eu-0-1", 900);
    observed.offset("orders-eu-0-2", 1200);
    let step = region_plan::next_step(&observed.view(), |node| node.id == primary).unwrap();
    let NodeStep::FailOver(failover) = step else {
        panic!("expected a failover, got {step:?}");
    };
    assert_eq!(
        failover.down,
        BTreeMap::from([(0, PrimaryDown::Unreachable)])
    );
    assert_eq!(failover.plan.promotions.len(), 1);
    assert_eq!(failover.plan.promotions[0].new_primary, "orders-eu-0-2");
    assert_eq!(failover.plan.promotions[0].offset, 1200);
    let next = failover.plan.map.as_ref().expect("a next map");
    assert_eq!(next.epoch, map.epoch + 1);
    assert_eq!(next.shards[0].primary.id, "orders-eu-0-2");
    assert!(failover.withheld.is_empty() && failover.lost_data.is_empty());
    // The promoted node gets the map first; the others afterwards (the dead one is not
    // among the answering pods).
    let others: Vec<&str> = failover
        .others(&observed.answered)
        .map(PodName::as_str)
        .collect();
    assert_eq!(others, vec!["orders-eu-0-1"]);
}

#[test]
fn probes_alone_do_not_fail_over_a_primary_this_reconcile_could_read() {
    let map = bootstrap(1, 2);
    let primary = map.shards[0].primary.id.clone();
    let observed = Observed::settled(1, 2, Some(&map));
    assert_eq!(
        region_plan::next_step(&observed.view(), |node| node.id == primary).unwrap(),
        NodeStep::Plan(TopologyDecision::InSync { map })
    );
}

#[test]
fn a_primary_without_a_usable_replica_is_headless_and_keeps_the_map() {
    let map = bootstrap(1, 2);
    let primary = map.shards[0].primary.id.clone();
    let mut observed = Observed::settled(1, 2, Some(&map));
    observed.silent(&primary);
    // Its one replica still answers but its pod is terminating: not promotable.
    let mut pods = all_pods(1, 2);
    pods[1].running = false;
    pods[1].ready = false;
    observed.pods = RegionPods::group(pods, 1, 2);
    let step = region_plan::next_step(&observed.view(), |node| node.id == primary).unwrap();
    let NodeStep::FailOver(failover) = step else {
        panic!("expected a failover, got {step:?}");
    };
    assert_eq!(failover.plan.map, None);
    assert_eq!(failover.plan.headless, vec![0]);
}

#[test]
fn while_pods_restart_lagging_nodes_catch_up_with_the_current_map() {
    let old = bootstrap(1, 3);
    let mut current = old.clone();
    current.epoch += 1;
    let mut observed = Observed::settled(1, 3, Some(&current));
    // One replica restarted (no map), one missed the last epoch, one pod is not ready.
    observed.reports[1].map = None;
    observed.reports[2].map = Some(old);
    let mut pods = all_pods(1, 3);
    pods[2].ready = false;
    observed.pods = RegionPods::group(pods, 1, 3);
    assert_eq!(
        region_plan::next_step(&observed.view(), |_| false).unwrap(),
        NodeStep::CatchUp {
            map: current,
            lagging: vec!["orders-eu-0-1".into(), "orders-eu-0-2".into()],
        }
    );
}

#[test]
fn another_regions_map_is_not_this_regions_topology() {
    let mut foreign = bootstrap(1, 2);
    foreign.region = "us".into();
    let observed = Observed::settled(1, 2, Some(&foreign));
    assert_eq!(
        region_plan::current_map(&observed.reports, "orders", "eu"),
        None
    );
}

#[test]
fn retention_keeps_draining_shards_and_deletes_nothing_it_cannot_see() {
    let map = bootstrap(3, 1);
    // Scale-in to 2: shard 2 still owns slots, so it stays.
    let draining = region_plan::retention(Some(&map), 2, map.epoch, 3);
    assert_eq!(draining.keep, BTreeSet::from([2]));
    assert_eq!(draining.shards, 3);
    assert!(!draining.removes(2, 2));
    // No node answered in a bootstrapped region: keep what status showed, delete nothing.
    let blind = region_plan::retention(None, 1, 4, 3);
    assert_eq!(
        blind,
        Retention {
            keep: BTreeSet::from([1, 2]),
            shards: 3,
            known: false,
        }
    );
    assert!(!blind.removes(5, 1));
    // A fresh region: exactly the desired shards, shards above them go.
    let fresh = region_plan::retention(None, 2, 0, 0);
    assert_eq!(fresh.shards, 2);
    assert!(fresh.removes(2, 2));
}
