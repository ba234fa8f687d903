//! Throughput (redis-benchmark) and memory-per-key comparisons.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::resp::{Client, Reply};
use super::{Server, build_node, cores, ensure_redis, machine_description};

/// Runs redis-benchmark pinned to the client core; returns ops/s per test.
fn redis_benchmark(port: u16, pipeline: u32, requests: u32) -> Result<Vec<(String, f64)>> {
    let (_, client_core) = cores();
    let output = Command::new("taskset")
        .args([
            "-c",
            &client_core,
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args([
            "-t",
            "set,get",
            "-n",
            &requests.to_string(),
            "-c",
            "50",
            "-r",
            "100000",
            "-d",
            "64",
        ])
        .args(["-P", &pipeline.to_string(), "--csv"])
        .output()
        .context("run redis-benchmark")?;
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut results = Vec::new();
    for line in text.lines().skip(1) {
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

pub fn throughput(quick: bool) -> Result<()> {
    ensure_redis()?;
    let binary = build_node()?;
    let rounds = if quick { 1 } else { 3 };
    println!("## meridian-node vs redis-server: GET/SET throughput\n");
    println!("Machine: {}\n", machine_description());
    println!(
        "Server pinned to core 0 (meridian-node with --io-threads 1), redis-benchmark pinned to core 1;"
    );
    println!(
        "`redis-benchmark -t set,get -n N -c 50 -r 100000 -d 64 -P <p> --csv`, median of {rounds} rounds.\n"
    );
    println!("| test | pipeline | redis-server ops/s | meridian-node ops/s | ratio |");
    println!("|---|---|---|---|---|");
    for pipeline in [1u32, 16] {
        let requests = match (quick, pipeline) {
            (true, 1) => 50_000,
            (true, _) => 500_000,
            (false, 1) => 200_000,
            (false, _) => 2_000_000,
        };
        let mut redis_runs: Vec<Vec<(String, f64)>> = Vec::new();
        let mut meridian_runs: Vec<Vec<(String, f64)>> = Vec::new();
        for _ in 0..rounds {
            // alternate servers so background noise hits both alike
            let redis = Server::redis(None, None)?;
            redis_runs.push(redis_benchmark(redis.port, pipeline, requests)?);
            drop(redis);
            let meridian = Server::meridian(&binary, None, None)?;
            meridian_runs.push(redis_benchmark(meridian.port, pipeline, requests)?);
        }
        super::print_set_get_rows(pipeline, &redis_runs, &meridian_runs);
    }
    Ok(())
}

/// Loads `keys` entries with 64-byte keys and 1 KiB values; returns (used_memory, rss) growth per key.
fn load_and_measure(port: u16, keys: u64) -> Result<(f64, f64)> {
    let mut client = Client::connect(port)?;
    let used_before = client.info_field("memory", "used_memory")?;
    let rss_before = client.info_field("memory", "used_memory_rss")?;
    let value = vec![b'v'; 1024];
    let mut index = 0u64;
    while index < keys {
        let batch_end = (index + 1000).min(keys);
        for key in index..batch_end {
            let key = format!("key:{key:060}");
            client.queue(&[b"SET", key.as_bytes(), &value]);
        }
        for reply in client.flush()? {
            if reply != Reply::Status("OK".into()) {
                bail!("SET failed: {reply:?}");
            }
        }
        index = batch_end;
    }
    let used_after = client.info_field("memory", "used_memory")?;
    let rss_after = client.info_field("memory", "used_memory_rss")?;
    Ok((
        used_after.saturating_sub(used_before) as f64 / keys as f64,
        rss_after.saturating_sub(rss_before) as f64 / keys as f64,
    ))
}

pub fn memory(quick: bool) -> Result<()> {
    ensure_redis()?;
    let binary = build_node()?;
    let keys = if quick { 100_000 } else { 1_000_000 };
    println!("\n## Memory per key: {keys} keys, 64-byte keys, 1 KiB values\n");
    println!("| server | used_memory / key | RSS growth / key |");
    println!("|---|---|---|");
    let redis = Server::redis(None, None)?;
    let (redis_used, redis_rss) = load_and_measure(redis.port, keys)?;
    drop(redis);
    println!("| redis-server | {redis_used:.0} B | {redis_rss:.0} B |");
    let meridian = Server::meridian(&binary, None, None)?;
    let (meridian_used, meridian_rss) = load_and_measure(meridian.port, keys)?;
    drop(meridian);
    println!("| meridian-node | {meridian_used:.0} B | {meridian_rss:.0} B |");
    println!(
        "\nratio (meridian / redis): used_memory {:.2}x, RSS {:.2}x",
        meridian_used / redis_used.max(1.0),
        meridian_rss / redis_rss.max(1.0)
    );
    Ok(())
}
