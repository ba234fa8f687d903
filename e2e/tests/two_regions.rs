//! Issue 3/4 scenario: a CacheCluster with two CacheRegions becomes Ready, and every
//! shard primary in both regions serves SET/GET. Fails when the operator is not running.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DeleteParams, ListParams};
use meridian_e2e::*;
use std::time::Duration;

const REGIONS: [(&str, &str); 2] = [("orders-a", "region-a"), ("orders-b", "region-b")];

#[tokio::test(flavor = "multi_thread")]
async fn two_regions_become_ready_and_serve() -> Result<()> {
    let Some((client, ns)) =
        operator_scenario("two_regions_become_ready_and_serve", "e2e-regions").await?
    else {
        return Ok(());
    };
    let Deployed { clusters, regions } = ClusterFixture {
        name: "orders".into(),
        shards: 2,
        replicas_per_shard: 1,
        ..ClusterFixture::default()
    }
    .with_regions(&REGIONS)
    .apply(&client, &ns.name)
    .await?;

    for (name, _) in REGIONS {
        let status = wait_region_ready(&regions, name, Duration::from_secs(300)).await?;
        assert_eq!(status.shards.len(), 2, "two shards expected: {status:?}");
        assert!(status.epoch >= 1, "topology epoch must be set: {status:?}");
        let mut covered = 0u32;
        let mut primaries = Vec::new();
        for shard in &status.shards {
            covered += u32::try_from(shard_slot_count(shard)?)?;
            let primary = shard.primary.clone().context("shard without primary")?;
            assert_eq!(shard.replicas.len(), 1, "one replica per shard: {shard:?}");
            let ip = pod_ip(&client, &ns.name, &primary).await?;
            primaries.push(format!("{ip}:6379"));
            // A key this shard owns, written straight to its primary (no redirect needed).
            let key = key_for_shard(shard, &format!("e2e:{name}:{}:", shard.index))?;
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
        redis_cluster_check(&primaries[0])?;
        assert_eq!(covered, 16384, "every slot assigned in {name}");
    }

    // The cluster aggregates both regions.
    wait_cluster_ready(&clusters, "orders", 2, Duration::from_secs(120)).await?;

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
