//! Clients blocked on list keys (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP).
//!
//! Each key keeps its waiting clients in the order they blocked. A write to a key wakes
//! the key's first waiter; the waiter runs its command again (through the dispatcher,
//! so routing, ACLs, replication and region events apply as to any command) and then
//! hands the turn to the next waiter of each of its keys, served or not. Waiters thus
//! retry one after the other in the order they blocked, and a push serves the client
//! that waited longest, as in Redis. A change of topology or role wakes every waiter:
//! its retry is answered by the routing checks (MOVED, READONLY) instead of waiting on.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The registry of blocked clients.
#[derive(Default)]
pub struct Blocking {
    inner: Mutex<Inner>,
    /// Waiters registered: writes skip the registry while there are none.
    waiting: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    by_key: HashMap<Vec<u8>, VecDeque<u64>>,
    wakers: HashMap<u64, Arc<Notify>>,
}

/// One blocked client's place in the registry; leave with [`Blocking::leave`].
pub struct Waiter {
    id: u64,
    keys: Vec<Vec<u8>>,
    notify: Arc<Notify>,
}

impl Waiter {
    /// Resolves when the waiter's turn to retry comes.
    pub async fn turn(&self) {
        self.notify.notified().await;
    }
}

impl Inner {
    /// Wakes the waiter queued after `id` on `key` (the first one when `id` is None).
    fn wake_after(&self, key: &[u8], id: Option<u64>) {
        let Some(queue) = self.by_key.get(key) else {
            return;
        };
        let next = match id {
            None => queue.front(),
            Some(id) => queue
                .iter()
                .position(|&queued| queued == id)
                .and_then(|at| queue.get(at + 1)),
        };
        if let Some(notify) = next.and_then(|next| self.wakers.get(next)) {
            notify.notify_one();
        }
    }
}

impl Blocking {
    /// True while some client is blocked.
    pub fn is_active(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Blocks a client on `keys`, behind the clients already waiting on them.
    pub fn join(&self, keys: Vec<Vec<u8>>) -> Waiter {
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let notify = Arc::new(Notify::new());
        inner.wakers.insert(id, notify.clone());
        for key in &keys {
            let queue = inner.by_key.entry(key.clone()).or_default();
            if !queue.contains(&id) {
                queue.push_back(id);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiter { id, keys, notify }
    }

    /// Removes the waiter (served, timed out, disconnected); the next waiter of each of
    /// its keys takes its turn, in case the waiter had been woken for an element it left.
    pub fn leave(&self, waiter: Waiter) {
        let mut inner = self.inner.lock();
        for key in &waiter.keys {
            inner.wake_after(key, Some(waiter.id));
        }
        for key in &waiter.keys {
            if let Some(queue) = inner.by_key.get_mut(key) {
                queue.retain(|&queued| queued != waiter.id);
                if queue.is_empty() {
                    inner.by_key.remove(key);
                }
            }
        }
        inner.wakers.remove(&waiter.id);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// The waiter retried without being served: the next waiter of each of its keys
    /// takes its turn (the key may still hold what this one could not take, e.g. a list
    /// another of its keys' types refused).
    pub fn pass(&self, waiter: &Waiter) {
        let inner = self.inner.lock();
        for key in &waiter.keys {
            inner.wake_after(key, Some(waiter.id));
        }
    }

    /// A write changed `keys`: the first waiter of each retries.
    pub fn touched(&self, keys: &[&[u8]]) {
        if !self.is_active() {
            return;
        }
        let inner = self.inner.lock();
        for key in keys {
            inner.wake_after(key, None);
        }
    }

    /// The node's topology or role changed: every waiter retries, so the routing
    /// checks answer it (MOVED, READONLY) where it may no longer wait.
    pub fn wake_all(&self) {
        if !self.is_active() {
            return;
        }
        for notify in self.inner.lock().wakers.values() {
            notify.notify_one();
        }
    }

    /// Clients blocked now (INFO clients `blocked_clients`).
    pub fn blocked_clients(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn woken(waiter: &Waiter) -> bool {
        let turn = waiter.turn();
        let mut turn = std::pin::pin!(turn);
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        turn.as_mut().poll(&mut context).is_ready()
    }

    use std::future::Future as _;

    #[test]
    fn turns_pass_in_blocking_order() {
        let blocking = Blocking::default();
        let first = blocking.join(vec![b"q".to_vec()]);
        let second = blocking.join(vec![b"q".to_vec(), b"other".to_vec()]);
        let third = blocking.join(vec![b"q".to_vec()]);
        assert_eq!(blocking.blocked_clients(), 3);
        blocking.touched(&[b"q"]);
        assert!(woken(&first) && !woken(&second) && !woken(&third));
        // the first could not take anything: the second's turn
        blocking.pass(&first);
        assert!(woken(&second) && !woken(&third));
        // the second was served and leaves: the third's turn
        blocking.leave(second);
        assert!(woken(&third) && !woken(&first));
        blocking.touched(&[b"other"]);
        assert!(!woken(&first) && !woken(&third));
        blocking.wake_all();
        assert!(woken(&first) && woken(&third));
        blocking.leave(first);
        blocking.leave(third);
        assert!(!blocking.is_active());
        assert!(blocking.inner.lock().by_key.is_empty());
    }
}
