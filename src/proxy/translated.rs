//! Chat Completions streams translated from an Anthropic or Responses upstream stream.
//!
//! Upstream bytes are decoded by our SSE decoder and translated event by event; each batch of
//! client frames leaves as soon as it exists. Nothing is committed to the client until the first
//! upstream event has been read (`translation.md` G3): an upstream that fails first (an `error`
//! event, `response.failed`, or a stream that ends empty) still gets a proper HTTP error. Once
//! streaming, every `timing.sse_keepalive_s` of upstream silence sends an SSE comment so proxies
//! and clients do not time out during long thinking.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use super::stream::RequestLog;
use crate::sse::{Decoder, Event};
use crate::telemetry::metrics as m;
use crate::translate::StreamFailure;
use crate::translate::anthropic_chat::AnthropicToChat;
use crate::translate::responses_chat::ResponsesToChat;
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

    fn finish(&mut self, out: &mut String) {
        match self {
            ChatTranslator::Anthropic(t) => t.finish(out),
            ChatTranslator::Responses(t) => t.finish(out),
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
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: Decoder,
    events: Vec<Event>,
    translator: ChatTranslator,
    log: RequestLog,
    keepalive: Duration,
    /// The first upstream event has arrived (keep-alives start).
    started: bool,
    /// Nothing more will be sent.
    done: bool,
}

/// How the first read of a translated stream went.
pub enum Primed {
    /// Client frames are ready: stream them, starting with these bytes.
    Streaming(Bytes, Box<Translated>),
    /// The upstream failed before anything was produced for the client: answer with an error.
    Failed(StreamFailure),
}

impl Translated {
    pub fn new(
        resp: reqwest::Response,
        translator: ChatTranslator,
        log: RequestLog,
        keepalive: Duration,
    ) -> Self {
        Translated {
            inner: Box::pin(resp.bytes_stream()),
            decoder: Decoder::new(),
            events: Vec::new(),
            translator,
            log,
            keepalive,
            started: false,
            done: false,
        }
    }

    /// Feeds decoded events; returns the client bytes they produced.
    fn translate(&mut self, out: &mut String) {
        for ev in std::mem::take(&mut self.events) {
            self.started = true;
            if self.translator.is_closed() {
                break;
            }
            self.translator.on_event(&ev, out);
        }
    }

    /// The upstream body ended (or broke): flush, let the translator close the stream.
    fn end_upstream(&mut self, out: &mut String, broken: Option<String>) {
        let outcome = self.flush_upstream(out, broken);
        self.close(outcome);
    }

    /// The upstream body ended (or broke): flush the decoder and let the translator finish.
    /// Returns the outcome to close with.
    fn flush_upstream(&mut self, out: &mut String, broken: Option<String>) -> &'static str {
        self.decoder.finish(&mut self.events);
        self.translate(out);
        if !self.translator.is_closed() {
            self.translator.finish(out);
        }
        if let Some(e) = &broken {
            metrics::counter!(m::UPSTREAM_ERRORS, "status" => "stream").increment(1);
            tracing::warn!(request_id = %self.log.request_id, error = %e, "upstream stream failed");
        }
        match (&broken, self.translator.failure()) {
            (Some(_), _) => "upstream_error",
            (None, Some(_)) => "upstream_failed",
            (None, None) => "complete",
        }
    }

    /// The upstream failed before anything reached the client: the client gets an HTTP error,
    /// and the request is recorded with that status.
    fn fail_before_streaming(mut self, f: StreamFailure) -> Primed {
        self.log.upstream_status =
            Some(crate::translate::upstream_error_to_openai(f.status, &f.body).status);
        self.close("upstream_failed");
        Primed::Failed(f)
    }

    fn close(&mut self, outcome: &str) {
        if !self.done {
            self.done = true;
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
                    let e = e.without_url().to_string();
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
                        if st.translator.is_closed() {
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
                        let e = e.without_url().to_string();
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
