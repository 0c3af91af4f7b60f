//! `data/config.json`: the seed-compatible file (contract §3), read field by field so that each
//! error names its field and value and each unknown field is warned about.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::json_describe::{kind_of, show};
use super::{
    ALGORITHMS, ConfigError, KeyPoolSettings, Limits, Model, ModelKind, ReasoningBudgets,
    ReasoningLevel, Timing, exposure,
};

/// What config.json said, before the environment is applied.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub port: Option<u16>,
    pub models: Vec<Model>,
    pub system_prompt: Option<String>,
    pub user_agent: Option<String>,
    pub dev_mode: Option<bool>,
    pub timezone: Option<String>,
    pub model_redirects: BTreeMap<String, String>,
    pub endpoints: Vec<(ModelKind, String)>,
    pub proxies: Vec<String>,
    pub reasoning_tokens: Option<ReasoningBudgets>,
    pub key_pool: Option<KeyPoolSettings>,
    pub timing: Option<Timing>,
    pub limits: Option<Limits>,
    /// `cors_origins`, validated and canonical.
    pub cors_origins: Option<Vec<String>>,
    pub trust_proxy: Option<bool>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

const TOP_FIELDS: &[&str] = &[
    "port",
    "models",
    "system_prompt",
    "user_agent",
    "dev_mode",
    "timezone",
    "model_redirects",
    "endpoint",
    "proxies",
    "reasoning_tokens",
    "key_pool",
    "timing",
    "limits",
    "cors_origins",
    "trust_proxy",
    // Seed fields that are accepted and have no effect here.
    "balance_sync",
];

/// Parses config.json bytes. Syntax errors fail at once; field errors are collected in
/// [`ConfigFile::errors`] and reported together by `Settings::from_sources`.
pub fn parse_config_file(path: &Path, bytes: &[u8]) -> Result<ConfigFile, ConfigError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::Syntax {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(parse_value(&value))
}

/// Reads a parsed config value.
pub fn parse_value(value: &Value) -> ConfigFile {
    let mut out = ConfigFile::default();
    let Some(obj) = value.as_object() else {
        out.errors.push(format!(
            "config.json: expected a JSON object, got {}",
            kind_of(value)
        ));
        return out;
    };
    let mut r = Reader {
        errors: &mut out.errors,
        warnings: &mut out.warnings,
    };
    r.unknown("", obj, TOP_FIELDS);

    out.port = r.u64_in(obj, "port", "port", 0, 65535).map(|p| p as u16);
    out.system_prompt = r.string(obj, "system_prompt", "system_prompt");
    out.user_agent = r.string(obj, "user_agent", "user_agent");
    out.dev_mode = r.bool(obj, "dev_mode", "dev_mode");
    out.timezone = r.string(obj, "timezone", "timezone");
    if let Some(tz) = &out.timezone
        && tz.trim().is_empty()
    {
        r.errors.push(
            "timezone: expected an IANA zone name such as \"Asia/Shanghai\", got \"\"".into(),
        );
    }

    if let Some(v) = obj.get("models") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(m) = r.model(i, item) {
                        if out.models.iter().any(|o| o.id == m.id) {
                            r.errors
                                .push(format!("models[{i}].id: duplicate model id {:?}", m.id));
                        } else {
                            out.models.push(m);
                        }
                    }
                }
            }
            None => r
                .errors
                .push(format!("models: expected an array, got {}", kind_of(v))),
        }
    }

    if let Some(v) = obj.get("model_redirects") {
        match v.as_object() {
            Some(map) => {
                for (k, target) in map {
                    match target.as_str() {
                        Some(t) if !t.trim().is_empty() => {
                            out.model_redirects.insert(k.clone(), t.trim().to_string());
                        }
                        _ => r.errors.push(format!(
                            "model_redirects.{k}: expected a model id string, got {}",
                            show(target)
                        )),
                    }
                }
            }
            None => r.errors.push(format!(
                "model_redirects: expected an object, got {}",
                kind_of(v)
            )),
        }
    }

    if let Some(v) = obj.get("endpoint") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("endpoint[{i}]");
                    let Some(e) = item.as_object() else {
                        r.errors
                            .push(format!("{path}: expected an object, got {}", kind_of(item)));
                        continue;
                    };
                    r.unknown(&path, e, &["name", "base_url"]);
                    let name = r.string(e, "name", &format!("{path}.name"));
                    let url = r.string(e, "base_url", &format!("{path}.base_url"));
                    match (name, url) {
                        (Some(name), Some(url)) => match ModelKind::parse(&name) {
                            Some(kind) => {
                                if reqwest::Url::parse(&url).is_err() {
                                    r.errors.push(format!(
                                        "{path}.base_url: expected a URL, got {url:?}"
                                    ));
                                } else {
                                    out.endpoints.push((kind, url));
                                }
                            }
                            None => r.warnings.push(format!(
                                "{path}.name: unknown endpoint type {name:?} ignored (expected anthropic|openai|common)"
                            )),
                        },
                        _ => r
                            .errors
                            .push(format!("{path}: needs both \"name\" and \"base_url\"")),
                    }
                }
            }
            None => r
                .errors
                .push(format!("endpoint: expected an array, got {}", kind_of(v))),
        }
    }

    if let Some(v) = obj.get("proxies") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("proxies[{i}]");
                    let url = match item {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(p) => {
                            r.unknown(&path, p, &["url", "name"]);
                            r.string(p, "url", &format!("{path}.url"))
                        }
                        other => {
                            r.errors.push(format!(
                                "{path}: expected {{\"url\": …}}, got {}",
                                kind_of(other)
                            ));
                            None
                        }
                    };
                    if let Some(url) = url {
                        if reqwest::Url::parse(&url).is_ok() {
                            out.proxies.push(url);
                        } else {
                            r.errors
                                .push(format!("{path}.url: expected a proxy URL, got {url:?}"));
                        }
                    }
                }
            }
            None => r
                .errors
                .push(format!("proxies: expected an array, got {}", kind_of(v))),
        }
    }

    if let Some(v) = obj.get("reasoning_tokens")
        && let Some(o) = r.object(v, "reasoning_tokens")
    {
        r.unknown("reasoning_tokens", o, &["low", "medium", "high"]);
        let mut b = ReasoningBudgets::default();
        for (name, slot) in [
            ("low", &mut b.low),
            ("medium", &mut b.medium),
            ("high", &mut b.high),
        ] {
            if let Some(n) = r.u64_in(
                o,
                name,
                &format!("reasoning_tokens.{name}"),
                1024,
                u32::MAX as u64,
            ) {
                *slot = n as u32;
            }
        }
        out.reasoning_tokens = Some(b);
    }

    if let Some(v) = obj.get("key_pool")
        && let Some(o) = r.object(v, "key_pool")
    {
        let (kp, errs) = key_pool_from(o, KeyPoolSettings::default());
        r.errors.extend(errs.errors);
        r.warnings.extend(errs.warnings);
        out.key_pool = Some(kp);
    }

    if let Some(v) = obj.get("timing")
        && let Some(o) = r.object(v, "timing")
    {
        let fields = [
            "connect_timeout_s",
            "idle_read_timeout_s",
            "shutdown_grace_s",
            "refresh_interval_s",
            "sse_keepalive_s",
            "balance_sync_interval_s",
            "header_read_timeout_s",
            "body_read_timeout_s",
            "idle_keepalive_s",
        ];
        r.unknown("timing", o, &fields);
        let mut t = Timing::default();
        let max = 365 * 24 * 3600;
        if let Some(n) = r.u64_in(o, "connect_timeout_s", "timing.connect_timeout_s", 1, max) {
            t.connect_timeout_s = n;
        }
        if let Some(n) = r.u64_in(
            o,
            "idle_read_timeout_s",
            "timing.idle_read_timeout_s",
            1,
            max,
        ) {
            t.idle_read_timeout_s = n;
        }
        if let Some(n) = r.u64_in(o, "shutdown_grace_s", "timing.shutdown_grace_s", 0, max) {
            t.shutdown_grace_s = n;
        }
        if let Some(n) = r.u64_in(o, "refresh_interval_s", "timing.refresh_interval_s", 1, max) {
            t.refresh_interval_s = n;
        }
        if let Some(n) = r.u64_in(o, "sse_keepalive_s", "timing.sse_keepalive_s", 1, max) {
            t.sse_keepalive_s = n;
        }
        if let Some(n) = r.u64_in(
            o,
            "balance_sync_interval_s",
            "timing.balance_sync_interval_s",
            1,
            max,
        ) {
            t.balance_sync_interval_s = Some(n);
        }
        for (name, slot) in [
            ("header_read_timeout_s", &mut t.header_read_timeout_s),
            ("body_read_timeout_s", &mut t.body_read_timeout_s),
            ("idle_keepalive_s", &mut t.idle_keepalive_s),
        ] {
            if let Some(n) = r.u64_in(o, name, &format!("timing.{name}"), 1, max) {
                *slot = n;
            }
        }
        out.timing = Some(t);
    }

    if let Some(v) = obj.get("limits")
        && let Some(o) = r.object(v, "limits")
    {
        r.unknown(
            "limits",
            o,
            &["max_connections", "max_inflight_body_mb", "max_json_values"],
        );
        let mut l = Limits::default();
        if let Some(n) = r.u64_in(o, "max_connections", "limits.max_connections", 1, 1_000_000) {
            l.max_connections = n as u32;
        }
        if let Some(n) = r.u64_in(
            o,
            "max_inflight_body_mb",
            "limits.max_inflight_body_mb",
            1,
            1 << 20,
        ) {
            l.max_inflight_body_mb = n;
        }
        let (min, max) = exposure::MAX_JSON_VALUES_RANGE;
        if let Some(n) = r.u64_in(o, "max_json_values", "limits.max_json_values", min, max) {
            l.max_json_values = n;
        }
        out.limits = Some(l);
    }

    if let Some(v) = obj.get("cors_origins") {
        match v {
            Value::Null => {}
            Value::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                let mut all_strings = true;
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => values.push((i, s)),
                        None => {
                            all_strings = false;
                            r.errors.push(format!(
                                "cors_origins[{i}]: expected an origin string, got {}",
                                show(item)
                            ));
                        }
                    }
                }
                let list = exposure::origins("cors_origins", values, r.errors);
                out.cors_origins = list.filter(|_| all_strings);
            }
            other => r.errors.push(format!(
                "cors_origins: expected an array of origins, got {}",
                kind_of(other)
            )),
        }
    }
    out.trust_proxy = r.bool(obj, "trust_proxy", "trust_proxy");

    for ignored in ["balance_sync"] {
        if obj.contains_key(ignored) {
            out.warnings.push(format!(
                "{ignored}: accepted for compatibility with the Node.js version and ignored"
            ));
        }
    }
    out
}

/// Findings of one read.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// The field names of `key_pool` (config.json and the admin API use the same names).
pub const KEY_POOL_FIELDS: [&str; 12] = [
    "algorithm",
    "max_attempts",
    "rate_limit_cooldown_s",
    "rate_limit_cooldown_max_s",
    "failure_threshold",
    "failure_window_s",
    "failure_cooldown_s",
    "unauthorized_threshold",
    "auto_fallback",
    "test_concurrency",
    "sticky_sessions",
    "sticky_ttl_s",
];

/// Applies a `key_pool` object (config.json or a partial admin update) over `base`.
pub fn key_pool_from(o: &Map<String, Value>, base: KeyPoolSettings) -> (KeyPoolSettings, Findings) {
    let mut f = Findings::default();
    let mut kp = base;
    {
        let mut r = Reader {
            errors: &mut f.errors,
            warnings: &mut f.warnings,
        };
        r.unknown("key_pool", o, &KEY_POOL_FIELDS);
        if let Some(a) = r.string(o, "algorithm", "key_pool.algorithm") {
            if ALGORITHMS.contains(&a.as_str()) {
                kp.algorithm = a;
            } else {
                r.errors.push(format!(
                    "key_pool.algorithm: expected {}, got {a:?}",
                    ALGORITHMS.join("|")
                ));
            }
        }
        let day = 24 * 3600 * 30;
        macro_rules! num {
            ($field:ident, $min:expr, $max:expr, $t:ty) => {
                if let Some(n) = r.u64_in(
                    o,
                    stringify!($field),
                    concat!("key_pool.", stringify!($field)),
                    $min,
                    $max,
                ) {
                    kp.$field = n as $t;
                }
            };
        }
        num!(max_attempts, 1, 20, u32);
        num!(rate_limit_cooldown_s, 1, day, u64);
        num!(rate_limit_cooldown_max_s, 1, day, u64);
        num!(failure_threshold, 1, 10_000, u32);
        num!(failure_window_s, 1, day, u64);
        num!(failure_cooldown_s, 1, day, u64);
        num!(unauthorized_threshold, 1, 10_000, u32);
        num!(test_concurrency, 1, 100, u32);
        num!(sticky_ttl_s, 1, 7 * 24 * 3600, u64);
        if let Some(b) = r.bool(o, "auto_fallback", "key_pool.auto_fallback") {
            kp.auto_fallback = b;
        }
        if let Some(b) = r.bool(o, "sticky_sessions", "key_pool.sticky_sessions") {
            kp.sticky_sessions = b;
        }
    }
    if kp.rate_limit_cooldown_max_s < kp.rate_limit_cooldown_s {
        f.errors.push(format!(
            "key_pool.rate_limit_cooldown_max_s: must be at least rate_limit_cooldown_s ({}), got {}",
            kp.rate_limit_cooldown_s, kp.rate_limit_cooldown_max_s
        ));
    }
    (kp, f)
}

struct Reader<'a> {
    errors: &'a mut Vec<String>,
    warnings: &'a mut Vec<String>,
}

impl Reader<'_> {
    fn unknown(&mut self, path: &str, obj: &Map<String, Value>, known: &[&str]) {
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                let full = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                self.warnings
                    .push(format!("{full}: unknown field in config.json, ignored"));
            }
        }
    }

    fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match v.as_object() {
            Some(o) => Some(o),
            None => {
                self.errors
                    .push(format!("{path}: expected an object, got {}", kind_of(v)));
                None
            }
        }
    }

    fn string(&mut self, o: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.errors
                    .push(format!("{path}: expected a string, got {}", show(other)));
                None
            }
        }
    }

    fn bool(&mut self, o: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.errors.push(format!(
                    "{path}: expected true or false, got {}",
                    show(other)
                ));
                None
            }
        }
    }

    fn u64_in(
        &mut self,
        o: &Map<String, Value>,
        key: &str,
        path: &str,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.errors.push(format!(
                        "{path}: expected a whole number from {min} to {max}, got {}",
                        show(v)
                    ));
                    None
                }
            },
        }
    }

    fn model(&mut self, i: usize, v: &Value) -> Option<Model> {
        let path = format!("models[{i}]");
        let Some(o) = v.as_object() else {
            self.errors
                .push(format!("{path}: expected an object, got {}", kind_of(v)));
            return None;
        };
        self.unknown(
            &path,
            o,
            &[
                "name",
                "id",
                "type",
                "reasoning",
                "provider",
                "default_max_tokens",
                "max_output_tokens",
                "fast",
            ],
        );
        let id = self.string(o, "id", &format!("{path}.id"));
        let id = match id {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            Some(_) => {
                self.errors.push(format!("{path}.id: must not be empty"));
                return None;
            }
            None => {
                self.errors.push(format!("{path}.id: missing"));
                return None;
            }
        };
        let kind = match self.string(o, "type", &format!("{path}.type")) {
            Some(t) => match ModelKind::parse(&t) {
                Some(k) => k,
                None => {
                    self.errors.push(format!(
                        "{path}.type: expected anthropic|openai|common, got {t:?}"
                    ));
                    return None;
                }
            },
            None => {
                self.errors.push(format!(
                    "{path}.type: missing (expected anthropic|openai|common)"
                ));
                return None;
            }
        };
        let reasoning = match self.string(o, "reasoning", &format!("{path}.reasoning")) {
            Some(r) => match ReasoningLevel::parse(&r) {
                Some(l) => l,
                None => {
                    self.errors.push(format!(
                        "{path}.reasoning: expected auto|off|low|medium|high, got {r:?}"
                    ));
                    return None;
                }
            },
            None => ReasoningLevel::Off,
        };
        let name = self
            .string(o, "name", &format!("{path}.name"))
            .unwrap_or_else(|| id.clone());
        let provider = self
            .string(o, "provider", &format!("{path}.provider"))
            .filter(|p| !p.trim().is_empty());
        let default_max_tokens = self
            .u64_in(
                o,
                "default_max_tokens",
                &format!("{path}.default_max_tokens"),
                1,
                10_000_000,
            )
            .map(|n| n as u32)
            .unwrap_or(4096);
        let max_output_tokens = self
            .u64_in(
                o,
                "max_output_tokens",
                &format!("{path}.max_output_tokens"),
                16,
                10_000_000,
            )
            .map(|n| n as u32)
            .unwrap_or(kind.default_max_output_tokens());
        if o.contains_key("fast") {
            self.warnings
                .push(format!("{path}.fast: fast mode is not supported, ignored"));
        }
        Some(Model {
            id,
            name,
            kind,
            reasoning,
            provider,
            default_max_tokens,
            max_output_tokens,
        })
    }
}
