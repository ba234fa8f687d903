//! RESP wire protocol: a sans-IO request parser, reply encoder and reply decoder.

pub mod encode;
pub mod frame;
pub mod reply;

pub use encode::{Out, Protocol};
pub use frame::{Limits, ParseError, Parsed, parse_command};
pub use reply::{Decoded, Reply, ReplyLimits, parse_reply};
