//! Server-sent events: encoding, awkward splitting and the streaming response body.
//!
//! A real upstream's SSE bytes reach the gateway in whatever pieces TCP happens to deliver: a
//! read can end in the middle of a line, in the middle of a multi-byte UTF-8 character, or
//! between the `\r` and `\n` of a CRLF. The mock reproduces that deliberately, so the gateway's
//! SSE decoder is exercised on its hardest inputs in every streaming test:
//!
//! 1. the whole transcript is encoded to bytes ([`encode_events`]),
//! 2. cut into pieces by the pure, seeded [`split_awkwardly`],
//! 3. each piece is written as its own body chunk with a short sleep in between, so the pieces
//!    arrive as separate reads on the client side.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::Shared;

/// Default upper bound (inclusive) on the size of one awkward piece, in bytes.
pub const DEFAULT_MAX_PIECE: usize = 40;

/// One SSE event of a scripted (or generated) stream.
///
/// `event: None` writes only `data:` lines (the OpenAI Chat Completions style). A `data` string
/// containing newlines is written as several `data:` lines, as the SSE format requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseEventSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default)]
    pub data: String,
}

impl SseEventSpec {
    /// An event with an `event:` line and a JSON payload (compact encoding).
    pub fn named(event: impl Into<String>, data: &Value) -> Self {
        Self {
            event: Some(event.into()),
            data: data.to_string(),
        }
    }

    /// A `data:`-only event with a JSON payload.
    pub fn data_json(data: &Value) -> Self {
        Self {
            event: None,
            data: data.to_string(),
        }
    }

    /// A `data:`-only event with a raw string payload (e.g. `[DONE]`).
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            event: None,
            data: data.into(),
        }
    }
}

/// Encodes one event: optional `event:` line, one `data:` line per line of `data`, blank line.
pub fn encode_event(ev: &SseEventSpec, crlf: bool) -> Vec<u8> {
    let eol: &str = if crlf { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(ev.data.len() + 32);
    if let Some(name) = &ev.event {
        out.push_str("event: ");
        out.push_str(name);
        out.push_str(eol);
    }
    // `str::lines` also strips a trailing `\r`, so CRLF inside data does not leak through.
    let mut any = false;
    for line in ev.data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push_str(eol);
        any = true;
    }
    if !any {
        out.push_str("data: ");
        out.push_str(eol);
    }
    out.push_str(eol);
    out.into_bytes()
}

/// Encodes a whole transcript (the exact bytes a client must receive, before any splitting).
pub fn encode_events(events: &[SseEventSpec], crlf: bool) -> Vec<u8> {
    events.iter().flat_map(|e| encode_event(e, crlf)).collect()
}

/// [`split_awkwardly_with`] using [`DEFAULT_MAX_PIECE`].
pub fn split_awkwardly(bytes: &[u8], seed: u64) -> Vec<Bytes> {
    split_awkwardly_with(bytes, seed, DEFAULT_MAX_PIECE)
}

/// Cuts `bytes` into pieces of `1..=max_piece` bytes at pseudo-random offsets (deterministic for
/// a given `seed`). The pieces always concatenate back to the input.
///
/// Plain random offsets already land mid-line most of the time; on top of that the cuts are
/// biased towards the *awkward* positions a decoder is most likely to get wrong:
/// * inside a multi-byte UTF-8 character (before a continuation byte) — the first such character
///   within reach is always cut, so any input with a multi-byte character gets at least one;
/// * between the `\r` and the `\n` of a CRLF pair.
pub fn split_awkwardly_with(bytes: &[u8], seed: u64, max_piece: usize) -> Vec<Bytes> {
    let max_piece = max_piece.max(1);
    let mut rng = fastrand::Rng::with_seed(seed);
    let src = Bytes::copy_from_slice(bytes);
    let len = src.len();
    let mut pieces = Vec::with_capacity(len / max_piece.div_ceil(2) + 1);
    let mut pos = 0;
    let mut cut_inside_char = false;
    let mut awkward = Vec::new();
    while pos < len {
        let reach = (pos + max_piece).min(len);
        // Candidate awkward cut positions `c` (piece = pos..c) with pos < c <= reach, c < len.
        awkward.clear();
        let mut first_mid_char = None;
        for c in (pos + 1)..=reach.min(len - 1) {
            let b = bytes[c];
            if b & 0xC0 == 0x80 {
                awkward.push(c);
                first_mid_char.get_or_insert(c);
            } else if b == b'\n' && bytes[c - 1] == b'\r' {
                awkward.push(c);
            }
        }
        let must_cut_char = first_mid_char.is_some() && !cut_inside_char;
        if reach == len && !must_cut_char && rng.u8(..) < 64 {
            // Sometimes just take the rest.
            pieces.push(src.slice(pos..len));
            break;
        }
        let end = match first_mid_char {
            Some(c) if !cut_inside_char => c,
            _ if !awkward.is_empty() && rng.u8(..) < 96 => awkward[rng.usize(..awkward.len())],
            _ => rng.usize((pos + 1)..=reach),
        };
        if end < len && bytes[end] & 0xC0 == 0x80 {
            cut_inside_char = true;
        }
        pieces.push(src.slice(pos..end));
        pos = end;
    }
    pieces
}

/// How a streamed body ends once its last piece has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// End the body normally (final chunk).
    Close,
    /// Fail the body: hyper aborts the connection, the client sees a broken transfer.
    Abort,
    /// Keep the connection open and write nothing more (until the client gives up or the mock
    /// shuts down).
    Hang,
}

/// The pieces of one streamed body, each with the pause to take before writing it.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub pieces: VecDeque<(Duration, Bytes)>,
    pub end: StreamEnd,
}

/// Counts a body stream as active while it exists and as cancelled if it is dropped before it
/// reached its end (i.e. hyper dropped it because the client closed the connection).
pub(crate) struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared.active_streams.fetch_add(1, Ordering::SeqCst);
        Self {
            shared,
            finished: false,
        }
    }
}

impl StreamGuard {
    /// The body reached its end (or the mock shut it down): not a cancellation.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.active_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Turns a plan into a body stream. The active-stream count goes up immediately.
pub(crate) fn body_stream(
    shared: Arc<Shared>,
    plan: StreamPlan,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct St {
        guard: StreamGuard,
        plan: StreamPlan,
        done: bool,
    }
    let st = St {
        guard: StreamGuard::new(shared),
        plan,
        done: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some((pause, piece)) = st.plan.pieces.pop_front() {
            if !pause.is_zero() {
                let shared = st.guard.shared.clone();
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shared.shutdown_signalled() => {
                        st.guard.finish();
                        return None;
                    }
                }
            }
            return Some((Ok(piece), st));
        }
        match st.plan.end {
            StreamEnd::Close => {
                st.guard.finish();
                None
            }
            StreamEnd::Abort => {
                // Return Pending once first so hyper flushes the pieces already written;
                // an error straight after the last piece would discard it.
                tokio::time::sleep(Duration::from_millis(5)).await;
                st.guard.finish();
                st.done = true;
                let err = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock: stream aborted on purpose",
                );
                Some((Err(err), st))
            }
            StreamEnd::Hang => {
                let shared = st.guard.shared.clone();
                shared.shutdown_signalled().await;
                st.guard.finish();
                None
            }
        }
    })
}

/// Index (into `bytes`) of the middle of the last event of an encoded transcript: the cut point
/// for a truncated stream. The last event starts after the second-to-last blank line.
pub(crate) fn truncation_point(events: &[SseEventSpec], crlf: bool) -> usize {
    let Some((last, rest)) = events.split_last() else {
        return 0;
    };
    let before: usize = rest.iter().map(|e| encode_event(e, crlf).len()).sum();
    // An encoded event is at least 8 bytes ("data: \n\n"), so the middle is strictly inside it.
    before + encode_event(last, crlf).len() / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MOCK_TEXT;
    use serde_json::json;

    fn transcript(crlf: bool) -> Vec<u8> {
        let events = vec![
            SseEventSpec::named("message_start", &json!({"type": "message_start"})),
            SseEventSpec::named(
                "content_block_delta",
                &json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": MOCK_TEXT}}),
            ),
            SseEventSpec::named("message_stop", &json!({"type": "message_stop"})),
        ];
        encode_events(&events, crlf)
    }

    fn cut_positions(pieces: &[Bytes]) -> Vec<usize> {
        let mut acc = 0;
        let mut cuts = Vec::new();
        for p in &pieces[..pieces.len().saturating_sub(1)] {
            acc += p.len();
            cuts.push(acc);
        }
        cuts
    }

    #[test]
    fn pieces_concatenate_back_and_respect_bounds() {
        let input = transcript(false);
        for seed in 0..300 {
            for max in [1, 2, 7, DEFAULT_MAX_PIECE, 1000] {
                let pieces = split_awkwardly_with(&input, seed, max);
                let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(joined, input, "seed {seed} max {max}");
                assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= max));
            }
        }
        assert!(split_awkwardly(b"", 1).is_empty());
        assert_eq!(split_awkwardly(b"x", 1), vec![Bytes::from_static(b"x")]);
    }

    #[test]
    fn cuts_fall_inside_multibyte_chars_mid_line_and_inside_crlf() {
        let input = transcript(false);
        let crlf_input = transcript(true);
        let mut crlf_splits = 0;
        for seed in 0..200 {
            let pieces = split_awkwardly(&input, seed);
            let cuts = cut_positions(&pieces);
            assert!(
                cuts.iter().any(|&c| input[c] & 0xC0 == 0x80),
                "seed {seed}: no cut inside a multi-byte character"
            );
            assert!(
                cuts.iter().any(|&c| input[c - 1] != b'\n'),
                "seed {seed}: no mid-line cut"
            );
            let pieces = split_awkwardly(&crlf_input, seed);
            crlf_splits += cut_positions(&pieces)
                .iter()
                .filter(|&&c| crlf_input[c - 1] == b'\r' && crlf_input[c] == b'\n')
                .count();
        }
        assert!(crlf_splits > 50, "only {crlf_splits} CRLF splits");
        // Even a lone character at the very end gets cut.
        for seed in 0..50 {
            let input = "data: 🌍".as_bytes();
            let cuts = cut_positions(&split_awkwardly(input, seed));
            assert!(cuts.iter().any(|&c| input[c] & 0xC0 == 0x80), "seed {seed}");
        }
    }

    #[test]
    fn split_is_deterministic_per_seed() {
        let input = transcript(true);
        assert_eq!(split_awkwardly(&input, 42), split_awkwardly(&input, 42));
        assert_ne!(split_awkwardly(&input, 42), split_awkwardly(&input, 43));
    }

    #[test]
    fn encoding_handles_multiline_data_and_crlf() {
        let ev = SseEventSpec {
            event: Some("x".into()),
            data: "a\nb".into(),
        };
        assert_eq!(encode_event(&ev, false), b"event: x\ndata: a\ndata: b\n\n");
        assert_eq!(
            encode_event(&SseEventSpec::data("[DONE]"), true),
            b"data: [DONE]\r\n\r\n"
        );
        let events = vec![SseEventSpec::data("one"), SseEventSpec::data("two")];
        let cut = truncation_point(&events, false);
        // "data: one\n\n" is 11 bytes; the last event is "data: two\n\n" (11 bytes).
        assert_eq!(cut, 11 + 5);
    }
}
