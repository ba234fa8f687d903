//! `cargo xtask bench <node|eviction|memory>`: meridian-node against redis-server
//! and valkey-server (Valkey 9, installed by `xtask/scripts/valkey.sh`) on the
//! same machine, reported as ratios (see docs/benchmarks.md).
//!
//! The node benchmarks use only std and anyhow; `regions` runs its load and
//! delaying proxies on tokio, and `cluster` drives redis-benchmark --cluster.

mod cluster;
mod eviction;
mod node;
mod planners;
mod proxy;
mod regions;
mod reshard;
mod resp;
mod sync;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let Some((name, rest)) = args.split_first() else {
        bail!(
            "usage: cargo xtask bench <node|memory|eviction|cluster|regions|sync|reshard|planners|all> \
             [--quick] (node: [--threads 2 | --side-by-side] [--lists | --types]; regions: [--rtt-ms 20] [--rate 2000] [--seconds 10] \
             [--primaries 2]; planners: [--shards 3,30,300,1000])"
        );
    };
    let quick = rest.iter().any(|arg| arg == "--quick");
    match name.as_str() {
        "node" => node::throughput(&node::NodeOptions::parse(rest, quick)?),
        "memory" => node::memory(quick),
        "eviction" => eviction::run(quick),
        "cluster" => cluster::run(quick),
        "regions" => regions::run(&regions::Options::parse(rest, quick)?),
        "sync" => sync::run(quick),
        "reshard" => reshard::run(quick),
        "planners" => planners::run(rest),
        "all" => {
            node::throughput(&node::NodeOptions::parse(&[], quick)?)?;
            node::memory(quick)?;
            eviction::run(quick)?;
            cluster::run(quick)?;
            sync::run(quick)?;
            reshard::run(quick)?;
            let planner_args = if quick {
                vec!["--quick".to_string()]
            } else {
                Vec::new()
            };
            planners::run(&planner_args)?;
            regions::run(&regions::Options::parse(&[], quick)?)
        }
        other => bail!(
            "unknown benchmark '{other}': expected node, memory, eviction, cluster, regions, sync, \
             reshard, planners or all"
        ),
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs redis-server and redis-tools from Debian when missing.
fn ensure_redis() -> Result<()> {
    if have("redis-server") && have("redis-benchmark") && have("redis-cli") {
        return Ok(());
    }
    eprintln!("installing redis-server and redis-tools with apt-get");
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed (are you root?)");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "redis-server", "redis-tools"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get install")?;
    if !install.success() {
        bail!("apt-get install redis-server redis-tools failed");
    }
    Ok(())
}

/// The Valkey installer shipped with the repository (`xtask/scripts/valkey.sh`).
const VALKEY_SCRIPT: &str = include_str!("../../scripts/valkey.sh");

/// Where the Valkey launchers live: `~/.cache/meridian/valkey`.
fn valkey_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("meridian").join("valkey")
}

fn runs(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Unpacks Valkey 9 from Debian's unstable suite under `~/.cache/meridian/valkey`
/// the first time (bookworm's glibc is too old to run it: the script writes
/// launchers that use the unpacked root's own loader); returns the
/// valkey-server launcher.
fn ensure_valkey() -> Result<PathBuf> {
    let dir = valkey_dir();
    let server = dir.join("valkey-server");
    if runs(&server) {
        return Ok(server);
    }
    eprintln!("installing Valkey 9 (first time only)...");
    let output = Command::new("bash")
        .arg("-c")
        .arg(VALKEY_SCRIPT)
        .arg("valkey.sh")
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .context("run xtask/scripts/valkey.sh")?;
    if !output.status.success() {
        bail!("installing Valkey failed (xtask/scripts/valkey.sh needs apt-get and dpkg)");
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    let launcher = printed
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .unwrap_or(server);
    if !runs(&launcher) {
        bail!(
            "{} does not run after installing Valkey",
            launcher.display()
        );
    }
    Ok(launcher)
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds meridian-node in release mode (as the images do) and returns the binary path.
fn build_node() -> Result<PathBuf> {
    Ok(crate::util::build_release_binaries()?.node)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// CPU sets for server and client: separate cores when there are at least two.
fn cores() -> (String, String) {
    let count = std::thread::available_parallelism().map_or(1, usize::from);
    if count >= 2 {
        ("0".into(), "1".into())
    } else {
        ("0".into(), "0".into())
    }
}

/// The servers a benchmark compares: meridian-node and its two open-source peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Redis,
    Valkey,
    Meridian,
}

impl Kind {
    /// The reference servers first, meridian-node last (table column order).
    pub const ALL: [Kind; 3] = [Kind::Redis, Kind::Valkey, Kind::Meridian];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Valkey => "valkey-server",
            Kind::Meridian => "meridian-node",
        }
    }
}

/// Where the three servers' binaries are (redis-server comes from PATH).
pub struct Binaries {
    pub meridian: PathBuf,
    pub valkey: PathBuf,
}

impl Binaries {
    /// Installs redis-server and Valkey when missing and builds meridian-node.
    pub fn prepare() -> Result<Binaries> {
        ensure_redis()?;
        let valkey = ensure_valkey()?;
        let meridian = build_node()?;
        Ok(Binaries { meridian, valkey })
    }

    fn program(&self, kind: Kind) -> String {
        match kind {
            Kind::Redis => "redis-server".into(),
            Kind::Valkey => self.valkey.display().to_string(),
            Kind::Meridian => self.meridian.display().to_string(),
        }
    }
}

/// How a benchmark starts a server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub maxmemory: Option<String>,
    /// None: the server's default policy.
    pub policy: Option<String>,
    /// I/O threads (`--io-threads`); 0 counts as 1.
    pub io_threads: usize,
    /// Not pinned to the server core (shares every core with the load generator).
    pub unpinned: bool,
    /// Further arguments for redis-server and valkey-server only.
    pub peer_args: Vec<String>,
}

/// A server process (pinned to the server core unless started unpinned);
/// killed on drop.
pub struct Server {
    pub port: u16,
    child: Child,
}

impl Server {
    /// Starts `kind` with `options` on a free port of 127.0.0.1. redis-server and
    /// valkey-server run without persistence (`--save '' --appendonly no`).
    pub fn start(kind: Kind, binaries: &Binaries, options: &Options) -> Result<Server> {
        // a free port can be taken by another process before the server binds it
        let mut attempt = 1;
        loop {
            match Server::start_once(kind, binaries, options) {
                Err(error) if attempt < 3 => {
                    eprintln!(
                        "  {} did not start ({error:#}); trying another port",
                        kind.name()
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn start_once(kind: Kind, binaries: &Binaries, options: &Options) -> Result<Server> {
        let port = free_port()?;
        let threads = options.io_threads.max(1).to_string();
        let mut args = vec![
            "--bind".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--io-threads".into(),
            threads,
        ];
        match kind {
            Kind::Redis | Kind::Valkey => {
                args.extend(["--save".into(), String::new()]);
                args.extend(["--appendonly".into(), "no".into()]);
                // a replica writes the snapshot it receives to its directory, and any
                // server started there later would load it: one directory per server
                let dir =
                    std::env::temp_dir().join(format!("meridian-bench-{}-{port}", kind.name()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("create {}", dir.display()))?;
                args.extend(["--dir".into(), dir.display().to_string()]);
                args.extend(options.peer_args.iter().cloned());
            }
            Kind::Meridian => {
                let metrics = free_port()?;
                args.extend(["--metrics-port".into(), metrics.to_string()]);
                // The HTTP API is not benchmarked here and 8080 may be taken.
                args.extend(["--http-port".into(), "0".into()]);
                args.extend(["--region-port".into(), "0".into()]);
                args.extend(["--log".into(), "warn".into()]);
            }
        }
        if let Some(maxmemory) = &options.maxmemory {
            args.extend(["--maxmemory".into(), maxmemory.clone()]);
        }
        if let Some(policy) = &options.policy {
            args.extend(["--maxmemory-policy".into(), policy.clone()]);
        }
        let program = binaries.program(kind);
        let pinned = !options.unpinned;
        Server::launch(kind.name(), &program, &args, &[], "127.0.0.1", port, pinned)
    }

    fn spawn(name: &'static str, program: &str, args: &[String], port: u16) -> Result<Server> {
        Server::spawn_at(name, program, args, &[], "127.0.0.1", port)
    }

    /// Starts `program` pinned to the server core with extra environment and
    /// waits until it listens on `ip:port`.
    fn spawn_at(
        name: &'static str,
        program: &str,
        args: &[String],
        env: &[(&str, String)],
        ip: &str,
        port: u16,
    ) -> Result<Server> {
        Server::launch(name, program, args, env, ip, port, true)
    }

    /// Starts `program`, pinned to the server core when `pinned` (through
    /// taskset, which execs it: the child's pid is the server's), and waits
    /// until it listens on `ip:port`.
    fn launch(
        name: &'static str,
        program: &str,
        args: &[String],
        env: &[(&str, String)],
        ip: &str,
        port: u16,
        pinned: bool,
    ) -> Result<Server> {
        let (server_core, _) = cores();
        let mut command = if pinned {
            let mut command = Command::new("taskset");
            command.args(["-c", &server_core, program]);
            command
        } else {
            Command::new(program)
        };
        let child = command
            .args(args)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {name} (is taskset from util-linux installed?)"))?;
        let mut server = Server { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((ip, port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("{name} exited before listening on {port}: {status}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The server's process id (taskset and the Valkey launcher exec it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time the server used so far, all threads: see [`CpuReading`].
    pub fn cpu(&self) -> Result<CpuReading> {
        let path = format!("/proc/{}/stat", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let ticks = parse_stat_cpu_ticks(&text).with_context(|| format!("parse {path}"))?;
        Ok(CpuReading {
            ticks_seconds: ticks as f64 / clock_ticks_per_second(),
            threads: thread_nanos(self.pid()),
        })
    }

    /// The server's peak resident set size in bytes (VmHWM of /proc/<pid>/status).
    pub fn peak_rss_bytes(&self) -> Result<u64> {
        self.status_bytes("VmHWM:")
    }

    /// Memory the server's child processes (redis-server's and valkey-server's fork
    /// for a full sync) hold privately: the pages copied since the fork, in bytes.
    pub fn children_private_bytes(&self) -> u64 {
        let pid = self.pid();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|child| std::fs::read_to_string(format!("/proc/{child}/smaps_rollup")).ok())
            .map(|rollup| {
                parse_status_bytes(&rollup, "Private_Clean:").unwrap_or(0)
                    + parse_status_bytes(&rollup, "Private_Dirty:").unwrap_or(0)
            })
            .sum()
    }

    /// The server's resident set size in bytes (VmRSS of /proc/<pid>/status).
    pub fn rss_bytes(&self) -> Result<u64> {
        self.status_bytes("VmRSS:")
    }

    /// A "<field> N kB" line of the server's /proc/<pid>/status, in bytes.
    fn status_bytes(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        parse_status_bytes(&text, field).with_context(|| format!("no {field} in {path}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let version = |program: &Path| {
        Command::new(program)
            .arg("--version")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let redis = version(Path::new("redis-server"));
    let valkey = version(&valkey_dir().join("valkey-server"));
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), load average {load}; {redis}; {valkey}")
}

/// One table row per test (SET, GET): the median requests/s over the runs at
/// `pipeline` of each server in `runs` (redis-server, valkey-server,
/// meridian-node), and meridian-node's ratio to each of the others.
fn print_set_get_rows(pipeline: u32, runs: &[Vec<Vec<(String, f64)>>]) {
    for test in ["SET", "GET"] {
        let pick = |runs: &[Vec<(String, f64)>]| {
            median(
                runs.iter()
                    .filter_map(|run| {
                        run.iter()
                            .find(|(name, _)| name == test)
                            .map(|(_, rps)| *rps)
                    })
                    .collect(),
            )
        };
        let medians: Vec<f64> = runs.iter().map(|server| pick(server)).collect();
        let Some((&meridian, others)) = medians.split_last() else {
            continue;
        };
        let values: Vec<String> = medians.iter().map(|rps| format!("{rps:.0}")).collect();
        let ratios: Vec<String> = others.iter().map(|&rps| ratio(meridian, rps)).collect();
        println!(
            "| {test} | {pipeline} | {} | {} |",
            values.join(" | "),
            ratios.join(" | ")
        );
    }
}

/// The median; the mean of the two middle values for an even count, 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

/// `ours / theirs` as "1.23x" ("n/a" when `theirs` is not positive).
fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 && ours.is_finite() {
        format!("{:.2}x", ours / theirs)
    } else {
        "n/a".into()
    }
}

/// A server's CPU time at one moment: utime + stime of the whole process, which the
/// kernel reports in clock ticks (10 ms: a 50,000-request `--quick` run is about 30 of
/// them), and every thread's run time in nanoseconds (`/proc/<pid>/task/<tid>/schedstat`)
/// where the kernel has it.
#[derive(Clone, Debug)]
pub struct CpuReading {
    ticks_seconds: f64,
    threads: Option<BTreeMap<u32, u64>>,
}

impl CpuReading {
    /// CPU seconds used from `before` to this reading: the threads' nanoseconds when
    /// every thread of `before` is still there (a thread started since counts whole),
    /// else the process's ticks, which keep the time of threads that ended.
    pub fn since(&self, before: &CpuReading) -> f64 {
        if let (Some(now), Some(then)) = (&self.threads, &before.threads)
            && then.keys().all(|tid| now.contains_key(tid))
        {
            let nanos: u64 = now
                .iter()
                .map(|(tid, &nanos)| nanos.saturating_sub(then.get(tid).copied().unwrap_or(0)))
                .sum();
            return nanos as f64 / 1e9;
        }
        self.ticks_seconds - before.ticks_seconds
    }
}

/// Run time in nanoseconds of each thread of `pid`; `None` when the kernel does not
/// keep schedstat. A thread that ends while it is listed is left out.
fn thread_nanos(pid: u32) -> Option<BTreeMap<u32, u64>> {
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let entry = entry.ok()?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        threads.insert(tid, parse_schedstat_nanos(&text)?);
    }
    (!threads.is_empty()).then_some(threads)
}

/// The run time (first field, nanoseconds) of a `/proc/<pid>/task/<tid>/schedstat`.
fn parse_schedstat_nanos(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`. The
/// command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so the fields are counted after the last ')'.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after the name come field 3 (state) onwards: utime is field 14, stime 15
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A "<field>  1234 kB" line of `/proc/<pid>/status` (or smaps_rollup) in bytes.
fn parse_status_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix(field))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        _ => None,
    }
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn ratio_formats_and_guards_zero() {
        assert_eq!(ratio(150.0, 100.0), "1.50x");
        assert_eq!(ratio(1.0, 3.0), "0.33x");
        assert_eq!(ratio(5.0, 0.0), "n/a");
        assert_eq!(ratio(f64::NAN, 1.0), "n/a");
    }

    fn reading(ticks_seconds: f64, threads: Option<&[(u32, u64)]>) -> CpuReading {
        CpuReading {
            ticks_seconds,
            threads: threads.map(|threads| threads.iter().copied().collect()),
        }
    }

    #[test]
    fn cpu_time_comes_from_the_threads_nanoseconds_unless_one_ended() {
        let before = reading(1.0, Some(&[(10, 500_000_000), (11, 250_000_000)]));
        // the same threads: their nanoseconds, not the coarser ticks
        let after = reading(1.5, Some(&[(10, 800_000_000), (11, 260_000_000)]));
        assert!((after.since(&before) - 0.31).abs() < 1e-9);
        // a thread started since counts whole
        let started = reading(
            1.5,
            Some(&[(10, 800_000_000), (11, 250_000_000), (12, 40_000_000)]),
        );
        assert!((started.since(&before) - 0.34).abs() < 1e-9);
        // a thread that ended took its time with it: the process's ticks keep it
        let ended = reading(1.5, Some(&[(10, 800_000_000)]));
        assert!((ended.since(&before) - 0.5).abs() < 1e-9);
        // no schedstat on either side: ticks
        assert!((reading(1.25, None).since(&before) - 0.25).abs() < 1e-9);
        assert_eq!(
            parse_schedstat_nanos("123456789 2000 7\n"),
            Some(123_456_789)
        );
        assert_eq!(parse_schedstat_nanos(""), None);
    }

    /// The reading of a live process: this test's own threads, in nanoseconds.
    #[test]
    fn thread_nanos_reads_a_live_process() {
        let threads = thread_nanos(std::process::id()).expect("schedstat of this process");
        assert!(threads.contains_key(&std::process::id()));
        assert!(threads.values().any(|&nanos| nanos > 0));
    }

    #[test]
    fn stat_cpu_counts_fields_after_the_last_paren() {
        let plain = "4242 (redis-server) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                     250 75 0 0 20 0 5 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(plain), Some(325));
        // a name with spaces and parentheses must not shift the fields
        let odd = "77 (a) b (c d)) R 1 77 77 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(10));
        assert_eq!(parse_stat_cpu_ticks("77 (truncated) R 1"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_and_rollup_fields_in_bytes() {
        let status = "VmPeak:\t  9000 kB\nVmHWM:\t  4096 kB\nVmRSS:\t  1536 kB\n";
        assert_eq!(parse_status_bytes(status, "VmHWM:"), Some(4096 * 1024));
        let rollup = "Rss:   100 kB\nPrivate_Clean:   8 kB\nPrivate_Dirty:  12 kB\n";
        assert_eq!(
            parse_status_bytes(rollup, "Private_Dirty:"),
            Some(12 * 1024)
        );
        assert_eq!(parse_status_bytes(rollup, "Swap:"), None);
    }

    #[test]
    fn vm_rss_in_bytes() {
        let status = "Name:\tvalkey-server\nVmPeak:\t  9000 kB\nVmRSS:\t   1536 kB\nThreads:\t5\n";
        assert_eq!(parse_status_bytes(status, "VmRSS:"), Some(1536 * 1024));
        assert_eq!(parse_status_bytes("Name:\tx\n", "VmRSS:"), None);
    }

    #[test]
    fn the_shipped_valkey_script_prints_the_launcher() {
        assert!(VALKEY_SCRIPT.starts_with("#!/usr/bin/env bash"));
        assert!(VALKEY_SCRIPT.contains("echo \"$dir/valkey-server\""));
    }
}
