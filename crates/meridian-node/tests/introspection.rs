//! OBJECT and MEMORY USAGE: the encodings redis-server reports for values as they
//! are, its help texts and errors (compared with redis-server itself), and memory
//! figures that follow the value's size; neither command counts as an access.

mod common;

use common::redis_server::Pair;
use common::{Node, Reply};

const SAME_AS_REDIS: &[&[&str]] = &[
    &["SET", "int", "12345"],
    &["SET", "neg", "-7"],
    &["SET", "lead", "0123"],
    &["SET", "short", "hello"],
    &[
        "SET",
        "edge",
        "12345678901234567890123456789012345678901234",
    ],
    &[
        "SET",
        "long",
        "123456789012345678901234567890123456789012345",
    ],
    &["OBJECT", "ENCODING", "int"],
    &["OBJECT", "ENCODING", "neg"],
    &["OBJECT", "ENCODING", "lead"],
    &["OBJECT", "ENCODING", "short"],
    &["OBJECT", "ENCODING", "edge"],
    &["OBJECT", "ENCODING", "long"],
    &["OBJECT", "encoding", "nosuch"],
    &["RPUSH", "list", "a", "b"],
    &["OBJECT", "ENCODING", "list"],
    &["SADD", "ints", "1", "2", "3"],
    &["OBJECT", "ENCODING", "ints"],
    &["SADD", "words", "1", "a"],
    &["OBJECT", "ENCODING", "words"],
    &["HSET", "small", "f", "v"],
    &["OBJECT", "ENCODING", "small"],
    &[
        "HSET",
        "wide",
        "f",
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    ],
    &["OBJECT", "ENCODING", "wide"],
    &["OBJECT", "HELP"],
    &["OBJECT", "FREQ", "int"],
    &["OBJECT", "BOGUS", "int"],
    &["OBJECT", "ENCODING"],
    &["OBJECT", "ENCODING", "a", "b"],
    &["OBJECT", "HELP", "x"],
    &["OBJECT"],
    &["MEMORY", "USAGE", "nosuch"],
    &["MEMORY", "USAGE", "int", "SAMPLES"],
    &["MEMORY", "USAGE", "int", "SAMPLES", "x"],
    &["MEMORY", "BOGUS"],
    &["MEMORY", "USAGE"],
    &["MEMORY"],
    &["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"],
    &["OBJECT", "IDLETIME", "int"],
    &["OBJECT", "FREQ", "nosuch"],
];

#[test]
fn object_and_memory_answer_like_redis_server() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in SAME_AS_REDIS {
            pair.same(args);
        }
    }
}

#[test]
fn idle_time_frequency_and_memory_follow_the_key() {
    let node = Node::start();
    let mut raw = node.raw();
    raw.cmd(&["SET", "k", "v"]);
    assert_eq!(raw.cmd(&["OBJECT", "IDLETIME", "k"]), Reply::Int(0));
    assert_eq!(raw.cmd(&["OBJECT", "REFCOUNT", "k"]), Reply::Int(1));
    let usage = |raw: &mut common::Raw, key: &str| match raw.cmd(&["MEMORY", "USAGE", key]) {
        Reply::Int(bytes) => bytes,
        other => panic!("{other:?}"),
    };
    let small = usage(&mut raw, "k");
    raw.cmd(&["SET", "big", &"x".repeat(10_000)]);
    let big = usage(&mut raw, "big");
    assert!(
        small > 0 && (10_000..11_000).contains(&big),
        "{small} {big}"
    );
    raw.cmd(&["RPUSH", "list", &"y".repeat(1000), &"y".repeat(1000)]);
    assert!(usage(&mut raw, "list") >= 2000);
    // LFU: a key read often counts higher than one written once
    raw.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"]);
    raw.cmd(&["SET", "hot", "v"]);
    raw.cmd(&["SET", "cold", "v"]);
    for _ in 0..200 {
        raw.cmd(&["GET", "hot"]);
    }
    let frequency = |raw: &mut common::Raw, key: &str| match raw.cmd(&["OBJECT", "FREQ", key]) {
        Reply::Int(count) => count,
        other => panic!("{other:?}"),
    };
    let (hot, cold) = (frequency(&mut raw, "hot"), frequency(&mut raw, "cold"));
    assert!(hot > cold, "hot {hot}, cold {cold}");
    // OBJECT is no access: asking does not raise the count
    for _ in 0..200 {
        frequency(&mut raw, "cold");
    }
    assert_eq!(frequency(&mut raw, "cold"), cold);
}
