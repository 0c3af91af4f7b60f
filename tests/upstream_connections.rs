//! Upstream connections and the replay rule (contract §10).
//!
//! - Against an HTTP/2 upstream capping concurrent streams per connection at 100 (the mock over
//!   h2c, as Factory's TLS front over ALPN), 500 concurrent requests are all served and no key
//!   cools: the gateway spreads them over several connections instead of letting them wait for
//!   a stream slot (a wait that used to count as the key's timeout).
//! - A request is replayed on another key only when nothing of it reached the upstream: a
//!   timeout after the request left is answered 504 after one upstream call; a connection
//!   that cannot be opened is tried on the next key.
//! - A stream the upstream refused before reading it (HTTP/2 `REFUSED_STREAM`) is sent again,
//!   at most twice, without counting against the key.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::streams::*;
use common::*;
use droid2api::credentials::pool::KeyPool;
use droid2api_mock::{MockOptions, anthropic};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-for-connection-tests-0001";
const KEYS: [&str; 3] = [
    "fk-conn-test-key-0000000001",
    "fk-conn-test-key-0000000002",
    "fk-conn-test-key-0000000003",
];

fn pool(gw: &Gateway) -> Arc<KeyPool> {
    Arc::clone(&gw.running.as_ref().unwrap().app.pool)
}

async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let resp = client()
        .get(gw.url(path))
        .header("x-admin-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json::<Value>().await.unwrap()["data"].clone()
}

fn models(idle_read_timeout_s: u64) -> Value {
    json!({
        "models": [{"id": "claude-test", "type": "anthropic", "reasoning": "off"}],
        "timing": {"idle_read_timeout_s": idle_read_timeout_s},
    })
}

#[tokio::test]
async fn five_hundred_concurrent_requests_over_a_capped_http2_upstream_are_all_served() {
    let mock = MockUpstream::start_with(MockOptions {
        http2_max_concurrent_streams: Some(100),
        ..MockOptions::default()
    })
    .await;
    // Every answer takes 2 s. Waiting for a stream slot on one connection would take five
    // rounds (10 s), past the 8 s idle-read timeout.
    let reply = anthropic::message_json(
        "msg_c",
        "claude-test",
        vec![json!({"type": "text", "text": "ok"})],
        "end_turn",
        5,
        1,
    );
    mock.push_rule(Rule::new(Reply::json(200, reply).with_delay_ms(2000)).path(ANTHROPIC_UP));
    let gw = start_h2(
        gateway(&mock)
            .env("ADMIN_ACCESS_KEY", ADMIN)
            .config(models(8)),
    )
    .await;
    let p = pool(&gw);
    let mut ids = Vec::new();
    for k in KEYS {
        ids.push(p.add_key(k, None, None).await.unwrap().id);
    }
    let body = json!({"model": "claude-test", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]});
    let url = gw.url("/v1/messages");
    let client = client();
    let requests = (0..500).map(|_| {
        let req = client.post(&url).json(&body);
        async move {
            let resp = req.send().await.expect("the gateway answers");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, text)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let failed: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 500 failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    // One upstream call each: nothing was replayed.
    assert_eq!(mock.llm_requests().len(), 500);
    // The requests went over several HTTP/2 connections (100 streams each at most).
    assert!(
        mock.connections() >= 5,
        "{} connections",
        mock.connections()
    );
    let stats = admin_get(&gw, "/admin/stats").await;
    assert_eq!(stats["cooling"], 0, "{stats}");
    assert_eq!(stats["active"], KEYS.len(), "{stats}");
    for id in &ids {
        let history = admin_get(&gw, &format!("/admin/keys/{id}/history")).await;
        let traffic: Vec<&Value> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == "traffic")
            .collect();
        assert!(traffic.is_empty(), "{id}: {traffic:?}");
        let key = admin_get(&gw, &format!("/admin/keys/{id}")).await;
        assert_eq!(key["failures"], 0, "{key}");
    }
}

#[tokio::test]
async fn a_timeout_after_the_request_left_is_answered_504_without_a_replay() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN)
        .config(models(1))
        .start()
        .await;
    let p = pool(&gw);
    for k in KEYS {
        p.add_key(k, None, None).await.unwrap();
    }
    // The upstream takes the request and never answers: the 1 s idle-read timeout fires.
    mock.push_rule(Rule::new(Reply::hang()).path(ANTHROPIC_UP).once());
    let body = anthropic_body("claude-test");
    let (s, h, b) = post(&gw.url("/v1/messages"), &body, &[]).await;
    assert_eq!(s, 504);
    let v = json(&b);
    assert_eq!(v["error"]["type"], "timeout_error", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("(timeout)"), "{message}");
    assert!(
        message.ends_with(&format!(
            "(request id: {})",
            h["x-request-id"].to_str().unwrap()
        )),
        "{message}"
    );
    assert!(!message.contains("127.0.0.1"), "no host: {message}");
    assert_eq!(mock.llm_requests().len(), 1, "no replay on another key");
    // Same on the chat route (OpenAI envelope).
    mock.clear_requests();
    mock.push_rule(Rule::new(Reply::hang()).path(ANTHROPIC_UP).once());
    let (s, _, b) = post(
        &gw.url("/v1/chat/completions"),
        &chat_body("claude-test"),
        &[],
    )
    .await;
    assert_eq!(s, 504);
    assert_eq!(json(&b)["error"]["code"], "upstream_timeout");
    assert_eq!(mock.llm_requests().len(), 1, "no replay on another key");
    // Still serving.
    let (s, _, _) = post(&gw.url("/v1/messages"), &body, &[]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_connection_that_cannot_be_opened_is_tried_on_the_next_key() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_BASE_URL", format!("http://127.0.0.1:{closed}"))
        .config(models(30))
        .start()
        .await;
    let p = pool(&gw);
    for k in KEYS {
        p.add_key(k, None, None).await.unwrap();
    }
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 502);
    let v = json(&b);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("(connect)"), "{message}");
    assert!(
        !message.contains(&closed.to_string()),
        "no address: {message}"
    );
    // Every key was tried (max_attempts 3): the usage record counts the attempts.
    let rows = wait_attempts(&gw).await;
    assert_eq!(rows, 3);
}

/// The attempts of the first usage record.
async fn wait_attempts(gw: &Gateway) -> i64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(conn) = rusqlite::Connection::open_with_flags(
            gw.data_dir.join("droid2api.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) && let Ok(n) = conn.query_row(
            "SELECT attempts FROM usage_records ORDER BY seq LIMIT 1",
            [],
            |r| r.get::<_, i64>(0),
        ) {
            return n;
        }
        assert!(tokio::time::Instant::now() < deadline, "no usage record");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An HTTP/2 upstream (h2c) that refuses its first `refuse` streams with `REFUSED_STREAM`
/// before reading them, then answers every stream with an Anthropic message. Returns its URL
/// and the number of streams it has seen.
async fn refusing_h2_upstream(refuse: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    if n < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let body = serde_json::to_vec(&json!({
                        "id": "msg_refused_then_served", "type": "message", "role": "assistant",
                        "model": "claude-test", "content": [{"type": "text", "text": "ok"}],
                        "stop_reason": "end_turn", "stop_sequence": null,
                        "usage": {"input_tokens": 3, "output_tokens": 1},
                    }))
                    .unwrap();
                    let head = axum::http::Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(())
                        .unwrap();
                    if let Ok(mut send) = respond.send_response(head, false) {
                        let _ = send.send_data(bytes::Bytes::from(body), true);
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_stream_the_upstream_refused_unread_is_sent_again_without_blaming_the_key() {
    let mock = MockUpstream::start().await;
    let (url, seen) = refusing_h2_upstream(2).await;
    let gw = start_h2(
        gateway(&mock)
            .env("FACTORY_BASE_URL", url)
            .config(models(30)),
    )
    .await;
    let p = pool(&gw);
    let id = p.add_key(KEYS[0], None, None).await.unwrap().id;
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["content"][0]["text"], "ok");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    let key = p.get(&id).unwrap();
    assert_eq!(
        key.rec.failures, 0,
        "a refused stream is not the key's failure"
    );
    assert!(!key.cooling);
    // Refusals past the bound are an error (502, kind `refused`), still not the key's fault.
    let (url, seen) = refusing_h2_upstream(usize::MAX).await;
    let gw2 = start_h2(
        gateway(&mock)
            .env("FACTORY_BASE_URL", url)
            .config(models(30)),
    )
    .await;
    let p2 = pool(&gw2);
    p2.add_key(KEYS[1], None, None).await.unwrap();
    let (s, _, b) = post(
        &gw2.url("/v1/messages"),
        &anthropic_body("claude-test"),
        &[],
    )
    .await;
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    let message = json(&b)["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("(refused)"), "{message}");
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "1 + 2 sends again"
    );
    // Still serving.
    let (s, _, _) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200);
}
