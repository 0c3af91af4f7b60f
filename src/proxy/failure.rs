//! How a stream that breaks after its first byte ends (contract §10, `translation.md` §6.3):
//! an error in the route's stream format, then a clean end of the body.
//!
//! | route | frame |
//! |---|---|
//! | `/v1/messages` | `event: error` + `{"type":"error","error":{"type":"api_error","message"}}` |
//! | `/v1/responses` | `event: error` + `{"type":"error","code","message","param":null,"sequence_number"}` |
//! | `/v1/chat/completions` | `data: {"error":{"message","type":"server_error","param":null,"code"}}`, no `[DONE]` |
//!
//! `code` is `stream_truncated` when the upstream closed without its terminal event and
//! `upstream_error` for a transport failure or an idle-read timeout. Every message ends with
//! `(request id: …)`.

use serde_json::json;

use super::Route;
use crate::sse;
use crate::telemetry::metrics as m;
use crate::upstream::{FailureKind, UpstreamError};

/// Why a stream ended before its terminal event.
#[derive(Debug)]
pub(super) enum StreamBreak {
    /// The upstream body ended cleanly but without the terminal event.
    Truncated,
    /// The transport failed (reset, idle-read timeout, …).
    Transport(UpstreamError),
}

impl StreamBreak {
    pub(super) fn code(&self) -> &'static str {
        match self {
            StreamBreak::Truncated => "stream_truncated",
            StreamBreak::Transport(_) => "upstream_error",
        }
    }

    /// The outcome recorded in the request's log line.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            StreamBreak::Truncated => "upstream_closed_early",
            StreamBreak::Transport(e) if e.is_timeout() => "upstream_timeout",
            StreamBreak::Transport(_) => "upstream_error",
        }
    }

    /// The client-facing message: the kind of failure, never a host or URL.
    pub(super) fn message(&self, request_id: &str) -> String {
        let what = match self {
            StreamBreak::Truncated => {
                "the upstream closed the stream before it finished (truncated)"
            }
            StreamBreak::Transport(e) => match e.kind() {
                Some(FailureKind::Timeout) => {
                    "the upstream sent nothing within the idle-read timeout (timeout)"
                }
                Some(FailureKind::Tls) => "the upstream connection failed mid-stream (tls)",
                _ => "the upstream connection failed mid-stream (reset)",
            },
        };
        format!("{what} (request id: {request_id})")
    }

    /// Counts and logs the break (once per stream).
    pub(super) fn report(&self, request_id: &str) {
        metrics::counter!(m::UPSTREAM_ERRORS, "status" => "stream").increment(1);
        match self {
            StreamBreak::Truncated => {
                tracing::warn!(%request_id, "upstream closed the stream before its terminal event")
            }
            StreamBreak::Transport(e) => {
                tracing::warn!(%request_id, error = %e, detail = %e.detail(), "upstream stream failed")
            }
        }
    }
}

/// The error frame of `route` for a break. `sequence_number` continues a Responses stream's
/// numbering (the last number seen + 1).
pub(super) fn error_frame(
    route: Route,
    brk: &StreamBreak,
    request_id: &str,
    sequence_number: Option<u64>,
) -> String {
    let message = brk.message(request_id);
    match route {
        Route::Messages | Route::CountTokens => sse::encode(
            Some("error"),
            &json!({"type": "error", "error": {"type": "api_error", "message": message}})
                .to_string(),
        ),
        Route::Responses => sse::encode(
            Some("error"),
            &json!({"type": "error", "code": brk.code(), "message": message, "param": null,
                    "sequence_number": sequence_number.unwrap_or(0)})
            .to_string(),
        ),
        Route::ChatCompletions => sse::encode(
            None,
            &json!({"error": {"message": message, "type": "server_error", "param": null,
                              "code": brk.code()}})
            .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn data(frame: &str) -> (Option<String>, Value) {
        let mut d = sse::Decoder::new();
        let mut out = Vec::new();
        d.feed(frame.as_bytes(), &mut out);
        assert_eq!(out.len(), 1, "{frame}");
        let ev = out.remove(0);
        (ev.event, serde_json::from_str(&ev.data).unwrap())
    }

    #[test]
    fn frames_per_route() {
        let t = StreamBreak::Truncated;
        let (ev, v) = data(&error_frame(Route::Messages, &t, "r1", None));
        assert_eq!(ev.as_deref(), Some("error"));
        assert_eq!(v["error"]["type"], "api_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .ends_with("(request id: r1)")
        );

        let timeout = StreamBreak::Transport(UpstreamError::Timeout);
        let (ev, v) = data(&error_frame(Route::Responses, &timeout, "r2", Some(8)));
        assert_eq!(ev.as_deref(), Some("error"));
        assert_eq!(
            (
                v["type"].as_str(),
                v["code"].as_str(),
                v["sequence_number"].as_u64()
            ),
            (Some("error"), Some("upstream_error"), Some(8))
        );
        assert!(v["message"].as_str().unwrap().contains("(timeout)"));
        assert_eq!(timeout.outcome(), "upstream_timeout");

        let (ev, v) = data(&error_frame(Route::ChatCompletions, &t, "r3", None));
        assert_eq!(ev, None);
        assert_eq!(v["error"]["code"], "stream_truncated");
        assert_eq!(v["error"]["type"], "server_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .ends_with("(request id: r3)")
        );
    }
}
