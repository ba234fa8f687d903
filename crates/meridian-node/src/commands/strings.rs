//! String commands.

use super::{Ctx, parse_float, parse_int};
use crate::error::{CmdResult, CommandError};
use crate::notify::{KeyspaceEvents, NotifyClass};
use crate::protocol::encode::format_double;
use crate::store::{Access, Shard, Value, ValueRef};

/// Largest string a command may build (proto-max-bulk-len).
pub(super) const MAX_STRING: usize = 512 * 1024 * 1024;

/// Looks up a string for reading; WRONGTYPE for other types.
pub(super) fn read_string<'s>(
    shard: &'s mut Shard,
    key: &[u8],
    now: u64,
) -> Result<Option<&'s [u8]>, CommandError> {
    match shard.read(key, now) {
        None => Ok(None),
        Some(index) => match shard.entry(index).value() {
            ValueRef::Str(bytes) => Ok(Some(bytes)),
            _ => Err(CommandError::WrongType),
        },
    }
}

pub fn get(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, out) = (ctx.args[1], ctx.now, &mut *ctx.out);
    let found = ctx.keys.with_key(key, |shard, _| {
        let value = read_string(shard, key, now)?;
        match value {
            Some(bytes) => out.bulk(bytes),
            None => out.null(),
        }
        Ok::<_, CommandError>(value.is_some())
    })?;
    ctx.missed = !found;
    Ok(())
}

/// Expiry options shared by SET and GETEX.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Unchanged,
    KeepTtl,
    Persist,
    At(u64),
}

/// Parses an EX/PX/EXAT/PXAT amount into an absolute ms time.
fn expire_at(ctx: &Ctx<'_, '_>, unit: &[u8], amount: &[u8]) -> Result<u64, CommandError> {
    let value = parse_int(amount)?;
    let invalid =
        || CommandError::InvalidExpire(String::from_utf8_lossy(ctx.arg(0)).to_ascii_lowercase());
    if value <= 0 {
        return Err(invalid());
    }
    let unit = unit.to_ascii_uppercase();
    let millis = match unit.as_slice() {
        b"EX" | b"EXAT" => value.checked_mul(1000).ok_or_else(invalid)?,
        _ => value,
    };
    let absolute = match unit.as_slice() {
        b"EX" | b"PX" => (ctx.now as i64).checked_add(millis).ok_or_else(invalid)?,
        _ => millis,
    };
    Ok(absolute as u64)
}

pub fn set(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, value) = (ctx.args[1], ctx.args[2]);
    let mut expiry = Expiry::Unchanged;
    let mut nx = false;
    let mut xx = false;
    let mut get = false;
    let mut position = 3;
    while position < ctx.args.len() {
        let option = ctx.args[position].to_ascii_uppercase();
        match option.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if expiry == Expiry::Unchanged => expiry = Expiry::KeepTtl,
            b"EX" | b"PX" | b"EXAT" | b"PXAT"
                if expiry == Expiry::Unchanged && position + 1 < ctx.args.len() =>
            {
                expiry = Expiry::At(expire_at(ctx, &option, ctx.args[position + 1])?);
                position += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 1;
    }
    let (now, out) = (ctx.now, &mut *ctx.out);
    let allowed = ctx.keys.with_key(key, |shard, slot| {
        let existing = shard.find(key, now);
        let mut old_value = None;
        if let Some(index) = existing
            && get
        {
            match shard.entry(index).value() {
                ValueRef::Str(bytes) => old_value = Some(bytes.to_vec()),
                _ => return Err(CommandError::WrongType),
            }
        }
        let allowed = !(nx && existing.is_some() || xx && existing.is_none());
        if allowed {
            let expire = match (expiry, existing) {
                (Expiry::At(at), _) => at,
                (Expiry::KeepTtl, Some(index)) => shard.entry(index).expire_at(),
                _ => 0,
            };
            shard.insert_str(key, slot, value, expire);
        }
        match (get, old_value) {
            (true, Some(old)) => out.bulk(&old),
            (true, None) => out.null(),
            (false, _) if allowed => out.ok(),
            (false, _) => out.null(),
        }
        Ok(allowed)
    })?;
    if allowed {
        notify_set(ctx, key, matches!(expiry, Expiry::At(_)));
    }
    Ok(())
}

/// Redis's setGenericCommand events: `set`, then `expire` when a TTL was given.
fn notify_set(ctx: &Ctx<'_, '_>, key: &[u8], with_ttl: bool) {
    ctx.notify(NotifyClass::String, "set", key);
    if with_ttl {
        ctx.notify(NotifyClass::Generic, "expire", key);
    }
}

/// SETEX / PSETEX: stores `value` with a TTL.
fn store(ctx: &mut Ctx<'_, '_>, key: &[u8], value: &[u8], expire: u64) {
    ctx.keys.with_key(key, |shard, slot| {
        shard.insert_str(key, slot, value, expire);
    });
    notify_set(ctx, key, true);
}

pub fn setnx(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, value, now) = (ctx.args[1], ctx.args[2], ctx.now);
    let created = ctx.keys.with_key(key, |shard, slot| {
        if shard.find(key, now).is_some() {
            return false;
        }
        shard.insert_str(key, slot, value, 0);
        true
    });
    if created {
        notify_set(ctx, key, false);
    }
    ctx.out.integer(i64::from(created));
    Ok(())
}

pub fn setex(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let at = expire_at(ctx, b"EX", ctx.args[2])?;
    store(ctx, ctx.args[1], ctx.args[3], at);
    ctx.out.ok();
    Ok(())
}

pub fn psetex(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let at = expire_at(ctx, b"PX", ctx.args[2])?;
    store(ctx, ctx.args[1], ctx.args[3], at);
    ctx.out.ok();
    Ok(())
}

pub fn getset(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, value, now, out) = (ctx.args[1], ctx.args[2], ctx.now, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, slot| {
        match read_string(shard, key, now)? {
            Some(old) => out.bulk(old),
            None => out.null(),
        }
        shard.insert_str(key, slot, value, 0);
        Ok::<_, CommandError>(())
    })?;
    notify_set(ctx, key, false);
    Ok(())
}

pub fn getdel(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, out) = (ctx.args[1], ctx.now, &mut *ctx.out);
    let deleted = ctx.keys.with_key(key, |shard, _| {
        let Some(index) = shard.read(key, now) else {
            out.null();
            return Ok(false);
        };
        if !matches!(shard.entry(index).value(), ValueRef::Str(_)) {
            return Err(CommandError::WrongType);
        }
        if let Value::Str(bytes) = shard.remove(index).into_value() {
            out.bulk(&bytes);
        }
        Ok(true)
    })?;
    if deleted {
        ctx.notify(NotifyClass::Generic, "del", key);
    }
    Ok(())
}

pub fn getex(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let mut expiry = Expiry::Unchanged;
    let mut position = 2;
    while position < ctx.args.len() {
        let option = ctx.args[position].to_ascii_uppercase();
        match option.as_slice() {
            b"PERSIST" if expiry == Expiry::Unchanged => expiry = Expiry::Persist,
            b"EX" | b"PX" | b"EXAT" | b"PXAT"
                if expiry == Expiry::Unchanged && position + 1 < ctx.args.len() =>
            {
                expiry = Expiry::At(expire_at(ctx, &option, ctx.args[position + 1])?);
                position += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 1;
    }
    let (key, now, out) = (ctx.args[1], ctx.now, &mut *ctx.out);
    let event = ctx.keys.with_key(key, |shard, _| {
        let Some(index) = shard.read(key, now) else {
            out.null();
            return Ok(None);
        };
        match shard.entry(index).value() {
            ValueRef::Str(bytes) => out.bulk(bytes),
            _ => return Err(CommandError::WrongType),
        }
        Ok(match expiry {
            Expiry::Persist if shard.entry(index).expire_at() != 0 => {
                shard.set_expire(index, 0);
                Some("persist")
            }
            Expiry::At(at) if at <= now => {
                shard.remove(index);
                Some("del")
            }
            Expiry::At(at) => {
                shard.set_expire(index, at);
                Some("expire")
            }
            _ => None,
        })
    })?;
    if let Some(event) = event {
        ctx.notify(NotifyClass::Generic, event, key);
    }
    Ok(())
}

pub fn mget(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (now, keys, out) = (ctx.now, &ctx.args[1..], &mut *ctx.out);
    out.array(keys.len());
    // all shards involved are locked together: the reply is one snapshot
    ctx.keys.atomically(keys, |access| {
        for &key in keys {
            access.with_key(key, |shard, _| match read_string(shard, key, now) {
                Ok(Some(bytes)) => out.bulk(bytes),
                _ => out.null(),
            });
        }
    });
    Ok(())
}

/// A key (or field) and its value.
type Pair<'x> = (&'x [u8], &'x [u8]);

fn pairs<'x>(ctx: &Ctx<'_, 'x>) -> Result<Vec<Pair<'x>>, CommandError> {
    if ctx.args.len().is_multiple_of(2) {
        return Err(ctx.wrong_arity());
    }
    Ok(ctx.args[1..]
        .chunks(2)
        .map(|pair| (pair[0], pair[1]))
        .collect())
}

pub fn mset(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let pairs = pairs(ctx)?;
    let keys: Vec<&[u8]> = pairs.iter().map(|pair| pair.0).collect();
    let events = &*ctx.shared.keyspace_events;
    ctx.keys
        .atomically(&keys, |access| set_pairs(access, &pairs, events));
    ctx.out.ok();
    Ok(())
}

/// MSET / MSETNX's writes: each key set, then its `set` event (a created key's
/// `new` comes first, as in Redis's loop).
fn set_pairs(access: &mut Access<'_, '_>, pairs: &[Pair<'_>], events: &KeyspaceEvents) {
    for (key, value) in pairs {
        access.with_key(key, |shard, slot| {
            shard.insert_str(key, slot, value, 0);
        });
        events.notify(NotifyClass::String, "set", key);
    }
}

pub fn msetnx(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let pairs = pairs(ctx)?;
    let keys: Vec<&[u8]> = pairs.iter().map(|pair| pair.0).collect();
    let (now, events) = (ctx.now, &*ctx.shared.keyspace_events);
    let set = ctx.keys.atomically(&keys, |access| {
        if keys
            .iter()
            .any(|key| access.with_key(key, |shard, _| shard.find(key, now).is_some()))
        {
            return false;
        }
        set_pairs(access, &pairs, events);
        true
    });
    ctx.out.integer(i64::from(set));
    Ok(())
}

pub fn append(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, suffix, now) = (ctx.args[1], ctx.args[2], ctx.now);
    let length = ctx.keys.with_key(key, |shard, slot| {
        let Some(index) = shard.find(key, now) else {
            shard.insert_str(key, slot, suffix, 0);
            return Ok(suffix.len());
        };
        match shard.entry(index).value() {
            ValueRef::Str(bytes) if bytes.len() + suffix.len() > MAX_STRING => {
                return Err(CommandError::other(
                    "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                ));
            }
            ValueRef::Str(_) => {}
            _ => return Err(CommandError::WrongType),
        }
        Ok(shard.modify(index, |value| match value {
            Value::Str(bytes) => {
                bytes.extend_from_slice(suffix);
                bytes.len()
            }
            _ => 0,
        }))
    })?;
    ctx.notify(NotifyClass::String, "append", key);
    ctx.out.integer(length as i64);
    Ok(())
}

pub fn strlen(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let length = ctx.keys.with_key(key, |shard, _| {
        read_string(shard, key, now).map(|value| value.map_or(0, <[u8]>::len))
    })?;
    ctx.out.integer(length as i64);
    Ok(())
}

pub fn getrange(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let start = ctx.int_arg(2)?;
    let end = ctx.int_arg(3)?;
    let (key, now, out) = (ctx.args[1], ctx.now, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        let bytes = read_string(shard, key, now)?.unwrap_or_default();
        let len = bytes.len() as i64;
        if len == 0 || (start < 0 && end < 0 && start > end) {
            out.bulk(b"");
            return Ok(());
        }
        let start = if start < 0 {
            (len + start).max(0)
        } else {
            start
        };
        let end = if end < 0 {
            (len + end).max(0)
        } else {
            end.min(len - 1)
        };
        if start > end || start >= len {
            out.bulk(b"");
        } else {
            out.bulk(&bytes[start as usize..=end as usize]);
        }
        Ok(())
    })
}

pub fn setrange(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let offset = ctx.int_arg(2)?;
    if offset < 0 {
        return Err(CommandError::other("ERR offset is out of range"));
    }
    let offset = offset as usize;
    let (key, patch, now) = (ctx.args[1], ctx.args[3], ctx.now);
    if !patch.is_empty() && offset + patch.len() > MAX_STRING {
        return Err(CommandError::other(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        ));
    }
    let apply = move |bytes: &mut Vec<u8>| {
        if patch.is_empty() {
            return bytes.len();
        }
        if bytes.len() < offset + patch.len() {
            bytes.resize(offset + patch.len(), 0);
        }
        bytes[offset..offset + patch.len()].copy_from_slice(patch);
        bytes.len()
    };
    let length = ctx.keys.with_key(key, |shard, slot| {
        let Some(index) = shard.find(key, now) else {
            if patch.is_empty() {
                return Ok(0);
            }
            let mut bytes = Vec::new();
            let length = apply(&mut bytes);
            shard.insert(key, slot, Value::Str(bytes), 0);
            return Ok(length);
        };
        if !matches!(shard.entry(index).value(), ValueRef::Str(_)) {
            return Err(CommandError::WrongType);
        }
        Ok(shard.modify(index, |value| match value {
            Value::Str(bytes) => apply(bytes),
            _ => 0,
        }))
    })?;
    // an empty patch changes nothing (and creates nothing)
    if !patch.is_empty() {
        ctx.notify(NotifyClass::String, "setrange", key);
    }
    ctx.out.integer(length as i64);
    Ok(())
}

fn increment(ctx: &mut Ctx<'_, '_>, delta: i64) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let result = ctx.keys.with_key(key, |shard, slot| {
        let Some(index) = shard.find(key, now) else {
            shard.insert(
                key,
                slot,
                Value::Str(itoa::Buffer::new().format(delta).as_bytes().to_vec()),
                0,
            );
            return Ok(delta);
        };
        let current = match shard.entry(index).value() {
            ValueRef::Str(bytes) => parse_int(bytes)?,
            _ => return Err(CommandError::WrongType),
        };
        let next = current.checked_add(delta).ok_or(CommandError::Overflow)?;
        shard.modify(index, |value| {
            *value = Value::Str(itoa::Buffer::new().format(next).as_bytes().to_vec());
        });
        Ok(next)
    })?;
    ctx.notify(NotifyClass::String, "incrby", key);
    ctx.out.integer(result);
    Ok(())
}

pub fn incr(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    increment(ctx, 1)
}

pub fn decr(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    increment(ctx, -1)
}

pub fn incrby(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let delta = ctx.int_arg(2)?;
    increment(ctx, delta)
}

pub fn decrby(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let delta = ctx.int_arg(2)?;
    if delta == i64::MIN {
        return Err(CommandError::other("ERR decrement would overflow"));
    }
    increment(ctx, -delta)
}

pub fn incrbyfloat(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let delta = parse_float(ctx.args[2])?;
    let (key, now) = (ctx.args[1], ctx.now);
    let text = ctx.keys.with_key(key, |shard, slot| {
        let existing = shard.find(key, now);
        let current = match existing.map(|index| shard.entry(index).value()) {
            None => 0.0,
            Some(ValueRef::Str(bytes)) => parse_float(bytes)?,
            Some(_) => return Err(CommandError::WrongType),
        };
        let next = current + delta;
        if !next.is_finite() {
            return Err(CommandError::other(
                "ERR increment would produce NaN or Infinity",
            ));
        }
        let text = format_double(next);
        match existing {
            Some(index) => {
                shard.modify(index, |value| *value = Value::Str(text.as_bytes().to_vec()))
            }
            None => {
                shard.insert(key, slot, Value::Str(text.as_bytes().to_vec()), 0);
            }
        }
        Ok(text)
    })?;
    ctx.notify(NotifyClass::String, "incrbyfloat", key);
    ctx.out.bulk(text.as_bytes());
    Ok(())
}
