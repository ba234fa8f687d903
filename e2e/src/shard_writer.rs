//! A writer pinned to one shard while its primary is taken away: it knows the shard's
//! nodes by address, follows MOVED, and records when each write succeeded or failed, so
//! a scenario can measure when writes resumed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use redis::aio::MultiplexedConnection;

/// A connection that gives up quickly: a dead or frozen node must not hold the writer.
pub async fn quick_connection(endpoint: &str) -> Result<MultiplexedConnection> {
    connection_with_timeout(endpoint, Duration::from_millis(300)).await
}

/// A connection that gives up connecting after 300 ms and waits `response_timeout` for a
/// reply (longer than a `WAIT` it sends).
pub async fn connection_with_timeout(
    endpoint: &str,
    response_timeout: Duration,
) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{endpoint}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(response_timeout));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// `WAIT 1 <timeout_ms>` on a primary's connection: fails unless a replica has every
/// write made on it so far.
pub async fn wait_for_a_replica(
    primary: &mut MultiplexedConnection,
    timeout_ms: u64,
) -> Result<()> {
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(timeout_ms)
        .query_async(primary)
        .await?;
    if acked < 1 {
        bail!("WAIT 1 returned {acked}: no replica acknowledged within {timeout_ms} ms");
    }
    Ok(())
}

/// A client of one shard that follows MOVED and, when its node dies, asks the other
/// nodes it knows (a replica answers MOVED to the primary, or is the new primary).
pub struct ShardClient {
    endpoints: Vec<String>,
    current: usize,
    connections: HashMap<String, MultiplexedConnection>,
    response_timeout: Duration,
}

impl ShardClient {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self::with_response_timeout(endpoints, Duration::from_millis(300))
    }

    pub fn with_response_timeout(endpoints: Vec<String>, response_timeout: Duration) -> Self {
        Self {
            endpoints,
            current: 0,
            connections: HashMap::new(),
            response_timeout,
        }
    }

    /// The node that answered the last command that succeeded (the first one before any).
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    pub async fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value);
        self.run(&[set]).await.map(drop)
    }

    /// Runs `commands` in order on one connection to the node that owns their keys: the
    /// first command finds the node (following MOVED, or trying the next node when one
    /// does not answer); the others run on the same connection after it, so a `WAIT`
    /// that follows a `SET` counts that write's replicas.
    pub async fn run(&mut self, commands: &[redis::Cmd]) -> Result<Vec<redis::Value>> {
        let Some((first, rest)) = commands.split_first() else {
            return Ok(Vec::new());
        };
        let mut last = String::new();
        let mut index = self.current;
        for _ in 0..(self.endpoints.len() * 2) {
            let endpoint = self.endpoints[index % self.endpoints.len()].clone();
            index = (index + 1) % self.endpoints.len();
            let mut connection = match self.connections.get(&endpoint) {
                Some(connection) => connection.clone(),
                None => match connection_with_timeout(&endpoint, self.response_timeout).await {
                    Ok(connection) => {
                        self.connections
                            .insert(endpoint.clone(), connection.clone());
                        connection
                    }
                    Err(error) => {
                        last = format!("{endpoint}: {error}");
                        continue;
                    }
                },
            };
            let reply: redis::RedisResult<redis::Value> = first.query_async(&mut connection).await;
            match reply {
                Ok(value) => {
                    self.current = self
                        .endpoints
                        .iter()
                        .position(|e| *e == endpoint)
                        .unwrap_or(0);
                    let mut values = vec![value];
                    for command in rest {
                        match command.query_async(&mut connection).await {
                            Ok(value) => values.push(value),
                            Err(error) => {
                                self.connections.remove(&endpoint);
                                bail!("{endpoint}: {error}");
                            }
                        }
                    }
                    return Ok(values);
                }
                Err(error) => {
                    last = format!("{endpoint}: {error}");
                    if let Some((target, _)) = error.redirect_node() {
                        let target = target.to_string();
                        if !self.endpoints.contains(&target) {
                            self.endpoints.push(target.clone());
                        }
                        // Follow the redirect next.
                        index = self
                            .endpoints
                            .iter()
                            .position(|e| *e == target)
                            .unwrap_or(index);
                    } else {
                        self.connections.remove(&endpoint);
                    }
                }
            }
        }
        bail!("no node accepted the command: {last}")
    }
}

/// Writes `{tag}:loop:<n>` about every 20 ms through a [`ShardClient`], recording the
/// time and outcome of every attempt.
pub struct ShardWriter {
    attempts: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ShardWriter {
    pub fn start(endpoints: Vec<String>, tag: &str) -> Self {
        let attempts: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (attempts, stop, tag) = (attempts.clone(), stop.clone(), tag.to_string());
            let mut client = ShardClient::new(endpoints);
            tokio::spawn(async move {
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = client
                        .set(&format!("{{{tag}}}:loop:{index}"), "v")
                        .await
                        .is_ok();
                    if let Ok(mut attempts) = attempts.lock() {
                        attempts.push((Instant::now(), ok));
                    }
                    index += 1;
                    tokio::time::sleep(Duration::from_millis(20).saturating_sub(started.elapsed()))
                        .await;
                }
            })
        };
        Self {
            attempts,
            stop,
            task,
        }
    }

    /// How long after `since` writes were available again: the first success after the
    /// first failure, or, when nothing failed in 100 attempts, the first success. The
    /// node may answer for a moment after it was disturbed, so a success before the
    /// first failure does not end the outage.
    pub async fn resumed_after(&self, since: Instant, give_up: Duration) -> Result<Duration> {
        loop {
            let first_resumed = self.attempts.lock().ok().and_then(|attempts| {
                let after: Vec<(Instant, bool)> = attempts
                    .iter()
                    .copied()
                    .filter(|(at, _)| *at > since)
                    .collect();
                match after.iter().position(|(_, ok)| !ok) {
                    Some(index) => after[index..].iter().find(|(_, ok)| *ok).map(|(at, _)| *at),
                    None if after.len() >= 100 => after.first().map(|(at, _)| *at),
                    None => None,
                }
            });
            if let Some(at) = first_resumed {
                return Ok(at.duration_since(since));
            }
            if since.elapsed() > give_up {
                bail!("no write succeeded within {give_up:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// Shard 0 of a Ready region with one replica: who serves it, where, and a hash tag whose
/// keys it owns. Failover scenarios disturb its primary.
pub struct FirstShard {
    pub primary: String,
    pub replica: String,
    pub primary_endpoint: String,
    pub replica_endpoint: String,
    /// Keys `{tag}:...` land in this shard.
    pub tag: String,
    /// The region's topology epoch when the scene was read.
    pub epoch: u64,
}

impl FirstShard {
    pub async fn read(
        client: &kube::Client,
        ns: &str,
        status: &meridian_api::CacheRegionStatus,
    ) -> Result<Self> {
        use anyhow::Context;
        let shard = status.shards.first().context("no shard in status")?;
        let primary = shard.primary.clone().context("shard 0 without primary")?;
        let replica = shard
            .replicas
            .first()
            .context("shard 0 without replica")?
            .clone();
        Ok(Self {
            primary_endpoint: format!("{}:6379", crate::pod_ip(client, ns, &primary).await?),
            replica_endpoint: format!("{}:6379", crate::pod_ip(client, ns, &replica).await?),
            tag: crate::key_for_shard(shard, "fo")?,
            epoch: status.epoch,
            primary,
            replica,
        })
    }

    /// Writes `{tag}:acked:<n>` = n for n < `count` on the primary and waits until the
    /// replica has them (`WAIT 1`): writes a failover must not lose. The scene is set up
    /// before any fault, so replies get the `WAIT`'s own time and more (a 300 ms limit
    /// failed the scene whenever the replica took longer than that to acknowledge).
    pub async fn write_replicated(&self, count: i64) -> Result<()> {
        const WAIT_MS: u64 = 5000;
        let mut primary = connection_with_timeout(
            &self.primary_endpoint,
            Duration::from_millis(WAIT_MS + 1000),
        )
        .await?;
        for index in 0..count {
            let _: () = redis::cmd("SET")
                .arg(format!("{{{}}}:acked:{index}", self.tag))
                .arg(index)
                .query_async(&mut primary)
                .await?;
        }
        wait_for_a_replica(&mut primary, WAIT_MS).await
    }

    /// Fails unless `endpoint` holds every write of [`Self::write_replicated`]; a replica
    /// is read as a READONLY cluster client reads it.
    pub async fn assert_replicated_on(&self, endpoint: &str, count: i64) -> Result<()> {
        let mut connection = quick_connection(endpoint).await?;
        let _: () = redis::cmd("READONLY").query_async(&mut connection).await?;
        for index in 0..count {
            let got: Option<i64> = redis::cmd("GET")
                .arg(format!("{{{}}}:acked:{index}", self.tag))
                .query_async(&mut connection)
                .await?;
            if got != Some(index) {
                bail!("acknowledged write {index} lost: {endpoint} has {got:?}");
            }
        }
        Ok(())
    }

    /// A writer that knows both nodes of the shard.
    pub fn start_writer(&self) -> ShardWriter {
        ShardWriter::start(
            vec![self.primary_endpoint.clone(), self.replica_endpoint.clone()],
            &self.tag,
        )
    }
}

/// The failover scenarios' region: `orders` / `orders-a`, 2 shards with 1 replica each,
/// applied in `ns` and waited for until Ready with its replicas listed.
pub async fn orders_region_with_replicas(
    client: &kube::Client,
    ns: &str,
) -> Result<(
    kube::Api<meridian_api::CacheRegion>,
    meridian_api::CacheRegionStatus,
)> {
    let crate::Deployed { regions, .. } =
        crate::ClusterFixture::in_region_a("orders", "orders-a", 2, 1)
            .apply(client, ns)
            .await?;
    let status = crate::wait_region(
        &regions,
        "orders-a",
        "Ready with one replica per shard",
        Duration::from_secs(300),
        |view| view.ready() && view.status.shards.iter().all(|s| s.replicas.len() == 1),
    )
    .await?;
    Ok((regions, status))
}

/// Waits until the status of `orders-a` names `pod` primary of shard 0.
pub async fn wait_shard0_primary(
    regions: &kube::Api<meridian_api::CacheRegion>,
    pod: &str,
) -> Result<meridian_api::CacheRegionStatus> {
    wait_shard0_primary_of(regions, "orders-a", pod, Duration::from_secs(60)).await
}

/// Waits until the status of CacheRegion `region` names `pod` primary of shard 0.
pub async fn wait_shard0_primary_of(
    regions: &kube::Api<meridian_api::CacheRegion>,
    region: &str,
    pod: &str,
    timeout: Duration,
) -> Result<meridian_api::CacheRegionStatus> {
    crate::wait_region(
        regions,
        region,
        "status names the promoted primary",
        timeout,
        |view| {
            view.status
                .shards
                .first()
                .and_then(|shard| shard.primary.as_deref())
                == Some(pod)
        },
    )
    .await
}
