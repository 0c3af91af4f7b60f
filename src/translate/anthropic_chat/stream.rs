//! Anthropic SSE → `chat.completion.chunk` stream (`translation.md` §3, errors per §6.3).
//!
//! | upstream | client chunks |
//! |---|---|
//! | `message_start` | `{"role":"assistant","content":""}` |
//! | text block start (non-empty text) / `text_delta` | `{"content": …}` |
//! | tool_use block start | `{"tool_calls":[{"index":t,"id","type":"function","function":{"name","arguments":""}}]}`, `t` counting tool calls from 0 |
//! | `input_json_delta` (not `""`) | `{"tool_calls":[{"index":t,"function":{"arguments": …}}]}` |
//! | tool_use block stop without any argument fragment | the same with `"{}"` |
//! | `thinking_delta` | `{"reasoning_content": …}` |
//! | thinking / redacted_thinking block stop | `{"thinking_blocks":[{type,thinking,signature} / {type,data}]}` |
//! | `message_delta` | — (finish reason remembered; usage goes to the sniffer, cumulative) |
//! | `message_stop` | finish chunk, usage chunk (only with `include_usage`), `[DONE]` |
//! | `error` | error chunk (`{"error":{…}}`), stream closed, no `[DONE]` |
//! | `ping`, unknown events, `signature_delta`, `citations_delta` | — |
//!
//! Content and tool-call deltas never share a chunk, and a chunk carries at most one tool-call
//! entry. The role chunk always comes first, even if upstream skipped `message_start`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::finish_reason;
use super::response::{redacted_block, thinking_block};
use crate::sse::Event;
use crate::translate::chat::ChatChunks;
use crate::translate::{StreamFailure, anthropic_error_status, upstream_error_to_openai};
use crate::usage::{UsageSniffer, WireFormat};

/// The message of the error chunk sent when upstream ends without `message_stop`.
const TRUNCATED_MESSAGE: &str = "the upstream closed the stream before it finished";

/// State of one open content block, by Anthropic block index.
#[derive(Debug, Clone)]
enum BlockState {
    Text,
    Tool {
        index: usize,
        args_seen: bool,
    },
    Thinking {
        text: String,
        signature: Option<String>,
    },
    Redacted {
        data: String,
    },
    Other,
}

/// Anthropic SSE → chat.completion.chunk stream (§3).
#[derive(Debug, Clone)]
pub struct AnthropicToChat {
    chunks: ChatChunks,
    sniffer: UsageSniffer,
    started: bool,
    closed: bool,
    failure: Option<StreamFailure>,
    finish_reason: Option<&'static str>,
    next_tool_index: usize,
    blocks: HashMap<u64, BlockState>,
}

impl AnthropicToChat {
    /// `chunks` carries the stream's id, created, client model and include_usage.
    pub fn new(chunks: ChatChunks) -> Self {
        AnthropicToChat {
            chunks,
            sniffer: UsageSniffer::new(WireFormat::Anthropic),
            started: false,
            closed: false,
            failure: None,
            finish_reason: None,
            next_tool_index: 0,
            blocks: HashMap::new(),
        }
    }

    /// Translates one upstream event, appending the encoded client SSE frames (possibly none)
    /// to `out`. Every event goes to the usage sniffer; after the stream is closed
    /// ([`AnthropicToChat::is_closed`]) nothing more is written.
    pub fn on_event(&mut self, ev: &Event, out: &mut String) {
        // One parse, shared with the usage sniffer.
        let json = if ev.is_done() {
            None
        } else {
            crate::usage::parse_object(&ev.data)
        };
        self.sniffer.on_parsed(ev, json.as_ref());
        if self.closed {
            return;
        }
        let Some(json) = json else {
            if ev.name() == "error" {
                // Not JSON, but still an error: the text is the message.
                self.fail_with_error(
                    &json!({"type": "error", "error": {"type": "api_error", "message": ev.data}}),
                    ev.data.as_bytes(),
                    out,
                );
            }
            return;
        };
        let kind = json
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_else(|| ev.name());
        match kind {
            "message_start" => self.start(out),
            "content_block_start" => self.block_start(&json, out),
            "content_block_delta" => self.block_delta(&json, out),
            "content_block_stop" => self.block_stop(&json, out),
            "message_delta" => {
                if let Some(reason) = json
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .filter(|r| !r.is_null())
                {
                    self.finish_reason = Some(finish_reason(reason.as_str()));
                }
            }
            "message_stop" => {
                self.start(out);
                out.push_str(&self.chunks.finish(self.finish_reason.unwrap_or("stop")));
                if self.chunks.include_usage {
                    out.push_str(&self.chunks.usage(&self.sniffer.usage()));
                }
                out.push_str(&self.chunks.done());
                self.closed = true;
            }
            "error" => self.fail_with_error(&json, ev.data.as_bytes(), out),
            // ping and anything unknown (§0 G6).
            _ => {}
        }
    }

    /// The upstream body ended. Without a `message_stop` (or an `error` event) before, the
    /// stream was cut short: an error chunk (`server_error` / `stream_truncated`) is written,
    /// never a fake finish.
    pub fn finish(&mut self, out: &mut String) {
        if self.closed {
            return;
        }
        out.push_str(&self.chunks.error(
            TRUNCATED_MESSAGE,
            "server_error",
            Some("stream_truncated"),
        ));
        let body =
            json!({"type": "error", "error": {"type": "api_error", "message": TRUNCATED_MESSAGE}});
        self.failure = Some(StreamFailure {
            status: 502,
            body: body.to_string().into_bytes(),
        });
        self.closed = true;
    }

    /// Whether `[DONE]` or an error chunk was written; later events are ignored.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The upstream failure that closed the stream: an `error` event (status from its error
    /// type, body = the event's data) or truncation (502, an Anthropic-shaped error body).
    pub fn failure(&self) -> Option<&StreamFailure> {
        self.failure.as_ref()
    }

    /// The usage sniffer fed with every upstream event.
    pub fn sniffer(&self) -> &UsageSniffer {
        &self.sniffer
    }

    /// The role chunk, once.
    fn start(&mut self, out: &mut String) {
        if !self.started {
            self.started = true;
            out.push_str(&self.chunks.role());
        }
    }

    fn delta(&mut self, delta: Value, out: &mut String) {
        self.start(out);
        out.push_str(&self.chunks.delta(delta));
    }

    fn tool_fragment(&mut self, index: usize, arguments: &str, out: &mut String) {
        self.delta(
            json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
            out,
        );
    }

    fn block_start(&mut self, json: &Value, out: &mut String) {
        let index = block_index(json);
        let block = json.get("content_block");
        let str_field = |k: &str| block.and_then(|b| b.get(k)).and_then(Value::as_str);
        let state = match str_field("type") {
            Some("text") => {
                if let Some(t) = str_field("text").filter(|t| !t.is_empty()) {
                    self.delta(json!({"content": t}), out);
                }
                BlockState::Text
            }
            Some("tool_use") => {
                let t = self.next_tool_index;
                self.next_tool_index += 1;
                self.delta(
                    json!({"tool_calls": [{
                        "index": t,
                        "id": str_field("id").unwrap_or(""),
                        "type": "function",
                        "function": {"name": str_field("name").unwrap_or(""), "arguments": ""},
                    }]}),
                    out,
                );
                // Anthropic starts with `input: {}`; a proxy that sends the whole input here
                // still gets its arguments through.
                let input = block
                    .and_then(|b| b.get("input"))
                    .and_then(Value::as_object)
                    .filter(|o| !o.is_empty());
                let args_seen = match input {
                    Some(o) => {
                        self.tool_fragment(t, &Value::Object(o.clone()).to_string(), out);
                        true
                    }
                    None => false,
                };
                BlockState::Tool {
                    index: t,
                    args_seen,
                }
            }
            Some("thinking") => {
                let text = str_field("thinking").unwrap_or("").to_string();
                if !text.is_empty() {
                    self.delta(json!({"reasoning_content": text}), out);
                }
                BlockState::Thinking {
                    text,
                    signature: str_field("signature").map(str::to_string),
                }
            }
            Some("redacted_thinking") => BlockState::Redacted {
                data: str_field("data").unwrap_or("").to_string(),
            },
            _ => BlockState::Other,
        };
        self.blocks.insert(index, state);
    }

    fn block_delta(&mut self, json: &Value, out: &mut String) {
        let index = block_index(json);
        let delta = json.get("delta");
        let str_field = |k: &str| delta.and_then(|d| d.get(k)).and_then(Value::as_str);
        match str_field("type") {
            Some("text_delta") => {
                if let Some(t) = str_field("text").filter(|t| !t.is_empty()) {
                    self.delta(json!({"content": t}), out);
                }
            }
            Some("input_json_delta") => {
                let Some(fragment) = str_field("partial_json").filter(|p| !p.is_empty()) else {
                    return;
                };
                if let Some(BlockState::Tool { index, args_seen }) = self.blocks.get_mut(&index) {
                    *args_seen = true;
                    let t = *index;
                    self.tool_fragment(t, fragment, out);
                }
            }
            Some("thinking_delta") => {
                let Some(t) = str_field("thinking").filter(|t| !t.is_empty()) else {
                    return;
                };
                if let Some(BlockState::Thinking { text, .. }) = self.blocks.get_mut(&index) {
                    text.push_str(t);
                }
                self.delta(json!({"reasoning_content": t}), out);
            }
            Some("signature_delta") => {
                if let (Some(BlockState::Thinking { signature, .. }), Some(s)) =
                    (self.blocks.get_mut(&index), str_field("signature"))
                {
                    *signature = Some(s.to_string());
                }
            }
            // citations_delta and anything new.
            _ => {}
        }
    }

    fn block_stop(&mut self, json: &Value, out: &mut String) {
        match self.blocks.remove(&block_index(json)) {
            Some(BlockState::Tool {
                index,
                args_seen: false,
            }) => self.tool_fragment(index, "{}", out),
            Some(BlockState::Thinking { text, signature }) => self.delta(
                json!({"thinking_blocks": [thinking_block(&text, signature.as_deref())]}),
                out,
            ),
            Some(BlockState::Redacted { data }) => {
                self.delta(json!({"thinking_blocks": [redacted_block(&data)]}), out);
            }
            _ => {}
        }
    }

    /// An upstream `error` event: an error chunk in the OpenAI shape (§6.2 table), then closed.
    fn fail_with_error(&mut self, json: &Value, data: &[u8], out: &mut String) {
        let error_type = json
            .get("error")
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let status = anthropic_error_status(error_type);
        let translated = upstream_error_to_openai(status, data);
        let e = &translated.body["error"];
        let message = e["message"].as_str().unwrap_or("upstream error");
        let ty = e["type"].as_str().unwrap_or("server_error");
        out.push_str(&self.chunks.error(message, ty, e["code"].as_str()));
        self.failure = Some(StreamFailure {
            status,
            body: data.to_vec(),
        });
        self.closed = true;
    }
}

/// The Anthropic block `index` of an event (0 when missing).
fn block_index(json: &Value) -> u64 {
    json.get("index").and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
