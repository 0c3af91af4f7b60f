//! The two lanes under a stalled writer: the stall is real — another connection holds the
//! database's write lock (`BEGIN IMMEDIATE`), so the writer's transactions wait on SQLite's busy
//! timeout and are retried until the lock goes.

use std::time::{Duration, Instant};

use super::*;

/// Small and quick: capacity 50, acknowledgements after 300 ms, retries every 50 ms.
fn quick() -> StoreOptions {
    StoreOptions {
        traffic_capacity: 50,
        traffic_linger: TRAFFIC_LINGER,
        ack_timeout: Duration::from_millis(300),
        prune_timeout: Duration::from_secs(30),
        busy_timeout: Duration::from_millis(50),
    }
}

/// Another connection holding the write lock until dropped.
struct WriteLock(Connection);

fn hold_write_lock(dir: &Path) -> WriteLock {
    let c = Connection::open(dir.join(DB_FILE)).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    WriteLock(c)
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// Polls `cond` for at most 30 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Flushes, retrying while the writer catches up (each try waits at most the ack timeout).
async fn flush_eventually(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.flush().await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "flush: {e}"),
        }
    }
}

/// Makes the writer take one record and get stuck on the lock with it.
async fn stall(store: &Store, dir: &Path) -> WriteLock {
    let lock = hold_write_lock(dir);
    assert!(store.record_usage(usage(DAY1, "k", "m", "c", 200)));
    eventually("the writer takes the first record", || {
        store.queue_stats().queued == 0
    })
    .await;
    lock
}

#[tokio::test]
async fn a_stalled_writer_keeps_the_queue_bounded_times_out_acks_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_with(dir.path(), quick()).unwrap();
    let lock = stall(&store, dir.path()).await;

    // Memory stays bounded: the queue never holds more than its capacity; the rest is counted.
    let mut accepted = 1;
    for i in 0..200 {
        if store.record_usage(usage(DAY1 + i, "k", "m", "c", 200)) {
            accepted += 1;
        }
        let q = store.queue_stats();
        assert!(q.queued <= 50, "{q:?}");
    }
    store.submit(vec![StoreOp::AddUsage(
        (0..30)
            .map(|i| usage(DAY2 + i, "k", "m", "c", 200))
            .collect(),
    )]);
    store.submit(vec![StoreOp::AddEvents(vec![event("k", 1, "cooling")])]);
    let q = store.queue_stats();
    assert_eq!((q.queued, q.peak, q.capacity), (50, 50, 50), "{q:?}");
    assert_eq!(accepted, 51);
    assert_eq!(q.dropped, 150 + 30 + 1);

    // Acknowledged writes answer after the timeout, and say why.
    let started = Instant::now();
    let err = store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("did not confirm the write within 300 ms")
            && text.contains("not acknowledged"),
        "{text}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let rx = store.enqueue_acked(vec![StoreOp::PutSetting {
        name: "algorithm".into(),
        value: serde_json::json!("random"),
    }]);
    let err = rx.await.unwrap().unwrap_err();
    assert!(
        matches!(err, SqliteError::Timeout { waited_ms: 300 }),
        "{err:?}"
    );
    assert!(store.flush().await.unwrap_err().is_unavailable());
    // Reads do not wait for the writer (WAL).
    assert_eq!(store.usage_totals(DAY1).await.unwrap().0.requests, 0);

    // The lock goes: everything accepted lands, timed-out writes included, and traffic flows.
    drop(lock);
    flush_eventually(&store).await;
    assert_eq!(usage_count(dir.path()), 51);
    for i in 0..10 {
        assert!(store.record_usage(usage(DAY2 + 100 + i, "k", "m", "c", 200)));
    }
    store
        .commit(vec![StoreOp::PutGroup(group("after", 3))])
        .await
        .unwrap();
    flush_eventually(&store).await;
    assert_eq!(usage_count(dir.path()), 61);
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.keys.len(), 1, "the timed-out commit was saved later");
    assert_eq!(loaded.settings["algorithm"], serde_json::json!("random"));
    assert!(loaded.groups.iter().any(|g| g.id == "after"));
    store.close().unwrap();
}

#[tokio::test]
async fn key_states_and_counters_coalesce_per_key_and_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        ack_timeout: Duration::from_secs(30),
        ..quick()
    };
    let (store, _) = Store::open_with(dir.path(), options).unwrap();
    store
        .commit(vec![
            StoreOp::PutKey(key("a", "fk-aaaaaaaaaaaaaaaa")),
            StoreOp::PutKey(key("b", "fk-bbbbbbbbbbbbbbbb")),
        ])
        .await
        .unwrap();
    let lock = stall(&store, dir.path()).await;
    for i in 0..1000 {
        for id in ["a", "b"] {
            let mut state = key(id, "ignored-secret-000");
            state.status = KeyStatus::Banned;
            state.status_reason = Some(format!("402 number {i}"));
            state.cooldown_until = Some(i);
            store.submit(vec![
                StoreOp::PutKeyState(state),
                StoreOp::AddCounters(vec![CounterDelta {
                    key_id: id.into(),
                    requests: 1,
                    failures: 1,
                    input_tokens: 10,
                    last_used_at: Some(i),
                    ..CounterDelta::default()
                }]),
            ]);
        }
    }
    let q = store.queue_stats();
    assert_eq!((q.queued, q.coalesced_keys, q.dropped), (0, 2, 0), "{q:?}");
    drop(lock);
    flush_eventually(&store).await;
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    for id in ["a", "b"] {
        let k = find(&loaded, id);
        assert_eq!(k.status, KeyStatus::Banned);
        assert_eq!(
            k.status_reason.as_deref(),
            Some("402 number 999"),
            "latest wins"
        );
        assert_eq!(k.cooldown_until, Some(999));
        assert_eq!(
            (k.requests, k.failures, k.input_tokens),
            (1000, 1000, 10_000)
        );
        assert_eq!(k.last_used_at, Some(999));
        assert_eq!(k.secret.expose(), format!("fk-{}", id.repeat(16)));
    }
    store.close().unwrap();
}

#[tokio::test]
async fn traffic_queued_before_an_admin_change_cannot_undo_it_or_resurrect_a_deleted_key() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        ack_timeout: Duration::from_secs(30),
        ..quick()
    };
    let (store, _) = Store::open_with(dir.path(), options).unwrap();
    store
        .commit(vec![
            StoreOp::PutKey(key("gone", "fk-gggggggggggggggg")),
            StoreOp::PutKey(key("kept", "fk-kkkkkkkkkkkkkkkk")),
        ])
        .await
        .unwrap();
    let lock = stall(&store, dir.path()).await;
    // Traffic first (in memory order, as the pool queues under its lock)…
    for id in ["gone", "kept"] {
        let mut banned = key(id, "fk-ignored-ignored");
        banned.status = KeyStatus::Banned;
        banned.status_reason = Some("402".into());
        store.submit(vec![
            StoreOp::PutKeyState(banned),
            StoreOp::AddEvents(vec![event(id, 10, "banned")]),
            StoreOp::AddCounters(vec![CounterDelta {
                key_id: id.into(),
                requests: 1,
                ..CounterDelta::default()
            }]),
            StoreOp::PutBalance(balance(id, 5)),
        ]);
    }
    // …then the admin: `gone` is deleted, `kept` is enabled again.
    let mut enabled = key("kept", "fk-kkkkkkkkkkkkkkkk");
    enabled.status_reason = Some("enabled by an admin".into());
    let mut admin_event = event("kept", 20, "active");
    admin_event.source = EventSource::Admin;
    let mut deleted_event = event("gone", 20, "deleted");
    deleted_event.source = EventSource::Admin;
    let enable = store.enqueue_acked(vec![
        StoreOp::PutKey(enabled),
        StoreOp::AddEvents(vec![admin_event]),
    ]);
    let delete = store.enqueue_acked(vec![
        StoreOp::DeleteKey("gone".into()),
        StoreOp::AddEvents(vec![deleted_event]),
    ]);
    drop(lock);
    enable.await.unwrap().unwrap();
    delete.await.unwrap().unwrap();
    flush_eventually(&store).await;

    let tos = |events: Vec<KeyEvent>| -> Vec<String> { events.into_iter().map(|e| e.to).collect() };
    assert_eq!(tos(store.history("gone", 10).await.unwrap()), ["deleted"]);
    assert_eq!(
        tos(store.history("kept", 10).await.unwrap()),
        ["active", "banned"],
        "newest first by time even though the admin event was written first"
    );
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    let ids: Vec<&str> = loaded.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["kept"], "the deleted key is not brought back");
    let kept = find(&loaded, "kept");
    assert_eq!(
        kept.status,
        KeyStatus::Active,
        "the admin's newer state stands"
    );
    assert_eq!(kept.status_reason.as_deref(), Some("enabled by an admin"));
    assert_eq!(kept.requests, 1, "counters still add up");
    assert_eq!(loaded.balances, [balance("kept", 5)]);
    store.close().unwrap();
}

#[tokio::test]
async fn traffic_racing_admin_deletes_never_recreates_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("key_{i:03}")).collect();
    store
        .commit(
            ids.iter()
                .map(|id| StoreOp::PutKey(key(id, &format!("fk-secret-{id}-0123456789"))))
                .collect(),
        )
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (store, ids, stop) = (store.clone(), ids.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = &ids[usize::try_from(n).unwrap() % ids.len()];
                let mut state = key(id, "fk-ignored-ignored");
                state.cooldown_until = Some(n);
                store.submit(vec![
                    StoreOp::PutKeyState(state),
                    StoreOp::AddEvents(vec![event(id, n, "cooling")]),
                    StoreOp::AddCounters(vec![CounterDelta {
                        key_id: id.clone(),
                        requests: 1,
                        ..CounterDelta::default()
                    }]),
                    StoreOp::PutBalance(balance(id, 1)),
                ]);
                n += 1;
                if n % 16 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    for id in &ids {
        store
            .commit(vec![StoreOp::DeleteKey(id.clone())])
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    store.flush().await.unwrap();
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    assert!(
        loaded.keys.is_empty(),
        "{} keys came back",
        loaded.keys.len()
    );
    assert!(loaded.balances.is_empty());
    store.close().unwrap();
}

#[tokio::test]
async fn a_full_admin_lane_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        ack_timeout: Duration::from_secs(30),
        ..quick()
    };
    let (store, _) = Store::open_with(dir.path(), options).unwrap();
    let lock = stall(&store, dir.path()).await;
    let waiting: Vec<_> = (0..ADMIN_CAPACITY)
        .map(|i| {
            store.enqueue_acked(vec![StoreOp::PutSetting {
                name: format!("s{i}"),
                value: serde_json::json!(i),
            }])
        })
        .collect();
    let err = store
        .enqueue_acked(vec![StoreOp::ClearSettings])
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, SqliteError::QueueFull(n) if n == ADMIN_CAPACITY),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    drop(lock);
    for rx in waiting {
        rx.await.unwrap().unwrap();
    }
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.settings.len(), ADMIN_CAPACITY);
    store.close().unwrap();
}

#[tokio::test]
async fn pruning_goes_in_chunks_and_other_writes_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let old = writer::PRUNE_CHUNK * 2 + 345;
    for chunk in (0..old).collect::<Vec<_>>().chunks(2_000) {
        store
            .commit(vec![StoreOp::AddUsage(
                chunk
                    .iter()
                    .map(|i| usage(DAY1 + i64::try_from(*i).unwrap(), "k", "m", "c", 200))
                    .collect(),
            )])
            .await
            .unwrap();
    }
    store
        .commit(vec![StoreOp::AddUsage(vec![usage(
            DAY2, "k", "m", "c", 200,
        )])])
        .await
        .unwrap();
    let prune = {
        let store = store.clone();
        tokio::spawn(async move { store.prune_usage(DAY2).await })
    };
    // Admin writes and traffic go on while the deletion runs.
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    assert!(store.record_usage(usage(DAY2 + 1, "k", "m", "c", 200)));
    let deleted = prune.await.unwrap().unwrap();
    assert_eq!(deleted, u64::try_from(old).unwrap());
    store.flush().await.unwrap();
    assert_eq!(usage_count(dir.path()), 2);
    // The rollups keep everything.
    assert_eq!(
        store.usage_totals(DAY1).await.unwrap().0.requests,
        u64::try_from(old).unwrap() + 2
    );
    store.close().unwrap();
}

#[tokio::test]
async fn closing_a_stalled_store_gives_up_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_with(dir.path(), quick()).unwrap();
    let lock = stall(&store, dir.path()).await;
    store.submit(vec![StoreOp::AddEvents(vec![event("k", 1, "cooling")])]);
    let closing = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.close())
    };
    let closed = tokio::time::timeout(Duration::from_secs(30), closing).await;
    assert!(closed.is_ok(), "close returned");
    drop(lock);
    let (store, _) = reopen(dir.path());
    store.close().unwrap();
}
