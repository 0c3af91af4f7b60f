//! The store's write-behind under a stalled writer, through the real gateway: another connection
//! holds the database's write lock (a real stall: the writer's transactions wait on SQLite's busy
//! timeout), and meanwhile the gateway keeps serving requests, the traffic queue stays within
//! its capacity and counts what it drops, admin writes answer 503 after the acknowledgement
//! timeout (5 s) instead of hanging, admin reads answer at once; once the lock goes, usage and
//! admin writes resume, and what was applied in memory reaches the database. A key banned by
//! traffic and then deleted by an admin while the writer was stalled stays deleted.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::store::{eventually, hold_write_lock, query_i64, usage_rows};
use common::*;
use droid2api::app::App;
use droid2api::store::records::{StoreOp, UsageRecord};
use droid2api_mock::anthropic;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-write-behind-0123456789";
const POOL_KEY: &str = "fk-write-behind-pool-key-000000001";
const ANTHROPIC_UP: &str = "/a/v1/messages";

/// Waits until `read` gives the same value for a second, and returns it (at most 30 s).
async fn eventually_stable(mut read: impl FnMut() -> i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = read();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = read();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "still changing after 30 s: {now}"
        );
    }
}

fn app(gw: &Gateway) -> &App {
    &gw.running.as_ref().unwrap().app
}

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

async fn message(gw: &Gateway) -> u16 {
    let (status, _, _) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &[]).await;
    status
}

async fn start(mock: &MockUpstream, data: Option<&std::path::Path>) -> Gateway {
    let mut b = gateway(mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(models_config("off"));
    if let Some(d) = data {
        b = b.data_dir(d);
    }
    b.start().await
}

fn answer_with_usage(mock: &MockUpstream) {
    let mut m = anthropic::message_json(
        "msg_wb",
        "claude-test",
        vec![json!({"type": "text", "text": "Hi"})],
        "end_turn",
        0,
        0,
    );
    m["usage"] = json!({"input_tokens": 11, "output_tokens": 7});
    mock.push_rule(Rule::new(Reply::json(200, m)).path(ANTHROPIC_UP));
}

/// A usage record as the gateway would write it.
fn record() -> UsageRecord {
    let now = jiff::Timestamp::now().as_millisecond();
    UsageRecord {
        at: now,
        hour_start: now,
        day_start: now,
        credential: "-".into(),
        attempts: 0,
        client: "anonymous".into(),
        model: "-".into(),
        route: "/v1/messages".into(),
        upstream_format: "-".into(),
        status: 200,
        input_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        output_tokens: 0,
        reasoning_tokens: 0,
        estimated: false,
        complete: true,
        latency_ms: 1,
        ttfb_ms: None,
    }
}

/// Stalls the writer: once everything pending is written, another connection takes the write
/// lock and the writer is handed one record, which it takes and gets stuck with; what follows
/// waits in the queue.
async fn stall(gw: &Gateway) -> common::store::WriteLock {
    let app = app(gw);
    app.pool.flush_counters();
    app.store.flush().await.unwrap();
    let lock = hold_write_lock(&gw.data_dir);
    app.store.submit(vec![StoreOp::AddUsage(vec![record()])]);
    eventually("the writer takes the record", || {
        app.store.queue_stats().queued == 0
    })
    .await;
    lock
}

#[tokio::test]
async fn a_stalled_writer_bounds_the_queue_admin_writes_get_503_and_everything_resumes() {
    let mock = MockUpstream::start().await;
    answer_with_usage(&mock);
    let gw = start(&mock, None).await;
    let (s, v) = admin(&gw, "POST", "/admin/keys", Some(json!({"key": POOL_KEY}))).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(message(&gw).await, 200);
    eventually("the first usage record", || usage_rows(&gw.data_dir) == 1).await;

    // The queue holds 20 at most here.
    let store = app(&gw).store.clone();
    store.set_traffic_capacity(20);
    let lock = stall(&gw).await;

    // The gateway keeps serving; the traffic queue never holds more than its capacity.
    let sent: u64 = 60;
    for _ in 0..sent {
        assert_eq!(message(&gw).await, 200);
        let q = store.queue_stats();
        assert!(q.queued <= q.capacity, "{q:?}");
    }
    // 20 wait, the rest was dropped and counted.
    let q = store.queue_stats();
    assert_eq!((q.capacity, q.queued, q.peak), (20, 20, 20), "{q:?}");
    assert_eq!(q.dropped, sent - 20, "{q:?}");
    let resp = client()
        .get(gw.url("/metrics"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let metrics = resp.text().await.unwrap();
    assert!(
        metrics.contains("droid2api_store_dropped_total{kind=\"usage\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("droid2api_usage_dropped_total"),
        "{metrics}"
    );

    // Admin reads answer at once; an admin write answers 503 after the 5 s timeout.
    let started = Instant::now();
    let (s, v) = admin(&gw, "GET", "/admin/stats", None).await;
    assert_eq!((s, v["data"]["total"].as_u64()), (200, Some(1)), "{v}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let started = Instant::now();
    let (s, v) = admin(
        &gw,
        "POST",
        "/admin/keys",
        Some(json!({"key": "fk-added-while-stalled-0000000002"})),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["error"]["code"], json!("store_unavailable"), "{v}");
    let message_text = v["error"]["message"].as_str().unwrap();
    assert!(
        message_text.contains("did not confirm the write within 5 s")
            && message_text.contains("not acknowledged"),
        "{message_text}"
    );
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
    assert!(waited < Duration::from_secs(25), "{waited:?}");
    assert_eq!(message(&gw).await, 200, "still serving after the 503");

    // The lock goes: the writer catches up.
    drop(lock);
    let dropped = store.queue_stats().dropped;
    assert_eq!(dropped, sent + 1 - 20);
    // The first record, the one the writer held, the 20 that waited.
    let expected = 1 + 1 + 20;
    let landed = eventually_stable(|| usage_rows(&gw.data_dir)).await;
    assert_eq!(landed, expected, "{:?}", store.queue_stats());
    // Usage resumes, admin writes are acknowledged again.
    assert_eq!(message(&gw).await, 200);
    eventually("a new usage record", || {
        usage_rows(&gw.data_dir) == expected + 1
    })
    .await;
    let (s, v) = admin(
        &gw,
        "POST",
        "/admin/keys",
        Some(json!({"key": "fk-added-after-the-stall-000000003"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // The key whose write timed out was applied in memory and saved once the writer got
    // through: it survives a restart.
    assert_eq!(
        query_i64(&gw.data_dir, "SELECT count(*) FROM keys"),
        3,
        "every key is stored"
    );
    let (data, _home, temp) = gw.stop().await;
    let gw = start(&mock, Some(&data)).await;
    let (s, v) = admin(&gw, "GET", "/admin/stats", None).await;
    assert_eq!((s, v["data"]["total"].as_u64()), (200, Some(3)), "{v}");
    gw.stop().await;
    drop(temp);
}

#[tokio::test]
async fn a_key_banned_by_traffic_then_deleted_while_the_writer_is_stalled_stays_deleted() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock, None).await;
    let (s, v) = admin(&gw, "POST", "/admin/keys", Some(json!({"key": POOL_KEY}))).await;
    assert_eq!(s, 201, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    eventually("the key is stored", || {
        query_i64(&gw.data_dir, "SELECT count(*) FROM keys") == 1
    })
    .await;

    let lock = stall(&gw).await;
    // Traffic bans the key (402 from Factory): the state change is queued behind the lock.
    mock.set_bearer_status(
        POOL_KEY,
        402,
        json!({"error": {"type": "payment_required", "message": "out of tokens"}}),
    );
    assert_ne!(message(&gw).await, 200);
    let (s, v) = admin(&gw, "GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(
        (s, v["data"]["status"].as_str()),
        (200, Some("banned")),
        "{v}"
    );
    // The admin deletes it: applied in memory, not confirmed while stalled.
    let (s, v) = admin(&gw, "DELETE", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(s, 503, "{v}");
    let (s, _) = admin(&gw, "GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(s, 404, "gone from memory");

    drop(lock);
    // The banned state queued before the delete does not bring the key back.
    eventually("the deletion lands", || {
        query_i64(&gw.data_dir, "SELECT count(*) FROM keys") == 0
    })
    .await;
    let (data, _home, temp) = gw.stop().await;
    assert_eq!(query_i64(&data, "SELECT count(*) FROM keys"), 0);
    let gw = start(&mock, Some(&data)).await;
    let (s, v) = admin(&gw, "GET", "/admin/stats", None).await;
    assert_eq!((s, v["data"]["total"].as_u64()), (200, Some(0)), "{v}");
    // Its history: added, deleted (the ban event came after the deletion and was not kept).
    let (s, v) = admin(&gw, "GET", &format!("/admin/keys/{id}/history"), None).await;
    assert_eq!(s, 200, "{v}");
    let tos: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, ["deleted", "active"], "{v}");
    gw.stop().await;
    drop(temp);
}
