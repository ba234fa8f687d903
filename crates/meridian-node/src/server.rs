//! Accept loop and per-connection processing: read, parse every complete
//! command in the buffer, dispatch, then write all replies with one write.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::client::{ClientEvent, ClientHandle};
use crate::commands::id::Cmd;
use crate::commands::pubsub::encode_event;
use crate::commands::{
    Block, ClientState, Pending, command_id, dispatch, dispatch_at, key_positions, may_replicate,
    paused_by,
};
use crate::exec::{ClientId, ExecContext};
use crate::io_threads::{IoThreads, Placement, Seat};
use crate::net::Stream;
use crate::protocol::frame::unescape_inline;
use crate::protocol::{Limits, Out, Parsed, Partial, Protocol, parse_command_resuming};
use crate::replication::primary::{FeedRequest, serve_replica, wait_acks};
use crate::settings::Num;
use crate::state::{PauseMode, Shared};
use crate::store::Access;

const READ_CHUNK: usize = 16 * 1024;
/// Commands of a pipeline whose keys the store starts loading at once.
const PREFETCH_BATCH: usize = 16;
/// Most keys whose lookups one prefetch starts (the store's own limit).
const PREFETCH_KEYS: usize = crate::store::Db::PREFETCH_MAX;
/// Longest first argument of a lone command whose table bucket is loaded on the guess
/// that it is a key: hashing a long argument that is not one (ECHO, AUTH) would cost
/// more than the load saves, and a long key's own hashing dwarfs its cache miss.
const GUESSED_KEY_MAX: usize = 256;
/// Replies are flushed mid-batch once this much output accumulated.
const OUTPUT_FLUSH: usize = 1024 * 1024;

/// Whether a new client from `ip` would exceed `maxclients`. Nodes of this region's
/// topology (replicas syncing, slot migrations) are let in regardless: refusing them
/// would turn a flood of application clients into lost replicas.
fn over_maxclients(shared: &Shared, ip: std::net::IpAddr) -> bool {
    let limit = shared.config.maxclients.load(Ordering::Relaxed);
    if (shared.connected_clients() as u64) < limit {
        return false;
    }
    let ip = ip.to_string();
    let member = shared.topology.load().as_ref().is_some_and(|map| {
        map.shards
            .iter()
            .flat_map(|shard| std::iter::once(&shard.primary).chain(&shard.replicas))
            .any(|node| node.ip == ip)
    });
    !member
}

/// Connections beyond maxclients waiting to prove they are the operator or a replica.
/// High, because a flood of them must not crowd out the operator; each holds small
/// buffers ([`OVER_LIMIT_BUFFER`]) for at most [`OVER_LIMIT_GRACE`].
pub const OVER_LIMIT_PENDING: usize = 16_384;
/// Read and reply buffer of a connection beyond maxclients (an AUTH fits).
const OVER_LIMIT_BUFFER: usize = 512;
/// How long such a connection has to send its AUTH.
const OVER_LIMIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection beyond maxclients that may still log in as a privileged user; holds
/// one of the [`OVER_LIMIT_PENDING`] places until dropped.
struct OverLimitAttempt(Arc<Shared>);

impl OverLimitAttempt {
    fn start(shared: &Arc<Shared>) -> Option<OverLimitAttempt> {
        let pending = &shared.over_limit_pending;
        let taken = pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < OVER_LIMIT_PENDING).then_some(count + 1)
            })
            .is_ok();
        taken.then(|| OverLimitAttempt(shared.clone()))
    }
}

impl Drop for OverLimitAttempt {
    fn drop(&mut self) {
        self.0.over_limit_pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts clients until shutdown; each connection holds `active` until it ends.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    io_threads: Arc<IoThreads>,
    mut shutdown: watch::Receiver<bool>,
    active: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, peer)) => {
                        shared.counters.connections_received.fetch_add(1, Ordering::Relaxed);
                        if shared.protected_from(peer.ip()) {
                            shared.counters.rejected_connections.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(refuse(shared.clone(), stream, crate::state::PROTECTED_MODE_DENIED));
                            continue;
                        }
                        // beyond maxclients a client may still prove it is the operator or a
                        // replica (AUTH as a user allowed PSYNC) with its first command,
                        // within a short grace, while few such attempts are pending; without
                        // passwords nothing can be proven: refused at once, as Redis does
                        let over_limit = over_maxclients(&shared, peer.ip());
                        let provable = !shared.acl.login_default().authenticated;
                        let attempt = (over_limit && provable).then(|| OverLimitAttempt::start(&shared));
                        if over_limit && attempt.as_ref().is_none_or(Option::is_none) {
                            shared.counters.rejected_connections.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(refuse(shared.clone(), stream, MAXCLIENTS_REACHED));
                            continue;
                        }
                        let shared = shared.clone();
                        let shutdown = shutdown.clone();
                        let active = active.clone();
                        let attempt = attempt.flatten();
                        let serve = move |stream: TcpStream, seat: Seat| async move {
                            let result = handle(shared, stream, peer, attempt, shutdown).await;
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "connection ended with error");
                            }
                            drop(seat);
                            drop(active);
                        };
                        match io_threads.place() {
                            Placement::Here(seat) => {
                                tokio::spawn(serve(stream, seat));
                            }
                            // the socket leaves this thread's reactor for the other one's
                            Placement::Thread(runtime, seat) => match stream.into_std() {
                                Ok(socket) => {
                                    runtime.spawn(async move {
                                        match TcpStream::from_std(socket) {
                                            Ok(stream) => serve(stream, seat).await,
                                            Err(error) => tracing::warn!(%peer, %error, "cannot register connection"),
                                        }
                                    });
                                }
                                Err(error) => tracing::warn!(%peer, %error, "cannot move connection to its I/O thread"),
                            },
                        }
                    }
                    Err(error) => {
                        // EMFILE and friends: back off briefly instead of spinning
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

const MAXCLIENTS_MESSAGE: &str = "ERR max number of clients reached";
const MAXCLIENTS_REACHED: &str = "-ERR max number of clients reached\r\n";

/// Tells a client why it is not served (over TLS when the port speaks it) and closes.
async fn refuse(shared: Arc<Shared>, stream: TcpStream, answer: &'static str) {
    let stream = match shared.tls.current() {
        None => Stream::Plain(stream),
        Some(tls) => match crate::tls::accept(&tls.clients, stream).await {
            Ok(stream) => stream,
            Err(_) => return,
        },
    };
    crate::net::answer_and_close(stream, answer.as_bytes()).await;
}

enum Flow {
    Continue,
    Close,
}

/// What one [`Connection::process`] did.
struct Processed {
    flow: Flow,
    /// Commands run (a pipeline's batch; 1 for a lone request).
    commands: usize,
}

struct Connection {
    shared: Arc<Shared>,
    client: ClientState,
    out: Out,
    input: BytesMut,
    /// Parsing cannot progress until the input holds at least this many bytes.
    needed: usize,
    /// What was read of the incomplete command at the start of the input.
    partial: Option<Partial>,
    /// The next command is held by CLIENT PAUSE; true when it may write
    /// (held by WRITE and ALL pauses), false when only ALL holds it.
    paused_write: Option<bool>,
    /// The next command waits for the running script to end.
    script_wait: bool,
    /// Accepted beyond maxclients: served only once it logged in as a user allowed
    /// PSYNC (the operator, a replica) with its first command.
    over_limit: Option<OverLimitAttempt>,
    /// Commands parsed ahead (argument ranges, bytes), the next one first: see
    /// [`Connection::parse_ahead`]. Only within one [`Connection::process`].
    ahead: VecDeque<(Vec<Range<usize>>, usize)>,
}

impl Connection {
    /// How long this client may stay idle (`timeout`), unless it is a subscriber, which
    /// waits for messages by design.
    fn idle_limit(&self) -> Option<std::time::Duration> {
        if self.over_limit.is_some() {
            return Some(OVER_LIMIT_GRACE);
        }
        let seconds = self.shared.config.idle_timeout_secs.load(Ordering::Relaxed);
        let subscribed = !self.client.channels.is_empty() || !self.client.patterns.is_empty();
        (seconds > 0 && !subscribed).then(|| std::time::Duration::from_secs(seconds))
    }

    /// Whether the client proved, with a password, to be a user allowed to replicate
    /// (the operator's user may run everything, a replica's user PSYNC).
    fn privileged(&self) -> bool {
        let login = &self.client.login;
        let psync = self.shared.acl.catalog().lookup(b"psync");
        login.authenticated
            && !login.user.nopass()
            && (login.user.unrestricted() || psync.is_some_and(|unit| login.user.may_run(unit)))
    }

    /// Runs a command that is not in the input buffer: a blocked command's retry.
    fn run_again(&mut self, args: &[Vec<u8>]) {
        let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        run_command(&self.shared, &mut self.client, &mut self.out, &argv);
        self.shared
            .tracking
            .flush_own_pushes(self.client.handle.id, &mut self.out);
    }

    /// Parses up to [`PREFETCH_BATCH`] complete commands (fewer when their keys pass
    /// [`PREFETCH_KEYS`]) from `position` into `ahead` (the loop of
    /// [`Connection::process`] runs them from there instead of parsing them again) and
    /// has the store start loading what their keys' lookups read, so that the cache
    /// misses of a pipeline, or of one command's many keys, overlap.
    fn parse_ahead(&mut self, position: usize, limits: &Limits) {
        let mut ahead = std::mem::take(&mut self.ahead);
        let mut at = position;
        let mut partial = None;
        while ahead.len() < PREFETCH_BATCH {
            let Ok(Parsed::Command {
                args,
                consumed,
                inline: false,
            }) = parse_command_resuming(&self.input[at..], limits, &mut partial)
            else {
                break;
            };
            at += consumed;
            ahead.push_back((args, consumed));
        }
        // A lone command of up to three arguments (GET, SET, INCR) has the table bucket
        // of its first argument loaded on the guess that it is the key: the command's
        // name is not looked up (that would cost more than the load saves), and the load
        // arrives while the command is checked and routed. Longer lone commands (MGET,
        // MSET, DEL, SET with options) and pipelines find their keys in the command table.
        let lone = ahead.len() == 1;
        match ahead.front() {
            None => {}
            Some((args, _)) if lone && args.len() <= 3 => {
                if let Some(key) = args.get(1).filter(|key| key.len() <= GUESSED_KEY_MAX) {
                    let key = &self.input[position + key.start..position + key.end];
                    self.shared.db.prefetch(&[key]);
                }
            }
            Some(_) => {
                let mut keys: [&[u8]; PREFETCH_KEYS] = [&[]; PREFETCH_KEYS];
                let mut found = 0;
                let mut covered = 0;
                let mut base = position;
                for (args, consumed) in &ahead {
                    let arg = |index: usize| {
                        &self.input[base + args[index].start..base + args[index].end]
                    };
                    covered += 1;
                    let position = args
                        .first()
                        .and_then(|_| self.client.last_command.lookup(arg(0)));
                    if let Some((first, last, step)) =
                        position.and_then(|position| key_positions(position, args.len(), arg))
                    {
                        // a pipeline on one key (a counter, a queue) loads it once: a
                        // command's first key is skipped when the one before had it last
                        let mut index = first;
                        if found > 0 && keys[found - 1] == arg(index) {
                            index += step;
                        }
                        while index <= last && found < PREFETCH_KEYS {
                            keys[found] = arg(index);
                            found += 1;
                            index += step;
                        }
                    }
                    if found == PREFETCH_KEYS {
                        break;
                    }
                    base += consumed;
                }
                self.shared.db.prefetch(&keys[..found]);
                // commands past the last key prefetched (a pipeline of MSETs) are parsed
                // again, and their keys prefetched, once these ran
                ahead.truncate(covered);
            }
        }
        self.ahead = ahead;
    }

    /// Parses and runs every complete command in the input buffer. Stops early
    /// when the output grows large so it can be flushed.
    fn process(&mut self) -> Processed {
        let mut limits = self.shared.config.limits();
        // a client the default user does not log in is held to small requests until AUTH
        let password_set =
            !self.client.login.authenticated && !self.shared.acl.login_default().authenticated;
        self.needed = 0;
        let mut position = 0;
        let mut flow = Flow::Continue;
        let mut commands = 0;
        self.ahead.clear();
        loop {
            // re-evaluated per command: AUTH may be followed by large requests in one batch
            let unauthenticated = password_set && !self.client.login.authenticated;
            if unauthenticated != limits.unauthenticated {
                // what was parsed ahead under the other limits is parsed again
                self.ahead.clear();
                limits.unauthenticated = unauthenticated;
            }
            if self.ahead.is_empty() && self.partial.is_none() && self.over_limit.is_none() {
                self.parse_ahead(position, &limits);
            }
            let parsed = match self.ahead.pop_front() {
                Some((args, consumed)) => Ok(Parsed::Command {
                    args,
                    consumed,
                    inline: false,
                }),
                None => parse_command_resuming(&self.input[position..], &limits, &mut self.partial),
            };
            match parsed {
                Ok(Parsed::Command {
                    args,
                    consumed,
                    inline,
                }) => {
                    let base = position;
                    position += consumed;
                    if args.is_empty() {
                        continue;
                    }
                    let owned: Vec<Vec<u8>>;
                    let argv: Vec<&[u8]> = if inline {
                        owned = args
                            .iter()
                            .map(|range| {
                                let raw = &self.input[base + range.start..base + range.end];
                                unescape_inline(raw).unwrap_or_else(|| raw.to_vec())
                            })
                            .collect();
                        owned.iter().map(Vec::as_slice).collect()
                    } else {
                        args.iter()
                            .map(|range| &self.input[base + range.start..base + range.end])
                            .collect()
                    };
                    // CLIENT PAUSE: leave the command (and everything after it)
                    // unparsed; the connection waits, then parses it again
                    if let Some((mode, _)) = self.shared.pause.current()
                        && paused_by(mode, &self.client, &argv)
                    {
                        self.paused_write = Some(may_replicate(&self.client, &argv));
                        position = base;
                        break;
                    }
                    // a running script may take any shard as it goes: wait for it off
                    // the runtime's threads (SCRIPT KILL alone goes through, to stop it)
                    if self.shared.scripts.is_running() && !stops_scripts(&argv) {
                        self.script_wait = true;
                        position = base;
                        break;
                    }
                    self.shared
                        .counters
                        .commands_processed
                        .add(self.client.handle.id, 1);
                    commands += 1;
                    if self.over_limit.is_some() {
                        let login = matches!(command_id(argv[0]), Some(Cmd::Auth | Cmd::Hello));
                        let reply = self.out.mark();
                        if login {
                            run_command(&self.shared, &mut self.client, &mut self.out, &argv);
                        }
                        if login && self.privileged() {
                            self.over_limit = None;
                            continue;
                        }
                        self.out.truncate(reply);
                        self.shared
                            .counters
                            .rejected_connections
                            .fetch_add(1, Ordering::Relaxed);
                        self.out.error(MAXCLIENTS_MESSAGE);
                        flow = Flow::Close;
                        break;
                    }
                    run_command(&self.shared, &mut self.client, &mut self.out, &argv);
                    let tracking = &self.shared.tracking;
                    if tracking.is_active() {
                        // invalidations this command caused for this client follow its reply
                        tracking.flush_own_pushes(self.client.handle.id, &mut self.out);
                        // CLIENT CACHING covers only the command after it
                        let name = args.first().map_or(&[][..], |range| {
                            &self.input[base + range.start..base + range.end]
                        });
                        tracking.after_command(
                            self.client.handle.id,
                            command_id(name),
                            self.client.multi.is_some(),
                        );
                    }
                    if self.client.close_after_reply {
                        flow = Flow::Close;
                        break;
                    }
                    // WAIT / PSYNC continue outside the synchronous dispatcher
                    if self.client.pending.is_some() {
                        break;
                    }
                    if self.out.len() >= OUTPUT_FLUSH {
                        break;
                    }
                }
                Ok(Parsed::Incomplete { min_len }) => {
                    self.needed = min_len;
                    break;
                }
                Err(error) => {
                    self.out.error(&format!("ERR Protocol error: {error}"));
                    flow = Flow::Close;
                    break;
                }
            }
        }
        // `needed` was computed relative to `position`, the new buffer start
        self.input.advance(position);
        // tracking may have been switched off after a command queued a push
        self.shared
            .tracking
            .flush_own_pushes(self.client.handle.id, &mut self.out);
        Processed { flow, commands }
    }
}

/// Runs one command of a client connection, each store access locking for itself.
fn run_command(shared: &Shared, client: &mut ClientState, out: &mut Out, argv: &[&[u8]]) {
    let exec = ExecContext::client(client.handle.id);
    let access = Access::direct(&shared.db);
    match argv
        .first()
        .and_then(|name| client.last_command.lookup(name))
    {
        Some(position) => dispatch_at(shared, exec, client, out, argv, access, position),
        // (an unknown command's error)
        None => dispatch(shared, exec, client, out, argv, access),
    }
}

/// Writes what is queued; a connection told to close stops at once, even in the
/// middle of a write its client does not read.
async fn flush(stream: &mut Stream, connection: &mut Connection) -> std::io::Result<()> {
    let Connection {
        shared,
        client,
        out,
        ..
    } = connection;
    let handle = &client.handle;
    let closed = || {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "closed by the node (output buffer limit or CLIENT KILL)",
        )
    };
    if handle.is_closing() {
        return Err(closed());
    }
    let write = write_out(stream, out, shared, handle.id);
    tokio::pin!(write);
    // a write the socket takes at once (the usual case) finishes here, without joining
    // the close signal's waiter list (a lock and a list entry per reply otherwise)
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(written) = first {
        return written;
    }
    tokio::select! {
        biased;
        () = handle.closed() => Err(closed()),
        written = &mut write => written,
    }
}

async fn write_out(
    stream: &mut Stream,
    out: &mut Out,
    shared: &Shared,
    client: ClientId,
) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out.encoded()).await?;
        stream.flush().await?;
        shared
            .counters
            .net_output_bytes
            .add(client, out.len() as u64);
        out.flushed(4 * OUTPUT_FLUSH, READ_CHUNK);
    }
    Ok(())
}

/// Redis's anetKeepAlive: probes after `seconds` of silence, then every third of
/// that, and the connection dropped after 3 unanswered.
fn set_keepalive(stream: &TcpStream, seconds: u64) -> std::io::Result<()> {
    let idle = std::time::Duration::from_secs(seconds);
    let interval = std::time::Duration::from_secs((seconds / 3).max(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(3);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    over_limit: Option<OverLimitAttempt>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = shared.config.settings.get(Num::TcpKeepalive);
    if keepalive > 0
        && let Err(error) = set_keepalive(&stream, keepalive.unsigned_abs())
    {
        // as Redis: the client is served without it
        tracing::debug!(%peer, %error, "tcp keepalive not set");
    }
    let laddr = stream
        .local_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    // with TLS, a client that never finishes the handshake is dropped by its timeout
    let mut stream = match shared.tls.current() {
        None => Stream::Plain(stream),
        Some(tls) => crate::tls::accept(&tls.clients, stream).await?,
    };
    let (events, mut inbox) = mpsc::unbounded_channel();
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let handle = Arc::new(
        ClientHandle::new(id, peer.to_string(), laddr, events)
            .with_output_limit(shared.config.settings.pubsub_output_limit.clone()),
    );
    shared.clients.lock().insert(id, handle.clone());
    let mut client = ClientState::new(handle.clone(), shared.acl.login_default());
    client.peer_certified = stream.peer_certified();
    let chunk = if over_limit.is_some() {
        OVER_LIMIT_BUFFER
    } else {
        READ_CHUNK
    };
    let mut connection = Connection {
        shared: shared.clone(),
        client,
        out: Out::with_capacity(Protocol::Resp2, chunk),
        input: BytesMut::with_capacity(chunk),
        needed: 0,
        partial: None,
        paused_write: None,
        script_wait: false,
        over_limit,
        ahead: VecDeque::with_capacity(PREFETCH_BATCH),
    };
    let result = serve_connection(&mut connection, &mut stream, &mut inbox, &mut shutdown).await;
    // cleanup: registry, tracking, subscriptions, watches
    shared.clients.lock().remove(&id);
    shared.tracking.disable(id);
    let channels: Vec<Vec<u8>> = connection.client.channels.iter().cloned().collect();
    let patterns: Vec<Vec<u8>> = connection.client.patterns.iter().cloned().collect();
    shared.broker.remove_client(id, &channels, &patterns);
    let flag = connection.client.watch_flag.clone();
    let mut access = Access::direct(&shared.db);
    for key in &connection.client.watched {
        access.with_key(key, |shard, _| shard.unwatch(key, &flag));
    }
    result
}

async fn serve_connection(
    connection: &mut Connection,
    stream: &mut Stream,
    inbox: &mut mpsc::UnboundedReceiver<ClientEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let shared = connection.shared.clone();
    let limits = shared.config.limits;
    // After SIGTERM a connection keeps serving what clients already sent and
    // closes once it has been idle for DRAIN_IDLE. The stop is read from a flag, an
    // idle connection woken by a `NodeStopping` event: polling the shutdown watch
    // in every turn locked its waiter list, one lock for all connections, per request.
    const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_millis(200);
    loop {
        // set before the node wakes the registered connections (under the registry's
        // lock, which this connection took to register), so none misses it
        let draining = shared.shutting_down.load(Ordering::Relaxed);
        // keep room for the next read; large pending bulks grow in big steps (a
        // connection beyond maxclients reads little until it logged in)
        let spare = connection.input.capacity() - connection.input.len();
        if spare < READ_CHUNK && connection.over_limit.is_none() {
            let wanted = connection
                .needed
                .saturating_sub(connection.input.len())
                .clamp(READ_CHUNK, 8 * 1024 * 1024);
            connection.input.reserve(wanted);
        }
        let idle_limit = connection.idle_limit();
        tokio::select! {
            biased;
            event = inbox.recv() => {
                let Some(event) = event else { return Ok(()) };
                if deliver(connection, event) {
                    flush(stream, connection).await?;
                    return Ok(());
                }
                // drain whatever else is queued so one write carries it all
                while connection.out.len() < OUTPUT_FLUSH {
                    let Ok(event) = inbox.try_recv() else { break };
                    if deliver(connection, event) {
                        flush(stream, connection).await?;
                        return Ok(());
                    }
                }
                flush(stream, connection).await?;
            }
            read = stream.read_buf(&mut connection.input) => {
                let read = read?;
                if read == 0 {
                    return Ok(());
                }
                shared.counters.net_input_bytes.add(connection.client.handle.id, read as u64);
                connection.client.handle.last_active_ms.store(crate::store::coarse_ms(), Ordering::Relaxed);
                if connection.input.len() > limits.max_query_buffer {
                    tracing::warn!(client = connection.client.handle.id, "closing client that reached the query buffer limit");
                    return Ok(());
                }
                if connection.input.len() < connection.needed {
                    continue;
                }
                connection.needed = 0;
                loop {
                    let Processed { flow, commands } = connection.process();
                    // Let the other connections that are ready read and run their
                    // commands first, so one tick's replies go out together (as Redis
                    // writes them before it sleeps): a client woken by each reply
                    // apart costs the kernel more than the commands cost us (GET -P 16:
                    // 1.6 s of kernel time per 2M requests, 0.7 s with this). Not for
                    // a lone command: there the yield's own cost (the task scheduled
                    // and polled once more) outweighs what it saves (-P 1: 1.5-2% less
                    // CPU per request without it, -P 16: 12-16% more).
                    if commands > 1 {
                        tokio::task::yield_now().await;
                    }
                    flush(stream, connection).await?;
                    if matches!(flow, Flow::Close) {
                        stream.shutdown().await.ok();
                        return Ok(());
                    }
                    match connection.client.pending.take() {
                        None => {}
                        Some(Pending::Wait { replicas, offset, timeout_ms }) => {
                            let acked = wait_acks(&shared, replicas, offset, timeout_ms).await;
                            connection.out.integer(acked as i64);
                            flush(stream, connection).await?;
                        }
                        Some(Pending::Replica { replid, offset }) => {
                            let request = FeedRequest {
                                replid,
                                offset,
                                listening_port: connection.client.listening_port,
                                handle: &connection.client.handle,
                            };
                            let input = std::mem::take(&mut connection.input);
                            return serve_replica(shared.clone(), stream, input, request, inbox, shutdown).await;
                        }
                        Some(Pending::Origin(op)) => {
                            let exec = ExecContext::client(connection.client.handle.id);
                            crate::origin::continuation::complete(&shared, exec, &mut connection.client, &mut connection.out, op).await;
                            // a write-through write may wait for the peer regions too
                            if let Some(Pending::Regions(wait)) = connection.client.pending.take() {
                                shared.regions.finish(wait, &mut connection.out).await;
                            }
                            // invalidations the write caused for this client follow its reply
                            shared.tracking.flush_own_pushes(connection.client.handle.id, &mut connection.out);
                            flush(stream, connection).await?;
                        }
                        Some(Pending::Regions(wait)) => {
                            shared.regions.finish(wait, &mut connection.out).await;
                            flush(stream, connection).await?;
                        }
                        Some(Pending::AclLoad) => {
                            match crate::acl_file::load(&shared).await {
                                Ok(()) => connection.out.ok(),
                                Err(error) => connection.out.error(&format!("ERR {error}")),
                            }
                            flush(stream, connection).await?;
                        }
                        Some(Pending::Migrate(job)) => {
                            crate::commands::migrate::run(&shared, job, &mut connection.out).await;
                            flush(stream, connection).await?;
                        }
                        Some(Pending::Block(block)) => {
                            if !wait_unblocked(connection, stream, inbox, shutdown, block).await? {
                                return Ok(());
                            }
                            // a strong write's reply waits for the peer regions
                            if let Some(Pending::Regions(wait)) = connection.client.pending.take() {
                                shared.regions.finish(wait, &mut connection.out).await;
                            }
                            flush(stream, connection).await?;
                        }
                    }
                    if std::mem::take(&mut connection.script_wait) {
                        tokio::select! {
                            _ = shared.scripts.wait_idle() => {}
                            _ = shutdown.changed() => return Ok(()),
                        }
                    }
                    if let Some(writes) = connection.paused_write.take() {
                        let pause = &shared.pause;
                        pause.blocked.fetch_add(1, Ordering::Relaxed);
                        let ended = tokio::select! {
                            _ = pause.wait_while(|mode| writes || mode == PauseMode::All) => true,
                            _ = shutdown.changed() => false,
                        };
                        pause.blocked.fetch_sub(1, Ordering::Relaxed);
                        if !ended {
                            return Ok(());
                        }
                    }
                    // stopped early because of output volume or a pause: keep going
                    if connection.needed > 0 || connection.input.is_empty() {
                        break;
                    }
                }
                if connection.input.is_empty() && connection.input.capacity() > 4 * 1024 * 1024 {
                    connection.input = BytesMut::with_capacity(READ_CHUNK);
                }
            }
            () = idle_for(draining.then_some(DRAIN_IDLE)), if draining => {
                return Ok(());
            }
            () = idle_for(idle_limit), if idle_limit.is_some() => {
                if connection.over_limit.is_some() {
                    connection.out.error(MAXCLIENTS_MESSAGE);
                    flush(stream, connection).await?;
                    return Ok(());
                }
                tracing::debug!(client = connection.client.handle.id, "closing idle client (timeout)");
                return Ok(());
            }
        }
    }
}

/// Sleeps for `limit` (forever without one). The timer is only made once polled: a
/// disabled `select!` branch still builds its future, and `tokio::time::sleep` reads the
/// clock as it is made (two clock reads per request otherwise).
async fn idle_for(limit: Option<std::time::Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// A blocked client (BLPOP and friends, see `crate::blocking`): runs its command again
/// whenever its turn comes until that takes something (or answers an error, such as a
/// MOVED after a topology change), or answers the timeout. Pushed events (tracking,
/// pub/sub) still reach it; bytes it sends meanwhile wait in its input buffer. Returns
/// false when the connection must end: closed by the client (so nothing is popped for a
/// client that is gone), killed, over its query buffer limit, or the node stopping.
/// SCRIPT KILL: the one command that runs while a script holds the keyspace.
fn stops_scripts(args: &[&[u8]]) -> bool {
    args.len() == 2
        && args[0].eq_ignore_ascii_case(b"SCRIPT")
        && args[1].eq_ignore_ascii_case(b"KILL")
}

async fn wait_unblocked(
    connection: &mut Connection,
    stream: &mut Stream,
    inbox: &mut mpsc::UnboundedReceiver<ClientEvent>,
    shutdown: &mut watch::Receiver<bool>,
    block: Block,
) -> std::io::Result<bool> {
    let shared = connection.shared.clone();
    let waiter = shared.blocking.join(block.keys);
    let handle = connection.client.handle.clone();
    handle.blocked.store(true, Ordering::Release);
    let deadline = block
        .timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    let outcome = async {
        // a push may have come between the command and joining the queue
        let mut retry = true;
        loop {
            if retry {
                retry = false;
                connection.run_again(&block.args);
                match connection.client.pending.take() {
                    Some(Pending::Block(_)) => shared.blocking.pass(&waiter),
                    other => {
                        connection.client.pending = other;
                        return Ok(true);
                    }
                }
            }
            tokio::select! {
                biased;
                event = inbox.recv() => {
                    let Some(event) = event else { return Ok(false) };
                    if let ClientEvent::Unblock { error } = event {
                        if error {
                            connection
                                .out
                                .error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
                        } else {
                            connection.out.null_array();
                        }
                        return Ok(true);
                    }
                    if deliver(connection, event) {
                        return Ok(false);
                    }
                    flush(stream, connection).await?;
                }
                () = waiter.turn() => retry = true,
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    connection.out.null_array();
                    return Ok(true);
                }
                read = stream.read_buf(&mut connection.input) => {
                    if read? == 0 || connection.input.len() > shared.config.limits.max_query_buffer {
                        return Ok(false);
                    }
                }
                _ = shutdown.changed() => return Ok(false),
            }
        }
    }
    .await;
    handle.blocked.store(false, Ordering::Release);
    shared.blocking.leave(waiter);
    outcome
}

/// Encodes one pushed event; returns true when the connection must close.
fn deliver(connection: &mut Connection, event: ClientEvent) -> bool {
    let handle = &connection.client.handle;
    handle
        .pending_bytes
        .fetch_sub(event.size(), Ordering::Relaxed);
    if handle.is_closing() {
        return true;
    }
    match event {
        ClientEvent::Kill => return true,
        // the wait it was meant for is over; the loop reads the stop from `shutting_down`
        ClientEvent::Unblock { .. } | ClientEvent::NodeStopping => return false,
        _ => {}
    }
    encode_event(&mut connection.out, &event);
    false
}
