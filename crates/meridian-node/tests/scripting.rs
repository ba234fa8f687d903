//! Lua scripting against redis-server itself: the same EVAL / EVALSHA / SCRIPT commands
//! sent to both, replies compared byte for byte in RESP2 and RESP3 (errors name the
//! script's SHA1 and line as Redis 7.0 does); a client library's Script API; effects
//! replicated as one MULTI/EXEC; atomicity; the time limit and SCRIPT KILL; ACLs inside
//! scripts.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::Pair;
use common::{Node, Reply};

const RATE_LIMITER: &str = r#"
local current = redis.call('INCR', KEYS[1])
if current == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
if current > tonumber(ARGV[2]) then
  return {current, 0}
end
return {current, 1}
"#;

const EDGE_CASES: &[&[&str]] = &[
    &["SET", "s", "abc"],
    &["EVAL", "return 1", "0"],
    &["EVAL", "return 'text'", "0"],
    &["EVAL", "return 3.99", "0"],
    &["EVAL", "return -2.5", "0"],
    &["EVAL", "return true", "0"],
    &["EVAL", "return false", "0"],
    &["EVAL", "return nil", "0"],
    &["EVAL", "return {1, 2, {3, 'x'}, nil, 4}", "0"],
    &["EVAL", "return {}", "0"],
    &["EVAL", "return redis.status_reply('FINE')", "0"],
    &["EVAL", "return redis.error_reply('MY err')", "0"],
    &["EVAL", "return {err = 'x'}", "0"],
    &["EVAL", "return {ok = 'y'}", "0"],
    &[
        "EVAL",
        "return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], #KEYS, #ARGV}",
        "2",
        "k1",
        "k2",
        "a1",
        "a2",
    ],
    &[
        "EVAL",
        "return redis.call('SET', KEYS[1], ARGV[1])",
        "1",
        "key",
        "value",
    ],
    &["EVAL", "return redis.call('GET', KEYS[1])", "1", "key"],
    &["EVAL", "return redis.call('GET', 'nosuch')", "0"],
    &["EVAL", "return type(redis.call('GET', 'nosuch'))", "0"],
    &["EVAL", "return redis.call('INCRBY', 'n', 5) + 1", "0"],
    &["EVAL", "return redis.call('RPUSH', 'l', 1, 2.5, 'x')", "0"],
    &["EVAL", "return redis.call('LRANGE', 'l', 0, -1)", "0"],
    &[
        "EVAL",
        "return redis.call('ZADD', 'z', 1, 'a', 2, 'b')",
        "0",
    ],
    &[
        "EVAL",
        "return redis.call('ZRANGE', 'z', 0, -1, 'WITHSCORES')",
        "0",
    ],
    &["EVAL", "return redis.call('HSET', 'h', 'f', 'v')", "0"],
    &["EVAL", "return redis.call('HGETALL', 'h')", "0"],
    &["EVAL", "local r = redis.call('PING') return r.ok", "0"],
    &["EVAL", "return redis.call('PING')", "0"],
    &["EVAL", "return redis.call('INCR', 's')", "0"],
    &["EVAL", "return redis.pcall('INCR', 's')", "0"],
    &[
        "EVAL",
        "local e = redis.pcall('INCR', 's') return e.err",
        "0",
    ],
    &["EVAL", "return redis.call('nosuch')", "0"],
    &["EVAL", "return redis.call('GET')", "0"],
    &["EVAL", "return redis.call()", "0"],
    &["EVAL", "return redis.call('SUBSCRIBE', 'x')", "0"],
    &["EVAL", "return redis.call('EVAL', 'return 1', '0')", "0"],
    &["EVAL", "return redis.call('GET', {})", "0"],
    &["EVAL", "return foo()", "0"],
    &["EVAL", "x = 1", "0"],
    // the redis library is read-only: a script cannot take redis.call from the next one
    &["EVAL", "redis.call = nil return 1", "0"],
    &["EVAL", "redis.pcall = 5 return 1", "0"],
    &["EVAL", "return redis.pcall('PING')", "0"],
    &["EVAL", "return 1 +", "0"],
    &["EVAL", "error('boom')", "0"],
    &["EVAL", "\n\nerror('on line three')", "0"],
    &["EVAL", "local x = nil\nreturn x.field", "0"],
    &["EVAL", "return redis.sha1hex('')", "0"],
    &["EVAL", "return redis.sha1hex('return 1')", "0"],
    &["EVAL", "return cjson.encode({1, 2, 3})", "0"],
    &["EVAL", "return cjson.decode('[1,2,\"x\"]')", "0"],
    &["EVAL", "return cjson.decode('{\"a\":5}').a", "0"],
    // LuaBitOp's bit library
    &[
        "EVAL",
        "return {bit.band(0xff, 0x0f, 0x3), bit.bor(1, 2, 4), bit.bxor(5, 3), bit.bnot(0)}",
        "0",
    ],
    &[
        "EVAL",
        "return {bit.lshift(1, 31), bit.rshift(-1, 28), bit.arshift(-256, 4), bit.rol(0x80000001, 1), bit.ror(1, 1)}",
        "0",
    ],
    &[
        "EVAL",
        "return {bit.tobit(2^32 + 5), bit.tobit(-1), bit.tobit(1.5), bit.tobit(2.5), bit.bswap(0x01020304)}",
        "0",
    ],
    &[
        "EVAL",
        "return {bit.tohex(255), bit.tohex(-1, -4), bit.tohex(0x1234, 2), bit.tohex(1, 12)}",
        "0",
    ],
    &["EVAL", "return 1", "-1"],
    &["EVAL", "return 1", "2", "a"],
    &["EVAL", "return 1", "x"],
    &["EVAL", "return redis.call('SET', 'from-ro', 1)", "0"],
    &["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "key"],
    &[
        "EVAL_RO",
        "return redis.call('SET', KEYS[1], 'x')",
        "1",
        "key",
    ],
    // the script cache
    &["SCRIPT", "LOAD", "return 'loaded'"],
    &["EVALSHA", "b534286061d4b9e4026607613b95c06c06015ae8", "0"],
    &["EVALSHA", "B534286061D4B9E4026607613B95C06C06015AE8", "0"],
    &[
        "EVALSHA_RO",
        "b534286061d4b9e4026607613b95c06c06015ae8",
        "0",
    ],
    &["EVALSHA", "0123456789012345678901234567890123456789", "0"],
    &["EVALSHA", "short", "0"],
    &[
        "SCRIPT",
        "EXISTS",
        "b534286061d4b9e4026607613b95c06c06015ae8",
        "0123456789012345678901234567890123456789",
    ],
    &["SCRIPT", "LOAD", "return +"],
    &["SCRIPT", "LOAD"],
    &["SCRIPT", "FLUSH"],
    &[
        "SCRIPT",
        "EXISTS",
        "b534286061d4b9e4026607613b95c06c06015ae8",
    ],
    &["SCRIPT", "FLUSH", "ASYNC"],
    &["SCRIPT", "FLUSH", "BOGUS"],
    &["SCRIPT", "KILL"],
    &["SCRIPT", "BOGUS"],
    // EVAL caches the script it ran
    &["EVAL", "return 'cached'", "0"],
    &["EVALSHA", "952f49ffc8f7b098d8ab5da45d3164ca36ed18b1", "0"],
    &[
        "SCRIPT",
        "EXISTS",
        "952f49ffc8f7b098d8ab5da45d3164ca36ed18b1",
    ],
    // a rate limiter as client libraries ship it
    &["EVAL", RATE_LIMITER, "1", "limit:user1", "60000", "2"],
    &["EVAL", RATE_LIMITER, "1", "limit:user1", "60000", "2"],
    &["EVAL", RATE_LIMITER, "1", "limit:user1", "60000", "2"],
    // a lock released only by its owner
    &["SET", "lock", "owner-1"],
    &[
        "EVAL",
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        "1",
        "lock",
        "owner-2",
    ],
    &[
        "EVAL",
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        "1",
        "lock",
        "owner-1",
    ],
    &["EXISTS", "lock"],
    // inside MULTI
    &["MULTI"],
    &["EVAL", "return redis.call('INCR', 'm')", "0"],
    &["EVAL", "return redis.call('INCR', 'm')", "0"],
    &["EXEC"],
    // blocking commands are refused inside a script
    &["EVAL", "return redis.call('BLPOP', 'empty', 0)", "0"],
    &["EVAL", "return redis.call('BZPOPMIN', 'empty', 0)", "0"],
];

/// Redis 7's script flags on a `#!lua` first line: parse errors, `no-writes` (read-only,
/// and allowed by EVAL_RO), the SHA1 of the whole source, line numbers kept, and a
/// script without `allow-oom` refused past maxmemory while `no-writes` and `allow-oom`
/// ones run.
const SHEBANGS: &[&[&str]] = &[
    &[
        "EVAL",
        "#!lua flags=no-writes\nreturn redis.call('GET', 'k')",
        "0",
    ],
    &["EVAL_RO", "#!lua flags=no-writes\nreturn 1", "0"],
    &["EVAL", "#!lua\nreturn redis.call('SET', 'k', 'v')", "0"],
    &["EVAL_RO", "#!lua\nreturn 1", "0"],
    &[
        "EVAL",
        "#!lua flags=no-writes\nreturn redis.call('SET', 'k', 'v')",
        "0",
    ],
    &[
        "EVAL",
        "#!lua flags=no-writes,allow-oom,allow-stale\nreturn 2",
        "0",
    ],
    &["EVAL", "#!lua flags=\nreturn 3", "0"],
    &[
        "EVAL",
        "#!lua flags=no-cluster,allow-cross-slot-keys\nreturn 4",
        "0",
    ],
    &["EVAL", "#!lua   flags=no-writes  \r\nreturn 5", "0"],
    &["EVAL", "#!lua flags=bogus\nreturn 1", "0"],
    &["EVAL", "#!lua flags=no-writes,,allow-oom\nreturn 1", "0"],
    &["EVAL", "#!lua other=1\nreturn 1", "0"],
    &["EVAL", "#!python\nreturn 1", "0"],
    &["EVAL", "#!\nreturn 1", "0"],
    &["EVAL", "#!lua", "0"],
    &["EVAL", "#!lua\n\nreturn nosuch(", "0"],
    &["EVAL_RO", "#!lua\n\nreturn nosuch(", "0"],
    &["EVAL", "#!lua\n\nreturn redis.call('NOSUCH')", "0"],
    &["SCRIPT", "LOAD", "#!lua flags=no-writes\nreturn 6"],
    &["SCRIPT", "LOAD", "#!lua flags=nope\nreturn 6"],
    &[
        "EVALSHA_RO",
        "7fe72c3e6f9c9f8a8f5d3bd2c2fc4b5fee2a5cd0",
        "0",
    ],
    &["SET", "filler", "x"],
    &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    &["CONFIG", "SET", "maxmemory", "1"],
    &["EVAL", "#!lua\nreturn 7", "0"],
    &[
        "EVAL",
        "#!lua flags=allow-oom\nreturn redis.call('SET', 'k', 'oom')",
        "0",
    ],
    &[
        "EVAL",
        "#!lua flags=no-writes\nreturn redis.call('GET', 'k')",
        "0",
    ],
    &["EVAL", "return 8", "0"],
    &["CONFIG", "SET", "maxmemory", "0"],
    &["EVAL", "#!lua\nreturn 9", "0"],
];

#[test]
fn script_shebangs_answer_like_redis_server() {
    let mut pair = Pair::start(2);
    for args in SHEBANGS {
        pair.same(args);
    }
    // EVALSHA_RO by the SHA1 of a whole source, shebang included
    for source in ["#!lua flags=no-writes\nreturn 10", "#!lua\nreturn 11"] {
        let (theirs, ours) = pair.both(&["SCRIPT", "LOAD", source]);
        assert_eq!(ours, theirs);
        // (`$40\r\n<sha1>\r\n`, escaped)
        let sha = theirs
            .strip_prefix("$40\\r\\n")
            .and_then(|rest| rest.get(..40))
            .unwrap_or_else(|| panic!("SCRIPT LOAD answered {theirs}"));
        pair.same(&["EVALSHA_RO", sha, "0"]);
        pair.same(&["EVALSHA", sha, "0"]);
    }
}

#[test]
fn scripts_answer_like_redis_server_in_resp2_and_resp3() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in EDGE_CASES {
            pair.same(args);
        }
    }
}

/// redis-rs's Script: EVALSHA first, EVAL on NOSCRIPT, as most client libraries do.
#[test]
fn a_client_librarys_script_api_works() {
    let node = Node::start();
    let mut con = node.redis();
    let script = redis::Script::new(RATE_LIMITER);
    let mut allowed = Vec::new();
    for _ in 0..5 {
        let (count, ok): (i64, i64) = script
            .key("limit:api")
            .arg(60_000)
            .arg(3)
            .invoke(&mut con)
            .expect("script");
        allowed.push((count, ok));
    }
    assert_eq!(allowed, vec![(1, 1), (2, 1), (3, 1), (4, 0), (5, 0)]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg("limit:api")
        .query(&mut con)
        .expect("PTTL");
    assert!(ttl > 50_000, "the window expires: {ttl}");
}

/// A script's writes replicate as what they did (one MULTI/EXEC block), so a replica
/// ends equal even when the script chose at random (SPOP inside it).
#[test]
fn script_effects_replicate() {
    let primary = Node::start();
    let replica = Node::start();
    let mut raw = replica.raw();
    assert_eq!(
        raw.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]),
        Reply::Simple("OK".into())
    );
    let mut con = primary.redis();
    let () = redis::cmd("SADD")
        .arg("pool")
        .arg((0..50).map(|i| format!("m{i}")).collect::<Vec<_>>())
        .query(&mut con)
        .expect("SADD");
    let moved: Vec<String> = redis::cmd("EVAL")
        .arg(
            "local out = {} for i = 1, 10 do local m = redis.call('SPOP', KEYS[1]) \
             redis.call('RPUSH', KEYS[2], m) out[i] = m end \
             redis.call('INCRBY', KEYS[3], 10) return out",
        )
        .arg(3)
        .arg("pool")
        .arg("taken")
        .arg("count")
        .query(&mut con)
        .expect("EVAL");
    assert_eq!(moved.len(), 10);
    replicated(&mut con);
    let mut on_replica = replica.redis();
    let taken: Vec<String> = redis::cmd("LRANGE")
        .arg("taken")
        .arg(0)
        .arg(-1)
        .query(&mut on_replica)
        .expect("LRANGE");
    assert_eq!(taken, moved);
    let pool = |con: &mut redis::Connection| -> Vec<String> {
        let mut members: Vec<String> = redis::cmd("SMEMBERS")
            .arg("pool")
            .query(con)
            .expect("SMEMBERS");
        members.sort();
        members
    };
    assert_eq!(pool(&mut on_replica), pool(&mut con));
    let count: i64 = redis::cmd("GET")
        .arg("count")
        .query(&mut on_replica)
        .expect("GET");
    assert_eq!(count, 10);
}

/// A script's effects enter the replication stream while its keys are still locked, so
/// another client's writes to the same key reach a replica in the order the primary ran
/// them: the APPENDs of both clients spell the same string on the replica.
#[test]
fn scripts_and_other_writers_replicate_in_the_primary_order() {
    let primary = Node::start_with(&["--io-threads", "2"]);
    let replica = Node::start();
    let mut raw = replica.raw();
    assert_eq!(
        raw.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]),
        Reply::Simple("OK".into())
    );
    replicated(&mut primary.redis());
    let writers: Vec<_> = [true, false, true, false]
        .into_iter()
        .map(|scripted| {
            let mut con = primary.redis();
            std::thread::spawn(move || {
                for _ in 0..60 {
                    let mut pipe = redis::pipe();
                    for _ in 0..50 {
                        if scripted {
                            pipe.cmd("EVAL")
                                .arg("return redis.call('APPEND', KEYS[1], ARGV[1])")
                                .arg(1)
                                .arg("log")
                                .arg("s");
                        } else {
                            pipe.cmd("APPEND").arg("log").arg("c");
                        }
                        pipe.ignore();
                    }
                    pipe.query::<()>(&mut con).expect("APPENDs");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let mut con = primary.redis();
    replicated(&mut con);
    let get = |con: &mut redis::Connection| -> String {
        redis::cmd("GET").arg("log").query(con).expect("GET")
    };
    let (on_primary, on_replica) = (get(&mut con), get(&mut replica.redis()));
    assert_eq!(on_primary.len(), 12_000);
    let first_difference = on_primary
        .bytes()
        .zip(on_replica.bytes())
        .position(|(primary, replica)| primary != replica);
    assert_eq!(
        (first_difference, on_replica.len()),
        (None, 12_000),
        "the replica applied the writes in another order"
    );
}

/// A script runs alone: another client's INCRs land before or after it, never between
/// its commands.
#[test]
fn scripts_are_atomic() {
    let node = Node::start();
    let port = node.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut raw = common::Raw::connect(port);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                raw.cmd(&["INCR", "counter"]);
            }
        })
    };
    let mut raw = node.raw();
    for _ in 0..50 {
        let reply = raw.cmd(&[
            "EVAL",
            "local a = redis.call('GET', KEYS[1]) for i = 1, 2000 do redis.call('GET', KEYS[1]) end \
             return {a, redis.call('GET', KEYS[1])}",
            "1",
            "counter",
        ]);
        let Reply::Array(pair) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(pair[0], pair[1], "the counter moved during the script");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
}

/// A script that loops is stopped: by SCRIPT KILL from another client, and at the
/// latest by the node's time limit; a script that wrote cannot be killed by SCRIPT
/// KILL. The node serves everyone afterwards.
#[test]
fn a_looping_script_is_stopped() {
    let node = Node::start();
    let mut looping = node.raw();
    let mut other = node.raw();
    looping.send(&common::encode(&[b"EVAL", b"while true do end", b"0"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(other.cmd(&["SCRIPT", "KILL"]), Reply::Simple("OK".into()));
    match looping.read() {
        Reply::Error(text) => assert!(
            text.starts_with("ERR Script killed by user with SCRIPT KILL"),
            "{text}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        other.cmd(&["SCRIPT", "KILL"]),
        Reply::err("NOTBUSY No scripts in execution right now.")
    );
    // a script that wrote runs to the time limit (SCRIPT KILL would leave it half done)
    let started = Instant::now();
    looping.send(&common::encode(&[
        b"EVAL",
        b"redis.call('SET', 'k', 'v') while true do end",
        b"0",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    match other.cmd(&["SCRIPT", "KILL"]) {
        Reply::Error(text) => assert!(text.starts_with("UNKILLABLE"), "{text}"),
        reply => panic!("{reply:?}"),
    }
    match looping.read() {
        Reply::Error(text) => assert!(
            text.starts_with("ERR Script killed: it ran longer"),
            "{text}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(looping.cmd(&["GET", "k"]), Reply::bulk("v"));
}

/// A script's commands are checked against the caller's ACL user.
#[test]
fn scripts_run_with_the_callers_permissions() {
    let node = Node::start();
    let mut admin = node.raw();
    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "app", "on", ">pw", "~*", "+eval", "+get"]),
        Reply::Simple("OK".into())
    );
    admin.cmd(&["SET", "k", "v"]);
    let mut app = node.raw();
    assert_eq!(app.cmd(&["AUTH", "app", "pw"]), Reply::Simple("OK".into()));
    assert_eq!(
        app.cmd(&["EVAL", "return redis.call('GET', 'k')", "0"]),
        Reply::bulk("v")
    );
    match app.cmd(&["EVAL", "return redis.call('SET', 'k', 'x')", "0"]) {
        Reply::Error(text) => assert!(text.starts_with("NOPERM"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(admin.cmd(&["GET", "k"]), Reply::bulk("v"));
    match app.cmd(&["SCRIPT", "FLUSH"]) {
        Reply::Error(text) => assert!(text.starts_with("NOPERM"), "{text}"),
        other => panic!("{other:?}"),
    }
}

/// Hostile scripts get errors, and the node goes on: a string or table the size of the
/// node's memory, a table that holds itself, endless recursion, bad arguments.
#[test]
fn hostile_scripts_get_errors_not_the_node() {
    let node = Node::start();
    let mut raw = node.raw();
    for (script, expected) in [
        ("return string.rep('x', 2^30)", "not enough memory"),
        (
            "local t = {} for i = 1, 1e9 do t[i] = i end return #t",
            "not enough memory",
        ),
        ("local t = {} t[1] = t return t", "reached lua stack limit"),
        (
            "local function f() return 1 + f() end return f()",
            "stack overflow",
        ),
        (
            "return redis.call('SET', 'k', function() end)",
            "must be strings or integers",
        ),
        ("setmetatable(_G, nil) x = 1 return x", ""),
    ] {
        let reply = raw.cmd(&["EVAL", script, "0"]);
        match reply {
            Reply::Error(text) => assert!(text.contains(expected), "{script}: {text}"),
            // the guard may be lifted by a script: that is its own business
            other if expected.is_empty() => assert_eq!(other, Reply::Int(1)),
            other => panic!("{script}: {other:?}"),
        }
        assert_eq!(raw.cmd(&["PING"]), Reply::Simple("PONG".into()));
    }
    // the interpreter is still fine for the next script
    assert_eq!(raw.cmd(&["EVAL", "return 40 + 2", "0"]), Reply::Int(42));
}

const LIBRARY: &str = "#!lua name=mylib
redis.register_function('myfunc', function(keys, args) return redis.call('GET', keys[1]) end)
redis.register_function{function_name='echo', callback=function(keys, args) return args[1] end, flags={'no-writes'}, description='echo'}
redis.register_function('counter', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)
redis.register_function{function_name='sneaky', callback=function(keys, args) return redis.call('SET', 'k', 'x') end, flags={'no-writes'}}
redis.register_function('fails', function(keys, args) return redis.call('INCR', 'k') end)
";

const FUNCTION_CASES: &[&[&str]] = &[
    &["FUNCTION", "FLUSH"],
    &["FUNCTION", "DUMP"],
    &["FUNCTION", "DUMP", "extra"],
    &["FUNCTION", "RESTORE"],
    &["FUNCTION", "HELP"],
    &["FUNCTION", "LOAD", LIBRARY],
    &["FUNCTION", "LOAD", LIBRARY],
    &["FUNCTION", "LOAD", "REPLACE", LIBRARY],
    &["FUNCTION", "LOAD", "BOGUS", LIBRARY],
    &["FUNCTION", "LOAD", "return 1"],
    &["FUNCTION", "LOAD", "#!lua"],
    &["FUNCTION", "LOAD", "#!py name=a"],
    &["FUNCTION", "LOAD", "#!lua name=a foo=b"],
    &["FUNCTION", "LOAD", "#!lua name=bad-name\nreturn 1"],
    &["FUNCTION", "LOAD", "#!lua name=b\nreturn 1"],
    &[
        "FUNCTION",
        "LOAD",
        "#!lua name=c\nredis.register_function('myfunc', function() return 1 end)",
    ],
    &[
        "FUNCTION",
        "LOAD",
        "#!lua name=d\nredis.register_function('bad-name', function() return 1 end)",
    ],
    &["FUNCTION", "LOAD", "#!lua name=e\nredis.call('PING')"],
    &["FUNCTION", "LOAD", "#!lua name=f\nx = ("],
    &[
        "FUNCTION",
        "LOAD",
        "#!lua name=g\nredis.register_function{function_name='w', callback=function() return 1 end, flags={'bogus'}}",
    ],
    &[
        "FUNCTION",
        "LOAD",
        "#!lua name=h\nredis.register_function('twice', function() return 1 end)\nredis.register_function('twice', function() return 2 end)",
    ],
    &["SET", "k", "v"],
    &["FCALL", "myfunc", "1", "k"],
    &["FCALL", "echo", "0", "hello"],
    &["FCALL_RO", "echo", "0", "hi"],
    &["FCALL_RO", "myfunc", "1", "k"],
    &["FCALL", "counter", "1", "n", "5"],
    &["FCALL", "counter", "1", "n", "5"],
    &["FCALL", "sneaky", "0"],
    &["FCALL", "fails", "0"],
    &["FCALL", "nosuch", "0"],
    &["FCALL", "myfunc", "2", "k"],
    &["FCALL", "myfunc", "-1"],
    &["FUNCTION", "DELETE", "nosuch"],
    &["FUNCTION", "DELETE", "mylib"],
    &["FCALL", "myfunc", "1", "k"],
    &[
        "FUNCTION",
        "LOAD",
        "#!lua name=one\nredis.register_function{function_name='only', callback=function() return 7 end, description='the one'}",
    ],
    &["FUNCTION", "LIST"],
    &["FUNCTION", "LIST", "WITHCODE"],
    &["FUNCTION", "LIST", "LIBRARYNAME", "o*"],
    &["FUNCTION", "LIST", "LIBRARYNAME", "x*"],
    &["FUNCTION", "STATS"],
    &["FUNCTION", "KILL"],
    &["FUNCTION", "BOGUS"],
    &["FUNCTION", "DELETE"],
    &["FUNCTION", "FLUSH", "BOGUS"],
    &["FUNCTION", "FLUSH"],
    &["FUNCTION", "LIST"],
];

#[test]
fn functions_answer_like_redis_server_in_resp2_and_resp3() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in FUNCTION_CASES {
            pair.same(args);
        }
    }
}

/// Libraries are data replicas hold: FUNCTION LOAD, DELETE and RESTORE replicate, a replica that
/// full-syncs later gets them after the snapshot, and a replica refuses a client's
/// FUNCTION LOAD and (Redis 7) a call of a function not declared `no-writes`.
#[test]
fn functions_replicate() {
    let primary = Node::start();
    let mut con = primary.redis();
    let () = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIBRARY)
        .query(&mut con)
        .map(|_: String| ())
        .expect("FUNCTION LOAD");
    let attach = |replica: &Node| {
        let mut raw = replica.raw();
        assert_eq!(
            raw.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]),
            Reply::Simple("OK".into())
        );
    };
    // loaded before this replica attached: it arrives with the full sync
    let early = Node::start();
    attach(&early);
    let () = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=later\nredis.register_function{function_name='later', callback=function() return 'later' end, flags={'no-writes'}}")
        .query(&mut con)
        .map(|_: String| ())
        .expect("FUNCTION LOAD");
    replicated(&mut con);
    let mut raw = early.raw();
    raw.cmd(&["SET", "probe", "1"]);
    assert_eq!(
        raw.cmd(&["FCALL", "later", "0"]),
        Reply::bulk("later"),
        "streamed FUNCTION LOAD"
    );
    assert_eq!(
        raw.cmd(&["FCALL_RO", "echo", "0", "x"]),
        Reply::bulk("x"),
        "library loaded before the full sync"
    );
    // a function without `no-writes` is a write, as in Redis 7
    assert_eq!(
        raw.cmd(&["FCALL", "counter", "1", "c", "1"]),
        Reply::err("READONLY You can't write against a read only replica.")
    );
    match raw.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=z\nredis.register_function('z', function() return 1 end)",
    ]) {
        Reply::Error(text) => assert!(text.starts_with("READONLY"), "{text}"),
        other => panic!("{other:?}"),
    }
    let () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("later")
        .query(&mut con)
        .expect("FUNCTION DELETE");
    replicated(&mut con);
    assert_eq!(
        raw.cmd(&["FCALL", "later", "0"]),
        Reply::err("ERR Function not found")
    );
    // FUNCTION RESTORE replicates too: FLUSH leaves the replica with the payload's only
    let scratch = Node::start();
    let mut scratch = scratch.raw();
    scratch.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=moved\nredis.register_function{function_name='moved', callback=function() return 'moved' end, flags={'no-writes'}}",
    ]);
    let Reply::Bulk(payload) = scratch.cmd(&["FUNCTION", "DUMP"]) else {
        panic!("FUNCTION DUMP");
    };
    let () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&payload)
        .arg("FLUSH")
        .query(&mut con)
        .expect("FUNCTION RESTORE");
    replicated(&mut con);
    assert_eq!(raw.cmd(&["FCALL", "moved", "0"]), Reply::bulk("moved"));
    assert_eq!(
        raw.cmd(&["FCALL_RO", "echo", "0", "x"]),
        Reply::err("ERR Function not found")
    );
}

/// Waits until the one replica acknowledged everything written on `con`.
fn replicated(con: &mut redis::Connection) {
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(con)
        .expect("WAIT");
    assert_eq!(acked, 1);
}

/// The time limit is Redis's `busy-reply-threshold` (alias `lua-time-limit`): CONFIG SET
/// changes it for the scripts that start afterwards.
#[test]
fn the_time_limit_is_configurable() {
    let node = Node::start();
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&["CONFIG", "GET", "busy-reply-threshold"]),
        Reply::Array(vec![
            Reply::bulk("busy-reply-threshold"),
            Reply::bulk("5000")
        ])
    );
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "lua-time-limit", "300"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        raw.cmd(&["CONFIG", "GET", "busy-reply-threshold"]),
        Reply::Array(vec![
            Reply::bulk("busy-reply-threshold"),
            Reply::bulk("300")
        ])
    );
    let started = Instant::now();
    match raw.cmd(&["EVAL", "while true do end", "0"]) {
        Reply::Error(text) => assert!(
            text.starts_with("ERR Script killed: it ran longer than the 300 ms limit"),
            "{text}"
        ),
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "{took:?}"
    );
    match raw.cmd(&["CONFIG", "SET", "busy-reply-threshold", "soon"]) {
        Reply::Error(text) => assert!(text.contains("busy-reply-threshold"), "{text}"),
        other => panic!("{other:?}"),
    }
}
