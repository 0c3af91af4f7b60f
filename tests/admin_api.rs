//! The admin API (contract §7, usage endpoints aside) against a real gateway and the mock
//! upstream: authentication on every route, exact JSON shapes, bad input, masking, key tests,
//! test-all jobs, export, settings, pool groups and persistence across a restart.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use droid2api::credentials::pool::{Balance, KeyPool};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";
const K1: &str = "fk-admin-test-key-000001";
const K2: &str = "fk-admin-test-key-000002";
const K3: &str = "fk-admin-test-key-000003";
const K4: &str = "fk-admin-test-key-000004";
const K5: &str = "sk-admin-test-key-000005";
const SECRETS: [&str; 5] = [K1, K2, K3, K4, K5];

/// The fields of a key record (contract §7), without `balance`.
const RECORD_FIELDS: [&str; 17] = [
    "id",
    "key_masked",
    "status",
    "cooldown_until",
    "status_reason",
    "status_changed_at",
    "disabled_by",
    "poolGroup",
    "notes",
    "created_at",
    "last_used_at",
    "requests",
    "successes",
    "failures",
    "input_tokens",
    "output_tokens",
    "last_test",
];

/// An admin client that keeps every response body it saw (to scan for secrets).
#[derive(Clone)]
struct Admin {
    base: String,
    key: Option<String>,
    /// `X-Forwarded-For` to send (the client address when the gateway trusts a proxy).
    forwarded_for: Option<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Admin {
    fn new(gw: &Gateway) -> Self {
        Admin {
            base: gw.url(""),
            key: Some(ADMIN_KEY.into()),
            forwarded_for: None,
            seen: Arc::default(),
        }
    }

    fn at_address(&self, ip: &str) -> Self {
        Admin {
            forwarded_for: Some(ip.to_string()),
            ..self.clone()
        }
    }

    fn with_key(&self, key: Option<&str>) -> Self {
        Admin {
            key: key.map(str::to_string),
            ..self.clone()
        }
    }

    /// Sends a request; the body is raw bytes (`None` = no body).
    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
        let mut req = client().request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.header("x-admin-key", k);
        }
        if let Some(ip) = &self.forwarded_for {
            req = req.header("x-forwarded-for", ip);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        // Every reply but an export's is kept for the secret scan.
        if !path.starts_with("/admin/keys/export") || status != 200 {
            self.seen
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&bytes).into_owned());
        }
        (status, headers, bytes)
    }

    /// Sends a request and parses the JSON answer.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, _, b) = self
            .raw(method, path, body.map(|v| serde_json::to_vec(&v).unwrap()))
            .await;
        (s, json(&b))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn post_empty(&self, path: &str) -> (u16, Value) {
        self.call("POST", path, None).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }

    /// Raw bytes as the body.
    async fn send_bytes(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let (s, _, b) = self.raw(method, path, Some(body.to_vec())).await;
        (s, json(&b))
    }

    /// Adds a key; returns its id.
    async fn add(&self, key: &str, group: Option<&str>) -> String {
        let mut body = json!({"key": key});
        if let Some(g) = group {
            body["poolGroup"] = json!(g);
        }
        let (s, v) = self.post("/admin/keys", body).await;
        assert_eq!(s, 201, "{v}");
        v["data"]["id"].as_str().unwrap().to_string()
    }

    async fn key(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/admin/keys/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v["data"].clone()
    }

    /// No reply seen so far holds a whole secret.
    fn assert_no_secrets(&self) {
        for body in self.seen.lock().unwrap().iter() {
            for s in SECRETS {
                assert!(
                    !body.contains(s),
                    "a reply holds the whole secret {s}: {body}"
                );
            }
        }
    }

    async fn health(&self) {
        let r = client()
            .get(format!("{}/health", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the server still serves");
    }
}

/// A success envelope: `{"success":true,"data":…}` (+ an optional message string).
fn data(v: &Value) -> &Value {
    assert_eq!(v["success"], true, "{v}");
    let o = v.as_object().unwrap();
    for k in o.keys() {
        assert!(["success", "data", "message"].contains(&k.as_str()), "{v}");
    }
    if let Some(m) = o.get("message") {
        assert!(m.is_string(), "{v}");
    }
    &v["data"]
}

/// An error envelope with exactly `{"success":false,"error":{"code","message"}}`.
#[track_caller]
fn assert_err(got: &(u16, Value), status: u16, code: &str) -> String {
    let (s, v) = got;
    assert_eq!(*s, status, "{v}");
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"].as_object().unwrap().len(), 2, "{v}");
    let m = v["error"]["message"].as_str().unwrap().to_string();
    assert!(!m.is_empty(), "{v}");
    m
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && s.parse::<jiff::Timestamp>().is_ok())
}

async fn start(mock: &MockUpstream) -> Gateway {
    gateway(mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .start()
        .await
}

fn pool(gw: &Gateway) -> Arc<KeyPool> {
    Arc::clone(&gw.running.as_ref().unwrap().app.pool)
}

/// An upstream error body (the status goes in the mock's override).
fn upstream_error(_status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": "error", "message": message}})
}

// ----- authentication -----------------------------------------------------------------------

/// Every admin and `/factory` route, with a real id where one is needed.
fn all_routes(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/admin/stats".into()),
        ("GET", "/admin/keys".into()),
        ("POST", "/admin/keys".into()),
        ("POST", "/admin/keys/add".into()),
        ("POST", "/admin/keys/batch".into()),
        ("POST", "/admin/keys/bulk".into()),
        ("GET", "/admin/keys/export".into()),
        ("POST", "/admin/keys/test-all".into()),
        ("DELETE", "/admin/keys/disabled".into()),
        ("DELETE", "/admin/keys/banned".into()),
        ("GET", format!("/admin/keys/{id}")),
        ("PUT", format!("/admin/keys/{id}")),
        ("DELETE", format!("/admin/keys/{id}")),
        ("GET", format!("/admin/keys/{id}/history")),
        ("PATCH", format!("/admin/keys/{id}/toggle")),
        ("PATCH", format!("/admin/keys/{id}/pool")),
        ("POST", format!("/admin/keys/{id}/reset")),
        ("POST", format!("/admin/keys/{id}/test")),
        ("GET", "/admin/jobs/job_123".into()),
        ("GET", "/admin/pool-groups".into()),
        ("POST", "/admin/pool-groups".into()),
        ("PATCH", "/admin/pool-groups/default".into()),
        ("DELETE", "/admin/pool-groups/default".into()),
        ("GET", "/admin/config".into()),
        ("PUT", "/admin/config".into()),
        ("POST", "/admin/config/reset".into()),
        ("GET", "/admin".into()),
        ("GET", "/admin/".into()),
        ("GET", "/admin/no-such-route".into()),
        ("POST", "/admin/keys/x/y/z".into()),
        ("GET", "/factory/balance/usage".into()),
        ("GET", "/factory/balance/summary".into()),
        ("POST", "/factory/balance/sync".into()),
        ("POST", "/factory/balance/cleanup".into()),
        ("GET", "/admin/usage".into()),
        ("GET", "/factory".into()),
    ]
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_admin_key() {
    let mock = MockUpstream::start().await;
    // Each wrong attempt comes from its own address: 10 from one address would throttle it
    // (contract §9, tests/throttling.rs).
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .env("TRUST_PROXY", "1")
        .start()
        .await;
    let admin = Admin::new(&gw);
    let id = admin.add(K1, None).await;
    let body = Some(br#"{"key":"fk-would-be-added-0001","status":"disabled"}"#.to_vec());
    for (n, who) in [
        admin.with_key(None),
        admin.with_key(Some("wrong-key")),
        admin.with_key(Some(&ADMIN_KEY[..ADMIN_KEY.len() - 1])),
        admin.with_key(Some(&format!("{ADMIN_KEY}x"))),
    ]
    .into_iter()
    .enumerate()
    {
        for (i, (method, path)) in all_routes(&id).into_iter().enumerate() {
            let who = who.at_address(&format!("10.0.{n}.{i}"));
            let (s, _, b) = who.raw(method, &path, body.clone()).await;
            let got = (s, json(&b));
            assert_err(&got, 401, "unauthorized");
        }
    }
    // Nothing changed behind the refused calls.
    let (_, v) = admin.get("/admin/stats").await;
    assert_eq!(data(&v)["total"], 1);
    assert_eq!(admin.key(&id).await["status"], "active");
    assert!(mock.llm_requests().is_empty(), "no key test ran");
    // `Authorization: Bearer` is not the admin key header.
    let r = client()
        .get(gw.url("/admin/stats"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // With the key: unknown routes under /admin and /factory are 404 in the admin envelope.
    for path in [
        "/admin",
        "/admin/",
        "/admin/no-such-route",
        "/admin/keys/x/y/z",
    ] {
        assert_err(&admin.get(path).await, 404, "not_found");
    }
    for path in ["/factory", "/factory/balance/check/abc"] {
        assert_err(&admin.get(path).await, 404, "not_found");
    }
    // A known path with a wrong method: 405 in the envelope, with Allow.
    let (s, h, b) = admin.raw("GET", "/admin/keys/bulk", None).await;
    assert_eq!(s, 405);
    assert!(h["allow"].to_str().unwrap().contains("POST"));
    assert_eq!(json(&b)["error"]["code"], "method_not_allowed");
    admin.assert_no_secrets();
}

#[tokio::test]
async fn without_an_admin_key_every_route_is_disabled() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let admin = Admin::new(&gw);
    let body = Some(br#"{"key":"fk-would-be-added-0001"}"#.to_vec());
    for who in [admin.with_key(None), admin.clone()] {
        for (method, path) in all_routes("key_0123") {
            let (s, _, b) = who.raw(method, &path, body.clone()).await;
            let m = assert_err(&(s, json(&b)), 503, "admin_disabled");
            assert!(m.contains("ADMIN_ACCESS_KEY"), "{m}");
        }
    }
    assert!(!pool(&gw).is_configured(), "nothing was added");
    // /metrics stays open without an admin key (contract §2).
    let r = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

// ----- keys ---------------------------------------------------------------------------------

#[tokio::test]
async fn add_and_read_keys_with_exact_shapes() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);

    let (s, v) = admin
        .post(
            "/admin/keys",
            json!({"key": format!("  {K1}  "), "notes": "first"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["message"], "key added");
    let rec = data(&v).clone();
    assert_eq!(
        keys_of(&rec),
        RECORD_FIELDS.iter().map(|s| s.to_string()).collect()
    );
    let id = rec["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("key_"), "{id}");
    assert_eq!(rec["key_masked"], "fk-adm…0001");
    assert_eq!(rec["status"], "active");
    assert_eq!(rec["cooldown_until"], Value::Null);
    assert_eq!(rec["status_reason"], Value::Null);
    assert!(is_rfc3339_utc(&rec["status_changed_at"]), "{rec}");
    assert_eq!(rec["disabled_by"], Value::Null);
    assert_eq!(rec["poolGroup"], "default");
    assert_eq!(rec["notes"], "first");
    assert!(is_rfc3339_utc(&rec["created_at"]), "{rec}");
    assert_eq!(rec["last_used_at"], Value::Null);
    for n in [
        "requests",
        "successes",
        "failures",
        "input_tokens",
        "output_tokens",
    ] {
        assert_eq!(rec[n], 0, "{n}");
    }
    assert_eq!(rec["last_test"], Value::Null);

    // The alias, and a key in another group.
    let (s, v) = admin
        .post(
            "/admin/pool-groups",
            json!({"id": "vip", "name": "VIP", "priority": 1}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = admin
        .post("/admin/keys/add", json!({"key": K2, "poolGroup": "vip"}))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(data(&v)["poolGroup"], "vip");
    assert_eq!(data(&v)["notes"], "");
    let id2 = data(&v)["id"].as_str().unwrap().to_string();

    // GET one.
    let (s, v) = admin.get(&format!("/admin/keys/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(data(&v), &rec);

    // Stats.
    let (s, v) = admin.get("/admin/stats").await;
    assert_eq!(s, 200);
    assert_eq!(
        data(&v),
        &json!({"total": 2, "active": 2, "disabled": 0, "banned": 0, "cooling": 0, "by_pool": [
            {"id": "vip", "total": 1, "active": 1, "disabled": 0, "banned": 0, "cooling": 0},
            {"id": "default", "total": 1, "active": 1, "disabled": 0, "banned": 0, "cooling": 0},
        ]})
    );

    // Listing with pagination and filters.
    for k in [K3, K4, K5] {
        admin.add(k, None).await;
    }
    let (s, v) = admin.get("/admin/keys?page=2&limit=2").await;
    assert_eq!(s, 200, "{v}");
    let d = data(&v);
    assert_eq!(
        keys_of(d),
        ["keys", "pagination"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        d["pagination"],
        json!({"page": 2, "limit": 2, "total": 5, "total_pages": 3})
    );
    assert_eq!(d["keys"].as_array().unwrap().len(), 2);
    assert_eq!(d["keys"][0]["key_masked"], "fk-adm…0003");
    let (_, v) = admin.get("/admin/keys").await;
    assert_eq!(
        data(&v)["pagination"],
        json!({"page": 1, "limit": 20, "total": 5, "total_pages": 1})
    );
    assert_eq!(data(&v)["keys"][0], rec, "insertion order");
    let (_, v) = admin.get("/admin/keys?pool=vip&status=all").await;
    let keys = data(&v)["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], id2);
    let (_, v) = admin.get("/admin/keys?page=9").await;
    assert_eq!(data(&v)["keys"], json!([]));
    admin
        .patch(
            &format!("/admin/keys/{id2}/toggle"),
            json!({"status": "disabled"}),
        )
        .await;
    let (_, v) = admin.get("/admin/keys?status=disabled").await;
    assert_eq!(data(&v)["pagination"]["total"], 1);
    assert_eq!(data(&v)["keys"][0]["disabled_by"], "admin");
    let (_, v) = admin.get("/admin/keys?status=active&limit=500").await;
    assert_eq!(data(&v)["pagination"]["total"], 4);

    // A balance appears on a key that has one.
    pool(&gw).set_balance(
        &id,
        Balance {
            used: 250,
            allowance: 1000,
            synced_at: 1_795_703_820_000,
            trial_end: Some(1_798_761_600_000),
        },
    );
    let rec = admin.key(&id).await;
    let mut fields: BTreeSet<String> = RECORD_FIELDS.iter().map(|s| s.to_string()).collect();
    fields.insert("balance".into());
    assert_eq!(keys_of(&rec), fields);
    assert_eq!(
        rec["balance"],
        json!({"used": 250, "allowance": 1000, "remaining": 750, "ratio": 0.25, "last_sync": "2026-11-26T14:37:00Z", "trial_end": "2027-01-01T00:00:00Z"})
    );
    admin.assert_no_secrets();
}

#[tokio::test]
async fn bad_input_is_refused_with_400_naming_the_problem() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let id = admin.add(K1, None).await;
    let key_path = format!("/admin/keys/{id}");

    // Query parameters.
    for (q, names) in [
        ("page=0", "page"),
        ("page=abc", "page"),
        ("page=-1", "page"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("status=foo", "status"),
        ("status=ACTIVE", "status"),
        ("page=%zz", "query"),
    ] {
        let m = assert_err(
            &admin.get(&format!("/admin/keys?{q}")).await,
            400,
            "bad_request",
        );
        assert!(m.contains(names), "{q}: {m}");
    }
    assert_err(&admin.get("/admin/keys?pool=nope").await, 404, "not_found");
    let m = assert_err(
        &admin.get(&format!("{key_path}/history?limit=1001")).await,
        400,
        "bad_request",
    );
    assert!(m.contains("limit"), "{m}");
    assert_err(
        &admin.get(&format!("{key_path}/history?limit=0")).await,
        400,
        "bad_request",
    );
    let m = assert_err(
        &admin.get("/admin/keys/export?format=xml").await,
        400,
        "bad_request",
    );
    assert!(m.contains("format"), "{m}");
    assert_err(
        &admin.get("/admin/keys/export?status=cold").await,
        400,
        "bad_request",
    );

    // Bodies: malformed JSON, not an object, empty, wrong types, missing fields.
    let bodies: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("POST", "/admin/keys", b"{not json".to_vec(), "JSON"),
        ("POST", "/admin/keys", b"[1,2]".to_vec(), "object"),
        ("POST", "/admin/keys", b"".to_vec(), "empty"),
        ("POST", "/admin/keys", b"\"fk-abc\"".to_vec(), "object"),
        ("POST", "/admin/keys", br#"{}"#.to_vec(), "key"),
        (
            "POST",
            "/admin/keys",
            br#"{"key": 12345678}"#.to_vec(),
            "key",
        ),
        (
            "POST",
            "/admin/keys",
            br#"{"key": "fk-new-key-0001", "notes": 5}"#.to_vec(),
            "notes",
        ),
        (
            "POST",
            "/admin/keys",
            br#"{"key": "fk-new-key-0001", "poolGroup": []}"#.to_vec(),
            "poolGroup",
        ),
        (
            "POST",
            "/admin/keys",
            br#"{"key": "short"}"#.to_vec(),
            "key",
        ),
        (
            "POST",
            "/admin/keys",
            br#"{"key": "has a space in it"}"#.to_vec(),
            "key",
        ),
        ("POST", "/admin/keys/add", b"{\"key\":".to_vec(), "JSON"),
        ("POST", "/admin/keys/batch", br#"{}"#.to_vec(), "keys"),
        (
            "POST",
            "/admin/keys/batch",
            br#"{"keys": "fk-one-key-0001"}"#.to_vec(),
            "keys",
        ),
        (
            "POST",
            "/admin/keys/batch",
            br#"{"keys": ["fk-one-key-0001", 2]}"#.to_vec(),
            "keys[1]",
        ),
        (
            "POST",
            "/admin/keys/batch",
            br#"{"keys": []}"#.to_vec(),
            "no keys",
        ),
        (
            "POST",
            "/admin/keys/batch",
            br#"{"text": 5}"#.to_vec(),
            "text",
        ),
        (
            "POST",
            "/admin/keys/batch",
            br#"{"keys": ["fk-one-key-0001"], "text": "x"}"#.to_vec(),
            "either",
        ),
        ("PUT", &key_path, br#"{}"#.to_vec(), "nothing to change"),
        ("PUT", &key_path, br#"{"notes": true}"#.to_vec(), "notes"),
        ("PUT", &key_path, br#"{"key": "bad key"}"#.to_vec(), "key"),
        ("PATCH", "/admin/keys/x/toggle", b"nope".to_vec(), "JSON"),
        (
            "POST",
            "/admin/keys/bulk",
            br#"{"action": "enable"}"#.to_vec(),
            "ids",
        ),
        (
            "POST",
            "/admin/keys/bulk",
            br#"{"ids": [], "action": "enable"}"#.to_vec(),
            "ids",
        ),
        (
            "POST",
            "/admin/keys/bulk",
            br#"{"ids": ["a"], "action": "explode"}"#.to_vec(),
            "action",
        ),
        (
            "POST",
            "/admin/keys/bulk",
            br#"{"ids": ["a"]}"#.to_vec(),
            "action",
        ),
        (
            "POST",
            "/admin/keys/bulk",
            br#"{"ids": ["a"], "action": "move"}"#.to_vec(),
            "poolGroup",
        ),
        (
            "POST",
            "/admin/pool-groups",
            br#"{"name": "x", "priority": 1}"#.to_vec(),
            "id",
        ),
        (
            "POST",
            "/admin/pool-groups",
            br#"{"id": "x", "priority": 1}"#.to_vec(),
            "name",
        ),
        (
            "POST",
            "/admin/pool-groups",
            br#"{"id": "x", "name": "X"}"#.to_vec(),
            "priority",
        ),
        (
            "POST",
            "/admin/pool-groups",
            br#"{"id": "x", "name": "X", "priority": "1"}"#.to_vec(),
            "priority",
        ),
        (
            "POST",
            "/admin/pool-groups",
            br#"{"id": "x", "name": "X", "priority": 1.5}"#.to_vec(),
            "priority",
        ),
        (
            "POST",
            "/admin/pool-groups",
            br#"{"id": "Bad Id", "name": "X", "priority": 1}"#.to_vec(),
            "id",
        ),
        (
            "POST",
            "/admin/pool-groups",
            br#"{"id": "x", "name": "  ", "priority": 1}"#.to_vec(),
            "name",
        ),
        (
            "PATCH",
            "/admin/pool-groups/default",
            br#"{}"#.to_vec(),
            "nothing to change",
        ),
        (
            "PATCH",
            "/admin/pool-groups/default",
            br#"{"id": "other"}"#.to_vec(),
            "id",
        ),
        (
            "PATCH",
            "/admin/pool-groups/default",
            br#"{"priority": "high"}"#.to_vec(),
            "priority",
        ),
        ("PUT", "/admin/config", br#"[]"#.to_vec(), "object"),
    ];
    for (method, path, body, needle) in &bodies {
        let got = admin.send_bytes(method, path, body).await;
        let m = assert_err(&got, 400, "bad_request");
        assert!(
            m.contains(needle),
            "{method} {path} {}: {m}",
            String::from_utf8_lossy(body)
        );
    }
    // Toggle's status values.
    for status in [json!("banned"), json!("on"), json!(1), Value::Null] {
        let got = admin
            .patch(&format!("{key_path}/toggle"), json!({"status": status}))
            .await;
        let m = assert_err(&got, 400, "bad_request");
        assert!(m.contains("status"), "{m}");
    }
    let got = admin.patch(&format!("{key_path}/pool"), json!({})).await;
    assert!(assert_err(&got, 400, "bad_request").contains("poolGroup"));
    // Unknown ids and groups.
    assert_err(&admin.get("/admin/keys/key_nope").await, 404, "not_found");
    assert_err(
        &admin.get("/admin/keys/key_nope/history").await,
        404,
        "not_found",
    );
    assert_err(
        &admin
            .put("/admin/keys/key_nope", json!({"notes": "x"}))
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin
            .patch("/admin/keys/key_nope/toggle", json!({"status": "active"}))
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin
            .patch(&format!("{key_path}/pool"), json!({"poolGroup": "nope"}))
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin.post_empty("/admin/keys/key_nope/reset").await,
        404,
        "not_found",
    );
    assert_err(
        &admin.post_empty("/admin/keys/key_nope/test").await,
        404,
        "not_found",
    );
    assert_err(
        &admin.delete("/admin/keys/key_nope").await,
        404,
        "not_found",
    );
    assert_err(&admin.get("/admin/jobs/job_nope").await, 404, "not_found");
    assert_err(
        &admin
            .post("/admin/keys", json!({"key": K2, "poolGroup": "nope"}))
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin
            .post(
                "/admin/keys/batch",
                json!({"keys": [K2], "poolGroup": "nope"}),
            )
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin
            .post(
                "/admin/keys/bulk",
                json!({"ids": [id], "action": "move", "poolGroup": "nope"}),
            )
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin
            .patch("/admin/pool-groups/nope", json!({"name": "x"}))
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin.delete("/admin/pool-groups/nope").await,
        404,
        "not_found",
    );
    assert_err(
        &admin.post_empty("/admin/keys/test-all?pool=nope").await,
        404,
        "not_found",
    );
    // Duplicates.
    let m = assert_err(
        &admin.post("/admin/keys", json!({"key": K1})).await,
        409,
        "conflict",
    );
    assert!(!m.contains(K1), "{m}");
    assert_err(
        &admin
            .post("/admin/keys", json!({"key": format!(" {K1}\n")}))
            .await,
        409,
        "conflict",
    );
    let other = admin.add(K2, None).await;
    assert_err(
        &admin
            .put(&format!("/admin/keys/{other}"), json!({"key": K1}))
            .await,
        409,
        "conflict",
    );
    assert_err(
        &admin
            .post(
                "/admin/pool-groups",
                json!({"id": "default", "name": "D", "priority": 5}),
            )
            .await,
        409,
        "conflict",
    );

    // Nothing changed, and the server still serves.
    let (_, v) = admin.get("/admin/stats").await;
    assert_eq!(data(&v)["total"], 2);
    admin.health().await;
    let (s, _) = admin.get("/admin/keys").await;
    assert_eq!(s, 200);
    admin.assert_no_secrets();
}

#[tokio::test]
async fn batch_import_from_an_array_or_text() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    admin.add(K1, None).await;

    let (s, v) = admin
        .post(
            "/admin/keys/batch",
            json!({"keys": [K2, K1, "  ", "bad key here", format!(" {K3} "), K2]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = data(&v);
    assert_eq!(
        keys_of(d),
        // `success`: the Node version's name for `added`.
        ["added", "success", "duplicate", "invalid", "ids", "errors"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(d["added"], 2);
    assert_eq!(d["duplicate"], 2);
    assert_eq!(d["invalid"], 2);
    assert_eq!(d["ids"].as_array().unwrap().len(), 2);
    let lines: Vec<u64> = d["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 4, 6]);
    for e in d["errors"].as_array().unwrap() {
        assert_eq!(
            keys_of(e),
            ["line", "reason"].iter().map(|s| s.to_string()).collect()
        );
        assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    // Added keys are real.
    let id = d["ids"][1].as_str().unwrap();
    assert_eq!(admin.key(id).await["key_masked"], "fk-adm…0003");

    // Text: split on newlines (CRLF too), trimmed; a blank line is invalid, the final newline is
    // not a line.
    admin
        .post(
            "/admin/pool-groups",
            json!({"id": "b", "name": "B", "priority": 5}),
        )
        .await;
    let (s, v) = admin
        .post(
            "/admin/keys/batch",
            json!({"text": format!("{K4}\r\n\n  {K5}  \n{K1}\n"), "poolGroup": "b"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = data(&v);
    assert_eq!(
        (
            d["added"].as_u64(),
            d["duplicate"].as_u64(),
            d["invalid"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(d["errors"][0]["line"], 2);
    assert_eq!(d["errors"][1]["line"], 4);
    let (_, v) = admin.get("/admin/keys?pool=b").await;
    let masked: Vec<&str> = data(&v)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_masked"].as_str().unwrap())
        .collect();
    assert_eq!(masked, ["fk-adm…0004", "sk-adm…0005"]);
    admin.assert_no_secrets();
}

#[tokio::test]
async fn update_toggle_move_reset_delete_and_history() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let id = admin.add(K1, None).await;
    let path = format!("/admin/keys/{id}");

    // PUT: notes, then the key itself.
    let (s, v) = admin.put(&path, json!({"notes": "renamed"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v)["notes"], "renamed");
    assert_eq!(data(&v)["key_masked"], "fk-adm…0001");
    let (s, v) = admin.put(&path, json!({"key": K2})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v)["key_masked"], "fk-adm…0002");
    assert_eq!(data(&v)["notes"], "renamed");
    assert_eq!(data(&v)["id"], id.as_str());

    // Toggle.
    let (s, v) = admin
        .patch(&format!("{path}/toggle"), json!({"status": "disabled"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v)["status"], "disabled");
    assert_eq!(data(&v)["disabled_by"], "admin");
    assert!(data(&v)["status_reason"].is_string());
    let (_, v) = admin
        .patch(&format!("{path}/toggle"), json!({"status": "active"}))
        .await;
    assert_eq!(data(&v)["status"], "active");
    assert_eq!(data(&v)["disabled_by"], Value::Null);

    // Move.
    admin
        .post(
            "/admin/pool-groups",
            json!({"id": "tier-1", "name": "Tier 1", "priority": 10}),
        )
        .await;
    let (s, v) = admin
        .patch(&format!("{path}/pool"), json!({"poolGroup": "tier-1"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v)["poolGroup"], "tier-1");

    // Reset clears a cooldown (a 429 on live traffic cools the key).
    mock.set_bearer_status(K2, 429, upstream_error(429, "slow down"));
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 429);
    let rec = admin.key(&id).await;
    assert!(is_rfc3339_utc(&rec["cooldown_until"]), "{rec}");
    assert_eq!(rec["status"], "active");
    let (_, v) = admin.get("/admin/stats").await;
    assert_eq!(data(&v)["cooling"], 1);
    let (_, v) = admin.get("/admin/keys?status=cooling").await;
    assert_eq!(data(&v)["pagination"]["total"], 1);
    let (s, v) = admin.post_empty(&format!("{path}/reset")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v)["cooldown_until"], Value::Null);
    let (_, v) = admin.get("/admin/stats").await;
    assert_eq!(data(&v)["cooling"], 0);

    // History: newest first, `{at, from, to, reason, source}`.
    let (s, v) = admin.get(&format!("{path}/history")).await;
    assert_eq!(s, 200, "{v}");
    let items = data(&v).as_array().unwrap().clone();
    for it in &items {
        assert_eq!(
            keys_of(it),
            ["at", "from", "to", "reason", "source"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert!(is_rfc3339_utc(&it["at"]));
    }
    let seq: Vec<(Value, Value, Value)> = items
        .iter()
        .map(|i| (i["from"].clone(), i["to"].clone(), i["source"].clone()))
        .collect();
    assert_eq!(
        seq.first().unwrap(),
        &(json!("cooling"), json!("active"), json!("admin"))
    );
    assert_eq!(
        seq[1],
        (json!("active"), json!("cooling"), json!("traffic"))
    );
    assert_eq!(
        seq.last().unwrap(),
        &(Value::Null, json!("active"), json!("admin")),
        "creation"
    );
    assert!(seq.contains(&(json!("active"), json!("disabled"), json!("admin"))));
    let (_, v) = admin.get(&format!("{path}/history?limit=2")).await;
    assert_eq!(data(&v).as_array().unwrap().len(), 2);

    // Delete: the record (masked), then 404; the history stays readable.
    let (s, v) = admin.delete(&path).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v)["id"], id.as_str());
    assert_eq!(data(&v)["key_masked"], "fk-adm…0002");
    assert_err(&admin.get(&path).await, 404, "not_found");
    let (s, v) = admin.get(&format!("{path}/history")).await;
    assert_eq!(s, 200);
    assert_eq!(data(&v)[0]["to"], "deleted");
    admin.assert_no_secrets();
}

#[tokio::test]
async fn static_routes_are_not_captured_by_the_id_route() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let a = admin.add(K1, None).await;
    let b = admin.add(K2, None).await;
    let c = admin.add(K3, None).await;
    admin
        .patch(
            &format!("/admin/keys/{a}/toggle"),
            json!({"status": "disabled"}),
        )
        .await;
    mock.set_bearer_status(K2, 402, upstream_error(402, "no credits left"));
    let (s, v) = admin.post_empty(&format!("/admin/keys/{b}/test")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(admin.key(&b).await["status"], "banned");

    let (s, v) = admin.delete("/admin/keys/disabled").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v), &json!({"count": 1}));
    let (s, v) = admin.delete("/admin/keys/banned").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v), &json!({"count": 1}));
    let (_, v) = admin.get("/admin/keys").await;
    let ids: Vec<&str> = data(&v)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [c.as_str()]);
    let (s, v) = admin.delete("/admin/keys/banned").await;
    assert_eq!((s, data(&v)), (200, &json!({"count": 0})));

    let (s, h, _) = admin.raw("GET", "/admin/keys/export", None).await;
    assert_eq!(s, 200);
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let (s, v) = admin.post("/admin/keys/batch", json!({"keys": [K4]})).await;
    assert_eq!((s, &data(&v)["added"]), (200, &json!(1)));
    let (s, v) = admin
        .post("/admin/keys/bulk", json!({"ids": [c], "action": "reset"}))
        .await;
    assert_eq!((s, data(&v)), (200, &json!({"count": 1, "errors": []})));
    let (s, v) = admin.post("/admin/keys/add", json!({"key": K5})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = admin.post_empty("/admin/keys/test-all").await;
    assert_eq!(s, 202, "{v}");
    admin.assert_no_secrets();
}

#[tokio::test]
async fn bulk_actions() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let ids = [
        admin.add(K1, None).await,
        admin.add(K2, None).await,
        admin.add(K3, None).await,
    ];
    admin
        .post(
            "/admin/pool-groups",
            json!({"id": "spare", "name": "Spare", "priority": 2000}),
        )
        .await;

    let (s, v) = admin
        .post(
            "/admin/keys/bulk",
            json!({"ids": [ids[0], ids[1], "key_missing"], "action": "disable"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = data(&v);
    assert_eq!(d["count"], 2);
    assert_eq!(d["errors"].as_array().unwrap().len(), 1);
    assert_eq!(d["errors"][0]["id"], "key_missing");
    assert!(
        d["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    assert_eq!(
        keys_of(&d["errors"][0]),
        ["id", "error"].iter().map(|s| s.to_string()).collect()
    );
    let (_, v) = admin.get("/admin/stats").await;
    assert_eq!(data(&v)["disabled"], 2);

    let (_, v) = admin
        .post("/admin/keys/bulk", json!({"ids": ids, "action": "enable"}))
        .await;
    assert_eq!(data(&v), &json!({"count": 3, "errors": []}));
    let (_, v) = admin
        .post(
            "/admin/keys/bulk",
            json!({"ids": [ids[2]], "action": "move", "poolGroup": "spare"}),
        )
        .await;
    assert_eq!(data(&v), &json!({"count": 1, "errors": []}));
    assert_eq!(admin.key(&ids[2]).await["poolGroup"], "spare");
    let (_, v) = admin
        .post("/admin/keys/bulk", json!({"ids": ids, "action": "reset"}))
        .await;
    assert_eq!(data(&v)["count"], 3);
    let (_, v) = admin
        .post(
            "/admin/keys/bulk",
            json!({"ids": [ids[0], ids[1]], "action": "delete"}),
        )
        .await;
    assert_eq!(data(&v), &json!({"count": 2, "errors": []}));
    let (_, v) = admin.get("/admin/stats").await;
    assert_eq!(data(&v)["total"], 1);
    admin.assert_no_secrets();
}

// ----- key tests ----------------------------------------------------------------------------

#[tokio::test]
async fn key_test_sends_a_minimal_call_and_maps_the_answer() {
    let mock = MockUpstream::start().await;
    // The first anthropic model has a fixed reasoning level: the test must still send no
    // thinking (the Node version's bug).
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(json!({"models": [
            {"id": "gpt-test", "type": "openai", "reasoning": "high"},
            {"id": "claude-first", "type": "anthropic", "reasoning": "high"},
            {"id": "claude-second", "type": "anthropic", "reasoning": "off"},
        ]}))
        .start()
        .await;
    let admin = Admin::new(&gw);
    let id = admin.add(K1, None).await;

    let (s, v) = admin.post_empty(&format!("/admin/keys/{id}/test")).await;
    assert_eq!(s, 200, "{v}");
    let d = data(&v);
    assert_eq!(
        keys_of(d),
        // `success` and `key_status`: the Node version's names.
        ["ok", "status", "result", "message", "success", "key_status"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        (&d["ok"], &d["status"], &d["result"]),
        (&json!(true), &json!(200), &json!("success"))
    );
    let r = mock.last_llm_request().unwrap();
    assert_eq!(r.path, "/api/llm/a/v1/messages");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {K1}").as_str())
    );
    assert_eq!(r.header("x-api-key"), Some("placeholder"));
    assert_eq!(r.header("x-factory-client"), Some("cli"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert!(
        r.header("x-stainless-helper-method").is_none(),
        "not a stream"
    );
    assert!(r.header("anthropic-beta").is_none());
    let body = r.json.unwrap();
    assert_eq!(body["model"], "claude-first");
    assert_eq!(body["max_tokens"], 1);
    assert_eq!(body["stream"], false);
    assert!(body.get("thinking").is_none(), "{body}");
    assert!(body.get("system").is_none(), "{body}");
    let rec = admin.key(&id).await;
    assert_eq!(rec["last_test"]["result"], "success");
    assert_eq!(rec["last_test"]["status"], 200);
    assert!(is_rfc3339_utc(&rec["last_test"]["at"]));
    assert_eq!(
        keys_of(&rec["last_test"]),
        ["at", "result", "status"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(rec["requests"], 0, "a test is not traffic");

    // Inconclusive answers change nothing (and never cool the key).
    for status in [500, 429, 403, 400, 503] {
        mock.set_bearer_status(K1, status, upstream_error(status, "mock trouble"));
        for _ in 0..6 {
            let (s, v) = admin.post_empty(&format!("/admin/keys/{id}/test")).await;
            assert_eq!(s, 200, "{v}");
            let d = data(&v);
            assert_eq!(
                (&d["ok"], &d["status"], &d["result"]),
                (&json!(false), &json!(status), &json!("inconclusive")),
                "{d}"
            );
        }
        let rec = admin.key(&id).await;
        assert_eq!(rec["status"], "active", "{status}");
        assert_eq!(rec["cooldown_until"], Value::Null, "{status}");
        assert_eq!(rec["last_test"]["result"], "inconclusive");
        assert_eq!(rec["last_test"]["status"], status);
    }

    // 401 → disabled (automatically), 402 → banned with the reason.
    mock.set_bearer_status(K1, 401, upstream_error(401, "invalid key"));
    let (_, v) = admin.post_empty(&format!("/admin/keys/{id}/test")).await;
    let d = data(&v);
    assert_eq!(
        (&d["ok"], &d["status"], &d["result"]),
        (&json!(false), &json!(401), &json!("disabled"))
    );
    let rec = admin.key(&id).await;
    assert_eq!(
        (&rec["status"], &rec["disabled_by"]),
        (&json!("disabled"), &json!("auto"))
    );

    let id2 = admin.add(K2, None).await;
    mock.set_bearer_status(
        K2,
        402,
        upstream_error(402, "Payment Required - No Credits"),
    );
    let (_, v) = admin.post_empty(&format!("/admin/keys/{id2}/test")).await;
    let d = data(&v);
    assert_eq!(
        (&d["ok"], &d["status"], &d["result"]),
        (&json!(false), &json!(402), &json!("banned"))
    );
    assert!(d["message"].as_str().unwrap().contains("No Credits"), "{d}");
    let rec = admin.key(&id2).await;
    assert_eq!(rec["status"], "banned");
    assert!(
        rec["status_reason"]
            .as_str()
            .unwrap()
            .contains("No Credits")
    );
    let (_, v) = admin.get(&format!("/admin/keys/{id2}/history")).await;
    assert_eq!(data(&v)[0]["source"], "test");
    assert_eq!(data(&v)[0]["to"], "banned");

    // A connection failure is inconclusive with status 0.
    mock.shutdown().await;
    let id3 = admin.add(K3, None).await;
    let (s, v) = admin.post_empty(&format!("/admin/keys/{id3}/test")).await;
    assert_eq!(s, 200, "{v}");
    let d = data(&v);
    assert_eq!(
        (&d["ok"], &d["status"], &d["result"]),
        (&json!(false), &json!(0), &json!("inconclusive"))
    );
    assert_eq!(admin.key(&id3).await["status"], "active");
    admin.assert_no_secrets();
}

#[tokio::test]
async fn successful_test_restores_automatic_bans_but_never_an_admin_disable() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let banned = admin.add(K1, None).await;
    let disabled = admin.add(K2, None).await;

    // Banned by live traffic (402), restored by a successful test.
    mock.set_bearer_status(K1, 402, upstream_error(402, "no credits"));
    admin
        .patch(
            &format!("/admin/keys/{disabled}/toggle"),
            json!({"status": "disabled"}),
        )
        .await;
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 402);
    let rec = admin.key(&banned).await;
    assert_eq!(
        (&rec["status"], &rec["disabled_by"]),
        (&json!("banned"), &json!("auto"))
    );
    mock.clear_bearer_status(K1);
    let (_, v) = admin
        .post_empty(&format!("/admin/keys/{banned}/test"))
        .await;
    assert_eq!(data(&v)["result"], "success");
    let rec = admin.key(&banned).await;
    assert_eq!(
        (&rec["status"], &rec["disabled_by"]),
        (&json!("active"), &Value::Null)
    );
    let (_, v) = admin.get(&format!("/admin/keys/{banned}/history")).await;
    assert_eq!(
        (
            &data(&v)[0]["from"],
            &data(&v)[0]["to"],
            &data(&v)[0]["source"]
        ),
        (&json!("banned"), &json!("active"), &json!("test"))
    );

    // Disabled by an admin: a success is recorded, the key stays disabled.
    let (_, v) = admin
        .post_empty(&format!("/admin/keys/{disabled}/test"))
        .await;
    assert_eq!(data(&v)["result"], "success");
    let rec = admin.key(&disabled).await;
    assert_eq!(
        (&rec["status"], &rec["disabled_by"]),
        (&json!("disabled"), &json!("admin"))
    );
    assert_eq!(rec["last_test"]["result"], "success");
    // ...and a 402 does not turn it into an automatic ban that a later success would lift.
    mock.set_bearer_status(K2, 402, upstream_error(402, "no credits"));
    let (_, v) = admin
        .post_empty(&format!("/admin/keys/{disabled}/test"))
        .await;
    assert_eq!(data(&v)["result"], "banned");
    mock.clear_bearer_status(K2);
    admin
        .post_empty(&format!("/admin/keys/{disabled}/test"))
        .await;
    let rec = admin.key(&disabled).await;
    assert_eq!(
        (&rec["status"], &rec["disabled_by"]),
        (&json!("disabled"), &json!("admin"))
    );

    // Disabled automatically by a test's 401: restored by a success.
    mock.set_bearer_status(K1, 401, upstream_error(401, "revoked"));
    admin
        .post_empty(&format!("/admin/keys/{banned}/test"))
        .await;
    assert_eq!(admin.key(&banned).await["status"], "disabled");
    mock.clear_bearer_status(K1);
    admin
        .post_empty(&format!("/admin/keys/{banned}/test"))
        .await;
    assert_eq!(admin.key(&banned).await["status"], "active");
    admin.assert_no_secrets();
}

#[tokio::test]
async fn key_tests_need_an_anthropic_model() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(json!({"models": [{"id": "gpt-only", "type": "openai"}]}))
        .start()
        .await;
    let admin = Admin::new(&gw);
    let id = admin.add(K1, None).await;
    let m = assert_err(
        &admin.post_empty(&format!("/admin/keys/{id}/test")).await,
        400,
        "bad_request",
    );
    assert!(m.contains("anthropic"), "{m}");
    let m = assert_err(
        &admin.post_empty("/admin/keys/test-all").await,
        400,
        "bad_request",
    );
    assert!(m.contains("anthropic"), "{m}");
    assert!(mock.llm_requests().is_empty());
    admin.health().await;
    admin.assert_no_secrets();
}

async fn wait_job(admin: &Admin, job: &str) -> Value {
    for _ in 0..400 {
        let (s, v) = admin.get(&format!("/admin/jobs/{job}")).await;
        assert_eq!(s, 200, "{v}");
        let d = data(&v).clone();
        assert_eq!(
            keys_of(&d),
            [
                "state",
                "total",
                "done",
                "success",
                "banned",
                "disabled",
                "inconclusive"
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        );
        assert!(["queued", "running", "done", "failed"].contains(&d["state"].as_str().unwrap()));
        if d["state"] == "done" || d["state"] == "failed" {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job} did not finish");
}

#[tokio::test]
async fn test_all_runs_as_a_job() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(json!({"key_pool": {"test_concurrency": 2}}))
        .start()
        .await;
    let admin = Admin::new(&gw);
    admin
        .post(
            "/admin/pool-groups",
            json!({"id": "other", "name": "Other", "priority": 5}),
        )
        .await;
    let ids = [
        admin.add(K1, None).await,
        admin.add(K2, None).await,
        admin.add(K3, None).await,
        admin.add(K4, None).await,
        admin.add(K5, Some("other")).await,
    ];
    // Every status is tested, disabled ones included.
    admin
        .patch(
            &format!("/admin/keys/{}/toggle", ids[0]),
            json!({"status": "disabled"}),
        )
        .await;
    mock.set_bearer_status(K2, 402, upstream_error(402, "no credits"));
    mock.set_bearer_status(K3, 401, upstream_error(401, "bad key"));
    mock.set_bearer_status(K4, 500, upstream_error(500, "boom"));

    let (s, v) = admin.post_empty("/admin/keys/test-all").await;
    assert_eq!(s, 202, "{v}");
    let job = data(&v)["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        keys_of(data(&v)),
        ["job_id"].iter().map(|s| s.to_string()).collect()
    );
    let d = wait_job(&admin, &job).await;
    assert_eq!(
        d,
        json!({"state": "done", "total": 5, "done": 5, "success": 2, "banned": 1, "disabled": 1, "inconclusive": 1})
    );
    assert_eq!(mock.llm_requests().len(), 5);
    assert_eq!(admin.key(&ids[1]).await["status"], "banned");
    assert_eq!(admin.key(&ids[2]).await["status"], "disabled");
    assert_eq!(admin.key(&ids[3]).await["status"], "active");
    let k0 = admin.key(&ids[0]).await;
    assert_eq!(
        (&k0["status"], &k0["last_test"]["result"]),
        (&json!("disabled"), &json!("success"))
    );

    // A pool filter.
    mock.clear_requests();
    let (s, v) = admin.post_empty("/admin/keys/test-all?pool=other").await;
    assert_eq!(s, 202);
    let d = wait_job(&admin, data(&v)["job_id"].as_str().unwrap()).await;
    assert_eq!(d["total"], 1);
    assert_eq!(d["success"], 1);
    assert_eq!(last_bearer(&mock), K5);
    // The earlier job is still readable.
    let (s, _) = admin.get(&format!("/admin/jobs/{job}")).await;
    assert_eq!(s, 200);
    admin.assert_no_secrets();
}

// ----- Node-version scripts -----------------------------------------------------------------

#[tokio::test]
async fn notes_change_through_the_node_route_too() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let id = admin.add(K1, None).await;
    let path = format!("/admin/keys/{id}/notes");
    let (s, v) = admin.patch(&path, json!({"notes": "team B"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        keys_of(data(&v)),
        RECORD_FIELDS.iter().map(|f| f.to_string()).collect()
    );
    assert_eq!(admin.key(&id).await["notes"], "team B");
    // Bad input: named, and nothing changes.
    for (body, needle) in [
        (json!({}), "notes"),
        (json!({"notes": 5}), "notes"),
        (json!({"notes": "x".repeat(5000)}), "notes"),
    ] {
        let (s, v) = admin.patch(&path, body).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let (s, v) = admin
        .patch("/admin/keys/key_nope/notes", json!({"notes": "x"}))
        .await;
    assert_eq!((s, &v["error"]["code"]), (404, &json!("not_found")));
    assert_eq!(admin.key(&id).await["notes"], "team B");
}

#[tokio::test]
async fn toggle_without_a_body_flips_the_status() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let id = admin.add(K1, None).await;
    let path = format!("/admin/keys/{id}/toggle");
    // No body at all (the Node version's scripts), then `{}`: active ⇄ disabled.
    for (body, want) in [
        (None, "disabled"),
        (None, "active"),
        (Some(json!({})), "disabled"),
        (Some(json!({})), "active"),
    ] {
        let (s, v) = admin.call("PATCH", &path, body.clone()).await;
        assert_eq!(s, 200, "{body:?}: {v}");
        let d = data(&v);
        assert_eq!(
            keys_of(d),
            RECORD_FIELDS.iter().map(|f| f.to_string()).collect()
        );
        assert_eq!(d["status"], want, "{body:?}: {v}");
        assert_eq!(admin.key(&id).await["status"], want);
    }
    assert_eq!(admin.key(&id).await["disabled_by"], Value::Null);
    let (s, v) = admin.call("PATCH", &path, None).await;
    assert_eq!((s, &data(&v)["disabled_by"]), (200, &json!("admin")));
    // A banned key becomes active (unbanned), as toggling it to active does.
    let banned = admin.add(K2, None).await;
    mock.set_bearer_status(K2, 402, upstream_error(402, "no credits"));
    let (s, v) = admin
        .post_empty(&format!("/admin/keys/{banned}/test"))
        .await;
    assert_eq!((s, &data(&v)["result"]), (200, &json!("banned")));
    assert_eq!(admin.key(&banned).await["status"], "banned");
    let (s, v) = admin
        .call("PATCH", &format!("/admin/keys/{banned}/toggle"), None)
        .await;
    assert_eq!((s, &data(&v)["status"]), (200, &json!("active")), "{v}");
    // With a status it behaves as before; an unknown id is still a 404, a bad body a 400.
    let (s, v) = admin.patch(&path, json!({"status": "active"})).await;
    assert_eq!((s, &data(&v)["status"]), (200, &json!("active")));
    let (s, v) = admin.patch(&path, json!({"status": "disabled"})).await;
    assert_eq!((s, &data(&v)["status"]), (200, &json!("disabled")));
    assert_err(
        &admin
            .call("PATCH", "/admin/keys/key_nope/toggle", None)
            .await,
        404,
        "not_found",
    );
    assert_err(
        &admin.send_bytes("PATCH", &path, b"[]").await,
        400,
        "bad_request",
    );
    admin.health().await;
    admin.assert_no_secrets();
}

#[tokio::test]
async fn test_all_can_wait_for_the_results() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let ids = [
        admin.add(K1, None).await,
        admin.add(K2, None).await,
        admin.add(K3, None).await,
    ];
    mock.set_bearer_status(K2, 402, upstream_error(402, "no credits"));
    // `wait=true`: the finished job, as GET /admin/jobs/:id shows it, in the same call.
    let (s, v) = admin.post_empty("/admin/keys/test-all?wait=true").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        data(&v),
        &json!({"state": "done", "total": 3, "done": 3, "success": 2, "banned": 1, "disabled": 0, "inconclusive": 0})
    );
    assert_eq!(mock.llm_requests().len(), 3);
    assert_eq!(admin.key(&ids[1]).await["status"], "banned");
    let (s, v) = admin
        .post_empty("/admin/keys/test-all?wait=1&wait_s=30")
        .await;
    assert_eq!((s, &data(&v)["total"]), (200, &json!(3)), "{v}");
    // `wait=false` (or none) answers at once, as before.
    let (s, v) = admin.post_empty("/admin/keys/test-all?wait=false").await;
    assert_eq!(s, 202, "{v}");
    wait_job(&admin, data(&v)["job_id"].as_str().unwrap()).await;
    // Past `wait_s`: 202 with the job id, and the job goes on to the end.
    mock.push_rule(
        Rule::new(Reply::json(200, json!({"type": "message"})).with_delay_ms(2500)).bearer(K1),
    );
    let started = std::time::Instant::now();
    let (s, v) = admin
        .post_empty("/admin/keys/test-all?wait=true&wait_s=1")
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let job = data(&v)["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        keys_of(data(&v)),
        ["job_id".to_string()].into_iter().collect()
    );
    assert!(v["message"].as_str().unwrap().contains(&job), "{v}");
    let d = wait_job(&admin, &job).await;
    assert_eq!((&d["state"], &d["done"]), (&json!("done"), &json!(3)));
    // Bad values are named.
    for (q, needle) in [
        ("wait=maybe", "wait"),
        ("wait=true&wait_s=0", "wait_s"),
        ("wait=true&wait_s=601", "wait_s"),
        ("wait=true&wait_s=x", "wait_s"),
    ] {
        let got = admin.post_empty(&format!("/admin/keys/test-all?{q}")).await;
        let m = assert_err(&got, 400, "bad_request");
        assert!(m.contains(needle), "{q}: {m}");
    }
    admin.health().await;
    admin.assert_no_secrets();
}

// ----- export -------------------------------------------------------------------------------

#[tokio::test]
async fn export_in_three_formats() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    let a = admin.add(K1, None).await;
    let (_, v) = admin
        .post(
            "/admin/keys",
            json!({"key": K2, "notes": "has, comma and \"quotes\"\nand a line"}),
        )
        .await;
    let b = data(&v)["id"].as_str().unwrap().to_string();
    admin
        .patch(
            &format!("/admin/keys/{b}/toggle"),
            json!({"status": "disabled"}),
        )
        .await;
    let today = jiff::ZonedDateTime::now().strftime("%Y-%m-%d").to_string();

    let (s, h, body) = admin.raw("GET", "/admin/keys/export", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        h["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"droid2api-keys-all-{today}.txt\"")
    );
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        format!("{K1}\n{K2}\n")
    );

    let (s, h, body) = admin
        .raw("GET", "/admin/keys/export?status=active&format=txt", None)
        .await;
    assert_eq!(s, 200);
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("droid2api-keys-active-{today}.txt"))
    );
    assert_eq!(String::from_utf8(body.to_vec()).unwrap(), format!("{K1}\n"));

    let (s, h, body) = admin
        .raw("GET", "/admin/keys/export?format=json", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("droid2api-keys-all-{today}.json"))
    );
    assert_eq!(
        json(&body),
        json!([
            {"id": a, "key": K1, "status": "active", "poolGroup": "default", "notes": ""},
            {"id": b, "key": K2, "status": "disabled", "poolGroup": "default", "notes": "has, comma and \"quotes\"\nand a line"},
        ])
    );

    let (s, h, body) = admin
        .raw(
            "GET",
            "/admin/keys/export?format=csv&status=disabled&pool=default",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("droid2api-keys-disabled-{today}.csv"))
    );
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        format!(
            "id,key,status,poolGroup,notes\r\n{b},{K2},disabled,default,\"has, comma and \"\"quotes\"\"\nand a line\"\r\n"
        )
    );

    // Nothing matches: an empty file (csv keeps its header).
    let (_, _, body) = admin
        .raw("GET", "/admin/keys/export?status=banned", None)
        .await;
    assert!(body.is_empty());
    let (_, _, body) = admin
        .raw("GET", "/admin/keys/export?status=banned&format=csv", None)
        .await;
    assert_eq!(&body[..], b"id,key,status,poolGroup,notes\r\n");

    // Bad parameters: the envelope.
    let (s, _, body) = admin
        .raw("GET", "/admin/keys/export?format=pdf", None)
        .await;
    assert_err(&(s, json(&body)), 400, "bad_request");
    let (s, _, body) = admin.raw("GET", "/admin/keys/export?pool=nope", None).await;
    assert_err(&(s, json(&body)), 404, "not_found");
    admin.assert_no_secrets();
}

// ----- settings -----------------------------------------------------------------------------

#[tokio::test]
async fn config_put_get_reset() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(json!({"key_pool": {"max_attempts": 4, "algorithm": "least-used"}}))
        .start()
        .await;
    let admin = Admin::new(&gw);
    let defaults = json!({
        "algorithm": "least-used", "max_attempts": 4, "rate_limit_cooldown_s": 60,
        "rate_limit_cooldown_max_s": 3600, "failure_threshold": 5, "failure_window_s": 60,
        "failure_cooldown_s": 30, "unauthorized_threshold": 2, "auto_fallback": true,
        "test_concurrency": 10, "sticky_sessions": true, "sticky_ttl_s": 3600,
    });
    let (s, v) = admin.get("/admin/config").await;
    assert_eq!(s, 200);
    assert_eq!(data(&v), &json!({"key_pool": defaults, "pinned": []}));

    let (s, v) = admin
        .put(
            "/admin/config",
            json!({"algorithm": "random", "max_attempts": 7, "auto_fallback": false}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut changed = defaults.clone();
    changed["algorithm"] = json!("random");
    changed["max_attempts"] = json!(7);
    changed["auto_fallback"] = json!(false);
    assert_eq!(data(&v), &json!({"key_pool": changed, "pinned": []}));
    let (_, v) = admin.get("/admin/config").await;
    assert_eq!(data(&v)["key_pool"], changed);
    // Effective at once.
    let effective = pool(&gw).settings();
    assert_eq!(
        (
            effective.algorithm.as_str(),
            effective.max_attempts,
            effective.auto_fallback
        ),
        ("random", 7, false)
    );

    // Bad input: unknown field, bad values (named), empty object, null, cross-field rule.
    for (body, needle) in [
        (json!({"algorithm": "fastest"}), "algorithm"),
        (json!({"max_attempts": 0}), "max_attempts"),
        (json!({"max_attempts": "3"}), "max_attempts"),
        (json!({"auto_fallback": "yes"}), "auto_fallback"),
        (json!({"test_concurrency": 1000}), "test_concurrency"),
        (json!({"max_retries": 3}), "max_retries"),
        (json!({"retry": {"enabled": true}}), "retry"),
        (
            json!({"rate_limit_cooldown_max_s": 10}),
            "rate_limit_cooldown_max_s",
        ),
        (json!({"failure_window_s": null}), "failure_window_s"),
        (json!({}), "nothing to change"),
    ] {
        let m = assert_err(
            &admin.put("/admin/config", body.clone()).await,
            400,
            "bad_request",
        );
        assert!(m.contains(needle), "{body}: {m}");
    }
    // A bad field in a mixed update changes nothing.
    let got = admin
        .put(
            "/admin/config",
            json!({"max_attempts": 2, "failure_threshold": -1}),
        )
        .await;
    assert_err(&got, 400, "bad_request");
    let (_, v) = admin.get("/admin/config").await;
    assert_eq!(data(&v)["key_pool"], changed);

    // Reset: config.json and defaults again.
    let (s, v) = admin.post_empty("/admin/config/reset").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v), &json!({"key_pool": defaults, "pinned": []}));
    assert_eq!(pool(&gw).settings().algorithm, "least-used");
    admin.health().await;
}

#[tokio::test]
async fn a_setting_pinned_by_the_environment_cannot_be_changed() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .env("KEY_POOL_ALGORITHM", "weighted-score")
        .start()
        .await;
    let admin = Admin::new(&gw);
    let (_, v) = admin.get("/admin/config").await;
    assert_eq!(data(&v)["pinned"], json!(["algorithm"]));
    assert_eq!(data(&v)["key_pool"]["algorithm"], "weighted-score");
    let m = assert_err(
        &admin
            .put("/admin/config", json!({"algorithm": "random"}))
            .await,
        409,
        "conflict",
    );
    assert!(
        m.contains("algorithm") && m.contains("KEY_POOL_ALGORITHM"),
        "{m}"
    );
    let got = admin
        .put(
            "/admin/config",
            json!({"algorithm": "random", "max_attempts": 5}),
        )
        .await;
    assert_err(&got, 409, "conflict");
    // Other fields still change; the pinned one keeps its env value.
    let (s, v) = admin.put("/admin/config", json!({"max_attempts": 5})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(data(&v)["key_pool"]["max_attempts"], 5);
    assert_eq!(data(&v)["key_pool"]["algorithm"], "weighted-score");
    let (_, v) = admin.post_empty("/admin/config/reset").await;
    assert_eq!(data(&v)["key_pool"]["algorithm"], "weighted-score");
    assert_eq!(data(&v)["key_pool"]["max_attempts"], 3);
}

// ----- pool groups --------------------------------------------------------------------------

#[tokio::test]
async fn pool_group_lifecycle() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);

    let (s, v) = admin.get("/admin/pool-groups").await;
    assert_eq!(s, 200);
    assert_eq!(
        data(&v),
        &json!([{"id": "default", "name": "default", "priority": 1000, "description": "", "total": 0, "active": 0, "disabled": 0, "banned": 0, "cooling": 0}])
    );
    let (s, v) = admin
        .post("/admin/pool-groups", json!({"id": "premium_1", "name": "Premium", "priority": 10, "description": "paid keys"}))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        data(&v),
        &json!({"id": "premium_1", "name": "Premium", "priority": 10, "description": "paid keys", "total": 0, "active": 0, "disabled": 0, "banned": 0, "cooling": 0})
    );
    // The group serves at once: a key in it outranks default.
    admin.add(K1, None).await;
    let p1 = admin.add(K2, Some("premium_1")).await;
    let p2 = admin.add(K3, Some("premium_1")).await;
    admin
        .patch(
            &format!("/admin/keys/{p2}/toggle"),
            json!({"status": "disabled"}),
        )
        .await;
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(last_bearer(&mock), K2);

    let (_, v) = admin.get("/admin/pool-groups").await;
    let groups = data(&v).as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["id"], "premium_1", "sorted by priority");
    assert_eq!(
        (
            &groups[0]["total"],
            &groups[0]["active"],
            &groups[0]["disabled"]
        ),
        (&json!(2), &json!(1), &json!(1))
    );

    // Update.
    let (s, v) = admin
        .patch(
            "/admin/pool-groups/premium_1",
            json!({"priority": 2000, "name": "Premium+"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        data(&v),
        &json!({"id": "premium_1", "name": "Premium+", "priority": 2000, "description": "paid keys", "total": 2, "active": 1, "disabled": 1, "banned": 0, "cooling": 0})
    );
    let (_, v) = admin
        .patch("/admin/pool-groups/premium_1", json!({"description": ""}))
        .await;
    assert_eq!(data(&v)["description"], "");
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        last_bearer(&mock),
        K1,
        "default (1000) now outranks premium_1 (2000)"
    );

    // Delete: keys move to default; default itself cannot go.
    let (s, v) = admin.delete("/admin/pool-groups/premium_1").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        data(&v),
        &json!({"deleted": {"id": "premium_1", "name": "Premium+", "priority": 2000, "description": ""}, "moved_keys": 2, "affected_keys": 2})
    );
    assert_eq!(admin.key(&p1).await["poolGroup"], "default");
    assert_eq!(admin.key(&p2).await["poolGroup"], "default");
    let (_, v) = admin.get("/admin/stats").await;
    assert_eq!(
        data(&v)["by_pool"],
        json!([{"id": "default", "total": 3, "active": 2, "disabled": 1, "banned": 0, "cooling": 0}])
    );
    let m = assert_err(
        &admin.delete("/admin/pool-groups/default").await,
        400,
        "bad_request",
    );
    assert!(m.contains("default"), "{m}");
    assert_err(
        &admin.delete("/admin/pool-groups/premium_1").await,
        404,
        "not_found",
    );
    // The default group can be changed.
    let (s, v) = admin
        .patch("/admin/pool-groups/default", json!({"priority": 5}))
        .await;
    assert_eq!((s, &data(&v)["priority"]), (200, &json!(5)));
    admin.assert_no_secrets();
}

// ----- persistence and serving --------------------------------------------------------------

#[tokio::test]
async fn admin_changes_survive_a_graceful_restart() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    admin
        .post(
            "/admin/pool-groups",
            json!({"id": "tier", "name": "Tier", "priority": 7, "description": "d"}),
        )
        .await;
    let a = admin.add(K1, Some("tier")).await;
    let b = admin.add(K2, None).await;
    admin
        .put(&format!("/admin/keys/{a}"), json!({"notes": "kept"}))
        .await;
    admin
        .patch(
            &format!("/admin/keys/{b}/toggle"),
            json!({"status": "disabled"}),
        )
        .await;
    admin.post_empty(&format!("/admin/keys/{a}/test")).await;
    let (s, _) = admin
        .put(
            "/admin/config",
            json!({"algorithm": "least-used", "failure_threshold": 9}),
        )
        .await;
    assert_eq!(s, 200);
    let key_a = admin.key(&a).await;
    let key_b = admin.key(&b).await;
    let (_, groups) = admin.get("/admin/pool-groups").await;
    let (_, history) = admin.get(&format!("/admin/keys/{b}/history")).await;

    let (data_dir, _home, _temp) = gw.stop().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .data_dir(&data_dir)
        .start()
        .await;
    let admin = admin.with_key(Some(ADMIN_KEY));
    let admin = Admin {
        base: gw.url(""),
        ..admin
    };
    assert_eq!(admin.key(&a).await, key_a);
    assert_eq!(admin.key(&b).await, key_b);
    let (_, v) = admin.get("/admin/pool-groups").await;
    assert_eq!(v, groups);
    let (_, v) = admin.get(&format!("/admin/keys/{b}/history")).await;
    assert_eq!(v, history);
    let (_, v) = admin.get("/admin/config").await;
    assert_eq!(data(&v)["key_pool"]["algorithm"], "least-used");
    assert_eq!(data(&v)["key_pool"]["failure_threshold"], 9);
    assert_eq!(pool(&gw).settings().algorithm, "least-used");

    // A reset survives too.
    admin.post_empty("/admin/config/reset").await;
    let (data_dir, _home, _temp2) = gw.stop().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .data_dir(&data_dir)
        .start()
        .await;
    let admin = Admin {
        base: gw.url(""),
        ..admin
    };
    let (_, v) = admin.get("/admin/config").await;
    assert_eq!(data(&v)["key_pool"]["algorithm"], "round-robin");
    assert_eq!(data(&v)["key_pool"]["failure_threshold"], 5);
    admin.assert_no_secrets();
}

#[tokio::test]
async fn a_new_key_serves_at_once() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let admin = Admin::new(&gw);
    // Nothing configured: no credential.
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 401);
    let id = admin.add(K1, None).await;
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(last_bearer(&mock), K1);
    // A replaced key value serves at once too.
    admin
        .put(&format!("/admin/keys/{id}"), json!({"key": K2}))
        .await;
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(last_bearer(&mock), K2);
    // Counters show on the record (flushed behind, in memory at once).
    let rec = admin.key(&id).await;
    assert_eq!(rec["requests"], 2);
    assert_eq!(rec["successes"], 2);
    assert!(is_rfc3339_utc(&rec["last_used_at"]));
    assert!(rec["input_tokens"].as_u64().unwrap() > 0);
    admin.assert_no_secrets();
}

#[tokio::test]
async fn keys_are_searched_by_id_or_notes_and_sorted() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let a = Admin::new(&gw);
    let (s, v) = a
        .post("/admin/keys", json!({"key": K1, "notes": "Alpha team"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let id1 = v["data"]["id"].as_str().unwrap().to_owned();
    // K1 alone serves two requests.
    for _ in 0..2 {
        let (s, _, b) = post(
            &gw.url("/v1/messages"),
            &anthropic_body("claude-opus-4-6"),
            &[],
        )
        .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    let (_, v) = a
        .post("/admin/keys", json!({"key": K2, "notes": "beta 团队"}))
        .await;
    let id2 = v["data"]["id"].as_str().unwrap().to_owned();
    let (_, v) = a.post("/admin/keys", json!({"key": K3})).await;
    let id3 = v["data"]["id"].as_str().unwrap().to_owned();
    let ids = |v: &Value| -> Vec<String> {
        v["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |query: &'static str| {
        let a = a.clone();
        async move {
            let (s, v) = a.get(&format!("/admin/keys?{query}")).await;
            assert_eq!(s, 200, "{query}: {v}");
            v
        }
    };
    // Search: notes or id, any case, any script; the total counts the matches.
    let v = list("q=ALPHA").await;
    assert_eq!(ids(&v), [id1.as_str()]);
    assert_eq!(v["data"]["pagination"]["total"], 1);
    let v = list("q=%E5%9B%A2%E9%98%9F").await;
    assert_eq!(ids(&v), [id2.as_str()]);
    let v = a
        .get(&format!("/admin/keys?q={}", id3.to_uppercase()))
        .await
        .1;
    assert_eq!(ids(&v), [id3.as_str()]);
    let v = list("q=no-such-thing").await;
    assert_eq!(ids(&v), Vec::<String>::new());
    // The secret itself is not searchable.
    let v = list("q=fk-admin-test-key-000001").await;
    assert_eq!(ids(&v), Vec::<String>::new());
    // Orders: creation (default ascending), requests (default descending), success rate
    // (keys without requests last either way).
    assert_eq!(ids(&list("").await), [id1.as_str(), &id2, &id3]);
    assert_eq!(
        ids(&list("sort=created&order=desc").await),
        [id3.as_str(), &id2, &id1]
    );
    assert_eq!(
        ids(&list("sort=requests").await),
        [id1.as_str(), &id2, &id3]
    );
    assert_eq!(
        ids(&list("sort=requests&order=asc").await),
        [id2.as_str(), &id3, &id1]
    );
    assert_eq!(
        ids(&list("sort=success_rate&order=asc").await),
        [id1.as_str(), &id2, &id3]
    );
    assert_eq!(ids(&list("sort=tokens&limit=1").await), [id1.as_str()]);
    // Bad parameters: 400 naming them.
    for (query, name) in [
        ("sort=bogus", "sort"),
        ("order=up", "order"),
        ("sort=requests&order=", "order"),
    ] {
        let (s, v) = a.get(&format!("/admin/keys?{query}")).await;
        if query.ends_with("order=") {
            // An empty value counts as absent.
            assert_eq!(s, 200, "{query}: {v}");
            continue;
        }
        assert_eq!(s, 400, "{query}: {v}");
        assert_eq!(v["error"]["code"], "bad_request");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(name),
            "{v}"
        );
    }
    let long = "x".repeat(201);
    let (s, v) = a.get(&format!("/admin/keys?q={long}")).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("q:"),
        "{v}"
    );
    // Still serving.
    assert_eq!(a.get("/admin/stats").await.0, 200);
}
