//! The database schema (migrations by `PRAGMA user_version`), the SQL of every [`StoreOp`] and
//! the loading of rows into records. Everything here runs on a connection the caller owns.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{SqliteError, clients, rejected, usage};
use crate::secret::Secret;
use crate::store::records::{
    CounterDelta, DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, DisabledBy, EventSource, KeyEvent,
    KeyRecord, KeyStatus, LastTest, Millis, PoolGroup, StoreOp, TestResult,
};

/// The migration steps: step `i` takes the schema from version `i` to `i + 1`. Append only;
/// never edit a released step.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the key pool, its groups, its history, stored settings, bookkeeping.
    "CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE pool_groups (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        priority    INTEGER NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE keys (
        id                TEXT PRIMARY KEY,
        secret            TEXT NOT NULL UNIQUE,
        status            TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'banned')),
        status_reason     TEXT,
        status_changed_at INTEGER,
        disabled_by       TEXT CHECK (disabled_by IN ('admin', 'auto')),
        pool_group        TEXT NOT NULL REFERENCES pool_groups (id),
        notes             TEXT NOT NULL DEFAULT '',
        created_at        INTEGER NOT NULL,
        last_used_at      INTEGER,
        cooldown_until    INTEGER,
        requests          INTEGER NOT NULL DEFAULT 0,
        successes         INTEGER NOT NULL DEFAULT 0,
        failures          INTEGER NOT NULL DEFAULT 0,
        input_tokens      INTEGER NOT NULL DEFAULT 0,
        output_tokens     INTEGER NOT NULL DEFAULT 0,
        last_test_at      INTEGER,
        last_test_result  TEXT,
        last_test_status  INTEGER
    );
    CREATE INDEX keys_pool_group ON keys (pool_group);
    CREATE TABLE key_events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id     TEXT NOT NULL,
        at         INTEGER NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        reason     TEXT NOT NULL,
        source     TEXT NOT NULL
    );
    CREATE INDEX key_events_key ON key_events (key_id, seq);
    CREATE TABLE settings (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: token-usage accounting: one row per client request, rollups per hour, day and all
    // time, and each key's balance from the last sync.
    "CREATE TABLE usage_records (
        seq                INTEGER PRIMARY KEY AUTOINCREMENT,
        at                 INTEGER NOT NULL,
        hour_start         INTEGER NOT NULL,
        day_start          INTEGER NOT NULL,
        credential         TEXT NOT NULL,
        attempts           INTEGER NOT NULL,
        client             TEXT NOT NULL,
        model              TEXT NOT NULL,
        route              TEXT NOT NULL,
        upstream_format    TEXT NOT NULL,
        status             INTEGER NOT NULL,
        input_tokens       INTEGER NOT NULL,
        cache_read_tokens  INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        reasoning_tokens   INTEGER NOT NULL,
        estimated          INTEGER NOT NULL,
        complete           INTEGER NOT NULL,
        latency_ms         INTEGER NOT NULL,
        ttfb_ms            INTEGER
    );
    CREATE INDEX usage_records_at ON usage_records (at);
    CREATE TABLE usage_rollups (
        granularity        TEXT NOT NULL CHECK (granularity IN ('hour', 'day', 'total')),
        dim                TEXT NOT NULL CHECK (dim IN ('all', 'key', 'model', 'client')),
        value              TEXT NOT NULL,
        bucket_start       INTEGER NOT NULL,
        requests           INTEGER NOT NULL DEFAULT 0,
        successes          INTEGER NOT NULL DEFAULT 0,
        input_tokens       INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens      INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (granularity, dim, value, bucket_start)
    ) WITHOUT ROWID;
    CREATE TABLE balances (
        key_id            TEXT PRIMARY KEY,
        used              INTEGER NOT NULL,
        allowance         INTEGER NOT NULL,
        premium_used      INTEGER NOT NULL,
        premium_allowance INTEGER NOT NULL,
        trial_end         INTEGER,
        synced_at         INTEGER NOT NULL
    );",
    // 3: requests rejected before authentication (bad client or admin key, throttled, …),
    // counted per local hour and reason; they are not usage records (`rejected.rs`).
    "CREATE TABLE rejected_counts (
        hour_start INTEGER NOT NULL,
        day_start  INTEGER NOT NULL,
        reason     TEXT NOT NULL,
        count      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour_start, reason)
    ) WITHOUT ROWID;
    CREATE INDEX rejected_counts_day ON rejected_counts (day_start);",
    // 4: counters that overflowed into REAL before sums saturated are repaired (see repair.rs).
    super::repair::REPAIR_REAL_COUNTERS,
    // 5: several instances (see fleet.rs): each rollup row carries the change sequence of its
    // last update (what this instance has not yet published), and the other instances' rollups
    // are mirrored. The rollups are rebuilt with the new column, so that the step also runs on
    // a database that has it already.
    super::fleet::FLEET_STEP,
    // 6: client keys (contract §13; see clients.rs): digests and masks, never the keys.
    super::clients::CLIENTS_STEP,
];

/// The schema version this build writes.
pub(super) fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

pub(super) fn sql(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SqliteError {
    let context = context.into();
    move |source| SqliteError::Sqlite {
        context,
        source: std::sync::Arc::new(source),
    }
}

/// Brings the schema up to date, one transaction per step. Refuses a database from the future.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), SqliteError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("reading the schema version"))?;
    let known = schema_version();
    if found > known || found < 0 {
        return Err(SqliteError::TooNew { found, known });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (index, step) in MIGRATIONS.iter().enumerate().skip(start) {
        let version = i64::try_from(index).unwrap_or(i64::MAX - 1) + 1;
        let context = format!("migrating the schema to version {version}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(context.clone()))?;
        tx.execute_batch(step).map_err(sql(context.clone()))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sql(context.clone()))?;
        tx.commit().map_err(sql(context))?;
        tracing::debug!(version, "store: schema migrated");
    }
    Ok(())
}

/// Creates the `default` group when it is missing.
pub(super) fn ensure_default_group(conn: &Connection, now: Millis) -> Result<(), SqliteError> {
    conn.execute(
        "INSERT OR IGNORE INTO pool_groups (id, name, priority, description, created_at)
         VALUES (?1, ?1, ?2, '', ?3)",
        params![DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, now],
    )
    .map_err(sql("creating the default group"))?;
    Ok(())
}

pub(super) fn meta_get(conn: &Connection, name: &str) -> Result<Option<String>, SqliteError> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
    .map_err(sql(format!("reading meta {name}")))
}

pub(super) fn meta_set(conn: &Connection, name: &str, value: &str) -> Result<(), SqliteError> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [name, value],
    )
    .map_err(sql(format!("writing meta {name}")))?;
    Ok(())
}

/// Whether the pool is empty: no key and no group but `default`.
pub(super) fn pool_is_empty(conn: &Connection) -> Result<bool, SqliteError> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM keys) + (SELECT count(*) FROM pool_groups WHERE id <> ?1)",
        [DEFAULT_GROUP],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n == 0)
    .map_err(sql("counting keys and groups"))
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A whole key. Once the key exists its counters (`requests` … `output_tokens`,
/// `last_used_at`) are left alone: they are maintained by `AddCounters` deltas alone, and the
/// pool's copy already includes deltas not yet flushed (writing it would count them twice).
const UPSERT_KEY: &str = "INSERT INTO keys (id, secret, status, status_reason, status_changed_at,
        disabled_by, pool_group, notes, created_at, last_used_at, cooldown_until, requests,
        successes, failures, input_tokens, output_tokens, last_test_at, last_test_result,
        last_test_status)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
    ON CONFLICT (id) DO UPDATE SET secret = excluded.secret, status = excluded.status,
        status_reason = excluded.status_reason, status_changed_at = excluded.status_changed_at,
        disabled_by = excluded.disabled_by, pool_group = excluded.pool_group,
        notes = excluded.notes, created_at = excluded.created_at,
        cooldown_until = excluded.cooldown_until,
        last_test_at = excluded.last_test_at, last_test_result = excluded.last_test_result,
        last_test_status = excluded.last_test_status";

const UPDATE_KEY_STATE: &str = "UPDATE keys SET status = ?2, status_reason = ?3,
        status_changed_at = ?4, disabled_by = ?5, cooldown_until = ?6, last_test_at = ?7,
        last_test_result = ?8, last_test_status = ?9
    WHERE id = ?1";

/// Counters only ever grow, saturating at `i64::MAX` (SQLite would turn an overflowing `+` into
/// a REAL). The deltas are bound as non-negative integers.
const ADD_COUNTERS: &str = "UPDATE keys SET
        requests = CASE WHEN requests > 9223372036854775807 - ?2 THEN 9223372036854775807
            ELSE requests + ?2 END,
        successes = CASE WHEN successes > 9223372036854775807 - ?3 THEN 9223372036854775807
            ELSE successes + ?3 END,
        failures = CASE WHEN failures > 9223372036854775807 - ?4 THEN 9223372036854775807
            ELSE failures + ?4 END,
        input_tokens = CASE WHEN input_tokens > 9223372036854775807 - ?5 THEN 9223372036854775807
            ELSE input_tokens + ?5 END,
        output_tokens = CASE WHEN output_tokens > 9223372036854775807 - ?6
            THEN 9223372036854775807 ELSE output_tokens + ?6 END,
        last_used_at = CASE
            WHEN ?7 IS NULL THEN last_used_at
            WHEN last_used_at IS NULL OR last_used_at < ?7 THEN ?7
            ELSE last_used_at END
    WHERE id = ?1";

const UPSERT_GROUP: &str = "INSERT INTO pool_groups (id, name, priority, description, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, priority = excluded.priority,
        description = excluded.description, created_at = excluded.created_at";

const INSERT_EVENT: &str =
    "INSERT INTO key_events (key_id, at, from_state, to_state, reason, source)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// A traffic event is stored only while its key exists: one queued before an admin deleted the
/// key is dropped rather than written after the deletion's own event.
const INSERT_EVENT_OF_EXISTING_KEY: &str =
    "INSERT INTO key_events (key_id, at, from_state, to_state, reason, source)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM keys WHERE id = ?1)";

const UPSERT_SETTING: &str = "INSERT INTO settings (name, value) VALUES (?1, ?2)
    ON CONFLICT (name) DO UPDATE SET value = excluded.value";

/// Applies one op. The caller wraps a batch in a savepoint: an error rolls the whole batch back.
pub(super) fn apply_op(conn: &Connection, op: &StoreOp) -> Result<(), SqliteError> {
    match op {
        StoreOp::PutKey(k) => {
            let (test_at, test_result, test_status) = last_test_columns(k.last_test);
            conn.prepare_cached(UPSERT_KEY)
                .and_then(|mut st| {
                    st.execute(params![
                        k.id,
                        k.secret.expose(),
                        k.status.as_str(),
                        k.status_reason,
                        k.status_changed_at,
                        k.disabled_by.map(DisabledBy::as_str),
                        k.pool_group,
                        k.notes,
                        k.created_at,
                        k.last_used_at,
                        k.cooldown_until,
                        to_i64(k.requests),
                        to_i64(k.successes),
                        to_i64(k.failures),
                        to_i64(k.input_tokens),
                        to_i64(k.output_tokens),
                        test_at,
                        test_result,
                        test_status,
                    ])
                })
                .map_err(sql(format!("storing key {}", k.id)))?;
        }
        StoreOp::PutKeyState(k) => update_key_state(conn, k)?,
        StoreOp::DeleteKey(id) => {
            // The key's events and usage are kept: its history stays readable by id. Its
            // balance goes with it.
            conn.prepare_cached("DELETE FROM keys WHERE id = ?1")
                .and_then(|mut st| st.execute([id]))
                .map_err(sql(format!("deleting key {id}")))?;
            usage::delete_balance(conn, id)?;
        }
        StoreOp::PutGroup(g) => {
            conn.prepare_cached(UPSERT_GROUP)
                .and_then(|mut st| {
                    st.execute(params![
                        g.id,
                        g.name,
                        g.priority,
                        g.description,
                        g.created_at
                    ])
                })
                .map_err(sql(format!("storing group {}", g.id)))?;
        }
        StoreOp::DeleteGroup { id, move_keys_to } => {
            if id == DEFAULT_GROUP {
                return Err(SqliteError::Refused(format!(
                    "the {DEFAULT_GROUP} group cannot be deleted"
                )));
            }
            if id == move_keys_to {
                return Err(SqliteError::Refused(format!(
                    "group {id} cannot be deleted into itself"
                )));
            }
            let context = format!("deleting group {id} (keys to {move_keys_to})");
            conn.execute(
                "UPDATE keys SET pool_group = ?2 WHERE pool_group = ?1",
                [id, move_keys_to],
            )
            .map_err(sql(context.clone()))?;
            conn.execute("DELETE FROM pool_groups WHERE id = ?1", [id])
                .map_err(sql(context))?;
        }
        StoreOp::AddEvents(events) => {
            for e in events {
                insert_event(conn, INSERT_EVENT, e)?;
            }
        }
        StoreOp::AddCounters(deltas) => {
            for d in deltas {
                add_counters(conn, d)?;
            }
        }
        StoreOp::PutSetting { name, value } => {
            conn.prepare_cached(UPSERT_SETTING)
                .and_then(|mut st| st.execute(params![name, value.to_string()]))
                .map_err(sql(format!("storing setting {name}")))?;
        }
        StoreOp::ClearSettings => {
            conn.execute("DELETE FROM settings", [])
                .map_err(sql("clearing settings"))?;
        }
        StoreOp::AddUsage(records) => usage::add_usage(conn, records)?,
        StoreOp::PutBalance(b) => usage::put_balance(conn, b)?,
        StoreOp::AddRejected(counts) => rejected::add(conn, counts)?,
        StoreOp::PutClient(c) => clients::put_client(conn, c)?,
        StoreOp::DeleteClient(id) => clients::delete_client(conn, id)?,
    }
    Ok(())
}

/// Updates a key's state fields (never creates the key).
pub(super) fn update_key_state(conn: &Connection, k: &KeyRecord) -> Result<(), SqliteError> {
    let (test_at, test_result, test_status) = last_test_columns(k.last_test);
    conn.prepare_cached(UPDATE_KEY_STATE)
        .and_then(|mut st| {
            st.execute(params![
                k.id,
                k.status.as_str(),
                k.status_reason,
                k.status_changed_at,
                k.disabled_by.map(DisabledBy::as_str),
                k.cooldown_until,
                test_at,
                test_result,
                test_status,
            ])
        })
        .map_err(sql(format!("storing the state of key {}", k.id)))?;
    Ok(())
}

/// Adds a key's counter deltas, saturating (never creates the key).
pub(super) fn add_counters(conn: &Connection, d: &CounterDelta) -> Result<(), SqliteError> {
    conn.prepare_cached(ADD_COUNTERS)
        .and_then(|mut st| {
            st.execute(params![
                d.key_id,
                to_i64(d.requests),
                to_i64(d.successes),
                to_i64(d.failures),
                to_i64(d.input_tokens),
                to_i64(d.output_tokens),
                d.last_used_at,
            ])
        })
        .map_err(sql(format!("adding counters of key {}", d.key_id)))?;
    Ok(())
}

fn insert_event(conn: &Connection, statement: &str, e: &KeyEvent) -> Result<(), SqliteError> {
    conn.prepare_cached(statement)
        .and_then(|mut st| {
            st.execute(params![
                e.key_id,
                e.at,
                e.from,
                e.to,
                e.reason,
                e.source.as_str()
            ])
        })
        .map_err(sql(format!("storing an event of key {}", e.key_id)))?;
    Ok(())
}

/// Stores a traffic event unless its key no longer exists.
pub(super) fn add_event_of_existing_key(
    conn: &Connection,
    e: &KeyEvent,
) -> Result<(), SqliteError> {
    insert_event(conn, INSERT_EVENT_OF_EXISTING_KEY, e)
}

fn last_test_columns(t: Option<LastTest>) -> (Option<Millis>, Option<&'static str>, Option<i64>) {
    match t {
        Some(t) => (
            Some(t.at),
            Some(t.result.as_str()),
            Some(i64::from(t.status)),
        ),
        None => (None, None, None),
    }
}

const KEY_COLUMNS: &str = "id, secret, status, status_reason, status_changed_at, disabled_by,
    pool_group, notes, created_at, last_used_at, cooldown_until, requests, successes, failures,
    input_tokens, output_tokens, last_test_at, last_test_result, last_test_status";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let id: String = row.get(0)?;
    let status_text: String = row.get(2)?;
    let status = KeyStatus::parse(&status_text).unwrap_or_else(|| {
        tracing::warn!(key = %id, "store: key has an unknown status; loaded as disabled");
        KeyStatus::Disabled
    });
    let disabled_by = row
        .get::<_, Option<String>>(5)?
        .and_then(|s| DisabledBy::parse(&s));
    let test_at: Option<Millis> = row.get(16)?;
    let test_result: Option<String> = row.get(17)?;
    let test_status: Option<i64> = row.get(18)?;
    let last_test = match (test_at, test_result.as_deref().and_then(TestResult::parse)) {
        (Some(at), Some(result)) => Some(LastTest {
            at,
            result,
            status: u16::try_from(test_status.unwrap_or(0)).unwrap_or(0),
        }),
        _ => None,
    };
    Ok(KeyRecord {
        secret: Secret::new(row.get::<_, String>(1)?),
        status,
        status_reason: row.get(3)?,
        status_changed_at: row.get(4)?,
        disabled_by,
        pool_group: row.get(6)?,
        notes: row.get(7)?,
        created_at: row.get(8)?,
        last_used_at: row.get(9)?,
        cooldown_until: row.get(10)?,
        requests: to_u64(row.get(11)?),
        successes: to_u64(row.get(12)?),
        failures: to_u64(row.get(13)?),
        input_tokens: to_u64(row.get(14)?),
        output_tokens: to_u64(row.get(15)?),
        last_test,
        id,
    })
}

/// Every key, in insertion order (stable round-robin order).
pub(super) fn load_keys(conn: &Connection) -> Result<Vec<KeyRecord>, SqliteError> {
    let mut st = conn
        .prepare(&format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY rowid"))
        .map_err(sql("loading keys"))?;
    st.query_map([], key_from_row)
        .and_then(|rows| rows.collect())
        .map_err(sql("loading keys"))
}

/// Every group, by priority (then creation order).
pub(super) fn load_groups(conn: &Connection) -> Result<Vec<PoolGroup>, SqliteError> {
    let mut st = conn
        .prepare(
            "SELECT id, name, priority, description, created_at FROM pool_groups
             ORDER BY priority, rowid",
        )
        .map_err(sql("loading groups"))?;
    st.query_map([], |r| {
        Ok(PoolGroup {
            id: r.get(0)?,
            name: r.get(1)?,
            priority: r.get(2)?,
            description: r.get(3)?,
            created_at: r.get(4)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sql("loading groups"))
}

/// Every stored setting. A value that is not JSON (never written by us) is skipped with a warning.
pub(super) fn load_settings(
    conn: &Connection,
) -> Result<BTreeMap<String, serde_json::Value>, SqliteError> {
    let mut st = conn
        .prepare("SELECT name, value FROM settings ORDER BY name")
        .map_err(sql("loading settings"))?;
    let rows: Vec<(String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(sql("loading settings"))?;
    let mut out = BTreeMap::new();
    for (name, text) in rows {
        match serde_json::from_str(&text) {
            Ok(value) => {
                out.insert(name, value);
            }
            Err(_) => {
                tracing::warn!(setting = %name, "store: stored setting is not JSON; ignored");
            }
        }
    }
    Ok(out)
}

/// A key's events, newest first (by time, then by insertion: admin changes are written before
/// traffic queued earlier, so insertion order alone can disagree with time).
pub(super) fn load_history(
    conn: &Connection,
    key_id: &str,
    limit: usize,
) -> Result<Vec<KeyEvent>, SqliteError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut st = conn
        .prepare_cached(
            "SELECT key_id, at, from_state, to_state, reason, source FROM key_events
             WHERE key_id = ?1 ORDER BY at DESC, seq DESC LIMIT ?2",
        )
        .map_err(sql(format!("reading the history of key {key_id}")))?;
    let rows: Vec<(String, Millis, Option<String>, String, String, String)> = st
        .query_map(params![key_id, limit], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(sql(format!("reading the history of key {key_id}")))?;
    Ok(rows
        .into_iter()
        .filter_map(|(key_id, at, from, to, reason, source)| {
            let Some(source) = EventSource::parse(&source) else {
                tracing::warn!(key = %key_id, "store: event with an unknown source; skipped");
                return None;
            };
            Some(KeyEvent {
                key_id,
                at,
                from,
                to,
                reason,
                source,
            })
        })
        .collect())
}
