//! Local hours and days in the configured time zone (contract §2 `TZ` / config `timezone`), so
//! "today" and the daily rollups are the user's day, across DST changes included.

use jiff::tz::TimeZone;
use jiff::{RoundMode, Timestamp, Unit, ZonedDateTimeRound};

use crate::store::records::Millis;

/// The start of the local hour and of the local day containing `at`, as UTC milliseconds.
pub fn buckets(at: Millis, tz: &TimeZone) -> (Millis, Millis) {
    let Ok(ts) = Timestamp::from_millisecond(at) else {
        return (at, at);
    };
    let zdt = ts.to_zoned_datetime(tz.clone());
    let hour = zdt
        .round(
            ZonedDateTimeRound::new()
                .smallest(Unit::Hour)
                .mode(RoundMode::Trunc),
        )
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(at - at.rem_euclid(3_600_000));
    let day = zdt
        .start_of_day()
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(hour);
    (hour, day)
}

/// The start of the local day containing `at`.
pub fn day_start(at: Millis, tz: &TimeZone) -> Millis {
    buckets(at, tz).1
}

/// The local calendar date (`YYYY-MM-DD`) of `at`.
pub fn local_date(at: Millis, tz: &TimeZone) -> String {
    match Timestamp::from_millisecond(at) {
        Ok(ts) => ts.to_zoned_datetime(tz.clone()).date().to_string(),
        Err(_) => String::new(),
    }
}

/// The zone's name for display (`Asia/Shanghai`, or `UTC` for a fixed or unnamed zone).
pub fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn shanghai_day_starts_at_16_utc() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let (hour, day) = buckets(ms("2026-11-26T17:42:10Z"), &tz);
        assert_eq!(hour, ms("2026-11-26T17:00:00Z"));
        assert_eq!(day, ms("2026-11-26T16:00:00Z"), "01:42 local on the 27th");
        assert_eq!(local_date(ms("2026-11-26T17:42:10Z"), &tz), "2026-11-27");
        assert_eq!(local_date(ms("2026-11-26T15:59:59Z"), &tz), "2026-11-26");
    }

    #[test]
    fn half_hour_zones_and_dst_days() {
        let india = TimeZone::get("Asia/Kolkata").unwrap();
        let (hour, _) = buckets(ms("2026-11-26T10:10:00Z"), &india);
        assert_eq!(
            hour,
            ms("2026-11-26T09:30:00Z"),
            "15:40 local → 15:00 local"
        );
        let ny = TimeZone::get("America/New_York").unwrap();
        // 2026-03-08 has 23 hours in New York.
        let d1 = day_start(ms("2026-03-08T12:00:00Z"), &ny);
        let d2 = day_start(ms("2026-03-09T12:00:00Z"), &ny);
        assert_eq!(d2 - d1, 23 * 3_600_000);
    }

    #[test]
    fn utc() {
        let (hour, day) = buckets(ms("2026-11-26T17:42:10Z"), &TimeZone::UTC);
        assert_eq!(
            (hour, day),
            (ms("2026-11-26T17:00:00Z"), ms("2026-11-26T00:00:00Z"))
        );
        assert_eq!(zone_name(&TimeZone::UTC), "UTC");
    }
}
