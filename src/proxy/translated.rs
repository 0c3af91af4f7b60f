//! Chat Completions streams translated from an Anthropic or Responses upstream stream.
//!
//! Upstream bytes are decoded by our SSE decoder and translated event by event; each batch of
//! client frames leaves as soon as it exists. Nothing is committed to the client until the first
//! upstream event has been read (`translation.md` G3): an upstream that fails first (an `error`
//! event, `response.failed`, or a stream that ends empty) still gets a proper HTTP error. Once
//! streaming, every `timing.sse_keepalive_s` of upstream silence sends an SSE comment so proxies
//! and clients do not time out during long thinking.
//!
//! When the upstream ends without its terminal event, breaks, or stays silent past the
//! idle-read timeout (contract §10), the client gets an error chunk naming the failure and the
//! request id, then the body ends (no `[DONE]`); before anything was sent, an HTTP error
//! instead. Error chunks translated from an upstream error are scrubbed of every secret.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use super::failure::{StreamBreak, error_frame};
use super::stream::RequestLog;
use super::{Route, Scrub};
use crate::error::ApiError;
use crate::reasoning_cache::ReasoningCache;
use crate::sse::{Decoder, Event};
use crate::telemetry::metrics as m;
use crate::translate::StreamFailure;
use crate::translate::anthropic_chat::AnthropicToChat;
use crate::translate::responses_chat::{ResponsesToChat, Turn};
use crate::upstream::UpstreamError;
use crate::usage::UsageSniffer;

/// The translator of one stream.
pub enum ChatTranslator {
    Anthropic(Box<AnthropicToChat>),
    Responses(Box<ResponsesToChat>),
}

impl ChatTranslator {
    fn on_event(&mut self, ev: &Event, out: &mut String) {
        match self {
            ChatTranslator::Anthropic(t) => t.on_event(ev, out),
            ChatTranslator::Responses(t) => t.on_event(ev, out),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            ChatTranslator::Anthropic(t) => t.is_closed(),
            ChatTranslator::Responses(t) => t.is_closed(),
        }
    }

    fn failure(&self) -> Option<&StreamFailure> {
        match self {
            ChatTranslator::Anthropic(t) => t.failure(),
            ChatTranslator::Responses(t) => t.failure(),
        }
    }

    fn sniffer(&self) -> &UsageSniffer {
        match self {
            ChatTranslator::Anthropic(t) => t.sniffer(),
            ChatTranslator::Responses(t) => t.sniffer(),
        }
    }
}

/// The translated stream's state; its `Drop` accounts for a client that went away.
pub struct Translated {
    inner: BoxStream<'static, Result<Bytes, UpstreamError>>,
    decoder: Decoder,
    events: Vec<Event>,
    translator: ChatTranslator,
    log: RequestLog,
    scrub: Scrub,
    keepalive: Duration,
    /// A break found before any client bytes existed (answered as an HTTP error by `prime`).
    pending_break: Option<StreamBreak>,
    /// The first upstream event has arrived (keep-alives start).
    started: bool,
    /// Nothing more will be sent.
    done: bool,
    /// Where a completed turn's items go (the reasoning round trip, `translation.md` §4.4).
    turn_cache: Option<Arc<ReasoningCache<Turn>>>,
}

/// How the first read of a translated stream went.
pub enum Primed {
    /// Client frames are ready: stream them, starting with these bytes.
    Streaming(Bytes, Box<Translated>),
    /// The upstream failed before anything was produced for the client: answer with an error.
    Failed(StreamFailure),
    /// The upstream body ended or broke before anything was produced for the client.
    Broken(ApiError),
}

impl Translated {
    pub(super) fn new(
        body: BoxStream<'static, Result<Bytes, UpstreamError>>,
        translator: ChatTranslator,
        log: RequestLog,
        scrub: Scrub,
        keepalive: Duration,
    ) -> Self {
        Translated {
            inner: body,
            decoder: Decoder::new(),
            events: Vec::new(),
            translator,
            log,
            scrub,
            keepalive,
            pending_break: None,
            started: false,
            done: false,
            turn_cache: None,
        }
    }

    /// Keeps the turn of a response that completed with tool calls in `cache`.
    pub(super) fn keeping_turn(mut self, cache: Option<Arc<ReasoningCache<Turn>>>) -> Self {
        self.turn_cache = cache;
        self
    }

    /// Feeds decoded events; appends the client bytes they produced to `out`. An error chunk
    /// translated from the upstream's error is scrubbed of every secret.
    fn translate(&mut self, out: &mut String) {
        let failed_before = self.translator.failure().is_some();
        let start = out.len();
        for ev in std::mem::take(&mut self.events) {
            self.started = true;
            if self.translator.is_closed() {
                break;
            }
            self.translator.on_event(&ev, out);
        }
        if !failed_before && self.translator.failure().is_some() {
            let produced = out.split_off(start);
            out.push_str(&self.scrub.text(produced));
        }
    }

    /// The upstream body ended (or broke): flush the decoder, translate what is left, and when
    /// the translator did not close the stream (no terminal event), add the gateway's error
    /// chunk. Returns the outcome to close with.
    fn flush_upstream(&mut self, out: &mut String, failure: Option<UpstreamError>) -> &'static str {
        self.decoder.finish(&mut self.events);
        self.translate(out);
        if self.translator.is_closed() {
            return if self.translator.failure().is_some() {
                "upstream_failed"
            } else {
                "complete"
            };
        }
        let brk = match failure {
            Some(e) => StreamBreak::Transport(e),
            None => StreamBreak::Truncated,
        };
        brk.report(&self.log.request_id);
        let outcome = brk.outcome();
        if out.is_empty() {
            // Nothing for the client yet: `prime` answers with an HTTP error instead.
            self.pending_break = Some(brk);
        } else {
            out.push_str(&error_frame(
                Route::ChatCompletions,
                &brk,
                &self.log.request_id,
                None,
            ));
        }
        outcome
    }

    /// The upstream failed before anything reached the client: the client gets an HTTP error,
    /// and the request is recorded with that status.
    fn fail_before_streaming(mut self, mut f: StreamFailure) -> Primed {
        if let Some(clean) = self.scrub.bytes(&f.body) {
            f.body = clean;
        }
        self.log.upstream_status =
            Some(crate::translate::upstream_error_to_openai(f.status, &f.body).status);
        self.close("upstream_failed");
        Primed::Failed(f)
    }

    /// The upstream ended or broke before anything reached the client: an HTTP error.
    fn broken_before_streaming(mut self, brk: StreamBreak, outcome: &'static str) -> Primed {
        let e = match &brk {
            StreamBreak::Transport(t) if t.is_timeout() => {
                ApiError::new(axum::http::StatusCode::GATEWAY_TIMEOUT, brk_text(&brk))
                    .with_code("upstream_timeout")
            }
            _ => ApiError::new(axum::http::StatusCode::BAD_GATEWAY, brk_text(&brk))
                .with_code(brk.code()),
        };
        self.log.upstream_status = Some(e.status.as_u16());
        self.close(outcome);
        Primed::Broken(e)
    }

    /// The upstream body ended (or broke) while streaming: flush, close.
    fn end_upstream(&mut self, out: &mut String, failure: Option<UpstreamError>) {
        let outcome = self.flush_upstream(out, failure);
        if let Some(brk) = self.pending_break.take() {
            // Streaming already started (the primed bytes were sent): the error chunk goes out.
            out.push_str(&error_frame(
                Route::ChatCompletions,
                &brk,
                &self.log.request_id,
                None,
            ));
        }
        self.close(outcome);
    }

    fn close(&mut self, outcome: &str) {
        if !self.done {
            self.done = true;
            if let (Some(cache), ChatTranslator::Responses(t)) =
                (&self.turn_cache, &mut self.translator)
                && let Some(turn) = t.take_turn()
            {
                keep_turn(cache, turn);
            }
            let sniffer = self.translator.sniffer().clone();
            self.log.finish_stream(&sniffer, outcome);
        }
    }

    /// Reads until the first client bytes exist, or the upstream failed first.
    pub async fn prime(mut self) -> Primed {
        let mut out = String::new();
        loop {
            match self.inner.next().await {
                Some(Ok(chunk)) => {
                    self.decoder.feed(&chunk, &mut self.events);
                    let failed_before = self.translator.failure().is_some();
                    self.translate(&mut out);
                    if !failed_before
                        && let Some(f) = self.translator.failure()
                        && out_is_only_failure(&out, &self.translator)
                    {
                        let f = f.clone();
                        return self.fail_before_streaming(f);
                    }
                    if !out.is_empty() {
                        if self.translator.is_closed() {
                            self.close(if self.translator.failure().is_some() {
                                "upstream_failed"
                            } else {
                                "complete"
                            });
                        }
                        self.log.first_byte();
                        return Primed::Streaming(Bytes::from(out), Box::new(self));
                    }
                }
                Some(Err(e)) => {
                    let outcome = self.flush_upstream(&mut out, Some(e));
                    return self.primed_end(out, outcome);
                }
                None => {
                    let outcome = self.flush_upstream(&mut out, None);
                    return self.primed_end(out, outcome);
                }
            }
        }
    }

    fn primed_end(mut self, out: String, outcome: &'static str) -> Primed {
        if let Some(brk) = self.pending_break.take() {
            return self.broken_before_streaming(brk, outcome);
        }
        match self.translator.failure() {
            // Nothing useful was produced before the failure: an HTTP error is clearer.
            Some(f) if out_is_only_failure(&out, &self.translator) => {
                let f = f.clone();
                self.fail_before_streaming(f)
            }
            _ => {
                self.close(outcome);
                self.log.first_byte();
                Primed::Streaming(Bytes::from(out), Box::new(self))
            }
        }
    }

    /// The rest of the stream after the primed bytes.
    pub fn into_stream(
        self,
        first: Bytes,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let first = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(first) });
        let rest = futures_util::stream::unfold(self, |mut st| async move {
            st.log.first_byte();
            if st.done {
                return None;
            }
            let mut out = String::new();
            loop {
                let next = if st.started {
                    match tokio::time::timeout(st.keepalive, st.inner.next()).await {
                        Ok(n) => n,
                        Err(_) => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st)),
                    }
                } else {
                    st.inner.next().await
                };
                match next {
                    Some(Ok(chunk)) => {
                        st.decoder.feed(&chunk, &mut st.events);
                        st.translate(&mut out);
                        if st.translator.is_closed() && !st.done {
                            let outcome = if st.translator.failure().is_some() {
                                "upstream_failed"
                            } else {
                                "complete"
                            };
                            st.close(outcome);
                        }
                        if !out.is_empty() {
                            return Some((Ok(Bytes::from(out)), st));
                        }
                        if st.done {
                            return None;
                        }
                    }
                    Some(Err(e)) => {
                        st.end_upstream(&mut out, Some(e));
                        return (!out.is_empty()).then(|| (Ok(Bytes::from(out)), st));
                    }
                    None => {
                        st.end_upstream(&mut out, None);
                        return (!out.is_empty()).then(|| (Ok(Bytes::from(out)), st));
                    }
                }
            }
        });
        first.chain(rest)
    }
}

/// Keeps a completed turn under each of its `call_id`s (one short map operation).
pub(super) fn keep_turn(cache: &ReasoningCache<Turn>, turn: Turn) {
    let keys = turn.call_ids().to_vec();
    let bytes = turn.bytes();
    cache.insert(&keys, Arc::new(turn), bytes, std::time::Instant::now());
}

/// Whether `out` holds nothing but the error frame of a failure (no client-visible progress).
fn out_is_only_failure(out: &str, translator: &ChatTranslator) -> bool {
    translator.failure().is_some()
        && out.matches("data: ").count() <= 1
        && out.contains("\"error\"")
}

impl Drop for Translated {
    fn drop(&mut self) {
        if !self.done {
            metrics::counter!(m::CLIENT_DISCONNECTS).increment(1);
            self.close("client_disconnected");
        }
    }
}

fn brk_text(brk: &StreamBreak) -> &'static str {
    match brk {
        StreamBreak::Truncated => {
            "the upstream closed the stream before sending anything (truncated)"
        }
        StreamBreak::Transport(e) if e.is_timeout() => {
            "the upstream sent nothing within the idle-read timeout (timeout)"
        }
        StreamBreak::Transport(_) => "the upstream connection failed (reset)",
    }
}
