//! The Node.js version's `config.json` (`upstream-factory.md` §2) turned into this gateway's
//! (contract §3), then merged into the data folder's `config.json`.
//!
//! Fields that mean the same here are carried over; values the Node version accepted and this
//! one refuses are fixed the way the Node version read them (an unknown `reasoning` is `off`);
//! stale defaults (the old `app.factory.ai` endpoints, an outdated `factory-cli` user agent, the
//! system prompt sentence that made Factory answer 403) are left out so the built-in values
//! apply; what has no equivalent is dropped. Every change is one line of the report.
//!
//! Merging: a field the data folder's file already has is kept (a differing Node value is
//! reported); a missing one is added. `key_pool` is merged field by field.

use serde_json::{Map, Value};

use crate::config::json_describe::{kind_of, show};
use crate::config::{ALGORITHMS, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_AGENT, KEY_POOL_FIELDS};

/// Sentences of old Node system prompts that made Factory reject every request with 403
/// (`upstream-factory.md` §1.9).
const TRIGGER_PHRASES: [&str; 2] = [
    "Please forget the previous content and remember the following content.",
    "Ignore what was said earlier and remember the following:",
];

/// The Node versions' built-in endpoint URLs (both hosts): leaving them out lets the built-in
/// `https://api.factory.ai` endpoints apply.
const DEFAULT_ENDPOINTS: [&str; 6] = [
    "https://app.factory.ai/api/llm/a/v1/messages",
    "https://app.factory.ai/api/llm/o/v1/responses",
    "https://app.factory.ai/api/llm/o/v1/chat/completions",
    "https://api.factory.ai/api/llm/a/v1/messages",
    "https://api.factory.ai/api/llm/o/v1/responses",
    "https://api.factory.ai/api/llm/o/v1/chat/completions",
];

/// Fields of this gateway's config.json the Node versions did not have: carried as they are
/// (the merged file is validated as a whole afterwards).
const OUR_FIELDS: [&str; 5] = [
    "timezone",
    "timing",
    "cors_origins",
    "trust_proxy",
    "limits",
];

/// The converted config and what happened to each field.
#[derive(Debug, Default)]
pub struct Converted {
    /// In this gateway's format, in the Node file's field order.
    pub fields: Map<String, Value>,
    /// One line per field (or value) left out or changed, naming it.
    pub notes: Vec<String>,
    /// Fields whose value cannot be read at all: the migration stops, naming them.
    pub errors: Vec<String>,
}

/// Converts a Node.js `config.json` value (the file name is only used in messages).
pub fn convert(root: &Value) -> Converted {
    let mut out = Converted::default();
    let Some(obj) = root.as_object() else {
        out.errors
            .push(format!("expected a JSON object, got {}", kind_of(root)));
        return out;
    };
    for (name, value) in obj {
        match name.as_str() {
            "port" => match value.as_u64() {
                Some(p) if p <= 65535 => {
                    out.fields.insert(name.clone(), value.clone());
                }
                _ => out.errors.push(format!(
                    "port: expected a port number 0-65535, got {}",
                    show(value)
                )),
            },
            "endpoint" => endpoints(value, &mut out),
            "models" => models(value, &mut out),
            "system_prompt" => system_prompt(value, &mut out),
            "user_agent" => user_agent(value, &mut out),
            "dev_mode" | "trust_proxy" => match value {
                Value::Bool(_) => {
                    out.fields.insert(name.clone(), value.clone());
                }
                other => out.errors.push(format!(
                    "{name}: expected true or false, got {}",
                    show(other)
                )),
            },
            "model_redirects" => redirects(value, &mut out),
            "proxies" => proxies(value, &mut out),
            "reasoning_tokens" => reasoning_tokens(value, &mut out),
            "key_pool" => key_pool(value, &mut out),
            "limits" if is_node_limits(value) => out.notes.push(
                "limits (notes_max_length, max_json_log_size): not carried over; notes are limited to 1,000 characters and logs are not truncated by size here".into(),
            ),
            "balance_sync" => out.notes.push(
                "balance_sync: not carried over (the Node version never read it); the balance sync period is SYNC_INTERVAL_MINUTES or timing.balance_sync_interval_s".into(),
            ),
            n if OUR_FIELDS.contains(&n) => {
                out.fields.insert(name.clone(), value.clone());
            }
            other => out
                .notes
                .push(format!("{other}: unknown field, not carried over")),
        }
    }
    out
}

fn endpoints(value: &Value, out: &mut Converted) {
    let Some(items) = value.as_array() else {
        out.errors.push(format!(
            "endpoint: expected an array of {{name, base_url}}, got {}",
            kind_of(value)
        ));
        return;
    };
    let mut kept = Vec::new();
    let mut defaults = 0;
    for (i, item) in items.iter().enumerate() {
        let name = item.get("name").and_then(Value::as_str);
        let url = item.get("base_url").and_then(Value::as_str);
        let (Some(name), Some(url)) = (name, url) else {
            out.errors.push(format!(
                "endpoint[{i}]: expected {{\"name\": …, \"base_url\": …}} strings"
            ));
            continue;
        };
        if !["anthropic", "openai", "common"].contains(&name) {
            out.notes.push(format!(
                "endpoint[{i}] ({name:?}): this type is not supported here, not carried over"
            ));
            continue;
        }
        if DEFAULT_ENDPOINTS.contains(&url.trim_end_matches('/')) {
            defaults += 1;
            continue;
        }
        if reqwest::Url::parse(url).is_err() {
            out.errors.push(format!(
                "endpoint[{i}].base_url: expected a URL, got {url:?}"
            ));
            continue;
        }
        kept.push(serde_json::json!({"name": name, "base_url": url}));
    }
    if defaults > 0 {
        out.notes.push(format!(
            "endpoint: {defaults} built-in Factory URL(s) of the Node version left out: the built-in endpoints (https://api.factory.ai, or FACTORY_BASE_URL) apply"
        ));
    }
    if !kept.is_empty() {
        out.fields.insert("endpoint".into(), Value::Array(kept));
    }
}

fn models(value: &Value, out: &mut Converted) {
    let Some(items) = value.as_array() else {
        out.errors
            .push(format!("models: expected an array, got {}", kind_of(value)));
        return;
    };
    let mut kept: Vec<Value> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(m) = item.as_object() else {
            out.errors.push(format!(
                "models[{i}]: expected an object, got {}",
                kind_of(item)
            ));
            continue;
        };
        let id = match m.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            other => {
                out.errors.push(format!(
                    "models[{i}].id: expected a model id string, got {}",
                    other.map_or("nothing".to_string(), show)
                ));
                continue;
            }
        };
        let kind_name = m.get("type").and_then(Value::as_str).unwrap_or("");
        if !["anthropic", "openai", "common"].contains(&kind_name) {
            out.notes.push(format!(
                "models[{i}] ({id}): type {kind_name:?} is not supported here (anthropic, openai, common), not carried over"
            ));
            continue;
        }
        if ids.contains(&id) {
            out.notes.push(format!(
                "models[{i}] ({id}): repeats an earlier model id, not carried over"
            ));
            continue;
        }
        let mut model = Map::new();
        model.insert(
            "name".into(),
            match m.get("name") {
                Some(Value::String(s)) => Value::String(s.clone()),
                _ => Value::String(id.clone()),
            },
        );
        model.insert("id".into(), Value::String(id.clone()));
        model.insert("type".into(), Value::String(kind_name.to_string()));
        let raw = m.get("reasoning").and_then(Value::as_str).map(str::trim);
        let level = match raw.map(str::to_ascii_lowercase).as_deref() {
            Some(l @ ("auto" | "off" | "low" | "medium" | "high")) => l.to_string(),
            Some("xhigh") => {
                out.notes.push(format!(
                    "models[{i}] ({id}).reasoning: \"xhigh\" is not supported here, carried over as \"high\""
                ));
                "high".to_string()
            }
            None if m.get("reasoning").is_none_or(Value::is_null) => "off".to_string(),
            _ => {
                out.notes.push(format!(
                    "models[{i}] ({id}).reasoning: {} is not a level; the Node version read it as \"off\", and so it is carried over",
                    m.get("reasoning").map_or("nothing".into(), show)
                ));
                "off".to_string()
            }
        };
        model.insert("reasoning".into(), Value::String(level));
        for (field, v) in m {
            match field.as_str() {
                "name" | "id" | "type" | "reasoning" => {}
                "provider" => match v {
                    Value::String(s) if !s.trim().is_empty() => {
                        model.insert("provider".into(), v.clone());
                    }
                    _ => out.notes.push(format!(
                        "models[{i}] ({id}).provider: not a name, not carried over"
                    )),
                },
                "default_max_tokens" | "max_output_tokens" => {
                    model.insert(field.clone(), v.clone());
                }
                "fast" => out.notes.push(format!(
                    "models[{i}] ({id}).fast: fast mode is not supported here, not carried over"
                )),
                other => out.notes.push(format!(
                    "models[{i}] ({id}).{other}: unknown field, not carried over"
                )),
            }
        }
        ids.push(id);
        kept.push(Value::Object(model));
    }
    if kept.is_empty() {
        out.notes
            .push("models: none to carry over; the built-in model list applies".into());
    } else {
        out.fields.insert("models".into(), Value::Array(kept));
    }
}

fn system_prompt(value: &Value, out: &mut Converted) {
    let Some(prompt) = value.as_str() else {
        out.errors.push(format!(
            "system_prompt: expected a string, got {}",
            show(value)
        ));
        return;
    };
    let mut text = prompt.to_string();
    for phrase in TRIGGER_PHRASES {
        if text.contains(phrase) {
            text = text.replace(phrase, "");
            out.notes.push(format!(
                "system_prompt: the sentence {phrase:?} was removed (Factory answers 403 to prompts holding it)"
            ));
        }
    }
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    if text.trim() == DEFAULT_SYSTEM_PROMPT.trim() {
        if text != prompt {
            out.notes
                .push("system_prompt: what is left is the built-in prompt, which applies".into());
        }
        return;
    }
    out.fields
        .insert("system_prompt".into(), Value::String(text));
}

/// `factory-cli/X.Y.Z` as a comparable version.
fn cli_version(ua: &str) -> Option<(u64, u64, u64)> {
    let v = ua.trim().strip_prefix("factory-cli/")?;
    let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
    let out = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(out)
}

fn user_agent(value: &Value, out: &mut Converted) {
    let Some(ua) = value.as_str() else {
        out.errors.push(format!(
            "user_agent: expected a string, got {}",
            show(value)
        ));
        return;
    };
    match (cli_version(ua), cli_version(DEFAULT_USER_AGENT)) {
        (Some(old), Some(ours)) if old <= ours => out.notes.push(format!(
            "user_agent: {ua:?} left out; the built-in {DEFAULT_USER_AGENT:?} applies"
        )),
        _ => {
            out.fields.insert("user_agent".into(), value.clone());
        }
    }
}

fn redirects(value: &Value, out: &mut Converted) {
    let Some(map) = value.as_object() else {
        out.errors.push(format!(
            "model_redirects: expected an object, got {}",
            kind_of(value)
        ));
        return;
    };
    for (alias, target) in map {
        if target.as_str().is_none_or(|t| t.trim().is_empty()) {
            out.errors.push(format!(
                "model_redirects.{alias}: expected a model id string, got {}",
                show(target)
            ));
        }
    }
    out.fields.insert("model_redirects".into(), value.clone());
}

fn proxies(value: &Value, out: &mut Converted) {
    let Some(items) = value.as_array() else {
        out.errors.push(format!(
            "proxies: expected an array, got {}",
            kind_of(value)
        ));
        return;
    };
    let mut kept = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let url = match item {
            Value::String(s) => Some(s.as_str()),
            Value::Object(p) => p.get("url").and_then(Value::as_str),
            _ => None,
        };
        match url {
            Some(u) if reqwest::Url::parse(u).is_ok() => {
                kept.push(serde_json::json!({"url": u}));
            }
            _ => out.errors.push(format!(
                "proxies[{i}].url: expected a proxy URL such as \"http://host:8080\""
            )),
        }
    }
    if !kept.is_empty() {
        out.fields.insert("proxies".into(), Value::Array(kept));
    }
}

fn reasoning_tokens(value: &Value, out: &mut Converted) {
    let Some(o) = value.as_object() else {
        out.errors.push(format!(
            "reasoning_tokens: expected an object, got {}",
            kind_of(value)
        ));
        return;
    };
    let mut kept = Map::new();
    for (level, v) in o {
        match (level.as_str(), v.as_u64()) {
            ("low" | "medium" | "high", Some(n)) if (1024..=u64::from(u32::MAX)).contains(&n) => {
                kept.insert(level.clone(), v.clone());
            }
            ("low" | "medium" | "high", _) => out.notes.push(format!(
                "reasoning_tokens.{level}: {} is below 1024 or not a whole number, not carried over",
                show(v)
            )),
            (other, _) => out.notes.push(format!(
                "reasoning_tokens.{other}: unknown level, not carried over"
            )),
        }
    }
    if !kept.is_empty() {
        out.fields
            .insert("reasoning_tokens".into(), Value::Object(kept));
    }
}

/// The Node `limits` object (as opposed to this gateway's `limits`).
fn is_node_limits(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("notes_max_length") || o.contains_key("max_json_log_size"))
}

/// The Node key-pool settings (camelCase, `upstream-factory.md` §5.9) into `key_pool`.
fn key_pool(value: &Value, out: &mut Converted) {
    let Some(o) = value.as_object() else {
        out.errors.push(format!(
            "key_pool: expected an object, got {}",
            kind_of(value)
        ));
        return;
    };
    let mut kp = Map::new();
    for (name, v) in o {
        match name.as_str() {
            "algorithm" => match algorithm(v) {
                Ok(a) => {
                    kp.insert("algorithm".into(), Value::String(a));
                }
                Err(note) => {
                    out.notes.push(format!("key_pool.{note}"));
                    kp.insert("algorithm".into(), Value::String("round-robin".into()));
                }
            },
            "performance" => {
                if let Some(n) = v.get("concurrentLimit").and_then(Value::as_u64) {
                    // The Node batch test ran min(concurrentLimit, 50) keys at a time.
                    let c = n.clamp(1, 50);
                    kp.insert("test_concurrency".into(), Value::from(c));
                    out.notes.push(format!(
                        "key_pool.performance.concurrentLimit ({n}) carried over as key_pool.test_concurrency {c} (how many keys a test-all checks at a time); requestTimeout is not carried over"
                    ));
                }
            }
            "multiTier" => {
                if v.get("strictMode").and_then(Value::as_bool) == Some(true) {
                    out.notes.push(
                        "key_pool.multiTier.strictMode: the Node version never enforced it (it always fell back to the next group); set key_pool.auto_fallback to false to get it here".into(),
                    );
                }
                if v.get("enabled").and_then(Value::as_bool) == Some(false) {
                    out.notes.push(
                        "key_pool.multiTier.enabled: false: pool groups always take effect here; give every group the same priority to use all keys alike".into(),
                    );
                }
            }
            "retry" | "autoBan" | "retry_delay_ms" | "request_timeout_ms"
            | "batch_test_interval_ms" | "cache_ttl_ms" | "quotaLimits" | "weights"
            | "timeWindowHours" => out.notes.push(format!(
                "key_pool.{name}: not carried over (the Node version did not apply it to traffic; failover, bans and cooldowns are automatic here, see key_pool.max_attempts and the cooldown settings)"
            )),
            ours if KEY_POOL_FIELDS.contains(&ours) => {
                kp.insert(name.clone(), v.clone());
            }
            other => out.notes.push(format!(
                "key_pool.{other}: unknown field, not carried over"
            )),
        }
    }
    if !kp.is_empty() {
        out.fields.insert("key_pool".into(), Value::Object(kp));
    }
}

/// An algorithm name this build knows, or the note explaining the replacement.
pub fn algorithm(v: &Value) -> Result<String, String> {
    match v.as_str().map(str::trim) {
        Some(a) if ALGORITHMS.contains(&a) => Ok(a.to_string()),
        _ => Err(format!(
            "algorithm: {} is not supported here, \"round-robin\" is used",
            show(v)
        )),
    }
}

/// The outcome of merging converted fields into the data folder's config.json.
#[derive(Debug, Default)]
pub struct Merged {
    pub value: Map<String, Value>,
    /// Fields added from the Node config (`key_pool.x` for sub-fields).
    pub added: Vec<String>,
    /// Fields the data folder already had with another value (kept), with a note each.
    pub kept: Vec<String>,
}

/// Merges `node` into `target`: missing fields are added, present ones kept.
pub fn merge(target: &Map<String, Value>, node: &Map<String, Value>) -> Merged {
    let mut m = Merged {
        value: target.clone(),
        ..Merged::default()
    };
    for (name, v) in node {
        match m.value.get_mut(name) {
            None => {
                m.value.insert(name.clone(), v.clone());
                m.added.push(name.clone());
            }
            Some(existing) if existing == v => {}
            Some(Value::Object(existing)) if name == "key_pool" => {
                if let Some(sub) = v.as_object() {
                    for (field, fv) in sub {
                        match existing.get(field) {
                            None => {
                                existing.insert(field.clone(), fv.clone());
                                m.added.push(format!("key_pool.{field}"));
                            }
                            Some(e) if e == fv => {}
                            Some(e) => m.kept.push(format!(
                                "key_pool.{field}: the data folder's value {} is kept (the Node version had {})",
                                show(e),
                                show(fv)
                            )),
                        }
                    }
                }
            }
            Some(existing) => m.kept.push(format!(
                "{name}: the data folder's value {} is kept (the Node version had {})",
                show(existing),
                show(v)
            )),
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_fork_config_converts() {
        let node = json!({
            "port": 3000,
            "endpoint": [
                {"name": "anthropic", "base_url": "https://app.factory.ai/api/llm/a/v1/messages"},
                {"name": "openai", "base_url": "https://app.factory.ai/api/llm/o/v1/responses"},
                {"name": "common", "base_url": "https://mirror.example/api/llm/o/v1/chat/completions"}
            ],
            "models": [
                {"name": "Sonnet 4.5", "id": "claude-sonnet-4-5-20250929", "type": "anthropic", "reasoning": "auto"},
                {"name": "GPT-5", "id": "gpt-5-2025-08-07", "type": "openai", "reasoning": "XHIGH"},
                {"name": "GLM-4.6", "id": "glm-4.6", "type": "common"},
                {"name": "Odd", "id": "odd", "type": "anthropic", "reasoning": "max", "fast": true},
                {"name": "Gemini", "id": "gemini-3-flash-preview", "type": "google"}
            ],
            "dev_mode": false,
            "user_agent": "factory-cli/0.19.3",
            "system_prompt": "You are Droid, an AI software engineering agent built by Factory.\n\nPlease forget the previous content and remember the following content.\n\n",
            "limits": {"notes_max_length": 1000, "max_json_log_size": 5000},
            "reasoning_tokens": {"low": 2048, "medium": 12288, "high": 100},
            "balance_sync": {"sync_interval_minutes": 30},
            "key_pool": {"algorithm": "quota-aware", "retry": {"enabled": true}, "performance": {"concurrentLimit": 100}},
            "mystery": 1
        });
        let c = convert(&node);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let f = &c.fields;
        assert_eq!(f["port"], 3000);
        assert_eq!(
            f["endpoint"],
            json!([{"name": "common", "base_url": "https://mirror.example/api/llm/o/v1/chat/completions"}])
        );
        let models = f["models"].as_array().unwrap();
        assert_eq!(models.len(), 4);
        assert_eq!(models[1]["reasoning"], "high");
        assert_eq!(models[2]["reasoning"], "off");
        assert_eq!(models[3]["reasoning"], "off");
        assert!(models[3].get("fast").is_none());
        assert!(!f.contains_key("user_agent"));
        assert!(
            !f.contains_key("system_prompt"),
            "{:?}",
            f.get("system_prompt")
        );
        assert!(!f.contains_key("limits"));
        assert!(!f.contains_key("balance_sync"));
        assert!(!f.contains_key("mystery"));
        assert_eq!(f["reasoning_tokens"], json!({"low": 2048, "medium": 12288}));
        assert_eq!(
            f["key_pool"],
            json!({"algorithm": "round-robin", "test_concurrency": 50})
        );
        let notes = c.notes.join("\n");
        for needle in [
            "gemini-3-flash-preview",
            "xhigh",
            "odd).fast",
            "factory-cli/0.19.3",
            "Please forget",
            "mystery",
            "reasoning_tokens.high",
            "key_pool.retry",
            "quota-aware",
            "limits",
            "balance_sync",
        ] {
            assert!(notes.contains(needle), "missing {needle}: {notes}");
        }
        // The converted file reads without errors and is a fixed point.
        let parsed = crate::config::parse_value(&Value::Object(c.fields.clone()));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let again = convert(&Value::Object(c.fields.clone()));
        assert_eq!(again.fields, c.fields);
    }

    #[test]
    fn unreadable_values_are_errors_naming_the_field() {
        let c = convert(&json!({"port": "three thousand", "models": [{"type": "anthropic"}]}));
        let all = c.errors.join("\n");
        assert!(all.contains("port:"), "{all}");
        assert!(all.contains("models[0].id"), "{all}");
        assert!(!convert(&json!([1])).errors.is_empty());
    }

    #[test]
    fn custom_prompt_and_newer_agent_are_kept() {
        let c = convert(&json!({
            "system_prompt": "Be brief.",
            "user_agent": "factory-cli/9.0.0"
        }));
        assert_eq!(c.fields["system_prompt"], "Be brief.");
        assert_eq!(c.fields["user_agent"], "factory-cli/9.0.0");
    }

    #[test]
    fn merge_adds_missing_and_keeps_present() {
        let target = json!({"port": 3001, "key_pool": {"algorithm": "random"}});
        let node = json!({"port": 3000, "dev_mode": true,
            "key_pool": {"algorithm": "least-used", "test_concurrency": 5}});
        let m = merge(target.as_object().unwrap(), node.as_object().unwrap());
        assert_eq!(m.value["port"], 3001);
        assert_eq!(m.value["dev_mode"], true);
        assert_eq!(
            m.value["key_pool"],
            json!({"algorithm": "random", "test_concurrency": 5})
        );
        assert_eq!(m.added, ["dev_mode", "key_pool.test_concurrency"]);
        assert_eq!(m.kept.len(), 2, "{:?}", m.kept);
        let again = merge(&m.value, node.as_object().unwrap());
        assert!(again.added.is_empty());
    }
}
