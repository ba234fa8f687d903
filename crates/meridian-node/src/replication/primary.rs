//! The primary's side: a connection that sent PSYNC becomes a replica feed.
//! It gets a snapshot (+FULLRESYNC) or the missing backlog (+CONTINUE), then
//! the command stream, and reports REPLCONF ACK offsets back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::net::Stream;
use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::ReplicaInfo;
use super::snapshot::Streamed;
use crate::client::{ClientEvent, ClientHandle};
use crate::protocol::{Limits, Parsed, parse_command};
use crate::state::Shared;

/// Largest chunk of stream written at once.
const STREAM_CHUNK: usize = 256 * 1024;

/// Waits until `replicas` replicas acknowledged `offset` or the timeout
/// (0 = none) passed; returns how many did.
pub async fn wait_acks(shared: &Shared, replicas: usize, offset: u64, timeout_ms: u64) -> usize {
    let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
    loop {
        // register interest before counting so no acknowledgement is missed
        let acked_now = shared.repl.acks.notified();
        tokio::pin!(acked_now);
        acked_now.as_mut().enable();
        let acked = shared.repl.acked(offset);
        if acked >= replicas || deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return acked;
        }
        match deadline {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline.into(), acked_now).await;
            }
            None => acked_now.await,
        }
    }
}

pub struct FeedRequest<'a> {
    pub replid: String,
    pub offset: Option<u64>,
    pub listening_port: u16,
    pub handle: &'a Arc<ClientHandle>,
}

/// Serves one replica until it disconnects, falls out of the backlog, is
/// killed, or the node shuts down.
pub async fn serve_replica(
    shared: Arc<Shared>,
    stream: &mut Stream,
    mut input: BytesMut,
    request: FeedRequest<'_>,
    inbox: &mut mpsc::UnboundedReceiver<ClientEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let ip = request
        .handle
        .addr
        .rsplit_once(':')
        .map_or(request.handle.addr.clone(), |(ip, _)| {
            ip.trim_matches(|c| c == '[' || c == ']').to_string()
        });
    let info = Arc::new(ReplicaInfo {
        client_id: request.handle.id,
        ip,
        listening_port: request.listening_port,
        ack_offset: AtomicU64::new(0),
        has_acked: AtomicBool::new(false),
        last_ack: Mutex::new(Instant::now()),
        state: Mutex::new("wait_bgsave"),
    });
    shared
        .repl
        .replicas
        .lock()
        .insert(request.handle.id, info.clone());
    let result = feed(
        &shared, stream, &mut input, &request, &info, inbox, shutdown,
    )
    .await;
    shared.repl.replicas.lock().remove(&request.handle.id);
    tracing::info!(replica = %request.handle.addr, "replica disconnected");
    result
}

/// What a replica may send on its link: REPLCONF ACK and little else. Tight limits so
/// a replica cannot make its primary buffer much.
const REPLICA_INPUT: Limits = Limits {
    max_bulk_len: 1024,
    max_multibulk_len: 16,
    max_query_buffer: 64 * 1024,
    unauthenticated: false,
};

/// Sends a streamed snapshot after `header`: each shard encoded (off the async workers)
/// just before it is written; false when the replica stopped reading.
async fn stream_snapshot(
    shared: &Arc<Shared>,
    stream: &mut Stream,
    snapshot: &Arc<Streamed>,
    header: &[u8],
    stall: Duration,
) -> std::io::Result<bool> {
    let mut head = header.to_vec();
    head.extend_from_slice(Streamed::head());
    if !write_or_stall(stream, &head, stall).await? {
        return Ok(false);
    }
    for index in 0..snapshot.shards() {
        let (encoder, shard_snapshot) = (shared.clone(), snapshot.clone());
        let part = tokio::task::spawn_blocking(move || shard_snapshot.part(&encoder.db, index))
            .await
            .map_err(std::io::Error::other)?;
        if !write_or_stall(stream, &part, stall).await? {
            return Ok(false);
        }
    }
    write_or_stall(stream, &snapshot.tail(), stall).await
}

/// Writes `bytes` to the replica in chunks; false when one made no progress within
/// `stall` (the replica stopped reading: stopped process, dead host without a reset).
async fn write_or_stall(
    stream: &mut Stream,
    bytes: &[u8],
    stall: Duration,
) -> std::io::Result<bool> {
    for chunk in bytes.chunks(STREAM_CHUNK) {
        let written = async {
            stream.write_all(chunk).await?;
            // TLS holds written records until flushed (a no-op on TCP)
            stream.flush().await
        };
        match tokio::time::timeout(stall, written).await {
            Ok(written) => written?,
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

async fn feed(
    shared: &Arc<Shared>,
    stream: &mut Stream,
    input: &mut BytesMut,
    request: &FeedRequest<'_>,
    info: &ReplicaInfo,
    inbox: &mut mpsc::UnboundedReceiver<ClientEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let log = &shared.repl.log;
    let counters = &shared.repl.counters;
    let stall = shared.repl.timeout();
    let stalled = || {
        counters.replicas_timed_out.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            replica = %request.handle.addr,
            seconds = stall.as_secs(),
            "replica stopped reading within the replication timeout; dropping it (it will resync)"
        );
    };
    let mut position = match request.offset {
        Some(offset) if log.can_continue(&request.replid, offset) => {
            counters.sync_partial_ok.fetch_add(1, Ordering::Relaxed);
            stream
                .write_all(format!("+CONTINUE {}\r\n", log.replid()).as_bytes())
                .await?;
            stream.flush().await?;
            tracing::info!(replica = %request.handle.addr, offset, "partial resync");
            offset
        }
        requested => {
            if requested.is_some() && request.replid != "?" {
                counters.sync_partial_err.fetch_add(1, Ordering::Relaxed);
            }
            counters.sync_full.fetch_add(1, Ordering::Relaxed);
            // one full sync at a time; the others wait their turn
            let _turn = shared.repl.full_sync.lock().await;
            let started = shared.clone();
            let snapshot = tokio::task::spawn_blocking(move || {
                let queue = started
                    .origin
                    .as_ref()
                    .and_then(|origin| origin.write_behind.as_ref());
                Streamed::start(&started.db, &started.repl.log, queue)
            })
            .await
            .map_err(std::io::Error::other)?;
            let offset = snapshot.offset;
            // FUNCTION libraries are not keys: the stream after the snapshot loads them
            // (in order with any FUNCTION command since; other replicas reload the same)
            shared.scripts.with_library_codes(|codes| {
                for code in codes {
                    let mut command = Vec::new();
                    super::backlog::encode_command(
                        &mut command,
                        &[b"FUNCTION", b"LOAD", b"REPLACE", code],
                    );
                    log.append(&command);
                }
            });
            tracing::info!(
                replica = %request.handle.addr,
                offset,
                bytes = snapshot.len,
                "full resync (streamed)"
            );
            let header = format!(
                "+FULLRESYNC {} {offset}\r\n${}\r\n",
                log.replid(),
                snapshot.len
            );
            let snapshot = std::sync::Arc::new(snapshot);
            let sent = stream_snapshot(shared, stream, &snapshot, header.as_bytes(), stall).await;
            if !matches!(sent, Ok(true)) {
                // the shards not sent yet keep no pending copy
                snapshot.abandon(&shared.db, 0);
            }
            if !sent? {
                stalled();
                return Ok(());
            }
            offset
        }
    };
    *info.state.lock() = "online";
    *info.last_ack.lock() = Instant::now();
    let mut warned = AckWarnings::default();
    let mut chunk = Vec::with_capacity(STREAM_CHUNK);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        // register interest before reading so no append is missed
        let appended = log.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        chunk.clear();
        match log.read(position, STREAM_CHUNK, &mut chunk) {
            Some(0) => {}
            Some(len) => {
                if !write_or_stall(stream, &chunk, stall).await? {
                    stalled();
                    return Ok(());
                }
                position += len as u64;
                continue;
            }
            None => {
                tracing::warn!(
                    replica = %request.handle.addr,
                    "replica fell out of the backlog; it will resync"
                );
                return Ok(());
            }
        }
        tokio::select! {
            _ = &mut appended => {}
            _ = tick.tick() => {}
            read = stream.read_buf(input) => {
                if read? == 0 {
                    return Ok(());
                }
                let acks = read_acks(input, info, position, &mut warned, counters, &request.handle.addr);
                shared.repl.acks.notify_waiters();
                if let Err(error) = acks {
                    tracing::warn!(replica = %request.handle.addr, %error, "replica broke its link's protocol; disconnecting it");
                    return Ok(());
                }
            }
            event = inbox.recv() => {
                if matches!(event, None | Some(ClientEvent::Kill)) {
                    return Ok(());
                }
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Which ACK problems of one replica connection were logged already (once each: a
/// replica ACKs every second).
#[derive(Debug, Default)]
struct AckWarnings {
    clamped: bool,
    invalid: bool,
}

/// Applies every complete REPLCONF ACK in `input`. `sent` is the offset up to which
/// the stream was written to this replica: an ACK beyond it is clamped to it (counted
/// and logged), so `WAIT` and everything else counting acknowledgements never
/// counts bytes the replica cannot have. A negative or non-numeric offset is ignored.
fn read_acks(
    input: &mut BytesMut,
    info: &ReplicaInfo,
    sent: u64,
    warned: &mut AckWarnings,
    counters: &super::ReplCounters,
    replica: &str,
) -> std::io::Result<()> {
    loop {
        match parse_command(input, &REPLICA_INPUT) {
            Ok(Parsed::Command { args, consumed, .. }) => {
                let argv: Vec<&[u8]> = args.iter().map(|range| &input[range.clone()]).collect();
                if argv.len() >= 3
                    && argv[0].eq_ignore_ascii_case(b"REPLCONF")
                    && argv[1].eq_ignore_ascii_case(b"ACK")
                {
                    let offset = crate::protocol::frame::parse_i64(argv[2])
                        .and_then(|offset| u64::try_from(offset).ok());
                    match offset {
                        Some(offset) if offset > sent => {
                            counters.acks_clamped.fetch_add(1, Ordering::Relaxed);
                            if !std::mem::replace(&mut warned.clamped, true) {
                                tracing::warn!(
                                    replica,
                                    acked = offset,
                                    sent,
                                    "replica acknowledged more than was sent to it; clamped to the sent offset"
                                );
                            }
                            info.ack_offset.fetch_max(sent, Ordering::AcqRel);
                            info.has_acked.store(true, Ordering::Release);
                            *info.last_ack.lock() = Instant::now();
                        }
                        Some(offset) => {
                            info.ack_offset.fetch_max(offset, Ordering::AcqRel);
                            info.has_acked.store(true, Ordering::Release);
                            *info.last_ack.lock() = Instant::now();
                        }
                        None => {
                            counters.acks_invalid.fetch_add(1, Ordering::Relaxed);
                            if !std::mem::replace(&mut warned.invalid, true) {
                                tracing::warn!(
                                    replica,
                                    offset = %String::from_utf8_lossy(argv[2]),
                                    "replica sent an ACK offset that is not a non-negative integer; ignored"
                                );
                            }
                        }
                    }
                }
                input.advance(consumed);
            }
            Ok(Parsed::Incomplete { min_len }) => {
                if min_len.max(input.len()) > REPLICA_INPUT.max_query_buffer {
                    return Err(std::io::Error::other(format!(
                        "over {} bytes without a complete command",
                        REPLICA_INPUT.max_query_buffer
                    )));
                }
                return Ok(());
            }
            Err(error) => return Err(std::io::Error::other(error)),
        }
    }
}

/// Background task: keep-alive PINGs in the replication stream.
pub async fn ping_forever(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(super::PING_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // like Redis, no PING while CLIENT PAUSE holds the replication offset still
        if !shared.repl.is_replica()
            && !shared.repl.replicas.lock().is_empty()
            && shared.pause.current().is_none()
        {
            shared.repl.log.append_command(&[b"PING"]);
        }
    }
}
