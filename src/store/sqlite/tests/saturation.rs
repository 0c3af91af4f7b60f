//! Token and counter arithmetic saturates in SQL, and a database holding REAL values in integer
//! columns (left by the old overflowing `+`) is repaired by a migration and opens.

use super::*;

const MAX: u64 = i64::MAX as u64;

/// `typeof()` of every value of `column` in `table`, deduplicated.
fn types(dir: &Path, table: &str, column: &str) -> Vec<String> {
    let raw = Connection::open(dir.join(DB_FILE)).unwrap();
    let mut st = raw
        .prepare(&format!(
            "SELECT DISTINCT typeof({column}) FROM {table} ORDER BY 1"
        ))
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn huge(at: Millis) -> UsageRecord {
    let mut r = usage(at, "k", "m", "c", 200);
    r.input_tokens = u64::MAX;
    r.cache_read_tokens = u64::MAX - 1;
    r.cache_write_tokens = MAX;
    r.output_tokens = MAX / 2 + 1;
    r.reasoning_tokens = 1;
    r
}

#[tokio::test]
async fn counters_rollups_and_series_saturate_instead_of_turning_real_or_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk"))])
        .await
        .unwrap();
    for _ in 0..3 {
        store.submit(vec![StoreOp::AddCounters(vec![CounterDelta {
            key_id: "k".into(),
            requests: u64::MAX,
            successes: MAX - 1,
            failures: 1,
            input_tokens: u64::MAX,
            output_tokens: MAX / 2 + 1,
            last_used_at: Some(5),
        }])]);
        store.flush().await.unwrap();
    }
    // Three batches, each committed on its own: the SQL sums saturate.
    for at in [DAY1, DAY1 + 1, DAY1 + 2] {
        store.submit(vec![StoreOp::AddUsage(vec![huge(at)])]);
        store.flush().await.unwrap();
    }
    // And within one batch (summed in memory first).
    store
        .commit(vec![StoreOp::AddUsage(vec![huge(DAY2), huge(DAY2 + 1)])])
        .await
        .unwrap();

    for column in [
        "requests",
        "successes",
        "failures",
        "input_tokens",
        "output_tokens",
    ] {
        assert_eq!(
            types(dir.path(), "keys", column),
            ["integer"],
            "keys.{column}"
        );
    }
    for column in [
        "requests",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
    ] {
        assert_eq!(
            types(dir.path(), "usage_rollups", column),
            ["integer"],
            "usage_rollups.{column}"
        );
    }

    let (all, day1) = store.usage_totals(DAY1).await.unwrap();
    assert_eq!(all.requests, 5);
    assert_eq!(all.tokens.input_tokens, MAX);
    assert_eq!(all.tokens.cache_read_tokens, MAX);
    assert_eq!(all.tokens.output_tokens, MAX);
    assert_eq!(all.tokens.reasoning_tokens, 5);
    assert_eq!(
        all.tokens.total(),
        u64::MAX,
        "the derived total saturates too"
    );
    assert_eq!(day1.tokens.input_tokens, MAX);
    // The series computed from the records (key and model) would fail with "integer overflow"
    // if it used sum().
    for granularity in ["hour", "day"] {
        let series = store
            .usage_series(granularity, Millis::MIN, Millis::MAX, Some("k"), Some("m"))
            .await
            .unwrap();
        assert!(!series.is_empty());
        for (_, t) in &series {
            assert_eq!(t.tokens.input_tokens, MAX, "{granularity}");
            assert_eq!(t.tokens.output_tokens, MAX, "{granularity}");
        }
    }
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
        (MAX, MAX, 3, MAX, MAX)
    );
    store.close().unwrap();
}

#[tokio::test]
async fn real_values_in_integer_columns_are_repaired_by_a_migration() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .commit(vec![
            StoreOp::PutKey(key("k", "fk-kkkkkkkkkkkkkkkk")),
            StoreOp::PutKey(key("ok", "fk-oooooooooooooooo")),
            StoreOp::AddUsage(vec![usage(DAY1, "k", "m", "c", 200)]),
            StoreOp::PutBalance(balance("k", 7)),
        ])
        .await
        .unwrap();
    store.close().unwrap();
    // What the old `a + b` left behind: REALs (beyond 2^63, plain, negative).
    let corrupt = |raw: &Connection| {
        raw.execute_batch(
            "UPDATE keys SET input_tokens = 1.5e19, requests = 12.0, failures = -3.0,
                 output_tokens = 9223372036854775807.0 WHERE id = 'k';
             UPDATE usage_rollups SET input_tokens = 9.3e18, output_tokens = 41.0;
             UPDATE usage_records SET latency_ms = 2.5;
             UPDATE balances SET used = 1e20;",
        )
        .unwrap();
    };
    {
        let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
        corrupt(&raw);
    }
    assert_eq!(
        types(dir.path(), "keys", "input_tokens"),
        ["integer", "real"]
    );
    // Without the repair the store cannot be opened: that is the bug being repaired.
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("loading keys"), "{err}");

    // A database from before the repair step opens, repaired.
    {
        let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
        raw.pragma_update(None, "user_version", repair_version() - 1)
            .unwrap();
    }
    let (store, loaded) = reopen(dir.path());
    let k = find(&loaded, "k");
    assert_eq!(
        (k.requests, k.failures, k.input_tokens, k.output_tokens),
        (12, 0, MAX, MAX)
    );
    assert_eq!(find(&loaded, "ok").requests, 0, "healthy rows untouched");
    assert_eq!(loaded.balances[0].used, MAX);
    let (all, _) = store.usage_totals(DAY1).await.unwrap();
    assert_eq!(
        (all.tokens.input_tokens, all.tokens.output_tokens),
        (MAX, 41)
    );
    store.close().unwrap();
    for (table, column) in [
        ("keys", "input_tokens"),
        ("keys", "requests"),
        ("keys", "failures"),
        ("keys", "output_tokens"),
        ("usage_rollups", "input_tokens"),
        ("usage_rollups", "output_tokens"),
        ("usage_records", "latency_ms"),
        ("balances", "used"),
    ] {
        assert_eq!(
            types(dir.path(), table, column),
            ["integer"],
            "{table}.{column}"
        );
    }
    let raw = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::schema_version());
}
