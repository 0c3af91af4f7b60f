//! Several instances sharing state through Redis (issue 11, contract §12, redis-design §9):
//! real `redis-server` processes on free loopback ports, real `droid2api` processes with their
//! own data folders, the in-repo mock upstream. Each case has its own Redis and mock.
//!
//! Needs `redis-server` on PATH (scripts/test installs Debian's); it is spawned per test, never
//! used as a system service.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::*;
use droid2api_mock::MockUpstream;
use serde_json::{Value, json};

/// The contract's propagation bound (§12).
const PROPAGATION: Duration = Duration::from_millis(250);
/// A generous bound for "eventually visible" checks that are not the measurement itself.
const SOON: Duration = Duration::from_secs(3);

fn key(name: &str, i: usize) -> String {
    format!("fk-cluster-{name}-{i:06}")
}

fn upstream_error(message: &str) -> Value {
    json!({"type": "error", "error": {"type": "error", "message": message}})
}

/// Asserts the admin error envelope `{"success":false,"error":{"code","message"}}`.
fn assert_admin_error(what: &str, got: &(u16, Value), status: u16, code: &str) {
    let (s, v) = got;
    assert_eq!(*s, status, "{what}: {v}");
    assert_eq!(v["success"], false, "{what}: {v}");
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
}

/// `/ready` is 200 `{"status":"ready","redis": want}`.
async fn ready_with_redis(inst: &Instance, want: &str) -> bool {
    let (s, v) = inst.ready().await;
    s == 200 && v["status"] == "ready" && v["redis"] == want
}

/// Waits until every instance lists exactly `ids` (sorted) in `GET /admin/keys`.
async fn wait_same_keys(instances: &[&Instance], ids: &[String], within: Duration) {
    let mut want = ids.to_vec();
    want.sort();
    for inst in instances {
        let mut last = Vec::new();
        let ok = eventually(within, async || {
            last = inst.key_ids().await;
            last == want
        })
        .await;
        assert!(
            ok,
            "{} lists {last:?}, want {want:?} (within {within:?})",
            inst.name
        );
    }
}

// ----- harness --------------------------------------------------------------------------------

/// The harness alone: redis-server starts, answers PING (with and without a password), stops
/// and continues, dies on kill -9 and comes back empty on the same port.
#[tokio::test(flavor = "multi_thread")]
async fn harness_redis_server_start_stop_kill_restart() {
    let mut redis = RedisServer::start().await;
    let port = redis.port();
    assert!(redis.is_running());
    assert_eq!(redis.url(0), format!("redis://127.0.0.1:{port}/0"));
    assert_eq!(redis.cmd(&["PING"]).await, "PONG");
    assert_eq!(redis.cmd(&["SET", "a", "1"]).await, "OK");
    assert_eq!(redis.cmd(&["GET", "a"]).await, "1");
    assert_eq!(redis.cmd(&["GET", "missing"]).await, "(nil)");
    assert_eq!(redis.cmd(&["KEYS", "*"]).await, "a");
    assert_eq!(redis.dbsize(0).await, 1);
    assert_eq!(redis.dbsize(3).await, 0);
    assert_eq!(redis.cmd_in(3, &["SET", "b", "2"]).await, "OK");
    assert_eq!(redis.dbsize(3).await, 1);
    let id = redis.cmd(&["XADD", "s", "*", "f", "v"]).await;
    assert!(id.contains('-'), "{id}");
    assert_eq!(redis.cmd(&["XTRIM", "s", "MAXLEN", "0"]).await, "1");
    let killed: u64 = redis
        .cmd(&["CLIENT", "KILL", "TYPE", "normal"])
        .await
        .parse()
        .unwrap();
    assert_eq!(killed, 0, "no other client");
    let err = redis.try_cmd(&["NOSUCHCOMMAND"]).await.unwrap_err();
    assert!(err.contains("unknown command"), "{err}");

    // SIGSTOP: no answer (bounded by the 2 s exchange timeout); SIGCONT: back.
    redis.stop();
    let t = Instant::now();
    let err = redis.try_cmd(&["PING"]).await.unwrap_err();
    assert!(err.contains("no answer"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(redis.is_running(), "a stopped server still runs");
    redis.cont();
    assert_eq!(redis.cmd(&["PING"]).await, "PONG");

    // kill -9: gone; restart_empty: same port, empty.
    redis.kill9().await;
    assert!(!redis.is_running());
    assert!(redis.try_cmd(&["PING"]).await.is_err());
    redis.restart_empty().await;
    assert!(redis.is_running());
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cmd(&["PING"]).await, "PONG");
    assert_eq!(redis.dbsize(0).await, 0);
    assert_eq!(redis.dbsize(3).await, 0);
    assert_eq!(redis.cmd(&["FLUSHALL"]).await, "OK");

    // With a password: AUTH is sent first; without it the server refuses.
    let mut redis = RedisServer::start_with_password("harness-pw-0123456789").await;
    let port = redis.port();
    assert_eq!(
        redis.url(3),
        format!("redis://:harness-pw-0123456789@127.0.0.1:{port}/3")
    );
    assert_eq!(redis.cmd(&["PING"]).await, "PONG");
    let open = RedisServer::start().await;
    assert_ne!(open.port(), port);
    drop(open);
    redis.restart_empty().await;
    assert_eq!(
        redis.cmd(&["PING"]).await,
        "PONG",
        "same password after restart"
    );
    assert_eq!(redis.password(), Some("harness-pw-0123456789"));
}

/// The instance harness without Redis: spawn, admin, chat, ready, metrics, kill -9 and restart
/// with the same data folder, SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn harness_instance_spawn_kill_restart() {
    let mock = MockUpstream::start().await;
    let mut a = Instance::start("A", &mock, None).await;
    let k = key("harness", 1);
    let id = a.add_key(&k).await;
    assert_eq!(a.key_ids().await, vec![id.clone()]);
    let (s, v) = a.chat().await;
    assert_eq!(s, 200, "{v}\n{}", a.dump());
    assert_eq!(llm_bearers(&mock, 0), vec![k.clone()]);
    let (s, _) = a.ready().await;
    assert_eq!(s, 200);
    assert!(
        a.metric("droid2api_requests_total").await.unwrap_or(0.0) >= 1.0,
        "{}",
        a.metrics_text().await
    );
    assert_eq!(a.metric("droid2api_no_such_metric").await, None);
    assert_eq!(a.toggle(&id, "disabled").await, 200);

    let port = a.port();
    a.kill9().await;
    assert!(!a.is_running());
    a.restart().await;
    assert!(a.is_running());
    assert_eq!(a.key_status(&id).await.as_deref(), Some("disabled"));
    assert!(a.output().contains("===== restarted ====="));
    eprintln!("ports: {port} then {}", a.port());
    let st = a.sigterm_and_wait().await;
    assert_eq!(st.code(), Some(0), "{}", a.dump());
    assert!(a.stdout().contains(" listening"));
}

// ----- 1. admin changes propagate within 250 ms -------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn toggle_on_one_instance_is_seen_on_the_other_within_250_ms() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;

    // A key added on A is listed on B.
    let id = a.add_key(&key("toggle", 1)).await;
    wait_same_keys(&[&b], std::slice::from_ref(&id), SOON).await;
    let (s, rec) = b.key(&id).await;
    assert_eq!((s, rec["status"].as_str()), (200, Some("active")), "{rec}");

    // 50 toggles on A; each one timed from A's acknowledgement until B's GET shows it.
    let mut acks = Vec::new();
    let mut seen = Vec::new();
    for i in 0..50 {
        let want = if i % 2 == 0 { "disabled" } else { "active" };
        let sent = Instant::now();
        assert_eq!(a.toggle(&id, want).await, 200, "toggle {i}");
        acks.push(sent.elapsed());
        let took = time_until(Duration::from_secs(2), async || {
            b.key_status(&id).await.as_deref() == Some(want)
        })
        .await
        .unwrap_or_else(|| panic!("toggle {i} to {want} on A not seen on B within 2 s"));
        seen.push(took);
        if i == 0 {
            let (_, rec) = b.key(&id).await;
            assert_eq!(rec["disabled_by"], "admin", "{rec}");
        }
    }
    eprintln!("admin toggle on A, send → 200: {}", distribution(&acks));
    eprintln!("A's 200 → visible on B:        {}", distribution(&seen));
    let mut sorted = seen.clone();
    sorted.sort();
    let p99 = percentile(&sorted, 99.0);
    assert!(
        p99 <= PROPAGATION,
        "p99 propagation {p99:?} > {PROPAGATION:?}: {}",
        distribution(&seen)
    );
}

// ----- 2. a ban on one instance is honoured by the other ------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_402_ban_on_one_instance_is_never_used_by_the_other() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;

    let bad = key("ban", 1);
    let good = key("ban", 2);
    let bad_id = a.add_key(&bad).await;
    let good_id = a.add_key(&good).await;
    wait_same_keys(&[&b], &[bad_id.clone(), good_id.clone()], SOON).await;
    mock.set_bearer_status(bad.clone(), 402, upstream_error("no credits left"));

    // Traffic through A until it has tried the bad key (round-robin: within two requests);
    // the client never sees the 402 (failover).
    let mut tried = false;
    for _ in 0..4 {
        let (s, v) = a.chat().await;
        assert_eq!(s, 200, "{v}");
        if llm_bearers(&mock, 0).contains(&bad) {
            tried = true;
            break;
        }
    }
    assert!(
        tried,
        "A never sent the bad key: {:?}",
        llm_bearers(&mock, 0)
    );
    assert_eq!(a.key_status(&bad_id).await.as_deref(), Some("banned"));

    let took = time_until(Duration::from_secs(2), async || {
        b.key_status(&bad_id).await.as_deref() == Some("banned")
    })
    .await;
    eprintln!("ban on A → listed banned on B after {took:?}");
    let took = took.expect("B lists the key banned within 2 s");
    assert!(took <= PROPAGATION, "ban seen on B after {took:?}");
    let (_, rec) = b.key(&bad_id).await;
    assert!(
        rec["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("402")),
        "{rec}"
    );

    // From now on B never sends the banned key upstream.
    let mark = mock.llm_requests().len();
    for i in 0..20 {
        let (s, v) = b.chat().await;
        assert_eq!(s, 200, "request {i} through B: {v}");
    }
    let bearers = llm_bearers(&mock, mark);
    assert_eq!(bearers.len(), 20, "{bearers:?}");
    assert!(
        bearers.iter().all(|k| *k == good),
        "B sent the banned key: {bearers:?}"
    );
}

// ----- 3. pool groups and stored settings ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn groups_and_settings_made_on_one_instance_apply_on_the_other() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;

    let group = async |inst: &Instance, id: &str| -> Option<Value> {
        let d = inst.admin_ok("GET", "/admin/pool-groups", None).await;
        d.as_array()
            .and_then(|gs| gs.iter().find(|g| g["id"] == id).cloned())
    };

    // A group created on A.
    a.admin_ok(
        "POST",
        "/admin/pool-groups",
        Some(json!({"id": "tier-1", "name": "Tier 1", "priority": 10, "description": "first"})),
    )
    .await;
    let took = time_until(SOON, async || {
        group(&b, "tier-1")
            .await
            .is_some_and(|g| g["priority"] == 10 && g["name"] == "Tier 1")
    })
    .await;
    eprintln!("group created on A → on B after {took:?}");
    assert!(took.is_some(), "B never listed the group");

    // Edited on A.
    a.admin_ok(
        "PATCH",
        "/admin/pool-groups/tier-1",
        Some(json!({"priority": 5})),
    )
    .await;
    assert!(
        eventually(SOON, async || group(&b, "tier-1")
            .await
            .is_some_and(|g| g["priority"] == 5))
        .await,
        "B never saw the new priority: {:?}",
        group(&b, "tier-1").await
    );

    // A key moved into it on A.
    let id = a.add_key(&key("groups", 1)).await;
    a.admin_ok(
        "PATCH",
        &format!("/admin/keys/{id}/pool"),
        Some(json!({"poolGroup": "tier-1"})),
    )
    .await;
    assert!(
        eventually(SOON, async || b.key(&id).await.1["poolGroup"] == "tier-1").await,
        "B: {}",
        b.key(&id).await.1
    );
    let g = group(&b, "tier-1").await.unwrap();
    assert_eq!(g["total"], 1, "{g}");

    // Stored settings (PUT /admin/config) on A.
    let d = a
        .admin_ok("PUT", "/admin/config", Some(json!({"algorithm": "random"})))
        .await;
    assert_eq!(d["key_pool"]["algorithm"], "random", "{d}");
    let took = time_until(SOON, async || {
        b.admin_ok("GET", "/admin/config", None).await["key_pool"]["algorithm"] == "random"
    })
    .await;
    eprintln!("PUT /admin/config on A → on B after {took:?}");
    assert!(took.is_some(), "B never applied the setting");

    // Reset on A drops the stored layer everywhere.
    a.admin_ok("POST", "/admin/config/reset", None).await;
    assert!(
        eventually(SOON, async || {
            b.admin_ok("GET", "/admin/config", None).await["key_pool"]["algorithm"] == "round-robin"
        })
        .await
    );

    // Deleted on A: gone on B, its key back in `default`.
    a.admin_ok("DELETE", "/admin/pool-groups/tier-1", None)
        .await;
    assert!(
        eventually(SOON, async || group(&b, "tier-1").await.is_none()).await,
        "B still lists the deleted group"
    );
    assert!(
        eventually(SOON, async || b.key(&id).await.1["poolGroup"] == "default").await,
        "B: {}",
        b.key(&id).await.1
    );
}

// ----- 4. one round-robin position for the fleet ----------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_evenly_across_three_instances() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;
    let c = Instance::start("C", &mock, Some(&redis)).await;

    let keys: Vec<String> = (0..10).map(|i| key("rr", i)).collect();
    let mut ids = Vec::new();
    for k in &keys {
        ids.push(a.add_key(k).await);
    }
    wait_same_keys(&[&b, &c], &ids, SOON).await;

    // 300 requests, 200 / 70 / 30, interleaved evenly (B's and C's shares spread among A's),
    // ten at a time.
    let handles = [a.handle(), b.handle(), c.handle()];
    let mut order = Vec::new();
    let mut counts = [0usize; 3];
    let shares = [200.0, 70.0, 30.0];
    for n in 1..=300 {
        // The instance furthest behind its share so far.
        let behind = |i: usize| shares[i] * n as f64 / 300.0 - counts[i] as f64;
        let i = (0..3)
            .max_by(|&x, &y| behind(x).total_cmp(&behind(y)))
            .unwrap();
        counts[i] += 1;
        order.push(i);
    }
    assert_eq!(counts, [200, 70, 30]);
    let mut statuses = Vec::new();
    for chunk in order.chunks(10) {
        let calls = chunk.iter().map(|&i| {
            let (http, base) = handles[i].clone();
            async move { chat_at(&http, &base).await }
        });
        for (s, v) in futures_util::future::join_all(calls).await {
            statuses.push(s);
            assert_eq!(s, 200, "{v}");
        }
    }
    assert_eq!(statuses.len(), 300);

    let mut per_key: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 0)).collect();
    for bearer in llm_bearers(&mock, 0) {
        *per_key.entry(bearer).or_default() += 1;
    }
    eprintln!(
        "requests per key: {:?}",
        per_key.values().collect::<Vec<_>>()
    );
    assert_eq!(per_key.len(), 10, "unknown bearers: {per_key:?}");
    assert_eq!(per_key.values().sum::<usize>(), 300);
    for (k, n) in &per_key {
        assert!(
            (14..=46).contains(n),
            "{k}: {n} requests (want 30 ± 16): {per_key:?}"
        );
    }
    // The positions came from the fleet counter (claimed in blocks of 16), not from each
    // instance's own cursor (only the first pick of each instance, before its first claim, may
    // use the cursor), and at most two blocks per instance are claimed beyond what was used.
    let handed: u64 = redis
        .cmd(&["GET", "droid2api:{v1}:rr:1000"])
        .await
        .parse()
        .unwrap_or(0);
    assert!(
        (290..=300 + 3 * 2 * 16).contains(&handed),
        "fleet round-robin counter at {handed}"
    );
}

// ----- 5. usage answers for the fleet ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn usage_on_either_instance_is_the_fleet_sum() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;

    let id1 = a.add_key(&key("usage", 1)).await;
    let id2 = a.add_key(&key("usage", 2)).await;
    wait_same_keys(&[&b], &[id1.clone(), id2.clone()], SOON).await;

    let (through_a, through_b) = (7u64, 5u64);
    for _ in 0..through_a {
        assert_eq!(a.chat().await.0, 200);
    }
    for _ in 0..through_b {
        assert_eq!(b.chat().await.0, 200);
    }
    let total = through_a + through_b;
    assert_eq!(mock.llm_requests().len() as u64, total);

    for inst in [&a, &b] {
        let mut last = (0, Value::Null, 0);
        let ok = eventually(Duration::from_secs(5), async || {
            let usage = inst.usage_requests().await;
            let summary = inst.admin_ok("GET", "/factory/balance/summary", None).await;
            let per_key: u64 = inst
                .keys()
                .await
                .iter()
                .filter_map(|k| k["requests"].as_u64())
                .sum();
            let done = usage == total && summary["requests"] == total && per_key == total;
            last = (usage, summary["requests"].clone(), per_key);
            done
        })
        .await;
        assert!(
            ok,
            "{}: /admin/usage requests, /factory/balance/summary requests, sum of key \
             counters = {last:?}; want {total} ({through_a} via A + {through_b} via B)",
            inst.name
        );
        let u = inst.admin_ok("GET", "/factory/balance/usage", None).await;
        let sum: u64 = u["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["requests"].as_u64())
            .sum();
        assert_eq!(sum, total, "{}: {u}", inst.name);
    }
}

// ----- 6. Redis dies mid-traffic and comes back empty -------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_traffic_then_restarted_empty() {
    let mut redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let b = Instance::start("B", &mock, Some(&redis)).await;
    assert!(ready_with_redis(&a, "up").await, "{:?}", a.ready().await);
    assert_eq!(a.metric("droid2api_redis_up").await, Some(1.0));

    // Three keys (one disabled) and one deleted before the outage.
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(a.add_key(&key("outage", i)).await);
    }
    let gone = a.add_key(&key("outage", 9)).await;
    assert_eq!(a.toggle(&ids[1], "disabled").await, 200);
    a.admin_ok("DELETE", &format!("/admin/keys/{gone}"), None)
        .await;
    wait_same_keys(&[&a, &b], &ids, SOON).await;
    assert!(
        eventually(SOON, async || b.key_status(&ids[1]).await.as_deref()
            == Some("disabled"))
        .await
    );

    // Traffic through both, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let targets = [a.handle(), b.handle()];
        tokio::spawn(async move {
            let mut results = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (http, base) = &targets[n % 2];
                let t = Instant::now();
                let (s, v) = chat_at(http, base).await;
                results.push((n % 2, s, t.elapsed(), v));
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // kill -9: degraded, gauge 0, admin writes 503, reads fine.
    redis.kill9().await;
    let killed = Instant::now();
    for inst in [&a, &b] {
        let mut last = (0, Value::Null);
        let ok = eventually(SOON, async || {
            last = inst.ready().await;
            last.0 == 200 && last.1["status"] == "ready" && last.1["redis"] == "degraded"
        })
        .await;
        assert!(ok, "{} /ready after kill -9: {last:?}", inst.name);
        assert!(
            eventually(SOON, async || inst.metric("droid2api_redis_up").await
                == Some(0.0))
            .await,
            "{}: droid2api_redis_up = {:?}",
            inst.name,
            inst.metric("droid2api_redis_up").await
        );
    }
    eprintln!("degraded on both after {:?}", killed.elapsed());
    let writes: [(&str, String, Option<Value>); 5] = [
        (
            "POST",
            "/admin/keys".into(),
            Some(json!({"key": key("outage", 5)})),
        ),
        (
            "PATCH",
            format!("/admin/keys/{}/toggle", ids[0]),
            Some(json!({"status": "disabled"})),
        ),
        (
            "PUT",
            "/admin/config".into(),
            Some(json!({"algorithm": "random"})),
        ),
        (
            "POST",
            "/admin/pool-groups".into(),
            Some(json!({"id": "tier-9", "name": "Tier 9", "priority": 9})),
        ),
        ("DELETE", format!("/admin/keys/{}", ids[2]), None),
    ];
    for (method, path, body) in &writes {
        let t = Instant::now();
        let got = a.admin(method, path, body.clone()).await;
        eprintln!(
            "{method} {path} during the outage: {} in {:?}",
            got.0,
            t.elapsed()
        );
        assert_admin_error(&format!("{method} {path}"), &got, 503, "redis_unavailable");
    }
    // Reads still work, from the last known state.
    assert_eq!(a.key_ids().await, sorted(&ids));
    assert_eq!(b.key_status(&ids[1]).await.as_deref(), Some("disabled"));
    assert_eq!(a.admin("GET", "/admin/config", None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Redis comes back empty on the same port.
    redis.restart_empty().await;
    let back = Instant::now();
    for inst in [&a, &b] {
        let ok = eventually(Duration::from_secs(6), async || {
            ready_with_redis(inst, "up").await
                && inst.metric("droid2api_redis_up").await == Some(1.0)
        })
        .await;
        assert!(ok, "{} not back up: {:?}", inst.name, inst.ready().await);
    }
    // 503 until the re-seed is done; a 409 means an earlier, timed-out attempt did apply.
    let mut statuses = Vec::new();
    let ok = eventually(Duration::from_secs(6), async || {
        let (s, _) = a
            .admin(
                "POST",
                "/admin/keys",
                Some(json!({"key": key("outage", 6)})),
            )
            .await;
        statuses.push(s);
        s == 201 || s == 409
    })
    .await;
    eprintln!("POST /admin/keys after the restart: {statuses:?}");
    assert!(ok, "admin writes never came back");
    eprintln!("admin writes back {:?} after the restart", back.elapsed());
    stop.store(true, Ordering::SeqCst);
    let results = traffic.await.unwrap();

    // Traffic never failed.
    let failed: Vec<_> = results.iter().filter(|r| r.1 != 200).collect();
    let slowest = results.iter().map(|r| r.2).max().unwrap_or_default();
    eprintln!(
        "traffic: {} requests, {} failed, slowest {slowest:?}",
        results.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let served = results.len() as u64;

    // Redis re-seeded: keys and statuses back, the deleted key still gone, usage totals back.
    assert!(redis.dbsize(0).await > 0, "Redis was not re-seeded");
    let new_ids: Vec<String> = a
        .key_ids()
        .await
        .into_iter()
        .filter(|id| !ids.contains(id))
        .collect();
    assert_eq!(
        new_ids.len(),
        1,
        "one key added after the restart: {new_ids:?}"
    );
    let mut want = ids.clone();
    want.extend(new_ids);
    wait_same_keys(&[&a, &b], &want, Duration::from_secs(5)).await;
    for inst in [&a, &b] {
        assert_eq!(inst.key_status(&ids[0]).await.as_deref(), Some("active"));
        assert_eq!(inst.key_status(&ids[1]).await.as_deref(), Some("disabled"));
        assert_eq!(
            inst.key(&gone).await.0,
            404,
            "{}: deleted key is back",
            inst.name
        );
        let mut last = 0;
        let ok = eventually(Duration::from_secs(5), async || {
            last = inst.usage_requests().await;
            last == served
        })
        .await;
        assert!(
            ok,
            "{}: fleet usage {last}, want {served} requests",
            inst.name
        );
    }
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

// ----- 7. an instance killed and restarted catches up --------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_and_restarted_gets_the_fleet_state() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, Some(&redis)).await;
    let mut b = Instance::start("B", &mock, Some(&redis)).await;

    let k: Vec<String> = (0..3).map(|i| key("restart", i)).collect();
    let id0 = a.add_key(&k[0]).await;
    let id1 = a.add_key(&k[1]).await;
    wait_same_keys(&[&b], &[id0.clone(), id1.clone()], SOON).await;

    b.kill9().await;
    // Changes while B is down.
    let id2 = a.add_key(&k[2]).await;
    assert_eq!(a.toggle(&id0, "disabled").await, 200);
    a.admin_ok(
        "POST",
        "/admin/pool-groups",
        Some(json!({"id": "late", "name": "Late", "priority": 7})),
    )
    .await;
    a.admin_ok(
        "PATCH",
        &format!("/admin/keys/{id2}/pool"),
        Some(json!({"poolGroup": "late"})),
    )
    .await;
    a.admin_ok("PUT", "/admin/config", Some(json!({"algorithm": "random"})))
        .await;

    b.restart().await;
    wait_same_keys(
        &[&b],
        &[id0.clone(), id1.clone(), id2.clone()],
        Duration::from_secs(5),
    )
    .await;
    assert!(
        eventually(SOON, async || {
            b.key_status(&id0).await.as_deref() == Some("disabled")
                && b.key(&id2).await.1["poolGroup"] == "late"
                && b.admin_ok("GET", "/admin/config", None).await["key_pool"]["algorithm"]
                    == "random"
        })
        .await,
        "B after restart: {} / {} / {}",
        b.key(&id0).await.1,
        b.key(&id2).await.1,
        b.admin_ok("GET", "/admin/config", None).await
    );
    let groups = b.admin_ok("GET", "/admin/pool-groups", None).await;
    assert!(
        groups.as_array().unwrap().iter().any(|g| g["id"] == "late"),
        "{groups}"
    );
    // B's traffic honours it: never the disabled key.
    let mark = mock.llm_requests().len();
    for _ in 0..6 {
        assert_eq!(b.chat().await.0, 200);
    }
    let used: BTreeSet<String> = llm_bearers(&mock, mark).into_iter().collect();
    assert!(!used.contains(&k[0]), "B used the disabled key: {used:?}");
}

// ----- 8. password and database number; a wrong password ------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn password_and_database_number_work_and_never_reach_the_logs() {
    const PW: &str = "redis-pw-SECRET-c1u5t3r-0123456789";
    const WRONG: &str = "wrong-pw-SECRET-c1u5t3r-9876543210";
    let redis = RedisServer::start_with_password(PW).await;
    let mock = MockUpstream::start().await;
    let url = redis.url(3);
    let mut a = Instance::builder("A", &mock)
        .redis_url(&url)
        .env("NODE_ENV", "production")
        .start()
        .await;
    let mut b = Instance::builder("B", &mock)
        .redis_url(&url)
        .env("NODE_ENV", "production")
        .start()
        .await;
    assert!(
        eventually(SOON, async || ready_with_redis(&a, "up").await).await,
        "{:?}",
        a.ready().await
    );
    let id = a.add_key(&key("auth", 1)).await;
    wait_same_keys(&[&b], std::slice::from_ref(&id), SOON).await;
    assert!(redis.dbsize(3).await > 0, "nothing in database 3");
    assert_eq!(redis.dbsize(0).await, 0, "database 0 was used");

    // A wrong password: the instance runs, degraded, and says why (URL masked).
    let mut c = Instance::builder("C", &mock)
        .redis_url(redis.url_with_password(WRONG, 3))
        .env("NODE_ENV", "production")
        .start()
        .await;
    let mut last = (0, Value::Null);
    let ok = eventually(Duration::from_secs(5), async || {
        last = c.ready().await;
        last.0 == 200 && last.1["redis"] == "degraded"
    })
    .await;
    assert!(ok, "C /ready with a wrong password: {last:?}");
    assert_eq!(c.metric("droid2api_redis_up").await, Some(0.0));
    let host_port = format!("127.0.0.1:{}", redis.port());
    let names_problem = |l: &str| {
        let low = l.to_ascii_lowercase();
        low.contains("redis")
            && l.contains(&host_port)
            && ["wrongpass", "auth", "password"]
                .iter()
                .any(|w| low.contains(w))
    };
    assert!(
        eventually(SOON, async || c.output().lines().any(names_problem)).await,
        "no log line names the Redis authentication problem with {host_port}:\n{}",
        c.output()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.is_running(), "C crashed:\n{}", c.output());

    // Stop everyone (flushes the file logs), then scan every output and log file.
    for inst in [&mut a, &mut b, &mut c] {
        let st = inst.sigterm_and_wait().await;
        assert_eq!(st.code(), Some(0), "{}", inst.dump());
    }
    for inst in [&a, &b, &c] {
        assert!(
            !inst.log_files().is_empty(),
            "{}: no log file in {}",
            inst.name,
            inst.logs_dir().display()
        );
        let text = inst.all_text();
        for secret in [PW, WRONG] {
            assert!(
                !text.contains(secret),
                "{}: the Redis password is in its output or log files:\n{text}",
                inst.name
            );
        }
    }
}

// ----- 9. without REDIS_URL nothing changes -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_url_ready_has_no_redis_field() {
    let mock = MockUpstream::start().await;
    let a = Instance::start("A", &mock, None).await;
    let (s, v) = a.ready().await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"status": "ready"}));
    assert!(v.get("redis").is_none(), "{v}");
    // Admin writes and traffic as before.
    let id = a.add_key(&key("alone", 1)).await;
    assert_eq!(a.toggle(&id, "disabled").await, 200);
    assert_eq!(a.toggle(&id, "active").await, 200);
    assert_eq!(a.chat().await.0, 200);
}

// ----- 10. seeding an empty Redis from a data folder; a joiner adopts it ------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn first_instance_seeds_an_empty_redis_and_a_joiner_adopts_it() {
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;

    // A alone (no Redis) gathers keys in its data folder.
    let mut a = Instance::start("A", &mock, None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(a.add_key(&key("seed", i)).await);
    }
    assert_eq!(a.toggle(&ids[2], "disabled").await, 200);
    let st = a.sigterm_and_wait().await;
    assert_eq!(st.code(), Some(0), "{}", a.dump());
    assert_eq!(redis.dbsize(0).await, 0);

    // Restarted with REDIS_URL: it seeds the empty Redis.
    a.set_env("REDIS_URL", redis.url(0));
    a.restart().await;
    assert!(
        eventually(Duration::from_secs(5), async || redis.dbsize(0).await > 0).await,
        "A never seeded Redis"
    );
    wait_same_keys(&[&a], &ids, SOON).await;

    // B, with an empty data folder, joins and adopts the keys.
    let b = Instance::start("B", &mock, Some(&redis)).await;
    wait_same_keys(&[&b], &ids, Duration::from_secs(5)).await;
    assert_eq!(b.key_status(&ids[2]).await.as_deref(), Some("disabled"));
    assert_eq!(b.key_status(&ids[0]).await.as_deref(), Some("active"));
    // And B's traffic uses them.
    assert_eq!(b.chat().await.0, 200);
}

// ----- 11. level-3 tokens shared: one WorkOS exchange for the fleet -----------------------------------

const TOK: &str = "droid2api:{v1}:tok";
const REFRESH_LOCK: &str = "droid2api:{v1}:lock:refresh";

/// An instance whose only credential is the refresh token `seed` (level 3).
async fn level_three(name: &str, mock: &MockUpstream, redis: &RedisServer, seed: &str) -> Instance {
    Instance::builder(name, mock)
        .redis(redis)
        .env("DROID_REFRESH_KEY", seed)
        .start()
        .await
}

/// The instance's data/auth.json (Null while it does not exist).
fn auth_file(inst: &Instance) -> Value {
    std::fs::read(inst.data_dir().join("auth.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// One chat on `inst` must answer 200 with `token` as the upstream bearer.
async fn chat_with_token(inst: &Instance, mock: &MockUpstream, token: &str) {
    let mark = mock.llm_requests().len();
    let (s, v) = inst.chat().await;
    assert_eq!(s, 200, "{}: {v}\n{}", inst.name, inst.dump());
    let used = llm_bearers(mock, mark);
    assert_eq!(
        used.last().map(String::as_str),
        Some(token),
        "{} used {used:?}",
        inst.name
    );
}

/// Waits until the instance has taken (and persisted) `token` of generation `generation`.
async fn wait_adopted(inst: &Instance, token: &str, generation: u64) {
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(5), async || {
        last = auth_file(inst);
        last["access_token"] == token && last["gen"] == generation
    })
    .await;
    assert!(
        ok,
        "{} did not adopt generation {generation}: auth.json {last}\n{}",
        inst.name,
        inst.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_share_one_workos_refresh_and_its_rotations() {
    const SEED: &str = "rt-fleet-seed-0123456789";
    let redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    mock.add_refresh_token(SEED);
    // Someone holds the refresh lock for 3 s: all three instances start, need a token at once,
    // and must wait for it, then race for the lock when it expires.
    redis
        .cmd(&["SET", REFRESH_LOCK, "elsewhere:0", "PX", "3000"])
        .await;
    let (a, b, c) = tokio::join!(
        level_three("A", &mock, &redis, SEED),
        level_three("B", &mock, &redis, SEED),
        level_three("C", &mock, &redis, SEED),
    );
    let chats = futures_util::future::join_all([&a, &b, &c].map(|i| i.chat())).await;
    for (inst, (s, v)) in [&a, &b, &c].iter().zip(&chats) {
        assert_eq!(*s, 200, "{}: {v}\n{}", inst.name, inst.dump());
    }
    assert_eq!(mock.refresh_count(), 1, "WorkOS calls for three instances");
    let minted = mock.minted_access_tokens();
    assert_eq!(minted.len(), 1, "{minted:?}");
    let at1 = minted[0].clone();
    let used: BTreeSet<String> = llm_bearers(&mock, 0).into_iter().collect();
    assert_eq!(used, BTreeSet::from([at1.clone()]), "bearers used");
    assert_eq!(redis.cmd(&["HGET", TOK, "gen"]).await, "1");
    assert_eq!(redis.cmd(&["HGET", TOK, "access"]).await, at1);
    assert_eq!(
        redis.cmd(&["EXISTS", REFRESH_LOCK]).await,
        "0",
        "lock released"
    );
    // Each persisted the pair (the rotated refresh token, generation 1).
    let rotated = mock.refresh_tokens();
    for inst in [&a, &b, &c] {
        wait_adopted(inst, &at1, 1).await;
        assert_eq!(auth_file(inst)["refresh_token"], rotated[0].as_str());
    }

    // A forced refresh on A (Factory refuses the access token): A exchanges once, B and C
    // take the new pair without calling WorkOS.
    mock.expire_access_token(&at1);
    let mark = mock.llm_requests().len();
    let (s, v) = a.chat().await;
    assert_eq!(s, 200, "{v}\n{}", a.dump());
    assert_eq!(mock.refresh_count(), 2);
    let at2 = llm_bearers(&mock, mark).last().cloned().unwrap();
    assert_ne!(at2, at1);
    assert!(mock.minted_access_tokens().contains(&at2));
    assert_eq!(redis.cmd(&["HGET", TOK, "gen"]).await, "2");
    for inst in [&b, &c] {
        wait_adopted(inst, &at2, 2).await;
        chat_with_token(inst, &mock, &at2).await;
    }
    chat_with_token(&a, &mock, &at2).await;
    assert_eq!(mock.refresh_count(), 2, "B or C called WorkOS");
    // No secret of the pair in any log line.
    for inst in [&a, &b, &c] {
        let text = inst.all_text();
        for secret in [SEED, at1.as_str(), at2.as_str(), rotated[0].as_str()] {
            assert!(!text.contains(secret), "{} logged a token", inst.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_during_a_redis_outage_is_shared_when_redis_returns() {
    const SEED: &str = "rt-fleet-outage-0123456789";
    let mut redis = RedisServer::start().await;
    let mock = MockUpstream::start().await;
    mock.add_refresh_token(SEED);
    let a = level_three("A", &mock, &redis, SEED).await;
    let b = level_three("B", &mock, &redis, SEED).await;
    assert_eq!(a.chat().await.0, 200);
    assert_eq!(b.chat().await.0, 200);
    assert_eq!(mock.refresh_count(), 1);
    let at1 = mock.minted_access_tokens()[0].clone();
    wait_adopted(&b, &at1, 1).await;

    // Redis gone; A's token is refused: A refreshes alone (generation 2), B, not asked to, keeps
    // its token and calls nobody.
    redis.kill9().await;
    mock.expire_access_token(&at1);
    let mark = mock.llm_requests().len();
    let (s, v) = a.chat().await;
    assert_eq!(s, 200, "{v}\n{}", a.dump());
    assert_eq!(mock.refresh_count(), 2);
    let at2 = llm_bearers(&mock, mark).last().cloned().unwrap();
    assert_eq!(auth_file(&a)["gen"], 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.refresh_count(), 2, "B refreshed while Redis was down");

    // Redis back, empty: A offers its newer pair, B adopts it without calling WorkOS.
    redis.restart_empty().await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            redis.try_cmd(&["HGET", TOK, "gen"]).await.as_deref() == Ok("2")
        })
        .await,
        "A never shared generation 2:\n{}",
        a.dump()
    );
    wait_adopted(&b, &at2, 2).await;
    chat_with_token(&b, &mock, &at2).await;
    assert_eq!(mock.refresh_count(), 2);
}
