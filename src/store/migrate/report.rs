//! What `droid2api migrate` did (or, with `--dry-run`, would do): counts for people (stdout) and
//! for scripts (`--json`). Never a key: ids, masks and fingerprints only.

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub from: String,
    pub data_dir: String,
    pub files: Files,
    pub keys: Keys,
    pub groups: Groups,
    pub settings: SettingsReport,
    pub usage: Usage,
    /// Nothing was (or would be) written: everything was already there.
    pub nothing_new: bool,
    pub warnings: Vec<String>,
}

/// The Node.js files read (`null`: not there).
#[derive(Debug, Default, Serialize)]
pub struct Files {
    pub key_pool: Option<String>,
    pub config: Option<String>,
    /// factory_usage.json.
    pub usage: Option<String>,
    /// request_stats.json, read when there is no factory_usage.json.
    pub request_stats: Option<String>,
    pub auth: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Keys {
    /// Usable entries in key_pool.json.
    pub found: usize,
    pub imported: usize,
    /// Already in the data folder (same key).
    pub duplicates: usize,
    /// Entries skipped as unusable (invalid key, repeated key, not an object).
    pub invalid: usize,
    /// Imported under a fresh id (the id was taken by another key).
    pub renamed: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Groups {
    pub imported: usize,
    pub existing: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct SettingsReport {
    /// The selection algorithm stored now (`null`: none, or one was stored already).
    pub algorithm: Option<String>,
    /// `created`, `updated`, `converted` (the data folder's own Node file rewritten, the
    /// original kept as `config.json.node`), `unchanged` or `none`.
    pub config_file: &'static str,
    /// config.json fields added (`key_pool.x` for a sub-field).
    pub config_added: Vec<String>,
    /// `copied`, `present`, `kept` (a different one was there) or `none`.
    pub auth_file: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct Usage {
    /// factory_usage.json entries with something new (request_stats.json has no keys: its
    /// history counts under the credential `node`).
    pub keys: usize,
    /// Entries attributed to a pool key (the others count under the credential `node`).
    pub matched_keys: usize,
    pub days: usize,
    pub hours: usize,
    pub requests: u64,
    pub tokens: u64,
    /// Part of the above only in the all-time totals (older than the file's daily history).
    pub older_requests: u64,
    pub older_tokens: u64,
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into()) + "\n"
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        let _ = writeln!(
            o,
            "{} {} {} {}",
            if self.dry_run {
                "Dry run (nothing changed): migrating"
            } else if self.nothing_new {
                "Compared"
            } else {
                "Migrated"
            },
            self.from,
            if self.nothing_new && !self.dry_run {
                "with"
            } else {
                "into"
            },
            self.data_dir
        );
        if self.files.key_pool.is_some() {
            let k = &self.keys;
            let _ = writeln!(
                o,
                "  keys:     {} {verb}, {} already in the data folder, {} skipped as unusable{}",
                k.imported,
                k.duplicates,
                k.invalid,
                if k.renamed > 0 {
                    format!(", {} under a fresh id", k.renamed)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                o,
                "  groups:   {} {verb}, {} already there",
                self.groups.imported, self.groups.existing
            );
        } else {
            let _ = writeln!(o, "  keys:     no data/key_pool.json");
        }
        let s = &self.settings;
        let mut settings = Vec::new();
        if let Some(a) = &s.algorithm {
            settings.push(format!("algorithm \"{a}\""));
        }
        match s.config_file {
            "none" => settings.push("no config.json".into()),
            "unchanged" => settings.push("config.json: nothing new".into()),
            what => settings.push(format!(
                "config.json {}{}",
                if self.dry_run {
                    format!("would be {what}")
                } else {
                    what.to_string()
                },
                if s.config_added.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.config_added.join(", "))
                }
            )),
        }
        match s.auth_file {
            "copied" => settings.push(format!(
                "auth.json {}",
                if self.dry_run {
                    "would be copied"
                } else {
                    "copied"
                }
            )),
            "present" => settings.push("auth.json already there".into()),
            "kept" => settings.push("auth.json: the data folder's is kept".into()),
            _ => {}
        }
        let _ = writeln!(o, "  settings: {}", settings.join("; "));
        let u = &self.usage;
        let older = if u.older_requests > 0 || u.older_tokens > 0 {
            format!(
                " ({} requests and {} tokens older than the file's daily history count in the all-time totals only)",
                thousands(u.older_requests),
                thousands(u.older_tokens)
            )
        } else {
            String::new()
        };
        if self.files.usage.is_some() {
            let _ = writeln!(
                o,
                "  usage:    {} keys ({} matched to pool keys), {} days, {} hours, {} requests, {} tokens {verb}{older}",
                u.keys,
                u.matched_keys,
                u.days,
                u.hours,
                thousands(u.requests),
                thousands(u.tokens),
            );
        } else if self.files.request_stats.is_some() {
            let _ = writeln!(
                o,
                "  usage:    from data/request_stats.json (no key: under the credential \"node\"), {} days, {} requests, {} tokens {verb}{older}",
                u.days,
                thousands(u.requests),
                thousands(u.tokens),
            );
        } else {
            let _ = writeln!(
                o,
                "  usage:    no data/factory_usage.json or data/request_stats.json"
            );
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(o, "notes:");
            for w in &self.warnings {
                let _ = writeln!(o, "  - {w}");
            }
        }
        if self.nothing_new {
            let _ = writeln!(
                o,
                "Nothing new: the data folder already holds everything from {}.",
                self.from
            );
        } else if self.dry_run {
            let _ = writeln!(o, "Run again without --dry-run to apply.");
        } else {
            let _ = writeln!(
                o,
                "Done. Start the gateway on {} (DATA_DIR) to use it.",
                self.data_dir
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
