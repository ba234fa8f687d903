//! The primary's side: a connection that sent PSYNC becomes a replica feed.
//! It gets a snapshot (+FULLRESYNC) or the missing backlog (+CONTINUE), then
//! the command stream, and reports REPLCONF ACK offsets back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::ReplicaInfo;
use super::snapshot;
use crate::protocol::{Parsed, parse_command};
use crate::state::{ClientEvent, ClientHandle, Shared};

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
    stream: &mut TcpStream,
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

async fn feed(
    shared: &Arc<Shared>,
    stream: &mut TcpStream,
    input: &mut BytesMut,
    request: &FeedRequest<'_>,
    info: &ReplicaInfo,
    inbox: &mut mpsc::UnboundedReceiver<ClientEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let log = &shared.db.repl;
    let counters = &shared.repl.counters;
    let mut position = match request.offset {
        Some(offset) if log.can_continue(&request.replid, offset) => {
            counters.sync_partial_ok.fetch_add(1, Ordering::Relaxed);
            stream
                .write_all(format!("+CONTINUE {}\r\n", log.replid()).as_bytes())
                .await?;
            tracing::info!(replica = %request.handle.addr, offset, "partial resync");
            offset
        }
        requested => {
            if requested.is_some() && request.replid != "?" {
                counters.sync_partial_err.fetch_add(1, Ordering::Relaxed);
            }
            counters.sync_full.fetch_add(1, Ordering::Relaxed);
            let snapshot_shared = shared.clone();
            let (offset, payload) = tokio::task::spawn_blocking(move || {
                let _serialised = snapshot_shared.repl.snapshot_lock.lock();
                snapshot::take(&snapshot_shared.db)
            })
            .await
            .map_err(std::io::Error::other)?;
            tracing::info!(
                replica = %request.handle.addr,
                offset,
                bytes = payload.len(),
                "full resync"
            );
            let header = format!(
                "+FULLRESYNC {} {offset}\r\n${}\r\n",
                log.replid(),
                payload.len()
            );
            stream.write_all(header.as_bytes()).await?;
            stream.write_all(&payload).await?;
            offset
        }
    };
    *info.state.lock() = "online";
    *info.last_ack.lock() = Instant::now();
    let limits = shared.config.limits;
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
                stream.write_all(&chunk).await?;
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
                read_acks(input, &limits, info)?;
                shared.repl.acks.notify_waiters();
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

/// Applies every complete REPLCONF ACK in `input`.
fn read_acks(
    input: &mut BytesMut,
    limits: &crate::protocol::Limits,
    info: &ReplicaInfo,
) -> std::io::Result<()> {
    loop {
        match parse_command(input, limits) {
            Ok(Parsed::Command { args, consumed, .. }) => {
                let argv: Vec<&[u8]> = args.iter().map(|range| &input[range.clone()]).collect();
                if argv.len() >= 3
                    && argv[0].eq_ignore_ascii_case(b"REPLCONF")
                    && argv[1].eq_ignore_ascii_case(b"ACK")
                    && let Some(offset) = crate::protocol::frame::parse_i64(argv[2])
                {
                    info.ack_offset
                        .fetch_max(offset.max(0) as u64, Ordering::AcqRel);
                    *info.last_ack.lock() = Instant::now();
                }
                input.advance(consumed);
            }
            Ok(Parsed::Incomplete { .. }) => return Ok(()),
            Err(error) => return Err(std::io::Error::other(error.to_string())),
        }
    }
}
