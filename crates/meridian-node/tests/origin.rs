//! Origin read-through (single-flight) and write-through against a small
//! origin server inside the test, with the real node process.

mod http_support;

use std::sync::atomic::Ordering;

use http_support::{HttpNode, Origin, free_port, http};
use redis::Commands;

fn node_with_origin(origin: &str, extra: &[&str]) -> HttpNode {
    let mut args = vec!["--origin-url", origin];
    args.extend_from_slice(extra);
    HttpNode::start("127.0.0.1", "origin-node", free_port(), &args)
}

#[test]
fn read_through_is_single_flight() {
    let origin = Origin::start();
    // configured through the environment variables the operator sets
    let node = HttpNode::start_with_env(
        "127.0.0.1",
        "origin-node",
        free_port(),
        &[],
        &[
            ("MERIDIAN_ORIGIN_URL", origin.url().as_str()),
            ("MERIDIAN_ORIGIN_READ_THROUGH", "true"),
            ("MERIDIAN_ORIGIN_WRITE_THROUGH", "false"),
            ("MERIDIAN_ORIGIN_TIMEOUT_MS", "2000"),
            ("MERIDIAN_DEFAULT_TTL_SECONDS", "60"),
        ],
    );
    let (ip, port) = (node.ip.clone(), node.http_port);
    let readers: Vec<_> = (0..50)
        .map(|_| {
            let ip = ip.clone();
            std::thread::spawn(move || http(&ip, port, "GET", "/cache/popular", &[], b""))
        })
        .collect();
    for reader in readers {
        let response = reader.join().expect("reader");
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, "origin:/popular")
        );
    }
    assert_eq!(
        origin.count("GET", "/popular"),
        1,
        "{:?}",
        origin.requests()
    );
    // filled with the default TTL, served from the cache afterwards
    let cached = node.get("/cache/popular");
    assert_eq!(cached.text(), "origin:/popular");
    let ttl: u64 = cached.headers["x-meridian-ttl-ms"].parse().expect("ttl");
    assert!((50_000..=60_000).contains(&ttl), "ttl {ttl}");
    assert_eq!(origin.count("GET", "/popular"), 1);

    // RESP GET reads through too
    let mut redis = node.redis();
    let value: String = redis.get("user:7").expect("get");
    assert_eq!(value, "origin:/user%3A7");
    let value: String = redis.get("user:7").expect("get");
    assert_eq!(value, "origin:/user%3A7");
    assert_eq!(origin.count("GET", "/user%3A7"), 1);

    // origin 404 stays a miss
    assert_eq!(node.get("/cache/missing-1").status, 404);
    let value: Option<String> = redis.get("missing-2").expect("get");
    assert_eq!(value, None);

    let metrics = http("127.0.0.1", node.metrics_port, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains(r#"meridian_origin_requests_total{op="get",outcome="hit"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_origin_singleflight_waiters 0"),
        "{metrics}"
    );
}

#[test]
fn origin_failures_on_reads() {
    let origin = Origin::start();
    let node = node_with_origin(
        &origin.url(),
        &["--origin-read-through", "--origin-timeout-ms", "200"],
    );
    let slow = node.get("/cache/slow-key");
    assert_eq!(slow.status, 502);
    assert!(
        slow.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out")
    );
    // RESP answers nil (documented) and keeps the connection usable
    let mut redis = node.redis();
    let value: Option<String> = redis.get("slow-other").expect("get");
    assert_eq!(value, None);
    let pong: String = redis::cmd("PING").query(&mut redis).expect("ping");
    assert_eq!(pong, "PONG");
    // a key already cached never reaches the origin
    let _: () = redis::cmd("SET")
        .arg("slow-cached")
        .arg("local")
        .query(&mut redis)
        .expect("set");
    assert_eq!(node.get("/cache/slow-cached").text(), "local");
    assert_eq!(origin.count("GET", "/slow-cached"), 0);

    let down = node_with_origin(
        &format!("http://127.0.0.1:{}", free_port()),
        &["--origin-read-through"],
    );
    assert_eq!(down.get("/cache/anything").status, 502);
}

#[test]
fn write_through_updates_the_cache_only_after_the_origin() {
    let origin = Origin::start();
    let node = node_with_origin(&origin.url(), &["--origin-write-through"]);
    assert_eq!(node.put("/cache/doc", b"v1").status, 204);
    let puts: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|seen| seen.method == "PUT" && seen.path == "/doc")
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].body, b"v1");
    assert_eq!(node.get("/cache/doc").text(), "v1");

    let mut redis = node.redis();
    let _: () = redis.set("doc2", "r1").expect("set");
    assert_eq!(origin.count("PUT", "/doc2"), 1);

    origin.fail_writes.store(true, Ordering::SeqCst);
    let refused = node.put("/cache/doc", b"v2");
    assert_eq!(refused.status, 502);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("origin write failed")
    );
    assert_eq!(
        node.get("/cache/doc").text(),
        "v1",
        "cache changed although the origin failed"
    );
    assert_eq!(node.delete("/cache/doc").status, 502);
    assert_eq!(node.get("/cache/doc").text(), "v1");
    let error = redis
        .set::<_, _, ()>("doc2", "r2")
        .expect_err("origin down");
    assert!(error.to_string().contains("origin write failed"), "{error}");
    let value: String = redis.get("doc2").expect("get");
    assert_eq!(value, "r1");
    let error = redis.del::<_, ()>("doc2").expect_err("origin down");
    assert!(error.to_string().contains("origin write failed"), "{error}");

    origin.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(node.delete("/cache/doc").status, 204);
    assert_eq!(origin.count("DELETE", "/doc"), 2);
    let removed: i64 = redis.del("doc2").expect("del");
    assert_eq!(removed, 1);
    assert_eq!(node.get("/cache/doc").status, 404);
}
