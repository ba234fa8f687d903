//! Server commands: COMMAND, INFO, DBSIZE, FLUSHDB/FLUSHALL, TIME.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::connection::REDIS_COMPAT_VERSION;
use super::{COMMANDS, Ctx, Spec, lookup};
use crate::error::{CmdResult, CommandError};
use crate::protocol::Out;

fn write_command_info(out: &mut Out, spec: &Spec) {
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.integer(i64::from(spec.arity));
    let flags = spec.flag_names();
    out.set(flags.len());
    for flag in flags {
        out.simple(flag);
    }
    out.integer(i64::from(spec.first_key));
    out.integer(i64::from(spec.last_key));
    out.integer(i64::from(spec.step));
    out.set(0);
    out.set(0);
    write_key_specs(out, spec);
    out.array(0);
}

/// Redis 7 key specs (COMMAND INFO element 9) from the legacy key positions:
/// one index-based begin_search with a range find_keys.
fn write_key_specs(out: &mut Out, spec: &Spec) {
    if spec.first_key <= 0 {
        out.array(0);
        return;
    }
    // Redis counts `lastkey` from the first key, or from the end when negative.
    let last_key = if spec.last_key < 0 {
        spec.last_key
    } else {
        spec.last_key - spec.first_key
    };
    let flags: &[&str] = if spec.has(super::WRITE) {
        &["RW", "update"]
    } else {
        &["RO", "access"]
    };
    out.array(1);
    out.map(3);
    out.bulk(b"flags");
    out.set(flags.len());
    for flag in flags {
        out.simple(flag);
    }
    out.bulk(b"begin_search");
    out.map(2);
    out.bulk(b"type");
    out.bulk(b"index");
    out.bulk(b"spec");
    out.map(1);
    out.bulk(b"index");
    out.integer(i64::from(spec.first_key));
    out.bulk(b"find_keys");
    out.map(2);
    out.bulk(b"type");
    out.bulk(b"range");
    out.bulk(b"spec");
    out.map(3);
    out.bulk(b"lastkey");
    out.integer(i64::from(last_key));
    out.bulk(b"keystep");
    out.integer(i64::from(spec.step));
    out.bulk(b"limit");
    out.integer(0);
}

pub fn command(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let Some(subcommand) = ctx.args.get(1) else {
        ctx.out.array(COMMANDS.len());
        for spec in COMMANDS {
            write_command_info(ctx.out, spec);
        }
        return Ok(());
    };
    match subcommand.to_ascii_uppercase().as_slice() {
        b"COUNT" => ctx.out.integer(COMMANDS.len() as i64),
        b"INFO" => {
            let names = &ctx.args[2..];
            if names.is_empty() {
                ctx.out.array(COMMANDS.len());
                for spec in COMMANDS {
                    write_command_info(ctx.out, spec);
                }
            } else {
                ctx.out.array(names.len());
                for name in names {
                    match lookup(name) {
                        Some(position) => write_command_info(ctx.out, &COMMANDS[position]),
                        None => ctx.out.null_array(),
                    }
                }
            }
        }
        b"DOCS" => {
            let wanted: Vec<&Spec> = if ctx.args.len() > 2 {
                ctx.args[2..]
                    .iter()
                    .filter_map(|name| lookup(name))
                    .map(|position| &COMMANDS[position])
                    .collect()
            } else {
                COMMANDS.iter().collect()
            };
            ctx.out.map(wanted.len());
            for spec in wanted {
                ctx.out.bulk(spec.name.as_bytes());
                ctx.out.map(2);
                ctx.out.bulk(b"summary");
                ctx.out.bulk(b"");
                ctx.out.bulk(b"since");
                ctx.out.bulk(b"1.0.0");
            }
        }
        b"LIST" => {
            ctx.out.array(COMMANDS.len());
            for spec in COMMANDS {
                ctx.out.bulk(spec.name.as_bytes());
            }
        }
        b"GETKEYS" if ctx.args.len() > 2 => {
            let args = &ctx.args[2..];
            let position = lookup(args[0])
                .ok_or_else(|| CommandError::other("ERR Invalid command specified"))?;
            let keys = COMMANDS[position].keys(args);
            if keys.is_empty() {
                return Err(CommandError::other("ERR The command has no key arguments"));
            }
            ctx.out.array(keys.len());
            for key in keys {
                ctx.out.bulk(key);
            }
        }
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                String::from_utf8_lossy(subcommand)
            )));
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| {
            text.split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Builds the INFO text for the requested sections.
pub fn info_text(ctx: &mut Ctx<'_, '_>, sections: &[String]) -> String {
    let wants = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|section| {
                section == name
                    || section == "all"
                    || section == "everything"
                    || (section == "default" && name != "commandstats")
            })
    };
    let shared = ctx.shared;
    let db = ctx.keys.db();
    let (mut keys, mut volatile, mut hits, mut misses, mut expired, mut evicted) =
        (0, 0, 0, 0, 0, 0);
    ctx.keys.each_shard(|shard| {
        keys += shard.len();
        volatile += shard.volatile_len();
        hits += shard.hits;
        misses += shard.misses;
        expired += shard.expired;
        evicted += shard.evicted;
    });
    let mut text = String::new();
    let mut section = |title: &str, body: String| {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let _ = write!(text, "# {title}\r\n{body}");
    };
    let uptime = shared.uptime_seconds();
    if wants("server") {
        section(
            "Server",
            format!(
                "redis_version:{REDIS_COMPAT_VERSION}\r\nmeridian_version:{}\r\nredis_mode:{}\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\nnode_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:10\r\nexecutable:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                if shared.topology.load().is_some() {
                    "cluster"
                } else {
                    "standalone"
                },
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                shared.run_id,
                shared.node_id,
                shared.port,
                uptime / 86400,
                std::env::current_exe()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
            ),
        );
    }
    if wants("clients") {
        let pubsub_clients = shared
            .clients
            .lock()
            .values()
            .filter(|handle| {
                handle.subscriptions.load(Ordering::Relaxed)
                    + handle.pattern_subscriptions.load(Ordering::Relaxed)
                    > 0
            })
            .count();
        section(
            "Clients",
            format!(
                "connected_clients:{}\r\nblocked_clients:{}\r\npubsub_clients:{pubsub_clients}\r\ntracking_clients:{}\r\nmaxclients:{}\r\n{}",
                shared.connected_clients(),
                // held by CLIENT PAUSE or waiting in a blocking list command, as Redis counts
                shared.pause.blocked.load(Ordering::Relaxed) + shared.blocking.blocked_clients(),
                shared.tracking.stats().clients,
                shared.config.maxclients.load(Ordering::Relaxed),
                shared.pause.info_fields(),
            ),
        );
    }
    if wants("memory") {
        let used = db.used_memory();
        let maxmemory = db.maxmemory();
        let rss = rss_bytes();
        section(
            "Memory",
            format!(
                "used_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:{maxmemory}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_allocator:libc\r\n",
                human(used),
                human(rss),
                human(maxmemory),
                db.policy(),
            ),
        );
    }
    if wants("stats") {
        let counters = &shared.counters;
        let tracking = shared.tracking.stats();
        let orphans = shared.orphans.deleted.load(Ordering::Relaxed);
        section(
            "Stats",
            format!(
                "total_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:0\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{expired}\r\nevicted_keys:{evicted}\r\norphan_keys_deleted:{orphans}\r\nkeyspace_hits:{hits}\r\nkeyspace_misses:{misses}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\n{}",
                counters.connections_received.load(Ordering::Relaxed),
                counters.commands_processed.get(),
                counters.net_input_bytes.get(),
                counters.net_output_bytes.get(),
                counters.rejected_connections.load(Ordering::Relaxed),
                shared.broker.channel_count(),
                shared.broker.pattern_count(),
                tracking.keys,
                tracking.items,
                tracking.prefixes,
                shared.repl.stats_lines(),
            ),
        );
    }
    if wants("replication") {
        section("Replication", shared.repl.info_section());
    }
    if wants("cluster") {
        // Only the flag here, like Redis; CLUSTER INFO has the details.
        let enabled = u8::from(shared.topology.load().is_some());
        section("Cluster", format!("cluster_enabled:{enabled}\r\n"));
    }
    if wants("regions") {
        section("Regions", shared.regions.info_section());
    }
    if wants("origin")
        && let Some(origin) = shared.origin.as_ref()
    {
        section("Origin", crate::origin::info_section(origin));
    }
    if wants("commandstats") {
        let mut body = String::new();
        for (position, spec) in COMMANDS.iter().enumerate() {
            let calls = shared.command_calls.get(position);
            if calls > 0 {
                let _ = write!(
                    body,
                    "cmdstat_{}:calls={calls},usec=0,usec_per_call=0.00,rejected_calls=0,failed_calls=0\r\n",
                    spec.name
                );
            }
        }
        section("Commandstats", body);
    }
    if wants("keyspace") {
        let body = if keys > 0 {
            format!("db0:keys={keys},expires={volatile},avg_ttl=0\r\n")
        } else {
            String::new()
        };
        section("Keyspace", body);
    }
    text
}

pub fn info(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let sections: Vec<String> = ctx.args[1..]
        .iter()
        .map(|section| String::from_utf8_lossy(section).to_ascii_lowercase())
        .collect();
    let text = info_text(ctx, &sections);
    ctx.out.verbatim(&text);
    Ok(())
}

/// DEBUG: disabled, as in a default Redis 7 (`enable-debug-command no`). The command
/// exists so ACL rules can name it and `-@admin` refuses it.
pub fn debug(_ctx: &mut Ctx<'_, '_>) -> CmdResult {
    Err(CommandError::other(
        "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.",
    ))
}

pub fn dbsize(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let mut total = 0;
    ctx.keys.each_shard(|shard| total += shard.len());
    ctx.out.integer(total as i64);
    Ok(())
}

pub fn flushdb(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match ctx.args.get(1).map(|mode| mode.to_ascii_uppercase()) {
        None => {}
        Some(mode) if (mode == b"ASYNC" || mode == b"SYNC") && ctx.args.len() == 2 => {}
        Some(_) => return Err(CommandError::Syntax),
    }
    ctx.keys.each_shard(|shard| shard.clear());
    ctx.out.ok();
    Ok(())
}

pub fn time(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk_integer(elapsed.as_secs() as i64);
    ctx.out.bulk_integer(i64::from(elapsed.subsec_micros()));
    Ok(())
}

pub fn lastsave(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let started = crate::store::now_ms() / 1000 - ctx.shared.uptime_seconds();
    ctx.out.integer(started as i64);
    Ok(())
}
