//! CLIENT TRACKING (client-side caching) against the real binary: RESP3 pushes,
//! RESP2 redirection to `__redis__:invalidate`, BCAST prefixes, OPTIN, NOLOOP,
//! flushes, expiry, the tracking table limit, errors, and invalidations caused
//! by writes in another region arriving over a region link.

mod common;
mod http_support;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node_process::NodeProcess;
use common::{Node, Raw, Reply, redis_cli};

fn bulk(text: &str) -> Reply {
    Reply::bulk(text)
}

fn invalidate(keys: &[&str]) -> Reply {
    Reply::Push(vec![
        bulk("invalidate"),
        Reply::Array(keys.iter().map(|key| bulk(key)).collect()),
    ])
}

/// A RESP3 connection with tracking switched on with `options`.
fn tracking_client(node: &Node, options: &[&str]) -> Raw {
    let mut client = node.raw();
    assert!(matches!(client.cmd(&["HELLO", "3"]), Reply::Map(_)));
    let mut args = vec!["CLIENT", "TRACKING", "ON"];
    args.extend_from_slice(options);
    assert_eq!(client.cmd(&args), Reply::ok());
    client
}

/// Nothing is pending for `client`: a queued push would arrive before PONG.
fn assert_no_push(client: &mut Raw) {
    assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

fn client_id(client: &mut Raw) -> i64 {
    match client.cmd(&["CLIENT", "ID"]) {
        Reply::Int(id) => id,
        other => panic!("CLIENT ID replied {other:?}"),
    }
}

#[test]
fn resp3_default_mode_invalidates_keys_read_once() {
    let node = Node::start();
    let mut writer = node.raw();
    let mut reader = tracking_client(&node, &[]);
    assert_eq!(writer.cmd(&["SET", "user:1", "old"]), Reply::ok());
    assert_eq!(reader.cmd(&["GET", "user:1"]), bulk("old"));
    // a key that does not exist yet is tracked too
    assert_eq!(reader.cmd(&["GET", "missing"]), Reply::Nil);
    assert_eq!(
        reader.cmd(&["HGET", "profile", "name"]),
        Reply::Nil,
        "hash read"
    );

    assert_eq!(writer.cmd(&["SET", "unread", "x"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "user:1", "new"]), Reply::ok());
    assert_eq!(reader.read(), invalidate(&["user:1"]));
    // forgotten after one invalidation
    assert_eq!(writer.cmd(&["SET", "user:1", "newer"]), Reply::ok());
    assert_no_push(&mut reader);

    assert_eq!(writer.cmd(&["SET", "missing", "now"]), Reply::ok());
    assert_eq!(reader.read(), invalidate(&["missing"]));
    assert_eq!(
        writer.cmd(&["HSET", "profile", "name", "ada"]),
        Reply::Int(1)
    );
    assert_eq!(reader.read(), invalidate(&["profile"]));

    // MGET tracks every key; DEL and EXPIRE invalidate
    assert_eq!(
        reader.cmd(&["MGET", "user:1", "missing"]),
        Reply::Array(vec![bulk("newer"), bulk("now")])
    );
    assert_eq!(writer.cmd(&["DEL", "user:1"]), Reply::Int(1));
    assert_eq!(reader.read(), invalidate(&["user:1"]));
    assert_eq!(writer.cmd(&["EXPIRE", "missing", "100"]), Reply::Int(1));
    assert_eq!(reader.read(), invalidate(&["missing"]));

    // the client's own writes invalidate too (no NOLOOP): reply first, then the push
    assert_eq!(reader.cmd(&["GET", "own"]), Reply::Nil);
    assert_eq!(reader.cmd(&["SET", "own", "1"]), Reply::ok());
    assert_eq!(reader.read(), invalidate(&["own"]));

    // pipelined: the own invalidation follows the SET's reply, before the next
    // GET's reply, so the value that GET returns stays cacheable (as in Redis)
    let pipeline: Vec<u8> = [
        common::encode(&[b"GET", b"piped"]),
        common::encode(&[b"SET", b"piped", b"1"]),
        common::encode(&[b"GET", b"piped"]),
    ]
    .concat();
    reader.send(&pipeline);
    assert_eq!(reader.read(), Reply::Nil);
    assert_eq!(reader.read(), Reply::ok());
    assert_eq!(reader.read(), invalidate(&["piped"]));
    assert_eq!(reader.read(), bulk("1"));
    assert_no_push(&mut reader);
    assert_eq!(writer.cmd(&["SET", "piped", "2"]), Reply::ok());
    assert_eq!(reader.read(), invalidate(&["piped"]));

    let info = reader.cmd(&["CLIENT", "INFO"]);
    let Reply::Verbatim(line) = info else {
        panic!("CLIENT INFO replied {info:?}");
    };
    assert!(line.contains("flags=t"), "{line}");
    assert!(line.contains("redir=0"), "{line}");

    // switched off: nothing more
    assert_eq!(reader.cmd(&["GET", "later"]), Reply::Nil);
    assert_eq!(reader.cmd(&["CLIENT", "TRACKING", "OFF"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "later", "x"]), Reply::ok());
    assert_no_push(&mut reader);
    assert_eq!(reader.cmd(&["CLIENT", "GETREDIR"]), Reply::Int(-1));
}

#[test]
fn resp2_redirect_to_invalidate_channel_and_broken_redirect() {
    let node = Node::start();
    let mut writer = node.raw();
    let mut subscriber = node.raw();
    let target = client_id(&mut subscriber);
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "__redis__:invalidate"]),
        Reply::Array(vec![
            bulk("subscribe"),
            bulk("__redis__:invalidate"),
            Reply::Int(1)
        ])
    );
    let mut reader = node.raw();
    let target_text = target.to_string();
    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &target_text]),
        Reply::ok()
    );
    assert_eq!(reader.cmd(&["CLIENT", "GETREDIR"]), Reply::Int(target));
    assert_eq!(reader.cmd(&["GET", "k"]), Reply::Nil);
    assert_eq!(writer.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(
        subscriber.read(),
        Reply::Array(vec![
            bulk("message"),
            bulk("__redis__:invalidate"),
            Reply::Array(vec![bulk("k")]),
        ])
    );
    // FLUSHALL invalidates everything with a null payload
    assert_eq!(writer.cmd(&["FLUSHALL"]), Reply::ok());
    assert_eq!(
        subscriber.read(),
        Reply::Array(vec![
            bulk("message"),
            bulk("__redis__:invalidate"),
            Reply::Nil
        ])
    );

    // the redirect target goes away: a RESP3 tracking client is told
    drop(subscriber);
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer.cmd(&["CLIENT", "LIST", "ID", &target_text]) != Reply::bulk("") {
        assert!(Instant::now() < deadline, "subscriber still listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(reader.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(reader.cmd(&["GET", "k2"]), Reply::Nil);
    assert_eq!(writer.cmd(&["SET", "k2", "v"]), Reply::ok());
    assert_eq!(
        reader.read(),
        Reply::Push(vec![bulk("tracking-redir-broken"), Reply::Int(target)])
    );
    let info = reader.cmd(&["CLIENT", "TRACKINGINFO"]);
    assert_eq!(
        info,
        Reply::Map(vec![
            (
                bulk("flags"),
                Reply::Set(vec![bulk("on"), bulk("broken_redirect")])
            ),
            (bulk("redirect"), Reply::Int(target)),
            (bulk("prefixes"), Reply::Array(vec![])),
        ])
    );
}

#[test]
fn bcast_prefixes_and_trackinginfo() {
    let node = Node::start();
    let mut writer = node.raw();
    let mut reader = tracking_client(&node, &["BCAST", "PREFIX", "user:", "PREFIX", "page:"]);
    // nothing was read: BCAST needs no reads
    assert_eq!(writer.cmd(&["SET", "user:1", "a"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "other", "a"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "page:home", "a"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "user:1", "b"]), Reply::ok());
    assert_eq!(reader.read(), invalidate(&["user:1"]));
    assert_eq!(reader.read(), invalidate(&["page:home"]));
    assert_eq!(reader.read(), invalidate(&["user:1"]));
    assert_no_push(&mut reader);

    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKINGINFO"]),
        Reply::Map(vec![
            (bulk("flags"), Reply::Set(vec![bulk("on"), bulk("bcast")])),
            (bulk("redirect"), Reply::Int(0)),
            (
                bulk("prefixes"),
                Reply::Array(vec![bulk("page:"), bulk("user:")])
            ),
        ])
    );
    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "us"]),
        Reply::err(
            "ERR Prefix 'us' overlaps with an existing prefix 'user:'. Prefixes for a single client must not overlap."
        )
    );
    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKING", "ON"]),
        Reply::err(
            "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."
        )
    );

    // BCAST without PREFIX: every key
    let mut everything = tracking_client(&node, &["BCAST", "NOLOOP"]);
    assert_eq!(writer.cmd(&["SET", "any", "1"]), Reply::ok());
    assert_eq!(everything.read(), invalidate(&["any"]));
    assert_eq!(everything.cmd(&["SET", "mine", "1"]), Reply::ok());
    assert_no_push(&mut everything);
}

#[test]
fn optin_caching_and_noloop() {
    let node = Node::start();
    let mut writer = node.raw();
    let mut reader = tracking_client(&node, &["OPTIN"]);
    assert_eq!(reader.cmd(&["GET", "plain"]), Reply::Nil);
    assert_eq!(reader.cmd(&["CLIENT", "CACHING", "YES"]), Reply::ok());
    assert_eq!(reader.cmd(&["GET", "cached"]), Reply::Nil);
    // CACHING YES covered only the next command
    assert_eq!(reader.cmd(&["GET", "after"]), Reply::Nil);
    assert_eq!(writer.cmd(&["SET", "plain", "1"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "after", "1"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "cached", "1"]), Reply::ok());
    assert_eq!(reader.read(), invalidate(&["cached"]));
    assert_no_push(&mut reader);
    // CACHING YES before MULTI covers the whole transaction
    assert_eq!(reader.cmd(&["CLIENT", "CACHING", "YES"]), Reply::ok());
    assert_eq!(reader.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(reader.cmd(&["GET", "tx:a"]), Reply::Simple("QUEUED".into()));
    assert_eq!(reader.cmd(&["GET", "tx:b"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        reader.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::Nil, Reply::Nil])
    );
    assert_eq!(reader.cmd(&["GET", "tx:c"]), Reply::Nil);
    assert_eq!(
        writer.cmd(&["MSET", "tx:a", "1", "tx:b", "1", "tx:c", "1"]),
        Reply::ok()
    );
    assert_eq!(reader.read(), invalidate(&["tx:a"]));
    assert_eq!(reader.read(), invalidate(&["tx:b"]));
    assert_no_push(&mut reader);
    assert_eq!(
        reader.cmd(&["CLIENT", "CACHING", "NO"]),
        Reply::err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
    );

    let mut quiet = tracking_client(&node, &["NOLOOP"]);
    assert_eq!(quiet.cmd(&["GET", "shared"]), Reply::Nil);
    assert_eq!(quiet.cmd(&["SET", "shared", "mine"]), Reply::ok());
    assert_no_push(&mut quiet);
    assert_eq!(quiet.cmd(&["GET", "shared"]), bulk("mine"));
    assert_eq!(writer.cmd(&["SET", "shared", "theirs"]), Reply::ok());
    assert_eq!(quiet.read(), invalidate(&["shared"]));
    let info = quiet.cmd(&["CLIENT", "TRACKINGINFO"]);
    let Reply::Map(fields) = info else {
        panic!("TRACKINGINFO replied {info:?}");
    };
    assert_eq!(
        fields[0],
        (bulk("flags"), Reply::Set(vec![bulk("on"), bulk("noloop")]))
    );
}

#[test]
fn flush_expiry_and_table_limit_invalidate() {
    let node = Node::start();
    let mut writer = node.raw();
    let mut reader = tracking_client(&node, &[]);

    // FLUSHDB: a null invalidation, whatever was read
    assert_eq!(writer.cmd(&["FLUSHDB"]), Reply::ok());
    assert_eq!(
        reader.read(),
        Reply::Push(vec![bulk("invalidate"), Reply::Nil])
    );

    // active expiry of a tracked key (nobody touches it)
    assert_eq!(
        writer.cmd(&["SET", "session", "v", "PX", "1000"]),
        Reply::ok()
    );
    assert_eq!(reader.cmd(&["GET", "session"]), bulk("v"));
    assert_eq!(reader.read(), invalidate(&["session"]));

    // the tracking table is bounded: overflow invalidates what it forgets
    assert_eq!(
        writer.cmd(&["CONFIG", "SET", "tracking-table-max-keys", "2"]),
        Reply::ok()
    );
    assert_eq!(
        writer.cmd(&["CONFIG", "GET", "tracking-table-max-keys"]),
        Reply::Array(vec![bulk("tracking-table-max-keys"), bulk("2")])
    );
    assert_eq!(
        reader.cmd(&["MGET", "t1", "t2", "t3"]),
        Reply::Array(vec![Reply::Nil, Reply::Nil, Reply::Nil])
    );
    let Reply::Push(evicted) = reader.read() else {
        panic!("expected an eviction invalidation");
    };
    assert_eq!(evicted[0], bulk("invalidate"));
    assert_no_push(&mut reader);
    let Reply::Bulk(info) = writer.cmd(&["INFO"]) else {
        panic!("INFO failed");
    };
    let info = String::from_utf8_lossy(&info);
    for line in [
        "tracking_clients:1\r\n",
        "tracking_total_keys:2\r\n",
        "tracking_total_items:2\r\n",
        "tracking_total_prefixes:0\r\n",
    ] {
        assert!(info.contains(line), "{line:?} missing from {info}");
    }
    assert_eq!(
        writer.cmd(&["CONFIG", "SET", "tracking-table-max-keys", "lots"]),
        Reply::err(
            "ERR CONFIG SET failed (possibly related to argument 'tracking-table-max-keys') - argument couldn't be parsed into an integer"
        )
    );
}

#[test]
fn eviction_invalidates_tracked_keys() {
    // random eviction: the victim's chance to survive thousands of inserts is nil
    let node = Node::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-random"]);
    let mut writer = node.raw();
    let mut reader = tracking_client(&node, &[]);
    assert_eq!(writer.cmd(&["SET", "victim", "v"]), Reply::ok());
    assert_eq!(reader.cmd(&["GET", "victim"]), bulk("v"));
    let value = "x".repeat(10_000);
    let mut evicted = false;
    for index in 0..5000 {
        let key = format!("filler:{index}");
        assert_eq!(writer.cmd(&["SET", &key, &value]), Reply::ok());
        if index % 100 == 99 && writer.cmd(&["EXISTS", "victim"]) == Reply::Int(0) {
            evicted = true;
            break;
        }
    }
    assert!(evicted, "victim never evicted");
    assert_eq!(reader.read(), invalidate(&["victim"]));
}

#[test]
fn bad_arguments_are_refused_like_redis() {
    let node = Node::start();
    let mut client = node.raw();
    let cases: &[(&[&str], &str)] = &[
        (
            &["CLIENT", "TRACKING", "ON", "PREFIX", "a"],
            "ERR PREFIX option requires BCAST mode to be enabled",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"],
            "ERR You can't use both OPTIN and OPTOUT",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"],
            "ERR OPTIN and OPTOUT are not compatible with BCAST",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "REDIRECT", "987654"],
            "ERR The client ID you want redirect to does not exist",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "REDIRECT", "nope"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "REDIRECT"],
            "ERR syntax error",
        ),
        (&["CLIENT", "TRACKING", "MAYBE"], "ERR syntax error"),
        (&["CLIENT", "TRACKING", "ON", "LOUDLY"], "ERR syntax error"),
        (
            &["CLIENT", "TRACKING"],
            "ERR wrong number of arguments for 'client|tracking' command",
        ),
        (
            &[
                "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab", "PREFIX", "a",
            ],
            "ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap.",
        ),
        (
            &["CLIENT", "CACHING", "YES"],
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ),
    ];
    for (args, error) in cases {
        assert_eq!(client.cmd(args), Reply::err(error), "{args:?}");
    }
    let id = client_id(&mut client).to_string();
    assert_eq!(
        client.cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id, "REDIRECT", &id]),
        Reply::err("ERR A client can only redirect to a single other client")
    );
    assert_eq!(client.cmd(&["CLIENT", "TRACKING", "ON"]), Reply::ok());
    assert_eq!(
        client.cmd(&["CLIENT", "CACHING", "YES"]),
        Reply::err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
    );
    assert_eq!(
        client.cmd(&["CLIENT", "CACHING", "PERHAPS"]),
        Reply::err("ERR syntax error")
    );
    assert_eq!(
        client.cmd(&["CLIENT", "TRACKING", "ON", "OPTOUT"]),
        Reply::ok()
    );
    assert_eq!(
        client.cmd(&["CLIENT", "TRACKING", "ON", "OPTIN"]),
        Reply::err(
            "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."
        )
    );
    // RESET switches tracking off
    assert_eq!(client.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(client.cmd(&["CLIENT", "GETREDIR"]), Reply::Int(-1));
}

// ---- regions ---------------------------------------------------------------

const LINK_PORT: u16 = 16379;

struct RegionNode {
    /// Kept for its drop, which stops the node.
    _process: NodeProcess,
    ip: &'static str,
    port: u16,
}

impl RegionNode {
    fn start(ip: &'static str, id: &str, region: &str) -> RegionNode {
        let link_port = LINK_PORT.to_string();
        let process = NodeProcess::start(
            ip,
            id,
            &["--region", region, "--region-port", &link_port],
            &[],
        );
        RegionNode {
            ip,
            port: process.port,
            _process: process,
        }
    }

    fn raw(&self) -> Raw {
        let stream = TcpStream::connect((self.ip, self.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Raw {
            reader: std::io::BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn set_peer(&self, region: &str, peer: &RegionNode) {
        let json = format!(
            r#"[{{"region":"{region}","seeds":["{}:{LINK_PORT}"]}}]"#,
            peer.ip
        );
        assert_eq!(
            self.raw().cmd(&["MERIDIAN.PEERS", "SET", &json]),
            Reply::ok()
        );
    }

    fn links_up(&self) -> bool {
        match self.raw().cmd(&["MERIDIAN.PEERS", "GET"]) {
            Reply::Bulk(text) => {
                let status: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
                status["peers"].as_array().is_some_and(|peers| {
                    !peers.is_empty() && peers.iter().all(|peer| peer["up"] == true)
                })
            }
            _ => false,
        }
    }
}

#[test]
fn write_in_another_region_invalidates_near_cache() {
    let a = RegionNode::start("127.0.73.1", "a-0", "region-a");
    let b = RegionNode::start("127.0.73.2", "b-0", "region-b");
    a.set_peer("region-b", &b);
    b.set_peer("region-a", &a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.links_up() && b.links_up()) {
        assert!(Instant::now() < deadline, "region links not up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut near = b.raw();
    assert!(matches!(near.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(near.cmd(&["CLIENT", "TRACKING", "ON"]), Reply::ok());
    assert_eq!(near.cmd(&["SET", "price:42", "old"]), Reply::ok());
    assert_eq!(near.cmd(&["GET", "price:42"]), bulk("old"));

    // A writes a few milliseconds later: two writes in the same millisecond that have
    // not seen each other are ordered by region id (the HLC's tie-break), and B's would
    // win, rightly keeping its near cache.
    std::thread::sleep(Duration::from_millis(5));
    let mut writer = a.raw();
    assert_eq!(writer.cmd(&["SET", "price:42", "new"]), Reply::ok());
    // region B drops its copy when A's event arrives; the tracking client hears it
    assert_eq!(near.read(), invalidate(&["price:42"]));
}

#[test]
fn replica_clients_hear_about_the_primary_writes_and_expiry() {
    let primary = Node::start();
    let replica = Node::start();
    let mut admin = replica.raw();
    let port = primary.port.to_string();
    assert_eq!(admin.cmd(&["REPLICAOF", "127.0.0.1", &port]), Reply::ok());
    let mut writer = primary.raw();
    assert_eq!(writer.cmd(&["SET", "config", "v1"]), Reply::ok());
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.cmd(&["GET", "config"]) != bulk("v1") {
        assert!(Instant::now() < deadline, "replica never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut near = tracking_client(&replica, &[]);
    assert_eq!(near.cmd(&["GET", "config"]), bulk("v1"));
    assert_eq!(writer.cmd(&["SET", "config", "v2"]), Reply::ok());
    assert_eq!(near.read(), invalidate(&["config"]));

    // expiry is the primary's: its DEL reaches the replica's tracking clients
    assert_eq!(
        writer.cmd(&["SET", "token", "t", "PX", "1000"]),
        Reply::ok()
    );
    while admin.cmd(&["GET", "token"]) != bulk("t") {
        assert!(Instant::now() < deadline, "token never replicated");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(near.cmd(&["GET", "token"]), bulk("t"));
    assert_eq!(near.read(), invalidate(&["token"]));
}

#[test]
fn redis_cli_resp3_shows_the_invalidation_push() {
    let node = Node::start();
    let mut cli = Command::new(redis_cli())
        .args(["-3", "--show-pushes", "yes", "-h", "127.0.0.1"])
        .args(["-p", &node.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start redis-cli");
    let mut input = cli.stdin.take().expect("stdin");
    input
        .write_all(b"CLIENT TRACKING ON\nGET cli:key\n")
        .expect("write");
    input.flush().expect("flush");
    // wait until redis-cli's GET ran, so the write below hits a tracked key
    let mut admin = node.raw();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Reply::Bulk(list) = admin.cmd(&["CLIENT", "LIST"]) else {
            panic!("CLIENT LIST failed");
        };
        let list = String::from_utf8_lossy(&list).into_owned();
        if list
            .lines()
            .any(|line| line.contains("flags=t") && line.contains("cmd=get"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "redis-cli never read: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(admin.cmd(&["SET", "cli:key", "v"]), Reply::ok());
    input.write_all(b"PING\n").expect("write");
    drop(input);
    let output = cli.wait_with_output().expect("redis-cli output");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("invalidate\ncli:key\nPONG"),
        "redis-cli printed {text:?}"
    );
}

#[test]
fn http_api_writes_invalidate_like_commands() {
    let node =
        http_support::HttpNode::start("127.0.0.1", "http-tracking", http_support::free_port(), &[]);
    let mut near = Raw::connect(node.port);
    assert!(matches!(near.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(near.cmd(&["CLIENT", "TRACKING", "ON"]), Reply::ok());
    assert_eq!(near.cmd(&["GET", "doc:1"]), Reply::Nil);
    assert_eq!(node.put("/cache/doc:1", b"body").status, 204);
    assert_eq!(near.read(), invalidate(&["doc:1"]));
    assert_eq!(near.cmd(&["GET", "doc:1"]), bulk("body"));
    assert_eq!(node.delete("/cache/doc:1").status, 204);
    assert_eq!(near.read(), invalidate(&["doc:1"]));
}
