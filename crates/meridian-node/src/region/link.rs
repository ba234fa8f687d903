//! The region-link wire protocol (RESP framing over TCP, port 16379):
//!
//! ```text
//! LINK.HELLO <cluster> <region> <password> [<user>] -> +OK | -DENIED <reason> (then closed)
//! LINK.TOPOLOGY                               -> $<json TopologyMap> | $-1 (standalone)
//! LINK.FEATURES                               -> $<space-separated features>
//! LINK.EVENT <kind> <target> <hlc> <region-id> <origin-region> <origin-ms> [<value> <ttl-ms>]
//!                                             -> +OK | -MOVED <slot> | -ERR ...
//! ```
//! kind: `key` (drop key), `pattern` (drop glob), `slot` (drop slot), `set` (store a
//! string), `restore` (store a value of another type from its DUMP payload).
//! Features: `restore`. A peer that predates LINK.FEATURES answers it with an error
//! and is sent `key` instead of `restore` events, so mixed versions stay correct
//! during an upgrade (the peer drops its copy instead of keeping a stale one).
//! Events are pipelined (a window of requests in flight); replies come in order.
//!
//! With `--tls-dir` the listener only speaks TLS and outbound links verify the
//! peer's certificate against ca.crt, for the host (IP address or DNS name) of the
//! seed or primary address they dial, or for `--tls-server-name` when given (see
//! [`crate::tls`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Event, EventKind, REGION_METRICS, RefusalReason, Version, peer_label};
use crate::exec::{Caller, ExecContext, RegionGuard};
use crate::http::local::{self, Reply};
use crate::net::Stream;
use crate::protocol::{
    Decoded, Limits, Parsed, Reply as RespReply, ReplyLimits, parse_command, parse_reply,
};
use crate::state::Shared;
use crate::tls::ClientTls;
use meridian_topology::{Route, TopologyMap};

/// Largest link request (a replicated value plus its envelope); a longer one
/// is refused from its header on, before it is buffered.
const MAX_LINK_REQUEST: usize = 600 * 1024 * 1024;
/// Most arguments a link request has (LINK.EVENT with a value has 9): the
/// argument count is refused beyond it, before anything is allocated for it.
const MAX_LINK_ARGS: usize = 16;

/// What this node's link server understands beyond the first protocol version.
const FEATURES: &str = "restore";

/// Accepts region links from peer regions until shutdown; when the node has TLS,
/// only connections completing a TLS handshake are served.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(error) = accept_link(shared, stream).await {
                            tracing::debug!(%peer, %error, "region link ended");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "region link accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn accept_link(shared: Arc<Shared>, stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let Some(tls) = shared.tls.current() else {
        return serve_link(shared, stream, peer).await;
    };
    match crate::tls::accept(&tls.links, stream).await {
        Ok(stream) => serve_link(shared, stream, peer).await,
        Err(error) => {
            tracing::warn!(%peer, %error, "region link TLS handshake failed");
            Ok(())
        }
    }
}

/// Why a link is dropped: the metric reason and the error sent to the peer.
#[derive(Debug)]
struct Refusal {
    reason: RefusalReason,
    error: String,
}

impl Refusal {
    fn new(reason: RefusalReason, error: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            error: error.into(),
        }
    }
}

pub(crate) async fn serve_link<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut stream: S,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let limits = Limits {
        max_bulk_len: shared.config.limits().max_bulk_len,
        max_multibulk_len: MAX_LINK_ARGS,
        max_query_buffer: MAX_LINK_REQUEST,
        unauthenticated: false,
    };
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Vec::new();
    let mut peer_region: Option<String> = None;
    loop {
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        let mut position = 0;
        let mut refused = None;
        loop {
            // a peer that has not said hello yet is held to small requests
            let limits = Limits {
                unauthenticated: peer_region.is_none(),
                ..limits
            };
            match parse_command(&input[position..], &limits) {
                Ok(Parsed::Command { args, consumed, .. }) => {
                    let base = position;
                    position += consumed;
                    let argv: Vec<&[u8]> = args
                        .iter()
                        .map(|range| &input[base + range.start..base + range.end])
                        .collect();
                    if argv.is_empty() {
                        continue;
                    }
                    // An event changes data and moves the replication offset: it waits for
                    // a CLIENT PAUSE to end (a primary handover), then checks ownership
                    // against the map in force, so a deposed primary answers MOVED.
                    if shared.pause.current().is_some()
                        && argv[0].eq_ignore_ascii_case(b"LINK.EVENT")
                    {
                        if !output.is_empty() {
                            stream.write_all(&output).await?;
                            stream.flush().await?;
                            output.clear();
                        }
                        shared.pause.wait_while(|_| true).await;
                    }
                    match handle_request(&shared, &mut peer_region, &argv) {
                        Ok(reply) => output.extend_from_slice(&reply),
                        Err(refusal) => {
                            refused = Some(refusal);
                            break;
                        }
                    }
                }
                Ok(Parsed::Incomplete { min_len }) => {
                    // refused from its header on, before buffering it
                    if min_len > MAX_LINK_REQUEST {
                        refused = Some(Refusal::new(
                            RefusalReason::FrameTooLarge,
                            format!(
                                "ERR link request of at least {min_len} bytes, more than {MAX_LINK_REQUEST}"
                            ),
                        ));
                    }
                    break;
                }
                Err(error) => {
                    refused = Some(Refusal::new(
                        RefusalReason::Protocol,
                        format!("ERR Protocol error: {error}"),
                    ));
                    break;
                }
            }
        }
        input.advance(position);
        if let Some(refusal) = &refused {
            let peer = peer_region.as_deref().unwrap_or("unknown");
            let reason = refusal.reason.label();
            if refusal.reason == RefusalReason::Denied {
                // the handshake check logged what the peer claimed
                tracing::debug!(%addr, reason, error = %refusal.error, "region link refused");
            } else {
                tracing::warn!(%addr, peer, reason, error = %refusal.error, "region link refused");
            }
            shared
                .regions
                .record_refusal(peer_region.as_deref(), refusal.reason, &refusal.error);
            output.extend_from_slice(&error_reply(&refusal.error));
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            // TLS holds written records until flushed
            stream.flush().await?;
            output.clear();
        }
        if refused.is_some() {
            stream.shutdown().await.ok();
            return Ok(());
        }
    }
}

/// Answers one request; Err drops the link (refused handshake, skewed clock).
fn handle_request(
    shared: &Arc<Shared>,
    peer_region: &mut Option<String>,
    argv: &[&[u8]],
) -> Result<Vec<u8>, Refusal> {
    let name = argv[0].to_ascii_uppercase();
    let denied = |error: String| Refusal::new(RefusalReason::Denied, error);
    let Some(region) = peer_region.as_deref() else {
        if name != b"LINK.HELLO" || !(4..=5).contains(&argv.len()) {
            return Err(denied(
                "DENIED say LINK.HELLO <cluster> <region> <password> first".into(),
            ));
        }
        let settings = &shared.regions.settings;
        if argv[1] != settings.cluster.as_bytes() {
            tracing::warn!(cluster = %String::from_utf8_lossy(argv[1]), "refused region link from another cluster");
            return Err(denied(format!(
                "DENIED this is cluster '{}'",
                settings.cluster
            )));
        }
        // LINK.HELLO <cluster> <region> <password> [<user>]: an ACL user's password,
        // or the default user's (--requirepass) as before ACL users
        let user = argv
            .get(4)
            .copied()
            .unwrap_or(crate::acl::DEFAULT_USER.as_bytes());
        if shared.acl.authenticate(user, argv[3]).is_none() {
            tracing::warn!(region = %String::from_utf8_lossy(argv[2]), "refused region link with a wrong password");
            return Err(denied("DENIED wrong password".into()));
        }
        *peer_region = Some(String::from_utf8_lossy(argv[2]).into_owned());
        return Ok(b"+OK\r\n".to_vec());
    };
    match name.as_slice() {
        b"LINK.TOPOLOGY" => {
            let map = shared.topology.load_full();
            Ok(
                match map.and_then(|map| serde_json::to_vec(map.as_ref()).ok()) {
                    Some(json) => bulk(&json),
                    None => b"$-1\r\n".to_vec(),
                },
            )
        }
        b"LINK.PING" => Ok(b"+PONG\r\n".to_vec()),
        b"LINK.FEATURES" => Ok(bulk(FEATURES.as_bytes())),
        b"LINK.EVENT" => {
            // before the event can move this node's clock (see Regions::check_drift)
            if let Some(hlc) = argv.get(3).and_then(|text| number(text).ok()) {
                shared
                    .regions
                    .check_drift(region, hlc)
                    .map_err(|error| Refusal::new(RefusalReason::ClockDrift, error.to_string()))?;
            }
            Ok(match apply_event(shared, region, argv) {
                Ok(()) => b"+OK\r\n".to_vec(),
                Err(error) => error_reply(&error.to_string()),
            })
        }
        _ => Ok(error_reply(&format!(
            "ERR unknown link request '{}'",
            String::from_utf8_lossy(&name)
        ))),
    }
}

/// An error reply. It stays one line: CR and LF of request bytes it echoes become spaces.
fn error_reply(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(b'-');
    out.extend(text.bytes().map(|byte| match byte {
        b'\r' | b'\n' => b' ',
        byte => byte,
    }));
    out.extend_from_slice(b"\r\n");
    out
}

fn bulk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn number(text: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| "ERR malformed number in event".to_string())
}

/// Is this node the primary that must apply events of `slot`?
fn check_owner(shared: &Shared, slot: u16) -> Result<(), String> {
    let moved = || format!("MOVED {slot}");
    if shared
        .db
        .stats
        .replica
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(moved());
    }
    match shared.topology.load().as_ref() {
        None => Ok(()),
        Some(map) => match map.route(slot, &shared.node_id, false) {
            Route::Local => Ok(()),
            _ => Err(moved()),
        },
    }
}

fn apply_event(shared: &Arc<Shared>, from: &str, argv: &[&[u8]]) -> Result<(), String> {
    if argv.len() != 7 && argv.len() != 9 {
        return Err("ERR wrong number of arguments for LINK.EVENT".into());
    }
    let version = Version {
        hlc: number(argv[3])?,
        region: u32::try_from(number(argv[4])?).map_err(|_| "ERR bad region id".to_string())?,
    };
    let origin_ms = number(argv[6])?;
    let regions = &shared.regions;
    let target = argv[2];
    match argv[1] {
        b"key" => {
            check_owner(shared, meridian_topology::key_slot(target))?;
            regions.observe(version);
            // a local copy newer than the event survives (STALE reply ignored)
            run_event(shared, applied_event(version, true), &[b"DEL", target])?;
        }
        b"set" if argv.len() == 9 => {
            check_owner(shared, meridian_topology::key_slot(target))?;
            regions.observe(version);
            let ttl = number(argv[8])?.to_string();
            let mut args: Vec<&[u8]> = vec![b"SET", target, argv[7]];
            if ttl != "0" {
                args.extend_from_slice(&[b"PX", ttl.as_bytes()]);
            }
            run_event(shared, applied_event(version, true), &args)?;
        }
        b"restore" if argv.len() == 9 => {
            check_owner(shared, meridian_topology::key_slot(target))?;
            regions.observe(version);
            let ttl = number(argv[8])?.to_string();
            let restore: [&[u8]; 5] = [b"RESTORE", target, ttl.as_bytes(), argv[7], b"REPLACE"];
            let refused = run_event(shared, applied_event(version, true), &restore)?;
            if refused.is_some_and(|error| error.starts_with("ERR DUMP payload")) {
                // a payload this node cannot read (another format version): the
                // copy here is dropped rather than left stale
                run_event(shared, applied_event(version, true), &[b"DEL", target])?;
            }
        }
        b"pattern" => {
            regions.observe(version);
            regions.versions.record_pattern(target, version);
            let keys = match local::run_as(shared, INTERNAL, &[b"KEYS", target], false).0 {
                Some(Reply::Array(keys)) => keys,
                _ => Vec::new(),
            };
            delete_all(shared, version, keys)?;
        }
        b"slot" => {
            let slot = u16::try_from(number(target)?)
                .ok()
                .filter(|slot| *slot < meridian_topology::SLOT_COUNT)
                .ok_or_else(|| "ERR bad slot".to_string())?;
            check_owner(shared, slot)?;
            regions.observe(version);
            regions.versions.record_slot(slot, version);
            let slot_text = slot.to_string();
            let keys = match local::run_as(
                shared,
                INTERNAL,
                &[
                    b"CLUSTER",
                    b"GETKEYSINSLOT",
                    slot_text.as_bytes(),
                    b"100000000",
                ],
                false,
            )
            .0
            {
                Some(Reply::Array(keys)) => keys,
                _ => Vec::new(),
            };
            delete_all(shared, version, keys)?;
        }
        _ => return Err("ERR unknown event kind".into()),
    }
    let metrics = &*REGION_METRICS;
    let label = peer_label(from);
    metrics.events_received.get_or_create(&label).inc();
    let lag_ms = crate::store::now_ms().saturating_sub(origin_ms);
    metrics
        .lag
        .get_or_create(&label)
        .observe(lag_ms as f64 / 1000.0);
    Ok(())
}

/// The context of the reads an event makes to find the keys it deletes.
const INTERNAL: ExecContext = ExecContext::new(Caller::Internal);

/// The context a peer region's event runs in: refused when a newer version of its
/// key is known; `record` keeps the event's version for its key.
fn applied_event(version: Version, record: bool) -> ExecContext {
    ExecContext::new(Caller::RegionLink {
        guard: RegionGuard { version, record },
    })
}

/// Runs an event's write. A key whose slot is migrating and that this node cannot
/// settle now (it left for the destination, or its batch is in flight) is answered
/// TRYAGAIN instead of +OK: the peer offers the event again, until the batch settled
/// or the map moved the slot (MOVED sends it to the new owner). Other refusals (a
/// newer local copy) leave the event applied as far as it goes: Ok(Some(error)).
fn run_event(shared: &Shared, exec: ExecContext, args: &[&[u8]]) -> Result<Option<String>, String> {
    match local::run_as(shared, exec, args, false).0 {
        Some(Reply::Error(error)) if error.starts_with("TRYAGAIN") || error.starts_with("ASK ") => {
            let slot = args
                .get(1)
                .map_or(0, |key| meridian_topology::key_slot(key));
            Err(format!(
                "TRYAGAIN slot {slot} is migrating; offer the event again"
            ))
        }
        Some(Reply::Error(error)) => Ok(Some(error)),
        _ => Ok(None),
    }
}

/// Deletes keys through DEL (so replicas follow), sparing copies newer than `version`;
/// every key is tried, and a key that could not be settled now makes the whole event
/// one to offer again (deleting twice is harmless).
fn delete_all(shared: &Shared, version: Version, keys: Vec<Reply>) -> Result<(), String> {
    let mut retry = Ok(());
    for key in keys {
        let Reply::Bulk(key) = key else { continue };
        if let Err(error) = run_event(shared, applied_event(version, false), &[b"DEL", &key]) {
            retry = Err(error);
        }
    }
    retry
}

// ---------------------------------------------------------------------------
// Client side

/// Largest bulk reply (a topology map) accepted from a peer.
const MAX_REPLY_BULK: usize = 64 * 1024 * 1024;
/// Link replies are a status, an error or a bulk: never arrays.
const LINK_REPLY_LIMITS: ReplyLimits = ReplyLimits {
    max_len: MAX_REPLY_BULK + 64,
    max_bulk_len: MAX_REPLY_BULK,
    max_elements: 0,
    max_depth: 0,
};

/// A reply on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkReply {
    Ok,
    Error(String),
    Bulk(Option<Bytes>),
}

/// One authenticated link to a peer node, for request/reply use (topology).
/// [`LinkConn::into_halves`] splits it for streaming events.
pub struct LinkConn {
    reader: ReplyReader,
    writer: LinkWriter,
    /// What the peer understands, asked after the handshake.
    pub features: LinkFeatures,
}

/// The sending half of a link.
pub struct LinkWriter {
    half: WriteHalf<Stream>,
}

/// The receiving half of a link: decodes replies from a buffer that survives
/// cancellation, so [`ReplyReader::next`] can sit in a `select!` or a timeout.
pub struct ReplyReader {
    half: ReadHalf<Stream>,
    buffer: BytesMut,
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// A replicated value and its TTL text.
type ValueAndTtl<'a> = (&'a [u8], &'a [u8]);

/// What the peer at the other end of a link understands (LINK.FEATURES).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFeatures {
    /// `restore` events (values of every type in replicate mode).
    pub restore: bool,
}

impl LinkFeatures {
    fn parse(listed: &[u8]) -> LinkFeatures {
        let mut features = LinkFeatures::default();
        for feature in listed.split(|byte| *byte == b' ') {
            if feature == b"restore" {
                features.restore = true;
            }
        }
        features
    }
}

/// Appends one event request, in the form the peer (`features`) understands.
pub fn encode_event(out: &mut Vec<u8>, event: &Event, features: LinkFeatures) {
    let hlc = event.version.hlc.to_string();
    let region = event.version.region.to_string();
    let origin_ms = event.origin_ms.to_string();
    let slot_text;
    let ttl_text;
    let (kind, target, extra): (&[u8], &[u8], Option<ValueAndTtl<'_>>) = match &event.kind {
        EventKind::Key(key) => (b"key", key, None),
        EventKind::Pattern(pattern) => (b"pattern", pattern, None),
        EventKind::Slot(slot) => {
            slot_text = slot.to_string();
            (b"slot", slot_text.as_bytes(), None)
        }
        EventKind::Set { key, value, ttl_ms } => {
            ttl_text = ttl_ms.to_string();
            (b"set", key, Some((value.as_ref(), ttl_text.as_bytes())))
        }
        EventKind::Restore {
            key,
            payload,
            ttl_ms,
        } if features.restore => {
            ttl_text = ttl_ms.to_string();
            (
                b"restore",
                key,
                Some((payload.as_ref(), ttl_text.as_bytes())),
            )
        }
        // a peer that cannot restore drops its copy instead
        EventKind::Restore { key, .. } => (b"key", key, None),
    };
    let mut args: Vec<&[u8]> = vec![
        b"LINK.EVENT",
        kind,
        target,
        hlc.as_bytes(),
        region.as_bytes(),
        event.origin_region.as_bytes(),
        origin_ms.as_bytes(),
    ];
    if let Some((value, ttl)) = extra {
        args.push(value);
        args.push(ttl);
    }
    encode(out, &args);
}

impl LinkConn {
    /// Connects and says hello; a refused handshake is an error naming the reason.
    pub async fn connect(
        addr: &str,
        tls: Option<&ClientTls>,
        cluster: &str,
        region: &str,
        user: Option<&str>,
        password: &str,
    ) -> std::io::Result<LinkConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => tls.connect(stream, addr).await?,
        };
        let (read, write) = tokio::io::split(stream);
        let mut conn = LinkConn {
            reader: ReplyReader {
                half: read,
                buffer: BytesMut::with_capacity(4096),
            },
            writer: LinkWriter { half: write },
            features: LinkFeatures::default(),
        };
        let mut hello = Vec::new();
        let mut args: Vec<&[u8]> = vec![
            b"LINK.HELLO",
            cluster.as_bytes(),
            region.as_bytes(),
            password.as_bytes(),
        ];
        // the user goes last: a peer without ACL users refuses a 5-argument hello,
        // so --region-link-user is only set once every node understands it
        if let Some(user) = user {
            args.push(user.as_bytes());
        }
        encode(&mut hello, &args);
        // the features request rides with the hello: one round trip for both
        encode(&mut hello, &[b"LINK.FEATURES"]);
        conn.writer.send(&hello).await?;
        match conn.reader.next().await? {
            LinkReply::Ok => {}
            LinkReply::Error(error) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{addr} refused the link: {error}"),
                ));
            }
            LinkReply::Bulk(_) => return Err(invalid("unexpected handshake reply")),
        }
        conn.features = match conn.reader.next().await? {
            LinkReply::Bulk(Some(listed)) => LinkFeatures::parse(&listed),
            // a peer that predates LINK.FEATURES
            LinkReply::Error(_) => LinkFeatures::default(),
            other => return Err(invalid(&format!("unexpected features reply {other:?}"))),
        };
        Ok(conn)
    }

    /// The peer's topology map (None: the peer runs without one).
    pub async fn topology(&mut self) -> std::io::Result<Option<TopologyMap>> {
        let mut request = Vec::new();
        encode(&mut request, &[b"LINK.TOPOLOGY"]);
        self.writer.send(&request).await?;
        match self.reader.next().await? {
            LinkReply::Bulk(Some(json)) => crate::commands::admin::parse_topology(&json)
                .and_then(|map| {
                    map.validate_structure().map_err(|error| {
                        crate::error::CommandError::other(format!("ERR invalid topology: {error}"))
                    })?;
                    Ok(map)
                })
                .map(Some)
                .map_err(|error| invalid(&format!("bad topology from peer: {error}"))),
            LinkReply::Bulk(None) => Ok(None),
            other => Err(invalid(&format!("unexpected topology reply {other:?}"))),
        }
    }

    /// Splits the link so requests can be written while replies are read.
    pub fn into_halves(self) -> (LinkWriter, ReplyReader) {
        (self.writer, self.reader)
    }
}

impl LinkWriter {
    /// Writes encoded requests (see [`encode_event`]).
    pub async fn send(&mut self, requests: &[u8]) -> std::io::Result<()> {
        self.half.write_all(requests).await?;
        // TLS holds written records until flushed
        self.half.flush().await
    }
}

impl ReplyReader {
    /// The next reply. Cancel-safe: bytes read so far stay buffered.
    pub async fn next(&mut self) -> std::io::Result<LinkReply> {
        loop {
            if let Some(reply) = decode_reply(&mut self.buffer)? {
                return Ok(reply);
            }
            let read = self.half.read_buf(&mut self.buffer).await?;
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "link closed",
                ));
            }
        }
    }
}

/// Takes one complete reply off the front of `buffer` (None: not all there yet).
pub(crate) fn decode_reply(buffer: &mut BytesMut) -> std::io::Result<Option<LinkReply>> {
    let (reply, consumed) = match parse_reply(buffer, &LINK_REPLY_LIMITS) {
        Ok(Decoded::Reply { reply, consumed }) => (reply, consumed),
        Ok(Decoded::Incomplete { .. }) => return Ok(None),
        Err(error) => return Err(invalid(&format!("bad reply: {error}"))),
    };
    let reply = match reply {
        RespReply::Simple(_) => LinkReply::Ok,
        RespReply::Error(error) => LinkReply::Error(error),
        RespReply::Bulk(data) => LinkReply::Bulk(Some(data)),
        RespReply::Nil => LinkReply::Bulk(None),
        _ => return Err(invalid("unexpected reply")),
    };
    buffer.advance(consumed);
    Ok(Some(reply))
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_decoded_only_once_complete() {
        let mut buffer = BytesMut::from(&b"+OK\r\n-MOVED 12\r\n$5\r\nhel"[..]);
        assert_eq!(decode_reply(&mut buffer).unwrap(), Some(LinkReply::Ok));
        assert_eq!(
            decode_reply(&mut buffer).unwrap(),
            Some(LinkReply::Error("MOVED 12".into()))
        );
        assert_eq!(decode_reply(&mut buffer).unwrap(), None);
        buffer.extend_from_slice(b"lo\r\n$-1\r\n");
        assert_eq!(
            decode_reply(&mut buffer).unwrap(),
            Some(LinkReply::Bulk(Some(Bytes::from_static(b"hello"))))
        );
        assert_eq!(
            decode_reply(&mut buffer).unwrap(),
            Some(LinkReply::Bulk(None))
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn echoed_request_bytes_cannot_break_the_reply_line() {
        // found by the link_requests fuzz target: a request name with CRLF in it
        // injected a reply ("+OK") into the link
        let shared = crate::fuzzing::node();
        let reply = handle_request(&shared, &mut Some("east".into()), &[b"X\r\n+OK"]).unwrap();
        assert_eq!(reply, b"-ERR unknown link request 'X  +OK'\r\n");
        let mut buffer = BytesMut::from(&reply[..]);
        assert!(matches!(
            decode_reply(&mut buffer).unwrap(),
            Some(LinkReply::Error(_))
        ));
        assert!(buffer.is_empty());
    }

    #[test]
    fn restore_events_become_invalidations_for_a_peer_without_the_feature() {
        let event = |kind| Event {
            kind,
            version: Version { hlc: 5, region: 7 },
            origin_region: Arc::from("a"),
            origin_ms: 9,
            ack: None,
        };
        let restore = event(EventKind::Restore {
            key: b"k".to_vec(),
            payload: Bytes::from_static(b"DUMP"),
            ttl_ms: 0,
        });
        let mut out = Vec::new();
        encode_event(&mut out, &restore, LinkFeatures::parse(b"other restore"));
        let mut expected = Vec::new();
        encode(
            &mut expected,
            &[
                b"LINK.EVENT",
                b"restore",
                b"k",
                b"5",
                b"7",
                b"a",
                b"9",
                b"DUMP",
                b"0",
            ],
        );
        assert_eq!(out, expected);
        out.clear();
        encode_event(&mut out, &restore, LinkFeatures::default());
        expected.clear();
        encode(
            &mut expected,
            &[b"LINK.EVENT", b"key", b"k", b"5", b"7", b"a", b"9"],
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            &b":1\r\n"[..],
            b"$x\r\n",
            b"$99999999999\r\n",
            b"$2\r\nabcd",
            // link replies are never arrays, however small
            b"*0\r\n",
            b"*1\r\n+OK\r\n",
            b"*2147483647\r\n",
        ] {
            let mut buffer = BytesMut::from(bad);
            assert!(decode_reply(&mut buffer).is_err(), "{bad:?}");
        }
    }
}
