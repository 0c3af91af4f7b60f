//! The cache of the reasoning round trip (`translation.md` §4.4): the reasoning and function-call
//! items of a GPT turn that ended with tool calls, kept so that the next request of a Chat
//! client (which never echoes reasoning items) can send them back.
//!
//! In memory, per instance, bounded by entries and bytes (least recently used out first) and by
//! age (a TTL from insertion). One entry is one turn; it is found by any of its `call_id`s (a
//! turn with parallel calls has several keys, all leading to the same shared value). The lock is
//! held for one map operation, never across an await. With several instances a turn that lands
//! on another instance simply finds nothing: the model reasons again (quality, not an error).
//!
//! The values are opaque here (generic), and nothing in this module logs them: the encrypted
//! content never reaches a log line.
//!
//! It depends on nothing (the value type is a parameter), so it sits in the bottom layer beside
//! `config` and `store`, not in `proxy`: the app (`App`), which owns it for the life of the
//! process, is built below the proxy layer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The bounds of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Turns kept at most.
    pub max_entries: usize,
    /// Bytes (as the values report them, plus their keys) kept at most.
    pub max_bytes: usize,
    /// Age after which a turn is no longer handed out.
    pub ttl: Duration,
}

impl Default for Limits {
    /// 10,000 turns, 64 MiB, one hour.
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(3600),
        }
    }
}

struct Entry<T> {
    value: Arc<T>,
    keys: Vec<String>,
    bytes: usize,
    expires: Instant,
    /// Position in the use order (`Inner::lru`).
    tick: u64,
}

struct Inner<T> {
    entries: HashMap<u64, Entry<T>>,
    by_key: HashMap<String, u64>,
    /// Use order: tick → entry id, least recently used first.
    lru: BTreeMap<u64, u64>,
    bytes: usize,
    next_id: u64,
    next_tick: u64,
}

impl<T> Inner<T> {
    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            self.lru.remove(&e.tick);
            self.bytes -= e.bytes;
            for k in &e.keys {
                if self.by_key.get(k) == Some(&id) {
                    self.by_key.remove(k);
                }
            }
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }
}

/// A bounded LRU + TTL cache of shared values found by any of several keys.
pub struct ReasoningCache<T> {
    limits: Limits,
    inner: Mutex<Inner<T>>,
}

impl<T> std::fmt::Debug for ReasoningCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sizes only: the values are never printed.
        let inner = self.lock();
        f.debug_struct("ReasoningCache")
            .field("limits", &self.limits)
            .field("entries", &inner.entries.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

impl<T> ReasoningCache<T> {
    pub fn new(limits: Limits) -> Self {
        ReasoningCache {
            limits,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                by_key: HashMap::new(),
                lru: BTreeMap::new(),
                bytes: 0,
                next_id: 0,
                next_tick: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // The maps are consistent after every operation; a panic elsewhere cannot break them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `value` under every key of `keys` (an entry any of them named before is dropped
    /// whole), then evicts the least recently used entries until the bounds hold. A value larger
    /// than the byte bound on its own is not kept.
    pub fn insert(&self, keys: &[String], value: Arc<T>, bytes: usize, now: Instant) {
        let bytes = bytes.saturating_add(keys.iter().map(String::len).sum::<usize>());
        if keys.is_empty() || self.limits.max_entries == 0 || bytes > self.limits.max_bytes {
            return;
        }
        let mut inner = self.lock();
        for k in keys {
            if let Some(&old) = inner.by_key.get(k) {
                inner.remove(old);
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let tick = inner.tick();
        inner.lru.insert(tick, id);
        for k in keys {
            inner.by_key.insert(k.clone(), id);
        }
        inner.bytes += bytes;
        inner.entries.insert(
            id,
            Entry {
                value,
                keys: keys.to_vec(),
                bytes,
                expires: now + self.limits.ttl,
                tick,
            },
        );
        while inner.entries.len() > self.limits.max_entries || inner.bytes > self.limits.max_bytes {
            let Some((_, oldest)) = inner.lru.pop_first() else {
                break;
            };
            inner.remove(oldest);
        }
    }

    /// The value kept under `key`, unless it expired (then it is dropped); marks it used.
    pub fn get(&self, key: &str, now: Instant) -> Option<Arc<T>> {
        let mut inner = self.lock();
        let id = *inner.by_key.get(key)?;
        let (expired, old_tick) = match inner.entries.get(&id) {
            Some(e) => (e.expires <= now, e.tick),
            None => return None,
        };
        if expired {
            inner.remove(id);
            return None;
        }
        let tick = inner.tick();
        inner.lru.remove(&old_tick);
        inner.lru.insert(tick, id);
        let e = inner.entries.get_mut(&id)?;
        e.tick = tick;
        Some(Arc::clone(&e.value))
    }

    /// Drops every entry any of `keys` names (all of its keys go with it).
    pub fn remove(&self, keys: &[String]) {
        let mut inner = self.lock();
        for k in keys {
            if let Some(&id) = inner.by_key.get(k) {
                inner.remove(id);
            }
        }
    }

    /// Entries kept (expired ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes kept, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    fn cache(max_entries: usize, max_bytes: usize) -> ReasoningCache<String> {
        ReasoningCache::new(Limits {
            max_entries,
            max_bytes,
            ttl: Duration::from_secs(60),
        })
    }

    #[test]
    fn several_keys_share_one_entry() {
        let c = cache(10, 1000);
        let now = Instant::now();
        c.insert(
            &keys(&["call_a", "call_b"]),
            Arc::new("turn".into()),
            10,
            now,
        );
        let a = c.get("call_a", now).unwrap();
        let b = c.get("call_b", now).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 10 + 12);
        assert!(c.get("call_c", now).is_none());
        // Dropping by one key drops the entry for every key.
        c.remove(&keys(&["call_b"]));
        assert!(c.get("call_a", now).is_none());
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_least_recently_used_entry_goes_first_by_count() {
        let c = cache(2, 1000);
        let now = Instant::now();
        c.insert(&keys(&["a"]), Arc::new("A".into()), 1, now);
        c.insert(&keys(&["b"]), Arc::new("B".into()), 1, now);
        // Using `a` makes `b` the least recently used.
        assert!(c.get("a", now).is_some());
        c.insert(&keys(&["c"]), Arc::new("C".into()), 1, now);
        assert_eq!(c.len(), 2);
        assert!(c.get("b", now).is_none());
        assert!(c.get("a", now).is_some());
        assert!(c.get("c", now).is_some());
    }

    #[test]
    fn the_byte_bound_evicts_and_refuses_oversized_values() {
        let c = cache(100, 100);
        let now = Instant::now();
        c.insert(&keys(&["a"]), Arc::new("A".into()), 39, now); // 40 with its key
        c.insert(&keys(&["b"]), Arc::new("B".into()), 39, now);
        assert_eq!(c.bytes(), 80);
        c.insert(&keys(&["c"]), Arc::new("C".into()), 39, now);
        assert_eq!(c.bytes(), 80);
        assert!(c.get("a", now).is_none());
        assert!(c.get("b", now).is_some() && c.get("c", now).is_some());
        // Larger than the whole bound: not kept, nothing evicted for it.
        c.insert(&keys(&["d"]), Arc::new("D".into()), 100, now);
        assert!(c.get("d", now).is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = cache(10, 1000);
        let t0 = Instant::now();
        c.insert(&keys(&["a", "b"]), Arc::new("A".into()), 1, t0);
        assert!(c.get("a", t0 + Duration::from_secs(59)).is_some());
        // Use does not extend the life of a turn.
        assert!(c.get("b", t0 + Duration::from_secs(60)).is_none());
        assert!(c.get("a", t0 + Duration::from_secs(1)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn a_key_stored_again_replaces_its_old_entry_whole() {
        let c = cache(10, 1000);
        let now = Instant::now();
        c.insert(&keys(&["a", "b"]), Arc::new("old".into()), 1, now);
        c.insert(&keys(&["b", "c"]), Arc::new("new".into()), 1, now);
        assert!(c.get("a", now).is_none());
        assert_eq!(c.get("b", now).unwrap().as_str(), "new");
        assert_eq!(c.get("c", now).unwrap().as_str(), "new");
        assert_eq!(c.len(), 1);
        // No keys, no entry.
        c.insert(&[], Arc::new("x".into()), 1, now);
        assert_eq!(c.len(), 1);
    }
}
