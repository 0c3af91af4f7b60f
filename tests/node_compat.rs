//! The Node.js droid2api's admin calls a script may still make (README "Coming from the Node
//! version"): `/admin/stats/*` from the usage rollups, `/admin/token/*` and
//! `/factory/balance/{all,check/:id}` from the synced balances, `/admin/logs/{history,stats,clear}`
//! from the log tail, and the Node names added to this gateway's replies. Every call needs the
//! admin key, no reply holds a whole key, and bad input is a 400 naming the parameter.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use droid2api::store::records::UsageRecord;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-node-compat-0123";
const K1: &str = "fk-node-compat-key-000001";
const K2: &str = "fk-node-compat-key-000002";

struct Ctx {
    _mock: MockUpstream,
    gw: Gateway,
    seen: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    async fn start() -> Ctx {
        let mock = MockUpstream::start().await;
        let gw = gateway(&mock)
            .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
            .env("TZ", "UTC")
            .start()
            .await;
        Ctx {
            _mock: mock,
            gw,
            seen: std::sync::Mutex::default(),
        }
    }

    async fn call(&self, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = client().request(method.parse().unwrap(), self.gw.url(path));
        if let Some(k) = key {
            req = req.header("x-admin-key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        self.seen.lock().unwrap().push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn admin(&self, method: &str, path: &str) -> (u16, Value) {
        self.call(method, path, Some(ADMIN_KEY)).await
    }

    /// A successful call's `data`.
    async fn data(&self, method: &str, path: &str) -> Value {
        let (s, v) = self.admin(method, path).await;
        assert_eq!(s, 200, "{method} {path}: {v}");
        assert_eq!(v["success"], true, "{v}");
        v["data"].clone()
    }

    /// A refused call: its status, code and message.
    async fn refused(&self, method: &str, path: &str, status: u16, code: &str) -> String {
        let (s, v) = self.admin(method, path).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }

    async fn add_key(&self, key: &str) -> String {
        let resp = client()
            .post(self.gw.url("/admin/keys"))
            .header("x-admin-key", ADMIN_KEY)
            .json(&json!({"key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let v: Value = resp.json().await.unwrap();
        v["data"]["id"].as_str().unwrap().to_string()
    }

    fn inject(&self, at: i64, credential: &str, model: &str, status: u16, t: [u64; 5]) {
        let app = &self.gw.running.as_ref().unwrap().app;
        app.recorder.record(UsageRecord {
            at,
            hour_start: 0,
            day_start: 0,
            credential: credential.into(),
            attempts: 1,
            client: "anonymous".into(),
            model: model.into(),
            route: "/v1/messages".into(),
            upstream_format: "anthropic".into(),
            status,
            input_tokens: t[0],
            cache_read_tokens: t[1],
            cache_write_tokens: t[2],
            output_tokens: t[3],
            reasoning_tokens: t[4],
            estimated: false,
            complete: true,
            latency_ms: 5,
            ttfb_ms: Some(3),
        });
    }

    /// Waits (≤ 5 s) until the summary counts `n` requests; returns it.
    async fn summary_with(&self, n: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.data("GET", "/admin/stats/summary").await;
            if v["total_requests"] == n {
                return v;
            }
            assert!(Instant::now() < deadline, "{n} requests expected: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_no_secret(&self) {
        for text in self.seen.lock().unwrap().iter() {
            for k in [K1, K2, ADMIN_KEY] {
                assert!(!text.contains(k), "a whole key in a reply: {text}");
            }
        }
    }

    async fn still_serves(&self) {
        let resp = client().get(self.gw.url("/health")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = self.data("GET", "/admin/stats").await;
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[tokio::test]
async fn node_statistics_come_from_the_usage_rollups() {
    let ctx = Ctx::start().await;
    let now = now_ms();
    let two_days_ago = now - 2 * 86_400_000;
    // [input, cache read, cache write, output, reasoning]
    ctx.inject(now, "key_a", "claude-a", 200, [10, 1000, 100, 7, 3]);
    ctx.inject(now, "key_a", "claude-a", 500, [0, 0, 0, 0, 0]);
    ctx.inject(now, "key_b", "gpt-b", 200, [20, 0, 0, 5, 0]);
    ctx.inject(two_days_ago, "key_b", "gpt-b", 200, [40, 0, 0, 10, 0]);

    let s = ctx.summary_with(4).await;
    // Tokens as the Node version counted them: input + output, cache apart.
    assert_eq!(s["total_tokens"], 10 + 7 + 20 + 5 + 40 + 10);
    assert_eq!(s["today_requests"], 3);
    assert_eq!(s["today_tokens"], 10 + 7 + 20 + 5);
    assert_eq!(s["today_input_tokens"], 30);
    assert_eq!(s["today_output_tokens"], 12);
    assert_eq!(s["today_thinking_tokens"], 3);
    assert_eq!(s["today_cache_creation_tokens"], 100);
    assert_eq!(s["today_cache_read_tokens"], 1000);
    assert!(s["last_updated"].as_str().unwrap().ends_with('Z'));
    let models = s["models"].as_array().unwrap();
    let a = models.iter().find(|m| m["name"] == "claude-a").unwrap();
    assert_eq!(
        (a["total_requests"].clone(), a["total_tokens"].clone()),
        (json!(2), json!(17))
    );
    let b = models.iter().find(|m| m["name"] == "gpt-b").unwrap();
    assert_eq!(
        (b["total_requests"].clone(), b["total_tokens"].clone()),
        (json!(2), json!(75))
    );

    let today = ctx.data("GET", "/admin/stats/today").await;
    assert_eq!(today["requests"], 3);
    assert_eq!(today["success_requests"], 2);
    assert_eq!(today["failed_requests"], 1);
    assert_eq!(today["tokens"], 42);
    assert_eq!(
        today["date"],
        jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date()
            .to_string()
    );

    // Seven days, oldest first, days without requests included.
    let trend = ctx.data("GET", "/admin/stats/trend").await;
    let days = trend.as_array().unwrap();
    assert_eq!(days.len(), 7);
    assert_eq!(days[6]["requests"], 3);
    assert_eq!(days[4]["requests"], 1);
    assert_eq!(days[4]["tokens"], 50);
    assert_eq!(days[5]["requests"], 0);
    let date: jiff::civil::Date = days[6]["date"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        days[6]["date_formatted"],
        format!("{}/{}", date.month(), date.day())
    );
    for w in days.windows(2) {
        assert!(w[0]["date"].as_str() < w[1]["date"].as_str(), "{trend}");
    }
    let trend = ctx.data("GET", "/admin/stats/trend?days=1").await;
    assert_eq!(trend.as_array().unwrap().len(), 1);

    let full = ctx.data("GET", "/admin/stats/full").await;
    assert_eq!(full["total"]["requests"], 4);
    assert_eq!(full["total"]["tokens"], 92);
    let daily = full["daily"].as_object().unwrap();
    assert_eq!(daily.len(), 2, "only days with requests: {full}");
    assert_eq!(full["by_model"]["gpt-b"]["total_requests"], 2);

    // Bad input: a 400 naming the parameter; reset is refused with what to use instead.
    for q in ["days=0", "days=367", "days=seven"] {
        let m = ctx
            .refused(
                "GET",
                &format!("/admin/stats/trend?{q}"),
                400,
                "bad_request",
            )
            .await;
        assert!(m.starts_with("days:"), "{m}");
    }
    let m = ctx
        .refused("POST", "/admin/stats/reset", 404, "not_found")
        .await;
    assert!(m.contains("/factory/balance/cleanup"), "{m}");
    // The Node routes were open; here they need the admin key.
    let (s, v) = ctx.call("GET", "/admin/stats/summary", None).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let (s, _) = ctx
        .call("GET", "/admin/stats/today", Some("wrong-key-0123456789"))
        .await;
    assert_eq!(s, 401);
    ctx.still_serves().await;
}

#[tokio::test]
async fn node_token_calls_answer_from_the_synced_balances() {
    let ctx = Ctx::start().await;
    let id1 = ctx.add_key(K1).await;
    let id2 = ctx.add_key(K2).await;

    // Before any sync: every key is listed, none synced.
    let u = ctx.data("GET", "/admin/token/usage").await;
    assert_eq!(u["from_cache"], true);
    assert_eq!(u["keys"][&id1]["success"], false);
    assert_eq!(u["keys"][&id1]["error"], "not_synced");
    assert_eq!(u["summary"]["total_keys"], 2);
    assert_eq!(u["summary"]["successful_keys"], 0);
    let st = ctx.data("GET", "/admin/token/stats").await;
    assert_eq!(st["cache_info"]["is_expired"], true);
    assert_eq!(st["last_full_sync"], Value::Null);

    // POST /admin/token/sync syncs every key and answers when done.
    let r = ctx.data("POST", "/admin/token/sync").await;
    assert_eq!(
        (
            r["total"].clone(),
            r["success"].clone(),
            r["failed"].clone()
        ),
        (json!(2), json!(2), json!(0)),
        "{r}"
    );
    assert_eq!(r["failed_keys"], json!([]));
    assert_eq!(r["summary"]["successful_keys"], 2);
    assert_eq!(r["summary"]["total_limit"], 40_000_000);

    let u = ctx.data("GET", "/admin/token/usage").await;
    let rec = &u["keys"][&id2];
    assert_eq!(rec["success"], true, "{u}");
    assert_eq!(rec["standard"]["totalAllowance"], 20_000_000);
    assert_eq!(rec["standard"]["remaining"], 20_000_000);
    assert_eq!(rec["key_masked"], "fk-nod…0002");
    assert!(rec.get("key").is_none(), "no whole key: {rec}");
    let st = ctx.data("GET", "/admin/token/stats").await;
    assert_eq!(st["cache_info"]["is_expired"], false);
    assert!(st["last_full_sync"].is_string());

    // One key: fresh balances come from memory; forceRefresh reads it again.
    let calls = || ctx._mock.requests_to("chat-usage").len();
    let before = calls();
    let one = ctx.data("GET", &format!("/admin/token/usage/{id1}")).await;
    assert_eq!(
        (one["success"].clone(), one["from_cache"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(calls(), before);
    let one = ctx
        .data(
            "GET",
            &format!("/admin/token/usage/{id1}?forceRefresh=true"),
        )
        .await;
    assert_eq!(one["from_cache"], false);
    assert_eq!(calls(), before + 1);

    let trend = ctx.data("GET", "/admin/token/trend").await;
    assert_eq!(trend["top_keys"].as_array().unwrap().len(), 2);
    assert_eq!(trend["top_keys"][0]["percentage"], 0.0);
    assert_eq!(trend["summary"]["total_keys"], 2);

    // The Node UI's balance calls.
    let all = ctx.data("GET", "/factory/balance/all").await;
    assert_eq!(all["keys"].as_array().unwrap().len(), 2);
    let before = calls();
    let all = ctx
        .data("GET", "/factory/balance/all?forceRefresh=true")
        .await;
    assert_eq!(all["keys"][0]["balance"]["allowance"], 20_000_000);
    assert_eq!(calls(), before + 2);
    let check = ctx
        .data("GET", &format!("/factory/balance/check/{id2}"))
        .await;
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["status"], "active");
    assert_eq!(check["balance"]["remaining"], 20_000_000);
    let check = ctx
        .data("POST", &format!("/factory/balance/check/{id1}"))
        .await;
    assert_eq!(check["id"], id1.as_str());

    // Bad input and unknown keys.
    for path in [
        "/admin/token/usage/key_nope".to_string(),
        "/factory/balance/check/key_nope".to_string(),
    ] {
        let m = ctx.refused("GET", &path, 404, "not_found").await;
        assert!(m.contains("key_nope"), "{m}");
    }
    let m = ctx
        .refused(
            "GET",
            "/admin/token/usage?forceRefresh=yes",
            400,
            "bad_request",
        )
        .await;
    assert!(m.starts_with("forceRefresh:"), "{m}");
    let m = ctx
        .refused("DELETE", "/admin/token/cache", 404, "not_found")
        .await;
    assert!(m.contains("/factory/balance/sync"), "{m}");
    let (s, _) = ctx.call("GET", "/admin/token/usage", None).await;
    assert_eq!(s, 401);
    ctx.still_serves().await;
    ctx.assert_no_secret();
}

#[tokio::test]
async fn node_log_calls_read_the_kept_lines() {
    let ctx = Ctx::start().await;
    // A pool key that (by mistake) reached a log line is masked on the way out.
    ctx.add_key(K1).await;
    // The log tail is the process's: this test writes its own lines into it.
    let tail = droid2api::telemetry::tail::tail();
    let (s, _) = ctx.admin("DELETE", "/admin/logs/clear").await;
    assert_eq!(s, 200);
    let marker = "node-compat-marker";
    tail.publish(
        format!(
            "2026-12-07T01:00:00.000001Z  INFO {marker} one\n\
             2026-12-07T01:00:01.000001Z  WARN {marker} two {K1}\n\
             2026-12-07T01:00:02.000001Z ERROR {marker} three\n\
             2026-12-07T01:00:03.000001Z DEBUG {marker} four\n"
        )
        .as_bytes(),
    );
    let h = ctx
        .data("GET", &format!("/admin/logs/history?keyword={marker}"))
        .await;
    assert_eq!(h["count"], 4, "{h}");
    let logs = h["logs"].as_array().unwrap();
    assert_eq!(logs[0]["level"], "info");
    assert_eq!(logs[0]["timestamp"], "2026-12-07T01:00:00.000001Z");
    assert_eq!(logs[0]["message"], format!("{marker} one"));
    assert_eq!(logs[3]["level"], "debug");
    assert_eq!(logs[1]["message"], format!("{marker} two fk-nod…0001"));
    let h = ctx
        .data(
            "GET",
            &format!(
                "/admin/logs/history?keyword={}&level=warn,ERROR",
                marker.to_uppercase()
            ),
        )
        .await;
    let levels: Vec<&str> = h["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["warn", "error"]);
    // The newest `limit`, oldest first; a limit above what is kept is what is kept.
    let h = ctx
        .data(
            "GET",
            &format!("/admin/logs/history?keyword={marker}&limit=2"),
        )
        .await;
    assert_eq!(h["logs"][0]["message"], format!("{marker} three"));
    assert_eq!(h["logs"][1]["message"], format!("{marker} four"));
    let h = ctx
        .data(
            "GET",
            &format!("/admin/logs/history?keyword={marker}&limit=100000"),
        )
        .await;
    assert_eq!(h["count"], 4);

    let stats = ctx.data("GET", "/admin/logs/stats").await;
    assert!(stats["total"].as_u64().unwrap() >= 4, "{stats}");
    assert!(stats["byLevel"]["warn"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["byLevel"]["error"].as_u64().unwrap() >= 1, "{stats}");

    for (q, name) in [
        ("limit=0", "limit:"),
        ("limit=x", "limit:"),
        ("level=loud", "level:"),
    ] {
        let m = ctx
            .refused(
                "GET",
                &format!("/admin/logs/history?{q}"),
                400,
                "bad_request",
            )
            .await;
        assert!(m.starts_with(name), "{m}");
    }

    let c = ctx.data("DELETE", "/admin/logs/clear").await;
    assert!(c["cleared"].as_u64().unwrap() >= 4, "{c}");
    let h = ctx
        .data("GET", &format!("/admin/logs/history?keyword={marker}"))
        .await;
    assert_eq!(h["count"], 0, "{h}");
    let (s, _) = ctx.call("DELETE", "/admin/logs/clear", None).await;
    assert_eq!(s, 401);
    ctx.still_serves().await;
    ctx.assert_no_secret();
}

#[tokio::test]
async fn replies_carry_the_node_names_too() {
    let ctx = Ctx::start().await;
    let resp = client()
        .post(ctx.gw.url("/admin/keys/batch"))
        .header("x-admin-key", ADMIN_KEY)
        .json(&json!({"keys": [K1, K1, ""]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"]["added"], 1, "{v}");
    assert_eq!(v["data"]["success"], 1, "{v}");
    assert_eq!(v["data"]["duplicate"], 1, "{v}");
    let id = v["data"]["ids"][0].as_str().unwrap().to_string();

    // The mock answers the test with 200.
    let t = ctx.data("POST", &format!("/admin/keys/{id}/test")).await;
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["success"], true, "{t}");
    assert_eq!(t["key_status"], "active", "{t}");

    let resp = client()
        .post(ctx.gw.url("/admin/pool-groups"))
        .header("x-admin-key", ADMIN_KEY)
        .json(&json!({"id": "g1", "name": "G1", "priority": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = client()
        .patch(ctx.gw.url(&format!("/admin/keys/{id}/pool")))
        .header("x-admin-key", ADMIN_KEY)
        .json(&json!({"poolGroup": "g1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let d = ctx.data("DELETE", "/admin/pool-groups/g1").await;
    assert_eq!(d["moved_keys"], 1, "{d}");
    assert_eq!(d["affected_keys"], 1, "{d}");
    ctx.still_serves().await;
    ctx.assert_no_secret();
}

#[tokio::test]
async fn node_config_objects_are_refused_with_what_replaces_them() {
    let ctx = Ctx::start().await;
    for (body, field, hint) in [
        (json!({"retry": {"maxRetries": 3}}), "retry", "max_attempts"),
        (
            json!({"autoBan": {"enabled": true}}),
            "autoBan",
            "failure_threshold",
        ),
        (
            json!({"performance": {"concurrentLimit": 8}}),
            "performance",
            "test_concurrency",
        ),
        (
            json!({"multiTier": {"enabled": true}}),
            "multiTier",
            "auto_fallback",
        ),
        (
            json!({"algorithm": "random", "retry": {}}),
            "retry",
            "max_attempts",
        ),
    ] {
        let resp = client()
            .put(ctx.gw.url("/admin/config"))
            .header("x-admin-key", ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.starts_with(&format!("{field}: a setting of the Node.js droid2api")),
            "{m}"
        );
        assert!(m.contains(hint), "{m}");
    }
    // Nothing changed.
    let c = ctx.data("GET", "/admin/config").await;
    assert_eq!(c["key_pool"]["algorithm"], "round-robin");
    ctx.still_serves().await;
}
