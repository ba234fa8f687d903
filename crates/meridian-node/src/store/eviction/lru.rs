//! Approximate LRU clock, as in Redis: each access stamps the entry with the
//! current clock, eviction samples entries and removes the idlest.

use std::sync::OnceLock;

/// The kernel's coarse monotonic clock in milliseconds: read on every access, and
/// a tick (1 to 10 ms) is finer than what the stamps need (Redis's LRU clock
/// ticks once a second); it costs a fraction of a precise read (no TSC read).
pub fn coarse_ms() -> u64 {
    crate::store::clock_ms(libc::CLOCK_MONOTONIC_COARSE)
}

fn start() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    *START.get_or_init(coarse_ms)
}

/// The clock's bits: an entry keeps its stamp in 31 bits (the 32nd is SIEVE's).
const MASK: u32 = 0x7FFF_FFFF;

/// Milliseconds since process start, wrapping every ~24 days; idle times are
/// computed with wrapping subtraction so the wrap is harmless.
pub fn clock() -> u32 {
    coarse_ms().wrapping_sub(start()) as u32 & MASK
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
