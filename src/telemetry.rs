//! Logs and metrics.
//!
//! Logs go to the console always; with `NODE_ENV=production` also to daily-rotated files in
//! `LOG_DIR` (`droid2api.YYYY-MM-DD.log`, the newest [`LOG_FILES_KEPT`] kept), written by a
//! background thread so a request never waits on disk. **No log line holds a key, token or prompt
//! body**: secrets are [`crate::secret::Secret`]s, which print masked, and request bodies are
//! never logged.

pub mod metrics;

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::Settings;

/// How many daily log files are kept.
pub const LOG_FILES_KEPT: usize = 14;

/// Keeps the file writer alive; dropping it flushes the file log.
#[derive(Debug)]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Installs the global subscriber. Returns an error message when the log folder is unusable.
pub fn init_logging(settings: &Settings) -> Result<LogGuard, String> {
    let filter =
        || EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let console = fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .with_filter(filter());
    let (file_layer, guard) = if settings.production {
        std::fs::create_dir_all(&settings.log_dir)
            .map_err(|e| format!("LOG_DIR {}: {e}", settings.log_dir.display()))?;
        let appender = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("droid2api")
            .filename_suffix("log")
            .max_log_files(LOG_FILES_KEPT)
            .build(&settings.log_dir)
            .map_err(|e| format!("LOG_DIR {}: {e}", settings.log_dir.display()))?;
        let (writer, guard) = tracing_appender::non_blocking(appender);
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
    Ok(LogGuard { _file: guard })
}
