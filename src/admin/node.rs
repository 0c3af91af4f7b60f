//! The Node.js droid2api's read-only admin calls, answered from this gateway's own data so that
//! scripts written for it keep working (README "Coming from the Node version"):
//!
//! - `/admin/stats/{summary,today,trend,full}` — its request statistics, from the usage rollups;
//! - `/admin/token/{stats,usage,usage/:id,trend}` and `POST /admin/token/sync` — its cache of
//!   Factory balances, from the balances the sync keeps on each key;
//! - `/admin/logs/{history,stats}` and `DELETE /admin/logs/clear` — its in-memory log buffer,
//!   from the log tail behind `/admin/logs/stream`;
//! - `/factory/balance/all` and `/factory/balance/check/:id`, which its UI called and it never
//!   implemented.
//!
//! What differs on purpose: every call needs the admin key (the Node routes were open), replies
//! use this gateway's envelope (`{"success":true,"data":…}`), keys are masked (`key_masked`;
//! the Node version returned them whole), and unknown ids are 404. Token counts follow the Node
//! version's definition: `tokens` = input + output (reasoning is part of output), cache reads
//! and writes apart. `POST /admin/stats/reset` and `DELETE /admin/token/cache` are refused with
//! the call to use instead: usage is a ledger here, and balances are per key, not a cache.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::usage::{now_ms, store_error};
use super::{AdminError, AdminState, Query, Reply, ok, path_id, reply, time};
use crate::credentials::pool::{KeyFilter, KeySort, KeyView};
use crate::store::records::Millis;
use crate::store::sqlite::{Tokens, UsageTotals};
use crate::telemetry::tail;
use crate::usage::buckets;

/// A balance younger than this is answered from memory by `/admin/token/usage/:id` (the Node
/// version's cache lifetime).
const FRESH_MS: Millis = 5 * 60 * 1000;

/// Tokens as the Node version counted them: input + output (reasoning included), no cache.
fn node_tokens(t: &Tokens) -> u64 {
    t.input_tokens.saturating_add(t.output_tokens)
}

/// The token fields of a Node statistics bucket.
fn token_fields(out: &mut Map<String, Value>, t: &Tokens) {
    out.insert("input_tokens".into(), t.input_tokens.into());
    out.insert("output_tokens".into(), t.output_tokens.into());
    out.insert("thinking_tokens".into(), t.reasoning_tokens.into());
    out.insert("cache_creation_tokens".into(), t.cache_write_tokens.into());
    out.insert("cache_read_tokens".into(), t.cache_read_tokens.into());
}

/// A Node daily bucket: `{tokens, requests, input_tokens, output_tokens, thinking_tokens,
/// cache_creation_tokens, cache_read_tokens, success_requests, failed_requests}`.
fn day_bucket(u: &UsageTotals) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("tokens".into(), node_tokens(&u.tokens).into());
    out.insert("requests".into(), u.requests.into());
    token_fields(&mut out, &u.tokens);
    out.insert("success_requests".into(), u.successes.into());
    out.insert(
        "failed_requests".into(),
        u.requests.saturating_sub(u.successes).into(),
    );
    out
}

/// A Node per-model entry.
fn model_entry(u: &UsageTotals) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("total_tokens".into(), node_tokens(&u.tokens).into());
    out.insert("total_requests".into(), u.requests.into());
    token_fields(&mut out, &u.tokens);
    out
}

/// Per model (the imported history's `-` left out): all-time totals.
async fn by_model(
    st: &AdminState,
    today: Millis,
) -> Result<Vec<(String, UsageTotals)>, AdminError> {
    let rows = st
        .app
        .store
        .usage_by("model", today)
        .await
        .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .filter(|(m, _, _)| m != "-")
        .map(|(m, all, _)| (m, all))
        .collect())
}

/// The local days `[first, last]` ending today, oldest first, with their usage (zeros included).
async fn daily(
    st: &AdminState,
    days: usize,
) -> Result<Vec<(jiff::civil::Date, UsageTotals)>, AdminError> {
    let tz = st.app.recorder.tz().clone();
    let now = now_ms();
    let today = jiff::Timestamp::from_millisecond(now)
        .map_err(|e| AdminError::internal(format!("the clock: {e}")))?
        .to_zoned_datetime(tz.clone())
        .date();
    let mut dates = Vec::with_capacity(days);
    for back in (0..days).rev() {
        let span = jiff::Span::new().days(back as i64);
        if let Ok(d) = today.checked_sub(span) {
            dates.push(d);
        }
    }
    let Some(first) = dates.first() else {
        return Ok(Vec::new());
    };
    let from = first
        .to_zoned_datetime(tz.clone())
        .map_err(|e| AdminError::internal(format!("the time zone: {e}")))?
        .timestamp()
        .as_millisecond();
    let points = st
        .app
        .store
        .usage_series("day", from, now + 1, None, None)
        .await
        .map_err(store_error)?;
    let mut by_date = std::collections::HashMap::new();
    for (t, u) in points {
        if let Ok(ts) = jiff::Timestamp::from_millisecond(t) {
            by_date.insert(ts.to_zoned_datetime(tz.clone()).date(), u);
        }
    }
    Ok(dates
        .into_iter()
        .map(|d| {
            let u = by_date.remove(&d).unwrap_or_default();
            (d, u)
        })
        .collect())
}

/// `GET /admin/stats/summary`.
pub(super) async fn stats_summary(State(st): State<AdminState>) -> Reply {
    let now = now_ms();
    let today = buckets::day_start(now, st.app.recorder.tz());
    let (all, day) = st
        .app
        .store
        .usage_totals(today)
        .await
        .map_err(store_error)?;
    let models: Vec<Value> = by_model(&st, today)
        .await?
        .iter()
        .map(|(m, u)| {
            let mut e = Map::new();
            e.insert("name".into(), m.as_str().into());
            e.extend(model_entry(u));
            Value::Object(e)
        })
        .collect();
    let t = &day.tokens;
    ok(json!({
        "total_tokens": node_tokens(&all.tokens),
        "total_requests": all.requests,
        "today_tokens": node_tokens(t),
        "today_requests": day.requests,
        "today_input_tokens": t.input_tokens,
        "today_output_tokens": t.output_tokens,
        "today_thinking_tokens": t.reasoning_tokens,
        "today_cache_creation_tokens": t.cache_write_tokens,
        "today_cache_read_tokens": t.cache_read_tokens,
        "last_updated": time(now),
        "models": models,
    }))
}

/// `GET /admin/stats/today`: today's bucket (zeros on a day without requests).
pub(super) async fn stats_today(State(st): State<AdminState>) -> Reply {
    let now = now_ms();
    let today = buckets::day_start(now, st.app.recorder.tz());
    let (_, day) = st
        .app
        .store
        .usage_totals(today)
        .await
        .map_err(store_error)?;
    let mut out = day_bucket(&day);
    out.insert(
        "date".into(),
        buckets::local_date(now, st.app.recorder.tz()).into(),
    );
    out.insert("last_updated".into(), time(now));
    ok(Value::Object(out))
}

/// `GET /admin/stats/trend?days=7` (1–366): one entry per local day, oldest first, days
/// without requests included.
pub(super) async fn stats_trend(State(st): State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let days = q.number("days", 7, 1, 366)?;
    let entries: Vec<Value> = daily(&st, days)
        .await?
        .iter()
        .map(|(d, u)| {
            let mut e = Map::new();
            e.insert("date".into(), d.to_string().into());
            e.insert(
                "date_formatted".into(),
                format!("{}/{}", d.month(), d.day()).into(),
            );
            e.extend(day_bucket(u));
            Value::Object(e)
        })
        .collect();
    ok(Value::Array(entries))
}

/// `GET /admin/stats/full`: the Node `request_stats.json` layout — all-time totals, the daily
/// buckets of the retention period (`DATA_RETENTION_DAYS`) that had requests, and per model.
pub(super) async fn stats_full(State(st): State<AdminState>) -> Reply {
    let now = now_ms();
    let today = buckets::day_start(now, st.app.recorder.tz());
    let (all, _) = st
        .app
        .store
        .usage_totals(today)
        .await
        .map_err(store_error)?;
    let days = st.app.settings.data_retention_days as usize;
    let mut daily_map = Map::new();
    for (d, u) in daily(&st, days).await? {
        if u.requests > 0 {
            daily_map.insert(d.to_string(), Value::Object(day_bucket(&u)));
        }
    }
    let mut models = Map::new();
    for (m, u) in by_model(&st, today).await? {
        models.insert(m, Value::Object(model_entry(&u)));
    }
    ok(json!({
        "total": {
            "tokens": node_tokens(&all.tokens),
            "requests": all.requests,
            "last_updated": time(now),
        },
        "daily": daily_map,
        "by_model": models,
    }))
}

/// `POST /admin/stats/reset`: refused; usage is the ledger the dashboard and the balance views
/// read, not a statistics file.
pub(super) async fn stats_reset() -> Reply {
    Err(AdminError::not_found(
        "usage statistics are not reset here: they are the usage ledger (GET /admin/usage); POST /factory/balance/cleanup?before=YYYY-MM-DD deletes per-request records older than a date",
    ))
}

// ----- balances (the Node version's /admin/token/*) -----------------------------------------

fn all_keys(st: &AdminState) -> Vec<KeyView> {
    st.app
        .pool
        .list(
            &KeyFilter::default(),
            KeySort::Created,
            false,
            1,
            usize::MAX,
        )
        .0
}

/// The balance sync period, in ms (the Node version's `cache_ttl`).
fn sync_period_ms(st: &AdminState) -> Millis {
    let secs = st
        .app
        .settings
        .timing
        .balance_sync_interval_s
        .unwrap_or(st.app.settings.sync_interval_minutes * 60);
    (secs as Millis).saturating_mul(1000)
}

/// The Node summary of balances: `{total_limit, total_used, total_remaining, successful_keys,
/// total_keys, last_full_sync}`.
fn balance_summary(st: &AdminState) -> Map<String, Value> {
    let t = st.app.balance_sync.totals();
    let last_full = st
        .app
        .balance_sync
        .last_report()
        .map(|r| r.finished_at)
        .or(t.last_sync);
    let mut out = Map::new();
    out.insert("total_limit".into(), t.allowance.into());
    out.insert("total_used".into(), t.used.into());
    out.insert("total_remaining".into(), t.remaining.into());
    out.insert("successful_keys".into(), t.keys_synced.into());
    out.insert("total_keys".into(), (all_keys(st).len() as u64).into());
    out.insert("last_full_sync".into(), last_full.map_or(Value::Null, time));
    out
}

fn cache_info(st: &AdminState) -> Value {
    let period = sync_period_ms(st);
    let last = st.app.balance_sync.totals().last_sync;
    json!({
        "cache_ttl": period,
        "last_save": last.map_or(Value::Null, time),
        "is_expired": last.is_none_or(|t| now_ms().saturating_sub(t) > period),
    })
}

/// One key's balance as the Node version's usage record (`standard` holds the numbers; keys
/// are masked). A key without a balance carries the last sync's error, or says it was never
/// synced.
fn usage_record(st: &AdminState, v: &KeyView) -> Value {
    let id = v.rec.id.as_str();
    let masked = v.rec.secret.masked();
    match v.balance {
        Some(b) => {
            let ratio = if b.allowance == 0 {
                0.0
            } else {
                b.used as f64 / b.allowance as f64
            };
            json!({
                "id": id,
                "key_masked": masked,
                "success": true,
                "standard": {
                    "totalAllowance": b.allowance,
                    "orgTotalTokensUsed": b.used,
                    "usedRatio": ratio,
                    "remaining": b.allowance.saturating_sub(b.used),
                },
                "trialEndDate": b.trial_end.map_or(Value::Null, time),
                "last_sync": time(b.synced_at),
            })
        }
        None => {
            let failure = st
                .app
                .balance_sync
                .last_report()
                .and_then(|r| r.failures.into_iter().find(|(k, _)| k == id));
            let (error, message) = match failure {
                Some((_, e)) => ("sync_failed", e),
                None => (
                    "not_synced",
                    "no balance has been synced for this key yet".to_string(),
                ),
            };
            json!({"id": id, "key_masked": masked, "success": false, "error": error, "message": message})
        }
    }
}

fn force_refresh(q: &Query) -> Result<bool, AdminError> {
    Ok(q.one_of("forceRefresh", &["true", "false"], "false")? == "true")
}

async fn sync_all(st: &AdminState) -> crate::usage::sync::SyncReport {
    let tester = super::testing::KeyTestRunner(st.app.clone());
    st.app.balance_sync.sync_all(&tester).await
}

/// `GET /admin/token/stats`.
pub(super) async fn token_stats(State(st): State<AdminState>) -> Reply {
    let mut out = balance_summary(&st);
    out.insert("cache_info".into(), cache_info(&st));
    ok(Value::Object(out))
}

/// `GET /admin/token/usage?forceRefresh=true`: every key's balance; `forceRefresh` syncs every
/// key first and answers when done.
pub(super) async fn token_usage(State(st): State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let refresh = force_refresh(&q)?;
    if refresh {
        sync_all(&st).await;
    }
    let mut keys = Map::new();
    for v in all_keys(&st) {
        keys.insert(v.rec.id.clone(), usage_record(&st, &v));
    }
    ok(json!({
        "keys": keys,
        "summary": balance_summary(&st),
        "from_cache": !refresh,
        "cache_info": cache_info(&st),
    }))
}

/// Syncs one key's balance now; `None` when the key is gone.
async fn sync_one(st: &AdminState, id: &str) -> Result<Result<(), String>, AdminError> {
    let tester = super::testing::KeyTestRunner(st.app.clone());
    st.app
        .balance_sync
        .sync_one(id, &tester)
        .await
        .ok_or_else(|| AdminError::not_found(format!("key {id} not found")))
}

fn key_view(st: &AdminState, id: &str) -> Result<KeyView, AdminError> {
    st.app
        .pool
        .get(id)
        .ok_or_else(|| AdminError::not_found(format!("key {id} not found")))
}

/// `GET /admin/token/usage/:id?forceRefresh=true`: one key's balance, synced now unless one
/// younger than 5 minutes is known (or always with `forceRefresh`).
pub(super) async fn token_usage_one(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let id = path_id(id)?;
    let q = Query::parse(raw.as_deref())?;
    let refresh = force_refresh(&q)?;
    let v = key_view(&st, &id)?;
    let fresh = v
        .balance
        .is_some_and(|b| now_ms().saturating_sub(b.synced_at) < FRESH_MS);
    let from_cache = fresh && !refresh;
    let mut record = if from_cache {
        usage_record(&st, &v)
    } else {
        let synced = sync_one(&st, &id).await?;
        let v = key_view(&st, &id)?;
        match synced {
            Ok(()) => usage_record(&st, &v),
            Err(e) => {
                json!({"id": id, "key_masked": v.rec.secret.masked(), "success": false, "error": "sync_failed", "message": e})
            }
        }
    };
    if let Value::Object(m) = &mut record {
        m.insert("from_cache".into(), from_cache.into());
    }
    ok(record)
}

/// `POST /admin/token/sync`: syncs every key and answers when done.
pub(super) async fn token_sync(State(st): State<AdminState>) -> Reply {
    let report = sync_all(&st).await;
    let failed: Vec<Value> = report
        .failures
        .iter()
        .map(|(id, e)| json!({"id": id, "error": "sync_failed", "message": e}))
        .collect();
    ok(json!({
        "total": report.total,
        "success": report.synced,
        "failed": report.failed,
        "summary": balance_summary(&st),
        "failed_keys": failed,
    }))
}

/// `GET /admin/token/trend`: the ten keys that used most, with the totals.
pub(super) async fn token_trend(State(st): State<AdminState>) -> Reply {
    let mut with_balance: Vec<(KeyView, crate::credentials::pool::Balance)> = all_keys(&st)
        .into_iter()
        .filter_map(|v| v.balance.map(|b| (v, b)))
        .collect();
    with_balance.sort_by(|a, b| {
        b.1.used
            .cmp(&a.1.used)
            .then_with(|| a.0.rec.id.cmp(&b.0.rec.id))
    });
    let top: Vec<Value> = with_balance
        .iter()
        .take(10)
        .map(|(v, b)| {
            let pct = if b.allowance == 0 {
                0.0
            } else {
                (b.used as f64 * 1000.0 / b.allowance as f64).round() / 10.0
            };
            json!({
                "id": v.rec.id,
                "key_masked": v.rec.secret.masked(),
                "used": b.used,
                "limit": b.allowance,
                "remaining": b.allowance.saturating_sub(b.used),
                "percentage": pct,
                "trialEndDate": b.trial_end.map_or(Value::Null, time),
            })
        })
        .collect();
    let t = st.app.balance_sync.totals();
    ok(json!({
        "top_keys": top,
        "summary": {
            "total_keys": all_keys(&st).len(),
            "total_used": t.used,
            "total_limit": t.allowance,
            "total_remaining": t.remaining,
        },
        "last_sync": t.last_sync.map_or(Value::Null, time),
    }))
}

/// `DELETE /admin/token/cache`: refused; balances are kept per key and refreshed by the sync.
pub(super) async fn token_cache() -> Reply {
    Err(AdminError::not_found(
        "balances are not a cache here: each key keeps its last synced balance; POST /factory/balance/sync (or POST /admin/token/sync) reads them again",
    ))
}

/// `GET /factory/balance/all?forceRefresh=true`: `GET /factory/balance/usage`, after syncing
/// every key when `forceRefresh` is true.
pub(super) async fn balance_all(st: State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    if force_refresh(&q)? {
        sync_all(&st.0).await;
    }
    super::usage::balance_usage(st).await
}

/// `GET|POST /factory/balance/check/:id`: syncs one key's balance now → `{id, key_masked,
/// status, ok, error?, balance}` (the balance is the last known one when the sync failed).
pub(super) async fn balance_check(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    key_view(&st, &id)?;
    let synced = sync_one(&st, &id).await?;
    let v = key_view(&st, &id)?;
    let mut out = json!({
        "id": v.rec.id,
        "key_masked": v.rec.secret.masked(),
        "status": v.rec.status.as_str(),
        "ok": synced.is_ok(),
        "balance": v.balance.as_ref().map_or(Value::Null, super::balance_json),
    });
    if let (Err(e), Value::Object(m)) = (synced, &mut out) {
        m.insert("error".into(), e.into());
    }
    ok(out)
}

// ----- logs (the Node version's /admin/logs/*) ----------------------------------------------

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// A log line split into its time, level and the rest (as the console log writes it:
/// `2026-12-07T01:20:08.123456Z  INFO message key=value`). A line without them (a
/// continuation, a panic message) has neither.
#[derive(Debug, PartialEq, Eq)]
struct LogLine<'a> {
    timestamp: Option<&'a str>,
    level: Option<&'static str>,
    message: &'a str,
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn parse_line(line: &str) -> LogLine<'_> {
    let mut rest = line;
    let (first, after) = split_word(rest);
    let timestamp = if first.parse::<jiff::Timestamp>().is_ok() {
        rest = after;
        Some(first)
    } else {
        None
    };
    let (word, after) = split_word(rest);
    let level = LEVELS
        .iter()
        .copied()
        .find(|l| l.eq_ignore_ascii_case(word));
    if level.is_some() {
        rest = after;
    }
    LogLine {
        timestamp,
        level,
        message: rest.trim(),
    }
}

/// The kept log lines, secrets masked (as the live stream sends them).
fn kept_lines(st: &AdminState) -> Vec<String> {
    let admin_key = st.app.settings.admin_access_key.as_ref();
    let extra: Vec<&crate::secret::Secret> = admin_key.into_iter().collect();
    let scrubber = st.app.credentials.scrubber();
    tail::tail()
        .history()
        .iter()
        .map(|l| scrubber.scrub(l, &extra).into_owned())
        .collect()
}

/// `GET /admin/logs/history?limit=100&level=info,warn&keyword=text`: the newest `limit` kept
/// lines (at most 500, as kept) at the given levels holding `keyword` (any case), oldest first
/// → `{count, logs:[{timestamp, level, message}]}`.
pub(super) async fn logs_history(State(st): State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(tail::HISTORY),
            _ => {
                return Err(AdminError::bad_request(format!(
                    "limit: expected a whole number of at least 1, got {v:?}"
                )));
            }
        },
    };
    let levels: Option<Vec<&'static str>> = match q.get("level") {
        None => None,
        Some(v) => {
            let mut out = Vec::new();
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match LEVELS
                    .iter()
                    .copied()
                    .find(|l| l.eq_ignore_ascii_case(part))
                {
                    Some(l) => out.push(l),
                    None => {
                        return Err(AdminError::bad_request(format!(
                            "level: expected a comma-separated list of {}, got {part:?}",
                            LEVELS.join("|")
                        )));
                    }
                }
            }
            Some(out)
        }
    };
    let keyword = q.get("keyword").map(str::to_lowercase);
    let lines = kept_lines(&st);
    let mut logs: Vec<Value> = lines
        .iter()
        .rev()
        .filter_map(|line| {
            let p = parse_line(line);
            if let Some(ls) = &levels
                && !p.level.is_some_and(|l| ls.contains(&l))
            {
                return None;
            }
            if let Some(k) = &keyword
                && !line.to_lowercase().contains(k.as_str())
            {
                return None;
            }
            Some(json!({"timestamp": p.timestamp, "level": p.level, "message": p.message}))
        })
        .take(limit)
        .collect();
    logs.reverse();
    ok(json!({"count": logs.len(), "logs": logs}))
}

/// `GET /admin/logs/stats` → `{total, byLevel:{trace, debug, info, warn, error}}` over the kept
/// lines.
pub(super) async fn logs_stats(State(_st): State<AdminState>) -> Reply {
    let lines = tail::tail().history();
    let mut by_level = Map::new();
    for l in LEVELS {
        by_level.insert(l.into(), 0u64.into());
    }
    for line in &lines {
        if let Some(l) = parse_line(line).level
            && let Some(Value::Number(n)) = by_level.get(l)
        {
            let next = n.as_u64().unwrap_or(0) + 1;
            by_level.insert(l.into(), next.into());
        }
    }
    ok(json!({"total": lines.len(), "byLevel": by_level}))
}

/// `DELETE /admin/logs/clear`: forgets the kept lines (log files and the console output are
/// untouched) → `{cleared}`.
pub(super) async fn logs_clear(State(_st): State<AdminState>) -> Reply {
    let cleared = tail::tail().clear();
    tracing::info!(lines = cleared, "admin: kept log lines cleared");
    reply(
        StatusCode::OK,
        json!({"cleared": cleared}),
        "kept log lines cleared",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_log_line_splits_into_time_level_and_message() {
        assert_eq!(
            parse_line("2026-12-07T01:20:08.123456Z  INFO listening addr=127.0.0.1:3000"),
            LogLine {
                timestamp: Some("2026-12-07T01:20:08.123456Z"),
                level: Some("info"),
                message: "listening addr=127.0.0.1:3000",
            }
        );
        assert_eq!(
            parse_line("2026-12-07T01:20:08Z  WARN wrong admin key"),
            LogLine {
                timestamp: Some("2026-12-07T01:20:08Z"),
                level: Some("warn"),
                message: "wrong admin key",
            }
        );
        // A continuation line has neither.
        assert_eq!(
            parse_line("    at src/main.rs:1"),
            LogLine {
                timestamp: None,
                level: None,
                message: "at src/main.rs:1",
            }
        );
        assert_eq!(
            parse_line(""),
            LogLine {
                timestamp: None,
                level: None,
                message: "",
            }
        );
    }

    #[test]
    fn node_tokens_leave_the_cache_out() {
        let t = Tokens {
            input_tokens: 10,
            cache_read_tokens: 1000,
            cache_write_tokens: 100,
            output_tokens: 7,
            reasoning_tokens: 3,
        };
        assert_eq!(node_tokens(&t), 17);
        let u = UsageTotals {
            requests: 5,
            successes: 4,
            tokens: t,
        };
        let b = day_bucket(&u);
        assert_eq!(b["tokens"], 17);
        assert_eq!(b["thinking_tokens"], 3);
        assert_eq!(b["cache_creation_tokens"], 100);
        assert_eq!(b["cache_read_tokens"], 1000);
        assert_eq!(b["success_requests"], 4);
        assert_eq!(b["failed_requests"], 1);
    }
}
