use std::sync::atomic::{AtomicI64, Ordering};

use super::*;
use crate::store::sqlite::SqliteError;

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

/// Records ops; acknowledges at once.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<StoreOp>>);
impl Persist for Recorder {
    fn enqueue(&self, ops: Vec<StoreOp>) {
        self.0.lock().unwrap().extend(ops);
    }
    fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), SqliteError>> {
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
