//! `droid2api migrate --from NODE_DIR` as a user runs it (the real binary): a Node.js folder
//! with keys in several statuses and groups, a config.json and a factory_usage.json is imported
//! with the right counts; a gateway started on the data folder lists the keys and shows the
//! imported history through `/admin/usage` and `/factory/balance/*`; a second run imports
//! nothing; `--dry-run` writes nothing; malformed files stop it (exit 1) naming the file and the
//! field; a running gateway makes it refuse. Without factory_usage.json, request_stats.json is
//! the history imported (under the credential `node`). The Node config.json in the data folder
//! itself does not stop its own migration; another invalid config.json does (exit 2). No key is
//! ever printed.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_droid2api");
const ADMIN_KEY: &str = "admin-key-for-migrate-tests-0123456789";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");
const ZONE: &str = "Asia/Shanghai";

/// Pieces of the fixture's secrets: none may appear in any output.
const SECRET_PIECES: [&str; 3] = ["fk-fixture", "sk-fixture", "aaaaaaaaaaaa"];

/// A temporary Node.js installation (`node/data/…`, `node/config.json`) and a data folder.
struct World {
    temp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let temp = tempfile::tempdir().unwrap();
        let node_data = temp.path().join("node").join("data");
        std::fs::create_dir_all(&node_data).unwrap();
        for (name, to) in [
            ("key_pool.json", node_data.join("key_pool.json")),
            ("factory_usage.json", node_data.join("factory_usage.json")),
            ("config.json", temp.path().join("node").join("config.json")),
        ] {
            std::fs::copy(Path::new(FIXTURES).join(name), to).unwrap();
        }
        World { temp }
    }

    fn node(&self) -> PathBuf {
        self.temp.path().join("node")
    }

    fn data(&self) -> PathBuf {
        self.temp.path().join("data")
    }

    /// Runs `droid2api migrate --from node <extra…>` in a clean environment.
    fn migrate(&self, extra: &[&str]) -> Output {
        let data = self.data();
        self.migrate_in(
            self.temp.path(),
            &[("DATA_DIR", data.to_str().unwrap())],
            extra,
        )
    }

    /// Runs `droid2api migrate --from node <extra…>` in `cwd` with only `env` (and PATH, HOME,
    /// TZ) set.
    fn migrate_in(&self, cwd: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        std::process::Command::new(BIN)
            .arg("migrate")
            .arg("--from")
            .arg(self.node())
            .args(extra)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.temp.path())
            .env("TZ", ZONE)
            .envs(env.iter().copied())
            .current_dir(cwd)
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn no_secret(out: &Output) {
    let all = text(&out.stdout) + &text(&out.stderr);
    for piece in SECRET_PIECES {
        assert!(!all.contains(piece), "output shows a key ({piece}): {all}");
    }
}

fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "migrate failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    no_secret(out);
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn admin_get(g: &Gateway, path: &str) -> Value {
    let resp = client()
        .get(g.url(path))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let body: Value = resp.json().await.unwrap();
    body["data"].clone()
}

async fn start(mock: &MockUpstream, data: &Path) -> Gateway {
    gateway(mock)
        .env("ADMIN_ACCESS_KEY", ADMIN_KEY)
        .env("TZ", ZONE)
        .data_dir(data)
        .start()
        .await
}

/// Requests and total tokens of `/admin/usage` points, by time.
fn points(v: &Value) -> Vec<(String, u64, u64)> {
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["t"].as_str().unwrap().to_string(),
                p["requests"].as_u64().unwrap(),
                p["tokens"]["total_tokens"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn check_gateway(g: &Gateway) {
    // Keys: every usable one, in its status and group; masked.
    let listed = admin_get(g, "/admin/keys?limit=100").await;
    let keys = listed["keys"].as_array().unwrap();
    let by_id = |id: &str| keys.iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(keys.len(), 6, "{listed}");
    assert_eq!(by_id("key_1728700000001_a1b2c3d4e")["status"], "active");
    assert_eq!(
        by_id("key_1728700000001_a1b2c3d4e")["poolGroup"],
        "freebies"
    );
    assert_eq!(by_id("key_1728700000002_f5g6h7i8j")["status"], "disabled");
    assert_eq!(by_id("key_1728700000003_k9l0m1n2o")["status"], "banned");
    assert_eq!(by_id("key_1728700000005_u7v8w9x0y")["poolGroup"], "legacy");
    assert!(!listed.to_string().contains("fk-fixture"));
    let groups = admin_get(g, "/admin/pool-groups").await;
    let ids: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    for id in ["freebies", "main", "test", "legacy", "default"] {
        assert!(ids.contains(&id), "{ids:?}");
    }

    // Usage per key, all time (older than the daily buckets included).
    let usage = admin_get(g, "/factory/balance/usage").await;
    let row = |id: &str| {
        usage["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()
            .clone()
    };
    let first = row("key_1728700000001_a1b2c3d4e");
    assert_eq!(first["requests"], 60, "{usage}");
    assert_eq!(first["tokens"]["total_tokens"], 150_000);
    let banned = row("key_1728700000003_k9l0m1n2o");
    assert_eq!(banned["requests"], 5);
    assert_eq!(banned["tokens"]["total_tokens"], 5_000);

    // Totals include the history of a key no longer in the pool.
    let summary = admin_get(g, "/factory/balance/summary").await;
    assert_eq!(summary["requests"], 67, "{summary}");
    assert_eq!(summary["tokens"]["total_tokens"], 156_000);
    assert_eq!(summary["success_rate"], 1.0);

    // Daily points on the local days of the file (Asia/Shanghai: a day starts 16:00 UTC).
    let days = admin_get(
        g,
        "/admin/usage?granularity=day&from=2025-10-12&to=2025-10-15",
    )
    .await;
    assert_eq!(days["tz"], ZONE);
    assert_eq!(
        points(&days),
        [
            ("2025-10-11T16:00:00Z".to_string(), 22, 41_000),
            ("2025-10-12T16:00:00Z".to_string(), 20, 35_000),
            ("2025-10-13T16:00:00Z".to_string(), 10, 20_000),
        ]
    );
    let one_key = admin_get(
        g,
        "/admin/usage?granularity=day&from=2025-10-12&to=2025-10-15&key=key_1728700000001_a1b2c3d4e",
    )
    .await;
    assert_eq!(
        points(&one_key).iter().map(|p| p.2).collect::<Vec<_>>(),
        [40_000, 30_000, 20_000]
    );
    // Hourly points: 09:00 and 10:00 local on 2025-10-14.
    let hours = admin_get(
        g,
        "/admin/usage?granularity=hour&from=2025-10-14&to=2025-10-15",
    )
    .await;
    assert_eq!(
        points(&hours),
        [
            ("2025-10-14T01:00:00Z".to_string(), 6, 12_000),
            ("2025-10-14T02:00:00Z".to_string(), 4, 8_000),
        ]
    );
}

#[tokio::test]
async fn a_node_folder_is_migrated_once_and_the_gateway_shows_it() {
    let w = World::new();
    let r = report(&w.migrate(&["--json"]));
    assert_eq!(r["dry_run"], false);
    assert_eq!(
        r["keys"],
        json!({"found": 6, "imported": 6, "duplicates": 0, "invalid": 3, "renamed": 0})
    );
    assert_eq!(r["groups"], json!({"imported": 4, "existing": 0}));
    assert_eq!(r["settings"]["algorithm"], "round-robin");
    assert_eq!(r["settings"]["config_file"], "created");
    assert_eq!(r["settings"]["auth_file"], "none");
    assert_eq!(
        r["usage"],
        json!({"keys": 3, "matched_keys": 2, "days": 5, "hours": 2, "requests": 67,
               "tokens": 156000, "older_requests": 15, "older_tokens": 60000})
    );
    assert_eq!(r["nothing_new"], false);
    let warnings = r["warnings"].to_string();
    for needle in [
        "fk-z...zzzz",
        "quota-aware",
        "user_agent",
        "Please forget",
        "limits",
    ] {
        assert!(
            warnings.contains(needle),
            "no note about {needle}: {warnings}"
        );
    }

    // The data folder's config.json: what carries over, in this gateway's format.
    let config: Value =
        serde_json::from_slice(&std::fs::read(w.data().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["port"], 3000);
    assert_eq!(config["models"].as_array().unwrap().len(), 5);
    assert_eq!(config["models"][4]["reasoning"], "off");
    assert_eq!(
        config["key_pool"],
        json!({"algorithm": "least-used", "test_concurrency": 8})
    );
    for gone in [
        "endpoint",
        "user_agent",
        "system_prompt",
        "limits",
        "balance_sync",
    ] {
        assert!(config.get(gone).is_none(), "{gone} carried over: {config}");
    }

    let mock = MockUpstream::start().await;
    let g = start(&mock, &w.data()).await;
    check_gateway(&g).await;
    g.stop().await;

    // Twice: nothing new, nothing duplicated.
    let again = w.migrate(&[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    no_secret(&again);
    let out = text(&again.stdout);
    assert!(out.contains("Nothing new"), "{out}");
    let r = report(&w.migrate(&["--json"]));
    assert_eq!(r["nothing_new"], true);
    assert_eq!(r["keys"]["imported"], 0);
    assert_eq!(r["keys"]["duplicates"], 6);
    assert_eq!(r["groups"]["imported"], 0);
    assert_eq!(r["usage"]["days"], 0);
    assert_eq!(r["usage"]["requests"], 0);
    assert_eq!(r["settings"]["config_file"], "unchanged");
    let g = start(&mock, &w.data()).await;
    check_gateway(&g).await;
    g.stop().await;
}

#[tokio::test]
async fn only_what_grew_in_the_node_files_is_added() {
    let w = World::new();
    report(&w.migrate(&["--json"]));
    // The Node version kept serving: one more request on 2025-10-14, one more key.
    let path = w.node().join("data").join("factory_usage.json");
    let grown = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            r#""2025-10-14": { "tokens": 20000, "requests": 10 }"#,
            r#""2025-10-14": { "tokens": 20500, "requests": 11 }"#,
        )
        .replace(
            r#""total_tokens": 150000,
      "total_requests": 60"#,
            r#""total_tokens": 150500,
      "total_requests": 61"#,
        );
    std::fs::write(&path, grown).unwrap();
    let pool_path = w.node().join("data").join("key_pool.json");
    let mut pool: Value = serde_json::from_slice(&std::fs::read(&pool_path).unwrap()).unwrap();
    pool["keys"].as_array_mut().unwrap().push(json!({
        "id": "key_1728800000000_newnewnew", "key": "fk-fixture-later-0010-jjjjjjjjjjjjjjjjjjjj",
        "poolGroup": "main", "status": "active", "created_at": "2025-10-15T00:00:00.000Z",
        "usage_count": 0, "error_count": 0, "last_test_result": "untested"
    }));
    std::fs::write(&pool_path, serde_json::to_vec(&pool).unwrap()).unwrap();

    let r = report(&w.migrate(&["--json"]));
    assert_eq!(r["keys"]["imported"], 1);
    assert_eq!(r["keys"]["duplicates"], 6);
    assert_eq!(r["usage"]["days"], 1);
    assert_eq!(r["usage"]["requests"], 1);
    assert_eq!(r["usage"]["tokens"], 500);

    let mock = MockUpstream::start().await;
    let g = start(&mock, &w.data()).await;
    let summary = admin_get(&g, "/factory/balance/summary").await;
    assert_eq!(summary["requests"], 68);
    assert_eq!(summary["tokens"]["total_tokens"], 156_500);
    let listed = admin_get(&g, "/admin/keys?limit=100").await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 7);
    g.stop().await;
}

#[tokio::test]
async fn dry_run_changes_nothing_and_reports_what_would() {
    let w = World::new();
    let out = w.migrate(&["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    no_secret(&out);
    assert!(
        text(&out.stdout).contains("Dry run"),
        "{}",
        text(&out.stdout)
    );
    assert!(!w.data().exists(), "a dry run created the data folder");
    let r = report(&w.migrate(&["--dry-run", "--json"]));
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["keys"]["imported"], 6);
    assert_eq!(r["usage"]["requests"], 67);
    assert!(!w.data().exists());

    // On a migrated folder a dry run finds nothing new and leaves the database as it was.
    report(&w.migrate(&["--json"]));
    let db = w.data().join("droid2api.db");
    let before = std::fs::read(&db).unwrap();
    let r = report(&w.migrate(&["--dry-run", "--json"]));
    assert_eq!(r["nothing_new"], true);
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

/// Runs a migration that must fail with exit 1 naming `needles`, changing nothing.
fn refused(w: &World, needles: &[&str]) {
    let out = w.migrate(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    no_secret(&out);
    let err = text(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(
        !w.data().join("droid2api.db").exists(),
        "a refused migration wrote the database"
    );
}

#[test]
fn malformed_files_stop_it_naming_the_file_and_the_field() {
    let w = World::new();
    let usage = w.node().join("data").join("factory_usage.json");
    let good = std::fs::read_to_string(&usage).unwrap();
    std::fs::write(
        &usage,
        good.replace(
            r#""2025-10-13": { "tokens": 30000, "requests": 15 }"#,
            r#""2025-10-13": { "tokens": "lots", "requests": 15 }"#,
        ),
    )
    .unwrap();
    refused(
        &w,
        &[
            "factory_usage.json",
            r#"usage["fk-f...aaaa"].daily["2025-10-13"].tokens"#,
        ],
    );
    std::fs::write(&usage, good).unwrap();

    let config = w.node().join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace(r#""port": 3000"#, r#""port": "3000x""#),
    )
    .unwrap();
    refused(&w, &["config.json", "port"]);
    std::fs::write(&config, good).unwrap();

    let pool = w.node().join("data").join("key_pool.json");
    std::fs::write(&pool, "{\"keys\": [").unwrap();
    refused(&w, &["key_pool.json", "not valid JSON"]);
    std::fs::write(&pool, "{\"keys\": 5}").unwrap();
    refused(&w, &["key_pool.json", "\"keys\" array"]);
}

#[test]
fn a_folder_that_is_not_a_node_installation_is_refused() {
    let w = World::new();
    let empty = w.temp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["migrate", "--from"])
        .arg(&empty)
        .arg("--data-dir")
        .arg(w.data())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(w.temp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no data/key_pool.json"));
}

#[tokio::test]
async fn a_running_gateway_makes_it_refuse() {
    let w = World::new();
    std::fs::create_dir_all(w.data()).unwrap();
    let mock = MockUpstream::start().await;
    let g = start(&mock, &w.data()).await;
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = w.migrate(extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = text(&out.stderr);
        assert!(err.contains("in use by a running droid2api"), "{err}");
        assert!(err.contains("stop the gateway"), "{err}");
    }
    let listed = admin_get(&g, "/admin/keys").await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 0);
    g.stop().await;
}

#[tokio::test]
async fn the_data_folder_of_the_node_version_itself_is_migrated_in_place() {
    // DATA_DIR = NODE_DIR/data: key_pool.json is set aside as on a first start, the Node
    // config.json there is converted (the original kept beside it).
    let w = World::new();
    let node_data = w.node().join("data");
    std::fs::rename(w.node().join("config.json"), node_data.join("config.json")).unwrap();
    let r = report(&w.migrate(&["--json", "--data-dir", node_data.to_str().unwrap()]));
    assert_eq!(r["keys"]["imported"], 6);
    assert_eq!(r["settings"]["config_file"], "converted");
    assert!(!node_data.join("key_pool.json").exists());
    let set_aside = node_data.join("key_pool.json.imported");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&set_aside).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(node_data.join("config.json.node").exists());
    // Again: the set-aside file is read, nothing is new.
    let r = report(&w.migrate(&["--json", "--data-dir", node_data.to_str().unwrap()]));
    assert_eq!(r["nothing_new"], true, "{r}");
    assert_eq!(r["keys"]["duplicates"], 6);

    // The gateway starts on it without importing anything twice.
    let mock = MockUpstream::start().await;
    let g = start(&mock, &node_data).await;
    let listed = admin_get(&g, "/admin/keys?limit=100").await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 6);
    g.stop().await;
}

/// The Node `config.json` moved into the Node `data/` folder, with a model's reasoning set to
/// the Node-only `"xhigh"` (which this gateway's settings refuse).
fn node_config_in_data_with_xhigh(w: &World) -> PathBuf {
    let node_data = w.node().join("data");
    let config = node_data.join("config.json");
    std::fs::rename(w.node().join("config.json"), &config).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        r#""reasoning": "auto""#,
        r#""reasoning": "xhigh""#,
        1,
    );
    assert!(text.contains("xhigh"));
    std::fs::write(&config, text).unwrap();
    node_data
}

#[test]
fn the_node_config_json_in_the_data_folder_does_not_stop_its_own_migration() {
    // Run from the Node folder: ./data is the Node data folder, whose config.json says
    // "xhigh", which does not load as this gateway's configuration.
    let w = World::new();
    let node_data = node_config_in_data_with_xhigh(&w);
    let original = std::fs::read(node_data.join("config.json")).unwrap();

    // An invalid environment still stops it (exit 2) before anything is written.
    let out = w.migrate_in(&w.node(), &[("PORT", "not-a-port")], &["--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("PORT"), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(node_data.join("config.json")).unwrap(),
        original
    );
    assert!(!node_data.join("droid2api.db").exists());
    assert!(node_data.join("key_pool.json").exists());

    let r = report(&w.migrate_in(&w.node(), &[], &["--json"]));
    assert_eq!(r["settings"]["config_file"], "converted", "{r}");
    assert_eq!(r["keys"]["imported"], 6);
    assert!(r["warnings"].to_string().contains("xhigh"), "{r}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(node_data.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["models"][0]["reasoning"], "high", "{config}");
    assert_eq!(
        std::fs::read(node_data.join("config.json.node")).unwrap(),
        original
    );

    // DATA_DIR naming the Node data folder: the same (now nothing is new).
    let r = report(&w.migrate_in(
        w.temp.path(),
        &[("DATA_DIR", node_data.to_str().unwrap())],
        &["--json"],
    ));
    assert_eq!(r["nothing_new"], true, "{r}");
}

#[test]
fn an_invalid_gateway_config_json_that_is_not_the_node_file_stops_it() {
    let w = World::new();
    std::fs::create_dir_all(w.data()).unwrap();
    let bad = br#"{"port": "not-a-port", "models": []}"#;
    std::fs::write(w.data().join("config.json"), bad).unwrap();
    let out = w.migrate(&["--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("port"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(w.data().join("config.json")).unwrap(), bad);
    assert!(!w.data().join("droid2api.db").exists());
    assert!(!w.data().join("config.json.node").exists());
}

const STATS_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/node-stats/request_stats.json"
);

/// The Node folder with `data/request_stats.json`, with or without `data/factory_usage.json`.
fn world_with_request_stats(keep_factory_usage: bool) -> World {
    let w = World::new();
    let data = w.node().join("data");
    std::fs::copy(STATS_FIXTURE, data.join("request_stats.json")).unwrap();
    if !keep_factory_usage {
        std::fs::remove_file(data.join("factory_usage.json")).unwrap();
    }
    w
}

#[tokio::test]
async fn request_stats_json_is_the_history_when_factory_usage_json_is_absent() {
    let w = world_with_request_stats(false);
    let r = report(&w.migrate(&["--json"]));
    assert!(r["files"]["usage"].is_null(), "{r}");
    assert!(
        r["files"]["request_stats"]
            .as_str()
            .unwrap()
            .ends_with("data/request_stats.json")
    );
    // Days: 37,000 (cache included) + 20,000 + 10,000 tokens; older than them: 100,000 tokens
    // in the total minus the days' 60,000 (the file's tokens leave cache out), 80 - 40 requests.
    assert_eq!(
        r["usage"],
        json!({"keys": 0, "matched_keys": 0, "days": 3, "hours": 0, "requests": 80,
               "tokens": 107000, "older_requests": 40, "older_tokens": 40000})
    );
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("by_model (2 models) is not carried over"),
        "{warnings}"
    );
    assert!(!warnings.contains("matches no key"), "{warnings}");

    let mock = MockUpstream::start().await;
    let g = start(&mock, &w.data()).await;
    // Local days (Asia/Shanghai), all under the credential "node"; no hours.
    let expected = [
        ("2025-10-11T16:00:00Z".to_string(), 20, 37_000),
        ("2025-10-12T16:00:00Z".to_string(), 15, 20_000),
        ("2025-10-13T16:00:00Z".to_string(), 5, 10_000),
    ];
    let days = admin_get(
        &g,
        "/admin/usage?granularity=day&from=2025-10-12&to=2025-10-15",
    )
    .await;
    assert_eq!(points(&days), expected);
    let node = admin_get(
        &g,
        "/admin/usage?granularity=day&from=2025-10-12&to=2025-10-15&key=node",
    )
    .await;
    assert_eq!(points(&node), expected);
    let first = &days["points"][0]["tokens"];
    assert_eq!(first["input_tokens"], 20_000, "{first}");
    assert_eq!(first["output_tokens"], 10_000, "{first}");
    assert_eq!(first["cache_write_tokens"], 2_000, "{first}");
    assert_eq!(first["reasoning_tokens"], 1_000, "{first}");
    assert_eq!(first["cache_read_tokens"], 5_000, "{first}");
    let hours = admin_get(
        &g,
        "/admin/usage?granularity=hour&from=2025-10-12&to=2025-10-15",
    )
    .await;
    assert_eq!(points(&hours), []);
    let summary = admin_get(&g, "/factory/balance/summary").await;
    assert_eq!(summary["requests"], 80, "{summary}");
    assert_eq!(summary["tokens"]["total_tokens"], 107_000);
    assert_eq!(summary["success_rate"], 78.0 / 80.0);
    assert_eq!(summary["by_model"], json!([]));
    g.stop().await;

    // Again: nothing new.
    let again = w.migrate(&[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let out = text(&again.stdout);
    assert!(out.contains("Nothing new"), "{out}");
    assert!(out.contains("data/request_stats.json"), "{out}");
    let r = report(&w.migrate(&["--json"]));
    assert_eq!(r["nothing_new"], true);
    assert_eq!(r["usage"]["days"], 0);
    assert_eq!(r["usage"]["requests"], 0);
}

#[test]
fn a_malformed_request_stats_json_stops_it_naming_the_field() {
    let w = world_with_request_stats(false);
    let path = w.node().join("data").join("request_stats.json");
    let good = std::fs::read_to_string(&path).unwrap();
    let bad = good.replacen(r#""requests": 5 }"#, r#""requests": "five" }"#, 1);
    assert_ne!(bad, good);
    std::fs::write(&path, bad).unwrap();
    refused(
        &w,
        &["request_stats.json", r#"daily["2025-10-14"].requests"#],
    );
    std::fs::write(
        &path,
        good.replace(r#""by_model": {"#, r#""by_model": 7, "x": {"#),
    )
    .unwrap();
    refused(&w, &["request_stats.json", "by_model: expected an object"]);
}

#[test]
fn with_both_files_factory_usage_json_is_imported_and_request_stats_json_noted() {
    let w = world_with_request_stats(true);
    let r = report(&w.migrate(&["--json"]));
    assert!(r["files"]["request_stats"].is_null(), "{r}");
    assert!(r["files"]["usage"].is_string());
    // The counts of factory_usage.json alone.
    assert_eq!(r["usage"]["keys"], 3);
    assert_eq!(r["usage"]["requests"], 67);
    assert_eq!(r["usage"]["tokens"], 156_000);
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("data/request_stats.json: not imported"),
        "{warnings}"
    );
    assert!(warnings.contains("no key dimension"), "{warnings}");
    assert!(warnings.contains("twice"), "{warnings}");
}
