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

use serde_json::{Map, Value, json};

use crate::config::{Model, ReasoningLevel};
use crate::translate::{Context, Prepared, TranslateError, reasoning};

/// Responses rejects `max_output_tokens` below this (`translation.md` §7 row 22).
const MIN_OUTPUT_TOKENS: u64 = 16;

/// Chat Completions request → OpenAI Responses request (translation.md §4.1).
pub fn chat_to_responses(
    body: Value,
    model: &Model,
    ctx: &Context<'_>,
) -> Result<Prepared, TranslateError> {
    let Value::Object(chat) = body else {
        return Err(TranslateError::new("body", "expected a JSON object"));
    };
    reject_unsupported(&chat)?;
    let messages = match present(&chat, "messages") {
        Some(Value::Array(m)) => m,
        Some(_) => {
            return Err(TranslateError::new(
                "messages",
                "expected an array of messages",
            ));
        }
        None => return Err(TranslateError::new("messages", "is required")),
    };
    let (system_texts, input) = convert_messages(messages)?;

    let mut out = Map::new();
    out.insert("model".into(), json!(model.id));
    let mut instructions = ctx.system_prompt.to_string();
    instructions.push_str(&system_texts.join("\n\n"));
    if !instructions.is_empty() {
        out.insert("instructions".into(), Value::String(instructions));
    }
    out.insert("input".into(), Value::Array(input));
    out.insert("store".into(), Value::Bool(false));

    let stream = match present(&chat, "stream") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(TranslateError::new("stream", "expected a boolean")),
    };
    if let Some(s) = stream {
        out.insert("stream".into(), Value::Bool(s));
    }

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

    copy(&chat, &mut out, "temperature");
    copy(&chat, &mut out, "top_p");
    if let Some(tools) = present(&chat, "tools") {
        let tools = convert_tools(tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = present(&chat, "tool_choice") {
        out.insert("tool_choice".into(), convert_tool_choice(choice)?);
    }
    copy(&chat, &mut out, "parallel_tool_calls");

    let mut text = Map::new();
    if let Some(format) = present(&chat, "response_format")
        && let Some(format) = convert_response_format(format)?
    {
        text.insert("format".into(), format);
    }
    if let Some(v) = present(&chat, "verbosity") {
        text.insert("verbosity".into(), v.clone());
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }

    copy(&chat, &mut out, "user");
    copy(&chat, &mut out, "metadata");
    copy(&chat, &mut out, "prompt_cache_key");
    copy(&chat, &mut out, "safety_identifier");

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
                return Err(TranslateError::new("reasoning_effort", "expected a string"));
            }
        },
        level => reasoning::apply_responses(&mut out, level),
    }

    Ok(Prepared {
        body: Value::Object(out),
        stream: stream.unwrap_or(false),
        anthropic_beta: None,
        drop_usage_chunk: false,
    })
}

/// `obj[key]` unless missing or `null`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// Copies `key` from `from` to `to` when present and not `null`.
fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, key: &str) {
    if let Some(v) = present(from, key) {
        to.insert(key.into(), v.clone());
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
        .ok_or_else(|| TranslateError::new(key, "expected a non-negative integer"))
}

/// Fields this upstream cannot honour: 400 naming them.
fn reject_unsupported(chat: &Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(n) = present(chat, "n")
        && n.as_f64() != Some(1.0)
    {
        return Err(TranslateError::new(
            "n",
            "only n=1 is supported for this model",
        ));
    }
    if present(chat, "audio").is_some() {
        return Err(TranslateError::new(
            "audio",
            "audio output is not supported for this model",
        ));
    }
    if let Some(m) = present(chat, "modalities") {
        let Some(list) = m.as_array() else {
            return Err(TranslateError::new(
                "modalities",
                "expected an array of strings",
            ));
        };
        if list.iter().any(|v| v.as_str() == Some("audio")) {
            return Err(TranslateError::new(
                "modalities",
                "audio output is not supported for this model",
            ));
        }
    }
    Ok(())
}

/// All messages → (system/developer texts in order, `input` items in order).
fn convert_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut input = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let p = format!("messages[{i}]");
        let Some(m) = message.as_object() else {
            return Err(TranslateError::new(p, "expected a message object"));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            Some(_) => {
                return Err(TranslateError::new(
                    format!("{p}.role"),
                    "expected a string",
                ));
            }
            None => return Err(TranslateError::new(format!("{p}.role"), "is required")),
        };
        match role {
            "system" | "developer" => {
                let text = system_text(m, &p)?;
                if !is_blank(&text) {
                    system.push(text);
                }
            }
            "user" => {
                let content = user_content(m, &p)?;
                if !content.is_empty() {
                    input.push(json!({"type": "message", "role": "user", "content": content}));
                }
            }
            "assistant" => assistant_items(m, &p, &mut input)?,
            "tool" => input.push(tool_output(m, &p)?),
            other => {
                return Err(TranslateError::new(
                    format!("{p}.role"),
                    format!("unsupported role \"{other}\""),
                ));
            }
        }
    }
    Ok((system, input))
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// The `content` of a message as an array of part objects, or a string; `None` for null/absent.
enum Content<'a> {
    None,
    Text(&'a str),
    Parts(&'a [Value]),
}

fn content<'a>(m: &'a Map<String, Value>, p: &str) -> Result<Content<'a>, TranslateError> {
    match m.get("content") {
        None | Some(Value::Null) => Ok(Content::None),
        Some(Value::String(s)) => Ok(Content::Text(s)),
        Some(Value::Array(parts)) => Ok(Content::Parts(parts)),
        Some(_) => Err(TranslateError::new(
            format!("{p}.content"),
            "expected a string or an array of content parts",
        )),
    }
}

/// A content part's object and its `type`.
fn part<'a>(v: &'a Value, pp: &str) -> Result<(&'a Map<String, Value>, &'a str), TranslateError> {
    let Some(obj) = v.as_object() else {
        return Err(TranslateError::new(pp, "expected a content part object"));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some(t) => Ok((obj, t)),
        None => Err(TranslateError::new(format!("{pp}.type"), "is required")),
    }
}

/// A text part's `text`.
fn part_text<'a>(obj: &'a Map<String, Value>, pp: &str) -> Result<&'a str, TranslateError> {
    obj.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("{pp}.text"), "expected a string"))
}

/// A system/developer message's text (array content: text parts concatenated).
fn system_text(m: &Map<String, Value>, p: &str) -> Result<String, TranslateError> {
    match content(m, p)? {
        Content::None => Ok(String::new()),
        Content::Text(s) => Ok(s.to_string()),
        Content::Parts(parts) => {
            let mut text = String::new();
            for (j, v) in parts.iter().enumerate() {
                let pp = format!("{p}.content[{j}]");
                match part(v, &pp)? {
                    (obj, "text") => text.push_str(part_text(obj, &pp)?),
                    (_, t) => {
                        return Err(TranslateError::new(
                            format!("{pp}.type"),
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

/// A user message's parts: `input_text`, `input_image`, `input_file` (blank text skipped).
fn user_content(m: &Map<String, Value>, p: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content(m, p)? {
        Content::None => return Ok(Vec::new()),
        Content::Text(s) if is_blank(s) => return Ok(Vec::new()),
        Content::Text(s) => return Ok(vec![json!({"type": "input_text", "text": s})]),
        Content::Parts(parts) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, v) in parts.iter().enumerate() {
        let pp = format!("{p}.content[{j}]");
        match part(v, &pp)? {
            (obj, "text") => {
                let text = part_text(obj, &pp)?;
                if !is_blank(text) {
                    out.push(json!({"type": "input_text", "text": text}));
                }
            }
            (obj, "image_url") => out.push(input_image(obj, &pp)?),
            (obj, "file") => out.push(input_file(obj, &pp)?),
            (_, "input_audio") => {
                return Err(TranslateError::new(
                    format!("{pp}.type"),
                    "audio input is not supported for this model",
                ));
            }
            (_, t) => {
                return Err(TranslateError::new(
                    format!("{pp}.type"),
                    format!("unsupported content part type \"{t}\""),
                ));
            }
        }
    }
    Ok(out)
}

/// `{type:"image_url", image_url:{url, detail}}` → `{type:"input_image", image_url:<url>, detail}`.
fn input_image(obj: &Map<String, Value>, pp: &str) -> Result<Value, TranslateError> {
    let (url, detail) = match obj.get("image_url") {
        Some(Value::String(url)) => (Some(url.as_str()), None),
        Some(Value::Object(image)) => (
            image.get("url").and_then(Value::as_str),
            image.get("detail").and_then(Value::as_str),
        ),
        _ => {
            return Err(TranslateError::new(
                format!("{pp}.image_url"),
                "expected an object with a url",
            ));
        }
    };
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Err(TranslateError::new(
            format!("{pp}.image_url.url"),
            "expected a non-empty string",
        ));
    };
    Ok(json!({"type": "input_image", "image_url": url, "detail": detail.unwrap_or("auto")}))
}

/// `{type:"file", file:{file_data|file_id, filename}}` → `{type:"input_file", …}`.
fn input_file(obj: &Map<String, Value>, pp: &str) -> Result<Value, TranslateError> {
    let Some(file) = obj.get("file").and_then(Value::as_object) else {
        return Err(TranslateError::new(
            format!("{pp}.file"),
            "expected an object with file_data or file_id",
        ));
    };
    let mut out = Map::new();
    out.insert("type".into(), json!("input_file"));
    for key in ["file_id", "file_data", "filename"] {
        if let Some(v) = file.get(key).filter(|v| v.is_string()) {
            out.insert(key.into(), v.clone());
        }
    }
    if !out.contains_key("file_id") && !out.contains_key("file_data") {
        return Err(TranslateError::new(
            format!("{pp}.file"),
            "expected file_data or file_id",
        ));
    }
    Ok(Value::Object(out))
}

/// An assistant message: its text as one `message` item (skipped when empty), then one
/// `function_call` item per tool call (no invented `id`, `translation.md` §4.1).
fn assistant_items(
    m: &Map<String, Value>,
    p: &str,
    input: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    match content(m, p)? {
        Content::None => {}
        Content::Text(s) => {
            if !is_blank(s) {
                parts.push(json!({"type": "output_text", "text": s}));
            }
        }
        Content::Parts(list) => {
            for (j, v) in list.iter().enumerate() {
                let pp = format!("{p}.content[{j}]");
                match part(v, &pp)? {
                    (obj, "text") => {
                        let text = part_text(obj, &pp)?;
                        if !is_blank(text) {
                            parts.push(json!({"type": "output_text", "text": text}));
                        }
                    }
                    (obj, "refusal") => {
                        let Some(r) = obj.get("refusal").and_then(Value::as_str) else {
                            return Err(TranslateError::new(
                                format!("{pp}.refusal"),
                                "expected a string",
                            ));
                        };
                        if !is_blank(r) {
                            parts.push(json!({"type": "refusal", "refusal": r}));
                        }
                    }
                    (_, t) => {
                        return Err(TranslateError::new(
                            format!("{pp}.type"),
                            format!(
                                "assistant messages take text and refusal parts only, got \"{t}\""
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let Some(r) = m.get("refusal").and_then(Value::as_str)
        && !is_blank(r)
    {
        parts.push(json!({"type": "refusal", "refusal": r}));
    }
    if !parts.is_empty() {
        input.push(json!({"type": "message", "role": "assistant", "content": parts}));
    }

    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(TranslateError::new(
                format!("{p}.tool_calls"),
                "expected an array",
            ));
        }
    };
    for (k, call) in calls.iter().enumerate() {
        let cp = format!("{p}.tool_calls[{k}]");
        let Some(call) = call.as_object() else {
            return Err(TranslateError::new(cp, "expected a tool call object"));
        };
        match call.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "function" => {}
            Some(t) => {
                return Err(TranslateError::new(
                    format!("{cp}.type"),
                    format!("only function tool calls are supported, got {t}"),
                ));
            }
        }
        let Some(id) = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Err(TranslateError::new(
                format!("{cp}.id"),
                "expected a non-empty string",
            ));
        };
        let Some(function) = call.get("function").and_then(Value::as_object) else {
            return Err(TranslateError::new(
                format!("{cp}.function"),
                "expected an object",
            ));
        };
        let Some(name) = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Err(TranslateError::new(
                format!("{cp}.function.name"),
                "expected a non-empty string",
            ));
        };
        // `""` (a no-argument call streamed as nothing) is sent as `{}` (§7 row 9).
        let arguments = match function.get("arguments") {
            None | Some(Value::Null) => "{}".to_string(),
            Some(Value::String(s)) if s.trim().is_empty() => "{}".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => {
                return Err(TranslateError::new(
                    format!("{cp}.function.arguments"),
                    "expected a JSON string",
                ));
            }
        };
        input.push(
            json!({"type": "function_call", "call_id": id, "name": name, "arguments": arguments}),
        );
    }
    Ok(())
}

/// A tool message → `{type:"function_call_output", call_id, output:<string>}`.
fn tool_output(m: &Map<String, Value>, p: &str) -> Result<Value, TranslateError> {
    let Some(call_id) = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return Err(TranslateError::new(
            format!("{p}.tool_call_id"),
            "expected a non-empty string",
        ));
    };
    let output = match content(m, p)? {
        Content::None => String::new(),
        Content::Text(s) => s.to_string(),
        Content::Parts(parts) => parts
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|v| v.get("text").and_then(Value::as_str))
            .collect(),
    };
    Ok(json!({"type": "function_call_output", "call_id": call_id, "output": output}))
}

/// `tools[]`: function tools flattened, `strict` always explicit.
fn convert_tools(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let Some(tools) = tools.as_array() else {
        return Err(TranslateError::new("tools", "expected an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let p = format!("tools[{i}]");
        let Some(tool) = tool.as_object() else {
            return Err(TranslateError::new(p, "expected a tool object"));
        };
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(t) => {
                return Err(TranslateError::new(
                    format!("{p}.type"),
                    format!("only function tools are supported for this model, got \"{t}\""),
                ));
            }
            None => {
                return Err(TranslateError::new(
                    format!("{p}.type"),
                    "expected \"function\"",
                ));
            }
        }
        let Some(function) = tool.get("function").and_then(Value::as_object) else {
            return Err(TranslateError::new(
                format!("{p}.function"),
                "expected an object",
            ));
        };
        let Some(name) = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Err(TranslateError::new(
                format!("{p}.function.name"),
                "expected a non-empty string",
            ));
        };
        let strict = match present(function, "strict") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(TranslateError::new(
                    format!("{p}.function.strict"),
                    "expected a boolean",
                ));
            }
        };
        let mut flat = Map::new();
        flat.insert("type".into(), json!("function"));
        flat.insert("name".into(), json!(name));
        if let Some(d) = present(function, "description") {
            flat.insert("description".into(), d.clone());
        }
        // Responses requires `parameters`; Chat lets a no-argument function omit it.
        let parameters = present(function, "parameters")
            .cloned()
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
        return Err(TranslateError::new(
            "tool_choice",
            "expected a string or an object",
        ));
    };
    let function_name = |v: Option<&Value>, path: &str| {
        v.and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| TranslateError::new(path, "expected a non-empty string"))
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
                return Err(TranslateError::new(
                    "tool_choice.allowed_tools.tools",
                    "expected an array",
                ));
            };
            let mut tools = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                let p = format!("tool_choice.allowed_tools.tools[{i}]");
                if t.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(TranslateError::new(
                        format!("{p}.type"),
                        "only function tools are supported for this model",
                    ));
                }
                let name = function_name(t.get("function"), &format!("{p}.function.name"))?;
                tools.push(json!({"type": "function", "name": name}));
            }
            Ok(json!({"type": "allowed_tools", "mode": mode, "tools": tools}))
        }
        _ => Err(TranslateError::new(
            "tool_choice.type",
            "expected \"function\" or \"allowed_tools\"",
        )),
    }
}

/// `response_format` → `text.format` (flattened); `None` for `text`.
fn convert_response_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    let Some(obj) = format.as_object() else {
        return Err(TranslateError::new("response_format", "expected an object"));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let Some(schema) = obj.get("json_schema").and_then(Value::as_object) else {
                return Err(TranslateError::new(
                    "response_format.json_schema",
                    "expected an object",
                ));
            };
            let Some(name) = schema
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            else {
                return Err(TranslateError::new(
                    "response_format.json_schema.name",
                    "expected a non-empty string",
                ));
            };
            let Some(body) = present(schema, "schema") else {
                return Err(TranslateError::new(
                    "response_format.json_schema.schema",
                    "is required",
                ));
            };
            let strict = match present(schema, "strict") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(TranslateError::new(
                        "response_format.json_schema.strict",
                        "expected a boolean",
                    ));
                }
            };
            let mut flat = Map::new();
            flat.insert("type".into(), json!("json_schema"));
            flat.insert("name".into(), json!(name));
            flat.insert("schema".into(), body.clone());
            flat.insert("strict".into(), Value::Bool(strict));
            if let Some(d) = present(schema, "description") {
                flat.insert("description".into(), d.clone());
            }
            Ok(Some(Value::Object(flat)))
        }
        _ => Err(TranslateError::new(
            "response_format.type",
            "expected \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

#[cfg(test)]
mod tests;
