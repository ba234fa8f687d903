//! Reply encoding straight into the connection's output buffer, choosing the
//! RESP2 or RESP3 form of each reply type (maps, nulls, doubles, pushes).

use bytes::{BufMut, BytesMut};

/// Protocol version negotiated with HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// Output buffer for one connection; replies of a pipelined batch accumulate
/// here and are written with a single flush.
pub struct Out {
    pub buf: BytesMut,
    pub proto: Protocol,
}

impl Out {
    pub fn new(proto: Protocol) -> Self {
        Out {
            buf: BytesMut::with_capacity(16 * 1024),
            proto,
        }
    }

    pub fn is_resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, text: &str) {
        self.buf.put_u8(b'+');
        self.buf.put_slice(text.as_bytes());
        self.buf.put_slice(b"\r\n");
    }

    /// An error reply; `text` must carry its prefix ("ERR ...", "WRONGTYPE ...").
    pub fn error(&mut self, text: &str) {
        self.buf.put_u8(b'-');
        // error lines must stay single-line
        for &byte in text.as_bytes() {
            self.buf.put_u8(if byte == b'\r' || byte == b'\n' {
                b' '
            } else {
                byte
            });
        }
        self.buf.put_slice(b"\r\n");
    }

    pub fn integer(&mut self, value: i64) {
        self.header(b':', value);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.header(b'$', data.len() as i64);
        self.buf.put_slice(data);
        self.buf.put_slice(b"\r\n");
    }

    pub fn bulk_str(&mut self, text: &str) {
        self.bulk(text.as_bytes());
    }

    pub fn bulk_integer(&mut self, value: i64) {
        let mut buffer = itoa::Buffer::new();
        self.bulk(buffer.format(value).as_bytes());
    }

    pub fn null(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    pub fn null_array(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, len: usize) {
        self.header(b'*', len as i64);
    }

    /// A map of `len` pairs: `%` in RESP3, a flat array in RESP2.
    pub fn map(&mut self, len: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', (len * 2) as i64),
            Protocol::Resp3 => self.header(b'%', len as i64),
        }
    }

    pub fn set(&mut self, len: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', len as i64),
            Protocol::Resp3 => self.header(b'~', len as i64),
        }
    }

    /// Out-of-band push (pub/sub messages): `>` in RESP3, an array in RESP2.
    pub fn push(&mut self, len: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', len as i64),
            Protocol::Resp3 => self.header(b'>', len as i64),
        }
    }

    /// A double: `,` in RESP3, a bulk string in RESP2.
    pub fn double(&mut self, value: f64) {
        let text = format_double(value);
        match self.proto {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.buf.put_u8(b',');
                self.buf.put_slice(text.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    /// Verbatim text (INFO, CLIENT INFO): `=` in RESP3, bulk in RESP2.
    pub fn verbatim(&mut self, text: &str) {
        match self.proto {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.header(b'=', (text.len() + 4) as i64);
                self.buf.put_slice(b"txt:");
                self.buf.put_slice(text.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    fn header(&mut self, kind: u8, value: i64) {
        let mut buffer = itoa::Buffer::new();
        self.buf.put_u8(kind);
        self.buf.put_slice(buffer.format(value).as_bytes());
        self.buf.put_slice(b"\r\n");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_shapes() {
        let mut two = Out::new(Protocol::Resp2);
        two.null();
        two.map(1);
        two.double(1.5);
        two.push(3);
        assert_eq!(&two.buf[..], b"$-1\r\n*2\r\n$3\r\n1.5\r\n*3\r\n");
        let mut three = Out::new(Protocol::Resp3);
        three.null();
        three.map(1);
        three.double(1.5);
        three.push(3);
        assert_eq!(&three.buf[..], b"_\r\n%1\r\n,1.5\r\n>3\r\n");
    }

    #[test]
    fn doubles_format_like_redis() {
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(5.0e3), "5000");
    }

    #[test]
    fn errors_stay_on_one_line() {
        let mut out = Out::new(Protocol::Resp2);
        out.error("ERR a\r\nb");
        assert_eq!(&out.buf[..], b"-ERR a  b\r\n");
    }
}
