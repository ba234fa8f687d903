//! Load the scenarios keep on a region while they disturb it: a writer whose acknowledged
//! writes can be checked afterwards, and bulk preloading.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use redis::cluster_async::ClusterConnection;

use crate::{cluster_connection, primary_endpoints, redis_cluster_check};

/// Writes `load:<n>` = n through a cluster client until stopped. A write is retried with
/// the same key until acknowledged, so the acknowledged writes are `load:0..acked()`.
pub struct AckedWriter {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<usize>>,
}

impl AckedWriter {
    /// Starts writing through a cluster client seeded with `endpoints`; fails only when
    /// more than `max_failures` attempts failed in all.
    pub fn start(endpoints: Vec<String>, max_failures: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let task = {
            let stop = stop.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut connection = cluster_connection(&endpoints).await?;
                let mut failures = 0usize;
                let mut index = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let written: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(format!("load:{index}"))
                        .arg(index)
                        .query_async(&mut connection)
                        .await;
                    match written {
                        Ok(()) => {
                            index += 1;
                            acked.store(index, Ordering::Relaxed);
                        }
                        Err(error) => {
                            // Retried with the same key: the client refreshes its slot map.
                            failures += 1;
                            if failures > max_failures {
                                bail!("writer keeps failing: {error}");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(failures)
            })
        };
        Self { stop, acked, task }
    }

    /// How many writes were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops the writer; returns (acknowledged writes, failed attempts).
    pub async fn stop(self) -> Result<(usize, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await??;
        Ok((self.acked.load(Ordering::Relaxed), failures))
    }
}

/// Fails unless every acknowledged `load:<n>` (n < `acked`) reads back as n.
pub async fn assert_acked_writes(connection: &mut ClusterConnection, acked: usize) -> Result<()> {
    for index in 0..acked {
        let value: Option<usize> = redis::cmd("GET")
            .arg(format!("load:{index}"))
            .query_async(connection)
            .await?;
        if value != Some(index) {
            bail!("acknowledged write load:{index} reads {value:?}");
        }
    }
    Ok(())
}

/// Writes `<prefix><n>` = `value-<n>` for n in `0..count`, many at a time (a cluster
/// pipeline may not cross slots, concurrent commands on the multiplexed connections can).
pub async fn preload(connection: &mut ClusterConnection, prefix: &str, count: usize) -> Result<()> {
    const IN_FLIGHT: usize = 64;
    futures::stream::iter(0..count)
        .map(|index| {
            let mut connection = connection.clone();
            async move {
                redis::cmd("SET")
                    .arg(format!("{prefix}{index}"))
                    .arg(format!("value-{index}"))
                    .query_async::<()>(&mut connection)
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(())
}

/// Fails unless every `<prefix><n>` for n in `indexes` reads `value-<n>` (read many at a
/// time, like [`preload`]).
pub async fn assert_preloaded(
    connection: &mut ClusterConnection,
    prefix: &str,
    indexes: impl IntoIterator<Item = usize>,
) -> Result<()> {
    const IN_FLIGHT: usize = 64;
    futures::stream::iter(indexes)
        .map(|index| {
            let mut connection = connection.clone();
            async move {
                let value: Option<String> = redis::cmd("GET")
                    .arg(format!("{prefix}{index}"))
                    .query_async(&mut connection)
                    .await?;
                if value.as_deref() != Some(format!("value-{index}").as_str()) {
                    bail!("{prefix}{index} reads {value:?}");
                }
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// After a resharding under [`AckedWriter`] load: every preloaded `<prefix><n>` (n below
/// `preloaded`) and every acknowledged write reads back through a fresh cluster client,
/// and `redis-cli --cluster check` finds every slot served by the primaries `status`
/// names, no slot left MIGRATING or IMPORTING (a warning), and exactly those keys:
/// nothing lost or duplicated.
pub async fn assert_no_key_lost(
    client: &kube::Client,
    ns: &str,
    status: &meridian_api::CacheRegionStatus,
    prefix: &str,
    preloaded: usize,
    acked: usize,
) -> Result<()> {
    let endpoints = primary_endpoints(client, ns, status).await?;
    let mut connection = cluster_connection(&endpoints).await?;
    assert_preloaded(&mut connection, prefix, 0..preloaded).await?;
    assert_acked_writes(&mut connection, acked).await?;
    let said = redis_cluster_check(&endpoints[0])?;
    let expected = format!("{} keys in {} masters", preloaded + acked, endpoints.len());
    if !said.contains(&expected) || said.contains("[WARNING]") {
        bail!(
            "redis-cli --cluster check {} (expected {expected:?}, no warning): {said}",
            endpoints[0]
        );
    }
    Ok(())
}

/// `GET key` through a cluster client (or a connection to one node).
pub async fn get(
    connection: &mut (impl redis::aio::ConnectionLike + Send),
    key: &str,
) -> Result<Option<String>> {
    Ok(redis::cmd("GET").arg(key).query_async(connection).await?)
}

/// `SET key value` through a cluster client (or a connection to one node).
pub async fn set(
    connection: &mut (impl redis::aio::ConnectionLike + Send),
    key: &str,
    value: &str,
) -> Result<()> {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(connection)
        .await?;
    Ok(())
}

/// Polls until none of `keys` is readable in the region (an invalidation from another
/// region arrived); returns how long that took, or fails after `bound`.
pub async fn wait_gone(
    connection: &mut ClusterConnection,
    keys: &[String],
    bound: Duration,
) -> Result<Duration> {
    let started = std::time::Instant::now();
    loop {
        let mut left = Vec::new();
        for key in keys {
            if let Some(value) = get(connection, key).await? {
                left.push(format!("{key}={value}"));
            }
        }
        if left.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > bound {
            bail!("still readable after {bound:?}: {}", left.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
