//! Keyspace notifications (Redis `notify-keyspace-events`): writes publish
//! `__keyspace@0__:<key>` (message: the event) and `__keyevent@0__:<event>`
//! (message: the key) through the pub/sub broker, with Redis 7.0's event names
//! and class letters. Commands call `Ctx::notify` (in the commands module, which imports this one);
//! the store's own removals (expiry, eviction) arrive through the write hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::broker::Broker;

/// Redis's NOTIFY_KEYSPACE (`K`): publish on `__keyspace@0__:<key>`.
const KEYSPACE: u32 = 1 << 0;
/// Redis's NOTIFY_KEYEVENT (`E`): publish on `__keyevent@0__:<event>`.
const KEYEVENT: u32 = 1 << 1;

/// The class of an event: which letter of `notify-keyspace-events` enables it.
/// The values are Redis's NOTIFY_* bits, so flags read and written by CONFIG
/// match redis-server's bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum NotifyClass {
    /// `g`: DEL, EXPIRE, RENAME, ... (type independent).
    Generic = 1 << 2,
    /// `$`: string commands (bitmaps and HyperLogLog included, as in Redis).
    String = 1 << 3,
    /// `l`
    List = 1 << 4,
    /// `s`
    Set = 1 << 5,
    /// `h`
    Hash = 1 << 6,
    /// `z`
    Zset = 1 << 7,
    /// `x`: a key removed because its TTL passed.
    Expired = 1 << 8,
    /// `e`: a key removed by maxmemory eviction.
    Evicted = 1 << 9,
    /// `t`
    Stream = 1 << 10,
    /// `m`: a read found no key (not in `A`).
    KeyMiss = 1 << 11,
    /// `d`: module events (accepted for compatibility; the node has no modules).
    Module = 1 << 13,
    /// `n`: a key was created (not in `A`).
    New = 1 << 14,
}

/// Redis 7.0's NOTIFY_ALL (`A`): every class but key-miss and new.
const ALL: u32 = NotifyClass::Generic as u32
    | NotifyClass::String as u32
    | NotifyClass::List as u32
    | NotifyClass::Set as u32
    | NotifyClass::Hash as u32
    | NotifyClass::Zset as u32
    | NotifyClass::Expired as u32
    | NotifyClass::Evicted as u32
    | NotifyClass::Stream as u32
    | NotifyClass::Module as u32;

/// Redis's error for a letter it does not know (the CONFIG SET wrapper adds the rest).
pub const INVALID_FLAGS: &str = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.";

/// Redis's keyspaceEventsStringToFlags: None for an unknown letter.
pub fn parse_flags(classes: &str) -> Option<u32> {
    let mut flags = 0;
    for letter in classes.bytes() {
        flags |= match letter {
            b'A' => ALL,
            b'g' => NotifyClass::Generic as u32,
            b'$' => NotifyClass::String as u32,
            b'l' => NotifyClass::List as u32,
            b's' => NotifyClass::Set as u32,
            b'h' => NotifyClass::Hash as u32,
            b'z' => NotifyClass::Zset as u32,
            b'x' => NotifyClass::Expired as u32,
            b'e' => NotifyClass::Evicted as u32,
            b'K' => KEYSPACE,
            b'E' => KEYEVENT,
            b't' => NotifyClass::Stream as u32,
            b'm' => NotifyClass::KeyMiss as u32,
            b'd' => NotifyClass::Module as u32,
            b'n' => NotifyClass::New as u32,
            _ => return None,
        };
    }
    Some(flags)
}

/// Redis's keyspaceEventsFlagsToString: the canonical spelling CONFIG GET answers.
pub fn flags_to_string(flags: u32) -> String {
    let mut text = String::new();
    if flags & ALL == ALL {
        text.push('A');
    } else {
        for (class, letter) in [
            (NotifyClass::Generic, 'g'),
            (NotifyClass::String, '$'),
            (NotifyClass::List, 'l'),
            (NotifyClass::Set, 's'),
            (NotifyClass::Hash, 'h'),
            (NotifyClass::Zset, 'z'),
            (NotifyClass::Expired, 'x'),
            (NotifyClass::Evicted, 'e'),
            (NotifyClass::Stream, 't'),
            (NotifyClass::Module, 'd'),
            (NotifyClass::New, 'n'),
        ] {
            if flags & class as u32 != 0 {
                text.push(letter);
            }
        }
    }
    for (flag, letter) in [
        (KEYSPACE, 'K'),
        (KEYEVENT, 'E'),
        (NotifyClass::KeyMiss as u32, 'm'),
    ] {
        if flags & flag != 0 {
            text.push(letter);
        }
    }
    text
}

/// The node's `notify-keyspace-events` setting and where events go.
pub struct KeyspaceEvents {
    flags: AtomicU32,
    broker: Arc<Broker>,
}

impl KeyspaceEvents {
    pub fn new(broker: Arc<Broker>, flags: u32) -> Self {
        Self {
            flags: AtomicU32::new(flags),
            broker,
        }
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    pub fn set_flags(&self, flags: u32) {
        self.flags.store(flags, Ordering::Relaxed);
    }

    /// Whether events of `class` are published now (one relaxed load).
    #[inline]
    pub fn wants(&self, class: NotifyClass) -> bool {
        self.flags.load(Ordering::Relaxed) & class as u32 != 0
    }

    /// Redis's notifyKeyspaceEvent for database 0. Off (the default), this is one
    /// relaxed load; the channel names are only built for an enabled class.
    #[inline]
    pub fn notify(&self, class: NotifyClass, event: &'static str, key: &[u8]) {
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & class as u32 != 0 {
            self.publish(flags, event, key);
        }
    }

    /// The `del` of a collection its command emptied (the store removed the key, as
    /// Redis deletes an empty list, set, hash or sorted set), after the command's event.
    #[inline]
    pub fn notify_emptied(&self, key: &[u8], emptied: bool) {
        if emptied {
            self.notify(NotifyClass::Generic, "del", key);
        }
    }

    #[cold]
    fn publish(&self, flags: u32, event: &str, key: &[u8]) {
        if flags & KEYSPACE != 0 {
            let mut channel = Vec::with_capacity(15 + key.len());
            channel.extend_from_slice(b"__keyspace@0__:");
            channel.extend_from_slice(key);
            self.broker.publish(&channel, event.as_bytes());
        }
        if flags & KEYEVENT != 0 {
            let mut channel = Vec::with_capacity(15 + event.len());
            channel.extend_from_slice(b"__keyevent@0__:");
            channel.extend_from_slice(event.as_bytes());
            self.broker.publish(&channel, key);
        }
    }
}

impl std::fmt::Debug for KeyspaceEvents {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyspaceEvents")
            .field("flags", &flags_to_string(self.flags()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_back_like_redis() {
        let canonical = |text: &str| parse_flags(text).map(flags_to_string);
        assert_eq!(canonical("KEA").as_deref(), Some("AKE"));
        assert_eq!(canonical("").as_deref(), Some(""));
        assert_eq!(canonical("Elg").as_deref(), Some("glE"));
        assert_eq!(canonical("g$lshzxetdK").as_deref(), Some("AK"));
        // Redis's quirk, kept: with every class of `A`, `n` is not spelled out
        assert_eq!(canonical("Anm").as_deref(), Some("Am"));
        assert_eq!(canonical("mnK$").as_deref(), Some("$nKm"));
        assert_eq!(parse_flags("KEw"), None);
        assert_eq!(parse_flags("a"), None);
    }

    #[test]
    fn publishes_only_enabled_classes() {
        let broker = Arc::new(Broker::default());
        let events = KeyspaceEvents::new(broker, 0);
        assert!(!events.wants(NotifyClass::List));
        events.set_flags(parse_flags("Kl").unwrap_or(0));
        assert!(events.wants(NotifyClass::List) && !events.wants(NotifyClass::Generic));
        // no subscriber: publishing is harmless
        events.notify(NotifyClass::List, "lpush", b"k");
    }
}
