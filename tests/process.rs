//! The real `droid2api` binary as a process: the data-folder lock, graceful shutdown on SIGTERM,
//! captured logs (no secrets, no prompts), `check-config`, start-up warnings and invalid
//! configuration.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use droid2api_mock::{MockUpstream, Reply, Rule};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_droid2api");

/// A temporary working folder with `home/`, `data/` and `logs/` inside.
struct Dirs {
    temp: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(temp.path().join("home")).unwrap();
        Dirs { temp }
    }
    fn root(&self) -> &Path {
        self.temp.path()
    }
    fn data(&self) -> PathBuf {
        self.temp.path().join("data")
    }
    fn logs(&self) -> PathBuf {
        self.temp.path().join("logs")
    }
    fn write_config(&self, config: &Value) {
        std::fs::create_dir_all(self.data()).unwrap();
        std::fs::write(
            self.data().join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }
}

/// A clean environment: nothing inherited but PATH; home, data and logs in the temp folder;
/// loopback, port 0; Factory and WorkOS at `upstream`.
fn base_env(dirs: &Dirs, upstream: &str) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    [
        ("PATH", path),
        ("HOME", dirs.root().join("home").display().to_string()),
        ("DATA_DIR", dirs.data().display().to_string()),
        ("LOG_DIR", dirs.logs().display().to_string()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("FACTORY_BASE_URL", upstream.to_string()),
        ("WORKOS_BASE_URL", upstream.to_string()),
        ("LOG_LEVEL", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn set(env: &mut Vec<(String, String)>, k: &str, v: impl Into<String>) {
    env.retain(|(key, _)| key != k);
    env.push((k.to_string(), v.into()));
}

/// A running (or finished) `droid2api` process whose output is being captured.
struct Proc {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn capture(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    })
}

impl Proc {
    fn spawn(dirs: &Dirs, env: &[(String, String)], args: &[&str]) -> Proc {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(dirs.root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn droid2api");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            capture(child.stdout.take().unwrap(), stdout.clone()),
            capture(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Proc {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits for the `listening addr=…` line and returns the port.
    async fn port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.stdout();
            if let Some(line) = out
                .lines()
                .find(|l| l.contains(" listening") && l.contains("addr="))
            {
                let addr = line
                    .split("addr=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap();
                return addr
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|e| panic!("port in {line:?}: {e}"));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "droid2api exited ({status}) before listening:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "droid2api did not start listening within 10 s:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {pid}");
    }

    fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Waits for the exit (bounded) and for the output readers to drain.
    async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!(
                    "droid2api did not exit within {timeout:?}:\n{}",
                    self.output()
                );
            }
        };
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
        status
    }
}

/// A client that never uses a system proxy and never reuses connections.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn health(port: u16) -> Result<u16, reqwest::Error> {
    client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

/// Runs a one-shot command (e.g. `check-config`) to completion.
async fn run_once(
    dirs: &Dirs,
    env: &[(String, String)],
    args: &[&str],
) -> (ExitStatus, String, String) {
    let mut p = Proc::spawn(dirs, env, args);
    let st = p.wait(Duration::from_secs(10)).await;
    (st, p.stdout(), p.stderr())
}

fn anthropic_stream_events() -> Vec<droid2api_mock::SseEventSpec> {
    droid2api_mock::anthropic::text_stream_events(
        "msg_process_1",
        "claude-opus-4-6",
        "Streaming through a shutdown: 你好 🌍",
        21,
        9,
        None,
    )
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn second_instance_on_the_same_data_dir_refuses_to_start() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "FACTORY_API_KEY", "fk-lock-test-key-0123456789");

    let mut a = Proc::spawn(&dirs, &env, &["serve"]);
    let port_a = a.port().await;
    assert_eq!(health(port_a).await.unwrap(), 200);

    let mut b = Proc::spawn(&dirs, &env, &["serve"]);
    let st = b.wait(Duration::from_secs(10)).await;
    assert!(
        !st.success(),
        "second instance must fail: {st}\n{}",
        b.output()
    );
    let err = b.stderr();
    assert!(
        err.contains("is in use by another droid2api instance"),
        "{}",
        b.output()
    );
    assert!(
        err.contains(&dirs.data().display().to_string()),
        "names the folder:\n{}",
        b.output()
    );
    assert!(!b.stdout().contains(" listening"), "{}", b.output());

    // A is unaffected; SIGINT stops it like SIGTERM does.
    assert_eq!(health(port_a).await.unwrap(), 200);
    a.signal("-INT");
    let st = a.wait(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0), "{}", a.output());

    // Once A is gone, the folder is free again.
    let mut c = Proc::spawn(&dirs, &env, &["serve"]);
    let port_c = c.port().await;
    assert_eq!(health(port_c).await.unwrap(), 200);
    c.sigterm();
    let st = c.wait(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0), "{}", c.output());
}

#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish() {
    let mock = MockUpstream::start().await;
    let events = anthropic_stream_events();
    assert!(events.len() >= 8, "{}", events.len());
    mock.push_rule(
        Rule::new(Reply::sse(events.clone()).sse_options(250, false, false))
            .path("/a/v1/messages")
            .once(),
    );
    let dirs = Dirs::new();
    dirs.write_config(&json!({"timing": {"shutdown_grace_s": 10}}));
    let mut env = base_env(&dirs, &mock.url());
    set(
        &mut env,
        "FACTORY_API_KEY",
        "fk-shutdown-test-key-0123456789",
    );

    let mut p = Proc::spawn(&dirs, &env, &["serve"]);
    let port = p.port().await;

    let resp = client()
        .post(format!("http://127.0.0.1:{port}/v1/messages"))
        .json(
            &json!({"model": "claude-opus-4-6", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut received = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("first chunk in time")
        .unwrap()
        .expect("a first chunk");
    received.extend_from_slice(&first);

    p.sigterm();

    // New connections are refused soon after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match health(port).await {
            Err(e) if e.is_connect() => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections after SIGTERM: {other:?}\n{}",
                    p.output()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the process must wait for the stream in flight"
    );

    // The stream in flight still delivers every byte and ends normally.
    let rest = tokio::time::timeout(Duration::from_secs(9), async {
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => received.extend_from_slice(&c),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("stream finished in time");
    assert!(
        rest.is_ok(),
        "stream ended with an error: {rest:?}\n{}",
        p.output()
    );
    let expected = droid2api_mock::encode_events(&events, false);
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&expected)
    );

    let st = p.wait(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0), "{}", p.output());
    let out = p.output();
    assert!(out.contains("SIGTERM received"), "{out}");
    assert!(
        !out.contains("grace period over"),
        "the stream finished within the grace period:\n{out}"
    );
}

#[tokio::test]
async fn grace_period_bounds_shutdown() {
    let mock = MockUpstream::start().await;
    let events = anthropic_stream_events();
    mock.push_rule(
        Rule::new(Reply::sse(events[..3].to_vec()).hanging_after())
            .path("/a/v1/messages")
            .once(),
    );
    let dirs = Dirs::new();
    dirs.write_config(&json!({"timing": {"shutdown_grace_s": 1}}));
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "FACTORY_API_KEY", "fk-grace-test-key-0123456789");

    let mut p = Proc::spawn(&dirs, &env, &["serve"]);
    let port = p.port().await;
    let mut resp = client()
        .post(format!("http://127.0.0.1:{port}/v1/messages"))
        .json(
            &json!({"model": "claude-opus-4-6", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("first chunk in time")
        .unwrap();
    assert!(first.is_some());

    let t = Instant::now();
    p.sigterm();
    let st = p.wait(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0), "{}", p.output());
    assert!(t.elapsed() < Duration::from_secs(10));

    // The client's stream ends (EOF or an error), it does not hang.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "eof",
                Err(_) => return "error",
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the client stream did not end after the process exited"
    );
    assert!(p.output().contains("grace period over"), "{}", p.output());
    // The upstream call was released too.
    assert!(
        mock.wait_idle(Duration::from_secs(5)).await,
        "the upstream stream is still held open"
    );
}

/// Every file under `dir` (recursively) as (path, contents).
fn files_in(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_in(&p));
        } else {
            out.push((
                p.clone(),
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
            ));
        }
    }
    out
}

/// Asserts none of `forbidden` (nor its unmasked middle) appears in `text`.
fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    for f in forbidden {
        assert!(!text.contains(f.as_str()), "{what} contains {f:?}:\n{text}");
        let chars: Vec<char> = f.chars().collect();
        if chars.len() > 16 {
            let middle: String = chars[6..chars.len() - 4].iter().collect();
            assert!(
                !text.contains(&middle),
                "{what} contains the middle of {f:?} ({middle:?}):\n{text}"
            );
        }
    }
}

/// Reads a streamed or plain body to the end.
async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn logs_never_contain_secrets_or_prompts() {
    let marker = format!("PROMPT-MARKER-{}", uuid_like());
    let factory_key = format!("fk-SECRET-FACTORY-{}", uuid_like());
    let api_key = format!("api-SECRET-ACCESS-{}", uuid_like());
    let admin_key = format!("adm-SECRET-ADMIN-{}", uuid_like());
    let wrong_key = format!("wrong-SECRET-CLIENT-{}", uuid_like());
    let upstream_text = format!("UPSTREAM-ERROR-TEXT {marker}");

    // ---- run 1: server-side Factory key, every route --------------------------------------
    let mock = MockUpstream::start().await;
    mock.push_rule(
        Rule::new(Reply::json(
            500,
            json!({"type": "error", "error": {"type": "api_error", "message": upstream_text}}),
        ))
        .path("/a/v1/messages")
        .once(),
    );
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "NODE_ENV", "production");
    set(&mut env, "LOG_LEVEL", "trace");
    set(&mut env, "FACTORY_API_KEY", factory_key.clone());
    set(&mut env, "API_ACCESS_KEY", api_key.clone());
    set(&mut env, "ADMIN_ACCESS_KEY", admin_key.clone());
    let mut p = Proc::spawn(&dirs, &env, &["serve"]);
    let port = p.port().await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let c = client();
    let auth = format!("Bearer {api_key}");
    let prompt = format!("Please repeat {marker} back to me");

    // Upstream error first (the once-rule answers the first messages call).
    let (s, b) = send(c.post(url("/v1/messages")).header("authorization", &auth).json(&json!({
        "model": "claude-opus-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}))).await;
    assert_eq!(s, 500, "{b}");
    for stream in [false, true] {
        let (s, b) = send(
            c.post(url("/v1/messages"))
                .header("x-api-key", &api_key)
                .json(&json!({
            "model": "claude-opus-4-6", "max_tokens": 64, "stream": stream, "system": prompt,
            "messages": [{"role": "user", "content": prompt}]})),
        )
        .await;
        assert_eq!(s, 200, "messages stream={stream}: {b}");
        let (s, b) = send(
            c.post(url("/v1/responses"))
                .header("authorization", &auth)
                .json(&json!({
            "model": "gpt-5.4", "stream": stream, "instructions": prompt, "input": prompt})),
        )
        .await;
        assert_eq!(s, 200, "responses stream={stream}: {b}");
        let (s, b) = send(c.post(url("/v1/chat/completions")).header("authorization", &auth).json(&json!({
            "model": "glm-5", "stream": stream, "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": prompt}]}))).await;
        assert_eq!(s, 200, "chat stream={stream}: {b}");
    }
    let (s, b) = send(
        c.post(url("/v1/messages/count_tokens"))
            .header("authorization", &auth)
            .json(&json!({
        "model": "claude-opus-4-6", "messages": [{"role": "user", "content": prompt}]})),
    )
    .await;
    assert_eq!(s, 200, "count_tokens: {b}");
    let (s, _) = send(c.get(url("/v1/models")).header("authorization", &auth)).await;
    assert_eq!(s, 200);
    let (s, _) = send(
        c.get(url("/v1/models/claude-opus-4-6"))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(s, 200);
    // Wrong keys.
    let (s, _) = send(c.post(url("/v1/messages")).header("authorization", format!("Bearer {wrong_key}")).json(&json!({
        "model": "claude-opus-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}))).await;
    assert_eq!(s, 401);
    let (s, _) = send(
        c.post(url("/v1/chat/completions"))
            .header("x-api-key", &wrong_key)
            .json(&json!({
        "model": "glm-5", "messages": [{"role": "user", "content": prompt}]})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send(c.get(url("/metrics")).header("x-admin-key", &wrong_key)).await;
    assert_eq!(s, 401);
    // Bad JSON and an unknown model, prompts inside.
    let (s, _) = send(
        c.post(url("/v1/messages"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"model\": \"claude-opus-4-6\", \"messages\": [{{\"content\": \"{marker}"
            )),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = send(
        c.post(url("/v1/chat/completions"))
            .header("authorization", &auth)
            .json(&json!({
        "model": format!("model-{marker}"), "messages": [{"role": "user", "content": prompt}]})),
    )
    .await;
    assert_eq!(s, 404);
    // Metrics with the admin key, both ways.
    let (s, m) = send(c.get(url("/metrics")).header("x-admin-key", &admin_key)).await;
    assert_eq!(s, 200);
    assert!(m.contains("droid2api_requests_total"), "{m}");
    let (s, _) = send(
        c.get(url("/metrics"))
            .header("authorization", format!("Bearer {admin_key}")),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        mock.llm_requests().len() >= 8,
        "{}",
        mock.llm_requests().len()
    );

    p.sigterm();
    let st = p.wait(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0), "{}", p.output());
    let forbidden = vec![
        factory_key.clone(),
        api_key.clone(),
        admin_key.clone(),
        wrong_key.clone(),
        marker.clone(),
    ];
    assert_clean("run 1 console output", &p.output(), &forbidden);
    assert!(p.stdout().contains(" listening"), "{}", p.output());
    let logs = files_in(&dirs.logs());
    assert!(!logs.is_empty(), "no log file in {}", dirs.logs().display());
    for (path, text) in &logs {
        assert!(!text.trim().is_empty(), "{} is empty", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("droid2api.") && name.ends_with(".log"),
            "{name}"
        );
        assert_clean(&path.display().to_string(), text, &forbidden);
    }
    assert!(
        logs.iter().any(|(_, t)| t.contains(" listening")),
        "the file log holds the start-up line"
    );

    // ---- run 2: a WorkOS refresh token, rotated ---------------------------------------------
    let mock = MockUpstream::start().await;
    let seed = format!("rt-SECRET-{}", uuid_like());
    mock.add_refresh_token(seed.clone());
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "NODE_ENV", "production");
    set(&mut env, "LOG_LEVEL", "trace");
    set(&mut env, "DROID_REFRESH_KEY", seed.clone());
    let mut p = Proc::spawn(&dirs, &env, &["serve"]);
    let port = p.port().await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let (s, b) = send(c.post(url("/v1/messages")).json(&json!({
        "model": "claude-opus-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}))).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        !mock.minted_access_tokens().is_empty(),
        "a refresh happened"
    );
    // An upstream 401 forces a second rotation.
    mock.expire_all_access_tokens();
    let (s, b) = send(c.post(url("/v1/messages")).json(&json!({
        "model": "claude-opus-4-6", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": prompt}]}))).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        mock.minted_access_tokens().len() >= 2,
        "{:?}",
        mock.minted_access_tokens()
    );
    let auth_json = dirs.data().join("auth.json");
    let mode = std::fs::metadata(&auth_json).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} mode {mode:o}", auth_json.display());

    p.sigterm();
    let st = p.wait(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0), "{}", p.output());

    let mut forbidden = vec![seed.clone(), marker.clone()];
    forbidden.extend(mock.refresh_tokens());
    forbidden.extend(mock.minted_access_tokens());
    for r in mock.requests_to("/user_management/authenticate") {
        let form: Vec<(String, String)> = url_form(&r.body_text());
        forbidden.extend(
            form.into_iter()
                .filter(|(k, _)| k == "refresh_token")
                .map(|(_, v)| v),
        );
    }
    assert!(forbidden.len() >= 5, "{forbidden:?}");
    assert_clean("run 2 console output", &p.output(), &forbidden);
    let logs = files_in(&dirs.logs());
    assert!(!logs.is_empty(), "no log file in {}", dirs.logs().display());
    for (path, text) in &logs {
        assert!(!text.trim().is_empty(), "{} is empty", path.display());
        assert_clean(&path.display().to_string(), text, &forbidden);
    }
}

/// A unique-enough suffix without extra dependencies.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:04x}", nanos, std::process::id() & 0xffff)
}

/// Minimal `application/x-www-form-urlencoded` decoding (enough for tokens).
fn url_form(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s.as_bytes()[i] == b'%'
                && let Some(b) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(s.as_bytes()[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[tokio::test]
async fn check_config_masks_secrets() {
    let dirs = Dirs::new();
    let secret = "fk-abcdefghijklmnopqrstuvwxyz";
    let mut env = base_env(&dirs, "http://127.0.0.1:9");
    set(&mut env, "FACTORY_API_KEY", secret);
    set(&mut env, "API_ACCESS_KEY", "client-key-ABCDEFGHIJKL-9876");
    set(&mut env, "DROID_REFRESH_KEY", "rt-refresh-QRSTUVWXYZ-5432");
    set(&mut env, "ADMIN_ACCESS_KEY", "adm-short");
    let (st, out, err) = run_once(&dirs, &env, &["check-config"]).await;
    assert_eq!(st.code(), Some(0), "{out}{err}");
    assert!(out.contains("fk-abc…wxyz"), "{out}");
    assert!(out.contains("client…9876"), "{out}");
    assert!(out.contains("rt-ref…5432"), "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    for text in [&out, &err] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("ghijklmnopq"), "{text}");
        assert!(!text.contains("ABCDEFGHIJKL"), "{text}");
        assert!(!text.contains("QRSTUVWXYZ"), "{text}");
        assert!(
            !text.contains("adm-short"),
            "a short secret is masked completely: {text}"
        );
    }

    // An invalid reasoning level: exit 2, one line naming the field and the value.
    dirs.write_config(&json!({"models": [
        {"id": "m0", "type": "anthropic"},
        {"id": "m1", "type": "openai"},
        {"id": "m2", "type": "common", "reasoning": "hgih"}
    ]}));
    let (st, out, err) = run_once(&dirs, &env, &["check-config"]).await;
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(
        err.contains(r#"models[2].reasoning: expected auto|off|low|medium|high, got "hgih""#),
        "{err}"
    );
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(!format!("{out}{err}").contains(secret));
    // `serve` refuses the same configuration.
    let (st, out, err) = run_once(&dirs, &env, &["serve"]).await;
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(
        err.contains(r#"models[2].reasoning: expected auto|off|low|medium|high, got "hgih""#),
        "{err}"
    );

    // An unknown field: a warning, still OK.
    dirs.write_config(
        &json!({"frobnicate_level": 3, "models": [{"id": "m0", "type": "anthropic"}]}),
    );
    let (st, out, err) = run_once(&dirs, &env, &["check-config"]).await;
    assert_eq!(st.code(), Some(0), "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.lines()
            .any(|l| l.contains("warning") && l.contains("frobnicate_level")),
        "{all}"
    );
    assert!(out.contains("configuration OK"), "{out}");
}

/// Starts `serve`, waits for it to listen, stops it and returns everything it printed.
async fn startup_output(env: &[(String, String)], dirs: &Dirs) -> String {
    let mut p = Proc::spawn(dirs, env, &["serve"]);
    let port = p.port().await;
    assert_eq!(health(port).await.unwrap(), 200);
    p.sigterm();
    let st = p.wait(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0), "{}", p.output());
    p.output()
}

#[tokio::test]
async fn startup_warnings() {
    const OPEN: &str = "anyone who can reach this port can spend your keys";
    let mock = MockUpstream::start().await;

    // Non-loopback, a server-side key, no client key; a short admin key; Redis configured.
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "HOST", "0.0.0.0");
    set(
        &mut env,
        "FACTORY_API_KEY",
        "fk-warning-test-key-0123456789",
    );
    set(&mut env, "ADMIN_ACCESS_KEY", "short-admin");
    set(
        &mut env,
        "REDIS_URL",
        "redis://:redispass-SECRET@127.0.0.1:6379/0",
    );
    let out = startup_output(&env, &dirs).await;
    assert!(out.contains(OPEN), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("ADMIN_ACCESS_KEY") && l.contains("16 characters")),
        "{out}"
    );
    // Nothing listens on 6379 here: the instance starts from its data folder and says so,
    // naming Redis by its masked URL.
    assert!(
        out.lines()
            .any(|l| l.contains("Redis did not answer at start-up")
                && l.contains("redis://***@127.0.0.1:6379/0")),
        "{out}"
    );
    assert!(
        !out.contains("redispass-SECRET"),
        "the Redis password must not be logged:\n{out}"
    );
    assert!(!out.contains("fk-warning-test-key-0123456789"), "{out}");
    assert!(!out.contains("short-admin"), "{out}");

    // Loopback with a client key, a long admin key, no Redis: none of them.
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, &mock.url());
    set(
        &mut env,
        "FACTORY_API_KEY",
        "fk-warning-test-key-0123456789",
    );
    set(&mut env, "API_ACCESS_KEY", "client-access-key-0123456789");
    set(&mut env, "ADMIN_ACCESS_KEY", "admin-access-key-0123456789");
    let out = startup_output(&env, &dirs).await;
    assert!(!out.contains(OPEN), "{out}");
    assert!(!out.contains("16 characters"), "{out}");
    assert!(!out.contains("REDIS_URL"), "{out}");

    // Non-loopback but with a client key: no open-port warning either.
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "HOST", "0.0.0.0");
    set(
        &mut env,
        "FACTORY_API_KEY",
        "fk-warning-test-key-0123456789",
    );
    set(&mut env, "API_ACCESS_KEY", "client-access-key-0123456789");
    let out = startup_output(&env, &dirs).await;
    assert!(!out.contains(OPEN), "{out}");
}

#[tokio::test]
async fn invalid_configuration_stops_startup() {
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, "http://127.0.0.1:9");
    set(&mut env, "PORT", "abc");
    set(
        &mut env,
        "FACTORY_API_KEY",
        "fk-invalid-config-key-0123456789",
    );
    let (st, out, err) = run_once(&dirs, &env, &["serve"]).await;
    assert!(!st.success(), "{out}{err}");
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(err.contains("PORT") && err.contains("\"abc\""), "{err}");
    assert!(!out.contains(" listening"), "{out}");

    // The default command is `serve`, and other bad values are named too.
    let mut env = base_env(&dirs, "http://127.0.0.1:9");
    set(&mut env, "REASONING_BUDGET_LOW", "12");
    let (st, out, err) = run_once(&dirs, &env, &[]).await;
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("REASONING_BUDGET_LOW") && err.contains("\"12\""),
        "{err}"
    );
    assert!(!out.contains(" listening"), "{out}");
}

/// Every admin change acknowledged with a 2xx survives `kill -9` right after the reply.
#[tokio::test]
async fn acknowledged_admin_changes_survive_kill_9() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let admin = "admin-key-kill9-0123456789";
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "ADMIN_ACCESS_KEY", admin);
    let mut p = Proc::spawn(&dirs, &env, &[]);
    let port = p.port().await;
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = c
            .post(format!("{base}/admin/keys"))
            .header("x-admin-key", admin)
            .json(&serde_json::json!({"key": format!("fk-kill9-key-{i:04}"), "notes": format!("n{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        ids.push(v["data"]["id"].as_str().unwrap().to_string());
    }
    let r = c
        .patch(format!("{base}/admin/keys/{}/toggle", ids[3]))
        .header("x-admin-key", admin)
        .json(&serde_json::json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{base}/admin/pool-groups"))
        .header("x-admin-key", admin)
        .json(&serde_json::json!({"id": "tier1", "name": "Tier 1", "priority": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // No grace: the process dies right after the last acknowledgement.
    p.signal("-KILL");
    p.wait(Duration::from_secs(10)).await;

    let mut p = Proc::spawn(&dirs, &env, &[]);
    let port = p.port().await;
    let base = format!("http://127.0.0.1:{port}");
    let v: Value = c
        .get(format!("{base}/admin/keys?limit=500"))
        .header("x-admin-key", admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = v["data"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 20, "{v}");
    let k3 = keys.iter().find(|k| k["id"] == ids[3].as_str()).unwrap();
    assert_eq!(k3["status"], "disabled");
    assert_eq!(k3["disabled_by"], "admin");
    let groups: Value = c
        .get(format!("{base}/admin/pool-groups"))
        .header("x-admin-key", admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        groups["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == "tier1"),
        "{groups}"
    );
    p.sigterm();
    assert!(p.wait(Duration::from_secs(10)).await.success());
}

/// Pool keys never reach the logs: not on add, traffic, failover, ban, test or export.
#[tokio::test]
async fn pool_keys_never_reach_the_logs() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let admin = "admin-key-poollogs-0123456789";
    let secrets: Vec<String> = (0..3)
        .map(|i| format!("fk-SECRET-POOL-KEY-{i}-{}", uuid_like()))
        .collect();
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "ADMIN_ACCESS_KEY", admin);
    set(&mut env, "LOG_LEVEL", "trace");
    set(&mut env, "NODE_ENV", "production");
    let mut p = Proc::spawn(&dirs, &env, &[]);
    let port = p.port().await;
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    let r = c
        .post(format!("{base}/admin/keys/batch"))
        .header("x-admin-key", admin)
        .json(&json!({"keys": secrets}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    mock.set_bearer_status(
        &secrets[0],
        402,
        json!({"type": "error", "error": {"type": "billing_error", "message": "no credits"}}),
    );
    mock.set_bearer_status(
        &secrets[1],
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
    );
    for _ in 0..4 {
        let (s, _) = send(c.post(format!("{base}/v1/messages")).json(&json!({"model": "claude-opus-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))).await;
        assert!(s == 200 || s == 429, "{s}");
    }
    let v: Value = c
        .get(format!("{base}/admin/keys"))
        .header("x-admin-key", admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in v["data"]["keys"].as_array().unwrap() {
        let id = k["id"].as_str().unwrap();
        send(
            c.post(format!("{base}/admin/keys/{id}/test"))
                .header("x-admin-key", admin),
        )
        .await;
    }
    let (s, exported) = send(
        c.get(format!("{base}/admin/keys/export?format=json"))
            .header("x-admin-key", admin),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        exported.contains(&secrets[2]),
        "export is the one place secrets are returned"
    );
    p.sigterm();
    assert!(p.wait(Duration::from_secs(15)).await.success());
    assert_clean("console output", &p.output(), &secrets);
    let logs = files_in(&dirs.logs());
    assert!(!logs.is_empty());
    for (path, text) in logs {
        assert_clean(&path.display().to_string(), &text, &secrets);
    }
}

/// Reads an SSE response until its text holds `needle` (10 s at most); the text so far.
async fn read_until(resp: &mut reqwest::Response, text: &mut String, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn the_console_log_stream_tails_the_log_with_history_and_no_secrets() {
    let factory_key = format!("fk-SECRET-TAIL-{}", uuid_like());
    let admin_key = format!("adm-SECRET-TAIL-{}", uuid_like());
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut env = base_env(&dirs, &mock.url());
    set(&mut env, "LOG_LEVEL", "trace");
    set(&mut env, "FACTORY_API_KEY", factory_key.clone());
    set(&mut env, "ADMIN_ACCESS_KEY", admin_key.clone());
    let mut p = Proc::spawn(&dirs, &env, &["serve"]);
    let port = p.port().await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let c = client();

    // Closed without the admin key or a session.
    let (s, b) = send(c.get(url("/admin/logs/stream"))).await;
    assert_eq!(s, 401, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");

    // A console session opens it; the start-up lines are already there.
    let login = c
        .post(url("/admin/session"))
        .json(&json!({"key": admin_key}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut resp = c
        .get(url("/admin/logs/stream"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    assert!(
        read_until(&mut resp, &mut text, "listening").await,
        "history: {text}"
    );
    // A request made now shows up live.
    let (s, b) = send(c.post(url("/v1/messages")).json(&json!({
        "model": "claude-opus-4-6", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]})))
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        read_until(&mut resp, &mut text, "request done").await,
        "live: {text}"
    );
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with("data: ") || line.starts_with(": ") || line.starts_with("event: "),
            "not an SSE field: {line:?}"
        );
    }
    assert!(!text.contains(&factory_key), "a Factory key in the tail");
    assert!(!text.contains(&admin_key), "the admin key in the tail");
    assert!(
        !text.contains('\u{1b}'),
        "terminal colour codes in the tail"
    );
    drop(resp);
    // Still serving.
    assert_eq!(health(port).await.unwrap(), 200);
    p.sigterm();
    assert!(p.wait(Duration::from_secs(10)).await.success());
}
