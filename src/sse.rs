//! Incremental Server-Sent Events decoder over raw upstream bytes, and a tiny encoder.
//!
//! Every upstream stream (Anthropic Messages, OpenAI Responses, OpenAI Chat) arrives as a byte
//! stream cut at arbitrary places by the transport. [`Decoder`] turns those pieces into complete
//! [`Event`]s following the WHATWG `EventSource` parsing rules (HTML Living Standard, "Server-sent
//! events" § "Parsing an event stream" / "Interpreting an event stream"), which is what the
//! official SDK decoders implement and what translation.md §0 **G1** requires:
//!
//! - The body is treated as bytes. Lines end in `\n`, `\r\n` or a lone `\r`. A `\r` that is the
//!   last byte of one piece and a `\n` that is the first byte of the next piece form **one**
//!   terminator (no spurious empty line, hence no spurious dispatch).
//! - A blank line dispatches the pending event. `data:` lines of one event are joined with `\n`.
//!   One optional space after the colon is removed. Lines starting with `:` are comments.
//!   `event:` sets the name, `id:` the id (ignored if it contains U+0000), `retry:` the
//!   reconnection time (ASCII digits only, otherwise ignored; a value that does not fit `u64`
//!   is ignored too). Unknown fields are ignored. A line without a colon is a field name with
//!   an empty value (`data` alone adds an empty data line).
//! - An event with no `data` line is not dispatched, but the blank line still resets the event
//!   name (and this block's `id`/`retry` as reported on [`Event`]).
//! - One UTF-8 byte order mark at the very start of the stream is skipped.
//! - UTF-8 is decoded only on **complete lines**, never per piece: a CJK character or emoji split
//!   across two reads is reassembled (translation.md §7 row 10). Invalid UTF-8 is replaced by
//!   U+FFFD on that line only (the WHATWG decoder is lossy too).
//! - Events split across reads are buffered until complete (translation.md §7 row 11).
//!
//! Efficiency: complete lines are parsed straight out of the piece handed to [`Decoder::feed`];
//! only the unterminated tail of a piece is copied into an internal line buffer. That buffer
//! never holds a line terminator, so every byte is scanned (with `memchr`) exactly once, and a
//! line of any length costs linear time no matter how finely it is split. There is no line
//! length limit.
//!
//! End of stream: per WHATWG, a final event that is not followed by a blank line is discarded.
//! [`Decoder::finish`] does that by default and reports whether the stream ended cleanly on an
//! event boundary, which lets a caller detect a truncated upstream. A decoder built with
//! [`Decoder::with_dispatch_incomplete`]`(true)` dispatches that last event instead (useful for
//! accounting: usage that upstream did send should be counted).
//!
//! [`encode`] and [`encode_comment`] produce SSE text for the client side (translation.md §0 G2
//! and G7: when producing Anthropic SSE, always write the `event:` line).
//!
//! This module is pure: no I/O, no clocks, no globals.

use memchr::{memchr, memchr2};

/// The UTF-8 encoding of U+FEFF.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// After a line longer than this, the line buffer's allocation is released instead of kept.
const KEEP_LINE_CAPACITY: usize = 64 * 1024;

/// One dispatched server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, `None` when absent or empty (the event type is then `message`).
    pub event: Option<String>,
    /// All `data:` lines of the event joined with `\n` (no trailing newline).
    pub data: String,
    /// The `id:` field given inside this event's block, if any. Unlike WHATWG's persistent
    /// "last event ID", this is not carried over to later events; see
    /// [`Decoder::last_event_id`] for that value.
    pub id: Option<String>,
    /// A valid `retry:` field given inside this event's block, if any; see [`Decoder::retry`]
    /// for the stream-wide value.
    pub retry: Option<u64>,
}

impl Event {
    /// The event type: the `event:` field, or `"message"` when there was none.
    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// Whether this is the OpenAI Chat end-of-stream sentinel (`data: [DONE]`).
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Incremental SSE decoder. Feed it byte pieces in order with [`Decoder::feed`], then call
/// [`Decoder::finish`] at end of stream. See the module docs for the rules.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    /// Unterminated tail of the current line. Invariant (once the BOM check is done): never
    /// contains `\r` or `\n`, so it is never rescanned.
    line: Vec<u8>,
    /// The previous piece ended a line with `\r`: a leading `\n` of the next piece belongs to it.
    after_cr: bool,
    /// The leading-BOM check is over (until then `line` holds at most a BOM prefix).
    bom_done: bool,
    /// Dispatch a final event that lacks its blank line at [`Decoder::finish`].
    dispatch_incomplete: bool,

    // The event block being built.
    data: String,
    has_data: bool,
    event: String,
    block_id: Option<String>,
    block_retry: Option<u64>,
    /// A field line was seen since the last blank line.
    dirty: bool,

    // Stream-wide state (WHATWG "last event ID buffer" and "reconnection time").
    last_event_id: String,
    reconnection_time: Option<u64>,
}

impl Decoder {
    /// A decoder that follows WHATWG at end of stream (an unterminated final event is discarded).
    pub fn new() -> Self {
        Self::default()
    }

    /// Choose what [`Decoder::finish`] does with a final event that has no trailing blank line:
    /// `false` (the default, WHATWG) discards it, `true` dispatches it.
    #[must_use]
    pub fn with_dispatch_incomplete(mut self, dispatch_incomplete: bool) -> Self {
        self.dispatch_incomplete = dispatch_incomplete;
        self
    }

    /// Feed the next piece of upstream bytes; complete events are pushed to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Event>) {
        if !self.bom_done {
            let take = (BOM.len() - self.line.len()).min(chunk.len());
            self.line.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.line == BOM {
                self.line.clear();
                self.bom_done = true;
            } else if BOM.starts_with(&self.line) {
                // Still a strict prefix of the BOM: the whole piece was consumed; wait for more.
                return;
            } else {
                self.bom_done = true;
                let head = std::mem::take(&mut self.line);
                self.scan(&head, out);
            }
        }
        self.scan(chunk, out);
    }

    /// End of stream. Returns `true` if the stream ended cleanly on an event boundary: no
    /// unterminated line and no field line after the last blank line (an empty stream is
    /// clean). With [`Decoder::with_dispatch_incomplete`]`(true)` the pending event (including
    /// an unterminated last line) is dispatched to `out`; otherwise it is discarded.
    ///
    /// The decoder is then reset to a fresh stream (keeping the `dispatch_incomplete` choice).
    pub fn finish(&mut self, out: &mut Vec<Event>) -> bool {
        let clean = self.line.is_empty() && !self.dirty;
        if self.dispatch_incomplete {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out);
            }
            self.dispatch(out);
        }
        *self = Self::new().with_dispatch_incomplete(self.dispatch_incomplete);
        clean
    }

    /// The bytes that end the event the bytes fed so far are in the middle of, so that
    /// something written next (a comment, an error event) starts on an event boundary: `""`
    /// on a boundary, `"\n"` after a field line, `"\n\n"` inside a line. After a `\r` the
    /// first `\n` only completes the CRLF, hence one more. The unfinished event is then
    /// dispatched by the reader (possibly with incomplete data): bytes already sent cannot be
    /// taken back.
    pub fn pending_terminator(&self) -> &'static str {
        if !self.line.is_empty() {
            "\n\n"
        } else if self.dirty {
            if self.after_cr { "\n\n" } else { "\n" }
        } else {
            ""
        }
    }

    /// Bytes held for the event not yet complete (its unterminated line and its data so far):
    /// what a caller bounding memory adds to its own count.
    pub fn pending_len(&self) -> usize {
        self.line.len() + self.data.len()
    }

    /// Where the bytes fed so far end: `(inside a line, right after a `\r`)`.
    pub fn line_state(&self) -> (bool, bool) {
        (!self.line.is_empty(), self.after_cr)
    }

    /// WHATWG's "last event ID": the value of the most recent valid `id:` field on this stream
    /// (empty if none), persisting across events.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The most recent valid `retry:` value on this stream, including one sent in a block
    /// without data (which is not dispatched as an event).
    pub fn retry(&self) -> Option<u64> {
        self.reconnection_time
    }

    /// Split `input` into lines, continuing the buffered partial line.
    fn scan(&mut self, mut input: &[u8], out: &mut Vec<Event>) {
        while let Some(&first) = input.first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            let Some(end) = memchr2(b'\n', b'\r', input) else {
                self.line.extend_from_slice(input);
                return;
            };
            if self.line.is_empty() {
                self.process_line(&input[..end], out);
            } else {
                self.line.extend_from_slice(&input[..end]);
                let mut line = std::mem::take(&mut self.line);
                self.process_line(&line, out);
                if line.capacity() <= KEEP_LINE_CAPACITY {
                    line.clear();
                    self.line = line;
                }
            }
            self.after_cr = input[end] == b'\r';
            input = &input[end + 1..];
        }
    }

    /// Interpret one complete line (without its terminator).
    fn process_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        self.dirty = true;
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                push_lossy(&mut self.data, value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                push_lossy(&mut self.event, value);
            }
            // An id containing U+0000 is ignored.
            b"id" if !value.contains(&0) => {
                let mut id = String::new();
                push_lossy(&mut id, value);
                self.last_event_id.clone_from(&id);
                self.block_id = Some(id);
            }
            // ASCII digits only; a value too large for u64 is ignored as well.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let parsed = std::str::from_utf8(value)
                    .ok()
                    .and_then(|digits| digits.parse::<u64>().ok());
                if let Some(ms) = parsed {
                    self.block_retry = Some(ms);
                    self.reconnection_time = Some(ms);
                }
            }
            _ => {}
        }
    }

    /// Blank line: dispatch the pending event if it has data, and reset the block.
    fn dispatch(&mut self, out: &mut Vec<Event>) {
        self.dirty = false;
        let id = self.block_id.take();
        let retry = self.block_retry.take();
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(Event {
            event: (!event.is_empty()).then_some(event),
            data: std::mem::take(&mut self.data),
            id,
            retry,
        });
    }
}

/// Append `bytes` to `s`, replacing invalid UTF-8 with U+FFFD.
fn push_lossy(s: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => s.push_str(text),
        Err(_) => s.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// Split text at `\r\n`, `\r` or `\n` (the SSE line terminators). `"a\n"` gives `["a", ""]`.
fn sse_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr2(b'\n', b'\r', current.as_bytes()) {
            Some(end) => {
                let skip = if current[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[end + skip..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Encode one event as SSE text: `event: <name>\n` when `event` is a non-empty name, one
/// `data: <line>\n` per line of `data` (split at `\n`, `\r\n` or `\r`, so the decoder gets back
/// the same text with line breaks normalised to `\n`), then the blank line.
///
/// Line breaks inside the event name would break the framing; each is replaced by a space.
pub fn encode(event: Option<&str>, data: &str) -> String {
    let event = event.filter(|name| !name.is_empty());
    let mut s = String::with_capacity(data.len() + event.map_or(0, str::len) + 16);
    if let Some(name) = event {
        s.push_str("event: ");
        for (i, part) in sse_lines(name).enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(part);
        }
        s.push('\n');
    }
    for line in sse_lines(data) {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// Encode a comment (e.g. a keep-alive `: ping`), one `: <line>` per line of `text`, followed by
/// a blank line so that it flushes through buffering proxies. Send it only between events: the
/// blank line ends any event block in progress.
pub fn encode_comment(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 8);
    for line in sse_lines(text) {
        s.push(':');
        if !line.is_empty() {
            s.push(' ');
            s.push_str(line);
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeding the written bytes plus the terminator and then an event always dispatches that
    /// event intact.
    #[test]
    fn the_pending_terminator_puts_the_next_event_on_a_boundary() {
        let cases: [(&str, &str); 7] = [
            ("", ""),
            ("data: a\n\n", ""),
            ("data: a\n", "\n"),
            ("data: a\r", "\n\n"),
            ("data: {\"par", "\n\n"),
            ("event: x\r\n", "\n"),
            (": comment\n", ""),
        ];
        for (sent, want) in cases {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            d.feed(sent.as_bytes(), &mut out);
            assert_eq!(d.pending_terminator(), want, "{sent:?}");
            out.clear();
            d.feed(want.as_bytes(), &mut out);
            d.feed(b"event: error\ndata: {}\n\n", &mut out);
            let last = out.last().expect("an event");
            assert_eq!(
                (last.name(), last.data.as_str()),
                ("error", "{}"),
                "{sent:?}"
            );
        }
    }

    fn decode_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Event>, bool) {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        for piece in pieces {
            dec.feed(piece, &mut out);
        }
        let clean = dec.finish(&mut out);
        (out, clean)
    }

    fn decode(bytes: &[u8]) -> Vec<Event> {
        decode_pieces([bytes]).0
    }

    fn decode_bytewise(bytes: &[u8]) -> Vec<Event> {
        decode_pieces(bytes.chunks(1)).0
    }

    fn ev(name: Option<&str>, data: &str) -> Event {
        Event {
            event: name.map(str::to_owned),
            data: data.to_owned(),
            id: None,
            retry: None,
        }
    }

    #[test]
    fn lf_crlf_and_cr_endings_are_equivalent() {
        let want = vec![ev(Some("a"), "1\n2"), ev(None, "3")];
        for eol in ["\n", "\r\n", "\r"] {
            let text = format!("event: a{eol}data: 1{eol}data: 2{eol}{eol}data: 3{eol}{eol}");
            assert_eq!(decode(text.as_bytes()), want, "eol {eol:?}");
            assert_eq!(
                decode_bytewise(text.as_bytes()),
                want,
                "eol {eol:?} bytewise"
            );
        }
    }

    #[test]
    fn cr_at_piece_end_then_lf_is_one_terminator() {
        // If "\r" | "\n" were two terminators, the empty line between would dispatch "a" alone.
        let (events, clean) = decode_pieces([&b"data: a\r"[..], b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(events, vec![ev(None, "a\nb")]);
        assert!(clean);
    }

    #[test]
    fn lone_cr_followed_by_cr_is_a_blank_line() {
        assert_eq!(
            decode_pieces([&b"data: a\r"[..], b"\r"]).0,
            vec![ev(None, "a")]
        );
    }

    #[test]
    fn blank_line_dispatches_and_nothing_before_it() {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        dec.feed(b"data: x\n", &mut out);
        assert!(out.is_empty());
        dec.feed(b"\n", &mut out);
        assert_eq!(out, vec![ev(None, "x")]);
    }

    #[test]
    fn data_lines_are_joined_with_lf() {
        assert_eq!(
            decode(b"data: one\ndata: two\ndata:\ndata: four\n\n"),
            vec![ev(None, "one\ntwo\n\nfour")]
        );
    }

    #[test]
    fn only_one_space_after_colon_is_removed() {
        assert_eq!(
            decode(b"data:x\n\ndata:  two spaces\n\ndata:\ttab\n\n"),
            vec![ev(None, "x"), ev(None, " two spaces"), ev(None, "\ttab")]
        );
        assert_eq!(
            decode(b"event:  sp\ndata: d\n\n"),
            vec![ev(Some(" sp"), "d")]
        );
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(
            decode(b": hello\ndata: a\n:another: one\ndata: b\n\n:\n\n"),
            vec![ev(None, "a\nb")]
        );
        assert_eq!(decode(b": only a comment\n\n"), vec![]);
    }

    #[test]
    fn event_id_and_retry_fields() {
        let events = decode(b"event: delta\nid: 7\nretry: 1500\ndata: {}\n\n");
        assert_eq!(
            events,
            vec![Event {
                event: Some("delta".into()),
                data: "{}".into(),
                id: Some("7".into()),
                retry: Some(1500),
            }]
        );
        assert_eq!(events[0].name(), "delta");
    }

    #[test]
    fn retry_must_be_digits_only() {
        for bad in [
            "retry: 15s",
            "retry: -1",
            "retry: 1.5",
            "retry:",
            "retry: 99999999999999999999999",
        ] {
            let text = format!("{bad}\ndata: d\n\n");
            let mut dec = Decoder::new();
            let mut out = Vec::new();
            dec.feed(text.as_bytes(), &mut out);
            assert_eq!(out, vec![ev(None, "d")], "{bad}");
            assert_eq!(dec.retry(), None, "{bad}");
        }
    }

    #[test]
    fn retry_and_last_event_id_persist_on_the_stream() {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        dec.feed(
            b"retry: 3000\n\nid: e1\ndata: a\n\ndata: b\n\nid: bad\0id\ndata: c\n\n",
            &mut out,
        );
        assert_eq!(dec.retry(), Some(3000));
        assert_eq!(dec.last_event_id(), "e1");
        let ids: Vec<_> = out.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, vec![Some("e1".to_owned()), None, None]);
        assert!(out.iter().all(|e| e.retry.is_none()));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            decode(b"foo: bar\nDATA: upper\ndata : spaced\ndata: kept\n\n"),
            vec![ev(None, "kept")]
        );
    }

    #[test]
    fn line_without_colon_is_field_with_empty_value() {
        assert_eq!(decode(b"data\n\n"), vec![ev(None, "")]);
        assert_eq!(decode(b"data\ndata\n\n"), vec![ev(None, "\n")]);
        assert_eq!(decode(b"event: x\nevent\ndata: d\n\n"), vec![ev(None, "d")]);
        assert_eq!(decode(b"id\ndata: d\n\n")[0].id.as_deref(), Some(""));
    }

    #[test]
    fn event_without_data_is_not_dispatched_but_resets_name() {
        assert_eq!(
            decode(b"event: ping\nid: 3\n\ndata: after\n\n"),
            vec![ev(None, "after")]
        );
        assert_eq!(decode(b"event: ping\n\n"), vec![]);
    }

    #[test]
    fn leading_bom_is_skipped_once_even_when_split() {
        let text = b"\xEF\xBB\xBFdata: a\n\n";
        assert_eq!(decode(text), vec![ev(None, "a")]);
        assert_eq!(decode_bytewise(text), vec![ev(None, "a")]);
        // A second BOM is part of the field name (unknown field), so the line is ignored.
        assert_eq!(decode(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"), vec![]);
        // A BOM later in the stream is not special either.
        assert_eq!(
            decode(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"),
            vec![ev(None, "a")]
        );
        // A stream starting with a BOM prefix only is not eaten.
        assert_eq!(decode_bytewise(b"\xEFdata: a\n\n"), vec![]);
        assert_eq!(
            decode_bytewise(b"\xEF\xBB\ndata: a\n\n"),
            vec![ev(None, "a")]
        );
        assert_eq!(
            decode_pieces([&b"da"[..], b"ta: a\n\n"]).0,
            vec![ev(None, "a")]
        );
    }

    #[test]
    fn utf8_split_across_pieces_is_reassembled() {
        let text = "event: 名字\ndata: 你好🌍\n\n".as_bytes();
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(
                decode_pieces([a, b]).0,
                vec![ev(Some("名字"), "你好🌍")],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_on_that_line_only() {
        assert_eq!(
            decode(b"data: bad \xFF\xFE here\ndata: \xE4\xBD\xA0 ok\ndata: cut \xE4\xBD\n\n"),
            vec![ev(None, "bad \u{FFFD}\u{FFFD} here\n你 ok\ncut \u{FFFD}")]
        );
    }

    #[test]
    fn finish_reports_clean_end_and_discards_incomplete_event() {
        assert_eq!(decode_pieces([&b""[..]]), (vec![], true));
        assert_eq!(
            decode_pieces([&b"data: a\n\n"[..]]),
            (vec![ev(None, "a")], true)
        );
        assert_eq!(
            decode_pieces([&b"data: a\n\n: bye\n"[..]]),
            (vec![ev(None, "a")], true)
        );
        assert_eq!(
            decode_pieces([&b"data: a\n\ndata: b\n"[..]]),
            (vec![ev(None, "a")], false)
        );
        assert_eq!(
            decode_pieces([&b"data: a\n\ndata: b"[..]]),
            (vec![ev(None, "a")], false)
        );
        assert_eq!(
            decode_pieces([&b"data: a\n\nevent: x\n"[..]]),
            (vec![ev(None, "a")], false)
        );
        assert_eq!(decode_pieces([&b"\xEF\xBB"[..]]), (vec![], false));
        assert_eq!(decode_pieces([&b"\xEF\xBB\xBF"[..]]), (vec![], true));
    }

    #[test]
    fn finish_can_dispatch_incomplete_event() {
        let mut dec = Decoder::new().with_dispatch_incomplete(true);
        let mut out = Vec::new();
        dec.feed(b"data: a\n\nevent: last\ndata: b\ndata: c", &mut out);
        assert!(!dec.finish(&mut out));
        assert_eq!(out, vec![ev(None, "a"), ev(Some("last"), "b\nc")]);
        // Reset for a new stream, keeping the choice.
        out.clear();
        dec.feed(b"data: again", &mut out);
        assert!(!dec.finish(&mut out));
        assert_eq!(out, vec![ev(None, "again")]);
    }

    #[test]
    fn decoder_is_reusable_after_finish() {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        dec.feed(b"event: x\ndata: partial", &mut out);
        assert!(!dec.finish(&mut out));
        dec.feed(b"\xEF\xBB\xBFdata: fresh\n\n", &mut out);
        assert!(dec.finish(&mut out));
        assert_eq!(out, vec![ev(None, "fresh")]);
    }

    #[test]
    fn event_helpers() {
        assert_eq!(ev(None, "x").name(), "message");
        assert_eq!(ev(Some("ping"), "x").name(), "ping");
        assert!(ev(None, "[DONE]").is_done());
        assert!(!ev(None, "[DONE] ").is_done());
    }

    #[test]
    fn encode_formats() {
        assert_eq!(encode(None, "hi"), "data: hi\n\n");
        assert_eq!(encode(Some(""), "hi"), "data: hi\n\n");
        assert_eq!(
            encode(Some("message_stop"), "{\"type\":\"message_stop\"}"),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert_eq!(
            encode(None, "a\nb\r\nc\rd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encode(None, ""), "data: \n\n");
        assert_eq!(
            encode(Some("bad\nname"), "x"),
            "event: bad name\ndata: x\n\n"
        );
        assert_eq!(encode_comment("ping"), ": ping\n\n");
        assert_eq!(encode_comment(""), ":\n\n");
        assert_eq!(encode_comment("a\nb"), ": a\n: b\n\n");
    }

    #[test]
    fn encode_round_trips() {
        let cases = [
            (Some("content_block_delta"), "{\"text\":\"你好🌍\"}"),
            (None, "multi\nline\n\ntext\n"),
            (None, ""),
            (None, " leading space"),
            (Some(" spaced"), ":colon"),
        ];
        let mut text = encode_comment("keep-alive");
        for (name, data) in cases {
            text.push_str(&encode(name, data));
            text.push_str(&encode_comment("between"));
        }
        let want: Vec<Event> = cases.iter().map(|&(n, d)| ev(n, d)).collect();
        assert_eq!(decode_pieces([text.as_bytes()]), (want.clone(), true));
        assert_eq!(decode_bytewise(text.as_bytes()), want);
    }

    fn big_line() -> String {
        let unit = "你好🌍 data:x\u{7f}";
        let mut s = String::with_capacity((1 << 20) + unit.len());
        while s.len() < 1 << 20 {
            s.push_str(unit);
        }
        s
    }

    #[test]
    fn one_mebibyte_data_line() {
        let payload = big_line();
        let text = format!("event: big\ndata: {payload}\n\ndata: tail\n\n");
        let want = vec![ev(Some("big"), &payload), ev(None, "tail")];
        assert_eq!(decode(text.as_bytes()), want);
        // Odd-sized pieces land inside multi-byte characters.
        assert_eq!(decode_pieces(text.as_bytes().chunks(4093)).0, want);
        // One byte at a time: linear, because scanned bytes are never rescanned.
        assert_eq!(decode_bytewise(text.as_bytes()), want);
    }

    /// A fixed transcript with CJK and emoji, CRLF and LF, comments, split at every offset.
    const TRANSCRIPT: &str = concat!(
        ": upstream keep-alive\r\n",
        "event: message_start\r\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\r\n",
        "\r\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\n",
        "data: \"delta\":{\"type\":\"text_delta\",\"text\":\"你好🌍\"}}\n",
        "\n",
        ": ping\r",
        "\r",
        "event: message_stop\r",
        "id: 你好🌍\r",
        "data: {\"type\":\"message_stop\"}\r",
        "\r",
        "data: [DONE]\n\n",
    );

    #[test]
    fn fixed_transcript_split_at_every_offset() {
        let bytes = TRANSCRIPT.as_bytes();
        let (reference, clean) = decode_pieces([bytes]);
        assert!(clean);
        assert_eq!(reference.len(), 4);
        assert_eq!(reference[1].name(), "content_block_delta");
        assert!(reference[1].data.contains("\"text\":\"你好🌍\""));
        assert_eq!(reference[2].id.as_deref(), Some("你好🌍"));
        assert!(reference[3].is_done());
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                decode_pieces([a, b]),
                (reference.clone(), true),
                "cut at {cut}"
            );
        }
        assert_eq!(decode_bytewise(bytes), reference);
    }

    /// One generated event block for the property test.
    #[derive(Debug, Clone)]
    struct Block {
        comment: Option<String>,
        name: Option<String>,
        id: Option<String>,
        data: Vec<String>,
        unknown_field: bool,
        /// Per-line choice of terminator: 0 = LF, 1 = CRLF, 2 = CR.
        eols: Vec<u8>,
        /// Write `data:value` (no space) where that is unambiguous.
        tight: bool,
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 :{}\"\\\\,.é你好世界🌍😀\u{FEFF}]{0,12}"
    }

    fn block() -> impl Strategy<Value = Block> {
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..4),
            any::<bool>(),
            proptest::collection::vec(0u8..3, 1..8),
            any::<bool>(),
        )
            .prop_map(
                |(comment, name, id, data, unknown_field, eols, tight)| Block {
                    comment,
                    name,
                    id,
                    data,
                    unknown_field,
                    eols,
                    tight,
                },
            )
    }

    /// Serialize blocks with mixed terminators; returns the bytes and the expected events.
    fn render(blocks: &[Block], bom: bool) -> (Vec<u8>, Vec<Event>) {
        let mut out = String::new();
        if bom {
            out.push('\u{FEFF}');
        }
        let mut prev_cr = false;
        let mut want = Vec::new();
        for b in blocks {
            let mut lines = Vec::new();
            if let Some(c) = &b.comment {
                lines.push(format!(":{c}"));
            }
            if let Some(n) = &b.name {
                lines.push(format!("event: {n}"));
            }
            if b.unknown_field {
                lines.push("x-unknown: ignored".to_owned());
            }
            for d in &b.data {
                if b.tight && !d.starts_with(' ') {
                    lines.push(format!("data:{d}"));
                } else {
                    lines.push(format!("data: {d}"));
                }
            }
            if let Some(i) = &b.id {
                lines.push(format!("id: {i}"));
            }
            lines.push(String::new());
            for (k, line) in lines.iter().enumerate() {
                let mut eol = ["\n", "\r\n", "\r"][usize::from(b.eols[k % b.eols.len()])];
                // An empty line after a lone CR must not start with LF (it would merge into CRLF).
                if line.is_empty() && prev_cr {
                    eol = "\r";
                }
                out.push_str(line);
                out.push_str(eol);
                prev_cr = eol == "\r";
            }
            if !b.data.is_empty() {
                want.push(Event {
                    event: b.name.clone().filter(|n| !n.is_empty()),
                    data: b.data.join("\n"),
                    id: b.id.clone(),
                    retry: None,
                });
            }
        }
        (out.into_bytes(), want)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_split_decodes_the_same(
            blocks in proptest::collection::vec(block(), 0..8),
            bom in any::<bool>(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
        ) {
            let (bytes, want) = render(&blocks, bom);
            // U+FEFF only ever appears inside values, never first on the stream, so only the
            // generated BOM is stripped.
            let (whole, clean) = decode_pieces([bytes.as_slice()]);
            prop_assert!(clean);
            prop_assert_eq!(&whole, &want);

            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut pieces = Vec::new();
            let mut start = 0;
            for p in points {
                pieces.push(&bytes[start..p]);
                start = p;
            }
            pieces.push(&bytes[start..]);
            let (split, clean) = decode_pieces(pieces);
            prop_assert!(clean);
            prop_assert_eq!(&split, &want);
            prop_assert_eq!(decode_bytewise(&bytes), want);
        }
    }
}
