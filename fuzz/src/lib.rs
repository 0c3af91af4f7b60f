//! Shared oracles of the fuzz targets: how inputs are decoded and what every output must satisfy.
//! A failed `assert!` here is a finding, like a panic inside the gateway's code.

use std::collections::HashSet;

use droid2api::config::{Model, ModelKind, ReasoningBudgets, ReasoningLevel};
use droid2api::sse::{Decoder, Event};
use droid2api::translate::chat::ChatChunks;
use droid2api::translate::{Context, Prepared, TranslateError};
use serde_json::Value;

/// Every reasoning level a model can be configured with.
pub const LEVELS: [ReasoningLevel; 5] = [
    ReasoningLevel::Auto,
    ReasoningLevel::Off,
    ReasoningLevel::Low,
    ReasoningLevel::Medium,
    ReasoningLevel::High,
];

/// The upstream model id every translated body must carry.
pub const MODEL_ID: &str = "upstream-model-id";

pub fn model(kind: ModelKind, reasoning: ReasoningLevel) -> Model {
    Model {
        id: MODEL_ID.into(),
        name: "fuzz".into(),
        kind,
        reasoning,
        provider: None,
        default_max_tokens: 4096,
        max_output_tokens: kind.default_max_output_tokens(),
    }
}

/// With and without a configured system prompt.
pub fn contexts() -> [Context<'static>; 2] {
    [
        Context {
            system_prompt: "",
            budgets: ReasoningBudgets::default(),
            embedded_json_values: 200_000,
        },
        Context {
            system_prompt: "You are Droid.\n\n",
            budgets: ReasoningBudgets::default(),
            embedded_json_values: 200_000,
        },
    ]
}

/// The request body of a request target: the input bytes as JSON (any value, not only objects:
/// the translators must refuse the rest with a 400). `None` when the bytes are not JSON, which
/// the body reader rejects before any translator runs.
pub fn request(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// Checks shared by every translator's answer: an error names a field and says something; a
/// translation is an object naming the upstream model that serialises.
pub fn check_result(result: &Result<Prepared, TranslateError>) -> Option<&Prepared> {
    match result {
        Err(e) => {
            assert!(!e.param.is_empty(), "error without a param: {e:?}");
            assert!(!e.message.is_empty(), "error without a message: {e:?}");
            None
        }
        Ok(p) => {
            let body = p.body.as_object().expect("upstream body is an object");
            assert_eq!(body.get("model").and_then(Value::as_str), Some(MODEL_ID));
            // Serialises to JSON that parses back to the same shape. (Not to an equal value:
            // without serde_json's `float_roundtrip` feature a float's last bit may change.)
            let bytes = serde_json::to_vec(&p.body).expect("upstream body serialises");
            let back: Value = serde_json::from_slice(&bytes).expect("and parses back");
            let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&back), keys(&p.body));
            if let Some(beta) = &p.anthropic_beta {
                assert!(!beta.trim().is_empty(), "empty anthropic-beta header");
            }
            Some(p)
        }
    }
}

/// Anthropic thinking set by a fixed level: `max_tokens` is set and the budget stays in
/// [1024, max_tokens) (§5.3). (Levels auto and off keep the client's `max_tokens`, even 0.)
pub fn check_fixed_level_thinking(body: &Value, level: ReasoningLevel) {
    if !matches!(
        level,
        ReasoningLevel::Low | ReasoningLevel::Medium | ReasoningLevel::High
    ) {
        return;
    }
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
    assert!(max_tokens.is_some_and(|m| m >= 1), "max_tokens: {body}");
    if let Some(t) = body.get("thinking") {
        let budget = t.get("budget_tokens").and_then(Value::as_u64);
        assert!(
            budget.is_some_and(|b| b >= 1024 && Some(b) < max_tokens),
            "thinking budget must stay in [1024, max_tokens): {body}"
        );
    }
}

/// Decodes a whole byte string as SSE (one piece), dispatching a final unterminated event too.
pub fn decode_all(bytes: &[u8]) -> Vec<Event> {
    let mut d = Decoder::new().with_dispatch_incomplete(true);
    let mut out = Vec::new();
    d.feed(bytes, &mut out);
    d.finish(&mut out);
    out
}

pub fn chunks(include_usage: bool) -> ChatChunks {
    ChatChunks {
        id: "chatcmpl-fuzz".into(),
        created: 1_764_158_400,
        model: "client-model".into(),
        include_usage,
    }
}

/// What a finished chat stream translator wrote must be a valid `chat.completion.chunk` stream:
/// complete SSE events without names; every data a JSON object (or `[DONE]`); the role chunk
/// first; exactly one terminal frame, last: `[DONE]` after a finish chunk, or an error chunk,
/// the latter exactly when the translator reports a failure; tool-call indexes dense from 0.
pub fn check_chat_stream(out: &str, failed: bool) {
    let mut d = Decoder::new();
    let mut events = Vec::new();
    d.feed(out.as_bytes(), &mut events);
    assert!(d.finish(&mut events), "output ends inside an event: {out:?}");
    let (last, body) = events.split_last().expect("a finished stream wrote something");
    let mut announced: HashSet<u64> = HashSet::new();
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.event, None, "chat chunks carry no event name");
        if ev.is_done() {
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data).expect("chunk data is JSON");
        assert!(v.is_object(), "chunk data is an object: {}", ev.data);
        if v.get("error").is_some() {
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["id"], "chatcmpl-fuzz");
        assert_eq!(v["model"], "client-model");
        let choices = v["choices"].as_array().expect("choices");
        if i == 0 {
            assert_eq!(
                choices[0]["delta"],
                serde_json::json!({"role": "assistant", "content": ""}),
                "the role chunk comes first"
            );
        }
        for c in choices {
            assert_eq!(c["index"], 0);
            for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().expect("tool call index");
                if call.get("id").is_some() {
                    assert_eq!(
                        index,
                        announced.len() as u64,
                        "tool calls are numbered from 0 in order"
                    );
                    announced.insert(index);
                } else {
                    assert!(announced.contains(&index), "fragment of an unknown call");
                }
            }
        }
    }
    for ev in body {
        assert!(!ev.is_done(), "[DONE] before the end");
        assert!(
            !ev.data.starts_with("{\"error\""),
            "an error chunk before the end"
        );
    }
    let is_error = last.data.starts_with("{\"error\"");
    assert!(last.is_done() || is_error, "no terminal frame: {out:?}");
    assert_eq!(is_error, failed, "failure reported iff the stream ends in an error");
    if last.is_done() {
        let finish = body
            .iter()
            .rev()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .find(|v| v["choices"].as_array().is_some_and(|c| !c.is_empty()))
            .expect("a finish chunk before [DONE]");
        assert!(
            finish["choices"][0]["finish_reason"].is_string(),
            "the last choice chunk before [DONE] has a finish reason"
        );
    }
}
