//! The scrubber (`credentials::scrub`) at 10,000 pool keys: building the Aho-Corasick
//! automaton (done once after the key set changes) and scanning an upstream error body (done
//! on error paths only).
//!
//! - `scrub/build_10k`: [`SecretSet::build`] over 10,000 keys of 40 characters (plus the
//!   mask of each).
//! - `scrub/scan_2k_clean`: a 2 KiB error body that holds no secret (the common case).
//! - `scrub/scan_2k_one_key`: the same body echoing one of the keys (replaced by its mask).
//!
//! `cargo bench --bench scrub` measures; see BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use droid2api::credentials::scrub::SecretSet;
use droid2api::secret::Secret;

const KEYS: usize = 10_000;

fn keys() -> Vec<Secret> {
    (0..KEYS)
        .map(|i| {
            Secret::new(format!(
                "fk-{:016x}-{:020}",
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                i
            ))
        })
        .collect()
}

fn body(echo: Option<&str>) -> String {
    let mut s =
        String::from(r#"{"type":"error","error":{"type":"invalid_request_error","message":""#);
    while s.len() < 2000 {
        s.push_str("the request could not be processed because of an upstream condition; ");
    }
    if let Some(k) = echo {
        s.push_str("key: ");
        s.push_str(k);
    }
    s.push_str(r#""}}"#);
    s
}

fn bench_scrub(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("scrub");
    g.sample_size(10);
    g.bench_function("build_10k", |b| {
        b.iter(|| black_box(SecretSet::build(&keys)))
    });
    let set = SecretSet::build(&keys);
    assert_eq!(set.len(), KEYS);
    let clean = body(None);
    let echoed = body(Some(keys[7_777].expose()));
    assert!(matches!(set.scrub(&clean), std::borrow::Cow::Borrowed(_)));
    let out = set.scrub(&echoed);
    assert!(!out.contains(keys[7_777].expose()) && out.contains(&keys[7_777].masked()));
    g.sample_size(100);
    g.throughput(Throughput::Bytes(clean.len() as u64));
    g.bench_function("scan_2k_clean", |b| {
        b.iter(|| black_box(set.scrub(black_box(&clean))))
    });
    g.throughput(Throughput::Bytes(echoed.len() as u64));
    g.bench_function("scan_2k_one_key", |b| {
        b.iter(|| black_box(set.scrub(black_box(&echoed))))
    });
    g.finish();
}

criterion_group!(benches, bench_scrub);
criterion_main!(benches);
