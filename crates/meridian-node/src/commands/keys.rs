//! Generic keyspace commands.

use super::{Ctx, parse_int};
use crate::error::{CmdResult, CommandError};
use crate::glob;
use crate::notify::NotifyClass;
use crate::store::ValueRef;

pub fn del(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let now = ctx.now;
    let mut removed = 0;
    for &key in &ctx.args[1..] {
        let deleted = ctx
            .keys
            .with_key(key, |shard, _| match shard.find(key, now) {
                Some(index) => {
                    shard.remove(index);
                    1
                }
                None => 0,
            });
        if deleted > 0 {
            ctx.notify(NotifyClass::Generic, "del", key);
        }
        removed += deleted;
    }
    ctx.out.integer(removed);
    Ok(())
}

pub fn exists(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let now = ctx.now;
    let mut found = 0;
    for &key in &ctx.args[1..] {
        found += ctx
            .keys
            .with_key(key, |shard, _| i64::from(shard.find(key, now).is_some()));
    }
    ctx.out.integer(found);
    Ok(())
}

pub fn touch(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let now = ctx.now;
    let mut found = 0;
    for &key in &ctx.args[1..] {
        found += ctx
            .keys
            .with_key(key, |shard, _| match shard.find(key, now) {
                Some(index) => {
                    shard.touch(index);
                    1
                }
                None => 0,
            });
    }
    ctx.out.integer(found);
    Ok(())
}

pub fn type_of(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let name = ctx.keys.with_key(key, |shard, _| {
        shard
            .find(key, now)
            .map(|index| shard.entry(index).value().type_name())
    });
    ctx.out.simple(name.unwrap_or("none"));
    Ok(())
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

fn set_expiry(ctx: &mut Ctx<'_, '_>, unit: Unit, absolute: bool) -> CmdResult {
    let amount = ctx.int_arg(2)?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for &option in &ctx.args[3..] {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(CommandError::other(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(option)
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::other(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(CommandError::other(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let invalid =
        || CommandError::InvalidExpire(String::from_utf8_lossy(ctx.arg(0)).to_ascii_lowercase());
    let millis = match unit {
        Unit::Seconds => amount.checked_mul(1000).ok_or_else(invalid)?,
        Unit::Millis => amount,
    };
    let target = if absolute {
        millis
    } else {
        (ctx.now as i64).checked_add(millis).ok_or_else(invalid)?
    };
    let (key, now) = (ctx.args[1], ctx.now);
    let event = ctx.keys.with_key(key, |shard, _| {
        let index = shard.find(key, now)?;
        let current = shard.entry(index).expire_at();
        // A persistent key has an infinite TTL for GT/LT comparisons.
        let blocked = (nx && current != 0)
            || (xx && current == 0)
            || (gt && (current == 0 || target <= current as i64))
            || (lt && current != 0 && target >= current as i64);
        let allowed = !blocked;
        if !allowed {
            return None;
        }
        // like Redis: a time already past deletes the key (a `del` event)
        if target <= now as i64 {
            shard.remove(index);
            Some("del")
        } else {
            shard.set_expire(index, target as u64);
            Some("expire")
        }
    });
    if let Some(event) = event {
        ctx.notify(NotifyClass::Generic, event, key);
    }
    ctx.out.integer(i64::from(event.is_some()));
    Ok(())
}

pub fn expire(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    set_expiry(ctx, Unit::Seconds, false)
}

pub fn pexpire(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    set_expiry(ctx, Unit::Millis, false)
}

pub fn expireat(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    set_expiry(ctx, Unit::Seconds, true)
}

pub fn pexpireat(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    set_expiry(ctx, Unit::Millis, true)
}

/// Some(expire_at) for a live key (0 = persistent), None when missing.
fn expiry_of(ctx: &mut Ctx<'_, '_>) -> Option<u64> {
    let (key, now) = (ctx.args[1], ctx.now);
    ctx.keys.with_key(key, |shard, _| {
        shard
            .find(key, now)
            .map(|index| shard.entry(index).expire_at())
    })
}

fn reply_ttl(ctx: &mut Ctx<'_, '_>, convert: impl Fn(u64, u64) -> i64) -> CmdResult {
    let now = ctx.now;
    let reply = match expiry_of(ctx) {
        None => -2,
        Some(0) => -1,
        Some(at) => convert(at, now),
    };
    ctx.out.integer(reply);
    Ok(())
}

pub fn ttl(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    reply_ttl(ctx, |at, now| (at.saturating_sub(now) as i64 + 500) / 1000)
}

pub fn pttl(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    reply_ttl(ctx, |at, now| at.saturating_sub(now) as i64)
}

pub fn expiretime(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    reply_ttl(ctx, |at, _| (at / 1000) as i64)
}

pub fn pexpiretime(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    reply_ttl(ctx, |at, _| at as i64)
}

pub fn persist(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let changed = ctx
        .keys
        .with_key(key, |shard, _| match shard.find(key, now) {
            Some(index) if shard.entry(index).expire_at() != 0 => {
                shard.set_expire(index, 0);
                true
            }
            _ => false,
        });
    if changed {
        ctx.notify(NotifyClass::Generic, "persist", key);
    }
    ctx.out.integer(i64::from(changed));
    Ok(())
}

pub fn keys(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (pattern, now) = (ctx.args[1], ctx.now);
    let match_all = pattern == b"*";
    let mut found: Vec<Vec<u8>> = Vec::new();
    ctx.keys.each_shard(|shard| {
        for position in 0..shard.slab_len() {
            if let Some(entry) = shard.entry_at(position)
                && (entry.expire_at() == 0 || entry.expire_at() > now)
                && (match_all || glob::matches(pattern, entry.key()))
            {
                found.push(entry.key().to_vec());
            }
        }
    });
    ctx.out.array(found.len());
    for key in &found {
        ctx.out.bulk(key);
    }
    Ok(())
}

pub fn scan(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let cursor: u64 = std::str::from_utf8(ctx.args[1])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| CommandError::other("ERR invalid cursor"))?;
    let options = ScanOptions::parse(ctx, 2)?;
    let db = ctx.keys.db();
    let shard_count = db.shard_count() as u64;
    let mut shard_index = cursor % shard_count;
    let mut position = (cursor / shard_count) as usize;
    let mut visited = 0usize;
    let mut found: Vec<Vec<u8>> = Vec::new();
    let now = ctx.now;
    let next_cursor = loop {
        let done_with_shard = ctx.keys.with_slot(shard_index as u16, |shard| {
            while position < shard.slab_len() && visited < options.count {
                if let Some(entry) = shard.entry_at(position) {
                    visited += 1;
                    if (entry.expire_at() == 0 || entry.expire_at() > now)
                        && options.accepts(entry.key(), entry.value())
                    {
                        found.push(entry.key().to_vec());
                    }
                }
                position += 1;
            }
            position >= shard.slab_len()
        });
        if done_with_shard {
            shard_index += 1;
            position = 0;
            if shard_index >= shard_count {
                break 0;
            }
        }
        if visited >= options.count {
            break position as u64 * shard_count + shard_index;
        }
    };
    ctx.out.array(2);
    ctx.out.bulk_str(itoa::Buffer::new().format(next_cursor));
    ctx.out.array(found.len());
    for key in &found {
        ctx.out.bulk(key);
    }
    Ok(())
}

/// MATCH / COUNT / TYPE options of SCAN and HSCAN.
pub struct ScanOptions<'x> {
    pub pattern: Option<&'x [u8]>,
    pub count: usize,
    pub type_name: Option<Vec<u8>>,
    pub novalues: bool,
}

impl<'x> ScanOptions<'x> {
    pub fn parse(ctx: &Ctx<'_, 'x>, from: usize) -> Result<Self, CommandError> {
        let mut options = ScanOptions {
            pattern: None,
            count: 10,
            type_name: None,
            novalues: false,
        };
        let mut position = from;
        while position < ctx.args.len() {
            let option = ctx.args[position].to_ascii_uppercase();
            let value = ctx.args.get(position + 1).copied();
            match (option.as_slice(), value) {
                (b"MATCH", Some(pattern)) => {
                    options.pattern = Some(pattern).filter(|pattern| *pattern != b"*")
                }
                (b"COUNT", Some(count)) => {
                    let count = parse_int(count)?;
                    if count < 1 {
                        return Err(CommandError::Syntax);
                    }
                    options.count = count as usize;
                }
                (b"TYPE", Some(type_name)) => {
                    options.type_name = Some(type_name.to_ascii_lowercase())
                }
                (b"NOVALUES", _) => {
                    options.novalues = true;
                    position += 1;
                    continue;
                }
                _ => return Err(CommandError::Syntax),
            }
            position += 2;
        }
        Ok(options)
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        self.pattern
            .is_none_or(|pattern| glob::matches(pattern, name))
    }

    fn accepts(&self, key: &[u8], value: ValueRef<'_>) -> bool {
        self.matches(key)
            && self
                .type_name
                .as_deref()
                .is_none_or(|wanted| wanted == value.type_name().as_bytes())
    }
}

pub fn randomkey(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let now = ctx.now;
    let shard_count = ctx.keys.db().shard_count();
    let start = (now as usize).wrapping_mul(2654435761) % shard_count;
    let mut key = None;
    for step in 0..shard_count {
        let slot = ((start + step) % shard_count) as u16;
        key = ctx.keys.with_slot(slot, |shard| {
            shard
                .random_index(now)
                .map(|index| shard.entry(index).key().to_vec())
        });
        if key.is_some() {
            break;
        }
    }
    match key {
        Some(key) => ctx.out.bulk(&key),
        None => ctx.out.null(),
    }
    Ok(())
}

/// Moves or copies `source` to `target` atomically. Returns Ok(None) when the
/// source is missing, Ok(Some(false)) when the target exists and `replace` is off
/// (or when both are the same key: nothing moves).
fn transfer(
    ctx: &mut Ctx<'_, '_>,
    replace: bool,
    keep_source: bool,
) -> Result<Option<bool>, CommandError> {
    let (source, target, now) = (ctx.args[1], ctx.args[2], ctx.now);
    ctx.keys.atomically(&[source, target], |access| {
        let taken = access.with_key(source, |shard, _| {
            let index = shard.find(source, now)?;
            let entry = shard.entry(index);
            let copy = (entry.value().to_value(), entry.expire_at());
            Some(copy)
        });
        let Some((value, expire_at)) = taken else {
            return Ok(None);
        };
        if source == target {
            return Ok(Some(false));
        }
        let target_exists = access.with_key(target, |shard, _| shard.find(target, now).is_some());
        if target_exists && !replace {
            return Ok(Some(false));
        }
        if !keep_source {
            access.with_key(source, |shard, _| {
                if let Some(index) = shard.find(source, now) {
                    shard.remove(index);
                }
            });
        }
        access.with_key(target, |shard, slot| {
            // like Redis, a replaced target is deleted and created again (`new`)
            if let Some(index) = shard.find(target, now) {
                shard.remove(index);
            }
            shard.insert(target, slot, value, expire_at);
        });
        Ok(Some(true))
    })
}

pub fn rename(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match transfer(ctx, true, false)? {
        None => Err(CommandError::NoSuchKey),
        Some(moved) => {
            if moved {
                notify_rename(ctx);
            }
            ctx.out.ok();
            Ok(())
        }
    }
}

/// Redis's renameGenericCommand events.
fn notify_rename(ctx: &Ctx<'_, '_>) {
    ctx.notify(NotifyClass::Generic, "rename_from", ctx.args[1]);
    ctx.notify(NotifyClass::Generic, "rename_to", ctx.args[2]);
}

pub fn renamenx(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    if ctx.args[1] == ctx.args[2] {
        let exists = expiry_of(ctx).is_some();
        if !exists {
            return Err(CommandError::NoSuchKey);
        }
        ctx.out.integer(0);
        return Ok(());
    }
    match transfer(ctx, false, false)? {
        None => Err(CommandError::NoSuchKey),
        Some(done) => {
            if done {
                notify_rename(ctx);
            }
            ctx.out.integer(i64::from(done));
            Ok(())
        }
    }
}

pub fn copy(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let mut replace = false;
    let mut position = 3;
    while position < ctx.args.len() {
        match ctx.args[position].to_ascii_uppercase().as_slice() {
            b"REPLACE" => replace = true,
            b"DB" if position + 1 < ctx.args.len() => {
                let db = ctx.int_arg(position + 1)?;
                if db != 0 {
                    return Err(CommandError::other("ERR DB index is out of range"));
                }
                position += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
        position += 1;
    }
    if ctx.args[1] == ctx.args[2] {
        return Err(CommandError::other(
            "ERR source and destination objects are the same",
        ));
    }
    let copied = transfer(ctx, replace, true)? == Some(true);
    if copied {
        ctx.notify(NotifyClass::Generic, "copy_to", ctx.args[2]);
    }
    ctx.out.integer(i64::from(copied));
    Ok(())
}
