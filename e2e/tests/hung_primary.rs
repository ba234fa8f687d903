//! Issue 6 scenario: a primary that hangs without dying. Its process is frozen (SIGSTOP)
//! while a client writes to its shard: the pod object stays, and stays Ready until its
//! readiness probe has failed three times (10-15 s). The operator's own probe of the
//! primary must promote the replica well before that. When the frozen process wakes up
//! it still holds the old topology; it must be fenced (redirect writes to the new
//! primary) and rejoin as a replica, and no write acknowledged by `WAIT 1` may be lost.
//!
//! Freezing a container's process needs the node: the test process must run on the machine
//! whose nodes run the pods (the local cluster). Elsewhere (kind) the scenario skips with
//! the reason.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use meridian_e2e::*;

/// Loose bound for the e2e (the goal is 2 s; shared CI machines are slow).
const WRITE_RESUME_BOUND: Duration = Duration::from_secs(15);

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

async fn info_replication(endpoint: &str) -> String {
    let answer = async {
        let mut connection = quick_connection(endpoint).await?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await?;
        anyhow::Ok(info)
    };
    match answer.await {
        Ok(info) => info.replace("\r\n", " "),
        Err(error) => format!("(unreadable: {error:#})"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_primary_whose_pod_stays_ready_is_replaced_and_fenced_when_it_wakes() -> Result<()> {
    let Some((client, ns)) = operator_scenario("hung_primary", "e2e-hung").await? else {
        return Ok(());
    };
    let (regions, status) = orders_region_with_replicas(&client, &ns.name).await?;
    let scene = FirstShard::read(&client, &ns.name, &status).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let Some(pid) = container_pid(&pods.get(&scene.primary).await?, "node") else {
        eprintln!(
            "SKIP hung_primary: the process of {}'s container is not on this machine; \
             freezing it needs the node (the local cluster)",
            scene.primary
        );
        return Ok(());
    };
    scene.write_replicated(200).await?;
    let writer = scene.start_writer();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let frozen_at = Instant::now();
    let frozen = Frozen::freeze(pid)?;
    let resumed = writer
        .resumed_after(frozen_at, Duration::from_secs(60))
        .await?;
    let status = wait_shard0_primary(&regions, &scene.replica).await?;
    let promoted_after = frozen_at.elapsed();
    // Read right after the promotion showed: the pod was still Ready, so readiness did
    // not drive the decision.
    let still_ready = pod_ready(&pods.get(&scene.primary).await?);
    println!(
        "HUNG PRIMARY: writes resumed {resumed:?} after freezing {}; status showed the \
         promotion after {promoted_after:?}; frozen pod still Ready: {still_ready}",
        scene.primary
    );
    assert!(
        resumed < WRITE_RESUME_BOUND,
        "writes resumed after {resumed:?} (bound {WRITE_RESUME_BOUND:?})"
    );
    assert!(
        still_ready,
        "the frozen primary's pod had turned NotReady ({promoted_after:?} after the freeze) \
         before the operator promoted: the direct probe did not act first"
    );
    assert!(status.epoch > scene.epoch, "epoch bumped: {status:?}");

    // The frozen process wakes up believing it is primary at the old epoch.
    frozen.wake()?;
    let woke_at = Instant::now();
    wait_for(
        "the woken primary redirects writes to the new one",
        Duration::from_secs(60),
        || {
            let (old, new) = (
                scene.primary_endpoint.clone(),
                scene.replica_endpoint.clone(),
            );
            let key = format!("{{{}}}:after-wake", scene.tag);
            async move {
                let mut connection = quick_connection(&old).await.map_err(|e| e.to_string())?;
                let written: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg("zombie")
                    .query_async(&mut connection)
                    .await;
                match written {
                    Err(error) if error.redirect_node().is_some_and(|(to, _)| to == new) => {
                        Ok(Some(()))
                    }
                    other => Err(format!("SET on the woken primary: {other:?}")),
                }
            }
        },
    )
    .await?;
    println!(
        "HUNG PRIMARY: the woken primary was fenced {:?} after SIGCONT",
        woke_at.elapsed()
    );
    writer.stop().await?;

    // Nothing acknowledged was lost, and the woken node follows the new primary.
    scene
        .assert_replicated_on(&scene.replica_endpoint, 200)
        .await?;
    let rejoined = wait_region(
        &regions,
        "orders-a",
        "the woken node listed as an in-sync replica of the promoted one",
        Duration::from_secs(120),
        |view| {
            view.status.shards.first().is_some_and(|shard| {
                shard.primary.as_deref() == Some(scene.replica.as_str())
                    && shard.replicas == [scene.primary.clone()]
                    && shard.ready_replicas == 1
            })
        },
    )
    .await;
    if let Err(error) = rejoined {
        bail!(
            "{error:#}\nINFO replication of the woken node: {}\nof the promoted node: {}",
            info_replication(&scene.primary_endpoint).await,
            info_replication(&scene.replica_endpoint).await
        );
    }
    // Its data is the new primary's: the rejected write is not there.
    let mut woken = quick_connection(&scene.primary_endpoint).await?;
    let _: () = redis::cmd("READONLY").query_async(&mut woken).await?;
    let zombie: Option<String> = redis::cmd("GET")
        .arg(format!("{{{}}}:after-wake", scene.tag))
        .query_async(&mut woken)
        .await?;
    assert_eq!(zombie, None, "a write refused by the fenced node is on it");
    Ok(())
}
