//! The Factory balance sync against the mock: trial and paid keys, health fed by 401/402,
//! timeouts, the automatic test of a banned key that shows tokens again, every key synced,
//! `BATCH_SIZE`, the token algorithms, persistence, and no secret in any error.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use droid2api::credentials::pool::{KeyFilter, KeyPool, Outcome, PoolPick};
use droid2api::store::records::{EventSource, KeyStatus};
use droid2api::store::sqlite::Store;
use droid2api::usage::sync::{BalanceSync, KeyTester, SyncReport};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

const TRIAL_END_2099: i64 = 4_070_908_800_000;

fn pool(gw: &Gateway) -> Arc<KeyPool> {
    Arc::clone(&gw.running.as_ref().unwrap().app.pool)
}

fn sync_with(gw: &Gateway, timeout: Option<Duration>) -> Arc<BalanceSync> {
    let app = &gw.running.as_ref().unwrap().app;
    let s = &app.settings;
    let args = (
        Arc::clone(&app.upstream),
        Arc::clone(&app.pool),
        app.store.clone(),
        s.endpoints.balance_origin.clone(),
        s.user_agent.clone(),
        s.batch_size as usize,
    );
    match timeout {
        None => BalanceSync::new(args.0, args.1, args.2, args.3, args.4, args.5),
        Some(t) => BalanceSync::with_timeout(args.0, args.1, args.2, args.3, args.4, args.5, t),
    }
}

fn sync(gw: &Gateway) -> Arc<BalanceSync> {
    sync_with(gw, None)
}

async fn add(p: &KeyPool, key: &str) -> String {
    p.add_key(key, None, None).await.unwrap().id
}

/// Records the keys it is asked to test; the test takes a while and then succeeds (as the admin
/// key test would record it), so an un-awaited test would be visible.
#[derive(Clone)]
struct Recorder {
    pool: Arc<KeyPool>,
    tested: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn new(pool: Arc<KeyPool>) -> Self {
        Recorder {
            pool,
            tested: Arc::default(),
        }
    }

    fn tested(&self) -> Vec<String> {
        self.tested.lock().unwrap().clone()
    }
}

impl KeyTester for Recorder {
    fn test(&self, key_id: String) -> BoxFuture<'static, ()> {
        let (pool, tested) = (Arc::clone(&self.pool), Arc::clone(&self.tested));
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            pool.report(&key_id, &Outcome::Success, EventSource::Test);
            tested.lock().unwrap().push(key_id);
        })
    }
}

/// A chat-usage answer.
fn usage_body(used: u64, allowance: u64) -> Value {
    json!({"usage": {
        "startDate": "2026-11-01T00:00:00Z", "endDate": "2026-12-01T00:00:00Z",
        "standard": {"userTokens": used, "orgTotalTokensUsed": used, "orgOverageUsed": 0,
                     "basicAllowance": allowance, "totalAllowance": allowance,
                     "orgOverageLimit": 0, "usedRatio": 0.0},
        "premium": {"userTokens": 0, "orgTotalTokensUsed": 0, "orgOverageUsed": 0,
                    "basicAllowance": 0, "totalAllowance": 0, "orgOverageLimit": 0,
                    "usedRatio": 0.0},
    }})
}

/// Makes the mock answer `used` of a trial org's 20 M for `key`.
fn trial_usage(mock: &MockUpstream, key: &str, used: u64) {
    mock.push_rule(
        Rule::new(Reply::json(200, usage_body(used, 20_000_000)))
            .path("chat-usage")
            .bearer(key),
    );
}

/// No error string of a report carries any of the keys.
fn assert_no_secret(report: &SyncReport, keys: &[&str]) {
    for (id, e) in &report.failures {
        for k in keys {
            assert!(!e.contains(k), "secret in the error of {id}: {e}");
            assert!(!id.contains(k), "secret as an id: {id}");
        }
    }
}

#[tokio::test]
async fn trial_key_and_paid_key() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let trial = add(&p, "fk-trial-key-000001").await;
    let paid = add(&p, "fk-paid-key-0000001").await;
    // A paid subscription: no freeTrialAllocation, no trial; the usage endpoint has 50 M.
    mock.push_rule(
        Rule::new(Reply::json(200, usage_body(1_000_000, 50_000_000)))
            .path("chat-usage")
            .bearer("fk-paid-key-0000001"),
    );
    mock.push_rule(
        Rule::new(Reply::json(
            200,
            json!({"organization": {"id": "org_paid", "subscription": {
                "orbSubscription": {"status": "active"}}}}),
        ))
        .path("/api/organization")
        .bearer("fk-paid-key-0000001"),
    );
    let s = sync(&gw);
    let r = s.sync_all(&Recorder::new(Arc::clone(&p))).await;
    assert_eq!((r.total, r.synced, r.failed), (2, 2, 0), "{:?}", r.failures);

    let b = p.get(&trial).unwrap().balance.unwrap();
    assert_eq!((b.used, b.allowance), (0, 20_000_000));
    assert_eq!(b.trial_end, Some(TRIAL_END_2099));
    let b = p.get(&paid).unwrap().balance.unwrap();
    assert_eq!(
        (b.used, b.allowance, b.trial_end),
        (1_000_000, 50_000_000, None),
        "a paid key is not empty"
    );
    assert_eq!(r.totals.used, 1_000_000);
    assert_eq!(r.totals.allowance, 70_000_000);
    assert_eq!(r.totals.remaining, 69_000_000);
    assert_eq!(r.totals.keys_synced, 2);
    assert!(r.totals.last_sync.is_some_and(|t| t <= r.finished_at));
    assert_eq!(s.totals(), r.totals);
    assert_eq!(s.last_report().unwrap().finished_at, r.finished_at);

    // Factory's headers on every balance call.
    let ua = gw.running.as_ref().unwrap().app.settings.user_agent.clone();
    let calls = mock.requests_to("/api/organization");
    assert_eq!(calls.len(), 4);
    for c in &calls {
        assert_eq!(c.method, "GET");
        assert_eq!(c.header("user-agent"), Some(ua.as_str()));
        assert_eq!(c.header("accept"), Some("application/json"));
        assert_eq!(c.header("x-factory-client"), Some("cli"));
        assert!(c.bearer().is_some_and(|b| b.starts_with("fk-")));
    }
}

#[tokio::test]
async fn unauthorized_feeds_the_401_streak_and_payment_required_bans() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let k401 = "fk-sync-401-key-0001";
    let k402 = "fk-sync-402-key-0001";
    let id401 = add(&p, k401).await;
    let id402 = add(&p, k402).await;
    let ok = add(&p, "fk-sync-ok-key-00001").await;
    mock.set_bearer_status(k401, 401, json!({"error": format!("invalid key {k401}")}));
    mock.set_bearer_status(
        k402,
        402,
        json!({"error": {"message": format!("Insufficient credits for {k402}")}}),
    );
    let s = sync(&gw);
    let tester = Recorder::new(Arc::clone(&p));

    let r = s.sync_all(&tester).await;
    assert_eq!((r.total, r.synced, r.failed), (3, 1, 2));
    let errors: BTreeMap<_, _> = r.failures.iter().cloned().collect();
    assert_eq!(errors[&id401], "Factory rejected the key (401)");
    assert!(
        errors[&id402].starts_with("402 Payment Required: Insufficient credits for fk-"),
        "{}",
        errors[&id402]
    );
    assert_no_secret(&r, &[k401, k402]);
    // One 401 is below the threshold (2); the 402 bans at once.
    assert_eq!(p.get(&id401).unwrap().rec.status, KeyStatus::Active);
    let banned = p.get(&id402).unwrap().rec;
    assert_eq!(banned.status, KeyStatus::Banned);
    let reason = banned.status_reason.unwrap();
    assert!(
        reason.starts_with("402 Payment Required: Insufficient credits"),
        "{reason}"
    );
    assert!(!reason.contains(k402), "{reason}");
    assert!(p.get(&id401).unwrap().balance.is_none());
    assert!(p.get(&ok).unwrap().balance.is_some());

    // The second consecutive 401 disables the key; the banned key is still synced (and still
    // fails), and nobody is tested.
    let r = s.sync_all(&tester).await;
    assert_eq!((r.total, r.synced, r.failed), (3, 1, 2));
    assert_no_secret(&r, &[k401, k402]);
    let rec = p.get(&id401).unwrap().rec;
    assert_eq!(rec.status, KeyStatus::Disabled);
    assert!(rec.status_reason.unwrap().contains("401"));
    assert_eq!(mock.requests_to("/api/organization").len(), 12);
    assert!(tester.tested().is_empty());
}

#[tokio::test]
async fn a_sync_401_and_a_live_401_make_a_streak() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let key = "fk-sync-live-401-001";
    let id = add(&p, key).await;
    mock.set_bearer_status(key, 401, json!({"error": "unauthorized"}));
    sync(&gw).sync_all(&Recorder::new(Arc::clone(&p))).await;
    assert_eq!(p.get(&id).unwrap().rec.status, KeyStatus::Active);
    // A live request on the only key: its 401 is the second in a row.
    let (status, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(p.get(&id).unwrap().rec.status, KeyStatus::Disabled);
}

#[tokio::test]
async fn a_timeout_is_a_failure_that_changes_nothing() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let slow = "fk-sync-slow-key-001";
    let id = add(&p, slow).await;
    let ok = add(&p, "fk-sync-fast-key-001").await;
    mock.push_rule(Rule::new(Reply::hang()).path("chat-usage").bearer(slow));
    let s = sync_with(&gw, Some(Duration::from_secs(1)));
    let started = Instant::now();
    let r = s.sync_all(&Recorder::new(Arc::clone(&p))).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((r.total, r.synced, r.failed), (2, 1, 1));
    assert_eq!(r.failures[0].0, id);
    assert!(r.failures[0].1.contains("timeout"), "{}", r.failures[0].1);
    assert_no_secret(&r, &[slow]);
    let v = p.get(&id).unwrap();
    assert_eq!((v.rec.status, v.cooling), (KeyStatus::Active, false));
    assert!(v.balance.is_none());
    assert!(p.get(&ok).unwrap().balance.is_some());
}

#[tokio::test]
async fn other_failures_never_carry_the_key() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let k500 = "fk-sync-500-key-0001";
    let khtml = "fk-sync-html-key-001";
    add(&p, k500).await;
    add(&p, khtml).await;
    mock.set_bearer_status(k500, 500, json!({"error": format!("boom for {k500}")}));
    mock.push_rule(
        Rule::new(Reply::text(200, format!("<html>hello {khtml}</html>")))
            .path("/api/organization")
            .bearer(khtml),
    );
    let r = sync(&gw).sync_all(&Recorder::new(Arc::clone(&p))).await;
    assert_eq!((r.total, r.synced, r.failed), (2, 0, 2));
    assert_no_secret(&r, &[k500, khtml]);
    for (_, e) in &r.failures {
        assert!(e.len() < 120, "short reason: {e}");
    }
    for id in p.ids(&KeyFilter::default()) {
        assert_eq!(p.get(&id).unwrap().rec.status, KeyStatus::Active);
    }
}

#[tokio::test]
async fn every_key_is_synced_and_a_banned_key_with_tokens_gets_one_test() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let revived = add(&p, "fk-banned-revived-01").await;
    let empty = add(&p, "fk-banned-empty-0001").await;
    let active = add(&p, "fk-active-key-000001").await;
    let admin_off = add(&p, "fk-admin-off-key-001").await;
    for id in [&revived, &empty] {
        p.report(
            id,
            &Outcome::PaymentRequired("no credits".into()),
            EventSource::Traffic,
        );
        assert_eq!(p.get(id).unwrap().rec.status, KeyStatus::Banned);
    }
    p.toggle(&admin_off, KeyStatus::Disabled).await.unwrap();
    // The second banned key is still exhausted.
    trial_usage(&mock, "fk-banned-empty-0001", 20_000_000);

    let s = sync(&gw);
    let tester = Recorder::new(Arc::clone(&p));
    let r = s.sync_all(&tester).await;
    assert_eq!((r.total, r.synced, r.failed), (4, 4, 0), "{:?}", r.failures);
    for id in [&revived, &empty, &active, &admin_off] {
        assert!(p.get(id).unwrap().balance.is_some(), "{id} synced");
    }
    let per_bearer: BTreeMap<String, usize> =
        mock.requests_to("/api/organization")
            .iter()
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.bearer().unwrap().to_string()).or_default() += 1;
                m
            });
    assert_eq!(per_bearer.len(), 4);
    assert!(per_bearer.values().all(|n| *n == 2), "{per_bearer:?}");
    // Exactly one test, of the banned key with tokens, finished before the sync returned.
    assert_eq!(tester.tested(), vec![revived.clone()]);
    assert_eq!(p.get(&revived).unwrap().rec.status, KeyStatus::Active);
    assert_eq!(p.get(&empty).unwrap().rec.status, KeyStatus::Banned);
    assert_eq!(p.get(&admin_off).unwrap().rec.status, KeyStatus::Disabled);

    // The revived key is active now: the next run tests nobody.
    let r = s.sync_all(&tester).await;
    assert_eq!(r.synced, 4);
    assert_eq!(tester.tested(), vec![revived]);
}

#[tokio::test]
async fn batch_size_bounds_the_keys_in_flight() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).env("BATCH_SIZE", "2").start().await;
    let p = pool(&gw);
    let keys: Vec<String> = (1..=6).map(|i| format!("fk-batch-key-{i:06}")).collect();
    for k in &keys {
        add(&p, k).await;
    }
    // One slow answer serves both calls: each key is in flight for at least `delay`.
    let delay = Duration::from_millis(300);
    let both = json!({
        "organization": {"subscription": {"freeTrialAllocation": {"standardTokens": 100}}},
        "usage": {"standard": {"orgTotalTokensUsed": 1, "totalAllowance": 100}},
    });
    mock.push_rule(
        Rule::new(Reply::json(200, both).with_delay_ms(delay.as_millis() as u64))
            .path("/api/organization"),
    );
    let r = sync(&gw).sync_all(&Recorder::new(Arc::clone(&p))).await;
    assert_eq!(r.synced, 6, "{:?}", r.failures);

    // A key's first call arrives at `a`; it cannot finish before `a + delay`. So the keys whose
    // first call arrived within `delay` before another's were all in flight together.
    let calls = mock.requests_to("/api/organization");
    assert_eq!(calls.len(), 12);
    let mut first: BTreeMap<String, std::time::SystemTime> = BTreeMap::new();
    for c in &calls {
        let e = first.entry(c.bearer().unwrap().to_string()).or_insert(c.at);
        *e = (*e).min(c.at);
    }
    let window = delay - Duration::from_millis(20);
    let mut peak = 0;
    for a in first.values() {
        let together = first
            .values()
            .filter(|b| *b <= a && a.duration_since(**b).unwrap_or_default() < window)
            .count();
        peak = peak.max(together);
    }
    assert!(peak <= 2, "{peak} keys in flight with BATCH_SIZE=2");
    assert!(peak >= 1);
}

#[tokio::test]
async fn token_algorithms_use_the_last_sync_plus_tokens_since() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock)
        .config(json!({"key_pool": {"algorithm": "least-token-used"}}))
        .start()
        .await;
    let p = pool(&gw);
    let heavy = add(&p, "fk-heavy-key-000001").await;
    let light = add(&p, "fk-light-key-000001").await;
    trial_usage(&mock, "fk-heavy-key-000001", 5_000_000);
    trial_usage(&mock, "fk-light-key-000001", 1_000_000);
    let picked = |p: &KeyPool| match p.pick(&[]) {
        PoolPick::Key { id, .. } => id,
        other => panic!("{other:?}"),
    };
    // Before any sync only this gateway's tokens count: the light key looks heavier.
    p.add_tokens(&light, 10_000, 0);
    assert_eq!(picked(&p), heavy);

    let r = sync(&gw).sync_all(&Recorder::new(Arc::clone(&p))).await;
    assert_eq!(r.synced, 2);
    for _ in 0..3 {
        assert_eq!(picked(&p), light, "1 M used beats 5 M used");
    }
    let (status, _, _) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(last_bearer(&mock), "fk-light-key-000001");

    // max-remaining: 19 M left beats 15 M, until this gateway spends 10 M on the light key.
    let mut settings = p.settings();
    settings.algorithm = "max-remaining".into();
    p.set_settings(settings);
    assert_eq!(picked(&p), light);
    p.add_tokens(&light, 6_000_000, 4_000_000);
    assert_eq!(picked(&p), heavy);
    // … and least-token-used now sees 1 M + 10 M on it.
    let mut settings = p.settings();
    settings.algorithm = "least-token-used".into();
    p.set_settings(settings);
    assert_eq!(picked(&p), heavy);
}

#[tokio::test]
async fn the_balance_is_persisted() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let p = pool(&gw);
    let id = add(&p, "fk-persisted-key-001").await;
    let gone = add(&p, "fk-never-synced-0001").await;
    mock.set_bearer_status("fk-never-synced-0001", 503, json!({"error": "down"}));
    mock.push_rule(
        Rule::new(Reply::json(
            200,
            json!({"usage": {
                "standard": {"orgTotalTokensUsed": 1_234, "totalAllowance": 20_000_000},
                "premium": {"orgTotalTokensUsed": 5, "totalAllowance": 0},
            }}),
        ))
        .path("chat-usage"),
    );
    let r = sync(&gw).sync_all(&Recorder::new(Arc::clone(&p))).await;
    assert_eq!((r.synced, r.failed), (1, 1));
    let synced_at = p.get(&id).unwrap().balance.unwrap().synced_at;
    let (data, _home, _temp) = gw.stop().await;

    let (store, loaded) = Store::open(&data).unwrap();
    let ids: BTreeSet<&str> = loaded.balances.iter().map(|b| b.key_id.as_str()).collect();
    assert!(!ids.contains(gone.as_str()));
    let b = loaded
        .balances
        .iter()
        .find(|b| b.key_id == id)
        .expect("stored balance");
    assert_eq!((b.used, b.allowance), (1_234, 20_000_000));
    assert_eq!((b.premium_used, b.premium_allowance), (5, 0));
    assert_eq!(b.trial_end, Some(TRIAL_END_2099));
    assert_eq!(b.synced_at, synced_at);
    store.close().unwrap();
}
