//! The HTTP origin behind the cache (`spec.origin`), set up by the operator on real
//! nodes. The origin is a bare meridian-node pod (the image the operator deploys, not in
//! cluster mode) behind a Service: its HTTP API (`GET/PUT/DELETE /cache/<key>`) is the
//! protocol the cache speaks to an origin, and it keeps what it is sent.
//!
//! One CacheCluster reads through and writes behind (1 shard, 1 replica), another
//! writes through (1 shard, no replica). Read-through fills the cache from the origin;
//! write-behind SET / DEL reach the origin afterwards, counted in `INFO origin` and the
//! metrics; write-through writes reach it before the reply. Then the origin goes away
//! (its port's packets dropped on its node, so on the local cluster only): write-through
//! refuses; write-behind writes queue on the primary and, replicated, on its replica; the
//! primary is force-deleted while a client writes on; once the origin is back the
//! promoted replica sends every write acknowledged by a node that lived on, or by the
//! dead primary after a replica had it (`WAIT 1`). A write only the dead primary had is
//! the documented loss window, counted but not checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use meridian_e2e::*;

const ORIGIN: &str = "origin";
/// The label the origin Service selects its pod by.
const ORIGIN_LABEL: &str = "e2e.meridian.dev/origin";
/// Not the cache nodes' 8080: the outage below cuts this port alone.
const ORIGIN_HTTP_PORT: u16 = 8000;
/// Writes queued while the origin is away, then the deletions of keys it holds.
const QUEUED_SETS: usize = 200;
const QUEUED_DELS: usize = 20;
/// Not the node's default (1 s), to see that the operator passes it on; long enough
/// for a loaded machine, as a read-through miss answers nil when it runs out.
const ORIGIN_TIMEOUT: &str = "timeoutMs: 1500";
const TIMEOUT: Duration = Duration::from_secs(300);
/// Origin and INFO polls: these states settle within milliseconds.
const POLL: Duration = Duration::from_millis(100);

/// The origin pod, reached by the test at its pod IP, by the cache through its Service.
struct Origin {
    addr: String,
    /// The address of the node the pod runs on.
    node_ip: String,
}

impl Origin {
    /// The Service and the pod, serving once its HTTP API answers.
    async fn start(client: &Client, ns: &str) -> Result<Self> {
        let service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ORIGIN},
            "spec": {
                "selector": {ORIGIN_LABEL: ORIGIN},
                "ports": [{"port": ORIGIN_HTTP_PORT, "targetPort": ORIGIN_HTTP_PORT}]
            }
        }))?;
        Api::<Service>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &service)
            .await?;
        let image = node_image(client).await?;
        let pod = start_pod(
            client,
            ns,
            ORIGIN,
            &[(ORIGIN_LABEL, ORIGIN)],
            ORIGIN,
            &image,
            // the cache sends no credentials to its origin: no password, so no
            // protected mode either
            &[
                ("MERIDIAN_PROTECTED_MODE", "no"),
                ("MERIDIAN_HTTP_PORT", &ORIGIN_HTTP_PORT.to_string()),
            ],
        )
        .await?;
        let status = pod.status.unwrap_or_default();
        let ip = status.pod_ip.context("the origin pod has no IP")?;
        let origin = Self {
            addr: format!("{ip}:{ORIGIN_HTTP_PORT}"),
            node_ip: status.host_ip.context("the origin pod has no node")?,
        };
        let serving = &origin;
        poll_every(POLL, "the origin's HTTP API", TIMEOUT, || async move {
            match serving.get("never-written").await {
                Ok(None) => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        })
        .await?;
        Ok(origin)
    }

    /// The URL `spec.origin.url` names: the Service, resolved by the cache pods' DNS.
    fn url(ns: &str) -> String {
        format!("http://{ORIGIN}.{ns}.svc:{ORIGIN_HTTP_PORT}/cache")
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        match http_request(&self.addr, "GET", &format!("/cache/{key}"), b"").await? {
            (200, value) => Ok(Some(value)),
            (404, _) => Ok(None),
            (status, body) => bail!("origin GET {key}: HTTP {status}: {body}"),
        }
    }

    async fn put(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/cache/{key}");
        match http_request(&self.addr, "PUT", &path, value.as_bytes()).await? {
            (204, _) => Ok(()),
            (status, body) => bail!("origin PUT {key}: HTTP {status}: {body}"),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match http_request(&self.addr, "DELETE", &format!("/cache/{key}"), b"").await? {
            (204 | 404, _) => Ok(()),
            (status, body) => bail!("origin DELETE {key}: HTTP {status}: {body}"),
        }
    }

    /// Drops every packet to and from the origin's port on its node, established
    /// connections included: the origin is away. `None` when the node is not a network
    /// namespace on this machine (not the local cluster).
    fn cut_off(&self) -> Result<Option<Partition>> {
        node_netns(&self.node_ip)
            .map(|netns| Partition::port(&[netns], ORIGIN_HTTP_PORT))
            .transpose()
    }

    /// Keys (of `expected`) whose value at the origin differs, with what it holds.
    async fn differences(
        &self,
        expected: &[(String, Option<String>)],
    ) -> Result<Vec<(String, Option<String>)>> {
        let mut wrong = Vec::new();
        for (key, value) in expected {
            let held = self.get(key).await?;
            if held != *value {
                wrong.push((key.clone(), held));
            }
        }
        Ok(wrong)
    }
}

/// The node image the operator deploys (its `MERIDIAN_NODE_IMAGE`).
async fn node_image(client: &Client) -> Result<String> {
    let operator = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get("meridian-operator")
        .await?;
    operator
        .spec
        .and_then(|spec| spec.template.spec)
        .into_iter()
        .flat_map(|pod| pod.containers)
        .flat_map(|container| container.env.unwrap_or_default())
        .find(|var| var.name == "MERIDIAN_NODE_IMAGE")
        .and_then(|var| var.value)
        .context("the operator Deployment sets no MERIDIAN_NODE_IMAGE")
}

/// `INFO origin` of the node at `endpoint`.
async fn origin_info(endpoint: &str) -> Result<String> {
    let mut connection = redis_connection(endpoint).await?;
    Ok(redis::cmd("INFO")
        .arg("origin")
        .query_async(&mut connection)
        .await?)
}

fn info_number(info: &str, field: &str) -> Result<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {field} in INFO origin: {info}"))
}

/// Polls the node at `endpoint` until its write-behind queue is empty.
async fn wait_queue_drained(endpoint: &str, timeout: Duration) -> Result<()> {
    poll_every(
        POLL,
        &format!("{endpoint}'s write-behind queue drained"),
        timeout,
        || async move {
            let info = origin_info(endpoint).await.map_err(|e| e.to_string())?;
            match info_number(&info, "write_behind_pending") {
                Ok(0) => Ok(Some(())),
                _ => Err(info),
            }
        },
    )
    .await
}

/// A write of the client that writes on through the failover: acknowledged by
/// `endpoint`, and by a replica too when `replicated` (`WAIT 1` answered 1). A write
/// whose `WAIT` got no answer counts as not acknowledged.
struct Acked {
    key: String,
    value: String,
    endpoint: String,
    replicated: bool,
}

/// Writes `live:<n>` = n every 20 ms, each followed by `WAIT 1 100`, recording what was
/// acknowledged, until stopped.
struct FailoverWriter {
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FailoverWriter {
    fn start(endpoints: Vec<String>) -> Self {
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut client = ShardClient::new(endpoints);
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let (key, value) = (format!("live:{index}"), index.to_string());
                    let mut set = redis::cmd("SET");
                    set.arg(&key).arg(&value);
                    let mut wait = redis::cmd("WAIT");
                    wait.arg(1).arg(100);
                    if let Ok(replies) = client.run(&[set, wait]).await
                        && let Ok(mut acked) = acked.lock()
                    {
                        acked.push(Acked {
                            key,
                            value,
                            endpoint: client.endpoint().to_string(),
                            replicated: matches!(replies.get(1), Some(redis::Value::Int(n)) if *n >= 1),
                        });
                    }
                    index += 1;
                    tokio::time::sleep(Duration::from_millis(20).saturating_sub(started.elapsed()))
                        .await;
                }
            })
        };
        Self { acked, stop, task }
    }

    /// How many writes `endpoint` acknowledged so far.
    fn acked_by(&self, endpoint: &str) -> usize {
        self.acked.lock().map_or(0, |acked| {
            acked
                .iter()
                .filter(|write| write.endpoint == endpoint)
                .count()
        })
    }

    async fn stop(self) -> Result<Vec<Acked>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?;
        let mut acked = self
            .acked
            .lock()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))?;
        Ok(std::mem::take(&mut *acked))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_read_through_write_behind_and_write_through() -> Result<()> {
    let Some((client, ns)) = operator_scenario("origin_modes", "e2e-origin").await? else {
        return Ok(());
    };
    let started = Instant::now();
    let url = format!("url: {}", Origin::url(&ns.name));
    let behind = ClusterFixture {
        origin: vec![
            url.clone(),
            "readThrough: true".into(),
            "writeBehind: true".into(),
            ORIGIN_TIMEOUT.into(),
        ],
        ..ClusterFixture::in_region_a("behind", "behind-a", 1, 1)
    }
    .apply(&client, &ns.name)
    .await?;
    let through = ClusterFixture {
        origin: vec![url, "writeThrough: true".into(), ORIGIN_TIMEOUT.into()],
        ..ClusterFixture::in_region_a("through", "through-a", 1, 0)
    }
    .apply(&client, &ns.name)
    .await?;
    // the cache pods start meanwhile
    let origin = Origin::start(&client, &ns.name).await?;
    let status = wait_region(
        &behind.regions,
        "behind-a",
        "Ready with its replica",
        TIMEOUT,
        |view| view.ready() && view.status.shards.iter().all(|s| s.replicas.len() == 1),
    )
    .await?;
    let scene = FirstShard::read(&client, &ns.name, &status).await?;
    let through_status = wait_region_ready(&through.regions, "through-a", TIMEOUT).await?;
    let through_primary = primary_endpoints(&client, &ns.name, &through_status)
        .await?
        .remove(0);
    println!("ORIGIN: both clusters Ready after {:?}", started.elapsed());

    // Read-through: a miss is filled from the origin, and then served from the cache.
    let mut cache = cluster_connection(&[
        scene.primary_endpoint.clone(),
        scene.replica_endpoint.clone(),
    ])
    .await?;
    // The Service routes to the origin once its endpoints reach every node's kube-proxy
    // (and its name CoreDNS): until then a read-through miss answers nil, as documented.
    origin.put("probe:behind", "reachable").await?;
    let probing = &cache;
    poll_every(
        POLL,
        "the origin through its Service",
        TIMEOUT,
        || async move {
            match get(&mut probing.clone(), "probe:behind").await {
                Ok(Some(value)) if value == "reachable" => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    origin.put("catalog/sku:1", "from the origin").await?;
    assert_eq!(
        get(&mut cache, "catalog/sku:1").await?.as_deref(),
        Some("from the origin")
    );
    origin.delete("catalog/sku:1").await?;
    assert_eq!(
        get(&mut cache, "catalog/sku:1").await?.as_deref(),
        Some("from the origin"),
        "the read-through fill was not kept in the cache"
    );
    assert_eq!(get(&mut cache, "catalog:absent").await?, None);

    // Write-behind: SET and DEL (of a key only the origin holds) reach the origin after
    // the reply.
    origin.put("wb:deleted", "stale").await?;
    for (index, key) in (0..QUEUED_DELS).map(|index| (index, format!("gone:{index}"))) {
        origin.put(&key, &format!("old {index}")).await?;
    }
    for value in ["first", "second", "last"] {
        set(&mut cache, "wb:written", value).await?;
    }
    let deleted: i64 = redis::cmd("DEL")
        .arg("wb:deleted")
        .query_async(&mut cache)
        .await?;
    assert_eq!(deleted, 0, "the cache held wb:deleted");
    let expected = [
        ("wb:written".to_string(), Some("last".to_string())),
        ("wb:deleted".to_string(), None),
    ];
    let (at_origin, expected) = (&origin, &expected);
    poll_every(
        POLL,
        "write-behind writes at the origin",
        TIMEOUT,
        || async move {
            match at_origin.differences(expected).await {
                Ok(wrong) if wrong.is_empty() => Ok(Some(())),
                other => Err(format!("differing: {other:?}")),
            }
        },
    )
    .await?;
    wait_queue_drained(&scene.primary_endpoint, TIMEOUT).await?;
    let info = origin_info(&scene.primary_endpoint).await?;
    ensure!(
        info.contains("origin_read_through:1") && info.contains("origin_write_mode:write-behind"),
        "INFO origin of the primary: {info}"
    );
    ensure!(
        info_number(&info, "write_behind_flushed")? >= 2,
        "flushed: {info}"
    );
    let metrics = http_get(
        &scene.primary_endpoint.replace(":6379", ":9090"),
        "/metrics",
    )
    .await?;
    let flushed = largest_metric(&metrics, "meridian_origin_write_behind_flushed_total");
    ensure!(
        flushed.is_some_and(|flushed| flushed >= 2.0),
        "meridian_origin_write_behind_flushed_total {flushed:?}"
    );
    // the replica dropped its copies as the primary's FLUSHED acknowledgements came
    wait_queue_drained(&scene.replica_endpoint, TIMEOUT).await?;

    // Write-through: at the origin as soon as the write is acknowledged.
    let mut direct = redis_connection(&through_primary).await?;
    let probing = &direct;
    poll_every(POLL, "a write-through SET", TIMEOUT, || async move {
        set(&mut probing.clone(), "probe:through", "reachable")
            .await
            .map(Some)
            .map_err(|error| error.to_string())
    })
    .await?;
    set(&mut direct, "wt:written", "synchronous").await?;
    assert_eq!(
        origin.get("wt:written").await?.as_deref(),
        Some("synchronous")
    );
    let _: i64 = redis::cmd("DEL")
        .arg("wt:written")
        .query_async(&mut direct)
        .await?;
    assert_eq!(origin.get("wt:written").await?, None);
    ensure!(
        origin_info(&through_primary)
            .await?
            .contains("origin_write_mode:write-through")
    );

    // The origin goes away. Write-through refuses and keeps the cache as it was;
    // write-behind queues and retries.
    let Some(outage) = origin.cut_off()? else {
        eprintln!(
            "SKIP origin outage and failover: the origin's node is not a network namespace here"
        );
        return Ok(());
    };
    let refused = redis::cmd("SET")
        .arg("wt:refused")
        .arg("never cached")
        .query_async::<()>(&mut direct)
        .await;
    let refusal = format!("{refused:?}");
    // after spec.origin.timeoutMs, not the node's default
    ensure!(
        refusal.contains("origin write failed") && refusal.contains("timed out after 1.5s"),
        "SET with write-through while the origin is away: {refusal}"
    );
    assert_eq!(get(&mut direct, "wt:refused").await?, None);
    let failures = info_number(
        &origin_info(&scene.primary_endpoint).await?,
        "write_behind_failures",
    )?;
    set(&mut cache, "wb:probe", "queued").await?;
    let primary_endpoint = scene.primary_endpoint.as_str();
    poll_every(
        POLL,
        "a write-behind flush failing",
        TIMEOUT,
        || async move {
            let info = origin_info(primary_endpoint)
                .await
                .map_err(|e| e.to_string())?;
            match info_number(&info, "write_behind_failures") {
                Ok(now) if now > failures => Ok(Some(())),
                _ => Err(info),
            }
        },
    )
    .await?;

    // Writes queue on the primary and, through replication, on its replica.
    let mut expected: Vec<(String, Option<String>)> = Vec::new();
    let mut primary = redis_connection(&scene.primary_endpoint).await?;
    for index in 0..QUEUED_SETS {
        let (key, value) = (format!("queued:{index}"), format!("value {index}"));
        set(&mut primary, &key, &value).await?;
        expected.push((key, Some(value)));
    }
    for index in 0..QUEUED_DELS {
        let key = format!("gone:{index}");
        let _: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut primary)
            .await?;
        expected.push((key, None));
    }
    wait_for_a_replica(&mut primary, 5000).await?;
    let queued = info_number(
        &origin_info(&scene.primary_endpoint).await?,
        "write_behind_pending",
    )?;
    ensure!(
        queued as usize >= expected.len(),
        "{queued} writes pending on the primary, {} made",
        expected.len()
    );
    let on_replica = info_number(
        &origin_info(&scene.replica_endpoint).await?,
        "write_behind_pending",
    )?;
    assert_eq!(on_replica, queued, "the replica's copy of the queue");

    // The primary is force-deleted while a client writes on.
    let writer = FailoverWriter::start(vec![
        scene.primary_endpoint.clone(),
        scene.replica_endpoint.clone(),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .delete(&scene.primary, &DeleteParams::default().grace_period(0))
        .await?;
    wait_shard0_primary_of(
        &behind.regions,
        "behind-a",
        &scene.replica,
        Duration::from_secs(120),
    )
    .await?;
    println!(
        "ORIGIN: {} promoted {:?} after the kill",
        scene.replica,
        killed_at.elapsed()
    );
    // the promoted node holds the queue; it flushes nothing while the origin is away
    let info = origin_info(&scene.replica_endpoint).await?;
    ensure!(
        info_number(&info, "write_behind_pending")? >= queued
            && info_number(&info, "write_behind_flushed")? == 0,
        "INFO origin of the promoted node: {info}"
    );
    let (progress, survivor) = (&writer, scene.replica_endpoint.as_str());
    poll_every(
        POLL,
        "writes acknowledged by the promoted node",
        Duration::from_secs(60),
        || async move {
            match progress.acked_by(survivor) {
                acked if acked >= 10 => Ok(Some(())),
                acked => Err(format!("{acked} so far")),
            }
        },
    )
    .await?;
    let acked = writer.stop().await?;

    outage.heal()?;
    wait_queue_drained(&scene.replica_endpoint, Duration::from_secs(120)).await?;
    let flushed = info_number(
        &origin_info(&scene.replica_endpoint).await?,
        "write_behind_flushed",
    )?;
    ensure!(
        flushed >= queued,
        "the promoted node sent {flushed} writes, {queued} were queued"
    );
    let by_survivor = acked
        .iter()
        .filter(|write| write.endpoint == scene.replica_endpoint)
        .count();
    ensure!(
        by_survivor > 0,
        "no write acknowledged by the promoted node"
    );
    let unreplicated = acked
        .iter()
        .filter(|write| write.endpoint != scene.replica_endpoint && !write.replicated)
        .count();
    expected.extend(
        acked
            .iter()
            .filter(|write| write.endpoint == scene.replica_endpoint || write.replicated)
            .map(|write| (write.key.clone(), Some(write.value.clone()))),
    );
    let lost = origin.differences(&expected).await?;
    ensure!(
        lost.is_empty(),
        "{} acknowledged writes not at the origin: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    println!(
        "ORIGIN: {} acknowledged writes at the origin ({} by the promoted node; {} acknowledged \
         by the killed primary alone, not checked); scenario took {:?}",
        expected.len(),
        by_survivor,
        unreplicated,
        started.elapsed()
    );
    Ok(())
}
