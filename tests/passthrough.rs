//! Same-format routes against the mock upstream: Factory's headers, system prompt injection, the
//! reasoning table, upstream errors, byte-for-byte streams, the common-type usage chunk and
//! client disconnects.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use droid2api_mock::{SseEventSpec, anthropic, encode_events, openai};
use futures_util::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "fk-passthrough-key-0001";
const PROMPT: &str = "You are Droid, an AI software engineering agent built by Factory.\n\n";

async fn gw_with(mock: &MockUpstream, config: Value) -> Gateway {
    gateway(mock)
        .env("FACTORY_API_KEY", KEY)
        .config(config)
        .start()
        .await
}

fn upstream_json(mock: &MockUpstream) -> Value {
    mock.last_llm_request().unwrap().json.unwrap()
}

#[tokio::test]
async fn factory_headers_on_every_route() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, json!({"user_agent": "factory-cli/9.9.9"})).await;
    let client_headers = [
        ("x-session-id", "sess-from-client"),
        ("x-stainless-os", "Linux"),
        ("anthropic-version", "2023-01-01"),
        ("x-api-key", "client-own-key-123"),
        ("authorization", "Bearer client-own-key-123"),
        ("x-secret-client-header", "never-forwarded"),
    ];
    let (s, _, _) = post(&gw.url("/v1/messages"), &json!({"model": "claude-opus-4-6", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]}), &client_headers).await;
    assert_eq!(s, 200);
    let r = mock.last_llm_request().unwrap();
    let h = |n: &str| {
        r.header(n)
            .unwrap_or_else(|| panic!("missing {n}"))
            .to_string()
    };
    assert_eq!(r.path, "/api/llm/a/v1/messages");
    assert_eq!(h("authorization"), format!("Bearer {KEY}"));
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("accept"), "application/json");
    assert_eq!(h("x-factory-client"), "cli");
    assert_eq!(h("x-session-id"), "sess-from-client");
    assert!(
        uuid::Uuid::parse_str(&h("x-assistant-message-id"))
            .unwrap()
            .get_version_num()
            == 4
    );
    assert_eq!(h("user-agent"), "factory-cli/9.9.9");
    assert_eq!(h("connection"), "keep-alive");
    assert_eq!(h("x-stainless-os"), "Linux");
    assert_eq!(h("x-stainless-arch"), "x64");
    assert_eq!(h("x-stainless-lang"), "js");
    assert_eq!(h("x-stainless-runtime"), "node");
    assert_eq!(h("x-stainless-retry-count"), "0");
    assert_eq!(h("x-stainless-package-version"), "0.57.0");
    assert_eq!(h("x-stainless-runtime-version"), "v24.3.0");
    assert_eq!(h("x-stainless-timeout"), "600");
    assert_eq!(h("x-stainless-helper-method"), "stream");
    assert_eq!(h("anthropic-version"), "2023-01-01");
    assert_eq!(h("x-api-key"), "placeholder");
    assert_eq!(h("x-api-provider"), "anthropic");
    assert!(r.header("x-secret-client-header").is_none());

    let (s, _, _) = post(&gw.url("/v1/responses"), &responses_body("gpt-5.4"), &[]).await;
    assert_eq!(s, 200);
    let r = mock.last_llm_request().unwrap();
    assert_eq!(r.path, "/api/llm/o/v1/responses");
    assert_eq!(r.header("x-api-provider"), Some("azure_openai"));
    assert_eq!(r.header("x-stainless-package-version"), Some("5.23.2"));
    // reqwest always sends an Accept header; `*/*` means the same as none (RFC 9110 §12.5.1).
    assert_eq!(r.header("accept").unwrap_or("*/*"), "*/*");
    assert!(r.header("x-api-key").is_none());
    assert!(r.header("anthropic-version").is_none());
    let fresh = r.header("x-session-id").unwrap().to_string();

    let (s, _, _) = post(&gw.url("/v1/chat/completions"), &chat_body("glm-5"), &[]).await;
    assert_eq!(s, 200);
    let r = mock.last_llm_request().unwrap();
    assert_eq!(r.path, "/api/llm/o/v1/chat/completions");
    assert_eq!(r.header("x-api-provider"), Some("fireworks"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_ne!(
        r.header("x-session-id").unwrap(),
        fresh,
        "a fresh session id per request"
    );

    let (s, _, b) = post(
        &gw.url("/v1/messages/count_tokens?beta=true"),
        &json!({"model": "claude-opus-4-6", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let r = mock.last_llm_request().unwrap();
    assert_eq!(r.path, "/api/llm/a/v1/messages/count_tokens");
    assert_eq!(r.query.as_deref(), Some("beta=true"));
    assert!(r.header("x-stainless-helper-method").is_none());
}

#[tokio::test]
async fn system_prompt_injection_cases() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, json!({})).await;
    let url = gw.url("/v1/messages?beta=true");
    let base = || json!({"model": "claude-opus-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "context_management": {"edits": []}});

    // Absent.
    post(&url, &base(), &[]).await;
    let up = upstream_json(&mock);
    assert_eq!(up["system"], json!([{"type": "text", "text": PROMPT}]));
    assert_eq!(
        up["context_management"],
        json!({"edits": []}),
        "unknown fields pass through"
    );
    assert_eq!(
        mock.last_llm_request().unwrap().query.as_deref(),
        Some("beta=true")
    );

    // A string: kept as the next block.
    let mut b = base();
    b["system"] = json!("Be terse.");
    post(&url, &b, &[]).await;
    assert_eq!(
        upstream_json(&mock)["system"],
        json!([{"type": "text", "text": PROMPT}, {"type": "text", "text": "Be terse."}])
    );

    // Blocks with cache markers: never edited, marker count unchanged, injected block unmarked.
    let mut b = base();
    let client_system = json!([
        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "B", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]);
    b["system"] = client_system.clone();
    b["messages"] = json!([{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]);
    let (s, _, _) = post(&url, &b, &[]).await;
    assert_eq!(s, 200);
    let up = upstream_json(&mock);
    let system = up["system"].as_array().unwrap();
    assert_eq!(system[0], json!({"type": "text", "text": PROMPT}));
    assert_eq!(Value::Array(system[1..].to_vec()), client_system);
    assert_eq!(up.to_string().matches("cache_control").count(), 3);
    assert_eq!(up["messages"], b["messages"]);

    // count_tokens gets the same injection, so the count matches what /v1/messages sends.
    let mut c = base();
    c.as_object_mut().unwrap().remove("max_tokens");
    c["system"] = json!("Be terse.");
    let (s, _, body) = post(&gw.url("/v1/messages/count_tokens"), &c, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(
        upstream_json(&mock)["system"],
        json!([{"type": "text", "text": PROMPT}, {"type": "text", "text": "Be terse."}])
    );
    let with_prompt = json(&body)["input_tokens"].as_u64().unwrap();
    assert!(with_prompt > 0);

    // Responses: instructions = prompt + client instructions.
    post(
        &gw.url("/v1/responses"),
        &json!({"model": "gpt-5.4", "input": "hi", "instructions": "Be kind."}),
        &[],
    )
    .await;
    assert_eq!(
        upstream_json(&mock)["instructions"],
        format!("{PROMPT}Be kind.")
    );
    post(
        &gw.url("/v1/responses"),
        &json!({"model": "gpt-5.4", "input": "hi"}),
        &[],
    )
    .await;
    assert_eq!(upstream_json(&mock)["instructions"], PROMPT);

    // Chat (common): a new first system message, client messages unchanged after it.
    let msgs = json!([{"role": "system", "content": [{"type": "text", "text": "S"}]}, {"role": "user", "content": "u"}]);
    post(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "glm-5", "messages": msgs}),
        &[],
    )
    .await;
    let up = upstream_json(&mock);
    assert_eq!(
        up["messages"][0],
        json!({"role": "system", "content": PROMPT})
    );
    assert_eq!(
        Value::Array(up["messages"].as_array().unwrap()[1..].to_vec()),
        msgs
    );

    // The model name is resolved (redirects) before it goes upstream.
    drop(gw);
    let gw = gw_with(
        &mock,
        json!({"model_redirects": {"sonnet": "claude-sonnet-4-6"}, "system_prompt": ""}),
    )
    .await;
    post(&gw.url("/v1/messages"), &json!({"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}), &[]).await;
    let up = upstream_json(&mock);
    assert_eq!(up["model"], "claude-sonnet-4-6");
    assert!(
        up.get("system").is_none(),
        "an empty system prompt injects nothing"
    );
}

/// One request per route for a reasoning level; returns the upstream bodies and the beta header.
async fn reasoning_round(level: &str, stream: bool) -> (Value, Option<String>, Value, Value) {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, models_config(level)).await;
    let beta = [(
        "anthropic-beta",
        "other-beta, interleaved-thinking-2025-05-14",
    )];
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &json!({"model": "claude-test", "max_tokens": 3000, "stream": stream, "thinking": {"type": "enabled", "budget_tokens": 2000},
                "messages": [{"role": "user", "content": "hi"}]}),
        &beta,
    )
    .await;
    assert_eq!(s, 200, "{level}: {}", String::from_utf8_lossy(&b));
    let r = mock.last_llm_request().unwrap();
    let anthropic = r.json.clone().unwrap();
    let beta_sent = r.header("anthropic-beta").map(str::to_string);
    let (s, _, _) = post(
        &gw.url("/v1/responses"),
        &json!({"model": "gpt-test", "input": "hi", "reasoning": {"effort": "minimal"}}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let responses = upstream_json(&mock);
    let (s, _, _) = post(&gw.url("/v1/chat/completions"), &json!({"model": "glm-test", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "minimal"}), &[]).await;
    assert_eq!(s, 200);
    let chat = upstream_json(&mock);
    (anthropic, beta_sent, responses, chat)
}

#[tokio::test]
async fn reasoning_levels_on_every_route() {
    // auto: the client's fields, untouched.
    let (a, beta, r, c) = reasoning_round("auto", false).await;
    assert_eq!(
        a["thinking"],
        json!({"type": "enabled", "budget_tokens": 2000})
    );
    assert_eq!(a["max_tokens"], 3000);
    assert_eq!(
        beta.as_deref(),
        Some("other-beta, interleaved-thinking-2025-05-14")
    );
    assert_eq!(r["reasoning"], json!({"effort": "minimal"}));
    assert_eq!(c["reasoning_effort"], "minimal");

    // off: removed everywhere, the interleaved beta too.
    let (a, beta, r, c) = reasoning_round("off", false).await;
    assert!(a.get("thinking").is_none());
    assert_eq!(a["max_tokens"], 3000);
    assert_eq!(beta.as_deref(), Some("other-beta"));
    assert!(r.get("reasoning").is_none());
    assert!(c.get("reasoning_effort").is_none());

    // Fixed levels: budgets 4096 / 12288 / 24576 and max_tokens raised by the rule. A
    // non-streaming request streams upstream too (the gateway assembles the answer), so
    // Anthropic's non-streaming cap of 21,333 no longer cuts the high budget.
    for (level, budget, max) in [
        ("low", 4096, 7096),
        ("medium", 12288, 15288),
        ("high", 24576, 27576),
    ] {
        let (a, beta, r, c) = reasoning_round(level, false).await;
        assert_eq!(
            a["thinking"],
            json!({"type": "enabled", "budget_tokens": budget}),
            "{level}"
        );
        assert_eq!(a["max_tokens"], max, "{level}");
        assert_eq!(
            beta.as_deref(),
            Some("other-beta, interleaved-thinking-2025-05-14"),
            "{level}"
        );
        assert_eq!(
            r["reasoning"],
            json!({"effort": level, "summary": "auto"}),
            "{level}"
        );
        assert_eq!(c["reasoning_effort"], level, "{level}");
    }
    // Streaming requests: the same.
    let (a, _, _, _) = reasoning_round("high", true).await;
    assert_eq!(
        a["thinking"],
        json!({"type": "enabled", "budget_tokens": 24576})
    );
    assert_eq!(a["max_tokens"], 27576);
}

#[tokio::test]
async fn configured_budgets_and_sampling_parameters_with_thinking() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", KEY)
        .env("REASONING_BUDGET_MEDIUM", "5000")
        .config(models_config("medium"))
        .start()
        .await;
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &json!({"model": "claude-test", "max_tokens": 100, "temperature": 0.3, "top_k": 40, "top_p": 0.5, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let a = upstream_json(&mock);
    assert_eq!(a["thinking"]["budget_tokens"], 5000);
    assert_eq!(a["max_tokens"], 5100);
    for gone in ["temperature", "top_k", "top_p"] {
        assert!(a.get(gone).is_none(), "{gone} is dropped with thinking");
    }
    // The mock (like Anthropic) accepted it: a thinking block came back.
    assert_eq!(json(&b)["content"][0]["type"], "thinking");
}

#[tokio::test]
async fn upstream_errors_keep_status_body_and_headers() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, json!({})).await;
    let body =
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}});
    mock.push_rule(
        Rule::new(
            Reply::json(429, body.clone())
                .with_header("retry-after", "7")
                .with_header("x-request-id", "up-123")
                .with_header("request-id", "req_abc"),
        )
        .path("/a/v1/messages")
        .once(),
    );
    let (s, h, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(json(&b), body, "relayed unchanged");
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["x-upstream-request-id"], "up-123");
    assert_eq!(h["request-id"], "req_abc");
    assert_ne!(h["x-request-id"], "up-123", "our own request id");

    // Responses: relayed unchanged too.
    let oai = json!({"error": {"message": "bad input", "type": "invalid_request_error", "param": "input", "code": null}});
    mock.push_rule(
        Rule::new(Reply::json(400, oai.clone()))
            .path("/o/v1/responses")
            .once(),
    );
    let (s, _, b) = post(&gw.url("/v1/responses"), &responses_body("gpt-5.4"), &[]).await;
    assert_eq!((s, json(&b)), (400, oai));

    // Chat route: translated into the OpenAI envelope; 529 becomes 503.
    mock.push_rule(Rule::new(Reply::json(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})).with_header("retry-after", "3")).path("/chat/completions").once());
    let (s, h, b) = post(&gw.url("/v1/chat/completions"), &chat_body("glm-5"), &[]).await;
    assert_eq!(s, 503);
    assert_eq!(h["retry-after"], "3");
    assert_eq!(
        json(&b),
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
    );

    // Upstream unreachable: 502 in the route's envelope.
    mock.push_rule(
        Rule::new(Reply::text(500, "plain failure"))
            .path("/a/v1/messages")
            .once(),
    );
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(
        (s, String::from_utf8_lossy(&b).to_string()),
        (500, "plain failure".to_string())
    );
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "still serving");
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_in_the_route_envelope() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", KEY)
        .env("FACTORY_BASE_URL", format!("http://127.0.0.1:{closed}"))
        .start()
        .await;
    let (s, h, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 502);
    let v = json(&b);
    assert_eq!(v["error"]["type"], "api_error");
    assert!(v["error"]["message"].as_str().unwrap().ends_with(&format!(
        "(request id: {})",
        h["x-request-id"].to_str().unwrap()
    )));
    let (s, _, b) = post(&gw.url("/v1/chat/completions"), &chat_body("glm-5"), &[]).await;
    assert_eq!(s, 502);
    assert_eq!(json(&b)["error"]["code"], "upstream_unreachable");
}

/// Reads a streaming response to the end, chunk by chunk.
async fn read_stream(resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test]
async fn streams_are_relayed_byte_for_byte() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, json!({})).await;
    let events = anthropic::text_stream_events(
        "msg_1",
        "claude-opus-4-6",
        "Hello 你好 🌍 world, split awkwardly",
        40,
        9,
        Some(("thinking…", "sig")),
    );
    let expected = encode_events(&events, true);
    mock.push_rule(
        Rule::new(Reply::sse(events).sse_options(0, false, true))
            .path("/a/v1/messages")
            .once(),
    );
    let resp = client()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "claude-opus-4-6", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert_eq!(
        read_stream(resp).await,
        expected,
        "CRLF, split UTF-8 and all: unchanged"
    );

    // Responses streams too.
    let events = openai::responses_text_stream_events(
        "resp_1",
        "gpt-5.4",
        "中文 and emoji 🚀",
        10,
        5,
        Some("thinking"),
    );
    let expected = encode_events(&events, false);
    mock.push_rule(Rule::new(Reply::sse(events)).path("/o/v1/responses").once());
    let resp = client()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "gpt-5.4", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(read_stream(resp).await, expected);
}

#[tokio::test]
async fn streams_are_not_buffered() {
    // The upstream sends its events and then stalls without ending: a buffering gateway would
    // deliver nothing; ours delivers every event already sent.
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, json!({})).await;
    let events =
        anthropic::text_stream_events("msg_2", "claude-opus-4-6", "partial answer", 5, 3, None);
    let sent = encode_events(&events[..4], false);
    mock.push_rule(
        Rule::new(Reply::sse(events[..4].to_vec()).hanging_after())
            .path("/a/v1/messages")
            .once(),
    );
    let resp = client()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "claude-opus-4-6", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut s = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < sent.len() {
        let c = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("bytes arrive while the upstream is still open");
        got.extend_from_slice(&c.unwrap().unwrap());
    }
    assert_eq!(got, sent);
    // The client leaves: the upstream request is cancelled.
    drop(s);
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.cancelled_streams() >= 1)
            .await,
        "upstream stream cancelled"
    );
}

#[tokio::test]
async fn common_streams_hide_the_usage_chunk_the_client_did_not_ask_for() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, json!({})).await;
    let frames = |b: &[u8]| -> Vec<Value> {
        String::from_utf8(b.to_vec())
            .unwrap()
            .split("\n\n")
            .filter_map(|f| f.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    };
    // Not asked: upstream was asked anyway, the usage-only chunk is dropped, [DONE] kept.
    let resp = client().post(gw.url("/v1/chat/completions")).json(&json!({"model": "glm-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    let body = read_stream(resp).await;
    assert_eq!(
        upstream_json(&mock)["stream_options"],
        json!({"include_usage": true})
    );
    let f = frames(&body);
    assert!(!f.is_empty());
    assert!(
        f.iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage-only chunk"
    );
    assert!(String::from_utf8_lossy(&body).ends_with("data: [DONE]\n\n"));
    let text: String = f
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, droid2api_mock::MOCK_TEXT);

    // Asked: relayed unchanged, usage chunk included.
    let events = openai::chat_text_stream_events("c1", "glm-5", "hi there", Some((7, 3)));
    let expected = encode_events(&events, false);
    mock.push_rule(
        Rule::new(Reply::sse(events))
            .path("/chat/completions")
            .once(),
    );
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "glm-5", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let body = read_stream(resp).await;
    assert_eq!(body, expected);
    assert!(
        frames(&body).iter().any(
            |c| c["choices"].as_array().unwrap().is_empty() && c["usage"]["prompt_tokens"] == 7
        )
    );
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let mock = MockUpstream::start().await;
    let gw = gw_with(&mock, json!({})).await;
    // Non-streaming: the upstream never answers; the client gives up.
    mock.push_rule(Rule::new(Reply::hang()).path("/a/v1/messages").once());
    let r = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .post(gw.url("/v1/messages"))
        .json(&anthropic_body("claude-opus-4-6"))
        .send()
        .await;
    assert!(r.is_err());
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.hanging_requests() == 0)
            .await,
        "the upstream request was dropped"
    );
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn usage_is_read_from_every_format_without_changing_the_bytes() {
    let mock = MockUpstream::start().await;
    let admin = "admin-key-usage-0123456789";
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", KEY)
        .env("ADMIN_ACCESS_KEY", admin)
        .config(json!({"models": [
            {"id": "claude-usage-probe", "type": "anthropic", "reasoning": "auto"},
            {"id": "gpt-usage-probe", "type": "openai", "reasoning": "auto"},
            {"id": "glm-usage-probe", "type": "common"}
        ]}))
        .start()
        .await;
    let events = vec![
        SseEventSpec::named(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "x", "content": [], "stop_reason": null, "usage": {"input_tokens": 11, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 1}}}),
        ),
        SseEventSpec::named(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}),
        ),
        SseEventSpec::named("message_stop", &json!({"type": "message_stop"})),
    ];
    mock.push_rule(Rule::new(Reply::sse(events)).path("/a/v1/messages").once());
    let resp = client().post(gw.url("/v1/messages")).json(&json!({"model": "claude-usage-probe", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    read_stream(resp).await;
    post(
        &gw.url("/v1/responses"),
        &json!({"model": "gpt-usage-probe", "input": "hi", "stream": true}),
        &[],
    )
    .await;
    post(&gw.url("/v1/chat/completions"), &json!({"model": "glm-usage-probe", "stream": true, "messages": [{"role": "user", "content": "hi"}]}), &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = client()
        .get(gw.url("/metrics"))
        .header("x-admin-key", admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |model: &str, kind: &str| -> u64 {
        let needle = format!("droid2api_tokens_total{{model=\"{model}\",kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(metric("claude-usage-probe", "input"), 11);
    assert_eq!(metric("claude-usage-probe", "cache_read"), 100);
    assert_eq!(metric("claude-usage-probe", "cache_write"), 5);
    assert_eq!(
        metric("claude-usage-probe", "output"),
        42,
        "message_delta is cumulative: replaces, not adds"
    );
    assert_eq!(
        metric("gpt-usage-probe", "output"),
        droid2api_mock::DEFAULT_OUTPUT_TOKENS
    );
    assert!(metric("gpt-usage-probe", "input") > 0);
    assert_eq!(
        metric("glm-usage-probe", "output"),
        droid2api_mock::DEFAULT_OUTPUT_TOKENS
    );
}
