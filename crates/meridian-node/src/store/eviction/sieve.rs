//! SIEVE (Zhang et al., NSDI '24): a FIFO queue plus a "visited" bit per entry.
//! A hand walks from the oldest entry toward the newest, clearing visited bits
//! and evicting the first unvisited entry; survivors keep their position.
//!
//! The queue is a doubly linked list threaded through the shard's slab
//! (`Entry::prev`/`next`), newest at `head`.

use crate::store::entry::{Entry, NIL};

#[derive(Debug, Clone)]
pub struct SieveList {
    pub head: u32,
    pub tail: u32,
    pub hand: u32,
}

impl Default for SieveList {
    fn default() -> Self {
        SieveList {
            head: NIL,
            tail: NIL,
            hand: NIL,
        }
    }
}

fn entry(slab: &mut [Option<Entry>], index: u32) -> Option<&mut Entry> {
    slab.get_mut(index as usize).and_then(Option::as_mut)
}

impl SieveList {
    /// Inserts `index` as the newest entry.
    pub fn push_head(&mut self, slab: &mut [Option<Entry>], index: u32) {
        let old_head = self.head;
        if let Some(new) = entry(slab, index) {
            new.prev = NIL;
            new.next = old_head;
        }
        if let Some(head) = entry(slab, old_head) {
            head.prev = index;
        }
        self.head = index;
        if self.tail == NIL {
            self.tail = index;
        }
    }

    /// Removes `index` from the list (the entry must still be in the slab).
    pub fn unlink(&mut self, slab: &mut [Option<Entry>], index: u32) {
        let Some(node) = entry(slab, index) else {
            return;
        };
        let (prev, next) = (node.prev, node.next);
        node.prev = NIL;
        node.next = NIL;
        if self.hand == index {
            self.hand = prev;
        }
        match entry(slab, prev) {
            Some(prev_node) => prev_node.next = next,
            None => self.head = next,
        }
        match entry(slab, next) {
            Some(next_node) => next_node.prev = prev,
            None => self.tail = prev,
        }
    }

    /// Picks the entry SIEVE would evict, clearing visited bits on the way.
    /// Does not unlink it; the caller removes the entry.
    pub fn select(&mut self, slab: &mut [Option<Entry>]) -> Option<u32> {
        if self.tail == NIL {
            return None;
        }
        let mut cursor = if self.hand == NIL {
            self.tail
        } else {
            self.hand
        };
        // Two passes at most: the first clears every visited bit.
        let mut steps = 0usize;
        let limit = slab.len() * 2;
        loop {
            let node = entry(slab, cursor)?;
            if !node.visited() || steps > limit {
                self.hand = node.prev;
                return Some(cursor);
            }
            node.set_visited(false);
            cursor = if node.prev == NIL {
                self.tail
            } else {
                node.prev
            };
            steps += 1;
        }
    }
}
