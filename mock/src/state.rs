//! Shared mock state: recorded requests, scripted rules, credentials and counters.
//!
//! Everything mutable lives behind one `std::sync::Mutex` that is only ever held for a few
//! field updates — never across an `.await`. Counters that streams update from their drop
//! guards are atomics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::rules::{Reply, Rule};

/// Tuning knobs for a mock instance (all have sensible defaults).
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Upper bound (inclusive) on the size of one awkward SSE piece.
    pub max_piece: usize,
    /// Pause between two pieces, picked uniformly in this inclusive range (milliseconds).
    /// `(0, 0)` writes all pieces back to back (they may then coalesce into fewer reads).
    pub piece_delay_ms: (u64, u64),
    /// Seed for the piece splitting and pauses; `None` picks a random base seed. Each stream
    /// uses `seed + stream_number`, so a seeded run is reproducible.
    pub seed: Option<u64>,
    /// Write the generated (non-scripted) SSE streams with CRLF line endings.
    pub default_crlf: bool,
    /// Largest request body accepted (bigger → 413).
    pub max_body_bytes: usize,
    /// `Some(n)`: serve HTTP/2 without TLS (h2c, prior knowledge) besides HTTP/1.1, advertising
    /// `SETTINGS_MAX_CONCURRENT_STREAMS = n` per connection, as Factory's TLS front does over
    /// ALPN. Requests past the cap wait at the client for a free stream.
    pub http2_max_concurrent_streams: Option<u32>,
    /// `Some`: bench mode (see [`crate::bench`]): the LLM routes answer fast, paced and
    /// unrecorded, with per-key behaviour by bearer prefix.
    pub bench: Option<crate::bench::BenchOptions>,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            max_piece: crate::sse::DEFAULT_MAX_PIECE,
            piece_delay_ms: (1, 3),
            seed: None,
            default_crlf: false,
            max_body_bytes: 64 * 1024 * 1024,
            http2_max_concurrent_streams: None,
            bench: None,
        }
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case header names; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    pub at: SystemTime,
}

impl RecordedRequest {
    pub(crate) fn new(
        method: &str,
        path: &str,
        query: Option<&str>,
        header_map: &HeaderMap,
        body: Bytes,
    ) -> Self {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in header_map {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_ascii_lowercase())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let json = serde_json::from_slice(&body).ok();
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers,
            body,
            json,
            at: SystemTime::now(),
        }
    }

    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The credential of an `Authorization: Bearer <credential>` header, if any.
    pub fn bearer(&self) -> Option<&str> {
        let auth = self.header("authorization")?;
        let (scheme, cred) = auth.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
    }

    /// Path plus `?query` when there is one (what [`Rule::path_contains`] is matched against).
    pub fn uri(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The body as (lossy) UTF-8 text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether this is a call to one of the `/api/llm/...` routes.
    pub fn is_llm(&self) -> bool {
        self.path.starts_with("/api/llm/")
    }

    /// The JSON shape served by `GET /_mock/requests`.
    pub fn to_json(&self) -> Value {
        #[derive(Serialize)]
        struct View<'a> {
            method: &'a str,
            path: &'a str,
            query: Option<&'a str>,
            headers: &'a BTreeMap<String, String>,
            body: String,
            json: Option<&'a Value>,
            at_ms: u128,
        }
        let view = View {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            body: self.body_text(),
            json: self.json.as_ref(),
            at_ms: self
                .at
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis(),
        };
        serde_json::to_value(view).unwrap_or(Value::Null)
    }
}

/// Mutable state; guarded by [`Shared::state`].
#[derive(Debug, Default)]
pub(crate) struct State {
    pub requests: Vec<RecordedRequest>,
    /// Scripted rules, in insertion order (first match wins).
    pub rules: Vec<Rule>,
    /// Bearer credential → (status, JSON body) that it always gets.
    pub bearer_status: HashMap<String, (u16, Value)>,
    /// WorkOS refresh tokens that are currently valid (each single-use).
    pub refresh_tokens: HashSet<String>,
    /// Access tokens minted by the WorkOS refresh.
    pub minted_access_tokens: HashSet<String>,
    /// Bearer credentials that get 401 "token expired".
    pub expired: HashSet<String>,
    /// When set, WorkOS answers every call with this status.
    pub workos_failure: Option<u16>,
}

/// State shared by the server tasks and every handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub options: MockOptions,
    /// Bench-mode settings and counters (`None` outside bench mode).
    pub bench: Option<crate::bench::BenchState>,
    base_seed: u64,
    /// SSE bodies currently being written.
    pub active_streams: AtomicUsize,
    /// SSE bodies dropped before their end (the client closed the connection).
    pub cancelled_streams: AtomicUsize,
    /// Requests currently held by a `Hang` reply.
    pub hanging: AtomicUsize,
    /// Calls to `POST /user_management/authenticate`.
    pub refresh_calls: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// Numbers generated ids (`msg_mock_<n>`, ...).
    next_id: AtomicU64,
    /// Numbers streams, for per-stream split seeds.
    next_stream: AtomicU64,
    shutdown_tx: watch::Sender<bool>,
}

impl Shared {
    pub fn new(options: MockOptions) -> Self {
        let base_seed = options.seed.unwrap_or_else(|| fastrand::u64(..));
        let bench = options.bench.as_ref().map(crate::bench::BenchState::new);
        Self {
            state: Mutex::new(State::default()),
            bench,
            options,
            base_seed,
            active_streams: AtomicUsize::new(0),
            cancelled_streams: AtomicUsize::new(0),
            hanging: AtomicUsize::new(0),
            refresh_calls: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            next_stream: AtomicU64::new(0),
            shutdown_tx: watch::channel(false).0,
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state stays usable after a panic in
    /// some test thread).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, req: RecordedRequest) {
        self.lock().requests.push(req);
    }

    /// Next number for generated ids; starts at 1.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Seed for the next stream's splitting.
    pub fn next_stream_seed(&self) -> u64 {
        self.base_seed
            .wrapping_add(self.next_stream.fetch_add(1, Ordering::SeqCst))
    }

    /// Finds the first rule matching `uri`/`bearer`, consumes one use of it and returns a copy
    /// of its reply. A rule whose uses run out is removed.
    pub fn take_rule(&self, uri: &str, bearer: Option<&str>) -> Option<Reply> {
        let mut st = self.lock();
        let idx = st.rules.iter().position(|r| r.matches(uri, bearer))?;
        let rule = &mut st.rules[idx];
        let reply = rule.reply.clone();
        if let Some(times) = rule.times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                st.rules.remove(idx);
            }
        }
        Some(reply)
    }

    pub fn reset(&self) {
        *self.lock() = State::default();
        self.cancelled_streams.store(0, Ordering::SeqCst);
        self.refresh_calls.store(0, Ordering::SeqCst);
    }

    /// Tells streams, hanging requests and the server to stop.
    pub fn signal_shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    /// Resolves once shutdown has been signalled (never, otherwise).
    pub async fn shutdown_signalled(&self) {
        let mut rx = self.shutdown_tx.subscribe();
        if rx.wait_for(|down| *down).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Counts a request held by a `Hang` reply; the count drops when the handler future is dropped
/// (the client gave up) or the hang ends at shutdown.
pub(crate) struct HangGuard<'a>(&'a Shared);

impl<'a> HangGuard<'a> {
    pub fn new(shared: &'a Shared) -> Self {
        shared.hanging.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for HangGuard<'_> {
    fn drop(&mut self) {
        self.0.hanging.fetch_sub(1, Ordering::SeqCst);
    }
}
