//! Reply writing: straight into the connection's output buffer, choosing the
//! RESP2 or RESP3 form of each reply type (maps, nulls, doubles, pushes), or as
//! typed replies for the node's internal callers.

use bytes::{BufMut, Bytes, BytesMut};

use super::reply::{Collection, Decoded, Reply, ReplyLimits, ReplyTree, parse_reply};

/// Protocol version negotiated with HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// Where a command's reply goes. Connections encode it; internal callers (the HTTP
/// API, origin continuations, region-link events) take it as a typed [`Reply`], and
/// a replica applying its primary's stream answers nobody.
enum Sink {
    Encoded(BytesMut),
    Captured {
        tree: ReplyTree,
        replies: Vec<Reply>,
    },
    Discarded,
}

/// Output of one caller: for a connection, replies of a pipelined batch accumulate
/// here and are written with a single flush.
pub struct Out {
    sink: Sink,
    pub proto: Protocol,
}

/// A position in the output between two whole replies.
#[derive(Clone, Copy, Debug)]
pub struct Mark(usize);

/// Replies taken out of an [`Out`] to be written later (a strong write's reply held
/// until the peer regions acknowledged), in the form their `Out` keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Encoded(Vec<u8>),
    Replies(Vec<Reply>),
}

impl Default for Written {
    fn default() -> Self {
        Written::Replies(Vec::new())
    }
}

impl Out {
    /// Encodes replies for a connection.
    pub fn new(proto: Protocol) -> Self {
        Self::with_capacity(proto, 16 * 1024)
    }

    /// Encodes replies into a buffer that starts with `capacity` bytes.
    pub fn with_capacity(proto: Protocol, capacity: usize) -> Self {
        Out {
            sink: Sink::Encoded(BytesMut::with_capacity(capacity)),
            proto,
        }
    }

    /// Keeps replies as typed values, in their RESP2 shape (an internal caller).
    pub fn capture() -> Self {
        Out {
            sink: Sink::Captured {
                tree: ReplyTree::default(),
                replies: Vec::new(),
            },
            proto: Protocol::Resp2,
        }
    }

    /// Keeps replies as typed values in their RESP3 shape: maps, sets, doubles and
    /// verbatim strings as such (a script that asked for RESP3).
    pub fn capture_resp3() -> Self {
        Out {
            proto: Protocol::Resp3,
            ..Out::capture()
        }
    }

    /// Drops every reply (a replica applying its primary's stream).
    pub fn discard() -> Self {
        Out {
            sink: Sink::Discarded,
            proto: Protocol::Resp2,
        }
    }

    /// Whether replies are kept typed.
    pub fn is_capturing(&self) -> bool {
        matches!(self.sink, Sink::Captured { .. })
    }

    pub fn is_resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    /// The encoded bytes not yet flushed (none unless encoding).
    pub fn encoded(&self) -> &[u8] {
        match &self.sink {
            Sink::Encoded(buf) => buf,
            _ => &[],
        }
    }

    /// Bytes waiting to be flushed.
    pub fn len(&self) -> usize {
        self.encoded().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets what was flushed; a buffer grown past `max_capacity` by a large reply
    /// is replaced by one of `capacity`.
    pub fn flushed(&mut self, max_capacity: usize, capacity: usize) {
        if let Sink::Encoded(buf) = &mut self.sink {
            buf.clear();
            if buf.capacity() > max_capacity {
                *buf = BytesMut::with_capacity(capacity);
            }
        }
    }

    /// The whole replies captured so far, taken out (none unless capturing).
    pub fn take_replies(&mut self) -> Vec<Reply> {
        match &mut self.sink {
            Sink::Captured { replies, .. } => std::mem::take(replies),
            _ => Vec::new(),
        }
    }

    /// The first reply captured, if any.
    pub fn into_reply(mut self) -> Option<Reply> {
        self.take_replies().into_iter().next()
    }

    /// The current position; only taken between whole replies.
    pub fn mark(&self) -> Mark {
        match &self.sink {
            Sink::Encoded(buf) => Mark(buf.len()),
            Sink::Captured { tree, replies } => {
                debug_assert_eq!(tree.depth(), 0, "a mark inside a reply");
                Mark(replies.len())
            }
            Sink::Discarded => Mark(0),
        }
    }

    /// Takes back what was written since `mark`.
    pub fn truncate(&mut self, mark: Mark) {
        match &mut self.sink {
            Sink::Encoded(buf) => buf.truncate(mark.0),
            Sink::Captured { replies, .. } => replies.truncate(mark.0),
            Sink::Discarded => {}
        }
    }

    /// Takes out what was written since `mark`, to be [`put`](Self::put) later.
    pub fn take_since(&mut self, mark: Mark) -> Written {
        match &mut self.sink {
            Sink::Encoded(buf) => Written::Encoded(buf.split_off(mark.0).to_vec()),
            Sink::Captured { replies, .. } => Written::Replies(replies.split_off(mark.0)),
            Sink::Discarded => Written::default(),
        }
    }

    /// Writes replies taken out earlier.
    pub fn put(&mut self, written: Written) {
        match (&mut self.sink, written) {
            (Sink::Encoded(buf), Written::Encoded(bytes)) => buf.put_slice(&bytes),
            (Sink::Captured { replies, .. }, Written::Replies(taken)) => replies.extend(taken),
            (_, Written::Replies(taken)) => {
                for reply in &taken {
                    self.reply(reply);
                }
            }
            (_, Written::Encoded(bytes)) => {
                // written by a connection, put into a capture: not a path the node
                // takes, but the bytes are the node's own replies
                let mut rest = &bytes[..];
                while let Ok(Decoded::Reply { reply, consumed }) =
                    parse_reply(rest, &ReplyLimits::TRUSTED)
                {
                    self.reply(&reply);
                    rest = &rest[consumed..];
                }
            }
        }
    }

    /// Writes a typed reply.
    pub fn reply(&mut self, reply: &Reply) {
        match reply {
            Reply::Simple(text) => self.simple(text),
            Reply::Error(text) => self.error(text),
            Reply::Int(value) => self.integer(*value),
            Reply::Bulk(data) => self.bulk(data),
            Reply::Nil => self.null(),
            Reply::Array(items) => {
                self.array(items.len());
                items.iter().for_each(|item| self.reply(item));
            }
            Reply::Map(items) => {
                self.map(items.len() / 2);
                items.iter().for_each(|item| self.reply(item));
            }
            Reply::Set(items) => {
                self.set(items.len());
                items.iter().for_each(|item| self.reply(item));
            }
            Reply::Double(text) => self.double_text(text),
            Reply::Bool(value) => self.boolean(*value),
            Reply::BigNumber(digits) => self.big_number(digits),
            Reply::Verbatim { format, text } => self.verbatim_bytes(format, text),
        }
    }

    /// The buffer to encode into, or None when the reply is captured or dropped
    /// (after handing `typed` its value).
    #[inline]
    fn encoding(&mut self, typed: impl FnOnce() -> Reply) -> Option<&mut BytesMut> {
        match &mut self.sink {
            Sink::Encoded(buf) => Some(buf),
            Sink::Captured { tree, replies } => {
                replies.extend(tree.add(typed()));
                None
            }
            Sink::Discarded => None,
        }
    }

    /// Like [`encoding`](Self::encoding) for an array header of `len` elements.
    #[inline]
    fn encoding_array(&mut self, len: usize) -> Option<&mut BytesMut> {
        self.encoding_collection(Collection::Array, len)
    }

    /// Like [`encoding`](Self::encoding) for the header of a collection of `len`
    /// elements, captured as `kind` in RESP3 and as an array in RESP2.
    #[inline]
    fn encoding_collection(&mut self, kind: Collection, len: usize) -> Option<&mut BytesMut> {
        let kind = match self.proto {
            Protocol::Resp2 => Collection::Array,
            Protocol::Resp3 => kind,
        };
        match &mut self.sink {
            Sink::Encoded(buf) => Some(buf),
            Sink::Captured { tree, replies } => {
                replies.extend(tree.open(kind, len, len.min(1024)));
                None
            }
            Sink::Discarded => None,
        }
    }

    pub fn ok(&mut self) {
        if let Some(buf) = self.encoding(|| Reply::Simple("OK".into())) {
            buf.put_slice(b"+OK\r\n");
        }
    }

    pub fn simple(&mut self, text: &str) {
        if let Some(buf) = self.encoding(|| Reply::Simple(text.into())) {
            buf.put_u8(b'+');
            buf.put_slice(text.as_bytes());
            buf.put_slice(b"\r\n");
        }
    }

    /// An error reply; `text` must carry its prefix ("ERR ...", "WRONGTYPE ...").
    pub fn error(&mut self, text: &str) {
        // error lines must stay single-line
        let one_line = |byte: u8| {
            if byte == b'\r' || byte == b'\n' {
                b' '
            } else {
                byte
            }
        };
        let typed = || Reply::Error(text.replace(['\r', '\n'], " "));
        if let Some(buf) = self.encoding(typed) {
            buf.put_u8(b'-');
            for &byte in text.as_bytes() {
                buf.put_u8(one_line(byte));
            }
            buf.put_slice(b"\r\n");
        }
    }

    pub fn integer(&mut self, value: i64) {
        if let Some(buf) = self.encoding(|| Reply::Int(value)) {
            header(buf, b':', value);
        }
    }

    pub fn bulk(&mut self, data: &[u8]) {
        if let Some(buf) = self.encoding(|| Reply::Bulk(Bytes::copy_from_slice(data))) {
            header(buf, b'$', data.len() as i64);
            buf.put_slice(data);
            buf.put_slice(b"\r\n");
        }
    }

    pub fn bulk_str(&mut self, text: &str) {
        self.bulk(text.as_bytes());
    }

    pub fn bulk_integer(&mut self, value: i64) {
        let mut buffer = itoa::Buffer::new();
        self.bulk(buffer.format(value).as_bytes());
    }

    pub fn null(&mut self) {
        let proto = self.proto;
        if let Some(buf) = self.encoding(|| Reply::Nil) {
            match proto {
                Protocol::Resp2 => buf.put_slice(b"$-1\r\n"),
                Protocol::Resp3 => buf.put_slice(b"_\r\n"),
            }
        }
    }

    pub fn null_array(&mut self) {
        let proto = self.proto;
        if let Some(buf) = self.encoding(|| Reply::Nil) {
            match proto {
                Protocol::Resp2 => buf.put_slice(b"*-1\r\n"),
                Protocol::Resp3 => buf.put_slice(b"_\r\n"),
            }
        }
    }

    pub fn array(&mut self, len: usize) {
        if let Some(buf) = self.encoding_array(len) {
            header(buf, b'*', len as i64);
        }
    }

    /// A map of `len` pairs: `%` in RESP3, a flat array in RESP2.
    pub fn map(&mut self, len: usize) {
        let proto = self.proto;
        if let Some(buf) = self.encoding_collection(Collection::Map, len * 2) {
            match proto {
                Protocol::Resp2 => header(buf, b'*', (len * 2) as i64),
                Protocol::Resp3 => header(buf, b'%', len as i64),
            }
        }
    }

    pub fn set(&mut self, len: usize) {
        let proto = self.proto;
        if let Some(buf) = self.encoding_collection(Collection::Set, len) {
            match proto {
                Protocol::Resp2 => header(buf, b'*', len as i64),
                Protocol::Resp3 => header(buf, b'~', len as i64),
            }
        }
    }

    /// Out-of-band push (pub/sub messages): `>` in RESP3, an array in RESP2.
    pub fn push(&mut self, len: usize) {
        let proto = self.proto;
        if let Some(buf) = self.encoding_array(len) {
            match proto {
                Protocol::Resp2 => header(buf, b'*', len as i64),
                Protocol::Resp3 => header(buf, b'>', len as i64),
            }
        }
    }

    /// A double as Redis's addReplyDouble sends it (`%.17g`): `,` in RESP3, a bulk
    /// string in RESP2.
    pub fn double(&mut self, value: f64) {
        self.double_text(&format_g17(value));
    }

    /// A double already written as text.
    fn double_text(&mut self, text: &str) {
        self.resp3_line(b',', text, || Reply::Double(text.to_string()));
    }

    /// A RESP3 type sent as one line of text after its `kind` byte (a double, a big
    /// number); a bulk string of the text in RESP2.
    fn resp3_line(&mut self, kind: u8, text: &str, typed: impl FnOnce() -> Reply) {
        match self.proto {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                if let Some(buf) = self.encoding(typed) {
                    buf.put_u8(kind);
                    buf.put_slice(text.as_bytes());
                    buf.put_slice(b"\r\n");
                }
            }
        }
    }

    /// A boolean: `#t` / `#f` in RESP3, `:1` / `:0` in RESP2.
    pub fn boolean(&mut self, value: bool) {
        match self.proto {
            Protocol::Resp2 => self.integer(i64::from(value)),
            Protocol::Resp3 => {
                if let Some(buf) = self.encoding(|| Reply::Bool(value)) {
                    buf.put_slice(if value { b"#t\r\n" } else { b"#f\r\n" });
                }
            }
        }
    }

    /// A big number's digits: `(` in RESP3, a bulk string in RESP2.
    pub fn big_number(&mut self, digits: &str) {
        self.resp3_line(b'(', digits, || Reply::BigNumber(digits.to_string()));
    }

    /// Verbatim text (INFO, CLIENT INFO): `=` in RESP3, bulk in RESP2.
    pub fn verbatim(&mut self, text: &str) {
        self.verbatim_bytes("txt", text.as_bytes());
    }

    /// Verbatim text of a three-letter `format` (`txt`, `mkd`).
    fn verbatim_bytes(&mut self, format: &str, text: &[u8]) {
        match self.proto {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                let typed = || Reply::Verbatim {
                    format: format.to_string(),
                    text: Bytes::copy_from_slice(text),
                };
                if let Some(buf) = self.encoding(typed) {
                    header(buf, b'=', (text.len() + format.len() + 1) as i64);
                    buf.put_slice(format.as_bytes());
                    buf.put_u8(b':');
                    buf.put_slice(text);
                    buf.put_slice(b"\r\n");
                }
            }
        }
    }
}

fn header(buf: &mut BytesMut, kind: u8, value: i64) {
    let mut buffer = itoa::Buffer::new();
    buf.put_u8(kind);
    buf.put_slice(buffer.format(value).as_bytes());
    buf.put_slice(b"\r\n");
}

/// Formats a double the way Redis replies with it (`%.17g` shortest round-trip,
/// "inf"/"-inf", integers without a fraction).
pub fn format_double(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if value.is_nan() {
        return "nan".into();
    }
    if value == value.trunc() && value.abs() < 1e17 {
        return format!("{}", value as i64);
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format(value);
    text.strip_suffix(".0").unwrap_or(text).to_string()
}

/// A double as C's `printf("%.17g")` writes it (17 significant digits, trailing zeros
/// dropped, an exponent below 1e-4 and from 1e17 on), `inf`/`-inf`, `nan`/`-nan` (as
/// glibc): how Redis 7.0 replies with a sorted set's scores and passes a script's
/// numbers to commands.
pub fn format_g17(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    if value.is_nan() {
        return if value.is_sign_negative() {
            "-nan"
        } else {
            "nan"
        }
        .into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // a whole number below 1e17 prints as its digits (a double that large is exactly
    // that integer), as most scores are: no 17-digit rounding through the formatter
    if value.fract() == 0.0 && value.abs() < 1e17 {
        return (value as i64).to_string();
    }
    let scientific = format!("{:.16e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value < 0.0 { "-" } else { "" };
    if !(-4..17).contains(&exponent) {
        let digits = digits.trim_end_matches('0');
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{first}{point}{rest}e{exponent_sign}{:02}",
            exponent.abs()
        )
    } else if exponent >= 0 {
        let (whole, fraction) = digits.split_at(exponent as usize + 1);
        let fraction = fraction.trim_end_matches('0');
        let point = if fraction.is_empty() { "" } else { "." };
        format!("{sign}{whole}{point}{fraction}")
    } else {
        let zeros = "0".repeat((-exponent - 1) as usize);
        format!("{sign}0.{zeros}{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resp2_and_resp3_shapes() {
        let mut two = Out::new(Protocol::Resp2);
        two.null();
        two.map(1);
        two.double(1.5);
        two.push(3);
        assert_eq!(two.encoded(), b"$-1\r\n*2\r\n$3\r\n1.5\r\n*3\r\n");
        let mut three = Out::new(Protocol::Resp3);
        three.null();
        three.map(1);
        three.double(1.5);
        three.push(3);
        assert_eq!(three.encoded(), b"_\r\n%1\r\n,1.5\r\n>3\r\n");
    }

    /// C's own `printf("%.17g")` (glibc's, as redis-server links it).
    fn printf_g17(value: f64) -> String {
        let mut buf = [0u8; 64];
        // SAFETY: the buffer's length is passed; the format takes exactly one double
        let written =
            unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.17g".as_ptr(), value) };
        String::from_utf8_lossy(&buf[..written as usize]).into_owned()
    }

    proptest::proptest! {
        /// Any double, whole numbers near the integer fast path's bounds most of all.
        #[test]
        fn scores_format_as_printf_does(
            bits in proptest::prelude::any::<u64>(),
            whole in -200_000_000_000_000_000i64..200_000_000_000_000_000,
        ) {
            for value in [f64::from_bits(bits), whole as f64, (whole % 100_000) as f64] {
                proptest::prop_assert_eq!(format_g17(value), printf_g17(value), "{:e}", value);
            }
        }
    }

    #[test]
    fn scores_format_like_printf_g17() {
        for (value, text) in [
            (1.1, "1.1000000000000001"),
            (0.1, "0.10000000000000001"),
            (1e20, "1e+20"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e-5, "1.0000000000000001e-05"),
            (1.5e-7, "1.4999999999999999e-07"),
            (3.0, "3"),
            (100.0, "100"),
            (-2.5, "-2.5"),
            (0.0001, "0.0001"),
            (1e16, "10000000000000000"),
            (-1e16, "-10000000000000000"),
            (99999999999999984.0, "99999999999999984"),
            (9007199254740993.0, "9007199254740992"),
            (-42.0, "-42"),
            (1e17, "1e+17"),
            (-1e17, "-1e+17"),
            (-0.0, "-0"),
            (f64::NEG_INFINITY, "-inf"),
            (5e-324, "4.9406564584124654e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
        ] {
            assert_eq!(format_g17(value), text, "{value:e}");
        }
    }

    #[test]
    fn doubles_format_like_redis() {
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(5.0e3), "5000");
    }

    fn any_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(Reply::Simple),
            "ERR [a-z\r\n]{0,12}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Int),
            proptest::collection::vec(any::<u8>(), 0..24)
                .prop_map(|data| Reply::Bulk(Bytes::from(data))),
            Just(Reply::Nil),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
        })
    }

    proptest! {
        /// A captured reply is what a client decodes from the encoded one.
        #[test]
        fn capture_equals_encode_then_decode(replies in proptest::collection::vec(any_reply(), 1..4)) {
            let mut encoded = Out::new(Protocol::Resp2);
            let mut captured = Out::capture();
            for reply in &replies {
                encoded.reply(reply);
                captured.reply(reply);
            }
            let mut decoded = Vec::new();
            let mut rest = encoded.encoded();
            while !rest.is_empty() {
                let Ok(Decoded::Reply { reply, consumed }) = parse_reply(rest, &ReplyLimits::TRUSTED) else {
                    panic!("undecodable: {rest:?}");
                };
                decoded.push(reply);
                rest = &rest[consumed..];
            }
            prop_assert_eq!(captured.take_replies(), decoded);
        }
    }

    #[test]
    fn captures_nested_replies_and_resp2_shapes() {
        let mut out = Out::capture();
        out.map(1);
        out.bulk_str("field");
        out.double(1.5);
        out.array(0);
        out.set(2);
        out.integer(1);
        out.null_array();
        out.verbatim("txt");
        assert_eq!(
            out.take_replies(),
            vec![
                Reply::Array(vec![
                    Reply::Bulk(Bytes::from_static(b"field")),
                    Reply::Bulk(Bytes::from_static(b"1.5")),
                ]),
                Reply::Array(Vec::new()),
                Reply::Array(vec![Reply::Int(1), Reply::Nil]),
                Reply::Bulk(Bytes::from_static(b"txt")),
            ]
        );
    }

    #[test]
    fn held_replies_are_put_back_in_either_form() {
        for mut out in [Out::new(Protocol::Resp2), Out::capture()] {
            out.ok();
            let mark = out.mark();
            out.array(2);
            out.integer(7);
            out.bulk_str("x");
            let held = out.take_since(mark);
            out.error("ERR later");
            let undone = out.mark();
            out.integer(9);
            out.truncate(undone);
            out.put(held.clone());
            // and into the other kind of output
            let mut other = if out.is_capturing() {
                Out::new(Protocol::Resp2)
            } else {
                Out::capture()
            };
            other.put(held);
            let expected_held =
                Reply::Array(vec![Reply::Int(7), Reply::Bulk(Bytes::from_static(b"x"))]);
            if out.is_capturing() {
                assert_eq!(
                    out.take_replies(),
                    vec![
                        Reply::Simple("OK".into()),
                        Reply::Error("ERR later".into()),
                        expected_held.clone(),
                    ]
                );
                assert_eq!(other.encoded(), b"*2\r\n:7\r\n$1\r\nx\r\n");
            } else {
                assert_eq!(
                    out.encoded(),
                    b"+OK\r\n-ERR later\r\n*2\r\n:7\r\n$1\r\nx\r\n"
                );
                assert_eq!(other.take_replies(), vec![expected_held]);
            }
        }
    }

    #[test]
    fn discarded_output_keeps_nothing() {
        let mut out = Out::discard();
        out.array(1);
        out.bulk(b"x");
        assert!(out.is_empty());
        assert!(out.take_replies().is_empty());
    }

    #[test]
    fn errors_stay_on_one_line() {
        let mut out = Out::new(Protocol::Resp2);
        out.error("ERR a\r\nb");
        assert_eq!(out.encoded(), b"-ERR a  b\r\n");
        let mut captured = Out::capture();
        captured.error("ERR a\r\nb");
        assert_eq!(captured.into_reply(), Some(Reply::Error("ERR a  b".into())));
    }
}
