//! The request pipeline: body in → parse → resolve the model → translate → lease a credential →
//! upstream → bytes out. The only module that ties `translate`, `credentials`, `upstream` and
//! `usage` together.
//!
//! **Hot-path invariants:** no disk access (the one exception is a WorkOS refresh, which is
//! single-flight and normally done in the background), no lock held across an await, and no
//! buffering of streams: upstream chunks are forwarded as they arrive while an [`SseTap`] reads the
//! usage alongside, without re-serialising.

mod body;
mod stream;
mod translated;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use crate::app::App;
use crate::config::{Model, ModelKind};
use crate::credentials::pool::{KeyPool, Outcome};
use crate::credentials::{CascadeError, CredentialLabel, Lease};
use crate::error::{ApiError, Envelope};
use crate::store::records::EventSource;
use crate::telemetry::metrics as m;
use crate::translate::{self, Context, Prepared, TranslateError};
use crate::upstream::{UpstreamError, UpstreamRequest, headers};
use crate::usage::{self, WireFormat};

pub use stream::RequestLog;

/// How the upstream answer is shaped for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// Same format both ways: bytes relayed.
    Passthrough,
    /// A Chat Completions client served from another format.
    Chat {
        from: ModelKind,
        /// The model name the client asked for (echoed in every chunk).
        client_model: String,
        include_usage: bool,
    },
}

fn include_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The client routes that reach Factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    Responses,
    Messages,
    CountTokens,
}

impl Route {
    pub fn envelope(self) -> Envelope {
        match self {
            Route::Messages | Route::CountTokens => Envelope::Anthropic,
            Route::ChatCompletions | Route::Responses => Envelope::OpenAi,
        }
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Responses => "/v1/responses",
            Route::Messages => "/v1/messages",
            Route::CountTokens => "/v1/messages/count_tokens",
        }
    }
}

/// What the access log and metrics learn about a proxied request (set as a response extension).
#[derive(Debug, Clone)]
pub struct ProxyInfo {
    pub model: String,
    pub credential: String,
    pub upstream_status: Option<u16>,
}

impl From<TranslateError> for ApiError {
    fn from(e: TranslateError) -> Self {
        ApiError::bad_request(format!("{}: {}", e.param, e.message)).with_param(e.param)
    }
}

impl From<CascadeError> for ApiError {
    fn from(e: CascadeError) -> Self {
        match &e {
            CascadeError::NoCredential => {
                ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).with_code("no_credential")
            }
            CascadeError::PoolCooling { retry_after_s } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
                    .with_code("pool_cooling")
                    .with_retry_after(*retry_after_s)
            }
            CascadeError::NoUsableKey => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .with_code("no_usable_key")
            }
            CascadeError::Refresh(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .with_code("refresh_failed")
            }
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string())
                .with_code("upstream_timeout"),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
                .with_code("upstream_unreachable"),
        }
    }
}

fn wrong_type(model: &Model, route: Route, expected: &str) -> ApiError {
    ApiError::bad_request(format!(
        "model {} is of type {}; {} serves {expected} models only",
        model.id,
        model.kind.as_str(),
        route.label()
    ))
    .with_param("model")
    .with_code("invalid_model_type")
}

/// The client's own credential (level 5).
fn client_credential(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Handles one proxied request. Errors are rendered once, here, in the route's envelope.
pub async fn handle(
    app: App,
    route: Route,
    request_id: String,
    headers: HeaderMap,
    query: Option<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut log = RequestLog::new(route, request_id.clone(), started);
    log.recorder = Some(Arc::clone(&app.recorder));
    if app.settings.api_access_key.is_some() {
        // The edge already checked it: every request that gets here presented the key.
        log.client = "api_access_key";
    }
    match run(&app, route, &headers, query, body, &mut log).await {
        Ok(resp) => resp,
        Err(e) => {
            let resp = e.render(route.envelope(), &request_id);
            log.finish_unstreamed(resp.status().as_u16());
            with_info(resp, &log)
        }
    }
}

fn with_info(mut resp: Response, log: &RequestLog) -> Response {
    resp.extensions_mut().insert(log.info());
    resp
}

async fn run(
    app: &App,
    route: Route,
    headers: &HeaderMap,
    query: Option<String>,
    body: Body,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let bytes = body::read_body(body, headers).await?;
    let (value, requested) = body::parse_body(&bytes)?;
    drop(bytes);
    let settings = &app.settings;
    let model = settings.find_model(&requested).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model {requested} not found; GET /v1/models lists the models"),
        )
        .with_param("model")
        .with_code("model_not_found")
    })?;
    log.model = model.id.clone();
    let ctx = Context {
        system_prompt: &settings.system_prompt,
        budgets: settings.reasoning_budgets,
    };
    let client_beta = headers.get("anthropic-beta").and_then(|v| v.to_str().ok());
    let mut shape = Shape::Passthrough;
    let (prepared, url, format) = match route {
        Route::Messages | Route::CountTokens => {
            if model.kind != ModelKind::Anthropic {
                return Err(wrong_type(model, route, "anthropic"));
            }
            let count = route == Route::CountTokens;
            let p =
                translate::passthrough::prepare_messages(value, model, &ctx, client_beta, count)?;
            let base = if count {
                &settings.endpoints.count_tokens
            } else {
                &settings.endpoints.anthropic
            };
            (p, with_query(base, query.as_deref()), WireFormat::Anthropic)
        }
        Route::Responses => {
            if model.kind != ModelKind::OpenAi {
                return Err(wrong_type(model, route, "openai"));
            }
            let p = translate::passthrough::prepare_responses(value, model, &ctx)?;
            (
                p,
                with_query(&settings.endpoints.openai, query.as_deref()),
                WireFormat::Responses,
            )
        }
        Route::ChatCompletions => match model.kind {
            ModelKind::Common => {
                let p = translate::passthrough::prepare_common_chat(value, model, &ctx)?;
                (p, settings.endpoints.common.clone(), WireFormat::Chat)
            }
            ModelKind::Anthropic => {
                shape = Shape::Chat {
                    from: ModelKind::Anthropic,
                    client_model: requested.clone(),
                    include_usage: include_usage(&value),
                };
                let p =
                    translate::anthropic_chat::chat_to_anthropic(value, model, &ctx, client_beta)?;
                (
                    p,
                    settings.endpoints.anthropic.clone(),
                    WireFormat::Anthropic,
                )
            }
            ModelKind::OpenAi => {
                shape = Shape::Chat {
                    from: ModelKind::OpenAi,
                    client_model: requested.clone(),
                    include_usage: include_usage(&value),
                };
                let p = translate::responses_chat::chat_to_responses(value, model, &ctx)?;
                (p, settings.endpoints.openai.clone(), WireFormat::Responses)
            }
        },
    };
    log.format = Some(format);
    let body = Bytes::from(serde_json::to_vec(&prepared.body).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the upstream request: {e}"),
        )
    })?);

    let client_cred = client_credential(headers);
    let pool = Arc::clone(app.credentials.pool());
    let max_attempts = pool.settings().max_attempts.max(1) as usize;
    let mut tried: Vec<String> = Vec::new();
    let mut refreshed = false;
    let mut refreshed_lease: Option<Lease> = None;
    let mut last_failure: Option<Answer> = None;
    let answer = loop {
        let lease = match refreshed_lease.take() {
            Some(l) => l,
            None => match app.credentials.lease(client_cred, &tried).await {
                Ok(l) => l,
                // Every key this request could use has been tried: the last upstream answer.
                Err(e) => match last_failure.take() {
                    Some(f) => break f,
                    None => return Err(e.into()),
                },
            },
        };
        log.credential = lease.label.as_str().to_string();
        let pool_key = match &lease.label {
            CredentialLabel::Pool(id) => Some(id.clone()),
            _ => None,
        };
        let guard = AttemptGuard::new(&pool, pool_key.clone());
        log.attempts += 1;
        let can_fail_over = pool_key.is_some() && tried.len() + 1 < max_attempts;
        let req = UpstreamRequest {
            url: url.clone(),
            headers: headers::build(headers::HeaderInput {
                kind: model.kind,
                model,
                client: headers,
                credential: &lease.secret,
                stream: prepared.stream,
                anthropic_beta: prepared.anthropic_beta.as_deref(),
                user_agent: &settings.user_agent,
            }),
            body: body.clone(),
        };
        let resp = match app.upstream.send(req).await {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!(m::UPSTREAM_ERRORS, "status" => "0").increment(1);
                tracing::warn!(request_id = %log.request_id, credential = %log.credential, error = %e, "upstream call failed");
                guard.report(if matches!(e, UpstreamError::Timeout) {
                    Outcome::Timeout
                } else {
                    Outcome::Connect
                });
                if can_fail_over && let Some(id) = pool_key {
                    metrics::counter!(m::POOL_FAILOVERS, "status" => "0").increment(1);
                    tried.push(id);
                    continue;
                }
                return Err(e.into());
            }
        };
        let status = resp.status();
        if status.is_success() {
            guard.report(Outcome::Success);
            log.pool_key = pool_key;
            break Answer::Ok(resp);
        }
        // An error answer: read it (small) to classify it and, maybe, relay it.
        let upstream_headers = resp.headers().clone();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let e = UpstreamError::from_reqwest(e);
                guard.report(Outcome::Connect);
                return Err(e.into());
            }
        };
        metrics::counter!(m::UPSTREAM_ERRORS, "status" => status.as_u16().to_string()).increment(1);
        if status == StatusCode::UNAUTHORIZED
            && !refreshed
            && let (CredentialLabel::Refresh, Some(generation), Some(r)) = (
                &lease.label,
                lease.generation,
                app.credentials.refresh_manager(),
            )
        {
            // A refresh-token lease is never a pool key: the guard has nothing to report.
            refreshed = true;
            if let Ok((secret, generation)) = r.after_unauthorized(generation).await {
                tracing::info!(request_id = %log.request_id, "upstream 401 with the access token: refreshed, retrying once");
                refreshed_lease = Some(Lease {
                    secret,
                    label: CredentialLabel::Refresh,
                    generation: Some(generation),
                });
                continue;
            }
        }
        let outcome = Outcome::from_status(
            status.as_u16(),
            &crate::translate::error_message(&body),
            retry_after(&upstream_headers),
        );
        guard.report(outcome.clone());
        tracing::info!(request_id = %log.request_id, credential = %log.credential, status = status.as_u16(), "upstream answered with an error");
        let failure = Answer::Failed {
            status,
            headers: upstream_headers,
            body,
        };
        if can_fail_over
            && outcome.retryable()
            && let Some(id) = pool_key
        {
            metrics::counter!(m::POOL_FAILOVERS, "status" => status.as_u16().to_string())
                .increment(1);
            tracing::info!(request_id = %log.request_id, key = %id, status = status.as_u16(), "failing over to another key");
            tried.push(id);
            last_failure = Some(failure);
            continue;
        }
        break failure;
    };
    let keepalive = std::time::Duration::from_secs(settings.timing.sse_keepalive_s);
    match answer {
        Answer::Ok(resp) => {
            log.upstream_status = Some(resp.status().as_u16());
            log.pool = Some(Arc::clone(&pool));
            respond(route, model, &prepared, format, shape, keepalive, resp, log).await
        }
        Answer::Failed {
            status,
            headers,
            body,
        } => {
            log.upstream_status = Some(status.as_u16());
            Ok(respond_error(route, status, &headers, body, log))
        }
    }
}

/// What the attempts ended with.
enum Answer {
    /// A 2xx response, body not yet read.
    Ok(reqwest::Response),
    /// An error answer, read whole.
    Failed {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// Reports an attempt's outcome to the pool exactly once; an attempt dropped before it was
/// reported (the client went away) is reported as cancelled, which releases a half-open probe.
struct AttemptGuard<'a> {
    pool: &'a KeyPool,
    key: Option<String>,
}

impl<'a> AttemptGuard<'a> {
    fn new(pool: &'a KeyPool, key: Option<String>) -> Self {
        AttemptGuard { pool, key }
    }

    fn report(mut self, outcome: Outcome) {
        if let Some(id) = self.key.take() {
            self.pool.report(&id, &outcome, EventSource::Traffic);
        }
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.key.take() {
            self.pool
                .report(&id, &Outcome::Cancelled, EventSource::Traffic);
        }
    }
}

/// `Retry-After` in seconds (the delta-seconds form).
fn retry_after(h: &HeaderMap) -> Option<u64> {
    h.get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// An upstream error answer relayed to the client: unchanged on pass-through routes, in the
/// OpenAI envelope on the chat route.
fn respond_error(
    route: Route,
    status: StatusCode,
    upstream_headers: &HeaderMap,
    body: Bytes,
    log: &mut RequestLog,
) -> Response {
    let mut out = if route == Route::ChatCompletions {
        openai_error_response(status.as_u16(), &body)
    } else {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        if let Some(ct) = upstream_headers.get(header::CONTENT_TYPE) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        r
    };
    relay_headers(upstream_headers, out.headers_mut());
    log.finish_unstreamed(out.status().as_u16());
    with_info(out, log)
}

fn with_query(base: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base.to_string(),
    }
}

/// Upstream response headers relayed to the client.
fn relay_headers(upstream: &HeaderMap, out: &mut HeaderMap) {
    for (name, value) in upstream {
        let n = name.as_str();
        if n == "x-request-id" {
            out.insert("x-upstream-request-id", value.clone());
        } else if n == "request-id"
            || n == "retry-after"
            || n == "x-should-retry"
            || n.starts_with("anthropic-ratelimit-")
            || n.starts_with("x-ratelimit-")
        {
            out.append(name.clone(), value.clone());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    route: Route,
    model: &Model,
    prepared: &Prepared,
    format: WireFormat,
    shape: Shape,
    keepalive: std::time::Duration,
    resp: reqwest::Response,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let status = resp.status();
    let upstream_headers = resp.headers().clone();
    let content_type = upstream_headers.get(header::CONTENT_TYPE).cloned();

    if let Shape::Chat {
        from,
        client_model,
        include_usage,
    } = shape
    {
        return respond_chat(
            model,
            prepared.stream,
            from,
            client_model,
            include_usage,
            keepalive,
            resp,
            &upstream_headers,
            log,
        )
        .await;
    }

    if prepared.stream {
        let mut out = Response::new(Body::from_stream(stream::relay(
            resp,
            format,
            prepared.drop_usage_chunk,
            log.take(),
        )));
        *out.status_mut() = status;
        let h = out.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        relay_headers(&upstream_headers, h);
        let info = ProxyInfo {
            model: model.id.clone(),
            credential: log.credential.clone(),
            upstream_status: Some(status.as_u16()),
        };
        out.extensions_mut().insert(info);
        return Ok(out);
    }

    let body = resp.bytes().await.map_err(UpstreamError::from_reqwest)?;
    if route != Route::CountTokens
        && let Ok(v) = serde_json::from_slice::<Value>(&body)
        && let Some(u) = usage::from_json(format, &v)
    {
        stream::count_tokens_metric(&model.id, &u);
        log.usage = Some(u);
    }
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    relay_headers(&upstream_headers, out.headers_mut());
    log.finish_unstreamed(status.as_u16());
    Ok(with_info(out, log))
}

/// An upstream error translated into the OpenAI envelope (the chat route's answer).
fn openai_error_response(status: u16, body: &[u8]) -> Response {
    let e = translate::upstream_error_to_openai(status, body);
    let mut r = Response::new(Body::from(serde_json::to_vec(&e.body).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if e.no_retry {
        r.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    r
}

/// A successful upstream answer turned into Chat Completions.
#[allow(clippy::too_many_arguments)]
async fn respond_chat(
    model: &Model,
    stream: bool,
    from: ModelKind,
    client_model: String,
    include_usage: bool,
    keepalive: std::time::Duration,
    resp: reqwest::Response,
    upstream_headers: &HeaderMap,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    use translate::chat::ChatChunks;
    use translated::{ChatTranslator, Primed, Translated};

    if stream {
        let chunks = ChatChunks {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: unix_now(),
            model: client_model,
            include_usage,
        };
        let translator = match from {
            ModelKind::Anthropic => ChatTranslator::Anthropic(Box::new(
                translate::anthropic_chat::AnthropicToChat::new(chunks),
            )),
            _ => ChatTranslator::Responses(Box::new(
                translate::responses_chat::ResponsesToChat::new(chunks),
            )),
        };
        let info = log.info();
        return Ok(
            match Translated::new(resp, translator, log.take(), keepalive)
                .prime()
                .await
            {
                Primed::Streaming(first, t) => {
                    let mut out = Response::new(Body::from_stream(t.into_stream(first)));
                    let h = out.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
                    relay_headers(upstream_headers, h);
                    out.extensions_mut().insert(info);
                    out
                }
                Primed::Failed(f) => {
                    tracing::info!(request_id = %log.request_id, status = f.status, "upstream failed before the first event; answering with an error");
                    let mut out = openai_error_response(f.status, &f.body);
                    relay_headers(upstream_headers, out.headers_mut());
                    out.extensions_mut().insert(info);
                    out
                }
            },
        );
    }

    let body = resp.bytes().await.map_err(UpstreamError::from_reqwest)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the upstream answered with invalid JSON: {e}"),
        )
        .with_code("bad_upstream_response")
    })?;
    let upstream_format = if from == ModelKind::Anthropic {
        WireFormat::Anthropic
    } else {
        WireFormat::Responses
    };
    if let Some(u) = usage::from_json(upstream_format, &v) {
        stream::count_tokens_metric(&model.id, &u);
        log.usage = Some(u);
    }
    let translated = match from {
        ModelKind::Anthropic => Ok(translate::anthropic_chat::anthropic_to_chat_response(
            &v,
            &client_model,
            unix_now(),
        )),
        _ => {
            let created = v
                .get("created_at")
                .and_then(Value::as_f64)
                .map(|c| c as u64)
                .unwrap_or_else(unix_now);
            translate::responses_chat::responses_to_chat_response(&v, &client_model, created)
        }
    };
    let mut out = match translated {
        Ok(chat) => {
            let mut r = Response::new(Body::from(serde_json::to_vec(&chat).unwrap_or_default()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(f) => openai_error_response(f.status, &f.body),
    };
    relay_headers(upstream_headers, out.headers_mut());
    log.finish_unstreamed(out.status().as_u16());
    Ok(with_info(out, log))
}
