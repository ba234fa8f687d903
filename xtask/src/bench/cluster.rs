//! `cargo xtask bench cluster`: 3 primaries × 1 replica of meridian-node
//! (topology pushed with MERIDIAN.TOPOLOGY) against a redis-server cluster and
//! a valkey-server cluster of the same shape (`redis-cli` / `valkey-cli
//! --cluster create --cluster-replicas 1`):
//! throughput with `redis-benchmark --cluster`, and replication lag in bytes
//! sampled while redis-benchmark writes (issue 5).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meridian_topology::{NodeAddr, ShardTopology, TopologyMap, split_evenly};

use super::resp::{Client, Reply};
use super::{Binaries, CpuReading, Kind, Server, cores, free_port, machine_description};

const SHARDS: usize = 3;

/// Six processes, and which replica follows which primary (by port).
struct ClusterUnderTest {
    name: &'static str,
    servers: Vec<Server>,
    pairs: Vec<(u16, u16)>,
    /// Removed on drop (redis cluster config files).
    scratch: Option<PathBuf>,
}

impl ClusterUnderTest {
    fn entry_port(&self) -> u16 {
        self.servers.first().map_or(0, |server| server.port)
    }

    /// The CPU time all six servers have used so far.
    fn cpu(&self) -> Result<Vec<CpuReading>> {
        self.servers.iter().map(Server::cpu).collect()
    }
}

impl Drop for ClusterUnderTest {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn info_text(port: u16, section: &str) -> Result<String> {
    let mut client = Client::connect(port)?;
    match client.command(&[b"INFO", section.as_bytes()])? {
        Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
        other => bail!("INFO {section} on {port}: {other:?}"),
    }
}

fn info_value(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
}

/// Waits until every replica of `pairs` reports its link to the primary up.
fn wait_replicas_up(pairs: &[(u16, u16)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for &(_, replica) in pairs {
        loop {
            let text = info_text(replica, "replication")?;
            if info_value(&text, "master_link_status").as_deref() == Some("up") {
                break;
            }
            if Instant::now() > deadline {
                bail!("replica on port {replica} did not sync: {text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// A meridian-node named `id` (one I/O thread) on a free port, and its address.
pub(super) fn spawn_meridian_node(binary: &Path, id: &str) -> Result<(Server, NodeAddr)> {
    let port = free_port()?;
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--metrics-port",
        &free_port()?.to_string(),
        "--http-port",
        "0",
        "--region-port",
        "0",
        "--io-threads",
        "1",
        "--node-id",
        id,
        "--log",
        "warn",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let server = Server::spawn("meridian-node", &binary.display().to_string(), &args, port)?;
    let addr = NodeAddr {
        id: id.to_string(),
        ip: "127.0.0.1".into(),
        port,
    };
    Ok((server, addr))
}

/// Pushes `map` to every server with MERIDIAN.TOPOLOGY SET, as the operator does.
pub(super) fn push_map(servers: &[Server], map: &TopologyMap) -> Result<()> {
    let json = serde_json::to_string(map)?;
    for server in servers {
        let reply = Client::connect(server.port)?.command(&[
            b"MERIDIAN.TOPOLOGY",
            b"SET",
            json.as_bytes(),
        ])?;
        if reply != Reply::Status("OK".into()) {
            bail!("MERIDIAN.TOPOLOGY SET on {}: {reply:?}", server.port);
        }
    }
    Ok(())
}

fn start_meridian(binary: &Path) -> Result<ClusterUnderTest> {
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for shard in 0..SHARDS {
        for member in 0..2 {
            let (server, addr) = spawn_meridian_node(binary, &format!("shard-{shard}-{member}"))?;
            servers.push(server);
            addrs.push(addr);
        }
    }
    let map = TopologyMap {
        epoch: 1,
        cluster: "bench".into(),
        region: "local".into(),
        shards: split_evenly(SHARDS as u16)
            .into_iter()
            .enumerate()
            .map(|(shard, range)| ShardTopology {
                index: shard as u32,
                slots: vec![range],
                primary: addrs[shard * 2].clone(),
                replicas: vec![addrs[shard * 2 + 1].clone()],
            })
            .collect(),
    };
    push_map(&servers, &map)?;
    let pairs = (0..SHARDS)
        .map(|shard| (addrs[shard * 2].port, addrs[shard * 2 + 1].port))
        .collect::<Vec<_>>();
    wait_replicas_up(&pairs)?;
    Ok(ClusterUnderTest {
        name: "meridian-node",
        servers,
        pairs,
        scratch: None,
    })
}

/// A free port whose cluster-bus port (port + 10000) is free too.
fn cluster_port() -> Result<u16> {
    for _ in 0..200 {
        let port = free_port()?;
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port with a free cluster-bus port")
}

/// Runs `cli --cluster <action> <args>` (redis-cli or valkey-cli); fails with its
/// output when it fails.
pub(super) fn run_cluster_tool(
    cli: &Path,
    action: &str,
    args: impl IntoIterator<Item = String>,
) -> Result<()> {
    let output = Command::new(cli)
        .args(["--cluster", action])
        .args(args)
        .output()
        .with_context(|| format!("{} --cluster {action}", cli.display()))?;
    if !output.status.success() {
        bail!(
            "{} --cluster {action} failed: {}{}",
            cli.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The server program and the cluster tool of redis-server or valkey-server.
pub(super) fn cluster_programs(kind: Kind, binaries: &Binaries) -> (String, PathBuf) {
    match kind {
        Kind::Valkey => (
            binaries.valkey.display().to_string(),
            binaries.valkey.with_file_name("valkey-cli"),
        ),
        _ => ("redis-server".to_string(), "redis-cli".into()),
    }
}

/// A fresh directory for a benchmark's cluster config files (the caller removes it).
pub(super) fn scratch_dir(bench: &str, kind: Kind) -> Result<PathBuf> {
    let scratch = std::env::temp_dir().join(format!(
        "meridian-bench-{bench}-{}-{}",
        kind.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch).context("scratch directory")?;
    Ok(scratch)
}

/// A redis-server or valkey-server (`program`) in cluster mode on a free port,
/// without persistence, its cluster config file in `scratch`.
pub(super) fn spawn_cluster_node(kind: Kind, program: &str, scratch: &Path) -> Result<Server> {
    let port = cluster_port()?;
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &scratch
            .join(format!("nodes-{port}.conf"))
            .display()
            .to_string(),
        "--cluster-node-timeout",
        "5000",
        "--dir",
        &scratch.display().to_string(),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    Server::spawn(kind.name(), program, &args, port)
}

/// A redis-server (`Kind::Redis`) or valkey-server cluster made by its own
/// `--cluster create`.
fn start_redis(kind: Kind, binaries: &Binaries) -> Result<ClusterUnderTest> {
    let (server_program, cli) = cluster_programs(kind, binaries);
    let scratch = scratch_dir("cluster", kind)?;
    let mut cluster = ClusterUnderTest {
        name: kind.name(),
        servers: Vec::new(),
        pairs: Vec::new(),
        scratch: Some(scratch.clone()),
    };
    for _ in 0..SHARDS * 2 {
        cluster
            .servers
            .push(spawn_cluster_node(kind, &server_program, &scratch)?);
    }
    let nodes = cluster
        .servers
        .iter()
        .map(|server| format!("127.0.0.1:{}", server.port));
    run_cluster_tool(
        &cli,
        "create",
        nodes.chain(["--cluster-replicas", "1", "--cluster-yes"].map(String::from)),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for server in &cluster.servers {
        loop {
            let mut client = Client::connect(server.port)?;
            let Reply::Bulk(Some(info)) = client.command(&[b"CLUSTER", b"INFO"])? else {
                bail!("CLUSTER INFO failed on {}", server.port);
            };
            if String::from_utf8_lossy(&info).contains("cluster_state:ok") {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} cluster not ok on {}", kind.name(), server.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.pairs.len() < SHARDS {
        cluster.pairs.clear();
        for server in &cluster.servers {
            let text = info_text(server.port, "replication")?;
            if info_value(&text, "role").as_deref() == Some("slave") {
                let primary = info_value(&text, "master_port")
                    .and_then(|port| port.parse().ok())
                    .context("replica without master_port")?;
                cluster.pairs.push((primary, server.port));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} cluster has {} replicas, want {SHARDS}",
                kind.name(),
                cluster.pairs.len()
            );
        }
        if cluster.pairs.len() < SHARDS {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    wait_replicas_up(&cluster.pairs)?;
    Ok(cluster)
}

fn benchmark_command(port: u16, tests: &str, requests: u32, pipeline: u32) -> Command {
    let (_, client_core) = cores();
    let mut command = Command::new("taskset");
    command
        .args(["-c", &client_core, "redis-benchmark", "--cluster"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", tests, "-n", &requests.to_string(), "-c", "50"])
        .args([
            "-r",
            "100000",
            "-d",
            "64",
            "-P",
            &pipeline.to_string(),
            "--csv",
        ]);
    command
}

fn parse_csv(text: &str) -> Result<Vec<(String, f64)>> {
    let mut results = Vec::new();
    // --cluster prints the node list before the CSV rows
    for line in text
        .lines()
        .filter(|line| line.starts_with('"') && !line.starts_with("\"test\""))
    {
        let fields: Vec<&str> = line
            .split(',')
            .map(|field| field.trim_matches('"'))
            .collect();
        if let [test, rps, ..] = fields.as_slice() {
            results.push((test.to_string(), rps.parse::<f64>().context("rps")?));
        }
    }
    Ok(results)
}

/// Rates per test (`"SET"`, `"GET"`), as redis-benchmark names them.
type Rates = Vec<(String, f64)>;

/// SET, then GET of the keys it wrote, as separate runs so that the servers' CPU
/// time over each run belongs to one test. Returns ops/s as redis-benchmark reports
/// them, and requests per second of CPU time of all six servers together (primaries
/// and replicas: the replication stream is part of a write's cost).
fn throughput(cluster: &ClusterUnderTest, pipeline: u32, requests: u32) -> Result<(Rates, Rates)> {
    let (mut ops, mut per_cpu_second) = (Vec::new(), Vec::new());
    for test in ["set", "get"] {
        let cpu_before = cluster.cpu()?;
        let output = benchmark_command(cluster.entry_port(), test, requests, pipeline)
            .output()
            .context("run redis-benchmark --cluster")?;
        if !output.status.success() {
            bail!(
                "redis-benchmark --cluster failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let cpu: f64 = cluster
            .cpu()?
            .iter()
            .zip(&cpu_before)
            .map(|(after, before)| after.since(before))
            .sum();
        for (name, rps) in parse_csv(&String::from_utf8_lossy(&output.stdout))? {
            if cpu > 0.0 {
                per_cpu_second.push((name.clone(), f64::from(requests) / cpu));
            }
            ops.push((name, rps));
        }
    }
    Ok((ops, per_cpu_second))
}

struct LagReport {
    samples: Vec<u64>,
    set_rate: f64,
}

/// Runs a SET load and samples, every 100 ms, how many bytes of the
/// replication stream each replica is behind its primary (primary's
/// master_repl_offset read first, then the replica's slave_repl_offset).
fn replication_lag(cluster: &ClusterUnderTest, requests: u32) -> Result<LagReport> {
    let mut clients = Vec::new();
    for &(primary, replica) in &cluster.pairs {
        clients.push((Client::connect(primary)?, Client::connect(replica)?));
    }
    let mut child = benchmark_command(cluster.entry_port(), "set", requests, 16)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start redis-benchmark --cluster")?;
    let mut samples = Vec::new();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        for (primary, replica) in &mut clients {
            let produced = primary.info_field("replication", "master_repl_offset")?;
            let applied = replica.info_field("replication", "slave_repl_offset")?;
            samples.push(produced.saturating_sub(applied));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "redis-benchmark --cluster failed on {}: {}",
            cluster.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let set_rate = parse_csv(&String::from_utf8_lossy(&output.stdout))?
        .into_iter()
        .find(|(test, _)| test == "SET")
        .map_or(0.0, |(_, rps)| rps);
    samples.sort_unstable();
    Ok(LagReport { samples, set_rate })
}

fn percentile(sorted: &[u64], percent: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((percent / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn run(quick: bool) -> Result<()> {
    let binaries = Binaries::prepare()?;
    let rounds = if quick { 1 } else { 3 };
    let clusters = [
        start_redis(Kind::Redis, &binaries)?,
        start_redis(Kind::Valkey, &binaries)?,
        start_meridian(&binaries.meridian)?,
    ];
    println!("\n## Cluster mode: 3 primaries × 1 replica\n");
    println!("Machine: {}\n", machine_description());
    println!(
        "All 18 servers pinned to core 0 (meridian-node with --io-threads 1), redis-benchmark pinned to core 1;"
    );
    println!(
        "`redis-benchmark --cluster -t <set|get> -n N -c 50 -r 100000 -d 64 -P <p> --csv` (SET, then GET of the keys it wrote), median of {rounds} rounds, clusters alternating.\n"
    );
    println!(
        "| test | pipeline | redis-server cluster ops/s | valkey-server cluster ops/s | meridian-node cluster ops/s | meridian / redis | meridian / valkey |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut per_cpu = Vec::new();
    for pipeline in [1u32, 16] {
        let requests = match (quick, pipeline) {
            (true, 1) => 50_000,
            (true, _) => 500_000,
            (false, 1) => 200_000,
            (false, _) => 2_000_000,
        };
        let mut ops: Vec<Vec<Rates>> = vec![Vec::new(); clusters.len()];
        let mut cpu: Vec<Vec<Rates>> = vec![Vec::new(); clusters.len()];
        for _ in 0..rounds {
            // alternate so background noise hits all alike
            for (index, cluster) in clusters.iter().enumerate() {
                let (round_ops, round_cpu) = throughput(cluster, pipeline, requests)?;
                ops[index].push(round_ops);
                cpu[index].push(round_cpu);
            }
        }
        super::print_set_get_rows(pipeline, &ops);
        per_cpu.push((pipeline, cpu));
    }
    println!(
        "\n### Requests per second of cluster CPU time\n\nThe six servers' CPU time over each run (their threads' run time in ns from /proc/<pid>/task/*/schedstat; utime + stime in ticks if a thread ended), primaries and replicas together: what a request costs the cluster, less sensitive to the machine's other load than ops/s.\n"
    );
    println!(
        "| test | pipeline | redis-server cluster | valkey-server cluster | meridian-node cluster | meridian / redis | meridian / valkey |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (pipeline, runs) in &per_cpu {
        super::print_set_get_rows(*pipeline, runs);
    }
    let requests = if quick { 500_000 } else { 3_000_000 };
    println!(
        "\n### Replication lag under load\n\n`redis-benchmark --cluster -t set -n {requests} -c 50 -r 100000 -d 64 -P 16`; every 100 ms, for each of the 3 shards, primary `master_repl_offset` minus replica `slave_repl_offset` (INFO replication).\n"
    );
    println!("| server | SET ops/s during sampling | samples | lag p50 | lag p99 | lag max |");
    println!("|---|---|---|---|---|---|");
    for cluster in &clusters {
        let report = replication_lag(cluster, requests)?;
        println!(
            "| {} | {:.0} | {} | {} B | {} B | {} B |",
            cluster.name,
            report.set_rate,
            report.samples.len(),
            percentile(&report.samples, 50.0),
            percentile(&report.samples, 99.0),
            report.samples.last().copied().unwrap_or(0),
        );
    }
    Ok(())
}
