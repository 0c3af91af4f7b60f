//! Chat Completions request → OpenAI Responses request (`translation.md` §4.1).
//!
//! | Chat | Responses |
//! |---|---|
//! | system/developer messages (all, in order) | `instructions` = system prompt + texts joined with `\n\n` |
//! | user / assistant / tool messages | `input` items, in order |
//! | `max_completion_tokens` / `max_tokens` | `max_output_tokens`, clamped to 16 ..= model cap (§7 row 22) |
//! | `tools[].function` | flattened, `strict` always explicit (§7 row 23) |
//! | `tool_choice {type:"function",function:{name}}` | `{type:"function",name}` |
//! | `response_format` | `text.format`, flattened (§7 row 24); `verbosity` → `text.verbosity` |
//! | `reasoning_effort` (model level auto) | `reasoning:{effort, summary:"auto"}`; fixed levels via [`reasoning::apply_responses`] |
//! | `temperature`, `top_p`, `user`, `metadata`, `parallel_tool_calls`, `stream`, `prompt_cache_key`, `safety_identifier` | copied |
//! | `stop`, `stream_options`, penalties, `logit_bias`, `seed`, `logprobs`, `top_logprobs` | dropped |
//! | `n` > 1, `audio`, `modalities` with `"audio"`, non-function tools | 400 naming the field |
//! | — | `store: false` |
//! | `include` (not a Chat field; some clients send it) | `include`, strings only |
//! | — (the model reasons: fixed level, or auto with a `reasoning_effort` other than `none`) | `"reasoning.encrypted_content"` added to `include`; cached turns re-inserted (§4.4, [`super::turns`]) |

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::turns::{Turn, TurnItem, TurnLookup};
use crate::config::{Model, ReasoningLevel};
use crate::translate::path::At;
use crate::translate::{Context, Prepared, TranslateError, is_blank, reasoning};

/// Responses rejects `max_output_tokens` below this (`translation.md` §7 row 22).
const MIN_OUTPUT_TOKENS: u64 = 16;

/// What a reasoning model is asked to return so its reasoning can be sent back (§4.4).
pub const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// A translated request and what the reasoning round trip did with it.
#[derive(Debug)]
pub struct ResponsesRequest {
    pub prepared: Prepared,
    /// `include` asks for the encrypted reasoning (the model reasons): the reply's turn is
    /// worth keeping.
    pub encrypted_reasoning: bool,
    /// The `call_id`s of every turn whose cached items were re-inserted (dropped from the cache
    /// if the upstream refuses them).
    pub reinserted: Vec<String>,
}

fn err(param: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(param, message)
}

/// A JSON object of exactly these entries, in this order.
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut map = Map::with_capacity(N);
    for (k, v) in entries {
        map.insert(k.to_string(), v);
    }
    Value::Object(map)
}

/// Chat Completions request → OpenAI Responses request (translation.md §4.1). Messages, tools
/// and schemas are moved out of the request, never copied. No reasoning round trip (see
/// [`chat_to_responses_with`]).
pub fn chat_to_responses(
    body: Value,
    model: &Model,
    ctx: &Context<'_>,
) -> Result<Prepared, TranslateError> {
    chat_to_responses_with(body, model, ctx, None).map(|r| r.prepared)
}

/// [`chat_to_responses`] with the reasoning round trip of §4.4: when the model reasons,
/// `include` asks for the encrypted reasoning and, for each assistant message whose tool calls
/// `turns` knows (all of them, from one turn), the turn's `reasoning` and `function_call` items
/// are sent back in their original order instead of fresh function calls.
pub fn chat_to_responses_with(
    body: Value,
    model: &Model,
    ctx: &Context<'_>,
    turns: Option<TurnLookup<'_>>,
) -> Result<ResponsesRequest, TranslateError> {
    let Value::Object(mut chat) = body else {
        return Err(err("body", "expected a JSON object"));
    };
    reject_unsupported(&chat)?;
    let messages = match take(&mut chat, "messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(err("messages", "expected an array of messages")),
        None => return Err(err("messages", "is required")),
    };
    let reasons = model_reasons(model.reasoning, &chat);
    let mut reinserted = Vec::new();
    let turns = turns.filter(|_| reasons);
    let (system_texts, input) = convert_messages(messages, turns, &mut reinserted)?;

    let mut out = Map::new();
    out.insert("model".into(), json!(model.id));
    let mut instructions = ctx.system_prompt.to_string();
    instructions.push_str(&system_texts.join("\n\n"));
    if !instructions.is_empty() {
        out.insert("instructions".into(), Value::String(instructions));
    }
    out.insert("input".into(), Value::Array(input));
    out.insert("store".into(), Value::Bool(false));
    let mut include = match take(&mut chat, "include") {
        None => Vec::new(),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => list,
        Some(_) => return Err(err("include", "expected an array of strings")),
    };
    if reasons
        && !include
            .iter()
            .any(|v| v.as_str() == Some(ENCRYPTED_REASONING))
    {
        include.push(Value::from(ENCRYPTED_REASONING));
    }
    if !include.is_empty() {
        out.insert("include".into(), Value::Array(include));
    }

    let stream = match present(&chat, "stream") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(err("stream", "expected a boolean")),
    };
    // The upstream call always streams; a whole answer is assembled by the gateway.
    out.insert("stream".into(), Value::Bool(true));

    let requested = match token_count(&chat, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => token_count(&chat, "max_tokens")?,
    };
    if let Some(n) = requested {
        let cap = u64::from(model.max_output_tokens).max(MIN_OUTPUT_TOKENS);
        out.insert(
            "max_output_tokens".into(),
            json!(n.clamp(MIN_OUTPUT_TOKENS, cap)),
        );
    }

    copy(&mut chat, &mut out, "temperature");
    copy(&mut chat, &mut out, "top_p");
    if let Some(tools) = take(&mut chat, "tools") {
        let tools = convert_tools(tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = present(&chat, "tool_choice") {
        out.insert("tool_choice".into(), convert_tool_choice(choice)?);
    }
    copy(&mut chat, &mut out, "parallel_tool_calls");

    let mut text = Map::new();
    if let Some(format) = take(&mut chat, "response_format")
        && let Some(format) = convert_response_format(format)?
    {
        text.insert("format".into(), format);
    }
    if let Some(v) = take(&mut chat, "verbosity") {
        text.insert("verbosity".into(), v);
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }

    copy(&mut chat, &mut out, "user");
    copy(&mut chat, &mut out, "metadata");
    copy(&mut chat, &mut out, "prompt_cache_key");
    copy(&mut chat, &mut out, "safety_identifier");

    match model.reasoning {
        ReasoningLevel::Auto => match present(&chat, "reasoning_effort") {
            None => {}
            Some(Value::String(effort)) => {
                out.insert(
                    "reasoning".into(),
                    json!({"effort": effort, "summary": "auto"}),
                );
            }
            Some(_) => {
                return Err(err("reasoning_effort", "expected a string"));
            }
        },
        level => reasoning::apply_responses(&mut out, level),
    }

    Ok(ResponsesRequest {
        prepared: Prepared {
            body: Value::Object(out),
            stream: stream.unwrap_or(false),
            aggregate: stream != Some(true),
            anthropic_beta: None,
            drop_usage_chunk: false,
        },
        encrypted_reasoning: reasons,
        reinserted,
    })
}

/// Whether the upstream body will ask the model to reason: a fixed level, or auto with a
/// `reasoning_effort` other than `none` (auto without one: the gateway cannot tell whether the
/// model reasons, and a model that does not refuses the `include`).
fn model_reasons(level: ReasoningLevel, chat: &Map<String, Value>) -> bool {
    match level {
        ReasoningLevel::Off => false,
        ReasoningLevel::Auto => present(chat, "reasoning_effort")
            .and_then(Value::as_str)
            .is_some_and(|e| e != "none"),
        ReasoningLevel::Low | ReasoningLevel::Medium | ReasoningLevel::High => true,
    }
}

/// `obj[key]` unless missing or `null`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// `obj[key]` taken out of `obj`, unless missing or `null`.
fn take(obj: &mut Map<String, Value>, key: &str) -> Option<Value> {
    obj.remove(key).filter(|v| !v.is_null())
}

/// Moves `key` from `from` to `to` when present and not `null`.
fn copy(from: &mut Map<String, Value>, to: &mut Map<String, Value>, key: &str) {
    if let Some(v) = take(from, key) {
        to.insert(key.into(), v);
    }
}

/// A non-negative integer field (an integral float is accepted).
fn token_count(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, TranslateError> {
    let Some(v) = present(obj, key) else {
        return Ok(None);
    };
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                // Integral by the filter; values beyond u64 saturate.
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| err(key, "expected a non-negative integer"))
}

/// Fields this upstream cannot honour: 400 naming them.
fn reject_unsupported(chat: &Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(n) = present(chat, "n")
        && n.as_f64() != Some(1.0)
    {
        return Err(err("n", "only n=1 is supported for this model"));
    }
    if present(chat, "audio").is_some() {
        return Err(err("audio", "audio output is not supported for this model"));
    }
    if let Some(m) = present(chat, "modalities") {
        let Some(list) = m.as_array() else {
            return Err(err("modalities", "expected an array of strings"));
        };
        if list.iter().any(|v| v.as_str() == Some("audio")) {
            return Err(err(
                "modalities",
                "audio output is not supported for this model",
            ));
        }
    }
    Ok(())
}

/// All messages → (system/developer texts in order, `input` items in order). `turns` (only when
/// the model reasons) finds cached turns; the `call_id`s of re-inserted turns go to `reinserted`.
fn convert_messages(
    messages: Vec<Value>,
    turns: Option<TurnLookup<'_>>,
    reinserted: &mut Vec<String>,
) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut input = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        let at = At::message(i);
        let Value::Object(mut m) = message else {
            return Err(err(at, "expected a message object"));
        };
        let role = match m.remove("role") {
            Some(Value::String(r)) => r,
            Some(_) => return Err(err(at.key("role"), "expected a string")),
            None => return Err(err(at.key("role"), "is required")),
        };
        match role.as_str() {
            "system" | "developer" => {
                let text = system_text(&mut m, &at)?;
                if !is_blank(&text) {
                    system.push(text);
                }
            }
            "user" => {
                let content = user_content(&mut m, &at)?;
                if !content.is_empty() {
                    input.push(object([
                        ("type", Value::from("message")),
                        ("role", Value::from("user")),
                        ("content", Value::Array(content)),
                    ]));
                }
            }
            "assistant" => assistant_items(m, &at, &mut input, turns, reinserted)?,
            "tool" => input.push(tool_output(m, &at)?),
            other => {
                return Err(err(at.key("role"), format!("unsupported role \"{other}\"")));
            }
        }
    }
    Ok((system, input))
}

/// The `content` of a message as an array of part objects, or a string; `None` for null/absent.
enum Content {
    None,
    Text(String),
    Parts(Vec<Value>),
}

fn content(m: &mut Map<String, Value>, at: &At<'_>) -> Result<Content, TranslateError> {
    match m.remove("content") {
        None | Some(Value::Null) => Ok(Content::None),
        Some(Value::String(s)) => Ok(Content::Text(s)),
        Some(Value::Array(parts)) => Ok(Content::Parts(parts)),
        Some(_) => Err(err(
            at.key("content"),
            "expected a string or an array of content parts",
        )),
    }
}

/// A content part's object and its `type`.
fn part(v: Value, at: &At<'_>) -> Result<(Map<String, Value>, String), TranslateError> {
    let Value::Object(mut obj) = v else {
        return Err(err(*at, "expected a content part object"));
    };
    match obj.remove("type") {
        Some(Value::String(t)) => Ok((obj, t)),
        _ => Err(err(at.key("type"), "is required")),
    }
}

/// A text part's `text`.
fn part_text(obj: &mut Map<String, Value>, at: &At<'_>) -> Result<String, TranslateError> {
    match obj.remove("text") {
        Some(Value::String(t)) => Ok(t),
        _ => Err(err(at.key("text"), "expected a string")),
    }
}

/// A system/developer message's text (array content: text parts concatenated).
fn system_text(m: &mut Map<String, Value>, at: &At<'_>) -> Result<String, TranslateError> {
    match content(m, at)? {
        Content::None => Ok(String::new()),
        Content::Text(s) => Ok(s),
        Content::Parts(parts) => {
            let mut text = String::new();
            let parts_at = at.key("content");
            for (j, v) in parts.into_iter().enumerate() {
                let pat = parts_at.index(j);
                match part(v, &pat)? {
                    (mut obj, t) if t == "text" => text.push_str(&part_text(&mut obj, &pat)?),
                    (_, t) => {
                        return Err(err(
                            pat.key("type"),
                            format!(
                                "system and developer messages take text parts only, got \"{t}\""
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

/// `{"type": <ty>, <key>: <text>}`: a text-like part.
fn text_part(ty: &str, key: &str, text: String) -> Value {
    object([("type", Value::from(ty)), (key, Value::String(text))])
}

/// A user message's parts: `input_text`, `input_image`, `input_file` (blank text skipped).
fn user_content(m: &mut Map<String, Value>, at: &At<'_>) -> Result<Vec<Value>, TranslateError> {
    let parts = match content(m, at)? {
        Content::None => return Ok(Vec::new()),
        Content::Text(s) if is_blank(&s) => return Ok(Vec::new()),
        Content::Text(s) => return Ok(vec![text_part("input_text", "text", s)]),
        Content::Parts(parts) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    let parts_at = at.key("content");
    for (j, v) in parts.into_iter().enumerate() {
        let pat = parts_at.index(j);
        let (mut obj, t) = part(v, &pat)?;
        match t.as_str() {
            "text" => {
                let text = part_text(&mut obj, &pat)?;
                if !is_blank(&text) {
                    out.push(text_part("input_text", "text", text));
                }
            }
            "image_url" => out.push(input_image(obj, &pat)?),
            "file" => out.push(input_file(obj, &pat)?),
            "input_audio" => {
                return Err(err(
                    pat.key("type"),
                    "audio input is not supported for this model",
                ));
            }
            t => {
                return Err(err(
                    pat.key("type"),
                    format!("unsupported content part type \"{t}\""),
                ));
            }
        }
    }
    Ok(out)
}

/// `{type:"image_url", image_url:{url, detail}}` → `{type:"input_image", image_url:<url>, detail}`.
fn input_image(mut obj: Map<String, Value>, at: &At<'_>) -> Result<Value, TranslateError> {
    let (url, detail) = match obj.remove("image_url") {
        Some(Value::String(url)) => (Some(url), None),
        Some(Value::Object(mut image)) => {
            let url = match image.remove("url") {
                Some(Value::String(u)) => Some(u),
                _ => None,
            };
            let detail = match image.remove("detail") {
                Some(Value::String(d)) => Some(d),
                _ => None,
            };
            (url, detail)
        }
        _ => {
            return Err(err(at.key("image_url"), "expected an object with a url"));
        }
    };
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Err(err(
            at.key("image_url").key("url"),
            "expected a non-empty string",
        ));
    };
    Ok(object([
        ("type", Value::from("input_image")),
        ("image_url", Value::String(url)),
        (
            "detail",
            Value::String(detail.unwrap_or_else(|| "auto".into())),
        ),
    ]))
}

/// `{type:"file", file:{file_data|file_id, filename}}` → `{type:"input_file", …}`.
fn input_file(mut obj: Map<String, Value>, at: &At<'_>) -> Result<Value, TranslateError> {
    let Some(Value::Object(mut file)) = obj.remove("file") else {
        return Err(err(
            at.key("file"),
            "expected an object with file_data or file_id",
        ));
    };
    let mut out = Map::with_capacity(4);
    out.insert("type".into(), json!("input_file"));
    for key in ["file_id", "file_data", "filename"] {
        if let Some(v @ Value::String(_)) = file.remove(key) {
            out.insert(key.into(), v);
        }
    }
    if !out.contains_key("file_id") && !out.contains_key("file_data") {
        return Err(err(at.key("file"), "expected file_data or file_id"));
    }
    Ok(Value::Object(out))
}

/// One tool call of an assistant message, validated.
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// An assistant message: its text as one `message` item (skipped when empty), then one
/// `function_call` item per tool call (no invented `id`, `translation.md` §4.1) — unless
/// `turns` holds the turn that made exactly these calls: then that turn's items, in their
/// original order (§4.4).
fn assistant_items(
    mut m: Map<String, Value>,
    at: &At<'_>,
    input: &mut Vec<Value>,
    turns: Option<TurnLookup<'_>>,
    reinserted: &mut Vec<String>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    match content(&mut m, at)? {
        Content::None => {}
        Content::Text(s) => {
            if !is_blank(&s) {
                parts.push(text_part("output_text", "text", s));
            }
        }
        Content::Parts(list) => {
            let parts_at = at.key("content");
            for (j, v) in list.into_iter().enumerate() {
                let pat = parts_at.index(j);
                let (mut obj, t) = part(v, &pat)?;
                match t.as_str() {
                    "text" => {
                        let text = part_text(&mut obj, &pat)?;
                        if !is_blank(&text) {
                            parts.push(text_part("output_text", "text", text));
                        }
                    }
                    "refusal" => {
                        let Some(Value::String(r)) = obj.remove("refusal") else {
                            return Err(err(pat.key("refusal"), "expected a string"));
                        };
                        if !is_blank(&r) {
                            parts.push(text_part("refusal", "refusal", r));
                        }
                    }
                    t => {
                        return Err(err(
                            pat.key("type"),
                            format!(
                                "assistant messages take text and refusal parts only, got \"{t}\""
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let Some(Value::String(r)) = m.remove("refusal")
        && !is_blank(&r)
    {
        parts.push(text_part("refusal", "refusal", r));
    }
    let message = (!parts.is_empty()).then(|| {
        object([
            ("type", Value::from("message")),
            ("role", Value::from("assistant")),
            ("content", Value::Array(parts)),
        ])
    });

    let raw_calls = match m.remove("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(err(at.key("tool_calls"), "expected an array")),
    };
    let mut calls = Vec::with_capacity(raw_calls.len());
    let calls_at = at.key("tool_calls");
    for (k, call) in raw_calls.into_iter().enumerate() {
        let cat = calls_at.index(k);
        let Value::Object(mut call) = call else {
            return Err(err(cat, "expected a tool call object"));
        };
        match call.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "function" => {}
            Some(t) => {
                return Err(err(
                    cat.key("type"),
                    format!("only function tool calls are supported, got {t}"),
                ));
            }
        }
        let Some(Value::String(id)) = call.remove("id").filter(|v| v.as_str() != Some("")) else {
            return Err(err(cat.key("id"), "expected a non-empty string"));
        };
        let Some(Value::Object(mut function)) = call.remove("function") else {
            return Err(err(cat.key("function"), "expected an object"));
        };
        let fat = cat.key("function");
        let Some(Value::String(name)) = function.remove("name").filter(|v| v.as_str() != Some(""))
        else {
            return Err(err(fat.key("name"), "expected a non-empty string"));
        };
        // `""` (a no-argument call streamed as nothing) is sent as `{}` (§7 row 9).
        let arguments = match function.remove("arguments") {
            None | Some(Value::Null) => "{}".to_string(),
            Some(Value::String(s)) if is_blank(&s) => "{}".to_string(),
            Some(Value::String(s)) => s,
            Some(v @ Value::Object(_)) => crate::translate::encode_string(&v),
            Some(_) => {
                return Err(err(fat.key("arguments"), "expected a JSON string"));
            }
        };
        calls.push(ToolCall {
            id,
            name,
            arguments,
        });
    }

    if let Some(lookup) = turns
        && let Some((turn, order)) = matching_turn(lookup, &calls)
    {
        reinserted.extend(turn.call_ids().iter().cloned());
        let mut calls: Vec<Option<ToolCall>> = calls.into_iter().map(Some).collect();
        input.reserve(turn.items().len() + 1);
        let mut message = message;
        if !turn.has_message()
            && let Some(msg) = message.take()
        {
            input.push(msg);
        }
        let mut next_call = order.into_iter();
        for item in turn.items() {
            match item {
                TurnItem::Reasoning(v) => input.push(v.clone()),
                TurnItem::Message => {
                    if let Some(msg) = message.take() {
                        input.push(msg);
                    }
                }
                TurnItem::FunctionCall { id, .. } => {
                    if let Some(call) = next_call.next().and_then(|i| calls[i].take()) {
                        input.push(function_call(Some(id.clone()), call));
                    }
                }
            }
        }
        return Ok(());
    }

    input.reserve(calls.len() + 1);
    if let Some(msg) = message {
        input.push(msg);
    }
    for call in calls {
        input.push(function_call(None, call));
    }
    Ok(())
}

/// The cached turn that made exactly `calls` (every call found, all in the same turn, which has
/// no other call), with, for each of the turn's function calls in order, the position of the
/// client's call. `None` means: send fresh items, nothing cached (both present or both absent).
fn matching_turn(lookup: TurnLookup<'_>, calls: &[ToolCall]) -> Option<(Arc<Turn>, Vec<usize>)> {
    let turn = lookup(&calls.first()?.id)?;
    if turn.call_ids().len() != calls.len() {
        return None;
    }
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        if position.insert(call.id.as_str(), i).is_some() {
            return None;
        }
        if i > 0 && !lookup(&call.id).is_some_and(|t| Arc::ptr_eq(&t, &turn)) {
            return None;
        }
    }
    let order = turn
        .call_ids()
        .iter()
        .map(|id| position.get(id.as_str()).copied())
        .collect::<Option<Vec<usize>>>()?;
    Some((turn, order))
}

/// `{type:"function_call", id?, call_id, name, arguments}`.
fn function_call(id: Option<String>, call: ToolCall) -> Value {
    let mut map = Map::with_capacity(5);
    map.insert("type".into(), Value::from("function_call"));
    if let Some(id) = id {
        map.insert("id".into(), Value::String(id));
    }
    map.insert("call_id".into(), Value::String(call.id));
    map.insert("name".into(), Value::String(call.name));
    map.insert("arguments".into(), Value::String(call.arguments));
    Value::Object(map)
}

/// A tool message → `{type:"function_call_output", call_id, output:<string>}`.
fn tool_output(mut m: Map<String, Value>, at: &At<'_>) -> Result<Value, TranslateError> {
    let Some(Value::String(call_id)) = m.remove("tool_call_id").filter(|v| v.as_str() != Some(""))
    else {
        return Err(err(at.key("tool_call_id"), "expected a non-empty string"));
    };
    let output = match content(&mut m, at)? {
        Content::None => String::new(),
        Content::Text(s) => s,
        Content::Parts(parts) => parts
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|v| v.get("text").and_then(Value::as_str))
            .collect(),
    };
    Ok(object([
        ("type", Value::from("function_call_output")),
        ("call_id", Value::String(call_id)),
        ("output", Value::String(output)),
    ]))
}

/// `tools[]`: function tools flattened, `strict` always explicit.
fn convert_tools(tools: Value) -> Result<Vec<Value>, TranslateError> {
    let Value::Array(tools) = tools else {
        return Err(err("tools", "expected an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let p = format!("tools[{i}]");
        let Value::Object(mut tool) = tool else {
            return Err(err(p, "expected a tool object"));
        };
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(t) => {
                return Err(err(
                    format!("{p}.type"),
                    format!("only function tools are supported for this model, got \"{t}\""),
                ));
            }
            None => {
                return Err(err(format!("{p}.type"), "expected \"function\""));
            }
        }
        let Some(Value::Object(mut function)) = tool.remove("function") else {
            return Err(err(format!("{p}.function"), "expected an object"));
        };
        let Some(Value::String(name)) = function.remove("name").filter(|v| v.as_str() != Some(""))
        else {
            return Err(err(
                format!("{p}.function.name"),
                "expected a non-empty string",
            ));
        };
        let strict = match present(&function, "strict") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(err(format!("{p}.function.strict"), "expected a boolean"));
            }
        };
        let mut flat = Map::with_capacity(5);
        flat.insert("type".into(), json!("function"));
        flat.insert("name".into(), Value::String(name));
        if let Some(d) = take(&mut function, "description") {
            flat.insert("description".into(), d);
        }
        // Responses requires `parameters`; Chat lets a no-argument function omit it.
        let parameters = take(&mut function, "parameters")
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        flat.insert("parameters".into(), parameters);
        flat.insert("strict".into(), Value::Bool(strict));
        out.push(Value::Object(flat));
    }
    Ok(out)
}

/// `tool_choice`: strings pass; named functions and allowed-tools lists are flattened.
fn convert_tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    if choice.is_string() {
        return Ok(choice.clone());
    }
    let Some(obj) = choice.as_object() else {
        return Err(err("tool_choice", "expected a string or an object"));
    };
    let function_name = |v: Option<&Value>, path: &str| {
        v.and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| err(path, "expected a non-empty string"))
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = function_name(obj.get("function"), "tool_choice.function.name")?;
            Ok(json!({"type": "function", "name": name}))
        }
        Some("allowed_tools") => {
            let allowed = obj.get("allowed_tools");
            let mode = allowed
                .and_then(|a| a.get("mode"))
                .cloned()
                .unwrap_or_else(|| json!("auto"));
            let Some(list) = allowed
                .and_then(|a| a.get("tools"))
                .and_then(Value::as_array)
            else {
                return Err(err("tool_choice.allowed_tools.tools", "expected an array"));
            };
            let mut tools = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                let p = format!("tool_choice.allowed_tools.tools[{i}]");
                if t.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(err(
                        format!("{p}.type"),
                        "only function tools are supported for this model",
                    ));
                }
                let name = function_name(t.get("function"), &format!("{p}.function.name"))?;
                tools.push(json!({"type": "function", "name": name}));
            }
            Ok(json!({"type": "allowed_tools", "mode": mode, "tools": tools}))
        }
        _ => Err(err(
            "tool_choice.type",
            "expected \"function\" or \"allowed_tools\"",
        )),
    }
}

/// `response_format` → `text.format` (flattened); `None` for `text`. The schema is moved.
fn convert_response_format(format: Value) -> Result<Option<Value>, TranslateError> {
    let Value::Object(mut obj) = format else {
        return Err(err("response_format", "expected an object"));
    };
    let ty = match obj.remove("type") {
        Some(Value::String(t)) => t,
        _ => String::new(),
    };
    match ty.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let Some(Value::Object(mut schema)) = obj.remove("json_schema") else {
                return Err(err("response_format.json_schema", "expected an object"));
            };
            let Some(Value::String(name)) =
                schema.remove("name").filter(|v| v.as_str() != Some(""))
            else {
                return Err(err(
                    "response_format.json_schema.name",
                    "expected a non-empty string",
                ));
            };
            let Some(body) = take(&mut schema, "schema") else {
                return Err(err("response_format.json_schema.schema", "is required"));
            };
            let strict = match present(&schema, "strict") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(err(
                        "response_format.json_schema.strict",
                        "expected a boolean",
                    ));
                }
            };
            let mut flat = Map::with_capacity(5);
            flat.insert("type".into(), json!("json_schema"));
            flat.insert("name".into(), Value::String(name));
            flat.insert("schema".into(), body);
            flat.insert("strict".into(), Value::Bool(strict));
            if let Some(d) = take(&mut schema, "description") {
                flat.insert("description".into(), d);
            }
            Ok(Some(Value::Object(flat)))
        }
        _ => Err(err(
            "response_format.type",
            "expected \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

#[cfg(test)]
mod tests;
