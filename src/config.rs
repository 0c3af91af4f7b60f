//! Configuration: built-in defaults, `data/config.json`, stored admin settings, environment.
//!
//! Precedence is env > settings stored through the admin API > config.json > defaults, except
//! `TZ`, which loses to config `timezone` (contract §2, §3). Nothing outside this module reads
//! the environment or the config file: everything else receives a validated [`Settings`].
//!
//! Validation collects every problem and names the field and value
//! (`models[2].reasoning: expected auto|off|low|medium|high, got "hgih"`); unknown fields produce
//! warnings, not errors.

mod exposure;
mod file;
pub(crate) mod json_describe;
mod redacted;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

pub use exposure::{
    ESCAPES_PER_VALUE, Limits, MAX_JSON_VALUES_RANGE, MIN_ADMIN_KEY_CHARS, PLACEHOLDER_ADMIN_KEYS,
    admin_key_weakness, normalize_origin,
};
pub use file::{
    ConfigFile, Findings, KEY_POOL_FIELDS, key_pool_from, parse_config_file, parse_value,
};
pub use redacted::Redacted;

/// Default origin of every Factory call.
pub const DEFAULT_FACTORY_BASE_URL: &str = "https://api.factory.ai";
/// Default origin of the WorkOS refresh call.
pub const DEFAULT_WORKOS_BASE_URL: &str = "https://api.workos.com";
/// Default system prompt (the original project's text, without the phrases that caused 403s).
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are Droid, an AI software engineering agent built by Factory.\n\n";
/// Default user agent sent upstream.
pub const DEFAULT_USER_AGENT: &str = "factory-cli/0.85.0";
/// Largest accepted request body (contract §6).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// A snapshot of environment variables: the process environment plus `.env` (which never
/// overrides a real variable). Tests build one by hand, so no test touches the process env.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment, with `.env` from the working directory underneath it.
    pub fn from_process() -> Self {
        let process = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string())));
        Env::layered(std::path::Path::new(".env"), process)
    }

    /// `real` variables over the ones of a dotenv file (a missing file adds nothing; a variable
    /// of the file never overrides a real one).
    pub fn layered(dotenv: &Path, real: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        if let Ok(iter) = dotenvy::from_path_iter(dotenv) {
            for (k, v) in iter.flatten() {
                vars.insert(k, v);
            }
        }
        vars.extend(real);
        Env { vars }
    }

    /// An environment made of exactly these pairs.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(key.into(), value.into());
    }

    /// The value of a variable, trimmed; empty values count as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// Which upstream wire format a model speaks (config `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// Anthropic Messages (`/api/llm/a/v1/messages`).
    Anthropic,
    /// OpenAI Responses (`/api/llm/o/v1/responses`).
    OpenAi,
    /// OpenAI Chat Completions (`/api/llm/o/v1/chat/completions`).
    Common,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Anthropic => "anthropic",
            ModelKind::OpenAi => "openai",
            ModelKind::Common => "common",
        }
    }

    /// `x-api-provider` when the model names none.
    pub fn default_provider(self) -> &'static str {
        match self {
            ModelKind::Anthropic => "anthropic",
            ModelKind::OpenAi => "azure_openai",
            ModelKind::Common => "baseten",
        }
    }

    /// Default cap of the max_tokens rule.
    pub fn default_max_output_tokens(self) -> u32 {
        match self {
            ModelKind::Anthropic => 64_000,
            ModelKind::OpenAi => 128_000,
            ModelKind::Common => 32_768,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "anthropic" => Some(ModelKind::Anthropic),
            "openai" => Some(ModelKind::OpenAi),
            "common" => Some(ModelKind::Common),
            _ => None,
        }
    }
}

/// A model's configured reasoning level (`upstream-factory.md` §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasoningLevel {
    /// Follow the client's own reasoning fields.
    Auto,
    /// Remove every reasoning field.
    Off,
    Low,
    Medium,
    High,
}

impl ReasoningLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningLevel::Auto => "auto",
            ReasoningLevel::Off => "off",
            ReasoningLevel::Low => "low",
            ReasoningLevel::Medium => "medium",
            ReasoningLevel::High => "high",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(ReasoningLevel::Auto),
            "off" => Some(ReasoningLevel::Off),
            "low" => Some(ReasoningLevel::Low),
            "medium" => Some(ReasoningLevel::Medium),
            "high" => Some(ReasoningLevel::High),
            _ => None,
        }
    }
}

/// One configured model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub name: String,
    pub kind: ModelKind,
    pub reasoning: ReasoningLevel,
    /// `x-api-provider`; `None` means the kind's default.
    pub provider: Option<String>,
    /// `max_tokens` used when a request has none.
    pub default_max_tokens: u32,
    /// Cap of the max_tokens rule.
    pub max_output_tokens: u32,
}

impl Model {
    pub fn provider(&self) -> &str {
        self.provider
            .as_deref()
            .unwrap_or(self.kind.default_provider())
    }
}

/// Thinking budgets per reasoning level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasoningBudgets {
    pub low: u32,
    pub medium: u32,
    pub high: u32,
}

impl Default for ReasoningBudgets {
    fn default() -> Self {
        ReasoningBudgets {
            low: 4096,
            medium: 12288,
            high: 24576,
        }
    }
}

/// The six selection algorithms (contract §7).
pub const ALGORITHMS: [&str; 6] = [
    "round-robin",
    "random",
    "least-used",
    "weighted-score",
    "least-token-used",
    "max-remaining",
];

/// Key-pool settings (contract §3 `key_pool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPoolSettings {
    pub algorithm: String,
    pub max_attempts: u32,
    pub rate_limit_cooldown_s: u64,
    pub rate_limit_cooldown_max_s: u64,
    pub failure_threshold: u32,
    pub failure_window_s: u64,
    pub failure_cooldown_s: u64,
    pub unauthorized_threshold: u32,
    pub auto_fallback: bool,
    pub test_concurrency: u32,
    /// Conversation-sticky keys (contract §14) and how long an unused pin is honoured.
    pub sticky_sessions: bool,
    pub sticky_ttl_s: u64,
}

impl Default for KeyPoolSettings {
    fn default() -> Self {
        KeyPoolSettings {
            algorithm: "round-robin".into(),
            max_attempts: 3,
            rate_limit_cooldown_s: 60,
            rate_limit_cooldown_max_s: 3600,
            failure_threshold: 5,
            failure_window_s: 60,
            failure_cooldown_s: 30,
            unauthorized_threshold: 2,
            auto_fallback: true,
            test_concurrency: 10,
            sticky_sessions: true,
            sticky_ttl_s: 3600,
        }
    }
}

/// Timeouts and periods (contract §3 `timing`); tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub connect_timeout_s: u64,
    pub idle_read_timeout_s: u64,
    pub shutdown_grace_s: u64,
    pub refresh_interval_s: u64,
    pub sse_keepalive_s: u64,
    pub balance_sync_interval_s: Option<u64>,
    /// A client's request headers must arrive within it, else the connection closes.
    pub header_read_timeout_s: u64,
    /// A request body must arrive within it of its headers, else 408.
    pub body_read_timeout_s: u64,
    /// An idle keep-alive connection closes after it.
    pub idle_keepalive_s: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout_s: 10,
            idle_read_timeout_s: 300,
            shutdown_grace_s: 30,
            refresh_interval_s: 21_600,
            sse_keepalive_s: 15,
            balance_sync_interval_s: None,
            header_read_timeout_s: 10,
            body_read_timeout_s: 60,
            idle_keepalive_s: 75,
        }
    }
}

/// The full URLs of every Factory call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub anthropic: String,
    pub count_tokens: String,
    pub openai: String,
    pub common: String,
    /// Origin of the balance calls (`/api/organization…`).
    pub balance_origin: String,
}

impl Endpoints {
    /// Endpoints under one origin (`FACTORY_BASE_URL` or the default).
    pub fn from_base(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Endpoints {
            anthropic: format!("{base}/api/llm/a/v1/messages"),
            count_tokens: format!("{base}/api/llm/a/v1/messages/count_tokens"),
            openai: format!("{base}/api/llm/o/v1/responses"),
            common: format!("{base}/api/llm/o/v1/chat/completions"),
            balance_origin: base.to_string(),
        }
    }

    pub fn for_kind(&self, kind: ModelKind) -> &str {
        match kind {
            ModelKind::Anthropic => &self.anthropic,
            ModelKind::OpenAi => &self.openai,
            ModelKind::Common => &self.common,
        }
    }
}

/// Egress proxy configuration. `Debug` masks the userinfo of every URL.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ProxySettings {
    /// Config `proxies[]`: used in rotation for every upstream call.
    pub rotation: Vec<String>,
    /// `HTTPS_PROXY` (applies to https URLs).
    pub https_proxy: Option<String>,
    /// `HTTP_PROXY` (applies to http URLs).
    pub http_proxy: Option<String>,
    /// `NO_PROXY`.
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = |u: &String| crate::secret::mask_userinfo(u);
        f.debug_struct("ProxySettings")
            .field("rotation", &self.rotation.iter().map(m).collect::<Vec<_>>())
            .field("https_proxy", &self.https_proxy.as_ref().map(m))
            .field("http_proxy", &self.http_proxy.as_ref().map(m))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Names of `key_pool` fields pinned by an environment variable (the admin API answers 409).
pub type Pinned = Vec<&'static str>;

/// Validated settings. Only obtainable through [`Settings::load`] / [`Settings::from_sources`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    /// The admin key, only when it is usable: a weak one (see [`admin_key_weakness`]) is `None`
    /// here and its reason is in `admin_key_disabled`.
    pub admin_access_key: Option<Secret>,
    /// Why a configured `ADMIN_ACCESS_KEY` was refused (too short or a placeholder): the admin
    /// API then answers 503 `admin_disabled` with this reason and `/metrics` stays closed.
    pub admin_key_disabled: Option<String>,
    pub api_access_key: Option<Secret>,
    pub factory_api_key: Option<Secret>,
    pub droid_refresh_key: Option<Secret>,
    pub endpoints: Endpoints,
    pub workos_base_url: String,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    /// `NODE_ENV=production`: daily-rotated file logs in `log_dir`.
    pub production: bool,
    pub log_level: String,
    pub proxies: ProxySettings,
    pub models: Vec<Model>,
    pub model_redirects: BTreeMap<String, String>,
    pub system_prompt: String,
    pub user_agent: String,
    pub dev_mode: bool,
    /// IANA zone for "today" and daily rollups; `None` = the machine's zone.
    pub timezone: Option<String>,
    pub reasoning_budgets: ReasoningBudgets,
    /// Effective key-pool settings at start-up (env > config.json > defaults; the stored admin
    /// layer is applied with [`Settings::key_pool_with`]).
    pub key_pool: KeyPoolSettings,
    /// `key_pool` from config.json over the defaults, without env pins (the base the admin layer
    /// goes on).
    pub key_pool_file: KeyPoolSettings,
    pub pinned: Pinned,
    pub timing: Timing,
    /// Inbound limits (config `limits`).
    pub limits: Limits,
    /// Browser origins allowed on `/v1/*` (`CORS_ORIGINS` / config `cors_origins`, canonical,
    /// `*` = any); `None` = not configured: any origin while client authentication is on, none
    /// while it is off.
    pub cors_origins: Option<Vec<String>>,
    /// Take the client address from `X-Forwarded-For`'s last hop (`TRUST_PROXY` / config
    /// `trust_proxy`).
    pub trust_proxy: bool,
    pub sync_interval_minutes: u64,
    pub batch_size: u32,
    pub data_retention_days: u32,
    /// Holds a password when one is configured: wrapped so it prints masked.
    pub redis_url: Option<Secret>,
    /// The user's home folder, for `~/.factory/auth.json`.
    pub home_dir: Option<PathBuf>,
    /// Non-fatal findings (unknown fields, ignored settings), logged at start-up.
    pub warnings: Vec<String>,
    /// Things worth saying at start-up that are not problems (logged at info).
    pub notes: Vec<String>,
    /// Test hook, never read from the environment or config.json: speak HTTP/2 without TLS
    /// ("prior knowledge", h2c) to the upstream, so tests can reproduce against the mock what
    /// ALPN negotiates with Factory's TLS front (see `upstream::client`).
    pub upstream_http2_prior_knowledge: bool,
}

/// Start-up configuration errors, each naming the field and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {message}")]
    Syntax { path: String, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl Settings {
    /// Loads `DATA_DIR/config.json` (when present) under the environment `env`.
    pub fn load(env: &Env) -> Result<Settings, ConfigError> {
        let data_dir = PathBuf::from(env.get("DATA_DIR").unwrap_or("./data"));
        let path = data_dir.join("config.json");
        let file = match std::fs::read(&path) {
            Ok(bytes) => Some(parse_config_file(&path, &bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source: e,
                });
            }
        };
        Settings::from_sources(env, file)
    }

    /// Builds settings from an environment and an already parsed config file.
    pub fn from_sources(env: &Env, file: Option<ConfigFile>) -> Result<Settings, ConfigError> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        let file = file.unwrap_or_default();
        warnings.extend(file.warnings.iter().cloned());
        errors.extend(file.errors.iter().cloned());

        let port = match env.get("PORT") {
            Some(p) => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    errors.push(format!("PORT: expected a port number 0-65535, got {p:?}"));
                    3000
                }
            },
            None => file.port.unwrap_or(3000),
        };
        let host = env.get("HOST").unwrap_or("0.0.0.0").to_string();

        let secret = |name: &str| env.get(name).map(Secret::new);

        let endpoints = match env.get("FACTORY_BASE_URL") {
            Some(base) => {
                check_url("FACTORY_BASE_URL", base, &mut errors);
                Endpoints::from_base(base)
            }
            None => {
                let mut e = Endpoints::from_base(DEFAULT_FACTORY_BASE_URL);
                for (kind, url) in &file.endpoints {
                    match kind {
                        ModelKind::Anthropic => {
                            e.anthropic = url.clone();
                            e.count_tokens = format!("{}/count_tokens", url.trim_end_matches('/'));
                            e.balance_origin = origin_of(url).unwrap_or(e.balance_origin);
                        }
                        ModelKind::OpenAi => e.openai = url.clone(),
                        ModelKind::Common => e.common = url.clone(),
                    }
                }
                e
            }
        };
        let workos_base_url = env
            .get("WORKOS_BASE_URL")
            .unwrap_or(DEFAULT_WORKOS_BASE_URL)
            .trim_end_matches('/')
            .to_string();
        check_url("WORKOS_BASE_URL", &workos_base_url, &mut errors);

        let proxies = ProxySettings {
            rotation: file.proxies.clone(),
            https_proxy: env
                .get("HTTPS_PROXY")
                .or_else(|| env.get("https_proxy"))
                .map(str::to_string),
            http_proxy: env
                .get("HTTP_PROXY")
                .or_else(|| env.get("http_proxy"))
                .map(str::to_string),
            no_proxy: env
                .get("NO_PROXY")
                .or_else(|| env.get("no_proxy"))
                .map(str::to_string),
        };
        for (name, url) in [
            ("HTTPS_PROXY", &proxies.https_proxy),
            ("HTTP_PROXY", &proxies.http_proxy),
        ] {
            if let Some(url) = url {
                check_url(name, url, &mut errors);
            }
        }

        let mut budgets = file.reasoning_tokens.unwrap_or_default();
        for (name, slot) in [
            ("REASONING_BUDGET_LOW", &mut budgets.low),
            ("REASONING_BUDGET_MEDIUM", &mut budgets.medium),
            ("REASONING_BUDGET_HIGH", &mut budgets.high),
        ] {
            if let Some(v) = env.get(name) {
                match v.parse::<u32>() {
                    Ok(n) if n >= 1024 => *slot = n,
                    _ => errors.push(format!(
                        "{name}: expected a whole number of at least 1024, got {v:?}"
                    )),
                }
            }
        }

        let key_pool_file = file.key_pool.clone().unwrap_or_default();
        let mut key_pool = key_pool_file.clone();
        let mut pinned = Vec::new();
        if let Some(alg) = env.get("KEY_POOL_ALGORITHM") {
            if ALGORITHMS.contains(&alg) {
                key_pool.algorithm = alg.to_string();
                pinned.push("algorithm");
            } else {
                errors.push(format!(
                    "KEY_POOL_ALGORITHM: expected {}, got {alg:?}",
                    ALGORITHMS.join("|")
                ));
            }
        }

        let mut timing = file.timing.unwrap_or_default();
        let sync_interval_minutes = env_number(env, "SYNC_INTERVAL_MINUTES", 30, 1, &mut errors);
        let batch_size = env_number(env, "BATCH_SIZE", 5, 1, &mut errors) as u32;
        let data_retention_days = env_number(env, "DATA_RETENTION_DAYS", 30, 1, &mut errors) as u32;
        if timing.balance_sync_interval_s.is_none() {
            timing.balance_sync_interval_s = Some(sync_interval_minutes * 60);
        }

        let timezone = match &file.timezone {
            Some(tz) => {
                if jiff::tz::TimeZone::get(tz).is_err() {
                    errors.push(format!(
                        "timezone: unknown time zone {tz:?} (expected an IANA name such as \"Asia/Shanghai\")"
                    ));
                }
                Some(tz.clone())
            }
            None => env.get("TZ").and_then(|tz| {
                let name = tz.trim_start_matches(':');
                if jiff::tz::TimeZone::get(name).is_ok() {
                    Some(name.to_string())
                } else {
                    warnings.push(format!(
                        "TZ: {tz:?} is not an IANA time zone name; using the machine's zone"
                    ));
                    None
                }
            }),
        };

        let redis_url = env.get("REDIS_URL").map(str::to_string).or_else(|| {
            env.get("REDIS_HOST").map(|h| {
                let port = env.get("REDIS_PORT").unwrap_or("6379");
                let db = env.get("REDIS_DB").unwrap_or("0");
                match env.get("REDIS_PASSWORD") {
                    Some(pw) => format!("redis://:{}@{h}:{port}/{db}", url_escape(pw)),
                    None => format!("redis://{h}:{port}/{db}"),
                }
            })
        });
        if let Some(url) = &redis_url
            && let Some(e) = redis_url_error(url)
        {
            errors.push(e);
        }
        let redis_url = redis_url.map(Secret::new);
        if env.get("CLUSTER_MODE").is_some() || env.get("CLUSTER_WORKERS").is_some() {
            let threads = env
                .get("TOKIO_WORKER_THREADS")
                .map(str::to_string)
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map_or(1, |n| n.get())
                        .to_string()
                });
            notes.push(format!(
                "CLUSTER_MODE/CLUSTER_WORKERS are not needed: one droid2api process already serves on every core ({threads} worker threads; TOKIO_WORKER_THREADS in the process environment changes that). To run several instances, give them one REDIS_URL (README: Several instances)"
            ));
        }

        let cors_origins = match env.get("CORS_ORIGINS") {
            Some(list) => exposure::origins(
                "CORS_ORIGINS",
                list.split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .enumerate(),
                &mut errors,
            ),
            None => file.cors_origins.clone(),
        };
        let trust_proxy = match env.get("TRUST_PROXY") {
            Some(v) => exposure::env_switch("TRUST_PROXY", v, &mut errors).unwrap_or(false),
            None => file.trust_proxy.unwrap_or(false),
        };
        let admin_key = secret("ADMIN_ACCESS_KEY");
        let admin_key_disabled = admin_key
            .as_ref()
            .and_then(|k| admin_key_weakness(k.expose()));

        let log_level = env.get("LOG_LEVEL").unwrap_or("info").to_string();
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            errors.push(format!(
                "LOG_LEVEL: not a valid tracing filter, got {log_level:?}"
            ));
        }

        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }

        let models = if file.models.is_empty() {
            builtin_models()
        } else {
            file.models.clone()
        };

        Ok(Settings {
            host,
            port,
            admin_access_key: admin_key.filter(|_| admin_key_disabled.is_none()),
            admin_key_disabled,
            api_access_key: secret("API_ACCESS_KEY"),
            factory_api_key: secret("FACTORY_API_KEY"),
            droid_refresh_key: secret("DROID_REFRESH_KEY"),
            endpoints,
            workos_base_url,
            data_dir: PathBuf::from(env.get("DATA_DIR").unwrap_or("./data")),
            log_dir: PathBuf::from(env.get("LOG_DIR").unwrap_or("./logs")),
            production: env.get("NODE_ENV") == Some("production"),
            log_level,
            proxies,
            models,
            model_redirects: file.model_redirects.clone(),
            system_prompt: file
                .system_prompt
                .clone()
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string()),
            user_agent: file
                .user_agent
                .clone()
                .unwrap_or_else(|| DEFAULT_USER_AGENT.to_string()),
            dev_mode: file.dev_mode.unwrap_or(false),
            timezone,
            reasoning_budgets: budgets,
            key_pool,
            key_pool_file,
            pinned,
            timing,
            limits: file.limits.unwrap_or_default(),
            cors_origins,
            trust_proxy,
            sync_interval_minutes,
            batch_size,
            data_retention_days,
            redis_url,
            notes,
            home_dir: env.get("HOME").map(PathBuf::from),
            warnings,
            upstream_http2_prior_knowledge: false,
        })
    }

    /// Effective key-pool settings with a stored admin layer: env > stored > config.json >
    /// defaults. Stored values that no longer validate are reported and skipped.
    pub fn key_pool_with(
        &self,
        stored: &BTreeMap<String, serde_json::Value>,
    ) -> (KeyPoolSettings, Findings) {
        let map: serde_json::Map<String, serde_json::Value> =
            stored.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let (mut kp, findings) = key_pool_from(&map, self.key_pool_file.clone());
        if self.pinned.contains(&"algorithm") {
            kp.algorithm = self.key_pool.algorithm.clone();
        }
        (kp, findings)
    }

    /// The time zone for "today" and daily rollups: config `timezone`, else `TZ`, else the
    /// machine's (validated at load, so a configured name always resolves here).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.timezone
            .as_deref()
            .and_then(|name| jiff::tz::TimeZone::get(name.trim_start_matches(':')).ok())
            .unwrap_or_else(jiff::tz::TimeZone::system)
    }

    /// Resolves a client model name: `model_redirects` first, then the model list.
    pub fn find_model(&self, requested: &str) -> Option<&Model> {
        let id = self
            .model_redirects
            .get(requested)
            .map(String::as_str)
            .unwrap_or(requested);
        self.models.iter().find(|m| m.id == id)
    }

    /// The listen address as `host:port`.
    pub fn listen_addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether `host` is a loopback address.
    pub fn listens_on_loopback(&self) -> bool {
        let h = self.host.trim_matches(|c| c == '[' || c == ']');
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }

    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// `~/.factory/auth.json`, when a home folder is known.
    pub fn factory_cli_auth_path(&self) -> Option<PathBuf> {
        self.home_dir
            .as_ref()
            .map(|h| h.join(".factory").join("auth.json"))
    }
}

/// The built-in model list used when config.json has none (contract §3).
pub fn builtin_models() -> Vec<Model> {
    let m = |id: &str,
             name: &str,
             kind: ModelKind,
             reasoning: ReasoningLevel,
             provider: Option<&str>| {
        Model {
            id: id.to_string(),
            name: name.to_string(),
            kind,
            reasoning,
            provider: provider.map(str::to_string),
            default_max_tokens: 4096,
            max_output_tokens: kind.default_max_output_tokens(),
        }
    };
    use ModelKind::*;
    use ReasoningLevel::*;
    vec![
        m("claude-opus-4-6", "Claude Opus 4.6", Anthropic, Auto, None),
        m(
            "claude-sonnet-4-6",
            "Claude Sonnet 4.6",
            Anthropic,
            Auto,
            None,
        ),
        m(
            "claude-opus-4-5-20251101",
            "Claude Opus 4.5",
            Anthropic,
            Auto,
            None,
        ),
        m(
            "claude-sonnet-4-5-20250929",
            "Claude Sonnet 4.5",
            Anthropic,
            Auto,
            None,
        ),
        m(
            "claude-haiku-4-5-20251001",
            "Claude Haiku 4.5",
            Anthropic,
            Auto,
            None,
        ),
        m("gpt-5.4", "GPT-5.4", OpenAi, Auto, None),
        m("gpt-5.3-codex", "GPT-5.3 Codex", OpenAi, Auto, None),
        m("gpt-5.2", "GPT-5.2", OpenAi, Auto, None),
        m("glm-5", "GLM-5", Common, Off, Some("fireworks")),
        m("kimi-k2.5", "Kimi K2.5", Common, Off, Some("fireworks")),
    ]
}

fn env_number(env: &Env, name: &str, default: u64, min: u64, errors: &mut Vec<String>) -> u64 {
    match env.get(name) {
        None => default,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n >= min => n,
            _ => {
                errors.push(format!(
                    "{name}: expected a whole number of at least {min}, got {v:?}"
                ));
                default
            }
        },
    }
}

fn check_url(field: &str, value: &str, errors: &mut Vec<String>) {
    match reqwest::Url::parse(value) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h")
                && u.host().is_some() => {}
        _ => errors.push(format!("{field}: expected an http(s) URL, got {value:?}")),
    }
}

fn origin_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization())
}

/// True when `path` exists and is a file.
pub fn file_exists(path: &Path) -> bool {
    path.is_file()
}

/// Percent-encodes a URL component (a Redis password from `REDIS_PASSWORD`).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a Redis URL cannot be used (the message never holds the password).
fn redis_url_error(url: &str) -> Option<String> {
    const WANT: &str = "expected redis://[:password@]host[:port][/db] or rediss://… (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD and REDIS_DB build one)";
    let Some(parsed) = redis::parse_redis_url(url) else {
        return Some(format!(
            "REDIS_URL: {} is not a Redis URL; {WANT}",
            crate::secret::mask_userinfo(url)
        ));
    };
    if parsed.scheme().contains("unix") {
        return None;
    }
    let db = parsed.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Some(format!(
            "REDIS_URL: database {db:?} is not a number; {WANT}"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Some(format!(
            "REDIS_URL: {} names no host; {WANT}",
            crate::secret::mask_userinfo(url)
        ));
    }
    None
}

#[cfg(test)]
mod tests;
