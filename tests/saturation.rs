//! Token arithmetic saturates everywhere, through the real gateway: absurd usage from the
//! upstream (`u64::MAX`, `1e30`, negative, fractional) is clamped per request (10^12 per field),
//! sums near the top of the integer range saturate at `i64::MAX` instead of wrapping or turning
//! into REALs, the store opens again after a restart, and a database already holding REALs in
//! integer columns (what the old overflowing `+` left) is repaired on start.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::store::{eventually, query_i64, usage_rows};
use common::*;
use droid2api_mock::anthropic;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-saturation-0123456789";
const POOL_KEY: &str = "fk-saturation-pool-key-0000000001";
const ANTHROPIC_UP: &str = "/a/v1/messages";
const RESPONSES_UP: &str = "/o/v1/responses";
const MAX_TOKENS: u64 = 1_000_000_000_000;
const I64_MAX: u64 = i64::MAX as u64;

async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), gw.url(path))
        .header("x-admin-key", ADMIN_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (status, json(&bytes))
}

async fn start(mock: &MockUpstream, data: Option<&Path>) -> Gateway {
    let mut b = gateway(mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(models_config("off"));
    if let Some(d) = data {
        b = b.data_dir(d);
    }
    b.start().await
}

/// The upstream reports absurd usage on both routes.
fn absurd_upstream(mock: &MockUpstream) {
    let mut m = anthropic::message_json(
        "msg_sat",
        "claude-test",
        vec![json!({"type": "text", "text": "Hi"})],
        "end_turn",
        0,
        0,
    );
    m["usage"] = json!({
        "input_tokens": u64::MAX,
        "cache_read_input_tokens": 1e30,
        "cache_creation_input_tokens": -5,
        "output_tokens": 2.5e12
    });
    mock.push_rule(Rule::new(Reply::json(200, m)).path(ANTHROPIC_UP));
    let r = json!({
        "id": "resp_sat", "object": "response", "created_at": 1_790_000_000,
        "model": "gpt-test", "status": "completed",
        "output": [{"type": "message", "id": "msg_r1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi", "annotations": []}]}],
        "usage": {"input_tokens": 1e300, "output_tokens": 18446744073709551615u64,
                  "input_tokens_details": {"cached_tokens": -1},
                  "output_tokens_details": {"reasoning_tokens": 12.75}},
    });
    mock.push_rule(Rule::new(Reply::json(200, r)).path(RESPONSES_UP));
}

async fn absurd_requests(gw: &Gateway) {
    let (s, _, b) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = post(&gw.url("/v1/responses"), &responses_body("gpt-test"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
}

/// `/factory/balance/summary`'s all-time token object.
async fn summary_tokens(gw: &Gateway) -> Value {
    let (s, v) = admin(gw, "GET", "/factory/balance/summary", None).await;
    assert_eq!(s, 200, "{v}");
    v["data"]["tokens"].clone()
}

/// The distinct storage classes of every integer column that sums touch.
fn column_types(data: &Path) -> Vec<String> {
    let conn = common::store::read_only(data);
    let mut out = Vec::new();
    for (table, columns) in [
        (
            "keys",
            "requests, successes, failures, input_tokens, output_tokens",
        ),
        (
            "usage_rollups",
            "requests, successes, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens",
        ),
    ] {
        for column in columns.split(", ") {
            let mut st = conn
                .prepare(&format!("SELECT DISTINCT typeof({column}) FROM {table}"))
                .unwrap();
            let types: Vec<String> = st
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            out.extend(types.into_iter().map(|t| format!("{table}.{column}:{t}")));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn absurd_upstream_usage_is_clamped_and_totals_saturate_across_restarts() {
    let mock = MockUpstream::start().await;
    absurd_upstream(&mock);
    let gw = start(&mock, None).await;
    let (s, v) = admin(&gw, "POST", "/admin/keys", Some(json!({"key": POOL_KEY}))).await;
    assert_eq!(s, 201, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    absurd_requests(&gw).await;
    eventually("two usage records", || usage_rows(&gw.data_dir) == 2).await;

    // Each field of each request is clamped to 10^12; negative counts are no counts.
    let t = summary_tokens(&gw).await;
    assert_eq!(t["input_tokens"], json!(2 * MAX_TOKENS), "{t}");
    assert_eq!(t["cache_read_tokens"], json!(MAX_TOKENS), "{t}");
    assert_eq!(t["cache_write_tokens"], json!(0), "{t}");
    assert_eq!(t["output_tokens"], json!(2 * MAX_TOKENS), "{t}");
    assert_eq!(t["reasoning_tokens"], json!(12), "{t}");
    let (s, v) = admin(&gw, "GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["input_tokens"], json!(3 * MAX_TOKENS), "{v}");
    assert_eq!(v["data"]["output_tokens"], json!(2 * MAX_TOKENS), "{v}");

    // Bring the stored sums to the edge of the integer range, as years of absurd usage would.
    let (data, _home, temp) = gw.stop().await;
    {
        let conn = rusqlite::Connection::open(common::store::db_path(&data)).unwrap();
        conn.execute_batch(&format!(
            "UPDATE usage_rollups SET input_tokens = {edge}, output_tokens = {edge};
             UPDATE keys SET input_tokens = {edge}, output_tokens = {edge}, requests = {near};",
            edge = i64::MAX - 1_000,
            near = i64::MAX - 1
        ))
        .unwrap();
    }
    let gw = start(&mock, Some(&data)).await;
    absurd_requests(&gw).await;
    eventually("four usage records", || usage_rows(&gw.data_dir) == 4).await;
    let t = summary_tokens(&gw).await;
    assert_eq!(
        t["input_tokens"],
        json!(I64_MAX),
        "saturated, not wrapped: {t}"
    );
    assert_eq!(t["output_tokens"], json!(I64_MAX), "{t}");
    assert_eq!(t["total_tokens"], json!(u64::MAX), "{t}");
    let (data, _home, temp2) = gw.stop().await;
    drop(temp2);
    assert_eq!(
        query_i64(
            &data,
            &format!("SELECT input_tokens FROM keys WHERE id = '{id}'")
        ),
        i64::MAX
    );
    assert!(
        column_types(&data).iter().all(|t| t.ends_with(":integer")),
        "{:?}",
        column_types(&data)
    );

    // The store opens again, with the saturated totals.
    let gw = start(&mock, Some(&data)).await;
    let t = summary_tokens(&gw).await;
    assert_eq!(t["input_tokens"], json!(I64_MAX), "{t}");
    let (s, v) = admin(&gw, "GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["input_tokens"], json!(I64_MAX), "{v}");
    assert_eq!(v["data"]["requests"], json!(I64_MAX), "{v}");
    // And it still serves and counts.
    absurd_requests(&gw).await;
    eventually("six usage records", || usage_rows(&gw.data_dir) == 6).await;
    gw.stop().await;
    drop(temp);
}

#[tokio::test]
async fn a_database_with_real_values_in_integer_columns_is_repaired_and_opens() {
    let mock = MockUpstream::start().await;
    absurd_upstream(&mock);
    let gw = start(&mock, None).await;
    let (s, v) = admin(&gw, "POST", "/admin/keys", Some(json!({"key": POOL_KEY}))).await;
    assert_eq!(s, 201, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    absurd_requests(&gw).await;
    eventually("two usage records", || usage_rows(&gw.data_dir) == 2).await;
    let (data, _home, temp) = gw.stop().await;

    // What an overflowing `a + b` left before sums saturated, in a database from before the
    // repair step.
    {
        let conn = rusqlite::Connection::open(common::store::db_path(&data)).unwrap();
        conn.execute_batch(&format!(
            "UPDATE keys SET input_tokens = 1.8e19, requests = 41.0, failures = -2.0;
             UPDATE usage_rollups SET output_tokens = 9.5e18, requests = 2.0;
             PRAGMA user_version = {};",
            droid2api::store::sqlite::repair_version() - 1
        ))
        .unwrap();
    }
    assert!(column_types(&data).iter().any(|t| t.ends_with(":real")));

    let gw = start(&mock, Some(&data)).await;
    let (s, v) = admin(&gw, "GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["input_tokens"], json!(I64_MAX), "{v}");
    assert_eq!(v["data"]["requests"], json!(41), "{v}");
    assert_eq!(v["data"]["failures"], json!(0), "{v}");
    let t = summary_tokens(&gw).await;
    assert_eq!(t["output_tokens"], json!(I64_MAX), "{t}");
    // Still serving and counting on top of the repaired values.
    absurd_requests(&gw).await;
    eventually("four usage records", || usage_rows(&gw.data_dir) == 4).await;
    let (data, _home, temp2) = gw.stop().await;
    drop(temp2);
    assert!(
        column_types(&data).iter().all(|t| t.ends_with(":integer")),
        "{:?}",
        column_types(&data)
    );
    drop(temp);
}
