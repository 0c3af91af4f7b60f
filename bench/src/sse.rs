//! A small SSE scanner for the stream client: finds event boundaries in bytes split anywhere and
//! says, per event, how many content deltas it carried (the mock's marker, counted on lines that
//! hold a `delta`, in whatever format the gateway translated them into), whether it was the
//! stream's terminal event and whether it was an error.

use memchr::memmem;

/// The marker the bench mock puts in every content delta.
pub const MARKER: &[u8] = b"Zq";

/// What one complete event carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event {
    /// Content deltas in this event.
    pub deltas: u32,
    /// `message_stop`, `response.completed` or `[DONE]`.
    pub terminal: bool,
    /// An error event (`event: error`, `{"type":"error"…}` or `{"error":…}`).
    pub error: bool,
}

#[derive(Debug, Default)]
pub struct Scanner {
    buf: Vec<u8>,
    current: Event,
    lines_in_event: u32,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memmem::find(hay, needle).is_some()
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `on_event` for every event they complete.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[start..]) {
            let end = start + nl;
            let mut line = &self.buf[start..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.lines_in_event > 0 {
                    on_event(self.current);
                }
                self.current = Event::default();
                self.lines_in_event = 0;
            } else {
                self.lines_in_event += 1;
                if contains(line, b"delta") {
                    let n = memmem::find_iter(line, MARKER).count();
                    self.current.deltas += u32::try_from(n).unwrap_or(u32::MAX);
                }
                if contains(line, b"message_stop")
                    || contains(line, b"response.completed")
                    || line == b"data: [DONE]"
                {
                    self.current.terminal = true;
                }
                if line == b"event: error"
                    || contains(line, br#"{"type":"error""#)
                    || line.starts_with(br#"data: {"error""#)
                {
                    self.current.error = true;
                }
            }
            start = end + 1;
        }
        self.buf.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(text: &str, piece: usize) -> Vec<Event> {
        let mut s = Scanner::new();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            s.feed(chunk, |e| out.push(e));
        }
        out
    }

    const ANTHROPIC: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Zq0001 lorem \"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Zq0002 lorem Zq0003 lorem \"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn counts_deltas_and_the_terminal_event_whatever_the_split() {
        for piece in [1, 2, 3, 7, 64, 10_000] {
            let ev = scan_in_pieces(ANTHROPIC, piece);
            assert_eq!(ev.len(), 5, "piece {piece}");
            let deltas: Vec<u32> = ev.iter().map(|e| e.deltas).collect();
            assert_eq!(deltas, vec![0, 1, 2, 0, 0]);
            assert_eq!(ev.iter().filter(|e| e.terminal).count(), 1);
            assert!(ev[4].terminal && !ev.iter().any(|e| e.error));
        }
    }

    #[test]
    fn crlf_chat_chunks_done_and_text_repeated_outside_deltas() {
        let chat = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n\
data: {\"choices\":[{\"delta\":{\"content\":\"Zq0001 lorem \"}}]}\r\n\r\n\
data: [DONE]\r\n\r\n";
        let ev = scan_in_pieces(chat, 5);
        assert_eq!(ev.iter().map(|e| e.deltas).sum::<u32>(), 1);
        assert!(ev[2].terminal);
        // Responses repeats the whole text in its `done` events: not counted again.
        let responses = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Zq0001 lorem \"}\n\n\
event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"Zq0001 lorem \"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"text\":\"Zq0001 lorem \"}]}}\n\n";
        let ev = scan_in_pieces(responses, 3);
        assert_eq!(
            ev.iter().map(|e| e.deltas).collect::<Vec<_>>(),
            vec![1, 0, 0]
        );
        assert!(ev[2].terminal && !ev[1].terminal);
    }

    #[test]
    fn error_events_and_incomplete_tails() {
        let text = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n\n\
data: {\"error\":{\"message\":\"upstream stream broke\"}}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"Zq9 \"}}]}";
        let ev = scan_in_pieces(text, 4);
        assert_eq!(ev.len(), 2, "the unterminated last event is not reported");
        assert!(ev[0].error && ev[1].error);
        // Comments and blank lines alone are not events.
        assert!(
            scan_in_pieces(": keep-alive\n\n\n\n", 1)
                .iter()
                .all(|e| e.deltas == 0)
        );
    }
}
