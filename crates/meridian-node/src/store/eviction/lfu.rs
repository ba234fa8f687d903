//! Redis's LFU: an 8-bit logarithmic access counter that halves its growth
//! probability as it climbs and decays by one per idle minute.

use super::Rng;

/// Counter given to new keys so they are not evicted before a second access.
pub const INIT: u32 = 5;
const LOG_FACTOR: f64 = 10.0;
/// Minutes per decrement (lfu-decay-time).
const DECAY_MINUTES: u32 = 1;

/// Minutes kept in the state: 22 bits, so the state fits an entry's 31-bit stamp.
const MINUTES: u32 = 0x3F_FFFF;

fn minutes(clock_ms: u32) -> u32 {
    (clock_ms / 60_000) & MINUTES
}

/// Packs a fresh LFU state at `clock_ms`.
pub fn fresh(clock_ms: u32) -> u32 {
    minutes(clock_ms) << 8 | INIT
}

/// Counter after applying the decay for the idle minutes.
pub fn decayed(state: u32, clock_ms: u32) -> u32 {
    let counter = state & 0xFF;
    let last = state >> 8;
    let now = minutes(clock_ms);
    let elapsed = if now >= last {
        now - last
    } else {
        MINUTES - last + now
    };
    counter.saturating_sub(elapsed / DECAY_MINUTES)
}

/// State after one access.
pub fn touch(state: u32, clock_ms: u32, rng: &mut Rng) -> u32 {
    let mut counter = decayed(state, clock_ms);
    if counter < 255 {
        let base = counter.saturating_sub(INIT) as f64;
        if rng.unit() < 1.0 / (base * LOG_FACTOR + 1.0) {
            counter += 1;
        }
    }
    minutes(clock_ms) << 8 | counter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_grows_logarithmically_and_decays() {
        let mut rng = Rng::new(7);
        let mut state = fresh(0);
        for _ in 0..1000 {
            state = touch(state, 0, &mut rng);
        }
        let hot = decayed(state, 0);
        assert!(hot > INIT && hot < 60, "counter {hot}");
        assert_eq!(decayed(state, 3 * 60_000), hot - 3);
    }
}
