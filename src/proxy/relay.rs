//! Relaying a pass-through upstream stream (`/v1/messages`, `/v1/responses`, common-type
//! `/v1/chat/completions`) to the client.
//!
//! - **Zero-copy:** each upstream piece goes out as it came; a tap (our SSE decoder and the
//!   usage sniffer) reads the same bytes alongside. Nothing is buffered, with one exception:
//!   the bytes of an event holding the JSON token `"error"` (every error event has it before
//!   any message text) are held back from the piece where the token appears until that event
//!   is complete, so that an error event echoing a credential can be scrubbed before it
//!   leaves. Complete events before it leave at once. Only held bytes that came with an error
//!   event are rewritten; normal deltas never are.
//! - **Keep-alives:** after `timing.sse_keepalive_s` without a byte to the client, a
//!   `: keep-alive` comment, but only on an event boundary (never inside a partly forwarded
//!   event).
//! - **Failures (contract §10):** an upstream that ends without its terminal event, breaks, or
//!   stays silent past the idle-read timeout gets the route's error frame (first completing
//!   whatever partial line/event was forwarded), then a clean end of the body. An error the
//!   upstream sent itself is terminal: relayed, and nothing is added.
//! - Common-type chat streams whose client did not ask for usage are re-emitted event by event
//!   without the usage-only chunk the gateway asked for itself.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream::BoxStream;
use tokio::time::{Instant, Sleep};

use super::Route;
use super::Scrub;
use super::failure::{StreamBreak, error_frame};
use super::stream::RequestLog;
use crate::sse::{self, Decoder, Event};
use crate::telemetry::metrics as m;
use crate::translate::passthrough::is_usage_only_chunk;
use crate::upstream::UpstreamError;
use crate::usage::{UsageSniffer, WireFormat};

/// The token that precedes the message of every error event of the three formats.
const ERROR_MARKER: &[u8] = b"\"error\"";
/// Held bytes are let go past this size even without an event boundary (scrubbed if an error
/// event was seen).
const MAX_HELD: usize = 1024 * 1024;
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Decodes the forwarded bytes and sniffs usage, the terminal event and Responses'
/// `sequence_number`.
struct Tap {
    decoder: Decoder,
    sniffer: UsageSniffer,
    events: Vec<Event>,
    format: WireFormat,
    last_sequence: Option<u64>,
}

impl Tap {
    fn new(format: WireFormat) -> Self {
        Tap {
            // Usage that upstream did send in a last, unterminated event still counts.
            decoder: Decoder::new().with_dispatch_incomplete(true),
            sniffer: UsageSniffer::new(format),
            events: Vec::new(),
            format,
            last_sequence: None,
        }
    }

    /// Pass-through: decode and sniff, the events are not needed afterwards.
    fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes, &mut self.events);
        self.sniff();
        self.events.clear();
    }

    fn finish(&mut self) {
        self.decoder.finish(&mut self.events);
        self.sniff();
        self.events.clear();
    }

    /// Looks at the decoded events (kept for `reencode` in drop-usage mode, else dropped).
    fn sniff(&mut self) {
        for ev in &self.events {
            self.sniffer.on_event(ev);
            if self.format == WireFormat::Responses
                && let Some(n) = sequence_number(&ev.data)
            {
                self.last_sequence = Some(self.last_sequence.map_or(n, |l| l.max(n)));
            }
        }
    }

    /// The upstream sent its terminal event (or an error, which is terminal too).
    fn terminal(&self) -> bool {
        self.sniffer.completed() || self.sniffer.errored()
    }
}

/// `"sequence_number":N` of a Responses event, without parsing the JSON again.
fn sequence_number(data: &str) -> Option<u64> {
    const KEY: &str = "\"sequence_number\":";
    let at = data.find(KEY)? + KEY.len();
    let digits: &str = data[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Bytes held back: the open event that holds an error marker (see the module docs).
struct Held {
    buf: BytesMut,
    /// Line state at the end of `buf` (as the SSE decoder counts lines).
    after_cr: bool,
    in_line: bool,
    /// Offset just past the last blank line in `buf`.
    last_boundary: Option<usize>,
    /// Offset of the last marker in `buf` (0 for one that began in the previous piece).
    last_marker: usize,
}

impl Held {
    /// Appends a piece and notes where its blank lines end.
    fn push(&mut self, piece: &[u8]) {
        let base = self.buf.len();
        self.buf.extend_from_slice(piece);
        for (i, &b) in piece.iter().enumerate() {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            if b == b'\n' || b == b'\r' {
                if !self.in_line {
                    self.last_boundary = Some(base + i + 1);
                }
                self.in_line = false;
                self.after_cr = b == b'\r';
            } else {
                self.in_line = true;
            }
        }
    }
}

enum Mode {
    /// Bytes go out exactly as they came.
    Passthrough {
        /// Bytes held back (see the module docs).
        held: Option<Held>,
        /// The last bytes of the previous piece (a marker split across two pieces).
        tail: Vec<u8>,
    },
    /// Events re-emitted one by one without the usage-only chunk.
    DropUsageChunk,
}

/// The relay stream given to the client's response body.
pub struct Relay {
    inner: BoxStream<'static, Result<Bytes, UpstreamError>>,
    mode: Mode,
    tap: Tap,
    route: Route,
    log: RequestLog,
    scrub: Scrub,
    keepalive: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    /// The last bytes of the body (the end of a stream), sent before it closes.
    last: Option<Bytes>,
    /// The upstream side is over; once `last` is sent, the body ends.
    ended: bool,
    /// The log record was closed.
    closed: bool,
}

/// Starts relaying an upstream streaming response.
pub(super) fn relay(
    body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    route: Route,
    format: WireFormat,
    drop_usage_chunk: bool,
    log: RequestLog,
    scrub: Scrub,
    keepalive: Duration,
) -> Relay {
    let mode = if drop_usage_chunk {
        Mode::DropUsageChunk
    } else {
        Mode::Passthrough {
            held: None,
            tail: Vec::new(),
        }
    };
    let keepalive = (!keepalive.is_zero()).then_some(keepalive);
    let first = keepalive.unwrap_or(Duration::from_secs(3600));
    Relay {
        inner: body,
        mode,
        tap: Tap::new(format),
        route,
        log,
        scrub,
        keepalive,
        timer: Box::pin(tokio::time::sleep(first)),
        last: None,
        ended: false,
        closed: false,
    }
}

/// Whether `chunk` (after `tail`, the end of the previous piece) holds the error marker.
fn has_marker(tail: &[u8], chunk: &[u8]) -> bool {
    if memchr::memmem::find(chunk, ERROR_MARKER).is_some() {
        return true;
    }
    if tail.is_empty() {
        return false;
    }
    let mut joined = Vec::with_capacity(tail.len() + ERROR_MARKER.len());
    joined.extend_from_slice(tail);
    joined.extend_from_slice(&chunk[..chunk.len().min(ERROR_MARKER.len() - 1)]);
    memchr::memmem::find(&joined, ERROR_MARKER).is_some()
}

impl Relay {
    /// Bytes held back, let go (scrubbed when an error event was among them).
    fn release(&mut self, held: BytesMut) -> Bytes {
        if self.tap.sniffer.errored()
            && let Some(clean) = self.scrub.bytes(&held)
        {
            return Bytes::from(clean);
        }
        held.freeze()
    }

    /// Processes one upstream piece; returns the bytes for the client (maybe empty).
    fn process(&mut self, chunk: Bytes) -> Bytes {
        match &mut self.mode {
            Mode::Passthrough { held, tail } => {
                let in_piece = memchr::memmem::rfind(&chunk, ERROR_MARKER);
                let marker = in_piece.is_some() || has_marker(tail, &chunk);
                tail.clear();
                let keep = chunk.len().min(ERROR_MARKER.len() - 1);
                tail.extend_from_slice(&chunk[chunk.len() - keep..]);
                let (in_line, after_cr) = self.tap.decoder.line_state();
                self.tap.feed(&chunk);
                if held.is_none() && !marker {
                    return chunk;
                }
                let h = held.get_or_insert_with(|| Held {
                    buf: BytesMut::new(),
                    after_cr,
                    in_line,
                    last_boundary: None,
                    last_marker: 0,
                });
                let base = h.buf.len();
                h.push(&chunk);
                if marker {
                    h.last_marker = base + in_piece.unwrap_or(0);
                }
                let out = match h.last_boundary {
                    // The marked event is complete: everything goes.
                    Some(b) if b > h.last_marker || h.buf.len() > MAX_HELD => {
                        let all = std::mem::take(&mut h.buf);
                        *held = None;
                        all
                    }
                    // Complete events before the marked one go; the marked one waits.
                    Some(b) => {
                        let done = h.buf.split_to(b);
                        h.last_marker -= b;
                        h.last_boundary = None;
                        done
                    }
                    None if h.buf.len() > MAX_HELD => {
                        let all = std::mem::take(&mut h.buf);
                        *held = None;
                        all
                    }
                    None => return Bytes::new(),
                };
                self.release(out)
            }
            Mode::DropUsageChunk => {
                self.tap.decoder.feed(&chunk, &mut self.tap.events);
                self.tap.sniff();
                self.reencode()
            }
        }
    }

    /// Drop-usage mode: the decoded events, re-encoded without the usage-only chunk.
    fn reencode(&mut self) -> Bytes {
        let mut out = String::new();
        for ev in self.tap.events.drain(..) {
            if is_usage_only_chunk(&ev.data) {
                continue;
            }
            let frame = sse::encode(ev.event.as_deref(), &ev.data);
            if frame.contains("\"error\"") {
                out.push_str(&self.scrub.text(frame));
            } else {
                out.push_str(&frame);
            }
        }
        Bytes::from(out)
    }

    /// The upstream body ended (`failure` = the transport failure, if any): what is left to
    /// send.
    fn finish_upstream(&mut self, failure: Option<UpstreamError>) {
        self.ended = true;
        let terminator = self.tap.decoder.pending_terminator();
        let mut out = BytesMut::new();
        match &mut self.mode {
            Mode::Passthrough { held, .. } => {
                let held = held.take();
                self.tap.finish();
                if let Some(h) = held {
                    let b = self.release(h.buf);
                    out.extend_from_slice(&b);
                }
                out.extend_from_slice(terminator.as_bytes());
            }
            Mode::DropUsageChunk => {
                self.tap.decoder.finish(&mut self.tap.events);
                self.tap.sniff();
                out.extend_from_slice(&self.reencode());
            }
        }
        let outcome = if self.tap.terminal() {
            if self.tap.sniffer.errored() {
                "upstream_failed"
            } else {
                "complete"
            }
        } else {
            let brk = match failure {
                Some(e) => StreamBreak::Transport(e),
                None => StreamBreak::Truncated,
            };
            brk.report(&self.log.request_id);
            let next = self.tap.last_sequence.map(|n| n + 1);
            out.extend_from_slice(
                error_frame(self.route, &brk, &self.log.request_id, next).as_bytes(),
            );
            brk.outcome()
        };
        if !out.is_empty() {
            self.last = Some(out.freeze());
        }
        self.close(outcome);
    }

    fn close(&mut self, outcome: &str) {
        if !self.closed {
            self.closed = true;
            let sniffer = self.tap.sniffer.clone();
            self.log.finish_stream(&sniffer, outcome);
        }
    }

    /// Whether a comment may be written now: on an event boundary, nothing held.
    fn on_boundary(&self) -> bool {
        match &self.mode {
            Mode::Passthrough { held, .. } => {
                held.is_none() && self.tap.decoder.pending_terminator().is_empty()
            }
            Mode::DropUsageChunk => true,
        }
    }

    fn rearm(&mut self) {
        if let Some(k) = self.keepalive {
            self.timer.as_mut().reset(Instant::now() + k);
        }
    }

    fn sent(&mut self, bytes: Bytes) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.log.first_byte();
        self.rearm();
        Poll::Ready(Some(Ok(bytes)))
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.ended {
                return match self.last.take() {
                    Some(b) => self.sent(b),
                    None => Poll::Ready(None),
                };
            }
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.process(chunk);
                    if !out.is_empty() {
                        return self.sent(out);
                    }
                }
                Poll::Ready(Some(Err(e))) => self.finish_upstream(Some(e)),
                Poll::Ready(None) => self.finish_upstream(None),
                Poll::Pending => {
                    if self.keepalive.is_none() || self.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if self.on_boundary() {
                        return self.sent(Bytes::from_static(KEEP_ALIVE));
                    }
                    // Inside an event: wait another period (the timer is polled again below).
                    self.rearm();
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.closed {
            // The client went away: dropping `inner` closes the upstream stream.
            metrics::counter!(m::CLIENT_DISCONNECTS).increment(1);
            self.close("client_disconnected");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(pieces: &[&str]) -> Held {
        let mut h = Held {
            buf: BytesMut::new(),
            after_cr: false,
            in_line: false,
            last_boundary: None,
            last_marker: 0,
        };
        for p in pieces {
            h.push(p.as_bytes());
        }
        h
    }

    #[test]
    fn held_bytes_know_their_last_event_boundary() {
        assert_eq!(held(&["data: a\n\nda"]).last_boundary, Some(9));
        assert_eq!(held(&["data: a\r", "\n\r\nx"]).last_boundary, Some(10));
        assert_eq!(held(&["data: a\r", "\r"]).last_boundary, Some(9));
        assert_eq!(held(&["data: a\n", "data: b\n"]).last_boundary, None);
        assert_eq!(held(&["a\n", "\n", "b\n\n"]).last_boundary, Some(6));
    }

    #[test]
    fn sequence_numbers_and_markers() {
        assert_eq!(
            sequence_number(r#"{"type":"x","sequence_number": 17,"a":1}"#),
            Some(17)
        );
        assert_eq!(sequence_number(r#"{"type":"x"}"#), None);
        assert!(has_marker(b"", br#"{"error":{"#));
        assert!(has_marker(br#"{"err"#, br#"or":1}"#));
        assert!(!has_marker(b"", br#"{"text":"an error here"}"#));
        assert!(!has_marker(b"", br#"{"partial_json":"{\"error\":1}"}"#));
    }
}
