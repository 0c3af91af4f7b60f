//! Conversation pins (contract §14): a conversation's identity hash → the key that served it
//! last, with the time of that use.
//!
//! The table is an exact LRU bounded at [`MAX_PINS`]: a hash map from the identity hash to a
//! node, the nodes chained most recent first in a vector (links are indices, so nothing is
//! allocated per pin once the table has grown). Every operation is O(1). Only 64-bit hashes
//! are stored, keyed per process ([`Conversations`]): identities can be user ids and never
//! enter the table or a log.
//!
//! A pin names its key by slot and by the key's ring order (a hash of the id): a slot emptied
//! by a delete, or reused by another key, no longer matches, so deleting a key drops its pins
//! lazily (the next request of the conversation re-pins). A pin unused for longer than the TTL
//! in force *at lookup* is not honoured and is dropped, so lowering `sticky_ttl_s` applies to
//! existing pins; the least recent pins past the TTL are also dropped a few per store, so stale
//! pins do not sit in memory until the bound pushes them out.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::store::records::Millis;

/// The most pins held (contract §14); the least recently used goes first.
pub const MAX_PINS: usize = 100_000;

/// Stale pins dropped from the old end per store.
const EXPIRE_BUDGET: usize = 4;

const NIL: u32 = u32::MAX;

/// One request's conversation: its identity hash, and whether the request may create or move a
/// pin (count_tokens only follows an existing one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversation {
    pub id: u64,
    pub pin: bool,
}

/// Turns identities into keyed 64-bit hashes (SipHash with this process's random keys), so
/// neither the identity nor a hash an outsider could steer into collisions is stored.
#[derive(Debug, Clone, Default)]
pub struct Conversations {
    keys: std::collections::hash_map::RandomState,
}

impl Conversations {
    /// The identity's hash; `None` for an empty identity (no identity).
    pub fn of(&self, identity: &str, pin: bool) -> Option<Conversation> {
        if identity.is_empty() {
            return None;
        }
        let mut h = self.keys.build_hasher();
        h.write(identity.as_bytes());
        Some(Conversation {
            id: h.finish(),
            pin,
        })
    }
}

/// What a pick did with a conversation's pin (the metric's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyResult {
    /// The pinned key served.
    Hit,
    /// No pin (or a stale one): the algorithm picked, the key was pinned.
    Miss,
    /// The pinned key could not serve this pick: the algorithm picked, the pin moved.
    Repin,
}

impl StickyResult {
    pub fn label(self) -> &'static str {
        match self {
            StickyResult::Hit => "hit",
            StickyResult::Miss => "miss",
            StickyResult::Repin => "repin",
        }
    }
}

/// The keys are already uniform keyed hashes: the map uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where a pin points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pin {
    pub slot: usize,
    /// The key's ring order (a hash of its id) when pinned.
    pub order: u64,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    id: u64,
    pin: Pin,
    at: Millis,
    prev: u32,
    next: u32,
}

/// The pin table.
#[derive(Debug)]
pub(super) struct Pins {
    map: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    cap: usize,
}

impl Default for Pins {
    fn default() -> Self {
        Pins::with_bound(MAX_PINS)
    }
}

impl Pins {
    pub fn with_bound(cap: usize) -> Self {
        Pins {
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            cap: cap.clamp(1, NIL as usize - 1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops every pin and gives the memory back (stickiness turned off).
    pub fn clear(&mut self) {
        *self = Pins::with_bound(self.cap);
    }

    /// The pin of `id` if it was used within `ttl_ms` of `now`; a stale pin is dropped.
    pub fn get(&mut self, id: u64, now: Millis, ttl_ms: Millis) -> Option<Pin> {
        let n = *self.map.get(&id)?;
        let node = self.nodes[n as usize];
        if now.saturating_sub(node.at) > ttl_ms {
            self.remove(n);
            return None;
        }
        Some(node.pin)
    }

    /// Pins `id` to `pin` as of `now` (most recently used), dropping stale pins from the old
    /// end and, at the bound, the least recently used one.
    pub fn set(&mut self, id: u64, pin: Pin, now: Millis, ttl_ms: Millis) {
        if let Some(&n) = self.map.get(&id) {
            let node = &mut self.nodes[n as usize];
            node.pin = pin;
            node.at = now;
            self.unlink(n);
            self.push_front(n);
            return;
        }
        self.expire(now, ttl_ms, EXPIRE_BUDGET);
        if self.map.len() >= self.cap && self.tail != NIL {
            self.remove(self.tail);
        }
        if self.map.is_empty() && self.map.capacity() == 0 {
            // The first pin reserves the table's whole bound at once, so no later store under
            // the pool's lock rehashes 100,000 entries (untouched pages cost no memory).
            self.map.reserve(self.cap);
            self.nodes.reserve_exact(self.cap);
        }
        let node = Node {
            id,
            pin,
            at: now,
            prev: NIL,
            next: NIL,
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.nodes[n as usize] = node;
                n
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.map.insert(id, n);
        self.push_front(n);
    }

    /// Drops up to `budget` pins unused for longer than `ttl_ms`, oldest first.
    pub fn expire(&mut self, now: Millis, ttl_ms: Millis, budget: usize) {
        for _ in 0..budget {
            if self.tail == NIL {
                return;
            }
            let node = self.nodes[self.tail as usize];
            if now.saturating_sub(node.at) <= ttl_ms {
                return;
            }
            self.remove(self.tail);
        }
    }

    fn remove(&mut self, n: u32) {
        self.unlink(n);
        let id = self.nodes[n as usize].id;
        self.map.remove(&id);
        self.free.push(n);
    }

    fn unlink(&mut self, n: u32) {
        let Node { prev, next, .. } = self.nodes[n as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            x => self.nodes[x as usize].prev = prev,
        }
        let node = &mut self.nodes[n as usize];
        node.prev = NIL;
        node.next = NIL;
    }

    fn push_front(&mut self, n: u32) {
        let old = self.head;
        {
            let node = &mut self.nodes[n as usize];
            node.prev = NIL;
            node.next = old;
        }
        match old {
            NIL => self.tail = n,
            h => self.nodes[h as usize].prev = n,
        }
        self.head = n;
    }

    /// The identity hashes from most to least recently used (tests).
    #[cfg(test)]
    fn order(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let mut n = self.head;
        let mut prev = NIL;
        while n != NIL {
            let node = self.nodes[n as usize];
            assert_eq!(node.prev, prev, "back link of {n}");
            out.push(node.id);
            prev = n;
            n = node.next;
        }
        assert_eq!(self.tail, prev);
        assert_eq!(out.len(), self.map.len());
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TTL: Millis = 3_600_000;

    fn pin(slot: usize) -> Pin {
        Pin {
            slot,
            order: slot as u64 * 7,
        }
    }

    #[test]
    fn a_pin_is_found_until_its_ttl_passes_then_dropped() {
        let mut p = Pins::default();
        assert_eq!(p.get(1, 0, TTL), None);
        p.set(1, pin(3), 1_000, TTL);
        assert_eq!(p.get(1, 1_000 + TTL, TTL), Some(pin(3)), "exactly the TTL");
        assert_eq!(p.get(1, 1_001 + TTL, TTL), None, "past it");
        assert_eq!(p.len(), 0, "a stale pin is dropped");
        // A lower TTL applies to a pin stored under a higher one.
        p.set(2, pin(4), 0, TTL);
        assert_eq!(p.get(2, 10_000, 5_000), None);
    }

    #[test]
    fn using_a_pin_again_moves_it_and_refreshes_its_time() {
        let mut p = Pins::default();
        p.set(1, pin(1), 0, TTL);
        p.set(2, pin(2), 0, TTL);
        assert_eq!(p.order(), [2, 1]);
        p.set(1, pin(5), TTL, TTL);
        assert_eq!(p.order(), [1, 2]);
        assert_eq!(
            p.get(1, 2 * TTL, TTL),
            Some(pin(5)),
            "repinned, time refreshed"
        );
        assert_eq!(p.get(2, 2 * TTL, TTL), None);
        assert_eq!(p.order(), [1]);
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_least_recently_used() {
        let mut p = Pins::with_bound(3);
        for id in 1..=3 {
            p.set(id, pin(id as usize), 0, TTL);
        }
        // Touch 1: 2 is now the least recently used.
        p.set(1, pin(1), 1, TTL);
        p.set(4, pin(4), 2, TTL);
        assert_eq!(p.len(), 3);
        assert_eq!(p.get(2, 2, TTL), None, "the least recently used went");
        assert_eq!(p.order(), [4, 1, 3]);
        p.set(5, pin(5), 3, TTL);
        assert_eq!(p.order(), [5, 4, 1]);
        // Freed nodes are reused: no growth past the bound.
        assert!(p.nodes.len() <= 3);
    }

    #[test]
    fn the_contract_bound_holds_at_100_000() {
        let mut p = Pins::default();
        for id in 0..(MAX_PINS as u64 + 500) {
            p.set(id, pin(0), id as Millis, TTL * 1_000);
        }
        assert_eq!(p.len(), MAX_PINS);
        assert_eq!(p.get(499, 0, TTL * 1_000), None);
        assert!(p.get(500, 0, TTL * 1_000).is_some());
        assert_eq!(p.nodes.len(), MAX_PINS);
    }

    #[test]
    fn storing_drops_stale_pins_from_the_old_end() {
        let mut p = Pins::default();
        for id in 0..10 {
            p.set(id, pin(0), 0, TTL);
        }
        p.set(100, pin(1), TTL + 1, TTL);
        assert_eq!(p.len(), 10 - EXPIRE_BUDGET + 1);
        p.expire(TTL + 1, TTL, usize::MAX);
        assert_eq!(p.order(), [100]);
        p.clear();
        assert_eq!(p.len(), 0);
        assert_eq!(p.get(100, TTL + 1, TTL), None);
    }

    #[test]
    fn identities_hash_per_process_and_empty_is_none() {
        let c = Conversations::default();
        assert_eq!(c.of("", true), None);
        let a = c.of("session-a", true).unwrap();
        assert_eq!(c.of("session-a", false).unwrap().id, a.id);
        assert!(!c.of("session-a", false).unwrap().pin);
        assert_ne!(c.of("session-b", true).unwrap().id, a.id);
    }
}
