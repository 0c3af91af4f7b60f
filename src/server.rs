//! HTTP surface: the router, the edge middleware (`edge.rs`: request id, CORS, throttling,
//! client authentication, content type, access log, request metrics), the operational endpoints,
//! and serving (`serve.rs`: our accept loop with the inbound limits of contract §9 and graceful
//! shutdown).

mod edge;
mod serve;

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::config::{MAX_BODY_BYTES, Settings};
use crate::error::{ApiError, Envelope};
use crate::inbound::body::read_limited;
use crate::proxy::{self, Route};
use crate::store::{DataDirLock, StoreError};

pub use edge::{JSON_ROUTES, client_auth_on, envelope_for};

/// How often rejected counts are handed to the store's writer.
const REJECTED_FLUSH_PERIOD: Duration = Duration::from_secs(2);
/// How long start-up waits for the shared state before serving from the local copy.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(3);
/// How often the failed-key tables drop addresses whose failures all expired.
const THROTTLE_SWEEP_PERIOD: Duration = Duration::from_secs(30);

/// The request id of the current request (set by the edge middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Builds the router.
pub fn router(app: App) -> Router {
    Router::new()
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
        .merge(crate::ui::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), edge::edge))
        .with_state(app)
}

fn request_id(req: &Request) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// A proxied route. The body is read here, before the pipeline: under the 32 MiB cap, within
/// `timing.body_read_timeout_s`, and reserved against `limits.max_inflight_body_mb` until the
/// pipeline drops the bytes. A body refused here (413, 408, 503 `overloaded`, 400 for a body cut
/// short) is a rejected request, not a usage record.
async fn proxy_route(app: App, route: Route, req: Request) -> Response {
    let id = request_id(&req);
    let (parts, body) = req.into_parts();
    let client = parts
        .extensions
        .get::<crate::inbound::clients::ClientAuth>()
        .map(|a| std::sync::Arc::clone(&a.0));
    let bytes = match read_limited(body, &parts.headers, &app.inbound.bodies, MAX_BODY_BYTES).await
    {
        Ok(b) => b,
        Err(e) => {
            app.inbound.rejected.record(e.reason());
            if matches!(e, crate::inbound::body::ReadError::Overloaded) {
                tracing::warn!(
                    route = route.label(),
                    in_flight_bytes = app.inbound.bodies.in_use(),
                    "request refused: the in-flight body budget is spent"
                );
            }
            return ApiError::from(e).render(route.envelope(), &id);
        }
    };
    proxy::handle(
        app,
        route,
        id,
        parts.headers,
        parts.uri.query().map(str::to_string),
        Body::from(bytes),
        client,
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
    let body = app.models_list.get_or_init(|| {
        let data: Vec<_> = app
            .settings
            .models
            .iter()
            .map(|m| model_json(&app, m))
            .collect();
        bytes::Bytes::from(json!({"object": "list", "data": data}).to_string())
    });
    (
        [(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body.clone(),
    )
        .into_response()
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

/// `/ready`: 200, or 503 with reason codes (never upstream error text): `shutting_down`;
/// `no_access_token` when the refresh token serves and no access token could be obtained. With
/// `REDIS_URL`, `"redis": "up"` or `"degraded"` (still 200: traffic goes on from the last known
/// state).
async fn ready(State(app): State<App>) -> Response {
    let mut reasons: Vec<&'static str> = Vec::new();
    if app.shutdown.is_cancelled() {
        reasons.push("shutting_down");
    }
    if app.credentials.describe() == "refresh token"
        && let Some(r) = app.credentials.refresh_manager()
        && r.current().is_none()
        && r.last_error().is_some()
    {
        reasons.push("no_access_token");
    }
    let mut body = if reasons.is_empty() {
        json!({"status": "ready"})
    } else {
        json!({"status": "not_ready", "reasons": reasons})
    };
    // Several instances: a Redis outage degrades sharing, not serving (contract §12).
    if let Some(shared) = &app.shared {
        body["redis"] = json!(if shared.is_up() { "up" } else { "degraded" });
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `/metrics`: open when no admin key is set; with a usable one it needs it (as `x-admin-key`
/// or `Authorization: Bearer`, throttled like the admin API); with a weak one it stays closed
/// (503 `admin_disabled`).
async fn metrics_text(State(app): State<App>, req: Request) -> Response {
    let settings = &app.settings;
    if (settings.admin_access_key.is_some() || settings.admin_key_disabled.is_some())
        && let Err(e) =
            crate::admin::admin_gate(&app, req.method(), req.headers(), req.extensions(), true)
    {
        return e.into_response();
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
    /// Cancelled when the grace period is over: the remaining connections are dropped.
    force: CancellationToken,
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
    if settings.limits.max_inflight_body_bytes() < MAX_BODY_BYTES as u64 {
        w.push(format!(
            "limits.max_inflight_body_mb ({}) is below the {} MiB body cap: larger bodies are always refused with 503",
            settings.limits.max_inflight_body_mb,
            MAX_BODY_BYTES / (1024 * 1024)
        ));
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
        // Today's client-key counters from the usage rollups, so that a restart does not reset
        // a daily quota (contract §13).
        if let Err(e) = app
            .inbound
            .clients
            .seed(&app.store, jiff::Timestamp::now().as_millisecond())
            .await
        {
            tracing::warn!(error = %e, "could not read today's client-key usage: daily quotas start from zero");
        }
        if let Some(shared) = &app.shared {
            // Start with the fleet's keys when Redis answers; without it, from the local copy.
            if shared.first_sync(FIRST_SYNC_WAIT).await {
                tracing::info!(redis = %shared.masked_url(), instance = shared.instance(), "sharing pool state through Redis");
            } else {
                tracing::warn!(redis = %shared.masked_url(), instance = shared.instance(), "Redis did not answer at start-up: serving from this instance's data folder until it does");
            }
        }
        if let Some(reason) = &app.settings.admin_key_disabled {
            tracing::error!("{reason}");
        }
        for w in startup_warnings(&app.settings, &app) {
            tracing::warn!("{w}");
        }
        for n in &app.settings.notes {
            tracing::info!("{n}");
        }
        tracing::info!(
            addr = %local,
            credential = app.credentials.describe(),
            models = app.settings.models.len(),
            "droid2api {} listening",
            env!("CARGO_PKG_VERSION")
        );
        spawn_inbound_upkeep(&app);
        let force = CancellationToken::new();
        let served = tokio::spawn(serve::serve(
            listener,
            router(app.clone()),
            serve::ServeConfig::from_settings(&app.settings),
            app.shutdown.clone(),
            force.clone(),
        ));
        Ok(Running {
            app,
            addr: local,
            served,
            force,
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
                self.force.cancel();
                if tokio::time::timeout(Duration::from_secs(5), &mut served)
                    .await
                    .is_err()
                {
                    served.abort();
                }
                false
            }
        };
        self.app.credentials.settle_refresh().await; // a rotated WorkOS token must reach disk
        let _ = tokio::time::timeout(Duration::from_secs(5), self.app.tasks.wait()).await;
        self.app.inbound.rejected.flush(&self.app.store);
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

/// Hands rejected counts to the store every few seconds and sweeps expired addresses from the
/// failed-key tables, on the app's task tracker until shutdown.
fn spawn_inbound_upkeep(app: &App) {
    let (inbound, store, stop) = (
        std::sync::Arc::clone(&app.inbound),
        app.store.clone(),
        app.shutdown.clone(),
    );
    app.tasks.spawn(async move {
        let mut flush = tokio::time::interval(REJECTED_FLUSH_PERIOD);
        let mut sweep = tokio::time::interval(THROTTLE_SWEEP_PERIOD);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = flush.tick() => inbound.rejected.flush(&store),
                _ = sweep.tick() => {
                    let now = std::time::Instant::now();
                    inbound.admin_failures.sweep(now);
                    inbound.client_failures.sweep(now);
                }
            }
        }
        inbound.rejected.flush(&store);
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;
    use hyper::service::Service as _;

    async fn get(app: &App, path: &str) -> (StatusCode, serde_json::Value) {
        let svc = hyper_util::service::TowerToHyperService::new(router(app.clone()));
        let resp = svc
            .call(HttpRequest::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn ready_turns_503_with_a_reason_code_when_shutting_down() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::config::Env::from_pairs([
            ("DATA_DIR", dir.path().display().to_string()),
            ("HOME", dir.path().display().to_string()),
        ]);
        let app = App::start(Settings::from_sources(&env, None).unwrap()).unwrap();
        assert_eq!(
            get(&app, "/ready").await,
            (StatusCode::OK, json!({"status": "ready"}))
        );
        app.shutdown.cancel();
        assert_eq!(
            get(&app, "/ready").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not_ready", "reasons": ["shutting_down"]})
            )
        );
        app.tasks.close();
        app.tasks.wait().await;
        app.close_store().await;
    }

    #[test]
    fn a_body_budget_below_the_body_cap_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::config::Env::from_pairs([("DATA_DIR", dir.path().display().to_string())]);
        let file = crate::config::parse_value(&json!({"limits": {"max_inflight_body_mb": 8}}));
        let settings = Settings::from_sources(&env, Some(file)).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let app = rt.block_on(async { App::start(settings.clone()).unwrap() });
        let w = startup_warnings(&settings, &app).join("\n");
        assert!(
            w.contains("limits.max_inflight_body_mb (8) is below the 32 MiB body cap"),
            "{w}"
        );
        rt.block_on(async {
            app.shutdown.cancel();
            app.tasks.close();
            app.tasks.wait().await;
            app.close_store().await;
        });
    }
}
