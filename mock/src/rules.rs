//! Scripted replies.
//!
//! A test pushes [`Rule`]s (from Rust with [`crate::MockUpstream::push_rule`], or as JSON with
//! `POST /_mock/rules`). For each upstream request that passed the mock's protocol checks, the
//! rules are tried in insertion order and the first match answers instead of the default
//! "model". JSON form (externally tagged, snake_case variant names):
//!
//! ```json
//! {"path_contains": "/a/v1/messages", "bearer": "fk-1", "times": 1,
//!  "reply": {"status": 429, "headers": [["retry-after", "3"]],
//!            "body": {"json": {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}}}}
//! {"reply": {"body": {"sse": {"events": [{"event": "ping", "data": "{\"type\":\"ping\"}"}], "truncate": true}}}}
//! {"reply": {"body": {"raw": {"chunks": ["data: {\"a\"", ":1}\n\n"], "delay_ms_between": 50}}}}
//! {"reply": {"body": "hang"}}
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sse::{self, SseEventSpec, StreamEnd, StreamPlan};
use crate::state::{HangGuard, Shared};

/// One scripted reply and when it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Substring of the request's path-and-query (e.g. `"/o/v1/responses"`, `"beta=true"`).
    /// `None` matches every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    /// Exact bearer credential (`Authorization: Bearer <this>`). `None` matches any request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<String>,
    /// How many requests this rule answers; `None` = unlimited. Removed when used up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    pub reply: Reply,
}

impl Rule {
    /// A rule that answers every request with `reply` (narrow it with the builder methods).
    pub fn new(reply: Reply) -> Self {
        Self {
            path_contains: None,
            bearer: None,
            times: None,
            reply,
        }
    }

    /// Only requests whose path-and-query contains `s`.
    pub fn path(mut self, s: impl Into<String>) -> Self {
        self.path_contains = Some(s.into());
        self
    }

    /// Only requests with exactly this bearer credential.
    pub fn bearer(mut self, b: impl Into<String>) -> Self {
        self.bearer = Some(b.into());
        self
    }

    /// Answer only `n` requests, then disappear.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Answer one request only.
    pub fn once(self) -> Self {
        self.times(1)
    }

    pub(crate) fn matches(&self, uri: &str, bearer: Option<&str>) -> bool {
        if self.times == Some(0) {
            return false;
        }
        if let Some(p) = &self.path_contains
            && !uri.contains(p.as_str())
        {
            return false;
        }
        match &self.bearer {
            Some(b) => bearer == Some(b.as_str()),
            None => true,
        }
    }
}

fn default_status() -> u16 {
    200
}

/// What the mock answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default = "default_status")]
    pub status: u16,
    /// Extra response headers. A `content-type` here replaces the body kind's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Pause before the response headers are sent.
    #[serde(default)]
    pub delay_ms: u64,
    pub body: ReplyBody,
}

/// The body of a scripted reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyBody {
    /// A JSON document (`content-type: application/json`).
    Json(Value),
    /// Plain text (`content-type: text/plain; charset=utf-8`).
    Text(String),
    /// An SSE stream (`content-type: text/event-stream`), written in awkward pieces.
    Sse {
        events: Vec<SseEventSpec>,
        /// Pause between events (the pieces *within* an event still get the small 1–3 ms
        /// pauses). With 0 the whole transcript is split as one, so pieces straddle events.
        #[serde(default)]
        delay_ms_between: u64,
        /// Stop in the middle of the last event: the remaining bytes are never sent and the
        /// body ends (cleanly, unless `abort`).
        #[serde(default)]
        truncate: bool,
        /// Use `\r\n` line endings.
        #[serde(default)]
        crlf: bool,
        /// After the last piece, fail the body so the connection is torn down (the client sees
        /// a broken transfer instead of a clean end).
        #[serde(default)]
        abort: bool,
        /// After the last piece, keep the connection open and send nothing more (an upstream
        /// that stalls mid-stream).
        #[serde(default)]
        hang_after: bool,
    },
    /// Exact body pieces, written as given (no re-splitting), `delay_ms_between` apart.
    Raw {
        chunks: Vec<String>,
        #[serde(default)]
        delay_ms_between: u64,
        #[serde(default)]
        abort: bool,
        #[serde(default)]
        hang_after: bool,
    },
    /// Accept the request and never answer (until the client gives up or the mock shuts down).
    Hang,
}

impl Reply {
    pub fn new(status: u16, body: ReplyBody) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay_ms: 0,
            body,
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, value: Value) -> Self {
        Self::new(status, ReplyBody::Json(value))
    }

    /// A plain-text reply.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::new(status, ReplyBody::Text(text.into()))
    }

    /// A 200 SSE reply with default options (no pauses between events, LF, complete).
    pub fn sse(events: Vec<SseEventSpec>) -> Self {
        Self::new(
            200,
            ReplyBody::Sse {
                events,
                delay_ms_between: 0,
                truncate: false,
                crlf: false,
                abort: false,
                hang_after: false,
            },
        )
    }

    /// A 200 reply of exact raw pieces.
    pub fn raw(chunks: Vec<String>, delay_ms_between: u64) -> Self {
        Self::new(
            200,
            ReplyBody::Raw {
                chunks,
                delay_ms_between,
                abort: false,
                hang_after: false,
            },
        )
    }

    /// Never answers.
    pub fn hang() -> Self {
        Self::new(200, ReplyBody::Hang)
    }

    /// An Anthropic-format error: `{"type":"error","error":{"type":..,"message":..}}`.
    pub fn anthropic_error(status: u16, error_type: &str, message: &str) -> Self {
        Self::json(status, crate::anthropic::error_body(error_type, message))
    }

    /// An OpenAI-format error: `{"error":{"message":..,"type":..,"param":null,"code":null}}`.
    pub fn openai_error(status: u16, error_type: &str, message: &str) -> Self {
        Self::json(status, crate::openai::error_body(error_type, message))
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Sets the SSE options (ignored for other body kinds).
    pub fn sse_options(
        mut self,
        delay_ms_between_events: u64,
        truncate_last: bool,
        use_crlf: bool,
    ) -> Self {
        if let ReplyBody::Sse {
            delay_ms_between,
            truncate,
            crlf,
            ..
        } = &mut self.body
        {
            *delay_ms_between = delay_ms_between_events;
            *truncate = truncate_last;
            *crlf = use_crlf;
        }
        self
    }

    /// Makes an SSE or raw body end by tearing the connection down.
    pub fn aborting(mut self) -> Self {
        if let ReplyBody::Sse { abort, .. } | ReplyBody::Raw { abort, .. } = &mut self.body {
            *abort = true;
        }
        self
    }

    /// Makes an SSE or raw body stall (connection open, nothing more sent) after its pieces.
    pub fn hanging_after(mut self) -> Self {
        if let ReplyBody::Sse { hang_after, .. } | ReplyBody::Raw { hang_after, .. } =
            &mut self.body
        {
            *hang_after = true;
        }
        self
    }
}

fn stream_end(abort: bool, hang_after: bool) -> StreamEnd {
    if hang_after {
        StreamEnd::Hang
    } else if abort {
        StreamEnd::Abort
    } else {
        StreamEnd::Close
    }
}

/// Builds the awkward-piece plan for an SSE transcript.
///
/// With `delay_ms_between == 0` the whole transcript is split as one byte string (pieces then
/// straddle event boundaries); otherwise each event is split on its own and the first piece of
/// each later event waits `delay_ms_between`.
pub(crate) fn sse_plan(
    shared: &Shared,
    events: &[SseEventSpec],
    delay_ms_between: u64,
    truncate: bool,
    crlf: bool,
    end: StreamEnd,
) -> StreamPlan {
    let seed = shared.next_stream_seed();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5EED_5EED);
    let (lo, hi) = shared.options.piece_delay_ms;
    let mut small_pause = || Duration::from_millis(rng.u64(lo.min(hi)..=hi.max(lo)));
    let max_piece = shared.options.max_piece;
    let mut pieces = VecDeque::new();
    let limit = if truncate {
        sse::truncation_point(events, crlf)
    } else {
        usize::MAX
    };
    tracing::debug!(
        seed,
        events = events.len(),
        truncate,
        "mock: planning SSE stream"
    );
    if delay_ms_between == 0 {
        let mut all = sse::encode_events(events, crlf);
        all.truncate(limit);
        for (i, p) in sse::split_awkwardly_with(&all, seed, max_piece)
            .into_iter()
            .enumerate()
        {
            let pause = if i == 0 {
                Duration::ZERO
            } else {
                small_pause()
            };
            pieces.push_back((pause, p));
        }
    } else {
        let mut written = 0usize;
        for (k, ev) in events.iter().enumerate() {
            if written >= limit {
                break;
            }
            let mut bytes = sse::encode_event(ev, crlf);
            bytes.truncate(limit - written);
            written += bytes.len();
            let event_seed = seed.wrapping_add(k as u64);
            for (i, p) in sse::split_awkwardly_with(&bytes, event_seed, max_piece)
                .into_iter()
                .enumerate()
            {
                let pause = match (k, i) {
                    (0, 0) => Duration::ZERO,
                    (_, 0) => Duration::from_millis(delay_ms_between),
                    _ => small_pause(),
                };
                pieces.push_back((pause, p));
            }
        }
    }
    StreamPlan { pieces, end }
}

/// A streamed response from a plan.
pub(crate) fn stream_response(
    shared: &Arc<Shared>,
    status: StatusCode,
    headers: Vec<(String, String)>,
    plan: StreamPlan,
) -> Response {
    let body = Body::from_stream(sse::body_stream(shared.clone(), plan));
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    apply_headers(&mut resp, &headers);
    resp
}

/// Sets (replacing) response headers; invalid names/values are skipped with a warning.
pub(crate) fn apply_headers(resp: &mut Response, headers: &[(String, String)]) {
    let mut seen: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            tracing::warn!(%name, "mock: skipping invalid scripted header");
            continue;
        };
        // The first scripted value replaces any default; later ones with the same name add.
        if seen.contains(&name) {
            resp.headers_mut().append(name, value);
        } else {
            resp.headers_mut().insert(name.clone(), value);
            seen.push(name);
        }
    }
}

/// A JSON response.
pub(crate) fn json_response(status: u16, value: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, value.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Sleeps `ms` unless the mock shuts down first; returns false on shutdown.
async fn pause(shared: &Shared, ms: u64) -> bool {
    if ms == 0 {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => true,
        () = shared.shutdown_signalled() => false,
    }
}

fn shutting_down() -> Response {
    json_response(503, &serde_json::json!({"error": "mock: shutting down"}))
}

/// Answers with a scripted reply.
pub(crate) async fn render(shared: &Arc<Shared>, reply: Reply) -> Response {
    if !pause(shared, reply.delay_ms).await {
        return shutting_down();
    }
    let Ok(status) = StatusCode::from_u16(reply.status) else {
        return json_response(
            500,
            &serde_json::json!({"error": format!("mock: invalid scripted status {}", reply.status)}),
        );
    };
    match reply.body {
        ReplyBody::Json(value) => {
            let mut resp = json_response(status.as_u16(), &value);
            apply_headers(&mut resp, &reply.headers);
            resp
        }
        ReplyBody::Text(text) => {
            let mut resp = (status, text).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            apply_headers(&mut resp, &reply.headers);
            resp
        }
        ReplyBody::Sse {
            events,
            delay_ms_between,
            truncate,
            crlf,
            abort,
            hang_after,
        } => {
            let end = stream_end(abort, hang_after);
            let plan = sse_plan(shared, &events, delay_ms_between, truncate, crlf, end);
            stream_response(shared, status, reply.headers, plan)
        }
        ReplyBody::Raw {
            chunks,
            delay_ms_between,
            abort,
            hang_after,
        } => {
            let pieces = chunks
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let pause = if i == 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(delay_ms_between)
                    };
                    (pause, Bytes::from(c))
                })
                .collect();
            let plan = StreamPlan {
                pieces,
                end: stream_end(abort, hang_after),
            };
            stream_response(shared, status, reply.headers, plan)
        }
        ReplyBody::Hang => {
            let _guard = HangGuard::new(shared);
            shared.shutdown_signalled().await;
            shutting_down()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_round_trip_through_json() {
        let rule = Rule::new(
            Reply::sse(vec![SseEventSpec::data("[DONE]")])
                .sse_options(5, true, true)
                .with_header("x-a", "b"),
        )
        .path("/o/v1/")
        .bearer("fk-1")
        .times(2);
        let text = serde_json::to_string(&rule).expect("serialize");
        let back: Rule = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, rule);

        let hang: Rule = serde_json::from_value(json!({"reply": {"body": "hang"}})).expect("hang");
        assert_eq!(hang.reply.body, ReplyBody::Hang);
        assert_eq!(hang.reply.status, 200);
        let raw: Rule = serde_json::from_value(
            json!({"path_contains": "x", "reply": {"status": 500, "body": {"raw": {"chunks": ["a", "b"]}}}}),
        )
        .expect("raw");
        assert!(matches!(raw.reply.body, ReplyBody::Raw { ref chunks, .. } if chunks.len() == 2));
    }

    #[test]
    fn matching_uses_path_query_and_bearer() {
        let r = Rule::new(Reply::text(200, ""))
            .path("beta=true")
            .bearer("k");
        assert!(r.matches("/api/llm/a/v1/messages?beta=true", Some("k")));
        assert!(!r.matches("/api/llm/a/v1/messages", Some("k")));
        assert!(!r.matches("/api/llm/a/v1/messages?beta=true", Some("k2")));
        assert!(!r.matches("/api/llm/a/v1/messages?beta=true", None));
        assert!(!Rule::new(Reply::hang()).times(0).matches("/", None));
    }
}
