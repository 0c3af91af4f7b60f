//! The Factory balance sync: every `SYNC_INTERVAL_MINUTES` (contract §2, or
//! `timing.balance_sync_interval_s`) and on `POST /factory/balance/sync`, read every key's
//! balance through [`Upstream::balance`](crate::upstream::Upstream::balance), `BATCH_SIZE`
//! keys at a time.
//!
//! Per key (every status, banned and disabled included):
//!
//! | answer | effect |
//! |---|---|
//! | a balance | persisted (`StoreOp::PutBalance`) and handed to the pool ([`KeyPool::set_balance`]), which ranks `least-token-used` / `max-remaining` by it plus this gateway's tokens since |
//! | … of a key banned automatically, now with tokens left | one key test through the [`KeyTester`] (awaited; at most once per key per run) |
//! | 401/403 | the key's health hears a 401 ([`EventSource::Sync`]: counts toward the consecutive-401 streak) |
//! | 402 | the key's health hears a 402 (banned) |
//! | timeout, other failure | listed in the report's failures; nothing changes |
//!
//! A run is single-flight: a caller arriving while one runs waits for it and gets the same
//! report. This is not one of the crate's pure modules: it does I/O (it only lives under
//! `usage`).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::credentials::Scrubber;
use crate::credentials::pool::{Balance, KeyFilter, KeyPool, KeySort, Outcome};
use crate::store::records::{BalanceRecord, DisabledBy, EventSource, KeyStatus, StoreOp};
use crate::store::sqlite::Store;
use crate::upstream::Upstream;
use crate::upstream::balance::{BALANCE_TIMEOUT, BalanceError};

/// The pause before the background loop's first run: start-up is not slowed by it, and a
/// gateway restarted in a loop does not hammer Factory's balance API.
pub const FIRST_RUN_DELAY: Duration = Duration::from_secs(60);

/// Sums over the last known balances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncTotals {
    pub used: u64,
    pub allowance: u64,
    /// Sum of each key's `max(0, allowance − used)`.
    pub remaining: u64,
    /// Keys holding a balance.
    pub keys_synced: u64,
    /// The most recent sync of any key (unix milliseconds).
    pub last_sync: Option<i64>,
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Keys the run tried.
    pub total: u64,
    pub synced: u64,
    pub failed: u64,
    /// `(key id, error)` in the pool's key order; errors never carry a secret.
    pub failures: Vec<(String, String)>,
    /// Totals after the run.
    pub totals: SyncTotals,
    /// When the run ended (unix milliseconds).
    pub finished_at: i64,
}

/// Runs a key test (the admin key test: it restores a key that answers again). The future must
/// finish once the test result is recorded.
pub trait KeyTester: Send + Sync {
    fn test(&self, key_id: String) -> BoxFuture<'static, ()>;
}

/// One key's result within a run.
enum KeyResult {
    Synced,
    Failed(String),
    /// Deleted while the run was going.
    Gone,
}

/// The sync. Cheap to share (`Arc`).
pub struct BalanceSync {
    upstream: Arc<Upstream>,
    pool: Arc<KeyPool>,
    store: Store,
    origin: String,
    user_agent: String,
    batch_size: usize,
    timeout: Duration,
    /// The run in progress: its report arrives on the channel.
    running: Marker,
    last: Mutex<Option<SyncReport>>,
    /// Scrubs every live secret out of failure messages and 402 reasons (set at start-up).
    scrubber: OnceLock<Arc<Scrubber>>,
    /// With several instances: only the holder of the fleet-wide lease runs the periodic sync.
    lease: OnceLock<Arc<crate::store::redis::Shared>>,
}

impl std::fmt::Debug for BalanceSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceSync")
            .field("origin", &self.origin)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Marker = Mutex<Option<watch::Receiver<Option<SyncReport>>>>;

/// The leading run's side of the single flight. Finished, it publishes the report and clears
/// the in-progress marker together; dropped unfinished (the caller went away), it clears the
/// marker and then closes the channel, so a waiting caller starts a run of its own.
struct Flight<'a> {
    marker: &'a Marker,
    tx: watch::Sender<Option<SyncReport>>,
    done: bool,
}

impl Flight<'_> {
    fn finish(mut self, report: &SyncReport) {
        let mut running = lock(self.marker);
        self.tx.send_replace(Some(report.clone()));
        *running = None;
        self.done = true;
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if !self.done {
            *lock(self.marker) = None;
        }
    }
}

/// What a caller of [`BalanceSync::sync_all`] does: run the sync, or wait for the one running.
enum Role<'a> {
    Lead(Flight<'a>),
    Wait(watch::Receiver<Option<SyncReport>>),
}

impl BalanceSync {
    /// A sync with Factory's 10 s per-call timeout. `origin` is
    /// `Settings.endpoints.balance_origin`, `user_agent` the Factory UA, `batch_size` the
    /// `BATCH_SIZE` (at least 1 is used).
    pub fn new(
        upstream: Arc<Upstream>,
        pool: Arc<KeyPool>,
        store: Store,
        origin: String,
        user_agent: String,
        batch_size: usize,
    ) -> Arc<Self> {
        Self::with_timeout(
            upstream,
            pool,
            store,
            origin,
            user_agent,
            batch_size,
            BALANCE_TIMEOUT,
        )
    }

    /// [`BalanceSync::new`] with another per-call timeout (tests).
    pub fn with_timeout(
        upstream: Arc<Upstream>,
        pool: Arc<KeyPool>,
        store: Store,
        origin: String,
        user_agent: String,
        batch_size: usize,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(BalanceSync {
            upstream,
            pool,
            store,
            origin,
            user_agent,
            batch_size: batch_size.max(1),
            timeout,
            running: Mutex::new(None),
            last: Mutex::new(None),
            scrubber: OnceLock::new(),
            lease: OnceLock::new(),
        })
    }

    /// Failure messages and 402 reasons are scrubbed of every secret `scrubber` knows (the
    /// synced key itself is always scrubbed).
    pub fn use_scrubber(&self, scrubber: Arc<Scrubber>) {
        let _ = self.scrubber.set(scrubber);
    }

    fn scrub(&self, text: String, key: &crate::secret::Secret) -> String {
        match self.scrubber.get() {
            Some(s) => s.scrub_string(text, &[key]),
            None => text.replace(key.expose(), &key.masked()),
        }
    }

    /// Syncs every key (all statuses), `batch_size` at a time. Single-flight: a second caller
    /// while one runs gets the same report (its tester is not used).
    pub async fn sync_all(&self, tester: &dyn KeyTester) -> SyncReport {
        loop {
            let role = {
                let mut running = lock(&self.running);
                match running.as_ref() {
                    Some(rx) => Role::Wait(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        *running = Some(rx);
                        Role::Lead(Flight {
                            marker: &self.running,
                            tx,
                            done: false,
                        })
                    }
                }
            };
            match role {
                Role::Lead(flight) => return self.lead(flight, tester).await,
                Role::Wait(mut rx) => {
                    // `Err`: the leading run was dropped before it finished; start over.
                    if let Ok(report) = rx.wait_for(Option::is_some).await
                        && let Some(report) = report.clone()
                    {
                        return report;
                    }
                }
            }
        }
    }

    /// Syncs one key now, outside the periodic run (an admin's check of one key): `None` when
    /// the pool has no such key, else whether its balance was read (the error never carries a
    /// secret). A 401 or 402 feeds the key's health as in a full run.
    pub async fn sync_one(&self, id: &str, tester: &dyn KeyTester) -> Option<Result<(), String>> {
        match self.sync_key(id, tester).await {
            KeyResult::Synced => Some(Ok(())),
            KeyResult::Failed(e) => Some(Err(e)),
            KeyResult::Gone => None,
        }
    }

    async fn lead(&self, flight: Flight<'_>, tester: &dyn KeyTester) -> SyncReport {
        let report = self.run_once(tester).await;
        *lock(&self.last) = Some(report.clone());
        flight.finish(&report);
        report
    }

    async fn run_once(&self, tester: &dyn KeyTester) -> SyncReport {
        let ids = self.pool.ids(&KeyFilter::default());
        let results: Vec<(usize, String, KeyResult)> =
            futures_util::stream::iter(ids.into_iter().enumerate())
                .map(|(i, id)| async move {
                    let r = self.sync_key(&id, tester).await;
                    (i, id, r)
                })
                .buffer_unordered(self.batch_size)
                .collect()
                .await;
        let mut results = results;
        results.sort_by_key(|(i, _, _)| *i);
        let mut report = SyncReport::default();
        for (_, id, r) in results {
            match r {
                KeyResult::Synced => report.synced += 1,
                KeyResult::Failed(e) => {
                    report.failed += 1;
                    report.failures.push((id, e));
                }
                KeyResult::Gone => continue,
            }
            report.total += 1;
        }
        report.totals = self.totals();
        report.finished_at = self.pool.now();
        if report.total > 0 {
            tracing::info!(
                total = report.total,
                synced = report.synced,
                failed = report.failed,
                "balance sync done"
            );
        } else {
            tracing::debug!("balance sync: no keys");
        }
        report
    }

    async fn sync_key(&self, id: &str, tester: &dyn KeyTester) -> KeyResult {
        let Some(view) = self.pool.get(id) else {
            return KeyResult::Gone;
        };
        let secret = view.rec.secret;
        let answer = self
            .upstream
            .balance_within(&self.origin, &secret, &self.user_agent, self.timeout)
            .await;
        let b = match answer {
            Ok(b) => b,
            Err(e) => {
                let outcome = match &e {
                    BalanceError::Unauthorized(_) => Some(Outcome::Unauthorized),
                    BalanceError::PaymentRequired(reason) => Some(Outcome::PaymentRequired(
                        self.scrub(reason.clone(), &secret),
                    )),
                    BalanceError::Timeout | BalanceError::Failed(_) => None,
                };
                if let Some(o) = outcome {
                    self.pool.report(id, &o, EventSource::Sync);
                }
                let message = self.scrub(e.to_string(), &secret);
                tracing::debug!(key = %id, error = %message, "balance sync of a key failed");
                return KeyResult::Failed(message);
            }
        };
        let synced_at = self.pool.now();
        let ops = vec![StoreOp::PutBalance(BalanceRecord {
            key_id: id.to_string(),
            used: b.used,
            allowance: b.allowance,
            premium_used: b.premium_used,
            premium_allowance: b.premium_allowance,
            trial_end: b.trial_end,
            synced_at,
        })];
        if let Some(shared) = self.lease.get() {
            shared.submit(&ops, false); // the other instances take it from the log
        }
        self.store.submit(ops);
        self.pool.set_balance(
            id,
            Balance {
                used: b.used,
                allowance: b.allowance,
                synced_at,
                trial_end: b.trial_end,
            },
        );
        // A key banned automatically (402) whose balance shows tokens again: one test decides
        // whether it serves again. An admin's ban is left alone (a test would not lift it).
        let banned_auto = self.pool.get(id).is_some_and(|v| {
            v.rec.status == KeyStatus::Banned && v.rec.disabled_by != Some(DisabledBy::Admin)
        });
        if banned_auto && b.remaining() > 0 {
            tracing::info!(key = %id, remaining = b.remaining(), "banned key shows tokens again; testing it");
            tester.test(id.to_string()).await;
        }
        KeyResult::Synced
    }

    /// Totals over the last known balances (every key holding one).
    pub fn totals(&self) -> SyncTotals {
        let (views, _) = self.pool.list(
            &KeyFilter::default(),
            KeySort::Created,
            false,
            1,
            usize::MAX,
        );
        let mut t = SyncTotals::default();
        for b in views.iter().filter_map(|v| v.balance) {
            t.used = t.used.saturating_add(b.used);
            t.allowance = t.allowance.saturating_add(b.allowance);
            t.remaining = t
                .remaining
                .saturating_add(b.allowance.saturating_sub(b.used));
            t.keys_synced += 1;
            t.last_sync = t.last_sync.max(Some(b.synced_at));
        }
        t
    }

    /// The report of the last finished run.
    pub fn last_report(&self) -> Option<SyncReport> {
        lock(&self.last).clone()
    }

    /// Background loop: a run after [`FIRST_RUN_DELAY`] (or `interval`, when shorter), then
    /// every `interval` after the previous run ended, until `cancel`.
    /// Runs the periodic sync only under a fleet-wide lease (several instances).
    pub fn use_lease(&self, shared: Arc<crate::store::redis::Shared>) {
        let _ = self.lease.set(shared);
    }

    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
        tester: Arc<dyn KeyTester>,
    ) {
        let interval = interval.max(Duration::from_secs(1));
        let mut wait = FIRST_RUN_DELAY.min(interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = interval;
            if let Some(shared) = self.lease.get()
                && !shared.lease("balance-sync", interval + interval / 2).await
            {
                continue; // another instance syncs the fleet's balances this round
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.sync_all(tester.as_ref()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::{Env, KeyPoolSettings, Settings};
    use crate::credentials::pool::SystemClock;
    use droid2api_mock::{MockUpstream, Reply, Rule};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl KeyTester for Counting {
        fn test(&self, _key_id: String) -> BoxFuture<'static, ()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    struct Fixture {
        mock: MockUpstream,
        sync: Arc<BalanceSync>,
        pool: Arc<KeyPool>,
        _dir: tempfile::TempDir,
    }

    async fn fixture(keys: &[&str], timeout: Duration) -> Fixture {
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let pool = Arc::new(KeyPool::new(
            Vec::new(),
            Vec::new(),
            KeyPoolSettings::default(),
            None,
            Arc::new(SystemClock),
        ));
        for k in keys {
            pool.add_key(k, None, None).await.unwrap();
        }
        let settings = Settings::from_sources(&Env::default(), None).unwrap();
        let upstream = Arc::new(Upstream::new(&settings).unwrap());
        let sync = BalanceSync::with_timeout(
            upstream,
            Arc::clone(&pool),
            store,
            mock.url(),
            "factory-cli/test".into(),
            2,
            timeout,
        );
        Fixture {
            mock,
            sync,
            pool,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn a_run_syncs_every_key_and_sums_totals() {
        let f = fixture(&["fk-unit-sync-0001", "fk-unit-sync-0002"], BALANCE_TIMEOUT).await;
        assert_eq!(f.sync.totals(), SyncTotals::default());
        assert!(f.sync.last_report().is_none());
        let tester = Counting(AtomicUsize::new(0));
        let r = f.sync.sync_all(&tester).await;
        assert_eq!((r.total, r.synced, r.failed), (2, 2, 0));
        assert_eq!(r.totals.allowance, 40_000_000);
        assert_eq!(r.totals.remaining, 40_000_000);
        assert_eq!(r.totals.keys_synced, 2);
        assert!(r.totals.last_sync.is_some());
        assert_eq!(f.sync.last_report().unwrap().finished_at, r.finished_at);
        assert_eq!(tester.0.load(Ordering::SeqCst), 0);
        for id in f.pool.ids(&KeyFilter::default()) {
            let b = f.pool.get(&id).unwrap().balance.unwrap();
            assert_eq!((b.used, b.allowance), (0, 20_000_000));
            assert_eq!(b.trial_end, Some(4_070_908_800_000));
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let f = fixture(&["fk-unit-sync-0003"], BALANCE_TIMEOUT).await;
        let body = json!({
            "organization": {"subscription": {"freeTrialAllocation": {"standardTokens": 10}}},
            "usage": {"standard": {"orgTotalTokensUsed": 4}},
        });
        f.mock.push_rule(
            Rule::new(Reply::json(200, body).with_delay_ms(200)).path("/api/organization"),
        );
        let tester = Counting(AtomicUsize::new(0));
        let (a, b) = tokio::join!(f.sync.sync_all(&tester), f.sync.sync_all(&tester));
        assert_eq!(f.mock.requests_to("/api/organization").len(), 2, "one run");
        assert_eq!(a.finished_at, b.finished_at);
        assert_eq!((a.synced, b.synced), (1, 1));
        assert_eq!(a.totals.remaining, 6);
        // Afterwards a new call runs again.
        f.sync.sync_all(&tester).await;
        assert_eq!(f.mock.requests_to("/api/organization").len(), 4);
    }

    #[tokio::test]
    async fn a_dropped_run_lets_the_next_caller_run() {
        let f = fixture(&["fk-unit-sync-0004"], BALANCE_TIMEOUT).await;
        f.mock
            .push_rule(Rule::new(Reply::hang()).path("/api/organization").times(2));
        let tester = Counting(AtomicUsize::new(0));
        let dropped =
            tokio::time::timeout(Duration::from_millis(200), f.sync.sync_all(&tester)).await;
        assert!(dropped.is_err());
        let r = tokio::time::timeout(Duration::from_secs(5), f.sync.sync_all(&tester))
            .await
            .expect("not stuck behind the dropped run");
        assert_eq!(r.synced, 1);
    }

    #[tokio::test]
    async fn the_background_loop_runs_and_stops() {
        let f = fixture(&["fk-unit-sync-0005"], BALANCE_TIMEOUT).await;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&f.sync).run(
            Duration::from_secs(1),
            cancel.clone(),
            Arc::new(Counting(AtomicUsize::new(0))),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while f.sync.last_report().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no run");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
