//! Chat `messages` → Anthropic `system` and turns (`translation.md` §1.4–§1.6, §5.5).
//!
//! Every message is taken by value and its strings and objects are moved into the blocks (a
//! 32 MiB tool result or image is never copied); field paths for error messages are only
//! rendered when an error is raised ([`At`]).

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use super::err;
use crate::config::ESCAPES_PER_VALUE;
use crate::json_scan::count_values;
use crate::translate::path::At;
use crate::translate::{TranslateError, is_blank};

/// The image media types Anthropic accepts.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

// ---------------------------------------------------------------------------------------------
// Origins
// ---------------------------------------------------------------------------------------------

/// Where a tool call or tool result came from: the field an error about its pairing names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `messages[m].tool_calls[c]`.
    ToolCall { message: usize, call: usize },
    /// `messages[m].function_call` (legacy).
    FunctionCall { message: usize },
    /// `messages[m].tool_call_id`.
    ToolMessage { message: usize },
    /// `messages[m]` (a legacy `function` message).
    FunctionMessage { message: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Origin::ToolCall { message, call } => {
                write!(f, "messages[{message}].tool_calls[{call}]")
            }
            Origin::FunctionCall { message } => write!(f, "messages[{message}].function_call"),
            Origin::ToolMessage { message } => write!(f, "messages[{message}].tool_call_id"),
            Origin::FunctionMessage { message } => write!(f, "messages[{message}]"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks and turns
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    Other,
}

/// One Anthropic content block. Tool blocks keep their id apart until the end (pairing reads
/// it); the others are JSON already.
#[derive(Debug)]
enum Block {
    Json {
        json: Value,
        kind: Kind,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        origin: Origin,
    },
    ToolResult {
        id: String,
        content: Option<Value>,
        is_error: bool,
        origin: Origin,
    },
}

impl Block {
    fn other(json: Value) -> Self {
        Block::Json {
            json,
            kind: Kind::Other,
        }
    }

    fn into_json(self) -> Value {
        match self {
            Block::Json { json, .. } => json,
            Block::ToolUse {
                id, name, input, ..
            } => object([
                ("type", Value::from("tool_use")),
                ("id", Value::String(id)),
                ("name", Value::String(name)),
                ("input", input),
            ]),
            Block::ToolResult {
                id,
                content,
                is_error,
                ..
            } => {
                let mut block = Map::with_capacity(4);
                block.insert("type".into(), Value::from("tool_result"));
                block.insert("tool_use_id".into(), Value::String(id));
                if let Some(c) = content {
                    block.insert("content".into(), c);
                }
                if is_error {
                    block.insert("is_error".into(), Value::Bool(true));
                }
                Value::Object(block)
            }
        }
    }
}

/// A JSON object of exactly these entries, in this order.
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut map = Map::with_capacity(N);
    for (k, v) in entries {
        map.insert(k.to_string(), v);
    }
    Value::Object(map)
}

#[derive(Debug)]
pub(super) struct Turn {
    pub role: Role,
    blocks: Vec<Block>,
}

impl Turn {
    pub fn into_json(self) -> Value {
        let role = match self.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let content: Vec<Value> = self.blocks.into_iter().map(Block::into_json).collect();
        object([
            ("role", Value::from(role)),
            ("content", Value::Array(content)),
        ])
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

// ---------------------------------------------------------------------------------------------
// The conversation
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub(super) struct Conversation {
    pub system: Vec<Value>,
    turns: Vec<Turn>,
    /// The last assistant message with tool calls had no `thinking_blocks` (§5.5).
    pub last_tool_turn_lacks_thinking: bool,
    /// The tool_use id of the last legacy `function_call`, answered by a `function` message.
    pending_function_call: Option<String>,
    /// JSON values the tool-call `arguments` still to parse may hold (`Context`).
    embedded_values_left: u64,
}

impl Conversation {
    pub fn new(embedded_values_left: u64) -> Self {
        Conversation {
            system: Vec::new(),
            turns: Vec::new(),
            last_tool_turn_lacks_thinking: false,
            pending_function_call: None,
            embedded_values_left,
        }
    }

    pub fn message(&mut self, i: usize, m: Value) -> Result<(), TranslateError> {
        let at = At::message(i);
        let Value::Object(mut m) = m else {
            return Err(err(at, "expected a message object"));
        };
        let role = match m.remove("role") {
            Some(Value::String(role)) => role,
            _ => return Err(err(at.key("role"), "expected a string")),
        };
        let content = m.remove("content").filter(|c| !c.is_null());
        match role.as_str() {
            "system" | "developer" => {
                let blocks = content_blocks(content, &at, Place::System)?;
                self.system.extend(blocks.into_iter().map(Block::into_json));
            }
            "user" => {
                let blocks = content_blocks(content, &at, Place::User)?;
                self.push(Role::User, blocks);
            }
            "assistant" => {
                let blocks = self.assistant(i, m, content, &at)?;
                self.push(Role::Assistant, blocks);
            }
            "tool" => {
                let id = match m.remove("tool_call_id") {
                    Some(Value::String(id)) => tool_id(id, at.key("tool_call_id"))?,
                    _ => return Err(err(at.key("tool_call_id"), "expected a string")),
                };
                let is_error = m.get("is_error").and_then(Value::as_bool) == Some(true);
                let origin = Origin::ToolMessage { message: i };
                let block = tool_result(id, content, &at, origin, is_error)?;
                self.push(Role::User, vec![block]);
            }
            "function" => {
                let Some(id) = self.pending_function_call.take() else {
                    return Err(err(
                        at,
                        "a function message must follow an assistant message with a function_call",
                    ));
                };
                let origin = Origin::FunctionMessage { message: i };
                let block = tool_result(id, content, &at, origin, false)?;
                self.push(Role::User, vec![block]);
            }
            other => {
                return Err(err(at.key("role"), format!("unsupported role `{other}`")));
            }
        }
        Ok(())
    }

    fn assistant(
        &mut self,
        i: usize,
        mut m: Map<String, Value>,
        content: Option<Value>,
        at: &At<'_>,
    ) -> Result<Vec<Block>, TranslateError> {
        let mut blocks = Vec::new();
        // §5.5: replayed thinking first, unchanged.
        match m.remove("thinking_blocks") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                blocks.reserve(list.len());
                for (k, b) in list.into_iter().enumerate() {
                    let ty = b.get("type").and_then(Value::as_str);
                    if !matches!(ty, Some("thinking" | "redacted_thinking")) {
                        return Err(err(
                            at.key("thinking_blocks").index(k),
                            "expected a thinking or redacted_thinking block",
                        ));
                    }
                    blocks.push(Block::Json {
                        json: b,
                        kind: Kind::Thinking,
                    });
                }
            }
            Some(_) => {
                return Err(err(at.key("thinking_blocks"), "expected an array"));
            }
        }
        let has_thinking = !blocks.is_empty();
        blocks.extend(content_blocks(content, at, Place::Assistant)?);

        let mut called = false;
        match m.remove("tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                blocks.reserve(calls.len());
                let calls_at = at.key("tool_calls");
                for (j, call) in calls.into_iter().enumerate() {
                    let origin = Origin::ToolCall {
                        message: i,
                        call: j,
                    };
                    blocks.push(self.tool_use(call, &calls_at.index(j), origin)?);
                    called = true;
                }
            }
            Some(_) => return Err(err(at.key("tool_calls"), "expected an array")),
        }
        if let Some(call) = m.remove("function_call").filter(|c| !c.is_null()) {
            let fat = at.key("function_call");
            let id = format!("function_call_{i}");
            let mut call = match call {
                Value::Object(o) => o,
                _ => Map::new(),
            };
            let name = function_name(call.remove("name"), fat.key("name"))?;
            let input = self.arguments(call.remove("arguments"), fat.key("arguments"))?;
            self.pending_function_call = Some(id.clone());
            blocks.push(Block::ToolUse {
                id,
                name,
                input,
                origin: Origin::FunctionCall { message: i },
            });
            called = true;
        }
        if called {
            self.last_tool_turn_lacks_thinking = !has_thinking;
        }
        Ok(blocks)
    }

    /// An assistant `tool_calls[j]` → `tool_use`.
    fn tool_use(
        &mut self,
        call: Value,
        at: &At<'_>,
        origin: Origin,
    ) -> Result<Block, TranslateError> {
        let Value::Object(mut call) = call else {
            return Err(err(*at, "expected a tool call object"));
        };
        if let Some(ty) = call.get("type").filter(|t| !t.is_null())
            && ty != "function"
        {
            return Err(err(at.key("type"), "expected \"function\""));
        }
        let id = match call.remove("id") {
            Some(Value::String(id)) => tool_id(id, at.key("id"))?,
            _ => return Err(err(at.key("id"), "expected a string")),
        };
        let Some(Value::Object(mut function)) = call.remove("function") else {
            return Err(err(at.key("function"), "expected an object"));
        };
        let fat = at.key("function");
        let name = function_name(function.remove("name"), fat.key("name"))?;
        let input = self.arguments(function.remove("arguments"), fat.key("arguments"))?;
        Ok(Block::ToolUse {
            id,
            name,
            input,
            origin,
        })
    }

    /// `function.arguments` → tool_use `input`: a JSON object; `""`/whitespace/absent → `{}`.
    /// The values of a JSON string count against what `limits.max_json_values` left, less the
    /// one the string itself was counted as (the document replaces it): `"{}"` costs nothing
    /// more, and the values of the request never exceed the limit in all.
    fn arguments(&mut self, v: Option<Value>, at: At<'_>) -> Result<Value, TranslateError> {
        match v {
            None | Some(Value::Null) => Ok(Value::Object(Map::new())),
            Some(o @ Value::Object(_)) => Ok(o),
            Some(Value::String(s)) if is_blank(&s) => Ok(Value::Object(Map::new())),
            Some(Value::String(s)) => {
                let left = self.embedded_values_left;
                let weight = count_values(s.as_bytes(), left.saturating_add(1), ESCAPES_PER_VALUE)
                    .map_err(|_| {
                        err(
                            at,
                            format!(
                                "holds more JSON values than the {left} that \
                                 limits.max_json_values leaves after the request body's own"
                            ),
                        )
                        .with_code("too_many_values")
                    })?
                    .weight(ESCAPES_PER_VALUE);
                self.embedded_values_left = left - weight.saturating_sub(1);
                match serde_json::from_str::<Value>(&s) {
                    Ok(v @ Value::Object(_)) => Ok(v),
                    Ok(_) => Err(err(at, "must be a JSON object")),
                    Err(e) => Err(err(at, format!("is not valid JSON ({e})"))),
                }
            }
            Some(_) => Err(err(at, "expected a string holding a JSON object")),
        }
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
    pub fn finish(&mut self) -> Result<Vec<Turn>, TranslateError> {
        let mut turns = std::mem::take(&mut self.turns);
        for t in &mut turns {
            // Tool results first in a user turn; replayed thinking first in an assistant turn.
            let first = |b: &Block| match t.role {
                Role::User => matches!(b, Block::ToolResult { .. }),
                Role::Assistant => matches!(
                    b,
                    Block::Json {
                        kind: Kind::Thinking,
                        ..
                    }
                ),
            };
            if t.blocks.iter().skip_while(|b| first(b)).any(first) {
                let (mut head, tail): (Vec<Block>, Vec<Block>) =
                    t.blocks.drain(..).partition(first);
                head.extend(tail);
                t.blocks = head;
            }
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
            && let Some(Block::Json {
                json,
                kind: Kind::Text,
            }) = last.blocks.last_mut()
            && let Some(Value::String(text)) = json.get_mut("text")
        {
            text.truncate(text.trim_end().len());
            if text.is_empty() {
                last.blocks.pop();
            }
            if last.blocks.is_empty() {
                turns.pop();
            }
        }
        validate_pairing(&turns)?;
        Ok(turns)
    }
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
                let mut calls: Vec<(&str, Origin)> = Vec::new();
                for b in &turn.blocks {
                    if let Block::ToolUse { id, origin, .. } = b {
                        if !ids.insert(id) {
                            return Err(err(
                                format!("{origin}.id"),
                                format!("duplicate tool call id `{id}`"),
                            ));
                        }
                        calls.push((id, *origin));
                    }
                }
                let answered: HashSet<&str> = turns
                    .get(k + 1)
                    .filter(|t| t.role == Role::User)
                    .map(|t| {
                        t.blocks
                            .iter()
                            .filter_map(|b| match b {
                                Block::ToolResult { id, .. } => Some(id.as_str()),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for (id, origin) in &calls {
                    if !answered.contains(id) {
                        let param = match origin {
                            Origin::FunctionCall { .. } => origin.to_string(),
                            _ => format!("{origin}.id"),
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
                    if let Block::ToolResult { id, origin, .. } = b {
                        if !previous_calls.contains(id.as_str()) {
                            return Err(err(
                                origin.to_string(),
                                format!(
                                    "no tool call with id `{id}` in the assistant message right before this tool result"
                                ),
                            ));
                        }
                        if !seen.insert(id) {
                            return Err(err(
                                origin.to_string(),
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
fn tool_id(id: String, at: At<'_>) -> Result<String, TranslateError> {
    if id.is_empty() {
        return Err(err(at, "must not be empty"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.chars().all(valid) {
        return Ok(id);
    }
    Ok(id.chars().map(|c| if valid(c) { c } else { '_' }).collect())
}

pub(super) fn function_name(
    v: Option<Value>,
    param: impl Into<String>,
) -> Result<String, TranslateError> {
    match v {
        Some(Value::String(n)) if !n.is_empty() => Ok(n),
        _ => Err(err(param, "expected a non-empty string")),
    }
}

/// A `tool` (or legacy `function`) message → `tool_result`.
fn tool_result(
    id: String,
    content: Option<Value>,
    at: &At<'_>,
    origin: Origin,
    is_error: bool,
) -> Result<Block, TranslateError> {
    let content = match content {
        None => None,
        Some(Value::String(s)) if !is_blank(&s) => Some(Value::String(s)),
        // Empty text never becomes content (§7 row 1).
        Some(Value::String(_)) => None,
        Some(c) => {
            let parts = content_blocks(Some(c), at, Place::ToolResult)?;
            (!parts.is_empty())
                .then(|| Value::Array(parts.into_iter().map(Block::into_json).collect()))
        }
    };
    Ok(Block::ToolResult {
        id,
        content,
        is_error,
        origin,
    })
}

/// Message content (string, parts array or absent) → blocks; empty text is skipped (§7 row 1).
fn content_blocks(
    content: Option<Value>,
    at: &At<'_>,
    place: Place,
) -> Result<Vec<Block>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text_block(s, None).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            let parts_at = at.key("content");
            for (j, part) in parts.into_iter().enumerate() {
                if let Some(b) = content_part(part, &parts_at.index(j), place)? {
                    blocks.push(b);
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(err(
            at.key("content"),
            "expected a string or an array of content parts",
        )),
    }
}

/// A text block, or nothing for empty/whitespace-only text.
fn text_block(text: String, cache_control: Option<Value>) -> Option<Block> {
    if is_blank(&text) {
        return None;
    }
    let mut b = Map::with_capacity(2 + usize::from(cache_control.is_some()));
    b.insert("type".into(), Value::from("text"));
    b.insert("text".into(), Value::String(text));
    if let Some(cc) = cache_control {
        b.insert("cache_control".into(), cc);
    }
    Some(Block::Json {
        json: Value::Object(b),
        kind: Kind::Text,
    })
}

/// One content part (§1.5).
fn content_part(part: Value, at: &At<'_>, place: Place) -> Result<Option<Block>, TranslateError> {
    let Value::Object(mut p) = part else {
        return Err(err(*at, "expected a content part object"));
    };
    let ty = match p.remove("type") {
        Some(Value::String(ty)) => ty,
        _ => return Err(err(at.key("type"), "expected a string")),
    };
    let cache_control = p.remove("cache_control").filter(|c| !c.is_null());
    let with_cache = |mut b: Map<String, Value>, cache_control: Option<Value>| {
        if let Some(cc) = cache_control {
            b.insert("cache_control".into(), cc);
        }
        Some(Block::other(Value::Object(b)))
    };
    match (ty.as_str(), place) {
        ("text", _) => match p.remove("text") {
            Some(Value::String(t)) => Ok(text_block(t, cache_control)),
            _ => Err(err(at.key("text"), "expected a string")),
        },
        ("refusal", Place::Assistant) => match p.remove("refusal") {
            Some(Value::String(t)) => Ok(text_block(t, cache_control)),
            _ => Err(err(at.key("refusal"), "expected a string")),
        },
        (_, Place::System) => Err(err(
            at.key("type"),
            "system and developer messages may only contain text parts",
        )),
        ("image_url", Place::User | Place::ToolResult) => {
            let iat = at.key("image_url");
            let url = match p.remove("image_url") {
                Some(Value::String(u)) => u,
                Some(Value::Object(mut o)) => match o.remove("url") {
                    Some(Value::String(u)) => u,
                    _ => return Err(err(iat.key("url"), "expected a string")),
                },
                _ => return Err(err(iat, "expected an object with a url")),
            };
            Ok(with_cache(image_source(url, iat)?, cache_control))
        }
        ("file", Place::User) => {
            let fat = at.key("file");
            let Some(Value::Object(mut file)) = p.remove("file") else {
                return Err(err(fat, "expected an object"));
            };
            if file.get("file_id").is_some_and(|f| !f.is_null()) {
                return Err(err(
                    fat.key("file_id"),
                    "uploaded file ids are not supported for Claude models; send file_data",
                ));
            }
            let dat = fat.key("file_data");
            let Some(Value::String(data)) = file.remove("file_data") else {
                return Err(err(dat, "expected a data URL"));
            };
            match data_url(data) {
                Ok((mime, b64)) if mime == "application/pdf" && !b64.is_empty() => Ok(with_cache(
                    source_block("document", "application/pdf", b64),
                    cache_control,
                )),
                Ok((mime, _)) if mime != "application/pdf" => Err(err(
                    dat,
                    format!("unsupported file type `{mime}`; only application/pdf is supported"),
                )),
                _ => Err(err(
                    dat,
                    "expected a base64 data URL (data:application/pdf;base64,…)",
                )),
            }
        }
        ("input_audio", _) => Err(err(*at, "audio input is not supported for Claude models")),
        (other, _) => Err(err(
            at.key("type"),
            format!("unsupported content part type `{other}` here"),
        )),
    }
}

/// `{"type": <ty>, "source": {"type": "base64", "media_type": <mime>, "data": <data>}}`.
fn source_block(ty: &str, mime: &str, data: String) -> Map<String, Value> {
    let source = object([
        ("type", Value::from("base64")),
        ("media_type", Value::from(mime)),
        ("data", Value::String(data)),
    ]);
    let mut block = Map::with_capacity(3);
    block.insert("type".into(), Value::from(ty));
    block.insert("source".into(), source);
    block
}

/// An image URL → an Anthropic image block: a base64 data URL or an http(s) URL.
fn image_source(url: String, at: At<'_>) -> Result<Map<String, Value>, TranslateError> {
    // The scheme, lower-cased (at most 8 bytes: never the whole of a 32 MiB URL).
    let lower = url[..url.floor_char_boundary(8)].to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        let source = object([("type", Value::from("url")), ("url", Value::String(url))]);
        let mut block = Map::with_capacity(3);
        block.insert("type".into(), Value::from("image"));
        block.insert("source".into(), source);
        return Ok(block);
    }
    if lower.starts_with("data:") {
        let Ok((mime, b64)) = data_url(url) else {
            return Err(err(
                at,
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
                at,
                format!(
                    "unsupported image type `{mime}`; use image/jpeg, image/png, image/gif or image/webp"
                ),
            ));
        }
        if b64.is_empty() {
            return Err(err(at, "the data URL holds no data"));
        }
        return Ok(source_block("image", &mime, b64));
    }
    Err(err(at, "expected a base64 data URL or an http(s) URL"))
}

/// `data:<mime>[;params];base64,<data>` → (lower-case mime, data), the data moved out of the
/// URL's own buffer. `Err(url)` when it is not a base64 data URL.
fn data_url(mut url: String) -> Result<(String, String), String> {
    let Some(head) = url.get(..5) else {
        return Err(url);
    };
    if !head.eq_ignore_ascii_case("data:") {
        return Err(url);
    }
    let Some(comma) = url[5..].find(',').map(|k| k + 5) else {
        return Err(url);
    };
    let meta = &url[5..comma];
    let mut params = meta.split(';');
    let Some(mime) = params.next().map(|m| m.trim().to_ascii_lowercase()) else {
        return Err(url);
    };
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(url);
    }
    // The trimmed data, moved to the front of the buffer (no second 32 MiB allocation).
    let rest = &url[comma + 1..];
    let start = comma + 1 + (rest.len() - rest.trim_start().len());
    let end = start + rest.trim().len();
    url.truncate(end);
    url.drain(..start);
    Ok((mime, url))
}
