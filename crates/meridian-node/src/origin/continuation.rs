//! Finishing origin continuations ([`OriginOp`]) outside the synchronous
//! dispatcher: a read-through miss fetches (single-flight) and fills the cache, a
//! write-through write goes to the origin first and then runs as a command.

use std::sync::Arc;

use bytes::Bytes;

use super::{Fetched, OriginOp};
use crate::commands::{ClientState, dispatch};
use crate::exec::{Caller, ExecContext};
use crate::http::local;
use crate::protocol::Out;
use crate::region::versions::Version;
use crate::state::Shared;
use crate::store::Access;

/// Finishes an origin continuation for `exec`'s caller, writing the command's reply
/// to `out`.
pub async fn complete(
    shared: &Shared,
    exec: ExecContext,
    client: &mut ClientState,
    out: &mut Out,
    op: OriginOp,
) {
    let Some(origin) = shared.origin.clone() else {
        out.error("ERR origin is not configured");
        return;
    };
    match op {
        OriginOp::Read { key } => match origin.read_through(&key, || fill_later(shared)).await {
            Ok(Fetched::Found(value)) => out.bulk(&value),
            Ok(Fetched::Missing) | Err(_) => out.null(),
        },
        OriginOp::Write { args } => {
            let key = args.get(1).cloned().unwrap_or_default();
            let value = match args.first() {
                Some(name) if name.eq_ignore_ascii_case(b"set") => {
                    Some(Bytes::from(args.get(2).cloned().unwrap_or_default()))
                }
                _ => None,
            };
            match origin.write(&key, value).await {
                Ok(()) => {
                    let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    let exec = exec.after_origin_write();
                    dispatch(shared, exec, client, out, &argv, Access::direct(&shared.db));
                }
                Err(error) => out.error(&format!(
                    "ERR origin write failed: {}",
                    error.replace(['\r', '\n'], " ")
                )),
            }
        }
    }
}

/// What the leader of a read-through flight fills the cache with once the origin
/// answered: the version is taken now, so a remote invalidation arriving while
/// the origin answers is newer and wins.
pub fn fill_later(shared: &Shared) -> impl FnOnce(&[u8], &Bytes) + Send + 'static {
    let owner: Option<Arc<Shared>> = shared.me.upgrade();
    let version = shared.regions.tick();
    let ttl_seconds = shared
        .origin
        .as_ref()
        .map_or(0, |origin| origin.config.default_ttl_seconds);
    move |key, value| {
        if let Some(shared) = owner {
            fill(&shared, key, value, ttl_seconds, version);
        }
    }
}

/// Stores a fetched value unless a client wrote the key meanwhile (NX): the
/// client's write is newer than what the origin returned.
fn fill(shared: &Shared, key: &[u8], value: &Bytes, ttl_seconds: u64, version: Version) {
    let ttl = ttl_seconds.to_string();
    let mut args: Vec<&[u8]> = vec![b"SET", key, value, b"NX"];
    if ttl_seconds > 0 {
        args.extend_from_slice(&[b"EX", ttl.as_bytes()]);
    }
    // guarded: refused (STALE) when a newer invalidation or write is known;
    // fills are not streamed to peer regions (they only copy the origin)
    let stored = local::run_as(
        shared,
        ExecContext::new(Caller::OriginFill { version }),
        &args,
        false,
    );
    if let Some(local::Reply::Error(error)) = stored.0 {
        // a replica (READONLY) or a moved slot serves the value without keeping it
        tracing::debug!(key = %String::from_utf8_lossy(key), %error, "origin value not cached");
    }
}
