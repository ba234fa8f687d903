//! The fault matrix (issue 14): each fault done for real to a Ready region on the local
//! cluster's nodes, under an audited load on shard 0 (a writer whose writes count once
//! `WAIT 1` says the replica has them, and a reader that checks every value against what
//! was acknowledged before it read). After recovery: no acknowledged write lost, no stale
//! read, every slot served, `redis-cli --cluster check` clean, and the region Ready with
//! the shard's replica back. Each scenario prints a `CHAOS` line (`cargo xtask chaos`
//! collects them) with the time until writes were acknowledged again.
//!
//! Faults that reach past their own pods (a node lost or partitioned, the API server or
//! the operator stopped) take the suite's lock exclusively; the others share it.
//!
//! The faults need the test process on the machine whose nodes run the pods (the local
//! cluster); elsewhere the scenarios skip.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use meridian_e2e::*;
use tokio::sync::RwLock;

/// Shared by faults confined to their own pods, taken alone by faults that are not.
static FAULTS: RwLock<()> = RwLock::const_new(());

/// Acknowledged writes the load makes before each fault.
const WARM_UP: usize = 100;

/// A Ready region (2 shards, 1 replica each) under audited load on shard 0.
struct Stage {
    client: kube::Client,
    ns: TestNamespace,
    regions: Api<meridian_api::CacheRegion>,
    pods: Api<Pod>,
    shard: FirstShard,
    load: AuditedLoad,
    /// Shard 0's nodes.
    endpoints: Vec<String>,
    replicas: usize,
}

async fn stage(test: &str, prefix: &str) -> Result<Option<Stage>> {
    stage_with_replicas(test, prefix, 1).await
}

/// Like [`stage`] with `replicas` replicas per shard, so that losing a whole node (the
/// primary's pod and all) still leaves shard 0 a replica to acknowledge writes.
async fn stage_with_replicas(test: &str, prefix: &str, replicas: u32) -> Result<Option<Stage>> {
    stage_with(
        test,
        prefix,
        ClusterFixture::in_region_a("orders", "orders-a", 2, replicas),
    )
    .await
}

/// Like [`stage`] with the cluster `fixture` (2 shards, `orders` / `orders-a`).
async fn stage_with(test: &str, prefix: &str, fixture: ClusterFixture) -> Result<Option<Stage>> {
    let Some((client, ns)) = operator_scenario(test, prefix).await? else {
        return Ok(None);
    };
    let replicas = fixture.replicas_per_shard;
    let Deployed { regions, .. } = fixture.apply(&client, &ns.name).await?;
    let status = wait_region(
        &regions,
        "orders-a",
        &format!("Ready with {replicas} replica(s) per shard"),
        Duration::from_secs(300),
        |view| {
            view.ready()
                && view
                    .status
                    .shards
                    .iter()
                    .all(|s| s.replicas.len() == replicas as usize)
        },
    )
    .await?;
    let shard = FirstShard::read(&client, &ns.name, &status).await?;
    let mut endpoints = shard_endpoints(&shard);
    for replica in status.shards[0].replicas.iter().skip(1) {
        endpoints.push(format!(
            "{}:6379",
            pod_ip(&client, &ns.name, replica).await?
        ));
    }
    let load = AuditedLoad::start(endpoints.clone(), &shard.tag, true);
    load.wait_acked(WARM_UP, Duration::from_secs(60))
        .await
        .context("the load before the fault")?;
    let pods = Api::namespaced(client.clone(), &ns.name);
    Ok(Some(Stage {
        client,
        ns,
        regions,
        pods,
        shard,
        load,
        endpoints,
        replicas: replicas as usize,
    }))
}

fn shard_endpoints(shard: &FirstShard) -> Vec<String> {
    vec![
        shard.primary_endpoint.clone(),
        shard.replica_endpoint.clone(),
    ]
}

impl Stage {
    /// After the fault: waits until the region is Ready with shard 0 served by a primary
    /// and one replica, keeps the load on for `WARM_UP` more acknowledged writes, then
    /// checks everything the load saw and the cluster's view, and records the outcome.
    async fn settle_and_audit(self, fault: &str, recovery: Duration) -> Result<()> {
        let Stage {
            client,
            ns,
            regions,
            shard,
            load,
            endpoints,
            replicas,
            ..
        } = self;
        let status = wait_region(
            &regions,
            "orders-a",
            "Ready with shard 0 served by a primary and its replicas",
            Duration::from_secs(240),
            |view| {
                view.ready()
                    && view
                        .status
                        .shards
                        .first()
                        .is_some_and(|s| s.primary.is_some() && s.replicas.len() == replicas)
            },
        )
        .await?;
        load.wait_acked(WARM_UP, Duration::from_secs(60))
            .await
            .context("the load after recovery")?;
        let audit = load.stop().await?;
        let lost = audit.lost_writes(endpoints, &shard.tag).await?;
        every_slot_owned(&status)?;
        let primaries = primary_endpoints(&client, &ns.name, &status).await?;
        let check = redis_cluster_check(&primaries[0])?;
        FaultOutcome {
            fault: fault.to_string(),
            recovery_ms: recovery.as_millis(),
            acked_writes: audit.acked_writes,
            lost_writes: lost.len(),
            stale_reads: audit.violations.len(),
        }
        .record()?;
        if !lost.is_empty() || !audit.violations.is_empty() {
            bail!(
                "{fault}: {} acknowledged write(s) lost, {} bad read(s) of {} \
                 (lost: {lost:?}; reads: {:?})",
                lost.len(),
                audit.violations.len(),
                audit.reads,
                audit.violations
            );
        }
        assert!(
            !check.contains("[ERR]") && !check.contains("[WARNING]"),
            "redis-cli --cluster check: {check}"
        );
        Ok(())
    }

    /// Waits (at most `within`) until writes are acknowledged steadily again after
    /// `since`, then [`Stage::settle_and_audit`] with that recovery time.
    async fn audit_recovery(self, fault: &str, since: Instant, within: Duration) -> Result<()> {
        let recovery = self.load.recovered_after(since, within).await?;
        self.settle_and_audit(fault, recovery).await
    }

    /// Waits until the status names another primary for shard 0.
    async fn wait_failed_over(&self) -> Result<()> {
        wait_region(
            &self.regions,
            "orders-a",
            "shard 0 failed over",
            Duration::from_secs(60),
            |view| {
                view.status
                    .shards
                    .first()
                    .and_then(|s| s.primary.as_deref())
                    != Some(self.shard.primary.as_str())
            },
        )
        .await
        .map(drop)
    }

    /// The region's status as it is now.
    async fn status(&self) -> Result<meridian_api::CacheRegionStatus> {
        Ok(self
            .regions
            .get("orders-a")
            .await?
            .status
            .unwrap_or_default())
    }

    async fn pod(&self, name: &str) -> Result<Pod> {
        Ok(self.pods.get(name).await?)
    }

    /// The node running `pod` and its network namespace, when it is one here.
    async fn node_of(&self, pod: &str) -> Result<Option<(String, String)>> {
        let pod = self.pod(pod).await?;
        let node = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .context("pod not scheduled")?;
        let host_ip = pod
            .status
            .as_ref()
            .and_then(|status| status.host_ip.clone())
            .context("pod without host IP")?;
        Ok(node_netns(&host_ip).map(|netns| (node, netns)))
    }

    /// Waits until the kubelet restarted `pod`'s node container at least `restarts` times
    /// and the node answers again.
    async fn wait_restarted(&self, pod: &str, restarts: i32, endpoint: &str) -> Result<()> {
        wait_restarted(&self.pods, pod, restarts, endpoint).await
    }
}

fn skip(test: &str, why: &str) -> Result<()> {
    eprintln!("SKIP {test}: {why}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_in_a_crash_loop_loses_no_acknowledged_write() -> Result<()> {
    let _shared = FAULTS.read().await;
    let Some(stage) = stage("crash_loop", "e2e-fm-crashloop").await? else {
        return Ok(());
    };
    let primary = stage.shard.primary.clone();
    let endpoint = stage.shard.primary_endpoint.clone();
    let fault_at = Instant::now();
    for round in 1..=3 {
        let pod = stage.pod(&primary).await?;
        if kill_container(&pod, "node")?.is_none() {
            return skip("crash_loop", "the primary's process is not on this machine");
        }
        // Killed again as soon as it is back: the restarted, empty process must never
        // become what its shard syncs from.
        stage.wait_restarted(&primary, round, &endpoint).await?;
    }
    stage
        .audit_recovery(
            "primary crash loop (3 kills)",
            fault_at,
            Duration::from_secs(180),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_in_place_loses_no_acknowledged_write() -> Result<()> {
    let _shared = FAULTS.read().await;
    let Some(stage) = stage("replica_killed", "e2e-fm-replica").await? else {
        return Ok(());
    };
    let replica = stage.pod(&stage.shard.replica).await?;
    let fault_at = Instant::now();
    if kill_container(&replica, "node")?.is_none() {
        return skip(
            "replica_killed",
            "the replica's process is not on this machine",
        );
    }
    let recovery = stage
        .load
        .recovered_after(fault_at, Duration::from_secs(180))
        .await?;
    stage
        .wait_restarted(&stage.shard.replica, 1, &stage.shard.replica_endpoint)
        .await?;
    stage
        .settle_and_audit("replica killed in place", recovery)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_oom_killed_loses_no_acknowledged_write() -> Result<()> {
    let _shared = FAULTS.read().await;
    let Some(stage) = stage("primary_oom_killed", "e2e-fm-oom").await? else {
        return Ok(());
    };
    let primary = stage.pod(&stage.shard.primary).await?;
    let before = restart_count(&primary, "node");
    // 24 MiB above what it uses now: the next 32 MiB of values are too much for it, not
    // for its replica (which keeps the spec's limit).
    let Some(limit) = lower_memory_limit(&primary, "node", 24 << 20)? else {
        return skip(
            "primary_oom_killed",
            "the primary's cgroup is not on this machine",
        );
    };
    println!("OOM: {} limited to {limit} bytes", stage.shard.primary);
    let mut connection = quick_connection(&stage.shard.primary_endpoint).await?;
    let value = "m".repeat(64 * 1024);
    let fault_at = Instant::now();
    for index in 0..1024 {
        let written: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{{{}}}:ballast:{index}", stage.shard.tag))
            .arg(&value)
            .query_async(&mut connection)
            .await;
        if written.is_err() {
            break;
        }
    }
    wait_for(
        "the primary OOM-killed and restarted",
        Duration::from_secs(120),
        || async {
            let pod = stage
                .pod(&stage.shard.primary)
                .await
                .map_err(|e| e.to_string())?;
            Ok((restart_count(&pod, "node") > before && oom_killed(&pod, "node")).then_some(()))
        },
    )
    .await?;
    stage
        .audit_recovery("primary OOM-killed", fault_at, Duration::from_secs(180))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_node_fails_over_without_waiting_for_eviction() -> Result<()> {
    let _alone = FAULTS.write().await;
    let Some(stage) = stage_with_replicas("node_lost", "e2e-fm-nodelost", 2).await? else {
        return Ok(());
    };
    let Some((node, netns)) = stage.node_of(&stage.shard.primary).await? else {
        return skip("node_lost", "the primary's node is not a namespace here");
    };
    let fault_at = Instant::now();
    let Some(lost) = LostNode::lose(&node, &netns)? else {
        return skip("node_lost", "the node's processes are not on this machine");
    };
    println!("NODE LOST: {node} (primary {})", stage.shard.primary);
    let recovery = stage
        .load
        .recovered_after(fault_at, Duration::from_secs(60))
        .await
        .context("writes must resume long before the 300 s eviction")?;
    stage.wait_failed_over().await?;
    // Long enough for the node to be NotReady (40 s grace): the region must not say it
    // is whole while the shard has no replica.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let status = stage.status().await?;
    assert!(
        !condition_true(&status.conditions, "Ready")
            || condition_true(&status.conditions, "Degraded"),
        "the region claims to be whole with a node lost: {:?}",
        status.conditions
    );
    // The old primary's pod deleted, as the eviction after 300 s or a drain would: with its
    // kubelet gone it stays Terminating, and the shard must go on without it.
    let stuck_since = Instant::now();
    stage
        .pods
        .delete(&stage.shard.primary, &Default::default())
        .await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let stuck = stage.pod(&stage.shard.primary).await?;
    assert!(
        stuck.metadata.deletion_timestamp.is_some(),
        "the lost node's pod should be stuck Terminating"
    );
    let status = stage.status().await?;
    assert_ne!(
        status.shards[0].primary.as_deref(),
        Some(stage.shard.primary.as_str()),
        "a Terminating pod on a lost node is named primary"
    );
    assert!(
        !condition_true(&status.conditions, "Ready")
            || condition_true(&status.conditions, "Degraded"),
        "the region claims to be whole with a pod stuck Terminating: {:?}",
        status.conditions
    );
    let paused = stage.load.longest_gap(stuck_since);
    assert!(
        paused < Duration::from_secs(2),
        "writes paused {paused:?} while the lost node's pod was stuck Terminating"
    );
    lost.restore()?;
    stage
        .settle_and_audit(
            "node lost (kubelet, containerd, pods frozen; partitioned; its pod stuck Terminating)",
            recovery,
        )
        .await
}

/// The partition scenario's `spec.fencing.maxLagSeconds`.
const FENCING_LAG_SECONDS: u32 = 2;

/// Sends `SET k v` + `WAIT 1 300` pairs to `endpoint` from inside `netns` on one
/// connection (redis-cli reading its commands from stdin) and returns every reply line.
fn writes_from_inside(netns: &str, endpoint: &str, tag: &str, count: usize) -> Result<Vec<String>> {
    use std::io::Write;
    let (host, port) = endpoint.rsplit_once(':').context("endpoint without port")?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "redis-cli", "-h", host, "-p", port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("redis-cli in the node's namespace")?;
    {
        let mut stdin = child.stdin.take().context("no stdin")?;
        for index in 0..count {
            writeln!(stdin, "SET {{{tag}}}:inside:{index} {index}")?;
            writeln!(stdin, "WAIT 1 300")?;
        }
    }
    let output = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&output.stdout);
    Ok(said
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_primary_acknowledges_nothing_and_rejoins_as_a_replica() -> Result<()> {
    let _alone = FAULTS.write().await;
    // Fenced: a primary whose replicas have not acknowledged for 2 s refuses writes.
    let fenced = ClusterFixture {
        fencing: Some((1, FENCING_LAG_SECONDS)),
        ..ClusterFixture::in_region_a("orders", "orders-a", 2, 2)
    };
    let Some(stage) = stage_with("zone_partition", "e2e-fm-partition", fenced).await? else {
        return Ok(());
    };
    let Some((node, netns)) = stage.node_of(&stage.shard.primary).await? else {
        return skip(
            "zone_partition",
            "the primary's node is not a namespace here",
        );
    };
    let fault_at = Instant::now();
    let partition = Partition::isolate(&netns)?;
    println!("PARTITION: {node} (primary {})", stage.shard.primary);
    let recovery = stage
        .load
        .recovered_after(fault_at, Duration::from_secs(60))
        .await?;
    stage.wait_failed_over().await?;
    // The old primary, cut off but running, is still written to from its side: once
    // its replicas' acknowledgements are older than the fencing lag it refuses plain
    // writes, and it never acknowledges one to `WAIT`.
    tokio::time::sleep(
        (Duration::from_secs(FENCING_LAG_SECONDS.into()) + Duration::from_secs(2))
            .saturating_sub(fault_at.elapsed()),
    )
    .await;
    let replies = writes_from_inside(&netns, &stage.shard.primary_endpoint, &stage.shard.tag, 20)?;
    let accepted = replies.iter().filter(|reply| *reply == "OK").count();
    let fenced = replies
        .iter()
        .filter(|reply| reply.contains("NOREPLICAS"))
        .count();
    // A write is acknowledged when its SET said OK and the WAIT after it counted a
    // replica (a WAIT after a refused SET has no write to wait for and counts them all).
    let acknowledged = replies
        .chunks(2)
        .filter(|pair| {
            pair[0] == "OK"
                && pair
                    .get(1)
                    .is_some_and(|n| n.parse::<i64>().is_ok_and(|n| n >= 1))
        })
        .count();
    assert!(
        accepted == 0 && fenced == 20 && acknowledged == 0,
        "the partitioned primary took writes it could not replicate: {replies:?}"
    );
    partition.heal()?;
    // After the heal the old primary follows the new one: what it took alone is gone.
    let primary_after = wait_for(
        "the old primary rejoins as a replica",
        Duration::from_secs(120),
        || async {
            let mut connection = quick_connection(&stage.shard.primary_endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            match role.first() {
                Some(redis::Value::BulkString(role)) if role == b"slave" => Ok(Some(())),
                other => Err(format!("ROLE says {other:?}")),
            }
        },
    )
    .await;
    primary_after?;
    stage
        .settle_and_audit("primary's node partitioned", recovery)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_keep_serving_while_the_api_server_is_down_and_the_operator_converges_after()
-> Result<()> {
    let _alone = FAULTS.write().await;
    let Some(stage) = stage("api_server_down", "e2e-fm-apiserver").await? else {
        return Ok(());
    };
    let fault_at = Instant::now();
    let Some(outage) = ApiServerOutage::begin()? else {
        return skip(
            "api_server_down",
            "the API server does not run on this machine",
        );
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    let acked_during = stage.load.acked_writes();
    let longest_pause = stage.load.longest_gap(fault_at);
    outage.end()?;
    println!(
        "API SERVER DOWN 60 s: {acked_during} writes acknowledged by then, longest pause {longest_pause:?}"
    );
    assert!(
        longest_pause < Duration::from_secs(1),
        "writes paused {longest_pause:?} while only the API server was down"
    );
    wait_for("the API server back", Duration::from_secs(120), || async {
        Ok(stage.regions.get("orders-a").await.is_ok().then_some(()))
    })
    .await?;
    // The operator must act again: a primary killed now is failed over.
    let primary = stage.pod(&stage.shard.primary).await?;
    let killed_at = Instant::now();
    if kill_container(&primary, "node")?.is_none() {
        return skip(
            "api_server_down",
            "the primary's process is not on this machine",
        );
    }
    let recovery = stage
        .load
        .recovered_after(killed_at, Duration::from_secs(180))
        .await?;
    wait_shard0_primary(&stage.regions, &stage.shard.replica).await?;
    stage
        .settle_and_audit("API server down 60 s, then a primary killed", recovery)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_during_a_failover_converges_when_it_returns() -> Result<()> {
    let _alone = FAULTS.write().await;
    let Some(stage) = stage("operator_killed_in_failover", "e2e-fm-operator").await? else {
        return Ok(());
    };
    let primary = stage.pod(&stage.shard.primary).await?;
    if container_pid(&primary, "node").is_none() {
        return skip(
            "operator_killed_in_failover",
            "the primary's process is not on this machine",
        );
    }
    // The operator is held while the primary crashes, then let go and killed as soon as
    // the replica reports it was promoted: mid-failover, before the rest is rewired.
    let frozen = freeze_operator(&stage.client).await?;
    let fault_at = Instant::now();
    kill_container(&primary, "node")?;
    stage
        .wait_restarted(&stage.shard.primary, 1, &stage.shard.primary_endpoint)
        .await?;
    let operator_pids: Vec<i32> = operator_pods(&stage.client)
        .await?
        .iter()
        .filter_map(|pod| container_pid(pod, "operator"))
        .collect();
    for guard in frozen {
        guard.wake()?;
    }
    let mut replica = quick_connection(&stage.shard.replica_endpoint).await?;
    let promoted = Instant::now();
    loop {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut replica).await?;
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            break;
        }
        if promoted.elapsed() > Duration::from_secs(60) {
            bail!("the operator never promoted the replica after waking");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for pid in operator_pids {
        signal("-KILL", pid)?;
    }
    println!(
        "OPERATOR KILLED mid-failover, {:?} after waking",
        promoted.elapsed()
    );
    let recovery = stage
        .load
        .recovered_after(fault_at, Duration::from_secs(180))
        .await?;
    wait_shard0_primary(&stage.regions, &stage.shard.replica).await?;
    stage
        .settle_and_audit("operator killed during a failover", recovery)
        .await
}

/// Values the flood of the slow-replica scenario overwrites: 4096 keys of 1 KiB (4 MiB).
/// Many small writes, not a few large ones: applying a write costs a replica per
/// command more than per byte, and 16 KiB values let a starved replica keep up.
const FLOOD_KEYS: usize = 4096;
const FLOOD_VALUE: usize = 1024;
/// Writes per pipeline.
const FLOOD_PIPELINE: usize = 64;
/// The flood's pace: several times what a replica held to 2% of a core applies, slow
/// enough to leave the machine to the scenarios running beside it.
const FLOOD_BYTES_PER_SECOND: f64 = 24.0 * 1024.0 * 1024.0;
/// What the flood streams at least before the primary's memory is judged: far more than
/// the bound, so a primary that buffered the stream for its replica would exceed it.
const FLOOD_AT_LEAST: u64 = 512 << 20;
/// Growth of the primary's resident memory the slow replica may cause: the 4 MiB the
/// flood holds, a snapshot of it for a full resync, allocator slack; not the stream.
const PRIMARY_GROWTH_BOUND: u64 = 64 << 20;
/// Lag that counts as the replica falling behind (the flood makes far more).
const LAGGING: f64 = 1024.0 * 1024.0;

/// Waits up to two minutes until the largest `meridian_replica_lag_bytes` a primary's
/// metrics (at `addr`) report is `wanted`; returns it.
async fn wait_metric_lag(addr: &str, what: &str, wanted: impl Fn(f64) -> bool) -> Result<f64> {
    wait_for(
        &format!("the primary's meridian_replica_lag_bytes {what}"),
        Duration::from_secs(120),
        || async {
            let metrics = http_get(addr, "/metrics")
                .await
                .map_err(|e| e.to_string())?;
            match largest_metric(&metrics, "meridian_replica_lag_bytes") {
                Some(lag) if wanted(lag) => Ok(Some(lag)),
                other => Err(format!("lag {other:?}")),
            }
        },
    )
    .await
}

/// Overwrites the flood's keys on `endpoint` in pipelines at [`FLOOD_BYTES_PER_SECOND`]
/// until `stop`; returns the bytes of values the primary accepted.
async fn flood(
    endpoint: String,
    tag: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    use std::sync::atomic::Ordering;
    let mut connection = redis_connection(&endpoint).await?;
    let value = vec![b'f'; FLOOD_VALUE];
    let started = Instant::now();
    let (mut written, mut failures) = (0u64, 0u32);
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let mut pipeline = redis::pipe();
        for _ in 0..FLOOD_PIPELINE {
            pipeline
                .cmd("SET")
                .arg(format!("{{{tag}}}:flood:{}", next % FLOOD_KEYS))
                .arg(&value)
                .ignore();
            next += 1;
        }
        match pipeline.query_async::<()>(&mut connection).await {
            Ok(()) => written += (FLOOD_PIPELINE * FLOOD_VALUE) as u64,
            Err(error) => {
                failures += 1;
                if failures > 20 {
                    bail!("the primary refused the flood: {error}");
                }
            }
        }
        let due = Duration::from_secs_f64(written as f64 / FLOOD_BYTES_PER_SECOND);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
    }
    Ok(written)
}

/// Issue 14, fault 10: shard 0's replica held to 2% of a core (its cgroup's CFS quota)
/// while its primary takes writes several times faster than that replica applies them.
/// The primary's memory stays bounded (a replica reads the stream from the fixed backlog,
/// and one that falls out of it resyncs: nothing is buffered per replica), the lag shows
/// in the primary's `meridian_replica_lag_bytes` and in the region's status, and once the
/// replica has its CPU back it catches up: the lag goes back to nothing, nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_starved_replica_lags_in_status_and_metrics_without_growing_its_primary() -> Result<()>
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let _shared = FAULTS.read().await;
    let Some(stage) = stage("slow_replica", "e2e-fm-slowreplica").await? else {
        return Ok(());
    };
    let primary = stage.pod(&stage.shard.primary).await?;
    let replica = stage.pod(&stage.shard.replica).await?;
    let Some(primary_pid) = container_pid(&primary, "node") else {
        return skip(
            "slow_replica",
            "the primary's process is not on this machine",
        );
    };
    let rss_before = process_rss(primary_pid)?;
    let Some(throttle) = CpuThrottle::limit(&replica, "node", 2)? else {
        return skip(
            "slow_replica",
            "the replica's cgroup is not on this machine",
        );
    };
    let fault_at = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = tokio::spawn(flood(
        stage.shard.primary_endpoint.clone(),
        stage.shard.tag.clone(),
        stop.clone(),
    ));
    // The primary's resident memory, sampled while it floods.
    let rss_peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = {
        let (stop, rss_peak) = (stop.clone(), rss_peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rss) = process_rss(primary_pid) {
                    rss_peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let primary_ip = stage
        .shard
        .primary_endpoint
        .rsplit_once(':')
        .map_or(stage.shard.primary_endpoint.clone(), |(ip, _)| {
            ip.to_string()
        });
    let metrics_addr = format!("{primary_ip}:{}", meridian_api::ports::METRICS);
    let metric_lag = wait_metric_lag(&metrics_addr, "above 1 MiB", |lag| lag > LAGGING).await?;
    let in_metrics_after = fault_at.elapsed();
    let status_lag = wait_region(
        &stage.regions,
        "orders-a",
        "shard 0's replication lag above 1 MiB in status",
        Duration::from_secs(120),
        |view| {
            view.status
                .shards
                .first()
                .and_then(|shard| shard.replication_lag_bytes)
                .is_some_and(|lag| lag as f64 > LAGGING)
        },
    )
    .await?
    .shards[0]
        .replication_lag_bytes;
    let in_status_after = fault_at.elapsed();
    // Stream well past the bound before judging the primary's memory.
    let streamed =
        wait_for(
            "the flood past 512 MiB",
            Duration::from_secs(120),
            || async {
                let peak = rss_peak.load(Ordering::Relaxed);
                if peak.saturating_sub(rss_before) > PRIMARY_GROWTH_BOUND {
                    return Ok(Some(()));
                }
                Ok((fault_at.elapsed().as_secs_f64() * FLOOD_BYTES_PER_SECOND
                    >= FLOOD_AT_LEAST as f64)
                    .then_some(()))
            },
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let written = flooding.await??;
    sampling.await?;
    streamed?;
    let growth = rss_peak.load(Ordering::Relaxed).saturating_sub(rss_before);
    println!(
        "SLOW REPLICA (2% of a core): {} MiB streamed, lag {:.1} MiB in metrics after {:?}, \
         {:?} bytes in status after {:?}, primary RSS +{:.1} MiB (from {:.1} MiB)",
        written >> 20,
        metric_lag / 1048576.0,
        in_metrics_after,
        status_lag,
        in_status_after,
        growth as f64 / 1048576.0,
        rss_before as f64 / 1048576.0
    );
    assert!(
        written >= FLOOD_AT_LEAST / 2,
        "the flood streamed only {} MiB: too little to judge the primary's memory",
        written >> 20
    );
    assert!(
        growth <= PRIMARY_GROWTH_BOUND,
        "the primary grew {} MiB while its replica lagged (bound {} MiB)",
        growth >> 20,
        PRIMARY_GROWTH_BOUND >> 20
    );
    let released = Instant::now();
    throttle.release()?;
    // Caught up: the lag goes back below 1 MiB in the metrics and in status.
    wait_metric_lag(&metrics_addr, "back under 1 MiB", |lag| lag < LAGGING).await?;
    wait_region(
        &stage.regions,
        "orders-a",
        "shard 0's replication lag gone from status",
        Duration::from_secs(120),
        |view| {
            view.status
                .shards
                .first()
                .is_some_and(|shard| shard.replication_lag_bytes.unwrap_or(0) as f64 <= LAGGING)
        },
    )
    .await?;
    stage
        .audit_recovery(
            "replica CPU-starved (2% of a core)",
            released,
            Duration::from_secs(120),
        )
        .await
}
