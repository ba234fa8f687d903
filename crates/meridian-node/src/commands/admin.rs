//! Operator-facing commands: MERIDIAN.TOPOLOGY, MERIDIAN.PEERS, and INVALIDATE; and
//! MERIDIAN.WRITEBEHIND, the write-behind queue's records in the replication stream.

use std::sync::Arc;

use meridian_topology::{SLOT_COUNT, TopologyMap};

use super::{Ctx, Pending};
use crate::error::{CmdResult, CommandError};
use crate::exec::{Caller, ClientId, ExecContext};
use crate::http::local::{self, Reply};
use crate::region::fanout::Fanout;
use crate::region::{Consistency, CrossRegionMode, PeerConfig, RegionHost, RegionWait};
use crate::state::Shared;

pub fn topology(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match ctx.args[1].to_ascii_uppercase().as_slice() {
        // PARTIAL accepts a map that leaves slots unowned (served as CLUSTERDOWN).
        b"SET"
            if ctx.args.len() == 3
                || (ctx.args.len() == 4 && ctx.args[3].eq_ignore_ascii_case(b"PARTIAL")) =>
        {
            let partial = ctx.args.len() == 4;
            let map = parse_topology(ctx.args[2])?;
            let checked = if partial {
                map.validate_structure()
            } else {
                map.validate()
            };
            checked
                .map_err(|error| CommandError::other(format!("ERR invalid topology: {error}")))?;
            let update = ctx.shared.topology_update.lock();
            let current = ctx.shared.topology.load_full();
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
            ctx.shared.topology.store(Some(map.clone()));
            // ownership the map settles ends MIGRATING / IMPORTING for those slots
            ctx.shared
                .migrations
                .write()
                .settle(&map, &ctx.shared.node_id);
            drop(update);
            // the map says who replicates whom: (re)point or promote this node
            if let Some(shared) = ctx.shared.me.upgrade() {
                crate::replication::link::follow_topology(&shared, &map);
            }
            // a primary deletes the keys left in slots another shard owns (in the background)
            ctx.shared.orphans.poke();
            // blocked clients whose keys moved away are answered by their retry (MOVED)
            ctx.shared.blocking.wake_all();
            ctx.out.ok();
        }
        b"GET" if ctx.args.len() == 2 => {
            let current = ctx.shared.topology.load_full();
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
                .load()
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

/// Largest epoch a map may carry: 2^53 - 1. Epochs count map changes (one per
/// failover or resharding batch), so no real cluster comes near it, while a map
/// claiming more would wedge the cluster for good: every later map must have a
/// higher epoch, the operator computes `epoch + 1` (overflows at u64::MAX),
/// `MERIDIAN.TOPOLOGY EPOCH` replies a signed integer, and the epoch lands in
/// the CRD status, read by JSON tools that hold numbers as doubles (exact only
/// up to 2^53).
pub const MAX_EPOCH: u64 = (1 << 53) - 1;
/// Largest map accepted, as JSON: parsing allocates in proportion to it. A map
/// at the other bounds below takes a few MiB.
const MAX_TOPOLOGY_JSON: usize = 32 * 1024 * 1024;
/// More shards than slots cannot all own one; every command routes through the
/// shard list, so its length is bounded too.
pub const MAX_SHARDS: usize = SLOT_COUNT as usize;
/// Primaries and replicas over every shard (the operator runs at most 256
/// shards of 6 nodes).
pub const MAX_NODES: usize = 64 * 1024;
/// Node ids are pod names and addresses IPs or DNS names: 253 bytes at most.
pub const MAX_NAME_LEN: usize = 253;

/// Parses a topology map (from `MERIDIAN.TOPOLOGY SET` or a peer region) and
/// checks the bounds that keep it from costing unbounded memory or time and
/// its epoch from overflowing; slot ranges and ownership are checked by
/// [`TopologyMap::validate`].
pub fn parse_topology(json: &[u8]) -> Result<TopologyMap, CommandError> {
    if json.len() > MAX_TOPOLOGY_JSON {
        return Err(CommandError::TopologyTooLarge(format!(
            "map JSON is {} bytes, more than {MAX_TOPOLOGY_JSON}",
            json.len()
        )));
    }
    let map: TopologyMap = serde_json::from_slice(json)
        .map_err(|error| CommandError::other(format!("ERR invalid topology JSON: {error}")))?;
    if map.epoch > MAX_EPOCH {
        return Err(CommandError::EpochTooLarge {
            epoch: map.epoch,
            max: MAX_EPOCH,
        });
    }
    if map.shards.len() > MAX_SHARDS {
        return Err(CommandError::TopologyTooLarge(format!(
            "{} shards, more than {MAX_SHARDS}",
            map.shards.len()
        )));
    }
    let nodes = map.nodes().count();
    if nodes > MAX_NODES {
        return Err(CommandError::TopologyTooLarge(format!(
            "{nodes} nodes, more than {MAX_NODES}"
        )));
    }
    let longest = [map.cluster.len(), map.region.len()]
        .into_iter()
        .chain(map.nodes().flat_map(|node| [node.id.len(), node.ip.len()]))
        .max()
        .unwrap_or(0);
    if longest > MAX_NAME_LEN {
        return Err(CommandError::TopologyTooLarge(format!(
            "name or address of {longest} bytes, more than {MAX_NAME_LEN}"
        )));
    }
    Ok(map)
}

/// Peer regions one node links to: each costs a coordinator task and a connection per
/// primary of that region (the CRD allows 32 remote peers; in-cluster regions add theirs).
const MAX_PEER_REGIONS: usize = 64;
/// Seeds per peer region: the operator lists every pod of the peer region.
const MAX_SEEDS_PER_PEER: usize = 4096;
/// A region is a DNS label; a seed is a DNS name (253) or an address, and a port.
const MAX_REGION_NAME: usize = 63;
const MAX_SEED_LEN: usize = 253 + 6;

/// Refuses a peer list the node should not act on: empty or oversized names, seeds that
/// are not `host:port`, its own region, a region twice, or more peers or seeds than a
/// node links to (a broken or hostile caller must not make it spawn without bound).
fn validate_peers(configs: &[PeerConfig], own_region: &str) -> Result<(), CommandError> {
    if configs.len() > MAX_PEER_REGIONS {
        return Err(CommandError::other(format!(
            "ERR {} peer regions, at most {MAX_PEER_REGIONS} allowed",
            configs.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for config in configs {
        if config.region.is_empty() || config.seeds.is_empty() {
            return Err(CommandError::other(
                "ERR every peer needs a region name and at least one seed",
            ));
        }
        if config.region.len() > MAX_REGION_NAME {
            return Err(CommandError::other(format!(
                "ERR region name of {} bytes, at most {MAX_REGION_NAME} allowed",
                config.region.len()
            )));
        }
        if config.region == own_region {
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
        if config.seeds.len() > MAX_SEEDS_PER_PEER {
            return Err(CommandError::other(format!(
                "ERR {} seeds for region '{}', at most {MAX_SEEDS_PER_PEER} allowed",
                config.seeds.len(),
                config.region
            )));
        }
        if let Some(bad) = config.seeds.iter().find(|seed| {
            seed.len() > MAX_SEED_LEN
                || seed
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        }) {
            let shown: String = bad.chars().take(80).collect();
            return Err(CommandError::other(format!(
                "ERR seed '{shown}' is not host:port"
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
            validate_peers(&configs, &regions.settings.region)?;
            let shared = ctx
                .shared
                .me
                .upgrade()
                .ok_or_else(|| CommandError::other("ERR node is shutting down"))?;
            tracing::info!(peers = configs.len(), "region peers updated");
            let host: Arc<dyn RegionHost> = shared;
            regions.set_peers(&host, configs);
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
    if !ctx.keys.is_direct() {
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
    let deleted = delete_matching(ctx.shared, ctx.exec.writing_client(), pattern)?;
    let reply_start = ctx.out.mark();
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
            reply: ctx.out.take_since(reply_start),
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
pub fn delete_matching(
    shared: &Shared,
    requested_by: Option<ClientId>,
    pattern: &[u8],
) -> Result<u64, CommandError> {
    let keys = match local::run_as(
        shared,
        ExecContext::new(Caller::Internal),
        &[b"KEYS", pattern],
        false,
    )
    .0
    {
        Some(Reply::Array(keys)) => keys,
        Some(Reply::Error(error)) => return Err(CommandError::other(error)),
        _ => Vec::new(),
    };
    let mut deleted = 0;
    for key in keys {
        let Reply::Bulk(key) = key else { continue };
        let reply = local::run_as(
            shared,
            ExecContext::new(Caller::Invalidation { requested_by }),
            &[b"DEL", &key],
            false,
        );
        if let Some(Reply::Int(count)) = reply.0 {
            deleted += count.max(0) as u64;
        }
    }
    Ok(deleted)
}

/// `MERIDIAN.WRITEBEHIND QUEUED <key> <version> PUT <value> | DELETE` and
/// `MERIDIAN.WRITEBEHIND FLUSHED <key> <version>`: a replica's copy of its primary's
/// write-behind queue. Only the replication stream sends them (a client could make
/// a promoted node send writes the primary never queued).
pub fn write_behind(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    use crate::origin::write_behind::{PendingOp, PendingWrite};
    if !ctx.client.primary_link {
        return Err(CommandError::other(
            "ERR MERIDIAN.WRITEBEHIND is only accepted from a primary's replication stream",
        ));
    }
    let syntax = || CommandError::other("ERR syntax error in MERIDIAN.WRITEBEHIND");
    let args = ctx.args;
    let version = std::str::from_utf8(args[3])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(syntax)?;
    // a replica without write-behind configured has no queue to keep
    let queue = ctx
        .shared
        .origin
        .as_ref()
        .and_then(|origin| origin.write_behind.as_ref());
    match args[1].to_ascii_uppercase().as_slice() {
        b"QUEUED" => {
            let op = match (args.get(4).map(|op| op.to_ascii_uppercase()), args.len()) {
                (Some(op), 6) if op == b"PUT" => {
                    PendingOp::Put(bytes::Bytes::copy_from_slice(args[5]))
                }
                (Some(op), 5) if op == b"DELETE" => PendingOp::Delete,
                _ => return Err(syntax()),
            };
            if let Some(queue) = queue {
                let write = PendingWrite {
                    key: args[2].to_vec(),
                    version,
                    op,
                };
                queue.apply_queued(write, std::time::Instant::now());
            }
        }
        b"FLUSHED" if args.len() == 4 => {
            if let Some(queue) = queue {
                queue.apply_flushed(args[2], version);
            }
        }
        _ => return Err(syntax()),
    }
    ctx.out.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_topology::{NodeAddr, ShardTopology, SlotRange};

    fn node(id: String) -> NodeAddr {
        NodeAddr {
            id,
            ip: "10.0.0.1".into(),
            port: 6379,
        }
    }

    fn map(epoch: u64, replicas: usize) -> TopologyMap {
        TopologyMap {
            epoch,
            cluster: "c".into(),
            region: "r".into(),
            shards: vec![ShardTopology {
                index: 0,
                slots: vec![SlotRange::new(0, SLOT_COUNT - 1).expect("range")],
                primary: node("p".into()),
                replicas: (0..replicas)
                    .map(|index| node(format!("r{index}")))
                    .collect(),
            }],
        }
    }

    fn peer(region: &str, seeds: usize) -> PeerConfig {
        PeerConfig {
            region: region.into(),
            seeds: (0..seeds)
                .map(|i| format!("10.0.{}.{}:16379", i / 250, i % 250))
                .collect(),
        }
    }

    fn refusal(configs: &[PeerConfig]) -> String {
        match validate_peers(configs, "a") {
            Ok(()) => panic!("accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn peer_lists_are_bounded_and_checked() {
        let many: Vec<PeerConfig> = (0..MAX_PEER_REGIONS)
            .map(|i| peer(&format!("r{i}"), MAX_SEEDS_PER_PEER))
            .collect();
        assert_eq!(validate_peers(&many, "a"), Ok(()));
        let too_many: Vec<PeerConfig> = (0..=MAX_PEER_REGIONS)
            .map(|i| peer(&format!("r{i}"), 1))
            .collect();
        assert_eq!(
            refusal(&too_many),
            "ERR 65 peer regions, at most 64 allowed"
        );
        assert_eq!(
            refusal(&[peer("b", MAX_SEEDS_PER_PEER + 1)]),
            "ERR 4097 seeds for region 'b', at most 4096 allowed"
        );
        assert_eq!(
            refusal(&[peer(&"x".repeat(64), 1)]),
            "ERR region name of 64 bytes, at most 63 allowed"
        );
        let long_seed = PeerConfig {
            region: "b".into(),
            seeds: vec![format!("{}:1", "h".repeat(300))],
        };
        assert!(refusal(&[long_seed]).ends_with("' is not host:port"));
        assert_eq!(
            refusal(&[peer("a", 1)]),
            "ERR 'a' is this node's own region"
        );
        assert_eq!(
            refusal(&[peer("b", 1), peer("b", 2)]),
            "ERR region 'b' is listed twice"
        );
        assert_eq!(
            refusal(&[peer("b", 0)]),
            "ERR every peer needs a region name and at least one seed"
        );
    }

    fn parse(map: &TopologyMap) -> Result<TopologyMap, CommandError> {
        parse_topology(&serde_json::to_vec(map).expect("json"))
    }

    #[test]
    fn epochs_stop_short_of_overflow() {
        assert_eq!(parse(&map(MAX_EPOCH, 1)), Ok(map(MAX_EPOCH, 1)));
        assert_eq!(
            parse(&map(MAX_EPOCH + 1, 1)),
            Err(CommandError::EpochTooLarge {
                epoch: MAX_EPOCH + 1,
                max: MAX_EPOCH
            })
        );
        assert_eq!(
            CommandError::EpochTooLarge {
                epoch: u64::MAX,
                max: MAX_EPOCH
            }
            .to_string(),
            "ERR invalid topology: epoch 18446744073709551615 is above the largest accepted epoch 9007199254740991"
        );
        // the operator's next epoch and the signed EPOCH reply stay exact
        assert!(MAX_EPOCH.checked_add(1).is_some() && i64::try_from(MAX_EPOCH).is_ok());
    }

    #[test]
    fn maps_are_bounded_before_and_after_parsing() {
        let huge = vec![b' '; MAX_TOPOLOGY_JSON + 1];
        assert_eq!(
            parse_topology(&huge),
            Err(CommandError::TopologyTooLarge(format!(
                "map JSON is {} bytes, more than {MAX_TOPOLOGY_JSON}",
                MAX_TOPOLOGY_JSON + 1
            )))
        );
        assert_eq!(
            parse(&map(1, MAX_NODES)),
            Err(CommandError::TopologyTooLarge(format!(
                "{} nodes, more than {MAX_NODES}",
                MAX_NODES + 1
            )))
        );
        let mut long = map(1, 0);
        long.region = "r".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            parse(&long),
            Err(CommandError::TopologyTooLarge(_))
        ));
    }
}
