//! Region links through the in-cluster operator: two CacheRegions of one CacheCluster in
//! the same Kubernetes cluster find each other, report their links in status, and a write
//! (or `INVALIDATE`) in one region removes the stale copy in the other. With
//! `consistency: strong`, an acknowledged write is never followed by the old value in the
//! peer region.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use meridian_e2e::*;
use redis::cluster_async::ClusterConnection;

/// Cutting region-a's links cuts them for every test in this file: the partition tests
/// take this alone, the others share it.
static LINKS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

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
    let fixture = ClusterFixture {
        name: cluster.into(),
        shards,
        replicas_per_shard: 1,
        consistency: Some(consistency.into()),
        ..ClusterFixture::default()
    };
    let linked = deploy_linked(client, ns, fixture).await?;
    Ok((linked.region_a, linked.region_b))
}

/// Both regions of a cluster, Ready and linked.
struct Linked {
    region_a: ClusterConnection,
    region_b: ClusterConnection,
    regions: kube::Api<meridian_api::CacheRegion>,
    /// The primaries of region-a and of region-b.
    primaries: [Vec<String>; 2],
}

/// [`deploy`] of `fixture` (its regions `<name>-region-a` and `<name>-region-b`).
async fn deploy_linked(client: &Client, ns: &str, fixture: ClusterFixture) -> Result<Linked> {
    let cluster = fixture.name.clone();
    let Deployed { clusters, regions } = fixture
        .with_regions(&[
            (&format!("{cluster}-region-a"), "region-a"),
            (&format!("{cluster}-region-b"), "region-b"),
        ])
        .apply(client, ns)
        .await?;
    let started = Instant::now();
    let mut connections = Vec::new();
    let mut primaries = Vec::new();
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
        primaries.push(nodes);
    }
    eprintln!(
        "{cluster}: both regions Ready and linked after {:?}",
        started.elapsed()
    );
    // The cluster aggregates both regions and, once both links are up, no link problem.
    wait_cluster(
        &clusters,
        &cluster,
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
    let primaries_b = primaries.pop().context("region-b primaries")?;
    let primaries_a = primaries.pop().context("region-a primaries")?;
    Ok(Linked {
        region_a,
        region_b,
        regions,
        primaries: [primaries_a, primaries_b],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_in_one_region_invalidates_the_other() -> Result<()> {
    let _links = LINKS.read().await;
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

/// A command from its name and arguments.
fn command(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

/// Every type's value as reads see it (a list and sorted set in order, a hash and set
/// sorted), so the two regions' copies compare whatever their insertion order.
async fn contents(connection: &mut ClusterConnection, key: &str) -> Result<Option<Vec<String>>> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(connection).await?;
    let read = command;
    let mut items: Vec<String> = match kind.as_str() {
        "none" => return Ok(None),
        "list" => {
            return Ok(Some(
                read(&["LRANGE", key, "0", "-1"])
                    .query_async(connection)
                    .await?,
            ));
        }
        "zset" => {
            return Ok(Some(
                read(&["ZRANGE", key, "0", "-1", "WITHSCORES"])
                    .query_async(connection)
                    .await?,
            ));
        }
        "hash" => read(&["HGETALL", key]).query_async(connection).await?,
        "set" => read(&["SMEMBERS", key]).query_async(connection).await?,
        "string" => vec![read(&["GET", key]).query_async(connection).await?],
        other => bail!("{key}: unexpected type {other}"),
    };
    items.sort();
    Ok(Some(items))
}

/// Polls until `key` reads the same in both regions (and exists when `present`).
async fn wait_same(
    region_a: &mut ClusterConnection,
    region_b: &mut ClusterConnection,
    key: &str,
    present: bool,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let (left, right) = (
            contents(region_a, key).await?,
            contents(region_b, key).await?,
        );
        if left == right && left.is_some() == present {
            return Ok(started.elapsed());
        }
        if started.elapsed() > EVENTUAL_BOUND {
            bail!("{key} differs after {EVENTUAL_BOUND:?}: region-a {left:?}, region-b {right:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_mode_carries_every_type_to_the_other_region() -> Result<()> {
    let _links = LINKS.read().await;
    let Some((client, ns)) = operator_scenario(
        "replicate_mode_carries_every_type_to_the_other_region",
        "e2e-xreplicate",
    )
    .await?
    else {
        return Ok(());
    };
    let fixture = ClusterFixture {
        name: "xr-replicate".into(),
        shards: 2,
        consistency: Some("eventual".into()),
        cross_region_mode: Some("replicate".into()),
        ..ClusterFixture::default()
    };
    let Linked {
        mut region_a,
        mut region_b,
        ..
    } = deploy_linked(&client, &ns.name, fixture).await?;

    // an application's state written in region-a is readable, whole, in region-b
    for args in [
        &["RPUSH", "jobs", "j1", "j2", "j3"][..],
        &["ZADD", "board", "10", "ann", "7", "bob"],
        &["HSET", "user:1", "name", "ada", "plan", "pro"],
        &["SADD", "online", "ann", "bob"],
        &["SET", "greeting", "hello"],
    ] {
        let _: redis::Value = command(args).query_async(&mut region_a).await?;
    }
    let mut lags = Vec::new();
    for key in ["jobs", "board", "user:1", "online", "greeting"] {
        lags.push(wait_same(&mut region_a, &mut region_b, key, true).await?);
    }
    // and later writes in either region replace the other's copy (last writer wins per key)
    let _: Option<String> = redis::cmd("LPOP")
        .arg("jobs")
        .query_async(&mut region_b)
        .await?;
    let _: f64 = redis::cmd("ZINCRBY")
        .arg("board")
        .arg(5)
        .arg("bob")
        .query_async(&mut region_b)
        .await?;
    lags.push(wait_same(&mut region_a, &mut region_b, "jobs", true).await?);
    lags.push(wait_same(&mut region_a, &mut region_b, "board", true).await?);
    assert_eq!(
        contents(&mut region_a, "board").await?,
        Some(["ann", "10", "bob", "12"].map(String::from).to_vec()),
        "region-b's ZINCRBY reached region-a"
    );
    let _: i64 = redis::cmd("DEL")
        .arg("online")
        .query_async(&mut region_a)
        .await?;
    lags.push(wait_same(&mut region_a, &mut region_b, "online", false).await?);
    lags.sort();
    eprintln!(
        "replicate mode: value in the other region after min {:?}, median {:?}, max {:?}",
        lags[0],
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn strong_consistency_never_serves_the_old_value_after_an_ack() -> Result<()> {
    let _links = LINKS.read().await;
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

/// The link port of every cache node (region links run over it).
const LINK_PORT: u16 = 16379;

/// How long the region link partition lasts: a minute in the suite, longer on demand
/// (`MERIDIAN_LINK_PARTITION_SECS`, e.g. several minutes under `cargo xtask chaos`).
fn link_partition() -> Duration {
    std::env::var("MERIDIAN_LINK_PARTITION_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Two linked regions of a one-shard cluster, and the network namespaces of region-a's
/// nodes, where the partition scenarios cut the links.
struct LinkedRegions {
    /// Deleted with the scenario.
    ns: TestNamespace,
    region_a: ClusterConnection,
    region_b: ClusterConnection,
    namespaces: Vec<String>,
}

/// Deploys [`LinkedRegions`] (cluster `cluster`) in a namespace named after `prefix`;
/// `None` (having said why) when the suite skips or region-a's nodes are not namespaces
/// on this machine.
async fn linked_regions_to_cut(
    test: &str,
    prefix: &str,
    cluster: &str,
    consistency: &str,
) -> Result<Option<LinkedRegions>> {
    let Some((client, ns)) = operator_scenario(test, prefix).await? else {
        return Ok(None);
    };
    let (region_a, region_b) = deploy(&client, &ns.name, cluster, 1, consistency).await?;
    let namespaces = region_node_namespaces(&client, "region-a").await?;
    if namespaces.is_empty() {
        eprintln!("SKIP {test}: region-a's nodes are not network namespaces here");
        return Ok(None);
    }
    Ok(Some(LinkedRegions {
        ns,
        region_a,
        region_b,
        namespaces,
    }))
}

/// Issue 14, fault 8 (eventual): region-a's links cut while both regions write keys the
/// other holds a copy of. Each region keeps serving its own writes; after the heal every
/// stale copy is gone within the eventual bound (plus the links' reconnect).
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_region_link_leaves_no_stale_copy_after_the_heal() -> Result<()> {
    let _alone = LINKS.write().await;
    let Some(LinkedRegions {
        ns: _ns,
        mut region_a,
        mut region_b,
        namespaces,
    }) = linked_regions_to_cut(
        "a_partitioned_region_link_leaves_no_stale_copy_after_the_heal",
        "e2e-xpartition",
        "xr-partition",
        "eventual",
    )
    .await?
    else {
        return Ok(());
    };
    // Copies each region holds before the cut: `held-by-b:*` in b, `held-by-a:*` in a.
    let keys = |prefix: &'static str| (0..20).map(move |i| format!("{prefix}:{i}"));
    for key in keys("held-by-b") {
        set(&mut region_b, &key, "b0").await?;
    }
    for key in keys("held-by-a") {
        set(&mut region_a, &key, "a0").await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let partition = Partition::port(&namespaces, LINK_PORT)?;
    let cut = Instant::now();
    // Each region overwrites what the other holds; its own writes are served at once.
    for key in keys("held-by-b") {
        set(&mut region_a, &key, "a1").await?;
        assert_eq!(get(&mut region_a, &key).await?.as_deref(), Some("a1"));
    }
    for key in keys("held-by-a") {
        set(&mut region_b, &key, "b1").await?;
    }
    let lasting = link_partition();
    tokio::time::sleep(lasting.saturating_sub(cut.elapsed())).await;
    // Still cut off: the peer's copy is stale (what eventual consistency allows) and
    // nothing leaked through.
    assert_eq!(
        get(&mut region_b, "held-by-b:0").await?.as_deref(),
        Some("b0"),
        "the partition let an invalidation through"
    );
    partition.heal()?;
    let stale_b: Vec<String> = keys("held-by-b").collect();
    let stale_a: Vec<String> = keys("held-by-a").collect();
    let bound = EVENTUAL_BOUND + Duration::from_secs(30);
    let gone_b = wait_gone(&mut region_b, &stale_b, bound).await?;
    let gone_a = wait_gone(&mut region_a, &stale_a, bound).await?;
    println!(
        "LINK PARTITION {lasting:?}: stale copies gone {:?} (region-b) and {:?} (region-a) after the heal",
        gone_b,
        gone_a.max(gone_b)
    );
    // The newer writes themselves survive on the side that made them.
    for key in keys("held-by-b") {
        assert_eq!(
            get(&mut region_a, &key).await?.as_deref(),
            Some("a1"),
            "{key}"
        );
    }
    for key in keys("held-by-a") {
        assert_eq!(
            get(&mut region_b, &key).await?.as_deref(),
            Some("b1"),
            "{key}"
        );
    }
    FaultOutcome {
        fault: "region link partitioned (eventual)".into(),
        recovery_ms: gone_a.max(gone_b).as_millis(),
        acked_writes: 40,
        lost_writes: 0,
        stale_reads: 0,
    }
    .record()?;
    Ok(())
}

/// Issue 14, fault 8 (strong): with the link cut, a write answers TIMEOUT naming the
/// unreachable region instead of an acknowledgement, and once healed the peer serves no
/// stale copy of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_strong_write_across_a_cut_link_times_out_and_leaves_no_stale_read() -> Result<()> {
    let _alone = LINKS.write().await;
    let Some(LinkedRegions {
        ns: _ns,
        mut region_a,
        mut region_b,
        namespaces,
    }) = linked_regions_to_cut(
        "a_strong_write_across_a_cut_link_times_out_and_leaves_no_stale_read",
        "e2e-xstrongcut",
        "xr-strongcut",
        "strong",
    )
    .await?
    else {
        return Ok(());
    };
    set(&mut region_b, "balance:1", "old").await?;
    let partition = Partition::port(&namespaces, LINK_PORT)?;
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("balance:1")
        .arg("new")
        .query_async(&mut region_a)
        .await;
    let error = refused.expect_err("a strong write acknowledged with the link cut");
    let said = error.to_string();
    assert!(
        said.contains("TIMEOUT") && said.contains("region-b"),
        "the refusal must say TIMEOUT and name region-b: {said}"
    );
    partition.heal()?;
    // The write was applied in region-a, unacknowledged: region-b must drop its copy
    // once the link is back, and never serve it as current again.
    let heal = Instant::now();
    if let Err(error) = wait_gone(
        &mut region_b,
        &["balance:1".to_string()],
        EVENTUAL_BOUND + Duration::from_secs(30),
    )
    .await
    {
        let mut links = String::new();
        for connection in [&mut region_a, &mut region_b] {
            let peers: redis::RedisResult<String> = redis::cmd("MERIDIAN.PEERS")
                .arg("GET")
                .query_async(connection)
                .await;
            links.push_str(&format!("{peers:?}\n"));
        }
        return Err(error.context(format!("region links after the heal: {links}")));
    }
    FaultOutcome {
        fault: "region link partitioned (strong write answered TIMEOUT)".into(),
        recovery_ms: heal.elapsed().as_millis(),
        acked_writes: 0,
        lost_writes: 0,
        stale_reads: 0,
    }
    .record()
}

/// What `--max-clock-drift-ms` allows by default, and skews under and beyond it.
const DRIFT_BOUND: Duration = Duration::from_secs(5);
const SKEW_WITHIN_S: i64 = 3;
const SKEW_BEYOND_S: i64 = 30;

/// How far `endpoint`'s wall clock (`TIME`) is ahead of this machine's, in seconds.
async fn clock_ahead_s(endpoint: &str) -> Result<f64> {
    let mut connection = quick_connection(endpoint).await?;
    let (seconds, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut connection).await?;
    let theirs = seconds as f64 + micros as f64 / 1e6;
    let ours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    Ok(theirs - ours)
}

/// Waits until region-b's clock reads `seconds` (±1.5 s) ahead: libfaketime re-reads the
/// offset once a second, and this proves the skew is real rather than a preload that
/// silently did nothing.
async fn wait_skew(endpoint: &str, seconds: i64) -> Result<f64> {
    wait_for(
        &format!("{endpoint}'s clock {seconds} s ahead"),
        Duration::from_secs(20),
        || async {
            let ahead = clock_ahead_s(endpoint).await.map_err(|e| e.to_string())?;
            if (ahead - seconds as f64).abs() < 1.5 {
                Ok(Some(ahead))
            } else {
                Err(format!("{ahead:.2} s ahead"))
            }
        },
    )
    .await
}

/// Issue 14, fault 9: region-b's wall clock runs ahead of region-a's (its pods on the
/// RuntimeClass `skewed-clock`, the same file of offsets for all of them). Within
/// `--max-clock-drift-ms` the later write wins in both directions although region-b
/// stamps its writes seconds "later" (hybrid logical clocks). Beyond it, region-a refuses
/// region-b's events with CLOCKDRIFT instead of letting them drag its versions, region-b's
/// status says why its link is down, and once the clock is fixed the held events arrive:
/// nothing lost, no stale copy left.
#[tokio::test(flavor = "multi_thread")]
async fn a_region_with_a_skewed_clock_keeps_writes_ordered_and_is_refused_past_the_bound()
-> Result<()> {
    let _links = LINKS.read().await;
    let test = "a_region_with_a_skewed_clock_keeps_writes_ordered_and_is_refused_past_the_bound";
    let Some((client, ns)) = operator_scenario(test, "e2e-xclock").await? else {
        return Ok(());
    };
    let Some(skew) = ClockSkew::set(SKEW_WITHIN_S)? else {
        eprintln!("SKIP {test}: the cluster has no skewed-clock runtime (not the local cluster)");
        return Ok(());
    };
    let fixture = ClusterFixture {
        name: "xr-clock".into(),
        shards: 1,
        consistency: Some("eventual".into()),
        runtime_classes: vec![("region-b".into(), SKEWED_CLOCK_RUNTIME_CLASS.into())],
        ..ClusterFixture::default()
    };
    let Linked {
        mut region_a,
        mut region_b,
        regions,
        primaries: [primaries_a, primaries_b],
    } = deploy_linked(&client, &ns.name, fixture).await?;
    let ahead = wait_skew(&primaries_b[0], SKEW_WITHIN_S).await?;
    let behind = clock_ahead_s(&primaries_a[0]).await?;
    assert!(behind.abs() < 1.0, "region-a's clock is {behind:.2} s off");
    println!("CLOCK SKEW: region-b {ahead:.2} s ahead of region-a");

    // Within the bound: each region's later write removes the other's copy, although
    // region-b's earlier write carries a wall clock seconds ahead of region-a's.
    for i in 0..10 {
        for b_first in [true, false] {
            let (first, second, key, second_primary) = if b_first {
                (
                    &mut region_b,
                    &mut region_a,
                    format!("b-then-a:{i}"),
                    &primaries_a[0],
                )
            } else {
                (
                    &mut region_a,
                    &mut region_b,
                    format!("a-then-b:{i}"),
                    &primaries_b[0],
                )
            };
            let received = events_received(second_primary).await?;
            set(first, &key, "earlier").await?;
            // The second write is made once the first one's event arrived: "later" is then
            // later for the second region too (a fixed pause loses that race on a busy
            // machine, and the test would judge the clocks on writes that were concurrent).
            wait_event_received(second_primary, received).await?;
            set(second, &key, "later").await?;
            wait_gone(first, std::slice::from_ref(&key), EVENTUAL_BOUND)
                .await
                .with_context(|| format!("the later write of {key} did not win"))?;
            assert_eq!(get(second, &key).await?.as_deref(), Some("later"));
        }
    }

    // Beyond the bound: region-a holds copies that region-b then overwrites with a clock
    // 30 s ahead.
    let drifted: Vec<String> = (0..10).map(|i| format!("drifted:{i}")).collect();
    for key in &drifted {
        set(&mut region_a, key, "a0").await?;
    }
    skew.change(SKEW_BEYOND_S)?;
    let ahead = wait_skew(&primaries_b[0], SKEW_BEYOND_S).await?;
    assert!(Duration::from_secs_f64(ahead) > DRIFT_BOUND);
    let counted = || async {
        regions_info(&primaries_a[0], "region_clock_drift_refusals")
            .await?
            .parse::<u64>()
            .context("a count")
    };
    let refusals_before = counted().await?;
    for key in &drifted {
        set(&mut region_b, key, "b1").await?;
    }
    wait_for(
        "region-a refusing region-b's events",
        Duration::from_secs(10),
        || async {
            let now = counted().await.map_err(|e| e.to_string())?;
            Ok((now > refusals_before).then_some(()))
        },
    )
    .await?;
    // Nothing from region-b's future was applied in region-a.
    for key in &drifted {
        assert_eq!(
            get(&mut region_a, key).await?.as_deref(),
            Some("a0"),
            "{key}"
        );
    }
    // A region with a wrong clock goes on writing: its link stays refused (each new event
    // is stamped as far ahead) and its status says why.
    let ticking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticker = {
        let (mut region_b, ticking) = (region_b.clone(), ticking.clone());
        tokio::spawn(async move {
            let mut tick = 0u64;
            while ticking.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = set(&mut region_b, "ticker", &tick.to_string()).await;
                tick += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let refused = wait_region(
        &regions,
        "xr-clock-region-b",
        "its link to region-a down with CLOCKDRIFT in status",
        Duration::from_secs(90),
        |view| {
            view.status.peers.iter().any(|peer| {
                peer.region == "region-a"
                    && !peer.connected
                    && peer
                        .message
                        .as_deref()
                        .is_some_and(|why| why.contains("CLOCKDRIFT"))
            })
        },
    )
    .await;
    let refused = match refused {
        Ok(status) => status,
        Err(error) => {
            let mut b = quick_connection(&primaries_b[0]).await?;
            let links: redis::RedisResult<String> = redis::cmd("MERIDIAN.PEERS")
                .arg("GET")
                .query_async(&mut b)
                .await;
            let refusals = regions_info(&primaries_a[0], "region_last_link_refusal").await;
            return Err(error.context(format!(
                "region-b's node says {links:?}; region-a's last refusal: {refusals:?}"
            )));
        }
    };
    let degraded = refused
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        degraded.contains("CLOCKDRIFT"),
        "region-b's Degraded condition must say why: {degraded}"
    );
    // The clock fixed: the held events are delivered once region-a's clock comes within
    // the bound of their stamps, and region-a's stale copies go.
    skew.reset()?;
    ticking.store(false, std::sync::atomic::Ordering::Relaxed);
    ticker.await?;
    let fixed = Instant::now();
    let gone = wait_gone(
        &mut region_a,
        &drifted,
        Duration::from_secs(SKEW_BEYOND_S as u64) + EVENTUAL_BOUND + Duration::from_secs(30),
    )
    .await
    .context("region-b's writes held over its clock never reached region-a")?;
    for key in &drifted {
        assert_eq!(
            get(&mut region_b, key).await?.as_deref(),
            Some("b1"),
            "{key}"
        );
    }
    wait_region(
        &regions,
        "xr-clock-region-b",
        "its link to region-a connected again",
        Duration::from_secs(90),
        |view| view.linked_to("region-a"),
    )
    .await?;
    println!(
        "CLOCK SKEW {SKEW_BEYOND_S} s: refused with CLOCKDRIFT; held writes delivered {gone:?} after the clock was fixed"
    );
    FaultOutcome {
        fault: format!("clock skew {SKEW_BEYOND_S} s past the drift bound"),
        recovery_ms: fixed.elapsed().as_millis(),
        acked_writes: drifted.len() + 20,
        lost_writes: 0,
        stale_reads: 0,
    }
    .record()
}

/// One field of `INFO regions` on `endpoint`.
/// How many region-link events the node at `endpoint` (`ip:port` of RESP) applied, from
/// its metrics.
async fn events_received(endpoint: &str) -> Result<f64> {
    let ip = endpoint.rsplit_once(':').map_or(endpoint, |(ip, _)| ip);
    let metrics = http_get(
        &format!("{ip}:{}", meridian_api::ports::METRICS),
        "/metrics",
    )
    .await?;
    Ok(largest_metric(&metrics, "meridian_region_events_received_total").unwrap_or(0.0))
}

/// Waits (polling briskly, as each write of a loop does) until the node at `endpoint`
/// applied more region-link events than `before`.
async fn wait_event_received(endpoint: &str, before: f64) -> Result<()> {
    let started = Instant::now();
    loop {
        let now = events_received(endpoint).await?;
        if now > before {
            return Ok(());
        }
        if started.elapsed() > EVENTUAL_BOUND {
            bail!("{endpoint} applied no new region event in {EVENTUAL_BOUND:?} ({now})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn regions_info(endpoint: &str, field: &str) -> Result<String> {
    let mut connection = quick_connection(endpoint).await?;
    let info: String = redis::cmd("INFO")
        .arg("regions")
        .query_async(&mut connection)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
        .with_context(|| format!("INFO regions has no {field}: {info}"))
}
