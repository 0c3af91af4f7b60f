//! Console logging never blocks a request: the real binary logs at `trace` to a stdout pipe that
//! nobody reads once it is listening. The pipe fills up (64 KiB on Linux) within a few hundred
//! requests; a console writer on the request's thread would then block every worker on
//! `write(2)` and the gateway would stop answering. Through the background, lossy writer the
//! requests keep being served.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_droid2api");

#[tokio::test]
async fn a_stdout_nobody_reads_does_not_stop_the_gateway() {
    let mock = MockUpstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("DATA_DIR", temp.path().join("data"))
        .env("LOG_DIR", temp.path().join("logs"))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("FACTORY_BASE_URL", mock.url())
        .env("WORKOS_BASE_URL", mock.url())
        .env("FACTORY_API_KEY", "fk-non-blocking-logs-key-0123456789")
        .env("LOG_LEVEL", "trace")
        .current_dir(temp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn droid2api");

    // Read until the listening line, then keep the pipe open and never read it again.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("stdout open until listening");
            if let Some(addr) = line.split("addr=").nth(1) {
                let addr = addr.split_whitespace().next().unwrap();
                break addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
            }
        }
    })
    .await
    .expect("listening within 20 s");

    // Far more log output than a pipe holds, each request bounded in time.
    let c = client();
    let started = Instant::now();
    for i in 0..1_500 {
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            c.post(format!("http://127.0.0.1:{port}/v1/messages"))
                .json(&anthropic_body("claude-opus-4-6"))
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} hung (after {:?})", started.elapsed()))
        .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "request {i}");
        resp.bytes().await.unwrap();
    }
    let health = c
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    drop(lines);
    let _ = child.start_kill();
    let _ = child.wait().await;
}
