//! RESP wire protocol: a sans-IO request parser, reply encoder and reply decoder.

pub mod encode;
pub mod frame;
pub mod reply;

pub use encode::{Mark, Out, Protocol, Written};
pub use frame::{Limits, ParseError, Parsed, Partial, parse_command, parse_command_resuming};
pub use reply::{Collection, Decoded, Reply, ReplyLimits, ReplyTree, parse_reply};
