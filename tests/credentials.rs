//! The credential cascade (contract §5): each level, their priority, and the WorkOS refresh
//! lifecycle (rotation persisted before use, surviving a restart, background refresh, refresh
//! after a 401, single flight, fallback to the last token).

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const FACTORY_KEY: &str = "fk-env-level1-key-0001";

async fn call(gw: &Gateway, auth: Option<&str>) -> (u16, Value) {
    let mut headers = vec![];
    let bearer;
    if let Some(a) = auth {
        bearer = format!("Bearer {a}");
        headers.push(("authorization", bearer.as_str()));
    }
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &headers,
    )
    .await;
    (s, json(&b))
}

fn write_json(path: &std::path::Path, v: Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn level_one_env_key_wins_over_everything() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-unused-seed");
    let home = tempfile::tempdir().unwrap();
    write_json(
        &home.path().join(".factory/auth.json"),
        json!({"access_token": "at-cli-static", "refresh_token": "rt-cli"}),
    );
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", FACTORY_KEY)
        .env("DROID_REFRESH_KEY", "rt-unused-seed")
        .home_dir(home.path())
        .start()
        .await;
    let (s, _) = call(&gw, Some("fk-client-own-key-01")).await;
    assert_eq!(s, 200);
    assert_eq!(last_bearer(&mock), FACTORY_KEY);
    // A refresh token that cannot serve is not spent in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.refresh_count(), 0);
}

#[tokio::test]
async fn level_three_env_refresh_token_rotates_and_persists_before_use() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-seed-env");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-seed-env")
        .start()
        .await;
    let (s, _) = call(&gw, Some("fk-client-own-key-01")).await;
    assert_eq!(s, 200);
    assert_eq!(
        mock.refresh_count(),
        1,
        "one exchange (background or on the path), single-flight"
    );
    let minted = mock.minted_access_tokens();
    assert_eq!(last_bearer(&mock), minted[0]);
    // The rotated refresh token is on disk, private, with the seed's hash (never the seed).
    let path = gw.data_dir.join("auth.json");
    let stored = read_json(&path);
    let rotated = mock.refresh_tokens();
    assert_eq!(rotated.len(), 1);
    assert_eq!(stored["refresh_token"], rotated[0].as_str());
    assert_eq!(stored["access_token"], minted[0].as_str());
    assert!(stored["seed_sha256"].as_str().unwrap().len() == 64);
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains("rt-seed-env")
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let req = mock.requests_to("/user_management/authenticate");
    assert_eq!(
        req[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn rotation_survives_a_restart_with_the_same_seed() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-seed-restart");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-seed-restart")
        .start()
        .await;
    assert_eq!(call(&gw, None).await.0, 200);
    let first_token = last_bearer(&mock);
    let (data, home, _keep) = gw.stop().await;

    // Same seed (already spent at WorkOS): the stored rotated token is used, no new exchange
    // is needed while the access token is fresh.
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-seed-restart")
        .data_dir(&data)
        .home_dir(&home)
        .start()
        .await;
    assert_eq!(call(&gw, None).await.0, 200);
    assert_eq!(last_bearer(&mock), first_token);
    assert_eq!(mock.refresh_count(), 1);

    // The access token expires: the 401 triggers one exchange with the stored rotated token and
    // the request is retried once, transparently.
    mock.expire_all_access_tokens();
    let (s, body) = call(&gw, None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(mock.refresh_count(), 2);
    let second = last_bearer(&mock);
    assert_ne!(second, first_token);
    let (data, home, _keep2) = gw.stop().await;

    // A different seed means the user replaced it: the new seed is used.
    mock.add_refresh_token("rt-new-seed");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-new-seed")
        .data_dir(&data)
        .home_dir(&home)
        .start()
        .await;
    assert_eq!(call(&gw, None).await.0, 200);
    assert_eq!(mock.refresh_count(), 3);
    let wo = mock.requests_to("/user_management/authenticate");
    assert!(String::from_utf8_lossy(&wo[2].body).contains("refresh_token=rt-new-seed"));
}

#[tokio::test]
async fn level_three_from_data_auth_json_and_from_the_factory_cli_file() {
    // data/auth.json written by the user.
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-data-file");
    let data = tempfile::tempdir().unwrap();
    write_json(
        &data.path().join("auth.json"),
        json!({"refresh_token": "rt-data-file"}),
    );
    let gw = gateway(&mock).data_dir(data.path()).start().await;
    assert_eq!(call(&gw, Some("fk-client-key-000")).await.0, 200);
    assert_eq!(last_bearer(&mock), mock.minted_access_tokens()[0]);
    assert_eq!(
        read_json(&data.path().join("auth.json"))["refresh_token"],
        mock.refresh_tokens()[0].as_str()
    );
    drop(gw);

    // ~/.factory/auth.json: used, never rewritten; rotated tokens go to data/auth.json.
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-cli-file");
    let home = tempfile::tempdir().unwrap();
    let cli = home.path().join(".factory/auth.json");
    write_json(
        &cli,
        json!({"access_token": "at-cli-initial", "refresh_token": "rt-cli-file", "other": "kept"}),
    );
    let before = std::fs::read(&cli).unwrap();
    let gw = gateway(&mock).home_dir(home.path()).start().await;
    assert_eq!(call(&gw, None).await.0, 200);
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.refresh_count() >= 1)
            .await
    );
    let stored_path = gw.data_dir.join("auth.json");
    for _ in 0..100 {
        if stored_path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read(&cli).unwrap(),
        before,
        "the Factory CLI's file is never rewritten"
    );
    let stored = read_json(&stored_path);
    assert_eq!(stored["refresh_token"], mock.refresh_tokens()[0].as_str());
}

#[tokio::test]
async fn level_four_static_tokens() {
    let mock = MockUpstream::start().await;
    let data = tempfile::tempdir().unwrap();
    write_json(
        &data.path().join("auth.json"),
        json!({"api_key": "fk-static-data-file-01"}),
    );
    let home = tempfile::tempdir().unwrap();
    write_json(
        &home.path().join(".factory/auth.json"),
        json!({"access_token": "at-cli-static-02"}),
    );
    let gw = gateway(&mock)
        .data_dir(data.path())
        .home_dir(home.path())
        .start()
        .await;
    assert_eq!(call(&gw, Some("fk-client-key-000")).await.0, 200);
    assert_eq!(
        last_bearer(&mock),
        "fk-static-data-file-01",
        "data/auth.json before ~/.factory"
    );
    drop(gw);

    let gw = gateway(&mock).home_dir(home.path()).start().await;
    assert_eq!(call(&gw, Some("fk-client-key-000")).await.0, 200);
    assert_eq!(last_bearer(&mock), "at-cli-static-02");
    assert_eq!(mock.refresh_count(), 0);
}

#[tokio::test]
async fn level_five_client_credentials_only_when_nothing_is_configured() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    assert_eq!(call(&gw, Some("fk-client-pass-through")).await.0, 200);
    assert_eq!(last_bearer(&mock), "fk-client-pass-through");
    // x-api-key works too (the Anthropic SDK's header).
    let (s, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[("x-api-key", "fk-client-x-api-key")],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(last_bearer(&mock), "fk-client-x-api-key");
    // Nothing at all: 401 that explains how to configure a credential.
    let (s, v) = call(&gw, None).await;
    assert_eq!(s, 401);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("FACTORY_API_KEY") && msg.contains("DROID_REFRESH_KEY"),
        "{msg}"
    );
    drop(gw);

    // With API_ACCESS_KEY set, the client's Authorization is the access key: never passed on.
    let gw = gateway(&mock)
        .env("API_ACCESS_KEY", "access-key-abcdef")
        .start()
        .await;
    let before = mock.llm_requests().len();
    let (s, v) = call(&gw, Some("access-key-abcdef")).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(mock.llm_requests().len(), before);
}

#[tokio::test]
async fn background_refresh_keeps_the_token_fresh() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-background");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-background")
        .config(json!({"timing": {"refresh_interval_s": 1}}))
        .start()
        .await;
    assert!(
        mock.wait_until(Duration::from_secs(8), |m| m.refresh_count() >= 3)
            .await,
        "refreshed every second without traffic"
    );
    assert_eq!(call(&gw, None).await.0, 200);
    // The request used a token WorkOS minted (the seed itself is long spent).
    assert!(mock.minted_access_tokens().contains(&last_bearer(&mock)));
    // The file on disk keeps up with the rotation (checked between two rotations).
    let mut in_step = false;
    for _ in 0..40 {
        let stored = read_json(&gw.data_dir.join("auth.json"));
        if mock
            .refresh_tokens()
            .iter()
            .any(|t| stored["refresh_token"] == t.as_str())
        {
            in_step = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        in_step,
        "data/auth.json holds the currently valid refresh token"
    );
}

#[tokio::test]
async fn concurrent_401s_share_one_refresh() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-flight");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-flight")
        .start()
        .await;
    assert_eq!(call(&gw, None).await.0, 200);
    assert_eq!(mock.refresh_count(), 1);
    mock.expire_all_access_tokens();
    let url = gw.url("/v1/messages");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            post(&url, &anthropic_body("claude-opus-4-6"), &[]).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(mock.refresh_count(), 2, "twelve 401s, one exchange");
}

#[tokio::test]
async fn failed_refresh_falls_back_to_the_last_access_token() {
    let mock = MockUpstream::start().await;
    mock.add_refresh_token("rt-fallback");
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-fallback")
        .config(json!({"timing": {"refresh_interval_s": 1}}))
        .start()
        .await;
    assert!(
        mock.wait_until(Duration::from_secs(5), |m| m.refresh_count() >= 1)
            .await
    );
    assert_eq!(call(&gw, None).await.0, 200);
    let token = last_bearer(&mock);
    mock.set_workos_failure(Some(500));
    let failures_before = mock.refresh_count();
    assert!(
        mock.wait_until(Duration::from_secs(8), |m| m.refresh_count()
            > failures_before)
            .await
    );
    assert_eq!(call(&gw, None).await.0, 200);
    assert_eq!(
        last_bearer(&mock),
        token,
        "the last access token keeps serving"
    );
    let r = client().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn refresh_that_never_worked_is_a_clear_503() {
    let mock = MockUpstream::start().await;
    mock.set_workos_failure(Some(400));
    let gw = gateway(&mock)
        .env("DROID_REFRESH_KEY", "rt-rejected")
        .start()
        .await;
    let (s, v) = call(&gw, Some("fk-client-key-000")).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refresh token could not be exchanged"),
        "{v}"
    );
    assert!(mock.llm_requests().is_empty());
    let r = client().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    // A reason code, never the upstream's error text (contract §9).
    assert_eq!(
        v,
        json!({"status": "not_ready", "reasons": ["no_access_token"]})
    );
    // A fixed WorkOS makes it work again without a restart, once the failure's backoff (1 s
    // doubling, shared by requests and the background refresh) has run out.
    mock.set_workos_failure(None);
    mock.add_refresh_token("rt-rejected");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut status = call(&gw, None).await.0;
    while status != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = call(&gw, None).await.0;
    }
    assert_eq!(status, 200);
}
