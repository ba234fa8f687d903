//! Issue 6 scenario: changing `replicasPerShard` adds and removes replicas without losing
//! data, every replica really replicates (WAIT), and a shard's pods stay in distinct
//! zones — also for the replica the operator adds.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;
use meridian_api::{CacheRegion, CacheRegionStatus};
use meridian_e2e::*;

fn carts(replicas: u32) -> ClusterFixture {
    ClusterFixture::in_region_a("carts", "carts-a", 1, replicas)
}

/// Waits until the region is Ready with exactly `replicas` replicas in its one shard.
async fn wait_replicas(regions: &Api<CacheRegion>, replicas: usize) -> Result<CacheRegionStatus> {
    wait_region(
        regions,
        "carts-a",
        &format!("Ready with {replicas} replica(s)"),
        Duration::from_secs(300),
        |view| {
            view.ready()
                && view.status.shards.first().map(|s| s.replicas.len()) == Some(replicas)
                && view.pods.len() == replicas + 1
        },
    )
    .await
}

/// Zone of every pod of the region (through its Node's topology label).
async fn pod_zones(client: &Client, ns: &str) -> Result<Vec<(String, String)>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut zones = Vec::new();
    for pod in region_pods(client, ns, "carts", "region-a").await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .with_context(|| format!("{name} is not scheduled"))?;
        let node = nodes.get(&node_name).await?;
        let zone = node
            .metadata
            .labels
            .unwrap_or_default()
            .get("topology.kubernetes.io/zone")
            .cloned()
            .with_context(|| format!("node {node_name} has no zone label"))?;
        zones.push((name, zone));
    }
    Ok(zones)
}

async fn assert_distinct_zones(client: &Client, ns: &str) -> Result<()> {
    let zones = pod_zones(client, ns).await?;
    let distinct: BTreeSet<&str> = zones.iter().map(|(_, zone)| zone.as_str()).collect();
    assert_eq!(
        distinct.len(),
        zones.len(),
        "a shard's pods share a zone although the region has three: {zones:?}"
    );
    Ok(())
}

async fn primary_connection(
    client: &Client,
    ns: &str,
    status: &CacheRegionStatus,
) -> Result<redis::aio::MultiplexedConnection> {
    let primary = status
        .shards
        .first()
        .and_then(|shard| shard.primary.clone())
        .context("shard without primary")?;
    let ip = pod_ip(client, ns, &primary).await?;
    redis_connection(&format!("{ip}:6379")).await
}

/// Asks the primary to confirm `replicas` replicas hold everything written so far.
async fn wait_acks(
    connection: &mut redis::aio::MultiplexedConnection,
    replicas: i64,
) -> Result<i64> {
    Ok(redis::cmd("WAIT")
        .arg(replicas)
        .arg(5000)
        .query_async(connection)
        .await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_count_changes_keep_data_and_zones() -> Result<()> {
    let Some((client, ns)) =
        operator_scenario("replica_count_changes_keep_data_and_zones", "e2e-replicas").await?
    else {
        return Ok(());
    };
    let Deployed { clusters, regions } = carts(1).apply(&client, &ns.name).await?;

    let status = wait_replicas(&regions, 1).await?;
    assert_distinct_zones(&client, &ns.name).await?;
    let mut primary = primary_connection(&client, &ns.name, &status).await?;
    for i in 0..500 {
        let _: () = redis::cmd("SET")
            .arg(format!("cart:{i}"))
            .arg(i)
            .query_async(&mut primary)
            .await?;
    }

    // 1 → 2 replicas: the new pod goes to the free zone, syncs everything, and acknowledges.
    apply_yaml(&clusters, &carts(2).yaml()).await?;
    let status = wait_replicas(&regions, 2).await?;
    assert_distinct_zones(&client, &ns.name).await?;
    let mut primary = primary_connection(&client, &ns.name, &status).await?;
    let _: () = redis::cmd("SET")
        .arg("cart:after-scale-out")
        .arg("x")
        .query_async(&mut primary)
        .await?;
    let acked = wait_acks(&mut primary, 2).await?;
    assert_eq!(acked, 2, "WAIT saw {acked} replicas after scaling to 2");
    let added = status
        .shards
        .first()
        .map(|shard| shard.replicas.clone())
        .unwrap_or_default();
    for replica in &added {
        let ip = pod_ip(&client, &ns.name, replica).await?;
        let mut connection = redis_connection(&format!("{ip}:6379")).await?;
        let _: () = redis::cmd("READONLY").query_async(&mut connection).await?;
        let size: i64 = redis::cmd("DBSIZE").query_async(&mut connection).await?;
        assert_eq!(size, 501, "replica {replica} holds {size} keys");
    }

    // 2 → 1: the highest ordinal goes, the data stays, WAIT still finds one replica.
    apply_yaml(&clusters, &carts(1).yaml()).await?;
    let status = wait_replicas(&regions, 1).await?;
    assert_distinct_zones(&client, &ns.name).await?;
    let mut primary = primary_connection(&client, &ns.name, &status).await?;
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut primary).await?;
    assert_eq!(size, 501, "keys after scaling in");
    let _: () = redis::cmd("SET")
        .arg("cart:after-scale-in")
        .arg("x")
        .query_async(&mut primary)
        .await?;
    let acked = wait_acks(&mut primary, 1).await?;
    assert_eq!(acked, 1, "WAIT saw {acked} replicas after scaling to 1");
    let pods: Vec<Pod> = region_pods(&client, &ns.name, "carts", "region-a").await?;
    assert_eq!(pods.len(), 2, "{}", describe_pods(&pods));
    Ok(())
}
