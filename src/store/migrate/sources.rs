//! Where a Node.js installation keeps what `droid2api migrate` reads, and the notes about what
//! it leaves to the user (`.env`, other data files).

use std::path::{Path, PathBuf};

/// The files found in a Node.js installation.
#[derive(Debug, Clone, Default)]
pub struct NodeFiles {
    /// The installation's data folder (`NODE_DIR/data`, or NODE_DIR itself when it is one).
    pub data: PathBuf,
    /// `data/key_pool.json` (else `data/key_pool.json.imported`, already set aside by a first
    /// start of this gateway on that folder).
    pub key_pool: Option<PathBuf>,
    /// `data/config.json` (the fork the seed README describes) or `config.json` (the original).
    pub config: Option<PathBuf>,
    /// `data/factory_usage.json`.
    pub usage: Option<PathBuf>,
    /// `data/request_stats.json`, when there is no factory_usage.json (the usage history then).
    pub stats: Option<PathBuf>,
    pub auth: Option<PathBuf>,
    /// Notes about the layout (which file was chosen, which ignored).
    pub notes: Vec<String>,
}

/// Finds the files, or says why `from` is not a Node.js installation.
pub fn locate(from: &Path) -> Result<NodeFiles, String> {
    if !from.is_dir() {
        return Err(format!(
            "{}: not a folder (give the Node.js droid2api folder, the one holding data/ and config.json)",
            from.display()
        ));
    }
    let mut out = NodeFiles {
        data: from.join("data"),
        ..NodeFiles::default()
    };
    // NODE_DIR may be the data folder itself.
    let looks_like_data = |d: &Path| {
        [
            "key_pool.json",
            "key_pool.json.imported",
            "factory_usage.json",
            "request_stats.json",
        ]
        .iter()
        .any(|f| d.join(f).is_file())
    };
    if !out.data.is_dir() && looks_like_data(from) {
        out.data = from.to_path_buf();
        out.notes.push(format!(
            "{} looks like the Node.js data folder itself: read as such",
            from.display()
        ));
    }
    let data = out.data.clone();
    let file = |p: PathBuf| p.is_file().then_some(p);

    out.key_pool = file(data.join("key_pool.json")).or_else(|| {
        let set_aside = file(data.join("key_pool.json.imported"))?;
        out.notes.push(format!(
            "{} was already imported once by this gateway and set aside: read again to import what is new",
            set_aside.display()
        ));
        Some(set_aside)
    });

    let in_data = file(data.join("config.json"));
    let at_root = if data == from {
        None
    } else {
        file(from.join("config.json"))
    };
    out.config = match (in_data, at_root) {
        (Some(d), Some(r)) => {
            out.notes.push(format!(
                "{} is used (the file the Node.js version read); {} is ignored",
                d.display(),
                r.display()
            ));
            Some(d)
        }
        (d, r) => d.or(r),
    };
    out.usage = file(data.join("factory_usage.json"));
    let stats = file(data.join("request_stats.json"));
    if out.usage.is_some() {
        if stats.is_some() {
            out.notes.push(
                "data/request_stats.json: not imported: data/factory_usage.json is (request_stats.json has no key dimension and counts the same requests: importing both would count them twice)".into(),
            );
        }
    } else {
        out.stats = stats;
    }
    out.auth = file(data.join("auth.json"));

    if out.key_pool.is_none() && out.config.is_none() && out.usage.is_none() && out.stats.is_none()
    {
        return Err(format!(
            "{}: no data/key_pool.json, config.json, data/config.json, data/factory_usage.json or data/request_stats.json here; give the Node.js droid2api folder",
            from.display()
        ));
    }
    for (name, what) in [
        (
            "token_usage.json",
            "the Node version's cache of Factory balances: not imported; balances are synced again from Factory (POST /factory/balance/sync)",
        ),
        (
            "factory_balance.json",
            "a cache of Factory balances: not imported; balances are synced again from Factory",
        ),
    ] {
        if data.join(name).is_file() {
            out.notes.push(format!("data/{name}: {what}"));
        }
    }
    if let Some(env) = file(from.join(".env")) {
        out.notes.extend(env_notes(&env));
    }
    Ok(out)
}

/// Variables the Node.js version read that have no effect here.
const NO_EFFECT: [&str; 17] = [
    "KEY_POOL_RETRY_ENABLED",
    "KEY_POOL_RETRY_MAX",
    "KEY_POOL_RETRY_DELAY_MS",
    "KEY_POOL_AUTO_BAN_ENABLED",
    "KEY_POOL_ERROR_THRESHOLD",
    "KEY_POOL_BAN_402",
    "KEY_POOL_BAN_401",
    "KEY_POOL_CONCURRENT_LIMIT",
    "KEY_POOL_REQUEST_TIMEOUT_MS",
    "KEY_POOL_MULTI_TIER_ENABLED",
    "KEY_POOL_MULTI_TIER_AUTO_FALLBACK",
    "KEY_POOL_BATCH_TEST_INTERVAL_MS",
    "KEY_POOL_CACHE_TTL_MS",
    "WORKOS_CLIENT_ID",
    "NOTES_MAX_LENGTH",
    "MAX_JSON_LOG_SIZE",
    "BALANCE_SAVE_INTERVAL_MINUTES",
];

/// What the Node.js `.env` means here: names only, never a value.
fn env_notes(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut same = Vec::new();
    let mut none = Vec::new();
    let mut weak_admin = false;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if name == "ADMIN_ACCESS_KEY" && crate::config::admin_key_weakness(value).is_some() {
            weak_admin = true;
        }
        if NO_EFFECT.contains(&name) {
            none.push(name.to_string());
        } else {
            same.push(name.to_string());
        }
    }
    let mut notes = Vec::new();
    if !same.is_empty() {
        notes.push(format!(
            "{}: sets {}; this gateway reads .env from its working directory and the environment (which win over config.json): copy the lines you need",
            path.display(),
            same.join(", ")
        ));
    }
    if !none.is_empty() {
        notes.push(format!(
            "{}: no effect here for {} (failover, bans and cooldowns are automatic; see key_pool in config.json)",
            path.display(),
            none.join(", ")
        ));
    }
    if weak_admin {
        notes.push(format!(
            "{}: its ADMIN_ACCESS_KEY is shorter than 16 characters or a placeholder: this gateway keeps the admin API disabled with it; choose a long random one",
            path.display()
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_notes_name_variables_never_values() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        std::fs::write(
            &env,
            "# comment\nFACTORY_API_KEY=fk-secret-value-123456\nADMIN_ACCESS_KEY=123\nKEY_POOL_RETRY_MAX=5\nexport PORT=3000\n",
        )
        .unwrap();
        let notes = env_notes(&env).join("\n");
        assert!(
            notes.contains("FACTORY_API_KEY, ADMIN_ACCESS_KEY, PORT"),
            "{notes}"
        );
        assert!(
            notes.contains("no effect here for KEY_POOL_RETRY_MAX"),
            "{notes}"
        );
        assert!(notes.contains("shorter than 16"), "{notes}");
        assert!(!notes.contains("fk-secret"), "{notes}");
    }

    #[test]
    fn layouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(locate(root).unwrap_err().contains("no data/key_pool.json"));
        std::fs::write(root.join("config.json"), "{}").unwrap();
        let f = locate(root).unwrap();
        assert_eq!(
            f.config.as_deref(),
            Some(root.join("config.json").as_path())
        );
        std::fs::create_dir(root.join("data")).unwrap();
        std::fs::write(root.join("data/config.json"), "{}").unwrap();
        std::fs::write(root.join("data/key_pool.json.imported"), "{}").unwrap();
        let f = locate(root).unwrap();
        assert_eq!(
            f.config.as_deref(),
            Some(root.join("data/config.json").as_path())
        );
        assert!(f.key_pool.unwrap().ends_with("key_pool.json.imported"));
        // The data folder itself.
        let f = locate(&root.join("data")).unwrap();
        assert_eq!(f.data, root.join("data"));
    }

    #[test]
    fn request_stats_is_the_history_only_without_factory_usage() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("request_stats.json"), "{}").unwrap();
        // Alone, it makes a Node folder (and a Node data folder).
        let f = locate(dir.path()).unwrap();
        assert_eq!(
            f.stats.as_deref(),
            Some(data.join("request_stats.json").as_path())
        );
        assert!(f.notes.is_empty(), "{:?}", f.notes);
        assert_eq!(locate(&data).unwrap().data, data);
        // With factory_usage.json: that one, and a note why not both.
        std::fs::write(data.join("factory_usage.json"), "{}").unwrap();
        let f = locate(dir.path()).unwrap();
        assert!(f.usage.is_some());
        assert!(f.stats.is_none());
        let notes = f.notes.join("\n");
        assert!(
            notes.contains("request_stats.json: not imported"),
            "{notes}"
        );
        assert!(notes.contains("count them twice"), "{notes}");
    }
}
