//! Cluster mode with real processes: three primaries (plus three replica
//! processes used only for READONLY routing) share one pushed topology map.

mod common;

use std::process::Command;

use common::{Node, Reply, free_port, redis_cli};
use meridian_topology::{
    NodeAddr, ShardTopology, TopologyMap, cluster_node_id, key_slot, split_evenly,
};

fn start_named(node_id: &str) -> Node {
    Node::start_named(node_id, 4, &[])
}

struct Cluster {
    primaries: Vec<Node>,
    replicas: Vec<Node>,
}

fn addr(id: String, node: &Node) -> NodeAddr {
    NodeAddr {
        id,
        ip: "127.0.0.1".into(),
        port: node.port,
    }
}

impl Cluster {
    fn start(with_replicas: bool) -> Cluster {
        let primaries = (0..3)
            .map(|i| start_named(&format!("shard-{i}-0")))
            .collect();
        let replicas = if with_replicas {
            (0..3)
                .map(|i| start_named(&format!("shard-{i}-1")))
                .collect()
        } else {
            Vec::new()
        };
        Cluster {
            primaries,
            replicas,
        }
    }

    fn map(&self, epoch: u64) -> TopologyMap {
        TopologyMap {
            epoch,
            cluster: "demo".into(),
            region: "local".into(),
            shards: split_evenly(3)
                .into_iter()
                .enumerate()
                .map(|(i, range)| ShardTopology {
                    index: i as u32,
                    slots: vec![range],
                    primary: addr(format!("shard-{i}-0"), &self.primaries[i]),
                    replicas: self
                        .replicas
                        .get(i)
                        .map(|node| addr(format!("shard-{i}-1"), node))
                        .into_iter()
                        .collect(),
                })
                .collect(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Node> {
        self.primaries.iter().chain(self.replicas.iter())
    }

    fn push(&self, map: &TopologyMap, extra: &[&str]) {
        let json = serde_json::to_string(map).expect("json");
        for node in self.all() {
            let mut args = vec!["MERIDIAN.TOPOLOGY", "SET", json.as_str()];
            args.extend_from_slice(extra);
            assert_eq!(node.raw().cmd(&args), Reply::ok());
        }
    }

    /// Index of the primary that owns `key` in the initial map.
    fn owner_index(&self, key: &str) -> usize {
        let slot = key_slot(key.as_bytes());
        split_evenly(3)
            .iter()
            .position(|range| range.contains(slot))
            .unwrap_or_default()
    }
}

fn moved(key: &str, port: u16) -> Reply {
    Reply::err(&format!(
        "MOVED {} 127.0.0.1:{port}",
        key_slot(key.as_bytes())
    ))
}

#[test]
fn redirects_crossslot_and_multi() {
    let cluster = Cluster::start(false);
    let mut standalone = cluster.primaries[0].raw();
    assert_eq!(standalone.cmd(&["SET", "foo", "1"]), Reply::ok());
    let Reply::Bulk(info) = standalone.cmd(&["INFO", "cluster"]) else {
        panic!()
    };
    assert!(String::from_utf8_lossy(&info).contains("cluster_enabled:0"));
    assert_eq!(standalone.cmd(&["DEL", "foo"]), Reply::Int(1));

    cluster.push(&cluster.map(1), &[]);
    let key = "foo"; // slot 12182: shard 2
    let owner = cluster.owner_index(key);
    assert_eq!(owner, 2);
    let mut on_owner = cluster.primaries[owner].raw();
    let mut elsewhere = cluster.primaries[0].raw();
    let Reply::Bulk(info) = elsewhere.cmd(&["INFO", "cluster"]) else {
        panic!()
    };
    assert!(String::from_utf8_lossy(&info).contains("cluster_enabled:1"));

    assert_eq!(on_owner.cmd(&["SET", key, "v"]), Reply::ok());
    assert_eq!(on_owner.cmd(&["GET", key]), Reply::bulk("v"));
    let owner_port = cluster.primaries[owner].port;
    assert_eq!(elsewhere.cmd(&["GET", key]), moved(key, owner_port));
    assert_eq!(elsewhere.cmd(&["SET", key, "x"]), moved(key, owner_port));
    // keyless commands are unaffected
    assert_eq!(elsewhere.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(elsewhere.cmd(&["DBSIZE"]), Reply::Int(0));
    // COMMAND INFO reports key positions (legacy triple and key spec) clients route by.
    let Reply::Array(info) = elsewhere.cmd(&["COMMAND", "INFO", "MSET"]) else {
        panic!()
    };
    let Reply::Array(mset) = &info[0] else {
        panic!()
    };
    assert_eq!(&mset[3..6], &[Reply::Int(1), Reply::Int(-1), Reply::Int(2)]);
    let Reply::Array(specs) = &mset[8] else {
        panic!()
    };
    let Reply::Array(spec) = &specs[0] else {
        panic!()
    };
    let Reply::Array(find_keys) = &spec[5] else {
        panic!()
    };
    let Reply::Array(range) = &find_keys[3] else {
        panic!()
    };
    assert_eq!(
        range,
        &vec![
            Reply::bulk("lastkey"),
            Reply::Int(-1),
            Reply::bulk("keystep"),
            Reply::Int(2),
            Reply::bulk("limit"),
            Reply::Int(0)
        ]
    );

    let crossslot = Reply::err("CROSSSLOT Keys in request don't hash to the same slot");
    assert_eq!(on_owner.cmd(&["MGET", "foo", "bar"]), crossslot);
    assert_eq!(on_owner.cmd(&["MSET", "foo", "1", "bar", "2"]), crossslot);
    assert_eq!(
        on_owner.cmd(&["MSET", "{foo}a", "1", "{foo}b", "2"]),
        Reply::ok()
    );
    assert_eq!(on_owner.cmd(&["RENAME", "{foo}a", "{foo}c"]), Reply::ok());
    assert_eq!(on_owner.cmd(&["RENAME", "{foo}c", "bar"]), crossslot);

    // MULTI: a misrouted command is refused when queued and aborts EXEC.
    assert_eq!(elsewhere.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(elsewhere.cmd(&["SET", key, "1"]), moved(key, owner_port));
    assert_eq!(
        elsewhere.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    // Each command fits but the transaction spans two slots.
    let mut same_shard_other_slot = None;
    for candidate in 0..10_000 {
        let name = format!("k{candidate}");
        let slot = key_slot(name.as_bytes());
        if slot != key_slot(b"foo") && cluster.owner_index(&name) == owner {
            same_shard_other_slot = Some(name);
            break;
        }
    }
    let second = same_shard_other_slot.expect("a key on the same shard");
    assert_eq!(on_owner.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        on_owner.cmd(&["SET", key, "1"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        on_owner.cmd(&["SET", &second, "1"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(on_owner.cmd(&["EXEC"]), crossslot);
    assert_eq!(on_owner.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        on_owner.cmd(&["INCR", "{foo}n"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        on_owner.cmd(&["INCR", "{foo}n"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        on_owner.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::Int(1), Reply::Int(2)])
    );

    // A partial map leaves slots unserved.
    let mut partial = cluster.map(2);
    partial.shards[2].slots.clear();
    let json = serde_json::to_string(&partial).expect("json");
    let Reply::Error(refused) = elsewhere.cmd(&["MERIDIAN.TOPOLOGY", "SET", &json]) else {
        panic!("a map with gaps needs PARTIAL")
    };
    assert!(refused.contains("not assigned"), "{refused}");
    assert_eq!(
        elsewhere.cmd(&["MERIDIAN.TOPOLOGY", "SET", &json, "PARTIAL"]),
        Reply::ok()
    );
    assert_eq!(
        elsewhere.cmd(&["GET", key]),
        Reply::err("CLUSTERDOWN Hash slot not served")
    );
    let Reply::Bulk(info) = elsewhere.cmd(&["CLUSTER", "INFO"]) else {
        panic!()
    };
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("cluster_state:fail"), "{info}");
    assert!(info.contains("cluster_slots_assigned:10923"), "{info}");
}

#[test]
fn replicas_serve_readonly_reads_only() {
    let cluster = Cluster::start(true);
    cluster.push(&cluster.map(1), &[]);
    let key = "foo";
    let owner = cluster.owner_index(key);
    let owner_port = cluster.primaries[owner].port;
    let mut replica = cluster.replicas[owner].raw();
    assert_eq!(replica.cmd(&["GET", key]), moved(key, owner_port));
    assert_eq!(replica.cmd(&["READONLY"]), Reply::ok());
    assert_eq!(replica.cmd(&["GET", key]), Reply::Nil);
    assert_eq!(replica.cmd(&["SET", key, "1"]), moved(key, owner_port));
    // a replica of another shard still redirects reads
    let other = cluster.replicas[(owner + 1) % 3].port;
    let mut other_replica = common::Raw::connect(other);
    assert_eq!(other_replica.cmd(&["READONLY"]), Reply::ok());
    assert_eq!(other_replica.cmd(&["GET", key]), moved(key, owner_port));
    assert_eq!(replica.cmd(&["READWRITE"]), Reply::ok());
    assert_eq!(replica.cmd(&["GET", key]), moved(key, owner_port));
    assert_eq!(replica.cmd(&["ASKING"]), Reply::ok());

    // CLUSTER NODES / SLOTS / SHARDS describe the same six nodes everywhere.
    let Reply::Bulk(nodes) = replica.cmd(&["CLUSTER", "NODES"]) else {
        panic!()
    };
    let nodes = String::from_utf8_lossy(&nodes).into_owned();
    assert_eq!(nodes.lines().count(), 6, "{nodes}");
    let my_id = cluster_node_id(&format!("shard-{owner}-1"));
    let mine = nodes
        .lines()
        .find(|line| line.starts_with(&my_id))
        .expect("own line");
    assert!(mine.contains("myself,slave"), "{mine}");
    assert!(mine.contains(&cluster_node_id(&format!("shard-{owner}-0"))));
    assert_eq!(
        replica.cmd(&["CLUSTER", "MYID"]),
        Reply::Bulk(my_id.clone().into_bytes())
    );
    let Reply::Array(slots) = replica.cmd(&["CLUSTER", "SLOTS"]) else {
        panic!()
    };
    assert_eq!(slots.len(), 3);
    let Reply::Array(first) = &slots[0] else {
        panic!()
    };
    assert_eq!(first[0], Reply::Int(0));
    assert_eq!(first[1], Reply::Int(5460));
    let Reply::Array(primary) = &first[2] else {
        panic!()
    };
    assert_eq!(primary[0], Reply::bulk("127.0.0.1"));
    assert_eq!(primary[1], Reply::Int(i64::from(cluster.primaries[0].port)));
    assert_eq!(primary[2], Reply::bulk(&cluster_node_id("shard-0-0")));
    assert_eq!(first.len(), 4, "primary and one replica");
    let Reply::Array(shards) = replica.cmd(&["CLUSTER", "SHARDS"]) else {
        panic!()
    };
    assert_eq!(shards.len(), 3);
    let Reply::Array(shard) = &shards[0] else {
        panic!()
    };
    assert_eq!(shard[0], Reply::bulk("slots"));
    assert_eq!(
        shard[1],
        Reply::Array(vec![Reply::Int(0), Reply::Int(5460)])
    );
    let Reply::Array(members) = &shard[3] else {
        panic!()
    };
    let Reply::Array(replica_fields) = &members[1] else {
        panic!()
    };
    let field = |name: &str| {
        replica_fields
            .chunks(2)
            .find(|pair| pair[0] == Reply::bulk(name))
            .map(|pair| pair[1].clone())
    };
    assert_eq!(field("role"), Some(Reply::bulk("replica")));
    assert_eq!(field("hostname"), Some(Reply::bulk("shard-0-1")));
    assert_eq!(field("health"), Some(Reply::bulk("online")));
}

#[test]
fn cluster_client_writes_and_reads_across_shards() {
    let cluster = Cluster::start(false);
    cluster.push(&cluster.map(1), &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = redis::cluster::ClusterClient::new(vec![cluster.primaries[0].url()])
            .expect("cluster client");
        let mut con = client.get_async_connection().await.expect("connect");
        for i in 0..1000 {
            let _: () = redis::cmd("SET")
                .arg(format!("key:{i}"))
                .arg(i)
                .query_async(&mut con)
                .await
                .expect("set");
        }
        for i in 0..1000 {
            let value: i64 = redis::cmd("GET")
                .arg(format!("key:{i}"))
                .query_async(&mut con)
                .await
                .expect("get");
            assert_eq!(value, i);
        }
    });
    // every shard got its share and nothing else
    let mut total = 0;
    for (index, node) in cluster.primaries.iter().enumerate() {
        let mut con = node.redis();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("key:*")
            .query(&mut con)
            .expect("keys");
        assert!(keys.len() > 250, "shard {index} has {} keys", keys.len());
        assert!(keys.iter().all(|key| cluster.owner_index(key) == index));
        total += keys.len();
    }
    assert_eq!(total, 1000);
}

fn cli(port: u16, args: &[&str]) -> std::process::Output {
    Command::new(redis_cli())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli")
}

#[test]
fn redis_cli_follows_redirects_and_checks_the_cluster() {
    let cluster = Cluster::start(true);
    cluster.push(&cluster.map(3), &[]);
    let entry = cluster.primaries[0].port;
    for key in ["foo", "bar", "baz", "user:1000"] {
        let set = cli(entry, &["-c", "SET", key, &format!("value-{key}")]);
        assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");
        let get = cli(entry, &["-c", "GET", key]);
        assert_eq!(
            String::from_utf8_lossy(&get.stdout).trim(),
            format!("value-{key}")
        );
    }
    let check = Command::new(redis_cli())
        .args(["--cluster", "check", &format!("127.0.0.1:{entry}")])
        .output()
        .expect("redis-cli --cluster check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("[OK] All 16384 slots covered"), "{report}");
    assert!(
        report.contains("[OK] All nodes agree about slots configuration"),
        "{report}"
    );
}

#[test]
fn higher_epochs_are_obeyed_and_dropped_nodes_are_fenced() {
    let cluster = Cluster::start(false);
    cluster.push(&cluster.map(5), &[]);
    let key = "foo";
    let owner = cluster.owner_index(key);
    let mut old_owner = cluster.primaries[owner].raw();
    assert_eq!(old_owner.cmd(&["SET", key, "1"]), Reply::ok());

    // Epoch 6 hands shard 2's slots to shard 0.
    let mut moved_map = cluster.map(6);
    let taken = std::mem::take(&mut moved_map.shards[2].slots);
    moved_map.shards[0].slots.extend(taken);
    cluster.push(&moved_map, &[]);
    let new_port = cluster.primaries[0].port;
    assert_eq!(old_owner.cmd(&["SET", key, "2"]), moved(key, new_port));
    assert_eq!(
        cluster.primaries[0].raw().cmd(&["SET", key, "3"]),
        Reply::ok()
    );

    // A stale map is refused and changes nothing.
    let stale = serde_json::to_string(&cluster.map(4)).expect("json");
    let Reply::Error(error) = old_owner.cmd(&["MERIDIAN.TOPOLOGY", "SET", &stale]) else {
        panic!()
    };
    assert!(error.starts_with("STALEEPOCH"), "{error}");
    assert_eq!(old_owner.cmd(&["SET", key, "2"]), moved(key, new_port));

    // Epoch 7 drops shard 1's primary altogether: it must refuse writes.
    let mut fenced = cluster.map(7);
    let deposed = cluster.owner_index("bar"); // slot 5061: shard 0
    let victim = 1;
    let replacement = free_port();
    fenced.shards[victim].primary = NodeAddr {
        id: "shard-1-new".into(),
        ip: "127.0.0.1".into(),
        port: replacement,
    };
    cluster.push(&fenced, &[]);
    let mut dropped = cluster.primaries[victim].raw();
    let victim_key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|name| cluster.owner_index(name) == victim)
        .expect("key of shard 1");
    assert_eq!(
        dropped.cmd(&["SET", &victim_key, "x"]),
        moved(&victim_key, replacement)
    );
    assert_eq!(deposed, 0);
    assert_eq!(
        dropped.cmd(&["GET", "bar"]),
        moved("bar", cluster.primaries[0].port)
    );
    let Reply::Bulk(nodes) = dropped.cmd(&["CLUSTER", "NODES"]) else {
        panic!()
    };
    let nodes = String::from_utf8_lossy(&nodes).into_owned();
    let myself: Vec<&str> = nodes
        .lines()
        .filter(|line| line.contains("myself"))
        .collect();
    assert_eq!(myself.len(), 1, "{nodes}");
    assert!(
        myself[0].starts_with(&cluster_node_id("shard-1-0")),
        "{nodes}"
    );
}

/// A cluster-mode replica applies what its primary sends as a MULTI/EXEC block (a
/// client's transaction, a script's effects): the replica does not own the slots, and
/// routing the block at EXEC refused it, so every transaction was missing on replicas.
#[test]
fn replicas_apply_their_primarys_transactions_and_scripts() {
    let cluster = Cluster::start(true);
    cluster.push(&cluster.map(1), &[]);
    let key = "{txn}:counter";
    let owner = cluster.owner_index(key);
    let primary = &cluster.primaries[owner];
    // the map makes the shard's second node its primary's replica
    let mut replica = cluster.replicas[owner].raw();
    let mut raw = primary.raw();
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    raw.cmd(&["SET", key, "1"]);
    raw.cmd(&["INCRBY", key, "41"]);
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::ok(), Reply::Int(42)])
    );
    assert_eq!(
        raw.cmd(&[
            "EVAL",
            "redis.call('SET', KEYS[1], 'from a script') return redis.call('INCR', KEYS[2])",
            "2",
            "{txn}:script",
            key
        ]),
        Reply::Int(43)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while raw.cmd(&["WAIT", "1", "1000"]) != Reply::Int(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never acked"
        );
    }
    assert_eq!(replica.cmd(&["READONLY"]), Reply::ok());
    assert_eq!(replica.cmd(&["GET", key]), Reply::bulk("43"));
    assert_eq!(
        replica.cmd(&["GET", "{txn}:script"]),
        Reply::bulk("from a script")
    );
}

/// Scripts in cluster mode: declared keys of different slots are CROSSSLOT, keys of
/// another node are MOVED before the script runs, and a key the script did not declare
/// that another node serves is refused inside it (never read or written here).
#[test]
fn scripts_touch_only_this_nodes_keys() {
    let cluster = Cluster::start(false);
    cluster.push(&cluster.map(1), &[]);
    let key = "{script}:a";
    let owner = cluster.owner_index(key);
    let mut raw = cluster.primaries[owner].raw();
    assert_eq!(
        raw.cmd(&["EVAL", "return 1", "2", "{script}:a", "{other}:b"]),
        Reply::err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    let elsewhere = (0..1000)
        .map(|index| format!("k{index}"))
        .find(|candidate| cluster.owner_index(candidate) != owner)
        .expect("a key of another shard");
    let elsewhere_owner = cluster.owner_index(&elsewhere);
    assert_eq!(
        raw.cmd(&["EVAL", "return 1", "1", &elsewhere]),
        moved(&elsewhere, cluster.primaries[elsewhere_owner].port)
    );
    let Reply::Error(refused) = raw.cmd(&[
        "EVAL",
        "return redis.call('SET', ARGV[1], 'x')",
        "1",
        key,
        &elsewhere,
    ]) else {
        panic!("an undeclared remote key was written")
    };
    assert!(
        refused.starts_with("ERR Script attempted to access a non local key in a cluster node"),
        "{refused}"
    );
    assert_eq!(raw.cmd(&["DBSIZE"]), Reply::Int(0));
    assert_eq!(
        raw.cmd(&["EVAL", "return redis.call('SET', KEYS[1], 'ok')", "1", key]),
        Reply::ok()
    );

    // Redis 7: a script that declared its flags (`#!lua`) keeps to one slot, unless it
    // allows cross-slot keys; one without a shebang may reach every key of this node
    let here = (0..1000)
        .map(|index| format!("k{index}"))
        .find(|candidate| cluster.owner_index(candidate) == owner)
        .expect("another key of this shard");
    let across = "redis.call('SET', KEYS[1], 'a') return redis.call('SET', ARGV[1], 'b')";
    let Reply::Error(refused) = raw.cmd(&["EVAL", &format!("#!lua\n{across}"), "1", key, &here])
    else {
        panic!("a script with a shebang wrote keys of two slots")
    };
    assert!(
        refused.starts_with(
            "ERR Script attempted to access keys that do not hash to the same slot script: "
        ),
        "{refused}"
    );
    assert_eq!(raw.cmd(&["GET", &here]), Reply::Nil);
    let no_keys_declared =
        "#!lua\nredis.call('SET', ARGV[1], 'a') return redis.call('GET', ARGV[2])";
    assert!(
        matches!(
            raw.cmd(&["EVAL", no_keys_declared, "0", key, &here]),
            Reply::Error(refused) if refused.contains("do not hash to the same slot")
        ),
        "the first key a script reaches sets its slot"
    );
    let allowed = format!("#!lua flags=allow-cross-slot-keys\n{across}");
    assert_eq!(raw.cmd(&["EVAL", &allowed, "1", key, &here]), Reply::ok());
    assert_eq!(raw.cmd(&["EVAL", across, "1", key, &here]), Reply::ok());
    assert_eq!(raw.cmd(&["GET", &here]), Reply::bulk("b"));
    assert_eq!(
        raw.cmd(&["EVAL", "#!lua flags=no-cluster\nreturn 1", "0"]),
        Reply::err("ERR Can not run script on cluster, 'no-cluster' flag is set.")
    );
}
