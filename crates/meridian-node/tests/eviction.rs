//! maxmemory enforcement for every policy, and noeviction's OOM error.

mod common;

use common::{Node, Reply};

fn info_field(raw: &mut common::Raw, field: &str) -> u64 {
    let Reply::Bulk(text) = raw.cmd(&["INFO", "all"]) else {
        panic!("INFO reply")
    };
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has no {field}"))
}

const LIMIT: u64 = 2 * 1024 * 1024;

fn fill(node: &Node, keys: usize, with_ttl: bool) -> common::Raw {
    let mut raw = node.raw();
    let value = "v".repeat(1000);
    let mut batch = Vec::new();
    for index in 0..keys {
        let key = format!("key:{index}");
        if with_ttl {
            batch.extend(common::encode(&[
                b"SET",
                key.as_bytes(),
                value.as_bytes(),
                b"EX",
                format!("{}", 1000 + index).as_bytes(),
            ]));
        } else {
            batch.extend(common::encode(&[b"SET", key.as_bytes(), value.as_bytes()]));
        }
    }
    raw.send(&batch);
    for _ in 0..keys {
        assert_eq!(raw.read(), Reply::ok());
    }
    raw
}

#[test]
fn every_policy_stays_within_maxmemory() {
    for policy in [
        "sieve",
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] {
        let node = Node::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", policy]);
        let mut raw = fill(&node, 6000, true);
        let used = info_field(&mut raw, "used_memory");
        let evicted = info_field(&mut raw, "evicted_keys");
        let Reply::Int(keys) = raw.cmd(&["DBSIZE"]) else {
            panic!("DBSIZE")
        };
        // eviction runs before and after each write
        assert!(used <= LIMIT, "{policy}: used {used} > {LIMIT}");
        assert!(evicted > 0, "{policy}: nothing evicted");
        assert!(keys > 500 && keys < 6000, "{policy}: {keys} keys left");
        assert_eq!(keys as u64 + evicted, 6000, "{policy}: keys + evicted");
    }
}

#[test]
fn volatile_ttl_evicts_soonest_expiring_first() {
    let node = Node::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "volatile-ttl"]);
    let mut raw = fill(&node, 4000, true);
    // key:i expires after 1000+i seconds: the survivors should be the late ones
    let Reply::Int(early) = raw.cmd(&["EXISTS", "key:0", "key:1", "key:2", "key:3"]) else {
        panic!()
    };
    let Reply::Int(late) = raw.cmd(&["EXISTS", "key:3996", "key:3997", "key:3998", "key:3999"])
    else {
        panic!()
    };
    assert!(late >= early, "late {late} early {early}");
    assert_eq!(late, 4);
}

#[test]
fn volatile_policies_do_not_touch_persistent_keys() {
    let node = Node::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "volatile-lru"]);
    let mut raw = node.raw();
    let value = "v".repeat(1000);
    let mut stored = 0;
    for index in 0..3000 {
        match raw.cmd(&["SET", &format!("key:{index}"), &value]) {
            Reply::Simple(_) => stored += 1,
            Reply::Error(error) => {
                assert_eq!(
                    error,
                    "OOM command not allowed when used memory > 'maxmemory'."
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(stored > 1000 && stored < 3000, "{stored}");
    assert_eq!(
        raw.cmd(&["DBSIZE"]),
        Reply::Int(stored),
        "no persistent key may be evicted"
    );
}

#[test]
fn noeviction_refuses_writes_but_allows_reads_and_deletes() {
    let node = Node::start_with(&["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]);
    let mut raw = node.raw();
    let value = "v".repeat(1000);
    let mut refused = None;
    for index in 0..3000 {
        match raw.cmd(&["SET", &format!("key:{index}"), &value]) {
            Reply::Simple(_) => {}
            Reply::Error(error) => {
                assert_eq!(
                    error,
                    "OOM command not allowed when used memory > 'maxmemory'."
                );
                refused = Some(index);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let refused = refused.expect("writes must be refused once full");
    assert!(refused > 500, "refused too early at {refused}");
    assert_eq!(raw.cmd(&["GET", "key:0"]), Reply::bulk(&value));
    assert_eq!(raw.cmd(&["DEL", "key:0", "key:1", "key:2"]), Reply::Int(3));
    assert_eq!(raw.cmd(&["SET", "fits-again", "x"]), Reply::ok());
    // switching the policy at runtime enables eviction
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        Reply::ok()
    );
    assert_eq!(raw.cmd(&["SET", "after-switch", &value]), Reply::ok());
}

#[test]
fn sieve_keeps_a_hot_working_set() {
    let node = Node::start_with(&["--maxmemory", "2mb"]);
    let mut raw = node.raw();
    let value = "v".repeat(1000);
    for index in 0..100 {
        raw.cmd(&["SET", &format!("hot:{index}"), &value]);
    }
    // a scan of one-hit wonders interleaved with reads of the hot set
    for index in 0..5000 {
        raw.cmd(&["SET", &format!("cold:{index}"), &value]);
        if index % 10 == 0 {
            for hot in 0..100 {
                raw.send(&common::encode(&[b"GET", format!("hot:{hot}").as_bytes()]));
            }
            for _ in 0..100 {
                raw.read();
            }
        }
    }
    let hot_keys: Vec<String> = (0..100).map(|index| format!("hot:{index}")).collect();
    let mut args = vec!["EXISTS"];
    args.extend(hot_keys.iter().map(String::as_str));
    let Reply::Int(present) = raw.cmd(&args) else {
        panic!()
    };
    assert!(present >= 95, "SIEVE kept only {present} of 100 hot keys");
}

/// Pushes `elements` elements of 32 bytes onto `lists` lists, pipelined (each list's
/// length checked while nothing is evicted).
fn push_lists(raw: &mut common::Raw, lists: usize, elements: usize, evicting: bool) {
    let item = "e".repeat(32);
    for round in 0..elements / lists {
        let mut batch = Vec::new();
        for list in 0..lists {
            let key = format!("list:{list}");
            batch.extend(common::encode(&[b"RPUSH", key.as_bytes(), item.as_bytes()]));
        }
        raw.send(&batch);
        for _ in 0..lists {
            match raw.read() {
                Reply::Int(_) if evicting => {}
                reply => assert_eq!(reply, Reply::Int(round as i64 + 1)),
            }
        }
    }
}

/// Lists count in used_memory as they take real memory, so eviction bounds them like
/// any key: used_memory grows with RSS as lists grow, and under maxmemory lists are
/// evicted.
#[test]
fn lists_are_accounted_like_their_memory_and_evicted() {
    let node = Node::start();
    let mut raw = node.raw();
    let (rss_before, used_before) = (
        node.status_kb("VmRSS") * 1024,
        info_field(&mut raw, "used_memory"),
    );
    push_lists(&mut raw, 2000, 400_000, false);
    let rss_grown = (node.status_kb("VmRSS") * 1024).saturating_sub(rss_before) as f64;
    let used_grown = info_field(&mut raw, "used_memory").saturating_sub(used_before) as f64;
    let ratio = used_grown / rss_grown;
    eprintln!(
        "400,000 list elements: used_memory +{used_grown} B, RSS +{rss_grown} B ({ratio:.3})"
    );
    assert!(
        (0.85..=1.15).contains(&ratio),
        "used_memory grew {used_grown} bytes, RSS {rss_grown}: ratio {ratio:.3}"
    );

    let node = Node::start_with(&["--maxmemory", "2mb"]);
    let mut raw = node.raw();
    push_lists(&mut raw, 200, 100_000, true);
    let used = info_field(&mut raw, "used_memory");
    assert!(used <= LIMIT, "used {used} > {LIMIT}");
    assert!(info_field(&mut raw, "evicted_keys") > 0, "no list evicted");
}

/// Adds `members` members (in batches of ZADD with 50 each) spread over `zsets` sorted
/// sets, scores at random so members land all over each set's order.
fn add_to_zsets(raw: &mut common::Raw, zsets: usize, members: usize, evicting: bool) {
    let mut next = 0u64;
    let rounds = members / zsets / 50;
    for _ in 0..rounds {
        let mut batch = Vec::new();
        for zset in 0..zsets {
            let key = format!("zset:{zset}");
            let mut args: Vec<Vec<u8>> = vec![b"ZADD".to_vec(), key.into_bytes()];
            for _ in 0..50 {
                next += 1;
                let score = (next.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / 7.0;
                args.push(score.to_string().into_bytes());
                args.push(format!("member-{next:012}").into_bytes());
            }
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            batch.extend(common::encode(&args));
        }
        raw.send(&batch);
        for _ in 0..zsets {
            match raw.read() {
                Reply::Int(_) if evicting => {}
                reply => assert_eq!(reply, Reply::Int(50)),
            }
        }
    }
}

/// Sorted sets count in used_memory as they take real memory (score map, ordered
/// runs, both copies of each member), so eviction bounds them like any key.
#[test]
fn sorted_sets_are_accounted_like_their_memory_and_evicted() {
    let node = Node::start();
    let mut raw = node.raw();
    let (rss_before, used_before) = (
        node.status_kb("VmRSS") * 1024,
        info_field(&mut raw, "used_memory"),
    );
    add_to_zsets(&mut raw, 200, 400_000, false);
    let rss_grown = (node.status_kb("VmRSS") * 1024).saturating_sub(rss_before) as f64;
    let used_grown = info_field(&mut raw, "used_memory").saturating_sub(used_before) as f64;
    let ratio = used_grown / rss_grown;
    eprintln!(
        "400,000 sorted set members: used_memory +{used_grown} B, RSS +{rss_grown} B ({ratio:.3})"
    );
    assert!(
        (0.85..=1.15).contains(&ratio),
        "used_memory grew {used_grown} bytes, RSS {rss_grown}: ratio {ratio:.3}"
    );

    let node = Node::start_with(&["--maxmemory", "2mb"]);
    let mut raw = node.raw();
    add_to_zsets(&mut raw, 50, 100_000, true);
    let used = info_field(&mut raw, "used_memory");
    assert!(used <= LIMIT, "used {used} > {LIMIT}");
    assert!(
        info_field(&mut raw, "evicted_keys") > 0,
        "no sorted set evicted"
    );
}

/// One write can grow memory by much more than an entry (a large value, a sorted set
/// whose tables double). Redis evicts only before the next write, so used_memory stays
/// over the limit until one comes; the node evicts after the write as well, before
/// its reply. SIEVE keeps the value just written (older keys are ahead of it).
#[test]
fn a_write_that_grows_past_the_limit_is_evicted_before_its_reply() {
    for policy in ["sieve", "allkeys-lru", "allkeys-random", "volatile-ttl"] {
        let node = Node::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", policy]);
        let mut raw = fill(&node, 3000, true);
        let evicted_before = info_field(&mut raw, "evicted_keys");
        let big = "b".repeat(200 * 1024);
        assert_eq!(raw.cmd(&["SET", "big", &big]), Reply::ok());
        let used = info_field(&mut raw, "used_memory");
        assert!(
            used <= LIMIT,
            "{policy}: used {used} > {LIMIT} after the write"
        );
        assert!(
            info_field(&mut raw, "evicted_keys") > evicted_before,
            "{policy}: the 200 KiB were not made room for"
        );
        if policy == "sieve" {
            assert_eq!(raw.cmd(&["STRLEN", "big"]), Reply::Int(big.len() as i64));
        }
        // the same for a script's and a transaction's writes
        let script = "return redis.call('SET', KEYS[1], ARGV[1])";
        assert_eq!(
            raw.cmd(&["EVAL", script, "1", "big:script", &big]),
            Reply::ok()
        );
        let used = info_field(&mut raw, "used_memory");
        assert!(used <= LIMIT, "{policy}: used {used} > {LIMIT} after EVAL");
        assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
        assert_eq!(
            raw.cmd(&["SET", "big:exec", &big]),
            Reply::Simple("QUEUED".into())
        );
        assert!(matches!(raw.cmd(&["EXEC"]), Reply::Array(_)));
        let used = info_field(&mut raw, "used_memory");
        assert!(used <= LIMIT, "{policy}: used {used} > {LIMIT} after EXEC");
    }
}
