//! Console sessions (contract §11): `POST /admin/session` trades the admin key for the
//! `droid2api_session` cookie and a CSRF token; every admin route then accepts the cookie, a
//! state-changing call only with `x-csrf-token`; logout and a new `ADMIN_ACCESS_KEY` end it;
//! the login is throttled like the admin key; `x-admin-key` keeps working without any of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "console-session-admin-key-0001";

struct Out {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Out {
    let mut r = client().request(method, gw.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Out {
        status,
        headers,
        body,
    }
}

/// Logs in; `(cookie header value, csrf token, Set-Cookie)`.
async fn login(gw: &Gateway, extra: &[(&str, &str)]) -> (String, String, String) {
    let out = call(
        gw,
        reqwest::Method::POST,
        "/admin/session",
        extra,
        Some(json!({"key": ADMIN})),
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let set = out.headers["set-cookie"].to_str().unwrap().to_owned();
    let token = set
        .strip_prefix("droid2api_session=")
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_owned();
    let csrf = out.body["data"]["csrf_token"].as_str().unwrap().to_owned();
    (format!("droid2api_session={token}"), csrf, set)
}

fn assert_error(out: &Out, status: u16, code: &str) {
    assert_eq!(out.status, status, "{}", out.body);
    assert_eq!(out.body["success"], false, "{}", out.body);
    assert_eq!(out.body["error"]["code"], code, "{}", out.body);
    assert!(
        out.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test]
async fn a_session_cookie_stands_in_for_the_admin_key_and_changes_need_the_csrf_token() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).env("ADMIN_ACCESS_KEY", ADMIN).start().await;
    let (cookie, csrf, set) = login(&gw, &[]).await;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: no Secure ({set})");
    assert_eq!(csrf.len(), 64);
    let cookie = cookie.as_str();

    // Reads with the cookie alone.
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/admin/stats",
        &[("cookie", cookie)],
        None,
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/factory/balance/summary",
        &[("cookie", cookie)],
        None,
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);

    // A change without the CSRF token, or with a wrong one: 403 csrf, nothing added.
    let add = || Some(json!({"key": "fk-console-session-key-0001"}));
    let out = call(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        &[("cookie", cookie)],
        add(),
    )
    .await;
    assert_error(&out, 403, "csrf");
    let out = call(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        &[("cookie", cookie), ("x-csrf-token", "0000")],
        add(),
    )
    .await;
    assert_error(&out, 403, "csrf");
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/admin/stats",
        &[("cookie", cookie)],
        None,
    )
    .await;
    assert_eq!(out.body["data"]["total"], 0);
    // With it: done.
    let out = call(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        &[("cookie", cookie), ("x-csrf-token", &csrf)],
        add(),
    )
    .await;
    assert_eq!(out.status, 201, "{}", out.body);

    // The admin key needs no CSRF token.
    let out = call(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        &[("x-admin-key", ADMIN)],
        Some(json!({"key": "fk-console-session-key-0002"})),
    )
    .await;
    assert_eq!(out.status, 201, "{}", out.body);

    // Logout needs the token too, then ends the session and clears the cookie.
    let out = call(
        &gw,
        reqwest::Method::DELETE,
        "/admin/session",
        &[("cookie", cookie)],
        None,
    )
    .await;
    assert_error(&out, 403, "csrf");
    let out = call(
        &gw,
        reqwest::Method::DELETE,
        "/admin/session",
        &[("cookie", cookie), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.body["data"]["ended"], true);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/admin/stats",
        &[("cookie", cookie)],
        None,
    )
    .await;
    assert_error(&out, 401, "unauthorized");
    // Still serving.
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/admin/stats",
        &[("x-admin-key", ADMIN)],
        None,
    )
    .await;
    assert_eq!(out.body["data"]["total"], 2);
}

#[tokio::test]
async fn bad_logins_are_refused_with_the_admin_envelope_and_throttled() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).env("ADMIN_ACCESS_KEY", ADMIN).start().await;
    let post = |body: Option<Value>| call(&gw, reqwest::Method::POST, "/admin/session", &[], body);
    assert_error(&post(None).await, 400, "bad_request");
    assert_error(&post(Some(json!([ADMIN]))).await, 400, "bad_request");
    assert_error(&post(Some(json!({"key": 42}))).await, 400, "bad_request");
    assert_error(&post(Some(json!({}))).await, 400, "bad_request");
    let out = client()
        .post(gw.url("/admin/session"))
        .header("content-type", "text/plain")
        .body(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 415);
    // A forged or unknown cookie: 401, and no cookie at all on a change: 401.
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/admin/stats",
        &[("cookie", "droid2api_session=forged")],
        None,
    )
    .await;
    assert_error(&out, 401, "unauthorized");
    // Ten wrong keys within a minute: the address is throttled, the right key included.
    for _ in 0..10 {
        let out = post(Some(json!({"key": "wrong-admin-key-0123456789"}))).await;
        assert_error(&out, 401, "unauthorized");
        assert!(out.headers.get("set-cookie").is_none());
    }
    let out = post(Some(json!({"key": ADMIN}))).await;
    assert_error(&out, 429, "too_many_attempts");
    assert!(out.headers.get("retry-after").is_some());
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/admin/stats",
        &[("x-admin-key", ADMIN)],
        None,
    )
    .await;
    assert_error(&out, 429, "too_many_attempts");
    // The gateway itself still serves.
    let out = call(&gw, reqwest::Method::GET, "/health", &[], None).await;
    assert_eq!(out.status, 200);
}

#[tokio::test]
async fn secure_behind_a_trusted_https_proxy_and_ended_by_a_new_admin_key() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN)
        .env("TRUST_PROXY", "true")
        .start()
        .await;
    let (cookie, _, set) = login(&gw, &[("x-forwarded-proto", "https")]).await;
    assert!(set.ends_with("; Secure"), "{set}");
    let (_, _, set) = login(&gw, &[]).await;
    assert!(!set.contains("Secure"), "{set}");
    // Restarted on the same data folder with another admin key: the old cookie is refused.
    let data = gw.data_dir.clone();
    let home = gw.home_dir.clone();
    drop(gw);
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", "a-different-admin-key-0002")
        .data_dir(&data)
        .home_dir(&home)
        .start()
        .await;
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/admin/stats",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_error(&out, 401, "unauthorized");
}

#[tokio::test]
async fn without_an_admin_key_there_is_no_login() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let out = call(
        &gw,
        reqwest::Method::POST,
        "/admin/session",
        &[],
        Some(json!({"key": "anything-at-all-0123456789"})),
    )
    .await;
    assert_error(&out, 503, "admin_disabled");
}

#[tokio::test]
async fn console_responses_carry_the_csp_and_nosniff_and_admin_answers_are_not_cached() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN)
        .env("API_ACCESS_KEY", "client-access-key-0123456789")
        .start()
        .await;
    const CSP: &str =
        "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'";
    for (path, headers) in [
        ("/", vec![]),
        ("/health", vec![]),
        ("/admin/stats", vec![("x-admin-key", ADMIN)]),
        ("/admin/stats", vec![]),
        ("/admin/no-such-route", vec![("x-admin-key", ADMIN)]),
    ] {
        let out = call(&gw, reqwest::Method::GET, path, &headers, None).await;
        assert_eq!(out.headers["content-security-policy"], CSP, "{path}");
        assert_eq!(out.headers["x-content-type-options"], "nosniff", "{path}");
        if path.starts_with("/admin") {
            assert_eq!(out.headers["cache-control"], "no-store", "{path}");
        }
    }
    // The export too (a file with whole keys).
    let out = client()
        .get(gw.url("/admin/keys/export"))
        .header("x-admin-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(out.headers()["cache-control"], "no-store");
    assert_eq!(out.headers()["x-content-type-options"], "nosniff");
    // The client API is left as it was.
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/v1/models",
        &[("authorization", "Bearer client-access-key-0123456789")],
        None,
    )
    .await;
    assert_eq!(out.status, 200);
    assert!(out.headers.get("content-security-policy").is_none());
    // A console session is no client key: /v1/* refuses it.
    let (cookie, _, _) = login(&gw, &[]).await;
    let out = call(
        &gw,
        reqwest::Method::GET,
        "/v1/models",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(out.status, 401, "{}", out.body);
}
