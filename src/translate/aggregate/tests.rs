use serde_json::json;

use super::*;

fn ev(name: &str, data: &Value) -> Event {
    Event {
        event: Some(name.to_string()),
        data: data.to_string(),
        id: None,
        retry: None,
    }
}

fn run(format: StreamFormat, events: &[Event]) -> Result<Aggregated, AggregateError> {
    let mut a = Aggregator::new(format, DEFAULT_CAP);
    for e in events {
        a.on_event(e)?;
    }
    a.finish()
}

fn reply(format: StreamFormat, events: &[Event]) -> String {
    match run(format, events) {
        Ok(Aggregated::Reply(v)) => v.to_string(),
        other => panic!("not a reply: {other:?}"),
    }
}

fn start(usage: Value) -> Event {
    ev(
        "message_start",
        &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": usage}}),
    )
}

fn block_start(index: u64, block: Value) -> Event {
    ev(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn delta(index: u64, delta: Value) -> Event {
    ev(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn stop(index: u64) -> Event {
    ev(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

fn message_end(stop_reason: &str, usage: Value) -> [Event; 2] {
    [
        ev(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": usage}),
        ),
        ev("message_stop", &json!({"type": "message_stop"})),
    ]
}

#[test]
fn stream_upstream_sets_stream_for_whole_answers_only() {
    for body in [json!({}), json!({"stream": null}), json!({"stream": false})] {
        let mut m = body.as_object().cloned().unwrap();
        assert!(stream_upstream(&mut m), "{body}");
        assert_eq!(m["stream"], true);
    }
    for body in [json!({"stream": true}), json!({"stream": "yes"})] {
        let mut m = body.as_object().cloned().unwrap();
        assert!(!stream_upstream(&mut m), "{body}");
        assert_eq!(Value::Object(m), body);
    }
}

#[test]
fn anthropic_blocks_are_assembled_in_the_non_streaming_key_order() {
    let mut events = vec![
        start(json!({"input_tokens": 10, "output_tokens": 1})),
        ev("ping", &json!({"type": "ping"})),
        block_start(
            0,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
        ),
        delta(0, json!({"type": "thinking_delta", "thinking": "Hm"})),
        delta(0, json!({"type": "thinking_delta", "thinking": "m."})),
        delta(0, json!({"type": "signature_delta", "signature": "sig"})),
        stop(0),
        block_start(1, json!({"type": "redacted_thinking", "data": "xyz"})),
        stop(1),
        block_start(2, json!({"type": "text", "text": ""})),
        delta(2, json!({"type": "text_delta", "text": "Hi "})),
        delta(2, json!({"type": "text_delta", "text": "there"})),
        stop(2),
        block_start(
            3,
            json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        ),
        delta(3, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(
            3,
            json!({"type": "input_json_delta", "partial_json": "{\"a\": [1,"}),
        ),
        delta(
            3,
            json!({"type": "input_json_delta", "partial_json": " 2]}"}),
        ),
        stop(3),
        block_start(
            4,
            json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "url": "https://example.com"}]}),
        ),
        stop(4),
    ];
    events.extend(message_end("tool_use", json!({"output_tokens": 42})));
    assert_eq!(
        reply(StreamFormat::Anthropic, &events),
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Hi there"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "url": "https://example.com"}]}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 42}})
        .to_string()
    );
}

#[test]
fn message_start_in_another_key_order_still_gives_the_non_streaming_order() {
    let mut events = vec![ev(
        "message_start",
        &json!({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1},
            "model": "m", "content": [], "id": "msg_2", "container": null, "role": "assistant", "type": "message"}}),
    )];
    events.extend(message_end("end_turn", json!({"output_tokens": 5})));
    assert_eq!(
        reply(StreamFormat::Anthropic, &events),
        r#"{"id":"msg_2","type":"message","role":"assistant","model":"m","content":[],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":5},"container":null}"#
    );
}

#[test]
fn message_delta_usage_replaces_field_by_field_and_null_is_ignored() {
    let mut events = vec![start(
        json!({"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}),
    )];
    events.extend(message_end(
        "end_turn",
        json!({"input_tokens": 25, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": null, "output_tokens": 95}),
    ));
    let body = reply(StreamFormat::Anthropic, &events);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1800, "output_tokens": 95})
    );
    let u = usage::from_json(WireFormat::Anthropic, &v).unwrap();
    assert_eq!(
        (u.input_tokens, u.cache_read_tokens, u.output_tokens),
        (25, 1800, 95)
    );
}

#[test]
fn stop_sequence_and_citations() {
    let mut events = vec![
        start(json!({"input_tokens": 1, "output_tokens": 1})),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "a"})),
        delta(
            0,
            json!({"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}}),
        ),
        stop(0),
    ];
    events.push(ev(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"}, "usage": {"output_tokens": 3}}),
    ));
    events.push(ev("message_stop", &json!({"type": "message_stop"})));
    let v: Value = serde_json::from_str(&reply(StreamFormat::Anthropic, &events)).unwrap();
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "a", "citations": [{"type": "char_location", "cited_text": "x"}]}])
    );
    assert_eq!(
        (&v["stop_reason"], &v["stop_sequence"]),
        (&json!("stop_sequence"), &json!("END"))
    );
}

#[test]
fn anthropic_error_event_is_the_answer_with_the_status_of_its_type() {
    for (ty, status) in [
        ("overloaded_error", 529),
        ("api_error", 500),
        ("rate_limit_error", 429),
        ("invalid_request_error", 400),
        ("something_new", 500),
    ] {
        let data = json!({"type": "error", "error": {"type": ty, "message": "no"}});
        let events = [
            start(json!({"input_tokens": 7, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": ""})),
            ev("error", &data),
        ];
        match run(StreamFormat::Anthropic, &events) {
            Ok(Aggregated::Failed { failure, usage }) => {
                assert_eq!(failure.status, status, "{ty}");
                assert_eq!(failure.body, data.to_string().into_bytes());
                assert_eq!(usage.unwrap().input_tokens, 7);
            }
            other => panic!("{ty}: {other:?}"),
        }
    }
}

#[test]
fn a_stream_without_its_terminal_event_is_truncated_and_later_events_are_ignored() {
    let events = [
        start(json!({"input_tokens": 7, "output_tokens": 1})),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "partial"})),
    ];
    assert_eq!(
        run(StreamFormat::Anthropic, &events),
        Err(AggregateError::Truncated)
    );
    assert_eq!(
        run(StreamFormat::Anthropic, &[]),
        Err(AggregateError::Truncated)
    );
    let mut events = vec![start(json!({"input_tokens": 1, "output_tokens": 1}))];
    events.extend(message_end("end_turn", json!({"output_tokens": 2})));
    events.push(ev(
        "error",
        &json!({"type": "error", "error": {"type": "api_error", "message": "late"}}),
    ));
    assert!(matches!(
        run(StreamFormat::Anthropic, &events),
        Ok(Aggregated::Reply(_))
    ));
}

#[test]
fn malformed_streams_are_refused() {
    let bad_input = [
        start(json!({"input_tokens": 1, "output_tokens": 1})),
        block_start(
            0,
            json!({"type": "tool_use", "id": "t", "name": "f", "input": {}}),
        ),
        delta(
            0,
            json!({"type": "input_json_delta", "partial_json": "{\"a\":"}),
        ),
        stop(0),
    ];
    assert_eq!(
        run(StreamFormat::Anthropic, &bad_input),
        Err(AggregateError::Malformed("tool input that is not JSON"))
    );
    let not_json = Event {
        event: Some("content_block_delta".into()),
        data: "{nope".into(),
        id: None,
        retry: None,
    };
    assert!(matches!(
        run(StreamFormat::Anthropic, &[not_json]),
        Err(AggregateError::Malformed(_))
    ));
    let orphan = [
        start(json!({"input_tokens": 1, "output_tokens": 1})),
        delta(5, json!({"type": "text_delta", "text": "x"})),
    ];
    assert!(matches!(
        run(StreamFormat::Anthropic, &orphan),
        Err(AggregateError::Malformed(_))
    ));
}

#[test]
fn the_cap_bounds_what_is_held() {
    let mut a = Aggregator::new(StreamFormat::Anthropic, 1000);
    a.on_event(&start(json!({"input_tokens": 1, "output_tokens": 1})))
        .unwrap();
    a.on_event(&block_start(0, json!({"type": "text", "text": ""})))
        .unwrap();
    let piece = "x".repeat(300);
    let mut result = Ok(());
    for _ in 0..4 {
        result = a.on_event(&delta(0, json!({"type": "text_delta", "text": piece})));
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(AggregateError::TooLarge { cap: 1000 }));

    // The decoder's unfinished event counts too: one endless line.
    let mut asm = Assembler::new(StreamFormat::Anthropic, 1000);
    asm.feed(b"data: ").unwrap();
    let long = vec![b'a'; 600];
    asm.feed(&long).unwrap();
    assert_eq!(asm.feed(&long), Err(AggregateError::TooLarge { cap: 1000 }));
}

fn response(status: &str, output: Value) -> Value {
    json!({"id": "resp_1", "object": "response", "created_at": 1, "status": status,
        "model": "gpt-x", "output": output,
        "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 20},
                  "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 39}})
}

fn item_done(index: u64, item: Value) -> Event {
    ev(
        "response.output_item.done",
        &json!({"type": "response.output_item.done", "output_index": index, "item": item}),
    )
}

#[test]
fn responses_terminal_object_is_the_reply() {
    let msg = json!({"type": "message", "id": "m", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "hi", "annotations": []}]});
    let done = response("completed", json!([msg]));
    let events = [
        ev(
            "response.created",
            &json!({"type": "response.created", "response": response("in_progress", json!([]))}),
        ),
        item_done(0, msg.clone()),
        ev(
            "response.completed",
            &json!({"type": "response.completed", "response": done}),
        ),
    ];
    assert_eq!(reply(StreamFormat::Responses, &events), done.to_string());
    let incomplete = response("incomplete", json!([msg]));
    let events = [ev(
        "response.incomplete",
        &json!({"type": "response.incomplete", "response": incomplete}),
    )];
    assert_eq!(
        reply(StreamFormat::Responses, &events),
        incomplete.to_string()
    );
}

#[test]
fn responses_empty_terminal_output_is_rebuilt_from_done_items_in_index_order() {
    let reasoning = json!({"type": "reasoning", "id": "rs", "summary": []});
    let call = json!({"type": "function_call", "id": "fc", "call_id": "c", "name": "f", "arguments": "{}", "status": "completed"});
    let events = [
        item_done(1, call.clone()),
        item_done(0, reasoning.clone()),
        ev(
            "response.completed",
            &json!({"type": "response.completed", "response": response("completed", json!([]))}),
        ),
    ];
    assert_eq!(
        reply(StreamFormat::Responses, &events),
        response("completed", json!([reasoning, call])).to_string()
    );
}

#[test]
fn responses_failures_map_like_the_chat_route() {
    let mut failed = response("failed", json!([]));
    failed["error"] = json!({"code": "rate_limit_exceeded", "message": "slow down"});
    let events = [ev(
        "response.failed",
        &json!({"type": "response.failed", "response": failed}),
    )];
    match run(StreamFormat::Responses, &events) {
        Ok(Aggregated::Failed { failure, usage }) => {
            assert_eq!(failure.status, 429);
            let body: Value = serde_json::from_slice(&failure.body).unwrap();
            assert_eq!(
                body,
                json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
            );
            assert_eq!(usage.unwrap().output_tokens, 9);
        }
        other => panic!("{other:?}"),
    }
    let events = [ev(
        "error",
        &json!({"type": "error", "code": "server_error", "message": "boom", "param": null, "sequence_number": 3}),
    )];
    match run(StreamFormat::Responses, &events) {
        Ok(Aggregated::Failed { failure, usage }) => {
            assert_eq!(failure.status, 500);
            let body: Value = serde_json::from_slice(&failure.body).unwrap();
            assert_eq!(
                body,
                json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": "server_error"}})
            );
            assert_eq!(usage, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run(
            StreamFormat::Responses,
            &[ev(
                "response.completed",
                &json!({"type": "response.completed"})
            )]
        ),
        Err(AggregateError::Malformed(
            "a terminal event without its response"
        ))
    );
}

#[test]
fn assembler_reads_raw_bytes_and_usage_so_far() {
    let text = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\r\n\r\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":8}}\n\n";
    let mut asm = Assembler::new(StreamFormat::Anthropic, DEFAULT_CAP);
    asm.feed(text.as_bytes()).unwrap();
    assert!(!asm.is_done());
    let u = asm.usage_so_far().unwrap();
    assert_eq!((u.input_tokens, u.output_tokens), (5, 8));
    // The terminal event without its blank line at the very end is still complete? No: an
    // unterminated event is discarded, the stream is truncated.
    asm.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}")
        .unwrap();
    assert_eq!(asm.finish(), Err(AggregateError::Truncated));
}
