//! OpenAI Responses non-streaming reply → `chat.completion` (`translation.md` §4.2).

use serde_json::{Value, json};

use super::UpstreamError;
use crate::translate::StreamFailure;
use crate::translate::chat::openai_usage;
use crate::usage::{self, WireFormat};

/// The message of a failed response that carries no `error.message`.
pub(super) const FAILED_MESSAGE: &str = "the upstream response failed";

/// Responses non-streaming reply → chat.completion (§4.2). Err when `status` is "failed"
/// (StreamFailure{status: 500 unless the error code suggests otherwise, body: an OpenAI-envelope
/// JSON built from response.error}).
pub fn responses_to_chat_response(
    body: &Value,
    client_model: &str,
    created: u64,
) -> Result<Value, StreamFailure> {
    let status = body.get("status").and_then(Value::as_str);
    if status == Some("failed") {
        let error = body.get("error").filter(|e| e.is_object());
        return Err(UpstreamError::from_json(error, FAILED_MESSAGE).failure());
    }
    let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);

    let mut content: Option<String> = None;
    let mut refusal: Option<String> = None;
    let mut reasoning: Vec<String> = Vec::new();
    let mut tool_calls: Vec<Value> = Vec::new();
    let output = body.get("output").and_then(Value::as_array);
    for item in output.into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let parts = item.get("content").and_then(Value::as_array);
                for part in parts.into_iter().flatten() {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => {
                            if let Some(t) = part.get("text").and_then(Value::as_str) {
                                content.get_or_insert_default().push_str(t);
                            }
                        }
                        Some("refusal") => {
                            if let Some(r) = part.get("refusal").and_then(Value::as_str) {
                                refusal.get_or_insert_default().push_str(r);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                let id = str_of(item, "call_id")
                    .or_else(|| str_of(item, "id"))
                    .unwrap_or_default();
                let arguments = str_of(item, "arguments")
                    .filter(|a| !a.trim().is_empty())
                    .unwrap_or_else(|| "{}".to_string());
                tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": str_of(item, "name").unwrap_or_default(), "arguments": arguments},
                }));
            }
            Some("reasoning") => {
                for key in ["summary", "content"] {
                    let parts = item.get(key).and_then(Value::as_array);
                    for part in parts.into_iter().flatten() {
                        if let Some(t) = part.get("text").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            reasoning.push(t.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    let finish_reason = match status {
        Some("incomplete") => incomplete_finish_reason(body),
        _ if !tool_calls.is_empty() => "tool_calls",
        _ => "stop",
    };

    let mut message = json!({"role": "assistant", "content": content, "refusal": refusal});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning.join("\n\n"));
    }
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
    let usage = usage::from_json(WireFormat::Responses, body).unwrap_or_default();
    Ok(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": client_model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": openai_usage(&usage),
        "system_fingerprint": null,
    }))
}

/// The finish reason of an incomplete response (`response` object): `content_filter`, else
/// `length` (`max_output_tokens`, or a reason this code does not know: the answer is cut short
/// either way, so never `stop`).
pub(super) fn incomplete_finish_reason(response: &Value) -> &'static str {
    let reason = response
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    match reason {
        Some("content_filter") => "content_filter",
        _ => "length",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(body: Value) -> Value {
        responses_to_chat_response(&body, "gpt-client-name", 1_764_158_400).unwrap()
    }

    #[test]
    fn text_reasoning_tool_calls_and_cached_usage() {
        let body = json!({
            "id": "resp_abc", "object": "response", "created_at": 1_764_158_400, "status": "completed",
            "model": "gpt-5-2025-08-07", "error": null, "incomplete_details": null,
            "output": [
                {"id": "rs_1", "type": "reasoning", "summary": [
                    {"type": "summary_text", "text": "**Plan**\n\nLook it up."},
                    {"type": "summary_text", "text": "Call the tool."}]},
                {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [
                    {"type": "output_text", "text": "Let me ", "annotations": []},
                    {"type": "output_text", "text": "check.", "annotations": []}]},
                {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_P",
                 "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"id": "fc_2", "type": "function_call", "status": "completed", "call_id": "call_T",
                 "name": "get_time", "arguments": ""}
            ],
            "usage": {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096},
                      "output_tokens": 700, "output_tokens_details": {"reasoning_tokens": 512}, "total_tokens": 5700}
        });
        assert_eq!(
            convert(body).to_string(),
            json!({
                "id": "chatcmpl-resp_abc", "object": "chat.completion", "created": 1_764_158_400,
                "model": "gpt-client-name",
                "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": "Let me check.", "refusal": null,
                    "reasoning_content": "**Plan**\n\nLook it up.\n\nCall the tool.",
                    "tool_calls": [
                        {"id": "call_P", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_T", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
                    ]}, "logprobs": null, "finish_reason": "tool_calls"}],
                // §7 row 13: prompt_tokens include the cached tokens, details kept.
                "usage": {"prompt_tokens": 5000, "completion_tokens": 700, "total_tokens": 5700,
                          "prompt_tokens_details": {"cached_tokens": 4096},
                          "completion_tokens_details": {"reasoning_tokens": 512}},
                "system_fingerprint": null
            })
            .to_string()
        );
    }

    #[test]
    fn plain_text_refusal_and_no_text() {
        let body = json!({"id": "resp_1", "status": "completed", "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}],
            "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}});
        let v = convert(body);
        assert_eq!(
            v["choices"][0]["message"],
            json!({"role": "assistant", "content": "Hi", "refusal": null})
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 3);

        let body = json!({"id": "resp_2", "status": "completed", "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}]});
        let v = convert(body);
        assert_eq!(
            v["choices"][0]["message"],
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."})
        );
        // No usage object: zeros.
        assert_eq!(v["usage"]["total_tokens"], 0);

        let v = convert(json!({"id": "resp_3", "status": "completed", "output": []}));
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn incomplete_reasons() {
        let body = |reason: &str| {
            json!({"id": "resp_1", "status": "incomplete", "incomplete_details": {"reason": reason},
                "output": [
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Par"}]},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\""}]})
        };
        assert_eq!(
            convert(body("max_output_tokens"))["choices"][0]["finish_reason"],
            "length"
        );
        assert_eq!(
            convert(body("content_filter"))["choices"][0]["finish_reason"],
            "content_filter"
        );
        // Whatever the reason, an incomplete answer is never reported as a normal stop.
        assert_eq!(
            convert(body("something_new"))["choices"][0]["finish_reason"],
            "length"
        );
    }

    #[test]
    fn failed_is_an_error() {
        let body = json!({"id": "resp_1", "status": "failed", "output": [],
            "error": {"code": "rate_limit_exceeded", "message": "Rate limit reached."}});
        let e = responses_to_chat_response(&body, "m", 1).unwrap_err();
        assert_eq!(e.status, 429);
        assert_eq!(
            serde_json::from_slice::<Value>(&e.body).unwrap(),
            json!({"error": {"message": "Rate limit reached.", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
        );
        let body = json!({"id": "resp_1", "status": "failed", "error": {"code": "server_error", "message": "boom"}});
        assert_eq!(
            responses_to_chat_response(&body, "m", 1)
                .unwrap_err()
                .status,
            500
        );
        let body = json!({"id": "resp_1", "status": "failed", "error": {"code": "invalid_prompt", "message": "flagged"}});
        assert_eq!(
            responses_to_chat_response(&body, "m", 1)
                .unwrap_err()
                .status,
            400
        );
        let body = json!({"id": "resp_1", "status": "failed", "error": null});
        let e = responses_to_chat_response(&body, "m", 1).unwrap_err();
        assert_eq!(e.status, 500);
        assert_eq!(
            serde_json::from_slice::<Value>(&e.body).unwrap(),
            json!({"error": {"message": FAILED_MESSAGE, "type": "server_error", "param": null, "code": null}})
        );
    }
}
