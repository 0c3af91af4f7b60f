//! The long-lived handles every request uses, built once at start-up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::credentials::fleet::{FleetApplier, Replicated, SharedPositions};
use crate::credentials::pool::Balance;
use crate::credentials::pool::{KeyPool, Persist, SystemClock};
use crate::credentials::{Credentials, CredentialsError};
use crate::reasoning_cache::{self, ReasoningCache};
use crate::store::StoreError;
use crate::store::redis::{Shared, SharedError};
use crate::store::sqlite::Store;
use crate::telemetry;
use crate::translate::responses_chat::Turn;
use crate::upstream::{Upstream, UpstreamError};
use crate::usage::recorder::Recorder;
use crate::usage::sync::BalanceSync;

/// Shared state (cheap to clone: everything is behind `Arc`).
#[derive(Debug, Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub upstream: Arc<Upstream>,
    pub credentials: Arc<Credentials>,
    pub pool: Arc<KeyPool>,
    pub store: Store,
    /// The stored admin layer of `key_pool` settings (name → JSON value), as loaded at start and
    /// changed through `PUT /admin/config`; the effective settings are
    /// `settings.key_pool_with(&stored_key_pool)`.
    pub stored_key_pool:
        Arc<std::sync::Mutex<std::collections::BTreeMap<String, serde_json::Value>>>,
    pub metrics: PrometheusHandle,
    /// Usage records, queued to the store's bounded traffic queue.
    pub recorder: Arc<Recorder>,
    /// The Factory balance sync.
    pub balance_sync: Arc<BalanceSync>,
    pub started_at: SystemTime,
    /// Fired when shutdown begins (`/ready` turns 503, background loops stop).
    pub shutdown: CancellationToken,
    /// Every background task; shutdown waits for them.
    pub tasks: TaskTracker,
    /// Inbound protection: body budget, failed-key throttles, rejected counts (contract §9).
    pub inbound: Arc<crate::inbound::Inbound>,
    /// The `GET /v1/models` body, encoded once (the model list is fixed at start).
    pub models_list: Arc<std::sync::OnceLock<bytes::Bytes>>,
    /// The shared state of several instances (contract §12), when `REDIS_URL` is set.
    pub shared: Option<Arc<Shared>>,
    /// The GPT turns whose reasoning is sent back on the next Chat request (`translation.md`
    /// §4.4), per instance.
    pub reasoning: Arc<ReasoningCache<Turn>>,
}

/// Failures while building the app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Shared(#[from] SharedError),
}

/// How often usage records past retention are removed (in chunks, by the store's writer).
const RETENTION_PERIOD: Duration = Duration::from_secs(3600);

/// How often per-request counters are written behind.
const COUNTER_FLUSH_PERIOD: Duration = Duration::from_secs(1);

impl App {
    /// Opens the store, builds the handles and starts the background tasks (counter flushes,
    /// WorkOS refresh, balance sync, usage retention, metrics upkeep). The caller holds the
    /// data-folder lock.
    pub fn start(settings: Settings) -> Result<App, AppError> {
        let (store, loaded) = Store::open(&settings.data_dir)?;
        if let Some(r) = &loaded.import {
            tracing::info!(
                keys = r.keys,
                groups = r.groups,
                skipped = r.skipped,
                "imported the Node.js data/key_pool.json (renamed key_pool.json.imported, mode 0600)"
            );
        }
        let (key_pool, findings) = settings.key_pool_with(&loaded.settings);
        for w in findings.warnings.iter().chain(&findings.errors) {
            tracing::warn!("stored key_pool setting ignored: {w}");
        }
        let stored_key_pool = Arc::new(std::sync::Mutex::new(loaded.settings.clone()));
        let settings = Arc::new(settings);
        let upstream = Arc::new(Upstream::new(&settings)?);
        let shared = match &settings.redis_url {
            Some(url) => Some(Shared::open(
                url,
                crate::store::redis::instance_id(&settings.data_dir)?,
            )?),
            None => None,
        };
        let persist: Arc<dyn Persist> = match &shared {
            Some(shared) => Arc::new(Replicated {
                local: store.clone(),
                shared: Arc::clone(shared),
            }),
            None => Arc::new(store.clone()),
        };
        let pool = Arc::new(KeyPool::new(
            loaded.keys,
            loaded.groups,
            key_pool,
            Some(Arc::clone(&persist)),
            Arc::new(SystemClock),
        ));
        for b in &loaded.balances {
            pool.set_balance(
                &b.key_id,
                Balance {
                    used: b.used,
                    allowance: b.allowance,
                    synced_at: b.synced_at,
                    trial_end: b.trial_end,
                },
            );
        }
        let balance_sync = BalanceSync::new(
            Arc::clone(&upstream),
            Arc::clone(&pool),
            store.clone(),
            settings.endpoints.balance_origin.clone(),
            settings.user_agent.clone(),
            settings.batch_size as usize,
        );
        let tasks = TaskTracker::new();
        let credentials = Arc::new(Credentials::load(
            &settings,
            Arc::clone(&upstream),
            Arc::clone(&pool),
            &tasks,
        )?);
        balance_sync.use_scrubber(Arc::clone(credentials.scrubber()));
        let recorder = Recorder::new(store.clone(), settings.time_zone());
        let inbound = Arc::new(crate::inbound::Inbound::new(&settings));
        inbound.clients.load(
            loaded.clients,
            &loaded.client_last_used,
            Some(Arc::clone(&persist)),
        );
        let app = App {
            settings,
            upstream,
            credentials,
            pool,
            store,
            stored_key_pool,
            metrics: telemetry::metrics::handle(),
            recorder,
            balance_sync,
            started_at: SystemTime::now(),
            shutdown: CancellationToken::new(),
            tasks,
            inbound,
            models_list: Arc::default(),
            reasoning: Arc::new(ReasoningCache::new(reasoning_cache::Limits::default())),
            shared,
        };
        if let Some(shared) = &app.shared {
            let applier = Arc::new(FleetApplier {
                pool: Arc::clone(&app.pool),
                settings: Arc::clone(&app.settings),
                stored: Arc::clone(&app.stored_key_pool),
                local: app.store.clone(),
                sessions: Arc::clone(&app.inbound) as Arc<dyn crate::store::redis::SessionTable>,
                clients: Arc::clone(&app.inbound.clients)
                    as Arc<dyn crate::store::redis::ClientTable>,
            });
            app.inbound.sessions.share_through(Arc::clone(shared));
            shared.start(applier, &app.tasks, app.shutdown.clone());
            app.pool
                .set_positions(Arc::new(SharedPositions(Arc::clone(shared))));
            crate::store::redis::usage::start(shared, &app.store, &app.tasks, app.shutdown.clone());
            app.balance_sync.use_lease(Arc::clone(shared));
            if let Some(r) = app.credentials.refresh_manager() {
                r.use_shared(Arc::clone(shared));
            }
        }
        if let Some(r) = app.credentials.refresh_manager()
            && app.credentials.refresh_may_serve()
        {
            let r = Arc::clone(r);
            app.tasks.spawn(r.run(app.shutdown.clone()));
        }
        let (pool, stop) = (Arc::clone(&app.pool), app.shutdown.clone());
        app.tasks.spawn(async move {
            let mut tick = tokio::time::interval(COUNTER_FLUSH_PERIOD);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => pool.flush_counters(),
                }
            }
            pool.flush_counters();
        });
        // Metrics upkeep: histogram samples are folded into their buckets (they are held in
        // memory until then), queue gauges and log drops are published.
        let (metrics, store, stop) = (app.metrics.clone(), app.store.clone(), app.shutdown.clone());
        app.tasks.spawn(telemetry::metrics::upkeep_loop(
            telemetry::metrics::UPKEEP_PERIOD,
            stop,
            move || {
                metrics.run_upkeep();
                let q = store.queue_stats();
                metrics::gauge!(telemetry::metrics::STORE_QUEUED).set(q.queued as f64);
                metrics::gauge!(telemetry::metrics::STORE_QUEUE_CAPACITY).set(q.capacity as f64);
                metrics::counter!(telemetry::metrics::LOG_DROPPED)
                    .absolute(telemetry::log_dropped_lines());
            },
        ));
        // The Factory balance sync, every `timing.balance_sync_interval_s`.
        let interval = Duration::from_secs(
            app.settings
                .timing
                .balance_sync_interval_s
                .unwrap_or(app.settings.sync_interval_minutes * 60),
        );
        let tester = Arc::new(crate::admin::KeyTestRunner(app.clone()));
        app.tasks
            .spawn(Arc::clone(&app.balance_sync).run(interval, app.shutdown.clone(), tester));
        // Usage retention: records older than DATA_RETENTION_DAYS go (rollups stay), hourly.
        let (store, stop, days) = (
            app.store.clone(),
            app.shutdown.clone(),
            app.settings.data_retention_days,
        );
        app.tasks.spawn(async move {
            let mut tick = tokio::time::interval(RETENTION_PERIOD);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let before = jiff::Timestamp::now().as_millisecond() - days as i64 * 86_400_000;
                match store.prune_usage(before).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(deleted = n, days, "usage records past retention removed")
                    }
                    Err(e) => tracing::warn!(error = %e, "usage retention failed"),
                }
            }
        });
        Ok(app)
    }

    /// Writes everything still in memory and closes the store (the end of shutdown).
    pub async fn close_store(&self) {
        self.pool.flush_counters();
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "could not flush the store");
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not close the store"),
            Err(e) => tracing::error!(error = %e, "closing the store failed"),
        }
    }
}
