//! The Factory client: lanes of pooled keep-alive HTTP clients per egress route (direct, or
//! each configured proxy in rotation; see [`client`] for the lanes), Factory's request headers,
//! and the WorkOS refresh call.
//!
//! Timeouts (contract §3 `timing`): a connect timeout and an idle-read timeout (the longest gap
//! between two reads). There is deliberately no whole-request timeout: a stream may run for as
//! long as the upstream keeps sending. Dropping a response (the client went away) closes the
//! upstream stream, which cancels the upstream request.
//!
//! Failures are classified ([`FailureKind`]) by whether anything of the request can have
//! reached Factory: only a request that certainly did not (connect, TLS, refused stream) may be
//! replayed on another key (contract §10).

pub mod balance;
pub mod client;
mod direct;
pub mod headers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use bytes::Bytes;
use serde::Deserialize;

use crate::config::{ProxySettings, Settings};
use crate::secret::Secret;

pub use crate::secret::mask_userinfo;
pub use client::{FailureKind, UpstreamResponse};
use client::{LaneClient, Lanes, MakeClient, error_chain};

/// The fixed WorkOS client id of Factory's CLI.
pub const WORKOS_CLIENT_ID: &str = "client_01HNM792M5G5G1A2THWPXKFMXB";

/// A transport failure talking to Factory or WorkOS. Its `Display` names the kind of failure
/// only (never a host, URL or secret); [`UpstreamError::detail`] has the cause chain for logs.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Any transport failure but a timeout.
    #[error("{}", failure_message(*kind))]
    Transport { kind: FailureKind, detail: String },
    /// No byte within the idle-read timeout ([`FailureKind::Timeout`]).
    #[error("{}", failure_message(FailureKind::Timeout))]
    Timeout,
    #[error("upstream request failed: {0}")]
    Other(String),
    #[error("invalid client setup: {0}")]
    Setup(String),
}

fn failure_message(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Connect => "could not connect to the upstream (connect)",
        FailureKind::Tls => "could not connect to the upstream (tls)",
        FailureKind::Refused => "the upstream refused the request before processing it (refused)",
        FailureKind::Timeout => "the upstream did not answer within the timeout (timeout)",
        FailureKind::Reset => "the upstream connection failed (reset)",
    }
}

impl UpstreamError {
    /// Classifies a reqwest failure.
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        // `without_url` keeps URLs (and any userinfo) out of the detail.
        let e = e.without_url();
        match client::classify(&e) {
            FailureKind::Timeout => UpstreamError::Timeout,
            kind => UpstreamError::Transport {
                kind,
                detail: error_chain(&e),
            },
        }
    }

    /// Classifies a failure of the direct client (before the response head).
    fn from_hyper(e: &hyper_util::client::legacy::Error) -> Self {
        Self::classified(e, e.is_connect())
    }

    /// Classifies a failure reading a response body.
    fn from_body(e: &hyper::Error) -> Self {
        Self::classified(e, false)
    }

    fn classified(e: &(dyn std::error::Error + 'static), is_connect: bool) -> Self {
        match client::classify_chain(e, is_connect, false) {
            FailureKind::Timeout => UpstreamError::Timeout,
            kind => UpstreamError::Transport {
                kind,
                detail: error_chain(e),
            },
        }
    }

    /// The kind of transport failure (`None` for other failures).
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            UpstreamError::Transport { kind, .. } => Some(*kind),
            UpstreamError::Timeout => Some(FailureKind::Timeout),
            UpstreamError::Other(_) | UpstreamError::Setup(_) => None,
        }
    }

    /// Whether the request certainly never reached the upstream (safe to replay anywhere).
    pub fn nothing_sent(&self) -> bool {
        self.kind().is_some_and(FailureKind::nothing_sent)
    }

    pub fn is_timeout(&self) -> bool {
        self.kind() == Some(FailureKind::Timeout)
    }

    /// The cause chain, for logs (URL userinfo masked).
    pub fn detail(&self) -> &str {
        match self {
            UpstreamError::Transport { detail, .. } => detail,
            UpstreamError::Timeout => "timeout",
            UpstreamError::Other(d) | UpstreamError::Setup(d) => d,
        }
    }
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
    /// One set of lanes per egress route.
    routes: Vec<Lanes>,
    next: AtomicUsize,
    workos_url: String,
    /// Factory's LLM endpoints, parsed once (a request clones one instead of parsing its URL).
    parsed: Vec<(String, reqwest::Url, Uri)>,
}

impl Upstream {
    pub fn new(settings: &Settings) -> Result<Self, UpstreamError> {
        let t = settings.timing;
        let connect = Duration::from_secs(t.connect_timeout_s);
        let idle = Duration::from_secs(t.idle_read_timeout_s);
        let prior_knowledge = settings.upstream_http2_prior_knowledge;
        let tls = client::tls_config(prior_knowledge)?;
        let direct_tls = tls.clone();
        let direct = move || direct::Client::new(connect, idle, prior_knowledge, &direct_tls);
        let routes = build_routes(
            &settings.proxies,
            move || client::base_builder(connect, idle, prior_knowledge, &tls),
            direct,
        )?;
        let e = &settings.endpoints;
        let parsed = [&e.anthropic, &e.count_tokens, &e.openai, &e.common]
            .into_iter()
            .filter_map(|u| {
                let p = reqwest::Url::parse(u).ok()?;
                let uri = Uri::try_from(p.as_str()).ok()?;
                Some((u.clone(), p, uri))
            })
            .collect();
        Ok(Upstream {
            routes,
            next: AtomicUsize::new(0),
            workos_url: format!("{}/user_management/authenticate", settings.workos_base_url),
            parsed,
        })
    }

    /// `url` as a parsed URL: a clone of a pre-parsed endpoint (its query set) when it is one,
    /// else parsed now.
    fn url(&self, url: &str) -> Result<reqwest::Url, UpstreamError> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        if let Some((_, p, _)) = self.parsed.iter().find(|(s, _, _)| s == base) {
            let mut u = p.clone();
            if query.is_some() {
                u.set_query(query);
            }
            return Ok(u);
        }
        reqwest::Url::parse(url)
            .map_err(|e| UpstreamError::Setup(format!("invalid upstream URL: {e}")))
    }

    /// `url` for the direct client: a clone of a pre-parsed endpoint when it is one without a
    /// query, else the normalised [`Self::url`] re-read as a URI.
    fn uri(&self, url: &str) -> Result<Uri, UpstreamError> {
        if let Some((_, _, u)) = self.parsed.iter().find(|(s, _, _)| s == url) {
            return Ok(u.clone());
        }
        let u = self.url(url)?;
        Uri::try_from(u.as_str())
            .map_err(|e| UpstreamError::Setup(format!("invalid upstream URL: {e}")))
    }

    /// The next egress route in rotation (one per configured proxy; a single one otherwise).
    fn route(&self) -> &Lanes {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.routes.len().max(1);
        &self.routes[i]
    }

    /// A client for short side calls (balance, WorkOS refresh), next route in rotation.
    fn client(&self) -> reqwest::Client {
        self.route().side_client()
    }

    /// Lanes open over every route, and requests in flight over them.
    pub fn lanes(&self) -> (usize, usize) {
        self.routes
            .iter()
            .fold((0, 0), |(l, f), r| (l + r.len(), f + r.in_flight()))
    }

    /// Sends an LLM call and returns as soon as the response headers arrived. A connection that
    /// could not even be opened (the request never left) is retried through the next egress
    /// route, so one dead proxy in the rotation does not fail requests. The idle-read timeout
    /// starts here, after the lane place was taken (which never waits).
    pub async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let routes = self.routes.len().max(1);
        let UpstreamRequest { url, headers, body } = req;
        let mut headers = Some(headers);
        let mut last = None;
        for attempt in 1..=routes {
            let place = self.route().acquire()?;
            // The last attempt takes the headers; earlier ones send a copy.
            let h = if attempt == routes {
                headers.take().unwrap_or_default()
            } else {
                headers.clone().unwrap_or_default()
            };
            let result = match place.client() {
                LaneClient::Direct(c) => match c.post(self.uri(&url)?, h, body.clone()).await {
                    Ok(r) => Ok(UpstreamResponse::direct(r, place)),
                    Err(e) => Err(e),
                },
                LaneClient::Proxied(c) => {
                    match c
                        .post(self.url(&url)?)
                        .headers(h)
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) => Ok(UpstreamResponse::proxied(r, place)),
                        Err(e) => Err(UpstreamError::from_reqwest(e)),
                    }
                }
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(e) if e.nothing_sent() && routes > 1 => {
                    tracing::warn!(error = %e, detail = %e.detail(), "egress route failed before the request left; trying the next one");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(UpstreamError::Setup("no egress route".into())))
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

/// One set of lanes per egress route: a direct route (no proxy configured) sends through
/// [`direct::Client`]; proxied routes through reqwest. Side calls always use reqwest.
fn build_routes(
    proxies: &ProxySettings,
    base: impl Fn() -> reqwest::ClientBuilder + Clone + Send + Sync + 'static,
    direct: impl Fn() -> direct::Client + Send + Sync + 'static,
) -> Result<Vec<Lanes>, UpstreamError> {
    let setup = |e: reqwest::Error| UpstreamError::Setup(error_chain(&e));
    let no_proxy = proxies.no_proxy.clone();
    let mut makers: Vec<MakeClient> = Vec::new();
    if proxies.rotation.is_empty() {
        // Checked once here, so a bad URL fails at start-up rather than in a lane.
        for url in [&proxies.https_proxy, &proxies.http_proxy]
            .into_iter()
            .flatten()
        {
            reqwest::Proxy::all(url).map_err(setup)?;
        }
        if proxies.https_proxy.is_none() && proxies.http_proxy.is_none() {
            let side = base().build().map_err(setup)?;
            let make: MakeClient = Box::new(move || Ok(LaneClient::Direct(Box::new(direct()))));
            return Ok(vec![Lanes::new(make, side)?]);
        }
        let (https, http) = (proxies.https_proxy.clone(), proxies.http_proxy.clone());
        let base = base.clone();
        makers.push(Box::new(move || {
            let np = || no_proxy.as_deref().and_then(reqwest::NoProxy::from_string);
            let mut b = base();
            if let Some(url) = &https {
                b = b.proxy(reqwest::Proxy::https(url).map_err(setup)?.no_proxy(np()));
            }
            if let Some(url) = &http {
                b = b.proxy(reqwest::Proxy::http(url).map_err(setup)?.no_proxy(np()));
            }
            Ok(LaneClient::Proxied(b.build().map_err(setup)?))
        }));
    } else {
        for url in &proxies.rotation {
            reqwest::Proxy::all(url).map_err(setup)?;
            let (url, base, no_proxy) = (url.clone(), base.clone(), no_proxy.clone());
            makers.push(Box::new(move || {
                let np = no_proxy.as_deref().and_then(reqwest::NoProxy::from_string);
                let proxy = reqwest::Proxy::all(&url).map_err(setup)?.no_proxy(np);
                Ok(LaneClient::Proxied(
                    base().proxy(proxy).build().map_err(setup)?,
                ))
            }));
        }
    }
    makers
        .into_iter()
        .map(|m| {
            let side = match m()? {
                LaneClient::Proxied(c) => c,
                LaneClient::Direct(_) => base().build().map_err(setup)?,
            };
            Lanes::new(m, side)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn endpoint_urls_are_cloned_with_their_query_and_others_parsed() {
        let env = Env::from_pairs([("FACTORY_BASE_URL", "http://127.0.0.1:9/base/")]);
        let settings = Settings::from_sources(&env, None).unwrap();
        let up = Upstream::new(&settings).unwrap();
        let messages = &settings.endpoints.anthropic;
        assert_eq!(up.url(messages).unwrap().as_str(), messages.as_str());
        assert_eq!(
            up.url(&format!("{messages}?beta=true")).unwrap().as_str(),
            format!("{messages}?beta=true")
        );
        // Exactly what parsing the whole string gives, escapes included.
        for q in ["a=1&b=two%20words", "x=%E4%BD%A0", "weird=a b"] {
            let whole = format!("{messages}?{q}");
            assert_eq!(
                up.url(&whole).unwrap(),
                reqwest::Url::parse(&whole).unwrap(),
                "{q}"
            );
        }
        assert_eq!(
            up.url("http://example.test/other?x=1").unwrap().as_str(),
            "http://example.test/other?x=1"
        );
        assert!(matches!(up.url("not a url"), Err(UpstreamError::Setup(_))));
    }
}
