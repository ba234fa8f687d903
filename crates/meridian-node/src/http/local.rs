//! Runs commands as an internal client through the normal dispatcher, so the
//! HTTP API and origin fills share every rule of RESP commands: routing,
//! READONLY on replicas, OOM refusal, replication of writes. The reply comes back
//! typed: the dispatcher writes it into a capturing `Out`.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::client::ClientHandle;
use crate::commands::{ClientState, Pending, dispatch};
use crate::exec::{Caller, ExecContext};
use crate::protocol::Out;
use crate::state::Shared;
use crate::store::Access;

/// The reply internal callers read: the node's one typed reply, captured as the
/// command writes it (never encoded and decoded again).
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
    let mut out = Out::capture();
    dispatch(
        shared,
        exec,
        &mut client,
        &mut out,
        args,
        Access::direct(&shared.db),
    );
    let pending = client.pending.take();
    (out.into_reply(), pending)
}
