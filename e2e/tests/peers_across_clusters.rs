//! Issue 7 scenario: regions in different Kubernetes clusters, wired only through
//! `spec.peers`. Two namespaces stand in for two clusters: each holds its own
//! CacheCluster `catalog` (same name, as in `examples/two-clusters/`) with one
//! CacheRegion, so the operator cannot wire them as siblings. Each region then names the
//! other's link endpoint in `spec.peers`; the operator pushes those addresses to the
//! nodes, the links come up (status.peers), and writes and `INVALIDATE` in either region
//! remove the stale copies in the other.
//!
//! Across real clusters the address is the peer region's link LoadBalancer; here the peer
//! region's link Service by its cluster DNS name, which proves names resolve in the pods.

use std::time::Duration;

use anyhow::Result;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use meridian_api::CacheRegion;
use meridian_e2e::*;
use redis::cluster_async::ClusterConnection;

/// Loose bound for eventual propagation on a shared, slow CI machine (typically a few ms).
const EVENTUAL_BOUND: Duration = Duration::from_secs(5);

/// One "cluster": a namespace with CacheCluster `catalog` and its region `catalog-<region>`.
struct Site {
    ns: TestNamespace,
    region: String,
    regions: Api<CacheRegion>,
}

impl Site {
    async fn deploy(client: &Client, ns: TestNamespace, region: &str) -> Result<Self> {
        let Deployed { regions, .. } = ClusterFixture {
            name: "catalog".into(),
            shards: 2,
            replicas_per_shard: 0,
            consistency: Some("eventual".into()),
            ..ClusterFixture::default()
        }
        .with_regions(&[(&format!("catalog-{region}"), region)])
        .apply(client, &ns.name)
        .await?;
        Ok(Self {
            ns,
            region: region.to_string(),
            regions,
        })
    }

    fn name(&self) -> String {
        format!("catalog-{}", self.region)
    }

    async fn wait_ready(&self) -> Result<meridian_api::CacheRegionStatus> {
        wait_region(
            &self.regions,
            &self.name(),
            "Ready",
            Duration::from_secs(300),
            |view| view.settled(2),
        )
        .await
    }

    /// This region's link Service by its DNS name, as another cluster would name a
    /// LoadBalancer: resolved by cluster DNS inside the pods, routed by kube-proxy to any
    /// node (which forwards the peer to its map).
    fn link_address(&self) -> String {
        format!(
            "{}-link.{}.svc.cluster.local:{}",
            self.name(),
            self.ns.name,
            meridian_api::ports::REGION_LINK
        )
    }

    async fn set_peer(&self, region: &str, address: &str) -> Result<()> {
        // A merge patch: an apply by the suite's field manager would have to repeat
        // every field it applied before.
        let patch = serde_json::json!({
            "spec": { "peers": [{ "region": region, "address": address }] }
        });
        self.regions
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn connection(&self, client: &Client) -> Result<ClusterConnection> {
        let status = self.wait_ready().await?;
        cluster_connection(&primary_endpoints(client, &self.ns.name, &status).await?).await
    }
}

/// 20 keys cached in `reader`'s region are written in `writer`'s: every stale copy goes.
async fn invalidates(
    writer: &mut ClusterConnection,
    reader: &mut ClusterConnection,
    from: &str,
    to: &str,
) -> Result<()> {
    let keys: Vec<String> = (0..20).map(|i| format!("item:{from}:{i}")).collect();
    for key in &keys {
        set(reader, key, "stale").await?;
    }
    // Let the reader's own events reach the writer first, so the writes are newer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for key in &keys {
        set(writer, key, "fresh").await?;
    }
    let lag = wait_gone(reader, &keys, EVENTUAL_BOUND).await?;
    println!("PEERS: 20 writes in {from} invalidated in {to} within {lag:?}");
    assert_eq!(get(writer, &keys[0]).await?.as_deref(), Some("fresh"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn regions_in_two_clusters_linked_by_peers_invalidate_each_other() -> Result<()> {
    let Some((client, ns_a)) = operator_scenario("peers_across_clusters", "e2e-peers-a").await?
    else {
        return Ok(());
    };
    let ns_b = TestNamespace::create(&client, "e2e-peers-b").await?;
    let a = Site::deploy(&client, ns_a, "region-a").await?;
    let b = Site::deploy(&client, ns_b, "region-b").await?;
    a.wait_ready().await?;
    b.wait_ready().await?;

    let (address_a, address_b) = (a.link_address(), b.link_address());
    a.set_peer("region-b", &address_b).await?;
    b.set_peer("region-a", &address_a).await?;
    for (site, peer) in [(&a, "region-b"), (&b, "region-a")] {
        let status = wait_region(
            &site.regions,
            &site.name(),
            &format!("its spec.peers link to {peer} connected"),
            Duration::from_secs(120),
            |view| view.ready() && view.linked_to(peer),
        )
        .await?;
        assert!(
            !condition_true(&status.conditions, "Degraded"),
            "{} is Degraded although its link is up: {:?}",
            site.name(),
            status.conditions
        );
    }

    let mut region_a = a.connection(&client).await?;
    let mut region_b = b.connection(&client).await?;
    // Both directions, keys spread over both shards of the receiving region.
    invalidates(&mut region_a, &mut region_b, "region-a", "region-b").await?;
    invalidates(&mut region_b, &mut region_a, "region-b", "region-a").await?;

    // A pattern invalidation crosses too, and only matches what it names.
    let sessions: Vec<String> = (0..20).map(|i| format!("session:{i}")).collect();
    for key in &sessions {
        set(&mut region_a, key, "cached").await?;
    }
    set(&mut region_a, "profile:1", "keep").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _: i64 = redis::cmd("INVALIDATE")
        .arg("session:*")
        .query_async(&mut region_b)
        .await?;
    wait_gone(&mut region_a, &sessions, EVENTUAL_BOUND).await?;
    assert_eq!(
        get(&mut region_a, "profile:1").await?.as_deref(),
        Some("keep")
    );
    Ok(())
}
