//! `POST /v1/chat/completions` for anthropic-type models (upstream Anthropic Messages) and
//! openai-type models (upstream OpenAI Responses), end to end through the running gateway and
//! the mock upstream: replies, errors, live streams, keep-alives, mid-stream failures, the
//! thinking round trip, request translation as the (strict) mock accepts it, token metrics and
//! client disconnects.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use droid2api_mock::{MOCK_TEXT, SseEventSpec, anthropic, encode_events, openai};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};

const KEY: &str = "fk-chat-translation-0001";
const ADMIN: &str = "admin-key-chat-translation-0001";
const PROMPT: &str = "You are Droid, an AI software engineering agent built by Factory.\n\n";
const CHAT: &str = "/v1/chat/completions";
const A_PATH: &str = "/a/v1/messages";
const O_PATH: &str = "/o/v1/responses";
const FRAME_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

async fn gw_with(mock: &MockUpstream, config: Value) -> Gateway {
    gateway(mock)
        .env("FACTORY_API_KEY", KEY)
        .env("ADMIN_ACCESS_KEY", ADMIN)
        .config(config)
        .start()
        .await
}

/// Config listing `(id, type, reasoning)` models.
fn models(list: &[(&str, &str, &str)]) -> Value {
    let models: Vec<Value> = list
        .iter()
        .map(|(id, ty, reasoning)| json!({"id": id, "type": ty, "reasoning": reasoning}))
        .collect();
    json!({ "models": models })
}

fn upstream_json(mock: &MockUpstream) -> Value {
    mock.last_llm_request().unwrap().json.unwrap()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

async fn open(gw: &Gateway, body: &Value) -> reqwest::Response {
    client().post(gw.url(CHAT)).json(body).send().await.unwrap()
}

/// One SSE frame as the client receives it.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Comment(String),
    Data(Value),
    Done,
}

impl Frame {
    fn data(&self) -> Option<&Value> {
        match self {
            Frame::Data(v) => Some(v),
            _ => None,
        }
    }
}

fn parse_frame(raw: &[u8]) -> Frame {
    let text = std::str::from_utf8(raw).expect("a frame is valid UTF-8");
    if let Some(c) = text.strip_prefix(':') {
        return Frame::Comment(c.trim().to_string());
    }
    let data = text
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("unexpected frame {text:?}"));
    assert!(!data.contains('\n'), "one data line per frame: {text:?}");
    if data == "[DONE]" {
        Frame::Done
    } else {
        Frame::Data(
            serde_json::from_str(data)
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {data}")),
        )
    }
}

/// Reads a client SSE body frame by frame, with a deadline per frame.
struct Reader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
    ended: bool,
}

impl Reader {
    fn new(resp: reqwest::Response) -> Self {
        Reader {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The next frame; `None` once the body has ended. Panics when no complete frame arrives
    /// within `within`.
    async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Some(parse_frame(&raw[..pos]));
            }
            if self.ended {
                assert!(
                    self.buf.is_empty(),
                    "bytes after the last frame: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!(
                    "no complete frame within {within:?}; pending {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("the client body broke: {e}"),
                Ok(None) => self.ended = true,
            }
        }
    }

    /// Every remaining frame up to the end of the body.
    async fn rest(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.next(Duration::from_secs(10)).await {
            frames.push(f);
        }
        frames
    }
}

/// A whole streamed answer: status, headers and frames.
async fn stream_all(gw: &Gateway, body: &Value) -> (u16, reqwest::header::HeaderMap, Vec<Frame>) {
    let resp = open(gw, body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        headers.contains_key("x-request-id"),
        "our request id on streams too"
    );
    let frames = Reader::new(resp).rest().await;
    (status, headers, frames)
}

fn data_frames(frames: &[Frame]) -> Vec<&Value> {
    frames.iter().filter_map(Frame::data).collect()
}

/// The concatenated `choices[0].delta.<field>` strings.
fn deltas(frames: &[Frame], field: &str) -> String {
    data_frames(frames)
        .iter()
        .filter_map(|v| v["choices"][0]["delta"][field].as_str())
        .collect()
}

/// Every non-null `finish_reason`.
fn finish_reasons(frames: &[Frame]) -> Vec<String> {
    data_frames(frames)
        .iter()
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str())
        .map(str::to_string)
        .collect()
}

/// Tool calls assembled the way openai-python does: by `index`, the first delta of an index
/// carrying id/type/name, the later ones only argument text. Returns (id, name, arguments).
fn tool_calls(frames: &[Frame]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for v in data_frames(frames) {
        let delta = &v["choices"][0]["delta"];
        let Some(list) = delta["tool_calls"].as_array() else {
            continue;
        };
        assert_eq!(list.len(), 1, "one tool-call entry per chunk: {v}");
        assert!(
            delta.get("content").is_none(),
            "content and tool calls never share a chunk: {v}"
        );
        let tc = &list[0];
        let i = tc["index"].as_u64().unwrap() as usize;
        if let Some(id) = tc.get("id") {
            assert_eq!(i, calls.len(), "tool indexes count from 0 in order: {v}");
            assert_eq!(tc["type"], "function");
            calls.push((
                id.as_str().unwrap().to_string(),
                tc["function"]["name"].as_str().unwrap().to_string(),
                String::new(),
            ));
        } else {
            assert!(
                tc["function"].get("name").is_none(),
                "continuations carry no name: {v}"
            );
        }
        let call = calls.get_mut(i).expect("arguments after the header");
        call.2
            .push_str(tc["function"]["arguments"].as_str().unwrap_or_default());
    }
    calls
}

/// G4 for a stream: every chunk is a `chat.completion.chunk` with one id, one `created` and the
/// client's model name; the first frame is the role chunk; choice index always 0.
fn assert_stream_invariants(frames: &[Frame], client_model: &str) {
    let chunks: Vec<&Value> = data_frames(frames)
        .into_iter()
        .filter(|v| v.get("error").is_none())
        .collect();
    assert!(!chunks.is_empty(), "{frames:?}");
    let first = frames
        .first()
        .and_then(Frame::data)
        .expect("a data frame first");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""}),
        "the role chunk comes first"
    );
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    let created = first["created"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created.abs_diff(now) < 120,
        "created {created} vs now {now}"
    );
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        assert_eq!(c["id"], id, "one id for the whole stream: {c}");
        assert_eq!(
            c["created"], created,
            "one created for the whole stream: {c}"
        );
        assert_eq!(c["model"], client_model, "{c}");
        assert_eq!(c["system_fingerprint"], Value::Null, "{c}");
        for choice in c["choices"].as_array().unwrap() {
            assert_eq!(choice["index"], 0, "{c}");
        }
    }
    assert_eq!(
        frames
            .iter()
            .filter(
                |f| matches!(f, Frame::Data(v) if v["choices"][0]["delta"].get("role").is_some())
            )
            .count(),
        1,
        "one role chunk"
    );
}

/// Waits for a token counter of `/metrics` to reach `want` (metrics are process-global; every
/// test uses its own model ids).
async fn wait_metric(gw: &Gateway, model: &str, kind: &str, want: u64) {
    let needle = format!("droid2api_tokens_total{{model=\"{model}\",kind=\"{kind}\"}} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = client()
            .get(gw.url("/metrics"))
            .header("x-admin-key", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix(&needle))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{model}/{kind}: metric is {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream event builders
// ---------------------------------------------------------------------------------------------

fn a_event(name: &str, data: Value) -> SseEventSpec {
    SseEventSpec::named(name, &data)
}

fn a_start(id: &str, input: u64, cache_read: u64, cache_write: u64) -> SseEventSpec {
    a_event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": "claude-upstream",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_read_input_tokens": cache_read,
                      "cache_creation_input_tokens": cache_write, "output_tokens": 1}}}),
    )
}

fn a_block_start(index: u64, block: Value) -> SseEventSpec {
    a_event(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn a_delta(index: u64, delta: Value) -> SseEventSpec {
    a_event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn a_block_stop(index: u64) -> SseEventSpec {
    a_event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

/// A text block at `index` whose text arrives as `pieces`.
fn a_text_block(index: u64, pieces: &[&str]) -> Vec<SseEventSpec> {
    let mut v = vec![a_block_start(index, json!({"type": "text", "text": ""}))];
    for p in pieces {
        v.push(a_delta(index, json!({"type": "text_delta", "text": p})));
    }
    v.push(a_block_stop(index));
    v
}

fn a_end(stop_reason: &str, output: u64) -> Vec<SseEventSpec> {
    vec![
        a_event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": output}}),
        ),
        a_event("message_stop", json!({"type": "message_stop"})),
    ]
}

fn a_error(error_type: &str, message: &str) -> SseEventSpec {
    a_event(
        "error",
        json!({"type": "error", "error": {"type": error_type, "message": message}}),
    )
}

/// The `text_delta` texts of a scripted Anthropic stream.
fn a_text_of(events: &[SseEventSpec]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

/// The `response.output_text.delta` texts of a scripted Responses stream.
fn r_text_of(events: &[SseEventSpec]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter(|v| v["type"] == "response.output_text.delta")
        .filter_map(|v| v["delta"].as_str().map(str::to_string))
        .collect()
}

fn r_event(data: Value) -> SseEventSpec {
    let name = data["type"].as_str().unwrap().to_string();
    SseEventSpec::named(name, &data)
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

// ---------------------------------------------------------------------------------------------
// 1. Non-streaming replies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_reply_is_converted_to_a_chat_completion() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        json!({"models": [{"id": "claude-reply", "type": "anthropic", "reasoning": "off"}],
               "model_redirects": {"claude-alias": "claude-reply"}}),
    )
    .await;
    let upstream = json!({
        "id": "msg_01X", "type": "message", "role": "assistant", "model": "claude-reply",
        "content": [
            {"type": "thinking", "thinking": "Need data.", "signature": "EqQB-sig"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "the weather 🌍."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
            {"type": "tool_use", "id": "toolu_01B", "name": "ping", "input": {}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 1800, "output_tokens": 95}
    });
    mock.push_rule(
        Rule::new(Reply::json(200, upstream).with_header("request-id", "req_up_1"))
            .path(A_PATH)
            .once(),
    );
    let (s, h, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-alias", "messages": user("Weather?")}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["request-id"], "req_up_1");
    let v = json(&b);
    let created = v["created"].as_u64().expect("created is a number");
    let args = v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .expect("arguments are a JSON string");
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"city": "Paris", "days": [1, 2]})
    );
    let mut expected = json!({
        "id": "chatcmpl-msg_01X", "object": "chat.completion", "created": created,
        "model": "claude-alias", "system_fingerprint": null,
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Checking the weather 🌍.",
                "reasoning_content": "Need data.",
                "thinking_blocks": [{"type": "thinking", "thinking": "Need data.", "signature": "EqQB-sig"}],
                "tool_calls": [
                    {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": args}},
                    {"id": "toolu_01B", "type": "function", "function": {"name": "ping", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1827, "completion_tokens": 95, "total_tokens": 1922,
            "prompt_tokens_details": {"cached_tokens": 1800},
            "completion_tokens_details": {"reasoning_tokens": 0},
            "cache_creation_input_tokens": 7}
    });
    assert_eq!(v, expected, "never the raw upstream body");
    assert_eq!(upstream_json(&mock)["model"], "claude-reply");

    // max_tokens → length; a text-only reply has no tool_calls.
    let upstream = anthropic::message_json(
        "msg_02",
        "claude-reply",
        vec![json!({"type": "text", "text": "partial"})],
        "max_tokens",
        12,
        34,
    );
    mock.push_rule(Rule::new(Reply::json(200, upstream)).path(A_PATH).once());
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-reply", "max_tokens": 34, "messages": user("Go on")}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let v = json(&b);
    expected = json!({"role": "assistant", "content": "partial"});
    assert_eq!(v["choices"][0]["message"], expected);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["model"], "claude-reply");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    for raw in ["type", "content", "stop_reason", "role"] {
        assert!(v.get(raw).is_none(), "no raw Anthropic field {raw}: {v}");
    }
}

#[tokio::test]
async fn responses_reply_is_converted_to_a_chat_completion() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, models(&[("gpt-reply", "openai", "off")])).await;
    let upstream = json!({
        "id": "resp_9", "object": "response", "created_at": 1_764_158_400, "model": "gpt-reply",
        "status": "completed", "error": null, "incomplete_details": null,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [
                {"type": "summary_text", "text": "Plan A."}, {"type": "summary_text", "text": "Plan B."}]},
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [
                {"type": "output_text", "text": "Calling ", "annotations": []},
                {"type": "output_text", "text": "a tool 你好.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_abc", "name": "get_weather",
             "arguments": "{\"city\":\"Rome\"}", "status": "completed"}
        ],
        "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 256},
                  "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 340}
    });
    mock.push_rule(Rule::new(Reply::json(200, upstream)).path(O_PATH).once());
    let (s, h, b) = post(
        &gw.url(CHAT),
        &json!({"model": "gpt-reply", "messages": user("Weather in Rome?")}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["content-type"], "application/json");
    let v = json(&b);
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-resp_9", "object": "chat.completion", "created": 1_764_158_400,
            "model": "gpt-reply",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "Calling a tool 你好.", "refusal": null,
                    "reasoning_content": "Plan A.\n\nPlan B.",
                    "tool_calls": [{"id": "call_abc", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340,
                "prompt_tokens_details": {"cached_tokens": 256},
                "completion_tokens_details": {"reasoning_tokens": 12}},
            "system_fingerprint": null
        }),
        "never the raw upstream body"
    );

    // incomplete because of max_output_tokens → length.
    let upstream = json!({
        "id": "resp_10", "object": "response", "created_at": 1_764_158_401, "model": "gpt-reply",
        "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
        "output": [{"type": "message", "id": "msg_2", "status": "incomplete", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Once upon", "annotations": []}]}],
        "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 16, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25}
    });
    mock.push_rule(Rule::new(Reply::json(200, upstream)).path(O_PATH).once());
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "gpt-reply", "max_tokens": 16, "messages": user("A story")}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let v = json(&b);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "Once upon");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(v["usage"]["completion_tokens"], 16);
    for raw in ["output", "status", "created_at", "incomplete_details"] {
        assert!(v.get(raw).is_none(), "no raw Responses field {raw}: {v}");
    }

    // A failed response is an error in the OpenAI envelope, not a completion.
    let upstream = json!({
        "id": "resp_11", "object": "response", "created_at": 1_764_158_402, "model": "gpt-reply",
        "status": "failed", "error": {"code": "rate_limit_exceeded", "message": "Too many tokens"},
        "output": [], "usage": null
    });
    mock.push_rule(Rule::new(Reply::json(200, upstream)).path(O_PATH).once());
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "gpt-reply", "messages": user("x")}),
        &[],
    )
    .await;
    assert_eq!(s, 429, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        json(&b),
        json!({"error": {"message": "Too many tokens", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Upstream errors before the first byte
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_errors_before_the_first_byte_keep_status_and_retry_after_in_the_openai_envelope()
{
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        models(&[
            ("claude-err", "anthropic", "off"),
            ("gpt-err", "openai", "off"),
        ]),
    )
    .await;
    // (upstream path, reply, stream?, expected status, expected body, expected retry-after)
    let cases = [
        (
            A_PATH,
            Reply::anthropic_error(529, "overloaded_error", "Overloaded")
                .with_header("retry-after", "3")
                .with_header("x-request-id", "up-529"),
            false,
            503,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}}),
            Some("3"),
        ),
        (
            A_PATH,
            Reply::anthropic_error(529, "overloaded_error", "Overloaded")
                .with_header("retry-after", "4"),
            true,
            503,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}}),
            Some("4"),
        ),
        (
            A_PATH,
            Reply::anthropic_error(429, "rate_limit_error", "slow down")
                .with_header("retry-after", "7"),
            true,
            429,
            json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}}),
            Some("7"),
        ),
        (
            A_PATH,
            Reply::anthropic_error(
                400,
                "invalid_request_error",
                "prompt is too long: 300000 tokens > 200000 maximum",
            ),
            false,
            400,
            json!({"error": {"message": "prompt is too long: 300000 tokens > 200000 maximum",
                             "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}}),
            None,
        ),
        (
            O_PATH,
            Reply::openai_error(429, "rate_limit_error", "Rate limit reached")
                .with_header("retry-after", "2"),
            true,
            429,
            json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}}),
            Some("2"),
        ),
        (
            O_PATH,
            Reply::openai_error(529, "server_error", "Overloaded").with_header("retry-after", "5"),
            false,
            503,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}}),
            Some("5"),
        ),
        (
            O_PATH,
            Reply::json(
                400,
                json!({"error": {"message": "bad input", "type": "invalid_request_error", "param": "input", "code": null}}),
            ),
            true,
            400,
            json!({"error": {"message": "bad input", "type": "invalid_request_error", "param": "input", "code": null}}),
            None,
        ),
    ];
    for (path, reply, stream, status, body, retry_after) in cases {
        mock.push_rule(Rule::new(reply).path(path).once());
        let model = if path == A_PATH {
            "claude-err"
        } else {
            "gpt-err"
        };
        let (s, h, b) = post(
            &gw.url(CHAT),
            &json!({"model": model, "stream": stream, "messages": user("hi")}),
            &[],
        )
        .await;
        let what = format!("{path} {status} stream={stream}");
        assert_eq!(s, status, "{what}: {}", String::from_utf8_lossy(&b));
        assert_eq!(h["content-type"], "application/json", "{what}");
        assert_eq!(json(&b), body, "{what}");
        assert_eq!(
            h.get("retry-after").map(|v| v.to_str().unwrap()),
            retry_after,
            "{what}"
        );
    }
    // The upstream's x-request-id is relayed under our name; the last case had none.
    mock.push_rule(
        Rule::new(
            Reply::anthropic_error(529, "overloaded_error", "Overloaded")
                .with_header("x-request-id", "up-529"),
        )
        .path(A_PATH)
        .once(),
    );
    let (_, h, _) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-err", "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(h["x-upstream-request-id"], "up-529");
    // Still serving.
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-err", "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["choices"][0]["message"]["content"], MOCK_TEXT);
}

// ---------------------------------------------------------------------------------------------
// 3. Streams
// ---------------------------------------------------------------------------------------------

/// Reads frames until the concatenated content equals `expected` (the upstream is stalled, so a
/// buffering gateway would time out here).
async fn read_until_content(reader: &mut Reader, expected: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    while deltas(&frames, "content") != expected {
        let f = reader
            .next(FRAME_WAIT)
            .await
            .expect("the stream is still open: the upstream only stalls");
        frames.push(f);
        assert!(
            deltas(&frames, "content").len() <= expected.len(),
            "{frames:?}"
        );
    }
    frames
}

#[tokio::test]
async fn anthropic_stream_is_forwarded_live_with_one_id_and_the_client_model_name() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        json!({"models": [{"id": "claude-live", "type": "anthropic", "reasoning": "off"}],
               "model_redirects": {"my-claude": "claude-live"}}),
    )
    .await;

    // message_start, ping, content_block_start, two text deltas; then the upstream stalls.
    let events =
        anthropic::text_stream_events("msg_live", "claude-live", "Hello live world", 10, 7, None);
    let sent = events[..5].to_vec();
    let expected = a_text_of(&sent);
    assert!(!expected.is_empty());
    mock.push_rule(
        Rule::new(
            Reply::sse(sent)
                .hanging_after()
                .with_header("request-id", "req_live"),
        )
        .path(A_PATH)
        .once(),
    );
    let resp = open(
        &gw,
        &json!({"model": "my-claude", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert_eq!(resp.headers()["request-id"], "req_live");
    let mut reader = Reader::new(resp);
    let frames = read_until_content(&mut reader, &expected).await;
    assert_stream_invariants(&frames, "my-claude");
    assert!(finish_reasons(&frames).is_empty());
    assert!(!frames.contains(&Frame::Done));
    assert_eq!(upstream_json(&mock)["model"], "claude-live");
    drop(reader);

    // A complete stream, usage chunk requested: role, content, finish, usage, [DONE].
    let text = "Bonjour 世界 🌍, ça va?";
    let mut events = anthropic::text_stream_events("msg_full", "claude-live", text, 25, 9, None);
    events[0] = a_start("msg_full", 25, 300, 0);
    mock.push_rule(Rule::new(Reply::sse(events.clone())).path(A_PATH).once());
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "my-claude", "stream": true, "stream_options": {"include_usage": true},
                "messages": user("hi")}),
    )
    .await;
    assert_stream_invariants(&frames, "my-claude");
    assert_eq!(deltas(&frames, "content"), text);
    assert_eq!(frames.last(), Some(&Frame::Done), "[DONE] last");
    assert_eq!(frames.iter().filter(|f| **f == Frame::Done).count(), 1);
    let data = data_frames(&frames);
    let (usage, finish) = (data[data.len() - 1], data[data.len() - 2]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 325, "completion_tokens": 9, "total_tokens": 334,
               "prompt_tokens_details": {"cached_tokens": 300},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish_reasons(&frames), ["stop"]);
    for c in &data[..data.len() - 1] {
        assert_eq!(c["usage"], Value::Null, "usage: null on other chunks: {c}");
        assert!(c.get("usage").is_some());
    }

    // Not requested: no usage chunk and no usage field at all.
    mock.push_rule(Rule::new(Reply::sse(events)).path(A_PATH).once());
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-live", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_stream_invariants(&frames, "claude-live");
    assert_eq!(deltas(&frames, "content"), text);
    assert_eq!(frames.last(), Some(&Frame::Done));
    let data = data_frames(&frames);
    assert!(
        data.iter()
            .all(|c| c.get("usage").is_none() && !c["choices"].as_array().unwrap().is_empty()),
        "{data:?}"
    );
    assert_eq!(data.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn responses_stream_is_forwarded_live_with_one_id_and_the_client_model_name() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        json!({"models": [{"id": "gpt-live", "type": "openai", "reasoning": "off"}],
               "model_redirects": {"my-gpt": "gpt-live"}}),
    )
    .await;

    // created, in_progress, output_item.added, content_part.added, two text deltas; stall.
    let text = "Streaming 中文 and emoji 🚀 live";
    let events = openai::responses_text_stream_events("resp_live", "gpt-live", text, 30, 8, None);
    let sent = events[..6].to_vec();
    let expected = r_text_of(&sent);
    assert!(!expected.is_empty());
    mock.push_rule(
        Rule::new(Reply::sse(sent).hanging_after())
            .path(O_PATH)
            .once(),
    );
    let resp = open(
        &gw,
        &json!({"model": "my-gpt", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut reader = Reader::new(resp);
    let frames = read_until_content(&mut reader, &expected).await;
    assert_stream_invariants(&frames, "my-gpt");
    assert!(finish_reasons(&frames).is_empty());
    assert_eq!(upstream_json(&mock)["model"], "gpt-live");
    drop(reader);

    // Complete, with a reasoning summary and the usage chunk.
    let events =
        openai::responses_text_stream_events("resp_full", "gpt-live", text, 30, 8, Some("Hmm."));
    mock.push_rule(Rule::new(Reply::sse(events.clone())).path(O_PATH).once());
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "my-gpt", "stream": true, "stream_options": {"include_usage": true},
                "messages": user("hi")}),
    )
    .await;
    assert_stream_invariants(&frames, "my-gpt");
    assert_eq!(deltas(&frames, "content"), text);
    assert_eq!(deltas(&frames, "reasoning_content"), "Hmm.");
    assert_eq!(frames.last(), Some(&Frame::Done));
    let data = data_frames(&frames);
    let (usage, finish) = (data[data.len() - 1], data[data.len() - 2]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": openai::MOCK_REASONING_TOKENS}})
    );
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish_reasons(&frames), ["stop"]);

    // Not requested: no usage chunk.
    mock.push_rule(Rule::new(Reply::sse(events)).path(O_PATH).once());
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "gpt-live", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_stream_invariants(&frames, "gpt-live");
    assert_eq!(frames.last(), Some(&Frame::Done));
    assert!(
        data_frames(&frames)
            .iter()
            .all(|c| c.get("usage").is_none() && !c["choices"].as_array().unwrap().is_empty())
    );
}

#[tokio::test]
async fn streamed_tool_calls_are_indexed_from_zero_in_both_formats() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        models(&[
            ("claude-tools", "anthropic", "off"),
            ("gpt-tools", "openai", "off"),
        ]),
    )
    .await;
    // Text first (block 0), then two tool_use blocks (1 and 2); the second has no arguments.
    let mut events = vec![a_start("msg_tools", 5, 0, 0)];
    events.extend(a_text_block(0, &["Checking."]));
    events.push(a_block_start(
        1,
        json!({"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
    ));
    for p in ["", "{\"city\":", "\"Paris\"}"] {
        events.push(a_delta(
            1,
            json!({"type": "input_json_delta", "partial_json": p}),
        ));
    }
    events.push(a_block_stop(1));
    events.push(a_block_start(
        2,
        json!({"type": "tool_use", "id": "toolu_b", "name": "ping", "input": {}}),
    ));
    events.push(a_delta(
        2,
        json!({"type": "input_json_delta", "partial_json": ""}),
    ));
    events.push(a_block_stop(2));
    events.extend(a_end("tool_use", 30));
    mock.push_rule(Rule::new(Reply::sse(events)).path(A_PATH).once());
    let body = json!({"model": "claude-tools", "stream": true, "tools": [weather_tool()],
                      "messages": user("Weather?")});
    let (_, _, frames) = stream_all(&gw, &body).await;
    assert_stream_invariants(&frames, "claude-tools");
    assert_eq!(deltas(&frames, "content"), "Checking.");
    assert_eq!(
        tool_calls(&frames),
        [
            (
                "toolu_a".to_string(),
                "get_weather".to_string(),
                "{\"city\":\"Paris\"}".to_string()
            ),
            ("toolu_b".to_string(), "ping".to_string(), "{}".to_string())
        ]
    );
    assert_eq!(finish_reasons(&frames), ["tool_calls"]);
    assert_eq!(frames.last(), Some(&Frame::Done));

    let events = openai::responses_function_call_stream_events(
        "resp_tools",
        "gpt-tools",
        "call_77",
        "get_weather",
        &["{\"ci", "ty\":\"Rome\"}"],
        5,
        6,
    );
    mock.push_rule(Rule::new(Reply::sse(events)).path(O_PATH).once());
    let body = json!({"model": "gpt-tools", "stream": true, "tools": [weather_tool()],
                      "messages": user("Weather?")});
    let (_, _, frames) = stream_all(&gw, &body).await;
    assert_stream_invariants(&frames, "gpt-tools");
    assert_eq!(
        tool_calls(&frames),
        [(
            "call_77".to_string(),
            "get_weather".to_string(),
            "{\"city\":\"Rome\"}".to_string()
        )]
    );
    assert_eq!(finish_reasons(&frames), ["tool_calls"]);
    assert_eq!(frames.last(), Some(&Frame::Done));
}

// ---------------------------------------------------------------------------------------------
// 4. Keep-alive
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_comments_fill_upstream_silence_after_the_first_event_only() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        json!({"models": [{"id": "claude-ka", "type": "anthropic", "reasoning": "off"}],
               "timing": {"sse_keepalive_s": 1}}),
    )
    .await;
    let text = "keep me alive please";
    let events = anthropic::text_stream_events("msg_ka", "claude-ka", text, 3, 4, None);
    let sse = |evs: &[SseEventSpec]| String::from_utf8(encode_events(evs, false)).unwrap();
    // Upstream: headers and an SSE comment, 1.8 s of silence before the first event; then
    // message_start..first text delta, 1.8 s of silence, the rest.
    let gap = 1800;
    mock.push_rule(
        Rule::new(Reply::raw(
            vec![
                ": upstream warming up\n\n".to_string(),
                sse(&events[..4]),
                sse(&events[4..]),
            ],
            gap,
        ))
        .path(A_PATH)
        .once(),
    );
    let started = Instant::now();
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-ka", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(2 * gap));

    // Before the first upstream event nothing is committed: the role chunk is the first frame.
    assert_stream_invariants(&frames, "claude-ka");
    let content_at: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Frame::Data(v) if v["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty())))
        .map(|(i, _)| i)
        .collect();
    assert!(content_at.len() >= 2, "{frames:?}");
    let comments: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Frame::Comment(_)))
        .map(|(i, _)| i)
        .collect();
    assert!(
        !comments.is_empty(),
        "a keep-alive during the silence: {frames:?}"
    );
    for &i in &comments {
        assert_eq!(frames[i], Frame::Comment("keep-alive".into()));
        assert!(
            i > content_at[0] && i < content_at[1],
            "keep-alives only in the mid-stream silence: {frames:?}"
        );
    }
    // The stream still completes normally.
    assert_eq!(deltas(&frames, "content"), text);
    assert_eq!(finish_reasons(&frames), ["stop"]);
    assert_eq!(frames.last(), Some(&Frame::Done));
}

// ---------------------------------------------------------------------------------------------
// 5. Mid-stream failures
// ---------------------------------------------------------------------------------------------

/// The stream ended with an error chunk: no finish chunk, no `[DONE]`; returns the error object.
fn assert_ends_with_error(frames: &[Frame]) -> Value {
    assert!(!frames.contains(&Frame::Done), "no [DONE]: {frames:?}");
    assert!(
        finish_reasons(frames).is_empty(),
        "no finish chunk: {frames:?}"
    );
    let last = frames
        .last()
        .and_then(Frame::data)
        .expect("a data frame last");
    assert_eq!(
        data_frames(frames)
            .iter()
            .filter(|v| v.get("error").is_some())
            .count(),
        1,
        "exactly one error chunk: {frames:?}"
    );
    let e = last
        .get("error")
        .expect("the last frame is the error chunk");
    assert_eq!(
        last.as_object().unwrap().len(),
        1,
        "only the error envelope: {last}"
    );
    e.clone()
}

#[tokio::test]
async fn mid_stream_upstream_errors_become_an_openai_error_chunk_and_close_the_stream() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        models(&[
            ("claude-mid", "anthropic", "off"),
            ("gpt-mid", "openai", "off"),
        ]),
    )
    .await;

    // Anthropic: two text deltas, then `error`; whatever follows it is ignored.
    let full = anthropic::text_stream_events("msg_mid", "claude-mid", "Partial answer", 5, 5, None);
    let mut events = full[..5].to_vec();
    let expected = a_text_of(&events);
    events.push(a_error("overloaded_error", "Overloaded"));
    events.extend(full[5..].iter().cloned());
    mock.push_rule(Rule::new(Reply::sse(events)).path(A_PATH).once());
    let (s, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-mid", "stream": true, "stream_options": {"include_usage": true},
                "messages": user("hi")}),
    )
    .await;
    assert_eq!(s, 200);
    assert_stream_invariants(&frames, "claude-mid");
    assert_eq!(deltas(&frames, "content"), expected);
    let e = assert_ends_with_error(&frames);
    assert_eq!(
        e,
        json!({"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"})
    );
    assert!(
        data_frames(&frames)
            .iter()
            .all(|c| !c["choices"].as_array().is_some_and(Vec::is_empty)),
        "no usage chunk after an error"
    );

    // Responses: two text deltas, then response.failed.
    let full = openai::responses_text_stream_events(
        "resp_mid",
        "gpt-mid",
        "Partial answer here",
        5,
        5,
        None,
    );
    let mut events = full[..6].to_vec();
    let expected = r_text_of(&events);
    events.push(r_event(json!({
        "type": "response.failed", "sequence_number": 6,
        "response": {"id": "resp_mid", "object": "response", "created_at": 1_764_158_400,
                     "model": "gpt-mid", "status": "failed", "output": [], "usage": null,
                     "error": {"code": "server_error", "message": "The model crashed"}}
    })));
    mock.push_rule(Rule::new(Reply::sse(events)).path(O_PATH).once());
    let (s, _, frames) = stream_all(
        &gw,
        &json!({"model": "gpt-mid", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(s, 200);
    assert_stream_invariants(&frames, "gpt-mid");
    assert_eq!(deltas(&frames, "content"), expected);
    let e = assert_ends_with_error(&frames);
    assert_eq!(
        e,
        json!({"message": "The model crashed", "type": "server_error", "param": null, "code": "server_error"})
    );

    // Responses `error` event mid-stream, too.
    let mut events = full[..6].to_vec();
    events.push(r_event(json!({"type": "error", "sequence_number": 6,
        "code": "rate_limit_exceeded", "message": "Slow down", "param": null})));
    mock.push_rule(Rule::new(Reply::sse(events)).path(O_PATH).once());
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "gpt-mid", "stream": true, "messages": user("hi")}),
    )
    .await;
    let e = assert_ends_with_error(&frames);
    assert_eq!(e["message"], "Slow down");
    assert_eq!(e["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn upstream_streams_that_end_early_are_reported_as_truncated_never_as_a_stop() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        models(&[
            ("claude-cut", "anthropic", "off"),
            ("gpt-cut", "openai", "off"),
        ]),
    )
    .await;
    let a_full =
        anthropic::text_stream_events("msg_cut", "claude-cut", "Almost finished", 5, 5, None);
    let r_full =
        openai::responses_text_stream_events("resp_cut", "gpt-cut", "Almost finished", 5, 5, None);
    // (model, path, reply, content the client must have seen, error code: a clean end without
    // the terminal event is `stream_truncated`, a broken connection `upstream_error`)
    let cases = [
        (
            "claude-cut",
            A_PATH,
            // Cut in the middle of message_stop.
            Reply::sse(a_full.clone()).sse_options(0, true, false),
            a_text_of(&a_full),
            "stream_truncated",
        ),
        (
            "claude-cut",
            A_PATH,
            // The connection breaks after the second text delta.
            Reply::sse(a_full[..5].to_vec()).aborting(),
            a_text_of(&a_full[..5]),
            "upstream_error",
        ),
        (
            "gpt-cut",
            O_PATH,
            // Cut in the middle of response.completed.
            Reply::sse(r_full.clone()).sse_options(0, true, false),
            r_text_of(&r_full),
            "stream_truncated",
        ),
        (
            "gpt-cut",
            O_PATH,
            Reply::sse(r_full[..6].to_vec()).aborting(),
            r_text_of(&r_full[..6]),
            "upstream_error",
        ),
    ];
    for (model, path, reply, expected, code) in cases {
        mock.push_rule(Rule::new(reply).path(path).once());
        let (_, _, frames) = stream_all(
            &gw,
            &json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                    "messages": user("hi")}),
        )
        .await;
        assert_stream_invariants(&frames, model);
        assert_eq!(deltas(&frames, "content"), expected, "{model}");
        let e = assert_ends_with_error(&frames);
        assert_eq!(e["type"], "server_error", "{model}: {e}");
        assert_eq!(e["code"], code, "{model}: {e}");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("(request id: ")),
            "{e}"
        );
    }
    // Still serving.
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-cut", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(frames.last(), Some(&Frame::Done));
}

// ---------------------------------------------------------------------------------------------
// 6. An error as the very first upstream event
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_error_as_the_first_upstream_event_is_a_proper_http_error() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        models(&[
            ("claude-first", "anthropic", "off"),
            ("gpt-first", "openai", "off"),
        ]),
    )
    .await;
    let cases = [
        (
            "claude-first",
            A_PATH,
            vec![a_error("overloaded_error", "Overloaded")],
            503,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}}),
        ),
        (
            "claude-first",
            A_PATH,
            vec![a_error("rate_limit_error", "Too many requests")],
            429,
            json!({"error": {"message": "Too many requests", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}}),
        ),
        (
            "gpt-first",
            O_PATH,
            vec![r_event(
                json!({"type": "error", "sequence_number": 0, "code": "rate_limit_exceeded", "message": "Slow down", "param": null}),
            )],
            429,
            json!({"error": {"message": "Slow down", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}}),
        ),
    ];
    for (model, path, events, status, body) in cases {
        mock.push_rule(Rule::new(Reply::sse(events)).path(path).once());
        let (s, h, b) = post(
            &gw.url(CHAT),
            &json!({"model": model, "stream": true, "messages": user("hi")}),
            &[],
        )
        .await;
        assert_eq!(s, status, "{model}: {}", String::from_utf8_lossy(&b));
        assert_eq!(
            h["content-type"], "application/json",
            "{model}: not a stream"
        );
        assert_eq!(json(&b), body, "{model}");
    }

    // An upstream 200 whose stream is empty: an HTTP error as well, never an empty success.
    mock.push_rule(Rule::new(Reply::raw(Vec::new(), 0)).path(A_PATH).once());
    let (s, h, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-first", "stream": true, "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(json(&b)["error"]["type"], "server_error");
}

// ---------------------------------------------------------------------------------------------
// 7. Thinking round trip
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn thinking_blocks_round_trip_through_the_gateway() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, models(&[("claude-think", "anthropic", "high")])).await;

    // Turn 1: thinking (two deltas + signature), text, a tool call.
    let mut events = vec![a_start("msg_think", 40, 0, 0)];
    events.push(a_block_start(
        0,
        json!({"type": "thinking", "thinking": "", "signature": ""}),
    ));
    events.push(a_delta(
        0,
        json!({"type": "thinking_delta", "thinking": "I need the "}),
    ));
    events.push(a_delta(
        0,
        json!({"type": "thinking_delta", "thinking": "weather 🌦."}),
    ));
    events.push(a_delta(
        0,
        json!({"type": "signature_delta", "signature": "EqSig-123=="}),
    ));
    events.push(a_block_stop(0));
    events.extend(a_text_block(1, &["Let me check."]));
    events.push(a_block_start(
        2,
        json!({"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {}}),
    ));
    for p in ["", "{\"city\":", "\"Paris\"}"] {
        events.push(a_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": p}),
        ));
    }
    events.push(a_block_stop(2));
    events.extend(a_end("tool_use", 50));
    mock.push_rule(Rule::new(Reply::sse(events)).path(A_PATH).once());
    let first_user = json!({"role": "user", "content": "Weather in Paris?"});
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-think", "stream": true, "tools": [weather_tool()],
                "messages": [first_user]}),
    )
    .await;
    let up = mock.last_llm_request().unwrap();
    let up_body = up.json.clone().unwrap();
    assert_eq!(
        up_body["thinking"],
        json!({"type": "enabled", "budget_tokens": 24576})
    );
    assert!(
        up.header("anthropic-beta")
            .is_some_and(|b| b.contains("interleaved-thinking-2025-05-14"))
    );
    assert_stream_invariants(&frames, "claude-think");
    let reasoning_chunks = data_frames(&frames)
        .iter()
        .filter(|v| v["choices"][0]["delta"].get("reasoning_content").is_some())
        .count();
    assert_eq!(
        reasoning_chunks, 2,
        "one reasoning delta per thinking delta"
    );
    assert_eq!(
        deltas(&frames, "reasoning_content"),
        "I need the weather 🌦."
    );
    let blocks: Vec<&Value> = data_frames(&frames)
        .into_iter()
        .filter_map(|v| v["choices"][0]["delta"].get("thinking_blocks"))
        .collect();
    assert_eq!(blocks.len(), 1, "one thinking_blocks chunk");
    let thinking_blocks = blocks[0].clone();
    assert_eq!(
        thinking_blocks,
        json!([{"type": "thinking", "thinking": "I need the weather 🌦.", "signature": "EqSig-123=="}])
    );
    assert_eq!(deltas(&frames, "content"), "Let me check.");
    let calls = tool_calls(&frames);
    assert_eq!(calls.len(), 1);
    let (id, name, arguments) = calls[0].clone();
    assert_eq!(finish_reasons(&frames), ["tool_calls"]);

    // Turn 2: the assistant turn comes back with its thinking_blocks, plus the tool result.
    let assistant = |with_thinking: bool| {
        let mut m = json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]});
        if with_thinking {
            m["thinking_blocks"] = thinking_blocks.clone();
        }
        m
    };
    let tool_result = json!({"role": "tool", "tool_call_id": id, "content": "18C and sunny"});
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-think", "tools": [weather_tool()],
                "messages": [first_user, assistant(true), tool_result]}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let up = upstream_json(&mock);
    assert_eq!(up["thinking"]["type"], "enabled", "{up}");
    assert_eq!(
        up["messages"][1],
        json!({"role": "assistant", "content": [
            thinking_blocks[0],
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {"city": "Paris"}}]}),
        "the thinking block is replayed first and unchanged"
    );
    assert_eq!(
        up["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_w1", "content": "18C and sunny"}]})
    );
    let v = json(&b);
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        anthropic::MOCK_THINKING
    );
    assert_eq!(
        v["choices"][0]["message"]["thinking_blocks"],
        json!([{"type": "thinking", "thinking": anthropic::MOCK_THINKING, "signature": anthropic::MOCK_SIGNATURE}])
    );

    // Turn 2 without thinking_blocks: thinking is dropped for this request (§5.5).
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-think", "tools": [weather_tool()],
                "messages": [first_user, assistant(false), tool_result]}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let up = mock.last_llm_request().unwrap();
    let up_body = up.json.clone().unwrap();
    assert!(up_body.get("thinking").is_none(), "{up_body}");
    assert!(
        up.header("anthropic-beta")
            .is_none_or(|b| !b.contains("interleaved-thinking")),
        "no interleaved-thinking beta without thinking"
    );
    assert_eq!(up_body["messages"][1]["content"][0]["type"], "text");
    assert!(
        json(&b)["choices"][0]["message"]
            .get("reasoning_content")
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Request translation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_requests_are_translated_as_the_upstream_accepts_them() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, models(&[("claude-req", "anthropic", "auto")])).await;
    let schema = json!({"type": "object", "properties": {"warmer": {"type": "string"}}, "required": ["warmer"]});
    let call = |id: &str, city: &str| {
        json!({"id": id, "type": "function",
               "function": {"name": "get_weather", "arguments": format!("{{\"city\":\"{city}\"}}")}})
    };
    let req = json!({
        "model": "claude-req", "max_completion_tokens": 300, "stop": ["END", "  "],
        "tools": [weather_tool()], "parallel_tool_calls": false,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}},
        "presence_penalty": 0.5, "seed": 7,
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}}]},
            {"role": "assistant", "content": "", "tool_calls": [call("call_1", "Paris"), call("call_2", "Rome")]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
            {"role": "user", "content": "Which is warmer?"}
        ]
    });
    let (s, _, b) = post(&gw.url(CHAT), &req, &[]).await;
    assert_eq!(
        s,
        200,
        "the mock accepted it: {}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(json(&b)["choices"][0]["message"]["content"], MOCK_TEXT);
    let up = mock.last_llm_request().unwrap();
    assert_eq!(up.path, "/api/llm/a/v1/messages");
    let up = up.json.unwrap();
    assert_eq!(
        up["system"],
        json!([{"type": "text", "text": PROMPT}, {"type": "text", "text": "Be terse."},
               {"type": "text", "text": "Answer in French."}])
    );
    assert_eq!(
        up["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
                {"type": "text", "text": "Which is warmer?"}]}
        ]),
        "parallel tool results merged into one user turn, results first"
    );
    assert_eq!(
        up["tools"],
        json!([{"name": "get_weather", "description": "Weather", "input_schema":
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(
        up["tool_choice"],
        json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
    );
    assert_eq!(up["stop_sequences"], json!(["END"]));
    assert_eq!(
        up["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    assert_eq!(up["max_tokens"], 300);
    assert_eq!(up["model"], "claude-req");
    for gone in [
        "thinking",
        "response_format",
        "stop",
        "max_completion_tokens",
        "parallel_tool_calls",
        "presence_penalty",
        "seed",
        "n",
    ] {
        assert!(up.get(gone).is_none(), "{gone} is not sent: {up}");
    }
    // A non-streaming client: the call streams upstream and the gateway assembles the answer.
    assert_eq!(up["stream"], true);

    // n = 2: 400 naming `n`, nothing sent upstream; the server keeps serving.
    let before = mock.llm_requests().len();
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-req", "n": 2, "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 400);
    let e = json(&b);
    assert_eq!(e["error"]["param"], "n");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"].as_str().unwrap().starts_with("n:"),
        "{e}"
    );
    assert_eq!(mock.llm_requests().len(), before);
    let (s, _, _) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-req", "n": 1, "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 200);

    // Level auto: reasoning_effort → a thinking budget, max_tokens raised by the rule, sampling
    // parameters thinking forbids dropped.
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-req", "reasoning_effort": "minimal", "max_completion_tokens": 500,
                "temperature": 0.3, "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let up = upstream_json(&mock);
    assert_eq!(
        up["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(up["max_tokens"], 1024 + 500);
    assert!(up.get("temperature").is_none());
    assert!(up.get("reasoning_effort").is_none());
    assert_eq!(
        json(&b)["choices"][0]["message"]["reasoning_content"],
        anthropic::MOCK_THINKING
    );

    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-req", "reasoning_effort": "xhigh", "max_completion_tokens": 1000,
                "stream": true, "messages": user("hi")}),
    )
    .await;
    let up = upstream_json(&mock);
    assert_eq!(
        up["thinking"],
        json!({"type": "enabled", "budget_tokens": 2 * 24576})
    );
    assert_eq!(up["max_tokens"], 2 * 24576 + 1000);
    assert_eq!(up["stream"], true);
    assert_eq!(
        deltas(&frames, "reasoning_content"),
        anthropic::MOCK_THINKING
    );
    assert_eq!(deltas(&frames, "content"), MOCK_TEXT);
    assert_eq!(frames.last(), Some(&Frame::Done));
}

#[tokio::test]
async fn responses_requests_are_translated_as_the_upstream_accepts_them() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, models(&[("gpt-req", "openai", "auto")])).await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}});
    let lookup = json!({"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true}});
    let req = json!({
        "model": "gpt-req", "max_tokens": 5, "stop": "END", "temperature": 0.2,
        "reasoning_effort": "low", "seed": 3, "stream_options": {"include_usage": true},
        "tools": [weather_tool(), lookup],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}},
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "And tomorrow?"}
        ]
    });
    let (s, _, b) = post(&gw.url(CHAT), &req, &[]).await;
    assert_eq!(
        s,
        200,
        "the mock accepted it: {}",
        String::from_utf8_lossy(&b)
    );
    let v = json(&b);
    assert_eq!(v["choices"][0]["message"]["content"], MOCK_TEXT);
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        openai::MOCK_REASONING_SUMMARY
    );
    let up = mock.last_llm_request().unwrap();
    assert_eq!(up.path, "/api/llm/o/v1/responses");
    let up = up.json.unwrap();
    assert_eq!(up["model"], "gpt-req");
    assert_eq!(
        up["instructions"],
        format!("{PROMPT}Be terse.\n\nAnswer in French.")
    );
    assert_eq!(up["store"], false);
    assert_eq!(up["max_output_tokens"], 16, "raised to the minimum of 16");
    assert_eq!(up["temperature"], 0.2);
    assert_eq!(
        up["tools"],
        json!([
            {"type": "function", "name": "get_weather", "description": "Weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
             "strict": false},
            {"type": "function", "name": "lookup",
             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true}
        ]),
        "flattened, strict always explicit"
    );
    assert_eq!(
        up["tool_choice"],
        json!({"type": "function", "name": "get_weather"})
    );
    assert_eq!(
        up["text"],
        json!({"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": true}})
    );
    assert_eq!(up["reasoning"], json!({"effort": "low", "summary": "auto"}));
    assert_eq!(
        up["input"],
        json!([
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "low"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]}
        ])
    );
    for gone in [
        "messages",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "stream_options",
        "response_format",
        "reasoning_effort",
        "n",
    ] {
        assert!(up.get(gone).is_none(), "{gone} is not sent: {up}");
    }

    // n = 2: 400 naming `n`; still serving afterwards.
    let before = mock.llm_requests().len();
    let (s, _, b) = post(
        &gw.url(CHAT),
        &json!({"model": "gpt-req", "n": 2, "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(json(&b)["error"]["param"], "n");
    assert_eq!(mock.llm_requests().len(), before);
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "gpt-req", "max_completion_tokens": 2000, "max_tokens": 5, "stream": true,
                "messages": user("hi")}),
    )
    .await;
    let up = upstream_json(&mock);
    assert_eq!(up["stream"], true);
    assert_eq!(up["max_output_tokens"], 2000, "max_completion_tokens wins");
    assert_eq!(deltas(&frames, "content"), MOCK_TEXT);
    assert_eq!(frames.last(), Some(&Frame::Done));
}

// ---------------------------------------------------------------------------------------------
// 9. Usage reaches the metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn usage_of_translated_streams_and_replies_reaches_the_token_metrics() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        models(&[
            ("claude-metrics-stream", "anthropic", "off"),
            ("claude-metrics-reply", "anthropic", "off"),
            ("claude-metrics-cut", "anthropic", "off"),
            ("gpt-metrics-stream", "openai", "off"),
            ("gpt-metrics-reply", "openai", "off"),
        ]),
    )
    .await;

    // Anthropic stream: usage from message_start, output replaced by message_delta.
    let mut events = vec![a_start("msg_m1", 11, 100, 5)];
    events.extend(a_text_block(0, &["counted"]));
    events.extend(a_end("end_turn", 42));
    mock.push_rule(Rule::new(Reply::sse(events)).path(A_PATH).once());
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-metrics-stream", "stream": true,
                "stream_options": {"include_usage": true}, "messages": user("hi")}),
    )
    .await;
    let data = data_frames(&frames);
    assert_eq!(
        data.last().unwrap()["usage"],
        json!({"prompt_tokens": 116, "completion_tokens": 42, "total_tokens": 158,
               "prompt_tokens_details": {"cached_tokens": 100},
               "completion_tokens_details": {"reasoning_tokens": 0},
               "cache_creation_input_tokens": 5})
    );
    wait_metric(&gw, "claude-metrics-stream", "output", 42).await;
    wait_metric(&gw, "claude-metrics-stream", "input", 11).await;
    wait_metric(&gw, "claude-metrics-stream", "cache_read", 100).await;
    wait_metric(&gw, "claude-metrics-stream", "cache_write", 5).await;

    // Anthropic reply.
    let reply = anthropic::message_json(
        "msg_m2",
        "claude-metrics-reply",
        vec![json!({"type": "text", "text": "counted"})],
        "end_turn",
        20,
        77,
    );
    mock.push_rule(Rule::new(Reply::json(200, reply)).path(A_PATH).once());
    let (s, _, _) = post(
        &gw.url(CHAT),
        &json!({"model": "claude-metrics-reply", "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    wait_metric(&gw, "claude-metrics-reply", "output", 77).await;
    wait_metric(&gw, "claude-metrics-reply", "input", 20).await;

    // An Anthropic stream cut short after message_delta: what was seen is counted.
    let mut events = vec![a_start("msg_m3", 9, 0, 0)];
    events.extend(a_text_block(0, &["cut ", "short"]));
    events.extend(a_end("end_turn", 31));
    mock.push_rule(
        Rule::new(Reply::sse(events).sse_options(0, true, false))
            .path(A_PATH)
            .once(),
    );
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "claude-metrics-cut", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(assert_ends_with_error(&frames)["code"], "stream_truncated");
    wait_metric(&gw, "claude-metrics-cut", "output", 31).await;
    wait_metric(&gw, "claude-metrics-cut", "input", 9).await;

    // Responses stream: usage from response.completed.
    let events = openai::responses_text_stream_events(
        "resp_m1",
        "gpt-metrics-stream",
        "counted",
        50,
        13,
        None,
    );
    mock.push_rule(Rule::new(Reply::sse(events)).path(O_PATH).once());
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "gpt-metrics-stream", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(frames.last(), Some(&Frame::Done));
    wait_metric(&gw, "gpt-metrics-stream", "output", 13).await;
    wait_metric(&gw, "gpt-metrics-stream", "input", 50).await;

    // Responses reply with cached input.
    let reply = json!({
        "id": "resp_m2", "object": "response", "created_at": 1_764_158_400, "model": "gpt-metrics-reply",
        "status": "completed",
        "output": [{"type": "message", "id": "msg_x", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "counted", "annotations": []}]}],
        "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 256},
                  "output_tokens": 21, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 321}
    });
    mock.push_rule(Rule::new(Reply::json(200, reply)).path(O_PATH).once());
    let (s, _, _) = post(
        &gw.url(CHAT),
        &json!({"model": "gpt-metrics-reply", "messages": user("hi")}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    wait_metric(&gw, "gpt-metrics-reply", "output", 21).await;
    wait_metric(&gw, "gpt-metrics-reply", "input", 44).await;
    wait_metric(&gw, "gpt-metrics-reply", "cache_read", 256).await;
}

// ---------------------------------------------------------------------------------------------
// 10. Client disconnects
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_leaves_a_translated_stream_cancels_the_upstream_stream() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(
        &mock,
        models(&[
            ("claude-metrics-gone", "anthropic", "off"),
            ("gpt-gone", "openai", "off"),
        ]),
    )
    .await;

    let mut events = vec![a_start("msg_gone", 17, 0, 0)];
    events.extend(a_text_block(0, &["first ", "words ", "and more"]));
    // Upstream stalls after the second text delta (the stream is still open).
    events.truncate(4);
    mock.push_rule(
        Rule::new(Reply::sse(events.clone()).hanging_after())
            .path(A_PATH)
            .once(),
    );
    let resp = open(
        &gw,
        &json!({"model": "claude-metrics-gone", "stream": true, "messages": user("hi")}),
    )
    .await;
    let mut reader = Reader::new(resp);
    read_until_content(&mut reader, &a_text_of(&events)).await;
    assert_eq!(mock.cancelled_streams(), 0);
    drop(reader);
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.cancelled_streams() == 1)
            .await,
        "the upstream stream is cancelled when the client leaves"
    );
    // What was seen before the client left is accounted.
    wait_metric(&gw, "claude-metrics-gone", "input", 17).await;

    let events =
        openai::responses_text_stream_events("resp_gone", "gpt-gone", "bye bye now", 5, 5, None);
    let sent = events[..5].to_vec();
    mock.push_rule(
        Rule::new(Reply::sse(sent.clone()).hanging_after())
            .path(O_PATH)
            .once(),
    );
    let resp = open(
        &gw,
        &json!({"model": "gpt-gone", "stream": true, "messages": user("hi")}),
    )
    .await;
    let mut reader = Reader::new(resp);
    read_until_content(&mut reader, &r_text_of(&sent)).await;
    drop(reader);
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.cancelled_streams() == 2)
            .await,
        "the upstream stream is cancelled when the client leaves"
    );

    // A client that gives up before the first upstream event: nothing was committed to it (no
    // headers, no keep-alive), and the upstream call is dropped as well.
    mock.push_rule(
        Rule::new(Reply::raw(vec![": still thinking\n\n".to_string()], 0).hanging_after())
            .path(A_PATH)
            .once(),
    );
    let gave_up = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .no_proxy()
        .build()
        .unwrap()
        .post(gw.url(CHAT))
        .json(&json!({"model": "claude-metrics-gone", "stream": true, "messages": user("hi")}))
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "no response before the first upstream event: {gave_up:?}"
    );
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.cancelled_streams() == 3)
            .await,
        "the upstream stream is cancelled when the client leaves before the first event"
    );
    assert!(mock.wait_idle(Duration::from_secs(5)).await);

    // Still serving.
    let (_, _, frames) = stream_all(
        &gw,
        &json!({"model": "gpt-gone", "stream": true, "messages": user("hi")}),
    )
    .await;
    assert_eq!(frames.last(), Some(&Frame::Done));
}
