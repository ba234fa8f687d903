//! Runs commands as an internal client through the normal dispatcher, so the
//! HTTP API and origin fills share every rule of RESP commands: routing,
//! READONLY on replicas, OOM refusal, replication of writes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::commands::{ClientState, Pending, dispatch};
use crate::protocol::{Out, Protocol};
use crate::state::{ClientHandle, Shared};
use crate::store::Access;

/// A decoded RESP2 reply of the commands the API uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Reply>),
    /// Nothing yet: the command left origin work to finish.
    None,
}

/// Client id reserved for internal callers (real clients count up from 1).
const INTERNAL_CLIENT_ID: u64 = 0;

pub fn internal_client(shared: &Shared, readonly: bool) -> ClientState {
    let (events, _) = mpsc::unbounded_channel();
    let handle = Arc::new(ClientHandle {
        id: INTERNAL_CLIENT_ID,
        addr: "internal:http".to_string(),
        laddr: shared.bind.clone(),
        created: Instant::now(),
        name: Default::default(),
        events,
        pending_bytes: Default::default(),
        last_command: Default::default(),
        last_active: parking_lot::Mutex::new(Instant::now()),
        resp3: Default::default(),
        subscriptions: Default::default(),
        pattern_subscriptions: Default::default(),
        in_multi: Default::default(),
    });
    let mut client = ClientState::new(handle, true);
    // serve reads a replica holds, like a READONLY cluster client
    client.readonly = readonly;
    client
}

/// Runs one command; returns its reply and any continuation it left.
pub fn run(shared: &Shared, args: &[&[u8]], readonly: bool) -> (Reply, Option<Pending>) {
    let mut client = internal_client(shared, readonly);
    let mut out = Out::new(Protocol::Resp2);
    dispatch(
        shared,
        &mut client,
        &mut out,
        args,
        Access::Direct(&shared.db),
    );
    (parse(&out.buf), client.pending.take())
}

/// Decodes the reply written to an `Out`.
pub fn parse(buf: &[u8]) -> Reply {
    if buf.is_empty() {
        return Reply::None;
    }
    let mut position = 0;
    parse_at(buf, &mut position).unwrap_or_else(|| Reply::Error("ERR unreadable reply".into()))
}

fn line<'b>(buf: &'b [u8], position: &mut usize) -> Option<&'b [u8]> {
    let rest = buf.get(*position..)?;
    let end = memchr::memmem::find(rest, b"\r\n")?;
    *position += end + 2;
    rest.get(..end)
}

fn number(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn parse_at(buf: &[u8], position: &mut usize) -> Option<Reply> {
    let header = line(buf, position)?;
    let (&kind, rest) = header.split_first()?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Some(match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(number(rest)?),
        b'_' => Reply::Nil,
        b'$' => {
            let len = number(rest)?;
            if len < 0 {
                return Some(Reply::Nil);
            }
            let len = usize::try_from(len).ok()?;
            let data = buf.get(*position..position.checked_add(len)?)?;
            *position += len + 2;
            Reply::Bulk(Bytes::copy_from_slice(data))
        }
        b'*' => {
            let len = number(rest)?;
            if len < 0 {
                return Some(Reply::Nil);
            }
            let mut items = Vec::new();
            for _ in 0..len {
                items.push(parse_at(buf, position)?);
            }
            Reply::Array(items)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        assert_eq!(parse(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(parse(b"-ERR x\r\n"), Reply::Error("ERR x".into()));
        assert_eq!(parse(b":-5\r\n"), Reply::Int(-5));
        assert_eq!(parse(b"$-1\r\n"), Reply::Nil);
        assert_eq!(
            parse(b"$3\r\na\r\n\r\n"),
            Reply::Bulk(Bytes::from_static(b"a\r\n"))
        );
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n:1\r\n"),
            Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"a")), Reply::Int(1)])
        );
        assert_eq!(parse(b""), Reply::None);
        assert!(matches!(parse(b"$9\r\nab\r\n"), Reply::Error(_)));
    }
}
