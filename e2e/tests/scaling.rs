//! Issue 6 scenario: one region scales 3 → 4 → 2 shards while a cluster client writes.
//! The operator migrates slots live (new shard joins empty and takes slots; removed
//! shards are drained before their StatefulSets go). Afterwards every acknowledged write
//! is readable, every slot is served (`redis-cli --cluster check`), the drained shards'
//! StatefulSets are gone and the status reported the resharding progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use meridian_api::{CacheCluster, CacheRegion, CacheRegionStatus};
use meridian_e2e::*;

const CLUSTER: &str = r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheCluster
metadata:
  name: scaling
spec:
  shards: 3
  replicasPerShard: 0
  memory:
    maxmemory: 64Mi
"#;

const REGION: &str = r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheRegion
metadata:
  name: scaling-a
spec:
  clusterRef:
    name: scaling
  region: region-a
  placement:
    nodeSelector:
      topology.kubernetes.io/region: region-a
"#;

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
    let timeout = Duration::from_secs(420);
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        let region = regions.get(REGION_NAME).await?;
        let status = region.status.clone().unwrap_or_default();
        let progressing = status
            .conditions
            .iter()
            .find(|condition| condition.type_ == "Progressing");
        if progressing.is_some_and(|condition| condition.reason == "Resharding") {
            seen.resharding_reason = true;
        }
        if status
            .resharding
            .as_ref()
            .is_some_and(|progress| progress.slots_to_move > 0)
        {
            seen.progress = true;
        }
        let ready = status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        let current = status.observed_generation == region.metadata.generation;
        let every_shard_serves = status.shards.len() == shards
            && status
                .shards
                .iter()
                .all(|shard| shard.primary.is_some() && !shard.slots.is_empty());
        if ready && current && status.resharding.is_none() && every_shard_serves {
            return Ok(status);
        }
        last = format!(
            "generation {:?}/{:?}, conditions {:?}, resharding {:?}, shards {:?}",
            status.observed_generation,
            region.metadata.generation,
            status
                .conditions
                .iter()
                .map(|condition| format!(
                    "{}={} {}: {}",
                    condition.type_, condition.status, condition.reason, condition.message
                ))
                .collect::<Vec<_>>(),
            status.resharding,
            status
                .shards
                .iter()
                .map(|shard| (shard.index, shard.slots.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("region did not settle at {shards} shards within {timeout:?}; last: {last}")
}

async fn primary_endpoints(
    client: &kube::Client,
    ns: &str,
    status: &CacheRegionStatus,
) -> Result<Vec<String>> {
    let mut endpoints = Vec::new();
    for shard in &status.shards {
        let primary = shard.primary.as_deref().context("shard without primary")?;
        endpoints.push(format!("{}:6379", pod_ip(client, ns, primary).await?));
    }
    Ok(endpoints)
}

async fn set_shards(regions: &Api<CacheRegion>, shards: i32) -> Result<()> {
    regions
        .patch(
            REGION_NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "shards": shards } })),
        )
        .await
        .with_context(|| format!("scale {REGION_NAME} to {shards} shards"))?;
    Ok(())
}

async fn cluster_connection(
    endpoints: &[String],
) -> Result<redis::cluster_async::ClusterConnection> {
    let nodes: Vec<String> = endpoints
        .iter()
        .map(|endpoint| format!("redis://{endpoint}/"))
        .collect();
    Ok(redis::cluster::ClusterClient::builder(nodes)
        .retries(30)
        .build()?
        .get_async_connection()
        .await?)
}

/// Writes `load:<n>` = n until stopped; `acked` counts the acknowledged prefix (a write
/// is retried until acknowledged, so acknowledged writes form a prefix).
fn writer(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Result<usize>> {
    tokio::spawn(async move {
        let mut connection = cluster_connection(&endpoints).await?;
        let mut failures = 0usize;
        let mut index = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let written: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("load:{index}"))
                .arg(index)
                .query_async(&mut connection)
                .await;
            match written {
                Ok(()) => {
                    index += 1;
                    acked.store(index, Ordering::Relaxed);
                }
                Err(error) => {
                    // Retried with the same key: the client refreshes its slot map.
                    failures += 1;
                    if failures > 1000 {
                        bail!("writer keeps failing: {error}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(failures)
    })
}

async fn stateful_set_names(client: &kube::Client, ns: &str) -> Result<Vec<String>> {
    let selector = format!(
        "{}=scaling,{}=region-a",
        meridian_api::labels::CLUSTER,
        meridian_api::labels::REGION
    );
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
    let Some(client) = client_or_skip("region_scales_three_four_two").await else {
        return Ok(());
    };
    ensure_operator_installed()?;
    let ns = TestNamespace::create(&client, "e2e-scaling").await?;
    let clusters: Api<CacheCluster> = Api::namespaced(client.clone(), &ns.name);
    let regions: Api<CacheRegion> = Api::namespaced(client.clone(), &ns.name);
    apply_yaml(&clusters, CLUSTER).await?;
    apply_yaml(&regions, REGION).await?;

    let mut bootstrap = Seen::default();
    let status = wait_settled(&regions, 3, &mut bootstrap).await?;
    let endpoints = primary_endpoints(&client, &ns.name, &status).await?;
    {
        let mut connection = cluster_connection(&endpoints).await?;
        for index in 0..PRELOAD {
            let () = redis::cmd("SET")
                .arg(format!("preload:{index}"))
                .arg(format!("value-{index}"))
                .query_async(&mut connection)
                .await?;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let load = writer(endpoints.clone(), stop.clone(), acked.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    set_shards(&regions, 4).await?;
    let mut out = Seen::default();
    let four = wait_settled(&regions, 4, &mut out).await?;
    println!(
        "SCALING: 3 → 4 settled at epoch {}, {} writes acknowledged",
        four.epoch,
        acked.load(Ordering::Relaxed)
    );
    let sizes: Vec<usize> = four
        .shards
        .iter()
        .map(|shard| {
            shard
                .slots
                .iter()
                .filter_map(|range| range.parse::<meridian_topology::SlotRange>().ok())
                .map(|range| range.len() as usize)
                .sum()
        })
        .collect();
    assert_eq!(sizes, [4096, 4096, 4096, 4096], "balanced after scale-out");

    set_shards(&regions, 2).await?;
    let mut drain = Seen::default();
    let two = wait_settled(&regions, 2, &mut drain).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await??;
    let written = acked.load(Ordering::Relaxed);
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
    // (reason, note, occurrences): the recorder folds repeats of a reason into one
    // Event series that keeps the first note.
    let events: Vec<(String, String, i32)> = Api::<Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|event| {
            event
                .regarding
                .as_ref()
                .and_then(|regarding| regarding.name.as_deref())
                == Some(REGION_NAME)
        })
        .map(|event| {
            let occurrences = event.series.as_ref().map_or(1, |series| series.count);
            (
                event.reason.unwrap_or_default(),
                event.note.unwrap_or_default(),
                occurrences,
            )
        })
        .collect();
    let occurrences = |wanted: &str| -> i32 {
        events
            .iter()
            .filter(|(reason, _, _)| reason == wanted)
            .map(|(_, _, count)| *count)
            .sum()
    };
    for (reason, at_least) in [
        ("ReshardingStarted", 2),
        ("ReshardingFinished", 2),
        ("ShardsDrained", 1),
        ("ShardRemoved", 1),
    ] {
        assert!(
            occurrences(reason) >= at_least,
            "event {reason} seen {} time(s), expected {at_least}: {events:?}",
            occurrences(reason)
        );
    }
    assert!(
        events
            .iter()
            .any(|(reason, note, _)| reason == "ReshardingStarted"
                && note.contains("3 → 4")
                && note.contains("4096 slot")),
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

    // Every acknowledged write is readable through a fresh cluster client.
    let endpoints = primary_endpoints(&client, &ns.name, &two).await?;
    let mut connection = cluster_connection(&endpoints).await?;
    for index in 0..PRELOAD {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("preload:{index}"))
            .query_async(&mut connection)
            .await?;
        assert_eq!(value, Some(format!("value-{index}")), "preload:{index}");
    }
    for index in 0..written {
        let value: Option<usize> = redis::cmd("GET")
            .arg(format!("load:{index}"))
            .query_async(&mut connection)
            .await?;
        assert_eq!(value, Some(index), "acknowledged write load:{index}");
    }

    // redis-cli's own checker: every slot served by the 2 remaining primaries, no slot
    // left open (a warning), and exactly the keys written: nothing lost or duplicated.
    let check = std::process::Command::new("redis-cli")
        .args(["--cluster", "check", &endpoints[0]])
        .output()
        .context("redis-cli (Debian redis-tools) is required")?;
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success()
            && said.contains("[OK] All 16384 slots covered")
            && said.contains(&format!("{} keys in 2 masters", PRELOAD + written))
            && !said.contains("[WARNING]"),
        "redis-cli --cluster check {} failed: {said}{}",
        endpoints[0],
        String::from_utf8_lossy(&check.stderr)
    );
    Ok(())
}
