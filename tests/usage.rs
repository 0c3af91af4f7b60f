//! Token-usage accounting against a real gateway and the mock upstream: one usage record per
//! client request with the upstream's own usage in all three wire formats (streamed or not),
//! interrupted streams and the chars/4 estimate, failover recorded once, rejected requests with
//! zero tokens, hourly and daily rollups in a non-UTC zone, retention, the usage and balance
//! endpoints with a balance sync against the mock, and no secret in any output.
//!
//! Records are written behind (the store's bounded queue, then its writer): every check first
//! polls the database (read-only) until the expected records are there, for at most a few
//! seconds.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use droid2api::app::App;
use droid2api::store::records::UsageRecord;
use droid2api_mock::{MOCK_TEXT, SseEventSpec, anthropic, encode_events, openai};
use futures_util::StreamExt;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-usage-tests-0123456789";
const ENV_KEY: &str = "fk-usage-env-secret-0000000001";
const API_KEY: &str = "client-access-secret-000000001";
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

// ----- the usage records as stored ---------------------------------------------------------

/// One `usage_records` row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    at: i64,
    hour_start: i64,
    day_start: i64,
    credential: String,
    attempts: i64,
    client: String,
    model: String,
    route: String,
    format: String,
    status: i64,
    /// input, cache_read, cache_write, output, reasoning.
    tokens: [i64; 5],
    estimated: bool,
    complete: bool,
    latency_ms: i64,
    ttfb_ms: Option<i64>,
}

fn open_db(data_dir: &Path) -> Option<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(
        data_dir.join("droid2api.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()
}

fn read_rows(data_dir: &Path) -> Option<Vec<Row>> {
    let conn = open_db(data_dir)?;
    let mut st = conn
        .prepare(
            "SELECT at, hour_start, day_start, credential, attempts, client, model, route,
                upstream_format, status, input_tokens, cache_read_tokens, cache_write_tokens,
                output_tokens, reasoning_tokens, estimated, complete, latency_ms, ttfb_ms
             FROM usage_records ORDER BY seq",
        )
        .ok()?;
    st.query_map([], |r| {
        Ok(Row {
            at: r.get(0)?,
            hour_start: r.get(1)?,
            day_start: r.get(2)?,
            credential: r.get(3)?,
            attempts: r.get(4)?,
            client: r.get(5)?,
            model: r.get(6)?,
            route: r.get(7)?,
            format: r.get(8)?,
            status: r.get(9)?,
            tokens: [r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?],
            estimated: r.get::<_, i64>(15)? != 0,
            complete: r.get::<_, i64>(16)? != 0,
            latency_ms: r.get(17)?,
            ttfb_ms: r.get(18)?,
        })
    })
    .and_then(|rows| rows.collect())
    .ok()
}

/// Every text the store holds about usage and balances (for the secret scan).
fn dump_db(data_dir: &Path) -> String {
    let conn = open_db(data_dir).expect("the database opens");
    let mut out = String::new();
    for q in [
        "SELECT credential || ' ' || client || ' ' || model || ' ' || route || ' ' || upstream_format FROM usage_records",
        "SELECT granularity || ' ' || dim || ' ' || value FROM usage_rollups",
        "SELECT key_id FROM balances",
    ] {
        let mut st = conn.prepare(q).unwrap();
        let lines: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

/// A record to inject through the recorder (which computes its hour and day).
fn record(at: i64, credential: &str, model: &str, status: u16, t: [u64; 5]) -> UsageRecord {
    UsageRecord {
        at,
        hour_start: 0,
        day_start: 0,
        credential: credential.into(),
        attempts: 1,
        client: "anonymous".into(),
        model: model.into(),
        route: "/v1/messages".into(),
        upstream_format: "anthropic".into(),
        status,
        input_tokens: t[0],
        cache_read_tokens: t[1],
        cache_write_tokens: t[2],
        output_tokens: t[3],
        reasoning_tokens: t[4],
        estimated: false,
        complete: true,
        latency_ms: 5,
        ttfb_ms: Some(3),
    }
}

/// The contract's token object `T`.
fn tokens_t(t: [i64; 5]) -> Value {
    json!({
        "input_tokens": t[0],
        "cache_read_tokens": t[1],
        "cache_write_tokens": t[2],
        "output_tokens": t[3],
        "reasoning_tokens": t[4],
        "total_tokens": t[0] + t[1] + t[2] + t[3],
    })
}

fn sum_tokens<'a>(rows: impl IntoIterator<Item = &'a Row>) -> [i64; 5] {
    let mut s = [0; 5];
    for r in rows {
        for (a, b) in s.iter_mut().zip(r.tokens) {
            *a += b;
        }
    }
    s
}

/// Fields every record has whatever happened.
fn assert_sane(r: &Row, started: i64) {
    let now = now_ms();
    assert!(r.at >= started - 1000 && r.at <= now, "{r:?}");
    assert!(r.day_start <= r.hour_start && r.hour_start <= r.at, "{r:?}");
    let ttfb = r.ttfb_ms.expect("ttfb recorded");
    assert!(
        r.latency_ms >= ttfb && ttfb >= 0,
        "latency ≥ ttfb ≥ 0: {r:?}"
    );
    assert!(r.latency_ms < 30_000, "{r:?}");
}

// ----- the test context -----------------------------------------------------------------------

/// A gateway, its mock, and every response body seen (to scan for secrets).
struct Ctx {
    mock: MockUpstream,
    gw: Gateway,
    seen: Mutex<Vec<String>>,
    started: i64,
}

impl Ctx {
    async fn start(mock: MockUpstream, b: Builder) -> Ctx {
        let started = now_ms();
        let gw = b.env("ADMIN_ACCESS_KEY", ADMIN_KEY).start().await;
        Ctx {
            mock,
            gw,
            seen: Mutex::new(Vec::new()),
            started,
        }
    }

    fn app(&self) -> &App {
        &self.gw.running.as_ref().unwrap().app
    }

    fn keep(&self, body: &[u8]) {
        self.seen
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(body).into_owned());
    }

    /// Sends a request and reads its body to the end (or to where it broke off).
    async fn send_req(&self, req: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let mut s = resp.bytes_stream();
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => body.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        self.keep(&body);
        (status, body)
    }

    async fn send(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let mut req = client().post(self.gw.url(path)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send_req(req).await
    }

    async fn send_raw(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let mut req = client()
            .post(self.gw.url(path))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send_req(req).await
    }

    /// An admin call with the admin key: (status, JSON body).
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = client()
            .request(method.parse().unwrap(), self.gw.url(path))
            .header("x-admin-key", ADMIN_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (status, bytes) = self.send_req(req).await;
        (status, json(&bytes))
    }

    /// A successful admin call's `data`.
    async fn data(&self, method: &str, path: &str) -> Value {
        let (status, v) = self.admin(method, path, None).await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        assert_eq!(v["success"], true, "{v}");
        v["data"].clone()
    }

    /// A 400 answer of the admin API; returns its message.
    async fn bad_request(&self, method: &str, path: &str) -> String {
        let (status, v) = self.admin(method, path, None).await;
        assert_eq!(status, 400, "{method} {path}: {v}");
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }

    fn rows(&self) -> Vec<Row> {
        read_rows(&self.gw.data_dir).unwrap_or_default()
    }

    /// Waits (≤ 3 s) until at least `n` records are stored; then there must be exactly `n`.
    async fn wait_rows(&self, n: usize) -> Vec<Row> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let rows = self.rows();
            if rows.len() >= n {
                assert_eq!(rows.len(), n, "exactly {n} records: {rows:#?}");
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{n} records expected, {} stored: {rows:#?}",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn inject(&self, r: UsageRecord) {
        self.app().recorder.record(r);
    }

    /// Adds a pool key through the admin API; returns its id.
    async fn add_key(&self, key: &str, group: Option<&str>) -> String {
        let mut body = json!({"key": key});
        if let Some(g) = group {
            body["poolGroup"] = json!(g);
        }
        let (status, v) = self.admin("POST", "/admin/keys", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v["data"]["id"].as_str().unwrap().to_string()
    }

    /// No response body of the test and nothing in the usage tables holds a secret.
    fn assert_no_secret(&self, secrets: &[&str]) {
        let mut texts = self.seen.lock().unwrap().clone();
        texts.push(dump_db(&self.gw.data_dir));
        assert!(texts.len() > 1);
        for t in &texts {
            for s in secrets {
                assert!(!t.contains(s), "secret {s} in an output: {t}");
            }
        }
    }
}

// ----- scripted upstream replies -----------------------------------------------------------

fn event_type(e: &SseEventSpec) -> String {
    serde_json::from_str::<Value>(&e.data)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

/// Rewrites the JSON of every event whose `type` is `kind`.
fn patch(events: &mut [SseEventSpec], kind: &str, f: impl Fn(&mut Value)) {
    let mut found = false;
    for e in events.iter_mut().filter(|e| event_type(e) == kind) {
        let mut v: Value = serde_json::from_str(&e.data).unwrap();
        f(&mut v);
        e.data = v.to_string();
        found = true;
    }
    assert!(found, "no {kind} event to patch");
}

/// An Anthropic text stream of [`MOCK_TEXT`] with the given `message_start` usage and, when
/// given, `message_delta` usage (else neither `message_delta` nor `message_stop` is sent).
fn anthropic_events(start_usage: Value, delta_usage: Option<Value>) -> Vec<SseEventSpec> {
    let mut events =
        anthropic::text_stream_events("msg_usage", "claude-test", MOCK_TEXT, 0, 0, None);
    patch(&mut events, "message_start", |v| {
        v["message"]["usage"] = start_usage.clone();
    });
    match delta_usage {
        Some(u) => patch(&mut events, "message_delta", |v| v["usage"] = u.clone()),
        None => {
            events.retain(|e| !matches!(event_type(e).as_str(), "message_delta" | "message_stop"))
        }
    }
    events
}

/// A Responses text stream of [`MOCK_TEXT`] whose `response.completed` carries `usage`; the
/// `response.in_progress` event carries a bogus usage that must be ignored.
fn responses_events(usage: Value) -> Vec<SseEventSpec> {
    let mut events =
        openai::responses_text_stream_events("resp_usage", "gpt-test", MOCK_TEXT, 0, 0, None);
    patch(&mut events, "response.completed", |v| {
        v["response"]["usage"] = usage.clone();
    });
    patch(&mut events, "response.in_progress", |v| {
        v["response"]["usage"] = json!({"input_tokens": 99_999, "output_tokens": 99_999});
    });
    events
}

/// A Chat Completions text stream of [`MOCK_TEXT`] whose usage chunk carries `usage`.
fn chat_events(usage: Value) -> Vec<SseEventSpec> {
    let mut events =
        openai::chat_text_stream_events("chatcmpl-usage", "glm-test", MOCK_TEXT, Some((1, 1)));
    let mut found = false;
    for e in events.iter_mut() {
        if let Ok(mut v) = serde_json::from_str::<Value>(&e.data)
            && v.get("usage").is_some_and(|u| !u.is_null())
        {
            v["usage"] = usage.clone();
            e.data = v.to_string();
            found = true;
        }
    }
    assert!(found);
    events
}

fn anthropic_json(usage: Value) -> Value {
    let mut m = anthropic::message_json(
        "msg_usage_json",
        "claude-test",
        vec![json!({"type": "text", "text": "Hi there"})],
        "end_turn",
        0,
        0,
    );
    m["usage"] = usage;
    m
}

fn responses_json(usage: Value) -> Value {
    json!({
        "id": "resp_usage_json", "object": "response", "created_at": 1_790_000_000,
        "model": "gpt-test", "status": "completed",
        "output": [{"type": "message", "id": "msg_r1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi there", "annotations": []}]}],
        "usage": usage,
    })
}

fn chat_json(usage: Value) -> Value {
    json!({
        "id": "chatcmpl-usage-json", "object": "chat.completion", "created": 1_790_000_000,
        "model": "glm-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
                     "finish_reason": "stop"}],
        "usage": usage,
    })
}

fn streaming(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

const ANTHROPIC_UP: &str = "/a/v1/messages";
const RESPONSES_UP: &str = "/o/v1/responses";
const CHAT_UP: &str = "/o/v1/chat/completions";

/// The chars/4 estimate of [`MOCK_TEXT`], rounded up.
fn estimate(text: &str) -> i64 {
    (text.chars().count() as i64 + 3) / 4
}

fn config() -> Value {
    let mut c = models_config("off");
    c["model_redirects"] = json!({"claude-alias": "claude-test"});
    c
}

async fn env_gateway() -> Ctx {
    let mock = MockUpstream::start().await;
    let b = gateway(&mock)
        .env("FACTORY_API_KEY", ENV_KEY)
        .config(config());
    Ctx::start(mock, b).await
}

// ----- 1. usage from each format -------------------------------------------------------------

struct Case {
    name: &'static str,
    path: &'static str,
    upstream: &'static str,
    body: Value,
    reply: Reply,
    model: &'static str,
    format: &'static str,
    tokens: [i64; 5],
}

#[tokio::test]
async fn usage_from_each_format_streamed_and_not() {
    let ctx = env_gateway().await;
    let cases = vec![
        Case {
            name: "messages",
            path: "/v1/messages",
            upstream: ANTHROPIC_UP,
            body: anthropic_body("claude-test"),
            reply: Reply::json(
                200,
                anthropic_json(json!({"input_tokens": 11, "cache_read_input_tokens": 1800,
                    "cache_creation_input_tokens": 1024, "output_tokens": 42})),
            ),
            model: "claude-test",
            format: "anthropic",
            tokens: [11, 1800, 1024, 42, 0],
        },
        Case {
            name: "messages stream (message_start output 1, cumulative message_delta 42)",
            path: "/v1/messages",
            upstream: ANTHROPIC_UP,
            body: streaming(anthropic_body("claude-test")),
            reply: Reply::sse(anthropic_events(
                json!({"input_tokens": 472, "cache_creation_input_tokens": 1024,
                       "cache_read_input_tokens": 1800, "output_tokens": 1}),
                // Cumulative: the input fields repeated must not be added twice.
                Some(
                    json!({"input_tokens": 472, "cache_creation_input_tokens": 1024,
                            "cache_read_input_tokens": 1800, "output_tokens": 42}),
                ),
            )),
            model: "claude-test",
            format: "anthropic",
            tokens: [472, 1800, 1024, 42, 0],
        },
        Case {
            name: "responses",
            path: "/v1/responses",
            upstream: RESPONSES_UP,
            body: responses_body("gpt-test"),
            reply: Reply::json(
                200,
                responses_json(json!({"input_tokens": 1500,
                    "input_tokens_details": {"cached_tokens": 1200}, "output_tokens": 300,
                    "output_tokens_details": {"reasoning_tokens": 100}, "total_tokens": 1800})),
            ),
            model: "gpt-test",
            format: "responses",
            tokens: [300, 1200, 0, 300, 100],
        },
        Case {
            name: "responses stream",
            path: "/v1/responses",
            upstream: RESPONSES_UP,
            body: streaming(responses_body("gpt-test")),
            reply: Reply::sse(responses_events(json!({"input_tokens": 2000,
                "input_tokens_details": {"cached_tokens": 500}, "output_tokens": 77,
                "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 2077}))),
            model: "gpt-test",
            format: "responses",
            tokens: [1500, 500, 0, 77, 20],
        },
        Case {
            name: "common chat",
            path: "/v1/chat/completions",
            upstream: CHAT_UP,
            body: chat_body("glm-test"),
            reply: Reply::json(
                200,
                chat_json(json!({"prompt_tokens": 1820, "completion_tokens": 95,
                    "total_tokens": 1915, "prompt_tokens_details": {"cached_tokens": 1800},
                    "completion_tokens_details": {"reasoning_tokens": 40}})),
            ),
            model: "glm-test",
            format: "chat",
            tokens: [20, 1800, 0, 95, 40],
        },
        Case {
            name: "common chat stream (usage chunk hidden from the client)",
            path: "/v1/chat/completions",
            upstream: CHAT_UP,
            body: streaming(chat_body("glm-test")),
            reply: Reply::sse(chat_events(json!({"prompt_tokens": 100,
                "completion_tokens": 7, "total_tokens": 107,
                "prompt_tokens_details": {"cached_tokens": 60}}))),
            model: "glm-test",
            format: "chat",
            tokens: [40, 60, 0, 7, 0],
        },
        Case {
            name: "chat over anthropic",
            path: "/v1/chat/completions",
            upstream: ANTHROPIC_UP,
            body: chat_body("claude-test"),
            reply: Reply::json(
                200,
                anthropic_json(json!({"input_tokens": 30, "cache_read_input_tokens": 5,
                    "cache_creation_input_tokens": 7, "output_tokens": 9})),
            ),
            model: "claude-test",
            format: "anthropic",
            tokens: [30, 5, 7, 9, 0],
        },
        Case {
            name: "chat stream over anthropic",
            path: "/v1/chat/completions",
            upstream: ANTHROPIC_UP,
            body: json!({"model": "claude-test", "stream": true,
                         "stream_options": {"include_usage": true},
                         "messages": [{"role": "user", "content": "Hello"}]}),
            reply: Reply::sse(anthropic_events(
                json!({"input_tokens": 64, "cache_read_input_tokens": 10, "output_tokens": 1}),
                Some(json!({"output_tokens": 42})),
            )),
            model: "claude-test",
            format: "anthropic",
            tokens: [64, 10, 0, 42, 0],
        },
        Case {
            name: "chat over responses",
            path: "/v1/chat/completions",
            upstream: RESPONSES_UP,
            body: chat_body("gpt-test"),
            reply: Reply::json(
                200,
                responses_json(json!({"input_tokens": 400,
                    "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 50,
                    "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 450})),
            ),
            model: "gpt-test",
            format: "responses",
            tokens: [300, 100, 0, 50, 10],
        },
        Case {
            name: "chat stream over responses",
            path: "/v1/chat/completions",
            upstream: RESPONSES_UP,
            body: streaming(chat_body("gpt-test")),
            reply: Reply::sse(responses_events(json!({"input_tokens": 90,
                "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 33,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}))),
            model: "gpt-test",
            format: "responses",
            tokens: [90, 0, 0, 33, 0],
        },
        Case {
            name: "a redirected alias is recorded under the model id",
            path: "/v1/messages",
            upstream: ANTHROPIC_UP,
            body: anthropic_body("claude-alias"),
            reply: Reply::json(
                200,
                anthropic_json(json!({"input_tokens": 3, "output_tokens": 4})),
            ),
            model: "claude-test",
            format: "anthropic",
            tokens: [3, 0, 0, 4, 0],
        },
    ];
    for c in &cases {
        ctx.mock
            .push_rule(Rule::new(c.reply.clone()).path(c.upstream).once());
        let (status, body) = ctx.send(c.path, &c.body, &[]).await;
        assert_eq!(
            status,
            200,
            "{}: {}",
            c.name,
            String::from_utf8_lossy(&body)
        );
        assert!(
            ctx.mock.rules().is_empty(),
            "{}: scripted reply used",
            c.name
        );
        if c.name.starts_with("common chat stream") {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("[DONE]"), "{text}");
            assert!(
                !text.contains("prompt_tokens"),
                "usage chunk hidden: {text}"
            );
        }
        if c.name == "chat stream over anthropic" {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("\"completion_tokens\":42"), "{text}");
        }
    }
    let rows = ctx.wait_rows(cases.len()).await;
    for (c, r) in cases.iter().zip(&rows) {
        assert_sane(r, ctx.started);
        assert_eq!(r.credential, "env", "{}: {r:?}", c.name);
        assert_eq!(r.attempts, 1, "{}: {r:?}", c.name);
        assert_eq!(r.client, "anonymous", "{}: {r:?}", c.name);
        assert_eq!(r.model, c.model, "{}: {r:?}", c.name);
        assert_eq!(r.route, c.path, "{}: {r:?}", c.name);
        assert_eq!(r.format, c.format, "{}: {r:?}", c.name);
        assert_eq!(r.status, 200, "{}: {r:?}", c.name);
        assert_eq!(r.tokens, c.tokens, "{}: {r:?}", c.name);
        assert!(r.complete && !r.estimated, "{}: {r:?}", c.name);
    }

    // The rollups agree with the records.
    let summary = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(summary["requests"], cases.len());
    assert_eq!(summary["success_rate"], 1.0);
    assert_eq!(summary["tokens"], tokens_t(sum_tokens(&rows)));
    assert_eq!(summary["today"]["requests"], cases.len());
    assert_eq!(summary["today"]["tokens"], tokens_t(sum_tokens(&rows)));
    let mut by_model: BTreeMap<String, Value> = BTreeMap::new();
    for m in ["claude-test", "gpt-test", "glm-test"] {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.model == m).collect();
        by_model.insert(
            m.into(),
            json!({"model": m, "requests": rs.len(), "tokens": tokens_t(sum_tokens(rs))}),
        );
    }
    let got: BTreeMap<String, Value> = summary["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["model"].as_str().unwrap().to_string(), m.clone()))
        .collect();
    assert_eq!(got, by_model);
    ctx.assert_no_secret(&[ENV_KEY]);
}

// ----- 2. interrupted streams ----------------------------------------------------------------

#[tokio::test]
async fn interrupted_streams_keep_what_was_seen() {
    let ctx = env_gateway().await;
    let est = estimate(MOCK_TEXT);
    let expect =
        |name: &str, r: &Row, route: &str, format: &str, tokens: [i64; 5], estimated: bool| {
            assert_eq!(r.route, route, "{name}: {r:?}");
            assert_eq!(r.format, format, "{name}: {r:?}");
            assert_eq!(r.tokens, tokens, "{name}: {r:?}");
            assert_eq!(r.estimated, estimated, "{name}: {r:?}");
            assert!(!r.complete, "{name}: a cut stream is not complete: {r:?}");
            assert_eq!(r.status, 200, "{name}: {r:?}");
            assert_eq!(
                (r.credential.as_str(), r.attempts),
                ("env", 1),
                "{name}: {r:?}"
            );
        };

    // a. Truncated inside message_stop: the cumulative output (42) was seen.
    let events = anthropic_events(
        json!({"input_tokens": 50, "output_tokens": 1}),
        Some(json!({"output_tokens": 42})),
    );
    ctx.mock.push_rule(
        Rule::new(Reply::sse(events).sse_options(0, true, false))
            .path(ANTHROPIC_UP)
            .once(),
    );
    let (s, _) = ctx
        .send(
            "/v1/messages",
            &streaming(anthropic_body("claude-test")),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let rows = ctx.wait_rows(1).await;
    expect(
        "truncated",
        &rows[0],
        "/v1/messages",
        "anthropic",
        [50, 0, 0, 42, 0],
        false,
    );

    // b. No output usage (message_start says 0), text, then the upstream aborts: estimated.
    let events = anthropic_events(json!({"input_tokens": 30, "output_tokens": 0}), None);
    ctx.mock.push_rule(
        Rule::new(Reply::sse(events).aborting())
            .path(ANTHROPIC_UP)
            .once(),
    );
    let (s, _) = ctx
        .send(
            "/v1/messages",
            &streaming(anthropic_body("claude-test")),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let rows = ctx.wait_rows(2).await;
    expect(
        "aborted",
        &rows[1],
        "/v1/messages",
        "anthropic",
        [30, 0, 0, est, 0],
        true,
    );

    // c. Responses cut inside response.completed: no usage at all, output estimated.
    let events = responses_events(json!({"input_tokens": 10, "output_tokens": 5}));
    ctx.mock.push_rule(
        Rule::new(Reply::sse(events).sse_options(0, true, false))
            .path(RESPONSES_UP)
            .once(),
    );
    let (s, _) = ctx
        .send("/v1/responses", &streaming(responses_body("gpt-test")), &[])
        .await;
    assert_eq!(s, 200);
    let rows = ctx.wait_rows(3).await;
    expect(
        "responses truncated",
        &rows[2],
        "/v1/responses",
        "responses",
        [0, 0, 0, est, 0],
        true,
    );

    // d. Common chat cut inside [DONE]: the usage chunk was seen.
    let events = chat_events(json!({"prompt_tokens": 20, "completion_tokens": 6}));
    ctx.mock.push_rule(
        Rule::new(Reply::sse(events).sse_options(0, true, false))
            .path(CHAT_UP)
            .once(),
    );
    let (s, _) = ctx
        .send(
            "/v1/chat/completions",
            &streaming(chat_body("glm-test")),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let rows = ctx.wait_rows(4).await;
    expect(
        "chat truncated",
        &rows[3],
        "/v1/chat/completions",
        "chat",
        [20, 0, 0, 6, 0],
        false,
    );

    // e. Chat over Anthropic, the upstream aborts after message_delta (no message_stop).
    let mut events = anthropic_events(
        json!({"input_tokens": 8, "output_tokens": 1}),
        Some(json!({"output_tokens": 17})),
    );
    events.retain(|e| event_type(e) != "message_stop");
    ctx.mock.push_rule(
        Rule::new(Reply::sse(events).aborting())
            .path(ANTHROPIC_UP)
            .once(),
    );
    let (s, body) = ctx
        .send(
            "/v1/chat/completions",
            &streaming(chat_body("claude-test")),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert!(!String::from_utf8_lossy(&body).contains("[DONE]"));
    let rows = ctx.wait_rows(5).await;
    expect(
        "chat over anthropic aborted",
        &rows[4],
        "/v1/chat/completions",
        "anthropic",
        [8, 0, 0, 17, 0],
        false,
    );

    // f. The client reads what the upstream sent (it then stalls) and goes away.
    let events = anthropic_events(json!({"input_tokens": 25, "output_tokens": 1}), None);
    let sent = encode_events(&events, false).len();
    ctx.mock.push_rule(
        Rule::new(Reply::sse(events).hanging_after())
            .path(ANTHROPIC_UP)
            .once(),
    );
    read_some_then_leave(
        &ctx,
        "/v1/messages",
        &streaming(anthropic_body("claude-test")),
        |got| got.len() >= sent,
    )
    .await;
    assert!(
        ctx.mock
            .wait_until(Duration::from_secs(3), |m| m.cancelled_streams() >= 1)
            .await,
        "the upstream stream is cancelled"
    );
    let rows = ctx.wait_rows(6).await;
    expect(
        "client left",
        &rows[5],
        "/v1/messages",
        "anthropic",
        [25, 0, 0, est, 0],
        true,
    );

    // g. Same on a translated stream (chat over Responses).
    let mut events = responses_events(json!({"input_tokens": 1, "output_tokens": 1}));
    let last_delta = events
        .iter()
        .rposition(|e| event_type(e) == "response.output_text.delta")
        .unwrap();
    events.truncate(last_delta + 1);
    let last_piece: String =
        serde_json::from_str::<Value>(&events[last_delta].data).unwrap()["delta"]
            .as_str()
            .unwrap()
            .to_string();
    ctx.mock.push_rule(
        Rule::new(Reply::sse(events).hanging_after())
            .path(RESPONSES_UP)
            .once(),
    );
    read_some_then_leave(
        &ctx,
        "/v1/chat/completions",
        &streaming(chat_body("gpt-test")),
        |got| String::from_utf8_lossy(got).contains(&last_piece),
    )
    .await;
    assert!(
        ctx.mock
            .wait_until(Duration::from_secs(3), |m| m.cancelled_streams() >= 2)
            .await,
        "the upstream stream is cancelled"
    );
    let rows = ctx.wait_rows(7).await;
    expect(
        "client left a translated stream",
        &rows[6],
        "/v1/chat/completions",
        "responses",
        [0, 0, 0, est, 0],
        true,
    );
    for r in &rows {
        assert_sane(r, ctx.started);
    }
    ctx.assert_no_secret(&[ENV_KEY]);
}

/// Streams a request, reads until `enough` holds for the bytes received, then drops the
/// connection.
async fn read_some_then_leave(ctx: &Ctx, path: &str, body: &Value, enough: impl Fn(&[u8]) -> bool) {
    let resp = client()
        .post(ctx.gw.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    let mut s = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !enough(&got) {
        let c = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("the bytes the upstream sent arrive")
            .expect("the stream is open");
        got.extend_from_slice(&c.unwrap());
    }
    ctx.keep(&got);
    drop(s);
}

/// One record per client request, also when the client leaves before the upstream answered
/// (a non-streaming request here; the same holds for a stream still waiting for its headers).
#[tokio::test]
async fn a_client_giving_up_on_a_pending_request_is_recorded() {
    // The upstream never answers a non-streaming request; the client gives up after 300 ms.
    let ctx = env_gateway().await;
    ctx.mock
        .push_rule(Rule::new(Reply::hang()).path(ANTHROPIC_UP).once());
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .no_proxy()
        .build()
        .unwrap();
    let r = impatient
        .post(ctx.gw.url("/v1/messages"))
        .json(&anthropic_body("claude-test"))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    assert!(
        ctx.mock
            .wait_until(Duration::from_secs(3), |m| m.hanging_requests() == 0)
            .await,
        "the gateway cancelled its upstream call"
    );
    let rows = ctx.wait_rows(1).await;
    let r = &rows[0];
    assert_eq!(
        (
            r.route.as_str(),
            r.model.as_str(),
            r.credential.as_str(),
            r.attempts
        ),
        ("/v1/messages", "claude-test", "env", 1),
        "{r:?}"
    );
    assert!(!r.complete, "{r:?}");
    assert_eq!(r.tokens, [0; 5]);
}

// ----- 3. failover ---------------------------------------------------------------------------

#[tokio::test]
async fn failover_is_recorded_once() {
    let mock = MockUpstream::start().await;
    let b = gateway(&mock)
        .config(json!({"models": config()["models"], "key_pool": {"max_attempts": 3}}));
    let ctx = Ctx::start(mock, b).await;
    let (k1, k2) = ("fk-usage-failing-key-000001", "fk-usage-healthy-key-000002");
    ctx.app()
        .pool
        .create_group("first", "First", 1, "")
        .await
        .unwrap();
    let first = ctx.add_key(k1, Some("first")).await;
    let second = ctx.add_key(k2, None).await;
    ctx.mock.set_bearer_status(
        k1,
        500,
        json!({"type": "error", "error": {"type": "api_error", "message": format!("boom {k1}")}}),
    );
    // Not streamed, then streamed: each fails over from the first key to the second.
    let (s, _) = ctx
        .send("/v1/messages", &anthropic_body("claude-test"), &[])
        .await;
    assert_eq!(s, 200);
    ctx.mock.push_rule(
        Rule::new(Reply::sse(anthropic_events(
            json!({"input_tokens": 9, "output_tokens": 1}),
            Some(json!({"output_tokens": 4})),
        )))
        .path(ANTHROPIC_UP)
        .bearer(k2)
        .once(),
    );
    let (s, _) = ctx
        .send(
            "/v1/chat/completions",
            &streaming(chat_body("claude-test")),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(ctx.mock.llm_requests().len(), 4, "two attempts each");
    let rows = ctx.wait_rows(2).await;
    for r in &rows {
        assert_sane(r, ctx.started);
        assert_eq!(r.attempts, 2, "{r:?}");
        assert_eq!(r.credential, second, "the key that served: {r:?}");
        assert_eq!(r.status, 200);
        assert!(r.complete && !r.estimated);
    }
    assert_eq!(
        rows[0].tokens[3],
        droid2api_mock::DEFAULT_OUTPUT_TOKENS as i64
    );
    assert_eq!(rows[1].tokens, [9, 0, 0, 4, 0]);

    // Per key: the failing key served nothing.
    let usage = ctx.data("GET", "/factory/balance/usage").await;
    let keys: BTreeMap<String, Value> = usage["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k.clone()))
        .collect();
    assert_eq!(keys[&first]["requests"], 0);
    assert_eq!(keys[&first]["tokens"], tokens_t([0; 5]));
    assert_eq!(keys[&second]["requests"], 2);
    assert_eq!(keys[&second]["tokens"], tokens_t(sum_tokens(&rows)));

    // Every attempt failing: one record with the last key tried and the last status.
    ctx.mock.set_bearer_status(
        k2,
        503,
        json!({"type": "error", "error": {"type": "api_error", "message": "down"}}),
    );
    let (s, _) = ctx
        .send("/v1/messages", &anthropic_body("claude-test"), &[])
        .await;
    assert_eq!(s, 503);
    let rows = ctx.wait_rows(3).await;
    let r = &rows[2];
    assert_eq!((r.status, r.attempts), (503, 2), "{r:?}");
    assert_eq!(r.credential, second, "{r:?}");
    assert_eq!(r.tokens, [0; 5]);
    ctx.assert_no_secret(&[k1, k2]);
}

// ----- 4. labels and rejected requests -------------------------------------------------------

#[tokio::test]
async fn pool_key_client_key_and_rejected_requests() {
    let mock = MockUpstream::start().await;
    let b = gateway(&mock)
        .env("API_ACCESS_KEY", API_KEY)
        .config(config());
    let ctx = Ctx::start(mock, b).await;
    let pool_key = "fk-usage-pool-key-00000001";
    let id = ctx.add_key(pool_key, None).await;
    let bearer = format!("Bearer {API_KEY}");
    let auth: [(&str, &str); 1] = [("authorization", bearer.as_str())];
    let x_api: [(&str, &str); 1] = [("x-api-key", API_KEY)];

    // Served by the pool key, for a client that presented the access key (either header).
    let (s, _) = ctx
        .send("/v1/messages", &anthropic_body("claude-test"), &auth)
        .await;
    assert_eq!(s, 200);
    let (s, _) = ctx
        .send("/v1/responses", &responses_body("gpt-test"), &x_api)
        .await;
    assert_eq!(s, 200);
    // Rejected: wrong key, no key, unknown model, malformed JSON, wrong model type.
    let wrong = [("authorization", "Bearer not-the-access-key")];
    let (s, _) = ctx
        .send("/v1/messages", &anthropic_body("claude-test"), &wrong)
        .await;
    assert_eq!(s, 401);
    let (s, _) = ctx
        .send("/v1/chat/completions", &chat_body("glm-test"), &[])
        .await;
    assert_eq!(s, 401);
    let (s, _) = ctx
        .send("/v1/messages", &anthropic_body("no-such-model"), &auth)
        .await;
    assert_eq!(s, 404);
    let (s, _) = ctx
        .send_raw("/v1/chat/completions", b"{\"model\": ", &auth)
        .await;
    assert_eq!(s, 400);
    let (s, _) = ctx
        .send("/v1/messages", &anthropic_body("gpt-test"), &auth)
        .await;
    assert_eq!(s, 400);
    // Not usage: count_tokens (accepted or not), and the models list.
    let (s, _) = ctx
        .send(
            "/v1/messages/count_tokens",
            &anthropic_body("claude-test"),
            &auth,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ctx
        .send(
            "/v1/messages/count_tokens",
            &anthropic_body("claude-test"),
            &wrong,
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = ctx
        .send_req(
            client()
                .get(ctx.gw.url("/v1/models"))
                .header("x-api-key", "nope"),
        )
        .await;
    assert_eq!(s, 401);
    // A last request: every earlier record is in before it.
    let (s, _) = ctx
        .send("/v1/chat/completions", &chat_body("glm-test"), &auth)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        ctx.mock.requests_to("count_tokens").len(),
        1,
        "the accepted count_tokens call reached the upstream"
    );

    // The two requests refused for their client key are not usage records (contract §9): they
    // are counted as rejected.
    let rows = ctx.wait_rows(6).await;
    for r in &rows {
        assert_sane(r, ctx.started);
    }
    let served = [&rows[0], &rows[1], &rows[5]];
    for (r, (route, model, format)) in served.iter().zip([
        ("/v1/messages", "claude-test", "anthropic"),
        ("/v1/responses", "gpt-test", "responses"),
        ("/v1/chat/completions", "glm-test", "chat"),
    ]) {
        assert_eq!(r.credential, id, "the pool key's id: {r:?}");
        assert_eq!(r.client, "api_access_key", "{r:?}");
        assert_eq!(
            (r.route.as_str(), r.model.as_str(), r.format.as_str()),
            (route, model, format)
        );
        assert_eq!((r.status, r.attempts), (200, 1));
        assert!(r.tokens[3] > 0 && r.complete && !r.estimated, "{r:?}");
    }
    let failed: Vec<(i64, &str, &str, &str)> = rows[2..5]
        .iter()
        .map(|r| {
            (
                r.status,
                r.route.as_str(),
                r.client.as_str(),
                r.model.as_str(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        vec![
            (404, "/v1/messages", "api_access_key", "-"),
            (400, "/v1/chat/completions", "api_access_key", "-"),
            (400, "/v1/messages", "api_access_key", "gpt-test"),
        ]
    );
    for r in &rows[2..5] {
        assert_eq!(r.tokens, [0; 5], "zero tokens: {r:?}");
        assert_eq!(
            (r.credential.as_str(), r.attempts, r.format.as_str()),
            ("-", 0, "-"),
            "{r:?}"
        );
    }

    // The key's usage and counters.
    let usage = ctx.data("GET", "/factory/balance/usage").await;
    let keys = usage["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let served_tokens = sum_tokens(served);
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[0]["requests"], 3);
    assert_eq!(keys[0]["tokens"], tokens_t(served_tokens));
    assert_eq!(keys[0]["today"], tokens_t(served_tokens));
    let rec = ctx.data("GET", &format!("/admin/keys/{id}")).await;
    assert_eq!(
        rec["input_tokens"],
        served_tokens[0] + served_tokens[1] + served_tokens[2]
    );
    assert_eq!(rec["output_tokens"], served_tokens[3]);
    let summary = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(summary["requests"], 6);
    assert_eq!(summary["success_rate"], 3.0 / 6.0);
    ctx.assert_no_secret(&[pool_key, API_KEY]);
}

// ----- upstream errors -----------------------------------------------------------------------

/// A record's `status` is the status the client got, including a translated stream that failed
/// before its first event and was therefore answered with an HTTP error.
#[tokio::test]
async fn error_answers_are_recorded_with_the_status_the_client_got() {
    let ctx = env_gateway().await;
    // Relayed upstream error on a pass-through route.
    ctx.mock.push_rule(
        Rule::new(Reply::anthropic_error(429, "rate_limit_error", "slow down"))
            .path(ANTHROPIC_UP)
            .once(),
    );
    let (s, _) = ctx
        .send("/v1/messages", &anthropic_body("claude-test"), &[])
        .await;
    assert_eq!(s, 429);
    // Translated upstream error on the chat route.
    ctx.mock.push_rule(
        Rule::new(Reply::anthropic_error(500, "api_error", "internal"))
            .path(ANTHROPIC_UP)
            .once(),
    );
    let (s, _) = ctx
        .send("/v1/chat/completions", &chat_body("claude-test"), &[])
        .await;
    assert_eq!(s, 500);
    // A translated stream whose upstream fails before its first event: an HTTP error.
    ctx.mock.push_rule(
        Rule::new(Reply::sse(vec![SseEventSpec::named(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )]))
        .path(ANTHROPIC_UP)
        .once(),
    );
    let (s, body) = ctx
        .send(
            "/v1/chat/completions",
            &streaming(chat_body("claude-test")),
            &[],
        )
        .await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&body));
    // A translated stream whose upstream ends before any event.
    ctx.mock
        .push_rule(Rule::new(Reply::sse(Vec::new())).path(RESPONSES_UP).once());
    let (s, body) = ctx
        .send(
            "/v1/chat/completions",
            &streaming(chat_body("gpt-test")),
            &[],
        )
        .await;
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&body));
    let rows = ctx.wait_rows(4).await;
    let got: Vec<(i64, &str, &str, i64)> = rows
        .iter()
        .map(|r| (r.status, r.route.as_str(), r.format.as_str(), r.attempts))
        .collect();
    assert_eq!(
        got,
        vec![
            (429, "/v1/messages", "anthropic", 1),
            (500, "/v1/chat/completions", "anthropic", 1),
            (503, "/v1/chat/completions", "anthropic", 1),
            (502, "/v1/chat/completions", "responses", 1),
        ],
        "{rows:#?}"
    );
    for r in &rows {
        assert_eq!(r.tokens, [0; 5]);
        assert_eq!(r.credential, "env");
    }
    let summary = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(summary["success_rate"], 0.0, "{summary}");
    ctx.assert_no_secret(&[ENV_KEY]);
}

// ----- 5. rollups in a non-UTC zone ----------------------------------------------------------

#[tokio::test]
async fn rollups_follow_the_configured_day_across_midnight() {
    let mock = MockUpstream::start().await;
    let b = gateway(&mock).config(json!({"timezone": "Asia/Shanghai"}));
    let ctx = Ctx::start(mock, b).await;
    // 23:30 on the 26th and 00:30 / 00:45 on the 27th, Shanghai time.
    ctx.inject(record(
        ms("2026-11-26T15:30:00Z"),
        "key_a",
        "m-a",
        200,
        [10, 1, 2, 3, 0],
    ));
    ctx.inject(record(
        ms("2026-11-26T16:30:00Z"),
        "key_b",
        "m-b",
        200,
        [20, 0, 0, 5, 1],
    ));
    ctx.inject(record(
        ms("2026-11-26T16:45:00Z"),
        "key_a",
        "m-a",
        500,
        [0; 5],
    ));
    let rows = ctx.wait_rows(3).await;
    let buckets: Vec<(i64, i64)> = rows.iter().map(|r| (r.hour_start, r.day_start)).collect();
    assert_eq!(
        buckets,
        vec![
            (ms("2026-11-26T15:00:00Z"), ms("2026-11-25T16:00:00Z")),
            (ms("2026-11-26T16:00:00Z"), ms("2026-11-26T16:00:00Z")),
            (ms("2026-11-26T16:00:00Z"), ms("2026-11-26T16:00:00Z")),
        ]
    );
    let a = tokens_t([10, 1, 2, 3, 0]);
    let b = tokens_t([20, 0, 0, 5, 1]);
    let zero = tokens_t([0; 5]);
    let day1 = "2026-11-25T16:00:00Z";
    let day2 = "2026-11-26T16:00:00Z";
    let series = |query: &str| {
        let q = query.to_string();
        let ctx = &ctx;
        async move {
            let d = ctx.data("GET", &format!("/admin/usage?{q}")).await;
            assert_eq!(d["tz"], "Asia/Shanghai", "{d}");
            d
        }
    };

    let d = series("granularity=day&from=2026-11-26&to=2026-11-28").await;
    assert_eq!(d["granularity"], "day");
    assert_eq!(
        d["points"],
        json!([
            {"t": day1, "requests": 1, "tokens": a, "rejected": 0},
            {"t": day2, "requests": 2, "tokens": b, "rejected": 0},
        ])
    );
    // The 27th alone (local dates are local midnights).
    let d = series("granularity=day&from=2026-11-27&to=2026-11-28").await;
    assert_eq!(
        d["points"],
        json!([{"t": day2, "requests": 2, "tokens": b, "rejected": 0}])
    );

    let d = series("granularity=hour&from=2026-11-26T15:00:00Z&to=2026-11-26T18:00:00Z").await;
    assert_eq!(d["granularity"], "hour");
    assert_eq!(
        d["points"],
        json!([
            {"t": "2026-11-26T15:00:00Z", "requests": 1, "tokens": a, "rejected": 0},
            {"t": "2026-11-26T16:00:00Z", "requests": 2, "tokens": b, "rejected": 0},
        ])
    );
    // A `from` inside an hour includes that whole hour.
    let d = series("granularity=hour&from=2026-11-26T15:45:00Z&to=2026-11-26T16:00:00Z").await;
    assert_eq!(
        d["points"],
        json!([{"t": "2026-11-26T15:00:00Z", "requests": 1, "tokens": a, "rejected": 0}])
    );

    // Filters: key, model, both (day and hour).
    let d = series("granularity=day&from=2026-11-26&to=2026-11-28&key=key_a").await;
    assert_eq!(
        d["points"],
        json!([
            {"t": day1, "requests": 1, "tokens": a, "rejected": 0},
            {"t": day2, "requests": 1, "tokens": zero, "rejected": 0},
        ])
    );
    let d = series("granularity=day&from=2026-11-26&to=2026-11-28&model=m-b").await;
    assert_eq!(
        d["points"],
        json!([{"t": day2, "requests": 1, "tokens": b, "rejected": 0}])
    );
    let d = series("granularity=day&from=2026-11-26&to=2026-11-28&key=key_a&model=m-a").await;
    assert_eq!(
        d["points"],
        json!([
            {"t": day1, "requests": 1, "tokens": a, "rejected": 0},
            {"t": day2, "requests": 1, "tokens": zero, "rejected": 0},
        ])
    );
    let d = series(
        "granularity=hour&from=2026-11-26T15:00:00Z&to=2026-11-26T18:00:00Z&key=key_a&model=m-a",
    )
    .await;
    assert_eq!(
        d["points"],
        json!([
            {"t": "2026-11-26T15:00:00Z", "requests": 1, "tokens": a, "rejected": 0},
            {"t": "2026-11-26T16:00:00Z", "requests": 1, "tokens": zero, "rejected": 0},
        ])
    );
    let d = series("granularity=day&from=2026-11-26&to=2026-11-28&key=key_b&model=m-a").await;
    assert_eq!(d["points"], json!([]));
    let d = series("granularity=day&from=2026-11-26&to=2026-11-28&key=nobody").await;
    assert_eq!(d["points"], json!([]));

    // "Today" is the Shanghai day (UTC+8, no DST): a record at its first millisecond counts,
    // one a millisecond earlier does not (nor does any other day's record above).
    let now = now_ms();
    let today = (now + 8 * HOUR_MS).div_euclid(DAY_MS) * DAY_MS - 8 * HOUR_MS;
    ctx.inject(record(today, "key_a", "m-a", 200, [1, 0, 0, 1, 0]));
    ctx.inject(record(today - 1, "key_a", "m-a", 200, [100, 0, 0, 100, 0]));
    let rows = ctx.wait_rows(5).await;
    for r in &rows {
        let local_day = (r.at + 8 * HOUR_MS).div_euclid(DAY_MS) * DAY_MS - 8 * HOUR_MS;
        assert_eq!(r.day_start, local_day, "{r:?}");
    }
    let todays: Vec<&Row> = rows
        .iter()
        .filter(|r| (today..today + DAY_MS).contains(&r.at))
        .collect();
    assert!(todays.iter().any(|r| r.at == today));
    let s = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(s["requests"], 5);
    assert_eq!(s["tokens"], tokens_t(sum_tokens(&rows)));
    assert_eq!(
        s["today"],
        json!({"requests": todays.len(), "tokens": tokens_t(sum_tokens(todays))}),
        "{s}"
    );
    assert_eq!(s["success_rate"], 4.0 / 5.0);
    ctx.assert_no_secret(&[ADMIN_KEY]);
}

// ----- 6. retention ---------------------------------------------------------------------------

#[tokio::test]
async fn cleanup_deletes_old_records_and_keeps_rollups() {
    let mock = MockUpstream::start().await;
    let ctx = Ctx::start(mock.clone(), gateway(&mock)).await;
    let now = now_ms();
    ctx.inject(record(
        now - 10 * DAY_MS,
        "key_a",
        "m-a",
        200,
        [5, 0, 0, 5, 0],
    ));
    ctx.inject(record(
        now - 9 * DAY_MS,
        "key_a",
        "m-a",
        200,
        [6, 0, 0, 6, 0],
    ));
    ctx.inject(record(now - HOUR_MS, "key_a", "m-a", 200, [7, 0, 0, 7, 0]));
    ctx.wait_rows(3).await;
    let before = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(before["requests"], 3);

    for bad in ["yesterday", "2026-13-01", "1700000000"] {
        let msg = ctx
            .bad_request("POST", &format!("/factory/balance/cleanup?before={bad}"))
            .await;
        assert!(msg.contains("before"), "{msg}");
    }
    // A date long ago: nothing to delete.
    let d = ctx
        .data("POST", "/factory/balance/cleanup?before=2000-01-01")
        .await;
    assert_eq!(d, json!({"deleted": 0}));
    let cutoff = rfc3339(now - 5 * DAY_MS);
    let d = ctx
        .data("POST", &format!("/factory/balance/cleanup?before={cutoff}"))
        .await;
    assert_eq!(d, json!({"deleted": 2}));
    let rows = ctx.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].tokens, [7, 0, 0, 7, 0]);
    // The rollups are kept: totals and the daily series still count the deleted records.
    let after = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(after, before);
    let q = format!(
        "/admin/usage?granularity=day&from={}&to={}",
        rfc3339(now - 12 * DAY_MS),
        rfc3339(now + 1)
    );
    let d = ctx.data("GET", &q).await;
    let requests: u64 = d["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 3, "{d}");
    ctx.assert_no_secret(&[ADMIN_KEY]);
}

#[tokio::test]
async fn records_past_data_retention_days_are_removed() {
    // Records stored by a gateway keeping 30 days…
    let mock = MockUpstream::start().await;
    let ctx = Ctx::start(mock.clone(), gateway(&mock)).await;
    let now = now_ms();
    ctx.inject(record(
        now - 3 * DAY_MS,
        "key_a",
        "m-a",
        200,
        [1, 0, 0, 1, 0],
    ));
    ctx.inject(record(now - HOUR_MS, "key_a", "m-a", 200, [2, 0, 0, 2, 0]));
    ctx.wait_rows(2).await;
    let Ctx { gw, seen, .. } = ctx;
    let (data, home, _temp) = gw.stop().await;

    // … are removed automatically by one started with DATA_RETENTION_DAYS=1; the fresh one stays.
    let gw = gateway(&mock)
        .env("DATA_RETENTION_DAYS", "1")
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .data_dir(&data)
        .home_dir(&home)
        .start()
        .await;
    let ctx = Ctx {
        mock,
        gw,
        seen,
        started: now,
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while ctx.rows().len() != 1 {
        assert!(Instant::now() < deadline, "{:#?}", ctx.rows());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ctx.rows()[0].tokens,
        [2, 0, 0, 2, 0],
        "the fresh record is kept"
    );

    // Cleanup without `before`: the retention is the cutoff.
    ctx.inject(record(
        now - 3 * DAY_MS,
        "key_b",
        "m-b",
        200,
        [3, 0, 0, 3, 0],
    ));
    ctx.wait_rows(2).await;
    let d = ctx.data("POST", "/factory/balance/cleanup").await;
    assert_eq!(d, json!({"deleted": 1}));
    let rows = ctx.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].tokens, [2, 0, 0, 2, 0], "the fresh record is kept");
    let s = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(s["requests"], 3, "rollups kept: {s}");
    assert_eq!(s["tokens"], tokens_t([6, 0, 0, 6, 0]));
    ctx.assert_no_secret(&[ADMIN_KEY]);
}

// ----- 7. endpoint shapes and the balance sync ------------------------------------------------

const T_FIELDS: [&str; 6] = [
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
];

fn assert_t(v: &Value) {
    let o = v.as_object().unwrap_or_else(|| panic!("T: {v}"));
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = T_FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "{v}");
    let n = |k: &str| o[k].as_u64().unwrap();
    assert_eq!(
        n("total_tokens"),
        n("input_tokens") + n("cache_read_tokens") + n("cache_write_tokens") + n("output_tokens")
    );
    assert!(n("reasoning_tokens") <= n("output_tokens"));
}

fn field_names(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort_unstable();
    k
}

fn names(list: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    k.sort_unstable();
    k
}

fn assert_rfc3339(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("a time: {v}"));
    assert!(s.ends_with('Z'), "{s}");
    s.parse::<jiff::Timestamp>().unwrap();
}

#[tokio::test]
async fn usage_endpoints_and_balance_sync() {
    let mock = MockUpstream::start().await;
    let ctx = Ctx::start(mock.clone(), gateway(&mock).config(config())).await;
    let (trial_key, paid_key) = ("fk-usage-trial-key-0000001", "fk-usage-paid-key-00000001");
    let (k401, k402) = ("fk-usage-401-key-000000001", "fk-usage-402-key-000000001");
    let trial = ctx.add_key(trial_key, None).await;
    let paid = ctx.add_key(paid_key, None).await;

    // Before any traffic.
    let s = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(s["requests"], 0);
    assert_eq!(s["success_rate"], 0.0);
    assert_eq!(s["by_model"], json!([]));
    assert_eq!(
        s["balance"],
        json!({"used": 0, "allowance": 0, "remaining": 0, "keys_synced": 0, "last_sync": null})
    );

    // Traffic: three served requests, one unknown model.
    for (path, body) in [
        ("/v1/messages", anthropic_body("claude-test")),
        ("/v1/messages", streaming(anthropic_body("claude-test"))),
        ("/v1/chat/completions", chat_body("glm-test")),
    ] {
        let (s, _) = ctx.send(path, &body, &[]).await;
        assert_eq!(s, 200);
    }
    let (s, _) = ctx.send("/v1/messages", &anthropic_body("nope"), &[]).await;
    assert_eq!(s, 404);
    let rows = ctx.wait_rows(4).await;

    let s = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(
        field_names(&s),
        names(&[
            "requests",
            "success_rate",
            "tokens",
            "today",
            "by_model",
            "balance"
        ])
    );
    assert_eq!(s["requests"], 4);
    let rate = s["success_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate));
    assert_eq!(rate, 0.75);
    assert_eq!(s["tokens"], tokens_t(sum_tokens(&rows)));
    assert_t(&s["tokens"]);
    assert_eq!(field_names(&s["today"]), names(&["requests", "tokens"]));
    assert_eq!(s["today"]["requests"], 4);
    assert_t(&s["today"]["tokens"]);
    let by_model = s["by_model"].as_array().unwrap();
    let models: BTreeMap<&str, u64> = by_model
        .iter()
        .map(|m| {
            assert_eq!(field_names(m), names(&["model", "requests", "tokens"]));
            assert_t(&m["tokens"]);
            (
                m["model"].as_str().unwrap(),
                m["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        models,
        BTreeMap::from([("claude-test", 2), ("glm-test", 1)])
    );
    assert_eq!(
        field_names(&s["balance"]),
        names(&["used", "allowance", "remaining", "keys_synced", "last_sync"])
    );

    // The keys that will fail the sync, added after the traffic.
    let id401 = ctx.add_key(k401, None).await;
    let id402 = ctx.add_key(k402, None).await;
    ctx.mock
        .set_bearer_status(k401, 401, json!({"error": format!("invalid key {k401}")}));
    ctx.mock.set_bearer_status(
        k402,
        402,
        json!({"error": {"message": format!("Insufficient credits for {k402}")}}),
    );
    // A paid subscription: no trial allocation; the usage endpoint has the allowance. (The
    // chat-usage rule goes first: "/api/organization" is a prefix of its path.)
    ctx.mock.push_rule(
        Rule::new(Reply::json(
            200,
            json!({"usage": {"standard": {"orgTotalTokensUsed": 1_000_000, "totalAllowance": 50_000_000},
                             "premium": {"orgTotalTokensUsed": 0, "totalAllowance": 0}}}),
        ))
        .path("chat-usage")
        .bearer(paid_key),
    );
    ctx.mock.push_rule(
        Rule::new(Reply::json(
            200,
            json!({"organization": {"id": "org_paid", "subscription": {"orbSubscription": {"status": "active"}}}}),
        ))
        .path("/api/organization")
        .bearer(paid_key),
    );

    let u = ctx.data("GET", "/factory/balance/usage").await;
    assert_eq!(field_names(&u), names(&["keys"]));
    let keys = u["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);
    let mut served = 0;
    for k in keys {
        assert_eq!(
            field_names(k),
            names(&[
                "id",
                "key_masked",
                "status",
                "requests",
                "tokens",
                "today",
                "balance"
            ])
        );
        assert_t(&k["tokens"]);
        assert_t(&k["today"]);
        assert_eq!(k["tokens"], k["today"], "all of it today");
        assert_eq!(k["balance"], Value::Null, "not synced yet");
        assert_eq!(k["status"], "active");
        assert!(k["key_masked"].as_str().unwrap().contains('…'));
        served += k["requests"].as_u64().unwrap();
    }
    assert_eq!(served, 3);

    // The sync: two keys synced, the 401 and the 402 fail.
    let d = ctx.data("POST", "/factory/balance/sync").await;
    assert_eq!(
        field_names(&d),
        names(&["total", "synced", "failed", "failures", "balance"])
    );
    assert_eq!(
        (
            d["total"].as_u64(),
            d["synced"].as_u64(),
            d["failed"].as_u64()
        ),
        (Some(4), Some(2), Some(2)),
        "{d}"
    );
    let failures: BTreeMap<String, String> = d["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(field_names(f), names(&["id", "error"]));
            (
                f["id"].as_str().unwrap().into(),
                f["error"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[&id401], "Factory rejected the key (401)");
    assert!(
        failures[&id402].starts_with("402 Payment Required"),
        "{}",
        failures[&id402]
    );
    let balance = &d["balance"];
    assert_eq!(balance["used"], 1_000_000);
    assert_eq!(balance["allowance"], 70_000_000);
    assert_eq!(balance["remaining"], 69_000_000);
    assert_eq!(balance["keys_synced"], 2);
    assert_rfc3339(&balance["last_sync"]);
    let s = ctx.data("GET", "/factory/balance/summary").await;
    assert_eq!(&s["balance"], balance);

    // Each synced key shows its balance, in the key list and in the usage.
    let list = ctx.data("GET", "/admin/keys?limit=500").await;
    let by_id: BTreeMap<String, Value> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k.clone()))
        .collect();
    let tb = &by_id[&trial]["balance"];
    assert_eq!(
        field_names(tb),
        names(&[
            "used",
            "allowance",
            "remaining",
            "ratio",
            "last_sync",
            "trial_end"
        ])
    );
    assert_eq!(
        (
            tb["used"].as_u64(),
            tb["allowance"].as_u64(),
            tb["remaining"].as_u64(),
            tb["ratio"].as_f64()
        ),
        (Some(0), Some(20_000_000), Some(20_000_000), Some(0.0))
    );
    assert_eq!(tb["trial_end"], "2099-01-01T00:00:00Z");
    assert_rfc3339(&tb["last_sync"]);
    let pb = &by_id[&paid]["balance"];
    assert_eq!(
        (
            pb["used"].as_u64(),
            pb["allowance"].as_u64(),
            pb["remaining"].as_u64(),
            pb["ratio"].as_f64()
        ),
        (
            Some(1_000_000),
            Some(50_000_000),
            Some(49_000_000),
            Some(0.02)
        )
    );
    assert_eq!(pb["trial_end"], Value::Null);
    for id in [&id401, &id402] {
        assert!(by_id[id].get("balance").is_none(), "{}", by_id[id]);
    }
    assert_eq!(by_id[&id402]["status"], "banned");
    assert_eq!(
        by_id[&id401]["status"], "active",
        "one 401 is under the threshold"
    );
    let u = ctx.data("GET", "/factory/balance/usage").await;
    for k in u["keys"].as_array().unwrap() {
        let id = k["id"].as_str().unwrap();
        if id == trial || id == paid {
            assert_eq!(k["balance"], by_id[id]["balance"], "{k}");
        } else {
            assert_eq!(k["balance"], Value::Null, "{k}");
        }
    }

    // GET /admin/usage: the default window, then bad parameters named.
    let d = ctx.data("GET", "/admin/usage").await;
    assert_eq!(
        field_names(&d),
        names(&[
            "granularity",
            "tz",
            "points",
            "rejected",
            "rejected_by_reason"
        ])
    );
    assert_eq!(d["granularity"], "hour");
    assert_eq!(d["rejected"], 0);
    let points = d["points"].as_array().unwrap();
    let requests: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(requests, 4);
    for p in points {
        assert_eq!(
            field_names(p),
            names(&["t", "requests", "tokens", "rejected"])
        );
        assert_rfc3339(&p["t"]);
        assert_t(&p["tokens"]);
    }
    for (query, name) in [
        ("granularity=week", "granularity"),
        ("granularity=day&from=2026-11-28&to=2026-11-26", "from"),
        ("from=garbage", "from"),
        ("to=garbage", "to"),
        ("granularity=day&from=2026-11-26&to=2026-11-26", "from"),
    ] {
        let msg = ctx
            .bad_request("GET", &format!("/admin/usage?{query}"))
            .await;
        assert!(msg.contains(name), "{query}: {msg}");
    }
    ctx.assert_no_secret(&[trial_key, paid_key, k401, k402]);
}
