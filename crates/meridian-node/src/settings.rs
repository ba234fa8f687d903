//! Parameters that `CONFIG SET` / `CONFIG GET` handle as redis-server 7.0 declares them
//! (its config.c table): the type, range, units and defaults, the error each bad value
//! gets, and the canonical form `CONFIG GET` answers. Numeric parameters live in
//! atomics ([`Settings`]), read where they take effect (`tcp-keepalive` at accept,
//! `proto-max-bulk-len` by the request parser, the encoding thresholds by OBJECT
//! ENCODING); the others are stored as their canonical text.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// A numeric parameter (Redis's createIntConfig / createLongLongConfig / ...).
pub struct Numeric {
    pub name: &'static str,
    /// MEMORY_CONFIG: memtoull units (1k = 1000, 1kb = 1024, ...) instead of an integer.
    pub memory: bool,
    pub min: i64,
    pub max: i64,
    pub default: i64,
    /// Where Redis clamps what it stores (`hz`: 1 to 500).
    pub clamp: Option<(i64, i64)>,
}

pub const fn int(name: &'static str, min: i64, max: i64, default: i64) -> Numeric {
    Numeric {
        name,
        memory: false,
        min,
        max,
        default,
        clamp: None,
    }
}

pub const fn memory(name: &'static str, min: i64, default: i64) -> Numeric {
    Numeric {
        memory: true,
        ..int(name, min, MAX, default)
    }
}

pub const INT_MAX: i64 = i32::MAX as i64;
const MAX: i64 = i64::MAX;

impl Numeric {
    /// `value` read as Redis reads this parameter (an integer as string2ll does, or
    /// a memory value), within its range; stored clamped where Redis clamps it.
    pub fn parse(&self, value: &[u8]) -> Result<i64, String> {
        let parsed = if self.memory {
            memtoull(value)
                .map(i128::from)
                .ok_or("argument must be a memory value")?
        } else {
            crate::protocol::frame::parse_i64(value)
                .map(i128::from)
                .ok_or("argument couldn't be parsed into an integer")?
        };
        if parsed < i128::from(self.min) || parsed > i128::from(self.max) {
            return Err(format!(
                "argument must be between {} and {} inclusive",
                self.min, self.max
            ));
        }
        let parsed = parsed as i64;
        Ok(self
            .clamp
            .map_or(parsed, |(low, high)| parsed.clamp(low, high)))
    }
}

/// The numeric parameters, in the order of [`Num`].
pub const NUMERIC: [Numeric; 19] = [
    int("tcp-keepalive", 0, INT_MAX, 300),
    memory("proto-max-bulk-len", 1024 * 1024, 512 * 1024 * 1024),
    int("hash-max-listpack-entries", 0, MAX, 512),
    memory("hash-max-listpack-value", 0, 64),
    int("zset-max-listpack-entries", 0, MAX, 128),
    memory("zset-max-listpack-value", 0, 64),
    int("set-max-intset-entries", 0, MAX, 512),
    int("list-max-listpack-size", -INT_MAX - 1, INT_MAX, -2),
    int("list-compress-depth", 0, INT_MAX, 0),
    memory("stream-node-max-bytes", 0, 4096),
    int("stream-node-max-entries", 0, MAX, 100),
    Numeric {
        clamp: Some((1, 500)),
        ..int("hz", 0, INT_MAX, 10)
    },
    int("lfu-log-factor", 0, INT_MAX, 10),
    int("lfu-decay-time", 0, INT_MAX, 1),
    int("slowlog-log-slower-than", -1, MAX, 10_000),
    int("slowlog-max-len", 0, MAX, 128),
    int("latency-monitor-threshold", 0, MAX, 0),
    memory("hll-sparse-max-bytes", 0, 3000),
    int("active-expire-effort", 1, 10, 1),
];

/// The pre-7.0 names Redis 7.0 still accepts and lists, and what they stand for.
pub const ALIASES: [(&str, &str); 5] = [
    ("hash-max-ziplist-entries", "hash-max-listpack-entries"),
    ("hash-max-ziplist-value", "hash-max-listpack-value"),
    ("zset-max-ziplist-entries", "zset-max-listpack-entries"),
    ("zset-max-ziplist-value", "zset-max-listpack-value"),
    ("list-max-ziplist-size", "list-max-listpack-size"),
];

/// `name`, or what it stands for when it is one of the [`ALIASES`].
fn unalias(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, real)| real)
}

/// Index of a parameter in [`NUMERIC`] and [`Settings`].
#[derive(Clone, Copy, Debug)]
pub enum Num {
    TcpKeepalive,
    ProtoMaxBulkLen,
    HashMaxListpackEntries,
    HashMaxListpackValue,
    ZsetMaxListpackEntries,
    ZsetMaxListpackValue,
    SetMaxIntsetEntries,
}

/// A parameter kept as text: yes/no, one of a list, or Redis's own syntax.
pub enum Kind {
    Bool,
    /// Accepted case-insensitively, reported as written here.
    Enum(&'static [&'static str]),
    /// `save`: `<seconds> <changes>` pairs.
    Save,
    /// `client-output-buffer-limit`: `<class> <hard> <soft> <soft-seconds>` groups.
    OutputBufferLimit,
}

pub struct Text {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
}

const fn text(name: &'static str, kind: Kind, default: &'static str) -> Text {
    Text {
        name,
        kind,
        default,
    }
}

/// Redis's default limits (normal clients none; replicas 256mb/64mb/60s; pub/sub
/// 32mb/8mb/60s), in the form CONFIG GET answers.
pub const DEFAULT_OUTPUT_BUFFER_LIMIT: &str =
    "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";

const OUTPUT_BUFFER_LIMIT: &str = "client-output-buffer-limit";

pub const TEXT: &[Text] = &[
    // the node keeps nothing on disk: no save points unless told
    text("save", Kind::Save, ""),
    text("appendonly", Kind::Bool, "no"),
    text(
        "appendfsync",
        Kind::Enum(&["everysec", "always", "no"]),
        "everysec",
    ),
    text(
        "loglevel",
        Kind::Enum(&["debug", "verbose", "notice", "warning"]),
        "notice",
    ),
    text("latency-tracking", Kind::Bool, "yes"),
    text("lazyfree-lazy-eviction", Kind::Bool, "no"),
    text("lazyfree-lazy-expire", Kind::Bool, "no"),
    text("lazyfree-lazy-server-del", Kind::Bool, "no"),
    text("lazyfree-lazy-user-del", Kind::Bool, "no"),
    text("lazyfree-lazy-user-flush", Kind::Bool, "no"),
    text("activedefrag", Kind::Bool, "no"),
    text(
        OUTPUT_BUFFER_LIMIT,
        Kind::OutputBufferLimit,
        DEFAULT_OUTPUT_BUFFER_LIMIT,
    ),
];

/// The numeric parameters' current values, indexed like [`NUMERIC`].
pub struct Settings {
    values: Box<[AtomicI64]>,
    /// The text parameters' canonical values, by name.
    text: parking_lot::Mutex<BTreeMap<&'static str, String>>,
    /// The hard limit of client-output-buffer-limit's pubsub class, in bytes (0 =
    /// none): what a connection may have queued before it is closed.
    pub pubsub_output_limit: Arc<AtomicUsize>,
}

impl Settings {
    /// Redis's defaults, except where the node was started with another value.
    pub fn new(overrides: &[(Num, i64)]) -> Settings {
        let settings = Settings {
            values: NUMERIC
                .iter()
                .map(|numeric| AtomicI64::new(numeric.default))
                .collect(),
            text: parking_lot::Mutex::new(
                TEXT.iter()
                    .map(|text| (text.name, text.default.to_string()))
                    .collect(),
            ),
            pubsub_output_limit: Arc::new(AtomicUsize::new(crate::client::PUBSUB_OUTPUT_LIMIT)),
        };
        for &(num, value) in overrides {
            settings.values[num as usize].store(value, Ordering::Relaxed);
        }
        settings
    }

    pub fn get(&self, num: Num) -> i64 {
        self.values[num as usize].load(Ordering::Relaxed)
    }

    /// A threshold as a length (negative ones count as 0).
    pub fn size(&self, num: Num) -> usize {
        usize::try_from(self.get(num)).unwrap_or(0)
    }

    pub fn text(&self, name: &str) -> String {
        self.text.lock().get(name).cloned().unwrap_or_default()
    }

    /// Every parameter with its value, aliases included, as CONFIG GET lists them.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        let mut values = Vec::new();
        for (numeric, value) in NUMERIC.iter().zip(self.values.iter()) {
            let value = value.load(Ordering::Relaxed).to_string();
            for (alias, _) in ALIASES.iter().filter(|(_, real)| *real == numeric.name) {
                values.push((*alias, value.clone()));
            }
            values.push((numeric.name, value));
        }
        for (name, value) in self.text.lock().iter() {
            values.push((*name, value.clone()));
        }
        values
    }

    /// Stores what [`check`] accepted.
    pub fn set(&self, checked: Checked) {
        match checked {
            Checked::Numeric(index, value) => self.values[index].store(value, Ordering::Relaxed),
            Checked::Text(name, value) => {
                if name == OUTPUT_BUFFER_LIMIT {
                    // "normal h s t slave h s t pubsub <hard> ..."
                    let hard = value.split(' ').nth(9).and_then(|hard| hard.parse().ok());
                    self.pubsub_output_limit
                        .store(hard.unwrap_or(usize::MAX), Ordering::Relaxed);
                }
                self.text.lock().insert(name, value);
            }
        }
    }
}

/// A value [`check`] accepted, in the form it is stored.
pub enum Checked {
    Numeric(usize, i64),
    Text(&'static str, String),
}

/// Whether `name` (lowercase) is one of this module's parameters.
pub fn known(name: &str) -> bool {
    NUMERIC.iter().any(|numeric| numeric.name == unalias(name))
        || TEXT.iter().any(|text| text.name == name)
}

/// Validates `value` for `name` (lowercase, [`known`]) as Redis 7.0 does; the error is
/// the text Redis puts after `CONFIG SET failed (...) - `.
pub fn check(settings: &Settings, name: &str, value: &[u8]) -> Result<Checked, String> {
    if let Some(index) = NUMERIC
        .iter()
        .position(|numeric| numeric.name == unalias(name))
    {
        let parsed = NUMERIC[index].parse(value)?;
        return Ok(Checked::Numeric(index, parsed));
    }
    let text = TEXT
        .iter()
        .find(|text| text.name == name)
        .ok_or("unknown parameter")?;
    let canonical = match &text.kind {
        Kind::Bool => match value.to_ascii_lowercase().as_slice() {
            b"yes" => "yes".to_string(),
            b"no" => "no".to_string(),
            _ => return Err("argument must be 'yes' or 'no'".to_string()),
        },
        Kind::Enum(names) => names
            .iter()
            .find(|candidate| candidate.as_bytes().eq_ignore_ascii_case(value))
            .map(|name| name.to_string())
            .ok_or_else(|| {
                format!(
                    "argument(s) must be one of the following: {}",
                    names.join(", ")
                )
            })?,
        Kind::Save => save_points(value).ok_or("Invalid save parameters")?,
        Kind::OutputBufferLimit => {
            output_buffer_limits(&settings.text(text.name), value).map_err(str::to_string)?
        }
    };
    Ok(Checked::Text(text.name, canonical))
}

/// Splits on every single space like Redis's sdssplitlen (so "a  b" has an empty
/// part); an empty value has no parts.
fn split_spaces(value: &[u8]) -> Vec<&[u8]> {
    if value.is_empty() {
        Vec::new()
    } else {
        value.split(|&byte| byte == b' ').collect()
    }
}

/// `save`: pairs of seconds (at least 1) and changes (at least 0), read with strtoll,
/// written back as Redis does.
fn save_points(value: &[u8]) -> Option<String> {
    let parts = split_spaces(value);
    if !parts.len().is_multiple_of(2) {
        return None;
    }
    let mut points = Vec::new();
    for pair in parts.chunks(2) {
        let (seconds, seconds_whole) = strtoll(pair[0]);
        let (changes, changes_whole) = strtoll(pair[1]);
        if !seconds_whole || !changes_whole || seconds < 1 || changes < 0 {
            return None;
        }
        // Redis keeps the changes in an int
        points.push(format!("{seconds} {}", changes as i32));
    }
    Some(points.join(" "))
}

const CLASSES: [&str; 3] = ["normal", "slave", "pubsub"];

/// `client-output-buffer-limit`: `value`'s classes replace theirs in `current` (the
/// canonical form); all or nothing, with Redis's errors.
fn output_buffer_limits(current: &str, value: &[u8]) -> Result<String, &'static str> {
    let current: Vec<&str> = current.split(' ').collect();
    let mut limits: [[String; 3]; 3] = std::array::from_fn(|class| {
        std::array::from_fn(|at| {
            let token = current.get(class * 4 + 1 + at).copied();
            token.unwrap_or("0").to_string()
        })
    });
    let parts = split_spaces(value);
    if !parts.len().is_multiple_of(4) {
        return Err("Wrong number of arguments in buffer limit configuration.");
    }
    for group in parts.chunks(4) {
        let class = match group[0].to_ascii_lowercase().as_slice() {
            b"normal" => 0,
            b"slave" | b"replica" => 1,
            b"pubsub" => 2,
            _ => return Err("Invalid client class specified in buffer limit configuration."),
        };
        let hard = memtoull(group[1]);
        let soft = memtoull(group[2]);
        // Redis reads the seconds with strtoll into an int
        let (seconds, whole) = strtoll(group[3]);
        let seconds = seconds as i32;
        let (Some(hard), Some(soft), true, true) = (hard, soft, whole, seconds >= 0) else {
            return Err(
                "Error in hard, soft or soft_seconds setting in buffer limit configuration.",
            );
        };
        limits[class] = [hard.to_string(), soft.to_string(), seconds.to_string()];
    }
    Ok(CLASSES
        .iter()
        .zip(&limits)
        .map(|(class, [hard, soft, seconds])| format!("{class} {hard} {soft} {seconds}"))
        .collect::<Vec<_>>()
        .join(" "))
}

/// Redis's memtoull: digits then an optional unit (b, k = 1000, kb = 1024, m, mb, g,
/// gb, any case); no sign; digits that overflow saturate and the unit's product wraps,
/// as in Redis; an empty number is 0.
pub fn memtoull(text: &[u8]) -> Option<u64> {
    if text.first() == Some(&b'-') {
        return None;
    }
    let split = text
        .iter()
        .position(|byte| !byte.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: u64 = match unit.to_ascii_lowercase().as_slice() {
        b"" | b"b" => 1,
        b"k" => 1000,
        b"kb" => 1024,
        b"m" => 1000 * 1000,
        b"mb" => 1024 * 1024,
        b"g" => 1000 * 1000 * 1000,
        b"gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    if digits.len() >= 128 {
        return None;
    }
    let number = digits.iter().fold(0u64, |number, digit| {
        number
            .checked_mul(10)
            .and_then(|number| number.checked_add(u64::from(digit - b'0')))
            .unwrap_or(u64::MAX)
    });
    Some(number.wrapping_mul(multiplier))
}

/// C's strtoll in base 10: leading white space, a sign, digits (saturating); returns
/// the number and whether it took the whole text (no digits takes nothing, so only ""
/// is whole then).
fn strtoll(text: &[u8]) -> (i64, bool) {
    let start = text
        .iter()
        .position(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(text.len());
    let mut at = start;
    let negative = match text.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let digits = text[at..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digits == 0 {
        return (0, text.is_empty());
    }
    let magnitude = text[at..at + digits].iter().fold(0i128, |number, digit| {
        (number * 10 + i128::from(digit - b'0')).min(i128::from(u64::MAX))
    });
    let value = if negative { -magnitude } else { magnitude };
    let value = value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    (value, at + digits == text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_num() {
        for (num, name) in [
            (Num::TcpKeepalive, "tcp-keepalive"),
            (Num::ProtoMaxBulkLen, "proto-max-bulk-len"),
            (Num::HashMaxListpackEntries, "hash-max-listpack-entries"),
            (Num::HashMaxListpackValue, "hash-max-listpack-value"),
            (Num::ZsetMaxListpackEntries, "zset-max-listpack-entries"),
            (Num::ZsetMaxListpackValue, "zset-max-listpack-value"),
            (Num::SetMaxIntsetEntries, "set-max-intset-entries"),
        ] {
            assert_eq!(NUMERIC[num as usize].name, name);
        }
    }

    #[test]
    fn memory_values_as_redis_reads_them() {
        assert_eq!(memtoull(b""), Some(0));
        assert_eq!(memtoull(b"kb"), Some(0));
        assert_eq!(memtoull(b"1k"), Some(1000));
        assert_eq!(memtoull(b"1KB"), Some(1024));
        assert_eq!(memtoull(b"3Gb"), Some(3 << 30));
        assert_eq!(memtoull(b"-1"), None);
        assert_eq!(memtoull(b"1 mb"), None);
        assert_eq!(memtoull(b"1mib"), None);
        assert_eq!(memtoull(b"99999999999999999999"), Some(u64::MAX));
        assert_eq!(
            memtoull(b"100000000000000000000gb"),
            Some(u64::MAX.wrapping_mul(1 << 30))
        );
    }

    #[test]
    fn strtoll_like_c() {
        assert_eq!(strtoll(b""), (0, true));
        assert_eq!(strtoll(b"+7"), (7, true));
        assert_eq!(strtoll(b" -7"), (-7, true));
        assert_eq!(strtoll(b"1.5"), (1, false));
        assert_eq!(strtoll(b" "), (0, false));
        assert_eq!(strtoll(b"99999999999999999999"), (i64::MAX, true));
    }

    #[test]
    fn output_buffer_limits_merge_by_class() {
        let merged = output_buffer_limits(DEFAULT_OUTPUT_BUFFER_LIMIT, b"Replica 1mb 2KB 3");
        assert_eq!(
            merged.as_deref(),
            Ok("normal 0 0 0 slave 1048576 2048 3 pubsub 33554432 8388608 60")
        );
        assert_eq!(
            output_buffer_limits(DEFAULT_OUTPUT_BUFFER_LIMIT, b"pubsub 1 1 4294967296").as_deref(),
            Ok("normal 0 0 0 slave 268435456 67108864 60 pubsub 1 1 0")
        );
        assert!(output_buffer_limits(DEFAULT_OUTPUT_BUFFER_LIMIT, b"master 1 2 3").is_err());
    }
}
