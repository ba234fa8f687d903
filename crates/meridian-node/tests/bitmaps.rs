//! Bitmaps (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO) against
//! redis-server itself: the same commands sent to both, raw replies compared byte for
//! byte in RESP2 and RESP3; edge cases by hand, then random command sequences with
//! proptest shrinking (`MERIDIAN_DIFF_SEED` replays one).

mod common;

use common::redis_server::{Pair, compare_random_sequences, owned};
use common::{Node, Reply};
use proptest::prelude::*;

const EDGE_CASES: &[&[&str]] = &[
    // SETBIT / GETBIT: growth with zeros, old bit back, range and value errors
    &["SETBIT", "b", "7", "1"],
    &["GET", "b"],
    &["SETBIT", "b", "7", "1"],
    &["SETBIT", "b", "7", "0"],
    &["SETBIT", "b", "100", "1"],
    &["STRLEN", "b"],
    &["GETBIT", "b", "100"],
    &["GETBIT", "b", "101"],
    &["GETBIT", "b", "100000"],
    &["GETBIT", "nosuch", "0"],
    &["SETBIT", "b", "-1", "1"],
    &["SETBIT", "b", "4294967296", "1"],
    &["SETBIT", "b", "x", "1"],
    &["SETBIT", "b", "1", "2"],
    &["SETBIT", "b", "1", "-1"],
    &["SETBIT", "b", "1", "x"],
    &["SETBIT", "b", "x", "x"],
    &["GETBIT", "b", "-1"],
    &["GETBIT", "b", "4294967296"],
    &["GETBIT", "b", "4294967295"],
    &["SETBIT", "z", "0", "0"],
    &["GET", "z"],
    // BITCOUNT: whole string, byte and bit ranges, negative indexes, argument errors
    &["SET", "s", "foobar"],
    &["BITCOUNT", "s"],
    &["BITCOUNT", "s", "0", "0"],
    &["BITCOUNT", "s", "1", "1"],
    &["BITCOUNT", "s", "1", "-2"],
    &["BITCOUNT", "s", "-3", "-1"],
    &["BITCOUNT", "s", "-1", "-3"],
    &["BITCOUNT", "s", "-1", "-3", "bogus"],
    &["BITCOUNT", "s", "5", "30", "BIT"],
    &["BITCOUNT", "s", "5", "30", "bit"],
    &["BITCOUNT", "s", "0", "-1", "BYTE"],
    &["BITCOUNT", "s", "-9", "-2", "BIT"],
    &["BITCOUNT", "s", "10", "5", "BIT"],
    &["BITCOUNT", "s", "100", "200"],
    &["BITCOUNT", "s", "0", "1000", "BIT"],
    &["BITCOUNT", "s", "1"],
    &["BITCOUNT", "s", "0", "1", "BIT", "extra"],
    &["BITCOUNT", "s", "a", "1"],
    &["BITCOUNT", "s", "0", "1", "bogus"],
    &["BITCOUNT", "nosuch"],
    &["BITCOUNT", "nosuch", "1"],
    &["BITCOUNT", "nosuch", "a", "b"],
    // BITPOS: found, not found, past the end, explicit ranges
    &["SET", "ones", "\u{7f}"],
    &["BITPOS", "s", "1"],
    &["BITPOS", "s", "0"],
    &["BITPOS", "s", "1", "2"],
    &["BITPOS", "s", "0", "1", "-1"],
    &["BITPOS", "s", "1", "7", "15", "BIT"],
    &["BITPOS", "s", "0", "7", "15", "bit"],
    &["BITPOS", "s", "1", "-2", "-1", "BYTE"],
    &["BITPOS", "s", "1", "100"],
    &["BITPOS", "s", "0", "100"],
    &["BITPOS", "s", "1", "3", "2"],
    &["BITPOS", "s", "2"],
    &["BITPOS", "s", "x"],
    &["BITPOS", "s", "1", "x"],
    &["BITPOS", "s", "1", "0", "x"],
    &["BITPOS", "s", "1", "0", "1", "bogus"],
    &["BITPOS", "s", "1", "0", "1", "BIT", "extra"],
    &["BITPOS", "nosuch", "1"],
    &["BITPOS", "nosuch", "0"],
    &["BITPOS", "nosuch", "1", "a"],
    &["SET", "full", "\u{7f}\u{7f}"],
    &["SETBIT", "all", "0", "1"],
    &["SETBIT", "all", "1", "1"],
    &["SETBIT", "all", "2", "1"],
    &["SETBIT", "all", "3", "1"],
    &["SETBIT", "all", "4", "1"],
    &["SETBIT", "all", "5", "1"],
    &["SETBIT", "all", "6", "1"],
    &["SETBIT", "all", "7", "1"],
    &["BITPOS", "all", "0"],
    &["BITPOS", "all", "0", "0"],
    &["BITPOS", "all", "0", "0", "-1"],
    &["BITPOS", "all", "0", "0", "7", "BIT"],
    &["BITPOS", "all", "1", "3", "5", "BIT"],
    &["SET", "empty", ""],
    &["BITPOS", "empty", "0"],
    &["BITPOS", "empty", "1"],
    &["BITCOUNT", "empty"],
    // BITOP: every operation, unequal lengths, missing sources, the destination replaced
    &["SET", "x", "abc"],
    &["SET", "y", "\u{1}"],
    &["BITOP", "AND", "d", "x", "y"],
    &["GET", "d"],
    &["BITOP", "or", "d", "x", "y", "nosuch"],
    &["GET", "d"],
    &["BITOP", "XOR", "d", "x", "y"],
    &["GET", "d"],
    &["BITOP", "NOT", "d", "y"],
    &["GET", "d"],
    &["BITOP", "AND", "d", "x", "nosuch"],
    &["GET", "d"],
    &["BITOP", "OR", "d", "nosuch"],
    &["EXISTS", "d"],
    &["BITOP", "NOT", "d", "x", "y"],
    &["BITOP", "NOT", "d", "nosuch"],
    &["BITOP", "bogus", "d", "x"],
    &["LPUSH", "list", "a"],
    &["BITOP", "AND", "d", "x", "list"],
    &["BITOP", "OR", "list", "x"],
    &["TYPE", "list"],
    &["GET", "list"],
    // BITFIELD: types, #offsets, overflow modes, FAIL's nil, errors before any write
    &[
        "BITFIELD", "f", "SET", "u8", "0", "255", "GET", "u8", "0", "GET", "i8", "0",
    ],
    &[
        "BITFIELD", "f", "INCRBY", "u8", "0", "1", "OVERFLOW", "SAT", "INCRBY", "u8", "0", "300",
    ],
    &[
        "BITFIELD", "f", "OVERFLOW", "FAIL", "INCRBY", "u8", "0", "300", "INCRBY", "u8", "0", "-1",
    ],
    &[
        "BITFIELD", "f", "OVERFLOW", "WRAP", "INCRBY", "i8", "0", "200", "INCRBY", "i8", "#1",
        "-129",
    ],
    &[
        "BITFIELD", "f", "SET", "i5", "3", "-16", "GET", "u5", "3", "GET", "i5", "3",
    ],
    &[
        "BITFIELD", "f", "SET", "u63", "5", "-1", "GET", "u63", "5", "GET", "i64", "5",
    ],
    &[
        "BITFIELD", "f", "OVERFLOW", "SAT", "SET", "u4", "0", "-1", "SET", "i4", "0", "100",
    ],
    &[
        "BITFIELD", "f", "OVERFLOW", "FAIL", "SET", "u4", "#3", "16", "SET", "i4", "#3", "-9",
    ],
    &[
        "BITFIELD",
        "f",
        "INCRBY",
        "i64",
        "0",
        "9223372036854775807",
        "INCRBY",
        "i64",
        "0",
        "1",
    ],
    &[
        "BITFIELD",
        "f",
        "OVERFLOW",
        "SAT",
        "INCRBY",
        "i64",
        "64",
        "-9223372036854775808",
        "INCRBY",
        "i64",
        "64",
        "-1",
    ],
    &[
        "BITFIELD",
        "f",
        "OVERFLOW",
        "SAT",
        "SET",
        "i32",
        "0",
        "-9223372036854775808",
        "GET",
        "i32",
        "0",
    ],
    &[
        "BITFIELD",
        "f",
        "OVERFLOW",
        "SAT",
        "SET",
        "i32",
        "0",
        "-3000000000",
        "GET",
        "i32",
        "0",
    ],
    &[
        "BITFIELD",
        "f",
        "OVERFLOW",
        "WRAP",
        "SET",
        "i32",
        "0",
        "-9223372036854775808",
        "GET",
        "i32",
        "0",
    ],
    &["GET", "f"],
    &["BITFIELD", "g", "OVERFLOW", "FAIL", "SET", "u2", "100", "4"],
    &["GET", "g"],
    &["BITFIELD", "g"],
    &["BITFIELD", "nosuch", "GET", "u8", "0"],
    &["EXISTS", "nosuch"],
    &["BITFIELD", "f", "GET", "u64", "0"],
    &["BITFIELD", "f", "GET", "i65", "0"],
    &["BITFIELD", "f", "GET", "I8", "0"],
    &["BITFIELD", "f", "GET", "u0", "0"],
    &["BITFIELD", "f", "GET", "u8", "-1"],
    &["BITFIELD", "f", "GET", "u8", "#-1"],
    &["BITFIELD", "f", "GET", "u8", "4294967296"],
    &["BITFIELD", "f", "GET", "u8", "#536870912"],
    &["BITFIELD", "f", "SET", "u8", "0", "x"],
    &["BITFIELD", "f", "SET", "u8", "0"],
    &["BITFIELD", "f", "GET", "u8"],
    &["BITFIELD", "f", "OVERFLOW", "bogus", "GET", "u8", "0"],
    &["BITFIELD", "f", "OVERFLOW"],
    &["BITFIELD", "f", "bogus", "u8", "0"],
    &["BITFIELD", "f", "SET", "u8", "0", "1", "GET", "u99", "0"],
    &["GET", "f"],
    &["BITFIELD", "list", "GET", "u8", "0"],
    &["BITFIELD", "list", "SET", "u8", "0", "1"],
    &["BITFIELD_RO", "f", "GET", "u8", "0", "GET", "i3", "#2"],
    &["BITFIELD_RO", "f", "SET", "u8", "0", "1"],
    &["BITFIELD_RO", "f", "INCRBY", "u8", "0", "1"],
    &["BITFIELD_RO", "nosuch", "GET", "u8", "0"],
    &["BITFIELD_RO", "f"],
    // a write that changes no bit is no write: WATCH does not see it, as in Redis
    &["SETBIT", "w", "3", "1"],
    &["WATCH", "w"],
    &["SETBIT", "w", "3", "1"],
    &["BITFIELD", "w", "SET", "u1", "3", "1", "GET", "u8", "0"],
    &[
        "BITFIELD", "w", "OVERFLOW", "FAIL", "INCRBY", "u1", "3", "1",
    ],
    &["MULTI"],
    &["GETBIT", "w", "3"],
    &["EXEC"],
    &["WATCH", "w"],
    &["BITFIELD", "w", "SET", "u1", "3", "0"],
    &["MULTI"],
    &["GETBIT", "w", "3"],
    &["EXEC"],
    &["WATCH", "w"],
    &["SETBIT", "w", "30", "0"],
    &["MULTI"],
    &["STRLEN", "w"],
    &["EXEC"],
    // other commands' view of a bitmap
    &["SETBIT", "list", "0", "1"],
    &["GETBIT", "list", "0"],
    &["BITCOUNT", "list"],
    &["BITPOS", "list", "1"],
    &["APPEND", "b", "tail"],
    &["BITCOUNT", "b"],
    &["TYPE", "b"],
];

#[test]
fn bitmap_commands_answer_like_redis_server_in_resp2_and_resp3() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in EDGE_CASES {
            pair.same(args);
        }
    }
}

/// One random command over the string keys `a` and `b` (bitmaps, mostly), `c` (a
/// destination) and `l` (a list, for WRONGTYPE).
fn command() -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![4 => Just("a"), 3 => Just("b"), 1 => Just("c"), 1 => Just("l")];
    let offset = prop_oneof![0u64..40, Just(63), Just(64), Just(200)];
    let index = prop_oneof![-12i64..12, Just(100), Just(-100)];
    let unit = prop_oneof![Just(None), Just(Some("BYTE")), Just(Some("BIT"))];
    let width = prop_oneof![
        (1u32..10).prop_map(|bits| format!("u{bits}")),
        (1u32..10).prop_map(|bits| format!("i{bits}")),
        Just("u63".to_string()),
        Just("i64".to_string()),
        Just("u16".to_string()),
        Just("i32".to_string()),
    ];
    let field_offset = prop_oneof![
        3 => (0u64..48).prop_map(|at| at.to_string()),
        1 => (0u64..6).prop_map(|at| format!("#{at}")),
    ];
    let amount = prop_oneof![
        -300i64..300,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(1 << 40),
        Just(-(1 << 40)),
    ];
    let field_op = prop_oneof![
        (width.clone(), field_offset.clone()).prop_map(|(width, at)| vec![
            "GET".to_string(),
            width,
            at
        ]),
        (
            prop_oneof![Just("SET"), Just("INCRBY")],
            width,
            field_offset,
            amount
        )
            .prop_map(|(op, width, at, amount)| vec![
                op.to_string(),
                width,
                at,
                amount.to_string()
            ]),
        prop_oneof![Just("WRAP"), Just("SAT"), Just("FAIL")]
            .prop_map(|how| vec!["OVERFLOW".to_string(), how.to_string()]),
    ];
    prop_oneof![
        4 => (key.clone(), offset.clone(), 0u8..2)
            .prop_map(|(key, at, bit)| owned(&["SETBIT", key, &at.to_string(), &bit.to_string()])),
        2 => (key.clone(), offset).prop_map(|(key, at)| owned(&["GETBIT", key, &at.to_string()])),
        3 => (key.clone(), proptest::option::of((index.clone(), index.clone(), unit.clone())))
            .prop_map(|(key, range)| {
                let mut args = owned(&["BITCOUNT", key]);
                if let Some((start, end, unit)) = range {
                    args.extend([start.to_string(), end.to_string()]);
                    args.extend(unit.map(str::to_string));
                }
                args
            }),
        3 => (key.clone(), 0u8..2, proptest::option::of((index.clone(), proptest::option::of((index, unit)))))
            .prop_map(|(key, bit, range)| {
                let mut args = owned(&["BITPOS", key, &bit.to_string()]);
                if let Some((start, end)) = range {
                    args.push(start.to_string());
                    if let Some((end, unit)) = end {
                        args.push(end.to_string());
                        args.extend(unit.map(str::to_string));
                    }
                }
                args
            }),
        2 => (prop_oneof![Just("AND"), Just("OR"), Just("XOR"), Just("NOT")], key.clone(),
              proptest::collection::vec(key.clone(), 1..4))
            .prop_map(|(op, destination, sources)| {
                let sources = if op == "NOT" { &sources[..1] } else { &sources[..] };
                let mut args = owned(&["BITOP", op, destination]);
                args.extend(sources.iter().map(|source| source.to_string()));
                args
            }),
        3 => (prop_oneof![3 => Just("BITFIELD"), 1 => Just("BITFIELD_RO")], key.clone(),
              proptest::collection::vec(field_op, 0..5))
            .prop_map(|(name, key, ops)| {
                let mut args = owned(&[name, key]);
                args.extend(ops.into_iter().flatten());
                args
            }),
        1 => (key.clone(), prop_oneof![Just("foobar"), Just(""), Just("\u{ff}\u{0}\u{7f}"), Just("12345")])
            .prop_map(|(key, value)| owned(&["SET", key, value])),
        1 => key.clone().prop_map(|key| owned(&["GET", key])),
        1 => key.prop_map(|key| owned(&["DEL", key])),
        1 => Just(owned(&["RPUSH", "l", "item"])),
    ]
}

#[test]
fn random_bitmap_command_sequences_answer_like_redis_server() {
    for protocol in [2, 3] {
        compare_random_sequences(proptest::collection::vec(command(), 1..40), protocol, false);
    }
}

/// A bitmap near the 512 MB bound is refused past it, and a large one is counted and
/// searched correctly (the word-at-a-time paths).
#[test]
fn large_bitmaps_count_and_search_by_words() {
    let node = Node::start();
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["SETBIT", "big", "8000000", "1"]), Reply::Int(0));
    assert_eq!(raw.cmd(&["STRLEN", "big"]), Reply::Int(1_000_001));
    assert_eq!(raw.cmd(&["BITCOUNT", "big"]), Reply::Int(1));
    assert_eq!(raw.cmd(&["BITPOS", "big", "1"]), Reply::Int(8_000_000));
    assert_eq!(
        raw.cmd(&["BITPOS", "big", "1", "12345"]),
        Reply::Int(8_000_000)
    );
    assert_eq!(
        raw.cmd(&["BITOP", "NOT", "inverse", "big"]),
        Reply::Int(1_000_001)
    );
    assert_eq!(raw.cmd(&["BITCOUNT", "inverse"]), Reply::Int(8_000_007));
    assert_eq!(raw.cmd(&["BITPOS", "inverse", "0"]), Reply::Int(8_000_000));
    assert_eq!(
        raw.cmd(&["BITCOUNT", "inverse", "3", "7999999", "BIT"]),
        Reply::Int(7_999_997)
    );
    assert_eq!(
        raw.cmd(&[
            "BITFIELD", "big", "INCRBY", "u32", "#0", "7", "GET", "u8", "7999993"
        ]),
        Reply::Array(vec![Reply::Int(7), Reply::Int(1)])
    );
    assert_eq!(raw.cmd(&["STRLEN", "big"]), Reply::Int(1_000_001));
}
