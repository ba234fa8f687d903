//! Errors of the node: command errors carry Redis's exact reply texts because
//! clients match on them.

use thiserror::Error;

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
