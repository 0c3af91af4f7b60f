//! The one adapter to Factory's balance API (`upstream-factory.md` §1.7). Factory's usage
//! endpoints are undocumented and have changed before, so everything that knows their URLs,
//! headers and JSON shapes lives here; the rest of the gateway only sees [`FactoryBalance`].
//!
//! Two GETs in parallel, each with `authorization: Bearer <key>`, the configured Factory
//! `user-agent`, `accept: application/json` and `x-factory-client: cli`, each bounded by a
//! whole-request timeout ([`BALANCE_TIMEOUT`] unless the caller passes another):
//!
//! | call | fields read |
//! |---|---|
//! | `GET {origin}/api/organization` | `organization.subscription.freeTrialAllocation.{standardTokens, premiumTokens}`, `organization.subscription.orbSubscription.trial_info.end_date` (RFC 3339) |
//! | `GET {origin}/api/organization/members/chat-usage` | `usage.{standard, premium}.{orgTotalTokensUsed, totalAllowance}` |
//!
//! A tier's allowance is the trial allocation when present and above 0, else the usage
//! endpoint's `totalAllowance`: a paid subscription has no trial allocation, and counting it as
//! 0 (the Node.js behaviour, §1.7 [BUG]) made healthy paid keys look exhausted. A missing
//! number counts as 0; a missing `organization` or `usage` object is a failure (a changed
//! answer shape must not read as an empty balance).
//!
//! Errors, in order of precedence when the two calls fail differently: 401/403 on either call
//! → [`BalanceError::Unauthorized`]; 402 → [`BalanceError::PaymentRequired`] with the
//! upstream's message; a timeout → [`BalanceError::Timeout`]; anything else (other status,
//! unreadable or non-JSON body, transport) → [`BalanceError::Failed`] with a short reason.
//! No error ever carries the key or a whole upstream body.

use std::time::Duration;

use serde_json::Value;

use super::{Upstream, UpstreamError};
use crate::secret::Secret;

/// The per-call timeout of contract/upstream §1.7.
pub const BALANCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer body read (Factory's answers are a few KiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest upstream message kept in a [`BalanceError::PaymentRequired`].
const MAX_REASON_CHARS: usize = 200;

const ORGANIZATION_PATH: &str = "/api/organization";
const USAGE_PATH: &str = "/api/organization/members/chat-usage";

/// One key's Factory balance (tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryBalance {
    /// Standard tier: tokens used by the organisation.
    pub used: u64,
    /// Standard tier: the allowance (trial allocation, else the subscription's allowance).
    pub allowance: u64,
    pub premium_used: u64,
    pub premium_allowance: u64,
    /// End of the free trial (unix milliseconds), when Factory reports one.
    pub trial_end: Option<i64>,
}

impl FactoryBalance {
    /// Standard-tier tokens left (never below 0).
    pub fn remaining(&self) -> u64 {
        self.allowance.saturating_sub(self.used)
    }
}

/// Why a balance could not be read. Never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// 401 or 403: Factory does not accept the key.
    #[error("Factory rejected the key ({0})")]
    Unauthorized(u16),
    /// 402, with the upstream's message.
    #[error("402 Payment Required: {0}")]
    PaymentRequired(String),
    #[error("the balance API did not answer within the timeout")]
    Timeout,
    /// Any other status, an unreadable or unexpected body, or a transport failure.
    #[error("{0}")]
    Failed(String),
}

impl BalanceError {
    /// Precedence when the two calls fail differently (lower wins).
    fn rank(&self) -> u8 {
        match self {
            BalanceError::Unauthorized(_) => 0,
            BalanceError::PaymentRequired(_) => 1,
            BalanceError::Timeout => 2,
            BalanceError::Failed(_) => 3,
        }
    }
}

impl Upstream {
    /// Reads a key's balance from Factory ([`BALANCE_TIMEOUT`] per call). `origin` is
    /// `Settings.endpoints.balance_origin` (scheme and authority, no trailing path).
    pub async fn balance(
        &self,
        origin: &str,
        key: &Secret,
        user_agent: &str,
    ) -> Result<FactoryBalance, BalanceError> {
        self.balance_within(origin, key, user_agent, BALANCE_TIMEOUT)
            .await
    }

    /// [`Upstream::balance`] with another per-call timeout (tests use a short one).
    pub async fn balance_within(
        &self,
        origin: &str,
        key: &Secret,
        user_agent: &str,
        timeout: Duration,
    ) -> Result<FactoryBalance, BalanceError> {
        let origin = origin.trim_end_matches('/');
        let (org, usage) = tokio::join!(
            self.balance_get(origin, ORGANIZATION_PATH, key, user_agent, timeout),
            self.balance_get(origin, USAGE_PATH, key, user_agent, timeout),
        );
        let (org, usage) = match (org, usage) {
            (Ok(o), Ok(u)) => (o, u),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
            (Err(a), Err(b)) => return Err(if b.rank() < a.rank() { b } else { a }),
        };
        parse(&org, &usage)
    }

    /// One GET of the balance API, returning the parsed JSON answer of a 2xx.
    async fn balance_get(
        &self,
        origin: &str,
        path: &'static str,
        key: &Secret,
        user_agent: &str,
        timeout: Duration,
    ) -> Result<Value, BalanceError> {
        let name = call_name(path);
        let mut resp = self
            .client()
            .get(format!("{origin}{path}"))
            .bearer_auth(key.expose())
            .header("user-agent", user_agent)
            .header("accept", "application/json")
            .header("x-factory-client", "cli")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport(name, e, key))?;
        let status = resp.status().as_u16();
        // The body is read under the same timeout (it covers the whole request).
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(name, e, key))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(BalanceError::Failed(format!(
                    "{name} answered with a body over {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            200..=299 => serde_json::from_slice(&body).map_err(|_| {
                BalanceError::Failed(format!(
                    "{name} answered {status} with a body that is not JSON"
                ))
            }),
            401 | 403 => Err(BalanceError::Unauthorized(status)),
            402 => Err(BalanceError::PaymentRequired(scrub(
                &upstream_message(&body).unwrap_or_else(|| "no credits".into()),
                key,
            ))),
            _ => Err(BalanceError::Failed(format!("{name} answered {status}"))),
        }
    }
}

/// A short name of a call for error messages.
fn call_name(path: &str) -> &'static str {
    if path == USAGE_PATH {
        "the chat-usage call"
    } else {
        "the organization call"
    }
}

fn transport(name: &str, e: reqwest::Error, key: &Secret) -> BalanceError {
    match UpstreamError::from_reqwest(e) {
        UpstreamError::Timeout => BalanceError::Timeout,
        other => BalanceError::Failed(scrub(&format!("{name} failed: {other}"), key)),
    }
}

/// Removes the key from a message (an upstream echoing it back must not leak it into logs or
/// stored reasons) and caps its length.
fn scrub(message: &str, key: &Secret) -> String {
    let k = key.expose();
    let cleaned = if k.is_empty() {
        message.to_string()
    } else {
        message.replace(k, &key.masked())
    };
    cleaned.chars().take(MAX_REASON_CHARS).collect()
}

/// The human message of an error body: `error.message`, `message`, `error` (a string),
/// `detail`; the text itself when it is short plain text.
fn upstream_message(body: &[u8]) -> Option<String> {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(v) => [
            v.pointer("/error/message"),
            v.get("message"),
            v.get("error"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str().map(str::to_string)),
        Err(_) => std::str::from_utf8(body)
            .ok()
            .filter(|t| !t.trim_start().starts_with('<'))
            .map(str::to_string),
    }?;
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    (!one_line.is_empty()).then_some(one_line)
}

/// A token count: a non-negative integer (a float is rounded; anything else counts as 0).
fn tokens(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .map_or(0, |f| f.round() as u64)
        }),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Maps the two answers to a balance.
fn parse(org: &Value, usage: &Value) -> Result<FactoryBalance, BalanceError> {
    let Some(org) = org.get("organization").filter(|o| o.is_object()) else {
        return Err(BalanceError::Failed(
            "the organization call answered without an organization object".into(),
        ));
    };
    let Some(usage) = usage.get("usage").filter(|u| u.is_object()) else {
        return Err(BalanceError::Failed(
            "the chat-usage call answered without a usage object".into(),
        ));
    };
    let sub = org.get("subscription");
    let trial = sub.and_then(|s| s.get("freeTrialAllocation"));
    let tier = |trial_field: &str, usage_tier: &str| {
        let trial_tokens = tokens(trial.and_then(|t| t.get(trial_field)));
        let t = usage.get(usage_tier);
        let allowance = if trial_tokens > 0 {
            trial_tokens
        } else {
            tokens(t.and_then(|t| t.get("totalAllowance")))
        };
        let used = tokens(t.and_then(|t| t.get("orgTotalTokensUsed")));
        (used, allowance)
    };
    let (used, allowance) = tier("standardTokens", "standard");
    let (premium_used, premium_allowance) = tier("premiumTokens", "premium");
    let trial_end = sub
        .and_then(|s| s.pointer("/orbSubscription/trial_info/end_date"))
        .and_then(Value::as_str)
        .and_then(|d| d.trim().parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond());
    Ok(FactoryBalance {
        used,
        allowance,
        premium_used,
        premium_allowance,
        trial_end,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::{Env, Settings};
    use droid2api_mock::{MockUpstream, Reply, Rule};
    use serde_json::json;

    const KEY: &str = "fk-balance-unit-test-key-0001";

    fn upstream() -> Upstream {
        Upstream::new(&Settings::from_sources(&Env::default(), None).unwrap()).unwrap()
    }

    fn key() -> Secret {
        Secret::new(KEY.to_string())
    }

    fn paid_org() -> Value {
        json!({"organization": {"id": "org_paid", "subscription": {
            "orbSubscription": {"status": "active"}
        }}})
    }

    fn usage(used: u64, allowance: u64, premium_used: u64, premium_allowance: u64) -> Value {
        json!({"usage": {
            "startDate": "2026-11-01T00:00:00Z", "endDate": "2026-12-01T00:00:00Z",
            "standard": {"userTokens": used, "orgTotalTokensUsed": used, "orgOverageUsed": 0,
                         "basicAllowance": allowance, "totalAllowance": allowance,
                         "orgOverageLimit": 0, "usedRatio": 0.0},
            "premium": {"orgTotalTokensUsed": premium_used, "totalAllowance": premium_allowance},
        }})
    }

    fn assert_no_key(e: &BalanceError) {
        assert!(!e.to_string().contains(KEY), "{e}");
        assert!(!format!("{e:?}").contains(KEY), "{e:?}");
    }

    #[tokio::test]
    async fn trial_org_reads_allocation_usage_and_trial_end_with_factory_headers() {
        let mock = MockUpstream::start().await;
        mock.push_rule(
            Rule::new(Reply::json(200, usage(1_500_000, 99, 7, 0)))
                .path("chat-usage")
                .bearer(KEY),
        );
        let b = upstream()
            .balance(&mock.url(), &key(), "factory-cli/9.9.9")
            .await
            .unwrap();
        assert_eq!(
            b,
            FactoryBalance {
                used: 1_500_000,
                allowance: 20_000_000,
                premium_used: 7,
                premium_allowance: 0,
                trial_end: Some(4_070_908_800_000),
            }
        );
        assert_eq!(b.remaining(), 18_500_000);
        let calls = mock.requests_to("/api/organization");
        assert_eq!(calls.len(), 2);
        let mut paths: Vec<&str> = calls.iter().map(|r| r.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, [ORGANIZATION_PATH, USAGE_PATH]);
        for r in &calls {
            assert_eq!(r.method, "GET");
            assert_eq!(r.bearer(), Some(KEY));
            assert_eq!(r.header("user-agent"), Some("factory-cli/9.9.9"));
            assert_eq!(r.header("accept"), Some("application/json"));
            assert_eq!(r.header("x-factory-client"), Some("cli"));
        }
    }

    #[tokio::test]
    async fn paid_org_without_trial_takes_the_usage_allowance() {
        let mock = MockUpstream::start().await;
        mock.push_rule(
            Rule::new(Reply::json(
                200,
                usage(1_000_000, 50_000_000, 10, 2_000_000),
            ))
            .path("chat-usage"),
        );
        mock.push_rule(Rule::new(Reply::json(200, paid_org())).path(ORGANIZATION_PATH));
        let b = upstream()
            .balance(&format!("{}/", mock.url()), &key(), "ua")
            .await
            .unwrap();
        assert_eq!(
            b,
            FactoryBalance {
                used: 1_000_000,
                allowance: 50_000_000,
                premium_used: 10,
                premium_allowance: 2_000_000,
                trial_end: None,
            }
        );
        assert_eq!(b.remaining(), 49_000_000);
    }

    #[test]
    fn zero_trial_allocation_falls_back_and_numbers_are_lenient() {
        let org = json!({"organization": {"subscription": {
            "freeTrialAllocation": {"standardTokens": 0, "premiumTokens": 3.0e6},
            "orbSubscription": {"trial_info": {"end_date": "not a date"}},
        }}});
        let usage = json!({"usage": {
            "standard": {"orgTotalTokensUsed": 12.6, "totalAllowance": "40000000"},
            "premium": {"orgTotalTokensUsed": -5, "totalAllowance": 1},
        }});
        let b = parse(&org, &usage).unwrap();
        assert_eq!(
            b,
            FactoryBalance {
                used: 13,
                allowance: 40_000_000,
                premium_used: 0,
                premium_allowance: 3_000_000,
                trial_end: None,
            }
        );
        let org = json!({"organization": {"subscription": {"orbSubscription": {
            "trial_info": {"end_date": "2026-12-31T12:00:00.5+01:00"}}}}});
        let b = parse(&org, &json!({"usage": {}})).unwrap();
        assert_eq!(b.trial_end, Some(1_798_714_800_500));
        assert_eq!((b.used, b.allowance), (0, 0));
    }

    #[test]
    fn a_changed_answer_shape_is_a_failure_not_an_empty_balance() {
        let e = parse(&json!({"org": {}}), &json!({"usage": {}})).unwrap_err();
        assert!(matches!(e, BalanceError::Failed(m) if m.contains("organization object")));
        let e = parse(&json!({"organization": {}}), &json!([1, 2])).unwrap_err();
        assert!(matches!(e, BalanceError::Failed(m) if m.contains("usage object")));
    }

    #[tokio::test]
    async fn unauthorized_forbidden_and_payment_required() {
        let mock = MockUpstream::start().await;
        mock.set_bearer_status(KEY, 401, json!({"error": "unauthorized"}));
        let e = upstream()
            .balance(&mock.url(), &key(), "ua")
            .await
            .unwrap_err();
        assert_eq!(e, BalanceError::Unauthorized(401));

        mock.clear_bearer_status(KEY);
        mock.push_rule(
            Rule::new(Reply::json(403, json!({"error": "forbidden"})))
                .path("chat-usage")
                .once(),
        );
        let e = upstream()
            .balance(&mock.url(), &key(), "ua")
            .await
            .unwrap_err();
        assert_eq!(e, BalanceError::Unauthorized(403));

        // The upstream echoes the key back: it must not survive into the reason.
        mock.set_bearer_status(
            KEY,
            402,
            json!({"error": {"message": format!("no credits left\n for {KEY}")}}),
        );
        let e = upstream()
            .balance(&mock.url(), &key(), "ua")
            .await
            .unwrap_err();
        let BalanceError::PaymentRequired(reason) = &e else {
            panic!("{e:?}")
        };
        assert!(reason.starts_with("no credits left for fk-"), "{reason}");
        assert_no_key(&e);
    }

    #[tokio::test]
    async fn precedence_when_the_calls_disagree() {
        let mock = MockUpstream::start().await;
        mock.push_rule(Rule::new(Reply::json(500, json!({"x": 1}))).path("chat-usage"));
        mock.push_rule(Rule::new(Reply::json(402, json!({"message": "pay"}))).path("/api/org"));
        let e = upstream()
            .balance(&mock.url(), &key(), "ua")
            .await
            .unwrap_err();
        assert_eq!(e, BalanceError::PaymentRequired("pay".into()));
    }

    #[tokio::test]
    async fn other_statuses_and_bodies_fail_with_a_short_reason() {
        let mock = MockUpstream::start().await;
        mock.push_rule(
            Rule::new(Reply::text(500, format!("internal error for {KEY}")))
                .path("chat-usage")
                .once(),
        );
        let e = upstream()
            .balance(&mock.url(), &key(), "ua")
            .await
            .unwrap_err();
        assert_eq!(
            e,
            BalanceError::Failed("the chat-usage call answered 500".into())
        );

        mock.push_rule(
            Rule::new(Reply::text(200, format!("<html>{KEY}</html>")))
                .path("/api/organization")
                .once(),
        );
        let e = upstream()
            .balance(&mock.url(), &key(), "ua")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BalanceError::Failed(m) if m.contains("not JSON")),
            "{e:?}"
        );
        assert_no_key(&e);

        // Nothing listens there.
        let e = upstream()
            .balance("http://127.0.0.1:9", &key(), "ua")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BalanceError::Failed(m) if m.contains("failed")),
            "{e:?}"
        );
        assert_no_key(&e);
    }

    #[tokio::test]
    async fn a_hanging_call_times_out() {
        let mock = MockUpstream::start().await;
        mock.push_rule(Rule::new(Reply::hang()).path("chat-usage"));
        let started = std::time::Instant::now();
        let e = upstream()
            .balance_within(&mock.url(), &key(), "ua", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e, BalanceError::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn upstream_messages() {
        assert_eq!(
            upstream_message(br#"{"error":{"message":"a  b"}}"#).as_deref(),
            Some("a b")
        );
        assert_eq!(upstream_message(br#"{"detail":"d"}"#).as_deref(), Some("d"));
        assert_eq!(
            upstream_message(b"plain words").as_deref(),
            Some("plain words")
        );
        assert_eq!(upstream_message(b"<html></html>"), None);
        assert_eq!(upstream_message(b"{}"), None);
        let long = "x".repeat(500);
        assert_eq!(scrub(&long, &key()).len(), MAX_REASON_CHARS);
    }
}
