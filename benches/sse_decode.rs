//! Pass-through cost: what the proxy spends looking at upstream bytes it forwards unchanged.
//!
//! - `sse_tap/anthropic_64_deltas`: a fresh [`SseTap`] (decoder + usage sniffer, as on the
//!   `/v1/messages` pass-through route) fed a 64-delta Anthropic stream in 40-byte reads.
//! - `decoder/single_line_1mib/*`: a bare [`Decoder`] on one event whose single `data:` line is
//!   1 MiB, fed whole, in 16 KiB reads and in 40-byte reads (the decoder copies only the
//!   unterminated tail of each read, so the cost should stay linear however fine the split).
//!
//! Throughput is in upstream bytes. See BENCHMARKS.md.
//!
//! `cargo test --all-targets` runs each benchmark once in criterion's test mode (a smoke test);
//! `cargo bench --bench sse_decode` measures.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use droid2api::sse::{Decoder, Event};
use droid2api::usage::{SseTap, WireFormat};
use serde_json::json;

mod common;
use common::{DELTAS, FRAGMENTS, PIECE, anthropic_stream};

/// Size of the single-line event's `data` payload.
const MIB: usize = 1 << 20;

/// `data: {"type":"blob","text":"…"}` with a 1 MiB line: mixed ASCII and CJK, so the UTF-8
/// check on the completed line has real work, and 40-byte reads split characters.
fn one_mib_event() -> Vec<u8> {
    let mut text = String::with_capacity(MIB);
    let mut i = 0;
    while text.len() < MIB - 64 {
        text.push_str(FRAGMENTS[i % FRAGMENTS.len()].trim_start_matches('\n'));
        i += 1;
    }
    let data = json!({"type": "blob", "text": text}).to_string();
    format!("event: blob\ndata: {data}\n\n").into_bytes()
}

fn tap(bytes: &[u8]) -> SseTap {
    let mut tap = SseTap::new(WireFormat::Anthropic);
    for piece in bytes.chunks(PIECE) {
        tap.feed(piece);
    }
    tap.finish();
    tap
}

fn decode(bytes: &[u8], piece: usize, events: &mut Vec<Event>) -> bool {
    events.clear();
    let mut decoder = Decoder::new();
    for p in bytes.chunks(piece) {
        decoder.feed(p, events);
    }
    decoder.finish(events)
}

fn bench_sse(c: &mut Criterion) {
    let anthropic = anthropic_stream();
    let checked = tap(&anthropic);
    assert_eq!(checked.ended_cleanly(), Some(true));
    assert!(checked.sniffer().completed());
    assert_eq!(checked.sniffer().usage().output_tokens, 96);
    assert_eq!(checked.sniffer().usage().cache_read_tokens, 1920);

    let mut group = c.benchmark_group("sse_tap");
    group.throughput(Throughput::ElementsAndBytes {
        elements: DELTAS as u64,
        bytes: anthropic.len() as u64,
    });
    group.bench_function("anthropic_64_deltas", |b| {
        b.iter(|| black_box(tap(black_box(&anthropic))));
    });
    group.finish();

    let big = one_mib_event();
    let mut events = Vec::new();
    let mut group = c.benchmark_group("decoder/single_line_1mib");
    group.throughput(Throughput::Bytes(big.len() as u64));
    for (name, piece) in [
        ("whole", big.len()),
        ("16k_reads", 16 * 1024),
        ("40b_reads", 40),
    ] {
        assert!(decode(&big, piece, &mut events), "{name}: clean end");
        assert_eq!(events.len(), 1, "{name}: one event");
        assert!(events[0].data.len() > MIB - 64, "{name}: data length");
        group.bench_function(name, |b| {
            b.iter(|| black_box(decode(black_box(&big), piece, &mut events)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_sse);
criterion_main!(benches);
