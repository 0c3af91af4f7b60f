//! CORS on `/v1/*` and the JSON content-type rule (contract §9).
//!
//! - Without client authentication no origin is allowed by default (any page the operator opens
//!   could otherwise spend the pool): preflights get a bare 204, answers no
//!   `Access-Control-Allow-Origin`. With `API_ACCESS_KEY` any origin is (`*`). `CORS_ORIGINS` /
//!   `cors_origins` list the allowed origins (echoed with `Vary: Origin`), `*` allowing any.
//! - Admin routes never send CORS headers.
//! - The client JSON routes refuse a body that is not declared JSON (415
//!   `unsupported_media_type`, in the route's envelope): `text/plain` JSON is what a page can
//!   send cross-origin without a preflight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const FACTORY_KEY: &str = "fk-cors-and-media-000111";
const ACCESS_KEY: &str = "client-access-key-cors-0123456789";
const ADMIN_KEY: &str = "admin-key-cors-and-media-0123456789";
const EVIL: &str = "https://evil.example";

fn has_any_cors(h: &HeaderMap) -> bool {
    h.keys().any(|k| k.as_str().starts_with("access-control-"))
}

async fn preflight(gw: &Gateway, path: &str, origin: &str) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

async fn chat_from(gw: &Gateway, origin: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .header("origin", origin)
        .json(&chat_body("glm-test"));
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    req.send().await.unwrap()
}

fn models() -> Value {
    models_config("auto")
}

#[tokio::test]
async fn without_client_auth_no_origin_is_allowed() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .config(models())
        .start()
        .await;
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/models"] {
        let r = preflight(&gw, path, EVIL).await;
        assert_eq!(r.status(), 204, "{path}");
        assert!(
            !has_any_cors(r.headers()),
            "{path}: no Access-Control-* header: {:?}",
            r.headers()
        );
    }
    // The request itself is served (no browser protection is needed for curl), but a browser
    // page cannot read the answer.
    let r = chat_from(&gw, EVIL, None).await;
    assert_eq!(r.status(), 200);
    assert!(!has_any_cors(r.headers()), "{:?}", r.headers());
    let r = client()
        .get(gw.url("/v1/models"))
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn with_client_auth_any_origin_is_allowed() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("API_ACCESS_KEY", ACCESS_KEY)
        .config(models())
        .start()
        .await;
    let r = preflight(&gw, "/v1/chat/completions", EVIL).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers()["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert!(
        r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    // The page still needs the key; with it, it can read the answer.
    let r = chat_from(&gw, EVIL, Some(ACCESS_KEY)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    let r = chat_from(&gw, EVIL, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn an_explicit_list_allows_the_listed_origins_only() {
    let mock = MockUpstream::start().await;
    let listed = "https://app.example";
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("API_ACCESS_KEY", ACCESS_KEY)
        .env(
            "CORS_ORIGINS",
            "https://App.Example/, http://localhost:5173",
        )
        .config(models())
        .start()
        .await;
    for origin in [listed, "http://localhost:5173"] {
        let r = preflight(&gw, "/v1/messages", origin).await;
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
        let vary: Vec<&str> = r
            .headers()
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(vary.contains(&"Origin"), "{vary:?}");
        let r = chat_from(&gw, origin, Some(ACCESS_KEY)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
        assert_eq!(r.headers()["vary"], "Origin");
    }
    for origin in [EVIL, "https://app.example.evil.example", "null"] {
        let r = preflight(&gw, "/v1/messages", origin).await;
        assert_eq!(r.status(), 204);
        assert!(
            r.headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-allow")),
            "{origin}: {:?}",
            r.headers()
        );
        let r = chat_from(&gw, origin, Some(ACCESS_KEY)).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("access-control-allow-origin").is_none());
        assert_eq!(
            r.headers()["vary"],
            "Origin",
            "the answer depends on the origin"
        );
    }
    drop(gw);

    // `*` in config.json allows any origin even without client authentication.
    let mock = MockUpstream::start().await;
    let mut config = models();
    config["cors_origins"] = json!(["*"]);
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .config(config)
        .start()
        .await;
    let r = preflight(&gw, "/v1/responses", EVIL).await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = chat_from(&gw, EVIL, None).await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn admin_routes_never_send_cors_headers() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("API_ACCESS_KEY", ACCESS_KEY)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .env("CORS_ORIGINS", "*")
        .start()
        .await;
    for path in [
        "/admin/stats",
        "/admin/keys",
        "/factory/balance/summary",
        "/metrics",
        "/health",
    ] {
        let r = client()
            .get(gw.url(path))
            .header("origin", EVIL)
            .header("x-admin-key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(!has_any_cors(r.headers()), "{path}: {:?}", r.headers());
        let r = preflight(&gw, path, EVIL).await;
        assert!(!has_any_cors(r.headers()), "{path}: {:?}", r.headers());
    }
    // Refusals too.
    let r = client()
        .get(gw.url("/admin/stats"))
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!has_any_cors(r.headers()));
}

/// Sends `body` to `path` with a given `Content-Type` (none when `None`).
async fn post_typed(
    gw: &Gateway,
    path: &str,
    content_type: Option<&str>,
    body: &Value,
) -> (u16, HeaderMap, Value) {
    let mut req = client()
        .post(gw.url(path))
        .body(serde_json::to_vec(body).unwrap());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

#[tokio::test]
async fn client_json_routes_need_a_json_content_type() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .config(models())
        .start()
        .await;
    let routes = [
        ("/v1/chat/completions", chat_body("glm-test")),
        ("/v1/responses", responses_body("gpt-test")),
        ("/v1/messages", anthropic_body("claude-test")),
        ("/v1/messages/count_tokens", anthropic_body("claude-test")),
    ];
    for (path, body) in &routes {
        for ct in [
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            None,
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let (s, h, v) = post_typed(&gw, path, ct, body).await;
            assert_eq!(s, 415, "{path} {ct:?}: {v}");
            let rid = h["x-request-id"].to_str().unwrap();
            let message = v["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("application/json"),
                "names the type: {message}"
            );
            assert!(
                message.ends_with(&format!("(request id: {rid})")),
                "{message}"
            );
            if path.starts_with("/v1/messages") {
                assert_eq!(v["type"], "error", "{v}");
                assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            } else {
                assert_eq!(v["error"]["code"], "unsupported_media_type", "{v}");
                assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            }
            // The gateway keeps serving.
            let (s, _, v) = post_typed(&gw, path, Some("application/json"), body).await;
            assert_eq!(s, 200, "{path}: {v}");
        }
        for ct in [
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
        ] {
            let (s, _, v) = post_typed(&gw, path, Some(ct), body).await;
            assert_eq!(s, 200, "{path} {ct}: {v}");
        }
    }
    let before = mock.llm_requests().len();
    let (s, _, _) = post_typed(&gw, "/v1/messages", Some("text/plain"), &routes[2].1).await;
    assert_eq!(s, 415);
    assert_eq!(
        mock.llm_requests().len(),
        before,
        "a refused request never reaches the upstream"
    );
    // Routes without a body need no content type.
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn admin_bodies_must_be_json_but_calls_without_a_body_need_no_type() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .start()
        .await;
    let add = |ct: Option<&'static str>| {
        let mut req = client()
            .post(gw.url("/admin/keys"))
            .header("x-admin-key", ADMIN_KEY)
            .body(r#"{"key": "fk-admin-json-key-000111"}"#);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req
    };
    for ct in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = add(ct).send().await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"success": false, "error": {"code": "unsupported_media_type", "message": "a request body must be sent as Content-Type: application/json"}})
        );
    }
    let r = add(Some("application/json")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // No body, no content type: fine.
    let r = client()
        .post(gw.url(&format!("/admin/keys/{id}/reset")))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .delete(gw.url("/admin/keys/disabled"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
