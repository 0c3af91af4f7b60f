//! Requests refused before authentication or before the pipeline (contract §9). They are not
//! usage records: each is counted in `droid2api_rejected_total{reason}` and in an hourly count
//! per reason, added up in memory and handed to the store's writer every few seconds
//! ([`Rejected::flush`]), shown by `GET /admin/usage` as `rejected`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use jiff::tz::TimeZone;

use crate::store::records::{Millis, RejectedCount, StoreOp};
use crate::store::sqlite::Store;
use crate::telemetry::metrics as m;
use crate::usage::buckets;

/// A missing or wrong `API_ACCESS_KEY` on `/v1/*` (401).
pub const BAD_CLIENT_KEY: &str = "bad_client_key";
/// A missing or wrong admin key on `/admin/*`, `/factory/*` or `/metrics` (401).
pub const BAD_ADMIN_KEY: &str = "bad_admin_key";
/// An address over its failed-key limit (429 `too_many_attempts`).
pub const THROTTLED: &str = "throttled";
/// A client JSON route without a JSON `Content-Type` (415).
pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
/// The in-flight body budget is spent (503 `overloaded`).
pub const OVERLOADED: &str = "overloaded";
/// The body did not arrive within `timing.body_read_timeout_s` (408).
pub const BODY_TIMEOUT: &str = "body_timeout";
/// The body is over the size cap (413).
pub const TOO_LARGE: &str = "too_large";
/// The client stopped sending its body halfway (400).
pub const INCOMPLETE_BODY: &str = "incomplete_body";

/// A client key over its requests per minute (429 `rate_limited`, contract §13).
pub const RATE_LIMITED: &str = "rate_limited";
/// A client key over a daily quota (429 `quota_exceeded`).
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
/// An expired client key (401).
pub const EXPIRED_CLIENT_KEY: &str = "expired_client_key";

/// Every `reason` label.
pub const REASONS: [&str; 11] = [
    BAD_CLIENT_KEY,
    BAD_ADMIN_KEY,
    THROTTLED,
    UNSUPPORTED_MEDIA_TYPE,
    OVERLOADED,
    BODY_TIMEOUT,
    TOO_LARGE,
    INCOMPLETE_BODY,
    RATE_LIMITED,
    QUOTA_EXCEEDED,
    EXPIRED_CLIENT_KEY,
];

/// Every real time zone's offset is a multiple of 15 minutes, so local hours and days never
/// change inside one UTC quarter hour: the buckets of the current quarter are computed once.
const QUARTER_MS: Millis = 15 * 60 * 1000;

#[derive(Debug, Default)]
struct State {
    /// The quarter hour the cached buckets belong to, and its (hour start, day start).
    quarter: Option<(Millis, Millis, Millis)>,
    counts: HashMap<(Millis, Millis, &'static str), u64>,
}

/// Counts of rejected requests waiting for the writer.
#[derive(Debug)]
pub struct Rejected {
    tz: TimeZone,
    state: Mutex<State>,
}

impl Rejected {
    pub fn new(tz: TimeZone) -> Rejected {
        Rejected {
            tz,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one rejected request now.
    pub fn record(&self, reason: &'static str) {
        self.record_at(reason, jiff::Timestamp::now().as_millisecond());
    }

    /// Counts one rejected request at `at` (UTC milliseconds).
    pub fn record_at(&self, reason: &'static str, at: Millis) {
        metrics::counter!(m::REJECTED, "reason" => reason).increment(1);
        let quarter = at.div_euclid(QUARTER_MS);
        let mut st = self.lock();
        let (hour, day) = match st.quarter {
            Some((q, h, d)) if q == quarter => (h, d),
            _ => {
                let (h, d) = buckets::buckets(at, &self.tz);
                st.quarter = Some((quarter, h, d));
                (h, d)
            }
        };
        *st.counts.entry((hour, day, reason)).or_insert(0) += 1;
    }

    /// Takes the counts gathered so far.
    pub fn take(&self) -> Vec<RejectedCount> {
        let counts = std::mem::take(&mut self.lock().counts);
        let mut out: Vec<RejectedCount> = counts
            .into_iter()
            .map(|((hour_start, day_start, reason), count)| RejectedCount {
                hour_start,
                day_start,
                reason: reason.to_string(),
                count,
            })
            .collect();
        out.sort_by(|a, b| (a.hour_start, &a.reason).cmp(&(b.hour_start, &b.reason)));
        out
    }

    /// Hands the counts gathered so far to the store's writer (never waits).
    pub fn flush(&self, store: &Store) {
        let counts = self.take();
        if !counts.is_empty() {
            store.submit(vec![StoreOp::AddRejected(counts)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn counts_per_local_hour_and_reason() {
        let r = Rejected::new(TimeZone::get("Asia/Kolkata").unwrap());
        // 05:30 offset: 10:29 UTC is 15:59 local, 10:30 UTC is 16:00 local.
        r.record_at(BAD_CLIENT_KEY, ms("2026-03-01T10:29:59Z"));
        r.record_at(BAD_CLIENT_KEY, ms("2026-03-01T10:15:00Z"));
        r.record_at(THROTTLED, ms("2026-03-01T10:20:00Z"));
        r.record_at(BAD_CLIENT_KEY, ms("2026-03-01T10:30:00Z"));
        let got: Vec<(Millis, Millis, String, u64)> = r
            .take()
            .into_iter()
            .map(|c| (c.hour_start, c.day_start, c.reason, c.count))
            .collect();
        let day = ms("2026-02-28T18:30:00Z");
        assert_eq!(
            got,
            vec![
                (ms("2026-03-01T09:30:00Z"), day, "bad_client_key".into(), 2),
                (ms("2026-03-01T09:30:00Z"), day, "throttled".into(), 1),
                (ms("2026-03-01T10:30:00Z"), day, "bad_client_key".into(), 1),
            ]
        );
        assert!(r.take().is_empty(), "taken once");
    }
}
