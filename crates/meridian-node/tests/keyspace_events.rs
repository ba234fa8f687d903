//! Keyspace notifications against redis-server itself: a subscriber on each server
//! (`PSUBSCRIBE __key*__:*`), the same commands run on both, and the messages the
//! subscribers received compared in order, byte for byte. Hand-written cases per
//! command family with Redis's special cases, class filtering, CONFIG's canonical
//! flag strings, expiry and eviction, RESP3 pushes, and random command sequences
//! (`MERIDIAN_DIFF_SEED` replays one).

mod common;

use std::time::Duration;

use common::redis_server::{RedisServer, owned, seeded_runner};
use common::{Node, Raw, Reply};
use proptest::prelude::*;

/// The pattern every subscriber listens to (both channel families).
const PATTERN: &str = "__key*__:*";
/// Published after each case: the subscriber has read everything once it comes.
const SENTINEL: &str = "__keyevent@0__:~end-of-case~";

/// One server: a connection for commands and a subscribed one.
struct Side {
    commands: Raw,
    subscriber: Raw,
}

impl Side {
    fn new(port: u16, subscriber_protocol: u8) -> Side {
        let commands = Raw::connect(port);
        let mut subscriber = Raw::connect(port);
        if subscriber_protocol == 3 {
            subscriber.cmd(&["HELLO", "3"]);
        }
        subscriber.cmd(&["PSUBSCRIBE", PATTERN]);
        Side {
            commands,
            subscriber,
        }
    }

    /// The messages received up to the sentinel, each as its escaped bytes.
    fn received(&mut self) -> Vec<String> {
        self.commands.cmd(&["PUBLISH", SENTINEL, "-"]);
        let mut messages = Vec::new();
        loop {
            let mut bytes = Vec::new();
            self.subscriber.read_bytes(&mut bytes);
            let text = bytes.escape_ascii().to_string();
            if text.contains("~end-of-case~") {
                return messages;
            }
            messages.push(text);
        }
    }
}

/// A redis-server and a node with the same `notify-keyspace-events`.
struct Events {
    _redis: RedisServer,
    _node: Node,
    theirs: Side,
    ours: Side,
}

impl Events {
    fn start(flags: &str) -> Events {
        Events::start_with(flags, 2)
    }

    fn start_with(flags: &str, subscriber_protocol: u8) -> Events {
        let redis = RedisServer::start();
        let node = Node::start();
        let mut events = Events {
            theirs: Side::new(redis.port, subscriber_protocol),
            ours: Side::new(node.port, subscriber_protocol),
            _redis: redis,
            _node: node,
        };
        events.both(&["CONFIG", "SET", "notify-keyspace-events", flags]);
        events
    }

    /// Both replies to `args` (redis-server's, the node's), escaped bytes.
    fn both(&mut self, args: &[&str]) -> (String, String) {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        (
            self.theirs
                .commands
                .cmd_bytes(&args)
                .escape_ascii()
                .to_string(),
            self.ours
                .commands
                .cmd_bytes(&args)
                .escape_ascii()
                .to_string(),
        )
    }

    /// Runs `commands` on both servers, then returns the messages each subscriber got.
    fn run(&mut self, commands: &[&[&str]]) -> (Vec<String>, Vec<String>) {
        for args in commands {
            self.both(args);
        }
        self.received()
    }

    fn received(&mut self) -> (Vec<String>, Vec<String>) {
        (self.theirs.received(), self.ours.received())
    }

    /// Runs `commands` and requires the same messages, in the same order.
    fn same(&mut self, commands: &[&[&str]]) -> Vec<String> {
        let (theirs, ours) = self.run(commands);
        assert_eq!(ours, theirs, "{commands:?}");
        theirs
    }
}

/// A message as the RESP2 subscriber gets it, escaped like [`Side::received`].
fn pmessage(channel: &str, payload: &str) -> String {
    format!(
        "*4\r\n$8\r\npmessage\r\n${}\r\n{PATTERN}\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
        PATTERN.len(),
        channel.len(),
        payload.len()
    )
    .as_bytes()
    .escape_ascii()
    .to_string()
}

/// Whether the keyevent messages in `received` have `events` (event, key) in a row.
fn has_in_a_row(received: &[String], events: &[(&str, &str)]) -> bool {
    let keyevent: Vec<&String> = received
        .iter()
        .filter(|message| message.contains("__keyevent@"))
        .collect();
    let wanted = keyevents(events);
    keyevent
        .windows(wanted.len())
        .any(|window| window.iter().zip(&wanted).all(|(got, want)| *got == want))
}

/// The keyevent messages of `events` (event, key), in order.
fn keyevents(events: &[(&str, &str)]) -> Vec<String> {
    events
        .iter()
        .map(|(event, key)| pmessage(&format!("__keyevent@0__:{event}"), key))
        .collect()
}

#[test]
fn string_commands() {
    let mut events = Events::start("KEA");
    let received = events.same(&[
        &["SET", "s", "v"],
        &["SET", "s", "v2", "EX", "100"],
        &["SET", "s", "v3", "KEEPTTL"],
        &["SET", "s", "v4", "NX"],
        &["SET", "s", "v5", "XX", "GET"],
        &["SET", "nosuch", "v", "XX"],
        &["SET", "p", "v", "PXAT", "99999999999999"],
        &["SETNX", "s", "x"],
        &["SETNX", "n", "x"],
        &["SETEX", "e", "100", "v"],
        &["PSETEX", "e", "100000", "v"],
        &["SETEX", "e", "-1", "v"],
        &["GETSET", "s", "g"],
        &["MSET", "a", "1", "b", "2", "a", "3"],
        &["MSETNX", "a", "1", "c", "2"],
        &["MSETNX", "c", "1", "d", "2"],
        &["APPEND", "s", "++"],
        &["APPEND", "fresh", "x"],
        &["SETRANGE", "s", "0", ""],
        &["SETRANGE", "nosuch", "3", ""],
        &["SETRANGE", "s", "1", "xy"],
        &["SETRANGE", "grown", "2", "z"],
        &["INCR", "i"],
        &["DECR", "i"],
        &["INCRBY", "i", "5"],
        &["DECRBY", "i", "2"],
        &["INCR", "s"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["INCRBYFLOAT", "f", "abc"],
        &["GETDEL", "f"],
        &["GETDEL", "f"],
        &["GETEX", "i", "EX", "100"],
        &["GETEX", "i", "PERSIST"],
        &["GETEX", "i", "PERSIST"],
        &["GETEX", "i"],
        &["GETEX", "i", "PXAT", "1"],
        &["GETEX", "nosuch", "EX", "10"],
        &["LPUSH", "list", "x"],
        &["SET", "list", "v", "GET"],
        &["SET", "list", "v"],
    ]);
    // the cases Redis makes special, spelled out: these fail if nothing is published
    assert!(has_in_a_row(&received, &[("set", "e"), ("expire", "e")]));
    assert!(received.contains(&pmessage("__keyevent@0__:incrbyfloat", "f")));
    assert!(received.contains(&pmessage("__keyspace@0__:i", "persist")));
    assert!(has_in_a_row(
        &received,
        &[("set", "a"), ("set", "b"), ("set", "a")]
    ));
    assert!(has_in_a_row(&received, &[("del", "i"), ("lpush", "list")]));
}

#[test]
fn generic_commands() {
    let mut events = Events::start("KEAn");
    events.same(&[
        &["MSET", "a", "1", "b", "2", "c", "3"],
        &["DEL", "a", "nosuch", "b"],
        &["UNLINK", "c", "c"],
        &["SET", "k", "v"],
        &["EXPIRE", "k", "100"],
        &["PEXPIRE", "k", "100000"],
        &["EXPIREAT", "k", "99999999999"],
        &["PEXPIREAT", "k", "99999999999999"],
        &["EXPIRE", "k", "100", "NX"],
        &["EXPIRE", "k", "200", "GT"],
        &["EXPIRE", "nosuch", "100"],
        &["PERSIST", "k"],
        &["PERSIST", "k"],
        &["PERSIST", "nosuch"],
        &["EXPIRE", "k", "-1"],
        &["SET", "k", "v"],
        &["PEXPIREAT", "k", "1"],
        &["SET", "k", "v"],
        &["EXPIRE", "k", "abc"],
        &["RENAME", "k", "k2"],
        &["RENAME", "k2", "k2"],
        &["RENAME", "nosuch", "x"],
        &["SET", "k3", "v"],
        &["RENAME", "k2", "k3"],
        &["RENAMENX", "k3", "k4"],
        &["SET", "k5", "v"],
        &["RENAMENX", "k4", "k5"],
        &["RENAMENX", "k4", "k4"],
        &["COPY", "k4", "k6"],
        &["COPY", "k4", "k6"],
        &["COPY", "k4", "k6", "REPLACE"],
        &["COPY", "nosuch", "k7"],
        &["SET", "t", "v", "EX", "100"],
        &["RENAME", "t", "t2"],
        &["FLUSHALL"],
    ]);
}

/// DUMP payloads are each server's own: each RESTOREs what it dumped.
#[test]
fn restore() {
    let mut events = Events::start("KEAn");
    events.both(&["RPUSH", "l", "a", "b"]);
    let sides = [&mut events.theirs, &mut events.ours];
    for side in sides {
        let Reply::Bulk(payload) = side.commands.cmd(&["DUMP", "l"]) else {
            panic!("DUMP");
        };
        for args in [
            &[&b"RESTORE"[..], b"r", b"0", &payload][..],
            &[b"RESTORE", b"r", b"0", &payload],
            &[b"RESTORE", b"r", b"100000", &payload, b"REPLACE"],
            &[b"RESTORE", b"r", b"1", &payload, b"REPLACE", b"ABSTTL"],
            &[b"RESTORE", b"gone", b"1", &payload, b"ABSTTL"],
        ] {
            side.commands.cmd_bytes(args);
        }
    }
    let (theirs, ours) = events.received();
    assert_eq!(ours, theirs);
    assert!(theirs.contains(&pmessage("__keyevent@0__:restore", "r")));
    assert!(theirs.contains(&pmessage("__keyevent@0__:del", "r")));
}

#[test]
fn list_commands() {
    let mut events = Events::start("KEAn");
    let received = events.same(&[
        &["LPUSH", "l", "a", "b"],
        &["RPUSH", "l", "c"],
        &["LPUSHX", "nosuch", "a"],
        &["RPUSHX", "l", "d"],
        &["LPOP", "l"],
        &["RPOP", "l", "2"],
        &["LPOP", "l", "0"],
        &["LPOP", "nosuch"],
        &["LSET", "l", "0", "x"],
        &["LSET", "l", "10", "x"],
        &["LINSERT", "l", "BEFORE", "x", "w"],
        &["LINSERT", "l", "AFTER", "nope", "w"],
        &["LINSERT", "nosuch", "AFTER", "x", "w"],
        &["RPUSH", "l", "x", "y", "x"],
        &["LREM", "l", "0", "nope"],
        &["LREM", "l", "-1", "x"],
        &["LTRIM", "l", "0", "-1"],
        &["LTRIM", "l", "1", "2"],
        &["LTRIM", "nosuch", "0", "1"],
        &["LMOVE", "l", "m", "LEFT", "RIGHT"],
        &["LMOVE", "l", "l", "RIGHT", "LEFT"],
        &["LMOVE", "l", "m", "RIGHT", "LEFT"],
        &["RPOPLPUSH", "m", "n"],
        &["RPOPLPUSH", "nosuch", "n"],
        &["RPUSH", "p", "1", "2", "3"],
        &["LMPOP", "2", "nosuch", "p", "LEFT", "COUNT", "2"],
        &["LMPOP", "1", "p", "RIGHT", "COUNT", "5"],
        &["RPUSH", "q", "1", "2"],
        &["BLPOP", "nosuch", "q", "1"],
        &["BRPOP", "q", "1"],
        &["RPUSH", "q", "1", "2"],
        &["BLMOVE", "q", "r", "LEFT", "LEFT", "1"],
        &["BRPOPLPUSH", "q", "r", "1"],
        &["BLMPOP", "1", "2", "r", "nosuch", "RIGHT", "COUNT", "10"],
        &["RPUSH", "t", "a", "b"],
        &["LTRIM", "t", "5", "10"],
        &["RPUSH", "t", "a", "a"],
        &["LREM", "t", "0", "a"],
        &["SET", "str", "v"],
        &["LPUSH", "str", "a"],
        &["LMOVE", "str", "l", "LEFT", "LEFT"],
    ]);
    // a pop emptying a list: the pop, then del
    assert!(has_in_a_row(&received, &[("rpop", "p"), ("del", "p")]));
    // LMOVE: the push onto the destination first, then the pop from the source
    assert!(has_in_a_row(&received, &[("rpush", "m"), ("lpop", "l")]));
}

/// A blocked BLMOVE served by a push: the push's event, then the pop and push of the
/// served command (and the del of the emptied source).
#[test]
fn blocked_client_served() {
    let mut events = Events::start("KEA");
    let mut blocked = [
        Raw::connect(events._redis.port),
        Raw::connect(events._node.port),
    ];
    for client in &mut blocked {
        client.send(&common::encode(&[
            b"BLMOVE", b"src", b"dst", b"LEFT", b"RIGHT", b"5",
        ]));
    }
    // both servers have the client blocked before the push
    for port in [events._redis.port, events._node.port] {
        let mut admin = Raw::connect(port);
        for _ in 0..200 {
            let Reply::Bulk(info) = admin.cmd(&["INFO", "clients"]) else {
                panic!("INFO");
            };
            if String::from_utf8_lossy(&info).contains("blocked_clients:1") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    events.both(&["RPUSH", "src", "x"]);
    for client in &mut blocked {
        assert_eq!(client.read(), Reply::bulk("x"));
    }
    let (theirs, ours) = events.received();
    assert_eq!(ours, theirs);
    let expected = keyevents(&[
        ("rpush", "src"),
        ("rpush", "dst"),
        ("lpop", "src"),
        ("del", "src"),
    ]);
    let keyevent_only: Vec<String> = theirs
        .iter()
        .filter(|message| message.contains("keyevent"))
        .cloned()
        .collect();
    assert_eq!(keyevent_only, expected);
}

#[test]
fn set_commands() {
    let mut events = Events::start("KEAn");
    let received = events.same(&[
        &["SADD", "s", "a", "b", "c"],
        &["SADD", "s", "a"],
        &["SREM", "s", "nope"],
        &["SREM", "s", "a", "nope"],
        &["SREM", "nosuch", "a"],
        &["SADD", "t", "b", "x"],
        &["SMOVE", "s", "t", "b"],
        &["SMOVE", "s", "u", "c"],
        &["SMOVE", "u", "u", "c"],
        &["SMOVE", "nosuch", "u", "c"],
        &["SMOVE", "t", "u", "nope"],
        &["SADD", "p", "1"],
        &["SPOP", "p"],
        &["SPOP", "p"],
        &["SADD", "p", "1", "2", "3"],
        &["SPOP", "p", "0"],
        &["SPOP", "p", "1"],
        &["SPOP", "p", "5"],
        &["SADD", "a", "1", "2"],
        &["SADD", "b", "2", "3"],
        &["SINTERSTORE", "d", "a", "b"],
        &["SUNIONSTORE", "d", "a", "b"],
        &["SDIFFSTORE", "d", "a", "b"],
        &["SINTERSTORE", "d", "a", "nosuch"],
        &["SINTERSTORE", "d", "a", "nosuch"],
        &["SDIFFSTORE", "e", "a", "a"],
        &["SET", "str", "v"],
        &["SADD", "str", "a"],
        &["SMOVE", "a", "str", "1"],
    ]);
    // SMOVE emptying its source: srem, del, then the destination's creation and sadd
    assert!(has_in_a_row(
        &received,
        &[("srem", "s"), ("del", "s"), ("new", "u"), ("sadd", "u")]
    ));
}

#[test]
fn sorted_set_commands() {
    let mut events = Events::start("KEAn");
    let received = events.same(&[
        &["ZADD", "z", "1", "a", "2", "b", "3", "c"],
        &["ZADD", "z", "1", "a"],
        &["ZADD", "z", "CH", "5", "a"],
        &["ZADD", "z", "NX", "9", "a"],
        &["ZADD", "z", "INCR", "1", "a"],
        &["ZADD", "z", "INCR", "0", "a"],
        &["ZINCRBY", "z", "2", "b"],
        &["ZINCRBY", "fresh", "2", "b"],
        &["ZADD", "none", "XX", "1", "a"],
        &["ZREM", "z", "nope"],
        &["ZREM", "z", "c"],
        &["ZREM", "fresh", "b"],
        &["ZADD", "r", "1", "a", "2", "b", "3", "c", "4", "d"],
        &["ZREMRANGEBYRANK", "r", "0", "0"],
        &["ZREMRANGEBYSCORE", "r", "2", "2"],
        &["ZREMRANGEBYSCORE", "r", "100", "200"],
        &["ZREMRANGEBYLEX", "r", "-", "+"],
        &["ZADD", "p", "1", "a", "2", "b", "3", "c"],
        &["ZPOPMIN", "p"],
        &["ZPOPMAX", "p", "0"],
        &["ZPOPMAX", "p", "5"],
        &["ZPOPMIN", "p"],
        &["ZADD", "p", "1", "a", "2", "b"],
        &["ZMPOP", "2", "nosuch", "p", "MAX", "COUNT", "1"],
        &["BZPOPMIN", "p", "1"],
        &["BZMPOP", "1", "1", "nosuch", "MIN"],
        &["ZADD", "u1", "1", "a", "2", "b"],
        &["ZADD", "u2", "3", "b", "4", "c"],
        &["ZUNIONSTORE", "d", "2", "u1", "u2"],
        &["ZINTERSTORE", "d", "2", "u1", "u2"],
        &["ZDIFFSTORE", "d", "2", "u1", "u2"],
        &["ZINTERSTORE", "d", "2", "u1", "nosuch"],
        &["ZINTERSTORE", "d", "2", "u1", "nosuch"],
        &["ZRANGESTORE", "d", "u1", "0", "-1"],
        &["ZRANGESTORE", "d", "u1", "5", "9"],
        &["ZRANGESTORE", "d2", "nosuch", "0", "-1"],
        &["SET", "str", "v"],
        &["ZADD", "str", "1", "a"],
    ]);
    // ZPOPMAX emptying its key: zpopmax, then del
    assert!(has_in_a_row(&received, &[("zpopmax", "p"), ("del", "p")]));
    assert!(has_in_a_row(
        &received,
        &[("new", "fresh"), ("zincr", "fresh")]
    ));
}

#[test]
fn hash_commands() {
    let mut events = Events::start("KEAn");
    events.same(&[
        &["HSET", "h", "a", "1", "b", "2"],
        &["HSET", "h", "a", "1"],
        &["HMSET", "h", "c", "3"],
        &["HSETNX", "h", "a", "9"],
        &["HSETNX", "h", "d", "4"],
        &["HDEL", "h", "nope"],
        &["HDEL", "h", "a", "nope"],
        &["HDEL", "nosuch", "a"],
        &["HINCRBY", "h", "n", "5"],
        &["HINCRBY", "h", "b", "1"],
        &["HINCRBY", "h", "c", "x"],
        &["HINCRBYFLOAT", "h", "f", "1.5"],
        &["HINCRBYFLOAT", "new", "f", "2"],
        &["HDEL", "h", "b", "c", "d", "n", "f"],
        &["SET", "str", "v"],
        &["HSET", "str", "a", "1"],
    ]);
}

#[test]
fn bitmap_and_hyperloglog_commands() {
    let mut events = Events::start("KEAn");
    events.same(&[
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "7", "0"],
        &["SETBIT", "b", "100", "0"],
        &["SETBIT", "c", "3", "0"],
        &["BITFIELD", "b", "GET", "u8", "0"],
        &["BITFIELD", "b", "SET", "u8", "0", "0"],
        &["BITFIELD", "b", "SET", "u8", "0", "255"],
        &["BITFIELD", "b", "INCRBY", "u8", "0", "1"],
        &[
            "BITFIELD", "b", "OVERFLOW", "FAIL", "INCRBY", "u8", "0", "300",
        ],
        &[
            "BITFIELD", "g", "OVERFLOW", "FAIL", "INCRBY", "u8", "0", "300",
        ],
        &["BITFIELD", "g2", "SET", "u8", "0", "0"],
        &["BITFIELD_RO", "b", "GET", "u8", "0"],
        &["BITOP", "AND", "dest", "b", "c"],
        &["BITOP", "OR", "dest", "nosuch"],
        &["BITOP", "OR", "dest", "nosuch"],
        &["BITOP", "NOT", "dest", "b"],
        &["PFADD", "h", "a", "b"],
        &["PFADD", "h", "a"],
        &["PFADD", "h2"],
        &["PFADD", "h2"],
        &["PFMERGE", "h3", "h", "h2"],
        &["PFMERGE", "h3"],
        &["PFCOUNT", "h", "h2"],
    ]);
}

/// `n`: a created key's `new` comes before the event of the command creating it; an
/// overwrite is no creation, a replaced key (RENAME, COPY REPLACE) is.
#[test]
fn new_key_events() {
    let mut events = Events::start("KEAn");
    let received = events.same(&[
        &["SET", "a", "1"],
        &["SET", "a", "2"],
        &["MSET", "b", "1", "a", "3", "c", "2"],
        &["MSETNX", "d", "1", "e", "2"],
        &["SETEX", "f", "100", "v"],
        &["GETSET", "g", "v"],
        &["APPEND", "h", "v"],
        &["INCR", "i"],
        &["INCRBYFLOAT", "j", "1"],
        &["SETRANGE", "k", "1", "v"],
        &["SETNX", "l", "v"],
        &["RENAME", "a", "m"],
        &["RENAME", "m", "b"],
        &["COPY", "b", "n"],
        &["COPY", "b", "n", "REPLACE"],
        &["LPUSH", "list", "x", "y"],
        &["LMOVE", "list", "list2", "LEFT", "LEFT"],
        &["RPOPLPUSH", "list", "list2"],
        &["SADD", "s1", "x", "y"],
        &["SMOVE", "s1", "s2", "x"],
        &["SMOVE", "s1", "s2", "y"],
        &["SADD", "s3", "x"],
        &["SINTERSTORE", "s4", "s2", "s3"],
        &["SUNIONSTORE", "s4", "s2", "s3"],
        &["HSET", "h1", "f", "v"],
        &["HINCRBY", "h2", "f", "1"],
        &["HINCRBYFLOAT", "h3", "f", "1"],
        &["HSETNX", "h4", "f", "v"],
        &["SETBIT", "bits", "1", "1"],
        &["BITFIELD", "bits2", "SET", "u8", "0", "1"],
        &["BITOP", "OR", "bits3", "bits", "bits2"],
        &["BITOP", "OR", "bits3", "bits"],
        &["PFADD", "hll", "a"],
        &["PFMERGE", "hll2", "hll"],
        &["EXPIRE", "f", "-1"],
        &["SET", "f", "v"],
    ]);
    // RENAME onto an existing key: new, then rename_from / rename_to, as Redis
    assert!(has_in_a_row(
        &received,
        &[("new", "b"), ("rename_from", "m"), ("rename_to", "b")]
    ));
    assert!(has_in_a_row(&received, &[("new", "a"), ("set", "a")]));
}

#[test]
fn transactions_publish_as_their_commands_run() {
    let mut events = Events::start("KEA");
    events.same(&[
        &["MULTI"],
        &["SET", "a", "1"],
        &["INCR", "a"],
        &["LPUSH", "l", "x"],
        &["RPOP", "l"],
        &["EXEC"],
    ]);
}

#[test]
fn classes_filter_what_is_published() {
    // only list events, only on the keyspace channel
    let mut events = Events::start("Kl");
    let commands: &[&[&str]] = &[
        &["SET", "k", "v"],
        &["LPUSH", "l", "a"],
        &["SADD", "s", "a"],
        &["HSET", "h", "a", "1"],
        &["LPOP", "l"],
        &["EXPIRE", "k", "100"],
        &["DEL", "k", "s", "h"],
    ];
    let received = events.same(commands);
    assert_eq!(
        received,
        [
            pmessage("__keyspace@0__:l", "lpush"),
            pmessage("__keyspace@0__:l", "lpop"),
        ]
    );
    // generic and string keyevents
    events.both(&["CONFIG", "SET", "notify-keyspace-events", "E$g"]);
    let received = events.same(commands);
    assert!(received.contains(&pmessage("__keyevent@0__:set", "k")));
    assert!(received.iter().all(|message| message.contains("keyevent")));
    // a class without K or E publishes nothing, nor K or E without a class
    for flags in ["g$lshzxe", "KE", ""] {
        events.both(&["CONFIG", "SET", "notify-keyspace-events", flags]);
        assert!(events.same(commands).is_empty(), "{flags}");
    }
}

#[test]
fn config_reads_back_redis_canonical_flags() {
    let mut events = Events::start("");
    for flags in [
        "KEA",
        "",
        "Elg",
        "g$lshzxetdK",
        "Anm",
        "mnK$",
        "A",
        "AKEnm",
        "EEKK",
        "xe",
        "KEw",
        "a",
        "K E",
        "tdz",
    ] {
        let (theirs, ours) = events.both(&["CONFIG", "SET", "notify-keyspace-events", flags]);
        assert_eq!(ours, theirs, "CONFIG SET {flags:?}");
        let (theirs, ours) = events.both(&["CONFIG", "GET", "notify-keyspace-events"]);
        assert_eq!(ours, theirs, "CONFIG GET after {flags:?}");
    }
    // the start flag takes the same letters
    let node = Node::start_with(&["--notify-keyspace-events", "KEA"]);
    let reply = node.raw().cmd(&["CONFIG", "GET", "notify-keyspace-events"]);
    assert_eq!(
        reply,
        Reply::Array(vec![
            Reply::bulk("notify-keyspace-events"),
            Reply::bulk("AKE")
        ])
    );
}

/// The messages about `key` (its keyspace channel, or it as a keyevent's payload).
fn about(messages: &[String], key: &str) -> Vec<String> {
    let channel = format!("__keyspace@0__:{key}\\r\\n");
    let payload = format!("\\r\\n${}\\r\\n{key}\\r\\n", key.len());
    messages
        .iter()
        .filter(|message| message.contains(&channel) || message.ends_with(&payload))
        .cloned()
        .collect()
}

#[test]
fn expired_events() {
    let mut events = Events::start("KEA");
    for args in [
        &["SET", "a", "v", "PX", "400"][..],
        &["SET", "b", "v"],
        &["PEXPIRE", "b", "400"],
        &["HSET", "c", "f", "v"],
        &["PEXPIRE", "c", "400"],
    ] {
        events.both(args);
    }
    std::thread::sleep(Duration::from_millis(1000));
    // whichever of active and lazy expiry removes a key, it is expired once, after
    // its own events (keys expire in either server's order: compared key by key)
    for args in [&["EXISTS", "a"][..], &["GET", "b"], &["HGET", "c", "f"]] {
        events.both(args);
    }
    let (theirs, ours) = events.received();
    assert_eq!(ours.len(), theirs.len(), "{theirs:?} / {ours:?}");
    for key in ["a", "b", "c"] {
        let theirs = about(&theirs, key);
        assert_eq!(about(&ours, key), theirs, "{key}");
        assert_eq!(
            theirs[theirs.len() - 2..],
            [
                pmessage(&format!("__keyspace@0__:{key}"), "expired"),
                pmessage("__keyevent@0__:expired", key),
            ]
        );
    }
    // `Ex`: only the expired keyevent
    events.both(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]);
    events.both(&["SET", "d", "v", "PX", "400"]);
    events.both(&["DEL", "nosuch"]);
    std::thread::sleep(Duration::from_millis(1000));
    let received = events.same(&[&["GET", "d"]]);
    assert_eq!(received, keyevents(&[("expired", "d")]));
}

#[test]
fn evicted_events() {
    let mut events = Events::start("KEA");
    events.same(&[
        &["SET", "victim", "v"],
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    ]);
    // lowering maxmemory below what is used evicts at once, on both
    let received = events.same(&[
        &["CONFIG", "SET", "maxmemory", "1"],
        &["CONFIG", "SET", "maxmemory", "0"],
    ]);
    assert_eq!(
        received,
        [
            pmessage("__keyspace@0__:victim", "evicted"),
            pmessage("__keyevent@0__:evicted", "victim"),
        ]
    );
}

#[test]
fn resp3_subscribers_get_pushes() {
    let mut events = Events::start_with("KEA", 3);
    let received = events.same(&[
        &["SET", "k", "v"],
        &["RPUSH", "l", "a"],
        &["LPOP", "l"],
        &["DEL", "k"],
    ]);
    assert_eq!(received.len(), 10);
    assert!(received.iter().all(|message| message.starts_with(">4")));
}

fn command() -> impl Strategy<Value = Vec<String>> {
    let key = prop::sample::select(vec!["k1", "k2", "k3"]);
    let value = prop::sample::select(vec!["a", "b", "1", "2"]);
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["SET", k, v])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["SET", k, v, "EX", "100"])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["SETNX", k, v])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["APPEND", k, v])),
        key.clone().prop_map(|k| owned(&["INCR", k])),
        key.clone().prop_map(|k| owned(&["GETDEL", k])),
        key.clone().prop_map(|k| owned(&["DEL", k])),
        key.clone().prop_map(|k| owned(&["EXPIRE", k, "100"])),
        key.clone().prop_map(|k| owned(&["EXPIRE", k, "-5"])),
        key.clone().prop_map(|k| owned(&["PERSIST", k])),
        (key.clone(), key.clone()).prop_map(|(a, b)| owned(&["RENAME", a, b])),
        (key.clone(), key.clone()).prop_map(|(a, b)| owned(&["COPY", a, b])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["LPUSH", k, v])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["RPUSHX", k, v])),
        key.clone().prop_map(|k| owned(&["LPOP", k])),
        key.clone().prop_map(|k| owned(&["RPOP", k, "2"])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["LREM", k, "0", v])),
        key.clone().prop_map(|k| owned(&["LTRIM", k, "1", "-1"])),
        (key.clone(), key.clone()).prop_map(|(a, b)| owned(&["LMOVE", a, b, "LEFT", "RIGHT"])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["SADD", k, v])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["SREM", k, v])),
        key.clone().prop_map(|k| owned(&["SPOP", k])),
        (key.clone(), key.clone(), value.clone()).prop_map(|(a, b, v)| owned(&["SMOVE", a, b, v])),
        (key.clone(), key.clone(), key.clone()).prop_map(|(d, a, b)| owned(&[
            "SINTERSTORE",
            d,
            a,
            b
        ])),
        (key.clone(), value.clone(), value.clone()).prop_map(|(k, f, v)| owned(&["HSET", k, f, v])),
        (key.clone(), value.clone()).prop_map(|(k, f)| owned(&["HDEL", k, f])),
        (key.clone(), value.clone()).prop_map(|(k, f)| owned(&["HINCRBY", k, f, "1"])),
        key.clone().prop_map(|k| owned(&["SETBIT", k, "3", "1"])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["PFADD", k, v])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["ZADD", k, "1", v])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["ZINCRBY", k, "2", v])),
        (key.clone(), value.clone()).prop_map(|(k, v)| owned(&["ZREM", k, v])),
        key.clone().prop_map(|k| owned(&["ZPOPMIN", k])),
        key.clone()
            .prop_map(|k| owned(&["ZREMRANGEBYSCORE", k, "0", "1"])),
        (key.clone(), key.clone(), key.clone()).prop_map(|(d, a, b)| owned(&[
            "ZUNIONSTORE",
            d,
            "2",
            a,
            b
        ])),
    ]
}

#[test]
fn random_sequences() {
    use proptest::test_runner::TestCaseError;
    let (mut runner, seed) = seeded_runner(48);
    let events = std::cell::RefCell::new(Events::start("KEAn"));
    let result = runner.run(&prop::collection::vec(command(), 1..24), |commands| {
        let mut events = events.borrow_mut();
        events.both(&["FLUSHALL"]);
        let commands: Vec<Vec<&str>> = commands
            .iter()
            .map(|args| args.iter().map(String::as_str).collect())
            .collect();
        let commands: Vec<&[&str]> = commands.iter().map(Vec::as_slice).collect();
        let (theirs, ours) = events.run(&commands);
        if ours == theirs {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{commands:?}: redis-server {theirs:?}, node {ours:?}"
            )))
        }
    });
    if let Err(failure) = result {
        panic!("seed {seed}: {failure}");
    }
}

/// A replica publishes the events of the writes it applies, as a Redis replica does
/// (it runs them): its subscribers see the primary's writes, and the primary's
/// expiry as the `del` it sends.
#[test]
fn replicas_publish_the_writes_they_apply() {
    let primary = Node::start_named("events-primary", 8, &[]);
    let replica = Node::start_named("events-replica", 8, &["--notify-keyspace-events", "Eg$lx"]);
    let mut subscriber = replica.raw();
    subscriber.cmd(&["PSUBSCRIBE", PATTERN]);
    let reply = replica
        .raw()
        .cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]);
    assert_eq!(reply, Reply::ok());
    common::node_process::wait_until("link up", Duration::from_secs(20), || {
        common::info_field(&replica, "replication", "master_link_status") == "up"
    });
    let mut writer = primary.raw();
    for args in [
        &["SET", "k", "v"][..],
        &["RPUSH", "l", "a"],
        &["LPOP", "l"],
        &["SET", "e", "v", "PX", "100"],
    ] {
        writer.cmd(args);
    }
    let mut received = Vec::new();
    while received.len() < 7 {
        let mut bytes = Vec::new();
        subscriber.read_bytes(&mut bytes);
        received.push(bytes.escape_ascii().to_string());
    }
    assert_eq!(
        received,
        keyevents(&[
            ("set", "k"),
            ("rpush", "l"),
            ("lpop", "l"),
            ("del", "l"),
            ("set", "e"),
            ("expire", "e"),
            ("del", "e"),
        ])
    );
}
