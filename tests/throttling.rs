//! Failed-key throttling per client address (contract §9): 10 failed admin-key attempts within
//! 60 s make every admin request from that address 429 `too_many_attempts` with `Retry-After`
//! (even with the right key), 50 failed client-key attempts do the same on `/v1/*`. The address
//! is the socket peer, or with `TRUST_PROXY=1` the last hop of `X-Forwarded-For`. Failures are
//! logged at warn with the address, never the value tried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use serde_json::Value;

const FACTORY_KEY: &str = "fk-throttling-000111";
const ADMIN_KEY: &str = "admin-key-throttling-0123456789";
const ACCESS_KEY: &str = "client-access-key-throttling-0123";

/// Log lines of every gateway in this test binary (warn and above).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).to_string()
}

async fn admin_get(
    gw: &Gateway,
    path: &str,
    key: Option<&str>,
    from: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().get(gw.url(path));
    if let Some(k) = key {
        req = req.header("x-admin-key", k);
    }
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", format!("10.9.9.9, {ip}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.json().await.unwrap_or(Value::Null))
}

fn retry_after(h: &reqwest::header::HeaderMap) -> u64 {
    h["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn ten_wrong_admin_keys_block_the_address_even_with_the_right_key() {
    let _ = logs();
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .env("TRUST_PROXY", "1")
        .start()
        .await;
    let attacker = Some("203.0.113.7");
    let tried = "wrong-admin-key-guess-number";
    for i in 0..10 {
        let (s, _, v) =
            admin_get(&gw, "/admin/stats", Some(&format!("{tried}-{i}")), attacker).await;
        assert_eq!(s, 401, "attempt {i}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    // The 11th request, with the right key: refused until the window clears.
    let (s, h, v) = admin_get(&gw, "/admin/stats", Some(ADMIN_KEY), attacker).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["code"], "too_many_attempts");
    let secs = retry_after(&h);
    assert!((1..=60).contains(&secs), "{secs}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("retry in {secs} s")),
        "{v}"
    );
    // Every admin route of that address: /factory/* and /metrics (which takes the admin key).
    let (s, _, _) = admin_get(&gw, "/factory/balance/summary", Some(ADMIN_KEY), attacker).await;
    assert_eq!(s, 429);
    let (s, _, _) = admin_get(&gw, "/metrics", Some(ADMIN_KEY), attacker).await;
    assert_eq!(s, 429);
    // Another address is not affected.
    let (s, _, v) = admin_get(&gw, "/admin/stats", Some(ADMIN_KEY), Some("203.0.113.8")).await;
    assert_eq!(s, 200, "{v}");
    // Requests without any key are refused but are not attempts at guessing it.
    let bystander = Some("203.0.113.9");
    for _ in 0..15 {
        let (s, _, _) = admin_get(&gw, "/admin/stats", None, bystander).await;
        assert_eq!(s, 401);
    }
    let (s, _, _) = admin_get(&gw, "/admin/stats", Some(ADMIN_KEY), bystander).await;
    assert_eq!(s, 200);
    // The gateway itself is not affected.
    let r = client()
        .get(gw.url("/v1/models"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Logged at warn with the address, never with the value tried.
    let logs = log_text();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("wrong admin key")
            && l.contains("203.0.113.7")),
        "{logs}"
    );
    assert!(!logs.contains(tried), "{logs}");
    assert!(!logs.contains(ADMIN_KEY), "{logs}");
}

#[tokio::test]
async fn without_trust_proxy_x_forwarded_for_is_ignored() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .start()
        .await;
    // Ten failures claiming ten different addresses: all from the one socket peer.
    for i in 0..10 {
        let from = format!("198.51.100.{i}");
        let (s, _, _) = admin_get(&gw, "/admin/stats", Some("nope-nope-nope"), Some(&from)).await;
        assert_eq!(s, 401);
    }
    let (s, h, v) = admin_get(&gw, "/admin/stats", Some(ADMIN_KEY), Some("198.51.100.200")).await;
    assert_eq!(s, 429, "{v}");
    assert!(retry_after(&h) >= 1);
    let (s, _, _) = admin_get(&gw, "/admin/stats", Some(ADMIN_KEY), None).await;
    assert_eq!(s, 429, "the peer itself is throttled");
}

#[tokio::test]
async fn fifty_wrong_client_keys_block_v1_for_that_address() {
    let _ = logs();
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("API_ACCESS_KEY", ACCESS_KEY)
        .env("TRUST_PROXY", "1")
        .config(models_config("auto"))
        .start()
        .await;
    let send = |path: &'static str, body: Value, key: String, from: &'static str| {
        let url = gw.url(path);
        async move {
            let r = client()
                .post(url)
                .header("authorization", format!("Bearer {key}"))
                .header("x-forwarded-for", from)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let h = r.headers().clone();
            (s, h, r.json::<Value>().await.unwrap())
        }
    };
    let guess = "sk-client-guess";
    for i in 0..50 {
        let (s, _, v) = send(
            "/v1/chat/completions",
            chat_body("glm-test"),
            format!("{guess}-{i}"),
            "192.0.2.10",
        )
        .await;
        assert_eq!(s, 401, "attempt {i}: {v}");
    }
    let (s, h, v) = send(
        "/v1/chat/completions",
        chat_body("glm-test"),
        ACCESS_KEY.into(),
        "192.0.2.10",
    )
    .await;
    assert_eq!(s, 429, "{v}");
    assert!((1..=60).contains(&retry_after(&h)));
    assert_eq!(v["error"]["code"], "too_many_attempts");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let rid = h["x-request-id"].to_str().unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("(request id: {rid})"))
    );
    let (s, _, v) = send(
        "/v1/messages",
        anthropic_body("claude-test"),
        ACCESS_KEY.into(),
        "192.0.2.10",
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // Another address with the right key is served.
    let (s, _, v) = send(
        "/v1/chat/completions",
        chat_body("glm-test"),
        ACCESS_KEY.into(),
        "192.0.2.11",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        mock.llm_requests().len() == 1,
        "only the served request went upstream"
    );
    let logs = log_text();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("wrong client key")
            && l.contains("192.0.2.10")),
        "{logs}"
    );
    assert!(!logs.contains(guess), "{logs}");
    assert!(!logs.contains(ACCESS_KEY), "{logs}");
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .env("TRUST_PROXY", "1")
        .start()
        .await;
    // Rotating through addresses of one /64 does not escape the count.
    for i in 0..10 {
        let from = format!("2001:db8:aa:bb::{:x}", i + 1);
        let (s, _, _) =
            admin_get(&gw, "/admin/stats", Some("wrong-wrong-wrong"), Some(&from)).await;
        assert_eq!(s, 401);
    }
    let (s, _, _) = admin_get(
        &gw,
        "/admin/stats",
        Some(ADMIN_KEY),
        Some("2001:db8:aa:bb::ffff"),
    )
    .await;
    assert_eq!(s, 429);
    let (s, _, v) = admin_get(
        &gw,
        "/admin/stats",
        Some(ADMIN_KEY),
        Some("2001:db8:aa:bc::1"),
    )
    .await;
    assert_eq!(s, 200, "another /64: {v}");
}
