//! `droid2api migrate --from NODE_DIR`: a Node.js installation's key pool, settings and usage
//! history into a data folder (README "Coming from the Node version").
//!
//! - `data/key_pool.json` → keys (ids, statuses, groups, notes, counters, last tests) and the
//!   selection algorithm, read as the first-start import reads it ([`super::import`]); a key the
//!   data folder already holds (same secret) is a duplicate ([`keys`]).
//! - `data/config.json` (or `config.json`) → the data folder's `config.json`, where the formats
//!   agree ([`config`]).
//! - `data/factory_usage.json` → the usage rollups ([`usage`]); without it,
//!   `data/request_stats.json` (no key, no hours) → the usage rollups ([`stats`]).
//! - `data/auth.json` → copied when the data folder has none (same format).
//!
//! Everything is read and checked first: a malformed file stops the migration (exit 1, naming
//! the file and the field) before anything is written. The database changes in one
//! transaction. Running it again imports only what is new. The data folder's lock is taken
//! (a running gateway makes it refuse), and `--dry-run` writes nothing at all.

mod config;
mod keys;
mod report;
mod sources;
mod stats;
mod usage;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use report::Report;

use super::import::parse_node_pool;
use super::sqlite::offline::OfflineDb;
use super::sqlite::{NODE_IMPORT_DONE, NODE_POOL_FILE, NODE_POOL_IMPORTED};
use super::{DataDirLock, LOCK_FILE, StoreError, write_private_atomic};
use crate::config::{ConfigError, Env, Settings, parse_value};
use crate::credentials::authfile;
use crate::store::records::Millis;

/// `droid2api migrate` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The Node.js droid2api folder (the one holding data/key_pool.json, config.json or
    /// data/config.json, data/factory_usage.json).
    #[arg(long, value_name = "NODE_DIR")]
    pub from: PathBuf,
    /// The data folder to migrate into [default: DATA_DIR, else ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Why a migration stopped (nothing was written unless said otherwise).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    NotNode(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error(
        "data folder {dir} is in use by a running droid2api (lock {lock} is held): stop the gateway, then run the migration again"
    )]
    Locked { dir: String, lock: String },
    #[error("the migrated config.json would not be valid, nothing was changed:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    #[error("{0}")]
    Store(StoreError),
}

impl From<StoreError> for MigrateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Locked { dir, lock } => MigrateError::Locked { dir, lock },
            other => MigrateError::Store(other),
        }
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> MigrateError {
    MigrateError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, MigrateError> {
    fs::read(path).map_err(|e| file_err(path, e.to_string()))
}

fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// The settings `migrate` runs under: the gateway's ([`Settings::load`]), or, when those do not
/// load because the data folder's own `config.json` is the Node file this migration converts
/// (the in-place case: DATA_DIR is the Node `data/` folder), the environment's alone — the
/// converted file is validated before it is written ([`plan_config`]). Anything else that does
/// not load (the environment, a config.json that is not the Node file) is returned as the error.
pub fn load_settings(args: &MigrateArgs, env: &Env) -> Result<Settings, ConfigError> {
    let err = match Settings::load(env) {
        Ok(settings) => return Ok(settings),
        Err(e @ ConfigError::Read { .. }) => return Err(e),
        Err(e) => e,
    };
    let own = PathBuf::from(env.get("DATA_DIR").unwrap_or("./data")).join("config.json");
    let node_config = sources::locate(&args.from).ok().and_then(|f| f.config);
    match node_config {
        Some(node) if same_file(&node, &own) => Settings::from_sources(env, None),
        _ => Err(err),
    }
}

/// Runs the command; returns the exit code (0 done, 1 refused or failed).
pub fn run_cli(args: &MigrateArgs, settings: &Settings) -> i32 {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| settings.data_dir.clone());
    let result = migrate(&args.from, &data_dir, args.dry_run, &Env::from_process());
    let mut out = std::io::stdout().lock();
    match result {
        Ok(report) => {
            let text = if args.json {
                report.to_json()
            } else {
                report.to_text()
            };
            let _ = out.write_all(text.as_bytes());
            0
        }
        Err(e) => {
            if args.json {
                let body = serde_json::json!({"error": e.to_string()});
                let _ = writeln!(out, "{body:#}");
            }
            let _ = writeln!(std::io::stderr(), "droid2api migrate: {e}");
            1
        }
    }
}

/// With `--dry-run`: refuses like a real run while a gateway holds the folder, without creating
/// the lock file or the folder.
fn probe_lock(dir: &Path) -> Result<(), MigrateError> {
    let path = dir.join(LOCK_FILE);
    let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
        return Ok(());
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(MigrateError::Locked {
            dir: dir.display().to_string(),
            lock: path.display().to_string(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(file_err(&path, e.to_string())),
    }
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// What will become of the data folder's config.json.
struct ConfigPlan {
    /// The new content, when it changes.
    write: Option<Vec<u8>>,
    /// The data folder's file is the Node file itself: keep the original beside it.
    backup: Option<(PathBuf, Vec<u8>)>,
    outcome: &'static str,
    added: Vec<String>,
    /// Settings from the merged file (time zone of the usage buckets).
    settings: Settings,
}

fn plan_config(
    node: Option<(&Path, &Value)>,
    data_dir: &Path,
    env: &Env,
    warnings: &mut Vec<String>,
) -> Result<ConfigPlan, MigrateError> {
    let target = data_dir.join("config.json");
    let in_place = node.is_some_and(|(p, _)| same_file(p, &target));
    let original: Option<Vec<u8>> = match fs::read(&target) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(file_err(&target, e.to_string())),
    };
    let existing: Map<String, Value> = match (&original, in_place) {
        (Some(bytes), false) => match serde_json::from_slice(bytes) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(file_err(&target, "expected a JSON object")),
            Err(e) => return Err(file_err(&target, format!("not valid JSON: {e}"))),
        },
        _ => Map::new(),
    };
    let mut added = Vec::new();
    let merged = match node {
        Some((path, value)) => {
            let converted = config::convert(value);
            if !converted.errors.is_empty() {
                return Err(file_err(path, converted.errors.join("; ")));
            }
            let name = path.display();
            warnings.extend(converted.notes.iter().map(|n| format!("{name}: {n}")));
            let m = config::merge(&existing, &converted.fields);
            warnings.extend(m.kept.iter().map(|n| format!("config.json: {n}")));
            added = m.added;
            m.value
        }
        None => existing.clone(),
    };
    let value = Value::Object(merged.clone());
    let file = parse_value(&value);
    if !file.errors.is_empty() {
        return Err(MigrateError::Config(file.errors));
    }
    let mut env = env.clone();
    env.set("DATA_DIR", data_dir.display().to_string());
    let settings = Settings::from_sources(&env, Some(file)).map_err(|e| match e {
        crate::config::ConfigError::Invalid(list) => MigrateError::Config(list),
        other => MigrateError::Config(vec![other.to_string()]),
    })?;

    let changed = if in_place {
        original
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            != Some(value.clone())
    } else {
        node.is_some() && merged != existing
    };
    let content = serde_json::to_vec_pretty(&value).unwrap_or_default();
    let outcome = match (node.is_some(), changed, &original, in_place) {
        (false, _, _, _) => "none",
        (true, false, _, _) => "unchanged",
        (true, true, _, true) => "converted",
        (true, true, Some(_), false) => "updated",
        (true, true, None, false) => "created",
    };
    let backup = match (&original, in_place && changed) {
        (Some(bytes), true) => {
            let path = data_dir.join("config.json.node");
            if path.exists() {
                None
            } else {
                Some((path, bytes.clone()))
            }
        }
        _ => None,
    };
    if in_place && changed {
        warnings.push(format!(
            "{}: the Node file in the data folder itself was converted in place (the original is kept as config.json.node)",
            target.display()
        ));
    }
    Ok(ConfigPlan {
        write: changed.then(|| {
            let mut c = content;
            c.push(b'\n');
            c
        }),
        backup,
        outcome,
        added,
        settings,
    })
}

/// Migrates `from` into `data_dir` (nothing is written with `dry_run`).
pub fn migrate(
    from: &Path,
    data_dir: &Path,
    dry_run: bool,
    env: &Env,
) -> Result<Report, MigrateError> {
    let files = sources::locate(from).map_err(MigrateError::NotNode)?;
    let now = now_ms();
    let mut warnings = files.notes.clone();

    // 1. Read and check every Node file before anything else.
    let pool = match &files.key_pool {
        Some(p) => Some(parse_node_pool(&read(p)?, now).map_err(|e| file_err(p, e.to_string()))?),
        None => None,
    };
    let node_config = match &files.config {
        Some(p) => Some(
            serde_json::from_slice::<Value>(&read(p)?)
                .map_err(|e| file_err(p, format!("not valid JSON: {e}")))?,
        ),
        None => None,
    };
    let node_usage = match (&files.usage, &files.stats) {
        (Some(p), _) => Some(usage::parse(&read(p)?).map_err(|m| file_err(p, m))?),
        (None, Some(p)) => {
            let parsed = stats::parse(&read(p)?).map_err(|m| file_err(p, m))?;
            let name = p.display();
            warnings.extend(parsed.notes.iter().map(|n| format!("{name}: {n}")));
            Some(parsed)
        }
        (None, None) => None,
    };

    // 2. The data folder: a running gateway holds it.
    let _lock = if dry_run {
        if data_dir.exists() {
            probe_lock(data_dir)?;
        }
        None
    } else {
        Some(DataDirLock::acquire(data_dir)?)
    };

    // 3. config.json, merged and validated (its time zone buckets the usage).
    let cfg = plan_config(
        files.config.as_deref().zip(node_config.as_ref()),
        data_dir,
        env,
        &mut warnings,
    )?;
    let tz = cfg.settings.time_zone();

    // 4. What the pool holds, and what is new.
    let mut db = if dry_run {
        OfflineDb::preview(data_dir)?
    } else {
        OfflineDb::open(data_dir)?
    };
    let snapshot = db.snapshot()?;
    let mut report = Report {
        dry_run,
        from: from.display().to_string(),
        data_dir: data_dir.display().to_string(),
        ..Report::default()
    };
    report.files.key_pool = files.key_pool.as_ref().map(|p| p.display().to_string());
    report.files.config = files.config.as_ref().map(|p| p.display().to_string());
    report.files.usage = files.usage.as_ref().map(|p| p.display().to_string());
    report.files.request_stats = files.stats.as_ref().map(|p| p.display().to_string());
    report.files.auth = files.auth.as_ref().map(|p| p.display().to_string());

    let mut ops = Vec::new();
    let mut pool_keys: Vec<(String, String)> = snapshot
        .keys
        .iter()
        .map(|k| (k.id.clone(), k.secret.expose().to_string()))
        .collect();
    if let Some(parsed) = pool {
        report.keys.found = parsed.keys.len();
        report.keys.invalid = parsed.skipped;
        warnings.extend(
            parsed
                .warnings
                .iter()
                .map(|w| format!("key_pool.json: {w}")),
        );
        let plan = keys::plan(parsed, &snapshot);
        report.keys.imported = plan.imported;
        report.keys.duplicates = plan.duplicates;
        report.keys.renamed = plan.renamed;
        report.groups.imported = plan.groups_imported;
        report.groups.existing = plan.groups_existing;
        report.settings.algorithm = plan.algorithm;
        warnings.extend(plan.warnings);
        pool_keys.extend(plan.new_keys);
        ops = plan.ops;
    }

    let mut rollups = Vec::new();
    let mut meta: Vec<(String, String)> = Vec::new();
    if let Some(parsed) = &node_usage {
        let marker = usage::Marker::parse(db.meta(usage::MARKER)?.as_deref()).map_err(|e| {
            file_err(
                db.path(),
                format!(
                    "the record of earlier usage imports is unreadable ({e}); nothing was changed"
                ),
            )
        })?;
        let plan = usage::plan(parsed, &pool_keys, &marker, &tz);
        report.usage = report::Usage {
            keys: plan.keys,
            matched_keys: plan.matched,
            days: plan.days,
            hours: plan.hours,
            requests: plan.requests,
            tokens: plan.tokens,
            older_requests: plan.older_requests,
            older_tokens: plan.older_tokens,
        };
        warnings.extend(plan.warnings);
        if files.usage.is_some() && marker.has(stats::LABEL) && !plan.rollups.is_empty() {
            warnings.push(
                "data/request_stats.json was imported by an earlier migration: the factory_usage.json history imported now counts the same requests again (under their keys)".to_string(),
            );
        }
        if !plan.rollups.is_empty() {
            meta.push((usage::MARKER.to_string(), plan.marker.to_json()));
        }
        rollups = plan.rollups;
    }

    // The data folder's own key_pool.json: flagged and set aside as a first start would.
    let own_pool = files
        .key_pool
        .as_deref()
        .filter(|p| same_file(p, &data_dir.join(NODE_POOL_FILE)));
    if own_pool.is_some() {
        meta.push((
            NODE_IMPORT_DONE.to_string(),
            format!("migrated {} keys at {now}", report.keys.imported),
        ));
    } else if data_dir.join(NODE_POOL_FILE).is_file() && report.keys.imported > 0 {
        warnings.push(format!(
            "{}: this file will not be imported on start-up (the pool is no longer empty); import it with `droid2api migrate --from` on its folder, or remove it",
            data_dir.join(NODE_POOL_FILE).display()
        ));
    }

    // auth.json: the same format here.
    let auth_target = data_dir.join("auth.json");
    let mut auth_copy: Option<Vec<u8>> = None;
    report.settings.auth_file = match &files.auth {
        None => "none",
        Some(src) if same_file(src, &auth_target) => "present",
        Some(src) => {
            let bytes = read(src)?;
            match fs::read(&auth_target) {
                Ok(existing) if existing == bytes => "present",
                Ok(_) => {
                    warnings.push(format!(
                        "{}: the data folder has another auth.json, which is kept",
                        src.display()
                    ));
                    "kept"
                }
                Err(_) => match authfile::read(src) {
                    Ok(Some(a)) if a.refresh_token.is_some() || a.access_token.is_some() => {
                        auth_copy = Some(bytes);
                        "copied"
                    }
                    Ok(_) => "none",
                    Err(e) => {
                        warnings.push(format!("{e}: not copied"));
                        "none"
                    }
                },
            }
        }
    };
    report.settings.config_file = cfg.outcome;
    report.settings.config_added = cfg.added.clone();
    report.warnings = warnings;
    report.nothing_new = ops.is_empty()
        && rollups.is_empty()
        && cfg.write.is_none()
        && auth_copy.is_none()
        && own_pool.is_none();

    if dry_run || report.nothing_new {
        return Ok(report);
    }

    // 5. Write: the database in one transaction, then the files.
    let total = (ops.len() + rollups.len()) as u64;
    let bar = progress_bar(total);
    db.apply(&ops, &rollups, &meta, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    drop(db);
    if let Some((path, bytes)) = &cfg.backup {
        write_private_atomic(path, bytes)?;
    }
    if let Some(content) = &cfg.write {
        write_private_atomic(&data_dir.join("config.json"), content)?;
    }
    if let Some(bytes) = &auth_copy {
        write_private_atomic(&auth_target, bytes)?;
    }
    if let Some(file) = own_pool {
        let imported = data_dir.join(NODE_POOL_IMPORTED);
        if file != imported.as_path() && !same_file(file, &imported) {
            let set_aside = fs::rename(file, &imported).and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&imported, fs::Permissions::from_mode(0o600))
            });
            if let Err(e) = set_aside {
                report.warnings.push(format!(
                    "{}: imported, but could not be renamed to {NODE_POOL_IMPORTED} ({e}): move or delete it by hand (it holds every key in clear)",
                    file.display()
                ));
            }
        }
    }
    Ok(report)
}

/// A bar on stderr for the database writes (indicatif draws nothing when stderr is not a
/// terminal).
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("writing");
    bar
}
