//! CONFIG SET / CONFIG GET against redis-server 7.0 itself: the parameters clients and
//! tools set (tcp-keepalive, client-output-buffer-limit, the encoding thresholds and
//! their ziplist aliases, proto-max-bulk-len, save, loglevel, ...), their canonical
//! values, Redis's errors for bad values, several pairs at once (all or nothing) and
//! GET with patterns; then what the node does with them (OBJECT ENCODING follows the
//! thresholds, new connections get the keepalive, the parser the bulk limit).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::redis_server::Pair;
use common::{Node, Reply};

/// Sent to both, replies compared byte for byte (single-name GETs only: Redis lists
/// several names in its hash table's order).
const SAME_AS_REDIS: &[&[&str]] = &[
    // tcp-keepalive: an int 0..INT_MAX, 300 by default
    &["CONFIG", "GET", "tcp-keepalive"],
    &["CONFIG", "SET", "tcp-keepalive", "60"],
    &["CONFIG", "GET", "tcp-keepalive"],
    &["CONFIG", "GET", "TCP-KEEPALIVE"],
    &["CONFIG", "SET", "tcp-keepalive", "-1"],
    &["CONFIG", "SET", "tcp-keepalive", "abc"],
    &["CONFIG", "SET", "tcp-keepalive", "1.5"],
    &["CONFIG", "SET", "tcp-keepalive", "+5"],
    &["CONFIG", "SET", "tcp-keepalive", "2147483648"],
    &["CONFIG", "SET", "TCP-KEEPALIVE", "x"],
    &["CONFIG", "GET", "tcp-keepalive"],
    // client-output-buffer-limit: classes replaced one by one, units to bytes
    &["CONFIG", "GET", "client-output-buffer-limit"],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal 0 0 0 slave 512mb 128mb 120 pubsub 64mb 16mb 90",
    ],
    &["CONFIG", "GET", "client-output-buffer-limit"],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "Replica 1mb 2KB 3",
    ],
    &["CONFIG", "GET", "client-output-buffer-limit"],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 1k 1kb +7 NORMAL 1g 1gb 0",
    ],
    &["CONFIG", "GET", "client-output-buffer-limit"],
    &["CONFIG", "SET", "client-output-buffer-limit", ""],
    &["CONFIG", "SET", "client-output-buffer-limit", "normal 1 2 "],
    &["CONFIG", "GET", "client-output-buffer-limit"],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 1 1 4294967296",
    ],
    &["CONFIG", "GET", "client-output-buffer-limit"],
    &["CONFIG", "SET", "client-output-buffer-limit", "normal 1 2"],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "master 1 2 3",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal 1 2  7",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal 1 2 -1",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal 1 2 1.5",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal -1 2 3",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal 1mib 2 3",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "bogus 1 2 3 normal x 1 1",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "normal x 1 1 bogus 1 2 3",
    ],
    &[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 1 1 2147483648",
    ],
    &["CONFIG", "GET", "client-output-buffer-limit"],
    // encoding thresholds and their ziplist aliases
    &["CONFIG", "GET", "hash-max-listpack-entries"],
    &["CONFIG", "GET", "hash-max-ziplist-value"],
    &["CONFIG", "SET", "hash-max-listpack-entries", "256"],
    &["CONFIG", "GET", "hash-max-ziplist-entries"],
    &["CONFIG", "SET", "hash-max-ziplist-value", "1kb"],
    &["CONFIG", "GET", "hash-max-listpack-value"],
    &["CONFIG", "SET", "hash-max-listpack-value", "1k"],
    &["CONFIG", "GET", "hash-max-ziplist-value"],
    &["CONFIG", "SET", "hash-max-listpack-entries", "01"],
    &["CONFIG", "SET", "hash-max-listpack-entries", "+1"],
    &["CONFIG", "SET", "hash-max-listpack-entries", " 1"],
    &["CONFIG", "SET", "hash-max-listpack-entries", ""],
    &["CONFIG", "SET", "hash-max-listpack-entries", "-1"],
    &["CONFIG", "SET", "hash-max-listpack-entries", "1mb"],
    &["CONFIG", "SET", "Hash-Max-Ziplist-Entries", "x"],
    &["CONFIG", "SET", "hash-max-listpack-value", "-1"],
    &["CONFIG", "SET", "hash-max-listpack-value", "abc"],
    &[
        "CONFIG",
        "SET",
        "hash-max-listpack-value",
        "18446744073709551615",
    ],
    &["CONFIG", "SET", "hash-max-listpack-value", "1mib"],
    &["CONFIG", "GET", "list-max-listpack-size"],
    &["CONFIG", "SET", "list-max-ziplist-size", "-3"],
    &["CONFIG", "GET", "list-max-listpack-size"],
    &["CONFIG", "SET", "list-max-listpack-size", "70000"],
    &["CONFIG", "GET", "list-max-ziplist-size"],
    &["CONFIG", "SET", "list-max-listpack-size", "99999999999"],
    &["CONFIG", "SET", "list-compress-depth", "2"],
    &["CONFIG", "GET", "list-compress-depth"],
    &["CONFIG", "SET", "list-compress-depth", "-1"],
    &["CONFIG", "SET", "set-max-intset-entries", "1024"],
    &["CONFIG", "GET", "set-max-intset-entries"],
    &["CONFIG", "SET", "set-max-intset-entries", "1mb"],
    // 7.2's, unknown to 7.0
    &["CONFIG", "SET", "set-max-listpack-entries", "128"],
    &["CONFIG", "GET", "set-max-listpack-entries"],
    &["CONFIG", "SET", "zset-max-ziplist-entries", "64"],
    &["CONFIG", "GET", "zset-max-listpack-entries"],
    &["CONFIG", "SET", "zset-max-listpack-value", "100000000000"],
    &["CONFIG", "GET", "zset-max-ziplist-value"],
    &["CONFIG", "SET", "zset-max-listpack-value", "-5"],
    &["CONFIG", "SET", "stream-node-max-bytes", "8kb"],
    &["CONFIG", "GET", "stream-node-max-bytes"],
    &["CONFIG", "SET", "stream-node-max-bytes", "-1"],
    &["CONFIG", "SET", "stream-node-max-entries", "200"],
    &["CONFIG", "GET", "stream-node-max-entries"],
    &["CONFIG", "SET", "stream-node-max-entries", "-1"],
    // proto-max-bulk-len: a memory value of at least 1mb
    &["CONFIG", "GET", "proto-max-bulk-len"],
    &["CONFIG", "SET", "proto-max-bulk-len", "2mb"],
    &["CONFIG", "GET", "proto-max-bulk-len"],
    &["CONFIG", "SET", "proto-max-bulk-len", "1000"],
    &["CONFIG", "SET", "proto-max-bulk-len", "abc"],
    &[
        "CONFIG",
        "SET",
        "proto-max-bulk-len",
        "99999999999999999999",
    ],
    &["CONFIG", "SET", "proto-max-bulk-len", "512mb"],
    // what guides and tools set besides
    &["CONFIG", "SET", "hz", "1000"],
    &["CONFIG", "GET", "hz"],
    &["CONFIG", "SET", "hz", "0"],
    &["CONFIG", "GET", "hz"],
    &["CONFIG", "SET", "hz", "-1"],
    &["CONFIG", "SET", "hz", "10"],
    &["CONFIG", "SET", "save", "+900 01"],
    &["CONFIG", "GET", "save"],
    &["CONFIG", "SET", "save", "900 1 300"],
    &["CONFIG", "SET", "save", "0 1"],
    &["CONFIG", "SET", "save", "900 x"],
    &["CONFIG", "SET", "save", ""],
    &["CONFIG", "GET", "save"],
    &["CONFIG", "SET", "appendonly", "maybe"],
    &["CONFIG", "SET", "appendonly", "NO"],
    &["CONFIG", "GET", "appendonly"],
    &["CONFIG", "SET", "appendfsync", "ALWAYS"],
    &["CONFIG", "GET", "appendfsync"],
    &["CONFIG", "SET", "appendfsync", "sometimes"],
    &["CONFIG", "SET", "loglevel", "WARNING"],
    &["CONFIG", "GET", "loglevel"],
    &["CONFIG", "SET", "loglevel", "loud"],
    &["CONFIG", "SET", "lazyfree-lazy-user-flush", "YES"],
    &["CONFIG", "GET", "lazyfree-lazy-user-flush"],
    &["CONFIG", "SET", "lazyfree-lazy-eviction", "1"],
    &["CONFIG", "SET", "activedefrag", "maybe"],
    &["CONFIG", "SET", "latency-tracking", "no"],
    &["CONFIG", "GET", "latency-tracking"],
    &["CONFIG", "SET", "slowlog-log-slower-than", "-1"],
    &["CONFIG", "GET", "slowlog-log-slower-than"],
    &["CONFIG", "SET", "slowlog-log-slower-than", "-2"],
    &["CONFIG", "SET", "slowlog-max-len", "1024"],
    &["CONFIG", "GET", "slowlog-max-len"],
    &["CONFIG", "SET", "latency-monitor-threshold", "100"],
    &["CONFIG", "GET", "latency-monitor-threshold"],
    &["CONFIG", "SET", "lfu-log-factor", "20"],
    &["CONFIG", "GET", "lfu-log-factor"],
    &["CONFIG", "SET", "lfu-decay-time", "x"],
    &["CONFIG", "SET", "active-expire-effort", "11"],
    &["CONFIG", "SET", "active-expire-effort", "5"],
    &["CONFIG", "GET", "active-expire-effort"],
    &["CONFIG", "SET", "hll-sparse-max-bytes", "4kb"],
    &["CONFIG", "GET", "hll-sparse-max-bytes"],
    &["CONFIG", "GET", "nosuch"],
    // the parameters the node had before, read the same way
    &["CONFIG", "SET", "maxmemory-samples", "x"],
    &["CONFIG", "SET", "maxmemory-samples", "65"],
    &["CONFIG", "SET", "min-replicas-to-write", "-1"],
    &["CONFIG", "SET", "min-slaves-max-lag", "+3"],
    &["CONFIG", "SET", "tracking-table-max-keys", "-1"],
    &["CONFIG", "SET", "busy-reply-threshold", "1.5"],
    &["CONFIG", "SET", "lua-time-limit", "-1"],
    &["CONFIG", "SET", "timeout", "-1"],
    &["CONFIG", "SET", "timeout", "2147483648"],
    &["CONFIG", "SET", "maxclients", "0"],
    &["CONFIG", "SET", "maxclients", "4294967296"],
    &["CONFIG", "SET", "maxclients", "x"],
    &["CONFIG", "SET", "repl-backlog-size", "0"],
    &["CONFIG", "SET", "repl-backlog-size", "-1"],
    &["CONFIG", "SET", "maxmemory", "-1"],
    &["CONFIG", "SET", "maxmemory", "1 mb"],
    &["CONFIG", "SET", "maxmemory", "99999999999999999999"],
    &["CONFIG", "GET", "maxmemory"],
    &["CONFIG", "SET", "maxmemory", "kb"],
    &["CONFIG", "GET", "maxmemory"],
    &["CONFIG", "SET", "protected-mode", "maybe"],
    // several pairs: names checked first, then values, then all applied or none
    &[
        "CONFIG",
        "SET",
        "tcp-keepalive",
        "10",
        "hash-max-listpack-entries",
        "x",
    ],
    &["CONFIG", "GET", "tcp-keepalive"],
    &[
        "CONFIG",
        "SET",
        "maxmemory-samples",
        "10",
        "client-output-buffer-limit",
        "normal 1 1",
    ],
    &["CONFIG", "GET", "maxmemory-samples"],
    &[
        "CONFIG",
        "SET",
        "hash-max-listpack-entries",
        "1",
        "HASH-MAX-LISTPACK-ENTRIES",
        "2",
    ],
    &[
        "CONFIG",
        "SET",
        "HASH-max-listpack-entries",
        "x",
        "BOGUS",
        "1",
    ],
    &["CONFIG", "SET", "tcp-keepalive", "x", "tcp-keepalive", "1"],
    &["CONFIG", "SET", "BOGUS", "1"],
    // the first refused name decides: unknown, immutable or repeated
    &["CONFIG", "SET", "hz", "10", "hz", "11", "BOGUS", "1"],
    &["CONFIG", "SET", "databases", "2", "BOGUS", "1"],
    &["CONFIG", "SET", "BOGUS", "1", "databases", "2"],
    &["CONFIG", "SET", "hz", "10", "hz", "11", "databases", "2"],
    &["CONFIG", "SET", "hz", "x", "databases", "2"],
    &["CONFIG", "SET", "Databases", "2"],
    &["CONFIG", "SET", "cluster-enabled", "yes"],
    &["CONFIG", "SET", "hz", "10", "databases", "x"],
    &["CONFIG", "GET", "hz"],
    &[
        "CONFIG",
        "SET",
        "hash-max-ziplist-entries",
        "3",
        "hash-max-listpack-entries",
        "4",
    ],
    &["CONFIG", "GET", "hash-max-ziplist-entries"],
    &[
        "CONFIG",
        "SET",
        "tcp-keepalive",
        "10",
        "list-compress-depth",
        "1",
        "client-output-buffer-limit",
        "pubsub 1 2 3",
        "loglevel",
        "debug",
    ],
    &["CONFIG", "GET", "tcp-keepalive"],
    &["CONFIG", "GET", "list-compress-depth"],
    &["CONFIG", "GET", "client-output-buffer-limit"],
    &["CONFIG", "GET", "loglevel"],
    &["CONFIG", "SET", "tcp-keepalive"],
];

/// GETs whose names come in Redis's hash-table order: compared as sets of pairs.
const SAME_PAIRS_AS_REDIS: &[&[&str]] = &[
    &["CONFIG", "GET", "*-max-listpack-*"],
    &["CONFIG", "GET", "*ziplist*"],
    &["CONFIG", "GET", "hash-max-*"],
    &["CONFIG", "GET", "ZSET*"],
    &["CONFIG", "GET", "list-*"],
    &["CONFIG", "GET", "stream-node-*"],
    &["CONFIG", "GET", "set-max*"],
    &["CONFIG", "GET", "client-output-*"],
    &["CONFIG", "GET", "*keepalive*"],
    &["CONFIG", "GET", "lazyfree-*"],
    &["CONFIG", "GET", "slowlog-*"],
    &["CONFIG", "GET", "lfu-*"],
    &["CONFIG", "GET", "h?"],
    &["CONFIG", "GET", "proto-max-bulk-le[mn]"],
    &["CONFIG", "GET", "tcp-keepalive", "hz", "save", "appendonly"],
    &[
        "CONFIG",
        "GET",
        "Hash-Max-Listpack-Entries",
        "hash-max-listpack-entries",
        "hash-*",
    ],
    &["CONFIG", "GET", "hash-*", "HASH-MAX-LISTPACK-ENTRIES"],
    &["CONFIG", "GET", "min-*"],
];

/// A CONFIG GET reply as its (name, value) pairs, sorted.
fn pairs(reply: Reply) -> Vec<(String, String)> {
    let text = |reply: Reply| match reply {
        Reply::Bulk(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        other => format!("{other:?}"),
    };
    let mut pairs: Vec<(String, String)> = match reply {
        Reply::Map(entries) => entries
            .into_iter()
            .map(|(name, value)| (text(name), text(value)))
            .collect(),
        Reply::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((text(items.next()?), text(items.next()?)))).collect()
        }
        other => panic!("CONFIG GET answered {other:?}"),
    };
    pairs.sort();
    pairs
}

#[test]
fn config_set_and_get_answer_like_redis_server() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in SAME_PAIRS_AS_REDIS {
            let (theirs, ours) = pair.both_parsed(args);
            assert_eq!(pairs(ours), pairs(theirs), "defaults: {args:?}");
        }
        for args in SAME_AS_REDIS {
            pair.same(args);
        }
        for args in SAME_PAIRS_AS_REDIS {
            let (theirs, ours) = pair.both_parsed(args);
            assert_eq!(pairs(ours), pairs(theirs), "after the changes: {args:?}");
        }
    }
}

/// OBJECT ENCODING follows the thresholds CONFIG SET gave, as redis-server's
/// conversions do (the defaults too: 512 hash fields still fit a listpack).
#[test]
fn object_encoding_follows_the_thresholds() {
    let fields: Vec<String> = (0..300).map(|field| field.to_string()).collect();
    let mut wide = vec!["HSET", "wide"];
    for field in &fields {
        wide.extend([field.as_str(), "v"]);
    }
    let steps: &[&[&str]] = &[
        &wide,
        &["OBJECT", "ENCODING", "wide"],
        &["CONFIG", "SET", "hash-max-ziplist-entries", "2"],
        &["HSET", "h", "a", "1", "b", "2"],
        &["OBJECT", "ENCODING", "h"],
        &["HSET", "h", "c", "3"],
        &["OBJECT", "ENCODING", "h"],
        &["CONFIG", "SET", "hash-max-listpack-value", "3"],
        &["HSET", "hv", "f", "abc"],
        &["OBJECT", "ENCODING", "hv"],
        &["HSET", "hv", "g", "abcd"],
        &["OBJECT", "ENCODING", "hv"],
        &["CONFIG", "SET", "zset-max-listpack-value", "4"],
        &["ZADD", "z", "1", "abcd"],
        &["OBJECT", "ENCODING", "z"],
        &["ZADD", "z", "2", "abcde"],
        &["OBJECT", "ENCODING", "z"],
        &["CONFIG", "SET", "zset-max-listpack-entries", "1"],
        &["ZADD", "z2", "1", "a"],
        &["OBJECT", "ENCODING", "z2"],
        &["ZADD", "z2", "2", "b"],
        &["OBJECT", "ENCODING", "z2"],
        &["CONFIG", "SET", "set-max-intset-entries", "2"],
        &["SADD", "s", "1", "2"],
        &["OBJECT", "ENCODING", "s"],
        &["SADD", "s", "3"],
        &["OBJECT", "ENCODING", "s"],
    ];
    let mut pair = Pair::start(2);
    for args in steps {
        let (theirs, ours) = pair.both(args);
        assert_eq!(ours, theirs, "{:?}", &args[..args.len().min(4)]);
    }
}

/// The kernel's timer for the node's end of a connection from local port `client`:
/// (timer kind, seconds left), from /proc/net/tcp (kind 2 is keepalive, 0 none).
fn server_socket_timer(node_port: u16, client: u16) -> (u32, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |address: &str| {
            address
                .rsplit(':')
                .next()
                .and_then(|port| u16::from_str_radix(port, 16).ok())
        };
        if port(fields[1]) == Some(node_port) && port(fields[2]) == Some(client) {
            let (kind, left) = fields[5].split_once(':').expect("tr:tm->when");
            let kind = u32::from_str_radix(kind, 16).expect("timer kind");
            // clock ticks, USER_HZ = 100
            let left = u64::from_str_radix(left, 16).expect("timer") / 100;
            return (kind, left);
        }
    }
    panic!("no socket of the node for client port {client}");
}

/// A connection that has answered a PING, and its local port.
fn connect(port: u16) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(b"PING\r\n").expect("ping");
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).expect("pong");
    assert_eq!(&reply, b"+PONG\r\n");
    // the acknowledgement of the reply lands; then only the keepalive timer runs
    std::thread::sleep(Duration::from_millis(200));
    let local = stream.local_addr().expect("local address").port();
    (stream, local)
}

/// tcp-keepalive reaches the sockets of new connections (as in Redis, the ones already
/// open keep theirs): 300 s by default, what CONFIG SET gave, none at 0.
#[test]
fn tcp_keepalive_applies_to_new_connections() {
    let node = Node::start();
    let mut admin = node.raw();
    let (_default, port) = connect(node.port);
    let (kind, left) = server_socket_timer(node.port, port);
    assert_eq!(kind, 2, "no keepalive timer by default");
    assert!((250..=300).contains(&left), "{left} s to the first probe");

    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "tcp-keepalive", "40"]),
        Reply::ok()
    );
    let (_short, port) = connect(node.port);
    let (kind, left) = server_socket_timer(node.port, port);
    assert_eq!(kind, 2);
    assert!((20..=40).contains(&left), "{left} s to the first probe");

    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "tcp-keepalive", "0"]),
        Reply::ok()
    );
    let (_none, port) = connect(node.port);
    assert_eq!(
        server_socket_timer(node.port, port).0,
        0,
        "a keepalive timer with tcp-keepalive 0"
    );
}

/// proto-max-bulk-len set at run time holds for the connections already open, like
/// Redis: a longer bulk is a protocol error, one at the limit passes.
#[test]
fn proto_max_bulk_len_applies_at_once() {
    let mut pair = Pair::start(2);
    pair.same(&["CONFIG", "SET", "proto-max-bulk-len", "1mb"]);
    let limit = "x".repeat(1024 * 1024);
    pair.same(&["SET", "big", &limit]);
    pair.same(&["STRLEN", "big"]);
    let over = format!("{limit}y");
    let (theirs, ours) = pair.both_refused(&["SET", "big", &over]);
    assert_eq!(ours, theirs);
    assert!(ours.contains("invalid bulk length"), "{ours}");
}

/// The pubsub class's hard limit of client-output-buffer-limit is what a subscriber
/// that stops reading may have queued before the node cuts it off (0 = no limit).
#[test]
fn the_pubsub_hard_limit_cuts_off_slow_subscribers() {
    let node = Node::start();
    let mut publisher = node.raw();
    let payload = "x".repeat(512 * 1024);
    // 20 MB: more than the kernel's socket buffers take in on loopback
    let reached = |publisher: &mut common::Raw, channel: &str| {
        (0..40)
            .map(|_| publisher.cmd(&["PUBLISH", channel, &payload]))
            .collect::<Vec<_>>()
    };
    let subscribe = |node: &Node, channel: &str| {
        let mut subscriber = node.raw();
        subscriber.send(format!("SUBSCRIBE {channel}\r\n").as_bytes());
        let Reply::Array(confirmation) = subscriber.read() else {
            panic!("no subscription");
        };
        assert_eq!(confirmation[2], Reply::Int(1));
        subscriber
    };

    assert_eq!(
        publisher.cmd(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 1mb 0 0"
        ]),
        Reply::ok()
    );
    let _slow = subscribe(&node, "news");
    let replies = reached(&mut publisher, "news");
    assert_eq!(replies[0], Reply::Int(1));
    assert_eq!(
        replies.last(),
        Some(&Reply::Int(0)),
        "a subscriber 19 MB behind was kept"
    );
    // and its connection is closed at once, as Redis closes it, though it never read
    // what was queued (it does not wait for the client to drain it)
    let subscribed = |publisher: &mut common::Raw| match publisher.cmd(&["CLIENT", "LIST"]) {
        Reply::Bulk(list) => String::from_utf8_lossy(&list)
            .lines()
            .filter(|line| line.contains(" sub=1 "))
            .count(),
        other => panic!("CLIENT LIST: {other:?}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while subscribed(&mut publisher) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber past its limit is still connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    assert_eq!(
        publisher.cmd(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 0 0 0"
        ]),
        Reply::ok()
    );
    let _unlimited = subscribe(&node, "other");
    let replies = reached(&mut publisher, "other");
    assert!(
        replies.iter().all(|reply| *reply == Reply::Int(1)),
        "a subscriber without limit was closed: {:?}",
        replies
            .iter()
            .filter(|reply| **reply != Reply::Int(1))
            .count()
    );
}

/// Beyond Redis: maxmemory and repl-backlog-size also take the Kubernetes units the
/// node's flags take, as they did before.
#[test]
fn memory_parameters_take_kubernetes_units_too() {
    let node = Node::start();
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&[
            "CONFIG",
            "SET",
            "maxmemory",
            "64Mi",
            "repl-backlog-size",
            "1Gi"
        ]),
        Reply::ok()
    );
    assert_eq!(
        raw.cmd(&["CONFIG", "GET", "maxmemory"]),
        Reply::Array(vec![Reply::bulk("maxmemory"), Reply::bulk("67108864")])
    );
    let Reply::Error(refused) = raw.cmd(&["CONFIG", "SET", "maxmemory", "64 Mi"]) else {
        panic!("a memory value with a space accepted");
    };
    assert!(
        refused.ends_with("argument must be a memory value"),
        "{refused}"
    );
}

/// Unlike Redis, the listening address stays what the pod was built around.
#[test]
fn port_and_bind_cannot_change_at_run_time() {
    let node = Node::start();
    let mut raw = node.raw();
    for (name, value) in [("port", "1"), ("BIND", "0.0.0.0")] {
        assert_eq!(
            raw.cmd(&["CONFIG", "SET", name, value]),
            Reply::err(&format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
            ))
        );
    }
    assert_eq!(raw.cmd(&["PING"]), Reply::Simple("PONG".into()));
}
