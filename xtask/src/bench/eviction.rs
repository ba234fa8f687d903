//! Hit ratio under memory pressure: Zipf-distributed traces replayed as
//! GET, then SET on a miss (a look-aside cache), against meridian-node's
//! default policy (SIEVE) and the LRU and LFU policies of valkey-server and
//! redis-server, all at the same maxmemory and on the same traces.

use anyhow::{Result, bail};

use super::resp::{Client, Reply};
use super::{Binaries, Kind, Options, Server, machine_description};

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

/// Zipf(alpha) over ranks 0..n (rank 0 most popular: P(rank k) ∝ 1/(k+1)^alpha),
/// sampled by binary search in the cumulative weights.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(universe: usize, alpha: f64) -> Zipf {
        let mut total = 0.0;
        let cdf = (1..=universe.max(1))
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(alpha);
                total
            })
            .collect();
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cdf.last().copied().unwrap_or(0.0);
        let target = rng.next_f64() * total;
        self.cdf
            .partition_point(|&value| value < target)
            .min(self.cdf.len() - 1)
    }
}

/// A Zipf(alpha) trace over `universe` keys; ranks are scattered over key ids
/// so popularity is not correlated with insertion order.
fn zipf_trace(universe: usize, length: usize, alpha: f64, seed: u64) -> Vec<u32> {
    let zipf = Zipf::new(universe, alpha);
    let mut rng = Rng(seed | 1);
    (0..length)
        .map(|_| {
            let rank = zipf.sample(&mut rng);
            // a multiplicative permutation (2654435761 is prime, so coprime to the universe
            // unless the universe is a multiple of it)
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

/// The server/policy pairs compared; None is meridian-node's default (sieve).
const POLICIES: [(Kind, Option<&str>); 6] = [
    (Kind::Meridian, None),
    (Kind::Meridian, Some("allkeys-lru")),
    (Kind::Valkey, Some("allkeys-lru")),
    (Kind::Valkey, Some("allkeys-lfu")),
    (Kind::Redis, Some("allkeys-lru")),
    (Kind::Redis, Some("allkeys-lfu")),
];

/// The memory budgets every trace is replayed at, in MiB: 10mb holds every key the
/// alpha 1.2 trace touches when values are small (nothing is evicted there, so every
/// policy scores the compulsory misses alone); 4mb makes that trace evict too.
const MAXMEMORY_MIB: [u64; 2] = [10, 4];

/// How many distinct keys a trace touches.
fn distinct_keys(trace: &[u32]) -> usize {
    let mut ids = trace.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// One trace's result for the closing comparison.
struct Compared {
    maxmemory_mib: u64,
    value_size: usize,
    alpha: f64,
    meridian_default: f64,
    best_valkey: Option<(f64, &'static str)>,
    /// Every key the trace touches stayed resident on meridian-node: nothing was
    /// evicted, and no policy can score more than the compulsory misses allow.
    nothing_evicted: bool,
}

pub fn run(quick: bool) -> Result<()> {
    let binaries = Binaries::prepare()?;
    let universe = 100_000;
    let length = if quick { 100_000 } else { 1_000_000 };
    let seed = 42;
    println!("\n## Hit ratio under eviction (Zipf traces, GET then SET on miss)\n");
    println!("Machine: {}\n", machine_description());
    println!(
        "{universe} distinct keys (`object:<id>`), {length} requests per trace (seed {seed}, the \
         same trace for every server), batches of 64 GETs then SETs of the misses, the same \
         maxmemory on every server (10mb, then 4mb; MiB as all three read it). RSS: VmRSS of \
         the server's process once it answers and after the trace (what maxmemory leaves \
         out differs: Valkey and redis-server count their startup allocations in \
         used_memory).\n"
    );
    println!(
        "| maxmemory | value size | alpha | server | policy | hit ratio | keys resident | RSS at start | RSS at end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // each trace once, replayed at every budget and value size
    let traces: Vec<(f64, Vec<u32>, usize)> = [0.8, 1.0, 1.2]
        .into_iter()
        .map(|alpha| {
            let trace = zipf_trace(universe, length, alpha, seed);
            let touched = distinct_keys(&trace);
            (alpha, trace, touched)
        })
        .collect();
    let mut summary = Vec::new();
    for maxmemory_mib in MAXMEMORY_MIB {
        let maxmemory = (maxmemory_mib << 20).to_string();
        for value_size in [100usize, 1024] {
            for (alpha, trace, touched) in &traces {
                let (alpha, touched) = (*alpha, *touched);
                let mut compared = Compared {
                    maxmemory_mib,
                    value_size,
                    alpha,
                    meridian_default: 0.0,
                    best_valkey: None,
                    nothing_evicted: false,
                };
                for (kind, policy) in POLICIES {
                    let server = Server::start(
                        kind,
                        &binaries,
                        &Options {
                            maxmemory: Some(maxmemory.clone()),
                            policy: policy.map(String::from),
                            ..Options::default()
                        },
                    )?;
                    let rss_at_start = server.rss_bytes()?;
                    let (hits, resident) = replay(server.port, trace, value_size)?;
                    let rss_at_end = server.rss_bytes()?;
                    drop(server);
                    let label = policy.unwrap_or("sieve (default)");
                    println!(
                        "| {maxmemory_mib}mb | {value_size} B | {alpha:.1} | {} | {label} | {:.2}% | {resident} | {:.1} MiB | {:.1} MiB |",
                        kind.name(),
                        hits * 100.0,
                        mib(rss_at_start),
                        mib(rss_at_end)
                    );
                    match kind {
                        Kind::Meridian if policy.is_none() => {
                            compared.meridian_default = hits;
                            compared.nothing_evicted = resident as usize >= touched;
                        }
                        Kind::Valkey
                            if compared.best_valkey.is_none_or(|(best, _)| hits > best) =>
                        {
                            compared.best_valkey = Some((hits, label));
                        }
                        _ => {}
                    }
                }
                summary.push(compared);
            }
        }
    }
    println!(
        "\n| maxmemory | value size | alpha | meridian-node sieve (default) | valkey-server best policy | difference |"
    );
    println!("|---|---|---|---|---|---|");
    for compared in summary {
        let (valkey, policy) = compared.best_valkey.unwrap_or((0.0, "none"));
        let note = if compared.nothing_evicted {
            " (every key of the trace fits: only compulsory misses)"
        } else {
            ""
        };
        println!(
            "| {}mb | {} B | {:.1} | {:.2}% | {:.2}% ({policy}) | {:+.2} points{note} |",
            compared.maxmemory_mib,
            compared.value_size,
            compared.alpha,
            compared.meridian_default * 100.0,
            valkey * 100.0,
            (compared.meridian_default - valkey) * 100.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_unit_interval() {
        let mut a = Rng(43);
        let mut b = Rng(43);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn zipf_frequencies_follow_the_weights() {
        let (universe, alpha) = (1000, 1.0);
        let zipf = Zipf::new(universe, alpha);
        let mut rng = Rng(7);
        let draws = 200_000;
        let mut counts = vec![0usize; universe];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        let harmonic: f64 = (1..=universe).map(|k| 1.0 / k as f64).sum();
        for rank in [0usize, 1, 9] {
            let expected = draws as f64 / ((rank + 1) as f64 * harmonic);
            let observed = counts[rank] as f64;
            assert!(
                (observed - expected).abs() < expected * 0.05,
                "rank {rank}: {observed} vs {expected}"
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[999]);
    }

    #[test]
    fn zipf_of_one_key_and_alpha_zero() {
        let mut rng = Rng(3);
        assert_eq!(Zipf::new(1, 1.2).sample(&mut rng), 0);
        // alpha 0 is uniform
        let uniform = Zipf::new(4, 0.0);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[uniform.sample(&mut rng)] += 1;
        }
        assert!(counts.iter().all(|&count| (9_000..11_000).contains(&count)));
    }

    #[test]
    fn distinct_keys_counts_each_id_once() {
        assert_eq!(distinct_keys(&[]), 0);
        assert_eq!(distinct_keys(&[5, 1, 5, 5, 2, 1]), 3);
    }

    #[test]
    fn trace_is_reproducible_and_in_range() {
        let first = zipf_trace(100_000, 10_000, 0.8, 42);
        assert!(first == zipf_trace(100_000, 10_000, 0.8, 42));
        // the generator's state is `seed | 1`: 42 and 43 are the same trace, 44 is not
        assert!(first != zipf_trace(100_000, 10_000, 0.8, 44));
        assert!(first.iter().all(|&id| id < 100_000));
        // the most popular rank maps to id 0, the second to a scattered id
        let skewed = zipf_trace(100_000, 10_000, 1.2, 42);
        let zeros = skewed.iter().filter(|&&id| id == 0).count();
        assert!(zeros > 1000, "rank 0 drawn {zeros} times");
    }
}
