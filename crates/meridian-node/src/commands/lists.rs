//! List commands, with Redis 7.0's replies and error texts (`t_list.c`), including the
//! order in which it checks arguments and types.

use std::time::Duration;

use super::{
    Block, Ctx, Pending, keys_after_numkeys, parse_float, parse_int, positive_count,
    read_collection, write_collection,
};
use crate::error::{CmdResult, CommandError};
use crate::exec::Caller;
use crate::notify::{KeyspaceEvents, NotifyClass};
use crate::store::{ListValue, Shard, ValueRef};

/// Which end of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

impl End {
    /// The keyspace event of pushing onto this end.
    fn push_event(self) -> &'static str {
        match self {
            End::Left => "lpush",
            End::Right => "rpush",
        }
    }

    /// The keyspace event of popping from this end.
    fn pop_event(self) -> &'static str {
        match self {
            End::Left => "lpop",
            End::Right => "rpop",
        }
    }

    fn parse(word: &[u8]) -> Result<End, CommandError> {
        if word.eq_ignore_ascii_case(b"LEFT") {
            Ok(End::Left)
        } else if word.eq_ignore_ascii_case(b"RIGHT") {
            Ok(End::Right)
        } else {
            Err(CommandError::Syntax)
        }
    }
}

fn pop(list: &mut ListValue, end: End) -> Option<Box<[u8]>> {
    match end {
        End::Left => list.pop_front(),
        End::Right => list.pop_back(),
    }
}

fn push(list: &mut ListValue, end: End, item: &[u8]) {
    match end {
        End::Left => list.push_front(item),
        End::Right => list.push_back(item),
    }
}

/// Redis's listElementsRemoved events: the pop, then `del` when it emptied the list.
fn notify_popped(events: &KeyspaceEvents, key: &[u8], end: End, emptied: bool) {
    events.notify(NotifyClass::List, end.pop_event(), key);
    events.notify_emptied(key, emptied);
}

/// Fails with WRONGTYPE when `key` holds something other than a list.
fn check_list(shard: &mut Shard, key: &[u8], now: u64) -> Result<(), CommandError> {
    match shard.find(key, now).map(|index| shard.entry(index).value()) {
        None | Some(ValueRef::List(_)) => Ok(()),
        Some(_) => Err(CommandError::WrongType),
    }
}

/// `index` of a list of `len` (negative: from the end) as a position, if inside.
fn position(index: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let at = if index < 0 { len + index } else { index };
    (0..len).contains(&at).then_some(at as usize)
}

/// LRANGE / LTRIM's `start..=stop` on a list of `len`, clamped; None when empty.
fn span(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 { len + start } else { start }.max(0);
    let stop = if stop < 0 { len + stop } else { stop };
    if start > stop || start >= len {
        return None;
    }
    Some((start as usize, stop.min(len - 1) as usize))
}

fn push_command(ctx: &mut Ctx<'_, '_>, end: End, create: bool) -> CmdResult {
    let (key, now, items) = (ctx.args[1], ctx.now, &ctx.args[2..]);
    let len = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<ListValue, _>(shard, key, slot, now, create, |list| {
            for item in items {
                push(list, end, item);
            }
            Ok(list.len())
        })
    })?;
    if len.is_some() {
        ctx.notify(NotifyClass::List, end.push_event(), key);
    }
    ctx.out.integer(len.unwrap_or(0) as i64);
    Ok(())
}

pub fn lpush(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    push_command(ctx, End::Left, true)
}

pub fn rpush(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    push_command(ctx, End::Right, true)
}

pub fn lpushx(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    push_command(ctx, End::Left, false)
}

pub fn rpushx(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    push_command(ctx, End::Right, false)
}

fn pop_command(ctx: &mut Ctx<'_, '_>, end: End) -> CmdResult {
    if ctx.args.len() > 3 {
        return Err(ctx.wrong_arity());
    }
    let count = match ctx.args.get(2) {
        Some(text) => Some(positive_count(
            text,
            "ERR value is out of range, must be positive",
        )?),
        None => None,
    };
    let (key, now) = (ctx.args[1], ctx.now);
    let (out, events) = (&mut *ctx.out, &*ctx.shared.keyspace_events);
    ctx.keys.with_key(key, |shard, slot| {
        let popped = write_collection::<ListValue, _>(shard, key, slot, now, false, |list| {
            let wanted = count.unwrap_or(1).min(list.len());
            let items = (0..wanted)
                .filter_map(|_| pop(list, end))
                .collect::<Vec<_>>();
            // COUNT 0 pops nothing and tells nothing
            if !items.is_empty() {
                notify_popped(events, key, end, list.is_empty());
            }
            Ok(items)
        })?;
        match (popped, count) {
            (None, Some(_)) => out.null_array(),
            (None, None) => out.null(),
            (Some(items), None) => match items.first() {
                Some(item) => out.bulk(item),
                None => out.null(),
            },
            (Some(items), Some(_)) => {
                out.array(items.len());
                for item in &items {
                    out.bulk(item);
                }
            }
        }
        Ok(())
    })
}

pub fn lpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    pop_command(ctx, End::Left)
}

pub fn rpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    pop_command(ctx, End::Right)
}

pub fn llen(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let len = ctx.keys.with_key(key, |shard, _| {
        read_collection::<ListValue>(shard, key, now).map(|list| list.map_or(0, ListValue::len))
    })?;
    ctx.out.integer(len as i64);
    Ok(())
}

pub fn lindex(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, index, now, out) = (ctx.args[1], ctx.args[2], ctx.now, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        let Some(list) = read_collection::<ListValue>(shard, key, now)? else {
            out.null();
            return Ok(());
        };
        let index = parse_int(index)?;
        match position(index, list.len()).and_then(|at| list.get(at)) {
            Some(item) => out.bulk(item),
            None => out.null(),
        }
        Ok(())
    })
}

pub fn lset(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, index, item, now) = (ctx.args[1], ctx.args[2], ctx.args[3], ctx.now);
    ctx.keys.with_key(key, |shard, slot| {
        check_list(shard, key, now)?;
        if shard.find(key, now).is_none() {
            return Err(CommandError::NoSuchKey);
        }
        let index = parse_int(index)?;
        write_collection::<ListValue, _>(shard, key, slot, now, false, |list| {
            match position(index, list.len()) {
                Some(at) if list.set(at, item) => Ok(()),
                _ => Err(CommandError::other("ERR index out of range")),
            }
        })
        .map(|_| ())
    })?;
    ctx.notify(NotifyClass::List, "lset", key);
    ctx.out.ok();
    Ok(())
}

pub fn lrange(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let start = ctx.int_arg(2)?;
    let stop = ctx.int_arg(3)?;
    let (key, now, out) = (ctx.args[1], ctx.now, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        let list = read_collection::<ListValue>(shard, key, now)?;
        match list.and_then(|list| Some((list, span(start, stop, list.len())?))) {
            None => out.array(0),
            Some((list, (from, to))) => {
                out.array(to - from + 1);
                for item in list.range(from, to) {
                    out.bulk(item);
                }
            }
        }
        Ok(())
    })
}

pub fn ltrim(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let start = ctx.int_arg(2)?;
    let stop = ctx.int_arg(3)?;
    let (key, now) = (ctx.args[1], ctx.now);
    let emptied = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<ListValue, _>(shard, key, slot, now, false, |list| {
            list.keep_range(span(start, stop, list.len()));
            Ok(list.is_empty())
        })
    })?;
    // like Redis: `ltrim` even when nothing was trimmed
    if let Some(emptied) = emptied {
        ctx.notify(NotifyClass::List, "ltrim", key);
        ctx.shared.keyspace_events.notify_emptied(key, emptied);
    }
    ctx.out.ok();
    Ok(())
}

pub fn lrem(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let count = ctx.int_arg(2)?;
    let (key, item, now) = (ctx.args[1], ctx.args[3], ctx.now);
    let removed = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<ListValue, _>(shard, key, slot, now, false, |list| {
            let limit = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
            Ok((
                list.remove_matching(item, limit, count < 0),
                list.is_empty(),
            ))
        })
    })?;
    let (removed, emptied) = removed.unwrap_or_default();
    if removed > 0 {
        ctx.notify(NotifyClass::List, "lrem", key);
        ctx.shared.keyspace_events.notify_emptied(key, emptied);
    }
    ctx.out.integer(removed as i64);
    Ok(())
}

pub fn linsert(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let after = match ctx.args[2] {
        word if word.eq_ignore_ascii_case(b"AFTER") => true,
        word if word.eq_ignore_ascii_case(b"BEFORE") => false,
        _ => return Err(CommandError::Syntax),
    };
    let (key, pivot, item, now) = (ctx.args[1], ctx.args[3], ctx.args[4], ctx.now);
    let len = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<ListValue, _>(shard, key, slot, now, false, |list| {
            let Some(at) = list.iter().position(|element| element == pivot) else {
                return Ok(-1);
            };
            list.insert(at + usize::from(after), item);
            Ok(list.len() as i64)
        })
    })?;
    if len.is_some_and(|len| len > 0) {
        ctx.notify(NotifyClass::List, "linsert", key);
    }
    ctx.out.integer(len.unwrap_or(0));
    Ok(())
}

/// LPOS's options.
struct PosOptions {
    /// 1-based match to start from; negative: searching from the end.
    rank: i64,
    /// `None`: one index (or nil); `Some(0)`: every match.
    count: Option<usize>,
    /// Elements compared at most (0: all).
    maxlen: usize,
}

fn pos_options(args: &[&[u8]]) -> Result<PosOptions, CommandError> {
    let mut options = PosOptions {
        rank: 1,
        count: None,
        maxlen: 0,
    };
    let mut at = 3;
    while at < args.len() {
        let has_value = at + 1 < args.len();
        let option = args[at];
        if option.eq_ignore_ascii_case(b"RANK") && has_value {
            at += 1;
            let rank = parse_int(args[at])?;
            if rank == i64::MIN {
                return Err(CommandError::other(
                    "ERR value is out of range, must be between -9223372036854775807 and 9223372036854775807",
                ));
            }
            if rank == 0 {
                return Err(CommandError::other(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                ));
            }
            options.rank = rank;
        } else if option.eq_ignore_ascii_case(b"COUNT") && has_value {
            at += 1;
            options.count = Some(positive_count(args[at], "ERR COUNT can't be negative")?);
        } else if option.eq_ignore_ascii_case(b"MAXLEN") && has_value {
            at += 1;
            options.maxlen = positive_count(args[at], "ERR MAXLEN can't be negative")?;
        } else {
            return Err(CommandError::Syntax);
        }
        at += 1;
    }
    Ok(options)
}

pub fn lpos(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let options = pos_options(ctx.args)?;
    let (key, item, now, out) = (ctx.args[1], ctx.args[2], ctx.now, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        let Some(list) = read_collection::<ListValue>(shard, key, now)? else {
            match options.count {
                Some(_) => out.array(0),
                None => out.null(),
            }
            return Ok(());
        };
        let len = list.len();
        let from_end = options.rank < 0;
        let skip = options.rank.unsigned_abs() - 1;
        let scanned = if options.maxlen == 0 {
            len
        } else {
            options.maxlen.min(len)
        };
        let indexes: Box<dyn Iterator<Item = usize>> = if from_end {
            Box::new((0..len).rev().take(scanned))
        } else {
            Box::new((0..len).take(scanned))
        };
        let wanted = match options.count {
            None => 1,
            Some(0) => usize::MAX,
            Some(count) => count,
        };
        let found: Vec<usize> = indexes
            .filter(|&at| list.get(at) == Some(item))
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(wanted)
            .collect();
        match options.count {
            Some(_) => {
                out.array(found.len());
                for at in found {
                    out.integer(at as i64);
                }
            }
            None => match found.first() {
                Some(&at) => out.integer(at as i64),
                None => out.null(),
            },
        }
        Ok(())
    })
}

/// Pops from `source`'s `from` end and pushes onto `destination`'s `to` end,
/// atomically; the element moved, or None when `source` is missing.
fn move_item(ctx: &mut Ctx<'_, '_>, from: End, to: End) -> Result<Option<Box<[u8]>>, CommandError> {
    let (source, destination, now) = (ctx.args[1], ctx.args[2], ctx.now);
    let events = &*ctx.shared.keyspace_events;
    ctx.keys.atomically(&[source, destination], |access| {
        let source_len = access.with_key(source, |shard, _| {
            match shard
                .find(source, now)
                .map(|index| shard.entry(index).value())
            {
                None => Ok(None),
                Some(ValueRef::List(list)) => Ok(Some(list.len())),
                Some(_) => Err(CommandError::WrongType),
            }
        })?;
        if source_len.is_none_or(|len| len == 0) {
            return Ok(None);
        }
        access.with_key(destination, |shard, _| check_list(shard, destination, now))?;
        if source == destination {
            // a rotation: the list never goes away (nor is created again: no `new`)
            let item = access.with_key(source, |shard, slot| {
                write_collection::<ListValue, _>(shard, source, slot, now, false, |list| {
                    let item = pop(list, from);
                    if let Some(item) = &item {
                        push(list, to, item);
                    }
                    Ok(item)
                })
            })?;
            if item.is_some() {
                events.notify(NotifyClass::List, to.push_event(), source);
                events.notify(NotifyClass::List, from.pop_event(), source);
            }
            return Ok(item.flatten());
        }
        let item = access.with_key(source, |shard, slot| {
            write_collection::<ListValue, _>(shard, source, slot, now, false, |list| {
                Ok(pop(list, from).map(|item| (item, list.is_empty())))
            })
        })?;
        let Some(Some((item, emptied))) = item else {
            return Ok(None);
        };
        access.with_key(destination, |shard, slot| {
            write_collection::<ListValue, _>(shard, destination, slot, now, true, |list| {
                push(list, to, &item);
                Ok(())
            })
        })?;
        // Redis's order: the push, then the pop (and `del` of an emptied source)
        events.notify(NotifyClass::List, to.push_event(), destination);
        notify_popped(events, source, from, emptied);
        Ok(Some(item))
    })
}

fn reply_moved(ctx: &mut Ctx<'_, '_>, moved: Option<Box<[u8]>>) {
    match moved {
        Some(item) => ctx.out.bulk(&item),
        None => ctx.out.null(),
    }
}

pub fn lmove(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let from = End::parse(ctx.args[3])?;
    let to = End::parse(ctx.args[4])?;
    let moved = move_item(ctx, from, to)?;
    reply_moved(ctx, moved);
    Ok(())
}

pub fn rpoplpush(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let moved = move_item(ctx, End::Right, End::Left)?;
    reply_moved(ctx, moved);
    Ok(())
}

/// LMPOP's keys: `numkeys` of them after it, LEFT|RIGHT behind them.
pub fn lmpop_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    keys_after_numkeys(args, 1, 1)
}

/// LMPOP / ZMPOP-style arguments from `numkeys` (at `numkeys_at`) on: the keys, the side
/// after them (read by `side`, e.g. LEFT|RIGHT) and COUNT, checked in Redis's order.
pub struct MultiPop<S> {
    /// Positions of the keys in the arguments.
    pub keys: std::ops::Range<usize>,
    pub side: S,
    pub count: usize,
}

pub fn multi_pop_args<S>(
    args: &[&[u8]],
    numkeys_at: usize,
    side: impl FnOnce(&[u8]) -> Result<S, CommandError>,
) -> Result<MultiPop<S>, CommandError> {
    let numkeys = match parse_int(args[numkeys_at]) {
        Ok(count) if count > 0 => count as usize,
        _ => return Err(CommandError::other("ERR numkeys should be greater than 0")),
    };
    let side_at = numkeys.saturating_add(numkeys_at + 1);
    if side_at >= args.len() {
        return Err(CommandError::Syntax);
    }
    let side = side(args[side_at])?;
    let mut count = None;
    let mut at = side_at + 1;
    while at < args.len() {
        if count.is_none() && args[at].eq_ignore_ascii_case(b"COUNT") && at + 1 < args.len() {
            at += 1;
            count = Some(match parse_int(args[at]) {
                Ok(count) if count > 0 => count as usize,
                _ => return Err(CommandError::other("ERR count should be greater than 0")),
            });
        } else {
            return Err(CommandError::Syntax);
        }
        at += 1;
    }
    Ok(MultiPop {
        keys: numkeys_at + 1..side_at,
        side,
        count: count.unwrap_or(1),
    })
}

/// Elements popped from one key.
type Popped<'k> = (&'k [u8], Vec<Box<[u8]>>);

/// Pops up to `count` elements from the first of `keys` holding a non-empty list
/// (WRONGTYPE for a key of another type met before it), atomically.
fn pop_first<'k>(
    ctx: &mut Ctx<'_, '_>,
    keys: &[&'k [u8]],
    end: End,
    count: usize,
) -> Result<Option<Popped<'k>>, CommandError> {
    let (now, events) = (ctx.now, &*ctx.shared.keyspace_events);
    ctx.keys.atomically(keys, |access| {
        for &key in keys {
            let items = access.with_key(key, |shard, slot| {
                write_collection::<ListValue, _>(shard, key, slot, now, false, |list| {
                    let wanted = count.min(list.len());
                    let items = (0..wanted)
                        .filter_map(|_| pop(list, end))
                        .collect::<Vec<_>>();
                    if !items.is_empty() {
                        notify_popped(events, key, end, list.is_empty());
                    }
                    Ok(items)
                })
            })?;
            if let Some(items) = items.filter(|items| !items.is_empty()) {
                return Ok(Some((key, items)));
            }
        }
        Ok(None)
    })
}

fn reply_key_and_items(ctx: &mut Ctx<'_, '_>, key: &[u8], items: &[Box<[u8]>]) {
    ctx.out.array(2);
    ctx.out.bulk(key);
    ctx.out.array(items.len());
    for item in items {
        ctx.out.bulk(item);
    }
}

pub fn lmpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let MultiPop {
        keys,
        side: end,
        count,
    } = multi_pop_args(ctx.args, 1, End::parse)?;
    let args = ctx.args;
    match pop_first(ctx, &args[keys], end, count)? {
        None => ctx.out.null_array(),
        Some((key, items)) => reply_key_and_items(ctx, key, &items),
    }
    Ok(())
}

/// A blocking command's timeout in seconds (a float; 0: wait forever), as Redis words
/// its refusals.
pub fn parse_timeout(text: &[u8]) -> Result<Option<Duration>, CommandError> {
    let seconds = parse_float(text)
        .map_err(|_| CommandError::other("ERR timeout is not a float or out of range"))?;
    let millis = (seconds * 1000.0).ceil();
    // Redis's bound: the deadline in Unix milliseconds must fit an i64
    let now = crate::store::now_ms() as f64;
    if millis > i64::MAX as f64 - now {
        return Err(CommandError::other("ERR timeout is out of range"));
    }
    if millis < 0.0 {
        return Err(CommandError::other("ERR timeout is negative"));
    }
    Ok((millis > 0.0).then(|| Duration::from_millis(millis as u64)))
}

/// Nothing to pop: a client connection waits for a push to `keys` (the server runs the
/// command again then); inside MULTI, or for any other caller, the answer is a null at
/// once (an array, or for BLMOVE a bulk), as Redis answers a client that may not block.
pub fn block_or_timeout(
    ctx: &mut Ctx<'_, '_>,
    keys: &[&[u8]],
    timeout: Option<Duration>,
    array_reply: bool,
) {
    let may_block = matches!(ctx.exec.caller, Caller::Client { .. })
        && ctx.client.multi.is_none()
        && !ctx.client.running_exec;
    if !may_block {
        if array_reply {
            ctx.out.null_array();
        } else {
            ctx.out.null();
        }
        return;
    }
    ctx.client.pending = Some(Pending::Block(Block {
        args: ctx.args.iter().map(|arg| arg.to_vec()).collect(),
        keys: keys.iter().map(|key| key.to_vec()).collect(),
        timeout,
    }));
}

fn blocking_pop(ctx: &mut Ctx<'_, '_>, end: End) -> CmdResult {
    let args = ctx.args;
    let timeout = parse_timeout(args[args.len() - 1])?;
    let keys = &args[1..args.len() - 1];
    match pop_first(ctx, keys, end, 1)? {
        Some((key, items)) => {
            ctx.out.array(2);
            ctx.out.bulk(key);
            ctx.out.bulk(&items[0]);
        }
        None => block_or_timeout(ctx, keys, timeout, true),
    }
    Ok(())
}

pub fn blpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    blocking_pop(ctx, End::Left)
}

pub fn brpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    blocking_pop(ctx, End::Right)
}

pub fn blmpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let MultiPop {
        keys,
        side: end,
        count,
    } = multi_pop_args(ctx.args, 2, End::parse)?;
    let timeout = parse_timeout(ctx.args[1])?;
    let args = ctx.args;
    match pop_first(ctx, &args[keys.clone()], end, count)? {
        Some((key, items)) => reply_key_and_items(ctx, key, &items),
        None => block_or_timeout(ctx, &args[keys], timeout, true),
    }
    Ok(())
}

/// BLMPOP's keys: `numkeys` (the second argument) of them after it.
pub fn blmpop_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    keys_after_numkeys(args, 2, 1)
}

fn blocking_move(ctx: &mut Ctx<'_, '_>, from: End, to: End, timeout_at: usize) -> CmdResult {
    let timeout = parse_timeout(ctx.args[timeout_at])?;
    let source = ctx.args[1];
    match move_item(ctx, from, to)? {
        Some(item) => ctx.out.bulk(&item),
        None => block_or_timeout(ctx, &[source], timeout, false),
    }
    Ok(())
}

pub fn blmove(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let from = End::parse(ctx.args[3])?;
    let to = End::parse(ctx.args[4])?;
    blocking_move(ctx, from, to, 5)
}

pub fn brpoplpush(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    blocking_move(ctx, End::Right, End::Left, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_redis_clamping() {
        assert_eq!(span(0, -1, 5), Some((0, 4)));
        assert_eq!(span(-100, 100, 5), Some((0, 4)));
        assert_eq!(span(3, 1, 5), None);
        assert_eq!(span(5, 10, 5), None);
        assert_eq!(span(-2, -1, 5), Some((3, 4)));
        assert_eq!(span(0, 0, 0), None);
        assert_eq!(position(-1, 3), Some(2));
        assert_eq!(position(3, 3), None);
        assert_eq!(position(-4, 3), None);
    }

    #[test]
    fn lmpop_keys_follow_numkeys() {
        let args: Vec<&[u8]> = vec![b"LMPOP", b"2", b"a", b"b", b"LEFT"];
        assert_eq!(lmpop_keys(&args), vec![&b"a"[..], b"b"]);
        let args: Vec<&[u8]> = vec![b"LMPOP", b"3", b"a", b"b", b"LEFT"];
        assert!(lmpop_keys(&args).is_empty());
        let args: Vec<&[u8]> = vec![b"LMPOP", b"x", b"a", b"LEFT"];
        assert!(lmpop_keys(&args).is_empty());
    }
}
