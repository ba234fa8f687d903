//! HyperLogLog (PFADD, PFCOUNT, PFMERGE) against redis-server itself: the values are
//! Redis's own string format, so besides the replies the stored bytes are compared
//! (sparse runs, the promotion to dense, the cached-count header); edge cases by hand,
//! then random command sequences with proptest shrinking (`MERIDIAN_DIFF_SEED`).
//!
//! Deliberate differences: PFADD refuses to edit a corrupt sparse value (runs that
//! do not cover the 16384 registers) where redis-server edits what it finds before
//! the damage; and PFCOUNT of a single key does not write the computed
//! count back into the value (redis-server does, and propagates the PFCOUNT to keep
//! its replicas' bytes equal); so the sequences count single keys with a missing key
//! beside them (the union form, which caches nothing on either server).

mod common;

use common::redis_server::{Pair, compare_random_sequences, owned};
use common::{Node, Reply};
use proptest::prelude::*;

fn elements(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|index| format!("{prefix}{index}")).collect()
}

#[test]
fn hyperloglog_commands_answer_and_store_like_redis_server() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        let same = |pair: &mut Pair, args: &[&str]| {
            let (theirs, ours) = pair.both(args);
            assert_eq!(ours, theirs, "{args:?}");
        };
        for args in [
            &["PFADD", "h", "a", "b", "c"][..],
            &["PFADD", "h", "a"],
            &["PFADD", "h"],
            &["PFADD", "fresh"],
            &["GET", "fresh"],
            &["GET", "h"],
            &["PFCOUNT", "h", "nosuch"],
            &["PFCOUNT", "nosuch"],
            &["PFCOUNT", "nosuch", "other"],
            &[
                "PFADD", "h", "", "d", "e", "f", "g", "h", "i", "j", "k", "l",
            ],
            &["GET", "h"],
            &["PFMERGE", "m", "h", "fresh", "nosuch"],
            &["GET", "m"],
            &["PFMERGE", "m"],
            &["GET", "m"],
            &["PFMERGE", "empty"],
            &["GET", "empty"],
            &["PFCOUNT", "m", "h", "empty"],
            // not an HLL
            &["SET", "s", "plain"],
            &["PFADD", "s", "a"],
            &["PFCOUNT", "s"],
            &["PFCOUNT", "h", "s"],
            &["PFMERGE", "s", "h"],
            &["PFMERGE", "m", "s"],
            &["SET", "short", "HYLL"],
            &["PFCOUNT", "short", "h"],
            &["SET", "n", "12345"],
            &["PFADD", "n", "x"],
            &["LPUSH", "l", "a"],
            &["PFADD", "l", "a"],
            &["PFCOUNT", "l"],
            &["PFMERGE", "l", "h"],
            &["PFMERGE", "m", "l"],
            &["PFADD"],
            &["PFCOUNT"],
            &["PFMERGE"],
        ] {
            same(&mut pair, args);
        }
        // enough elements to outgrow the sparse encoding (3000 bytes): dense, 12304 bytes
        for chunk in elements("e", 3000).chunks(100) {
            let mut args = vec!["PFADD", "big"];
            args.extend(chunk.iter().map(String::as_str));
            same(&mut pair, &args);
        }
        same(&mut pair, &["STRLEN", "big"]);
        same(&mut pair, &["GET", "big"]);
        same(&mut pair, &["PFCOUNT", "big", "nosuch"]);
        same(&mut pair, &["PFMERGE", "h", "big"]);
        same(&mut pair, &["GET", "h"]);
        same(&mut pair, &["PFMERGE", "sparse", "m"]);
        same(&mut pair, &["GET", "sparse"]);
        // a value made by redis-server, cached count and all, counts the same here
        let (theirs, _) = pair.both(&["PFCOUNT", "big"]);
        assert!(theirs.starts_with(':'), "{theirs}");
        // corrupt sparse runs are detected, not read past
        for corrupt in [
            &b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\x80\x7f"[..],
            b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\x80\x7f\xff\x80",
            b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\x80",
            b"HYLL\x00\0\0\0\0\0\0\0\0\0\0\x80\x7f\xff",
            b"HYLL\x02\0\0\0\0\0\0\0\0\0\0\x80\x7f\xff",
        ] {
            let (theirs, ours) = pair.both_bytes(&[b"SET", b"bad", corrupt]);
            assert_eq!(ours, theirs);
            for args in [
                &["PFCOUNT", "bad", "nosuch"][..],
                &["PFMERGE", "bad2", "bad"],
            ] {
                same(&mut pair, args);
            }
            // redis-server edits what it finds before the damage; the node refuses
            if corrupt[4] == 1 {
                assert_eq!(
                    pair.ours(&["PFADD", "bad", "zz"]),
                    "-INVALIDOBJ Corrupted HLL object detected\r\n"
                );
            }
        }
    }
}

/// Counts of many distinct elements stay within HyperLogLog's error (0.81% standard
/// error), and the node's counts equal redis-server's exactly.
#[test]
fn large_counts_are_accurate_and_equal_redis_server() {
    let mut pair = Pair::start(2);
    for chunk in elements("user:", 100_000).chunks(1000) {
        let mut args = vec!["PFADD", "visitors"];
        args.extend(chunk.iter().map(String::as_str));
        let (theirs, ours) = pair.both(&args);
        assert_eq!(ours, theirs);
    }
    let (theirs, ours) = pair.both(&["PFCOUNT", "visitors", "nosuch"]);
    assert_eq!(ours, theirs);
    let count: f64 = ours
        .trim_start_matches(':')
        .trim_end_matches("\\r\\n")
        .parse()
        .expect("integer");
    assert!((count - 100_000.0).abs() / 100_000.0 < 0.03, "{count}");
    let (theirs, ours) = pair.both(&["GET", "visitors"]);
    assert_eq!(ours, theirs);
}

/// A single-key PFCOUNT reads a cached count while it is valid (a value written by
/// redis-server after its own PFCOUNT) and computes it otherwise.
#[test]
fn a_single_key_count_uses_a_valid_cached_count() {
    let node = Node::start();
    let mut raw = node.raw();
    let mut value = b"HYLL\x01\0\0\0".to_vec();
    value.extend_from_slice(&12345u64.to_le_bytes());
    value.extend_from_slice(b"\x7f\xff");
    let args: [&[u8]; 3] = [b"SET", b"cached", &value];
    assert_eq!(raw.cmd_bytes(&args), b"+OK\r\n");
    assert_eq!(raw.cmd(&["PFCOUNT", "cached"]), Reply::Int(12345));
    // the union form ignores the cache: the registers are empty
    assert_eq!(raw.cmd(&["PFCOUNT", "cached", "nosuch"]), Reply::Int(0));
    // a change marks it stale
    assert_eq!(raw.cmd(&["PFADD", "cached", "x"]), Reply::Int(1));
    assert_eq!(raw.cmd(&["PFCOUNT", "cached"]), Reply::Int(1));
}

fn command() -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![4 => Just("a"), 3 => Just("b"), 1 => Just("c"), 1 => Just("l")];
    let element = prop_oneof![
        3 => (0u32..40).prop_map(|n| format!("x{n}")),
        1 => (0u32..100_000).prop_map(|n| format!("wide{n}")),
        1 => Just(String::new()),
    ];
    prop_oneof![
        5 => (key.clone(), proptest::collection::vec(element, 0..6)).prop_map(|(key, elements)| {
            let mut args = owned(&["PFADD", key]);
            args.extend(elements);
            args
        }),
        1 => (key.clone(), 0u32..400).prop_map(|(key, count)| {
            let mut args = owned(&["PFADD", key]);
            args.extend((0..count).map(|n| format!("bulk{n}")));
            args
        }),
        3 => proptest::collection::vec(key.clone(), 1..4).prop_map(|keys| {
            let mut args = owned(&["PFCOUNT"]);
            args.extend(keys.iter().map(|key| key.to_string()));
            args.push("missing".into());
            args
        }),
        2 => (key.clone(), proptest::collection::vec(key.clone(), 0..3)).prop_map(|(destination, sources)| {
            let mut args = owned(&["PFMERGE", destination]);
            args.extend(sources.iter().map(|key| key.to_string()));
            args
        }),
        2 => key.clone().prop_map(|key| owned(&["GET", key])),
        1 => key.prop_map(|key| owned(&["DEL", key])),
        1 => Just(owned(&["RPUSH", "l", "item"])),
    ]
}

#[test]
fn random_hyperloglog_sequences_answer_and_store_like_redis_server() {
    compare_random_sequences(proptest::collection::vec(command(), 1..30), 2, false);
}
