//! The primary probes against a real node: one kept connection per primary (a probe is a
//! PING, not a TCP and AUTH handshake every 500 ms), and a primary that stops answering
//! (SIGSTOP: the kernel still accepts, the process never replies) crosses the threshold
//! and triggers a reconcile; once it answers again its failures reset.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use meridian_operator::nodes::NodeAccess;
use meridian_operator::probe::{self, PrimaryProbes};
use meridian_topology::{ShardTopology, SlotRange, TopologyMap};

fn connections_received(node: &common::Node) -> u64 {
    let client =
        redis::Client::open(format!("redis://:secret@127.0.0.1:{}/", node.addr.port)).unwrap();
    let mut connection = client.get_connection().expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut connection)
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("total_connections_received")
}

fn signal(which: &str, node: &common::Node) {
    let status = std::process::Command::new("kill")
        .args([which, &node.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_keep_one_connection_and_flag_a_primary_that_stops_answering() {
    let Some(binary) = common::node_binary() else {
        eprintln!("skipping: meridian-node not built (cargo build -p meridian-node)");
        return;
    };
    let node = common::start_node(&binary, "orders-eu-0-0", Some("secret")).await;
    let map = TopologyMap {
        epoch: 1,
        cluster: "orders".into(),
        region: "eu".into(),
        shards: vec![ShardTopology {
            index: 0,
            slots: vec![SlotRange::new(0, 16383).expect("slots")],
            primary: node.addr.clone(),
            replicas: Vec::new(),
        }],
    };
    let probes = Arc::new(PrimaryProbes::default());
    let access = NodeAccess {
        password: Some("secret".to_string()),
        ..NodeAccess::default()
    };
    probes.watch("shop/orders-eu", &map, &access);
    let (trigger, mut triggered) = futures::channel::mpsc::channel(4);
    let prober = tokio::spawn(probe::run(probes.clone(), trigger));

    // Six probes over three seconds: one connection (plus the one counting them).
    let before = connections_received(&node);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let opened = connections_received(&node) - before;
    assert!(
        opened <= 2,
        "{opened} connections in 3 s: the probes must keep theirs"
    );
    assert_eq!(probes.consecutive_failures(&node.addr), 0);

    // A stopped process: its connection stays open, its PINGs time out.
    signal("-STOP", &node);
    let stopped = Instant::now();
    let fired = tokio::time::timeout(Duration::from_secs(10), triggered.next()).await;
    let after = stopped.elapsed();
    // checked while the node is still stopped: once it runs again, the next probe may
    // answer before this test looks (a loaded machine delays the test, not the probe)
    let flagged = probes.is_unreachable(&node.addr);
    signal("-CONT", &node);
    assert!(
        matches!(fired, Ok(Some(()))),
        "no reconcile triggered {after:?} after the primary stopped"
    );
    assert!(flagged, "the stopped primary is flagged unreachable");
    let recovered = Instant::now();
    while probes.consecutive_failures(&node.addr) > 0 {
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "the primary answers again but stays flagged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    prober.abort();
}
