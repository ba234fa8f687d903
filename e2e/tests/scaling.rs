//! Issue 6 scenario: one region scales 3 → 4 → 2 shards while a cluster client writes.
//! The operator migrates slots live (new shard joins empty and takes slots; removed
//! shards are drained before their StatefulSets go). Afterwards every acknowledged write
//! is readable, every slot is served (`redis-cli --cluster check`), the drained shards'
//! StatefulSets are gone and the status reported the resharding progress.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, ListParams};
use meridian_api::{CacheRegion, CacheRegionStatus};
use meridian_e2e::*;

const REGION_NAME: &str = "scaling-a";
/// Keys written before the first scaling step.
const PRELOAD: usize = 2000;

/// What the status polls saw of the resharding while it ran.
#[derive(Default)]
struct Seen {
    resharding_reason: bool,
    progress: bool,
}

/// Waits until the region serves `shards` shards at the current generation with no
/// resharding left, recording progress reports seen on the way.
async fn wait_settled(
    regions: &Api<CacheRegion>,
    shards: usize,
    seen: &mut Seen,
) -> Result<CacheRegionStatus> {
    wait_region(
        regions,
        REGION_NAME,
        &format!("settled at {shards} shards"),
        Duration::from_secs(420),
        |view| {
            let progressing = view
                .status
                .conditions
                .iter()
                .find(|condition| condition.type_ == "Progressing");
            if progressing.is_some_and(|condition| condition.reason == "Resharding") {
                seen.resharding_reason = true;
            }
            if view
                .status
                .resharding
                .as_ref()
                .is_some_and(|progress| progress.slots_to_move > 0)
            {
                seen.progress = true;
            }
            view.settled(shards)
        },
    )
    .await
}

async fn stateful_set_names(client: &kube::Client, ns: &str) -> Result<Vec<String>> {
    let selector = region_selector("scaling", "region-a");
    Ok(Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|stateful_set| stateful_set.metadata.deletion_timestamp.is_none())
        .filter_map(|stateful_set| stateful_set.metadata.name)
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn region_scales_three_four_two_under_writes_without_losing_keys() -> Result<()> {
    let Some((client, ns)) =
        operator_scenario("region_scales_three_four_two", "e2e-scaling").await?
    else {
        return Ok(());
    };
    let Deployed { regions, .. } = ClusterFixture::in_region_a("scaling", REGION_NAME, 3, 0)
        .apply(&client, &ns.name)
        .await?;

    let mut bootstrap = Seen::default();
    let status = wait_settled(&regions, 3, &mut bootstrap).await?;
    let endpoints = primary_endpoints(&client, &ns.name, &status).await?;
    preload(
        &mut cluster_connection(&endpoints).await?,
        "preload:",
        PRELOAD,
    )
    .await?;

    let load = AckedWriter::start(endpoints.clone(), 1000);
    tokio::time::sleep(Duration::from_secs(1)).await;

    set_region_shards(&regions, REGION_NAME, 4).await?;
    let mut out = Seen::default();
    let four = wait_settled(&regions, 4, &mut out).await?;
    println!(
        "SCALING: 3 → 4 settled at epoch {}, {} writes acknowledged",
        four.epoch,
        load.acked()
    );
    let sizes = slots_per_shard(&four)?;
    assert_eq!(sizes, [4096, 4096, 4096, 4096], "balanced after scale-out");

    set_region_shards(&regions, REGION_NAME, 2).await?;
    let mut drain = Seen::default();
    let two = wait_settled(&regions, 2, &mut drain).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (written, failures) = load.stop().await?;
    println!(
        "SCALING: 4 → 2 settled at epoch {}; writer: {written} acknowledged, {failures} retried",
        two.epoch
    );
    assert!(written > 0, "the writer wrote during the resharding");
    // A fast machine may finish a step within one reconcile, so the status polls only
    // report what they caught; the Events mark both ends of each resharding for sure.
    println!(
        "SCALING: status showed Progressing=Resharding {}/{} and status.resharding {}/{} (out/in)",
        out.resharding_reason, drain.resharding_reason, out.progress, drain.progress
    );
    let events = region_events(&client, &ns.name, REGION_NAME).await?;
    for (reason, at_least) in [
        ("ReshardingStarted", 2),
        ("ReshardingFinished", 2),
        ("ShardsDrained", 1),
        ("ShardRemoved", 1),
    ] {
        assert!(
            event_count(&events, reason) >= at_least,
            "event {reason} seen {} time(s), expected {at_least}: {events:?}",
            event_count(&events, reason)
        );
    }
    assert!(
        events
            .iter()
            .any(|event| event.reason == "ReshardingStarted"
                && event.note.contains("3 → 4")
                && event.note.contains("4096 slot")),
        "ReshardingStarted notes: {events:?}"
    );

    // The drained shards' StatefulSets are gone; the remaining ones are shards 0 and 1.
    let stateful_sets = wait_for(
        "StatefulSets of drained shards deleted",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let ns = ns.name.clone();
            async move {
                let names = stateful_set_names(&client, &ns)
                    .await
                    .map_err(|error| error.to_string())?;
                if names.len() == 2 {
                    Ok(Some(names))
                } else {
                    Err(format!("{names:?}"))
                }
            }
        },
    )
    .await?;
    assert!(
        stateful_sets
            .iter()
            .all(|name| name.ends_with("-0") || name.ends_with("-1")),
        "{stateful_sets:?}"
    );

    // Every preloaded and acknowledged key is readable, every slot served by the 2
    // remaining primaries, none left open, nothing lost or duplicated.
    assert_no_key_lost(&client, &ns.name, &two, "preload:", PRELOAD, written).await?;
    Ok(())
}
