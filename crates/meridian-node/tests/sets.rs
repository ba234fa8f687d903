//! Sets against redis-server itself: the same commands sent to both, replies compared
//! (member order is each server's own, so arrays and sets are compared sorted), in RESP2
//! and RESP3; random command sequences with proptest shrinking (`MERIDIAN_DIFF_SEED`
//! replays one); SPOP and SRANDMEMBER, which choose at random, by their properties.

mod common;

use common::redis_server::{Pair, compare_random_sequences};
use common::{Node, Reply};
use proptest::prelude::*;

const EDGE_CASES: &[&[&str]] = &[
    &["SADD", "s", "a", "b", "c", "a"],
    &["SADD", "s", "d"],
    &["SADD", "t", "c", "d", "e"],
    &["SADD", "u", "x"],
    &["SCARD", "s"],
    &["SCARD", "nosuch"],
    &["SISMEMBER", "s", "a"],
    &["SISMEMBER", "s", "z"],
    &["SISMEMBER", "nosuch", "a"],
    &["SMISMEMBER", "s", "a", "z", "d"],
    &["SMISMEMBER", "nosuch", "a"],
    &["SMEMBERS", "s"],
    &["SMEMBERS", "nosuch"],
    &["SINTER", "s", "t"],
    &["SINTER", "s", "nosuch"],
    &["SINTER", "s"],
    &["SUNION", "s", "t", "nosuch"],
    &["SDIFF", "s", "t"],
    &["SDIFF", "nosuch", "s"],
    &["SDIFF", "s", "nosuch"],
    &["SINTERCARD", "2", "s", "t"],
    &["SINTERCARD", "2", "s", "t", "LIMIT", "1"],
    &["SINTERCARD", "2", "s", "t", "LIMIT", "0"],
    &["SINTERCARD", "1", "s", "LIMIT", "2"],
    &["SINTERCARD", "0", "s"],
    &["SINTERCARD", "x", "s"],
    &["SINTERCARD", "3", "s", "t"],
    &["SINTERCARD", "2", "s", "t", "LIMIT", "-1"],
    &["SINTERCARD", "2", "s", "t", "LIMIT"],
    &["SINTERCARD", "2", "s", "t", "BOGUS", "1"],
    &["SINTERCARD", "2", "s", "nosuch"],
    &["SINTERSTORE", "dst", "s", "t"],
    &["SMEMBERS", "dst"],
    &["SINTERSTORE", "dst", "s", "nosuch"],
    &["EXISTS", "dst"],
    &["SUNIONSTORE", "dst", "s", "t"],
    &["SMEMBERS", "dst"],
    &["SDIFFSTORE", "dst", "s", "t"],
    &["SMEMBERS", "dst"],
    &["SDIFFSTORE", "dst", "nosuch"],
    &["EXISTS", "dst"],
    &["SMOVE", "s", "u", "a"],
    &["SMOVE", "s", "u", "a"],
    &["SMOVE", "s", "s", "b"],
    &["SMOVE", "s", "s", "z"],
    &["SMOVE", "nosuch", "u", "a"],
    &["SMOVE", "u", "fresh", "x"],
    &["SMEMBERS", "u"],
    &["SMEMBERS", "fresh"],
    &["SREM", "s", "b", "z"],
    &["SREM", "nosuch", "a"],
    &["SET", "str", "v"],
    &["SADD", "str", "a"],
    &["SCARD", "str"],
    &["SINTER", "s", "str"],
    &["SINTER", "nosuch", "str"],
    &["SUNION", "str"],
    &["SDIFF", "nosuch", "str"],
    &["SMOVE", "str", "s", "a"],
    &["SMOVE", "s", "str", "c"],
    &["SMOVE", "nosuch", "str", "c"],
    &["SPOP", "nosuch"],
    &["SPOP", "nosuch", "2"],
    &["SPOP", "s", "0"],
    &["SPOP", "s", "-1"],
    &["SPOP", "s", "x"],
    &["SPOP", "s", "1", "2"],
    &["SPOP", "str"],
    &["SRANDMEMBER", "nosuch"],
    &["SRANDMEMBER", "nosuch", "3"],
    &["SRANDMEMBER", "nosuch", "-3"],
    &["SRANDMEMBER", "s", "0"],
    &["SRANDMEMBER", "s", "x"],
    &["SRANDMEMBER", "s", "1", "2"],
    &["SRANDMEMBER", "str"],
    &["SSCAN", "fresh", "0"],
    &["SSCAN", "nosuch", "0"],
    &["SSCAN", "fresh", "x"],
    &["SSCAN", "fresh", "0", "MATCH", "x*", "COUNT", "10"],
    &["SSCAN", "fresh", "0", "COUNT", "0"],
    &["SSCAN", "str", "0"],
    &["TYPE", "t"],
    // a STORE replaces a key of any type
    &["SINTERSTORE", "str", "s", "t"],
    &["TYPE", "str"],
];

#[test]
fn set_commands_answer_like_redis_server_in_resp2_and_resp3() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in EDGE_CASES {
            pair.same_unordered(args);
        }
    }
}

/// SPOP and SRANDMEMBER choose at random: checked by what any choice must satisfy.
#[test]
fn random_choices_keep_their_promises() {
    let node = Node::start();
    let mut raw = node.raw();
    let members: Vec<String> = (0..20).map(|index| format!("m{index}")).collect();
    let mut sadd = vec!["SADD", "s"];
    sadd.extend(members.iter().map(String::as_str));
    assert_eq!(raw.cmd(&sadd), Reply::Int(20));
    let items = |reply: Reply| -> Vec<String> {
        match reply {
            Reply::Array(items) | Reply::Set(items) => items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(bytes) => String::from_utf8(bytes).expect("utf-8"),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    };
    // positive counts: distinct members, at most the set's size
    let picked = items(raw.cmd(&["SRANDMEMBER", "s", "5"]));
    let distinct: std::collections::BTreeSet<&String> = picked.iter().collect();
    assert_eq!((picked.len(), distinct.len()), (5, 5));
    assert!(picked.iter().all(|member| members.contains(member)));
    assert_eq!(items(raw.cmd(&["SRANDMEMBER", "s", "50"])).len(), 20);
    // negative counts: that many, repeats allowed
    let repeated = items(raw.cmd(&["SRANDMEMBER", "s", "-50"]));
    assert_eq!(repeated.len(), 50);
    assert!(repeated.iter().all(|member| members.contains(member)));
    assert_eq!(raw.cmd(&["SCARD", "s"]), Reply::Int(20));
    // SPOP removes what it returns
    let popped = items(raw.cmd(&["SPOP", "s", "7"]));
    assert_eq!(popped.len(), 7);
    for member in &popped {
        assert_eq!(raw.cmd(&["SISMEMBER", "s", member]), Reply::Int(0));
    }
    let Reply::Bulk(one) = raw.cmd(&["SPOP", "s"]) else {
        panic!("one member")
    };
    assert!(members.contains(&String::from_utf8(one).expect("utf-8")));
    assert_eq!(raw.cmd(&["SCARD", "s"]), Reply::Int(12));
    // popping more than there is empties and deletes the key
    assert_eq!(items(raw.cmd(&["SPOP", "s", "100"])).len(), 12);
    assert_eq!(raw.cmd(&["EXISTS", "s"]), Reply::Int(0));

    // a repeated pick the node could not hold in memory is refused, not attempted (it
    // aborted the node before: HRANDFIELD built a vector of that many indexes)
    raw.cmd(&["SADD", "s", "x"]);
    raw.cmd(&["HSET", "h", "f", "v"]);
    for args in [
        &["SRANDMEMBER", "s", "-100000000000000"][..],
        &["SRANDMEMBER", "s", "-9223372036854775808"],
        &["HRANDFIELD", "h", "-100000000000000"],
        &["HRANDFIELD", "h", "-100000000000000", "WITHVALUES"],
    ] {
        assert_eq!(
            raw.cmd(args),
            Reply::err("ERR value is out of range"),
            "{args:?}"
        );
    }
    // the bound is 2^24 picks
    assert_eq!(
        raw.cmd(&["SRANDMEMBER", "s", "-16777217"]),
        Reply::err("ERR value is out of range")
    );
    assert_eq!(
        items(raw.cmd(&["SRANDMEMBER", "s", "-100000"])).len(),
        100_000
    );
    assert_eq!(raw.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

/// One random command over the keys `a`, `b`, `c` (sets, mostly) and `s` (a string);
/// SPOP and SRANDMEMBER are left out (their choices differ between servers).
fn command() -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![3 => Just("a"), 3 => Just("b"), 2 => Just("c"), 1 => Just("s")];
    let member = prop_oneof![Just("x"), Just("y"), Just("z"), Just(""), Just("w")];
    let members = proptest::collection::vec(member.clone(), 1..4);
    let keys = proptest::collection::vec(key.clone(), 1..4);
    fn with(parts: &[&str], rest: &[&str]) -> Vec<String> {
        parts
            .iter()
            .chain(rest)
            .map(|part| part.to_string())
            .collect()
    }
    prop_oneof![
        4 => (prop_oneof![Just("SADD"), Just("SREM"), Just("SMISMEMBER")], key.clone(), members)
            .prop_map(|(command, key, members)| with(&[command, key], &members)),
        1 => (prop_oneof![Just("SCARD"), Just("SMEMBERS"), Just("TYPE"), Just("DEL")], key.clone())
            .prop_map(|(command, key)| with(&[command, key], &[])),
        1 => (key.clone(), member.clone()).prop_map(|(key, member)| with(&["SISMEMBER", key, member], &[])),
        2 => (prop_oneof![Just("SINTER"), Just("SUNION"), Just("SDIFF")], keys.clone())
            .prop_map(|(command, keys)| with(&[command], &keys)),
        2 => (prop_oneof![Just("SINTERSTORE"), Just("SUNIONSTORE"), Just("SDIFFSTORE")], key.clone(), keys.clone())
            .prop_map(|(command, destination, keys)| with(&[command, destination], &keys)),
        1 => (keys, prop_oneof![Just(None), (0i64..3).prop_map(Some)]).prop_map(|(keys, limit)| {
            let mut args = vec!["SINTERCARD".to_string(), keys.len().to_string()];
            args.extend(keys.iter().map(|key| key.to_string()));
            if let Some(limit) = limit {
                args.push("LIMIT".into());
                args.push(limit.to_string());
            }
            args
        }),
        1 => (key.clone(), key.clone(), member).prop_map(|(source, target, member)| {
            with(&["SMOVE", source, target, member], &[])
        }),
        1 => Just(with(&["SET", "s", "string"], &[])),
    ]
}

#[test]
fn random_set_command_sequences_answer_like_redis_server() {
    compare_random_sequences(proptest::collection::vec(command(), 1..40), 3, true);
}
