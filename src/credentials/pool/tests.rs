use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};

use super::*;
use crate::store::records::LastTest;
use crate::store::sqlite::SqliteError;
use tiers::Placement;

/// A clock the test moves.
#[derive(Debug, Default)]
struct TestClock(AtomicI64);
impl TestClock {
    fn advance_s(&self, s: i64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
}
impl Clock for TestClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Records ops; acknowledges at once. `.1` counts the acknowledged batches (each one store
/// transaction).
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<StoreOp>>, std::sync::atomic::AtomicUsize);
impl Persist for Recorder {
    fn enqueue(&self, ops: Vec<StoreOp>) {
        self.0.lock().unwrap().extend(ops);
    }
    fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), PersistError>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.enqueue(ops);
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }
}

fn pool_with(settings: KeyPoolSettings) -> (KeyPool, Arc<TestClock>, Arc<Recorder>) {
    let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000_000)));
    let rec = Arc::new(Recorder::default());
    let pool = KeyPool::new(
        Vec::new(),
        Vec::new(),
        settings,
        Some(rec.clone() as Arc<dyn Persist>),
        clock.clone(),
    );
    (pool, clock, rec)
}

fn pick_id(p: &KeyPool, exclude: &[String]) -> String {
    match p.pick(exclude) {
        PoolPick::Key { id, .. } => id,
        other => panic!("expected a key, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_key_is_usable_at_once_and_round_robin_cycles() {
    let (p, _, rec) = pool_with(KeyPoolSettings::default());
    assert!(!p.is_configured());
    let a = p
        .add_key("fk-aaaaaaaaaaaa", Some("first"), None)
        .await
        .unwrap();
    assert!(p.is_configured());
    assert_eq!(pick_id(&p, &[]), a.id);
    let b = p.add_key("fk-bbbbbbbbbbbb", None, None).await.unwrap();
    let picks: Vec<String> = (0..4).map(|_| pick_id(&p, &[])).collect();
    assert_eq!(picks.iter().filter(|i| **i == a.id).count(), 2);
    assert_eq!(picks.iter().filter(|i| **i == b.id).count(), 2);
    assert_ne!(picks[0], picks[1]);
    assert_eq!(
        pick_id(&p, std::slice::from_ref(&a.id)),
        b.id,
        "excluded keys are skipped"
    );
    let ops = rec.0.lock().unwrap();
    assert!(matches!(ops[0], StoreOp::PutKey(_)));
}

#[tokio::test]
async fn validation_and_duplicates() {
    let (p, _, _) = pool_with(KeyPoolSettings::default());
    assert!(matches!(
        p.add_key("short", None, None).await,
        Err(PoolError::BadRequest(_))
    ));
    assert!(matches!(
        p.add_key("has space inside", None, None).await,
        Err(PoolError::BadRequest(_))
    ));
    assert!(matches!(
        p.add_key(&"x".repeat(513), None, None).await,
        Err(PoolError::BadRequest(_))
    ));
    p.add_key("  fk-trimmed-key  ", None, None).await.unwrap();
    assert!(matches!(
        p.add_key("fk-trimmed-key", None, None).await,
        Err(PoolError::Conflict(_))
    ));
    assert!(matches!(
        p.add_key("fk-other-key-1", None, Some("nope")).await,
        Err(PoolError::NotFound(_))
    ));
    let r = p
        .add_batch(
            &[
                "fk-batch-key-1".into(),
                "".into(),
                "bad key".into(),
                "fk-trimmed-key".into(),
                " fk-batch-key-2 ".into(),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!((r.added, r.duplicate, r.invalid), (2, 1, 2));
    assert_eq!(
        r.errors.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

#[tokio::test]
async fn tiers_fall_back_in_priority_order_or_stay_strict() {
    for auto_fallback in [true, false] {
        let (p, clock, _) = pool_with(KeyPoolSettings {
            auto_fallback,
            ..KeyPoolSettings::default()
        });
        p.create_group("free", "Free keys", 1, "").await.unwrap();
        p.create_group("paid", "Paid keys", 2, "").await.unwrap();
        let f = p
            .add_key("fk-free-key-0001", None, Some("free"))
            .await
            .unwrap();
        let g = p
            .add_key("fk-paid-key-0001", None, Some("paid"))
            .await
            .unwrap();
        for _ in 0..5 {
            assert_eq!(
                pick_id(&p, &[]),
                f.id,
                "the higher-priority tier serves first"
            );
        }
        p.report(
            &f.id,
            &Outcome::RateLimited {
                retry_after_s: Some(30),
            },
            EventSource::Traffic,
        );
        if auto_fallback {
            assert_eq!(pick_id(&p, &[]), g.id, "fallback to the next tier");
        } else {
            match p.pick(&[]) {
                PoolPick::AllCooling { retry_after_s } => assert_eq!(retry_after_s, 30),
                other => panic!("strict mode must not fall back: {other:?}"),
            }
        }
        clock.advance_s(31);
        assert_eq!(pick_id(&p, &[]), f.id);
        // A disabled free tier: strict mode moves on to the next tier holding an active key.
        p.toggle(&f.id, KeyStatus::Disabled).await.unwrap();
        assert_eq!(pick_id(&p, &[]), g.id);
    }
}

#[tokio::test]
async fn exhaustion_answers() {
    let (p, clock, _) = pool_with(KeyPoolSettings::default());
    let a = p.add_key("fk-exhaust-key-1", None, None).await.unwrap();
    let b = p.add_key("fk-exhaust-key-2", None, None).await.unwrap();
    p.report(
        &a.id,
        &Outcome::RateLimited {
            retry_after_s: Some(20),
        },
        EventSource::Traffic,
    );
    p.report(
        &b.id,
        &Outcome::RateLimited {
            retry_after_s: Some(5),
        },
        EventSource::Traffic,
    );
    match p.pick(&[]) {
        PoolPick::AllCooling { retry_after_s } => assert_eq!(retry_after_s, 5, "the soonest"),
        other => panic!("{other:?}"),
    }
    clock.advance_s(5);
    assert_eq!(pick_id(&p, &[]), b.id);
    p.report(
        &a.id,
        &Outcome::PaymentRequired("no credits".into()),
        EventSource::Traffic,
    );
    p.toggle(&b.id, KeyStatus::Disabled).await.unwrap();
    assert!(matches!(p.pick(&[]), PoolPick::NoActiveKey));
    assert!(p.is_configured());
}

#[tokio::test]
async fn state_changes_are_persisted_with_history() {
    let (p, _, rec) = pool_with(KeyPoolSettings::default());
    let a = p.add_key("fk-persist-key-1", None, None).await.unwrap();
    rec.0.lock().unwrap().clear();
    p.report(
        &a.id,
        &Outcome::PaymentRequired("No credits".into()),
        EventSource::Traffic,
    );
    let ops = rec.0.lock().unwrap().clone();
    assert!(matches!(&ops[0], StoreOp::PutKeyState(r) if r.status == KeyStatus::Banned));
    assert!(
        matches!(&ops[1], StoreOp::AddEvents(e) if e[0].to == "banned" && e[0].source == EventSource::Traffic)
    );
    // Counters are written behind.
    p.flush_counters();
    let ops = rec.0.lock().unwrap().clone();
    match ops.last() {
        Some(StoreOp::AddCounters(d)) => assert_eq!((d[0].requests, d[0].failures), (1, 1)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn admin_disabled_keys_stay_disabled_and_tests_restore_auto_disabled_ones() {
    let (p, _, _) = pool_with(KeyPoolSettings::default());
    let a = p.add_key("fk-admin-key-01", None, None).await.unwrap();
    p.toggle(&a.id, KeyStatus::Disabled).await.unwrap();
    let t = LastTest {
        at: 0,
        result: crate::store::records::TestResult::Success,
        status: 200,
    };
    let r = p.record_test(&a.id, &Outcome::Success, t).await.unwrap();
    assert_eq!(
        r.status,
        KeyStatus::Disabled,
        "admin-disabled keys are never re-enabled automatically"
    );
    let b = p.add_key("fk-auto-key-001", None, None).await.unwrap();
    p.report(
        &b.id,
        &Outcome::PaymentRequired(String::new()),
        EventSource::Traffic,
    );
    let r = p.record_test(&b.id, &Outcome::Success, t).await.unwrap();
    assert_eq!(r.status, KeyStatus::Active);
    assert_eq!(pick_id(&p, &[]), b.id);
}

#[tokio::test]
async fn groups() {
    let (p, _, _) = pool_with(KeyPoolSettings::default());
    assert!(matches!(
        p.create_group("Bad Id", "x", 1, "").await,
        Err(PoolError::BadRequest(_))
    ));
    p.create_group("tier_1", "T1", 1, "d").await.unwrap();
    assert!(matches!(
        p.create_group("tier_1", "again", 1, "").await,
        Err(PoolError::Conflict(_))
    ));
    let k = p
        .add_key("fk-group-key-01", None, Some("tier_1"))
        .await
        .unwrap();
    assert!(matches!(
        p.delete_group("default").await,
        Err(PoolError::BadRequest(_))
    ));
    let (_, moved) = p.delete_group("tier_1").await.unwrap();
    assert_eq!(moved, 1);
    assert_eq!(p.get(&k.id).unwrap().rec.pool_group, "default");
    assert!(matches!(
        p.move_key(&k.id, "ghost").await,
        Err(PoolError::NotFound(_))
    ));
}

#[tokio::test]
async fn every_algorithm_serves_and_spreads() {
    for alg in crate::config::ALGORITHMS {
        let (p, _, _) = pool_with(KeyPoolSettings {
            algorithm: alg.to_string(),
            ..KeyPoolSettings::default()
        });
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(
                p.add_key(&format!("fk-alg-key-{i:04}"), None, None)
                    .await
                    .unwrap()
                    .id,
            );
        }
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let id = pick_id(&p, &[]);
            p.report(&id, &Outcome::Success, EventSource::Traffic);
            p.add_tokens(&id, 100, 10);
            *counts.entry(id).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4, "{alg}: every key served: {counts:?}");
        assert!(
            counts.values().all(|c| *c >= 50),
            "{alg}: load is spread: {counts:?}"
        );
    }
}

#[tokio::test]
async fn weighted_score_prefers_reliable_keys() {
    let (p, _, _) = pool_with(KeyPoolSettings {
        algorithm: "weighted-score".into(),
        failure_threshold: 1000,
        ..KeyPoolSettings::default()
    });
    let good = p.add_key("fk-good-key-0001", None, None).await.unwrap().id;
    let bad = p.add_key("fk-flaky-key-001", None, None).await.unwrap().id;
    for _ in 0..100 {
        p.report(&good, &Outcome::Success, EventSource::Traffic);
        p.report(&bad, &Outcome::ServerError(500), EventSource::Traffic);
    }
    let mut good_n = 0;
    for _ in 0..1000 {
        if pick_id(&p, &[]) == good {
            good_n += 1;
        }
    }
    assert!(good_n > 950, "{good_n}");
}

#[tokio::test]
async fn least_used_counts_the_last_24_hours() {
    let (p, clock, _) = pool_with(KeyPoolSettings {
        algorithm: "least-used".into(),
        ..KeyPoolSettings::default()
    });
    let a = p.add_key("fk-least-key-01", None, None).await.unwrap().id;
    for _ in 0..50 {
        assert_eq!(pick_id(&p, &[]), a);
    }
    let b = p.add_key("fk-least-key-02", None, None).await.unwrap().id;
    for _ in 0..50 {
        assert_eq!(pick_id(&p, &[]), b, "b catches up first");
    }
    // A day later the old counts no longer matter: both are even again.
    clock.advance_s(25 * 3600);
    let mut n = HashMap::new();
    for _ in 0..100 {
        *n.entry(pick_id(&p, &[])).or_insert(0) += 1;
    }
    assert_eq!(n.get(&a), Some(&50));
}

#[tokio::test]
async fn the_algorithm_changes_at_once() {
    let (p, _, _) = pool_with(KeyPoolSettings::default());
    let a = p.add_key("fk-switch-key-1", None, None).await.unwrap().id;
    let b = p.add_key("fk-switch-key-2", None, None).await.unwrap().id;
    p.add_tokens(&a, 1_000_000, 0);
    p.set_settings(KeyPoolSettings {
        algorithm: "least-token-used".into(),
        ..KeyPoolSettings::default()
    });
    for _ in 0..10 {
        assert_eq!(pick_id(&p, &[]), b);
    }
}

// ----- the tiers under stress: keys leave and return, counts stay in step -----

fn placement(p: &KeyPool, id: &str) -> Placement {
    p.lock().slot(id).unwrap().placed
}

/// Checks that the tiers, queues, placements and counts agree.
fn check(p: &KeyPool) {
    let now = p.now();
    p.lock().check(now);
}

fn indexed(p: &KeyPool) -> usize {
    p.lock().tiers.iter().map(|t| t.index.len()).sum()
}

fn rebuilds(p: &KeyPool) -> u64 {
    p.lock().rebuilds
}

fn rate_limited(s: u64) -> Outcome {
    Outcome::RateLimited {
        retry_after_s: Some(s),
    }
}

async fn add_keys(p: &KeyPool, n: usize, tag: &str, group: Option<&str>) -> Vec<String> {
    let entries: Vec<String> = (0..n).map(|i| format!("fk-{tag}-key-{i:04}")).collect();
    p.add_batch(&entries, group).await.unwrap().ids
}

#[tokio::test]
async fn cooling_keys_leave_the_index_and_return_on_expiry() {
    for alg in crate::config::ALGORITHMS {
        let (p, clock, _) = pool_with(KeyPoolSettings {
            algorithm: alg.to_string(),
            ..KeyPoolSettings::default()
        });
        let ids = add_keys(&p, 10, "cool", None).await;
        for (n, id) in ids[..7].iter().enumerate() {
            p.report(id, &rate_limited(10 + n as u64), EventSource::Traffic);
        }
        check(&p);
        assert_eq!(indexed(&p), 3, "{alg}: cooling keys left the index");
        for id in &ids[..7] {
            assert!(
                matches!(placement(&p, id), Placement::Waiting { cooling: true, .. }),
                "{alg}"
            );
        }
        for _ in 0..60 {
            assert!(ids[7..].contains(&pick_id(&p, &[])), "{alg}");
        }
        // 12 s later the keys told to wait 10, 11 and 12 s are back: a pick wakes them.
        clock.advance_s(12);
        pick_id(&p, &[]);
        check(&p);
        assert_eq!(indexed(&p), 6, "{alg}");
        assert!(matches!(placement(&p, &ids[2]), Placement::Ready { .. }));
        assert!(matches!(placement(&p, &ids[3]), Placement::Waiting { .. }));
        // After the last cooldown every key serves again.
        clock.advance_s(5);
        let served: HashSet<String> = (0..400).map(|_| pick_id(&p, &[])).collect();
        assert_eq!(served.len(), 10, "{alg}: {served:?}");
        check(&p);
        assert_eq!(p.lock().cooling_waiting, 0);
    }
}

#[tokio::test]
async fn many_cooldowns_ending_at_once_are_woken_a_bounded_number_per_pick() {
    let (p, clock, _) = pool_with(KeyPoolSettings::default());
    let ids = add_keys(&p, 300, "wake", None).await;
    for id in &ids {
        p.report(id, &rate_limited(10), EventSource::Traffic);
    }
    assert_eq!(indexed(&p), 0);
    clock.advance_s(11);
    let first = pick_id(&p, &[]);
    assert_eq!(
        indexed(&p),
        tiers::WAKE_BUDGET,
        "one pick wakes a bounded number"
    );
    check(&p);
    // Later picks wake more: a request that already tried every awake key gets a new one.
    let awake = |p: &KeyPool| -> Vec<String> {
        let inner = p.lock();
        ids.iter()
            .filter(|id| matches!(inner.slot(id).unwrap().placed, Placement::Ready { .. }))
            .cloned()
            .collect()
    };
    let tried = awake(&p);
    assert!(tried.contains(&first));
    assert!(!tried.contains(&pick_id(&p, &tried)));
    assert_eq!(indexed(&p), 2 * tiers::WAKE_BUDGET);
    // A request that tried every key but the last one due: the pick wakes the whole tier
    // rather than answer 429.
    let last = ids.last().unwrap();
    assert!(!awake(&p).contains(last));
    let all_but_last = &ids[..ids.len() - 1];
    assert_eq!(&pick_id(&p, all_but_last), last);
    assert_eq!(indexed(&p), 300);
    check(&p);
}

#[tokio::test]
async fn least_used_re_ranks_a_few_keys_per_pick_when_an_hour_ends() {
    let (p, clock, _) = pool_with(KeyPoolSettings {
        algorithm: "least-used".into(),
        ..KeyPoolSettings::default()
    });
    let busy = add_keys(&p, 20, "busy", None).await;
    for _ in 0..400 {
        pick_id(&p, &[]);
    }
    let idle = add_keys(&p, 20, "idle", None).await;
    let built = rebuilds(&p);
    // A day later every count is zero again; the index learns it a few keys per pick.
    clock.advance_s(25 * 3600);
    for _ in 0..5 {
        pick_id(&p, &[]);
    }
    assert!(p.lock().rerank.is_empty(), "40 keys re-ranked by 5 picks");
    let served: HashSet<String> = (0..80).map(|_| pick_id(&p, &[])).collect();
    assert!(
        busy.iter().chain(&idle).all(|id| served.contains(id)),
        "old counts no longer hold the busy keys back"
    );
    assert_eq!(rebuilds(&p), built, "no rebuild when the hour changed");
    check(&p);
}

#[tokio::test]
async fn a_probing_key_waits_for_its_answer() {
    let (p, clock, _) = pool_with(KeyPoolSettings::default());
    let ids = add_keys(&p, 2, "probe", None).await;
    let (a, b) = (&ids[0], &ids[1]);
    for _ in 0..5 {
        p.report(a, &Outcome::ServerError(500), EventSource::Traffic);
    }
    assert!(matches!(
        placement(&p, a),
        Placement::Waiting { cooling: true, .. }
    ));
    clock.advance_s(31);
    // The cooldown is over: one pick of `a` is its probe; then `a` waits for the answer.
    let picks: Vec<String> = (0..6).map(|_| pick_id(&p, &[])).collect();
    assert_eq!(picks.iter().filter(|i| *i == a).count(), 1, "{picks:?}");
    let probe_ends = p.now() + health::PROBE_TIMEOUT_MS;
    assert!(matches!(
        placement(&p, a),
        Placement::Waiting { cooling: false, until, .. } if until <= probe_ends
    ));
    check(&p);
    // The probe succeeds: back in the index.
    p.report(a, &Outcome::Success, EventSource::Traffic);
    assert!(matches!(placement(&p, a), Placement::Ready { .. }));
    check(&p);
    // A failed probe cools the key again at once.
    for _ in 0..5 {
        p.report(a, &Outcome::Timeout, EventSource::Traffic);
    }
    clock.advance_s(31);
    while pick_id(&p, &[]) != *a {}
    p.report(a, &Outcome::ServerError(502), EventSource::Traffic);
    assert!(matches!(
        placement(&p, a),
        Placement::Waiting { cooling: true, .. }
    ));
    check(&p);
    // A probe nobody answers is given up after a while: the key serves again.
    clock.advance_s(31);
    while pick_id(&p, &[]) != *a {}
    assert!(matches!(placement(&p, a), Placement::Waiting { .. }));
    clock.advance_s(health::PROBE_TIMEOUT_MS / 1000 + 1);
    let served: HashSet<String> = (0..4).map(|_| pick_id(&p, &[])).collect();
    assert!(served.contains(a) && served.contains(b), "{served:?}");
    check(&p);
}

#[tokio::test]
async fn all_cooling_answers_the_soonest_retry_after_from_the_queue_heads() {
    for auto_fallback in [true, false] {
        let (p, clock, _) = pool_with(KeyPoolSettings {
            auto_fallback,
            ..KeyPoolSettings::default()
        });
        p.create_group("top", "Top", 1, "").await.unwrap();
        p.create_group("low", "Low", 2, "").await.unwrap();
        let top = add_keys(&p, 3, "top", Some("top")).await;
        let low = add_keys(&p, 3, "low", Some("low")).await;
        for (id, s) in top.iter().zip([40, 30, 50]) {
            p.report(id, &rate_limited(s), EventSource::Traffic);
        }
        for (id, s) in low.iter().zip([20, 25, 60]) {
            p.report(id, &rate_limited(s), EventSource::Traffic);
        }
        check(&p);
        let expect = if auto_fallback { 20 } else { 30 };
        match p.pick(&[]) {
            PoolPick::AllCooling { retry_after_s } => {
                assert_eq!(retry_after_s, expect, "auto_fallback {auto_fallback}")
            }
            other => panic!("{other:?}"),
        }
        clock.advance_s(20);
        if auto_fallback {
            assert_eq!(pick_id(&p, &[]), low[0], "the lower tier serves meanwhile");
        } else {
            match p.pick(&[]) {
                PoolPick::AllCooling { retry_after_s } => assert_eq!(retry_after_s, 10),
                other => panic!("strict tiers never fall back: {other:?}"),
            }
        }
        clock.advance_s(10);
        assert_eq!(pick_id(&p, &[]), top[1], "the top tier serves again first");
        check(&p);
    }
}

#[tokio::test]
async fn bans_disables_and_admin_changes_move_keys_without_a_rebuild() {
    let (p, clock, _) = pool_with(KeyPoolSettings::default());
    p.create_group("other", "Other", 5, "").await.unwrap();
    let ids = add_keys(&p, 20, "incr", None).await;
    let built = rebuilds(&p);
    check(&p);
    p.report(
        &ids[0],
        &Outcome::PaymentRequired("no credits".into()),
        EventSource::Traffic,
    );
    assert_eq!(placement(&p, &ids[0]), Placement::Out);
    for _ in 0..2 {
        p.report(&ids[1], &Outcome::Unauthorized, EventSource::Traffic);
    }
    assert_eq!(placement(&p, &ids[1]), Placement::Out);
    check(&p);
    p.toggle(&ids[2], KeyStatus::Disabled).await.unwrap();
    assert_eq!(placement(&p, &ids[2]), Placement::Out);
    p.toggle(&ids[2], KeyStatus::Active).await.unwrap();
    assert!(matches!(placement(&p, &ids[2]), Placement::Ready { .. }));
    p.move_key(&ids[3], "other").await.unwrap();
    assert_eq!(
        placement(&p, &ids[3]),
        Placement::Ready { priority: 5 },
        "moved to its new tier"
    );
    p.report(&ids[4], &rate_limited(60), EventSource::Traffic);
    p.reset(&ids[4]).await.unwrap();
    assert!(matches!(placement(&p, &ids[4]), Placement::Ready { .. }));
    p.delete(&ids[5]).await.unwrap();
    p.update(&ids[6], Some("fk-incr-key-replaced"), None)
        .await
        .unwrap();
    let t = LastTest {
        at: 0,
        result: crate::store::records::TestResult::Success,
        status: 200,
    };
    p.record_test(&ids[0], &Outcome::Success, t).await.unwrap();
    assert!(matches!(placement(&p, &ids[0]), Placement::Ready { .. }));
    p.bulk(&ids[7..12], BulkAction::Disable, None)
        .await
        .unwrap();
    p.bulk(&ids[12..14], BulkAction::Move, Some("other"))
        .await
        .unwrap();
    clock.advance_s(1);
    check(&p);
    assert_eq!(rebuilds(&p), built, "no key change rebuilt the tiers");
    // 20 keys − 1 deleted − 1 disabled by 401s − 5 disabled in bulk = 13 ready, 3 in `other`.
    assert_eq!(indexed(&p), 13);
    assert_eq!(
        p.lock()
            .tiers
            .iter()
            .map(|t| (t.priority, t.index.len()))
            .collect::<Vec<_>>(),
        vec![(5, 3), (1000, 10)]
    );
    let (counts, _) = p.stats();
    let inner = p.lock();
    assert_eq!(
        (
            inner.status_counts.active,
            inner.status_counts.disabled,
            inner.status_counts.banned
        ),
        (counts.active, counts.disabled, counts.banned)
    );
}

#[tokio::test]
async fn bulk_operations_take_one_commit() {
    let (p, _, rec) = pool_with(KeyPoolSettings::default());
    p.create_group("moved", "Moved", 7, "").await.unwrap();
    let batches = || rec.1.load(Ordering::SeqCst);
    let ops = || rec.0.lock().unwrap().len();
    let (b0, o0) = (batches(), ops());
    let ids = add_keys(&p, 100, "bulk", None).await;
    assert_eq!(ids.len(), 100);
    assert_eq!(batches() - b0, 1, "a batch add is one commit");
    assert_eq!(ops() - o0, 101, "100 keys and one list of events");
    let built = rebuilds(&p);
    let mut with_unknown: Vec<String> = ids[..60].to_vec();
    with_unknown.push("key_missing".into());
    for (action, group, count) in [
        (BulkAction::Disable, None, 60),
        (BulkAction::Enable, None, 60),
        (BulkAction::Reset, None, 60),
        (BulkAction::Move, Some("moved"), 60),
        (BulkAction::Disable, None, 60),
    ] {
        let (b, o) = (batches(), ops());
        let (done, errors) = p.bulk(&with_unknown, action, group).await.unwrap();
        assert_eq!(done, count, "{action:?}");
        assert_eq!(errors.len(), 1, "{action:?}: {errors:?}");
        assert_eq!(errors[0].0, "key_missing");
        assert_eq!(batches() - b, 1, "{action:?} is one commit");
        assert!(ops() - o >= 60, "{action:?}: every key's change is in it");
        check(&p);
    }
    let b = batches();
    assert_eq!(p.delete_status(KeyStatus::Disabled).await.unwrap(), 60);
    assert_eq!(batches() - b, 1, "deleting by status is one commit");
    assert_eq!(
        rec.0
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, StoreOp::DeleteKey(_)))
            .count(),
        60
    );
    let b = batches();
    assert_eq!(p.delete_status(KeyStatus::Banned).await.unwrap(), 0);
    assert_eq!(batches(), b, "nothing to delete, nothing to commit");
    let (done, _) = p.bulk(&ids[60..], BulkAction::Delete, None).await.unwrap();
    assert_eq!(done, 40);
    assert!(!p.is_configured());
    assert_eq!(rebuilds(&p), built);
    check(&p);
}

/// A store that refuses every acknowledged write.
#[derive(Debug, Default)]
struct Refusing;
impl Persist for Refusing {
    fn enqueue(&self, _: Vec<StoreOp>) {}
    fn enqueue_acked(&self, _: Vec<StoreOp>) -> oneshot::Receiver<Result<(), PersistError>> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(PersistError::Store(SqliteError::Closed)));
        rx
    }
}

#[tokio::test]
async fn a_bulk_action_the_store_refuses_fails_as_a_whole() {
    let p = KeyPool::new(
        Vec::new(),
        Vec::new(),
        KeyPoolSettings::default(),
        Some(Arc::new(Refusing) as Arc<dyn Persist>),
        Arc::new(TestClock(AtomicI64::new(1_800_000_000_000))),
    );
    assert!(matches!(
        p.add_batch(&["fk-refused-key-01".into()], None).await,
        Err(PoolError::Persist(_))
    ));
    let ids = p.ids(&KeyFilter::default());
    assert!(matches!(
        p.bulk(&ids, BulkAction::Disable, None).await,
        Err(PoolError::Persist(_))
    ));
    // Memory keeps the change (as for a single key), and stays consistent.
    assert_eq!(p.get(&ids[0]).unwrap().rec.status, KeyStatus::Disabled);
    check(&p);
}

/// What the old full-scan pick allowed, computed from scratch: the keys a pick may return, or
/// the answer when none may serve.
#[derive(Debug)]
enum Expect {
    AnyOf(HashSet<usize>),
    Cooling(u64),
    NoActive,
}

fn oracle(p: &KeyPool, exclude: &[String]) -> Expect {
    let now = p.now();
    let inner = p.lock();
    let excluded: HashSet<usize> = exclude
        .iter()
        .filter_map(|id| inner.by_id.get(id).copied())
        .collect();
    let mut tiers: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, s) in inner.slots.iter().enumerate() {
        if let Some(s) = s
            && s.rec.status == KeyStatus::Active
        {
            tiers
                .entry(priority_of(&inner.groups, &s.rec.pool_group))
                .or_default()
                .push(i);
        }
    }
    if tiers.is_empty() {
        return Expect::NoActive;
    }
    let eligible = |i: &usize| {
        let s = inner.slots[*i].as_ref().unwrap();
        !excluded.contains(i) && s.health.eligible(&s.rec, now)
    };
    let mut candidates = Vec::new();
    for members in tiers.values() {
        let ok: HashSet<usize> = members.iter().copied().filter(eligible).collect();
        if !ok.is_empty() {
            return Expect::AnyOf(ok);
        }
        candidates.extend(members.iter().copied());
        if !inner.settings.auto_fallback {
            break;
        }
    }
    let soonest = candidates
        .iter()
        .filter_map(|i| {
            let s = inner.slots[*i].as_ref().unwrap();
            let cool = s.rec.cooldown_until.filter(|t| *t > now);
            cool.into_iter()
                .chain(s.health.probe_blocked_until(now))
                .min()
        })
        .min();
    Expect::Cooling(soonest.map_or(1, |t| ((t - now + 999) / 1000).max(1) as u64))
}

/// Random traffic, time and admin changes, every algorithm and both tier modes: after every
/// step the tiers agree with the table, and every pick is one the full scan would allow.
#[tokio::test]
async fn random_traffic_keeps_the_tiers_consistent_and_picks_right() {
    for alg in crate::config::ALGORITHMS {
        for auto_fallback in [true, false] {
            let mut rng = fastrand::Rng::with_seed(42);
            let (p, clock, _) = pool_with(KeyPoolSettings {
                algorithm: alg.to_string(),
                auto_fallback,
                failure_threshold: 2,
                ..KeyPoolSettings::default()
            });
            p.create_group("a", "A", 1, "").await.unwrap();
            p.create_group("b", "B", 2, "").await.unwrap();
            let groups = ["a", "b", "default"];
            let mut ids = Vec::new();
            for g in groups {
                ids.extend(add_keys(&p, 3, g, Some(g)).await);
            }
            let mut seen = [0u32; 3];
            for step in 0..1_500 {
                let id = ids[rng.usize(..ids.len())].clone();
                match rng.u8(..12) {
                    0..=4 => {
                        let exclude: Vec<String> = if rng.u8(..4) == 0 {
                            (0..rng.usize(1..4))
                                .map(|_| ids[rng.usize(..ids.len())].clone())
                                .collect()
                        } else {
                            Vec::new()
                        };
                        let expect = oracle(&p, &exclude);
                        let got = p.pick(&exclude);
                        let ok = match (&expect, &got) {
                            (Expect::AnyOf(set), PoolPick::Key { id, .. }) => {
                                set.contains(&p.lock().by_id[id])
                            }
                            (Expect::Cooling(a), PoolPick::AllCooling { retry_after_s }) => {
                                a == retry_after_s
                            }
                            (Expect::NoActive, PoolPick::NoActiveKey) => true,
                            _ => false,
                        };
                        assert!(ok, "{alg} step {step}: expected {expect:?}, got {got:?}");
                        seen[match got {
                            PoolPick::Key { .. } => 0,
                            PoolPick::AllCooling { .. } => 1,
                            PoolPick::NoActiveKey => 2,
                        }] += 1;
                        if let PoolPick::Key { id, .. } = got {
                            let outcome = match rng.u8(..12) {
                                0 | 1 => rate_limited(rng.u64(1..60)),
                                2 | 3 => Outcome::ServerError(500),
                                4 => Outcome::Timeout,
                                5 => Outcome::Unauthorized,
                                6 if rng.bool() => Outcome::PaymentRequired(String::new()),
                                7 => Outcome::Cancelled,
                                8 => Outcome::Forbidden,
                                _ => Outcome::Success,
                            };
                            // Some answers come back later, after other picks.
                            if rng.u8(..4) != 0 {
                                p.report(&id, &outcome, EventSource::Traffic);
                            }
                        }
                    }
                    5 | 6 => {
                        clock.0.fetch_add(rng.i64(0..5_000), Ordering::SeqCst);
                    }
                    7 => {
                        let s = if rng.bool() {
                            KeyStatus::Active
                        } else {
                            KeyStatus::Disabled
                        };
                        let _ = p.toggle(&id, s).await;
                    }
                    8 => {
                        let _ = p.reset(&id).await;
                    }
                    9 => {
                        let _ = p.move_key(&id, groups[rng.usize(..3)]).await;
                    }
                    10 => {
                        let t = LastTest {
                            at: 0,
                            result: crate::store::records::TestResult::Success,
                            status: 200,
                        };
                        let _ = p.record_test(&id, &Outcome::Success, t).await;
                    }
                    _ => p.add_tokens(&id, rng.u64(..100_000), rng.u64(..10_000)),
                }
                check(&p);
            }
            assert!(
                seen[0] > 100 && seen[1] > 10,
                "{alg}: keys served and pools exhausted: {seen:?}"
            );
        }
    }
}

#[tokio::test]
async fn two_flips_at_once_take_a_key_through_both_states() {
    let (p, _, _) = pool_with(KeyPoolSettings::default());
    let p = Arc::new(p);
    let k = p.add_key("fk-flipflipflip", None, None).await.unwrap();
    for _ in 0..50 {
        let (a, b) = tokio::join!(
            {
                let p = Arc::clone(&p);
                let id = k.id.clone();
                async move { p.flip(&id).await.unwrap().status }
            },
            {
                let p = Arc::clone(&p);
                let id = k.id.clone();
                async move { p.flip(&id).await.unwrap().status }
            }
        );
        let mut got = [a, b];
        got.sort_by_key(|s| s.as_str());
        assert_eq!(got, [KeyStatus::Active, KeyStatus::Disabled]);
        assert_eq!(p.get(&k.id).unwrap().rec.status, KeyStatus::Active);
    }
    assert!(matches!(
        p.flip("key_nope").await,
        Err(PoolError::NotFound(_))
    ));
}
