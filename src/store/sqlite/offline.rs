//! Offline access to a data folder's database for `droid2api migrate` (no writer thread, no
//! first-start import): read what the pool holds, then apply one migration plan in one
//! transaction. The caller holds the folder's [`DataDirLock`](crate::store::DataDirLock), so no
//! gateway writes at the same time.
//!
//! A preview (`--dry-run`) changes nothing: an up-to-date database is read through a read-only
//! connection, a missing one is stood in for by an empty in-memory database, and one with an
//! older schema is copied to a scratch folder and upgraded there.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};

use super::fleet::RollupRow;
use super::schema::{self, sql};
use super::{
    BUSY_TIMEOUT, DB_FILE, SqliteError, db_err, io_err, make_private, now_ms, open_connection,
    sidecar, usage,
};
use crate::store::StoreError;
use crate::store::records::{KeyRecord, PoolGroup, StoreOp};

/// What the pool holds.
#[derive(Debug, Clone, Default)]
pub struct PoolSnapshot {
    /// In insertion order.
    pub keys: Vec<KeyRecord>,
    pub groups: Vec<PoolGroup>,
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A database opened for a migration.
pub struct OfflineDb {
    conn: Connection,
    path: PathBuf,
    /// A scratch copy's folder (preview of an older schema), removed on drop.
    scratch: Option<PathBuf>,
    /// Whether the database file exists (false: an in-memory stand-in).
    exists: bool,
}

impl Drop for OfflineDb {
    fn drop(&mut self) {
        if let Some(dir) = self.scratch.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl std::fmt::Debug for OfflineDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineDb")
            .field("path", &self.path)
            .field("exists", &self.exists)
            .finish_non_exhaustive()
    }
}

impl OfflineDb {
    /// Opens (creating when missing) `data_dir/droid2api.db` for writing and brings its schema
    /// up to date. The first-start import of `key_pool.json` is not run here.
    pub fn open(data_dir: &Path) -> Result<OfflineDb, StoreError> {
        if !data_dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(io_err(data_dir))?;
        }
        let path = data_dir.join(DB_FILE);
        make_private(&path, true)?;
        make_private(&sidecar(&path, "-wal"), false)?;
        make_private(&sidecar(&path, "-shm"), false)?;
        let mut conn = open_connection(&path, false, BUSY_TIMEOUT).map_err(|e| db_err(&path, e))?;
        schema::migrate(&mut conn).map_err(|e| db_err(&path, e))?;
        schema::ensure_default_group(&conn, now_ms()).map_err(|e| db_err(&path, e))?;
        Ok(OfflineDb {
            conn,
            path,
            scratch: None,
            exists: true,
        })
    }

    /// Opens the database for reading only, changing nothing on disk (see the module doc).
    pub fn preview(data_dir: &Path) -> Result<OfflineDb, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            let mut conn = Connection::open_in_memory()
                .map_err(sql("opening an in-memory database"))
                .map_err(|e| db_err(&path, e))?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(sql("enabling foreign keys"))
                .map_err(|e| db_err(&path, e))?;
            schema::migrate(&mut conn).map_err(|e| db_err(&path, e))?;
            schema::ensure_default_group(&conn, now_ms()).map_err(|e| db_err(&path, e))?;
            return Ok(OfflineDb {
                conn,
                path,
                scratch: None,
                exists: false,
            });
        }
        let conn = open_connection(&path, true, BUSY_TIMEOUT).map_err(|e| db_err(&path, e))?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql("reading the schema version"))
            .map_err(|e| db_err(&path, e))?;
        let known = schema::schema_version();
        if found > known {
            return Err(db_err(&path, SqliteError::TooNew { found, known }));
        }
        if found == known {
            return Ok(OfflineDb {
                conn,
                path,
                scratch: None,
                exists: true,
            });
        }
        drop(conn);
        // An older schema: upgrade a copy, never the original.
        let scratch = std::env::temp_dir().join(format!(
            "droid2api-migrate-preview-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&scratch)
            .map_err(io_err(&scratch))?;
        let copy = scratch.join(DB_FILE);
        let result: Result<Connection, StoreError> = (|| {
            fs::copy(&path, &copy).map_err(io_err(&path))?;
            let wal = sidecar(&path, "-wal");
            if wal.exists() {
                fs::copy(&wal, sidecar(&copy, "-wal")).map_err(io_err(&wal))?;
            }
            let mut conn =
                open_connection(&copy, false, BUSY_TIMEOUT).map_err(|e| db_err(&path, e))?;
            schema::migrate(&mut conn).map_err(|e| db_err(&path, e))?;
            schema::ensure_default_group(&conn, now_ms()).map_err(|e| db_err(&path, e))?;
            Ok(conn)
        })();
        match result {
            Ok(conn) => Ok(OfflineDb {
                conn,
                path,
                scratch: Some(scratch),
                exists: true,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }

    /// The database file (of the data folder, also for a preview).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the database file exists (a preview of a fresh folder reads an empty stand-in).
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Keys, groups and stored settings.
    pub fn snapshot(&self) -> Result<PoolSnapshot, StoreError> {
        let e = |e| db_err(&self.path, e);
        Ok(PoolSnapshot {
            keys: schema::load_keys(&self.conn).map_err(e)?,
            groups: schema::load_groups(&self.conn).map_err(e)?,
            settings: schema::load_settings(&self.conn).map_err(e)?,
        })
    }

    /// A bookkeeping value (`meta` table).
    pub fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        schema::meta_get(&self.conn, name).map_err(|e| db_err(&self.path, e))
    }

    /// Applies `ops` (in order), adds `rollups` to the usage rollups (one new change sequence,
    /// so other instances are told) and sets `meta`, all in one transaction. `progress` is
    /// called with the number of items done so far.
    pub fn apply(
        &mut self,
        ops: &[StoreOp],
        rollups: &[RollupRow],
        meta: &[(String, String)],
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |e| db_err(&path, e);
        let context = "applying the migration";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(context))
            .map_err(e)?;
        let mut done = 0u64;
        for op in ops {
            schema::apply_op(&tx, op).map_err(e)?;
            done += 1;
            if done.is_multiple_of(256) {
                progress(done);
            }
        }
        progress(done);
        for chunk in rollups.chunks(1024) {
            usage::add_rollups(&tx, chunk).map_err(e)?;
            done += chunk.len() as u64;
            progress(done);
        }
        for (name, value) in meta {
            schema::meta_set(&tx, name, value).map_err(e)?;
        }
        tx.commit().map_err(sql(context)).map_err(e)?;
        make_private(&sidecar(&self.path, "-wal"), false)?;
        make_private(&sidecar(&self.path, "-shm"), false)?;
        Ok(())
    }
}
