//! Non-streaming clients of the Anthropic and Responses upstreams: the upstream call streams
//! (`Prepared::aggregate`) and its events are assembled here into the whole reply
//! (`translate::aggregate`), which `respond` then answers exactly as it answered a
//! non-streaming upstream body: relayed on the pass-through routes, translated on the chat
//! route, usage read from it once.
//!
//! This is the one place a stream is held rather than forwarded, on purpose: the client asked
//! for one JSON body. It is bounded by [`aggregate::DEFAULT_CAP`] (64 MiB, counting the decoder's
//! unfinished event). The idle-read timer moves with every chunk, so a long answer whose events
//! keep coming never times out, however long it takes in all.
//!
//! | upstream stream | client answer |
//! |---|---|
//! | terminal event (`message_stop`, `response.completed`/`.incomplete`) | 200, the assembled body (`application/json`) |
//! | Anthropic `error` event | its data as the body, the status of its type (529 overloaded, 500 api_error, 429, …) |
//! | `response.failed`, Responses `error` event | the OpenAI envelope, status from `error.code` (429, 400, else 500) |
//! | ends without its terminal event | 502 `stream_truncated` |
//! | transport failure / idle-read timeout | 502 `upstream_error` / 504 `upstream_timeout` |
//! | larger than the cap | 502 `upstream_too_large` |
//! | event data or tool input that is not JSON | 502 `bad_upstream_response` |
//! | not an event stream at all (`stream: true` ignored) | its body, as before |
//!
//! Errors go out in the route's envelope (the chat route translates upstream errors as it
//! always did); upstream error text is scrubbed of every secret.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use serde_json::Value;

use super::Scrub;
use super::failure::StreamBreak;
use super::stream::RequestLog;
use crate::error::ApiError;
use crate::translate::aggregate::{self, AggregateError, Aggregated, Assembler, StreamFormat};
use crate::upstream::UpstreamResponse;
use crate::usage::WireFormat;

/// The whole answer of a non-streaming client.
pub(super) enum Whole {
    /// The reply the non-streaming API would have sent, assembled from the stream.
    Reply(Value),
    /// The upstream did not answer with an event stream: its body as sent.
    Body(Bytes),
    /// The upstream reported an error in the stream (body scrubbed).
    Failed { status: StatusCode, body: Bytes },
}

fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// The upstream headers with `content-type: application/json` (what the client is sent in
/// place of the stream's type).
pub(super) fn as_json(upstream: &HeaderMap) -> HeaderMap {
    let mut h = upstream.clone();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h
}

/// Reads the upstream stream to its terminal event and assembles the reply. The usage seen is
/// left in `log` when the answer is an error (a reply's usage is read by the caller, as for a
/// non-streaming body).
pub(super) async fn read(
    mut resp: UpstreamResponse,
    format: WireFormat,
    scrub: &Scrub,
    log: &mut RequestLog,
) -> Result<Whole, ApiError> {
    let stream_format = match format {
        WireFormat::Anthropic => StreamFormat::Anthropic,
        WireFormat::Responses => StreamFormat::Responses,
        WireFormat::Chat => return Ok(Whole::Body(resp.bytes().await?)),
    };
    if !is_event_stream(resp.headers()) {
        return Ok(Whole::Body(resp.bytes().await?));
    }
    let mut asm = Assembler::new(stream_format, aggregate::DEFAULT_CAP);
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = asm.feed(&chunk) {
                    log.usage = asm.usage_so_far();
                    return Err(failed(e, log));
                }
                if asm.is_done() {
                    // The terminal event is in: nothing after it matters.
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let brk = StreamBreak::Transport(e);
                brk.report(&log.request_id);
                log.usage = asm.usage_so_far();
                let api = match brk {
                    StreamBreak::Transport(e) => ApiError::from(e),
                    StreamBreak::Truncated => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        AggregateError::Truncated.to_string(),
                    )
                    .with_code("stream_truncated"),
                };
                log.upstream_status = Some(api.status.as_u16());
                return Err(api);
            }
        }
    }
    drop(resp);
    // A complete stream's usage is read from its reply (or carried by its failure).
    let usage = if asm.is_done() {
        None
    } else {
        asm.usage_so_far()
    };
    match asm.finish() {
        Ok(Aggregated::Reply(v)) => Ok(Whole::Reply(v)),
        Ok(Aggregated::Failed { failure, usage }) => {
            let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = scrub.bytes(&failure.body).unwrap_or(failure.body);
            tracing::info!(request_id = %log.request_id, status = failure.status, "the upstream stream ended with an error");
            log.usage = usage;
            log.upstream_status = Some(status.as_u16());
            Ok(Whole::Failed {
                status,
                body: Bytes::from(body),
            })
        }
        Err(e) => {
            log.usage = usage;
            Err(failed(e, log))
        }
    }
}

/// A stream that could not be assembled: 502 in the route's envelope.
fn failed(e: AggregateError, log: &mut RequestLog) -> ApiError {
    let code = match &e {
        AggregateError::Truncated => {
            StreamBreak::Truncated.report(&log.request_id);
            "stream_truncated"
        }
        AggregateError::TooLarge { .. } => {
            tracing::warn!(request_id = %log.request_id, error = %e, "upstream answer too large to assemble");
            "upstream_too_large"
        }
        AggregateError::Malformed(_) => {
            tracing::warn!(request_id = %log.request_id, error = %e, "upstream stream malformed");
            "bad_upstream_response"
        }
    };
    log.upstream_status = Some(StatusCode::BAD_GATEWAY.as_u16());
    ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()).with_code(code)
}
