//! Operator-facing commands: MERIDIAN.TOPOLOGY and the CLUSTER subcommands a
//! standalone node can already answer.

use std::sync::Arc;

use meridian_topology::{SLOT_COUNT, TopologyMap, key_slot};

use super::{Ctx, parse_int};
use crate::error::{CmdResult, CommandError};

pub fn topology(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match ctx.args[1].to_ascii_uppercase().as_slice() {
        b"SET" if ctx.args.len() == 3 => {
            let map: TopologyMap = serde_json::from_slice(ctx.args[2]).map_err(|error| {
                CommandError::other(format!("ERR invalid topology JSON: {error}"))
            })?;
            map.validate()
                .map_err(|error| CommandError::other(format!("ERR invalid topology: {error}")))?;
            let mut current = ctx.shared.topology.write();
            if let Some(existing) = current.as_ref() {
                let same = existing.as_ref() == &map;
                if map.epoch < existing.epoch || (map.epoch == existing.epoch && !same) {
                    return Err(CommandError::other(format!(
                        "STALEEPOCH topology epoch {} is older than current epoch {}",
                        map.epoch, existing.epoch
                    )));
                }
            }
            tracing::info!(
                epoch = map.epoch,
                shards = map.shards.len(),
                "topology updated"
            );
            *current = Some(Arc::new(map));
            drop(current);
            ctx.out.ok();
        }
        b"GET" if ctx.args.len() == 2 => {
            let current = ctx.shared.topology.read().clone();
            match current {
                Some(map) => {
                    let json = serde_json::to_vec(map.as_ref()).map_err(|error| {
                        CommandError::other(format!("ERR cannot encode topology: {error}"))
                    })?;
                    ctx.out.bulk(&json);
                }
                None => ctx.out.null(),
            }
        }
        b"EPOCH" if ctx.args.len() == 2 => {
            let epoch = ctx
                .shared
                .topology
                .read()
                .as_ref()
                .map_or(0, |map| map.epoch);
            ctx.out.integer(epoch as i64);
        }
        b"SET" | b"GET" | b"EPOCH" => return Err(ctx.wrong_arity()),
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try MERIDIAN.TOPOLOGY SET <json> | GET | EPOCH.",
                String::from_utf8_lossy(ctx.args[1])
            )));
        }
    }
    Ok(())
}

fn slot_arg(ctx: &Ctx<'_, '_>, index: usize) -> Result<u16, CommandError> {
    let slot = parse_int(ctx.arg(index))
        .map_err(|_| CommandError::other("ERR Invalid or out of range slot"))?;
    if !(0..i64::from(SLOT_COUNT)).contains(&slot) {
        return Err(CommandError::other("ERR Invalid or out of range slot"));
    }
    Ok(slot as u16)
}

pub fn cluster(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match ctx.args[1].to_ascii_uppercase().as_slice() {
        b"MYID" => ctx.out.bulk(ctx.shared.node_id.as_bytes()),
        b"KEYSLOT" if ctx.args.len() == 3 => ctx.out.integer(i64::from(key_slot(ctx.args[2]))),
        b"COUNTKEYSINSLOT" if ctx.args.len() == 3 => {
            let slot = slot_arg(ctx, 2)?;
            let count = ctx.keys.with_slot(slot, |shard| shard.keys_in_slot(slot));
            ctx.out.integer(i64::from(count));
        }
        b"GETKEYSINSLOT" if ctx.args.len() == 4 => {
            let slot = slot_arg(ctx, 2)?;
            let count = ctx.int_arg(3)?;
            if count < 0 {
                return Err(CommandError::other("ERR Invalid number of keys"));
            }
            let now = ctx.now;
            let keys = ctx.keys.with_slot(slot, |shard| {
                let mut keys = Vec::new();
                if shard.keys_in_slot(slot) == 0 {
                    return keys;
                }
                for position in 0..shard.slab_len() {
                    if keys.len() as i64 >= count {
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
            });
            ctx.out.array(keys.len());
            for key in keys {
                ctx.out.bulk(&key);
            }
        }
        b"KEYSLOT" | b"COUNTKEYSINSLOT" | b"GETKEYSINSLOT" => {
            return Err(CommandError::other(format!(
                "ERR wrong number of arguments for 'cluster|{}' command",
                String::from_utf8_lossy(ctx.args[1]).to_ascii_lowercase()
            )));
        }
        _ => {
            return Err(CommandError::other(
                "ERR This instance has cluster support disabled",
            ));
        }
    }
    Ok(())
}
