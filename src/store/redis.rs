//! Shared state for several instances (contract §12), with Redis as the shared engine.
//!
//! Redis holds, while reachable, what instances share: the key set and every key's shared
//! fields (status, cooldown, group, notes, last test), pool groups, stored admin settings,
//! balances, console sessions, client keys (their digests, never the keys), each instance's own
//! key counters and client counts of today, and a change log. Nothing on the request path
//! waits on it: the pool keeps serving from its in-memory view, which this module updates.
//!
//! * **Writes** (`outbox.rs`): every change the pool hands to the store is also queued here and
//!   written by one task as one script per change: bump the global `ver`, write the record as
//!   `<ver>|<json>`, append `(v, kind, id, origin, data)` to the `log` stream. Traffic changes
//!   (bans, cooldowns) are write-behind and buffered while Redis is down (bounded, drops
//!   counted); admin changes are refused up front while Redis is down and otherwise wait (≤ 1 s)
//!   for Redis to take them. Counters are published as each instance's absolute totals
//!   (`kc:<instance>`), so a retry or a re-seed is exact; so are client keys' counts of the
//!   local day (`cq:<instance>:<day start>`, expiring after two days).
//! * **Reads** (`sync.rs`): one reader task follows the log with a blocking `XREAD` on its own
//!   connection and hands each entry to the [`Apply`] side (the pool), so a change reaches every
//!   instance in one round trip. A gap in the log (trimmed, or Redis replaced) triggers a full
//!   resync from the hashes. A supervisor checks `meta` every second: an empty Redis (restarted
//!   without persistence) is re-seeded from every instance's local state; a foreign epoch (a
//!   joining instance) merges its local keys that Redis does not know, then adopts Redis.
//!
//! Everything is under `droid2api:{v1}:` (one hash slot). This module knows no HTTP and nothing of
//! the pool's internals: the pool side implements [`Apply`].

mod link;
mod outbox;
pub mod rr;
mod sync;
pub mod usage;
pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::secret::Secret;
use crate::store::records::{
    BalanceRecord, ClientRecord, KeyEvent, KeyRecord, Millis, PoolGroup, StoreOp,
};
pub use link::Link;
pub use wire::Counters;

/// The prefix of every key (a hash tag: one cluster slot; a new schema gets a new prefix).
pub const PREFIX: &str = "droid2api:{v1}:";

/// Name of the file in the data folder holding this instance's stable id.
pub const INSTANCE_FILE: &str = "instance.id";

/// How long the round trip before an admin write may take.
const PING_LIMIT: Duration = Duration::from_millis(300);

/// How long an admin write waits for Redis to take it.
pub const ADMIN_WAIT: Duration = Duration::from_secs(1);

/// Traffic changes held while Redis is unreachable (older ones are dropped and counted).
pub const OUTBOX_CAP: usize = 10_000;

use crate::telemetry::metrics::{REDIS_DROPPED, REDIS_UP};

pub(crate) fn k(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Failures talking to Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    #[error("Redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("{0}")]
    Config(String),
    #[error("unreadable shared record: {0}")]
    Data(String),
    #[error(
        "Redis is unreachable; the change was not made (it would diverge from the other instances)"
    )]
    Down,
}

impl SharedError {
    fn from_redis(e: redis::RedisError) -> Self {
        SharedError::Redis(crate::secret::mask_userinfo(&e.to_string()))
    }
}

/// One change read from the log.
#[derive(Debug, Clone)]
pub enum Remote {
    /// A key's shared fields (its counters are zero: keep your own).
    Key(KeyRecord),
    DeleteKey(String),
    Group(PoolGroup),
    DeleteGroup {
        id: String,
        move_keys_to: String,
    },
    Setting {
        name: String,
        value: serde_json::Value,
    },
    ClearSettings,
    /// History rows written by another instance.
    Events(Vec<KeyEvent>),
    Balance(BalanceRecord),
    /// A console session opened elsewhere (its digest and its record, opaque here).
    Session {
        digest: String,
        data: String,
    },
    EndSession {
        digest: String,
    },
    /// A client key created or changed elsewhere (its digest, never the key).
    Client(ClientRecord),
    DeleteClient(String),
}

/// The console's session table, shared like the pool (a login on one instance is valid on
/// every one; a logout ends it everywhere). Records are opaque strings to this module.
pub trait SessionTable: Send + Sync {
    fn apply_session(&self, digest: &str, data: Option<&str>);
    /// Replaces every session with Redis's (a full resync).
    fn replace_sessions(&self, all: Vec<(String, String)>);
    /// The sessions this instance holds (to seed an empty Redis).
    fn local_sessions(&self) -> Vec<(String, String)>;
}

/// Per client id: `(requests, tokens)` of one local day.
pub type QuotaCounts = HashMap<String, (u64, u64)>;

/// The client keys of contract §13, shared like the pool: records through the change log, and
/// each instance's own counts of today published as absolute totals (`cq:<instance>:<day>`),
/// read back with the other instances' every 2 s.
pub trait ClientTable: Send + Sync {
    /// A client created or changed (`Some`) or deleted (`None`) elsewhere.
    fn apply_client(&self, id: &str, rec: Option<ClientRecord>);
    /// Replaces every client with Redis's (a full resync); counters of kept clients stay.
    fn replace_clients(&self, all: Vec<ClientRecord>);
    /// The clients this instance holds (to seed an empty Redis or merge when joining).
    fn local_clients(&self) -> Vec<ClientRecord>;
    /// The local day this instance counts at `now` (its start, UTC ms) and this instance's own
    /// counts of it per client; `None` when there is no client.
    fn own_quota(&self, now: Millis) -> Option<(Millis, QuotaCounts)>;
    /// What Redis holds for the day starting at `day_start`: the other instances' counts summed
    /// per client, and this instance's own as it last published them.
    fn fleet_quota(&self, day_start: Millis, others: QuotaCounts, mine: QuotaCounts);
}

/// The whole shared state (a full resync), or an instance's local state (seeding).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub keys: Vec<KeyRecord>,
    pub groups: Vec<PoolGroup>,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub balances: Vec<BalanceRecord>,
    /// Console sessions: digest → record.
    pub sessions: Vec<(String, String)>,
    pub clients: Vec<ClientRecord>,
}

/// The pool's side: applies what other instances changed. Calls never block on I/O (the local
/// store is written behind).
pub trait Apply: Send + Sync {
    fn apply(&self, change: Remote);
    /// Replaces the shared state with Redis's (keys not in it are removed).
    fn replace_all(&self, snap: Snapshot);
    /// This instance's current state, to seed an empty Redis or to merge when joining.
    fn local(&self) -> Snapshot;
    /// Every other instance's counters per key (this instance's own are not included).
    fn fleet_counters(&self, others: HashMap<String, Counters>);
    /// The client keys' side (records and daily counts), when there is one.
    fn clients(&self) -> Option<&dyn ClientTable> {
        None
    }
}

/// One queued shared write.
#[derive(Debug)]
struct Write {
    /// `put`, `del`, `clear` or `log` (only a log entry).
    op: &'static str,
    /// The hash (`keys`, `groups`, …) or "" for log-only entries.
    hash: &'static str,
    /// The tombstone hash written on `del`.
    tomb: &'static str,
    kind: &'static str,
    id: String,
    data: String,
    seq: u64,
    ack: Option<oneshot::Sender<Result<(), SharedError>>>,
}

#[derive(Debug, Default)]
struct State {
    outbox: std::collections::VecDeque<Write>,
    /// The latest local write per entity (`kind:id` → seq): an echo of an older write of ours
    /// is not applied (a newer one follows).
    latest: HashMap<String, u64>,
    /// This instance's counter totals per key, and which changed since the last publish.
    own: HashMap<String, Counters>,
    dirty: HashSet<String>,
    /// Keys deleted here whose counters must be removed from our `kc` hash.
    gone: HashSet<String>,
    /// The client counts Redis acknowledged for our `cq:<instance>:<day>` (day start, counts):
    /// only what changed since is written again.
    quota_sent: (Millis, QuotaCounts),
}

/// The handle to the shared engine.
pub struct Shared {
    inst: String,
    link: Link,
    up: AtomicBool,
    /// Cleared while an empty Redis is being re-seeded (admin writes wait for it).
    settled: AtomicBool,
    seq: AtomicU64,
    state: Mutex<State>,
    wake: Notify,
    /// Tells the supervisor to check now (after a reader or writer failure).
    check: Notify,
    apply: OnceLock<Arc<dyn Apply>>,
    dropped: AtomicU64,
    /// Round-robin positions claimed from the fleet counter.
    rr: rr::Blocks,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("instance", &self.inst)
            .field("redis", &self.link.masked)
            .field("up", &self.is_up())
            .finish()
    }
}

/// Reads (or creates) the data folder's stable instance id.
pub fn instance_id(data_dir: &std::path::Path) -> Result<String, crate::store::StoreError> {
    let path = data_dir.join(INSTANCE_FILE);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(s.to_string());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    crate::store::write_private_atomic(&path, id.as_bytes())?;
    Ok(id)
}

impl Shared {
    /// Prepares the engine (no connection is made yet). Must run inside a Tokio runtime.
    pub fn open(url: &Secret, inst: String) -> Result<Arc<Shared>, SharedError> {
        let link = Link::open(url)?;
        Ok(Arc::new(Shared {
            inst,
            link,
            up: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            check: Notify::new(),
            apply: OnceLock::new(),
            dropped: AtomicU64::new(0),
            rr: rr::Blocks::default(),
        }))
    }

    /// The Redis URL with its password masked.
    pub fn masked_url(&self) -> &str {
        &self.link.masked
    }

    pub fn instance(&self) -> &str {
        &self.inst
    }

    /// Whether Redis answered the last check and the shared state is in step.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::AcqRel);
        metrics::gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
        if was != up {
            if up {
                tracing::info!(redis = %self.link.masked, "Redis reachable: shared state in step");
                self.wake.notify_one();
            } else {
                tracing::warn!(redis = %self.link.masked, "Redis unreachable: serving from this instance's last known state; admin changes are refused until it returns");
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the reader, the writer and the supervisor on `tasks` and seeds this instance's
    /// counters from its loaded keys. `apply` is the pool's side.
    pub fn start(
        self: &Arc<Self>,
        apply: Arc<dyn Apply>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) {
        {
            let local = apply.local();
            let mut st = self.state();
            for r in &local.keys {
                st.own.insert(r.id.clone(), Counters::of(r));
                st.dirty.insert(r.id.clone());
            }
        }
        let _ = self.apply.set(apply);
        metrics::gauge!(REDIS_UP).set(0.0);
        tasks.spawn(sync::supervise(Arc::clone(self), stop.clone()));
        tasks.spawn(rr::claim_loop(Arc::clone(self), stop.clone()));
        tasks.spawn(outbox::write_loop(Arc::clone(self), stop));
    }

    /// The next fleet-wide round-robin position of a tier, when a claimed block has one (never
    /// waits: `None` means "use your own cursor").
    pub fn rr_next(&self, tier: i64) -> Option<u64> {
        if self.is_up() {
            self.rr.next(tier)
        } else {
            None
        }
    }

    /// Waits (bounded) until the first check and resync are done, so an instance starts serving
    /// with the fleet's keys. Returns whether Redis was reached.
    pub async fn first_sync(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.is_up() && self.settled.load(Ordering::Acquire) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Refuses an admin change while Redis is unreachable or being re-seeded.
    pub fn writable(&self) -> Result<(), SharedError> {
        if self.is_up() && self.settled.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(SharedError::Down)
        }
    }

    /// [`Shared::writable`], then a round trip: an admin change is made only while Redis
    /// answers, so a Redis that stopped answering since the last check refuses it too.
    pub async fn confirm_writable(&self) -> Result<(), SharedError> {
        self.writable()?;
        match self
            .link
            .query::<String>(PING_LIMIT, &redis::cmd("PING"))
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => {
                self.check.notify_one();
                Err(SharedError::Down)
            }
        }
    }

    /// Queues the shared part of store ops. With `acked`, returns a receiver resolved when
    /// Redis took every write (or failed).
    pub fn submit(
        &self,
        ops: &[StoreOp],
        acked: bool,
    ) -> Option<oneshot::Receiver<Result<(), SharedError>>> {
        let mut writes = Vec::new();
        {
            let mut st = self.state();
            for op in ops {
                self.translate(op, &mut st, &mut writes);
            }
        }
        if writes.is_empty() {
            if !acked {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Ok(()));
            return Some(rx);
        }
        let rx = if acked {
            let (tx, rx) = oneshot::channel();
            if let Some(last) = writes.last_mut() {
                last.ack = Some(tx);
            }
            Some(rx)
        } else {
            None
        };
        let mut dropped = 0u64;
        {
            let mut st = self.state();
            for w in writes {
                let ack_wanted = w.ack.is_some();
                st.outbox.push_back(w);
                // Bounded: drop the oldest traffic write (never one an admin waits for).
                while st.outbox.len() > OUTBOX_CAP && !ack_wanted {
                    match st.outbox.iter().position(|w| w.ack.is_none()) {
                        Some(i) => {
                            st.outbox.remove(i);
                            dropped += 1;
                        }
                        None => break,
                    }
                }
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            metrics::counter!(REDIS_DROPPED).increment(dropped);
        }
        self.wake.notify_one();
        rx
    }

    fn push(
        &self,
        st: &mut State,
        out: &mut Vec<Write>,
        w: (&'static str, &'static str, &'static str, &'static str),
        id: String,
        data: String,
        entity: bool,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (op, hash, tomb, kind) = w;
        let entity = entity.then(|| format!("{hash}:{id}"));
        if let Some(e) = &entity {
            st.latest.insert(e.clone(), seq);
        }
        out.push(Write {
            op,
            hash,
            tomb,
            kind,
            id,
            data,
            seq,
            ack: None,
        });
    }

    fn translate(&self, op: &StoreOp, st: &mut State, out: &mut Vec<Write>) {
        use wire::*;
        match op {
            StoreOp::PutKey(r) | StoreOp::PutKeyState(r) => {
                if let StoreOp::PutKey(r) = op {
                    st.own.insert(r.id.clone(), Counters::of(r));
                    st.dirty.insert(r.id.clone());
                }
                self.push(
                    st,
                    out,
                    ("put", "keys", "tomb", "key"),
                    r.id.clone(),
                    key_to_json(r),
                    true,
                )
            }
            StoreOp::DeleteKey(id) => {
                st.own.remove(id);
                st.dirty.remove(id);
                st.gone.insert(id.clone());
                self.push(
                    st,
                    out,
                    ("del", "keys", "tomb", "delkey"),
                    id.clone(),
                    String::new(),
                    true,
                )
            }
            StoreOp::PutGroup(g) => self.push(
                st,
                out,
                ("put", "groups", "gtomb", "group"),
                g.id.clone(),
                group_to_json(g),
                true,
            ),
            StoreOp::DeleteGroup { id, move_keys_to } => self.push(
                st,
                out,
                ("del", "groups", "gtomb", "delgroup"),
                id.clone(),
                move_keys_to.clone(),
                true,
            ),
            StoreOp::AddEvents(evs) if !evs.is_empty() => self.push(
                st,
                out,
                ("log", "", "", "events"),
                String::new(),
                events_to_json(evs),
                false,
            ),
            StoreOp::AddCounters(ds) => {
                for d in ds {
                    let c = st.own.entry(d.key_id.clone()).or_default();
                    c.requests = c.requests.saturating_add(d.requests);
                    c.successes = c.successes.saturating_add(d.successes);
                    c.failures = c.failures.saturating_add(d.failures);
                    c.input_tokens = c.input_tokens.saturating_add(d.input_tokens);
                    c.output_tokens = c.output_tokens.saturating_add(d.output_tokens);
                    if let Some(t) = d.last_used_at {
                        c.last_used_at = c.last_used_at.max(t);
                    }
                    st.dirty.insert(d.key_id.clone());
                }
            }
            StoreOp::PutSetting { name, value } => self.push(
                st,
                out,
                ("put", "settings", "stomb", "setting"),
                name.clone(),
                value.to_string(),
                true,
            ),
            StoreOp::ClearSettings => self.push(
                st,
                out,
                ("clear", "settings", "stomb", "clearsettings"),
                String::new(),
                String::new(),
                false,
            ),
            StoreOp::PutBalance(b) => self.push(
                st,
                out,
                ("put", "bal", "btomb", "balance"),
                b.key_id.clone(),
                balance_to_json(b),
                true,
            ),
            StoreOp::AddEvents(_) | StoreOp::AddUsage(_) | StoreOp::AddRejected(_) => {}
            // Client keys: the record (digest and mask, never the key); counts go separately.
            StoreOp::PutClient(c) => self.push(
                st,
                out,
                ("put", "clients", "ctomb", "client"),
                c.id.clone(),
                client_to_json(c),
                true,
            ),
            StoreOp::DeleteClient(id) => self.push(
                st,
                out,
                ("del", "clients", "ctomb", "delclient"),
                id.clone(),
                String::new(),
                true,
            ),
        }
    }

    /// Shared writes dropped because the outage buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Shares a console session just opened (`Some(record)`) or ended (`None`).
    pub fn share_session(&self, digest: &str, data: Option<String>) {
        let mut writes = Vec::new();
        {
            let mut st = self.state();
            let w = match &data {
                Some(_) => ("put", "sess", "sesstomb", "session"),
                None => ("del", "sess", "sesstomb", "endsession"),
            };
            self.push(
                &mut st,
                &mut writes,
                w,
                digest.to_string(),
                data.unwrap_or_default(),
                true,
            );
            st.outbox.extend(writes);
        }
        self.wake.notify_one();
    }

    /// Runs a command with the engine's command deadline (for other shared features: usage,
    /// leases, tokens).
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        cmd: &redis::Cmd,
    ) -> Result<T, SharedError> {
        let r = self.link.query(limit, cmd).await;
        if r.is_err() {
            self.check.notify_one();
        }
        r
    }

    /// Runs a pipeline with a deadline.
    pub async fn pipe<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        pipe: &redis::Pipeline,
    ) -> Result<T, SharedError> {
        let r = self.link.pipe(limit, pipe).await;
        if r.is_err() {
            self.check.notify_one();
        }
        r
    }

    /// Runs a script with a deadline (loaded again automatically after a Redis restart).
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        let r = self.link.script(limit, inv).await;
        if r.is_err() {
            self.check.notify_one();
        }
        r
    }

    /// Takes (or renews) a fleet-wide lease on a job for `ttl`: true when this instance holds
    /// it. Without Redis reachable nobody else can be asked: the job runs locally.
    pub async fn lease(&self, job: &str, ttl: Duration) -> bool {
        if !self.is_up() {
            return true;
        }
        let key = k(&format!("lock:{job}"));
        let script = redis::Script::new(
            r"local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0",
        );
        let mut inv = script.key(&key);
        inv.arg(&self.inst).arg(ttl.as_millis() as u64);
        matches!(
            self.link
                .script::<i64>(Duration::from_millis(500), &inv)
                .await,
            Ok(1)
        )
    }
}
