//! A weak `ADMIN_ACCESS_KEY` (shorter than 16 characters, or a well-known placeholder in any
//! case) disables the admin API (contract §9): every admin route answers 503 `admin_disabled`
//! with the reason, `/metrics` stays closed the same way, and the gateway itself serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

const FACTORY_KEY: &str = "fk-weak-admin-key-000111";

async fn get(gw: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let r = client()
        .get(gw.url(path))
        .header("x-admin-key", key)
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn weak_admin_keys_disable_the_admin_api_but_not_the_gateway() {
    for (key, why) in [
        ("your-admin-key-here", "placeholder"),
        ("YOUR-SECURE-ADMIN-PASSWORD", "placeholder"),
        ("ChangeMe", "placeholder"),
        ("fifteen-chars-x", "shorter than 16 characters"),
    ] {
        let mock = MockUpstream::start().await;
        let gw = gateway(&mock)
            .env("ADMIN_ACCESS_KEY", key)
            .env("FACTORY_API_KEY", FACTORY_KEY)
            .start()
            .await;
        for path in [
            "/admin/stats",
            "/admin/keys",
            "/admin/nothing-here",
            "/factory/balance/summary",
            "/metrics",
        ] {
            let (s, v) = get(&gw, path, key).await;
            assert_eq!(s, 503, "{key} {path}: {v}");
            assert_eq!(v["success"], false, "{v}");
            assert_eq!(v["error"]["code"], "admin_disabled", "{v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(why), "{key}: {message}");
            assert!(message.contains("admin API is disabled"), "{message}");
        }
        // Posting does not help either.
        let r = client()
            .post(gw.url("/admin/keys"))
            .header("x-admin-key", key)
            .json(&serde_json::json!({"key": "fk-would-be-added-000"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        // The gateway serves.
        let (s, _, b) = post(
            &gw.url("/v1/messages"),
            &anthropic_body("claude-opus-4-6"),
            &[],
        )
        .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let _ = gw.stop().await;
    }
}

#[tokio::test]
async fn a_sixteen_character_key_enables_the_admin_api() {
    let key = "sixteen-chars-ok";
    assert_eq!(key.chars().count(), 16);
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).env("ADMIN_ACCESS_KEY", key).start().await;
    let (s, v) = get(&gw, "/admin/stats", key).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    let (s, _) = get(&gw, "/metrics", key).await;
    assert_eq!(s, 200);
    let (s, v) = get(&gw, "/admin/stats", "sixteen-chars-no").await;
    assert_eq!(s, 401, "{v}");
}

#[tokio::test]
async fn without_an_admin_key_metrics_are_open_and_the_admin_api_says_how_to_enable_it() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let r = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = get(&gw, "/admin/stats", "anything").await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "admin_disabled");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("set ADMIN_ACCESS_KEY"),
        "{v}"
    );
}
