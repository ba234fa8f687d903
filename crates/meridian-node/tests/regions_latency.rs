//! Region links under injected latency: three regions whose links pass
//! through delaying proxies (RTT/2 each way, in front of every node's link
//! listener). Timing assertions are loose (shared CI machines); correctness
//! assertions are strict.

#[path = "common/delay_proxy.rs"]
mod delay_proxy;
#[path = "common/node_process.rs"]
mod node_process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use delay_proxy::DelayProxy;
use meridian_topology::{NodeAddr, ShardTopology, TopologyMap, split_evenly};
use node_process::{NodeProcess, free_port};

const REGIONS: [&str; 3] = ["region-a", "region-b", "region-c"];

struct RegionNode {
    /// Kept for its drop, which stops the node.
    _process: NodeProcess,
    ip: String,
    port: u16,
    id: String,
    region: &'static str,
    /// In front of this node's link listener; peers' seeds point here.
    proxy: DelayProxy,
}

impl RegionNode {
    fn start(ip: &str, region: &'static str, one_way: Duration, extra: &[&str]) -> RegionNode {
        let link_port = free_port(ip);
        let id = format!("{region}-0");
        let env = [
            ("MERIDIAN_CLUSTER", "latency".to_string()),
            ("MERIDIAN_REGION", region.to_string()),
            ("MERIDIAN_LINK_PORT", link_port.to_string()),
        ];
        let process = NodeProcess::start(ip, &id, extra, &env);
        let listen: SocketAddr = format!("{ip}:0").parse().expect("proxy address");
        let upstream: SocketAddr = format!("{ip}:{link_port}").parse().expect("link address");
        RegionNode {
            ip: ip.to_string(),
            port: process.port,
            id,
            region,
            proxy: DelayProxy::start(listen, upstream, one_way),
            _process: process,
        }
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}:{}/", self.ip, self.port))
            .expect("client")
            .get_connection()
            .expect("connection")
    }

    fn seed(&self) -> String {
        format!("{}:{}", self.ip, self.proxy.addr.port())
    }

    fn push_topology(&self) {
        let map = TopologyMap {
            epoch: 1,
            cluster: "latency".into(),
            region: self.region.into(),
            shards: vec![ShardTopology {
                index: 0,
                slots: split_evenly(1),
                primary: NodeAddr {
                    id: self.id.clone(),
                    ip: self.ip.clone(),
                    port: self.port,
                },
                replicas: Vec::new(),
            }],
        };
        let json = serde_json::to_string(&map).expect("json");
        let reply: String = redis::cmd("MERIDIAN.TOPOLOGY")
            .arg("SET")
            .arg(json)
            .query(&mut self.redis())
            .expect("topology");
        assert_eq!(reply, "OK");
    }

    fn peers_status(&self) -> serde_json::Value {
        let text: String = redis::cmd("MERIDIAN.PEERS")
            .arg("GET")
            .query(&mut self.redis())
            .expect("peers get");
        serde_json::from_str(&text).expect("status json")
    }
}

/// One node per region on `127.0.<subnet>.1..3`, each behind a proxy that
/// delays by `rtt / 2` per direction; topology pushed, links not yet wired.
fn start_regions(subnet: u8, rtt: Duration, extra: &[&str]) -> Vec<RegionNode> {
    REGIONS
        .iter()
        .enumerate()
        .map(|(index, region)| {
            let node = RegionNode::start(
                &format!("127.0.{subnet}.{}", index + 1),
                region,
                rtt / 2,
                extra,
            );
            node.push_topology();
            node
        })
        .collect()
}

/// Wires every region to the two others through their proxies and waits for the links.
fn wire_peers(nodes: &[RegionNode]) {
    for node in nodes {
        let peers: Vec<serde_json::Value> = nodes
            .iter()
            .filter(|peer| peer.region != node.region)
            .map(|peer| serde_json::json!({"region": peer.region, "seeds": [peer.seed()]}))
            .collect();
        let reply: String = redis::cmd("MERIDIAN.PEERS")
            .arg("SET")
            .arg(serde_json::to_string(&peers).expect("json"))
            .query(&mut node.redis())
            .expect("peers set");
        assert_eq!(reply, "OK");
    }
    for node in nodes {
        eventually(
            &format!("links of {} up", node.id),
            Duration::from_secs(15),
            || {
                node.peers_status()["peers"]
                    .as_array()
                    .is_some_and(|peers| {
                        peers.len() == 2 && peers.iter().all(|peer| peer["up"] == true)
                    })
            },
        );
    }
}

fn set(node: &RegionNode, key: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut node.redis())
}

fn get(node: &RegionNode, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut node.redis())
        .expect("get")
}

fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Caches `keys` as "old" in B and C before the links exist, so these writes
/// stream nothing (a SET in B would otherwise invalidate C's copy).
fn cache_in_peers(nodes: &[RegionNode], keys: &[String]) {
    for node in &nodes[1..] {
        for key in keys {
            set(node, key, "old").expect("cache in peer region");
        }
    }
}

#[test]
fn strong_writes_wait_a_round_trip_and_leave_no_stale_copy() {
    let rtt = Duration::from_millis(200);
    let nodes = start_regions(
        81,
        rtt,
        &["--consistency", "strong", "--strong-timeout-ms", "5000"],
    );
    let keys: Vec<String> = (0..8).map(|index| format!("strong:{index}")).collect();
    cache_in_peers(&nodes, &keys);
    wire_peers(&nodes);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for key in &keys {
        let started = Instant::now();
        assert_eq!(set(a, key, "new").expect("strong SET").as_str(), "OK");
        let acknowledged = started.elapsed();
        // the ack needs an event to each peer and its ack back: a full round trip
        assert!(
            acknowledged >= rtt,
            "strong SET of {key} acknowledged after {acknowledged:?}, before the {rtt:?} RTT"
        );
        assert_eq!(
            get(b, key),
            None,
            "region-b served a stale {key} after the ack"
        );
        assert_eq!(
            get(c, key),
            None,
            "region-c served a stale {key} after the ack"
        );
        assert_eq!(get(a, key).as_deref(), Some("new"));
    }
}

#[test]
fn eventual_writes_ack_before_a_round_trip_and_invalidate_within_a_bound() {
    let rtt = Duration::from_millis(200);
    let nodes = start_regions(82, rtt, &[]);
    let keys: Vec<String> = (0..20).map(|index| format!("eventual:{index}")).collect();
    cache_in_peers(&nodes, &keys);
    wire_peers(&nodes);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut acks = Vec::new();
    let mut written = Vec::new();
    let mut con = a.redis();
    for key in &keys {
        let started = Instant::now();
        let reply: String = redis::cmd("SET")
            .arg(key)
            .arg("new")
            .query(&mut con)
            .expect("eventual SET");
        assert_eq!(reply, "OK");
        acks.push(started.elapsed());
        written.push(started);
    }
    acks.sort();
    let median = acks[acks.len() / 2];
    assert!(
        median < rtt,
        "eventual SETs waited for the peers: median ack {median:?} with RTT {rtt:?}"
    );
    for (key, started) in keys.iter().zip(written) {
        let bound = rtt + Duration::from_secs(2);
        while get(b, key).is_some() || get(c, key).is_some() {
            assert!(
                started.elapsed() < bound,
                "{key} still cached in a peer region {bound:?} after the write"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(get(a, key).as_deref(), Some("new"));
    }
}

#[test]
fn partition_then_heal_loses_no_invalidation() {
    let rtt = Duration::from_millis(40);
    let nodes = start_regions(83, rtt, &[]);
    let keys: Vec<String> = (0..50).map(|index| format!("partition:{index}")).collect();
    cache_in_peers(&nodes, &keys);
    wire_peers(&nodes);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // cut the paths into b and c: established links drop, new ones are closed at once
    b.proxy.partition();
    c.proxy.partition();
    for key in &keys {
        assert_eq!(
            set(a, key, "new").expect("eventual writes are served during a partition"),
            "OK"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for key in &keys {
        // nothing can cross the cut: the peers still hold their copies
        assert_eq!(
            get(b, key).as_deref(),
            Some("old"),
            "{key} crossed the partition"
        );
        assert_eq!(
            get(c, key).as_deref(),
            Some("old"),
            "{key} crossed the partition"
        );
    }
    let status = a.peers_status();
    assert!(
        status["peers"].as_array().is_some_and(|peers| peers
            .iter()
            .all(|peer| peer["queued"].as_u64().unwrap_or(0) > 0)),
        "events for the cut regions must stay queued: {status}"
    );
    b.proxy.heal();
    c.proxy.heal();
    eventually(
        "every invalidation delivered after heal",
        Duration::from_secs(15),
        || {
            keys.iter()
                .all(|key| get(b, key).is_none() && get(c, key).is_none())
        },
    );
    eventually("queues drained", Duration::from_secs(5), || {
        a.peers_status()["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().all(|peer| peer["queued"] == 0))
    });
    for key in &keys {
        assert_eq!(get(a, key).as_deref(), Some("new"));
    }
}
