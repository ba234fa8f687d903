//! Hit ratio under memory pressure: Zipf-distributed traces replayed as
//! GET, then SET on a miss (a look-aside cache), against meridian-node's
//! default policy and redis-server's allkeys-lru at the same maxmemory.

use anyhow::{Result, bail};

use super::resp::{Client, Reply};
use super::{Server, build_node, ensure_redis, machine_description};

/// Deterministic xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Zipf(alpha) trace over `universe` keys (rank 0 most popular); ranks are
/// scattered over key ids so popularity is not correlated with insertion order.
fn zipf_trace(universe: usize, length: usize, alpha: f64, seed: u64) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(universe);
    let mut total = 0.0;
    for rank in 1..=universe {
        total += 1.0 / (rank as f64).powf(alpha);
        cdf.push(total);
    }
    let mut rng = Rng(seed | 1);
    (0..length)
        .map(|_| {
            let target = rng.next_f64() * total;
            let rank = cdf
                .partition_point(|&value| value < target)
                .min(universe - 1);
            // scatter ranks over ids with a multiplicative permutation
            ((rank as u64 * 2_654_435_761) % universe as u64) as u32
        })
        .collect()
}

/// Replays the trace; returns (hit ratio, keys resident at the end).
fn replay(port: u16, trace: &[u32], value_size: usize) -> Result<(f64, u64)> {
    let mut client = Client::connect(port)?;
    let value = vec![b'x'; value_size];
    let mut hits = 0usize;
    for batch in trace.chunks(64) {
        let keys: Vec<String> = batch.iter().map(|id| format!("object:{id}")).collect();
        for key in &keys {
            client.queue(&[b"GET", key.as_bytes()]);
        }
        let replies = client.flush()?;
        let mut missed = 0;
        for (key, reply) in keys.iter().zip(replies) {
            match reply {
                Reply::Bulk(Some(_)) => hits += 1,
                Reply::Bulk(None) => {
                    client.queue(&[b"SET", key.as_bytes(), &value]);
                    missed += 1;
                }
                other => bail!("GET failed: {other:?}"),
            }
        }
        if missed > 0 {
            for reply in client.flush()? {
                if let Reply::Error(error) = reply {
                    bail!("SET failed: {error}");
                }
            }
        }
    }
    let Reply::Int(resident) = client.command(&[b"DBSIZE"])? else {
        bail!("DBSIZE failed")
    };
    Ok((hits as f64 / trace.len() as f64, resident as u64))
}

pub fn run(quick: bool) -> Result<()> {
    ensure_redis()?;
    let binary = build_node()?;
    let universe = if quick { 20_000 } else { 100_000 };
    let length = if quick { 200_000 } else { 1_000_000 };
    let value_size = 1024;
    // room for roughly 10% of the objects
    let maxmemory = format!("{}", universe / 10 * (value_size + 100));
    println!("\n## Hit ratio under eviction (Zipf traces, GET then SET on miss)\n");
    println!("Machine: {}\n", machine_description());
    println!(
        "{universe} distinct keys, {length} requests per trace, {value_size}-byte values, maxmemory {maxmemory} bytes (~10% of the data) on both servers.\n"
    );
    println!(
        "| alpha | redis-server allkeys-lru | meridian-node sieve (default) | meridian-node allkeys-lru | keys resident (redis / sieve) |"
    );
    println!("|---|---|---|---|---|");
    for alpha in [0.8, 1.0, 1.2] {
        let trace = zipf_trace(universe, length, alpha, 42);
        let redis = Server::redis(Some(&maxmemory), Some("allkeys-lru"))?;
        let (redis_hits, redis_keys) = replay(redis.port, &trace, value_size)?;
        drop(redis);
        let sieve = Server::meridian(&binary, Some(&maxmemory), None)?;
        let (sieve_hits, sieve_keys) = replay(sieve.port, &trace, value_size)?;
        drop(sieve);
        let lru = Server::meridian(&binary, Some(&maxmemory), Some("allkeys-lru"))?;
        let (lru_hits, _) = replay(lru.port, &trace, value_size)?;
        drop(lru);
        println!(
            "| {alpha} | {:.2}% | {:.2}% | {:.2}% | {redis_keys} / {sieve_keys} |",
            redis_hits * 100.0,
            sieve_hits * 100.0,
            lru_hits * 100.0
        );
    }
    Ok(())
}
