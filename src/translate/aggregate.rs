//! A streamed upstream answer assembled into the reply the non-streaming API would have given.
//!
//! Non-streaming clients of the Anthropic Messages and OpenAI Responses upstreams are served by a
//! *streamed* upstream call (the request preparers set `stream: true`, see [`stream_upstream`]):
//! Anthropic refuses `max_tokens` above 21,333 without streaming, so a configured thinking
//! budget is only honoured in full on a stream, and a stream's events keep the idle-read timer
//! moving while the model thinks. This module turns the decoded events back into the one JSON
//! body, which the proxy then answers exactly as it answered the upstream's non-streaming body.
//!
//! - Anthropic: `message_start` gives the message (id, model, role, usage);
//!   `content_block_start` opens block `index` as given (text, thinking, redacted_thinking,
//!   tool_use, server tool blocks); `content_block_delta` appends `text_delta`,
//!   `thinking_delta`, `signature_delta`, `citations_delta` and concatenates `input_json_delta`
//!   fragments, parsed into `input` at `content_block_stop` (blank → `{}`); `message_delta`
//!   sets `stop_reason`, `stop_sequence` (any other delta field too) and its usage is
//!   cumulative: every non-null field replaces the one seen so far; `message_stop` ends it;
//!   `ping` and unknown events are ignored. The body's keys come in the non-streaming order
//!   `id, type, role, model, content, stop_reason, stop_sequence, usage` (anything else
//!   `message_start` carried follows). An `error` event is the answer: its data as the body,
//!   with the status its `error.type` implies ([`anthropic_error_status`]: overloaded_error →
//!   529, api_error → 500, rate_limit_error → 429, …).
//! - Responses: the terminal event carries the whole response object, which is the reply:
//!   `response.completed` and `response.incomplete` answer 200 (as the non-streaming API
//!   does); when its `output` is missing or empty, `output` is rebuilt from the
//!   `response.output_item.done` events in `output_index` order. `response.failed` and an
//!   `error` event are mapped exactly as the chat route maps a failed non-streaming response
//!   (status from `error.code`: 429 for rate limits, 400 for invalid requests, else 500; body
//!   the OpenAI envelope `{"error":{message,type,param,code}}`).
//!
//! Failures ([`AggregateError`]): a stream that ends without its terminal event is
//! `Truncated`; the held answer (blocks, items, the decoder's unfinished event) growing past
//! the cap is `TooLarge` (memory bound: the proxy uses [`DEFAULT_CAP`], 64 MiB); event JSON that
//! does not parse, or tool input that is not JSON, is `Malformed`. The proxy answers each with
//! 502 in the route's envelope.
//!
//! Pure: no I/O, no clock. Work is linear in the stream (blocks and items are found through
//! ordered maps by their index).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{StreamFailure, anthropic_error_status};
use crate::sse::{Decoder, Event};
use crate::usage::{self, Usage, WireFormat};

/// The memory bound of one assembled answer.
pub const DEFAULT_CAP: usize = 64 * 1024 * 1024;

/// Makes the upstream call stream for a client that asked for a whole answer: `stream`
/// absent, `null` or `false` becomes `true` and the answer is to be aggregated (returns
/// `true`). A client stream (`true`) or an invalid value (left for the upstream to refuse) is
/// untouched (`false`).
pub fn stream_upstream(body: &mut Map<String, Value>) -> bool {
    match body.get("stream") {
        None | Some(Value::Null | Value::Bool(false)) => {
            body.insert("stream".into(), Value::Bool(true));
            true
        }
        Some(_) => false,
    }
}

/// The upstream formats whose streams can be assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    Anthropic,
    Responses,
}

impl StreamFormat {
    fn wire(self) -> WireFormat {
        match self {
            StreamFormat::Anthropic => WireFormat::Anthropic,
            StreamFormat::Responses => WireFormat::Responses,
        }
    }
}

/// What a complete stream amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregated {
    /// The non-streaming reply (status 200).
    Reply(Value),
    /// The upstream reported an error in the stream: the status and the error body the
    /// non-streaming API answers with, and the usage seen before it (if any).
    Failed {
        failure: StreamFailure,
        usage: Option<Usage>,
    },
}

/// Why a stream could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("the upstream closed the stream before it finished (truncated)")]
    Truncated,
    #[error("the upstream answer is larger than the gateway assembles ({cap} bytes)")]
    TooLarge { cap: usize },
    #[error("the upstream stream held {0}")]
    Malformed(&'static str),
}

/// Assembles one stream from its decoded events.
#[derive(Debug)]
pub struct Aggregator {
    format: StreamFormat,
    cap: usize,
    /// Bytes of answer held so far (block texts, fragments, items, the terminal object).
    held: usize,
    anthropic: AnthropicState,
    responses: ResponsesState,
    done: Option<Aggregated>,
}

#[derive(Debug, Default)]
struct AnthropicState {
    /// `message_start.message`.
    message: Map<String, Value>,
    /// Blocks by index.
    blocks: BTreeMap<u64, Block>,
    /// `message_delta.delta` fields (stop_reason, stop_sequence, …), last one wins.
    delta: Map<String, Value>,
    /// `message_delta.usage` fields, each replacing the one of `message_start`.
    usage: Map<String, Value>,
}

#[derive(Debug)]
struct Block {
    value: Map<String, Value>,
    /// Concatenated `input_json_delta` fragments, parsed into `input` when the block stops.
    json: Option<String>,
}

#[derive(Debug, Default)]
struct ResponsesState {
    /// `response.output_item.done` event data, as received: parsed only when the terminal
    /// event's `output` is empty (it normally repeats every item).
    items: Vec<String>,
}

/// The Responses events the assembly reads; the others (the deltas, the parts and texts the
/// terminal event repeats) are skipped unparsed when their `event:` name says what they are.
const RESPONSES_USED: [&str; 5] = [
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// A `content_block_delta` event, read without building a JSON tree (the bulk of an Anthropic
/// stream).
#[derive(serde::Deserialize)]
struct BlockDelta<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow)]
    delta: Option<DeltaBody<'a>>,
}

#[derive(serde::Deserialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
}

fn event_type<'a>(ev: &'a Event, json: &'a Value) -> &'a str {
    json.get("type")
        .and_then(Value::as_str)
        .unwrap_or_else(|| ev.name())
}

fn append(map: &mut Map<String, Value>, key: &str, piece: &str) {
    match map.get_mut(key) {
        Some(Value::String(s)) => s.push_str(piece),
        _ => {
            map.insert(key.to_string(), Value::String(piece.to_string()));
        }
    }
}

impl Aggregator {
    pub fn new(format: StreamFormat, cap: usize) -> Self {
        Aggregator {
            format,
            cap,
            held: 0,
            anthropic: AnthropicState::default(),
            responses: ResponsesState::default(),
            done: None,
        }
    }

    /// Whether the terminal event was seen (later events are ignored).
    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// Bytes of answer held so far.
    pub fn held(&self) -> usize {
        self.held
    }

    fn hold(&mut self, n: usize) -> Result<(), AggregateError> {
        self.held = self.held.saturating_add(n);
        if self.held > self.cap {
            return Err(AggregateError::TooLarge { cap: self.cap });
        }
        Ok(())
    }

    /// Feeds one decoded event.
    pub fn on_event(&mut self, ev: &Event) -> Result<(), AggregateError> {
        if self.done.is_some() || ev.data.is_empty() {
            return Ok(());
        }
        match (self.format, ev.event.as_deref()) {
            (StreamFormat::Responses, Some(name)) if !RESPONSES_USED.contains(&name) => {
                return Ok(());
            }
            (StreamFormat::Responses, Some("response.output_item.done")) => {
                self.hold(ev.data.len())?;
                self.responses.items.push(ev.data.clone());
                return Ok(());
            }
            (StreamFormat::Anthropic, Some("content_block_delta")) => {
                if let Ok(d) = serde_json::from_str::<BlockDelta<'_>>(&ev.data)
                    && let Some(body) = &d.delta
                    && body.kind != "citations_delta"
                {
                    return self.on_text_delta(d.index, body);
                }
                // A citation (kept as JSON) or a shape the typed read refuses: the tree below.
            }
            _ => {}
        }
        let json: Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            // A keep-alive of an unknown shape is ignored; anything else is broken.
            Err(_) if matches!(ev.name(), "ping" | "keepalive") => return Ok(()),
            Err(_) => return Err(AggregateError::Malformed("an event whose data is not JSON")),
        };
        match self.format {
            StreamFormat::Anthropic => self.on_anthropic(ev, json),
            StreamFormat::Responses => self.on_responses(ev, json),
        }
    }

    /// A text, thinking, signature or tool-input delta read by [`BlockDelta`] (the same
    /// effect as the tree path of [`Self::on_anthropic`]).
    fn on_text_delta(&mut self, index: u64, delta: &DeltaBody<'_>) -> Result<(), AggregateError> {
        let (key, piece) = match delta.kind.as_ref() {
            "text_delta" => ("text", delta.text.as_deref()),
            "thinking_delta" => ("thinking", delta.thinking.as_deref()),
            "signature_delta" => ("signature", delta.signature.as_deref()),
            "input_json_delta" => ("", delta.partial_json.as_deref()),
            _ => return Ok(()),
        };
        let piece = piece.unwrap_or("");
        self.hold(piece.len())?;
        let Some(block) = self.anthropic.blocks.get_mut(&index) else {
            return Err(AggregateError::Malformed(
                "a delta for a block never started",
            ));
        };
        if key.is_empty() {
            block.json.get_or_insert_default().push_str(piece);
        } else {
            append(&mut block.value, key, piece);
        }
        Ok(())
    }

    fn on_anthropic(&mut self, ev: &Event, mut json: Value) -> Result<(), AggregateError> {
        let kind = event_type(ev, &json).to_string();
        match kind.as_str() {
            "message_start" => {
                self.hold(ev.data.len())?;
                if let Some(Value::Object(m)) = json.get_mut("message").map(Value::take) {
                    self.anthropic.message = m;
                }
            }
            "content_block_start" => {
                self.hold(ev.data.len())?;
                let index = block_index(&json);
                let value = match json.get_mut("content_block").map(Value::take) {
                    Some(Value::Object(m)) => m,
                    _ => return Err(AggregateError::Malformed("a block start without a block")),
                };
                self.anthropic
                    .blocks
                    .insert(index, Block { value, json: None });
            }
            "content_block_delta" => {
                let index = block_index(&json);
                let Some(delta) = json.get_mut("delta").map(Value::take) else {
                    return Ok(());
                };
                let text = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or("");
                let dtype = delta.get("type").and_then(Value::as_str).unwrap_or("");
                let piece = match dtype {
                    "text_delta" => text("text"),
                    "thinking_delta" => text("thinking"),
                    "signature_delta" => text("signature"),
                    "input_json_delta" => text("partial_json"),
                    "citations_delta" => "",
                    _ => return Ok(()),
                };
                let citation_len = if dtype == "citations_delta" {
                    ev.data.len()
                } else {
                    0
                };
                self.hold(piece.len() + citation_len)?;
                let Some(block) = self.anthropic.blocks.get_mut(&index) else {
                    return Err(AggregateError::Malformed(
                        "a delta for a block never started",
                    ));
                };
                match dtype {
                    "text_delta" => append(&mut block.value, "text", piece),
                    "thinking_delta" => append(&mut block.value, "thinking", piece),
                    "signature_delta" => append(&mut block.value, "signature", piece),
                    "input_json_delta" => block.json.get_or_insert_default().push_str(piece),
                    _ => {
                        if let Some(c) = delta.get("citation") {
                            let list = block
                                .value
                                .entry("citations")
                                .or_insert_with(|| Value::Array(Vec::new()));
                            if !list.is_array() {
                                *list = Value::Array(Vec::new());
                            }
                            if let Value::Array(a) = list {
                                a.push(c.clone());
                            }
                        }
                    }
                }
            }
            "content_block_stop" => {
                if let Some(block) = self.anthropic.blocks.get_mut(&block_index(&json)) {
                    block.close()?;
                }
            }
            "message_delta" => {
                // Its fields replace earlier ones, but new keys would add up.
                self.hold(ev.data.len())?;
                if let Some(Value::Object(d)) = json.get_mut("delta").map(Value::take) {
                    self.anthropic.delta.extend(d);
                }
                if let Some(Value::Object(u)) = json.get("usage") {
                    for (k, v) in u {
                        if !v.is_null() {
                            self.anthropic.usage.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            "message_stop" => {
                let reply = self.anthropic_reply()?;
                self.done = Some(Aggregated::Reply(reply));
            }
            "error" => {
                let error_type = json
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let failure = StreamFailure {
                    status: anthropic_error_status(error_type),
                    body: ev.data.clone().into_bytes(),
                };
                let usage = self.anthropic_usage();
                self.done = Some(Aggregated::Failed { failure, usage });
            }
            _ => {}
        }
        Ok(())
    }

    /// The usage seen so far (`message_start`'s, fields replaced by `message_delta`'s).
    fn anthropic_usage(&self) -> Option<Usage> {
        let mut u = match self.anthropic.message.get("usage") {
            Some(Value::Object(u)) => u.clone(),
            _ if self.anthropic.usage.is_empty() => return None,
            _ => Map::new(),
        };
        u.extend(self.anthropic.usage.clone());
        usage::from_json(
            WireFormat::Anthropic,
            &Value::Object(Map::from_iter([("usage".to_string(), Value::Object(u))])),
        )
    }

    /// The non-streaming message.
    fn anthropic_reply(&mut self) -> Result<Value, AggregateError> {
        let st = &mut self.anthropic;
        let mut base = std::mem::take(&mut st.message);
        for (k, v) in std::mem::take(&mut st.delta) {
            base.insert(k, v);
        }
        let mut usage = match base.remove("usage") {
            Some(Value::Object(u)) => u,
            _ => Map::new(),
        };
        usage.extend(std::mem::take(&mut st.usage));
        let mut content = Vec::with_capacity(st.blocks.len());
        for (_, mut block) in std::mem::take(&mut st.blocks) {
            block.close()?;
            content.push(Value::Object(block.value));
        }
        let mut out = Map::new();
        for (key, default) in [
            ("id", Value::Null),
            ("type", Value::String("message".into())),
            ("role", Value::String("assistant".into())),
            ("model", Value::Null),
        ] {
            out.insert(key.into(), base.remove(key).unwrap_or(default));
        }
        base.remove("content");
        out.insert("content".into(), Value::Array(content));
        for key in ["stop_reason", "stop_sequence"] {
            out.insert(key.into(), base.remove(key).unwrap_or(Value::Null));
        }
        out.insert("usage".into(), Value::Object(usage));
        out.extend(base);
        Ok(Value::Object(out))
    }

    fn on_responses(&mut self, ev: &Event, mut json: Value) -> Result<(), AggregateError> {
        let kind = event_type(ev, &json).to_string();
        match kind.as_str() {
            "response.output_item.done" => {
                self.hold(ev.data.len())?;
                self.responses.items.push(ev.data.clone());
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.hold(ev.data.len())?;
                let Some(Value::Object(mut response)) = json.get_mut("response").map(Value::take)
                else {
                    return Err(AggregateError::Malformed(
                        "a terminal event without its response",
                    ));
                };
                let empty = response
                    .get("output")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
                if empty && !self.responses.items.is_empty() {
                    let items = output_items(std::mem::take(&mut self.responses.items))?;
                    response.insert("output".into(), Value::Array(items));
                }
                let response = Value::Object(response);
                self.done = Some(if kind == "response.failed" {
                    Aggregated::Failed {
                        failure: responses_failure(&response),
                        usage: usage::from_json(WireFormat::Responses, &response),
                    }
                } else {
                    Aggregated::Reply(response)
                });
            }
            "error" => {
                // `{"type":"error","code","message","param"}`: mapped as a failed response
                // carrying that error.
                let failed = Value::Object(Map::from_iter([
                    ("status".to_string(), Value::String("failed".into())),
                    ("error".to_string(), json),
                ]));
                self.done = Some(Aggregated::Failed {
                    failure: responses_failure(&failed),
                    usage: None,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// The stream ended: the assembled answer, or why there is none.
    pub fn finish(self) -> Result<Aggregated, AggregateError> {
        self.done.ok_or(AggregateError::Truncated)
    }

    /// The usage seen so far (for a stream that broke before its terminal event).
    pub fn usage_so_far(&self) -> Option<Usage> {
        match (&self.done, self.format) {
            (Some(Aggregated::Reply(v)), f) => usage::from_json(f.wire(), v),
            (Some(Aggregated::Failed { usage, .. }), _) => *usage,
            (None, StreamFormat::Anthropic) => self.anthropic_usage(),
            (None, StreamFormat::Responses) => None,
        }
    }
}

/// The `item`s of `response.output_item.done` events in `output_index` order (an event without
/// an index goes after the last one seen).
fn output_items(events: Vec<String>) -> Result<Vec<Value>, AggregateError> {
    let mut items = BTreeMap::new();
    for data in events {
        let mut json: Value = serde_json::from_str(&data)
            .map_err(|_| AggregateError::Malformed("an event whose data is not JSON"))?;
        let next = items
            .last_key_value()
            .map_or(0, |(k, _): (&u64, _)| k.saturating_add(1));
        let index = json
            .get("output_index")
            .and_then(Value::as_u64)
            .unwrap_or(next);
        if let Some(item) = json.get_mut("item").map(Value::take) {
            items.insert(index, item);
        }
    }
    Ok(items.into_values().collect())
}

impl Block {
    /// Parses the concatenated tool input (once).
    fn close(&mut self) -> Result<(), AggregateError> {
        if let Some(json) = self.json.take() {
            let input = if super::is_blank(&json) {
                Value::Object(Map::new())
            } else {
                serde_json::from_str(&json)
                    .map_err(|_| AggregateError::Malformed("tool input that is not JSON"))?
            };
            self.value.insert("input".into(), input);
        }
        Ok(())
    }
}

/// The Anthropic block `index` of an event (0 when missing).
fn block_index(json: &Value) -> u64 {
    json.get("index").and_then(Value::as_u64).unwrap_or(0)
}

/// A failed Responses answer, mapped as the chat route maps a failed non-streaming response.
fn responses_failure(failed: &Value) -> StreamFailure {
    match super::responses_chat::responses_to_chat_response(failed, "", 0) {
        Err(f) => f,
        // Not reached: a response whose status is "failed" always maps to a failure.
        Ok(_) => StreamFailure {
            status: 500,
            body: br#"{"error":{"message":"the upstream response failed","type":"server_error","param":null,"code":null}}"#.to_vec(),
        },
    }
}

/// Raw upstream bytes → SSE decoder → [`Aggregator`], under one memory bound that also covers
/// the decoder's unfinished event.
#[derive(Debug)]
pub struct Assembler {
    decoder: Decoder,
    events: Vec<Event>,
    aggregator: Aggregator,
    cap: usize,
}

impl Assembler {
    pub fn new(format: StreamFormat, cap: usize) -> Self {
        Assembler {
            decoder: Decoder::new(),
            events: Vec::new(),
            aggregator: Aggregator::new(format, cap),
            cap,
        }
    }

    /// Feeds the next piece of the upstream body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), AggregateError> {
        self.decoder.feed(chunk, &mut self.events);
        for ev in self.events.drain(..) {
            self.aggregator.on_event(&ev)?;
        }
        let pending = self.decoder.pending_len();
        if self.aggregator.held().saturating_add(pending) > self.cap {
            return Err(AggregateError::TooLarge { cap: self.cap });
        }
        Ok(())
    }

    /// Whether the terminal event was seen (nothing more is needed).
    pub fn is_done(&self) -> bool {
        self.aggregator.is_done()
    }

    /// The upstream body ended.
    pub fn finish(mut self) -> Result<Aggregated, AggregateError> {
        self.decoder.finish(&mut self.events);
        for ev in self.events.drain(..) {
            self.aggregator.on_event(&ev)?;
        }
        self.aggregator.finish()
    }

    /// The usage seen so far.
    pub fn usage_so_far(&self) -> Option<Usage> {
        self.aggregator.usage_so_far()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
