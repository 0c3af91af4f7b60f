//! Anthropic Messages: the request rules a real upstream enforces, and the default replies.
//!
//! Public builders ([`text_stream_events`], [`tool_use_stream_events`], [`message_json`]) let
//! tests script exact Anthropic streams (e.g. tool calls) with [`crate::Reply::sse`].

use serde_json::{Map, Value, json};

use crate::sse::SseEventSpec;
use crate::state::RecordedRequest;
use crate::{DEFAULT_OUTPUT_TOKENS, Generated, MOCK_TEXT};

/// Thinking text of the default reply when thinking is enabled.
pub const MOCK_THINKING: &str = "Let me think.";
/// Signature of the default thinking block.
pub const MOCK_SIGNATURE: &str = "sig_mock";
/// A non-streaming request with `max_tokens` above this is rejected ("Streaming is required").
pub const NON_STREAMING_MAX_TOKENS: u64 = 21_333;
/// The beta flag that lets the thinking budget exceed `max_tokens`.
pub const INTERLEAVED_THINKING_BETA: &str = "interleaved-thinking-2025-05-14";

/// `{"type":"error","error":{"type":<error_type>,"message":<message>}}`
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// Deterministic input-token estimate: bytes of the JSON of `system`, `messages` and `tools`
/// divided by 4 (at least 1). Used by both `/messages` and `/count_tokens`.
pub fn estimate_input_tokens(body: &Value) -> u64 {
    crate::estimate_tokens(body, &["system", "messages", "tools"])
}

fn is_tool_use_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Counts (recursively) the non-null `cache_control` markers in a JSON value.
fn count_cache_control(v: &Value) -> usize {
    match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                if k == "cache_control" {
                    usize::from(!v.is_null())
                } else {
                    count_cache_control(v)
                }
            })
            .sum(),
        Value::Array(items) => items.iter().map(count_cache_control).sum(),
        _ => 0,
    }
}

/// A text block's `text` must be a non-empty, non-blank string.
fn check_text(text: Option<&Value>, at: &str) -> Result<(), String> {
    match text {
        Some(Value::String(s)) if s.is_empty() => {
            Err(format!("mock: {at}: text content blocks must be non-empty"))
        }
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!(
            "mock: {at}: text content blocks must contain non-whitespace text"
        )),
        Some(Value::String(_)) => Ok(()),
        _ => Err(format!("mock: {at}.text: Field required (string)")),
    }
}

/// Checks the blocks of one content array (recursing into `tool_result` content).
fn check_blocks(blocks: &[Value], at: &str) -> Result<(), String> {
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.{j}");
        let Some(obj) = block.as_object() else {
            return Err(format!("mock: {at}: content block must be an object"));
        };
        let Some(ty) = obj.get("type").and_then(Value::as_str) else {
            return Err(format!("mock: {at}.type: Field required"));
        };
        match ty {
            "text" => check_text(obj.get("text"), &at)?,
            "tool_use" => {
                let id = obj.get("id").and_then(Value::as_str).unwrap_or_default();
                if !is_tool_use_id(id) {
                    return Err(format!(
                        "mock: {at}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$' (got {id:?})"
                    ));
                }
                if obj.get("name").and_then(Value::as_str).is_none() {
                    return Err(format!("mock: {at}.tool_use.name: Field required"));
                }
                if !obj.get("input").is_some_and(Value::is_object) {
                    return Err(format!(
                        "mock: {at}.tool_use.input: Input should be an object"
                    ));
                }
            }
            "tool_result" => {
                if obj.get("tool_use_id").and_then(Value::as_str).is_none() {
                    return Err(format!(
                        "mock: {at}.tool_result.tool_use_id: Field required"
                    ));
                }
                if let Some(Value::Array(inner)) = obj.get("content") {
                    check_blocks(inner, &format!("{at}.content"))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn block_ids<'a>(blocks: &'a [Value], ty: &str, id_field: &str) -> Vec<&'a str> {
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some(ty))
        .filter_map(|b| b.get(id_field).and_then(Value::as_str))
        .collect()
}

fn content_blocks(msg: &Value) -> &[Value] {
    msg.get("content")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Every `tool_use` must be answered, first thing, by a `tool_result` in the next user message,
/// and every `tool_result` must answer a `tool_use` of the previous assistant message.
fn check_tool_pairing(messages: &[Value]) -> Result<(), String> {
    for (i, msg) in messages.iter().enumerate() {
        let role = msg.get("role").and_then(Value::as_str).unwrap_or_default();
        let blocks = content_blocks(msg);
        if role == "user" {
            let results = block_ids(blocks, "tool_result", "tool_use_id");
            if results.is_empty() {
                continue;
            }
            let prev_uses = match i.checked_sub(1).map(|p| &messages[p]) {
                Some(prev) if prev.get("role").and_then(Value::as_str) == Some("assistant") => {
                    block_ids(content_blocks(prev), "tool_use", "id")
                }
                _ => Vec::new(),
            };
            let unexpected: Vec<&str> = results
                .iter()
                .copied()
                .filter(|id| !prev_uses.contains(id))
                .collect();
            if !unexpected.is_empty() {
                return Err(format!(
                    "mock: messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                    unexpected.join(", ")
                ));
            }
            continue;
        }
        let uses = block_ids(blocks, "tool_use", "id");
        if uses.is_empty() {
            continue;
        }
        let next = messages.get(i + 1);
        let next_blocks = next.map_or(&[][..], content_blocks);
        let next_is_user = next.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("user");
        // tool_result blocks must lead the next message.
        let leading = next_blocks
            .iter()
            .take_while(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .count();
        if next_is_user
            && next_blocks[leading..]
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        {
            return Err(format!(
                "mock: messages.{}: `tool_result` blocks must come first in the user message, before any other content",
                i + 1
            ));
        }
        let answered: Vec<&str> = if next_is_user {
            block_ids(&next_blocks[..leading], "tool_result", "tool_use_id")
        } else {
            Vec::new()
        };
        let missing: Vec<&str> = uses
            .iter()
            .copied()
            .filter(|id| !answered.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "mock: messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                missing.join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks an Anthropic request body the way the real API does. `count_tokens` requests need no
/// `max_tokens` and are never "streaming required".
pub(crate) fn validate(req: &RecordedRequest, count_tokens: bool) -> Result<(), String> {
    let Some(body) = req.json.as_ref().and_then(Value::as_object) else {
        return Err("mock: request body must be a JSON object".into());
    };
    if !body.get("model").is_some_and(Value::is_string) {
        return Err("mock: model: Field required (string)".into());
    }
    let max_tokens = match body.get("max_tokens") {
        None if count_tokens => None,
        None => return Err("mock: max_tokens: Field required".into()),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ if count_tokens => None,
            _ => {
                return Err(format!(
                    "mock: max_tokens: Input should be an integer greater than or equal to 1 (got {v})"
                ));
            }
        },
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "mock: stream: Input should be a valid boolean (got {v})"
            ));
        }
    };

    // messages
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("mock: messages: Field required (array)".into());
    };
    if messages.is_empty() {
        return Err("mock: messages: at least one message is required".into());
    }
    for (i, msg) in messages.iter().enumerate() {
        let role = msg.get("role").and_then(Value::as_str);
        match role {
            Some("user" | "assistant") => {}
            Some(other) => {
                return Err(format!(
                    "mock: messages.{i}.role: Unexpected role {other:?}. Allowed roles are \"user\" or \"assistant\" (put system prompts in the top-level `system` field)"
                ));
            }
            None => return Err(format!("mock: messages.{i}.role: Field required")),
        }
        if i == 0 && role != Some("user") {
            return Err("mock: messages: first message must use the \"user\" role".into());
        }
        match msg.get("content") {
            Some(Value::String(s)) => {
                let is_final_assistant = i + 1 == messages.len() && role == Some("assistant");
                if s.trim().is_empty() && !is_final_assistant {
                    return Err(format!(
                        "mock: messages.{i}: text content blocks must be non-empty"
                    ));
                }
            }
            Some(Value::Array(blocks)) => check_blocks(blocks, &format!("messages.{i}.content"))?,
            _ => {
                return Err(format!(
                    "mock: messages.{i}.content: Input should be a string or an array of content blocks"
                ));
            }
        }
    }
    check_tool_pairing(messages)?;

    // system
    match body.get("system") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(format!(
                        "mock: system.{j}: system blocks must be {{\"type\":\"text\",\"text\":...}}"
                    ));
                }
                check_text(block.get("text"), &format!("system.{j}"))?;
            }
        }
        Some(_) => {
            return Err("mock: system: Input should be a string or an array of text blocks".into());
        }
    }

    // cache_control budget
    let markers: usize = ["system", "messages", "tools"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(count_cache_control)
        .sum();
    if markers > 4 {
        return Err(format!(
            "mock: A maximum of 4 blocks with cache_control may be provided. Found {markers}."
        ));
    }

    // sampling parameters
    let temperature = body.get("temperature").filter(|v| !v.is_null());
    let top_p = body.get("top_p").filter(|v| !v.is_null());
    let top_k = body.get("top_k").filter(|v| !v.is_null());
    if temperature.is_some() && top_p.is_some() {
        return Err(
            "mock: `temperature` and `top_p` cannot both be specified for this model. Please use only one."
                .into(),
        );
    }

    // thinking
    if let Some(thinking) = body.get("thinking").filter(|v| !v.is_null()) {
        let ty = thinking.get("type").and_then(Value::as_str);
        match ty {
            Some("enabled") => {
                let Some(budget) = thinking.get("budget_tokens").and_then(Value::as_u64) else {
                    return Err(
                        "mock: thinking.enabled.budget_tokens: Field required (integer)".into(),
                    );
                };
                if budget < 1024 {
                    return Err(format!(
                        "mock: thinking.enabled.budget_tokens: Input should be greater than or equal to 1024 (got {budget})"
                    ));
                }
                let interleaved = req
                    .header("anthropic-beta")
                    .is_some_and(|b| b.contains(INTERLEAVED_THINKING_BETA));
                if let Some(max) = max_tokens
                    && budget >= max
                    && !interleaved
                {
                    return Err(format!(
                        "mock: `max_tokens` must be greater than `thinking.budget_tokens` (max_tokens {max}, budget_tokens {budget})"
                    ));
                }
                if let Some(t) = temperature
                    && t.as_f64() != Some(1.0)
                {
                    return Err(format!(
                        "mock: `temperature` may only be set to 1 when thinking is enabled (got {t})"
                    ));
                }
                if top_k.is_some() {
                    return Err("mock: `top_k` must be unset when thinking is enabled".into());
                }
                if let Some(p) = top_p
                    && !p.as_f64().is_some_and(|p| (0.95..=1.0).contains(&p))
                {
                    return Err(format!(
                        "mock: `top_p` must be between 0.95 and 1 or unset when thinking is enabled (got {p})"
                    ));
                }
            }
            Some("disabled" | "adaptive") => {}
            _ => {
                return Err(format!(
                    "mock: thinking.type: Input should be 'enabled', 'disabled' or 'adaptive' (got {thinking})"
                ));
            }
        }
    }

    if !count_tokens
        && !stream
        && let Some(max) = max_tokens
        && max > NON_STREAMING_MAX_TOKENS
    {
        return Err(format!(
            "mock: Streaming is required for operations that may take longer than 10 minutes (non-streaming request with max_tokens {max} > {NON_STREAMING_MAX_TOKENS})"
        ));
    }
    Ok(())
}

fn thinking_enabled(body: &Value) -> bool {
    body.get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        == Some("enabled")
}

fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    })
}

/// A complete non-streaming Messages response.
pub fn message_json(
    id: &str,
    model: &str,
    content: Vec<Value>,
    stop_reason: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage(input_tokens, output_tokens),
    })
}

/// Splits `text` into `parts` pieces on character boundaries (at least one piece).
pub(crate) fn text_chunks(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
}

fn ev(name: &str, data: Value) -> SseEventSpec {
    SseEventSpec::named(name, &data)
}

fn message_start(id: &str, model: &str, input_tokens: u64) -> SseEventSpec {
    ev(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage(input_tokens, 1),
        }}),
    )
}

fn block_stop(index: usize) -> SseEventSpec {
    ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

fn message_end(stop_reason: &str, output_tokens: u64) -> [SseEventSpec; 2] {
    [
        ev(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": output_tokens}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

/// The full event sequence of a streamed text reply: `message_start`, `ping`, optionally a
/// thinking block (`thinking_delta` + `signature_delta`), a text block whose text is split into
/// at least 3 `text_delta`s (for text of 3+ characters), `message_delta` (`end_turn`) and
/// `message_stop`.
pub fn text_stream_events(
    id: &str,
    model: &str,
    text: &str,
    input_tokens: u64,
    output_tokens: u64,
    thinking: Option<(&str, &str)>,
) -> Vec<SseEventSpec> {
    let mut events = vec![
        message_start(id, model, input_tokens),
        ev("ping", json!({"type": "ping"})),
    ];
    let mut index = 0;
    if let Some((thought, signature)) = thinking {
        events.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ));
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "thinking_delta", "thinking": thought}}),
        ));
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "signature_delta", "signature": signature}}),
        ));
        events.push(block_stop(index));
        index += 1;
    }
    events.push(ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
               "content_block": {"type": "text", "text": ""}}),
    ));
    for piece in text_chunks(text, 4) {
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(block_stop(index));
    events.extend(message_end("end_turn", output_tokens));
    events
}

/// A streamed reply that calls one tool: `message_start`, a `tool_use` block whose input
/// arrives as the given `input_json_delta` fragments, `message_delta` (`tool_use`),
/// `message_stop`. The fragments must concatenate to a JSON object.
pub fn tool_use_stream_events(
    id: &str,
    model: &str,
    tool_use_id: &str,
    tool_name: &str,
    input_json_fragments: &[&str],
    input_tokens: u64,
    output_tokens: u64,
) -> Vec<SseEventSpec> {
    let mut events = vec![
        message_start(id, model, input_tokens),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "tool_use", "id": tool_use_id, "name": tool_name, "input": {}}}),
        ),
    ];
    for fragment in input_json_fragments {
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "input_json_delta", "partial_json": fragment}}),
        ));
    }
    events.push(block_stop(0));
    events.extend(message_end("tool_use", output_tokens));
    events
}

/// The default reply to a valid `/v1/messages` request.
pub(crate) fn default_reply(body: &Value, n: u64) -> Generated {
    let id = format!("msg_mock_{n}");
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model");
    let input_tokens = estimate_input_tokens(body);
    let thinking = thinking_enabled(body).then_some((MOCK_THINKING, MOCK_SIGNATURE));
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Generated::Stream(text_stream_events(
            &id,
            model,
            MOCK_TEXT,
            input_tokens,
            DEFAULT_OUTPUT_TOKENS,
            thinking,
        ));
    }
    let mut content = Vec::new();
    if let Some((thought, signature)) = thinking {
        content.push(json!({"type": "thinking", "thinking": thought, "signature": signature}));
    }
    content.push(json!({"type": "text", "text": MOCK_TEXT}));
    Generated::Json(message_json(
        &id,
        model,
        content,
        "end_turn",
        input_tokens,
        DEFAULT_OUTPUT_TOKENS,
    ))
}

/// The default reply to a valid `/count_tokens` request.
pub(crate) fn count_tokens_reply(body: &Value) -> Value {
    let mut out = Map::new();
    out.insert("input_tokens".into(), estimate_input_tokens(body).into());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn req(body: Value, beta: Option<&str>) -> RecordedRequest {
        let mut headers = HeaderMap::new();
        if let Some(b) = beta
            && let Ok(v) = b.parse()
        {
            headers.insert("anthropic-beta", v);
        }
        RecordedRequest::new(
            "POST",
            "/api/llm/a/v1/messages",
            None,
            &headers,
            body.to_string().into(),
        )
    }

    fn base() -> Value {
        json!({"model": "claude-x", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(mut v: Value, key: &str, val: Value) -> Value {
        if let Some(o) = v.as_object_mut() {
            o.insert(key.into(), val);
        }
        v
    }

    fn err(body: Value) -> String {
        validate(&req(body, None), false).expect_err("should be rejected")
    }

    #[test]
    fn thinking_rules() {
        let thinking = |b: u64| json!({"type": "enabled", "budget_tokens": b});
        assert!(validate(&req(with(base(), "thinking", thinking(2048)), None), false).is_ok());
        assert!(err(with(base(), "thinking", thinking(512))).contains("1024"));
        let e = err(with(base(), "thinking", thinking(4096)));
        assert!(e.starts_with("mock:") && e.contains("max_tokens"), "{e}");
        // The interleaved-thinking beta lifts the budget < max_tokens rule.
        let beta = Some("fine-grained-tool-streaming-2025-05-14, interleaved-thinking-2025-05-14");
        assert!(validate(&req(with(base(), "thinking", thinking(8192)), beta), false).is_ok());
        let t = with(base(), "thinking", thinking(2048));
        assert!(err(with(t.clone(), "temperature", json!(0.5))).contains("temperature"));
        assert!(validate(&req(with(t.clone(), "temperature", json!(1)), None), false).is_ok());
        assert!(err(with(t.clone(), "top_k", json!(5))).contains("top_k"));
        assert!(err(with(t.clone(), "top_p", json!(0.5))).contains("top_p"));
        assert!(validate(&req(with(t, "top_p", json!(0.97)), None), false).is_ok());
        let both = with(with(base(), "temperature", json!(0.2)), "top_p", json!(0.9));
        assert!(err(both).contains("cannot both"));
    }

    #[test]
    fn message_shape_rules() {
        assert!(err(json!([])).contains("JSON object"));
        let mut no_max = base();
        if let Some(o) = no_max.as_object_mut() {
            o.remove("max_tokens");
        }
        assert!(err(no_max.clone()).contains("max_tokens"));
        assert!(
            validate(&req(no_max, None), true).is_ok(),
            "count_tokens needs no max_tokens"
        );
        assert!(err(with(base(), "messages", json!([]))).contains("messages"));
        let assistant_first = json!([{"role": "assistant", "content": "x"}]);
        assert!(err(with(base(), "messages", assistant_first)).contains("first message"));
        let system_role =
            json!([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]);
        assert!(err(with(base(), "messages", system_role)).contains("role"));
        let empty_text = json!([{"role": "user", "content": [{"type": "text", "text": ""}]}]);
        assert!(err(with(base(), "messages", empty_text)).contains("non-empty"));
        assert!(
            err(with(
                base(),
                "system",
                json!([{"type": "text", "text": ""}])
            ))
            .contains("text content blocks must be non-empty")
        );
        assert!(err(with(base(), "system", json!(5))).contains("system"));
        let cc = json!({"type": "ephemeral"});
        let system: Vec<Value> = (0..5)
            .map(|i| json!({"type": "text", "text": format!("s{i}"), "cache_control": cc}))
            .collect();
        assert!(err(with(base(), "system", Value::Array(system))).contains("maximum of 4"));
        assert!(err(with(base(), "max_tokens", json!(32000))).contains("Streaming is required"));
        let streaming = with(
            with(base(), "max_tokens", json!(32000)),
            "stream",
            json!(true),
        );
        assert!(validate(&req(streaming, None), false).is_ok());
    }

    #[test]
    fn tool_pairing_rules() {
        let tool_use = |id: &str| json!({"type": "tool_use", "id": id, "name": "f", "input": {}});
        let tool_result =
            |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "ok"});
        let convo = |assistant: Vec<Value>, user: Vec<Value>| {
            with(
                base(),
                "messages",
                json!([
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": assistant},
                    {"role": "user", "content": user},
                ]),
            )
        };
        let ok = convo(vec![tool_use("toolu_1")], vec![tool_result("toolu_1")]);
        assert!(validate(&req(ok, None), false).is_ok());
        let missing = convo(
            vec![tool_use("toolu_1"), tool_use("toolu_2")],
            vec![tool_result("toolu_1")],
        );
        assert!(err(missing).contains("toolu_2"));
        let late = convo(
            vec![tool_use("toolu_1")],
            vec![
                json!({"type": "text", "text": "first"}),
                tool_result("toolu_1"),
            ],
        );
        assert!(err(late).contains("come first"));
        let bad_id = convo(vec![tool_use("call:1")], vec![tool_result("call:1")]);
        assert!(err(bad_id).contains("pattern"));
        let stray = convo(
            vec![json!({"type": "text", "text": "x"})],
            vec![tool_result("t9")],
        );
        assert!(err(stray).contains("unexpected `tool_use_id`"));
    }

    #[test]
    fn token_estimate_tracks_system() {
        let a = estimate_input_tokens(&base());
        let b = estimate_input_tokens(&with(base(), "system", json!("a long system prompt here")));
        assert!(a >= 1 && b > a);
    }

    #[test]
    fn text_is_split_on_char_boundaries() {
        let parts = text_chunks(MOCK_TEXT, 4);
        assert!(parts.len() >= 3);
        assert_eq!(parts.concat(), MOCK_TEXT);
    }
}
