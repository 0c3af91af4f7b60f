//! OpenAI Responses SSE → `chat.completion.chunk` stream (`translation.md` §4.3, errors §6.3).
//!
//! | upstream event (JSON `type`, else SSE name) | client chunk |
//! |---|---|
//! | `response.created` | `{"role":"assistant","content":""}` (also sent before any first output if `created` never came) |
//! | `response.output_item.added` (function_call) | `{"tool_calls":[{"index":t,"id":call_id,"type":"function","function":{"name","arguments":""}}]}`, `t` = own 0-based counter |
//! | `response.output_text.delta` / `response.refusal.delta` | `{"content"}` / `{"refusal"}` |
//! | `response.function_call_arguments.delta` | `{"tool_calls":[{"index":t,"function":{"arguments"}}]}` |
//! | `response.function_call_arguments.done` | the full arguments (`"{}"` if blank), only when no argument text was sent for that call |
//! | `response.reasoning_summary_text.delta`, `response.reasoning_text.delta` | `{"reasoning_content"}`, prefixed `\n\n` when the part changes |
//! | `response.output_item.done` | nothing (a function call whose arguments never came gets them here) |
//! | `response.completed` | finish `tool_calls` / `stop`, usage chunk if asked, `[DONE]` |
//! | `response.incomplete` | finish `length` / `content_filter`, usage chunk if asked, `[DONE]` |
//! | `response.failed`, `error` | error chunk, closed, no `[DONE]`; [`ResponsesToChat::failure`] set |
//! | end of upstream without one of the above | error chunk `stream_truncated`; failure 502 |
//! | anything else | nothing |

use std::collections::HashMap;

use serde_json::{Value, json};

use super::UpstreamError;
use super::response::{FAILED_MESSAGE, incomplete_finish_reason};
use super::turns::{Turn, TurnCollector};
use crate::sse::Event;
use crate::translate::StreamFailure;
use crate::translate::chat::ChatChunks;
use crate::usage::{self, UsageSniffer, WireFormat};

/// The message of an `error` event that carries none.
const ERROR_MESSAGE: &str = "the upstream reported an error";

/// The message of the error chunk sent when upstream stops before a terminal event.
const TRUNCATED_MESSAGE: &str = "the upstream stream ended before the response was complete";

/// One function call of the stream.
#[derive(Debug, Clone)]
struct Call {
    /// The client's tool-call index (0-based, in order of appearance).
    index: usize,
    /// Some argument text has been sent to the client.
    args_sent: bool,
}

/// Responses SSE → chat.completion.chunk stream (§4.3).
///
/// Feed every decoded upstream event to [`ResponsesToChat::on_event`] and call
/// [`ResponsesToChat::finish`] when the upstream body ends. Every frame is written with the
/// [`ChatChunks`] given at construction (fixed `id`, `created`, `model`).
#[derive(Debug, Clone)]
pub struct ResponsesToChat {
    chunks: ChatChunks,
    sniffer: UsageSniffer,
    started: bool,
    closed: bool,
    failure: Option<StreamFailure>,
    calls: Vec<Call>,
    /// The first call registered with each `output_index` (position in `calls`).
    by_output_index: HashMap<u64, usize>,
    /// The first call registered with each item id (position in `calls`).
    by_item_id: HashMap<String, usize>,
    /// The reasoning part the last reasoning delta belonged to: (item_id, kind, index).
    last_reasoning: Option<(String, &'static str, u64)>,
    /// The turn's items, when asked for ([`ResponsesToChat::collect_turn`]).
    turn: Option<Box<TurnCollector>>,
}

impl ResponsesToChat {
    /// A translator writing every client frame with `chunks` (its `include_usage` decides the
    /// usage chunk).
    pub fn new(chunks: ChatChunks) -> Self {
        ResponsesToChat {
            chunks,
            sniffer: UsageSniffer::new(WireFormat::Responses),
            started: false,
            closed: false,
            failure: None,
            calls: Vec::new(),
            by_output_index: HashMap::new(),
            by_item_id: HashMap::new(),
            last_reasoning: None,
            turn: None,
        }
    }

    /// Also keep the turn's reasoning and function-call items (`translation.md` §4.4), handed
    /// out by [`ResponsesToChat::take_turn`] when the response completed with tool calls. The
    /// client's frames do not change.
    pub fn collect_turn(mut self) -> Self {
        self.turn = Some(Box::default());
        self
    }

    /// The completed turn's items, once: `Some` only when collecting, the response completed
    /// with tool calls and every reasoning item came with its encrypted content.
    pub fn take_turn(&mut self) -> Option<Turn> {
        self.turn.as_mut()?.take()
    }

    /// Translates one upstream event, appending the encoded client frames (maybe none) to `out`.
    /// Every event goes to the usage sniffer; after the stream is closed nothing more is written.
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
            // Not a JSON object: ignored, unless the SSE event itself is named `error`.
            if ev.name() == "error" {
                let message: String = ev.data.trim().chars().take(2000).collect();
                let e = json!({ "message": message });
                self.fail(Some(&e), ERROR_MESSAGE, out);
            }
            return;
        };
        let kind = json
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_else(|| ev.name());
        match kind {
            "response.created" => self.start(out),
            "response.output_item.added" => self.item_added(&json, out),
            "response.output_text.delta" => self.text_delta("content", &json, out),
            "response.refusal.delta" => self.text_delta("refusal", &json, out),
            "response.function_call_arguments.delta" => self.arguments_delta(&json, out),
            "response.function_call_arguments.done" => self.arguments_done(&json, out),
            "response.reasoning_summary_text.delta" => {
                self.reasoning_delta("summary", "summary_index", &json, out);
            }
            "response.reasoning_text.delta" => {
                self.reasoning_delta("content", "content_index", &json, out);
            }
            "response.output_item.done" => {
                if let (Some(c), Some(item)) = (self.turn.as_mut(), json.get("item")) {
                    c.on_item(item);
                }
                self.item_done(&json, out);
            }
            "response.completed" => {
                if let Some(c) = self.turn.as_mut() {
                    c.complete();
                }
                let reason = if self.calls.is_empty() {
                    "stop"
                } else {
                    "tool_calls"
                };
                self.end(reason, json.get("response"), out);
            }
            "response.incomplete" => {
                let response = json.get("response");
                let reason = incomplete_finish_reason(response.unwrap_or(&Value::Null));
                self.end(reason, response, out);
            }
            "response.failed" => {
                let error = json
                    .get("response")
                    .and_then(|r| r.get("error"))
                    .filter(|e| e.is_object());
                self.fail(error, FAILED_MESSAGE, out);
            }
            "error" => {
                // `{"type":"error","code","message","param"}`, or the same nested in `error`.
                let error = json.get("error").filter(|e| e.is_object()).unwrap_or(&json);
                self.fail(Some(error), ERROR_MESSAGE, out);
            }
            _ => {}
        }
    }

    /// The upstream body ended. Without a terminal event before it, the client gets an error
    /// chunk (`server_error` / `stream_truncated`), never a fake stop, and the failure is 502.
    pub fn finish(&mut self, out: &mut String) {
        if self.closed {
            return;
        }
        let e = UpstreamError {
            status: 502,
            message: TRUNCATED_MESSAGE.to_string(),
            error_type: "server_error".to_string(),
            param: Value::Null,
            code: Some("stream_truncated".to_string()),
        };
        self.close_with_error(&e, out);
    }

    /// `[DONE]` or an error chunk has been written; later events write nothing.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Set on an `error` event, `response.failed` or a truncated stream: the HTTP status and
    /// OpenAI-envelope body to answer with if nothing has reached the client yet.
    pub fn failure(&self) -> Option<&StreamFailure> {
        self.failure.as_ref()
    }

    /// The usage sniffer that saw every upstream event.
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

    /// A delta chunk (after the role chunk).
    fn emit(&mut self, delta: Value, out: &mut String) {
        self.start(out);
        out.push_str(&self.chunks.delta(delta));
    }

    fn text_delta(&mut self, field: &str, json: &Value, out: &mut String) {
        if let Some(d) = json.get("delta").and_then(Value::as_str)
            && !d.is_empty()
        {
            self.emit(json!({ field: d }), out);
        }
    }

    fn reasoning_delta(
        &mut self,
        kind: &'static str,
        index_key: &str,
        json: &Value,
        out: &mut String,
    ) {
        let Some(d) = json
            .get("delta")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        else {
            return;
        };
        let item_id = json.get("item_id").and_then(Value::as_str).unwrap_or("");
        let index = json.get(index_key).and_then(Value::as_u64).unwrap_or(0);
        let key = (item_id.to_string(), kind, index);
        let text = match &self.last_reasoning {
            Some(last) if *last != key => format!("\n\n{d}"),
            _ => d.to_string(),
        };
        self.last_reasoning = Some(key);
        self.emit(json!({ "reasoning_content": text }), out);
    }

    /// The call an argument event or `output_item.done` belongs to: the first one registered
    /// with that `output_index`, else the first one with that item id. Hash lookups, so a
    /// stream of many calls costs linear time.
    fn find_call(&self, output_index: Option<u64>, item_id: Option<&str>) -> Option<usize> {
        output_index
            .and_then(|oi| self.by_output_index.get(&oi).copied())
            .or_else(|| item_id.and_then(|id| self.by_item_id.get(id).copied()))
    }

    /// Registers a function call and returns its client index.
    fn add_call(&mut self, output_index: Option<u64>, item: &Value) -> usize {
        let index = self.calls.len();
        self.calls.push(Call {
            index,
            args_sent: false,
        });
        if let Some(oi) = output_index {
            self.by_output_index.entry(oi).or_insert(index);
        }
        if let Some(id) = item.get("id").and_then(Value::as_str)
            && !self.by_item_id.contains_key(id)
        {
            self.by_item_id.insert(id.to_string(), index);
        }
        index
    }

    fn item_added(&mut self, json: &Value, out: &mut String) {
        let Some(item) = json.get("item") else {
            return;
        };
        if item.get("type").and_then(Value::as_str) != Some("function_call") {
            return;
        }
        let output_index = json.get("output_index").and_then(Value::as_u64);
        let index = self.add_call(output_index, item);
        self.emit(tool_call_header(index, item, ""), out);
    }

    fn arguments_delta(&mut self, json: &Value, out: &mut String) {
        let Some(d) = json
            .get("delta")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        else {
            return;
        };
        let output_index = json.get("output_index").and_then(Value::as_u64);
        let item_id = json.get("item_id").and_then(Value::as_str);
        let Some(pos) = self.find_call(output_index, item_id) else {
            return; // no output_item.added for it: nothing to attach the text to
        };
        self.calls[pos].args_sent = true;
        let index = self.calls[pos].index;
        self.emit(tool_call_arguments(index, d), out);
    }

    /// The full arguments, only when none were streamed (a blank value becomes `{}`).
    fn arguments_done(&mut self, json: &Value, out: &mut String) {
        let output_index = json.get("output_index").and_then(Value::as_u64);
        let item_id = json.get("item_id").and_then(Value::as_str);
        let Some(pos) = self.find_call(output_index, item_id) else {
            return;
        };
        if self.calls[pos].args_sent {
            return;
        }
        self.calls[pos].args_sent = true;
        let index = self.calls[pos].index;
        let args = full_arguments(json.get("arguments"));
        self.emit(tool_call_arguments(index, args), out);
    }

    /// Only for function calls whose arguments never reached the client (no deltas, no
    /// `.done`), or that were never announced by `output_item.added`.
    fn item_done(&mut self, json: &Value, out: &mut String) {
        let Some(item) = json.get("item") else {
            return;
        };
        if item.get("type").and_then(Value::as_str) != Some("function_call") {
            return;
        }
        let output_index = json.get("output_index").and_then(Value::as_u64);
        let item_id = item.get("id").and_then(Value::as_str);
        let args = full_arguments(item.get("arguments"));
        match self.find_call(output_index, item_id) {
            Some(pos) if self.calls[pos].args_sent => {}
            Some(pos) => {
                self.calls[pos].args_sent = true;
                let index = self.calls[pos].index;
                self.emit(tool_call_arguments(index, args), out);
            }
            None => {
                let index = self.add_call(output_index, item);
                self.calls[index].args_sent = true;
                self.emit(tool_call_header(index, item, args), out);
            }
        }
    }

    /// Finish chunk, usage chunk when asked, `[DONE]`.
    fn end(&mut self, reason: &str, response: Option<&Value>, out: &mut String) {
        self.start(out);
        out.push_str(&self.chunks.finish(reason));
        if self.chunks.include_usage {
            let usage = response
                .and_then(|r| usage::from_json(WireFormat::Responses, r))
                .unwrap_or_default();
            out.push_str(&self.chunks.usage(&usage));
        }
        out.push_str(&self.chunks.done());
        self.closed = true;
    }

    fn fail(&mut self, error: Option<&Value>, fallback: &str, out: &mut String) {
        let e = UpstreamError::from_json(error, fallback);
        self.close_with_error(&e, out);
    }

    fn close_with_error(&mut self, e: &UpstreamError, out: &mut String) {
        out.push_str(
            &self
                .chunks
                .error(&e.message, &e.error_type, e.code.as_deref()),
        );
        self.failure = Some(e.failure());
        self.closed = true;
    }
}

/// `arguments` of a `.done` event or a finished item; blank or missing becomes `{}`.
fn full_arguments(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str)
        .filter(|a| !a.trim().is_empty())
        .unwrap_or("{}")
}

/// The first chunk of a tool call.
fn tool_call_header(index: usize, item: &Value, arguments: &str) -> Value {
    let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
    let id = item
        .get("call_id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| text("id"));
    json!({"tool_calls": [{
        "index": index,
        "id": id,
        "type": "function",
        "function": {"name": text("name"), "arguments": arguments},
    }]})
}

/// An argument fragment of a tool call.
fn tool_call_arguments(index: usize, arguments: &str) -> Value {
    json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

    fn chunks(include_usage: bool) -> ChatChunks {
        ChatChunks {
            id: "chatcmpl-x".into(),
            created: 7,
            model: "m".into(),
            include_usage,
        }
    }

    fn ev(data: Value) -> Event {
        Event {
            event: data["type"].as_str().map(str::to_string),
            data: data.to_string(),
            ..Event::default()
        }
    }

    /// Runs events through a fresh translator (then `finish`) and returns it with its output.
    fn run(include_usage: bool, events: &[Value]) -> (ResponsesToChat, String) {
        let mut t = ResponsesToChat::new(chunks(include_usage));
        let mut out = String::new();
        for e in events {
            t.on_event(&ev(e.clone()), &mut out);
        }
        t.finish(&mut out);
        (t, out)
    }

    /// The JSON of every `data:` frame (`[DONE]` as a string).
    fn frames(out: &str) -> Vec<Value> {
        out.split_terminator("\n\n")
            .map(|f| {
                let data = f.strip_prefix("data: ").unwrap();
                serde_json::from_str(data).unwrap_or_else(|_| json!(data))
            })
            .collect()
    }

    /// The `delta` (or the finish reason / usage / error) of every frame, for compact checks.
    fn deltas(out: &str) -> Vec<Value> {
        frames(out)
            .into_iter()
            .map(|f| {
                if f.is_string() || f.get("error").is_some() {
                    return f;
                }
                assert_eq!(f["id"], "chatcmpl-x");
                assert_eq!(f["created"], 7);
                assert_eq!(f["model"], "m");
                assert_eq!(f["object"], "chat.completion.chunk");
                match f["choices"].as_array().unwrap().as_slice() {
                    [] => json!({"usage": f["usage"]}),
                    [c] => {
                        assert_eq!(c["index"], 0);
                        if c["finish_reason"].is_null() {
                            c["delta"].clone()
                        } else {
                            assert_eq!(c["delta"], json!({}));
                            json!({"finish": c["finish_reason"]})
                        }
                    }
                    _ => panic!("several choices"),
                }
            })
            .collect()
    }

    fn created() -> Value {
        json!({"type": "response.created", "sequence_number": 0,
            "response": {"id": "resp_1", "status": "in_progress", "output": [], "usage": null}})
    }

    fn completed(usage: Value) -> Value {
        json!({"type": "response.completed", "sequence_number": 99,
            "response": {"id": "resp_1", "status": "completed", "usage": usage}})
    }

    fn fc_added(output_index: u64, id: &str, call_id: &str, name: &str) -> Value {
        json!({"type": "response.output_item.added", "output_index": output_index,
            "item": {"id": id, "type": "function_call", "status": "in_progress", "arguments": "", "call_id": call_id, "name": name}})
    }

    fn args_delta(output_index: u64, id: &str, delta: &str) -> Value {
        json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": output_index, "delta": delta})
    }

    fn args_done(output_index: u64, id: &str, arguments: &str) -> Value {
        json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": output_index, "arguments": arguments})
    }

    fn fc_done(output_index: u64, id: &str, call_id: &str, name: &str, arguments: &str) -> Value {
        json!({"type": "response.output_item.done", "output_index": output_index,
            "item": {"id": id, "type": "function_call", "status": "completed", "arguments": arguments, "call_id": call_id, "name": name}})
    }

    fn text_delta(output_index: u64, delta: &str) -> Value {
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": output_index, "content_index": 0, "delta": delta})
    }

    #[test]
    fn tool_calls_get_their_own_zero_based_index() {
        // §7 rows 7 and 8: the function calls sit at output_index 2 and 3 (after reasoning and a
        // message); the client sees indexes 0 and 1, interleaved fragments routed by
        // output_index, no finish at output_item.done, one id/created/model throughout.
        let (t, out) = run(
            false,
            &[
                created(),
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
                json!({"type": "response.output_item.done", "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
                json!({"type": "response.output_item.added", "output_index": 1, "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}}),
                text_delta(1, "Checking."),
                json!({"type": "response.output_item.done", "output_index": 1, "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}}),
                fc_added(2, "fc_a", "call_a", "get_weather"),
                fc_added(3, "fc_b", "call_b", "get_time"),
                args_delta(2, "fc_a", "{\"city\":"),
                args_delta(3, "fc_b", "{\"tz\":\"CET\"}"),
                args_delta(2, "fc_a", "\"Paris\"}"),
                args_done(2, "fc_a", "{\"city\":\"Paris\"}"),
                args_done(3, "fc_b", "{\"tz\":\"CET\"}"),
                fc_done(2, "fc_a", "call_a", "get_weather", "{\"city\":\"Paris\"}"),
                fc_done(3, "fc_b", "call_b", "get_time", "{\"tz\":\"CET\"}"),
                completed(json!({"input_tokens": 10, "output_tokens": 5})),
            ],
        );
        assert_eq!(
            deltas(&out),
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Checking."}),
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"tz\":\"CET\"}"}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                json!({"finish": "tool_calls"}),
                json!("[DONE]"),
            ]
        );
        assert!(t.is_closed() && t.failure().is_none());
        assert!(t.sniffer().completed());
        assert_eq!(t.sniffer().usage().output_tokens, 5);
    }

    #[test]
    fn arguments_without_deltas_come_from_done_and_blank_is_empty_object() {
        let (_, out) = run(
            false,
            &[
                created(),
                fc_added(0, "fc_a", "call_a", "list_files"),
                args_done(0, "fc_a", ""),
                fc_done(0, "fc_a", "call_a", "list_files", ""),
                fc_added(1, "fc_b", "call_b", "get_time"),
                args_done(1, "fc_b", "{\"tz\":\"UTC\"}"),
                fc_done(1, "fc_b", "call_b", "get_time", "{\"tz\":\"UTC\"}"),
                // Neither deltas nor `.done`: the finished item carries them.
                fc_added(2, "fc_c", "call_c", "ping"),
                fc_done(2, "fc_c", "call_c", "ping", ""),
                // Never announced by output_item.added.
                fc_done(3, "fc_d", "call_d", "pong", "{\"n\":1}"),
                completed(Value::Null),
            ],
        );
        assert_eq!(
            deltas(&out)[2..],
            [
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"tz\":\"UTC\"}"}}]}),
                json!({"tool_calls": [{"index": 2, "id": "call_c", "type": "function", "function": {"name": "ping", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 2, "function": {"arguments": "{}"}}]}),
                json!({"tool_calls": [{"index": 3, "id": "call_d", "type": "function", "function": {"name": "pong", "arguments": "{\"n\":1}"}}]}),
                json!({"finish": "tool_calls"}),
                json!("[DONE]"),
            ]
        );
        // Arguments that arrive only as empty deltas: `.done` still gives `{}` once.
        let (_, out) = run(
            false,
            &[
                created(),
                fc_added(0, "fc_a", "call_a", "f"),
                args_delta(0, "fc_a", ""),
                args_done(0, "fc_a", "{}"),
                completed(Value::Null),
            ],
        );
        assert_eq!(
            deltas(&out)[2],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
        );
        assert_eq!(deltas(&out).len(), 5);
    }

    #[test]
    fn reasoning_parts_are_separated() {
        let summary = |item: &str, i: u64, d: &str| json!({"type": "response.reasoning_summary_text.delta", "item_id": item, "output_index": 0, "summary_index": i, "delta": d});
        let raw = |item: &str, i: u64, d: &str| json!({"type": "response.reasoning_text.delta", "item_id": item, "output_index": 0, "content_index": i, "delta": d});
        let (_, out) = run(
            false,
            &[
                created(),
                summary("rs_1", 0, "**Plan**"),
                summary("rs_1", 0, " it."),
                summary("rs_1", 1, "Then"),
                summary("rs_2", 0, "Again"),
                raw("rs_3", 0, "raw"),
                raw("rs_3", 0, " text"),
                completed(Value::Null),
            ],
        );
        let reasoning: Vec<Value> = deltas(&out)[1..7].to_vec();
        assert_eq!(
            reasoning,
            vec![
                json!({"reasoning_content": "**Plan**"}),
                json!({"reasoning_content": " it."}),
                json!({"reasoning_content": "\n\nThen"}),
                json!({"reasoning_content": "\n\nAgain"}),
                json!({"reasoning_content": "\n\nraw"}),
                json!({"reasoning_content": " text"}),
            ]
        );
        assert_eq!(deltas(&out)[7], json!({"finish": "stop"}));
    }

    #[test]
    fn usage_chunk_only_when_asked_with_cached_tokens() {
        // §7 row 13: cached tokens are inside prompt_tokens and reported in the details.
        let usage = json!({"input_tokens": 2006, "input_tokens_details": {"cached_tokens": 1920},
            "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 256}, "total_tokens": 2306});
        let events = [created(), text_delta(0, "Hi"), completed(usage.clone())];
        let (t, out) = run(true, &events);
        let f = frames(&out);
        assert_eq!(f.len(), 5);
        for chunk in &f[..3] {
            assert_eq!(chunk["usage"], Value::Null);
            assert!(chunk.as_object().unwrap().contains_key("usage"));
        }
        assert_eq!(f[3]["choices"], json!([]));
        assert_eq!(
            f[3]["usage"],
            json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                "prompt_tokens_details": {"cached_tokens": 1920}, "completion_tokens_details": {"reasoning_tokens": 256}})
        );
        assert_eq!(f[4], json!("[DONE]"));
        assert_eq!(
            t.sniffer().usage(),
            Usage {
                input_tokens: 86,
                cache_read_tokens: 1920,
                cache_write_tokens: 0,
                output_tokens: 300,
                reasoning_tokens: 256
            }
        );
        let (_, out) = run(false, &events);
        assert!(!out.contains("usage"));
        assert_eq!(frames(&out).len(), 4);
    }

    #[test]
    fn incomplete_finishes_with_length_or_content_filter() {
        let incomplete = |reason: &str| {
            json!({"type": "response.incomplete", "response": {"status": "incomplete",
                "incomplete_details": {"reason": reason}, "usage": {"input_tokens": 9, "output_tokens": 16}}})
        };
        for (reason, finish) in [
            ("max_output_tokens", "length"),
            ("content_filter", "content_filter"),
        ] {
            let (t, out) = run(true, &[created(), text_delta(0, "Par"), incomplete(reason)]);
            let d = deltas(&out);
            assert_eq!(d[2], json!({"finish": finish}));
            assert_eq!(d[3]["usage"]["completion_tokens"], 16);
            assert_eq!(d[4], json!("[DONE]"));
            assert!(t.is_closed() && t.failure().is_none());
        }
    }

    #[test]
    fn error_event_closes_with_an_error_chunk() {
        let mut t = ResponsesToChat::new(chunks(true));
        let mut out = String::new();
        t.on_event(&ev(created()), &mut out);
        t.on_event(&ev(text_delta(0, "Hel")), &mut out);
        let before = out.len();
        t.on_event(
            &ev(
                json!({"type": "error", "sequence_number": 3, "code": "rate_limit_exceeded",
                "message": "Rate limit reached.", "param": null}),
            ),
            &mut out,
        );
        assert_eq!(
            &out[before..],
            "data: {\"error\":{\"message\":\"Rate limit reached.\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n"
        );
        assert!(t.is_closed());
        let f = t.failure().unwrap();
        assert_eq!(f.status, 429);
        assert_eq!(
            serde_json::from_slice::<Value>(&f.body).unwrap(),
            json!({"error": {"message": "Rate limit reached.", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
        );
        // Later events and finish write nothing, but the sniffer still sees them.
        let len = out.len();
        t.on_event(&ev(text_delta(0, "lo")), &mut out);
        t.on_event(
            &ev(completed(json!({"input_tokens": 1, "output_tokens": 2}))),
            &mut out,
        );
        t.finish(&mut out);
        assert_eq!(out.len(), len);
        assert!(!out.contains("[DONE]"));
        assert!(t.sniffer().errored());
        assert_eq!(t.sniffer().usage().output_tokens, 2);
    }

    #[test]
    fn nested_error_event_and_response_failed() {
        let (t, out) = run(
            false,
            &[
                json!({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_prompt", "message": "Flagged.", "param": "input"}}),
            ],
        );
        // An error as the very first event: only the error chunk (the proxy answers with the
        // failure's HTTP status instead).
        assert_eq!(
            out,
            "data: {\"error\":{\"message\":\"Flagged.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_prompt\"}}\n\n"
        );
        let f = t.failure().unwrap();
        assert_eq!(f.status, 400);
        assert_eq!(
            serde_json::from_slice::<Value>(&f.body).unwrap()["error"]["param"],
            "input"
        );

        let (t, out) = run(
            false,
            &[
                created(),
                text_delta(0, "Hi"),
                json!({"type": "response.failed", "response": {"id": "resp_1", "status": "failed",
                    "error": {"code": "server_error", "message": "The model failed."}, "usage": null}}),
            ],
        );
        let d = deltas(&out);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[2],
            json!({"error": {"message": "The model failed.", "type": "server_error", "param": null, "code": "server_error"}})
        );
        assert_eq!(t.failure().unwrap().status, 500);
        assert!(t.is_closed());
    }

    #[test]
    fn truncated_stream_is_an_error_not_a_stop() {
        let (t, out) = run(false, &[created(), text_delta(0, "Hal")]);
        let d = deltas(&out);
        assert_eq!(
            d,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Hal"}),
                json!({"error": {"message": TRUNCATED_MESSAGE, "type": "server_error", "param": null, "code": "stream_truncated"}}),
            ]
        );
        let f = t.failure().unwrap();
        assert_eq!(f.status, 502);
        assert_eq!(
            serde_json::from_slice::<Value>(&f.body).unwrap()["error"]["code"],
            "stream_truncated"
        );
        assert!(t.is_closed() && !t.sniffer().completed());
        // An empty upstream body too.
        let (t, out) = run(false, &[]);
        assert_eq!(deltas(&out).len(), 1);
        assert_eq!(t.failure().unwrap().status, 502);
    }

    #[test]
    fn odd_input_is_ignored_and_role_comes_first() {
        let mut t = ResponsesToChat::new(chunks(false));
        let mut out = String::new();
        for data in [
            "not json",
            "[1]",
            "{\"type\":\"response.future_event\"}",
            "{}",
        ] {
            t.on_event(
                &Event {
                    data: data.into(),
                    ..Event::default()
                },
                &mut out,
            );
        }
        // Deltas of unknown calls, empty deltas, refusal text.
        t.on_event(&ev(args_delta(5, "fc_x", "{}")), &mut out);
        t.on_event(&ev(text_delta(0, "")), &mut out);
        assert_eq!(out, "");
        // A delta before response.created still gets the role chunk first.
        t.on_event(
            &ev(json!({"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "No."})),
            &mut out,
        );
        t.on_event(&ev(created()), &mut out);
        t.on_event(&ev(completed(Value::Null)), &mut out);
        assert_eq!(
            deltas(&out),
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"refusal": "No."}),
                json!({"finish": "stop"}),
                json!("[DONE]"),
            ]
        );
        // The type comes from the SSE event name when the JSON has none; a non-JSON `error`
        // event is an error too.
        let mut t = ResponsesToChat::new(chunks(false));
        let mut out = String::new();
        t.on_event(
            &Event {
                event: Some("error".into()),
                data: "upstream exploded".into(),
                ..Event::default()
            },
            &mut out,
        );
        assert!(out.contains("\"message\":\"upstream exploded\""), "{out}");
        assert_eq!(t.failure().unwrap().status, 500);
        let mut t = ResponsesToChat::new(chunks(false));
        let mut out = String::new();
        t.on_event(
            &Event {
                event: Some("response.output_text.delta".into()),
                data: "{\"delta\":\"x\"}".into(),
                ..Event::default()
            },
            &mut out,
        );
        assert!(
            out.ends_with(
                "\"delta\":{\"content\":\"x\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
            ),
            "{out}"
        );
    }

    /// 50,000 function calls, then their argument deltas in reverse order, addressed by item id
    /// only. Calls are found by hash lookups; a scan of the calls per event (the old quadratic
    /// lookup) would add over 10^9 comparisons.
    #[test]
    fn fifty_thousand_calls_are_routed_in_linear_time() {
        const N: usize = 50_000;
        let mut t = ResponsesToChat::new(chunks(false));
        let mut out = String::new();
        t.on_event(&ev(created()), &mut out);
        for i in 0..N {
            t.on_event(
                &ev(fc_added(
                    i as u64,
                    &format!("fc_{i}"),
                    &format!("call_{i}"),
                    "f",
                )),
                &mut out,
            );
        }
        out.clear();
        for i in (0..N).rev() {
            let delta = json!({"type": "response.function_call_arguments.delta",
                "item_id": format!("fc_{i}"), "delta": format!("{{\"n\":{i}}}")});
            t.on_event(&ev(delta), &mut out);
        }
        t.on_event(&ev(completed(Value::Null)), &mut out);
        let d = deltas(&out);
        assert_eq!(d.len(), N + 2);
        for (k, delta) in d[..N].iter().enumerate() {
            let i = N - 1 - k;
            assert_eq!(
                delta,
                &json!({"tool_calls": [{"index": i, "function": {"arguments": format!("{{\"n\":{i}}}")}}]})
            );
        }
        assert_eq!(d[N], json!({"finish": "tool_calls"}));
        assert!(t.is_closed() && t.failure().is_none());
    }
}
