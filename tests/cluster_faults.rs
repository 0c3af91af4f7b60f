//! Several instances when Redis misbehaves (issue 11, redis-design §9): paused (SIGSTOP, the
//! failure that hangs gateways whose requests wait on Redis), its connections killed and its log
//! trimmed under a reader that was away, and restarted with its data (no re-seed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use droid2api_mock::MockUpstream;
use serde_json::json;

const SOON: Duration = Duration::from_secs(5);

fn key(name: &str, i: usize) -> String {
    format!("fk-faults-{name}-{i:06}")
}

async fn statuses_agree(instances: &[&Instance], id: &str, want: &str) -> bool {
    for inst in instances {
        if inst.key_status(id).await.as_deref() != Some(want) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_redis_never_holds_a_request() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;
    for i in 0..4 {
        a.add_key(&key("pause", i)).await;
    }
    assert!(
        eventually(SOON, async || b.key_ids().await.len() == 4).await,
        "{}",
        b.dump()
    );
    // Redis answers nothing for 3 s (its sockets stay open: calls hang rather than fail).
    redis.stop();
    let paused = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    while paused.elapsed() < Duration::from_secs(3) {
        for inst in [&a, &b] {
            let t = Instant::now();
            let (s, v) = inst.chat().await;
            assert_eq!(s, 200, "{}: {v}", inst.name);
            slowest = slowest.max(t.elapsed());
            served += 1;
        }
    }
    // An admin write is refused (or, caught before the first failed check, not confirmed)
    // within about a second, never hung.
    let t = Instant::now();
    let (s, v) = a
        .admin(
            "POST",
            "/admin/keys",
            Some(json!({"key": key("pause", 99)})),
        )
        .await;
    let admin_wait = t.elapsed();
    redis.cont();
    eprintln!(
        "paused 3 s: {served} requests, slowest {slowest:?}; admin write {s} after {admin_wait:?}"
    );
    // Not a speed target: a request that waited on Redis would take the 1 s deadline or more.
    assert!(
        slowest < Duration::from_millis(900),
        "a request waited on the paused Redis: {slowest:?}"
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "redis_unavailable", "{v}");
    assert!(admin_wait < Duration::from_secs(3), "{admin_wait:?}");
    // Back: writes go through again and propagate.
    let ok = eventually(SOON, async || {
        a.admin(
            "POST",
            "/admin/keys",
            Some(json!({"key": key("pause", 100)})),
        )
        .await
        .0 == 201
    })
    .await;
    assert!(ok, "{}", a.dump());
    assert!(
        eventually(SOON, async || b.key_ids().await.len() == 5).await,
        "{}",
        b.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_missed_trimmed_changes_reloads_the_shared_state() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let mut b = Instance::start("B", &mock, Some(&redis)).await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(a.add_key(&key("trim", i)).await);
        }
        v
    };
    assert!(eventually(SOON, async || b.key_ids().await.len() == 3).await);
    // B stops reading (frozen); A changes things; the log is trimmed to nothing; every client
    // connection is killed (B's reader included). Then B wakes up.
    let pid = b.pid().expect("B runs");
    let sig = |s: &str| {
        std::process::Command::new("kill")
            .args([s, &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(sig("-STOP").success());
    assert_eq!(a.toggle(&ids[0], "disabled").await, 200);
    let (s, _) = a
        .admin("DELETE", &format!("/admin/keys/{}", ids[1]), None)
        .await;
    assert_eq!(s, 200);
    redis
        .cmd(&["XTRIM", "droid2api:{v1}:log", "MAXLEN", "0"])
        .await;
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    assert!(sig("-CONT").success());
    let ok = eventually(SOON, async || {
        statuses_agree(&[&b], &ids[0], "disabled").await && b.key(&ids[1]).await.0 == 404
    })
    .await;
    assert!(ok, "B never caught up:\n{}", b.dump());
    assert!(b.is_running());
    // And it follows the log again afterwards.
    assert_eq!(a.toggle(&ids[2], "disabled").await, 200);
    assert!(
        eventually(SOON, async || statuses_agree(&[&b], &ids[2], "disabled")
            .await)
        .await,
        "{}",
        b.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_with_its_data_is_not_seeded_again() {
    let mut redis = RedisServer::start_with_aof().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(a.add_key(&key("aof", i)).await);
    }
    assert!(eventually(SOON, async || b.key_ids().await.len() == 3).await);
    let epoch = redis.cmd(&["HGET", "droid2api:{v1}:meta", "epoch"]).await;
    assert!(!epoch.is_empty());
    // A deletion Redis must remember across the restart (its tombstone).
    let (s, _) = a
        .admin("DELETE", &format!("/admin/keys/{}", ids[2]), None)
        .await;
    assert_eq!(s, 200);
    assert!(eventually(SOON, async || b.key(&ids[2]).await.0 == 404).await);

    redis.restart_keeping_data().await;
    assert!(
        eventually(SOON, async || {
            a.ready().await.1["redis"] == "up" && b.ready().await.1["redis"] == "up"
        })
        .await
    );
    assert_eq!(
        redis.cmd(&["HGET", "droid2api:{v1}:meta", "epoch"]).await,
        epoch,
        "same data, same epoch"
    );
    // Writes work and propagate; nothing was seeded again; the deleted key stays deleted.
    assert!(
        eventually(SOON, async || a.toggle(&ids[0], "disabled").await == 200).await,
        "{}",
        a.dump()
    );
    assert!(
        eventually(SOON, async || statuses_agree(&[&b], &ids[0], "disabled")
            .await)
        .await
    );
    for inst in [&a, &b] {
        assert_eq!(inst.key(&ids[2]).await.0, 404, "{}", inst.name);
    }
    let seeds: usize = [&a, &b]
        .iter()
        .map(|i| i.all_text().matches("Redis held no shared state").count())
        .sum();
    assert_eq!(seeds, 1, "only the very first start seeds Redis");
}
