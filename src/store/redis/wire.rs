//! How shared records are written in Redis: JSON, stored as `<ver>|<json>` in their hash (the
//! version the write got from the `ver` counter), and the same JSON in the change log. Counters
//! are not part of a key's shared record: each instance publishes its own totals.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::store::records::{
    BalanceRecord, ClientRecord, DisabledBy, EventSource, KeyEvent, KeyRecord, KeyStatus, LastTest,
    Millis, PoolGroup, TestResult,
};

use super::SharedError;

#[derive(Serialize, Deserialize)]
struct KeyWire {
    id: String,
    secret: String,
    status: String,
    #[serde(default)]
    status_reason: Option<String>,
    #[serde(default)]
    status_changed_at: Option<Millis>,
    #[serde(default)]
    disabled_by: Option<String>,
    pool_group: String,
    #[serde(default)]
    notes: String,
    created_at: Millis,
    #[serde(default)]
    cooldown_until: Option<Millis>,
    #[serde(default)]
    last_test: Option<(Millis, String, u16)>,
}

fn bad(what: &str, e: impl std::fmt::Display) -> SharedError {
    SharedError::Data(format!("{what}: {e}"))
}

pub fn key_to_json(r: &KeyRecord) -> String {
    let w = KeyWire {
        id: r.id.clone(),
        secret: r.secret.expose().to_string(),
        status: r.status.as_str().into(),
        status_reason: r.status_reason.clone(),
        status_changed_at: r.status_changed_at,
        disabled_by: r.disabled_by.map(|d| d.as_str().to_string()),
        pool_group: r.pool_group.clone(),
        notes: r.notes.clone(),
        created_at: r.created_at,
        cooldown_until: r.cooldown_until,
        last_test: r
            .last_test
            .map(|t| (t.at, t.result.as_str().to_string(), t.status)),
    };
    serde_json::to_string(&w).unwrap_or_default()
}

/// A key record from its shared JSON (counters zero: the caller keeps its own).
pub fn key_from_json(s: &str) -> Result<KeyRecord, SharedError> {
    let w: KeyWire = serde_json::from_str(s).map_err(|e| bad("key record", e))?;
    Ok(KeyRecord {
        status: KeyStatus::parse(&w.status).ok_or_else(|| bad("key status", &w.status))?,
        id: w.id,
        secret: Secret::new(w.secret),
        status_reason: w.status_reason,
        status_changed_at: w.status_changed_at,
        disabled_by: w.disabled_by.as_deref().and_then(DisabledBy::parse),
        pool_group: w.pool_group,
        notes: w.notes,
        created_at: w.created_at,
        last_used_at: None,
        cooldown_until: w.cooldown_until,
        requests: 0,
        successes: 0,
        failures: 0,
        input_tokens: 0,
        output_tokens: 0,
        last_test: w.last_test.and_then(|(at, r, status)| {
            TestResult::parse(&r).map(|result| LastTest { at, result, status })
        }),
    })
}

#[derive(Serialize, Deserialize)]
struct GroupWire {
    id: String,
    name: String,
    priority: i64,
    #[serde(default)]
    description: String,
    created_at: Millis,
}

pub fn group_to_json(g: &PoolGroup) -> String {
    serde_json::to_string(&GroupWire {
        id: g.id.clone(),
        name: g.name.clone(),
        priority: g.priority,
        description: g.description.clone(),
        created_at: g.created_at,
    })
    .unwrap_or_default()
}

pub fn group_from_json(s: &str) -> Result<PoolGroup, SharedError> {
    let w: GroupWire = serde_json::from_str(s).map_err(|e| bad("pool group", e))?;
    Ok(PoolGroup {
        id: w.id,
        name: w.name,
        priority: w.priority,
        description: w.description,
        created_at: w.created_at,
    })
}

#[derive(Serialize, Deserialize)]
struct EventWire {
    key_id: String,
    at: Millis,
    from: Option<String>,
    to: String,
    reason: String,
    source: String,
}

pub fn events_to_json(evs: &[KeyEvent]) -> String {
    let w: Vec<EventWire> = evs
        .iter()
        .map(|e| EventWire {
            key_id: e.key_id.clone(),
            at: e.at,
            from: e.from.clone(),
            to: e.to.clone(),
            reason: e.reason.clone(),
            source: e.source.as_str().into(),
        })
        .collect();
    serde_json::to_string(&w).unwrap_or_default()
}

pub fn events_from_json(s: &str) -> Result<Vec<KeyEvent>, SharedError> {
    let w: Vec<EventWire> = serde_json::from_str(s).map_err(|e| bad("key events", e))?;
    Ok(w.into_iter()
        .map(|e| KeyEvent {
            source: EventSource::parse(&e.source).unwrap_or(EventSource::Traffic),
            key_id: e.key_id,
            at: e.at,
            from: e.from,
            to: e.to,
            reason: e.reason,
        })
        .collect())
}

#[derive(Serialize, Deserialize)]
struct BalanceWire {
    key_id: String,
    used: u64,
    allowance: u64,
    premium_used: u64,
    premium_allowance: u64,
    trial_end: Option<Millis>,
    synced_at: Millis,
}

pub fn balance_to_json(b: &BalanceRecord) -> String {
    serde_json::to_string(&BalanceWire {
        key_id: b.key_id.clone(),
        used: b.used,
        allowance: b.allowance,
        premium_used: b.premium_used,
        premium_allowance: b.premium_allowance,
        trial_end: b.trial_end,
        synced_at: b.synced_at,
    })
    .unwrap_or_default()
}

pub fn balance_from_json(s: &str) -> Result<BalanceRecord, SharedError> {
    let w: BalanceWire = serde_json::from_str(s).map_err(|e| bad("balance", e))?;
    Ok(BalanceRecord {
        key_id: w.key_id,
        used: w.used,
        allowance: w.allowance,
        premium_used: w.premium_used,
        premium_allowance: w.premium_allowance,
        trial_end: w.trial_end,
        synced_at: w.synced_at,
    })
}

/// A client key's shared record (contract §13): its key's SHA-256 digest and mask, never the
/// key; never its counters (each instance publishes its own, `cq:<instance>:<day>`).
#[derive(Serialize, Deserialize)]
struct ClientWire {
    id: String,
    name: String,
    key_digest: String,
    key_masked: String,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    requests_per_day: Option<u64>,
    #[serde(default)]
    tokens_per_day: Option<u64>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<Millis>,
    created_at: Millis,
    updated_at: Millis,
}

pub fn client_to_json(c: &ClientRecord) -> String {
    serde_json::to_string(&ClientWire {
        id: c.id.clone(),
        name: c.name.clone(),
        key_digest: c.key_digest.clone(),
        key_masked: c.key_masked.clone(),
        rpm: c.rpm,
        requests_per_day: c.requests_per_day,
        tokens_per_day: c.tokens_per_day,
        models: c.models.clone(),
        expires_at: c.expires_at,
        created_at: c.created_at,
        updated_at: c.updated_at,
    })
    .unwrap_or_default()
}

/// A client record from its shared JSON; a digest that is not 64 hex digits is refused (it
/// could never authenticate, and is not what any version of this program writes).
pub fn client_from_json(s: &str) -> Result<ClientRecord, SharedError> {
    let w: ClientWire = serde_json::from_str(s).map_err(|e| bad("client record", e))?;
    if w.key_digest.len() != 64 || !w.key_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("client key digest", "expected 64 hex digits"));
    }
    Ok(ClientRecord {
        id: w.id,
        name: w.name,
        key_digest: w.key_digest.to_ascii_lowercase(),
        key_masked: w.key_masked,
        rpm: w.rpm,
        requests_per_day: w.requests_per_day,
        tokens_per_day: w.tokens_per_day,
        models: w.models,
        expires_at: w.expires_at,
        created_at: w.created_at,
        updated_at: w.updated_at,
    })
}

/// One client's counts of one local day as one instance published them: `requests,tokens`.
pub fn quota_encode(requests: u64, tokens: u64) -> String {
    format!("{requests},{tokens}")
}

/// [`quota_encode`]'s inverse; `None` for anything else.
pub fn quota_decode(s: &str) -> Option<(u64, u64)> {
    let (r, t) = s.split_once(',')?;
    Some((r.trim().parse().ok()?, t.trim().parse().ok()?))
}

/// Splits a stored `<ver>|<json>` value.
pub fn split_versioned(s: &str) -> Option<(u64, &str)> {
    let (v, json) = s.split_once('|')?;
    Some((v.parse().ok()?, json))
}

/// A key's counters as one instance published them: requests, successes, failures, input and
/// output tokens, last use (0 = never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub last_used_at: Millis,
}

impl Counters {
    pub fn of(r: &KeyRecord) -> Counters {
        Counters {
            requests: r.requests,
            successes: r.successes,
            failures: r.failures,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            last_used_at: r.last_used_at.unwrap_or(0),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.requests,
            self.successes,
            self.failures,
            self.input_tokens,
            self.output_tokens,
            self.last_used_at
        )
    }

    pub fn decode(s: &str) -> Option<Counters> {
        let mut it = s.split(',').map(|p| p.parse::<i64>().ok());
        let mut next = || it.next().flatten();
        Some(Counters {
            requests: next()?.max(0) as u64,
            successes: next()?.max(0) as u64,
            failures: next()?.max(0) as u64,
            input_tokens: next()?.max(0) as u64,
            output_tokens: next()?.max(0) as u64,
            last_used_at: next()?,
        })
    }

    /// Adds another instance's totals (sums saturate; the later use wins).
    pub fn add(&mut self, o: &Counters) {
        self.requests = self.requests.saturating_add(o.requests);
        self.successes = self.successes.saturating_add(o.successes);
        self.failures = self.failures.saturating_add(o.failures);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.last_used_at = self.last_used_at.max(o.last_used_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_without_its_counters() {
        let r = KeyRecord {
            id: "key_1".into(),
            secret: Secret::new("fk-secret-0123456789"),
            status: KeyStatus::Disabled,
            status_reason: Some("disabled by an admin".into()),
            status_changed_at: Some(5),
            disabled_by: Some(DisabledBy::Admin),
            pool_group: "g".into(),
            notes: "n|with a bar".into(),
            created_at: 1,
            last_used_at: Some(9),
            cooldown_until: Some(77),
            requests: 3,
            successes: 2,
            failures: 1,
            input_tokens: 10,
            output_tokens: 20,
            last_test: Some(LastTest {
                at: 4,
                result: TestResult::Banned,
                status: 402,
            }),
        };
        let back = key_from_json(&key_to_json(&r)).unwrap();
        assert_eq!(back.secret.expose(), "fk-secret-0123456789");
        assert_eq!(back.status, KeyStatus::Disabled);
        assert_eq!(back.cooldown_until, Some(77));
        assert_eq!(back.notes, "n|with a bar");
        assert_eq!(back.last_test, r.last_test);
        assert_eq!((back.requests, back.last_used_at), (0, None));
    }

    #[test]
    fn versioned_values_split_at_the_first_bar() {
        assert_eq!(
            split_versioned("12|{\"a\":\"x|y\"}"),
            Some((12, "{\"a\":\"x|y\"}"))
        );
        assert_eq!(split_versioned("x|{}"), None);
        assert_eq!(split_versioned("{}"), None);
    }

    #[test]
    fn counters_decode_what_they_encode_and_refuse_garbage() {
        let c = Counters {
            requests: 5,
            successes: 4,
            failures: 1,
            input_tokens: 100,
            output_tokens: 50,
            last_used_at: 1234,
        };
        assert_eq!(Counters::decode(&c.encode()), Some(c));
        assert_eq!(Counters::decode("1,2"), None);
        assert_eq!(Counters::decode("a,b,c,d,e,f"), None);
    }

    fn client() -> ClientRecord {
        ClientRecord {
            id: "cli_1".into(),
            name: "team | a".into(),
            key_digest: "ab".repeat(32),
            key_masked: "d2a-abc…wxyz".into(),
            rpm: Some(60),
            requests_per_day: Some(4),
            tokens_per_day: None,
            models: Some(vec!["claude-test".into()]),
            expires_at: Some(99),
            created_at: 1,
            updated_at: 2,
        }
    }

    #[test]
    fn a_client_round_trips_and_carries_its_digest_never_a_key() {
        let c = client();
        let json = client_to_json(&c);
        assert_eq!(client_from_json(&json).unwrap(), c);
        assert!(!json.contains("\"key\""), "{json}");
        // Fields a later version may leave out default to "unlimited".
        let minimal = format!(
            r#"{{"id":"cli_2","name":"n","key_digest":"{}","key_masked":"m","created_at":1,"updated_at":1}}"#,
            "CD".repeat(32)
        );
        let back = client_from_json(&minimal).unwrap();
        assert_eq!(back.key_digest, "cd".repeat(32));
        assert_eq!(
            (back.rpm, back.requests_per_day, back.models),
            (None, None, None)
        );
    }

    #[test]
    fn a_client_with_a_bad_digest_or_shape_is_refused() {
        let mut c = client();
        c.key_digest = "d2a-not-a-digest".into();
        assert!(matches!(
            client_from_json(&client_to_json(&c)),
            Err(SharedError::Data(_))
        ));
        c.key_digest = "zz".repeat(32);
        assert!(client_from_json(&client_to_json(&c)).is_err());
        assert!(client_from_json("{}").is_err());
        assert!(client_from_json(r#"{"id":1}"#).is_err());
        assert!(client_from_json("not json").is_err());
    }

    #[test]
    fn quota_counts_decode_what_they_encode_and_refuse_garbage() {
        assert_eq!(quota_decode(&quota_encode(4, 1234)), Some((4, 1234)));
        assert_eq!(quota_decode("4"), None);
        assert_eq!(quota_decode("-1,2"), None);
        assert_eq!(quota_decode("a,b"), None);
    }
}
