//! A node facing broken or hostile peers, spoken to in raw bytes: a MIGRATE
//! target answering garbage, huge lengths, deep nesting, half a reply or a
//! reply that never ends; topology maps with an epoch near overflow or
//! oversized parts. Each gets a clear error, and the node keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Node, Reply, shard_map};

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

/// A MIGRATE target on a local listener: reads the first request of every
/// connection and answers it with `reply`, whatever was asked.
fn fake_target(reply: Vec<u8>, then: Then) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let reply = reply.clone();
            std::thread::spawn(move || {
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
                        while started.elapsed() < Duration::from_secs(30)
                            && stream.write_all(b"a").is_ok()
                        {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            });
        }
    });
    port
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
