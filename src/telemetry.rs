//! Logs and metrics.
//!
//! Logs go to the console (stdout) always; with `NODE_ENV=production` also to daily-rotated files
//! in `LOG_DIR` (`droid2api.YYYY-MM-DD.log`, UTC dates, the newest [`LOG_FILES_KEPT`] kept, mode
//! 0600 in a 0700 folder: `files.rs`). Both are written by background threads in batches
//! (`batch.rs`: a line costs a request a copy into a buffer; the thread writes the buffer every
//! 50 ms), so a request never waits on a terminal, a pipe or a disk and never wakes a thread per
//! line: the writers are lossy (when one's buffer of 8 MiB is full, new lines are dropped and
//! counted in `droid2api_log_dropped_lines_total`). The console writer's thread also feeds
//! the live tail of `GET /admin/logs/stream` (`tail.rs`).
//! **No log line holds a key, token or prompt body**: secrets are [`crate::secret::Secret`]s,
//! which print masked, and request bodies are never logged.

pub mod batch;
pub mod files;
pub mod metrics;
pub mod tail;

use std::io::IsTerminal;
use std::sync::OnceLock;

use batch::{BatchGuard, BatchWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::Settings;
pub use files::LOG_FILES_KEPT;

/// The log writers (set once logging is initialised), for their counts of dropped lines.
static DROPS: OnceLock<Vec<BatchWriter>> = OnceLock::new();

/// Log lines dropped so far because a log writer fell behind.
pub fn log_dropped_lines() -> u64 {
    DROPS.get().map_or(0, |writers| {
        writers
            .iter()
            .map(BatchWriter::dropped_lines)
            .fold(0, u64::saturating_add)
    })
}

/// Keeps the log writers alive; dropping it flushes what they hold (the end of `main`).
#[derive(Debug)]
pub struct LogGuard {
    _console: BatchGuard,
    _file: Option<BatchGuard>,
}

/// Installs the global subscriber. Returns an error message when the log folder is unusable.
pub fn init_logging(settings: &Settings) -> Result<LogGuard, String> {
    let filter =
        || EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut warnings = Vec::new();
    let (console_writer, console_guard) =
        BatchWriter::spawn_tee("droid2api-console-log", std::io::stdout(), |b| {
            tail::tail().publish(b)
        })
        .map_err(|e| format!("could not start the console log writer: {e}"))?;
    let mut counters = vec![console_writer.clone()];
    let console = fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(console_writer)
        .with_filter(filter());
    let (file_layer, file_guard) = if settings.production {
        let dir = &settings.log_dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("LOG_DIR {}: {e}", dir.display()))?;
        if let Err(e) = files::narrow_dir(dir) {
            warnings.push(format!(
                "LOG_DIR {} could not be narrowed to mode 0700: {e}",
                dir.display()
            ));
        }
        let appender =
            files::DailyFiles::open(dir).map_err(|e| format!("LOG_DIR {}: {e}", dir.display()))?;
        let (writer, guard) = BatchWriter::spawn("droid2api-file-log", appender)
            .map_err(|e| format!("could not start the file log writer: {e}"))?;
        counters.push(writer.clone());
        let layer = fmt::layer()
            .with_target(false)
            .with_ansi(false)
            .with_writer(writer)
            .with_filter(filter());
        (Some(layer), Some(guard))
    } else {
        (None, None)
    };
    // A second initialisation (several servers in one test process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(file_layer)
        .try_init();
    let _ = DROPS.set(counters);
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(LogGuard {
        _console: console_guard,
        _file: file_guard,
    })
}
