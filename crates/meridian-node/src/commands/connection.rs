//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{COMMANDS, Ctx, parse_int};
use crate::client::{ClientEvent, ClientHandle};
use crate::error::{CmdResult, CommandError};
use crate::protocol::Protocol;
use crate::state::PauseMode;
use crate::tracking::{Tracking, TrackingOptions};

pub use crate::protocol::REDIS_COMPAT_VERSION;

pub fn ping(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.args.len() > 2 {
        return Err(ctx.wrong_arity());
    }
    if !ctx.out.is_resp3() && ctx.client.subscription_count() > 0 {
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out.bulk(ctx.args.get(1).copied().unwrap_or_default());
        return Ok(());
    }
    match ctx.args.get(1) {
        Some(message) => ctx.out.bulk(message),
        None => ctx.out.simple("PONG"),
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    ctx.out.bulk(ctx.args[1]);
    Ok(())
}

/// Logs the connection in as `user` with `password` (an ACL user's passwords are
/// SHA-256 digests compared in constant time, see `crate::acl::password`).
fn log_in(ctx: &mut Ctx<'_, '_>, user: &[u8], password: &[u8]) -> Result<(), CommandError> {
    let login = ctx.shared.acl.authenticate(user, password).ok_or_else(|| {
        CommandError::other("WRONGPASS invalid username-password pair or user is disabled.")
    })?;
    *ctx.client.handle.user.lock() = login.user.name().into();
    ctx.client.login = login;
    Ok(())
}

pub fn auth(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (user, password) = match ctx.args.len() {
        2 => {
            // like Redis: the one-argument form needs a default user with a password
            if ctx.shared.acl.login_default().user.nopass() {
                return Err(CommandError::other(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                ));
            }
            (&b"default"[..], ctx.args[1])
        }
        3 => (ctx.args[1], ctx.args[2]),
        _ => return Err(CommandError::Syntax),
    };
    log_in(ctx, user, password)?;
    ctx.out.ok();
    Ok(())
}

pub fn hello(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let mut protocol = ctx.out.proto;
    let mut position = 1;
    if let Some(version) = ctx.args.get(1) {
        let version = parse_int(version).map_err(|_| {
            CommandError::other("ERR Protocol version is not an integer or out of range")
        })?;
        protocol = match version {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => return Err(CommandError::other("NOPROTO unsupported protocol version")),
        };
        position = 2;
    }
    let mut name = None;
    let mut credentials = None;
    while position < ctx.args.len() {
        let option = ctx.args[position].to_ascii_uppercase();
        let remaining = ctx.args.len() - position - 1;
        match option.as_slice() {
            b"AUTH" if remaining >= 2 => {
                credentials = Some((ctx.args[position + 1], ctx.args[position + 2]));
                position += 3;
            }
            b"SETNAME" if remaining >= 1 => {
                name = Some(ctx.args[position + 1]);
                position += 2;
            }
            _ => {
                return Err(CommandError::other(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&option)
                )));
            }
        }
    }
    if let Some((user, password)) = credentials {
        log_in(ctx, user, password)?;
    }
    if !ctx.client.login.authenticated {
        let default = ctx.shared.acl.login_default();
        if !default.authenticated {
            return Err(CommandError::other(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            ));
        }
        ctx.client.login = default;
    }
    if let Some(name) = name {
        set_name(ctx, name)?;
    }
    ctx.out.proto = protocol;
    ctx.client
        .handle
        .resp3
        .store(protocol == Protocol::Resp3, Ordering::Relaxed);
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_COMPAT_VERSION.as_bytes());
    out.bulk(b"proto");
    out.integer(if protocol == Protocol::Resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.integer(ctx.client.handle.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Ok(())
}

pub fn select(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let index = ctx.int_arg(1)?;
    if index != 0 {
        return Err(CommandError::other("ERR DB index is out of range"));
    }
    ctx.out.ok();
    Ok(())
}

pub fn quit(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    ctx.client.close_after_reply = true;
    ctx.out.ok();
    Ok(())
}

pub fn reset(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    super::transactions::clear_multi(ctx);
    super::transactions::unwatch_all(ctx);
    super::pubsub::unsubscribe_all(ctx);
    ctx.out.proto = Protocol::Resp2;
    ctx.client.handle.resp3.store(false, Ordering::Relaxed);
    *ctx.client.handle.name.lock() = None;
    // like Redis: back to the default user, logged in when it needs no password
    ctx.client.login = ctx.shared.acl.login_default();
    *ctx.client.handle.user.lock() = crate::acl::DEFAULT_USER.into();
    ctx.client.readonly = false;
    ctx.client.asking = false;
    ctx.shared.tracking.disable(ctx.client.handle.id);
    ctx.out.simple("RESET");
    Ok(())
}

fn set_name(ctx: &mut Ctx<'_, '_>, name: &[u8]) -> CmdResult {
    if name.iter().any(|&byte| byte <= b' ' || byte > b'~') {
        return Err(CommandError::other(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    *ctx.client.handle.name.lock() =
        (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
    Ok(())
}

/// One CLIENT LIST / CLIENT INFO line, in Redis's format.
pub fn describe(handle: &ClientHandle, tracking: &Tracking) -> String {
    let last_active = handle.last_active_ms.load(Ordering::Relaxed);
    let idle = crate::store::coarse_ms().saturating_sub(last_active) / 1000;
    let command = COMMANDS
        .get(handle.last_command.load(Ordering::Relaxed))
        .map_or("NULL", |spec| spec.name);
    let subscriptions = handle.subscriptions.load(Ordering::Relaxed);
    let patterns = handle.pattern_subscriptions.load(Ordering::Relaxed);
    let mut flags = String::new();
    if subscriptions + patterns > 0 {
        flags.push('P');
    }
    if handle.in_multi.load(Ordering::Relaxed) {
        flags.push('x');
    }
    let (tracking_flags, redirect) = tracking.list_flags(handle.id);
    flags.push_str(&tracking_flags);
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db=0 sub={} psub={} ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={} tot-mem=0 events=r cmd={} user={} redir={} resp={}\n",
        handle.id,
        handle.addr,
        handle.laddr,
        handle.name.lock().clone().unwrap_or_default(),
        handle.created.elapsed().as_secs(),
        idle,
        flags,
        subscriptions,
        patterns,
        if handle.in_multi.load(Ordering::Relaxed) {
            0
        } else {
            -1
        },
        handle.pending_bytes.load(Ordering::Relaxed),
        command,
        handle.user.lock(),
        redirect,
        if handle.resp3.load(Ordering::Relaxed) {
            3
        } else {
            2
        },
    )
}

pub fn client(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let subcommand = ctx.args[1].to_ascii_uppercase();
    let arity_error = || {
        CommandError::other(format!(
            "ERR wrong number of arguments for 'client|{}' command",
            String::from_utf8_lossy(&subcommand).to_ascii_lowercase()
        ))
    };
    match subcommand.as_slice() {
        b"ID" => ctx.out.integer(ctx.client.handle.id as i64),
        b"SETNAME" => {
            if ctx.args.len() != 3 {
                return Err(arity_error());
            }
            set_name(ctx, ctx.args[2])?;
            ctx.out.ok();
        }
        b"GETNAME" => match ctx.client.handle.name.lock().clone() {
            Some(name) => ctx.out.bulk(name.as_bytes()),
            None => ctx.out.null(),
        },
        b"INFO" => {
            let text = describe(&ctx.client.handle, &ctx.shared.tracking);
            ctx.out.verbatim(&text);
        }
        b"LIST" => {
            let mut ids: Option<Vec<u64>> = None;
            let mut pubsub_only = None;
            let mut position = 2;
            while position < ctx.args.len() {
                match ctx.args[position].to_ascii_uppercase().as_slice() {
                    b"TYPE" if position + 1 < ctx.args.len() => {
                        pubsub_only = match ctx.args[position + 1].to_ascii_lowercase().as_slice() {
                            b"pubsub" => Some(true),
                            b"normal" => Some(false),
                            b"master" | b"replica" | b"slave" => Some(false),
                            other => {
                                return Err(CommandError::other(format!(
                                    "ERR Unknown client type '{}'",
                                    String::from_utf8_lossy(other)
                                )));
                            }
                        };
                        position += 2;
                    }
                    b"ID" if position + 1 < ctx.args.len() => {
                        let mut list = Vec::new();
                        for id in &ctx.args[position + 1..] {
                            let id = parse_int(id)
                                .ok()
                                .filter(|id| *id > 0)
                                .ok_or_else(|| CommandError::other("ERR Invalid client ID"))?;
                            list.push(id as u64);
                        }
                        ids = Some(list);
                        position = ctx.args.len();
                    }
                    _ => return Err(CommandError::Syntax),
                }
            }
            let clients: Vec<Arc<ClientHandle>> =
                ctx.shared.clients.lock().values().cloned().collect();
            let mut text = String::new();
            for handle in clients {
                if ids.as_ref().is_some_and(|ids| !ids.contains(&handle.id)) {
                    continue;
                }
                let is_pubsub = handle.subscriptions.load(Ordering::Relaxed)
                    + handle.pattern_subscriptions.load(Ordering::Relaxed)
                    > 0;
                if pubsub_only.is_some_and(|wanted| wanted != is_pubsub) {
                    continue;
                }
                text.push_str(&describe(&handle, &ctx.shared.tracking));
            }
            ctx.out.verbatim(&text);
        }
        b"KILL" => return client_kill(ctx),
        b"UNBLOCK" => {
            if !(3..=4).contains(&ctx.args.len()) {
                return Err(arity_error());
            }
            let id = parse_int(ctx.args[2])?;
            let error = match ctx.args.get(3).map(|mode| mode.to_ascii_uppercase()) {
                None => false,
                Some(mode) if mode == b"TIMEOUT" => false,
                Some(mode) if mode == b"ERROR" => true,
                Some(_) => {
                    return Err(CommandError::other(
                        "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
                    ));
                }
            };
            let handle = u64::try_from(id)
                .ok()
                .and_then(|id| ctx.shared.clients.lock().get(&id).cloned());
            let unblocked = handle.is_some_and(|handle| {
                handle.blocked.load(Ordering::Acquire)
                    && handle.events.send(ClientEvent::Unblock { error }).is_ok()
            });
            ctx.out.integer(i64::from(unblocked));
        }
        b"TRACKING" => {
            if ctx.args.len() < 3 {
                return Err(arity_error());
            }
            return client_tracking(ctx);
        }
        b"CACHING" => {
            if ctx.args.len() != 3 {
                return Err(arity_error());
            }
            let tracking = &ctx.shared.tracking;
            let id = ctx.client.handle.id;
            if tracking.info(id).redirect < 0 {
                return Err(CommandError::other(
                    "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
                ));
            }
            let yes = match ctx.args[2].to_ascii_lowercase().as_slice() {
                b"yes" => true,
                b"no" => false,
                _ => return Err(CommandError::Syntax),
            };
            tracking.set_caching(id, yes).map_err(CommandError::other)?;
            ctx.out.ok();
        }
        b"TRACKINGINFO" => {
            if ctx.args.len() != 2 {
                return Err(arity_error());
            }
            let info = ctx.shared.tracking.info(ctx.client.handle.id);
            ctx.out.map(3);
            ctx.out.bulk(b"flags");
            ctx.out.set(info.flags.len());
            for flag in &info.flags {
                ctx.out.bulk(flag.as_bytes());
            }
            ctx.out.bulk(b"redirect");
            ctx.out.integer(info.redirect);
            ctx.out.bulk(b"prefixes");
            ctx.out.array(info.prefixes.len());
            for prefix in &info.prefixes {
                ctx.out.bulk(prefix);
            }
        }
        b"GETREDIR" => {
            if ctx.args.len() != 2 {
                return Err(arity_error());
            }
            let info = ctx.shared.tracking.info(ctx.client.handle.id);
            ctx.out.integer(info.redirect);
        }
        b"SETINFO" => {
            if ctx.args.len() != 4 {
                return Err(arity_error());
            }
            ctx.out.ok();
        }
        b"PAUSE" => {
            if !(3..=4).contains(&ctx.args.len()) {
                return Err(arity_error());
            }
            // Redis checks the mode before the timeout
            let mode = match ctx.args.get(3).map(|mode| mode.to_ascii_uppercase()) {
                None => PauseMode::All,
                Some(mode) if mode == b"WRITE" => PauseMode::Write,
                Some(mode) if mode == b"ALL" => PauseMode::All,
                Some(_) => {
                    return Err(CommandError::other(
                        "ERR CLIENT PAUSE mode must be WRITE or ALL",
                    ));
                }
            };
            let timeout_ms = pause_timeout(ctx.args[2])?;
            ctx.shared.pause.pause(&ctx.shared.db, mode, timeout_ms);
            tracing::info!(
                mode = mode.name(),
                timeout_ms,
                client = ctx.client.handle.id,
                "clients paused"
            );
            ctx.out.ok();
        }
        b"UNPAUSE" => {
            if ctx.args.len() != 2 {
                return Err(arity_error());
            }
            ctx.shared.pause.unpause(&ctx.shared.db);
            tracing::info!(client = ctx.client.handle.id, "clients unpaused");
            ctx.out.ok();
        }
        b"NO-EVICT" | b"NO-TOUCH" => {
            if ctx.args.len() != 3 {
                return Err(arity_error());
            }
            ctx.out.ok();
        }
        b"HELP" => {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ID",
                "GETNAME",
                "SETNAME <name>",
                "INFO",
                "LIST [TYPE normal|pubsub] [ID id ...]",
                "KILL <ip:port> | KILL [ID id] [ADDR ip:port] [LADDR ip:port] [SKIPME yes|no]",
                "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]] [OPTIN] [OPTOUT] [NOLOOP]",
                "CACHING (YES|NO)",
                "TRACKINGINFO",
                "GETREDIR",
                "PAUSE <timeout> [WRITE|ALL]",
                "UNPAUSE",
                "UNBLOCK <clientid> [TIMEOUT|ERROR]",
            ];
            super::help(ctx.out, &lines);
        }
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(ctx.args[1])
            )));
        }
    }
    Ok(())
}

/// The CLIENT PAUSE timeout in milliseconds, refused like Redis's
/// getTimeoutFromObjectOrReply does.
fn pause_timeout(text: &[u8]) -> Result<u64, CommandError> {
    let timeout = parse_int(text)
        .map_err(|_| CommandError::other("ERR timeout is not an integer or out of range"))?;
    u64::try_from(timeout).map_err(|_| CommandError::other("ERR timeout is negative"))
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN] [OPTOUT] [NOLOOP],
/// checked in Redis's order: options first, then ON/OFF and mode conflicts.
fn client_tracking(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let mut options = TrackingOptions::default();
    let mut position = 3;
    while position < ctx.args.len() {
        let more = position + 1 < ctx.args.len();
        match ctx.args[position].to_ascii_uppercase().as_slice() {
            b"REDIRECT" if more => {
                position += 1;
                if options.redirect.is_some() {
                    return Err(CommandError::other(
                        "ERR A client can only redirect to a single other client",
                    ));
                }
                let id = parse_int(ctx.args[position])?;
                let target = u64::try_from(id)
                    .ok()
                    .and_then(|id| ctx.shared.clients.lock().get(&id).cloned())
                    .ok_or_else(|| {
                        CommandError::other("ERR The client ID you want redirect to does not exist")
                    })?;
                options.redirect = Some((target.id, Arc::downgrade(&target)));
            }
            b"BCAST" => options.bcast = true,
            b"OPTIN" => options.optin = true,
            b"OPTOUT" => options.optout = true,
            b"NOLOOP" => options.noloop = true,
            b"PREFIX" if more => {
                position += 1;
                options.prefixes.push(ctx.args[position].to_vec());
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 1;
    }
    let tracking = &ctx.shared.tracking;
    match ctx.args[2].to_ascii_uppercase().as_slice() {
        b"ON" => tracking
            .enable(&ctx.client.handle, options)
            .map_err(|refusal| CommandError::other(refusal.to_string()))?,
        b"OFF" => tracking.disable(ctx.client.handle.id),
        _ => return Err(CommandError::Syntax),
    }
    ctx.out.ok();
    Ok(())
}

fn client_kill(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let own_id = ctx.client.handle.id;
    let clients: Vec<Arc<ClientHandle>> = ctx.shared.clients.lock().values().cloned().collect();
    if ctx.args.len() == 3 {
        // old form: CLIENT KILL addr
        let addr = String::from_utf8_lossy(ctx.args[2]).into_owned();
        let Some(target) = clients.iter().find(|handle| handle.addr == addr) else {
            return Err(CommandError::other("ERR No such client"));
        };
        kill(ctx, target);
        ctx.out.ok();
        return Ok(());
    }
    if !ctx.args.len().is_multiple_of(2) {
        return Err(CommandError::Syntax);
    }
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut skip_me = true;
    let mut kind: Option<String> = None;
    for pair in ctx.args[2..].chunks(2) {
        let value = String::from_utf8_lossy(pair[1]).into_owned();
        match pair[0].to_ascii_uppercase().as_slice() {
            b"ID" => {
                id = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|id| *id > 0)
                        .ok_or_else(|| {
                            CommandError::other("ERR client-id should be greater than 0")
                        })?,
                )
            }
            b"ADDR" => addr = Some(value),
            b"LADDR" => laddr = Some(value),
            b"SKIPME" => {
                skip_me = match value.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(CommandError::Syntax),
                }
            }
            b"TYPE" => {
                let value = value.to_ascii_lowercase();
                if !matches!(
                    value.as_str(),
                    "normal" | "master" | "replica" | "slave" | "pubsub"
                ) {
                    return Err(CommandError::other(format!(
                        "ERR Unknown client type '{value}'"
                    )));
                }
                kind = Some(value);
            }
            b"USER" | b"MAXAGE" => {}
            _ => return Err(CommandError::Syntax),
        }
    }
    let mut killed = 0;
    if kind.as_deref() == Some("master") {
        // the link to the primary: it reconnects and resyncs (partially when it can)
        if let Some(shared) = ctx.shared.me.upgrade()
            && crate::replication::link::reconnect(&shared)
        {
            killed += 1;
        }
        ctx.out.integer(killed);
        return Ok(());
    }
    let replica_ids: Vec<u64> = ctx.shared.repl.replicas.lock().keys().copied().collect();
    for handle in &clients {
        let is_replica = replica_ids.contains(&handle.id);
        let type_differs = match kind.as_deref() {
            Some("replica" | "slave") => !is_replica,
            Some("pubsub") => {
                handle.subscriptions.load(Ordering::Relaxed)
                    + handle.pattern_subscriptions.load(Ordering::Relaxed)
                    == 0
            }
            Some("normal") => is_replica,
            _ => false,
        };
        if type_differs
            || id.is_some_and(|id| id != handle.id)
            || addr.as_ref().is_some_and(|addr| *addr != handle.addr)
            || laddr.as_ref().is_some_and(|laddr| *laddr != handle.laddr)
            || (skip_me && handle.id == own_id)
        {
            continue;
        }
        kill(ctx, handle);
        killed += 1;
    }
    ctx.out.integer(killed);
    Ok(())
}

fn kill(ctx: &mut Ctx<'_, '_>, handle: &Arc<ClientHandle>) {
    if handle.id == ctx.client.handle.id {
        ctx.client.close_after_reply = true;
    } else {
        handle.close();
    }
}

/// Fresh WATCH flag helper used when state is reset.
pub fn new_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
