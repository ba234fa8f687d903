//! Issue 6 scenario: the operator is killed in the middle of a slot migration and the
//! next one finishes it. One region scales 3 → 5 shards with 100k keys preloaded (so the
//! migration takes a while) while a cluster client writes; once `status.resharding`
//! shows slots moved, every operator pod is force-deleted. The resharding must still
//! complete: 5 shards, no slot left open, every preloaded and every acknowledged key
//! readable, and exactly those keys in the cluster.

use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use meridian_e2e::*;

const CLUSTER: &str = "opres";
const REGION_NAME: &str = "opres-a";
/// Keys to move: with release-built nodes a batch of 128 slots takes about 60 ms, so the
/// migration lasts a few seconds (`wait_mid_resharding` watches the nodes every 50 ms).
const PRELOAD: usize = 100_000;
/// Where `manifests/install.yaml` runs the operator.
const OPERATOR_NAMESPACE: &str = "meridian-system";
const OPERATOR_PODS: &str = "app.kubernetes.io/name=meridian-operator";

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_operator_finishes_the_resharding_it_started() -> Result<()> {
    let Some((client, ns)) =
        operator_scenario("a_killed_operator_finishes_the_resharding", "e2e-opres").await?
    else {
        return Ok(());
    };
    let Deployed { regions, .. } = ClusterFixture::in_region_a(CLUSTER, REGION_NAME, 3, 0)
        .apply(&client, &ns.name)
        .await?;

    let status = wait_region_settled(&regions, REGION_NAME, 3, Duration::from_secs(300)).await?;
    let endpoints = primary_endpoints(&client, &ns.name, &status).await?;
    let started = Instant::now();
    preload(
        &mut cluster_connection(&endpoints).await?,
        "preload:",
        PRELOAD,
    )
    .await?;
    println!(
        "OPERATOR RESTART: {PRELOAD} keys preloaded in {:?}",
        started.elapsed()
    );
    let load = AckedWriter::start(endpoints.clone(), 1000);
    tokio::time::sleep(Duration::from_secs(1)).await;

    set_region_shards(&regions, REGION_NAME, 5).await?;
    let scaled_at = Instant::now();
    let progress = wait_mid_resharding(&regions, REGION_NAME, 5, &endpoints, scaled_at)
        .await?
        .progress;

    // Kill every operator replica at once, without a grace period: the lease is not
    // released, the replacement waits for it to expire, and finds slots half-moved.
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let killed = operator_pods
        .list(&ListParams::default().labels(OPERATOR_PODS))
        .await?
        .items
        .len();
    operator_pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default().labels(OPERATOR_PODS),
        )
        .await?;
    let killed_at = Instant::now();
    println!(
        "OPERATOR RESTART: killed {killed} operator pod(s) {:?} after the scale-out, at {}/{} slots moved",
        scaled_at.elapsed(),
        progress.slots_moved,
        progress.slots_to_move
    );
    assert!(killed > 0, "no operator pod found with {OPERATOR_PODS}");

    let five = wait_region_settled(&regions, REGION_NAME, 5, Duration::from_secs(240)).await?;
    println!(
        "OPERATOR RESTART: resharding finished {:?} after the kill, at epoch {}",
        killed_at.elapsed(),
        five.epoch
    );
    // Informational: whether the kill landed inside a batch (the successor then finds
    // its slots MIGRATING/IMPORTING on the nodes) or between two batches.
    let resumed = Api::<Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|event| event.reason.as_deref() == Some("SlotMigrationResumed"));
    println!("OPERATOR RESTART: the successor resumed a batch in transit: {resumed}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (written, failures) = load.stop().await?;
    println!("OPERATOR RESTART: writer: {written} acknowledged, {failures} retried");
    assert!(written > 0, "the writer wrote during the resharding");
    let slots = every_slot_owned(&five)?;
    assert!(
        slots.iter().all(|&count| count == 3276 || count == 3277),
        "balanced over 5 shards: {slots:?}"
    );

    assert_no_key_lost(&client, &ns.name, &five, "preload:", PRELOAD, written).await?;
    // Leave a running operator for whatever runs next.
    ensure_operator_installed()?;
    Ok(())
}
