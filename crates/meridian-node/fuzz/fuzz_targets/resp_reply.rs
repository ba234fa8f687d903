//! Feeds arbitrary bytes to the RESP reply decoder (what MIGRATE targets and
//! region-link peers send), checking it never panics, never reads past the
//! input, respects its limits and agrees with itself on any split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_node::protocol::{Decoded, ReplyLimits, parse_reply};

const LIMITS: ReplyLimits = ReplyLimits {
    max_len: 64 * 1024,
    max_bulk_len: 4096,
    max_elements: 1024,
    max_depth: 8,
};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match parse_reply(rest, &LIMITS) {
            Ok(Decoded::Reply { consumed, .. }) => {
                assert!(consumed > 0 && consumed <= rest.len());
                // every prefix of a whole reply is incomplete, never another reply
                for cut in [0, consumed / 2, consumed - 1] {
                    assert!(matches!(
                        parse_reply(&rest[..cut], &LIMITS),
                        Ok(Decoded::Incomplete { min_len }) if min_len > cut
                    ));
                }
                rest = &rest[consumed..];
            }
            Ok(Decoded::Incomplete { min_len }) => {
                assert!(min_len > rest.len() && min_len <= LIMITS.max_len);
                break;
            }
            Err(_) => break,
        }
    }
});
