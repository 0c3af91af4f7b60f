//! The credential cascade (contract §5): which upstream credential serves a request.
//!
//! 1. `FACTORY_API_KEY`
//! 2. the key pool
//! 3. a refresh token (`DROID_REFRESH_KEY`, else `data/auth.json`, else `~/.factory/auth.json`)
//! 4. a static `api_key`/`access_token` in those files
//! 5. the client's own `Authorization: Bearer` / `x-api-key`
//!
//! The first *configured* level serves. The pool serves when it has an eligible key; when all its
//! active keys cool it answers 429 with the soonest `Retry-After` (no fall-through); when it has no
//! active key at all the next configured level among 3–4 serves, else 503 `no_usable_key`. Level 5
//! serves only when levels 1–4 are all unconfigured and `API_ACCESS_KEY` is unset.

pub mod authfile;
pub mod fleet;
pub mod pool;
pub mod refresh;
pub mod scrub;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::secret::Secret;
use crate::upstream::{RefreshError, Upstream};

pub use pool::{KeyPool, PoolPick};
pub use refresh::{RefreshManager, RefreshSeed, RefreshSource, UnauthorizedRefreshError};
pub use scrub::Scrubber;

/// Which level served a request; recorded in logs and usage (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialLabel {
    Env,
    Pool(String),
    Refresh,
    File,
    Client,
}

impl CredentialLabel {
    pub fn as_str(&self) -> &str {
        match self {
            CredentialLabel::Env => "env",
            CredentialLabel::Pool(id) => id,
            CredentialLabel::Refresh => "refresh",
            CredentialLabel::File => "file",
            CredentialLabel::Client => "client",
        }
    }
}

/// A credential chosen for one upstream attempt.
#[derive(Debug, Clone)]
pub struct Lease {
    pub secret: Secret,
    pub label: CredentialLabel,
    /// For refresh-token credentials: the generation of the access token (for the 401 retry).
    pub generation: Option<u64>,
}

/// Why no credential could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    #[error(
        "no upstream credential is configured: set FACTORY_API_KEY, add keys to the pool, set DROID_REFRESH_KEY or write data/auth.json, or send your own Factory key as 'Authorization: Bearer <key>'"
    )]
    NoCredential,
    #[error("every key in the pool is cooling down; retry after {retry_after_s} s")]
    PoolCooling { retry_after_s: u64 },
    #[error("the key pool has no usable key and no other credential is configured")]
    NoUsableKey,
    #[error("the refresh token could not be exchanged for an access token: {0}")]
    Refresh(Arc<RefreshError>),
}

/// A level-4 static token and where it came from.
#[derive(Debug, Clone)]
struct StaticToken {
    secret: Secret,
}

/// Start-up failures of the cascade.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    AuthFile(#[from] authfile::AuthFileError),
}

/// The cascade.
#[derive(Debug)]
pub struct Credentials {
    factory_key: Option<Secret>,
    pool: Arc<KeyPool>,
    refresh: Option<Arc<RefreshManager>>,
    static_token: Option<StaticToken>,
    client_passthrough_allowed: bool,
    scrubber: Arc<Scrubber>,
}

impl Credentials {
    /// Resolves levels 1, 3 and 4 from settings and files (contract §5's restart rule included).
    /// WorkOS exchanges run on `tasks` (the app's tracker, which shutdown waits for).
    pub fn load(
        settings: &Settings,
        upstream: Arc<Upstream>,
        pool: Arc<KeyPool>,
        tasks: &TaskTracker,
    ) -> Result<Self, CredentialsError> {
        let data_auth_path = settings.data_path("auth.json");
        let data_auth = authfile::read(&data_auth_path)?;
        let cli_auth = match settings.factory_cli_auth_path() {
            Some(p) => match authfile::read(&p) {
                Ok(f) => f.map(|f| (p, f)),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring the Factory CLI's auth file");
                    None
                }
            },
            None => None,
        };

        let interval = Duration::from_secs(settings.timing.refresh_interval_s);
        let mut seed: Option<RefreshSeed> = None;
        if let Some(env_rt) = &settings.droid_refresh_key {
            let hash = authfile::sha256_hex(env_rt);
            let stored = data_auth
                .as_ref()
                .filter(|f| f.seed_sha256.as_deref() == Some(hash.as_str()))
                .and_then(|f| f.refresh_token.clone().map(|rt| (rt, f)));
            seed = Some(match stored {
                Some((rt, f)) => {
                    tracing::info!(
                        "DROID_REFRESH_KEY is unchanged: resuming from the rotated token in data/auth.json"
                    );
                    RefreshSeed {
                        refresh_token: rt,
                        access_token: f.access_token.clone(),
                        minted_at: f.last_refresh,
                        seed_sha256: hash,
                        source: RefreshSource::Env,
                        generation: f.generation.unwrap_or(0),
                    }
                }
                None => RefreshSeed {
                    refresh_token: env_rt.clone(),
                    access_token: None,
                    minted_at: None,
                    seed_sha256: hash,
                    source: RefreshSource::Env,
                    generation: 0,
                },
            });
        } else if let Some(f) = data_auth.as_ref().filter(|f| f.refresh_token.is_some()) {
            if let Some(rt) = &f.refresh_token {
                seed = Some(RefreshSeed {
                    refresh_token: rt.clone(),
                    access_token: f.access_token.clone(),
                    minted_at: f.last_refresh,
                    seed_sha256: f
                        .seed_sha256
                        .clone()
                        .unwrap_or_else(|| authfile::sha256_hex(rt)),
                    source: RefreshSource::DataFile,
                    generation: f.generation.unwrap_or(0),
                });
            }
        } else if let Some((path, f)) = cli_auth.as_ref().filter(|(_, f)| f.refresh_token.is_some())
            && let Some(rt) = &f.refresh_token
        {
            tracing::warn!(
                path = %path.display(),
                "using the Factory CLI's refresh token: each refresh rotates it, which signs the Factory CLI out; rotated tokens are kept in data/auth.json and the CLI's file is never rewritten"
            );
            seed = Some(RefreshSeed {
                refresh_token: rt.clone(),
                access_token: f.access_token.clone(),
                minted_at: None,
                seed_sha256: authfile::sha256_hex(rt),
                source: RefreshSource::FactoryCli,
                generation: 0,
            });
        }

        let static_token = if seed.is_none() {
            data_auth
                .as_ref()
                .and_then(|f| f.access_token.clone())
                .or_else(|| cli_auth.as_ref().and_then(|(_, f)| f.access_token.clone()))
                .map(|secret| StaticToken { secret })
        } else {
            None
        };

        let refresh = seed.map(|s| {
            RefreshManager::new(upstream, s, data_auth_path.clone(), interval, tasks.clone())
        });
        let fixed = settings
            .factory_api_key
            .iter()
            .chain(static_token.as_ref().map(|t| &t.secret))
            .cloned()
            .collect();
        let scrubber = Arc::new(Scrubber::new(Arc::clone(&pool), refresh.clone(), fixed));
        Ok(Credentials {
            factory_key: settings.factory_api_key.clone(),
            pool,
            refresh,
            static_token,
            client_passthrough_allowed: settings.api_access_key.is_none(),
            scrubber,
        })
    }

    /// Replaces every live secret in upstream-derived text by its mask (error paths only).
    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.scrubber
    }

    /// Whether level 3 can ever serve (level 1 is unset): only then is its token kept fresh in
    /// the background, so a configured refresh token is not spent while FACTORY_API_KEY serves.
    pub fn refresh_may_serve(&self) -> bool {
        self.refresh.is_some() && self.factory_key.is_none()
    }

    pub fn refresh_manager(&self) -> Option<&Arc<RefreshManager>> {
        self.refresh.as_ref()
    }

    /// Waits for a WorkOS exchange in flight to finish and save its rotated token (shutdown).
    pub async fn settle_refresh(&self) {
        if let Some(r) = &self.refresh {
            r.settle().await;
        }
    }

    pub fn pool(&self) -> &Arc<KeyPool> {
        &self.pool
    }

    /// Whether any server-side credential (levels 1–4) is configured.
    pub fn server_side_configured(&self) -> bool {
        self.factory_key.is_some()
            || self.pool.is_configured()
            || self.refresh.is_some()
            || self.static_token.is_some()
    }

    /// The name of the level that would serve now (for logs and `check-config`).
    pub fn describe(&self) -> &'static str {
        if self.factory_key.is_some() {
            "FACTORY_API_KEY"
        } else if self.pool.is_configured() {
            "key pool"
        } else if self.refresh.is_some() {
            "refresh token"
        } else if self.static_token.is_some() {
            "auth.json static token"
        } else if self.client_passthrough_allowed {
            "client credentials (pass-through)"
        } else {
            "none"
        }
    }

    /// Levels 3–4, used directly or after the pool has no active key.
    async fn file_levels(&self) -> Option<Result<Lease, CascadeError>> {
        if let Some(r) = &self.refresh {
            return Some(match r.access_token().await {
                Ok((secret, generation)) => Ok(Lease {
                    secret,
                    label: CredentialLabel::Refresh,
                    generation: Some(generation),
                }),
                Err(e) => Err(CascadeError::Refresh(e)),
            });
        }
        self.static_token.as_ref().map(|t| {
            Ok(Lease {
                secret: t.secret.clone(),
                label: CredentialLabel::File,
                generation: None,
            })
        })
    }

    /// Chooses the credential of one attempt. `client` is the client's own credential
    /// (`Authorization: Bearer` or `x-api-key`), used only at level 5. `exclude` lists pool keys
    /// already tried by this request; `conversation` is the request's conversation, whose
    /// pinned pool key serves while it may (contract §14).
    pub async fn lease(
        &self,
        client: Option<&str>,
        exclude: &[String],
        conversation: Option<pool::Conversation>,
    ) -> Result<Lease, CascadeError> {
        if let Some(k) = &self.factory_key {
            return Ok(Lease {
                secret: k.clone(),
                label: CredentialLabel::Env,
                generation: None,
            });
        }
        if self.pool.is_configured() {
            return match self.pool.pick_for(exclude, conversation) {
                PoolPick::Key { id, secret } => Ok(Lease {
                    secret,
                    label: CredentialLabel::Pool(id),
                    generation: None,
                }),
                PoolPick::AllCooling { retry_after_s } => {
                    Err(CascadeError::PoolCooling { retry_after_s })
                }
                PoolPick::NoActiveKey => match self.file_levels().await {
                    Some(r) => r,
                    None => Err(CascadeError::NoUsableKey),
                },
            };
        }
        if let Some(r) = self.file_levels().await {
            return r;
        }
        if self.client_passthrough_allowed
            && let Some(c) = client.map(str::trim).filter(|c| !c.is_empty())
        {
            return Ok(Lease {
                secret: Secret::new(c),
                label: CredentialLabel::Client,
                generation: None,
            });
        }
        Err(CascadeError::NoCredential)
    }
}

/// Path of our own auth file.
pub fn data_auth_path(settings: &Settings) -> PathBuf {
    settings.data_path("auth.json")
}
