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

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::config::{Model, ReasoningLevel};
use crate::translate::passthrough::inject_anthropic_system;
use crate::translate::reasoning::{self, INTERLEAVED_THINKING_BETA, MIN_THINKING_BUDGET};
use crate::translate::{Context, Prepared, TranslateError};

mod params;
use params::{
    json_schema, response_format_system, sampling, stop_sequences, tool_choice, tools, user_id,
};

/// The system text added for `response_format: {"type": "json_object"}`.
pub const JSON_OBJECT_INSTRUCTION: &str = "Respond with exactly one valid JSON object and nothing else: no text before or after it and no Markdown code fences.";

/// The image media types Anthropic accepts.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

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
    let Value::Object(req) = body else {
        return Err(err("body", "expected a JSON object"));
    };
    reject_unsupported(&req)?;
    let stream = match present(&req, "stream") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(err("stream", "expected a boolean")),
    };
    let streaming = stream.unwrap_or(false);

    let mut conv = Conversation::default();
    match req.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => {
            for (i, m) in messages.iter().enumerate() {
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
    let tools = tools(&req)?;
    let tool_choice = match &tools {
        Some(_) => tool_choice(&req)?,
        None => None,
    };

    let requested = max_tokens_requested(&req)?;
    let mut cap = u64::from(model.max_output_tokens);
    if !streaming {
        cap = cap.min(reasoning::NON_STREAMING_MAX_TOKENS);
    }
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
    if let Some(s) = stop_sequences(&req)? {
        out.insert("stop_sequences".into(), s);
    }
    sampling(&req, &mut out)?;
    if let Some(u) = user_id(&req)? {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if let Some(schema) = json_schema(&req)? {
        out.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": schema}}),
        );
    }
    if let Some(s) = stream {
        out.insert("stream".into(), Value::Bool(s));
    }

    // Thinking (§5).
    let level = model.reasoning;
    let thinking_on = match level {
        ReasoningLevel::Low | ReasoningLevel::Medium | ReasoningLevel::High
            if !thinking_blocked =>
        {
            reasoning::apply_anthropic(&mut out, model, ctx.budgets, streaming)
        }
        ReasoningLevel::Auto if !thinking_blocked => {
            auto_thinking(&req, &mut out, model, ctx, requested, streaming, plain_max)?
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
    req: &Map<String, Value>,
    out: &mut Map<String, Value>,
    model: &Model,
    ctx: &Context<'_>,
    requested: Option<u64>,
    stream: bool,
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
            stream,
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
    match present(req, "thinking") {
        None => Ok(false),
        Some(t @ Value::Object(o)) => {
            // Copied as-is; max_tokens stays the client's (capped).
            out.insert("max_tokens".into(), json!(plain_max));
            out.insert("thinking".into(), t.clone());
            Ok(o.get("type").and_then(Value::as_str) != Some("disabled"))
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

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    ToolUse { id: String, origin: String },
    ToolResult { id: String, origin: String },
    Other,
}

#[derive(Debug, Clone)]
struct Block {
    json: Value,
    kind: Kind,
}

impl Block {
    fn other(json: Value) -> Self {
        Block {
            json,
            kind: Kind::Other,
        }
    }
}

#[derive(Debug, Clone)]
struct Turn {
    role: Role,
    blocks: Vec<Block>,
}

impl Turn {
    fn into_json(self) -> Value {
        let role = match self.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        json!({
            "role": role,
            "content": self.blocks.into_iter().map(|b| b.json).collect::<Vec<_>>(),
        })
    }
}

/// What a content part may be, by where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    System,
    User,
    Assistant,
    ToolResult,
}

#[derive(Debug, Default)]
struct Conversation {
    system: Vec<Value>,
    turns: Vec<Turn>,
    /// The last assistant message with tool calls had no `thinking_blocks` (§5.5).
    last_tool_turn_lacks_thinking: bool,
    /// The tool_use id of the last legacy `function_call`, answered by a `function` message.
    pending_function_call: Option<String>,
}

impl Conversation {
    fn message(&mut self, i: usize, m: &Value) -> Result<(), TranslateError> {
        let path = format!("messages[{i}]");
        let Some(m) = m.as_object() else {
            return Err(err(path, "expected a message object"));
        };
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err(err(format!("{path}.role"), "expected a string"));
        };
        let content = m.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" => {
                let blocks = content_blocks(content, &path, Place::System)?;
                self.system.extend(blocks.into_iter().map(|b| b.json));
            }
            "user" => {
                let blocks = content_blocks(content, &path, Place::User)?;
                self.push(Role::User, blocks);
            }
            "assistant" => {
                let blocks = self.assistant(m, &path)?;
                self.push(Role::Assistant, blocks);
            }
            "tool" => {
                let id = match m.get("tool_call_id").and_then(Value::as_str) {
                    Some(id) => tool_id(id, &format!("{path}.tool_call_id"))?,
                    None => return Err(err(format!("{path}.tool_call_id"), "expected a string")),
                };
                let is_error = m.get("is_error").and_then(Value::as_bool) == Some(true);
                let origin = format!("{path}.tool_call_id");
                let block = tool_result(id, content, &path, origin, is_error)?;
                self.push(Role::User, vec![block]);
            }
            "function" => {
                let Some(id) = self.pending_function_call.take() else {
                    return Err(err(
                        path,
                        "a function message must follow an assistant message with a function_call",
                    ));
                };
                let block = tool_result(id, content, &path, path.clone(), false)?;
                self.push(Role::User, vec![block]);
            }
            other => {
                return Err(err(
                    format!("{path}.role"),
                    format!("unsupported role `{other}`"),
                ));
            }
        }
        Ok(())
    }

    fn assistant(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
    ) -> Result<Vec<Block>, TranslateError> {
        let mut blocks = Vec::new();
        // §5.5: replayed thinking first, unchanged.
        match m.get("thinking_blocks") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (k, b) in list.iter().enumerate() {
                    let ty = b.get("type").and_then(Value::as_str);
                    if !matches!(ty, Some("thinking" | "redacted_thinking")) {
                        return Err(err(
                            format!("{path}.thinking_blocks[{k}]"),
                            "expected a thinking or redacted_thinking block",
                        ));
                    }
                    blocks.push(Block {
                        json: b.clone(),
                        kind: Kind::Thinking,
                    });
                }
            }
            Some(_) => {
                return Err(err(format!("{path}.thinking_blocks"), "expected an array"));
            }
        }
        let has_thinking = !blocks.is_empty();
        let content = m.get("content").filter(|c| !c.is_null());
        blocks.extend(content_blocks(content, path, Place::Assistant)?);

        let mut called = false;
        match m.get("tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                for (j, call) in calls.iter().enumerate() {
                    blocks.push(tool_use(call, &format!("{path}.tool_calls[{j}]"))?);
                    called = true;
                }
            }
            Some(_) => return Err(err(format!("{path}.tool_calls"), "expected an array")),
        }
        if let Some(call) = m.get("function_call").filter(|c| !c.is_null()) {
            let fpath = format!("{path}.function_call");
            let id = format!("function_call_{}", path_index(path));
            let name = function_name(call.get("name"), &format!("{fpath}.name"))?;
            let input = arguments(call.get("arguments"), &format!("{fpath}.arguments"))?;
            blocks.push(Block {
                json: json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                kind: Kind::ToolUse {
                    id: id.clone(),
                    origin: fpath,
                },
            });
            self.pending_function_call = Some(id);
            called = true;
        }
        if called {
            self.last_tool_turn_lacks_thinking = !has_thinking;
        }
        Ok(blocks)
    }

    /// Appends a turn, merging it into the previous one when the role repeats (§1.4 step 4);
    /// an empty turn is dropped (§7 row 2).
    fn push(&mut self, role: Role, blocks: Vec<Block>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => self.turns.push(Turn { role, blocks }),
        }
    }

    /// Orders merged turns, checks the first turn, trims a prefill and validates tool pairing.
    fn finish(&mut self) -> Result<Vec<Turn>, TranslateError> {
        let mut turns = std::mem::take(&mut self.turns);
        for t in &mut turns {
            // Tool results first in a user turn; replayed thinking first in an assistant turn.
            let first = |k: &Kind| match t.role {
                Role::User => matches!(k, Kind::ToolResult { .. }),
                Role::Assistant => matches!(k, Kind::Thinking),
            };
            let (mut head, tail): (Vec<Block>, Vec<Block>) =
                t.blocks.drain(..).partition(|b| first(&b.kind));
            head.extend(tail);
            t.blocks = head;
        }
        if turns.first().is_none_or(|t| t.role != Role::User) {
            return Err(err(
                "messages",
                "the first non-system message must be from the user",
            ));
        }
        // §1.4 step 6: a final assistant prefill cannot end with whitespace.
        if let Some(last) = turns.last_mut()
            && last.role == Role::Assistant
            && let Some(block) = last.blocks.last_mut()
            && block.kind == Kind::Text
            && let Some(text) = block.json.get("text").and_then(Value::as_str)
        {
            let trimmed = text.trim_end().to_string();
            if trimmed.is_empty() {
                last.blocks.pop();
            } else {
                block.json["text"] = Value::String(trimmed);
            }
            if last.blocks.is_empty() {
                turns.pop();
            }
        }
        validate_pairing(&turns)?;
        Ok(turns)
    }
}

/// `messages[7]` → 7.
fn path_index(path: &str) -> &str {
    path.trim_start_matches("messages[").trim_end_matches(']')
}

/// §1.4 step 7: every tool_use is answered in the next turn, every tool_result answers the
/// previous turn, no id twice.
///
/// Linear in the number of blocks: ids are looked up in hash sets, and each user turn is read
/// once as "the turn after" an assistant turn and once on its own.
fn validate_pairing(turns: &[Turn]) -> Result<(), TranslateError> {
    // The tool_use ids of the assistant turn right before the current turn.
    let mut previous_calls: HashSet<&str> = HashSet::new();
    for (k, turn) in turns.iter().enumerate() {
        match turn.role {
            Role::Assistant => {
                let mut ids: HashSet<&str> = HashSet::new();
                let mut calls: Vec<(&str, &str)> = Vec::new();
                for b in &turn.blocks {
                    if let Kind::ToolUse { id, origin } = &b.kind {
                        if !ids.insert(id) {
                            return Err(err(
                                format!("{origin}.id"),
                                format!("duplicate tool call id `{id}`"),
                            ));
                        }
                        calls.push((id, origin));
                    }
                }
                let answered: HashSet<&str> = turns
                    .get(k + 1)
                    .filter(|t| t.role == Role::User)
                    .map(|t| {
                        t.blocks
                            .iter()
                            .filter_map(|b| match &b.kind {
                                Kind::ToolResult { id, .. } => Some(id.as_str()),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for (id, origin) in &calls {
                    if !answered.contains(id) {
                        let param = if origin.ends_with(".function_call") {
                            (*origin).to_string()
                        } else {
                            format!("{origin}.id")
                        };
                        return Err(err(
                            param,
                            format!(
                                "tool call `{id}` has no tool result in the message right after it"
                            ),
                        ));
                    }
                }
                previous_calls = ids;
            }
            Role::User => {
                let mut seen: HashSet<&str> = HashSet::new();
                for b in &turn.blocks {
                    if let Kind::ToolResult { id, origin } = &b.kind {
                        if !previous_calls.contains(id.as_str()) {
                            return Err(err(
                                origin.clone(),
                                format!(
                                    "no tool call with id `{id}` in the assistant message right before this tool result"
                                ),
                            ));
                        }
                        if !seen.insert(id) {
                            return Err(err(
                                origin.clone(),
                                format!("tool call `{id}` has more than one tool result"),
                            ));
                        }
                    }
                }
                previous_calls.clear();
            }
        }
    }
    Ok(())
}

/// A tool call id made to match `^[a-zA-Z0-9_-]+$` (§1.6): every other character becomes `_`.
/// The same mapping applies to `tool_use.id` and `tool_result.tool_use_id`.
fn tool_id(id: &str, param: &str) -> Result<String, TranslateError> {
    if id.is_empty() {
        return Err(err(param, "must not be empty"));
    }
    Ok(id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect())
}

fn function_name(v: Option<&Value>, param: &str) -> Result<String, TranslateError> {
    match v.and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(err(param, "expected a non-empty string")),
    }
}

/// `function.arguments` → tool_use `input`: a JSON object; `""`/whitespace/absent → `{}`.
fn arguments(v: Option<&Value>, param: &str) -> Result<Value, TranslateError> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(o)) => Ok(Value::Object(o.clone())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(err(param, "must be a JSON object")),
            Err(e) => Err(err(param, format!("is not valid JSON ({e})"))),
        },
        Some(_) => Err(err(param, "expected a string holding a JSON object")),
    }
}

/// An assistant `tool_calls[j]` → `tool_use`.
fn tool_use(call: &Value, path: &str) -> Result<Block, TranslateError> {
    let Some(call) = call.as_object() else {
        return Err(err(path, "expected a tool call object"));
    };
    if let Some(ty) = call.get("type").filter(|t| !t.is_null())
        && ty != "function"
    {
        return Err(err(format!("{path}.type"), "expected \"function\""));
    }
    let id = match call.get("id").and_then(Value::as_str) {
        Some(id) => tool_id(id, &format!("{path}.id"))?,
        None => return Err(err(format!("{path}.id"), "expected a string")),
    };
    let Some(function) = call.get("function").and_then(Value::as_object) else {
        return Err(err(format!("{path}.function"), "expected an object"));
    };
    let name = function_name(function.get("name"), &format!("{path}.function.name"))?;
    let input = arguments(
        function.get("arguments"),
        &format!("{path}.function.arguments"),
    )?;
    Ok(Block {
        json: json!({"type": "tool_use", "id": id, "name": name, "input": input}),
        kind: Kind::ToolUse {
            id,
            origin: path.to_string(),
        },
    })
}

/// A `tool` (or legacy `function`) message → `tool_result`.
fn tool_result(
    id: String,
    content: Option<&Value>,
    path: &str,
    origin: String,
    is_error: bool,
) -> Result<Block, TranslateError> {
    let mut block = Map::new();
    block.insert("type".into(), json!("tool_result"));
    block.insert("tool_use_id".into(), json!(id));
    match content {
        None => {}
        Some(Value::String(s)) if !s.trim().is_empty() => {
            block.insert("content".into(), json!(s));
        }
        // Empty text never becomes content (§7 row 1).
        Some(Value::String(_)) => {}
        Some(c) => {
            let parts = content_blocks(Some(c), path, Place::ToolResult)?;
            if !parts.is_empty() {
                block.insert(
                    "content".into(),
                    Value::Array(parts.into_iter().map(|b| b.json).collect()),
                );
            }
        }
    }
    if is_error {
        block.insert("is_error".into(), Value::Bool(true));
    }
    Ok(Block {
        json: Value::Object(block),
        kind: Kind::ToolResult { id, origin },
    })
}

/// Message content (string, parts array or absent) → blocks; empty text is skipped (§7 row 1).
fn content_blocks(
    content: Option<&Value>,
    path: &str,
    place: Place,
) -> Result<Vec<Block>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text_block(s, None).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                if let Some(b) = content_part(part, &ppath, place)? {
                    blocks.push(b);
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(err(
            format!("{path}.content"),
            "expected a string or an array of content parts",
        )),
    }
}

/// A text block, or nothing for empty/whitespace-only text.
fn text_block(text: &str, cache_control: Option<&Value>) -> Option<Block> {
    if text.trim().is_empty() {
        return None;
    }
    let mut b = json!({"type": "text", "text": text});
    if let Some(cc) = cache_control {
        b["cache_control"] = cc.clone();
    }
    Some(Block {
        json: b,
        kind: Kind::Text,
    })
}

/// One content part (§1.5).
fn content_part(part: &Value, path: &str, place: Place) -> Result<Option<Block>, TranslateError> {
    let Some(p) = part.as_object() else {
        return Err(err(path, "expected a content part object"));
    };
    let Some(ty) = p.get("type").and_then(Value::as_str) else {
        return Err(err(format!("{path}.type"), "expected a string"));
    };
    let cache_control = p.get("cache_control").filter(|c| !c.is_null());
    let with_cache = |mut b: Value| {
        if let Some(cc) = cache_control {
            b["cache_control"] = cc.clone();
        }
        Some(Block::other(b))
    };
    match (ty, place) {
        ("text", _) => match p.get("text").and_then(Value::as_str) {
            Some(t) => Ok(text_block(t, cache_control)),
            None => Err(err(format!("{path}.text"), "expected a string")),
        },
        ("refusal", Place::Assistant) => match p.get("refusal").and_then(Value::as_str) {
            Some(t) => Ok(text_block(t, cache_control)),
            None => Err(err(format!("{path}.refusal"), "expected a string")),
        },
        (_, Place::System) => Err(err(
            format!("{path}.type"),
            "system and developer messages may only contain text parts",
        )),
        ("image_url", Place::User | Place::ToolResult) => {
            let ipath = format!("{path}.image_url");
            let url = match p.get("image_url") {
                Some(Value::String(u)) => u.as_str(),
                Some(Value::Object(o)) => match o.get("url").and_then(Value::as_str) {
                    Some(u) => u,
                    None => return Err(err(format!("{ipath}.url"), "expected a string")),
                },
                _ => return Err(err(ipath, "expected an object with a url")),
            };
            Ok(with_cache(image_source(url, &ipath)?))
        }
        ("file", Place::User) => {
            let fpath = format!("{path}.file");
            let Some(file) = p.get("file").and_then(Value::as_object) else {
                return Err(err(fpath, "expected an object"));
            };
            if file.get("file_id").is_some_and(|f| !f.is_null()) {
                return Err(err(
                    format!("{fpath}.file_id"),
                    "uploaded file ids are not supported for Claude models; send file_data",
                ));
            }
            let dpath = format!("{fpath}.file_data");
            let Some(data) = file.get("file_data").and_then(Value::as_str) else {
                return Err(err(dpath, "expected a data URL"));
            };
            match data_url(data) {
                Some((mime, b64)) if mime == "application/pdf" && !b64.is_empty() => {
                    Ok(with_cache(json!({
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": b64},
                    })))
                }
                Some((mime, _)) if mime != "application/pdf" => Err(err(
                    dpath,
                    format!("unsupported file type `{mime}`; only application/pdf is supported"),
                )),
                _ => Err(err(
                    dpath,
                    "expected a base64 data URL (data:application/pdf;base64,…)",
                )),
            }
        }
        ("input_audio", _) => Err(err(path, "audio input is not supported for Claude models")),
        (other, _) => Err(err(
            format!("{path}.type"),
            format!("unsupported content part type `{other}` here"),
        )),
    }
}

/// An image URL → an Anthropic image block: a base64 data URL or an http(s) URL.
fn image_source(url: &str, param: &str) -> Result<Value, TranslateError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    if lower.starts_with("data:") {
        let Some((mime, b64)) = data_url(url) else {
            return Err(err(
                param,
                "expected a base64 data URL (data:<image type>;base64,…)",
            ));
        };
        let mime = if mime == "image/jpg" {
            "image/jpeg".to_string()
        } else {
            mime
        };
        if !IMAGE_TYPES.contains(&mime.as_str()) {
            return Err(err(
                param,
                format!(
                    "unsupported image type `{mime}`; use image/jpeg, image/png, image/gif or image/webp"
                ),
            ));
        }
        if b64.is_empty() {
            return Err(err(param, "the data URL holds no data"));
        }
        return Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": mime, "data": b64},
        }));
    }
    Err(err(param, "expected a base64 data URL or an http(s) URL"))
}

/// `data:<mime>[;params];base64,<data>` → (lower-case mime, data). `None` when it is not a
/// base64 data URL.
fn data_url(url: &str) -> Option<(String, &str)> {
    let head = url.get(..5)?;
    if !head.eq_ignore_ascii_case("data:") {
        return None;
    }
    let rest = &url[5..];
    let (meta, data) = rest.split_once(',')?;
    let mut params = meta.split(';');
    let mime = params.next()?.trim().to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return None;
    }
    Some((mime, data.trim()))
}

#[cfg(test)]
mod tests;
