//! Client keys (contract §13): the in-memory registry the edge authenticates `/v1/*` against,
//! each client's limits (requests per minute, requests and tokens per local day, a model
//! allow-list, an expiry) and its counters of today.
//!
//! - **Keys** are `d2a-` + 32 random bytes from the operating system, hex. Only their SHA-256
//!   digest is kept (memory and database) with a display mask made at creation; a key is shown
//!   once, by the create or rotate reply. Authentication hashes the presented value and looks the
//!   digest up in a hash map: the comparison is of digests, so its timing says nothing useful
//!   about any key (a near miss of the key is a random miss of the digest).
//! - **The table** sits behind one `std::sync::RwLock` taken for a lookup or a replacement, never
//!   across an await; an entry is an `Arc<Client>` that a request keeps for its lifetime.
//!   [`Clients::apply`] replaces one record (an admin change here or one applied from another
//!   instance) and keeps the client's counters and, when its `rpm` is unchanged, its rate
//!   limiter; [`Clients::forget`] drops one. Admin changes are queued to the store's admin
//!   lane (and, with Redis, to the shared change log: the pool's `Persist`) under the write
//!   lock, so the database sees them in memory's order, and acknowledged outside it; with Redis
//!   configured they are refused up front while it does not answer (503 `redis_unavailable`).
//! - **Requests per minute**: a `governor` GCRA limiter per client (burst = `rpm`, one more
//!   every `60/rpm` s), checked at the edge on every authenticated `/v1/*` request.
//! - **Daily quotas** count per local day in the configured zone: requests when admitted (the
//!   generation routes only: chat completions, responses, messages), tokens (`total_tokens`)
//!   when the request's usage record is made. A request is refused while `requests_today + 1 >
//!   requests_per_day` or `tokens_today >= tokens_per_day`; one already running is never cut.
//!   At start-up today's counters are seeded from the usage rollups per client
//!   ([`Clients::seed`]), so a restart does not reset a quota.
//! - **Several instances** (Redis): every instance counts its own share of a client's day
//!   (`DayCount::requests`/`tokens`), publishes it as an absolute total and learns the others'
//!   (`fleet_requests`/`fleet_tokens`) every 2 s ([`ClientTable`]); admission judges the sum,
//!   so a fleet-wide daily quota holds within that delay. Both only grow within a day (a
//!   value read back is taken as a maximum, never added), so this instance's own share is never
//!   counted twice. The `rpm` limiter stays per instance.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};

use axum::http::StatusCode;

use crate::credentials::pool::{Persist, PersistError};
use crate::error::ApiError;
use crate::store::StoreError;
use crate::store::records::{ClientRecord, Millis, StoreOp};
use crate::store::redis::{ClientTable, QuotaCounts};
use crate::store::sqlite::{SqliteError, Store};

/// The prefix of every client key.
pub const KEY_PREFIX: &str = "d2a-";
/// The prefix of every client id.
pub const ID_PREFIX: &str = "cli_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;

type Digest32 = [u8; 32];

/// SHA-256 of a key.
fn digest(key: &str) -> Digest32 {
    Sha256::digest(key.as_bytes()).into()
}

/// A new key and its digest (hex) and mask.
pub fn new_key() -> Result<(String, String, String), ClientsError> {
    let mut buf = [0u8; KEY_BYTES];
    getrandom::fill(&mut buf).map_err(|e| ClientsError::Random(e.to_string()))?;
    let key = format!("{KEY_PREFIX}{}", hex::encode(buf));
    let d = hex::encode(digest(&key));
    let m = mask(&key);
    Ok((key, d, m))
}

/// A new client id: `cli_` + 24 hex digits (a time-ordered UUID's random tail would do as
/// well; ids are not secrets).
pub fn new_id() -> String {
    format!("{ID_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// `d2a-abc…wxyz`: the prefix and three characters, then the last four.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 11 {
        return "…".to_string();
    }
    let head: String = chars[..7].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Failures of a registry change.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("client {0} does not exist")]
    NotFound(String),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sqlite(#[from] SqliteError),
    /// The shared state (Redis) is unreachable or did not take the change.
    #[error("{0}")]
    Shared(String),
}

impl From<PersistError> for ClientsError {
    fn from(e: PersistError) -> Self {
        match e {
            PersistError::Store(e) => ClientsError::Sqlite(e),
            PersistError::Shared(m) => ClientsError::Shared(m),
        }
    }
}

impl ClientsError {
    /// The store did not confirm in time (503) rather than failed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientsError::Store(e) => e.is_unavailable(),
            ClientsError::Sqlite(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

/// One client's counts of one local day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCount {
    /// Start of the local day (UTC ms).
    pub day_start: Millis,
    /// Start of the next local day (UTC ms).
    pub day_end: Millis,
    /// Counted by this instance.
    pub requests: u64,
    pub tokens: u64,
    /// The other instances' last known counts of the same day (zero without Redis).
    pub fleet_requests: u64,
    pub fleet_tokens: u64,
}

/// The local day containing `at`: its start and the next day's start.
fn day_bounds(at: Millis, tz: &TimeZone) -> (Millis, Millis) {
    let fallback = (
        at - at.rem_euclid(86_400_000),
        at - at.rem_euclid(86_400_000) + 86_400_000,
    );
    let Ok(ts) = Timestamp::from_millisecond(at) else {
        return fallback;
    };
    let zdt = ts.to_zoned_datetime(tz.clone());
    let Ok(start) = zdt.start_of_day() else {
        return fallback;
    };
    let end = start
        .tomorrow()
        .and_then(|t| t.start_of_day())
        .map(|t| t.timestamp().as_millisecond())
        .unwrap_or(fallback.1);
    (start.timestamp().as_millisecond(), end)
}

impl DayCount {
    /// Moves to the day of `now` when it is later than the one counted.
    fn roll(&mut self, now: Millis, tz: &TimeZone) {
        if now >= self.day_end {
            let (start, end) = day_bounds(now, tz);
            *self = DayCount {
                day_start: start,
                day_end: end,
                ..DayCount::default()
            };
        }
    }

    /// Requests of the day on every instance (this one's and the others' last known).
    pub fn total_requests(&self) -> u64 {
        self.requests.saturating_add(self.fleet_requests)
    }

    /// Tokens of the day on every instance.
    pub fn total_tokens(&self) -> u64 {
        self.tokens.saturating_add(self.fleet_tokens)
    }
}

/// Why a client's request was refused by its limits after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over `rpm`; retry after this many seconds (≥ 1).
    RateLimited { rpm: u32, retry_after_s: u64 },
    /// Over a daily quota; retry at the next local midnight.
    Quota {
        what: &'static str,
        limit: u64,
        retry_after_s: u64,
    },
}

impl Refusal {
    /// The reason label (`droid2api_client_rejected_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::Quota { .. } => "quota_exceeded",
        }
    }

    /// The error, in whichever envelope the route renders it (429 with `Retry-After`).
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Refusal::RateLimited { rpm, retry_after_s } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this client key is limited to {rpm} requests per minute; retry in {retry_after_s} s"
                ),
            )
            .with_code("rate_limited")
            .with_retry_after(*retry_after_s),
            Refusal::Quota {
                what,
                limit,
                retry_after_s,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this client key has used its daily quota ({what}: {limit}); it renews at local midnight, in {retry_after_s} s"
                ),
            )
            .with_code("quota_exceeded")
            .with_retry_after(*retry_after_s),
        }
    }
}

/// The client key a `/v1/*` request was authenticated by: a request extension the edge sets and
/// the pipeline reads (the usage record's client, the daily quotas, the model allow-list).
#[derive(Debug, Clone)]
pub struct ClientAuth(pub Arc<Client>);

/// One client: its record, its limiter and its counters (shared with the entries that replace
/// it, so a change of limits or a rotation keeps them).
#[derive(Debug)]
pub struct Client {
    pub rec: ClientRecord,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    day: Arc<Mutex<DayCount>>,
    /// UTC ms of the last admitted request; 0 = never.
    last_used: Arc<AtomicI64>,
    tz: TimeZone,
}

impl Client {
    /// Whether the key has expired at `now`.
    pub fn expired(&self, now: Millis) -> bool {
        self.rec.expires_at.is_some_and(|t| now >= t)
    }

    /// Whether the model allow-list lets this request through: either the name it sent or the
    /// model id that name resolved to (a `model_redirects` target) is listed.
    pub fn allows_model(&self, requested: &str, resolved: &str) -> bool {
        match &self.rec.models {
            None => true,
            Some(list) => list.iter().any(|m| m == requested || m == resolved),
        }
    }

    /// When the client was last admitted.
    pub fn last_used_at(&self) -> Option<Millis> {
        match self.last_used.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    fn lock_day(&self) -> std::sync::MutexGuard<'_, DayCount> {
        self.day.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the tokens of a request that arrived at `at` (its usage record's time), to today's
    /// count when `at` is today: a request that began yesterday counts for yesterday, as its
    /// usage record does.
    pub fn add_tokens(&self, at: Millis, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let mut d = self.lock_day();
        d.roll(at, &self.tz);
        if at >= d.day_start && at < d.day_end {
            d.tokens = d.tokens.saturating_add(tokens);
        }
    }
}

fn limiter_for(rpm: Option<u32>) -> Option<Arc<DefaultDirectRateLimiter>> {
    let n = NonZeroU32::new(rpm?)?;
    Some(Arc::new(RateLimiter::direct(Quota::per_minute(n))))
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, Arc<Client>>,
    by_digest: HashMap<Digest32, Arc<Client>>,
}

impl Table {
    /// Inserts or replaces a record, keeping the counters (and the limiter while `rpm` stays).
    fn apply(&mut self, rec: ClientRecord, tz: &TimeZone) -> Arc<Client> {
        let old = self.by_id.remove(&rec.id);
        if let Some(old) = &old {
            self.unindex(old);
        }
        let (limiter, day, last_used) = match old {
            Some(old) => (
                if old.rec.rpm == rec.rpm {
                    old.limiter.clone()
                } else {
                    limiter_for(rec.rpm)
                },
                Arc::clone(&old.day),
                Arc::clone(&old.last_used),
            ),
            None => (limiter_for(rec.rpm), Arc::default(), Arc::default()),
        };
        let client = Arc::new(Client {
            rec,
            limiter,
            day,
            last_used,
            tz: tz.clone(),
        });
        if let Some(d) = parse_digest(&client.rec.key_digest) {
            self.by_digest.insert(d, Arc::clone(&client));
        } else {
            tracing::warn!(client = %client.rec.id, "a client's key digest is not 64 hex digits: its key cannot authenticate");
        }
        self.by_id
            .insert(client.rec.id.clone(), Arc::clone(&client));
        client
    }

    fn unindex(&mut self, c: &Client) {
        if let Some(d) = parse_digest(&c.rec.key_digest) {
            self.by_digest.remove(&d);
        }
    }
}

fn parse_digest(hex_digest: &str) -> Option<Digest32> {
    hex::decode(hex_digest).ok()?.try_into().ok()
}

/// The registry of client keys.
#[derive(Debug)]
pub struct Clients {
    tz: TimeZone,
    table: RwLock<Table>,
    /// Whether any client exists (read on every `/v1/*` request without the lock).
    any: AtomicBool,
    /// Where changes go: the store, and Redis too when instances share state.
    persist: OnceLock<Arc<dyn Persist>>,
}

impl Clients {
    pub fn new(tz: TimeZone) -> Clients {
        Clients {
            tz,
            table: RwLock::new(Table::default()),
            any: AtomicBool::new(false),
            persist: OnceLock::new(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the stored clients (start-up) and where admin changes are written to.
    pub fn load(
        &self,
        records: Vec<ClientRecord>,
        last_used: &HashMap<String, Millis>,
        persist: Option<Arc<dyn Persist>>,
    ) {
        let mut t = self.write();
        for rec in records {
            let c = t.apply(rec, &self.tz);
            if let Some(at) = last_used.get(&c.rec.id) {
                c.last_used.store(*at, Ordering::Relaxed);
            }
        }
        self.any.store(!t.by_id.is_empty(), Ordering::Relaxed);
        drop(t);
        if let Some(p) = persist {
            let _ = self.persist.set(p);
        }
    }

    /// Whether any client key exists (then `/v1/*` requires a key).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// The client a presented key belongs to, if any. The key is hashed and its digest looked
    /// up: no comparison of the key itself happens, so timing reveals nothing about stored keys.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<Client>> {
        if !self.any() || !presented.starts_with(KEY_PREFIX) {
            return None;
        }
        let d = digest(presented);
        self.read().by_digest.get(&d).cloned()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.read().by_id.get(id).cloned()
    }

    /// Every client, oldest first.
    pub fn list(&self) -> Vec<Arc<Client>> {
        let mut all: Vec<Arc<Client>> = self.read().by_id.values().cloned().collect();
        all.sort_by(|a, b| (a.rec.created_at, &a.rec.id).cmp(&(b.rec.created_at, &b.rec.id)));
        all
    }

    /// Inserts or replaces one client record in memory only (a change made elsewhere, already
    /// stored there). Counters are kept; the limiter too while `rpm` is unchanged.
    pub fn apply(&self, rec: ClientRecord) -> Arc<Client> {
        let mut t = self.write();
        let c = t.apply(rec, &self.tz);
        self.any.store(true, Ordering::Relaxed);
        c
    }

    /// Forgets one client in memory only: its key stops working at once.
    pub fn forget(&self, id: &str) -> Option<Arc<Client>> {
        let mut t = self.write();
        let old = t.by_id.remove(id);
        if let Some(c) = &old {
            t.unindex(c);
        }
        self.any.store(!t.by_id.is_empty(), Ordering::Relaxed);
        old
    }

    /// Queues ops to the store's admin lane (under the caller's lock) and returns the wait.
    fn enqueue(
        &self,
        ops: Vec<StoreOp>,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<(), PersistError>>> {
        self.persist.get().map(|p| p.enqueue_acked(ops))
    }

    async fn acked(
        rx: Option<tokio::sync::oneshot::Receiver<Result<(), PersistError>>>,
    ) -> Result<(), ClientsError> {
        match rx {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(r) => r.map_err(ClientsError::from),
                Err(_) => Err(ClientsError::Sqlite(SqliteError::Closed)),
            },
        }
    }

    /// Refuses an admin change up front while the shared state (Redis) does not answer: it
    /// would diverge from the other instances.
    async fn writable(&self) -> Result<(), ClientsError> {
        match self.persist.get() {
            Some(p) => p.writable().await.map_err(ClientsError::from),
            None => Ok(()),
        }
    }

    /// Queues a change another instance made to this instance's store only.
    fn enqueue_local(&self, ops: Vec<StoreOp>) {
        if let Some(p) = self.persist.get() {
            p.enqueue_local(ops);
        }
    }

    /// Creates a client (applied in memory, then acknowledged by the store).
    pub async fn create(&self, rec: ClientRecord) -> Result<Arc<Client>, ClientsError> {
        self.writable().await?;
        let (c, rx) = {
            let mut t = self.write();
            let c = t.apply(rec.clone(), &self.tz);
            self.any.store(true, Ordering::Relaxed);
            (c, self.enqueue(vec![StoreOp::PutClient(rec)]))
        };
        Self::acked(rx).await?;
        Ok(c)
    }

    /// Changes a client with `change` under the lock (so two changes cannot interleave), then
    /// waits for the store. The change may fail (a validation against the current record).
    pub async fn update<E>(
        &self,
        id: &str,
        change: impl FnOnce(&mut ClientRecord) -> Result<(), E>,
    ) -> Result<Result<Arc<Client>, E>, ClientsError> {
        self.writable().await?;
        let (c, rx) = {
            let mut t = self.write();
            let Some(old) = t.by_id.get(id) else {
                return Err(ClientsError::NotFound(id.to_string()));
            };
            let mut rec = old.rec.clone();
            if let Err(e) = change(&mut rec) {
                return Ok(Err(e));
            }
            let c = t.apply(rec.clone(), &self.tz);
            (c, self.enqueue(vec![StoreOp::PutClient(rec)]))
        };
        Self::acked(rx).await?;
        Ok(Ok(c))
    }

    /// Deletes a client: forgotten in memory first (its key is refused from now on), then the
    /// row is deleted.
    pub async fn delete(&self, id: &str) -> Result<Arc<Client>, ClientsError> {
        self.writable().await?;
        let (c, rx) = {
            let mut t = self.write();
            let Some(old) = t.by_id.remove(id) else {
                return Err(ClientsError::NotFound(id.to_string()));
            };
            t.unindex(&old);
            self.any.store(!t.by_id.is_empty(), Ordering::Relaxed);
            (
                old,
                self.enqueue(vec![StoreOp::DeleteClient(id.to_string())]),
            )
        };
        Self::acked(rx).await?;
        Ok(c)
    }

    /// The requests-per-minute check (every authenticated `/v1/*` request takes one cell).
    pub fn check_rate(&self, c: &Client) -> Result<(), Refusal> {
        let Some(limiter) = &c.limiter else {
            return Ok(());
        };
        match limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(Refusal::RateLimited {
                    rpm: c.rec.rpm.unwrap_or(0),
                    retry_after_s: secs.max(1),
                })
            }
        }
    }

    /// Admits one request against the daily quotas at `now` and counts it.
    pub fn admit(&self, c: &Client, now: Millis) -> Result<(), Refusal> {
        let mut d = c.lock_day();
        d.roll(now, &self.tz);
        let retry_after_s = u64::try_from((d.day_end - now).max(0))
            .unwrap_or(0)
            .div_ceil(1000)
            .max(1);
        if let Some(limit) = c.rec.tokens_per_day
            && d.total_tokens() >= limit
        {
            return Err(Refusal::Quota {
                what: "tokens_per_day",
                limit,
                retry_after_s,
            });
        }
        if let Some(limit) = c.rec.requests_per_day
            && d.total_requests().saturating_add(1) > limit
        {
            return Err(Refusal::Quota {
                what: "requests_per_day",
                limit,
                retry_after_s,
            });
        }
        d.requests = d.requests.saturating_add(1);
        drop(d);
        c.last_used.fetch_max(now, Ordering::Relaxed);
        Ok(())
    }

    /// Today's counts of a client at `now`.
    pub fn today(&self, c: &Client, now: Millis) -> DayCount {
        let mut d = c.lock_day();
        d.roll(now, &self.tz);
        *d
    }

    /// Adds this instance's counts of the day starting at `day_start` (the usage rollups at
    /// start-up) to a client's; counts of another day are ignored.
    pub fn merge_day(&self, id: &str, day_start: Millis, requests: u64, tokens: u64) {
        self.with_day(id, day_start, |d| {
            d.requests = d.requests.saturating_add(requests);
            d.tokens = d.tokens.saturating_add(tokens);
        });
    }

    /// Raises a client's counts of the day starting at `day_start` to at least what is known
    /// from elsewhere: `own`, this instance's share as Redis holds it, and `fleet`, the other
    /// instances' sum. Counts only grow within a day, so a maximum (never a sum) is exact
    /// however often the same value arrives.
    pub fn raise_day(&self, id: &str, day_start: Millis, own: (u64, u64), fleet: (u64, u64)) {
        self.with_day(id, day_start, |d| {
            d.requests = d.requests.max(own.0);
            d.tokens = d.tokens.max(own.1);
            d.fleet_requests = d.fleet_requests.max(fleet.0);
            d.fleet_tokens = d.fleet_tokens.max(fleet.1);
        });
    }

    fn with_day(&self, id: &str, day_start: Millis, f: impl FnOnce(&mut DayCount)) {
        let Some(c) = self.get(id) else { return };
        let mut d = c.lock_day();
        d.roll(day_start, &self.tz);
        if d.day_start == day_start {
            f(&mut d);
        }
    }

    /// Seeds today's counters from the usage rollups per client (start-up, before serving):
    /// this instance's own rows as its share, and what it mirrors of the other instances'
    /// usage (with Redis) as the fleet's until Redis tells more.
    pub async fn seed(&self, store: &Store, now: Millis) -> Result<(), StoreError> {
        if !self.any() {
            return Ok(());
        }
        let (today, _) = day_bounds(now, &self.tz);
        let local: HashMap<String, (u64, u64)> = store
            .usage_by_local("client", today)
            .await?
            .into_iter()
            .filter(|(id, _, _)| id.starts_with(ID_PREFIX))
            .map(|(id, _, day)| (id, (day.requests, day.tokens.total())))
            .collect();
        for (id, (requests, tokens)) in &local {
            self.merge_day(id, today, *requests, *tokens);
        }
        for (id, _, day) in store.usage_by("client", today).await? {
            if !id.starts_with(ID_PREFIX) {
                continue;
            }
            let own = local.get(&id).copied().unwrap_or_default();
            let fleet = (
                day.requests.saturating_sub(own.0),
                day.tokens.total().saturating_sub(own.1),
            );
            self.raise_day(&id, today, (0, 0), fleet);
        }
        Ok(())
    }

    /// The configured zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The start of the local day containing `at`, and the next one.
    pub fn day_bounds(&self, at: Millis) -> (Millis, Millis) {
        day_bounds(at, &self.tz)
    }
}

impl ClientTable for Clients {
    fn apply_client(&self, id: &str, rec: Option<ClientRecord>) {
        let mut t = self.write();
        match rec {
            Some(rec) => {
                if t.by_id.get(id).is_some_and(|c| c.rec == rec) {
                    return;
                }
                t.apply(rec.clone(), &self.tz);
                self.any.store(true, Ordering::Relaxed);
                self.enqueue_local(vec![StoreOp::PutClient(rec)]);
            }
            None => {
                let Some(old) = t.by_id.remove(id) else {
                    return;
                };
                t.unindex(&old);
                self.any.store(!t.by_id.is_empty(), Ordering::Relaxed);
                self.enqueue_local(vec![StoreOp::DeleteClient(id.to_string())]);
            }
        }
    }

    fn replace_clients(&self, all: Vec<ClientRecord>) {
        let mut t = self.write();
        let keep: std::collections::HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
        let gone: Vec<String> = t
            .by_id
            .keys()
            .filter(|id| !keep.contains(id.as_str()))
            .cloned()
            .collect();
        let mut ops = Vec::new();
        for id in gone {
            if let Some(old) = t.by_id.remove(&id) {
                t.unindex(&old);
            }
            ops.push(StoreOp::DeleteClient(id));
        }
        for rec in all {
            if t.by_id.get(&rec.id).is_some_and(|c| c.rec == rec) {
                continue;
            }
            t.apply(rec.clone(), &self.tz);
            ops.push(StoreOp::PutClient(rec));
        }
        self.any.store(!t.by_id.is_empty(), Ordering::Relaxed);
        if !ops.is_empty() {
            self.enqueue_local(ops);
        }
    }

    fn local_clients(&self) -> Vec<ClientRecord> {
        self.list().iter().map(|c| c.rec.clone()).collect()
    }

    fn own_quota(&self, now: Millis) -> Option<(Millis, QuotaCounts)> {
        if !self.any() {
            return None;
        }
        let (today, _) = day_bounds(now, &self.tz);
        let clients: Vec<Arc<Client>> = self.read().by_id.values().cloned().collect();
        let mut out = QuotaCounts::new();
        for c in clients {
            let mut d = c.lock_day();
            d.roll(now, &self.tz);
            if d.day_start == today && (d.requests > 0 || d.tokens > 0) {
                out.insert(c.rec.id.clone(), (d.requests, d.tokens));
            }
        }
        Some((today, out))
    }

    fn fleet_quota(&self, day_start: Millis, others: QuotaCounts, mine: QuotaCounts) {
        let ids: Vec<String> = self.read().by_id.keys().cloned().collect();
        for id in ids {
            let own = mine.get(&id).copied().unwrap_or_default();
            let fleet = others.get(&id).copied().unwrap_or_default();
            self.raise_day(&id, day_start, own, fleet);
        }
    }
}

#[cfg(test)]
mod tests;
