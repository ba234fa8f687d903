//! The execution context: who runs a command, passed explicitly to the dispatcher
//! (and from it to the store), instead of flags set around a call on the thread.
//!
//! A command behaves differently by caller: a replica applying its primary's stream
//! still sees keys its own clock calls expired, an event from a peer region is
//! refused when a newer version of its key is known, an origin fill is not sent
//! to the origin again, and the client whose write invalidates its own tracked
//! keys gets the invalidation right after the reply (or none, with NOLOOP). All of
//! that is read from the one [`ExecContext`] value a command runs with.

use crate::region::versions::Version;
use crate::store::Holder;

/// A connection's client id (`CLIENT ID`); internal callers have none.
pub type ClientId = u64;

/// Who runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A RESP client connection.
    Client { id: ClientId },
    /// The HTTP API (and the origin continuations it finishes).
    Http,
    /// A replica's link applying its primary's stream.
    PrimaryStream,
    /// An event from a peer region: applied unless a newer version of one of its
    /// keys is known.
    RegionLink { guard: RegionGuard },
    /// A copy of an origin value: stored unless a newer write or invalidation is
    /// known; only copies the origin, so no version is recorded and nothing is
    /// streamed to peer regions.
    OriginFill { version: Version },
    /// INVALIDATE applying its pattern to this node's keys: the peers get one
    /// pattern event instead of one event per key. `requested_by` is the client
    /// that sent INVALIDATE, if any (its own tracked keys are invalidated as its own
    /// writes are).
    Invalidation { requested_by: Option<ClientId> },
    /// Internal reads the node makes for itself (keys of a pattern or slot).
    Internal,
}

/// A region version check a write must pass before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionGuard {
    pub version: Version,
    /// Record the write's version for its keys once admitted (a key event; the
    /// deletions of a pattern or slot event recorded theirs for the whole range).
    pub record: bool,
}

/// Everything about the caller that changes how a command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecContext {
    pub caller: Caller,
    /// Write-through: the origin already took this write (the continuation runs the
    /// command itself), so it is not intercepted again.
    pub origin_written: bool,
}

impl ExecContext {
    pub const fn new(caller: Caller) -> Self {
        ExecContext {
            caller,
            origin_written: false,
        }
    }

    pub const fn client(id: ClientId) -> Self {
        Self::new(Caller::Client { id })
    }

    /// The same caller finishing a write-through after the origin accepted it.
    pub const fn after_origin_write(self) -> Self {
        ExecContext {
            origin_written: true,
            ..self
        }
    }

    /// Whether the origin (read-through / write-through) sees this command.
    pub fn uses_origin(&self) -> bool {
        matches!(self.caller, Caller::Client { .. } | Caller::Http) && !self.origin_written
    }

    /// Whether a successful write is versioned and streamed to peer regions.
    pub fn streams_to_regions(&self) -> bool {
        // a replica's stream, remote events, origin copies and INVALIDATE's own
        // deletions are not new writes of this region
        matches!(
            self.caller,
            Caller::Client { .. } | Caller::Http | Caller::Internal
        )
    }

    /// The version check a write of this caller must pass, if any.
    pub fn region_guard(&self) -> Option<RegionGuard> {
        match self.caller {
            Caller::RegionLink { guard } => Some(guard),
            Caller::OriginFill { version } => Some(RegionGuard {
                version,
                record: false,
            }),
            _ => None,
        }
    }

    /// The client whose own writes these are, for CLIENT TRACKING (NOLOOP, and its
    /// own invalidations written right after its reply).
    pub fn writing_client(&self) -> Option<ClientId> {
        match self.caller {
            Caller::Client { id } => Some(id),
            Caller::Invalidation { requested_by } => requested_by,
            _ => None,
        }
    }

    /// What the store is told about the caller for the shard locks it takes.
    pub fn holder(&self) -> Holder {
        Holder {
            writer: self.writing_client(),
            primary_stream: self.caller == Caller::PrimaryStream,
        }
    }
}
