//! File modes (contract §9 "Files"): the data folder is narrowed to 0700 at start-up even when it
//! already existed wider; a Node.js `key_pool.json` is renamed `key_pool.json.imported` and
//! narrowed to 0600 once imported; with `NODE_ENV=production` the log files are 0600 in a 0700
//! log folder (the real binary: logging is global per process).

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_droid2api");

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn widen(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    assert_eq!(mode(p), m);
}

#[tokio::test]
async fn an_existing_wide_data_folder_is_narrowed_to_0700_at_start() {
    let mock = MockUpstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    widen(&data, 0o755);
    let gw = gateway(&mock).data_dir(&data).start().await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("droid2api.db")), 0o600);
    // The gateway serves as usual.
    let health = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    gw.stop().await;

    // Widened again between runs: narrowed again at the next start.
    widen(&data, 0o777);
    let gw = gateway(&mock).data_dir(&data).start().await;
    assert_eq!(mode(&data), 0o700);
    gw.stop().await;
}

#[tokio::test]
async fn an_imported_node_key_pool_is_renamed_and_made_private() {
    let mock = MockUpstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/node/key_pool.json"
    ))
    .unwrap();
    let file = data.join("key_pool.json");
    std::fs::write(&file, &fixture).unwrap();
    widen(&file, 0o644);

    let gw = gateway(&mock).data_dir(&data).start().await;
    let imported = data.join("key_pool.json.imported");
    assert!(!file.exists(), "key_pool.json is renamed once imported");
    assert_eq!(std::fs::read(&imported).unwrap(), fixture, "content kept");
    assert_eq!(mode(&imported), 0o600);
    let pool = &gw.running.as_ref().unwrap().app.pool;
    assert_eq!(pool.stats().0.total, 6, "the keys were imported");
    gw.stop().await;

    // A restart imports nothing again and leaves the set-aside file alone.
    let gw = gateway(&mock).data_dir(&data).start().await;
    assert_eq!(gw.running.as_ref().unwrap().app.pool.stats().0.total, 6);
    assert!(!file.exists());
    assert_eq!(mode(&imported), 0o600);
    gw.stop().await;
}

/// The real binary in production mode: its log files and folder.
#[tokio::test]
async fn production_log_files_are_0600_in_a_0700_folder() {
    let mock = MockUpstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let (home, data, logs) = (
        temp.path().join("home"),
        temp.path().join("data"),
        temp.path().join("logs"),
    );
    for d in [&home, &data, &logs] {
        std::fs::create_dir_all(d).unwrap();
        widen(d, 0o755);
    }
    // A log file left from an earlier run with a wide mode is narrowed when reopened.
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    let old_file = logs.join(format!("droid2api.{today}.log"));
    std::fs::write(&old_file, "an earlier line\n").unwrap();
    widen(&old_file, 0o644);

    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("DATA_DIR", &data)
        .env("LOG_DIR", &logs)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("FACTORY_BASE_URL", mock.url())
        .env("WORKOS_BASE_URL", mock.url())
        .env("FACTORY_API_KEY", "fk-file-modes-test-key-0123456789")
        .env("LOG_LEVEL", "info")
        .env("NODE_ENV", "production")
        .current_dir(temp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn droid2api");
    let stdout = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (pipe, into) = (child.stdout.take().unwrap(), Arc::clone(&stdout));
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut s = into.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout.lock().unwrap().contains(" listening") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited ({status}) before listening:\n{}",
                stdout.lock().unwrap()
            );
        }
        assert!(Instant::now() < deadline, "not listening within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", stdout.lock().unwrap());
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;

    assert_eq!(mode(&logs), 0o700, "log folder");
    assert_eq!(mode(&data), 0o700, "data folder");
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "no log file");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("droid2api.") && name.ends_with(".log"),
            "{name}"
        );
        assert_eq!(mode(f), 0o600, "{name}");
    }
    let still_today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    if still_today == today {
        let text = std::fs::read_to_string(&old_file).unwrap();
        assert!(
            text.starts_with("an earlier line\n") && text.contains(" listening"),
            "appended to today's file:\n{text}"
        );
    }
    // The console got the lines too (through its own non-blocking writer).
    assert!(stdout.lock().unwrap().contains("shutdown complete"));
}
