//! Starting and stopping the mock and the gateways: CPU pinning with `taskset`, fresh temporary
//! data folders, a clean environment, readiness checks, SIGTERM then SIGKILL.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot start {what} ({cmd}): {source}")]
    Spawn {
        what: String,
        cmd: String,
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {secs} s{tail}")]
    NotReady {
        what: String,
        secs: u64,
        tail: String,
    },
    #[error("{what} exited during start-up ({status}){tail}")]
    Exited {
        what: String,
        status: String,
        tail: String,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Where each process runs.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `taskset -c` list for the gateway, `None` when not pinned.
    pub gateway: Option<String>,
    /// `taskset -c` list for the mock and this generator.
    pub rig: Option<String>,
}

impl Placement {
    pub fn describe(&self, generator_threads: usize) -> String {
        match (&self.gateway, &self.rig) {
            (Some(g), Some(r)) => format!(
                "gateway pinned to CPU {g} (`taskset -c {g}`); mock and load generator ({generator_threads} thread{}) pinned to CPU {r}",
                if generator_threads == 1 { "" } else { "s" }
            ),
            _ => format!(
                "not pinned: gateway, mock and load generator ({generator_threads} thread{}) share all CPUs",
                if generator_threads == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Whether `taskset` can be run.
pub fn have_taskset() -> bool {
    std::process::Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Parses a CPU list (`0`, `0-2`, `0,3`) into CPU numbers.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b >= 1024 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => {
                let c: usize = part.parse().ok()?;
                if c >= 1024 {
                    return None;
                }
                cpus.push(c);
            }
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Whether every CPU of `cpus` is in this process's allowed set (a container or a `taskset`
/// around the bench may hide CPU 0 or 1); `false` when the set cannot be read.
pub fn cpus_allowed(cpus: &[usize]) -> bool {
    rustix::thread::sched_getaffinity(None).is_ok_and(|set| cpus.iter().all(|c| set.is_set(*c)))
}

/// Pins the calling thread (and the threads it creates afterwards) to `cpus`.
pub fn pin_self(cpus: &[usize]) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for c in cpus {
        set.set(*c);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

/// Raises this process's open-file limit to its hard limit (children inherit it): a thousand
/// streams need two thousand sockets on the gateway alone.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let Some(max) = l.maximum {
        l.current = Some(max);
    }
    let _ = setrlimit(Resource::Nofile, l);
    getrlimit(Resource::Nofile).current
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!(
            "; last log lines ({}, kept with --keep-temp):\n{tail}",
            path.display()
        )
    }
}

/// A started child process.
pub struct Proc {
    pub what: String,
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Proc {
    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            _ => None,
        }
    }
}

fn base_command(program: &str, args: &[String], pin: Option<&str>) -> (Command, String) {
    let mut argv: Vec<String> = Vec::new();
    if let Some(cpus) = pin {
        argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
    }
    argv.push(program.into());
    argv.extend(args.iter().cloned());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.kill_on_drop(true);
    (cmd, argv.join(" "))
}

/// Mock settings at start-up.
#[derive(Debug, Clone, Copy)]
pub struct MockStart {
    pub delay_ms: u64,
    pub stream_deltas: u32,
    pub stream_interval_ms: u64,
}

/// Starts `droid2api-mock` in bench mode and reads its address from its first stdout line.
pub async fn start_mock(
    binary: &Path,
    pin: Option<&str>,
    dir: &Path,
    s: MockStart,
) -> Result<Proc, ProcError> {
    let args: Vec<String> = vec![
        "--bench".into(),
        "--delay-ms".into(),
        s.delay_ms.to_string(),
        "--stream-deltas".into(),
        s.stream_deltas.to_string(),
        "--stream-interval-ms".into(),
        s.stream_interval_ms.to_string(),
    ];
    let (mut cmd, shown) = base_command(&binary.to_string_lossy(), &args, pin);
    let log = dir.join("mock.log");
    cmd.stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "error");
    let mut child = cmd.spawn().map_err(|source| ProcError::Spawn {
        what: "the mock".into(),
        cmd: shown,
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    let Some(stdout) = child.stdout.take() else {
        return Err(ProcError::NotReady {
            what: "the mock".into(),
            secs: 0,
            tail: " (no stdout)".into(),
        });
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    let url = match line {
        Ok(Ok(Some(l))) => l.strip_prefix("MOCK_LISTENING http://").map(str::to_owned),
        _ => None,
    };
    let Some(addr) = url.and_then(|u| u.trim().parse::<SocketAddr>().ok()) else {
        return Err(ProcError::NotReady {
            what: "the mock".into(),
            secs: 30,
            tail: log_tail(&log),
        });
    };
    // Keep reading its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Proc {
        what: "mock".into(),
        child,
        pid,
        addr,
        log,
    })
}

/// How to run a gateway.
#[derive(Debug, Clone)]
pub enum GatewayCmd {
    /// A binary started directly.
    Binary(PathBuf),
    /// A shell command (`sh -c 'exec …'`), for `--compare`.
    Shell(String),
}

impl GatewayCmd {
    pub fn describe(&self) -> String {
        match self {
            Self::Binary(p) => p.display().to_string(),
            Self::Shell(s) => s.clone(),
        }
    }
}

/// Starts a gateway with a fresh data folder under `dir`, the environment it needs and `env`
/// on top, and waits until it answers `/ready` (or, for gateways without it, `/v1/models`).
pub async fn start_gateway(
    cmd: &GatewayCmd,
    what: &str,
    pin: Option<&str>,
    dir: &Path,
    mock: SocketAddr,
    env: &[(String, String)],
) -> Result<Proc, ProcError> {
    let port = free_port()?;
    let data = dir.join("data");
    let home = dir.join("home");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&home)?;
    let (mut command, shown) = match cmd {
        GatewayCmd::Binary(p) => base_command(&p.to_string_lossy(), &[], pin),
        GatewayCmd::Shell(s) => base_command("sh", &["-c".into(), format!("exec {s}")], pin),
    };
    let log = dir.join("gateway.log");
    let out = std::fs::File::create(&log)?;
    let mock_url = format!("http://{mock}");
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", &data)
        .env("LOG_DIR", dir.join("logs"))
        .env("FACTORY_BASE_URL", &mock_url)
        .env("WORKOS_BASE_URL", &mock_url);
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().map_err(|source| ProcError::Spawn {
        what: what.into(),
        cmd: shown,
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    let mut p = Proc {
        what: what.into(),
        child,
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
    };
    wait_ready(&mut p, Duration::from_secs(30)).await?;
    Ok(p)
}

async fn wait_ready(p: &mut Proc, limit: Duration) -> Result<(), ProcError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = p.exited() {
            return Err(ProcError::Exited {
                what: p.what.clone(),
                status,
                tail: log_tail(&p.log),
            });
        }
        match get_status(p.addr, "/ready").await {
            Some(200) => return Ok(()),
            // A gateway without `/ready`: serving models is ready enough.
            Some(404) if get_status(p.addr, "/v1/models").await == Some(200) => return Ok(()),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(ProcError::NotReady {
                what: p.what.clone(),
                secs: limit.as_secs(),
                tail: log_tail(&p.log),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET on a fresh connection; the status, or `None` when nothing answered.
pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http(addr, hyper::Method::GET, path, &[], None)
        .await
        .map(|(s, _)| s)
}

/// One request on a fresh connection, with a 10 s limit; `(status, body)`.
pub async fn http(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    headers: &[(&'static str, String)],
    body: Option<bytes::Bytes>,
) -> Option<(u16, bytes::Bytes)> {
    use http_body_util::{BodyExt, Full};
    let work = async {
        let mut conn = crate::client::connect(addr).await.ok()?;
        let mut req = hyper::Request::new(Full::new(body.clone().unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = path.parse().ok()?;
        let h = req.headers_mut();
        h.insert(hyper::header::HOST, addr.to_string().parse().ok()?);
        if body.is_some() {
            h.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
        }
        for (k, v) in headers {
            h.insert(*k, v.parse().ok()?);
        }
        let resp = conn.send(req).await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, bytes))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list(" 3 , 4 "), Some(vec![3, 4]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn allowed_cpus_are_checked_against_the_affinity_mask() {
        let mask = rustix::thread::sched_getaffinity(None).expect("own affinity");
        let first = (0..1024)
            .find(|c| mask.is_set(*c))
            .expect("some CPU allowed");
        assert!(cpus_allowed(&[first]));
        assert!(!cpus_allowed(&[first, 1023]) || mask.is_set(1023));
    }

    #[test]
    fn placement_is_described() {
        let p = Placement {
            gateway: Some("1".into()),
            rig: Some("0".into()),
        };
        assert!(p.describe(1).contains("`taskset -c 1`"));
        let p = Placement {
            gateway: None,
            rig: None,
        };
        assert!(p.describe(2).starts_with("not pinned"));
    }
}
