//! Throughput (redis-benchmark) and memory-per-key comparisons of meridian-node
//! with redis-server and valkey-server.

use std::collections::HashMap;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::resp::{Client, Reply};
use super::{Binaries, Kind, Options, Server, cores, machine_description, median, ratio};

/// A redis-benchmark test: its `-t` name and the name its CSV line carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Test {
    name: &'static str,
    csv: &'static str,
}

/// The string tests, each its own redis-benchmark run so its server CPU time is its own.
const STRING_TESTS: [Test; 2] = [
    Test {
        name: "set",
        csv: "SET",
    },
    Test {
        name: "get",
        csv: "GET",
    },
];

/// `--lists`: redis-benchmark's list tests. LRANGE_100's run starts with redis-benchmark's
/// own LPUSH fill of the list, whose CPU time its per-CPU figure includes (for every server).
const LIST_TESTS: [Test; 5] = [
    Test {
        name: "lpush",
        csv: "LPUSH",
    },
    Test {
        name: "rpush",
        csv: "RPUSH",
    },
    Test {
        name: "lpop",
        csv: "LPOP",
    },
    Test {
        name: "rpop",
        csv: "RPOP",
    },
    Test {
        name: "lrange_100",
        csv: "LRANGE_100 (first 100 elements)",
    },
];

/// `--types`: redis-benchmark's set, sorted set, longer range and MSET tests, and an
/// EVALSHA of a small script (a counter with a TTL, as rate limiters do). SPOP and
/// ZPOPMIN run after SADD and ZADD filled their keys on the same server.
const TYPE_TESTS: [Test; 7] = [
    Test {
        name: "sadd",
        csv: "SADD",
    },
    Test {
        name: "spop",
        csv: "SPOP",
    },
    Test {
        name: "zadd",
        csv: "ZADD",
    },
    Test {
        name: "zpopmin",
        csv: "ZPOPMIN",
    },
    Test {
        name: "lrange_600",
        csv: "LRANGE_600 (first 600 elements)",
    },
    Test {
        name: "mset",
        csv: "MSET (10 keys)",
    },
    Test {
        name: EVALSHA,
        csv: "EVALSHA",
    },
];

/// The `-t` name of the EVALSHA test, which runs [`SCRIPT`] as a custom command.
const EVALSHA: &str = "evalsha";

/// The script of the EVALSHA test.
const SCRIPT: &str = "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end return n";

/// The arguments of a test: `-t <name>`, or for EVALSHA the command itself (the script
/// loaded into the server first).
fn test_args(server: &Server, test: Test) -> Result<Vec<String>> {
    if test.name != EVALSHA {
        return Ok(vec!["-t".into(), test.name.into()]);
    }
    let mut client = Client::connect(server.port)?;
    let sha = match client.command(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()])? {
        Reply::Bulk(Some(sha)) => String::from_utf8(sha).context("script sha")?,
        other => bail!("SCRIPT LOAD answered {other:?}"),
    };
    Ok(vec![
        "evalsha".into(),
        sha,
        "1".into(),
        "rate:__rand_int__".into(),
    ])
}

/// One redis-benchmark run of one test against one server.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Requests per second of wall-clock time, as redis-benchmark reports it.
    ops: f64,
    /// Requests per second of the server's CPU time (see `CpuReading`).
    per_cpu_second: f64,
}

/// Runs `redis-benchmark -t <test>` (with one I/O thread pinned to the client core, else
/// with `--threads <threads>`) and reads the server's CPU time before and after it.
fn redis_benchmark(
    server: &Server,
    test: Test,
    pipeline: u32,
    requests: u32,
    threads: usize,
) -> Result<Sample> {
    let mut command = benchmark_command(server, test, pipeline, requests, threads)?;
    let cpu_before = server.cpu()?;
    let output = command.output().context("run redis-benchmark")?;
    let cpu = server.cpu()?.since(&cpu_before);
    sample_of(test, &output, requests, cpu)
}

/// The redis-benchmark command of one test against one server: pinned to the client core
/// with one client thread when `threads` is 1, else unpinned with `--threads <threads>`.
fn benchmark_command(
    server: &Server,
    test: Test,
    pipeline: u32,
    requests: u32,
    threads: usize,
) -> Result<Command> {
    let (_, client_core) = cores();
    let mut command = if threads == 1 {
        let mut command = Command::new("taskset");
        command.args(["-c", &client_core, "redis-benchmark"]);
        command
    } else {
        // as many client threads as the servers may use: one would be the limit at -P 1
        let mut command = Command::new("redis-benchmark");
        command.args(["--threads", &threads.to_string()]);
        command
    };
    command
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-n", &requests.to_string()])
        .args(["-c", "50", "-r", "100000", "-d", "64"])
        .args(["-P", &pipeline.to_string(), "--csv"])
        .args(test_args(server, test)?);
    Ok(command)
}

/// A finished redis-benchmark run's sample: its ops/s from the CSV and `requests` over the
/// server CPU seconds it took.
fn sample_of(test: Test, output: &std::process::Output, requests: u32, cpu: f64) -> Result<Sample> {
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // a custom command's line is named by the command itself
    let csv_name = if test.name == EVALSHA {
        text.lines()
            .nth(1)
            .and_then(|line| line.split(',').next())
            .map_or(String::new(), |name| name.trim_matches('"').to_string())
    } else {
        test.csv.to_string()
    };
    let ops =
        parse_csv_rps(&text, &csv_name).with_context(|| format!("no {} in {text:?}", test.csv))?;
    Ok(Sample {
        ops,
        per_cpu_second: if cpu > 0.0 {
            f64::from(requests) / cpu
        } else {
            0.0
        },
    })
}

/// The requests per second of `test` from `redis-benchmark --csv` output
/// (`"test","rps",...` header, then one quoted line per test).
fn parse_csv_rps(text: &str, test: &str) -> Option<f64> {
    text.lines().skip(1).find_map(|line| {
        let mut fields = line.split(',').map(|field| field.trim_matches('"'));
        (fields.next()? == test).then_some(())?;
        fields.next()?.parse().ok()
    })
}

/// `bench node [--threads N]` settings.
pub struct NodeOptions {
    pub quick: bool,
    /// 1: every server on one pinned core; more: unpinned, `--io-threads N`.
    pub threads: usize,
    /// `--lists`: redis-benchmark's list tests instead of SET and GET.
    pub lists: bool,
    /// `--types`: sets, sorted sets, LRANGE_600, MSET and EVALSHA instead.
    pub types: bool,
    /// `--side-by-side`: the three servers run at once on the server core, each round's
    /// three redis-benchmarks at once on the client core; only CPU per request is compared.
    pub side_by_side: bool,
}

impl NodeOptions {
    pub fn parse(args: &[String], quick: bool) -> Result<NodeOptions> {
        let mut threads = 1;
        let mut lists = false;
        let mut types = false;
        let mut side_by_side = false;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--quick" => {}
                "--lists" => lists = true,
                "--types" => types = true,
                "--side-by-side" => side_by_side = true,
                "--threads" => {
                    threads = iter
                        .next()
                        .context("--threads needs a number")?
                        .parse()
                        .context("--threads")?;
                }
                other => bail!("unknown option {other} for bench node"),
            }
        }
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        if lists && types {
            bail!("--lists and --types are separate runs: pick one");
        }
        if side_by_side && threads != 1 {
            bail!("--side-by-side shares one server core among the three servers: drop --threads");
        }
        Ok(NodeOptions {
            quick,
            threads,
            lists,
            types,
            side_by_side,
        })
    }

    fn tests(&self) -> &'static [Test] {
        if self.lists {
            &LIST_TESTS
        } else if self.types {
            &TYPE_TESTS
        } else {
            &STRING_TESTS
        }
    }
}

/// The pipeline depths every throughput run measures.
const PIPELINES: &[u32] = &[1, 16];

/// The report's title (`what`: its end, `{}` standing for the tests' names) and machine.
fn print_heading(tests: &[Test], what: &str) {
    let names: Vec<&str> = tests.iter().map(|test| test.csv).collect();
    let what = what.replace("{}", &names.join(", "));
    println!("## meridian-node vs redis-server vs valkey-server{what}\n");
    println!("Machine: {}\n", machine_description());
}

/// A throughput table's title and column heads.
fn print_table_head(title: &str) {
    println!("\n### {title}\n");
    println!(
        "| test | pipeline | redis-server | valkey-server | meridian-node | meridian / redis | meridian / valkey |"
    );
    println!("|---|---|---|---|---|---|---|");
}

/// Requests per redis-benchmark run.
fn request_count(quick: bool, pipeline: u32) -> u32 {
    match (quick, pipeline) {
        (true, 1) => 50_000,
        (true, _) => 500_000,
        (false, 1) => 200_000,
        (false, _) => 2_000_000,
    }
}

pub fn throughput(options: &NodeOptions) -> Result<()> {
    let binaries = Binaries::prepare()?;
    if options.side_by_side {
        return side_by_side(options, &binaries);
    }
    let quick = options.quick;
    let threads = options.threads;
    let pinned = threads == 1;
    let rounds = if quick { 1 } else { 3 };
    // -P 1 unpinned too: there the I/O threads' wake-ups cost the most
    let pipelines = PIPELINES;
    let tests = options.tests();
    print_heading(tests, ": {} throughput");
    if pinned {
        println!(
            "Each server pinned to core 0 with one I/O thread (`--io-threads 1`; redis-server and \
             valkey-server with `--save '' --appendonly no`), redis-benchmark pinned to core 1."
        );
    } else {
        println!(
            "meridian-node and valkey-server with `--io-threads {threads}`, redis-server with its \
             default single I/O thread (no persistence for either), NOT pinned: servers and \
             redis-benchmark (`--threads {threads}`) share all cores, so the load generator \
             competes with the server's threads."
        );
    }
    println!(
        "`redis-benchmark -t <test> -n N -c 50 -r 100000 -d 64 -P <p> --csv`, each test a \
         separate run on the same server; median of {rounds} rounds, servers alternating. \
         Per CPU second = requests / server CPU time during that run (its threads' run time in ns, /proc/<pid>/task/*/schedstat; utime+stime in 10 ms ticks from /proc/<pid>/stat if a thread ended).\n"
    );
    let mut samples: HashMap<(Kind, Test, u32), Vec<Sample>> = HashMap::new();
    for &pipeline in pipelines {
        let requests = request_count(quick, pipeline);
        for round in 0..rounds {
            // alternate servers (and who goes first) so background noise hits all alike
            for offset in 0..Kind::ALL.len() {
                let kind = Kind::ALL[(round + offset) % Kind::ALL.len()];
                let server = Server::start(
                    kind,
                    &binaries,
                    &Options {
                        // redis-server's I/O threads offload only socket writes by default and spin
                        // while active: the comparison is with its usual single thread
                        io_threads: if kind == Kind::Redis { 1 } else { threads },
                        unpinned: !pinned,
                        ..Options::default()
                    },
                )?;
                for &test in tests {
                    let sample = redis_benchmark(&server, test, pipeline, requests, threads)?;
                    eprintln!(
                        "  round {} {} {} -P {pipeline}: {:.0} ops/s, {:.0} per CPU second",
                        round + 1,
                        kind.name(),
                        test.csv,
                        sample.ops,
                        sample.per_cpu_second
                    );
                    samples
                        .entry((kind, test, pipeline))
                        .or_default()
                        .push(sample);
                }
            }
        }
    }
    let titles = [
        "Requests per second (wall clock)",
        "Requests per second of server CPU time",
    ];
    for (metric, title) in titles.into_iter().enumerate() {
        // the median over the rounds of one metric (0: ops/s, 1: per CPU second)
        let pick = |kind: Kind, test: Test, pipeline: u32| {
            let runs = samples
                .get(&(kind, test, pipeline))
                .map_or(&[][..], Vec::as_slice);
            median(
                runs.iter()
                    .map(|sample| match metric {
                        0 => sample.ops,
                        _ => sample.per_cpu_second,
                    })
                    .collect(),
            )
        };
        print_table_head(title);
        for &pipeline in pipelines {
            for &test in tests {
                let redis = pick(Kind::Redis, test, pipeline);
                let valkey = pick(Kind::Valkey, test, pipeline);
                let meridian = pick(Kind::Meridian, test, pipeline);
                println!(
                    "| {} | {pipeline} | {redis:.0} | {valkey:.0} | {meridian:.0} | {} | {} |",
                    test.csv,
                    ratio(meridian, redis),
                    ratio(meridian, valkey)
                );
            }
        }
    }
    Ok(())
}

/// `bench node --side-by-side`: the servers' CPU per request measured at the same time.
///
/// Run one after another, each server meets different background load, and one round of
/// a quick run is a fraction of a second of CPU: a busy neighbour moves a ratio by 10-15%.
/// Here the three servers share the server core and their three redis-benchmarks the
/// client core for the same seconds, so noise falls on all of them alike. Only requests
/// per CPU second mean anything (the servers' wall-clock rates depend on how the
/// scheduler shares the core); the ratios are the medians of each round's own ratios.
fn side_by_side(options: &NodeOptions, binaries: &Binaries) -> Result<()> {
    let quick = options.quick;
    let rounds = if quick { 3 } else { 5 };
    let pipelines = PIPELINES;
    let tests = options.tests();
    print_heading(tests, " side by side: {} CPU per request");
    println!(
        "The three servers at once, pinned to core 0 with one I/O thread each (`--io-threads 1`; \
         redis-server and valkey-server with `--save '' --appendonly no`); for each test their \
         three `redis-benchmark -t <test> -n N -c 50 -r 100000 -d 64 -P <p> --csv` at once, \
         pinned to core 1. Requests per server CPU second (the threads' run time in ns, /proc/<pid>/task/*/schedstat); \
         ratios are medians of the {rounds} rounds' own ratios, fresh servers every round.\n"
    );
    // per (kind, test, pipeline): one requests-per-CPU-second figure per round
    let mut rates: HashMap<(Kind, Test, u32), Vec<f64>> = HashMap::new();
    for &pipeline in pipelines {
        let requests = request_count(quick, pipeline);
        for round in 0..rounds {
            let servers = Kind::ALL
                .iter()
                .map(|&kind| {
                    let server = Server::start(
                        kind,
                        binaries,
                        &Options {
                            io_threads: 1,
                            ..Options::default()
                        },
                    )?;
                    Ok((kind, server))
                })
                .collect::<Result<Vec<_>>>()?;
            for &test in tests {
                let mut commands = Vec::new();
                for (_, server) in &servers {
                    commands.push(benchmark_command(server, test, pipeline, requests, 1)?);
                }
                let cpu_before = servers
                    .iter()
                    .map(|(_, server)| server.cpu())
                    .collect::<Result<Vec<_>>>()?;
                let children = commands
                    .iter_mut()
                    .map(|command| {
                        command
                            .stdout(std::process::Stdio::piped())
                            .stderr(std::process::Stdio::piped())
                            .spawn()
                            .context("run redis-benchmark")
                    })
                    .collect::<Result<Vec<_>>>()?;
                let outputs = children
                    .into_iter()
                    .map(|child| child.wait_with_output().context("wait for redis-benchmark"))
                    .collect::<Result<Vec<_>>>()?;
                let mut line = format!("  round {} {} -P {pipeline}:", round + 1, test.csv);
                for (((kind, server), before), output) in
                    servers.iter().zip(&cpu_before).zip(&outputs)
                {
                    let cpu = server.cpu()?.since(before);
                    let sample = sample_of(test, output, requests, cpu)?;
                    line.push_str(&format!(
                        " {} {:.0}/CPU s",
                        kind.name(),
                        sample.per_cpu_second
                    ));
                    rates
                        .entry((*kind, test, pipeline))
                        .or_default()
                        .push(sample.per_cpu_second);
                }
                eprintln!("{line}");
            }
        }
    }
    print_table_head("Requests per second of server CPU time, servers side by side");
    for &pipeline in pipelines {
        for &test in tests {
            let of = |kind: Kind| {
                rates
                    .get(&(kind, test, pipeline))
                    .map_or(&[][..], Vec::as_slice)
            };
            let (redis, valkey, meridian) = (of(Kind::Redis), of(Kind::Valkey), of(Kind::Meridian));
            println!(
                "| {} | {pipeline} | {:.0} | {:.0} | {:.0} | {} | {} |",
                test.csv,
                median(redis.to_vec()),
                median(valkey.to_vec()),
                median(meridian.to_vec()),
                round_ratio(meridian, redis),
                round_ratio(meridian, valkey)
            );
        }
    }
    Ok(())
}

/// The median of the rounds' own `ours / theirs` ratios, as "1.23x".
fn round_ratio(ours: &[f64], theirs: &[f64]) -> String {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(_, theirs)| **theirs > 0.0)
        .map(|(ours, theirs)| ours / theirs)
        .collect();
    if ratios.is_empty() {
        return "n/a".into();
    }
    ratio(median(ratios), 1.0)
}

/// One key/value shape of the memory benchmark.
struct Shape {
    name: &'static str,
    keys: u64,
    value_len: usize,
}

impl Shape {
    /// Key `index`: 13 bytes for small values (`key:000000042`), 64 for large.
    fn key(&self, index: u64) -> String {
        if self.value_len <= 64 {
            format!("key:{index:09}")
        } else {
            format!("key:{index:060}")
        }
    }
}

/// Growth per key after loading a shape.
struct Growth {
    used_memory: f64,
    rss: f64,
}

/// Loads the shape's keys with pipelined SETs (1000 per batch); returns the
/// growth per key of INFO's `used_memory` and of VmRSS (/proc/<pid>/status).
fn load_and_measure(server: &Server, shape: &Shape) -> Result<Growth> {
    let mut client = Client::connect(server.port)?;
    let used_before = client.info_field("memory", "used_memory")?;
    let rss_before = server.rss_bytes()?;
    let value = vec![b'v'; shape.value_len];
    let mut index = 0u64;
    while index < shape.keys {
        let batch_end = (index + 1000).min(shape.keys);
        for key in index..batch_end {
            client.queue(&[b"SET", shape.key(key).as_bytes(), &value]);
        }
        for reply in client.flush()? {
            if reply != Reply::Status("OK".into()) {
                bail!("SET failed: {reply:?}");
            }
        }
        index = batch_end;
    }
    let used_after = client.info_field("memory", "used_memory")?;
    let rss_after = server.rss_bytes()?;
    let keys = shape.keys as f64;
    Ok(Growth {
        used_memory: used_after.saturating_sub(used_before) as f64 / keys,
        rss: rss_after.saturating_sub(rss_before) as f64 / keys,
    })
}

pub fn memory(quick: bool) -> Result<()> {
    let binaries = Binaries::prepare()?;
    let shapes = [
        Shape {
            name: "small",
            keys: if quick { 100_000 } else { 1_000_000 },
            value_len: 32,
        },
        Shape {
            name: "large",
            keys: if quick { 20_000 } else { 200_000 },
            value_len: 1024,
        },
    ];
    println!("\n## Memory per key\n");
    println!("Machine: {}\n", machine_description());
    println!(
        "SETs pipelined 1000 at a time into a fresh server; growth of INFO `used_memory` and of \
         VmRSS (/proc/<pid>/status) divided by the key count. small: 13-byte keys, 32-byte \
         values; large: 64-byte keys, 1 KiB values.\n"
    );
    println!(
        "| shape | keys | server | used_memory / key | RSS growth / key | used_memory / RSS |"
    );
    println!("|---|---|---|---|---|---|");
    let mut results: Vec<(&str, HashMap<Kind, Growth>)> = Vec::new();
    for shape in &shapes {
        let mut growth = HashMap::new();
        for kind in Kind::ALL {
            let server = Server::start(kind, &binaries, &Options::default())?;
            let measured = load_and_measure(&server, shape)?;
            drop(server);
            println!(
                "| {} | {} | {} | {:.0} B | {:.0} B | {:.3} |",
                shape.name,
                shape.keys,
                kind.name(),
                measured.used_memory,
                measured.rss,
                measured.used_memory / measured.rss.max(1.0)
            );
            growth.insert(kind, measured);
        }
        results.push((shape.name, growth));
    }
    println!(
        "\n| shape | used_memory: meridian / redis | meridian / valkey | RSS: meridian / redis | meridian / valkey | meridian used_memory within 2% of RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, growth) in &results {
        let (Some(redis), Some(valkey), Some(meridian)) = (
            growth.get(&Kind::Redis),
            growth.get(&Kind::Valkey),
            growth.get(&Kind::Meridian),
        ) else {
            continue;
        };
        let accounting = meridian.used_memory / meridian.rss.max(1.0);
        println!(
            "| {name} | {} | {} | {} | {} | {} ({:+.1}%) |",
            ratio(meridian.used_memory, redis.used_memory),
            ratio(meridian.used_memory, valkey.used_memory),
            ratio(meridian.rss, redis.rss),
            ratio(meridian.rss, valkey.rss),
            if (accounting - 1.0).abs() <= 0.02 {
                "yes"
            } else {
                "NO"
            },
            (accounting - 1.0) * 100.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rps_of_the_named_test() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"71942.45\",\"0.391\"\n\"GET\",\"80000.00\",\"0.3\"\n";
        assert_eq!(parse_csv_rps(csv, "SET"), Some(71942.45));
        assert_eq!(parse_csv_rps(csv, "GET"), Some(80000.0));
        assert_eq!(parse_csv_rps(csv, "INCR"), None);
    }

    #[test]
    fn key_lengths_of_the_shapes() {
        let small = Shape {
            name: "small",
            keys: 1_000_000,
            value_len: 32,
        };
        let large = Shape {
            name: "large",
            keys: 200_000,
            value_len: 1024,
        };
        assert_eq!(small.key(999_999).len(), 13);
        assert_eq!(large.key(199_999).len(), 64);
    }

    #[test]
    fn node_options() {
        let parsed = NodeOptions::parse(&["--threads".into(), "2".into()], false).unwrap();
        assert_eq!(parsed.threads, 2);
        assert_eq!(NodeOptions::parse(&[], true).unwrap().threads, 1);
        assert!(NodeOptions::parse(&["--threads".into()], false).is_err());
        assert!(NodeOptions::parse(&["--bogus".into()], false).is_err());
        assert!(
            NodeOptions::parse(&["--lists".into()], false)
                .unwrap()
                .lists
        );
        assert!(!NodeOptions::parse(&[], false).unwrap().lists);
        assert!(
            NodeOptions::parse(&["--types".into()], false)
                .unwrap()
                .types
        );
        assert!(NodeOptions::parse(&["--types".into(), "--lists".into()], false).is_err());
        let side = NodeOptions::parse(&["--side-by-side".into(), "--types".into()], true).unwrap();
        assert!(side.side_by_side && side.types);
        assert!(!NodeOptions::parse(&[], false).unwrap().side_by_side);
        let shared = ["--side-by-side".into(), "--threads".into(), "2".into()];
        assert!(NodeOptions::parse(&shared, false).is_err());
    }

    #[test]
    fn side_by_side_ratios_are_medians_of_each_rounds_ratio() {
        // round ratios 2.0, 0.5, 2.5: their median is 2.0, the ratio of the medians
        // (100 / 100) would be 1.0
        assert_eq!(
            round_ratio(&[200.0, 50.0, 100.0], &[100.0, 100.0, 40.0]),
            "2.00x"
        );
        // a round without CPU time for the reference is left out
        assert_eq!(round_ratio(&[90.0, 120.0], &[0.0, 100.0]), "1.20x");
        assert_eq!(round_ratio(&[], &[]), "n/a");
        assert_eq!(round_ratio(&[1.0], &[0.0]), "n/a");
    }
}
