//! Client keys (contract §13): `GET/POST /admin/clients`, `GET/PATCH/DELETE /admin/clients/:id`,
//! `POST /admin/clients/:id/rotate`.
//!
//! A key is shown whole only by the create and rotate replies (`key`); every other view shows
//! `key_masked`. Every field is validated with a 400 naming it; unknown fields are refused.
//! Changes are applied to the registry (`inbound::clients`) and acknowledged by the store
//! (and Redis, when instances share state: refused with 503 `redis_unavailable` while it does
//! not answer) before the reply, like key changes. `quota_today` counts every instance.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::usage::{now_ms, store_error, tokens_json};
use super::{AdminError, AdminState, Reply, json_object, kind_of, ok, path_id, reply, time};
use crate::inbound::clients::{self, Client, ClientsError};
use crate::store::records::{ClientRecord, Millis};
use crate::store::sqlite::UsageTotals;

const NAME_MAX_CHARS: usize = 100;
const MODELS_MAX: usize = 1000;
const MODEL_MAX_CHARS: usize = 200;
/// The largest `rpm` (a limiter cell every 60 µs: beyond it, "unlimited" says the same).
const RPM_MAX: u64 = 1_000_000;
/// The largest daily limit (what the database stores as a signed integer).
const DAILY_MAX: u64 = i64::MAX as u64;

const CREATE_FIELDS: [&str; 6] = [
    "name",
    "requests_per_day",
    "tokens_per_day",
    "rpm",
    "models",
    "expires_at",
];

impl From<ClientsError> for AdminError {
    fn from(e: ClientsError) -> Self {
        match e {
            ClientsError::NotFound(id) => {
                AdminError::not_found(format!("client {id} does not exist"))
            }
            ClientsError::Shared(m) => {
                tracing::warn!(error = %m, "client change refused: the shared state is unreachable");
                AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", m)
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "client change not acknowledged by the store");
                AdminError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    e.to_string(),
                )
            }
            e => {
                tracing::error!(error = %e, "client change not saved");
                AdminError::internal(e.to_string())
            }
        }
    }
}

/// A field that must be one of `CREATE_FIELDS`.
fn refuse_unknown(o: &Map<String, Value>) -> Result<(), AdminError> {
    match o.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        Some(k) => Err(AdminError::bad_request(format!(
            "{k}: unknown field (expected {})",
            CREATE_FIELDS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// `name`: 1 to 100 characters.
fn parse_name(v: &Value) -> Result<String, AdminError> {
    match v {
        Value::String(s) if !s.trim().is_empty() && s.chars().count() <= NAME_MAX_CHARS => {
            Ok(s.trim().to_string())
        }
        Value::String(_) => Err(AdminError::bad_request(format!(
            "name: expected 1 to {NAME_MAX_CHARS} characters"
        ))),
        other => Err(AdminError::bad_request(format!(
            "name: expected a string, got {}",
            kind_of(other)
        ))),
    }
}

/// A limit: a whole number from 1 to `max`, or `null` (unlimited).
fn parse_limit(name: &str, v: &Value, max: u64) -> Result<Option<u64>, AdminError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_u64() {
            Some(x) if (1..=max).contains(&x) => Ok(Some(x)),
            _ => Err(AdminError::bad_request(format!(
                "{name}: expected a whole number from 1 to {max} or null (unlimited), got {n}"
            ))),
        },
        other => Err(AdminError::bad_request(format!(
            "{name}: expected a whole number from 1 to {max} or null (unlimited), got {}",
            kind_of(other)
        ))),
    }
}

/// `models`: up to 1,000 non-empty model ids, or `null` (every model).
fn parse_models(v: &Value) -> Result<Option<Vec<String>>, AdminError> {
    let items = match v {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        other => {
            return Err(AdminError::bad_request(format!(
                "models: expected an array of model ids or null (every model), got {}",
                kind_of(other)
            )));
        }
    };
    if items.len() > MODELS_MAX {
        return Err(AdminError::bad_request(format!(
            "models: at most {MODELS_MAX} model ids, got {}",
            items.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.trim().is_empty() && s.chars().count() <= MODEL_MAX_CHARS => {
                let s = s.trim().to_string();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            Value::String(_) => {
                return Err(AdminError::bad_request(format!(
                    "models[{i}]: expected a model id of 1 to {MODEL_MAX_CHARS} characters"
                )));
            }
            other => {
                return Err(AdminError::bad_request(format!(
                    "models[{i}]: expected a string, got {}",
                    kind_of(other)
                )));
            }
        }
    }
    Ok(Some(out))
}

/// `expires_at`: an RFC 3339 time, or `null` (never). `future`: it must lie ahead of `now`.
fn parse_expiry(v: &Value, now: Millis, future: bool) -> Result<Option<Millis>, AdminError> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        other => {
            return Err(AdminError::bad_request(format!(
                "expires_at: expected an RFC 3339 time such as 2027-01-31T00:00:00Z or null, got {}",
                kind_of(other)
            )));
        }
    };
    let t = s
        .parse::<jiff::Timestamp>()
        .map_err(|_| {
            AdminError::bad_request(format!(
                "expires_at: expected an RFC 3339 time such as 2027-01-31T00:00:00Z, got {s:?}"
            ))
        })?
        .as_millisecond();
    if future && t <= now {
        return Err(AdminError::bad_request(format!(
            "expires_at: must lie in the future, got {s}"
        )));
    }
    Ok(Some(t))
}

/// The changes a body asks for (each `Some` is a field that was sent).
#[derive(Default)]
struct Changes {
    name: Option<String>,
    rpm: Option<Option<u64>>,
    requests_per_day: Option<Option<u64>>,
    tokens_per_day: Option<Option<u64>>,
    models: Option<Option<Vec<String>>>,
    expires_at: Option<Option<Millis>>,
}

fn parse_changes(o: &Map<String, Value>, now: Millis, create: bool) -> Result<Changes, AdminError> {
    refuse_unknown(o)?;
    let mut c = Changes::default();
    if let Some(v) = o.get("name") {
        c.name = Some(parse_name(v)?);
    } else if create {
        return Err(AdminError::bad_request(format!(
            "name: required (1 to {NAME_MAX_CHARS} characters)"
        )));
    }
    if let Some(v) = o.get("rpm") {
        c.rpm = Some(parse_limit("rpm", v, RPM_MAX)?);
    }
    if let Some(v) = o.get("requests_per_day") {
        c.requests_per_day = Some(parse_limit("requests_per_day", v, DAILY_MAX)?);
    }
    if let Some(v) = o.get("tokens_per_day") {
        c.tokens_per_day = Some(parse_limit("tokens_per_day", v, DAILY_MAX)?);
    }
    if let Some(v) = o.get("models") {
        c.models = Some(parse_models(v)?);
    }
    if let Some(v) = o.get("expires_at") {
        c.expires_at = Some(parse_expiry(v, now, create)?);
    }
    Ok(c)
}

impl Changes {
    fn apply(self, r: &mut ClientRecord) {
        if let Some(n) = self.name {
            r.name = n;
        }
        if let Some(v) = self.rpm {
            r.rpm = v.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        }
        if let Some(v) = self.requests_per_day {
            r.requests_per_day = v;
        }
        if let Some(v) = self.tokens_per_day {
            r.tokens_per_day = v;
        }
        if let Some(v) = self.models {
            r.models = v;
        }
        if let Some(v) = self.expires_at {
            r.expires_at = v;
        }
    }
}

/// Today's usage of every client from the usage rollups (the contract's token object).
async fn usage_today(st: &AdminState) -> Result<HashMap<String, UsageTotals>, AdminError> {
    let tz = st.app.recorder.tz().clone();
    let today = crate::usage::buckets::day_start(now_ms(), &tz);
    Ok(st
        .app
        .store
        .usage_by("client", today)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|(id, _, _)| id.starts_with(clients::ID_PREFIX))
        .map(|(id, _, day)| (id, day))
        .collect())
}

/// A client as the admin API shows it (never its key).
fn client_json(st: &AdminState, c: &Client, usage: Option<&UsageTotals>, now: Millis) -> Value {
    let r = &c.rec;
    let empty = UsageTotals::default();
    let u = usage.unwrap_or(&empty);
    let q = st.app.inbound.clients.today(c, now);
    json!({
        "id": r.id,
        "name": r.name,
        "key_masked": r.key_masked,
        "rpm": r.rpm,
        "requests_per_day": r.requests_per_day,
        "tokens_per_day": r.tokens_per_day,
        "models": r.models,
        "expires_at": r.expires_at.map_or(Value::Null, time),
        "expired": c.expired(now),
        "created_at": time(r.created_at),
        "updated_at": time(r.updated_at),
        "last_used_at": c.last_used_at().map_or(Value::Null, time),
        "usage_today": {"requests": u.requests, "tokens": tokens_json(&u.tokens)},
        "quota_today": {"requests": q.total_requests(), "tokens": q.total_tokens()},
    })
}

/// The view with the whole key added (create and rotate only).
fn with_key(mut v: Value, key: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("key".into(), Value::String(key.to_string()));
    }
    v
}

pub(super) async fn list(State(st): State<AdminState>) -> Reply {
    let usage = usage_today(&st).await?;
    let now = now_ms();
    let all: Vec<Value> = st
        .app
        .inbound
        .clients
        .list()
        .iter()
        .map(|c| client_json(&st, c, usage.get(&c.rec.id), now))
        .collect();
    ok(json!({"clients": all}))
}

pub(super) async fn get_one(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let c = st
        .app
        .inbound
        .clients
        .get(&id)
        .ok_or_else(|| AdminError::not_found(format!("client {id} does not exist")))?;
    let usage = usage_today(&st).await?;
    ok(client_json(&st, &c, usage.get(&id), now_ms()))
}

pub(super) async fn create(State(st): State<AdminState>, body: Body) -> Reply {
    let o = json_object(body).await?;
    let now = now_ms();
    let changes = parse_changes(&o, now, true)?;
    let (key, key_digest, key_masked) = clients::new_key()?;
    let mut rec = ClientRecord {
        id: clients::new_id(),
        name: String::new(),
        key_digest,
        key_masked,
        rpm: None,
        requests_per_day: None,
        tokens_per_day: None,
        models: None,
        expires_at: None,
        created_at: now,
        updated_at: now,
    };
    changes.apply(&mut rec);
    let c = st.app.inbound.clients.create(rec).await?;
    tracing::info!(client = %c.rec.id, name = %c.rec.name, "client key created");
    reply(
        StatusCode::CREATED,
        with_key(client_json(&st, &c, None, now), &key),
        "client created: the key is shown only now",
    )
}

pub(super) async fn update(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let id = path_id(id)?;
    let o = json_object(body).await?;
    if o.is_empty() {
        return Err(AdminError::bad_request(format!(
            "request body: nothing to change (fields: {})",
            CREATE_FIELDS.join(", ")
        )));
    }
    let now = now_ms();
    let changes = parse_changes(&o, now, false)?;
    let c = st
        .app
        .inbound
        .clients
        .update(&id, |r| {
            changes.apply(r);
            r.updated_at = now;
            Ok::<(), AdminError>(())
        })
        .await??;
    tracing::info!(client = %c.rec.id, "client key changed");
    let usage = usage_today(&st).await?;
    ok(client_json(&st, &c, usage.get(&id), now))
}

pub(super) async fn rotate(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let (key, key_digest, key_masked) = clients::new_key()?;
    let now = now_ms();
    let c = st
        .app
        .inbound
        .clients
        .update(&id, |r| {
            r.key_digest = key_digest;
            r.key_masked = key_masked;
            r.updated_at = now;
            Ok::<(), AdminError>(())
        })
        .await??;
    tracing::info!(client = %c.rec.id, "client key rotated: the old key no longer works");
    let usage = usage_today(&st).await?;
    reply(
        StatusCode::OK,
        with_key(client_json(&st, &c, usage.get(&id), now), &key),
        "key rotated: the new key is shown only now; the old one no longer works",
    )
}

pub(super) async fn delete_one(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let c = st.app.inbound.clients.delete(&id).await?;
    tracing::info!(client = %c.rec.id, "client key deleted (revoked)");
    reply(
        StatusCode::OK,
        json!({"id": c.rec.id, "deleted": true}),
        "client deleted: its key no longer works",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_whole_numbers_from_one_or_null() {
        assert_eq!(parse_limit("rpm", &json!(null), 10).ok(), Some(None));
        assert_eq!(parse_limit("rpm", &json!(3), 10).ok(), Some(Some(3)));
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!(11),
            json!("3"),
            json!(true),
        ] {
            let e = parse_limit("rpm", &bad, 10).unwrap_err();
            assert!(e.message.starts_with("rpm: "), "{}", e.message);
        }
    }

    #[test]
    fn models_and_expiry() {
        assert_eq!(
            parse_models(&json!(["a", " a ", "b"])).ok(),
            Some(Some(vec!["a".to_string(), "b".to_string()]))
        );
        assert!(parse_models(&json!([""])).is_err());
        assert!(parse_models(&json!("a")).is_err());
        assert!(parse_models(&json!(vec!["m"; 1001])).is_err());
        assert!(parse_expiry(&json!("2020-01-01T00:00:00Z"), 10_000_000_000_000, true).is_err());
        assert!(parse_expiry(&json!("2020-01-01T00:00:00Z"), 10_000_000_000_000, false).is_ok());
        assert!(parse_expiry(&json!("tomorrow"), 0, true).is_err());
    }
}
