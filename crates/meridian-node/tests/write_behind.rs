//! Write-behind origin mode with the real node process and the test origin: writes
//! acknowledged before the origin has them, coalescing, retries with backoff, the
//! full-queue refusal, metrics, and a failover that keeps the pending writes.

mod http_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_support::{HttpNode, Origin, free_port, http};
use redis::Commands;

fn write_behind_node(origin: &Origin, name: &str, extra: &[&str]) -> HttpNode {
    let url = origin.url();
    let mut args = vec![
        "--origin-url",
        url.as_str(),
        "--origin-write-behind",
        "--origin-write-behind-flush-interval-ms",
        "50",
    ];
    args.extend_from_slice(extra);
    HttpNode::start("127.0.0.1", name, free_port(), &args)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of INFO's origin section.
fn origin_info(node: &HttpNode, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg("origin")
        .query(&mut node.redis())
        .expect("INFO origin");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {info}"))
        .to_string()
}

fn pending(node: &HttpNode) -> u64 {
    origin_info(node, "write_behind_pending")
        .parse()
        .expect("pending")
}

fn metrics(node: &HttpNode) -> String {
    http("127.0.0.1", node.metrics_port, "GET", "/metrics", &[], b"").text()
}

/// The value of an unlabelled metric.
fn metric(node: &HttpNode, name: &str) -> f64 {
    let text = metrics(node);
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .expect("metric value")
}

/// The body of the last write of `path` the origin accepted (None: a DELETE or none).
fn origin_value(origin: &Origin, path: &str) -> Option<Vec<u8>> {
    origin
        .requests()
        .into_iter()
        .rev()
        .find(|seen| seen.accepted && seen.path == path && seen.method != "GET")
        .and_then(|seen| (seen.method == "PUT").then_some(seen.body))
}

#[test]
fn writes_are_acknowledged_first_coalesce_and_survive_origin_failures() {
    let origin = Origin::start();
    origin.fail_writes.store(true, Ordering::SeqCst);
    let node = write_behind_node(&origin, "wb-node", &[]);
    let mut redis = node.redis();

    // acknowledged and served while the origin refuses every write
    let _: () = redis.set("doc", "v1").expect("set");
    let value: String = redis.get("doc").expect("get");
    assert_eq!(value, "v1");
    for index in 0..200 {
        let _: () = redis.set("hot", format!("v{index}")).expect("set");
    }
    // a key the cache does not hold may still be at the origin: DEL reaches it
    let removed: i64 = redis.del("gone").expect("del");
    assert_eq!(removed, 0);
    assert_eq!(node.put("/cache/page", b"body").status, 204);
    assert_eq!(node.delete("/cache/doc").status, 204);
    assert_eq!(pending(&node), 4);
    assert!(origin.accepted("PUT", "/hot").is_empty());

    // retried with backoff, counted, nothing flushed yet
    wait_until("failed flushes", Duration::from_secs(10), || {
        metric(&node, "meridian_origin_write_behind_failures_total") >= 8.0
    });
    let attempts = origin.count("PUT", "/hot");
    assert!(
        (2..20).contains(&attempts),
        "{attempts} attempts: a retry per round instead of backing off"
    );
    assert!(metric(&node, "meridian_origin_write_behind_oldest_age_seconds") > 0.0);
    assert_eq!(metric(&node, "meridian_origin_write_behind_depth"), 4.0);

    origin.fail_writes.store(false, Ordering::SeqCst);
    wait_until("queue drained", Duration::from_secs(40), || {
        pending(&node) == 0
    });
    // 200 writes, one accepted request with the last value
    let hot = origin.accepted("PUT", "/hot");
    assert_eq!(hot.len(), 1, "{hot:?}");
    assert_eq!(hot[0].body, b"v199");
    assert_eq!(origin.accepted("DELETE", "/gone").len(), 1);
    assert_eq!(origin_value(&origin, "/page"), Some(b"body".to_vec()));
    // SET then DEL of one key before a flush: the origin gets the DELETE only
    assert_eq!(origin.accepted("DELETE", "/doc").len(), 1);
    assert!(origin.accepted("PUT", "/doc").is_empty());
    assert_eq!(metric(&node, "meridian_origin_write_behind_depth"), 0.0);
    assert_eq!(
        metric(&node, "meridian_origin_write_behind_oldest_age_seconds"),
        0.0
    );
    assert!(metric(&node, "meridian_origin_write_behind_flushed_total") >= 4.0);
    assert_eq!(origin_info(&node, "origin_write_mode"), "write-behind");

    // afterwards a write reaches the origin on its own, soon
    let _: () = redis.set("later", "x").expect("set");
    wait_until("flushed", Duration::from_secs(5), || {
        origin_value(&origin, "/later").is_some()
    });
    // writes inside MULTI/EXEC do not go to the origin (as with write-through)
    let _: () = redis::pipe()
        .atomic()
        .set("in-multi", "x")
        .query(&mut redis)
        .expect("exec");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(origin.count("PUT", "/in-multi"), 0);
}

#[test]
fn writes_wait_for_an_origin_that_is_down_until_it_listens() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let node = HttpNode::start(
        "127.0.0.1",
        "wb-down",
        free_port(),
        &[
            "--origin-url",
            &url,
            "--origin-write-behind",
            "--origin-write-behind-flush-interval-ms",
            "50",
        ],
    );
    let mut redis = node.redis();
    let _: () = redis
        .set("k", "kept")
        .expect("acknowledged while the origin is down");
    wait_until("connection failures", Duration::from_secs(10), || {
        metric(&node, "meridian_origin_write_behind_failures_total") >= 2.0
    });
    assert_eq!(pending(&node), 1);
    let origin = Origin::start_on(port);
    wait_until("queue drained", Duration::from_secs(40), || {
        pending(&node) == 0
    });
    assert_eq!(origin_value(&origin, "/k"), Some(b"kept".to_vec()));
}

#[test]
fn shutdown_flushes_what_is_still_queued() {
    let origin = Origin::start();
    // a round per minute: only the shutdown's flush can send the second write in time
    let url = origin.url();
    let mut node = HttpNode::start(
        "127.0.0.1",
        "wb-stop",
        free_port(),
        &[
            "--origin-url",
            &url,
            "--origin-write-behind",
            "--origin-write-behind-flush-interval-ms",
            "60000",
        ],
    );
    let mut redis = node.redis();
    // the first write after an idle spell is sent at once
    let _: () = redis.set("first", "1").expect("set");
    wait_until("first flush", Duration::from_secs(5), || {
        pending(&node) == 0
    });
    // a failed one waits for the next round, a minute later
    origin.fail_writes.store(true, Ordering::SeqCst);
    let _: () = redis.set("second", "2").expect("set");
    wait_until("failed flush", Duration::from_secs(5), || {
        metric(&node, "meridian_origin_write_behind_failures_total") >= 1.0
    });
    origin.fail_writes.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pending(&node), 1, "flushed before the interval");
    drop(redis);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exited = node.child.wait().expect("node exits");
    assert!(exited.success(), "{exited:?}");
    assert_eq!(origin_value(&origin, "/second"), Some(b"2".to_vec()));
}

#[test]
fn a_full_queue_refuses_writes_to_new_keys_only() {
    let origin = Origin::start();
    origin.fail_writes.store(true, Ordering::SeqCst);
    let node = write_behind_node(&origin, "wb-full", &["--origin-write-behind-max-keys", "3"]);
    let mut redis = node.redis();
    for key in ["a", "b", "c"] {
        let _: () = redis.set(key, "1").expect("set");
    }
    let error = redis.set::<_, _, ()>("d", "1").expect_err("queue full");
    assert!(
        error
            .to_string()
            .contains("write-behind queue full (3 keys pending); retry later"),
        "{error}"
    );
    // refused before the cache changed
    let value: Option<String> = redis.get("d").expect("get");
    assert_eq!(value, None);
    let refused = node.put("/cache/e", b"1");
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().contains("write-behind queue full"),
        "{}",
        refused.text()
    );
    // queued keys still take writes: they coalesce
    let _: () = redis.set("a", "2").expect("coalescing set");
    let removed: i64 = redis.del("b").expect("coalescing del");
    assert_eq!(removed, 1);
    assert_eq!(pending(&node), 3);
    assert_eq!(
        metric(&node, "meridian_origin_write_behind_refused_total"),
        2.0
    );

    origin.fail_writes.store(false, Ordering::SeqCst);
    wait_until("queue drained", Duration::from_secs(40), || {
        pending(&node) == 0
    });
    let _: () = redis.set("d", "1").expect("room again");
    assert_eq!(origin_value(&origin, "/a"), Some(b"2".to_vec()));
    assert_eq!(origin.accepted("DELETE", "/b").len(), 1);
}

#[test]
fn read_through_never_serves_the_origin_copy_of_a_key_with_a_pending_write() {
    let origin = Origin::start();
    origin.fail_writes.store(true, Ordering::SeqCst);
    let node = write_behind_node(&origin, "wb-read", &["--origin-read-through"]);
    let mut redis = node.redis();
    let _: () = redis.set("doc", "mine").expect("set");
    let removed: i64 = redis.del("doc").expect("del");
    assert_eq!(removed, 1);
    // the origin still has an older copy; the pending DELETE is newer
    let value: Option<String> = redis.get("doc").expect("get");
    assert_eq!(value, None);
    assert_eq!(node.get("/cache/doc").status, 404);
    assert_eq!(origin.count("GET", "/doc"), 0);
    // once the origin has the write, reads go through again
    origin.fail_writes.store(false, Ordering::SeqCst);
    wait_until("queue drained", Duration::from_secs(40), || {
        pending(&node) == 0
    });
    let value: Option<String> = redis.get("doc").expect("get");
    assert_eq!(value.as_deref(), Some("origin:/doc"));
}

/// The operator's promotion: the replica becomes primary.
fn promote(node: &HttpNode) {
    let reply: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut node.redis())
        .expect("REPLICAOF NO ONE");
    assert!(reply.starts_with("OK"), "{reply}");
}

fn replicate(replica: &HttpNode, primary: &HttpNode) {
    let reply: String = redis::cmd("REPLICAOF")
        .arg(&primary.ip)
        .arg(primary.port)
        .query(&mut replica.redis())
        .expect("REPLICAOF");
    assert!(reply.starts_with("OK"), "{reply}");
    wait_until("link up", Duration::from_secs(20), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.redis())
            .expect("INFO");
        info.contains("master_link_status:up")
    });
}

#[test]
fn a_promoted_replica_flushes_what_its_dead_primary_had_pending() {
    let origin = Origin::start();
    let mut primary = write_behind_node(&origin, "wb-primary", &[]);
    // fed by the stream from the start
    let streamed = write_behind_node(&origin, "wb-streamed", &[]);
    replicate(&streamed, &primary);
    let mut redis = primary.redis();

    // flushed by the primary while the origin was up: the replicas drop it
    let _: () = redis.set("early", "flushed").expect("set");
    wait_until("early flush", Duration::from_secs(5), || {
        origin_value(&origin, "/early").is_some() && pending(&streamed) == 0
    });

    origin.fail_writes.store(true, Ordering::SeqCst);
    for index in 0..20 {
        let _: () = redis
            .set(format!("p{index}"), format!("v{index}"))
            .expect("set");
        let _: () = redis
            .set(format!("p{index}"), format!("w{index}"))
            .expect("set");
    }
    let _: () = redis.set("dropped", "x").expect("set");
    let _: i64 = redis.del("dropped").expect("del");
    assert_eq!(pending(&primary), 21);
    // a full sync carries the queue: attached after the writes
    let synced = write_behind_node(&origin, "wb-synced", &[]);
    replicate(&synced, &primary);
    let acked: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query(&mut redis)
        .expect("WAIT");
    assert_eq!(acked, 2);
    assert_eq!(pending(&streamed), 21);
    assert_eq!(pending(&synced), 21);

    primary.child.kill().expect("SIGKILL the primary");
    let _ = primary.child.wait();
    origin.fail_writes.store(false, Ordering::SeqCst);
    // replicas never flush, even with the origin back
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pending(&streamed), 21);
    assert_eq!(pending(&synced), 21);
    assert!(origin.accepted("PUT", "/p0").is_empty());

    for promoted in [&streamed, &synced] {
        promote(promoted);
        wait_until("promoted flush", Duration::from_secs(20), || {
            pending(promoted) == 0
        });
        assert!(metric(promoted, "meridian_origin_write_behind_flushed_total") >= 21.0);
    }
    for index in 0..20 {
        assert_eq!(
            origin_value(&origin, &format!("/p{index}")),
            Some(format!("w{index}").into_bytes()),
            "p{index}"
        );
    }
    assert!(!origin.accepted("DELETE", "/dropped").is_empty());
    assert!(origin.accepted("PUT", "/dropped").is_empty());
    // the write the old primary flushed is still at the origin and in the cache
    assert_eq!(origin_value(&origin, "/early"), Some(b"flushed".to_vec()));
    let value: String = streamed.redis().get("early").expect("get");
    assert_eq!(value, "flushed");
}

#[test]
fn write_behind_and_write_through_together_are_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian-node"))
        .args(["--bind", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .args(["--origin-url", "http://127.0.0.1:9"])
        .args(["--origin-write-through", "--origin-write-behind"])
        .output()
        .expect("run meridian-node");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--origin-write-behind and --origin-write-through exclude each other"),
        "{stderr}"
    );
}

#[test]
fn the_replication_record_is_refused_from_clients() {
    let origin = Origin::start();
    let node = write_behind_node(&origin, "wb-internal", &[]);
    let error = redis::cmd("MERIDIAN.WRITEBEHIND")
        .arg("QUEUED")
        .arg("k")
        .arg("1")
        .arg("DELETE")
        .query::<()>(&mut node.redis())
        .expect_err("clients may not queue writes");
    assert!(error.to_string().contains("replication stream"), "{error}");
    assert_eq!(pending(&node), 0);
}
