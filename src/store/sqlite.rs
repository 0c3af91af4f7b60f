//! The embedded SQLite store: keys, pool groups, key-state history, stored admin settings, token
//! usage (records, rollups) and key balances in `DATA_DIR/droid2api.db` (bundled SQLite, WAL,
//! `synchronous=FULL`, migrations by `PRAGMA user_version`, mode 0600 for the database and its
//! `-wal`/`-shm` files).
//!
//! One writer thread owns every write (`writer.rs`), fed by two lanes (`queue.rs`):
//! - the **traffic lane**, bounded: [`Store::submit`] and [`Store::record_usage`] queue without
//!   ever waiting (the request path). Key states, counters and balances are coalesced per key;
//!   usage records and key events beyond the lane's capacity are dropped and counted
//!   (`droid2api_store_dropped_total{kind}`);
//! - the **admin lane**, served first: [`Store::commit`], [`Store::enqueue_acked`] (admin
//!   changes, before their 2xx), [`Store::flush`] and [`Store::prune_usage`]. A caller that gets
//!   no confirmation within the acknowledgement timeout (5 s) gets [`SqliteError::Timeout`] —
//!   the admin API answers 503 — while the write stays queued.
//!
//! Acknowledged means durable: an acknowledgement is sent only after the transaction holding the
//! write was committed with `synchronous=FULL`. Usage reaches the database within the writer's
//! next round (milliseconds unless the database is locked) and is flushed on close.
//!
//! Decisions:
//! - `DeleteKey` keeps the key's events: the history of a deleted key stays readable by id.
//! - `DeleteGroup` of `default`, or into itself, is refused (the batch fails).
//! - `keys.pool_group` references `pool_groups.id` (foreign keys on): storing a key in a group
//!   that does not exist fails its batch.
//! - Keys load in insertion order (`rowid`); `PutKey` of an existing id updates in place, so a
//!   key keeps its place in the round-robin order. It leaves the stored counters alone: once a
//!   key exists they change only through `AddCounters` deltas (saturating at `i64::MAX`).
//! - Traffic ops never create rows: `PutKeyState`, `AddCounters` and `PutBalance` update a key
//!   that exists, and a traffic key event is stored only while its key exists. An admin op about
//!   a key also drops that key's coalesced traffic state still waiting (the admin op holds a
//!   newer copy). So a traffic change queued before an admin delete cannot bring the key back.
//! - History is read newest first by time (then insertion): admin writes are committed ahead of
//!   traffic queued earlier.
//! - The algorithm imported from a Node.js `key_pool.json` is stored as the setting
//!   [`ALGORITHM_SETTING`] (`"algorithm"`, a JSON string), the name the admin layer uses for
//!   `key_pool.algorithm`.
//! - The Node import runs once per database: the meta flag `node_import_done` is set on the
//!   first start whether or not a file was there, and whenever the pool already holds keys or
//!   groups. Once imported, `key_pool.json` (every key in clear) is renamed
//!   `key_pool.json.imported` and narrowed to mode 0600.
//! - `droid2api migrate` (`offline.rs`) opens the database without the writer thread (the
//!   folder's lock keeps every gateway out) and applies its whole import in one transaction; its
//!   usage history arrives as rollup rows (the Node.js files hold no per-request records).
//! - Usage (`StoreOp::AddUsage`): one row per record plus rollups per hour, day and all time
//!   (`usage.rs`), in the buckets the caller computed (`UsageRecord::hour_start`/`day_start`, in
//!   the configured zone). Rollups are never pruned; [`Store::prune_usage`] deletes records only.
//!   A series filtered by key *and* model is computed from the records, so it reaches back only
//!   as far as they are kept.
//! - `DeleteKey` keeps the key's usage (records and rollups, under its id) but deletes its
//!   balance; `PutBalance` of a key that is not in the pool stores nothing (a sync may race the
//!   key's deletion).
//! - Several instances (`fleet.rs`): each rollup row carries the sequence of the batch that last
//!   changed it, so what changed since a publish can be read; the other instances' rollups are
//!   mirrored in `fleet_rollups` (written through the writer, [`Store::mirror_fleet`]) and, once
//!   [`Store::include_fleet`] is on, added to every rollup-based usage answer.

mod clients;
mod fleet;
pub mod offline;
mod queue;
mod rejected;
mod repair;
mod schema;
mod usage;
mod writer;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use queue::{AdminMsg, Queue};

use super::StoreError;
use super::import::{ImportError, parse_node_pool};
use super::records::{
    BalanceRecord, ClientRecord, KeyEvent, KeyRecord, Millis, PoolGroup, StoreOp, UsageRecord,
};
use crate::telemetry::metrics as m;
pub use fleet::{ChangeCursor, MirrorPos, RollupRow};
pub use queue::{ADMIN_CAPACITY, QueueStats, TRAFFIC_CAPACITY, TRAFFIC_LINGER};
pub use repair::repair_version;
use schema::sql;
pub use usage::{Tokens, UsageTotals};

/// The database file inside the data folder.
pub const DB_FILE: &str = "droid2api.db";
/// The Node.js version's key pool, imported on first start.
pub const NODE_POOL_FILE: &str = "key_pool.json";
/// What the Node.js key pool is renamed to once imported (mode 0600).
pub const NODE_POOL_IMPORTED: &str = "key_pool.json.imported";
/// The setting an imported Node.js algorithm is stored under (a JSON string).
pub const ALGORITHM_SETTING: &str = "algorithm";
/// Meta flag: the first-start Node import has run (or was not needed).
pub(crate) const NODE_IMPORT_DONE: &str = "node_import_done";
/// How long a connection waits for a lock another connection holds (then the writer tries again,
/// a read fails).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller of an acknowledged write waits for the writer's confirmation.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Store::prune_usage`] waits for a whole deletion (it runs in chunks, between other
/// writes).
pub const PRUNE_TIMEOUT: Duration = Duration::from_secs(60);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// Database failures. Messages name no secret (only key and group ids).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqliteError {
    #[error("{context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error(
        "the database has schema version {found}, but this build knows versions up to {known}: it was written by a newer droid2api; run that version or restore a backup of the data folder"
    )]
    TooNew { found: i64, known: i64 },
    #[error("refused: {0}")]
    Refused(String),
    #[error("the store is closed")]
    Closed,
    #[error(
        "the store did not confirm the write within {}; it was not acknowledged (it may still be saved: the database may be locked by another process or the disk slow)",
        human_duration(*.waited_ms)
    )]
    Timeout { waited_ms: u64 },
    #[error("the store has {0} writes waiting; this one was not accepted (try again later)")]
    QueueFull(usize),
    #[error("the store's writer thread stopped unexpectedly")]
    WriterGone,
}

/// `5 s`, `1.5 s`, `300 ms`.
fn human_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

impl SqliteError {
    /// The store could not take or confirm the write in time: a temporary condition (503), not
    /// a failed write.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            SqliteError::Timeout { .. } | SqliteError::QueueFull(_)
        )
    }
}

/// Tuning of a store (the defaults are what the gateway uses).
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Usage records, key events and other droppable traffic items waiting at most.
    pub traffic_capacity: usize,
    /// How long traffic (usage, counters, key states) waits for more before it is written.
    pub traffic_linger: Duration,
    /// How long an acknowledged write waits for the writer.
    pub ack_timeout: Duration,
    /// How long a whole usage pruning may take before its caller stops waiting.
    pub prune_timeout: Duration,
    /// How long a connection waits for a lock another connection holds before trying again
    /// (the writer) or failing (reads).
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            traffic_capacity: TRAFFIC_CAPACITY,
            traffic_linger: TRAFFIC_LINGER,
            ack_timeout: ACK_TIMEOUT,
            prune_timeout: PRUNE_TIMEOUT,
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

/// What the database held at open (plus what a first-start import added).
#[derive(Debug)]
pub struct Loaded {
    /// In insertion order.
    pub keys: Vec<KeyRecord>,
    /// By priority; always contains `default`.
    pub groups: Vec<PoolGroup>,
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Each pool key's balance from its last sync, by key id.
    pub balances: Vec<BalanceRecord>,
    /// The first-start import of `key_pool.json`, when one happened.
    pub import: Option<ImportReport>,
    /// The client keys (contract §13), in creation order.
    pub clients: Vec<ClientRecord>,
    /// When each client was last used (from the usage records), by client id.
    pub client_last_used: std::collections::HashMap<String, Millis>,
}

/// What a first-start import of `key_pool.json` did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub keys: usize,
    pub groups: usize,
    pub skipped: usize,
    pub warnings: Vec<String>,
}

struct Inner {
    path: PathBuf,
    queue: Arc<Queue>,
    options: StoreOptions,
    writer: Mutex<Option<JoinHandle<Result<(), SqliteError>>>>,
    /// The connection reads (`history`, usage) run on; `None` once closed.
    reader: Mutex<Option<Connection>>,
    /// Whether usage answers include the other instances' mirrored rollups (`fleet.rs`).
    fleet: AtomicBool,
}

impl Drop for Inner {
    /// The last handle is gone: the writer drains what is queued and stops.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A database error, naming the database file.
fn db_err(path: &Path, e: SqliteError) -> StoreError {
    StoreError::Database {
        path: path.display().to_string(),
        source: e,
    }
}

fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// Creates `path` with mode 0600 when missing, and narrows it to 0600 when it exists.
fn make_private(path: &Path, create: bool) -> Result<(), StoreError> {
    if create {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
    } else if !path.exists() {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(path))
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Store {
    /// Opens (creating when missing) `data_dir/droid2api.db`, brings its schema up to date,
    /// ensures the `default` group, imports a Node.js `key_pool.json` on first start, loads
    /// everything and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<(Store, Loaded), StoreError> {
        Store::open_with(data_dir, StoreOptions::default())
    }

    /// [`Store::open`] with other capacities and timeouts.
    pub fn open_with(
        data_dir: &Path,
        options: StoreOptions,
    ) -> Result<(Store, Loaded), StoreError> {
        if !data_dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(io_err(data_dir))?;
        }
        let path = data_dir.join(DB_FILE);
        let wal = sidecar(&path, "-wal");
        let shm = sidecar(&path, "-shm");
        // SQLite gives the -wal and -shm files the database file's mode: create it private.
        make_private(&path, true)?;
        make_private(&wal, false)?;
        make_private(&shm, false)?;

        let busy = options.busy_timeout;
        let mut conn = open_connection(&path, false, busy).map_err(|e| db_err(&path, e))?;
        schema::migrate(&mut conn).map_err(|e| db_err(&path, e))?;
        let now = now_ms();
        schema::ensure_default_group(&conn, now).map_err(|e| db_err(&path, e))?;
        let import = first_start_import(&mut conn, &path, data_dir, now)?;

        let clients = clients::load_clients(&conn).map_err(|e| db_err(&path, e))?;
        let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
        let client_last_used =
            clients::load_last_used(&conn, &ids).map_err(|e| db_err(&path, e))?;
        let loaded = Loaded {
            clients,
            client_last_used,
            keys: schema::load_keys(&conn).map_err(|e| db_err(&path, e))?,
            groups: schema::load_groups(&conn).map_err(|e| db_err(&path, e))?,
            settings: schema::load_settings(&conn).map_err(|e| db_err(&path, e))?,
            balances: usage::load_balances(&conn).map_err(|e| db_err(&path, e))?,
            import,
        };
        make_private(&wal, false)?;
        make_private(&shm, false)?;

        let reader = open_connection(&path, true, busy).map_err(|e| db_err(&path, e))?;
        let queue = Arc::new(Queue::new(options.traffic_capacity, options.traffic_linger));
        let writer_queue = Arc::clone(&queue);
        let writer = std::thread::Builder::new()
            .name("droid2api-store".into())
            .spawn(move || {
                writer::yield_to_requests();
                writer::writer_loop(conn, writer_queue)
            })
            .map_err(io_err(&path))?;
        tracing::debug!(
            path = %path.display(),
            keys = loaded.keys.len(),
            groups = loaded.groups.len(),
            settings = loaded.settings.len(),
            balances = loaded.balances.len(),
            "store: opened"
        );
        let store = Store {
            inner: Arc::new(Inner {
                path,
                queue,
                options,
                writer: Mutex::new(Some(writer)),
                reader: Mutex::new(Some(reader)),
                fleet: AtomicBool::new(false),
            }),
        };
        Ok((store, loaded))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues ops on the traffic lane without waiting (never blocks; called under the pool
    /// lock). Key states, counters and balances are coalesced per key; usage records and key
    /// events beyond the lane's capacity are dropped and counted. Ops that create or delete
    /// rows (`PutKey`, `DeleteKey`, groups, settings) go on the admin lane, unacknowledged. A
    /// failure is logged by the writer.
    pub fn submit(&self, ops: Vec<StoreOp>) {
        if ops.is_empty() {
            return;
        }
        let drops = self.inner.queue.push_traffic(ops);
        for (kind, n) in [
            ("usage", drops.usage),
            ("event", drops.event),
            ("other", drops.other),
            ("admin", drops.admin),
        ] {
            if n > 0 {
                metrics::counter!(m::STORE_DROPPED, "kind" => kind).increment(n);
            }
        }
    }

    /// Queues one usage record on the traffic lane without waiting. Returns false when it was
    /// dropped (the lane is full or the store closed; counted).
    pub fn record_usage(&self, record: UsageRecord) -> bool {
        let queued = self.inner.queue.push_usage(record);
        if !queued {
            metrics::counter!(m::STORE_DROPPED, "kind" => "usage").increment(1);
        }
        queued
    }

    /// Queues ops on the admin lane at once (so they keep their place in line behind earlier
    /// ops) and returns a receiver resolved when they are committed — or with
    /// [`SqliteError::Timeout`] when the writer did not confirm them within the acknowledgement
    /// timeout (outside a Tokio runtime there is no timeout). The pool calls this under its lock
    /// so the database sees changes in the order memory did; the caller waits outside the lock.
    pub fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), SqliteError>> {
        let (ack, done) = oneshot::channel();
        if let Err((msg, e)) = self.inner.queue.push_admin(AdminMsg::Ops {
            ops,
            ack: Some(ack),
        }) && let AdminMsg::Ops { ack: Some(ack), .. } = msg
        {
            let _ = ack.send(Err(e));
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (tx, rx) = oneshot::channel();
                let timeout = self.inner.options.ack_timeout;
                runtime.spawn(async move {
                    let mut tx = tx;
                    tokio::select! {
                        result = wait_for(done, timeout) => {
                            let _ = tx.send(result);
                        }
                        // The caller stopped waiting.
                        _ = tx.closed() => {}
                    }
                });
                rx
            }
            Err(_) => done,
        }
    }

    /// Queues ops on the admin lane and waits until they (and everything queued before them on
    /// that lane) are committed, at most the acknowledgement timeout.
    pub async fn commit(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.admin_and_wait(
            AdminMsg::Ops {
                ops,
                ack: Some(ack),
            },
            done,
            self.inner.options.ack_timeout,
        )
        .await
    }

    /// Waits until everything queued so far (both lanes) is committed, at most the
    /// acknowledgement timeout. Fails when the transaction that held the queued writes could
    /// not be committed (a batch that failed on its own was already reported), on the timeout,
    /// or when the store is closed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.admin_and_wait(AdminMsg::Flush(ack), done, self.inner.options.ack_timeout)
            .await
    }

    async fn admin_and_wait<T>(
        &self,
        msg: AdminMsg,
        done: oneshot::Receiver<Result<T, SqliteError>>,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let path = &self.inner.path;
        if let Err((_, e)) = self.inner.queue.push_admin(msg) {
            return Err(db_err(path, e));
        }
        wait_for(done, timeout).await.map_err(|e| db_err(path, e))
    }

    /// The queue's state (for metrics and tests).
    pub fn queue_stats(&self) -> QueueStats {
        self.inner.queue.stats()
    }

    /// Changes the traffic lane's capacity (items already queued stay).
    pub fn set_traffic_capacity(&self, capacity: usize) {
        self.inner.queue.set_capacity(capacity);
    }

    /// Runs `read` on the read-only connection in `spawn_blocking` (WAL: never waits on the
    /// writer; sees what was committed when it starts).
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || {
            let guard = lock(&inner.reader);
            match guard.as_ref() {
                Some(conn) => read(conn),
                None => Err(SqliteError::Closed),
            }
        })
        .await;
        match result {
            Ok(r) => r.map_err(|e| db_err(&self.inner.path, e)),
            Err(join) => Err(StoreError::Io {
                path: self.inner.path.display().to_string(),
                source: std::io::Error::other(join),
            }),
        }
    }

    /// A key's transitions, newest first, at most `limit`. Reads on its own connection (WAL:
    /// never waits on the writer).
    pub async fn history(&self, key_id: &str, limit: usize) -> Result<Vec<KeyEvent>, StoreError> {
        let key_id = key_id.to_string();
        self.read(move |conn| schema::load_history(conn, &key_id, limit))
            .await
    }

    /// Per value of a dimension (`"key"` = the records' credential, `"model"`, `"client"`),
    /// ordered by value: all-time totals (the sum of the day rollups) and the totals of the day
    /// bucket starting at `day_start` (a local day start as UTC ms, as in
    /// `UsageRecord::day_start`). Lists every value that ever had a request, deleted keys and
    /// non-pool credentials (`env`, `-`, …) included. An unknown dimension is refused.
    pub async fn usage_by(
        &self,
        dim: &str,
        day_start: Millis,
    ) -> Result<Vec<(String, UsageTotals, UsageTotals)>, StoreError> {
        let dim = dim.to_string();
        let fleet = self.fleet_included();
        self.read(move |conn| usage::usage_by(conn, &dim, day_start, fleet))
            .await
    }

    /// [`Store::usage_by`] over this instance's own usage only, whatever the fleet view (the
    /// share of a client's day this instance counted itself).
    pub async fn usage_by_local(
        &self,
        dim: &str,
        day_start: Millis,
    ) -> Result<Vec<(String, UsageTotals, UsageTotals)>, StoreError> {
        let dim = dim.to_string();
        self.read(move |conn| usage::usage_by(conn, &dim, day_start, false))
            .await
    }

    /// Grand totals of every request: all-time and for the day bucket starting at `day_start`.
    pub async fn usage_totals(
        &self,
        day_start: Millis,
    ) -> Result<(UsageTotals, UsageTotals), StoreError> {
        let fleet = self.fleet_included();
        self.read(move |conn| usage::usage_totals(conn, day_start, fleet))
            .await
    }

    /// A time series: buckets of `granularity` (`"hour"` or `"day"`, anything else is refused)
    /// with `from <= bucket_start < to` that have data, ascending. Filtered by `key` (the
    /// records' credential) or `model` it comes from that dimension's rollups (all time); with
    /// both, from the usage records grouped by their stored bucket start, so only as far back as
    /// records are kept (`DATA_RETENTION_DAYS`).
    pub async fn usage_series(
        &self,
        granularity: &str,
        from: Millis,
        to: Millis,
        key: Option<&str>,
        model: Option<&str>,
    ) -> Result<Vec<(Millis, UsageTotals)>, StoreError> {
        self.usage_series_of(granularity, from, to, key, model, None)
            .await
    }

    /// [`Store::usage_series`] with a `client` filter too (the records' client: a client key's
    /// `cli_…` id, `api_access_key` or `anonymous`); one filter reads that dimension's rollups,
    /// several the records.
    pub async fn usage_series_of(
        &self,
        granularity: &str,
        from: Millis,
        to: Millis,
        key: Option<&str>,
        model: Option<&str>,
        client: Option<&str>,
    ) -> Result<Vec<(Millis, UsageTotals)>, StoreError> {
        let granularity = granularity.to_string();
        let key = key.map(str::to_string);
        let model = model.map(str::to_string);
        let client = client.map(str::to_string);
        let fleet = self.fleet_included();
        self.read(move |conn| {
            usage::usage_series(
                conn,
                &granularity,
                from,
                to,
                key.as_deref(),
                model.as_deref(),
                client.as_deref(),
                fleet,
            )
        })
        .await
    }

    /// Deletes the usage records with `at < before` (rollups are kept) and returns how many were
    /// deleted. Runs on the writer after everything queued before it (so records submitted
    /// earlier are counted), in chunks of 5,000 rows per transaction with other writes in
    /// between; durable when it returns. Gives up waiting (not deleting) after the prune
    /// timeout (60 s).
    pub async fn prune_usage(&self, before: Millis) -> Result<u64, StoreError> {
        let (ack, done) = oneshot::channel();
        self.admin_and_wait(
            AdminMsg::Prune { before, ack },
            done,
            self.inner.options.prune_timeout,
        )
        .await
    }

    /// Drains the queue, commits, stops the writer thread and checkpoints the WAL. Idempotent.
    /// Blocking: call from `spawn_blocking` or at the very end of shutdown.
    pub fn close(&self) -> Result<(), StoreError> {
        let Some(handle) = lock(&self.inner.writer).take() else {
            return Ok(());
        };
        // The reader goes first, so that the writer's connection is the last one and the WAL
        // can be checkpointed and removed.
        drop(lock(&self.inner.reader).take());
        self.inner.queue.close();
        let path = &self.inner.path;
        match handle.join() {
            Ok(result) => result.map_err(|e| db_err(path, e)),
            Err(_) => Err(db_err(path, SqliteError::WriterGone)),
        }
    }
}

/// Opens a connection with the store's settings. The reader is `query_only`.
fn open_connection(
    path: &Path,
    reader: bool,
    busy_timeout: Duration,
) -> Result<Connection, SqliteError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | if reader {
            OpenFlags::empty()
        } else {
            OpenFlags::SQLITE_OPEN_CREATE
        };
    let conn = Connection::open_with_flags(path, flags).map_err(sql("opening the database"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sql("setting the busy timeout"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql("switching to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::Refused(format!(
            "the database stays in journal mode {mode}; WAL is required"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql("setting synchronous=FULL"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql("enabling foreign keys"))?;
    if reader {
        conn.pragma_update(None, "query_only", "ON")
            .map_err(sql("making the reader read-only"))?;
    }
    Ok(conn)
}

/// On first start, imports `data_dir/key_pool.json` (Node.js format) in one transaction.
fn first_start_import(
    conn: &mut Connection,
    db: &Path,
    data_dir: &Path,
    now: Millis,
) -> Result<Option<ImportReport>, StoreError> {
    let dbe = |e| db_err(db, e);
    if schema::meta_get(conn, NODE_IMPORT_DONE)
        .map_err(dbe)?
        .is_some()
    {
        return Ok(None);
    }
    let file = data_dir.join(NODE_POOL_FILE);
    let bytes = if schema::pool_is_empty(conn).map_err(dbe)? {
        match fs::read(&file) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&file)(e)),
        }
    } else {
        None
    };
    let Some(bytes) = bytes else {
        schema::meta_set(conn, NODE_IMPORT_DONE, &format!("none at {now}")).map_err(dbe)?;
        return Ok(None);
    };

    let parsed = parse_node_pool(&bytes, now).map_err(|e: ImportError| StoreError::Io {
        path: file.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let report = ImportReport {
        keys: parsed.keys.len(),
        groups: parsed.groups.len(),
        skipped: parsed.skipped,
        warnings: parsed.warnings,
    };
    // Groups first: keys reference them.
    let mut ops: Vec<StoreOp> = parsed.groups.into_iter().map(StoreOp::PutGroup).collect();
    ops.extend(parsed.keys.into_iter().map(StoreOp::PutKey));
    ops.push(StoreOp::AddEvents(parsed.events));
    if let Some(algorithm) = parsed.algorithm {
        ops.push(StoreOp::PutSetting {
            name: ALGORITHM_SETTING.to_string(),
            value: serde_json::Value::String(algorithm),
        });
    }
    let context = format!("importing {}", file.display());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(context.clone()))
        .map_err(dbe)?;
    for op in &ops {
        schema::apply_op(&tx, op).map_err(dbe)?;
    }
    schema::meta_set(
        &tx,
        NODE_IMPORT_DONE,
        &format!("imported {} keys at {now}", report.keys),
    )
    .map_err(dbe)?;
    tx.commit().map_err(sql(context)).map_err(dbe)?;

    for warning in &report.warnings {
        tracing::warn!(file = %file.display(), "key_pool.json import: {warning}");
    }
    // The file holds every key in clear: once imported it is set aside, readable by us alone.
    // The import is committed and flagged, so a failure here only leaves the file where it was.
    let imported = data_dir.join(NODE_POOL_IMPORTED);
    let set_aside = fs::rename(&file, &imported)
        .and_then(|()| fs::set_permissions(&imported, fs::Permissions::from_mode(0o600)));
    match &set_aside {
        Ok(()) => tracing::info!(
            file = %file.display(),
            renamed_to = %imported.display(),
            keys = report.keys,
            groups = report.groups,
            skipped = report.skipped,
            warnings = report.warnings.len(),
            "imported the Node.js key pool (the file was renamed and made private, mode 0600)"
        ),
        Err(e) => tracing::warn!(
            file = %file.display(),
            error = %e,
            keys = report.keys,
            groups = report.groups,
            skipped = report.skipped,
            warnings = report.warnings.len(),
            "imported the Node.js key pool, but could not rename it to {NODE_POOL_IMPORTED} with mode 0600: move or delete it by hand"
        ),
    }
    Ok(Some(report))
}

/// Waits for a writer's answer at most `timeout`.
async fn wait_for<T>(
    done: oneshot::Receiver<Result<T, SqliteError>>,
    timeout: Duration,
) -> Result<T, SqliteError> {
    match tokio::time::timeout(timeout, done).await {
        Ok(Ok(result)) => result,
        // The writer stopped before reaching the message.
        Ok(Err(_)) => Err(SqliteError::Closed),
        Err(_) => {
            metrics::counter!(m::STORE_ACK_TIMEOUTS).increment(1);
            Err(SqliteError::Timeout {
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
    }
}

#[cfg(test)]
mod tests;
