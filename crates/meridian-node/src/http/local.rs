//! Runs commands as an internal client through the normal dispatcher, so the
//! HTTP API and origin fills share every rule of RESP commands: routing,
//! READONLY on replicas, OOM refusal, replication of writes.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::client::ClientHandle;
use crate::commands::{ClientState, Pending, dispatch};
use crate::exec::{Caller, ExecContext};
use crate::protocol::{Decoded, Out, Protocol, ReplyLimits, parse_reply};
use crate::state::Shared;
use crate::store::Access;

/// The reply type internal callers read: the node's one reply decoder's.
pub use crate::protocol::Reply;

/// Client id reserved for internal callers (real clients count up from 1).
const INTERNAL_CLIENT_ID: u64 = 0;

pub fn internal_client(shared: &Shared, readonly: bool) -> ClientState {
    let (events, _) = mpsc::unbounded_channel();
    let handle = Arc::new(ClientHandle::new(
        INTERNAL_CLIENT_ID,
        "internal:http".to_string(),
        shared.bind.clone(),
        events,
    ));
    let mut client = ClientState::new(handle, crate::acl::Login::internal());
    // serve reads a replica holds, like a READONLY cluster client
    client.readonly = readonly;
    client
}

/// Runs one command for the HTTP API; returns its reply (`None`: nothing yet, the
/// command left a continuation) and any continuation it left.
pub fn run(shared: &Shared, args: &[&[u8]], readonly: bool) -> (Option<Reply>, Option<Pending>) {
    run_as(shared, ExecContext::new(Caller::Http), args, readonly)
}

/// Runs one command for an internal caller described by `exec`, like [`run`].
pub fn run_as(
    shared: &Shared,
    exec: ExecContext,
    args: &[&[u8]],
    readonly: bool,
) -> (Option<Reply>, Option<Pending>) {
    let mut client = internal_client(shared, readonly);
    let mut out = Out::new(Protocol::Resp2);
    dispatch(
        shared,
        exec,
        &mut client,
        &mut out,
        args,
        Access::direct(&shared.db),
    );
    (parse(&out.buf), client.pending.take())
}

/// Decodes the reply written to an `Out` (with the node's one reply decoder); `None`
/// when nothing was written.
pub fn parse(buf: &[u8]) -> Option<Reply> {
    if buf.is_empty() {
        return None;
    }
    Some(match parse_reply(buf, &ReplyLimits::TRUSTED) {
        Ok(Decoded::Reply { reply, .. }) => reply,
        _ => Reply::Error("ERR unreadable reply".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn parses_replies() {
        assert_eq!(parse(b"+OK\r\n"), Some(Reply::Simple("OK".into())));
        assert_eq!(parse(b"-ERR x\r\n"), Some(Reply::Error("ERR x".into())));
        assert_eq!(parse(b":-5\r\n"), Some(Reply::Int(-5)));
        assert_eq!(parse(b"$-1\r\n"), Some(Reply::Nil));
        assert_eq!(
            parse(b"$3\r\na\r\n\r\n"),
            Some(Reply::Bulk(Bytes::from_static(b"a\r\n")))
        );
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n:1\r\n"),
            Some(Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"a")),
                Reply::Int(1)
            ]))
        );
        assert_eq!(parse(b""), None);
        assert!(matches!(parse(b"$9\r\nab\r\n"), Some(Reply::Error(_))));
    }
}
