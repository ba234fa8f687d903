//! The replica's side: follow a primary (REPLICAOF or the topology map),
//! resynchronise (PSYNC → +CONTINUE or +FULLRESYNC + snapshot), apply the
//! command stream, acknowledge the offset every second and on GETACK.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use meridian_topology::{NodeRole, TopologyMap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backlog::encode_command;
use super::{LinkState, PrimaryMandate, PrimaryTarget, as_primary_stream, snapshot};
use crate::commands::{ClientState, dispatch};
use crate::protocol::{Out, Parsed, Protocol, parse_command};
use crate::state::{ClientEvent, ClientHandle, Shared};
use crate::store::Access;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(500);
/// After a refused full sync: the primary builds a snapshot for every attempt.
const REFUSED_RETRY: Duration = Duration::from_secs(2);
const ACK_PERIOD: Duration = Duration::from_secs(1);
/// A primary PINGs every 10 s; silence for this long means the link is dead
/// (Redis repl-timeout).
const REPL_TIMEOUT: Duration = Duration::from_secs(60);

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
    *shared.repl.mandate.lock() = PrimaryMandate::None;
    shared.db.stats.replica.store(true, Ordering::Relaxed);
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
    let before = std::mem::replace(&mut *shared.repl.mandate.lock(), mandate);
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
    if shared.db.repl.is_active() {
        shared.db.repl.shift_replid();
    }
    tracing::info!(
        offset = shared.db.repl.offset(),
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
        None => *shared.repl.mandate.lock() = PrimaryMandate::None,
    }
}

/// Replicas of this node must resync against its new history.
fn disconnect_replicas(shared: &Shared) {
    let ids: Vec<u64> = shared.repl.replicas.lock().keys().copied().collect();
    let clients = shared.clients.lock();
    for id in ids {
        if let Some(handle) = clients.get(&id) {
            let _ = handle.events.send(ClientEvent::Kill);
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
            Err(error) if FullSyncRefused::is(&error) => {
                tracing::warn!(%error, "primary link failed");
                REFUSED_RETRY
            }
            Err(error) => {
                tracing::warn!(%error, "primary link failed");
                RETRY
            }
        };
        shared.repl.set_status("connect");
        tokio::time::sleep(retry).await;
    }
}

/// A full sync this replica refused: it would have replaced its data with another
/// replication history on a link that already brought it its data.
#[derive(Debug)]
struct FullSyncRefused {
    replid: String,
    offset: u64,
    own_replid: String,
    own_offset: u64,
    keys: usize,
}

impl std::fmt::Display for FullSyncRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused a full sync of history {} at offset {}: it would replace this replica's \
             {} keys (history {} at offset {}), which came from this primary's address; \
             the primary restarted without its data. Keeping the data; retrying. \
             A new primary named by a topology map (or REPLICAOF) may replace it",
            self.replid, self.offset, self.keys, self.own_replid, self.own_offset
        )
    }
}

impl std::error::Error for FullSyncRefused {}

impl FullSyncRefused {
    fn is(error: &std::io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<FullSyncRefused>())
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
) -> std::io::Result<()> {
    // only this link's task writes to a replica's dataset: read before locking
    let log = &shared.db.repl;
    let keys = shared.db.len();
    let own_history = log.is_active() && log.replid() == replid && offset >= log.offset();
    let gate = shared.repl.apply_gate.lock();
    if *gate != generation {
        return Err(link_error("link replaced"));
    }
    let mut link = shared.repl.link.lock();
    let Some(link) = link.as_mut() else {
        return Err(link_error("link replaced"));
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
    Err(std::io::Error::other(FullSyncRefused {
        replid: replid.to_string(),
        offset,
        own_replid: log.replid(),
        own_offset: log.offset(),
        keys,
    }))
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

fn link_error(text: impl Into<String>) -> std::io::Error {
    std::io::Error::other(text.into())
}

async fn command(stream: &mut TcpStream, args: &[&[u8]]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    encode_command(&mut buf, args);
    stream.write_all(&buf).await
}

/// Reads one CRLF-terminated line (without the CRLF).
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<String> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 2);
            return Ok(line);
        }
        if buf.len() > 64 * 1024 {
            return Err(link_error("primary sent an overlong line"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(link_error("primary closed the connection"));
        }
    }
}

async fn expect_ok(stream: &mut TcpStream, buf: &mut BytesMut, what: &str) -> std::io::Result<()> {
    let line = read_line(stream, buf).await?;
    if line.starts_with("+OK") {
        Ok(())
    } else {
        Err(link_error(format!("{what} refused by primary: {line}")))
    }
}

/// Connects, authenticates, negotiates PSYNC; returns the unread input.
async fn handshake(
    shared: &Shared,
    stream: &mut TcpStream,
    generation: u64,
) -> std::io::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let password = shared
        .repl
        .primary_auth
        .lock()
        .clone()
        .or_else(|| shared.requirepass());
    if let Some(password) = password {
        command(stream, &[b"AUTH", password.as_bytes()]).await?;
        let line = read_line(stream, &mut buf).await?;
        // a primary without a password refuses AUTH; the link works anyway
        if !line.starts_with("+OK") && !line.contains("without any password configured") {
            return Err(link_error(format!("AUTH refused by primary: {line}")));
        }
    }
    let port = shared.port.to_string();
    command(stream, &[b"REPLCONF", b"listening-port", port.as_bytes()]).await?;
    expect_ok(stream, &mut buf, "REPLCONF listening-port").await?;
    command(stream, &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"]).await?;
    expect_ok(stream, &mut buf, "REPLCONF capa").await?;
    let log = &shared.db.repl;
    let (replid, offset) = if log.is_active() {
        (log.replid(), log.offset().to_string())
    } else {
        ("?".to_string(), "-1".to_string())
    };
    command(stream, &[b"PSYNC", replid.as_bytes(), offset.as_bytes()]).await?;
    let line = read_line(stream, &mut buf).await?;
    let mut words = line.split_whitespace();
    match words.next() {
        Some("+FULLRESYNC") => {
            let (Some(replid), Some(offset)) = (
                words.next(),
                words.next().and_then(|offset| offset.parse::<u64>().ok()),
            ) else {
                return Err(link_error(format!("malformed reply to PSYNC: {line}")));
            };
            check_full_sync(shared, generation, replid, offset)?;
            shared.repl.set_status("sync");
            let header = read_line(stream, &mut buf).await?;
            let len: usize = header
                .strip_prefix('$')
                .and_then(|len| len.parse().ok())
                .ok_or_else(|| link_error(format!("malformed snapshot header: {header}")))?;
            while buf.len() < len {
                buf.reserve(len - buf.len());
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(link_error(
                        "primary closed the connection during the snapshot",
                    ));
                }
            }
            let payload = buf.split_to(len);
            let gate = shared.repl.apply_gate.lock();
            if *gate != generation {
                return Err(link_error("link replaced"));
            }
            let keys = snapshot::load(&shared.db, &payload)
                .map_err(|_| link_error("corrupt snapshot from primary"))?;
            log.reset(replid, offset);
            drop(gate);
            mark_synced(shared, generation);
            tracing::info!(keys, offset, "full resync from primary done");
        }
        Some("+CONTINUE") => {
            if let Some(replid) = words.next() {
                log.adopt_replid(replid);
            }
            mark_synced(shared, generation);
            tracing::info!(offset = log.offset(), "partial resync from primary");
        }
        _ => return Err(link_error(format!("PSYNC refused by primary: {line}"))),
    }
    Ok(buf)
}

async fn session(
    shared: &Arc<Shared>,
    target: &PrimaryTarget,
    generation: u64,
) -> std::io::Result<()> {
    shared.repl.set_status("connecting");
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| link_error("connect timed out"))??;
    stream.set_nodelay(true)?;
    let mut buf = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(shared, &mut stream, generation),
    )
    .await
    .map_err(|_| link_error("handshake timed out"))??;
    shared.repl.set_status("connected");
    let (events, _inbox) = tokio::sync::mpsc::unbounded_channel();
    let handle = Arc::new(ClientHandle {
        id: 0,
        addr: format!("{}:{}", target.host, target.port),
        laddr: stream
            .local_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_default(),
        created: Instant::now(),
        name: Default::default(),
        events,
        pending_bytes: Default::default(),
        last_command: Default::default(),
        last_active: parking_lot::Mutex::new(Instant::now()),
        resp3: Default::default(),
        subscriptions: Default::default(),
        pattern_subscriptions: Default::default(),
        in_multi: Default::default(),
    });
    let mut client = ClientState::new(handle, true);
    client.primary_link = true;
    let mut out = Out::new(Protocol::Resp2);
    let mut ack = tokio::time::interval(ACK_PERIOD);
    let mut transaction = Vec::new();
    let mut ack_now = !buf.is_empty()
        && apply(
            shared,
            &mut client,
            &mut out,
            &mut buf,
            &mut transaction,
            generation,
        )?;
    let mut last_read = tokio::time::Instant::now();
    loop {
        if ack_now {
            send_ack(shared, &mut stream).await?;
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                if read? == 0 {
                    return Ok(());
                }
                last_read = tokio::time::Instant::now();
                shared.repl.touch_io();
                ack_now = apply(shared, &mut client, &mut out, &mut buf, &mut transaction, generation)?;
            }
            _ = ack.tick() => ack_now = true,
            _ = tokio::time::sleep_until(last_read + REPL_TIMEOUT) => {
                return Err(link_error("no data from the primary within the replication timeout"));
            }
        }
    }
}

async fn send_ack(shared: &Shared, stream: &mut TcpStream) -> std::io::Result<()> {
    let offset = shared.db.repl.offset().to_string();
    command(stream, &[b"REPLCONF", b"ACK", offset.as_bytes()]).await
}

/// Applies every complete command in `buf` and records it in this node's
/// own backlog (same offsets as the primary). True when GETACK was seen.
fn apply(
    shared: &Shared,
    client: &mut ClientState,
    out: &mut Out,
    buf: &mut BytesMut,
    transaction: &mut Vec<u8>,
    generation: u64,
) -> std::io::Result<bool> {
    let gate = shared.repl.apply_gate.lock();
    if *gate != generation {
        return Err(link_error("link replaced"));
    }
    let limits = shared.config.limits;
    let log = &shared.db.repl;
    let mut position = 0;
    let mut getack = false;
    let result = as_primary_stream(|| {
        loop {
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
                        dispatch(shared, client, out, &argv, Access::Direct(&shared.db));
                        out.buf.clear();
                    }
                    // Like Redis, the offset only moves past whole transactions:
                    // a link cut between MULTI and EXEC resumes before MULTI.
                    let bytes = &buf[base..base + consumed];
                    if client.multi.is_some() || !transaction.is_empty() {
                        transaction.extend_from_slice(bytes);
                        if client.multi.is_none() {
                            log.append(transaction);
                            transaction.clear();
                        }
                    } else {
                        log.append(bytes);
                    }
                    position += consumed;
                }
                Ok(Parsed::Incomplete { .. }) => return Ok(()),
                Err(error) => return Err(link_error(format!("bad stream from primary: {error}"))),
            }
        }
    });
    buf.advance(position);
    drop(gate);
    result.map(|()| getack)
}
