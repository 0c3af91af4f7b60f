//! Logs and metrics.
//!
//! Logs go to the console (stdout) always; with `NODE_ENV=production` also to daily-rotated files
//! in `LOG_DIR` (`droid2api.YYYY-MM-DD.log`, UTC dates, the newest [`LOG_FILES_KEPT`] kept, mode
//! 0600 in a 0700 folder: `files.rs`). Both are written by background threads through
//! `tracing_appender::non_blocking`, so a request never waits on a terminal, a pipe or a disk:
//! the writers are lossy (when one's buffer of [`BUFFERED_LINES`] lines is full, new lines are
//! dropped and counted in `droid2api_log_dropped_lines_total`).
//! **No log line holds a key, token or prompt body**: secrets are [`crate::secret::Secret`]s,
//! which print masked, and request bodies are never logged.

pub mod files;
pub mod metrics;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::Settings;
pub use files::LOG_FILES_KEPT;

/// Lines buffered for each log writer at most.
pub const BUFFERED_LINES: usize = 128_000;

/// The log writers' counts of dropped lines (set once logging is initialised).
static DROPS: OnceLock<Vec<ErrorCounter>> = OnceLock::new();

/// Log lines dropped so far because a log writer fell behind.
pub fn log_dropped_lines() -> u64 {
    DROPS.get().map_or(0, |counters| {
        counters
            .iter()
            .map(|c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add)
    })
}

/// Keeps the log writers alive; dropping it flushes what they hold (the end of `main`).
#[derive(Debug)]
pub struct LogGuard {
    _console: WorkerGuard,
    _file: Option<WorkerGuard>,
}

/// Installs the global subscriber. Returns an error message when the log folder is unusable.
pub fn init_logging(settings: &Settings) -> Result<LogGuard, String> {
    let filter =
        || EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut warnings = Vec::new();
    let (console_writer, console_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("droid2api-console-log")
        .finish(std::io::stdout());
    let mut counters = vec![console_writer.error_counter()];
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
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(BUFFERED_LINES)
            .thread_name("droid2api-file-log")
            .finish(appender);
        counters.push(writer.error_counter());
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
