//! CONFIG GET / SET / RESETSTAT / REWRITE, answered as redis-server 7.0 answers them.
//!
//! The parameters with an effect of their own in the node are handled here; the rest
//! (tcp-keepalive, proto-max-bulk-len, the encoding thresholds, save,
//! client-output-buffer-limit, ...) are declared in crate::settings.

use std::sync::atomic::Ordering;

use super::Ctx;
use crate::config::parse_memory;
use crate::error::{CmdResult, CommandError};
use crate::glob;
use crate::settings::{self, INT_MAX, Numeric, int};
use crate::store::Policy;

/// Parameters this module sets itself, each with its own effect.
/// Parameters CONFIG GET reports that cannot change at run time: `databases` and
/// `cluster-enabled` as in Redis; `port` and `bind` too, unlike Redis, because the
/// node's pod (its Service, probes and peers) is built around them.
const IMMUTABLE: &[&str] = &["databases", "cluster-enabled", "port", "bind"];

const OWN: &[&str] = &[
    "maxmemory",
    "maxmemory-policy",
    "maxmemory-samples",
    "min-replicas-to-write",
    "min-slaves-to-write",
    "min-replicas-max-lag",
    "min-slaves-max-lag",
    "tracking-table-max-keys",
    "busy-reply-threshold",
    "lua-time-limit",
    "timeout",
    "protected-mode",
    "maxclients",
    "repl-backlog-size",
    "notify-keyspace-events",
    "requirepass",
    "masterauth",
    "masteruser",
];

/// Parameters CONFIG GET knows, with their current values.
fn config_values(ctx: &Ctx<'_, '_>) -> Vec<(String, String)> {
    let shared = ctx.shared;
    let db = ctx.keys.db();
    let limits = shared.config.limits();
    let mut values = vec![
        ("maxmemory".to_string(), db.maxmemory().to_string()),
        ("maxmemory-policy".to_string(), db.policy().to_string()),
        (
            "maxmemory-samples".to_string(),
            db.stats.samples.load(Ordering::Relaxed).to_string(),
        ),
        (
            "requirepass".to_string(),
            shared.requirepass().unwrap_or_default(),
        ),
        ("port".to_string(), shared.port.to_string()),
        ("bind".to_string(), shared.bind.clone()),
        ("databases".to_string(), "1".to_string()),
        (
            "maxclients".to_string(),
            shared.config.maxclients.load(Ordering::Relaxed).to_string(),
        ),
        (
            "protected-mode".to_string(),
            if shared.config.protected_mode.load(Ordering::Relaxed) {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ),
        (
            "timeout".to_string(),
            shared
                .config
                .idle_timeout_secs
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "busy-reply-threshold".to_string(),
            shared.scripts.time_limit_ms().to_string(),
        ),
        (
            "lua-time-limit".to_string(),
            shared.scripts.time_limit_ms().to_string(),
        ),
        (
            "client-query-buffer-limit".to_string(),
            limits.max_query_buffer.to_string(),
        ),
        (
            "cluster-enabled".to_string(),
            if ctx.shared.topology.load().is_some() {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ),
        (
            "min-replicas-to-write".to_string(),
            shared
                .repl
                .min_replicas_to_write
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "min-replicas-max-lag".to_string(),
            shared
                .repl
                .min_replicas_max_lag
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "repl-backlog-size".to_string(),
            shared.repl.log.extent().2.to_string(),
        ),
        (
            "masterauth".to_string(),
            shared.repl.primary_auth.lock().clone().unwrap_or_default(),
        ),
        (
            "masteruser".to_string(),
            shared.repl.primary_user.lock().clone().unwrap_or_default(),
        ),
        ("replica-read-only".to_string(), "yes".to_string()),
        (
            "tracking-table-max-keys".to_string(),
            shared.tracking.max_keys().to_string(),
        ),
        (
            "notify-keyspace-events".to_string(),
            crate::notify::flags_to_string(shared.keyspace_events.flags()),
        ),
    ];
    for (alias, name) in [
        ("min-slaves-to-write", "min-replicas-to-write"),
        ("min-slaves-max-lag", "min-replicas-max-lag"),
    ] {
        let value = values
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        values.push((alias.to_string(), value));
    }
    for (name, value) in shared.config.settings.values() {
        values.push((name.to_string(), value));
    }
    values
}

pub fn config(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let subcommand = ctx.args[1].to_ascii_uppercase();
    match subcommand.as_slice() {
        b"GET" => get(ctx)?,
        b"SET" => set(ctx)?,
        b"RESETSTAT" => ctx.out.ok(),
        b"REWRITE" => {
            return Err(CommandError::other(
                "ERR The server is running without a config file",
            ));
        }
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                String::from_utf8_lossy(ctx.args[1])
            )));
        }
    }
    Ok(())
}

/// CONFIG GET: a name without `*`, `?` or `[` answers under the spelling asked (any
/// case), a pattern with every parameter (aliases too) it matches; each parameter once.
fn get(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.args.len() < 3 {
        return Err(CommandError::other(
            "ERR wrong number of arguments for 'config|get' command",
        ));
    }
    let values = config_values(ctx);
    let mut matched: Vec<(Vec<u8>, &str)> = Vec::new();
    let seen = |matched: &[(Vec<u8>, &str)], name: &[u8]| {
        matched
            .iter()
            .any(|(known, _)| known.eq_ignore_ascii_case(name))
    };
    for &pattern in &ctx.args[2..] {
        let lower = pattern.to_ascii_lowercase();
        if !pattern
            .iter()
            .any(|byte| matches!(byte, b'*' | b'?' | b'['))
        {
            if seen(&matched, pattern) {
                continue;
            }
            if let Some((_, value)) = values.iter().find(|(name, _)| name.as_bytes() == lower) {
                matched.push((pattern.to_vec(), value));
            }
            continue;
        }
        for (name, value) in &values {
            if !seen(&matched, name.as_bytes()) && glob::matches(&lower, name.as_bytes()) {
                matched.push((name.as_bytes().to_vec(), value));
            }
        }
    }
    ctx.out.map(matched.len());
    for (name, value) in matched {
        ctx.out.bulk(&name);
        ctx.out.bulk(value.as_bytes());
    }
    Ok(())
}

fn failed(name: &str, why: &str) -> CommandError {
    CommandError::other(format!(
        "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
    ))
}

/// CONFIG SET: all pairs or none, checked in Redis 7.0's order: every name first
/// (unknown or repeated), then every value, then all are applied.
fn set(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.args.len() < 4 || !ctx.args.len().is_multiple_of(2) {
        return Err(CommandError::other(
            "ERR wrong number of arguments for 'config|set' command",
        ));
    }
    let pairs: Vec<(&[u8], String, &[u8])> = ctx.args[2..]
        .chunks(2)
        .map(|pair| {
            let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
            (pair[0], name, pair[1])
        })
        .collect();
    // the first refused name decides the error, as in Redis
    for (position, (given, name, _)) in pairs.iter().enumerate() {
        let immutable = IMMUTABLE.contains(&name.as_str());
        if !OWN.contains(&name.as_str()) && !settings::known(name) && !immutable {
            return Err(CommandError::other(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                String::from_utf8_lossy(given)
            )));
        }
        if immutable {
            return Err(failed(
                &String::from_utf8_lossy(given),
                "can't set immutable config",
            ));
        }
        if pairs[..position]
            .iter()
            .any(|(_, earlier, _)| earlier == name)
        {
            return Err(failed(
                &String::from_utf8_lossy(given),
                "duplicate parameter",
            ));
        }
    }
    let settings = &ctx.shared.config.settings;
    let mut checked = Vec::with_capacity(pairs.len());
    for (_, name, value) in &pairs {
        if OWN.contains(&name.as_str()) {
            check_own(name, value).map_err(|why| failed(name, &why))?;
            checked.push(None);
        } else {
            let value = settings::check(settings, name, value).map_err(|why| failed(name, &why))?;
            checked.push(Some(value));
        }
    }
    for ((_, name, value), checked) in pairs.iter().zip(checked) {
        match checked {
            Some(value) => settings.set(value),
            None => apply_own(ctx, name, String::from_utf8_lossy(value).into_owned()),
        }
    }
    // like Redis, lowering maxmemory evicts right away (not while a
    // transaction holds shard locks: eviction takes locks itself)
    if ctx.keys.is_direct() {
        let _ = ctx.keys.db().make_room();
    }
    ctx.out.ok();
    Ok(())
}

/// Redis's types and ranges for the numeric ones of [`OWN`] (their defaults unused).
const OWN_NUMERIC: [Numeric; 10] = [
    int("maxmemory-samples", 1, INT_MAX, 5),
    int("min-replicas-to-write", 0, INT_MAX, 0),
    int("min-slaves-to-write", 0, INT_MAX, 0),
    int("min-replicas-max-lag", 0, INT_MAX, 10),
    int("min-slaves-max-lag", 0, INT_MAX, 10),
    int("tracking-table-max-keys", 0, i64::MAX, 1_000_000),
    int("busy-reply-threshold", 0, i64::MAX, 5000),
    int("lua-time-limit", 0, i64::MAX, 5000),
    int("timeout", 0, INT_MAX, 0),
    int("maxclients", 1, u32::MAX as i64, 10_000),
];

/// A memory value as Redis reads it, or with a Kubernetes unit as the node's flags
/// take it (256Mi, 1Gi: accepted as before).
fn memory_value(value: &[u8]) -> Option<u64> {
    settings::memtoull(value).or_else(|| {
        let lower = value.to_ascii_lowercase();
        let kubernetes = [b"ki".as_slice(), b"mi", b"gi", b"kib", b"mib", b"gib"]
            .iter()
            .any(|unit| lower.ends_with(unit));
        let text = std::str::from_utf8(value).ok()?;
        if !kubernetes || text.contains(char::is_whitespace) {
            return None;
        }
        parse_memory(text).ok()
    })
}

/// Checks a value of one of [`OWN`] as Redis 7.0 does; the error is what follows
/// Redis's `- `.
fn check_own(name: &str, value: &[u8]) -> Result<(), String> {
    if let Some(numeric) = OWN_NUMERIC.iter().find(|numeric| numeric.name == name) {
        return numeric.parse(value).map(drop);
    }
    let text = String::from_utf8_lossy(value);
    match name {
        // any memory value, up to 2^64 - 1
        "maxmemory" => {
            memory_value(value).ok_or("argument must be a memory value")?;
        }
        "repl-backlog-size" if settings::memtoull(value).is_some() => {
            settings::memory("repl-backlog-size", 1, 0).parse(value)?;
        }
        "repl-backlog-size" => {
            memory_value(value).ok_or("argument must be a memory value")?;
        }
        "maxmemory-policy" => {
            text.parse::<Policy>().map_err(|_| "argument(s) must be one of the following: volatile-lru, allkeys-lru, volatile-lfu, allkeys-lfu, volatile-random, allkeys-random, volatile-ttl, noeviction, sieve")?;
        }
        "protected-mode" if !matches!(text.to_ascii_lowercase().as_str(), "yes" | "no") => {
            return Err("argument must be 'yes' or 'no'".to_string());
        }
        "notify-keyspace-events" => {
            crate::notify::parse_flags(&text).ok_or(crate::notify::INVALID_FLAGS)?;
        }
        _ => {}
    }
    Ok(())
}

/// Applies a value of one of [`OWN`] that [`check_own`] accepted.
fn apply_own(ctx: &mut Ctx<'_, '_>, name: &str, value: String) {
    let db = ctx.keys.db();
    match name {
        "maxmemory" => db.stats.maxmemory.store(
            memory_value(value.as_bytes()).unwrap_or(0),
            Ordering::Relaxed,
        ),
        "maxmemory-policy" => db.set_policy(value.parse().unwrap_or(Policy::Sieve)),
        "maxmemory-samples" => db
            .stats
            .samples
            .store(value.parse().unwrap_or(5), Ordering::Relaxed),
        // the node stops a script past it (Redis starts answering BUSY)
        "busy-reply-threshold" | "lua-time-limit" => ctx
            .shared
            .scripts
            .set_time_limit_ms(value.parse().unwrap_or(5000)),
        "requirepass" => {
            // as in Redis: the default user's password (or nopass when empty)
            let password = (!value.is_empty()).then_some(value);
            ctx.shared
                .acl
                .set_default_password(password.as_deref().map(str::as_bytes));
            *ctx.shared.config.requirepass.write() = password;
        }
        "masteruser" => *ctx.shared.repl.primary_user.lock() = (!value.is_empty()).then_some(value),
        "masterauth" => *ctx.shared.repl.primary_auth.lock() = (!value.is_empty()).then_some(value),
        "min-replicas-to-write" | "min-slaves-to-write" => ctx
            .shared
            .repl
            .min_replicas_to_write
            .store(value.parse().unwrap_or(0), Ordering::Relaxed),
        "min-replicas-max-lag" | "min-slaves-max-lag" => ctx
            .shared
            .repl
            .min_replicas_max_lag
            .store(value.parse().unwrap_or(10), Ordering::Relaxed),
        "tracking-table-max-keys" => ctx
            .shared
            .tracking
            .set_max_keys(value.parse().unwrap_or(crate::tracking::DEFAULT_MAX_KEYS)),
        "protected-mode" => ctx
            .shared
            .config
            .protected_mode
            .store(value.eq_ignore_ascii_case("yes"), Ordering::Relaxed),
        "maxclients" => ctx
            .shared
            .config
            .maxclients
            .store(value.parse().unwrap_or(10_000), Ordering::Relaxed),
        "timeout" => ctx
            .shared
            .config
            .idle_timeout_secs
            .store(value.parse().unwrap_or(0), Ordering::Relaxed),
        "notify-keyspace-events" => ctx
            .shared
            .keyspace_events
            .set_flags(crate::notify::parse_flags(&value).unwrap_or(0)),
        "repl-backlog-size" => ctx.shared.repl.log.set_capacity(
            usize::try_from(memory_value(value.as_bytes()).unwrap_or(0))
                .unwrap_or(usize::MAX)
                .max(16 * 1024),
        ),
        _ => {}
    }
}
