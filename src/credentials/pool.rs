//! Level 2: the key pool — keys in priority tiers, one of six selection algorithms, per-key
//! health, and the admin operations over them.
//!
//! All state lives in memory behind one `std::sync::Mutex`, taken for sub-microsecond critical
//! sections and never across an await; nothing is logged while it is held (what to log is
//! collected, the lock released, then it is logged). Every change is handed to the store
//! (write-behind) while the lock is held, so the database sees changes in the order memory did;
//! admin changes then wait for the store's acknowledgement (outside the lock) before their 2xx
//! reply. Per-request counters accumulate here and are written in batches by
//! [`KeyPool::flush_counters`].
//!
//! Picks stay O(log n) however many keys cool: a key that cannot serve for a while (cooling, or
//! a probe in flight) leaves its tier's selection index for the tier's wake queue and returns
//! when its time comes (`tiers.rs`); admin changes move keys one by one, and bulk operations
//! take the lock once and commit once (`admin.rs`).

mod admin;
pub mod health;
mod remote;
pub mod select;
pub mod sticky;
mod tiers;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::config::KeyPoolSettings;
use crate::secret::Secret;
use crate::store::records::{
    CounterDelta, DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, EventSource, KeyEvent, KeyRecord,
    KeyStatus, Millis, PoolGroup, StoreOp,
};
use crate::store::sqlite::{SqliteError, Store};
use crate::telemetry::metrics as m;

pub use health::{Health, Outcome};
pub use select::{Algorithm, Rank};
pub use sticky::{Conversation, StickyResult};

/// Wall-clock time in milliseconds; tests substitute their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> Millis;
}

/// The real clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// Why a change was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] SqliteError),
    /// The shared state (Redis) did not take it.
    #[error("{0}")]
    Shared(String),
}

/// Where pool changes go (the SQLite store, and Redis when instances share state; a recorder in
/// tests). `enqueue` never blocks.
pub trait Persist: Send + Sync + std::fmt::Debug {
    /// Queues ops (order preserved across calls).
    fn enqueue(&self, ops: Vec<StoreOp>);
    /// Queues ops and returns a receiver resolved once they are durable.
    fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), PersistError>>;
    /// Queues ops for this instance's local store only (changes another instance made).
    fn enqueue_local(&self, ops: Vec<StoreOp>) {
        self.enqueue(ops);
    }
    /// Whether an admin change may be made now: not while the shared state is unreachable
    /// (asked with a round trip, so a Redis that stopped answering a moment ago refuses too).
    fn writable(&self) -> futures_util::future::BoxFuture<'static, Result<(), PersistError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Persist for Store {
    fn enqueue(&self, ops: Vec<StoreOp>) {
        self.submit(ops);
    }

    fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), PersistError>> {
        let rx = Store::enqueue_acked(self, ops);
        let (tx, out) = oneshot::channel();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let r = match rx.await {
                        Ok(r) => r.map_err(PersistError::from),
                        Err(_) => Err(PersistError::Store(SqliteError::Closed)),
                    };
                    let _ = tx.send(r);
                });
            }
            Err(_) => {
                let _ = tx.send(Err(PersistError::Store(SqliteError::Closed)));
            }
        }
        out
    }
}

/// Fleet-wide round-robin positions (several instances), handed out without waiting.
pub trait Positions: Send + Sync + std::fmt::Debug {
    /// The next position of a tier (by priority), or `None` to use this instance's cursor.
    fn next(&self, tier: i64) -> Option<u64>;
}

/// The outcome of a pick.
#[derive(Debug)]
pub enum PoolPick {
    Key { id: String, secret: Secret },
    AllCooling { retry_after_s: u64 },
    NoActiveKey,
}

/// Admin-operation failures, mapped to the admin envelope's codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the change could not be saved: {0}")]
    Persist(String),
    /// The store did not take or confirm the change in time (it is applied in memory).
    #[error("{0}")]
    Unavailable(String),
    /// The shared state (Redis) is unreachable: the change was not made, or not confirmed.
    #[error("{0}")]
    Shared(String),
}

/// A key's balance from the last Factory sync (filled by the usage issue's sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    pub used: u64,
    pub allowance: u64,
    pub synced_at: Millis,
    /// End of the key's free trial, when known.
    pub trial_end: Option<Millis>,
}

/// One key in memory.
#[derive(Debug, Clone)]
struct Slot {
    rec: KeyRecord,
    health: Health,
    /// The priority of the key's group (its tier), kept in step with the groups.
    priority: i64,
    /// Where the key sits in the tiers (kept in step by `Inner::place`).
    placed: tiers::Placement,
    /// The status the pool's counts hold for this key.
    counted: Option<KeyStatus>,
    /// Requests per hour, ring of 24 (hour number, count).
    hours: [(i64, u32); 24],
    /// Outcomes of the last 100 requests (bit = success), newest in bit 0.
    recent: u128,
    recent_len: u8,
    balance: Option<Balance>,
    /// This gateway's tokens on the key since the last balance sync.
    tokens_since_sync: u64,
    /// The key's place in the fleet-wide round-robin order.
    order: u64,
}

impl Slot {
    fn new(rec: KeyRecord, priority: i64) -> Self {
        Slot {
            order: select::ring_order(&rec.id),
            rec,
            health: Health::default(),
            priority,
            placed: tiers::Placement::Out,
            counted: None,
            hours: [(i64::MIN, 0); 24],
            recent: 0,
            recent_len: 0,
            balance: None,
            tokens_since_sync: 0,
        }
    }

    fn requests_24h(&self, now: Millis) -> u64 {
        let hour = now / 3_600_000;
        self.hours
            .iter()
            .filter(|(h, _)| *h > hour - 24)
            .map(|(_, c)| *c as u64)
            .sum()
    }

    fn count_request(&mut self, now: Millis) {
        let hour = now / 3_600_000;
        let b = &mut self.hours[(hour.rem_euclid(24)) as usize];
        if b.0 != hour {
            *b = (hour, 0);
        }
        b.1 = b.1.saturating_add(1);
    }

    fn record_outcome(&mut self, success: bool) {
        self.recent = (self.recent << 1) | success as u128;
        self.recent &= (1u128 << 100) - 1;
        self.recent_len = (self.recent_len + 1).min(100);
    }

    fn rank(&self, now: Millis) -> Rank {
        let n = self.recent_len as f64;
        let s = self.recent.count_ones() as f64;
        let ratio = (s + 1.0) / (n + 2.0);
        let gateway_tokens = match self.balance {
            Some(_) => self.tokens_since_sync,
            None => self.rec.input_tokens.saturating_add(self.rec.output_tokens),
        };
        Rank {
            order: self.order,
            requests_24h: self.requests_24h(now),
            weight: ratio * ratio,
            tokens_used: self
                .balance
                .map_or(0, |b| b.used)
                .saturating_add(gateway_tokens),
            remaining: self.balance.map(|b| {
                b.allowance
                    .saturating_sub(b.used)
                    .saturating_sub(self.tokens_since_sync)
            }),
        }
    }
}

/// Counts for `GET /admin/stats` and group listings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub active: u64,
    pub disabled: u64,
    pub banned: u64,
    pub cooling: u64,
}

/// A filter over keys (admin listing and export).
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// `active|disabled|banned|cooling`; `None` = all.
    pub status: Option<String>,
    pub pool: Option<String>,
    /// A case-insensitive substring of the id or the notes.
    pub q: Option<String>,
}

/// What a key listing is ordered by (ties: creation time, then id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeySort {
    #[default]
    Created,
    LastUsed,
    Requests,
    /// successes ÷ requests; keys without requests come last either way.
    SuccessRate,
    /// input + output tokens.
    Tokens,
    /// The remaining balance of the last sync; keys never synced come last either way.
    Balance,
}

impl KeySort {
    pub const NAMES: [&'static str; 6] = [
        "created",
        "last_used",
        "requests",
        "success_rate",
        "tokens",
        "balance",
    ];

    pub fn parse(name: &str) -> Option<KeySort> {
        Some(match name {
            "created" => KeySort::Created,
            "last_used" => KeySort::LastUsed,
            "requests" => KeySort::Requests,
            "success_rate" => KeySort::SuccessRate,
            "tokens" => KeySort::Tokens,
            "balance" => KeySort::Balance,
            _ => return None,
        })
    }

    /// The key's value for this order (`None` sorts last in both directions), scaled to an
    /// integer (success rate in millionths).
    fn value(self, s: &Slot) -> Option<u64> {
        let r = &s.rec;
        match self {
            KeySort::Created => Some(r.created_at.max(0) as u64),
            KeySort::LastUsed => r.last_used_at.map(|t| t.max(0) as u64),
            KeySort::Requests => Some(r.requests),
            KeySort::SuccessRate => (r.requests > 0)
                .then(|| r.successes.min(r.requests).saturating_mul(1_000_000) / r.requests),
            KeySort::Tokens => Some(r.input_tokens.saturating_add(r.output_tokens)),
            KeySort::Balance => s.balance.map(|b| b.allowance.saturating_sub(b.used)),
        }
    }
}

/// A key as admin views see it.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub rec: KeyRecord,
    pub cooling: bool,
    pub balance: Option<Balance>,
}

/// The result of a batch add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchResult {
    pub added: u64,
    pub duplicate: u64,
    pub invalid: u64,
    pub ids: Vec<String>,
    /// `(line number starting at 1, reason)`.
    pub errors: Vec<(usize, String)>,
}

/// Bulk actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    Enable,
    Disable,
    Delete,
    Reset,
    Move,
}

struct Inner {
    settings: KeyPoolSettings,
    alg: Algorithm,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<String, usize>,
    /// SHA-256 of each secret → slot (duplicate detection without keeping a second copy of the
    /// secrets in plain form).
    by_secret: HashMap<[u8; 32], usize>,
    groups: BTreeMap<String, PoolGroup>,
    /// Tiers by priority (lowest number first); each holds the active keys of its groups: those
    /// that may serve in its selection index, the others in its wake queue. A tier without an
    /// active key does not exist.
    tiers: Vec<tiers::Tier>,
    /// Keys by stored status (kept in step by `place`).
    status_counts: tiers::StatusCounts,
    /// Keys waiting in a wake queue because they cool (not for a probe).
    cooling_waiting: u64,
    rng: fastrand::Rng,
    /// The hour the ranks of the least-used index are counted for.
    index_hour: i64,
    /// Least-used: the ready keys still to re-rank for `index_hour` (a few per pick).
    rerank: Vec<usize>,
    /// How many times the tiers were rebuilt from scratch (tests check key changes do not).
    rebuilds: u64,
    /// Bumped whenever a secret enters, leaves or changes (the scrubber rebuilds on it).
    secrets_generation: u64,
    /// The other instances' counters per key (contract §12), added to the admin views.
    fleet: HashMap<String, crate::store::redis::Counters>,
    /// Fleet-wide round-robin positions, when instances share state.
    positions: Option<Arc<dyn Positions>>,
    /// Conversation pins (contract §14), per instance.
    pins: sticky::Pins,
}

/// The pool.
pub struct KeyPool {
    inner: Mutex<Inner>,
    persist: Option<Arc<dyn Persist>>,
    clock: Arc<dyn Clock>,
    pending: Mutex<HashMap<String, CounterDelta>>,
    conversations: sticky::Conversations,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool").finish_non_exhaustive()
    }
}

impl Default for KeyPool {
    fn default() -> Self {
        KeyPool::new(
            Vec::new(),
            Vec::new(),
            KeyPoolSettings::default(),
            None,
            Arc::new(SystemClock),
        )
    }
}

/// Whether a string is a valid key: 8–512 printable ASCII characters without spaces.
pub fn valid_key(k: &str) -> bool {
    (8..=512).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether a string is a valid group id (`[a-z0-9_-]{1,32}`).
pub fn valid_group_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The SHA-256 of a secret (the duplicate index).
fn fingerprint(secret: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).into()
}

fn transition_label(e: &KeyEvent) -> &'static str {
    match (e.to.as_str(), e.source) {
        (_, EventSource::Admin) => "admin",
        (_, EventSource::Import) => "import",
        ("banned", _) => "banned_402",
        ("disabled", _) => "disabled_401",
        ("cooling", _) if e.reason.starts_with("429") => "cooling_429",
        ("cooling", _) => "cooling_failures",
        ("active", EventSource::Test) => "restored_by_test",
        _ => "other",
    }
}

/// The priority of a group (unknown groups rank as `default`).
fn priority_of(groups: &BTreeMap<String, PoolGroup>, group: &str) -> i64 {
    groups
        .get(group)
        .or_else(|| groups.get(DEFAULT_GROUP))
        .map_or(DEFAULT_GROUP_PRIORITY, |g| g.priority)
}

impl Inner {
    fn slot(&self, id: &str) -> Option<&Slot> {
        self.by_id.get(id).and_then(|i| self.slots[*i].as_ref())
    }

    fn counts_where(&self, now: Millis, f: impl Fn(&KeyRecord) -> bool) -> Counts {
        let mut c = Counts::default();
        for s in self.slots.iter().flatten().filter(|s| f(&s.rec)) {
            c.total += 1;
            match s.rec.status {
                KeyStatus::Active => {
                    c.active += 1;
                    if s.rec.cooldown_until.is_some_and(|t| t > now) {
                        c.cooling += 1;
                    }
                }
                KeyStatus::Disabled => c.disabled += 1,
                KeyStatus::Banned => c.banned += 1,
            }
        }
        c
    }

    /// Adds a key to the table and places it in its tier.
    fn insert(&mut self, rec: KeyRecord, now: Millis) -> usize {
        let id = rec.id.clone();
        let secret = fingerprint(rec.secret.expose());
        let slot = Slot::new(rec, 0);
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, i);
        self.by_secret.insert(secret, i);
        self.secrets_generation += 1;
        self.regroup(i, now);
        i
    }

    /// Removes a key from its tier and the table.
    fn remove(&mut self, id: &str) -> Option<KeyRecord> {
        let i = *self.by_id.get(id)?;
        self.unplace(i);
        self.by_id.remove(id);
        let s = self.slots[i].take()?;
        self.by_secret.remove(&fingerprint(s.rec.secret.expose()));
        self.secrets_generation += 1;
        self.free.push(i);
        Some(s.rec)
    }

    /// The key's group (or that group's priority) changed: re-read its priority, then place it.
    fn regroup(&mut self, i: usize, now: Millis) {
        let Inner { slots, groups, .. } = self;
        if let Some(s) = slots[i].as_mut() {
            s.priority = priority_of(groups, &s.rec.pool_group);
        }
        self.place(i, now);
    }

    fn matches(&self, s: &Slot, f: &KeyFilter, now: Millis) -> bool {
        let status_ok = match f.status.as_deref() {
            None | Some("all") | Some("") => true,
            Some("cooling") => {
                s.rec.status == KeyStatus::Active && s.rec.cooldown_until.is_some_and(|t| t > now)
            }
            Some(other) => s.rec.status.as_str() == other,
        };
        let pool_ok = match f.pool.as_deref() {
            None | Some("") => true,
            Some(p) => s.rec.pool_group == p,
        };
        let q_ok = match f.q.as_deref() {
            None | Some("") => true,
            Some(q) => contains_ci(&s.rec.id, q) || contains_ci(&s.rec.notes, q),
        };
        status_ok && pool_ok && q_ok
    }
}

impl KeyPool {
    /// A pool over loaded records.
    pub fn new(
        keys: Vec<KeyRecord>,
        groups: Vec<PoolGroup>,
        settings: KeyPoolSettings,
        persist: Option<Arc<dyn Persist>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.now_ms();
        let alg = Algorithm::parse(&settings.algorithm).unwrap_or(Algorithm::RoundRobin);
        let mut inner = Inner {
            settings,
            alg,
            slots: Vec::with_capacity(keys.len()),
            free: Vec::new(),
            by_id: HashMap::with_capacity(keys.len()),
            by_secret: HashMap::with_capacity(keys.len()),
            groups: groups.into_iter().map(|g| (g.id.clone(), g)).collect(),
            tiers: Vec::new(),
            status_counts: tiers::StatusCounts::default(),
            cooling_waiting: 0,
            rng: fastrand::Rng::new(),
            index_hour: 0,
            rerank: Vec::new(),
            rebuilds: 0,
            secrets_generation: 0,
            fleet: HashMap::new(),
            positions: None,
            pins: sticky::Pins::default(),
        };
        inner
            .groups
            .entry(DEFAULT_GROUP.to_string())
            .or_insert_with(|| PoolGroup {
                id: DEFAULT_GROUP.into(),
                name: "Default".into(),
                priority: DEFAULT_GROUP_PRIORITY,
                description: String::new(),
                created_at: now,
            });
        // Loaded keys go into the table first and into the tiers in one build.
        for rec in keys {
            let id = rec.id.clone();
            let secret = fingerprint(rec.secret.expose());
            inner.slots.push(Some(Slot::new(rec, 0)));
            let i = inner.slots.len() - 1;
            inner.by_id.insert(id, i);
            inner.by_secret.insert(secret, i);
            inner.secrets_generation += 1;
        }
        inner.rebuild(now);
        let pool = KeyPool {
            inner: Mutex::new(inner),
            persist,
            clock,
            pending: Mutex::new(HashMap::new()),
            conversations: sticky::Conversations::default(),
        };
        pool.publish_gauges();
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Changes whenever a key's secret enters, leaves or changes (`credentials::scrub`).
    pub fn secrets_generation(&self) -> u64 {
        self.lock().secrets_generation
    }

    /// Every key's secret and the generation they belong to (`credentials::scrub`; error paths
    /// only, after a change of the key set).
    pub fn secrets(&self) -> (u64, Vec<Secret>) {
        let inner = self.lock();
        let secrets = inner
            .slots
            .iter()
            .flatten()
            .map(|s| s.rec.secret.clone())
            .collect();
        (inner.secrets_generation, secrets)
    }

    /// Configured = holds any key in any state (contract §5).
    pub fn is_configured(&self) -> bool {
        !self.lock().by_id.is_empty()
    }

    pub fn settings(&self) -> KeyPoolSettings {
        self.lock().settings.clone()
    }

    /// Applies new effective settings (the algorithm takes effect at once).
    pub fn set_settings(&self, settings: KeyPoolSettings) {
        let now = self.now();
        let mut inner = self.lock();
        let alg = Algorithm::parse(&settings.algorithm).unwrap_or(Algorithm::RoundRobin);
        if !settings.sticky_sessions {
            inner.pins.clear();
        }
        inner.settings = settings;
        if alg != inner.alg {
            inner.alg = alg;
            inner.rebuild(now);
        }
    }

    /// How many conversations are pinned now (stale pins included until they are dropped).
    pub fn sticky_pins(&self) -> usize {
        self.lock().pins.len()
    }

    /// Takes round-robin positions from the fleet (several instances).
    pub fn set_positions(&self, positions: Arc<dyn Positions>) {
        self.lock().positions = Some(positions);
    }

    /// Chooses an eligible key not in `exclude` (contract §5 and §7 tier rules).
    pub fn pick(&self, exclude: &[String]) -> PoolPick {
        self.pick_for(exclude, None)
    }

    /// A request's conversation from its identity (contract §14): a keyed hash, never the
    /// identity itself; `None` for an empty identity. `pin`: whether the request may create or
    /// move a pin.
    pub fn conversation(&self, identity: &str, pin: bool) -> Option<Conversation> {
        self.conversations.of(identity, pin)
    }

    /// [`KeyPool::pick`] for a request of a conversation: its pinned key serves while it may
    /// (`sticky_sessions`), else the pick is remembered (contract §14).
    pub fn pick_for(&self, exclude: &[String], conversation: Option<Conversation>) -> PoolPick {
        let now = self.now();
        let (pick, sticky) = self.lock().pick(exclude, now, conversation);
        if let Some(r) = sticky {
            metrics::counter!(m::STICKY, "result" => r.label()).increment(1);
        }
        match &pick {
            PoolPick::Key { .. } => {}
            PoolPick::AllCooling { .. } => {
                metrics::counter!(m::POOL_EXHAUSTED, "reason" => "cooling").increment(1)
            }
            PoolPick::NoActiveKey => {
                metrics::counter!(m::POOL_EXHAUSTED, "reason" => "no_active_key").increment(1)
            }
        }
        pick
    }

    /// Reports the upstream answer of a request served by `key_id`.
    pub fn report(&self, key_id: &str, outcome: &Outcome, source: EventSource) -> Option<KeyEvent> {
        let now = self.now();
        let event = {
            let mut inner = self.lock();
            let slot_index = *inner.by_id.get(key_id)?;
            let Inner {
                slots, settings, ..
            } = &mut *inner;
            let s = slots[slot_index].as_mut()?;
            let event = health::apply(&mut s.rec, &mut s.health, outcome, source, now, settings);
            if source == EventSource::Traffic && *outcome != Outcome::Cancelled {
                let success = *outcome == Outcome::Success;
                if success || outcome.key_failure() {
                    s.record_outcome(success);
                }
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let d = pending
                    .entry(key_id.to_string())
                    .or_insert_with(|| CounterDelta {
                        key_id: key_id.to_string(),
                        ..CounterDelta::default()
                    });
                d.requests = d.requests.saturating_add(1);
                s.rec.requests = s.rec.requests.saturating_add(1);
                if success {
                    d.successes = d.successes.saturating_add(1);
                    s.rec.successes = s.rec.successes.saturating_add(1);
                } else if outcome.key_failure() {
                    d.failures = d.failures.saturating_add(1);
                    s.rec.failures = s.rec.failures.saturating_add(1);
                }
                d.last_used_at = Some(now);
            }
            if let Some(e) = &event
                && let Some(p) = &self.persist
            {
                p.enqueue(vec![
                    StoreOp::PutKeyState(s.rec.clone()),
                    StoreOp::AddEvents(vec![e.clone()]),
                ]);
            }
            inner.place(slot_index, now);
            inner.update_rank(slot_index, now);
            event
        };
        // The lock is released: now count and log.
        if let Some(e) = &event {
            metrics::counter!(m::POOL_TRANSITIONS, "reason" => transition_label(e)).increment(1);
            tracing::info!(key = %e.key_id, from = e.from.as_deref().unwrap_or("-"), to = %e.to, reason = %e.reason, "key state changed");
            self.publish_gauges();
        }
        event
    }

    /// Adds the tokens a request used (input including cached reads and writes; output).
    pub fn add_tokens(&self, key_id: &str, input: u64, output: u64) {
        if input == 0 && output == 0 {
            return;
        }
        let now = self.now();
        let mut inner = self.lock();
        let Some(&i) = inner.by_id.get(key_id) else {
            return;
        };
        if let Some(s) = inner.slots[i].as_mut() {
            s.rec.input_tokens = s.rec.input_tokens.saturating_add(input);
            s.rec.output_tokens = s.rec.output_tokens.saturating_add(output);
            s.tokens_since_sync = s
                .tokens_since_sync
                .saturating_add(input.saturating_add(output));
        }
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let d = pending
                .entry(key_id.to_string())
                .or_insert_with(|| CounterDelta {
                    key_id: key_id.to_string(),
                    ..CounterDelta::default()
                });
            d.input_tokens = d.input_tokens.saturating_add(input);
            d.output_tokens = d.output_tokens.saturating_add(output);
        }
        inner.update_rank(i, now);
    }

    /// Records a balance sync result for a key (used by the token algorithms).
    pub fn set_balance(&self, key_id: &str, balance: Balance) {
        let now = self.now();
        let mut inner = self.lock();
        let Some(&i) = inner.by_id.get(key_id) else {
            return;
        };
        if let Some(s) = inner.slots[i].as_mut() {
            s.balance = Some(balance);
            s.tokens_since_sync = 0;
        }
        inner.update_rank(i, now);
    }

    /// Hands the accumulated per-request counters to the store (called every second and at
    /// shutdown).
    pub fn flush_counters(&self) {
        let batch: Vec<CounterDelta> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.is_empty() {
                return;
            }
            pending.drain().map(|(_, d)| d).collect()
        };
        if let Some(p) = &self.persist {
            p.enqueue(vec![StoreOp::AddCounters(batch)]);
        }
    }

    /// Publishes the keys-by-state gauges (from counts kept in step with every change: no scan
    /// of the keys). A key whose cooldown just ended counts as cooling until a pick (or this
    /// call, a bounded number per tier) wakes it.
    pub fn publish_gauges(&self) {
        let now = self.now();
        let (counts, cooling) = {
            let mut inner = self.lock();
            inner.sweep(now);
            (inner.status_counts, inner.cooling_waiting)
        };
        for (state, n) in [
            ("active", counts.active.saturating_sub(cooling)),
            ("cooling", cooling),
            ("disabled", counts.disabled),
            ("banned", counts.banned),
        ] {
            metrics::gauge!(m::POOL_KEYS, "state" => state).set(n as f64);
        }
    }

    // ----- admin reads -----

    pub fn stats(&self) -> (Counts, Vec<(PoolGroup, Counts)>) {
        let now = self.now();
        let inner = self.lock();
        let total = inner.counts_where(now, |_| true);
        let mut groups: Vec<&PoolGroup> = inner.groups.values().collect();
        groups.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        let per = groups
            .into_iter()
            .map(|g| (g.clone(), inner.counts_where(now, |r| r.pool_group == g.id)))
            .collect();
        (total, per)
    }

    /// Keys matching a filter, in `sort` order (descending with `desc`; ties by creation time
    /// and id), one page (`page` from 1).
    pub fn list(
        &self,
        filter: &KeyFilter,
        sort: KeySort,
        desc: bool,
        page: usize,
        limit: usize,
    ) -> (Vec<KeyView>, usize) {
        let now = self.now();
        let inner = self.lock();
        let mut all: Vec<&Slot> = inner
            .slots
            .iter()
            .flatten()
            .filter(|s| inner.matches(s, filter, now))
            .collect();
        all.sort_by(|a, b| {
            let by = match (sort.value(a), sort.value(b)) {
                (Some(x), Some(y)) if desc => y.cmp(&x),
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            by.then_with(|| (a.rec.created_at, &a.rec.id).cmp(&(b.rec.created_at, &b.rec.id)))
        });
        let total = all.len();
        let start = page.saturating_sub(1).saturating_mul(limit);
        let views = all
            .into_iter()
            .skip(start)
            .take(limit)
            .map(|s| {
                remote::with_fleet(
                    &inner,
                    KeyView {
                        rec: s.rec.clone(),
                        cooling: s.rec.status == KeyStatus::Active
                            && s.rec.cooldown_until.is_some_and(|t| t > now),
                        balance: s.balance,
                    },
                )
            })
            .collect();
        (views, total)
    }

    pub fn get(&self, id: &str) -> Option<KeyView> {
        let now = self.now();
        let inner = self.lock();
        inner.slot(id).map(|s| {
            remote::with_fleet(
                &inner,
                KeyView {
                    rec: s.rec.clone(),
                    cooling: s.rec.status == KeyStatus::Active
                        && s.rec.cooldown_until.is_some_and(|t| t > now),
                    balance: s.balance,
                },
            )
        })
    }

    pub fn ids(&self, filter: &KeyFilter) -> Vec<String> {
        self.list(filter, KeySort::Created, false, 1, usize::MAX)
            .0
            .into_iter()
            .map(|v| v.rec.id)
            .collect()
    }

    pub fn groups(&self) -> Vec<PoolGroup> {
        let mut g: Vec<PoolGroup> = self.lock().groups.values().cloned().collect();
        g.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        g
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod sticky_tests;

/// Whether `needle` occurs in `hay`, ignoring case (Unicode simple case folding).
fn contains_ci(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        return hay
            .as_bytes()
            .windows(needle.len().max(1))
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
    }
    hay.to_lowercase().contains(&needle.to_lowercase())
}
