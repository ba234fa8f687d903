//! MULTI / EXEC / DISCARD / WATCH / UNWATCH.
//!
//! EXEC locks every shard its queued commands touch (ascending order, so no
//! deadlocks) and runs them while holding those locks: no other client can
//! observe or interleave with a transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ALLSHARDS, COMMANDS, Ctx, cluster, dispatch, key_presence, lookup};
use crate::error::{CmdResult, CommandError};
use crate::replication::backlog::encode_command;
use crate::store::Access;

pub fn multi(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CommandError::other("ERR MULTI calls can not be nested"));
    }
    ctx.client.multi = Some(Vec::new());
    ctx.client.multi_failed = false;
    ctx.client.handle.in_multi.store(true, Ordering::Relaxed);
    ctx.out.ok();
    Ok(())
}

pub fn clear_multi(ctx: &mut Ctx<'_, '_>) {
    ctx.client.multi = None;
    ctx.client.multi_failed = false;
    ctx.client.handle.in_multi.store(false, Ordering::Relaxed);
}

pub fn discard(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.client.multi.is_none() {
        return Err(CommandError::other("ERR DISCARD without MULTI"));
    }
    clear_multi(ctx);
    unwatch_all(ctx);
    ctx.out.ok();
    Ok(())
}

pub fn watch(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CommandError::other("ERR WATCH inside MULTI is not allowed"));
    }
    for &key in &ctx.args[1..] {
        if ctx.client.watched.iter().any(|watched| watched == key) {
            continue;
        }
        let flag = ctx.client.watch_flag.clone();
        ctx.keys.with_key(key, |shard, _| shard.watch(key, flag));
        ctx.client.watched.push(key.to_vec());
    }
    ctx.out.ok();
    Ok(())
}

pub fn unwatch_all(ctx: &mut Ctx<'_, '_>) {
    let watched = std::mem::take(&mut ctx.client.watched);
    let flag = ctx.client.watch_flag.clone();
    for key in &watched {
        ctx.keys.with_key(key, |shard, _| shard.unwatch(key, &flag));
    }
    ctx.client.watch_flag = Arc::new(AtomicBool::new(false));
}

pub fn unwatch(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    unwatch_all(ctx);
    ctx.out.ok();
    Ok(())
}

/// Every key the queued commands name, in order.
fn queued_keys(queued: &[Vec<Vec<u8>>]) -> (Vec<&[u8]>, bool) {
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut all_reads = true;
    for command in queued {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        if let Some(spec) = args
            .first()
            .and_then(|name| lookup(name))
            .map(|at| &COMMANDS[at])
        {
            let command_keys = spec.keys(&args);
            if !command_keys.is_empty() {
                all_reads &= cluster::is_read(spec);
                keys.extend(command_keys);
            }
        }
    }
    (keys, all_reads)
}

/// Routes the whole transaction like Redis's getNodeByQuery does for EXEC:
/// all keys in one slot this node serves (MOVED / CROSSSLOT otherwise), or a
/// slot in transit whose key presence the caller checks under the locks.
fn route_transaction(
    ctx: &Ctx<'_, '_>,
    asking: bool,
    keys: &[&[u8]],
    all_reads: bool,
) -> Result<Option<cluster::InTransit>, CommandError> {
    cluster::check_keys(ctx.shared, ctx.client.readonly && all_reads, asking, keys)
}

/// Sends one command's replication effects to the running transaction's (or script's)
/// block when there is one, else straight to the replication log.
pub fn propagate(
    client: &mut super::ClientState,
    log: &crate::replication::backlog::ReplLog,
    effects: &[u8],
) {
    match client.txn_repl.as_mut() {
        Some(block) => block.extend_from_slice(effects),
        None => log.append(effects),
    }
}

/// Appends the effects a transaction (or script) collected in `client.txn_repl` to the
/// replication log as one MULTI/EXEC block, so replicas apply them atomically.
pub fn propagate_block(
    client: &mut super::ClientState,
    log: &crate::replication::backlog::ReplLog,
) {
    if let Some(effects) = client.txn_repl.take()
        && !effects.is_empty()
    {
        let mut block = Vec::with_capacity(effects.len() + 32);
        encode_command(&mut block, &[b"MULTI"]);
        block.extend_from_slice(&effects);
        encode_command(&mut block, &[b"EXEC"]);
        log.append(&block);
    }
}

pub fn exec(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    // ASKING before MULTI covers the whole block, up to this EXEC
    let asking = std::mem::take(&mut ctx.client.asking);
    let Some(queued) = ctx.client.multi.take() else {
        return Err(CommandError::other("ERR EXEC without MULTI"));
    };
    let failed = ctx.client.multi_failed;
    clear_multi(ctx);
    if failed {
        unwatch_all(ctx);
        return Err(CommandError::other(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    if !ctx.keys.is_direct() {
        return Err(CommandError::other("ERR EXEC inside a transaction"));
    }
    let db = ctx.keys.db();
    // Like Redis Cluster, all keys of a transaction must live in one slot this node serves.
    let (keys, all_reads) = queued_keys(&queued);
    // a replica applies its primary's transactions whatever the map says of the slots
    // (routing them refused every MULTI/EXEC block a cluster-mode replica was sent)
    let routed = if ctx.client.primary_link {
        Ok(None)
    } else {
        route_transaction(ctx, asking, &keys, all_reads)
    };
    let in_transit = match routed {
        Ok(in_transit) => in_transit,
        Err(error) => {
            unwatch_all(ctx);
            return Err(error);
        }
    };
    // make room before taking locks: eviction locks shards itself
    let _ = db.make_room();
    let mut wanted = vec![false; db.shard_count()];
    let mut scripts = false;
    for command in &queued {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        let spec = args
            .first()
            .and_then(|name| lookup(name))
            .map(|position| &COMMANDS[position]);
        match spec {
            Some(spec) if spec.has(ALLSHARDS) => {
                wanted.iter_mut().for_each(|wanted| *wanted = true)
            }
            Some(spec) => {
                scripts |= super::runs_script(spec.id);
                for key in spec.keys(&args) {
                    wanted[db.shard_of_slot(meridian_topology::key_slot(key))] = true;
                }
            }
            None => {}
        }
    }
    // a script may reach keys it did not declare
    let mut held = if scripts {
        db.lock_growing(&wanted)
    } else {
        db.lock_many(&wanted)
    };
    // A slot in transit: keys MIGRATE moved since they were queued turn the
    // whole EXEC into ASK (or TRYAGAIN when only some moved), decided under
    // the locks so MIGRATE cannot move a key in between.
    // A transaction touching a key MIGRATE has in flight gets TRYAGAIN when
    // it writes or would be redirected (see cluster::in_flight_refusal).
    let writes = !all_reads && !ctx.client.primary_link;
    let refusal = match &in_transit {
        Some(transit) => {
            let (present, missing) = key_presence(db, &mut held, &keys, ctx.now);
            cluster::in_flight_refusal(ctx.shared, writes, transit.redirects(missing), &keys)
                .or_else(|| transit.refusal(present, missing))
        }
        None => cluster::in_flight_refusal(ctx.shared, writes, false, &keys),
    };
    if let Some(refusal) = refusal {
        drop(held);
        unwatch_all(ctx);
        return Err(refusal);
    }
    // WATCH is checked under the locks, so nothing can change in between.
    let aborted = ctx.client.watch_flag.load(Ordering::Acquire);
    if aborted {
        drop(held);
        unwatch_all(ctx);
        ctx.out.null_array();
        return Ok(());
    }
    ctx.out.array(queued.len());
    // effects are collected and propagated as one MULTI/EXEC block
    let log = &ctx.shared.repl.log;
    if log.is_active() && !ctx.client.primary_link {
        ctx.client.txn_repl = Some(Vec::new());
    }
    // queued blocking commands answer at once instead of waiting
    ctx.client.running_exec = true;
    for command in &queued {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        dispatch(
            ctx.shared,
            ctx.exec,
            ctx.client,
            ctx.out,
            &args,
            Access::held(db, &mut held, ctx.exec.holder()),
        );
    }
    ctx.client.running_exec = false;
    propagate_block(ctx.client, log);
    drop(held);
    unwatch_all(ctx);
    Ok(())
}
