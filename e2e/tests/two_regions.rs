//! Issue 3/4 scenario: a CacheCluster with two CacheRegions becomes Ready, and every
//! shard primary in both regions serves SET/GET. Fails when the operator is not running.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DeleteParams, ListParams};
use meridian_api::{CacheCluster, CacheRegion};
use meridian_e2e::*;
use std::time::Duration;

const CLUSTER: &str = r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheCluster
metadata:
  name: orders
spec:
  shards: 2
  replicasPerShard: 1
  memory:
    maxmemory: 64Mi
"#;

fn region_yaml(name: &str, region: &str) -> String {
    format!(
        r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheRegion
metadata:
  name: {name}
spec:
  clusterRef:
    name: orders
  region: {region}
  placement:
    nodeSelector:
      topology.kubernetes.io/region: {region}
"#
    )
}

fn is_ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_regions_become_ready_and_serve() -> Result<()> {
    let Some(client) = client_or_skip("two_regions_become_ready_and_serve").await else {
        return Ok(());
    };
    ensure_operator_installed()?;
    let ns = TestNamespace::create(&client, "e2e-regions").await?;
    let clusters: Api<CacheCluster> = Api::namespaced(client.clone(), &ns.name);
    let regions: Api<CacheRegion> = Api::namespaced(client.clone(), &ns.name);

    apply_yaml(&clusters, CLUSTER).await?;
    for (name, region) in [("orders-a", "region-a"), ("orders-b", "region-b")] {
        apply_yaml(&regions, &region_yaml(name, region)).await?;
    }

    for (name, region_name) in [("orders-a", "region-a"), ("orders-b", "region-b")] {
        let regions = regions.clone();
        let client = client.clone();
        let ns_name = ns.name.clone();
        let region = wait_for(
            &format!("CacheRegion {name} Ready"),
            Duration::from_secs(300),
            || {
                let regions = regions.clone();
                let client = client.clone();
                let ns_name = ns_name.clone();
                async move {
                    let r = regions.get(name).await.map_err(|e| e.to_string())?;
                    let status = r.status.clone().unwrap_or_default();
                    if is_ready(&status.conditions) {
                        return Ok(Some(r));
                    }
                    let pods = region_pods(&client, &ns_name, "orders", region_name)
                        .await
                        .map_err(|e| e.to_string())?;
                    Err(format!(
                        "conditions={:?}; pods: {}",
                        status.conditions,
                        describe_pods(&pods)
                    ))
                }
            },
        )
        .await?;

        let status = region.status.context("Ready region without status")?;
        assert_eq!(status.shards.len(), 2, "two shards expected: {status:?}");
        assert!(status.epoch >= 1, "topology epoch must be set: {status:?}");
        let mut covered = 0u32;
        let mut primaries = Vec::new();
        for shard in &status.shards {
            let mut ranges = Vec::new();
            for range in &shard.slots {
                let r: meridian_topology::SlotRange = range.parse().map_err(|e| {
                    anyhow::anyhow!("status slot range {range:?} does not parse: {e:?}")
                })?;
                covered += u32::from(r.end - r.start) + 1;
                ranges.push(r);
            }
            let primary = shard.primary.clone().context("shard without primary")?;
            assert_eq!(shard.replicas.len(), 1, "one replica per shard: {shard:?}");
            let ip = pod_ip(&client, &ns.name, &primary).await?;
            primaries.push(format!("{ip}:6379"));
            // A key this shard owns, written straight to its primary (no redirect needed).
            let key = (0..)
                .map(|i| format!("e2e:{name}:{}:{i}", shard.index))
                .find(|k| {
                    let slot = meridian_topology::key_slot(k.as_bytes());
                    ranges.iter().any(|r| r.start <= slot && slot <= r.end)
                })
                .context("no key found for the shard's slots")?;
            let mut conn = redis_connection(&format!("{ip}:6379")).await?;
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg("value")
                .query_async(&mut conn)
                .await?;
            let got: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            assert_eq!(
                got.as_deref(),
                Some("value"),
                "GET through {primary} ({ip})"
            );

            // The replica the operator attached acknowledges the write and serves it.
            let acked = wait_for(
                &format!("replica of {primary} to acknowledge"),
                Duration::from_secs(60),
                || {
                    let mut conn = conn.clone();
                    async move {
                        let n: i64 = redis::cmd("WAIT")
                            .arg(1)
                            .arg(1000)
                            .query_async(&mut conn)
                            .await
                            .map_err(|e| e.to_string())?;
                        if n >= 1 {
                            Ok(Some(n))
                        } else {
                            Err(format!("WAIT 1 returned {n}"))
                        }
                    }
                },
            )
            .await?;
            assert!(acked >= 1);
            let replica_ip = pod_ip(&client, &ns.name, &shard.replicas[0]).await?;
            let mut rconn = redis_connection(&format!("{replica_ip}:6379")).await?;
            let _: () = redis::cmd("READONLY").query_async(&mut rconn).await?;
            let got: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut rconn).await?;
            assert_eq!(
                got.as_deref(),
                Some("value"),
                "replica {} serves the write",
                shard.replicas[0]
            );
        }
        // A cluster-aware client sees the whole region: every key lands on its owner.
        let mut cluster_conn = cluster_connection(&primaries).await?;
        for i in 0..200 {
            let _: () = redis::cmd("SET")
                .arg(format!("{name}:k{i}"))
                .arg(i)
                .query_async(&mut cluster_conn)
                .await?;
        }
        for i in 0..200 {
            let got: i64 = redis::cmd("GET")
                .arg(format!("{name}:k{i}"))
                .query_async(&mut cluster_conn)
                .await?;
            assert_eq!(got, i, "cluster client read of {name}:k{i}");
        }
        // redis-cli's own cluster checker agrees that every slot is served.
        let check = std::process::Command::new("redis-cli")
            .args(["--cluster", "check", &primaries[0]])
            .output()
            .context("redis-cli (Debian redis-tools) is required")?;
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success() && said.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster check {} failed: {said}{}",
            primaries[0],
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(covered, 16384, "every slot assigned in {name}");
    }

    // The cluster aggregates both regions.
    let cluster = wait_for(
        "CacheCluster orders reports 2 ready regions",
        Duration::from_secs(120),
        || {
            let clusters = clusters.clone();
            async move {
                let c = clusters.get("orders").await.map_err(|e| e.to_string())?;
                let st = c.status.clone().unwrap_or_default();
                if st.ready_regions == 2 {
                    Ok(Some(c))
                } else {
                    Err(format!("{st:?}"))
                }
            }
        },
    )
    .await?;
    assert!(is_ready(&cluster.status.unwrap_or_default().conditions));

    // Deleting the CacheCluster removes every object through owner references.
    clusters
        .delete("orders", &DeleteParams::foreground())
        .await?;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        "StatefulSets garbage-collected",
        Duration::from_secs(180),
        || {
            let sts = sts.clone();
            async move {
                let left = sts
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                if left.items.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("{} StatefulSets left", left.items.len()))
                }
            }
        },
    )
    .await?;
    Ok(())
}
