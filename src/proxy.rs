//! The request pipeline: body in → parse → resolve the model → translate → lease a credential →
//! upstream → bytes out. The only module that ties `translate`, `credentials`, `upstream` and
//! `usage` together.
//!
//! - `body`: reading and parsing the client's body;
//! - `plan`: model, translation and the prepared upstream request (no I/O);
//! - `identity`: the request's conversation identity (contract §14), for a sticky key;
//! - `dispatch`: lease → send → fail over (the replay rule of contract §10);
//! - `respond`: relay or translate the answer; `relay` (pass-through streams), `translated`
//!   (chat streams), `aggregated` (a non-streaming client's answer assembled from the
//!   upstream stream), `failure` (the error frames of a broken stream), `stream` (the
//!   per-request log record).
//!
//! **Hot-path invariants:** no disk access (the one exception is a WorkOS refresh, which is
//! single-flight and normally done in the background), no lock held across an await, and no
//! buffering of streams: upstream chunks are forwarded as they arrive while a tap reads the
//! usage alongside, without re-serialising. The one exception is a client that asked for a
//! whole answer from the Anthropic or Responses upstream: the upstream call streams and the
//! reply is assembled (`aggregated`, bounded at 64 MiB) before it is answered. Upstream error text is scrubbed of every secret
//! before it reaches the client ([`Scrub`]); successful traffic never goes through it.

mod aggregated;
mod body;
mod dispatch;
mod failure;
mod identity;
mod plan;
mod relay;
mod respond;
mod stream;
mod translated;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::app::App;
use crate::credentials::pool::Conversation;
use crate::credentials::{CascadeError, Scrubber};
use crate::error::{ApiError, Envelope};
use crate::inbound::clients::Client;
use crate::secret::Secret;
use crate::translate::TranslateError;
use crate::upstream::UpstreamError;

pub use body::parse_body;
pub use stream::RequestLog;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The scrubber and the credentials of one request: every piece of upstream error text that
/// reaches the client goes through it (error paths only).
#[derive(Clone)]
pub(crate) struct Scrub {
    scrubber: Arc<Scrubber>,
    /// The request's own credentials (the keys it used, the client's level-5 credential).
    extra: Vec<Secret>,
}

impl Scrub {
    fn bytes(&self, b: &[u8]) -> Option<Vec<u8>> {
        let extra: Vec<&Secret> = self.extra.iter().collect();
        self.scrubber.scrub_bytes(b, &extra)
    }

    fn text(&self, s: String) -> String {
        let extra: Vec<&Secret> = self.extra.iter().collect();
        self.scrubber.scrub_string(s, &extra)
    }
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
        let code = e.code;
        let mut api =
            ApiError::bad_request(format!("{}: {}", e.param, e.message)).with_param(e.param);
        api.code = code;
        api
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
        // The message names the kind of failure only (contract §9): no host, no URL.
        if e.is_timeout() {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()).with_code("upstream_timeout")
        } else if e.nothing_sent() {
            ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()).with_code("upstream_unreachable")
        } else {
            ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()).with_code("upstream_error")
        }
    }
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

/// An upstream 400 naming the encrypted content or a reasoning item of a request that sent
/// cached turns back: those turns are dropped, so the client's retry goes without them
/// (`translation.md` §4.4).
fn forget_refused_turns(
    app: &App,
    plan: &plan::Plan<'_>,
    status: StatusCode,
    body: &[u8],
    log: &RequestLog,
) {
    if plan.reinserted.is_empty() || status != StatusCode::BAD_REQUEST {
        return;
    }
    let message = crate::translate::error_message(body).to_ascii_lowercase();
    if message.contains("encrypted") || message.contains("reasoning") {
        app.reasoning.remove(&plan.reinserted);
        tracing::info!(request_id = %log.request_id, calls = plan.reinserted.len(), "the upstream refused re-sent reasoning items; dropped them from the cache");
    }
}

/// Handles one proxied request. Errors are rendered once, here, in the route's envelope.
/// `client` is the client key the edge authenticated the request by (contract §13), if any.
pub async fn handle(
    app: App,
    route: Route,
    request_id: String,
    headers: HeaderMap,
    query: Option<String>,
    body: Body,
    client: Option<Arc<Client>>,
) -> Response {
    let started = Instant::now();
    // A client key's daily quotas, before anything else: a refused request is not a usage
    // record (counted as rejected instead). count_tokens calls are not usage and do not count.
    if let Some(c) = &client
        && route != Route::CountTokens
        && let Err(r) = app
            .inbound
            .clients
            .admit(c, jiff::Timestamp::now().as_millisecond())
    {
        app.inbound.count_client_refusal(r.reason());
        return r.to_api_error().render(route.envelope(), &request_id);
    }
    let mut log = RequestLog::new(route, request_id.clone(), started);
    log.recorder = Some(Arc::clone(&app.recorder));
    if client.is_some() {
        log.client_key = client;
    } else if app.settings.api_access_key.is_some() {
        // The edge already checked it: every request that gets here presented the key.
        log.client = "api_access_key";
    }
    let mut scrub = Scrub {
        scrubber: Arc::clone(app.credentials.scrubber()),
        extra: client_credential(&headers)
            .map(Secret::new)
            .into_iter()
            .collect(),
    };
    match run(&app, route, &headers, query, body, &mut scrub, &mut log).await {
        Ok(resp) => resp,
        Err(mut e) => {
            // The one gateway message that carries upstream text (WorkOS's answer to a
            // refresh) is scrubbed; the others are the gateway's own words.
            if e.code == Some("refresh_failed") {
                e.message = scrub.text(std::mem::take(&mut e.message));
            }
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

/// A planned request: what the dispatch needs besides the request's headers.
struct Planned<'a> {
    plan: plan::Plan<'a>,
    /// The conversation it belongs to, for a sticky key (contract §14).
    conversation: Option<Conversation>,
}

/// Read → parse → plan, with no credential and no upstream: the model, the translation, the
/// conversation identity and the client key's model allow-list (contract §13: 403
/// `model_not_allowed`).
async fn prepare<'a>(
    app: &'a App,
    route: Route,
    headers: &HeaderMap,
    query: Option<String>,
    body: Body,
    log: &mut RequestLog,
) -> Result<Planned<'a>, ApiError> {
    let bytes = body::read_body(body, headers).await?;
    let max_values = app.settings.limits.max_json_values;
    let settings = &app.settings;
    // The conversation (contract §14): headers first, then the body as it is read.
    // count_tokens follows a conversation's pin but never creates or moves one.
    let pool = app.credentials.pool();
    let pins = route != Route::CountTokens;
    let from_headers = identity::from_headers(headers).and_then(|i| pool.conversation(i, pins));
    // Same-format routes first try the lazy path (no DOM of the conversation); it declines
    // whatever the general path might answer differently.
    let lazy = match route {
        Route::ChatCompletions => None,
        _ => body::parse_top_level(&bytes, max_values).and_then(|(top, requested, _)| {
            let plan =
                plan::plan_lazy(settings, route, headers, query.as_deref(), &top, &requested)?;
            let conversation = from_headers
                .or_else(|| identity::from_top(&top).and_then(|i| pool.conversation(&i, pins)));
            Some((plan, requested, conversation))
        }),
    };
    let (mut plan, requested, conversation) = match lazy {
        Some((plan, requested, conversation)) => {
            drop(bytes);
            if let Some(m) = settings.find_model(&requested) {
                log.model = m.id.clone();
            }
            (plan?, requested, conversation)
        }
        None => {
            let (value, requested, weight) = body::parse_body(&bytes, max_values)?;
            drop(bytes);
            if let Some(m) = settings.find_model(&requested) {
                log.model = m.id.clone();
            }
            let conversation = from_headers
                .or_else(|| identity::from_value(&value).and_then(|i| pool.conversation(&i, pins)));
            let now = Instant::now();
            let turns = |call_id: &str| app.reasoning.get(call_id, now);
            let plan = plan::plan(
                settings,
                route,
                headers,
                query.as_deref(),
                value,
                &requested,
                max_values.saturating_sub(weight),
                &turns,
            )?;
            (plan, requested, conversation)
        }
    };
    log.format = Some(plan.format);
    if plan.keep_turn {
        plan.turn_cache = Some(Arc::clone(&app.reasoning));
    }
    if let Some(c) = &log.client_key
        && !c.allows_model(&requested, &log.model)
    {
        app.inbound.count_client_refusal("model_not_allowed");
        let shown = if log.model.is_empty() || log.model == requested {
            requested.clone()
        } else {
            format!("{requested} ({})", log.model)
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this client key may not use the model {shown}"),
        )
        .with_param("model")
        .with_code("model_not_allowed"));
    }
    Ok(Planned { plan, conversation })
}

/// Plan → dispatch (lease, send, fail over) → respond.
async fn run(
    app: &App,
    route: Route,
    headers: &HeaderMap,
    query: Option<String>,
    body: Body,
    scrub: &mut Scrub,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let Planned { plan, conversation } = prepare(app, route, headers, query, body, log).await?;
    // A request authenticated by a client key never passes that key upstream (level 5 is only
    // for a gateway without client authentication).
    let client_cred = if log.client_key.is_some() {
        None
    } else {
        client_credential(headers)
    };
    let mut used = Vec::new();
    let answer = dispatch::dispatch(
        app,
        &plan,
        headers,
        client_cred,
        conversation,
        &mut used,
        log,
    )
    .await;
    scrub.extra.extend(used);
    let keepalive = std::time::Duration::from_secs(app.settings.timing.sse_keepalive_s);
    match answer? {
        dispatch::Answer::Ok(resp) => {
            log.upstream_status = Some(resp.status().as_u16());
            log.pool = Some(Arc::clone(app.credentials.pool()));
            respond::respond(route, plan, keepalive, resp, scrub.clone(), log).await
        }
        dispatch::Answer::Failed {
            status,
            headers,
            body,
        } => {
            log.upstream_status = Some(status.as_u16());
            forget_refused_turns(app, &plan, status, &body, log);
            Ok(respond::respond_error(route, status, &headers, body, log))
        }
    }
}
