//! Issue 6 scenario: a whole region restarting at once rejoins without manual steps, and
//! without a fresh bootstrap over nodes that hold data.
//!
//! Two regions of one CacheCluster (3 shards × 1 replica). First every pod of region-a is
//! deleted at once: the region must come back Ready with every slot served, its link to
//! region-b connected again, and a write in region-b must invalidate a key cached in
//! region-a. Then both pods of one shard go at once: that shard comes back and serves
//! its slots (its keys are lost: it is a cache), and the other shards keep theirs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use meridian_api::{CacheRegion, CacheRegionStatus};
use meridian_e2e::*;
use meridian_topology::SlotRange;
use redis::cluster_async::ClusterConnection;

const CLUSTER: &str = "restart";
const REGION_A: &str = "restart-a";
const REGION_B: &str = "restart-b";
const SHARDS: usize = 3;
/// Keys written before each disruption.
const KEYS: usize = 300;
/// Loose bound for a region to come back on a shared, slow CI machine.
const RECOVERY_BOUND: Duration = Duration::from_secs(150);
/// Loose bound for cross-region invalidation on a shared, slow CI machine.
const INVALIDATION_BOUND: Duration = Duration::from_secs(10);

/// Deletes the pods matching `selector` at once (without waiting) and returns their UIDs.
async fn delete_pods(pods: &Api<Pod>, selector: &str) -> Result<BTreeSet<String>> {
    let doomed: BTreeSet<String> = pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .iter()
        .filter_map(|pod| pod.metadata.uid.clone())
        .collect();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(selector),
    )
    .await
    .with_context(|| format!("delete pods {selector}"))?;
    Ok(doomed)
}

/// Waits until region-a runs none of the `replaced` pods and is Ready again at a newer
/// epoch with a primary and a replica in every shard, linked to region-b.
async fn wait_recovered(
    regions: &Api<CacheRegion>,
    replaced: &BTreeSet<String>,
    epoch_before: u64,
) -> Result<CacheRegionStatus> {
    let started = Instant::now();
    let status = wait_region(
        regions,
        REGION_A,
        "Ready again with new pods, every shard complete and its link to region-b up",
        RECOVERY_BOUND,
        |view| {
            let pods_replaced = view.pods.len() == SHARDS * 2
                && view.pods.iter().all(|pod| {
                    pod.metadata
                        .uid
                        .as_ref()
                        .is_some_and(|uid| !replaced.contains(uid))
                });
            pods_replaced
                && view.settled(SHARDS)
                && view.status.epoch > epoch_before
                && view
                    .status
                    .shards
                    .iter()
                    .all(|shard| shard.replicas.len() == 1)
                && view.linked_to("region-b")
        },
    )
    .await?;
    println!(
        "REGION RESTART: {REGION_A} recovered {:?} after the deletion, epoch {epoch_before} -> {}",
        started.elapsed(),
        status.epoch
    );
    Ok(status)
}

/// A cluster connection to the region whose status is `status`, after checking with
/// `redis-cli --cluster check` that every slot is served and none is left open.
async fn serving_connection(
    client: &kube::Client,
    ns: &str,
    status: &CacheRegionStatus,
) -> Result<ClusterConnection> {
    let endpoints = primary_endpoints(client, ns, status).await?;
    let said = redis_cluster_check(&endpoints[0])?;
    if said.contains("[WARNING]") {
        bail!("redis-cli --cluster check {}: {said}", endpoints[0]);
    }
    cluster_connection(&endpoints).await
}

async fn get(connection: &mut ClusterConnection, key: &str) -> Result<Option<String>> {
    Ok(redis::cmd("GET").arg(key).query_async(connection).await?)
}

async fn set(connection: &mut ClusterConnection, key: &str, value: &str) -> Result<()> {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(connection)
        .await?;
    Ok(())
}

/// A key cached in region-a is removed by a write of the same key in region-b.
async fn assert_invalidated_from_region_b(
    region_a: &mut ClusterConnection,
    region_b: &mut ClusterConnection,
    key: &str,
) -> Result<Duration> {
    set(region_a, key, "cached-in-a").await?;
    assert_eq!(get(region_a, key).await?.as_deref(), Some("cached-in-a"));
    // Let region-a's own event reach region-b first, so region-b's write is the newer one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    set(region_b, key, "written-in-b").await?;
    let started = Instant::now();
    while get(region_a, key).await?.is_some() {
        if started.elapsed() > INVALIDATION_BOUND {
            bail!("{key} still cached in region-a {INVALIDATION_BOUND:?} after region-b's write");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_region_rejoins_and_a_restarted_shard_serves_again() -> Result<()> {
    let Some((client, ns)) = operator_scenario("a_restarted_region_rejoins", "e2e-restart").await?
    else {
        return Ok(());
    };
    let Deployed { regions, .. } = ClusterFixture {
        name: CLUSTER.into(),
        shards: SHARDS as u32,
        replicas_per_shard: 1,
        consistency: Some("eventual".into()),
        ..ClusterFixture::default()
    }
    .with_regions(&[(REGION_A, "region-a"), (REGION_B, "region-b")])
    .apply(&client, &ns.name)
    .await?;
    let mut statuses = Vec::new();
    for (name, peer) in [(REGION_A, "region-b"), (REGION_B, "region-a")] {
        statuses.push(
            wait_region(
                &regions,
                name,
                &format!("Ready with its link to {peer} up"),
                Duration::from_secs(300),
                |view| view.settled(SHARDS) && view.linked_to(peer),
            )
            .await?,
        );
    }
    let status_b = statuses.pop().context("region-b status")?;
    let status_a = statuses.pop().context("region-a status")?;
    let mut region_b = serving_connection(&client, &ns.name, &status_b).await?;
    let mut region_a = serving_connection(&client, &ns.name, &status_a).await?;
    preload(&mut region_a, "before:", KEYS).await?;
    preload(&mut region_b, "in-b:", KEYS).await?;
    let lag = assert_invalidated_from_region_b(&mut region_a, &mut region_b, "probe:0").await?;
    println!("REGION RESTART: invalidation from region-b before the restart took {lag:?}");

    // 1. Every pod of region-a at once.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let replaced = delete_pods(&pods, &region_selector(CLUSTER, "region-a")).await?;
    assert_eq!(replaced.len(), SHARDS * 2, "pods of region-a deleted");
    let status_a = wait_recovered(&regions, &replaced, status_a.epoch).await?;
    let mut region_a = serving_connection(&client, &ns.name, &status_a).await?;
    // Whatever region-a still answers for its old keys is either gone (a cache) or right.
    for index in 0..KEYS {
        let key = format!("before:{index}");
        let value = get(&mut region_a, &key).await?;
        assert!(
            value.is_none() || value == Some(format!("value-{index}")),
            "{key} reads {value:?} after the restart"
        );
    }
    // Region-b kept serving its own keys, and the link works in both directions again.
    assert_preloaded(&mut region_b, "in-b:", 0..KEYS).await?;
    let lag = assert_invalidated_from_region_b(&mut region_a, &mut region_b, "probe:1").await?;
    println!("REGION RESTART: invalidation from region-b after the restart took {lag:?}");
    wait_region(
        &regions,
        REGION_B,
        "its link to the restarted region-a up",
        RECOVERY_BOUND,
        |view| view.ready() && view.linked_to("region-a"),
    )
    .await?;

    // 2. Both pods of one shard at once: the shard comes back empty, the others keep
    // their keys.
    preload(&mut region_a, "after:", KEYS).await?;
    let shard = status_a
        .shards
        .iter()
        .find(|shard| shard.index == 1)
        .context("no shard 1 in the status")?;
    let lost_slots: Vec<SlotRange> = shard_slot_ranges(shard)?;
    let selector = format!(
        "{},{}=1",
        region_selector(CLUSTER, "region-a"),
        meridian_api::labels::SHARD
    );
    let replaced = delete_pods(&pods, &selector).await?;
    assert_eq!(replaced.len(), 2, "pods of shard 1 deleted");
    let recovered = wait_recovered(&regions, &replaced, status_a.epoch).await?;
    let slots_after: Vec<Vec<String>> = recovered.shards.iter().map(|s| s.slots.clone()).collect();
    let slots_before: Vec<Vec<String>> = status_a.shards.iter().map(|s| s.slots.clone()).collect();
    assert_eq!(
        slots_after, slots_before,
        "a restarted shard keeps its slots and the others keep theirs"
    );
    let mut region_a = serving_connection(&client, &ns.name, &recovered).await?;
    let in_lost_shard = |index: &usize| {
        let slot = meridian_topology::key_slot(format!("after:{index}").as_bytes());
        lost_slots.iter().any(|range| range.contains(slot))
    };
    let kept: Vec<usize> = (0..KEYS).filter(|index| !in_lost_shard(index)).collect();
    assert!(kept.len() < KEYS, "some keys lived in the restarted shard");
    assert_preloaded(&mut region_a, "after:", kept.iter().copied()).await?;
    // The restarted shard serves its slots again (reads and writes).
    for index in (0..KEYS).filter(in_lost_shard) {
        let key = format!("after:{index}");
        set(&mut region_a, &key, "again").await?;
        assert_eq!(get(&mut region_a, &key).await?.as_deref(), Some("again"));
    }
    let names: Vec<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .map(|pod| pod.name_any())
        .collect();
    println!("REGION RESTART: shard 1 back with pods {names:?}");
    Ok(())
}
