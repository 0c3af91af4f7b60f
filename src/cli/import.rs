//! `droid2api keys import FILE`: keys from a text file (one per line), a JSON export
//! (`keys export --format json`), or the Node version's `data/key_pool.json`, sent to
//! `POST /admin/keys/batch` in batches (a progress bar when there is more than one).
//!
//! Only the keys are imported; their statuses, notes and groups from a Node installation are
//! carried by `droid2api migrate`.

use std::path::PathBuf;

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Admin, CliError};
use super::keys::read_stdin;
use super::output::{fields, print, print_json, progress};
use super::{EXIT_OK, complain};

/// The header of `keys export --format csv`, which is not read back (quoted fields may span
/// lines).
const CSV_HEADER: &str = "id,key,status,poolGroup,notes";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import ("-" reads stdin): one key per line, a JSON array of keys or of
    /// {"key": …} objects, or a key_pool.json ({"keys": [{"key": …}, …]}).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The pool group the keys join (its id) [default: default]
    #[arg(long, value_name = "GROUP")]
    pool: Option<String>,
    /// Keys per request (1 to 10000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,
}

/// Where an entry came from: a line of a text file, or an entry of a JSON list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Line,
    Entry,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Line => "line",
            Unit::Entry => "entry",
        }
    }
}

/// A parsed import file: the keys with their line (or entry) number, and the entries refused
/// before sending (a JSON entry without a key).
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    keys: Vec<(usize, String)>,
    refused: Vec<(usize, String)>,
}

fn parse(name: &str, text: &str) -> Result<(Unit, Parsed), CliError> {
    let text = text.trim_start_matches('\u{feff}');
    let start = text.trim_start();
    let mut out = Parsed::default();
    if start.starts_with('{') || start.starts_with('[') {
        let v: Value = serde_json::from_str(start)
            .map_err(|e| CliError::Usage(format!("{name}: not valid JSON: {e}")))?;
        let items = match &v {
            Value::Array(items) => items,
            Value::Object(o) => match o.get("keys") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(CliError::Usage(format!(
                        "{name}: a JSON object must hold \"keys\": [...] (the Node version's key_pool.json)"
                    )));
                }
            },
            _ => return Err(CliError::Usage(format!("{name}: not a list of keys"))),
        };
        for (i, item) in items.iter().enumerate() {
            let key = match item {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) => o.get("key").and_then(Value::as_str),
                _ => None,
            };
            match key {
                Some(k) => out.keys.push((i + 1, k.to_string())),
                None => out
                    .refused
                    .push((i + 1, "no key: expected a string or {\"key\": …}".into())),
            }
        }
        return Ok((Unit::Entry, out));
    }
    if start.lines().next().map(str::trim) == Some(CSV_HEADER) {
        return Err(CliError::Usage(format!(
            "{name}: a CSV export is not read back; export with --format txt or --format json"
        )));
    }
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.is_empty() {
            out.keys.push((i + 1, line.to_string()));
        }
    }
    Ok((Unit::Line, out))
}

/// The sum of the batches, as one `POST /admin/keys/batch` would answer (line numbers are
/// the file's).
#[derive(Debug, Default)]
struct Totals {
    added: u64,
    duplicate: u64,
    invalid: u64,
    ids: Vec<Value>,
    errors: Vec<(usize, String)>,
}

impl Totals {
    fn json(&self) -> Value {
        json!({
            "added": self.added,
            "duplicate": self.duplicate,
            "invalid": self.invalid,
            "ids": self.ids,
            "errors": self.errors.iter().map(|(line, reason)| json!({"line": line, "reason": reason})).collect::<Vec<_>>(),
        })
    }
}

pub async fn run(admin: &Admin, json: bool, a: ImportArgs) -> Result<i32, CliError> {
    let name = a.file.display().to_string();
    let text = if name == "-" {
        read_stdin("keys")?
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| CliError::Usage(format!("{name}: {e}")))?
    };
    let (unit, parsed) = parse(&name, &text)?;
    if parsed.keys.is_empty() && parsed.refused.is_empty() {
        return Err(CliError::Usage(format!("{name}: no key in the file")));
    }
    let mut totals = Totals {
        invalid: parsed.refused.len() as u64,
        errors: parsed.refused.clone(),
        ..Totals::default()
    };
    let size = a.batch_size as usize;
    let batches = parsed.keys.len().div_ceil(size);
    let bar = progress(parsed.keys.len() as u64, "importing", batches > 1);
    for (n, batch) in parsed.keys.chunks(size).enumerate() {
        let mut body = json!({"keys": batch.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>()});
        if let Some(p) = &a.pool {
            body["poolGroup"] = json!(p);
        }
        let data = match admin
            .call(Method::POST, "/admin/keys/batch", Some(&body))
            .await
        {
            Ok(data) => data,
            Err(e) => {
                bar.abandon();
                if n > 0 {
                    complain(format!(
                        "stopped after {} of {} keys ({} added)",
                        n * size,
                        parsed.keys.len(),
                        totals.added
                    ));
                }
                return Err(e);
            }
        };
        totals.added += data["added"].as_u64().unwrap_or(0);
        totals.duplicate += data["duplicate"].as_u64().unwrap_or(0);
        totals.invalid += data["invalid"].as_u64().unwrap_or(0);
        if let Some(ids) = data["ids"].as_array() {
            totals.ids.extend(ids.iter().cloned());
        }
        for e in data["errors"].as_array().into_iter().flatten() {
            // The API numbers the batch's entries from 1; the file's numbers are kept.
            let at = e["line"]
                .as_u64()
                .and_then(|l| batch.get((l as usize).checked_sub(1)?))
                .map_or(0, |(line, _)| *line);
            let reason = e["reason"].as_str().unwrap_or("refused").to_string();
            totals.errors.push((at, reason));
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    totals.errors.sort_by_key(|(line, _)| *line);
    if json {
        print_json(&totals.json());
    } else {
        let mut out = fields(&[
            ("added", totals.added.to_string()),
            ("duplicate", totals.duplicate.to_string()),
            ("invalid", totals.invalid.to_string()),
        ]);
        for (at, reason) in &totals.errors {
            out.push_str(&format!("{} {at}: {reason}\n", unit.name()));
        }
        print(&out);
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &Parsed) -> Vec<(usize, &str)> {
        p.keys.iter().map(|(n, k)| (*n, k.as_str())).collect()
    }

    #[test]
    fn text_files_keep_their_line_numbers() {
        let (unit, p) = parse("f", "\u{feff}fk-aaaaaaaa\n\n  fk-bbbbbbbb  \r\n").unwrap();
        assert_eq!(unit, Unit::Line);
        assert_eq!(keys(&p), [(1, "fk-aaaaaaaa"), (3, "fk-bbbbbbbb")]);
    }

    #[test]
    fn json_exports_and_node_key_pools() {
        let (unit, p) = parse(
            "f",
            r#"["fk-aaaaaaaa", {"id": "x", "key": "fk-bbbbbbbb"}, 5]"#,
        )
        .unwrap();
        assert_eq!(unit, Unit::Entry);
        assert_eq!(keys(&p), [(1, "fk-aaaaaaaa"), (2, "fk-bbbbbbbb")]);
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].0, 3);
        let node = r#"{"keys": [{"id": "key_1", "key": "fk-cccccccc", "status": "banned", "poolGroup": "main"}],
                       "stats": {"total": 1}, "poolGroups": [], "config": {}}"#;
        let (_, p) = parse("key_pool.json", node).unwrap();
        assert_eq!(keys(&p), [(1, "fk-cccccccc")]);
        assert!(matches!(parse("f", r#"{"a": 1}"#), Err(CliError::Usage(_))));
        assert!(matches!(parse("f", "[1,"), Err(CliError::Usage(_))));
    }

    #[test]
    fn csv_exports_are_refused() {
        let csv = "id,key,status,poolGroup,notes\r\nkey_1,fk-aaaaaaaa,active,default,\r\n";
        assert!(matches!(parse("f", csv), Err(CliError::Usage(_))));
    }
}
