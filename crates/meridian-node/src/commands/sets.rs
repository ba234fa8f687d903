//! Set commands, with Redis 7.0's replies and error texts (`t_set.c`), including the
//! order in which it checks arguments and types. Members come back in the set's own
//! order (Redis's is its hash table's: clients must not rely on either).

use super::keys::ScanOptions;
use super::{
    Ctx, MAX_REPEATED_PICKS, keys_after_numkeys, parse_int, positive_count, query_collection,
    random_picker, random_picks, read_collection, write_collection,
};
use crate::error::{CmdResult, CommandError};
use crate::notify::NotifyClass;
use crate::protocol::Out;
use crate::store::{Access, SetValue, Value, ValueRef};

fn reply_members<'m>(out: &mut Out, members: impl ExactSizeIterator<Item = &'m [u8]>) {
    out.set(members.len());
    for member in members {
        out.bulk(member);
    }
}

pub fn sadd(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, members) = (ctx.args[1], ctx.now, &ctx.args[2..]);
    let added = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<SetValue, _>(shard, key, slot, now, true, |set| {
            Ok(members.iter().filter(|member| set.insert(member)).count())
        })
    })?;
    if added.is_some_and(|added| added > 0) {
        ctx.notify(NotifyClass::Set, "sadd", key);
    }
    ctx.out.integer(added.unwrap_or(0) as i64);
    Ok(())
}

pub fn srem(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, members) = (ctx.args[1], ctx.now, &ctx.args[2..]);
    let removed = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<SetValue, _>(shard, key, slot, now, false, |set| {
            let removed = members.iter().filter(|member| set.remove(member)).count();
            Ok((removed, set.is_empty()))
        })
    })?;
    let (removed, emptied) = removed.unwrap_or_default();
    if removed > 0 {
        ctx.notify(NotifyClass::Set, "srem", key);
        ctx.shared.keyspace_events.notify_emptied(key, emptied);
    }
    ctx.out.integer(removed as i64);
    Ok(())
}

pub fn scard(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    query_collection::<SetValue, _>(ctx, |set, out| {
        out.integer(set.map_or(0, SetValue::len) as i64)
    })
}

pub fn sismember(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let member = ctx.args[2];
    query_collection::<SetValue, _>(ctx, |set, out| {
        out.integer(i64::from(set.is_some_and(|set| set.contains(member))))
    })
}

pub fn smismember(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let members = &ctx.args[2..];
    query_collection::<SetValue, _>(ctx, |set, out| {
        out.array(members.len());
        for member in members {
            out.integer(i64::from(set.is_some_and(|set| set.contains(member))));
        }
    })
}

pub fn smembers(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    query_collection::<SetValue, _>(ctx, |set, out| match set {
        Some(set) => reply_members(out, set.iter().collect::<Vec<_>>().into_iter()),
        None => out.set(0),
    })
}

pub fn spop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.args.len() > 3 {
        return Err(CommandError::Syntax);
    }
    let count = ctx
        .args
        .get(2)
        .map(|text| positive_count(text, "ERR value is out of range, must be positive"))
        .transpose()?;
    let (key, now) = (ctx.args[1], ctx.now);
    let mut pick = random_picker(ctx);
    let popped = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<SetValue, _>(shard, key, slot, now, false, |set| {
            let wanted = count.unwrap_or(1).min(set.len());
            let members = (0..wanted)
                .filter_map(|_| set.take_index(pick(set.len())))
                .collect::<Vec<_>>();
            Ok((members, set.is_empty()))
        })
    })?;
    let popped = popped.map(|(members, emptied)| {
        // SPOP key 0 pops nothing and tells nothing
        if !members.is_empty() {
            ctx.notify(NotifyClass::Set, "spop", key);
            ctx.shared.keyspace_events.notify_emptied(key, emptied);
        }
        members
    });
    // replicas remove the members this pop chose, not ones of their own choosing
    if let Some(members) = popped.as_ref().filter(|members| !members.is_empty()) {
        let mut effects = vec![b"SREM".to_vec(), key.to_vec()];
        effects.extend(members.iter().map(|member| member.to_vec()));
        ctx.client.effects = Some(effects);
    }
    match (count, popped) {
        (None, Some(members)) if !members.is_empty() => ctx.out.bulk(&members[0]),
        (None, _) => ctx.out.null(),
        (Some(_), None) => ctx.out.set(0),
        (Some(_), Some(members)) => reply_members(ctx.out, members.iter().map(|m| &m[..])),
    }
    Ok(())
}

pub fn srandmember(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.args.len() > 3 {
        return Err(CommandError::Syntax);
    }
    let count = ctx.args.get(2).map(|text| parse_int(text)).transpose()?;
    if count.is_some_and(|count| count < 0 && count.unsigned_abs() > MAX_REPEATED_PICKS) {
        return Err(CommandError::other("ERR value is out of range"));
    }
    let mut pick = random_picker(ctx);
    query_collection::<SetValue, _>(ctx, |set, out| {
        let Some(count) = count else {
            match set {
                Some(set) => out.bulk(set.get_index(pick(set.len())).unwrap_or_default()),
                None => out.null(),
            }
            return;
        };
        let Some(set) = set else {
            out.array(0);
            return;
        };
        let (total, picks) = random_picks(count, set.len(), &mut pick);
        out.array(total);
        for index in picks {
            out.bulk(set.get_index(index).unwrap_or_default());
        }
    })
}

pub fn smove(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (source, destination, member, now) = (ctx.args[1], ctx.args[2], ctx.args[3], ctx.now);
    let events = &*ctx.shared.keyspace_events;
    let moved = ctx.keys.atomically(&[source, destination], |access| {
        let kind = |access: &mut crate::store::Access<'_, '_>, key: &[u8]| {
            access.with_key(key, |shard, _| {
                shard
                    .find(key, now)
                    .map(|index| matches!(shard.entry(index).value(), ValueRef::Set(_)))
            })
        };
        let Some(source_is_set) = kind(access, source) else {
            return Ok(false);
        };
        if !source_is_set || kind(access, destination) == Some(false) {
            return Err(CommandError::WrongType);
        }
        if source == destination {
            return access.with_key(source, |shard, _| {
                Ok(read_collection::<SetValue>(shard, source, now)?
                    .is_some_and(|set| set.contains(member)))
            });
        }
        let removed = access.with_key(source, |shard, slot| {
            write_collection::<SetValue, _>(shard, source, slot, now, false, |set| {
                Ok(set.remove(member).then_some(set.is_empty()))
            })
        })?;
        let Some(Some(emptied)) = removed else {
            return Ok(false);
        };
        // Redis's order: srem (and del) of the source, then sadd when the member is new
        events.notify(NotifyClass::Set, "srem", source);
        events.notify_emptied(source, emptied);
        let added = access.with_key(destination, |shard, slot| {
            write_collection::<SetValue, _>(shard, destination, slot, now, true, |set| {
                Ok(set.insert(member))
            })
        })?;
        if added == Some(true) {
            events.notify(NotifyClass::Set, "sadd", destination);
        }
        Ok(true)
    })?;
    ctx.out.integer(i64::from(moved));
    Ok(())
}

/// How the sets of several keys combine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    Inter,
    Union,
    Diff,
}

/// The members of `keys` combined (`limit`: stop an intersection at that many, 0: all);
/// WRONGTYPE when a key holds another type, as Redis checks every key first.
fn combine(
    access: &mut Access<'_, '_>,
    keys: &[&[u8]],
    how: Combine,
    limit: usize,
    now: u64,
) -> Result<Vec<Vec<u8>>, CommandError> {
    access.atomically(keys, |access| {
        let mut sets: Vec<Option<SetValue>> = Vec::with_capacity(keys.len());
        for &key in keys {
            let set = access.with_key(key, |shard, _| {
                read_collection::<SetValue>(shard, key, now).map(|set| set.cloned())
            })?;
            sets.push(set);
        }
        let members: Vec<Vec<u8>> = match how {
            Combine::Inter => {
                if sets.iter().any(Option::is_none) {
                    return Ok(Vec::new());
                }
                let mut sets: Vec<&SetValue> = sets.iter().flatten().collect();
                sets.sort_by_key(|set| set.len());
                let (smallest, others) = sets
                    .split_first()
                    .map_or((None, &[][..]), |(first, rest)| (Some(*first), rest));
                let mut found = Vec::new();
                for member in smallest.into_iter().flat_map(SetValue::iter) {
                    if others.iter().all(|set| set.contains(member)) {
                        found.push(member.to_vec());
                        if limit > 0 && found.len() >= limit {
                            break;
                        }
                    }
                }
                found
            }
            Combine::Union => {
                let mut union = SetValue::default();
                for set in sets.iter().flatten() {
                    for member in set.iter() {
                        union.insert(member);
                    }
                }
                union.iter().map(<[u8]>::to_vec).collect()
            }
            Combine::Diff => match sets.split_first() {
                Some((Some(first), others)) => first
                    .iter()
                    .filter(|member| !others.iter().flatten().any(|other| other.contains(member)))
                    .map(<[u8]>::to_vec)
                    .collect(),
                _ => Vec::new(),
            },
        };
        Ok(members)
    })
}

fn combine_command(ctx: &mut Ctx<'_, '_>, how: Combine) -> CmdResult {
    let keys = &ctx.args[1..];
    let members = combine(&mut ctx.keys, keys, how, 0, ctx.now)?;
    reply_members(ctx.out, members.iter().map(Vec::as_slice));
    Ok(())
}

/// The STORE forms: the result replaces `destination` (deleted when empty).
fn combine_store(ctx: &mut Ctx<'_, '_>, how: Combine) -> CmdResult {
    let (destination, keys, now) = (ctx.args[1], &ctx.args[2..], ctx.now);
    let mut all = vec![destination];
    all.extend_from_slice(keys);
    let stored = ctx.keys.atomically(&all, |access| {
        let members = combine(access, keys, how, 0, now)?;
        let count = members.len();
        let existed = access.with_key(destination, |shard, slot| {
            let existing = shard.find(destination, now);
            // a result overwrites the key in place (no `new` event, as Redis's setKey)
            if count == 0
                && let Some(index) = existing
            {
                shard.remove(index);
            }
            if count > 0 {
                let mut set = SetValue::default();
                for member in &members {
                    set.insert(member);
                }
                shard.insert(destination, slot, Value::Set(Box::new(set)), 0);
            }
            existing.is_some()
        });
        Ok::<_, CommandError>((count, existed))
    })?;
    let (stored, existed) = stored;
    if stored > 0 {
        let event = match how {
            Combine::Inter => "sinterstore",
            Combine::Union => "sunionstore",
            Combine::Diff => "sdiffstore",
        };
        ctx.notify(NotifyClass::Set, event, destination);
    } else {
        ctx.shared
            .keyspace_events
            .notify_emptied(destination, existed);
    }
    ctx.out.integer(stored as i64);
    Ok(())
}

pub fn sinter(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_command(ctx, Combine::Inter)
}

pub fn sunion(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_command(ctx, Combine::Union)
}

pub fn sdiff(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_command(ctx, Combine::Diff)
}

pub fn sinterstore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_store(ctx, Combine::Inter)
}

pub fn sunionstore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_store(ctx, Combine::Union)
}

pub fn sdiffstore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_store(ctx, Combine::Diff)
}

/// SINTERCARD's keys: `numkeys` of them after it.
pub fn sintercard_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    keys_after_numkeys(args, 1, 0)
}

pub fn sintercard(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let numkeys = match parse_int(ctx.args[1]) {
        Ok(count) if count > 0 => count as usize,
        _ => return Err(CommandError::other("ERR numkeys should be greater than 0")),
    };
    if numkeys > ctx.args.len() - 2 {
        return Err(CommandError::other(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let mut limit = 0;
    let mut at = 2 + numkeys;
    while at < ctx.args.len() {
        if ctx.args[at].eq_ignore_ascii_case(b"LIMIT") && at + 1 < ctx.args.len() {
            at += 1;
            limit = match parse_int(ctx.args[at]) {
                Ok(limit) if limit >= 0 => limit as usize,
                _ => return Err(CommandError::other("ERR LIMIT can't be negative")),
            };
        } else {
            return Err(CommandError::Syntax);
        }
        at += 1;
    }
    let keys = &ctx.args[2..2 + numkeys];
    let members = combine(&mut ctx.keys, keys, Combine::Inter, limit, ctx.now)?;
    ctx.out.integer(members.len() as i64);
    Ok(())
}

pub fn sscan(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let cursor: usize = std::str::from_utf8(ctx.args[2])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| CommandError::other("ERR invalid cursor"))?;
    let options = ScanOptions::parse(ctx, 3)?;
    query_collection::<SetValue, _>(ctx, |set, out| {
        let Some(set) = set else {
            out.array(2);
            out.bulk(b"0");
            out.array(0);
            return;
        };
        // from the end toward 0, as HSCAN: a removal moves the last member into the
        // hole, which was already visited, so members present throughout are returned
        let mut remaining = if cursor == 0 {
            set.len()
        } else {
            cursor.min(set.len())
        };
        let budget = if set.len() <= 512 {
            usize::MAX
        } else {
            options.count
        };
        let mut found: Vec<&[u8]> = Vec::new();
        let mut visited = 0;
        while remaining > 0 && visited < budget {
            remaining -= 1;
            visited += 1;
            if let Some(member) = set.get_index(remaining)
                && options.matches(member)
            {
                found.push(member);
            }
        }
        out.array(2);
        out.bulk_str(itoa::Buffer::new().format(remaining));
        out.array(found.len());
        for member in found.iter().rev() {
            out.bulk(member);
        }
    })
}
