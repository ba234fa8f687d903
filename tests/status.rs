//! Status computed from observed state: conditions, per-shard lines, aggregation.

mod common;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use meridian_api::{CacheCluster, CacheRegion};
use meridian_operator::Error;
use meridian_operator::controller::cluster::cluster_status;
use meridian_operator::controller::orchestration::Orchestration;
use meridian_operator::controller::status::{degraded_status, region_status};
use meridian_operator::names::PodName;
use meridian_operator::resources;
use meridian_operator::topology_plan::{ObservedPod, RegionPods};
use meridian_topology::TopologyMap;
use std::collections::HashMap;

/// No node answered `INFO replication` (the status tests here are about conditions).
fn no_replication() -> HashMap<PodName, meridian_operator::nodes::ReplicationInfo> {
    HashMap::new()
}

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

fn pods(ready: bool) -> RegionPods {
    let pods = (0..2)
        .map(|shard| ObservedPod {
            name: format!("demo-a-{shard}-0").into(),
            shard,
            ordinal: 0,
            ip: Some(format!("127.0.5.{}", shard + 1)),
            ready,
            running: ready,
        })
        .collect();
    RegionPods::group(pods, 2, 1)
}

/// The first map the planner pushes to the fresh nodes of `pods`.
fn bootstrap_map(pods: &RegionPods) -> TopologyMap {
    common::plans::bootstrap_map("demo", "region-a", pods)
}

fn condition<'a>(
    status: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn region_goes_from_waiting_to_ready_and_timestamps_move_only_on_flips() {
    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let mut region: CacheRegion = fixture("region-minimal.yaml");
    region.metadata.generation = Some(4);

    let starting = pods(false);
    let waiting = {
        let plan = resources::validate(&cluster, &region).unwrap();
        region_status(
            &region,
            &plan,
            &starting,
            Some(&Orchestration::WaitingForPods {
                ready: 0,
                expected: 2,
            }),
            None,
            None,
            &no_replication(),
            at(100),
        )
    };
    assert_eq!(waiting.observed_generation, Some(4));
    assert_eq!(condition(&waiting.conditions, "Ready").status, "False");
    assert_eq!(
        condition(&waiting.conditions, "Ready").reason,
        "PodsNotReady"
    );
    assert_eq!(condition(&waiting.conditions, "Progressing").status, "True");
    assert_eq!(condition(&waiting.conditions, "Degraded").status, "False");
    assert_eq!(waiting.epoch, 0);
    assert_eq!(waiting.shards.len(), 2);
    assert_eq!(waiting.ready_shards, 0);

    // Same state later: nothing flips, nothing's timestamp moves.
    region.status = Some(waiting.clone());
    let plan = resources::validate(&cluster, &region).unwrap();
    let again = region_status(
        &region,
        &plan,
        &starting,
        Some(&Orchestration::WaitingForPods {
            ready: 1,
            expected: 2,
        }),
        None,
        None,
        &no_replication(),
        at(200),
    );
    assert_eq!(again.conditions[0].last_transition_time, Time(at(100)));
    assert_eq!(again.conditions[1].last_transition_time, Time(at(100)));

    // Everything ready and pushed.
    let ready = pods(true);
    let map = bootstrap_map(&ready);
    let done = region_status(
        &region,
        &plan,
        &ready,
        Some(&Orchestration::InSync { map }),
        None,
        None,
        &no_replication(),
        at(300),
    );
    let ready_condition = condition(&done.conditions, "Ready");
    assert_eq!(ready_condition.status, "True");
    assert_eq!(ready_condition.reason, "AllShardsReady");
    assert_eq!(ready_condition.last_transition_time, Time(at(300)));
    assert_eq!(condition(&done.conditions, "Progressing").status, "False");
    assert_eq!(
        condition(&done.conditions, "Degraded").last_transition_time,
        Time(at(100)),
        "Degraded stayed False"
    );
    assert_eq!(done.epoch, 1);
    assert_eq!(done.ready_shards, 2);
    assert_eq!(done.shards[0].primary.as_deref(), Some("demo-a-0-0"));
    assert_eq!(done.shards[0].slots, ["0-8191"]);
}

#[test]
fn unreachable_node_keeps_last_assignment_and_degrades() {
    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let mut region: CacheRegion = fixture("region-minimal.yaml");
    let ready = pods(true);
    let map = bootstrap_map(&ready);
    let plan = resources::validate(&cluster, &region).unwrap();
    let good = region_status(
        &region,
        &plan,
        &ready,
        Some(&Orchestration::InSync { map }),
        None,
        None,
        &no_replication(),
        at(10),
    );
    region.status = Some(good.clone());
    let plan = resources::validate(&cluster, &region).unwrap();
    let error = Error::NodeTopology {
        node: "demo-a-1-0".into(),
        detail: "garbage".into(),
    };
    let bad = region_status(
        &region,
        &plan,
        &ready,
        None,
        Some(&error),
        None,
        &no_replication(),
        at(20),
    );
    assert_eq!(bad.epoch, good.epoch);
    assert_eq!(bad.shards, good.shards);
    let degraded = condition(&bad.conditions, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NodeUnreachable")
    );
    assert_eq!(degraded.last_transition_time, Time(at(20)));
    assert_eq!(condition(&bad.conditions, "Ready").status, "False");
}

#[test]
fn degraded_status_keeps_previous_fields() {
    let mut region: CacheRegion = fixture("region-wrong-cluster.yaml");
    region.status = Some(meridian_api::CacheRegionStatus {
        epoch: 9,
        ready_shards: 1,
        ..Default::default()
    });
    let error = Error::ClusterNotFound {
        name: "somebody-else".into(),
    };
    let status = degraded_status(&region, &error, at(50));
    assert_eq!(status.epoch, 9);
    assert_eq!(status.ready_shards, 1);
    let degraded = condition(&status.conditions, "Degraded");
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, "ClusterNotFound");
    assert!(degraded.message.contains("somebody-else"));
    region.status = Some(status);
    let again = degraded_status(&region, &error, at(90));
    assert_eq!(
        condition(&again.conditions, "Degraded").last_transition_time,
        Time(at(50))
    );
}

#[test]
fn cluster_aggregates_regions() {
    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let none = cluster_status(&cluster, &[], None, at(1));
    assert_eq!(condition(&none.conditions, "Ready").reason, "NoRegions");
    assert_eq!(none.ready_regions, 0);
    // the status says where the (generated) client password is
    let secret = none.password_secret.as_ref().expect("password secret");
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("demo-auth", "password")
    );
    let mut open = cluster.clone();
    open.spec.auth = Some(meridian_api::AuthSpec {
        mode: meridian_api::AuthMode::Disabled,
        ..Default::default()
    });
    assert_eq!(
        cluster_status(&open, &[], None, at(1)).password_secret,
        None
    );

    let mut ready_region: CacheRegion = fixture("region-minimal.yaml");
    let plan_pods = pods(true);
    let map = bootstrap_map(&plan_pods);
    let status = {
        let plan = resources::validate(&cluster, &ready_region).unwrap();
        region_status(
            &ready_region,
            &plan,
            &plan_pods,
            Some(&Orchestration::InSync { map }),
            None,
            None,
            &no_replication(),
            at(2),
        )
    };
    ready_region.status = Some(status);
    let mut waiting_region: CacheRegion = fixture("region-minimal.yaml");
    waiting_region.metadata.name = Some("demo-b".into());
    waiting_region.spec.region = "region-b".into();

    let partial = cluster_status(
        &cluster,
        &[ready_region.clone(), waiting_region.clone()],
        None,
        at(3),
    );
    assert_eq!(partial.ready_regions, 1);
    assert_eq!(partial.regions.len(), 2);
    assert_eq!(partial.regions[0].name, "demo-a");
    assert!(partial.regions[0].ready);
    assert_eq!(partial.regions[0].shards, 2);
    assert_eq!(partial.regions[0].epoch, 1);
    assert_eq!(condition(&partial.conditions, "Ready").status, "False");
    assert_eq!(condition(&partial.conditions, "Progressing").status, "True");

    let all = cluster_status(&cluster, &[ready_region.clone()], None, at(4));
    assert_eq!(condition(&all.conditions, "Ready").status, "True");

    let mut duplicate = ready_region.clone();
    duplicate.metadata.name = Some("demo-a2".into());
    let clash = cluster_status(&cluster, &[ready_region.clone(), duplicate], None, at(5));
    let degraded = condition(&clash.conditions, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "DuplicateRegion")
    );

    let missing = Error::AuthSecretMissing {
        name: "auth".into(),
    };
    let secretless = cluster_status(&cluster, &[ready_region], Some(&missing), at(6));
    assert_eq!(
        condition(&secretless.conditions, "Degraded").reason,
        "AuthSecretMissing"
    );
    assert_eq!(condition(&secretless.conditions, "Ready").status, "False");
}

#[test]
fn a_down_peer_link_degrades_the_region_without_making_it_unready() {
    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let mut region: CacheRegion = fixture("region-minimal.yaml");
    let ready = pods(true);
    let map = bootstrap_map(&ready);
    let links = [
        meridian_api::PeerStatus {
            region: "region-b".into(),
            connected: true,
            lag_ms: None,
            message: None,
        },
        meridian_api::PeerStatus {
            region: "region-c".into(),
            connected: false,
            lag_ms: None,
            message: Some("CLOCKDRIFT event from region 'region-a' is 30000 ms ahead".into()),
        },
    ];
    let plan = resources::validate(&cluster, &region).unwrap();
    let status = region_status(
        &region,
        &plan,
        &ready,
        Some(&Orchestration::InSync { map: map.clone() }),
        None,
        Some(&links),
        &no_replication(),
        at(10),
    );
    assert_eq!(condition(&status.conditions, "Ready").status, "True");
    let degraded = condition(&status.conditions, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "PeerLinkDown")
    );
    assert!(degraded.message.contains("region-c"));
    assert!(!degraded.message.contains("region-b"));
    assert!(
        degraded.message.contains("region-c (CLOCKDRIFT event"),
        "the Degraded message says why the link is down: {}",
        degraded.message
    );
    assert_eq!(status.peers, links.to_vec());

    // Not asking the nodes keeps the last known links.
    region.status = Some(status.clone());
    let plan = resources::validate(&cluster, &region).unwrap();
    let kept = region_status(
        &region,
        &plan,
        &ready,
        None,
        None,
        None,
        &no_replication(),
        at(20),
    );
    assert_eq!(kept.peers, links.to_vec());

    // The cluster reports the link separately and stays Ready.
    let aggregated = cluster_status(&cluster, std::slice::from_ref(&region), None, at(30));
    assert_eq!(condition(&aggregated.conditions, "Ready").status, "True");
    let cluster_degraded = condition(&aggregated.conditions, "Degraded");
    assert_eq!(cluster_degraded.reason, "PeerLinkDown");
    assert!(cluster_degraded.message.contains("region-a -> region-c"));

    // Links back up: Degraded clears.
    let healed = region_status(
        &region,
        &plan,
        &ready,
        Some(&Orchestration::InSync { map }),
        None,
        Some(&links[..1]),
        &no_replication(),
        at(40),
    );
    assert_eq!(condition(&healed.conditions, "Degraded").status, "False");
}

#[test]
fn a_rolling_update_keeps_the_region_ready_and_reports_progress_until_done() {
    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let mut region: CacheRegion = fixture("region-minimal.yaml");
    let ready = pods(true);
    let map = bootstrap_map(&ready);
    let rollout = meridian_api::RolloutStatus {
        updated_pods: 1,
        pods: 2,
        shard: Some(1),
        step: "shard 1: replacing primary demo-a-1-0".into(),
    };
    let plan = resources::validate(&cluster, &region).unwrap();
    let updating = region_status(
        &region,
        &plan,
        &ready,
        Some(&Orchestration::Updating {
            map: map.clone(),
            rollout: rollout.clone(),
        }),
        None,
        None,
        &no_replication(),
        at(10),
    );
    assert_eq!(updating.rollout.as_ref(), Some(&rollout));
    assert_eq!(condition(&updating.conditions, "Ready").status, "True");
    let progressing = condition(&updating.conditions, "Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", "RollingUpdate")
    );
    assert!(
        progressing.message.contains("1/2 pods") && progressing.message.contains("shard 1"),
        "{}",
        progressing.message
    );

    // A replaced pod coming back (Recovering): the rollout is still shown.
    region.status = Some(updating);
    let plan = resources::validate(&cluster, &region).unwrap();
    let recovering = region_status(
        &region,
        &plan,
        &pods(false),
        Some(&Orchestration::Recovering {
            map: map.clone(),
            ready: 1,
            expected: 2,
            headless: Vec::new(),
            lost_data: Vec::new(),
        }),
        None,
        None,
        &no_replication(),
        at(20),
    );
    assert_eq!(recovering.rollout.as_ref(), Some(&rollout));

    // Every pod updated: InSync clears it and Progressing settles.
    region.status = Some(recovering);
    let plan = resources::validate(&cluster, &region).unwrap();
    let done = region_status(
        &region,
        &plan,
        &ready,
        Some(&Orchestration::InSync { map }),
        None,
        None,
        &no_replication(),
        at(30),
    );
    assert_eq!(done.rollout, None);
    assert_eq!(condition(&done.conditions, "Progressing").status, "False");
    assert_eq!(condition(&done.conditions, "Ready").status, "True");
}

/// Issue 14: a primary restarted in place without its data while its replica kept it.
#[test]
fn a_shard_whose_primary_lost_data_is_degraded_and_never_ready() {
    use meridian_operator::controller::orchestration::PRIMARY_LOST_DATA;
    use meridian_operator::nodes::{ReplicationInfo, ReplicationRole};

    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let mut region: CacheRegion = fixture("region-minimal.yaml");
    region.metadata.generation = Some(1);
    let plan = resources::validate(&cluster, &region).unwrap();
    let pods = RegionPods::group(
        (0..2)
            .flat_map(|shard| {
                (0..2).map(move |ordinal| ObservedPod {
                    name: format!("demo-a-{shard}-{ordinal}").into(),
                    shard,
                    ordinal,
                    ip: Some(format!("127.0.5.{}", shard * 10 + ordinal + 1)),
                    ready: true,
                    running: true,
                })
            })
            .collect(),
        2,
        2,
    );
    let map = bootstrap_map(&pods);
    let shard = &map.shards[0];
    // the restarted primary: a new history at offset 0; its replica kept the old one
    let replication = HashMap::from([
        (
            PodName::of(&shard.primary),
            ReplicationInfo {
                role: ReplicationRole::Primary,
                replid: "b".repeat(40),
                replid2: "0".repeat(40),
                ..ReplicationInfo::default()
            },
        ),
        (
            PodName::of(&shard.replicas[0]),
            ReplicationInfo {
                role: ReplicationRole::Replica,
                offset: 90_000,
                master_host: shard.primary.ip.clone(),
                replid: "a".repeat(40),
                ..ReplicationInfo::default()
            },
        ),
    ]);
    let check = |status: &meridian_api::CacheRegionStatus| {
        let ready = condition(&status.conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", PRIMARY_LOST_DATA)
        );
        let degraded = condition(&status.conditions, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", PRIMARY_LOST_DATA)
        );
        assert!(
            degraded.message.contains("shard(s) 0:"),
            "{}",
            degraded.message
        );
    };

    // What the nodes show, even with every node holding the map and every pod Ready.
    let shown = region_status(
        &region,
        &plan,
        &pods,
        Some(&Orchestration::InSync { map: map.clone() }),
        None,
        None,
        &replication,
        at(10),
    );
    check(&shown);

    // The failover this reconcile decided for it.
    region.status = Some(shown);
    let plan = resources::validate(&cluster, &region).unwrap();
    let failing_over = region_status(
        &region,
        &plan,
        &pods,
        Some(&Orchestration::Recovering {
            map: map.clone(),
            ready: 4,
            expected: 4,
            headless: Vec::new(),
            lost_data: vec![0],
        }),
        None,
        None,
        &no_replication(),
        at(20),
    );
    check(&failing_over);

    // The replica took over and the restarted node follows it: Ready again.
    region.status = Some(failing_over);
    let plan = resources::validate(&cluster, &region).unwrap();
    let recovered = region_status(
        &region,
        &plan,
        &pods,
        Some(&Orchestration::InSync { map }),
        None,
        None,
        &no_replication(),
        at(30),
    );
    assert_eq!(condition(&recovered.conditions, "Ready").status, "True");
    assert_eq!(condition(&recovered.conditions, "Degraded").status, "False");
}
