//! The console behind a load balancer (issue 11): a session opened on one instance is valid on
//! every other, carries its CSRF token there, ends everywhere at logout, and survives an
//! instance restart (it comes back from Redis).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::cluster::*;
use droid2api_mock::MockUpstream;
use serde_json::json;

const SOON: Duration = Duration::from_secs(5);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Logs in on `inst`: the cookie (`name=value`) and the CSRF token.
async fn login(inst: &Instance) -> (String, String) {
    let r = http()
        .post(inst.url("/admin/session"))
        .json(&json!({"key": ADMIN_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let body: serde_json::Value = r.json().await.unwrap();
    (
        cookie,
        body["data"]["csrf_token"].as_str().unwrap().to_string(),
    )
}

async fn with_cookie(
    inst: &Instance,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> u16 {
    let mut req = http()
        .request(method.parse().unwrap(), inst.url(path))
        .header("cookie", cookie);
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    if method == "POST" {
        req = req.json(&json!({"key": "fk-console-cluster-000001"}));
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_console_session_works_on_every_instance_and_ends_everywhere() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let mut b = Instance::start("B", &mock, Some(&redis)).await;
    let (cookie, csrf) = login(&a).await;
    // The very next request lands on B.
    let ok = eventually(SOON, async || {
        with_cookie(&b, "GET", "/admin/keys", &cookie, None).await == 200
    })
    .await;
    assert!(ok, "{}", b.dump());
    assert_eq!(
        with_cookie(&b, "POST", "/admin/keys", &cookie, None).await,
        403,
        "no CSRF token"
    );
    assert_eq!(
        with_cookie(&b, "POST", "/admin/keys", &cookie, Some(&csrf)).await,
        201
    );
    // B restarts: the session comes back from Redis.
    b.restart().await;
    assert!(
        eventually(SOON, async || {
            with_cookie(&b, "GET", "/admin/keys", &cookie, None).await == 200
        })
        .await,
        "{}",
        b.dump()
    );
    // Logout on B ends it on A too.
    assert_eq!(
        with_cookie(&b, "DELETE", "/admin/session", &cookie, Some(&csrf)).await,
        200
    );
    assert!(
        eventually(SOON, async || {
            with_cookie(&a, "GET", "/admin/keys", &cookie, None).await == 401
        })
        .await,
        "{}",
        a.dump()
    );
    // The cookie never reaches Redis: only its digest does.
    let token = cookie.split_once('=').unwrap().1;
    for inst in [&a, &b] {
        assert!(
            !inst.all_text().contains(token),
            "{}: cookie in the logs",
            inst.name
        );
    }
    let dump = redis.cmd(&["HGETALL", "droid2api:{v1}:sess"]).await;
    assert!(!dump.contains(token), "the cookie value is stored in Redis");
}
