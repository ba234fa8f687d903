//! Operator-facing commands: MERIDIAN.TOPOLOGY.

use std::sync::Arc;

use meridian_topology::TopologyMap;

use super::Ctx;
use crate::error::{CmdResult, CommandError};

pub fn topology(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match ctx.args[1].to_ascii_uppercase().as_slice() {
        // PARTIAL accepts a map that leaves slots unowned (served as CLUSTERDOWN).
        b"SET"
            if ctx.args.len() == 3
                || (ctx.args.len() == 4 && ctx.args[3].eq_ignore_ascii_case(b"PARTIAL")) =>
        {
            let partial = ctx.args.len() == 4;
            let map: TopologyMap = serde_json::from_slice(ctx.args[2]).map_err(|error| {
                CommandError::other(format!("ERR invalid topology JSON: {error}"))
            })?;
            let checked = if partial {
                map.validate_structure()
            } else {
                map.validate()
            };
            checked
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
            let map = Arc::new(map);
            *current = Some(map.clone());
            // ownership the map settles ends MIGRATING / IMPORTING for those slots
            ctx.shared
                .migrations
                .write()
                .settle(&map, &ctx.shared.node_id);
            drop(current);
            // the map says who replicates whom: (re)point or promote this node
            if let Some(shared) = ctx.shared.me.upgrade() {
                crate::replication::link::follow_topology(&shared, &map);
            }
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
