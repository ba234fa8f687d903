//! `cargo xtask bench reshard`: live resharding throughput (issue 17). For each
//! server, two primaries (no replicas); the first owns slots 0-8191 and holds N keys
//! (100-byte values), the second owns the rest and holds none. Slots 0-4095 (about
//! half of the keys) then move to the second while a writer keeps writing keys of the
//! slots that stay. redis-server and valkey-server move them with their own tool,
//! `redis-cli --cluster reshard` (`valkey-cli` for Valkey), at 200 keys per MIGRATE
//! (`--cluster-pipeline 200`); meridian-node the way the operator does: `CLUSTER SETSLOT
//! IMPORTING / MIGRATING` and `MERIDIAN.MIGRATE SLOT … BATCH 200` slot after slot
//! (the operator's batch), then the new map. Reported: keys moved per second and
//! payload megabytes (keys and values) per second, and the writer's requests per
//! second and slowest request meanwhile.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use meridian_topology::{ShardTopology, SlotRange, TopologyMap, cluster_node_id, key_slot};

use super::cluster::{
    cluster_programs, push_map, run_cluster_tool, scratch_dir, spawn_cluster_node,
    spawn_meridian_node,
};
use super::resp::{Client, Reply};
use super::{Binaries, Kind, Server, machine_description, ratio};

const VALUE_BYTES: usize = 100;
/// Keys per MIGRATE for every server: the operator's `MERIDIAN.MIGRATE` batch.
const BATCH: u32 = 200;
/// The first node's slots are 0..=OWNED_LAST; 0..MOVED move.
const OWNED_LAST: u16 = 8191;
const MOVED: u16 = 4096;

/// One server's resharding run.
#[derive(Debug)]
struct Outcome {
    keys_moved: u64,
    payload_bytes: u64,
    elapsed: Duration,
    writer_requests: u64,
    writer_slowest: Duration,
}

impl Outcome {
    fn keys_per_second(&self) -> f64 {
        self.keys_moved as f64 / self.elapsed.as_secs_f64()
    }

    fn megabytes_per_second(&self) -> f64 {
        self.payload_bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

pub fn run(quick: bool) -> Result<()> {
    let binaries = Binaries::prepare()?;
    let keys = if quick { 100_000 } else { 1_000_000 };
    let mut outcomes = Vec::new();
    for kind in Kind::ALL {
        eprintln!(
            "  {}: loading {keys} keys, then moving slots 0-{}",
            kind.name(),
            MOVED - 1
        );
        let outcome = match kind {
            Kind::Meridian => reshard_meridian(&binaries.meridian, keys)?,
            _ => reshard_redis(kind, &binaries, keys)?,
        };
        eprintln!("  {}: {outcome:?}", kind.name());
        outcomes.push((kind, outcome));
    }
    println!("\n## Live resharding\n");
    println!("Machine: {}\n", machine_description());
    println!(
        "Two primaries per server (pinned to core 0), {keys} keys of 100-byte values on the first; \
         slots 0-{} (about half the keys) move to the second while a writer SETs keys of the slots \
         that stay, one request at a time. redis-server / valkey-server: `--cluster reshard \
         --cluster-pipeline {BATCH}`; meridian-node: SETSLOT and `MERIDIAN.MIGRATE SLOT … BATCH {BATCH}` \
         per slot, as the operator drives it.\n",
        MOVED - 1
    );
    println!(
        "| server | keys moved | seconds | keys/s | MB/s (keys + values) | writer requests/s | writer slowest |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (kind, outcome) in &outcomes {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} | {:.0} | {:.1} ms |",
            kind.name(),
            outcome.keys_moved,
            outcome.elapsed.as_secs_f64(),
            outcome.keys_per_second(),
            outcome.megabytes_per_second(),
            outcome.writer_requests as f64 / outcome.elapsed.as_secs_f64(),
            outcome.writer_slowest.as_secs_f64() * 1e3,
        );
    }
    let rate = |wanted: Kind| {
        outcomes
            .iter()
            .find(|(kind, _)| *kind == wanted)
            .map_or(0.0, |(_, outcome)| outcome.keys_per_second())
    };
    println!(
        "\nkeys/s: meridian / redis {}, meridian / valkey {}",
        ratio(rate(Kind::Meridian), rate(Kind::Redis)),
        ratio(rate(Kind::Meridian), rate(Kind::Valkey))
    );
    Ok(())
}

/// `count` keys whose slots lie in `slots`, in a stable order.
fn keys_in(slots: std::ops::RangeInclusive<u16>, count: usize, prefix: &str) -> Vec<String> {
    (0u64..)
        .map(|n| format!("{prefix}:{n:09}"))
        .filter(|key| slots.contains(&key_slot(key.as_bytes())))
        .take(count)
        .collect()
}

/// SETs `count` keys of the first node's slots, 1000 per pipeline; returns the
/// payload bytes (keys and values) of those in the slots that will move.
fn load(port: u16, count: usize) -> Result<u64> {
    let value = vec![b'v'; VALUE_BYTES];
    let keys = keys_in(0..=OWNED_LAST, count, "object");
    let mut client = Client::connect(port)?;
    for chunk in keys.chunks(1000) {
        for key in chunk {
            client.queue(&[b"SET", key.as_bytes(), &value]);
        }
        for reply in client.flush()? {
            if reply != Reply::Status("OK".into()) {
                bail!("loading port {port}: {reply:?}");
            }
        }
    }
    Ok(keys
        .iter()
        .filter(|key| key_slot(key.as_bytes()) < MOVED)
        .map(|key| (key.len() + VALUE_BYTES) as u64)
        .sum())
}

/// A client writing keys of the slots that stay until stopped: requests done and
/// the slowest one.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(u64, Duration)>>,
}

impl Writer {
    fn start(port: u16) -> Result<Writer> {
        let keys = keys_in(MOVED..=OWNED_LAST, 10_000, "written");
        let mut client = Client::connect(port)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut requests, mut slowest) = (0u64, Duration::ZERO);
            while !stopped.load(Ordering::Relaxed) {
                let key = &keys[requests as usize % keys.len()];
                let began = Instant::now();
                let reply = client.command(&[b"SET", key.as_bytes(), b"written"])?;
                slowest = slowest.max(began.elapsed());
                if reply != Reply::Status("OK".into()) {
                    bail!("writer: SET {key}: {reply:?}");
                }
                requests += 1;
            }
            Ok((requests, slowest))
        });
        Ok(Writer { stop, thread })
    }

    fn finish(self) -> Result<(u64, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
    }
}

fn dbsize(port: u16) -> Result<u64> {
    match Client::connect(port)?.command(&[b"DBSIZE"])? {
        Reply::Int(count) => Ok(count as u64),
        other => bail!("DBSIZE on {port}: {other:?}"),
    }
}

fn ok(port: u16, args: &[&[u8]]) -> Result<()> {
    let reply = Client::connect(port)?.command(args)?;
    if reply != Reply::Status("OK".into()) {
        bail!(
            "{} on {port}: {reply:?}",
            String::from_utf8_lossy(&args.join(&b' '))
        );
    }
    Ok(())
}

/// Runs the writer around `reshard` and measures it.
fn measured(
    source: u16,
    destination: u16,
    payload_bytes: u64,
    reshard: impl FnOnce() -> Result<()>,
) -> Result<Outcome> {
    let before = dbsize(destination)?;
    let writer = Writer::start(source)?;
    // the writer is under way before the first slot moves
    std::thread::sleep(Duration::from_millis(200));
    let began = Instant::now();
    reshard()?;
    let elapsed = began.elapsed();
    let (writer_requests, writer_slowest) = writer.finish()?;
    Ok(Outcome {
        keys_moved: dbsize(destination)? - before,
        payload_bytes,
        elapsed,
        writer_requests,
        writer_slowest,
    })
}

fn reshard_redis(kind: Kind, binaries: &Binaries, keys: usize) -> Result<Outcome> {
    let (program, cli) = cluster_programs(kind, binaries);
    let scratch = scratch_dir("reshard", kind)?;
    let result = (|| {
        let source = spawn_cluster_node(kind, &program, &scratch)?;
        let destination = spawn_cluster_node(kind, &program, &scratch)?;
        let (a, b) = (source.port, destination.port);
        ok(a, &[b"CLUSTER", b"ADDSLOTSRANGE", b"0", b"8191"])?;
        ok(b, &[b"CLUSTER", b"ADDSLOTSRANGE", b"8192", b"16383"])?;
        ok(
            a,
            &[b"CLUSTER", b"MEET", b"127.0.0.1", b.to_string().as_bytes()],
        )?;
        wait_cluster_ok(&[a, b])?;
        let payload = load(a, keys)?;
        let (id_a, id_b) = (my_id(a)?, my_id(b)?);
        measured(a, b, payload, || {
            let source = format!("127.0.0.1:{a}");
            let args = [
                source.as_str(),
                "--cluster-from",
                &id_a,
                "--cluster-to",
                &id_b,
                "--cluster-slots",
                &MOVED.to_string(),
                "--cluster-yes",
                "--cluster-pipeline",
                &BATCH.to_string(),
            ];
            run_cluster_tool(&cli, "reshard", args.map(String::from))
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn my_id(port: u16) -> Result<String> {
    match Client::connect(port)?.command(&[b"CLUSTER", b"MYID"])? {
        Reply::Bulk(Some(id)) => Ok(String::from_utf8_lossy(&id).into_owned()),
        other => bail!("CLUSTER MYID on {port}: {other:?}"),
    }
}

/// Waits until every node reports `cluster_state:ok` and knows both nodes.
fn wait_cluster_ok(ports: &[u16]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for &port in ports {
        loop {
            let mut client = Client::connect(port)?;
            let info = client.command(&[b"CLUSTER", b"INFO"])?;
            let Reply::Bulk(Some(info)) = info else {
                bail!("CLUSTER INFO on {port}: {info:?}");
            };
            let info = String::from_utf8_lossy(&info);
            if info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{}", ports.len()))
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("cluster not ok on {port}: {info}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn map(
    epoch: u64,
    first: Vec<SlotRange>,
    second: Vec<SlotRange>,
    addrs: &[meridian_topology::NodeAddr],
) -> TopologyMap {
    TopologyMap {
        epoch,
        cluster: "bench".into(),
        region: "local".into(),
        shards: [first, second]
            .into_iter()
            .zip(addrs)
            .enumerate()
            .map(|(index, (slots, primary))| ShardTopology {
                index: index as u32,
                slots,
                primary: primary.clone(),
                replicas: Vec::new(),
            })
            .collect(),
    }
}

/// `CLUSTER SETSLOT <slot> <state> <node id>`.
fn setslot<'x>(slot: &'x str, state: &'x [u8], id: &'x str) -> [&'x [u8]; 5] {
    [
        b"CLUSTER",
        b"SETSLOT",
        slot.as_bytes(),
        state,
        id.as_bytes(),
    ]
}

fn reshard_meridian(binary: &Path, keys: usize) -> Result<Outcome> {
    let (source, a) = spawn_meridian_node(binary, "shard-0-0")?;
    let (destination, b) = spawn_meridian_node(binary, "shard-1-0")?;
    let addrs = [a.clone(), b.clone()];
    let servers: [Server; 2] = [source, destination];
    let range = |start, end| SlotRange { start, end };
    push_map(
        &servers,
        &map(
            1,
            vec![range(0, OWNED_LAST)],
            vec![range(OWNED_LAST + 1, 16383)],
            &addrs,
        ),
    )?;
    let payload = load(a.port, keys)?;
    let (id_a, id_b) = (cluster_node_id(&a.id), cluster_node_id(&b.id));
    let port_b = b.port.to_string();
    measured(a.port, b.port, payload, || {
        let mut source = Client::connect(a.port)?;
        let mut destination = Client::connect(b.port)?;
        for slot in 0..MOVED {
            let slot = slot.to_string();
            let steps = [
                (&mut destination, setslot(&slot, b"IMPORTING", &id_a)),
                (&mut source, setslot(&slot, b"MIGRATING", &id_b)),
            ];
            for (client, args) in steps {
                let reply = client.command(&args)?;
                if reply != Reply::Status("OK".into()) {
                    bail!("SETSLOT {slot}: {reply:?}");
                }
            }
            let batch = BATCH.to_string();
            let moved = source.command(&[
                b"MERIDIAN.MIGRATE",
                b"SLOT",
                slot.as_bytes(),
                b"127.0.0.1",
                port_b.as_bytes(),
                b"BATCH",
                batch.as_bytes(),
            ])?;
            if !matches!(moved, Reply::Int(_)) {
                bail!("MERIDIAN.MIGRATE SLOT {slot}: {moved:?}");
            }
        }
        push_map(
            &servers,
            &map(
                2,
                vec![range(MOVED, OWNED_LAST)],
                vec![range(0, MOVED - 1), range(OWNED_LAST + 1, 16383)],
                &addrs,
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fall_in_the_slots_asked_for() {
        let keys = keys_in(MOVED..=OWNED_LAST, 500, "written");
        assert_eq!(keys.len(), 500);
        assert!(
            keys.iter()
                .all(|key| (MOVED..=OWNED_LAST).contains(&key_slot(key.as_bytes())))
        );
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), 500);
    }
}
