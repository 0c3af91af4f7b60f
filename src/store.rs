//! Persistence: the data folder, its single-instance lock, private atomic file writes, and the
//! embedded SQLite database (`sqlite`) that holds the key pool, its history and stored settings,
//! written behind by one writer thread.
//!
//! **Invariant:** this module knows nothing of HTTP. Files holding secrets are written with mode
//! 0600, atomically (temporary file, fsync, rename, fsync of the folder), so a crash leaves either
//! the old or the new content.

pub mod import;
pub mod migrate;
pub mod records;
pub mod redis;
pub mod sqlite;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data folder.
pub const LOCK_FILE: &str = ".droid2api.lock";

/// Persistence failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data folder {dir} is in use by another droid2api instance (lock {lock} is held); stop that instance or point DATA_DIR at another folder"
    )]
    Locked { dir: String, lock: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Database {
        path: String,
        #[source]
        source: sqlite::SqliteError,
    },
}

impl StoreError {
    /// The store did not take or confirm a write in time: temporary (503), nothing failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database { source, .. } if source.is_unavailable())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An exclusive lock on a data folder, held for the life of the process (released on drop).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates the folder when missing, narrows it to mode 0700 (also when it existed with a
    /// wider mode: it holds the database and `auth.json`), and takes its lock, or says who holds
    /// it. A folder this user may not chmod (owned by another user) is used as it is, with a
    /// warning.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, StoreError> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        narrow_dir(dir);
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.display().to_string(),
                    lock: path.display().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        // Record the holder for humans; the lock itself is what counts.
        let _ = file.set_len(0);
        let _ = writeln!(file, "pid {}", std::process::id());
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Narrows a folder to mode 0700 unless it already is; warns when that is not allowed.
fn narrow_dir(dir: &Path) {
    let mode = fs::metadata(dir).map(|m| m.permissions().mode() & 0o777);
    if mode.as_ref().is_ok_and(|m| *m == 0o700) {
        return;
    }
    if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
        tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "the data folder could not be narrowed to mode 0700; other users may read it"
        );
    } else if let Ok(m) = mode {
        tracing::info!(dir = %dir.display(), from = format!("{m:o}"), "data folder narrowed to mode 0700");
    }
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("in use by another droid2api instance"),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn the_data_folder_is_narrowed_to_0700_even_when_it_existed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        let lock = DataDirLock::acquire(&data).unwrap();
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(lock);
        let fresh = dir.path().join("fresh").join("data");
        let _lock = DataDirLock::acquire(&fresh).unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn atomic_write_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("auth.json");
        write_private_atomic(&p, b"{\"a\":1}").unwrap();
        write_private_atomic(&p, b"{\"a\":2}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{\"a\":2}");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
