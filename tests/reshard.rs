//! Resharding with real `meridian-node` processes on loopback, driven by the operator's
//! own step functions: the planner (`reshard::plan_step`), the node client
//! (`nodes::move_slots`, `NodeConnection::open_slots`) and the push order. 2 → 3 shards
//! with 2000 keys and a concurrent cluster-client writer, an interrupted step resumed
//! from what the nodes report, then 3 → 2 (drain, drop the empty shard from the map).
//!
//! Uses the binary named by `MERIDIAN_NODE_BIN`, else `meridian-node` next to this test's
//! target directory; skips with a printed reason when neither exists
//! (`cargo build -p meridian-node` first).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Node, node_binary, start_node};
use meridian_operator::names::PodName;
use meridian_operator::nodes::{self, NodeAccess, NodeConnection, PushOutcome};
use meridian_operator::reshard::{self, NodeOpenSlots, ReshardStep};
use meridian_operator::topology_plan::{self, NodeReport, ObservedPod, RegionPods};
use meridian_topology::{NodeAddr, TopologyMap, key_slot};

const KEYS: usize = 2000;
const BATCH: usize = 512;
const MAX_WRITES: usize = 5000;

fn pod_name(shard: usize) -> String {
    format!("demo-a-{shard}-0")
}

/// The region as the controller sees it: one pod per shard for the first `shards` nodes.
fn region_pods(nodes: &[Node], shards: usize) -> RegionPods {
    let pods = nodes[..shards]
        .iter()
        .enumerate()
        .map(|(shard, node)| ObservedPod {
            name: PodName::of(&node.addr),
            shard: shard as u16,
            ordinal: 0,
            ip: Some(node.addr.ip.clone()),
            ready: true,
            running: true,
        })
        .collect();
    RegionPods::group(pods, shards as u16, 1)
}

/// Pod addresses carry the default port; the local nodes listen elsewhere.
fn with_ports(mut map: TopologyMap, nodes: &[Node]) -> TopologyMap {
    for shard in &mut map.shards {
        for addr in std::iter::once(&mut shard.primary).chain(shard.replicas.iter_mut()) {
            if let Some(node) = nodes.iter().find(|node| node.addr.id == addr.id) {
                addr.port = node.addr.port;
            }
        }
    }
    map
}

async fn connect(node: &Node) -> NodeConnection {
    NodeConnection::open(&node.addr, &NodeAccess::default())
        .await
        .expect("connect")
}

async fn push_all(nodes: &[Node], order: &[PodName], map: &TopologyMap) {
    for pod in order {
        let node = nodes
            .iter()
            .find(|node| *pod == node.addr.id)
            .expect("node");
        assert_eq!(
            connect(node).await.push_topology(map).await.unwrap(),
            PushOutcome::Applied,
            "push epoch {} to {pod}",
            map.epoch
        );
    }
}

async fn reports(nodes: &[Node]) -> Vec<NodeReport> {
    let mut reports = Vec::new();
    for node in nodes {
        reports.push(NodeReport {
            pod: PodName::of(&node.addr),
            map: connect(node).await.topology().await.unwrap(),
        });
    }
    reports
}

/// What the primaries of `map` report in transit.
async fn open_slots(nodes: &[Node], map: &TopologyMap) -> Vec<NodeOpenSlots> {
    let mut open = Vec::new();
    for shard in &map.shards {
        let node = nodes
            .iter()
            .find(|node| node.addr.id == shard.primary.id)
            .expect("primary");
        open.push(NodeOpenSlots {
            pod: PodName::of(&node.addr),
            open: connect(node).await.open_slots().await.unwrap(),
        });
    }
    open
}

/// One planner step executed like the controller does. `push` false stops after the
/// keys moved (an operator dying before the epoch bump). Returns the next map, or `None`
/// when done.
async fn step(
    nodes: &[Node],
    map: &TopologyMap,
    desired: u16,
    push: bool,
) -> Option<(TopologyMap, ReshardStep)> {
    let open = open_slots(nodes, map).await;
    let plan = reshard::plan_step(map, desired, &open, BATCH);
    let next = match &plan.step {
        ReshardStep::Done => return None,
        ReshardStep::Blocked(reason) => panic!("blocked: {reason}"),
        ReshardStep::Move { batch, .. } => {
            let addr_of = |index: u32| {
                map.shards
                    .iter()
                    .find(|shard| shard.index == index)
                    .map(|shard| shard.primary.clone())
                    .expect("shard in map")
            };
            let (source_addr, dest_addr) = (addr_of(batch.from), addr_of(batch.to));
            let node_of = |addr: &NodeAddr| {
                nodes
                    .iter()
                    .find(|node| node.addr.id == addr.id)
                    .expect("node")
            };
            let mut source = connect(node_of(&source_addr)).await;
            let mut dest = connect(node_of(&dest_addr)).await;
            nodes::move_slots(
                &mut source,
                &source_addr,
                &mut dest,
                &dest_addr,
                &batch.slots,
                &NodeAccess::default(),
            )
            .await
            .expect("move slots");
            for slot in &batch.slots {
                assert_eq!(source.count_keys_in_slot(*slot).await.unwrap(), 0);
            }
            let next = reshard::map_after_move(map, batch, map.epoch + 1);
            if push {
                push_all(nodes, &reshard::push_order(&next, batch), &next).await;
            }
            next
        }
        ReshardStep::DropShards { removed } => {
            let next = reshard::map_without_shards(map, removed, map.epoch + 1);
            let everyone: Vec<PodName> = map.nodes().map(PodName::of).collect();
            push_all(nodes, &everyone, &next).await;
            next
        }
    };
    Some((next, plan.step))
}

/// Steps until the planner says done; every intermediate map is complete.
async fn reshard_to(nodes: &[Node], mut map: TopologyMap, desired: u16) -> TopologyMap {
    for _ in 0..1000 {
        match step(nodes, &map, desired, true).await {
            None => return map,
            Some((next, _)) => {
                next.validate().expect("complete map");
                map = next;
            }
        }
    }
    panic!("resharding did not finish");
}

/// Writes keys `load:<n>` through the cluster client (which follows MOVED and ASK)
/// until stopped; returns how many it wrote (all acknowledged).
fn writer(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let client = redis::cluster::ClusterClient::builder(vec![url])
            .retries(20)
            .build()
            .expect("cluster client");
        let mut connection = client.get_async_connection().await.expect("connect");
        let mut written = 0usize;
        // bounded, so reading every key back stays quick
        while !stop.load(Ordering::Relaxed) && written < MAX_WRITES {
            let () = redis::cmd("SET")
                .arg(format!("load:{written}"))
                .arg(written)
                .query_async(&mut connection)
                .await
                .expect("acknowledged write");
            written += 1;
        }
        written
    })
}

async fn assert_every_key_readable(nodes: &[Node], written: usize) {
    let client =
        redis::cluster::ClusterClient::new(vec![format!("redis://{}/", nodes[0].addr.endpoint())])
            .expect("cluster client");
    let mut connection = client.get_async_connection().await.expect("connect");
    for index in 0..KEYS {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("key:{index}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(value, Some(format!("value-{index}")), "key:{index}");
    }
    for index in 0..written {
        let value: Option<usize> = redis::cmd("GET")
            .arg(format!("load:{index}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(value, Some(index), "load:{index}");
    }
}

/// Every node's `CLUSTER SLOTS` lists exactly the map's primaries and ranges, and each
/// primary holds only keys of its own slots.
async fn assert_cluster_slots_match(nodes: &[Node], map: &TopologyMap) {
    let mut expected: Vec<(u16, u16, u16)> = map
        .shards
        .iter()
        .flat_map(|shard| {
            shard
                .slots
                .iter()
                .map(|range| (range.start, range.end, shard.primary.port))
        })
        .collect();
    expected.sort_unstable();
    for node in nodes {
        let client = redis::Client::open(format!("redis://{}/", node.addr.endpoint())).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let entries: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .unwrap();
        let mut seen: Vec<(u16, u16, u16)> = entries
            .into_iter()
            .map(|entry| {
                let mut fields = entry.into_iter();
                let mut next = || fields.next().expect("CLUSTER SLOTS entry field");
                let start: u16 = redis::from_redis_value(next()).expect("start");
                let end: u16 = redis::from_redis_value(next()).expect("end");
                let primary: Vec<redis::Value> = redis::from_redis_value(next()).expect("primary");
                let port: u16 = redis::from_redis_value(primary[1].clone()).expect("port");
                (start, end, port)
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, expected, "CLUSTER SLOTS of {}", node.addr.id);
    }
}

async fn keys_per_node(nodes: &[Node]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for node in nodes {
        let client = redis::Client::open(format!("redis://{}/", node.addr.endpoint())).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let size: i64 = redis::cmd("DBSIZE")
            .query_async(&mut connection)
            .await
            .unwrap();
        counts.insert(node.addr.id.clone(), size);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_with_live_slot_migration_loses_no_key() {
    let Some(binary) = node_binary() else {
        println!(
            "skipping: no meridian-node binary (set MERIDIAN_NODE_BIN or build -p meridian-node)"
        );
        return;
    };
    let mut nodes = Vec::new();
    for shard in 0..3 {
        nodes.push(start_node(&binary, &pod_name(shard), None).await);
    }

    // 2 shards, bootstrapped by the regular planner (even split), 2000 keys.
    let pods = region_pods(&nodes, 2);
    let bootstrap = topology_plan::plan("demo", "a", &pods, &reports(&nodes[..2]).await, 0)
        .expect("plan")
        .map()
        .clone();
    let map = with_ports(bootstrap, &nodes);
    let everyone: Vec<PodName> = map.nodes().map(PodName::of).collect();
    push_all(&nodes, &everyone, &map).await;
    {
        let client = redis::cluster::ClusterClient::new(vec![format!(
            "redis://{}/",
            nodes[0].addr.endpoint()
        )])
        .unwrap();
        let mut connection = client.get_async_connection().await.unwrap();
        for index in 0..KEYS {
            let () = redis::cmd("SET")
                .arg(format!("key:{index}"))
                .arg(format!("value-{index}"))
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    }

    // 2 → 3: the new shard joins with no slots (the planner keeps everyone's slots).
    let pods = region_pods(&nodes, 3);
    let joined = topology_plan::plan("demo", "a", &pods, &reports(&nodes).await, map.epoch)
        .expect("plan")
        .map()
        .clone();
    let joined = with_ports(joined, &nodes);
    assert_eq!(joined.epoch, map.epoch + 1);
    assert!(joined.shards[2].slots.is_empty());
    assert_eq!(joined.shards[0].slots, map.shards[0].slots);
    let everyone: Vec<PodName> = joined.nodes().map(PodName::of).collect();
    push_all(&nodes, &everyone, &joined).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(
        format!("redis://{}/", nodes[0].addr.endpoint()),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    // An operator dies after moving keys but before the epoch bump: the nodes report
    // the batch in transit and the next step finishes exactly that batch.
    let (half_done, first) = step(&nodes, &joined, 3, false).await.expect("a move");
    let ReshardStep::Move {
        batch: interrupted,
        resumed: false,
    } = first
    else {
        panic!("expected a fresh move, got {first:?}");
    };
    assert_eq!(
        reports(&nodes).await[0].map.as_ref().map(|m| m.epoch),
        Some(joined.epoch)
    );
    let open = open_slots(&nodes, &joined).await;
    let plan = reshard::plan_step(&joined, 3, &open, BATCH);
    assert_eq!(
        plan.step,
        ReshardStep::Move {
            batch: interrupted.clone(),
            resumed: true
        }
    );
    let (resumed_map, _) = step(&nodes, &joined, 3, true).await.expect("resumed move");
    assert_eq!(resumed_map, half_done);
    let three = reshard_to(&nodes, resumed_map, 3).await;
    stop.store(true, Ordering::Relaxed);
    let written = load.await.expect("writer");
    assert!(written > 0, "the writer ran during the migration");

    let sizes: Vec<usize> = three
        .shards
        .iter()
        .map(|shard| shard.slot_set().len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 16384);
    assert!(
        sizes.iter().all(|size| (5461..=5462).contains(size)),
        "{sizes:?}"
    );
    assert_every_key_readable(&nodes, written).await;
    assert_cluster_slots_match(&nodes, &three).await;
    let counts = keys_per_node(&nodes).await;
    assert_eq!(counts.values().sum::<i64>(), (KEYS + written) as i64);
    assert!(
        counts[&pod_name(2)] > 0,
        "the new shard holds keys: {counts:?}"
    );
    for node in &nodes {
        let open = connect(node).await.open_slots().await.unwrap();
        assert!(
            open.is_empty(),
            "{} left slots open: {open:?}",
            node.addr.id
        );
    }
    // Every key sits on the primary that owns its slot (read without redirects).
    for index in (0..KEYS).step_by(7) {
        let key = format!("key:{index}");
        let owner = three
            .owner_of_slot(key_slot(key.as_bytes()))
            .expect("every slot owned");
        let client = redis::Client::open(format!("redis://{}/", owner.primary.endpoint())).unwrap();
        let mut direct = client.get_multiplexed_async_connection().await.unwrap();
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut direct)
            .await
            .unwrap();
        assert_eq!(
            value,
            Some(format!("value-{index}")),
            "{key} on {}",
            owner.primary.id
        );
    }

    // 3 → 2: shard 2 drains into 0 and 1, then leaves the map.
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(
        format!("redis://{}/", nodes[1].addr.endpoint()),
        stop.clone(),
    );
    let two = reshard_to(&nodes, three, 2).await;
    stop.store(true, Ordering::Relaxed);
    let written_in = load.await.expect("writer");
    assert_eq!(two.shards.len(), 2);
    assert_eq!(
        two.shards
            .iter()
            .map(|shard| shard.slot_set().len())
            .collect::<Vec<_>>(),
        [8192, 8192]
    );
    assert_eq!(reshard::draining_shards(Some(&two), 2).len(), 0);
    // Keys the second writer wrote overwrite the first writer's `load:<n>` up to its
    // count, with the same values.
    assert_every_key_readable(&nodes[..2], written.max(written_in)).await;
    assert_cluster_slots_match(&nodes[..2], &two).await;
    let counts = keys_per_node(&nodes).await;
    assert_eq!(counts[&pod_name(2)], 0, "drained: {counts:?}");
    assert_eq!(
        counts.values().sum::<i64>(),
        (KEYS + written.max(written_in)) as i64
    );

    // redis-cli agrees that every slot is served.
    let check = Command::new("redis-cli")
        .args(["--cluster", "check", &nodes[0].addr.endpoint()])
        .output();
    match check {
        Ok(output) => {
            let said = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && said.contains("[OK] All 16384 slots covered"),
                "{said}"
            );
        }
        Err(error) => println!("redis-cli not available, skipped --cluster check: {error}"),
    }
}
