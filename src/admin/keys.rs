//! Key endpoints: stats, listing, one key, history, add (single and batch), update, toggle
//! (a given status, or a flip without a body), move, reset, delete (one, by status, bulk) and
//! export.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{
    AdminError, AdminState, Query, Reply, check_pool_filter, json_object, json_object_or_empty,
    key_json, ok, opt_string, opt_string_array, path_id, reply, req_string, time,
};
use crate::credentials::pool::{BulkAction, Counts, KeyFilter, KeySort};
use crate::store::records::KeyStatus;

const STATUS_FILTERS: [&str; 5] = ["all", "active", "disabled", "banned", "cooling"];
/// Notes longer than this are refused.
const NOTES_MAX_CHARS: usize = 1000;
/// The most entries one batch import or bulk action takes.
const BATCH_MAX: usize = 10_000;

fn counts_json(c: &Counts) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("total".into(), c.total.into());
    m.insert("active".into(), c.active.into());
    m.insert("disabled".into(), c.disabled.into());
    m.insert("banned".into(), c.banned.into());
    m.insert("cooling".into(), c.cooling.into());
    m
}

pub(super) async fn stats(State(st): State<AdminState>) -> Reply {
    let (total, per) = st.app.pool.stats();
    let by_pool: Vec<Value> = per
        .iter()
        .map(|(g, c)| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), g.id.clone().into());
            m.extend(counts_json(c));
            Value::Object(m)
        })
        .collect();
    let mut data = counts_json(&total);
    data.insert("by_pool".into(), by_pool.into());
    ok(Value::Object(data))
}

/// The status and pool filter of a listing or export.
fn filter_from(st: &AdminState, q: &Query) -> Result<KeyFilter, AdminError> {
    let status = q.one_of("status", &STATUS_FILTERS, "all")?;
    let pool = q.get("pool");
    check_pool_filter(&st.app, pool)?;
    Ok(KeyFilter {
        status: (status != "all").then(|| status.to_string()),
        pool: pool.map(str::to_string),
        q: None,
    })
}

/// The longest `q` accepted by the key listing.
const MAX_SEARCH_CHARS: usize = 200;

/// `GET /admin/keys`: `status`, `pool`, `q` (a case-insensitive substring of the id or the
/// notes), `sort` (`created` by default, ascending; any other order defaults to descending)
/// and `order`, then one page.
pub(super) async fn list(State(st): State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let page = q.number("page", 1, 1, 1_000_000_000)?;
    let limit = q.number("limit", 20, 1, 500)?;
    let mut filter = filter_from(&st, &q)?;
    if let Some(search) = q.get("q").map(str::trim).filter(|s| !s.is_empty()) {
        if search.chars().count() > MAX_SEARCH_CHARS {
            return Err(AdminError::bad_request(format!(
                "q: at most {MAX_SEARCH_CHARS} characters"
            )));
        }
        filter.q = Some(search.to_string());
    }
    let sort_name = q.one_of("sort", &KeySort::NAMES, "created")?;
    let sort = KeySort::parse(sort_name).unwrap_or_default();
    let default_order = if sort == KeySort::Created {
        "asc"
    } else {
        "desc"
    };
    let desc = q.one_of("order", &["asc", "desc"], default_order)? == "desc";
    let now = st.app.pool.now();
    let (views, total) = st.app.pool.list(&filter, sort, desc, page, limit);
    ok(json!({
        "keys": views.iter().map(|v| key_json(v, now)).collect::<Vec<_>>(),
        "pagination": {
            "page": page,
            "limit": limit,
            "total": total,
            "total_pages": total.div_ceil(limit),
        },
    }))
}

fn not_found(id: &str) -> AdminError {
    AdminError::not_found(format!("key {id} not found"))
}

/// The current view of a key, as JSON.
fn view(st: &AdminState, id: &str) -> Result<Value, AdminError> {
    let now = st.app.pool.now();
    st.app
        .pool
        .get(id)
        .map(|v| key_json(&v, now))
        .ok_or_else(|| not_found(id))
}

pub(super) async fn get_one(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    ok(view(&st, &id)?)
}

pub(super) async fn history(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let id = path_id(id)?;
    let q = Query::parse(raw.as_deref())?;
    let limit = q.number("limit", 100, 1, 1000)?;
    // Transitions caused by traffic are written behind: let them land first.
    if let Err(e) = st.app.store.flush().await {
        tracing::warn!(error = %e, "store flush before reading history failed");
    }
    let events = st.app.store.history(&id, limit).await.map_err(|e| {
        tracing::error!(error = %e, "could not read key history");
        AdminError::internal(format!("could not read the history: {e}"))
    })?;
    // A deleted key's history stays readable by id; an id never seen is unknown.
    if events.is_empty() && st.app.pool.get(&id).is_none() {
        return Err(not_found(&id));
    }
    ok(Value::Array(
        events
            .iter()
            .map(|e| {
                json!({
                    "at": time(e.at),
                    "from": e.from,
                    "to": e.to,
                    "reason": e.reason,
                    "source": e.source.as_str(),
                })
            })
            .collect(),
    ))
}

fn check_notes(notes: Option<&str>) -> Result<(), AdminError> {
    match notes {
        Some(n) if n.chars().count() > NOTES_MAX_CHARS => Err(AdminError::bad_request(format!(
            "notes: at most {NOTES_MAX_CHARS} characters"
        ))),
        _ => Ok(()),
    }
}

pub(super) async fn add(State(st): State<AdminState>, body: Body) -> Reply {
    let o = json_object(body).await?;
    let key = req_string(&o, "key")?;
    let notes = opt_string(&o, "notes")?;
    let group = opt_string(&o, "poolGroup")?;
    check_notes(notes.as_deref())?;
    let rec = st
        .app
        .pool
        .add_key(&key, notes.as_deref(), group.as_deref())
        .await?;
    tracing::info!(key = %rec.id, group = %rec.pool_group, "admin: key added");
    reply(StatusCode::CREATED, view(&st, &rec.id)?, "key added")
}

pub(super) async fn batch(State(st): State<AdminState>, body: Body) -> Reply {
    let o = json_object(body).await?;
    let keys = opt_string_array(&o, "keys")?;
    let text = opt_string(&o, "text")?;
    let group = opt_string(&o, "poolGroup")?;
    let entries: Vec<String> = match (keys, text) {
        (Some(_), Some(_)) => {
            return Err(AdminError::bad_request(
                "send either keys (an array) or text (one key per line), not both",
            ));
        }
        (None, None) => {
            return Err(AdminError::bad_request(
                "keys or text: required (an array of keys, or text with one key per line)",
            ));
        }
        (Some(k), None) => k,
        // `lines` splits on \n (a trailing \r is dropped) and does not count a final newline
        // as a blank line.
        (None, Some(t)) => t.lines().map(str::to_string).collect(),
    };
    if entries.is_empty() {
        return Err(AdminError::bad_request("no keys given"));
    }
    if entries.len() > BATCH_MAX {
        return Err(AdminError::bad_request(format!(
            "at most {BATCH_MAX} keys per batch, got {}",
            entries.len()
        )));
    }
    let r = st.app.pool.add_batch(&entries, group.as_deref()).await?;
    tracing::info!(
        added = r.added,
        duplicate = r.duplicate,
        invalid = r.invalid,
        "admin: batch import"
    );
    ok(json!({
        "added": r.added,
        // The Node version's name for `added`, for its scripts.
        "success": r.added,
        "duplicate": r.duplicate,
        "invalid": r.invalid,
        "ids": r.ids,
        "errors": r.errors.iter().map(|(line, reason)| json!({"line": line, "reason": reason})).collect::<Vec<_>>(),
    }))
}

pub(super) async fn update(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let id = path_id(id)?;
    let o = json_object(body).await?;
    let key = opt_string(&o, "key")?;
    let notes = opt_string(&o, "notes")?;
    if key.is_none() && notes.is_none() {
        return Err(AdminError::bad_request(
            "nothing to change: send key and/or notes",
        ));
    }
    check_notes(notes.as_deref())?;
    let rec = st
        .app
        .pool
        .update(&id, key.as_deref(), notes.as_deref())
        .await?;
    tracing::info!(key = %rec.id, key_replaced = key.is_some(), "admin: key updated");
    reply(StatusCode::OK, view(&st, &rec.id)?, "key updated")
}

/// `PATCH /admin/keys/:id/notes` `{notes}`: the Node version's route for a key's notes (the same
/// change as `PUT /admin/keys/:id` `{notes}`).
pub(super) async fn notes(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let id = path_id(id)?;
    let o = json_object(body).await?;
    let notes = req_string(&o, "notes")?;
    check_notes(Some(&notes))?;
    let rec = st.app.pool.update(&id, None, Some(&notes)).await?;
    tracing::info!(key = %rec.id, "admin: key notes changed");
    reply(StatusCode::OK, view(&st, &rec.id)?, "key updated")
}

/// `PATCH /admin/keys/:id/toggle`: `{status:"active"|"disabled"}` sets that status; no body
/// (or `{}`) flips it, as the Node version's scripts expect: an active key becomes disabled, a
/// disabled or banned one active (which unbans it).
pub(super) async fn toggle(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let id = path_id(id)?;
    let o = json_object_or_empty(body).await?;
    let rec = if o.contains_key("status") {
        let status = req_string(&o, "status")?;
        let status = match status.as_str() {
            "active" => KeyStatus::Active,
            "disabled" => KeyStatus::Disabled,
            other => {
                return Err(AdminError::bad_request(format!(
                    "status: expected active|disabled, got {other:?}"
                )));
            }
        };
        st.app.pool.toggle(&id, status).await?
    } else {
        st.app.pool.flip(&id).await?
    };
    tracing::info!(key = %rec.id, status = rec.status.as_str(), "admin: key toggled");
    reply(StatusCode::OK, view(&st, &rec.id)?, "status changed")
}

pub(super) async fn move_key(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let id = path_id(id)?;
    let o = json_object(body).await?;
    let group = req_string(&o, "poolGroup")?;
    let rec = st.app.pool.move_key(&id, group.trim()).await?;
    tracing::info!(key = %rec.id, group = %rec.pool_group, "admin: key moved");
    reply(StatusCode::OK, view(&st, &rec.id)?, "key moved")
}

pub(super) async fn reset(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let rec = st.app.pool.reset(&id).await?;
    tracing::info!(key = %rec.id, "admin: key reset");
    reply(
        StatusCode::OK,
        view(&st, &rec.id)?,
        "cooldown and failure counts cleared",
    )
}

pub(super) async fn delete_one(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let now = st.app.pool.now();
    // The view before deletion (the pool returns the bare record).
    let before = st.app.pool.get(&id);
    let rec = st.app.pool.delete(&id).await?;
    tracing::info!(key = %rec.id, "admin: key deleted");
    let data = match before {
        Some(v) => key_json(&v, now),
        None => json!({"id": rec.id, "key_masked": rec.secret.masked()}),
    };
    reply(StatusCode::OK, data, "key deleted")
}

async fn delete_with_status(st: &AdminState, status: KeyStatus) -> Reply {
    let count = st.app.pool.delete_status(status).await?;
    tracing::info!(
        count,
        status = status.as_str(),
        "admin: keys deleted by status"
    );
    reply(
        StatusCode::OK,
        json!({"count": count}),
        &format!("{count} {} keys deleted", status.as_str()),
    )
}

pub(super) async fn delete_disabled(State(st): State<AdminState>) -> Reply {
    delete_with_status(&st, KeyStatus::Disabled).await
}

pub(super) async fn delete_banned(State(st): State<AdminState>) -> Reply {
    delete_with_status(&st, KeyStatus::Banned).await
}

pub(super) async fn bulk(State(st): State<AdminState>, body: Body) -> Reply {
    let o = json_object(body).await?;
    let ids = opt_string_array(&o, "ids")?
        .ok_or_else(|| AdminError::bad_request("ids: required (an array of key ids)"))?;
    if ids.is_empty() {
        return Err(AdminError::bad_request("ids: must not be empty"));
    }
    if ids.len() > BATCH_MAX {
        return Err(AdminError::bad_request(format!(
            "ids: at most {BATCH_MAX} per request, got {}",
            ids.len()
        )));
    }
    let action = req_string(&o, "action")?;
    let action = match action.as_str() {
        "enable" => BulkAction::Enable,
        "disable" => BulkAction::Disable,
        "delete" => BulkAction::Delete,
        "reset" => BulkAction::Reset,
        "move" => BulkAction::Move,
        other => {
            return Err(AdminError::bad_request(format!(
                "action: expected enable|disable|delete|reset|move, got {other:?}"
            )));
        }
    };
    let group = opt_string(&o, "poolGroup")?;
    if action == BulkAction::Move {
        match group.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(AdminError::bad_request(
                    "poolGroup: required for the move action",
                ));
            }
            Some(g) => check_pool_filter(&st.app, Some(g))?,
        }
    }
    let (count, errors) = st
        .app
        .pool
        .bulk(&ids, action, group.as_deref().map(str::trim))
        .await?;
    tracing::info!(count, errors = errors.len(), "admin: bulk action");
    ok(json!({
        "count": count,
        "errors": errors.iter().map(|(id, error)| json!({"id": id, "error": error})).collect::<Vec<_>>(),
    }))
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Today's date in the configured time zone (else the machine's).
fn today(st: &AdminState) -> String {
    let now = jiff::Timestamp::now();
    let zoned = st
        .app
        .settings
        .timezone
        .as_deref()
        .and_then(|tz| now.in_tz(tz).ok())
        .unwrap_or_else(|| now.to_zoned_datetime(jiff::tz::TimeZone::system()));
    zoned.strftime("%Y-%m-%d").to_string()
}

pub(super) async fn export(State(st): State<AdminState>, RawQuery(raw): RawQuery) -> Reply {
    let q = Query::parse(raw.as_deref())?;
    let format = q.one_of("format", &["txt", "json", "csv"], "txt")?;
    let status = q.one_of("status", &STATUS_FILTERS, "all")?.to_string();
    let filter = filter_from(&st, &q)?;
    let (views, _) = st
        .app
        .pool
        .list(&filter, KeySort::Created, false, 1, usize::MAX);
    let (content_type, body) = match format {
        "json" => (
            "application/json",
            serde_json::to_string_pretty(&Value::Array(
                views
                    .iter()
                    .map(|v| {
                        json!({
                            "id": v.rec.id,
                            "key": v.rec.secret.expose(),
                            "status": v.rec.status.as_str(),
                            "poolGroup": v.rec.pool_group,
                            "notes": v.rec.notes,
                        })
                    })
                    .collect(),
            ))
            .unwrap_or_else(|_| "[]".into()),
        ),
        "csv" => {
            let mut out = String::from("id,key,status,poolGroup,notes\r\n");
            for v in &views {
                let fields = [
                    v.rec.id.as_str(),
                    v.rec.secret.expose(),
                    v.rec.status.as_str(),
                    v.rec.pool_group.as_str(),
                    v.rec.notes.as_str(),
                ];
                let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                out.push_str(&line.join(","));
                out.push_str("\r\n");
            }
            ("text/csv; charset=utf-8", out)
        }
        _ => {
            let mut out = String::new();
            for v in &views {
                out.push_str(v.rec.secret.expose());
                out.push('\n');
            }
            ("text/plain; charset=utf-8", out)
        }
    };
    tracing::info!(count = views.len(), status = %status, format, "admin: keys exported");
    let filename = format!("droid2api-keys-{status}-{}.{format}", today(&st));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
