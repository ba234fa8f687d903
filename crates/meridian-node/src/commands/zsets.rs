//! Sorted set commands, with Redis 7.0's replies, error texts and order of checks
//! (`t_zset.c`). Scores are sent as `%.17g` (bulk strings in RESP2, doubles in RESP3);
//! WITHSCORES replies are flat in RESP2 and member-score pairs in RESP3, as Redis's.

use super::keys::ScanOptions;
use super::lists::{MultiPop, block_or_timeout, multi_pop_args, parse_timeout};
use super::{
    Ctx, MAX_REPEATED_PICKS, keys_after_numkeys, parse_int, query_collection, random_picker,
    random_picks, read_collection, write_collection,
};
use crate::error::{CmdResult, CommandError};
use crate::notify::{KeyspaceEvents, NotifyClass};
use crate::protocol::Out;
use crate::protocol::encode::format_g17;
use crate::store::{Access, Value, ValueRef, ZSetValue};

/// ZSCAN answers a sorted set this small whole, in score order, as Redis answers its
/// compact (listpack) encoding.
const SCAN_WHOLE_MAX: usize = 128;

/// A score as Redis's d2string writes it (how ZSCAN sends scores): integers within
/// half of i64's range in full, anything else as `%.17g`.
fn score_text(score: f64) -> String {
    const HALF: f64 = (i64::MAX / 2) as f64;
    if score != 0.0 && score.fract() == 0.0 && (-HALF..=HALF).contains(&score) {
        itoa::Buffer::new().format(score as i64).to_string()
    } else {
        format_g17(score)
    }
}

/// A score argument (ZADD, ZINCRBY, WEIGHTS) as Redis's getDoubleFromObject takes it:
/// no spaces, no NaN, no overflow or underflow.
fn parse_score(text: &[u8], message: &'static str) -> Result<f64, CommandError> {
    let refuse = || CommandError::other(message);
    let text = std::str::from_utf8(text).map_err(|_| refuse())?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return Err(refuse());
    }
    let value: f64 = text.parse().map_err(|_| refuse())?;
    let unsigned = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
    let overflowed = value.is_infinite() && !unsigned.starts_with("inf");
    let mantissa = unsigned.split('e').next().unwrap_or_default();
    let underflowed = value == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if value.is_nan() || overflowed || underflowed {
        return Err(refuse());
    }
    Ok(value)
}

/// A bound of a score range as Redis's zslParseRange reads it (strtod over the whole
/// text: leading spaces and an empty text, which reads as 0, are accepted).
fn parse_bound(text: &[u8]) -> Option<(f64, bool)> {
    let (text, exclusive) = match text.strip_prefix(b"(") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let text = std::str::from_utf8(text).ok()?;
    let value = if text.is_empty() {
        0.0
    } else {
        text.trim_start_matches(|c: char| c.is_ascii_whitespace())
            .parse::<f64>()
            .ok()?
    };
    (!value.is_nan()).then_some((value, exclusive))
}

/// A score range: `min`/`max`, each inclusive unless marked.
#[derive(Clone, Copy, Debug)]
struct ScoreRange {
    min: f64,
    min_exclusive: bool,
    max: f64,
    max_exclusive: bool,
}

impl ScoreRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<ScoreRange, CommandError> {
        match (parse_bound(min), parse_bound(max)) {
            (Some((min, min_exclusive)), Some((max, max_exclusive))) => Ok(ScoreRange {
                min,
                min_exclusive,
                max,
                max_exclusive,
            }),
            _ => Err(CommandError::other("ERR min or max is not a float")),
        }
    }

    /// The ranks `[start, end)` of the members in the range.
    fn ranks(&self, zset: &ZSetValue) -> (usize, usize) {
        let start = zset.partition_point(|score, _| {
            score < self.min || (self.min_exclusive && score == self.min)
        });
        let end = zset.partition_point(|score, _| {
            score < self.max || (!self.max_exclusive && score == self.max)
        });
        (start, end.max(start))
    }
}

/// A bound of a lexicographic range: `-`, `+`, `[member` or `(member`.
#[derive(Clone, Debug)]
enum LexBound {
    Least,
    Greatest,
    Inclusive(Vec<u8>),
    Exclusive(Vec<u8>),
}

impl LexBound {
    fn parse(text: &[u8]) -> Option<LexBound> {
        match text.split_first() {
            Some((b'-', [])) => Some(LexBound::Least),
            Some((b'+', [])) => Some(LexBound::Greatest),
            Some((b'[', rest)) => Some(LexBound::Inclusive(rest.to_vec())),
            Some((b'(', rest)) => Some(LexBound::Exclusive(rest.to_vec())),
            _ => None,
        }
    }

    /// Whether `member` sorts below this bound taken as a minimum.
    fn below_min(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Least => false,
            LexBound::Greatest => true,
            LexBound::Inclusive(bound) => member < &bound[..],
            LexBound::Exclusive(bound) => member <= &bound[..],
        }
    }

    /// Whether `member` is within this bound taken as a maximum.
    fn within_max(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Least => false,
            LexBound::Greatest => true,
            LexBound::Inclusive(bound) => member <= &bound[..],
            LexBound::Exclusive(bound) => member < &bound[..],
        }
    }
}

#[derive(Clone, Debug)]
struct LexRange {
    min: LexBound,
    max: LexBound,
}

impl LexRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<LexRange, CommandError> {
        match (LexBound::parse(min), LexBound::parse(max)) {
            (Some(min), Some(max)) => Ok(LexRange { min, max }),
            _ => Err(CommandError::other(
                "ERR min or max not valid string range item",
            )),
        }
    }

    /// The ranks `[start, end)` of the members in the range (meaningful when all
    /// scores are equal, as Redis documents).
    fn ranks(&self, zset: &ZSetValue) -> (usize, usize) {
        let start = zset.partition_point(|_, member| self.min.below_min(member));
        let end = zset.partition_point(|_, member| self.max.within_max(member));
        (start, end.max(start))
    }
}

/// What a ZRANGE-family command selects.
#[derive(Clone, Debug)]
enum Selection {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// A ZRANGE-family query: the selection, its direction and LIMIT.
#[derive(Clone, Debug)]
struct RangeQuery {
    selection: Selection,
    reverse: bool,
    offset: i64,
    /// Negative: no limit.
    limit: i64,
}

/// Ranks `start..=stop` as Redis clamps them (negative from the end); None when empty.
fn rank_span(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 { len + stop } else { stop };
    if start > stop || start >= len {
        return None;
    }
    Some((start as usize, stop.min(len - 1) as usize))
}

impl RangeQuery {
    /// The members selected, in reply order.
    fn select<'z>(&self, zset: &'z ZSetValue) -> Vec<(&'z [u8], f64)> {
        let len = zset.len();
        let (start, end) = match &self.selection {
            Selection::Rank(start, stop) => {
                let Some((start, stop)) = rank_span(*start, *stop, len) else {
                    return Vec::new();
                };
                let count = stop - start + 1;
                return if self.reverse {
                    zset.descending(len - 1 - start).take(count).collect()
                } else {
                    zset.ascending(start).take(count).collect()
                };
            }
            Selection::Score(range) => range.ranks(zset),
            Selection::Lex(range) => range.ranks(zset),
        };
        // a negative offset skips past every member, as Redis's `while (offset--)` does
        let Ok(offset) = usize::try_from(self.offset) else {
            return Vec::new();
        };
        let available = (end - start).saturating_sub(offset);
        let count = usize::try_from(self.limit).map_or(available, |limit| limit.min(available));
        if count == 0 {
            return Vec::new();
        }
        if self.reverse {
            zset.descending(end - 1 - offset).take(count).collect()
        } else {
            zset.ascending(start + offset).take(count).collect()
        }
    }
}

/// Member-score pairs as a WITHSCORES reply: flat in RESP2, pairs in RESP3.
fn reply_scored<'m>(out: &mut Out, scored: impl ExactSizeIterator<Item = (&'m [u8], f64)>) {
    if out.is_resp3() {
        out.array(scored.len());
        for (member, score) in scored {
            out.array(2);
            out.bulk(member);
            out.double(score);
        }
    } else {
        out.array(scored.len() * 2);
        for (member, score) in scored {
            out.bulk(member);
            out.double(score);
        }
    }
}

fn reply_range(out: &mut Out, selected: &[(&[u8], f64)], with_scores: bool) {
    if with_scores {
        reply_scored(out, selected.iter().copied());
    } else {
        out.array(selected.len());
        for (member, _) in selected {
            out.bulk(member);
        }
    }
}

// ---- ZADD / ZINCRBY ----

#[derive(Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// What one ZADD element did.
enum Added {
    New,
    Updated,
    /// Processed, score unchanged.
    Same,
    /// Skipped by NX, XX, GT or LT.
    Skipped,
}

/// Redis's zsetAdd for one element: the outcome and the member's score after it.
fn add_one(
    zset: &mut ZSetValue,
    flags: &AddFlags,
    member: &[u8],
    score: f64,
) -> Result<(Added, f64), CommandError> {
    match zset.score(member) {
        Some(current) => {
            if flags.nx {
                return Ok((Added::Skipped, current));
            }
            let score = if flags.incr { score + current } else { score };
            if score.is_nan() {
                return Err(CommandError::other(
                    "ERR resulting score is not a number (NaN)",
                ));
            }
            if (flags.lt && score >= current) || (flags.gt && score <= current) {
                return Ok((Added::Skipped, current));
            }
            if score == current {
                return Ok((Added::Same, score));
            }
            zset.insert(member, score);
            Ok((Added::Updated, score))
        }
        None if flags.xx => Ok((Added::Skipped, score)),
        None => {
            zset.insert(member, score);
            Ok((Added::New, score))
        }
    }
}

fn zadd_generic(ctx: &mut Ctx<'_, '_>, mut flags: AddFlags, first: usize) -> CmdResult {
    let args = ctx.args;
    let mut at = first;
    while at < args.len() {
        let flag = args[at].to_ascii_lowercase();
        match flag.as_slice() {
            b"nx" => flags.nx = true,
            b"xx" => flags.xx = true,
            b"gt" => flags.gt = true,
            b"lt" => flags.lt = true,
            b"ch" => flags.ch = true,
            b"incr" => flags.incr = true,
            _ => break,
        }
        at += 1;
    }
    let elements = &args[at..];
    if elements.is_empty() || !elements.len().is_multiple_of(2) {
        return Err(CommandError::Syntax);
    }
    if flags.nx && flags.xx {
        return Err(CommandError::other(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (flags.nx && (flags.gt || flags.lt)) || (flags.gt && flags.lt) {
        return Err(CommandError::other(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if flags.incr && elements.len() > 2 {
        return Err(CommandError::other(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let scores = elements
        .chunks(2)
        .map(|pair| parse_score(pair[0], "ERR value is not a valid float"))
        .collect::<Result<Vec<f64>, _>>()?;
    let (key, now) = (args[1], ctx.now);
    let outcome = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<ZSetValue, _>(shard, key, slot, now, !flags.xx, |zset| {
            let (mut added, mut updated, mut last) = (0i64, 0i64, None);
            for (pair, &score) in elements.chunks(2).zip(&scores) {
                let (what, score) = add_one(zset, &flags, pair[1], score)?;
                match what {
                    Added::New => added += 1,
                    Added::Updated => updated += 1,
                    Added::Same => {}
                    Added::Skipped => continue,
                }
                last = Some(score);
            }
            Ok((added, updated, last))
        })
    })?;
    let (added, updated, last) = outcome.unwrap_or((0, 0, None));
    if added + updated > 0 {
        ctx.notify(
            NotifyClass::Zset,
            if flags.incr { "zincr" } else { "zadd" },
            key,
        );
    }
    if flags.incr {
        match last {
            Some(score) => ctx.out.double(score),
            None => ctx.out.null(),
        }
    } else {
        ctx.out
            .integer(if flags.ch { added + updated } else { added });
    }
    Ok(())
}

pub fn zadd(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    zadd_generic(ctx, AddFlags::default(), 2)
}

pub fn zincrby(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let flags = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    zadd_generic(ctx, flags, 2)
}

// ---- reads of single members ----

pub fn zrem(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, members) = (ctx.args[1], ctx.now, &ctx.args[2..]);
    let removed = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<ZSetValue, _>(shard, key, slot, now, false, |zset| {
            let removed = members
                .iter()
                .filter(|member| zset.remove(member).is_some())
                .count();
            Ok((removed, zset.is_empty()))
        })
    })?;
    let (removed, emptied) = removed.unwrap_or_default();
    if removed > 0 {
        ctx.notify(NotifyClass::Zset, "zrem", key);
        ctx.shared.keyspace_events.notify_emptied(key, emptied);
    }
    ctx.out.integer(removed as i64);
    Ok(())
}

pub fn zcard(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        out.integer(zset.map_or(0, ZSetValue::len) as i64)
    })
}

pub fn zscore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let member = ctx.args[2];
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        match zset.and_then(|zset| zset.score(member)) {
            Some(score) => out.double(score),
            None => out.null(),
        }
    })
}

pub fn zmscore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let members = &ctx.args[2..];
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        out.array(members.len());
        for member in members {
            match zset.and_then(|zset| zset.score(member)) {
                Some(score) => out.double(score),
                None => out.null(),
            }
        }
    })
}

fn rank_generic(ctx: &mut Ctx<'_, '_>, reverse: bool) -> CmdResult {
    let member = ctx.args[2];
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        let rank = zset.and_then(|zset| {
            zset.rank(member)
                .map(|rank| if reverse { zset.len() - 1 - rank } else { rank })
        });
        match rank {
            Some(rank) => out.integer(rank as i64),
            None => out.null(),
        }
    })
}

pub fn zrank(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    rank_generic(ctx, false)
}

pub fn zrevrank(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    rank_generic(ctx, true)
}

pub fn zcount(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let range = ScoreRange::parse(ctx.args[2], ctx.args[3])?;
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        let (start, end) = zset.map_or((0, 0), |zset| range.ranks(zset));
        out.integer((end - start) as i64)
    })
}

pub fn zlexcount(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let range = LexRange::parse(ctx.args[2], ctx.args[3])?;
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        let (start, end) = zset.map_or((0, 0), |zset| range.ranks(zset));
        out.integer((end - start) as i64)
    })
}

// ---- ZRANGE and its older forms ----

/// Which ZRANGE-family command is parsed: its fixed kind and direction, if any.
#[derive(Clone, Copy)]
struct RangeForm {
    kind: Option<RangeKind>,
    reverse: Option<bool>,
    store: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeKind {
    Rank,
    Score,
    Lex,
}

/// Redis's zrangeGenericCommand parsing from the source key at `key_at`: the query and
/// whether WITHSCORES was given.
fn parse_range(
    args: &[&[u8]],
    key_at: usize,
    form: RangeForm,
) -> Result<(RangeQuery, bool), CommandError> {
    let (mut kind, mut reverse) = (form.kind, form.reverse);
    let (mut with_scores, mut offset, mut limit) = (false, 0i64, -1i64);
    let mut limit_given = false;
    let mut at = key_at + 3;
    while at < args.len() {
        let option = args[at].to_ascii_lowercase();
        let left = args.len() - at - 1;
        match option.as_slice() {
            b"withscores" if !form.store => with_scores = true,
            b"limit" if left >= 2 => {
                offset = parse_int(args[at + 1])?;
                limit = parse_int(args[at + 2])?;
                limit_given = true;
                at += 2;
            }
            b"rev" if reverse.is_none() => reverse = Some(true),
            b"bylex" if kind.is_none() => kind = Some(RangeKind::Lex),
            b"byscore" if kind.is_none() => kind = Some(RangeKind::Score),
            _ => return Err(CommandError::Syntax),
        }
        at += 1;
    }
    let reverse = reverse.unwrap_or(false);
    let kind = kind.unwrap_or(RangeKind::Rank);
    if limit_given && kind == RangeKind::Rank {
        return Err(CommandError::other(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if with_scores && kind == RangeKind::Lex {
        return Err(CommandError::other(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let (mut low, mut high) = (args[key_at + 1], args[key_at + 2]);
    if reverse && kind != RangeKind::Rank {
        // given as max, min
        std::mem::swap(&mut low, &mut high);
    }
    let selection = match kind {
        RangeKind::Rank => Selection::Rank(parse_int(low)?, parse_int(high)?),
        RangeKind::Score => Selection::Score(ScoreRange::parse(low, high)?),
        RangeKind::Lex => Selection::Lex(LexRange::parse(low, high)?),
    };
    let query = RangeQuery {
        selection,
        reverse,
        offset,
        limit,
    };
    Ok((query, with_scores))
}

fn range_command(
    ctx: &mut Ctx<'_, '_>,
    kind: Option<RangeKind>,
    reverse: Option<bool>,
) -> CmdResult {
    let form = RangeForm {
        kind,
        reverse,
        store: false,
    };
    let (query, with_scores) = parse_range(ctx.args, 1, form)?;
    query_collection::<ZSetValue, _>(ctx, |zset, out| match zset {
        Some(zset) => reply_range(out, &query.select(zset), with_scores),
        None => out.array(0),
    })
}

pub fn zrange(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    range_command(ctx, None, None)
}

pub fn zrevrange(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    range_command(ctx, Some(RangeKind::Rank), Some(true))
}

pub fn zrangebyscore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    range_command(ctx, Some(RangeKind::Score), Some(false))
}

pub fn zrevrangebyscore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    range_command(ctx, Some(RangeKind::Score), Some(true))
}

pub fn zrangebylex(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    range_command(ctx, Some(RangeKind::Lex), Some(false))
}

pub fn zrevrangebylex(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    range_command(ctx, Some(RangeKind::Lex), Some(true))
}

/// Replaces `destination` with a sorted set of `scored` (overwritten in place, as
/// Redis's setKey; deleted when empty) and publishes `event` (or `del`).
fn store_result(
    access: &mut Access<'_, '_>,
    events: &KeyspaceEvents,
    event: &'static str,
    destination: &[u8],
    scored: impl IntoIterator<Item = (Vec<u8>, f64)>,
    now: u64,
) -> usize {
    let mut zset = ZSetValue::default();
    for (member, score) in scored {
        zset.insert(&member, score);
    }
    let count = zset.len();
    let existed = access.with_key(destination, |shard, slot| {
        let existing = shard.find(destination, now);
        if count > 0 {
            shard.insert(destination, slot, Value::ZSet(Box::new(zset)), 0);
        } else if let Some(index) = existing {
            shard.remove(index);
        }
        existing.is_some()
    });
    if count > 0 {
        events.notify(NotifyClass::Zset, event, destination);
    } else {
        events.notify_emptied(destination, existed);
    }
    count
}

pub fn zrangestore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let form = RangeForm {
        kind: None,
        reverse: None,
        store: true,
    };
    let (query, _) = parse_range(ctx.args, 2, form)?;
    let (destination, source, now) = (ctx.args[1], ctx.args[2], ctx.now);
    let events = &*ctx.shared.keyspace_events;
    let stored = ctx.keys.atomically(&[destination, source], |access| {
        let selected = access.with_key(source, |shard, _| {
            Ok::<_, CommandError>(
                read_collection::<ZSetValue>(shard, source, now)?.map(|zset| {
                    query
                        .select(zset)
                        .into_iter()
                        .map(|(member, score)| (member.to_vec(), score))
                        .collect::<Vec<_>>()
                }),
            )
        })?;
        Ok::<_, CommandError>(store_result(
            access,
            events,
            "zrangestore",
            destination,
            selected.unwrap_or_default(),
            now,
        ))
    })?;
    ctx.out.integer(stored as i64);
    Ok(())
}

// ---- removals by range ----

fn remove_range(ctx: &mut Ctx<'_, '_>, selection: Selection, event: &'static str) -> CmdResult {
    let (key, now) = (ctx.args[1], ctx.now);
    let removed = ctx.keys.with_key(key, |shard, slot| {
        write_collection::<ZSetValue, _>(shard, key, slot, now, false, |zset| {
            let query = RangeQuery {
                selection,
                reverse: false,
                offset: 0,
                limit: -1,
            };
            let members: Vec<Vec<u8>> = query
                .select(zset)
                .into_iter()
                .map(|(member, _)| member.to_vec())
                .collect();
            for member in &members {
                zset.remove(member);
            }
            Ok((members.len(), zset.is_empty()))
        })
    })?;
    let (removed, emptied) = removed.unwrap_or_default();
    if removed > 0 {
        ctx.notify(NotifyClass::Zset, event, key);
        ctx.shared.keyspace_events.notify_emptied(key, emptied);
    }
    ctx.out.integer(removed as i64);
    Ok(())
}

pub fn zremrangebyrank(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let selection = Selection::Rank(parse_int(ctx.args[2])?, parse_int(ctx.args[3])?);
    remove_range(ctx, selection, "zremrangebyrank")
}

pub fn zremrangebyscore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let selection = Selection::Score(ScoreRange::parse(ctx.args[2], ctx.args[3])?);
    remove_range(ctx, selection, "zremrangebyscore")
}

pub fn zremrangebylex(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let selection = Selection::Lex(LexRange::parse(ctx.args[2], ctx.args[3])?);
    remove_range(ctx, selection, "zremrangebylex")
}

// ---- pops ----

/// Members popped from one key: the key and its members with their scores.
type Popped<'k> = (&'k [u8], Vec<(Vec<u8>, f64)>);

/// Pops up to `count` of the lowest (or, with `max`, highest) members of the first of
/// `keys` holding a sorted set (WRONGTYPE for a key of another type met before it).
fn pop_first<'k>(
    ctx: &mut Ctx<'_, '_>,
    keys: &[&'k [u8]],
    max: bool,
    count: usize,
) -> Result<Option<Popped<'k>>, CommandError> {
    let now = ctx.now;
    let events = &*ctx.shared.keyspace_events;
    ctx.keys.atomically(keys, |access| {
        for &key in keys {
            let popped = access.with_key(key, |shard, slot| {
                write_collection::<ZSetValue, _>(shard, key, slot, now, false, |zset| {
                    let mut popped = Vec::with_capacity(count.min(zset.len()));
                    while popped.len() < count {
                        let Some((member, score)) = zset.pop_end(max) else {
                            break;
                        };
                        popped.push((member.into_vec(), score));
                    }
                    Ok((popped, zset.is_empty()))
                })
            })?;
            if let Some((popped, emptied)) = popped {
                if !popped.is_empty() {
                    events.notify(
                        NotifyClass::Zset,
                        if max { "zpopmax" } else { "zpopmin" },
                        key,
                    );
                    events.notify_emptied(key, emptied);
                }
                return Ok(Some((key, popped)));
            }
        }
        Ok(None)
    })
}

fn pop_command(ctx: &mut Ctx<'_, '_>, max: bool) -> CmdResult {
    if ctx.args.len() > 3 {
        return Err(CommandError::Syntax);
    }
    let count = match ctx.args.get(2) {
        Some(text) => match parse_int(text) {
            Ok(count) if count >= 0 => Some(count as usize),
            _ => {
                return Err(CommandError::other(
                    "ERR value is out of range, must be positive",
                ));
            }
        },
        None => None,
    };
    let key = ctx.args[1];
    let popped = pop_first(ctx, &[key], max, count.unwrap_or(1))?;
    let members = popped.map(|(_, members)| members).unwrap_or_default();
    // RESP3 nests pairs only when a count was given
    if ctx.out.is_resp3() && count.is_some() {
        reply_scored(ctx.out, members.iter().map(|(m, s)| (&m[..], *s)));
    } else {
        ctx.out.array(members.len() * 2);
        for (member, score) in &members {
            ctx.out.bulk(member);
            ctx.out.double(*score);
        }
    }
    Ok(())
}

pub fn zpopmin(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    pop_command(ctx, false)
}

pub fn zpopmax(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    pop_command(ctx, true)
}

fn blocking_pop(ctx: &mut Ctx<'_, '_>, max: bool) -> CmdResult {
    let args = ctx.args;
    let timeout = parse_timeout(args[args.len() - 1])?;
    let keys = &args[1..args.len() - 1];
    match pop_first(ctx, keys, max, 1)? {
        Some((key, members)) if !members.is_empty() => {
            ctx.out.array(3);
            ctx.out.bulk(key);
            ctx.out.bulk(&members[0].0);
            ctx.out.double(members[0].1);
        }
        _ => block_or_timeout(ctx, keys, timeout, true),
    }
    Ok(())
}

pub fn bzpopmin(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    blocking_pop(ctx, false)
}

pub fn bzpopmax(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    blocking_pop(ctx, true)
}

/// ZMPOP / BZMPOP's side: MAX (true) or MIN.
fn parse_side(word: &[u8]) -> Result<bool, CommandError> {
    match word.to_ascii_lowercase().as_slice() {
        b"min" => Ok(false),
        b"max" => Ok(true),
        _ => Err(CommandError::Syntax),
    }
}

fn reply_key_and_members(out: &mut Out, key: &[u8], members: &[(Vec<u8>, f64)]) {
    out.array(2);
    out.bulk(key);
    out.array(members.len());
    for (member, score) in members {
        out.array(2);
        out.bulk(member);
        out.double(*score);
    }
}

pub fn zmpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let MultiPop {
        keys,
        side: max,
        count,
    } = multi_pop_args(ctx.args, 1, parse_side)?;
    let args = ctx.args;
    match pop_first(ctx, &args[keys], max, count)? {
        Some((key, members)) => reply_key_and_members(ctx.out, key, &members),
        None => ctx.out.null_array(),
    }
    Ok(())
}

pub fn bzmpop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let MultiPop {
        keys,
        side: max,
        count,
    } = multi_pop_args(ctx.args, 2, parse_side)?;
    let timeout = parse_timeout(ctx.args[1])?;
    let args = ctx.args;
    match pop_first(ctx, &args[keys.clone()], max, count)? {
        Some((key, members)) => reply_key_and_members(ctx.out, key, &members),
        None => block_or_timeout(ctx, &args[keys], timeout, true),
    }
    Ok(())
}

/// ZMPOP's keys: `numkeys` of them after it, MIN|MAX behind them.
pub fn zmpop_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    keys_after_numkeys(args, 1, 1)
}

/// BZMPOP's keys: `numkeys` (the second argument) of them after it.
pub fn bzmpop_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    keys_after_numkeys(args, 2, 1)
}

// ---- ZRANDMEMBER ----

pub fn zrandmember(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let count = ctx.args.get(2).map(|text| parse_int(text)).transpose()?;
    let with_scores = match ctx.args.get(3) {
        None => false,
        Some(option) if ctx.args.len() == 4 && option.eq_ignore_ascii_case(b"WITHSCORES") => true,
        Some(_) => return Err(CommandError::Syntax),
    };
    // as SRANDMEMBER: repeated picks are bounded, the reply is built whole
    if count.is_some_and(|count| count < 0 && count.unsigned_abs() > MAX_REPEATED_PICKS) {
        return Err(CommandError::other("ERR value is out of range"));
    }
    let mut pick = random_picker(ctx);
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        let Some(count) = count else {
            match zset {
                Some(zset) => out.bulk(zset.get_index(pick(zset.len())).unwrap_or_default().0),
                None => out.null(),
            }
            return;
        };
        let Some(zset) = zset else {
            out.array(0);
            return;
        };
        let (total, picks) = random_picks(count, zset.len(), &mut pick);
        let picked = picks.filter_map(|index| zset.get_index(index));
        if with_scores {
            reply_scored(out, picked.collect::<Vec<_>>().into_iter());
        } else {
            out.array(total);
            for (member, _) in picked {
                out.bulk(member);
            }
        }
    })
}

// ---- ZUNION / ZINTER / ZDIFF and their STORE forms, ZINTERCARD ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn fold(self, into: &mut f64, value: f64) {
        *into = match self {
            Aggregate::Sum => {
                let sum = *into + value;
                // inf + -inf: Redis counts it as 0
                if sum.is_nan() { 0.0 } else { sum }
            }
            Aggregate::Min => into.min(value),
            Aggregate::Max => into.max(value),
        };
    }
}

/// One source of a combination: a sorted set's members and scores, or a set's
/// members (score 1); None for a missing key.
type Source = Option<Vec<(Vec<u8>, f64)>>;

/// Reads the sources (sets or sorted sets; WRONGTYPE for any other type).
fn read_sources(
    access: &mut Access<'_, '_>,
    keys: &[&[u8]],
    now: u64,
) -> Result<Vec<Source>, CommandError> {
    let mut sources = Vec::with_capacity(keys.len());
    for &key in keys {
        let source = access.with_key(key, |shard, _| {
            let Some(index) = shard.read(key, now) else {
                return Ok(None);
            };
            match shard.entry(index).value() {
                ValueRef::ZSet(zset) => Ok(Some(
                    zset.iter()
                        .map(|(member, score)| (member.to_vec(), score))
                        .collect(),
                )),
                ValueRef::Set(set) => Ok(Some(set.iter().map(|m| (m.to_vec(), 1.0)).collect())),
                _ => Err(CommandError::WrongType),
            }
        })?;
        sources.push(source);
    }
    Ok(sources)
}

/// Combines the sources, each score times its weight; the result's members with scores.
fn combine(
    sources: &[Source],
    weights: &[f64],
    how: Combine,
    aggregate: Aggregate,
) -> Vec<(Vec<u8>, f64)> {
    let weighted = |score: f64, weight: f64| {
        let value = score * weight;
        if value.is_nan() { 0.0 } else { value }
    };
    let lookup: Vec<Option<std::collections::HashMap<&[u8], f64>>> = sources
        .iter()
        .map(|source| {
            source
                .as_ref()
                .map(|members| members.iter().map(|(m, s)| (&m[..], *s)).collect())
        })
        .collect();
    match how {
        Combine::Union => {
            let mut result: indexmap::IndexMap<&[u8], f64> = indexmap::IndexMap::new();
            for (source, &weight) in sources.iter().zip(weights) {
                for (member, score) in source.iter().flatten() {
                    let value = weighted(*score, weight);
                    match result.get_mut(&member[..]) {
                        Some(into) => aggregate.fold(into, value),
                        None => {
                            result.insert(member, value);
                        }
                    }
                }
            }
            result.into_iter().map(|(m, s)| (m.to_vec(), s)).collect()
        }
        Combine::Inter => {
            if sources.iter().any(Option::is_none) {
                return Vec::new();
            }
            // walk the smallest source, as Redis does
            let smallest = (0..sources.len())
                .min_by_key(|&index| sources[index].as_ref().map_or(0, Vec::len))
                .unwrap_or(0);
            let mut result = Vec::new();
            'members: for (member, _) in sources[smallest].iter().flatten() {
                let mut total: Option<f64> = None;
                for (index, table) in lookup.iter().enumerate() {
                    let Some(score) = table.as_ref().and_then(|t| t.get(&member[..])) else {
                        continue 'members;
                    };
                    let value = weighted(*score, weights[index]);
                    match total.as_mut() {
                        Some(into) => aggregate.fold(into, value),
                        None => total = Some(value),
                    }
                }
                result.push((member.clone(), total.unwrap_or(0.0)));
            }
            result
        }
        Combine::Diff => match sources.split_first() {
            Some((Some(first), _)) => first
                .iter()
                .filter(|(member, _)| {
                    !lookup[1..]
                        .iter()
                        .flatten()
                        .any(|table| table.contains_key(&member[..]))
                })
                .cloned()
                .collect(),
            _ => Vec::new(),
        },
    }
}

/// ZUNION-family arguments after the keys: WEIGHTS, AGGREGATE, WITHSCORES.
struct CombineArgs {
    weights: Vec<f64>,
    aggregate: Aggregate,
    with_scores: bool,
}

/// The number of keys at `numkeys_at` and the keys' positions after it.
fn combine_keys(
    ctx: &Ctx<'_, '_>,
    numkeys_at: usize,
    name: &str,
) -> Result<std::ops::Range<usize>, CommandError> {
    let numkeys = parse_int(ctx.args[numkeys_at])?;
    if numkeys < 1 {
        return Err(CommandError::other(format!(
            "ERR at least 1 input key is needed for '{name}' command"
        )));
    }
    let first = numkeys_at + 1;
    if numkeys as u64 > (ctx.args.len() - first) as u64 {
        return Err(CommandError::Syntax);
    }
    Ok(first..first + numkeys as usize)
}

fn combine_options(
    args: &[&[u8]],
    keys: std::ops::Range<usize>,
    how: Combine,
    store: bool,
) -> Result<CombineArgs, CommandError> {
    let count = keys.len();
    let mut parsed = CombineArgs {
        weights: vec![1.0; count],
        aggregate: Aggregate::Sum,
        with_scores: false,
    };
    let mut at = keys.end;
    while at < args.len() {
        let left = args.len() - at;
        let option = args[at].to_ascii_lowercase();
        match option.as_slice() {
            b"weights" if how != Combine::Diff && left > count => {
                for (index, weight) in parsed.weights.iter_mut().enumerate() {
                    *weight = parse_score(args[at + 1 + index], "ERR weight value is not a float")?;
                }
                at += 1 + count;
            }
            b"aggregate" if how != Combine::Diff && left >= 2 => {
                parsed.aggregate = match args[at + 1].to_ascii_lowercase().as_slice() {
                    b"sum" => Aggregate::Sum,
                    b"min" => Aggregate::Min,
                    b"max" => Aggregate::Max,
                    _ => return Err(CommandError::Syntax),
                };
                at += 2;
            }
            b"withscores" if !store => {
                parsed.with_scores = true;
                at += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok(parsed)
}

/// Sorts a combination's result as the sorted set Redis builds from it.
fn sorted(result: Vec<(Vec<u8>, f64)>) -> ZSetValue {
    let mut zset = ZSetValue::default();
    for (member, score) in result {
        zset.insert(&member, score);
    }
    zset
}

fn combine_command(ctx: &mut Ctx<'_, '_>, how: Combine, name: &str) -> CmdResult {
    let keys = combine_keys(ctx, 1, name)?;
    let now = ctx.now;
    let args = ctx.args;
    // types are checked before the options are parsed, as Redis does
    let sources = ctx.keys.atomically(&args[keys.clone()], |access| {
        read_sources(access, &args[keys.clone()], now)
    })?;
    let options = combine_options(args, keys, how, false)?;
    let zset = sorted(combine(&sources, &options.weights, how, options.aggregate));
    let members: Vec<(&[u8], f64)> = zset.iter().collect();
    reply_range(ctx.out, &members, options.with_scores);
    Ok(())
}

fn combine_store(ctx: &mut Ctx<'_, '_>, how: Combine, name: &str) -> CmdResult {
    let keys = combine_keys(ctx, 2, name)?;
    let (destination, now, args) = (ctx.args[1], ctx.now, ctx.args);
    let events = &*ctx.shared.keyspace_events;
    let event = match how {
        Combine::Union => "zunionstore",
        Combine::Inter => "zinterstore",
        Combine::Diff => "zdiffstore",
    };
    let mut all = vec![destination];
    all.extend_from_slice(&args[keys.clone()]);
    let stored = ctx.keys.atomically(&all, |access| {
        let sources = read_sources(access, &args[keys.clone()], now)?;
        let options = combine_options(args, keys.clone(), how, true)?;
        let result = combine(&sources, &options.weights, how, options.aggregate);
        Ok::<_, CommandError>(store_result(
            access,
            events,
            event,
            destination,
            result,
            now,
        ))
    })?;
    ctx.out.integer(stored as i64);
    Ok(())
}

pub fn zunion(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_command(ctx, Combine::Union, "zunion")
}

pub fn zinter(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_command(ctx, Combine::Inter, "zinter")
}

pub fn zdiff(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_command(ctx, Combine::Diff, "zdiff")
}

pub fn zunionstore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_store(ctx, Combine::Union, "zunionstore")
}

pub fn zinterstore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_store(ctx, Combine::Inter, "zinterstore")
}

pub fn zdiffstore(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    combine_store(ctx, Combine::Diff, "zdiffstore")
}

/// ZUNION / ZINTER / ZDIFF / ZINTERCARD's keys: `numkeys` of them after it.
pub fn combine_command_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    keys_after_numkeys(args, 1, 0)
}

/// The STORE forms' keys: the destination, then `numkeys` of them after the count.
pub fn combine_store_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    let mut keys = args
        .get(1)
        .map(|destination| vec![*destination])
        .unwrap_or_default();
    keys.extend(keys_after_numkeys(args, 2, 0));
    keys
}

pub fn zintercard(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let keys = combine_keys(ctx, 1, "zintercard")?;
    let numkeys = keys.len();
    let args = ctx.args;
    let mut limit = 0usize;
    let mut at = keys.end;
    while at < args.len() {
        if args[at].eq_ignore_ascii_case(b"LIMIT") && at + 1 < args.len() {
            limit = match parse_int(args[at + 1]) {
                Ok(limit) if limit >= 0 => limit as usize,
                _ => return Err(CommandError::other("ERR LIMIT can't be negative")),
            };
            at += 2;
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let now = ctx.now;
    let sources = ctx.keys.atomically(&args[keys.clone()], |access| {
        read_sources(access, &args[keys.clone()], now)
    })?;
    let count = combine(
        &sources,
        &vec![1.0; numkeys],
        Combine::Inter,
        Aggregate::Sum,
    )
    .len();
    let count = if limit > 0 { count.min(limit) } else { count };
    ctx.out.integer(count as i64);
    Ok(())
}

// ---- ZSCAN ----

pub fn zscan(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let cursor: usize = std::str::from_utf8(ctx.args[2])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| CommandError::other("ERR invalid cursor"))?;
    let options = ScanOptions::parse(ctx, 3)?;
    query_collection::<ZSetValue, _>(ctx, |zset, out| {
        let mut found: Vec<(&[u8], f64)> = Vec::new();
        let mut remaining = 0;
        match zset {
            None => {}
            Some(zset) if zset.len() <= SCAN_WHOLE_MAX => {
                found.extend(zset.iter().filter(|(member, _)| options.matches(member)));
            }
            Some(zset) => {
                // from the end of the score map toward 0, as SSCAN: a removal moves the
                // last member into the hole, which was already visited
                remaining = if cursor == 0 {
                    zset.len()
                } else {
                    cursor.min(zset.len())
                };
                let mut visited = 0;
                while remaining > 0 && visited < options.count {
                    remaining -= 1;
                    visited += 1;
                    if let Some((member, score)) = zset.get_index(remaining)
                        && options.matches(member)
                    {
                        found.push((member, score));
                    }
                }
            }
        }
        out.array(2);
        out.bulk_str(itoa::Buffer::new().format(remaining));
        out.array(found.len() * 2);
        for (member, score) in found {
            out.bulk(member);
            out.bulk_str(&score_text(score));
        }
    })
}

/// A set's members as they would sit in a sorted set of score 1 (for tests of the
/// combination rules).
#[cfg(test)]
fn as_source(set: &crate::store::SetValue) -> Source {
    Some(set.iter().map(|m| (m.to_vec(), 1.0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_parse_like_getdoublefromobject() {
        let message = "ERR value is not a valid float";
        for good in ["1", "-1.5", "+inf", "-inf", "inf", "1e10", ".5", "1."] {
            assert!(parse_score(good.as_bytes(), message).is_ok(), "{good}");
        }
        for bad in ["", " 1", "1 ", "nan", "1e400", "1e-400", "abc", "1e"] {
            assert!(parse_score(bad.as_bytes(), message).is_err(), "{bad}");
        }
    }

    #[test]
    fn range_bounds_parse_like_strtod() {
        assert_eq!(parse_bound(b"(1.5"), Some((1.5, true)));
        assert_eq!(parse_bound(b""), Some((0.0, false)));
        assert_eq!(parse_bound(b"("), Some((0.0, true)));
        assert_eq!(parse_bound(b" 2"), Some((2.0, false)));
        assert_eq!(parse_bound(b"-inf"), Some((f64::NEG_INFINITY, false)));
        assert_eq!(parse_bound(b"nan"), None);
        assert_eq!(parse_bound(b"1x"), None);
    }

    #[test]
    fn sets_count_as_score_one_in_combinations() {
        let mut set = crate::store::SetValue::default();
        set.insert(b"a");
        let zset: Source = Some(vec![(b"a".to_vec(), 2.0), (b"b".to_vec(), 3.0)]);
        let sources = [zset, as_source(&set)];
        let union = combine(&sources, &[1.0, 10.0], Combine::Union, Aggregate::Sum);
        assert_eq!(union, vec![(b"a".to_vec(), 12.0), (b"b".to_vec(), 3.0)]);
        let inter = combine(&sources, &[1.0, 1.0], Combine::Inter, Aggregate::Max);
        assert_eq!(inter, vec![(b"a".to_vec(), 2.0)]);
        let diff = combine(&sources, &[1.0, 1.0], Combine::Diff, Aggregate::Sum);
        assert_eq!(diff, vec![(b"b".to_vec(), 3.0)]);
    }
}
