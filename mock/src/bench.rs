//! Bench mode: a fast, predictable upstream for `droid2api-bench`.
//!
//! The default mock is built to catch bugs: it records every request, validates bodies the way
//! the real services do and writes SSE in awkward pieces with small pauses. All of that costs
//! time and would make the mock, not the gateway, the thing measured. In bench mode the three
//! LLM routes are answered by this module instead:
//!
//! * a fixed response delay (`delay_ms`) before the headers, for streams and whole replies;
//! * streams of `stream_deltas` content deltas, the k-th written `k × stream_interval_ms`
//!   after the headers, **one event per body chunk** (never split);
//! * realistic replies with usage blocks for Anthropic Messages, Responses and Chat
//!   Completions; every content delta carries the marker [`MARKER`] once, so a client can count
//!   the content frames that reached it whatever format the gateway translated them into;
//! * no recording, cheap header checks (credential, `x-factory-client`, content type and the
//!   Anthropic `x-api-key` / `anthropic-version`), a body parse that only extracts `model`,
//!   `stream` and `stream_options`;
//! * per-key behaviour for pool scenarios: a bearer starting with `cool_prefix` gets 429 with
//!   `Retry-After: 3600` (it cools on first use and stays cooling), one starting with
//!   `ban_prefix` gets 402;
//! * `GET /v1/models` with a static list: the rig's floor for a request that needs no upstream.
//!
//! Everything else (WorkOS, balance, count_tokens, unknown paths) falls through to the normal
//! mock. Settings can change at run time through `POST /_mock/bench`; counters are read with
//! `GET /_mock/bench`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::sse::StreamGuard;
use crate::state::Shared;

/// Appears exactly once in every content delta (and in no other event of a stream).
pub const MARKER: &str = "Zq";
/// Bearer prefix of the keys that answer 429 `Retry-After: 3600` by default.
pub const DEFAULT_COOL_PREFIX: &str = "fk-cool-";
/// Bearer prefix of the keys that answer 402 by default.
pub const DEFAULT_BAN_PREFIX: &str = "fk-ban-";
/// `Retry-After` of a cooling key's 429, in seconds.
pub const COOL_RETRY_AFTER_S: u64 = 3600;

/// Bench-mode settings (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchOptions {
    /// Pause before the response headers, in ms.
    pub delay_ms: u64,
    /// Content deltas per stream.
    pub stream_deltas: u32,
    /// Pause between two content deltas, in ms (0 writes them back to back).
    pub stream_interval_ms: u64,
    /// Bearer prefix answering 429 with `Retry-After: 3600`.
    pub cool_prefix: String,
    /// Bearer prefix answering 402.
    pub ban_prefix: String,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            delay_ms: 0,
            stream_deltas: 64,
            stream_interval_ms: 20,
            cool_prefix: DEFAULT_COOL_PREFIX.into(),
            ban_prefix: DEFAULT_BAN_PREFIX.into(),
        }
    }
}

/// The text of the k-th content delta (k from 1): the marker, a number, a word.
pub fn delta_text(k: u32) -> String {
    format!("{MARKER}{k:04} lorem ")
}

/// Live bench settings and counters.
#[derive(Debug)]
pub(crate) struct BenchState {
    delay_ms: AtomicU64,
    stream_deltas: AtomicU32,
    stream_interval_ms: AtomicU64,
    cool_prefix: String,
    ban_prefix: String,
    /// LLM requests answered (any status).
    requests: AtomicU64,
    /// 429s given to cooling keys.
    cooled: AtomicU64,
    /// 402s given to banned keys.
    banned: AtomicU64,
    /// Streams written to their end.
    streams_completed: AtomicU64,
}

/// Settings that `POST /_mock/bench` may change (absent fields stay).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BenchUpdate {
    delay_ms: Option<u64>,
    stream_deltas: Option<u32>,
    stream_interval_ms: Option<u64>,
}

impl BenchState {
    pub fn new(o: &BenchOptions) -> Self {
        Self {
            delay_ms: AtomicU64::new(o.delay_ms),
            stream_deltas: AtomicU32::new(o.stream_deltas),
            stream_interval_ms: AtomicU64::new(o.stream_interval_ms),
            cool_prefix: o.cool_prefix.clone(),
            ban_prefix: o.ban_prefix.clone(),
            requests: AtomicU64::new(0),
            cooled: AtomicU64::new(0),
            banned: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
        }
    }

    pub fn update(&self, u: &BenchUpdate) {
        if let Some(v) = u.delay_ms {
            self.delay_ms.store(v, Ordering::Relaxed);
        }
        if let Some(v) = u.stream_deltas {
            self.stream_deltas.store(v, Ordering::Relaxed);
        }
        if let Some(v) = u.stream_interval_ms {
            self.stream_interval_ms.store(v, Ordering::Relaxed);
        }
    }

    /// The JSON served by `GET /_mock/bench`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "delay_ms": self.delay_ms.load(Ordering::Relaxed),
            "stream_deltas": self.stream_deltas.load(Ordering::Relaxed),
            "stream_interval_ms": self.stream_interval_ms.load(Ordering::Relaxed),
            "cool_prefix": self.cool_prefix,
            "ban_prefix": self.ban_prefix,
            "requests": self.requests.load(Ordering::Relaxed),
            "cooled": self.cooled.load(Ordering::Relaxed),
            "banned": self.banned.load(Ordering::Relaxed),
            "streams_completed": self.streams_completed.load(Ordering::Relaxed),
        })
    }
}

/// The wire format of a bench route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Anthropic,
    Responses,
    Chat,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_bytes(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(format: Format, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match format {
        Format::Anthropic => crate::anthropic::error_body(kind, message),
        Format::Responses | Format::Chat => crate::openai::error_body(kind, message),
    };
    json_bytes(status, body.to_string())
}

/// The cheap header checks; `Ok(bearer)`.
fn check_headers(format: Format, h: &HeaderMap) -> Result<&str, String> {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let bearer = get("authorization")
        .and_then(|a| a.split_once(' '))
        .filter(|(s, c)| s.eq_ignore_ascii_case("bearer") && !c.trim().is_empty())
        .map(|(_, c)| c.trim())
        .ok_or("mock: header `authorization` must be `Bearer <credential>`")?;
    if get("x-factory-client") != Some("cli") {
        return Err("mock: header `x-factory-client` must be `cli`".into());
    }
    let json_ct = get("content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json_ct {
        return Err("mock: header `content-type` must be `application/json`".into());
    }
    if format == Format::Anthropic {
        if get("x-api-key") != Some("placeholder") {
            return Err("mock: header `x-api-key` must be `placeholder`".into());
        }
        if get("anthropic-version").is_none() {
            return Err("mock: missing required header `anthropic-version`".into());
        }
    }
    Ok(bearer)
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The only fields the bench mock reads from a request body.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

/// What a reply needs to know.
struct Ctx {
    format: Format,
    /// The model, as a JSON string literal (quoted and escaped).
    model: String,
    id: String,
    created: u64,
    input_tokens: u64,
    deltas: u32,
    include_usage: bool,
}

pub(crate) async fn anthropic(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    llm(&shared, Format::Anthropic, &headers, &body).await
}

pub(crate) async fn responses(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    llm(&shared, Format::Responses, &headers, &body).await
}

pub(crate) async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    llm(&shared, Format::Chat, &headers, &body).await
}

async fn llm(shared: &Arc<Shared>, format: Format, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(bench) = shared.bench.as_ref() else {
        return error(
            format,
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "mock: not in bench mode",
        );
    };
    bench.requests.fetch_add(1, Ordering::Relaxed);
    let bearer = match check_headers(format, headers) {
        Ok(b) => b,
        Err(msg) => {
            return error(
                format,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &msg,
            );
        }
    };
    if bearer.starts_with(&bench.cool_prefix) {
        bench.cooled.fetch_add(1, Ordering::Relaxed);
        let mut resp = error(
            format,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "mock: this key is rate limited",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(COOL_RETRY_AFTER_S));
        return resp;
    }
    if bearer.starts_with(&bench.ban_prefix) {
        bench.banned.fetch_add(1, Ordering::Relaxed);
        return error(
            format,
            StatusCode::PAYMENT_REQUIRED,
            "invalid_request_error",
            "mock: insufficient balance",
        );
    }
    let req: Request<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                format,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("mock: request body is not valid JSON: {e}"),
            );
        }
    };
    let model = req.model.as_deref().unwrap_or("mock-model");
    let n = shared.next_id();
    let ctx = Ctx {
        format,
        model: serde_json::to_string(model).unwrap_or_else(|_| "\"mock-model\"".into()),
        id: match format {
            Format::Anthropic => format!("msg_bench_{n}"),
            Format::Responses => format!("resp_bench_{n}"),
            Format::Chat => format!("chatcmpl-bench-{n}"),
        },
        created: now_secs(),
        input_tokens: (body.len() as u64 / 4).max(1),
        deltas: bench.stream_deltas.load(Ordering::Relaxed),
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
    };
    let delay = bench.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(delay)) => {}
            () = shared.shutdown_signalled() => {
                return error(format, StatusCode::SERVICE_UNAVAILABLE, "api_error", "mock: shutting down");
            }
        }
    }
    let request_id = match format {
        Format::Anthropic => "request-id",
        Format::Responses | Format::Chat => "x-request-id",
    };
    let mut resp = if req.stream == Some(true) {
        let interval = Duration::from_millis(bench.stream_interval_ms.load(Ordering::Relaxed));
        stream_response(shared.clone(), &ctx, interval)
    } else {
        json_bytes(StatusCode::OK, whole_reply(&ctx))
    };
    if let Ok(v) = HeaderValue::from_str(&format!("req_bench_{n}")) {
        resp.headers_mut().insert(request_id, v);
    }
    resp
}

/// All content deltas joined: the text of a whole reply.
fn full_text(deltas: u32) -> String {
    (1..=deltas).map(delta_text).collect()
}

fn anthropic_usage(input: u64, output: u64) -> String {
    format!(
        r#"{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{output}}}"#
    )
}

fn responses_usage(input: u64, output: u64) -> String {
    format!(
        r#"{{"input_tokens":{input},"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{output},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}"#,
        input + output
    )
}

fn chat_usage(input: u64, output: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{}}}"#,
        input + output
    )
}

fn message_item(id: &str, text: &str, done: bool) -> String {
    if done {
        format!(
            r#"{{"type":"message","id":"msg_{id}","status":"completed","role":"assistant","content":[{{"type":"output_text","text":"{text}","annotations":[]}}]}}"#
        )
    } else {
        format!(
            r#"{{"type":"message","id":"msg_{id}","status":"in_progress","role":"assistant","content":[]}}"#
        )
    }
}

fn response_object(c: &Ctx, status: &str, output: &str, usage: &str) -> String {
    format!(
        r#"{{"id":"{}","object":"response","created_at":{},"model":{},"status":"{status}","output":[{output}],"usage":{usage}}}"#,
        c.id, c.created, c.model
    )
}

/// A non-streaming reply (the texts are plain ASCII: no escaping needed).
fn whole_reply(c: &Ctx) -> String {
    let text = full_text(c.deltas);
    let out = u64::from(c.deltas);
    match c.format {
        Format::Anthropic => format!(
            r#"{{"id":"{}","type":"message","role":"assistant","model":{},"content":[{{"type":"text","text":"{text}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{}}}"#,
            c.id,
            c.model,
            anthropic_usage(c.input_tokens, out)
        ),
        Format::Responses => response_object(
            c,
            "completed",
            &message_item(&c.id, &text, true),
            &responses_usage(c.input_tokens, out),
        ),
        Format::Chat => format!(
            r#"{{"id":"{}","object":"chat.completion","created":{},"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{}}}"#,
            c.id,
            c.created,
            c.model,
            chat_usage(c.input_tokens, out)
        ),
    }
}

fn named(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn data_only(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// Numbers Responses events (`sequence_number` from 0).
struct Seq(u64);

impl Seq {
    fn event(&mut self, ty: &str, rest: &str) -> Bytes {
        let n = self.0;
        self.0 += 1;
        named(
            ty,
            &format!(r#"{{"type":"{ty}","sequence_number":{n},{rest}}}"#),
        )
    }
}

/// The events of one stream: before the first delta, each delta (k from 1), after the last.
pub(crate) struct StreamEvents {
    pub head: Vec<Bytes>,
    pub deltas: Vec<Bytes>,
    pub tail: Vec<Bytes>,
}

fn stream_events(c: &Ctx) -> StreamEvents {
    let out = u64::from(c.deltas);
    let (id, model) = (&c.id, &c.model);
    match c.format {
        Format::Anthropic => StreamEvents {
            head: vec![
                named(
                    "message_start",
                    &format!(
                        r#"{{"type":"message_start","message":{{"id":"{id}","type":"message","role":"assistant","model":{model},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{}}}}}"#,
                        anthropic_usage(c.input_tokens, 1)
                    ),
                ),
                named("ping", r#"{"type":"ping"}"#),
                named(
                    "content_block_start",
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
            ],
            deltas: (1..=c.deltas)
                .map(|k| {
                    named(
                        "content_block_delta",
                        &format!(
                            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{}"}}}}"#,
                            delta_text(k)
                        ),
                    )
                })
                .collect(),
            tail: vec![
                named(
                    "content_block_stop",
                    r#"{"type":"content_block_stop","index":0}"#,
                ),
                named(
                    "message_delta",
                    &format!(
                        r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{out}}}}}"#
                    ),
                ),
                named("message_stop", r#"{"type":"message_stop"}"#),
            ],
        },
        Format::Responses => {
            let mut seq = Seq(0);
            let pending = response_object(c, "in_progress", "", "null");
            let at = format!(r#""item_id":"msg_{id}","output_index":0,"content_index":0"#);
            let head = vec![
                seq.event("response.created", &format!(r#""response":{pending}"#)),
                seq.event("response.in_progress", &format!(r#""response":{pending}"#)),
                seq.event(
                    "response.output_item.added",
                    &format!(
                        r#""output_index":0,"item":{}"#,
                        message_item(id, "", false)
                    ),
                ),
                seq.event(
                    "response.content_part.added",
                    &format!(r#"{at},"part":{{"type":"output_text","text":"","annotations":[]}}"#),
                ),
            ];
            let deltas = (1..=c.deltas)
                .map(|k| {
                    seq.event(
                        "response.output_text.delta",
                        &format!(r#"{at},"delta":"{}""#, delta_text(k)),
                    )
                })
                .collect();
            let text = full_text(c.deltas);
            let done_item = message_item(id, &text, true);
            let tail = vec![
                seq.event(
                    "response.output_text.done",
                    &format!(r#"{at},"text":"{text}""#),
                ),
                seq.event(
                    "response.content_part.done",
                    &format!(
                        r#"{at},"part":{{"type":"output_text","text":"{text}","annotations":[]}}"#
                    ),
                ),
                seq.event(
                    "response.output_item.done",
                    &format!(r#""output_index":0,"item":{done_item}"#),
                ),
                seq.event(
                    "response.completed",
                    &format!(
                        r#""response":{}"#,
                        response_object(
                            c,
                            "completed",
                            &done_item,
                            &responses_usage(c.input_tokens, out)
                        )
                    ),
                ),
            ];
            StreamEvents { head, deltas, tail }
        }
        Format::Chat => {
            let chunk = |delta: &str, finish: &str| {
                data_only(&format!(
                    r#"{{"id":"{id}","object":"chat.completion.chunk","created":{},"model":{model},"choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#,
                    c.created
                ))
            };
            let mut tail = vec![chunk("{}", r#""stop""#)];
            if c.include_usage {
                tail.push(data_only(&format!(
                    r#"{{"id":"{id}","object":"chat.completion.chunk","created":{},"model":{model},"choices":[],"usage":{}}}"#,
                    c.created,
                    chat_usage(c.input_tokens, out)
                )));
            }
            tail.push(data_only("[DONE]"));
            StreamEvents {
                head: vec![chunk(r#"{"role":"assistant","content":""}"#, "null")],
                deltas: (1..=c.deltas)
                    .map(|k| chunk(&format!(r#"{{"content":"{}"}}"#, delta_text(k)), "null"))
                    .collect(),
                tail,
            }
        }
    }
}

/// A paced SSE response: head at once, delta k at `start + k × interval`, tail right after the
/// last delta; one event per body chunk.
fn stream_response(shared: Arc<Shared>, c: &Ctx, interval: Duration) -> Response {
    let ev = stream_events(c);
    struct St {
        guard: StreamGuard,
        shared: Arc<Shared>,
        head: VecDeque<Bytes>,
        deltas: VecDeque<Bytes>,
        tail: VecDeque<Bytes>,
        start: Instant,
        k: u32,
        interval: Duration,
    }
    let st = St {
        guard: StreamGuard::new(shared.clone()),
        shared,
        head: ev.head.into(),
        deltas: ev.deltas.into(),
        tail: ev.tail.into(),
        start: Instant::now(),
        k: 0,
        interval,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(b) = st.head.pop_front() {
            return Some((Ok::<_, std::io::Error>(b), st));
        }
        if let Some(b) = st.deltas.pop_front() {
            st.k += 1;
            if !st.interval.is_zero() {
                let due = st.start + st.interval * st.k;
                let shared = st.shared.clone();
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = shared.shutdown_signalled() => {
                        st.guard.finish();
                        return None;
                    }
                }
            }
            return Some((Ok(b), st));
        }
        if let Some(b) = st.tail.pop_front() {
            return Some((Ok(b), st));
        }
        if let Some(bench) = st.shared.bench.as_ref() {
            bench.streams_completed.fetch_add(1, Ordering::Relaxed);
        }
        st.guard.finish();
        None
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /v1/models`: a static OpenAI-style list of the gateway's built-in models.
pub(crate) async fn models() -> Response {
    const IDS: &[(&str, &str)] = &[
        ("claude-opus-4-6", "anthropic"),
        ("claude-sonnet-4-6", "anthropic"),
        ("claude-opus-4-5-20251101", "anthropic"),
        ("claude-sonnet-4-5-20250929", "anthropic"),
        ("claude-haiku-4-5-20251001", "anthropic"),
        ("gpt-5.4", "openai"),
        ("gpt-5.3-codex", "openai"),
        ("gpt-5.2", "openai"),
        ("glm-5", "fireworks"),
        ("kimi-k2.5", "fireworks"),
    ];
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let body = BODY.get_or_init(|| {
        let data: Vec<serde_json::Value> = IDS
            .iter()
            .map(|(id, owner)| json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": owner}))
            .collect();
        Bytes::from(json!({"object": "list", "data": data}).to_string())
    });
    let mut resp = (StatusCode::OK, body.clone()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(format: Format, deltas: u32, include_usage: bool) -> Ctx {
        Ctx {
            format,
            model: "\"m\\\"x\"".into(),
            id: "id1".into(),
            created: 1,
            input_tokens: 10,
            deltas,
            include_usage,
        }
    }

    fn data_of(event: &Bytes) -> serde_json::Value {
        let text = std::str::from_utf8(event).expect("utf-8");
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line");
        serde_json::from_str(data).expect("JSON data")
    }

    #[test]
    fn every_event_is_valid_json_and_only_deltas_carry_the_marker() {
        for format in [Format::Anthropic, Format::Responses, Format::Chat] {
            let ev = stream_events(&ctx(format, 5, true));
            assert_eq!(ev.deltas.len(), 5);
            for (k, d) in ev.deltas.iter().enumerate() {
                let text = std::str::from_utf8(d).expect("utf-8");
                assert_eq!(text.matches(MARKER).count(), 1, "{text}");
                assert!(text.contains(&delta_text(k as u32 + 1)));
                assert!(text.ends_with("\n\n") && text.matches("\n\n").count() == 1);
                let _ = data_of(d);
            }
            for e in ev.head.iter().chain(&ev.tail) {
                let text = std::str::from_utf8(e).expect("utf-8");
                if text.contains("[DONE]") {
                    continue;
                }
                let v = data_of(e);
                // Only the Responses "done" events repeat the text; they hold no `delta`.
                assert!(!text.contains(MARKER) || !text.contains("delta"), "{text}");
                if format == Format::Responses {
                    assert!(v["sequence_number"].is_u64());
                }
            }
        }
    }

    #[test]
    fn streams_end_with_their_terminal_event_and_usage() {
        let a = stream_events(&ctx(Format::Anthropic, 3, false));
        let last = a.tail.last().expect("tail");
        assert!(std::str::from_utf8(last).is_ok_and(|t| t.contains("message_stop")));
        assert_eq!(
            data_of(&a.tail[1])["usage"]["output_tokens"],
            3,
            "message_delta carries the output tokens"
        );
        let r = stream_events(&ctx(Format::Responses, 3, false));
        let done = data_of(r.tail.last().expect("tail"));
        assert_eq!(done["type"], "response.completed");
        assert_eq!(done["response"]["usage"]["total_tokens"], 13);
        assert_eq!(done["response"]["model"], "m\"x");
        let seqs: Vec<u64> = r
            .head
            .iter()
            .chain(&r.deltas)
            .chain(&r.tail)
            .filter_map(|e| data_of(e)["sequence_number"].as_u64())
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        let c = stream_events(&ctx(Format::Chat, 3, true));
        assert_eq!(c.tail.len(), 3);
        assert_eq!(data_of(&c.tail[1])["usage"]["completion_tokens"], 3);
        assert!(std::str::from_utf8(&c.tail[2]).is_ok_and(|t| t == "data: [DONE]\n\n"));
        assert_eq!(stream_events(&ctx(Format::Chat, 3, false)).tail.len(), 2);
    }

    #[test]
    fn whole_replies_are_valid_json_with_usage() {
        let a: serde_json::Value =
            serde_json::from_str(&whole_reply(&ctx(Format::Anthropic, 4, false))).expect("json");
        assert_eq!(a["usage"]["output_tokens"], 4);
        assert_eq!(a["content"][0]["text"], full_text(4));
        let r: serde_json::Value =
            serde_json::from_str(&whole_reply(&ctx(Format::Responses, 4, false))).expect("json");
        assert_eq!(r["usage"]["input_tokens"], 10);
        assert_eq!(r["output"][0]["content"][0]["text"], full_text(4));
        let c: serde_json::Value =
            serde_json::from_str(&whole_reply(&ctx(Format::Chat, 4, false))).expect("json");
        assert_eq!(c["usage"]["total_tokens"], 14);
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn header_checks_are_cheap_but_real() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer fk-1"));
        h.insert("x-factory-client", HeaderValue::from_static("cli"));
        h.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(check_headers(Format::Responses, &h), Ok("fk-1"));
        assert!(
            check_headers(Format::Anthropic, &h).is_err_and(|e| e.contains("x-api-key")),
            "Anthropic calls need x-api-key"
        );
        h.insert("x-api-key", HeaderValue::from_static("placeholder"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        assert_eq!(check_headers(Format::Anthropic, &h), Ok("fk-1"));
        h.insert("x-factory-client", HeaderValue::from_static("web"));
        assert!(check_headers(Format::Chat, &h).is_err_and(|e| e.contains("x-factory-client")));
    }
}
