//! Import of the Node.js version's `data/key_pool.json` (upstream-factory.md §5.1, contract §7).
//!
//! Pure parsing: bytes in, records out. The store ([`super::sqlite`]) writes the result in one
//! transaction on first start and leaves the file in place.
//!
//! Rules: ids are kept (a missing, malformed or repeated id gets a fresh `key_…` id, with a
//! warning); secrets are trimmed and must be 8–512 printable ASCII characters without spaces
//! (otherwise the key is skipped, the warning naming its id, never its secret); a repeated secret
//! skips the later key; an unknown status becomes `disabled`; every imported disabled key counts as
//! disabled automatically (`disabled_by = auto`); banned keys keep `banned_reason`/`banned_at`;
//! keys in a group the file does not define get that group created (name = id, priority
//! 1000 + n); the algorithm is kept when this build knows it, else `round-robin`.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::records::{
    DEFAULT_GROUP, DEFAULT_GROUP_PRIORITY, DisabledBy, EventSource, KeyEvent, KeyRecord, KeyStatus,
    LastTest, Millis, PoolGroup, TestResult,
};
use crate::config::ALGORITHMS;
use crate::config::json_describe::kind_of;
use crate::secret::Secret;

/// The reason recorded on each imported key's `Import` event.
pub const IMPORT_REASON: &str = "imported from key_pool.json";

/// What a Node.js `key_pool.json` holds, in this build's records.
#[derive(Debug, Clone)]
pub struct NodeImport {
    /// In file order.
    pub keys: Vec<KeyRecord>,
    /// The file's `poolGroups` (in file order), then the groups created for keys that named an
    /// undefined group. `default` appears only when the file defines it.
    pub groups: Vec<PoolGroup>,
    /// `config.algorithm`: one of [`ALGORITHMS`]; an unknown one becomes `round-robin` (with a
    /// warning). `None` when the file has none.
    pub algorithm: Option<String>,
    /// One `Import` event per imported key.
    pub events: Vec<KeyEvent>,
    /// Human-readable notes (never containing a secret).
    pub warnings: Vec<String>,
    /// Key entries not imported (invalid secret, repeated secret, not an object).
    pub skipped: usize,
}

/// A `key_pool.json` that cannot be imported at all. The caller refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "key_pool.json (Node.js format) is not valid JSON: {0}; fix or move data/key_pool.json"
    )]
    NotJson(#[source] serde_json::Error),
    #[error(
        "key_pool.json (Node.js format) must be a JSON object with a \"keys\" array, got {0}; fix or move data/key_pool.json"
    )]
    NotAnObject(&'static str),
    #[error(
        "key_pool.json (Node.js format) has no \"keys\" array ({0}); fix or move data/key_pool.json"
    )]
    NoKeys(&'static str),
}

/// Parses a Node.js `key_pool.json`. `now` stands in for unparseable creation times and is the
/// time of the import events.
pub fn parse_node_pool(bytes: &[u8], now: Millis) -> Result<NodeImport, ImportError> {
    let root: Value = serde_json::from_slice(bytes).map_err(ImportError::NotJson)?;
    let Value::Object(root) = root else {
        return Err(ImportError::NotAnObject(kind_of(&root)));
    };
    let keys = match root.get("keys") {
        Some(Value::Array(keys)) => keys,
        Some(other) => return Err(ImportError::NoKeys(kind_of(other))),
        None => return Err(ImportError::NoKeys("field missing")),
    };

    let mut out = NodeImport {
        keys: Vec::new(),
        groups: Vec::new(),
        algorithm: None,
        events: Vec::new(),
        warnings: Vec::new(),
        skipped: 0,
    };

    parse_groups(root.get("poolGroups"), now, &mut out);
    let mut known_groups: HashSet<String> = out.groups.iter().map(|g| g.id.clone()).collect();
    known_groups.insert(DEFAULT_GROUP.to_string());
    let mut created_groups = 0i64;

    let mut ids: HashSet<String> = HashSet::new();
    let mut secrets: HashMap<String, String> = HashMap::new();

    for (index, entry) in keys.iter().enumerate() {
        let Value::Object(obj) = entry else {
            out.skipped += 1;
            out.warnings.push(format!(
                "keys[{index}] is {}, not an object: skipped",
                kind_of(entry)
            ));
            continue;
        };

        // Id: kept when usable.
        let raw_id = match obj.get("id") {
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let label = raw_id
            .as_deref()
            .filter(|id| valid_id(id))
            .map(str::to_string)
            .unwrap_or_else(|| format!("keys[{index}]"));

        // Secret: trimmed, validated, unique. Never echoed.
        let secret = match obj.get("key") {
            Some(Value::String(s)) => s.trim().to_string(),
            _ => {
                out.skipped += 1;
                out.warnings
                    .push(format!("key {label} has no \"key\" string: skipped"));
                continue;
            }
        };
        if let Some(problem) = secret_problem(&secret) {
            out.skipped += 1;
            out.warnings
                .push(format!("key {label}: invalid key ({problem}): skipped"));
            continue;
        }
        if let Some(first) = secrets.get(&secret) {
            out.skipped += 1;
            out.warnings
                .push(format!("key {label} has the same key as {first}: skipped"));
            continue;
        }

        let id = match raw_id {
            Some(id) if valid_id(&id) && !ids.contains(&id) => id,
            other => {
                let fresh = fresh_id();
                let why = match other {
                    None => "has no id".to_string(),
                    Some(id) if ids.contains(&id) => format!("repeats id {id}"),
                    Some(_) => "has an unusable id".to_string(),
                };
                out.warnings
                    .push(format!("key {label} {why}: imported as {fresh}"));
                fresh
            }
        };
        ids.insert(id.clone());
        secrets.insert(secret.clone(), id.clone());

        // Status.
        let raw_status = obj.get("status").and_then(Value::as_str).unwrap_or("");
        let (status, mut status_reason) = match KeyStatus::parse(raw_status.trim()) {
            Some(s) => (s, None),
            None => {
                let shown = match obj.get("status") {
                    None | Some(Value::Null) => "none".to_string(),
                    Some(Value::String(s)) => format!("\"{}\"", truncate(s, 32)),
                    Some(other) => kind_of(other).to_string(),
                };
                out.warnings.push(format!(
                    "key {id}: unknown status {shown}, imported as disabled"
                ));
                (
                    KeyStatus::Disabled,
                    Some(format!("unknown status {shown} in key_pool.json")),
                )
            }
        };
        let mut status_changed_at = None;
        match status {
            KeyStatus::Banned => {
                status_reason = non_empty_str(obj.get("banned_reason"));
                status_changed_at = obj.get("banned_at").and_then(parse_time);
            }
            KeyStatus::Disabled if status_reason.is_none() => {
                status_reason = non_empty_str(obj.get("last_error"));
            }
            _ => {}
        }
        let disabled_by = (status == KeyStatus::Disabled).then_some(DisabledBy::Auto);

        // Group.
        let pool_group = match obj.get("poolGroup") {
            Some(Value::String(g)) if !g.trim().is_empty() => g.trim().to_string(),
            _ => DEFAULT_GROUP.to_string(),
        };
        if !known_groups.contains(&pool_group) {
            created_groups += 1;
            out.warnings.push(format!(
                "key {id} is in group \"{}\", which key_pool.json does not define: group created with priority {}",
                truncate(&pool_group, 64),
                DEFAULT_GROUP_PRIORITY + created_groups
            ));
            out.groups.push(PoolGroup {
                id: pool_group.clone(),
                name: pool_group.clone(),
                priority: DEFAULT_GROUP_PRIORITY + created_groups,
                description: String::new(),
                created_at: now,
            });
            known_groups.insert(pool_group.clone());
        }

        // Counters (Node's own migration: success_requests ‖ total − error_count).
        let usage = count(obj.get("usage_count"));
        let total = count(obj.get("total_requests"));
        let requests = usage.max(total);
        let failures = count(obj.get("error_count"));
        let successes = match obj.get("success_requests") {
            Some(v) if !v.is_null() => count(Some(v)),
            _ => requests.saturating_sub(failures),
        };

        // Times.
        let created_at = obj.get("created_at").and_then(parse_time).unwrap_or(now);
        let last_used_at = obj.get("last_used_at").and_then(parse_time);
        let last_test_at = obj.get("last_test_at").and_then(parse_time);
        let last_test = match obj.get("last_test_result").and_then(Value::as_str) {
            Some("success") => Some(LastTest {
                at: last_test_at.unwrap_or(now),
                result: TestResult::Success,
                status: 200,
            }),
            Some("failed") => Some(LastTest {
                at: last_test_at.unwrap_or(now),
                result: if status == KeyStatus::Banned {
                    TestResult::Banned
                } else {
                    TestResult::Disabled
                },
                status: 0,
            }),
            _ => None,
        };

        let notes = match obj.get("notes") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };

        out.events.push(KeyEvent {
            key_id: id.clone(),
            at: now,
            from: None,
            to: status.as_str().to_string(),
            reason: IMPORT_REASON.to_string(),
            source: EventSource::Import,
        });
        out.keys.push(KeyRecord {
            id,
            secret: Secret::new(secret),
            status,
            status_reason,
            status_changed_at,
            disabled_by,
            pool_group,
            notes,
            created_at,
            last_used_at,
            cooldown_until: None,
            requests,
            successes,
            failures,
            input_tokens: 0,
            output_tokens: 0,
            last_test,
        });
    }

    out.algorithm = match root.get("config").and_then(|c| c.get("algorithm")) {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if ALGORITHMS.contains(&a.trim()) => Some(a.trim().to_string()),
        Some(other) => {
            let shown = match other {
                Value::String(s) => format!("\"{}\"", truncate(s, 32)),
                v => kind_of(v).to_string(),
            };
            out.warnings.push(format!(
                "algorithm {shown} is not supported by this version: using \"round-robin\""
            ));
            Some("round-robin".to_string())
        }
    };

    Ok(out)
}

/// Reads `poolGroups[]` into `out.groups` (duplicates and entries without an id are skipped with
/// a warning).
fn parse_groups(value: Option<&Value>, now: Millis, out: &mut NodeImport) {
    let groups = match value {
        None | Some(Value::Null) => return,
        Some(Value::Array(groups)) => groups,
        Some(other) => {
            out.warnings.push(format!(
                "poolGroups is {}, not an array: ignored",
                kind_of(other)
            ));
            return;
        }
    };
    let mut seen: HashSet<String> = HashSet::new();
    for (index, group) in groups.iter().enumerate() {
        let Value::Object(obj) = group else {
            out.warnings.push(format!(
                "poolGroups[{index}] is {}, not an object: ignored",
                kind_of(group)
            ));
            continue;
        };
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                out.warnings
                    .push(format!("poolGroups[{index}] has no id: ignored"));
                continue;
            }
        };
        if !seen.insert(id.clone()) {
            out.warnings.push(format!(
                "poolGroups[{index}] repeats group \"{}\": ignored",
                truncate(&id, 64)
            ));
            continue;
        }
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => id.clone(),
        };
        let priority = match obj.get("priority").and_then(integer) {
            Some(p) => p,
            None if id == DEFAULT_GROUP => DEFAULT_GROUP_PRIORITY,
            None => {
                let p = i64::try_from(index).unwrap_or(i64::MAX - 1) + 1;
                out.warnings.push(format!(
                    "group \"{}\" has no usable priority: using {p}",
                    truncate(&id, 64)
                ));
                p
            }
        };
        let description = match obj.get("description") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let created_at = obj
            .get("created_at")
            .or_else(|| obj.get("createdAt"))
            .and_then(parse_time)
            .unwrap_or(now);
        out.groups.push(PoolGroup {
            id,
            name,
            priority,
            description,
            created_at,
        });
    }
}

/// Why a (trimmed) secret is not a valid key, or `None` when it is.
fn secret_problem(secret: &str) -> Option<&'static str> {
    if secret.is_empty() {
        return Some("empty");
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("not printable ASCII without spaces");
    }
    match secret.len() {
        0..8 => Some("shorter than 8 characters"),
        8..=512 => None,
        _ => Some("longer than 512 characters"),
    }
}

/// An id we can keep: 1–128 printable ASCII characters without spaces or `/`.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

fn fresh_id() -> String {
    format!("key_{}", uuid::Uuid::now_v7().simple())
}

/// A non-negative counter from a JSON number (floats truncated; anything else 0).
fn count(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or_else(|| match n.as_f64() {
            Some(f) if f.is_finite() && f > 0.0 => f as u64,
            _ => 0,
        }),
        _ => 0,
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An ISO 8601 / RFC 3339 timestamp (or a number of milliseconds) as Unix milliseconds.
fn parse_time(value: &Value) -> Option<Millis> {
    match value {
        Value::String(s) => s
            .trim()
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond()),
        Value::Number(n) => n.as_i64().filter(|ms| *ms > 0),
        _ => None,
    }
}

fn non_empty_str(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/node/key_pool.json");
    const NOW: Millis = 1_760_000_000_000;

    fn ms(s: &str) -> Millis {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn key<'a>(import: &'a NodeImport, id: &str) -> &'a KeyRecord {
        import
            .keys
            .iter()
            .find(|k| k.id == id)
            .unwrap_or_else(|| panic!("key {id} not imported"))
    }

    #[test]
    fn fixture_counts_ids_and_order() {
        let import = parse_node_pool(FIXTURE, NOW).unwrap();
        let ids: Vec<&str> = import.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "key_1728700000001_a1b2c3d4e",
                "key_1728700000002_f5g6h7i8j",
                "key_1728700000003_k9l0m1n2o",
                "key_1728700000004_p3q4r5s6t",
                "key_1728700000005_u7v8w9x0y",
                "key_1728700000008_j5k6l7m8n",
            ]
        );
        assert_eq!(import.skipped, 3);
        assert_eq!(import.events.len(), 6);
        for (k, e) in import.keys.iter().zip(&import.events) {
            assert_eq!(e.key_id, k.id);
            assert_eq!(e.from, None);
            assert_eq!(e.to, k.status.as_str());
            assert_eq!(e.reason, IMPORT_REASON);
            assert_eq!(e.source, EventSource::Import);
            assert_eq!(e.at, NOW);
        }
    }

    #[test]
    fn fixture_groups() {
        let import = parse_node_pool(FIXTURE, NOW).unwrap();
        let groups: Vec<(&str, &str, i64)> = import
            .groups
            .iter()
            .map(|g| (g.id.as_str(), g.name.as_str(), g.priority))
            .collect();
        assert_eq!(
            groups,
            [
                ("freebies", "白嫖池", 1),
                ("main", "主力池", 2),
                ("test", "测试池", 3),
                ("legacy", "legacy", 1001),
            ]
        );
        assert_eq!(import.groups[0].description, "免费试用的密钥");
        assert_eq!(import.groups[0].created_at, NOW);
        assert_eq!(
            key(&import, "key_1728700000004_p3q4r5s6t").pool_group,
            "default"
        );
        assert_eq!(
            key(&import, "key_1728700000005_u7v8w9x0y").pool_group,
            "legacy"
        );
        assert!(
            import
                .warnings
                .iter()
                .any(|w| w.contains("\"legacy\"") && w.contains("1001"))
        );
    }

    #[test]
    fn fixture_active_key_with_counters() {
        let import = parse_node_pool(FIXTURE, NOW).unwrap();
        let k = key(&import, "key_1728700000001_a1b2c3d4e");
        assert_eq!(
            k.secret.expose(),
            "fk-fixture-freebies-0001-aaaaaaaaaaaaaaaaaaaa"
        );
        assert_eq!(k.status, KeyStatus::Active);
        assert_eq!(k.disabled_by, None);
        assert_eq!(k.status_reason, None);
        assert_eq!(k.pool_group, "freebies");
        assert_eq!(k.notes, "Imported at 2025-10-12T05:20:00.000Z");
        assert_eq!(k.created_at, ms("2025-10-12T05:20:00.000Z"));
        assert_eq!(k.last_used_at, Some(ms("2025-10-14T09:15:30.250Z")));
        assert_eq!((k.requests, k.successes, k.failures), (57, 55, 2));
        assert_eq!((k.input_tokens, k.output_tokens), (0, 0));
        assert_eq!(k.cooldown_until, None);
        assert_eq!(
            k.last_test,
            Some(LastTest {
                at: ms("2025-10-12T05:21:00.000Z"),
                result: TestResult::Success,
                status: 200
            })
        );
    }

    #[test]
    fn fixture_disabled_banned_and_unknown_status() {
        let import = parse_node_pool(FIXTURE, NOW).unwrap();

        let disabled = key(&import, "key_1728700000002_f5g6h7i8j");
        assert_eq!(disabled.status, KeyStatus::Disabled);
        assert_eq!(disabled.disabled_by, Some(DisabledBy::Auto));
        assert_eq!(
            disabled.status_reason.as_deref(),
            Some("HTTP 401: Unauthorized")
        );
        assert_eq!(
            disabled.last_test.map(|t| (t.result, t.status)),
            Some((TestResult::Disabled, 0))
        );
        // Only usage_count present: successes = requests − error_count.
        assert_eq!(
            (disabled.requests, disabled.successes, disabled.failures),
            (10, 7, 3)
        );

        let banned = key(&import, "key_1728700000003_k9l0m1n2o");
        assert_eq!(banned.status, KeyStatus::Banned);
        assert_eq!(banned.disabled_by, None);
        assert_eq!(
            banned.status_reason.as_deref(),
            Some("Payment Required - No Credits")
        );
        assert_eq!(
            banned.status_changed_at,
            Some(ms("2025-10-13T11:00:00.000Z"))
        );
        assert_eq!(
            banned.last_test.map(|t| (t.result, t.status)),
            Some((TestResult::Banned, 0))
        );

        let untested = key(&import, "key_1728700000004_p3q4r5s6t");
        assert_eq!(untested.status, KeyStatus::Active);
        assert_eq!(untested.last_test, None);
        assert_eq!(untested.last_used_at, None);

        let paused = key(&import, "key_1728700000005_u7v8w9x0y");
        assert_eq!(paused.status, KeyStatus::Disabled);
        assert_eq!(paused.disabled_by, Some(DisabledBy::Auto));
        assert!(
            import
                .warnings
                .iter()
                .any(|w| w.contains("key_1728700000005_u7v8w9x0y") && w.contains("\"paused\""))
        );

        // Trimmed secret, unparseable created_at → now.
        let trimmed = key(&import, "key_1728700000008_j5k6l7m8n");
        assert_eq!(
            trimmed.secret.expose(),
            "fk-fixture-test-0008-hhhhhhhhhhhhhhhhhhhh"
        );
        assert_eq!(trimmed.created_at, NOW);
        assert_eq!(trimmed.pool_group, "test");
    }

    #[test]
    fn fixture_skips_name_ids_never_secrets() {
        let import = parse_node_pool(FIXTURE, NOW).unwrap();
        let all = import.warnings.join("\n");
        assert!(all.contains("key_1728700000006_z1a2b3c4d"), "{all}");
        assert!(all.contains("key_1728700000007_e5f6g7h8i"), "{all}");
        assert!(all.contains("key_1728700000009_o9p0q1r2s"), "{all}");
        assert!(
            all.contains("same key as key_1728700000001_a1b2c3d4e"),
            "{all}"
        );
        // No secret (or a piece of one) appears in any warning.
        for needle in ["fk-tiny", "fixture-freebies", "fk-has space", "fk-fixture"] {
            assert!(!all.contains(needle), "warning leaks {needle}: {all}");
        }
    }

    #[test]
    fn fixture_unknown_algorithm_becomes_round_robin() {
        let import = parse_node_pool(FIXTURE, NOW).unwrap();
        assert_eq!(import.algorithm.as_deref(), Some("round-robin"));
        assert!(
            import
                .warnings
                .iter()
                .any(|w| w.contains("\"quota-aware\"") && w.contains("round-robin"))
        );
    }

    #[test]
    fn known_algorithm_is_kept_and_missing_config_is_none() {
        let with = br#"{"keys":[],"config":{"algorithm":"least-used"}}"#;
        let import = parse_node_pool(with, NOW).unwrap();
        assert_eq!(import.algorithm.as_deref(), Some("least-used"));
        assert!(import.warnings.is_empty());
        let without = br#"{"keys":[]}"#;
        assert_eq!(parse_node_pool(without, NOW).unwrap().algorithm, None);
        for name in ["weighted-usage", "time-window"] {
            let json = format!(r#"{{"keys":[],"config":{{"algorithm":"{name}"}}}}"#);
            let import = parse_node_pool(json.as_bytes(), NOW).unwrap();
            assert_eq!(import.algorithm.as_deref(), Some("round-robin"), "{name}");
        }
    }

    #[test]
    fn defined_default_group_is_kept_as_given() {
        let json = br#"{"keys":[{"id":"key_1","key":"fk-abcdefgh12345678"}],
            "poolGroups":[{"id":"default","name":"Main","priority":5}]}"#;
        let import = parse_node_pool(json, NOW).unwrap();
        assert_eq!(import.groups.len(), 1);
        assert_eq!(import.groups[0].id, "default");
        assert_eq!(import.groups[0].priority, 5);
        assert_eq!(import.keys[0].pool_group, "default");
        // Missing status: disabled, automatically.
        assert_eq!(import.keys[0].status, KeyStatus::Disabled);
        assert_eq!(import.keys[0].disabled_by, Some(DisabledBy::Auto));
    }

    #[test]
    fn key_length_limits() {
        let ok8 = "a".repeat(8);
        let ok512 = "b".repeat(512);
        let bad7 = "c".repeat(7);
        let bad513 = "d".repeat(513);
        let json = serde_json::json!({"keys": [
            {"id": "k1", "key": ok8, "status": "active"},
            {"id": "k2", "key": ok512, "status": "active"},
            {"id": "k3", "key": bad7, "status": "active"},
            {"id": "k4", "key": bad513, "status": "active"},
            {"id": "k5", "key": "fk-ünïcode-key", "status": "active"},
            {"id": "k6", "key": 12345678, "status": "active"},
            "not an object",
        ]});
        let import = parse_node_pool(json.to_string().as_bytes(), NOW).unwrap();
        let ids: Vec<&str> = import.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["k1", "k2"]);
        assert_eq!(import.skipped, 5);
    }

    #[test]
    fn missing_and_repeated_ids_get_fresh_ones() {
        let json = br#"{"keys":[
            {"key":"fk-aaaaaaaaaaaa","status":"active"},
            {"id":"dup","key":"fk-bbbbbbbbbbbb","status":"active"},
            {"id":"dup","key":"fk-cccccccccccc","status":"active"}]}"#;
        let import = parse_node_pool(json, NOW).unwrap();
        assert_eq!(import.keys.len(), 3);
        assert!(import.keys[0].id.starts_with("key_"));
        assert_eq!(import.keys[1].id, "dup");
        assert!(import.keys[2].id.starts_with("key_"));
        assert_ne!(import.keys[0].id, import.keys[2].id);
        assert_eq!(import.warnings.len(), 2, "{:?}", import.warnings);
    }

    #[test]
    fn unusable_files_are_errors_that_say_what_to_do() {
        for (bytes, needle) in [
            (&b"{not json"[..], "not valid JSON"),
            (&b"[1,2]"[..], "must be a JSON object"),
            (&b"{\"poolGroups\":[]}"[..], "no \"keys\" array"),
            (&b"{\"keys\":{}}"[..], "no \"keys\" array"),
        ] {
            let err = parse_node_pool(bytes, NOW).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("fix or move data/key_pool.json"), "{err}");
        }
    }
}
