//! Issue 14 reproduction: a shard's primary process is killed in place (SIGKILL, what a
//! crash or an OOM kill does), so the kubelet restarts its container with the same pod IP
//! and an empty dataset. Before the fix, the replica reconnected to its restarted primary,
//! full-synced the empty dataset and flushed its own: the shard lost every key while the
//! region said Ready.
//!
//! Two runs of the fault: with the operator running (a race it usually won on an idle
//! machine), and with the operator frozen while the primary crashes and restarts (which
//! made the loss certain). In both, no write acknowledged by `WAIT 1` may be lost, the
//! replica is promoted, and the restarted pod rejoins as its replica with the data.
//!
//! Killing a container's process needs the node: the test process must run on the machine
//! whose nodes run the pods (the local cluster); elsewhere the scenarios skip.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use meridian_e2e::*;

const ACKED: i64 = 300;

/// After the crash: the replica is promoted, keeps every acknowledged write, and the
/// restarted pod rejoins as its replica holding them too.
async fn assert_recovered(
    regions: &Api<meridian_api::CacheRegion>,
    scene: &FirstShard,
) -> Result<()> {
    let status = wait_shard0_primary(regions, &scene.replica).await?;
    assert!(status.epoch > scene.epoch, "epoch bumped: {status:?}");
    scene
        .assert_replicated_on(&scene.replica_endpoint, ACKED)
        .await?;
    wait_for(
        "the restarted pod rejoins as a replica with every acknowledged write",
        Duration::from_secs(180),
        || async {
            let status = regions
                .get("orders-a")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let shard = status.shards.first().cloned().unwrap_or_default();
            if shard.replicas != [scene.primary.clone()] {
                return Err(format!("shard 0 status: {shard:?}"));
            }
            scene
                .assert_replicated_on(&scene.primary_endpoint, ACKED)
                .await
                .map(Some)
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    wait_region_ready(regions, "orders-a", Duration::from_secs(120)).await?;
    Ok(())
}

/// A Ready region with one replica per shard, shard 0's primary holding [`ACKED`] writes
/// its replica acknowledged.
struct Scene {
    client: kube::Client,
    ns: TestNamespace,
    regions: Api<meridian_api::CacheRegion>,
    pods: Api<Pod>,
    shard: FirstShard,
}

async fn scene(test: &str, prefix: &str) -> Result<Option<Scene>> {
    let Some((client, ns)) = operator_scenario(test, prefix).await? else {
        return Ok(None);
    };
    let (regions, status) = orders_region_with_replicas(&client, &ns.name).await?;
    let shard = FirstShard::read(&client, &ns.name, &status).await?;
    shard.write_replicated(ACKED).await?;
    let pods = Api::namespaced(client.clone(), &ns.name);
    Ok(Some(Scene {
        client,
        ns,
        regions,
        pods,
        shard,
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_killed_in_place_loses_no_acknowledged_write() -> Result<()> {
    // `_ns` is bound so that the namespace lives (and is deleted) with the test.
    let Some(Scene {
        ns: _ns,
        regions,
        pods,
        shard,
        ..
    }) = scene("primary_killed_in_place", "e2e-crash").await?
    else {
        return Ok(());
    };
    let Some(pid) = kill_container(&pods.get(&shard.primary).await?, "node")? else {
        eprintln!(
            "SKIP primary_killed_in_place: {}'s process is not on this machine",
            shard.primary
        );
        return Ok(());
    };
    println!("CRASH: killed {} (pid {pid}) in place", shard.primary);
    assert_recovered(&regions, &shard).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_killed_while_the_operator_is_frozen_loses_no_acknowledged_write() -> Result<()> {
    let Some(Scene {
        client,
        ns,
        regions,
        pods,
        shard: scene,
    }) = scene("primary_killed_operator_frozen", "e2e-crash-frozen").await?
    else {
        return Ok(());
    };
    let primary_pod = pods.get(&scene.primary).await?;
    if container_pid(&primary_pod, "node").is_none() {
        eprintln!(
            "SKIP primary_killed_operator_frozen: {}'s process is not on this machine",
            scene.primary
        );
        return Ok(());
    }

    let frozen = freeze_operator(&client).await?;
    kill_container(&primary_pod, "node")?;
    wait_restarted(&pods, &scene.primary, 1, &scene.primary_endpoint).await?;
    // The replica's link retries its restarted primary every few seconds: give it several
    // chances to take the empty dataset before looking.
    tokio::time::sleep(Duration::from_secs(8)).await;
    scene
        .assert_replicated_on(&scene.replica_endpoint, ACKED)
        .await
        .context("the replica lost its data while no operator ran")?;
    for guard in frozen {
        guard.wake()?;
    }

    assert_recovered(&regions, &scene).await?;
    let events = region_events(&client, &ns.name, "orders-a").await?;
    assert!(
        event_count(&events, "PrimaryLostData") >= 1,
        "no PrimaryLostData event: {events:?}"
    );
    Ok(())
}
