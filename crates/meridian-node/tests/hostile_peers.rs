//! A node facing broken or hostile peers, spoken to in raw bytes: a MIGRATE
//! target answering garbage, huge lengths, deep nesting, half a reply or a
//! reply that never ends; topology maps with an epoch near overflow or
//! oversized parts; region-link requests beyond the link's bounds or stamped
//! by a clock far ahead. Each gets a clear error, and the node keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Node, Raw, Reply, encode, free_port, info_field, shard_map};

/// What the fake target does after its reply.
#[derive(Clone, Copy)]
enum Then {
    /// Closes the connection.
    Close,
    /// Keeps it open and silent.
    Hold,
    /// Sends one more byte every 50 ms, never finishing the reply.
    Trickle,
}

/// A local listener that serves every connection it accepts on its own thread.
fn listen(serve: impl Fn(TcpStream) + Clone + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// A MIGRATE target on a local listener: reads the first request of every
/// connection and answers it with `reply`, whatever was asked.
fn fake_target(reply: Vec<u8>, then: Then) -> u16 {
    listen(move |mut stream| {
        let mut request = [0u8; 4096];
        if stream.read(&mut request).unwrap_or(0) == 0 {
            return;
        }
        if stream.write_all(&reply).is_err() {
            return;
        }
        match then {
            Then::Close => {}
            Then::Hold => std::thread::sleep(Duration::from_secs(30)),
            Then::Trickle => {
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(30) && stream.write_all(b"a").is_ok()
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    })
}

/// The error MIGRATE of key `k` to `target` answers with, and how long it took.
fn migrate_error(node: &Node, target: u16) -> (String, Duration) {
    let started = Instant::now();
    let reply = node.raw().cmd(&[
        "MIGRATE",
        "127.0.0.1",
        &target.to_string(),
        "k",
        "0",
        "1000",
    ]);
    let Reply::Error(error) = reply else {
        panic!("MIGRATE to a broken target answered {reply:?}");
    };
    (error, started.elapsed())
}

fn assert_serving(node: &Node) {
    assert_eq!(node.raw().cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn migrate_refuses_broken_target_replies_and_keeps_the_key() {
    let node = Node::start();
    assert_eq!(node.raw().cmd(&["SET", "k", "v"]), Reply::ok());
    let endless_line = vec![b'+'; 200_000];
    let deep = b"*1\r\n".repeat(100_000);
    let cases: Vec<(&str, Vec<u8>, Then, &str)> = vec![
        (
            "garbage",
            b"?what\r\n".to_vec(),
            Then::Close,
            "IOERR target instance sent an invalid reply: unexpected reply type byte 0x3f",
        ),
        (
            "huge bulk length",
            b"$9223372036854775807\r\n".to_vec(),
            Then::Hold,
            "IOERR target instance sent an invalid reply: bulk reply longer than 65536 bytes",
        ),
        (
            "negative length",
            b"$-7\r\n".to_vec(),
            Then::Hold,
            "IOERR target instance sent an invalid reply: invalid reply length",
        ),
        (
            "huge array",
            b"*9223372036854775807\r\n".to_vec(),
            Then::Hold,
            "IOERR target instance sent an invalid reply: reply with more than 65536 array elements",
        ),
        (
            "deep nesting",
            deep,
            Then::Hold,
            "IOERR target instance sent an invalid reply: reply nested deeper than 4 arrays",
        ),
        (
            "a line that never ends",
            endless_line,
            Then::Hold,
            "IOERR target instance sent an invalid reply: reply line too long",
        ),
        (
            "closed mid-line",
            b"+O".to_vec(),
            Then::Close,
            "IOERR connection to target instance closed",
        ),
        (
            "closed mid-bulk",
            b"$10\r\nabc".to_vec(),
            Then::Close,
            "IOERR connection to target instance closed",
        ),
        (
            "a reply trickling forever",
            b"+O".to_vec(),
            Then::Trickle,
            "IOERR error or timeout talking to target instance: no complete reply within 1000 ms",
        ),
        (
            "silence",
            Vec::new(),
            Then::Hold,
            "IOERR error or timeout talking to target instance: no complete reply within 1000 ms",
        ),
    ];
    for (what, reply, then, expected) in cases {
        let (error, took) = migrate_error(&node, fake_target(reply, then));
        assert_eq!(error, expected, "{what}");
        // the 1000 ms timeout bounds the whole reply, not each read
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
        assert_serving(&node);
        assert_eq!(
            node.raw().cmd(&["GET", "k"]),
            Reply::bulk("v"),
            "{what}: the key left the source"
        );
    }

    // MERIDIAN.MIGRATE SLOT first asks the target's ROLE: same bounds
    let slot = meridian_topology::key_slot(b"k").to_string();
    let target = fake_target(b"*1\r\n".repeat(1000), Then::Hold);
    let reply = node.raw().cmd(&[
        "MERIDIAN.MIGRATE",
        "SLOT",
        &slot,
        "127.0.0.1",
        &target.to_string(),
        "TIMEOUT",
        "1000",
    ]);
    assert_eq!(
        reply,
        Reply::err(
            "IOERR target instance sent an invalid reply: reply nested deeper than 4 arrays"
        )
    );
    assert_serving(&node);

    // a sane target still gets the key
    let target = fake_target(b"+OK\r\n".to_vec(), Then::Hold);
    let reply = node.raw().cmd(&[
        "MIGRATE",
        "127.0.0.1",
        &target.to_string(),
        "k",
        "0",
        "1000",
    ]);
    assert_eq!(reply, Reply::ok());
    assert_eq!(node.raw().cmd(&["EXISTS", "k"]), Reply::Int(0));
}

/// A MIGRATE target that accepts at once but answers slowly: every request it
/// reads is reported on the channel, then answered `+OK` after `delay`.
fn slow_target(delay: Duration) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let (requests, received) = std::sync::mpsc::channel();
    let port = listen(move |mut stream| {
        let mut request = [0u8; 4096];
        loop {
            let read = stream.read(&mut request).unwrap_or(0);
            if read == 0 || requests.send(request[..read].to_vec()).is_err() {
                return;
            }
            std::thread::sleep(delay);
            if stream.write_all(b"+OK\r\n").is_err() {
                return;
            }
        }
    });
    (port, received)
}

/// The refusal of a write to a key a MIGRATE batch has in flight.
fn in_flight() -> Reply {
    Reply::Error("TRYAGAIN Key is being migrated, retry later".into())
}

/// MIGRATE of `key` to `target` on its own connection, on a thread.
fn migrate_in_background(
    port: u16,
    target: u16,
    key: &'static str,
) -> std::thread::JoinHandle<(Reply, Duration)> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let reply = Raw::connect(port).cmd(&[
            "MIGRATE",
            "127.0.0.1",
            &target.to_string(),
            key,
            "0",
            "5000",
        ]);
        (reply, started.elapsed())
    })
}

/// `command` on `other` answers `expected` at once, not after the MIGRATE in flight.
fn quick(other: &mut Raw, command: &[&str], expected: Reply) {
    let started = Instant::now();
    assert_eq!(other.cmd(command), expected, "{command:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "{command:?} waited {took:?} for the MIGRATE in flight"
    );
}

/// While a MIGRATE waits on its destination, the source holds neither a worker
/// nor the shard lock of the key in flight: other clients, even of that key, are
/// answered at once. Reads of the key are served; writes to it get TRYAGAIN
/// until the batch is settled (the destination may otherwise take a newer write
/// the batch then overwrites or deletes).
#[test]
fn a_migrate_waiting_on_a_slow_target_does_not_block_other_clients() {
    let node = Node::start_with(&["--io-threads", "1"]);
    assert_eq!(node.raw().cmd(&["SET", "k", "v"]), Reply::ok());
    let (target, requests) = slow_target(Duration::from_millis(1500));
    let port = node.port;
    let migrate = migrate_in_background(port, target, "k");
    let first = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the target got the batch");
    assert!(String::from_utf8_lossy(&first).contains("RESTORE-ASKING"));

    let mut other = node.raw();
    quick(&mut other, &["PING"], Reply::Simple("PONG".into()));
    quick(&mut other, &["GET", "k"], Reply::bulk("v"));
    quick(&mut other, &["SET", "k", "v2"], in_flight());
    quick(&mut other, &["DEL", "k"], in_flight());
    quick(&mut other, &["MSET", "other", "1", "k", "v3"], in_flight());
    // other keys are written as usual
    quick(&mut other, &["SET", "other", "2"], Reply::ok());
    assert_eq!(other.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        other.cmd(&["SET", "k", "v4"]),
        Reply::Simple("QUEUED".into())
    );
    quick(&mut other, &["EXEC"], in_flight());
    quick(&mut other, &["GET", "k"], Reply::bulk("v"));

    let (reply, took) = migrate.join().expect("migrate thread");
    assert_eq!(reply, Reply::ok());
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    // nothing was written meanwhile: one batch, no resend
    assert!(requests.try_recv().is_err());
    assert_eq!(node.raw().cmd(&["EXISTS", "k"]), Reply::Int(0));
    // settled: the key is writable again
    assert_eq!(other.cmd(&["SET", "k", "again"]), Reply::ok());

    // expired while in flight: the copy is deleted on the target too (an expired RESTORE)
    assert_eq!(other.cmd(&["SET", "gone", "v", "PX", "300"]), Reply::ok());
    let migrate = migrate_in_background(port, target, "gone");
    requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the target got the batch");
    std::thread::sleep(Duration::from_millis(400));
    // gone here, but still in flight: not writable until its tombstone is acknowledged
    quick(&mut other, &["SET", "gone", "new"], in_flight());
    let tombstone = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the expired key is deleted on the target");
    let tombstone = String::from_utf8_lossy(&tombstone);
    assert!(tombstone.contains("ABSTTL"), "{tombstone}");
    assert_eq!(migrate.join().expect("migrate thread").0, Reply::ok());
    assert_eq!(other.cmd(&["SET", "gone", "new"]), Reply::ok());
}

/// A MIGRATE whose target reads the batch, then closes the connection after
/// `delay` without answering.
fn closing_target(delay: Duration) -> u16 {
    listen(move |mut stream| {
        let mut request = [0u8; 4096];
        if stream.read(&mut request).unwrap_or(0) == 0 {
            return;
        }
        std::thread::sleep(delay);
    })
}

/// A MIGRATE that fails mid-batch leaves nothing locked: the key stays on the
/// source and is writable again.
#[test]
fn a_failed_migrate_leaves_its_keys_writable() {
    let node = Node::start_with(&["--io-threads", "1"]);
    assert_eq!(node.raw().cmd(&["SET", "k", "v"]), Reply::ok());
    let target = closing_target(Duration::from_millis(800));
    let migrate = migrate_in_background(node.port, target, "k");
    std::thread::sleep(Duration::from_millis(300));
    let mut other = node.raw();
    quick(&mut other, &["SET", "k", "v2"], in_flight());
    let (reply, _) = migrate.join().expect("migrate thread");
    assert!(
        matches!(&reply, Reply::Error(error) if error.starts_with("IOERR")),
        "{reply:?}"
    );
    assert_eq!(other.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(other.cmd(&["SET", "k", "v2"]), Reply::ok());
    assert_eq!(other.cmd(&["DEL", "k"]), Reply::Int(1));
}

/// In a MIGRATING slot, a key in flight is not redirected with ASK (the
/// destination could take a write the batch's tombstone then deletes): TRYAGAIN
/// until the batch is settled, then ASK as usual.
#[test]
fn a_key_in_flight_in_a_migrating_slot_gets_tryagain_instead_of_ask() {
    use meridian_topology::{NodeAddr, ShardTopology, SlotRange, TopologyMap, cluster_node_id};
    let node = Node::start_named("shard-0-0", 4, &["--io-threads", "1"]);
    let (target, requests) = slow_target(Duration::from_millis(1500));
    let primary = |id: &str, port: u16| NodeAddr {
        id: id.into(),
        ip: "127.0.0.1".into(),
        port,
    };
    let map = TopologyMap {
        epoch: 1,
        cluster: "demo".into(),
        region: "local".into(),
        shards: vec![
            ShardTopology {
                index: 0,
                slots: vec![SlotRange::new(0, 8191).expect("range")],
                primary: primary("shard-0-0", node.port),
                replicas: Vec::new(),
            },
            ShardTopology {
                index: 1,
                slots: vec![SlotRange::new(8192, 16383).expect("range")],
                primary: primary("shard-1-0", target),
                replicas: Vec::new(),
            },
        ],
    };
    let json = serde_json::to_string(&map).expect("json");
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", &json]), Reply::ok());
    // "{a}" hashes to slot 15495 (shard 1), "{b}" to 3300 (shard 0)
    let slot = meridian_topology::key_slot(b"{b}k");
    assert!(slot <= 8191);
    let slot = slot.to_string();
    assert_eq!(raw.cmd(&["SET", "{b}k", "v"]), Reply::ok());
    assert_eq!(raw.cmd(&["SET", "{b}gone", "v"]), Reply::ok());
    assert_eq!(
        raw.cmd(&[
            "CLUSTER",
            "SETSLOT",
            &slot,
            "MIGRATING",
            &cluster_node_id("shard-1-0"),
        ]),
        Reply::ok()
    );
    let ask = Reply::Error(format!("ASK {slot} 127.0.0.1:{target}"));

    let migrate = migrate_in_background(node.port, target, "{b}k");
    requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the target got the batch");
    quick(&mut raw, &["GET", "{b}k"], Reply::bulk("v"));
    quick(&mut raw, &["DEL", "{b}k"], in_flight());
    quick(&mut raw, &["SET", "{b}k", "x"], in_flight());
    // a key of the slot not in flight and missing here: ASK as usual
    quick(&mut raw, &["SET", "{b}other", "x"], ask.clone());
    assert_eq!(migrate.join().expect("migrate thread").0, Reply::ok());
    // moved: ASK for reads and writes
    assert_eq!(raw.cmd(&["GET", "{b}k"]), ask);
    assert_eq!(raw.cmd(&["SET", "{b}k", "x"]), ask);

    // expired while in flight: missing here, yet TRYAGAIN rather than ASK
    assert_eq!(raw.cmd(&["PEXPIRE", "{b}gone", "300"]), Reply::Int(1));
    let migrate = migrate_in_background(node.port, target, "{b}gone");
    requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the target got the batch");
    std::thread::sleep(Duration::from_millis(400));
    quick(&mut raw, &["GET", "{b}gone"], in_flight());
    quick(&mut raw, &["SET", "{b}gone", "x"], in_flight());
    requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the tombstone");
    assert_eq!(migrate.join().expect("migrate thread").0, Reply::ok());
    assert_eq!(raw.cmd(&["SET", "{b}gone", "x"]), ask);
    // a slot this node does not serve: MOVED as before
    assert_eq!(
        raw.cmd(&["GET", "{a}k"]),
        Reply::Error(format!("MOVED 15495 127.0.0.1:{target}"))
    );
}

fn topology_set(node: &Node, json: &str) -> Reply {
    node.raw()
        .cmd(&["MERIDIAN.TOPOLOGY", "SET", json, "PARTIAL"])
}

/// A valid one-shard map for `node`, as JSON to edit.
fn base_map(node: &Node, epoch: u64) -> serde_json::Value {
    serde_json::from_str(&shard_map(epoch, ("node-0", node), &[])).expect("json")
}

#[test]
fn topology_refuses_an_epoch_near_overflow_and_oversized_maps() {
    let node = Node::start_named("node-0", 4, &[]);
    let max_epoch: u64 = (1 << 53) - 1;

    for epoch in [u64::MAX, u64::MAX - 1, i64::MAX as u64, max_epoch + 1] {
        let json = base_map(&node, epoch).to_string();
        assert_eq!(
            topology_set(&node, &json),
            Reply::Error(format!(
                "ERR invalid topology: epoch {epoch} is above the largest accepted epoch {max_epoch}"
            )),
        );
    }
    // beyond u64: the JSON itself does not parse
    let json = base_map(&node, 1)
        .to_string()
        .replace("\"epoch\":1", "\"epoch\":18446744073709551616");
    let Reply::Error(error) = topology_set(&node, &json) else {
        panic!("an epoch beyond u64 was accepted");
    };
    assert!(error.starts_with("ERR invalid topology JSON"), "{error}");
    assert_eq!(
        node.raw().cmd(&["MERIDIAN.TOPOLOGY", "EPOCH"]),
        Reply::Int(0),
        "a refused map left no trace"
    );

    // slots outside 0..16383: as a u16 overflow, and past the last slot
    let mut map = base_map(&node, 1);
    map["shards"][0]["slots"] = serde_json::json!([{"start": 0, "end": 70000}]);
    let Reply::Error(error) = topology_set(&node, &map.to_string()) else {
        panic!("slot 70000 accepted");
    };
    assert!(error.starts_with("ERR invalid topology JSON"), "{error}");
    map["shards"][0]["slots"] = serde_json::json!([{"start": 0, "end": 16384}]);
    assert_eq!(
        topology_set(&node, &map.to_string()),
        Reply::err("ERR invalid topology: slot 16384 is out of range (slots are 0-16383)")
    );

    // more shards than slots
    let mut map = base_map(&node, 1);
    let shard = map["shards"][0].clone();
    let shards: Vec<serde_json::Value> = (0..16385)
        .map(|index| {
            let mut shard = shard.clone();
            shard["index"] = index.into();
            shard["slots"] = serde_json::json!([]);
            shard["primary"]["id"] = format!("node-{index}").into();
            shard
        })
        .collect();
    map["shards"] = shards.into();
    assert_eq!(
        topology_set(&node, &map.to_string()),
        Reply::err("ERR invalid topology: 16385 shards, more than 16384")
    );

    // a node id no pod can have
    let mut map = base_map(&node, 1);
    map["shards"][0]["replicas"] =
        serde_json::json!([{"id": "r".repeat(300), "ip": "127.0.0.1", "port": 1}]);
    assert_eq!(
        topology_set(&node, &map.to_string()),
        Reply::err("ERR invalid topology: name or address of 300 bytes, more than 253")
    );

    // the largest epoch is accepted, and stays exact
    let json = base_map(&node, max_epoch).to_string();
    assert_eq!(topology_set(&node, &json), Reply::ok());
    assert_eq!(
        node.raw().cmd(&["MERIDIAN.TOPOLOGY", "EPOCH"]),
        Reply::Int(max_epoch as i64)
    );
    assert_serving(&node);
}

/// A raw connection to the node's region-link port, after `LINK.HELLO` as `region`.
fn link(port: u16, region: Option<&str>) -> Raw {
    let mut raw = Raw::connect(port);
    if let Some(region) = region {
        assert_eq!(
            raw.cmd(&["LINK.HELLO", "meridian", region, ""]),
            Reply::ok()
        );
    }
    raw
}

fn link_event(key: &str, hlc: u64) -> Vec<u8> {
    let hlc = hlc.to_string();
    encode(&[
        b"LINK.EVENT",
        b"key",
        key.as_bytes(),
        hlc.as_bytes(),
        b"7",
        b"hostile",
        b"0",
    ])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn refusals_metric(node: &Node, peer: &str, reason: &str) -> u64 {
    let (_, body) = node.http_get("/metrics");
    let series =
        format!("meridian_region_link_refusals_total{{peer=\"{peer}\",reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn region_links_refuse_oversized_frames_and_far_future_clocks() {
    let link_port = free_port();
    let node = Node::start_with(&[
        "--region-port",
        &link_port.to_string(),
        // lets a single argument pass the parser, so the frame bound decides
        "--proto-max-bulk-len",
        "1gb",
    ]);
    assert_eq!(node.raw().cmd(&["SET", "k", "v"]), Reply::ok());

    // before the hello: only small requests
    let mut raw = link(link_port, None);
    raw.send(b"*11\r\n");
    assert_eq!(
        raw.read(),
        Reply::err("ERR Protocol error: unauthenticated multibulk length")
    );
    assert!(raw.closed());
    assert_eq!(refusals_metric(&node, "unknown", "protocol"), 1);

    // after it: no request has more than a handful of arguments
    let mut raw = link(link_port, Some("hostile"));
    raw.send(b"*100000\r\n");
    assert_eq!(
        raw.read(),
        Reply::err("ERR Protocol error: invalid multibulk length")
    );
    assert!(raw.closed());
    // "hostile" is no configured peer region: it gets no series of its own
    assert_eq!(refusals_metric(&node, "unknown", "protocol"), 2);

    // a frame longer than the link accepts is refused from its header on
    let mut raw = link(link_port, Some("hostile"));
    raw.send(b"*9\r\n$10\r\nLINK.EVENT\r\n$3\r\nset\r\n$900000000\r\n");
    let Reply::Error(error) = raw.read() else {
        panic!("oversized frame accepted");
    };
    assert!(
        error.starts_with("ERR link request of at least 9000000")
            && error.ends_with("more than 629145600"),
        "{error}"
    );
    assert!(raw.closed());
    assert_eq!(refusals_metric(&node, "unknown", "frame_too_large"), 1);

    // an event stamped at the end of time: refused before it moves the clock
    // (from a configured peer region now, which gets its own series)
    let peers = r#"[{"region":"hostile","seeds":["127.0.0.1:1"]}]"#;
    assert_eq!(
        node.raw().cmd(&["MERIDIAN.PEERS", "SET", peers]),
        Reply::ok()
    );
    let mut raw = link(link_port, Some("hostile"));
    raw.send(&link_event("k", u64::MAX));
    let Reply::Error(error) = raw.read() else {
        panic!("far-future event accepted");
    };
    assert!(
        error.starts_with("CLOCKDRIFT event from region 'hostile' is ")
            && error.ends_with(
                " ms ahead of this node's clock (limit 5000 ms, --max-clock-drift-ms); link refused"
            ),
        "{error}"
    );
    assert!(raw.closed());
    assert_eq!(
        node.raw().cmd(&["GET", "k"]),
        Reply::bulk("v"),
        "the refused event was applied"
    );
    assert_eq!(refusals_metric(&node, "hostile", "clock_drift"), 1);
    assert_eq!(
        info_field(&node, "regions", "region_clock_drift_refusals"),
        "1"
    );
    assert_eq!(info_field(&node, "regions", "region_link_refusals"), "4");
    assert_eq!(
        info_field(&node, "regions", "region_max_clock_drift_ms"),
        "5000"
    );
    assert!(
        info_field(&node, "regions", "region_last_link_refusal").starts_with("CLOCKDRIFT"),
        "INFO names the last refusal"
    );

    // an event stamped by a sane clock is applied, on a link like the others
    let mut raw = link(link_port, Some("hostile"));
    raw.send(&link_event("k", now_ms() << 16));
    assert_eq!(raw.read(), Reply::ok());
    assert_eq!(node.raw().cmd(&["EXISTS", "k"]), Reply::Int(0));
    assert_serving(&node);
}

#[test]
fn restore_events_store_whole_values_and_drop_the_copy_on_an_unreadable_payload() {
    let link_port = free_port();
    let node = Node::start_with(&["--region-port", &link_port.to_string()]);
    // with a peer region configured, local writes are versioned
    let peers = r#"[{"region":"peer","seeds":["127.0.0.1:1"]}]"#;
    assert_eq!(
        node.raw().cmd(&["MERIDIAN.PEERS", "SET", peers]),
        Reply::ok()
    );
    let mut raw = link(link_port, Some("peer"));
    assert_eq!(
        raw.cmd(&["LINK.FEATURES"]),
        Reply::bulk("restore"),
        "the feature is announced"
    );
    assert_eq!(node.raw().cmd(&["RPUSH", "list", "a", "b"]), Reply::Int(2));
    let Reply::Bulk(payload) = node.raw().cmd(&["DUMP", "list"]) else {
        panic!("no dump");
    };
    let restore = |key: &str, payload: &[u8], ttl: &str, hlc: u64| {
        let hlc = hlc.to_string();
        encode(&[
            b"LINK.EVENT",
            b"restore",
            key.as_bytes(),
            hlc.as_bytes(),
            b"7",
            b"peer",
            b"0",
            payload,
            ttl.as_bytes(),
        ])
    };
    // a valid payload replaces the key, with its TTL
    assert_eq!(node.raw().cmd(&["SET", "copy", "old"]), Reply::ok());
    // stamped later than the local write (same millisecond would tie)
    raw.send(&restore("copy", &payload, "60000", (now_ms() + 1000) << 16));
    assert_eq!(raw.read(), Reply::ok());
    assert_eq!(
        node.raw().cmd(&["LRANGE", "copy", "0", "-1"]),
        Reply::Array(vec![Reply::bulk("a"), Reply::bulk("b")])
    );
    let Reply::Int(ttl) = node.raw().cmd(&["PTTL", "copy"]) else {
        panic!("no ttl");
    };
    assert!((59_000..=60_000).contains(&ttl), "ttl {ttl}");
    // an unreadable one (corrupt, or another release's format) drops the copy
    // instead of leaving it stale, and the link stays up
    let mut corrupt = payload.clone();
    corrupt[3] ^= 0xff;
    raw.send(&restore("copy", &corrupt, "0", (now_ms() + 2000) << 16));
    assert_eq!(raw.read(), Reply::ok());
    assert_eq!(node.raw().cmd(&["EXISTS", "copy"]), Reply::Int(0));
    // an older event than the local copy changes nothing
    assert_eq!(node.raw().cmd(&["SET", "newer", "local"]), Reply::ok());
    raw.send(&restore("newer", &payload, "0", 1 << 16));
    assert_eq!(raw.read(), Reply::ok());
    assert_eq!(node.raw().cmd(&["GET", "newer"]), Reply::bulk("local"));
    // missing arguments are an error reply, not a dropped link
    raw.send(&encode(&[
        b"LINK.EVENT",
        b"restore",
        b"k",
        b"1",
        b"7",
        b"peer",
        b"0",
    ]));
    assert_eq!(raw.read(), Reply::err("ERR unknown event kind"));
    assert_eq!(raw.cmd(&["LINK.PING"]), Reply::Simple("PONG".into()));
    assert_serving(&node);
}
