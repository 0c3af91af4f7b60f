//! Usage and balance endpoints (contract §7): `/factory/balance/{usage,summary,sync,cleanup}` and
//! `GET /admin/usage`. "Today" is the configured time zone's day.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use serde_json::{Value, json};

use super::{AdminError, AdminState, Query, Reply, balance_json, ok, time};
use crate::credentials::pool::{KeyFilter, KeySort};
use crate::store::records::Millis;
use crate::store::sqlite::{Tokens, UsageTotals};
use crate::usage::buckets;

/// The contract's token object `T`.
pub(super) fn tokens_json(t: &Tokens) -> Value {
    json!({
        "input_tokens": t.input_tokens,
        "cache_read_tokens": t.cache_read_tokens,
        "cache_write_tokens": t.cache_write_tokens,
        "output_tokens": t.output_tokens,
        "reasoning_tokens": t.reasoning_tokens,
        "total_tokens": t.total(),
    })
}

pub(super) fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

pub(super) fn store_error(e: crate::store::StoreError) -> AdminError {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "the usage store did not answer in time");
        return AdminError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the usage store could not answer: {e}"),
        );
    }
    tracing::error!(error = %e, "usage query failed");
    AdminError::internal(format!("the usage store could not answer: {e}"))
}

/// A time parameter: `YYYY-MM-DD` (the start of that day in the configured zone) or RFC 3339.
fn parse_time(name: &str, v: &str, tz: &jiff::tz::TimeZone) -> Result<Millis, AdminError> {
    if let Ok(ts) = v.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(date) = v.parse::<jiff::civil::Date>() {
        return date
            .to_zoned_datetime(tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| AdminError::bad_request(format!("{name}: {e}")));
    }
    Err(AdminError::bad_request(format!(
        "{name}: expected a date (YYYY-MM-DD) or an RFC 3339 time such as 2026-11-26T08:00:00Z, got {v:?}"
    )))
}

/// `GET /factory/balance/usage`: per pool key, all-time and today's usage with its balance.
pub(super) async fn balance_usage(State(st): State<AdminState>) -> Reply {
    let tz = st.app.recorder.tz().clone();
    let today = buckets::day_start(now_ms(), &tz);
    let by_key = st
        .app
        .store
        .usage_by("key", today)
        .await
        .map_err(store_error)?;
    let usage: std::collections::HashMap<String, (UsageTotals, UsageTotals)> = by_key
        .into_iter()
        .map(|(k, all, day)| (k, (all, day)))
        .collect();
    let (views, _) = st.app.pool.list(
        &KeyFilter::default(),
        KeySort::Created,
        false,
        1,
        usize::MAX,
    );
    let keys: Vec<Value> = views
        .iter()
        .map(|v| {
            let (all, day) = usage.get(&v.rec.id).cloned().unwrap_or_default();
            json!({
                "id": v.rec.id,
                "key_masked": v.rec.secret.masked(),
                "status": v.rec.status.as_str(),
                "requests": all.requests,
                "tokens": tokens_json(&all.tokens),
                "today": tokens_json(&day.tokens),
                "balance": v.balance.as_ref().map_or(Value::Null, balance_json),
            })
        })
        .collect();
    ok(json!({"keys": keys}))
}

/// `GET /factory/balance/summary`.
pub(super) async fn balance_summary(State(st): State<AdminState>) -> Reply {
    let tz = st.app.recorder.tz().clone();
    let today = buckets::day_start(now_ms(), &tz);
    let (all, day) = st
        .app
        .store
        .usage_totals(today)
        .await
        .map_err(store_error)?;
    let by_model = st
        .app
        .store
        .usage_by("model", today)
        .await
        .map_err(store_error)?;
    let models: Vec<Value> = by_model
        .iter()
        .filter(|(m, _, _)| m != "-")
        .map(|(m, all, _)| json!({"model": m, "requests": all.requests, "tokens": tokens_json(&all.tokens)}))
        .collect();
    let totals = st.app.balance_sync.totals();
    let success_rate = if all.requests == 0 {
        0.0
    } else {
        all.successes as f64 / all.requests as f64
    };
    ok(json!({
        "requests": all.requests,
        "success_rate": success_rate,
        "tokens": tokens_json(&all.tokens),
        "today": {"requests": day.requests, "tokens": tokens_json(&day.tokens)},
        "by_model": models,
        "balance": {
            "used": totals.used,
            "allowance": totals.allowance,
            "remaining": totals.remaining,
            "keys_synced": totals.keys_synced,
            "last_sync": totals.last_sync.map_or(Value::Null, time),
        },
    }))
}

/// `POST /factory/balance/sync`: syncs every key now and answers when done.
pub(super) async fn balance_sync(State(st): State<AdminState>) -> Reply {
    let tester = super::testing::KeyTestRunner(st.app.clone());
    let report = st.app.balance_sync.sync_all(&tester).await;
    let t = &report.totals;
    ok(json!({
        "total": report.total,
        "synced": report.synced,
        "failed": report.failed,
        "failures": report.failures.iter().map(|(id, error)| json!({"id": id, "error": error})).collect::<Vec<_>>(),
        "balance": {
            "used": t.used,
            "allowance": t.allowance,
            "remaining": t.remaining,
            "keys_synced": t.keys_synced,
            "last_sync": t.last_sync.map_or(Value::Null, time),
        },
    }))
}

/// `POST /factory/balance/cleanup?before=`: deletes usage records older than `before` (default:
/// the retention, `DATA_RETENTION_DAYS`); hourly and daily rollups are kept.
pub(super) async fn balance_cleanup(
    State(st): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let tz = st.app.recorder.tz().clone();
    let before = match q.get("before") {
        Some(v) => parse_time("before", v, &tz)?,
        None => now_ms() - st.app.settings.data_retention_days as Millis * 86_400_000,
    };
    let deleted = st
        .app
        .store
        .prune_usage(before)
        .await
        .map_err(store_error)?;
    ok(json!({"deleted": deleted}))
}

/// `GET /admin/usage?granularity=hour|day&from=&to=&key=&model=&client=`: a time series for
/// charts (`client`: a client key's `cli_…` id, `api_access_key` or `anonymous`). Each point also
/// carries `rejected` (requests refused before authentication in that bucket), and the reply the
/// range's total `rejected` and `rejected_by_reason`; rejected requests have no key, model or
/// client, so with a filter they are 0.
pub(super) async fn usage_series(State(st): State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let granularity = q
        .one_of("granularity", &["hour", "day"], "hour")?
        .to_string();
    let tz = st.app.recorder.tz().clone();
    let now = now_ms();
    let to = match q.get("to") {
        Some(v) => parse_time("to", v, &tz)?,
        None => now + 1,
    };
    let span = if granularity == "hour" {
        86_400_000
    } else {
        30 * 86_400_000
    };
    let from = match q.get("from") {
        Some(v) => parse_time("from", v, &tz)?,
        None => to - span,
    };
    if from >= to {
        return Err(AdminError::bad_request("from: must be earlier than to"));
    }
    let max_span = if granularity == "hour" {
        93 * 86_400_000
    } else {
        3 * 366 * 86_400_000
    };
    if to - from > max_span {
        return Err(AdminError::bad_request(format!(
            "from/to: at most {} days of {granularity}ly points at once",
            max_span / 86_400_000
        )));
    }
    let key = q.get("key").map(str::to_string);
    let model = q.get("model").map(str::to_string);
    let client = q.get("client").map(str::to_string);
    // A whole bucket that starts before `from` but contains it is included.
    let first_bucket = {
        let (h, d) = buckets::buckets(from, &tz);
        if granularity == "hour" { h } else { d }
    };
    let points = st
        .app
        .store
        .usage_series_of(
            &granularity,
            first_bucket,
            to,
            key.as_deref(),
            model.as_deref(),
            client.as_deref(),
        )
        .await
        .map_err(store_error)?;
    // Requests rejected before authentication have no key or model: they are counted only in
    // the unfiltered series.
    let rejected_rows = if key.is_none() && model.is_none() && client.is_none() {
        st.app
            .store
            .rejected_series(&granularity, first_bucket, to)
            .await
            .map_err(store_error)?
    } else {
        Vec::new()
    };
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut rejected_at: BTreeMap<Millis, u64> = BTreeMap::new();
    for (t, reason, n) in rejected_rows {
        *by_reason.entry(reason).or_default() += n;
        *rejected_at.entry(t).or_default() += n;
    }
    let total_rejected: u64 = by_reason.values().sum();
    // Every bucket with usage or rejections, ascending.
    let mut merged: BTreeMap<Millis, (Option<&UsageTotals>, u64)> = BTreeMap::new();
    for (t, u) in &points {
        merged.entry(*t).or_default().0 = Some(u);
    }
    for (t, n) in rejected_at {
        merged.entry(t).or_default().1 = n;
    }
    let empty = UsageTotals::default();
    let points: Vec<Value> = merged
        .into_iter()
        .map(|(t, (u, rejected))| {
            let u = u.unwrap_or(&empty);
            json!({"t": time(t), "requests": u.requests, "tokens": tokens_json(&u.tokens), "rejected": rejected})
        })
        .collect();
    ok(json!({
        "granularity": granularity,
        "tz": buckets::zone_name(&tz),
        "points": points,
        "rejected": total_rejected,
        "rejected_by_reason": by_reason,
    }))
}
