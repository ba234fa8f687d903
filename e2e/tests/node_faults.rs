//! The faults the local cluster's real nodes make possible, checked on their own so the
//! data-safety scenarios can build on them: a node partitioned from the rest (its pods
//! unreachable until healed), and a node whose kubelet and containerd are frozen (its
//! Lease stops being renewed while its containers keep serving, and it renews again when
//! thawed). Needs the test process on the nodes' machine; skips elsewhere.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
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
