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
    #[error("{0}")]
    Other(String),
}

impl CommandError {
    pub fn other(text: impl Into<String>) -> Self {
        CommandError::Other(text.into())
    }
}

pub type CmdResult = Result<(), CommandError>;

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
