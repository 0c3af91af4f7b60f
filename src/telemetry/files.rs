//! Daily log files that only the gateway's user can read.
//!
//! `tracing_appender`'s rolling appender creates its files with the process umask (often 0644),
//! so this writer does the rotation itself: `droid2api.YYYY-MM-DD.log` (UTC date, the names the
//! rolling appender used), opened for appending with mode 0600 (an existing file is narrowed to
//! 0600 too), a new file when the date changes, and only the newest [`LOG_FILES_KEPT`] kept. It
//! runs on the log writer's background thread, never on a request.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How many daily log files are kept.
pub const LOG_FILES_KEPT: usize = 14;
const PREFIX: &str = "droid2api.";
const SUFFIX: &str = ".log";
const DAY_S: i64 = 86_400;

/// The day number (days since the Unix epoch, UTC) of the current time.
fn today() -> i64 {
    jiff::Timestamp::now().as_second().div_euclid(DAY_S)
}

fn file_name(day: i64) -> String {
    let date = jiff::Timestamp::from_second(day.saturating_mul(DAY_S))
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .date()
                .to_string()
        })
        .unwrap_or_else(|_| day.to_string());
    format!("{PREFIX}{date}{SUFFIX}")
}

/// Narrows a folder to mode 0700.
pub fn narrow_dir(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Opens (creating) a log file for appending, readable by the owner only.
fn open_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file created now: narrow one that existed before.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// The daily-rotated, private log files of a folder.
#[derive(Debug)]
pub struct DailyFiles {
    dir: PathBuf,
    keep: usize,
    day: i64,
    file: File,
    clock: fn() -> i64,
}

impl DailyFiles {
    /// Opens today's file in `dir` (which must exist).
    pub fn open(dir: &Path) -> io::Result<DailyFiles> {
        Self::open_with(dir, LOG_FILES_KEPT, today)
    }

    fn open_with(dir: &Path, keep: usize, clock: fn() -> i64) -> io::Result<DailyFiles> {
        let day = clock();
        let file = open_private(&dir.join(file_name(day)))?;
        let files = DailyFiles {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            day,
            file,
            clock,
        };
        files.prune();
        Ok(files)
    }

    /// Switches to the current day's file when the date changed.
    fn rotate(&mut self) -> io::Result<()> {
        let day = (self.clock)();
        if day == self.day {
            return Ok(());
        }
        let file = open_private(&self.dir.join(file_name(day)))?;
        let _ = self.file.flush();
        self.file = file;
        self.day = day;
        self.prune();
        Ok(())
    }

    /// Removes the oldest log files beyond the number kept (names sort by date).
    fn prune(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            .collect();
        names.sort();
        let excess = names.len().saturating_sub(self.keep);
        for name in &names[..excess] {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }
}

impl Write for DailyFiles {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A failed rotation keeps writing to the previous day's file.
        let _ = self.rotate();
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn names_are_utc_dates() {
        assert_eq!(file_name(0), "droid2api.1970-01-01.log");
        assert_eq!(file_name(19_723), "droid2api.2024-01-01.log");
    }

    static DAY: AtomicI64 = AtomicI64::new(20_000);
    fn fake_day() -> i64 {
        DAY.load(Ordering::SeqCst)
    }

    #[test]
    fn files_are_private_rotate_daily_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        // A folder left wide open is narrowed.
        fs::create_dir_all(&logs).unwrap();
        fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
        narrow_dir(&logs).unwrap();
        assert_eq!(mode(&logs), 0o700);
        // A file that existed with a wider mode is narrowed when opened.
        let first = logs.join(file_name(20_000));
        fs::write(&first, b"old\n").unwrap();
        fs::set_permissions(&first, fs::Permissions::from_mode(0o644)).unwrap();

        let mut files = DailyFiles::open_with(&logs, 3, fake_day).unwrap();
        assert_eq!(mode(&first), 0o600);
        files.write_all(b"day one\n").unwrap();
        for day in 20_001..20_005 {
            DAY.store(day, Ordering::SeqCst);
            files.write_all(format!("day {day}\n").as_bytes()).unwrap();
        }
        files.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [file_name(20_002), file_name(20_003), file_name(20_004)]
        );
        for name in &names {
            assert_eq!(mode(&logs.join(name)), 0o600, "{name}");
        }
        assert_eq!(
            fs::read_to_string(logs.join(file_name(20_004))).unwrap(),
            "day 20004\n"
        );
    }
}
