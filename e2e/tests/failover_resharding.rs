//! Issue 6 scenario: a primary dies in the middle of a resharding. One region of 2 shards
//! × 1 replica holds 20k keys (replicated: `WAIT` on every primary) and scales to 3
//! shards; once `status.resharding` shows slots moved, a primary is force-deleted: first
//! the source of the first moves (shard 0), then, in a second region, the destination
//! (the new shard 2, which holds only migrated keys). The operator must fail the shard
//! over, carry on moving slots from or to the promoted replica, and finish: 3 shards,
//! every slot served, no slot left open, every key readable and exactly those keys in
//! the cluster. The two cases run one after the other, not to load the machine twice.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use meridian_e2e::*;

const CLUSTER: &str = "foresh";
const REGION_NAME: &str = "foresh-a";
/// Keys to move: with release-built nodes a batch of 128 slots takes about 60 ms, so the
/// migration lasts a few seconds (`wait_mid_resharding` watches the nodes every 50 ms).
const PRELOAD: usize = 100_000;

#[derive(Clone, Copy, Debug)]
enum Victim {
    /// The primary of shard 0, which gives slots away.
    Source,
    /// The primary of the shard the scale-out adds, which receives them.
    Destination,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_lost_mid_resharding_is_failed_over_and_the_resharding_finishes() -> Result<()> {
    for victim in [Victim::Source, Victim::Destination] {
        let Some((client, ns)) =
            operator_scenario("failover_during_resharding", "e2e-foresh").await?
        else {
            return Ok(());
        };
        kill_mid_resharding(&client, &ns.name, victim).await?;
    }
    Ok(())
}

/// The pod whose IP serves `endpoint` (`ip:port`).
async fn pod_at(client: &kube::Client, ns: &str, endpoint: &str) -> Result<String> {
    let ip = endpoint.rsplit_once(':').map_or(endpoint, |(ip, _)| ip);
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .find(|pod| pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip))
        .and_then(|pod| pod.metadata.name)
        .with_context(|| format!("no pod has IP {ip}"))
}

async fn kill_mid_resharding(client: &kube::Client, ns: &str, victim: Victim) -> Result<()> {
    let shard_index = match victim {
        Victim::Source => 0,
        Victim::Destination => 2,
    };
    let Deployed { regions, .. } = ClusterFixture::in_region_a(CLUSTER, REGION_NAME, 2, 1)
        .apply(client, ns)
        .await?;
    let status = wait_region(
        &regions,
        REGION_NAME,
        "2 shards Ready with their replicas",
        Duration::from_secs(300),
        |view| view.settled(2) && view.status.shards.iter().all(|s| s.ready_replicas == 1),
    )
    .await?;
    let endpoints = primary_endpoints(client, ns, &status).await?;
    preload(
        &mut cluster_connection(&endpoints).await?,
        "preload:",
        PRELOAD,
    )
    .await?;
    // Every preloaded key is on a replica: the failover below must not lose one.
    for endpoint in &endpoints {
        let mut primary = redis_connection(endpoint).await?;
        wait_for_a_replica(&mut primary, 10_000)
            .await
            .with_context(|| format!("on {endpoint}"))?;
    }

    set_region_shards(&regions, REGION_NAME, 3).await?;
    let scaled_at = Instant::now();
    let mid = wait_mid_resharding(&regions, REGION_NAME, 3, &endpoints, scaled_at).await?;
    let progress = &mid.progress;
    // The source is shard 0's primary from before the change; the destination is the
    // primary that is taking slots (the status may not list it yet).
    let victim_endpoint = match victim {
        Victim::Source => endpoints.first(),
        Victim::Destination => mid.destinations.first(),
    }
    .with_context(|| format!("no primary endpoint for the {victim:?}"))?;
    let source = pod_at(client, ns, victim_endpoint).await?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(&source, &DeleteParams::default().grace_period(0))
        .await?;
    let killed_at = Instant::now();
    println!(
        "FAILOVER DURING RESHARDING ({victim:?}): force-deleted {source} (primary of shard {shard_index}) at {}/{} slots moved",
        progress.slots_moved, progress.slots_to_move
    );

    let three = wait_region(
        &regions,
        REGION_NAME,
        &format!(
            "3 shards settled, shard {shard_index} failed over, its old primary back as a replica"
        ),
        Duration::from_secs(300),
        |view| {
            view.settled(3)
                && view.status.shards.iter().all(|s| s.ready_replicas == 1)
                && view.status.shards.get(shard_index).is_some_and(|shard| {
                    shard.primary.as_deref() != Some(source.as_str())
                        && shard.replicas == [source.clone()]
                })
        },
    )
    .await?;
    println!(
        "FAILOVER DURING RESHARDING ({victim:?}): settled on 3 shards {:?} after the kill, epoch {}",
        killed_at.elapsed(),
        three.epoch
    );
    every_slot_owned(&three)?;
    assert_no_key_lost(client, ns, &three, "preload:", PRELOAD, 0).await
}
