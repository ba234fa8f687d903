//! Optional HTTP origin behind the cache.
//!
//! Read-through: a GET (RESP or HTTP) that misses asks the origin
//! (`GET <origin>/<key>`); a 200 fills the cache with the body and the default
//! TTL and is served, a 404 stays a miss. Concurrent misses of one key share a
//! single origin request (single-flight). When the origin fails (other status,
//! timeout, connection refused) HTTP answers 502 and RESP GET answers nil: a
//! Redis client cannot tell a new error reply from a bug, and for a cache a
//! miss is the honest degraded answer; the failure is logged and counted in
//! `meridian_origin_requests_total{op="get",outcome="error"}`.
//!
//! Write-through: HTTP PUT / DELETE and single-key RESP SET / DEL call the
//! origin first (`PUT` / `DELETE <origin>/<key>`) and change the cache only
//! when it succeeded, otherwise the client gets `-ERR origin write failed: …`
//! (HTTP 502). Writes inside MULTI/EXEC, multi-key DEL and replication streams
//! do not go to the origin.
//!
//! The dispatcher is synchronous, so the origin work runs as an [`OriginOp`]
//! continuation that the connection (or the HTTP handler) finishes with
//! `continuation::complete`.
//!
//! Write-behind (exclusive with write-through): the same writes are acknowledged
//! once the cache has them and queued per key ([`write_behind`]); the flusher
//! ([`flusher`]) sends them to the origin later. A write to a key not queued yet is
//! refused while the queue is full. The queue is replicated: see `docs/node.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use tokio::sync::watch;

use crate::commands::id::Cmd;
use crate::exec::ExecContext;
use crate::http::metrics::API_METRICS;

pub mod continuation;
pub mod flusher;
pub mod write_behind;

use write_behind::{PendingOp, PendingWrite, WriteBehind, WriteBehindConfig};

/// The internal command carrying the write-behind queue in the replication stream:
/// `QUEUED <key> <version> PUT <value>` / `QUEUED <key> <version> DELETE` after a
/// queued write's effects, `FLUSHED <key> <version>` once the origin took it.
pub const WRITE_BEHIND_COMMAND: &[u8] = b"MERIDIAN.WRITEBEHIND";
pub const QUEUED: &[u8] = b"QUEUED";
pub const FLUSHED: &[u8] = b"FLUSHED";

/// The HTTP client used for the origin and for forwarding between nodes.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Characters kept literal in the origin path: unreserved ones and '/', so
/// hierarchical keys (`user/42`) map onto hierarchical origin paths.
const ORIGIN_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Base URL without trailing '/', e.g. `http://origin.default:8000/items`.
    pub url: String,
    pub read_through: bool,
    pub write_through: bool,
    pub timeout: Duration,
    /// TTL of entries filled from the origin; 0 = none.
    pub default_ttl_seconds: u64,
    /// Write-behind queue settings (None: write-behind is off).
    pub write_behind: Option<WriteBehindConfig>,
}

/// What the origin said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Found(Bytes),
    Missing,
}

/// Outcome of one origin fetch, shared with every waiter of a flight.
type FetchResult = Result<Fetched, String>;

/// Origin work a command left for the connection to finish asynchronously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginOp {
    /// GET missed: fetch (single-flight), fill, reply with the value or nil.
    Read { key: Vec<u8> },
    /// SET / DEL with write-through: origin first, then the command itself.
    Write { args: Vec<Vec<u8>> },
}

pub struct Origin {
    pub config: OriginConfig,
    client: HttpClient,
    /// The write-behind queue, when write-behind is on.
    pub write_behind: Option<WriteBehind>,
    /// Fetches in progress by key; followers wait on the leader's result.
    flights: Mutex<HashMap<Vec<u8>, watch::Receiver<Option<FetchResult>>>>,
}

impl Origin {
    pub fn new(config: OriginConfig) -> Self {
        Origin {
            write_behind: config.write_behind.map(WriteBehind::new),
            config: OriginConfig {
                url: config.url.trim_end_matches('/').to_string(),
                ..config
            },
            client: http_client(),
            flights: Mutex::new(HashMap::new()),
        }
    }

    fn url_for(&self, key: &[u8]) -> String {
        format!("{}/{}", self.config.url, percent_encode(key, ORIGIN_PATH))
    }

    /// One HTTP exchange with the origin, bounded by the configured timeout.
    async fn call(
        &self,
        method: http::Method,
        key: &[u8],
        body: Bytes,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let url = self.url_for(key);
        let request = http::Request::builder()
            .method(method)
            .uri(&url)
            .body(Full::new(body))
            .map_err(|error| format!("invalid origin request {url}: {error}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| format!("{url}: {error}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| format!("{url}: reading body: {error}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| format!("{url}: timed out after {:?}", self.config.timeout))?
    }

    async fn fetch(&self, key: &[u8]) -> FetchResult {
        let result = match self.call(http::Method::GET, key, Bytes::new()).await {
            Ok((status, body)) if status == http::StatusCode::OK => Ok(Fetched::Found(body)),
            Ok((status, _)) if status == http::StatusCode::NOT_FOUND => Ok(Fetched::Missing),
            Ok((status, _)) => Err(format!("origin answered {status}")),
            Err(error) => Err(error),
        };
        let outcome = match &result {
            Ok(Fetched::Found(_)) => "hit",
            Ok(Fetched::Missing) => "miss",
            Err(_) => "error",
        };
        API_METRICS.origin_request("get", outcome);
        if let Err(error) = &result {
            tracing::warn!(key = %String::from_utf8_lossy(key), %error, "origin read failed");
        }
        result
    }

    /// Sends a write (PUT with the value, or DELETE) to the origin; any 2xx
    /// (and 404 for DELETE: already gone) counts as success.
    pub async fn write(&self, key: &[u8], value: Option<Bytes>) -> Result<(), String> {
        let result = self.send(key, value).await;
        if let Err(error) = &result {
            tracing::warn!(key = %String::from_utf8_lossy(key), %error, "origin write failed");
        }
        result
    }

    /// [`Origin::write`] without its log line (the write-behind flusher logs a
    /// round's failures once).
    pub async fn send(&self, key: &[u8], value: Option<Bytes>) -> Result<(), String> {
        let (op, method, body) = match value {
            Some(value) => ("put", http::Method::PUT, value),
            None => ("delete", http::Method::DELETE, Bytes::new()),
        };
        let result = match self.call(method, key, body).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, _)) if op == "delete" && status == http::StatusCode::NOT_FOUND => Ok(()),
            Ok((status, _)) => Err(format!("origin answered {status}")),
            Err(error) => Err(error),
        };
        API_METRICS.origin_request(op, if result.is_ok() { "ok" } else { "error" });
        result
    }

    /// Fetches `key` once for all concurrent callers, filling the cache from
    /// the leader's task so it completes even when the first caller goes away:
    /// the leader calls `start_fill` and its task gives the fetched value to the
    /// fill it returned.
    pub async fn read_through<Fill>(
        self: &Arc<Self>,
        key: &[u8],
        start_fill: impl FnOnce() -> Fill,
    ) -> FetchResult
    where
        Fill: FnOnce(&[u8], &Bytes) + Send + 'static,
    {
        let (mut receiver, follower) = {
            let mut flights = self.flights.lock();
            match flights.get(key) {
                Some(receiver) => (receiver.clone(), true),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    flights.insert(key.to_vec(), receiver.clone());
                    let origin = self.clone();
                    let key = key.to_vec();
                    let fill = start_fill();
                    tokio::spawn(async move {
                        let result = origin.fetch(&key).await;
                        if let Ok(Fetched::Found(value)) = &result {
                            fill(&key, value);
                        }
                        let _ = sender.send(Some(result));
                        origin.flights.lock().remove(&key);
                    });
                    (receiver, false)
                }
            }
        };
        if follower {
            API_METRICS.singleflight_waiters.inc();
        }
        let result = receiver
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|value| value.clone());
        if follower {
            API_METRICS.singleflight_waiters.dec();
        }
        result.unwrap_or_else(|| Err("origin fetch abandoned".to_string()))
    }
}

/// Called by the dispatcher before a write runs: SET / single-key DEL under
/// write-through become an origin continuation instead of running now.
pub fn intercept_write(
    origin: Option<&Origin>,
    exec: ExecContext,
    command: Cmd,
    args: &[&[u8]],
) -> Option<OriginOp> {
    let origin = origin?;
    if !origin.config.write_through || !exec.uses_origin() {
        return None;
    }
    let single_key = match command {
        Cmd::Set => true,
        Cmd::Del | Cmd::Unlink => args.len() == 2,
        _ => false,
    };
    single_key.then(|| OriginOp::Write {
        args: args.iter().map(|arg| arg.to_vec()).collect(),
    })
}

/// Called by the dispatcher for a write about to run under its shard lock: the
/// queue and key a write-behind write is queued under (the writes write-through
/// intercepts: SET and single-key DEL / UNLINK of a client or the HTTP API).
pub fn write_behind_key<'a>(
    origin: Option<&'a Origin>,
    exec: ExecContext,
    command: Cmd,
    args: &[&'a [u8]],
) -> Option<(&'a WriteBehind, &'a [u8])> {
    let queue = origin?.write_behind.as_ref()?;
    if !exec.uses_origin() {
        return None;
    }
    let single_key = match command {
        Cmd::Set => true,
        Cmd::Del | Cmd::Unlink => args.len() == 2,
        _ => false,
    };
    single_key.then(|| args.get(1).map(|key| (queue, *key)))?
}

/// Whether an origin fill of `args`' key must be refused: a write-behind write of
/// the key waits for the origin, so the fetched value is older than the cache's
/// (checked under the key's shard lock, as writes are queued).
pub fn fill_is_stale(origin: Option<&Origin>, exec: ExecContext, args: &[&[u8]]) -> bool {
    matches!(exec.caller, crate::exec::Caller::OriginFill { .. })
        && origin
            .and_then(|origin| origin.write_behind.as_ref())
            .zip(args.get(1))
            .is_some_and(|(queue, key)| queue.contains(key))
}

/// Appends the replication stream's record of a queued write to `buf`.
pub fn encode_queued(buf: &mut Vec<u8>, write: &PendingWrite) {
    let version = write.version.to_string();
    let mut args: Vec<&[u8]> = vec![WRITE_BEHIND_COMMAND, QUEUED, &write.key, version.as_bytes()];
    match &write.op {
        PendingOp::Put(value) => args.extend_from_slice(&[b"PUT", value]),
        PendingOp::Delete => args.push(b"DELETE"),
    }
    crate::replication::backlog::encode_command(buf, &args);
}

/// Called by the dispatcher after a read ran and reported a miss: a GET that
/// found nothing under read-through becomes an origin continuation (the
/// dispatcher takes its nil reply back).
pub fn intercept_miss(
    origin: Option<&Origin>,
    exec: ExecContext,
    command: Cmd,
    args: &[&[u8]],
) -> Option<OriginOp> {
    let origin = origin?;
    if command != Cmd::Get || !origin.config.read_through || !exec.uses_origin() {
        return None;
    }
    let key = args.get(1)?;
    // a pending write-behind write is newer than the origin's copy: a deleted (or
    // evicted) key stays a miss until the origin has the write
    if origin
        .write_behind
        .as_ref()
        .is_some_and(|queue| queue.contains(key))
    {
        return None;
    }
    Some(OriginOp::Read { key: key.to_vec() })
}

/// INFO's `# Origin` section.
pub fn info_section(origin: &Origin) -> String {
    let mode = if origin.write_behind.is_some() {
        "write-behind"
    } else if origin.config.write_through {
        "write-through"
    } else {
        "none"
    };
    let mut text = format!(
        "origin_read_through:{}\r\norigin_write_mode:{mode}\r\n",
        u8::from(origin.config.read_through)
    );
    if let Some(queue) = &origin.write_behind {
        let stats = queue.stats(std::time::Instant::now());
        text.push_str(&format!(
            "write_behind_pending:{}\r\nwrite_behind_max_keys:{}\r\nwrite_behind_oldest_age_ms:{}\r\nwrite_behind_flushed:{}\r\nwrite_behind_failures:{}\r\nwrite_behind_refused:{}\r\n",
            stats.depth,
            queue.config.max_keys,
            stats.oldest_age.as_millis(),
            stats.flushed,
            stats.failures,
            stats.refused,
        ));
    }
    text
}

/// Refuses origin flags that contradict each other (checked at start).
pub fn check(config: &crate::config::Config) -> Result<(), String> {
    if !config.origin_write_behind {
        return Ok(());
    }
    if config.origin_write_through {
        return Err(
            "--origin-write-behind and --origin-write-through exclude each other: a write goes to the origin before (write-through) or after (write-behind) the cache, choose one"
                .to_string(),
        );
    }
    if config.origin_url.as_deref().is_none_or(str::is_empty) {
        return Err("--origin-write-behind needs --origin-url".to_string());
    }
    Ok(())
}

/// Reads the origin-related flags into a configuration (None without a URL).
pub fn config_from(config: &crate::config::Config) -> Option<OriginConfig> {
    let url = config.origin_url.clone().filter(|url| !url.is_empty())?;
    Some(OriginConfig {
        url,
        read_through: config.origin_read_through,
        write_through: config.origin_write_through,
        timeout: Duration::from_millis(config.origin_timeout_ms.max(1)),
        default_ttl_seconds: config.default_ttl_seconds,
        write_behind: config.origin_write_behind.then(|| WriteBehindConfig {
            max_keys: usize::try_from(config.origin_write_behind_max_keys).unwrap_or(usize::MAX),
            flush_interval: Duration::from_millis(config.origin_write_behind_flush_interval_ms),
            batch: usize::try_from(config.origin_write_behind_batch).unwrap_or(usize::MAX),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_origin_paths() {
        let origin = Origin::new(OriginConfig {
            url: "http://127.0.0.1:9/items/".into(),
            read_through: true,
            write_through: false,
            timeout: Duration::from_millis(10),
            default_ttl_seconds: 0,
            write_behind: None,
        });
        assert_eq!(
            origin.url_for(b"user:1"),
            "http://127.0.0.1:9/items/user%3A1"
        );
        assert_eq!(origin.url_for(b"a/b c"), "http://127.0.0.1:9/items/a/b%20c");
        assert_eq!(origin.url_for(b"\xff?"), "http://127.0.0.1:9/items/%FF%3F");
    }
}
