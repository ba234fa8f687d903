//! Replication with real processes on loopback: full sync under writes,
//! expiry driven by the primary, READONLY replicas, WAIT, failover with
//! REPLICAOF NO ONE, partial resync, topology-driven attachment and
//! min-replicas-to-write.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::node_process::wait_until;
use common::{Node, Reply, accept_replica, info_field, redis_cli, shard_map};

fn start(node_id: &str, extra: &[&str]) -> Node {
    Node::start_named(node_id, 8, extra)
}

/// Makes `replica` follow `primary` (bare nodes: like redis-server, a fresh node
/// serves replicas without being named primary first).
fn replicate(replica: &Node, primary: &Node) {
    let mut con = replica.redis();
    let reply: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query(&mut con)
        .expect("REPLICAOF");
    assert!(reply.starts_with("OK"), "{reply}");
    wait_until("link up", Duration::from_secs(20), || {
        info_field(replica, "replication", "master_link_status") == "up"
    });
}

fn wait_replicas(primary: &Node, count: i64) -> i64 {
    let mut con = primary.redis();
    redis::cmd("WAIT")
        .arg(count)
        .arg(5000)
        .query(&mut con)
        .expect("WAIT")
}

fn dbsize(node: &Node) -> i64 {
    redis::cmd("DBSIZE")
        .query(&mut node.redis())
        .expect("DBSIZE")
}

fn load_keys(node: &Node, count: usize) {
    let mut con = node.redis();
    for batch in (0..count).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &index in batch {
            pipe.cmd("SET")
                .arg(format!("key:{index}"))
                .arg(format!("value-{index}"))
                .ignore();
        }
        pipe.query::<()>(&mut con).expect("load");
    }
}

#[test]
fn full_sync_under_writes_then_everything_matches() {
    let primary = start("primary", &[]);
    let replicas = [start("replica-a", &[]), start("replica-b", &[])];
    load_keys(&primary, 10_000);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let mut con = primary.redis();
        std::thread::spawn(move || {
            let mut index = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(format!("live:{index}"))
                    .arg(index)
                    .arg("EX")
                    .arg(600)
                    .ignore()
                    .cmd("INCR")
                    .arg("counter")
                    .ignore()
                    .cmd("INCRBYFLOAT")
                    .arg("float")
                    .arg("0.5")
                    .ignore()
                    .cmd("HINCRBY")
                    .arg("hash")
                    .arg(format!("f{}", index % 10))
                    .arg(1)
                    .ignore()
                    .cmd("SET")
                    .arg(format!("key:{}", index % 10_000))
                    .arg(format!("rewritten-{index}"))
                    .ignore()
                    .cmd("RPUSH")
                    .arg("list")
                    .arg(index)
                    .ignore()
                    .cmd("LTRIM")
                    .arg("list")
                    .arg(-50)
                    .arg(-1)
                    .ignore()
                    .cmd("SETBIT")
                    .arg("bits")
                    .arg(index * 7 % 5000)
                    .arg(index % 3 % 2)
                    .ignore()
                    .cmd("BITFIELD")
                    .arg("fields")
                    .arg("OVERFLOW")
                    .arg("SAT")
                    .arg("INCRBY")
                    .arg("u4")
                    .arg(format!("#{}", index % 16))
                    .arg(1)
                    .ignore()
                    .cmd("BITOP")
                    .arg("XOR")
                    .arg("mixed")
                    .arg("bits")
                    .arg("fields")
                    .ignore()
                    .cmd("PFADD")
                    .arg("visitors")
                    .arg(format!("user:{index}"))
                    .ignore()
                    .cmd("PFMERGE")
                    .arg("all-visitors")
                    .arg("visitors")
                    .ignore()
                    .cmd("ZINCRBY")
                    .arg("board")
                    .arg(1.5)
                    .arg(format!("player:{}", index % 50))
                    .ignore()
                    .cmd("ZADD")
                    .arg("window")
                    .arg(index)
                    .arg(format!("event:{index}"))
                    .ignore()
                    .cmd("ZREMRANGEBYRANK")
                    .arg("window")
                    .arg(0)
                    .arg(-101)
                    .ignore()
                    .cmd("ZUNIONSTORE")
                    .arg("union")
                    .arg(2)
                    .arg("board")
                    .arg("window")
                    .ignore();
                pipe.query::<()>(&mut con).expect("write");
                index += 1;
                written.store(index, Ordering::Relaxed);
            }
        })
    };
    for replica in &replicas {
        replicate(replica, &primary);
    }
    // keep writing while the replicas stream
    let before = written.load(Ordering::Relaxed);
    wait_until("writes during streaming", Duration::from_secs(10), || {
        written.load(Ordering::Relaxed) > before + 200
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert_eq!(wait_replicas(&primary, 2), 2);
    let expected = dbsize(&primary);
    assert!(expected > 10_000);
    let mut primary_con = primary.redis();
    let lrange = |con: &mut redis::Connection| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg("list")
            .arg(0)
            .arg(-1)
            .query(con)
            .expect("LRANGE")
    };
    let list = lrange(&mut primary_con);
    assert_eq!(list.len(), 50);
    for replica in &replicas {
        assert_eq!(dbsize(replica), expected);
        let mut con = replica.redis();
        assert_eq!(lrange(&mut con), list);
        for key in [
            "counter",
            "float",
            "key:0",
            "key:17",
            "key:9999",
            "live:0",
            "live:100",
            "bits",
            "fields",
            "mixed",
            "visitors",
            "all-visitors",
        ] {
            let on_primary: Option<Vec<u8>> = redis::cmd("GET")
                .arg(key)
                .query(&mut primary_con)
                .expect("GET");
            let on_replica: Option<Vec<u8>> =
                redis::cmd("GET").arg(key).query(&mut con).expect("GET");
            assert_eq!(on_primary, on_replica, "{key}");
            assert!(on_primary.is_some(), "{key} written");
        }
        for index in (0..10_000).step_by(97) {
            let key = format!("key:{index}");
            let on_primary: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query(&mut primary_con)
                .expect("GET");
            let on_replica: Option<String> =
                redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
            assert_eq!(on_primary, on_replica, "{key}");
        }
        for key in ["board", "window", "union"] {
            let zrange = |con: &mut redis::Connection| -> Vec<(String, String)> {
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(con)
                    .expect("ZRANGE")
            };
            let on_primary = zrange(&mut primary_con);
            assert!(!on_primary.is_empty(), "{key} written");
            assert_eq!(zrange(&mut con), on_primary, "{key}");
        }
        let hash_primary: Vec<(String, i64)> = redis::cmd("HGETALL")
            .arg("hash")
            .query(&mut primary_con)
            .expect("HGETALL");
        let hash_replica: Vec<(String, i64)> = redis::cmd("HGETALL")
            .arg("hash")
            .query(&mut con)
            .expect("HGETALL");
        let mut hash_primary = hash_primary;
        let mut hash_replica = hash_replica;
        hash_primary.sort();
        hash_replica.sort();
        assert_eq!(hash_primary, hash_replica);
        // relative TTLs arrived as the same absolute expiry
        let at_primary: i64 = redis::cmd("PEXPIRETIME")
            .arg("live:0")
            .query(&mut primary_con)
            .expect("PEXPIRETIME");
        let at_replica: i64 = redis::cmd("PEXPIRETIME")
            .arg("live:0")
            .query(&mut con)
            .expect("PEXPIRETIME");
        assert_eq!(at_primary, at_replica);
    }
    assert_eq!(info_field(&primary, "replication", "connected_slaves"), "2");
    assert_eq!(info_field(&primary, "stats", "sync_full"), "2");
    let slave0 = info_field(&primary, "replication", "slave0");
    assert!(slave0.contains("state=online"), "{slave0}");
    // the same REPLICAOF again is a no-op: no second full sync
    let reply: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query(&mut replicas[0].redis())
        .expect("REPLICAOF");
    assert_eq!(reply, "OK Already connected to specified master");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(info_field(&primary, "stats", "sync_full"), "2");
    let (_, metrics) = primary.http_get("/metrics");
    assert!(
        metrics.contains("meridian_connected_replicas 2"),
        "{metrics}"
    );
}

#[test]
fn replicas_refuse_writes_and_expire_only_through_the_primary() {
    let primary = start("primary", &[]);
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    let mut raw = replica.raw();
    assert_eq!(
        raw.cmd(&["SET", "k", "v"]),
        Reply::err("READONLY You can't write against a read only replica.")
    );
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        raw.cmd(&["DEL", "k"]),
        Reply::err("READONLY You can't write against a read only replica.")
    );
    assert!(matches!(raw.cmd(&["EXEC"]), Reply::Error(error) if error.starts_with("EXECABORT")));

    let mut con = primary.redis();
    redis::cmd("SET")
        .arg("short")
        .arg("lived")
        .arg("PX")
        .arg(1500)
        .query::<()>(&mut con)
        .expect("SET");
    redis::cmd("SET")
        .arg("stays")
        .arg("1")
        .query::<()>(&mut con)
        .expect("SET");
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(raw.cmd(&["GET", "short"]), Reply::bulk("lived"));
    // with the primary frozen nobody sends DEL: the replica hides the key but keeps it
    primary.signal("STOP");
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(raw.cmd(&["GET", "short"]), Reply::Nil);
    assert_eq!(raw.cmd(&["EXISTS", "short"]), Reply::Int(0));
    assert_eq!(raw.cmd(&["DBSIZE"]), Reply::Int(2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(raw.cmd(&["DBSIZE"]), Reply::Int(2));
    primary.signal("CONT");
    // the primary's active expiry deletes it and propagates the DEL
    wait_until("DEL from the primary", Duration::from_secs(5), || {
        raw.cmd(&["DBSIZE"]) == Reply::Int(1)
    });
    assert_eq!(raw.cmd(&["GET", "stays"]), Reply::bulk("1"));
}

#[test]
fn failover_keeps_every_acknowledged_write() {
    let primary = start("primary", &[]);
    let first = start("replica-a", &[]);
    let second = start("replica-b", &[]);
    replicate(&first, &primary);
    replicate(&second, &primary);
    let mut con = primary.redis();
    let mut acknowledged = Vec::new();
    for round in 0..20 {
        let mut pipe = redis::pipe();
        for index in 0..50 {
            let key = format!("acked:{round}:{index}");
            pipe.cmd("SET").arg(&key).arg(round * 100 + index).ignore();
            acknowledged.push(key);
        }
        pipe.cmd("MULTI")
            .ignore()
            .cmd("INCR")
            .arg("tx")
            .ignore()
            .cmd("HSET")
            .arg("txhash")
            .arg(round)
            .arg("x")
            .ignore()
            .cmd("RPUSH")
            .arg("txlist")
            .arg(round)
            .ignore()
            .cmd("LPOP")
            .arg("txlist")
            .ignore()
            .cmd("RPUSH")
            .arg("txlist")
            .arg(round)
            .ignore()
            .cmd("EXEC")
            .ignore();
        pipe.query::<()>(&mut con).expect("writes");
        assert_eq!(wait_replicas(&primary, 2), 2);
    }
    drop(con);
    drop(primary);
    let mut promoted = first.redis();
    let reply: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut promoted)
        .expect("promote");
    assert_eq!(reply, "OK");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut promoted).expect("ROLE");
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
    // the promoted node accepts writes
    redis::cmd("SET")
        .arg("after")
        .arg("failover")
        .query::<()>(&mut promoted)
        .expect("SET");
    replicate(&second, &first);
    assert_eq!(wait_replicas(&first, 1), 1);
    // the old history continues: partial resync, not a full one
    assert_eq!(info_field(&first, "stats", "sync_partial_ok"), "1");
    assert_eq!(info_field(&first, "stats", "sync_full"), "0");
    for node in [&first, &second] {
        let mut con = node.redis();
        for key in &acknowledged {
            let value: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
            assert!(value.is_some(), "{key} lost");
        }
        let tx: i64 = redis::cmd("GET").arg("tx").query(&mut con).expect("GET");
        assert_eq!(tx, 20);
        let fields: i64 = redis::cmd("HLEN")
            .arg("txhash")
            .query(&mut con)
            .expect("HLEN");
        assert_eq!(fields, 20);
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg("txlist")
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .expect("LRANGE");
        // each round: RPUSH round, LPOP, RPUSH round
        let mut expected = std::collections::VecDeque::new();
        for round in 0..20 {
            expected.push_back(round.to_string());
            expected.pop_front();
            expected.push_back(round.to_string());
        }
        assert_eq!(list, Vec::from(expected));
    }
    let after: Option<String> = redis::cmd("GET")
        .arg("after")
        .query(&mut second.redis())
        .expect("GET");
    assert_eq!(after.as_deref(), Some("failover"));
}

#[test]
fn cut_links_resume_with_partial_resync() {
    let primary = start("primary", &[]);
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    load_keys(&primary, 500);
    assert_eq!(wait_replicas(&primary, 1), 1);
    // the primary drops the replica; writes continue meanwhile
    let mut raw = primary.raw();
    assert_eq!(
        raw.cmd(&["CLIENT", "KILL", "TYPE", "replica"]),
        Reply::Int(1)
    );
    for index in 0..200 {
        let key = format!("during:{index}");
        assert_eq!(raw.cmd(&["SET", &key, "x"]), Reply::ok());
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(info_field(&primary, "stats", "sync_partial_ok"), "1");
    // the replica drops its link itself
    let reply: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut replica.redis())
        .expect("KILL");
    assert_eq!(reply, 1);
    assert_eq!(raw.cmd(&["SET", "last", "x"]), Reply::ok());
    wait_until("second partial resync", Duration::from_secs(10), || {
        info_field(&primary, "stats", "sync_partial_ok") == "2"
    });
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(info_field(&primary, "stats", "sync_full"), "1");
    assert_eq!(dbsize(&replica), dbsize(&primary));
    assert_eq!(
        info_field(&replica, "replication", "slave_repl_offset"),
        info_field(&primary, "replication", "master_repl_offset")
    );
    // a frozen replica process (kill -STOP) catches up from the backlog when resumed
    replica.signal("STOP");
    for index in 0..100 {
        let key = format!("frozen:{index}");
        assert_eq!(raw.cmd(&["SET", &key, "x"]), Reply::ok());
    }
    std::thread::sleep(Duration::from_millis(1000));
    replica.signal("CONT");
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(dbsize(&replica), dbsize(&primary));
}

#[test]
fn topology_push_attaches_and_promotes() {
    let primary = start("node-0", &[]);
    let replica = start("node-1", &[]);
    load_keys(&primary, 100);
    let json = shard_map(1, ("node-0", &primary), &[("node-1", &replica)]);
    for node in [&primary, &replica] {
        assert_eq!(
            node.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &json]),
            Reply::ok()
        );
    }
    wait_until("attached by topology", Duration::from_secs(10), || {
        info_field(&replica, "replication", "master_link_status") == "up"
    });
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(dbsize(&replica), 100);
    // the operator's explicit REPLICAOF to the same primary changes nothing
    let reply: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query(&mut replica.redis())
        .expect("REPLICAOF");
    assert_eq!(reply, "OK Already connected to specified master");
    let json = shard_map(2, ("node-0", &primary), &[("node-1", &replica)]);
    assert_eq!(
        replica.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &json]),
        Reply::ok()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(info_field(&primary, "stats", "sync_full"), "1");
    // failover by map: the replica becomes the primary
    let json = shard_map(3, ("node-1", &replica), &[("node-0", &primary)]);
    assert_eq!(
        replica.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &json]),
        Reply::ok()
    );
    assert_eq!(info_field(&replica, "replication", "role"), "master");
    assert_eq!(replica.raw().cmd(&["SET", "key:1", "new"]), Reply::ok());
}

#[test]
fn min_replicas_to_write_refuses_without_replicas() {
    let primary = start(
        "primary",
        &[
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            "2",
        ],
    );
    let mut raw = primary.raw();
    assert_eq!(
        raw.cmd(&["SET", "k", "v"]),
        Reply::err("NOREPLICAS Not enough good replicas to write.")
    );
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    assert_eq!(raw.cmd(&["SET", "k", "v"]), Reply::ok());
    drop(replica);
    wait_until("replica gone", Duration::from_secs(5), || {
        raw.cmd(&["SET", "k", "v"]) == Reply::err("NOREPLICAS Not enough good replicas to write.")
    });
    assert_eq!(raw.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "min-replicas-to-write", "0"]),
        Reply::ok()
    );
    assert_eq!(raw.cmd(&["SET", "k", "w"]), Reply::ok());
}

#[test]
fn password_protected_link_and_redis_cli_role() {
    let primary = start("primary", &["--requirepass", "s3cret"]);
    let replica = start("replica", &["--requirepass", "s3cret"]);
    let mut raw = replica.raw();
    assert_eq!(raw.cmd(&["AUTH", "s3cret"]), Reply::ok());
    let port = primary.port.to_string();
    assert_eq!(raw.cmd(&["SLAVEOF", "127.0.0.1", &port]), Reply::ok());
    let mut primary_raw = primary.raw();
    assert_eq!(primary_raw.cmd(&["AUTH", "s3cret"]), Reply::ok());
    assert_eq!(primary_raw.cmd(&["SET", "k", "v"]), Reply::ok());
    wait_until(
        "replicated through the authenticated link",
        Duration::from_secs(10),
        || raw.cmd(&["GET", "k"]) == Reply::bulk("v"),
    );
    let cli = redis_cli();
    let output = Command::new(cli)
        .args([
            "-p",
            &replica.port.to_string(),
            "-a",
            "s3cret",
            "--no-auth-warning",
            "ROLE",
        ])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("slave\n127.0.0.1\n"), "{text}");
    assert!(text.contains("connected"), "{text}");
    let output = Command::new(cli)
        .args(["-p", &port, "-a", "s3cret", "--no-auth-warning", "ROLE"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("master\n"), "{text}");
    assert!(text.contains(&replica.port.to_string()), "{text}");
}

#[test]
fn link_cut_inside_a_transaction_resumes_before_multi() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("fake primary");
    let port = listener.local_addr().expect("addr").port();
    let replica = start("replica", &[]);
    let mut con = replica.redis();
    let _: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .query(&mut con)
        .expect("REPLICAOF");
    let replid = "a".repeat(40);
    let (_reader, mut writer, psync) = accept_replica(&listener);
    assert_eq!(psync[1..], ["?".to_string(), "-1".to_string()]);
    let empty_snapshot = b"MRDSNAP1\xff";
    write!(
        writer,
        "+FULLRESYNC {replid} 100\r\n${}\r\n",
        empty_snapshot.len()
    )
    .expect("write");
    writer.write_all(empty_snapshot).expect("write");
    let set_before = common::encode(&[b"SET", b"before", b"1"]);
    let multi = common::encode(&[b"MULTI"]);
    let set_inside = common::encode(&[b"SET", b"inside", b"1"]);
    let exec = common::encode(&[b"EXEC"]);
    writer.write_all(&set_before).expect("write");
    writer.write_all(&multi).expect("write");
    writer.write_all(&set_inside).expect("write");
    wait_until("first command applied", Duration::from_secs(5), || {
        redis::cmd("GET")
            .arg("before")
            .query::<Option<String>>(&mut con)
            .expect("GET")
            .is_some()
    });
    drop(writer);
    drop(_reader);
    // the replica comes back at the offset before MULTI, not in the middle
    let (_reader, mut writer, psync) = accept_replica(&listener);
    let resume = 100 + set_before.len();
    assert_eq!(psync[1..], [replid.clone(), resume.to_string()]);
    write!(writer, "+CONTINUE {replid}\r\n").expect("write");
    writer.write_all(&multi).expect("write");
    writer.write_all(&set_inside).expect("write");
    writer.write_all(&exec).expect("write");
    wait_until("transaction applied", Duration::from_secs(5), || {
        redis::cmd("GET")
            .arg("inside")
            .query::<Option<String>>(&mut con)
            .expect("GET")
            .is_some()
    });
    let expected = resume + multi.len() + set_inside.len() + exec.len();
    assert_eq!(
        info_field(&replica, "replication", "slave_repl_offset"),
        expected.to_string()
    );
    assert_eq!(info_field(&replica, "replication", "master_replid"), replid);
}

/// `REPLICAOF NO ONE`: names a node primary. A managed node must be named so after it
/// started before it serves PSYNC; on a replica it is the promotion.
fn name_primary(node: &Node) {
    let reply: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut node.redis())
        .expect("REPLICAOF NO ONE");
    assert_eq!(reply, "OK");
}

/// Started as the operator starts nodes: the role comes from maps (or REPLICAOF NO ONE),
/// never from the start alone.
const MANAGED: &[&str] = &["--managed"];

const KEYS: i64 = 3000;

/// The replica saw at least one full sync of another history refused, and shows it in
/// INFO replication, INFO stats and /metrics.
/// Three seconds after its primary restarted empty, `replica` still holds [`KEYS`] keys
/// and its link is down.
fn assert_kept_its_data_with_the_link_down(replica: &Node) {
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        dbsize(replica),
        KEYS,
        "the replica took the restarted primary's empty dataset"
    );
    assert_eq!(
        info_field(replica, "replication", "master_link_status"),
        "down"
    );
}

/// A node not named primary since it started answers PSYNC with NOMASTERLINK.
fn assert_psync_refused(node: &Node) {
    let refused = node.raw().cmd(&["PSYNC", "?", "-1"]);
    assert!(
        matches!(&refused, Reply::Error(text) if text.starts_with("NOMASTERLINK")),
        "{refused:?}"
    );
}

fn wait_refused_full_sync(replica: &Node) {
    wait_until("a refused full sync", Duration::from_secs(10), || {
        info_field(replica, "replication", "master_full_sync_refused")
            .parse::<u64>()
            .is_ok_and(|refused| refused > 0)
    });
    assert_ne!(info_field(replica, "stats", "sync_full_refused"), "0");
    let (_, metrics) = replica.http_get("/metrics");
    assert!(
        metrics.lines().any(
            |line| line.starts_with("meridian_repl_full_sync_refused_total ")
                && !line.ends_with(" 0")
        ),
        "{metrics}"
    );
}

/// The repair an operator makes after its primary restarted empty: promote the replica,
/// the restarted node follows it and gets the data back.
fn promote_replica_and_resync(restarted: &Node, replica: &Node) {
    name_primary(replica);
    replicate(restarted, replica);
    wait_until(
        "the restarted node has the data",
        Duration::from_secs(20),
        || dbsize(restarted) == KEYS,
    );
    assert_eq!(dbsize(replica), KEYS);
}

/// Issue 14 with two bare nodes, as with redis-server: the primary is killed (SIGKILL)
/// and restarts empty on the same ports. A bare node serves PSYNC from its start, so
/// only the replica's own refusal (another history on the link its data came from)
/// keeps its data.
#[test]
fn bare_replica_keeps_its_data_when_its_bare_primary_restarts_empty() {
    let mut primary = start("primary", &[]);
    let replica = start("replica", &[]);
    assert_eq!(
        info_field(&primary, "replication", "primary_named_by"),
        "standalone"
    );
    load_keys(&primary, KEYS as usize);
    replicate(&replica, &primary);
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(dbsize(&replica), KEYS);

    primary.kill_and_restart("primary", 8, &[]);
    assert_eq!(dbsize(&primary), 0);
    assert_eq!(
        info_field(&primary, "replication", "primary_named_by"),
        "standalone"
    );
    // the restarted primary offers full syncs of its new, empty history; the replica
    // refuses them on the link its data came from
    wait_refused_full_sync(&replica);
    // and keeps refusing (it retries every 2 s)
    assert_kept_its_data_with_the_link_down(&replica);
    assert_eq!(info_field(&replica, "stats", "sync_full"), "0");

    promote_replica_and_resync(&primary, &replica);
}

/// Issue 14 with two managed nodes linked by REPLICAOF: the restarted primary serves
/// no PSYNC until it is named primary again; named by hand, the replica still refuses to
/// swap its data for the empty dataset.
#[test]
fn replica_keeps_its_data_when_its_primary_restarts_empty() {
    let mut primary = start("primary", MANAGED);
    let replica = start("replica", MANAGED);
    assert_eq!(
        info_field(&primary, "replication", "primary_named_by"),
        "none"
    );
    name_primary(&primary);
    load_keys(&primary, KEYS as usize);
    replicate(&replica, &primary);
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(dbsize(&replica), KEYS);

    primary.kill_and_restart("primary", 8, MANAGED);
    assert_eq!(dbsize(&primary), 0);
    // nor does it answer for keys: its empty store would read every write as missing
    for command in [&["GET", "key:1"][..], &["SET", "key:1", "lost"]] {
        assert_eq!(
            primary.raw().cmd(command),
            Reply::Error("CLUSTERDOWN Hash slot not served".into()),
            "{command:?} on a restarted managed node nobody named"
        );
    }
    // the replica retries every 500 ms: several attempts fit in 3 s
    assert_kept_its_data_with_the_link_down(&replica);
    // nobody named the restarted node primary since it started: no PSYNC
    assert_eq!(
        info_field(&primary, "replication", "primary_named_by"),
        "none"
    );
    assert_psync_refused(&primary);
    assert_eq!(
        info_field(&replica, "replication", "master_full_sync_refused"),
        "0",
        "the restarted node offered no full sync"
    );

    // Named primary by hand, it serves PSYNC; the replica still refuses to replace its
    // data with another history on the link its data came from, and says so.
    name_primary(&primary);
    wait_refused_full_sync(&replica);
    assert_eq!(dbsize(&replica), KEYS);

    promote_replica_and_resync(&primary, &replica);
}

/// Issue 14 in cluster mode: a restarted primary serves no PSYNC until a map names it
/// primary; the old map pushed back does not make its replica drop its data; the
/// failover map (the replica primary, the restarted node its replica) brings the
/// restarted node the data.
#[test]
fn a_restarted_primary_serves_no_psync_until_a_map_names_it() {
    let mut primary = start("node-0", MANAGED);
    let replica = start("node-1", MANAGED);
    assert_eq!(
        info_field(&primary, "replication", "primary_named_by"),
        "none"
    );
    let first = shard_map(1, ("node-0", &primary), &[("node-1", &replica)]);
    for node in [&primary, &replica] {
        assert_eq!(
            node.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &first]),
            Reply::ok()
        );
    }
    assert_eq!(
        info_field(&primary, "replication", "primary_named_by"),
        "map"
    );
    load_keys(&primary, KEYS as usize);
    wait_until("attached by topology", Duration::from_secs(10), || {
        info_field(&replica, "replication", "master_link_status") == "up"
    });
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(dbsize(&replica), KEYS);

    primary.kill_and_restart("node-0", 8, MANAGED);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dbsize(&replica), KEYS);
    assert_psync_refused(&primary);
    assert_eq!(info_field(&primary, "stats", "sync_full"), "0");

    // What the operator of issue 14 did: push the old map back to the restarted node.
    assert_eq!(
        primary.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &first]),
        Reply::ok()
    );
    wait_refused_full_sync(&replica);
    assert_eq!(dbsize(&replica), KEYS);

    // The failover map: the replica is primary, the restarted node replicates it.
    let second = shard_map(2, ("node-1", &replica), &[("node-0", &primary)]);
    for node in [&replica, &primary] {
        assert_eq!(
            node.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", &second]),
            Reply::ok()
        );
    }
    assert_eq!(info_field(&replica, "replication", "role"), "master");
    wait_until(
        "the restarted node has the data",
        Duration::from_secs(20),
        || dbsize(&primary) == KEYS,
    );
    assert_eq!(
        info_field(&primary, "replication", "master_link_status"),
        "up"
    );
    assert_eq!(dbsize(&replica), KEYS);
    assert_eq!(info_field(&replica, "stats", "sync_full"), "1");
}

/// The refusal of issue 14 leaves a legitimate full sync alone: a replica that fell
/// out of its primary's backlog full-syncs from the same history on the same link.
#[test]
fn a_replica_out_of_the_backlog_still_full_syncs_from_its_primary() {
    let primary = start("primary", &["--repl-backlog-size", "4096"]);
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    load_keys(&primary, 500);
    assert_eq!(wait_replicas(&primary, 1), 1);
    let mut raw = primary.raw();
    assert_eq!(
        raw.cmd(&["CLIENT", "KILL", "TYPE", "replica"]),
        Reply::Int(1)
    );
    // far more than the 4 KiB backlog before the replica is back (it retries in 500 ms)
    load_keys_with_prefix(&primary, "later", 1000);
    wait_until("second full sync", Duration::from_secs(10), || {
        info_field(&primary, "stats", "sync_full") == "2"
    });
    assert_eq!(wait_replicas(&primary, 1), 1);
    assert_eq!(dbsize(&replica), 1500);
    assert_eq!(info_field(&replica, "stats", "sync_full_refused"), "0");
}

fn load_keys_with_prefix(node: &Node, prefix: &str, count: usize) {
    let mut pipe = redis::pipe();
    for index in 0..count {
        pipe.cmd("SET")
            .arg(format!("{prefix}:{index}"))
            .arg(format!("value-{index}"))
            .ignore();
    }
    pipe.query::<()>(&mut node.redis()).expect("load");
}

/// A blocked BLMOVE served by a later push replicates as the move it made (LMOVE): the
/// replica ends with the same lists, and never waits itself.
#[test]
fn a_served_blocking_move_replicates_as_the_move() {
    let primary = start("primary", &[]);
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    let mut waiting = primary.raw();
    waiting.send(&common::encode(&[
        b"BLMOVE", b"jobs", b"working", b"LEFT", b"RIGHT", b"0",
    ]));
    wait_until("the client blocked", Duration::from_secs(10), || {
        info_field(&primary, "clients", "blocked_clients") == "1"
    });
    let mut con = primary.redis();
    let () = redis::cmd("RPUSH")
        .arg("jobs")
        .arg("job-1")
        .arg("job-2")
        .query(&mut con)
        .expect("RPUSH");
    assert_eq!(waiting.read(), Reply::bulk("job-1"));
    assert_eq!(wait_replicas(&primary, 1), 1);
    let mut on_replica = replica.redis();
    for (key, expected) in [("jobs", vec!["job-2"]), ("working", vec!["job-1"])] {
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut on_replica)
            .expect("LRANGE");
        assert_eq!(list, expected, "{key}");
    }
}

/// A blocked BZPOPMIN served by a later ZADD replicates as the pop it made (ZMPOP over
/// its keys): the replica ends with the same sorted set, and never waits itself.
#[test]
fn a_served_blocking_sorted_set_pop_replicates_as_the_pop() {
    let primary = start("primary", &[]);
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    let mut waiting = primary.raw();
    waiting.send(&common::encode(&[b"BZPOPMAX", b"none", b"scores", b"0"]));
    wait_until("the client blocked", Duration::from_secs(10), || {
        info_field(&primary, "clients", "blocked_clients") == "1"
    });
    let mut con = primary.redis();
    let () = redis::cmd("ZADD")
        .arg("scores")
        .arg(1)
        .arg("low")
        .arg(9)
        .arg("high")
        .query(&mut con)
        .expect("ZADD");
    assert_eq!(
        waiting.read(),
        Reply::Array(vec![
            Reply::bulk("scores"),
            Reply::bulk("high"),
            Reply::bulk("9")
        ])
    );
    assert_eq!(wait_replicas(&primary, 1), 1);
    let on_replica: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("scores")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut replica.redis())
        .expect("ZRANGE");
    assert_eq!(on_replica, vec![("low".to_string(), 1.0)]);
}

/// SPOP chooses at random: the replica removes the members the primary chose (the pop
/// replicates as SREM of them), so both hold the same set.
#[test]
fn random_pops_replicate_as_the_members_they_removed() {
    let primary = start("primary", &[]);
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    let mut con = primary.redis();
    let members: Vec<String> = (0..100).map(|index| format!("m{index}")).collect();
    let () = redis::cmd("SADD")
        .arg("set")
        .arg(&members)
        .query(&mut con)
        .expect("SADD");
    let popped: Vec<String> = redis::cmd("SPOP")
        .arg("set")
        .arg(30)
        .query(&mut con)
        .expect("SPOP");
    assert_eq!(popped.len(), 30);
    let _: String = redis::cmd("SPOP").arg("set").query(&mut con).expect("SPOP");
    assert_eq!(wait_replicas(&primary, 1), 1);
    let sorted_members = |node: &Node| -> Vec<String> {
        let mut members: Vec<String> = redis::cmd("SMEMBERS")
            .arg("set")
            .query(&mut node.redis())
            .expect("SMEMBERS");
        members.sort();
        members
    };
    let on_primary = sorted_members(&primary);
    assert_eq!(on_primary.len(), 69);
    assert_eq!(sorted_members(&replica), on_primary);
}

/// Like redis-server outside cluster mode, PUBLISH goes down the replication stream: a
/// replica's subscribers receive what is published on the primary, alone, inside
/// MULTI/EXEC and from a script, in order; the primary counts only its own receivers.
#[test]
fn messages_published_on_the_primary_reach_the_replicas_subscribers() {
    let primary = start("primary", &[]);
    let replica = start("replica", &[]);
    replicate(&replica, &primary);
    let mut subscriber = replica.raw();
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "news"]),
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    let mut raw = primary.raw();
    assert_eq!(raw.cmd(&["PUBLISH", "news", "first"]), Reply::Int(0));
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        raw.cmd(&["PUBLISH", "news", "second"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(raw.cmd(&["EXEC"]), Reply::Array(vec![Reply::Int(0)]));
    assert_eq!(
        raw.cmd(&["EVAL", "return redis.call('PUBLISH', 'news', 'third')", "0"]),
        Reply::Int(0)
    );
    for payload in ["first", "second", "third"] {
        assert_eq!(
            subscriber.read(),
            Reply::Array(vec![
                Reply::bulk("message"),
                Reply::bulk("news"),
                Reply::bulk(payload)
            ])
        );
    }
    // the replica's own PUBLISH stays its own (nothing flows back up)
    let mut on_replica = replica.raw();
    assert_eq!(on_replica.cmd(&["PUBLISH", "news", "local"]), Reply::Int(1));
    assert_eq!(
        subscriber.read(),
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("local")
        ])
    );
}
