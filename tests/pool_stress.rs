//! The key pool under stress, through the real server: 90 % of 200 keys rate-limited by
//! Factory. The keys that cool stop being tried (no attempt is spent on them), the admin views
//! count them, the pool answers 429 with a Retry-After when every key cools, and bulk admin
//! actions over many keys answer in one call with per-id errors.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-pool-stress-0001";
const KEYS: usize = 200;
const HEALTHY: usize = 20;

fn key(i: usize) -> String {
    format!("fk-stress-key-{i:05}")
}

async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), gw.url(path))
        .header("x-admin-key", ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn stats(gw: &Gateway) -> Value {
    let (s, v) = admin(gw, "GET", "/admin/stats", None).await;
    assert_eq!(s, 200, "{v}");
    v["data"].clone()
}

async fn bulk(gw: &Gateway, ids: &[String], action: &str) -> Value {
    let (s, v) = admin(
        gw,
        "POST",
        "/admin/keys/bulk",
        Some(json!({"ids": ids, "action": action})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["data"].clone()
}

async fn message(gw: &Gateway) -> (u16, reqwest::header::HeaderMap, Value) {
    let (s, h, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    (s, h, json(&b))
}

#[tokio::test]
async fn most_keys_cooling_cost_no_attempts_and_all_cooling_answers_429() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN)
        .config(json!({"key_pool": {"max_attempts": 5}}))
        .start()
        .await;
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let (s, v) = admin(
        &gw,
        "POST",
        "/admin/keys/batch",
        Some(json!({"keys": keys})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<String> = v["data"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), KEYS);
    // Factory rate-limits every key but the first twenty.
    for k in &keys[HEALTHY..] {
        mock.set_bearer_status(
            k,
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        );
    }
    // Traffic cools the limited keys one 429 at a time (a request fails over up to 5 times).
    let mut requests = 0;
    while stats(&gw).await["cooling"] != (KEYS - HEALTHY) as u64 {
        let (s, _, v) = message(&gw).await;
        assert!(s == 200 || s == 429, "{s} {v}");
        requests += 1;
        assert!(requests < 1_000, "the limited keys never all cooled");
    }
    let st = stats(&gw).await;
    assert_eq!(
        (st["active"].as_u64(), st["total"].as_u64()),
        (Some(200), Some(200))
    );
    let (_, listed) = admin(&gw, "GET", "/admin/keys?status=cooling&limit=500", None).await;
    assert_eq!(
        listed["data"]["pagination"]["total"],
        (KEYS - HEALTHY) as u64
    );
    // Now every request is served by a healthy key on its first attempt.
    mock.clear_requests();
    let healthy: HashSet<&str> = keys[..HEALTHY].iter().map(String::as_str).collect();
    for _ in 0..60 {
        let (s, _, v) = message(&gw).await;
        assert_eq!(s, 200, "{v}");
        assert!(healthy.contains(last_bearer(&mock).as_str()));
    }
    assert_eq!(
        mock.llm_requests().len(),
        60,
        "no attempt went to a cooling key"
    );
    // Every key cools (the healthy ones disabled): 429 with the soonest Retry-After (the
    // default 60 s cooldown), in each route's envelope.
    let out = bulk(&gw, &ids[..HEALTHY], "disable").await;
    assert_eq!(out, json!({"count": HEALTHY, "errors": []}));
    let (s, h, v) = message(&gw).await;
    assert_eq!(s, 429, "{v}");
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&ra), "{ra}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cooling down"),
        "{v}"
    );
    let (s, h, b) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    assert_eq!(json(&b)["error"]["code"], "pool_cooling");
    // Re-enabled in one call, with an unknown id reported and the rest applied.
    let mut with_unknown = ids[..HEALTHY].to_vec();
    with_unknown.push("key_does_not_exist".into());
    let out = bulk(&gw, &with_unknown, "enable").await;
    assert_eq!(out["count"], HEALTHY as u64);
    assert_eq!(out["errors"][0]["id"], "key_does_not_exist");
    assert_eq!(message(&gw).await.0, 200);
    // Factory lifts the limits and an admin resets the cooling keys in one call: all serve.
    for k in &keys[HEALTHY..] {
        mock.clear_bearer_status(k);
    }
    let out = bulk(&gw, &ids[HEALTHY..], "reset").await;
    assert_eq!(out["count"], (KEYS - HEALTHY) as u64);
    assert_eq!(stats(&gw).await["cooling"], 0);
    mock.clear_requests();
    for _ in 0..KEYS {
        assert_eq!(message(&gw).await.0, 200);
    }
    let served: HashSet<String> = mock
        .llm_requests()
        .iter()
        .filter_map(|r| r.bearer().map(str::to_string))
        .collect();
    assert_eq!(served.len(), KEYS, "round-robin reaches every key again");
    // Bulk delete of the disabled ones, by status, in one call.
    bulk(&gw, &ids[..50], "disable").await;
    let (s, v) = admin(&gw, "DELETE", "/admin/keys/disabled", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["count"], 50);
    let st = stats(&gw).await;
    assert_eq!(
        (st["total"].as_u64(), st["disabled"].as_u64()),
        (Some(150), Some(0))
    );
    assert_eq!(message(&gw).await.0, 200);
}
