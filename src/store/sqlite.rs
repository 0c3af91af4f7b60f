//! The embedded SQLite store: keys, pool groups, key-state history, stored admin settings, token
//! usage (records, rollups) and key balances in `DATA_DIR/droid2api.db` (bundled SQLite, WAL,
//! `synchronous=FULL`, migrations by `PRAGMA user_version`, mode 0600 for the database and its
//! `-wal`/`-shm` files).
//!
//! One writer thread owns every write. [`Store::submit`] queues ops without waiting (the request
//! path); [`Store::commit`] queues and waits until they are durable (admin changes, before their
//! 2xx). The writer wakes on the first queued message, takes everything queued behind it, and
//! commits it as one transaction in which each queued batch is its own savepoint: a failing
//! batch is rolled back alone (logged, and reported to its `commit` caller) while the others are
//! committed. Traffic changes therefore reach disk within milliseconds of being queued.
//!
//! Decisions:
//! - `DeleteKey` keeps the key's events: the history of a deleted key stays readable by id.
//! - `DeleteGroup` of `default`, or into itself, is refused (the batch fails).
//! - `keys.pool_group` references `pool_groups.id` (foreign keys on): storing a key in a group
//!   that does not exist fails its batch.
//! - Keys load in insertion order (`rowid`); `PutKey` of an existing id updates in place, so a
//!   key keeps its place in the round-robin order.
//! - The algorithm imported from a Node.js `key_pool.json` is stored as the setting
//!   [`ALGORITHM_SETTING`] (`"algorithm"`, a JSON string), the name the admin layer uses for
//!   `key_pool.algorithm`.
//! - The Node import runs once per database: the meta flag `node_import_done` is set on the
//!   first start whether or not a file was there, and whenever the pool already holds keys or
//!   groups.
//! - Usage (`StoreOp::AddUsage`): one row per record plus rollups per hour, day and all time
//!   (`usage.rs`), in the buckets the caller computed (`UsageRecord::hour_start`/`day_start`, in
//!   the configured zone). Rollups are never pruned; [`Store::prune_usage`] deletes records only.
//!   A series filtered by key *and* model is computed from the records, so it reaches back only
//!   as far as they are kept.
//! - `DeleteKey` keeps the key's usage (records and rollups, under its id) but deletes its
//!   balance; `PutBalance` of a key that is not in the pool stores nothing (a sync may race the
//!   key's deletion).

mod rejected;
mod schema;
mod usage;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::StoreError;
use super::import::{ImportError, parse_node_pool};
use super::records::{BalanceRecord, KeyEvent, KeyRecord, Millis, PoolGroup, StoreOp};
use schema::sql;
pub use usage::{Tokens, UsageTotals};

/// The database file inside the data folder.
pub const DB_FILE: &str = "droid2api.db";
/// The Node.js version's key pool, imported on first start.
pub const NODE_POOL_FILE: &str = "key_pool.json";
/// The setting an imported Node.js algorithm is stored under (a JSON string).
pub const ALGORITHM_SETTING: &str = "algorithm";
/// Meta flag: the first-start Node import has run (or was not needed).
const NODE_IMPORT_DONE: &str = "node_import_done";
/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most ops the writer puts in one transaction before committing (a list op such as
/// `AddUsage` counts one per item).
const MAX_OPS_PER_TRANSACTION: usize = 10_000;
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
    #[error("the store's writer thread stopped unexpectedly")]
    WriterGone,
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
}

/// What a first-start import of `key_pool.json` did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub keys: usize,
    pub groups: usize,
    pub skipped: usize,
    pub warnings: Vec<String>,
}

type Ack = oneshot::Sender<Result<(), SqliteError>>;
type CountAck = oneshot::Sender<Result<u64, SqliteError>>;

enum Msg {
    Ops {
        ops: Vec<StoreOp>,
        ack: Option<Ack>,
    },
    /// Delete usage records older than `before`; answers how many.
    PruneUsage {
        before: Millis,
        ack: CountAck,
    },
    Flush(Ack),
    Close,
}

/// Who is told about a processed message, and how.
enum Reply {
    None,
    Done(Ack),
    Count(CountAck),
}

impl Reply {
    fn send(self, result: Result<u64, SqliteError>) {
        match self {
            Reply::None => {}
            Reply::Done(ack) => {
                let _ = ack.send(result.map(|_| ()));
            }
            Reply::Count(ack) => {
                let _ = ack.send(result);
            }
        }
    }
}

struct Inner {
    path: PathBuf,
    tx: mpsc::Sender<Msg>,
    writer: Mutex<Option<JoinHandle<Result<(), SqliteError>>>>,
    /// The connection reads (`history`, usage) run on; `None` once closed.
    reader: Mutex<Option<Connection>>,
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

        let mut conn = open_connection(&path, false).map_err(|e| db_err(&path, e))?;
        schema::migrate(&mut conn).map_err(|e| db_err(&path, e))?;
        let now = now_ms();
        schema::ensure_default_group(&conn, now).map_err(|e| db_err(&path, e))?;
        let import = first_start_import(&mut conn, &path, data_dir, now)?;

        let loaded = Loaded {
            keys: schema::load_keys(&conn).map_err(|e| db_err(&path, e))?,
            groups: schema::load_groups(&conn).map_err(|e| db_err(&path, e))?,
            settings: schema::load_settings(&conn).map_err(|e| db_err(&path, e))?,
            balances: usage::load_balances(&conn).map_err(|e| db_err(&path, e))?,
            import,
        };
        make_private(&wal, false)?;
        make_private(&shm, false)?;

        let reader = open_connection(&path, true).map_err(|e| db_err(&path, e))?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("droid2api-store".into())
            .spawn(move || writer_loop(conn, rx))
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
                tx,
                writer: Mutex::new(Some(writer)),
                reader: Mutex::new(Some(reader)),
            }),
        };
        Ok((store, loaded))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues ops without waiting. Never blocks. A failure is logged by the writer.
    pub fn submit(&self, ops: Vec<StoreOp>) {
        if ops.is_empty() {
            return;
        }
        let count = ops.len();
        if self.inner.tx.send(Msg::Ops { ops, ack: None }).is_err() {
            tracing::warn!(ops = count, "store: closed; writes dropped");
        }
    }

    /// Queues ops at once (so they keep their place in line behind earlier ops) and returns a
    /// receiver resolved when they are committed. The pool calls this under its lock so the
    /// database sees changes in the order memory did; the caller waits outside the lock.
    pub fn enqueue_acked(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), SqliteError>> {
        let (ack, done) = oneshot::channel();
        if let Err(mpsc::SendError(Msg::Ops { ack: Some(ack), .. })) =
            self.inner.tx.send(Msg::Ops {
                ops,
                ack: Some(ack),
            })
        {
            let _ = ack.send(Err(SqliteError::Closed));
        }
        done
    }

    /// Queues ops and waits until they (and everything queued before them) are committed.
    pub async fn commit(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.send_and_wait(
            Msg::Ops {
                ops,
                ack: Some(ack),
            },
            done,
        )
        .await
    }

    /// Waits until everything queued so far is committed. Fails only when the transaction that
    /// held the queued writes could not be committed (a batch that failed on its own was
    /// already reported) or the store is closed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.send_and_wait(Msg::Flush(ack), done).await
    }

    async fn send_and_wait(
        &self,
        msg: Msg,
        done: oneshot::Receiver<Result<(), SqliteError>>,
    ) -> Result<(), StoreError> {
        let path = &self.inner.path;
        if self.inner.tx.send(msg).is_err() {
            return Err(db_err(path, SqliteError::Closed));
        }
        match done.await {
            Ok(result) => result.map_err(|e| db_err(path, e)),
            // The writer stopped before reaching the message.
            Err(_) => Err(db_err(path, SqliteError::Closed)),
        }
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
        self.read(move |conn| usage::usage_by(conn, &dim, day_start))
            .await
    }

    /// Grand totals of every request: all-time and for the day bucket starting at `day_start`.
    pub async fn usage_totals(
        &self,
        day_start: Millis,
    ) -> Result<(UsageTotals, UsageTotals), StoreError> {
        self.read(move |conn| usage::usage_totals(conn, day_start))
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
        let granularity = granularity.to_string();
        let key = key.map(str::to_string);
        let model = model.map(str::to_string);
        self.read(move |conn| {
            usage::usage_series(
                conn,
                &granularity,
                from,
                to,
                key.as_deref(),
                model.as_deref(),
            )
        })
        .await
    }

    /// Deletes the usage records with `at < before` (rollups are kept) and returns how many were
    /// deleted. Goes through the writer behind everything queued before it, so records submitted
    /// earlier are counted; durable when it returns.
    pub async fn prune_usage(&self, before: Millis) -> Result<u64, StoreError> {
        let path = &self.inner.path;
        let (ack, done) = oneshot::channel();
        if self.inner.tx.send(Msg::PruneUsage { before, ack }).is_err() {
            return Err(db_err(path, SqliteError::Closed));
        }
        match done.await {
            Ok(result) => result.map_err(|e| db_err(path, e)),
            Err(_) => Err(db_err(path, SqliteError::Closed)),
        }
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
        let _ = self.inner.tx.send(Msg::Close);
        let path = &self.inner.path;
        match handle.join() {
            Ok(result) => result.map_err(|e| db_err(path, e)),
            Err(_) => Err(db_err(path, SqliteError::WriterGone)),
        }
    }
}

/// Opens a connection with the store's settings. The reader is `query_only`.
fn open_connection(path: &Path, reader: bool) -> Result<Connection, SqliteError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | if reader {
            OpenFlags::empty()
        } else {
            OpenFlags::SQLITE_OPEN_CREATE
        };
    let conn = Connection::open_with_flags(path, flags).map_err(sql("opening the database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
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
    tracing::info!(
        file = %file.display(),
        keys = report.keys,
        groups = report.groups,
        skipped = report.skipped,
        warnings = report.warnings.len(),
        "imported the Node.js key pool (the file is left in place)"
    );
    Ok(Some(report))
}

/// The writer thread: commits queued batches until told to close or every handle is gone, then
/// checkpoints the WAL and closes the connection.
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Msg>) -> Result<(), SqliteError> {
    let mut closing = false;
    while !closing {
        let Ok(first) = rx.recv() else { break };
        let mut batch = VecDeque::new();
        let mut ops = 0usize;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Close => closing = true,
                Msg::Ops { ops: o, ack } => {
                    ops += o.iter().map(weight).sum::<usize>();
                    batch.push_back(Msg::Ops { ops: o, ack });
                }
                other @ (Msg::Flush(_) | Msg::PruneUsage { .. }) => {
                    ops += 1;
                    batch.push_back(other);
                }
            }
            if !closing && ops < MAX_OPS_PER_TRANSACTION {
                next = rx.try_recv().ok();
            }
        }
        commit_batches(&mut conn, batch);
    }
    let checkpoint = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql("checkpointing the WAL"));
    let closed = conn
        .close()
        .map_err(|(_, e)| e)
        .map_err(sql("closing the database"));
    tracing::debug!("store: writer stopped");
    checkpoint.and(closed).map(|_| ())
}

/// How much an op counts towards [`MAX_OPS_PER_TRANSACTION`].
fn weight(op: &StoreOp) -> usize {
    match op {
        StoreOp::AddUsage(v) => v.len().max(1),
        StoreOp::AddEvents(v) => v.len().max(1),
        StoreOp::AddCounters(v) => v.len().max(1),
        _ => 1,
    }
}

/// Commits queued messages, one transaction for all (each batch in its own savepoint). When
/// SQLite abandons the transaction itself (I/O error, disk full), the batches so far fail and
/// the rest go into a new transaction.
fn commit_batches(conn: &mut Connection, mut queue: VecDeque<Msg>) {
    while !queue.is_empty() {
        let mut done: Vec<(Reply, Result<u64, SqliteError>)> = Vec::new();
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = sql("starting a transaction")(e);
                tracing::error!(error = %e, "store: writes failed");
                for msg in queue {
                    reply_of(msg).send(Err(e.clone()));
                }
                return;
            }
        };
        let mut abandoned = None;
        while let Some(msg) = queue.pop_front() {
            let (reply, result) = match msg {
                Msg::Flush(ack) => (Reply::Done(ack), Ok(0)),
                Msg::Close => continue,
                Msg::Ops { ops, ack } => {
                    let result = apply_batch(&mut tx, &ops).map(|()| 0);
                    if let Err(e) = &result {
                        tracing::error!(
                            error = %e,
                            ops = ops.len(),
                            acknowledged = ack.is_some(),
                            "store: a batch of writes failed and was rolled back"
                        );
                    }
                    (ack.map_or(Reply::None, Reply::Done), result)
                }
                Msg::PruneUsage { before, ack } => {
                    let result = prune_in_savepoint(&mut tx, before);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "store: deleting old usage records failed");
                    }
                    (Reply::Count(ack), result)
                }
            };
            if let Err(e) = &result
                && tx.is_autocommit()
            {
                abandoned = Some(e.clone());
            }
            done.push((reply, result));
            if abandoned.is_some() {
                break;
            }
        }
        let outcome = match abandoned {
            Some(e) => {
                drop(tx);
                Err(e)
            }
            None => tx.commit().map_err(sql("committing")),
        };
        if let Err(e) = &outcome {
            tracing::error!(
                error = %e,
                batches = done.len(),
                "store: a transaction failed; its writes are lost"
            );
        }
        for (reply, result) in done {
            let result = match (&outcome, result) {
                (_, Err(own)) => Err(own),
                (Err(e), Ok(_)) => Err(e.clone()),
                (Ok(()), Ok(n)) => Ok(n),
            };
            reply.send(result);
        }
    }
}

/// The reply owed for a message that will not be processed.
fn reply_of(msg: Msg) -> Reply {
    match msg {
        Msg::Ops { ack, .. } => ack.map_or(Reply::None, Reply::Done),
        Msg::PruneUsage { ack, .. } => Reply::Count(ack),
        Msg::Flush(ack) => Reply::Done(ack),
        Msg::Close => Reply::None,
    }
}

/// Deletes old usage records inside a savepoint.
fn prune_in_savepoint(
    tx: &mut rusqlite::Transaction<'_>,
    before: Millis,
) -> Result<u64, SqliteError> {
    let sp = tx.savepoint().map_err(sql("starting a savepoint"))?;
    let deleted = usage::prune(&sp, before)?;
    sp.commit().map_err(sql("releasing a savepoint"))?;
    Ok(deleted)
}

/// Applies one queued batch inside a savepoint: all of it or none of it.
fn apply_batch(tx: &mut rusqlite::Transaction<'_>, ops: &[StoreOp]) -> Result<(), SqliteError> {
    let sp = tx.savepoint().map_err(sql("starting a savepoint"))?;
    for op in ops {
        schema::apply_op(&sp, op)?;
    }
    sp.commit().map_err(sql("releasing a savepoint"))
}

#[cfg(test)]
mod tests;
