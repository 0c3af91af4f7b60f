use serde_json::{Value, json};

use super::*;

fn chunks(include_usage: bool) -> ChatChunks {
    ChatChunks {
        id: "chatcmpl-t".into(),
        created: 7,
        model: "claude-client".into(),
        include_usage,
    }
}

fn ev(data: Value) -> Event {
    let name = data["type"].as_str().map(str::to_string);
    Event {
        event: name,
        data: data.to_string(),
        ..Event::default()
    }
}

/// Runs events (then `finish`) and returns the emitted frames: JSON values, or the string
/// `"[DONE]"`.
fn run_with(t: &mut AnthropicToChat, events: &[Value], finish: bool) -> Vec<Value> {
    let mut out = String::new();
    for e in events {
        t.on_event(&ev(e.clone()), &mut out);
    }
    if finish {
        t.finish(&mut out);
    }
    frames(&out)
}

fn frames(out: &str) -> Vec<Value> {
    assert!(out.is_empty() || out.ends_with("\n\n"), "{out:?}");
    out.split_terminator("\n\n")
        .map(|f| {
            let data = f.strip_prefix("data: ").unwrap();
            assert!(!data.contains('\n'), "{f:?}");
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

fn run(events: &[Value]) -> (Vec<Value>, AnthropicToChat) {
    let mut t = AnthropicToChat::new(chunks(false));
    let f = run_with(&mut t, events, true);
    (f, t)
}

/// The `delta` objects of content chunks (the frames with one choice).
fn deltas(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|f| {
            f.get("choices")
                .and_then(|c| c.get(0))
                .map(|c| c["delta"].clone())
        })
        .collect()
}

fn start(input: u64, output: u64) -> Value {
    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output}}})
}

fn block_start(index: u64, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn delta(index: u64, delta: Value) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": delta})
}

fn text(index: u64, t: &str) -> Value {
    delta(index, json!({"type": "text_delta", "text": t}))
}

fn args(index: u64, partial: &str) -> Value {
    delta(
        index,
        json!({"type": "input_json_delta", "partial_json": partial}),
    )
}

fn stop(index: u64) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_delta(reason: &str, output: u64) -> Value {
    json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": output}})
}

fn message_stop() -> Value {
    json!({"type": "message_stop"})
}

fn tool_start(index: u64, id: &str, name: &str) -> Value {
    block_start(
        index,
        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
    )
}

/// translation.md §3.4 transcript.
#[test]
fn transcript_of_section_3_4() {
    let mut t = AnthropicToChat::new(chunks(true));
    let f = run_with(
        &mut t,
        &[
            start(472, 2),
            json!({"type": "ping"}),
            block_start(0, json!({"type": "thinking", "thinking": ""})),
            delta(
                0,
                json!({"type": "thinking_delta", "thinking": "User wants…"}),
            ),
            delta(0, json!({"type": "signature_delta", "signature": "EqQB…"})),
            stop(0),
            block_start(1, json!({"type": "text", "text": ""})),
            text(1, "Checking."),
            stop(1),
            tool_start(2, "toolu_A", "get_weather"),
            args(2, ""),
            args(2, "{\"city\":"),
            args(2, "\"Paris\"}"),
            stop(2),
            message_delta("tool_use", 89),
            message_stop(),
        ],
        true,
    );
    let base = json!({"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 7,
        "model": "claude-client", "system_fingerprint": null});
    let chunk = |delta: Value, finish: Value| {
        let mut c = base.clone();
        c["choices"] =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        c["usage"] = Value::Null;
        c
    };
    let mut usage = base.clone();
    usage["choices"] = json!([]);
    usage["usage"] = json!({"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
    assert_eq!(
        f,
        vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"reasoning_content": "User wants…"}), Value::Null),
            chunk(
                json!({"thinking_blocks": [{"type": "thinking", "thinking": "User wants…", "signature": "EqQB…"}]}),
                Value::Null
            ),
            chunk(json!({"content": "Checking."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "toolu_A", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                Value::Null
            ),
            chunk(json!({}), json!("tool_calls")),
            usage,
            json!("[DONE]"),
        ]
    );
    assert!(t.is_closed());
    assert_eq!(t.failure(), None);
    assert!(t.sniffer().completed());
}

/// §7 row 7: tool-call indexes count tool calls from 0, whatever the block index; one entry per
/// chunk, never mixed with content.
#[test]
fn row7_tool_index_is_its_own_counter() {
    let (f, _) = run(&[
        start(10, 1),
        block_start(0, json!({"type": "text", "text": ""})),
        text(0, "Let me check both."),
        stop(0),
        tool_start(1, "toolu_1", "get_weather"),
        args(1, "{\"city\":\"Paris\"}"),
        stop(1),
        tool_start(2, "toolu_2", "get_weather"),
        args(2, "{\"city\":\"Rome\"}"),
        stop(2),
        message_delta("tool_use", 50),
        message_stop(),
    ]);
    let d = deltas(&f);
    assert_eq!(
        d[2]["tool_calls"],
        json!([{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
    );
    assert_eq!(
        d[3]["tool_calls"],
        json!([{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(
        d[4]["tool_calls"],
        json!([{"index": 1, "id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
    );
    assert_eq!(
        d[5]["tool_calls"],
        json!([{"index": 1, "function": {"arguments": "{\"city\":\"Rome\"}"}}])
    );
    for d in &d {
        let o = d.as_object().unwrap();
        assert!(o.len() <= 2, "{d}");
        if let Some(calls) = o.get("tool_calls") {
            assert_eq!(calls.as_array().unwrap().len(), 1);
            assert!(!o.contains_key("content"));
        }
    }
}

/// §7 row 9: a tool without arguments gets `"{}"` at block stop; `""` fragments are skipped.
#[test]
fn row9_no_argument_tool_gets_empty_object() {
    let (f, _) = run(&[
        start(10, 1),
        tool_start(0, "toolu_1", "now"),
        args(0, ""),
        stop(0),
        message_delta("tool_use", 5),
        message_stop(),
    ]);
    assert_eq!(
        deltas(&f),
        vec![
            json!({"role": "assistant", "content": ""}),
            json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "now", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            json!({}),
        ]
    );
}

/// §7 rows 13 and 14: cache tokens in the streamed usage; message_delta usage replaces.
#[test]
fn rows13_14_streamed_usage_is_cumulative_and_counts_cache() {
    let mut t = AnthropicToChat::new(chunks(true));
    let f = run_with(
        &mut t,
        &[
            json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 12,
                "cache_creation_input_tokens": 200, "cache_read_input_tokens": 3000, "output_tokens": 1}}}),
            block_start(0, json!({"type": "text", "text": ""})),
            text(0, "Hi"),
            stop(0),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}),
            json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 42}}),
            message_stop(),
        ],
        true,
    );
    let usage = &f[f.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3212, "completion_tokens": 42, "total_tokens": 3254,
            "prompt_tokens_details": {"cached_tokens": 3000}, "completion_tokens_details": {"reasoning_tokens": 0},
            "cache_creation_input_tokens": 200})
    );
    // A message_delta without stop_reason keeps the earlier one.
    assert_eq!(f[f.len() - 3]["choices"][0]["finish_reason"], "stop");
    // Every other chunk carries usage: null.
    assert!(f[..f.len() - 2].iter().all(|c| c["usage"].is_null()));
}

/// §7 row 15: no raw Anthropic stop reason ever reaches the client.
#[test]
fn row15_finish_reasons_are_mapped() {
    for (reason, expected) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("stop_sequence", "stop"),
        ("model_context_window_exceeded", "length"),
        ("brand_new_reason", "stop"),
    ] {
        let (f, _) = run(&[start(1, 1), message_delta(reason, 2), message_stop()]);
        assert_eq!(f[1]["choices"][0]["finish_reason"], expected, "{reason}");
    }
    // No message_delta at all: stop.
    let (f, _) = run(&[start(1, 1), message_stop()]);
    assert_eq!(f[1]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn no_usage_chunk_unless_requested() {
    let (f, _) = run(&[
        start(1, 1),
        block_start(0, json!({"type": "text", "text": "Hello"})),
        stop(0),
        message_delta("end_turn", 2),
        message_stop(),
    ]);
    assert_eq!(
        deltas(&f),
        vec![
            json!({"role": "assistant", "content": ""}),
            json!({"content": "Hello"}),
            json!({})
        ]
    );
    assert_eq!(f.len(), 4);
    assert_eq!(f[3], json!("[DONE]"));
    assert!(f[..3].iter().all(|c| c.get("usage").is_none()));
}

/// §6.3: an `error` event becomes an error chunk in the OpenAI shape (§6.2 table); the stream
/// closes without a finish chunk or `[DONE]`, and later events are ignored.
#[test]
fn error_event_closes_the_stream() {
    let err =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let (f, t) = run(&[
        start(1, 1),
        text(0, "par"),
        err.clone(),
        text(0, "tial"),
        message_stop(),
    ]);
    assert_eq!(
        f.last().unwrap(),
        &json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
    );
    assert_eq!(f.len(), 3);
    assert!(t.is_closed());
    assert_eq!(
        t.failure(),
        Some(&StreamFailure {
            status: 529,
            body: err.to_string().into_bytes()
        })
    );
    assert!(t.sniffer().errored());

    for (ty, status, oa_type, code) in [
        (
            "rate_limit_error",
            429,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
        ),
        ("invalid_request_error", 400, "invalid_request_error", None),
        ("api_error", 500, "server_error", None),
        (
            "billing_error",
            402,
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        ("timeout_error", 504, "server_error", Some("timeout")),
    ] {
        let (f, t) = run(&[json!({"type": "error", "error": {"type": ty, "message": "m"}})]);
        assert_eq!(
            f,
            vec![json!({"error": {"message": "m", "type": oa_type, "param": null, "code": code}})],
            "{ty}"
        );
        assert_eq!(t.failure().unwrap().status, status);
    }
    // Not JSON, but named `error`.
    let mut t = AnthropicToChat::new(chunks(false));
    let mut out = String::new();
    t.on_event(
        &Event {
            event: Some("error".into()),
            data: "upstream exploded".into(),
            ..Event::default()
        },
        &mut out,
    );
    assert_eq!(
        frames(&out),
        vec![
            json!({"error": {"message": "upstream exploded", "type": "server_error", "param": null, "code": null}})
        ]
    );
    assert_eq!(t.failure().unwrap().status, 500);
}

/// End of body without message_stop: an error chunk, never a fake finish.
#[test]
fn truncated_stream_is_an_error() {
    let (f, t) = run(&[
        start(1, 1),
        block_start(0, json!({"type": "text", "text": ""})),
        text(0, "half"),
    ]);
    assert_eq!(
        f.last().unwrap(),
        &json!({"error": {"message": "the upstream closed the stream before it finished", "type": "server_error", "param": null, "code": "stream_truncated"}})
    );
    assert!(f.iter().all(|c| {
        c.get("choices")
            .is_none_or(|ch| ch[0]["finish_reason"].is_null())
    }));
    let failure = t.failure().unwrap();
    assert_eq!(failure.status, 502);
    assert_eq!(
        serde_json::from_slice::<Value>(&failure.body).unwrap(),
        json!({"type": "error", "error": {"type": "api_error", "message": "the upstream closed the stream before it finished"}})
    );
    assert!(t.is_closed());

    // An empty body too (nothing reached the client: the proxy can answer 502).
    let (f, t) = run(&[]);
    assert_eq!(f.len(), 1);
    assert_eq!(t.failure().unwrap().status, 502);

    // After message_stop, finish writes nothing; finishing twice is harmless.
    let mut t = AnthropicToChat::new(chunks(false));
    let f = run_with(&mut t, &[start(1, 1), message_stop()], true);
    assert_eq!(f.last().unwrap(), &json!("[DONE]"));
    let mut out = String::new();
    t.finish(&mut out);
    assert!(out.is_empty());
    assert_eq!(t.failure(), None);
}

#[test]
fn ping_unknown_and_out_of_order_events() {
    let mut t = AnthropicToChat::new(chunks(false));
    let mut out = String::new();
    t.on_event(&ev(json!({"type": "ping"})), &mut out);
    t.on_event(&ev(json!({"type": "brand_new_event", "x": 1})), &mut out);
    t.on_event(
        &Event {
            data: "not json".into(),
            ..Event::default()
        },
        &mut out,
    );
    assert!(out.is_empty());
    assert!(!t.is_closed());
    // Content before message_start still gets the role chunk first, once.
    let f = run_with(
        &mut t,
        &[
            text(0, "a"),
            start(1, 1),
            text(0, "b"),
            block_start(1, json!({"type": "citations_thing"})),
            delta(1, json!({"type": "citations_delta", "citation": {}})),
            stop(1),
            message_stop(),
        ],
        true,
    );
    assert_eq!(
        deltas(&f),
        vec![
            json!({"role": "assistant", "content": ""}),
            json!({"content": "a"}),
            json!({"content": "b"}),
            json!({})
        ]
    );
    // Dispatch falls back to the SSE event name when the data has no `type`.
    let mut t = AnthropicToChat::new(chunks(false));
    let mut out = String::new();
    t.on_event(
        &Event {
            event: Some("message_stop".into()),
            data: "{}".into(),
            ..Event::default()
        },
        &mut out,
    );
    assert!(t.is_closed());
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn redacted_thinking_and_signature_on_start() {
    let (f, _) = run(&[
        start(1, 1),
        block_start(0, json!({"type": "redacted_thinking", "data": "EmwKAhgB"})),
        stop(0),
        block_start(
            1,
            json!({"type": "thinking", "thinking": "", "signature": "sig0"}),
        ),
        stop(1),
        message_stop(),
    ]);
    assert_eq!(
        deltas(&f)[1..3],
        [
            json!({"thinking_blocks": [{"type": "redacted_thinking", "data": "EmwKAhgB"}]}),
            json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig0"}]}),
        ]
    );
}

/// A tool_use block that arrives with its whole input (some relays do this) is not lost.
#[test]
fn tool_input_given_at_block_start() {
    let (f, _) = run(&[
        start(1, 1),
        block_start(
            0,
            json!({"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}),
        ),
        stop(0),
        message_stop(),
    ]);
    assert_eq!(
        deltas(&f)[2],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]})
    );
    assert_eq!(deltas(&f).len(), 4);
}
