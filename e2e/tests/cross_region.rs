//! Region links through the in-cluster operator: two CacheRegions of one CacheCluster in
//! the same Kubernetes cluster find each other, report their links in status, and a write
//! (or `INVALIDATE`) in one region removes the stale copy in the other. With
//! `consistency: strong`, an acknowledged write is never followed by the old value in the
//! peer region.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::Client;
use meridian_e2e::*;
use redis::cluster_async::ClusterConnection;

/// Loose bound for eventual propagation on a shared, slow CI machine (typically a few ms).
const EVENTUAL_BOUND: Duration = Duration::from_secs(5);

/// Creates the cluster and both regions, waits until both are Ready with their link to the
/// other region connected, and returns cluster connections to region-a and region-b.
async fn deploy(
    client: &Client,
    ns: &str,
    cluster: &str,
    shards: u32,
    consistency: &str,
) -> Result<(ClusterConnection, ClusterConnection)> {
    let Deployed { clusters, regions } = ClusterFixture {
        name: cluster.into(),
        shards,
        replicas_per_shard: 1,
        consistency: Some(consistency.into()),
        ..ClusterFixture::default()
    }
    .with_regions(&[
        (&format!("{cluster}-region-a"), "region-a"),
        (&format!("{cluster}-region-b"), "region-b"),
    ])
    .apply(client, ns)
    .await?;
    let started = Instant::now();
    let mut connections = Vec::new();
    for (region, peer) in [("region-a", "region-b"), ("region-b", "region-a")] {
        let name = format!("{cluster}-{region}");
        let status = wait_region(
            &regions,
            &name,
            &format!("Ready with its link to {peer} connected"),
            Duration::from_secs(300),
            |view| view.ready() && view.linked_to(peer),
        )
        .await?;
        assert!(
            !condition_true(&status.conditions, "Degraded"),
            "{name} is Degraded although its link is up: {:?}",
            status.conditions
        );
        let nodes = primary_endpoints(client, ns, &status).await?;
        connections.push(cluster_connection(&nodes).await?);
    }
    eprintln!(
        "{cluster}: both regions Ready and linked after {:?}",
        started.elapsed()
    );
    // The cluster aggregates both regions and, once both links are up, no link problem.
    wait_cluster(
        &clusters,
        cluster,
        "Ready and not Degraded",
        Duration::from_secs(60),
        |status| {
            let is = |type_: &str, value: &str| {
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == value)
            };
            is("Ready", "True") && is("Degraded", "False") && status.ready_regions == 2
        },
    )
    .await?;
    let region_b = connections.pop().context("region-b connection")?;
    let region_a = connections.pop().context("region-a connection")?;
    Ok((region_a, region_b))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_in_one_region_invalidates_the_other() -> Result<()> {
    let Some((client, ns)) =
        operator_scenario("a_write_in_one_region_invalidates_the_other", "e2e-xregion").await?
    else {
        return Ok(());
    };
    let (mut region_a, mut region_b) =
        deploy(&client, &ns.name, "xr-eventual", 2, "eventual").await?;

    // A write in region-a removes region-b's copy.
    let mut lags = Vec::new();
    for i in 0..20 {
        let key = format!("user:{i}");
        set(&mut region_b, &key, "v1").await?;
        assert_eq!(get(&mut region_b, &key).await?.as_deref(), Some("v1"));
        // Let region-b's own event reach region-a first, so region-a's write is the newer one.
        tokio::time::sleep(Duration::from_millis(20)).await;
        set(&mut region_a, &key, "v2").await?;
        lags.push(wait_gone(&mut region_b, std::slice::from_ref(&key), EVENTUAL_BOUND).await?);
        assert_eq!(get(&mut region_a, &key).await?.as_deref(), Some("v2"));
    }
    lags.sort();
    eprintln!(
        "cross-region invalidation lag (write in region-a -> gone in region-b, 20 keys): \
         min {:?}, median {:?}, max {:?}",
        lags[0],
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );

    // INVALIDATE <pattern> from region-a clears matching keys on every shard of region-b
    // and leaves the others alone.
    let matching: Vec<String> = (0..40).map(|i| format!("session:{i}")).collect();
    for key in &matching {
        set(&mut region_b, key, "cached").await?;
    }
    set(&mut region_b, "profile:1", "keep").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let _: i64 = redis::cmd("INVALIDATE")
        .arg("session:*")
        .query_async(&mut region_a)
        .await?;
    let pattern_lag = wait_gone(&mut region_b, &matching, EVENTUAL_BOUND).await?;
    eprintln!(
        "cross-region INVALIDATE session:* lag: {pattern_lag:?} (command issued {:?} before)",
        started.elapsed()
    );
    assert_eq!(
        get(&mut region_b, "profile:1").await?.as_deref(),
        Some("keep"),
        "INVALIDATE session:* must not touch profile:1"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn strong_consistency_never_serves_the_old_value_after_an_ack() -> Result<()> {
    let Some((client, ns)) = operator_scenario(
        "strong_consistency_never_serves_the_old_value_after_an_ack",
        "e2e-xstrong",
    )
    .await?
    else {
        return Ok(());
    };
    let (mut region_a, mut region_b) = deploy(&client, &ns.name, "xr-strong", 1, "strong").await?;

    let mut write_latency = Vec::new();
    for i in 0..50 {
        let key = format!("balance:{i}");
        set(&mut region_b, &key, "old").await?;
        assert_eq!(get(&mut region_b, &key).await?.as_deref(), Some("old"));
        let started = Instant::now();
        // Acknowledged only once region-b acknowledged the invalidation.
        set(&mut region_a, &key, "new").await?;
        write_latency.push(started.elapsed());
        // No wait: right after the ack, region-b must not serve the old value.
        let seen = get(&mut region_b, &key).await?;
        assert_ne!(
            seen.as_deref(),
            Some("old"),
            "region-b served the old value of {key} after region-a acknowledged the write"
        );
    }
    write_latency.sort();
    eprintln!(
        "strong write latency (ack includes region-b): median {:?}, max {:?}",
        write_latency[write_latency.len() / 2],
        write_latency[write_latency.len() - 1]
    );
    Ok(())
}
