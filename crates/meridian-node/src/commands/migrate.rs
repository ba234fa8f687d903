//! Moving keys between primaries: DUMP / RESTORE (and RESTORE-ASKING, which
//! MIGRATE sends so an IMPORTING destination accepts it), MIGRATE, and the
//! operator's `MERIDIAN.MIGRATE SLOT` loop.
//!
//! MIGRATE keeps the shard locks of its keys while the batch is in flight and
//! deletes a key from the source only after the destination acknowledged it,
//! so a concurrent write either lands before the copy (and travels with it)
//! or finds the key gone (and is redirected with ASK).

use std::time::Duration;

use meridian_topology::{SLOT_COUNT, key_slot};

use super::replication::check_write;
use super::{Ctx, parse_int};
use crate::error::{CmdResult, CommandError};
use crate::migration::{self, PeerConnection};
use crate::protocol::Reply;
use crate::state::Shared;
use crate::store::now_ms;

pub fn dump(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let payload = ctx.keys.with_key(key, |shard, _| {
        shard
            .read(key, now)
            .map(|index| migration::dump(&shard.entry(index).value))
    });
    match payload {
        Some(payload) => ctx.out.bulk(&payload),
        None => ctx.out.null(),
    }
    Ok(())
}

/// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]
pub fn restore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let ttl = ctx.int_arg(2)?;
    let (mut replace, mut absolute) = (false, false);
    let mut position = 4;
    while position < ctx.args.len() {
        match ctx.args[position].to_ascii_uppercase().as_slice() {
            b"REPLACE" => replace = true,
            b"ABSTTL" => absolute = true,
            // eviction hints are accepted for compatibility; the store keeps its own
            b"IDLETIME" | b"FREQ" if position + 1 < ctx.args.len() => {
                if ctx.int_arg(position + 1)? < 0 {
                    return Err(CommandError::other(
                        "ERR Invalid IDLETIME or FREQ value, must be >= 0",
                    ));
                }
                position += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 1;
    }
    if ttl < 0 {
        return Err(CommandError::other("ERR Invalid TTL value, must be >= 0"));
    }
    let value = migration::restore(ctx.args[3])
        .map_err(|_| CommandError::other("ERR DUMP payload version or checksum are wrong"))?;
    let expire_at = match (ttl, absolute) {
        (0, _) => 0,
        (at, true) => at as u64,
        (relative, false) => now.saturating_add(relative as u64),
    };
    ctx.keys.with_key(key, |shard, slot| {
        let existing = shard.find(key, now);
        if existing.is_some() && !replace {
            return Err(CommandError::other(
                "BUSYKEY Target key name already exists.",
            ));
        }
        if expire_at != 0 && expire_at <= now {
            // already expired: like Redis, the key ends up absent
            if let Some(index) = existing {
                shard.remove(index);
            }
        } else {
            shard.insert(key, slot, value, expire_at);
        }
        Ok(())
    })?;
    ctx.out.ok();
    Ok(())
}

/// Where and how MIGRATE talks to the destination.
struct Target {
    host: String,
    port: u16,
    timeout: Duration,
    auth: Option<(Option<Vec<u8>>, Vec<u8>)>,
}

impl Target {
    fn connect(&self) -> Result<PeerConnection, CommandError> {
        let mut conn = PeerConnection::connect(&self.host, self.port, self.timeout)?;
        if let Some((user, password)) = &self.auth {
            let mut command: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = user {
                command.push(user);
            }
            command.push(password);
            let replies = conn.pipeline(&[command])?;
            if let Some(Reply::Error(error)) = replies.first() {
                return Err(CommandError::other(format!(
                    "ERR Target instance replied with error: {error}"
                )));
            }
        }
        Ok(conn)
    }
}

fn port_arg(text: &[u8]) -> Result<u16, CommandError> {
    parse_int(text)
        .ok()
        .and_then(|port| u16::try_from(port).ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| CommandError::other("ERR Invalid port"))
}

fn timeout_arg(text: &[u8]) -> Result<Duration, CommandError> {
    let millis = parse_int(text)?;
    // like Redis: a non-positive timeout means one second
    Ok(Duration::from_millis(if millis <= 0 {
        1000
    } else {
        millis as u64
    }))
}

fn refuse_in_transaction(ctx: &Ctx<'_, '_>) -> CmdResult {
    if ctx.keys.is_direct() {
        Ok(())
    } else {
        Err(CommandError::other(
            "ERR MIGRATE is not allowed inside a transaction",
        ))
    }
}

/// Moves one batch of keys. Returns how many were found (and sent); keys
/// missing or expired on the source are skipped. With `replicated`, the keys
/// leave the source only once that many of the destination's replicas have
/// them (`WAIT` on the destination), so a destination that dies right after
/// the batch cannot take them along.
fn migrate_batch(
    shared: &Shared,
    conn: &mut PeerConnection,
    keys: &[&[u8]],
    copy: bool,
    replace: bool,
    replicated: Option<(usize, Duration)>,
) -> Result<usize, CommandError> {
    let db = &shared.db;
    let mut wanted = vec![false; db.shard_count()];
    for key in keys {
        wanted[db.shard_of_slot(key_slot(key))] = true;
    }
    // held until the destination answered: no write slips between copy and delete
    let mut held = db.lock_many(&wanted);
    let now = now_ms();
    let mut found: Vec<(&[u8], String, Vec<u8>)> = Vec::new();
    for &key in keys {
        let shard_index = db.shard_of_slot(key_slot(key));
        let Some(shard) = held.get_mut(shard_index).and_then(Option::as_mut) else {
            continue;
        };
        if let Some(index) = shard.find(key, now) {
            let entry = shard.entry(index);
            let ttl = match entry.expire_at {
                0 => 0,
                at => at.saturating_sub(now).max(1),
            };
            found.push((key, ttl.to_string(), migration::dump(&entry.value)));
        }
    }
    if found.is_empty() {
        return Ok(0);
    }
    let commands: Vec<Vec<&[u8]>> = found
        .iter()
        .map(|(key, ttl, payload)| {
            let mut command: Vec<&[u8]> = vec![b"RESTORE-ASKING", key, ttl.as_bytes(), payload];
            if replace {
                command.push(b"REPLACE");
            }
            command
        })
        .collect();
    let replies = conn.pipeline(&commands)?;
    if let Some((replicas, timeout)) = replicated
        && replicas > 0
        && replies
            .iter()
            .all(|reply| matches!(reply, Reply::Simple(_)))
    {
        // Still under the shard locks: on a failure nothing was deleted, and the
        // retried batch replaces the copies the destination already has.
        wait_for_destination_replicas(conn, replicas, timeout)?;
    }
    let mut first_error = None;
    let mut deleted: Vec<&[u8]> = vec![b"DEL"];
    for ((key, _, _), reply) in found.iter().zip(&replies) {
        match reply {
            Reply::Simple(_) if !copy => {
                let shard_index = db.shard_of_slot(key_slot(key));
                if let Some(shard) = held.get_mut(shard_index).and_then(Option::as_mut)
                    && let Some(index) = shard.find(key, now)
                {
                    shard.remove(index);
                    deleted.push(key);
                }
            }
            Reply::Simple(_) => {}
            Reply::Error(error) => {
                first_error.get_or_insert_with(|| error.clone());
            }
            other => {
                first_error.get_or_insert_with(|| format!("unexpected RESTORE reply {other:?}"));
            }
        }
    }
    // replicas drop the keys in the same order, still under the shard locks
    if deleted.len() > 1 && shared.repl.log.is_active() {
        shared.repl.log.append_command(&deleted);
    }
    drop(held);
    match first_error {
        Some(error) => Err(CommandError::other(format!(
            "ERR Target instance replied with error: {error}"
        ))),
        None => Ok(found.len()),
    }
}

/// Longest a resharding batch waits for the destination's replicas.
const REPLICA_WAIT_LIMIT: Duration = Duration::from_secs(1);

/// Asks the destination to `WAIT` for `replicas` of its replicas; fails when fewer
/// acknowledged within `timeout`.
fn wait_for_destination_replicas(
    conn: &mut PeerConnection,
    replicas: usize,
    timeout: Duration,
) -> Result<(), CommandError> {
    let wanted = replicas.to_string();
    let millis = timeout.as_millis().max(1).to_string();
    let replies = conn.pipeline(&[vec![
        b"WAIT".as_slice(),
        wanted.as_bytes(),
        millis.as_bytes(),
    ]])?;
    match replies.first() {
        Some(Reply::Int(acked)) if *acked >= replicas as i64 => Ok(()),
        Some(Reply::Int(acked)) => Err(CommandError::other(format!(
            "ERR Target instance replicated the batch to {acked} of its {replicas} replicas within {} ms; the keys stay on the source",
            timeout.as_millis()
        ))),
        other => Err(CommandError::other(format!(
            "ERR Target instance answered WAIT with {other:?}"
        ))),
    }
}

/// How many replicas the destination has connected now (its `ROLE`): the count
/// a batch waits for. A destination that is not a primary counts none (its
/// RESTORE then fails with MOVED or READONLY anyway).
fn destination_replicas(conn: &mut PeerConnection) -> Result<usize, CommandError> {
    let replies = conn.pipeline(&[vec![b"ROLE".as_slice()]])?;
    Ok(match replies.first() {
        Some(Reply::Array(role)) => match role.get(2) {
            Some(Reply::Array(replicas)) => replicas.len(),
            _ => 0,
        },
        _ => 0,
    })
}

/// MIGRATE host port key|"" destination-db timeout [COPY] [REPLACE]
/// [AUTH password] [AUTH2 username password] [KEYS key ...]
pub fn migrate(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    refuse_in_transaction(ctx)?;
    check_write(ctx.shared)?;
    let port = port_arg(ctx.args[2])?;
    if ctx.int_arg(4)? != 0 {
        return Err(CommandError::other(
            "ERR only destination DB 0 is supported",
        ));
    }
    let timeout = timeout_arg(ctx.args[5])?;
    let (mut copy, mut replace, mut auth) = (false, false, None);
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut position = 6;
    while position < ctx.args.len() {
        let remaining = ctx.args.len() - position - 1;
        match ctx.args[position].to_ascii_uppercase().as_slice() {
            b"COPY" => copy = true,
            b"REPLACE" => replace = true,
            b"AUTH" if remaining >= 1 => {
                auth = Some((None, ctx.args[position + 1].to_vec()));
                position += 1;
            }
            b"AUTH2" if remaining >= 2 => {
                auth = Some((
                    Some(ctx.args[position + 1].to_vec()),
                    ctx.args[position + 2].to_vec(),
                ));
                position += 2;
            }
            b"KEYS" => {
                if !ctx.args[3].is_empty() {
                    return Err(CommandError::other(
                        "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string",
                    ));
                }
                keys.extend_from_slice(&ctx.args[position + 1..]);
                break;
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 1;
    }
    if keys.is_empty() && !ctx.args[3].is_empty() {
        keys.push(ctx.args[3]);
    }
    let target = Target {
        host: String::from_utf8_lossy(ctx.args[1]).into_owned(),
        port,
        timeout,
        auth,
    };
    let mut conn = target.connect()?;
    // Redis semantics: MIGRATE does not wait for the destination's replicas.
    let moved = migrate_batch(ctx.shared, &mut conn, &keys, copy, replace, None)?;
    if moved == 0 {
        ctx.out.simple("NOKEY");
    } else {
        ctx.out.ok();
    }
    Ok(())
}

/// Up to `count` live keys of `slot`.
fn slot_keys(shared: &Shared, slot: u16, count: usize) -> Vec<Vec<u8>> {
    let now = now_ms();
    let shard = shared.db.lock(shared.db.shard_of_slot(slot));
    let mut keys = Vec::new();
    if shard.keys_in_slot(slot) == 0 {
        return keys;
    }
    for position in 0..shard.slab_len() {
        if keys.len() >= count {
            break;
        }
        if let Some(entry) = shard.entry_at(position)
            && entry.slot == slot
            && (entry.expire_at == 0 || entry.expire_at > now)
        {
            keys.push(entry.key.to_vec());
        }
    }
    keys
}

/// Marks a slot as being moved by `MERIDIAN.MIGRATE SLOT` while it runs, so the
/// orphan cleanup (crate::orphans) leaves its keys alone even if a map that
/// gives the slot away arrives meanwhile.
struct Moving<'a> {
    shared: &'a Shared,
    slot: u16,
}

impl<'a> Moving<'a> {
    fn start(shared: &'a Shared, slot: u16) -> Self {
        *shared.migrations.write().moving.entry(slot).or_default() += 1;
        Moving { shared, slot }
    }
}

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        let mut migrations = self.shared.migrations.write();
        if let Some(running) = migrations.moving.get_mut(&self.slot) {
            *running -= 1;
            if *running == 0 {
                migrations.moving.remove(&self.slot);
            }
        }
        drop(migrations);
        // keys left behind in a slot another shard owns by now are orphans
        self.shared.orphans.poke();
    }
}

/// MERIDIAN.MIGRATE SLOT <slot> <dest-ip> <dest-port> [BATCH n] [TIMEOUT ms]
/// [AUTH password]: moves every key of the slot (REPLACE semantics, so a
/// retried batch is harmless) and returns how many keys moved.
pub fn meridian_migrate(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    refuse_in_transaction(ctx)?;
    if !ctx.args[1].eq_ignore_ascii_case(b"SLOT") {
        return Err(CommandError::other(format!(
            "ERR unknown subcommand '{}'. Try MERIDIAN.MIGRATE SLOT <slot> <ip> <port> [BATCH n] [TIMEOUT ms] [AUTH password].",
            String::from_utf8_lossy(ctx.args[1])
        )));
    }
    check_write(ctx.shared)?;
    let slot = parse_int(ctx.args[2])
        .ok()
        .filter(|slot| (0..i64::from(SLOT_COUNT)).contains(slot))
        .ok_or_else(|| CommandError::other("ERR Invalid or out of range slot"))?
        as u16;
    let port = port_arg(ctx.args[4])?;
    let (mut batch, mut timeout, mut auth) = (100usize, Duration::from_secs(5), None);
    let mut position = 5;
    while position < ctx.args.len() {
        let value = ctx
            .args
            .get(position + 1)
            .copied()
            .ok_or(CommandError::Syntax)?;
        match ctx.args[position].to_ascii_uppercase().as_slice() {
            b"BATCH" => {
                batch = usize::try_from(parse_int(value)?)
                    .ok()
                    .filter(|&batch| batch > 0)
                    .ok_or_else(|| CommandError::other("ERR BATCH must be positive"))?;
            }
            b"TIMEOUT" => timeout = timeout_arg(value)?,
            b"AUTH" => auth = Some((None, value.to_vec())),
            _ => return Err(CommandError::Syntax),
        }
        position += 2;
    }
    let target = Target {
        host: String::from_utf8_lossy(ctx.args[3]).into_owned(),
        port,
        timeout,
        auth,
    };
    let _moving = Moving::start(ctx.shared, slot);
    let mut conn = target.connect()?;
    // Resharding must not lose a key to a failover of the destination: every
    // batch waits for the replicas the destination has when the slot starts.
    let replicas = destination_replicas(&mut conn)?;
    // The wait holds the batch's shard locks: keep it short, a failed batch is retried.
    let replica_timeout = timeout.min(REPLICA_WAIT_LIMIT);
    let mut moved = 0;
    loop {
        let keys = slot_keys(ctx.shared, slot, batch);
        if keys.is_empty() {
            break;
        }
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        moved += migrate_batch(
            ctx.shared,
            &mut conn,
            &keys,
            false,
            true,
            Some((replicas, replica_timeout)),
        )?;
    }
    ctx.out.integer(moved as i64);
    Ok(())
}
