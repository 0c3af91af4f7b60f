//! Level 3 shared by several instances (contract §12, redis-design §7).
//!
//! Redis hash `tok`: `access`, `refresh`, `gen` (the fencing number), `expires_at` (ms), and
//! `seed` (SHA-256 of the seed refresh token the pair descends from: a pair of another seed is
//! never adopted, so a fleet restarted with a new `DROID_REFRESH_KEY` does not go back to the old
//! chain). WorkOS refresh tokens are single use, so one instance exchanges at a time:
//!
//! - The exchanging instance takes `lock:refresh` (`SET NX PX 30000`, value
//!   `<instance>:<nonce>`) and reads `tok`: a newer pair is taken instead of calling WorkOS.
//!   Else it calls WorkOS (15 s deadline: the lock must outlast it), writes auth.json with
//!   generation g+1 (persisted before use), and a script stores the pair only if the lock is
//!   still its own and `gen` is still g. A refused holder keeps its pair locally. The lock is
//!   released by compare-and-delete.
//! - An instance that finds the lock taken waits for the holder's pair (`gen` polled every
//!   100 ms, bounded) and never calls WorkOS while Redis answers; when the lock goes away
//!   without a new pair it tries to take it itself.
//! - The background loop polls `gen` every second: a newer pair is adopted (and written to
//!   auth.json); when Redis is behind (after an outage, an empty restart, or a start with a
//!   newer auth.json) this instance offers its pair by the same gen compare-and-set.
//! - Redis unreachable: no early refresh; only a missing or expired token, or an upstream 401,
//!   is refreshed, locally.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::{Minted, RefreshManager, TOKEN_LIFETIME};
use crate::secret::Secret;
use crate::store::redis::{Shared, SharedError, k};
use crate::upstream::{RefreshError, UpstreamError};

/// How long the refresh lock lives unless released.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
/// The deadline of the holder's WorkOS call (WorkOS sees no fence: the lock must outlast it).
pub const WORKOS_DEADLINE: Duration = Duration::from_secs(15);
/// How often the background loop looks at the fleet's generation.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long an instance waits for another instance's exchange.
pub const WAIT_FOR_HOLDER: Duration = Duration::from_secs(20);
const WAIT_STEP: Duration = Duration::from_millis(100);
/// The deadline of one Redis command.
const CMD_LIMIT: Duration = Duration::from_secs(1);

/// Deletes the lock only if it is still the caller's.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

/// Stores a pair only while the lock is the caller's (0 otherwise) and `gen` is still the one
/// it read (-1 otherwise).
static COMMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local g = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') or 0
if g ~= tonumber(ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], 'access', ARGV[3], 'refresh', ARGV[4], 'gen', ARGV[5],
  'expires_at', ARGV[6], 'seed', ARGV[7])
return 1",
    )
});

fn tok_key() -> String {
    k("tok")
}

fn lock_key() -> String {
    k("lock:refresh")
}

fn nonce(shared: &Shared) -> String {
    format!("{}:{:016x}", shared.instance(), fastrand::u64(..))
}

/// The fleet's pair as Redis holds it.
struct Stored {
    generation: u64,
    seed: Option<String>,
    pair: Option<Minted>,
}

impl Stored {
    fn from_map(map: &HashMap<String, String>) -> Stored {
        let generation = map.get("gen").and_then(|g| g.parse().ok()).unwrap_or(0);
        let nonempty = |f: &str| map.get(f).filter(|v| !v.is_empty()).cloned();
        let pair = match (nonempty("access"), nonempty("refresh")) {
            (Some(access), Some(refresh)) if generation > 0 => Some(Minted {
                access: Secret::new(access),
                refresh: Secret::new(refresh),
                minted_at: map
                    .get("expires_at")
                    .and_then(|e| e.parse::<u64>().ok())
                    .map_or_else(SystemTime::now, |ms| {
                        (UNIX_EPOCH + Duration::from_millis(ms))
                            .checked_sub(TOKEN_LIFETIME)
                            .unwrap_or(UNIX_EPOCH)
                    }),
                generation,
            }),
            _ => None,
        };
        Stored {
            generation,
            seed: nonempty("seed"),
            pair,
        }
    }
}

/// The fleet's generation and seed, and whether the lock is held (no secrets read).
struct Peek {
    generation: u64,
    seed: Option<String>,
    locked: bool,
}

async fn peek(shared: &Shared) -> Result<Peek, SharedError> {
    let mut pipe = redis::pipe();
    pipe.cmd("HMGET").arg(tok_key()).arg("gen").arg("seed");
    pipe.cmd("EXISTS").arg(lock_key());
    let (fields, locked): (Vec<Option<String>>, bool) = shared.pipe(CMD_LIMIT, &pipe).await?;
    let mut fields = fields.into_iter();
    Ok(Peek {
        generation: fields
            .next()
            .flatten()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0),
        seed: fields.next().flatten().filter(|s| !s.is_empty()),
        locked,
    })
}

async fn read(shared: &Shared) -> Result<Stored, SharedError> {
    let mut cmd = redis::cmd("HGETALL");
    cmd.arg(tok_key());
    let map: HashMap<String, String> = shared.query(CMD_LIMIT, &cmd).await?;
    Ok(Stored::from_map(&map))
}

async fn lock(shared: &Shared, nonce: &str) -> Result<bool, SharedError> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(lock_key())
        .arg(nonce)
        .arg("NX")
        .arg("PX")
        .arg(LOCK_TTL.as_millis() as u64);
    let r: Option<String> = shared.query(CMD_LIMIT, &cmd).await?;
    Ok(r.is_some())
}

async fn unlock(shared: &Shared, nonce: &str) {
    let mut inv = RELEASE.key(lock_key());
    inv.arg(nonce);
    if let Err(e) = shared.script::<i64>(CMD_LIMIT, &inv).await {
        tracing::debug!(error = %e, "could not release the refresh lock; it expires by itself");
    }
}

/// Stores `t` if the lock is still `nonce` and `gen` is still `seen`.
async fn commit(
    m: &RefreshManager,
    shared: &Shared,
    nonce: &str,
    seen: u64,
    t: &Minted,
) -> Result<bool, SharedError> {
    let expires_at = (t.minted_at + TOKEN_LIFETIME)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut inv = COMMIT.key(tok_key());
    inv.key(lock_key())
        .arg(nonce)
        .arg(seen)
        .arg(t.access.expose())
        .arg(t.refresh.expose())
        .arg(t.generation)
        .arg(expires_at)
        .arg(&m.seed_sha256);
    Ok(shared.script::<i64>(CMD_LIMIT, &inv).await? == 1)
}

/// Whether a pair stored with `seed` descends from this instance's seed (a pair stored without
/// one is taken as ours).
fn ours(m: &RefreshManager, seed: &Option<String>) -> bool {
    seed.as_deref().is_none_or(|s| s == m.seed_sha256)
}

/// The token in use if it is newer than `base`.
fn newer_than(m: &RefreshManager, base: u64) -> Option<(Secret, u64)> {
    m.current().filter(|(_, g)| *g > base)
}

/// Adopts what Redis holds if it is ours and newer than `base`.
async fn adopt_stored(m: &RefreshManager, stored: &Stored, base: u64) {
    if ours(m, &stored.seed)
        && let Some(pair) = &stored.pair
        && pair.generation > base
    {
        m.adopt(pair).await;
    }
}

/// An exchange without the fleet (Redis unreachable).
async fn alone(m: &RefreshManager) -> Result<(Secret, u64), Arc<RefreshError>> {
    m.exchange_alone(0, None)
        .await
        .map(|t| (t.access, t.generation))
}

/// One exchange for the single-flight task: as the lock's holder, or by waiting for the
/// holder's pair; without the fleet only when Redis does not answer.
pub(super) async fn exchange(
    m: &Arc<RefreshManager>,
    shared: &Shared,
) -> Result<(Secret, u64), Arc<RefreshError>> {
    // The generation this exchange replaces: anything newer (adopted meanwhile) will do.
    let base = m.generation();
    let deadline = Instant::now() + WAIT_FOR_HOLDER;
    loop {
        let nonce = nonce(shared);
        match lock(shared, &nonce).await {
            Ok(true) => {
                let r = hold(m, shared, &nonce, base).await;
                unlock(shared, &nonce).await;
                return r;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Redis did not answer: refreshing the Factory access token without the fleet's lock");
                return alone(m).await;
            }
        }
        // Another instance is exchanging: wait for its pair.
        let mut redis_answers = true;
        loop {
            if let Some(newer) = newer_than(m, base) {
                return Ok(newer);
            }
            if Instant::now() >= deadline {
                if !redis_answers {
                    tracing::warn!(
                        "Redis stopped answering while another instance refreshed: refreshing without the fleet's lock"
                    );
                    return alone(m).await;
                }
                return Err(Arc::new(RefreshError::Transport(UpstreamError::Other(
                    format!(
                        "another instance's WorkOS refresh did not finish within {} s",
                        WAIT_FOR_HOLDER.as_secs()
                    ),
                ))));
            }
            tokio::time::sleep(WAIT_STEP).await;
            match peek(shared).await {
                // The holder may still be exchanging: keep waiting (bounded).
                Err(_) => redis_answers = false,
                Ok(p) if p.generation > base && ours(m, &p.seed) => {
                    redis_answers = true;
                    if let Ok(stored) = read(shared).await {
                        adopt_stored(m, &stored, base).await;
                    }
                }
                // Released without a pair for us: take the lock.
                Ok(p) if !p.locked => break,
                Ok(_) => redis_answers = true,
            }
        }
    }
}

/// The holder's part: the fleet's newer pair if there is one, else WorkOS and a fenced commit.
async fn hold(
    m: &Arc<RefreshManager>,
    shared: &Shared,
    nonce: &str,
    base: u64,
) -> Result<(Secret, u64), Arc<RefreshError>> {
    let seen = match read(shared).await {
        Ok(s) => s,
        Err(e) => {
            // The lock is ours: nobody else exchanges; the pair is offered later.
            tracing::warn!(error = %e, "could not read the fleet's token: refreshing without it");
            return alone(m).await;
        }
    };
    adopt_stored(m, &seen, base).await;
    if let Some(newer) = newer_than(m, base) {
        return Ok(newer);
    }
    if !ours(m, &seen.seed) {
        tracing::warn!(
            "the fleet's token descends from another refresh token (is DROID_REFRESH_KEY the same on every instance?): replacing it with this instance's"
        );
    }
    let t = m
        .exchange_alone(seen.generation, Some(WORKOS_DEADLINE))
        .await?;
    match commit(m, shared, nonce, seen.generation, &t).await {
        Ok(true) => {
            tracing::debug!(generation = t.generation, "shared the refreshed token")
        }
        Ok(false) => tracing::warn!(
            generation = t.generation,
            "the refreshed token was not shared (the refresh lock expired, or another instance stored a token meanwhile); this instance keeps its own"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            generation = t.generation,
            "could not share the refreshed token; it is offered again when Redis answers"
        ),
    }
    Ok((t.access, t.generation))
}

/// Adopts the fleet's pair when it is newer; offers ours when Redis is behind. Returns whether
/// Redis answered.
async fn sync(m: &RefreshManager, shared: &Shared) -> bool {
    let Ok(p) = peek(shared).await else {
        return false;
    };
    let local = m.generation();
    if p.generation > local {
        if ours(m, &p.seed)
            && let Ok(stored) = read(shared).await
        {
            adopt_stored(m, &stored, local).await;
        }
    } else if p.generation < local && !p.locked {
        offer(m, shared).await;
    }
    true
}

/// Stores this instance's pair if Redis holds an older generation (same fence as an exchange).
async fn offer(m: &RefreshManager, shared: &Shared) {
    let nonce = nonce(shared);
    if !matches!(lock(shared, &nonce).await, Ok(true)) {
        return;
    }
    if let (Ok(seen), Some(t)) = (read(shared).await, m.minted())
        && seen.generation < t.generation
        && matches!(
            commit(m, shared, &nonce, seen.generation, &t).await,
            Ok(true)
        )
    {
        tracing::info!(
            generation = t.generation,
            "shared this instance's newer Factory access token with the fleet"
        );
    }
    unlock(shared, &nonce).await;
}

/// The background loop with a fleet: every second, follow the fleet's generation; exchange
/// ahead of expiry while Redis answers, and only when the token is unusable while it does not.
pub(super) async fn run(m: Arc<RefreshManager>, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if cancel.is_cancelled() {
            return;
        }
        wait = POLL_EVERY;
        let up = sync(&m, &shared).await;
        if !m.backoff_remaining().is_zero() {
            continue;
        }
        let due = if up {
            m.next_due().is_zero()
        } else {
            m.expired()
        };
        if due {
            // A failure is logged and sets the backoff.
            let _ = m.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_stored_pair_needs_both_tokens_and_a_generation() {
        let s = Stored::from_map(&map(&[
            ("access", "at"),
            ("refresh", "rt"),
            ("gen", "4"),
            ("expires_at", "1700028800000"),
            ("seed", "abc"),
        ]));
        assert_eq!(s.generation, 4);
        assert_eq!(s.seed.as_deref(), Some("abc"));
        let p = s.pair.unwrap();
        assert_eq!((p.access.expose(), p.refresh.expose()), ("at", "rt"));
        assert_eq!(p.generation, 4);
        // expires_at is minted + 8 h.
        assert_eq!(
            p.minted_at,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
        );

        let empty = Stored::from_map(&HashMap::new());
        assert_eq!(empty.generation, 0);
        assert!(empty.pair.is_none() && empty.seed.is_none());
        assert!(
            Stored::from_map(&map(&[("access", "at"), ("gen", "2")]))
                .pair
                .is_none()
        );
        assert!(
            Stored::from_map(&map(&[("access", "at"), ("refresh", "rt")]))
                .pair
                .is_none(),
            "no generation"
        );
        // An unreadable generation counts as none.
        assert_eq!(Stored::from_map(&map(&[("gen", "x")])).generation, 0);
    }
}
