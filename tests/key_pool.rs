//! The key pool behind the proxy: in-request failover, health transitions caused by traffic,
//! exhaustion answers, tiers, persistence of traffic-caused state.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use droid2api::credentials::pool::KeyPool;
use droid2api::store::records::KeyStatus;
use serde_json::json;

fn pool(gw: &Gateway) -> Arc<KeyPool> {
    Arc::clone(&gw.running.as_ref().unwrap().app.pool)
}

async fn add(p: &KeyPool, key: &str, group: Option<&str>) -> String {
    p.add_key(key, None, group).await.unwrap().id
}

fn status_of(p: &KeyPool, id: &str) -> (KeyStatus, bool) {
    let v = p.get(id).unwrap();
    (v.rec.status, v.cooling)
}

#[tokio::test]
async fn failover_on_402_401_429_500_until_a_healthy_key_answers() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .config(json!({"key_pool": {"max_attempts": 5}}))
        .start()
        .await;
    let p = pool(&gw);
    p.create_group("flaky", "Flaky", 1, "").await.unwrap();
    let bad = [
        ("fk-bad-402-key-001", 402),
        ("fk-bad-401-key-001", 401),
        ("fk-bad-429-key-001", 429),
        ("fk-bad-500-key-001", 500),
    ];
    let mut ids = Vec::new();
    for (k, status) in bad {
        ids.push(add(&p, k, Some("flaky")).await);
        mock.set_bearer_status(
            k,
            status,
            json!({"type": "error", "error": {"type": "x", "message": format!("mock {status}")}}),
        );
    }
    let good = add(&p, "fk-good-key-000001", None).await;
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(last_bearer(&mock), "fk-good-key-000001");
    assert_eq!(mock.llm_requests().len(), 5, "four failovers then success");
    assert_eq!(
        status_of(&p, &ids[0]),
        (KeyStatus::Banned, false),
        "402 bans"
    );
    assert_eq!(
        status_of(&p, &ids[1]),
        (KeyStatus::Active, false),
        "one 401 is not enough on live traffic"
    );
    assert_eq!(
        status_of(&p, &ids[2]),
        (KeyStatus::Active, true),
        "429 cools"
    );
    assert_eq!(
        status_of(&p, &ids[3]),
        (KeyStatus::Active, false),
        "one 5xx is under the threshold"
    );
    assert_eq!(
        p.get(&ids[0]).unwrap().rec.status_reason.as_deref(),
        Some("402 Payment Required: mock 402")
    );
    assert_eq!(p.get(&good).unwrap().rec.requests, 1);

    // The second 401 disables that key (threshold 2); the client still gets 200.
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(status_of(&p, &ids[1]).0, KeyStatus::Disabled);
}

#[tokio::test]
async fn every_attempt_failing_returns_the_last_upstream_error() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .config(json!({"key_pool": {"max_attempts": 2}}))
        .start()
        .await;
    let p = pool(&gw);
    for k in ["fk-fail-key-0001", "fk-fail-key-0002", "fk-fail-key-0003"] {
        add(&p, k, None).await;
        mock.set_bearer_status(k, 503, json!({"type": "error", "error": {"type": "api_error", "message": format!("down {k}")}}));
    }
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 503);
    let v = json(&b);
    assert_eq!(v["error"]["type"], "api_error", "relayed unchanged: {v}");
    assert_eq!(
        mock.llm_requests().len(),
        2,
        "max_attempts bounds the tries"
    );
    // On the chat route the last error is translated.
    let (s, _, b) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(json(&b)["error"]["type"], "server_error");
}

#[tokio::test]
async fn forbidden_is_not_retried_and_changes_nothing() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let a = add(&p, "fk-forbid-key-001", None).await;
    let _b = add(&p, "fk-forbid-key-002", None).await;
    mock.push_rule(
        Rule::new(Reply::anthropic_error(
            403,
            "permission_error",
            "content rejected",
        ))
        .once(),
    );
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(mock.llm_requests().len(), 1);
    assert_eq!(status_of(&p, &a), (KeyStatus::Active, false));
}

#[tokio::test]
async fn nothing_is_retried_after_bytes_were_streamed() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    add(&p, "fk-stream-key-001", None).await;
    add(&p, "fk-stream-key-002", None).await;
    let events = droid2api_mock::anthropic::text_stream_events(
        "m",
        "claude-opus-4-6",
        "partial text here",
        5,
        5,
        None,
    );
    mock.push_rule(Rule::new(Reply::sse(events).sse_options(0, true, false).aborting()).once());
    let r = client()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "claude-opus-4-6", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        mock.llm_requests().len(),
        1,
        "a started stream is never replayed"
    );
}

#[tokio::test]
async fn exhaustion_answers_429_with_retry_after_or_503() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let a = add(&p, "fk-cool-key-0001", None).await;
    mock.push_rule(
        Rule::new(
            Reply::anthropic_error(429, "rate_limit_error", "slow")
                .with_header("retry-after", "40"),
        )
        .once(),
    );
    let (s, h, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "40", "the upstream's own answer");
    assert!(status_of(&p, &a).1);
    // Now every active key cools: our own 429 with the soonest Retry-After, in the route's envelope.
    let (s, h, b) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 429);
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((38..=40).contains(&ra), "{ra}");
    assert_eq!(json(&b)["error"]["code"], "pool_cooling");
    // No active key at all and nothing else configured: 503 no_usable_key.
    p.toggle(&a, KeyStatus::Disabled).await.unwrap();
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[("authorization", "Bearer fk-client-own")],
    )
    .await;
    assert_eq!(s, 503);
    let v = json(&b);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no usable key"),
        "{v}"
    );
}

#[tokio::test]
async fn a_pool_without_active_keys_falls_through_to_the_refresh_token() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-fallthrough");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-fallthrough")
        .start()
        .await;
    let p = pool(&gw);
    let a = add(&p, "fk-only-key-00001", None).await;
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        last_bearer(&mock),
        "fk-only-key-00001",
        "the pool serves first"
    );
    p.toggle(&a, KeyStatus::Disabled).await.unwrap();
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(last_bearer(&mock), mock.minted_access_tokens()[0]);
}

#[tokio::test]
async fn strict_tiers_answer_429_instead_of_falling_back() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .config(json!({"key_pool": {"auto_fallback": false}}))
        .start()
        .await;
    let p = pool(&gw);
    p.create_group("free", "Free", 1, "").await.unwrap();
    add(&p, "fk-free-tier-key1", Some("free")).await;
    add(&p, "fk-paid-tier-key1", None).await;
    mock.set_bearer_status(
        "fk-free-tier-key1",
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
    );
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 429);
    assert!(
        mock.llm_requests()
            .iter()
            .all(|r| r.bearer() == Some("fk-free-tier-key1")),
        "the paid tier is never used"
    );
}

#[tokio::test]
async fn traffic_state_changes_and_counters_reach_the_database() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let a = add(&p, "fk-persisted-key-01", None).await;
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    mock.set_bearer_status(
        "fk-persisted-key-01",
        402,
        json!({"type": "error", "error": {"type": "billing_error", "message": "No credits"}}),
    );
    post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    // Within a second the ban and the counters are on disk (a separate connection sees them).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let db = rusqlite::Connection::open(gw.data_dir.join("droid2api.db")).unwrap();
    let (status, requests, input): (String, i64, i64) = db
        .query_row(
            "SELECT status, requests, input_tokens FROM keys WHERE id = ?1",
            [&a],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(status, "banned");
    assert_eq!(requests, 2);
    assert!(
        input > 0,
        "tokens of the first request were credited to the key"
    );
    let events: i64 = db.query_row("SELECT count(*) FROM key_events WHERE key_id = ?1 AND to_state = 'banned' AND source = 'traffic'", [&a], |r| r.get(0)).unwrap();
    assert_eq!(events, 1);
    // After a restart the key is still banned.
    let (data, home, _keep) = gw.stop().await;
    let gw = gateway(&mock).data_dir(&data).home_dir(&home).start().await;
    assert_eq!(status_of(&pool(&gw), &a).0, KeyStatus::Banned);
}

#[tokio::test]
async fn pool_metrics() {
    let mock = MockUpstream::start().await;
    let admin = "admin-key-pool-metrics-0001";
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", admin)
        .config(json!({"key_pool": {"max_attempts": 2}}))
        .start()
        .await;
    let p = pool(&gw);
    p.create_group("first", "First", 1, "").await.unwrap();
    add(&p, "fk-metric-key-0001", Some("first")).await;
    add(&p, "fk-metric-key-0002", None).await;
    mock.set_bearer_status(
        "fk-metric-key-0001",
        402,
        json!({"type": "error", "error": {"type": "billing_error", "message": "none"}}),
    );
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
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
        "droid2api_pool_failovers_total{status=\"402\"}",
        "droid2api_pool_transitions_total{reason=\"banned_402\"}",
        "droid2api_pool_keys{state=\"banned\"}",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
}

#[tokio::test]
async fn a_node_key_pool_json_is_imported_on_first_start_and_set_aside() {
    let mock = MockUpstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/node/key_pool.json"
    ))
    .unwrap();
    std::fs::write(data.path().join("key_pool.json"), &fixture).unwrap();
    let gw = gateway(&mock).data_dir(data.path()).start().await;
    let p = pool(&gw);
    let (counts, groups) = p.stats();
    assert_eq!(counts.total, 6, "six valid keys imported, three skipped");
    let banned = p.get("key_1728700000003_k9l0m1n2o").expect("ids are kept");
    assert_eq!(banned.rec.status, KeyStatus::Banned);
    assert_eq!(
        banned.rec.status_reason.as_deref(),
        Some("Payment Required - No Credits")
    );
    let disabled = p.get("key_1728700000002_f5g6h7i8j").unwrap();
    assert_eq!(disabled.rec.status, KeyStatus::Disabled);
    assert_eq!(
        disabled.rec.disabled_by,
        Some(droid2api::store::records::DisabledBy::Auto),
        "imported disabled keys count as disabled automatically"
    );
    assert_eq!(
        p.get("key_1728700000001_a1b2c3d4e").unwrap().rec.pool_group,
        "freebies"
    );
    assert!(
        groups
            .iter()
            .any(|(g, _)| g.id == "freebies" && g.priority == 1)
    );
    assert_eq!(
        p.settings().algorithm,
        "round-robin",
        "an unknown Node algorithm becomes round-robin"
    );
    // The file holds every key in clear: once imported it is set aside, private.
    assert!(
        !data.path().join("key_pool.json").exists(),
        "key_pool.json is renamed once imported"
    );
    let imported = data.path().join("key_pool.json.imported");
    assert_eq!(std::fs::read(&imported).unwrap(), fixture);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&imported).unwrap().permissions()
        ) & 0o777,
        0o600
    );
    // The imported pool serves.
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        last_bearer(&mock).starts_with("fk-fixture-freebies"),
        "the highest-priority tier serves"
    );
    // A restart does not import again (a deleted key stays deleted).
    p.delete("key_1728700000001_a1b2c3d4e").await.unwrap();
    let (data_dir, home, _keep) = gw.stop().await;
    let gw = gateway(&mock)
        .data_dir(&data_dir)
        .home_dir(&home)
        .start()
        .await;
    assert!(pool(&gw).get("key_1728700000001_a1b2c3d4e").is_none());
    assert_eq!(pool(&gw).stats().0.total, 5);
}
