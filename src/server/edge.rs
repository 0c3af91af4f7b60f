//! The edge middleware in front of every route: request id, CORS on `/v1/*`, failed-key
//! throttling and client authentication on `/v1/*`, the JSON content-type rule of the client
//! JSON routes, the access log and the request metrics (contract §6, §9).
//!
//! Order on `/v1/*`: a preflight (`OPTIONS`) is answered at once without authentication; then a
//! throttled address gets 429 `too_many_attempts` (even with the right key); then the client key
//! — `API_ACCESS_KEY` or a client key of contract §13 (401 on a missing or wrong one; a wrong one
//! counts against the address; an expired client key is 401 `key_expired`, a client over its
//! `rpm` 429 `rate_limited`; the client is handed to the pipeline as a [`ClientAuth`]
//! extension); then 415 for a client JSON route without a JSON `Content-Type`. Everything refused here is counted in
//! `droid2api_rejected_total{reason}` and the hourly rejected counts, never as a usage record.
//! The admin routes (`/admin/*`, `/factory/*`, `/metrics`) authenticate themselves
//! (`admin::admin_gate`) and never get CORS headers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::RequestId;
use crate::app::App;
use crate::error::{ApiError, Envelope};
use crate::inbound::body::is_json_content_type;
use crate::inbound::clients::{Client, ClientAuth};
use crate::inbound::rejected;
use crate::proxy::ProxyInfo;
use crate::telemetry::metrics as m;

/// The routes whose body must be JSON (`Content-Type: application/json` or `…+json`).
pub const JSON_ROUTES: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
];

const CORS_ALLOW_HEADERS: &str = "authorization, content-type, x-api-key, anthropic-version, anthropic-beta, x-session-id, x-assistant-message-id, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout, x-stainless-helper-method";
const CORS_EXPOSE_HEADERS: &str = "x-request-id, x-upstream-request-id, request-id, retry-after";

/// The error envelope of a path: Anthropic on `/v1/messages*`, OpenAI elsewhere.
pub fn envelope_for(path: &str) -> Envelope {
    if path.starts_with("/v1/messages") {
        Envelope::Anthropic
    } else {
        Envelope::OpenAi
    }
}

/// Whether `/v1/*` requires a client key: `API_ACCESS_KEY` is set or any client key exists
/// (contract §13); the CORS default follows.
pub fn client_auth_on(app: &App) -> bool {
    app.settings.api_access_key.is_some() || app.inbound.clients.any()
}

/// Which browser origins may call `/v1/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cors<'a> {
    /// None: no `Access-Control-Allow-*` header at all.
    Off,
    /// Any origin (`*`).
    Any,
    /// The listed origins (canonical), echoed with `Vary: Origin`.
    List(&'a [String]),
}

fn cors_policy(app: &App) -> Cors<'_> {
    match &app.settings.cors_origins {
        Some(list) if list.iter().any(|o| o == "*") => Cors::Any,
        Some(list) => Cors::List(list),
        None if client_auth_on(app) => Cors::Any,
        None => Cors::Off,
    }
}

impl Cors<'_> {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::Off => None,
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::List(list) => {
                let o = origin?;
                let canonical = o.to_str().ok()?.trim_end_matches('/').to_ascii_lowercase();
                list.contains(&canonical).then(|| o.clone())
            }
        }
    }

    fn echoes(&self) -> bool {
        matches!(self, Cors::List(_))
    }
}

/// Removes every `Access-Control-*` header (the edge alone decides them).
fn strip_cors(headers: &mut HeaderMap) {
    let names: Vec<header::HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// The answer to a CORS preflight: 204, with the `Access-Control-Allow-*` headers only when the
/// origin is allowed.
fn preflight(cors: Cors<'_>, req_headers: &HeaderMap) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    if cors.echoes() {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(allow) = cors.allow_origin(req_headers.get(header::ORIGIN)) else {
        return r;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let requested = req_headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(CORS_ALLOW_HEADERS));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    h.append(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Headers"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// CORS headers on a `/v1/*` answer.
fn apply_cors(cors: Cors<'_>, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    strip_cors(headers);
    if cors.echoes() {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(allow) = cors.allow_origin(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSE_HEADERS),
        );
    }
}

/// What a request presented as its client key.
enum ClientKey {
    /// `API_ACCESS_KEY` (unlimited), or no key needed.
    Valid,
    /// A client key (contract §13).
    Client(Arc<Client>),
    Missing,
    Wrong,
}

/// Checks `API_ACCESS_KEY` (Bearer or x-api-key, constant time), then the client keys (by
/// digest).
fn client_key(app: &App, headers: &HeaderMap) -> ClientKey {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let bearer = authorization
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let x_api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if let Some(key) = &app.settings.api_access_key {
        // Both candidates are compared so the time taken does not reveal which header was used.
        let a = bearer.is_some_and(|b| key.ct_eq(b));
        let b = x_api_key.is_some_and(|k| key.ct_eq(k));
        if a | b {
            return ClientKey::Valid;
        }
    } else if !app.inbound.clients.any() {
        return ClientKey::Valid;
    }
    let clients = &app.inbound.clients;
    if let Some(c) = bearer
        .and_then(|b| clients.authenticate(b))
        .or_else(|| x_api_key.and_then(|k| clients.authenticate(k)))
    {
        return ClientKey::Client(c);
    }
    if authorization.is_none() && x_api_key.is_none() {
        ClientKey::Missing
    } else {
        ClientKey::Wrong
    }
}

/// Throttling, the client key and the content type on a `/v1/*` request (not a preflight).
/// Returns the client key that authenticated it, if one did.
fn check_v1(app: &App, req: &Request, path: &str) -> Result<Option<ClientAuth>, ApiError> {
    let inbound = &app.inbound;
    let mut auth = None;
    if client_auth_on(app) {
        let now = std::time::Instant::now();
        let ip = || inbound.client_ip_of(req.extensions(), req.headers());
        // An empty table (the usual case) costs neither the address nor a lock.
        if let Some(secs) = (!inbound.client_failures.is_empty())
            .then(ip)
            .and_then(|ip| inbound.client_failures.blocked(ip, now))
        {
            inbound.rejected.record(rejected::THROTTLED);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed client-key attempts from this address; retry in {secs} s"),
            )
            .with_code("too_many_attempts")
            .with_retry_after(secs));
        }
        match client_key(app, req.headers()) {
            ClientKey::Valid => {}
            ClientKey::Client(c) => {
                let now_ms = jiff::Timestamp::now().as_millisecond();
                if c.expired(now_ms) {
                    inbound.count_client_refusal("expired");
                    let at = c
                        .rec
                        .expires_at
                        .and_then(|t| jiff::Timestamp::from_millisecond(t).ok())
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        format!("this client key expired at {at}"),
                    )
                    .with_code("key_expired"));
                }
                if let Err(r) = inbound.clients.check_rate(&c) {
                    inbound.count_client_refusal("rate_limited");
                    return Err(r.to_api_error());
                }
                auth = Some(ClientAuth(c));
            }
            outcome => {
                inbound.rejected.record(rejected::BAD_CLIENT_KEY);
                if matches!(outcome, ClientKey::Wrong) {
                    let ip = ip();
                    let blocked = inbound.client_failures.fail(ip, now);
                    tracing::warn!(
                        client = %ip,
                        path,
                        throttled_for_s = blocked,
                        "wrong client key"
                    );
                }
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid or missing API access key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                )
                .with_code("invalid_api_key"));
            }
        }
    }
    if req.method() == Method::POST
        && JSON_ROUTES.contains(&path)
        && !is_json_content_type(req.headers())
    {
        inbound.rejected.record(rejected::UNSUPPORTED_MEDIA_TYPE);
        let got = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| format!("got {:?}", String::from_utf8_lossy(v.as_bytes())))
            .unwrap_or_else(|| "none was sent".into());
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json ({got})"),
        )
        .with_code("unsupported_media_type"));
    }
    Ok(auth)
}

/// Request id, CORS, throttling and client authentication on `/v1/*`, the content-type rule,
/// access log and request metrics.
/// The console's content security policy (contract §11): nothing but this origin, no inline
/// script, no plugins, no framing.
pub const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'",
);

/// Headers of every response outside `/v1/*` (the console, the admin API, health, metrics):
/// the CSP and `nosniff`; admin and `/factory/*` answers are never cached unless their handler
/// said otherwise.
fn console_headers(path: &str, h: &mut axum::http::HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, CSP);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let private = path == "/admin"
        || path.starts_with("/admin/")
        || path == "/factory"
        || path.starts_with("/factory/");
    if private && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

pub(super) async fn edge(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::now_v7().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let is_v1 = path.starts_with("/v1/");
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let cors = if is_v1 { cors_policy(&app) } else { Cors::Off };

    let mut resp = if is_v1 && method == Method::OPTIONS {
        // CORS preflight: answered without authentication.
        preflight(cors, req.headers())
    } else {
        match if is_v1 {
            check_v1(&app, &req, &path)
        } else {
            Ok(None)
        } {
            Err(e) => e.render(envelope_for(&path), &request_id),
            Ok(auth) => {
                if let Some(auth) = auth {
                    req.extensions_mut().insert(auth);
                }
                req.extensions_mut().insert(RequestId(request_id.clone()));
                next.run(req).await
            }
        }
    };

    if is_v1 && method != Method::OPTIONS {
        apply_cors(cors, origin.as_ref(), resp.headers_mut());
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if !is_v1 {
        console_headers(&path, resp.headers_mut());
    }
    let status = resp.status().as_u16();
    let info = resp.extensions().get::<ProxyInfo>().cloned();
    let model = info
        .as_ref()
        .map(|i| i.model.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "-".into());
    metrics::counter!(m::REQUESTS, "route" => route, "model" => model.clone(), "status" => status.to_string()).increment(1);
    tracing::debug!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status,
        model = %model,
        credential = info.as_ref().map(|i| i.credential.as_str()).unwrap_or("-"),
        ms = started.elapsed().as_millis() as u64,
        "http"
    );
    resp
}
