//! A lossy, batching log writer.
//!
//! A formatted line is appended to a shared buffer under a short lock; one background thread
//! writes the buffer out once its oldest line has waited [`FLUSH_INTERVAL`], or at once when it
//! holds [`BATCH_BYTES`]. So logging a line costs a request a copy, never a system call and never
//! a thread wake-up per line (the writer is woken once per batch). When the buffer already holds
//! [`MAX_BUFFERED_BYTES`] (the sink is stuck: a full pipe, a slow disk), new lines are dropped and
//! counted, never waited for. Dropping the [`BatchGuard`] writes out what is left and stops the
//! thread.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How long a line waits for company before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A batch this large is written at once.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Bytes buffered at most; beyond, lines are dropped and counted.
pub const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;

struct State {
    buf: Vec<u8>,
    /// When the oldest buffered line arrived.
    since: Option<Instant>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
    interval: Duration,
    max_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, line: &[u8]) {
        let mut st = self.lock();
        if st.closed || st.buf.len().saturating_add(line.len()) > self.max_bytes {
            drop(st);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = st.buf.len();
        st.buf.extend_from_slice(line);
        let wake = if before == 0 {
            st.since = Some(Instant::now());
            true
        } else {
            before < BATCH_BYTES && st.buf.len() >= BATCH_BYTES
        };
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits until a batch is due (or the writer closes) and takes it into `out`. False once
    /// closed and empty.
    fn take(&self, out: &mut Vec<u8>) -> bool {
        let mut st = self.lock();
        loop {
            if st.closed {
                break;
            }
            match st.since {
                None => st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(since) => {
                    let due = since + self.interval;
                    let now = Instant::now();
                    if now >= due || st.buf.len() >= BATCH_BYTES {
                        break;
                    }
                    st = self
                        .wake
                        .wait_timeout(st, due - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
        st.since = None;
        std::mem::swap(&mut st.buf, out);
        !(st.closed && out.is_empty())
    }
}

/// The writer handed to `tracing_subscriber::fmt` (cheap to clone).
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("dropped", &self.dropped_lines())
            .finish()
    }
}

impl BatchWriter {
    /// Starts the background thread `name` writing batches to `sink`.
    pub fn spawn(
        name: &str,
        sink: impl Write + Send + 'static,
    ) -> io::Result<(BatchWriter, BatchGuard)> {
        Self::spawn_with(name, sink, FLUSH_INTERVAL, MAX_BUFFERED_BYTES, None)
    }

    /// [`BatchWriter::spawn`], and every batch, once written, is also handed to `tee` (on the
    /// writer's thread: the console log feeds the live tail this way).
    pub fn spawn_tee(
        name: &str,
        sink: impl Write + Send + 'static,
        tee: fn(&[u8]),
    ) -> io::Result<(BatchWriter, BatchGuard)> {
        Self::spawn_with(name, sink, FLUSH_INTERVAL, MAX_BUFFERED_BYTES, Some(tee))
    }

    fn spawn_with(
        name: &str,
        mut sink: impl Write + Send + 'static,
        interval: Duration,
        max_bytes: usize,
        tee: Option<fn(&[u8])>,
    ) -> io::Result<(BatchWriter, BatchGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::new(),
                since: None,
                closed: false,
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            interval,
            max_bytes,
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut batch = Vec::new();
                while worker.take(&mut batch) {
                    if !batch.is_empty() {
                        // A sink that fails (a closed stdout) loses the batch; nothing else
                        // can be done from a log writer.
                        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
                        if let Some(tee) = tee {
                            tee(&batch);
                        }
                    }
                    batch.clear();
                    if batch.capacity() > 4 * BATCH_BYTES {
                        batch.shrink_to(BATCH_BYTES);
                    }
                }
            })?;
        Ok((
            BatchWriter {
                shared: Arc::clone(&shared),
            },
            BatchGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped so far because the buffer was full (or the writer had stopped).
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// One line being written (the formatter writes each event in one `write` call).
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

/// Stops the writer thread when dropped, after it wrote out everything buffered.
pub struct BatchGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchGuard").finish_non_exhaustive()
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records every write call.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.0.lock().unwrap().clone()
        }
    }

    fn line(w: &BatchWriter, s: &str) {
        w.make_writer().write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn lines_are_written_in_one_batch_after_the_interval() {
        let sink = Sink::default();
        let (w, guard) =
            BatchWriter::spawn_with("t", sink.clone(), Duration::from_millis(200), 1 << 20, None)
                .unwrap();
        for i in 0..100 {
            line(&w, &format!("line {i}\n"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.writes().is_empty() {
            assert!(Instant::now() < deadline, "nothing written");
            std::thread::sleep(Duration::from_millis(10));
        }
        let writes = sink.writes();
        assert_eq!(writes.len(), 1, "one write for the whole batch");
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(writes[0].clone()).unwrap(), expected);
        drop(guard);
        assert_eq!(w.dropped_lines(), 0);
    }

    #[test]
    fn dropping_the_guard_writes_out_what_is_left() {
        let sink = Sink::default();
        let (w, guard) =
            BatchWriter::spawn_with("t", sink.clone(), Duration::from_secs(3600), 1 << 20, None)
                .unwrap();
        line(&w, "last words\n");
        drop(guard);
        assert_eq!(sink.writes().concat(), b"last words\n");
        // After the stop, lines are dropped and counted.
        line(&w, "too late\n");
        assert_eq!(w.dropped_lines(), 1);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_waiting() {
        /// A sink stuck until released.
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let (lock, cv) = &*self.0;
                let mut open = lock.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (w, guard) = BatchWriter::spawn_with(
            "t",
            Stuck(Arc::clone(&gate), sink.clone()),
            Duration::from_millis(1),
            100,
            None,
        )
        .unwrap();
        // The first line is taken by the writer, which then blocks in the sink.
        line(&w, "first\n");
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.shared.lock().since.is_some() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        // Ten 10-byte lines fill the 100-byte buffer; the next ones are dropped at once.
        for _ in 0..15 {
            line(&w, "123456789\n");
        }
        assert_eq!(w.dropped_lines(), 5);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let written = sink.writes().concat();
        assert_eq!(written.len(), 6 + 100);
    }
}
