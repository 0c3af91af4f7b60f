//! Same-format routes: the client's body goes upstream in its own format, with the system prompt
//! injected, the model id resolved and the reasoning level applied. Unknown fields pass through.
//!
//! System prompt injection (`translation.md` G7):
//! - Anthropic: the prompt becomes its own first text block of `system`, without `cache_control`;
//!   a client `system` string becomes the next block; client blocks are never edited, so the
//!   client's cache markers stay as they were (count_tokens gets the same, so counts match).
//! - Responses: `instructions` = prompt + client instructions.
//! - Chat (common): a new first system message holds the prompt; client messages follow unchanged.

use serde_json::{Map, Value, json};

use super::aggregate::stream_upstream;
use super::reasoning::{self, anthropic_beta};
use super::{Context, Prepared, TranslateError};
use crate::config::Model;

fn into_object(body: Value) -> Result<Map<String, Value>, TranslateError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(TranslateError::new("body", "expected a JSON object")),
    }
}

fn stream_flag(body: &Map<String, Value>) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// Puts the prompt first in an Anthropic `system` field.
pub fn inject_anthropic_system(
    body: &mut Map<String, Value>,
    prompt: &str,
) -> Result<(), TranslateError> {
    if prompt.is_empty() {
        return Ok(());
    }
    let first = json!({"type": "text", "text": prompt});
    let system = match body.remove("system") {
        None | Some(Value::Null) => vec![first],
        Some(Value::String(s)) if super::is_blank(&s) => vec![first],
        Some(Value::String(s)) => vec![first, json!({"type": "text", "text": s})],
        Some(Value::Array(blocks)) => {
            let mut v = Vec::with_capacity(blocks.len() + 1);
            v.push(first);
            v.extend(blocks);
            v
        }
        Some(_) => {
            return Err(TranslateError::new(
                "system",
                "expected a string or an array of text blocks",
            ));
        }
    };
    body.insert("system".into(), Value::Array(system));
    Ok(())
}

/// `POST /v1/messages` and `/v1/messages/count_tokens` (anthropic models).
pub fn prepare_messages(
    body: Value,
    model: &Model,
    ctx: &Context<'_>,
    client_beta: Option<&str>,
    count_tokens: bool,
) -> Result<Prepared, TranslateError> {
    let mut body = into_object(body)?;
    body.insert("model".into(), json!(model.id));
    inject_anthropic_system(&mut body, ctx.system_prompt)?;
    if count_tokens {
        // Token counting sends no thinking change and keeps the client's betas.
        return Ok(Prepared {
            body: Value::Object(body),
            stream: false,
            aggregate: false,
            anthropic_beta: client_beta
                .map(str::to_string)
                .filter(|b| !b.trim().is_empty()),
            drop_usage_chunk: false,
        });
    }
    let stream = stream_flag(&body);
    // A whole answer is assembled from a stream (`aggregate`): the thinking budget is then
    // never cut to Anthropic's non-streaming limit.
    let aggregate = stream_upstream(&mut body);
    let thinking_on = reasoning::apply_anthropic(&mut body, model, ctx.budgets);
    Ok(Prepared {
        body: Value::Object(body),
        stream,
        aggregate,
        anthropic_beta: anthropic_beta(client_beta, model.reasoning, thinking_on),
        drop_usage_chunk: false,
    })
}

/// `POST /v1/responses` (openai models).
pub fn prepare_responses(
    body: Value,
    model: &Model,
    ctx: &Context<'_>,
) -> Result<Prepared, TranslateError> {
    let mut body = into_object(body)?;
    body.insert("model".into(), json!(model.id));
    if !ctx.system_prompt.is_empty() {
        let instructions = match body.remove("instructions") {
            None | Some(Value::Null) => ctx.system_prompt.to_string(),
            Some(Value::String(s)) => format!("{}{s}", ctx.system_prompt),
            Some(_) => return Err(TranslateError::new("instructions", "expected a string")),
        };
        body.insert("instructions".into(), Value::String(instructions));
    }
    reasoning::apply_responses(&mut body, model.reasoning);
    let stream = stream_flag(&body);
    let aggregate = stream_upstream(&mut body);
    Ok(Prepared {
        stream,
        aggregate,
        body: Value::Object(body),
        anthropic_beta: None,
        drop_usage_chunk: false,
    })
}

/// `POST /v1/chat/completions` for common-type models (upstream speaks Chat Completions too).
pub fn prepare_common_chat(
    body: Value,
    model: &Model,
    ctx: &Context<'_>,
) -> Result<Prepared, TranslateError> {
    let mut body = into_object(body)?;
    body.insert("model".into(), json!(model.id));
    let messages = match body.get_mut("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => {
            return Err(TranslateError::new(
                "messages",
                "expected an array of messages",
            ));
        }
        None => return Err(TranslateError::new("messages", "is required")),
    };
    if !ctx.system_prompt.is_empty() {
        messages.insert(0, json!({"role": "system", "content": ctx.system_prompt}));
    }
    reasoning::apply_chat(&mut body, model.reasoning);
    let stream = stream_flag(&body);
    let mut drop_usage_chunk = false;
    if stream {
        // Ask upstream for usage so the gateway always knows it; hide it from a client that did
        // not ask for it.
        let options = body.entry("stream_options").or_insert_with(|| json!({}));
        if !options.is_object() {
            *options = json!({});
        }
        if let Some(o) = options.as_object_mut() {
            let client_asked = o.get("include_usage").and_then(Value::as_bool) == Some(true);
            drop_usage_chunk = !client_asked;
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    Ok(Prepared {
        body: Value::Object(body),
        stream,
        aggregate: false,
        anthropic_beta: None,
        drop_usage_chunk,
    })
}

/// Whether a Chat stream chunk is the usage-only chunk (`choices: []` with a `usage` object).
pub fn is_usage_only_chunk(data: &str) -> bool {
    // Cheap pre-check before parsing: only a chunk mentioning usage can be one.
    if !data.contains("\"usage\"") {
        return false;
    }
    match serde_json::from_str::<Value>(data) {
        Ok(v) => {
            v.get("choices")
                .and_then(Value::as_array)
                .is_some_and(|c| c.is_empty())
                && v.get("usage").is_some_and(Value::is_object)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelKind, ReasoningBudgets, ReasoningLevel};

    const PROMPT: &str = "You are Droid.\n\n";

    fn ctx() -> Context<'static> {
        Context {
            system_prompt: PROMPT,
            budgets: ReasoningBudgets::default(),
            embedded_json_values: 200_000,
        }
    }

    fn model(kind: ModelKind, level: ReasoningLevel) -> Model {
        Model {
            id: "real-id".into(),
            name: "n".into(),
            kind,
            reasoning: level,
            provider: None,
            default_max_tokens: 4096,
            max_output_tokens: kind.default_max_output_tokens(),
        }
    }

    fn anthropic_system(system: Option<Value>) -> Value {
        let mut body = json!({"model": "alias", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        if let Some(s) = system {
            body["system"] = s;
        }
        let p = prepare_messages(
            body,
            &model(ModelKind::Anthropic, ReasoningLevel::Auto),
            &ctx(),
            None,
            false,
        )
        .unwrap();
        assert_eq!(p.body["model"], "real-id");
        p.body["system"].clone()
    }

    #[test]
    fn system_absent_string_array() {
        assert_eq!(
            anthropic_system(None),
            json!([{"type": "text", "text": PROMPT}])
        );
        assert_eq!(
            anthropic_system(Some(json!("Be terse."))),
            json!([{"type": "text", "text": PROMPT}, {"type": "text", "text": "Be terse."}])
        );
        let client = json!([{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}]);
        assert_eq!(
            anthropic_system(Some(client)),
            json!([{"type": "text", "text": PROMPT}, {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}])
        );
        assert_eq!(
            anthropic_system(Some(json!(""))),
            json!([{"type": "text", "text": PROMPT}])
        );
    }

    #[test]
    fn bad_system_is_a_400() {
        let e = prepare_messages(
            json!({"system": 5}),
            &model(ModelKind::Anthropic, ReasoningLevel::Auto),
            &ctx(),
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(e.param, "system");
    }

    #[test]
    fn empty_prompt_injects_nothing() {
        let c = Context {
            system_prompt: "",
            budgets: ReasoningBudgets::default(),
            embedded_json_values: 200_000,
        };
        let p = prepare_messages(
            json!({"system": "S"}),
            &model(ModelKind::Anthropic, ReasoningLevel::Auto),
            &c,
            None,
            false,
        )
        .unwrap();
        assert_eq!(p.body["system"], "S");
    }

    #[test]
    fn unknown_fields_pass_through() {
        let p = prepare_messages(
            json!({"context_management": {"x": 1}, "output_config": {"effort": "low"}, "messages": []}),
            &model(ModelKind::Anthropic, ReasoningLevel::Auto),
            &ctx(),
            Some("a,b"),
            false,
        )
        .unwrap();
        assert_eq!(p.body["context_management"], json!({"x": 1}));
        assert_eq!(p.body["output_config"], json!({"effort": "low"}));
        assert_eq!(p.anthropic_beta.as_deref(), Some("a,b"));
    }

    #[test]
    fn count_tokens_gets_the_prompt_but_no_thinking() {
        let p = prepare_messages(
            json!({"messages": [], "system": "S"}),
            &model(ModelKind::Anthropic, ReasoningLevel::High),
            &ctx(),
            None,
            true,
        )
        .unwrap();
        assert_eq!(p.body["system"][0]["text"], PROMPT);
        assert!(p.body.get("thinking").is_none());
        assert!(p.body.get("max_tokens").is_none());
        assert_eq!(p.anthropic_beta, None);
    }

    #[test]
    fn responses_instructions() {
        let m = model(ModelKind::OpenAi, ReasoningLevel::Auto);
        let p = prepare_responses(
            json!({"input": "hi", "instructions": "Be kind."}),
            &m,
            &ctx(),
        )
        .unwrap();
        assert_eq!(p.body["instructions"], format!("{PROMPT}Be kind."));
        let p = prepare_responses(json!({"input": "hi", "stream": true}), &m, &ctx()).unwrap();
        assert_eq!(p.body["instructions"], PROMPT);
        assert!(p.stream);
        assert!(prepare_responses(json!({"instructions": []}), &m, &ctx()).is_err());
    }

    #[test]
    fn common_chat_prepends_a_system_message_and_asks_for_usage() {
        let m = model(ModelKind::Common, ReasoningLevel::Off);
        let client = json!([{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]);
        let p = prepare_common_chat(
            json!({"messages": client, "stream": true, "reasoning_effort": "high"}),
            &m,
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            p.body["messages"],
            json!([{"role": "system", "content": PROMPT}, {"role": "system", "content": "S"}, {"role": "user", "content": "u"}])
        );
        assert_eq!(p.body["stream_options"], json!({"include_usage": true}));
        assert!(p.drop_usage_chunk);
        assert!(p.body.get("reasoning_effort").is_none());
        let p = prepare_common_chat(
            json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}}),
            &m,
            &ctx(),
        )
        .unwrap();
        assert!(!p.drop_usage_chunk);
        let p = prepare_common_chat(json!({"messages": []}), &m, &ctx()).unwrap();
        assert!(p.body.get("stream_options").is_none());
        assert!(prepare_common_chat(json!({"messages": "x"}), &m, &ctx()).is_err());
    }

    #[test]
    fn usage_only_chunk_detection() {
        assert!(is_usage_only_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(
            r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(r#"{"choices":[],"usage":null}"#));
        assert!(!is_usage_only_chunk("[DONE]"));
    }
}
