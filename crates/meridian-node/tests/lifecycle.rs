//! Process-level behaviour: HTTP endpoints, SIGTERM, topology admin commands.

mod common;

use std::time::{Duration, Instant};

use common::{Node, Reply};

#[test]
fn metrics_health_and_readiness_over_http() {
    let node = Node::start();
    let mut raw = node.raw();
    raw.cmd(&["SET", "k", "v"]);
    raw.cmd(&["GET", "k"]);
    raw.cmd(&["GET", "missing"]);
    assert_eq!(node.http_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(node.http_get("/readyz"), (200, "ready\n".to_string()));
    let (status, body) = node.http_get("/metrics");
    assert_eq!(status, 200);
    for needle in [
        "meridian_connected_clients 1",
        "meridian_keys 1",
        "meridian_keyspace_hits_total 1",
        "meridian_keyspace_misses_total 1",
        "meridian_command_calls_total{command=\"get\"} 2",
        "meridian_memory_used_bytes ",
        "# EOF",
    ] {
        assert!(body.contains(needle), "metrics lack {needle:?}:\n{body}");
    }
    assert_eq!(node.http_get("/nope").0, 404);

    // Connections that send nothing hold at most 64 slots; one more is answered 503,
    // and probes are answered again once they are gone.
    let idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", node.metrics_port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.http_get("/healthz").0, 503, "the 65th connection");
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.http_get("/healthz"), (200, "ok\n".to_string()));
}

#[test]
fn sigterm_finishes_in_flight_work_and_exits_zero() {
    // single I/O thread: also covers the current-thread runtime
    let mut node = Node::start_with(&["--io-threads", "1"]);
    let mut raw = node.raw();
    // a large pipelined batch is in flight when the signal arrives
    let mut batch = Vec::new();
    for index in 0..20000 {
        batch.extend(common::encode(&[
            b"SET",
            format!("k{index}").as_bytes(),
            b"v",
        ]));
    }
    raw.send(&batch);
    assert_eq!(raw.read(), Reply::ok());
    node.signal("TERM");
    for _ in 1..20000 {
        assert_eq!(
            raw.read(),
            Reply::ok(),
            "in-flight replies must be delivered"
        );
    }
    let exit = node
        .wait_exit(Duration::from_secs(15))
        .expect("node did not exit after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err(),
        "listener must be closed"
    );
}

#[test]
fn sigterm_closes_idle_subscribed_and_blocked_clients_at_once() {
    // Connections that send nothing must notice the stop by themselves: with a
    // 60-second shutdown timeout, a connection that missed it would hold the node
    // (each I/O thread count: the stop reaches connections on every worker).
    for threads in ["1", "2"] {
        let mut node = Node::start_with(&["--io-threads", threads, "--shutdown-timeout", "60"]);
        let mut idle = node.raw();
        assert_eq!(idle.cmd(&["PING"]), Reply::Simple("PONG".into()));
        let mut subscriber = node.raw();
        subscriber.send(&common::encode(&[b"SUBSCRIBE", b"news"]));
        let _confirmation = subscriber.read();
        let mut blocked = node.raw();
        blocked.send(&common::encode(&[b"BLPOP", b"nothing", b"0"]));
        let mut tracked = node.raw();
        assert_eq!(tracked.cmd(&["CLIENT", "TRACKING", "on"]), Reply::ok());
        // the blocking command has reached the node before the signal
        let deadline = Instant::now() + Duration::from_secs(5);
        while common::info_field(&node, "clients", "blocked_clients") != "1" {
            assert!(Instant::now() < deadline, "BLPOP never blocked");
            std::thread::sleep(Duration::from_millis(10));
        }
        let signalled = Instant::now();
        node.signal("TERM");
        for (name, client) in [
            ("idle", &mut idle),
            ("subscriber", &mut subscriber),
            ("blocked", &mut blocked),
            ("tracking", &mut tracked),
        ] {
            assert!(
                client.closed(),
                "{name} client not closed ({threads} threads)"
            );
        }
        let within = Duration::from_secs(10).saturating_sub(signalled.elapsed());
        let Some(exit) = node.wait_exit(within) else {
            panic!(
                "node still running {:?} after SIGTERM with idle clients ({threads} threads)",
                signalled.elapsed()
            );
        };
        assert!(exit.success(), "exit status {exit:?}");
    }
}

fn topology_json(epoch: u64, port: u16) -> String {
    let shards: Vec<serde_json::Value> = meridian_topology::split_evenly(3)
        .into_iter()
        .enumerate()
        .map(|(index, range)| {
            serde_json::json!({
                "index": index,
                "slots": [range],
                "primary": {"id": format!("demo-{index}-0"), "ip": "127.0.0.1", "port": port},
                "replicas": [{"id": format!("demo-{index}-1"), "ip": "127.0.0.1", "port": port}],
            })
        })
        .collect();
    serde_json::json!({"epoch": epoch, "cluster": "demo", "region": "eu-west", "shards": shards})
        .to_string()
}

#[test]
fn topology_set_get_and_stale_epochs() {
    let node = Node::start();
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["MERIDIAN.TOPOLOGY", "GET"]), Reply::Nil);
    let five = topology_json(5, node.port);
    assert_eq!(raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", &five]), Reply::ok());
    assert_eq!(
        raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", &five]),
        Reply::ok(),
        "same epoch, same map: idempotent"
    );
    let Reply::Bulk(stored) = raw.cmd(&["MERIDIAN.TOPOLOGY", "GET"]) else {
        panic!("GET returns bulk JSON")
    };
    let stored: meridian_topology::TopologyMap = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored.epoch, 5);
    assert_eq!(stored.shards.len(), 3);
    assert_eq!(
        raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", &topology_json(4, node.port)]),
        Reply::err("STALEEPOCH topology epoch 4 is older than current epoch 5")
    );
    let different_same_epoch = topology_json(5, node.port + 1);
    assert_eq!(
        raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", &different_same_epoch]),
        Reply::err("STALEEPOCH topology epoch 5 is older than current epoch 5")
    );
    assert_eq!(
        raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", &topology_json(6, node.port)]),
        Reply::ok()
    );
    let Reply::Error(error) = raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", "{not json"]) else {
        panic!()
    };
    assert!(error.starts_with("ERR invalid topology JSON"), "{error}");
    let mut gap: serde_json::Value = serde_json::from_str(&topology_json(9, node.port)).unwrap();
    gap["shards"][2]["slots"] = serde_json::json!([{"start": 10923, "end": 16000}]);
    let Reply::Error(error) = raw.cmd(&["MERIDIAN.TOPOLOGY", "SET", &gap.to_string()]) else {
        panic!()
    };
    assert_eq!(
        error,
        "ERR invalid topology: slot 16001 is not assigned to any shard"
    );
    assert_eq!(raw.cmd(&["MERIDIAN.TOPOLOGY", "EPOCH"]), Reply::Int(6));
    // In cluster mode MYID is the 40-hex id derived from the node name.
    assert_eq!(
        raw.cmd(&["CLUSTER", "MYID"]),
        Reply::bulk(&meridian_topology::cluster_node_id("test-node-0"))
    );
}

/// `timeout` (Redis's idle client timeout): an idle client is disconnected once it has
/// passed, a subscriber (which waits for messages by design) is not, and CONFIG SET
/// changes it at run time.
#[test]
fn idle_clients_are_disconnected_after_the_timeout() {
    let node = Node::start_with(&["--timeout", "1"]);
    let mut idle = node.raw();
    assert_eq!(idle.cmd(&["PING"]), Reply::Simple("PONG".into()));
    let mut subscriber = node.raw();
    let Reply::Array(subscribed) = subscriber.cmd(&["SUBSCRIBE", "news"]) else {
        panic!("SUBSCRIBE answers an array");
    };
    assert_eq!(subscribed[0], Reply::bulk("subscribe"));
    let started = Instant::now();
    assert!(idle.closed(), "the idle client is still connected");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );

    let mut admin = node.raw();
    assert_eq!(admin.cmd(&["PUBLISH", "news", "hi"]), Reply::Int(1));
    let Reply::Array(message) = subscriber.read() else {
        panic!("a message for the subscriber");
    };
    assert_eq!(
        message[2],
        Reply::bulk("hi"),
        "the subscriber outlived the timeout"
    );
    assert_eq!(
        admin.cmd(&["CONFIG", "GET", "timeout"]),
        Reply::Array(vec![Reply::bulk("timeout"), Reply::bulk("1")])
    );
    let Reply::Error(refused) = admin.cmd(&["CONFIG", "SET", "timeout", "soon"]) else {
        panic!("a timeout that is no number accepted");
    };
    assert!(refused.contains("'timeout'"), "{refused}");
    assert_eq!(admin.cmd(&["CONFIG", "SET", "timeout", "0"]), Reply::ok());
    let mut kept = node.raw();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(kept.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

/// `maxclients`: a client beyond it is told `-ERR max number of clients reached` and
/// closed (counted in `rejected_connections`), CONFIG SET moves the limit, and a node
/// of the region's topology (a replica or migration source, here any 127.0.0.1 client
/// once the map names that address) is let in regardless.
#[test]
fn clients_beyond_maxclients_are_refused_except_the_regions_nodes() {
    let node = Node::start_with(&["--maxclients", "2"]);
    let mut first = node.raw();
    let mut second = node.raw();
    for client in [&mut first, &mut second] {
        assert_eq!(client.cmd(&["PING"]), Reply::Simple("PONG".into()));
    }
    let mut third = node.raw();
    assert_eq!(
        third.read(),
        Reply::Error("ERR max number of clients reached".into())
    );
    assert!(third.closed());
    let Reply::Bulk(info) = first.cmd(&["INFO", "everything"]) else {
        panic!("INFO answers text");
    };
    let info = String::from_utf8_lossy(&info);
    for field in [
        "maxclients:2\r\n",
        "connected_clients:2\r\n",
        "rejected_connections:1\r\n",
    ] {
        assert!(info.contains(field), "INFO lacks {field:?}");
    }

    assert_eq!(
        first.cmd(&["CONFIG", "SET", "maxclients", "3"]),
        Reply::ok()
    );
    assert_eq!(
        first.cmd(&["CONFIG", "GET", "maxclients"]),
        Reply::Array(vec![Reply::bulk("maxclients"), Reply::bulk("3")])
    );
    let Reply::Error(refused) = first.cmd(&["CONFIG", "SET", "maxclients", "0"]) else {
        panic!("maxclients 0 accepted");
    };
    assert!(refused.contains("'maxclients'"), "{refused}");
    let mut third = node.raw();
    assert_eq!(third.cmd(&["PING"]), Reply::Simple("PONG".into()));
    let mut fourth = node.raw();
    assert_eq!(
        fourth.read(),
        Reply::Error("ERR max number of clients reached".into())
    );

    // The map names 127.0.0.1 (where this test's clients come from) as a node of the
    // region: its connections are a replica's or a migration's, never refused.
    let map = topology_json(1, node.port);
    assert_eq!(first.cmd(&["MERIDIAN.TOPOLOGY", "SET", &map]), Reply::ok());
    let mut member = node.raw();
    assert_eq!(member.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

/// The kernel's view of the node process: `THP_enabled` in /proc/PID/status.
fn transparent_huge_pages_enabled(node: &Node) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).ok()?;
    let line = status
        .lines()
        .find(|line| line.starts_with("THP_enabled:"))?;
    Some(line.trim_start_matches("THP_enabled:").trim() == "1")
}

#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let node = Node::start();
    let Some(enabled) = transparent_huge_pages_enabled(&node) else {
        eprintln!("SKIP: this kernel reports no THP_enabled");
        return;
    };
    assert!(!enabled, "disable-thp defaults to yes, as in Redis");
    let mine = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .contains("THP_enabled:\t1");
    if mine {
        // the setting is inherited, so only a test process with THP can see it kept
        let kept = Node::start_with(&["--disable-thp", "no"]);
        assert_eq!(transparent_huge_pages_enabled(&kept), Some(true));
    }
}

/// CPU ticks (utime + stime) of each of the node's threads, by thread name.
fn thread_cpu(node: &Node) -> std::collections::BTreeMap<String, u64> {
    let tasks = format!("/proc/{}/task", node.pid());
    std::fs::read_dir(tasks)
        .expect("task list")
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // fields after the command name, which ends with the last ')'
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
            Some((name.trim().to_owned(), ticks))
        })
        .collect()
}

/// `--io-threads 3`: connections are spread over the node's own thread and the I/O
/// threads io-1 and io-2 (the one with the fewest connections takes the next), and
/// each serves its clients' pipelines whole.
#[test]
fn connections_are_spread_over_the_io_threads() {
    let node = Node::start_with(&["--io-threads", "3"]);
    let mut clients: Vec<common::Raw> = (0..6).map(|_| node.raw()).collect();
    let before = thread_cpu(&node);
    assert!(
        before.contains_key("io-1") && before.contains_key("io-2") && !before.contains_key("io-3"),
        "threads: {before:?}"
    );
    for round in 0..40 {
        for (client, raw) in clients.iter_mut().enumerate() {
            let mut batch = Vec::new();
            for index in 0..1000 {
                let key = format!("k:{client}:{round}:{index}");
                batch.extend(common::encode(&[b"SET", key.as_bytes(), b"value"]));
            }
            raw.send(&batch);
        }
        for raw in &mut clients {
            for _ in 0..1000 {
                assert_eq!(raw.read(), Reply::ok());
            }
        }
    }
    let after = thread_cpu(&node);
    for name in ["io-1", "io-2"] {
        assert!(
            after[name] > before[name],
            "{name} served nothing: {before:?} -> {after:?}"
        );
    }
    let own: u64 = after
        .iter()
        .filter(|(name, _)| !name.starts_with("io-"))
        .map(|(_, ticks)| ticks)
        .sum();
    let own_before: u64 = before
        .iter()
        .filter(|(name, _)| !name.starts_with("io-"))
        .map(|(_, ticks)| ticks)
        .sum();
    assert!(own > own_before, "the node's own thread served nothing");
    assert_eq!(clients[5].cmd(&["DBSIZE"]), Reply::Int(6 * 40 * 1000));
}
