//! `droid2api keys …`: the key pool of a running gateway, through its admin API. Each
//! subcommand is one admin route (or a loop over one); `--json` prints the API's `data` as is,
//! the default is a table.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{self, Admin, CliError, encode, query};
use super::output::{Table, cell, fields, print, print_json, progress, truncate};
use super::{EXIT_FAILURE, EXIT_OK, complain, import};
use crate::config::Env;

pub const AFTER_HELP: &str = "\
The gateway: --url, else the local one's address from PORT, HOST, .env and data/config.json.
The admin key: ADMIN_ACCESS_KEY (environment, or .env in the working directory), or the file
given with --admin-key-file. Neither the admin key nor a key to add is ever an argument: keys
to add are read from stdin (add) or a file (import).

Exit codes: 0 success; 1 the gateway is unreachable or the admin API answered an error (its
message on stderr), or some of several keys failed; 2 usage or configuration error (bad
arguments, no admin key, an unreadable input file).

Examples:
  droid2api keys list --status banned
  droid2api keys add --notes \"team A\" < new-keys.txt
  droid2api keys import key_pool.json --pool main
  droid2api keys export --format csv --output keys.csv
  droid2api keys test-all --json";

/// The exit codes, under each subcommand's help.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 the gateway is unreachable or the admin API answered an error (its message on stderr), or some of several keys failed; 2 usage or configuration error.";

/// How long one admin call may take (a key test alone may take 30 s upstream).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `test-all` reads its job's progress.
const POLL_EVERY: Duration = Duration::from_millis(250);

const STATUSES: [&str; 5] = ["all", "active", "disabled", "banned", "cooling"];

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    action: KeysAction,
}

/// Where the gateway is, the admin key, and the output form (valid before or after the
/// subcommand).
#[derive(Debug, Args)]
struct Connection {
    /// The gateway's base URL [default: the local gateway's address from PORT, HOST, .env and
    /// data/config.json]
    #[arg(long, value_name = "URL", global = true)]
    url: Option<String>,
    /// Read the admin key from this file (one line) instead of ADMIN_ACCESS_KEY.
    #[arg(long, value_name = "PATH", global = true)]
    admin_key_file: Option<PathBuf>,
    /// Print the admin API's `data` as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Refused: an argument shows in `ps` and the shell's history (the value is never echoed).
    #[arg(long, global = true, hide = true, value_name = "KEY")]
    admin_key: Option<String>,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// List keys, one page at a time (GET /admin/keys).
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Add keys read from stdin, one per line (POST /admin/keys for each).
    #[command(after_help = EXIT_CODES)]
    Add(AddArgs),
    /// Import a file of keys: one per line, a JSON export, or the Node version's key_pool.json
    /// (POST /admin/keys/batch).
    #[command(after_help = EXIT_CODES)]
    Import(import::ImportArgs),
    /// Print the whole keys as a file: txt, json or csv (GET /admin/keys/export).
    #[command(after_help = EXIT_CODES)]
    Export(ExportArgs),
    /// Delete keys by id (DELETE /admin/keys/:id).
    #[command(after_help = EXIT_CODES)]
    Delete(DeleteArgs),
    /// Test one key with a minimal upstream request (POST /admin/keys/:id/test).
    #[command(after_help = EXIT_CODES)]
    Test(TestArgs),
    /// Test every key, or a pool's, showing the progress until done (POST /admin/keys/test-all).
    #[command(after_help = EXIT_CODES)]
    TestAll(TestAllArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only keys with this status ("cooling": active with a cooldown running).
    #[arg(long, value_parser = STATUSES)]
    status: Option<String>,
    /// Only keys of this pool group (its id).
    #[arg(long, value_name = "GROUP")]
    pool: Option<String>,
    /// Only keys whose id or notes contain this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    q: Option<String>,
    /// The page to show (from 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    page: Option<u64>,
    /// Keys per page (1 to 500) [default: 20]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=500))]
    limit: Option<u64>,
    /// The order of the listing [default: created]
    #[arg(long, value_parser = ["created", "last_used", "requests", "success_rate", "tokens", "balance"])]
    sort: Option<String>,
    /// Ascending or descending [default: asc for created, desc otherwise]
    #[arg(long, value_parser = ["asc", "desc"])]
    order: Option<String>,
}

#[derive(Debug, Args)]
struct AddArgs {
    /// Refused: keys are read from stdin (an argument shows in `ps` and the shell's history).
    #[arg(hide = true, value_name = "KEY")]
    refused: Vec<String>,
    /// Notes for every key added.
    #[arg(long)]
    notes: Option<String>,
    /// The pool group the keys join (its id) [default: default]
    #[arg(long, value_name = "GROUP")]
    pool: Option<String>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Only keys with this status.
    #[arg(long, value_parser = STATUSES)]
    status: Option<String>,
    /// Only keys of this pool group (its id).
    #[arg(long, value_name = "GROUP")]
    pool: Option<String>,
    /// The file format [default: txt, or json with --json]
    #[arg(long, value_parser = ["txt", "json", "csv"])]
    format: Option<String>,
    /// Write to this file (created with mode 0600) instead of stdout.
    #[arg(long, short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The ids of the keys to delete (`key_…`, as `keys list` shows them).
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The id of the key to test.
    #[arg(value_name = "ID")]
    id: String,
}

#[derive(Debug, Args)]
struct TestAllArgs {
    /// Only the keys of this pool group (its id).
    #[arg(long, value_name = "GROUP")]
    pool: Option<String>,
}

pub async fn run(env: &Env, args: KeysArgs) -> i32 {
    match dispatch(env, args).await {
        Ok(code) => code,
        Err(e) => {
            complain(&e);
            e.code()
        }
    }
}

async fn dispatch(env: &Env, args: KeysArgs) -> Result<i32, CliError> {
    let KeysArgs { conn, action } = args;
    if conn.admin_key.is_some() {
        return Err(CliError::Usage(
            "the admin key is never an argument (it would show in ps and the shell's history): set ADMIN_ACCESS_KEY or pass --admin-key-file PATH".into(),
        ));
    }
    if let KeysAction::Add(a) = &action
        && !a.refused.is_empty()
    {
        return Err(CliError::Usage(
            "keys to add are read from stdin, one per line, never from arguments (they would show in ps and the shell's history): droid2api keys add < keys.txt".into(),
        ));
    }
    let key = client::admin_key(env, conn.admin_key_file.as_deref())?;
    let base = client::base_url(env, conn.url.as_deref())?;
    let admin = Admin::new(base, key, CALL_TIMEOUT)?;
    let json = conn.json;
    match action {
        KeysAction::List(a) => list(&admin, json, a).await,
        KeysAction::Add(a) => add(&admin, json, a).await,
        KeysAction::Import(a) => import::run(&admin, json, a).await,
        KeysAction::Export(a) => export(&admin, json, a).await,
        KeysAction::Delete(a) => delete(&admin, json, a).await,
        KeysAction::Test(a) => test(&admin, json, a).await,
        KeysAction::TestAll(a) => test_all(&admin, json, a).await,
    }
}

/// Key records (contract §7) as a table.
pub(super) fn records(keys: &[Value]) -> String {
    let mut t = Table::new(&[
        "ID",
        "KEY",
        "STATUS",
        "POOL",
        "REQUESTS",
        "FAILURES",
        "LAST TEST",
        "LAST USED",
        "NOTES",
    ]);
    for k in keys {
        let mut status = cell(k.get("status"));
        if k.get("cooldown_until").is_some_and(|c| !c.is_null()) {
            status.push_str(" (cooling)");
        }
        t.row(vec![
            cell(k.get("id")),
            cell(k.get("key_masked")),
            status,
            cell(k.get("poolGroup")),
            cell(k.get("requests")),
            cell(k.get("failures")),
            cell(k.get("last_test").and_then(|t| t.get("result"))),
            cell(k.get("last_used_at")),
            truncate(&cell(k.get("notes")), 40),
        ]);
    }
    if t.is_empty() {
        "no keys\n".into()
    } else {
        t.render()
    }
}

async fn list(admin: &Admin, json: bool, a: ListArgs) -> Result<i32, CliError> {
    let path = format!(
        "/admin/keys{}",
        query(&[
            ("status", a.status),
            ("pool", a.pool),
            ("q", a.q),
            ("page", a.page.map(|p| p.to_string())),
            ("limit", a.limit.map(|l| l.to_string())),
            ("sort", a.sort),
            ("order", a.order),
        ])
    );
    let data = admin.call(Method::GET, &path, None).await?;
    if json {
        print_json(&data);
        return Ok(EXIT_OK);
    }
    let keys = data["keys"].as_array().cloned().unwrap_or_default();
    let p = &data["pagination"];
    print(&format!(
        "{}page {} of {}, {} keys in all\n",
        records(&keys),
        cell(p.get("page")),
        p["total_pages"].as_u64().unwrap_or(0).max(1),
        cell(p.get("total")),
    ));
    Ok(EXIT_OK)
}

/// Reads all of stdin (keys to add, a file to import).
pub(super) fn read_stdin(what: &str) -> Result<String, CliError> {
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        complain(format!(
            "reading {what} from the terminal, one per line; end with Ctrl-D"
        ));
    }
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
    Ok(text)
}

async fn add(admin: &Admin, json: bool, a: AddArgs) -> Result<i32, CliError> {
    let text = read_stdin("keys")?;
    let keys: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if keys.is_empty() {
        return Err(CliError::Usage(
            "no key on stdin: give one key per line, e.g. droid2api keys add < keys.txt".into(),
        ));
    }
    let several = keys.len() > 1;
    let mut added = Vec::new();
    let mut failed = 0;
    for (line, key) in keys {
        let mut body = json!({"key": key});
        if let Some(n) = &a.notes {
            body["notes"] = json!(n);
        }
        if let Some(p) = &a.pool {
            body["poolGroup"] = json!(p);
        }
        match admin.call(Method::POST, "/admin/keys", Some(&body)).await {
            Ok(data) => added.push(data),
            // One key refused (duplicate, invalid): say which line, go on with the others.
            Err(CliError::Api(m)) => {
                failed += 1;
                if several {
                    complain(format!("line {line}: {m}"));
                } else {
                    complain(m);
                }
            }
            Err(e) => return Err(e),
        }
    }
    if json {
        print_json(&Value::Array(added));
    } else if !added.is_empty() {
        print(&records(&added));
    }
    Ok(if failed > 0 { EXIT_FAILURE } else { EXIT_OK })
}

async fn export(admin: &Admin, json: bool, a: ExportArgs) -> Result<i32, CliError> {
    let format = a
        .format
        .or_else(|| json.then(|| "json".to_string()))
        .unwrap_or_else(|| "txt".to_string());
    let path = format!(
        "/admin/keys/export{}",
        query(&[
            ("status", a.status),
            ("pool", a.pool),
            ("format", Some(format)),
        ])
    );
    let text = admin.file(&path).await?;
    match a.output {
        None => print(&text),
        Some(path) => {
            write_private(&path, text.as_bytes())
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
            complain(format!("keys written to {}", path.display()));
        }
    }
    Ok(EXIT_OK)
}

/// Writes a file only its owner can read (it holds whole keys).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

async fn delete(admin: &Admin, json: bool, a: DeleteArgs) -> Result<i32, CliError> {
    let mut deleted = Vec::new();
    let mut failed = 0;
    for id in &a.ids {
        let path = format!("/admin/keys/{}", encode(id));
        match admin.call(Method::DELETE, &path, None).await {
            Ok(data) => deleted.push(data),
            Err(CliError::Api(m)) => {
                failed += 1;
                complain(format!("{id}: {m}"));
            }
            Err(e) => return Err(e),
        }
    }
    if json {
        print_json(&Value::Array(deleted));
    } else if !deleted.is_empty() {
        print(&format!("deleted:\n{}", records(&deleted)));
    }
    Ok(if failed > 0 { EXIT_FAILURE } else { EXIT_OK })
}

async fn test(admin: &Admin, json: bool, a: TestArgs) -> Result<i32, CliError> {
    let path = format!("/admin/keys/{}/test", encode(&a.id));
    let data = admin.call(Method::POST, &path, None).await?;
    if json {
        print_json(&data);
    } else {
        print(&fields(&[
            ("key", a.id.clone()),
            ("result", cell(data.get("result"))),
            ("upstream status", cell(data.get("status"))),
            ("message", cell(data.get("message"))),
        ]));
    }
    Ok(EXIT_OK)
}

async fn test_all(admin: &Admin, json: bool, a: TestAllArgs) -> Result<i32, CliError> {
    let path = format!("/admin/keys/test-all{}", query(&[("pool", a.pool)]));
    let started = admin.call(Method::POST, &path, None).await?;
    let Some(job_id) = started["job_id"].as_str().map(str::to_string) else {
        return Err(CliError::Api(format!(
            "the gateway started no job: {started}"
        )));
    };
    let job_path = format!("/admin/jobs/{}", encode(&job_id));
    let bar = progress(0, "testing keys", true);
    let job = loop {
        let job = admin.call(Method::GET, &job_path, None).await?;
        bar.set_length(job["total"].as_u64().unwrap_or(0));
        bar.set_position(job["done"].as_u64().unwrap_or(0));
        if matches!(job["state"].as_str(), Some("done" | "failed")) {
            break job;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    bar.finish_and_clear();
    if json {
        print_json(&job);
    } else {
        let count = |name: &str| cell(job.get(name));
        print(&fields(&[
            ("job", job_id.clone()),
            ("state", count("state")),
            ("total", count("total")),
            ("done", count("done")),
            ("success", count("success")),
            ("banned", count("banned")),
            ("disabled", count("disabled")),
            ("inconclusive", count("inconclusive")),
        ]));
    }
    if job["state"] == "failed" {
        complain(format!(
            "job {job_id} stopped before the end (the gateway is shutting down)"
        ));
        return Ok(EXIT_FAILURE);
    }
    Ok(EXIT_OK)
}
