//! Region write versions ([`Version`]: the cross-region order of writes) and the
//! recently seen versions per key, glob pattern and slot, kept for a bounded
//! time: long enough to order concurrent writes and to refuse stale fills,
//! short enough to stay small. Forgetting is safe: an unknown version never
//! protects a copy, so the worst case is an extra invalidation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::glob::matches as glob_match;

/// Total order of writes across regions: HLC first, region id breaks ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// physical milliseconds << 16 | logical counter
    pub hlc: u64,
    pub region: u32,
}

const STRIPES: usize = 64;
/// Entries per stripe before pruning is forced; beyond it new versions of
/// local writes are dropped (remote tombstones always kept).
const STRIPE_SOFT_LIMIT: usize = 64 * 1024;
const PATTERN_LIMIT: usize = 4096;

type KeyMap = HashMap<Vec<u8>, (Version, Instant), foldhash::fast::RandomState>;

pub struct Versions {
    ttl: Duration,
    keys: Box<[Mutex<KeyMap>]>,
    patterns: Mutex<Vec<(Vec<u8>, Version, Instant)>>,
    slots: Mutex<HashMap<u16, (Version, Instant)>>,
}

impl Versions {
    pub fn new(ttl: Duration) -> Self {
        Versions {
            ttl,
            keys: (0..STRIPES)
                .map(|_| Mutex::new(KeyMap::default()))
                .collect(),
            patterns: Mutex::new(Vec::new()),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<KeyMap> {
        let slot = usize::from(meridian_topology::key_slot(key));
        &self.keys[slot % STRIPES]
    }

    /// Remembers `version` for `key` unless a newer one is known.
    pub fn record_key(&self, key: &[u8], version: Version) {
        let now = Instant::now();
        let mut map = self.stripe(key).lock();
        if map.len() >= STRIPE_SOFT_LIMIT {
            map.retain(|_, (_, expires)| *expires > now);
        }
        let expires = now + self.ttl;
        match map.get_mut(key) {
            Some((known, until)) => {
                if version >= *known {
                    *known = version;
                    *until = expires;
                }
            }
            None => {
                if map.len() < STRIPE_SOFT_LIMIT * 2 {
                    map.insert(key.to_vec(), (version, expires));
                }
            }
        }
    }

    pub fn record_pattern(&self, pattern: &[u8], version: Version) {
        let now = Instant::now();
        let mut patterns = self.patterns.lock();
        patterns.retain(|(_, _, expires)| *expires > now);
        if patterns.len() >= PATTERN_LIMIT {
            patterns.remove(0);
        }
        patterns.push((pattern.to_vec(), version, now + self.ttl));
    }

    pub fn record_slot(&self, slot: u16, version: Version) {
        let now = Instant::now();
        let mut slots = self.slots.lock();
        slots.retain(|_, (_, expires)| *expires > now);
        let entry = slots.entry(slot).or_insert((version, now + self.ttl));
        if version >= entry.0 {
            *entry = (version, now + self.ttl);
        }
    }

    /// Newest unexpired version known for `key` (own write, tombstone, pattern or slot).
    pub fn newest(&self, key: &[u8]) -> Option<Version> {
        let now = Instant::now();
        let mut newest = self
            .stripe(key)
            .lock()
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(version, _)| *version);
        let mut consider = |version: Version| {
            if newest.is_none_or(|known| version > known) {
                newest = Some(version);
            }
        };
        for (pattern, version, expires) in self.patterns.lock().iter() {
            if *expires > now && glob_match(pattern, key) {
                consider(*version);
            }
        }
        let slot = meridian_topology::key_slot(key);
        if let Some((version, expires)) = self.slots.lock().get(&slot)
            && *expires > now
        {
            consider(*version);
        }
        newest
    }

    /// Drops expired entries (called periodically).
    pub fn prune(&self) {
        let now = Instant::now();
        for stripe in self.keys.iter() {
            stripe.lock().retain(|_, (_, expires)| *expires > now);
        }
        self.patterns
            .lock()
            .retain(|(_, _, expires)| *expires > now);
        self.slots.lock().retain(|_, (_, expires)| *expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, region: 1 }
    }

    #[test]
    fn keeps_the_newest_version() {
        let versions = Versions::new(Duration::from_secs(10));
        versions.record_key(b"k", v(5));
        versions.record_key(b"k", v(3));
        assert_eq!(versions.newest(b"k"), Some(v(5)));
        versions.record_pattern(b"k*", v(7));
        assert_eq!(versions.newest(b"k"), Some(v(7)));
        assert_eq!(versions.newest(b"other"), None);
        versions.record_slot(meridian_topology::key_slot(b"other"), v(9));
        assert_eq!(versions.newest(b"other"), Some(v(9)));
    }

    #[test]
    fn forgets_after_the_ttl() {
        let versions = Versions::new(Duration::from_millis(0));
        versions.record_key(b"k", v(5));
        assert_eq!(versions.newest(b"k"), None);
        versions.prune();
    }
}
