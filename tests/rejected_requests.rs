//! Requests rejected before authentication are not usage records (contract §9): they are
//! counted in `droid2api_rejected_total{reason}` and in an hourly count that `GET /admin/usage`
//! shows as `rejected` (per point and in total, with the reasons).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const FACTORY_KEY: &str = "fk-rejected-requests-000111";
const ADMIN_KEY: &str = "admin-key-rejected-requests-0123";
const ACCESS_KEY: &str = "client-access-key-rejected-0123";

async fn admin(gw: &Gateway, path: &str) -> Value {
    let r = client()
        .get(gw.url(path))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json::<Value>().await.unwrap()["data"].clone()
}

async fn metrics(gw: &Gateway) -> String {
    client()
        .get(gw.url("/metrics"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_keys_are_counted_as_rejected_not_as_usage() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("API_ACCESS_KEY", ACCESS_KEY)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .config(models_config("auto"))
        .start()
        .await;
    // Two bad client keys, one missing, one bad admin key, one non-JSON body.
    for h in [
        vec![("authorization", "Bearer wrong-one")],
        vec![("x-api-key", "wrong-two")],
        vec![],
    ] {
        let (s, _, _) = post(&gw.url("/v1/messages"), &anthropic_body("claude-test"), &h).await;
        assert_eq!(s, 401);
    }
    let r = client()
        .get(gw.url("/admin/stats"))
        .header("x-admin-key", "not-the-admin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {ACCESS_KEY}"))
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&chat_body("glm-test")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // One served request.
    let auth = format!("Bearer {ACCESS_KEY}");
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-test"),
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(s, 200);

    let text = metrics(&gw).await;
    for (reason, n) in [
        ("bad_client_key", 3),
        ("bad_admin_key", 1),
        ("unsupported_media_type", 1),
    ] {
        let line = format!("droid2api_rejected_total{{reason=\"{reason}\"}} ");
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} missing in\n{text}"));
        // The recorder is process-wide: other tests of this binary may add to it.
        assert!(got.trim().parse::<u64>().unwrap() >= n, "{line}{got}");
    }

    // The hourly counts reach the store within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let usage = loop {
        let usage = admin(&gw, "/admin/usage?granularity=hour").await;
        if usage["rejected"] == 5 {
            break usage;
        }
        assert!(
            Instant::now() < deadline,
            "rejected counts never reached /admin/usage: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(usage["rejected_by_reason"]["bad_client_key"], 3, "{usage}");
    assert_eq!(usage["rejected_by_reason"]["bad_admin_key"], 1, "{usage}");
    assert_eq!(
        usage["rejected_by_reason"]["unsupported_media_type"], 1,
        "{usage}"
    );
    let points = usage["points"].as_array().unwrap();
    let rejected: u64 = points.iter().map(|p| p["rejected"].as_u64().unwrap()).sum();
    assert_eq!(rejected, 5, "{usage}");
    let requests: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(
        requests, 1,
        "only the served request is a usage record: {usage}"
    );
    let day = admin(&gw, "/admin/usage?granularity=day").await;
    assert_eq!(day["rejected"], 5, "{day}");
    let per_day: u64 = day["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rejected"].as_u64().unwrap())
        .sum();
    assert_eq!(per_day, 5, "{day}");
    // Rejected requests have no key or model.
    let by_model = admin(&gw, "/admin/usage?granularity=hour&model=claude-test").await;
    assert_eq!(by_model["rejected"], 0, "{by_model}");
    let summary = admin(&gw, "/factory/balance/summary").await;
    assert_eq!(summary["requests"], 1, "{summary}");

    // Kept across a restart.
    let (data, home, _temp) = gw.stop().await;
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .data_dir(&data)
        .home_dir(&home)
        .start()
        .await;
    let usage = admin(&gw, "/admin/usage?granularity=hour").await;
    assert_eq!(usage["rejected"], 5, "{usage}");
}
