use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::TopologyError;

/// Number of hash slots in a cluster, as in Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// `CRC16_TABLES[k][b]`: the CRC of byte `b` followed by `k` zero bytes, so eight
/// bytes fold into the CRC with eight independent lookups (slicing-by-8) instead
/// of eight dependent ones: every command computes its key's slot.
static CRC16_TABLES: [[u16; 256]; 8] = build_crc16_tables();

const fn build_crc16_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let previous = tables[k - 1][i];
            tables[k][i] = (previous << 8) ^ tables[0][(previous >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

/// CRC16-CCITT (XMODEM variant: polynomial 0x1021, initial value 0), the
/// checksum Redis Cluster uses for key slots.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut chunks = data.chunks_exact(8);
    let mut crc = 0u16;
    for chunk in &mut chunks {
        let [high, low] = crc.to_be_bytes();
        crc = t[7][usize::from(chunk[0] ^ high)]
            ^ t[6][usize::from(chunk[1] ^ low)]
            ^ t[5][usize::from(chunk[2])]
            ^ t[4][usize::from(chunk[3])]
            ^ t[3][usize::from(chunk[4])]
            ^ t[2][usize::from(chunk[5])]
            ^ t[1][usize::from(chunk[6])]
            ^ t[0][usize::from(chunk[7])];
    }
    chunks.remainder().iter().fold(crc, |crc, &byte| {
        (crc << 8) ^ t[0][usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// Hash slot of a key, exactly like Redis: when the key contains `{` followed
/// later by `}` with at least one byte between them, only the bytes between
/// the first `{` and the first `}` after it are hashed.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) & (SLOT_COUNT - 1)
}

fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// An inclusive range of slots, `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
}

impl SlotRange {
    /// A range covering `start..=end`; errors when reversed or past the last slot.
    pub fn new(start: u16, end: u16) -> Result<Self, TopologyError> {
        let range = SlotRange { start, end };
        range.check()?;
        Ok(range)
    }

    /// A range holding one slot.
    pub fn single(slot: u16) -> Self {
        SlotRange {
            start: slot,
            end: slot,
        }
    }

    /// Checks the range is ordered and inside `0..SLOT_COUNT`.
    pub fn check(&self) -> Result<(), TopologyError> {
        if self.end >= SLOT_COUNT {
            return Err(TopologyError::SlotOutOfRange(u32::from(self.end)));
        }
        if self.start > self.end {
            return Err(TopologyError::ReversedRange {
                start: self.start,
                end: self.end,
            });
        }
        Ok(())
    }

    pub fn contains(&self, slot: u16) -> bool {
        self.start <= slot && slot <= self.end
    }

    /// Number of slots in the range (0 if reversed).
    pub fn len(&self) -> u32 {
        if self.start > self.end {
            0
        } else {
            u32::from(self.end - self.start) + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> std::ops::RangeInclusive<u16> {
        self.start..=self.end
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for SlotRange {
    type Err = TopologyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse_slot = |part: &str| -> Result<u16, TopologyError> {
            let value: u32 = part
                .trim()
                .parse()
                .map_err(|_| TopologyError::RangeSyntax(text.to_string()))?;
            if value >= u32::from(SLOT_COUNT) {
                return Err(TopologyError::SlotOutOfRange(value));
            }
            Ok(value as u16)
        };
        match text.split_once('-') {
            Some((start, end)) => SlotRange::new(parse_slot(start)?, parse_slot(end)?),
            None => Ok(SlotRange::single(parse_slot(text)?)),
        }
    }
}

const WORDS: usize = SLOT_COUNT as usize / 64;

/// A set of slots, stored as a 16384-bit bitmap (2 KiB).
///
/// Serialises as a list of contiguous ranges, e.g. `[{"start":0,"end":5460}]`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SlotSet {
    bits: Box<[u64; WORDS]>,
    len: u16,
}

impl Default for SlotSet {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotSet {
    pub fn new() -> Self {
        SlotSet {
            bits: Box::new([0u64; WORDS]),
            len: 0,
        }
    }

    /// Every slot `0..=16383`.
    pub fn full() -> Self {
        let mut set = Self::new();
        set.insert_range(SlotRange {
            start: 0,
            end: SLOT_COUNT - 1,
        });
        set
    }

    pub fn from_ranges<'a>(ranges: impl IntoIterator<Item = &'a SlotRange>) -> Self {
        let mut set = Self::new();
        for range in ranges {
            set.insert_range(*range);
        }
        set
    }

    pub fn contains(&self, slot: u16) -> bool {
        slot < SLOT_COUNT && self.bits[usize::from(slot / 64)] & (1u64 << (slot % 64)) != 0
    }

    /// Adds a slot; returns true if it was not present. Slots past 16383 are ignored.
    pub fn insert(&mut self, slot: u16) -> bool {
        if slot >= SLOT_COUNT || self.contains(slot) {
            return false;
        }
        self.bits[usize::from(slot / 64)] |= 1u64 << (slot % 64);
        self.len += 1;
        true
    }

    /// Removes a slot; returns true if it was present.
    pub fn remove(&mut self, slot: u16) -> bool {
        if !self.contains(slot) {
            return false;
        }
        self.bits[usize::from(slot / 64)] &= !(1u64 << (slot % 64));
        self.len -= 1;
        true
    }

    /// Adds every slot of the range (clipped to the slot space).
    pub fn insert_range(&mut self, range: SlotRange) {
        for slot in range.start..=range.end.min(SLOT_COUNT - 1) {
            self.insert(slot);
        }
    }

    /// Removes every slot of the range.
    pub fn remove_range(&mut self, range: SlotRange) {
        for slot in range.start..=range.end.min(SLOT_COUNT - 1) {
            self.remove(slot);
        }
    }

    /// Number of slots in the set.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots in ascending order. Skips empty words, so a set of few slots is cheap to
    /// walk (the operator walks every shard's set of a 1000-shard map per resharding step).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.bits.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some((index * 64) as u16 + bit as u16)
            })
        })
    }

    /// The first slot at or after `from` that is in the set (`present`) or not in it.
    fn find(&self, from: u32, present: bool) -> Option<u32> {
        let mut index = (from / 64) as usize;
        let mut mask = u64::MAX.checked_shl(from % 64).unwrap_or(0);
        while index < WORDS {
            let word = if present {
                self.bits[index]
            } else {
                !self.bits[index]
            } & mask;
            if word != 0 {
                return Some(index as u32 * 64 + word.trailing_zeros());
            }
            index += 1;
            mask = u64::MAX;
        }
        None
    }

    /// Maximal contiguous ranges in ascending order.
    pub fn ranges(&self) -> SlotRanges<'_> {
        SlotRanges { set: self, next: 0 }
    }

    pub fn union(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        for slot in other.iter() {
            out.insert(slot);
        }
        out
    }

    pub fn intersection(&self, other: &SlotSet) -> SlotSet {
        let mut out = SlotSet::new();
        for slot in self.iter().filter(|&slot| other.contains(slot)) {
            out.insert(slot);
        }
        out
    }

    pub fn difference(&self, other: &SlotSet) -> SlotSet {
        let mut out = SlotSet::new();
        for slot in self.iter().filter(|&slot| !other.contains(slot)) {
            out.insert(slot);
        }
        out
    }
}

/// Iterator over the maximal contiguous ranges of a [`SlotSet`].
pub struct SlotRanges<'a> {
    set: &'a SlotSet,
    next: u32,
}

impl Iterator for SlotRanges<'_> {
    type Item = SlotRange;

    fn next(&mut self) -> Option<SlotRange> {
        let limit = u32::from(SLOT_COUNT);
        if self.next >= limit {
            return None;
        }
        // word by word: a shard's few ranges cost 256 word reads, not 16384 bit tests
        let start = self.set.find(self.next, true)?;
        self.next = self.set.find(start, false).unwrap_or(limit);
        Some(SlotRange {
            start: start as u16,
            end: (self.next - 1) as u16,
        })
    }
}

impl fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.ranges().map(|range| range.to_string()))
            .finish()
    }
}

impl fmt::Display for SlotSet {
    /// Space separated ranges, like `CLUSTER NODES`: "0-5460 6000".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for range in self.ranges() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            if range.start == range.end {
                write!(f, "{}", range.start)?;
            } else {
                write!(f, "{range}")?;
            }
        }
        Ok(())
    }
}

impl FromIterator<SlotRange> for SlotSet {
    fn from_iter<I: IntoIterator<Item = SlotRange>>(iter: I) -> Self {
        let mut set = SlotSet::new();
        for range in iter {
            set.insert_range(range);
        }
        set
    }
}

impl Serialize for SlotSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.ranges())
    }
}

impl<'de> Deserialize<'de> for SlotSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ranges = Vec::<SlotRange>::deserialize(deserializer)?;
        for range in &ranges {
            range.check().map_err(serde::de::Error::custom)?;
        }
        Ok(ranges.into_iter().collect())
    }
}

/// Splits the 16384 slots into `shards` contiguous ranges the way
/// `redis-cli --cluster create` does (3 shards: 0-5460, 5461-10922, 10923-16383).
///
/// Returns an empty vector for 0 shards; more than 16384 shards are capped at 16384.
pub fn split_evenly(shards: u16) -> Vec<SlotRange> {
    let shards = shards.min(SLOT_COUNT);
    if shards == 0 {
        return Vec::new();
    }
    let per_shard = f64::from(SLOT_COUNT) / f64::from(shards);
    let mut ranges = Vec::with_capacity(usize::from(shards));
    let mut first: i64 = 0;
    let mut cursor = 0.0f64;
    for index in 0..shards {
        let mut last = (cursor + per_shard - 1.0).round() as i64;
        if last > i64::from(SLOT_COUNT - 1) || index == shards - 1 {
            last = i64::from(SLOT_COUNT - 1);
        }
        if last < first {
            last = first;
        }
        ranges.push(SlotRange {
            start: first as u16,
            end: last as u16,
        });
        first = last + 1;
        cursor += per_shard;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The CRC one bit at a time, straight from the polynomial.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &byte in data {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    proptest::proptest! {
        #[test]
        fn crc16_slicing_matches_the_bitwise_crc(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(crc16_xmodem(&data), crc16_bitwise(&data));
        }
    }

    #[test]
    fn crc16_matches_reference_vector() {
        // Reference from the Redis Cluster specification.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn key_slot_matches_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tag_edge_cases_follow_redis() {
        // Empty tag: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") & 16383);
        // Only the first '{' counts; the tag ends at the first '}' after it.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // No closing brace: whole key.
        assert_eq!(key_slot(b"foo{bar"), crc16_xmodem(b"foo{bar") & 16383);
        // '}' before '{' is not a tag.
        assert_eq!(key_slot(b"}bar{"), crc16_xmodem(b"}bar{") & 16383);
    }

    #[test]
    fn split_evenly_matches_redis_cli() {
        let three: Vec<String> = split_evenly(3).iter().map(ToString::to_string).collect();
        assert_eq!(three, ["0-5460", "5461-10922", "10923-16383"]);
        assert_eq!(
            split_evenly(1),
            vec![SlotRange {
                start: 0,
                end: 16383
            }]
        );
        assert!(split_evenly(0).is_empty());
        assert_eq!(split_evenly(16384).len(), 16384);
        assert_eq!(split_evenly(u16::MAX).len(), 16384);
    }

    #[test]
    fn slot_range_parses_and_displays() {
        assert_eq!(
            "0-5460".parse::<SlotRange>(),
            Ok(SlotRange {
                start: 0,
                end: 5460
            })
        );
        assert_eq!("7".parse::<SlotRange>(), Ok(SlotRange::single(7)));
        assert_eq!(
            SlotRange {
                start: 0,
                end: 5460
            }
            .to_string(),
            "0-5460"
        );
        assert!(matches!(
            "5-1".parse::<SlotRange>(),
            Err(TopologyError::ReversedRange { .. })
        ));
        assert_eq!(
            "16384".parse::<SlotRange>(),
            Err(TopologyError::SlotOutOfRange(16384))
        );
        assert!(matches!(
            "a-b".parse::<SlotRange>(),
            Err(TopologyError::RangeSyntax(_))
        ));
        assert!(matches!(
            "".parse::<SlotRange>(),
            Err(TopologyError::RangeSyntax(_))
        ));
        assert!(matches!(
            "-3".parse::<SlotRange>(),
            Err(TopologyError::RangeSyntax(_))
        ));
    }

    #[test]
    fn slot_range_serializes_as_object() {
        let json = serde_json::to_string(&SlotRange {
            start: 0,
            end: 5460,
        })
        .unwrap();
        assert_eq!(json, r#"{"start":0,"end":5460}"#);
    }

    #[test]
    fn slot_set_basics() {
        let mut set = SlotSet::new();
        assert!(set.is_empty());
        set.insert_range(SlotRange { start: 10, end: 20 });
        set.insert(22);
        set.insert(21);
        set.insert(100);
        assert_eq!(set.len(), 14);
        assert!(set.contains(15) && set.contains(100) && !set.contains(9) && !set.contains(16383));
        assert_eq!(
            set.ranges().collect::<Vec<_>>(),
            vec![SlotRange { start: 10, end: 22 }, SlotRange::single(100)]
        );
        assert_eq!(set.to_string(), "10-22 100");
        assert!(!set.insert(16384));
        set.remove_range(SlotRange { start: 0, end: 15 });
        assert_eq!(set.len(), 8);
        assert_eq!(SlotSet::full().len(), 16384);
        assert_eq!(SlotSet::full().ranges().count(), 1);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"[{"start":16,"end":22},{"start":100,"end":100}]"#);
        let back: SlotSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert!(serde_json::from_str::<SlotSet>(r#"[{"start":9,"end":3}]"#).is_err());
    }

    #[test]
    fn iter_and_ranges_cross_word_boundaries() {
        let ranges = [
            SlotRange { start: 0, end: 0 },
            SlotRange { start: 63, end: 64 },
            SlotRange {
                start: 127,
                end: 255,
            },
            SlotRange {
                start: 16320,
                end: 16383,
            },
        ];
        let set = SlotSet::from_ranges(&ranges);
        assert_eq!(set.ranges().collect::<Vec<_>>(), ranges);
        let slots: Vec<u16> = ranges.iter().flat_map(SlotRange::iter).collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), slots);
        assert_eq!(SlotSet::new().ranges().count(), 0);
        assert_eq!(SlotSet::new().iter().count(), 0);
        assert_eq!(
            SlotSet::full().ranges().collect::<Vec<_>>(),
            [SlotRange {
                start: 0,
                end: SLOT_COUNT - 1
            }]
        );
        assert_eq!(SlotSet::full().iter().count(), usize::from(SLOT_COUNT));
    }

    proptest! {
        #[test]
        fn key_slot_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert!(key_slot(&key) < SLOT_COUNT);
        }

        #[test]
        fn hash_tag_groups_keys(tag in "[a-z0-9]{1,12}", a in "[a-z0-9:]{0,12}", b in "[a-z0-9:]{0,12}") {
            let left = format!("{a}{{{tag}}}x");
            let right = format!("{b}{{{tag}}}{a}");
            prop_assert_eq!(key_slot(left.as_bytes()), key_slot(right.as_bytes()));
            prop_assert_eq!(key_slot(left.as_bytes()), key_slot(tag.as_bytes()));
        }

        #[test]
        fn split_evenly_is_contiguous_and_balanced(shards in 1u16..=2000) {
            let ranges = split_evenly(shards);
            prop_assert_eq!(ranges.len(), usize::from(shards));
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges[ranges.len() - 1].end, SLOT_COUNT - 1);
            for pair in ranges.windows(2) {
                prop_assert_eq!(u32::from(pair[0].end) + 1, u32::from(pair[1].start));
            }
            let min = ranges.iter().map(SlotRange::len).min().unwrap_or(0);
            let max = ranges.iter().map(SlotRange::len).max().unwrap_or(0);
            prop_assert!(max - min <= 1, "unbalanced: {} vs {}", min, max);
        }

        #[test]
        fn slot_range_display_roundtrips(a in 0u16..SLOT_COUNT, b in 0u16..SLOT_COUNT) {
            let range = SlotRange { start: a.min(b), end: a.max(b) };
            prop_assert_eq!(range.to_string().parse::<SlotRange>(), Ok(range));
        }

        #[test]
        fn slot_set_matches_model(ops in proptest::collection::vec((any::<bool>(), 0u16..SLOT_COUNT, 0u16..64), 0..40)) {
            let mut set = SlotSet::new();
            let mut model = std::collections::BTreeSet::new();
            for (insert, start, width) in ops {
                let range = SlotRange { start, end: start.saturating_add(width).min(SLOT_COUNT - 1) };
                if insert {
                    set.insert_range(range);
                    model.extend(range.iter());
                } else {
                    set.remove_range(range);
                    for slot in range.iter() { model.remove(&slot); }
                }
            }
            prop_assert_eq!(set.len(), model.len());
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            let rebuilt: SlotSet = set.ranges().collect();
            prop_assert_eq!(&rebuilt, &set);
            for pair in set.ranges().collect::<Vec<_>>().windows(2) {
                prop_assert!(u32::from(pair[0].end) + 1 < u32::from(pair[1].start), "ranges must be maximal");
            }
        }
    }
}
