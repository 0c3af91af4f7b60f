//! Conversation-sticky keys (contract §14) through the real server and the mock: every turn of a
//! conversation on one pool key while it is healthy, one re-pin when that key fails, new
//! conversations spread by the algorithm, stickiness switched off at start or at run time, the
//! metric, and the settings' bad input.
//!
//! The tests of this file run one at a time (`SERIAL`): the metric is process-wide, so the
//! metric test counts exact deltas only while no other sticky traffic runs in this process.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use droid2api::credentials::pool::KeyPool;
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ADMIN: &str = "admin-key-sticky-tests-0001";
const KEYS: [&str; 5] = [
    "fk-sticky-key-0001",
    "fk-sticky-key-0002",
    "fk-sticky-key-0003",
    "fk-sticky-key-0004",
    "fk-sticky-key-0005",
];
const TURNS: usize = 20;

fn pool(gw: &Gateway) -> Arc<KeyPool> {
    Arc::clone(&gw.running.as_ref().unwrap().app.pool)
}

/// A gateway with the five pool keys (`key_pool` settings merged over `max_attempts: 5`).
async fn start(mock: &MockUpstream, key_pool: Value) -> Gateway {
    let mut config = models_config("auto");
    let mut kp = json!({"max_attempts": 5});
    for (k, v) in key_pool.as_object().unwrap() {
        kp[k] = v.clone();
    }
    config["key_pool"] = kp;
    let gw = gateway(mock)
        .env("ADMIN_ACCESS_KEY", ADMIN)
        .config(config)
        .start()
        .await;
    let p = pool(&gw);
    for k in KEYS {
        p.add_key(k, None, None).await.unwrap();
    }
    gw
}

/// The bearers of the LLM calls the mock saw since the last call (then forgets them).
fn bearers(mock: &MockUpstream) -> Vec<String> {
    let seen = mock
        .llm_requests()
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    mock.clear_requests();
    seen
}

/// One turn: a 200 answer, and the bearers the mock saw for it.
async fn turn(
    gw: &Gateway,
    mock: &MockUpstream,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let (s, _, b) = post(&gw.url(path), body, headers).await;
    assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
    bearers(mock)
}

fn claude_code_body(session: &str, turn: usize) -> Value {
    let mut b = anthropic_body("claude-test");
    b["metadata"] = json!({
        "user_id": format!("user_0a1b2c3d4e5f_account_11111111-2222-3333-4444-555555555555_session_{session}")
    });
    b["messages"] = json!([{"role": "user", "content": format!("turn {turn}")}]);
    b
}

fn chat_with(field: &str, value: &str) -> Value {
    let mut b = chat_body("gpt-test");
    b[field] = json!(value);
    b
}

fn error_body(status: u16) -> Value {
    json!({"type": "error", "error": {"type": "x", "message": format!("mock {status}")}})
}

/// Runs a conversation of [`TURNS`] turns; after `fail_at` turns its key answers `status`:
/// every turn before on one key, the failing turn fails over to another, every turn after on
/// that other key. Returns (first key, second key).
async fn conversation_repins_once(
    gw: &Gateway,
    mock: &MockUpstream,
    path: &str,
    body: impl Fn(usize) -> Value,
    headers: &[(&str, &str)],
    status: u16,
) -> (String, String) {
    let fail_at = 10;
    let first = turn(gw, mock, path, &body(0), headers).await;
    assert_eq!(first.len(), 1);
    let pinned = first[0].clone();
    for t in 1..fail_at {
        assert_eq!(
            turn(gw, mock, path, &body(t), headers).await,
            std::slice::from_ref(&pinned),
            "{path} turn {t}: the conversation's key"
        );
    }
    mock.set_bearer_status(&pinned, status, error_body(status));
    let failover = turn(gw, mock, path, &body(fail_at), headers).await;
    assert_eq!(failover.len(), 2, "{path}: the pinned key, then another");
    assert_eq!(failover[0], pinned);
    let repinned = failover[1].clone();
    assert_ne!(repinned, pinned);
    for t in fail_at + 1..TURNS {
        assert_eq!(
            turn(gw, mock, path, &body(t), headers).await,
            std::slice::from_ref(&repinned),
            "{path} turn {t}: re-pinned once, and stays"
        );
    }
    (pinned, repinned)
}

#[tokio::test]
async fn a_claude_code_conversation_stays_on_its_key_and_repins_once_on_429() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    conversation_repins_once(
        &gw,
        &mock,
        "/v1/messages",
        |t| claude_code_body("aaaaaaaa-0000-0000-0000-000000000001", t),
        &[],
        429,
    )
    .await;
    assert_eq!(pool(&gw).sticky_pins(), 1);
}

#[tokio::test]
async fn chat_conversations_by_prompt_cache_key_or_user_stay_and_repin_once_on_402() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    let (a, _) = conversation_repins_once(
        &gw,
        &mock,
        "/v1/chat/completions",
        |_| chat_with("prompt_cache_key", "cache-key-conversation-1"),
        &[],
        402,
    )
    .await;
    // A second conversation, named by `user` only: the banned key is not among its keys.
    let (b, c) = conversation_repins_once(
        &gw,
        &mock,
        "/v1/chat/completions",
        |_| chat_with("user", "user-conversation-2"),
        &[],
        402,
    )
    .await;
    assert!(![b.as_str(), c.as_str()].contains(&a.as_str()));
}

#[tokio::test]
async fn a_header_session_stays_on_its_key_on_every_route() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    let h = [("x-session-id", "header-session-1")];
    // The header wins over the body's own identity.
    let mut body = responses_body("gpt-test");
    body["prompt_cache_key"] = json!("something-else");
    conversation_repins_once(&gw, &mock, "/v1/responses", |_| body.clone(), &h, 500).await;
    // The same identity on the other routes lands on the conversation's (re-pinned) key.
    let now = turn(&gw, &mock, "/v1/responses", &body, &h).await;
    for (path, body) in [
        ("/v1/messages", anthropic_body("claude-test")),
        ("/v1/chat/completions", chat_body("glm-test")),
        ("/v1/messages", anthropic_body("claude-test")),
    ] {
        assert_eq!(turn(&gw, &mock, path, &body, &h).await, now, "{path}");
    }
    let cc = [("x-claude-code-session-id", "header-session-2")];
    let first = turn(
        &gw,
        &mock,
        "/v1/messages",
        &anthropic_body("claude-test"),
        &cc,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            turn(
                &gw,
                &mock,
                "/v1/messages",
                &anthropic_body("claude-test"),
                &cc
            )
            .await,
            first
        );
    }
}

#[tokio::test]
async fn count_tokens_follows_a_conversation_but_creates_no_pin() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    let p = pool(&gw);
    let body = claude_code_body("count-session", 0);
    turn(&gw, &mock, "/v1/messages/count_tokens", &body, &[]).await;
    assert_eq!(p.sticky_pins(), 0, "count_tokens made no pin");
    let pinned = turn(&gw, &mock, "/v1/messages", &body, &[]).await;
    assert_eq!(p.sticky_pins(), 1);
    for _ in 0..4 {
        assert_eq!(
            turn(&gw, &mock, "/v1/messages/count_tokens", &body, &[]).await,
            pinned,
            "count_tokens follows the pin"
        );
    }
}

#[tokio::test]
async fn different_conversations_spread_over_the_keys() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    let mut keys = std::collections::BTreeSet::new();
    for c in 0..5 {
        let body = claude_code_body(&format!("spread-{c}"), 0);
        let first = turn(&gw, &mock, "/v1/messages", &body, &[]).await;
        for _ in 0..3 {
            assert_eq!(turn(&gw, &mock, "/v1/messages", &body, &[]).await, first);
        }
        keys.insert(first[0].clone());
    }
    assert_eq!(keys.len(), 5, "round-robin: five conversations, five keys");
}

/// The distinct keys of [`TURNS`] turns of one conversation.
async fn keys_of_turns(gw: &Gateway, mock: &MockUpstream) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    for t in 0..TURNS {
        let body = claude_code_body("rotating", t);
        keys.extend(turn(gw, mock, "/v1/messages", &body, &[("x-session-id", "s")]).await);
    }
    keys
}

#[tokio::test]
async fn with_sticky_sessions_off_turns_rotate_at_start_and_at_run_time() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({"sticky_sessions": false})).await;
    assert_eq!(keys_of_turns(&gw, &mock).await.len(), 5, "round-robin");
    assert_eq!(pool(&gw).sticky_pins(), 0);

    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    assert_eq!(
        keys_of_turns(&gw, &mock).await.len(),
        1,
        "sticky by default"
    );
    let (s, _, b) = put_config(&gw, json!({"sticky_sessions": false})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["key_pool"]["sticky_sessions"], false);
    assert_eq!(pool(&gw).sticky_pins(), 0, "the pins go at once");
    assert_eq!(
        keys_of_turns(&gw, &mock).await.len(),
        5,
        "effective at once"
    );
    let (s, _, _) = put_config(&gw, json!({"sticky_sessions": true, "sticky_ttl_s": 60})).await;
    assert_eq!(s, 200);
    assert_eq!(keys_of_turns(&gw, &mock).await.len(), 1);
}

async fn put_config(gw: &Gateway, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client()
        .put(gw.url("/admin/config"))
        .header("x-admin-key", ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

async fn sticky_metric(gw: &Gateway) -> [u64; 3] {
    let text = client()
        .get(gw.url("/metrics"))
        .header("x-admin-key", ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    ["hit", "miss", "repin"].map(|r| {
        let prefix = format!("droid2api_sticky_total{{result=\"{r}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    })
}

#[tokio::test]
async fn the_metric_counts_hits_misses_and_repins() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    let before = sticky_metric(&gw).await;
    let body = |t| claude_code_body("metric-session", t);
    let first = turn(&gw, &mock, "/v1/messages", &body(0), &[]).await; // miss
    for t in 1..4 {
        turn(&gw, &mock, "/v1/messages", &body(t), &[]).await; // 3 hits
    }
    // No identity: not counted.
    turn(
        &gw,
        &mock,
        "/v1/messages",
        &anthropic_body("claude-test"),
        &[],
    )
    .await;
    // The pinned key fails: its pick was a hit, the failover's pick a repin.
    mock.set_bearer_status(&first[0], 429, error_body(429));
    assert_eq!(
        turn(&gw, &mock, "/v1/messages", &body(4), &[]).await.len(),
        2
    );
    turn(&gw, &mock, "/v1/messages", &body(5), &[]).await; // hit
    let after = sticky_metric(&gw).await;
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, [5, 1, 1], "hit, miss, repin");
}

#[tokio::test]
async fn bad_sticky_settings_are_refused_naming_the_field_and_the_server_still_serves() {
    let _serial = SERIAL.lock().await;
    let mock = MockUpstream::start().await;
    let gw = start(&mock, json!({})).await;
    for (body, message) in [
        (
            json!({"sticky_ttl_s": -1}),
            "key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got -1",
        ),
        (
            json!({"sticky_ttl_s": "x"}),
            r#"key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got "x""#,
        ),
        (
            json!({"sticky_ttl_s": 0}),
            "key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got 0",
        ),
        (
            json!({"sticky_ttl_s": 604801}),
            "key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got 604801",
        ),
        (
            json!({"sticky_ttl_s": 1.5}),
            "key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got 1.5",
        ),
        (
            json!({"sticky_sessions": "no"}),
            r#"key_pool.sticky_sessions: expected true or false, got "no""#,
        ),
        (
            json!({"sticky_sessions": 0, "sticky_ttl_s": 10}),
            "key_pool.sticky_sessions: expected true or false, got 0",
        ),
        (
            json!({"sticky_sessions": null}),
            "sticky_sessions: expected a value, got null",
        ),
    ] {
        let (s, _, v) = put_config(&gw, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(message), "{body}: {m}");
    }
    // Nothing changed, and the gateway still serves a sticky conversation.
    let settings = pool(&gw).settings();
    assert!(settings.sticky_sessions);
    assert_eq!(settings.sticky_ttl_s, 3600);
    assert_eq!(keys_of_turns(&gw, &mock).await.len(), 1);
}
