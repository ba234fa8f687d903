//! Bitmap commands: the bits of string values. Bit 0 is the most significant bit of
//! the first byte, as in Redis; a missing key reads as an endless run of zeros, and a
//! write past the end grows the string with zero bytes.

use std::collections::BTreeMap;

use super::strings::{MAX_STRING, read_string};
use super::{Ctx, parse_int};
use crate::error::{CmdResult, CommandError};
use crate::notify::NotifyClass;
use crate::store::{Shard, Value, ValueRef};

fn offset_error() -> CommandError {
    CommandError::other("ERR bit offset is not an integer or out of range")
}

/// A bit offset argument, below 8 × proto-max-bulk-len. `#N` (BITFIELD) counts in
/// fields of `width` bits.
fn bit_offset(arg: &[u8], width: Option<u32>) -> Result<u64, CommandError> {
    let (digits, scale) = match (arg.first(), width) {
        (Some(b'#'), Some(width)) => (&arg[1..], i64::from(width)),
        _ => (arg, 1),
    };
    let offset = parse_int(digits)
        .ok()
        .and_then(|offset| offset.checked_mul(scale))
        .filter(|&offset| offset >= 0 && ((offset >> 3) as u64) < MAX_STRING as u64)
        .ok_or_else(offset_error)?;
    Ok(offset as u64)
}

fn byte_and_mask(offset: u64) -> (usize, u8) {
    ((offset >> 3) as usize, 0x80 >> (offset & 7))
}

/// The string at `key` for a write that reaches byte `last`: created or grown with
/// zeros as needed. Returns its index and whether it was created or grown.
fn string_for_write(
    shard: &mut Shard,
    key: &[u8],
    slot: u16,
    last: usize,
    now: u64,
) -> Result<(u32, bool), CommandError> {
    let Some(index) = shard.find(key, now) else {
        return Ok((
            shard.insert(key, slot, Value::Str(vec![0; last + 1]), 0),
            true,
        ));
    };
    let ValueRef::Str(bytes) = shard.entry(index).value() else {
        return Err(CommandError::WrongType);
    };
    if bytes.len() > last {
        return Ok((index, false));
    }
    shard.modify(index, |value| {
        if let Value::Str(bytes) = value {
            bytes.resize(last + 1, 0);
        }
    });
    Ok((index, true))
}

pub fn setbit(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let offset = bit_offset(ctx.arg(2), None)?;
    let on = match parse_int(ctx.arg(3)) {
        Ok(bit @ 0..=1) => bit == 1,
        _ => {
            return Err(CommandError::other(
                "ERR bit is not an integer or out of range",
            ));
        }
    };
    let (key, now) = (ctx.args[1], ctx.now);
    let (byte, mask) = byte_and_mask(offset);
    let (was, grown) = ctx.keys.with_key(key, |shard, slot| {
        let (index, grown) = string_for_write(shard, key, slot, byte, now)?;
        let ValueRef::Str(bytes) = shard.entry(index).value() else {
            return Err(CommandError::WrongType);
        };
        let was = bytes[byte] & mask != 0;
        if was != on {
            // an unchanged bit is no write (WATCH and tracking see nothing, as in Redis)
            shard.modify(index, |value| {
                if let Value::Str(bytes) = value {
                    bytes[byte] ^= mask;
                }
            });
        }
        Ok((was, grown))
    })?;
    // like Redis: a created or grown string is a change even when the bit was already so
    if grown || was != on {
        ctx.notify(NotifyClass::String, "setbit", key);
    }
    ctx.out.integer(i64::from(was));
    Ok(())
}

pub fn getbit(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let offset = bit_offset(ctx.arg(2), None)?;
    let (key, now) = (ctx.args[1], ctx.now);
    let (byte, mask) = byte_and_mask(offset);
    let set = ctx.keys.with_key(key, |shard, _| {
        let bytes = read_string(shard, key, now)?.unwrap_or_default();
        Ok::<_, CommandError>(bytes.get(byte).is_some_and(|&value| value & mask != 0))
    })?;
    ctx.out.integer(i64::from(set));
    Ok(())
}

/// A BITCOUNT / BITPOS range in bits, first and last included, from `start` and `end`
/// in bytes or bits (`in_bits`) counted from the end when negative, clamped to the
/// string of `len` bytes. None when it is empty.
fn bit_range(start: i64, end: i64, in_bits: bool, len: usize) -> Option<(u64, u64)> {
    let total = if in_bits { len as i64 * 8 } else { len as i64 };
    let from_end = |index: i64| {
        if index < 0 {
            (total + index).max(0)
        } else {
            index
        }
    };
    let (start, end) = (from_end(start), from_end(end).min(total - 1));
    if start > end {
        return None;
    }
    let (start, end) = (start as u64, end as u64);
    Some(if in_bits {
        (start, end)
    } else {
        (start * 8, end * 8 + 7)
    })
}

/// `BYTE` or `BIT`: whether a range counts bits.
fn range_unit(arg: &[u8]) -> Result<bool, CommandError> {
    if arg.eq_ignore_ascii_case(b"BIT") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"BYTE") {
        Ok(false)
    } else {
        Err(CommandError::Syntax)
    }
}

/// Set bits of `bytes` from bit `first` to bit `last`, both included.
fn count_ones(bytes: &[u8], first: u64, last: u64) -> u64 {
    let (first_byte, last_byte) = ((first >> 3) as usize, (last >> 3) as usize);
    let whole: u64 = bytes[first_byte..=last_byte]
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from(u64::from_ne_bytes(word).count_ones())
        })
        .sum();
    // the edge bytes' bits outside the range
    let before = u64::from((bytes[first_byte] & !(0xFFu8 >> (first & 7))).count_ones());
    let after = u64::from((bytes[last_byte] & (0x7Fu8 >> (last & 7))).count_ones());
    whole - before - after
}

/// The first bit equal to `bit` from bit `first` to bit `last` (included).
fn find_bit(bytes: &[u8], bit: bool, first: u64, last: u64) -> Option<u64> {
    let skip = if bit { 0x00 } else { 0xFF };
    let mut at = first;
    while at <= last {
        let (byte, shift) = ((at >> 3) as usize, at & 7);
        if shift == 0 && at + 7 <= last && bytes[byte] == skip {
            at += 8;
            continue;
        }
        if (bytes[byte] & (0x80 >> shift) != 0) == bit {
            return Some(at);
        }
        at += 1;
    }
    None
}

pub fn bitcount(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, now, args, out) = (ctx.args[1], ctx.now, ctx.args, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        // as in Redis, a missing key answers 0 before the range is looked at
        let Some(bytes) = read_string(shard, key, now)? else {
            out.integer(0);
            return Ok(());
        };
        let range = match args.len() {
            2 => bit_range(0, -1, false, bytes.len()),
            4 | 5 => {
                let (start, end) = (parse_int(args[2])?, parse_int(args[3])?);
                if start < 0 && end < 0 && start > end {
                    None
                } else {
                    let in_bits = match args.get(4) {
                        Some(unit) => range_unit(unit)?,
                        None => false,
                    };
                    bit_range(start, end, in_bits, bytes.len())
                }
            }
            _ => return Err(CommandError::Syntax),
        };
        out.integer(range.map_or(0, |(first, last)| count_ones(bytes, first, last)) as i64);
        Ok(())
    })
}

pub fn bitpos(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let bit = match ctx.int_arg(2)? {
        0 => false,
        1 => true,
        _ => {
            return Err(CommandError::other("ERR The bit argument must be 1 or 0."));
        }
    };
    let (key, now, args, out) = (ctx.args[1], ctx.now, ctx.args, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        // a missing key is all zeros: the first 0 is bit 0, there is no 1
        let Some(bytes) = read_string(shard, key, now)? else {
            out.integer(if bit { -1 } else { 0 });
            return Ok(());
        };
        let (range, end_given) = match args.len() {
            3 => (bit_range(0, -1, false, bytes.len()), false),
            4..=6 => {
                let start = parse_int(args[3])?;
                let in_bits = match args.get(5) {
                    Some(unit) => range_unit(unit)?,
                    None => false,
                };
                let end = match args.get(4) {
                    Some(end) => parse_int(end)?,
                    None => -1,
                };
                (bit_range(start, end, in_bits, bytes.len()), args.len() > 4)
            }
            _ => return Err(CommandError::Syntax),
        };
        let position = match range {
            None => -1,
            Some((first, last)) => match find_bit(bytes, bit, first, last) {
                Some(position) => position as i64,
                // past the string it is zeros, unless the range was given in full
                None if !bit && !end_given => last as i64 + 1,
                None => -1,
            },
        };
        out.integer(position);
        Ok(())
    })
}

#[derive(Clone, Copy)]
enum BitOp {
    And,
    Or,
    Xor,
    Not,
}

pub fn bitop(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let name = ctx.arg(1);
    let op = [
        (&b"AND"[..], BitOp::And),
        (b"OR", BitOp::Or),
        (b"XOR", BitOp::Xor),
        (b"NOT", BitOp::Not),
    ]
    .into_iter()
    .find_map(|(known, op)| name.eq_ignore_ascii_case(known).then_some(op))
    .ok_or(CommandError::Syntax)?;
    if matches!(op, BitOp::Not) && ctx.args.len() != 4 {
        return Err(CommandError::other(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    let (destination, sources, now) = (ctx.args[2], &ctx.args[3..], ctx.now);
    let mut all = vec![destination];
    all.extend_from_slice(sources);
    let length = ctx.keys.atomically(&all, |access| {
        // folded source by source from the stored bytes: no copy of the inputs, the
        // result zero-padded to the longest so far (a shorter input counts as zeros)
        let mut result: Vec<u8> = Vec::new();
        for (position, &source) in sources.iter().enumerate() {
            access.with_key(source, |shard, _| {
                let bytes = read_string(shard, source, now)?.unwrap_or_default();
                if result.len() < bytes.len() {
                    result.resize(bytes.len(), 0);
                }
                if position == 0 {
                    result[..bytes.len()].copy_from_slice(bytes);
                    return Ok(());
                }
                match op {
                    BitOp::And => {
                        for (at, byte) in result.iter_mut().enumerate() {
                            *byte &= bytes.get(at).copied().unwrap_or(0);
                        }
                    }
                    BitOp::Or => result
                        .iter_mut()
                        .zip(bytes)
                        .for_each(|(byte, &with)| *byte |= with),
                    BitOp::Xor => result
                        .iter_mut()
                        .zip(bytes)
                        .for_each(|(byte, &with)| *byte ^= with),
                    BitOp::Not => {}
                }
                Ok::<_, CommandError>(())
            })?;
        }
        if matches!(op, BitOp::Not) {
            result.iter_mut().for_each(|byte| *byte = !*byte);
        }
        let length = result.len();
        let existed = access.with_key(destination, |shard, slot| {
            let existing = shard.find(destination, now);
            // a result overwrites the key in place (no `new` event, as Redis's setKey)
            if length > 0 {
                shard.insert(destination, slot, Value::Str(result), 0);
            } else if let Some(index) = existing {
                shard.remove(index);
            }
            existing.is_some()
        });
        Ok::<_, CommandError>((length, existed))
    })?;
    let (length, existed) = length;
    if length > 0 {
        ctx.notify(NotifyClass::String, "set", destination);
    } else if existed {
        ctx.notify(NotifyClass::Generic, "del", destination);
    }
    ctx.out.integer(length as i64);
    Ok(())
}

/// What a field overflowing its width becomes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy)]
enum FieldOp {
    Get,
    Set(i64),
    Incrby(i64),
}

/// One BITFIELD operation: a field of `bits` bits at bit `offset`, signed or not.
#[derive(Clone, Copy)]
struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    overflow: Overflow,
}

/// `i1`..`i64` or `u1`..`u63` (lowercase, as Redis reads them).
fn field_type(arg: &[u8]) -> Result<(bool, u32), CommandError> {
    let invalid = || {
        CommandError::other(
            "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
        )
    };
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(invalid()),
    };
    let bits = parse_int(&arg[1..]).map_err(|_| invalid())?;
    let widest = if signed { 64 } else { 63 };
    if !(1..=widest).contains(&bits) {
        return Err(invalid());
    }
    Ok((signed, bits as u32))
}

/// Parses every operation before any runs: a bad one fails the whole command.
fn parse_fields(args: &[&[u8]]) -> Result<Vec<Field>, CommandError> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut at = 2;
    while at < args.len() {
        let left = args.len() - at - 1;
        let name = args[at];
        let takes_value = if name.eq_ignore_ascii_case(b"GET") && left >= 2 {
            false
        } else if (name.eq_ignore_ascii_case(b"SET") || name.eq_ignore_ascii_case(b"INCRBY"))
            && left >= 3
        {
            true
        } else if name.eq_ignore_ascii_case(b"OVERFLOW") && left >= 1 {
            let how = args[at + 1];
            overflow = if how.eq_ignore_ascii_case(b"WRAP") {
                Overflow::Wrap
            } else if how.eq_ignore_ascii_case(b"SAT") {
                Overflow::Sat
            } else if how.eq_ignore_ascii_case(b"FAIL") {
                Overflow::Fail
            } else {
                return Err(CommandError::other("ERR Invalid OVERFLOW type specified"));
            };
            at += 2;
            continue;
        } else {
            return Err(CommandError::Syntax);
        };
        let (signed, bits) = field_type(args[at + 1])?;
        let offset = bit_offset(args[at + 2], Some(bits))?;
        let op = if !takes_value {
            FieldOp::Get
        } else if name.eq_ignore_ascii_case(b"SET") {
            FieldOp::Set(parse_int(args[at + 3])?)
        } else {
            FieldOp::Incrby(parse_int(args[at + 3])?)
        };
        fields.push(Field {
            op,
            signed,
            bits,
            offset,
            overflow,
        });
        at += if takes_value { 4 } else { 3 };
    }
    Ok(fields)
}

/// The `bits` bits from bit `offset`, most significant first; zeros past the end.
fn read_field(bytes: &[u8], offset: u64, bits: u32) -> u64 {
    (offset..offset + u64::from(bits)).fold(0u64, |value, at| {
        let (byte, mask) = byte_and_mask(at);
        (value << 1) | u64::from(bytes.get(byte).is_some_and(|&b| b & mask != 0))
    })
}

fn write_field(bytes: &mut [u8], offset: u64, bits: u32, value: u64) {
    for index in 0..bits {
        let (byte, mask) = byte_and_mask(offset + u64::from(index));
        if (value >> (bits - 1 - index)) & 1 == 1 {
            bytes[byte] |= mask;
        } else {
            bytes[byte] &= !mask;
        }
    }
}

/// A field's stored bits as a signed value (two's complement of `bits` bits).
fn sign_extend(raw: u64, bits: u32) -> i64 {
    if bits < 64 && raw & (1 << (bits - 1)) != 0 {
        (raw | (u64::MAX << bits)) as i64
    } else {
        raw as i64
    }
}

/// `value + increment` in a field of `bits` bits: the bits to store, or None when it
/// overflows under FAIL. Redis's own checks, wrapping arithmetic included: for a SET
/// of a value far below the field's range its `max - value` wraps, and the value then
/// counts as overflowing upward (SAT stores the maximum), so this does too.
fn add_signed(value: i64, increment: i64, bits: u32, overflow: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let max_increment = (max as u64).wrapping_sub(value as u64) as i64;
    let min_increment = min.wrapping_sub(value);
    let upward = value > max
        || (bits != 64 && increment > max_increment)
        || (value >= 0 && increment > 0 && increment > max_increment);
    let downward = value < min
        || (bits != 64 && increment < min_increment)
        || (value < 0 && increment < 0 && increment < min_increment);
    if !upward && !downward {
        return Some(value.wrapping_add(increment));
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if upward { max } else { min }),
        Overflow::Wrap => {
            let wrapped = (value as u64).wrapping_add(increment as u64);
            Some(sign_extend(wrapped & mask(bits), bits))
        }
    }
}

fn mask(bits: u32) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn add_unsigned(value: u64, increment: i64, bits: u32, overflow: Overflow) -> Option<u64> {
    let max = mask(bits);
    let sum = i128::from(value) + i128::from(increment);
    let limit = if sum > i128::from(max) {
        max
    } else if sum < 0 {
        0
    } else {
        return Some(sum as u64);
    };
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(limit),
        Overflow::Wrap => Some(value.wrapping_add(increment as u64) & max),
    }
}

/// Runs one write on `bytes` (long enough): the reply (None under FAIL) and whether
/// the stored bits changed.
fn apply_field(bytes: &mut [u8], field: &Field) -> (Option<i64>, bool) {
    let raw = read_field(bytes, field.offset, field.bits);
    let (reply, stored) = if field.signed {
        let old = sign_extend(raw, field.bits);
        match field.op {
            FieldOp::Get => return (Some(old), false),
            FieldOp::Set(value) => {
                let Some(new) = add_signed(value, 0, field.bits, field.overflow) else {
                    return (None, false);
                };
                (old, new as u64)
            }
            FieldOp::Incrby(increment) => {
                let Some(new) = add_signed(old, increment, field.bits, field.overflow) else {
                    return (None, false);
                };
                (new, new as u64)
            }
        }
    } else {
        match field.op {
            FieldOp::Get => return (Some(raw as i64), false),
            FieldOp::Set(value) => {
                // a negative value is its two's complement bits, as Redis casts it
                let new = if value < 0 || value as u64 > mask(field.bits) {
                    match field.overflow {
                        Overflow::Fail => return (None, false),
                        // Redis compares the value as unsigned: a negative one is above max
                        Overflow::Sat => mask(field.bits),
                        Overflow::Wrap => value as u64 & mask(field.bits),
                    }
                } else {
                    value as u64
                };
                (raw as i64, new)
            }
            FieldOp::Incrby(increment) => {
                let Some(new) = add_unsigned(raw, increment, field.bits, field.overflow) else {
                    return (None, false);
                };
                (new as i64, new)
            }
        }
    };
    let stored = stored & mask(field.bits);
    write_field(bytes, field.offset, field.bits, stored);
    (Some(reply), stored != raw)
}

fn bitfield_command(ctx: &mut Ctx<'_, '_>, read_only: bool) -> CmdResult {
    let fields = parse_fields(ctx.args)?;
    let writes = fields.iter().any(|field| !matches!(field.op, FieldOp::Get));
    if writes && read_only {
        return Err(CommandError::other(
            "ERR BITFIELD_RO only supports the GET subcommand",
        ));
    }
    let (key, now) = (ctx.args[1], ctx.now);
    let (replies, changed) = ctx.keys.with_key(key, |shard, slot| {
        if !writes {
            let bytes = read_string(shard, key, now)?.unwrap_or_default();
            let replies = fields
                .iter()
                .map(|field| {
                    let raw = read_field(bytes, field.offset, field.bits);
                    Some(if field.signed {
                        sign_extend(raw, field.bits)
                    } else {
                        raw as i64
                    })
                })
                .collect();
            return Ok((replies, false));
        }
        let last_bit = fields
            .iter()
            .filter(|field| !matches!(field.op, FieldOp::Get))
            .map(|field| field.offset + u64::from(field.bits) - 1)
            .max()
            .unwrap_or(0);
        let (index, grown) = string_for_write(shard, key, slot, (last_bit >> 3) as usize, now)?;
        let ValueRef::Str(current) = shard.entry(index).value() else {
            return Err(CommandError::WrongType);
        };
        // The operations run on the bytes they touch (a field spans at most 9), kept
        // aside, so a large bitmap is not copied, and the value is written only when a
        // bit changed (as Redis signals a change).
        let mut touched: BTreeMap<usize, u8> = BTreeMap::new();
        let mut replies = Vec::with_capacity(fields.len());
        // Redis's `changes`: a write not refused by OVERFLOW FAIL that grew the
        // string or changed its field
        let mut changes = false;
        for field in &fields {
            let first = (field.offset >> 3) as usize;
            let last = ((field.offset + u64::from(field.bits) - 1) >> 3) as usize;
            let mut window = [0u8; 9];
            for (slot, at) in window.iter_mut().zip(first..=last) {
                *slot = touched
                    .get(&at)
                    .or_else(|| current.get(at))
                    .copied()
                    .unwrap_or(0);
            }
            let local = Field {
                offset: field.offset - first as u64 * 8,
                ..*field
            };
            let (reply, changed) = apply_field(&mut window[..=last - first], &local);
            if changed {
                touched.extend((first..=last).zip(window));
            }
            changes |= !matches!(field.op, FieldOp::Get) && reply.is_some() && (grown || changed);
            replies.push(reply);
        }
        if !touched.is_empty() {
            shard.modify(index, |value| {
                if let Value::Str(bytes) = value {
                    for (at, byte) in touched {
                        bytes[at] = byte;
                    }
                }
            });
        }
        Ok::<_, CommandError>((replies, changes))
    })?;
    if changed {
        ctx.notify(NotifyClass::String, "setbit", key);
    }
    ctx.out.array(replies.len());
    for reply in replies {
        match reply {
            Some(value) => ctx.out.integer(value),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

pub fn bitfield(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    bitfield_command(ctx, false)
}

pub fn bitfield_ro(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    bitfield_command(ctx, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_finds_bits_within_ranges() {
        let bytes = b"\xff\xf0\x00\x0f";
        assert_eq!(count_ones(bytes, 0, 31), 16);
        assert_eq!(count_ones(bytes, 4, 11), 8);
        assert_eq!(count_ones(bytes, 12, 27), 0);
        assert_eq!(count_ones(bytes, 27, 28), 1);
        assert_eq!(find_bit(bytes, false, 0, 31), Some(12));
        assert_eq!(find_bit(bytes, true, 12, 31), Some(28));
        assert_eq!(find_bit(bytes, true, 12, 27), None);
    }

    #[test]
    fn fields_wrap_saturate_and_fail_like_redis() {
        assert_eq!(add_signed(127, 1, 8, Overflow::Wrap), Some(-128));
        assert_eq!(add_signed(127, 1, 8, Overflow::Sat), Some(127));
        assert_eq!(add_signed(-128, -1, 8, Overflow::Sat), Some(-128));
        assert_eq!(add_signed(127, 1, 8, Overflow::Fail), None);
        assert_eq!(add_signed(i64::MAX, 1, 64, Overflow::Wrap), Some(i64::MIN));
        // redis-server: a value this far below i32's range overflows "upward"
        assert_eq!(
            add_signed(i64::MIN, 0, 32, Overflow::Sat),
            Some(i32::MAX.into())
        );
        assert_eq!(
            add_signed(-3_000_000_000, 0, 32, Overflow::Sat),
            Some(i32::MIN.into())
        );
        assert_eq!(add_unsigned(255, 1, 8, Overflow::Wrap), Some(0));
        assert_eq!(add_unsigned(0, -1, 8, Overflow::Wrap), Some(255));
        assert_eq!(add_unsigned(0, -1, 8, Overflow::Sat), Some(0));
        assert_eq!(add_unsigned(200, 100, 8, Overflow::Fail), None);
        let mut bytes = [0u8; 3];
        write_field(&mut bytes, 5, 10, 0b11_0000_0001);
        assert_eq!(read_field(&bytes, 5, 10), 0b11_0000_0001);
        assert_eq!(bytes, [0b0000_0110, 0b0000_0010, 0]);
        assert_eq!(sign_extend(read_field(&bytes, 5, 10), 10), -255);
    }
}
