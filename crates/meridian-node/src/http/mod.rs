//! HTTP API (port 8080): `GET/PUT/DELETE /cache/{key}` and `POST /invalidate`.
//!
//! Keys are the percent-decoded rest of the path (so they may contain '/').
//! Any node answers: a key whose slot another shard owns is forwarded to that
//! shard's primary on the same HTTP port, marked with `X-Meridian-Forwarded`
//! so a second hop is refused (421) instead of looping; writes reaching a
//! replica go to its primary. Every cache operation runs through the command
//! dispatcher as an internal client, so HTTP writes replicate, honour
//! maxmemory and fencing exactly like RESP SET / DEL.

pub mod local;
pub mod metrics;

use crate::net::Stream;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meridian_topology::{Route, key_slot};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::commands::Pending;
use crate::commands::cluster::current_map;
use crate::origin::{Fetched, HttpClient, OriginOp, http_client};
use crate::state::Shared;
use local::Reply;
use metrics::API_METRICS;

/// Marks a request that one node already forwarded.
pub const FORWARDED_HEADER: &str = "x-meridian-forwarded";
/// TTL in seconds for PUT (alternative to `?ttl=`).
pub const TTL_HEADER: &str = "x-meridian-ttl";
/// Remaining TTL in milliseconds on GET responses.
pub const TTL_MS_HEADER: &str = "x-meridian-ttl-ms";
/// A forwarded request may trigger the owner's origin read, so allow more
/// than one origin timeout.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

pub struct Api {
    shared: Arc<Shared>,
    /// This node's HTTP port, also used to reach the other nodes.
    port: u16,
    client: HttpClient,
    limits: HttpLimits,
}

impl Api {
    pub(crate) fn new(shared: Arc<Shared>, port: u16, limits: HttpLimits) -> Self {
        Api {
            shared,
            port,
            client: http_client(),
            limits,
        }
    }
}

/// What clients may hold of the HTTP API: connections at once, and time to send a
/// request's headers and its body (a client that trickles bytes must not keep a
/// connection, and its task, forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl HttpLimits {
    /// The limits `--http-max-connections`, `--http-header-timeout-ms` and
    /// `--http-body-timeout-ms` set.
    pub fn from_config(config: &crate::config::Config) -> Self {
        HttpLimits {
            max_connections: config.http_max_connections as usize,
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            body_timeout: Duration::from_millis(config.http_body_timeout_ms),
        }
    }
}

/// A refused request: status plus the message sent as `{"error": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        json_response(
            self.status,
            &serde_json::json!({ "error": self.message }),
            HeaderMap::new(),
        )
    }
}

fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
    extra: HeaderMap,
) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().extend(extra);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Serves the API until shutdown; a connection beyond `limits.max_connections` is
/// answered 503 and closed.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let api = Arc::new(Api::new(shared, port, limits));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let permit = connections.clone().try_acquire_owned();
                    let api = api.clone();
                    tokio::spawn(async move {
                        let tls = api.shared.tls.current();
                        let stream = match tls {
                            None => Stream::Plain(stream),
                            Some(tls) => match crate::tls::accept(&tls.clients, stream).await {
                                Ok(stream) => stream,
                                Err(error) => {
                                    tracing::debug!(%peer, %error, "http TLS handshake failed");
                                    return;
                                }
                            },
                        };
                        if api.shared.protected_from(peer.ip()) {
                            return refuse_protected(stream).await;
                        }
                        let Ok(permit) = permit else {
                            return refuse_connection(stream, limits.max_connections).await;
                        };
                        if let Err(error) = serve_connection(api, stream).await {
                            tracing::debug!(%peer, %error, "http connection ended with error");
                        }
                        drop(permit);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// Tells a client protected mode refuses so (403), without serving it.
async fn refuse_protected(stream: Stream) {
    let body = "{\"error\":\"protected mode: no password is set, so only loopback clients are served; set a password or --protected-mode no\"}";
    let response = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    crate::net::answer_and_close(stream, response.as_bytes()).await;
}

/// Tells a client over the connection limit so, without serving it.
async fn refuse_connection(stream: Stream, limit: usize) {
    let body = format!("{{\"error\":\"too many HTTP connections (limit {limit})\"}}");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    crate::net::answer_and_close(stream, response.as_bytes()).await;
}

/// Answers the HTTP/1 requests of one connection until the client closes it, or takes
/// longer than the header timeout to send a request's headers.
pub(crate) async fn serve_connection<I>(api: Arc<Api>, io: I) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = api.limits.header_timeout;
    let service = service_fn(move |request| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(handle(&api, request).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .await
}

async fn handle(api: &Api, request: Request<Incoming>) -> Response<Body> {
    let method = match *request.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    let response = route(api, request)
        .await
        .unwrap_or_else(ApiError::into_response);
    API_METRICS.http_request(method, response.status().as_u16());
    response
}

async fn route(api: &Api, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    authorize(&api.shared, request.headers())?;
    let path = request.uri().path().to_string();
    if let Some(raw_key) = path.strip_prefix("/cache/") {
        let key = decode_key(raw_key, api.shared.config.limits().max_bulk_len)?;
        let write = match *request.method() {
            Method::GET => false,
            Method::PUT | Method::DELETE => true,
            _ => {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET, PUT or DELETE on /cache/{key}",
                ));
            }
        };
        let (parts, body) = request.into_parts();
        let body = read_body(api, body, &parts.headers).await?;
        if write {
            // A write held by CLIENT PAUSE (a primary handover) is routed by the map in
            // force when it is released, like a held RESP write.
            api.shared.pause.wait_while(|_| true).await;
        }
        match locate(&api.shared, &key, write) {
            Location::Local => {}
            Location::Remote(host) => return forward(api, &host, &parts, body).await,
            Location::Unserved => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "hash slot not served by any shard",
                ));
            }
        }
        return match parts.method {
            Method::GET => get(api, &key).await,
            Method::PUT => put(api, &key, body, &parts).await,
            _ => delete(api, &key).await,
        };
    }
    if path == "/invalidate" {
        if request.method() != Method::POST {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST on /invalidate",
            ));
        }
        let (parts, body) = request.into_parts();
        let body = read_body(api, body, &parts.headers).await?;
        api.shared.pause.wait_while(|_| true).await;
        if let Some(host) = primary_of_replica(&api.shared) {
            return forward(api, &host, &parts, body).await;
        }
        return invalidate(api, &body).await;
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint: use /cache/{key} or /invalidate",
    ))
}

/// With --requirepass, every request needs `Authorization: Bearer <password>`.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(password) = shared.requirepass() else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if constant_time_eq(token, password.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <password>",
        )),
    }
}

/// Compares without an early exit, so timing does not reveal the password prefix.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Strict percent-decoding: every '%' must start a two-digit hex escape.
fn decode_key(raw: &str, max_len: usize) -> Result<Vec<u8>, ApiError> {
    let invalid = |why: &str| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid key: {why}"));
    let bytes = raw.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .filter(|digits| digits.iter().all(u8::is_ascii_hexdigit))
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .ok_or_else(|| invalid("bad percent-encoding"))?;
            key.push(hex);
            index += 3;
        } else {
            key.push(byte);
            index += 1;
        }
    }
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    if key.len() > max_len {
        return Err(invalid("longer than proto-max-bulk-len"));
    }
    Ok(key)
}

async fn read_body(api: &Api, body: Incoming, headers: &HeaderMap) -> Result<Bytes, ApiError> {
    let limit = api.shared.config.limits().max_bulk_len;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than proto-max-bulk-len ({limit} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let timeout = api.limits.body_timeout;
    let Ok(collected) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await
    else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("body not received within {} ms", timeout.as_millis()),
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read body: {error}"),
        )),
    }
}

enum Location {
    Local,
    /// Host (ip from the map, or the replica's primary) serving the request.
    Remote(String),
    Unserved,
}

fn locate(shared: &Shared, key: &[u8], write: bool) -> Location {
    if let Some(map) = current_map(shared) {
        return match map.route(key_slot(key), &shared.node_id, !write) {
            Route::Local => Location::Local,
            Route::Moved(primary) => Location::Remote(primary.ip.clone()),
            Route::Unserved => Location::Unserved,
        };
    }
    // a managed node that restarted serves nothing until told its role (as over RESP)
    if !shared.repl.knows_its_role() {
        return Location::Unserved;
    }
    match primary_of_replica(shared) {
        Some(host) if write => Location::Remote(host),
        _ => Location::Local,
    }
}

/// The primary's host when this node is a replica outside cluster mode (in
/// cluster mode the map routes writes to the shard's primary).
fn primary_of_replica(shared: &Shared) -> Option<String> {
    if let Some(map) = current_map(shared) {
        return map
            .shards
            .iter()
            .find(|shard| {
                shard
                    .replicas
                    .iter()
                    .any(|replica| replica.id == shared.node_id)
            })
            .map(|shard| shard.primary.ip.clone());
    }
    shared.repl.target().map(|target| target.host)
}

async fn forward(
    api: &Api,
    host: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    if parts.headers.contains_key(FORWARDED_HEADER) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!("forwarded request reached a node that does not own the key (owner: {host})"),
        ));
    }
    let authority = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", api.port),
        _ => format!("{host}:{}", api.port),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{authority}{path}"))
        .header(FORWARDED_HEADER, "1");
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            builder = builder.header(name, value);
        }
    }
    if let Some(value) = parts.headers.get(TTL_HEADER) {
        builder = builder.header(TTL_HEADER, value);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error.to_string()))?;
    let bad_gateway = |error: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("forwarding to {authority} failed: {error}"),
        )
    };
    let exchange = async {
        let response = match api.shared.tls.dialer() {
            None => api
                .client
                .request(request)
                .await
                .map_err(|error| error.to_string()),
            // the owner's API speaks TLS too: one connection for this request
            Some(_) => send_over_tls(&api.shared, host, api.port, request).await,
        }
        .map_err(bad_gateway)?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|error| bad_gateway(error.to_string()))?
            .to_bytes();
        Ok::<_, ApiError>((parts, body))
    };
    let (remote, body) = tokio::time::timeout(FORWARD_TIMEOUT, exchange)
        .await
        .map_err(|_| bad_gateway("timed out".to_string()))??;
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = remote.status;
    for name in [header::CONTENT_TYPE, header::WWW_AUTHENTICATE] {
        if let Some(value) = remote.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    if let Some(value) = remote.headers.get(TTL_MS_HEADER) {
        response.headers_mut().insert(TTL_MS_HEADER, value.clone());
    }
    Ok(response)
}

/// Sends `request` to the API of the node at `host` over a TLS connection of its own.
async fn send_over_tls(
    shared: &Shared,
    host: &str,
    port: u16,
    request: Request<Body>,
) -> Result<Response<Incoming>, String> {
    let stream = shared
        .tls
        .dial(host, port)
        .await
        .map_err(|error| error.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())
}

/// Maps a command error to an HTTP status.
fn command_error(message: String) -> ApiError {
    let prefix = message.split(' ').next().unwrap_or_default();
    let status = match prefix {
        "MOVED" | "ASK" | "READONLY" => StatusCode::MISDIRECTED_REQUEST,
        "CLUSTERDOWN" | "NOREPLICAS" | "TRYAGAIN" => StatusCode::SERVICE_UNAVAILABLE,
        "OOM" => StatusCode::INSUFFICIENT_STORAGE,
        // the key holds a list or a hash: the API reads and writes strings only
        "WRONGTYPE" => StatusCode::CONFLICT,
        _ if message.starts_with("ERR origin write failed") => StatusCode::BAD_GATEWAY,
        _ if message.starts_with("ERR write-behind queue full") => StatusCode::SERVICE_UNAVAILABLE,
        _ if message.starts_with("ERR invalid expire") => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, message)
}

/// Finishes origin work a command left (write-through) and returns its reply.
async fn settle(shared: &Shared, reply: Option<Reply>, pending: Option<Pending>) -> Option<Reply> {
    match pending {
        Some(Pending::Origin(op)) => {
            let mut client = local::internal_client(shared, false);
            let mut out = crate::protocol::Out::capture();
            let exec = crate::exec::ExecContext::new(crate::exec::Caller::Http);
            crate::origin::continuation::complete(shared, exec, &mut client, &mut out, op).await;
            if let Some(Pending::Regions(wait)) = client.pending.take() {
                shared.regions.finish(wait, &mut out).await;
            }
            out.into_reply()
        }
        Some(Pending::Regions(wait)) => {
            let mut out = crate::protocol::Out::capture();
            shared.regions.finish(wait, &mut out).await;
            out.into_reply()
        }
        _ => reply,
    }
}

async fn get(api: &Api, key: &[u8]) -> Result<Response<Body>, ApiError> {
    let shared = &api.shared;
    let (reply, pending) = local::run(shared, &[b"GET", key], true);
    let value = match (reply, pending) {
        // a miss under read-through: HTTP reports origin failures (502), unlike RESP
        (_, Some(Pending::Origin(OriginOp::Read { key }))) => {
            let origin = shared
                .origin
                .clone()
                .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no origin"))?;
            match origin
                .read_through(&key, || crate::origin::continuation::fill_later(shared))
                .await
            {
                Ok(Fetched::Found(value)) => value,
                Ok(Fetched::Missing) => return Err(not_found()),
                Err(error) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("origin read failed: {error}"),
                    ));
                }
            }
        }
        (Some(Reply::Bulk(value)), _) => value,
        (Some(Reply::Nil), _) => return Err(not_found()),
        (Some(Reply::Error(error)), _) => return Err(command_error(error)),
        (other, _) => return Err(unexpected(other)),
    };
    let mut response = Response::new(Full::new(value));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let (Some(Reply::Int(ttl)), _) = local::run(shared, &[b"PTTL", key], true)
        && ttl >= 0
    {
        response
            .headers_mut()
            .insert(TTL_MS_HEADER, HeaderValue::from(ttl));
    }
    Ok(response)
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "key not found")
}

fn unexpected(reply: Option<Reply>) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected reply {reply:?}"),
    )
}

/// TTL in seconds from `?ttl=` or `X-Meridian-TTL` (the query wins).
fn ttl_of(parts: &http::request::Parts) -> Result<Option<u64>, ApiError> {
    let from_query = parts.uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("ttl="))
            .map(str::to_string)
    });
    let from_header = || {
        parts
            .headers
            .get(TTL_HEADER)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    let Some(text) = from_query.or_else(from_header) else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 && seconds <= i64::MAX as u64 / 1000 => Ok(Some(seconds)),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid ttl '{text}': use a positive number of seconds"),
        )),
    }
}

async fn put(
    api: &Api,
    key: &[u8],
    value: Bytes,
    parts: &http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    let ttl = ttl_of(parts)?.map(|seconds| seconds.to_string());
    let mut args: Vec<&[u8]> = vec![b"SET", key, &value];
    if let Some(ttl) = &ttl {
        args.extend_from_slice(&[b"EX", ttl.as_bytes()]);
    }
    let (reply, pending) = local::run(&api.shared, &args, false);
    match settle(&api.shared, reply, pending).await {
        Some(Reply::Simple(_)) => Ok(empty(StatusCode::NO_CONTENT)),
        Some(Reply::Error(error)) => Err(command_error(error)),
        other => Err(unexpected(other)),
    }
}

async fn delete(api: &Api, key: &[u8]) -> Result<Response<Body>, ApiError> {
    let (reply, pending) = local::run(&api.shared, &[b"DEL", key], false);
    match settle(&api.shared, reply, pending).await {
        Some(Reply::Int(0)) => Err(not_found()),
        Some(Reply::Int(_)) => Ok(empty(StatusCode::NO_CONTENT)),
        Some(Reply::Error(error)) => Err(command_error(error)),
        other => Err(unexpected(other)),
    }
}

#[derive(serde::Deserialize)]
struct InvalidateRequest {
    pattern: String,
}

/// `POST /invalidate {"pattern": "user:*"}`: drops matching cached entries
/// (the origin is not told: invalidation only forgets copies).
async fn invalidate(api: &Api, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let request: InvalidateRequest = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected JSON {{\"pattern\": \"...\"}}: {error}"),
        )
    })?;
    if request.pattern.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty pattern"));
    }
    let shared = &api.shared;
    let pattern = request.pattern.as_bytes();
    let deleted = crate::commands::admin::delete_matching(shared, None, pattern)
        .map_err(|error| command_error(error.to_string()))?;
    // every other primary of the region and every peer region drop the pattern too
    let ack = shared.regions.publish_pattern(pattern);
    let fanout = crate::region::fanout::Fanout::plan(shared, pattern);
    if ack.is_some() || fanout.is_some() {
        let wait = crate::region::RegionWait {
            ack,
            reply: Default::default(),
            fanout,
        };
        let mut out = crate::protocol::Out::capture();
        shared.regions.finish(wait, &mut out).await;
        if let Some(Reply::Error(error)) = out.into_reply() {
            return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, error));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "deleted": deleted }),
        HeaderMap::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_strictly() {
        assert_eq!(decode_key("user%3A1", 100).ok(), Some(b"user:1".to_vec()));
        assert_eq!(decode_key("a/b%2Fc", 100).ok(), Some(b"a/b/c".to_vec()));
        assert_eq!(decode_key("%FF%00", 100).ok(), Some(vec![0xff, 0]));
        for bad in ["", "%", "%4", "%zz", "a%+1", "%-1"] {
            assert!(decode_key(bad, 100).is_err(), "{bad:?} accepted");
        }
        assert!(decode_key("abcd", 3).is_err());
    }

    #[test]
    fn password_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
    }

    #[test]
    fn errors_map_to_statuses() {
        let status = |text: &str| command_error(text.to_string()).status;
        assert_eq!(
            status("MOVED 1 127.0.0.1:1"),
            StatusCode::MISDIRECTED_REQUEST
        );
        assert_eq!(
            status("OOM command not allowed"),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            status("ERR origin write failed: x"),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status("ERR write-behind queue full (3 keys pending); retry later"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status("CLUSTERDOWN Hash slot not served"),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
