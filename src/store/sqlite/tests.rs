use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::secret::Secret;
use crate::store::records::{
    BalanceRecord, CounterDelta, DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, DisabledBy, EventSource,
    KeyStatus, LastTest, TestResult, UsageRecord,
};

mod linger;
mod saturation;
mod write_behind;

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
    // Upserts: the group changes, the key changes in place (order kept) except its counters,
    // which only `AddCounters` changes once the key exists, a setting changes.
    let mut spare = group("spare", 7);
    spare.name = "Spare".into();
    let mut b = key("key_b", "fk-bbbbbbbbbbbbbbbb-rotated");
    b.notes = "rotated".into();
    b.requests = 3;
    b.last_used_at = Some(9);
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
    let stored_b = find(&loaded, "key_b");
    assert_eq!((stored_b.requests, stored_b.last_used_at), (0, None));
    b.requests = 0;
    b.last_used_at = None;
    assert!(same(stored_b, &b));
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
    store.submit(vec![StoreOp::AddEvents(vec![event("k", 3, "banned")])]);
    store.flush().await.unwrap();
    let all = store.history("k", 100).await.unwrap();
    let tos: Vec<&str> = all.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(
        tos,
        ["banned", "active", "disabled", "cooling"],
        "newest first by time, then by insertion"
    );
    let two = store.history("k", 2).await.unwrap();
    assert_eq!(two, all[..2]);
    assert!(store.history("k", 0).await.unwrap().is_empty());
    assert!(store.history("nobody", 10).await.unwrap().is_empty());

    store
        .commit(vec![StoreOp::DeleteKey("k".into())])
        .await
        .unwrap();
    assert_eq!(store.history("k", 100).await.unwrap().len(), 4);
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
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();

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

    // The file was set aside, private, at the first start.
    assert!(!file.exists(), "key_pool.json is renamed once imported");
    let imported = dir.path().join(NODE_POOL_IMPORTED);
    assert_eq!(fs::read(&imported).unwrap(), FIXTURE);
    assert_eq!(mode(&imported), 0o600);
    // Put back, it is still not imported again.
    fs::copy(&imported, &file).unwrap();
    let (store, loaded) = reopen(dir.path());
    assert!(loaded.import.is_none());
    assert!(loaded.keys.is_empty());
    assert_eq!(
        fs::read(&file).unwrap(),
        FIXTURE,
        "not imported: left alone"
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

// ---- Usage accounting and balances ----

const HOUR_MS: Millis = 3_600_000;
const DAY_MS: Millis = 24 * HOUR_MS;
/// A day start in some zone (UTC+2 here: local midnight is 22:00 UTC the day before).
const DAY1: Millis = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS - 2 * HOUR_MS;
const DAY2: Millis = DAY1 + DAY_MS;

/// A record at `at`, bucketed in the UTC+2 zone of `DAY1`.
fn usage(at: Millis, credential: &str, model: &str, client: &str, status: u16) -> UsageRecord {
    let hour_start = at - (at - DAY1).rem_euclid(HOUR_MS);
    let day_start = at - (at - DAY1).rem_euclid(DAY_MS);
    let n = u64::try_from(at % 1000).unwrap();
    UsageRecord {
        at,
        hour_start,
        day_start,
        credential: credential.into(),
        attempts: 1,
        client: client.into(),
        model: model.into(),
        route: "/v1/messages".into(),
        upstream_format: "anthropic".into(),
        status,
        input_tokens: 100 + n,
        cache_read_tokens: 10 + n,
        cache_write_tokens: 5,
        output_tokens: 40 + n,
        reasoning_tokens: 7,
        estimated: n.is_multiple_of(2),
        complete: true,
        latency_ms: 1234,
        ttfb_ms: if n.is_multiple_of(3) { None } else { Some(n) },
    }
}

fn totals_of<'a>(records: impl IntoIterator<Item = &'a UsageRecord>) -> UsageTotals {
    let mut t = UsageTotals::default();
    for r in records {
        t.requests += 1;
        t.successes += u64::from((200..300).contains(&r.status));
        t.tokens.input_tokens += r.input_tokens;
        t.tokens.cache_read_tokens += r.cache_read_tokens;
        t.tokens.cache_write_tokens += r.cache_write_tokens;
        t.tokens.output_tokens += r.output_tokens;
        t.tokens.reasoning_tokens += r.reasoning_tokens;
    }
    t
}

/// A mixed set over two local days, three hours, two keys, two models and two clients.
fn sample_records() -> Vec<UsageRecord> {
    let mut v = Vec::new();
    for (i, at) in [
        DAY1 + 1,
        DAY1 + 5 * 60_000,
        DAY1 + HOUR_MS + 17,
        DAY1 + HOUR_MS + 999,
        DAY1 + 23 * HOUR_MS + 59 * 60_000,
        DAY2,
        DAY2 + 2 * HOUR_MS + 3,
        DAY2 + 2 * HOUR_MS + 4,
    ]
    .into_iter()
    .enumerate()
    {
        let key = if i % 2 == 0 { "key_a" } else { "key_b" };
        let model = if i % 3 == 0 { "claude" } else { "gpt" };
        let client = if i < 6 { "api_access_key" } else { "anonymous" };
        let status = [200, 201, 429, 500, 200, 200, 404, 200][i];
        v.push(usage(at, key, model, client, status));
    }
    v
}

fn raw_rollups(dir: &Path) -> BTreeMap<(String, String, String, Millis), UsageTotals> {
    let raw = Connection::open(dir.join(DB_FILE)).unwrap();
    let mut st = raw
        .prepare(
            "SELECT granularity, dim, value, bucket_start, requests, successes, input_tokens,
                cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens
             FROM usage_rollups",
        )
        .unwrap();
    st.query_map([], |r| {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap());
        Ok((
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
            UsageTotals {
                requests: n(4)?,
                successes: n(5)?,
                tokens: Tokens {
                    input_tokens: n(6)?,
                    cache_read_tokens: n(7)?,
                    cache_write_tokens: n(8)?,
                    output_tokens: n(9)?,
                    reasoning_tokens: n(10)?,
                },
            },
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// What the rollups must hold for `records`, computed the slow way.
fn expected_rollups(
    records: &[UsageRecord],
) -> BTreeMap<(String, String, String, Millis), UsageTotals> {
    let mut out: BTreeMap<(String, String, String, Millis), Vec<&UsageRecord>> = BTreeMap::new();
    for r in records {
        for (g, start) in [("hour", r.hour_start), ("day", r.day_start), ("total", 0)] {
            for (dim, value) in [
                ("all", ""),
                ("key", r.credential.as_str()),
                ("model", r.model.as_str()),
                ("client", r.client.as_str()),
            ] {
                out.entry((g.into(), dim.into(), value.into(), start))
                    .or_default()
                    .push(r);
            }
        }
    }
    out.into_iter().map(|(k, rs)| (k, totals_of(rs))).collect()
}

fn usage_count(dir: &Path) -> i64 {
    let raw = Connection::open(dir.join(DB_FILE)).unwrap();
    raw.query_row("SELECT count(*) FROM usage_records", [], |r| r.get(0))
        .unwrap()
}

fn balance(key_id: &str, used: u64) -> BalanceRecord {
    BalanceRecord {
        key_id: key_id.into(),
        used,
        allowance: 20_000_000,
        premium_used: 3,
        premium_allowance: 1_000,
        trial_end: if used.is_multiple_of(2) {
            Some(1_800_000_000_000)
        } else {
            None
        },
        synced_at: 1_700_000_000_000 + i64::try_from(used).unwrap(),
    }
}

#[test]
fn tokens_total_excludes_reasoning() {
    let t = Tokens {
        input_tokens: 1,
        cache_read_tokens: 20,
        cache_write_tokens: 300,
        output_tokens: 4000,
        reasoning_tokens: 999,
    };
    assert_eq!(t.total(), 4321);
    let huge = Tokens {
        input_tokens: u64::MAX,
        output_tokens: 1,
        ..Tokens::default()
    };
    assert_eq!(huge.total(), u64::MAX);
}

#[tokio::test]
async fn a_v1_database_is_upgraded_in_place_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // A database exactly as the v1 build left it.
    {
        let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
        raw.execute_batch(schema::MIGRATIONS[0]).unwrap();
        raw.pragma_update(None, "user_version", 1).unwrap();
        raw.execute_batch(
            "INSERT INTO pool_groups VALUES ('default', 'default', 1000, '', 1);
             INSERT INTO pool_groups VALUES ('main', 'Main', 1, 'm', 2);
             INSERT INTO keys (id, secret, status, pool_group, created_at, requests)
                 VALUES ('key_old', 'fk-old-secret-0123456789', 'active', 'main', 3, 42);
             INSERT INTO key_events (key_id, at, from_state, to_state, reason, source)
                 VALUES ('key_old', 4, NULL, 'active', 'created', 'admin');
             INSERT INTO settings VALUES ('algorithm', '\"random\"');
             INSERT INTO meta VALUES ('node_import_done', 'none at 1');",
        )
        .unwrap();
    }
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert_eq!(loaded.keys.len(), 1);
    assert_eq!(loaded.keys[0].id, "key_old");
    assert_eq!(loaded.keys[0].requests, 42);
    assert_eq!(loaded.keys[0].secret.expose(), "fk-old-secret-0123456789");
    assert_eq!(loaded.groups.len(), 2);
    assert_eq!(loaded.settings["algorithm"], serde_json::json!("random"));
    assert!(loaded.balances.is_empty());
    assert!(loaded.import.is_none());
    assert_eq!(store.history("key_old", 10).await.unwrap().len(), 1);
    // The new tables work.
    let records = sample_records();
    store
        .commit(vec![
            StoreOp::AddUsage(records.clone()),
            StoreOp::PutBalance(balance("key_old", 10)),
        ])
        .await
        .unwrap();
    assert_eq!(store.usage_totals(DAY1).await.unwrap().0.requests, 8);
    store.close().unwrap();

    let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::schema_version());
    drop(raw);
    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.balances, [balance("key_old", 10)]);
    assert_eq!(loaded.keys.len(), 1);
    store.close().unwrap();
}

#[tokio::test]
async fn a_database_downgraded_to_v1_is_migrated_again() {
    // The other way to build a v1 database: the current code, then the v2 step undone.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    store.close().unwrap();
    {
        let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
        raw.execute_batch(
            "DROP TABLE usage_records; DROP TABLE usage_rollups; DROP TABLE balances;
             DROP TABLE rejected_counts;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.keys.len(), 1);
    store
        .commit(vec![
            StoreOp::AddUsage(vec![usage(DAY1, "k", "m", "c", 200)]),
            StoreOp::PutBalance(balance("k", 1)),
        ])
        .await
        .unwrap();
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.balances.len(), 1);
    assert_eq!(usage_count(dir.path()), 1);
    store.close().unwrap();
}

#[tokio::test]
async fn add_usage_stores_every_field_and_rollups_add_up_per_dimension_and_granularity() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let records = sample_records();
    // Split over batches queued together and committed separately: both paths add up.
    store.submit(vec![StoreOp::AddUsage(records[..3].to_vec())]);
    store.submit(vec![
        StoreOp::AddUsage(records[3..5].to_vec()),
        StoreOp::AddUsage(Vec::new()),
    ]);
    store.flush().await.unwrap();
    store
        .commit(vec![StoreOp::AddUsage(records[5..].to_vec())])
        .await
        .unwrap();
    assert_eq!(raw_rollups(dir.path()), expected_rollups(&records));
    // Spot checks of the expectation itself.
    let rollups = raw_rollups(dir.path());
    let all_day1 = &rollups[&("day".into(), "all".into(), String::new(), DAY1)];
    assert_eq!((all_day1.requests, all_day1.successes), (5, 3));
    let hours: Vec<Millis> = rollups
        .keys()
        .filter(|(g, d, _, _)| g == "hour" && d == "all")
        .map(|k| k.3)
        .collect();
    assert_eq!(
        hours,
        [
            DAY1,
            DAY1 + HOUR_MS,
            DAY1 + 23 * HOUR_MS,
            DAY2,
            DAY2 + 2 * HOUR_MS
        ]
    );

    // Every field of a record round-trips.
    let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let stored: Vec<UsageRecord> = raw
        .prepare(
            "SELECT at, hour_start, day_start, credential, attempts, client, model, route,
                upstream_format, status, input_tokens, cache_read_tokens, cache_write_tokens,
                output_tokens, reasoning_tokens, estimated, complete, latency_ms, ttfb_ms
             FROM usage_records ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap());
            Ok(UsageRecord {
                at: r.get(0)?,
                hour_start: r.get(1)?,
                day_start: r.get(2)?,
                credential: r.get(3)?,
                attempts: r.get(4)?,
                client: r.get(5)?,
                model: r.get(6)?,
                route: r.get(7)?,
                upstream_format: r.get(8)?,
                status: r.get(9)?,
                input_tokens: n(10)?,
                cache_read_tokens: n(11)?,
                cache_write_tokens: n(12)?,
                output_tokens: n(13)?,
                reasoning_tokens: n(14)?,
                estimated: r.get(15)?,
                complete: r.get(16)?,
                latency_ms: n(17)?,
                ttfb_ms: r
                    .get::<_, Option<i64>>(18)?
                    .map(|v| u64::try_from(v).unwrap()),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, records);
    drop(raw);
    store.close().unwrap();
}

#[tokio::test]
async fn a_failing_usage_batch_adds_nothing_to_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let good = sample_records();
    store
        .commit(vec![StoreOp::AddUsage(good.clone())])
        .await
        .unwrap();
    // The same batch also holds an op that fails: the usage goes back with it.
    let mut orphan = key("x", "fk-xxxxxxxxxxxxxxxx");
    orphan.pool_group = "nowhere".into();
    assert!(
        store
            .commit(vec![
                StoreOp::AddUsage(good.clone()),
                StoreOp::PutKey(orphan)
            ])
            .await
            .is_err()
    );
    assert_eq!(raw_rollups(dir.path()), expected_rollups(&good));
    assert_eq!(usage_count(dir.path()), 8);
    store.close().unwrap();
}

#[tokio::test]
async fn usage_by_and_totals_give_all_time_and_one_day() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    // Empty store: zeros and nothing listed.
    assert_eq!(
        store.usage_totals(DAY1).await.unwrap(),
        (UsageTotals::default(), UsageTotals::default())
    );
    assert!(store.usage_by("key", DAY1).await.unwrap().is_empty());

    let records = sample_records();
    store
        .commit(vec![StoreOp::AddUsage(records.clone())])
        .await
        .unwrap();
    let (all, day2) = store.usage_totals(DAY2).await.unwrap();
    assert_eq!(all, totals_of(&records));
    assert_eq!(
        day2,
        totals_of(records.iter().filter(|r| r.day_start == DAY2))
    );
    assert_eq!((day2.requests, day2.successes), (3, 2));
    let (_, none) = store.usage_totals(DAY2 + DAY_MS).await.unwrap();
    assert_eq!(none, UsageTotals::default());

    for (dim, field) in [
        (
            "key",
            (|r: &UsageRecord| r.credential.clone()) as fn(&UsageRecord) -> String,
        ),
        ("model", |r: &UsageRecord| r.model.clone()),
        ("client", |r: &UsageRecord| r.client.clone()),
    ] {
        for day in [DAY1, DAY2] {
            let got = store.usage_by(dim, day).await.unwrap();
            let mut values: Vec<String> = records.iter().map(field).collect();
            values.sort();
            values.dedup();
            let want: Vec<(String, UsageTotals, UsageTotals)> = values
                .into_iter()
                .map(|v| {
                    let of_v = || records.iter().filter(|r| field(r) == v);
                    let all = totals_of(of_v());
                    let today = totals_of(of_v().filter(|r| r.day_start == day));
                    (v, all, today)
                })
                .collect();
            assert_eq!(got, want, "{dim} on {day}");
        }
    }
    // `anonymous` had no request on day 1: listed with zeros for that day.
    let clients = store.usage_by("client", DAY1).await.unwrap();
    assert_eq!(clients[0].0, "anonymous", "ordered by value");
    assert_eq!(clients[0].1.requests, 2);
    assert_eq!(clients[0].2, UsageTotals::default());

    for bad in ["all", "credential", ""] {
        let err = store.usage_by(bad, DAY1).await.unwrap_err();
        assert!(err.to_string().contains("unknown usage dimension"), "{err}");
    }
    store.close().unwrap();
}

#[tokio::test]
async fn usage_series_with_every_filter_combination_and_half_open_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let records = sample_records();
    store
        .commit(vec![StoreOp::AddUsage(records.clone())])
        .await
        .unwrap();

    let filters: [(Option<&str>, Option<&str>); 7] = [
        (None, None),
        (Some("key_a"), None),
        (Some("key_b"), None),
        (None, Some("gpt")),
        (Some("key_a"), Some("claude")),
        (Some("key_b"), Some("gpt")),
        (Some("nobody"), Some("gpt")),
    ];
    let ranges = [
        (Millis::MIN, Millis::MAX),
        (DAY1, DAY2),
        (DAY1 + 1, DAY2 + 2 * HOUR_MS),
        (DAY1 + HOUR_MS, DAY2 + 2 * HOUR_MS + 1),
        (DAY2 + 3 * HOUR_MS, DAY2 + 4 * HOUR_MS),
        (DAY2, DAY1),
    ];
    let mut nonempty = 0;
    for granularity in ["hour", "day"] {
        for (key, model) in filters {
            for (from, to) in ranges {
                let got = store
                    .usage_series(granularity, from, to, key, model)
                    .await
                    .unwrap();
                let bucket = |r: &UsageRecord| {
                    if granularity == "hour" {
                        r.hour_start
                    } else {
                        r.day_start
                    }
                };
                let mut want: BTreeMap<Millis, Vec<&UsageRecord>> = BTreeMap::new();
                for r in &records {
                    let b = bucket(r);
                    if from <= b
                        && b < to
                        && key.is_none_or(|k| r.credential == k)
                        && model.is_none_or(|m| r.model == m)
                    {
                        want.entry(b).or_default().push(r);
                    }
                }
                let want: Vec<(Millis, UsageTotals)> =
                    want.into_iter().map(|(b, rs)| (b, totals_of(rs))).collect();
                nonempty += usize::from(!want.is_empty());
                assert_eq!(got, want, "{granularity} {key:?} {model:?} [{from}, {to})");
            }
        }
    }
    assert!(nonempty > 30, "the cases must mostly have data: {nonempty}");

    // Exactly the bounds: `from` is in, `to` is out.
    let day = store
        .usage_series("day", DAY2, DAY2 + 1, None, None)
        .await
        .unwrap();
    assert_eq!(day.len(), 1);
    assert_eq!(day[0].0, DAY2);
    assert!(
        store
            .usage_series("day", DAY1 + 1, DAY2, None, None)
            .await
            .unwrap()
            .is_empty()
    );

    let err = store
        .usage_series("week", 0, 1, None, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown usage granularity"),
        "{err}"
    );
    store.close().unwrap();
}

#[tokio::test]
async fn series_by_key_and_model_finds_records_whose_bucket_start_was_taken_late() {
    // A stream that started at 10:59:50 and whose record was bucketed at its end (11:00).
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let mut r = usage(DAY1 + HOUR_MS - 10_000, "k", "m", "c", 200);
    r.hour_start = DAY1 + HOUR_MS;
    store
        .commit(vec![StoreOp::AddUsage(vec![r])])
        .await
        .unwrap();
    let by_rollup = store
        .usage_series("hour", DAY1 + HOUR_MS, DAY1 + 2 * HOUR_MS, Some("k"), None)
        .await
        .unwrap();
    let by_records = store
        .usage_series(
            "hour",
            DAY1 + HOUR_MS,
            DAY1 + 2 * HOUR_MS,
            Some("k"),
            Some("m"),
        )
        .await
        .unwrap();
    assert_eq!(by_rollup.len(), 1);
    assert_eq!(by_records, by_rollup);
    store.close().unwrap();
}

#[tokio::test]
async fn prune_usage_deletes_old_records_keeps_rollups_and_runs_after_queued_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let records = sample_records();
    // Queued without waiting: the prune must see them.
    store.submit(vec![StoreOp::AddUsage(records.clone())]);
    let deleted = store.prune_usage(DAY2).await.unwrap();
    assert_eq!(deleted, 5, "the five records of day 1");
    assert_eq!(usage_count(dir.path()), 3);
    assert_eq!(
        raw_rollups(dir.path()),
        expected_rollups(&records),
        "rollups are kept"
    );
    assert_eq!(store.usage_totals(DAY1).await.unwrap().1.requests, 5);
    // The boundary: `at < before` only.
    assert_eq!(store.prune_usage(DAY2).await.unwrap(), 0);
    assert_eq!(store.prune_usage(DAY2 + 1).await.unwrap(), 1);
    // Series by key and model now reach back only to what is kept.
    let both = store
        .usage_series(
            "day",
            Millis::MIN,
            Millis::MAX,
            Some("key_a"),
            Some("claude"),
        )
        .await
        .unwrap();
    assert!(both.iter().all(|(b, _)| *b == DAY2), "{both:?}");
    // Through the writer: a later write is not deleted; everything can go.
    store.submit(vec![StoreOp::AddUsage(vec![usage(
        DAY1, "k", "m", "c", 200,
    )])]);
    assert_eq!(store.prune_usage(Millis::MAX).await.unwrap(), 3);
    assert_eq!(usage_count(dir.path()), 0);
    assert_eq!(store.usage_totals(DAY1).await.unwrap().0.requests, 9);

    store.close().unwrap();
    assert!(store.prune_usage(0).await.is_err(), "closed store");
    assert!(store.usage_totals(0).await.is_err(), "closed store");
}

#[tokio::test]
async fn balances_round_trip_and_go_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = Store::open(dir.path()).unwrap();
    assert!(loaded.balances.is_empty());
    store
        .commit(vec![
            StoreOp::PutKey(key("key_b", "fk-bbbbbbbbbbbbbbbb")),
            StoreOp::PutKey(key("key_a", "fk-aaaaaaaaaaaaaaaa")),
            StoreOp::PutKey(key("key_c", "fk-cccccccccccccccc")),
            StoreOp::PutBalance(balance("key_b", 5)),
            StoreOp::PutBalance(balance("key_a", 1)),
            StoreOp::PutBalance(balance("key_c", 2)),
            // Not in the pool (a sync raced the key's deletion): nothing stored, no failure.
            StoreOp::PutBalance(balance("key_gone", 7)),
        ])
        .await
        .unwrap();
    // The last sync replaces.
    store.submit(vec![StoreOp::PutBalance(balance("key_b", 6))]);
    store
        .commit(vec![StoreOp::DeleteKey("key_c".into())])
        .await
        .unwrap();
    store.close().unwrap();

    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.balances, [balance("key_a", 1), balance("key_b", 6)]);
    assert_eq!(loaded.balances[0].trial_end, None);
    assert_eq!(loaded.balances[1].trial_end, Some(1_800_000_000_000));
    // A key re-added under a deleted id starts without a balance.
    store
        .commit(vec![StoreOp::PutKey(key("key_c", "fk-cccccccccccccccc"))])
        .await
        .unwrap();
    store.close().unwrap();
    let (store, loaded) = reopen(dir.path());
    assert_eq!(loaded.balances.len(), 2);
    store.close().unwrap();
}

#[tokio::test]
async fn twenty_thousand_records_in_batches_of_500() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let models = ["claude", "gpt", "gemini", "glm"];
    let mut all_records = Vec::new();
    for batch in 0..40_i64 {
        let records: Vec<UsageRecord> = (0..500_i64)
            .map(|i| {
                let n = batch * 500 + i;
                usage(
                    DAY1 + n * 10_000,
                    &format!("key_{}", n % 50),
                    models[usize::try_from(n % 4).unwrap()],
                    if n % 7 == 0 {
                        "anonymous"
                    } else {
                        "api_access_key"
                    },
                    if n % 10 == 0 { 500 } else { 200 },
                )
            })
            .collect();
        all_records.extend(records.iter().cloned());
        store.submit(vec![StoreOp::AddUsage(records)]);
        // The traffic queue holds TRAFFIC_CAPACITY records at most (beyond, they are dropped):
        // a producer this fast waits for the writer now and then.
        if batch % 10 == 9 {
            store.flush().await.unwrap();
        }
    }
    store.flush().await.unwrap();
    assert_eq!(store.queue_stats().dropped, 0);
    let elapsed = started.elapsed();
    let expected = totals_of(&all_records);
    assert_eq!(usage_count(dir.path()), 20_000);
    let (all, _) = store.usage_totals(DAY1).await.unwrap();
    assert_eq!(all, expected);
    assert_eq!((all.requests, all.successes), (20_000, 18_000));
    let keys = store.usage_by("key", DAY1).await.unwrap();
    assert_eq!(keys.len(), 50);
    assert!(keys.iter().all(|(_, all, _)| all.requests == 400));
    let hours = store
        .usage_series("hour", Millis::MIN, Millis::MAX, None, None)
        .await
        .unwrap();
    assert_eq!(hours.iter().map(|(_, t)| t.requests).sum::<u64>(), 20_000);
    // Informational only (no assertion on time): `cargo test -- --nocapture` shows it.
    let _ = elapsed;
    store.close().unwrap();
}

/// The nice values of this process's threads named `name` (`/proc/self/task/*/stat`, field
/// 19; the name is in parentheses and may hold spaces).
#[cfg(target_os = "linux")]
fn thread_nice(name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        // After ") ": state is field 3, so nice (19) is the 17th field from there.
        let nice = stat[close + 2..].split(' ').nth(16).unwrap();
        out.push(nice.parse().unwrap());
    }
    out
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_writer_thread_runs_at_a_lower_priority() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    // The thread sets its priority as it starts: wait for it (at most 5 s).
    let mut nice = Vec::new();
    for _ in 0..500 {
        nice = thread_nice("droid2api-store");
        if nice.contains(&writer::WRITER_NICE) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(nice.contains(&writer::WRITER_NICE), "nice values: {nice:?}");
    // This thread (and so request handling) keeps the default.
    let me = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let close = me.rfind(')').unwrap();
    assert_eq!(me[close + 2..].split(' ').nth(16).unwrap(), "0");
    store.close().unwrap();
}
