//! Pub/sub fan-out: channel and pattern subscriptions to client handles.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::client::{ClientEvent, ClientHandle};
use crate::glob;

type Subscribers = HashMap<u64, Arc<ClientHandle>>;

#[derive(Default)]
pub struct Broker {
    channels: RwLock<HashMap<Bytes, Subscribers>>,
    patterns: RwLock<HashMap<Bytes, Subscribers>>,
}

impl Broker {
    /// Returns true when the subscription is new.
    pub fn subscribe(&self, channel: &[u8], client: &Arc<ClientHandle>) -> bool {
        self.channels
            .write()
            .entry(Bytes::copy_from_slice(channel))
            .or_default()
            .insert(client.id, client.clone())
            .is_none()
    }

    pub fn unsubscribe(&self, channel: &[u8], client_id: u64) -> bool {
        remove(&self.channels, channel, client_id)
    }

    pub fn psubscribe(&self, pattern: &[u8], client: &Arc<ClientHandle>) -> bool {
        self.patterns
            .write()
            .entry(Bytes::copy_from_slice(pattern))
            .or_default()
            .insert(client.id, client.clone())
            .is_none()
    }

    pub fn punsubscribe(&self, pattern: &[u8], client_id: u64) -> bool {
        remove(&self.patterns, pattern, client_id)
    }

    /// Delivers to channel and pattern subscribers; returns receivers reached.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        let channel = Bytes::copy_from_slice(channel);
        let payload = Bytes::copy_from_slice(payload);
        let mut receivers = 0;
        if let Some(subscribers) = self.channels.read().get(&channel) {
            for client in subscribers.values() {
                let event = ClientEvent::Message {
                    channel: channel.clone(),
                    payload: payload.clone(),
                };
                if client.deliver(event) {
                    receivers += 1;
                }
            }
        }
        for (pattern, subscribers) in self.patterns.read().iter() {
            if !glob::matches(pattern, &channel) {
                continue;
            }
            for client in subscribers.values() {
                let event = ClientEvent::PMessage {
                    pattern: pattern.clone(),
                    channel: channel.clone(),
                    payload: payload.clone(),
                };
                if client.deliver(event) {
                    receivers += 1;
                }
            }
        }
        receivers
    }

    /// Active channels, optionally filtered by a glob.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.channels
            .read()
            .keys()
            .filter(|channel| pattern.is_none_or(|pattern| glob::matches(pattern, channel)))
            .cloned()
            .collect()
    }

    pub fn subscriber_count(&self, channel: &[u8]) -> usize {
        self.channels.read().get(channel).map_or(0, HashMap::len)
    }

    pub fn pattern_count(&self) -> usize {
        self.patterns.read().len()
    }

    pub fn channel_count(&self) -> usize {
        self.channels.read().len()
    }

    /// Drops every subscription of a disconnected client.
    pub fn remove_client(&self, client_id: u64, channels: &[Vec<u8>], patterns: &[Vec<u8>]) {
        for channel in channels {
            self.unsubscribe(channel, client_id);
        }
        for pattern in patterns {
            self.punsubscribe(pattern, client_id);
        }
    }
}

fn remove(map: &RwLock<HashMap<Bytes, Subscribers>>, name: &[u8], client_id: u64) -> bool {
    let mut map = map.write();
    let Some(subscribers) = map.get_mut(name) else {
        return false;
    };
    let removed = subscribers.remove(&client_id).is_some();
    if subscribers.is_empty() {
        map.remove(name);
    }
    removed
}
