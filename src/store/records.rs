//! The persisted records of the key pool: plain data shared by the store (which writes them) and
//! the pool (which owns them in memory). Times are Unix milliseconds (UTC).

use crate::secret::Secret;

/// Unix time in milliseconds.
pub type Millis = i64;

/// A key's stored state (contract §7). "Cooling" is not a status: it is an active key whose
/// `cooldown_until` lies in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Active,
    Disabled,
    Banned,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Banned => "banned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KeyStatus::Active),
            "disabled" => Some(KeyStatus::Disabled),
            "banned" => Some(KeyStatus::Banned),
            _ => None,
        }
    }
}

/// Who disabled a key. A key an admin disabled is never re-enabled automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledBy {
    Admin,
    Auto,
}

impl DisabledBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledBy::Admin => "admin",
            DisabledBy::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(DisabledBy::Admin),
            "auto" => Some(DisabledBy::Auto),
            _ => None,
        }
    }
}

/// What caused a state transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    Admin,
    Traffic,
    Test,
    Sync,
    Import,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Admin => "admin",
            EventSource::Traffic => "traffic",
            EventSource::Test => "test",
            EventSource::Sync => "sync",
            EventSource::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(EventSource::Admin),
            "traffic" => Some(EventSource::Traffic),
            "test" => Some(EventSource::Test),
            "sync" => Some(EventSource::Sync),
            "import" => Some(EventSource::Import),
            _ => None,
        }
    }
}

/// The outcome of a key test (contract §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestResult {
    Success,
    Banned,
    Disabled,
    Inconclusive,
}

impl TestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TestResult::Success => "success",
            TestResult::Banned => "banned",
            TestResult::Disabled => "disabled",
            TestResult::Inconclusive => "inconclusive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(TestResult::Success),
            "banned" => Some(TestResult::Banned),
            "disabled" => Some(TestResult::Disabled),
            "inconclusive" => Some(TestResult::Inconclusive),
            _ => None,
        }
    }
}

/// The last admin test of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastTest {
    pub at: Millis,
    pub result: TestResult,
    /// Upstream HTTP status, 0 if none.
    pub status: u16,
}

/// One pool key, as stored.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// `key_…` (imported ids are kept as they were).
    pub id: String,
    pub secret: Secret,
    pub status: KeyStatus,
    pub status_reason: Option<String>,
    pub status_changed_at: Option<Millis>,
    pub disabled_by: Option<DisabledBy>,
    pub pool_group: String,
    pub notes: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub cooldown_until: Option<Millis>,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub last_test: Option<LastTest>,
}

/// A pool group (tier). Lower `priority` serves first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGroup {
    pub id: String,
    pub name: String,
    pub priority: i64,
    pub description: String,
    pub created_at: Millis,
}

/// The id of the group every key belongs to unless moved, and that cannot be deleted.
pub const DEFAULT_GROUP: &str = "default";
/// The default group's priority unless changed.
pub const DEFAULT_GROUP_PRIORITY: i64 = 1000;

/// A recorded state transition (`GET /admin/keys/:id/history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub key_id: String,
    pub at: Millis,
    /// `active`, `disabled`, `banned`, `cooling`; `None` for a key's creation.
    pub from: Option<String>,
    /// `active`, `disabled`, `banned`, `cooling`, `deleted`.
    pub to: String,
    pub reason: String,
    pub source: EventSource,
}

/// Per-request counters accumulated in memory and written behind in batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterDelta {
    pub key_id: String,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub last_used_at: Option<Millis>,
}

/// One write to the store.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Insert or replace a whole key record (counters included).
    PutKey(KeyRecord),
    /// Update only a key's state fields (status, reason, changed-at, disabled-by, cooldown,
    /// last test), leaving counters alone.
    PutKeyState(KeyRecord),
    DeleteKey(String),
    PutGroup(PoolGroup),
    /// Delete a group; its keys move to `move_keys_to`.
    DeleteGroup {
        id: String,
        move_keys_to: String,
    },
    AddEvents(Vec<KeyEvent>),
    AddCounters(Vec<CounterDelta>),
    /// A stored admin setting (`key_pool.<name>` → JSON value).
    PutSetting {
        name: String,
        value: serde_json::Value,
    },
    /// Drop every stored admin setting.
    ClearSettings,
    /// Insert usage records and add them to the hourly and daily rollups.
    AddUsage(Vec<UsageRecord>),
    /// Insert or replace a key's balance (last sync).
    PutBalance(BalanceRecord),
    /// Add to the hourly counts of requests rejected before authentication.
    AddRejected(Vec<RejectedCount>),
    /// Insert or replace a client key record (contract §13).
    PutClient(ClientRecord),
    /// Delete a client key record (its usage stays, under its id).
    DeleteClient(String),
}

/// A client key (contract §13), as stored. The key itself is never stored: only its SHA-256
/// digest (to authenticate) and a display mask computed when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// `cli_…`.
    pub id: String,
    pub name: String,
    /// SHA-256 of the key, lowercase hex.
    pub key_digest: String,
    /// `d2a-abc…wxyz`.
    pub key_masked: String,
    /// Requests per minute (`None` = unlimited).
    pub rpm: Option<u32>,
    /// Requests per local day (`None` = unlimited).
    pub requests_per_day: Option<u64>,
    /// Tokens (`total_tokens`) per local day (`None` = unlimited).
    pub tokens_per_day: Option<u64>,
    /// Model ids the key may use (`None` = all).
    pub models: Option<Vec<String>>,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Requests rejected before authentication (or before the pipeline) in one local hour, for one
/// reason (`droid2api_rejected_total`'s label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCount {
    /// Start of the local hour (UTC milliseconds), as `UsageRecord::hour_start`.
    pub hour_start: Millis,
    /// Start of the local day containing it.
    pub day_start: Millis,
    pub reason: String,
    pub count: u64,
}

/// One client request's usage (contract §7 token fields), one record per request — not per
/// failover attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// When the request arrived.
    pub at: Millis,
    /// Start of the request's hour in the configured time zone (UTC milliseconds).
    pub hour_start: Millis,
    /// Start of the request's day in the configured time zone (UTC milliseconds).
    pub day_start: Millis,
    /// The credential that served: a pool key id, or `env`, `refresh`, `file`, `client`; `-` when
    /// none was chosen (the request was rejected first). Never a secret.
    pub credential: String,
    /// Upstream attempts (failovers + 1); 0 when the gateway answered itself.
    pub attempts: u32,
    /// A client key's id (`cli_…`), `api_access_key` or `anonymous`.
    pub client: String,
    /// The resolved model id (`-` when unknown).
    pub model: String,
    /// The client route (`/v1/messages`, …).
    pub route: String,
    /// `anthropic`, `responses`, `chat`, or `-` when no upstream call was made.
    pub upstream_format: String,
    /// The status the client got.
    pub status: u16,
    pub input_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    /// Output tokens were estimated from the streamed text (the upstream never reported them).
    pub estimated: bool,
    /// The response reached its normal end (a stream cut short by the client or the upstream is
    /// `false`).
    pub complete: bool,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
}

/// A key's Factory balance from the last sync (contract §7 `balance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceRecord {
    pub key_id: String,
    /// Standard tier: tokens used, allowance, trial end.
    pub used: u64,
    pub allowance: u64,
    pub premium_used: u64,
    pub premium_allowance: u64,
    pub trial_end: Option<Millis>,
    pub synced_at: Millis,
}
