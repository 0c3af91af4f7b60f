//! The WorkOS refresh under stress: a failing WorkOS is called once and then backed off (the
//! requests meanwhile get its error at once), a storm of upstream 401s causes at most one
//! exchange a minute, and shutdown waits for an exchange in flight so its rotated refresh token
//! reaches `data/auth.json` — even when the request that started it is gone.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

async fn call(url: &str) -> (u16, Value) {
    let (s, _, b) = post(url, &anthropic_body("claude-opus-4-6"), &[]).await;
    (s, json(&b))
}

/// `n` requests at once; their statuses and bodies.
async fn burst(url: &str, n: usize) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { call(&url).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Calls `url` until it answers 200 (or the deadline passes); the last answer.
async fn until_ok(url: &str, deadline: Duration) -> (u16, Value) {
    let end = Instant::now() + deadline;
    loop {
        let r = call(url).await;
        if r.0 == 200 || Instant::now() > end {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The most exchanges a backoff of 1 s doubling (each at least 80 % of nominal) allows within
/// `elapsed` of the first: one, plus one per backoff that can have run out.
fn max_exchanges(elapsed: Duration) -> usize {
    let e = elapsed.as_secs_f64();
    let (mut n, mut wait, mut at) = (1, 0.8, 0.8);
    while at <= e {
        n += 1;
        wait *= 2.0;
        at += wait;
    }
    n
}

#[tokio::test]
async fn a_failing_workos_is_called_once_then_backed_off() {
    let mock = MockUpstream::start().await;
    mock.set_workos_failure(Some(500));
    let started = Instant::now();
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-backoff-seed")
        .start()
        .await;
    // No access token yet: the background refresh tries at once, and fails.
    assert!(
        mock.wait_until(Duration::from_secs(30), |m| m.refresh_count() >= 1)
            .await
    );
    // Four waves of ten requests: every one gets the refresh failure, none calls WorkOS while
    // the backoff runs.
    let url = gw.url("/v1/messages");
    for _ in 0..4 {
        for (s, v) in burst(&url, 10).await {
            assert_eq!(s, 503, "{v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("refresh token could not be exchanged")
                    && msg.contains("WorkOS answered 500"),
                "{msg}"
            );
        }
    }
    let calls = mock.refresh_count();
    let allowed = max_exchanges(started.elapsed());
    assert!(
        calls <= allowed,
        "{calls} WorkOS calls for 40 requests within {:?} (the backoff allows {allowed})",
        started.elapsed()
    );
    assert!(mock.llm_requests().is_empty());
    // WorkOS recovers: once the backoff runs out the next exchange works, without a restart.
    mock.set_workos_failure(None);
    mock.add_refresh_token("rt-backoff-seed");
    let (s, v) = until_ok(&url, Duration::from_secs(60)).await;
    assert_eq!(s, 200, "{v}");
    assert!(mock.minted_access_tokens().contains(&last_bearer(&mock)));
}

#[tokio::test]
async fn a_storm_of_401s_refreshes_at_most_once_a_minute() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-storm-seed");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-storm-seed")
        .start()
        .await;
    let url = gw.url("/v1/messages");
    assert_eq!(call(&url).await.0, 200);
    let before = mock.refresh_count();
    assert_eq!(before, 1);
    // Factory now refuses every token.
    mock.push_rule(
        Rule::new(Reply::anthropic_error(
            401,
            "authentication_error",
            "invalid bearer token",
        ))
        .path("/v1/messages"),
    );
    for _ in 0..3 {
        for (s, v) in burst(&url, 10).await {
            assert_eq!(s, 401, "{v}");
            assert_eq!(v["error"]["type"], "authentication_error", "{v}");
        }
    }
    assert_eq!(
        mock.refresh_count(),
        before + 1,
        "thirty 401s within a minute: one exchange"
    );
    // Factory accepts tokens again: the token of that one exchange serves.
    mock.clear_rules();
    assert_eq!(call(&url).await.0, 200);
    assert_eq!(mock.refresh_count(), before + 1);
    assert!(mock.minted_access_tokens().contains(&last_bearer(&mock)));
}

#[tokio::test]
async fn shutdown_waits_for_an_exchange_in_flight_and_keeps_its_rotated_token() {
    let mock = MockUpstream::start().await;
    // WorkOS answers with a rotated pair, but slowly: longer than the client waits, and longer
    // than the client's wait + the 1 s grace + the 5 s shutdown grants background tasks.
    mock.push_rule(
        Rule::new(
            Reply::json(
                200,
                json!({"access_token": "at-slow-minted", "refresh_token": "rt-slow-rotated"}),
            )
            .with_delay_ms(9_000),
        )
        .path("/user_management/authenticate")
        .once(),
    );
    // A fresh access token on file (no background exchange is due) that Factory rejects: the
    // 401 starts the exchange.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::fs::write(
        data.join("auth.json"),
        serde_json::to_vec(&json!({
            "refresh_token": "rt-file-seed",
            "access_token": "at-file-current",
            "last_refresh": now_ms,
        }))
        .unwrap(),
    )
    .unwrap();
    mock.expire_access_token("at-file-current");
    let gw = gateway(&mock)
        .data_dir(&data)
        .config(json!({"timing": {"shutdown_grace_s": 1}}))
        .start()
        .await;
    // The client gives up long before WorkOS answers.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1_000))
        .no_proxy()
        .build()
        .unwrap();
    let r = impatient
        .post(gw.url("/v1/messages"))
        .json(&anthropic_body("claude-opus-4-6"))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out: {r:?}");
    assert!(
        mock.wait_until(Duration::from_secs(30), |m| m.refresh_count() == 1)
            .await,
        "the exchange is in flight"
    );
    let (data_dir, _, _temp) = gw.stop().await;
    // Shutdown returned: the rotated pair is on disk.
    let stored: Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("auth.json")).unwrap()).unwrap();
    assert_eq!(stored["refresh_token"], "rt-slow-rotated", "{stored}");
    assert_eq!(stored["access_token"], "at-slow-minted", "{stored}");
    assert_eq!(mock.refresh_count(), 1);
    // A restart resumes from it, and serves.
    mock.add_refresh_token("rt-slow-rotated");
    let gw = gateway(&mock).data_dir(&data_dir).start().await;
    let url = gw.url("/v1/messages");
    let (s, v) = until_ok(&url, Duration::from_secs(30)).await;
    assert_eq!(s, 200, "{v}");
    drop(dir);
}
