//! End-to-end tests of the mock over real loopback HTTP (reqwest), through its public API.

use std::time::Duration;

use droid2api_mock::{
    MOCK_TEXT, MockUpstream, Reply, ReplyBody, Rule, SseEventSpec, WORKOS_CLIENT_ID, anthropic,
    encode_events, openai,
};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

const MESSAGES: &str = "/api/llm/a/v1/messages";
const COUNT: &str = "/api/llm/a/v1/messages/count_tokens";
const RESPONSES: &str = "/api/llm/o/v1/responses";
const CHAT: &str = "/api/llm/o/v1/chat/completions";
const WORKOS: &str = "/user_management/authenticate";

#[derive(Clone, Copy)]
enum Kind {
    Anthropic,
    OpenAi,
    Common,
}

/// The headers the gateway must send (contract.md §4).
fn headers(kind: Kind, bearer: &str) -> HeaderMap {
    let mut pairs: Vec<(&str, String)> = vec![
        ("content-type", "application/json".into()),
        ("authorization", format!("Bearer {bearer}")),
        ("x-factory-client", "cli".into()),
        (
            "x-session-id",
            "7d3c1a36-1f0a-4b8e-9d55-2f5f0b1c9e01".into(),
        ),
        (
            "x-assistant-message-id",
            "0c2b6f1e-5a8d-4c3e-b1f7-9a6e2d4c8b10".into(),
        ),
        ("user-agent", "factory-cli/0.19.3".into()),
        ("x-stainless-arch", "x64".into()),
        ("x-stainless-lang", "js".into()),
        ("x-stainless-os", "MacOS".into()),
        ("x-stainless-runtime", "node".into()),
        ("x-stainless-retry-count", "0".into()),
        ("x-stainless-package-version", "5.23.2".into()),
        ("x-stainless-runtime-version", "v24.3.0".into()),
    ];
    match kind {
        Kind::Anthropic => pairs.extend([
            ("x-api-provider", "anthropic".into()),
            ("accept", "application/json".into()),
            ("anthropic-version", "2023-06-01".into()),
            ("x-api-key", "placeholder".into()),
            ("x-stainless-timeout", "600".into()),
        ]),
        Kind::OpenAi => pairs.push(("x-api-provider", "azure_openai".into())),
        Kind::Common => pairs.extend([
            ("x-api-provider", "baseten".into()),
            ("accept", "application/json".into()),
        ]),
    }
    pairs
        .into_iter()
        .map(|(k, v)| {
            (
                HeaderName::from_static(k),
                HeaderValue::from_str(&v).expect("header value"),
            )
        })
        .collect()
}

fn anthropic_body(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 1024, "stream": stream,
           "messages": [{"role": "user", "content": "Say hi"}]})
}

async fn post(mock: &MockUpstream, path: &str, h: HeaderMap, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", mock.url()))
        .headers(h)
        .body(body.to_string())
        .send()
        .await
        .expect("send")
}

/// Reads a body chunk by chunk; returns the chunks as received.
async fn chunks(resp: reqwest::Response) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        out.push(c.expect("body chunk"));
    }
    out
}

/// Minimal SSE parse: (event name, data) per event.
fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            (event, data.join("\n"))
        })
        .collect()
}

#[tokio::test]
async fn anthropic_non_stream_default_reply_and_recording() {
    let mock = MockUpstream::start().await;
    let resp = post(
        &mock,
        &format!("{MESSAGES}?beta=true"),
        headers(Kind::Anthropic, "fk-abc"),
        &anthropic_body(false),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("request-id"));
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(v["content"][0]["text"], MOCK_TEXT);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 12);
    assert!(v["usage"]["input_tokens"].as_u64().expect("input_tokens") >= 1);
    assert!(v["id"].as_str().expect("id").starts_with("msg_mock_"));

    let reqs = mock.llm_requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, MESSAGES);
    assert_eq!(r.query.as_deref(), Some("beta=true"));
    assert_eq!(r.header("X-Factory-Client"), Some("cli"));
    assert_eq!(r.bearer(), Some("fk-abc"));
    assert_eq!(r.json.as_ref().expect("json")["max_tokens"], 1024);
    mock.clear_requests();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn header_check_failures_name_the_header_in_the_route_format() {
    let mock = MockUpstream::start().await;
    let mut h = headers(Kind::Anthropic, "fk-1");
    h.remove("x-api-key");
    let resp = post(&mock, MESSAGES, h, &anthropic_body(false)).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        msg.starts_with("mock:") && msg.contains("x-api-key"),
        "{msg}"
    );

    let mut h = headers(Kind::Common, "fk-1");
    h.insert("x-factory-client", HeaderValue::from_static("web"));
    let body = json!({"model": "glm-4.6", "messages": [{"role": "user", "content": "x"}]});
    let resp = post(&mock, CHAT, h, &body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    let msg = v["error"]["message"]
        .as_str()
        .expect("openai-format message");
    assert!(
        msg.starts_with("mock:") && msg.contains("x-factory-client"),
        "{msg}"
    );

    // Responses does not need `accept`; chat does.
    let mut h = headers(Kind::Common, "fk-1");
    h.remove("accept");
    assert_eq!(post(&mock, CHAT, h, &body).await.status(), 400);
    let resp = post(
        &mock,
        RESPONSES,
        headers(Kind::OpenAi, "fk-1"),
        &json!({"model": "gpt-5", "input": "hi"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    // Empty bearer.
    let mut h = headers(Kind::OpenAi, "x");
    h.insert("authorization", HeaderValue::from_static("Bearer "));
    let resp = post(
        &mock,
        RESPONSES,
        h,
        &json!({"model": "gpt-5", "input": "hi"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn anthropic_thinking_rule_failure() {
    let mock = MockUpstream::start().await;
    let mut body = anthropic_body(false);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 4096});
    body["max_tokens"] = json!(2048);
    let resp = post(&mock, MESSAGES, headers(Kind::Anthropic, "fk-1"), &body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        v["error"]["type"], "invalid_request_error",
        "unexpected body {v}"
    );
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        msg.starts_with("mock:") && msg.contains("budget_tokens"),
        "{msg}"
    );

    // With the interleaved-thinking beta the same body is fine, and the reply has thinking.
    let mut h = headers(Kind::Anthropic, "fk-1");
    h.insert(
        "anthropic-beta",
        HeaderValue::from_static("interleaved-thinking-2025-05-14"),
    );
    let resp = post(&mock, MESSAGES, h, &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["content"][0]["type"], "thinking");
    assert_eq!(v["content"][0]["signature"], "sig_mock");
    assert_eq!(v["content"][1]["text"], MOCK_TEXT);
}

#[tokio::test]
async fn scripted_sse_arrives_in_awkward_pieces_and_reassembles_exactly() {
    let mock = MockUpstream::start().await;
    let events = anthropic::text_stream_events("msg_x", "claude-x", MOCK_TEXT, 7, 12, None);
    for crlf in [false, true] {
        mock.push_rule(
            Rule::new(Reply::sse(events.clone()).sse_options(0, false, crlf))
                .path(MESSAGES)
                .once(),
        );
        let resp = post(
            &mock,
            MESSAGES,
            headers(Kind::Anthropic, "fk-1"),
            &anthropic_body(true),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("text/event-stream")
        );
        let got = chunks(resp).await;
        assert!(got.len() > 5, "only {} chunks", got.len());
        let joined: Vec<u8> = got.iter().flat_map(|c| c.iter().copied()).collect();
        let expected = encode_events(&events, crlf);
        assert_eq!(joined, expected);
        // At least one read ended inside a multi-byte character.
        let mut at = 0;
        let mut split_char = false;
        for c in &got[..got.len() - 1] {
            at += c.len();
            split_char |= expected[at] & 0xC0 == 0x80;
        }
        assert!(split_char, "no read boundary inside a UTF-8 character");
    }
    assert!(mock.rules().is_empty(), "once-rules are used up");
    assert!(mock.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(mock.cancelled_streams(), 0);
}

#[tokio::test]
async fn default_anthropic_stream_with_thinking() {
    let mock = MockUpstream::start().await;
    let mut body = anthropic_body(true);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    body["max_tokens"] = json!(32000);
    let resp = post(&mock, MESSAGES, headers(Kind::Anthropic, "fk-1"), &body).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(chunks(resp).await.concat()).expect("utf-8 overall");
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"ping"));
    let mut text_out = String::new();
    let mut kinds = Vec::new();
    for (_, data) in &events {
        let v: Value = serde_json::from_str(data).expect("event json");
        if v["type"] == "content_block_delta" {
            kinds.push(v["delta"]["type"].as_str().unwrap_or_default().to_owned());
            if let Some(t) = v["delta"]["text"].as_str() {
                text_out.push_str(t);
            }
        }
        if v["type"] == "message_delta" {
            assert_eq!(v["delta"]["stop_reason"], "end_turn");
            assert_eq!(v["usage"]["output_tokens"], 12);
        }
    }
    assert_eq!(text_out, MOCK_TEXT);
    assert_eq!(kinds[0], "thinking_delta");
    assert_eq!(kinds[1], "signature_delta");
    assert!(kinds.iter().filter(|k| *k == "text_delta").count() >= 3);
}

#[tokio::test]
async fn count_tokens_follows_system_and_tools() {
    let mock = MockUpstream::start().await;
    let h = || headers(Kind::Anthropic, "fk-1");
    let body =
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "hello there"}]});
    let a: Value = post(&mock, COUNT, h(), &body)
        .await
        .json()
        .await
        .expect("json");
    let mut with_system = body.clone();
    with_system["system"] = json!([{"type": "text", "text": "You are Droid, an AI software engineering agent built by Factory."}]);
    let b: Value = post(&mock, COUNT, h(), &with_system)
        .await
        .json()
        .await
        .expect("json");
    let (a, b) = (
        a["input_tokens"].as_u64().expect("a"),
        b["input_tokens"].as_u64().expect("b"),
    );
    assert!(a >= 1 && b > a, "{a} vs {b}");
    // Same estimate as the messages route reports.
    let mut msg = with_system.clone();
    msg["max_tokens"] = json!(100);
    let m: Value = post(&mock, MESSAGES, h(), &msg)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(m["usage"]["input_tokens"], b);
}

#[tokio::test]
async fn openai_default_replies() {
    let mock = MockUpstream::start().await;
    // Responses, non-stream, with reasoning.
    let body = json!({"model": "gpt-5", "input": [{"role": "user", "content": "hi"}],
                      "reasoning": {"effort": "low", "summary": "auto"}});
    let v: Value = post(&mock, RESPONSES, headers(Kind::OpenAi, "k"), &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "reasoning");
    assert_eq!(v["output"][1]["content"][0]["text"], MOCK_TEXT);
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["input_tokens"].as_u64().expect("in") + 12)
    );

    // Responses stream.
    let body = json!({"model": "gpt-5", "input": "hi", "stream": true});
    let resp = post(&mock, RESPONSES, headers(Kind::OpenAi, "k"), &body).await;
    let text = String::from_utf8(chunks(resp).await.concat()).expect("utf-8");
    assert!(!text.contains("[DONE]"));
    let events = parse_sse(&text);
    let mut deltas = String::new();
    for (i, (name, data)) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(data).expect("json");
        assert_eq!(v["sequence_number"], i);
        assert_eq!(v["type"].as_str(), name.as_deref());
        if v["type"] == "response.output_text.delta" {
            deltas.push_str(v["delta"].as_str().expect("delta"));
        }
    }
    assert_eq!(deltas, MOCK_TEXT);
    assert_eq!(events[0].0.as_deref(), Some("response.created"));
    assert_eq!(
        events.last().and_then(|e| e.0.as_deref()),
        Some("response.completed")
    );

    // Chat, non-stream.
    let body = json!({"model": "glm-4.6", "messages": [{"role": "user", "content": "hi"}]});
    let v: Value = post(&mock, CHAT, headers(Kind::Common, "k"), &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], MOCK_TEXT);
    assert_eq!(v["usage"]["completion_tokens"], 12);

    // Chat stream, with and without the usage chunk.
    for include_usage in [false, true] {
        let body = json!({"model": "glm-4.6", "stream": true,
                          "stream_options": {"include_usage": include_usage},
                          "messages": [{"role": "user", "content": "hi"}]});
        let resp = post(&mock, CHAT, headers(Kind::Common, "k"), &body).await;
        let text = String::from_utf8(chunks(resp).await.concat()).expect("utf-8");
        assert!(!text.contains("event:"));
        let events = parse_sse(&text);
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|(_, d)| serde_json::from_str(d).expect("json"))
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, MOCK_TEXT);
        let has_usage = chunks
            .iter()
            .any(|c| c["choices"] == json!([]) && c["usage"].is_object());
        assert_eq!(has_usage, include_usage);
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop")
        );
    }
}

#[tokio::test]
async fn openai_body_rules() {
    let mock = MockUpstream::start().await;
    let resp = post(
        &mock,
        RESPONSES,
        headers(Kind::OpenAi, "k"),
        &json!({"model": "gpt-5", "input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .starts_with("mock:")
    );
    let resp = post(
        &mock,
        CHAT,
        headers(Kind::Common, "k"),
        &json!({"model": "m", "messages": []}),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

async fn refresh(mock: &MockUpstream, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{WORKOS}", mock.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", WORKOS_CLIENT_ID),
        ])
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[tokio::test]
async fn workos_refresh_tokens_are_single_use_and_rotate() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-seed");
    let (status, v) = refresh(&mock, "rt-seed").await;
    assert_eq!(status, 200, "{v}");
    let access = v["access_token"].as_str().expect("access").to_owned();
    let next = v["refresh_token"].as_str().expect("refresh").to_owned();
    assert!(access.starts_with("at-") && next.starts_with("rt-"));
    assert_eq!(v["user"]["email"], "mock@example.com");
    assert_eq!(v["organization_id"], "org_mock");

    // The seed is spent.
    let (status, v) = refresh(&mock, "rt-seed").await;
    assert_eq!(status, 400);
    assert_eq!(v["error"], "invalid_grant");
    // The rotated one works once.
    let (status, v2) = refresh(&mock, &next).await;
    assert_eq!(status, 200);
    assert_eq!(
        mock.refresh_tokens(),
        vec![v2["refresh_token"].as_str().expect("rt").to_owned()]
    );
    assert_eq!(refresh(&mock, &next).await.0, 400);
    assert_eq!(mock.refresh_count(), 4);
    assert_eq!(mock.minted_access_tokens().len(), 2);

    // JSON bodies and wrong client ids are invalid requests.
    let resp = reqwest::Client::new()
        .post(format!("{}{WORKOS}", mock.url()))
        .json(&json!({"grant_type": "refresh_token", "refresh_token": "x", "client_id": WORKOS_CLIENT_ID}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "invalid_request");
    assert!(
        v["error_description"]
            .as_str()
            .expect("desc")
            .starts_with("mock:")
    );
    let resp = reqwest::Client::new()
        .post(format!("{}{WORKOS}", mock.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "client_factory"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);

    // Forced failure.
    mock.set_workos_failure(Some(503));
    let current = mock.refresh_tokens().pop().expect("a valid token");
    assert_eq!(refresh(&mock, &current).await.0, 503);
    mock.set_workos_failure(None);
    assert_eq!(
        refresh(&mock, &current).await.0,
        200,
        "a forced failure does not spend the token"
    );

    // Minted access tokens work until expired.
    let ok = post(
        &mock,
        MESSAGES,
        headers(Kind::Anthropic, &access),
        &anthropic_body(false),
    )
    .await;
    assert_eq!(ok.status(), 200);
    mock.expire_access_token(&access);
    let resp = post(
        &mock,
        MESSAGES,
        headers(Kind::Anthropic, &access),
        &anthropic_body(false),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "mock: token expired"}})
    );
    mock.expire_all_access_tokens();
    let other = mock
        .minted_access_tokens()
        .into_iter()
        .find(|t| *t != access)
        .expect("second token");
    let resp = post(
        &mock,
        MESSAGES,
        headers(Kind::Anthropic, &other),
        &anthropic_body(false),
    )
    .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn bearer_overrides_and_rule_matching() {
    let mock = MockUpstream::start().await;
    mock.set_bearer_status(
        "fk-broke",
        402,
        json!({"type": "error", "error": {"type": "payment_required", "message": "No credits"}}),
    );
    let h = |b: &str| headers(Kind::Anthropic, b);
    assert_eq!(
        post(&mock, MESSAGES, h("fk-broke"), &anthropic_body(false))
            .await
            .status(),
        402
    );
    assert_eq!(
        post(&mock, MESSAGES, h("fk-good"), &anthropic_body(false))
            .await
            .status(),
        200
    );
    mock.clear_bearer_status("fk-broke");
    assert_eq!(
        post(&mock, MESSAGES, h("fk-broke"), &anthropic_body(false))
            .await
            .status(),
        200
    );

    // First match wins; `times` counts down; bearer and query matching.
    mock.push_rule(
        Rule::new(
            Reply::anthropic_error(429, "rate_limit_error", "slow").with_header("retry-after", "7"),
        )
        .bearer("fk-1")
        .times(2),
    );
    mock.push_rule(Rule::new(Reply::json(200, json!({"scripted": "query"}))).path("beta=true"));
    let r = post(&mock, MESSAGES, h("fk-1"), &anthropic_body(false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        post(&mock, MESSAGES, h("fk-1"), &anthropic_body(false))
            .await
            .status(),
        429
    );
    let r = post(&mock, MESSAGES, h("fk-1"), &anthropic_body(false)).await;
    assert_eq!(r.status(), 200, "rule used up");
    let r = post(
        &mock,
        &format!("{MESSAGES}?beta=true"),
        h("fk-1"),
        &anthropic_body(false),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"scripted": "query"})
    );
    mock.clear_rules();

    // A Text reply with a delay.
    mock.push_rule(Rule::new(Reply::text(500, "upstream exploded").with_delay_ms(50)).once());
    let t0 = std::time::Instant::now();
    let r = post(&mock, MESSAGES, h("fk-1"), &anthropic_body(false)).await;
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.expect("text"), "upstream exploded");
}

#[tokio::test]
async fn truncated_aborted_and_raw_streams() {
    let mock = MockUpstream::start().await;
    let events = vec![
        SseEventSpec::data("{\"a\":1}"),
        SseEventSpec::data("{\"b\":\"你好\"}"),
    ];
    let full = encode_events(&events, false);

    mock.push_rule(Rule::new(Reply::sse(events.clone()).sse_options(0, true, false)).once());
    let resp = post(
        &mock,
        CHAT,
        headers(Kind::Common, "k"),
        &json!({"model": "m", "messages": [1]}),
    )
    .await;
    let got = chunks(resp).await.concat();
    assert!(got.len() > encode_events(&events[..1], false).len() && got.len() < full.len());
    assert_eq!(&full[..got.len()], &got[..]);

    mock.push_rule(Rule::new(Reply::sse(events.clone()).aborting()).once());
    let resp = post(
        &mock,
        CHAT,
        headers(Kind::Common, "k"),
        &json!({"model": "m", "messages": [1]}),
    )
    .await;
    let mut s = resp.bytes_stream();
    let mut seen = Vec::new();
    let mut failed = false;
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => seen.extend_from_slice(&c),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "an aborted body must end in a transfer error");
    assert_eq!(seen, full);

    mock.push_rule(
        Rule::new(Reply::raw(
            vec!["data: {\"x\"".into(), ":1}\n\n".into()],
            30,
        ))
        .once(),
    );
    let t0 = std::time::Instant::now();
    let resp = post(
        &mock,
        CHAT,
        headers(Kind::Common, "k"),
        &json!({"model": "m", "messages": [1]}),
    )
    .await;
    let got = chunks(resp).await;
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert_eq!(got.concat(), b"data: {\"x\":1}\n\n".to_vec());
    assert!(mock.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(mock.cancelled_streams(), 0);
}

#[tokio::test]
async fn client_disconnects_are_counted() {
    let mock = MockUpstream::start().await;
    // A slow stream the client abandons after the first chunk.
    let events: Vec<SseEventSpec> = (0..20)
        .map(|i| SseEventSpec::data(format!("{{\"i\":{i}}}")))
        .collect();
    mock.push_rule(Rule::new(Reply::sse(events).sse_options(100, false, false)).once());
    let resp = post(
        &mock,
        CHAT,
        headers(Kind::Common, "k"),
        &json!({"model": "m", "messages": [1]}),
    )
    .await;
    let mut s = resp.bytes_stream();
    assert!(s.next().await.is_some());
    assert_eq!(mock.active_streams(), 1);
    drop(s);
    assert!(
        mock.wait_until(Duration::from_secs(3), |m| m.cancelled_streams() == 1)
            .await
    );
    assert_eq!(mock.active_streams(), 0);

    // A stream that stalls after its pieces: the client's read timeout gives up.
    mock.push_rule(Rule::new(Reply::sse(vec![SseEventSpec::data("x")]).hanging_after()).once());
    let resp = post(
        &mock,
        CHAT,
        headers(Kind::Common, "k"),
        &json!({"model": "m", "messages": [1]}),
    )
    .await;
    let body = tokio::time::timeout(Duration::from_millis(300), chunks(resp)).await;
    assert!(body.is_err(), "a stalled stream never ends");
    assert!(
        mock.wait_until(Duration::from_secs(3), |m| m.cancelled_streams() == 2)
            .await
    );

    // Hang: no headers ever; the client times out.
    mock.push_rule(Rule::new(Reply::hang()).once());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let fut = client
        .post(format!("{}{CHAT}", mock.url()))
        .headers(headers(Kind::Common, "k"))
        .body(json!({"model": "m", "messages": [1]}).to_string())
        .send();
    let hung = tokio::spawn(fut);
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.hanging_requests() == 1)
            .await
    );
    assert!(hung.await.expect("join").is_err_and(|e| e.is_timeout()));
    assert!(
        mock.wait_idle(Duration::from_secs(3)).await,
        "hang released after the client gave up"
    );
}

#[tokio::test]
async fn shutdown_ends_hangs_and_streams() {
    let mock = MockUpstream::start().await;
    mock.push_rule(Rule::new(Reply::hang()).once());
    let url = format!("{}{CHAT}", mock.url());
    let hung = tokio::spawn(
        reqwest::Client::new()
            .post(url)
            .headers(headers(Kind::Common, "k"))
            .body(json!({"model": "m", "messages": [1]}).to_string())
            .send(),
    );
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.hanging_requests() == 1)
            .await
    );
    tokio::time::timeout(Duration::from_secs(6), mock.shutdown())
        .await
        .expect("shutdown in time");
    let resp = hung.await.expect("join").expect("answered");
    assert_eq!(resp.status(), 503);
    assert_eq!(mock.hanging_requests(), 0);
}

#[tokio::test]
async fn http_control_api() {
    let mock = MockUpstream::start().await;
    let c = reqwest::Client::new();
    let ctl = |p: &str| format!("{}/_mock/{p}", mock.url());
    let rule = Rule::new(Reply::openai_error(429, "rate_limit_exceeded", "slow"))
        .path(RESPONSES)
        .once();
    let r = c.post(ctl("rules")).json(&rule).send().await.expect("send");
    assert_eq!(r.status(), 200);
    let r = c
        .post(ctl("rules"))
        .json(&json!([{"path_contains": "/chat/", "reply": {"status": 418, "body": {"text": "teapot"}}}]))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(mock.rules().len(), 2);
    assert_eq!(
        c.post(ctl("rules"))
            .body("{nope")
            .send()
            .await
            .expect("send")
            .status(),
        400
    );
    let resp = post(
        &mock,
        RESPONSES,
        headers(Kind::OpenAi, "k"),
        &json!({"model": "g", "input": "x"}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let resp = post(
        &mock,
        CHAT,
        headers(Kind::Common, "k"),
        &json!({"model": "g", "messages": [1]}),
    )
    .await;
    assert_eq!(resp.status(), 418);
    assert_eq!(
        c.delete(ctl("rules")).send().await.expect("send").status(),
        200
    );
    assert!(mock.rules().is_empty());

    let list: Vec<Value> = c
        .get(ctl("requests"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["path"], RESPONSES);
    assert_eq!(list[0]["headers"]["x-factory-client"], "cli");
    assert!(
        list[0]["body"]
            .as_str()
            .expect("body string")
            .contains("\"input\"")
    );

    let r = c
        .post(ctl("refresh_tokens"))
        .json(&json!({"token": "rt-http"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(refresh(&mock, "rt-http").await.0, 200);
    let stats: Value = c
        .get(ctl("stats"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["refresh_count"], 1);

    assert_eq!(
        c.post(ctl("reset")).send().await.expect("send").status(),
        200
    );
    assert!(mock.requests().is_empty());
    assert!(mock.refresh_tokens().is_empty());
    assert_eq!(mock.refresh_count(), 0);
    // Reply bodies of every kind deserialize from the documented JSON.
    let hang: Rule = serde_json::from_value(json!({"reply": {"body": "hang"}})).expect("hang");
    assert_eq!(hang.reply.body, ReplyBody::Hang);
}

#[tokio::test]
async fn scripted_streams_from_builders_round_trip() {
    let mock = MockUpstream::start().await;
    let tool = anthropic::tool_use_stream_events(
        "msg_t",
        "claude-x",
        "toolu_01",
        "get_weather",
        &["{\"city\":", "\"巴黎\"}"],
        5,
        9,
    );
    let fc = openai::responses_function_call_stream_events(
        "resp_t",
        "gpt-5",
        "call_1",
        "f",
        &["{\"a\"", ":1}"],
        5,
        9,
    );
    let chat =
        openai::chat_tool_call_stream_events("c1", "glm", "call_1", "f", &["{}"], Some((1, 2)));
    for (path, kind, body, events) in [
        (MESSAGES, Kind::Anthropic, anthropic_body(true), tool),
        (
            RESPONSES,
            Kind::OpenAi,
            json!({"model": "gpt-5", "input": "x", "stream": true}),
            fc,
        ),
        (
            CHAT,
            Kind::Common,
            json!({"model": "glm", "messages": [1], "stream": true}),
            chat,
        ),
    ] {
        mock.push_rule(Rule::new(Reply::sse(events.clone())).once());
        let resp = post(&mock, path, headers(kind, "k"), &body).await;
        assert_eq!(chunks(resp).await.concat(), encode_events(&events, false));
    }
}
