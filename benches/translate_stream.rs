//! Stream translation cost: upstream SSE bytes → decoded events → `chat.completion.chunk` frames.
//!
//! Each iteration is one whole 64-delta stream, decoded by a fresh [`Decoder`] and translated by
//! a fresh translator, exactly as the proxy does per request: the bytes arrive in 40-byte pieces
//! (so event lines and multi-byte characters are split across reads), every complete event goes
//! to the translator, the client frames are appended to one reused `String`. The streams are
//! built in code, deterministically, with the shapes of `tests/fixtures/{anthropic,responses}`.
//!
//! Throughput is reported per delta (64 elements) and per upstream byte. See BENCHMARKS.md.
//!
//! `cargo test --all-targets` runs each benchmark once in criterion's test mode (a smoke test);
//! `cargo bench --bench translate_stream` measures.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use droid2api::sse::{Decoder, Event};
use droid2api::translate::anthropic_chat::AnthropicToChat;
use droid2api::translate::chat::ChatChunks;
use droid2api::translate::responses_chat::ResponsesToChat;
use serde_json::{Value, json};

mod common;
use common::{DELTAS, PIECE, anthropic_stream, fragment, frame};

/// The `response` object of the Responses lifecycle events (as in the fixtures).
fn response_object(status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": "resp_60718293a4b5c6d7e8f90a1b2c3d4e5f", "object": "response",
        "created_at": 1764158400, "status": status, "background": false, "error": null,
        "incomplete_details": null,
        "instructions": "You are Droid, an AI software engineering agent.",
        "max_output_tokens": null, "max_tool_calls": null, "model": "gpt-5-2025-08-07",
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "prompt_cache_key": null, "reasoning": {"effort": "minimal", "summary": null},
        "safety_identifier": null, "service_tier": "default", "store": false,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": 1.0,
        "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
    })
}

/// response.created, response.in_progress, output_item.added, content_part.added, 64
/// `response.output_text.delta`s, output_text.done, content_part.done, output_item.done,
/// response.completed with usage.
fn responses_stream() -> Vec<u8> {
    const ITEM: &str = "msg_60718293a4b5c6d7e8f90a01";
    let text: String = (0..DELTAS).map(fragment).collect();
    let part = json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
    let item = json!({"id": ITEM, "type": "message", "status": "completed",
                      "content": [part], "role": "assistant"});
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq - 1
    };
    let mut s = String::new();
    for kind in ["response.created", "response.in_progress"] {
        frame(
            &mut s,
            kind,
            &json!({"type": kind, "sequence_number": next(),
                    "response": response_object("in_progress", json!([]), Value::Null)}),
        );
    }
    frame(
        &mut s,
        "response.output_item.added",
        &json!({"type": "response.output_item.added", "sequence_number": next(),
                "output_index": 0,
                "item": {"id": ITEM, "type": "message", "status": "in_progress",
                         "content": [], "role": "assistant"}}),
    );
    frame(
        &mut s,
        "response.content_part.added",
        &json!({"type": "response.content_part.added", "sequence_number": next(),
                "item_id": ITEM, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
    );
    for i in 0..DELTAS {
        frame(
            &mut s,
            "response.output_text.delta",
            &json!({"type": "response.output_text.delta", "sequence_number": next(),
                    "item_id": ITEM, "output_index": 0, "content_index": 0,
                    "delta": fragment(i), "logprobs": [], "obfuscation": "Qk0"}),
        );
    }
    frame(
        &mut s,
        "response.output_text.done",
        &json!({"type": "response.output_text.done", "sequence_number": next(),
                "item_id": ITEM, "output_index": 0, "content_index": 0,
                "text": text, "logprobs": []}),
    );
    frame(
        &mut s,
        "response.content_part.done",
        &json!({"type": "response.content_part.done", "sequence_number": next(),
                "item_id": ITEM, "output_index": 0, "content_index": 0, "part": part}),
    );
    frame(
        &mut s,
        "response.output_item.done",
        &json!({"type": "response.output_item.done", "sequence_number": next(),
                "output_index": 0, "item": item}),
    );
    let usage = json!({"input_tokens": 2006, "input_tokens_details": {"cached_tokens": 1920},
                       "output_tokens": 96, "output_tokens_details": {"reasoning_tokens": 0},
                       "total_tokens": 2102});
    frame(
        &mut s,
        "response.completed",
        &json!({"type": "response.completed", "sequence_number": next(),
                "response": response_object("completed", json!([item]), usage)}),
    );
    s.into_bytes()
}

fn chunks(include_usage: bool) -> ChatChunks {
    ChatChunks {
        id: "chatcmpl-0197a1b2c3d4e5f60718293a4b5c6d7e".to_string(),
        created: 1_764_158_400,
        model: "claude-sonnet-4-5".to_string(),
        include_usage,
    }
}

/// The two translators behind one face.
trait Translator {
    fn on_event(&mut self, ev: &Event, out: &mut String);
    fn finish(&mut self, out: &mut String);
}

impl Translator for AnthropicToChat {
    fn on_event(&mut self, ev: &Event, out: &mut String) {
        AnthropicToChat::on_event(self, ev, out);
    }
    fn finish(&mut self, out: &mut String) {
        AnthropicToChat::finish(self, out);
    }
}

impl Translator for ResponsesToChat {
    fn on_event(&mut self, ev: &Event, out: &mut String) {
        ResponsesToChat::on_event(self, ev, out);
    }
    fn finish(&mut self, out: &mut String) {
        ResponsesToChat::finish(self, out);
    }
}

/// One request's worth of work: decode `bytes` in [`PIECE`]-byte reads and translate every
/// event into `out` (cleared first; its capacity is reused across iterations).
fn run<T: Translator>(bytes: &[u8], mut tr: T, events: &mut Vec<Event>, out: &mut String) {
    out.clear();
    let mut decoder = Decoder::new();
    for piece in bytes.chunks(PIECE) {
        decoder.feed(piece, events);
        for ev in events.drain(..) {
            tr.on_event(&ev, out);
        }
    }
    decoder.finish(events);
    for ev in events.drain(..) {
        tr.on_event(&ev, out);
    }
    tr.finish(out);
}

/// Checks, once and outside the timing, that the stream translates to what the benchmark claims:
/// a role chunk, one content chunk per delta, a finish chunk, the usage chunk if asked, `[DONE]`.
fn check(name: &str, out: &str, include_usage: bool) {
    let content = out.matches(r#""delta":{"content":"#).count();
    // The role chunk is `{"role":"assistant","content":""}`; everything else is a delta.
    assert_eq!(content, DELTAS, "{name}: content chunks");
    assert_eq!(
        out.matches(r#""role":"assistant""#).count(),
        1,
        "{name}: role"
    );
    assert_eq!(
        out.matches(r#""finish_reason":"stop""#).count(),
        1,
        "{name}: finish"
    );
    assert_eq!(
        out.contains(r#""prompt_tokens":2006"#),
        include_usage,
        "{name}: usage chunk"
    );
    assert!(out.ends_with("data: [DONE]\n\n"), "{name}: [DONE]");
    let text: String = (0..DELTAS).map(fragment).collect();
    let mut got = String::new();
    for line in out.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            got.push_str(c);
        }
    }
    assert_eq!(got, text, "{name}: text");
}

fn bench_translate(c: &mut Criterion) {
    let anthropic = anthropic_stream();
    let responses = responses_stream();
    let mut events = Vec::new();
    let mut out = String::new();

    let mut group = c.benchmark_group("translate_stream");
    for include_usage in [false, true] {
        let suffix = if include_usage { "/include_usage" } else { "" };

        let name = format!("anthropic_to_chat{suffix}");
        run(
            &anthropic,
            AnthropicToChat::new(chunks(include_usage)),
            &mut events,
            &mut out,
        );
        check(&name, &out, include_usage);
        group.throughput(Throughput::ElementsAndBytes {
            elements: DELTAS as u64,
            bytes: anthropic.len() as u64,
        });
        group.bench_function(&name, |b| {
            b.iter(|| {
                let tr = AnthropicToChat::new(chunks(include_usage));
                run(black_box(&anthropic), tr, &mut events, &mut out);
                black_box(out.len())
            });
        });

        let name = format!("responses_to_chat{suffix}");
        run(
            &responses,
            ResponsesToChat::new(chunks(include_usage)),
            &mut events,
            &mut out,
        );
        check(&name, &out, include_usage);
        group.throughput(Throughput::ElementsAndBytes {
            elements: DELTAS as u64,
            bytes: responses.len() as u64,
        });
        group.bench_function(&name, |b| {
            b.iter(|| {
                let tr = ResponsesToChat::new(chunks(include_usage));
                run(black_box(&responses), tr, &mut events, &mut out);
                black_box(out.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_translate);
criterion_main!(benches);
