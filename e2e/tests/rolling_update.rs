//! Issue 6 scenario: changing the node image of a CacheCluster rolls every pod, one shard
//! at a time — replicas first, then a graceful handover of the primary (writes paused
//! while the replica catches up, then redirected to it), then the old primary — while a
//! cluster client writes. No write fails, every acknowledged write is readable, and the
//! handover events report how long writes were paused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use meridian_e2e::*;

const CLUSTER_NAME: &str = "rolling";
const REGION_NAME: &str = "rolling-a";
/// The same image under a second tag (`cargo xtask cluster up` imports both), so the pod
/// template changes and every pod is replaced.
const NEW_IMAGE: &str = "ghcr.io/meridian-dev/meridian-node:e2e-rolled";
const PRELOAD: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(420);

/// Settled with 2 shards of a primary and one replica each and no rollout in progress.
fn complete(view: &RegionView<'_>) -> bool {
    view.settled(2)
        && view.status.rollout.is_none()
        && view.pods.len() == 4
        && view
            .status
            .shards
            .iter()
            .all(|shard| shard.replicas.len() == 1)
}

async fn pod_uids(client: &kube::Client, ns: &str) -> Result<BTreeMap<String, String>> {
    Ok(region_pods(client, ns, CLUSTER_NAME, "region-a")
        .await?
        .into_iter()
        .filter_map(|pod| Some((pod.metadata.name?, pod.metadata.uid?)))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn image_change_rolls_every_pod_without_failed_writes() -> Result<()> {
    let Some((client, ns)) =
        operator_scenario("image_change_rolls_every_pod", "e2e-rolling").await?
    else {
        return Ok(());
    };
    let Deployed { clusters, regions } =
        ClusterFixture::in_region_a(CLUSTER_NAME, REGION_NAME, 2, 1)
            .apply(&client, &ns.name)
            .await?;
    let before = wait_region(
        &regions,
        REGION_NAME,
        "2 shards x 2 pods",
        TIMEOUT,
        complete,
    )
    .await?;
    let endpoints = primary_endpoints(&client, &ns.name, &before).await?;
    preload(
        &mut cluster_connection(&endpoints).await?,
        "preload:",
        PRELOAD,
    )
    .await?;
    let old_pods = pod_uids(&client, &ns.name).await?;
    assert_eq!(old_pods.len(), 4, "{old_pods:?}");

    // No failed attempt is tolerated: the handover pauses writes, it does not refuse them.
    let writer = AckedWriter::start(endpoints.clone(), 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    clusters
        .patch(
            CLUSTER_NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "image": NEW_IMAGE } })),
        )
        .await
        .context("change the node image")?;
    let mut saw_rollout = false;
    let after = wait_region(
        &regions,
        REGION_NAME,
        "every pod replaced and the rollout finished",
        TIMEOUT,
        |view| {
            saw_rollout |= view.status.rollout.is_some();
            let replaced = view.pods.iter().all(|pod| {
                pod.metadata
                    .uid
                    .as_ref()
                    .is_some_and(|uid| !old_pods.values().any(|old| old == uid))
            });
            complete(view) && replaced
        },
    )
    .await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (written, failures) = writer.stop().await?;
    println!(
        "ROLLING UPDATE: 4 pods replaced in {:.1} s; writer: {written} acknowledged, {failures} failed; status.rollout seen: {saw_rollout}",
        took.as_secs_f64()
    );
    assert_eq!(failures, 0, "writes failed during the rolling update");
    assert!(written > 0, "the writer wrote during the rolling update");

    // Every pod runs the new image.
    let pods: Vec<Pod> = region_pods(&client, &ns.name, CLUSTER_NAME, "region-a").await?;
    for pod in &pods {
        let image = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.containers.first())
            .and_then(|container| container.image.clone());
        assert_eq!(
            image.as_deref(),
            Some(NEW_IMAGE),
            "{}",
            describe_pods(&pods)
        );
    }

    // Both primaries were handed over (not failed over), each reported with its pause.
    let events = region_events(&client, &ns.name, REGION_NAME).await?;
    let handovers: Vec<&str> = events
        .iter()
        .filter(|event| event.reason == "PrimaryHandedOver")
        .map(|event| event.note.as_str())
        .collect();
    println!("ROLLING UPDATE: {handovers:?}");
    let handed_over = event_count(&events, "PrimaryHandedOver");
    assert!(handed_over >= 2, "handovers: {events:?}");
    assert!(
        !events
            .iter()
            .any(|event| event.reason == "FailoverStarted" || event.reason == "HandoverAborted"),
        "no failover expected during a rolling update: {events:?}"
    );
    assert!(
        after.epoch > before.epoch,
        "epoch {} -> {}",
        before.epoch,
        after.epoch
    );

    // Every preloaded and acknowledged key is readable, every slot served, nothing extra.
    assert_no_key_lost(&client, &ns.name, &after, "preload:", PRELOAD, written).await
}
