//! The HTTP edge: client authentication, CORS, bad input, models, health, readiness, metrics.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const ACCESS_KEY: &str = "client-access-key-7f3a9c";

fn assert_openai_error(body: &[u8], request_id: &str) -> Value {
    let v = json(body);
    let e = &v["error"];
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("(request id: {request_id})")),
        "{v}"
    );
    assert!(e["type"].is_string(), "{v}");
    assert!(e.as_object().unwrap().contains_key("param"), "{v}");
    assert!(e.as_object().unwrap().contains_key("code"), "{v}");
    v
}

fn assert_anthropic_error(body: &[u8], request_id: &str) -> Value {
    let v = json(body);
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("(request id: {request_id})")),
        "{v}"
    );
    v
}

#[tokio::test]
async fn client_key_is_required_on_v1_routes_only() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("API_ACCESS_KEY", ACCESS_KEY)
        .env("FACTORY_API_KEY", "fk-server-key-000111")
        .start()
        .await;

    // Missing and wrong keys: 401 in the route's envelope.
    let (s, h, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 401);
    let v = assert_anthropic_error(&b, h["x-request-id"].to_str().unwrap());
    assert_eq!(v["error"]["type"], "authentication_error");
    let (s, h, b) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("glm-5"),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(s, 401);
    assert_openai_error(&b, h["x-request-id"].to_str().unwrap());
    let r = client()
        .get(gw.url("/v1/models"))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        mock.llm_requests().is_empty(),
        "nothing reached the upstream"
    );

    // Either header works.
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[("x-api-key", ACCESS_KEY)],
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("glm-5"),
        &[("authorization", &format!("Bearer {ACCESS_KEY}"))],
    )
    .await;
    assert_eq!(s, 200);
    // The access key never goes upstream: the server credential does.
    assert_eq!(last_bearer(&mock), "fk-server-key-000111");
    assert!(
        mock.llm_requests()
            .iter()
            .all(|r| !r.headers.values().any(|v| v.contains(ACCESS_KEY)))
    );

    // Health, readiness and the console's shell stay open.
    for path in ["/health", "/ready", "/"] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn cors_preflight_is_open_and_responses_allow_any_origin() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("API_ACCESS_KEY", ACCESS_KEY)
        .env("FACTORY_API_KEY", "fk-server-key-000111")
        .start()
        .await;
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/models"] {
        let r = client()
            .request(reqwest::Method::OPTIONS, gw.url(path))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, anthropic-beta",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert!(
            r.headers()["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        assert_eq!(
            r.headers()["access-control-allow-headers"],
            "authorization, content-type, anthropic-beta"
        );
    }
    let r = client()
        .get(gw.url("/v1/models"))
        .header("authorization", format!("Bearer {ACCESS_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", "fk-server-key-000111")
        .config(json!({
            "models": [
                {"id": "claude-test", "type": "anthropic", "reasoning": "auto"},
                {"id": "gpt-test", "type": "openai", "reasoning": "auto"},
                {"id": "glm-test", "type": "common"}
            ],
            "model_redirects": {"ghost": "no-such-model", "claude": "claude-test"}
        }))
        .start()
        .await;

    struct Case {
        path: &'static str,
        body: Vec<u8>,
        status: u16,
        needle: &'static str,
    }
    let j = |v: Value| serde_json::to_vec(&v).unwrap();
    let cases = vec![
        Case { path: "/v1/messages", body: j(json!({"model": "gpt-test", "max_tokens": 5, "messages": []})), status: 400, needle: "is of type openai; /v1/messages serves anthropic models only" },
        Case { path: "/v1/messages/count_tokens", body: j(json!({"model": "glm-test", "messages": []})), status: 400, needle: "serves anthropic models only" },
        Case { path: "/v1/responses", body: j(json!({"model": "claude-test", "input": "x"})), status: 400, needle: "is of type anthropic; /v1/responses serves openai models only" },
        Case { path: "/v1/messages", body: j(json!({"model": "ghost", "messages": []})), status: 404, needle: "model ghost not found" },
        Case { path: "/v1/chat/completions", body: j(json!({"model": "nope", "messages": []})), status: 404, needle: "model nope not found" },
        Case { path: "/v1/messages", body: b"{\"model\": \"claude-test\",".to_vec(), status: 400, needle: "not valid JSON" },
        Case { path: "/v1/chat/completions", body: b"not json at all".to_vec(), status: 400, needle: "not valid JSON" },
        Case { path: "/v1/responses", body: b"".to_vec(), status: 400, needle: "request body is empty" },
        Case { path: "/v1/responses", body: b"[1, 2]".to_vec(), status: 400, needle: "must be a JSON object" },
        Case { path: "/v1/messages", body: j(json!({"messages": []})), status: 400, needle: "model is required" },
        Case { path: "/v1/chat/completions", body: j(json!({"model": 42, "messages": []})), status: 400, needle: "model: expected a string" },
        Case { path: "/v1/messages", body: b"{\"model\": \"claude-test\", \"x\": \"\xff\xfe\"}".to_vec(), status: 400, needle: "not valid UTF-8" },
        Case { path: "/v1/chat/completions", body: b"{\"model\": \"glm-test\", \"messages\": [{\"role\": \"user\", \"content\": \"\\ud83d\"}]}".to_vec(), status: 400, needle: "not valid JSON" },
        Case { path: "/v1/messages", body: j(json!({"model": "claude", "max_tokens": 5, "system": 12, "messages": []})), status: 400, needle: "system: expected a string or an array" },
        Case { path: "/v1/chat/completions", body: j(json!({"model": "glm-test", "messages": "hi"})), status: 400, needle: "messages: expected an array" },
    ];
    for c in cases {
        let (s, h, b) = post_raw(&gw.url(c.path), c.body.clone(), &[]).await;
        assert_eq!(s, c.status, "{} {}", c.path, String::from_utf8_lossy(&b));
        let rid = h["x-request-id"].to_str().unwrap().to_string();
        let v = if c.path.starts_with("/v1/messages") {
            assert_anthropic_error(&b, &rid)
        } else {
            assert_openai_error(&b, &rid)
        };
        // Both envelopes keep the message at error.message.
        let msg = v["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(c.needle), "{}: {msg}", c.path);
        // The server still serves.
        let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    assert!(
        mock.llm_requests()
            .iter()
            .all(|r| r.path.ends_with("/a/v1/messages")),
        "bad input never reached the upstream"
    );
}

#[tokio::test]
async fn bodies_over_32_mib_get_413() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", "fk-server-key-000111")
        .start()
        .await;
    let mut big = b"{\"model\": \"claude-opus-4-6\", \"pad\": \"".to_vec();
    big.resize(32 * 1024 * 1024 + 10, b'a');
    big.extend_from_slice(b"\"}");
    let (s, h, b) = post_raw(&gw.url("/v1/messages"), big.clone(), &[]).await;
    assert_eq!(s, 413);
    let v = assert_anthropic_error(&b, h["x-request-id"].to_str().unwrap());
    assert_eq!(v["error"]["type"], "request_too_large");
    // Chunked upload without a content-length is cut off at the limit too.
    let stream = futures_util::stream::iter(
        big.chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_openai_error(&r.bytes().await.unwrap(), &rid);
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn models_list_and_lookup() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).config(json!({"models": [{"id": "claude-test", "name": "Test", "type": "anthropic", "reasoning": "high"}], "model_redirects": {"alias": "claude-test"}})).start().await;
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let m = &v["data"][0];
    assert_eq!(m["id"], "claude-test");
    assert_eq!(m["owned_by"], "anthropic");
    let created = m["created"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created <= now && created > now - 3600,
        "created is in seconds: {created}"
    );
    let r = client()
        .get(gw.url("/v1/models/alias"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], "claude-test");
    let r = client()
        .get(gw.url("/v1/models/unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v = assert_openai_error(&r.bytes().await.unwrap(), &rid);
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn health_ready_banner_and_unknown_routes() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let r = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = client().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ready"}));
    let page = client()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // `/` is the admin console's shell (tests/console_assets.rs has the rest).
    assert!(
        page.starts_with("<!doctype html>") && page.contains("/assets/"),
        "{page}"
    );
    let r = client().get(gw.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_openai_error(&r.bytes().await.unwrap(), &rid);
}

#[tokio::test]
async fn metrics_need_the_admin_key_when_set_and_count_requests() {
    let mock = MockUpstream::start().await;
    let admin = "admin-key-0123456789abcdef";
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", admin)
        .env("FACTORY_API_KEY", "fk-server-key-000111")
        .start()
        .await;
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    mock.push_rule(Rule::new(Reply::anthropic_error(500, "api_error", "boom")).once());
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 500);
    assert_eq!(
        client()
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(gw.url("/metrics"))
            .header("x-admin-key", "wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let text = client()
        .get(gw.url("/metrics"))
        .header("x-admin-key", admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "droid2api_requests_total{route=\"/v1/messages\",model=\"claude-opus-4-6\",status=\"200\"}",
        "droid2api_requests_total{route=\"/v1/messages\",model=\"claude-opus-4-6\",status=\"500\"}",
        "droid2api_request_duration_seconds_bucket{route=\"/v1/messages\"",
        "droid2api_time_to_first_byte_seconds_bucket{route=\"/v1/messages\"",
        "droid2api_upstream_errors_total{status=\"500\"}",
        "droid2api_tokens_total{model=\"claude-opus-4-6\",kind=\"output\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let r = client()
        .get(gw.url("/metrics"))
        .header("authorization", format!("Bearer {admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
