//! Golden transcripts: recorded-style Anthropic SSE (`tests/fixtures/anthropic/*.sse`) through
//! `sse::Decoder` and `AnthropicToChat`, compared with the exact client SSE text in
//! `tests/snapshots/golden_anthropic__<case>.snap`. The same bytes split anywhere give the same
//! output (translation.md §7 rows 10–11).
//!
//! Non-streaming clients are served from the same streams, assembled by
//! `translate::aggregate`: the assembled body must be byte for byte the non-streaming reply
//! Anthropic gives for the same content (`tests/fixtures/anthropic/<case>.json`, which the
//! gateway relayed unchanged before), and the chat reply built from it must be the chat reply
//! built from that body (`golden_anthropic__<case>_whole_chat.snap`), usage included.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use droid2api::sse::{Decoder, Event};
use droid2api::translate::StreamFailure;
use droid2api::translate::aggregate::{
    AggregateError, Aggregated, Assembler, DEFAULT_CAP, StreamFormat,
};
use droid2api::translate::anthropic_chat::{AnthropicToChat, anthropic_to_chat_response};
use droid2api::translate::chat::ChatChunks;
use droid2api::usage::{self, WireFormat};
use proptest::prelude::*;
use serde_json::{Value, json};

/// (fixture, include_usage)
const CASES: [(&str, bool); 9] = [
    ("plain_text", false),
    ("chinese_emoji", false),
    ("text_parallel_tools", false),
    ("tool_no_args", false),
    ("thinking_tool", true),
    ("cache_usage", true),
    ("mid_stream_error", false),
    ("truncated", false),
    ("max_tokens", false),
];

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "anthropic",
        &format!("{name}.sse"),
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn translator(include_usage: bool) -> AnthropicToChat {
    AnthropicToChat::new(ChatChunks {
        id: "chatcmpl-test".into(),
        created: 1_764_158_400,
        model: "claude-client-name".into(),
        include_usage,
    })
}

/// Feeds the pieces through a decoder and the translator, as the proxy does.
fn translate<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    include_usage: bool,
) -> (String, AnthropicToChat) {
    let mut decoder = Decoder::new();
    let mut t = translator(include_usage);
    let mut out = String::new();
    let mut events: Vec<Event> = Vec::new();
    for piece in pieces {
        decoder.feed(piece, &mut events);
        for ev in events.drain(..) {
            t.on_event(&ev, &mut out);
        }
    }
    decoder.finish(&mut events);
    for ev in events.drain(..) {
        t.on_event(&ev, &mut out);
    }
    t.finish(&mut out);
    (out, t)
}

fn whole(name: &str, include_usage: bool) -> (String, AnthropicToChat) {
    let bytes = fixture(name);
    translate([bytes.as_slice()], include_usage)
}

fn golden(name: &str, include_usage: bool) {
    let (out, _) = whole(name, include_usage);
    insta::assert_snapshot!(name, out);
}

#[test]
fn plain_text() {
    golden("plain_text", false);
}

#[test]
fn chinese_emoji() {
    golden("chinese_emoji", false);
}

#[test]
fn text_parallel_tools() {
    golden("text_parallel_tools", false);
}

#[test]
fn tool_no_args() {
    golden("tool_no_args", false);
}

#[test]
fn thinking_tool() {
    golden("thinking_tool", true);
}

#[test]
fn cache_usage() {
    golden("cache_usage", true);
}

#[test]
fn mid_stream_error() {
    golden("mid_stream_error", false);
}

#[test]
fn truncated() {
    golden("truncated", false);
}

#[test]
fn max_tokens() {
    golden("max_tokens", false);
}

/// Every frame is one `data:` line; chunks keep id/created/model/object (G4) and
/// `choices[0].index` 0.
#[test]
fn every_output_frame_is_well_formed() {
    for (name, include_usage) in CASES {
        let (out, _) = whole(name, include_usage);
        assert!(out.ends_with("\n\n"), "{name}");
        for frame in out.split_terminator("\n\n") {
            let data = frame.strip_prefix("data: ").expect("data line");
            assert!(!data.contains('\n'), "{name}: {frame}");
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).expect("JSON");
            if v.get("error").is_some() {
                continue;
            }
            assert_eq!(v["id"], "chatcmpl-test", "{name}");
            assert_eq!(v["object"], "chat.completion.chunk", "{name}");
            assert_eq!(v["created"], 1_764_158_400, "{name}");
            assert_eq!(v["model"], "claude-client-name", "{name}");
            if let Some(choice) = v["choices"].get(0) {
                assert_eq!(choice["index"], 0, "{name}");
            }
        }
    }
}

/// What the proxy reads after the stream: closed state and the failure to report.
#[test]
fn closed_state_and_failures() {
    for (name, include_usage) in CASES {
        let (out, t) = whole(name, include_usage);
        assert!(t.is_closed(), "{name}");
        match name {
            "mid_stream_error" => {
                assert!(!out.contains("[DONE]"));
                let f = t.failure().expect("failure");
                assert_eq!(f.status, 529);
                let body: Value = serde_json::from_slice(&f.body).unwrap();
                assert_eq!(body["error"]["type"], "overloaded_error");
                assert_eq!(body["request_id"], "req_011CSHoEeqs5C35K2UUqR7Fy");
            }
            "truncated" => {
                assert!(!out.contains("[DONE]") && !out.contains("\"finish_reason\":\"stop\""));
                assert_eq!(
                    t.failure(),
                    Some(&StreamFailure {
                        status: 502,
                        body: json!({"type": "error", "error": {"type": "api_error",
                            "message": "the upstream closed the stream before it finished"}})
                        .to_string()
                        .into_bytes(),
                    })
                );
                assert!(!t.sniffer().completed());
            }
            _ => {
                assert!(out.ends_with("data: [DONE]\n\n"), "{name}");
                assert_eq!(t.failure(), None, "{name}");
                assert!(t.sniffer().completed(), "{name}");
            }
        }
    }
    let (_, t) = whole("cache_usage", true);
    let u = t.sniffer().usage();
    assert_eq!(
        (
            u.input_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.output_tokens
        ),
        (20, 1800, 248, 95)
    );
}

/// Every fixture split in two at every byte offset gives the same output.
#[test]
fn split_at_every_offset_gives_identical_output() {
    for (name, include_usage) in CASES {
        let bytes = fixture(name);
        let (expected, _) = translate([bytes.as_slice()], include_usage);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let (got, _) = translate([a, b], include_usage);
            assert_eq!(got, expected, "{name} split at {cut}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random multi-piece splits (including single bytes) give the same output.
    #[test]
    fn random_splits_give_identical_output(
        case in 0..CASES.len(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let (name, include_usage) = CASES[case];
        let bytes = fixture(name);
        let (expected, _) = translate([bytes.as_slice()], include_usage);
        let mut offsets: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        offsets.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for o in offsets {
            pieces.push(&bytes[start..o]);
            start = o;
        }
        pieces.push(&bytes[start..]);
        let (got, _) = translate(pieces, include_usage);
        prop_assert_eq!(got, expected, "{}", name);
    }
}

// ---- Non-streaming clients: the stream assembled into the whole reply ----------------------

/// Cases whose stream ends with `message_stop`, each with its non-streaming body
/// (`<case>.json`). `stop_sequence` also holds a redacted_thinking block and a thinking block.
const WHOLE_CASES: [&str; 8] = [
    "plain_text",
    "chinese_emoji",
    "text_parallel_tools",
    "tool_no_args",
    "thinking_tool",
    "cache_usage",
    "max_tokens",
    "stop_sequence",
];

fn non_stream_body(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "anthropic",
        &format!("{name}.json"),
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim_end().as_bytes().to_vec()
}

fn assemble<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Aggregated, AggregateError> {
    let mut asm = Assembler::new(StreamFormat::Anthropic, DEFAULT_CAP);
    for piece in pieces {
        asm.feed(piece)?;
    }
    asm.finish()
}

fn assembled_bytes<'a>(name: &str, pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    match assemble(pieces) {
        Ok(Aggregated::Reply(v)) => serde_json::to_vec(&v).unwrap(),
        other => panic!("{name}: not a reply: {other:?}"),
    }
}

/// The pass-through answer: the assembled body is the non-streaming body, byte for byte.
#[test]
fn whole_reply_is_the_non_streaming_body() {
    for name in WHOLE_CASES {
        let bytes = fixture(name);
        let got = assembled_bytes(name, [bytes.as_slice()]);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(non_stream_body(name)).unwrap(),
            "{name}"
        );
    }
}

/// The chat answer: the chat reply from the assembled body is the chat reply from the
/// non-streaming body, byte for byte (snapshotted), and the usage read from both is the same.
#[test]
fn whole_chat_reply_and_usage_match_the_non_streaming_ones() {
    for name in WHOLE_CASES {
        let bytes = fixture(name);
        let assembled = assembled_bytes(name, [bytes.as_slice()]);
        let body = non_stream_body(name);
        let from_stream: Value = serde_json::from_slice(&assembled).unwrap();
        let from_body: Value = serde_json::from_slice(&body).unwrap();
        let chat = |v: &Value| {
            serde_json::to_string(&anthropic_to_chat_response(
                v,
                "claude-client-name",
                1_764_158_400,
            ))
            .unwrap()
        };
        let chat_reply = chat(&from_stream);
        assert_eq!(chat_reply, chat(&from_body), "{name}");
        insta::assert_snapshot!(format!("{name}_whole_chat"), chat_reply);
        assert_eq!(
            usage::from_reply_bytes(WireFormat::Anthropic, &assembled),
            usage::from_reply_bytes(WireFormat::Anthropic, &body),
            "{name}"
        );
    }
    let u = usage::from_reply_bytes(
        WireFormat::Anthropic,
        &assembled_bytes("cache_usage", [fixture("cache_usage").as_slice()]),
    )
    .unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.output_tokens
        ),
        (20, 1800, 248, 95)
    );
}

/// An error event is the answer (status of its type, its data as the body); a stream cut
/// short is no answer.
#[test]
fn whole_reply_of_failed_streams() {
    match assemble([fixture("mid_stream_error").as_slice()]) {
        Ok(Aggregated::Failed { failure, usage }) => {
            assert_eq!(failure.status, 529);
            let body: Value = serde_json::from_slice(&failure.body).unwrap();
            assert_eq!(
                body,
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                    "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
            );
            assert_eq!(usage.map(|u| u.input_tokens), Some(1200));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        assemble([fixture("truncated").as_slice()]),
        Err(AggregateError::Truncated)
    );
}

/// Every two-piece split of every stream assembles the same body.
#[test]
fn whole_reply_split_at_every_offset_is_identical() {
    for name in WHOLE_CASES {
        let bytes = fixture(name);
        let expected = assembled_bytes(name, [bytes.as_slice()]);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert!(
                assembled_bytes(name, [a, b]) == expected,
                "{name} split at {cut}"
            );
        }
        let by_byte = assembled_bytes(name, bytes.chunks(1));
        assert!(by_byte == expected, "{name} byte by byte");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random multi-piece splits assemble the same body.
    #[test]
    fn whole_reply_random_splits_are_identical(
        case in 0..WHOLE_CASES.len(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let name = WHOLE_CASES[case];
        let bytes = fixture(name);
        let expected = assembled_bytes(name, [bytes.as_slice()]);
        let mut offsets: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        offsets.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for o in offsets {
            pieces.push(&bytes[start..o]);
            start = o;
        }
        pieces.push(&bytes[start..]);
        prop_assert_eq!(assembled_bytes(name, pieces), expected, "{}", name);
    }
}
