//! HyperLogLog (PFADD, PFCOUNT, PFMERGE) in Redis's own string format, so that the
//! values are interchangeable with redis-server's byte for byte: a 16-byte header
//! ("HYLL", the encoding, a cached cardinality whose top bit marks it stale), then
//! 16384 registers of 6 bits, dense (12288 bytes) or sparse (run-length opcodes,
//! promoted to dense past 3000 bytes or for a register above 32). The same hash
//! (MurmurHash64A, seed 0xadc83b19), the same sparse edits and the same estimator
//! (Ertl's, as Redis 7) as redis-server, so counts agree exactly.

use super::Ctx;
use crate::error::{CmdResult, CommandError};
use crate::notify::NotifyClass;
use crate::store::{Value, ValueRef};

const P: u32 = 14;
const Q: u32 = 64 - P;
const REGISTERS: usize = 1 << P;
const HEADER: usize = 16;
const DENSE_SIZE: usize = HEADER + (REGISTERS * 6).div_ceil(8);
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
/// Redis's `hll-sparse-max-bytes` default: a longer sparse value becomes dense.
const SPARSE_MAX_BYTES: usize = 3000;
const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
/// 1 / (2 ln 2): the estimator's constant for m → ∞.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

fn not_hll() -> CommandError {
    CommandError::other("WRONGTYPE Key is not a valid HyperLogLog string value.")
}

fn corrupted() -> CommandError {
    CommandError::other("INVALIDOBJ Corrupted HLL object detected")
}

/// MurmurHash2, 64-bit, as Redis has it (little-endian words).
fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let mut k = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (index, &byte) in tail.iter().enumerate() {
            h ^= u64::from(byte) << (8 * index);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element falls in and the length of its run of zeros (plus one).
fn register_and_count(element: &[u8]) -> (usize, u8) {
    let hash = murmur64a(element, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    let rest = (hash >> P) | (1 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

fn dense_get(registers: &[u8], index: usize) -> u8 {
    let byte = index * 6 / 8;
    let shift = (index * 6) & 7;
    let b0 = u16::from(registers[byte]);
    let b1 = u16::from(registers.get(byte + 1).copied().unwrap_or(0));
    (((b0 >> shift) | (b1 << (8 - shift))) & 63) as u8
}

fn dense_set(registers: &mut [u8], index: usize, value: u8) {
    let byte = index * 6 / 8;
    let shift = (index * 6) & 7;
    let value = u16::from(value);
    registers[byte] &= !((63u16 << shift) as u8);
    registers[byte] |= (value << shift) as u8;
    if let Some(next) = registers.get_mut(byte + 1) {
        *next &= !((63u16 >> (8 - shift)) as u8);
        *next |= (value >> (8 - shift)) as u8;
    }
}

/// One sparse opcode: a run of `len` registers holding `value` (0 for ZERO and XZERO).
#[derive(Clone, Copy)]
struct Run {
    value: u8,
    len: usize,
    /// Bytes of the opcode (XZERO takes 2).
    size: usize,
}

fn run_at(sparse: &[u8], at: usize) -> Option<Run> {
    let byte = *sparse.get(at)?;
    Some(if byte & 0x80 != 0 {
        Run {
            value: ((byte >> 2) & 0x1f) + 1,
            len: usize::from(byte & 3) + 1,
            size: 1,
        }
    } else if byte & 0x40 == 0 {
        Run {
            value: 0,
            len: usize::from(byte & 0x3f) + 1,
            size: 1,
        }
    } else {
        let low = *sparse.get(at + 1)?;
        Run {
            value: 0,
            len: ((usize::from(byte & 0x3f) << 8) | usize::from(low)) + 1,
            size: 2,
        }
    })
}

fn push_zeros(out: &mut Vec<u8>, len: usize) {
    if len > SPARSE_ZERO_MAX_LEN {
        let encoded = len - 1;
        out.push((encoded >> 8) as u8 | 0x40);
        out.push((encoded & 0xff) as u8);
    } else {
        out.push((len - 1) as u8);
    }
}

fn val_opcode(value: u8, len: usize) -> u8 {
    ((value - 1) << 2) | (len - 1) as u8 | 0x80
}

/// Every register of a valid HLL value: None when the sparse runs do not add up.
fn registers_of(hll: &[u8]) -> Option<Vec<u8>> {
    if hll[4] == DENSE {
        let body = &hll[HEADER..];
        return Some((0..REGISTERS).map(|index| dense_get(body, index)).collect());
    }
    let mut registers = vec![0u8; REGISTERS];
    let (mut at, mut index) = (HEADER, 0usize);
    while at < hll.len() {
        let run = run_at(hll, at)?;
        if run.value > 0 {
            if index + run.len > REGISTERS {
                return None;
            }
            registers[index..index + run.len].fill(run.value);
        }
        index += run.len;
        at += run.size;
    }
    (index == REGISTERS).then_some(registers)
}

/// Whether a sparse value's runs cover exactly the 16384 registers. redis-server
/// edits a value without this check (and reads past a truncated last opcode); the
/// node refuses to edit a corrupt one.
fn sparse_is_whole(hll: &[u8]) -> bool {
    let (mut at, mut covered) = (HEADER, 0usize);
    while at < hll.len() {
        let Some(run) = run_at(hll, at) else {
            return false;
        };
        covered += run.len;
        at += run.size;
    }
    covered == REGISTERS
}

/// Redis's checks of a string used as an HLL: its magic, a known encoding, and the
/// exact length of a dense one.
fn check_hll(bytes: &[u8]) -> Result<(), CommandError> {
    let valid = bytes.len() >= HEADER
        && &bytes[..4] == b"HYLL"
        && bytes[4] <= SPARSE
        && (bytes[4] != DENSE || bytes.len() == DENSE_SIZE);
    if valid { Ok(()) } else { Err(not_hll()) }
}

/// An empty HLL: sparse, one XZERO run over every register, cached count 0.
fn empty_hll() -> Vec<u8> {
    let mut hll = b"HYLL".to_vec();
    hll.resize(HEADER, 0);
    hll[4] = SPARSE;
    push_zeros(&mut hll, REGISTERS);
    hll
}

fn invalidate_cache(hll: &mut [u8]) {
    hll[15] |= 0x80;
}

/// A sparse HLL rewritten dense (the header, cached count included, kept).
fn to_dense(hll: &[u8]) -> Option<Vec<u8>> {
    let registers = registers_of(hll)?;
    let mut dense = vec![0u8; DENSE_SIZE];
    dense[..HEADER].copy_from_slice(&hll[..HEADER]);
    dense[4] = DENSE;
    for (index, &value) in registers.iter().enumerate() {
        if value > 0 {
            dense_set(&mut dense[HEADER..], index, value);
        }
    }
    Some(dense)
}

/// Raises register `index` to `count` if it is lower, in either encoding, exactly
/// as redis-server edits it (so the bytes stay the same as its). Ok(true) when it
/// changed; Err when the sparse value is corrupt.
fn set_register(hll: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, CommandError> {
    if hll[4] == DENSE {
        return Ok(raise_dense(&mut hll[HEADER..], index, count));
    }
    if count > SPARSE_VAL_MAX_VALUE {
        return promote(hll, index, count);
    }
    // the run that covers the register, and the opcode before it
    let (mut at, mut first, mut previous) = (HEADER, 0usize, None);
    let run = loop {
        let run = run_at(hll, at).ok_or_else(corrupted)?;
        if index < first + run.len {
            break run;
        }
        previous = Some(at);
        at += run.size;
        first += run.len;
    };
    let changed_in_place = if run.value > 0 {
        if run.value >= count {
            return Ok(false);
        }
        run.len == 1
    } else {
        run.size == 1 && run.len == 1
    };
    if changed_in_place {
        hll[at] = val_opcode(count, 1);
    } else {
        let last = first + run.len - 1;
        let mut sequence = Vec::with_capacity(5);
        if run.value == 0 {
            if index != first {
                push_zeros(&mut sequence, index - first);
            }
            sequence.push(val_opcode(count, 1));
            if index != last {
                push_zeros(&mut sequence, last - index);
            }
        } else {
            if index != first {
                sequence.push(val_opcode(run.value, index - first));
            }
            sequence.push(val_opcode(count, 1));
            if index != last {
                sequence.push(val_opcode(run.value, last - index));
            }
        }
        if sequence.len() > run.size && hll.len() + sequence.len() - run.size > SPARSE_MAX_BYTES {
            return promote(hll, index, count);
        }
        hll.splice(at..at + run.size, sequence);
    }
    // adjacent VAL runs of one value merge, scanning up to 5 opcodes from the previous
    let mut at = previous.unwrap_or(HEADER);
    for _ in 0..5 {
        let Some(run) = run_at(hll, at) else { break };
        if run.value == 0 {
            at += run.size;
            continue;
        }
        if let Some(next) = run_at(hll, at + 1)
            && next.value == run.value
            && next.size == 1
            && run.len + next.len <= SPARSE_VAL_MAX_LEN
        {
            hll[at + 1] = val_opcode(run.value, run.len + next.len);
            hll.remove(at);
            continue;
        }
        at += 1;
    }
    invalidate_cache(hll);
    Ok(true)
}

fn raise_dense(registers: &mut [u8], index: usize, count: u8) -> bool {
    if dense_get(registers, index) >= count {
        return false;
    }
    dense_set(registers, index, count);
    true
}

/// Turns a sparse HLL dense, then raises the register there (which it must).
fn promote(hll: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, CommandError> {
    *hll = to_dense(hll).ok_or_else(corrupted)?;
    raise_dense(&mut hll[HEADER..], index, count);
    Ok(true)
}

/// Redis 7's estimate from the register values (Ertl, "New cardinality estimation
/// algorithms for HyperLogLog sketches"), computed in the same order.
fn estimate(registers: &[u8]) -> u64 {
    let mut histogram = [0u32; 64];
    for &value in registers {
        histogram[usize::from(value)] += 1;
    }
    let m = REGISTERS as f64;
    let mut z = m * tau((m - f64::from(histogram[Q as usize + 1])) / m);
    for j in (1..=Q as usize).rev() {
        z += f64::from(histogram[j]);
        z *= 0.5;
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    (ALPHA_INF * m * m / z).round() as u64
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if previous == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x).powf(2.0) * y;
        if previous == z {
            return z / 3.0;
        }
    }
}

/// The HLL at `key` as a copy, None when missing; WRONGTYPE for anything else.
fn read_hll(
    access: &mut crate::store::Access<'_, '_>,
    key: &[u8],
    now: u64,
) -> Result<Option<Vec<u8>>, CommandError> {
    access.with_key(key, |shard, _| {
        let Some(bytes) = super::strings::read_string(shard, key, now)? else {
            return Ok(None);
        };
        check_hll(bytes)?;
        Ok(Some(bytes.to_vec()))
    })
}

pub fn pfadd(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (key, elements, now) = (ctx.args[1], &ctx.args[2..], ctx.now);
    let updated = ctx.keys.with_key(key, |shard, slot| {
        let existing = match shard.find(key, now) {
            None => None,
            Some(index) => match shard.entry(index).value() {
                ValueRef::Str(bytes) => {
                    check_hll(bytes)?;
                    if bytes[4] == SPARSE && !sparse_is_whole(bytes) {
                        return Err(corrupted());
                    }
                    Some((index, bytes.to_vec()))
                }
                _ => return Err(CommandError::WrongType),
            },
        };
        let created = existing.is_none();
        let (index, mut hll) = match existing {
            Some((index, hll)) => (Some(index), hll),
            None => (None, empty_hll()),
        };
        let mut changed = created;
        for element in elements {
            let (register, count) = register_and_count(element);
            changed |= set_register(&mut hll, register, count)?;
        }
        if changed {
            invalidate_cache(&mut hll);
            match index {
                Some(index) => shard.modify(index, |value| *value = Value::Str(hll)),
                None => {
                    shard.insert(key, slot, Value::Str(hll), 0);
                }
            }
        }
        Ok(changed)
    })?;
    if updated {
        ctx.notify(NotifyClass::String, "pfadd", key);
    }
    ctx.out.integer(i64::from(updated));
    Ok(())
}

pub fn pfcount(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (keys, now) = (&ctx.args[1..], ctx.now);
    let count = ctx.keys.atomically(keys, |access| {
        let mut union = vec![0u8; REGISTERS];
        for &key in keys {
            let Some(hll) = read_hll(access, key, now)? else {
                continue;
            };
            // one key: its cached count while valid (not refreshed here: the value is
            // only written by writes, so replicas keep the same bytes)
            if keys.len() == 1 && hll[15] & 0x80 == 0 {
                let cached: [u8; 8] = hll[8..16].try_into().unwrap_or([0; 8]);
                return Ok(u64::from_le_bytes(cached));
            }
            let registers = registers_of(&hll).ok_or_else(corrupted)?;
            for (max, value) in union.iter_mut().zip(registers) {
                *max = (*max).max(value);
            }
        }
        Ok::<_, CommandError>(estimate(&union))
    })?;
    ctx.out.integer(count as i64);
    Ok(())
}

pub fn pfmerge(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (destination, keys, now) = (ctx.args[1], &ctx.args[1..], ctx.now);
    ctx.keys.atomically(keys, |access| {
        // the destination's own registers count too (it is the first key)
        let mut union = vec![0u8; REGISTERS];
        let mut any_dense = false;
        for &key in keys {
            let Some(hll) = read_hll(access, key, now)? else {
                continue;
            };
            any_dense |= hll[4] == DENSE;
            let registers = registers_of(&hll).ok_or_else(corrupted)?;
            for (max, value) in union.iter_mut().zip(registers) {
                *max = (*max).max(value);
            }
        }
        let mut hll = read_hll(access, destination, now)?.unwrap_or_else(empty_hll);
        if any_dense && hll[4] != DENSE {
            hll = to_dense(&hll).ok_or_else(corrupted)?;
        }
        for (index, &value) in union.iter().enumerate() {
            if value > 0 {
                set_register(&mut hll, index, value)?;
            }
        }
        invalidate_cache(&mut hll);
        access.with_key(destination, |shard, slot| {
            match shard.find(destination, now) {
                Some(index) => shard.modify(index, |value| *value = Value::Str(hll)),
                None => {
                    shard.insert(destination, slot, Value::Str(hll), 0);
                }
            }
        });
        Ok::<_, CommandError>(())
    })?;
    // Redis names PFMERGE's event `pfadd` too (a mass add, says hyperloglog.c)
    ctx.notify(NotifyClass::String, "pfadd", destination);
    ctx.out.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_in_both_encodings() {
        let mut hll = empty_hll();
        assert_eq!(hll.len(), HEADER + 2);
        assert_eq!(registers_of(&hll), Some(vec![0; REGISTERS]));
        for (index, count) in [(0, 3), (16383, 5), (100, 32), (101, 32), (7000, 1)] {
            assert_eq!(set_register(&mut hll, index, count), Ok(true));
        }
        assert_eq!(set_register(&mut hll, 100, 2), Ok(false));
        assert_eq!(hll[4], SPARSE);
        let registers = registers_of(&hll).expect("valid");
        assert_eq!(
            (
                registers[0],
                registers[16383],
                registers[100],
                registers[101]
            ),
            (3, 5, 32, 32)
        );
        // a register above 32 needs the dense encoding
        assert_eq!(set_register(&mut hll, 5, 40), Ok(true));
        assert_eq!((hll[4], hll.len()), (DENSE, DENSE_SIZE));
        let dense = registers_of(&hll).expect("valid");
        assert_eq!((dense[5], dense[16383], dense[7000]), (40, 5, 1));
        assert_eq!(dense.iter().filter(|&&value| value > 0).count(), 6);
    }

    #[test]
    fn the_estimate_of_nothing_is_zero_and_grows_with_distinct_elements() {
        assert_eq!(estimate(&[0; REGISTERS]), 0);
        let mut hll = empty_hll();
        for element in 0..1000u32 {
            let (index, count) = register_and_count(element.to_string().as_bytes());
            set_register(&mut hll, index, count).expect("valid");
        }
        let count = estimate(&registers_of(&hll).expect("valid"));
        assert!((980..=1020).contains(&count), "{count}");
    }
}
