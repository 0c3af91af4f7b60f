//! Helpers for tests that look at the gateway's database from the outside (WP3: write-behind,
//! saturation): a read-only view, and a second connection that holds the write lock.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

/// The database file in a data folder.
pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("droid2api.db")
}

/// A read-only connection (WAL: never waits for the gateway's writer).
pub fn read_only(data_dir: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(
        db_path(data_dir),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the database opens read-only");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// One integer from a query.
pub fn query_i64(data_dir: &Path, sql: &str) -> i64 {
    read_only(data_dir)
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The number of usage records stored.
pub fn usage_rows(data_dir: &Path) -> i64 {
    query_i64(data_dir, "SELECT count(*) FROM usage_records")
}

/// Another connection holding the database's write lock (`BEGIN IMMEDIATE`) until dropped:
/// the gateway's writer waits on it (a real stall, not a hook).
pub struct WriteLock(rusqlite::Connection);

pub fn hold_write_lock(data_dir: &Path) -> WriteLock {
    let c = rusqlite::Connection::open(db_path(data_dir)).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    WriteLock(c)
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// Polls `cond` every 20 ms for at most 30 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
