//! The operator's pure planners timed as a region grows (3, 30, 300 and 1000 shards of a
//! primary and one replica), and the work one reconcile does at each size: node
//! connections, node commands and Kubernetes API calls, counted from the fixture and the
//! plans the way the controller issues them (src/controller/). See docs/benchmarks.md.
//!
//! `cargo xtask bench planners [--quick]`, or
//! `cargo bench -p meridian-operator --bench planners -- [--quick] [--shards 3,30]`.
//! Plain `std::time::Instant`; each figure is the median of repeated runs.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use fixtures::{CLUSTER, PODS_PER_SHARD, REGION, Region};
use k8s_openapi::jiff::Timestamp;
use meridian_api::{CacheCluster, CacheRegion};
use meridian_operator::controller::orchestration::Orchestration;
use meridian_operator::controller::status::region_status;
use meridian_operator::names::PodName;
use meridian_operator::region_plan::{self, NodeStep, NodeView};
use meridian_operator::reshard::{self, OpenSlots, ReshardStep};
use meridian_operator::resources::{self, BuildConfig};
use meridian_operator::rollout::{self, Revisions, RolloutStep};
use meridian_operator::topology_plan::{
    self, NodeReport, PrimaryDown, PromotionCandidate, RegionPods, TopologyDecision,
};
use meridian_topology::TopologyMap;

/// The controller's slots per resharding step (`RESHARD_BATCH` in
/// src/controller/resharding.rs).
const RESHARD_BATCH: usize = 128;

struct Options {
    quick: bool,
    sizes: Vec<u16>,
}

impl Options {
    fn parse() -> Options {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|arg| arg == "--quick");
        let sizes = args
            .iter()
            .position(|arg| arg == "--shards")
            .and_then(|at| args.get(at + 1))
            .map(|list| {
                list.split(',')
                    .map(|size| size.trim().parse().expect("--shards 3,30,300"))
                    .collect()
            })
            .unwrap_or_else(|| vec![3, 30, 300, 1000]);
        Options { quick, sizes }
    }

    /// Runs per measurement, and the time after which fewer will do (at least 3).
    fn runs(&self) -> (usize, Duration) {
        if self.quick {
            (5, Duration::from_millis(300))
        } else {
            (31, Duration::from_secs(3))
        }
    }
}

/// The median of up to `runs` timed calls (at least 3, fewer once `budget` is spent).
fn median<T>(options: &Options, mut work: impl FnMut() -> T) -> Duration {
    let (runs, budget) = options.runs();
    let started = Instant::now();
    let mut times = Vec::with_capacity(runs);
    while times.len() < runs && (times.len() < 3 || started.elapsed() < budget) {
        let start = Instant::now();
        black_box(work());
        times.push(start.elapsed());
    }
    times.sort_unstable();
    times[times.len() / 2]
}

fn format_time(time: Duration) -> String {
    let micros = time.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.1} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

fn format_bytes(bytes: usize) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} B")
    } else if bytes < 10 * 1024 * 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{} MiB", bytes / (1024 * 1024))
    }
}

/// One row of results: (column, value) in print order.
type Row = Vec<(&'static str, String)>;

fn main() {
    let options = Options::parse();
    println!(
        "# operator planners, {} shard(s) x {PODS_PER_SHARD} pods; medians of up to {} runs{}",
        options
            .sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        options.runs().0,
        if options.quick { " (--quick)" } else { "" }
    );
    let mut planners: Vec<Row> = Vec::new();
    let mut reconcile: Vec<Row> = Vec::new();
    let mut resharding: Vec<Row> = Vec::new();
    let mut transfer: Vec<Row> = Vec::new();
    for &shards in &options.sizes {
        eprintln!("{shards} shards ...");
        let region = Region::settled(shards);
        check(&region);
        planners.push(time_planners(&options, &region));
        reconcile.push(time_reconcile(&options, &region));
        transfer.push(time_transfer(&options, &region));
        resharding.push(time_resharding(&options, shards));
    }
    print_table(
        "Topology and failover planners (median per call)",
        &planners,
    );
    print_table(
        "Per reconcile pass, settled region: pure steps and the work it issues",
        &reconcile,
    );
    print_table("Node I/O payloads per reconcile pass", &transfer);
    print_table(
        &format!("Resharding planner (plan_step, batches of {RESHARD_BATCH} slots)"),
        &resharding,
    );
}

/// The fixture must be what the bench claims (tests/planner_fixtures.rs checks more).
fn check(region: &Region) {
    region
        .map
        .validate()
        .expect("the fixture's map is complete");
    assert_eq!(region.map.shards.len(), usize::from(region.shards));
    assert!(region.pods.all_ready());
}

fn print_table(title: &str, rows: &[Row]) {
    let Some(first) = rows.first() else { return };
    println!("\n## {title}\n");
    println!(
        "| {} |",
        first
            .iter()
            .map(|(column, _)| *column)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|{}", "---:|".repeat(first.len()));
    for row in rows {
        println!(
            "| {} |",
            row.iter()
                .map(|(_, value)| value.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

fn view<'a>(
    region: &'a Region,
    pods: &'a RegionPods,
    reports: &'a [NodeReport],
    answered: &'a BTreeSet<PodName>,
) -> NodeView<'a> {
    NodeView {
        cluster: CLUSTER,
        region: REGION,
        pods,
        reports,
        replication: &region.replication,
        answered,
        status_epoch: region.map.epoch,
    }
}

fn time_planners(options: &Options, region: &Region) -> Row {
    let shards = region.shards;
    let pods = &region.pods;
    let epoch = region.map.epoch;

    // (a) the first map: no node holds one
    let fresh = fixtures::fresh_reports(pods);
    let first = median(options, || {
        topology_plan::plan(CLUSTER, REGION, pods, &fresh, 0).unwrap()
    });
    assert!(matches!(
        topology_plan::plan(CLUSTER, REGION, pods, &fresh, 0).unwrap(),
        TopologyDecision::Push {
            new_epoch: true,
            ..
        }
    ));

    // (b) every node holds the map
    let in_sync = median(options, || {
        topology_plan::plan(CLUSTER, REGION, pods, &region.reports, epoch).unwrap()
    });
    assert!(matches!(
        topology_plan::plan(CLUSTER, REGION, pods, &region.reports, epoch).unwrap(),
        TopologyDecision::InSync { .. }
    ));

    // (c) one replica pod came back with a new IP: a new epoch, slots kept
    let mut moved = pods.clone();
    let middle = usize::from(shards / 2);
    moved.shards[middle][1].ip = Some("10.255.255.254".into());
    let ip_changed = median(options, || {
        topology_plan::plan(CLUSTER, REGION, &moved, &region.reports, epoch).unwrap()
    });
    match topology_plan::plan(CLUSTER, REGION, &moved, &region.reports, epoch).unwrap() {
        TopologyDecision::Push {
            new_epoch: true,
            slots_reassigned: false,
            ..
        } => {}
        other => panic!("a changed IP gives a new epoch keeping slots: {other:?}"),
    }

    // (c) one node holds the previous epoch: the map is re-sent to it alone
    let mut lagging = region.reports.clone();
    if let Some(map) = lagging[middle * 2].map.as_mut() {
        map.epoch -= 1;
    }
    let one_behind = median(options, || {
        topology_plan::plan(CLUSTER, REGION, pods, &lagging, epoch).unwrap()
    });
    match topology_plan::plan(CLUSTER, REGION, pods, &lagging, epoch).unwrap() {
        TopologyDecision::Push {
            targets,
            new_epoch: false,
            ..
        } => assert_eq!(targets.len(), 1),
        other => panic!("one lagging node gets the map again: {other:?}"),
    }

    // (d) primaries down: plan_failover alone, and the whole decision (next_step: which
    // primaries are down, the candidates, the plan)
    let failover = |count: usize| {
        let down_shards = region.spread_shards(count);
        let down: BTreeMap<u32, PrimaryDown> = down_shards
            .iter()
            .map(|shard| (*shard, PrimaryDown::PodMissing))
            .collect();
        let candidates: Vec<PromotionCandidate> = region
            .map
            .shards
            .iter()
            .filter(|shard| down.contains_key(&shard.index))
            .flat_map(|shard| &shard.replicas)
            .map(|replica| PromotionCandidate {
                pod: PodName::of(replica),
                offset: fixtures::OFFSET,
            })
            .collect();
        let planned = median(options, || {
            topology_plan::plan_failover(&region.map, &down, &candidates, epoch + 1)
        });
        let plan = topology_plan::plan_failover(&region.map, &down, &candidates, epoch + 1);
        assert_eq!(plan.promotions.len(), down.len());
        plan.map.as_ref().unwrap().validate().unwrap();
        // the reconcile's view: the primaries' pods are gone, so are their answers
        let without = region.pods_without_primaries(&down_shards);
        let reports: Vec<NodeReport> = region
            .reports
            .iter()
            .filter(|report| without.iter().any(|pod| pod.name == report.pod))
            .cloned()
            .collect();
        let answered = without.iter().map(|pod| pod.name.clone()).collect();
        let view = view(region, &without, &reports, &answered);
        let decided = median(options, || {
            region_plan::next_step(&view, |_| false).unwrap()
        });
        match region_plan::next_step(&view, |_| false).unwrap() {
            NodeStep::FailOver(failover) => {
                assert_eq!(failover.plan.promotions.len(), down.len())
            }
            other => panic!("expected a failover: {other:?}"),
        }
        (down.len(), planned, decided)
    };
    let (_, one_down, one_down_decided) = failover(1);
    let (tenth, tenth_down, tenth_down_decided) = failover(usize::from(shards).div_ceil(10));

    vec![
        ("shards", shards.to_string()),
        ("plan: first map", format_time(first)),
        ("plan: in sync", format_time(in_sync)),
        ("plan: 1 pod new IP", format_time(ip_changed)),
        ("plan: 1 node old epoch", format_time(one_behind)),
        ("plan_failover: 1 down", format_time(one_down)),
        ("next_step: 1 down", format_time(one_down_decided)),
        (
            "plan_failover: 10% down",
            format!("{} ({tenth})", format_time(tenth_down)),
        ),
        ("next_step: 10% down", format_time(tenth_down_decided)),
    ]
}

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The pure steps of one reconcile of a settled region, and the API calls, node
/// connections and node commands it issues (auth off, no TLS, no sibling regions).
fn time_reconcile(options: &Options, region: &Region) -> Row {
    let shards = region.shards;
    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let mut object: CacheRegion = fixture("region-minimal.yaml");
    object.metadata.name = Some(fixtures::BASE.into());
    object.spec.region = REGION.into();
    object.spec.replicas_per_shard = Some(i32::from(PODS_PER_SHARD) - 1);
    let mut plan = resources::validate(&cluster, &object).expect("fixture is valid");
    // beyond the CRD's 256 shards: what raising that limit would cost
    plan.shards = shards;
    plan.cluster_name = CLUSTER.into();
    let config = BuildConfig {
        default_node_image: "meridian-node:bench".into(),
        operator_namespace: Some("meridian-system".into()),
    };

    // region_plan::next_step in a settled region: shards_down, then plan (InSync)
    let view = view(region, &region.pods, &region.reports, &region.answered);
    let decide = median(options, || {
        region_plan::next_step(&view, |_| false).unwrap()
    });
    assert!(matches!(
        region_plan::next_step(&view, |_| false).unwrap(),
        NodeStep::Plan(TopologyDecision::InSync { .. })
    ));

    // the objects applied every reconcile
    let keep = Default::default();
    let build = median(options, || resources::build_keeping(&plan, &config, &keep));
    let desired = resources::build_keeping(&plan, &config, &keep);

    // settle: reshard::plan_step (Done) and rollout::next_step (Done)
    let reshard_done = median(options, || {
        reshard::plan_step(&region.map, shards, &[], RESHARD_BATCH)
    });
    assert_eq!(
        reshard::plan_step(&region.map, shards, &[], RESHARD_BATCH).step,
        ReshardStep::Done
    );
    let revisions = Revisions {
        update_revision: (0..shards)
            .map(|shard| (shard, Some("r1".into())))
            .collect(),
        pod_revision: region
            .pods
            .iter()
            .map(|pod| (pod.name.clone(), "r1".to_string()))
            .collect(),
    };
    let roll = median(options, || {
        rollout::next_step(&region.map, &region.pods, &revisions)
    });
    assert_eq!(
        rollout::next_step(&region.map, &region.pods, &revisions).0,
        RolloutStep::Done
    );

    // status
    let orchestration = Orchestration::InSync {
        map: region.map.clone(),
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let status = median(options, || {
        region_status(
            &object,
            &plan,
            &region.pods,
            Some(&orchestration),
            None,
            Some(&[]),
            &region.replication,
            now,
        )
    });

    // Work issued (src/controller/region.rs reconcile_region, observe.rs, executor.rs):
    // node connections: observe::read_nodes opens one per pod with an IP
    let connections = region.pods.iter().filter(|pod| pod.ip.is_some()).count();
    // node commands: TOPOLOGY GET + INFO replication + PEERS GET per node (read_nodes),
    // CLUSTER NODES per primary (resharding::open_slots, sequential), INFO replication
    // per node again (observe::refresh_replication)
    let primaries = region.map.shards.len();
    let commands = 3 * connections + primaries + connections;
    // API calls: GET CacheCluster; LIST StatefulSets, PDBs, CacheRegions, Pods;
    // apply NetworkPolicy, ConfigMap, Services, each StatefulSet and PDB; apply status
    let applies = usize::from(desired.network_policy.is_some())
        + 1
        + desired.services.len()
        + desired.stateful_sets.len()
        + desired.pod_disruption_budgets.len();
    let api_calls = 1 + 4 + applies + 1;
    // a first map adds one event per shard (ShardPrimaryChosen), SlotsAssigned and
    // TopologyPushed (Executor::announce_epoch, report_push)
    let first_events = match topology_plan::plan(
        CLUSTER,
        REGION,
        &region.pods,
        &fixtures::fresh_reports(&region.pods),
        0,
    )
    .unwrap()
    {
        TopologyDecision::Push {
            primaries,
            slots_reassigned,
            ..
        } => primaries.len() + usize::from(slots_reassigned) + 1,
        TopologyDecision::InSync { .. } => 0,
    };
    let total = decide + build + reshard_done + roll + status;
    vec![
        ("shards", shards.to_string()),
        ("next_step (in sync)", format_time(decide)),
        ("build objects", format_time(build)),
        ("reshard plan_step (done)", format_time(reshard_done)),
        ("rollout next_step", format_time(roll)),
        ("region_status", format_time(status)),
        ("pure total", format_time(total)),
        ("node connections", connections.to_string()),
        ("node commands", commands.to_string()),
        ("API calls", api_calls.to_string()),
        ("+ events, first map", first_events.to_string()),
    ]
}

/// What crosses the wire to and from the nodes in one pass: every node's map parsed
/// (TOPOLOGY GET), the map serialized for a push (once, sent to every node), and every
/// primary's CLUSTER NODES text parsed (the resharding step's open-slot read).
fn time_transfer(options: &Options, region: &Region) -> Row {
    let nodes = region.pods.iter().count();
    let primaries = region.map.shards.len();
    let json = serde_json::to_string(&region.map).unwrap();
    let parse = median(options, || {
        serde_json::from_str::<TopologyMap>(&json).unwrap()
    });
    let serialize = median(options, || serde_json::to_string(&region.map).unwrap());
    let middle = &region.map.shards[primaries / 2].primary.id;
    let text = fixtures::cluster_nodes_text(&region.map, middle);
    let render = median(options, || {
        fixtures::cluster_nodes_text(&region.map, middle)
    });
    let open = median(options, || OpenSlots::parse_cluster_nodes(&text));
    assert!(OpenSlots::parse_cluster_nodes(&text).is_empty());
    // what the reconcile holds: one parsed map per node (observe's NodeReports)
    let held: usize = region
        .reports
        .iter()
        .filter_map(|report| report.map.as_ref())
        .map(map_heap_bytes)
        .sum();
    vec![
        ("shards", region.shards.to_string()),
        ("map JSON", format_bytes(json.len())),
        ("parse 1 map", format_time(parse)),
        (
            "TOPOLOGY GET x nodes: bytes",
            format_bytes(json.len() * nodes),
        ),
        (
            "TOPOLOGY GET x nodes: parse",
            format_time(parse * nodes as u32),
        ),
        ("maps held in memory", format_bytes(held)),
        // NodeConnections::push serializes once per push (it did per node before)
        ("serialize 1 map (per push)", format_time(serialize)),
        ("CLUSTER NODES", format_bytes(text.len())),
        ("render 1 (node side)", format_time(render)),
        ("parse 1", format_time(open)),
        (
            "CLUSTER NODES x primaries: bytes",
            format_bytes(text.len() * primaries),
        ),
        (
            "x primaries: render + parse",
            format_time((render + open) * primaries as u32),
        ),
    ]
}

/// Heap bytes of one parsed map (strings and vectors; allocator overhead not counted).
fn map_heap_bytes(map: &TopologyMap) -> usize {
    let node = |node: &meridian_topology::NodeAddr| {
        std::mem::size_of_val(node) + node.id.capacity() + node.ip.capacity()
    };
    map.shards
        .iter()
        .map(|shard| {
            std::mem::size_of_val(shard)
                + shard.slots.capacity() * std::mem::size_of::<meridian_topology::SlotRange>()
                + node(&shard.primary)
                + shard.replicas.iter().map(node).sum::<usize>()
        })
        .sum()
}

/// Runs the resharding planner from `map` to `desired` shards as the controller does (no
/// slot in transit): steps, and the planner's time over the whole sequence.
fn reshard_sequence(map: &TopologyMap, desired: u16) -> (usize, usize, Duration, TopologyMap) {
    let mut map = map.clone();
    let mut steps = 0;
    let mut moved = 0;
    let mut planning = Duration::ZERO;
    loop {
        let start = Instant::now();
        let plan = reshard::plan_step(&map, desired, &[], RESHARD_BATCH);
        planning += start.elapsed();
        steps += 1;
        match plan.step {
            ReshardStep::Done => return (steps, moved, planning, map),
            ReshardStep::Move { batch, .. } => {
                moved += batch.slots.len();
                map = reshard::map_after_move(&map, &batch, map.epoch + 1);
            }
            ReshardStep::DropShards { removed } => {
                map = reshard::map_without_shards(&map, &removed, map.epoch + 1);
            }
            ReshardStep::Blocked(reason) => panic!("resharding blocked: {reason}"),
        }
        assert!(steps < 100_000, "the resharding planner does not converge");
    }
}

fn time_resharding(options: &Options, shards: u16) -> Row {
    let mut row: Row = vec![("shards", shards.to_string())];
    for (label_step, label_sequence, desired) in [
        (
            "N→N+1: 1st step",
            "N→N+1: steps, slots, planner total",
            shards + 1,
        ),
        (
            "N→2N: 1st step",
            "N→2N: steps, slots, planner total",
            shards * 2,
        ),
    ] {
        let joined = fixtures::joined_map(shards, desired);
        let first = median(options, || {
            reshard::plan_step(&joined, desired, &[], RESHARD_BATCH)
        });
        // whole sequences are long at 1000 shards: fewer runs
        let runs = if options.quick { 1 } else { 3 };
        let mut totals = Vec::new();
        let mut outcome = (0, 0);
        for _ in 0..runs {
            let (steps, moved, planning, done) = reshard_sequence(&joined, desired);
            done.validate().expect("the resharded map is complete");
            let counts = fixtures::slot_counts(&done);
            let (min, max) = (
                counts.values().min().copied().unwrap_or(0),
                counts.values().max().copied().unwrap_or(0),
            );
            assert!(max - min <= 1, "balanced after resharding");
            outcome = (steps, moved);
            totals.push(planning);
        }
        totals.sort_unstable();
        row.push((label_step, format_time(first)));
        row.push((
            label_sequence,
            format!(
                "{}, {}, {}",
                outcome.0,
                outcome.1,
                format_time(totals[totals.len() / 2])
            ),
        ));
    }
    row
}
