//! Client keys with quotas (contract §13) against a real gateway and the mock upstream: the
//! admin lifecycle (create → use on every route with Bearer and x-api-key → list with today's
//! usage → patch → rotate → delete), `/v1/*` requiring a key once one exists, `API_ACCESS_KEY`
//! staying unlimited, requests per minute, daily request and token quotas (and across a
//! restart), the model allow-list, expiry, the `client` filter of `/admin/usage`, keys never
//! readable again (nor at rest), and every bad admin input.
//!
//! Usage is written behind: checks of stored usage poll the admin API for a bounded while.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const FACTORY_KEY: &str = "fk-client-keys-test-000000001";
const ADMIN_KEY: &str = "admin-key-for-client-keys-0123456789";
const ACCESS_KEY: &str = "api-access-key-client-tests-0001";

fn base(mock: &MockUpstream) -> Builder {
    gateway(mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(models_config("auto"))
}

/// An admin call: (status, body).
async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), gw.url(path))
        .header("x-admin-key", ADMIN_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An admin call with a raw body.
async fn admin_raw(gw: &Gateway, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .request(method.parse().unwrap(), gw.url(path))
        .header("x-admin-key", ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json::<Value>().await.unwrap())
}

/// Creates a client; returns (id, key).
async fn create(gw: &Gateway, body: Value) -> (String, String) {
    let (s, v) = admin(gw, "POST", "/admin/clients", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let d = &v["data"];
    (
        d["id"].as_str().unwrap().to_string(),
        d["key"].as_str().unwrap().to_string(),
    )
}

#[derive(Clone, Copy, Debug)]
enum R {
    Chat,
    Responses,
    Messages,
}

const ROUTES: [R; 3] = [R::Chat, R::Responses, R::Messages];

impl R {
    fn path(self) -> &'static str {
        match self {
            R::Chat => "/v1/chat/completions",
            R::Responses => "/v1/responses",
            R::Messages => "/v1/messages",
        }
    }

    fn body(self, model: Option<&str>) -> Value {
        match self {
            R::Chat => chat_body(model.unwrap_or("claude-test")),
            R::Responses => responses_body(model.unwrap_or("gpt-test")),
            R::Messages => anthropic_body(model.unwrap_or("claude-test")),
        }
    }
}

/// A request on a route with a key sent as `how` (`bearer`, `x-api-key`, or none).
async fn call_with(
    gw: &Gateway,
    r: R,
    model: Option<&str>,
    how: &str,
    key: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let bearer = format!("Bearer {key}");
    let headers: Vec<(&str, &str)> = match how {
        "bearer" => vec![("authorization", bearer.as_str())],
        "x-api-key" => vec![("x-api-key", key)],
        _ => vec![],
    };
    let (s, h, b) = post(&gw.url(r.path()), &r.body(model), &headers).await;
    let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (s, h, v)
}

async fn call(gw: &Gateway, r: R, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    call_with(gw, r, None, "bearer", key).await
}

/// The error code in a route's envelope (OpenAI `error.code`; Anthropic has no code: its
/// `error.type`).
fn error_of(r: R, v: &Value) -> (String, String) {
    let e = &v["error"];
    let message = e["message"].as_str().unwrap_or_default().to_string();
    match r {
        R::Messages => {
            assert_eq!(v["type"], "error", "{v}");
            (e["type"].as_str().unwrap_or_default().to_string(), message)
        }
        _ => (e["code"].as_str().unwrap_or_default().to_string(), message),
    }
}

/// Polls `GET /admin/clients/:id` until `ready` holds (usage is written behind).
async fn client_view(gw: &Gateway, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = admin(gw, "GET", &format!("/admin/clients/{id}"), None).await;
        assert_eq!(s, 200, "{v}");
        if ready(&v["data"]) {
            return v["data"].clone();
        }
        assert!(Instant::now() < deadline, "never ready: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn series_requests(v: &Value) -> u64 {
    v["data"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn lifecycle_create_use_list_patch_rotate_delete() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let preflight = || async {
        client()
            .request(reqwest::Method::OPTIONS, gw.url("/v1/messages"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap()
    };

    // No client authentication yet: /v1/* is open and CORS is off by default.
    assert_eq!(call_with(&gw, R::Messages, None, "none", "").await.0, 200);
    assert!(
        preflight()
            .await
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let (s, v) = admin(
        &gw,
        "POST",
        "/admin/clients",
        Some(json!({"name": "team a", "rpm": 1000})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let d = &v["data"];
    let id = d["id"].as_str().unwrap().to_string();
    let key = d["key"].as_str().unwrap().to_string();
    assert!(id.starts_with("cli_"), "{d}");
    assert!(key.starts_with("d2a-") && key.len() >= 4 + 64, "{d}");
    assert_eq!(
        d["key_masked"],
        format!("{}…{}", &key[..7], &key[key.len() - 4..])
    );
    assert_eq!(d["name"], "team a");
    assert_eq!(d["rpm"], 1000);
    assert_eq!(d["requests_per_day"], Value::Null);
    assert!(d["created_at"].as_str().unwrap().ends_with('Z'));

    // Now /v1/* needs a key, and CORS defaults to any origin.
    let (s, _, v) = call_with(&gw, R::Messages, None, "none", "").await;
    assert_eq!(s, 401, "{v}");
    let (s, _, v) = call(&gw, R::Chat, "d2a-not-a-real-key").await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(
        preflight().await.headers()["access-control-allow-origin"],
        "*"
    );

    // The key works on every route, with either header; the upstream never sees it.
    for how in ["bearer", "x-api-key"] {
        for r in ROUTES {
            let (s, _, v) = call_with(&gw, r, None, how, &key).await;
            assert_eq!(s, 200, "{r:?} {how}: {v}");
            assert_eq!(last_bearer(&mock), FACTORY_KEY);
        }
    }

    // The list shows today's usage (written behind) and never the key.
    let view = client_view(&gw, &id, |d| d["usage_today"]["requests"] == 6).await;
    assert_eq!(view["quota_today"]["requests"], 6, "{view}");
    assert!(
        view["usage_today"]["tokens"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(view["last_used_at"].is_string(), "{view}");
    assert!(view.get("key").is_none());
    let (s, list) = admin(&gw, "GET", "/admin/clients", None).await;
    assert_eq!(s, 200);
    let clients = list["data"]["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["usage_today"]["requests"], 6);
    assert!(!list.to_string().contains(&key));

    // /admin/usage?client= filters on it.
    let (_, mine) = admin(
        &gw,
        "GET",
        &format!("/admin/usage?granularity=hour&client={id}"),
        None,
    )
    .await;
    assert_eq!(series_requests(&mine), 6, "{mine}");
    let (_, anonymous) = admin(
        &gw,
        "GET",
        "/admin/usage?granularity=day&client=anonymous",
        None,
    )
    .await;
    assert_eq!(series_requests(&anonymous), 1, "{anonymous}");
    let (_, other) = admin(&gw, "GET", "/admin/usage?client=cli_nobody", None).await;
    assert_eq!(series_requests(&other), 0, "{other}");
    let (_, both) = admin(
        &gw,
        "GET",
        &format!("/admin/usage?granularity=day&client={id}&model=claude-test"),
        None,
    )
    .await;
    assert_eq!(series_requests(&both), 4, "{both}");

    // Patch: a quota takes effect at once, and can be lifted again.
    let (s, v) = admin(
        &gw,
        "PATCH",
        &format!("/admin/clients/{id}"),
        Some(json!({"requests_per_day": 6, "name": "team A"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["requests_per_day"], 6);
    assert_eq!(v["data"]["name"], "team A");
    assert_eq!(v["data"]["rpm"], 1000, "untouched fields stay");
    assert!(v["data"].get("key").is_none());
    let (s, h, v) = call(&gw, R::Chat, &key).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(error_of(R::Chat, &v).0, "quota_exceeded");
    assert!(h.contains_key("retry-after"));
    let (s, v) = admin(
        &gw,
        "PATCH",
        &format!("/admin/clients/{id}"),
        Some(json!({"requests_per_day": null})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(call(&gw, R::Chat, &key).await.0, 200);

    // Rotate: the old key stops at once, the new one works at once; counters are kept.
    let (s, v) = admin(&gw, "POST", &format!("/admin/clients/{id}/rotate"), None).await;
    assert_eq!(s, 200, "{v}");
    let new_key = v["data"]["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!(v["data"]["id"], id.as_str());
    assert_eq!(v["data"]["quota_today"]["requests"], 7, "{v}");
    let (s, _, v) = call(&gw, R::Messages, &key).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(call(&gw, R::Messages, &new_key).await.0, 200);

    // Delete: revoked at once; with no client left (and no API_ACCESS_KEY) /v1/* is open again.
    let (s, v) = admin(&gw, "DELETE", &format!("/admin/clients/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = call(&gw, R::Messages, &new_key).await;
    assert_eq!(s, 200, "no client authentication any more: {v}");
    let (s, _) = admin(&gw, "GET", &format!("/admin/clients/{id}"), None).await;
    assert_eq!(s, 404);
    let (_, list) = admin(&gw, "GET", "/admin/clients", None).await;
    assert_eq!(list["data"]["clients"], json!([]));
}

#[tokio::test]
async fn a_deleted_key_is_refused_at_once_while_other_keys_exist() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (a, key_a) = create(&gw, json!({"name": "a"})).await;
    let (_, key_b) = create(&gw, json!({"name": "b"})).await;
    assert_eq!(call(&gw, R::Messages, &key_a).await.0, 200);
    let (s, _) = admin(&gw, "DELETE", &format!("/admin/clients/{a}"), None).await;
    assert_eq!(s, 200);
    let (s, _, v) = call(&gw, R::Messages, &key_a).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(call(&gw, R::Messages, &key_b).await.0, 200);
}

#[tokio::test]
async fn api_access_key_stays_unlimited_beside_limited_client_keys() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).env("API_ACCESS_KEY", ACCESS_KEY).start().await;
    let (id, key) = create(
        &gw,
        json!({"name": "small", "requests_per_day": 1, "rpm": 1}),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(call(&gw, R::Messages, ACCESS_KEY).await.0, 200);
    }
    assert_eq!(call(&gw, R::Messages, &key).await.0, 200);
    let (s, _, v) = call(&gw, R::Messages, &key).await;
    assert_eq!(s, 429, "{v}");
    for _ in 0..3 {
        assert_eq!(
            call_with(&gw, R::Chat, None, "x-api-key", ACCESS_KEY)
                .await
                .0,
            200
        );
    }
    assert_eq!(call(&gw, R::Chat, "wrong").await.0, 401);
    // Usage records carry the client: the key's id, or api_access_key.
    let (_, mine) = admin(&gw, "GET", &format!("/admin/usage?client={id}"), None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, access) = admin(&gw, "GET", "/admin/usage?client=api_access_key", None).await;
        if series_requests(&access) == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "{access}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, mine_now) = admin(&gw, "GET", &format!("/admin/usage?client={id}"), None).await;
    assert!(series_requests(&mine) <= 1, "{mine}");
    assert_eq!(series_requests(&mine_now), 1, "{mine_now}");
}

#[tokio::test]
async fn rpm_refuses_the_fourth_request_in_each_routes_envelope() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    for r in ROUTES {
        let (id, key) = create(&gw, json!({"name": format!("{r:?}"), "rpm": 3})).await;
        for i in 0..3 {
            let (s, _, v) = call(&gw, r, &key).await;
            assert_eq!(s, 200, "{r:?} #{i}: {v}");
        }
        let (s, h, v) = call(&gw, r, &key).await;
        assert_eq!(s, 429, "{r:?}: {v}");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
        let (code, message) = error_of(r, &v);
        match r {
            R::Messages => assert_eq!(code, "rate_limit_error", "{v}"),
            _ => {
                assert_eq!(code, "rate_limited", "{v}");
                assert_eq!(v["error"]["type"], "rate_limit_error");
            }
        }
        assert!(message.contains("3 requests per minute"), "{message}");
        assert!(message.contains("request id:"), "{message}");
        // A refused request is not usage.
        let view = client_view(&gw, &id, |d| d["usage_today"]["requests"] == 3).await;
        assert_eq!(view["quota_today"]["requests"], 3, "{view}");
    }
    let text = client()
        .get(gw.url("/metrics"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("droid2api_client_rejected_total{reason=\"rate_limited\"}"),
        "{text}"
    );
    // The server still serves.
    assert_eq!(call(&gw, R::Chat, "nope").await.0, 401);
}

#[tokio::test]
async fn daily_request_quota_refuses_the_third_request() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (_, key) = create(&gw, json!({"name": "two a day", "requests_per_day": 2})).await;
    assert_eq!(call(&gw, R::Messages, &key).await.0, 200);
    assert_eq!(call(&gw, R::Chat, &key).await.0, 200);
    for r in ROUTES {
        let (s, h, v) = call(&gw, r, &key).await;
        assert_eq!(s, 429, "{r:?}: {v}");
        let (code, message) = error_of(r, &v);
        if matches!(r, R::Messages) {
            assert_eq!(code, "rate_limit_error");
        } else {
            assert_eq!(code, "quota_exceeded");
        }
        assert!(message.contains("requests_per_day: 2"), "{message}");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=25 * 3600).contains(&retry), "{retry}");
    }
    // count_tokens is not usage: it does not count and is not refused.
    let bearer = format!("Bearer {key}");
    let (s, _, b) = post(
        &gw.url("/v1/messages/count_tokens"),
        &anthropic_body("claude-test"),
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
}

#[tokio::test]
async fn token_quota_refuses_once_used_up() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (id, key) = create(&gw, json!({"name": "tokens", "tokens_per_day": 1})).await;
    assert_eq!(call(&gw, R::Messages, &key).await.0, 200);
    // The tokens are counted when the usage record is made (after the reply's last byte).
    let view = client_view(&gw, &id, |d| d["quota_today"]["tokens"].as_u64() >= Some(1)).await;
    assert_eq!(view["quota_today"]["requests"], 1);
    let (s, h, v) = call(&gw, R::Responses, &key).await;
    assert_eq!(s, 429, "{v}");
    let (code, message) = error_of(R::Responses, &v);
    assert_eq!(code, "quota_exceeded");
    assert!(message.contains("tokens_per_day: 1"), "{message}");
    assert!(h.contains_key("retry-after"));
    // Raising the quota lets it through again.
    let (s, _) = admin(
        &gw,
        "PATCH",
        &format!("/admin/clients/{id}"),
        Some(json!({"tokens_per_day": 1000000})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(call(&gw, R::Responses, &key).await.0, 200);
}

#[tokio::test]
async fn models_outside_the_allow_list_are_403_and_redirects_count_by_their_target() {
    let mock = MockUpstream::start().await;
    let mut config = models_config("auto");
    config["model_redirects"] = json!({"alias-of-claude": "claude-test"});
    config["models"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "claude-other", "type": "anthropic", "reasoning": "auto"}));
    let gw = base(&mock).config(config).start().await;
    let (id, key) = create(
        &gw,
        json!({"name": "claude only", "models": ["claude-test"]}),
    )
    .await;
    assert_eq!(
        call_with(&gw, R::Messages, Some("claude-test"), "bearer", &key)
            .await
            .0,
        200
    );
    assert_eq!(
        call_with(&gw, R::Chat, Some("claude-test"), "bearer", &key)
            .await
            .0,
        200
    );
    let (s, _, v) = call_with(&gw, R::Messages, Some("alias-of-claude"), "bearer", &key).await;
    assert_eq!(s, 200, "the resolved id is listed: {v}");
    for (r, model) in [
        (R::Chat, "gpt-test"),
        (R::Responses, "gpt-test"),
        (R::Messages, "claude-other"),
    ] {
        let calls = mock.requests_to("/api/llm").len();
        let (s, _, v) = call_with(&gw, r, Some(model), "bearer", &key).await;
        assert_eq!(s, 403, "{r:?}: {v}");
        let (code, message) = error_of(r, &v);
        if matches!(r, R::Messages) {
            assert_eq!(code, "permission_error");
        } else {
            assert_eq!(code, "model_not_allowed");
            assert_eq!(v["error"]["param"], "model");
        }
        assert!(message.contains(model), "{message}");
        assert_eq!(
            mock.requests_to("/api/llm").len(),
            calls,
            "nothing went upstream"
        );
    }
    // A model refusal comes after admission: it is a usage record (status 403) and counts.
    let view = client_view(&gw, &id, |d| d["usage_today"]["requests"] == 6).await;
    assert_eq!(view["quota_today"]["requests"], 6, "{view}");
    // Clearing the list allows every model.
    let (s, _) = admin(
        &gw,
        "PATCH",
        &format!("/admin/clients/{id}"),
        Some(json!({"models": null})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        call_with(&gw, R::Responses, Some("gpt-test"), "bearer", &key)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn an_expired_key_is_401_naming_its_expiry() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (id, key) = create(
        &gw,
        json!({"name": "temp", "expires_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(call(&gw, R::Messages, &key).await.0, 200);
    // A PATCH may set any time, past included (expiring the key now).
    let (s, v) = admin(
        &gw,
        "PATCH",
        &format!("/admin/clients/{id}"),
        Some(json!({"expires_at": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["expired"], true);
    for r in ROUTES {
        let (s, _, v) = call(&gw, r, &key).await;
        assert_eq!(s, 401, "{r:?}: {v}");
        let (code, message) = error_of(r, &v);
        if !matches!(r, R::Messages) {
            assert_eq!(code, "key_expired");
        }
        assert!(
            message.contains("expired at 2020-01-01T00:00:00Z"),
            "{message}"
        );
    }
    let (s, _) = admin(
        &gw,
        "PATCH",
        &format!("/admin/clients/{id}"),
        Some(json!({"expires_at": null})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(call(&gw, R::Messages, &key).await.0, 200);
}

#[tokio::test]
async fn quotas_and_keys_survive_a_restart() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (id, key) = create(&gw, json!({"name": "three a day", "requests_per_day": 3})).await;
    assert_eq!(call(&gw, R::Messages, &key).await.0, 200);
    assert_eq!(call(&gw, R::Chat, &key).await.0, 200);
    let (data, home, temp) = gw.stop().await;

    let gw = base(&mock).data_dir(&data).home_dir(&home).start().await;
    let view = client_view(&gw, &id, |_| true).await;
    assert_eq!(
        view["quota_today"]["requests"], 2,
        "seeded from the rollups: {view}"
    );
    assert_eq!(view["usage_today"]["requests"], 2, "{view}");
    assert!(view["last_used_at"].is_string(), "{view}");
    assert_eq!(call(&gw, R::Responses, &key).await.0, 200);
    let (s, _, v) = call(&gw, R::Messages, &key).await;
    assert_eq!(s, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests_per_day: 3")
    );
    // Without a key /v1/* is still closed: the client was loaded.
    assert_eq!(call_with(&gw, R::Messages, None, "none", "").await.0, 401);
    gw.stop().await;
    drop(temp);
}

#[tokio::test]
async fn keys_are_never_readable_again_and_are_digests_at_rest() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (id, key) = create(&gw, json!({"name": "secret keeper"})).await;
    assert_eq!(call(&gw, R::Messages, &key).await.0, 200);
    let (s, v) = admin(&gw, "POST", &format!("/admin/clients/{id}/rotate"), None).await;
    assert_eq!(s, 200);
    let rotated = v["data"]["key"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, R::Messages, &rotated).await.0, 200);
    let mut seen = String::new();
    for path in [
        "/admin/clients".to_string(),
        format!("/admin/clients/{id}"),
        "/admin/keys/export?format=json".to_string(),
        "/admin/keys/export?format=txt".to_string(),
        "/admin/usage".to_string(),
        format!("/admin/usage?client={id}"),
        "/admin/stats".to_string(),
        "/factory/balance/summary".to_string(),
        "/metrics".to_string(),
    ] {
        let text = client()
            .get(gw.url(&path))
            .header("x-admin-key", ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push_str(&text);
    }
    let (s, v) = admin(
        &gw,
        "PATCH",
        &format!("/admin/clients/{id}"),
        Some(json!({"rpm": 5})),
    )
    .await;
    assert_eq!(s, 200);
    seen.push_str(&v.to_string());
    for k in [&key, &rotated] {
        assert!(!seen.contains(k.as_str()), "a key was readable again");
        assert!(!seen.contains(&k[4..]), "a key's body was readable again");
    }
    assert!(
        seen.contains(&format!("{}…", &rotated[..7])),
        "the mask is shown"
    );

    let (data, _, _temp) = gw.stop().await;
    let mut at_rest = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            at_rest.extend(std::fs::read(&path).unwrap());
        }
    }
    let at_rest = String::from_utf8_lossy(&at_rest);
    for k in [&key, &rotated] {
        assert!(
            !at_rest.contains(&k[4..]),
            "a key is stored in the data folder"
        );
    }
    let digest = hex::encode(Sha256::digest(rotated.as_bytes()));
    assert!(at_rest.contains(&digest), "the digest is what is stored");
}

#[tokio::test]
async fn fifty_wrong_client_keys_throttle_the_address() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (_, key) = create(&gw, json!({"name": "real"})).await;
    for i in 0..50 {
        let (s, _, _) = call(&gw, R::Chat, &format!("d2a-guess-{i}")).await;
        assert_eq!(s, 401);
    }
    let (s, h, v) = call(&gw, R::Chat, &key).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "too_many_attempts");
    assert!(h.contains_key("retry-after"));
}

#[tokio::test]
async fn bad_admin_input_is_400_naming_the_field() {
    let mock = MockUpstream::start().await;
    let gw = base(&mock).start().await;
    let (id, _) = create(&gw, json!({"name": "target"})).await;
    let many: Vec<String> = (0..1001).map(|i| format!("m{i}")).collect();
    let long = "x".repeat(101);
    let cases: Vec<(&str, String, Value, &str)> = vec![
        ("POST", "/admin/clients".into(), json!({}), "name: required"),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": ""}),
            "name: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": long}),
            "name: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": 5}),
            "name: expected a string",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "rpm": 0}),
            "rpm: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "rpm": -1}),
            "rpm: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "rpm": 1.5}),
            "rpm: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "rpm": "3"}),
            "rpm: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "requests_per_day": 0}),
            "requests_per_day: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "tokens_per_day": "x"}),
            "tokens_per_day: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "models": "claude-test"}),
            "models: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "models": [1]}),
            "models[0]: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "models": ["ok", ""]}),
            "models[1]: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "models": many}),
            "models: at most 1000",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "expires_at": "soon"}),
            "expires_at: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at: must lie in the future",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "expires_at": 5}),
            "expires_at: ",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!({"name": "a", "key": "d2a-mine"}),
            "key: unknown field",
        ),
        (
            "POST",
            "/admin/clients".into(),
            json!(["name"]),
            "expected a JSON object",
        ),
        (
            "PATCH",
            format!("/admin/clients/{id}"),
            json!({}),
            "nothing to change",
        ),
        (
            "PATCH",
            format!("/admin/clients/{id}"),
            json!({"name": null}),
            "name: expected a string",
        ),
        (
            "PATCH",
            format!("/admin/clients/{id}"),
            json!({"rpm": 0}),
            "rpm: ",
        ),
        (
            "PATCH",
            format!("/admin/clients/{id}"),
            json!({"id": "cli_other"}),
            "id: unknown field",
        ),
        (
            "PATCH",
            format!("/admin/clients/{id}"),
            json!({"expires_at": "2020-13-01"}),
            "expires_at: ",
        ),
    ];
    for (method, path, body, expected) in cases {
        let (s, v) = admin(&gw, method, &path, Some(body.clone())).await;
        assert_eq!(s, 400, "{method} {path} {body}: {v}");
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], "bad_request");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
        // Nothing changed, and the server still serves.
        let (s, list) = admin(&gw, "GET", "/admin/clients", None).await;
        assert_eq!(s, 200);
        assert_eq!(
            list["data"]["clients"].as_array().unwrap().len(),
            1,
            "{list}"
        );
        assert_eq!(list["data"]["clients"][0]["name"], "target");
    }
    for raw in ["not json", "{\"name\": ", ""] {
        let (s, v) = admin_raw(&gw, "POST", "/admin/clients", raw).await;
        assert_eq!(s, 400, "{raw}: {v}");
        assert_eq!(v["error"]["code"], "bad_request");
    }
    for (method, path) in [
        ("GET", "/admin/clients/cli_missing"),
        ("PATCH", "/admin/clients/cli_missing"),
        ("DELETE", "/admin/clients/cli_missing"),
        ("POST", "/admin/clients/cli_missing/rotate"),
    ] {
        let body = (method == "PATCH").then(|| json!({"rpm": 3}));
        let (s, v) = admin(&gw, method, path, body).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_found");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cli_missing")
        );
    }
    // Without the admin key: 401, nothing listed.
    let r = client().get(gw.url("/admin/clients")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (s, _) = admin(&gw, "GET", "/admin/clients", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_client_key_is_never_passed_upstream_as_the_clients_own_credential() {
    let mock = MockUpstream::start().await;
    // No server-side credential: without client authentication level 5 would pass the client's
    // own key through; a client key turns client authentication on, so it never does.
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(models_config("auto"))
        .start()
        .await;
    assert_eq!(
        call(&gw, R::Messages, "fk-the-clients-own-key-0001")
            .await
            .0,
        200
    );
    assert_eq!(last_bearer(&mock), "fk-the-clients-own-key-0001");
    let (_, key) = create(&gw, json!({"name": "no pass-through"})).await;
    let before = mock.requests_to("/api/llm").len();
    for r in ROUTES {
        let (s, _, v) = call(&gw, r, &key).await;
        assert_eq!(s, 401, "{r:?}: {v}");
        if !matches!(r, R::Messages) {
            assert_eq!(v["error"]["code"], "no_credential", "{v}");
        }
    }
    assert_eq!(
        mock.requests_to("/api/llm").len(),
        before,
        "nothing went upstream"
    );
    // And the client's own key is refused now: it is not a client key.
    let (s, _, _) = call(&gw, R::Messages, "fk-the-clients-own-key-0001").await;
    assert_eq!(s, 401);
}
