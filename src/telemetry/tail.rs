//! The live log tail behind `GET /admin/logs/stream` (contract §11).
//!
//! The console log writer's thread hands each batch it has just written to [`LogTail::publish`]
//! (off the request path: a request only ever copies its line into the batch buffer). The tail
//! keeps the last [`HISTORY`] lines for a console that connects later and broadcasts new ones
//! to the connected consoles; a console that falls more than [`BACKLOG`] lines behind is told
//! how many it missed instead of slowing anything down. Lines are kept as written (terminal
//! colour codes removed); the admin handler masks secrets before a line leaves the process.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;

/// Lines kept for a console that connects later.
pub const HISTORY: usize = 500;
/// Lines a connected console may fall behind before it skips.
pub const BACKLOG: usize = 1024;

/// The tail of the process's log.
#[derive(Debug)]
pub struct LogTail {
    history: Mutex<VecDeque<Arc<str>>>,
    live: broadcast::Sender<Arc<str>>,
}

impl Default for LogTail {
    fn default() -> Self {
        LogTail {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: broadcast::channel(BACKLOG).0,
        }
    }
}

/// The process's log tail (one per process, as the log itself).
pub fn tail() -> &'static LogTail {
    static TAIL: OnceLock<LogTail> = OnceLock::new();
    TAIL.get_or_init(LogTail::default)
}

/// `line` without ANSI escape sequences (`ESC [ … final byte`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

impl LogTail {
    /// Takes a batch of complete log lines as the log writer wrote them.
    pub fn publish(&self, batch: &[u8]) {
        let text = String::from_utf8_lossy(batch);
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: Arc<str> = if line.contains('\u{1b}') {
                strip_ansi(line).into()
            } else {
                line.into()
            };
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(Arc::clone(&line));
            // No console connected is not an error.
            let _ = self.live.send(line);
        }
    }

    /// The lines kept so far (oldest first).
    pub fn history(&self) -> Vec<Arc<str>> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.iter().cloned().collect()
    }

    /// Forgets the lines kept so far (consoles connected now keep what they have); the number
    /// forgotten.
    pub fn clear(&self) -> usize {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let n = history.len();
        history.clear();
        n
    }

    /// The lines kept so far and a receiver of every later one (taken together, so that no
    /// line is lost or repeated between them).
    pub fn subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (history.iter().cloned().collect(), self.live.subscribe())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_broadcast_and_bounded() {
        let t = LogTail::default();
        t.publish(b"first line\nsecond line\n");
        let (history, mut rx) = t.subscribe();
        assert_eq!(history.len(), 2);
        assert_eq!(&*history[1], "second line");
        t.publish(b"\x1b[2m2026-12-06T00:00:00Z\x1b[0m \x1b[32m INFO\x1b[0m third\n\n");
        assert_eq!(&*rx.try_recv().unwrap(), "2026-12-06T00:00:00Z  INFO third");
        let n = BACKLOG + 10;
        for i in 0..n {
            t.publish(format!("line {i}\n").as_bytes());
        }
        let (history, _) = t.subscribe();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(&*history[HISTORY - 1], format!("line {}", n - 1));
        // The slow receiver learns how many it missed.
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
