//! Level 3: a WorkOS refresh token exchanged for access tokens (`upstream-factory.md` §1.5).
//!
//! - Single-flight: concurrent callers share one in-flight exchange (a shared future; no lock is
//!   held while it runs).
//! - The exchange runs as a task on the app's `TaskTracker`, so it completes (and its rotated
//!   token is saved) even if the request that started it goes away, and shutdown waits for it
//!   ([`RefreshManager::settle`]) before the process exits.
//! - In the background, `timing.refresh_interval_s` after the last exchange (at once when no
//!   usable access token is known), so requests normally never wait for it.
//! - Once after an upstream 401 (unless another caller refreshed since that token was issued),
//!   and at most once a minute: a storm of 401s does not become a storm of exchanges.
//! - A failed exchange backs off (request path and background alike): 1 s doubling to 5 min,
//!   ±20 % jitter. While it backs off, callers get the last error at once instead of each
//!   calling WorkOS; a success clears it.
//! - WorkOS rotates refresh tokens (single use): the new pair is written to `data/auth.json`
//!   (0600, atomic) **before** the access token is used, together with the SHA-256 of the seed
//!   token it descends from, so a restart with the same `DROID_REFRESH_KEY` resumes from it.
//! - A failed exchange keeps the last access token (with a warning).
//! - With several instances ([`RefreshManager::use_shared`], contract §12) one instance
//!   exchanges under a Redis lock and the others adopt its result (`refresh/fleet.rs`).

mod fleet;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::authfile;
use crate::secret::Secret;
use crate::store::redis::Shared as Fleet;
use crate::telemetry::metrics as m;
use crate::upstream::{RefreshError, Upstream, UpstreamError, WorkosTokens};

/// Where the refresh token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshSource {
    /// `DROID_REFRESH_KEY` (or the rotated token stored for it).
    Env,
    /// `data/auth.json`.
    DataFile,
    /// `~/.factory/auth.json` (read, never rewritten).
    FactoryCli,
}

/// The tokens in use.
#[derive(Debug, Clone)]
struct TokenState {
    refresh: Secret,
    access: Option<Secret>,
    minted_at: Option<SystemTime>,
    /// Rises with every new token (an exchange here, or one adopted from the fleet); lets a
    /// 401 handler see whether someone already refreshed after its token was issued. With
    /// several instances it is the fleet's fencing number (`tok.gen`), stored in auth.json.
    generation: u64,
}

/// A complete token pair with its generation.
#[derive(Debug, Clone)]
struct Minted {
    access: Secret,
    refresh: Secret,
    minted_at: SystemTime,
    generation: u64,
}

/// How long an access token is assumed to live (`upstream-factory.md` §1.5: 8 h).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// A shared outcome of one exchange: the new access token and its generation.
type Flight = Shared<BoxFuture<'static, Result<(Secret, u64), Arc<RefreshError>>>>;

/// The least time between two exchanges triggered by an upstream 401.
pub const UNAUTHORIZED_REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Exponential backoff after failed exchanges: 1 s, 2 s, 4 s … up to 5 min, each ±20 %.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// The wait after the first failure (before jitter).
    pub const FIRST: Duration = Duration::from_secs(1);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(300);

    /// The wait after `failures` consecutive failures, `jitter` in [0, 1) spreading it ±20 %.
    pub fn delay(failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        let nominal = Self::FIRST.saturating_mul(1 << doublings).min(Self::MAX);
        nominal
            .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
            .min(Self::MAX)
    }

    /// Records a failure at `now`; returns the wait it imposes.
    pub fn fail(&mut self, now: Instant, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = Self::delay(self.failures, jitter);
        self.until = Some(now + d);
        d
    }

    /// A success: no more waiting.
    pub fn succeed(&mut self) {
        *self = Backoff::default();
    }

    /// Whether an exchange must wait at `now`.
    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| u > now)
    }

    /// How long an exchange must still wait at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// What decides whether an exchange may start: the backoff, the last failure, the 401 limit.
#[derive(Debug, Default)]
struct Gate {
    backoff: Backoff,
    /// The last failure (cleared by a success).
    last_error: Option<Arc<RefreshError>>,
    /// When the last exchange triggered by an upstream 401 started.
    last_unauthorized: Option<Instant>,
}

/// Why [`RefreshManager::after_unauthorized`] has no new token.
#[derive(Debug, thiserror::Error)]
pub enum UnauthorizedRefreshError {
    /// The exchange failed, or exchanges are backing off after a failure.
    #[error(transparent)]
    Refresh(Arc<RefreshError>),
    /// An exchange after a 401 already ran less than [`UNAUTHORIZED_REFRESH_EVERY`] ago.
    #[error("the access token was already refreshed after an upstream 401 less than a minute ago")]
    Throttled,
}

/// Owns level 3.
pub struct RefreshManager {
    upstream: Arc<Upstream>,
    state: RwLock<TokenState>,
    /// The exchange in flight (its number, its shared outcome); its task clears it when done.
    inflight: Mutex<Option<(u64, Flight)>>,
    /// Numbers the exchanges.
    flights: AtomicU64,
    gate: Mutex<Gate>,
    seed_sha256: String,
    auth_path: PathBuf,
    interval: Duration,
    source: RefreshSource,
    /// Exchanges run here: shutdown waits for them.
    tasks: TaskTracker,
    /// The shared engine of several instances, when `REDIS_URL` is set.
    fleet: OnceLock<Arc<Fleet>>,
    /// Serialises writing a new pair to disk and putting it in use (an adoption and an
    /// exchange never interleave, so auth.json always holds the pair in use).
    installing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RefreshManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshManager")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// How the manager starts.
#[derive(Debug)]
pub struct RefreshSeed {
    pub refresh_token: Secret,
    pub access_token: Option<Secret>,
    pub minted_at: Option<SystemTime>,
    pub seed_sha256: String,
    pub source: RefreshSource,
    /// The generation stored with the tokens (0 when unknown).
    pub generation: u64,
}

/// Clears the manager's in-flight slot when the exchange task ends, however it ends.
struct ClearFlight {
    manager: Arc<RefreshManager>,
    id: u64,
}

impl Drop for ClearFlight {
    fn drop(&mut self) {
        let mut slot = self
            .manager
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(id, _)| *id == self.id) {
            *slot = None;
        }
    }
}

impl RefreshManager {
    pub fn new(
        upstream: Arc<Upstream>,
        seed: RefreshSeed,
        auth_path: PathBuf,
        interval: Duration,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(RefreshManager {
            upstream,
            state: RwLock::new(TokenState {
                refresh: seed.refresh_token,
                access: seed.access_token,
                minted_at: seed.minted_at,
                generation: seed.generation,
            }),
            inflight: Mutex::new(None),
            flights: AtomicU64::new(0),
            gate: Mutex::new(Gate::default()),
            seed_sha256: seed.seed_sha256,
            auth_path,
            interval,
            source: seed.source,
            tasks,
            fleet: OnceLock::new(),
            installing: tokio::sync::Mutex::new(()),
        })
    }

    /// Shares the tokens with the other instances through Redis (contract §12): exchanges run
    /// under the fleet's lock, the others' results are adopted. Call before [`Self::run`].
    pub fn use_shared(&self, shared: Arc<Fleet>) {
        let _ = self.fleet.set(shared);
    }

    pub fn source(&self) -> RefreshSource {
        self.source
    }

    fn generation(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The access token in use and its generation, if any.
    pub fn current(&self) -> Option<(Secret, u64)> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        s.access.clone().map(|a| (a, s.generation))
    }

    /// The generation, refresh token and access token in use (`credentials::scrub`).
    pub fn tokens(&self) -> (u64, Secret, Option<Secret>) {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        (s.generation, s.refresh.clone(), s.access.clone())
    }

    /// Why the last exchange failed (cleared by a success).
    pub fn last_error(&self) -> Option<String> {
        self.gate().last_error.as_ref().map(|e| e.to_string())
    }

    /// How long exchanges still back off after failures (zero when they do not).
    pub fn backoff_remaining(&self) -> Duration {
        self.gate().backoff.remaining(Instant::now())
    }

    /// An access token: the current one, or the result of an exchange when none exists yet.
    pub async fn access_token(self: &Arc<Self>) -> Result<(Secret, u64), Arc<RefreshError>> {
        if let Some(cur) = self.current() {
            return Ok(cur);
        }
        self.refresh().await
    }

    /// After an upstream 401 with the token of `generation`: exchange once, unless a newer token
    /// already exists, an exchange is in flight (joined), exchanges back off after a failure, or
    /// a 401 already caused one less than a minute ago.
    pub async fn after_unauthorized(
        self: &Arc<Self>,
        generation: u64,
    ) -> Result<(Secret, u64), UnauthorizedRefreshError> {
        if let Some((tok, g)) = self.current()
            && g > generation
        {
            return Ok((tok, g));
        }
        let flight = self.begin(
            |gate, now| {
                if gate
                    .last_unauthorized
                    .is_some_and(|t| now.duration_since(t) < UNAUTHORIZED_REFRESH_EVERY)
                {
                    return Err(UnauthorizedRefreshError::Throttled);
                }
                gate.last_unauthorized = Some(now);
                Ok(())
            },
            UnauthorizedRefreshError::Refresh,
        )?;
        flight.await.map_err(UnauthorizedRefreshError::Refresh)
    }

    /// Runs an exchange, or joins the one in flight; while exchanges back off after a failure,
    /// answers that failure at once.
    pub async fn refresh(self: &Arc<Self>) -> Result<(Secret, u64), Arc<RefreshError>> {
        self.begin(|_, _| Ok(()), |e| e)?.await
    }

    /// Joins the exchange in flight, or starts one if the backoff and `admit` allow it (all
    /// decided under the in-flight lock, so two callers never both start one).
    fn begin<E>(
        self: &Arc<Self>,
        admit: impl FnOnce(&mut Gate, Instant) -> Result<(), E>,
        backing_off: impl FnOnce(Arc<RefreshError>) -> E,
    ) -> Result<Flight, E> {
        let mut slot = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = slot.as_ref() {
            return Ok(f.clone());
        }
        let now = Instant::now();
        {
            let mut gate = self.gate();
            if gate.backoff.active(now)
                && let Some(e) = &gate.last_error
            {
                return Err(backing_off(Arc::clone(e)));
            }
            admit(&mut gate, now)?;
        }
        let id = self.flights.fetch_add(1, Ordering::Relaxed);
        let me = Arc::clone(self);
        let handle = self.tasks.spawn(async move {
            let _clear = ClearFlight {
                manager: Arc::clone(&me),
                id,
            };
            me.exchange().await
        });
        let f: Flight = async move {
            match handle.await {
                Ok(r) => r,
                Err(e) => Err(Arc::new(RefreshError::Transport(UpstreamError::Other(
                    format!("refresh task failed: {e}"),
                )))),
            }
        }
        .boxed()
        .shared();
        *slot = Some((id, f.clone()));
        Ok(f)
    }

    /// Waits for the exchange in flight, if any, to finish (and to save its rotated token).
    /// Shutdown calls this before the process exits: WorkOS spends the old refresh token as
    /// soon as it answers, so the new one must reach disk.
    pub async fn settle(&self) {
        let flight = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, f)| f.clone());
        if let Some(f) = flight {
            let _ = f.await;
        }
    }

    /// One exchange (run by the single-flight task): under the fleet's lock when instances
    /// share the tokens, else directly.
    async fn exchange(self: Arc<Self>) -> Result<(Secret, u64), Arc<RefreshError>> {
        match self.fleet.get().cloned() {
            Some(shared) => fleet::exchange(&self, &shared).await,
            None => self
                .exchange_alone(0, None)
                .await
                .map(|t| (t.access, t.generation)),
        }
    }

    /// Calls WorkOS with the refresh token in use (within `limit`, if given); the new pair gets
    /// a generation above both `floor` and the current one and is persisted before use. A
    /// failure sets the backoff and keeps the last access token.
    async fn exchange_alone(
        &self,
        floor: u64,
        limit: Option<Duration>,
    ) -> Result<Minted, Arc<RefreshError>> {
        let refresh = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .refresh
            .clone();
        let answer = match limit {
            Some(limit) => tokio::time::timeout(limit, self.upstream.refresh(&refresh))
                .await
                .unwrap_or(Err(RefreshError::Transport(UpstreamError::Timeout))),
            None => self.upstream.refresh(&refresh).await,
        };
        match answer {
            Ok(WorkosTokens {
                access_token,
                refresh_token,
            }) => {
                let _installing = self.installing.lock().await;
                let t = Minted {
                    access: access_token,
                    refresh: refresh_token,
                    minted_at: SystemTime::now(),
                    generation: floor.max(self.generation()) + 1,
                };
                self.persist(&t).await;
                self.install(&t);
                tracing::info!(
                    generation = t.generation,
                    "refreshed the Factory access token through WorkOS"
                );
                Ok(t)
            }
            Err(e) => {
                metrics::counter!(m::REFRESH_FAILURES).increment(1);
                let e = Arc::new(e);
                let wait = {
                    let mut gate = self.gate();
                    gate.last_error = Some(Arc::clone(&e));
                    gate.backoff.fail(Instant::now(), fastrand::f64())
                };
                let have_token = self.current().is_some();
                tracing::warn!(
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "WorkOS refresh failed{}",
                    if have_token { "; using the last access token" } else { "; no access token is available" }
                );
                Err(e)
            }
        }
    }

    /// Writes a pair to `data/auth.json` (WorkOS has already spent the old refresh token, so
    /// this comes before any use of the new one).
    async fn persist(&self, t: &Minted) {
        let path = self.auth_path.clone();
        let (rt, at, minted, seed, generation) = (
            t.refresh.clone(),
            t.access.clone(),
            t.minted_at,
            self.seed_sha256.clone(),
            t.generation,
        );
        let saved = tokio::task::spawn_blocking(move || {
            authfile::write(&path, &rt, &at, minted, &seed, generation)
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "could not save the rotated refresh token; it is kept in memory only and a restart will need a new DROID_REFRESH_KEY"
            ),
            Err(e) => tracing::error!(error = %e, "saving the rotated refresh token failed"),
        }
    }

    /// Puts a pair in use and clears the backoff.
    fn install(&self, t: &Minted) {
        {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            s.refresh = t.refresh.clone();
            s.access = Some(t.access.clone());
            s.minted_at = Some(t.minted_at);
            s.generation = t.generation;
        }
        let mut gate = self.gate();
        gate.backoff.succeed();
        gate.last_error = None;
    }

    /// Takes a pair another instance minted, if it is newer than ours: persisted, then used.
    async fn adopt(&self, t: &Minted) -> bool {
        let _installing = self.installing.lock().await;
        if t.generation <= self.generation() {
            return false;
        }
        self.persist(t).await;
        self.install(t);
        tracing::info!(
            generation = t.generation,
            "using the Factory access token another instance refreshed"
        );
        true
    }

    /// The pair in use, if complete.
    fn minted(&self) -> Option<Minted> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        Some(Minted {
            access: s.access.clone()?,
            refresh: s.refresh.clone(),
            minted_at: s.minted_at?,
            generation: s.generation,
        })
    }

    /// Whether the access token is missing, of unknown age, or past its assumed lifetime.
    fn expired(&self) -> bool {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        match (&s.access, s.minted_at) {
            (Some(_), Some(minted)) => SystemTime::now()
                .duration_since(minted)
                .is_ok_and(|age| age >= TOKEN_LIFETIME),
            _ => true,
        }
    }

    /// When the next background exchange is due.
    fn next_due(&self) -> Duration {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        match (&s.access, s.minted_at) {
            (Some(_), Some(minted)) => {
                let age = SystemTime::now()
                    .duration_since(minted)
                    .unwrap_or(Duration::ZERO);
                self.interval.saturating_sub(age)
            }
            // A token of unknown age (from a file without a timestamp): refresh now.
            _ => Duration::ZERO,
        }
    }

    /// Background loop: exchanges ahead of expiry until `cancel` fires; after a failure it waits
    /// out the backoff (shared with the request path).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if let Some(shared) = self.fleet.get().cloned() {
            return fleet::run(self, shared, cancel).await;
        }
        loop {
            let wait = self.next_due().max(self.backoff_remaining());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if cancel.is_cancelled() {
                return;
            }
            // A failure is logged and sets the backoff the next wait honours.
            let _ = self.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes_with_jitter() {
        let secs = |f: u32, j: f64| Backoff::delay(f, j).as_secs_f64();
        assert_eq!(secs(1, 0.5), 1.0);
        assert_eq!(secs(2, 0.5), 2.0);
        assert_eq!(secs(3, 0.5), 4.0);
        assert_eq!(secs(9, 0.5), 256.0);
        assert_eq!(secs(10, 0.5), 300.0, "capped");
        assert_eq!(secs(u32::MAX, 0.5), 300.0);
        // ±20 %, never past the cap.
        assert_eq!(secs(1, 0.0), 0.8);
        assert!((secs(1, 0.999_999) - 1.2).abs() < 1e-3);
        assert_eq!(secs(4, 0.0), 6.4);
        assert_eq!(secs(12, 0.0), 240.0);
        assert_eq!(secs(12, 0.99), 300.0);
        // Jitter really spreads: distinct draws give distinct waits.
        let draws: std::collections::HashSet<u128> = (0..50)
            .map(|_| Backoff::delay(3, fastrand::f64()).as_micros())
            .collect();
        assert!(draws.len() > 40);
    }

    #[test]
    fn backoff_holds_until_its_time_and_a_success_clears_it() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.active(t0));
        assert_eq!(b.remaining(t0), Duration::ZERO);
        let d = b.fail(t0, 0.5);
        assert_eq!(d, Duration::from_secs(1));
        assert!(b.active(t0 + Duration::from_millis(999)));
        assert!(!b.active(t0 + Duration::from_secs(1)));
        assert_eq!(
            b.remaining(t0 + Duration::from_millis(400)),
            Duration::from_millis(600)
        );
        assert_eq!(b.fail(t0, 0.5), Duration::from_secs(2));
        assert_eq!(b.fail(t0, 0.5), Duration::from_secs(4));
        assert_eq!(b.failures(), 3);
        b.succeed();
        assert_eq!(b, Backoff::default());
        assert_eq!(b.fail(t0, 0.5), Duration::from_secs(1), "starts over");
    }
}
