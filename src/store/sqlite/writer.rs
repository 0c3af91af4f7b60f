//! The writer thread: the only connection that writes.
//!
//! Each round it takes everything queued ([`Queue::take`]) and commits, in this order:
//! 1. the admin lane's batches, in one transaction, each batch in its own savepoint (a failing
//!    batch is rolled back alone and reported to its caller; the others are committed), then
//!    acknowledges them; then the other instances' mirrored usage, a transaction each;
//! 2. the traffic lane (key states, counters, events, balances, usage records), in one
//!    transaction with a savepoint per kind (and per [`USAGE_CHUNK`] usage records); traffic
//!    ops only update rows that exist (a key deleted meanwhile is not brought back);
//! 3. answers the `flush` callers;
//! 4. one chunk ([`PRUNE_CHUNK`] rows, its own transaction) of the oldest pending usage pruning,
//!    so a large deletion never holds up other writes for long.
//!
//! When the database is locked by another connection (`SQLITE_BUSY` once the busy timeout ran
//! out), the round's writes are kept and retried until the lock goes away (or, once the store is
//! closing, given up after one more wait). Meanwhile callers of acknowledged writes time out on
//! their side and the traffic lane fills up and drops (both bounded).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use super::queue::{Ack, AdminMsg, CountAck, Queue, Taken, Traffic};
use super::schema::{self, sql};
use super::{SqliteError, fleet, usage};
use crate::store::records::{Millis, StoreOp};

/// Usage records per savepoint in the traffic transaction.
pub(super) const USAGE_CHUNK: usize = 500;
/// Usage records deleted per pruning transaction.
pub(super) const PRUNE_CHUNK: usize = 5_000;

struct PruneJob {
    before: Millis,
    deleted: u64,
    ack: CountAck,
}

struct Writer {
    conn: Connection,
    queue: Arc<Queue>,
    prunes: VecDeque<PruneJob>,
    /// When the database started refusing our lock, while it does.
    stalled_since: Option<Instant>,
}

/// Whether `e` says another connection holds the lock.
fn is_busy(e: &SqliteError) -> bool {
    match e {
        SqliteError::Sqlite { source, .. } => matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        ),
        _ => false,
    }
}

/// The writer thread's nice value. Usage rollups cost the writer up to ~100 µs per request
/// (a pool in rotation touches three rollup rows of a new key each time), spent in batches of
/// up to 250 ms of traffic; at the default priority a batch held a busy core for milliseconds
/// at a time and request handling waited behind it (+2.4 ms p99 at one connection in the
/// 10,000-key benchmark). At nice 10 the scheduler lets request work preempt it, and it still
/// gets about a tenth of a contended core, so admin acknowledgements and usage keep flowing.
pub(super) const WRITER_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`WRITER_NICE`] (Linux; elsewhere nothing). A
/// refusal is logged and otherwise ignored: the writer works the same, only less politely.
pub(super) fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), WRITER_NICE)
    {
        tracing::debug!(error = %e, "store: could not lower the writer thread's priority");
    }
}

/// Runs the writer until the queue is closed and drained, then checkpoints the WAL and closes
/// the connection.
pub(super) fn writer_loop(conn: Connection, queue: Arc<Queue>) -> Result<(), SqliteError> {
    let mut w = Writer {
        conn,
        queue,
        prunes: VecDeque::new(),
        stalled_since: None,
    };
    loop {
        let taken = w.queue.take(w.prunes.is_empty());
        let closed = taken.closed;
        w.round(taken);
        if closed {
            break;
        }
        w.prune_step();
    }
    for job in w.prunes.drain(..) {
        let _ = job.ack.send(Err(SqliteError::Closed));
    }
    let checkpoint = w
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql("checkpointing the WAL"));
    let closed = w
        .conn
        .close()
        .map_err(|(_, e)| e)
        .map_err(sql("closing the database"));
    tracing::debug!("store: writer stopped");
    checkpoint.and(closed).map(|_| ())
}

/// One admin transaction's outcome: each batch's own result (as many as were reached), then
/// the commit's.
struct AdminRun {
    results: Vec<Result<(), SqliteError>>,
    commit: Result<(), SqliteError>,
}

impl Writer {
    fn round(&mut self, taken: Taken) {
        let mut batches: Vec<(Vec<StoreOp>, Option<Ack>)> = Vec::new();
        let mut flushes: Vec<Ack> = Vec::new();
        let mut mirrors = Vec::new();
        for msg in taken.admin {
            match msg {
                AdminMsg::Mirror {
                    instance,
                    rows,
                    score,
                    ack,
                } => mirrors.push((instance, rows, score, ack)),
                AdminMsg::Ops { ops, ack } => batches.push((ops, ack)),
                AdminMsg::Flush(ack) => flushes.push(ack),
                AdminMsg::Prune { before, ack } => self.prunes.push_back(PruneJob {
                    before,
                    deleted: 0,
                    ack,
                }),
            }
        }
        let admin = if batches.is_empty() {
            Ok(())
        } else {
            self.commit_admin(batches)
        };
        for (instance, rows, score, ack) in mirrors {
            let result = self
                .retrying(|conn| fleet::mirror_attempt(conn, &instance, &rows, score))
                .and_then(|commit| commit);
            if let Err(e) = &result {
                tracing::warn!(error = %e, instance, "store: mirroring another instance's usage failed");
            }
            let _ = ack.send(result);
        }
        let traffic = if taken.traffic.is_empty() {
            Ok(())
        } else {
            self.commit_traffic(taken.traffic)
        };
        let flushed = admin.and(traffic);
        for ack in flushes {
            let _ = ack.send(flushed.clone());
        }
    }

    /// Runs `attempt` until it gets past `BEGIN` (the lock), unless the store is closing.
    fn retrying<T>(
        &mut self,
        attempt: impl Fn(&mut Connection) -> Result<T, SqliteError>,
    ) -> Result<T, SqliteError> {
        loop {
            match attempt(&mut self.conn) {
                Ok(v) => {
                    if let Some(since) = self.stalled_since.take() {
                        tracing::info!(
                            stalled_s = since.elapsed().as_secs(),
                            "store: the database is writable again"
                        );
                    }
                    return Ok(v);
                }
                Err(e) if is_busy(&e) && !self.queue.is_closed() => {
                    if self.stalled_since.is_none() {
                        self.stalled_since = Some(Instant::now());
                        tracing::warn!(
                            error = %e,
                            "store: the database is locked by another connection; writes wait and are retried"
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn commit_admin(
        &mut self,
        mut batches: Vec<(Vec<StoreOp>, Option<Ack>)>,
    ) -> Result<(), SqliteError> {
        let mut start = 0;
        let mut overall = Ok(());
        while start < batches.len() {
            let rest = &batches[start..];
            let run = self.retrying(|conn| admin_attempt(conn, rest));
            match run {
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        batches = batches.len() - start,
                        "store: admin writes failed"
                    );
                    for (_, ack) in &mut batches[start..] {
                        if let Some(ack) = ack.take() {
                            let _ = ack.send(Err(e.clone()));
                        }
                    }
                    return Err(e);
                }
                Ok(AdminRun { results, commit }) => {
                    let reached = results.len().max(1);
                    for (i, own) in results.into_iter().enumerate() {
                        let result = match (&commit, own) {
                            (_, Err(own)) => Err(own),
                            (Err(e), Ok(())) => Err(e.clone()),
                            (Ok(()), Ok(())) => Ok(()),
                        };
                        if let Some(ack) = batches[start + i].1.take() {
                            let _ = ack.send(result);
                        }
                    }
                    if let Err(e) = commit {
                        overall = Err(e);
                    }
                    start += reached;
                }
            }
        }
        overall
    }

    fn commit_traffic(&mut self, traffic: Traffic) -> Result<(), SqliteError> {
        let result = self
            .retrying(|conn| traffic_attempt(conn, &traffic))
            .and_then(|commit| commit);
        if let Err(e) = &result {
            tracing::error!(
                error = %e,
                usage_records = traffic.usage.len(),
                key_states = traffic.states.len(),
                counters = traffic.counters.len(),
                events = traffic.events.len(),
                "store: a transaction of traffic writes failed; its writes are lost"
            );
        }
        result
    }

    /// Deletes one chunk of the oldest pending pruning; answers it when it is done.
    fn prune_step(&mut self) {
        let Some(job) = self.prunes.front_mut() else {
            return;
        };
        let before = job.before;
        match prune_chunk(&mut self.conn, before) {
            Ok(n) => {
                if let Some(since) = self.stalled_since.take() {
                    tracing::info!(
                        stalled_s = since.elapsed().as_secs(),
                        "store: the database is writable again"
                    );
                }
                job.deleted = job.deleted.saturating_add(n);
                if n < PRUNE_CHUNK as u64
                    && let Some(job) = self.prunes.pop_front()
                {
                    let _ = job.ack.send(Ok(job.deleted));
                }
            }
            // Locked: tried again next round (each try waits for the busy timeout).
            Err(e) if is_busy(&e) && !self.queue.is_closed() => {
                if self.stalled_since.is_none() {
                    self.stalled_since = Some(Instant::now());
                    tracing::warn!(error = %e, "store: the database is locked by another connection; pruning waits");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store: deleting old usage records failed");
                if let Some(job) = self.prunes.pop_front() {
                    let _ = job.ack.send(Err(e));
                }
            }
        }
    }
}

fn begin(conn: &mut Connection) -> Result<Transaction<'_>, SqliteError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting a transaction"))
}

/// One transaction over admin batches. `Err` only when it could not begin. When SQLite abandons
/// the transaction itself (I/O error, disk full), the batches reached so far fail and the caller
/// puts the rest in a new transaction.
fn admin_attempt(
    conn: &mut Connection,
    batches: &[(Vec<StoreOp>, Option<Ack>)],
) -> Result<AdminRun, SqliteError> {
    let mut tx = begin(conn)?;
    let mut results = Vec::with_capacity(batches.len());
    let mut abandoned = None;
    for (ops, ack) in batches {
        let result = in_savepoint(&mut tx, |c| {
            for op in ops {
                schema::apply_op(c, op)?;
            }
            Ok(())
        });
        if let Err(e) = &result {
            tracing::error!(
                error = %e,
                ops = ops.len(),
                acknowledged = ack.is_some(),
                "store: a batch of writes failed and was rolled back"
            );
            if tx.is_autocommit() {
                abandoned = Some(e.clone());
            }
        }
        results.push(result);
        if abandoned.is_some() {
            break;
        }
    }
    let commit = match abandoned {
        Some(e) => {
            drop(tx);
            Err(e)
        }
        None => tx.commit().map_err(sql("committing")),
    };
    if let Err(e) = &commit {
        tracing::error!(
            error = %e,
            batches = results.len(),
            "store: a transaction failed; its writes are lost"
        );
    }
    Ok(AdminRun { results, commit })
}

/// A part of the traffic transaction, run in its own savepoint.
type Step<'a> = Box<dyn Fn(&Connection) -> Result<(), SqliteError> + 'a>;

/// One transaction over the traffic lane. The outer `Err` only when it could not begin; the
/// inner result is the commit's. A failing kind is rolled back alone (logged).
fn traffic_attempt(
    conn: &mut Connection,
    t: &Traffic,
) -> Result<Result<(), SqliteError>, SqliteError> {
    let mut tx = begin(conn)?;
    let mut steps: Vec<(&str, Step<'_>)> = Vec::new();
    if !t.states.is_empty() {
        steps.push((
            "key states",
            Box::new(|c| {
                t.states
                    .values()
                    .try_for_each(|k| schema::update_key_state(c, k))
            }),
        ));
    }
    if !t.counters.is_empty() {
        steps.push((
            "counters",
            Box::new(|c| {
                t.counters
                    .values()
                    .try_for_each(|d| schema::add_counters(c, d))
            }),
        ));
    }
    if !t.events.is_empty() {
        steps.push((
            "key events",
            Box::new(|c| {
                t.events
                    .iter()
                    .try_for_each(|e| schema::add_event_of_existing_key(c, e))
            }),
        ));
    }
    if !t.balances.is_empty() {
        steps.push((
            "balances",
            Box::new(|c| {
                t.balances
                    .values()
                    .try_for_each(|b| usage::put_balance(c, b))
            }),
        ));
    }
    for chunk in t.usage.chunks(USAGE_CHUNK) {
        steps.push((
            "usage records",
            Box::new(move |c| usage::add_usage(c, chunk)),
        ));
    }
    for op in &t.other {
        steps.push(("other writes", Box::new(move |c| schema::apply_op(c, op))));
    }
    for (what, step) in steps {
        if let Err(e) = in_savepoint(&mut tx, step) {
            tracing::error!(error = %e, what, "store: traffic writes failed and were rolled back");
            if tx.is_autocommit() {
                drop(tx);
                return Ok(Err(e));
            }
        }
    }
    Ok(tx.commit().map_err(sql("committing")))
}

fn in_savepoint(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<(), SqliteError>,
) -> Result<(), SqliteError> {
    let sp = tx.savepoint().map_err(sql("starting a savepoint"))?;
    f(&sp)?;
    sp.commit().map_err(sql("releasing a savepoint"))
}

/// Deletes up to [`PRUNE_CHUNK`] usage records older than `before` in one transaction.
fn prune_chunk(conn: &mut Connection, before: Millis) -> Result<u64, SqliteError> {
    let tx = begin(conn)?;
    let n = usage::prune_chunk(&tx, before, PRUNE_CHUNK)?;
    tx.commit().map_err(sql("committing"))?;
    Ok(n)
}
