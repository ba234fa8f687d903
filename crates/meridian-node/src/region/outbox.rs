//! The events a peer region has not acknowledged yet, oldest first.
//!
//! An event stays here until every lane (connection to one primary of the
//! peer region) it was routed to acknowledged it, so a broken link loses
//! nothing: the lane resends after reconnecting, and a topology change routes
//! every remaining event again. Lanes are numbered by a generation; replies
//! from the lanes of an older generation (torn down on a topology change) no
//! longer count, so a pattern event is never completed by a stale lane.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Event;

/// An event handed to a lane: its place in the outbox and the event itself.
#[derive(Clone, Debug)]
pub struct Routed {
    pub seq: u64,
    pub event: Arc<Event>,
}

struct Entry {
    event: Arc<Event>,
    /// Lanes (link addresses) that have not acknowledged the event yet;
    /// empty while the event waits to be routed.
    waiting_for: Vec<Arc<str>>,
    /// A lane of the current generation answered with an error instead of `+OK`.
    refused: bool,
    /// Re-sends a dirty slot after an overflow (outside the queue limit).
    recovery: bool,
}

#[derive(Default)]
pub struct Outbox {
    entries: BTreeMap<u64, Entry>,
    next_seq: u64,
    /// Entries from this sequence number on have not been routed yet.
    unrouted_from: u64,
    generation: u64,
    recovering: usize,
    /// Bytes of values the waiting events hold.
    value_bytes: usize,
}

/// An event every lane acknowledged, now out of the outbox.
pub struct Delivered {
    pub event: Arc<Event>,
    /// Every lane answered `+OK`: the peer applied the event, so a strong
    /// write waiting for it may be acknowledged. False when a lane refused it
    /// (the event leaves the outbox all the same: resending would not help).
    pub applied: bool,
    /// Events still waiting (for the queue-depth gauge).
    pub remaining: usize,
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Client events waiting (what the queue limit applies to).
    pub fn client_events(&self) -> usize {
        self.entries.len() - self.recovering
    }

    /// Bytes of values the waiting events hold (what the byte bound applies to).
    pub fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    #[cfg(test)]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn push(&mut self, event: Event, recovery: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.recovering += usize::from(recovery);
        self.value_bytes += event.kind.value_bytes();
        self.entries.insert(
            seq,
            Entry {
                event: Arc::new(event),
                waiting_for: Vec::new(),
                refused: false,
                recovery,
            },
        );
    }

    /// Origin time of the oldest waiting event.
    pub fn oldest_origin_ms(&self) -> Option<u64> {
        self.entries
            .values()
            .next()
            .map(|entry| entry.event.origin_ms)
    }

    /// Routes every event not routed yet, in order: `targets` names the lanes
    /// that must acknowledge it (None: nobody owns the event's slot, routing
    /// stops there) and `dispatch` hands it to each.
    pub fn route(
        &mut self,
        targets: impl Fn(&Event) -> Option<Vec<Arc<str>>>,
        mut dispatch: impl FnMut(&Arc<str>, Routed),
    ) -> Result<(), Arc<Event>> {
        for (seq, entry) in self.entries.range_mut(self.unrouted_from..) {
            let Some(lanes) = targets(&entry.event) else {
                self.unrouted_from = *seq;
                return Err(entry.event.clone());
            };
            for lane in &lanes {
                dispatch(
                    lane,
                    Routed {
                        seq: *seq,
                        event: entry.event.clone(),
                    },
                );
            }
            entry.waiting_for = lanes;
        }
        self.unrouted_from = self.next_seq;
        Ok(())
    }

    /// Forgets every routing (new lanes will be built) and returns the new
    /// generation; every waiting event is routed again by the next [`route`](Self::route).
    pub fn reroute_all(&mut self) -> u64 {
        self.generation += 1;
        self.unrouted_from = 0;
        for entry in self.entries.values_mut() {
            entry.waiting_for.clear();
            entry.refused = false;
        }
        self.generation
    }

    /// Lane `target` of `generation` answered event `seq` (`applied`: with
    /// `+OK`); returns the event once every lane it was routed to answered.
    pub fn acknowledge(
        &mut self,
        generation: u64,
        seq: u64,
        target: &str,
        applied: bool,
    ) -> Option<Delivered> {
        if generation != self.generation || seq >= self.unrouted_from {
            return None;
        }
        let entry = self.entries.get_mut(&seq)?;
        let before = entry.waiting_for.len();
        entry.waiting_for.retain(|lane| lane.as_ref() != target);
        if before == entry.waiting_for.len() {
            return None;
        }
        entry.refused |= !applied;
        if !entry.waiting_for.is_empty() {
            return None;
        }
        let entry = self.entries.remove(&seq)?;
        self.recovering -= usize::from(entry.recovery);
        self.value_bytes -= entry.event.kind.value_bytes();
        Some(Delivered {
            event: entry.event,
            applied: !entry.refused,
            remaining: self.entries.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{EventKind, Version};

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            version: Version::default(),
            origin_region: Arc::from("a"),
            origin_ms: 0,
            ack: None,
        }
    }

    fn route_to(outbox: &mut Outbox, lanes: &[&str]) -> Vec<(String, u64)> {
        let lanes: Vec<Arc<str>> = lanes.iter().map(|lane| Arc::from(*lane)).collect();
        let mut sent = Vec::new();
        outbox
            .route(
                |event| match event.kind {
                    EventKind::Pattern(_) => Some(lanes.clone()),
                    _ => Some(lanes[..1].to_vec()),
                },
                |lane, routed| sent.push((lane.to_string(), routed.seq)),
            )
            .expect("routable");
        sent
    }

    #[test]
    fn a_pattern_is_delivered_once_every_lane_acknowledged() {
        let mut outbox = Outbox::default();
        outbox.push(event(EventKind::Pattern(b"user:*".to_vec())), false);
        let sent = route_to(&mut outbox, &["p1", "p2"]);
        assert_eq!(sent, vec![("p1".into(), 0), ("p2".into(), 0)]);
        let generation = outbox.generation();
        assert!(outbox.acknowledge(generation, 0, "p1", true).is_none());
        // a duplicate reply from the same lane does not count twice
        assert!(outbox.acknowledge(generation, 0, "p1", true).is_none());
        let delivered = outbox
            .acknowledge(generation, 0, "p2", true)
            .expect("delivered");
        assert_eq!(delivered.remaining, 0);
        assert!(outbox.is_empty());
    }

    #[test]
    fn replies_of_an_old_generation_do_not_count_after_rerouting() {
        let mut outbox = Outbox::default();
        outbox.push(event(EventKind::Key(b"k".to_vec())), false);
        outbox.push(event(EventKind::Key(b"j".to_vec())), false);
        route_to(&mut outbox, &["old"]);
        let old = outbox.generation();
        assert!(outbox.acknowledge(old, 0, "old", true).is_some());
        let new = outbox.reroute_all();
        assert!(outbox.acknowledge(old, 1, "old", true).is_none());
        // only the unacknowledged event is routed again, to the new owner
        assert_eq!(route_to(&mut outbox, &["new"]), vec![("new".into(), 1)]);
        assert!(outbox.acknowledge(new, 1, "new", true).is_some());
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_refusal_by_any_lane_means_the_event_was_not_applied() {
        let mut outbox = Outbox::default();
        outbox.push(event(EventKind::Pattern(b"*".to_vec())), false);
        outbox.push(event(EventKind::Pattern(b"x*".to_vec())), false);
        route_to(&mut outbox, &["p1", "p2"]);
        let generation = outbox.generation();
        assert!(outbox.acknowledge(generation, 0, "p1", false).is_none());
        let refused = outbox
            .acknowledge(generation, 0, "p2", true)
            .expect("answered");
        assert!(!refused.applied, "one primary refused the event");
        assert!(outbox.acknowledge(generation, 1, "p2", true).is_none());
        let applied = outbox
            .acknowledge(generation, 1, "p1", true)
            .expect("answered");
        assert!(applied.applied);
        assert!(outbox.is_empty());
    }

    #[test]
    fn recovery_events_are_outside_the_client_count() {
        let mut outbox = Outbox::default();
        outbox.push(event(EventKind::Key(b"k".to_vec())), false);
        outbox.push(event(EventKind::Slot(7)), true);
        assert_eq!((outbox.len(), outbox.client_events()), (2, 1));
        route_to(&mut outbox, &["p"]);
        let generation = outbox.generation();
        assert!(outbox.acknowledge(generation, 1, "p", true).is_some());
        assert_eq!((outbox.len(), outbox.client_events()), (1, 1));
    }

    #[test]
    fn value_bytes_follow_the_waiting_events() {
        let mut outbox = Outbox::default();
        let set = |key: &[u8], len: usize| EventKind::Set {
            key: key.to_vec(),
            value: bytes::Bytes::from(vec![b'v'; len]),
            ttl_ms: 0,
        };
        outbox.push(event(set(b"a", 10)), false);
        outbox.push(event(EventKind::Key(b"b".to_vec())), false);
        outbox.push(
            event(EventKind::Restore {
                key: b"c".to_vec(),
                payload: bytes::Bytes::from(vec![0; 7]),
                ttl_ms: 0,
            }),
            false,
        );
        assert_eq!(outbox.value_bytes(), 17);
        route_to(&mut outbox, &["p"]);
        let generation = outbox.generation();
        assert!(outbox.acknowledge(generation, 0, "p", true).is_some());
        assert_eq!(outbox.value_bytes(), 7);
        assert!(outbox.acknowledge(generation, 2, "p", false).is_some());
        assert_eq!(outbox.value_bytes(), 0);
    }

    #[test]
    fn routing_stops_at_an_event_nobody_owns_and_resumes_there() {
        let mut outbox = Outbox::default();
        outbox.push(event(EventKind::Key(b"a".to_vec())), false);
        outbox.push(event(EventKind::Slot(9)), false);
        outbox.push(event(EventKind::Key(b"b".to_vec())), false);
        let lane: Arc<str> = Arc::from("p");
        let mut sent = Vec::new();
        let result = outbox.route(
            |event| (!matches!(event.kind, EventKind::Slot(_))).then(|| vec![lane.clone()]),
            |_, routed| sent.push(routed.seq),
        );
        assert!(result.is_err());
        assert_eq!(sent, vec![0]);
        assert_eq!(
            route_to(&mut outbox, &["p"]),
            vec![("p".into(), 1), ("p".into(), 2)]
        );
    }
}
