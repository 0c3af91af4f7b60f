//! The upstream stream both benchmarks feed: a 64-delta Anthropic stream, built in code.
#![allow(dead_code)]

use serde_json::{Value, json};

/// Text deltas per stream (the Busbar streaming benchmark's 64, peers.md §3.2, §5.2 T3).
pub const DELTAS: usize = 64;

/// Size of the transport reads the decoder is fed.
pub const PIECE: usize = 40;

/// Delta texts, cycled: 12 bytes on average, mixing ASCII, CJK, emoji (one with a variation
/// selector), quotes and a newline so JSON escaping and UTF-8 reassembly are exercised.
pub const FRAGMENTS: [&str; 8] = [
    "The quick br",
    "own fox 🦊 ",
    "你好世界",
    "jumps over ",
    "天气☀\u{fe0f}",
    "the \"lazy\"",
    "\n第二行：",
    "🚀 dog, ok.",
];

pub fn fragment(i: usize) -> &'static str {
    FRAGMENTS[i % FRAGMENTS.len()]
}

/// One upstream SSE event as it comes over the wire (always with an `event:` line, as both
/// Anthropic and OpenAI Responses send).
pub fn frame(out: &mut String, name: &str, data: &Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

/// message_start, one text block (ping, 64 `text_delta`s), message_delta, message_stop.
pub fn anthropic_stream() -> Vec<u8> {
    let mut s = String::new();
    frame(
        &mut s,
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_01BenchStream7Hq2Lm", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
            "stop_sequence": null,
            // Uncached input, as Anthropic counts it: prompt_tokens = 86 + 1920 = 2006.
            "usage": {"input_tokens": 86, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 1920, "output_tokens": 1}}}),
    );
    frame(
        &mut s,
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
    );
    frame(&mut s, "ping", &json!({"type": "ping"}));
    for i in 0..DELTAS {
        frame(
            &mut s,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": fragment(i)}}),
        );
    }
    frame(
        &mut s,
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    );
    frame(
        &mut s,
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 96}}),
    );
    frame(&mut s, "message_stop", &json!({"type": "message_stop"}));
    s.into_bytes()
}
