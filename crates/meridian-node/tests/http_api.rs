//! HTTP API with real processes on loopback: GET/PUT/DELETE, TTL, errors,
//! auth, body limit, invalidation, forwarding to the slot owner across three
//! nodes and forwarding of writes from a replica to its primary.

mod http_support;

use std::time::{Duration, Instant};

use http_support::{HttpNode, free_port, http};
use meridian_topology::{NodeAddr, ShardTopology, TopologyMap, key_slot, split_evenly};
use redis::Commands;

fn standalone(extra: &[&str]) -> HttpNode {
    HttpNode::start("127.0.0.1", "http-node-0", free_port(), extra)
}

#[test]
fn get_put_delete_and_ttl() {
    let node = standalone(&[]);
    let missing = node.get("/cache/nothing-here");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "key not found");

    assert_eq!(node.put("/cache/user%3A1", b"hello").status, 204);
    let found = node.get("/cache/user:1");
    assert_eq!((found.status, found.text().as_str()), (200, "hello"));
    assert_eq!(found.headers["content-type"], "application/octet-stream");
    assert!(!found.headers.contains_key("x-meridian-ttl-ms"));
    // the same keyspace as RESP, both ways
    let mut redis = node.redis();
    let value: String = redis.get("user:1").expect("get");
    assert_eq!(value, "hello");
    let _: () = redis.set("from-resp", "r").expect("set");
    assert_eq!(node.get("/cache/from-resp").text(), "r");
    // the API serves strings: another type is a conflict that says so
    let _: () = redis.rpush("queue", "job").expect("rpush");
    let list = node.get("/cache/queue");
    assert_eq!(list.status, 409);
    assert!(
        list.json()["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("WRONGTYPE"),
        "{}",
        list.text()
    );

    // keys take the whole rest of the path, percent-decoded to bytes
    assert_eq!(node.put("/cache/a/b%2Fc%20d", b"x").status, 204);
    let value: String = redis.get("a/b/c d").expect("get");
    assert_eq!(value, "x");
    assert_eq!(node.put("/cache/%FF%00bin", b"\x01\x02").status, 204);
    let value: Vec<u8> = redis.get(b"\xff\x00bin").expect("get");
    assert_eq!(value, b"\x01\x02");

    assert_eq!(node.put("/cache/short?ttl=100", b"t").status, 204);
    let ttl: u64 = node.get("/cache/short").headers["x-meridian-ttl-ms"]
        .parse()
        .expect("ttl ms");
    assert!((90_000..=100_000).contains(&ttl), "ttl {ttl}");
    let by_header = node.request("PUT", "/cache/hdr", &[("X-Meridian-TTL", "50")], b"h");
    assert_eq!(by_header.status, 204);
    let pttl: i64 = redis.pttl("hdr").expect("pttl");
    assert!((40_000..=50_000).contains(&pttl), "pttl {pttl}");
    for bad in ["/cache/k?ttl=abc", "/cache/k?ttl=0", "/cache/k?ttl=-5"] {
        let refused = node.put(bad, b"v");
        assert_eq!(refused.status, 400, "{bad}");
        assert!(
            refused.json()["error"]
                .as_str()
                .unwrap_or_default()
                .contains("ttl")
        );
    }

    assert_eq!(node.delete("/cache/user:1").status, 204);
    assert_eq!(node.delete("/cache/user:1").status, 404);
    assert_eq!(node.get("/cache/user:1").status, 404);

    // bad requests get a 4xx with a JSON error, never a dropped connection
    for (method, path, status) in [
        ("GET", "/cache/%zz", 400),
        ("GET", "/cache/bad%4", 400),
        ("GET", "/cache/", 400),
        ("POST", "/cache/k", 405),
        ("GET", "/nope", 404),
        ("GET", "/invalidate", 405),
    ] {
        let response = node.request(method, path, &[], b"");
        assert_eq!(response.status, status, "{method} {path}");
        assert!(response.json()["error"].is_string(), "{method} {path}");
    }

    let metrics = http("127.0.0.1", node.metrics_port, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains(r#"meridian_http_requests_total{method="PUT",code="204"}"#),
        "{metrics}"
    );
}

#[test]
fn bearer_auth_and_body_limit() {
    let node = standalone(&["--requirepass", "s3cret", "--proto-max-bulk-len", "2048"]);
    assert_eq!(node.get("/cache/k").status, 401);
    let wrong = node.request("GET", "/cache/k", &[("Authorization", "Bearer nope")], b"");
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Bearer")
    );
    let auth = [("Authorization", "Bearer s3cret")];
    assert_eq!(node.request("PUT", "/cache/k", &auth, b"v").status, 204);
    assert_eq!(node.request("GET", "/cache/k", &auth, b"").text(), "v");
    let big = vec![b'x'; 4096];
    let refused = node.request("PUT", "/cache/big", &auth, &big);
    assert_eq!(refused.status, 413);
    assert!(refused.json()["error"].is_string());
    assert_eq!(node.request("GET", "/cache/big", &auth, b"").status, 404);
    assert_eq!(
        node.request("PUT", "/cache/ok", &auth, &big[..2000]).status,
        204
    );
}

#[test]
fn invalidate_by_pattern() {
    let node = standalone(&[]);
    for key in ["user:1", "user:2", "user:3", "order:1"] {
        assert_eq!(node.put(&format!("/cache/{key}"), b"v").status, 204);
    }
    let answer = node.request("POST", "/invalidate", &[], br#"{"pattern":"user:*"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["deleted"], 3);
    assert_eq!(node.get("/cache/user:2").status, 404);
    assert_eq!(node.get("/cache/order:1").status, 200);
    for bad in [&b"not json"[..], br#"{"pat":"x"}"#, br#"{"pattern":""}"#] {
        assert_eq!(node.request("POST", "/invalidate", &[], bad).status, 400);
    }
}

fn addr(node: &HttpNode, id: &str) -> NodeAddr {
    NodeAddr {
        id: id.to_string(),
        ip: node.ip.clone(),
        port: node.port,
    }
}

#[test]
fn any_node_forwards_to_the_slot_owner() {
    let http_port = free_port();
    let nodes: Vec<HttpNode> = (0..3)
        .map(|i| {
            HttpNode::start(
                &format!("127.0.0.{}", 11 + i),
                &format!("shard-{i}-0"),
                http_port,
                &[],
            )
        })
        .collect();
    let map = TopologyMap {
        epoch: 1,
        cluster: "demo".into(),
        region: "local".into(),
        shards: split_evenly(3)
            .into_iter()
            .enumerate()
            .map(|(i, range)| ShardTopology {
                index: i as u32,
                slots: vec![range],
                primary: addr(&nodes[i], &format!("shard-{i}-0")),
                replicas: Vec::new(),
            })
            .collect(),
    };
    let json = serde_json::to_string(&map).expect("json");
    for node in &nodes {
        let reply: String = redis::cmd("MERIDIAN.TOPOLOGY")
            .arg("SET")
            .arg(&json)
            .query(&mut node.redis())
            .expect("push topology");
        assert_eq!(reply, "OK");
    }
    let owner_of = |key: &str| {
        let slot = key_slot(key.as_bytes());
        split_evenly(3)
            .iter()
            .position(|range| range.contains(slot))
            .expect("owned")
    };
    // a key owned by node C (index 2), written on A, read from B
    let key = (0..1000)
        .map(|i| format!("item:{i}"))
        .find(|key| owner_of(key) == 2)
        .expect("key of shard 2");
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    assert_eq!(
        a.put(&format!("/cache/{key}?ttl=60"), b"routed").status,
        204
    );
    let read = b.get(&format!("/cache/{key}"));
    assert_eq!((read.status, read.text().as_str()), (200, "routed"));
    assert!(read.headers.contains_key("x-meridian-ttl-ms"));
    let stored: String = c.redis().get(&key).expect("owner holds it");
    assert_eq!(stored, "routed");
    let on_a: redis::RedisResult<Option<String>> = a.redis().get(&key);
    assert!(on_a.is_err(), "A must not hold the key (MOVED)");
    // a second hop is refused instead of looping
    let hop = a.request(
        "GET",
        &format!("/cache/{key}"),
        &[("X-Meridian-Forwarded", "1")],
        b"",
    );
    assert_eq!(hop.status, 421);
    assert!(hop.json()["error"].is_string());
    assert_eq!(b.delete(&format!("/cache/{key}")).status, 204);
    assert_eq!(c.get(&format!("/cache/{key}")).status, 404);
}

#[test]
fn replica_forwards_writes_to_its_primary() {
    let http_port = free_port();
    let primary = HttpNode::start("127.0.0.21", "primary", http_port, &[]);
    let replica = HttpNode::start("127.0.0.22", "replica", http_port, &[]);
    let _: () = redis::cmd("REPLICAOF")
        .arg(&primary.ip)
        .arg(primary.port)
        .query(&mut replica.redis())
        .expect("replicaof");
    assert_eq!(replica.put("/cache/shared", b"from-replica").status, 204);
    assert_eq!(primary.get("/cache/shared").text(), "from-replica");
    // the write went through the replication stream back to the replica
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.get("/cache/shared").status != 200 {
        assert!(Instant::now() < deadline, "value never replicated");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(replica.get("/cache/shared").text(), "from-replica");
    assert_eq!(replica.delete("/cache/shared").status, 204);
    assert_eq!(primary.get("/cache/shared").status, 404);
}

#[test]
fn writes_wait_for_client_pause_and_reads_do_not() {
    let node = standalone(&[]);
    assert_eq!(node.put("/cache/held", b"before").status, 204);
    let mut redis = node.redis();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query(&mut redis)
        .expect("pause");

    // a PUT issued during the pause completes only after UNPAUSE
    // timed from here: the writer thread may start after the sleep below has begun
    let started = Instant::now();
    let writer = {
        let (ip, port) = (node.ip.clone(), node.http_port);
        std::thread::spawn(move || {
            let status = http(&ip, port, "PUT", "/cache/held", &[], b"after").status;
            (status, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.get("/cache/held").text(), "before", "reads are served");
    assert!(!writer.is_finished(), "the PUT must wait for the pause");
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut redis)
        .expect("unpause");
    let (status, took) = writer.join().expect("writer thread");
    assert_eq!(status, 204);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(node.get("/cache/held").text(), "after");
}

/// A managed node nobody told its role (a restarted primary before the operator acts)
/// serves no key over HTTP either: its empty store is not its shard's data.
#[test]
fn a_managed_node_without_a_role_serves_no_key() {
    let node = standalone(&["--managed"]);
    for response in [node.get("/cache/user:1"), node.put("/cache/user:1", b"x")] {
        assert_eq!(response.status, 503, "{}", response.text());
        assert_eq!(
            response.json()["error"],
            "hash slot not served by any shard"
        );
    }
    let promoted: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut node.redis())
        .expect("REPLICAOF NO ONE");
    assert_eq!(promoted, "OK");
    assert_eq!(node.put("/cache/user:1", b"x").status, 204);
}

/// Reads from `stream` until the server closes it; what it said, and after how long.
fn until_closed(stream: &mut std::net::TcpStream, within: Duration) -> (String, Duration) {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let started = Instant::now();
    let mut said = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => said.extend_from_slice(&chunk[..read]),
            Err(error) => panic!("still open after {:?}: {error}", started.elapsed()),
        }
    }
    (
        String::from_utf8_lossy(&said).into_owned(),
        started.elapsed(),
    )
}

/// Slow clients cannot hold connections: headers trickled in (slowloris) or a body
/// that never comes end in a closed connection or a 408 within the timeouts, and a
/// client over the connection limit is answered 503 while the others are served.
#[test]
fn slow_clients_time_out_and_connections_are_capped() {
    use std::io::Write;
    let node = standalone(&[
        "--http-header-timeout-ms",
        "500",
        "--http-body-timeout-ms",
        "500",
        "--http-max-connections",
        "3",
    ]);
    let connect = || std::net::TcpStream::connect(("127.0.0.1", node.http_port)).expect("connect");

    // Headers never finished: the connection is closed after the header timeout.
    let mut slow = connect();
    slow.write_all(b"GET /cache/k HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let (said, after) = until_closed(&mut slow, Duration::from_secs(5));
    assert!(
        after >= Duration::from_millis(300) && after < Duration::from_secs(3),
        "closed after {after:?}: {said}"
    );

    // A body announced and never sent: 408 after the body timeout.
    let mut stalled = connect();
    stalled
        .write_all(b"PUT /cache/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .expect("write");
    let (said, after) = until_closed(&mut stalled, Duration::from_secs(5));
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("body not received within 500 ms"), "{said}");
    assert!(after < Duration::from_secs(3), "{after:?}");

    // Three idle connections hold every slot: the fourth is refused, and served again
    // once one of them is gone.
    let held: Vec<std::net::TcpStream> = (0..3).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut over = connect();
    over.write_all(b"GET /cache/k HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (said, _) = until_closed(&mut over, Duration::from_secs(5));
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(
        said.contains("too many HTTP connections (limit 3)"),
        "{said}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.get("/cache/k").status, 404, "served again");
}
