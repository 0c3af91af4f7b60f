//! The reasoning round trip of `translation.md` §4.4: a Chat client never echoes a GPT reasoning
//! model's `reasoning` items, so with `store:false` the model would lose its reasoning between
//! tool turns. The gateway asks for `include:["reasoning.encrypted_content"]`, keeps the items of
//! a turn that ended with tool calls (a [`Turn`]), and on the next request puts the `reasoning`
//! items and the `function_call` items (with their `fc_…` ids) back in their original order.
//!
//! Pure: a [`Turn`] is built from a whole response ([`Turn::from_response`]) or from a stream's
//! `response.output_item.done` items ([`TurnCollector`]); the request translator reads turns
//! through a [`TurnLookup`] the caller provides (the caller owns the cache). The encrypted
//! content is opaque: it is copied, never read or logged.

use std::sync::Arc;

use serde_json::{Map, Value};

/// Finds the turn that produced a tool call, by `call_id`.
pub type TurnLookup<'a> = &'a dyn Fn(&str) -> Option<Arc<Turn>>;

/// One output item of a turn, as it will be sent back.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnItem {
    /// `{type:"reasoning", id, summary, encrypted_content}` as received.
    Reasoning(Value),
    /// Where the assistant's text was (the client sends that text back itself).
    Message,
    /// A function call: its item id (`fc_…`) and `call_id`. The name and arguments sent back
    /// are the client's.
    FunctionCall { id: String, call_id: String },
}

/// The output items of one response that ended with tool calls and holds reasoning, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    items: Vec<TurnItem>,
    /// The `call_id`s of the turn's function calls, in order.
    call_ids: Vec<String>,
    /// Roughly the memory the turn holds (its strings), for the cache's byte bound.
    bytes: usize,
}

impl Turn {
    /// The items of a whole (non-streamed) Responses reply; `None` unless it completed with at
    /// least one function call and at least one reasoning item, every one of them re-sendable.
    pub fn from_response(body: &Value) -> Option<Turn> {
        if body.get("status").and_then(Value::as_str) != Some("completed") {
            return None;
        }
        let mut c = TurnCollector::new();
        for item in body.get("output")?.as_array()? {
            c.on_item(item);
        }
        c.complete();
        c.take()
    }

    pub fn items(&self) -> &[TurnItem] {
        &self.items
    }

    /// The `call_id`s this turn answers for (each a cache key).
    pub fn call_ids(&self) -> &[String] {
        &self.call_ids
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the turn had an assistant message item.
    pub fn has_message(&self) -> bool {
        self.items.iter().any(|i| matches!(i, TurnItem::Message))
    }
}

/// Builds a [`Turn`] from output items as they complete (`response.output_item.done`).
#[derive(Debug, Clone, Default)]
pub struct TurnCollector {
    items: Vec<TurnItem>,
    call_ids: Vec<String>,
    bytes: usize,
    reasoning: usize,
    /// An item the turn cannot send back was seen (a reasoning item without encrypted content,
    /// a function call without its id, an unknown item type): nothing is kept.
    unusable: bool,
    completed: bool,
}

impl TurnCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// One completed output item.
    pub fn on_item(&mut self, item: &Value) {
        if self.unusable {
            return;
        }
        let text = |key: &str| {
            item.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                let (Some(id), Some(encrypted)) = (text("id"), text("encrypted_content")) else {
                    self.unusable = true;
                    return;
                };
                let summary = item
                    .get("summary")
                    .filter(|s| s.is_array())
                    .cloned()
                    .unwrap_or_else(|| Value::Array(Vec::new()));
                self.bytes += id.len() + encrypted.len() + summary_len(&summary) + 64;
                let mut m = Map::with_capacity(4);
                m.insert("type".into(), Value::from("reasoning"));
                m.insert("id".into(), Value::from(id));
                m.insert("summary".into(), summary);
                m.insert("encrypted_content".into(), Value::from(encrypted));
                self.items.push(TurnItem::Reasoning(Value::Object(m)));
                self.reasoning += 1;
            }
            Some("message") => {
                if self.items.last() != Some(&TurnItem::Message) {
                    self.items.push(TurnItem::Message);
                }
            }
            Some("function_call") => {
                let (Some(id), Some(call_id)) = (text("id"), text("call_id")) else {
                    self.unusable = true;
                    return;
                };
                self.bytes += id.len() + 2 * call_id.len() + 64;
                self.call_ids.push(call_id.to_string());
                self.items.push(TurnItem::FunctionCall {
                    id: id.to_string(),
                    call_id: call_id.to_string(),
                });
            }
            _ => self.unusable = true,
        }
    }

    /// The response completed (`response.completed`); an incomplete or failed one keeps nothing.
    pub fn complete(&mut self) {
        self.completed = true;
    }

    /// The turn, once, when it completed with tool calls and reasoning that can be sent back.
    pub fn take(&mut self) -> Option<Turn> {
        if !self.completed || self.unusable || self.reasoning == 0 || self.call_ids.is_empty() {
            return None;
        }
        let mut sorted: Vec<&String> = self.call_ids.iter().collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return None; // a repeated call_id could not be told apart
        }
        self.completed = false;
        Some(Turn {
            items: std::mem::take(&mut self.items),
            call_ids: std::mem::take(&mut self.call_ids),
            bytes: std::mem::take(&mut self.bytes),
        })
    }
}

fn summary_len(summary: &Value) -> usize {
    summary.as_array().map_or(0, |parts| {
        parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| t.len() + 32)
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(id: &str, enc: &str) -> Value {
        json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": "Plan."}], "encrypted_content": enc, "status": "completed"})
    }

    fn fc(id: &str, call_id: &str) -> Value {
        json!({"type": "function_call", "id": id, "call_id": call_id, "name": "f", "arguments": "{}", "status": "completed"})
    }

    fn msg() -> Value {
        json!({"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]})
    }

    fn response(output: Vec<Value>) -> Value {
        json!({"id": "resp_1", "status": "completed", "output": output})
    }

    #[test]
    fn a_completed_turn_keeps_reasoning_and_calls_in_order() {
        let t = Turn::from_response(&response(vec![
            rs("rs_1", "gAAA"),
            msg(),
            fc("fc_1", "call_a"),
            fc("fc_2", "call_b"),
        ]))
        .unwrap();
        assert_eq!(t.call_ids(), ["call_a", "call_b"]);
        assert_eq!(
            t.items(),
            [
                TurnItem::Reasoning(
                    json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan."}], "encrypted_content": "gAAA"})
                ),
                TurnItem::Message,
                TurnItem::FunctionCall {
                    id: "fc_1".into(),
                    call_id: "call_a".into()
                },
                TurnItem::FunctionCall {
                    id: "fc_2".into(),
                    call_id: "call_b".into()
                },
            ]
        );
        assert!(t.has_message());
        assert!(t.bytes() > 0);
    }

    #[test]
    fn nothing_is_kept_unless_both_reasoning_and_calls_can_be_sent_back() {
        // No tool call.
        assert!(Turn::from_response(&response(vec![rs("rs_1", "gA"), msg()])).is_none());
        // No reasoning.
        assert!(Turn::from_response(&response(vec![fc("fc_1", "c")])).is_none());
        // Reasoning without encrypted content (include not honoured).
        let bare = json!({"type": "reasoning", "id": "rs_1", "summary": []});
        assert!(Turn::from_response(&response(vec![bare, fc("fc_1", "c")])).is_none());
        // A call without its item id.
        let no_id = json!({"type": "function_call", "call_id": "c", "name": "f"});
        assert!(Turn::from_response(&response(vec![rs("rs_1", "gA"), no_id])).is_none());
        // An unknown item type.
        let other = json!({"type": "web_search_call", "id": "ws_1"});
        assert!(
            Turn::from_response(&response(vec![rs("rs_1", "gA"), other, fc("fc_1", "c")]))
                .is_none()
        );
        // A repeated call_id.
        assert!(
            Turn::from_response(&response(vec![
                rs("rs_1", "gA"),
                fc("fc_1", "c"),
                fc("fc_2", "c")
            ]))
            .is_none()
        );
        // Not completed.
        let mut r = response(vec![rs("rs_1", "gA"), fc("fc_1", "c")]);
        r["status"] = json!("incomplete");
        assert!(Turn::from_response(&r).is_none());
    }

    #[test]
    fn the_collector_needs_completion_and_hands_the_turn_out_once() {
        let mut c = TurnCollector::new();
        c.on_item(&rs("rs_1", "gA"));
        c.on_item(&fc("fc_1", "c"));
        assert!(c.take().is_none(), "not completed yet");
        c.complete();
        assert_eq!(c.take().unwrap().call_ids(), ["c"]);
        assert!(c.take().is_none());
    }

    /// The stream translator hands the turn out when asked to collect, and the client's frames
    /// are the same either way.
    #[test]
    fn the_stream_translator_collects_the_turn_without_changing_frames() {
        use crate::sse::Event;
        use crate::translate::chat::ChatChunks;
        use crate::translate::responses_chat::ResponsesToChat;

        let ev = |v: Value| Event {
            event: v["type"].as_str().map(str::to_string),
            data: v.to_string(),
            ..Event::default()
        };
        let done = |i: u64, item: Value| json!({"type": "response.output_item.done", "output_index": i, "item": item});
        let events = |terminal: &str| {
            vec![
                json!({"type": "response.created", "response": {"id": "resp_1"}}),
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
                done(0, rs("rs_1", "gAAA")),
                json!({"type": "response.output_item.added", "output_index": 1, "item": {"id": "fc_1", "type": "function_call", "call_id": "call_a", "name": "f", "arguments": ""}}),
                done(1, fc("fc_1", "call_a")),
                json!({"type": terminal, "response": {"id": "resp_1", "status": "x"}}),
            ]
        };
        let run = |collect: bool, terminal: &str| {
            let chunks = ChatChunks {
                id: "chatcmpl-x".into(),
                created: 1,
                model: "m".into(),
                include_usage: false,
            };
            let mut t = ResponsesToChat::new(chunks);
            if collect {
                t = t.collect_turn();
            }
            let mut out = String::new();
            for e in events(terminal) {
                t.on_event(&ev(e), &mut out);
            }
            t.finish(&mut out);
            (out, t.take_turn())
        };
        let (plain, none) = run(false, "response.completed");
        assert!(none.is_none());
        let (collected, turn) = run(true, "response.completed");
        assert_eq!(plain, collected);
        let turn = turn.unwrap();
        assert_eq!(turn.call_ids(), ["call_a"]);
        assert_eq!(turn.items().len(), 2);
        // An incomplete or failed response leaves nothing.
        assert!(run(true, "response.incomplete").1.is_none());
        assert!(run(true, "response.failed").1.is_none());
    }
}
