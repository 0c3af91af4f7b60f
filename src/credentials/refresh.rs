//! Level 3: a WorkOS refresh token exchanged for access tokens (`upstream-factory.md` §1.5).
//!
//! - Single-flight: concurrent callers share one in-flight exchange (a shared future; no lock is
//!   held while it runs).
//! - In the background, `timing.refresh_interval_s` after the last exchange (at once when no
//!   usable access token is known), so requests normally never wait for it.
//! - Once after an upstream 401 (unless another caller refreshed since that token was issued).
//! - WorkOS rotates refresh tokens (single use): the new pair is written to `data/auth.json`
//!   (0600, atomic) **before** the access token is used, together with the SHA-256 of the seed
//!   token it descends from, so a restart with the same `DROID_REFRESH_KEY` resumes from it.
//! - A failed exchange keeps the last access token (with a warning).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio_util::sync::CancellationToken;

use super::authfile;
use crate::secret::Secret;
use crate::telemetry::metrics as m;
use crate::upstream::{RefreshError, Upstream};

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
    /// Bumped on every successful exchange; lets a 401 handler see whether someone already
    /// refreshed after its token was issued.
    generation: u64,
}

/// A shared outcome of one exchange: the new access token and its generation.
type Flight = Shared<BoxFuture<'static, Result<(Secret, u64), Arc<RefreshError>>>>;

/// Owns level 3.
pub struct RefreshManager {
    upstream: Arc<Upstream>,
    state: RwLock<TokenState>,
    inflight: Mutex<Option<Flight>>,
    seed_sha256: String,
    auth_path: PathBuf,
    interval: Duration,
    source: RefreshSource,
    /// Last failure, for `/ready`.
    last_error: RwLock<Option<String>>,
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
}

impl RefreshManager {
    pub fn new(
        upstream: Arc<Upstream>,
        seed: RefreshSeed,
        auth_path: PathBuf,
        interval: Duration,
    ) -> Arc<Self> {
        Arc::new(RefreshManager {
            upstream,
            state: RwLock::new(TokenState {
                refresh: seed.refresh_token,
                access: seed.access_token,
                minted_at: seed.minted_at,
                generation: 0,
            }),
            inflight: Mutex::new(None),
            seed_sha256: seed.seed_sha256,
            auth_path,
            interval,
            source: seed.source,
            last_error: RwLock::new(None),
        })
    }

    pub fn source(&self) -> RefreshSource {
        self.source
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
        self.last_error
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An access token: the current one, or the result of an exchange when none exists yet.
    pub async fn access_token(self: &Arc<Self>) -> Result<(Secret, u64), Arc<RefreshError>> {
        if let Some(cur) = self.current() {
            return Ok(cur);
        }
        self.refresh().await
    }

    /// After an upstream 401 with the token of `generation`: exchange once, unless a newer token
    /// already exists.
    pub async fn after_unauthorized(
        self: &Arc<Self>,
        generation: u64,
    ) -> Result<(Secret, u64), Arc<RefreshError>> {
        if let Some((tok, g)) = self.current()
            && g > generation
        {
            return Ok((tok, g));
        }
        self.refresh().await
    }

    /// Runs an exchange, or joins the one in flight.
    pub async fn refresh(self: &Arc<Self>) -> Result<(Secret, u64), Arc<RefreshError>> {
        let flight = {
            let mut slot = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(f) => f.clone(),
                None => {
                    let me = Arc::clone(self);
                    // Spawned so the exchange completes (and its rotated token is saved) even if
                    // the request that started it goes away.
                    let handle = tokio::spawn(async move { me.exchange().await });
                    let f: Flight = async move {
                        match handle.await {
                            Ok(r) => r,
                            Err(e) => Err(Arc::new(RefreshError::Transport(
                                crate::upstream::UpstreamError::Other(format!(
                                    "refresh task failed: {e}"
                                )),
                            ))),
                        }
                    }
                    .boxed()
                    .shared();
                    *slot = Some(f.clone());
                    f
                }
            }
        };
        let result = flight.clone().await;
        let mut slot = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|f| f.ptr_eq(&flight)) {
            *slot = None;
        }
        result
    }

    /// One exchange at WorkOS, persisted before the new token is published.
    async fn exchange(self: Arc<Self>) -> Result<(Secret, u64), Arc<RefreshError>> {
        let refresh = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .refresh
            .clone();
        match self.upstream.refresh(&refresh).await {
            Ok(tokens) => {
                let minted = SystemTime::now();
                let path = self.auth_path.clone();
                let (rt, at, seed) = (
                    tokens.refresh_token.clone(),
                    tokens.access_token.clone(),
                    self.seed_sha256.clone(),
                );
                let saved = tokio::task::spawn_blocking(move || {
                    authfile::write(&path, &rt, &at, minted, &seed)
                })
                .await;
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(
                        error = %e,
                        "could not save the rotated refresh token; it is kept in memory only and a restart will need a new DROID_REFRESH_KEY"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "saving the rotated refresh token failed")
                    }
                }
                let generation = {
                    let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
                    s.refresh = tokens.refresh_token;
                    s.access = Some(tokens.access_token.clone());
                    s.minted_at = Some(minted);
                    s.generation += 1;
                    s.generation
                };
                *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(
                    generation,
                    "refreshed the Factory access token through WorkOS"
                );
                Ok((tokens.access_token, generation))
            }
            Err(e) => {
                metrics::counter!(m::REFRESH_FAILURES).increment(1);
                let have_token = self.current().is_some();
                tracing::warn!(
                    error = %e,
                    "WorkOS refresh failed{}",
                    if have_token { "; using the last access token" } else { "; no access token is available" }
                );
                *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                Err(Arc::new(e))
            }
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

    /// Background loop: exchanges ahead of expiry until `cancel` fires. After a failure it retries
    /// with a bounded backoff.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Duration::from_secs(5);
        loop {
            let wait = self.next_due();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.refresh().await {
                Ok(_) => backoff = Duration::from_secs(5),
                Err(_) => {
                    let wait = backoff.min(self.interval);
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}
