//! A mock Factory.ai + WorkOS upstream for droid2api's tests.
//!
//! It speaks the real wire formats — Anthropic Messages (+ `count_tokens`), the OpenAI
//! Responses API, OpenAI Chat Completions and WorkOS's refresh-token grant — checks what the
//! gateway sends the way the real services (and Factory's CLI conventions) do, records every
//! request, and writes every SSE body in awkward TCP pieces (cut inside UTF-8 characters, in the
//! middle of lines and of CRLFs, with small pauses between pieces).
//!
//! ```no_run
//! # async fn demo() {
//! use droid2api_mock::{MockUpstream, Reply, Rule};
//! let mock = MockUpstream::start().await; // 127.0.0.1:<random port>
//! // FACTORY_BASE_URL = WORKOS_BASE_URL = mock.url()
//! mock.add_refresh_token("rt-seed");
//! mock.push_rule(
//!     Rule::new(Reply::anthropic_error(429, "rate_limit_error", "slow down"))
//!         .bearer("fk-1")
//!         .once(),
//! );
//! // ... drive the gateway ...
//! assert_eq!(mock.llm_requests().len(), 2);
//! # }
//! ```
//!
//! For benchmarks, [`MockOptions::bench`] switches the LLM routes to [`bench`] mode: fixed
//! delay, paced streams written one event per chunk, no recording, per-key 429/402 by prefix.
//!
//! Modules: [`rules`] (scripted replies), [`sse`] (encoding and awkward splitting),
//! [`anthropic`] and [`openai`] (request rules, default replies, stream builders), `workos`
//! (refresh rotation), `checks` (header checks), `server` (dispatch), `control` (`/_mock/` API).

pub mod anthropic;
pub mod bench;
mod checks;
mod control;
mod h2c;
pub mod openai;
pub mod rules;
mod server;
pub mod sse;
mod state;
mod workos;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::task::JoinHandle;

pub use bench::BenchOptions;
pub use rules::{Reply, ReplyBody, Rule};
pub use sse::{
    DEFAULT_MAX_PIECE, SseEventSpec, encode_event, encode_events, split_awkwardly,
    split_awkwardly_with,
};
pub use state::{MockOptions, RecordedRequest};

/// The text of every default reply: mixes ASCII, CJK (3-byte UTF-8) and emoji (4-byte UTF-8).
pub const MOCK_TEXT: &str = "Hello from mock! 你好，世界 🌍🚀";
/// `output_tokens` of every default reply.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 12;
/// The WorkOS client id Factory's CLI uses; any other is rejected.
pub const WORKOS_CLIENT_ID: &str = "client_01HNM792M5G5G1A2THWPXKFMXB";

/// A generated default reply.
pub(crate) enum Generated {
    Json(Value),
    Stream(Vec<SseEventSpec>),
}

/// Deterministic token estimate: total bytes of the JSON of the listed top-level fields / 4,
/// at least 1.
pub(crate) fn estimate_tokens(body: &Value, fields: &[&str]) -> u64 {
    let bytes: usize = fields
        .iter()
        .filter_map(|f| body.get(*f))
        .filter(|v| !v.is_null())
        .map(|v| v.to_string().len())
        .sum();
    (bytes as u64 / 4).max(1)
}

struct Inner {
    shared: Arc<state::Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

/// A running mock upstream. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct MockUpstream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Starts a mock on `127.0.0.1:0` with default options.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        Self::start_with(MockOptions::default()).await
    }

    /// Starts a mock on `127.0.0.1:0` with the given options.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start_with(options: MockOptions) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        match Self::bind(addr, options).await {
            Ok(mock) => mock,
            Err(e) => panic!("droid2api-mock: cannot bind {addr}: {e}"),
        }
    }

    /// Starts a mock on `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, options: MockOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let h2_cap = options.http2_max_concurrent_streams;
        let shared = Arc::new(state::Shared::new(options));
        let app = server::router(shared.clone());
        let server = match h2_cap {
            Some(cap) => tokio::spawn(h2c::serve(listener, app, shared.clone(), cap)),
            None => {
                let counter = shared.clone();
                // No Nagle: every awkward piece must leave as its own segment.
                let listener = listener.tap_io(move |tcp| {
                    counter.connections.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("mock: set_nodelay failed: {e}");
                    }
                });
                let signal = shared.clone();
                tokio::spawn(async move {
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { signal.shutdown_signalled().await })
                        .await;
                    if let Err(e) = served {
                        tracing::error!("mock: server error: {e}");
                    }
                })
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                addr,
                server: Mutex::new(Some(server)),
            }),
        })
    }

    fn shared(&self) -> &state::Shared {
        &self.inner.shared
    }

    /// `http://127.0.0.1:PORT` — use as both `FACTORY_BASE_URL` and `WORKOS_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    // ---- recording -----------------------------------------------------------------------

    /// Every request received (LLM, WorkOS, balance, unknown paths), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared().lock().requests.clone()
    }

    /// Only the `/api/llm/...` requests.
    pub fn llm_requests(&self) -> Vec<RecordedRequest> {
        self.shared()
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_llm())
            .cloned()
            .collect()
    }

    /// Requests whose path-and-query contains `needle`.
    pub fn requests_to(&self, needle: &str) -> Vec<RecordedRequest> {
        self.shared()
            .lock()
            .requests
            .iter()
            .filter(|r| r.uri().contains(needle))
            .cloned()
            .collect()
    }

    /// The most recent `/api/llm/...` request.
    pub fn last_llm_request(&self) -> Option<RecordedRequest> {
        self.shared()
            .lock()
            .requests
            .iter()
            .rev()
            .find(|r| r.is_llm())
            .cloned()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared().lock().requests.clear();
    }

    // ---- scripted replies ----------------------------------------------------------------

    /// Appends a rule (rules are tried in insertion order; the first match answers).
    pub fn push_rule(&self, rule: Rule) {
        self.shared().lock().rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.shared().lock().rules.clear();
    }

    /// The rules still in force (with their remaining `times`).
    pub fn rules(&self) -> Vec<Rule> {
        self.shared().lock().rules.clone()
    }

    /// From now on, every call with this bearer credential gets `status` with JSON `body`
    /// (after the header checks; e.g. 401/402/429/500 for invalid or exhausted keys).
    pub fn set_bearer_status(&self, bearer: impl Into<String>, status: u16, body: Value) {
        self.shared()
            .lock()
            .bearer_status
            .insert(bearer.into(), (status, body));
    }

    /// Removes the override of one credential.
    pub fn clear_bearer_status(&self, bearer: &str) {
        self.shared().lock().bearer_status.remove(bearer);
    }

    // ---- WorkOS / credentials -------------------------------------------------------------

    /// Makes `token` a valid (single-use) WorkOS refresh token.
    pub fn add_refresh_token(&self, token: impl Into<String>) {
        self.shared().lock().refresh_tokens.insert(token.into());
    }

    /// The refresh tokens currently valid (the seeded ones not yet used, plus the latest
    /// rotated ones).
    pub fn refresh_tokens(&self) -> Vec<String> {
        self.shared()
            .lock()
            .refresh_tokens
            .iter()
            .cloned()
            .collect()
    }

    /// Access tokens minted by successful refreshes, in no particular order.
    pub fn minted_access_tokens(&self) -> Vec<String> {
        self.shared()
            .lock()
            .minted_access_tokens
            .iter()
            .cloned()
            .collect()
    }

    /// LLM calls with this bearer now get 401 `authentication_error` "mock: token expired".
    /// Works for any credential, minted or not.
    pub fn expire_access_token(&self, token: &str) {
        self.shared().lock().expired.insert(token.to_owned());
    }

    /// Expires every access token minted so far.
    pub fn expire_all_access_tokens(&self) {
        let mut st = self.shared().lock();
        let minted: Vec<String> = st.minted_access_tokens.iter().cloned().collect();
        st.expired.extend(minted);
    }

    /// Calls received by `POST /user_management/authenticate` (successful or not).
    pub fn refresh_count(&self) -> usize {
        self.shared().refresh_calls.load(Ordering::SeqCst)
    }

    /// `Some(status)`: WorkOS answers every call with that status (`server_error` body).
    /// `None`: back to normal.
    pub fn set_workos_failure(&self, status: Option<u16>) {
        self.shared().lock().workos_failure = status;
    }

    // ---- streams -------------------------------------------------------------------------

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared().connections.load(Ordering::SeqCst)
    }

    /// SSE bodies currently being written.
    pub fn active_streams(&self) -> usize {
        self.shared().active_streams.load(Ordering::SeqCst)
    }

    /// SSE bodies dropped before their end because the client (the gateway) closed the
    /// connection.
    pub fn cancelled_streams(&self) -> usize {
        self.shared().cancelled_streams.load(Ordering::SeqCst)
    }

    /// Requests currently held open by a [`ReplyBody::Hang`] reply.
    pub fn hanging_requests(&self) -> usize {
        self.shared().hanging.load(Ordering::SeqCst)
    }

    /// Waits until `cond(self)` holds, polling every 5 ms; false on timeout. Handy because a
    /// client disconnect reaches the mock asynchronously.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until no stream is being written and no request hangs.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |m| {
            m.active_streams() == 0 && m.hanging_requests() == 0
        })
        .await
    }

    // ---- lifecycle -----------------------------------------------------------------------

    /// Back to the initial state: no requests, rules, overrides, tokens or failure; counters
    /// (refresh, cancelled) at zero.
    pub fn reset(&self) {
        self.shared().reset();
    }

    /// Stops the server: running streams end, hanging requests get 503, the listener closes.
    /// Waits up to 5 s for the server task, then aborts it.
    pub async fn shutdown(&self) {
        self.shared().signal_shutdown();
        let task = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
