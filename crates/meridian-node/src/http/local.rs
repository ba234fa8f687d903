//! Runs commands as an internal client through the normal dispatcher, so the
//! HTTP API and origin fills share every rule of RESP commands: routing,
//! READONLY on replicas, OOM refusal, replication of writes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::commands::{ClientState, Pending, dispatch};
use crate::protocol::{self, Decoded, Out, Protocol, ReplyLimits, parse_reply};
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

/// Decodes the reply written to an `Out` (with the node's one reply decoder).
pub fn parse(buf: &[u8]) -> Reply {
    if buf.is_empty() {
        return Reply::None;
    }
    match parse_reply(buf, &ReplyLimits::TRUSTED) {
        Ok(Decoded::Reply { reply, .. }) => reply.into(),
        _ => Reply::Error("ERR unreadable reply".into()),
    }
}

impl From<protocol::Reply> for Reply {
    /// Recursive, but over a tree the decoder bounded in depth.
    fn from(reply: protocol::Reply) -> Reply {
        match reply {
            protocol::Reply::Simple(text) => Reply::Simple(text),
            protocol::Reply::Error(text) => Reply::Error(text),
            protocol::Reply::Int(value) => Reply::Int(value),
            protocol::Reply::Bulk(data) => Reply::Bulk(data),
            protocol::Reply::Nil => Reply::Nil,
            protocol::Reply::Array(items) => {
                Reply::Array(items.into_iter().map(Reply::from).collect())
            }
        }
    }
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
