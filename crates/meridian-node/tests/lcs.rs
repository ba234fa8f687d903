//! LCS against redis-server itself: the subsequence, its length and the matching
//! ranges (RESP2 array and RESP3 map), raw replies compared byte for byte; edge cases
//! by hand, then random strings and options with proptest shrinking.

mod common;

use common::redis_server::{Pair, compare_random_sequences, owned};
use proptest::prelude::*;

const EDGE_CASES: &[&[&str]] = &[
    &["SET", "k1", "ohmytext"],
    &["SET", "k2", "mynewtext"],
    &["LCS", "k1", "k2"],
    &["LCS", "k1", "k2", "LEN"],
    &["LCS", "k1", "k2", "IDX"],
    &["LCS", "k1", "k2", "idx", "WITHMATCHLEN"],
    &["LCS", "k1", "k2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
    &["LCS", "k1", "k2", "IDX", "MINMATCHLEN", "-5"],
    &["LCS", "k1", "k2", "MINMATCHLEN", "3"],
    &["LCS", "k1", "k2", "WITHMATCHLEN"],
    &["LCS", "k1", "k2", "LEN", "IDX"],
    &["LCS", "k1", "k2", "IDX", "LEN"],
    &["LCS", "k1", "k2", "LEN", "LEN"],
    &["LCS", "k1", "k2", "MINMATCHLEN"],
    &["LCS", "k1", "k2", "MINMATCHLEN", "x"],
    &["LCS", "k1", "k2", "BOGUS"],
    &["LCS", "k1", "nosuch"],
    &["LCS", "nosuch", "k2", "LEN"],
    &["LCS", "nosuch", "nosuch", "IDX"],
    &["LCS", "k1", "k1", "IDX", "WITHMATCHLEN"],
    &["SET", "empty", ""],
    &["LCS", "empty", "k1", "IDX"],
    &["LPUSH", "l", "a"],
    &["LCS", "k1", "l"],
    &["LCS", "l", "k1", "BOGUS"],
    &["LCS", "nosuch", "l", "LEN"],
    &["LCS", "k1"],
];

#[test]
fn lcs_answers_like_redis_server_in_resp2_and_resp3() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in EDGE_CASES {
            pair.same(args);
        }
    }
}

fn command() -> impl Strategy<Value = Vec<String>> {
    let text = proptest::collection::vec(
        prop_oneof![Just('a'), Just('b'), Just('c'), Just('x')],
        0..24,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>());
    let key = prop_oneof![Just("a"), Just("b"), Just("missing")];
    let option = prop_oneof![
        Just(vec!["LEN"]),
        Just(vec!["IDX"]),
        Just(vec!["WITHMATCHLEN"]),
        Just(vec!["MINMATCHLEN", "2"]),
        Just(vec!["MINMATCHLEN", "0"]),
    ];
    prop_oneof![
        2 => (prop_oneof![Just("a"), Just("b")], text).prop_map(|(key, text)| owned(&["SET", key, &text])),
        3 => (key.clone(), key, proptest::collection::vec(option, 0..3)).prop_map(|(first, second, options)| {
            let mut args = owned(&["LCS", first, second]);
            args.extend(options.into_iter().flatten().map(str::to_string));
            args
        }),
    ]
}

#[test]
fn random_lcs_requests_answer_like_redis_server() {
    for protocol in [2, 3] {
        compare_random_sequences(proptest::collection::vec(command(), 1..20), protocol, false);
    }
}

/// The table LCS builds is refused when it would pass Redis's bound (512 MB) or what
/// maxmemory leaves: refused with an error, never attempted (a pod's memory limit
/// would kill the node).
#[test]
fn an_lcs_table_beyond_the_memory_bounds_is_refused() {
    use common::{Node, Reply};
    let node = Node::start();
    let mut raw = node.raw();
    let big = "a".repeat(12_000);
    raw.cmd(&["SET", "x", &big]);
    raw.cmd(&["SET", "y", &big]);
    assert_eq!(
        raw.cmd(&["LCS", "x", "y", "LEN"]),
        Reply::err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
    );
    raw.cmd(&["SET", "x", &"a".repeat(1000)]);
    raw.cmd(&["SET", "y", &"a".repeat(1000)]);
    assert_eq!(raw.cmd(&["LCS", "x", "y", "LEN"]), Reply::Int(1000));
    raw.cmd(&["CONFIG", "SET", "maxmemory", "2mb"]);
    assert_eq!(
        raw.cmd(&["LCS", "x", "y", "LEN"]),
        Reply::err(
            "ERR Insufficient memory, transient memory for LCS exceeds what maxmemory leaves"
        )
    );
    assert_eq!(raw.cmd(&["PING"]), Reply::Simple("PONG".into()));
}
