//! HTTP surface: router, edge middleware (request id, CORS, client authentication, access log,
//! request metrics), operational endpoints, and serving with graceful shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::{App, AppError};
use crate::config::Settings;
use crate::error::{ApiError, Envelope};
use crate::proxy::{self, ProxyInfo, Route};
use crate::store::{DataDirLock, StoreError};
use crate::telemetry::metrics as m;

/// The request id of the current request (set by the edge middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Builds the router.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(banner))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .merge(crate::admin::router(app.clone()))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), edge))
        .with_state(app)
}

fn envelope_for(path: &str) -> Envelope {
    if path.starts_with("/v1/messages") {
        Envelope::Anthropic
    } else {
        Envelope::OpenAi
    }
}

const CORS_ALLOW_HEADERS: &str = "authorization, content-type, x-api-key, anthropic-version, anthropic-beta, x-session-id, x-assistant-message-id, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout, x-stainless-helper-method";

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-request-id, x-upstream-request-id, request-id, retry-after"),
    );
}

/// Checks `API_ACCESS_KEY` (Bearer or x-api-key, constant time).
fn client_authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(key) = &app.settings.api_access_key else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let x_api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    // Both candidates are compared so the time taken does not reveal which header was used.
    let a = bearer.is_some_and(|b| key.ct_eq(b));
    let b = x_api_key.is_some_and(|k| key.ct_eq(k));
    a | b
}

/// Request id, CORS, client authentication on `/v1/*`, access log and request metrics.
async fn edge(State(app): State<App>, mut req: Request, next: Next) -> Response {
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

    let mut resp = if is_v1 && method == Method::OPTIONS {
        // CORS preflight: answered without authentication.
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static(CORS_ALLOW_HEADERS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    } else if is_v1 && !client_authorized(&app, req.headers()) {
        record_rejected(&app, &method, &path, started);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid or missing API access key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
        )
        .with_code("invalid_api_key")
        .render(envelope_for(&path), &request_id)
    } else {
        req.extensions_mut().insert(RequestId(request_id.clone()));
        next.run(req).await
    };

    if is_v1 {
        cors(resp.headers_mut());
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
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

/// A request to an LLM route refused before the pipeline (bad client key) still gets its usage
/// record, with zero tokens.
fn record_rejected(app: &App, method: &Method, path: &str, started: Instant) {
    let route = match path {
        "/v1/chat/completions" => Route::ChatCompletions,
        "/v1/responses" => Route::Responses,
        "/v1/messages" => Route::Messages,
        _ => return,
    };
    if method != Method::POST {
        return;
    }
    let at = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let latency_ms = started.elapsed().as_millis() as u64;
    app.recorder.record(crate::store::records::UsageRecord {
        at,
        hour_start: 0,
        day_start: 0,
        credential: "-".into(),
        attempts: 0,
        client: "anonymous".into(),
        model: "-".into(),
        route: route.label().into(),
        upstream_format: "-".into(),
        status: 401,
        input_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        output_tokens: 0,
        reasoning_tokens: 0,
        estimated: false,
        complete: true,
        latency_ms,
        ttfb_ms: Some(latency_ms),
    });
}

fn request_id(req: &Request) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

async fn proxy_route(app: App, route: Route, req: Request) -> Response {
    let id = request_id(&req);
    let (parts, body) = req.into_parts();
    proxy::handle(
        app,
        route,
        id,
        parts.headers,
        parts.uri.query().map(str::to_string),
        body,
    )
    .await
}

async fn chat_completions(State(app): State<App>, req: Request) -> Response {
    proxy_route(app, Route::ChatCompletions, req).await
}

async fn responses(State(app): State<App>, req: Request) -> Response {
    proxy_route(app, Route::Responses, req).await
}

async fn messages(State(app): State<App>, req: Request) -> Response {
    proxy_route(app, Route::Messages, req).await
}

async fn count_tokens(State(app): State<App>, req: Request) -> Response {
    proxy_route(app, Route::CountTokens, req).await
}

fn model_json(app: &App, m: &crate::config::Model) -> serde_json::Value {
    let created = app
        .started_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "id": m.id,
        "object": "model",
        "created": created,
        "owned_by": m.kind.as_str(),
        "name": m.name,
        "permission": [],
        "root": m.id,
        "parent": null,
    })
}

async fn list_models(State(app): State<App>) -> Response {
    let data: Vec<_> = app
        .settings
        .models
        .iter()
        .map(|m| model_json(&app, m))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(State(app): State<App>, Path(id): Path<String>, req: Request) -> Response {
    match app.settings.find_model(&id) {
        Some(m) => axum::Json(model_json(&app, m)).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("model {id} not found"))
            .with_param("model")
            .with_code("model_not_found")
            .render(Envelope::OpenAi, &request_id(&req)),
    }
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(app): State<App>) -> Response {
    let mut reasons = Vec::new();
    if app.shutdown.is_cancelled() {
        reasons.push("shutting down".to_string());
    }
    if app.credentials.describe() == "refresh token"
        && let Some(r) = app.credentials.refresh_manager()
        && r.current().is_none()
        && let Some(e) = r.last_error()
    {
        reasons.push(format!(
            "no access token: the refresh token could not be exchanged ({e})"
        ));
    }
    if reasons.is_empty() {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "reasons": reasons})),
        )
            .into_response()
    }
}

async fn metrics_text(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(key) = &app.settings.admin_access_key {
        let given = headers
            .get("x-admin-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(str::trim);
        if !given.is_some_and(|g| key.ct_eq(g)) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"success": false, "error": {"code": "unauthorized", "message": "send the admin key as x-admin-key or Authorization: Bearer"}})),
            )
                .into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn banner() -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>droid2api {v}</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 46rem; margin: 3rem auto; line-height: 1.5">
<h1>droid2api {v}</h1>
<p>A gateway to Factory.ai models in the OpenAI Chat Completions, Anthropic Messages and OpenAI Responses formats.</p>
<ul>
<li><code>GET /v1/models</code>, <code>GET /v1/models/{{id}}</code></li>
<li><code>POST /v1/chat/completions</code></li>
<li><code>POST /v1/messages</code>, <code>POST /v1/messages/count_tokens</code></li>
<li><code>POST /v1/responses</code></li>
<li><code>GET /health</code>, <code>GET /ready</code>, <code>GET /metrics</code></li>
</ul>
</body></html>
"#,
        v = env!("CARGO_PKG_VERSION")
    ))
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {} {path}", req.method()),
    )
    .with_code("unknown_route")
    .render(envelope_for(&path), &request_id(&req))
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    pub app: App,
    pub addr: SocketAddr,
    served: tokio::task::JoinHandle<()>,
    _lock: DataDirLock,
}

/// Warnings worth saying at start-up.
pub fn startup_warnings(settings: &Settings, app: &App) -> Vec<String> {
    let mut w = settings.warnings.clone();
    if !settings.listens_on_loopback()
        && app.credentials.server_side_configured()
        && settings.api_access_key.is_none()
    {
        w.push(format!(
            "listening on {} with a server-side Factory credential and no API_ACCESS_KEY: anyone who can reach this port can spend your keys",
            settings.listen_addr()
        ));
    }
    if let Some(k) = &settings.admin_access_key
        && k.char_len() < 16
    {
        w.push("ADMIN_ACCESS_KEY is shorter than 16 characters: use a long random key".into());
    }
    if settings.redis_url.is_some() {
        w.push("REDIS_URL is set but shared Redis state is not supported yet: this instance uses its embedded store only".into());
    }
    w
}

impl Running {
    /// Locks the data folder, builds the app, binds and serves in the background.
    pub async fn start(settings: Settings) -> Result<Running, StartError> {
        let lock = DataDirLock::acquire(&settings.data_dir)?;
        let addr = settings.listen_addr();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let app = App::start(settings)?;
        for w in startup_warnings(&app.settings, &app) {
            tracing::warn!("{w}");
        }
        tracing::info!(
            addr = %local,
            credential = app.credentials.describe(),
            models = app.settings.models.len(),
            "droid2api {} listening",
            env!("CARGO_PKG_VERSION")
        );
        let router = router(app.clone());
        let shutdown = app.shutdown.clone();
        let served = tokio::spawn(async move {
            let result = axum::serve(listener, router.into_make_service())
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "server error");
            }
        });
        Ok(Running {
            app,
            addr: local,
            served,
            _lock: lock,
        })
    }

    /// Stops accepting, lets in-flight requests (streams included) finish within the grace
    /// period, stops background tasks, and returns. Returns false when the grace period ran out.
    pub async fn shutdown(self) -> bool {
        let grace = Duration::from_secs(self.app.settings.timing.shutdown_grace_s);
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: no new connections; waiting for in-flight requests"
        );
        self.app.shutdown.cancel();
        self.app.tasks.close();
        let mut served = self.served;
        let clean = match tokio::time::timeout(grace, &mut served).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!("grace period over: closing the remaining connections");
                served.abort();
                false
            }
        };
        // The last request is done: the usage queue can drain and stop.
        self.app.recorder.stop();
        self.app.credentials.settle_refresh().await; // a rotated WorkOS token must reach disk
        let _ = tokio::time::timeout(Duration::from_secs(5), self.app.tasks.wait()).await;
        self.app.close_store().await;
        tracing::info!("shutdown complete");
        clean
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> bool {
        signal.await;
        self.shutdown().await
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
