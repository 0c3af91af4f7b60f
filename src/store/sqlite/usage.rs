//! The SQL of token-usage accounting: usage records and their rollups, balances, and the reads
//! behind the usage endpoints. Everything here runs on a connection the caller owns (the writer's
//! for writes, the read-only one for reads).
//!
//! Rollups are kept per granularity (`hour`, `day`, and `total`: one all-time bucket at
//! `bucket_start` 0, the sum of the day rollups — plus, after `droid2api migrate`, the Node.js
//! version's all-time totals older than its daily history —, kept so that all-time figures cost
//! one row per value instead of one per day), per dimension (`all` with value `''`, `key` = the record's
//! credential, `model`, `client`) and per bucket start (the caller's local hour or day start as
//! UTC milliseconds). A batch's records are added up in memory first, so one upsert per distinct
//! rollup row is written, however many records share it.

use std::collections::BTreeMap;

use rusqlite::{Connection, Row, params};

use super::schema::{sql, to_i64, to_u64};
use super::{SqliteError, fleet};
use crate::store::records::{BalanceRecord, Millis, UsageRecord};

/// Token counts (contract §7 token object without its derived total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Reasoning included.
    pub output_tokens: u64,
    /// Part of `output_tokens`.
    pub reasoning_tokens: u64,
}

impl Tokens {
    /// `total_tokens` = input + cache read + cache write + output (reasoning is part of output).
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
            .saturating_add(self.output_tokens)
    }

    fn add(&mut self, other: &Tokens) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
    }
}

/// Requests, successes (status 2xx) and tokens over some set of usage records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub requests: u64,
    pub successes: u64,
    pub tokens: Tokens,
}

impl UsageTotals {
    /// Adds `other` (saturating).
    pub(super) fn add(&mut self, other: &UsageTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.successes = self.successes.saturating_add(other.successes);
        self.tokens.add(&other.tokens);
    }

    fn add_record(&mut self, r: &UsageRecord) {
        self.requests = self.requests.saturating_add(1);
        if is_success(r.status) {
            self.successes = self.successes.saturating_add(1);
        }
        self.tokens.add(&Tokens {
            input_tokens: r.input_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cache_write_tokens: r.cache_write_tokens,
            output_tokens: r.output_tokens,
            reasoning_tokens: r.reasoning_tokens,
        });
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

const HOUR: &str = "hour";
const DAY: &str = "day";
const TOTAL: &str = "total";
const DIM_ALL: &str = "all";
const DIM_KEY: &str = "key";
const DIM_MODEL: &str = "model";
const DIM_CLIENT: &str = "client";

/// How far a record's `at` may lie outside its bucket `[start, start + length)` and still be
/// found by a series computed from the records (the `at` index narrows the scan first). Covers
/// local hours and days of any length and a bucket start taken at the end of a long request.
const HOUR_SLACK_MS: Millis = 3 * 3_600_000;
const DAY_SLACK_MS: Millis = 2 * 86_400_000;

const INSERT_USAGE: &str = "INSERT INTO usage_records (at, hour_start, day_start, credential,
        attempts, client, model, route, upstream_format, status, input_tokens,
        cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, estimated,
        complete, latency_ms, ttfb_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

/// Rollups add up saturating at `i64::MAX` (an overflowing `+` would turn into a REAL in
/// SQLite, after which the row can no longer be read as an integer). The added values are
/// non-negative.
const UPSERT_ROLLUP: &str = "INSERT INTO usage_rollups (granularity, dim, value, bucket_start,
        requests, successes, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens,
        reasoning_tokens, changed_seq)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
    ON CONFLICT (granularity, dim, value, bucket_start) DO UPDATE SET
        changed_seq = excluded.changed_seq,
        requests = CASE WHEN requests > 9223372036854775807 - excluded.requests
            THEN 9223372036854775807 ELSE requests + excluded.requests END,
        successes = CASE WHEN successes > 9223372036854775807 - excluded.successes
            THEN 9223372036854775807 ELSE successes + excluded.successes END,
        input_tokens = CASE WHEN input_tokens > 9223372036854775807 - excluded.input_tokens
            THEN 9223372036854775807 ELSE input_tokens + excluded.input_tokens END,
        cache_read_tokens = CASE WHEN cache_read_tokens > 9223372036854775807 - excluded.cache_read_tokens
            THEN 9223372036854775807 ELSE cache_read_tokens + excluded.cache_read_tokens END,
        cache_write_tokens = CASE WHEN cache_write_tokens > 9223372036854775807 - excluded.cache_write_tokens
            THEN 9223372036854775807 ELSE cache_write_tokens + excluded.cache_write_tokens END,
        output_tokens = CASE WHEN output_tokens > 9223372036854775807 - excluded.output_tokens
            THEN 9223372036854775807 ELSE output_tokens + excluded.output_tokens END,
        reasoning_tokens = CASE WHEN reasoning_tokens > 9223372036854775807 - excluded.reasoning_tokens
            THEN 9223372036854775807 ELSE reasoning_tokens + excluded.reasoning_tokens END";

/// A pool key's balance; a key that is not (or no longer) in the pool gets none (a sync may race
/// the key's deletion).
const UPSERT_BALANCE: &str = "INSERT INTO balances (key_id, used, allowance, premium_used,
        premium_allowance, trial_end, synced_at)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM keys WHERE id = ?1)
    ON CONFLICT (key_id) DO UPDATE SET used = excluded.used, allowance = excluded.allowance,
        premium_used = excluded.premium_used, premium_allowance = excluded.premium_allowance,
        trial_end = excluded.trial_end, synced_at = excluded.synced_at";

/// The rollup row a record counts in: (granularity, dim, value, bucket start), in key order.
type RollupKey<'a> = (&'static str, &'static str, &'a str, Millis);

/// Inserts the records and adds them to every rollup they count in, stamping the rollup rows
/// with a new change sequence (`fleet.rs`).
pub(super) fn add_usage(conn: &Connection, records: &[UsageRecord]) -> Result<(), SqliteError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached(INSERT_USAGE)
        .map_err(sql("storing usage records"))?;
    let mut rollups: BTreeMap<RollupKey<'_>, UsageTotals> = BTreeMap::new();
    for r in records {
        insert
            .execute(params![
                r.at,
                r.hour_start,
                r.day_start,
                r.credential,
                i64::from(r.attempts),
                r.client,
                r.model,
                r.route,
                r.upstream_format,
                i64::from(r.status),
                to_i64(r.input_tokens),
                to_i64(r.cache_read_tokens),
                to_i64(r.cache_write_tokens),
                to_i64(r.output_tokens),
                to_i64(r.reasoning_tokens),
                r.estimated,
                r.complete,
                to_i64(r.latency_ms),
                r.ttfb_ms.map(to_i64),
            ])
            .map_err(sql("storing a usage record"))?;
        for (granularity, start) in [(HOUR, r.hour_start), (DAY, r.day_start), (TOTAL, 0)] {
            for (dim, value) in [
                (DIM_ALL, ""),
                (DIM_KEY, r.credential.as_str()),
                (DIM_MODEL, r.model.as_str()),
                (DIM_CLIENT, r.client.as_str()),
            ] {
                rollups
                    .entry((granularity, dim, value, start))
                    .or_default()
                    .add_record(r);
            }
        }
    }
    let seq = fleet::next_seq(conn)?;
    let mut upsert = conn
        .prepare_cached(UPSERT_ROLLUP)
        .map_err(sql("updating usage rollups"))?;
    for ((granularity, dim, value, start), t) in rollups {
        upsert
            .execute(params![
                granularity,
                dim,
                value,
                start,
                to_i64(t.requests),
                to_i64(t.successes),
                to_i64(t.tokens.input_tokens),
                to_i64(t.tokens.cache_read_tokens),
                to_i64(t.tokens.cache_write_tokens),
                to_i64(t.tokens.output_tokens),
                to_i64(t.tokens.reasoning_tokens),
                seq,
            ])
            .map_err(sql(format!(
                "updating the {granularity} usage rollup of {dim}"
            )))?;
    }
    Ok(())
}

/// Adds whole rollup rows (sums, not records) to the rollups, stamped with a new change
/// sequence like [`add_usage`]'s. Used by `droid2api migrate` for history that exists only as
/// rollups (the Node.js version's daily and hourly totals); no usage record is written.
pub(super) fn add_rollups(conn: &Connection, rows: &[fleet::RollupRow]) -> Result<(), SqliteError> {
    if rows.is_empty() {
        return Ok(());
    }
    let seq = fleet::next_seq(conn)?;
    let mut upsert = conn
        .prepare_cached(UPSERT_ROLLUP)
        .map_err(sql("updating usage rollups"))?;
    for r in rows {
        let granularity = match r.granularity.as_str() {
            HOUR => HOUR,
            DAY => DAY,
            TOTAL => TOTAL,
            other => {
                return Err(SqliteError::Refused(format!(
                    "unknown rollup granularity {other:?}"
                )));
            }
        };
        let t = &r.totals;
        upsert
            .execute(params![
                granularity,
                r.dim,
                r.value,
                r.bucket_start,
                to_i64(t.requests),
                to_i64(t.successes),
                to_i64(t.tokens.input_tokens),
                to_i64(t.tokens.cache_read_tokens),
                to_i64(t.tokens.cache_write_tokens),
                to_i64(t.tokens.output_tokens),
                to_i64(t.tokens.reasoning_tokens),
                seq,
            ])
            .map_err(sql(format!(
                "updating the {granularity} usage rollup of {}",
                r.dim
            )))?;
    }
    Ok(())
}

pub(super) fn put_balance(conn: &Connection, b: &BalanceRecord) -> Result<(), SqliteError> {
    conn.prepare_cached(UPSERT_BALANCE)
        .and_then(|mut st| {
            st.execute(params![
                b.key_id,
                to_i64(b.used),
                to_i64(b.allowance),
                to_i64(b.premium_used),
                to_i64(b.premium_allowance),
                b.trial_end,
                b.synced_at,
            ])
        })
        .map_err(sql(format!("storing the balance of key {}", b.key_id)))?;
    Ok(())
}

pub(super) fn delete_balance(conn: &Connection, key_id: &str) -> Result<(), SqliteError> {
    conn.prepare_cached("DELETE FROM balances WHERE key_id = ?1")
        .and_then(|mut st| st.execute([key_id]))
        .map_err(sql(format!("deleting the balance of key {key_id}")))?;
    Ok(())
}

/// Every stored balance, by key id.
pub(super) fn load_balances(conn: &Connection) -> Result<Vec<BalanceRecord>, SqliteError> {
    let mut st = conn
        .prepare(
            "SELECT key_id, used, allowance, premium_used, premium_allowance, trial_end,
                synced_at
             FROM balances ORDER BY key_id",
        )
        .map_err(sql("loading balances"))?;
    st.query_map([], |r| {
        Ok(BalanceRecord {
            key_id: r.get(0)?,
            used: to_u64(r.get(1)?),
            allowance: to_u64(r.get(2)?),
            premium_used: to_u64(r.get(3)?),
            premium_allowance: to_u64(r.get(4)?),
            trial_end: r.get(5)?,
            synced_at: r.get(6)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sql("loading balances"))
}

/// Deletes at most `limit` of the usage records with `at < before` (rollups are kept); returns
/// how many went. Fewer than `limit` means none is left.
pub(super) fn prune_chunk(
    conn: &Connection,
    before: Millis,
    limit: usize,
) -> Result<u64, SqliteError> {
    conn.prepare_cached(
        "DELETE FROM usage_records WHERE seq IN
            (SELECT seq FROM usage_records WHERE at < ?1 LIMIT ?2)",
    )
    .and_then(|mut st| st.execute(params![before, i64::try_from(limit).unwrap_or(i64::MAX)]))
    .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
    .map_err(sql("deleting old usage records"))
}

/// A rollup row's 7 totals columns (in `usage_rollups` and the fleet mirror), in the order
/// [`totals_at`] reads them.
pub(super) const ROLLUP_SUMS: &str = "requests, successes, input_tokens, cache_read_tokens, \
    cache_write_tokens, output_tokens, reasoning_tokens";

/// Reads the 7 totals columns ([`ROLLUP_SUMS`]) starting at column `i`: requests, successes,
/// then the 5 tokens.
pub(super) fn totals_at(row: &Row<'_>, i: usize) -> rusqlite::Result<UsageTotals> {
    Ok(UsageTotals {
        requests: to_u64(row.get(i)?),
        successes: to_u64(row.get(i + 1)?),
        tokens: Tokens {
            input_tokens: to_u64(row.get(i + 2)?),
            cache_read_tokens: to_u64(row.get(i + 3)?),
            cache_write_tokens: to_u64(row.get(i + 4)?),
            output_tokens: to_u64(row.get(i + 5)?),
            reasoning_tokens: to_u64(row.get(i + 6)?),
        },
    })
}

/// Per value of `dim`: the all-time totals and those of the day bucket starting at `day_start`.
const USAGE_BY: &str = "SELECT t.value,
        t.requests, t.successes, t.input_tokens, t.cache_read_tokens, t.cache_write_tokens,
        t.output_tokens, t.reasoning_tokens,
        coalesce(d.requests, 0), coalesce(d.successes, 0), coalesce(d.input_tokens, 0),
        coalesce(d.cache_read_tokens, 0), coalesce(d.cache_write_tokens, 0),
        coalesce(d.output_tokens, 0), coalesce(d.reasoning_tokens, 0)
    FROM usage_rollups t
    LEFT JOIN usage_rollups d ON d.granularity = 'day' AND d.dim = t.dim AND d.value = t.value
        AND d.bucket_start = ?2
    WHERE t.granularity = 'total' AND t.dim = ?1
    ORDER BY t.value";

/// With `fleet`, the other instances' mirrored sums are added (values only they saw included).
fn query_by(
    conn: &Connection,
    dim: &'static str,
    day_start: Millis,
    fleet: bool,
) -> Result<Vec<(String, UsageTotals, UsageTotals)>, SqliteError> {
    let context = || format!("reading usage by {dim}");
    let mut st = conn.prepare_cached(USAGE_BY).map_err(sql(context()))?;
    let local: Vec<(String, UsageTotals, UsageTotals)> = st
        .query_map(params![dim, day_start], |r| {
            Ok((r.get(0)?, totals_at(r, 1)?, totals_at(r, 8)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(sql(context()))?;
    if !fleet {
        return Ok(local);
    }
    let (all, day) = fleet::mirror_by(conn, dim, day_start)?;
    if all.is_empty() {
        return Ok(local);
    }
    let mut merged: BTreeMap<String, (UsageTotals, UsageTotals)> = local
        .into_iter()
        .map(|(v, all, day)| (v, (all, day)))
        .collect();
    for (v, t) in all {
        merged.entry(v).or_default().0.add(&t);
    }
    for (v, t) in day {
        // A day row whose all-time row has not arrived yet waits for it.
        if let Some(e) = merged.get_mut(&v) {
            e.1.add(&t);
        }
    }
    Ok(merged
        .into_iter()
        .map(|(v, (all, day))| (v, all, day))
        .collect())
}

fn parse_dim(dim: &str) -> Result<&'static str, SqliteError> {
    match dim {
        "key" => Ok(DIM_KEY),
        "model" => Ok(DIM_MODEL),
        "client" => Ok(DIM_CLIENT),
        other => Err(SqliteError::Refused(format!(
            "unknown usage dimension {other:?}; expected key, model or client"
        ))),
    }
}

fn parse_granularity(granularity: &str) -> Result<&'static str, SqliteError> {
    match granularity {
        "hour" => Ok(HOUR),
        "day" => Ok(DAY),
        other => Err(SqliteError::Refused(format!(
            "unknown usage granularity {other:?}; expected hour or day"
        ))),
    }
}

/// Per value of `dim` (`key`, `model` or `client`), ordered by value: all-time totals and the
/// totals of the day starting at `day_start`. Only values that ever had a request are listed.
pub(super) fn usage_by(
    conn: &Connection,
    dim: &str,
    day_start: Millis,
    fleet: bool,
) -> Result<Vec<(String, UsageTotals, UsageTotals)>, SqliteError> {
    query_by(conn, parse_dim(dim)?, day_start, fleet)
}

/// Grand totals: all-time and for the day starting at `day_start`.
pub(super) fn usage_totals(
    conn: &Connection,
    day_start: Millis,
    fleet: bool,
) -> Result<(UsageTotals, UsageTotals), SqliteError> {
    Ok(query_by(conn, DIM_ALL, day_start, fleet)?
        .into_iter()
        .next()
        .map(|(_, all, day)| (all, day))
        .unwrap_or_default())
}

/// `{sums}` is [`ROLLUP_SUMS`].
const SERIES_FROM_ROLLUPS: &str = "SELECT bucket_start, {sums} FROM usage_rollups
    WHERE granularity = ?1 AND dim = ?2 AND value = ?3 AND bucket_start >= ?4 AND bucket_start < ?5
    ORDER BY bucket_start";

/// The series of several filters at once (credential, model, client), from the records (`{col}`
/// is `hour_start` or `day_start`); a `NULL` filter matches everything. `at` is bounded first so
/// the `at` index narrows the scan. Token sums use `total()` (a float) cast back to an integer,
/// which saturates at `i64::MAX` where `sum()` would fail with "integer overflow"; they are exact
/// while below 2^53 (9·10^15 tokens).
const SERIES_FROM_RECORDS: &str = "SELECT {col}, count(*), sum(status >= 200 AND status < 300),
        CAST(total(input_tokens) AS INTEGER), CAST(total(cache_read_tokens) AS INTEGER),
        CAST(total(cache_write_tokens) AS INTEGER), CAST(total(output_tokens) AS INTEGER),
        CAST(total(reasoning_tokens) AS INTEGER)
    FROM usage_records
    WHERE at >= ?3 AND at < ?4 AND (?1 IS NULL OR credential = ?1)
        AND (?2 IS NULL OR model = ?2) AND (?7 IS NULL OR client = ?7)
        AND {col} >= ?5 AND {col} < ?6
    GROUP BY {col}
    ORDER BY {col}";

/// Buckets with `from <= bucket_start < to` that have data, ascending. No filter: every request;
/// one of `key`, `model`, `client`: from that dimension's rollups; several: from the records, so
/// only as far back as the records are kept. With `fleet`, the rollup-based series add the other
/// instances' mirrored sums (the one from records stays this instance's).
#[allow(clippy::too_many_arguments)]
pub(super) fn usage_series(
    conn: &Connection,
    granularity: &str,
    from: Millis,
    to: Millis,
    key: Option<&str>,
    model: Option<&str>,
    client: Option<&str>,
    fleet: bool,
) -> Result<Vec<(Millis, UsageTotals)>, SqliteError> {
    let granularity = parse_granularity(granularity)?;
    let context = || format!("reading the {granularity} usage series");
    let read = |r: &Row<'_>| Ok((r.get(0)?, totals_at(r, 1)?));
    let filters = [key, model, client].iter().filter(|f| f.is_some()).count();
    let (dim, value) = match (key, model, client) {
        _ if filters >= 2 => {
            let (col, slack) = if granularity == HOUR {
                ("hour_start", HOUR_SLACK_MS)
            } else {
                ("day_start", DAY_SLACK_MS)
            };
            let text = SERIES_FROM_RECORDS.replace("{col}", col);
            let mut st = conn.prepare_cached(&text).map_err(sql(context()))?;
            return st
                .query_map(
                    params![
                        key,
                        model,
                        from.saturating_sub(slack),
                        to.saturating_add(slack),
                        from,
                        to,
                        client
                    ],
                    read,
                )
                .and_then(|rows| rows.collect())
                .map_err(sql(context()));
        }
        (Some(key), _, _) => (DIM_KEY, key),
        (_, Some(model), _) => (DIM_MODEL, model),
        (_, _, Some(client)) => (DIM_CLIENT, client),
        (None, None, None) => (DIM_ALL, ""),
    };
    let mut st = conn
        .prepare_cached(&SERIES_FROM_ROLLUPS.replace("{sums}", ROLLUP_SUMS))
        .map_err(sql(context()))?;
    let local: Vec<(Millis, UsageTotals)> = st
        .query_map(params![granularity, dim, value, from, to], read)
        .and_then(|rows| rows.collect())
        .map_err(sql(context()))?;
    if !fleet {
        return Ok(local);
    }
    let others = fleet::mirror_series(conn, granularity, dim, value, from, to)?;
    if others.is_empty() {
        return Ok(local);
    }
    let mut merged: BTreeMap<Millis, UsageTotals> = local.into_iter().collect();
    for (t, u) in others {
        merged.entry(t).or_default().add(&u);
    }
    Ok(merged.into_iter().collect())
}
