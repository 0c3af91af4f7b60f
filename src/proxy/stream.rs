//! The per-request log/metrics record, closed exactly once when the response is really over
//! (including when the client goes away mid-stream: the relay's `Drop`). The relays themselves
//! are `proxy::relay` (pass-through) and `proxy::translated` (chat).

use std::sync::Arc;
use std::time::Instant;

use super::{ProxyInfo, Route};
use crate::credentials::pool::KeyPool;
use crate::inbound::clients::Client;
use crate::store::records::{Millis, UsageRecord};
use crate::telemetry::metrics as m;
use crate::usage::recorder::Recorder;
use crate::usage::{Usage, UsageSniffer, WireFormat};

/// What is known about one proxied request; closed exactly once, which writes its metrics, its
/// log line and its usage record.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub route: Route,
    pub request_id: String,
    pub started: Instant,
    /// Wall-clock start (Unix ms) for the usage record.
    pub at_ms: Millis,
    pub model: String,
    pub credential: String,
    /// `api_access_key` or `anonymous` (when no client key authenticated the request).
    pub client: &'static str,
    /// The client key that authenticated the request (contract §13): the record's client is
    /// its id, and its daily token count gets the usage.
    pub client_key: Option<Arc<Client>>,
    /// Upstream attempts made (failovers + 1).
    pub attempts: u32,
    pub format: Option<WireFormat>,
    pub upstream_status: Option<u16>,
    pub usage: Option<Usage>,
    /// The pool key that served (its token counters get the usage).
    pub pool_key: Option<String>,
    pub pool: Option<Arc<KeyPool>>,
    pub recorder: Option<Arc<Recorder>>,
    /// Milliseconds to the first byte sent to the client (streams).
    pub first_byte_ms: Option<u64>,
    closed: bool,
}

fn unix_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

impl RequestLog {
    pub fn new(route: Route, request_id: String, started: Instant) -> Self {
        RequestLog {
            route,
            request_id,
            started,
            at_ms: unix_ms(),
            model: String::new(),
            credential: String::new(),
            client: "anonymous",
            client_key: None,
            attempts: 0,
            format: None,
            upstream_status: None,
            usage: None,
            pool_key: None,
            pool: None,
            recorder: None,
            first_byte_ms: None,
            closed: false,
        }
    }

    /// Credits the usage to the pool key that served.
    fn credit_key(&self, u: &Usage) {
        if let (Some(pool), Some(id)) = (&self.pool, &self.pool_key) {
            pool.add_tokens(
                id,
                u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
                u.output_tokens,
            );
        }
    }

    /// Writes the usage record (count_tokens calls are not usage).
    fn record(&self, status: u16, u: &Usage, estimated: bool, complete: bool) {
        let Some(rec) = &self.recorder else {
            return;
        };
        if self.route == Route::CountTokens {
            return;
        }
        let latency_ms = self.started.elapsed().as_millis() as u64;
        if let Some(c) = &self.client_key {
            c.add_tokens(
                self.at_ms,
                u.input_tokens
                    .saturating_add(u.cache_read_tokens)
                    .saturating_add(u.cache_write_tokens)
                    .saturating_add(u.output_tokens),
            );
        }
        rec.record(UsageRecord {
            at: self.at_ms,
            hour_start: 0,
            day_start: 0,
            credential: or_dash(&self.credential).to_string(),
            attempts: self.attempts,
            client: match &self.client_key {
                Some(c) => c.rec.id.clone(),
                None => self.client.to_string(),
            },
            model: or_dash(&self.model).to_string(),
            route: self.route.label().to_string(),
            upstream_format: match self.format {
                Some(WireFormat::Anthropic) => "anthropic",
                Some(WireFormat::Responses) => "responses",
                Some(WireFormat::Chat) => "chat",
                None => "-",
            }
            .to_string(),
            status,
            input_tokens: u.input_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
            output_tokens: u.output_tokens,
            reasoning_tokens: u.reasoning_tokens,
            estimated,
            complete,
            latency_ms,
            ttfb_ms: Some(self.first_byte_ms.unwrap_or(latency_ms)),
        });
    }

    pub fn info(&self) -> ProxyInfo {
        ProxyInfo {
            model: self.model.clone(),
            credential: self.credential.clone(),
            upstream_status: self.upstream_status,
        }
    }

    /// Moves the record into a stream relay; this copy is then closed without effect.
    pub fn take(&mut self) -> RequestLog {
        let taken = self.clone();
        self.closed = true;
        taken
    }

    /// A response that was sent whole.
    pub fn finish_unstreamed(&mut self, status: u16) {
        if self.closed {
            return;
        }
        self.closed = true;
        let secs = self.started.elapsed().as_secs_f64();
        metrics::histogram!(m::REQUEST_DURATION, "route" => self.route.label()).record(secs);
        metrics::histogram!(m::TIME_TO_FIRST_BYTE, "route" => self.route.label()).record(secs);
        let u = self.usage.unwrap_or_default();
        self.credit_key(&u);
        self.record(status, &u, false, true);
        tracing::info!(
            request_id = %self.request_id,
            route = self.route.label(),
            model = %or_dash(&self.model),
            credential = %or_dash(&self.credential),
            status,
            ms = (secs * 1000.0) as u64,
            input_tokens = u.input_tokens,
            output_tokens = u.output_tokens,
            cache_read_tokens = u.cache_read_tokens,
            cache_write_tokens = u.cache_write_tokens,
            "request done"
        );
    }

    /// A stream that ended (normally, cut by the upstream, or abandoned by the client): what was
    /// seen is kept; when the upstream never reported output usage, output is estimated from the
    /// streamed text (characters / 4).
    pub(super) fn finish_stream(&mut self, sniffer: &UsageSniffer, outcome: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        let secs = self.started.elapsed().as_secs_f64();
        metrics::histogram!(m::REQUEST_DURATION, "route" => self.route.label()).record(secs);
        let mut u = sniffer.usage();
        let estimated = !sniffer.saw_output_usage() && sniffer.streamed_text_chars() > 0;
        if estimated {
            u.output_tokens = sniffer.streamed_text_chars().div_ceil(4);
        }
        count_tokens_metric(&self.model, &u);
        self.credit_key(&u);
        self.usage = Some(u);
        self.record(
            self.upstream_status.unwrap_or(200),
            &u,
            estimated,
            outcome == "complete",
        );
        tracing::info!(
            request_id = %self.request_id,
            route = self.route.label(),
            model = %self.model,
            credential = %self.credential,
            outcome,
            upstream_complete = sniffer.completed(),
            estimated,
            ms = (secs * 1000.0) as u64,
            input_tokens = u.input_tokens,
            output_tokens = u.output_tokens,
            cache_read_tokens = u.cache_read_tokens,
            cache_write_tokens = u.cache_write_tokens,
            "stream done"
        );
    }

    /// Notes the time of the first byte sent to the client.
    pub(super) fn first_byte(&mut self) {
        if self.first_byte_ms.is_none() {
            let elapsed = self.started.elapsed();
            self.first_byte_ms = Some(elapsed.as_millis() as u64);
            metrics::histogram!(m::TIME_TO_FIRST_BYTE, "route" => self.route.label())
                .record(elapsed.as_secs_f64());
        }
    }
}

impl Drop for RequestLog {
    /// A request whose client went away before any answer (the handler was dropped while
    /// waiting for the upstream) is still recorded: status 499, incomplete, what was seen.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        metrics::counter!(m::CLIENT_DISCONNECTS).increment(1);
        let u = self.usage.unwrap_or_default();
        self.record(CLIENT_CLOSED_REQUEST, &u, false, false);
        tracing::info!(
            request_id = %self.request_id,
            route = self.route.label(),
            model = %or_dash(&self.model),
            credential = %or_dash(&self.credential),
            ms = self.started.elapsed().as_millis() as u64,
            "client went away before the answer"
        );
    }
}

/// The status recorded for a request its client abandoned before any answer (nginx's 499).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Adds a usage to the token counters.
pub fn count_tokens_metric(model: &str, u: &Usage) {
    for (kind, n) in [
        ("input", u.input_tokens),
        ("cache_read", u.cache_read_tokens),
        ("cache_write", u.cache_write_tokens),
        ("output", u.output_tokens),
    ] {
        if n > 0 {
            metrics::counter!(m::TOKENS, "model" => model.to_string(), "kind" => kind).increment(n);
        }
    }
}
