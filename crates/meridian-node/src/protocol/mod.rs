//! RESP wire protocol: a sans-IO request parser, reply encoder and reply decoder.

pub mod encode;
pub mod frame;
pub mod reply;

pub use encode::{Mark, Out, Protocol, Written};
pub use frame::{Limits, ParseError, Parsed, Partial, parse_command, parse_command_resuming};
pub use reply::{Collection, Decoded, Reply, ReplyLimits, ReplyTree, parse_reply};

/// The Redis version the node answers as (HELLO, INFO, a script's `redis.REDIS_VERSION`):
/// the release whose commands and replies it follows.
pub const REDIS_COMPAT_VERSION: &str = "7.2.4";
