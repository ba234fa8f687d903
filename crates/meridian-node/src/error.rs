//! Errors of the node: command errors carry Redis's exact reply texts because
//! clients match on them.

use thiserror::Error;

use crate::protocol::ParseError;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR value is not a valid float")]
    NotFloat,
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR no such key")]
    NoSuchKey,
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// The ACL user may not run this command (its full name, `client|kill`).
    #[error("NOPERM this user has no permissions to run the '{0}' command")]
    NoPermCommand(String),
    #[error("NOPERM this user has no permissions to access one of the keys used as arguments")]
    NoPermKey,
    #[error("NOPERM this user has no permissions to access one of the channels used as arguments")]
    NoPermChannel,
    #[error("OOM command not allowed when used memory > 'maxmemory'.")]
    OutOfMemory,
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(String),
    /// MIGRATE / fan-out: the target failed or did not answer in time.
    #[error("IOERR error or timeout talking to target instance: {0}")]
    TargetIo(String),
    #[error("IOERR cannot resolve target instance {0}")]
    TargetUnresolved(String),
    #[error("IOERR connection to target instance closed")]
    TargetClosed,
    /// The target's reply broke the protocol or a bound; the connection is dropped.
    #[error("IOERR target instance sent an invalid reply: {0}")]
    TargetReply(ParseError),
    /// MERIDIAN.TOPOLOGY SET: see `commands::admin::MAX_EPOCH` for why.
    #[error("ERR invalid topology: epoch {epoch} is above the largest accepted epoch {max}")]
    EpochTooLarge { epoch: u64, max: u64 },
    #[error("ERR invalid topology: {0}")]
    TopologyTooLarge(String),
    /// A region-link event stamped further ahead of this node's clock than
    /// --max-clock-drift-ms allows; the link is dropped.
    #[error(
        "CLOCKDRIFT event from region '{region}' is {ahead_ms} ms ahead of this node's clock (limit {limit_ms} ms, --max-clock-drift-ms); link refused"
    )]
    ClockDrift {
        region: String,
        ahead_ms: u64,
        limit_ms: u64,
    },
    /// A write to a key a MIGRATE batch has in flight (or a redirect for it):
    /// cluster clients retry TRYAGAIN.
    #[error("TRYAGAIN Key is being migrated, retry later")]
    KeyInFlight,
    /// Write-behind: the queue holds its maximum of keys and this one is not queued
    /// (a write to a queued key coalesces and is accepted).
    #[error("ERR write-behind queue full ({pending} keys pending); retry later")]
    WriteBehindQueueFull { pending: usize },
    /// An origin fill of a key whose write-behind write the origin has not taken yet.
    #[error("ERR origin value older than a pending write-behind write")]
    StaleOriginFill,
    #[error("{0}")]
    Other(String),
}

impl CommandError {
    pub fn other(text: impl Into<String>) -> Self {
        CommandError::Other(text.into())
    }
}

pub type CmdResult = Result<(), CommandError>;

/// Why an ACL rule (ACL SETUSER, an ACL file line) was refused, worded like Redis's
/// ACLSetUserStringError: clients and tests match on these texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AclError {
    #[error("Unknown command or category name in ACL")]
    UnknownCommand,
    #[error("Syntax error")]
    Syntax,
    #[error(
        "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"
    )]
    KeyAfterAllKeys,
    #[error(
        "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels"
    )]
    ChannelAfterAllChannels,
    #[error("The password you are trying to remove from the user does not exist")]
    NoSuchPassword,
    #[error(
        "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters"
    )]
    BadHash,
}

/// Every bad line of an ACL file, in one message like Redis's ACL LOAD reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct AclFileError(pub String);

/// Startup and configuration errors of the binary.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid memory size '{0}': use bytes or a unit like 100mb, 1gb, 256Mi, 1Gi")]
    MemorySize(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a replica's link to its primary failed. Logged; [`SyncError::failure`] names
/// the failures counted in `meridian_repl_sync_failures_total{reason}`.
#[derive(Debug, Error)]
pub enum SyncError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("primary closed the connection")]
    Closed,
    #[error("primary sent an overlong line")]
    OverlongLine,
    #[error("{what} refused by primary: {line}")]
    Refused { what: &'static str, line: String },
    #[error("malformed reply to PSYNC: {0}")]
    BadPsyncReply(String),
    #[error("link replaced")]
    Replaced,
    #[error(
        "refused a full sync of history {replid} at offset {offset}: it would replace this \
         replica's {keys} keys (history {own_replid} at offset {own_offset}), which came from \
         this primary's address; the primary restarted without its data. Keeping the data; \
         retrying. A new primary named by a topology map (or REPLICAOF) may replace it"
    )]
    FullSyncRefused {
        replid: String,
        offset: u64,
        own_replid: String,
        own_offset: u64,
        keys: usize,
    },
    #[error("malformed snapshot header: {0}")]
    SnapshotHeader(String),
    #[error("snapshot of {len} bytes exceeds this replica's maxmemory of {limit} bytes")]
    SnapshotTooLarge { len: u64, limit: u64 },
    #[error(
        "snapshot truncated: the primary closed the connection after {received} of {len} bytes"
    )]
    SnapshotTruncated { received: u64, len: u64 },
    #[error("corrupt snapshot at byte {at}: {detail}")]
    SnapshotCorrupt { at: u64, detail: String },
    #[error("no data from the primary for {seconds} s during the {phase}")]
    Timeout { seconds: u64, phase: &'static str },
    #[error("bad stream from primary: {0}")]
    Stream(#[from] crate::protocol::ParseError),
    #[error("primary sent {len} bytes without completing a {what} (limit {limit})")]
    StreamTooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Failed syncs and streams a replica counts, by reason (metric label). The
/// discriminant indexes [`SyncFailure::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFailure {
    /// The snapshot broke its format (lengths, counts, record types, end marker).
    Corrupt,
    /// The primary closed the connection before the snapshot's declared length.
    Truncated,
    /// The declared snapshot exceeds this replica's maxmemory.
    TooLarge,
    /// The `$<len>` header was not a length.
    BadHeader,
    /// No data from the primary within the replication timeout.
    Timeout,
    /// The command stream after the sync broke the protocol or its limits.
    BadStream,
}

impl SyncFailure {
    pub const ALL: [SyncFailure; 6] = [
        SyncFailure::Corrupt,
        SyncFailure::Truncated,
        SyncFailure::TooLarge,
        SyncFailure::BadHeader,
        SyncFailure::Timeout,
        SyncFailure::BadStream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SyncFailure::Corrupt => "corrupt",
            SyncFailure::Truncated => "truncated",
            SyncFailure::TooLarge => "too_large",
            SyncFailure::BadHeader => "bad_header",
            SyncFailure::Timeout => "timeout",
            SyncFailure::BadStream => "bad_stream",
        }
    }
}

impl SyncError {
    /// The counted failure this error is, if any (a closed or replaced link is not).
    pub fn failure(&self) -> Option<SyncFailure> {
        match self {
            SyncError::SnapshotCorrupt { .. } => Some(SyncFailure::Corrupt),
            SyncError::SnapshotTruncated { .. } => Some(SyncFailure::Truncated),
            SyncError::SnapshotTooLarge { .. } => Some(SyncFailure::TooLarge),
            SyncError::SnapshotHeader(_) => Some(SyncFailure::BadHeader),
            SyncError::Timeout { .. } => Some(SyncFailure::Timeout),
            SyncError::Stream(_) | SyncError::StreamTooLarge { .. } => Some(SyncFailure::BadStream),
            _ => None,
        }
    }
}
