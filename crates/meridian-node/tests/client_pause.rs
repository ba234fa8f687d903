//! CLIENT PAUSE / CLIENT UNPAUSE with real processes: WRITE holds writes but
//! serves reads, ALL holds everything but the pause controls, UNPAUSE and the
//! timeout release, the replication offset stands still while keys expire,
//! and a write held during a primary handover is redirected afterwards.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::node_process::wait_until;
use common::{Node, Raw, Reply, info_field, shard_map};
use meridian_topology::key_slot;

fn start(node_id: &str) -> Node {
    Node::start_named(node_id, 4, &[])
}

/// Sends `commands` on a connection of its own in a thread; the replies (one
/// per command) arrive on the returned channel once the node answers.
fn send_async(port: u16, commands: &[&[&str]]) -> mpsc::Receiver<Vec<Reply>> {
    let commands: Vec<Vec<String>> = commands
        .iter()
        .map(|command| command.iter().map(|arg| arg.to_string()).collect())
        .collect();
    let mut raw = Raw::connect(port);
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        for command in &commands {
            let args: Vec<&[u8]> = command.iter().map(String::as_bytes).collect();
            bytes.extend(common::encode(&args));
        }
        raw.send(&bytes);
        let replies = commands.iter().map(|_| raw.read()).collect();
        let _ = sender.send(replies);
    });
    receiver
}

fn assert_still_blocked(receiver: &mpsc::Receiver<Vec<Reply>>, what: &str) {
    if let Ok(replies) = receiver.recv_timeout(Duration::from_millis(300)) {
        panic!("{what} was not held by the pause: {replies:?}");
    }
}

fn released(receiver: &mpsc::Receiver<Vec<Reply>>, what: &str) -> Vec<Reply> {
    receiver
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} was not released"))
}

fn wait_blocked(node: &Node, count: usize) {
    wait_until(
        &format!("{count} clients held by the pause"),
        Duration::from_secs(5),
        || info_field(node, "clients", "blocked_clients") == count.to_string(),
    );
}

#[test]
fn write_pause_holds_writes_and_serves_reads_until_unpause() {
    let node = start("pause-write");
    let mut control = node.raw();
    assert_eq!(control.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(
        control.cmd(&["CLIENT", "PAUSE", "20000", "WRITE"]),
        Reply::ok()
    );
    let set = send_async(node.port, &[&["SET", "k", "v2"]]);
    let publish = send_async(node.port, &[&["PUBLISH", "news", "hello"]]);
    assert_still_blocked(&set, "SET");
    assert_still_blocked(&publish, "PUBLISH");
    wait_blocked(&node, 2);
    // reads (and a transaction of reads) are served during a WRITE pause
    let mut reader = node.raw();
    assert_eq!(reader.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(reader.cmd(&["EXISTS", "k"]), Reply::Int(1));
    assert_eq!(reader.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(reader.cmd(&["GET", "k"]), Reply::Simple("QUEUED".into()));
    assert_eq!(reader.cmd(&["EXEC"]), Reply::Array(vec![Reply::bulk("v")]));
    assert_eq!(
        info_field(&node, "clients", "paused_reason"),
        "client_pause"
    );
    assert_eq!(info_field(&node, "clients", "paused_actions"), "write");
    let remaining: u64 = info_field(&node, "clients", "paused_timeout_milliseconds")
        .parse()
        .expect("remaining pause");
    assert!(remaining > 10_000 && remaining <= 20_000, "{remaining}");
    assert_eq!(control.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(released(&set, "SET"), vec![Reply::ok()]);
    assert_eq!(released(&publish, "PUBLISH"), vec![Reply::Int(0)]);
    assert_eq!(reader.cmd(&["GET", "k"]), Reply::bulk("v2"));
    assert_eq!(info_field(&node, "clients", "paused_actions"), "none");
    assert_eq!(info_field(&node, "clients", "blocked_clients"), "0");
}

#[test]
fn all_pause_holds_every_command_but_unpause() {
    let node = start("pause-all");
    let mut control = node.raw();
    assert_eq!(control.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(control.cmd(&["CLIENT", "PAUSE", "20000"]), Reply::ok());
    let get = send_async(node.port, &[&["GET", "k"]]);
    let ping = send_async(node.port, &[&["PING"]]);
    // pipelined commands stay in order behind the held one
    let pipeline = send_async(node.port, &[&["SET", "k2", "v2"], &["GET", "k2"]]);
    assert_still_blocked(&get, "GET");
    assert_still_blocked(&ping, "PING");
    assert_still_blocked(&pipeline, "pipeline");
    // the pause controls and the operator's admin commands still run
    assert_eq!(control.cmd(&["MERIDIAN.TOPOLOGY", "EPOCH"]), Reply::Int(0));
    assert_eq!(control.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(released(&get, "GET")[0], Reply::bulk("v"));
    assert_eq!(released(&ping, "PING"), vec![Reply::Simple("PONG".into())]);
    assert_eq!(
        released(&pipeline, "pipeline"),
        vec![Reply::ok(), Reply::bulk("v2")]
    );
}

#[test]
fn the_timeout_ends_the_pause() {
    let node = start("pause-timeout");
    let mut control = node.raw();
    assert_eq!(control.cmd(&["CLIENT", "PAUSE", "700", "ALL"]), Reply::ok());
    let began = Instant::now();
    let set = send_async(node.port, &[&["SET", "k", "v"]]);
    assert_eq!(released(&set, "SET"), vec![Reply::ok()]);
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(4),
        "held for {waited:?}"
    );
    assert_eq!(info_field(&node, "clients", "paused_actions"), "none");
    // a WRITE pause shorter than an earlier ALL one does not shorten it, but
    // the latest mode applies (Redis 7.2): reads run, writes wait
    assert_eq!(
        control.cmd(&["CLIENT", "PAUSE", "1500", "ALL"]),
        Reply::ok()
    );
    assert_eq!(
        control.cmd(&["CLIENT", "PAUSE", "10", "WRITE"]),
        Reply::ok()
    );
    assert_eq!(node.raw().cmd(&["GET", "k"]), Reply::bulk("v"));
    let began = Instant::now();
    let set = send_async(node.port, &[&["SET", "k", "v2"]]);
    assert_eq!(released(&set, "SET"), vec![Reply::ok()]);
    assert!(began.elapsed() >= Duration::from_millis(1000));
}

#[test]
fn exec_with_writes_waits_as_a_whole() {
    let node = start("pause-exec");
    let mut control = node.raw();
    let mut transaction = node.raw();
    assert_eq!(transaction.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        transaction.cmd(&["SET", "a", "1"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        transaction.cmd(&["INCR", "b"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        control.cmd(&["CLIENT", "PAUSE", "20000", "WRITE"]),
        Reply::ok()
    );
    let (sender, exec) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(vec![transaction.cmd(&["EXEC"])]);
    });
    assert_still_blocked(&exec, "EXEC");
    assert_eq!(control.cmd(&["GET", "a"]), Reply::Nil);
    // queueing a write inside MULTI waits too, like Redis
    let queued = send_async(node.port, &[&["MULTI"], &["SET", "c", "1"]]);
    assert_still_blocked(&queued, "queued SET");
    assert_eq!(control.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(
        released(&exec, "EXEC"),
        vec![Reply::Array(vec![Reply::ok(), Reply::Int(1)])]
    );
    assert_eq!(
        released(&queued, "queued SET"),
        vec![Reply::ok(), Reply::Simple("QUEUED".into())]
    );
    assert_eq!(control.cmd(&["GET", "a"]), Reply::bulk("1"));
}

#[test]
fn bad_arguments_are_refused() {
    let node = start("pause-args");
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&["CLIENT", "PAUSE", "-1"]),
        Reply::err("ERR timeout is negative")
    );
    assert_eq!(
        raw.cmd(&["CLIENT", "PAUSE", "soon"]),
        Reply::err("ERR timeout is not an integer or out of range")
    );
    assert_eq!(
        raw.cmd(&["CLIENT", "PAUSE", "1.5", "WRITE"]),
        Reply::err("ERR timeout is not an integer or out of range")
    );
    assert_eq!(
        raw.cmd(&["CLIENT", "PAUSE", "100", "READS"]),
        Reply::err("ERR CLIENT PAUSE mode must be WRITE or ALL")
    );
    assert_eq!(
        raw.cmd(&["CLIENT", "PAUSE"]),
        Reply::err("ERR wrong number of arguments for 'client|pause' command")
    );
    assert_eq!(
        raw.cmd(&["CLIENT", "PAUSE", "100", "WRITE", "extra"]),
        Reply::err("ERR wrong number of arguments for 'client|pause' command")
    );
    assert_eq!(
        raw.cmd(&["CLIENT", "UNPAUSE", "now"]),
        Reply::err("ERR wrong number of arguments for 'client|unpause' command")
    );
    // nothing was paused by the refused calls
    assert_eq!(raw.cmd(&["SET", "k", "v"]), Reply::ok());
    // a zero timeout pauses nothing; UNPAUSE without a pause is fine
    assert_eq!(raw.cmd(&["CLIENT", "PAUSE", "0", "WRITE"]), Reply::ok());
    assert_eq!(raw.cmd(&["SET", "k", "v2"]), Reply::ok());
    assert_eq!(raw.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
}

fn push(nodes: &[&Node], json: &str) {
    for node in nodes {
        assert_eq!(
            node.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", json]),
            Reply::ok()
        );
    }
}

fn primary_offset(node: &Node) -> u64 {
    info_field(node, "replication", "master_repl_offset")
        .parse()
        .expect("master_repl_offset")
}

fn replica_offset(node: &Node) -> u64 {
    info_field(node, "replication", "slave_repl_offset")
        .parse()
        .unwrap_or(0)
}

/// A primary with one replica attached by a topology push (epoch 1).
fn attached_pair(primary_id: &str, replica_id: &str) -> (Node, Node) {
    let primary = start(primary_id);
    let replica = start(replica_id);
    push(
        &[&primary, &replica],
        &shard_map(1, (primary_id, &primary), &[(replica_id, &replica)]),
    );
    wait_until("replica link up", Duration::from_secs(20), || {
        info_field(&replica, "replication", "master_link_status") == "up"
    });
    (primary, replica)
}

#[test]
fn replication_offset_stands_still_while_keys_expire_during_a_pause() {
    let (primary, replica) = attached_pair("expiry-0", "expiry-1");
    let mut control = primary.raw();
    assert_eq!(control.cmd(&["SET", "keep", "1"]), Reply::ok());
    let mut pipeline = Vec::new();
    for index in 0..200 {
        let key = format!("short:{index}");
        // half expire before the pause starts, half during it
        let ttl = if index % 2 == 0 { "10" } else { "300" };
        pipeline.extend(common::encode(&[
            b"SET",
            key.as_bytes(),
            b"v",
            b"PX",
            ttl.as_bytes(),
        ]));
    }
    pipeline.extend(common::encode(&[b"CLIENT", b"PAUSE", b"5000", b"WRITE"]));
    control.send(&pipeline);
    for _ in 0..200 {
        assert_eq!(control.read(), Reply::ok());
    }
    assert_eq!(control.read(), Reply::ok());
    let frozen = primary_offset(&primary);
    wait_until("replica caught up", Duration::from_secs(5), || {
        replica_offset(&replica) == frozen
    });
    // every short key expires now, while active expiry keeps running
    std::thread::sleep(Duration::from_millis(600));
    // lazy expiry serves expired keys as missing without a DEL
    assert_eq!(control.cmd(&["GET", "short:1"]), Reply::Nil);
    assert_eq!(control.cmd(&["EXISTS", "short:3"]), Reply::Int(0));
    assert_eq!(control.cmd(&["GET", "keep"]), Reply::bulk("1"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(primary_offset(&primary), frozen);
    assert_eq!(replica_offset(&replica), frozen);
    // a replica may be paused too
    assert_eq!(
        replica.raw().cmd(&["CLIENT", "PAUSE", "100", "WRITE"]),
        Reply::ok()
    );
    // once the pause ends the held deletions run and reach the replica
    assert_eq!(control.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    wait_until(
        "held expirations propagated",
        Duration::from_secs(10),
        || primary_offset(&primary) > frozen && replica.raw().cmd(&["DBSIZE"]) == Reply::Int(1),
    );
}

#[test]
fn a_write_held_during_a_handover_is_redirected_to_the_new_primary() {
    let (old, new) = attached_pair("handover-0", "handover-1");
    let mut operator = old.raw();
    assert_eq!(operator.cmd(&["SET", "k", "before"]), Reply::ok());
    // a transaction queued before the pause
    let mut transaction = old.raw();
    assert_eq!(transaction.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        transaction.cmd(&["SET", "k", "from-exec"]),
        Reply::Simple("QUEUED".into())
    );
    // the operator's graceful handover: pause writes, let the replica catch up
    assert_eq!(
        operator.cmd(&["CLIENT", "PAUSE", "20000", "WRITE"]),
        Reply::ok()
    );
    let held = send_async(old.port, &[&["SET", "k", "held"]]);
    let (sender, exec) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(vec![transaction.cmd(&["EXEC"])]);
    });
    assert_still_blocked(&held, "SET");
    assert_still_blocked(&exec, "EXEC");
    wait_blocked(&old, 2);
    // reads are still served by the old primary
    assert_eq!(old.raw().cmd(&["GET", "k"]), Reply::bulk("before"));
    let frozen = primary_offset(&old);
    wait_until("replica caught up", Duration::from_secs(5), || {
        replica_offset(&new) == frozen
    });
    // the new map makes the replica primary; the pause does not hold it
    push(
        &[&new, &old],
        &shard_map(2, ("handover-1", &new), &[("handover-0", &old)]),
    );
    assert_eq!(info_field(&new, "replication", "role"), "master");
    assert_eq!(operator.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    let moved = Reply::err(&format!("MOVED {} 127.0.0.1:{}", key_slot(b"k"), new.port));
    assert_eq!(released(&held, "SET"), vec![moved.clone()]);
    assert_eq!(released(&exec, "EXEC"), vec![moved]);
    // nothing of the held writes ran anywhere
    assert_eq!(new.raw().cmd(&["GET", "k"]), Reply::bulk("before"));
    assert_eq!(new.raw().cmd(&["SET", "k", "after"]), Reply::ok());
}
