//! `cargo xtask bench regions`: cross-region invalidation lag under an
//! injected round-trip time (issue 7).
//!
//! Three regions of meridian-node on distinct loopback addresses; every
//! region link goes through a [`DelayProxy`] in front of the receiving node,
//! so each link sees the full RTT (RTT/2 per direction). Region A takes SETs
//! at a fixed rate on keys that B and C hold; pollers in B and C find when
//! each key is gone. The node's own lag histogram has 1 ms clock resolution
//! and coarse buckets (10 ms, 25 ms), so the lag is measured from outside.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use meridian_topology::{NodeAddr, ShardTopology, SlotRange, TopologyMap, key_slot, split_evenly};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::proxy::DelayProxy;
use super::resp::Reply;
use super::{Server, build_node, cores, machine_description};

const CLUSTER: &str = "bench-regions";
const REGIONS: [&str; 3] = ["region-a", "region-b", "region-c"];
/// A key still cached this long after its write counts as not invalidated.
const GIVE_UP: Duration = Duration::from_secs(10);

pub struct Options {
    rtt_ms: u64,
    rate: u64,
    seconds: u64,
    primaries: usize,
}

impl Options {
    pub fn parse(args: &[String], quick: bool) -> Result<Options> {
        let mut options = Options {
            rtt_ms: 20,
            rate: 2000,
            seconds: if quick { 3 } else { 10 },
            primaries: 2,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--quick" {
                continue;
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let number: u64 = value
                .parse()
                .with_context(|| format!("{flag} {value}: not a number"))?;
            match flag.as_str() {
                "--rtt-ms" => options.rtt_ms = number,
                "--rate" => options.rate = number.max(1),
                "--seconds" => options.seconds = number.max(1),
                "--primaries" => options.primaries = (number as usize).clamp(1, 8),
                other => bail!(
                    "unknown option {other}: expected --rtt-ms, --rate, --seconds, --primaries, --quick"
                ),
            }
        }
        Ok(options)
    }
}

/// Minimal async RESP2 client (pipelined, no nested arrays needed here).
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pending: Vec<u8>,
    queued: usize,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Conn {
            reader: BufReader::with_capacity(1 << 16, read),
            writer: write,
            pending: Vec::new(),
            queued: 0,
        })
    }

    fn queue(&mut self, args: &[&[u8]]) {
        super::resp::encode_command(&mut self.pending, args);
        self.queued += 1;
    }

    async fn flush(&mut self) -> Result<Vec<Reply>> {
        self.writer.write_all(&self.pending).await?;
        self.pending.clear();
        let mut replies = Vec::with_capacity(self.queued);
        for _ in 0..self.queued {
            replies.push(self.read().await?);
        }
        self.queued = 0;
        Ok(replies)
    }

    async fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.queue(args);
        self.flush().await?.pop().context("no reply")
    }

    async fn read(&mut self) -> Result<Reply> {
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let Some(line) = line.strip_suffix("\r\n") else {
            bail!("connection closed mid-reply");
        };
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Reply::Status(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0u8; len as usize + 2];
                    self.reader.read_exact(&mut data).await?;
                    data.truncate(len as usize);
                    Reply::Bulk(Some(data))
                }
            }
            other => bail!("unexpected reply type {other:?}"),
        })
    }
}

struct RegionNode {
    server: Server,
    ip: String,
    id: String,
    metrics_port: u16,
}

impl RegionNode {
    fn addr(&self) -> Result<SocketAddr> {
        Ok(format!("{}:{}", self.ip, self.server.port).parse()?)
    }
}

struct Region {
    name: &'static str,
    nodes: Vec<RegionNode>,
    ranges: Vec<SlotRange>,
    link_port: u16,
    proxy_port: u16,
}

impl Region {
    fn owner(&self, key: &str) -> usize {
        let slot = key_slot(key.as_bytes());
        self.ranges
            .iter()
            .position(|range| range.contains(slot))
            .unwrap_or_default()
    }

    fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("{}:{}", node.ip, self.proxy_port))
            .collect()
    }
}

/// A port free on every address of `ips`: a region's nodes share their link
/// port (a peer reaches a primary at `<primary ip>:<seed port>`), and so do
/// the proxies in front of them.
fn common_free_port(ips: &[String]) -> Result<u16> {
    for _ in 0..200 {
        let port = TcpListener::bind((ips[0].as_str(), 0))?
            .local_addr()?
            .port();
        if ips
            .iter()
            .all(|ip| TcpListener::bind((ip.as_str(), port)).is_ok())
        {
            return Ok(port);
        }
    }
    bail!("no port free on all of {ips:?}")
}

fn start_region(
    binary: &std::path::Path,
    index: usize,
    primaries: usize,
    consistency: &str,
    rtt: Duration,
) -> Result<Region> {
    let name = REGIONS[index];
    let ips: Vec<String> = (0..primaries)
        .map(|node| format!("127.0.95.{}", index * 16 + node + 1))
        .collect();
    let link_port = common_free_port(&ips)?;
    let proxy_port = loop {
        let port = common_free_port(&ips)?;
        if port != link_port {
            break port;
        }
    };
    let strong_timeout = (rtt.as_millis() as u64 * 5 + 1000).to_string();
    let env = [
        ("MERIDIAN_CLUSTER", CLUSTER.to_string()),
        ("MERIDIAN_REGION", name.to_string()),
        ("MERIDIAN_LINK_PORT", link_port.to_string()),
        ("MERIDIAN_CONSISTENCY", consistency.to_string()),
        ("MERIDIAN_STRONG_TIMEOUT_MS", strong_timeout),
    ];
    let mut nodes = Vec::new();
    for (node, ip) in ips.iter().enumerate() {
        let port = TcpListener::bind((ip.as_str(), 0))?.local_addr()?.port();
        let metrics = TcpListener::bind((ip.as_str(), 0))?.local_addr()?.port();
        let id = format!("{name}-{node}");
        let args: Vec<String> = [
            "--bind",
            ip,
            "--port",
            &port.to_string(),
            "--metrics-port",
            &metrics.to_string(),
            "--http-port",
            "0",
            "--io-threads",
            "1",
            "--node-id",
            &id,
            "--log",
            "warn",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let server = Server::spawn_at(
            "meridian-node",
            &binary.display().to_string(),
            &args,
            &env,
            ip,
            port,
        )?;
        nodes.push(RegionNode {
            server,
            ip: ip.clone(),
            id,
            metrics_port: metrics,
        });
    }
    Ok(Region {
        name,
        nodes,
        ranges: split_evenly(primaries as u16),
        link_port,
        proxy_port,
    })
}

async fn expect_ok(conn: &mut Conn, args: &[&[u8]]) -> Result<()> {
    match conn.command(args).await? {
        Reply::Status(status) if status == "OK" => Ok(()),
        other => bail!(
            "{} failed: {other:?}",
            String::from_utf8_lossy(args.first().copied().unwrap_or_default())
        ),
    }
}

async fn push_topology(region: &Region) -> Result<()> {
    let map = TopologyMap {
        epoch: 1,
        cluster: CLUSTER.into(),
        region: region.name.into(),
        shards: region
            .nodes
            .iter()
            .zip(&region.ranges)
            .enumerate()
            .map(|(index, (node, range))| ShardTopology {
                index: index as u32,
                slots: vec![*range],
                primary: NodeAddr {
                    id: node.id.clone(),
                    ip: node.ip.clone(),
                    port: node.server.port,
                },
                replicas: Vec::new(),
            })
            .collect(),
    };
    let json = serde_json::to_string(&map)?;
    for node in &region.nodes {
        let mut conn = Conn::connect(node.addr()?).await?;
        expect_ok(&mut conn, &[b"MERIDIAN.TOPOLOGY", b"SET", json.as_bytes()]).await?;
    }
    Ok(())
}

fn key_name(id: usize) -> String {
    format!("bench:{id}")
}

/// Caches every key in `region` before the links exist, so these SETs send
/// no events (a SET in B would otherwise invalidate C's copy).
async fn populate(region: &Region, keys: usize) -> Result<()> {
    let mut conns = Vec::new();
    for node in &region.nodes {
        conns.push(Conn::connect(node.addr()?).await?);
    }
    for batch in (0..keys).collect::<Vec<_>>().chunks(1000) {
        for &id in batch {
            let key = key_name(id);
            conns[region.owner(&key)].queue(&[b"SET", key.as_bytes(), b"cached-value"]);
        }
        for conn in &mut conns {
            for reply in conn.flush().await? {
                if reply != Reply::Status("OK".into()) {
                    bail!("populating {} failed: {reply:?}", region.name);
                }
            }
        }
    }
    let mut total = 0;
    for conn in &mut conns {
        if let Reply::Int(count) = conn.command(&[b"DBSIZE"]).await? {
            total += count as usize;
        }
    }
    if total != keys {
        bail!("{} holds {total} keys after populating {keys}", region.name);
    }
    Ok(())
}

async fn push_peers(regions: &[Region]) -> Result<()> {
    for (index, region) in regions.iter().enumerate() {
        let peers: Vec<serde_json::Value> = regions
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, peer)| serde_json::json!({"region": peer.name, "seeds": peer.seeds()}))
            .collect();
        let json = serde_json::to_string(&peers)?;
        for node in &region.nodes {
            let mut conn = Conn::connect(node.addr()?).await?;
            expect_ok(&mut conn, &[b"MERIDIAN.PEERS", b"SET", json.as_bytes()]).await?;
        }
    }
    Ok(())
}

async fn wait_links_up(regions: &[Region]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in regions.iter().flat_map(|region| &region.nodes) {
        let mut conn = Conn::connect(node.addr()?).await?;
        loop {
            let Reply::Bulk(Some(text)) = conn.command(&[b"MERIDIAN.PEERS", b"GET"]).await? else {
                bail!("MERIDIAN.PEERS GET failed on {}", node.id);
            };
            let status: serde_json::Value = serde_json::from_slice(&text)?;
            let up = status["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().all(|peer| peer["up"] == true));
            if up {
                break;
            }
            if Instant::now() > deadline {
                bail!("region links of {} not up: {status}", node.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

struct Probe {
    id: usize,
    key: String,
    sent: Instant,
}

/// Polls EXISTS for every outstanding key of one node (pipelined, about once
/// per millisecond) and reports when each is gone.
async fn poll_invalidations(
    addr: SocketAddr,
    mut probes: mpsc::UnboundedReceiver<Probe>,
) -> Result<Vec<(usize, Duration)>> {
    let mut conn = Conn::connect(addr).await?;
    let mut outstanding: Vec<Probe> = Vec::new();
    let mut gone = Vec::new();
    let mut closed = false;
    loop {
        if outstanding.is_empty() {
            match probes.recv().await {
                Some(probe) => outstanding.push(probe),
                None => break,
            }
        }
        while !closed {
            match probes.try_recv() {
                Ok(probe) => outstanding.push(probe),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        for probe in &outstanding {
            conn.queue(&[b"EXISTS", probe.key.as_bytes()]);
        }
        let replies = conn.flush().await?;
        let now = Instant::now();
        let mut still = Vec::with_capacity(outstanding.len());
        for (probe, reply) in outstanding.drain(..).zip(replies) {
            match reply {
                Reply::Int(0) => gone.push((probe.id, now - probe.sent)),
                // still cached long after the write: counted as not invalidated
                Reply::Int(_) if now - probe.sent > GIVE_UP => {}
                Reply::Int(_) => still.push(probe),
                other => bail!("EXISTS failed: {other:?}"),
            }
        }
        outstanding = still;
        if closed && outstanding.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(gone)
}

struct WriterResult {
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

/// Sends the SETs queued for one connection; each one is announced to the
/// pollers of B and C just before it leaves.
async fn write_keys(
    addr: SocketAddr,
    mut jobs: mpsc::UnboundedReceiver<(usize, String)>,
    pollers: Vec<(mpsc::UnboundedSender<Probe>, mpsc::UnboundedSender<Probe>)>,
    peer_owner: impl Fn(&str) -> usize,
) -> Result<WriterResult> {
    let mut conn = Conn::connect(addr).await?;
    let mut result = WriterResult {
        latencies: Vec::new(),
        errors: Vec::new(),
    };
    while let Some((id, key)) = jobs.recv().await {
        let sent = Instant::now();
        let owner = peer_owner(&key);
        let (in_b, in_c) = &pollers[owner];
        for poller in [in_b, in_c] {
            let _ = poller.send(Probe {
                id,
                key: key.clone(),
                sent,
            });
        }
        match conn
            .command(&[b"SET", key.as_bytes(), b"new-value"])
            .await?
        {
            Reply::Status(_) => result.latencies.push(sent.elapsed()),
            Reply::Error(error) => result.errors.push(error),
            other => bail!("SET replied {other:?}"),
        }
    }
    Ok(result)
}

struct RunResult {
    writes: usize,
    elapsed: Duration,
    ack: Vec<Duration>,
    errors: Vec<String>,
    lag: Vec<Duration>,
    not_invalidated: usize,
    node_lag: Vec<(f64, u64)>,
}

async fn run_once(
    binary: &std::path::Path,
    options: &Options,
    consistency: &str,
    rtt: Duration,
) -> Result<RunResult> {
    let keys = (options.rate * options.seconds) as usize;
    let mut regions = Vec::new();
    for index in 0..REGIONS.len() {
        regions.push(start_region(
            binary,
            index,
            options.primaries,
            consistency,
            rtt,
        )?);
    }
    for region in &regions {
        push_topology(region).await?;
    }
    for region in &regions[1..] {
        populate(region, keys).await?;
    }
    // one proxy in front of every node's link listener: A→B passes B's proxy
    // both ways, so every link sees RTT/2 per direction
    let mut proxies = Vec::new();
    for region in &regions {
        for node in &region.nodes {
            let listen: SocketAddr = format!("{}:{}", node.ip, region.proxy_port).parse()?;
            let upstream: SocketAddr = format!("{}:{}", node.ip, region.link_port).parse()?;
            proxies.push(DelayProxy::start(listen, upstream, rtt / 2).await?);
        }
    }
    push_peers(&regions).await?;
    wait_links_up(&regions).await?;

    let (region_a, region_b, region_c) = (&regions[0], &regions[1], &regions[2]);
    let mut poll_tasks = Vec::new();
    let mut pollers = Vec::new();
    for index in 0..options.primaries {
        let mut pair = Vec::new();
        for region in [region_b, region_c] {
            let (send, receive) = mpsc::unbounded_channel();
            poll_tasks.push(tokio::spawn(poll_invalidations(
                region.nodes[index].addr()?,
                receive,
            )));
            pair.push(send);
        }
        let in_c = pair.pop().context("poller")?;
        let in_b = pair.pop().context("poller")?;
        pollers.push((in_b, in_c));
    }
    let ranges = region_b.ranges.clone();
    let peer_owner = move |key: &str| {
        let slot = key_slot(key.as_bytes());
        ranges
            .iter()
            .position(|range| range.contains(slot))
            .unwrap_or_default()
    };
    // Each connection has one SET in flight; a strong SET can take a few RTTs
    // (it waits for the peer's current batch too), so open enough
    // connections to sustain the offered rate.
    let budget = rtt * 4 + Duration::from_millis(50);
    let writers_per_primary = ((options.rate as f64 * budget.as_secs_f64())
        / options.primaries as f64)
        .ceil()
        .max(16.0) as usize;
    let mut writer_queues = Vec::new();
    let mut writer_tasks = Vec::new();
    for node in &region_a.nodes {
        let mut queues = Vec::new();
        for _ in 0..writers_per_primary {
            let (send, receive) = mpsc::unbounded_channel();
            writer_tasks.push(tokio::spawn(write_keys(
                node.addr()?,
                receive,
                pollers.clone(),
                peer_owner.clone(),
            )));
            queues.push(send);
        }
        writer_queues.push(queues);
    }
    drop(pollers);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let mut next_writer = vec![0usize; region_a.nodes.len()];
    for id in 0..keys {
        let due = start + Duration::from_secs_f64(id as f64 / options.rate as f64);
        tokio::time::sleep_until(due).await;
        let key = key_name(id);
        let owner = region_a.owner(&key);
        let writer = next_writer[owner] % writers_per_primary;
        next_writer[owner] += 1;
        writer_queues[owner][writer]
            .send((id, key))
            .map_err(|_| anyhow::anyhow!("writer task ended early"))?;
    }
    drop(writer_queues);
    let mut ack = Vec::new();
    let mut errors = Vec::new();
    for task in writer_tasks {
        let result = task.await??;
        ack.extend(result.latencies);
        errors.extend(result.errors);
    }
    let elapsed = start.elapsed();
    // per write: the later of B and C
    let mut lag_by_id: Vec<(u8, Duration)> = vec![(0, Duration::ZERO); keys];
    for task in poll_tasks {
        let gone = task.await??;
        for (id, lag) in gone {
            if let Some(entry) = lag_by_id.get_mut(id) {
                entry.0 += 1;
                entry.1 = entry.1.max(lag);
            }
        }
    }
    let lag: Vec<Duration> = lag_by_id
        .into_iter()
        .filter(|(regions, _)| *regions == 2)
        .map(|(_, lag)| lag)
        .collect();
    // a write counts as lost when B or C still held its key after GIVE_UP
    let not_invalidated = keys - lag.len();
    let receivers: Vec<&RegionNode> = regions[1..]
        .iter()
        .flat_map(|region| &region.nodes)
        .collect();
    let node_lag = node_lag_histogram(&receivers, REGIONS[0])?;
    drop(proxies);
    drop(regions);
    Ok(RunResult {
        writes: keys,
        elapsed,
        ack,
        errors,
        lag,
        not_invalidated,
        node_lag,
    })
}

/// The node's own view: `meridian_region_link_lag_seconds` (origin write to
/// local apply, one way) for events from `peer`, summed over `nodes`, as
/// cumulative (upper bound in seconds, count) buckets.
fn node_lag_histogram(nodes: &[&RegionNode], peer: &str) -> Result<Vec<(f64, u64)>> {
    use std::io::{Read, Write};
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for node in nodes {
        let mut stream = std::net::TcpStream::connect((node.ip.as_str(), node.metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            node.ip
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        for line in text.lines().filter(|line| {
            line.starts_with("meridian_region_link_lag_seconds_bucket")
                && line.contains(&format!("\"{peer}\""))
        }) {
            let Some(bound) = line
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
            else {
                continue;
            };
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().unwrap_or(f64::INFINITY)
            };
            let count: u64 = line
                .rsplit(' ')
                .next()
                .and_then(|count| count.parse().ok())
                .unwrap_or(0);
            match buckets.iter_mut().find(|(known, _)| *known == bound) {
                Some(bucket) => bucket.1 += count,
                None => buckets.push((bound, count)),
            }
        }
    }
    buckets.sort_by(|left, right| left.0.total_cmp(&right.0));
    Ok(buckets)
}

/// The bucket bound below which `percent` of the observations fall.
fn bucket_percentile(buckets: &[(f64, u64)], percent: f64) -> String {
    let total = buckets.last().map_or(0, |(_, count)| *count);
    if total == 0 {
        return "-".into();
    }
    let wanted = (total as f64 * percent / 100.0).ceil() as u64;
    match buckets.iter().find(|(_, count)| *count >= wanted) {
        Some((bound, _)) if bound.is_finite() => format!("≤ {:.1} ms", bound * 1000.0),
        _ => "> 30 s".into(),
    }
}

fn percentile(sorted: &[Duration], percent: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((percent / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Pins the calling thread (and the threads it starts later) to `core`.
fn pin_to_core(core: &str) {
    let Ok(core) = core.parse::<usize>() else {
        return;
    };
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub fn run(options: &Options) -> Result<()> {
    let binary = build_node()?;
    let (server_core, client_core) = cores();
    // before pinning: available_parallelism follows the affinity mask
    let machine = machine_description();
    pin_to_core(&client_core);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rtt = Duration::from_millis(options.rtt_ms);
    println!("## Cross-region invalidation lag\n");
    println!("Machine: {machine}\n");
    println!(
        "3 regions × {} primaries (meridian-node --io-threads 1, pinned to core {server_core}); load, pollers and delaying proxies in one process pinned to core {client_core}.",
        options.primaries
    );
    println!(
        "{} SET/s for {} s to region A on keys cached in B and C; lag = SET sent in A → key gone in both B and C (EXISTS polled about every 1 ms per node).\n",
        options.rate, options.seconds
    );
    println!(
        "| consistency | RTT | writes | achieved rate | SET ack p50 | SET ack p99 | lag p50 | lag p99 | lag max | not invalidated | write errors | lag p99 < RTT + 10 ms | node histogram p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for consistency in ["eventual", "strong"] {
        for rtt in [Duration::ZERO, rtt] {
            let mut result = runtime.block_on(run_once(&binary, options, consistency, rtt))?;
            result.ack.sort();
            result.lag.sort();
            let lag_p99 = percentile(&result.lag, 99.0);
            let goal = lag_p99 < rtt + Duration::from_millis(10)
                && result.not_invalidated == 0
                && !result.lag.is_empty();
            println!(
                "| {consistency} | {} ms | {} | {:.0}/s | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                rtt.as_millis(),
                result.writes,
                result.ack.len() as f64 / result.elapsed.as_secs_f64().max(0.001),
                millis(percentile(&result.ack, 50.0)),
                millis(percentile(&result.ack, 99.0)),
                millis(percentile(&result.lag, 50.0)),
                millis(lag_p99),
                millis(result.lag.last().copied().unwrap_or_default()),
                result.not_invalidated,
                result.errors.len(),
                if goal { "yes" } else { "no" },
                bucket_percentile(&result.node_lag, 50.0),
                bucket_percentile(&result.node_lag, 99.0),
            );
            if let Some(error) = result.errors.first() {
                println!("\nfirst write error ({consistency}, RTT {rtt:?}): {error}\n");
            }
        }
    }
    Ok(())
}
