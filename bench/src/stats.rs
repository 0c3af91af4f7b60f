//! Histogram helpers, the differential (gateway − direct) math, the open-loop schedule that
//! corrects coordinated omission, and the verdict of a rate sweep. Pure: no I/O, no clock.

use std::time::Duration;

use serde::Serialize;

/// Latencies in nanoseconds, 3 significant digits, up to one hour.
pub type Hist = hdrhistogram::Histogram<u64>;

const HIST_MAX_NS: u64 = 3_600_000_000_000;

pub fn new_hist() -> Hist {
    Hist::new_with_bounds(1, HIST_MAX_NS, 3).expect("constant histogram bounds are valid")
}

pub fn record(h: &mut Hist, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(HIST_MAX_NS).max(1));
}

/// The value at quantile `q` (0–1), `None` for an empty histogram.
pub fn q(h: &Hist, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

/// Percentiles of one histogram, in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pcts {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Pcts {
    pub fn of(h: &Hist) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One interleaved round: the same requests sent directly to the mock and through the gateway.
pub struct Round {
    pub gateway: Hist,
    pub direct: Hist,
}

/// What the gateway adds, in ns (negative when it measured faster than direct: noise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Added {
    /// Median over rounds of (gateway p50 − direct p50) of that round.
    pub p50: i64,
    /// Median over rounds of (gateway p99 − direct p99) of that round; pooled over all rounds
    /// like p99.9 when rounds hold fewer than [`MIN_ROUND_FOR_P99`] samples (`p99_pooled`).
    pub p99: i64,
    pub p99_pooled: bool,
    /// Pooled over all rounds: gateway p99.9 − direct p99.9 (rounds are too short for their
    /// own p99.9); `None` below [`MIN_FOR_P999`] pooled samples a side, where the p99.9 is just
    /// the largest sample.
    pub p999: Option<i64>,
    /// Interquartile range of the per-round p50 differences: the noise of the measurement.
    pub p50_iqr: i64,
    pub rounds: usize,
    pub gateway: Pcts,
    pub direct: Pcts,
}

/// Fewer pooled samples than this (per side) give no p99.9.
pub const MIN_FOR_P999: u64 = 1000;

/// Below this many samples per round and side, a round's own p99 is little more than its
/// maximum, so the p99 difference is taken over all rounds pooled.
pub const MIN_ROUND_FOR_P99: u64 = 200;

fn diff(a: u64, b: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
}

/// The median (mean of the two middle values for an even count); `None` when empty.
pub fn median(values: &[i64]) -> Option<i64> {
    quantile_sorted(values, 0.5)
}

/// Linear-interpolated quantile of a list of values.
pub fn quantile_sorted(values: &[i64], q: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(v[lo] + ((v[hi] - v[lo]) as f64 * frac).round() as i64)
}

/// The differential of interleaved rounds; `None` if any side has no sample.
pub fn added(rounds: &[Round]) -> Option<Added> {
    let usable: Vec<&Round> = rounds
        .iter()
        .filter(|r| !r.gateway.is_empty() && !r.direct.is_empty())
        .collect();
    if usable.is_empty() {
        return None;
    }
    let per_round = |quantile: f64| -> Vec<i64> {
        usable
            .iter()
            .map(|r| {
                diff(
                    r.gateway.value_at_quantile(quantile),
                    r.direct.value_at_quantile(quantile),
                )
            })
            .collect()
    };
    let d50 = per_round(0.5);
    let d99 = per_round(0.99);
    let mut gw = new_hist();
    let mut direct = new_hist();
    for r in &usable {
        gw.add(&r.gateway).ok()?;
        direct.add(&r.direct).ok()?;
    }
    let smallest = usable
        .iter()
        .map(|r| r.gateway.len().min(r.direct.len()))
        .min()
        .unwrap_or(0);
    let p99_pooled = smallest < MIN_ROUND_FOR_P99;
    let p99 = if p99_pooled {
        diff(gw.value_at_quantile(0.99), direct.value_at_quantile(0.99))
    } else {
        median(&d99)?
    };
    Some(Added {
        p50: median(&d50)?,
        p99,
        p99_pooled,
        p999: (gw.len().min(direct.len()) >= MIN_FOR_P999)
            .then(|| diff(gw.value_at_quantile(0.999), direct.value_at_quantile(0.999))),
        p50_iqr: quantile_sorted(&d50, 0.75)? - quantile_sorted(&d50, 0.25)?,
        rounds: usable.len(),
        gateway: Pcts::of(&gw),
        direct: Pcts::of(&direct),
    })
}

/// An open-loop schedule: request `i` is due `i × period` after the start, whatever happened
/// to the requests before it. Latency is measured from the due time, so a stall that delays
/// the sender is charged to every request it delayed (coordinated omission corrected).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    period_ns: f64,
    count: u64,
}

impl Schedule {
    /// `rate` requests per second for `duration` (at least one request).
    pub fn new(rate: f64, duration: Duration) -> Self {
        let rate = rate.max(1e-3);
        Self {
            period_ns: 1e9 / rate,
            count: ((rate * duration.as_secs_f64()).round() as u64).max(1),
        }
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    /// When request `i` is due, from the start.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * self.period_ns) as u64)
    }
}

/// The latency of a request of an open-loop schedule: completion − due time (never the time
/// it was actually sent).
pub fn open_loop_latency(due: Duration, done: Duration) -> Duration {
    done.saturating_sub(due)
}

/// One step of a rate sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: u32,
    pub sent: u64,
    pub errors: u64,
    /// p99 of the open-loop latency, ns.
    pub p99: Option<u64>,
    /// p99 of how late the generator sent requests against their schedule, ns.
    pub lag_p99: u64,
    /// Requests that found no idle connection and opened one.
    pub conn_waits: u64,
}

impl Step {
    pub fn passes(&self, limit: Duration) -> bool {
        let limit = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        self.errors == 0 && self.sent > 0 && self.p99.is_some_and(|p| p < limit)
    }
}

/// The generator counts as behind its schedule above this p99 lag.
pub const LAG_LIMIT: Duration = Duration::from_millis(5);

/// The outcome of a sweep for one p99 limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RateVerdict {
    /// The highest rate that passed before the first failing step.
    pub best: Option<u32>,
    /// The first rate that failed.
    pub first_fail: Option<u32>,
    /// At `first_fail`, direct-to-mock also failed, or the generator could not keep its
    /// schedule even without the gateway: the rig, not the gateway, is the limit.
    pub rig_limited: bool,
    /// The generator lagged behind its schedule during the gateway's step at `first_fail`
    /// (latencies still count from the schedule).
    pub generator_behind: bool,
    /// No step failed: the sweep's ceiling is the limit of the measurement.
    pub reached_max: bool,
}

/// The two p99 limits of the sustained-rate sweep.
pub const LIMITS: [Duration; 2] = [Duration::from_millis(30), Duration::from_millis(100)];

/// The next rate of a sweep, given the steps taken so far; `None` when it is over. Upwards
/// through `up` until a step fails the larger limit; then, for each limit the lowest rate
/// tried still fails, downwards through `down` until one passes. Each rate is tried once.
pub fn next_rate(up: &[u32], down: &[u32], steps: &[Step]) -> Option<u32> {
    let tried = |r: &u32| steps.iter().any(|s| s.rate == *r);
    let [small, large] = LIMITS;
    if !steps.iter().any(|s| !s.passes(large))
        && let Some(r) = up.iter().find(|r| !tried(r))
    {
        return Some(*r);
    }
    let lowest = steps.iter().min_by_key(|s| s.rate)?;
    if !lowest.passes(large) || !lowest.passes(small) {
        return down
            .iter()
            .find(|r| !tried(r) && **r < lowest.rate)
            .copied();
    }
    None
}

/// The lowest rate that failed `limit`.
pub fn first_failure(steps: &[Step], limit: Duration) -> Option<u32> {
    steps
        .iter()
        .filter(|s| !s.passes(limit))
        .map(|s| s.rate)
        .min()
}

/// The verdict of a sweep for one limit: the steps in rate order, the highest rate below the
/// first failure. `direct` holds the direct-to-mock runs made at some of the rates.
pub fn verdict(steps: &[Step], direct: &[Step], limit: Duration) -> RateVerdict {
    let mut v = RateVerdict::default();
    let mut steps: Vec<&Step> = steps.iter().collect();
    steps.sort_by_key(|s| s.rate);
    for s in steps.iter().copied() {
        if s.passes(limit) {
            v.best = Some(s.rate);
            continue;
        }
        v.first_fail = Some(s.rate);
        v.generator_behind = s.lag_p99 > u64::try_from(LAG_LIMIT.as_nanos()).unwrap_or(u64::MAX);
        let lag_limit = u64::try_from(LAG_LIMIT.as_nanos()).unwrap_or(u64::MAX);
        v.rig_limited = direct
            .iter()
            .any(|d| d.rate == s.rate && (!d.passes(limit) || d.lag_p99 > lag_limit));
        return v;
    }
    v.reached_max = !steps.is_empty();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(values_us: &[u64]) -> Hist {
        let mut h = new_hist();
        for v in values_us {
            record(&mut h, Duration::from_micros(*v));
        }
        h
    }

    fn close(a: i64, b: i64) -> bool {
        (a - b).abs() <= b.abs() / 500 + 1
    }

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[1, 2, 3, 10]), Some(3)); // (2 + 3) / 2 rounded
        assert_eq!(quantile_sorted(&[0, 10, 20, 30, 40], 0.25), Some(10));
        assert_eq!(quantile_sorted(&[0, 10, 20, 30, 40], 0.75), Some(30));
    }

    #[test]
    fn differential_is_the_median_of_per_round_differences() {
        // Direct: 100 µs flat. Gateway: +60 µs in rounds 1 and 3, +500 µs in a disturbed
        // round 2 (another process took the core): the median ignores the bad round.
        let direct: Vec<u64> = vec![100; 1000];
        let rounds: Vec<Round> = [60u64, 500, 60]
            .iter()
            .map(|extra| Round {
                gateway: hist_of(&vec![100 + extra; 1000]),
                direct: hist_of(&direct),
            })
            .collect();
        let a = added(&rounds).expect("added");
        assert_eq!(a.rounds, 3);
        assert!(!a.p99_pooled);
        assert!(close(a.p50, 60_000), "{a:?}");
        assert!(close(a.p99, 60_000), "{a:?}");
        // The pooled p99.9 sees the disturbed round.
        assert!(a.p999.is_some_and(|v| close(v, 500_000)), "{a:?}");
        assert!(a.p50_iqr > 0);
        assert_eq!(a.gateway.count, 3000);
    }

    #[test]
    fn differential_tail_and_empty_rounds() {
        // 1 % of gateway requests take 1 ms more: p50 unchanged, p99 sees it.
        let mut gw: Vec<u64> = vec![150; 990];
        gw.extend(vec![1150; 10]);
        let rounds = vec![
            Round {
                gateway: hist_of(&gw),
                direct: hist_of(&vec![100; 1000]),
            },
            Round {
                gateway: new_hist(),
                direct: hist_of(&[100]),
            },
        ];
        let a = added(&rounds).expect("added");
        assert_eq!(a.rounds, 1, "a round without gateway samples is skipped");
        assert!(!a.p99_pooled);
        assert!(close(a.p50, 50_000), "{a:?}");
        assert!(a.p999.is_some_and(|v| close(v, 1_050_000)), "{a:?}");
        // The p99 sits exactly at the edge of the slow 1 %: either side is right.
        assert!(close(a.p99, 50_000) || close(a.p99, 1_050_000), "{a:?}");
        assert!(added(&[]).is_none());
    }

    #[test]
    fn small_rounds_pool_their_p99() {
        // 30 samples per round: one slow sample per round is each round's own "p99". Three
        // rounds of which only one holds a slow gateway sample: per-round medians would say +0,
        // the pooled p99 (90 samples) sees it.
        let mut slow = vec![100u64; 29];
        slow.push(5_100);
        let rounds: Vec<Round> = [slow.clone(), vec![100; 30], vec![100; 30]]
            .into_iter()
            .map(|g| Round {
                gateway: hist_of(&g),
                direct: hist_of(&[100; 30]),
            })
            .collect();
        let a = added(&rounds).expect("added");
        assert!(a.p99_pooled);
        assert!(close(a.p99, 5_000_000), "{a:?}");
        assert_eq!(a.p999, None, "90 samples a side give no p99.9");
        assert!(close(a.p50, 0), "{a:?}");
    }

    /// A single-connection server answers in 100 µs, but stalls for 200 ms at t = 500 ms.
    /// The generator offers 1,000 requests/s for 1 s. Measured from the time each request
    /// was *sent* (what a closed-loop tool does), the stall is one slow request: p99 stays
    /// at 100 µs. Measured from the schedule, every request that queued behind the stall is
    /// late: ~200 requests wait up to 200 ms and p99 shows it.
    #[test]
    fn open_loop_schedule_corrects_coordinated_omission() {
        let schedule = Schedule::new(1000.0, Duration::from_secs(1));
        assert_eq!(schedule.len(), 1000);
        assert_eq!(schedule.due(250), Duration::from_millis(250));
        let service = Duration::from_micros(100);
        let stall_at = Duration::from_millis(500);
        let stall = Duration::from_millis(200);
        let mut corrected = new_hist();
        let mut naive = new_hist();
        let mut free_at = Duration::ZERO;
        let mut stalled = false;
        for i in 0..schedule.len() {
            let due = schedule.due(i);
            let sent = due.max(free_at); // one connection: wait for the previous answer
            let mut took = service;
            if !stalled && sent >= stall_at {
                took += stall;
                stalled = true;
            }
            let done = sent + took;
            free_at = done;
            record(&mut corrected, open_loop_latency(due, done));
            record(&mut naive, done - sent);
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        assert!(
            ms(naive.value_at_quantile(0.99)) < 0.2,
            "naive p99 hides the stall"
        );
        assert!(
            ms(corrected.value_at_quantile(0.99)) > 150.0,
            "corrected p99 {} ms",
            ms(corrected.value_at_quantile(0.99))
        );
        // 200 requests were due during the stall and each is charged its own wait; the backlog
        // then drains at 10 answers per ms while one more is due per ms, so ~22 more are late.
        let late = corrected.count_between(1_000_000, HIST_MAX_NS);
        assert!((200..=240).contains(&late), "{late} late requests");
        // hdrhistogram's own correction of the naive record agrees on the tail.
        let mut rc = new_hist();
        for v in naive.iter_recorded() {
            for _ in 0..v.count_at_value() {
                rc.record_correct(v.value_iterated_to(), 1_000_000).ok();
            }
        }
        assert!(ms(rc.value_at_quantile(0.99)) > 150.0);
    }

    fn step(rate: u32, p99_ms: u64, errors: u64, lag_ms: u64) -> Step {
        Step {
            rate,
            sent: u64::from(rate),
            errors,
            p99: Some(p99_ms * 1_000_000),
            lag_p99: lag_ms * 1_000_000,
            conn_waits: 0,
        }
    }

    /// Runs a sweep against a synthetic gateway whose p99 depends on the rate only.
    fn sweep_with(p99_ms: impl Fn(u32) -> u64) -> Vec<u32> {
        let up = [1000, 1500, 2250, 3375, 5063];
        let down = [667, 444, 296, 198];
        let mut steps = Vec::new();
        while let Some(rate) = next_rate(&up, &down, &steps) {
            steps.push(step(rate, p99_ms(rate), 0, 1));
            assert!(steps.len() <= up.len() + down.len(), "bounded");
        }
        steps.iter().map(|s| s.rate).collect()
    }

    #[test]
    fn sweep_goes_up_until_100_ms_fails_then_down_while_the_start_fails() {
        // Healthy: up until the 100 ms limit fails, nothing below the start.
        assert_eq!(
            sweep_with(|r| if r >= 3375 { 150 } else { 22 }),
            vec![1000, 1500, 2250, 3375]
        );
        // Never fails: every up rate, nothing more.
        assert_eq!(sweep_with(|_| 21), vec![1000, 1500, 2250, 3375, 5063]);
        // Fails 30 ms from the start but not 100 ms: up to the 100 ms failure, then down
        // below the start until 30 ms passes.
        assert_eq!(
            sweep_with(|r| match r {
                r if r >= 2250 => 200,
                r if r >= 667 => 40,
                _ => 25,
            }),
            vec![1000, 1500, 2250, 667, 444]
        );
        // Fails 100 ms at once: down until 100 ms passes, on until 30 ms passes.
        assert_eq!(
            sweep_with(|r| match r {
                r if r >= 667 => 500,
                444 => 50,
                _ => 25,
            }),
            vec![1000, 667, 444, 296]
        );
        // Nothing passes: every rate once, then stop.
        assert_eq!(sweep_with(|_| 999).len(), 5);
    }

    #[test]
    fn sweep_verdicts() {
        let ms30 = Duration::from_millis(30);
        let ms100 = Duration::from_millis(100);
        let steps = vec![
            step(1000, 21, 0, 1),
            step(1500, 22, 0, 1),
            step(2250, 45, 0, 1),
            step(3375, 300, 0, 9),
        ];
        let direct = vec![step(2250, 21, 0, 1), step(3375, 200, 0, 9)];
        let v30 = verdict(&steps, &direct, ms30);
        assert_eq!(v30.best, Some(1500));
        assert_eq!(v30.first_fail, Some(2250));
        assert!(!v30.rig_limited && !v30.generator_behind && !v30.reached_max);
        let v100 = verdict(&steps, &direct, ms100);
        assert_eq!(v100.best, Some(2250));
        assert_eq!(v100.first_fail, Some(3375));
        assert!(v100.rig_limited, "direct failed too");
        assert!(v100.generator_behind);
        // Direct passed the limit but could not keep the schedule: still the rig.
        let direct = vec![step(2250, 21, 0, 8)];
        assert!(verdict(&steps[..3], &direct, ms30).rig_limited);
        // An error fails a step whatever its latency; a later passing step does not count.
        let steps = vec![step(1000, 21, 1, 1), step(1500, 21, 0, 1)];
        assert_eq!(verdict(&steps, &[], ms30).best, None);
        // Steps taken downwards after a failing start are ordered by rate.
        let steps = vec![
            step(1000, 40, 0, 1),
            step(667, 35, 0, 1),
            step(444, 25, 0, 1),
        ];
        let v = verdict(&steps, &[], ms30);
        assert_eq!((v.best, v.first_fail), (Some(444), Some(667)));
        assert_eq!(first_failure(&steps, ms30), Some(667));
        assert_eq!(first_failure(&steps, ms100), None);
        let all_pass = vec![step(1000, 21, 0, 1)];
        assert!(verdict(&all_pass, &[], ms30).reached_max);
        assert!(!verdict(&[], &[], ms30).reached_max);
    }
}
