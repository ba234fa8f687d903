//! MULTI / EXEC on a slot in transit, with real processes: the source answers
//! EXEC with -ASK when the transaction's keys moved (-TRYAGAIN when only some
//! did), the target runs ASKING + MULTI ... EXEC, and the redis crate's
//! cluster client completes atomic pipelines by following those replies.

mod common;

use std::time::Duration;

use common::{Node, Raw, Reply};
use meridian_topology::{
    NodeAddr, ShardTopology, SlotRange, TopologyMap, cluster_node_id, key_slot,
};

fn start_named(node_id: &str) -> Node {
    Node::start_named(node_id, 4, &[])
}

fn shard(index: u32, start: u16, end: u16, id: &str, node: &Node) -> ShardTopology {
    ShardTopology {
        index,
        slots: vec![SlotRange { start, end }],
        primary: NodeAddr {
            id: id.into(),
            ip: "127.0.0.1".into(),
            port: node.port,
        },
        replicas: Vec::new(),
    }
}

/// Source A (slots 0-8191) and target B (8192-16383), with one slot of A
/// MIGRATING to B (IMPORTING there).
struct Migration {
    source: Node,
    target: Node,
    tag: String,
    slot: u16,
}

impl Migration {
    /// `seeded`: keys (`name` = `name`) written to the source before the
    /// slot starts migrating.
    fn start(prefix: &str, seeded: &[&str]) -> Migration {
        let (id_a, id_b) = (format!("{prefix}-0-0"), format!("{prefix}-1-0"));
        let source = start_named(&id_a);
        let target = start_named(&id_b);
        let map = TopologyMap {
            epoch: 1,
            cluster: "demo".into(),
            region: "local".into(),
            shards: vec![
                shard(0, 0, 8191, &id_a, &source),
                shard(1, 8192, 16383, &id_b, &target),
            ],
        };
        let json = serde_json::to_string(&map).expect("json");
        for node in [&source, &target] {
            assert_eq!(
                node.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &json]),
                Reply::ok()
            );
        }
        let tag = (0..)
            .map(|n| format!("mm{n}"))
            .find(|tag| key_slot(tag.as_bytes()) < 8192)
            .expect("a tag in the source's slots");
        let slot = key_slot(tag.as_bytes());
        for name in seeded {
            let key = format!("{{{tag}}}:{name}");
            assert_eq!(source.raw().cmd(&["SET", &key, name]), Reply::ok());
        }
        let slot_text = slot.to_string();
        assert_eq!(
            target.raw().cmd(&[
                "CLUSTER",
                "SETSLOT",
                &slot_text,
                "IMPORTING",
                &cluster_node_id(&id_a)
            ]),
            Reply::ok()
        );
        assert_eq!(
            source.raw().cmd(&[
                "CLUSTER",
                "SETSLOT",
                &slot_text,
                "MIGRATING",
                &cluster_node_id(&id_b)
            ]),
            Reply::ok()
        );
        Migration {
            source,
            target,
            tag,
            slot,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.tag)
    }

    /// Moves one key from the source to the target with MIGRATE.
    fn migrate(&self, name: &str) {
        let port = self.target.port.to_string();
        assert_eq!(
            self.source
                .raw()
                .cmd(&["MIGRATE", "127.0.0.1", &port, &self.key(name), "0", "5000"]),
            Reply::ok()
        );
    }

    fn ask(&self) -> Reply {
        Reply::err(&format!("ASK {} 127.0.0.1:{}", self.slot, self.target.port))
    }

    fn moved_to_source(&self) -> Reply {
        Reply::err(&format!(
            "MOVED {} 127.0.0.1:{}",
            self.slot, self.source.port
        ))
    }
}

fn queued() -> Reply {
    Reply::Simple("QUEUED".into())
}

fn exec_abort() -> Reply {
    Reply::err("EXECABORT Transaction discarded because of previous errors.")
}

fn is_tryagain(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(text) if text.starts_with("TRYAGAIN "))
}

/// Runs MULTI, `commands`, EXEC on `raw`; returns the replies to the queued
/// commands and the EXEC reply.
fn transaction(raw: &mut Raw, commands: &[&[&str]]) -> (Vec<Reply>, Reply) {
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    let replies = commands.iter().map(|command| raw.cmd(command)).collect();
    (replies, raw.cmd(&["EXEC"]))
}

#[test]
fn source_answers_exec_with_ask_or_tryagain_for_moved_keys() {
    let migration = Migration::start("src", &["moved", "kept", "kept2", "late"]);
    migration.migrate("moved");
    let (moved, kept, kept2, late) = (
        migration.key("moved"),
        migration.key("kept"),
        migration.key("kept2"),
        migration.key("late"),
    );
    let mut source = migration.source.raw();

    // every key gone: the whole transaction is asked elsewhere
    let (replies, exec) = transaction(&mut source, &[&["GET", &moved], &["SET", &moved, "x"]]);
    assert_eq!(replies, vec![queued(), queued()]);
    assert_eq!(exec, migration.ask());
    // some keys here, some gone: TRYAGAIN, nothing ran
    let (replies, exec) = transaction(&mut source, &[&["SET", &kept, "x"], &["GET", &moved]]);
    assert_eq!(replies, vec![queued(), queued()]);
    assert!(is_tryagain(&exec), "{exec:?}");
    assert_eq!(source.cmd(&["GET", &kept]), Reply::bulk("kept"));
    // every key still here: the transaction runs on the source
    let (_, exec) = transaction(&mut source, &[&["GET", &kept], &["SET", &kept2, "v2"]]);
    assert_eq!(exec, Reply::Array(vec![Reply::bulk("kept"), Reply::ok()]));
    // a key that moves between queueing and EXEC: ASK, and the write did not run
    assert_eq!(source.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(source.cmd(&["SET", &late, "lost?"]), queued());
    migration.migrate("late");
    assert_eq!(source.cmd(&["EXEC"]), migration.ask());
    let mut target = migration.target.raw();
    assert_eq!(target.cmd(&["ASKING"]), Reply::ok());
    assert_eq!(target.cmd(&["GET", &late]), Reply::bulk("late"));
    // a queued command for another node's slot still aborts the transaction (Redis)
    let elsewhere = (0..)
        .map(|n| format!("other{n}"))
        .find(|key| key_slot(key.as_bytes()) >= 8192)
        .expect("a key of the target's slots");
    let (replies, exec) = transaction(&mut source, &[&["GET", &kept], &["GET", &elsewhere]]);
    assert_eq!(replies[0], queued());
    assert_eq!(
        replies[1],
        Reply::err(&format!(
            "MOVED {} 127.0.0.1:{}",
            key_slot(elsewhere.as_bytes()),
            migration.target.port
        ))
    );
    assert_eq!(exec, exec_abort());
}

#[test]
fn target_runs_asking_multi_exec_and_refuses_partial_multi_key_transactions() {
    let migration = Migration::start("dst", &["moved", "kept"]);
    migration.migrate("moved");
    let (moved, kept, fresh) = (
        migration.key("moved"),
        migration.key("kept"),
        migration.key("fresh"),
    );
    let mut target = migration.target.raw();

    // without ASKING the slot belongs to the source
    let (replies, exec) = transaction(&mut target, &[&["GET", &moved]]);
    assert_eq!(replies, vec![migration.moved_to_source()]);
    assert_eq!(exec, exec_abort());
    // ASKING before MULTI covers the whole block
    assert_eq!(target.cmd(&["ASKING"]), Reply::ok());
    let (replies, exec) = transaction(
        &mut target,
        &[&["GET", &moved], &["SET", &moved, "new"], &["GET", &moved]],
    );
    assert_eq!(replies, vec![queued(), queued(), queued()]);
    assert_eq!(
        exec,
        Reply::Array(vec![Reply::bulk("moved"), Reply::ok(), Reply::bulk("new")])
    );
    // ... and ends with EXEC
    assert_eq!(target.cmd(&["GET", &moved]), migration.moved_to_source());
    // a single key not here yet may be created on the importing node
    assert_eq!(target.cmd(&["ASKING"]), Reply::ok());
    let (_, exec) = transaction(&mut target, &[&["SET", &fresh, "1"], &["INCR", &fresh]]);
    assert_eq!(exec, Reply::Array(vec![Reply::ok(), Reply::Int(2)]));
    // several keys with some still on the source: TRYAGAIN
    assert_eq!(target.cmd(&["ASKING"]), Reply::ok());
    let (replies, exec) = transaction(&mut target, &[&["GET", &moved], &["GET", &kept]]);
    assert_eq!(replies, vec![queued(), queued()]);
    assert!(is_tryagain(&exec), "{exec:?}");
    // DISCARD ends the ASKING block too
    assert_eq!(target.cmd(&["ASKING"]), Reply::ok());
    assert_eq!(target.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(target.cmd(&["DISCARD"]), Reply::ok());
    assert_eq!(target.cmd(&["GET", &moved]), migration.moved_to_source());
}

#[test]
fn cluster_client_atomic_pipelines_follow_ask_and_tryagain() {
    let migration = Migration::start("cli", &["moved", "kept"]);
    migration.migrate("moved");
    let (moved, kept) = (migration.key("moved"), migration.key("kept"));
    let url = format!("redis://127.0.0.1:{}/", migration.source.port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = redis::cluster::ClusterClient::builder(vec![url])
            .retries(20)
            .build()
            .expect("cluster client");
        let mut con = client.get_async_connection().await.expect("connect");
        // sent to the source, asked to the target, run there with ASKING
        let (value, incremented): (String, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&moved)
            .arg("41")
            .ignore()
            .cmd("GET")
            .arg(&moved)
            .cmd("INCR")
            .arg(&moved)
            .query_async(&mut con)
            .await
            .expect("atomic pipeline on a moved key");
        assert_eq!((value.as_str(), incremented), ("41", 42));
        // TRYAGAIN until the last key moved, then ASK
        let source_port = migration.source.port;
        let target_port = migration.target.port.to_string();
        let kept_for_mover = kept.clone();
        let mover = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            Raw::connect(source_port).cmd(&[
                "MIGRATE",
                "127.0.0.1",
                &target_port,
                &kept_for_mover,
                "0",
                "5000",
            ])
        });
        let (both,): (Vec<Option<String>>,) = redis::pipe()
            .atomic()
            .cmd("MGET")
            .arg(&moved)
            .arg(&kept)
            .query_async(&mut con)
            .await
            .expect("atomic pipeline across a slot in transit");
        assert_eq!(both, vec![Some("42".to_string()), Some("kept".to_string())]);
        assert_eq!(mover.join().expect("mover"), Reply::ok());
    });
    // the values live on the target only
    let mut target = migration.target.raw();
    assert_eq!(target.cmd(&["ASKING"]), Reply::ok());
    assert_eq!(target.cmd(&["GET", &moved]), Reply::bulk("42"));
    assert_eq!(
        migration.source.raw().cmd(&["EXISTS", &moved]),
        migration.ask()
    );
}
