//! Failed-key throttling per client address (contract §9): `limit` failures within a sliding
//! `window` block the address until the oldest of them leaves the window.
//!
//! Each address keeps the times of its last `limit` failures (deciseconds since the table was
//! made, 4 bytes each), so "N failures within 60 s" is exact rather than a fixed-window
//! approximation. IPv6 addresses count per /64 (one subscriber's prefix), IPv4 per address.
//! Memory is bounded: at most `cap` addresses; when full, expired entries go first, then the
//! tenth of the table that failed least recently. A background sweep drops expired entries.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A table of failures per address.
#[derive(Debug)]
pub struct Throttle {
    limit: usize,
    /// The window in deciseconds.
    window: u64,
    cap: usize,
    base: Instant,
    /// Entries in the table (read without the lock: an empty table costs no lock).
    len: AtomicUsize,
    table: Mutex<HashMap<IpAddr, VecDeque<u32>>>,
}

/// The throttle key of an address: IPv6 by its /64.
pub fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Throttle {
    pub fn new(limit: usize, window: Duration, cap: usize) -> Throttle {
        Throttle {
            limit: limit.max(1),
            window: (window.as_millis() / 100).max(1) as u64,
            cap: cap.max(1),
            base: Instant::now(),
            len: AtomicUsize::new(0),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, VecDeque<u32>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deciseconds since the table was made.
    fn tick(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.base).as_millis() / 100) as u64
    }

    /// Drops the failures that left the window.
    fn expire(&self, times: &mut VecDeque<u32>, now: u64) {
        while times
            .front()
            .is_some_and(|t| u64::from(*t) + self.window <= now)
        {
            times.pop_front();
        }
    }

    /// Whole seconds (at least 1) until the address may try again, if it is blocked.
    fn blocked_for(&self, times: &VecDeque<u32>, now: u64) -> Option<u64> {
        if times.len() < self.limit {
            return None;
        }
        let oldest = u64::from(*times.get(times.len() - self.limit)?);
        let ds = (oldest + self.window).saturating_sub(now);
        Some(ds.div_ceil(10).max(1))
    }

    /// Seconds until `ip` may try again, when it is blocked now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = self.tick(now);
        let mut table = self.lock();
        let times = table.get_mut(&key_of(ip))?;
        self.expire(times, now);
        self.blocked_for(times, now)
    }

    /// Records a failure of `ip`; returns the seconds until it may try again when this failure
    /// blocked it.
    pub fn fail(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let key = key_of(ip);
        let now = self.tick(now);
        let mut table = self.lock();
        if !table.contains_key(&key) && table.len() >= self.cap {
            self.make_room(&mut table, now);
        }
        let times = table.entry(key).or_default();
        self.expire(times, now);
        times.push_back(u32::try_from(now).unwrap_or(u32::MAX));
        while times.len() > self.limit {
            times.pop_front();
        }
        let blocked = self.blocked_for(times, now);
        self.len.store(table.len(), Ordering::Release);
        blocked
    }

    /// Drops expired entries, then, if still full, the tenth that failed least recently.
    fn make_room(&self, table: &mut HashMap<IpAddr, VecDeque<u32>>, now: u64) {
        table.retain(|_, times| {
            self.expire(times, now);
            !times.is_empty()
        });
        if table.len() < self.cap {
            return;
        }
        let target = self.cap - self.cap.div_ceil(10);
        let mut last: Vec<(u32, IpAddr)> = table
            .iter()
            .map(|(ip, times)| (times.back().copied().unwrap_or(0), *ip))
            .collect();
        let drop_n = table.len() - target;
        if drop_n == 0 || drop_n > last.len() {
            return;
        }
        last.select_nth_unstable(drop_n - 1);
        for (_, ip) in &last[..drop_n] {
            table.remove(ip);
        }
    }

    /// Drops the addresses whose failures all left the window (a timer calls it).
    pub fn sweep(&self, now: Instant) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = self.tick(now);
        let mut table = self.lock();
        table.retain(|_, times| {
            self.expire(times, now);
            !times.is_empty()
        });
        let keep = table.len().saturating_mul(2);
        table.shrink_to(keep);
        self.len.store(table.len(), Ordering::Release);
    }

    /// Addresses in the table.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn n_failures_within_the_window_block_until_the_oldest_leaves_it() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(t.blocked(a, t0), None);
        assert_eq!(t.fail(a, t0), None);
        assert_eq!(t.fail(a, t0 + Duration::from_secs(10)), None);
        assert_eq!(t.fail(a, t0 + Duration::from_secs(20)), Some(40));
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(20)), Some(40));
        assert_eq!(t.blocked(a, t0 + Duration::from_millis(59_500)), Some(1));
        // Another address is not affected.
        assert_eq!(
            t.blocked(ip("10.0.0.2"), t0 + Duration::from_secs(20)),
            None
        );
        // The first failure leaves the window: one more attempt is allowed.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(t.blocked(a, t1), None);
        assert_eq!(
            t.fail(a, t1),
            Some(10),
            "blocked again until the 10 s failure leaves"
        );
        // Failures spread wider than the window never block.
        let b = ip("10.0.0.3");
        for i in 0..10 {
            assert_eq!(t.fail(b, t0 + Duration::from_secs(31 * i)), None, "{i}");
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_is_v4() {
        let t = Throttle::new(2, Duration::from_secs(60), 100);
        let now = Instant::now();
        assert_eq!(t.fail(ip("2001:db8:1:2::1"), now), None);
        assert_eq!(t.fail(ip("2001:db8:1:2:ffff::9"), now), Some(60));
        assert_eq!(t.blocked(ip("2001:db8:1:3::1"), now), None);
        assert_eq!(key_of(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn the_table_is_bounded_and_swept() {
        let t = Throttle::new(2, Duration::from_secs(60), 20);
        let t0 = Instant::now();
        for i in 0..20u8 {
            t.fail(
                IpAddr::from([10, 0, 0, i]),
                t0 + Duration::from_secs(u64::from(i)),
            );
        }
        assert_eq!(t.len(), 20);
        // Full: the tenth that failed least recently goes.
        t.fail(ip("10.0.1.1"), t0 + Duration::from_secs(30));
        assert_eq!(t.len(), 19);
        let table = t.lock();
        assert!(!table.contains_key(&ip("10.0.0.0")));
        assert!(!table.contains_key(&ip("10.0.0.1")));
        assert!(table.contains_key(&ip("10.0.0.2")));
        drop(table);
        // Expired entries go first.
        t.fail(ip("10.0.1.2"), t0 + Duration::from_secs(200));
        t.fail(ip("10.0.1.3"), t0 + Duration::from_secs(200));
        t.sweep(t0 + Duration::from_secs(230));
        assert_eq!(t.len(), 2);
        t.sweep(t0 + Duration::from_secs(300));
        assert!(t.is_empty());
    }
}
