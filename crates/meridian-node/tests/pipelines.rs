//! Pipelines against redis-server itself: many commands in one write, every reply
//! compared byte for byte. The node parses ahead in a pipeline and starts loading the
//! store memory of its keys before running them (`Db::prefetch`), and its key tables
//! grow, spill into neighbouring buckets and rebuild under these batches: whatever it
//! loads early, each command must still see the writes of the commands before it.
//! A multi-key command (MSET, MGET, DEL) has all its keys loaded early, alone or in a
//! pipeline, up to 32 keys at a time: the commands past that are parsed again later.

mod common;

use common::redis_server::{Pair, compare_random_pipelines};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Vec<String>> {
    // keys spread over many shards, two of them sharing a hash tag
    let key = (0..24u32).prop_map(|n| match n {
        0 => "{tag}a".to_string(),
        1 => "{tag}b".to_string(),
        n => format!("key:{n}"),
    });
    let value = prop_oneof![Just("1"), Just("v"), Just(""), Just("12345678901234567890")];
    let keys = proptest::collection::vec(key.clone(), 1..14);
    let pairs = proptest::collection::vec((key.clone(), value.clone()), 1..12);
    fn with(parts: &[&str], keys: &[String], rest: &[&str]) -> Vec<String> {
        let parts = parts.iter().map(|part| part.to_string());
        let rest = rest.iter().map(|part| part.to_string());
        parts.chain(keys.iter().cloned()).chain(rest).collect()
    }
    prop_oneof![
        4 => (key.clone(), value.clone()).prop_map(|(key, value)| with(&["SET"], &[key], &[value])),
        4 => key.clone().prop_map(|key| with(&["GET"], &[key], &[])),
        1 => (key.clone(), value.clone()).prop_map(|(key, value)| with(&["SETNX"], &[key], &[value])),
        1 => (key.clone(), value.clone()).prop_map(|(key, value)| with(&["APPEND"], &[key], &[value])),
        1 => (
            prop_oneof![
                Just("INCR"), Just("STRLEN"), Just("TYPE"), Just("GETDEL"), Just("PERSIST"),
                Just("TTL"), Just("RPOP"), Just("SCARD"),
            ],
            key.clone(),
        )
            .prop_map(|(command, key)| with(&[command], &[key], &[])),
        1 => (key.clone(), value.clone()).prop_map(|(key, value)| with(&["LPUSH"], &[key], &[value])),
        1 => (key.clone(), value).prop_map(|(key, value)| with(&["SADD"], &[key], &[value])),
        1 => key.clone().prop_map(|key| with(&["EXPIRE"], &[key], &["100"])),
        2 => (prop_oneof![Just("DEL"), Just("EXISTS"), Just("MGET")], keys)
            .prop_map(|(command, keys)| with(&[command], &keys, &[])),
        1 => pairs.prop_map(|pairs| {
            let mut mset = vec!["MSET".to_string()];
            for (key, value) in pairs {
                mset.extend([key, value.to_string()]);
            }
            mset
        }),
        1 => Just(vec!["PING".to_string()]),
        1 => Just(vec!["DBSIZE".to_string()]),
    ]
}

#[test]
fn random_pipelines_match_redis_resp2() {
    compare_random_pipelines(proptest::collection::vec(command(), 1..120), 2);
}

#[test]
fn random_pipelines_match_redis_resp3() {
    compare_random_pipelines(proptest::collection::vec(command(), 1..120), 3);
}

/// 40,000 keys written, read, half deleted and read again in pipelines of 1000: the
/// shards' tables double many times and every key is found where redis-server finds it.
#[test]
fn many_keys_through_pipelines_match_redis() {
    let mut pair = Pair::start(2);
    let count = 40_000;
    let key = |n: usize| format!("object:{n}");
    let batch = |pair: &mut Pair, commands: Vec<Vec<String>>| {
        for chunk in commands.chunks(1000) {
            let (theirs, ours) = pair.both_pipelined(chunk);
            for ((args, theirs), ours) in chunk.iter().zip(&theirs).zip(&ours) {
                assert_eq!(ours, theirs, "{args:?}");
            }
        }
    };
    let all = |name: &str| -> Vec<Vec<String>> {
        (0..count + 100)
            .map(|n| vec![name.to_string(), key(n)])
            .collect()
    };
    batch(
        &mut pair,
        (0..count)
            .map(|n| vec!["SET".into(), key(n), format!("value-{n}")])
            .collect(),
    );
    batch(&mut pair, all("GET"));
    batch(
        &mut pair,
        (0..count)
            .filter(|n| n % 2 == 0)
            .map(|n| vec!["DEL".into(), key(n)])
            .collect(),
    );
    batch(&mut pair, all("GET"));
    batch(&mut pair, all("EXISTS"));
    pair.same(&["DBSIZE"]);
}

/// Multi-key commands with more keys than one prefetch starts (32), alone and in
/// pipelines: MSET of 20 keys, MGET of 45, DEL and EXISTS of 33, each answer the same
/// as redis-server's.
#[test]
fn multi_key_commands_past_one_prefetch_match_redis() {
    let mut pair = Pair::start(2);
    let key = |n: usize| format!("object:{n}");
    let mset = |from: usize| {
        let mut command = vec!["MSET".to_string()];
        for n in from..from + 20 {
            command.extend([key(n), format!("value-{n}")]);
        }
        command
    };
    let of = |name: &str, from: usize, count: usize| {
        let mut command = vec![name.to_string()];
        command.extend((from..from + count).map(key));
        command
    };
    let check = |pair: &mut Pair, commands: &[Vec<String>]| {
        let (theirs, ours) = pair.both_pipelined(commands);
        for ((args, theirs), ours) in commands.iter().zip(&theirs).zip(&ours) {
            assert_eq!(ours, theirs, "{args:?}");
        }
    };
    // alone: one command per write
    check(&mut pair, &[mset(0)]);
    check(&mut pair, &[of("MGET", 0, 45)]);
    // pipelined: the MSETs' 200 keys span seven prefetches, each read right after
    let mut pipeline: Vec<Vec<String>> = (0..10).map(|batch| mset(100 + batch * 20)).collect();
    pipeline.extend((0..6).map(|batch| of("MGET", 90 + batch * 40, 45)));
    pipeline.push(of("DEL", 110, 33));
    pipeline.push(of("EXISTS", 100, 33));
    pipeline.push(of("MGET", 100, 45));
    check(&mut pair, &pipeline);
    check(&mut pair, &[of("DEL", 0, 33)]);
    pair.same(&["DBSIZE"]);
}
