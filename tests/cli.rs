//! The command line as a user runs it: the real `droid2api` binary (`--version`, `--help`,
//! `health`, `keys …`) against a gateway on a loopback port with the mock upstream, in table and
//! `--json` form, with exit codes, and never a secret in its output.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_droid2api");
const ADMIN_KEY: &str = "cli-admin-key-for-tests-0123456789";
const K1: &str = "fk-cli-test-key-000001";
const K2: &str = "fk-cli-test-key-000002";
const K3: &str = "fk-cli-test-key-000003";
const K4: &str = "fk-cli-test-key-000004";
const K5: &str = "fk-cli-test-key-000005";
const SECRETS: [&str; 6] = [ADMIN_KEY, K1, K2, K3, K4, K5];

/// What one run printed and how it ended.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:?}");
        &self.stdout
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    fn failed(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.contains(needle), "{needle:?} not in {self:?}");
    }

    /// Neither the admin key nor a pool key appears whole.
    #[track_caller]
    fn no_secrets(&self) -> &Self {
        for s in SECRETS {
            assert!(
                !self.stdout.contains(s) && !self.stderr.contains(s),
                "{s} in {self:?}"
            );
        }
        self
    }
}

/// The CLI's world: a working folder (for `.env`), an empty data folder, a clean environment
/// (nothing inherited but PATH).
struct Cli {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let env = vec![
            ("PATH".to_string(), path),
            ("HOME".into(), dir.path().join("home").display().to_string()),
            (
                "DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
        ];
        Cli { dir, env }
    }

    /// The local gateway at `port`, with the admin key, as the gateway's own settings say it.
    fn for_gateway(gw: &Gateway) -> Cli {
        Cli::new()
            .env("HOST", "0.0.0.0")
            .env("PORT", gw.addr.port().to_string())
            .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
    }

    fn env(mut self, k: &str, v: impl Into<String>) -> Cli {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    fn without(mut self, k: &str) -> Cli {
        self.env.retain(|(key, _)| key != k);
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with_stdin(args, None).await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        for a in args {
            for s in SECRETS {
                assert!(!a.contains(s), "a secret in the arguments: {a}");
            }
        }
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn droid2api");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("droid2api {args:?} did not finish within 60 s"))
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

async fn start(mock: &MockUpstream) -> Gateway {
    gateway(mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .start()
        .await
}

/// `data` of an admin call made directly (to compare with the CLI's `--json`).
async fn api(gw: &Gateway, path: &str) -> Value {
    let r = client()
        .get(gw.url(path))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["data"].clone()
}

/// The ids of the table's rows (first column, header skipped).
fn table_ids(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("key_"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

// ----- version and help ---------------------------------------------------------------------

#[tokio::test]
async fn version_and_help() {
    let cli = Cli::new();
    let out = cli.run(&["--version"]).await;
    assert_eq!(
        out.ok(),
        format!("droid2api {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = cli.run(&["--help"]).await;
    for needle in ["serve", "check-config", "health", "keys", "Exit codes"] {
        assert!(help.ok().contains(needle), "{needle}: {help:?}");
    }
    let keys = cli.run(&["keys", "--help"]).await;
    for needle in [
        "list",
        "add",
        "import",
        "export",
        "delete",
        "test",
        "test-all",
        "--url",
        "--admin-key-file",
        "--json",
        "ADMIN_ACCESS_KEY",
        "Exit codes",
    ] {
        assert!(keys.ok().contains(needle), "{needle}: {keys:?}");
    }
    assert!(!keys.stdout.contains("--admin-key "), "{keys:?}");
    for sub in ["serve", "check-config", "health"] {
        let out = cli.run(&[sub, "--help"]).await;
        assert!(out.ok().contains("Exit codes"), "{sub}: {out:?}");
    }
    assert!(cli.run(&["health", "--help"]).await.ok().contains("--url"));
    for sub in [
        "list", "add", "import", "export", "delete", "test", "test-all",
    ] {
        let out = cli.run(&["keys", sub, "--help"]).await;
        assert!(out.ok().contains("Usage"), "{sub}: {out:?}");
        assert!(out.stdout.contains("Exit codes"), "{sub}: {out:?}");
    }
    // Usage errors: exit 2.
    assert_eq!(cli.run(&["nope"]).await.code, 2);
    assert_eq!(cli.run(&["keys"]).await.code, 2);
    assert_eq!(cli.run(&["keys", "list", "--limit", "501"]).await.code, 2);
    assert_eq!(cli.run(&["keys", "delete"]).await.code, 2);
    assert_eq!(cli.run(&["health", "--timeout", "0"]).await.code, 2);
}

// ----- health -------------------------------------------------------------------------------

#[tokio::test]
async fn health_of_a_running_and_a_stopped_gateway() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let port = gw.addr.port().to_string();

    // HOST 0.0.0.0 (every address) is reached on the loopback.
    let cli = Cli::new().env("HOST", "0.0.0.0").env("PORT", &port);
    let out = cli.run(&["health"]).await;
    assert!(out.ok().contains("healthy"), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("http://127.0.0.1:{port}/health"))
    );
    // The address from .env, as the gateway reads it.
    let dotenv = Cli::new();
    dotenv.write(".env", &format!("HOST=127.0.0.1\nPORT={port}\n"));
    dotenv.run(&["health"]).await.ok();
    // The port from data/config.json.
    let config = Cli::new();
    config.write(
        "data/config.json",
        &json!({"port": gw.addr.port()}).to_string(),
    );
    config.run(&["health"]).await.ok();
    // --url.
    let url = format!("http://127.0.0.1:{port}/");
    Cli::new().run(&["health", "--url", &url]).await.ok();
    // A configuration error: exit 1 all the same (Docker reserves a health check's exit 2).
    Cli::new()
        .env("PORT", "not-a-port")
        .run(&["health"])
        .await
        .failed(1, "PORT");
    Cli::new()
        .env("PORT", "0")
        .run(&["health"])
        .await
        .failed(1, "--url");

    gw.stop().await;
    let started = Instant::now();
    let out = cli.run(&["health"]).await;
    out.failed(1, "cannot reach the gateway");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ----- keys ---------------------------------------------------------------------------------

#[tokio::test]
async fn keys_from_the_command_line() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let cli = Cli::for_gateway(&gw);

    // add: one key per line from stdin, notes and pool for every key.
    let out = cli
        .run_with_stdin(
            &["keys", "add", "--notes", "团队 A", "--pool", "default"],
            Some(&format!("{K1}\n\n  {K2}  \n")),
        )
        .await;
    let table = out.no_secrets().ok().to_string();
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("fk-cli…0001") && table.contains("fk-cli…0002"),
        "{table}"
    );
    assert!(table.contains("团队 A"), "{table}");
    assert_eq!(table_ids(&table).len(), 2);
    let added = cli
        .run_with_stdin(&["keys", "add", "--json"], Some(&format!("{K3}\n")))
        .await;
    let added = added.no_secrets().json();
    assert_eq!(added.as_array().unwrap().len(), 1);
    let id3 = added[0]["id"].as_str().unwrap().to_string();
    assert_eq!(added[0]["key_masked"], "fk-cli…0003");
    assert_eq!(added[0], api(&gw, &format!("/admin/keys/{id3}")).await);
    // A duplicate: the API's message, exit 1; the other line is still added.
    let out = cli
        .run_with_stdin(&["keys", "add"], Some(&format!("{K1}\n{K4}\n")))
        .await;
    out.no_secrets().failed(1, "line 1:");
    assert!(out.stderr.contains("409 conflict"), "{out:?}");
    assert_eq!(table_ids(&out.stdout).len(), 1, "{out:?}");
    // No key on stdin, or a key as an argument: usage errors.
    cli.run_with_stdin(&["keys", "add"], Some("\n \n"))
        .await
        .failed(2, "no key on stdin");
    let out = cli.run(&["keys", "add", "fk-an-argument-key-1234"]).await;
    out.failed(2, "stdin");
    assert!(!out.stderr.contains("fk-an-argument-key-1234"), "{out:?}");

    // list: a table, or the API's data as is.
    let out = cli.run(&["keys", "list"]).await;
    let table = out.no_secrets().ok();
    assert_eq!(table_ids(table).len(), 4, "{table}");
    assert!(table.ends_with("page 1 of 1, 4 keys in all\n"), "{table}");
    let listed = cli
        .run(&["keys", "list", "--json", "--limit", "2", "--page", "2"])
        .await;
    assert_eq!(
        listed.no_secrets().json(),
        api(&gw, "/admin/keys?limit=2&page=2").await
    );
    let out = cli.run(&["keys", "list", "--q", "团队", "--json"]).await;
    assert_eq!(out.json()["pagination"]["total"], 2);
    assert_eq!(
        cli.run(&["keys", "list", "--status", "banned"]).await.ok(),
        "no keys\npage 1 of 1, 0 keys in all\n"
    );

    // import: a text file in batches (line numbers are the file's), then a Node key_pool.json.
    let file = cli.write("keys.txt", &format!("{K1}\n\nnot a key\n{K5}\n"));
    let out = cli
        .run(&[
            "keys",
            "import",
            file.to_str().unwrap(),
            "--batch-size",
            "1",
        ])
        .await;
    assert_eq!(
        out.no_secrets().ok(),
        "added      1\nduplicate  1\ninvalid    1\nline 1: duplicate: already in the pool\nline 3: not a valid key: expected 8 to 512 printable ASCII characters without spaces\n"
    );
    let node = cli.write(
        "key_pool.json",
        &json!({
            "keys": [
                {"id": "key_1", "key": K5, "status": "active", "poolGroup": "default"},
                {"id": "key_2", "status": "active"},
            ],
            "stats": {"total": 2},
            "poolGroups": [],
            "config": {"algorithm": "round-robin"},
        })
        .to_string(),
    );
    let out = cli
        .run(&["keys", "import", node.to_str().unwrap(), "--json"])
        .await;
    let v = out.no_secrets().json();
    assert_eq!(
        (&v["added"], &v["duplicate"], &v["invalid"]),
        (&json!(0), &json!(1), &json!(1)),
        "{v}"
    );
    assert_eq!(v["errors"][0]["line"], 1);
    assert_eq!(v["errors"][1]["line"], 2);
    cli.run(&["keys", "import", "missing.txt"])
        .await
        .failed(2, "missing.txt");

    // export: the whole keys, to stdout or to a private file.
    let out = cli.run(&["keys", "export"]).await;
    let mut lines: Vec<&str> = out.ok().lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, [K1, K2, K3, K4, K5]);
    let out = cli.run(&["keys", "export", "--json"]).await;
    assert_eq!(out.json().as_array().unwrap().len(), 5);
    assert_eq!(out.json()[0]["key"], K1);
    let target = cli.path("export.csv");
    let out = cli
        .run(&[
            "keys",
            "export",
            "--format",
            "csv",
            "-o",
            target.to_str().unwrap(),
        ])
        .await;
    out.no_secrets().ok();
    let csv = std::fs::read_to_string(&target).unwrap();
    assert!(
        csv.starts_with("id,key,status,poolGroup,notes\r\n"),
        "{csv}"
    );
    assert!(csv.contains(K4), "{csv}");
    #[cfg(unix)]
    assert_eq!(mode(&target), 0o600);

    // test one key, then all of them (a banned one among them).
    mock.set_bearer_status(
        K2,
        402,
        json!({"type": "error", "error": {"type": "error", "message": "no credits"}}),
    );
    let out = cli.run(&["keys", "test", &id3]).await;
    let t = out.no_secrets().ok();
    assert!(t.contains("result           success"), "{t}");
    assert!(t.contains("upstream status  200"), "{t}");
    let out = cli.run(&["keys", "test", &id3, "--json"]).await;
    assert_eq!(
        out.json(),
        json!({"ok": true, "status": 200, "result": "success", "message": "the key works: Factory answered 200", "success": true, "key_status": "active"})
    );
    let out = cli.run(&["keys", "test-all"]).await;
    let t = out.no_secrets().ok();
    for needle in [
        "state         done",
        "total         5",
        "success       4",
        "banned        1",
    ] {
        assert!(t.contains(needle), "{needle}: {t}");
    }
    let out = cli
        .run(&["keys", "test-all", "--json", "--pool", "default"])
        .await;
    assert_eq!(
        out.no_secrets().json(),
        json!({"state": "done", "total": 5, "done": 5, "success": 4, "banned": 1, "disabled": 0, "inconclusive": 0})
    );
    let out = cli
        .run(&["keys", "list", "--status", "banned", "--json"])
        .await;
    assert_eq!(out.json()["pagination"]["total"], 1);
    cli.run(&["keys", "test-all", "--pool", "nope"])
        .await
        .failed(1, "404 not_found");
    cli.run(&["keys", "test", "key_nope"])
        .await
        .failed(1, "key key_nope not found (404 not_found)");

    // delete: several ids; an unknown one is named, exit 1.
    let out = cli.run(&["keys", "delete", &id3, "--json"]).await;
    let v = out.no_secrets().json();
    assert_eq!(v[0]["id"], id3);
    let out = cli.run(&["keys", "delete", &id3]).await;
    out.failed(1, &format!("{id3}: key {id3} not found (404 not_found)"));
    let out = cli.run(&["keys", "list", "--json"]).await;
    assert_eq!(out.json()["pagination"]["total"], 4);
    let ids = table_ids(cli.run(&["keys", "list"]).await.ok());
    let out = cli.run(&["keys", "delete", &ids[0], &ids[1]]).await;
    assert!(
        out.no_secrets().ok().starts_with("deleted:\nID "),
        "{out:?}"
    );
    assert_eq!(table_ids(&out.stdout).len(), 2);
    assert_eq!(api(&gw, "/admin/stats").await["total"], 2);
}

#[tokio::test]
async fn the_admin_key_and_the_gateway_address() {
    let mock = MockUpstream::start().await;
    let gw = start(&mock).await;
    let port = gw.addr.port().to_string();

    // No admin key: exit 2 with a message, before any call.
    let out = Cli::for_gateway(&gw)
        .without("ADMIN_ACCESS_KEY")
        .run(&["keys", "list"])
        .await;
    out.failed(2, "no admin key");
    assert!(out.stderr.contains("ADMIN_ACCESS_KEY"), "{out:?}");
    // A wrong one: the API's message, exit 1.
    let out = Cli::for_gateway(&gw)
        .env("ADMIN_ACCESS_KEY", "a-wrong-admin-key-0123456789")
        .run(&["keys", "list"])
        .await;
    out.failed(1, "missing or wrong admin key");
    assert!(out.stderr.contains("401 unauthorized"), "{out:?}");
    assert!(!out.stderr.contains("a-wrong-admin-key"), "{out:?}");
    // As an argument: refused, never echoed.
    let out = Cli::for_gateway(&gw)
        .run(&["keys", "list", "--admin-key", "an-admin-key-in-argv-0123"])
        .await;
    out.failed(2, "never an argument");
    assert!(!out.stderr.contains("an-admin-key-in-argv"), "{out:?}");
    // From .env, as the gateway reads it.
    let dotenv = Cli::new().env("PORT", &port);
    dotenv.write(
        ".env",
        &format!("ADMIN_ACCESS_KEY={ADMIN_KEY}\nHOST=127.0.0.1\n"),
    );
    assert_eq!(
        dotenv.run(&["keys", "list"]).await.no_secrets().ok(),
        "no keys\npage 1 of 1, 0 keys in all\n"
    );
    // From a file (which wins over the environment), with --url.
    let cli = Cli::new().env("ADMIN_ACCESS_KEY", "a-wrong-admin-key-0123456789");
    let key_file = cli.write("admin.key", &format!("{ADMIN_KEY}\n"));
    let url = format!("http://127.0.0.1:{port}");
    let out = cli
        .run(&[
            "keys",
            "--admin-key-file",
            key_file.to_str().unwrap(),
            "list",
            "--url",
            &url,
            "--json",
        ])
        .await;
    assert_eq!(out.no_secrets().json()["pagination"]["total"], 0);
    cli.run(&[
        "keys",
        "list",
        "--admin-key-file",
        "missing.key",
        "--url",
        &url,
    ])
    .await
    .failed(2, "missing.key");
    // A bad URL: usage; an invalid configuration without --url: exit 2.
    Cli::for_gateway(&gw)
        .run(&["keys", "list", "--url", "localhost:3000"])
        .await
        .failed(2, "--url");
    Cli::for_gateway(&gw)
        .env("PORT", "x")
        .run(&["keys", "list"])
        .await
        .failed(2, "PORT");
    // Something that is not the gateway answers: exit 1.
    Cli::for_gateway(&gw)
        .run(&["keys", "list", "--url", &mock.url()])
        .await
        .failed(1, "admin API");

    // The gateway stopped: a clear message, exit 1.
    gw.stop().await;
    let out = Cli::new()
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .run(&["keys", "list", "--url", &url])
        .await;
    out.no_secrets().failed(1, "cannot reach the gateway at");
    assert!(out.stderr.contains("is it running?"), "{out:?}");
}
