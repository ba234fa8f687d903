//! Hash commands.

use super::keys::ScanOptions;
use super::{
    Ctx, MAX_REPEATED_PICKS, parse_float, parse_int, query_collection, random_picker, random_picks,
    read_collection, write_collection,
};
use crate::error::{CmdResult, CommandError};
use crate::notify::NotifyClass;
use crate::protocol::encode::format_double;
use crate::protocol::frame::parse_i64;
use crate::store::{HashValue, ValueRef};

fn set_fields(ctx: &mut Ctx<'_, '_>) -> Result<i64, CommandError> {
    if !ctx.args.len().is_multiple_of(2) {
        return Err(ctx.wrong_arity());
    }
    let (key, now, args) = (ctx.args[1], ctx.now, ctx.args);
    let created = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<HashValue, _>(shard, key, slot, now, true, |hash| {
            Ok(args[2..]
                .chunks(2)
                .filter(|pair| hash.insert(pair[0], pair[1]))
                .count() as i64)
        })
    })?;
    // like Redis: `hset` even when every field only changed its value
    ctx.notify(NotifyClass::Hash, "hset", key);
    Ok(created.unwrap_or(0))
}

pub fn hset(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let created = set_fields(ctx)?;
    ctx.out.integer(created);
    Ok(())
}

pub fn hmset(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    set_fields(ctx)?;
    ctx.out.ok();
    Ok(())
}

pub fn hsetnx(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, field, value, now) = (ctx.args[1], ctx.args[2], ctx.args[3], ctx.now);
    let created = ctx.keys.with_key(key, |shard, slot| {
        if let Some(existing) = shard.find(key, now) {
            match shard.entry(existing).value() {
                ValueRef::Hash(hash) if hash.get(field).is_some() => return Ok(false),
                ValueRef::Hash(_) => {}
                _ => return Err(CommandError::WrongType),
            }
        }
        write_collection::<HashValue, _>(shard, key, slot, now, true, |hash| {
            Ok(hash.insert(field, value))
        })
        .map(|created| created == Some(true))
    })?;
    if created {
        ctx.notify(NotifyClass::Hash, "hset", key);
    }
    ctx.out.integer(i64::from(created));
    Ok(())
}

pub fn hget(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, field, now, out) = (ctx.args[1], ctx.args[2], ctx.now, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        match read_collection::<HashValue>(shard, key, now)?.and_then(|hash| hash.get(field)) {
            Some(value) => out.bulk(value),
            None => out.null(),
        }
        Ok(())
    })
}

pub fn hmget(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, out, fields) = (ctx.args[1], ctx.now, &mut *ctx.out, &ctx.args[2..]);
    ctx.keys.with_key(key, |shard, _| {
        let hash = read_collection::<HashValue>(shard, key, now)?;
        out.array(fields.len());
        for field in fields {
            match hash.and_then(|hash| hash.get(field)) {
                Some(value) => out.bulk(value),
                None => out.null(),
            }
        }
        Ok(())
    })
}

pub fn hdel(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, fields) = (ctx.args[1], ctx.now, &ctx.args[2..]);
    let removed = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<HashValue, _>(shard, key, slot, now, false, |hash| {
            let removed = fields.iter().filter(|field| hash.remove(field)).count();
            Ok((removed, hash.is_empty()))
        })
    })?;
    let (removed, emptied) = removed.unwrap_or_default();
    if removed > 0 {
        ctx.notify(NotifyClass::Hash, "hdel", key);
        ctx.shared.keyspace_events.notify_emptied(key, emptied);
    }
    ctx.out.integer(removed as i64);
    Ok(())
}

/// Runs a read-only query on a hash (None when missing).
pub fn hexists(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let field = ctx.args[2];
    query_collection::<HashValue, _>(ctx, |hash, out| {
        out.integer(i64::from(
            hash.is_some_and(|hash| hash.get(field).is_some()),
        ))
    })
}

pub fn hlen(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    query_collection::<HashValue, _>(ctx, |hash, out| {
        out.integer(hash.map_or(0, HashValue::len) as i64)
    })
}

pub fn hstrlen(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let field = ctx.args[2];
    query_collection::<HashValue, _>(ctx, |hash, out| {
        out.integer(hash.and_then(|hash| hash.get(field)).map_or(0, Vec::len) as i64)
    })
}

pub fn hkeys(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    query_collection::<HashValue, _>(ctx, |hash, out| {
        out.array(hash.map_or(0, HashValue::len));
        for (field, _) in hash.into_iter().flat_map(HashValue::iter) {
            out.bulk(field);
        }
    })
}

pub fn hvals(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    query_collection::<HashValue, _>(ctx, |hash, out| {
        out.array(hash.map_or(0, HashValue::len));
        for (_, value) in hash.into_iter().flat_map(HashValue::iter) {
            out.bulk(value);
        }
    })
}

pub fn hgetall(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    query_collection::<HashValue, _>(ctx, |hash, out| {
        out.map(hash.map_or(0, HashValue::len));
        for (field, value) in hash.into_iter().flat_map(HashValue::iter) {
            out.bulk(field);
            out.bulk(value);
        }
    })
}

pub fn hincrby(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let delta = ctx.int_arg(3)?;
    let (key, field, now) = (ctx.args[1], ctx.args[2], ctx.now);
    let result = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<HashValue, _>(shard, key, slot, now, true, |hash| {
            let current = match hash.get(field) {
                Some(value) => parse_i64(value)
                    .ok_or_else(|| CommandError::other("ERR hash value is not an integer"))?,
                None => 0,
            };
            let next = current.checked_add(delta).ok_or(CommandError::Overflow)?;
            hash.insert(field, itoa::Buffer::new().format(next).as_bytes());
            Ok(next)
        })
    })?;
    ctx.notify(NotifyClass::Hash, "hincrby", key);
    ctx.out.integer(result.unwrap_or(0));
    Ok(())
}

pub fn hincrbyfloat(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let delta = parse_float(ctx.args[3])?;
    let (key, field, now) = (ctx.args[1], ctx.args[2], ctx.now);
    let result = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<HashValue, _>(shard, key, slot, now, true, |hash| {
            let current = match hash.get(field) {
                Some(value) => parse_float(value)
                    .map_err(|_| CommandError::other("ERR hash value is not a float"))?,
                None => 0.0,
            };
            let next = current + delta;
            if !next.is_finite() {
                return Err(CommandError::other(
                    "ERR increment would produce NaN or Infinity",
                ));
            }
            let text = format_double(next);
            hash.insert(field, text.as_bytes());
            Ok(text)
        })
    })?;
    ctx.notify(NotifyClass::Hash, "hincrbyfloat", key);
    ctx.out.bulk(result.unwrap_or_default().as_bytes());
    Ok(())
}

pub fn hscan(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let cursor: usize = std::str::from_utf8(ctx.args[2])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| CommandError::other("ERR invalid cursor"))?;
    let options = ScanOptions::parse(ctx, 3)?;
    query_collection::<HashValue, _>(ctx, |hash, out| {
        let Some(hash) = hash else {
            out.array(2);
            out.bulk(b"0");
            out.array(0);
            return;
        };
        // Indexes are visited from the end toward 0: removals move the last
        // element into the hole, which was already visited, so every element
        // present for the whole scan is still returned.
        let mut remaining = if cursor == 0 {
            hash.len()
        } else {
            cursor.min(hash.len())
        };
        let mut found: Vec<(&[u8], &[u8])> = Vec::new();
        let budget = if hash.len() <= 512 {
            usize::MAX
        } else {
            options.count
        };
        let mut visited = 0;
        while remaining > 0 && visited < budget {
            remaining -= 1;
            visited += 1;
            if let Some((field, value)) = hash.get_index(remaining)
                && options.matches(field)
            {
                found.push((field, value));
            }
        }
        out.array(2);
        out.bulk_str(itoa::Buffer::new().format(remaining));
        let per_item = if options.novalues { 1 } else { 2 };
        out.array(found.len() * per_item);
        for (field, value) in found.iter().rev() {
            out.bulk(field);
            if !options.novalues {
                out.bulk(value);
            }
        }
    })
}

pub fn hrandfield(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let count = match ctx.args.get(2) {
        Some(text) => Some(parse_int(text)?),
        None => None,
    };
    let with_values = match ctx.args.get(3) {
        Some(option) if option.eq_ignore_ascii_case(b"WITHVALUES") && ctx.args.len() == 4 => true,
        Some(_) => return Err(CommandError::Syntax),
        None => false,
    };
    if count.is_some_and(|count| count < 0 && count.unsigned_abs() > MAX_REPEATED_PICKS) {
        return Err(CommandError::other("ERR value is out of range"));
    }
    let mut random = random_picker(ctx);
    query_collection::<HashValue, _>(ctx, |hash, out| {
        let Some(count) = count else {
            match hash {
                Some(hash) => {
                    let (field, _) = hash.get_index(random(hash.len())).unwrap_or_default();
                    out.bulk(field);
                }
                None => out.null(),
            }
            return;
        };
        let Some(hash) = hash else {
            out.array(0);
            return;
        };
        let len = hash.len();
        let (total, picks) = random_picks(count, len, random);
        if with_values && out.is_resp3() {
            out.array(total);
        } else {
            out.array(total * if with_values { 2 } else { 1 });
        }
        for index in picks {
            let (field, value) = hash.get_index(index).unwrap_or_default();
            if with_values && out.is_resp3() {
                out.array(2);
            }
            out.bulk(field);
            if with_values {
                out.bulk(value);
            }
        }
    })
}
