//! Region links through the in-cluster operator: two CacheRegions of one CacheCluster in
//! the same Kubernetes cluster find each other, report their links in status, and a write
//! (or `INVALIDATE`) in one region removes the stale copy in the other. With
//! `consistency: strong`, an acknowledged write is never followed by the old value in the
//! peer region.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::Api;
use meridian_api::{CacheCluster, CacheRegion, CacheRegionStatus};
use meridian_e2e::*;
use redis::cluster_async::ClusterConnection;

/// Loose bound for eventual propagation on a shared, slow CI machine (typically a few ms).
const EVENTUAL_BOUND: Duration = Duration::from_secs(5);

fn cluster_yaml(name: &str, shards: u32, consistency: &str) -> String {
    // The CRD refuses a strong timeout on an eventual cluster.
    let strong_timeout = if consistency == "strong" {
        "\n    strongTimeoutMs: 2000"
    } else {
        ""
    };
    format!(
        r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheCluster
metadata:
  name: {name}
spec:
  shards: {shards}
  replicasPerShard: 1
  consistency: {consistency}
  crossRegion:
    mode: invalidate{strong_timeout}
  memory:
    maxmemory: 64Mi
"#
    )
}

fn region_yaml(cluster: &str, region: &str) -> String {
    format!(
        r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheRegion
metadata:
  name: {cluster}-{region}
spec:
  clusterRef:
    name: {cluster}
  region: {region}
  placement:
    nodeSelector:
      topology.kubernetes.io/region: {region}
"#
    )
}

fn condition_true(status: &CacheRegionStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Creates the cluster and both regions, waits until both are Ready with their link to the
/// other region connected, and returns cluster connections to region-a and region-b.
async fn deploy(
    client: &Client,
    ns: &str,
    cluster: &str,
    shards: u32,
    consistency: &str,
) -> Result<(ClusterConnection, ClusterConnection)> {
    let clusters: Api<CacheCluster> = Api::namespaced(client.clone(), ns);
    let regions: Api<CacheRegion> = Api::namespaced(client.clone(), ns);
    apply_yaml(&clusters, &cluster_yaml(cluster, shards, consistency)).await?;
    for region in ["region-a", "region-b"] {
        apply_yaml(&regions, &region_yaml(cluster, region)).await?;
    }
    let started = Instant::now();
    let mut connections = Vec::new();
    for (region, peer) in [("region-a", "region-b"), ("region-b", "region-a")] {
        let name = format!("{cluster}-{region}");
        let status = wait_for(
            &format!("CacheRegion {name} Ready with its link to {peer} connected"),
            Duration::from_secs(300),
            || {
                let regions = regions.clone();
                let client = client.clone();
                let name = name.clone();
                async move {
                    let r = regions.get(&name).await.map_err(|e| e.to_string())?;
                    let status = r.status.unwrap_or_default();
                    let linked = status.peers.iter().any(|p| p.region == peer && p.connected);
                    if condition_true(&status, "Ready") && linked {
                        return Ok(Some(status));
                    }
                    let pods = region_pods(&client, ns, cluster, region)
                        .await
                        .map_err(|e| e.to_string())?;
                    Err(format!(
                        "conditions={:?}; peers={:?}; pods: {}",
                        status.conditions,
                        status.peers,
                        describe_pods(&pods)
                    ))
                }
            },
        )
        .await?;
        assert!(
            !condition_true(&status, "Degraded"),
            "{name} is Degraded although its link is up: {:?}",
            status.conditions
        );
        let mut nodes = Vec::new();
        for shard in &status.shards {
            let primary = shard.primary.clone().context("shard without primary")?;
            let ip = pod_ip(client, ns, &primary).await?;
            nodes.push(format!("{ip}:6379"));
        }
        let connection = cluster_connection(&nodes).await?;
        connections.push(connection);
    }
    eprintln!(
        "{cluster}: both regions Ready and linked after {:?}",
        started.elapsed()
    );
    // The cluster aggregates both regions and, once both links are up, no link problem.
    wait_for(
        &format!("CacheCluster {cluster} Ready and not Degraded"),
        Duration::from_secs(60),
        || {
            let clusters = clusters.clone();
            async move {
                let c = clusters.get(cluster).await.map_err(|e| e.to_string())?;
                let st = c.status.unwrap_or_default();
                let is = |type_: &str, value: &str| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == type_ && c.status == value)
                };
                if is("Ready", "True") && is("Degraded", "False") && st.ready_regions == 2 {
                    Ok(Some(()))
                } else {
                    Err(format!("{st:?}"))
                }
            }
        },
    )
    .await?;
    let region_b = connections.pop().context("region-b connection")?;
    let region_a = connections.pop().context("region-a connection")?;
    Ok((region_a, region_b))
}

async fn get(connection: &mut ClusterConnection, key: &str) -> Result<Option<String>> {
    Ok(redis::cmd("GET").arg(key).query_async(connection).await?)
}

async fn set(connection: &mut ClusterConnection, key: &str, value: &str) -> Result<()> {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(connection)
        .await?;
    Ok(())
}

/// Polls until none of `keys` is readable in the region; returns how long that took.
async fn wait_gone(connection: &mut ClusterConnection, keys: &[String]) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let mut left = Vec::new();
        for key in keys {
            if let Some(value) = get(connection, key).await? {
                left.push(format!("{key}={value}"));
            }
        }
        if left.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > EVENTUAL_BOUND {
            bail!(
                "still readable after {EVENTUAL_BOUND:?}: {}",
                left.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_in_one_region_invalidates_the_other() -> Result<()> {
    let Some(client) = client_or_skip("a_write_in_one_region_invalidates_the_other").await else {
        return Ok(());
    };
    ensure_operator_installed()?;
    let ns = TestNamespace::create(&client, "e2e-xregion").await?;
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
        lags.push(wait_gone(&mut region_b, std::slice::from_ref(&key)).await?);
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
    let pattern_lag = wait_gone(&mut region_b, &matching).await?;
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
    let Some(client) =
        client_or_skip("strong_consistency_never_serves_the_old_value_after_an_ack").await
    else {
        return Ok(());
    };
    ensure_operator_installed()?;
    let ns = TestNamespace::create(&client, "e2e-xstrong").await?;
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
