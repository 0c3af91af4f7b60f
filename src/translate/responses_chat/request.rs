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
mod tests {
    use super::*;
    use crate::config::{ModelKind, ReasoningBudgets};

    const PROMPT: &str = "You are Droid.\n\n";

    fn model(reasoning: ReasoningLevel) -> Model {
        Model {
            id: "gpt-5-2025-08-07".into(),
            name: "GPT-5".into(),
            kind: ModelKind::OpenAi,
            reasoning,
            provider: None,
            default_max_tokens: 4096,
            max_output_tokens: 128_000,
        }
    }

    fn ctx(system_prompt: &str) -> Context<'_> {
        Context {
            system_prompt,
            budgets: ReasoningBudgets::default(),
        }
    }

    fn convert(body: Value) -> Value {
        chat_to_responses(body, &model(ReasoningLevel::Auto), &ctx(PROMPT))
            .unwrap()
            .body
    }

    fn convert_with(body: Value, level: ReasoningLevel, prompt: &str) -> Value {
        chat_to_responses(body, &model(level), &ctx(prompt))
            .unwrap()
            .body
    }

    fn error(body: Value) -> TranslateError {
        chat_to_responses(body, &model(ReasoningLevel::Auto), &ctx(PROMPT)).unwrap_err()
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[test]
    fn worked_example() {
        let prepared = chat_to_responses(
            json!({
                "model": "gpt-client-name",
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather in Paris?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"}
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": 800,
                "reasoning_effort": "low",
                "tools": [{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
                "tool_choice": "auto",
                "stop": ["\n\n"],
                "presence_penalty": 0.5,
                "frequency_penalty": 0.1,
                "logit_bias": {"50256": -100},
                "seed": 7,
                "logprobs": false,
                "top_logprobs": null,
                "n": 1
            }),
            &model(ReasoningLevel::Auto),
            &ctx(""),
        )
        .unwrap();
        assert!(prepared.stream);
        assert_eq!(prepared.anthropic_beta, None);
        assert!(!prepared.drop_usage_chunk);
        assert_eq!(
            prepared.body,
            json!({"model":"gpt-5-2025-08-07","instructions":"You are terse.",
             "input":[
              {"type":"message","role":"user","content":[{"type":"input_text","text":"Weather in Paris?"},
                 {"type":"input_image","image_url":"data:image/png;base64,iVBO","detail":"low"}]},
              {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
              {"type":"function_call_output","call_id":"call_1","output":"18C sunny"}],
             "store":false,"stream":true,"max_output_tokens":800,
             "tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":false}],
             "tool_choice":"auto",
             "reasoning":{"effort":"low","summary":"auto"}})
        );
    }

    #[test]
    fn instructions_join_prompt_and_every_system_and_developer_text() {
        let body = convert(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "Use "}, {"type": "text", "text": "metric units."}]},
            {"role": "system", "content": "  "},
            {"role": "system", "content": null},
            {"role": "system", "content": "Answer in French."}
        ]}));
        assert_eq!(
            body["instructions"],
            "You are Droid.\n\nBe brief.\n\nUse metric units.\n\nAnswer in French."
        );
        assert_eq!(
            body["input"],
            json!([{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}])
        );
        // Prompt only.
        let body = convert(json!({"messages": [user("hi")]}));
        assert_eq!(body["instructions"], PROMPT);
        // Client only.
        let body = convert_with(
            json!({"messages": [{"role": "developer", "content": "Dev."}, user("hi")]}),
            ReasoningLevel::Auto,
            "",
        );
        assert_eq!(body["instructions"], "Dev.");
        // Neither: omitted.
        let body = convert_with(json!({"messages": [user("hi")]}), ReasoningLevel::Auto, "");
        assert!(body.get("instructions").is_none());
        // Non-text parts in a system message are refused.
        let e = error(
            json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        );
        assert_eq!(e.param, "messages[0].content[0].type");
    }

    #[test]
    fn output_body_shape_and_key_order() {
        let body = convert(json!({"model": "x", "messages": [user("hi")],
            "temperature": 0.2, "top_p": 0.9, "user": "u-1", "metadata": {"k": "v"},
            "parallel_tool_calls": false, "stream": false, "stream_options": null,
            "prompt_cache_key": "pck", "safety_identifier": "sid"}));
        assert_eq!(
            body.to_string(),
            json!({"model":"gpt-5-2025-08-07","instructions":PROMPT,
                "input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],
                "store":false,"stream":false,"temperature":0.2,"top_p":0.9,"parallel_tool_calls":false,
                "user":"u-1","metadata":{"k":"v"},"prompt_cache_key":"pck","safety_identifier":"sid"})
            .to_string()
        );
        // No stream flag from the client: none upstream, and Prepared says non-streaming.
        let p = chat_to_responses(
            json!({"messages": [user("hi")]}),
            &model(ReasoningLevel::Auto),
            &ctx(""),
        )
        .unwrap();
        assert!(!p.stream);
        assert_eq!(
            p.body,
            json!({"model":"gpt-5-2025-08-07","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],"store":false})
        );
    }

    #[test]
    fn max_output_tokens_is_clamped() {
        // §7 row 22: below 16 is rejected upstream.
        let b = convert(json!({"messages": [user("hi")], "max_tokens": 5}));
        assert_eq!(b["max_output_tokens"], 16);
        let b = convert(json!({"messages": [user("hi")], "max_completion_tokens": 0}));
        assert_eq!(b["max_output_tokens"], 16);
        // Capped by the model.
        let b = convert(json!({"messages": [user("hi")], "max_tokens": 1_000_000}));
        assert_eq!(b["max_output_tokens"], 128_000);
        // max_completion_tokens wins; an integral float is fine.
        let b = convert(
            json!({"messages": [user("hi")], "max_completion_tokens": 2000.0, "max_tokens": 50}),
        );
        assert_eq!(b["max_output_tokens"], 2000);
        let b = convert(
            json!({"messages": [user("hi")], "max_completion_tokens": null, "max_tokens": 50}),
        );
        assert_eq!(b["max_output_tokens"], 50);
        // Neither: omitted.
        let b = convert(json!({"messages": [user("hi")]}));
        assert!(b.get("max_output_tokens").is_none());
        for bad in [json!(-1), json!("100"), json!(1.5)] {
            let e = error(json!({"messages": [user("hi")], "max_tokens": bad}));
            assert_eq!(e.param, "max_tokens");
        }
        let e = error(json!({"messages": [user("hi")], "max_completion_tokens": "x"}));
        assert_eq!(e.param, "max_completion_tokens");
    }

    #[test]
    fn tools_are_flattened_with_explicit_strict() {
        // §7 row 23: `strict` is always sent.
        let b = convert(json!({"messages": [user("hi")], "tools": [
            {"type": "function", "function": {"name": "a", "description": "A.", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}, "additionalProperties": false}, "strict": true}},
            {"type": "function", "function": {"name": "c", "strict": null}}
        ]}));
        assert_eq!(
            b["tools"],
            json!([
                {"type":"function","name":"a","description":"A.","parameters":{"type":"object","properties":{"x":{"type":"number"}}},"strict":false},
                {"type":"function","name":"b","parameters":{"type":"object","properties":{},"additionalProperties":false},"strict":true},
                {"type":"function","name":"c","parameters":{"type":"object","properties":{}},"strict":false}
            ])
        );
        let e = error(json!({"messages": [user("hi")], "tools": [
            {"type": "function", "function": {"name": "a"}},
            {"type": "custom", "custom": {"name": "grammar"}}
        ]}));
        assert_eq!(e.param, "tools[1].type");
        assert!(e.message.contains("custom"), "{e}");
        let e = error(
            json!({"messages": [user("hi")], "tools": [{"type": "function", "function": {"description": "no name"}}]}),
        );
        assert_eq!(e.param, "tools[0].function.name");
        let e = error(
            json!({"messages": [user("hi")], "tools": [{"type": "function", "function": {"name": "a", "strict": "yes"}}]}),
        );
        assert_eq!(e.param, "tools[0].function.strict");
        let e = error(json!({"messages": [user("hi")], "tools": {}}));
        assert_eq!(e.param, "tools");
        // An empty list is not sent.
        let b = convert(json!({"messages": [user("hi")], "tools": []}));
        assert!(b.get("tools").is_none());
    }

    #[test]
    fn tool_choice_forms() {
        for s in ["auto", "none", "required"] {
            let b = convert(json!({"messages": [user("hi")], "tool_choice": s}));
            assert_eq!(b["tool_choice"], s);
        }
        let b = convert(json!({"messages": [user("hi")],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}));
        assert_eq!(
            b["tool_choice"],
            json!({"type": "function", "name": "get_weather"})
        );
        let b = convert(json!({"messages": [user("hi")],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required",
                "tools": [{"type": "function", "function": {"name": "a"}}]}}}));
        assert_eq!(
            b["tool_choice"],
            json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]})
        );
        let e = error(
            json!({"messages": [user("hi")], "tool_choice": {"type": "function", "function": {}}}),
        );
        assert_eq!(e.param, "tool_choice.function.name");
        let e = error(json!({"messages": [user("hi")], "tool_choice": {"type": "custom"}}));
        assert_eq!(e.param, "tool_choice.type");
        let e = error(json!({"messages": [user("hi")], "tool_choice": 3}));
        assert_eq!(e.param, "tool_choice");
    }

    #[test]
    fn response_format_is_flattened_into_text_format() {
        // §7 row 24.
        let b = convert(json!({"messages": [user("hi")], "verbosity": "low",
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "weather", "description": "A report.", "strict": true,
                "schema": {"type": "object", "properties": {"t": {"type": "number"}}, "required": ["t"], "additionalProperties": false}}}}));
        assert_eq!(
            b["text"],
            json!({"format": {"type": "json_schema", "name": "weather",
                "schema": {"type": "object", "properties": {"t": {"type": "number"}}, "required": ["t"], "additionalProperties": false},
                "strict": true, "description": "A report."}, "verbosity": "low"})
        );
        let b = convert(json!({"messages": [user("hi")],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}}));
        assert_eq!(
            b["text"],
            json!({"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": false}})
        );
        let b =
            convert(json!({"messages": [user("hi")], "response_format": {"type": "json_object"}}));
        assert_eq!(b["text"], json!({"format": {"type": "json_object"}}));
        let b = convert(json!({"messages": [user("hi")], "response_format": {"type": "text"}}));
        assert!(b.get("text").is_none());
        let b = convert(json!({"messages": [user("hi")], "verbosity": "high"}));
        assert_eq!(b["text"], json!({"verbosity": "high"}));
        let e = error(
            json!({"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
        );
        assert_eq!(e.param, "response_format.json_schema.name");
        let e = error(
            json!({"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {"name": "w"}}}),
        );
        assert_eq!(e.param, "response_format.json_schema.schema");
        let e = error(json!({"messages": [user("hi")], "response_format": {"type": "grammar"}}));
        assert_eq!(e.param, "response_format.type");
    }

    #[test]
    fn reasoning_levels() {
        let req = || json!({"messages": [user("hi")], "reasoning_effort": "minimal"});
        // Auto: the client's value as-is, any string.
        assert_eq!(
            convert(req())["reasoning"],
            json!({"effort": "minimal", "summary": "auto"})
        );
        let b = convert(json!({"messages": [user("hi")], "reasoning_effort": "none"}));
        assert_eq!(b["reasoning"], json!({"effort": "none", "summary": "auto"}));
        assert!(
            convert(json!({"messages": [user("hi")]}))
                .get("reasoning")
                .is_none()
        );
        assert!(
            convert(json!({"messages": [user("hi")], "reasoning_effort": null}))
                .get("reasoning")
                .is_none()
        );
        let e = error(json!({"messages": [user("hi")], "reasoning_effort": 3}));
        assert_eq!(e.param, "reasoning_effort");
        // Fixed levels win over the client.
        for (level, effort) in [
            (ReasoningLevel::Low, "low"),
            (ReasoningLevel::Medium, "medium"),
            (ReasoningLevel::High, "high"),
        ] {
            let b = convert_with(req(), level, "");
            assert_eq!(b["reasoning"], json!({"effort": effort, "summary": "auto"}));
        }
        assert!(
            convert_with(req(), ReasoningLevel::Off, "")
                .get("reasoning")
                .is_none()
        );
    }

    #[test]
    fn unsupported_fields_are_refused() {
        let e = error(json!({"messages": [user("hi")], "n": 2}));
        assert_eq!(e.param, "n");
        let e =
            error(json!({"messages": [user("hi")], "audio": {"voice": "alloy", "format": "wav"}}));
        assert_eq!(e.param, "audio");
        let e = error(json!({"messages": [user("hi")], "modalities": ["text", "audio"]}));
        assert_eq!(e.param, "modalities");
        // n = 1, audio null and text-only modalities are fine (and not forwarded).
        let b = convert(
            json!({"messages": [user("hi")], "n": 1, "audio": null, "modalities": ["text"]}),
        );
        for key in ["n", "audio", "modalities"] {
            assert!(b.get(key).is_none(), "{key}");
        }
    }

    #[test]
    fn user_parts() {
        let b = convert(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "text", "text": ""},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": "https://example.com/b.png"},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            {"type": "file", "file": {"file_id": "file-123"}}
        ]}]}));
        assert_eq!(
            b["input"],
            json!([{"type":"message","role":"user","content":[
                {"type":"input_text","text":"Look:"},
                {"type":"input_image","image_url":"https://example.com/a.png","detail":"auto"},
                {"type":"input_image","image_url":"https://example.com/b.png","detail":"auto"},
                {"type":"input_file","file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"},
                {"type":"input_file","file_id":"file-123"}]}])
        );
        // A user message with nothing left is dropped.
        let b = convert(json!({"messages": [{"role": "user", "content": ""}, user("hi")]}));
        assert_eq!(b["input"].as_array().unwrap().len(), 1);
        let e = error(
            json!({"messages": [user("a"), {"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}]}),
        );
        assert_eq!(e.param, "messages[1].content[0].image_url.url");
        let e = error(
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
        );
        assert_eq!(e.param, "messages[0].content[0].type");
        let e = error(
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "x"}}]}]}),
        );
        assert_eq!(e.param, "messages[0].content[0].file");
        let e = error(json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}));
        assert_eq!(e.param, "messages[0].content[0].text");
        let e = error(json!({"messages": [{"role": "user", "content": 5}]}));
        assert_eq!(e.param, "messages[0].content");
    }

    #[test]
    fn assistant_turns_and_tool_results() {
        let b = convert(json!({"messages": [
            user("weather in Paris and Rome?"),
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "18C "}, {"type": "text", "text": "sunny"}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
            {"role": "assistant", "content": [{"type": "text", "text": "Paris: 18C."}, {"type": "refusal", "refusal": "No Rome."}]},
            {"role": "assistant", "content": "   "},
            {"role": "assistant", "content": null, "refusal": "I can't."}
        ]}));
        assert_eq!(
            b["input"],
            json!([
                {"type":"message","role":"user","content":[{"type":"input_text","text":"weather in Paris and Rome?"}]},
                {"type":"function_call","call_id":"call_a","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
                {"type":"function_call","call_id":"call_b","name":"get_time","arguments":"{}"},
                {"type":"function_call_output","call_id":"call_a","output":"18C sunny"},
                {"type":"function_call_output","call_id":"call_b","output":"12:00"},
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Paris: 18C."},{"type":"refusal","refusal":"No Rome."}]},
                {"type":"message","role":"assistant","content":[{"type":"refusal","refusal":"I can't."}]}
            ])
        );
        // No invented `fc_` ids anywhere.
        assert!(!b.to_string().contains("\"id\""));
        // Assistant text comes before its calls.
        let b = convert(
            json!({"messages": [{"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]}),
        );
        assert_eq!(
            b["input"],
            json!([
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Checking."}]},
                {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"a\":1}"}
            ])
        );
        let e = error(
            json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
        );
        assert_eq!(e.param, "messages[0].tool_calls[0].id");
        let e = error(
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]}),
        );
        assert_eq!(e.param, "messages[0].tool_calls[0].function.name");
        let e = error(
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}]}),
        );
        assert_eq!(e.param, "messages[0].tool_calls[0].type");
        let e = error(json!({"messages": [user("a"), {"role": "tool", "content": "x"}]}));
        assert_eq!(e.param, "messages[1].tool_call_id");
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let e = error(json!([1]));
        assert_eq!(e.param, "body");
        let e = error(json!({}));
        assert_eq!(e.param, "messages");
        let e = error(json!({"messages": "hi"}));
        assert_eq!(e.param, "messages");
        let e = error(json!({"messages": [user("a"), 3]}));
        assert_eq!(e.param, "messages[1]");
        let e = error(json!({"messages": [user("a"), {"content": "x"}]}));
        assert_eq!(e.param, "messages[1].role");
        let e = error(
            json!({"messages": [user("a"), {"role": "function", "name": "f", "content": "x"}]}),
        );
        assert_eq!(e.param, "messages[1].role");
        let e = error(json!({"messages": [user("a")], "stream": "yes"}));
        assert_eq!(e.param, "stream");
    }
}
