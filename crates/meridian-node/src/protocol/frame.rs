//! Sans-IO parser for client requests: RESP multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! and inline commands (`GET k\r\n`), with Redis's limits and error texts.
//!
//! The parser never allocates for the frame data itself: it reports where each
//! argument lives in the buffer, so the connection can split the buffer once
//! and hand out zero-copy `Bytes` slices.

use std::ops::Range;

/// Longest inline request or `*`/`$` header line Redis accepts (PROTO_INLINE_MAX_SIZE).
pub const INLINE_MAX: usize = 64 * 1024;

/// Parser limits; defaults match Redis.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// proto-max-bulk-len: largest single argument.
    pub max_bulk_len: usize,
    /// Largest multibulk element count.
    pub max_multibulk_len: usize,
    /// client-query-buffer-limit: a client whose unparsed input exceeds this is closed.
    pub max_query_buffer: usize,
    /// Before AUTH (when a password is set) Redis accepts only tiny requests,
    /// so unauthenticated clients cannot make the server allocate much.
    pub unauthenticated: bool,
}

/// Largest multibulk count and bulk length accepted before authentication (Redis 7).
const UNAUTHENTICATED_MULTIBULK: i64 = 10;
const UNAUTHENTICATED_BULK: i64 = 16384;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as usize,
            max_query_buffer: 1024 * 1024 * 1024,
            unauthenticated: false,
        }
    }
}

/// Outcome of one parse attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command: argument ranges into the buffer and bytes consumed.
    /// An empty `args` means an empty request (`*0`, blank line) that gets no reply.
    Command {
        args: Vec<Range<usize>>,
        consumed: usize,
        inline: bool,
    },
    /// More input is needed; `min_len` is a lower bound on the buffer length
    /// at which parsing can make progress (lets callers skip re-parsing big bulks).
    Incomplete { min_len: usize },
}

/// A protocol violation. In a request the text is sent as `-ERR Protocol error:
/// <text>` and the connection is closed after the reply, as Redis does; in a
/// reply from another server the connection to it is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("too big inline request")]
    InlineTooBig,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("too big mbulk count string")]
    MultibulkHeaderTooBig,
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("too big bulk count string")]
    BulkHeaderTooBig,
    #[error("expected '$', got '{0}'")]
    ExpectedDollar(char),
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulk,
    // replies read from other servers (see `reply`)
    #[error("unexpected reply type byte 0x{0:02x}")]
    UnexpectedReplyType(u8),
    #[error("invalid reply length")]
    InvalidReplyLength,
    #[error("invalid integer reply")]
    InvalidReplyInteger,
    #[error("reply line too long")]
    ReplyLineTooLong,
    #[error("bulk reply not terminated by CRLF")]
    UnterminatedBulk,
    #[error("bulk reply longer than {0} bytes")]
    ReplyBulkTooBig(usize),
    #[error("reply longer than {0} bytes")]
    ReplyTooBig(usize),
    #[error("reply with more than {0} array elements")]
    ReplyTooManyElements(usize),
    #[error("reply nested deeper than {0} arrays")]
    ReplyTooDeep(usize),
}

/// Parses one command from the start of `buf`.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    parse_command_resuming(buf, limits, &mut None)
}

/// How far an incomplete multibulk got: its argument count, the arguments read so far
/// and where the next one starts, relative to the command's first byte.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Partial {
    count: usize,
    args: Vec<Range<usize>>,
    pos: usize,
}

/// [`parse_command`] that continues where the last attempt on the same command stopped:
/// `partial` is what that attempt left (the command still at the start of `buf`, more
/// bytes after it), and is set again when this one stops short. A command that arrives
/// over many reads then costs time linear in its length, not quadratic (a multibulk of
/// a million small arguments would otherwise be read from its start on every read).
pub fn parse_command_resuming(
    buf: &[u8],
    limits: &Limits,
    partial: &mut Option<Partial>,
) -> Result<Parsed, ParseError> {
    match (buf.first(), partial.take()) {
        (None, _) => Ok(Parsed::Incomplete { min_len: 1 }),
        (Some(b'*'), Some(resumed)) if resumed.pos <= buf.len() => {
            parse_bulks(buf, limits, resumed, partial)
        }
        (Some(b'*'), _) => parse_multibulk(buf, limits, partial),
        (Some(_), _) => parse_inline(buf),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    // Redis looks for '\r' and then requires the '\n' to be present.
    memchr::memchr(b'\r', &buf[from..]).map(|offset| from + offset)
}

/// Parses a signed decimal exactly like Redis's string2ll (no '+', no leading zeros
/// except "0", no spaces).
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty()
        || digits.len() > 19
        || (digits[0] == b'0' && (digits.len() > 1 || negative))
    {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            None
        } else {
            Some((value as i64).wrapping_neg())
        }
    } else {
        i64::try_from(value).ok()
    }
}

fn parse_multibulk(
    buf: &[u8],
    limits: &Limits,
    partial: &mut Option<Partial>,
) -> Result<Parsed, ParseError> {
    let Some(cr) = find_crlf(buf, 1) else {
        if buf.len() > INLINE_MAX {
            return Err(ParseError::MultibulkHeaderTooBig);
        }
        return Ok(Parsed::Incomplete {
            min_len: buf.len() + 1,
        });
    };
    if cr > INLINE_MAX {
        return Err(ParseError::MultibulkHeaderTooBig);
    }
    if cr + 1 >= buf.len() {
        return Ok(Parsed::Incomplete { min_len: cr + 2 });
    }
    let count = parse_i64(&buf[1..cr]).ok_or(ParseError::InvalidMultibulkLength)?;
    if count > limits.max_multibulk_len as i64 || count > i64::from(i32::MAX) {
        return Err(ParseError::InvalidMultibulkLength);
    }
    if limits.unauthenticated && count > UNAUTHENTICATED_MULTIBULK {
        return Err(ParseError::UnauthenticatedMultibulk);
    }
    let pos = cr + 2;
    if count <= 0 {
        return Ok(Parsed::Command {
            args: Vec::new(),
            consumed: pos,
            inline: false,
        });
    }
    let count = count as usize;
    let state = Partial {
        count,
        args: Vec::with_capacity(count.min(1024)),
        pos,
    };
    parse_bulks(buf, limits, state, partial)
}

/// Reads the bulk arguments of a multibulk from `state.pos` on; when the buffer ends
/// first, leaves in `partial` what was read.
fn parse_bulks(
    buf: &[u8],
    limits: &Limits,
    mut state: Partial,
    partial: &mut Option<Partial>,
) -> Result<Parsed, ParseError> {
    let incomplete = |state: Partial, partial: &mut Option<Partial>, min_len: usize| {
        *partial = Some(state);
        Ok(Parsed::Incomplete { min_len })
    };
    while state.args.len() < state.count {
        let pos = state.pos;
        if pos >= buf.len() {
            return incomplete(state, partial, pos + 1);
        }
        let Some(cr) = find_crlf(buf, pos) else {
            if buf.len() - pos > INLINE_MAX {
                return Err(ParseError::BulkHeaderTooBig);
            }
            return incomplete(state, partial, buf.len() + 1);
        };
        if cr - pos > INLINE_MAX {
            return Err(ParseError::BulkHeaderTooBig);
        }
        if buf[pos] != b'$' {
            return Err(ParseError::ExpectedDollar(char::from(buf[pos])));
        }
        if cr + 1 >= buf.len() {
            return incomplete(state, partial, cr + 2);
        }
        let len = parse_i64(&buf[pos + 1..cr]).ok_or(ParseError::InvalidBulkLength)?;
        if len < 0 || len as u64 > limits.max_bulk_len as u64 {
            return Err(ParseError::InvalidBulkLength);
        }
        if limits.unauthenticated && len > UNAUTHENTICATED_BULK {
            return Err(ParseError::UnauthenticatedBulk);
        }
        let start = cr + 2;
        let end = start + len as usize;
        if end + 2 > buf.len() {
            return incomplete(state, partial, end + 2);
        }
        // Redis trusts the length and skips the two bytes after the payload
        // without checking they are CRLF; we do the same for compatibility.
        state.args.push(start..end);
        state.pos = end + 2;
    }
    Ok(Parsed::Command {
        args: state.args,
        consumed: state.pos,
        inline: false,
    })
}

fn parse_inline(buf: &[u8]) -> Result<Parsed, ParseError> {
    let Some(newline) = memchr::memchr(b'\n', buf) else {
        if buf.len() > INLINE_MAX {
            return Err(ParseError::InlineTooBig);
        }
        return Ok(Parsed::Incomplete {
            min_len: buf.len() + 1,
        });
    };
    if newline > INLINE_MAX {
        return Err(ParseError::InlineTooBig);
    }
    let mut line_end = newline;
    if line_end > 0 && buf[line_end - 1] == b'\r' {
        line_end -= 1;
    }
    let args = split_inline_args(buf, 0, line_end)?;
    Ok(Parsed::Command {
        args,
        consumed: newline + 1,
        inline: true,
    })
}

/// Splits an inline line into arguments like Redis's sdssplitargs: spaces separate,
/// "double quotes" allow escapes, 'single quotes' only \'. Quoted arguments must be
/// followed by a space or the end of the line.
///
/// Arguments with escapes cannot be expressed as ranges of the input, so quoted
/// inline arguments are returned as ranges only when they contain no escapes;
/// otherwise the caller gets them via [`unescape_inline`].
fn split_inline_args(
    buf: &[u8],
    start: usize,
    end: usize,
) -> Result<Vec<Range<usize>>, ParseError> {
    let mut args = Vec::new();
    let mut pos = start;
    loop {
        while pos < end && is_space(buf[pos]) {
            pos += 1;
        }
        if pos >= end {
            return Ok(args);
        }
        match buf[pos] {
            quote @ (b'"' | b'\'') => {
                let open = pos;
                pos += 1;
                loop {
                    if pos >= end {
                        return Err(ParseError::UnbalancedQuotes);
                    }
                    let byte = buf[pos];
                    if byte == b'\\' && pos + 1 < end {
                        pos += 2;
                        continue;
                    }
                    if byte == quote {
                        break;
                    }
                    pos += 1;
                }
                // closing quote must be followed by a space or end
                if pos + 1 < end && !is_space(buf[pos + 1]) {
                    return Err(ParseError::UnbalancedQuotes);
                }
                // include the quotes; the connection unescapes quoted args
                args.push(open..pos + 1);
                pos += 1;
            }
            _ => {
                let arg_start = pos;
                while pos < end && !is_space(buf[pos]) {
                    pos += 1;
                }
                args.push(arg_start..pos);
            }
        }
    }
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Returns the unescaped form of an inline argument if it was quoted, else `None`.
pub fn unescape_inline(raw: &[u8]) -> Option<Vec<u8>> {
    let (&quote, _) = raw.split_first()?;
    if !(quote == b'"' || quote == b'\'') || raw.len() < 2 || raw[raw.len() - 1] != quote {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let byte = inner[i];
        if byte == b'\\' && i + 1 < inner.len() {
            let next = inner[i + 1];
            if quote == b'\'' {
                if next == b'\'' {
                    out.push(b'\'');
                    i += 2;
                } else {
                    out.push(byte);
                    i += 1;
                }
                continue;
            }
            match next {
                b'x' if is_hex(inner.get(i + 2)) && is_hex(inner.get(i + 3)) => {
                    out.push(hex_value(inner[i + 2]) * 16 + hex_value(inner[i + 3]));
                    i += 4;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                }
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                }
                b'b' => {
                    out.push(0x08);
                    i += 2;
                }
                b'a' => {
                    out.push(0x07);
                    i += 2;
                }
                other => {
                    out.push(other);
                    i += 2;
                }
            }
            continue;
        }
        out.push(byte);
        i += 1;
    }
    Some(out)
}

fn is_hex(byte: Option<&u8>) -> bool {
    byte.is_some_and(u8::is_ascii_hexdigit)
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args_of(buf: &[u8]) -> Vec<Vec<u8>> {
        match parse_command(buf, &Limits::default()) {
            Ok(Parsed::Command { args, inline, .. }) => args
                .into_iter()
                .map(|range| {
                    let raw = &buf[range];
                    if inline {
                        unescape_inline(raw).unwrap_or_else(|| raw.to_vec())
                    } else {
                        raw.to_vec()
                    }
                })
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_multibulk() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest";
        match parse_command(buf, &Limits::default()) {
            Ok(Parsed::Command { args, consumed, .. }) => {
                assert_eq!(consumed, buf.len() - 4);
                assert_eq!(args, vec![8..11, 17..18]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_inline_with_quotes() {
        assert_eq!(
            args_of(b"SET a b\r\n"),
            vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(args_of(b"  PING  \n"), vec![b"PING".to_vec()]);
        assert_eq!(args_of(b"SET k \"a b\\n\\x41\"\r\n")[2], b"a b\nA".to_vec());
        assert_eq!(args_of(b"SET k 'it\\'s'\r\n")[2], b"it's".to_vec());
        assert_eq!(args_of(b"\r\n"), Vec::<Vec<u8>>::new());
        assert_eq!(
            parse_command(b"SET k \"abc\r\n", &Limits::default()),
            Err(ParseError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_command(b"SET k \"abc\"x\r\n", &Limits::default()),
            Err(ParseError::UnbalancedQuotes)
        );
    }

    #[test]
    fn reports_redis_errors() {
        let limits = Limits::default();
        assert_eq!(
            parse_command(b"*2\r\n$-1\r\n", &limits),
            Err(ParseError::InvalidBulkLength)
        );
        assert_eq!(
            parse_command(b"*1\r\n$999999999999\r\n", &limits),
            Err(ParseError::InvalidBulkLength)
        );
        assert_eq!(
            parse_command(b"*x\r\n", &limits),
            Err(ParseError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_command(b"*99999999999\r\n", &limits),
            Err(ParseError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_command(b"*1\r\n+OK\r\n", &limits),
            Err(ParseError::ExpectedDollar('+'))
        );
        assert_eq!(
            parse_command(&vec![b'a'; INLINE_MAX + 1], &limits),
            Err(ParseError::InlineTooBig)
        );
        let mut header = b"*".to_vec();
        header.extend(vec![b'1'; INLINE_MAX + 1]);
        assert_eq!(
            parse_command(&header, &limits),
            Err(ParseError::MultibulkHeaderTooBig)
        );
        assert_eq!(
            parse_command(b"*0\r\n", &limits),
            Ok(Parsed::Command {
                args: vec![],
                consumed: 4,
                inline: false
            })
        );
        assert_eq!(
            parse_command(b"*-1\r\n", &limits),
            Ok(Parsed::Command {
                args: vec![],
                consumed: 5,
                inline: false
            })
        );
    }

    #[test]
    fn unauthenticated_clients_get_small_limits() {
        let limits = Limits {
            unauthenticated: true,
            ..Limits::default()
        };
        assert_eq!(
            parse_command(b"*11\r\n", &limits),
            Err(ParseError::UnauthenticatedMultibulk)
        );
        assert_eq!(
            parse_command(b"*1\r\n$16385\r\n", &limits),
            Err(ParseError::UnauthenticatedBulk)
        );
        assert!(matches!(
            parse_command(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", &limits),
            Ok(Parsed::Command { .. })
        ));
    }

    #[test]
    fn incomplete_reports_needed_length() {
        let limits = Limits::default();
        assert_eq!(
            parse_command(b"*1\r\n$10\r\nab", &limits),
            Ok(Parsed::Incomplete { min_len: 9 + 12 })
        );
        assert_eq!(
            parse_command(b"*1\r", &limits),
            Ok(Parsed::Incomplete { min_len: 4 })
        );
    }

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"01", b"-0", b"+1", b" 1", b"1 ", b"1a"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend(format!("${}\r\n", arg.len()).into_bytes());
            out.extend(arg);
            out.extend(b"\r\n");
        }
        out
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let limits = Limits { max_bulk_len: 1024, max_multibulk_len: 64, max_query_buffer: 4096, unauthenticated: false };
            let mut rest: &[u8] = &buf;
            for _ in 0..64 {
                match parse_command(rest, &limits) {
                    Ok(Parsed::Command { args, consumed, .. }) => {
                        prop_assert!(consumed > 0 && consumed <= rest.len());
                        for range in args {
                            prop_assert!(range.end <= consumed);
                        }
                        rest = &rest[consumed..];
                    }
                    Ok(Parsed::Incomplete { min_len }) => {
                        prop_assert!(min_len > rest.len());
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn any_split_gives_same_commands(
            commands in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5), 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut wire = Vec::new();
            for command in &commands {
                wire.extend(encode(command));
            }
            let mut cut_points: Vec<usize> = cuts.iter().map(|index| index.index(wire.len() + 1)).collect();
            cut_points.push(wire.len());
            cut_points.sort_unstable();
            // feed growing prefixes at the cut points, as a socket would, parsing each
            // attempt afresh and resuming where the last one stopped
            for resuming in [false, true] {
            let mut parsed = Vec::new();
            let mut start = 0;
            let mut partial = None;
            for &cut in &cut_points {
                loop {
                    if start >= cut { break; }
                    if !resuming { partial = None; }
                    match parse_command_resuming(&wire[start..cut], &Limits::default(), &mut partial) {
                        Ok(Parsed::Command { args, consumed, .. }) => {
                            parsed.push(args.iter().map(|r| wire[start + r.start..start + r.end].to_vec()).collect::<Vec<_>>());
                            start += consumed;
                        }
                        Ok(Parsed::Incomplete { min_len }) => {
                            prop_assert!(min_len > cut - start);
                            break;
                        }
                        Err(error) => prop_assert!(false, "valid input rejected: {error}"),
                    }
                }
            }
            prop_assert_eq!(&parsed, &commands);
            }
        }
    }

    /// A multibulk that arrives in pieces is read once: after an attempt stopped short,
    /// the next one starts where that one did (the arguments already read are not looked
    /// at again, so garbage written over them changes nothing).
    #[test]
    fn a_command_in_pieces_is_resumed_not_read_again() {
        let args: Vec<Vec<u8>> = (0..10_000).map(|i| format!("a{i}").into_bytes()).collect();
        let mut wire = encode(&args);
        let whole = parse_command(&wire, &Limits::default()).expect("parses");
        let mut partial = None;
        let half = wire.len() / 2;
        let Ok(Parsed::Incomplete { .. }) =
            parse_command_resuming(&wire[..half], &Limits::default(), &mut partial)
        else {
            panic!("half a command is incomplete");
        };
        let read = partial.as_ref().expect("progress kept").pos;
        assert!(read > half - 16, "stopped at {read} of {half}");
        for byte in &mut wire[1..read] {
            *byte = b'#';
        }
        let mut steps = 0;
        let resumed = loop {
            steps += 1;
            let cut = (half + steps * 997).min(wire.len());
            match parse_command_resuming(&wire[..cut], &Limits::default(), &mut partial) {
                Ok(Parsed::Incomplete { .. }) => continue,
                other => break other,
            }
        };
        assert_eq!(resumed, Ok(whole));
        assert_eq!(partial, None, "nothing left over once the command is whole");
    }
}
