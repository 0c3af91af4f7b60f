//! OpenAI Responses API and Chat Completions: request rules and default replies.
//!
//! Public builders let tests script exact streams with [`crate::Reply::sse`]:
//! [`responses_text_stream_events`], [`responses_function_call_stream_events`],
//! [`chat_text_stream_events`], [`chat_tool_call_stream_events`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::anthropic::text_chunks;
use crate::sse::SseEventSpec;
use crate::state::RecordedRequest;
use crate::{DEFAULT_OUTPUT_TOKENS, Generated, MOCK_TEXT};

/// Reasoning summary of the default Responses reply when the request has `reasoning`.
pub const MOCK_REASONING_SUMMARY: &str = "Let me think.";
/// `output_tokens_details.reasoning_tokens` reported when reasoning was requested (part of O).
pub const MOCK_REASONING_TOKENS: u64 = 4;

/// `{"error":{"message":..,"type":..,"param":null,"code":null}}`
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": error_type, "param": null, "code": null}})
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn body_object(req: &RecordedRequest) -> Result<&serde_json::Map<String, Value>, String> {
    let body = req
        .json
        .as_ref()
        .and_then(Value::as_object)
        .ok_or("mock: request body must be a JSON object")?;
    if !body.get("model").is_some_and(Value::is_string) {
        return Err("mock: Missing required parameter: 'model' (string)".into());
    }
    Ok(body)
}

/// Checks a Responses API request body.
pub(crate) fn validate_responses(req: &RecordedRequest) -> Result<(), String> {
    let body = body_object(req)?;
    match body.get("input") {
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => return Err("mock: Invalid 'input': expected a string or an array".into()),
        None => return Err("mock: Missing required parameter: 'input'".into()),
    }
    if let Some(v) = body.get("max_output_tokens").filter(|v| !v.is_null()) {
        match v.as_u64() {
            Some(n) if n >= 16 => {}
            _ => {
                return Err(format!(
                    "mock: Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {v} instead."
                ));
            }
        }
    }
    if let Some(Value::Array(items)) = body.get("input") {
        let stored = body.get("store").and_then(Value::as_bool) != Some(false);
        check_reasoning_items(items, stored)?;
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let Some(tools) = tools.as_array() else {
            return Err("mock: Invalid 'tools': expected an array".into());
        };
        for (i, tool) in tools.iter().enumerate() {
            let Some(obj) = tool.as_object() else {
                return Err(format!("mock: Invalid 'tools[{i}]': expected an object"));
            };
            if obj.contains_key("function") {
                return Err(format!(
                    "mock: Invalid 'tools[{i}]': the Responses API takes flat function tools ({{\"type\":\"function\",\"name\":...}}), not a nested 'function' object"
                ));
            }
            match obj.get("type").and_then(Value::as_str) {
                Some("function") => {
                    if !obj.get("name").is_some_and(Value::is_string) {
                        return Err(format!(
                            "mock: Missing required parameter: 'tools[{i}].name'"
                        ));
                    }
                }
                Some(_) => {}
                None => {
                    return Err(format!(
                        "mock: Missing required parameter: 'tools[{i}].type'"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The Responses API's rules for reasoning items sent back (`translation.md` §4.1, §4.4):
/// with `store:false` a reasoning item must carry its `encrypted_content`; a reasoning item
/// must be followed by the item it preceded (another reasoning item, an assistant message or a
/// function call); a `function_call` that carries its item id (`fc_…`) must come after its
/// reasoning item (looking back over the turn's calls and assistant messages).
fn check_reasoning_items(items: &[Value], stored: bool) -> Result<(), String> {
    fn kind(v: &Value) -> &str {
        v.get("type").and_then(Value::as_str).unwrap_or("message")
    }
    let id = |v: &Value| {
        v.get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let in_turn = |v: &Value| match kind(v) {
        "function_call" | "reasoning" => true,
        "message" => v.get("role").and_then(Value::as_str) == Some("assistant"),
        _ => false,
    };
    for (i, item) in items.iter().enumerate() {
        match kind(item) {
            "reasoning" => {
                if !stored && !item.get("encrypted_content").is_some_and(Value::is_string) {
                    return Err(format!(
                        "mock: Item with id '{}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input.",
                        id(item)
                    ));
                }
                if !items.get(i + 1).is_some_and(in_turn) {
                    return Err(format!(
                        "mock: Item '{}' of type 'reasoning' was provided without its required following item.",
                        id(item)
                    ));
                }
            }
            "function_call" if item.get("id").is_some_and(|v| !v.is_null()) => {
                let has_reasoning = items[..i]
                    .iter()
                    .rev()
                    .take_while(|v| in_turn(v))
                    .any(|v| kind(v) == "reasoning");
                if !has_reasoning {
                    return Err(format!(
                        "mock: Item '{}' of type 'function_call' was provided without its required 'reasoning' item.",
                        id(item)
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a Chat Completions request body.
pub(crate) fn validate_chat(req: &RecordedRequest) -> Result<(), String> {
    let body = body_object(req)?;
    match body.get("messages").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => Ok(()),
        Some(_) => Err(
            "mock: Invalid 'messages': empty array. Expected an array with minimum length 1".into(),
        ),
        None => Err("mock: Missing required parameter: 'messages'".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses API
// ---------------------------------------------------------------------------------------------

fn responses_usage(input_tokens: u64, output_tokens: u64, reasoning_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    })
}

fn response_object(
    id: &str,
    model: &str,
    created_at: u64,
    status: &str,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "model": model,
        "status": status,
        "output": output,
        "usage": usage,
    })
}

fn message_item(item_id: &str, text: &str, status: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content})
}

fn reasoning_item(item_id: &str, summary: Option<&str>) -> Value {
    let summary = summary.map_or_else(
        || json!([]),
        |s| json!([{"type": "summary_text", "text": s}]),
    );
    json!({"type": "reasoning", "id": item_id, "summary": summary})
}

/// Numbers the events of a Responses stream (`sequence_number` from 0) as they are added.
struct ResponsesEvents {
    events: Vec<SseEventSpec>,
}

impl ResponsesEvents {
    fn push(&mut self, ty: &str, mut data: Value) {
        if let Some(obj) = data.as_object_mut() {
            // Put `type` and `sequence_number` first, as the real API does.
            let mut ordered = serde_json::Map::new();
            ordered.insert("type".into(), ty.into());
            ordered.insert("sequence_number".into(), self.events.len().into());
            ordered.extend(std::mem::take(obj));
            data = Value::Object(ordered);
        }
        self.events.push(SseEventSpec::named(ty, &data));
    }
}

/// Everything a Responses stream needs to know about the reply.
struct ResponsesStream<'a> {
    id: &'a str,
    model: &'a str,
    created_at: u64,
    input_tokens: u64,
    output_tokens: u64,
    reasoning: Option<&'a str>,
}

impl ResponsesStream<'_> {
    fn start(&self) -> ResponsesEvents {
        let mut ev = ResponsesEvents { events: Vec::new() };
        let pending = response_object(
            self.id,
            self.model,
            self.created_at,
            "in_progress",
            vec![],
            Value::Null,
        );
        ev.push("response.created", json!({"response": pending}));
        ev.push("response.in_progress", json!({"response": pending}));
        ev
    }

    /// Adds the reasoning item (if any); returns it and the next output index.
    fn reasoning(&self, ev: &mut ResponsesEvents) -> (Vec<Value>, usize) {
        let Some(summary) = self.reasoning else {
            return (Vec::new(), 0);
        };
        let rid = format!("rs_{}", self.id);
        ev.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": reasoning_item(&rid, None)}),
        );
        let part = |text: &str| json!({"type": "summary_text", "text": text});
        let at = json!({"item_id": rid, "output_index": 0, "summary_index": 0});
        let with = |extra: Value| {
            let mut v = at.clone();
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            v
        };
        ev.push(
            "response.reasoning_summary_part.added",
            with(json!({"part": part("")})),
        );
        ev.push(
            "response.reasoning_summary_text.delta",
            with(json!({"delta": summary})),
        );
        ev.push(
            "response.reasoning_summary_text.done",
            with(json!({"text": summary})),
        );
        ev.push(
            "response.reasoning_summary_part.done",
            with(json!({"part": part(summary)})),
        );
        let done = reasoning_item(&rid, Some(summary));
        ev.push(
            "response.output_item.done",
            json!({"output_index": 0, "item": done}),
        );
        (vec![done], 1)
    }

    fn finish(&self, mut ev: ResponsesEvents, output: Vec<Value>) -> Vec<SseEventSpec> {
        let reasoning_tokens = if self.reasoning.is_some() {
            MOCK_REASONING_TOKENS
        } else {
            0
        };
        let done = response_object(
            self.id,
            self.model,
            self.created_at,
            "completed",
            output,
            responses_usage(self.input_tokens, self.output_tokens, reasoning_tokens),
        );
        ev.push("response.completed", json!({"response": done}));
        ev.events
    }
}

/// The full event sequence of a streamed Responses text reply: `response.created`,
/// `response.in_progress`, [a reasoning item with its summary events], the message item
/// (`output_item.added`, `content_part.added`, several `output_text.delta`, `output_text.done`,
/// `content_part.done`, `output_item.done`) and `response.completed` with usage. Every event has
/// an `event:` line and `sequence_number`s increase from 0. No `[DONE]`.
pub fn responses_text_stream_events(
    id: &str,
    model: &str,
    text: &str,
    input_tokens: u64,
    output_tokens: u64,
    reasoning_summary: Option<&str>,
) -> Vec<SseEventSpec> {
    let s = ResponsesStream {
        id,
        model,
        created_at: now_secs(),
        input_tokens,
        output_tokens,
        reasoning: reasoning_summary,
    };
    let mut ev = s.start();
    let (mut output, oi) = s.reasoning(&mut ev);
    let item_id = format!("msg_{id}");
    ev.push(
        "response.output_item.added",
        json!({"output_index": oi, "item": message_item(&item_id, "", "in_progress")}),
    );
    let at = |extra: Value| {
        let mut v = json!({"item_id": item_id, "output_index": oi, "content_index": 0});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let part = |t: &str| json!({"type": "output_text", "text": t, "annotations": []});
    ev.push("response.content_part.added", at(json!({"part": part("")})));
    for piece in text_chunks(text, 4) {
        ev.push("response.output_text.delta", at(json!({"delta": piece})));
    }
    ev.push("response.output_text.done", at(json!({"text": text})));
    ev.push(
        "response.content_part.done",
        at(json!({"part": part(text)})),
    );
    let done = message_item(&item_id, text, "completed");
    ev.push(
        "response.output_item.done",
        json!({"output_index": oi, "item": done}),
    );
    output.push(done);
    s.finish(ev, output)
}

/// A streamed Responses reply that calls one function: `response.created`,
/// `response.in_progress`, a `function_call` item whose arguments arrive as the given
/// `response.function_call_arguments.delta` fragments, `...arguments.done`,
/// `output_item.done`, `response.completed`.
pub fn responses_function_call_stream_events(
    id: &str,
    model: &str,
    call_id: &str,
    name: &str,
    argument_fragments: &[&str],
    input_tokens: u64,
    output_tokens: u64,
) -> Vec<SseEventSpec> {
    let s = ResponsesStream {
        id,
        model,
        created_at: now_secs(),
        input_tokens,
        output_tokens,
        reasoning: None,
    };
    let mut ev = s.start();
    let item_id = format!("fc_{id}");
    let arguments = argument_fragments.concat();
    let item = |args: &str, status: &str| {
        json!({"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
               "arguments": args, "status": status})
    };
    ev.push(
        "response.output_item.added",
        json!({"output_index": 0, "item": item("", "in_progress")}),
    );
    for fragment in argument_fragments {
        ev.push(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": 0, "delta": fragment}),
        );
    }
    ev.push(
        "response.function_call_arguments.done",
        json!({"item_id": item_id, "output_index": 0, "arguments": arguments}),
    );
    let done = item(&arguments, "completed");
    ev.push(
        "response.output_item.done",
        json!({"output_index": 0, "item": done}),
    );
    s.finish(ev, vec![done])
}

/// The default reply to a valid Responses request.
pub(crate) fn default_responses_reply(body: &Value, n: u64) -> Generated {
    let id = format!("resp_mock_{n}");
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model");
    let input_tokens = crate::estimate_tokens(body, &["instructions", "input", "tools"]);
    let reasoning = body
        .get("reasoning")
        .filter(|v| !v.is_null())
        .map(|_| MOCK_REASONING_SUMMARY);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Generated::Stream(responses_text_stream_events(
            &id,
            model,
            MOCK_TEXT,
            input_tokens,
            DEFAULT_OUTPUT_TOKENS,
            reasoning,
        ));
    }
    let mut output = Vec::new();
    let mut reasoning_tokens = 0;
    if let Some(summary) = reasoning {
        output.push(reasoning_item(&format!("rs_{id}"), Some(summary)));
        reasoning_tokens = MOCK_REASONING_TOKENS;
    }
    output.push(message_item(&format!("msg_{id}"), MOCK_TEXT, "completed"));
    Generated::Json(response_object(
        &id,
        model,
        now_secs(),
        "completed",
        output,
        responses_usage(input_tokens, DEFAULT_OUTPUT_TOKENS, reasoning_tokens),
    ))
}

// ---------------------------------------------------------------------------------------------
// Chat Completions
// ---------------------------------------------------------------------------------------------

fn chat_usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn chat_chunk(
    id: &str,
    model: &str,
    created: u64,
    delta: Value,
    finish: Option<&str>,
) -> SseEventSpec {
    SseEventSpec::data_json(&json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }))
}

fn chat_tail(
    events: &mut Vec<SseEventSpec>,
    id: &str,
    model: &str,
    created: u64,
    finish: &str,
    usage: Option<(u64, u64)>,
) {
    events.push(chat_chunk(id, model, created, json!({}), Some(finish)));
    if let Some((prompt, completion)) = usage {
        events.push(SseEventSpec::data_json(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": chat_usage(prompt, completion),
        })));
    }
    events.push(SseEventSpec::data("[DONE]"));
}

/// A streamed Chat Completions text reply (`data:` lines only): a role chunk, several content
/// chunks, a finish chunk (`finish_reason: "stop"`), a usage chunk with `choices: []` when
/// `usage` is given, then `[DONE]`.
pub fn chat_text_stream_events(
    id: &str,
    model: &str,
    text: &str,
    usage: Option<(u64, u64)>,
) -> Vec<SseEventSpec> {
    let created = now_secs();
    let mut events = vec![chat_chunk(
        id,
        model,
        created,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    for piece in text_chunks(text, 4) {
        events.push(chat_chunk(
            id,
            model,
            created,
            json!({"content": piece}),
            None,
        ));
    }
    chat_tail(&mut events, id, model, created, "stop", usage);
    events
}

/// A streamed Chat Completions reply calling one tool: a role chunk, a first tool-call chunk
/// (id, name, empty arguments), one chunk per argument fragment, a finish chunk
/// (`finish_reason: "tool_calls"`), [usage chunk], `[DONE]`.
pub fn chat_tool_call_stream_events(
    id: &str,
    model: &str,
    call_id: &str,
    name: &str,
    argument_fragments: &[&str],
    usage: Option<(u64, u64)>,
) -> Vec<SseEventSpec> {
    let created = now_secs();
    let mut events = vec![
        chat_chunk(
            id,
            model,
            created,
            json!({"role": "assistant", "content": null}),
            None,
        ),
        chat_chunk(
            id,
            model,
            created,
            json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            None,
        ),
    ];
    for fragment in argument_fragments {
        events.push(chat_chunk(
            id,
            model,
            created,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
            None,
        ));
    }
    chat_tail(&mut events, id, model, created, "tool_calls", usage);
    events
}

/// The default reply to a valid Chat Completions request.
pub(crate) fn default_chat_reply(body: &Value, n: u64) -> Generated {
    let id = format!("chatcmpl-mock-{n}");
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model");
    let prompt = crate::estimate_tokens(body, &["messages", "tools"]);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        let usage = include_usage.then_some((prompt, DEFAULT_OUTPUT_TOKENS));
        return Generated::Stream(chat_text_stream_events(&id, model, MOCK_TEXT, usage));
    }
    Generated::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": MOCK_TEXT},
            "finish_reason": "stop",
        }],
        "usage": chat_usage(prompt, DEFAULT_OUTPUT_TOKENS),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn req(body: Value) -> RecordedRequest {
        RecordedRequest::new(
            "POST",
            "/x",
            None,
            &HeaderMap::new(),
            body.to_string().into(),
        )
    }

    #[test]
    fn responses_rules() {
        assert!(validate_responses(&req(json!({"model": "m", "input": "hi"}))).is_ok());
        assert!(validate_responses(&req(json!({"model": "m"}))).is_err());
        let small = json!({"model": "m", "input": [], "max_output_tokens": 8});
        assert!(validate_responses(&req(small)).is_err_and(|e| e.contains(">= 16")));
        let nested = json!({"model": "m", "input": "x",
                            "tools": [{"type": "function", "function": {"name": "f"}}]});
        assert!(validate_responses(&req(nested)).is_err_and(|e| e.starts_with("mock:")));
        let flat = json!({"model": "m", "input": "x",
                          "tools": [{"type": "function", "name": "f", "parameters": {}}]});
        assert!(validate_responses(&req(flat)).is_ok());
    }

    #[test]
    fn reasoning_item_rules() {
        let check = |input: Value, store: bool| {
            validate_responses(&req(json!({"model": "m", "store": store, "input": input})))
        };
        let rs =
            json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gA"});
        let fc = json!({"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}"});
        let fresh =
            json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"});
        let out = json!({"type": "function_call_output", "call_id": "c", "output": "x"});
        let user = json!({"type": "message", "role": "user", "content": "hi"});
        let ok = |input: Value| assert!(check(input.clone(), false).is_ok(), "{input}");
        ok(json!([user, rs, fc, out]));
        ok(json!([user, fresh, out]));
        // A function call with its id but no reasoning before it.
        assert!(
            check(json!([user, fc, out]), false)
                .is_err_and(|e| e.contains("without its required 'reasoning' item"))
        );
        // A reasoning item with nothing of its turn after it.
        assert!(
            check(json!([user, rs, out]), false)
                .is_err_and(|e| e.contains("without its required following item"))
        );
        // Without encrypted content, only a stored conversation knows the item.
        let bare = json!({"type": "reasoning", "id": "rs_1", "summary": []});
        assert!(
            check(json!([user, bare, fc, out]), false).is_err_and(|e| e.contains("not persisted"))
        );
        assert!(check(json!([user, bare, fc, out]), true).is_ok());
    }

    #[test]
    fn chat_rules() {
        assert!(validate_chat(&req(json!({"model": "m", "messages": []}))).is_err());
        assert!(
            validate_chat(&req(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})
            ))
            .is_ok()
        );
    }

    #[test]
    fn responses_stream_numbers_events() {
        let events = responses_text_stream_events("r", "m", MOCK_TEXT, 3, 12, Some("hmm"));
        for (i, e) in events.iter().enumerate() {
            let v: Value = serde_json::from_str(&e.data).expect("json");
            assert_eq!(v["sequence_number"], i);
            assert_eq!(v["type"].as_str(), e.event.as_deref());
        }
        let last: Value = serde_json::from_str(&events[events.len() - 1].data).expect("json");
        assert_eq!(last["response"]["usage"]["total_tokens"], 15);
        assert_eq!(last["response"]["output"][0]["type"], "reasoning");
    }
}
