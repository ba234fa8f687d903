//! Lists against redis-server itself: the same commands sent to both, every reply compared
//! byte for byte (RESP2 and RESP3), first the commands' edge cases, then random command
//! sequences over a few keys (proptest: a failure is shrunk to a shortest sequence and
//! printed with its seed; `MERIDIAN_DIFF_SEED` replays one).

mod common;

use common::redis_server::{Pair, compare_random_sequences};
use common::{Node, Raw, Reply};
use proptest::prelude::*;

const EDGE_CASES: &[&[&str]] = &[
    &["RPUSH", "l", "a", "b", "c", "b", "a", "b"],
    &["LPUSH", "l", "z"],
    &["LPUSHX", "nosuch", "a"],
    &["RPUSHX", "nosuch", "a"],
    &["RPUSHX", "l", "y"],
    &["LLEN", "l"],
    &["LLEN", "nosuch"],
    &["LRANGE", "l", "0", "-1"],
    &["LRANGE", "l", "-100", "100"],
    &["LRANGE", "l", "5", "2"],
    &["LRANGE", "l", "x", "2"],
    &["LRANGE", "nosuch", "0", "-1"],
    &["LINDEX", "l", "0"],
    &["LINDEX", "l", "-1"],
    &["LINDEX", "l", "100"],
    &["LINDEX", "l", "x"],
    &["LINDEX", "nosuch", "x"],
    &["LSET", "l", "1", "B"],
    &["LSET", "l", "-1", "Y"],
    &["LSET", "l", "100", "x"],
    &["LSET", "nosuch", "0", "x"],
    &["LSET", "l", "x", "x"],
    &["LINSERT", "l", "BEFORE", "b", "new"],
    &["LINSERT", "l", "after", "a", "new2"],
    &["LINSERT", "l", "AFTER", "nosuch", "x"],
    &["LINSERT", "l", "MIDDLE", "a", "x"],
    &["LINSERT", "nosuch", "BEFORE", "a", "x"],
    &["LPOS", "l", "b"],
    &["LPOS", "l", "b", "RANK", "2"],
    &["LPOS", "l", "b", "RANK", "-1"],
    &["LPOS", "l", "b", "RANK", "-2", "COUNT", "0"],
    &["LPOS", "l", "b", "COUNT", "2"],
    &["LPOS", "l", "b", "COUNT", "0", "MAXLEN", "3"],
    &["LPOS", "l", "b", "RANK", "0"],
    &["LPOS", "l", "b", "COUNT", "-1"],
    &["LPOS", "l", "b", "COUNT", "x"],
    &["LPOS", "l", "b", "MAXLEN", "-1"],
    &["LPOS", "l", "b", "RANK"],
    &["LPOS", "l", "b", "BOGUS", "1"],
    &["LPOS", "l", "nosuch"],
    &["LPOS", "nosuch", "a"],
    &["LPOS", "nosuch", "a", "COUNT", "1"],
    &["LREM", "l", "1", "b"],
    &["LREM", "l", "-1", "b"],
    &["LREM", "l", "0", "a"],
    &["LREM", "l", "x", "a"],
    &["LREM", "nosuch", "0", "a"],
    &["LRANGE", "l", "0", "-1"],
    &["LPOP", "l"],
    &["RPOP", "l"],
    &["LPOP", "l", "2"],
    &["RPOP", "l", "0"],
    &["LPOP", "l", "-1"],
    &["LPOP", "l", "x"],
    &["LPOP", "l", "1", "2"],
    &["LPOP", "nosuch"],
    &["LPOP", "nosuch", "2"],
    &["RPOP", "nosuch", "0"],
    &["RPUSH", "src", "1", "2", "3"],
    &["LMOVE", "src", "dst", "LEFT", "RIGHT"],
    &["LMOVE", "src", "dst", "right", "left"],
    &["LMOVE", "src", "src", "LEFT", "RIGHT"],
    &["LMOVE", "src", "dst", "UP", "LEFT"],
    &["LMOVE", "nosuch", "dst", "LEFT", "LEFT"],
    &["RPOPLPUSH", "src", "dst"],
    &["RPOPLPUSH", "src", "dst"],
    &["RPOPLPUSH", "src", "dst"],
    &["EXISTS", "src"],
    &["LRANGE", "dst", "0", "-1"],
    &["SET", "str", "v"],
    &["LPUSH", "str", "a"],
    &["LRANGE", "str", "0", "1"],
    &["LPOP", "str"],
    &["LMOVE", "dst", "str", "LEFT", "LEFT"],
    &["LMOVE", "str", "dst", "LEFT", "LEFT"],
    &["RPUSH", "m1", "a", "b", "c"],
    &["LMPOP", "2", "nosuch", "m1", "LEFT"],
    &["LMPOP", "2", "nosuch", "m1", "RIGHT", "COUNT", "10"],
    &["LMPOP", "1", "m1", "LEFT"],
    &["LMPOP", "0", "m1", "LEFT"],
    &["LMPOP", "x", "m1", "LEFT"],
    &["LMPOP", "5", "m1", "LEFT"],
    &["LMPOP", "1", "m1", "UP"],
    &["LMPOP", "1", "m1", "LEFT", "COUNT", "0"],
    &["LMPOP", "1", "m1", "LEFT", "COUNT", "1", "COUNT", "1"],
    &["LMPOP", "2", "str", "m1", "LEFT"],
    &["LTRIM", "dst", "1", "-1"],
    &["LTRIM", "dst", "5", "1"],
    &["EXISTS", "dst"],
    &["LTRIM", "nosuch", "0", "1"],
    &["LTRIM", "str", "0", "1"],
    &["RPUSH", "t", "a"],
    &["TYPE", "t"],
];

#[test]
fn list_commands_answer_like_redis_server_in_resp2_and_resp3() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in EDGE_CASES {
            pair.same(args);
        }
        // Redis 7.0 negates this rank into an overflow; 7.2 and Valkey refuse it, as we do
        let ours = pair.ours(&["LPOS", "l", "b", "RANK", "-9223372036854775808"]);
        assert_eq!(
            ours,
            "-ERR value is out of range, must be between -9223372036854775807 and 9223372036854775807\r\n"
        );
    }
}

/// One random command over the keys `a`, `b` (lists, mostly) and `s` (a string).
fn command() -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![4 => Just("a"), 3 => Just("b"), 1 => Just("s")];
    let item = prop_oneof![
        Just("x"),
        Just("y"),
        Just("z"),
        Just(""),
        Just("long-element-42")
    ];
    let items = proptest::collection::vec(item.clone(), 1..4);
    let index = prop_oneof![-4i64..5, Just(i64::MAX), Just(i64::MIN)];
    let end = prop_oneof![Just("LEFT"), Just("RIGHT")];
    let count = prop_oneof![Just(None), (-1i64..4).prop_map(Some)];
    let push = prop_oneof![Just("LPUSH"), Just("RPUSH"), Just("LPUSHX"), Just("RPUSHX")];
    let pop = prop_oneof![Just("LPOP"), Just("RPOP")];
    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|part| part.to_string()).collect()
    }
    prop_oneof![
        4 => (push, key.clone(), items).prop_map(|(command, key, items)| {
            let mut args = strings(&[command, key]);
            args.extend(items.iter().map(|item| item.to_string()));
            args
        }),
        3 => (pop, key.clone(), count.clone()).prop_map(|(command, key, count)| {
            let mut args = strings(&[command, key]);
            args.extend(count.map(|count| count.to_string()));
            args
        }),
        1 => key.clone().prop_map(|key| strings(&["LLEN", key])),
        2 => (key.clone(), index.clone(), index.clone()).prop_map(|(key, start, stop)| {
            vec!["LRANGE".into(), key.into(), start.to_string(), stop.to_string()]
        }),
        1 => (key.clone(), index.clone())
            .prop_map(|(key, at)| vec!["LINDEX".into(), key.into(), at.to_string()]),
        1 => (key.clone(), index.clone(), item.clone()).prop_map(|(key, at, item)| {
            vec!["LSET".into(), key.into(), at.to_string(), item.into()]
        }),
        1 => (key.clone(), index.clone(), index.clone()).prop_map(|(key, start, stop)| {
            vec!["LTRIM".into(), key.into(), start.to_string(), stop.to_string()]
        }),
        1 => (key.clone(), -3i64..4, item.clone()).prop_map(|(key, count, item)| {
            vec!["LREM".into(), key.into(), count.to_string(), item.into()]
        }),
        1 => (key.clone(), prop_oneof![Just("BEFORE"), Just("AFTER")], item.clone(), item.clone())
            .prop_map(|(key, where_, pivot, item)| strings(&["LINSERT", key, where_, pivot, item])),
        1 => (key.clone(), item.clone(), count.clone(), count.clone(), count.clone()).prop_map(
            |(key, item, rank, count, maxlen)| {
                let mut args = strings(&["LPOS", key, item]);
                for (option, value) in [("RANK", rank), ("COUNT", count), ("MAXLEN", maxlen)] {
                    if let Some(value) = value {
                        args.push(option.into());
                        args.push(value.to_string());
                    }
                }
                args
            }
        ),
        2 => (key.clone(), key.clone(), end.clone(), end.clone())
            .prop_map(|(source, target, from, to)| strings(&["LMOVE", source, target, from, to])),
        1 => (key.clone(), key.clone())
            .prop_map(|(source, target)| strings(&["RPOPLPUSH", source, target])),
        1 => (proptest::collection::vec(key.clone(), 1..3), end, count).prop_map(
            |(keys, end, count)| {
                let mut args = vec!["LMPOP".to_string(), keys.len().to_string()];
                args.extend(keys.iter().map(|key| key.to_string()));
                args.push(end.into());
                if let Some(count) = count {
                    args.push("COUNT".into());
                    args.push(count.to_string());
                }
                args
            }
        ),
        // blocking forms: empty keys wait 10 ms on both servers and answer the timeout
        1 => (prop_oneof![Just("BLPOP"), Just("BRPOP")], proptest::collection::vec(key.clone(), 1..3))
            .prop_map(|(command, keys)| {
                let mut args = strings(&[command]);
                args.extend(keys.iter().map(|key| key.to_string()));
                args.push("0.01".into());
                args
            }),
        1 => (key.clone(), key.clone(), prop_oneof![Just("LEFT"), Just("RIGHT")])
            .prop_map(|(source, target, end)| strings(&["BLMOVE", source, target, end, "LEFT", "0.01"])),
        1 => Just(strings(&["SET", "s", "string"])),
        1 => key.clone().prop_map(|key| strings(&["DEL", key])),
        1 => key.prop_map(|key| strings(&["TYPE", key])),
    ]
}

#[test]
fn random_list_command_sequences_answer_like_redis_server() {
    compare_random_sequences(proptest::collection::vec(command(), 1..40), 2, false);
}

/// The blocking commands' answers when they need not block, their errors, their timeout
/// and their non-blocking form inside MULTI, against redis-server.
#[test]
fn blocking_commands_answer_like_redis_server_when_they_need_not_wait() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in [
            &["RPUSH", "q", "a", "b", "c"][..],
            &["BLPOP", "empty", "q", "0"],
            &["BRPOP", "q", "0.5"],
            &["BLMOVE", "q", "dst", "LEFT", "RIGHT", "0"],
            &["BRPOPLPUSH", "dst", "q", "0"],
            &["BLMPOP", "0", "2", "empty", "q", "RIGHT", "COUNT", "5"],
            &["BLPOP", "empty", "0.01"],
            &["BRPOP", "empty", "0.01"],
            &["BLMOVE", "empty", "dst", "LEFT", "LEFT", "0.01"],
            &["BRPOPLPUSH", "empty", "dst", "0.01"],
            &["BLMPOP", "0.01", "1", "empty", "LEFT"],
            &["BLPOP", "empty", "-1"],
            &["BLPOP", "empty", "abc"],
            &["BLMOVE", "empty", "dst", "UP", "LEFT", "0"],
            &["BLMPOP", "0", "0", "empty", "LEFT"],
            &["BLMPOP", "x", "1", "empty", "LEFT"],
            &["BLMPOP", "0", "1", "empty", "LEFT", "COUNT", "0"],
            &["SET", "str", "v"],
            &["BLPOP", "empty", "str", "0"],
            &["BLMOVE", "str", "dst", "LEFT", "LEFT", "0"],
            &["MULTI"],
            &["BLPOP", "empty", "0"],
            &["BLMOVE", "empty", "dst", "LEFT", "LEFT", "0"],
            &["BLMPOP", "0", "1", "empty", "LEFT"],
            &["EXEC"],
        ] {
            pair.same(args);
        }
        // Redis 7.0 casts an infinite or huge timeout into a negative one or waits
        // forever; 7.2 and Valkey refuse a deadline past the i64 milliseconds, as we do
        for huge in ["inf", "1e30", "9223371000000000"] {
            let ours = pair.ours(&["BLPOP", "empty", huge]);
            assert_eq!(ours, "-ERR timeout is out of range\r\n", "{huge}");
        }
    }
}

/// A client that sent a blocking command, without reading its answer yet.
fn block(node: &Node, args: &[&str]) -> Raw {
    let mut raw = node.raw();
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    raw.send(&common::encode(&args));
    raw
}

fn blocked_clients(node: &Node) -> usize {
    common::info_field(node, "clients", "blocked_clients")
        .parse()
        .expect("blocked_clients")
}

fn wait_blocked(node: &Node, count: usize) {
    common::node_process::wait_until(
        &format!("{count} blocked clients"),
        std::time::Duration::from_secs(10),
        || blocked_clients(node) == count,
    );
}

fn key_and_item(key: &str, item: &str) -> common::Reply {
    common::Reply::Array(vec![common::Reply::bulk(key), common::Reply::bulk(item)])
}

#[test]
fn blocked_clients_are_served_in_the_order_they_blocked() {
    let node = Node::start();
    let mut clients = Vec::new();
    for blocked in 1..=3 {
        clients.push(block(&node, &["BLPOP", "nothing", "queue", "0"]));
        wait_blocked(&node, blocked);
    }
    let mut pusher = node.raw();
    assert_eq!(
        pusher.cmd(&["RPUSH", "queue", "first", "second"]),
        common::Reply::Int(2)
    );
    assert_eq!(clients[0].read(), key_and_item("queue", "first"));
    assert_eq!(clients[1].read(), key_and_item("queue", "second"));
    wait_blocked(&node, 1);
    assert_eq!(pusher.cmd(&["LLEN", "queue"]), common::Reply::Int(0));
    // a push to another of its keys serves the last one; LPUSH's last element first
    assert_eq!(
        pusher.cmd(&["LPUSH", "nothing", "x", "y"]),
        common::Reply::Int(2)
    );
    assert_eq!(clients[2].read(), key_and_item("nothing", "y"));
    wait_blocked(&node, 0);
    assert_eq!(
        pusher.cmd(&["LRANGE", "nothing", "0", "-1"]),
        common::Reply::Array(vec![common::Reply::bulk("x")])
    );

    // BLMOVE: served by a push, the element lands in the destination
    let mut mover = block(&node, &["BLMOVE", "jobs", "working", "LEFT", "RIGHT", "0"]);
    wait_blocked(&node, 1);
    pusher.cmd(&["RPUSH", "jobs", "job-1"]);
    assert_eq!(mover.read(), common::Reply::bulk("job-1"));
    assert_eq!(
        pusher.cmd(&["LRANGE", "working", "0", "-1"]),
        common::Reply::Array(vec![common::Reply::bulk("job-1")])
    );
    assert_eq!(pusher.cmd(&["EXISTS", "jobs"]), common::Reply::Int(0));

    // BLMPOP takes up to COUNT of what arrives
    let mut multi = block(&node, &["BLMPOP", "0", "1", "batch", "LEFT", "COUNT", "2"]);
    wait_blocked(&node, 1);
    pusher.cmd(&["RPUSH", "batch", "1", "2", "3"]);
    assert_eq!(
        multi.read(),
        common::Reply::Array(vec![
            common::Reply::bulk("batch"),
            common::Reply::Array(vec![common::Reply::bulk("1"), common::Reply::bulk("2")]),
        ])
    );
}

#[test]
fn a_blocked_client_times_out_and_one_that_left_takes_nothing() {
    let node = Node::start();
    let started = std::time::Instant::now();
    let mut waiting = block(&node, &["BLPOP", "q", "0.3"]);
    assert_eq!(waiting.read(), common::Reply::Nil);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "answered after {waited:?}"
    );
    wait_blocked(&node, 0);

    // a client gone while blocked is not served: the element stays for the next reader
    let gone = block(&node, &["BLPOP", "q", "0"]);
    wait_blocked(&node, 1);
    drop(gone);
    wait_blocked(&node, 0);
    let mut pusher = node.raw();
    pusher.cmd(&["RPUSH", "q", "kept"]);
    assert_eq!(pusher.cmd(&["LLEN", "q"]), common::Reply::Int(1));

    // commands a blocked client pipelined behind the blocking one run after it
    let mut pipelined = node.raw();
    let mut batch = common::encode(&[b"BLPOP", b"later", b"0"]);
    batch.extend(common::encode(&[b"PING"]));
    pipelined.send(&batch);
    wait_blocked(&node, 1);
    pusher.cmd(&["RPUSH", "later", "v"]);
    assert_eq!(pipelined.read(), key_and_item("later", "v"));
    assert_eq!(pipelined.read(), common::Reply::Simple("PONG".into()));
}

/// A client blocked on a key whose slot the node no longer serves after a topology
/// change is answered with MOVED to the new owner instead of waiting on.
#[test]
fn a_topology_change_answers_a_blocked_client_with_moved() {
    let a = Node::start_named("node-a", 16, &[]);
    let b = Node::start_named("node-b", 16, &[]);
    let set = |node: &Node, map: &str| {
        assert_eq!(
            node.raw().cmd(&["MERIDIAN.TOPOLOGY", "SET", map]),
            common::Reply::ok()
        );
    };
    set(&a, &common::shard_map(1, ("node-a", &a), &[]));
    let mut waiting = block(&a, &["BLPOP", "queue", "0"]);
    wait_blocked(&a, 1);
    let moved = common::shard_map(2, ("node-b", &b), &[]);
    set(&b, &moved);
    set(&a, &moved);
    let common::Reply::Error(error) = waiting.read() else {
        panic!("a MOVED error")
    };
    assert!(
        error.starts_with("MOVED ") && error.ends_with(&format!("127.0.0.1:{}", b.port)),
        "{error}"
    );
    wait_blocked(&a, 0);
}

/// CLIENT UNBLOCK ends another client's wait: as a timeout (a null array) or with
/// Redis's UNBLOCKED error; a client that is not blocked is left alone (0).
#[test]
fn client_unblock_ends_a_wait() {
    let node = Node::start();
    let mut admin = node.raw();
    let mut waiting = node.raw();
    let Reply::Int(id) = waiting.cmd(&["CLIENT", "ID"]) else {
        panic!("client id")
    };
    let id = id.to_string();
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id]), Reply::Int(0));
    for (mode, expected) in [
        ("TIMEOUT", Reply::Nil),
        (
            "ERROR",
            Reply::err("UNBLOCKED client unblocked via CLIENT UNBLOCK"),
        ),
    ] {
        waiting.send(&common::encode(&[b"BZPOPMIN", b"nothing", b"0"]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while admin.cmd(&["CLIENT", "UNBLOCK", &id, mode]) != Reply::Int(1) {
            assert!(std::time::Instant::now() < deadline, "never blocked");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(waiting.read(), expected, "{mode}");
        // the connection goes on
        assert_eq!(waiting.cmd(&["PING"]), Reply::Simple("PONG".into()));
    }
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", &id, "BOGUS"]),
        Reply::err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", "abc"]),
        Reply::err("ERR value is not an integer or out of range")
    );
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", "999999"]), Reply::Int(0));
}
