//! LCS: the longest common subsequence of two strings, its length, or the matching
//! ranges, computed as redis-server computes it (the same table and the same walk
//! back through it, so ties resolve the same way and the answers are equal).

use super::strings::{MAX_STRING, read_string};
use super::{Ctx, parse_int};
use crate::error::{CmdResult, CommandError};

/// What the caller asked for.
struct Options {
    len: bool,
    idx: bool,
    with_match_len: bool,
    min_match_len: u64,
}

fn options(args: &[&[u8]]) -> Result<Options, CommandError> {
    let mut options = Options {
        len: false,
        idx: false,
        with_match_len: false,
        min_match_len: 0,
    };
    let mut at = 3;
    while at < args.len() {
        let option = args[at];
        if option.eq_ignore_ascii_case(b"IDX") {
            options.idx = true;
        } else if option.eq_ignore_ascii_case(b"LEN") {
            options.len = true;
        } else if option.eq_ignore_ascii_case(b"WITHMATCHLEN") {
            options.with_match_len = true;
        } else if option.eq_ignore_ascii_case(b"MINMATCHLEN") && at + 1 < args.len() {
            options.min_match_len = parse_int(args[at + 1])?.max(0) as u64;
            at += 1;
        } else {
            return Err(CommandError::Syntax);
        }
        at += 1;
    }
    if options.idx && options.len {
        return Err(CommandError::other(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    Ok(options)
}

/// A matching range: first and last index in each string, both included.
struct Match {
    a: (usize, usize),
    b: (usize, usize),
}

/// The LCS's length, the subsequence itself and its ranges (from the end), by
/// Redis's table of prefix LCS lengths, walked back from the end. `headroom`: the
/// bytes the table may take besides Redis's bound (what maxmemory leaves).
fn lcs(
    a: &[u8],
    b: &[u8],
    min_match_len: u64,
    headroom: u64,
) -> Result<(usize, Vec<u8>, Vec<Match>), CommandError> {
    let width = b.len() + 1;
    let cells = (a.len() + 1)
        .checked_mul(width)
        .filter(|cells| cells.saturating_mul(4) <= MAX_STRING)
        .ok_or_else(|| {
            CommandError::other(
                "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
            )
        })?;
    // a table the memory limit has no room for would get the node killed (a pod's
    // limit), not just refused: redis-server has no such check
    if cells as u64 * 4 > headroom {
        return Err(CommandError::other(
            "ERR Insufficient memory, transient memory for LCS exceeds what maxmemory leaves",
        ));
    }
    let mut table: Vec<u32> = Vec::new();
    table.try_reserve_exact(cells).map_err(|_| {
        CommandError::other("ERR Insufficient memory, failed allocating transient memory for LCS")
    })?;
    table.resize(cells, 0);
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    let length = table[a.len() * width + b.len()] as usize;
    let mut sequence = vec![0u8; length];
    let mut matches = Vec::new();
    let mut open: Option<Match> = None;
    let (mut i, mut j, mut left) = (a.len(), b.len(), length);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            sequence[left - 1] = a[i - 1];
            match open.as_mut() {
                None => {
                    open = Some(Match {
                        a: (i - 1, i - 1),
                        b: (j - 1, j - 1),
                    })
                }
                // consecutive matches extend the range backward
                Some(range) => {
                    range.a.0 -= 1;
                    range.b.0 -= 1;
                }
            }
            if open
                .as_ref()
                .is_some_and(|range| range.a.0 == 0 || range.b.0 == 0)
            {
                emit = true;
            }
            left -= 1;
            i -= 1;
            j -= 1;
        } else {
            if table[(i - 1) * width + j] > table[i * width + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = open.is_some();
        }
        if emit
            && let Some(range) = open.take()
            && (range.a.1 - range.a.0 + 1) as u64 >= min_match_len
        {
            matches.push(range);
        }
    }
    Ok((length, sequence, matches))
}

pub fn lcs_command(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (first, second, now) = (ctx.args[1], ctx.args[2], ctx.now);
    // both values copied under their locks, compared outside them
    let (a, b) = ctx.keys.atomically(&[first, second], |access| {
        let mut read = |key: &[u8]| {
            access.with_key(key, |shard, _| match read_string(shard, key, now) {
                Ok(value) => Ok(value.unwrap_or_default().to_vec()),
                Err(_) => Err(CommandError::other(
                    "ERR The specified keys must contain string values",
                )),
            })
        };
        let a = read(first)?;
        Ok::<_, CommandError>((a, read(second)?))
    })?;
    let options = options(ctx.args)?;
    let db = ctx.keys.db();
    let headroom = match db.maxmemory() {
        0 => u64::MAX,
        limit => limit.saturating_sub(db.used_memory()),
    };
    let (length, sequence, matches) = lcs(&a, &b, options.min_match_len, headroom)?;
    let out = &mut *ctx.out;
    if options.idx {
        out.map(2);
        out.bulk(b"matches");
        out.array(matches.len());
        for range in &matches {
            out.array(2 + usize::from(options.with_match_len));
            for (start, end) in [range.a, range.b] {
                out.array(2);
                out.integer(start as i64);
                out.integer(end as i64);
            }
            if options.with_match_len {
                out.integer((range.a.1 - range.a.0 + 1) as i64);
            }
        }
        out.bulk(b"len");
        out.integer(length as i64);
    } else if options.len {
        out.integer(length as i64);
    } else {
        out.bulk(&sequence);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_subsequence_and_its_ranges_as_redis_documents() {
        let (length, sequence, matches) =
            lcs(b"ohmytext", b"mynewtext", 0, u64::MAX).expect("small");
        assert_eq!((length, &sequence[..]), (6, &b"mytext"[..]));
        let ranges: Vec<_> = matches.iter().map(|range| (range.a, range.b)).collect();
        assert_eq!(ranges, [((4, 7), (5, 8)), ((2, 3), (0, 1))]);
        let (_, _, long_only) = lcs(b"ohmytext", b"mynewtext", 4, u64::MAX).expect("small");
        assert_eq!(long_only.len(), 1);
        // 9 x 10 cells of 4 bytes do not fit in 300 bytes of headroom
        assert!(lcs(b"ohmytext", b"mynewtext", 0, 300).is_err());
        assert!(lcs(b"ohmytext", b"mynewtext", 0, 360).is_ok());
    }
}
