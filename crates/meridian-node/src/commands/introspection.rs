//! OBJECT and MEMORY: what a key's value looks like to the store, without counting
//! as an access (like Redis's LOOKUP_NOTOUCH) and without changing it.

use super::{Ctx, help};
use crate::error::{CmdResult, CommandError};
use crate::settings::{Num, Settings};
use crate::store::eviction::{Policy, lfu, lru};
use crate::store::{Shard, ValueRef};

/// Strings up to this long are one allocation with their object (embstr).
const EMBSTR_MAX: usize = 44;

/// Whether `bytes` is an integer as Redis writes one (string2l): no sign but `-`, no
/// leading zeros, within i64, at most 20 characters.
fn canonical_integer(bytes: &[u8]) -> bool {
    bytes.len() <= 20
        && std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .is_some_and(|value| value.to_string().as_bytes() == bytes)
}

/// The encoding redis-server 7.0 would report for this value as it is now, under the
/// thresholds CONFIG SET gave (set-max-intset-entries, hash-max-listpack-*,
/// zset-max-listpack-*). Redis keeps a larger encoding once a value grew into it; the
/// node reports by content.
fn encoding(value: ValueRef<'_>, settings: &Settings) -> &'static str {
    let limit = |num| settings.size(num);
    match value {
        ValueRef::Str(bytes) if canonical_integer(bytes) => "int",
        ValueRef::Str(bytes) if bytes.len() <= EMBSTR_MAX => "embstr",
        ValueRef::Str(_) => "raw",
        ValueRef::List(_) => "quicklist",
        ValueRef::Set(set) => {
            if set.len() <= limit(Num::SetMaxIntsetEntries) && set.iter().all(canonical_integer) {
                "intset"
            } else {
                "hashtable"
            }
        }
        ValueRef::Hash(hash) => {
            let (entries, longest) = (
                limit(Num::HashMaxListpackEntries),
                limit(Num::HashMaxListpackValue),
            );
            let small = hash.len() <= entries
                && hash
                    .iter()
                    .all(|(field, value)| field.len() <= longest && value.len() <= longest);
            if small { "listpack" } else { "hashtable" }
        }
        ValueRef::ZSet(zset) => {
            let (entries, longest) = (
                limit(Num::ZsetMaxListpackEntries),
                limit(Num::ZsetMaxListpackValue),
            );
            let small =
                zset.len() <= entries && zset.iter().all(|(member, _)| member.len() <= longest);
            if small { "listpack" } else { "skiplist" }
        }
    }
}

fn policy(shard: &Shard) -> Policy {
    shard.policy()
}

/// Redis's errors for a container command's subcommand: unknown, or known with the
/// wrong number of arguments (`help` always takes none).
fn subcommand_arity(
    ctx: &Ctx<'_, '_>,
    command: &str,
    known: &[&[u8]],
    arity: usize,
) -> Result<(), CommandError> {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let expected = if sub == b"help" {
        2
    } else if known.contains(&sub.as_slice()) {
        arity
    } else {
        return Err(CommandError::other(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(ctx.arg(1)),
            command.to_ascii_uppercase()
        )));
    };
    if ctx.args.len() != expected {
        return Err(CommandError::WrongArity(format!(
            "{command}|{}",
            String::from_utf8_lossy(&sub)
        )));
    }
    Ok(())
}

pub fn object(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let sub = ctx.arg(1).to_ascii_lowercase();
    if sub == b"help" && ctx.args.len() == 2 {
        help(
            ctx.out,
            &[
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>",
                "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>",
                "    Return the access frequency index of the <key>. The returned integer is",
                "    proportional to the logarithm of the recent access frequency of the key.",
                "IDLETIME <key>",
                "    Return the idle time of the <key>, that is the approximated number of",
                "    seconds elapsed since the last access to the key.",
                "REFCOUNT <key>",
                "    Return the number of references of the value associated with the specified",
                "    <key>.",
                "HELP",
                "    Prints this help.",
            ],
        );
        return Ok(());
    }
    subcommand_arity(
        ctx,
        "object",
        &[b"encoding", b"freq", b"idletime", b"refcount"],
        3,
    )?;
    let (key, now, out) = (ctx.args[2], ctx.now, &mut *ctx.out);
    let settings = &ctx.shared.config.settings;
    ctx.keys.with_key(key, |shard, _| {
        let Some(index) = shard.find(key, now) else {
            out.null();
            return Ok(());
        };
        let entry = shard.entry(index);
        match sub.as_slice() {
            b"encoding" => out.bulk(encoding(entry.value(), settings).as_bytes()),
            b"refcount" => out.integer(1),
            b"freq" => {
                if !policy(shard).uses_lfu() {
                    return Err(CommandError::other(
                        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
                    ));
                }
                out.integer(i64::from(lfu::decayed(entry.stamp(), lru::clock())));
            }
            _ => {
                if policy(shard).uses_lfu() {
                    return Err(CommandError::other(
                        "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
                    ));
                }
                out.integer(i64::from(lru::idle(lru::clock(), entry.stamp()) / 1000));
            }
        }
        Ok(())
    })
}

pub fn memory(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let sub = ctx.arg(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"help" if ctx.args.len() == 2 => {
            help(
                ctx.out,
                &[
                    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "USAGE <key> [SAMPLES <count>]",
                    "    Return memory in bytes used by <key> and its value. Nested values are",
                    "    sampled up to <count> times (default: 5, 0 means sample all).",
                    "HELP",
                    "    Prints this help.",
                ],
            );
            Ok(())
        }
        b"usage" if ctx.args.len() >= 3 => {
            // SAMPLES is accepted for compatibility: the node knows every value's size
            match ctx.args.get(3..) {
                Some([]) | None => {}
                Some([option, count]) if option.eq_ignore_ascii_case(b"SAMPLES") => {
                    super::parse_int(count)?;
                }
                Some(_) => return Err(CommandError::Syntax),
            }
            let (key, now, out) = (ctx.args[2], ctx.now, &mut *ctx.out);
            ctx.keys.with_key(key, |shard, _| {
                match shard.find(key, now) {
                    Some(index) => out.integer(shard.entry(index).memory() as i64),
                    None => out.null(),
                }
                Ok(())
            })
        }
        _ => subcommand_arity(ctx, "memory", &[b"usage"], 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_recognised_as_redis_writes_them() {
        for yes in [
            &b"0"[..],
            b"-1",
            b"9223372036854775807",
            b"-9223372036854775808",
        ] {
            assert!(canonical_integer(yes), "{yes:?}");
        }
        for no in [
            &b""[..],
            b"01",
            b"+1",
            b"-0",
            b" 1",
            b"9223372036854775808",
            b"1.5",
        ] {
            assert!(!canonical_integer(no), "{no:?}");
        }
    }
}
