//! The long-lived handles every request uses, built once at start-up.

use std::sync::Arc;
use std::time::SystemTime;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::credentials::{Credentials, CredentialsError, KeyPool};
use crate::telemetry;
use crate::upstream::{Upstream, UpstreamError};

/// Shared state (cheap to clone: everything is behind `Arc`).
#[derive(Debug, Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub upstream: Arc<Upstream>,
    pub credentials: Arc<Credentials>,
    pub metrics: PrometheusHandle,
    pub started_at: SystemTime,
    /// Fired when shutdown begins (`/ready` turns 503, background loops stop).
    pub shutdown: CancellationToken,
    /// Every background task; shutdown waits for them.
    pub tasks: TaskTracker,
}

/// Failures while building the app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl App {
    /// Builds the handles and starts the background tasks (WorkOS refresh).
    pub fn start(settings: Settings) -> Result<App, AppError> {
        let settings = Arc::new(settings);
        let upstream = Arc::new(Upstream::new(&settings)?);
        let pool = Arc::new(KeyPool::default());
        let credentials = Arc::new(Credentials::load(&settings, Arc::clone(&upstream), pool)?);
        let app = App {
            settings,
            upstream,
            credentials,
            metrics: telemetry::metrics::handle(),
            started_at: SystemTime::now(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        if let Some(r) = app.credentials.refresh_manager()
            && app.credentials.refresh_may_serve()
        {
            let r = Arc::clone(r);
            app.tasks.spawn(r.run(app.shutdown.clone()));
        }
        Ok(app)
    }
}
