//! The admin API (contract §7, usage endpoints aside): key-pool management, key tests, pool
//! groups and the stored layer of `key_pool` settings.
//!
//! Every `/admin/*` and `/factory/*` path — unknown ones included — goes through one
//! authentication layer first ([`admin_gate`]): `x-admin-key` compared in constant time with
//! `ADMIN_ACCESS_KEY` (401 `unauthorized`), 503 `admin_disabled` when no usable admin key is
//! configured (unset, shorter than 16 characters, or a placeholder), 429 `too_many_attempts`
//! for an address with too many failed attempts. A request body must then be JSON (415) and is
//! read under the 16 MiB cap and the in-flight body budget (contract §9). Replies use
//! the admin envelope `{"success":true,"data":…,"message"?}` /
//! `{"success":false,"error":{"code","message"}}`; export is the one reply that is a file and
//! the one place whole secrets leave the gateway.
//!
//! Request bodies and query strings are parsed here rather than by axum's extractors, whose
//! rejections are plain text: every malformed input gets a 400 envelope naming the problem.

mod clients;
mod groups;
mod keys;
mod login;
mod logs;
mod node;
mod settings;
mod testing;
mod usage;

pub use testing::KeyTestRunner;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, patch, post};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::config::json_describe::kind_of;
use crate::credentials::pool::{KeyView, PoolError};
use crate::inbound::body::{has_body, is_json_content_type, read_limited};
use crate::inbound::rejected;
use crate::inbound::session::{self, Check};
use crate::store::records::Millis;

/// The largest admin request body (a batch import of many keys fits easily).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// State shared by the admin handlers.
#[derive(Debug, Clone)]
struct AdminState {
    app: App,
    jobs: Arc<testing::Jobs>,
    /// Serialises changes of the stored settings layer (read, persist, apply).
    config_lock: Arc<tokio::sync::Mutex<()>>,
}

/// The admin routes (`/admin/*` and `/factory/*`), behind the admin authentication layer.
/// Merged into the main router.
pub fn router<S>(app: App) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let state = AdminState {
        app,
        jobs: Arc::new(testing::Jobs::default()),
        config_lock: Arc::new(tokio::sync::Mutex::new(())),
    };
    // Static segments win over `{id}` whatever the order of registration (the router matches
    // the most specific route), so `/admin/keys/disabled` & co. never reach the `{id}` handlers.
    Router::new()
        .route("/admin/session", post(login::login).delete(login::logout))
        .route("/admin/logs/stream", get(logs::stream))
        .route("/admin/stats", get(keys::stats))
        .route("/admin/keys", get(keys::list).post(keys::add))
        .route("/admin/keys/add", post(keys::add))
        .route("/admin/keys/batch", post(keys::batch))
        .route("/admin/keys/bulk", post(keys::bulk))
        .route("/admin/keys/export", get(keys::export))
        .route("/admin/keys/test-all", post(testing::test_all))
        .route("/admin/keys/disabled", delete(keys::delete_disabled))
        .route("/admin/keys/banned", delete(keys::delete_banned))
        .route(
            "/admin/keys/{id}",
            get(keys::get_one)
                .put(keys::update)
                .delete(keys::delete_one),
        )
        .route("/admin/keys/{id}/history", get(keys::history))
        .route("/admin/keys/{id}/toggle", patch(keys::toggle))
        .route("/admin/keys/{id}/notes", patch(keys::notes))
        .route("/admin/keys/{id}/pool", patch(keys::move_key))
        .route("/admin/keys/{id}/reset", post(keys::reset))
        .route("/admin/keys/{id}/test", post(testing::test_one))
        .route("/admin/jobs/{id}", get(testing::job))
        .route("/admin/pool-groups", get(groups::list).post(groups::create))
        .route(
            "/admin/pool-groups/{id}",
            patch(groups::update).delete(groups::remove),
        )
        .route(
            "/admin/config",
            get(settings::get_config).put(settings::put_config),
        )
        .route("/admin/config/reset", post(settings::reset_config))
        .route("/admin/usage", get(usage::usage_series))
        .route("/admin/clients", get(clients::list).post(clients::create))
        .route(
            "/admin/clients/{id}",
            get(clients::get_one)
                .patch(clients::update)
                .delete(clients::delete_one),
        )
        .route("/admin/clients/{id}/rotate", post(clients::rotate))
        .route("/factory/balance/usage", get(usage::balance_usage))
        .route("/factory/balance/summary", get(usage::balance_summary))
        .route("/factory/balance/sync", post(usage::balance_sync))
        .route("/factory/balance/cleanup", post(usage::balance_cleanup))
        // The Node.js version's calls (README "Coming from the Node version").
        .route("/admin/stats/summary", get(node::stats_summary))
        .route("/admin/stats/today", get(node::stats_today))
        .route("/admin/stats/trend", get(node::stats_trend))
        .route("/admin/stats/full", get(node::stats_full))
        .route("/admin/stats/reset", post(node::stats_reset))
        .route("/admin/token/stats", get(node::token_stats))
        .route("/admin/token/usage", get(node::token_usage))
        .route("/admin/token/usage/{id}", get(node::token_usage_one))
        .route("/admin/token/sync", post(node::token_sync))
        .route("/admin/token/trend", get(node::token_trend))
        .route("/admin/token/cache", delete(node::token_cache))
        .route("/admin/logs/history", get(node::logs_history))
        .route("/admin/logs/stats", get(node::logs_stats))
        .route("/admin/logs/clear", delete(node::logs_clear))
        .route("/factory/balance/all", get(node::balance_all))
        .route(
            "/factory/balance/check/{id}",
            get(node::balance_check).post(node::balance_check),
        )
        .route("/admin", any(unknown_route))
        .route("/admin/", any(unknown_route))
        .route("/admin/{*rest}", any(unknown_route))
        .route("/factory", any(unknown_route))
        .route("/factory/", any(unknown_route))
        .route("/factory/{*rest}", any(unknown_route))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

// ----- authentication -----------------------------------------------------------------------

/// Why the admin API is closed when no usable admin key is configured.
fn disabled(app: &App) -> AdminError {
    let message = match &app.settings.admin_key_disabled {
        Some(reason) => reason.clone(),
        None => "the admin API is disabled: set ADMIN_ACCESS_KEY to enable it".to_string(),
    };
    AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "admin_disabled", message)
}

/// The admin key check shared by the admin API, `/factory/*` and `/metrics` (contract §7, §9):
/// 503 `admin_disabled` without a usable key (unset, too short, a placeholder); 429
/// `too_many_attempts` with `Retry-After` for an address with 10 failed attempts within 60 s
/// (even with the right key); 401 `unauthorized` for a missing or wrong key (`x-admin-key`,
/// or also `Authorization: Bearer` when `bearer` is true). A wrong key counts against the
/// address and is logged at warn with it, never with the value tried; every refusal is counted
/// as a rejected request.
///
/// Without a key header, the console's session cookie (contract §11) is accepted instead; a
/// state-changing method authenticated by it must carry the session's `x-csrf-token` (403
/// `csrf`). An unknown or ended session is a 401 that does not count as a failed attempt (its
/// value is 256 random bits: nothing to guess).
pub(crate) fn admin_gate(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    extensions: &Extensions,
    bearer: bool,
) -> Result<(), AdminError> {
    let key = unthrottled(app, headers, extensions)?;
    let inbound = &app.inbound;
    let ip = inbound.client_ip_of(extensions, headers);
    let header_key = headers
        .get("x-admin-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let bearer_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|_| bearer)
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let given = header_key.or(bearer_key);
    if given.is_some_and(|g| key.ct_eq(g)) {
        return Ok(());
    }
    if given.is_none()
        && let Some(token) = session::cookie_value(headers)
    {
        return match inbound.sessions.check(token, key, now_ms()) {
            Check::Valid { csrf } => {
                let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
                let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
                if safe || session::csrf_matches(&csrf, sent) {
                    Ok(())
                } else {
                    inbound.rejected.record(rejected::BAD_ADMIN_KEY);
                    Err(AdminError::new(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "a change made with the console's session cookie must carry its x-csrf-token header",
                    ))
                }
            }
            Check::Invalid => {
                inbound.rejected.record(rejected::BAD_ADMIN_KEY);
                Err(AdminError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the console session has ended or expired: log in again",
                ))
            }
        };
    }
    inbound.rejected.record(rejected::BAD_ADMIN_KEY);
    if given.is_some() {
        let blocked = inbound.admin_failures.fail(ip, std::time::Instant::now());
        tracing::warn!(client = %ip, throttled_for_s = blocked, "wrong admin key");
    }
    Err(AdminError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        if bearer {
            "missing or wrong admin key: send ADMIN_ACCESS_KEY as x-admin-key or Authorization: Bearer"
        } else {
            "missing or wrong admin key: send ADMIN_ACCESS_KEY in the x-admin-key header"
        },
    ))
}

/// The admin key, when one is configured (503 otherwise) and the client's address is not
/// throttled for failed attempts (429 with `Retry-After`, even with the right key).
fn unthrottled<'a>(
    app: &'a App,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<&'a crate::secret::Secret, AdminError> {
    let Some(key) = &app.settings.admin_access_key else {
        return Err(disabled(app));
    };
    let inbound = &app.inbound;
    let ip = inbound.client_ip_of(extensions, headers);
    if let Some(secs) = inbound
        .admin_failures
        .blocked(ip, std::time::Instant::now())
    {
        inbound.rejected.record(rejected::THROTTLED);
        return Err(AdminError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed admin-key attempts from this address; retry in {secs} s"),
        )
        .with_retry_after(secs));
    }
    Ok(key)
}

/// Now, in ms since the epoch.
fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// An admin request's body, once authenticated: it must be JSON when there is one (415), is
/// read under the 16 MiB cap and the body deadline, and is reserved against the in-flight body
/// budget until the handler drops it.
async fn admin_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Body, AdminError> {
    if !has_body(headers, &body) {
        return Ok(body);
    }
    if !is_json_content_type(headers) {
        app.inbound
            .rejected
            .record(rejected::UNSUPPORTED_MEDIA_TYPE);
        return Err(AdminError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a request body must be sent as Content-Type: application/json",
        ));
    }
    match read_limited(body, headers, &app.inbound.bodies, MAX_BODY_BYTES).await {
        Ok(bytes) => Ok(Body::from(bytes)),
        Err(e) => {
            app.inbound.rejected.record(e.reason());
            let mut out = AdminError::new(e.status(), e.code(), e.to_string());
            out.retry_after = e.retry_after();
            Err(out)
        }
    }
}

/// Authenticates every admin request ([`admin_gate`]), reads its body ([`admin_body`]), and
/// gives the router's bare 405 answers the admin envelope.
async fn authenticate(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    // The console's login proves the key itself, from its body (`session::login`).
    let login = req.method() == Method::POST && req.uri().path() == "/admin/session";
    if !login
        && let Err(e) = admin_gate(
            &st.app,
            req.method(),
            req.headers(),
            req.extensions(),
            false,
        )
    {
        return e.into_response();
    }
    let (parts, body) = req.into_parts();
    let req = match admin_body(&st.app, &parts.headers, body).await {
        Ok(body) => Request::from_parts(parts, body),
        Err(e) => return e.into_response(),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = resp.headers().get(header::ALLOW).cloned();
        let mut out = AdminError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{method} is not supported on {path}{}",
                allow
                    .as_ref()
                    .and_then(|a| a.to_str().ok())
                    .map(|a| format!(" (allowed: {a})"))
                    .unwrap_or_default()
            ),
        )
        .into_response();
        if let Some(a) = allow {
            out.headers_mut().insert(header::ALLOW, a);
        }
        return out;
    }
    resp
}

async fn unknown_route(req: Request) -> Response {
    AdminError::not_found(format!(
        "no admin route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

// ----- envelope -----------------------------------------------------------------------------

/// An admin error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        AdminError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        AdminError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        AdminError::new(StatusCode::CONFLICT, "conflict", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<PoolError> for AdminError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::BadRequest(m) => AdminError::bad_request(m),
            PoolError::NotFound(m) => AdminError::not_found(m),
            PoolError::Conflict(m) => AdminError::conflict(m),
            PoolError::Persist(_) => {
                tracing::error!(error = %e, "admin change not saved");
                AdminError::internal(e.to_string())
            }
            PoolError::Unavailable(m) => {
                tracing::warn!(error = %m, "admin change not acknowledged by the store");
                AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", m)
            }
            PoolError::Shared(m) => {
                tracing::warn!(error = %m, "admin change refused: the shared state is unreachable");
                AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", m)
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(json!({
                "success": false,
                "error": {"code": self.code, "message": self.message},
            })),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

type Reply = Result<Response, AdminError>;

/// 200 with `data`.
fn ok(data: Value) -> Reply {
    Ok(axum::Json(json!({"success": true, "data": data})).into_response())
}

/// A success reply with a status and a message.
fn reply(status: StatusCode, data: Value, message: &str) -> Reply {
    Ok((
        status,
        axum::Json(json!({"success": true, "data": data, "message": message})),
    )
        .into_response())
}

// ----- input parsing ------------------------------------------------------------------------

/// The `{id}` path parameter.
fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, AdminError> {
    match p {
        Ok(Path(id)) if !id.is_empty() => Ok(id),
        Ok(_) => Err(AdminError::bad_request("id: must not be empty")),
        Err(e) => Err(AdminError::bad_request(format!("id: {}", e.body_text()))),
    }
}

/// The body's bytes. The authentication layer has already read it (JSON content type, size
/// cap, deadline, in-flight budget), so this only collects the buffer it left.
async fn body_bytes(body: Body) -> Result<bytes::Bytes, AdminError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            AdminError::bad_request(format!(
                "the request body could not be read or is larger than {} MiB",
                MAX_BODY_BYTES / (1024 * 1024)
            ))
        })
}

/// Bytes that are not JSON, or JSON that is not an object: 400.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, AdminError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| AdminError::bad_request(format!("request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(o) => Ok(o),
        other => Err(AdminError::bad_request(format!(
            "request body: expected a JSON object, got {}",
            kind_of(&other)
        ))),
    }
}

/// The body as one JSON object (an empty body is a 400).
async fn json_object(body: Body) -> Result<Map<String, Value>, AdminError> {
    let bytes = body_bytes(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::bad_request(
            "request body: expected a JSON object, got an empty body",
        ));
    }
    parse_object(&bytes)
}

/// The body as one JSON object, where no body at all counts as `{}` (routes whose every field
/// is optional, such as the toggle that Node-version scripts call without a body).
async fn json_object_or_empty(body: Body) -> Result<Map<String, Value>, AdminError> {
    let bytes = body_bytes(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    parse_object(&bytes)
}

/// An optional string field (`null` = absent).
fn opt_string(o: &Map<String, Value>, name: &str) -> Result<Option<String>, AdminError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(AdminError::bad_request(format!(
            "{name}: expected a string, got {}",
            kind_of(other)
        ))),
    }
}

/// A required string field.
fn req_string(o: &Map<String, Value>, name: &str) -> Result<String, AdminError> {
    opt_string(o, name)?
        .ok_or_else(|| AdminError::bad_request(format!("{name}: required (a string)")))
}

/// An optional whole-number field.
fn opt_i64(o: &Map<String, Value>, name: &str) -> Result<Option<i64>, AdminError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            AdminError::bad_request(format!("{name}: expected a whole number, got {v}"))
        }),
    }
}

/// An optional array of strings.
fn opt_string_array(o: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, AdminError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(AdminError::bad_request(format!(
                    "{name}[{i}]: expected a string, got {}",
                    kind_of(other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(AdminError::bad_request(format!(
            "{name}: expected an array of strings, got {}",
            kind_of(other)
        ))),
    }
}

/// Decoded query parameters (`+` is a space; `%XX` escapes; invalid UTF-8 is refused).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, AdminError> {
        let mut out = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            out.push((percent_decode(k)?, percent_decode(v)?));
        }
        Ok(Query(out))
    }

    /// The first value of a parameter; an empty value counts as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A whole number within `[min, max]`, or `default` when absent.
    fn number(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, AdminError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(AdminError::bad_request(format!(
                    "{name}: expected a whole number from {min} to {max}, got {v:?}"
                ))),
            },
        }
    }

    /// A value among `allowed`, or `default` when absent.
    fn one_of<'a>(
        &'a self,
        name: &str,
        allowed: &[&str],
        default: &'a str,
    ) -> Result<&'a str, AdminError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if allowed.contains(&v) => Ok(v),
            Some(v) => Err(AdminError::bad_request(format!(
                "{name}: expected {}, got {v:?}",
                allowed.join("|")
            ))),
        }
    }
}

fn percent_decode(s: &str) -> Result<String, AdminError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => {
                        return Err(AdminError::bad_request(
                            "query string: invalid percent escape",
                        ));
                    }
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| AdminError::bad_request("query string: not valid UTF-8 once decoded"))
}

/// Checks that a pool-group filter names an existing group.
fn check_pool_filter(app: &App, pool: Option<&str>) -> Result<(), AdminError> {
    match pool {
        Some(p) if !app.pool.groups().iter().any(|g| g.id == p) => Err(AdminError::not_found(
            format!("pool group {p} does not exist"),
        )),
        _ => Ok(()),
    }
}

// ----- views --------------------------------------------------------------------------------

/// RFC 3339 UTC, e.g. `2026-11-26T14:37:00Z` (fractional seconds only when non-zero).
fn time(ms: Millis) -> Value {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| Value::String(t.to_string()))
        .unwrap_or(Value::Null)
}

fn opt_time(ms: Option<Millis>) -> Value {
    ms.map_or(Value::Null, time)
}

/// A key record as the admin API shows it (secret masked).
fn key_json(v: &KeyView, now: Millis) -> Value {
    let r = &v.rec;
    let mut o = json!({
        "id": r.id,
        "key_masked": r.secret.masked(),
        "status": r.status.as_str(),
        "cooldown_until": opt_time(r.cooldown_until.filter(|t| *t > now)),
        "status_reason": r.status_reason,
        "status_changed_at": opt_time(r.status_changed_at),
        "disabled_by": r.disabled_by.map(|d| d.as_str()),
        "poolGroup": r.pool_group,
        "notes": r.notes,
        "created_at": time(r.created_at),
        "last_used_at": opt_time(r.last_used_at),
        "requests": r.requests,
        "successes": r.successes,
        "failures": r.failures,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "last_test": r.last_test.map_or(Value::Null, |t| json!({
            "at": time(t.at),
            "result": t.result.as_str(),
            "status": t.status,
        })),
    });
    if let (Some(b), Some(obj)) = (v.balance, o.as_object_mut()) {
        obj.insert("balance".into(), balance_json(&b));
    }
    o
}

/// A key's balance (contract §7): `{used, allowance, remaining, ratio (0–1), last_sync, trial_end}`.
pub(crate) fn balance_json(b: &crate::credentials::pool::Balance) -> Value {
    let ratio = if b.allowance == 0 {
        0.0
    } else {
        (b.used as f64 / b.allowance as f64).min(1.0)
    };
    json!({
        "used": b.used,
        "allowance": b.allowance,
        "remaining": b.allowance.saturating_sub(b.used),
        "ratio": ratio,
        "last_sync": time(b.synced_at),
        "trial_end": b.trial_end.map(time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("a=1&b=x%20y+z&c=&d&e=%E4%BD%A0")).unwrap_or(Query(Vec::new()));
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("b"), Some("x y z"));
        assert_eq!(q.get("c"), None);
        assert_eq!(q.get("d"), None);
        assert_eq!(q.get("e"), Some("你"));
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%ff")).is_err());
        assert!(Query::parse(Some("a=%4")).is_err());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(1_795_703_820_000), json!("2026-11-26T14:37:00Z"));
        assert_eq!(time(1_795_703_820_123), json!("2026-11-26T14:37:00.123Z"));
        assert_eq!(opt_time(None), Value::Null);
    }
}
