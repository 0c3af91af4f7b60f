//! Key selection at 10,000 keys, for every algorithm (target: p99 ≤ 1 µs per pick), with 5 %,
//! 30 % and 90 % of the keys cooling.
//!
//! `cargo bench --bench pool_select`
//!
//! Besides criterion's means, the run starts with a latency distribution per case: 200,000
//! single picks timed one by one with `Instant` (the timer's own cost, ~20–30 ns, is included),
//! sorted, and printed as p50 / p99 / p99.9 / max; then the mass wake-up case: 9,000 cooldowns
//! ending at the same moment, the first pick after and the slowest of the next 200. Under
//! `cargo test` (no `--bench` argument) these reports run a few picks only, as a smoke test.
//!
//! Conversation-sticky picks (contract §14) at 100,000 pins: `cargo bench --bench pool_select --
//! sticky` runs only those (the latency report of hits, and of misses that pin a new
//! conversation and evict the least recently used one, then criterion's means).

// Benchmark setup panics on purpose: a broken setup is a broken benchmark; the latency report
// is printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use droid2api::config::{ALGORITHMS, KeyPoolSettings};
use droid2api::credentials::pool::{Clock, Conversation, KeyPool, PoolPick};
use droid2api::secret::Secret;
use droid2api::store::records::{KeyRecord, KeyStatus, Millis, PoolGroup};

const NOW: Millis = 1_800_000_000_000;
const KEYS: usize = 10_000;

#[derive(Debug)]
struct Fixed;
impl Clock for Fixed {
    fn now_ms(&self) -> Millis {
        NOW
    }
}

/// Whether key `i` cools, for a share of `percent` % spread evenly over the table (and so over
/// both tiers).
fn cools(i: usize, percent: usize) -> bool {
    (i * 37 + 11) % 100 < percent
}

/// A clock the mass wake-up case moves.
#[derive(Debug)]
struct Moving(AtomicI64);
impl Clock for Moving {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::Relaxed)
    }
}

fn keys(n: usize, cooling_percent: usize) -> Vec<KeyRecord> {
    (0..n)
        .map(|i| KeyRecord {
            id: format!("key_{i:06}"),
            secret: Secret::new(format!("fk-bench-key-{i:08}")),
            status: KeyStatus::Active,
            status_reason: None,
            status_changed_at: None,
            disabled_by: None,
            pool_group: if i % 10 == 0 {
                "free".into()
            } else {
                "default".into()
            },
            notes: String::new(),
            created_at: i as Millis,
            last_used_at: None,
            // Cooling keys cool for a long while: picks must get past them.
            cooldown_until: cools(i, cooling_percent).then_some(NOW + 3_600_000),
            requests: (i * 37 % 1000) as u64,
            successes: (i * 37 % 1000) as u64,
            failures: 0,
            input_tokens: (i * 7919 % 1_000_000) as u64,
            output_tokens: (i * 104_729 % 100_000) as u64,
            last_test: None,
        })
        .collect()
}

fn pool(alg: &str, cooling_percent: usize) -> KeyPool {
    pool_with_clock(alg, cooling_percent, Arc::new(Fixed))
}

fn pool_with_clock(alg: &str, cooling_percent: usize, clock: Arc<dyn Clock>) -> KeyPool {
    let groups = vec![PoolGroup {
        id: "free".into(),
        name: "Free".into(),
        priority: 1,
        description: String::new(),
        created_at: 0,
    }];
    let settings = KeyPoolSettings {
        algorithm: alg.to_string(),
        ..KeyPoolSettings::default()
    };
    KeyPool::new(keys(KEYS, cooling_percent), groups, settings, None, clock)
}

fn pick(pool: &KeyPool) -> String {
    match pool.pick(&[]) {
        PoolPick::Key { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

/// The cooling shares measured: the historical case (one key in twenty) and the two.
const SHARES: [usize; 3] = [5, 30, 90];

fn select(c: &mut Criterion) {
    for share in SHARES {
        let mut g = c.benchmark_group(format!("pool_select_10k_cooling_{share}pct"));
        for alg in ALGORITHMS {
            let pool = pool(alg, share);
            g.bench_function(alg, |b| b.iter(|| pick(&pool)));
        }
        g.finish();
    }
}

/// Per-pick latency distribution (see the module docs).
fn latency_report() {
    let full = std::env::args().any(|a| a == "--bench");
    let samples = if full { 200_000 } else { 100 };
    println!(
        "pool_select latency per pick, {KEYS} keys, {samples} picks per case (ns; Instant overhead included)"
    );
    println!(
        "{:<18} {:>8} {:>7} {:>7} {:>7} {:>9}",
        "algorithm", "cooling", "p50", "p99", "p99.9", "max"
    );
    for share in SHARES {
        for alg in ALGORITHMS {
            let pool = pool(alg, share);
            // Warm up (caches, the branch predictor, first allocations).
            for _ in 0..samples.min(20_000) {
                black_box(pick(&pool));
            }
            let mut ns: Vec<u64> = Vec::with_capacity(samples);
            for _ in 0..samples {
                let t = Instant::now();
                black_box(pick(&pool));
                ns.push(t.elapsed().as_nanos() as u64);
            }
            ns.sort_unstable();
            let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
            println!(
                "{:<18} {:>7}% {:>7} {:>7} {:>7} {:>9}",
                alg,
                share,
                q(0.50),
                q(0.99),
                q(0.999),
                ns[ns.len() - 1]
            );
        }
    }
}

/// 9,000 cooldowns end at the same moment: the first pick after, and the slowest of the next
/// 200 (the worst over 20 rounds). Each pick wakes a bounded number of keys per tier, so no
/// single pick re-inserts all 9,000 under the lock.
fn mass_wake_up_report() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 20 } else { 1 };
    println!("pool_select mass wake-up: 9,000 of {KEYS} cooldowns end at once (ns)");
    println!(
        "{:<18} {:>10} {:>16}",
        "algorithm", "first pick", "max of 200 picks"
    );
    for alg in ALGORITHMS {
        let (mut first, mut worst) = (0u64, 0u64);
        for _ in 0..rounds {
            let clock = Arc::new(Moving(AtomicI64::new(NOW)));
            let pool = pool_with_clock(alg, 90, clock.clone());
            for _ in 0..1_000 {
                black_box(pick(&pool));
            }
            clock.0.store(NOW + 3_600_001, Ordering::Relaxed);
            let mut times = Vec::with_capacity(200);
            for _ in 0..200 {
                let t = Instant::now();
                black_box(pick(&pool));
                times.push(t.elapsed().as_nanos() as u64);
            }
            first = first.max(times[0]);
            worst = worst.max(times.iter().copied().max().unwrap_or(0));
        }
        println!("{alg:<18} {first:>10} {worst:>16}");
    }
}

/// Pins the table holds (contract §14's bound).
const PINS: usize = 100_000;

fn pick_for(pool: &KeyPool, c: Conversation) -> String {
    match pool.pick_for(&[], Some(c)) {
        PoolPick::Key { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

/// A pool of [`KEYS`] keys (5 % cooling) whose pin table is full: `PINS` conversations, each
/// picked once. Returns the pool and those conversations.
fn sticky_pool(alg: &str) -> (KeyPool, Vec<Conversation>) {
    let pool = pool(alg, 5);
    let convs: Vec<Conversation> = (0..PINS)
        .map(|i| pool.conversation(&format!("session_{i:08}"), true).unwrap())
        .collect();
    for c in &convs {
        black_box(pick_for(&pool, *c));
    }
    assert_eq!(pool.sticky_pins(), PINS);
    (pool, convs)
}

/// Per-pick latency with stickiness on and the pin table full: hits (a pinned conversation,
/// in a scattered order) and misses (a new conversation: the pick is pinned and the least
/// recently used pin evicted).
fn sticky_report() {
    let full = std::env::args().any(|a| a == "--bench");
    let samples = if full { 200_000 } else { 100 };
    println!(
        "pool_select sticky picks, {KEYS} keys, {PINS} pins, {samples} picks per case (ns; Instant overhead included)"
    );
    println!(
        "{:<18} {:>6} {:>7} {:>7} {:>7} {:>9}",
        "algorithm", "case", "p50", "p99", "p99.9", "max"
    );
    let algs: &[&str] = if full { &ALGORITHMS } else { &ALGORITHMS[..1] };
    for alg in algs {
        let (pool, convs) = sticky_pool(alg);
        let mut rng = fastrand::Rng::with_seed(7);
        let hits: Vec<Conversation> = (0..samples)
            .map(|_| convs[rng.usize(..convs.len())])
            .collect();
        let fresh: Vec<Conversation> = (0..samples)
            .map(|i| pool.conversation(&format!("new_{i:08}"), true).unwrap())
            .collect();
        for (case, list) in [("hit", &hits), ("miss", &fresh)] {
            let mut ns: Vec<u64> = Vec::with_capacity(samples);
            for c in list {
                let t = Instant::now();
                black_box(pick_for(&pool, *c));
                ns.push(t.elapsed().as_nanos() as u64);
            }
            ns.sort_unstable();
            let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
            println!(
                "{:<18} {:>6} {:>7} {:>7} {:>7} {:>9}",
                alg,
                case,
                q(0.50),
                q(0.99),
                q(0.999),
                ns[ns.len() - 1]
            );
        }
        assert_eq!(pool.sticky_pins(), PINS, "the bound holds");
    }
}

fn sticky(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_select_sticky_100k_pins");
    for alg in ["round-robin", "least-used"] {
        let (pool, convs) = sticky_pool(alg);
        let mut i = 0usize;
        g.bench_function(format!("{alg}/hit"), |b| {
            b.iter(|| {
                i = (i + 7919) % convs.len();
                pick_for(&pool, convs[i])
            })
        });
        let mut n = 0u64;
        g.bench_function(format!("{alg}/miss"), |b| {
            b.iter(|| {
                n += 1;
                let c = pool.conversation(&format!("m{n}"), true).unwrap();
                pick_for(&pool, c)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, select, sticky);

fn main() {
    let only_sticky = std::env::args().skip(1).any(|a| a == "sticky");
    if !only_sticky {
        latency_report();
        mass_wake_up_report();
    }
    sticky_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
