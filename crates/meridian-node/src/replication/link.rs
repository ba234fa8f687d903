//! The replica's side: follow a primary (REPLICAOF or the topology map),
//! resynchronise (PSYNC → +CONTINUE or +FULLRESYNC + snapshot), apply the
//! command stream, acknowledge the offset every second and on GETACK.
//!
//! Nothing the primary sends is trusted for sizes: the snapshot is checked as it
//! arrives and kept in bounded chunks, replacing the data only once whole and valid;
//! the stream is held to the client limits. A failed sync is logged, counted by
//! reason, and retried; the replica keeps its data meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::net::Stream;
use bytes::{Buf, BytesMut};
use meridian_topology::{NodeRole, TopologyMap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backlog::encode_command;
use super::{LinkState, PrimaryMandate, PrimaryTarget, snapshot};
use crate::client::ClientHandle;
use crate::commands::{ClientState, dispatch};
use crate::error::SyncError;
use crate::exec::{Caller, ExecContext};
use crate::protocol::{
    Decoded, Out, ParseError, Parsed, Reply, ReplyLimits, parse_command, parse_reply,
};
use crate::state::Shared;
use crate::store::Access;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(500);
/// After a refused full sync: the primary builds a snapshot for every attempt.
const REFUSED_RETRY: Duration = Duration::from_secs(2);
/// After a failed sync (broken snapshot or stream): the primary builds a snapshot
/// for every attempt, and a broken one may break again.
const FAILED_RETRY: Duration = Duration::from_secs(1);
const ACK_PERIOD: Duration = Duration::from_secs(1);
/// Capacity added to the input buffer before a read.
const READ_CHUNK: usize = 64 * 1024;
/// Longest handshake line (replies to REPLCONF / PSYNC, the snapshot header).
const MAX_LINE: usize = 64 * 1024;

/// Starts replicating `target`; false when already linked to it (no resync).
pub fn follow(shared: &Arc<Shared>, target: PrimaryTarget) -> bool {
    let mut gate = shared.repl.apply_gate.lock();
    let mut link = shared.repl.link.lock();
    if link.as_ref().is_some_and(|link| link.target == target) {
        return false;
    }
    if let Some(task) = link.take().and_then(|previous| previous.task) {
        task.abort();
    }
    *gate += 1;
    let generation = *gate;
    shared.repl.set_mandate(PrimaryMandate::None);
    shared.db.stats.replica.store(true, Ordering::Relaxed);
    // clients blocked on this node, now a replica, are answered by their retry (READONLY)
    shared.blocking.wake_all();
    disconnect_replicas(shared);
    tracing::info!(primary = %format!("{}:{}", target.host, target.port), "replicating primary");
    let task = tokio::spawn(run(shared.clone(), target.clone(), generation));
    *link = Some(LinkState {
        target,
        status: "connect",
        last_io: Instant::now(),
        task: Some(task.abort_handle()),
        may_replace: true,
        refused: 0,
        failures: 0,
        last_error: None,
    });
    true
}

/// Drops the link to the primary and starts a new one to the same primary
/// (CLIENT KILL TYPE master); false when not replicating.
pub fn reconnect(shared: &Arc<Shared>) -> bool {
    let mut gate = shared.repl.apply_gate.lock();
    let mut link = shared.repl.link.lock();
    let Some(current) = link.as_mut() else {
        return false;
    };
    if let Some(task) = current.task.take() {
        task.abort();
    }
    *gate += 1;
    let task = tokio::spawn(run(shared.clone(), current.target.clone(), *gate));
    current.task = Some(task.abort_handle());
    current.status = "connect";
    true
}

/// REPLICAOF NO ONE or a map naming this node primary (`mandate`): stop
/// replicating, keep the data, and start a new history that still accepts partial
/// resyncs against the old one. The node serves PSYNC from now on.
pub fn promote(shared: &Arc<Shared>, mandate: PrimaryMandate) {
    let mut gate = shared.repl.apply_gate.lock();
    let previous = shared.repl.link.lock().take();
    let before = shared.repl.set_mandate(mandate);
    if before == PrimaryMandate::None && previous.is_none() {
        tracing::info!(
            named_by = mandate.name(),
            keys = shared.db.len(),
            "named primary: serving replicas from now on"
        );
    }
    let Some(previous) = previous else {
        return;
    };
    *gate += 1;
    if let Some(task) = previous.task {
        task.abort();
    }
    shared.db.stats.replica.store(false, Ordering::Relaxed);
    if shared.repl.log.is_active() {
        shared.repl.log.shift_replid();
    }
    tracing::info!(
        offset = shared.repl.log.offset(),
        "promoted to primary (REPLICAOF NO ONE)"
    );
}

/// Obeys a pushed topology map: a replica follows its shard's primary, a
/// primary stops replicating. Both are no-ops when already so. A node the map
/// leaves out serves no PSYNC until a map names it again.
pub fn follow_topology(shared: &Arc<Shared>, map: &TopologyMap) {
    match map.role_of(&shared.node_id) {
        Some(NodeRole::Replica) => {
            if let Some(shard) = map.shard_of_node(&shared.node_id) {
                follow(
                    shared,
                    PrimaryTarget {
                        host: shard.primary.ip.clone(),
                        port: shard.primary.port,
                    },
                );
            }
        }
        Some(NodeRole::Primary) => promote(shared, PrimaryMandate::Map { epoch: map.epoch }),
        None => {
            shared.repl.set_mandate(PrimaryMandate::None);
        }
    }
}

/// Replicas of this node must resync against its new history.
fn disconnect_replicas(shared: &Shared) {
    let ids: Vec<u64> = shared.repl.replicas.lock().keys().copied().collect();
    let clients = shared.clients.lock();
    for id in ids {
        if let Some(handle) = clients.get(&id) {
            handle.close();
        }
    }
}

async fn run(shared: Arc<Shared>, target: PrimaryTarget, generation: u64) {
    loop {
        let retry = match session(&shared, &target, generation).await {
            Ok(()) => {
                tracing::info!("primary link closed");
                RETRY
            }
            Err(error @ SyncError::FullSyncRefused { .. }) => {
                tracing::warn!(%error, "primary link failed");
                REFUSED_RETRY
            }
            Err(error) => match error.failure() {
                Some(failure) => {
                    shared.repl.record_link_error(&error);
                    tracing::warn!(
                        reason = failure.name(),
                        %error,
                        "sync with the primary failed; keeping this replica's data, retrying"
                    );
                    FAILED_RETRY
                }
                None => {
                    tracing::warn!(%error, "primary link failed");
                    RETRY
                }
            },
        };
        shared.repl.set_status("connect");
        tokio::time::sleep(retry).await;
    }
}

/// Whether a full sync of the primary's history (`replid`, `offset`) may replace
/// this replica's data: when the link has not synced yet (it was set up to follow
/// this primary), when there is nothing to lose, or when it continues the
/// replica's own history (it fell out of the primary's backlog). Counts a refusal.
fn check_full_sync(
    shared: &Shared,
    generation: u64,
    replid: &str,
    offset: u64,
) -> Result<(), SyncError> {
    // only this link's task writes to a replica's dataset: read before locking
    let log = &shared.repl.log;
    let keys = shared.db.len();
    let own_history = log.is_active() && log.replid() == replid && offset >= log.offset();
    let gate = shared.repl.apply_gate.lock();
    if *gate != generation {
        return Err(SyncError::Replaced);
    }
    let mut link = shared.repl.link.lock();
    let Some(link) = link.as_mut() else {
        return Err(SyncError::Replaced);
    };
    if link.may_replace || keys == 0 || own_history {
        return Ok(());
    }
    link.refused += 1;
    shared
        .repl
        .counters
        .sync_full_refused
        .fetch_add(1, Ordering::Relaxed);
    Err(SyncError::FullSyncRefused {
        replid: replid.to_string(),
        offset,
        own_replid: log.replid(),
        own_offset: log.offset(),
        keys,
    })
}

/// The link synced (full or partial): its data now comes from this primary.
fn mark_synced(shared: &Shared, generation: u64) {
    let gate = shared.repl.apply_gate.lock();
    if *gate != generation {
        return;
    }
    if let Some(link) = shared.repl.link.lock().as_mut() {
        link.may_replace = false;
        link.refused = 0;
    }
}

async fn command(stream: &mut Stream, args: &[&[u8]]) -> Result<(), SyncError> {
    let mut buf = Vec::new();
    encode_command(&mut buf, args);
    stream.write_all(&buf).await?;
    // TLS holds written records until flushed (a no-op on TCP)
    stream.flush().await?;
    Ok(())
}

/// Reads more of the primary's input into `buf` (at most [`READ_CHUNK`] more bytes
/// of capacity); fails when nothing arrives within `idle`. Returns the bytes read,
/// 0 when the primary closed the connection.
async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    idle: Duration,
    phase: &'static str,
) -> Result<usize, SyncError> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let limited = &mut (&mut *stream).take((buf.capacity() - buf.len()).max(1) as u64);
    match tokio::time::timeout(idle, limited.read_buf(buf)).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(SyncError::Timeout {
            seconds: idle.as_secs(),
            phase,
        }),
    }
}

/// Reads the snapshot's `$<len>` header line (without the CRLF): the payload after
/// it is streamed in pieces, so it is not a reply the decoder takes whole.
async fn read_line(
    stream: &mut Stream,
    buf: &mut BytesMut,
    idle: Duration,
    phase: &'static str,
) -> Result<String, SyncError> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 2);
            return Ok(line);
        }
        if buf.len() > MAX_LINE {
            return Err(SyncError::OverlongLine);
        }
        if read_more(stream, buf, idle, phase).await? == 0 {
            return Err(SyncError::Closed);
        }
    }
}

/// Bounds on a handshake reply: one status line, never an aggregate.
const HANDSHAKE_REPLY: ReplyLimits = ReplyLimits {
    max_len: MAX_LINE,
    max_bulk_len: MAX_LINE,
    max_elements: 16,
    max_depth: 1,
};

/// Reads one handshake reply with the node's reply decoder.
async fn read_reply(
    stream: &mut Stream,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<Reply, SyncError> {
    loop {
        match parse_reply(buf, &HANDSHAKE_REPLY) {
            Ok(Decoded::Reply { reply, consumed }) => {
                buf.advance(consumed);
                return Ok(reply);
            }
            Ok(Decoded::Incomplete { .. }) => {}
            Err(ParseError::ReplyLineTooLong | ParseError::ReplyTooBig(_)) => {
                return Err(SyncError::OverlongLine);
            }
            Err(error) => return Err(SyncError::Stream(error)),
        }
        if read_more(stream, buf, idle, "handshake").await? == 0 {
            return Err(SyncError::Closed);
        }
    }
}

/// A handshake reply that is not the status expected, as the error names it.
fn refused(what: &'static str, reply: Reply) -> SyncError {
    let line = match reply {
        Reply::Simple(text) | Reply::Error(text) => text,
        other => format!("{other:?}"),
    };
    SyncError::Refused { what, line }
}

async fn expect_ok(
    stream: &mut Stream,
    buf: &mut BytesMut,
    idle: Duration,
    what: &'static str,
) -> Result<(), SyncError> {
    match read_reply(stream, buf, idle).await? {
        Reply::Simple(status) if status == "OK" => Ok(()),
        other => Err(refused(what, other)),
    }
}

/// A replication id as primaries send it: 40 characters (hex for Redis and Meridian).
fn valid_replid(replid: &str) -> bool {
    replid.len() == 40 && replid.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// The primary's answer to PSYNC.
enum Psync {
    Full { replid: String, offset: u64 },
    Continue { replid: Option<String> },
}

/// Authenticates and negotiates PSYNC; the unread input stays in `buf`.
async fn handshake(
    shared: &Shared,
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Psync, SyncError> {
    let idle = HANDSHAKE_TIMEOUT;
    let password = shared
        .repl
        .primary_auth
        .lock()
        .clone()
        .or_else(|| shared.requirepass());
    let user = shared.repl.primary_user.lock().clone();
    // `AUTH <user> <password>` logs in as the ACL user (whose rules must allow PSYNC and
    // REPLCONF); `AUTH <password>` as the primary's default user, as before ACL users
    let auth: Option<Vec<&[u8]>> = match (&user, &password) {
        (Some(user), password) => Some(vec![
            b"AUTH",
            user.as_bytes(),
            password.as_deref().unwrap_or_default().as_bytes(),
        ]),
        (None, Some(password)) => Some(vec![b"AUTH", password.as_bytes()]),
        (None, None) => None,
    };
    if let Some(auth) = auth {
        command(stream, &auth).await?;
        match read_reply(stream, buf, idle).await? {
            Reply::Simple(status) if status == "OK" => {}
            // a primary without a password refuses AUTH; the link works anyway
            Reply::Error(error) if error.contains("without any password configured") => {}
            other => return Err(refused("AUTH", other)),
        }
    }
    let port = shared.port.to_string();
    command(stream, &[b"REPLCONF", b"listening-port", port.as_bytes()]).await?;
    expect_ok(stream, buf, idle, "REPLCONF listening-port").await?;
    command(stream, &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"]).await?;
    expect_ok(stream, buf, idle, "REPLCONF capa").await?;
    let log = &shared.repl.log;
    let (replid, offset) = if log.is_active() {
        (log.replid(), log.offset().to_string())
    } else {
        ("?".to_string(), "-1".to_string())
    };
    command(stream, &[b"PSYNC", replid.as_bytes(), offset.as_bytes()]).await?;
    let line = match read_reply(stream, buf, idle).await? {
        Reply::Simple(line) => line,
        other => return Err(refused("PSYNC", other)),
    };
    let mut words = line.split_whitespace();
    match words.next() {
        Some("FULLRESYNC") => {
            let (Some(replid), Some(offset)) = (
                words.next().filter(|replid| valid_replid(replid)),
                words.next().and_then(|offset| offset.parse::<u64>().ok()),
            ) else {
                return Err(SyncError::BadPsyncReply(line));
            };
            Ok(Psync::Full {
                replid: replid.to_string(),
                offset,
            })
        }
        Some("CONTINUE") => match words.next() {
            Some(replid) if !valid_replid(replid) => Err(SyncError::BadPsyncReply(line)),
            replid => Ok(Psync::Continue {
                replid: replid.map(str::to_string),
            }),
        },
        _ => Err(SyncError::Refused {
            what: "PSYNC",
            line,
        }),
    }
}

/// Receives the snapshot after +FULLRESYNC and loads it as it arrives into a store
/// of its own (never allocating the declared length up front), which replaces the
/// node's keys only once the whole snapshot arrived and checked out. The stream's
/// first bytes may follow it in `buf`.
async fn full_sync(
    shared: &Shared,
    stream: &mut Stream,
    buf: &mut BytesMut,
    generation: u64,
    replid: &str,
    offset: u64,
) -> Result<(), SyncError> {
    let idle = shared.repl.timeout();
    let header = read_line(stream, buf, idle, "snapshot").await?;
    let len = header
        .strip_prefix('$')
        .and_then(|len| crate::protocol::frame::parse_i64(len.as_bytes()))
        .and_then(|len| u64::try_from(len).ok())
        .ok_or_else(|| SyncError::SnapshotHeader(header.chars().take(64).collect()))?;
    let maxmemory = shared.db.maxmemory();
    // a snapshot is more compact than the data it loads: one over maxmemory cannot fit
    if maxmemory > 0 && len > maxmemory {
        return Err(SyncError::SnapshotTooLarge {
            len,
            limit: maxmemory,
        });
    }
    let total = usize::try_from(len).map_err(|_| SyncError::SnapshotTooLarge {
        len,
        limit: usize::MAX as u64,
    })?;
    let mut loader = snapshot::Loader::new(&shared.db, total, shared.config.limits().max_bulk_len);
    let already = loader.feed(buf)?;
    buf.advance(already);
    let mut chunk = vec![0u8; READ_CHUNK];
    while !loader.done() {
        let room = loader.missing().min(chunk.len());
        let read = match tokio::time::timeout(idle, stream.read(&mut chunk[..room])).await {
            Ok(read) => read?,
            Err(_) => {
                return Err(SyncError::Timeout {
                    seconds: idle.as_secs(),
                    phase: "snapshot",
                });
            }
        };
        if read == 0 {
            return Err(SyncError::SnapshotTruncated {
                received: (total - loader.missing()) as u64,
                len,
            });
        }
        loader.feed(&chunk[..read])?;
        shared.repl.touch_io();
    }
    drop(chunk);
    let gate = shared.repl.apply_gate.lock();
    if *gate != generation {
        return Err(SyncError::Replaced);
    }
    let pending_writes = loader.take_pending_writes();
    let loaded = loader.finish(&shared.db)?;
    // the primary's write-behind queue replaces this node's, as its keys do
    if let Some(queue) = shared
        .origin
        .as_ref()
        .and_then(|origin| origin.write_behind.as_ref())
    {
        queue.replace_all(pending_writes, std::time::Instant::now());
    }
    shared.repl.log.reset(replid, offset);
    drop(gate);
    mark_synced(shared, generation);
    tracing::info!(
        keys = loaded,
        offset,
        bytes = len,
        "full resync from primary done"
    );
    Ok(())
}

async fn session(
    shared: &Arc<Shared>,
    target: &PrimaryTarget,
    generation: u64,
) -> Result<(), SyncError> {
    shared.repl.set_status("connecting");
    // the TLS handshake (when the node has TLS) counts as part of connecting
    let mut stream =
        tokio::time::timeout(CONNECT_TIMEOUT, shared.tls.dial(&target.host, target.port))
            .await
            .map_err(|_| SyncError::ConnectTimeout)??;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(shared, &mut stream, &mut buf))
        .await
        .map_err(|_| SyncError::HandshakeTimeout)??;
    match reply {
        Psync::Full { replid, offset } => {
            check_full_sync(shared, generation, &replid, offset)?;
            shared.repl.set_status("sync");
            full_sync(shared, &mut stream, &mut buf, generation, &replid, offset).await?;
        }
        Psync::Continue { replid } => {
            if let Some(replid) = replid {
                shared.repl.log.adopt_replid(&replid);
            }
            mark_synced(shared, generation);
            tracing::info!(
                offset = shared.repl.log.offset(),
                "partial resync from primary"
            );
        }
    }
    shared.repl.set_status("connected");
    let (events, _inbox) = tokio::sync::mpsc::unbounded_channel();
    let handle = Arc::new(ClientHandle::new(
        0,
        format!("{}:{}", target.host, target.port),
        stream
            .tcp()
            .local_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_default(),
        events,
    ));
    let mut client = ClientState::new(handle, crate::acl::Login::internal());
    client.primary_link = true;
    let mut out = Out::discard();
    let mut ack = tokio::time::interval(ACK_PERIOD);
    let mut stream_state = StreamState::default();
    let idle = shared.repl.timeout();
    let mut ack_now = !buf.is_empty()
        && apply(
            shared,
            &mut client,
            &mut out,
            &mut buf,
            &mut stream_state,
            generation,
        )?;
    let mut last_read = tokio::time::Instant::now();
    loop {
        if ack_now {
            send_ack(shared, &mut stream).await?;
        }
        tokio::select! {
            read = read_more(&mut stream, &mut buf, idle, "stream") => {
                if read? == 0 {
                    return Ok(());
                }
                last_read = tokio::time::Instant::now();
                shared.repl.touch_io();
                ack_now = buf.len() >= stream_state.needed
                    && apply(shared, &mut client, &mut out, &mut buf, &mut stream_state, generation)?;
            }
            _ = ack.tick() => ack_now = true,
            _ = tokio::time::sleep_until(last_read + idle) => {
                return Err(SyncError::Timeout { seconds: idle.as_secs(), phase: "stream" });
            }
        }
    }
}

async fn send_ack(shared: &Shared, stream: &mut Stream) -> Result<(), SyncError> {
    let offset = shared.repl.log.offset().to_string();
    command(stream, &[b"REPLCONF", b"ACK", offset.as_bytes()]).await
}

/// What the stream reader carries from one read to the next.
#[derive(Debug, Default)]
struct StreamState {
    /// The open MULTI … EXEC, recorded in the backlog once EXEC applied.
    transaction: Vec<u8>,
    /// Input length before the next command can be complete (the parser's hint), so a
    /// large command arriving in many reads is not parsed again at every read.
    needed: usize,
}

/// Applies every complete command in `buf` and records it in this node's
/// own backlog (same offsets as the primary). True when GETACK was seen.
///
/// The stream is held to the client limits: proto-max-bulk-len per argument, and
/// client-query-buffer-limit for an incomplete command or an open transaction.
fn apply(
    shared: &Shared,
    client: &mut ClientState,
    out: &mut Out,
    buf: &mut BytesMut,
    state: &mut StreamState,
    generation: u64,
) -> Result<bool, SyncError> {
    let gate = shared.repl.apply_gate.lock();
    if *gate != generation {
        return Err(SyncError::Replaced);
    }
    let limits = shared.config.limits();
    let log = &shared.repl.log;
    let transaction = &mut state.transaction;
    let mut position = 0;
    let mut getack = false;
    // expired keys stay visible to the stream: the primary decides when they go
    let exec = ExecContext::new(Caller::PrimaryStream);
    let result = loop {
        match parse_command(&buf[position..], &limits) {
            Ok(Parsed::Command { args, consumed, .. }) => {
                let base = position;
                let argv: Vec<&[u8]> = args
                    .iter()
                    .map(|range| &buf[base + range.start..base + range.end])
                    .collect();
                if argv.len() >= 2
                    && argv[0].eq_ignore_ascii_case(b"REPLCONF")
                    && argv[1].eq_ignore_ascii_case(b"GETACK")
                {
                    getack = true;
                } else if !argv.is_empty() {
                    dispatch(shared, exec, client, out, &argv, Access::direct(&shared.db));
                }
                // Like Redis, the offset only moves past whole transactions:
                // a link cut between MULTI and EXEC resumes before MULTI.
                let bytes = &buf[base..base + consumed];
                if client.multi.is_some() || !transaction.is_empty() {
                    transaction.extend_from_slice(bytes);
                    if client.multi.is_none() {
                        log.append(transaction);
                        transaction.clear();
                    } else if transaction.len() > limits.max_query_buffer {
                        break Err(SyncError::StreamTooLarge {
                            what: "transaction",
                            len: transaction.len(),
                            limit: limits.max_query_buffer,
                        });
                    }
                } else {
                    log.append(bytes);
                }
                position += consumed;
            }
            Ok(Parsed::Incomplete { min_len }) => break Ok(min_len),
            Err(error) => break Err(SyncError::Stream(error)),
        }
    };
    buf.advance(position);
    drop(gate);
    let needed = result?;
    if needed > limits.max_query_buffer {
        return Err(SyncError::StreamTooLarge {
            what: "command",
            len: needed,
            limit: limits.max_query_buffer,
        });
    }
    state.needed = needed;
    Ok(getack)
}
