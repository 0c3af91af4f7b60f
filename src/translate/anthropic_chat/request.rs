//! Chat Completions request → Anthropic Messages request (`translation.md` §1, §5).
//!
//! Order of work:
//! 1. Reject what Claude cannot do (`n` > 1, audio output, audio input, uploaded file ids).
//! 2. Walk `messages`: system/developer texts go to `system`; every other message becomes a
//!    list of Anthropic blocks (§1.5, §1.6). Empty text is skipped everywhere, a message left
//!    without blocks is dropped, runs of one role are merged (tool results first in a user
//!    turn, replayed thinking first in an assistant turn), the first turn must be the user's,
//!    a final assistant prefill loses its trailing whitespace, and tool calls and results must
//!    pair up (§1.4).
//! 3. Top-level parameters (§1.2, §1.6, §1.7).
//! 4. Thinking (§5): a fixed model level goes through [`reasoning::apply_anthropic`]; level
//!    `auto` follows the client's `reasoning_effort` through [`reasoning::max_tokens_rule`]
//!    (or copies a client `thinking` object). Thinking is dropped for the request when the last
//!    assistant turn with tool calls has no `thinking_blocks` to replay (§5.5) or when the
//!    conversation ends in an assistant prefill (§5.2).

use serde_json::{Map, Value, json};

use crate::config::{Model, ReasoningLevel};
use crate::translate::passthrough::inject_anthropic_system;
use crate::translate::reasoning::{self, INTERLEAVED_THINKING_BETA, MIN_THINKING_BUDGET};
use crate::translate::{Context, Prepared, TranslateError};

mod messages;
mod params;
use messages::{Conversation, Role, Turn, function_name};
use params::{
    json_schema, response_format_system, sampling, stop_sequences, tool_choice, tools, user_id,
};

/// The system text added for `response_format: {"type": "json_object"}`.
pub const JSON_OBJECT_INSTRUCTION: &str = "Respond with exactly one valid JSON object and nothing else: no text before or after it and no Markdown code fences.";

/// Body keys in the order they are written upstream (others, if any, follow).
const KEY_ORDER: [&str; 14] = [
    "model",
    "max_tokens",
    "system",
    "messages",
    "tools",
    "tool_choice",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "output_config",
    "thinking",
    "stream",
];

fn err(param: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(param, message)
}

/// Chat Completions request → Anthropic Messages request (translation.md §1, §5).
pub fn chat_to_anthropic(
    body: Value,
    model: &Model,
    ctx: &Context<'_>,
    client_beta: Option<&str>,
) -> Result<Prepared, TranslateError> {
    let Value::Object(mut req) = body else {
        return Err(err("body", "expected a JSON object"));
    };
    reject_unsupported(&req)?;
    let stream = match present(&req, "stream") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(err("stream", "expected a boolean")),
    };
    let streaming = stream.unwrap_or(false);

    // Messages, tools and schemas are moved out of the request, never copied.
    let mut conv = Conversation::new(ctx.embedded_json_values);
    match req.remove("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => {
            for (i, m) in messages.into_iter().enumerate() {
                conv.message(i, m)?;
            }
        }
        Some(Value::Array(_)) => return Err(err("messages", "must not be empty")),
        Some(_) => return Err(err("messages", "expected an array of messages")),
        None => return Err(err("messages", "is required")),
    }
    let turns = conv.finish()?;
    let ends_in_prefill = turns.last().is_some_and(|t| t.role == Role::Assistant);
    // §5.5 and §5.2: thinking cannot be sent for this conversation.
    let thinking_blocked = conv.last_tool_turn_lacks_thinking || ends_in_prefill;

    let mut system = conv.system;
    if let Some(extra) = response_format_system(&req)? {
        system.push(extra);
    }
    let tools = tools(&mut req)?;
    let tool_choice = match &tools {
        Some(_) => tool_choice(&req)?,
        None => None,
    };

    let requested = max_tokens_requested(&req)?;
    // The upstream call always streams (a whole answer is assembled by the gateway), so
    // Anthropic's non-streaming `max_tokens` limit never applies.
    let cap = u64::from(model.max_output_tokens);
    let plain_max = requested
        .unwrap_or(u64::from(model.default_max_tokens))
        .min(cap)
        .max(1);

    let mut out = Map::new();
    out.insert("model".into(), json!(model.id));
    if let Some(r) = requested {
        out.insert("max_tokens".into(), json!(r));
    }
    let mut system_field = Map::new();
    if !system.is_empty() {
        system_field.insert("system".into(), Value::Array(system));
    }
    inject_anthropic_system(&mut system_field, ctx.system_prompt)?;
    if let Some(s) = system_field.remove("system") {
        out.insert("system".into(), s);
    }
    out.insert(
        "messages".into(),
        Value::Array(turns.into_iter().map(Turn::into_json).collect()),
    );
    if let Some(t) = tools {
        out.insert("tools".into(), Value::Array(t));
    }
    if let Some(c) = tool_choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(s) = stop_sequences(&mut req)? {
        out.insert("stop_sequences".into(), s);
    }
    sampling(&req, &mut out)?;
    if let Some(u) = user_id(&req)? {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if let Some(schema) = json_schema(&mut req)? {
        out.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": schema}}),
        );
    }
    out.insert("stream".into(), Value::Bool(true));

    // Thinking (§5).
    let level = model.reasoning;
    let thinking_on = match level {
        ReasoningLevel::Low | ReasoningLevel::Medium | ReasoningLevel::High
            if !thinking_blocked =>
        {
            reasoning::apply_anthropic(&mut out, model, ctx.budgets)
        }
        ReasoningLevel::Auto if !thinking_blocked => {
            auto_thinking(&mut req, &mut out, model, ctx, requested, plain_max)?
        }
        ReasoningLevel::Auto => {
            // Still reject a bad value even though thinking is dropped.
            effort_budget(&req, ctx)?;
            false
        }
        _ => false,
    };
    if thinking_on {
        reasoning::drop_sampling_forbidden_with_thinking(&mut out);
        if let Some(choice) = out.get_mut("tool_choice") {
            force_auto_tool_choice(choice);
        }
    } else {
        out.insert("max_tokens".into(), json!(plain_max));
    }

    let has_tools = out.contains_key("tools");
    let anthropic_beta = match level {
        ReasoningLevel::Auto => {
            let client = client_beta.filter(|b| !b.trim().is_empty());
            if thinking_on && has_tools {
                Some(with_interleaved(client))
            } else {
                client.map(str::to_string)
            }
        }
        _ => reasoning::anthropic_beta(client_beta, level, thinking_on),
    };

    Ok(Prepared {
        body: Value::Object(reorder(out)),
        stream: streaming,
        aggregate: !streaming,
        anthropic_beta,
        drop_usage_chunk: false,
    })
}

/// `req[key]` unless absent or null.
fn present<'a>(req: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    req.get(key).filter(|v| !v.is_null())
}

/// `n` > 1, audio output.
fn reject_unsupported(req: &Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(n) = present(req, "n")
        && n.as_u64() != Some(1)
    {
        return Err(err(
            "n",
            "only one choice (n = 1) is supported for Claude models",
        ));
    }
    if present(req, "audio").is_some() {
        return Err(err(
            "audio",
            "audio output is not supported for Claude models",
        ));
    }
    if let Some(m) = present(req, "modalities") {
        let Some(list) = m.as_array() else {
            return Err(err("modalities", "expected an array"));
        };
        if list.iter().any(|x| x == "audio") {
            return Err(err(
                "modalities",
                "audio output is not supported for Claude models",
            ));
        }
    }
    Ok(())
}

/// `max_completion_tokens`, else `max_tokens` (§1.2).
fn max_tokens_requested(req: &Map<String, Value>) -> Result<Option<u64>, TranslateError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = present(req, key) {
            let n = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                        .map(|f| f as u64)
                })
                .filter(|n| *n >= 1);
            return match n {
                Some(n) => Ok(Some(n)),
                None => Err(err(key, "expected a positive integer")),
            };
        }
    }
    Ok(None)
}

/// Level `auto`: the client's `reasoning_effort` (through the max_tokens rule), else the
/// client's own `thinking` object. Returns whether thinking is on.
fn auto_thinking(
    req: &mut Map<String, Value>,
    out: &mut Map<String, Value>,
    model: &Model,
    ctx: &Context<'_>,
    requested: Option<u64>,
    plain_max: u64,
) -> Result<bool, TranslateError> {
    if present(req, "reasoning_effort").is_some() {
        let Some(budget) = effort_budget(req, ctx)? else {
            return Ok(false);
        };
        let plan = reasoning::max_tokens_rule(
            budget,
            requested,
            u64::from(model.default_max_tokens),
            u64::from(model.max_output_tokens),
        );
        return Ok(match plan.budget {
            Some(b) => {
                out.insert("max_tokens".into(), json!(plan.max_tokens));
                out.insert(
                    "thinking".into(),
                    json!({"type": "enabled", "budget_tokens": b}),
                );
                true
            }
            None => false,
        });
    }
    match req.remove("thinking").filter(|t| !t.is_null()) {
        None => Ok(false),
        Some(t @ Value::Object(_)) => {
            // Moved as-is; max_tokens stays the client's (capped).
            let on = t.get("type").and_then(Value::as_str) != Some("disabled");
            out.insert("max_tokens".into(), json!(plain_max));
            out.insert("thinking".into(), t);
            Ok(on)
        }
        Some(_) => Err(err("thinking", "expected an object")),
    }
}

/// The thinking budget of the client's `reasoning_effort` (`None` = absent or `none`).
fn effort_budget(
    req: &Map<String, Value>,
    ctx: &Context<'_>,
) -> Result<Option<u64>, TranslateError> {
    let Some(v) = present(req, "reasoning_effort") else {
        return Ok(None);
    };
    let level = |l| reasoning::budget_for(l, ctx.budgets);
    match v.as_str() {
        Some("none") => Ok(None),
        Some("minimal") => Ok(Some(MIN_THINKING_BUDGET)),
        Some("low") => Ok(level(ReasoningLevel::Low)),
        Some("medium") => Ok(level(ReasoningLevel::Medium)),
        Some("high") => Ok(level(ReasoningLevel::High)),
        Some("xhigh") => Ok(level(ReasoningLevel::High).map(|b| b.saturating_mul(2))),
        _ => Err(err(
            "reasoning_effort",
            "expected one of none, minimal, low, medium, high, xhigh",
        )),
    }
}

/// The client's `anthropic-beta` plus the interleaved-thinking beta (level auto, §5.6).
fn with_interleaved(client: Option<&str>) -> String {
    match client {
        Some(c) if c.split(',').any(|b| b.trim() == INTERLEAVED_THINKING_BETA) => c.to_string(),
        Some(c) => format!("{c}, {INTERLEAVED_THINKING_BETA}"),
        None => INTERLEAVED_THINKING_BETA.to_string(),
    }
}

/// Thinking allows only `auto` and `none` (§5.2): a forced choice becomes `auto`.
fn force_auto_tool_choice(choice: &mut Value) {
    let forced = matches!(
        choice.get("type").and_then(Value::as_str),
        Some("any" | "tool")
    );
    if forced && let Some(o) = choice.as_object_mut() {
        o.insert("type".into(), json!("auto"));
        o.remove("name");
    }
}

/// The body in [`KEY_ORDER`].
fn reorder(mut body: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in KEY_ORDER {
        if let Some(v) = body.remove(key) {
            out.insert(key.into(), v);
        }
    }
    let mut rest: Vec<(String, Value)> = body.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests;
