//! Turning the upstream answer into the client's response: relayed (pass-through), translated
//! (chat), streamed or whole; upstream errors relayed or translated.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::aggregated::{self, Whole};
use super::plan::{Plan, Shape};
use super::stream::{self, RequestLog};
use super::{ProxyInfo, Route, Scrub, relay, translated, unix_now, with_info};
use crate::config::{Model, ModelKind};
use crate::error::{ApiError, Envelope};
use crate::reasoning_cache::ReasoningCache;
use crate::translate;
use crate::translate::responses_chat::Turn;
use crate::upstream::UpstreamResponse;
use crate::usage::{self, WireFormat};

/// Upstream response headers relayed to the client.
pub(super) fn relay_headers(upstream: &HeaderMap, out: &mut HeaderMap) {
    for (name, value) in upstream {
        let n = name.as_str();
        if n == "x-request-id" {
            out.insert("x-upstream-request-id", value.clone());
        } else if n == "request-id"
            || n == "retry-after"
            || n == "x-should-retry"
            || n.starts_with("anthropic-ratelimit-")
            || n.starts_with("x-ratelimit-")
        {
            out.append(name.clone(), value.clone());
        }
    }
}

fn stream_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// An upstream error answer relayed to the client: unchanged on pass-through routes (but
/// already scrubbed of secrets), in the OpenAI envelope on the chat route.
pub(super) fn respond_error(
    route: Route,
    status: StatusCode,
    upstream_headers: &HeaderMap,
    body: bytes::Bytes,
    log: &mut RequestLog,
) -> Response {
    let mut out = if route == Route::ChatCompletions {
        openai_error_response(status.as_u16(), &body)
    } else {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        if let Some(ct) = upstream_headers.get(header::CONTENT_TYPE) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        r
    };
    relay_headers(upstream_headers, out.headers_mut());
    log.finish_unstreamed(out.status().as_u16());
    with_info(out, log)
}

/// A successful upstream answer.
pub(super) async fn respond(
    route: Route,
    plan: Plan<'_>,
    keepalive: Duration,
    resp: UpstreamResponse,
    scrub: Scrub,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let status = resp.status();
    let upstream_headers = resp.headers().clone();
    let content_type = upstream_headers.get(header::CONTENT_TYPE).cloned();
    let model = plan.model;

    if let Shape::Chat {
        from,
        client_model,
        include_usage,
    } = plan.shape
    {
        let chat = ChatAnswer {
            model,
            stream: plan.prepared.stream,
            aggregate: plan.prepared.aggregate,
            from,
            client_model,
            include_usage,
            keepalive,
            turn_cache: plan.turn_cache,
        };
        return chat.respond(resp, &upstream_headers, scrub, log).await;
    }

    if plan.prepared.stream {
        let body = relay::relay(
            resp.into_stream(),
            route,
            plan.format,
            plan.prepared.drop_usage_chunk,
            log.take(),
            scrub,
            keepalive,
        );
        let mut out = Response::new(Body::from_stream(body));
        *out.status_mut() = status;
        stream_headers(out.headers_mut());
        relay_headers(&upstream_headers, out.headers_mut());
        let info = ProxyInfo {
            model: model.id.clone(),
            credential: log.credential.clone(),
            upstream_status: Some(status.as_u16()),
        };
        out.extensions_mut().insert(info);
        return Ok(out);
    }

    let (body, content_type) = if plan.prepared.aggregate {
        // The client asked for a whole answer; the upstream streamed it.
        match aggregated::read(resp, plan.format, &scrub, log).await? {
            Whole::Reply(v) => (
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                None,
            ),
            Whole::Body(b) => (b, content_type),
            Whole::Failed { status, body } => {
                let headers = aggregated::as_json(&upstream_headers);
                return Ok(respond_error(route, status, &headers, body, log));
            }
        }
    } else {
        (resp.bytes().await?, content_type)
    };
    if route != Route::CountTokens
        && let Some(u) = usage::from_reply_bytes(plan.format, &body)
    {
        stream::count_tokens_metric(&model.id, &u);
        log.usage = Some(u);
    }
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("application/json")),
    );
    relay_headers(&upstream_headers, out.headers_mut());
    log.finish_unstreamed(status.as_u16());
    Ok(with_info(out, log))
}

/// An upstream error translated into the OpenAI envelope (the chat route's answer).
pub(super) fn openai_error_response(status: u16, body: &[u8]) -> Response {
    let e = translate::upstream_error_to_openai(status, body);
    let mut r = Response::new(Body::from(serde_json::to_vec(&e.body).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if e.no_retry {
        r.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    r
}

/// A successful upstream answer turned into Chat Completions.
struct ChatAnswer<'a> {
    model: &'a Model,
    stream: bool,
    /// The upstream streams a whole answer the client asked for (assembled here).
    aggregate: bool,
    from: ModelKind,
    client_model: String,
    include_usage: bool,
    keepalive: Duration,
    /// Keeps the reply's turn for the reasoning round trip (`translation.md` §4.4).
    turn_cache: Option<Arc<ReasoningCache<Turn>>>,
}

impl ChatAnswer<'_> {
    async fn respond(
        self,
        resp: UpstreamResponse,
        upstream_headers: &HeaderMap,
        scrub: Scrub,
        log: &mut RequestLog,
    ) -> Result<Response, ApiError> {
        if self.stream {
            return Ok(self.stream(resp, upstream_headers, scrub, log).await);
        }
        let upstream_format = if self.from == ModelKind::Anthropic {
            WireFormat::Anthropic
        } else {
            WireFormat::Responses
        };
        let body = if self.aggregate {
            match aggregated::read(resp, upstream_format, &scrub, log).await? {
                Whole::Reply(v) => Ok(v),
                Whole::Body(b) => Err(b),
                Whole::Failed { status, body } => {
                    let headers = aggregated::as_json(upstream_headers);
                    return Ok(respond_error(
                        Route::ChatCompletions,
                        status,
                        &headers,
                        body,
                        log,
                    ));
                }
            }
        } else {
            Err(resp.bytes().await?)
        };
        let v: Value = match body {
            Ok(v) => v,
            Err(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("the upstream answered with invalid JSON: {e}"),
                )
                .with_code("bad_upstream_response")
            })?,
        };
        if let Some(u) = usage::from_json(upstream_format, &v) {
            stream::count_tokens_metric(&self.model.id, &u);
            log.usage = Some(u);
        }
        if let Some(cache) = &self.turn_cache
            && let Some(turn) = translate::responses_chat::Turn::from_response(&v)
        {
            translated::keep_turn(cache, turn);
        }
        let translated = match self.from {
            ModelKind::Anthropic => Ok(translate::anthropic_chat::anthropic_to_chat_response(
                &v,
                &self.client_model,
                unix_now(),
            )),
            _ => {
                let created = v
                    .get("created_at")
                    .and_then(Value::as_f64)
                    .map(|c| c as u64)
                    .unwrap_or_else(unix_now);
                translate::responses_chat::responses_to_chat_response(
                    &v,
                    &self.client_model,
                    created,
                )
            }
        };
        let mut out = match translated {
            Ok(chat) => {
                let mut r =
                    Response::new(Body::from(serde_json::to_vec(&chat).unwrap_or_default()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(f) => {
                let body = scrub.bytes(&f.body).unwrap_or(f.body);
                openai_error_response(f.status, &body)
            }
        };
        relay_headers(upstream_headers, out.headers_mut());
        log.finish_unstreamed(out.status().as_u16());
        Ok(with_info(out, log))
    }

    async fn stream(
        self,
        resp: UpstreamResponse,
        upstream_headers: &HeaderMap,
        scrub: Scrub,
        log: &mut RequestLog,
    ) -> Response {
        use translate::chat::ChatChunks;
        use translated::{ChatTranslator, Primed, Translated};

        let chunks = ChatChunks {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: unix_now(),
            model: self.client_model,
            include_usage: self.include_usage,
        };
        let translator = match self.from {
            ModelKind::Anthropic => ChatTranslator::Anthropic(Box::new(
                translate::anthropic_chat::AnthropicToChat::new(chunks),
            )),
            _ => {
                let t = translate::responses_chat::ResponsesToChat::new(chunks);
                ChatTranslator::Responses(Box::new(if self.turn_cache.is_some() {
                    t.collect_turn()
                } else {
                    t
                }))
            }
        };
        let info = log.info();
        let request_id = log.request_id.clone();
        let primed = Translated::new(
            resp.into_stream(),
            translator,
            log.take(),
            scrub,
            self.keepalive,
        )
        .keeping_turn(self.turn_cache)
        .prime()
        .await;
        let mut out = match primed {
            Primed::Streaming(first, t) => {
                let mut out = Response::new(Body::from_stream(t.into_stream(first)));
                stream_headers(out.headers_mut());
                out
            }
            Primed::Failed(f) => {
                tracing::info!(request_id = %request_id, status = f.status, "upstream failed before the first event; answering with an error");
                openai_error_response(f.status, &f.body)
            }
            Primed::Broken(e) => e.render(Envelope::OpenAi, &request_id),
        };
        relay_headers(upstream_headers, out.headers_mut());
        out.extensions_mut().insert(info);
        out
    }
}
