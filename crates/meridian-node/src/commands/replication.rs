//! REPLICAOF / SLAVEOF, ROLE, WAIT, REPLCONF, PSYNC / SYNC, and what the
//! dispatcher propagates for each write.

use std::sync::atomic::Ordering;

use super::{Cmd, Ctx, Pending, Spec, parse_int};
use crate::error::{CmdResult, CommandError};
pub use crate::replication::backlog::encode_command;
use crate::replication::{PrimaryMandate, PrimaryTarget, link};
use crate::state::Shared;
use crate::store::{Access, ValueRef};

/// Refusals for a client write: a replica is read-only, and a primary with
/// min-replicas-to-write needs enough good replicas.
pub fn check_write(shared: &Shared) -> Result<(), CommandError> {
    if shared.db.stats.replica.load(Ordering::Relaxed) {
        return Err(CommandError::other(
            "READONLY You can't write against a read only replica.",
        ));
    }
    if shared.repl.not_enough_replicas() {
        return Err(CommandError::other(
            "NOREPLICAS Not enough good replicas to write.",
        ));
    }
    Ok(())
}

/// Encodes the deterministic effects of a write that just ran: relative
/// expiries and computed values become absolute state (SET ... PXAT,
/// PEXPIREAT, HSET), everything else is propagated as sent.
pub fn encode_effects(spec: &Spec, args: &[&[u8]], keys: &mut Access<'_, '_>, buf: &mut Vec<u8>) {
    match spec.id {
        Cmd::Set
        | Cmd::Setnx
        | Cmd::Setex
        | Cmd::Psetex
        | Cmd::Getset
        | Cmd::Getdel
        | Cmd::Getex
        | Cmd::Append
        | Cmd::Setrange
        | Cmd::Incr
        | Cmd::Decr
        | Cmd::Incrby
        | Cmd::Decrby
        | Cmd::Incrbyfloat
        | Cmd::Expire
        | Cmd::Pexpire
        | Cmd::Expireat
        | Cmd::Pexpireat
        | Cmd::Persist => {
            let key = args.get(1).copied().unwrap_or_default();
            keys.with_key(key, |shard, _| match shard.peek(key) {
                None => encode_command(buf, &[b"DEL", key]),
                Some(entry) => {
                    let at = itoa::Buffer::new().format(entry.expire_at()).to_string();
                    match (entry.value(), entry.expire_at()) {
                        (ValueRef::Str(value), 0) => encode_command(buf, &[b"SET", key, value]),
                        (ValueRef::Str(value), _) => {
                            encode_command(buf, &[b"SET", key, value, b"PXAT", at.as_bytes()])
                        }
                        (_, 0) => encode_command(buf, &[b"PERSIST", key]),
                        (_, _) => encode_command(buf, &[b"PEXPIREAT", key, at.as_bytes()]),
                    }
                }
            });
        }
        Cmd::Hincrby | Cmd::Hincrbyfloat => {
            let key = args.get(1).copied().unwrap_or_default();
            let field = args.get(2).copied().unwrap_or_default();
            keys.with_key(key, |shard, _| {
                if let Some(entry) = shard.peek(key)
                    && let ValueRef::Hash(hash) = entry.value()
                    && let Some(value) = hash.get(field)
                {
                    encode_command(buf, &[b"HSET", key, field, value]);
                }
            });
        }
        // absolute expiry, so replicas agree on it whatever their clock
        Cmd::Restore | Cmd::RestoreAsking => {
            let key = args.get(1).copied().unwrap_or_default();
            let payload = args.get(3).copied().unwrap_or_default();
            keys.with_key(key, |shard, _| match shard.peek(key) {
                None => encode_command(buf, &[b"DEL", key]),
                Some(entry) => {
                    let at = itoa::Buffer::new().format(entry.expire_at()).to_string();
                    encode_command(
                        buf,
                        &[
                            b"RESTORE",
                            key,
                            at.as_bytes(),
                            payload,
                            b"REPLACE",
                            b"ABSTTL",
                        ],
                    );
                }
            });
        }
        // a blocking pop replicates as its non-blocking form (the same keys, so the same
        // element, from the same state): a replica never waits
        Cmd::Blpop | Cmd::Brpop => {
            let side: &[u8] = if spec.id == Cmd::Blpop {
                b"LEFT"
            } else {
                b"RIGHT"
            };
            encode_multi_pop(buf, b"LMPOP", args, side);
        }
        Cmd::Blmove => {
            let mut command: Vec<&[u8]> = vec![b"LMOVE"];
            command.extend_from_slice(args.get(1..5).unwrap_or_default());
            encode_command(buf, &command);
        }
        Cmd::Brpoplpush => {
            let mut command: Vec<&[u8]> = vec![b"RPOPLPUSH"];
            command.extend_from_slice(args.get(1..3).unwrap_or_default());
            encode_command(buf, &command);
        }
        // the blocking multi-pops drop their timeout
        Cmd::Blmpop | Cmd::Bzmpop => {
            let name: &[u8] = if spec.id == Cmd::Blmpop {
                b"LMPOP"
            } else {
                b"ZMPOP"
            };
            let mut command: Vec<&[u8]> = vec![name];
            command.extend_from_slice(args.get(2..).unwrap_or_default());
            encode_command(buf, &command);
        }
        Cmd::Bzpopmin | Cmd::Bzpopmax => {
            let side: &[u8] = if spec.id == Cmd::Bzpopmin {
                b"MIN"
            } else {
                b"MAX"
            };
            encode_multi_pop(buf, b"ZMPOP", args, side);
        }
        _ => encode_command(buf, args),
    }
}

/// BLPOP-style `args` (keys, then a timeout) as the multi-key pop `name` over the same
/// keys from `side`.
fn encode_multi_pop(buf: &mut Vec<u8>, name: &[u8], args: &[&[u8]], side: &[u8]) {
    let keys = &args[1..args.len().saturating_sub(1).max(1)];
    let count = itoa::Buffer::new().format(keys.len()).to_string();
    let mut command: Vec<&[u8]> = vec![name, count.as_bytes()];
    command.extend_from_slice(keys);
    command.push(side);
    encode_command(buf, &command);
}

pub fn replicaof(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (host, port) = (ctx.args[1], ctx.args[2]);
    let Some(shared) = ctx.shared.me.upgrade() else {
        return Err(CommandError::other("ERR node is shutting down"));
    };
    if host.eq_ignore_ascii_case(b"no") && port.eq_ignore_ascii_case(b"one") {
        link::promote(&shared, PrimaryMandate::Command);
        ctx.out.ok();
        return Ok(());
    }
    let port = parse_int(port)
        .ok()
        .and_then(|port| u16::try_from(port).ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| CommandError::other("ERR Invalid master port"))?;
    let target = PrimaryTarget {
        host: String::from_utf8_lossy(host).into_owned(),
        port,
    };
    if link::follow(&shared, target) {
        ctx.out.ok();
    } else {
        ctx.out.simple("OK Already connected to specified master");
    }
    Ok(())
}

pub fn role(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let shared = ctx.shared;
    let offset = shared.repl.log.offset();
    let link = shared
        .repl
        .link
        .lock()
        .as_ref()
        .map(|link| (link.target.clone(), link.status));
    match link {
        Some((target, status)) => {
            ctx.out.array(5);
            ctx.out.bulk(b"slave");
            ctx.out.bulk(target.host.as_bytes());
            ctx.out.integer(i64::from(target.port));
            ctx.out.bulk(status.as_bytes());
            ctx.out.integer(offset as i64);
        }
        None => {
            let replicas: Vec<(String, u16, u64)> = shared
                .repl
                .replicas
                .lock()
                .values()
                .map(|replica| {
                    (
                        replica.ip.clone(),
                        replica.listening_port,
                        replica.ack_offset.load(Ordering::Relaxed),
                    )
                })
                .collect();
            ctx.out.array(3);
            ctx.out.bulk(b"master");
            ctx.out.integer(offset as i64);
            ctx.out.array(replicas.len());
            for (ip, port, acked) in replicas {
                ctx.out.array(3);
                ctx.out.bulk(ip.as_bytes());
                ctx.out.bulk(port.to_string().as_bytes());
                ctx.out.bulk(acked.to_string().as_bytes());
            }
        }
    }
    Ok(())
}

pub fn wait(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let replicas = ctx.int_arg(1)?;
    let timeout = ctx.int_arg(2)?;
    if timeout < 0 {
        return Err(CommandError::other("ERR timeout is negative"));
    }
    if ctx.shared.repl.is_replica() {
        return Err(CommandError::other(
            "ERR WAIT cannot be used with replica instances.",
        ));
    }
    let log = &ctx.shared.repl.log;
    let offset = log.offset();
    let acked = ctx.shared.repl.acked(offset);
    // inside EXEC nothing may block: answer with what is known
    if replicas <= 0 || acked as i64 >= replicas || !ctx.keys.is_direct() {
        ctx.out.integer(acked as i64);
        return Ok(());
    }
    if log.is_active() {
        // ask for acknowledgements now instead of waiting for the periodic ACK
        log.append_command(&[b"REPLCONF", b"GETACK", b"*"]);
    }
    ctx.client.pending = Some(Pending::Wait {
        replicas: replicas as usize,
        offset,
        timeout_ms: timeout as u64,
    });
    Ok(())
}

pub fn replconf(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let mut position = 1;
    while position + 1 < ctx.args.len() {
        let option = ctx.args[position].to_ascii_lowercase();
        let value = ctx.args[position + 1];
        match option.as_slice() {
            b"listening-port" => {
                ctx.client.listening_port = parse_int(value)
                    .ok()
                    .and_then(|port| u16::try_from(port).ok())
                    .ok_or(CommandError::NotInteger)?;
            }
            // acknowledgements travel on the replica stream, never answered
            b"ack" | b"getack" => return Ok(()),
            _ => {}
        }
        position += 2;
    }
    if position != ctx.args.len() {
        return Err(CommandError::Syntax);
    }
    ctx.out.ok();
    Ok(())
}

/// Refusals for PSYNC / SYNC: replicas serve none, and neither does a primary without
/// a mandate ([`PrimaryMandate::None`]): a managed node not named primary since it
/// started (it started without its data, and a full sync from it would empty a replica
/// that kept it: issue 14), or a node the latest map leaves out. Bare nodes serve from
/// the start, like redis-server. The code is Redis's NOMASTERLINK, which Redis replicas
/// retry later.
fn check_serves_psync(shared: &Shared, command: &str) -> Result<(), CommandError> {
    if shared.repl.is_replica() {
        return Err(CommandError::other(format!(
            "ERR this node is a replica; {command} is served by primaries only"
        )));
    }
    if !shared.repl.serves_psync() {
        return Err(CommandError::other(format!(
            "NOMASTERLINK this node was not named primary since it started (managed: it \
             started without its data) or since a map left it out: no topology map names \
             it primary and no REPLICAOF NO ONE was sent; {command} refused"
        )));
    }
    Ok(())
}

/// With `--tls-require-peer-certs`, only a client that presented a certificate issued
/// by ca.crt (another node of the cluster) may take a copy of the data.
fn check_replica_certified(ctx: &Ctx<'_, '_>, command: &str) -> Result<(), CommandError> {
    if ctx.shared.tls.requires_peer_certs() && !ctx.client.peer_certified {
        return Err(CommandError::other(format!(
            "NOPERM {command} needs a TLS client certificate issued by the cluster's CA \
             (--tls-require-peer-certs)"
        )));
    }
    Ok(())
}

pub fn psync(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    check_replica_certified(ctx, "PSYNC")?;
    check_serves_psync(ctx.shared, "PSYNC")?;
    let replid = String::from_utf8_lossy(ctx.args[1]).into_owned();
    let offset = parse_int(ctx.args[2])
        .ok()
        .and_then(|offset| u64::try_from(offset).ok());
    ctx.client.pending = Some(Pending::Replica { replid, offset });
    Ok(())
}

pub fn sync(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    check_replica_certified(ctx, "SYNC")?;
    check_serves_psync(ctx.shared, "SYNC")?;
    ctx.client.pending = Some(Pending::Replica {
        replid: "?".to_string(),
        offset: None,
    });
    Ok(())
}
