//! Operator-facing commands: MERIDIAN.TOPOLOGY, MERIDIAN.PEERS, and INVALIDATE.

use std::sync::Arc;

use meridian_topology::TopologyMap;

use super::{Ctx, Pending};
use crate::error::{CmdResult, CommandError};
use crate::http::local::{self, Reply};
use crate::origin::without_origin;
use crate::region::fanout::Fanout;
use crate::region::{Consistency, CrossRegionMode, PeerConfig, RegionWait};
use crate::state::Shared;
use crate::store::Access;

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
            // slots this node's shard loses: their keys become orphans once moved
            if let Some(existing) = current.as_ref() {
                ctx.shared
                    .orphans
                    .record_transition(existing, &map, &ctx.shared.node_id);
            }
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
            // a primary deletes the keys left in slots another shard owns (in the background)
            ctx.shared.orphans.poke();
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

/// `MERIDIAN.PEERS SET <json>` (`[{"region": "...", "seeds": ["host:port"]}]`)
/// configures the peer regions; `MERIDIAN.PEERS GET` shows them with link state.
pub fn peers(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let regions = &ctx.shared.regions;
    match ctx.args[1].to_ascii_uppercase().as_slice() {
        b"SET" if ctx.args.len() == 3 => {
            let configs: Vec<PeerConfig> = serde_json::from_slice(ctx.args[2])
                .map_err(|error| CommandError::other(format!("ERR invalid peers JSON: {error}")))?;
            let mut seen = std::collections::BTreeSet::new();
            for config in &configs {
                if config.region.is_empty() || config.seeds.is_empty() {
                    return Err(CommandError::other(
                        "ERR every peer needs a region name and at least one seed",
                    ));
                }
                if config.region == regions.settings.region {
                    return Err(CommandError::other(format!(
                        "ERR '{}' is this node's own region",
                        config.region
                    )));
                }
                if !seen.insert(config.region.as_str()) {
                    return Err(CommandError::other(format!(
                        "ERR region '{}' is listed twice",
                        config.region
                    )));
                }
                if let Some(bad) = config.seeds.iter().find(|seed| {
                    seed.rsplit_once(':')
                        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
                }) {
                    return Err(CommandError::other(format!(
                        "ERR seed '{bad}' is not host:port"
                    )));
                }
            }
            let shared = ctx
                .shared
                .me
                .upgrade()
                .ok_or_else(|| CommandError::other("ERR node is shutting down"))?;
            tracing::info!(peers = configs.len(), "region peers updated");
            regions.set_peers(&shared, configs);
            ctx.out.ok();
        }
        b"GET" if ctx.args.len() == 2 => {
            let settings = &regions.settings;
            let status = serde_json::json!({
                "cluster": settings.cluster,
                "region": settings.region,
                "mode": match settings.mode {
                    CrossRegionMode::Invalidate => "invalidate",
                    CrossRegionMode::Replicate => "replicate",
                },
                "consistency": match settings.consistency {
                    Consistency::Eventual => "eventual",
                    Consistency::Strong => "strong",
                },
                "peers": regions.peers().iter().map(|peer| peer.status()).collect::<Vec<_>>(),
            });
            ctx.out.bulk(status.to_string().as_bytes());
        }
        b"SET" | b"GET" => return Err(ctx.wrong_arity()),
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try MERIDIAN.PEERS SET <json> | GET.",
                String::from_utf8_lossy(ctx.args[1])
            )));
        }
    }
    Ok(())
}

/// `INVALIDATE <pattern> [LOCAL]`: drops this node's keys matching the glob
/// pattern, has every other primary of the region drop theirs and tells every
/// peer region to drop them too; replies with this node's count once the other
/// primaries confirmed (and, in strong mode, the peer regions acknowledged).
/// `LOCAL` (what the fan-out sends) only drops this node's keys.
pub fn invalidate(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if !matches!(ctx.keys, Access::Direct(_)) {
        return Err(CommandError::other(
            "ERR INVALIDATE is not allowed inside MULTI",
        ));
    }
    let local_only = match ctx.args.len() {
        2 => false,
        3 if ctx.args[2].eq_ignore_ascii_case(b"LOCAL") => true,
        _ => return Err(CommandError::Syntax),
    };
    super::replication::check_write(ctx.shared)?;
    let pattern = ctx.args[1];
    let deleted = delete_matching(ctx.shared, pattern)?;
    let reply_start = ctx.out.buf.len();
    ctx.out.integer(deleted as i64);
    let wait = if local_only {
        // Stale fills older than this invalidation are refused here as well.
        let regions = &ctx.shared.regions;
        if regions.is_active() {
            regions.versions.record_pattern(pattern, regions.tick());
        }
        None
    } else {
        let ack = ctx.shared.regions.publish_pattern(pattern);
        let fanout = Fanout::plan(ctx.shared, pattern);
        (ack.is_some() || fanout.is_some()).then(|| RegionWait {
            ack,
            reply: ctx.out.buf.split_off(reply_start).to_vec(),
            fanout,
        })
    };
    if let Some(wait) = wait {
        ctx.client.pending = Some(Pending::Regions(wait));
    }
    Ok(())
}

/// Deletes this node's keys matching a glob pattern, each through DEL so the
/// replicas drop them too; no per-key region events (one pattern event goes to
/// the peers instead). Keys of slots this node does not own are skipped.
pub fn delete_matching(shared: &Shared, pattern: &[u8]) -> Result<u64, CommandError> {
    let keys = match local::run(shared, &[b"KEYS", pattern], false).0 {
        Reply::Array(keys) => keys,
        Reply::Error(error) => return Err(CommandError::other(error)),
        _ => Vec::new(),
    };
    let mut deleted = 0;
    for key in keys {
        let Reply::Bulk(key) = key else { continue };
        let reply = crate::region::quietly(|| {
            without_origin(|| local::run(shared, &[b"DEL", &key], false))
        });
        if let Reply::Int(count) = reply.0 {
            deleted += count.max(0) as u64;
        }
    }
    Ok(deleted)
}
