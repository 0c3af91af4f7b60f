//! What waits for the writer thread: two lanes behind one short mutex.
//!
//! - The **admin lane** holds acknowledged writes (admin changes, `commit`, `flush`, pruning) and
//!   the few unacknowledged ops that create or delete rows. It is served first. It is bounded by
//!   message count ([`ADMIN_CAPACITY`]): when full, an acknowledged write fails at once.
//! - The **traffic lane** holds what requests cause: usage records, key-state changes, per-key
//!   counters, key events and balances. It never blocks and never grows without bound:
//!   - key-state changes, counters and balances are *coalesced* per key (the latest state
//!     replaces the previous one, counter deltas add up, the latest balance wins), so they take
//!     one entry per key however many requests cause them and are never dropped;
//!   - usage records, key events and other ops count towards the lane's capacity
//!     ([`TRAFFIC_CAPACITY`] by default); when it is full, new ones are dropped and counted in
//!     `droid2api_store_dropped_total{kind}`.
//!
//! The writer takes everything at once ([`Queue::take`]), so at most one capacity's worth is
//! being written while another waits: traffic memory is bounded by twice the capacity plus one
//! entry per key.
//!
//! Traffic *lingers*: the writer takes it once its oldest item has waited the linger time
//! ([`TRAFFIC_LINGER`] by default), or the lane is half full, or an admin message or `close`
//! comes — whichever is first. So at any request rate the writer commits a few large traffic
//! transactions a second instead of one small (fsync'd) one per request, and usage lags by at
//! most the linger plus one commit.
//!
//! Ordering: producers call in while holding the pool lock, so pushes arrive in memory order.
//! An admin op about a key drops that key's coalesced traffic state (the admin op carries a newer
//! copy of the whole record), and traffic ops only ever update rows that exist, so a traffic
//! change queued before an admin delete cannot bring the key back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::SqliteError;
use crate::store::records::{
    BalanceRecord, CounterDelta, KeyEvent, KeyRecord, Millis, StoreOp, UsageRecord,
};

/// Usage records, key events and other droppable traffic items waiting for the writer, at most.
pub const TRAFFIC_CAPACITY: usize = 10_000;
/// Admin-lane messages waiting for the writer, at most.
pub const ADMIN_CAPACITY: usize = 1_024;
/// How long traffic waits for more traffic before the writer takes it.
pub const TRAFFIC_LINGER: Duration = Duration::from_millis(250);

pub(super) type Ack = oneshot::Sender<Result<(), SqliteError>>;
pub(super) type CountAck = oneshot::Sender<Result<u64, SqliteError>>;

/// A message on the admin lane.
pub(super) enum AdminMsg {
    /// Ops applied together (one savepoint) and acknowledged once committed.
    Ops { ops: Vec<StoreOp>, ack: Option<Ack> },
    /// Delete usage records older than `before`, in chunks; answers how many.
    Prune { before: Millis, ack: CountAck },
    /// Answered once everything queued before it (both lanes) is committed.
    Flush(Ack),
    /// Another instance's usage rollups (and how far its change list was read), committed in
    /// their own transaction and acknowledged.
    Mirror {
        instance: String,
        rows: Vec<super::fleet::RollupRow>,
        score: Option<Millis>,
        ack: Ack,
    },
}

/// The traffic lane's content.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    /// The latest state of each key (by id).
    pub states: HashMap<String, KeyRecord>,
    /// Counter deltas added up per key.
    pub counters: HashMap<String, CounterDelta>,
    /// The latest balance of each key.
    pub balances: HashMap<String, BalanceRecord>,
    pub events: Vec<KeyEvent>,
    pub usage: Vec<UsageRecord>,
    /// Ops of kinds the lane does not coalesce.
    pub other: Vec<StoreOp>,
    /// Items in `events`, `usage` and `other`: what the capacity bounds.
    pub len: usize,
}

impl Traffic {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
            && self.counters.is_empty()
            && self.balances.is_empty()
            && self.len == 0
    }
}

/// Adds `d` to `into` (saturating); `last_used_at` is the later of the two.
pub(super) fn merge_counters(into: &mut CounterDelta, d: &CounterDelta) {
    into.requests = into.requests.saturating_add(d.requests);
    into.successes = into.successes.saturating_add(d.successes);
    into.failures = into.failures.saturating_add(d.failures);
    into.input_tokens = into.input_tokens.saturating_add(d.input_tokens);
    into.output_tokens = into.output_tokens.saturating_add(d.output_tokens);
    into.last_used_at = match (into.last_used_at, d.last_used_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
}

/// What the writer takes in one go.
pub(super) struct Taken {
    pub admin: Vec<AdminMsg>,
    pub traffic: Traffic,
    /// The store is closing: nothing more will come.
    pub closed: bool,
}

/// Dropped traffic items, by kind (`usage`, `event`, `other`, `admin`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Drops {
    pub usage: u64,
    pub event: u64,
    pub other: u64,
    pub admin: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.usage + self.event + self.other + self.admin
    }
}

/// A snapshot of the queue, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// The traffic lane's capacity (usage records, events and other items).
    pub capacity: usize,
    /// Traffic items waiting now.
    pub queued: usize,
    /// The most traffic items ever waiting at once.
    pub peak: usize,
    /// Keys with a coalesced state, counters or balance waiting.
    pub coalesced_keys: usize,
    /// Admin-lane messages waiting now.
    pub admin_queued: usize,
    /// Traffic items dropped because the lane was full (or the store closed), since start.
    pub dropped: u64,
}

struct State {
    admin: VecDeque<AdminMsg>,
    traffic: Traffic,
    /// When the oldest traffic waiting arrived (`None` while the lane is empty).
    traffic_since: Option<Instant>,
    closed: bool,
    peak: usize,
}

impl State {
    /// Notes that traffic arrived; true when the writer should be woken (the lane's first item,
    /// which starts the linger clock, or the lane reaching half its capacity).
    fn traffic_arrived(&mut self, was_empty: bool, len_before: usize, capacity: usize) -> bool {
        if was_empty && !self.traffic.is_empty() {
            self.traffic_since = Some(Instant::now());
            return true;
        }
        let half = (capacity / 2).max(1);
        len_before < half && self.traffic.len >= half
    }
}

/// The two lanes.
pub(super) struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    capacity: AtomicUsize,
    dropped: AtomicU64,
    linger: Duration,
}

impl Queue {
    pub fn new(capacity: usize, linger: Duration) -> Queue {
        Queue {
            state: Mutex::new(State {
                admin: VecDeque::new(),
                traffic: Traffic::default(),
                traffic_since: None,
                closed: false,
                peak: 0,
            }),
            wake: Condvar::new(),
            capacity: AtomicUsize::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
            linger,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
    }

    /// Queues an admin message. Gives it back when the lane is full or the store is closed.
    pub fn push_admin(&self, msg: AdminMsg) -> Result<(), (AdminMsg, SqliteError)> {
        let mut st = self.lock();
        if st.closed {
            return Err((msg, SqliteError::Closed));
        }
        if st.admin.len() >= ADMIN_CAPACITY {
            return Err((msg, SqliteError::QueueFull(ADMIN_CAPACITY)));
        }
        if let AdminMsg::Ops { ops, .. } = &msg {
            // The admin op carries a newer copy of the key: an older traffic state must not be
            // written after it.
            for op in ops {
                match op {
                    StoreOp::PutKey(k) | StoreOp::PutKeyState(k) => {
                        st.traffic.states.remove(&k.id);
                    }
                    StoreOp::DeleteKey(id) => {
                        st.traffic.states.remove(id);
                        st.traffic.balances.remove(id);
                    }
                    _ => {}
                }
            }
        }
        st.admin.push_back(msg);
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Queues traffic ops without waiting. Ops that create or delete rows go on the admin lane
    /// (unacknowledged) so they keep their order with admin changes. Returns what was dropped.
    pub fn push_traffic(&self, ops: Vec<StoreOp>) -> Drops {
        let mut drops = Drops::default();
        let mut admin_ops = Vec::new();
        let mut st = self.lock();
        let capacity = self.capacity.load(Ordering::Relaxed);
        if st.closed {
            for op in &ops {
                count_closed(op, &mut drops);
            }
            drop(st);
            self.dropped.fetch_add(drops.total(), Ordering::Relaxed);
            return drops;
        }
        let was_empty = st.traffic.is_empty();
        let len_before = st.traffic.len;
        let t = &mut st.traffic;
        for op in ops {
            match op {
                StoreOp::PutKeyState(k) => {
                    t.states.insert(k.id.clone(), k);
                }
                StoreOp::AddCounters(deltas) => {
                    for d in deltas {
                        match t.counters.get_mut(&d.key_id) {
                            Some(into) => merge_counters(into, &d),
                            None => {
                                t.counters.insert(d.key_id.clone(), d);
                            }
                        }
                    }
                }
                StoreOp::PutBalance(b) => {
                    t.balances.insert(b.key_id.clone(), b);
                }
                StoreOp::AddEvents(events) => {
                    let room = capacity.saturating_sub(t.len);
                    let n = events.len();
                    t.events.extend(events.into_iter().take(room));
                    let kept = n.min(room);
                    t.len += kept;
                    drops.event += (n - kept) as u64;
                }
                StoreOp::AddUsage(records) => {
                    let room = capacity.saturating_sub(t.len);
                    let n = records.len();
                    t.usage.extend(records.into_iter().take(room));
                    let kept = n.min(room);
                    t.len += kept;
                    drops.usage += (n - kept) as u64;
                }
                op @ (StoreOp::PutKey(_)
                | StoreOp::DeleteKey(_)
                | StoreOp::PutGroup(_)
                | StoreOp::DeleteGroup { .. }
                | StoreOp::PutSetting { .. }
                | StoreOp::ClearSettings
                | StoreOp::PutClient(_)
                | StoreOp::DeleteClient(_)) => admin_ops.push(op),
                #[allow(unreachable_patterns)]
                other => {
                    if t.len < capacity {
                        t.other.push(other);
                        t.len += 1;
                    } else {
                        drops.other += 1;
                    }
                }
            }
        }
        st.peak = st.peak.max(st.traffic.len);
        let mut wake = st.traffic_arrived(was_empty, len_before, capacity);
        if !admin_ops.is_empty() {
            wake = true;
            if st.admin.len() < ADMIN_CAPACITY {
                for op in &admin_ops {
                    if let StoreOp::DeleteKey(id) = op {
                        st.traffic.states.remove(id);
                        st.traffic.balances.remove(id);
                    }
                }
                st.admin.push_back(AdminMsg::Ops {
                    ops: admin_ops,
                    ack: None,
                });
            } else {
                drops.admin += admin_ops.len() as u64;
            }
        }
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        if drops.total() > 0 {
            self.dropped.fetch_add(drops.total(), Ordering::Relaxed);
        }
        drops
    }

    /// Queues one usage record; false when it was dropped (lane full or store closed).
    pub fn push_usage(&self, record: UsageRecord) -> bool {
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut st = self.lock();
        if st.closed || st.traffic.len >= capacity {
            drop(st);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let was_empty = st.traffic.is_empty();
        let len_before = st.traffic.len;
        st.traffic.usage.push(record);
        st.traffic.len += 1;
        st.peak = st.peak.max(st.traffic.len);
        let wake = st.traffic_arrived(was_empty, len_before, capacity);
        drop(st);
        // The writer is woken by the first item (it then lingers) and at half capacity.
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Takes what is due: every admin message, and the traffic lane once it is due (it has
    /// lingered long enough, is half full, or comes along with admin messages, a flush or the
    /// close). With `block`, waits until something is due or the store closes; without, takes
    /// what is due now (possibly nothing).
    pub fn take(&self, block: bool) -> Taken {
        let mut st = self.lock();
        loop {
            if st.closed || !st.admin.is_empty() {
                break;
            }
            let half = (self.capacity.load(Ordering::Relaxed) / 2).max(1);
            let due = st.traffic_since.map(|since| since + self.linger);
            let now = Instant::now();
            match due {
                Some(due) if now >= due || st.traffic.len >= half => break,
                _ if !block => {
                    return Taken {
                        admin: Vec::new(),
                        traffic: Traffic::default(),
                        closed: false,
                    };
                }
                Some(due) => {
                    st = self
                        .wake
                        .wait_timeout(st, due - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                None => {
                    st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
        st.traffic_since = None;
        Taken {
            admin: st.admin.drain(..).collect(),
            traffic: std::mem::take(&mut st.traffic),
            closed: st.closed,
        }
    }

    /// Refuses further pushes and wakes the writer, which drains what is left and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.lock();
        let t = &st.traffic;
        let mut keys: std::collections::HashSet<&str> =
            t.states.keys().map(String::as_str).collect();
        keys.extend(t.counters.keys().map(String::as_str));
        keys.extend(t.balances.keys().map(String::as_str));
        QueueStats {
            capacity: self.capacity.load(Ordering::Relaxed),
            queued: t.len,
            peak: st.peak,
            coalesced_keys: keys.len(),
            admin_queued: st.admin.len(),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

fn count_closed(op: &StoreOp, drops: &mut Drops) {
    match op {
        StoreOp::AddUsage(v) => drops.usage += v.len() as u64,
        StoreOp::AddEvents(v) => drops.event += v.len() as u64,
        _ => drops.other += 1,
    }
}
