//! Usage of several instances (contract §12, schema version 5): what this instance publishes and
//! what it mirrors of the others.
//!
//! - **Changes to publish.** Every rollup row carries `changed_seq`, the change sequence of the
//!   writer's batch that last updated it (one new sequence per `add_usage` call, above every
//!   one in the table). Rows are read in `(changed_seq, primary key)` order from a
//!   [`ChangeCursor`], so a publisher that remembers where it stopped reads only what changed
//!   since, in pages, without the writer keeping any other state. A row updated again moves
//!   past the cursor and is read again (with its new, absolute sums).
//! - **The mirror.** `fleet_rollups` holds the other instances' rollup rows (absolute sums, as
//!   they published them) under their instance id, and `fleet_cursors` how far each
//!   instance's change list was read, both written in one transaction through the writer.
//!   When the store is told to include them ([`Store::include_fleet`]), every usage answer adds
//!   the mirror's sums to the local ones; per-record views (a series by key *and* model) stay
//!   local.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::queue::AdminMsg;
use super::schema::{sql, to_i64};
use super::usage::{ROLLUP_SUMS, UsageTotals, totals_at};
use super::{SqliteError, Store};
use crate::store::StoreError;
use crate::store::records::Millis;

/// Schema step 5 (appended to `schema::MIGRATIONS`).
pub(super) const FLEET_STEP: &str = "
    CREATE TABLE usage_rollups_v5 (
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
        changed_seq        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (granularity, dim, value, bucket_start)
    ) WITHOUT ROWID;
    INSERT INTO usage_rollups_v5 (granularity, dim, value, bucket_start, requests, successes,
            input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens)
        SELECT granularity, dim, value, bucket_start, requests, successes, input_tokens,
            cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens
        FROM usage_rollups;
    DROP TABLE usage_rollups;
    ALTER TABLE usage_rollups_v5 RENAME TO usage_rollups;
    CREATE INDEX usage_rollups_changed
        ON usage_rollups (changed_seq, granularity, dim, value, bucket_start);
    CREATE TABLE IF NOT EXISTS fleet_rollups (
        granularity        TEXT NOT NULL,
        dim                TEXT NOT NULL,
        value              TEXT NOT NULL,
        bucket_start       INTEGER NOT NULL,
        instance           TEXT NOT NULL,
        requests           INTEGER NOT NULL DEFAULT 0,
        successes          INTEGER NOT NULL DEFAULT 0,
        input_tokens       INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens      INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (granularity, dim, value, bucket_start, instance)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS fleet_rollups_bucket
        ON fleet_rollups (granularity, dim, bucket_start);
    CREATE TABLE IF NOT EXISTS fleet_cursors (
        instance TEXT PRIMARY KEY,
        score    INTEGER NOT NULL
    ) WITHOUT ROWID;";

/// One rollup row: where it counts (granularity `hour|day|total`, dimension `all|key|model|
/// client` and its value, bucket start) and its sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupRow {
    pub granularity: String,
    pub dim: String,
    pub value: String,
    pub bucket_start: Millis,
    pub totals: UsageTotals,
}

/// A position in the order the local rollups changed: rows after it are those changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCursor {
    seq: i64,
    granularity: String,
    dim: String,
    value: String,
    bucket_start: Millis,
}

impl ChangeCursor {
    /// Before every row.
    pub fn start() -> ChangeCursor {
        ChangeCursor::after_seq(-1)
    }

    /// After every row whose last change has sequence `seq` or lower.
    pub fn after_seq(seq: i64) -> ChangeCursor {
        ChangeCursor {
            seq: seq.saturating_add(1),
            granularity: String::new(),
            dim: String::new(),
            value: String::new(),
            bucket_start: Millis::MIN,
        }
    }

    /// The highest change sequence fully behind this cursor once every row after it was read
    /// (a batch's rows share its sequence and are committed together).
    pub fn complete_seq(&self) -> i64 {
        if self.granularity.is_empty() {
            self.seq - 1
        } else {
            self.seq
        }
    }

    /// The change sequence of the row it was taken at.
    pub fn seq(&self) -> i64 {
        self.seq
    }
}

/// The sums of [`ROLLUP_SUMS`] added over several rows (saturating at `i64::MAX`: `total()` is a float).
const SUMMED: &str = "CAST(total(requests) AS INTEGER), CAST(total(successes) AS INTEGER),
    CAST(total(input_tokens) AS INTEGER), CAST(total(cache_read_tokens) AS INTEGER),
    CAST(total(cache_write_tokens) AS INTEGER), CAST(total(output_tokens) AS INTEGER),
    CAST(total(reasoning_tokens) AS INTEGER)";

/// The sequence the writer's next rollup batch is stamped with.
pub(super) fn next_seq(conn: &Connection) -> Result<i64, SqliteError> {
    conn.prepare_cached("SELECT coalesce(max(changed_seq), 0) + 1 FROM usage_rollups")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(sql("reading the rollups' change sequence"))
}

/// Up to `limit` rollup rows changed after `after`, in change order, each with its cursor.
fn changed(
    conn: &Connection,
    after: &ChangeCursor,
    limit: usize,
) -> Result<Vec<(ChangeCursor, RollupRow)>, SqliteError> {
    let text = format!(
        "SELECT changed_seq, granularity, dim, value, bucket_start, {ROLLUP_SUMS} FROM usage_rollups
         WHERE (changed_seq, granularity, dim, value, bucket_start) > (?1, ?2, ?3, ?4, ?5)
         ORDER BY changed_seq, granularity, dim, value, bucket_start LIMIT ?6"
    );
    let context = || "reading the changed usage rollups".to_string();
    let mut st = conn.prepare_cached(&text).map_err(sql(context()))?;
    st.query_map(
        params![
            after.seq,
            after.granularity,
            after.dim,
            after.value,
            after.bucket_start,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            let row = RollupRow {
                granularity: r.get(1)?,
                dim: r.get(2)?,
                value: r.get(3)?,
                bucket_start: r.get(4)?,
                totals: totals_at(r, 5)?,
            };
            let cursor = ChangeCursor {
                seq: r.get(0)?,
                granularity: row.granularity.clone(),
                dim: row.dim.clone(),
                value: row.value.clone(),
                bucket_start: row.bucket_start,
            };
            Ok((cursor, row))
        },
    )
    .and_then(|rows| rows.collect())
    .map_err(sql(context()))
}

fn max_seq(conn: &Connection) -> Result<i64, SqliteError> {
    conn.query_row(
        "SELECT coalesce(max(changed_seq), 0) FROM usage_rollups",
        [],
        |r| r.get(0),
    )
    .map_err(sql("reading the rollups' change sequence"))
}

const UPSERT_MIRROR: &str = "INSERT INTO fleet_rollups (granularity, dim, value, bucket_start,
        instance, requests, successes, input_tokens, cache_read_tokens, cache_write_tokens,
        output_tokens, reasoning_tokens)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
    ON CONFLICT (granularity, dim, value, bucket_start, instance) DO UPDATE SET
        requests = max(requests, excluded.requests),
        successes = max(successes, excluded.successes),
        input_tokens = max(input_tokens, excluded.input_tokens),
        cache_read_tokens = max(cache_read_tokens, excluded.cache_read_tokens),
        cache_write_tokens = max(cache_write_tokens, excluded.cache_write_tokens),
        output_tokens = max(output_tokens, excluded.output_tokens),
        reasoning_tokens = max(reasoning_tokens, excluded.reasoning_tokens)";

/// Stores another instance's rows and, with `score`, how far its change list was read. The
/// sums are absolute and only ever grow, so the mirror keeps the larger of what it held and
/// what came: an older copy read late (one re-seeded by a third instance, a retried read)
/// never takes a row back.
pub(super) fn put_mirror(
    conn: &Connection,
    instance: &str,
    rows: &[RollupRow],
    score: Option<i64>,
) -> Result<(), SqliteError> {
    let context = || format!("mirroring the usage of instance {instance}");
    let mut st = conn.prepare_cached(UPSERT_MIRROR).map_err(sql(context()))?;
    for r in rows {
        let t = &r.totals;
        st.execute(params![
            r.granularity,
            r.dim,
            r.value,
            r.bucket_start,
            instance,
            to_i64(t.requests),
            to_i64(t.successes),
            to_i64(t.tokens.input_tokens),
            to_i64(t.tokens.cache_read_tokens),
            to_i64(t.tokens.cache_write_tokens),
            to_i64(t.tokens.output_tokens),
            to_i64(t.tokens.reasoning_tokens),
        ])
        .map_err(sql(context()))?;
    }
    if let Some(score) = score {
        conn.prepare_cached(
            "INSERT INTO fleet_cursors (instance, score) VALUES (?1, ?2)
             ON CONFLICT (instance) DO UPDATE SET score = excluded.score",
        )
        .and_then(|mut st| st.execute(params![instance, score]))
        .map_err(sql(context()))?;
    }
    Ok(())
}

fn cursors(conn: &Connection) -> Result<HashMap<String, i64>, SqliteError> {
    let mut st = conn
        .prepare("SELECT instance, score FROM fleet_cursors")
        .map_err(sql("reading the fleet cursors"))?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(sql("reading the fleet cursors"))
}

/// Where a page of the mirror ends: (granularity, dim, value, bucket start, instance).
pub type MirrorPos = (String, String, String, Millis, String);

/// Up to `limit` mirror rows after `after` (primary-key order), with their instance.
fn mirror_page(
    conn: &Connection,
    after: Option<&MirrorPos>,
    limit: usize,
) -> Result<Vec<(String, RollupRow)>, SqliteError> {
    let text = format!(
        "SELECT instance, granularity, dim, value, bucket_start, {ROLLUP_SUMS} FROM fleet_rollups
         WHERE (granularity, dim, value, bucket_start, instance) > (?1, ?2, ?3, ?4, ?5)
         ORDER BY granularity, dim, value, bucket_start, instance LIMIT ?6"
    );
    let empty = (
        String::new(),
        String::new(),
        String::new(),
        Millis::MIN,
        String::new(),
    );
    let (g, d, v, b, i) = after.unwrap_or(&empty);
    let context = || "reading the usage mirror".to_string();
    let mut st = conn.prepare_cached(&text).map_err(sql(context()))?;
    st.query_map(
        params![g, d, v, b, i, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok((
                r.get(0)?,
                RollupRow {
                    granularity: r.get(1)?,
                    dim: r.get(2)?,
                    value: r.get(3)?,
                    bucket_start: r.get(4)?,
                    totals: totals_at(r, 5)?,
                },
            ))
        },
    )
    .and_then(|rows| rows.collect())
    .map_err(sql(context()))
}

fn grouped(
    conn: &Connection,
    text: &str,
    params: impl rusqlite::Params,
    context: String,
) -> Result<ByValue, SqliteError> {
    let mut st = conn.prepare_cached(text).map_err(sql(context.clone()))?;
    st.query_map(params, |r| Ok((r.get(0)?, totals_at(r, 1)?)))
        .and_then(|rows| rows.collect())
        .map_err(sql(context))
}

/// Sums per value of a dimension.
type ByValue = Vec<(String, UsageTotals)>;

/// The other instances' sums per value of `dim`: all-time, and for the day at `day_start`.
pub(super) fn mirror_by(
    conn: &Connection,
    dim: &str,
    day_start: Millis,
) -> Result<(ByValue, ByValue), SqliteError> {
    let all = grouped(
        conn,
        &format!(
            "SELECT value, {SUMMED} FROM fleet_rollups
             WHERE granularity = 'total' AND dim = ?1 GROUP BY value"
        ),
        params![dim],
        format!("reading the fleet's usage by {dim}"),
    )?;
    let day = grouped(
        conn,
        &format!(
            "SELECT value, {SUMMED} FROM fleet_rollups
             WHERE granularity = 'day' AND dim = ?1 AND bucket_start = ?2 GROUP BY value"
        ),
        params![dim, day_start],
        format!("reading the fleet's usage by {dim} today"),
    )?;
    Ok((all, day))
}

/// The other instances' sums per bucket of one rollup series, `from <= bucket < to`.
pub(super) fn mirror_series(
    conn: &Connection,
    granularity: &str,
    dim: &str,
    value: &str,
    from: Millis,
    to: Millis,
) -> Result<Vec<(Millis, UsageTotals)>, SqliteError> {
    let text = format!(
        "SELECT bucket_start, {SUMMED} FROM fleet_rollups
         WHERE granularity = ?1 AND dim = ?2 AND value = ?3 AND bucket_start >= ?4
            AND bucket_start < ?5
         GROUP BY bucket_start ORDER BY bucket_start"
    );
    let context = || format!("reading the fleet's {granularity} usage series");
    let mut st = conn.prepare_cached(&text).map_err(sql(context()))?;
    st.query_map(params![granularity, dim, value, from, to], |r| {
        Ok((r.get(0)?, totals_at(r, 1)?))
    })
    .and_then(|rows| rows.collect())
    .map_err(sql(context()))
}

/// One mirror write in its own transaction (the writer's side of [`Store::mirror_fleet`]).
pub(super) fn mirror_attempt(
    conn: &mut Connection,
    instance: &str,
    rows: &[RollupRow],
    score: Option<i64>,
) -> Result<Result<(), SqliteError>, SqliteError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql("starting a transaction"))?;
    if let Err(e) = put_mirror(&tx, instance, rows, score) {
        return Ok(Err(e));
    }
    Ok(tx.commit().map_err(sql("committing")))
}

impl Store {
    /// Whether usage answers add the other instances' mirrored rollups (on with `REDIS_URL`).
    pub fn include_fleet(&self, on: bool) {
        self.inner
            .fleet
            .store(on, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn fleet_included(&self) -> bool {
        self.inner.fleet.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Up to `limit` local rollup rows changed after `after`, in change order, each with the
    /// cursor to continue from.
    pub async fn rollups_changed(
        &self,
        after: ChangeCursor,
        limit: usize,
    ) -> Result<Vec<(ChangeCursor, RollupRow)>, StoreError> {
        self.read(move |conn| changed(conn, &after, limit)).await
    }

    /// The highest change sequence of the local rollups (0 when there are none).
    pub async fn rollups_max_seq(&self) -> Result<i64, StoreError> {
        self.read(max_seq).await
    }

    /// Stores rows another instance published (absolute sums), and with `score` how far its
    /// change list was read, in one transaction, through the writer; returns once committed (at
    /// most the acknowledgement timeout).
    pub async fn mirror_fleet(
        &self,
        instance: &str,
        rows: Vec<RollupRow>,
        score: Option<i64>,
    ) -> Result<(), StoreError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.admin_and_wait(
            AdminMsg::Mirror {
                instance: instance.to_string(),
                rows,
                score,
                ack,
            },
            done,
            self.inner.options.ack_timeout,
        )
        .await
    }

    /// How far each other instance's change list was read (as stored with the mirror).
    pub async fn fleet_cursors(&self) -> Result<HashMap<String, i64>, StoreError> {
        self.read(cursors).await
    }

    /// Up to `limit` mirrored rows after `after`, with their instance (to seed an empty shared
    /// store with what this instance knows of the others).
    pub async fn fleet_mirror_page(
        &self,
        after: Option<MirrorPos>,
        limit: usize,
    ) -> Result<Vec<(String, RollupRow)>, StoreError> {
        self.read(move |conn| mirror_page(conn, after.as_ref(), limit))
            .await
    }
}

#[cfg(test)]
mod tests;
