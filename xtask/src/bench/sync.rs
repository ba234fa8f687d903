//! `cargo xtask bench sync`: what a full sync costs as the data grows, for
//! meridian-node, redis-server and valkey-server: the time from `REPLICAOF` until the
//! replica's link is up, the primary's extra memory while it sends (its RSS, plus
//! what a fork child copied for redis-server and valkey-server) and the replica's
//! peak RSS (VmHWM) against the primary's RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::resp::{Client, Reply};
use super::{Binaries, Kind, Options, Server, machine_description};

const VALUE_LEN: usize = 1024;
const MIB: f64 = 1024.0 * 1024.0;

struct Measured {
    seconds: f64,
    primary_rss: u64,
    primary_extra: u64,
    replica_peak: u64,
}

/// SETs `keys` distinct keys of [`VALUE_LEN`] bytes, 1000 per pipeline.
fn load(port: u16, keys: u64) -> Result<()> {
    let mut client = Client::connect(port)?;
    let value = vec![b'v'; VALUE_LEN];
    let mut next = 0;
    while next < keys {
        let end = (next + 1000).min(keys);
        for key in next..end {
            client.queue(&[b"SET", format!("key:{key:012}").as_bytes(), &value]);
        }
        for reply in client.flush()? {
            if reply != Reply::Status("OK".into()) {
                bail!("SET failed: {reply:?}");
            }
        }
        next = end;
    }
    Ok(())
}

fn info(client: &mut Client, section: &str) -> Result<String> {
    match client.command(&[b"INFO", section.as_bytes()])? {
        Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
        other => bail!("INFO {section}: {other:?}"),
    }
}

fn measure(kind: Kind, binaries: &Binaries, keys: u64) -> Result<Measured> {
    // Both servers share the cores: primary and replica work at once during a sync.
    let options = Options {
        unpinned: true,
        // like the node, start sending at once instead of waiting for more replicas
        peer_args: vec!["--repl-diskless-sync-delay".into(), "0".into()],
        ..Options::default()
    };
    let primary = Arc::new(Server::start(kind, binaries, &options)?);
    load(primary.port, keys)?;
    let replica = Server::start(kind, binaries, &options)?;
    let primary_rss = primary.rss_bytes()?;

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(primary_rss));
    let sampler = {
        let (primary, done, peak) = (primary.clone(), done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let now = primary.rss_bytes().unwrap_or(0) + primary.children_private_bytes();
                peak.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut control = Client::connect(replica.port)?;
    let started = Instant::now();
    let port = primary.port.to_string();
    control.command(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()])?;
    let deadline = started + Duration::from_secs(900);
    while !info(&mut control, "replication")?.contains("master_link_status:up") {
        if Instant::now() > deadline {
            bail!(
                "{}: the replica's link is not up after 15 minutes",
                kind.name()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    match control.command(&[b"DBSIZE"])? {
        Reply::Int(size) if size as u64 == keys => {}
        other => bail!(
            "{}: the replica holds {other:?} keys, not {keys}",
            kind.name()
        ),
    }
    Ok(Measured {
        seconds,
        primary_rss,
        primary_extra: peak.load(Ordering::Relaxed).saturating_sub(primary_rss),
        replica_peak: replica.peak_rss_bytes()?,
    })
}

pub fn run(quick: bool) -> Result<()> {
    let binaries = Binaries::prepare()?;
    let sizes: &[u64] = if quick {
        &[10_000]
    } else {
        &[100_000, 1_000_000]
    };
    println!("\n## Full sync as the data grows\n");
    println!("Machine: {}\n", machine_description());
    println!(
        "A primary with N keys of {VALUE_LEN} bytes, a new empty replica told REPLICAOF; both \
         unpinned, no writes during the sync. Time until the replica's link is up; the \
         primary's extra memory while it sends (VmRSS sampled every 5 ms, plus the private \
         pages of a fork child); the replica's peak RSS (VmHWM) against the primary's RSS. \
         redis-server and valkey-server run with `--repl-diskless-sync-delay 0`.\n"
    );
    println!(
        "| keys | values | server | sync time | primary RSS | primary extra | replica peak | replica peak / primary RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &keys in sizes {
        for kind in Kind::ALL {
            let measured =
                measure(kind, &binaries, keys).with_context(|| format!("{} keys", keys))?;
            println!(
                "| {keys} | {:.0} MiB | {} | {:.2} s | {:.0} MiB | {:.0} MiB ({:.2}x) | {:.0} MiB | {:.2}x |",
                (keys as f64 * VALUE_LEN as f64) / MIB,
                kind.name(),
                measured.seconds,
                measured.primary_rss as f64 / MIB,
                measured.primary_extra as f64 / MIB,
                measured.primary_extra as f64 / measured.primary_rss.max(1) as f64,
                measured.replica_peak as f64 / MIB,
                measured.replica_peak as f64 / measured.primary_rss.max(1) as f64,
            );
        }
    }
    Ok(())
}
