//! Cluster mode: once the operator pushed a topology map, key commands are
//! routed by hash slot (MOVED / CROSSSLOT / CLUSTERDOWN), replicas serve reads
//! to READONLY connections, and the CLUSTER subcommands describe the map the
//! way Redis Cluster does. Without a map the node stays standalone.

use std::fmt::Write as _;
use std::sync::Arc;

use meridian_topology::{
    NodeAddr, NodeRole, Route, SLOT_COUNT, ShardTopology, TopologyMap, cluster_node_id, key_slot,
};

use super::{Ctx, READONLY, Spec, WRITE, parse_int};
use crate::error::{CmdResult, CommandError};
use crate::migration;
use crate::protocol::Out;
use crate::state::Shared;

/// Redis Cluster's refusal for a slot no node serves.
pub const UNSERVED: &str = "CLUSTERDOWN Hash slot not served";

/// The map this node obeys, if the operator pushed one.
pub fn current_map(shared: &Shared) -> Option<Arc<TopologyMap>> {
    shared.topology.load_full()
}

/// True when the command may be served by a replica to a READONLY connection.
pub fn is_read(spec: &Spec) -> bool {
    spec.has(READONLY) && !spec.has(WRITE)
}

/// Checks that every key hashes to one slot and that this node serves that
/// slot under `map`, and returns that slot (none without keys). `replica_read`
/// allows a replica of the owner to serve it.
pub fn route_keys<'k>(
    map: &TopologyMap,
    me: &str,
    replica_read: bool,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<Option<u16>, CommandError> {
    let mut slot = None;
    for key in keys {
        let this = key_slot(key);
        match slot {
            None => slot = Some(this),
            Some(first) if first != this => {
                return Err(CommandError::other(
                    "CROSSSLOT Keys in request don't hash to the same slot",
                ));
            }
            Some(_) => {}
        }
    }
    let Some(slot) = slot else { return Ok(None) };
    match map.route(slot, me, replica_read) {
        Route::Local => Ok(Some(slot)),
        Route::Moved(primary) => Err(CommandError::other(format!(
            "MOVED {slot} {}",
            plain_endpoint(primary)
        ))),
        Route::Unserved => Err(CommandError::other(UNSERVED)),
    }
}

/// A command whose slot is being migrated: whether its keys are present
/// decides between serving it, ASK and TRYAGAIN. The dispatcher decides
/// under the shard locks, so MIGRATE cannot move a key in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InTransit {
    /// This node owns the slot and is moving it to `ask` (`ip:port`).
    Migrating { slot: u16, ask: String },
    /// This node is receiving the slot and the client sent ASKING.
    Importing,
}

impl InTransit {
    /// The refusal for a command with `present` of its keys here and `missing` not.
    pub fn refusal(&self, present: usize, missing: usize) -> Option<CommandError> {
        let unstable =
            || CommandError::other("TRYAGAIN Multiple keys request during rehashing of slot");
        match self {
            _ if missing == 0 => None,
            InTransit::Migrating { .. } if present > 0 => Some(unstable()),
            InTransit::Migrating { slot, ask } => {
                Some(CommandError::other(format!("ASK {slot} {ask}")))
            }
            InTransit::Importing if present + missing > 1 => Some(unstable()),
            InTransit::Importing => None,
        }
    }

    /// True when this node would redirect (ASK) a command with `missing` of
    /// its keys absent here.
    pub fn redirects(&self, missing: usize) -> bool {
        matches!(self, InTransit::Migrating { .. }) && missing > 0
    }
}

/// TRYAGAIN for a command (or a whole transaction) touching a key a MIGRATE
/// batch has in flight, decided under the keys' shard locks: a write could be
/// overwritten by the batch's copy, or the batch's tombstone could delete a
/// write the destination took, and an ASK for a missing key in flight would
/// send the client to a destination that may still receive that tombstone.
/// `write`: the command writes; `redirects`: it would be answered ASK. Reads
/// of keys present here are served as usual.
pub fn in_flight_refusal(
    shared: &Shared,
    write: bool,
    redirects: bool,
    keys: &[&[u8]],
) -> Option<CommandError> {
    ((write || redirects) && shared.in_flight.any(keys.iter().copied()))
        .then_some(CommandError::KeyInFlight)
}

/// Routing check for one command before it runs or is queued. `asking`:
/// the connection sent ASKING just before (or this is RESTORE-ASKING).
pub fn check_command(
    shared: &Shared,
    readonly_client: bool,
    asking: bool,
    spec: &Spec,
    args: &[&[u8]],
) -> Result<Option<InTransit>, CommandError> {
    if !spec.takes_keys() {
        return Ok(None);
    }
    let replica_read = readonly_client && is_read(spec);
    match spec.only_key(args) {
        // (no key vector for the common single-key command)
        Some(key) => check_keys(shared, replica_read, asking, &[key]),
        None => check_keys(shared, replica_read, asking, &spec.keys(args)),
    }
}

/// Routing check for a set of keys (one command, or every queued command
/// of a transaction at EXEC, like Redis's getNodeByQuery): CROSSSLOT, MOVED
/// and CLUSTERDOWN refusals, or whether the slot is in transit.
pub fn check_keys(
    shared: &Shared,
    replica_read: bool,
    asking: bool,
    keys: &[&[u8]],
) -> Result<Option<InTransit>, CommandError> {
    if keys.is_empty() {
        return Ok(None);
    }
    // a guard, not a clone: no reference count every I/O thread writes per command
    let current = shared.topology.load();
    let Some(map) = current.as_ref() else {
        // A managed node that restarted has no map until the operator decides what it is:
        // answering from its empty store would read acknowledged writes as missing.
        return if shared.repl.knows_its_role() {
            Ok(None)
        } else {
            Err(CommandError::other(UNSERVED))
        };
    };
    let routed = route_keys(map, &shared.node_id, replica_read, keys.iter().copied());
    match routed {
        Ok(None) => Ok(None),
        Ok(Some(_)) if !shared.migrations.any_migrating() => Ok(None),
        Ok(Some(slot)) => {
            let migrations = shared.migrations.read();
            Ok(migrations
                .migrating
                .get(&slot)
                .and_then(|destination| migration::endpoint_of(map, destination))
                .map(|ask| InTransit::Migrating { slot, ask }))
        }
        Err(CommandError::Other(moved))
            if asking
                && moved.starts_with("MOVED ")
                && shared
                    .migrations
                    .read()
                    .importing
                    .contains_key(&key_slot(keys[0])) =>
        {
            Ok(Some(InTransit::Importing))
        }
        Err(error) => Err(error),
    }
}

/// `ip:port` the way Redis writes it in MOVED and CLUSTER NODES (no brackets).
fn plain_endpoint(node: &NodeAddr) -> String {
    format!("{}:{}", node.ip, node.port)
}

pub fn readonly(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    ctx.client.readonly = true;
    ctx.out.ok();
    Ok(())
}

pub fn readwrite(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    ctx.client.readonly = false;
    ctx.out.ok();
    Ok(())
}

/// ASKING lets the next command (only) reach a slot this node is importing.
pub fn asking(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    ctx.client.asking = true;
    ctx.out.ok();
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

fn disabled() -> CommandError {
    CommandError::other("ERR This instance has cluster support disabled")
}

/// Contiguous slot ranges of a shard, merged and sorted.
fn shard_ranges(shard: &ShardTopology) -> Vec<(u16, u16)> {
    shard
        .slot_set()
        .ranges()
        .map(|range| (range.start, range.end))
        .collect()
}

fn shard_id(map: &TopologyMap, shard: &ShardTopology) -> String {
    cluster_node_id(&format!(
        "{}/{}/shard-{}",
        map.cluster, map.region, shard.index
    ))
}

/// The CLUSTER INFO text.
pub fn info_text(map: &TopologyMap, me: &str) -> String {
    let assigned = map.assigned_slots();
    let state = if assigned == usize::from(SLOT_COUNT) {
        "ok"
    } else {
        "fail"
    };
    let size = map
        .shards
        .iter()
        .filter(|shard| !shard.slots.is_empty())
        .count();
    let known = map.nodes().count() + usize::from(map.node(me).is_none());
    let mut text = String::new();
    let _ = write!(
        text,
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{known}\r\ncluster_size:{size}\r\ncluster_current_epoch:{epoch}\r\ncluster_my_epoch:{epoch}\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
        epoch = map.epoch,
    );
    text
}

fn write_slots_node(out: &mut Out, node: &NodeAddr) {
    out.array(4);
    out.bulk(node.ip.as_bytes());
    out.integer(i64::from(node.port));
    out.bulk(cluster_node_id(&node.id).as_bytes());
    out.map(1);
    out.bulk(b"hostname");
    out.bulk(node.id.as_bytes());
}

fn cluster_slots(out: &mut Out, map: &TopologyMap) {
    let mut entries: Vec<(u16, u16, &ShardTopology)> = map
        .shards
        .iter()
        .flat_map(|shard| {
            shard_ranges(shard)
                .into_iter()
                .map(move |(start, end)| (start, end, shard))
        })
        .collect();
    entries.sort_by_key(|(start, _, _)| *start);
    out.array(entries.len());
    for (start, end, shard) in entries {
        out.array(2 + shard.nodes().count());
        out.integer(i64::from(start));
        out.integer(i64::from(end));
        for node in shard.nodes() {
            write_slots_node(out, node);
        }
    }
}

fn cluster_shards(out: &mut Out, map: &TopologyMap) {
    out.array(map.shards.len());
    for shard in &map.shards {
        out.map(2);
        out.bulk(b"slots");
        let ranges = shard_ranges(shard);
        out.array(ranges.len() * 2);
        for (start, end) in ranges {
            out.integer(i64::from(start));
            out.integer(i64::from(end));
        }
        out.bulk(b"nodes");
        out.array(shard.nodes().count());
        for node in shard.nodes() {
            let role = match shard.role_of(&node.id) {
                Some(NodeRole::Replica) => "replica",
                _ => "master",
            };
            out.map(8);
            out.bulk(b"id");
            out.bulk(cluster_node_id(&node.id).as_bytes());
            out.bulk(b"port");
            out.integer(i64::from(node.port));
            out.bulk(b"ip");
            out.bulk(node.ip.as_bytes());
            out.bulk(b"endpoint");
            out.bulk(node.ip.as_bytes());
            out.bulk(b"hostname");
            out.bulk(node.id.as_bytes());
            out.bulk(b"role");
            out.bulk(role.as_bytes());
            out.bulk(b"replication-offset");
            out.integer(0);
            out.bulk(b"health");
            out.bulk(b"online");
        }
    }
}

fn node_line(
    text: &mut String,
    map: &TopologyMap,
    me: &str,
    shard: &ShardTopology,
    node: &NodeAddr,
) {
    let myself = if node.id == me { "myself," } else { "" };
    let (role, master) = if node.id == shard.primary.id {
        ("master", "-".to_string())
    } else {
        ("slave", cluster_node_id(&shard.primary.id))
    };
    let _ = write!(
        text,
        "{} {}@{} {myself}{role} {master} 0 0 {} connected",
        cluster_node_id(&node.id),
        plain_endpoint(node),
        u32::from(node.port) + 10000,
        map.epoch,
    );
    if role == "master" {
        for (start, end) in shard_ranges(shard) {
            if start == end {
                let _ = write!(text, " {start}");
            } else {
                let _ = write!(text, " {start}-{end}");
            }
        }
    }
    text.push('\n');
}

/// The CLUSTER NODES text; a node missing from the map (deposed) still lists
/// itself, as a master without slots.
pub fn nodes_text(map: &TopologyMap, me: &str, bind: &str, port: u16) -> String {
    let mut text = String::new();
    for shard in &map.shards {
        for node in shard.nodes() {
            node_line(&mut text, map, me, shard, node);
        }
    }
    if map.node(me).is_none() {
        let _ = writeln!(
            text,
            "{} {bind}:{port}@{} myself,master - 0 0 {} connected",
            cluster_node_id(me),
            u32::from(port) + 10000,
            map.epoch,
        );
    }
    text
}

fn keys_in_slot(ctx: &mut Ctx<'_, '_>, slot: u16, count: i64) -> Vec<Vec<u8>> {
    let now = ctx.now;
    ctx.keys.with_slot(slot, |shard| {
        let mut keys = Vec::new();
        if shard.keys_in_slot(slot) == 0 {
            return keys;
        }
        for position in 0..shard.slab_len() {
            if keys.len() as i64 >= count {
                break;
            }
            if let Some(entry) = shard.entry_at(position)
                && entry.slot() == slot
                && (entry.expire_at() == 0 || entry.expire_at() > now)
            {
                keys.push(entry.key().to_vec());
            }
        }
        keys
    })
}

/// CLUSTER SETSLOT <slot> MIGRATING <id> | IMPORTING <id> | STABLE | NODE <id>.
/// Ownership itself only changes with a new topology map; NODE just ends the
/// slot's migration state here.
fn setslot(ctx: &mut Ctx<'_, '_>, map: &TopologyMap) -> CmdResult {
    let slot = slot_arg(ctx, 2)?;
    let action = ctx.arg(3).to_ascii_uppercase();
    let me = &ctx.shared.node_id;
    let owns = matches!(map.route(slot, me, false), Route::Local);
    let peer = String::from_utf8_lossy(ctx.arg(4)).into_owned();
    let known_peer = || {
        if migration::endpoint_of(map, &peer).is_none() {
            return Err(CommandError::other(format!(
                "ERR I don't know about node {peer}"
            )));
        }
        if peer == cluster_node_id(me) {
            return Err(CommandError::other(
                "ERR I can't migrate or import a slot to or from myself",
            ));
        }
        Ok(())
    };
    match (action.as_slice(), ctx.args.len()) {
        (b"MIGRATING", 5) => {
            if !owns {
                return Err(CommandError::other(format!(
                    "ERR I'm not the owner of hash slot {slot}"
                )));
            }
            known_peer()?;
            let mut migrations = ctx.shared.migrations.write();
            migrations.importing.remove(&slot);
            migrations.migrating.insert(slot, peer);
        }
        (b"IMPORTING", 5) => {
            if owns {
                return Err(CommandError::other(format!(
                    "ERR I'm already the owner of hash slot {slot}"
                )));
            }
            known_peer()?;
            let mut migrations = ctx.shared.migrations.write();
            migrations.migrating.remove(&slot);
            migrations.importing.insert(slot, peer);
        }
        (b"STABLE", 4) | (b"NODE", 5) => {
            if action.as_slice() == b"NODE" && migration::endpoint_of(map, &peer).is_none() {
                return Err(CommandError::other(format!("ERR Unknown node {peer}")));
            }
            let mut migrations = ctx.shared.migrations.write();
            migrations.migrating.remove(&slot);
            migrations.importing.remove(&slot);
            drop(migrations);
            // keys of a slot no longer in transit may be orphans
            ctx.shared.orphans.poke();
        }
        _ => {
            return Err(CommandError::other(
                "ERR Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP",
            ));
        }
    }
    ctx.out.ok();
    Ok(())
}

/// Appends Redis's open-slot markers (`[slot->-id]`, `[slot-<-id]`) to this
/// node's CLUSTER NODES line, so tools see migrations in progress.
fn mark_open_slots(text: String, shared: &Shared) -> String {
    let migrations = shared.migrations.read();
    if migrations.migrating.is_empty() && migrations.importing.is_empty() {
        return text;
    }
    let mut marks = String::new();
    let mut migrating: Vec<_> = migrations.migrating.iter().collect();
    migrating.sort();
    for (slot, id) in migrating {
        let _ = write!(marks, " [{slot}->-{id}]");
    }
    let mut importing: Vec<_> = migrations.importing.iter().collect();
    importing.sort();
    for (slot, id) in importing {
        let _ = write!(marks, " [{slot}-<-{id}]");
    }
    let mut marked = String::with_capacity(text.len() + marks.len());
    for line in text.lines() {
        marked.push_str(line);
        if line.contains(" myself,") {
            marked.push_str(&marks);
        }
        marked.push('\n');
    }
    marked
}

pub fn cluster(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let subcommand = ctx.args[1].to_ascii_uppercase();
    let map = current_map(ctx.shared);
    let fixed_arity = match subcommand.as_slice() {
        b"KEYSLOT" | b"COUNTKEYSINSLOT" => Some(3),
        b"GETKEYSINSLOT" => Some(4),
        b"MYID" | b"MYSHARDID" | b"SLOTS" | b"SHARDS" | b"NODES" | b"INFO" => Some(2),
        _ => None,
    };
    if fixed_arity.is_some_and(|arity| arity != ctx.args.len()) {
        return Err(CommandError::other(format!(
            "ERR wrong number of arguments for 'cluster|{}' command",
            String::from_utf8_lossy(ctx.args[1]).to_ascii_lowercase()
        )));
    }
    match (subcommand.as_slice(), map) {
        // Standalone nodes keep answering with their plain name.
        (b"MYID", None) => ctx.out.bulk(ctx.shared.node_id.as_bytes()),
        (b"MYID", Some(_)) => ctx
            .out
            .bulk(cluster_node_id(&ctx.shared.node_id).as_bytes()),
        (b"KEYSLOT", _) => ctx.out.integer(i64::from(key_slot(ctx.args[2]))),
        (b"COUNTKEYSINSLOT", _) => {
            let slot = slot_arg(ctx, 2)?;
            let count = ctx.keys.with_slot(slot, |shard| shard.keys_in_slot(slot));
            ctx.out.integer(i64::from(count));
        }
        (b"GETKEYSINSLOT", _) => {
            let slot = slot_arg(ctx, 2)?;
            let count = ctx.int_arg(3)?;
            if count < 0 {
                return Err(CommandError::other("ERR Invalid number of keys"));
            }
            let keys = keys_in_slot(ctx, slot, count);
            ctx.out.array(keys.len());
            for key in keys {
                ctx.out.bulk(&key);
            }
        }
        (b"MYSHARDID", Some(map)) => {
            let shard = map
                .shard_of_node(&ctx.shared.node_id)
                .map(|shard| shard_id(&map, shard))
                .unwrap_or_else(|| cluster_node_id(&format!("{}/unassigned", ctx.shared.node_id)));
            ctx.out.bulk(shard.as_bytes());
        }
        (b"SLOTS", Some(map)) => cluster_slots(ctx.out, &map),
        (b"SHARDS", Some(map)) => cluster_shards(ctx.out, &map),
        (b"NODES", Some(map)) => {
            let text = nodes_text(&map, &ctx.shared.node_id, &ctx.shared.bind, ctx.shared.port);
            let text = mark_open_slots(text, ctx.shared);
            ctx.out.verbatim(&text);
        }
        (b"SETSLOT", Some(map)) => setslot(ctx, &map)?,
        (b"INFO", Some(map)) => ctx.out.verbatim(&info_text(&map, &ctx.shared.node_id)),
        (b"MYSHARDID" | b"SLOTS" | b"SHARDS" | b"NODES" | b"INFO" | b"SETSLOT", None) => {
            return Err(disabled());
        }
        (_, Some(_)) => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(ctx.args[1])
            )));
        }
        (_, None) => return Err(disabled()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_topology::{SlotRange, split_evenly};

    fn map() -> TopologyMap {
        let node = |id: String, port: u16| NodeAddr {
            id,
            ip: "127.0.0.1".into(),
            port,
        };
        TopologyMap {
            epoch: 7,
            cluster: "demo".into(),
            region: "eu".into(),
            shards: split_evenly(3)
                .into_iter()
                .enumerate()
                .map(|(index, range)| ShardTopology {
                    index: index as u32,
                    slots: vec![range],
                    primary: node(format!("p{index}"), 7000 + index as u16),
                    replicas: vec![node(format!("r{index}"), 7100 + index as u16)],
                })
                .collect(),
        }
    }

    #[test]
    fn routing_errors_match_redis() {
        let map = map();
        let foo_slot = key_slot(b"foo"); // 12182: shard 2
        assert_eq!(
            route_keys(&map, "p2", false, [&b"foo"[..]]),
            Ok(Some(foo_slot))
        );
        assert_eq!(
            route_keys(&map, "p0", false, [&b"foo"[..]]),
            Err(CommandError::other(format!(
                "MOVED {foo_slot} 127.0.0.1:7002"
            )))
        );
        assert_eq!(
            route_keys(&map, "p2", false, [&b"foo"[..], b"bar"]),
            Err(CommandError::other(
                "CROSSSLOT Keys in request don't hash to the same slot"
            ))
        );
        assert_eq!(
            route_keys(&map, "p2", false, [&b"{foo}a"[..], b"{foo}b"]),
            Ok(Some(foo_slot))
        );
        assert_eq!(
            route_keys(&map, "r2", true, [&b"foo"[..]]),
            Ok(Some(foo_slot))
        );
        assert!(route_keys(&map, "r2", false, [&b"foo"[..]]).is_err());
        let mut partial = map.clone();
        partial.shards[2].slots = vec![SlotRange::single(0)];
        partial.shards[0].slots = vec![SlotRange {
            start: 1,
            end: 5460,
        }];
        assert_eq!(
            route_keys(&partial, "p2", false, [&b"foo"[..]]),
            Err(CommandError::other("CLUSTERDOWN Hash slot not served"))
        );
    }

    #[test]
    fn nodes_and_info_text() {
        let map = map();
        let text = nodes_text(&map, "r1", "127.0.0.1", 7101);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[0],
            format!(
                "{} 127.0.0.1:7000@17000 master - 0 0 7 connected 0-5460",
                cluster_node_id("p0")
            )
        );
        assert_eq!(
            lines[3],
            format!(
                "{} 127.0.0.1:7101@17101 myself,slave {} 0 0 7 connected",
                cluster_node_id("r1"),
                cluster_node_id("p1")
            )
        );
        let deposed = nodes_text(&map, "old", "127.0.0.1", 7999);
        assert!(
            deposed
                .lines()
                .last()
                .unwrap_or_default()
                .contains("myself,master - ")
        );
        let info = info_text(&map, "p0");
        assert!(info.contains("cluster_state:ok\r\n"));
        assert!(info.contains("cluster_known_nodes:6\r\n"));
        assert!(info.contains("cluster_size:3\r\n"));
        assert!(info.contains("cluster_current_epoch:7\r\n"));
    }
}
