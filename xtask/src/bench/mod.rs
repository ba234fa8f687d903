//! `cargo xtask bench <node|eviction|memory>`: meridian-node against redis-server
//! on the same machine, reported as ratios (see docs/benchmarks.md).
//!
//! The node benchmarks use only std and anyhow; `regions` runs its load and
//! delaying proxies on tokio, and `cluster` drives redis-benchmark --cluster.

mod cluster;
mod eviction;
mod node;
mod planners;
mod proxy;
mod regions;
mod resp;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let Some((name, rest)) = args.split_first() else {
        bail!(
            "usage: cargo xtask bench <node|memory|eviction|cluster|regions|planners|all> [--quick] \
             (regions: [--rtt-ms 20] [--rate 2000] [--seconds 10] [--primaries 2]; \
             planners: [--shards 3,30,300,1000])"
        );
    };
    let quick = rest.iter().any(|arg| arg == "--quick");
    match name.as_str() {
        "node" => node::throughput(quick),
        "memory" => node::memory(quick),
        "eviction" => eviction::run(quick),
        "cluster" => cluster::run(quick),
        "regions" => regions::run(&regions::Options::parse(rest, quick)?),
        "planners" => planners::run(rest),
        "all" => {
            node::throughput(quick)?;
            node::memory(quick)?;
            eviction::run(quick)?;
            cluster::run(quick)?;
            regions::run(&regions::Options::parse(&[], quick)?)
        }
        other => bail!(
            "unknown benchmark '{other}': expected node, memory, eviction, cluster, regions, planners or all"
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

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds meridian-node in release mode and returns the binary path.
fn build_node() -> Result<PathBuf> {
    let root = workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "meridian-node"])
        .current_dir(&root)
        .status()
        .context("cargo build --release -p meridian-node")?;
    if !status.success() {
        bail!("building meridian-node failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release").join("meridian-node"))
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

/// A server process pinned to the server core; killed on drop.
pub struct Server {
    pub port: u16,
    child: Child,
}

impl Server {
    pub fn redis(maxmemory: Option<&str>, policy: Option<&str>) -> Result<Server> {
        let port = free_port()?;
        let mut args = vec![
            "--bind".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ];
        if let Some(maxmemory) = maxmemory {
            args.extend(["--maxmemory".into(), maxmemory.into()]);
        }
        if let Some(policy) = policy {
            args.extend(["--maxmemory-policy".into(), policy.into()]);
        }
        Server::spawn("redis-server", "redis-server", &args, port)
    }

    pub fn meridian(
        binary: &std::path::Path,
        maxmemory: Option<&str>,
        policy: Option<&str>,
    ) -> Result<Server> {
        let port = free_port()?;
        let metrics = free_port()?;
        let mut args = vec![
            "--bind".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--metrics-port".into(),
            metrics.to_string(),
            // The HTTP API is not benchmarked here and 8080 may be taken.
            "--http-port".into(),
            "0".into(),
            "--region-port".into(),
            "0".into(),
            "--io-threads".into(),
            "1".into(),
            "--log".into(),
            "warn".into(),
        ];
        if let Some(maxmemory) = maxmemory {
            args.extend(["--maxmemory".into(), maxmemory.into()]);
        }
        if let Some(policy) = policy {
            args.extend(["--maxmemory-policy".into(), policy.into()]);
        }
        Server::spawn("meridian-node", &binary.display().to_string(), &args, port)
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
        let (server_core, _) = cores();
        let child = Command::new("taskset")
            .args(["-c", &server_core, program])
            .args(args)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {name} (is taskset from util-linux installed?)"))?;
        let server = Server { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((ip, port)).is_err() {
            if Instant::now() > deadline {
                bail!("{name} did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
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
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}); {redis}")
}

/// One table row per test (SET, GET): the median requests/s of each server over
/// its runs at `pipeline`, and Meridian's ratio to redis-server.
fn print_set_get_rows(
    pipeline: u32,
    redis_runs: &[Vec<(String, f64)>],
    meridian_runs: &[Vec<(String, f64)>],
) {
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
        let (redis, meridian) = (pick(redis_runs), pick(meridian_runs));
        println!(
            "| {test} | {pipeline} | {redis:.0} | {meridian:.0} | {:.2}x |",
            meridian / redis.max(1.0)
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
