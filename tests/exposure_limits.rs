//! Inbound HTTP limits (contract §9): request headers within `timing.header_read_timeout_s`,
//! bodies within `timing.body_read_timeout_s` (else 408 in the route's envelope), idle keep-alive
//! connections closed after `timing.idle_keepalive_s`, at most `limits.max_connections` open
//! connections (the rest wait in the backlog), and the in-flight body budget
//! (`limits.max_inflight_body_mb`: 503 `overloaded` with `Retry-After: 1`).
//!
//! These tests speak raw HTTP/1.1 over TCP where a client has to misbehave (stall, hold a
//! connection open). Deadlines are generous: nothing here asserts how fast something happens,
//! only that it happens (or, for a fixed short while, that it does not).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const FACTORY_KEY: &str = "fk-exposure-limits-000111";

/// A raw HTTP/1.1 response.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        json(&self.body)
    }
}

/// Reads one response with a `Content-Length` body; `None` if the connection closed first.
async fn read_response(s: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Waits (at most `within`) until the server closes the connection; true if it did.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Whatever the server says before closing (hyper may answer 408) is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

/// True when nothing arrives on `s` for `quiet` (the connection stays open and silent).
async fn silent_for(s: &mut TcpStream, quiet: Duration) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(quiet, s.read(&mut buf)).await.is_err()
}

fn health_request() -> &'static [u8] {
    b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n"
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// The gateway still answers a normal request.
async fn still_serves(gw: &Gateway) {
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .config(json!({
            "models": models_config("auto")["models"],
            "timing": {"header_read_timeout_s": 1}
        }))
        .start()
        .await;
    // Half the headers, then nothing.
    let mut slow = connect(gw.addr).await;
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut slow, Duration::from_secs(30)).await,
        "a stalled request head is dropped"
    );
    // Connected and silent: dropped too.
    let mut silent = connect(gw.addr).await;
    assert!(closed_by_server(&mut silent, Duration::from_secs(30)).await);
    // A request whose headers arrive in time is served.
    let mut ok = connect(gw.addr).await;
    ok.write_all(health_request()).await.unwrap();
    let r = read_response(&mut ok).await.expect("a response");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    still_serves(&gw).await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_in_the_routes_envelope() {
    let mock = MockUpstream::start().await;
    let admin = "admin-key-exposure-limits-0123";
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("ADMIN_ACCESS_KEY", admin)
        .config(json!({
            "models": models_config("auto")["models"],
            "timing": {"body_read_timeout_s": 1}
        }))
        .start()
        .await;
    for (path, extra) in [
        ("/v1/messages", ""),
        ("/v1/chat/completions", ""),
        (
            "/admin/keys",
            "x-admin-key: admin-key-exposure-limits-0123\r\n",
        ),
    ] {
        let mut s = connect(gw.addr).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n{extra}Content-Length: 100\r\n\r\n{{\"model\": "
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), read_response(&mut s))
            .await
            .expect("an answer once the body deadline passed")
            .expect("a response before the close");
        assert_eq!(r.status, 408, "{path}: {r:?}");
        let v = r.json();
        match path {
            "/v1/messages" => {
                assert_eq!(v["type"], "error", "{v}");
                assert_eq!(v["error"]["type"], "timeout_error", "{v}");
                let rid = r.header("x-request-id").unwrap();
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!("(request id: {rid})")),
                    "{v}"
                );
            }
            "/v1/chat/completions" => {
                assert_eq!(v["error"]["code"], "body_timeout", "{v}");
                assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            }
            _ => {
                assert_eq!(v["success"], false, "{v}");
                assert_eq!(v["error"]["code"], "body_timeout", "{v}");
            }
        }
        assert!(
            v.to_string().contains("did not arrive within 1 s"),
            "{path}: {v}"
        );
        // The rest of that body will never be read: the connection closes.
        assert!(closed_by_server(&mut s, Duration::from_secs(30)).await);
    }
    assert!(
        mock.llm_requests().is_empty(),
        "nothing reached the upstream"
    );
    still_serves(&gw).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_closes_after_the_idle_timeout_not_the_header_one() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .config(json!({"timing": {"header_read_timeout_s": 1, "idle_keepalive_s": 10}}))
        .start()
        .await;
    let mut s = connect(gw.addr).await;
    s.write_all(health_request()).await.unwrap();
    assert_eq!(read_response(&mut s).await.expect("first").status, 200);
    // Idle for longer than the header timeout: the connection is still there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(health_request()).await.unwrap();
    assert_eq!(
        read_response(&mut s)
            .await
            .expect("the same connection serves again")
            .status,
        200
    );
    // Then left idle: the server closes it.
    assert!(
        closed_by_server(&mut s, Duration::from_secs(60)).await,
        "an idle keep-alive connection is closed"
    );
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .config(json!({"limits": {"max_connections": 2}}))
        .start()
        .await;
    // Two keep-alive connections, each served once and left open.
    let mut first = connect(gw.addr).await;
    let mut second = connect(gw.addr).await;
    for s in [&mut first, &mut second] {
        s.write_all(health_request()).await.unwrap();
        assert_eq!(read_response(s).await.expect("served").status, 200);
    }
    // A third: the kernel completes the handshake, the gateway does not take it yet.
    let mut third = connect(gw.addr).await;
    third.write_all(health_request()).await.unwrap();
    assert!(
        silent_for(&mut third, Duration::from_secs(2)).await,
        "the third connection is not served while two are open"
    );
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(30), read_response(&mut third))
        .await
        .expect("served once a connection closed")
        .expect("a response");
    assert_eq!(r.status, 200);
    // The second still works, and a fourth waits for a free slot in turn.
    second.write_all(health_request()).await.unwrap();
    assert_eq!(read_response(&mut second).await.unwrap().status, 200);
    drop(second);
    drop(third);
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        client().get(gw.url("/health")).send(),
    )
    .await
    .expect("served")
    .unwrap();
    assert_eq!(r.status(), 200);
}

/// Polls `cond` until it holds (generous deadline).
async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A body of about `size` bytes for `/v1/messages`.
fn big_anthropic_body(size: usize) -> Vec<u8> {
    let pad = "x".repeat(size);
    serde_json::to_vec(&json!({
        "model": "claude-test",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": pad}]
    }))
    .unwrap()
}

#[tokio::test]
async fn bodies_in_memory_are_capped_with_503_overloaded() {
    let mock = MockUpstream::start().await;
    let admin = "admin-key-exposure-limits-0123";
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("ADMIN_ACCESS_KEY", admin)
        .config(json!({
            "models": models_config("auto")["models"],
            "limits": {"max_inflight_body_mb": 1},
            // The held body must stay held for the whole test, however slow the machine.
            "timing": {"body_read_timeout_s": 600}
        }))
        .start()
        .await;
    // One client sends 700 KB of an 800 KB body and holds it there.
    let mut holder = connect(gw.addr).await;
    let head = "POST /v1/messages HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 800000\r\n\r\n";
    holder.write_all(head.as_bytes()).await.unwrap();
    holder.write_all(&vec![b' '; 700_000]).await.unwrap();

    let bodies = gw.running.as_ref().unwrap().app.inbound.bodies.clone();
    wait_for(|| bodies.in_use() >= 700_000, "the held bytes are reserved").await;

    // Another 700 KB body no longer fits: 503 overloaded, Retry-After: 1, in each envelope.
    let body = big_anthropic_body(700_000);
    let (s, h, b) = post_raw(&gw.url("/v1/messages"), body.clone(), &[]).await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["retry-after"], "1");
    let v = json(&b);
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many request bodies in memory"),
        "{v}"
    );
    let (s, h, b) = post_raw(&gw.url("/v1/chat/completions"), body.clone(), &[]).await;
    assert_eq!(s, 503);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(json(&b)["error"]["code"], "overloaded");
    let text = format!("{{\"text\": \"{}\"}}", "fk-a-key-line\\n".repeat(50_000));
    let (s, h, b) = post_raw(
        &gw.url("/admin/keys/batch"),
        text.into_bytes(),
        &[("x-admin-key", admin)],
    )
    .await;
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["retry-after"], "1");
    let v = json(&b);
    assert_eq!(
        (v["success"].clone(), v["error"]["code"].clone()),
        (json!(false), json!("overloaded"))
    );
    // Small bodies still fit beside the held one.
    still_serves(&gw).await;

    // The held body goes away: its bytes are given back and big bodies fit again.
    drop(holder);
    wait_for(|| bodies.in_use() == 0, "the budget is given back").await;
    let (s, _, b) = post_raw(&gw.url("/v1/messages"), body.clone(), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(bodies.in_use(), 0, "a served body is given back too");
    let metrics = client()
        .get(gw.url("/metrics"))
        .header("x-admin-key", admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("droid2api_rejected_total{reason=\"overloaded\"}"),
        "{metrics}"
    );
}
