//! `sse::Decoder` on arbitrary bytes: any split of the stream decodes to the same events, the
//! same clean-end verdict and the same stream-wide id/retry as one-shot decoding (also with
//! `dispatch_incomplete`), and every decoded event survives `encode` → decode unchanged.
#![no_main]

use droid2api::sse::{Decoder, Event, encode};
use libfuzzer_sys::fuzz_target;

/// Decodes `data` cut at `cuts` (sorted offsets).
fn decode(data: &[u8], cuts: &[usize], incomplete: bool) -> (Vec<Event>, bool, String, Option<u64>) {
    let mut d = Decoder::new().with_dispatch_incomplete(incomplete);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        d.feed(&data[start..cut], &mut out);
        start = cut;
    }
    let (id, retry) = (d.last_event_id().to_string(), d.retry());
    let clean = d.finish(&mut out);
    (out, clean, id, retry)
}

/// Split points derived from the input itself (an FNV hash driving xorshift), so libFuzzer's
/// mutations explore splits too while seed files stay plain SSE.
fn cuts(data: &[u8]) -> Vec<usize> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut cuts = Vec::new();
    let mut at = 0usize;
    while !data.is_empty() {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        at += 1 + (h % 17) as usize;
        if at >= data.len() {
            break;
        }
        cuts.push(at);
    }
    cuts
}

fuzz_target!(|data: &[u8]| {
    let every_byte: Vec<usize> = (1..data.len()).collect();
    for incomplete in [false, true] {
        let whole = decode(data, &[], incomplete);
        assert_eq!(whole, decode(data, &cuts(data), incomplete), "random split");
        assert_eq!(whole, decode(data, &every_byte, incomplete), "byte by byte");
        for ev in &whole.0 {
            let text = encode(ev.event.as_deref(), &ev.data);
            let (back, clean, _, _) = decode(text.as_bytes(), &[], false);
            assert!(clean, "encode ends on an event boundary");
            let want = Event {
                event: ev.event.clone(),
                data: ev.data.clone(),
                id: None,
                retry: None,
            };
            assert_eq!(back, vec![want], "encode round trip");
        }
    }
});
