//! The per-key health state machine (contract §3 `key_pool`, issue rules), as pure logic over a
//! time the caller passes in, so tests drive it with a clock they control.
//!
//! | upstream answer | effect |
//! |---|---|
//! | 2xx | clears the 401 streak, the failure window and a half-open probe |
//! | 402 | banned, with the upstream's reason |
//! | 401 (traffic) | disabled after `unauthorized_threshold` consecutive 401s |
//! | 401 (admin test) | disabled at once |
//! | 429 | cooling until `Retry-After` (default `rate_limit_cooldown_s`, capped at `rate_limit_cooldown_max_s`) |
//! | 5xx, timeout, connection error | cooling `failure_cooldown_s` after `failure_threshold` failures within `failure_window_s`; after that cooldown one live request (the probe) decides: a failure cools again at once |
//! | 403 and other 4xx | nothing (content rejections are not the key's fault) |
//!
//! A key an admin disabled is never re-enabled automatically; a successful test restores a key
//! that was banned or disabled automatically.

use std::collections::VecDeque;

use crate::config::KeyPoolSettings;
use crate::store::records::{DisabledBy, EventSource, KeyEvent, KeyRecord, KeyStatus, Millis};

/// A classified upstream answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Unauthorized,
    /// 402, with the upstream's reason.
    PaymentRequired(String),
    /// 429, with the `Retry-After` seconds when given.
    RateLimited {
        retry_after_s: Option<u64>,
    },
    ServerError(u16),
    Timeout,
    Connect,
    /// 403: Factory rejecting content; the key is fine.
    Forbidden,
    /// Any other 4xx: the request's fault, not the key's.
    ClientError(u16),
    /// The attempt ended before an answer (the client went away).
    Cancelled,
}

impl Outcome {
    /// Classifies an upstream HTTP status.
    pub fn from_status(status: u16, reason: &str, retry_after_s: Option<u64>) -> Self {
        match status {
            200..=299 => Outcome::Success,
            401 => Outcome::Unauthorized,
            402 => Outcome::PaymentRequired(reason.to_string()),
            403 => Outcome::Forbidden,
            429 => Outcome::RateLimited { retry_after_s },
            500..=599 => Outcome::ServerError(status),
            s => Outcome::ClientError(s),
        }
    }

    /// Whether another key may succeed where this one failed (in-request failover).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Outcome::Unauthorized
                | Outcome::PaymentRequired(_)
                | Outcome::RateLimited { .. }
                | Outcome::ServerError(_)
                | Outcome::Connect
                | Outcome::Timeout
        )
    }

    /// Whether the key is to blame (counts as a failure in its statistics).
    pub fn key_failure(&self) -> bool {
        self.retryable()
    }
}

/// Volatile health state (not persisted: a restart forgets streaks and windows).
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub consecutive_401: u32,
    /// Times of recent 5xx/timeout/connection failures within the window.
    pub failures: VecDeque<Millis>,
    /// The key came out of a failure cooldown: the next live request is a probe.
    pub half_open: bool,
    /// A probe is in flight since then; other requests skip the key meanwhile.
    pub probe_since: Option<Millis>,
}

/// How long a probe may stay unanswered before the key is offered again.
pub const PROBE_TIMEOUT_MS: Millis = 5 * 60 * 1000;

impl Health {
    /// Whether the key may serve now (stored status aside).
    pub fn eligible(&self, rec: &KeyRecord, now: Millis) -> bool {
        rec.status == KeyStatus::Active
            && rec.cooldown_until.is_none_or(|t| t <= now)
            && !(self.half_open && self.probe_since.is_some_and(|p| now - p < PROBE_TIMEOUT_MS))
    }

    /// Until when a probe in flight keeps the key from serving (`None`: it does not). Agrees
    /// with [`Health::eligible`]: the key is blocked exactly while `now` is before this time.
    pub fn probe_blocked_until(&self, now: Millis) -> Option<Millis> {
        if !self.half_open {
            return None;
        }
        self.probe_since
            .map(|p| p.saturating_add(PROBE_TIMEOUT_MS))
            .filter(|t| *t > now)
    }

    /// Called when the key is picked: a half-open key's pick is its probe.
    pub fn on_pick(&mut self, now: Millis) {
        if self.half_open {
            self.probe_since = Some(now);
        }
    }
}

fn cooling(rec: &KeyRecord, now: Millis) -> bool {
    rec.cooldown_until.is_some_and(|t| t > now)
}

/// The state name shown in history (`cooling` for an active key in cooldown).
pub fn state_name(rec: &KeyRecord, now: Millis) -> &'static str {
    if rec.status == KeyStatus::Active && cooling(rec, now) {
        "cooling"
    } else {
        rec.status.as_str()
    }
}

fn transition(
    rec: &mut KeyRecord,
    now: Millis,
    to: KeyStatus,
    by: Option<DisabledBy>,
    reason: String,
    source: EventSource,
) -> KeyEvent {
    let from = state_name(rec, now).to_string();
    rec.status = to;
    rec.disabled_by = by;
    rec.status_reason = Some(reason.clone());
    rec.status_changed_at = Some(now);
    if to != KeyStatus::Active {
        rec.cooldown_until = None;
    }
    KeyEvent {
        key_id: rec.id.clone(),
        at: now,
        from: Some(from),
        to: to.as_str().to_string(),
        reason,
        source,
    }
}

fn cool(
    rec: &mut KeyRecord,
    now: Millis,
    secs: u64,
    reason: String,
    source: EventSource,
) -> KeyEvent {
    let from = state_name(rec, now).to_string();
    rec.cooldown_until = Some(now + (secs as Millis) * 1000);
    rec.status_reason = Some(reason.clone());
    rec.status_changed_at = Some(now);
    KeyEvent {
        key_id: rec.id.clone(),
        at: now,
        from: Some(from),
        to: "cooling".to_string(),
        reason,
        source,
    }
}

/// Applies an outcome; returns the recorded transition, if the state changed.
pub fn apply(
    rec: &mut KeyRecord,
    h: &mut Health,
    outcome: &Outcome,
    source: EventSource,
    now: Millis,
    s: &KeyPoolSettings,
) -> Option<KeyEvent> {
    let was_probe = h.probe_since.take().is_some();
    if rec.disabled_by == Some(DisabledBy::Admin) {
        // An admin's decision is never changed automatically (a test of such a key only
        // records its result).
        return None;
    }
    match outcome {
        Outcome::Cancelled => None,
        Outcome::Success | Outcome::Forbidden | Outcome::ClientError(_) => {
            h.consecutive_401 = 0;
            h.failures.clear();
            h.half_open = false;
            let auto_off =
                rec.status != KeyStatus::Active && rec.disabled_by != Some(DisabledBy::Admin);
            if source == EventSource::Test && *outcome == Outcome::Success && auto_off {
                return Some(transition(
                    rec,
                    now,
                    KeyStatus::Active,
                    None,
                    "key test succeeded".into(),
                    source,
                ));
            }
            None
        }
        Outcome::PaymentRequired(reason) => {
            if rec.status == KeyStatus::Banned {
                return None;
            }
            let reason = if reason.trim().is_empty() {
                "402 Payment Required: no credits".to_string()
            } else {
                format!("402 Payment Required: {}", reason.trim())
            };
            Some(transition(
                rec,
                now,
                KeyStatus::Banned,
                Some(DisabledBy::Auto),
                reason,
                source,
            ))
        }
        Outcome::Unauthorized => {
            if rec.status != KeyStatus::Active {
                return None;
            }
            h.consecutive_401 += 1;
            if source == EventSource::Test {
                return Some(transition(
                    rec,
                    now,
                    KeyStatus::Disabled,
                    Some(DisabledBy::Auto),
                    "401 Unauthorized on a key test".into(),
                    source,
                ));
            }
            if h.consecutive_401 >= s.unauthorized_threshold {
                let n = h.consecutive_401;
                h.consecutive_401 = 0;
                return Some(transition(
                    rec,
                    now,
                    KeyStatus::Disabled,
                    Some(DisabledBy::Auto),
                    format!("{n} consecutive 401 Unauthorized answers"),
                    source,
                ));
            }
            None
        }
        Outcome::RateLimited { retry_after_s } => {
            // Only live traffic cools a key: a test or a balance sync hitting a limit says
            // nothing about serving.
            if rec.status != KeyStatus::Active || source != EventSource::Traffic {
                return None;
            }
            let secs = retry_after_s
                .unwrap_or(s.rate_limit_cooldown_s)
                .clamp(1, s.rate_limit_cooldown_max_s.max(1));
            Some(cool(
                rec,
                now,
                secs,
                format!("429 rate limited; retry after {secs} s"),
                source,
            ))
        }
        Outcome::ServerError(_) | Outcome::Timeout | Outcome::Connect => {
            if rec.status != KeyStatus::Active || source != EventSource::Traffic {
                return None;
            }
            let what = match outcome {
                Outcome::ServerError(code) => format!("{code}"),
                Outcome::Timeout => "timeout".into(),
                _ => "connection error".into(),
            };
            if h.half_open && was_probe {
                h.failures.clear();
                return Some(cool(
                    rec,
                    now,
                    s.failure_cooldown_s,
                    format!("probe after cooldown failed ({what})"),
                    source,
                ));
            }
            let window = (s.failure_window_s as Millis) * 1000;
            h.failures.push_back(now);
            while h.failures.front().is_some_and(|t| now - *t > window) {
                h.failures.pop_front();
            }
            if h.failures.len() as u32 >= s.failure_threshold {
                let n = h.failures.len();
                h.failures.clear();
                h.half_open = true;
                return Some(cool(
                    rec,
                    now,
                    s.failure_cooldown_s,
                    format!(
                        "{n} failures within {} s (last: {what})",
                        s.failure_window_s
                    ),
                    source,
                ));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn key() -> KeyRecord {
        KeyRecord {
            id: "key_1".into(),
            secret: Secret::new("fk-health-test-key-0001"),
            status: KeyStatus::Active,
            status_reason: None,
            status_changed_at: None,
            disabled_by: None,
            pool_group: "default".into(),
            notes: String::new(),
            created_at: 0,
            last_used_at: None,
            cooldown_until: None,
            requests: 0,
            successes: 0,
            failures: 0,
            input_tokens: 0,
            output_tokens: 0,
            last_test: None,
        }
    }

    /// A clock the test moves by hand.
    struct Clock(Millis);
    impl Clock {
        fn advance_s(&mut self, s: i64) -> Millis {
            self.0 += s * 1000;
            self.0
        }
    }

    fn settings() -> KeyPoolSettings {
        KeyPoolSettings::default()
    }

    #[test]
    fn payment_required_bans_with_the_reason() {
        let (mut k, mut h, s) = (key(), Health::default(), settings());
        let e = apply(
            &mut k,
            &mut h,
            &Outcome::PaymentRequired("No credits left".into()),
            EventSource::Traffic,
            10,
            &s,
        )
        .unwrap();
        assert_eq!(k.status, KeyStatus::Banned);
        assert_eq!(k.disabled_by, Some(DisabledBy::Auto));
        assert_eq!(
            k.status_reason.as_deref(),
            Some("402 Payment Required: No credits left")
        );
        assert_eq!(
            (e.from.as_deref(), e.to.as_str(), e.source),
            (Some("active"), "banned", EventSource::Traffic)
        );
        assert!(!h.eligible(&k, 11));
        assert!(
            apply(
                &mut k,
                &mut h,
                &Outcome::PaymentRequired(String::new()),
                EventSource::Traffic,
                12,
                &s
            )
            .is_none()
        );
    }

    #[test]
    fn unauthorized_needs_a_streak_on_traffic_but_not_on_a_test() {
        let (mut k, mut h, s) = (key(), Health::default(), settings());
        assert!(
            apply(
                &mut k,
                &mut h,
                &Outcome::Unauthorized,
                EventSource::Traffic,
                1,
                &s
            )
            .is_none()
        );
        assert!(
            apply(
                &mut k,
                &mut h,
                &Outcome::Success,
                EventSource::Traffic,
                2,
                &s
            )
            .is_none()
        );
        assert!(
            apply(
                &mut k,
                &mut h,
                &Outcome::Unauthorized,
                EventSource::Traffic,
                3,
                &s
            )
            .is_none(),
            "the streak was reset by a success"
        );
        let e = apply(
            &mut k,
            &mut h,
            &Outcome::Unauthorized,
            EventSource::Traffic,
            4,
            &s,
        )
        .unwrap();
        assert_eq!(k.status, KeyStatus::Disabled);
        assert_eq!(e.reason, "2 consecutive 401 Unauthorized answers");

        let (mut k, mut h) = (key(), Health::default());
        apply(
            &mut k,
            &mut h,
            &Outcome::Unauthorized,
            EventSource::Test,
            1,
            &s,
        )
        .unwrap();
        assert_eq!(
            (k.status, k.disabled_by),
            (KeyStatus::Disabled, Some(DisabledBy::Auto))
        );
    }

    #[test]
    fn rate_limit_cools_until_retry_after_with_default_and_cap() {
        let (mut k, mut h, s) = (key(), Health::default(), settings());
        let mut clock = Clock(1_000_000);
        let e = apply(
            &mut k,
            &mut h,
            &Outcome::RateLimited {
                retry_after_s: Some(7),
            },
            EventSource::Traffic,
            clock.0,
            &s,
        )
        .unwrap();
        assert_eq!(e.to, "cooling");
        assert_eq!(k.status, KeyStatus::Active);
        assert!(!h.eligible(&k, clock.advance_s(6)));
        assert!(h.eligible(&k, clock.advance_s(1)));
        apply(
            &mut k,
            &mut h,
            &Outcome::RateLimited {
                retry_after_s: None,
            },
            EventSource::Traffic,
            clock.0,
            &s,
        );
        assert_eq!(k.cooldown_until, Some(clock.0 + 60_000));
        apply(
            &mut k,
            &mut h,
            &Outcome::RateLimited {
                retry_after_s: Some(99_999),
            },
            EventSource::Traffic,
            clock.0,
            &s,
        );
        assert_eq!(k.cooldown_until, Some(clock.0 + 3_600_000));
    }

    #[test]
    fn failures_cool_after_the_threshold_within_the_window_then_a_probe_decides() {
        let (mut k, mut h, s) = (key(), Health::default(), settings());
        let mut clock = Clock(0);
        // Four failures, then a gap longer than the window: the window forgets them.
        for _ in 0..4 {
            assert!(
                apply(
                    &mut k,
                    &mut h,
                    &Outcome::ServerError(503),
                    EventSource::Traffic,
                    clock.advance_s(1),
                    &s
                )
                .is_none()
            );
        }
        clock.advance_s(61);
        for _ in 0..4 {
            assert!(
                apply(
                    &mut k,
                    &mut h,
                    &Outcome::Timeout,
                    EventSource::Traffic,
                    clock.advance_s(1),
                    &s
                )
                .is_none()
            );
        }
        let e = apply(
            &mut k,
            &mut h,
            &Outcome::Connect,
            EventSource::Traffic,
            clock.advance_s(1),
            &s,
        )
        .unwrap();
        assert_eq!(e.reason, "5 failures within 60 s (last: connection error)");
        assert!(!h.eligible(&k, clock.advance_s(29)));
        // Cooldown over: one probe goes through; others wait for it.
        let now = clock.advance_s(1);
        assert!(h.eligible(&k, now));
        h.on_pick(now);
        assert!(!h.eligible(&k, now), "only one probe at a time");
        // The probe fails: cooling again at once.
        let e = apply(
            &mut k,
            &mut h,
            &Outcome::ServerError(500),
            EventSource::Traffic,
            now + 10,
            &s,
        )
        .unwrap();
        assert_eq!(e.reason, "probe after cooldown failed (500)");
        let now = clock.advance_s(31);
        assert!(h.eligible(&k, now));
        h.on_pick(now);
        // The probe succeeds: back to normal, other requests flow.
        assert!(
            apply(
                &mut k,
                &mut h,
                &Outcome::Success,
                EventSource::Traffic,
                now,
                &s
            )
            .is_none()
        );
        assert!(h.eligible(&k, now) && !h.half_open);
        // A stuck probe is forgotten after a while.
        let mut h2 = Health {
            half_open: true,
            ..Health::default()
        };
        h2.on_pick(0);
        assert!(!h2.eligible(&k, 1000));
        assert!(h2.eligible(&k, PROBE_TIMEOUT_MS + 1));
    }

    #[test]
    fn forbidden_changes_nothing() {
        let (mut k, mut h, s) = (key(), Health::default(), settings());
        for i in 0..10 {
            assert!(
                apply(
                    &mut k,
                    &mut h,
                    &Outcome::Forbidden,
                    EventSource::Traffic,
                    i,
                    &s
                )
                .is_none()
            );
        }
        assert!(h.eligible(&k, 10));
        assert!(!Outcome::Forbidden.retryable());
    }

    #[test]
    fn tests_restore_auto_disabled_keys_but_never_admin_disabled_ones() {
        let (mut k, mut h, s) = (key(), Health::default(), settings());
        apply(
            &mut k,
            &mut h,
            &Outcome::PaymentRequired("x".into()),
            EventSource::Traffic,
            1,
            &s,
        );
        let e = apply(&mut k, &mut h, &Outcome::Success, EventSource::Test, 2, &s).unwrap();
        assert_eq!(
            (k.status, e.from.as_deref(), e.to.as_str()),
            (KeyStatus::Active, Some("banned"), "active")
        );
        // Live traffic success never re-enables.
        k.status = KeyStatus::Disabled;
        k.disabled_by = Some(DisabledBy::Auto);
        assert!(
            apply(
                &mut k,
                &mut h,
                &Outcome::Success,
                EventSource::Traffic,
                3,
                &s
            )
            .is_none()
        );
        assert_eq!(k.status, KeyStatus::Disabled);
        k.disabled_by = Some(DisabledBy::Admin);
        assert!(apply(&mut k, &mut h, &Outcome::Success, EventSource::Test, 4, &s).is_none());
        assert_eq!(k.status, KeyStatus::Disabled);
        // Nor is it banned by a 402 on a test (a later success would then re-enable it).
        assert!(
            apply(
                &mut k,
                &mut h,
                &Outcome::PaymentRequired("x".into()),
                EventSource::Test,
                5,
                &s
            )
            .is_none()
        );
        assert_eq!(
            (k.status, k.disabled_by),
            (KeyStatus::Disabled, Some(DisabledBy::Admin))
        );
    }

    #[test]
    fn classification() {
        assert_eq!(Outcome::from_status(200, "", None), Outcome::Success);
        assert_eq!(
            Outcome::from_status(429, "", Some(3)),
            Outcome::RateLimited {
                retry_after_s: Some(3)
            }
        );
        assert_eq!(
            Outcome::from_status(529, "", None),
            Outcome::ServerError(529)
        );
        assert_eq!(
            Outcome::from_status(400, "", None),
            Outcome::ClientError(400)
        );
        assert!(Outcome::from_status(402, "", None).retryable());
        assert!(!Outcome::ClientError(400).retryable());
    }
}
