//! Credentials never reach a client or an admin view through an upstream message (contract
//! §9): upstream error bodies (relayed on pass-through routes, translated on chat), mid-stream
//! error events, 402 reasons that become a key's `status_reason`, key-test messages and
//! balance-sync failures have every pool key, the level-1 key and the client's own credential
//! replaced by its mask. Normal stream deltas are never rewritten.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::streams::*;
use common::*;
use droid2api::credentials::pool::KeyPool;
use droid2api::secret::mask;
use droid2api_mock::{SseEventSpec, anthropic, openai};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-for-scrubbing-tests-0001";
const KEY: &str = "fk-scrub-secret-key-0000000001";
const OTHER: &str = "fk-scrub-other-pool-key-000002";

fn pool(gw: &Gateway) -> Arc<KeyPool> {
    Arc::clone(&gw.running.as_ref().unwrap().app.pool)
}

/// A gateway with `KEY` (and `OTHER`, in a lower tier so `KEY` serves) in its pool.
async fn pool_gateway(mock: &MockUpstream) -> (Gateway, String) {
    let gw = gateway(mock)
        .env("ADMIN_ACCESS_KEY", ADMIN)
        .config(config(30, 15))
        .start()
        .await;
    let p = pool(&gw);
    p.create_group("spare", "Spare", 5000, "").await.unwrap();
    let id = p.add_key(KEY, None, None).await.unwrap().id;
    p.add_key(OTHER, None, Some("spare")).await.unwrap();
    (gw, id)
}

fn echo(secret: &str) -> String {
    format!("invalid credential {secret}; also {OTHER} was seen")
}

/// `text` holds neither secret, and the mask of `secret` instead.
fn assert_scrubbed(what: &str, text: &str, secret: &str) {
    assert!(!text.contains(secret), "{what}: the secret leaked: {text}");
    assert!(
        !text.contains(OTHER),
        "{what}: another pool key leaked: {text}"
    );
    assert!(
        text.contains(&mask(secret)),
        "{what}: the mask {} is shown instead: {text}",
        mask(secret)
    );
}

async fn admin(gw: &Gateway, method: reqwest::Method, path: &str) -> Value {
    let resp = client()
        .request(method, gw.url(path))
        .header("x-admin-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json::<Value>().await.unwrap()["data"].clone()
}

#[tokio::test]
async fn upstream_error_bodies_reach_the_client_with_masks_only() {
    let mock = MockUpstream::start().await;
    let (gw, _) = pool_gateway(&mock).await;

    // /v1/messages: a 400 relayed unchanged, but for the key.
    mock.push_rule(
        Rule::new(Reply::anthropic_error(
            400,
            "invalid_request_error",
            &echo(KEY),
        ))
        .path(ANTHROPIC_UP)
        .bearer(KEY)
        .once(),
    );
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 400);
    let text = String::from_utf8_lossy(&b).into_owned();
    assert_scrubbed("messages 400", &text, KEY);
    assert_eq!(json(&b)["error"]["type"], "invalid_request_error");

    // /v1/chat/completions for a common model: a 500 (both keys).
    for k in [KEY, OTHER] {
        mock.push_rule(
            Rule::new(Reply::openai_error(500, "server_error", &echo(k)))
                .path(CHAT_UP)
                .bearer(k)
                .once(),
        );
    }
    let (s, _, b) = post(&gw.url("/v1/chat/completions"), &chat_body("glm-test"), &[]).await;
    assert_eq!(s, 500);
    assert_scrubbed("common chat 500", &String::from_utf8_lossy(&b), OTHER);

    // Still serving.
    let (s, _, _) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200);

    // /v1/chat/completions over Anthropic: a 429 translated into the OpenAI envelope (both
    // keys answer it, so the last answer is relayed; both then cool, so this comes last).
    for k in [KEY, OTHER] {
        mock.push_rule(
            Rule::new(Reply::anthropic_error(429, "rate_limit_error", &echo(KEY)))
                .path(ANTHROPIC_UP)
                .bearer(k)
                .once(),
        );
    }
    let (s, _, b) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("claude-test"),
        &[],
    )
    .await;
    assert_eq!(s, 429);
    assert_scrubbed("chat 429", &String::from_utf8_lossy(&b), KEY);
    assert_eq!(json(&b)["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn the_level_one_key_and_the_clients_own_credential_are_masked_too() {
    const ENV_KEY: &str = "fk-scrub-level-one-key-000001";
    const CLIENT_KEY: &str = "client-own-factory-key-0000001";
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", ENV_KEY)
        .config(config(30, 15))
        .start()
        .await;
    mock.push_rule(
        Rule::new(Reply::anthropic_error(
            401,
            "authentication_error",
            &format!("bad {ENV_KEY}"),
        ))
        .path(ANTHROPIC_UP)
        .once(),
    );
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 401);
    let text = String::from_utf8_lossy(&b);
    assert!(
        !text.contains(ENV_KEY) && text.contains(&mask(ENV_KEY)),
        "{text}"
    );

    // Level 5: nothing configured, the client sends its own key.
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).config(config(30, 15)).start().await;
    mock.push_rule(
        Rule::new(Reply::openai_error(
            401,
            "invalid_api_key",
            &format!("bad {CLIENT_KEY}"),
        ))
        .path(RESPONSES_UP)
        .once(),
    );
    let auth = format!("Bearer {CLIENT_KEY}");
    let (s, _, b) = post(
        &gw.url("/v1/responses"),
        &responses_body("gpt-test"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(s, 401);
    let text = String::from_utf8_lossy(&b);
    assert!(
        !text.contains(CLIENT_KEY) && text.contains(&mask(CLIENT_KEY)),
        "{text}"
    );
}

#[tokio::test]
async fn a_402_reason_becomes_a_masked_status_reason() {
    let mock = MockUpstream::start().await;
    let (gw, id) = pool_gateway(&mock).await;
    mock.push_rule(
        Rule::new(Reply::anthropic_error(402, "billing_error", &echo(KEY)))
            .path(ANTHROPIC_UP)
            .bearer(KEY)
            .once(),
    );
    // KEY is banned, OTHER serves the request.
    let (s, _, _) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200);
    let rec = admin(&gw, reqwest::Method::GET, &format!("/admin/keys/{id}")).await;
    assert_eq!(rec["status"], "banned", "{rec}");
    assert_scrubbed("status_reason", rec["status_reason"].as_str().unwrap(), KEY);
    let history = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/admin/keys/{id}/history"),
    )
    .await;
    assert_scrubbed("history", &history.to_string(), KEY);
}

#[tokio::test]
async fn key_test_messages_are_masked() {
    let mock = MockUpstream::start().await;
    let (gw, id) = pool_gateway(&mock).await;
    for (status, ty) in [(500, "api_error"), (402, "billing_error")] {
        mock.push_rule(
            Rule::new(Reply::anthropic_error(status, ty, &echo(KEY)))
                .path(ANTHROPIC_UP)
                .bearer(KEY)
                .once(),
        );
        let report = admin(
            &gw,
            reqwest::Method::POST,
            &format!("/admin/keys/{id}/test"),
        )
        .await;
        assert_eq!(report["status"], status, "{report}");
        assert_scrubbed("key test", report["message"].as_str().unwrap(), KEY);
    }
    let rec = admin(&gw, reqwest::Method::GET, &format!("/admin/keys/{id}")).await;
    assert_scrubbed("status_reason after a test", &rec.to_string(), KEY);
}

#[tokio::test]
async fn balance_sync_failures_are_masked() {
    let mock = MockUpstream::start().await;
    let (gw, id) = pool_gateway(&mock).await;
    mock.push_rule(
        Rule::new(Reply::json(402, json!({"error": echo(KEY)})))
            .path("/api/organization")
            .bearer(KEY),
    );
    let report = admin(&gw, reqwest::Method::POST, "/factory/balance/sync").await;
    let failure = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("a failure for {id}: {report}"));
    assert_scrubbed("sync failure", failure["error"].as_str().unwrap(), KEY);
    let rec = admin(&gw, reqwest::Method::GET, &format!("/admin/keys/{id}")).await;
    assert_eq!(rec["status"], "banned", "{rec}");
    assert_scrubbed(
        "status_reason after a sync",
        rec["status_reason"].as_str().unwrap(),
        KEY,
    );
}

#[tokio::test]
async fn error_events_mid_stream_are_masked_and_normal_deltas_are_not_touched() {
    let mock = MockUpstream::start().await;
    let (gw, _) = pool_gateway(&mock).await;
    // The model's own text mentions the key (a delta: relayed as it is).
    let delta_text = format!("you pasted {KEY} here");

    // /v1/messages (pass-through): deltas, then an error event echoing the key.
    let mut events = anthropic::text_stream_events("msg_x", "claude-test", &delta_text, 5, 5, None);
    events.truncate(4);
    events.push(SseEventSpec::named(
        "error",
        &anthropic::error_body("overloaded_error", &echo(KEY)),
    ));
    mock.push_rule(
        Rule::new(Reply::sse(events))
            .path(ANTHROPIC_UP)
            .bearer(KEY)
            .once(),
    );
    let body = json!({"model": "claude-test", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let s = stream(&gw, "/v1/messages", &body, &[]).await;
    assert!(s.clean);
    let evs = s.events();
    let (last_name, last) = s.last();
    assert_eq!(last_name.as_deref(), Some("error"));
    assert_eq!(
        last["error"]["type"], "overloaded_error",
        "relayed, not replaced: {last}"
    );
    assert_scrubbed("messages error event", &last.to_string(), KEY);
    let deltas: String = evs
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["delta"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        delta_text.starts_with(&deltas) && !deltas.is_empty(),
        "deltas unchanged: {deltas:?}"
    );

    // /v1/responses (pass-through): response.failed echoing the key.
    let mut events = openai::responses_text_stream_events("resp_x", "gpt-test", "fine", 5, 5, None);
    events.truncate(4);
    events.push(SseEventSpec::named(
        "response.failed",
        &json!({"type": "response.failed", "sequence_number": 50, "response": {
            "id": "resp_x", "object": "response", "status": "failed", "output": [],
            "error": {"code": "server_error", "message": echo(KEY)}}}),
    ));
    mock.push_rule(
        Rule::new(Reply::sse(events))
            .path(RESPONSES_UP)
            .bearer(KEY)
            .once(),
    );
    let body = json!({"model": "gpt-test", "stream": true, "input": "hi"});
    let s = stream(&gw, "/v1/responses", &body, &[]).await;
    let (name, last) = s.last();
    assert_eq!(name.as_deref(), Some("response.failed"));
    assert_scrubbed("responses failed event", &last.to_string(), KEY);

    // Chat over Anthropic (translated): the error chunk.
    let mut events = anthropic::text_stream_events("msg_y", "claude-test", "fine", 5, 5, None);
    events.truncate(4);
    events.push(SseEventSpec::named(
        "error",
        &anthropic::error_body("api_error", &echo(KEY)),
    ));
    mock.push_rule(
        Rule::new(Reply::sse(events))
            .path(ANTHROPIC_UP)
            .bearer(KEY)
            .once(),
    );
    let body = json!({"model": "claude-test", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let s = stream(&gw, "/v1/chat/completions", &body, &[]).await;
    let (_, last) = s.last();
    assert!(last.get("error").is_some(), "{last}");
    assert_scrubbed("chat error chunk", &last.to_string(), KEY);
    assert!(!s.text().contains(KEY), "{}", s.text());
}

#[tokio::test]
async fn holding_back_error_events_never_delays_a_normal_stream() {
    // Responses lifecycle events carry `"error":null`: they are complete in the first piece,
    // so they leave at once, and so does the part of the next event that came with them.
    let mock = MockUpstream::start().await;
    let (gw, _) = pool_gateway(&mock).await;
    let events =
        openai::responses_text_stream_events("resp_l", "gpt-test", "live text", 5, 5, None);
    // As the real API sends it: the full response object, `"error": null` included.
    let created = droid2api_mock::encode_events(
        &[SseEventSpec::named(
            "response.created",
            &json!({"type": "response.created", "sequence_number": 0, "response": {
                "id": "resp_l", "object": "response", "status": "in_progress",
                "error": null, "output": []}}),
        )],
        false,
    );
    assert!(String::from_utf8_lossy(&created).contains("\"error\":null"));
    let next = droid2api_mock::encode_events(&events[2..3], false);
    let mut first = String::from_utf8(created.clone()).unwrap();
    first.push_str(std::str::from_utf8(&next[..next.len() / 2]).unwrap());
    mock.push_rule(
        Rule::new(Reply::raw(vec![first.clone()], 0).hanging_after())
            .path(RESPONSES_UP)
            .once(),
    );
    let resp = client()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "gpt-test", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut s = resp.bytes_stream();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.len() < first.len() {
        use futures_util::StreamExt;
        let c = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("the bytes the upstream sent arrive while it stalls")
            .expect("the stream is open")
            .unwrap();
        got.extend_from_slice(&c);
    }
    assert_eq!(String::from_utf8_lossy(&got), first);
}
