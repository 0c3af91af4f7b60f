//! Level 2: the key pool — keys in priority tiers, one of six selection algorithms, per-key
//! health, and the admin operations over them.
//!
//! All state lives in memory behind one `std::sync::Mutex`, taken for sub-microsecond critical
//! sections and never across an await. Every change is handed to the store (write-behind) while
//! the lock is held, so the database sees changes in the order memory did; admin changes then wait
//! for the store's acknowledgement (outside the lock) before their 2xx reply. Per-request counters
//! accumulate here and are written in batches by [`KeyPool::flush_counters`].

pub mod health;
pub mod select;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::config::KeyPoolSettings;
use crate::secret::Secret;
use crate::store::records::{
    CounterDelta, DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, DisabledBy, EventSource, KeyEvent,
    KeyRecord, KeyStatus, LastTest, Millis, PoolGroup, StoreOp,
};
use crate::store::sqlite::{SqliteError, Store};
use crate::telemetry::metrics as m;

pub use health::{Health, Outcome};
pub use select::{Algorithm, Rank};

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

/// Where pool changes go (the SQLite store; a recorder in tests). `enqueue` never blocks.
pub trait Persist: Send + Sync + std::fmt::Debug {
    /// Queues ops (order preserved across calls).
    fn enqueue(&self, ops: Vec<StoreOp>);
    /// Queues ops and returns a receiver resolved once they are durable.
    fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), SqliteError>>;
}

impl Persist for Store {
    fn enqueue(&self, ops: Vec<StoreOp>) {
        self.submit(ops);
    }

    fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), SqliteError>> {
        Store::enqueue_acked(self, ops)
    }
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
    /// Requests per hour, ring of 24 (hour number, count).
    hours: [(i64, u32); 24],
    /// Outcomes of the last 100 requests (bit = success), newest in bit 0.
    recent: u128,
    recent_len: u8,
    balance: Option<Balance>,
    /// This gateway's tokens on the key since the last balance sync.
    tokens_since_sync: u64,
}

impl Slot {
    fn new(rec: KeyRecord) -> Self {
        Slot {
            rec,
            health: Health::default(),
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
    /// Tiers by priority (lowest number first); each holds the active keys of its groups.
    tiers: Vec<(i64, select::TierIndex)>,
    rng: fastrand::Rng,
    /// The hour the least-used index was built in (rebuilt when the hour changes).
    index_hour: i64,
    /// Bumped whenever a secret enters, leaves or changes (the scrubber rebuilds on it).
    secrets_generation: u64,
}

/// The pool.
pub struct KeyPool {
    inner: Mutex<Inner>,
    persist: Option<Arc<dyn Persist>>,
    clock: Arc<dyn Clock>,
    pending: Mutex<HashMap<String, CounterDelta>>,
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

fn new_key_id() -> String {
    format!("key_{}", uuid::Uuid::now_v7().simple())
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

impl Inner {
    fn slot(&self, id: &str) -> Option<&Slot> {
        self.by_id.get(id).and_then(|i| self.slots[*i].as_ref())
    }

    fn slot_mut(&mut self, id: &str) -> Option<&mut Slot> {
        match self.by_id.get(id) {
            Some(i) => self.slots[*i].as_mut(),
            None => None,
        }
    }

    fn group_priority(&self, group: &str) -> i64 {
        self.groups
            .get(group)
            .or_else(|| self.groups.get(DEFAULT_GROUP))
            .map_or(DEFAULT_GROUP_PRIORITY, |g| g.priority)
    }

    /// Rebuilds the tier indexes (after admin changes, algorithm changes, and hourly).
    fn rebuild(&mut self, now: Millis) {
        let mut by_priority: BTreeMap<i64, Vec<(usize, Rank)>> = BTreeMap::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(s) = s
                && s.rec.status == KeyStatus::Active
            {
                by_priority
                    .entry(self.group_priority(&s.rec.pool_group))
                    .or_default()
                    .push((i, s.rank(now)));
            }
        }
        let alg = self.alg;
        let rng = &mut self.rng;
        self.tiers = by_priority
            .into_iter()
            .map(|(p, members)| (p, select::TierIndex::new(alg, &members, rng)))
            .collect();
        self.index_hour = now / 3_600_000;
    }

    fn update_rank(&mut self, slot: usize, now: Millis) {
        let Some(s) = self.slots[slot].as_ref() else {
            return;
        };
        if s.rec.status != KeyStatus::Active {
            return;
        }
        let rank = s.rank(now);
        let priority = self.group_priority(&s.rec.pool_group);
        let rng = &mut self.rng;
        if let Some((_, idx)) = self.tiers.iter_mut().find(|(p, _)| *p == priority) {
            idx.update(slot, &rank, rng);
        }
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

    fn insert(&mut self, rec: KeyRecord) -> usize {
        let id = rec.id.clone();
        let secret = fingerprint(rec.secret.expose());
        let slot = Slot::new(rec);
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
        i
    }

    fn remove(&mut self, id: &str) -> Option<KeyRecord> {
        let i = self.by_id.remove(id)?;
        let s = self.slots[i].take()?;
        self.by_secret.remove(&fingerprint(s.rec.secret.expose()));
        self.secrets_generation += 1;
        self.free.push(i);
        Some(s.rec)
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
        status_ok && pool_ok
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
            rng: fastrand::Rng::new(),
            index_hour: 0,
            secrets_generation: 0,
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
        for k in keys {
            inner.insert(k);
        }
        inner.rebuild(now);
        let pool = KeyPool {
            inner: Mutex::new(inner),
            persist,
            clock,
            pending: Mutex::new(HashMap::new()),
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
        inner.settings = settings;
        if alg != inner.alg {
            inner.alg = alg;
            inner.rebuild(now);
        }
    }

    /// Chooses an eligible key not in `exclude` (contract §5 and §7 tier rules).
    pub fn pick(&self, exclude: &[String]) -> PoolPick {
        let now = self.now();
        let mut inner = self.lock();
        if inner.alg == Algorithm::LeastUsed && now / 3_600_000 != inner.index_hour {
            inner.rebuild(now);
        }
        let auto_fallback = inner.settings.auto_fallback;
        let Inner {
            tiers,
            slots,
            rng,
            by_id,
            ..
        } = &mut *inner;
        let excluded: Vec<usize> = exclude
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .collect();
        let mut eligible = |slot: usize| {
            !excluded.contains(&slot)
                && slots[slot]
                    .as_ref()
                    .is_some_and(|s| s.health.eligible(&s.rec, now))
        };
        let mut chosen = None;
        let mut serving_tier = None;
        for (t, (_, idx)) in tiers.iter_mut().enumerate() {
            if idx.is_empty() {
                continue;
            }
            if let Some(slot) = idx.pick(&mut eligible, rng) {
                chosen = Some(slot);
                break;
            }
            if !auto_fallback {
                // Strict tiers: only the highest-priority tier holding an active key serves.
                serving_tier = Some(t);
                break;
            }
        }
        if let Some(slot) = chosen
            && let Some(s) = slots[slot].as_mut()
        {
            s.health.on_pick(now);
            s.count_request(now);
            s.rec.last_used_at = Some(now);
            return PoolPick::Key {
                id: s.rec.id.clone(),
                secret: s.rec.secret.clone(),
            };
        }
        // Nothing eligible: 429 with the soonest cooldown among the active keys that could serve.
        let candidates: Vec<usize> = match serving_tier {
            Some(t) => tiers[t].1.members().to_vec(),
            None => tiers
                .iter()
                .flat_map(|(_, i)| i.members().iter().copied())
                .collect(),
        };
        if candidates.is_empty() {
            metrics::counter!(m::POOL_EXHAUSTED, "reason" => "no_active_key").increment(1);
            return PoolPick::NoActiveKey;
        }
        let soonest = candidates
            .iter()
            .filter_map(|s| slots[*s].as_ref())
            .filter_map(|s| {
                let cool = s.rec.cooldown_until.filter(|t| *t > now);
                let probe = s
                    .health
                    .probe_since
                    .filter(|_| s.health.half_open)
                    .map(|p| p + health::PROBE_TIMEOUT_MS)
                    .filter(|t| *t > now);
                cool.into_iter().chain(probe).min()
            })
            .min();
        let retry_after_s = soonest.map_or(1, |t| ((t - now + 999) / 1000).max(1) as u64);
        metrics::counter!(m::POOL_EXHAUSTED, "reason" => "cooling").increment(1);
        PoolPick::AllCooling { retry_after_s }
    }

    /// Reports the upstream answer of a request served by `key_id`.
    pub fn report(&self, key_id: &str, outcome: &Outcome, source: EventSource) -> Option<KeyEvent> {
        let now = self.now();
        let mut inner = self.lock();
        let settings = inner.settings.clone();
        let slot_index = *inner.by_id.get(key_id)?;
        let s = inner.slots[slot_index].as_mut()?;
        let before = s.rec.status;
        let event = health::apply(&mut s.rec, &mut s.health, outcome, source, now, &settings);
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
        let rec = s.rec.clone();
        if let Some(e) = &event {
            metrics::counter!(m::POOL_TRANSITIONS, "reason" => transition_label(e)).increment(1);
            tracing::info!(key = %rec.id, from = e.from.as_deref().unwrap_or("-"), to = %e.to, reason = %e.reason, "key state changed");
            if let Some(p) = &self.persist {
                p.enqueue(vec![
                    StoreOp::PutKeyState(rec.clone()),
                    StoreOp::AddEvents(vec![e.clone()]),
                ]);
            }
        }
        if before != rec.status {
            inner.rebuild(now);
        } else {
            inner.update_rank(slot_index, now);
        }
        drop(inner);
        if event.is_some() {
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

    /// Publishes the keys-by-state gauges.
    pub fn publish_gauges(&self) {
        let now = self.now();
        let c = self.lock().counts_where(now, |_| true);
        for (state, n) in [
            ("active", c.active - c.cooling),
            ("cooling", c.cooling),
            ("disabled", c.disabled),
            ("banned", c.banned),
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

    /// Keys matching a filter, in insertion order, one page (`page` from 1).
    pub fn list(&self, filter: &KeyFilter, page: usize, limit: usize) -> (Vec<KeyView>, usize) {
        let now = self.now();
        let inner = self.lock();
        let mut all: Vec<&Slot> = inner
            .slots
            .iter()
            .flatten()
            .filter(|s| inner.matches(s, filter, now))
            .collect();
        all.sort_by(|a, b| (a.rec.created_at, &a.rec.id).cmp(&(b.rec.created_at, &b.rec.id)));
        let total = all.len();
        let start = page.saturating_sub(1).saturating_mul(limit);
        let views = all
            .into_iter()
            .skip(start)
            .take(limit)
            .map(|s| KeyView {
                rec: s.rec.clone(),
                cooling: s.rec.status == KeyStatus::Active
                    && s.rec.cooldown_until.is_some_and(|t| t > now),
                balance: s.balance,
            })
            .collect();
        (views, total)
    }

    pub fn get(&self, id: &str) -> Option<KeyView> {
        let now = self.now();
        let inner = self.lock();
        inner.slot(id).map(|s| KeyView {
            rec: s.rec.clone(),
            cooling: s.rec.status == KeyStatus::Active
                && s.rec.cooldown_until.is_some_and(|t| t > now),
            balance: s.balance,
        })
    }

    pub fn ids(&self, filter: &KeyFilter) -> Vec<String> {
        self.list(filter, 1, usize::MAX)
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

    // ----- admin writes: applied in memory and queued under the lock, acknowledged after -----

    async fn acked(
        &self,
        rx: Option<oneshot::Receiver<Result<(), SqliteError>>>,
    ) -> Result<(), PoolError> {
        match rx {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) if e.is_unavailable() => Err(PoolError::Unavailable(e.to_string())),
                Ok(Err(e)) => Err(PoolError::Persist(e.to_string())),
                Err(_) => Err(PoolError::Persist("the store stopped".into())),
            },
        }
    }

    fn queue(&self, ops: Vec<StoreOp>) -> Option<oneshot::Receiver<Result<(), SqliteError>>> {
        self.persist.as_ref().map(|p| p.enqueue_acked(ops))
    }

    fn admin_event(
        rec: &KeyRecord,
        now: Millis,
        from: Option<&str>,
        to: &str,
        reason: &str,
    ) -> KeyEvent {
        KeyEvent {
            key_id: rec.id.clone(),
            at: now,
            from: from.map(str::to_string),
            to: to.to_string(),
            reason: reason.to_string(),
            source: EventSource::Admin,
        }
    }

    /// Adds one key; usable at once.
    pub async fn add_key(
        &self,
        key: &str,
        notes: Option<&str>,
        group: Option<&str>,
    ) -> Result<KeyRecord, PoolError> {
        let key = key.trim();
        if !valid_key(key) {
            return Err(PoolError::BadRequest(
                "key: expected 8 to 512 printable ASCII characters without spaces".into(),
            ));
        }
        let now = self.now();
        let (rec, rx) = {
            let mut inner = self.lock();
            if inner.by_secret.contains_key(&fingerprint(key)) {
                return Err(PoolError::Conflict(
                    "this key is already in the pool".into(),
                ));
            }
            let group = group
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .unwrap_or(DEFAULT_GROUP);
            if !inner.groups.contains_key(group) {
                return Err(PoolError::NotFound(format!(
                    "pool group {group} does not exist"
                )));
            }
            let rec = new_record(key, notes.unwrap_or(""), group, now);
            inner.insert(rec.clone());
            inner.rebuild(now);
            let ev = Self::admin_event(&rec, now, None, "active", "added");
            let rx = self.queue(vec![
                StoreOp::PutKey(rec.clone()),
                StoreOp::AddEvents(vec![ev]),
            ]);
            (rec, rx)
        };
        self.acked(rx).await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Adds many keys (one per entry); blank or invalid entries and duplicates are reported.
    pub async fn add_batch(
        &self,
        entries: &[String],
        group: Option<&str>,
    ) -> Result<BatchResult, PoolError> {
        let now = self.now();
        let mut result = BatchResult::default();
        let rx = {
            let mut inner = self.lock();
            let group = group
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .unwrap_or(DEFAULT_GROUP);
            if !inner.groups.contains_key(group) {
                return Err(PoolError::NotFound(format!(
                    "pool group {group} does not exist"
                )));
            }
            let mut ops = Vec::new();
            let mut events = Vec::new();
            for (i, raw) in entries.iter().enumerate() {
                let k = raw.trim();
                if k.is_empty() {
                    result.invalid += 1;
                    result.errors.push((i + 1, "blank line".into()));
                } else if !valid_key(k) {
                    result.invalid += 1;
                    result
                        .errors
                        .push((i + 1, "not a valid key: expected 8 to 512 printable ASCII characters without spaces".into()));
                } else if inner.by_secret.contains_key(&fingerprint(k)) {
                    result.duplicate += 1;
                    result
                        .errors
                        .push((i + 1, "duplicate: already in the pool".into()));
                } else {
                    let rec = new_record(k, "", group, now);
                    inner.insert(rec.clone());
                    events.push(Self::admin_event(
                        &rec,
                        now,
                        None,
                        "active",
                        "added (batch)",
                    ));
                    result.ids.push(rec.id.clone());
                    result.added += 1;
                    ops.push(StoreOp::PutKey(rec));
                }
            }
            if ops.is_empty() {
                None
            } else {
                inner.rebuild(now);
                ops.push(StoreOp::AddEvents(events));
                self.queue(ops)
            }
        };
        self.acked(rx).await?;
        self.publish_gauges();
        Ok(result)
    }

    /// Changes a key's secret and/or notes.
    pub async fn update(
        &self,
        id: &str,
        key: Option<&str>,
        notes: Option<&str>,
    ) -> Result<KeyRecord, PoolError> {
        let now = self.now();
        let (rec, rx) = {
            let mut inner = self.lock();
            let Some(&slot) = inner.by_id.get(id) else {
                return Err(PoolError::NotFound(format!("key {id} not found")));
            };
            if let Some(k) = key {
                let k = k.trim();
                if !valid_key(k) {
                    return Err(PoolError::BadRequest(
                        "key: expected 8 to 512 printable ASCII characters without spaces".into(),
                    ));
                }
                if inner
                    .by_secret
                    .get(&fingerprint(k))
                    .is_some_and(|s| *s != slot)
                {
                    return Err(PoolError::Conflict(
                        "another key in the pool has this value".into(),
                    ));
                }
                let old = inner.slots[slot]
                    .as_ref()
                    .map(|s| fingerprint(s.rec.secret.expose()));
                if let Some(old) = old {
                    inner.by_secret.remove(&old);
                }
                inner.by_secret.insert(fingerprint(k), slot);
                inner.secrets_generation += 1;
                if let Some(s) = inner.slots[slot].as_mut() {
                    s.rec.secret = Secret::new(k);
                    s.health = Health::default();
                }
            }
            let Some(s) = inner.slots[slot].as_mut() else {
                return Err(PoolError::NotFound(format!("key {id} not found")));
            };
            if let Some(n) = notes {
                s.rec.notes = n.to_string();
            }
            let rec = s.rec.clone();
            let mut ops = vec![StoreOp::PutKey(rec.clone())];
            if key.is_some() {
                let state = health::state_name(&rec, now);
                ops.push(StoreOp::AddEvents(vec![Self::admin_event(
                    &rec,
                    now,
                    Some(state),
                    state,
                    "key value replaced",
                )]));
            }
            (rec, self.queue(ops))
        };
        self.acked(rx).await?;
        Ok(rec)
    }

    /// Sets a key active or disabled (by an admin). Activating clears a ban and a cooldown.
    pub async fn toggle(&self, id: &str, status: KeyStatus) -> Result<KeyRecord, PoolError> {
        if status == KeyStatus::Banned {
            return Err(PoolError::BadRequest(
                "status: expected active or disabled".into(),
            ));
        }
        let now = self.now();
        let (rec, rx) = {
            let mut inner = self.lock();
            let Some(s) = inner.slot_mut(id) else {
                return Err(PoolError::NotFound(format!("key {id} not found")));
            };
            let from = health::state_name(&s.rec, now).to_string();
            s.rec.status = status;
            s.rec.status_changed_at = Some(now);
            s.rec.cooldown_until = None;
            s.health = Health::default();
            let reason = if status == KeyStatus::Active {
                s.rec.disabled_by = None;
                "enabled by an admin"
            } else {
                s.rec.disabled_by = Some(DisabledBy::Admin);
                "disabled by an admin"
            };
            s.rec.status_reason = Some(reason.into());
            let rec = s.rec.clone();
            inner.rebuild(now);
            let ev = Self::admin_event(&rec, now, Some(&from), status.as_str(), reason);
            (
                rec.clone(),
                self.queue(vec![StoreOp::PutKey(rec), StoreOp::AddEvents(vec![ev])]),
            )
        };
        self.acked(rx).await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Moves a key to another group.
    pub async fn move_key(&self, id: &str, group: &str) -> Result<KeyRecord, PoolError> {
        let now = self.now();
        let (rec, rx) = {
            let mut inner = self.lock();
            if !inner.groups.contains_key(group) {
                return Err(PoolError::NotFound(format!(
                    "pool group {group} does not exist"
                )));
            }
            let Some(s) = inner.slot_mut(id) else {
                return Err(PoolError::NotFound(format!("key {id} not found")));
            };
            s.rec.pool_group = group.to_string();
            let rec = s.rec.clone();
            inner.rebuild(now);
            (rec.clone(), self.queue(vec![StoreOp::PutKey(rec)]))
        };
        self.acked(rx).await?;
        Ok(rec)
    }

    /// Clears a key's cooldown and failure counts.
    pub async fn reset(&self, id: &str) -> Result<KeyRecord, PoolError> {
        let now = self.now();
        let (rec, rx) = {
            let mut inner = self.lock();
            let Some(s) = inner.slot_mut(id) else {
                return Err(PoolError::NotFound(format!("key {id} not found")));
            };
            let was = health::state_name(&s.rec, now).to_string();
            s.rec.cooldown_until = None;
            s.health = Health::default();
            let rec = s.rec.clone();
            let mut ops = vec![StoreOp::PutKeyState(rec.clone())];
            if was == "cooling" {
                ops.push(StoreOp::AddEvents(vec![Self::admin_event(
                    &rec,
                    now,
                    Some("cooling"),
                    "active",
                    "cooldown reset by an admin",
                )]));
            }
            (rec, self.queue(ops))
        };
        self.acked(rx).await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Deletes one key.
    pub async fn delete(&self, id: &str) -> Result<KeyRecord, PoolError> {
        let now = self.now();
        let (rec, rx) = {
            let mut inner = self.lock();
            let Some(rec) = inner.remove(id) else {
                return Err(PoolError::NotFound(format!("key {id} not found")));
            };
            inner.rebuild(now);
            let from = health::state_name(&rec, now);
            let ev = Self::admin_event(&rec, now, Some(from), "deleted", "deleted by an admin");
            (
                rec.clone(),
                self.queue(vec![
                    StoreOp::DeleteKey(rec.id.clone()),
                    StoreOp::AddEvents(vec![ev]),
                ]),
            )
        };
        self.acked(rx).await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Deletes every key with a status; returns how many.
    pub async fn delete_status(&self, status: KeyStatus) -> Result<u64, PoolError> {
        let ids = self.ids(&KeyFilter {
            status: Some(status.as_str().into()),
            pool: None,
        });
        let mut n = 0;
        for id in ids {
            if self.delete(&id).await.is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Applies an action to many keys; returns (count done, errors per id).
    pub async fn bulk(
        &self,
        ids: &[String],
        action: BulkAction,
        group: Option<&str>,
    ) -> (u64, Vec<(String, String)>) {
        let mut count = 0;
        let mut errors = Vec::new();
        for id in ids {
            let r = match action {
                BulkAction::Enable => self.toggle(id, KeyStatus::Active).await.map(|_| ()),
                BulkAction::Disable => self.toggle(id, KeyStatus::Disabled).await.map(|_| ()),
                BulkAction::Delete => self.delete(id).await.map(|_| ()),
                BulkAction::Reset => self.reset(id).await.map(|_| ()),
                BulkAction::Move => match group {
                    Some(g) => self.move_key(id, g).await.map(|_| ()),
                    None => Err(PoolError::BadRequest(
                        "poolGroup is required for move".into(),
                    )),
                },
            };
            match r {
                Ok(()) => count += 1,
                Err(e) => errors.push((id.clone(), e.to_string())),
            }
        }
        (count, errors)
    }

    /// Records a key test and applies its outcome (source `test`).
    pub async fn record_test(
        &self,
        id: &str,
        outcome: &Outcome,
        test: LastTest,
    ) -> Result<KeyRecord, PoolError> {
        let now = self.now();
        let (rec, rx) = {
            let mut inner = self.lock();
            let settings = inner.settings.clone();
            let Some(s) = inner.slot_mut(id) else {
                return Err(PoolError::NotFound(format!("key {id} not found")));
            };
            let before = s.rec.status;
            let event = health::apply(
                &mut s.rec,
                &mut s.health,
                outcome,
                EventSource::Test,
                now,
                &settings,
            );
            s.rec.last_test = Some(test);
            let rec = s.rec.clone();
            if before != rec.status {
                inner.rebuild(now);
            }
            let mut ops = vec![StoreOp::PutKeyState(rec.clone())];
            if let Some(e) = event {
                metrics::counter!(m::POOL_TRANSITIONS, "reason" => transition_label(&e))
                    .increment(1);
                ops.push(StoreOp::AddEvents(vec![e]));
            }
            (rec, self.queue(ops))
        };
        self.acked(rx).await?;
        self.publish_gauges();
        Ok(rec)
    }

    /// Creates a group.
    pub async fn create_group(
        &self,
        id: &str,
        name: &str,
        priority: i64,
        description: &str,
    ) -> Result<PoolGroup, PoolError> {
        if !valid_group_id(id) {
            return Err(PoolError::BadRequest(
                "id: expected 1 to 32 characters of a-z, 0-9, _ or -".into(),
            ));
        }
        if name.trim().is_empty() {
            return Err(PoolError::BadRequest("name: must not be empty".into()));
        }
        let now = self.now();
        let (g, rx) = {
            let mut inner = self.lock();
            if inner.groups.contains_key(id) {
                return Err(PoolError::Conflict(format!(
                    "pool group {id} already exists"
                )));
            }
            let g = PoolGroup {
                id: id.into(),
                name: name.trim().into(),
                priority,
                description: description.into(),
                created_at: now,
            };
            inner.groups.insert(id.into(), g.clone());
            inner.rebuild(now);
            (g.clone(), self.queue(vec![StoreOp::PutGroup(g)]))
        };
        self.acked(rx).await?;
        Ok(g)
    }

    /// Changes a group's name, priority or description.
    pub async fn update_group(
        &self,
        id: &str,
        name: Option<&str>,
        priority: Option<i64>,
        description: Option<&str>,
    ) -> Result<PoolGroup, PoolError> {
        let now = self.now();
        let (g, rx) = {
            let mut inner = self.lock();
            let Some(g) = inner.groups.get_mut(id) else {
                return Err(PoolError::NotFound(format!(
                    "pool group {id} does not exist"
                )));
            };
            if let Some(n) = name {
                if n.trim().is_empty() {
                    return Err(PoolError::BadRequest("name: must not be empty".into()));
                }
                g.name = n.trim().into();
            }
            if let Some(p) = priority {
                g.priority = p;
            }
            if let Some(d) = description {
                g.description = d.into();
            }
            let g = g.clone();
            inner.rebuild(now);
            (g.clone(), self.queue(vec![StoreOp::PutGroup(g)]))
        };
        self.acked(rx).await?;
        Ok(g)
    }

    /// Deletes a group; its keys move to `default`, which itself cannot be deleted.
    pub async fn delete_group(&self, id: &str) -> Result<(PoolGroup, u64), PoolError> {
        if id == DEFAULT_GROUP {
            return Err(PoolError::BadRequest(
                "the default pool group cannot be deleted".into(),
            ));
        }
        let now = self.now();
        let (g, moved, rx) = {
            let mut inner = self.lock();
            let Some(g) = inner.groups.remove(id) else {
                return Err(PoolError::NotFound(format!(
                    "pool group {id} does not exist"
                )));
            };
            let mut moved = 0;
            for s in inner.slots.iter_mut().flatten() {
                if s.rec.pool_group == id {
                    s.rec.pool_group = DEFAULT_GROUP.into();
                    moved += 1;
                }
            }
            inner.rebuild(now);
            let rx = self.queue(vec![StoreOp::DeleteGroup {
                id: id.into(),
                move_keys_to: DEFAULT_GROUP.into(),
            }]);
            (g, moved, rx)
        };
        self.acked(rx).await?;
        Ok((g, moved))
    }

    /// Waits until everything queued so far is durable (admin settings changes use this).
    pub async fn persist_ops(&self, ops: Vec<StoreOp>) -> Result<(), PoolError> {
        let rx = self.queue(ops);
        self.acked(rx).await
    }
}

fn new_record(key: &str, notes: &str, group: &str, now: Millis) -> KeyRecord {
    KeyRecord {
        id: new_key_id(),
        secret: Secret::new(key),
        status: KeyStatus::Active,
        status_reason: None,
        status_changed_at: Some(now),
        disabled_by: None,
        pool_group: group.to_string(),
        notes: notes.to_string(),
        created_at: now,
        last_used_at: None,
        cooldown_until: None,
        requests: 0,
        successes: 0,
        failures: 0,
        input_tokens: 0,
        output_tokens: 0,
        last_test: None,
    }
}

#[cfg(test)]
mod tests;
