//! Feeds arbitrary bytes to the RESP request parser, whole and in two pieces,
//! checking it never panics, never reads past the input and agrees with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_node::protocol::frame::{Limits, Parsed, parse_command, unescape_inline};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bulk_len: 4096,
        max_multibulk_len: 1024,
        max_query_buffer: 1 << 20,
        unauthenticated: data.first() == Some(&b'u'),
    };
    let mut rest = data;
    while !rest.is_empty() {
        match parse_command(rest, &limits) {
            Ok(Parsed::Command {
                args,
                consumed,
                inline,
            }) => {
                assert!(consumed > 0 && consumed <= rest.len());
                for range in &args {
                    assert!(range.start <= range.end && range.end <= consumed);
                    if inline {
                        let _ = unescape_inline(&rest[range.clone()]);
                    }
                }
                // a prefix of a complete command must never parse as a different command
                if consumed > 1 {
                    if let Ok(Parsed::Command {
                        consumed: shorter, ..
                    }) = parse_command(&rest[..consumed - 1], &limits)
                    {
                        assert!(shorter < consumed);
                    }
                }
                rest = &rest[consumed..];
            }
            Ok(Parsed::Incomplete { min_len }) => {
                assert!(min_len > rest.len());
                break;
            }
            Err(_) => break,
        }
    }
});
