//! Approximate LRU clock, as in Redis: each access stamps the entry with the
//! current clock, eviction samples entries and removes the idlest.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The clock's bits: an entry keeps its stamp in 31 bits (the 32nd is SIEVE's).
const MASK: u32 = 0x7FFF_FFFF;

/// Milliseconds since process start, wrapping every ~24 days; idle times are
/// computed with wrapping subtraction so the wrap is harmless.
pub fn clock() -> u32 {
    start().elapsed().as_millis() as u32 & MASK
}

/// Idle time in ms of an entry stamped at `stamp`.
pub fn idle(now: u32, stamp: u32) -> u32 {
    now.wrapping_sub(stamp) & MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_handles_wrap() {
        assert_eq!(idle(5, MASK - 4), 10);
        assert_eq!(idle(100, 40), 60);
    }
}
