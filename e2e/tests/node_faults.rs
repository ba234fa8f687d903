//! The faults the local cluster's real nodes make possible, checked on their own so the
//! data-safety scenarios can build on them: a node partitioned from the rest (its pods
//! unreachable until healed), a node whose kubelet and containerd are frozen (its Lease
//! stops being renewed while its containers keep serving, and it renews again when
//! thawed), and a container that outgrows its memory limit (OOM-killed by the kernel and
//! restarted in place). The first two need the test process on the nodes' machine and skip
//! elsewhere.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use meridian_e2e::*;

async fn answers(endpoint: &str) -> bool {
    match quick_connection(endpoint).await {
        Ok(mut connection) => redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// Seconds since `node`'s Lease was last renewed.
async fn lease_age(client: &kube::Client, node: &str) -> Result<Duration> {
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .get(node)
        .await?;
    let renewed = lease
        .spec
        .and_then(|spec| spec.renew_time)
        .context("node Lease without renewTime")?;
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed.0);
    Ok(Duration::try_from(age).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_node_is_cut_off_and_a_frozen_node_stops_renewing_its_lease() -> Result<()> {
    let Some((client, ns)) = operator_scenario("node_faults", "e2e-faults").await? else {
        return Ok(());
    };
    let Deployed { regions, .. } = ClusterFixture::in_region_a("faults", "faults-a", 1, 0)
        .apply(&client, &ns.name)
        .await?;
    let status = wait_region_ready(&regions, "faults-a", Duration::from_secs(300)).await?;
    let pod_name = status
        .shards
        .first()
        .and_then(|shard| shard.primary.clone())
        .context("shard without primary")?;
    let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .get(&pod_name)
        .await?;
    let pod_status = pod.status.clone().unwrap_or_default();
    let (Some(pod_ip), Some(node_ip)) = (pod_status.pod_ip, pod_status.host_ip) else {
        bail!("{pod_name} has no pod or host IP");
    };
    let node = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .context("pod not scheduled")?;
    let Some(netns) = node_netns(&node_ip) else {
        eprintln!("SKIP node_faults: node {node} ({node_ip}) is not a network namespace here");
        return Ok(());
    };
    let endpoint = format!("{pod_ip}:6379");
    assert!(
        answers(&endpoint).await,
        "{endpoint} does not answer before the fault"
    );

    let partition = Partition::isolate(&netns)?;
    assert!(
        !answers(&endpoint).await,
        "{endpoint} still answers with {node} partitioned"
    );
    partition.heal()?;
    assert!(
        answers(&endpoint).await,
        "{endpoint} unreachable after healing"
    );

    let frozen = FrozenNode::freeze(&node)?.context("the node's processes are not here")?;
    let frozen_at = Instant::now();
    let stale = wait_for(
        &format!("{node}'s Lease to go unrenewed for 15 s"),
        Duration::from_secs(60),
        || async {
            let age = lease_age(&client, &node).await.map_err(|e| e.to_string())?;
            Ok((age > Duration::from_secs(15)).then_some(age))
        },
    )
    .await?;
    assert!(
        answers(&endpoint).await,
        "containers must keep serving while their kubelet is frozen"
    );
    frozen.thaw()?;
    println!(
        "NODE FAULTS: {node} Lease unrenewed for {stale:?} ({:?} after freezing)",
        frozen_at.elapsed()
    );
    wait_for(
        &format!("{node}'s Lease renewed after the thaw"),
        Duration::from_secs(60),
        || async {
            let age = lease_age(&client, &node).await.map_err(|e| e.to_string())?;
            Ok((age < Duration::from_secs(11)).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_outgrowing_its_memory_limit_is_oom_killed_and_restarted() -> Result<()> {
    let Some((client, ns)) = operator_scenario("oom_kill", "e2e-oom").await? else {
        return Ok(());
    };
    // No maxmemory (the node never evicts) and a 64 MiB container limit: writing 96 MiB
    // of values must end with the kernel's OOM killer, not with an eviction.
    let Deployed { clusters, regions } = ClusterFixture {
        maxmemory: "0".into(),
        ..ClusterFixture::in_region_a("oom", "oom-a", 1, 0)
    }
    .apply(&client, &ns.name)
    .await?;
    clusters
        .patch(
            "oom",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"resources": {"limits": {"memory": "64Mi"}}}
            })),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod_name = wait_for(
        "the region Ready with a pod limited to 64Mi",
        Duration::from_secs(300),
        || async {
            let status = regions
                .get("oom-a")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let Some(primary) = status.shards.first().and_then(|s| s.primary.clone()) else {
                return Err("no primary yet".into());
            };
            let pod = pods.get(&primary).await.map_err(|e| e.to_string())?;
            let limited = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.containers.first())
                .and_then(|c| c.resources.as_ref())
                .and_then(|r| r.limits.as_ref())
                .and_then(|limits| limits.get("memory"))
                .is_some_and(|memory| memory.0 == "64Mi");
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok((limited && ready).then_some(primary))
        },
    )
    .await?;
    let pod = pods.get(&pod_name).await?;
    let endpoint = format!(
        "{}:6379",
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("no pod IP")?
    );
    let before = restart_count(&pod, "node");
    let value = "x".repeat(64 * 1024);
    let mut connection = redis_connection(&endpoint).await?;
    let mut written = 0usize;
    for index in 0..1536 {
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{{oom}}:{index}"))
            .arg(&value)
            .query_async(&mut connection)
            .await;
        if set.is_err() {
            break;
        }
        written += 1;
    }
    wait_for(
        &format!("{pod_name} OOM-killed and restarted"),
        Duration::from_secs(120),
        || async {
            let pod = pods.get(&pod_name).await.map_err(|e| e.to_string())?;
            let restarts = restart_count(&pod, "node");
            if restarts > before && oom_killed(&pod, "node") {
                Ok(Some(()))
            } else {
                Err(format!(
                    "restarts {restarts}, last state {:?}",
                    pod.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|s| s.first())
                        .and_then(|s| s.last_state.clone())
                ))
            }
        },
    )
    .await?;
    println!("NODE FAULTS: {pod_name} OOM-killed after {written} writes of 64 KiB");
    Ok(())
}
