//! Sans-IO decoder for replies read from other servers: MIGRATE targets and
//! fan-out primaries, region-link peers, and the node's own replies run
//! internally. The one RESP reply decoder of the node.
//!
//! The peer may be broken or hostile, so decoding is iterative (an explicit
//! stack, no recursion) and bounded by [`ReplyLimits`]: a length prefix is
//! checked before anything is allocated for it, and a reply that cannot fit
//! the limits is an error as soon as its header says so, not once it arrived.

use bytes::Bytes;

use super::frame::{INLINE_MAX, ParseError, parse_i64};

/// Bounds on one reply.
#[derive(Clone, Copy, Debug)]
pub struct ReplyLimits {
    /// Bytes of the whole reply on the wire.
    pub max_len: usize,
    /// Payload bytes of one bulk string.
    pub max_bulk_len: usize,
    /// Array elements, counted over every nesting level.
    pub max_elements: usize,
    /// Arrays nested in arrays (a flat array is depth 1).
    pub max_depth: usize,
}

impl ReplyLimits {
    /// For replies this node wrote itself (still finite: a bug must not recurse).
    pub const TRUSTED: ReplyLimits = ReplyLimits {
        max_len: usize::MAX,
        max_bulk_len: usize::MAX,
        max_elements: usize::MAX,
        max_depth: 64,
    };
}

/// A typed reply. The decoder reads RESP2 and the RESP3 null (what peers send); the
/// RESP3-only shapes come from a RESP3 capture (a script that asked for RESP3 with
/// `redis.setresp(3)`) and from a script's return value, and each encodes in the
/// RESP2 form Redis gives it when the client speaks RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Reply>),
    /// Keys and values alternating (a flat array in RESP2).
    Map(Vec<Reply>),
    /// An array in RESP2.
    Set(Vec<Reply>),
    /// The double as Redis writes it (`%.17g`; a bulk string in RESP2).
    Double(String),
    /// `:1` / `:0` in RESP2.
    Bool(bool),
    /// Digits (a bulk string in RESP2).
    BigNumber(String),
    /// Text of a verbatim string and its three-letter format (a bulk in RESP2).
    Verbatim {
        format: String,
        text: Bytes,
    },
}

/// The shape of a collection a [`ReplyTree`] is filling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    Array,
    /// Counted in elements: keys and values.
    Map,
    Set,
}

impl Collection {
    fn of(self, items: Vec<Reply>) -> Reply {
        match self {
            Collection::Array => Reply::Array(items),
            Collection::Map => Reply::Map(items),
            Collection::Set => Reply::Set(items),
        }
    }
}

/// Outcome of one decode attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole reply and the bytes it took.
    Reply { reply: Reply, consumed: usize },
    /// More input is needed; `min_len` is a lower bound on the buffer length
    /// at which decoding can make progress (never above `max_len`).
    Incomplete { min_len: usize },
}

/// Builds replies from their parts in wire order: values, and array headers whose
/// elements follow. The decoder fills one from bytes; an `Out` in capture mode fills
/// one as a command writes its reply, so internal callers get the typed reply
/// without encoding and decoding it.
#[derive(Debug, Default)]
pub struct ReplyTree {
    open: Vec<Open>,
}

/// A collection being filled: its elements so far and how many are still due.
#[derive(Debug)]
struct Open {
    kind: Collection,
    items: Vec<Reply>,
    due: usize,
}

impl ReplyTree {
    /// Starts an array of `count` elements (`capacity` of them reserved); an empty
    /// array is a value at once.
    pub fn open_array(&mut self, count: usize, capacity: usize) -> Option<Reply> {
        self.open(Collection::Array, count, capacity)
    }

    /// Starts a collection of `count` elements (a map counts keys and values).
    pub fn open(&mut self, kind: Collection, count: usize, capacity: usize) -> Option<Reply> {
        if count == 0 {
            return self.add(kind.of(Vec::new()));
        }
        self.open.push(Open {
            kind,
            items: Vec::with_capacity(capacity.min(count)),
            due: count,
        });
        None
    }

    /// Adds a value to the innermost open array; returns the top-level reply it
    /// completes (the value itself when no array is open).
    pub fn add(&mut self, mut value: Reply) -> Option<Reply> {
        while let Some(mut open) = self.open.pop() {
            open.items.push(value);
            open.due -= 1;
            if open.due > 0 {
                self.open.push(open);
                return None;
            }
            value = open.kind.of(open.items);
        }
        Some(value)
    }

    /// Arrays started and not yet complete.
    pub fn depth(&self) -> usize {
        self.open.len()
    }
}

/// Decodes one reply from the start of `buf`.
pub fn parse_reply(buf: &[u8], limits: &ReplyLimits) -> Result<Decoded, ParseError> {
    let mut tree = ReplyTree::default();
    let mut elements = 0usize;
    let mut pos = 0usize;
    loop {
        let Some((kind, line, after)) = header(buf, pos, limits)? else {
            return Ok(Decoded::Incomplete {
                min_len: buf.len() + 1,
            });
        };
        pos = after;
        let value = match kind {
            b'+' => Reply::Simple(text(line)),
            b'-' => Reply::Error(text(line)),
            b':' => Reply::Int(parse_i64(line).ok_or(ParseError::InvalidReplyInteger)?),
            b'_' if line.is_empty() => Reply::Nil,
            b'$' => match length(line)? {
                None => Reply::Nil,
                Some(len) => {
                    if len > limits.max_bulk_len {
                        return Err(ParseError::ReplyBulkTooBig(limits.max_bulk_len));
                    }
                    let end = after
                        .checked_add(len)
                        .and_then(|end| end.checked_add(2))
                        .filter(|&end| end <= limits.max_len)
                        .ok_or(ParseError::ReplyTooBig(limits.max_len))?;
                    if buf.len() < end {
                        return Ok(Decoded::Incomplete { min_len: end });
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(ParseError::UnterminatedBulk);
                    }
                    pos = end;
                    Reply::Bulk(Bytes::copy_from_slice(&buf[after..end - 2]))
                }
            },
            b'*' => match length(line)? {
                None => Reply::Nil,
                Some(0) => Reply::Array(Vec::new()),
                Some(count) => {
                    if tree.depth() >= limits.max_depth {
                        return Err(ParseError::ReplyTooDeep(limits.max_depth));
                    }
                    elements = elements
                        .checked_add(count)
                        .filter(|&total| total <= limits.max_elements)
                        .ok_or(ParseError::ReplyTooManyElements(limits.max_elements))?;
                    // every element takes at least 3 bytes on the wire: the
                    // capacity follows what arrived, not what the header claims
                    let arrived = (buf.len() - after) / 3;
                    tree.open_array(count, arrived.min(1024));
                    continue;
                }
            },
            other => return Err(ParseError::UnexpectedReplyType(other)),
        };
        // hand the finished value to the arrays it completes
        if let Some(reply) = tree.add(value) {
            return Ok(Decoded::Reply {
                reply,
                consumed: pos,
            });
        }
    }
}

/// A header line: its type byte, its text, and where the next line starts.
type Header<'b> = (u8, &'b [u8], usize);

/// The header line at `pos`; None when it is not all there yet (and may still fit).
fn header<'b>(
    buf: &'b [u8],
    pos: usize,
    limits: &ReplyLimits,
) -> Result<Option<Header<'b>>, ParseError> {
    let window = &buf[pos..buf.len().min(pos.saturating_add(INLINE_MAX + 2))];
    let Some(end) = memchr::memmem::find(window, b"\r\n") else {
        if window.len() > INLINE_MAX {
            return Err(ParseError::ReplyLineTooLong);
        }
        if buf.len() >= limits.max_len {
            return Err(ParseError::ReplyTooBig(limits.max_len));
        }
        return Ok(None);
    };
    let after = pos + end + 2;
    if after > limits.max_len {
        return Err(ParseError::ReplyTooBig(limits.max_len));
    }
    match window[..end].split_first() {
        Some((&kind, line)) => Ok(Some((kind, line, after))),
        None => Err(ParseError::UnexpectedReplyType(b'\r')),
    }
}

/// A `$` or `*` length: None for the null (-1).
fn length(line: &[u8]) -> Result<Option<usize>, ParseError> {
    match parse_i64(line) {
        Some(-1) => Ok(None),
        Some(len) => usize::try_from(len)
            .map(Some)
            .map_err(|_| ParseError::InvalidReplyLength),
        None => Err(ParseError::InvalidReplyLength),
    }
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: ReplyLimits = ReplyLimits {
        max_len: 1024,
        max_bulk_len: 256,
        max_elements: 64,
        max_depth: 4,
    };

    fn decode(buf: &[u8]) -> Result<Decoded, ParseError> {
        parse_reply(buf, &SMALL)
    }

    fn whole(buf: &[u8]) -> Reply {
        match decode(buf) {
            Ok(Decoded::Reply { reply, consumed }) => {
                assert_eq!(consumed, buf.len(), "{buf:?}");
                reply
            }
            other => panic!("{buf:?}: {other:?}"),
        }
    }

    #[test]
    fn decodes_every_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(whole(b"-ERR x\r\n"), Reply::Error("ERR x".into()));
        assert_eq!(whole(b":-5\r\n"), Reply::Int(-5));
        assert_eq!(whole(b"$-1\r\n"), Reply::Nil);
        assert_eq!(whole(b"*-1\r\n"), Reply::Nil);
        assert_eq!(whole(b"_\r\n"), Reply::Nil);
        assert_eq!(whole(b"*0\r\n"), Reply::Array(Vec::new()));
        assert_eq!(
            whole(b"$3\r\na\r\n\r\n"),
            Reply::Bulk(Bytes::from_static(b"a\r\n"))
        );
        assert_eq!(
            whole(b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n*1\r\n+x\r\n:2\r\n"),
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"a")),
                Reply::Array(vec![
                    Reply::Int(1),
                    Reply::Array(vec![Reply::Simple("x".into())])
                ]),
                Reply::Int(2),
            ])
        );
    }

    #[test]
    fn waits_for_the_rest_and_reports_what_it_needs() {
        assert_eq!(decode(b""), Ok(Decoded::Incomplete { min_len: 1 }));
        assert_eq!(decode(b"+O"), Ok(Decoded::Incomplete { min_len: 3 }));
        assert_eq!(decode(b"$5\r\nab"), Ok(Decoded::Incomplete { min_len: 11 }));
        assert_eq!(
            decode(b"*2\r\n:1\r\n"),
            Ok(Decoded::Incomplete { min_len: 9 })
        );
        // the rest of the buffer is the next reply's
        assert_eq!(
            decode(b"+OK\r\n:1\r\n"),
            Ok(Decoded::Reply {
                reply: Reply::Simple("OK".into()),
                consumed: 5
            })
        );
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        assert_eq!(
            decode(b"$9223372036854775807\r\n"),
            Err(ParseError::ReplyBulkTooBig(256))
        );
        let short = ReplyLimits {
            max_len: 100,
            ..SMALL
        };
        assert_eq!(
            parse_reply(b"$200\r\n", &short),
            Err(ParseError::ReplyTooBig(100))
        );
        // the elements of an array count towards the whole reply
        let mut wide = b"*4\r\n".to_vec();
        for _ in 0..4 {
            wide.extend_from_slice(b"$250\r\n");
            wide.extend_from_slice(&[b'x'; 250]);
            wide.extend_from_slice(b"\r\n");
        }
        assert_eq!(decode(&wide), Err(ParseError::ReplyTooBig(1024)));
        assert_eq!(
            decode(b"*9223372036854775807\r\n"),
            Err(ParseError::ReplyTooManyElements(64))
        );
        assert_eq!(decode(b"*-2\r\n"), Err(ParseError::InvalidReplyLength));
        assert_eq!(decode(b"$x\r\n"), Err(ParseError::InvalidReplyLength));
        assert_eq!(decode(b":1x\r\n"), Err(ParseError::InvalidReplyInteger));
        assert_eq!(decode(b"?\r\n"), Err(ParseError::UnexpectedReplyType(b'?')));
        assert_eq!(decode(b"\r\n"), Err(ParseError::UnexpectedReplyType(b'\r')));
        assert_eq!(decode(b"$1\r\nab\r\n"), Err(ParseError::UnterminatedBulk));
        assert_eq!(
            decode(&b"*1\r\n".repeat(5)),
            Err(ParseError::ReplyTooDeep(4))
        );
        // a line that never ends
        let endless = vec![b'+'; 2000];
        assert_eq!(decode(&endless), Err(ParseError::ReplyTooBig(1024)));
        let limits = ReplyLimits {
            max_len: usize::MAX,
            ..SMALL
        };
        let endless = vec![b'+'; INLINE_MAX + 10];
        assert_eq!(
            parse_reply(&endless, &limits),
            Err(ParseError::ReplyLineTooLong)
        );
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let depth = 100_000;
        let mut buf = b"*1\r\n".repeat(depth);
        buf.extend_from_slice(b":7\r\n");
        let limits = ReplyLimits {
            max_depth: depth,
            ..ReplyLimits::TRUSTED
        };
        let Ok(Decoded::Reply { mut reply, .. }) = parse_reply(&buf, &limits) else {
            panic!("deep reply not decoded");
        };
        // unwrap iteratively too: dropping the tree recursively is the caller's concern
        let mut levels = 0;
        while let Reply::Array(mut items) = reply {
            reply = items.pop().expect("one element");
            levels += 1;
        }
        assert_eq!((levels, reply), (depth, Reply::Int(7)));
    }

    fn encode(reply: &Reply, out: &mut Vec<u8>) {
        match reply {
            Reply::Simple(text) => out.extend(format!("+{text}\r\n").bytes()),
            Reply::Error(text) => out.extend(format!("-{text}\r\n").bytes()),
            Reply::Int(value) => out.extend(format!(":{value}\r\n").bytes()),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(data) => {
                out.extend(format!("${}\r\n", data.len()).bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => {
                out.extend(format!("*{}\r\n", items.len()).bytes());
                for item in items {
                    encode(item, out);
                }
            }
            other => unreachable!("the decoder reads RESP2: {other:?}"),
        }
    }

    fn any_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-z ]{0,8}".prop_map(Reply::Simple),
            "[A-Z ]{0,8}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Int),
            Just(Reply::Nil),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|data| Reply::Bulk(data.into())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Reply::Array)
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            match decode(&buf) {
                Ok(Decoded::Reply { consumed, .. }) => prop_assert!(consumed <= buf.len()),
                Ok(Decoded::Incomplete { min_len }) => {
                    prop_assert!(min_len > buf.len() && min_len <= SMALL.max_len)
                }
                Err(_) => {}
            }
        }

        #[test]
        fn every_prefix_waits_and_the_whole_decodes(reply in any_reply()) {
            let mut wire = Vec::new();
            encode(&reply, &mut wire);
            for cut in 0..wire.len() {
                let decoded = parse_reply(&wire[..cut], &ReplyLimits::TRUSTED);
                prop_assert!(
                    matches!(decoded, Ok(Decoded::Incomplete { min_len }) if min_len > cut),
                    "prefix {} of {:?}: {:?}", cut, wire, decoded
                );
            }
            prop_assert_eq!(
                parse_reply(&wire, &ReplyLimits::TRUSTED),
                Ok(Decoded::Reply { reply, consumed: wire.len() })
            );
        }
    }
}
