//! The mock's bench mode over real loopback HTTP: replies, pacing, per-key behaviour, control.

use std::time::{Duration, Instant};

use droid2api_mock::bench::{MARKER, delta_text};
use droid2api_mock::{BenchOptions, MockOptions, MockUpstream};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

const MESSAGES: &str = "/api/llm/a/v1/messages";
const RESPONSES: &str = "/api/llm/o/v1/responses";
const CHAT: &str = "/api/llm/o/v1/chat/completions";

async fn bench_mock(o: BenchOptions) -> MockUpstream {
    MockUpstream::start_with(MockOptions {
        bench: Some(o),
        ..MockOptions::default()
    })
    .await
}

fn headers(path: &str, bearer: &str) -> HeaderMap {
    let mut pairs: Vec<(&str, String)> = vec![
        ("content-type", "application/json".into()),
        ("authorization", format!("Bearer {bearer}")),
        ("x-factory-client", "cli".into()),
    ];
    if path == MESSAGES {
        pairs.push(("x-api-key", "placeholder".into()));
        pairs.push(("anthropic-version", "2023-06-01".into()));
    }
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(&v).expect("header value"),
        );
    }
    h
}

fn body(path: &str, stream: bool) -> Value {
    match path {
        MESSAGES => json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": stream,
                            "messages": [{"role": "user", "content": "hi"}]}),
        RESPONSES => json!({"model": "gpt-5.4", "input": "hi", "stream": stream}),
        _ => json!({"model": "glm-5", "stream": stream, "stream_options": {"include_usage": true},
                     "messages": [{"role": "user", "content": "hi"}]}),
    }
}

async fn post(mock: &MockUpstream, path: &str, bearer: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", mock.url()))
        .headers(headers(path, bearer))
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn control(
    mock: &MockUpstream,
    method: reqwest::Method,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}/_mock/bench", mock.url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("control");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[tokio::test]
async fn whole_replies_in_every_format_carry_usage_and_are_not_recorded() {
    let mock = bench_mock(BenchOptions {
        stream_deltas: 3,
        ..BenchOptions::default()
    })
    .await;
    let text = (1..=3).map(delta_text).collect::<String>();
    for path in [MESSAGES, RESPONSES, CHAT] {
        let resp = post(&mock, path, "fk-good-1", &body(path, false)).await;
        assert_eq!(resp.status(), 200, "{path}");
        let v: Value = resp.json().await.expect("json");
        match path {
            MESSAGES => {
                assert_eq!(v["content"][0]["text"], text);
                assert_eq!(v["usage"]["output_tokens"], 3);
                assert_eq!(v["model"], "claude-sonnet-4-6");
            }
            RESPONSES => {
                assert_eq!(v["output"][0]["content"][0]["text"], text);
                assert_eq!(v["usage"]["output_tokens"], 3);
            }
            _ => {
                assert_eq!(v["choices"][0]["message"]["content"], text);
                assert_eq!(v["usage"]["completion_tokens"], 3);
            }
        }
    }
    assert!(mock.requests().is_empty(), "bench mode records nothing");
    let (status, state) = control(&mock, reqwest::Method::GET, None).await;
    assert_eq!(status, 200);
    assert_eq!(state["requests"], 3);
}

#[tokio::test]
async fn streams_are_paced_and_written_one_whole_event_per_chunk() {
    let mock = bench_mock(BenchOptions {
        stream_deltas: 5,
        stream_interval_ms: 40,
        ..BenchOptions::default()
    })
    .await;
    for (path, terminal) in [
        (MESSAGES, "message_stop"),
        (RESPONSES, "response.completed"),
        (CHAT, "[DONE]"),
    ] {
        let start = Instant::now();
        let resp = post(&mock, path, "fk-good-1", &body(path, true)).await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .is_ok_and(|c| c.starts_with("text/event-stream"))
        );
        let mut stream = resp.bytes_stream();
        let mut all = String::new();
        let mut marker_times = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            let text = std::str::from_utf8(&chunk).expect("whole UTF-8 events");
            assert!(
                text.ends_with("\n\n"),
                "{path}: chunk cut inside an event: {text:?}"
            );
            for _ in 0..text.matches(MARKER).count() {
                if text.contains("delta") {
                    marker_times.push(start.elapsed());
                }
            }
            all.push_str(text);
        }
        assert_eq!(marker_times.len(), 5, "{path}: {all}");
        // Delta k is due 40·k ms after the headers: the last one at ≥ 200 ms.
        assert!(
            marker_times[4] >= Duration::from_millis(190),
            "{path}: {marker_times:?}"
        );
        for w in marker_times.windows(2) {
            assert!(
                w[1] > w[0] + Duration::from_millis(20),
                "{path}: {marker_times:?}"
            );
        }
        let last_event = all.trim_end().rsplit("\n\n").next().unwrap_or_default();
        assert!(last_event.contains(terminal), "{path}: {all}");
    }
    assert!(mock.wait_idle(Duration::from_secs(10)).await);
    let (_, state) = control(&mock, reqwest::Method::GET, None).await;
    assert_eq!(state["streams_completed"], 3);
}

#[tokio::test]
async fn cooling_and_banned_prefixes_and_header_checks() {
    let mock = bench_mock(BenchOptions::default()).await;
    let resp = post(&mock, MESSAGES, "fk-cool-0001", &body(MESSAGES, false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3600");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let resp = post(&mock, RESPONSES, "fk-ban-0001", &body(RESPONSES, false)).await;
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.expect("json");
    assert!(v["error"]["message"].is_string(), "OpenAI envelope: {v}");

    let mut h = headers(MESSAGES, "fk-good");
    h.remove("x-api-key");
    let resp = reqwest::Client::new()
        .post(format!("{}{MESSAGES}", mock.url()))
        .headers(h)
        .json(&body(MESSAGES, false))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["type"], "error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-api-key"))
    );

    let resp = reqwest::Client::new()
        .post(format!("{}{CHAT}", mock.url()))
        .headers(headers(CHAT, "fk-good"))
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);

    let (_, state) = control(&mock, reqwest::Method::GET, None).await;
    assert_eq!(
        (state["cooled"].as_u64(), state["banned"].as_u64()),
        (Some(1), Some(1))
    );
    // Still serving normally afterwards.
    assert_eq!(
        post(&mock, CHAT, "fk-good", &body(CHAT, false))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_delay_and_stream_shape_change_at_run_time() {
    let mock = bench_mock(BenchOptions::default()).await;
    let (status, state) = control(
        &mock,
        reqwest::Method::POST,
        Some(json!({"delay_ms": 150, "stream_deltas": 2, "stream_interval_ms": 0})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(state["delay_ms"], 150);
    let start = Instant::now();
    let resp = post(&mock, MESSAGES, "fk-good", &body(MESSAGES, true)).await;
    assert!(start.elapsed() >= Duration::from_millis(150));
    let text = resp.text().await.expect("body");
    assert_eq!(text.matches(MARKER).count(), 2, "{text}");

    let (status, v) = control(&mock, reqwest::Method::POST, Some(json!({"delay": 1}))).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("delay")));

    let plain = MockUpstream::start().await;
    let (status, _) = control(&plain, reqwest::Method::GET, None).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn models_is_a_static_list_and_other_routes_stay_the_normal_mock() {
    let mock = bench_mock(BenchOptions::default()).await;
    let v: Value = reqwest::get(format!("{}/v1/models", mock.url()))
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(10));
    let resp = reqwest::Client::new()
        .get(format!("{}/api/organization", mock.url()))
        .bearer_auth("fk-good")
        .send()
        .await
        .expect("balance");
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests().len(), 1, "the normal mock still records");
}
