//! Anthropic non-streaming reply → `chat.completion` (`translation.md` §2).

use serde_json::{Map, Value, json};

use super::finish_reason;
use crate::translate::chat::openai_usage;
use crate::usage::{self, WireFormat};

/// Anthropic non-streaming reply → chat.completion (§2). `client_model` = the model name the
/// client sent; `created` = unix seconds.
///
/// One choice. `content` is the concatenated text (`null` when there is none); `tool_calls`
/// come from `tool_use` blocks (arguments = the compact JSON of `input`); `reasoning_content`
/// is the concatenated thinking and `thinking_blocks` keeps the thinking and redacted-thinking
/// blocks for the next request (§5.5). Other block types are dropped.
pub fn anthropic_to_chat_response(body: &Value, client_model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for block in body
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let str_field = |k: &str| block.get(k).and_then(Value::as_str);
        match str_field("type") {
            Some("text") => text.push_str(str_field("text").unwrap_or("")),
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": str_field("id").unwrap_or(""),
                    "type": "function",
                    "function": {
                        "name": str_field("name").unwrap_or(""),
                        "arguments": input.to_string(),
                    },
                }));
            }
            Some("thinking") => {
                let thinking = str_field("thinking").unwrap_or("");
                reasoning.push_str(thinking);
                thinking_blocks.push(thinking_block(thinking, str_field("signature")));
            }
            Some("redacted_thinking") => {
                thinking_blocks.push(redacted_block(str_field("data").unwrap_or("")));
            }
            _ => {}
        }
    }

    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if !thinking_blocks.is_empty() {
        message.insert("thinking_blocks".into(), Value::Array(thinking_blocks));
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }

    let id = body.get("id").and_then(Value::as_str).unwrap_or("");
    let usage = usage::from_json(WireFormat::Anthropic, body).unwrap_or_default();
    let stop = body.get("stop_reason").and_then(Value::as_str);
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": client_model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(stop),
        }],
        "usage": openai_usage(&usage),
    })
}

/// `{type:"thinking", thinking, signature}` as returned to the client (LiteLLM's shape).
pub(super) fn thinking_block(thinking: &str, signature: Option<&str>) -> Value {
    let mut b = json!({"type": "thinking", "thinking": thinking});
    if let Some(s) = signature {
        b["signature"] = json!(s);
    }
    b
}

/// `{type:"redacted_thinking", data}`.
pub(super) fn redacted_block(data: &str) -> Value {
    json!({"type": "redacted_thinking", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// translation.md §2 worked example (with the gateway's id prefix and usage extensions).
    #[test]
    fn worked_example() {
        let body = json!({"id": "msg_01X", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "stop_reason": "tool_use", "stop_sequence": null,
            "content": [{"type": "thinking", "thinking": "Need data.", "signature": "EqQB..."},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1800, "output_tokens": 95}});
        let out = anthropic_to_chat_response(&body, "claude-sonnet", 1_764_158_400);
        assert_eq!(
            out,
            json!({"id": "chatcmpl-msg_01X", "object": "chat.completion", "created": 1_764_158_400,
                "model": "claude-sonnet", "system_fingerprint": null,
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": "Checking.", "reasoning_content": "Need data.",
                        "thinking_blocks": [{"type": "thinking", "thinking": "Need data.", "signature": "EqQB..."}],
                        "tool_calls": [{"id": "toolu_01A", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
                "usage": {"prompt_tokens": 1820, "completion_tokens": 95, "total_tokens": 1915,
                    "prompt_tokens_details": {"cached_tokens": 1800},
                    "completion_tokens_details": {"reasoning_tokens": 0}}})
        );
        // Key order of the envelope is fixed.
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "id",
                "object",
                "created",
                "model",
                "system_fingerprint",
                "choices",
                "usage"
            ]
        );
    }

    #[test]
    fn text_blocks_concatenate_and_tool_only_reply_has_null_content() {
        let body = json!({"id": "msg_2", "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "世界 🌍"}],
            "usage": {"input_tokens": 5, "output_tokens": 3}});
        let out = anthropic_to_chat_response(&body, "m", 1);
        assert_eq!(
            out["choices"][0]["message"],
            json!({"role": "assistant", "content": "Hello, 世界 🌍"})
        );
        assert_eq!(out["choices"][0]["finish_reason"], "stop");

        let body = json!({"id": "msg_3", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "ping", "input": {}},
                        {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {"a": [1, 2], "b": "x"}}],
            "usage": {"input_tokens": 5, "output_tokens": 3}});
        let out = anthropic_to_chat_response(&body, "m", 1);
        assert_eq!(
            out["choices"][0]["message"],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "ping", "arguments": "{}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get", "arguments": "{\"a\":[1,2],\"b\":\"x\"}"}}]})
        );
    }

    #[test]
    fn redacted_thinking_is_kept_for_round_trip_and_unknown_blocks_dropped() {
        let body = json!({"id": "msg_4", "stop_reason": "end_turn",
            "content": [{"type": "redacted_thinking", "data": "EmwKAhgB"},
                        {"type": "thinking", "thinking": "", "signature": "sig"},
                        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                        {"type": "text", "text": "Done.", "citations": [{"type": "char_location"}]}],
            "usage": {"input_tokens": 1, "output_tokens": 2}});
        let out = anthropic_to_chat_response(&body, "m", 1);
        assert_eq!(
            out["choices"][0]["message"],
            json!({"role": "assistant", "content": "Done.", "thinking_blocks": [
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "thinking", "thinking": "", "signature": "sig"}]})
        );
    }

    /// translation.md §7 rows 13 and 15: cache tokens in prompt_tokens, no raw stop reason.
    #[test]
    fn usage_with_cache_and_finish_reasons() {
        let body = json!({"id": "msg_5", "stop_reason": "max_tokens",
            "content": [{"type": "text", "text": "partial"}],
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000, "output_tokens": 7}});
        let out = anthropic_to_chat_response(&body, "m", 1);
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 1110, "completion_tokens": 7, "total_tokens": 1117,
                "prompt_tokens_details": {"cached_tokens": 1000},
                "completion_tokens_details": {"reasoning_tokens": 0},
                "cache_creation_input_tokens": 100})
        );
        for (stop, finish) in [
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("stop_sequence", "stop"),
            ("model_context_window_exceeded", "length"),
        ] {
            let body = json!({"id": "m", "stop_reason": stop, "content": []});
            let out = anthropic_to_chat_response(&body, "m", 1);
            assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
            assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
        }
    }

    #[test]
    fn missing_usage_and_id_do_not_panic() {
        let out = anthropic_to_chat_response(&json!({}), "m", 9);
        assert_eq!(out["id"], "chatcmpl-");
        assert_eq!(out["usage"]["total_tokens"], 0);
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
    }
}
