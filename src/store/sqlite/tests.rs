use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::secret::Secret;
use crate::store::records::{
    CounterDelta, DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, DisabledBy, EventSource, KeyStatus,
    LastTest, TestResult,
};

const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/node/key_pool.json");

fn key(id: &str, secret: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        secret: Secret::new(secret),
        status: KeyStatus::Active,
        status_reason: None,
        status_changed_at: None,
        disabled_by: None,
        pool_group: DEFAULT_GROUP.into(),
        notes: String::new(),
        created_at: 1_000,
        last_used_at: None,
        cooldown_until: None,
        requests: 0,
        successes: 0,
        failures: 0,
        input_tokens: 0,
        output_tokens: 0,
        last_test: None,
    }
}

fn full_key() -> KeyRecord {
    KeyRecord {
        id: "key_full".into(),
        secret: Secret::new("fk-full-record-secret-0123456789"),
        status: KeyStatus::Disabled,
        status_reason: Some("three 401s in a row".into()),
        status_changed_at: Some(5_000),
        disabled_by: Some(DisabledBy::Admin),
        pool_group: "main".into(),
        notes: "a note with ünïcode".into(),
        created_at: 1_700_000_000_000,
        last_used_at: Some(1_700_000_100_000),
        cooldown_until: Some(1_700_000_200_000),
        requests: 10,
        successes: 7,
        failures: 3,
        input_tokens: 12_345,
        output_tokens: 678,
        last_test: Some(LastTest {
            at: 1_700_000_050_000,
            result: TestResult::Inconclusive,
            status: 503,
        }),
    }
}

fn group(id: &str, priority: i64) -> PoolGroup {
    PoolGroup {
        id: id.into(),
        name: format!("Group {id}"),
        priority,
        description: format!("about {id}"),
        created_at: 2_000,
    }
}

fn event(key_id: &str, at: Millis, to: &str) -> KeyEvent {
    KeyEvent {
        key_id: key_id.into(),
        at,
        from: Some("active".into()),
        to: to.into(),
        reason: format!("reason at {at}"),
        source: EventSource::Traffic,
    }
}

/// Records compare through Debug (secrets masked) plus the exposed secret.
fn same(a: &KeyRecord, b: &KeyRecord) -> bool {
    format!("{a:?}") == format!("{b:?}") && a.secret.expose() == b.secret.expose()
}

fn find<'a>(loaded: &'a Loaded, id: &str) -> &'a KeyRecord {
    loaded
        .keys
        .iter()
        .find(|k| k.id == id)
        .unwrap_or_else(|| panic!("no key {id}"))
}

fn reopen(dir: &Path) -> (Store, Loaded) {
    Store::open(dir).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn fresh_database_has_only_the_default_group() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert!(loaded.keys.is_empty());
    assert!(loaded.settings.is_empty());
    assert!(loaded.import.is_none());
    assert_eq!(loaded.groups.len(), 1);
    assert_eq!(loaded.groups[0].id, DEFAULT_GROUP);
    assert_eq!(loaded.groups[0].priority, DEFAULT_GROUP_PRIORITY);
    assert!(!format!("{store:?}").is_empty());
    store.close().unwrap();
}

#[tokio::test]
async fn every_op_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![
            StoreOp::PutGroup(group("main", 1)),
            StoreOp::PutGroup(group("spare", 5)),
            StoreOp::PutKey(full_key()),
            StoreOp::PutKey(key("key_b", "fk-bbbbbbbbbbbbbbbb")),
            StoreOp::PutKey(key("key_c", "fk-cccccccccccccccc")),
            StoreOp::AddEvents(vec![event("key_full", 10, "disabled")]),
            StoreOp::PutSetting {
                name: "algorithm".into(),
                value: serde_json::json!("least-used"),
            },
            StoreOp::PutSetting {
                name: "max_attempts".into(),
                value: serde_json::json!(4),
            },
        ])
        .await
        .unwrap();
    // Upserts: the group changes, the key changes in place (order kept), a setting changes.
    let mut spare = group("spare", 7);
    spare.name = "Spare".into();
    let mut b = key("key_b", "fk-bbbbbbbbbbbbbbbb-rotated");
    b.notes = "rotated".into();
    b.requests = 3;
    store
        .commit(vec![
            StoreOp::PutGroup(spare.clone()),
            StoreOp::PutKey(b.clone()),
            StoreOp::DeleteKey("key_c".into()),
            StoreOp::PutSetting {
                name: "max_attempts".into(),
                value: serde_json::json!({"nested": [1, 2]}),
            },
        ])
        .await
        .unwrap();
    store.close().unwrap();

    let (store, loaded) = reopen(dir.path());
    let ids: Vec<&str> = loaded.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["key_full", "key_b"]);
    assert!(same(find(&loaded, "key_full"), &full_key()));
    assert!(same(find(&loaded, "key_b"), &b));
    let groups: Vec<(&str, i64)> = loaded
        .groups
        .iter()
        .map(|g| (g.id.as_str(), g.priority))
        .collect();
    assert_eq!(groups, [("main", 1), ("spare", 7), (DEFAULT_GROUP, 1000)]);
    assert_eq!(loaded.groups[1], spare);
    assert_eq!(
        loaded.settings["algorithm"],
        serde_json::json!("least-used")
    );
    assert_eq!(
        loaded.settings["max_attempts"],
        serde_json::json!({"nested": [1, 2]})
    );
    assert_eq!(
        store.history("key_full", 10).await.unwrap(),
        [event("key_full", 10, "disabled")]
    );

    store.commit(vec![StoreOp::ClearSettings]).await.unwrap();
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    assert!(loaded.settings.is_empty());
    store.close().unwrap();
}

#[tokio::test]
async fn counters_add_up_across_batches_and_last_used_is_the_max() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    let delta = |at: Option<Millis>| CounterDelta {
        key_id: "k".into(),
        requests: 2,
        successes: 1,
        failures: 1,
        input_tokens: 100,
        output_tokens: 10,
        last_used_at: at,
    };
    store.submit(vec![StoreOp::AddCounters(vec![delta(Some(500))])]);
    store.submit(vec![StoreOp::AddCounters(vec![
        delta(Some(300)),
        delta(None),
    ])]);
    store.submit(vec![StoreOp::AddCounters(vec![CounterDelta {
        key_id: "gone".into(),
        requests: 1,
        ..CounterDelta::default()
    }])]);
    store.flush().await.unwrap();
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    let k = find(&loaded, "k");
    assert_eq!(
        (
            k.requests,
            k.successes,
            k.failures,
            k.input_tokens,
            k.output_tokens
        ),
        (6, 3, 3, 300, 30)
    );
    assert_eq!(k.last_used_at, Some(500));
    store.close().unwrap();
}

#[tokio::test]
async fn put_key_state_leaves_counters_and_other_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let mut k = key("k", "fk-kkkkkkkkkkkkkkkk");
    k.requests = 9;
    k.notes = "keep me".into();
    store
        .commit(vec![StoreOp::PutKey(k.clone())])
        .await
        .unwrap();
    store.submit(vec![StoreOp::AddCounters(vec![CounterDelta {
        key_id: "k".into(),
        requests: 1,
        last_used_at: Some(77),
        ..CounterDelta::default()
    }])]);

    // The caller's copy has stale counters and a different note: only the state is written.
    let mut state = k.clone();
    state.requests = 0;
    state.notes = "ignored".into();
    state.status = KeyStatus::Banned;
    state.status_reason = Some("402".into());
    state.status_changed_at = Some(88);
    state.cooldown_until = Some(99);
    state.last_test = Some(LastTest {
        at: 66,
        result: TestResult::Banned,
        status: 402,
    });
    let mut ghost = key("ghost", "fk-gggggggggggggggg");
    ghost.status = KeyStatus::Disabled;
    store
        .commit(vec![
            StoreOp::PutKeyState(state.clone()),
            StoreOp::PutKeyState(ghost),
        ])
        .await
        .unwrap();
    store.close().unwrap();

    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.keys.len(), 1, "a state update does not create a key");
    let got = find(&loaded, "k");
    assert_eq!(got.requests, 10);
    assert_eq!(got.last_used_at, Some(77));
    assert_eq!(got.notes, "keep me");
    assert_eq!(got.status, KeyStatus::Banned);
    assert_eq!(got.status_reason.as_deref(), Some("402"));
    assert_eq!(got.status_changed_at, Some(88));
    assert_eq!(got.cooldown_until, Some(99));
    assert_eq!(got.last_test, state.last_test);
    store.close().unwrap();
}

#[tokio::test]
async fn delete_group_moves_its_keys_and_default_cannot_go() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let mut a = key("a", "fk-aaaaaaaaaaaaaaaa");
    a.pool_group = "old".into();
    let mut b = key("b", "fk-bbbbbbbbbbbbbbbb");
    b.pool_group = "old".into();
    store
        .commit(vec![
            StoreOp::PutGroup(group("old", 3)),
            StoreOp::PutKey(a),
            StoreOp::PutKey(b),
            StoreOp::PutKey(key("c", "fk-cccccccccccccccc")),
        ])
        .await
        .unwrap();
    store
        .commit(vec![StoreOp::DeleteGroup {
            id: "old".into(),
            move_keys_to: DEFAULT_GROUP.into(),
        }])
        .await
        .unwrap();
    let err = store
        .commit(vec![StoreOp::DeleteGroup {
            id: DEFAULT_GROUP.into(),
            move_keys_to: "old".into(),
        }])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be deleted"), "{err}");
    store.close().unwrap();

    let (store, loaded) = reopen(dir.path());
    assert!(loaded.keys.iter().all(|k| k.pool_group == DEFAULT_GROUP));
    assert_eq!(loaded.groups.len(), 1);
    store.close().unwrap();
}

#[tokio::test]
async fn a_failing_batch_fails_alone_and_the_writer_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("a", "fk-aaaaaaaaaaaaaaaa"))])
        .await
        .unwrap();
    // Queued together: the middle batch fails (duplicate secret), the others are committed.
    store.submit(vec![StoreOp::PutKey(key("b", "fk-bbbbbbbbbbbbbbbb"))]);
    let failing = store.commit(vec![
        StoreOp::PutKey(key("c", "fk-cccccccccccccccc")),
        StoreOp::PutKey(key("d", "fk-aaaaaaaaaaaaaaaa")),
    ]);
    let err = failing.await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("UNIQUE"), "{text}");
    assert!(!text.contains("fk-aaaa"), "error leaks a secret: {text}");
    // A key in a group that does not exist is refused by the foreign key.
    let mut orphan = key("e", "fk-eeeeeeeeeeeeeeee");
    orphan.pool_group = "nowhere".into();
    assert!(store.commit(vec![StoreOp::PutKey(orphan)]).await.is_err());
    store
        .commit(vec![StoreOp::PutKey(key("f", "fk-ffffffffffffffff"))])
        .await
        .unwrap();
    store.close().unwrap();

    let (store, loaded) = reopen(dir.path());
    let ids: Vec<&str> = loaded.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "f"], "batch c+d rolled back as a whole");
    store.close().unwrap();
}

#[tokio::test]
async fn history_is_newest_first_with_a_limit_and_survives_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![
            StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk")),
            StoreOp::AddEvents(vec![event("k", 1, "cooling"), event("other", 2, "banned")]),
        ])
        .await
        .unwrap();
    store.submit(vec![StoreOp::AddEvents(vec![event("k", 3, "active")])]);
    store.submit(vec![StoreOp::AddEvents(vec![event("k", 2, "disabled")])]);
    store.flush().await.unwrap();
    let all = store.history("k", 100).await.unwrap();
    let tos: Vec<&str> = all.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(
        tos,
        ["disabled", "active", "cooling"],
        "by insertion, newest first"
    );
    let two = store.history("k", 2).await.unwrap();
    assert_eq!(two, all[..2]);
    assert!(store.history("k", 0).await.unwrap().is_empty());
    assert!(store.history("nobody", 10).await.unwrap().is_empty());

    store
        .commit(vec![StoreOp::DeleteKey("k".into())])
        .await
        .unwrap();
    assert_eq!(store.history("k", 100).await.unwrap().len(), 3);
    store.close().unwrap();
    assert!(store.history("k", 1).await.is_err(), "closed store");
}

#[tokio::test]
async fn database_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    let db = dir.path().join(DB_FILE);
    for path in [db.clone(), sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        assert!(path.exists(), "{} missing", path.display());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    store.close().unwrap();

    // A database left with a wider mode is narrowed at open.
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    let (store, _) = reopen(dir.path());
    assert_eq!(mode(&db), 0o600);
    store.close().unwrap();
}

#[tokio::test]
async fn missing_data_dir_is_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let (store, _) = Store::open(&data).unwrap();
    assert_eq!(mode(&data), 0o700);
    store.close().unwrap();
}

#[test]
fn a_database_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store.close().unwrap();
    let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
    raw.pragma_update(None, "user_version", schema::schema_version() + 1)
        .unwrap();
    drop(raw);
    let err = Store::open(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("newer droid2api"), "{text}");
    assert!(text.contains(DB_FILE), "{text}");
    assert!(
        matches!(
            &err,
            StoreError::Database {
                source: SqliteError::TooNew { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    store.close().unwrap();
    for _ in 0..3 {
        let (store, loaded) = reopen(dir.path());
        assert_eq!(loaded.keys.len(), 1);
        assert_eq!(loaded.groups.len(), 1);
        store.close().unwrap();
    }
    let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::schema_version());
}

#[tokio::test]
async fn node_import_on_first_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(NODE_POOL_FILE);
    fs::write(&file, FIXTURE).unwrap();

    let (store, loaded) = Store::open(dir.path()).unwrap();
    let report = loaded.import.as_ref().expect("imported");
    assert_eq!((report.keys, report.groups, report.skipped), (6, 4, 3));
    assert!(!report.warnings.is_empty());
    let ids: Vec<&str> = loaded.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "key_1728700000001_a1b2c3d4e",
            "key_1728700000002_f5g6h7i8j",
            "key_1728700000003_k9l0m1n2o",
            "key_1728700000004_p3q4r5s6t",
            "key_1728700000005_u7v8w9x0y",
            "key_1728700000008_j5k6l7m8n",
        ]
    );
    let statuses: Vec<(KeyStatus, Option<DisabledBy>)> = loaded
        .keys
        .iter()
        .map(|k| (k.status, k.disabled_by))
        .collect();
    assert_eq!(
        statuses,
        [
            (KeyStatus::Active, None),
            (KeyStatus::Disabled, Some(DisabledBy::Auto)),
            (KeyStatus::Banned, None),
            (KeyStatus::Active, None),
            (KeyStatus::Disabled, Some(DisabledBy::Auto)),
            (KeyStatus::Active, None),
        ]
    );
    let groups: Vec<(&str, i64)> = loaded
        .groups
        .iter()
        .map(|g| (g.id.as_str(), g.priority))
        .collect();
    assert_eq!(
        groups,
        [
            ("freebies", 1),
            ("main", 2),
            ("test", 3),
            (DEFAULT_GROUP, 1000),
            ("legacy", 1001)
        ]
    );
    assert_eq!(
        loaded.settings.get(ALGORITHM_SETTING),
        Some(&serde_json::json!("round-robin"))
    );
    let history = store
        .history("key_1728700000003_k9l0m1n2o", 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].source, EventSource::Import);
    assert_eq!(history[0].to, "banned");
    assert_eq!(history[0].from, None);

    // Empty the pool entirely: the next start must still not import again.
    let mut ops: Vec<StoreOp> = loaded
        .keys
        .iter()
        .map(|k| StoreOp::DeleteKey(k.id.clone()))
        .collect();
    ops.extend(
        loaded
            .groups
            .iter()
            .filter(|g| g.id != DEFAULT_GROUP)
            .map(|g| StoreOp::DeleteGroup {
                id: g.id.clone(),
                move_keys_to: DEFAULT_GROUP.into(),
            }),
    );
    store.commit(ops).await.unwrap();
    store.close().unwrap();

    let (store, loaded) = reopen(dir.path());
    assert!(loaded.import.is_none());
    assert!(loaded.keys.is_empty());
    assert_eq!(
        fs::read(&file).unwrap(),
        FIXTURE,
        "the file is left in place"
    );
    store.close().unwrap();
}

#[test]
fn a_file_appearing_after_the_first_start_is_not_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert!(loaded.import.is_none());
    store.close().unwrap();
    fs::write(dir.path().join(NODE_POOL_FILE), FIXTURE).unwrap();
    let (store, loaded) = reopen(dir.path());
    assert!(loaded.import.is_none());
    assert!(loaded.keys.is_empty());
    store.close().unwrap();
}

#[test]
fn an_unreadable_node_file_stops_the_start_and_is_retried_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(NODE_POOL_FILE);
    fs::write(&file, b"{\"keys\": [").unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("fix or move data/key_pool.json"), "{err}");
    assert!(err.contains(NODE_POOL_FILE), "{err}");
    fs::write(&file, FIXTURE).unwrap();
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.import.map(|r| r.keys), Some(6));
    store.close().unwrap();
}

#[tokio::test]
async fn commit_is_durable_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![
            StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk")),
            StoreOp::PutSetting {
                name: "algorithm".into(),
                value: serde_json::json!("random"),
            },
        ])
        .await
        .unwrap();
    // As if the process died right after the ack: another connection sees the change.
    let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let n: i64 = raw
        .query_row("SELECT count(*) FROM keys WHERE id = 'k'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let algorithm: String = raw
        .query_row(
            "SELECT value FROM settings WHERE name = 'algorithm'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(algorithm, "\"random\"");
    drop(raw);
    store.close().unwrap();
}

#[tokio::test]
async fn submits_from_many_threads_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    store.submit(vec![
                        StoreOp::AddCounters(vec![CounterDelta {
                            key_id: "k".into(),
                            requests: 1,
                            input_tokens: 2,
                            last_used_at: Some(t * 1000 + i),
                            ..CounterDelta::default()
                        }]),
                        StoreOp::AddEvents(vec![event("k", t * 1000 + i, "cooling")]),
                    ]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(store.history("k", 100_000).await.unwrap().len(), 8000);
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    let k = find(&loaded, "k");
    assert_eq!((k.requests, k.input_tokens), (8000, 16000));
    assert_eq!(k.last_used_at, Some(7999));
    store.close().unwrap();
}

#[tokio::test]
async fn close_drains_the_queue_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    for _ in 0..500 {
        store.submit(vec![StoreOp::AddCounters(vec![CounterDelta {
            key_id: "k".into(),
            successes: 1,
            ..CounterDelta::default()
        }])]);
    }
    let clone = store.clone();
    store.close().unwrap();
    clone.close().unwrap();
    // After close: submits are dropped, commits and flushes fail, nothing panics.
    clone.submit(vec![StoreOp::ClearSettings]);
    assert!(clone.commit(vec![StoreOp::ClearSettings]).await.is_err());
    assert!(clone.flush().await.is_err());
    let db = dir.path().join(DB_FILE);
    let wal = sidecar(&db, "-wal");
    assert!(
        !wal.exists() || fs::metadata(&wal).unwrap().len() == 0,
        "WAL checkpointed"
    );

    let (store, loaded) = reopen(dir.path());
    assert_eq!(find(&loaded, "k").successes, 500);
    store.close().unwrap();
}

#[tokio::test]
async fn dropping_every_handle_still_commits_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store.submit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))]);
    let handle = lock(&store.inner.writer).take().unwrap();
    drop(store);
    handle.join().unwrap().unwrap();
    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.keys.len(), 1);
    store.close().unwrap();
}

#[test]
fn the_handle_is_shareable_and_prints_no_secret() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Store>();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(NODE_POOL_FILE), FIXTURE).unwrap();
    let (store, loaded) = Store::open(dir.path()).unwrap();
    let printed = format!("{store:?} {loaded:?}");
    assert!(!printed.contains("fk-fixture"), "{printed}");
    store.close().unwrap();
}
