//! RESP wire protocol: a sans-IO request parser and reply encoder.

pub mod encode;
pub mod frame;

pub use encode::{Out, Protocol};
pub use frame::{Limits, ParseError, Parsed, parse_command};
