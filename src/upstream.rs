//! The Factory client: one pooled keep-alive HTTP client per egress route (direct, or each
//! configured proxy in rotation), Factory's request headers, and the WorkOS refresh call.
//!
//! Timeouts (contract §3 `timing`): a connect timeout and an idle-read timeout (the longest gap
//! between two reads). There is deliberately no whole-request timeout: a stream may run for as
//! long as the upstream keeps sending. Dropping a response (the client went away) closes the
//! upstream connection, which cancels the upstream request.

pub mod balance;
pub mod headers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;

use crate::config::{ProxySettings, Settings};
use crate::secret::Secret;

/// The fixed WorkOS client id of Factory's CLI.
pub const WORKOS_CLIENT_ID: &str = "client_01HNM792M5G5G1A2THWPXKFMXB";

/// A transport failure talking to Factory or WorkOS (never carries a secret).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream did not answer within the timeout")]
    Timeout,
    #[error("upstream request failed: {0}")]
    Other(String),
    #[error("invalid client setup: {0}")]
    Setup(String),
}

impl UpstreamError {
    /// Classifies a reqwest failure.
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        // `without_url` keeps query strings out of messages; our URLs carry no secret anyway.
        let e = e.without_url();
        if e.is_timeout() {
            UpstreamError::Timeout
        } else if e.is_connect() {
            UpstreamError::Connect(error_chain(&e))
        } else {
            UpstreamError::Other(error_chain(&e))
        }
    }

    /// Whether the request certainly never reached the upstream (safe to retry anywhere).
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A failed WorkOS refresh.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Transport(#[from] UpstreamError),
    #[error("WorkOS answered {status}: {reason}")]
    Rejected { status: u16, reason: String },
    #[error("WorkOS answered 200 without an access token")]
    Malformed,
}

/// Tokens minted by a successful refresh.
#[derive(Debug, Clone)]
pub struct WorkosTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
}

/// One upstream LLM call.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The Factory client.
#[derive(Debug)]
pub struct Upstream {
    clients: Vec<reqwest::Client>,
    next: AtomicUsize,
    workos_url: String,
}

impl Upstream {
    pub fn new(settings: &Settings) -> Result<Self, UpstreamError> {
        let t = settings.timing;
        let base = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(t.connect_timeout_s))
                .read_timeout(Duration::from_secs(t.idle_read_timeout_s))
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .redirect(reqwest::redirect::Policy::none())
                // The process environment is not consulted: proxies come from Settings only.
                .no_proxy()
        };
        let clients = build_clients(&settings.proxies, base)?;
        Ok(Upstream {
            clients,
            next: AtomicUsize::new(0),
            workos_url: format!("{}/user_management/authenticate", settings.workos_base_url),
        })
    }

    /// The next client in rotation (one per configured proxy; a single one otherwise).
    fn client(&self) -> &reqwest::Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len().max(1);
        &self.clients[i]
    }

    /// Sends an LLM call and returns as soon as the response headers arrived. A connection that
    /// could not even be opened (the request never left) is retried through the next egress
    /// route, so one dead proxy in the rotation does not fail requests.
    pub async fn send(&self, req: UpstreamRequest) -> Result<reqwest::Response, UpstreamError> {
        let routes = self.clients.len().max(1);
        let mut last = None;
        for _ in 0..routes {
            let result = self
                .client()
                .post(&req.url)
                .headers(req.headers.clone())
                .body(req.body.clone())
                .send()
                .await
                .map_err(UpstreamError::from_reqwest);
            match result {
                Err(e) if e.is_connect() && routes > 1 => {
                    tracing::warn!(error = %e, "egress route failed to connect; trying the next one");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or(UpstreamError::Other("no egress route".into())))
    }

    /// Exchanges a refresh token at WorkOS (`upstream-factory.md` §1.5): form-encoded, fixed
    /// client id. The answer carries a new (rotated) refresh token.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<WorkosTokens, RefreshError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", WORKOS_CLIENT_ID),
        ];
        let resp = self
            .client()
            .post(&self.workos_url)
            .header("accept", "application/json")
            .form(&form)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(UpstreamError::from_reqwest)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(UpstreamError::from_reqwest)?;
        if !status.is_success() {
            return Err(RefreshError::Rejected {
                status: status.as_u16(),
                reason: workos_reason(&body),
            });
        }
        #[derive(Deserialize)]
        struct Answer {
            access_token: Option<String>,
            refresh_token: Option<String>,
        }
        let a: Answer = serde_json::from_slice(&body).map_err(|_| RefreshError::Malformed)?;
        match (a.access_token, a.refresh_token) {
            (Some(at), rt) if !at.is_empty() => Ok(WorkosTokens {
                access_token: Secret::new(at),
                // Without rotation the old refresh token stays valid.
                refresh_token: rt
                    .filter(|r| !r.is_empty())
                    .map(Secret::new)
                    .unwrap_or_else(|| refresh_token.clone()),
            }),
            _ => Err(RefreshError::Malformed),
        }
    }
}

/// The `error`/`error_description` of a WorkOS error body (never echoing anything else).
fn workos_reason(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: Option<String>,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(E {
            error,
            error_description,
        }) => {
            let parts: Vec<String> = [error, error_description].into_iter().flatten().collect();
            if parts.is_empty() {
                "no error description".into()
            } else {
                parts.join(": ").chars().take(200).collect()
            }
        }
        Err(_) => "unreadable error body".into(),
    }
}

fn build_clients(
    proxies: &ProxySettings,
    base: impl Fn() -> reqwest::ClientBuilder,
) -> Result<Vec<reqwest::Client>, UpstreamError> {
    let setup = |e: reqwest::Error| UpstreamError::Setup(error_chain(&e));
    let no_proxy = || {
        proxies
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string)
    };
    let mut clients = Vec::new();
    if proxies.rotation.is_empty() {
        let mut b = base();
        if let Some(url) = &proxies.https_proxy {
            b = b.proxy(
                reqwest::Proxy::https(url)
                    .map_err(setup)?
                    .no_proxy(no_proxy()),
            );
        }
        if let Some(url) = &proxies.http_proxy {
            b = b.proxy(
                reqwest::Proxy::http(url)
                    .map_err(setup)?
                    .no_proxy(no_proxy()),
            );
        }
        clients.push(b.build().map_err(setup)?);
    } else {
        for url in &proxies.rotation {
            let p = reqwest::Proxy::all(url)
                .map_err(setup)?
                .no_proxy(no_proxy());
            clients.push(base().proxy(p).build().map_err(setup)?);
        }
    }
    Ok(clients)
}
