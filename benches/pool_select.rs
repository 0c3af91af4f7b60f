//! Key selection at 10,000 keys, for every algorithm (target: well under 1 µs median per pick).
//!
//! `cargo bench --bench pool_select`

// Benchmark setup panics on purpose: a broken setup is a broken benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use droid2api::config::{ALGORITHMS, KeyPoolSettings};
use droid2api::credentials::pool::{Clock, KeyPool, PoolPick};
use droid2api::secret::Secret;
use droid2api::store::records::{KeyRecord, KeyStatus, Millis, PoolGroup};

#[derive(Debug)]
struct Fixed;
impl Clock for Fixed {
    fn now_ms(&self) -> Millis {
        1_800_000_000_000
    }
}

fn keys(n: usize) -> Vec<KeyRecord> {
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
            // One key in twenty cools: picks must skip them.
            cooldown_until: (i % 20 == 7).then_some(1_900_000_000_000),
            requests: (i * 37 % 1000) as u64,
            successes: (i * 37 % 1000) as u64,
            failures: 0,
            input_tokens: (i * 7919 % 1_000_000) as u64,
            output_tokens: (i * 104_729 % 100_000) as u64,
            last_test: None,
        })
        .collect()
}

fn select(c: &mut Criterion) {
    let groups = vec![PoolGroup {
        id: "free".into(),
        name: "Free".into(),
        priority: 1,
        description: String::new(),
        created_at: 0,
    }];
    let mut g = c.benchmark_group("pool_select_10k");
    for alg in ALGORITHMS {
        let settings = KeyPoolSettings {
            algorithm: alg.to_string(),
            ..KeyPoolSettings::default()
        };
        let pool = KeyPool::new(
            keys(10_000),
            groups.clone(),
            settings,
            None,
            Arc::new(Fixed),
        );
        g.bench_function(alg, |b| {
            b.iter(|| match pool.pick(&[]) {
                PoolPick::Key { id, .. } => id,
                other => panic!("{other:?}"),
            })
        });
    }
    g.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
