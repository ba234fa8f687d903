//! Live slot migration between two primaries with real processes: MIGRATING /
//! IMPORTING, ASK / TRYAGAIN / ASKING, MERIDIAN.MIGRATE SLOT under a
//! concurrent cluster-client writer, the epoch bump that settles ownership,
//! and DUMP / RESTORE.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Node, Reply, redis_cli};
use meridian_topology::{
    NodeAddr, ShardTopology, SlotRange, TopologyMap, cluster_node_id, key_slot,
};

const FIRST: u16 = 100;
const LAST: u16 = 199;
const ITEMS_PER_SLOT: usize = 29;
const TTL_MS: i64 = 600_000;

fn start_named(node_id: &str) -> Node {
    Node::start_named(node_id, 4, &[])
}

fn shard(index: u32, slots: Vec<SlotRange>, id: &str, node: &Node) -> ShardTopology {
    ShardTopology {
        index,
        slots,
        primary: NodeAddr {
            id: id.into(),
            ip: "127.0.0.1".into(),
            port: node.port,
        },
        replicas: Vec::new(),
    }
}

/// Epoch 1: `shard-0-0` on `a` owns slots 0-8191, `shard-1-0` on `b` the rest.
fn two_shards(a: &Node, b: &Node) -> TopologyMap {
    TopologyMap {
        epoch: 1,
        cluster: "demo".into(),
        region: "local".into(),
        shards: vec![
            shard(
                0,
                vec![SlotRange {
                    start: 0,
                    end: 8191,
                }],
                "shard-0-0",
                a,
            ),
            shard(
                1,
                vec![SlotRange {
                    start: 8192,
                    end: 16383,
                }],
                "shard-1-0",
                b,
            ),
        ],
    }
}

/// Marks `slot` IMPORTING on `b` (from shard-0-0) and MIGRATING on `a` (to shard-1-0).
fn open_slot(a: &mut common::Raw, b: &mut common::Raw, slot: u16) {
    let slot = slot.to_string();
    let (id_a, id_b) = (cluster_node_id("shard-0-0"), cluster_node_id("shard-1-0"));
    assert_eq!(
        b.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id_a]),
        Reply::ok()
    );
    assert_eq!(
        a.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id_b]),
        Reply::ok()
    );
}

fn push(nodes: &[&Node], map: &TopologyMap) {
    let json = serde_json::to_string(map).expect("json");
    for node in nodes {
        assert_eq!(
            node.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &json]),
            Reply::ok()
        );
    }
}

/// A hash tag per slot of the migrated range.
fn tags() -> HashMap<u16, String> {
    let mut tags = HashMap::new();
    let mut n = 0u64;
    while tags.len() < usize::from(LAST - FIRST + 1) {
        let tag = format!("t{n}");
        let slot = key_slot(tag.as_bytes());
        if (FIRST..=LAST).contains(&slot) {
            tags.entry(slot).or_insert(tag);
        }
        n += 1;
    }
    tags
}

fn item(tag: &str, index: usize) -> String {
    format!("{{{tag}}}:item:{index}")
}

fn int(reply: Reply) -> i64 {
    match reply {
        Reply::Int(value) => value,
        other => panic!("expected integer, got {other:?}"),
    }
}

fn error(reply: Reply) -> String {
    match reply {
        Reply::Error(text) => text,
        other => panic!("expected error, got {other:?}"),
    }
}

/// Loads 5000 keys into A's slots: per migrated slot a counter and 29 items
/// (every fifth with a TTL, every seventh a hash, every eleventh a list, every
/// thirteenth a set, every seventeenth a sorted set), 2000 keys elsewhere.
fn load(a: &Node, tags: &HashMap<u16, String>) {
    let mut con = a.redis();
    let mut pipe = redis::pipe();
    for tag in tags.values() {
        pipe.cmd("SET")
            .arg(format!("{{{tag}}}:ctr"))
            .arg(0)
            .ignore();
        for index in 0..ITEMS_PER_SLOT {
            let key = item(tag, index);
            if index % 7 == 0 {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("field")
                    .arg(&key)
                    .arg("n")
                    .arg(index)
                    .ignore();
            } else if index % 11 == 0 {
                pipe.cmd("RPUSH")
                    .arg(&key)
                    .arg(&key)
                    .arg("")
                    .arg("tail")
                    .ignore();
            } else if index % 13 == 0 {
                pipe.cmd("SADD").arg(&key).arg(&key).arg("member").ignore();
            } else if index % 17 == 0 {
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg(2.5)
                    .arg(&key)
                    .arg("-inf")
                    .arg("low")
                    .ignore();
            } else {
                pipe.cmd("SET").arg(&key).arg(&key).ignore();
            }
            if index % 5 == 0 {
                pipe.cmd("PEXPIRE").arg(&key).arg(TTL_MS).ignore();
            }
        }
    }
    let mut outside = 0;
    let mut n = 0;
    while outside < 2000 {
        let key = format!("other:{n}");
        n += 1;
        let slot = key_slot(key.as_bytes());
        if slot < 8192 && !(FIRST..=LAST).contains(&slot) {
            pipe.cmd("SET").arg(&key).arg(n).ignore();
            outside += 1;
        }
    }
    let () = pipe.query(&mut con).expect("load");
    assert_eq!(int(a.raw().cmd(&["DBSIZE"])), 5000);
}

#[derive(Default)]
struct Acked {
    counters: HashMap<String, i64>,
    written: HashMap<u16, usize>,
}

/// Increments every counter and creates new keys through the cluster client
/// (which follows ASK and MOVED) until told to stop.
fn writer(url: String, tags: Vec<String>, stop: Arc<AtomicBool>) -> Acked {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client = redis::cluster::ClusterClient::builder(vec![url])
            .retries(20)
            .build()
            .expect("cluster client");
        let mut con = client.get_async_connection().await.expect("connect");
        let mut acked = Acked::default();
        let incr_script = redis::Script::new("return redis.call('INCR', KEYS[1])");
        let mut round = 0usize;
        while !stop.load(Ordering::Relaxed) || round < 2 {
            for tag in &tags {
                let counter = format!("{{{tag}}}:ctr");
                // every other increment is a script (EVALSHA, then EVAL where the
                // destination has not cached it): redirected like a command
                let _: i64 = if round.is_multiple_of(2) {
                    redis::cmd("INCR")
                        .arg(&counter)
                        .query_async(&mut con)
                        .await
                        .expect("incr")
                } else {
                    incr_script
                        .key(&counter)
                        .invoke_async(&mut con)
                        .await
                        .expect("scripted incr")
                };
                *acked.counters.entry(counter).or_default() += 1;
                let key = format!("{{{tag}}}:w:{round}");
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(round)
                    .query_async(&mut con)
                    .await
                    .expect("set");
                *acked.written.entry(key_slot(key.as_bytes())).or_default() += 1;
            }
            round += 1;
        }
        acked
    })
}

#[test]
fn slots_migrate_live_without_losing_entries() {
    let a = start_named("shard-0-0");
    let b = start_named("shard-1-0");
    let id_b = cluster_node_id("shard-1-0");
    let epoch1 = two_shards(&a, &b);
    push(&[&a, &b], &epoch1);
    let tags = tags();
    load(&a, &tags);

    let (mut raw_a, mut raw_b) = (a.raw(), b.raw());
    // the destination must know the source; the source must own the slot
    assert!(
        error(raw_a.cmd(&["CLUSTER", "SETSLOT", "9000", "MIGRATING", &id_b]))
            .contains("not the owner")
    );
    assert!(
        error(raw_b.cmd(&["CLUSTER", "SETSLOT", "100", "IMPORTING", &"0".repeat(40)]))
            .contains("know about node")
    );
    for slot in FIRST..=LAST {
        open_slot(&mut raw_a, &mut raw_b, slot);
    }
    let nodes = match raw_a.cmd(&["CLUSTER", "NODES"]) {
        Reply::Verbatim(text) => text,
        Reply::Bulk(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        other => panic!("{other:?}"),
    };
    assert!(nodes.contains(&format!("[{FIRST}->-{id_b}]")), "{nodes}");

    // raw ASK / TRYAGAIN / ASKING cases on the first slot
    let tag = &tags[&FIRST];
    let (moved_key, kept_key) = (item(tag, 1), item(tag, 2));
    let port_b = b.port.to_string();
    assert_eq!(
        raw_a.cmd(&[
            "MIGRATE",
            "127.0.0.1",
            &port_b,
            "",
            "0",
            "5000",
            "KEYS",
            &moved_key
        ]),
        Reply::ok()
    );
    assert_eq!(
        raw_a.cmd(&["MIGRATE", "127.0.0.1", &port_b, &moved_key, "0", "5000"]),
        Reply::Simple("NOKEY".into())
    );
    assert_eq!(
        raw_a.cmd(&["GET", &moved_key]),
        Reply::err(&format!("ASK {FIRST} 127.0.0.1:{}", b.port))
    );
    assert_eq!(
        raw_a.cmd(&["SET", &moved_key, "x"]),
        Reply::err(&format!("ASK {FIRST} 127.0.0.1:{}", b.port))
    );
    assert_eq!(raw_a.cmd(&["GET", &kept_key]), Reply::bulk(&kept_key));
    assert!(error(raw_a.cmd(&["MGET", &kept_key, &moved_key])).starts_with("TRYAGAIN"));
    assert_eq!(
        raw_b.cmd(&["GET", &moved_key]),
        Reply::err(&format!("MOVED {FIRST} 127.0.0.1:{}", a.port))
    );
    assert_eq!(raw_b.cmd(&["ASKING"]), Reply::ok());
    assert_eq!(raw_b.cmd(&["GET", &moved_key]), Reply::bulk(&moved_key));
    // one command only
    assert_eq!(
        raw_b.cmd(&["GET", &moved_key]),
        Reply::err(&format!("MOVED {FIRST} 127.0.0.1:{}", a.port))
    );
    assert_eq!(raw_b.cmd(&["ASKING"]), Reply::ok());
    assert!(error(raw_b.cmd(&["MGET", &moved_key, &kept_key])).starts_with("TRYAGAIN"));
    assert!(error(raw_a.cmd(&["EXISTS", &moved_key])).starts_with("ASK "));
    // a script's declared keys are routed like a command's: it runs where its
    // keys are, and never sees a slot half moved
    let get_all = "local out = {} for i, key in ipairs(KEYS) do \
        out[i] = redis.call('GET', key) or 'nil' end return out";
    assert_eq!(
        raw_a.cmd(&["EVAL", get_all, "1", &kept_key]),
        Reply::Array(vec![Reply::bulk(&kept_key)])
    );
    assert_eq!(
        raw_a.cmd(&["EVAL", get_all, "1", &moved_key]),
        Reply::err(&format!("ASK {FIRST} 127.0.0.1:{}", b.port))
    );
    assert!(
        error(raw_a.cmd(&["EVAL", get_all, "2", &kept_key, &moved_key])).starts_with("TRYAGAIN")
    );
    assert_eq!(raw_b.cmd(&["ASKING"]), Reply::ok());
    assert_eq!(
        raw_b.cmd(&["EVAL", get_all, "1", &moved_key]),
        Reply::Array(vec![Reply::bulk(&moved_key)])
    );
    // for that one script only
    assert_eq!(
        raw_b.cmd(&["EVAL", get_all, "1", &moved_key]),
        Reply::err(&format!("MOVED {FIRST} 127.0.0.1:{}", a.port))
    );

    // migrate every slot while a cluster client keeps writing
    let stop = Arc::new(AtomicBool::new(false));
    let tag_list: Vec<String> = tags.values().cloned().collect();
    let writer_thread = {
        let (url, stop) = (a.url(), stop.clone());
        std::thread::spawn(move || writer(url, tag_list, stop))
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut moved = 0;
    for slot in FIRST..=LAST {
        moved += int(raw_a.cmd(&[
            "MERIDIAN.MIGRATE",
            "SLOT",
            &slot.to_string(),
            "127.0.0.1",
            &port_b,
            "BATCH",
            "7",
        ]));
        assert_eq!(
            int(raw_a.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])),
            0
        );
    }
    assert!(moved >= 100 * ITEMS_PER_SLOT as i64, "moved {moved}");
    let epoch2 = TopologyMap {
        epoch: 2,
        shards: vec![
            shard(
                0,
                vec![
                    SlotRange {
                        start: 0,
                        end: FIRST - 1,
                    },
                    SlotRange {
                        start: LAST + 1,
                        end: 8191,
                    },
                ],
                "shard-0-0",
                &a,
            ),
            shard(
                1,
                vec![
                    SlotRange {
                        start: FIRST,
                        end: LAST,
                    },
                    SlotRange {
                        start: 8192,
                        end: 16383,
                    },
                ],
                "shard-1-0",
                &b,
            ),
        ],
        ..epoch1
    };
    push(&[&a, &b], &epoch2);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let acked = writer_thread.join().expect("writer");

    // nothing lost: per-slot counts, counters, TTLs, hashes
    for (slot, tag) in &tags {
        let expected = 1 + ITEMS_PER_SLOT + acked.written.get(slot).copied().unwrap_or(0);
        let slot = slot.to_string();
        assert_eq!(int(raw_a.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot])), 0);
        assert_eq!(
            int(raw_b.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot])),
            expected as i64,
            "slot {slot}"
        );
        let counter = format!("{{{tag}}}:ctr");
        let value = match raw_b.cmd(&["GET", &counter]) {
            Reply::Bulk(bytes) => String::from_utf8_lossy(&bytes)
                .parse::<i64>()
                .expect("number"),
            other => panic!("{counter}: {other:?}"),
        };
        assert_eq!(value, acked.counters[&counter], "{counter}");
        for index in 0..ITEMS_PER_SLOT {
            let key = item(tag, index);
            let ttl = int(raw_b.cmd(&["PTTL", &key]));
            if index % 5 == 0 {
                assert!(ttl > TTL_MS - 120_000 && ttl <= TTL_MS, "{key}: ttl {ttl}");
            } else {
                assert_eq!(ttl, -1, "{key}");
            }
            if index % 7 == 0 {
                assert_eq!(
                    raw_b.cmd(&["HGET", &key, "field"]),
                    Reply::bulk(&key),
                    "{key}"
                );
            } else if index % 11 == 0 {
                assert_eq!(
                    raw_b.cmd(&["LRANGE", &key, "0", "-1"]),
                    Reply::Array(vec![
                        Reply::bulk(&key),
                        Reply::bulk(""),
                        Reply::bulk("tail")
                    ]),
                    "{key}"
                );
            } else if index % 13 == 0 {
                assert_eq!(
                    raw_b.cmd(&["SMISMEMBER", &key, &key, "member", "other"]),
                    Reply::Array(vec![Reply::Int(1), Reply::Int(1), Reply::Int(0)]),
                    "{key}"
                );
            } else if index % 17 == 0 {
                assert_eq!(
                    raw_b.cmd(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
                    Reply::Array(vec![
                        Reply::bulk("low"),
                        Reply::bulk("-inf"),
                        Reply::bulk(&key),
                        Reply::bulk("2.5"),
                    ]),
                    "{key}"
                );
            }
        }
    }
    assert_eq!(
        int(raw_a.cmd(&["DBSIZE"])) + int(raw_b.cmd(&["DBSIZE"])),
        5000 + acked.written.values().sum::<usize>() as i64
    );
    // the epoch settled ownership: no open slots, A redirects for good
    for raw in [&mut raw_a, &mut raw_b] {
        let nodes = format!("{:?}", raw.cmd(&["CLUSTER", "NODES"]));
        assert!(!nodes.contains("->-") && !nodes.contains("-<-"), "{nodes}");
    }
    assert_eq!(
        raw_a.cmd(&["GET", &kept_key]),
        Reply::err(&format!("MOVED {FIRST} 127.0.0.1:{}", b.port))
    );
    let check = Command::new(redis_cli())
        .args(["--cluster", "check", &format!("127.0.0.1:{}", a.port)])
        .output()
        .expect("redis-cli --cluster check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("[OK] All 16384 slots covered"), "{report}");
}

#[test]
fn dump_restore_round_trips_and_refuses_corruption() {
    let node = start_named("dump-node");
    let mut con = node.redis();
    let () = redis::cmd("HSET")
        .arg("h")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut con)
        .expect("hset");
    let () = redis::cmd("SET")
        .arg("s")
        .arg("value")
        .arg("PX")
        .arg(60_000)
        .query(&mut con)
        .expect("set");
    let hash: Vec<u8> = redis::cmd("DUMP").arg("h").query(&mut con).expect("dump");
    let string: Vec<u8> = redis::cmd("DUMP").arg("s").query(&mut con).expect("dump");
    let () = redis::cmd("RESTORE")
        .arg("h2")
        .arg(0)
        .arg(&hash)
        .query(&mut con)
        .expect("restore");
    let () = redis::cmd("RESTORE")
        .arg("s2")
        .arg(30_000)
        .arg(&string)
        .query(&mut con)
        .expect("restore");
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("h2")
        .query(&mut con)
        .expect("hgetall");
    assert_eq!(
        fields,
        HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
    );
    let value: String = redis::cmd("GET").arg("s2").query(&mut con).expect("get");
    assert_eq!(value, "value");
    let ttl: i64 = redis::cmd("PTTL").arg("s2").query(&mut con).expect("pttl");
    assert!(ttl > 25_000 && ttl <= 30_000, "ttl {ttl}");
    let none: Option<Vec<u8>> = redis::cmd("DUMP")
        .arg("missing")
        .query(&mut con)
        .expect("dump");
    assert_eq!(none, None);

    let mut raw = node.raw();
    let busy = error(raw_restore(&mut raw, "h2", "0", &hash, &[]));
    assert!(busy.starts_with("BUSYKEY"), "{busy}");
    assert_eq!(
        raw_restore(&mut raw, "h2", "0", &string, &["REPLACE"]),
        Reply::ok()
    );
    assert_eq!(raw.cmd(&["TYPE", "h2"]), Reply::Simple("string".into()));
    let at = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 50_000)
        .to_string();
    assert_eq!(
        raw_restore(&mut raw, "abs", &at, &string, &["ABSTTL"]),
        Reply::ok()
    );
    let ttl = int(raw.cmd(&["PTTL", "abs"]));
    assert!(ttl > 45_000 && ttl <= 50_000, "ttl {ttl}");
    let mut corrupted = hash.clone();
    corrupted[3] ^= 1;
    let refused = error(raw_restore(&mut raw, "bad", "0", &corrupted, &[]));
    assert_eq!(refused, "ERR DUMP payload version or checksum are wrong");
    let refused = error(raw_restore(
        &mut raw,
        "bad",
        "0",
        &hash[..hash.len() - 2],
        &[],
    ));
    assert_eq!(refused, "ERR DUMP payload version or checksum are wrong");
    assert_eq!(int(raw.cmd(&["EXISTS", "bad"])), 0);
    assert!(error(raw.cmd(&["RESTORE", "bad", "-1", "x"])).contains("Invalid TTL"));
}

fn raw_restore(
    raw: &mut common::Raw,
    key: &str,
    ttl: &str,
    payload: &[u8],
    options: &[&str],
) -> Reply {
    let mut args: Vec<&[u8]> = vec![b"RESTORE", key.as_bytes(), ttl.as_bytes(), payload];
    args.extend(options.iter().map(|option| option.as_bytes()));
    raw.send(&common::encode(&args));
    raw.read()
}

fn signal(node: &Node, which: &str) {
    let status = Command::new("kill")
        .args([which, &node.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which}");
}

/// MERIDIAN.MIGRATE SLOT (the operator's resharding) deletes a batch from the source
/// only once the destination's replicas have it: a destination that fails over right
/// after a batch must not take keys with it. A frozen replica makes the batch fail with
/// the keys still served by the source; once it runs again, the slot moves and the
/// replica already holds every key when the command returns.
#[test]
fn a_resharding_batch_leaves_the_source_only_once_the_destination_replicas_have_it() {
    let a = start_named("shard-0-0");
    let b = start_named("shard-1-0");
    let replica = start_named("shard-1-1");
    let mut map = two_shards(&a, &b);
    map.shards[1].replicas.push(NodeAddr {
        id: "shard-1-1".into(),
        ip: "127.0.0.1".into(),
        port: replica.port,
    });
    push(&[&a, &b, &replica], &map);
    let (mut raw_a, mut raw_b) = (a.raw(), b.raw());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while int(raw_b.cmd(&["WAIT", "1", "100"])) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never attached"
        );
    }

    let tag = &tags()[&FIRST];
    let keys: Vec<String> = (0..50).map(|index| item(tag, index)).collect();
    for key in &keys {
        assert_eq!(raw_a.cmd(&["SET", key, "v"]), Reply::ok());
    }
    open_slot(&mut raw_a, &mut raw_b, FIRST);
    let slot = FIRST.to_string();
    let port_b = b.port.to_string();
    let migrate = [
        "MERIDIAN.MIGRATE",
        "SLOT",
        &slot,
        "127.0.0.1",
        &port_b,
        "TIMEOUT",
        "300",
    ];

    signal(&replica, "-STOP");
    let refused = raw_a.cmd(&migrate);
    signal(&replica, "-CONT");
    refused_for_want_of_replicas(&refused, &mut raw_a, &keys);

    // generous this time: the woken replica may be slow on a loaded machine
    let mut patient = migrate;
    patient[6] = "5000";
    assert_eq!(int(raw_a.cmd(&patient)), keys.len() as i64);
    // Counted on the replica right away, without waiting: the command returned only
    // after the replica had the keys. (It would answer MOVED for the keys themselves:
    // only the epoch bump hands it the slot.)
    assert_eq!(
        int(replica.raw().cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot])),
        keys.len() as i64,
        "keys acknowledged by the migration but not on the destination's replica"
    );
    assert_eq!(int(raw_a.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot])), 0);
}

/// A new shard's replica may not have attached yet when the first batch goes: the
/// batch waits for the replicas the map names, not only the ones connected, so the
/// keys never rest on the destination alone (a failover of it would lose them).
#[test]
fn a_resharding_batch_waits_for_a_destination_replica_the_map_names_before_it_attaches() {
    let a = start_named("shard-0-0");
    let b = start_named("shard-1-0");
    let mut map = two_shards(&a, &b);
    // Named by the map, not running: it never attaches.
    map.shards[1].replicas.push(NodeAddr {
        id: "shard-1-1".into(),
        ip: "127.0.0.1".into(),
        port: common::free_port(),
    });
    push(&[&a, &b], &map);
    let (mut raw_a, mut raw_b) = (a.raw(), b.raw());
    let tag = &tags()[&FIRST];
    let keys: Vec<String> = (0..20).map(|index| item(tag, index)).collect();
    for key in &keys {
        assert_eq!(raw_a.cmd(&["SET", key, "v"]), Reply::ok());
    }
    open_slot(&mut raw_a, &mut raw_b, FIRST);
    let (slot, port_b) = (FIRST.to_string(), b.port.to_string());
    let refused = raw_a.cmd(&[
        "MERIDIAN.MIGRATE",
        "SLOT",
        &slot,
        "127.0.0.1",
        &port_b,
        "TIMEOUT",
        "300",
    ]);
    refused_for_want_of_replicas(&refused, &mut raw_a, &keys);
}

/// The batch was refused because no replica of the destination acknowledged it, and
/// every key is still on the source (`raw_a`).
fn refused_for_want_of_replicas(refused: &Reply, raw_a: &mut common::Raw, keys: &[String]) {
    assert!(
        error(refused.clone()).contains("to 0 of its 1 replicas"),
        "{refused:?}"
    );
    for key in keys {
        assert_eq!(
            raw_a.cmd(&["GET", key]),
            Reply::Bulk(b"v".to_vec()),
            "{key} left the source although no replica of the destination has it"
        );
    }
}

fn count_in_slot(node: &Node, slot: u16) -> i64 {
    int(node
        .raw()
        .cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]))
}

fn orphans_deleted(node: &Node) -> i64 {
    common::info_field(node, "stats", "orphan_keys_deleted")
        .parse()
        .expect("INFO stats orphan_keys_deleted")
}

/// Shard 0 (`a` and its replica) and shard 1 (`b`), the map of both pushed to all three.
fn two_shards_first_with_a_replica() -> (Node, Node, Node, TopologyMap) {
    let a = start_named("shard-0-0");
    let replica = start_named("shard-0-1");
    let b = start_named("shard-1-0");
    let mut epoch1 = two_shards(&a, &b);
    epoch1.shards[0]
        .replicas
        .push(replica_of("shard-0-1", &replica));
    push(&[&a, &replica, &b], &epoch1);
    (a, replica, b, epoch1)
}

fn replica_of(id: &str, node: &Node) -> NodeAddr {
    NodeAddr {
        id: id.into(),
        ip: "127.0.0.1".into(),
        port: node.port,
    }
}

/// Waits until `primary` has `replicas` replicas acknowledging everything written so far.
fn wait_for_replicas(primary: &Node, replicas: i64) {
    let mut raw = primary.raw();
    common::node_process::wait_until("the replicas to catch up", Duration::from_secs(10), || {
        int(raw.cmd(&["WAIT", &replicas.to_string(), "100"])) >= replicas
    });
}

/// `ranges` moved from one shard to the other in a copy of `map` at `epoch`.
fn with_slots(map: &TopologyMap, epoch: u64, slots: [Vec<SlotRange>; 2]) -> TopologyMap {
    let mut next = map.clone();
    next.epoch = epoch;
    for (shard, slots) in next.shards.iter_mut().zip(slots) {
        shard.slots = slots;
    }
    next
}

fn range(start: u16, end: u16) -> SlotRange {
    SlotRange { start, end }
}

/// A tag hashing to a slot of shard 1 (8192-16383 in [`two_shards`]).
fn tag_in_second_shard() -> (u16, String) {
    (0u64..)
        .map(|n| format!("y{n}"))
        .map(|tag| (key_slot(tag.as_bytes()), tag))
        .find(|(slot, _)| *slot >= 9000)
        .expect("a tag")
}

fn set_keys(node: &Node, tag: &str, count: usize) {
    let mut pipe = redis::pipe();
    for index in 0..count {
        let command = pipe.cmd("SET").arg(item(tag, index)).arg("v");
        if index % 3 == 0 {
            command.arg("PX").arg(600_000);
        }
        command.ignore();
    }
    let () = pipe.query(&mut node.redis()).expect("SET");
}

/// Orphan keys: a map that hands a slot of the primary's shard to another shard
/// without the keys having left (their deletes were lost) makes the primary delete
/// them, through its replication stream so its replica drops them too. Keys of slots
/// the shard still owns stay; INFO counts what was deleted.
#[test]
fn a_primary_deletes_keys_left_in_slots_its_shard_lost_and_its_replica_follows() {
    let (a, replica, b, epoch1) = two_shards_first_with_a_replica();
    let tags = tags();
    // the same store shard (4 of them): the cleanup must pick the lost slot's keys out;
    // more keys than one batch deletes
    let (lost, kept) = (FIRST, FIRST + 4);
    set_keys(&a, &tags[&lost], 700);
    set_keys(&a, &tags[&kept], 30);
    wait_for_replicas(&a, 1);
    assert_eq!(count_in_slot(&replica, lost), 700);
    assert_eq!(orphans_deleted(&a), 0);

    // the slot goes to shard 1 without MERIDIAN.MIGRATE (as if its deletes were lost)
    let epoch2 = with_slots(
        &epoch1,
        2,
        [
            vec![range(0, lost - 1), range(lost + 1, 8191)],
            vec![range(lost, lost), range(8192, 16383)],
        ],
    );
    push(&[&b, &a, &replica], &epoch2);
    common::node_process::wait_until(
        "the primary to delete the orphan keys",
        Duration::from_secs(5),
        || count_in_slot(&a, lost) == 0,
    );
    common::node_process::wait_until(
        "the replica to drop them too",
        Duration::from_secs(5),
        || count_in_slot(&replica, lost) == 0,
    );
    assert_eq!(orphans_deleted(&a), 700);
    // the replica followed its primary's DELs; it deletes nothing on its own
    assert_eq!(orphans_deleted(&replica), 0);
    for node in [&a, &replica] {
        assert_eq!(count_in_slot(node, kept), 30);
        assert_eq!(int(node.raw().cmd(&["DBSIZE"])), 30);
    }
    assert_eq!(
        a.raw().cmd(&["GET", &item(&tags[&kept], 1)]),
        Reply::bulk("v")
    );
    // an unchanged map deletes nothing more
    push(&[&a], &epoch2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(orphans_deleted(&a), 700);
    assert_eq!(count_in_slot(&a, kept), 30);
}

/// The failover_resharding case: the source primary dies after its batch left it but
/// before the deletes reached its replica, which accepts the map moving the slot while
/// still a replica, then is promoted. As primary it deletes the keys it kept.
#[test]
fn a_promoted_replica_deletes_the_keys_its_dead_primary_had_moved_away() {
    let (mut a, replica, b, epoch1) = two_shards_first_with_a_replica();
    let tags = tags();
    let (lost, kept) = (FIRST, FIRST + 1);
    set_keys(&a, &tags[&lost], 40);
    set_keys(&a, &tags[&kept], 25);
    wait_for_replicas(&a, 1);

    let _ = a.child.kill();
    let _ = a.child.wait();
    let epoch2 = with_slots(
        &epoch1,
        2,
        [
            vec![range(0, lost - 1), range(lost + 1, 8191)],
            vec![range(lost, lost), range(8192, 16383)],
        ],
    );
    push(&[&b, &replica], &epoch2);
    // still a replica: it keeps them (its primary's stream decides)
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count_in_slot(&replica, lost), 40);

    let mut epoch3 = epoch2.clone();
    epoch3.epoch = 3;
    epoch3.shards[0].primary = replica_of("shard-0-1", &replica);
    epoch3.shards[0].replicas.clear();
    push(&[&b, &replica], &epoch3);
    common::node_process::wait_until(
        "the promoted replica to delete the orphan keys",
        Duration::from_secs(5),
        || count_in_slot(&replica, lost) == 0,
    );
    assert_eq!(orphans_deleted(&replica), 40);
    assert_eq!(count_in_slot(&replica, kept), 25);
    assert_eq!(int(replica.raw().cmd(&["DBSIZE"])), 25);
}

/// Keys in transit are not orphans. While shard 1 loses a slot (whose keys it deletes),
/// the slot shard 0 is MIGRATING to it keeps its keys on both sides, the IMPORTING
/// destination keeps the keys it received, and so does its replica when it is promoted
/// before a map hands it the slot: those keys left the source already, the resumed
/// migration completes the slot on it.
#[test]
fn keys_in_transit_survive_maps_that_do_not_give_their_slot_to_the_node() {
    let a = start_named("shard-0-0");
    let mut b = start_named("shard-1-0");
    let replica = start_named("shard-1-1");
    let mut epoch1 = two_shards(&a, &b);
    epoch1.shards[1]
        .replicas
        .push(replica_of("shard-1-1", &replica));
    push(&[&a, &b, &replica], &epoch1);
    let moving = FIRST;
    let tag = &tags()[&moving];
    set_keys(&a, tag, 40);
    let (lost, lost_tag) = tag_in_second_shard();
    set_keys(&b, &lost_tag, 20);

    let (mut raw_a, mut raw_b) = (a.raw(), b.raw());
    open_slot(&mut raw_a, &mut raw_b, moving);
    let port_b = b.port.to_string();
    let sent: Vec<String> = (0..10).map(|index| item(tag, index)).collect();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port_b, "", "0", "5000", "KEYS"];
    migrate.extend(sent.iter().map(String::as_str));
    assert_eq!(raw_a.cmd(&migrate), Reply::ok());
    wait_for_replicas(&b, 1);
    assert_eq!(count_in_slot(&replica, moving), 10);

    // shard 1 hands `lost` to shard 0 (its keys are dropped); `moving` stays in transit
    let epoch2 = with_slots(
        &epoch1,
        2,
        [
            vec![range(0, 8191), range(lost, lost)],
            vec![range(8192, lost - 1), range(lost + 1, 16383)],
        ],
    );
    push(&[&a, &b, &replica], &epoch2);
    common::node_process::wait_until(
        "shard 1 to delete the keys of the slot it lost",
        Duration::from_secs(5),
        || count_in_slot(&b, lost) == 0 && count_in_slot(&replica, lost) == 0,
    );
    assert_eq!(orphans_deleted(&b), 20);
    assert_eq!(count_in_slot(&a, moving), 30, "MIGRATING keys kept");
    assert_eq!(count_in_slot(&b, moving), 10, "IMPORTING keys kept");
    assert_eq!(count_in_slot(&replica, moving), 10);
    assert_eq!(orphans_deleted(&a), 0);

    // the destination dies mid-slot; its replica is promoted, the slot still shard 0's
    let _ = b.child.kill();
    let _ = b.child.wait();
    let mut epoch3 = epoch2.clone();
    epoch3.epoch = 3;
    epoch3.shards[1].primary = replica_of("shard-1-1", &replica);
    epoch3.shards[1].replicas.clear();
    push(&[&a, &replica], &epoch3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count_in_slot(&replica, moving),
        10,
        "the promoted destination replica dropped keys that left the source"
    );
    assert_eq!(orphans_deleted(&replica), 0);

    // the resumed migration completes the slot on the new destination
    let mut raw_replica = replica.raw();
    let slot = moving.to_string();
    let (id_a, id_replica) = (cluster_node_id("shard-0-0"), cluster_node_id("shard-1-1"));
    assert_eq!(
        raw_replica.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id_a]),
        Reply::ok()
    );
    assert_eq!(
        raw_a.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id_replica]),
        Reply::ok()
    );
    let port_replica = replica.port.to_string();
    assert_eq!(
        int(raw_a.cmd(&[
            "MERIDIAN.MIGRATE",
            "SLOT",
            &slot,
            "127.0.0.1",
            &port_replica
        ])),
        30
    );
    let epoch4 = with_slots(
        &epoch3,
        4,
        [
            vec![
                range(0, moving - 1),
                range(moving + 1, 8191),
                range(lost, lost),
            ],
            vec![
                range(moving, moving),
                range(8192, lost - 1),
                range(lost + 1, 16383),
            ],
        ],
    );
    push(&[&replica, &a], &epoch4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count_in_slot(&replica, moving), 40);
    assert_eq!(count_in_slot(&a, moving), 0);
    assert_eq!(orphans_deleted(&a), 0);
}

/// A `LINK.EVENT` frame as a peer region sends it: the key `key` changed there at
/// hybrid time `hlc` (`value`: the new value in replicate mode, else an invalidation).
fn link_event(key: &str, hlc: u64, value: Option<&str>) -> Vec<u8> {
    let hlc = hlc.to_string();
    let mut args: Vec<&[u8]> = vec![
        b"LINK.EVENT",
        if value.is_some() { b"set" } else { b"key" },
        key.as_bytes(),
        hlc.as_bytes(),
        b"7",
        b"region-b",
        b"0",
    ];
    if let Some(value) = value {
        args.extend_from_slice(&[value.as_bytes(), b"0"]);
    }
    common::encode(&args)
}

fn region_link(port: u16) -> common::Raw {
    let mut raw = common::Raw::connect(port);
    assert_eq!(
        raw.cmd(&["LINK.HELLO", "meridian", "region-b", ""]),
        Reply::ok()
    );
    raw
}

fn hlc_now() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    ms << 16
}

/// A peer region's invalidation of a key whose slot is migrating must reach the copy
/// wherever it is. The source no longer holds a key that already moved (and may not
/// touch one whose batch is in flight), so it must not acknowledge the event as
/// applied: it answers TRYAGAIN, the peer offers the event again, and once the map
/// moved the slot the source answers MOVED and the destination applies it. Before, the
/// source answered +OK and the destination kept the stale copy.
#[test]
fn a_region_event_for_a_migrating_slot_is_retried_until_the_key_owner_applies_it() {
    let (link_a, link_b) = (common::free_port(), common::free_port());
    let a = Node::start_named("shard-0-0", 4, &["--region-port", &link_a.to_string()]);
    let b = Node::start_named("shard-1-0", 4, &["--region-port", &link_b.to_string()]);
    let map = two_shards(&a, &b);
    push(&[&a, &b], &map);
    let tags = tags();
    let (slot, tag) = (FIRST, &tags[&FIRST]);
    let (moved_key, kept_key) = (item(tag, 1), item(tag, 2));
    let (mut raw_a, mut raw_b) = (a.raw(), b.raw());
    for key in [&moved_key, &kept_key] {
        assert_eq!(raw_a.cmd(&["SET", key, "old"]), Reply::ok());
    }
    open_slot(&mut raw_a, &mut raw_b, slot);
    let port_b = b.port.to_string();
    assert_eq!(
        raw_a.cmd(&["MIGRATE", "127.0.0.1", &port_b, &moved_key, "0", "5000"]),
        Reply::ok()
    );

    let mut link = region_link(link_a);
    for value in [None, Some("new")] {
        link.send(&link_event(&moved_key, hlc_now(), value));
        let reply = error(link.read());
        assert!(
            reply.starts_with("TRYAGAIN"),
            "an event for a key that left for the destination is not acknowledged: {reply}"
        );
    }
    // a key still here is applied here, as before
    link.send(&link_event(&kept_key, hlc_now(), None));
    assert_eq!(link.read(), Reply::ok());
    let slot_text = slot.to_string();
    assert_eq!(
        raw_a.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot_text]),
        Reply::Int(0),
        "the event deleted the key still on the source"
    );

    // the map moves the slot: the source sends the event on, the destination applies it
    let mut moved_map = map.clone();
    moved_map.epoch = 2;
    moved_map.shards[0].slots = vec![
        SlotRange {
            start: 0,
            end: FIRST - 1,
        },
        SlotRange {
            start: FIRST + 1,
            end: 8191,
        },
    ];
    moved_map.shards[1].slots.insert(
        0,
        SlotRange {
            start: FIRST,
            end: FIRST,
        },
    );
    push(&[&a, &b], &moved_map);
    link.send(&link_event(&moved_key, hlc_now(), None));
    assert_eq!(link.read(), Reply::err(&format!("MOVED {slot}")));
    let mut link = region_link(link_b);
    link.send(&link_event(&moved_key, hlc_now(), None));
    assert_eq!(link.read(), Reply::ok());
    assert_eq!(raw_b.cmd(&["EXISTS", &moved_key]), Reply::Int(0));
}
