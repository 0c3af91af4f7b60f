//! Egress proxies: config `proxies[]` in rotation, `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`, and the
//! WorkOS refresh through the proxy.
//!
//! A `MockUpstream` doubles as an HTTP proxy for `http://` targets: a proxied request arrives in
//! absolute form and the mock answers it as the upstream would, recording it. The "real" upstream
//! in these tests is a closed loopback port, so a 200 proves the call went through a proxy.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// `http://127.0.0.1:PORT` where nothing listens.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn config_proxies_rotate() {
    let p1 = MockUpstream::start().await;
    let p2 = MockUpstream::start().await;
    let unreachable = closed_port_url();
    let gw = gateway(&p1)
        .env("FACTORY_BASE_URL", unreachable.clone())
        .env("WORKOS_BASE_URL", unreachable.clone())
        .env("FACTORY_API_KEY", "fk-proxy-rotation-key-0123")
        .config(json!({"proxies": [{"url": p1.url()}, {"url": p2.url()}]}))
        .start()
        .await;
    for i in 0..4 {
        let (s, _, b) = post(
            &gw.url("/v1/messages"),
            &anthropic_body("claude-opus-4-6"),
            &[],
        )
        .await;
        assert_eq!(s, 200, "request {i}: {}", String::from_utf8_lossy(&b));
    }
    let (n1, n2) = (p1.llm_requests().len(), p2.llm_requests().len());
    assert_eq!((n1, n2), (2, 2), "requests per proxy");
    // The proxied requests were meant for the configured upstream.
    for r in p1.llm_requests().iter().chain(p2.llm_requests().iter()) {
        assert_eq!(r.path, "/api/llm/a/v1/messages");
        assert_eq!(r.bearer(), Some("fk-proxy-rotation-key-0123"));
        let host = r.header("host").unwrap_or_default();
        assert_eq!(
            format!("http://{host}"),
            unreachable,
            "host header names the real upstream"
        );
    }
}

#[tokio::test]
async fn https_proxy_env_is_not_used_for_http_and_http_proxy_is() {
    let p1 = MockUpstream::start().await;
    let p2 = MockUpstream::start().await;
    let unreachable = closed_port_url();

    // HTTP_PROXY serves http:// targets; HTTPS_PROXY is for https:// only.
    let gw = gateway(&p1)
        .env("FACTORY_BASE_URL", unreachable.clone())
        .env("FACTORY_API_KEY", "fk-proxy-env-key-0123456")
        .env("HTTP_PROXY", p1.url())
        .env("HTTPS_PROXY", p2.url())
        .start()
        .await;
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = post(&gw.url("/v1/chat/completions"), &chat_body("glm-5"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(p1.llm_requests().len(), 2);
    assert!(
        p2.requests().is_empty(),
        "HTTPS_PROXY must not carry http:// calls: {:?}",
        p2.requests()
    );
    gw.stop().await;

    // Only HTTPS_PROXY: http:// calls go direct (here: to a closed port, so 502).
    let gw = gateway(&p1)
        .env("FACTORY_BASE_URL", unreachable.clone())
        .env("FACTORY_API_KEY", "fk-proxy-env-key-0123456")
        .env("HTTPS_PROXY", p2.url())
        .start()
        .await;
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    assert!(p2.requests().is_empty(), "{:?}", p2.requests());
    gw.stop().await;

    // NO_PROXY exempts the upstream: the call goes straight to it.
    p1.clear_requests();
    let m = MockUpstream::start().await;
    let gw = gateway(&m)
        .env("FACTORY_API_KEY", "fk-proxy-env-key-0123456")
        .env("HTTP_PROXY", p1.url())
        .env("NO_PROXY", "127.0.0.1")
        .start()
        .await;
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(m.llm_requests().len(), 1);
    assert!(
        p1.requests().is_empty(),
        "NO_PROXY host went through the proxy: {:?}",
        p1.requests()
    );
}

#[tokio::test]
async fn refresh_goes_through_the_proxy_too() {
    let p1 = MockUpstream::start().await;
    let p2 = MockUpstream::start().await;
    let unreachable = closed_port_url();
    let seed = "rt-proxy-seed-0123456789";
    p1.add_refresh_token(seed);
    p2.add_refresh_token(seed);
    let gw = gateway(&p1)
        .env("FACTORY_BASE_URL", unreachable.clone())
        .env("WORKOS_BASE_URL", unreachable.clone())
        .env("DROID_REFRESH_KEY", seed)
        .config(json!({"proxies": [{"url": p1.url()}, {"url": p2.url()}]}))
        .start()
        .await;

    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let workos: Vec<_> = p1
        .requests_to("/user_management/authenticate")
        .into_iter()
        .chain(p2.requests_to("/user_management/authenticate"))
        .collect();
    assert!(!workos.is_empty(), "the WorkOS call went through a proxy");
    let minted: Vec<String> = p1
        .minted_access_tokens()
        .into_iter()
        .chain(p2.minted_access_tokens())
        .collect();
    assert!(!minted.is_empty());
    let used = p1
        .last_llm_request()
        .or_else(|| p2.last_llm_request())
        .expect("an LLM call via a proxy");
    assert!(
        minted.iter().any(|t| Some(t.as_str()) == used.bearer()),
        "the minted access token is used"
    );
    let ready = client().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let auth = std::fs::read_to_string(gw.data_dir.join("auth.json")).unwrap();
    assert!(!auth.contains(seed), "the seed was rotated away");
    let _ = tokio::time::timeout(Duration::from_secs(5), gw.stop()).await;
}

#[tokio::test]
async fn a_dead_proxy_in_the_rotation_is_skipped() {
    let live = MockUpstream::start().await;
    let dead = closed_port_url();
    let unreachable = closed_port_url();
    let gw = gateway(&live)
        .env("FACTORY_BASE_URL", unreachable)
        .env("FACTORY_API_KEY", "fk-proxy-failover-key-0123")
        .config(json!({"proxies": [{"url": dead}, {"url": live.url()}]}))
        .start()
        .await;
    for i in 0..4 {
        let (s, _, b) = post(
            &gw.url("/v1/messages"),
            &anthropic_body("claude-opus-4-6"),
            &[],
        )
        .await;
        assert_eq!(s, 200, "request {i}: {}", String::from_utf8_lossy(&b));
    }
    assert_eq!(
        live.llm_requests().len(),
        4,
        "every request reached the live proxy"
    );
}
