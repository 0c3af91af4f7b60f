//! Multi-instance harness (issue 11, contract §12): real `redis-server` processes on free
//! loopback ports and real `droid2api` processes sharing them, pointed at the in-repo mock.
//!
//! - [`RedisServer`]: `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no
//!   [--requirepass PW]`, killed on drop; a tiny RESP client over a raw TCP stream
//!   ([`RedisServer::cmd`]); kill -9, SIGSTOP/SIGCONT and an empty restart on the same port.
//! - [`Instance`]: the `droid2api` binary with a clean environment (like `tests/process.rs`),
//!   its own data folder that survives restarts, captured output, and HTTP helpers for the
//!   admin API, one chat request, `/ready` and `/metrics`.
//! - [`eventually`] and [`time_until`]: bounded polling.
//!
//! Both process types print their captured output when dropped during a panic, so a failed
//! test shows every instance's log.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use droid2api_mock::MockUpstream;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The admin key every [`Instance`] gets.
pub const ADMIN_KEY: &str = "admin-key-for-cluster-tests-0123456789";
/// The model of [`Instance::chat`] (a built-in `common` model: one upstream call, no translation).
pub const CHAT_MODEL: &str = "glm-5";

const BIN: &str = env!("CARGO_BIN_EXE_droid2api");
/// Bound of one RESP exchange (connect, AUTH/SELECT, command, reply).
const RESP_TIMEOUT: Duration = Duration::from_secs(2);

// ----- small process helpers ------------------------------------------------------------------

type Captured = Arc<Mutex<String>>;

fn capture(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    into: Captured,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut s = into.lock().expect("capture lock");
            s.push_str(&line);
            s.push('\n');
        }
    })
}

/// Sends a signal (`-KILL`, `-TERM`, `-STOP`, `-CONT`) with the system `kill`.
fn signal(pid: u32, sig: &str) {
    let pid = pid.to_string();
    let st = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {sig} {pid}");
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The last `max_lines` lines of a text (diagnostics stay readable).
fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(max_lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[… {skip} earlier lines …]\n"));
    }
    for l in &lines[skip..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

// ----- redis-server ----------------------------------------------------------------------------

/// Panics with a helpful message when `redis-server` is not installed.
pub fn redis_server_path() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "redis-server is not on PATH: the multi-instance tests (tests/cluster.rs) spawn a \
                 real one; scripts/test installs it (apt-get install redis-server)"
            )
        })
}

/// A `redis-server` on a free loopback port, without persistence, killed on drop.
pub struct RedisServer {
    port: u16,
    /// Persistence on (append-only file, fsync always): a restart keeps the data.
    aof: bool,
    password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
    output: Captured,
}

impl RedisServer {
    /// A server without a password.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// A server with `--requirepass password`.
    pub async fn start_with_password(password: &str) -> Self {
        Self::start_inner(Some(password.to_string())).await
    }

    /// A server with an append-only file (fsync always): `restart_keeping_data` keeps it all.
    pub async fn start_with_aof() -> Self {
        Self::start_inner_aof(None, true).await
    }

    async fn start_inner(password: Option<String>) -> Self {
        Self::start_inner_aof(password, false).await
    }

    async fn start_inner_aof(password: Option<String>, aof: bool) -> Self {
        redis_server_path();
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = RedisServer {
            aof,
            port: 0,
            password,
            dir,
            child: None,
            output: Captured::default(),
        };
        // The free port may be taken between the probe and the spawn: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn(Duration::from_secs(5)).await {
                return server;
            }
        }
        panic!(
            "redis-server did not start on a free port:\n{}",
            server.output()
        );
    }

    /// Spawns on `self.port`; true once it answers PING, false when it exits first or the
    /// wait runs out (then it is killed).
    async fn spawn(&mut self, wait: Duration) -> bool {
        let mut cmd = tokio::process::Command::new(redis_server_path());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.aof {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        let mut child = cmd.spawn().expect("spawn redis-server");
        capture(child.stdout.take().expect("stdout"), self.output.clone());
        capture(child.stderr.take().expect("stderr"), self.output.clone());
        self.child = Some(child);
        let deadline = Instant::now() + wait;
        loop {
            if !self.is_running() {
                return false;
            }
            if matches!(self.try_cmd(&["PING"]).await, Ok(ref r) if r == "PONG") {
                return true;
            }
            if Instant::now() >= deadline {
                self.kill9().await;
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `redis://:PW@127.0.0.1:P/db` (without `:PW@` when there is no password).
    pub fn url(&self, db: u32) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// The same server with another password in the URL (for the wrong-password case).
    pub fn url_with_password(&self, password: &str, db: u32) -> String {
        format!("redis://:{password}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Whether the process is alive (a stopped process counts as running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// kill -9, and wait (bounded) until it is gone.
    pub async fn kill9(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Some(pid) = self.pid() {
            signal(pid, "-KILL");
        }
        if let Some(c) = self.child.as_mut() {
            let waited = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
            assert!(waited.is_ok(), "redis-server survived kill -9");
        }
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn stop(&self) {
        signal(self.pid().expect("redis-server is running"), "-STOP");
    }

    /// SIGCONT after [`RedisServer::stop`].
    pub fn cont(&self) {
        signal(self.pid().expect("redis-server is running"), "-CONT");
    }

    /// kill -9, then a fresh, empty server on the same port with the same password.
    pub async fn restart_empty(&mut self) {
        assert!(
            !self.aof,
            "a server with an append-only file restarts with its data"
        );
        self.respawn("===== restarted empty =====\n").await;
    }

    /// kill -9, then the same server again: it reloads its append-only file.
    pub async fn restart_keeping_data(&mut self) {
        assert!(self.aof, "start_with_aof keeps data across restarts");
        self.respawn("===== restarted with its data =====\n").await;
    }

    async fn respawn(&mut self, label: &str) {
        self.kill9().await;
        self.output.lock().expect("redis output").push_str(label);
        // The port is normally free at once (redis sets SO_REUSEADDR); retry briefly if not.
        for _ in 0..10 {
            if self.spawn(Duration::from_secs(3)).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "redis-server did not restart on port {}:\n{}",
            self.port,
            self.output()
        );
    }

    /// Everything the server printed.
    pub fn output(&self) -> String {
        self.output.lock().expect("redis output").clone()
    }

    /// One command (AUTH first when a password is set); the reply as text: simple strings and
    /// integers as they are, bulk strings' content, `(nil)`, arrays one element a line.
    /// A Redis error reply, a refused connection or a 2 s timeout is an `Err`.
    pub async fn try_cmd(&self, args: &[&str]) -> Result<String, String> {
        self.try_cmd_in(None, args).await
    }

    /// [`RedisServer::try_cmd`] in database `db` (SELECT first).
    pub async fn try_cmd_in(&self, db: Option<u32>, args: &[&str]) -> Result<String, String> {
        resp_call(self.port, self.password.as_deref(), db, args).await
    }

    /// [`RedisServer::try_cmd`] that panics on any error.
    pub async fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .await
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// [`RedisServer::cmd`] in database `db`.
    pub async fn cmd_in(&self, db: u32, args: &[&str]) -> String {
        self.try_cmd_in(Some(db), args)
            .await
            .unwrap_or_else(|e| panic!("redis (db {db}) {args:?}: {e}"))
    }

    /// `DBSIZE` of database `db` as a number.
    pub async fn dbsize(&self, db: u32) -> u64 {
        let r = self.cmd_in(db, &["DBSIZE"]).await;
        r.parse()
            .unwrap_or_else(|e| panic!("DBSIZE reply {r:?}: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== redis-server on port {} =====\n{}",
                self.port,
                tail(&self.output(), 60)
            );
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
fn resp_encode(args: &[&str], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Reads one RESP2 reply (recursively for arrays).
fn read_reply(r: &mut BufReader<TcpStream>) -> ReplyFuture<'_> {
    Box::pin(async move {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by redis".into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let Some(tag) = line.chars().next() else {
            return Err("empty reply line".into());
        };
        let rest = &line[1..];
        let int = |s: &str| -> Result<i64, String> {
            s.parse::<i64>()
                .map_err(|e| format!("bad length {s:?}: {e}"))
        };
        match tag {
            '+' | ':' => Ok(rest.to_string()),
            '-' => Err(format!("redis error: {rest}")),
            '$' => {
                let len = int(rest)?;
                if len < 0 {
                    return Ok("(nil)".into());
                }
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0) + 2];
                r.read_exact(&mut buf)
                    .await
                    .map_err(|e| format!("read bulk: {e}"))?;
                buf.truncate(buf.len() - 2);
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
            '*' => {
                let len = int(rest)?;
                if len < 0 {
                    return Ok("(nil)".into());
                }
                let mut items = Vec::new();
                for _ in 0..len {
                    // An error inside an array (EXEC) stays text.
                    items.push(read_reply(r).await.unwrap_or_else(|e| e));
                }
                Ok(items.join("\n"))
            }
            _ => Err(format!("unexpected reply line {line:?}")),
        }
    })
}

/// One connection: AUTH (when a password is given), SELECT (when a db is given), the command.
async fn resp_call(
    port: u16,
    password: Option<&str>,
    db: Option<u32>,
    args: &[&str],
) -> Result<String, String> {
    let exchange = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        let mut r = BufReader::new(stream);
        let mut req = Vec::new();
        let mut preludes = 0;
        if let Some(pw) = password {
            resp_encode(&["AUTH", pw], &mut req);
            preludes += 1;
        }
        let db_text = db.map(|d| d.to_string());
        if let Some(d) = &db_text {
            resp_encode(&["SELECT", d], &mut req);
            preludes += 1;
        }
        resp_encode(args, &mut req);
        r.get_mut()
            .write_all(&req)
            .await
            .map_err(|e| format!("write: {e}"))?;
        for _ in 0..preludes {
            read_reply(&mut r).await?;
        }
        read_reply(&mut r).await
    };
    match tokio::time::timeout(RESP_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from redis on port {port} within {RESP_TIMEOUT:?}"
        )),
    }
}

// ----- droid2api instances ---------------------------------------------------------------------

/// How to start an [`Instance`].
pub struct InstanceBuilder {
    name: String,
    env: Vec<(String, String)>,
    config: Option<Value>,
}

impl InstanceBuilder {
    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        set_env(&mut self.env, k, v.into());
        self
    }

    /// `REDIS_URL`.
    pub fn redis_url(self, url: impl Into<String>) -> Self {
        self.env("REDIS_URL", url)
    }

    /// `REDIS_URL` = the server's URL with database 0.
    pub fn redis(self, redis: &RedisServer) -> Self {
        self.redis_url(redis.url(0))
    }

    /// `data/config.json`.
    pub fn config(mut self, config: Value) -> Self {
        self.config = Some(config);
        self
    }

    /// Spawns the process and waits for its `listening addr=` line.
    pub async fn start(self) -> Instance {
        let root = tempfile::tempdir().expect("temp dir for an instance");
        for d in ["home", "data", "logs"] {
            std::fs::create_dir_all(root.path().join(d)).expect("instance folders");
        }
        if let Some(c) = &self.config {
            std::fs::write(
                root.path().join("data/config.json"),
                serde_json::to_vec_pretty(c).expect("config JSON"),
            )
            .expect("write config.json");
        }
        let mut env = self.env;
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        for (k, v) in [
            ("PATH", path),
            ("HOME", root.path().join("home").display().to_string()),
            ("DATA_DIR", root.path().join("data").display().to_string()),
            ("LOG_DIR", root.path().join("logs").display().to_string()),
        ] {
            set_env(&mut env, k, v);
        }
        let mut inst = Instance {
            name: self.name,
            env,
            root,
            child: None,
            port: 0,
            stdout: Captured::default(),
            stderr: Captured::default(),
            history: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .no_proxy()
                .build()
                .expect("HTTP client"),
        };
        inst.spawn().await;
        inst
    }
}

fn set_env(env: &mut Vec<(String, String)>, k: &str, v: String) {
    env.retain(|(key, _)| key != k);
    env.push((k.to_string(), v));
}

/// A `droid2api serve` process with its own data folder (kept across restarts).
pub struct Instance {
    pub name: String,
    env: Vec<(String, String)>,
    root: tempfile::TempDir,
    child: Option<tokio::process::Child>,
    port: u16,
    stdout: Captured,
    stderr: Captured,
    /// Output of earlier runs (before restarts).
    history: String,
    http: reqwest::Client,
}

impl Instance {
    /// Loopback, port 0, Factory and WorkOS at the mock, the admin key, LOG_LEVEL=info; nothing
    /// inherited but PATH.
    pub fn builder(name: &str, mock: &MockUpstream) -> InstanceBuilder {
        let env = [
            ("HOST", "127.0.0.1".to_string()),
            ("PORT", "0".into()),
            ("FACTORY_BASE_URL", mock.url()),
            ("WORKOS_BASE_URL", mock.url()),
            ("ADMIN_ACCESS_KEY", ADMIN_KEY.into()),
            ("LOG_LEVEL", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        InstanceBuilder {
            name: name.to_string(),
            env,
            config: None,
        }
    }

    /// An instance sharing `redis` (database 0), or alone when `None`.
    pub async fn start(name: &str, mock: &MockUpstream, redis: Option<&RedisServer>) -> Instance {
        let b = Self::builder(name, mock);
        match redis {
            Some(r) => b.redis(r).start().await,
            None => b.start().await,
        }
    }

    async fn spawn(&mut self) {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.root.path())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn droid2api");
        self.stdout = Captured::default();
        self.stderr = Captured::default();
        capture(child.stdout.take().expect("stdout"), self.stdout.clone());
        capture(child.stderr.take().expect("stderr"), self.stderr.clone());
        self.child = Some(child);
        self.port = self.wait_for_port().await;
    }

    /// Waits for the `listening addr=…` line and returns its port.
    async fn wait_for_port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.stdout();
            if let Some(line) = out
                .lines()
                .find(|l| l.contains(" listening") && l.contains("addr="))
            {
                let addr = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .unwrap_or_default();
                return addr
                    .rsplit(':')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or_else(|e| panic!("port in {line:?}: {e}"));
            }
            if !self.is_running() {
                panic!(
                    "instance {} exited before listening:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "instance {} did not start listening within 15 s:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.path().join("logs")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Changes the environment of the next [`Instance::restart`].
    pub fn set_env(&mut self, k: &str, v: impl Into<String>) {
        set_env(&mut self.env, k, v.into());
    }

    pub fn remove_env(&mut self, k: &str) {
        self.env.retain(|(key, _)| key != k);
    }

    /// kill -9, and wait (bounded) until it is gone.
    pub async fn kill9(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Some(pid) = self.pid() {
            signal(pid, "-KILL");
        }
        if let Some(c) = self.child.as_mut() {
            let waited = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
            assert!(waited.is_ok(), "instance {} survived kill -9", self.name);
        }
    }

    /// SIGTERM, then wait (bounded: 15 s) for the exit.
    pub async fn sigterm_and_wait(&mut self) -> ExitStatus {
        let pid = self.pid().expect("instance is running");
        signal(pid, "-TERM");
        let child = self.child.as_mut().expect("instance child");
        match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
            Ok(st) => st.expect("wait for droid2api"),
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "instance {} did not exit within 15 s of SIGTERM:\n{}",
                    self.name,
                    self.output()
                );
            }
        }
    }

    /// Starts again with the same data folder and environment (kills a running process first).
    /// The port changes.
    pub async fn restart(&mut self) {
        self.kill9().await;
        // Let the output readers drain what the old process wrote.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.history.push_str(&format!(
            "--- stdout ---\n{}--- stderr ---\n{}===== restarted =====\n",
            self.stdout(),
            self.stderr()
        ));
        self.spawn().await;
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Everything printed, earlier runs included.
    pub fn output(&self) -> String {
        format!(
            "{}--- stdout ---\n{}--- stderr ---\n{}",
            self.history,
            self.stdout(),
            self.stderr()
        )
    }

    /// Every file in the log folder with its text (files only exist with NODE_ENV=production).
    pub fn log_files(&self) -> Vec<(PathBuf, String)> {
        files_in(&self.logs_dir())
    }

    /// Output and log files together (for secret scans).
    pub fn all_text(&self) -> String {
        let mut s = self.output();
        for (p, t) in self.log_files() {
            s.push_str(&format!("===== {} =====\n{t}", p.display()));
        }
        s
    }

    /// A short report for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "===== instance {} (port {}) =====\n{}",
            self.name,
            self.port,
            tail(&self.output(), 80)
        )
    }

    // ----- HTTP --------------------------------------------------------------------------

    /// A request without panicking on transport errors.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        admin: bool,
    ) -> Result<(u16, Value), reqwest::Error> {
        let method: reqwest::Method = method.parse().expect("HTTP method");
        let mut req = self.http.request(method, self.url(path));
        if admin {
            req = req.header("x-admin-key", ADMIN_KEY);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, parse_body(&bytes)))
    }

    /// An admin request (`x-admin-key`); the answer as JSON (a non-JSON body as a string).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_request(method, path, body.as_ref(), true)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}\n{}", self.name, self.dump()))
    }

    /// An admin request that must succeed (2xx, `success: true`): its `data`.
    pub async fn admin_ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.admin(method, path, body).await;
        assert!(
            (200..300).contains(&s) && v["success"] == true,
            "{method} {path} on {}: {s} {v}",
            self.name
        );
        v["data"].clone()
    }

    /// Adds a key (`POST /admin/keys`) and returns its id.
    pub async fn add_key(&self, key: &str) -> String {
        let d = self
            .admin_ok("POST", "/admin/keys", Some(json!({"key": key})))
            .await;
        d["id"].as_str().expect("key id").to_string()
    }

    /// Every key record (`GET /admin/keys?limit=500`).
    pub async fn keys(&self) -> Vec<Value> {
        let d = self.admin_ok("GET", "/admin/keys?limit=500", None).await;
        d["keys"].as_array().cloned().unwrap_or_default()
    }

    /// The ids of every key.
    pub async fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .keys()
            .await
            .iter()
            .filter_map(|k| k["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    /// `GET /admin/keys/:id` → (status, record or error envelope).
    pub async fn key(&self, id: &str) -> (u16, Value) {
        let (s, v) = self.admin("GET", &format!("/admin/keys/{id}"), None).await;
        if s == 200 {
            (s, v["data"].clone())
        } else {
            (s, v)
        }
    }

    /// A key's `status` (`None` when unknown to this instance).
    pub async fn key_status(&self, id: &str) -> Option<String> {
        let (s, v) = self.key(id).await;
        (s == 200).then(|| v["status"].as_str().unwrap_or_default().to_string())
    }

    /// `PATCH /admin/keys/:id/toggle` → status.
    pub async fn toggle(&self, id: &str, status: &str) -> u16 {
        self.admin(
            "PATCH",
            &format!("/admin/keys/{id}/toggle"),
            Some(json!({"status": status})),
        )
        .await
        .0
    }

    /// One `POST /v1/chat/completions` (model [`CHAT_MODEL`]) through the mock.
    pub async fn chat(&self) -> (u16, Value) {
        chat_at(&self.http, &self.base_url()).await
    }

    /// `GET /ready`.
    pub async fn ready(&self) -> (u16, Value) {
        self.try_request("GET", "/ready", None, false)
            .await
            .unwrap_or_else(|e| panic!("GET /ready on {}: {e}\n{}", self.name, self.dump()))
    }

    /// `GET /metrics` (with the admin key) as text.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .header("x-admin-key", ADMIN_KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics on {}: {e}", self.name));
        assert_eq!(resp.status().as_u16(), 200, "GET /metrics on {}", self.name);
        resp.text().await.expect("metrics text")
    }

    /// One metric from `/metrics`: the sum over its label sets; `None` when absent.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        parse_metric(&self.metrics_text().await, name)
    }

    /// Sum of `requests` over the points of `GET /admin/usage` (default window).
    pub async fn usage_requests(&self) -> u64 {
        let d = self.admin_ok("GET", "/admin/usage", None).await;
        d["points"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["requests"].as_u64()).sum())
            .unwrap_or(0)
    }

    /// An HTTP client and base URL for use in spawned tasks.
    pub fn handle(&self) -> (reqwest::Client, String) {
        (self.http.clone(), self.base_url())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}

/// One `POST /v1/chat/completions` at `base`; a transport error is status 0.
pub async fn chat_at(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let body = json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hello"}]});
    match http
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
    {
        Ok(resp) => {
            let s = resp.status().as_u16();
            let b = resp.bytes().await.unwrap_or_default();
            (s, parse_body(&b))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn parse_body(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
}

/// The value of `name` in Prometheus text: the sum over its label sets; `None` when absent.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest
            .rsplit_once('}')
            .map_or(rest, |(_, v)| v)
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Every file under `dir` (recursively) with its text.
pub fn files_in(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_in(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out.sort();
    out
}

/// The bearer credentials of the mock's LLM calls, from the `from`-th call on.
pub fn llm_bearers(mock: &MockUpstream, from: usize) -> Vec<String> {
    mock.llm_requests()
        .iter()
        .skip(from)
        .map(|r| r.bearer().unwrap_or_default().to_string())
        .collect()
}

// ----- waiting ---------------------------------------------------------------------------------

/// Polls `cond` every 25 ms until it holds (true) or `timeout` passes (false).
pub async fn eventually(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How long `cond` took to hold, polling every 5 ms; `None` after `timeout`.
pub async fn time_until(
    timeout: Duration,
    mut cond: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `p`-th percentile (0–100, nearest rank) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// min / p50 / p90 / p99 / max of samples, in milliseconds.
pub fn distribution(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    format!(
        "n={} min={} p50={} p90={} p99={} max={} (ms)",
        s.len(),
        ms(s.first().copied().unwrap_or_default()),
        ms(percentile(&s, 50.0)),
        ms(percentile(&s, 90.0)),
        ms(percentile(&s, 99.0)),
        ms(s.last().copied().unwrap_or_default()),
    )
}
