//! Moving keys between primaries: DUMP / RESTORE (and RESTORE-ASKING, which
//! MIGRATE sends so an IMPORTING destination accepts it), MIGRATE, and the
//! operator's `MERIDIAN.MIGRATE SLOT` loop.
//!
//! The handlers only check their arguments: the transfer waits on the
//! destination, so it runs as a [`MigrateJob`] the connection awaits ([`run`]).
//! A batch is read under its shard locks, which are released while it travels
//! (other clients of those shards keep being served); then, under the locks
//! again, a key leaves the source only if the destination acknowledged it and
//! it is still as it was sent. While a key is in flight, writes to it (and ASK
//! redirects for it) are answered TRYAGAIN ([`crate::migration::InFlight`]), so
//! the destination cannot take a client's write via ASK that the batch then
//! overwrites or deletes. A key changed meanwhile anyway (only expiry or
//! eviction can) stays on the source and is sent again (a slot's next batch,
//! or MIGRATE's resend); a key gone meanwhile is deleted on the destination
//! too. Once a key left, a write finds it gone and is redirected with ASK.

use std::fmt;
use std::time::Duration;

use meridian_topology::{SLOT_COUNT, key_slot};

use super::replication::check_write;
use super::{Ctx, Pending, parse_int};
use crate::error::{CmdResult, CommandError};
use crate::migration::{self, InFlightGuard, PeerConnection};
use crate::protocol::{Out, Reply};
use crate::state::Shared;
use crate::store::{Db, Held, Shard, now_ms};

pub fn dump(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let payload = ctx.keys.with_key(key, |shard, _| {
        shard
            .read(key, now)
            .map(|index| migration::dump(shard.entry(index).value()))
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
    let event = ctx.keys.with_key(key, |shard, slot| {
        let existing = shard.find(key, now);
        if existing.is_some() && !replace {
            return Err(CommandError::other(
                "BUSYKEY Target key name already exists.",
            ));
        }
        if expire_at != 0 && expire_at <= now {
            // already expired: like Redis, the key ends up absent
            Ok(existing.map(|index| {
                shard.remove(index);
                "del"
            }))
        } else {
            // like Redis, REPLACE deletes the old key and creates it again (`new`)
            if let Some(index) = existing {
                shard.remove(index);
            }
            shard.insert(key, slot, value, expire_at);
            Ok(Some("restore"))
        }
    })?;
    if let Some(event) = event {
        ctx.notify(crate::notify::NotifyClass::Generic, event, key);
    }
    ctx.out.ok();
    Ok(())
}

/// Where and how MIGRATE talks to the destination.
#[derive(Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    timeout: Duration,
    auth: Option<(Option<Vec<u8>>, Vec<u8>)>,
    /// The node's TLS dialer (None: plain TCP).
    tls: Option<crate::tls::ClientTls>,
}

// by hand: a pending job may be logged, its password must not be
impl fmt::Debug for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

impl Target {
    async fn connect(&self) -> Result<PeerConnection, CommandError> {
        let mut conn =
            PeerConnection::connect(&self.host, self.port, self.tls.as_ref(), self.timeout).await?;
        if let Some((user, password)) = &self.auth {
            let mut command: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = user {
                command.push(user);
            }
            command.push(password);
            let replies = conn.pipeline(&[command]).await?;
            if let Some(Reply::Error(error)) = replies.first() {
                return Err(target_error(error));
            }
        }
        Ok(conn)
    }
}

fn target_error(error: &str) -> CommandError {
    CommandError::other(format!("ERR Target instance replied with error: {error}"))
}

/// A MIGRATE or `MERIDIAN.MIGRATE SLOT` whose arguments were checked: the
/// connection runs it with [`run`] (it waits on the destination, the
/// synchronous dispatcher must not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateJob {
    target: Target,
    moves: Moves,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Moves {
    /// MIGRATE: these keys, once.
    Keys {
        keys: Vec<Vec<u8>>,
        copy: bool,
        replace: bool,
    },
    /// MERIDIAN.MIGRATE SLOT: every key of the slot, `batch` at a time.
    Slot { slot: u16, batch: usize },
}

/// Runs a checked MIGRATE job and writes its reply to `out`.
pub async fn run(shared: &Shared, job: MigrateJob, out: &mut Out) {
    let MigrateJob { target, moves } = job;
    let result = match moves {
        Moves::Keys {
            keys,
            copy,
            replace,
        } => migrate_keys(shared, &target, &keys, copy, replace)
            .await
            .map(|found| {
                if found == 0 {
                    out.simple("NOKEY");
                } else {
                    out.ok();
                }
            }),
        Moves::Slot { slot, batch } => migrate_slot(shared, &target, slot, batch)
            .await
            .map(|moved| out.integer(moved as i64)),
    };
    if let Err(error) = result {
        out.error(&error.to_string());
    }
}

/// A key as the source had it when its batch was read.
struct Dumped {
    key: Vec<u8>,
    expire_at: u64,
    /// Relative TTL in ms for RESTORE (0: persistent).
    ttl: String,
    payload: Vec<u8>,
}

/// What became of a batch the destination took.
#[derive(Default)]
struct Batch {
    /// Keys found on the source and sent.
    sent: usize,
    /// Keys written on the source while they were in flight: they stay there,
    /// the destination has an older copy.
    changed: Vec<Vec<u8>>,
}

fn lock_keys<'d>(db: &'d Db, keys: &[Vec<u8>]) -> Held<'d> {
    let mut wanted = vec![false; db.shard_count()];
    for key in keys {
        wanted[db.shard_of_slot(key_slot(key))] = true;
    }
    db.lock_many(&wanted)
}

fn shard_for<'h, 'd>(db: &Db, held: &'h mut Held<'d>, key: &[u8]) -> Option<&'h mut Shard> {
    held.shard(db.shard_of_slot(key_slot(key)))
}

/// Reads the live keys of a batch under their shard locks, which are released
/// on return: no lock is held while the batch travels. The keys found are
/// marked in flight (under those locks) until the guard is dropped: writes to
/// them get TRYAGAIN meanwhile.
fn dump_keys<'s>(shared: &'s Shared, keys: &[Vec<u8>]) -> (Vec<Dumped>, InFlightGuard<'s>) {
    let db = &shared.db;
    let mut held = lock_keys(db, keys);
    let now = now_ms();
    let mut found = Vec::new();
    for key in keys {
        let Some(shard) = shard_for(db, &mut held, key) else {
            continue;
        };
        if let Some(index) = shard.find(key, now) {
            let entry = shard.entry(index);
            let ttl = match entry.expire_at() {
                0 => 0,
                at => at.saturating_sub(now).max(1),
            };
            found.push(Dumped {
                key: key.clone(),
                expire_at: entry.expire_at(),
                ttl: ttl.to_string(),
                payload: migration::dump(entry.value()),
            });
        }
    }
    let in_flight = shared
        .in_flight
        .hold(found.iter().map(|dumped| dumped.key.clone()).collect());
    drop(held);
    (found, in_flight)
}

/// Under the shard locks again: deletes each acknowledged key the source still
/// has as it was sent (same value and expiry) and logs the deletions for the
/// replicas. Returns the keys written meanwhile (kept) and those deleted
/// meanwhile (their copy on the destination must go too).
fn delete_unchanged<'f>(
    shared: &Shared,
    found: &'f [Dumped],
    replies: &[Reply],
) -> (Vec<Vec<u8>>, Vec<&'f Dumped>) {
    let db = &shared.db;
    let acked: Vec<&Dumped> = found
        .iter()
        .zip(replies)
        .filter(|(_, reply)| matches!(reply, Reply::Simple(_)))
        .map(|(dumped, _)| dumped)
        .collect();
    let keys: Vec<Vec<u8>> = acked.iter().map(|dumped| dumped.key.clone()).collect();
    let mut held = lock_keys(db, &keys);
    let now = now_ms();
    let (mut changed, mut vanished) = (Vec::new(), Vec::new());
    let mut deleted: Vec<&[u8]> = vec![b"DEL"];
    for dumped in acked {
        let Some(shard) = shard_for(db, &mut held, &dumped.key) else {
            continue;
        };
        match shard.find(&dumped.key, now) {
            Some(index) => {
                let entry = shard.entry(index);
                if entry.expire_at() == dumped.expire_at
                    && migration::dump(entry.value()) == dumped.payload
                {
                    shard.remove(index);
                    // like Redis's MIGRATE: the source publishes the deletion
                    shared.keyspace_events.notify(
                        crate::notify::NotifyClass::Generic,
                        "del",
                        &dumped.key,
                    );
                    deleted.push(&dumped.key);
                } else {
                    changed.push(dumped.key.clone());
                }
            }
            None => vanished.push(dumped),
        }
    }
    // replicas drop the keys in the same order, still under the shard locks
    if deleted.len() > 1 && shared.repl.log.is_active() {
        shared.repl.log.append_command(&deleted);
    }
    (changed, vanished)
}

/// RESTORE-ASKING commands for a batch; `tombstone` restores each key already
/// expired, which deletes it on the destination (REPLACE) and stores nothing.
fn restore_commands<'f>(
    found: impl IntoIterator<Item = &'f Dumped>,
    replace: bool,
    tombstone: bool,
) -> Vec<Vec<&'f [u8]>> {
    found
        .into_iter()
        .map(|dumped| {
            let ttl: &[u8] = if tombstone {
                b"1"
            } else {
                dumped.ttl.as_bytes()
            };
            let mut command: Vec<&[u8]> =
                vec![b"RESTORE-ASKING", &dumped.key, ttl, &dumped.payload];
            if replace || tombstone {
                command.push(b"REPLACE");
            }
            if tombstone {
                command.push(b"ABSTTL");
            }
            command
        })
        .collect()
}

fn first_error(replies: &[Reply]) -> Option<String> {
    replies.iter().find_map(|reply| match reply {
        Reply::Simple(_) => None,
        Reply::Error(error) => Some(error.clone()),
        other => Some(format!("unexpected RESTORE reply {other:?}")),
    })
}

/// Moves one batch of keys: reads them under their shard locks, sends them
/// with no lock held, then deletes from the source (unless `copy`) the keys the
/// destination acknowledged and nobody changed meanwhile. Keys missing or
/// expired on the source are skipped. With `replicated`, the keys leave the
/// source only once that many of the destination's replicas have them (`WAIT`
/// on the destination), so a destination that dies right after the batch
/// cannot take them along.
async fn migrate_batch(
    shared: &Shared,
    conn: &mut PeerConnection,
    keys: &[Vec<u8>],
    copy: bool,
    replace: bool,
    replicated: Option<(usize, Duration)>,
) -> Result<Batch, CommandError> {
    // released when this batch is settled, or on any early return (or panic,
    // or the connection dropping this future)
    let (found, _in_flight) = dump_keys(shared, keys);
    if found.is_empty() {
        return Ok(Batch::default());
    }
    let replies = conn
        .pipeline(&restore_commands(&found, replace, false))
        .await?;
    let mut error = first_error(&replies);
    if let Some((replicas, timeout)) = replicated
        && replicas > 0
        && error.is_none()
    {
        // on a failure nothing was deleted; the retried batch replaces the copies
        wait_for_destination_replicas(conn, replicas, timeout).await?;
    }
    let mut batch = Batch {
        sent: found.len(),
        changed: Vec::new(),
    };
    if !copy {
        let (changed, vanished) = delete_unchanged(shared, &found, &replies);
        batch.changed = changed;
        if !vanished.is_empty() {
            // deleted on the source while in flight: the copy must not outlive it
            let replies = conn
                .pipeline(&restore_commands(vanished, true, true))
                .await?;
            error = error.or_else(|| first_error(&replies));
        }
    }
    match error {
        Some(error) => Err(target_error(&error)),
        None => Ok(batch),
    }
}

/// How often MIGRATE sends again the keys written on the source while they
/// were in flight before it gives up and leaves them there.
const CHANGED_RESENDS: usize = 3;

/// MIGRATE's transfer; returns how many keys were found on the source.
async fn migrate_keys(
    shared: &Shared,
    target: &Target,
    keys: &[Vec<u8>],
    copy: bool,
    replace: bool,
) -> Result<usize, CommandError> {
    let mut conn = target.connect().await?;
    // Redis semantics: MIGRATE does not wait for the destination's replicas.
    let mut batch = migrate_batch(shared, &mut conn, keys, copy, replace, None).await?;
    let found = batch.sent;
    for _ in 0..CHANGED_RESENDS {
        if batch.changed.is_empty() {
            break;
        }
        // the destination has this MIGRATE's older copy: replace it
        batch = migrate_batch(shared, &mut conn, &batch.changed, false, true, None).await?;
    }
    if !batch.changed.is_empty() {
        return Err(CommandError::other(format!(
            "ERR {} keys kept changing on the source while MIGRATE sent them; they stay on the source",
            batch.changed.len()
        )));
    }
    Ok(found)
}

/// `MERIDIAN.MIGRATE SLOT`'s transfer; returns how many keys moved.
async fn migrate_slot(
    shared: &Shared,
    target: &Target,
    slot: u16,
    batch: usize,
) -> Result<usize, CommandError> {
    let _moving = Moving::start(shared, slot);
    let mut conn = target.connect().await?;
    // Resharding must not lose a key to a failover of the destination: every
    // batch waits for the destination's replicas, those the map names for its
    // shard included (a new shard's replica may still be attaching; a batch
    // that does not wait for it could leave the keys on the destination alone).
    let replicas = destination_replicas(&mut conn)
        .await?
        .max(mapped_replicas(shared, target));
    // a failed batch is retried: keep the wait short
    let replica_timeout = target.timeout.min(REPLICA_WAIT_LIMIT);
    let (mut moved, mut stalled) = (0, 0);
    loop {
        // keys written while in flight stay in the slot and come again
        let keys = slot_keys(shared, slot, batch);
        if keys.is_empty() {
            break;
        }
        let sent = migrate_batch(
            shared,
            &mut conn,
            &keys,
            false,
            true,
            Some((replicas, replica_timeout)),
        )
        .await?;
        let left = sent.sent - sent.changed.len();
        moved += left;
        // writes faster than a round trip could keep a key here forever: end the
        // command instead, the operator retries the step
        stalled = if left == 0 { stalled + 1 } else { 0 };
        if stalled == STALLED_ROUNDS {
            return Err(CommandError::other(format!(
                "ERR slot {slot}: its keys kept changing on the source while they were sent ({moved} keys moved); retry"
            )));
        }
    }
    Ok(moved)
}

/// Rounds in a row in which `MERIDIAN.MIGRATE SLOT` may send keys without one
/// leaving the source before it gives up.
const STALLED_ROUNDS: usize = 100;

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

/// Longest a resharding batch waits for the destination's replicas.
const REPLICA_WAIT_LIMIT: Duration = Duration::from_secs(1);

/// Asks the destination to `WAIT` for `replicas` of its replicas; fails when fewer
/// acknowledged within `timeout`.
async fn wait_for_destination_replicas(
    conn: &mut PeerConnection,
    replicas: usize,
    timeout: Duration,
) -> Result<(), CommandError> {
    let wanted = replicas.to_string();
    let millis = timeout.as_millis().max(1).to_string();
    // WAIT answers only after its timeout when too few replicas acknowledge
    let reply = conn
        .slow_command(
            vec![b"WAIT".as_slice(), wanted.as_bytes(), millis.as_bytes()],
            timeout,
        )
        .await?;
    match reply {
        Reply::Int(acked) if acked >= replicas as i64 => Ok(()),
        Reply::Int(acked) => Err(CommandError::other(format!(
            "ERR Target instance replicated the batch to {acked} of its {replicas} replicas within {} ms; the keys stay on the source",
            timeout.as_millis()
        ))),
        other => Err(CommandError::other(format!(
            "ERR Target instance answered WAIT with {other:?}"
        ))),
    }
}

/// How many replicas this node's map names for the shard whose primary is at
/// `target` (0 when the map does not know it, e.g. a MIGRATE outside a cluster).
fn mapped_replicas(shared: &Shared, target: &Target) -> usize {
    let Some(map) = super::cluster::current_map(shared) else {
        return 0;
    };
    map.shards
        .iter()
        .find(|shard| shard.primary.ip == target.host && shard.primary.port == target.port)
        .map_or(0, |shard| shard.replicas.len())
}

/// How many replicas the destination has connected now (its `ROLE`): the count
/// a batch waits for. A destination that is not a primary counts none (its
/// RESTORE then fails with MOVED or READONLY anyway).
async fn destination_replicas(conn: &mut PeerConnection) -> Result<usize, CommandError> {
    let replies = conn.pipeline(&[vec![b"ROLE".as_slice()]]).await?;
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
    let mut keys: Vec<Vec<u8>> = Vec::new();
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
                keys.extend(ctx.args[position + 1..].iter().map(|key| key.to_vec()));
                break;
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 1;
    }
    if keys.is_empty() && !ctx.args[3].is_empty() {
        keys.push(ctx.args[3].to_vec());
    }
    let target = Target {
        host: String::from_utf8_lossy(ctx.args[1]).into_owned(),
        port,
        timeout,
        auth,
        tls: ctx.shared.tls.dialer(),
    };
    // the transfer waits on the destination: the connection runs it, off the dispatcher
    ctx.client.pending = Some(Pending::Migrate(MigrateJob {
        target,
        moves: Moves::Keys {
            keys,
            copy,
            replace,
        },
    }));
    Ok(())
}

/// Up to `count` live keys of `slot`.
fn slot_keys(shared: &Shared, slot: u16, count: usize) -> Vec<Vec<u8>> {
    let now = now_ms();
    shared
        .db
        .lock(shared.db.shard_of_slot(slot))
        .keys_of_slot(slot, count, now)
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
            "ERR unknown subcommand '{}'. Try MERIDIAN.MIGRATE SLOT <slot> <ip> <port> [BATCH n] [TIMEOUT ms] [AUTH password | AUTH2 user password].",
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
            b"AUTH2" => {
                // AUTH2 <user> <password>: the destination's ACL user
                let password = ctx
                    .args
                    .get(position + 2)
                    .copied()
                    .ok_or(CommandError::Syntax)?;
                auth = Some((Some(value.to_vec()), password.to_vec()));
                position += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 2;
    }
    let target = Target {
        host: String::from_utf8_lossy(ctx.args[3]).into_owned(),
        port,
        timeout,
        auth,
        tls: ctx.shared.tls.dialer(),
    };
    ctx.client.pending = Some(Pending::Migrate(MigrateJob {
        target,
        moves: Moves::Slot { slot, batch },
    }));
    Ok(())
}
