//! Results and their rendering: the markdown tables on stdout (and JSON on request).

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{Added, Pcts, RateVerdict, Step};

/// CPU used by the gateway process tree during one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cpu {
    /// Which phase was measured.
    pub phase: String,
    pub cpu_ms: f64,
    pub requests: u64,
    pub per_request_us: Option<f64>,
    pub frames: u64,
    pub per_frame_us: Option<f64>,
    /// Latency of the requests of the phase (open loop: from their scheduled send time).
    pub latency: Option<Pcts>,
}

/// Resident memory of the gateway process tree, KiB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rss {
    pub idle_kib: u64,
    /// Median of the 100 ms samples taken while load ran.
    pub load_kib: Option<u64>,
    /// Largest sample, or the kernel's high-water mark (`VmHWM`) when larger.
    pub peak_kib: u64,
}

/// A sustained-rate sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub upstream_delay_ms: u64,
    pub steps: Vec<Step>,
    /// Direct-to-mock runs at the rates where the gateway failed a limit.
    pub direct_steps: Vec<Step>,
    pub under_30ms: RateVerdict,
    pub under_100ms: RateVerdict,
}

/// A closed-loop throughput phase.
#[derive(Debug, Clone, Serialize)]
pub struct Closed {
    pub conc: usize,
    pub gateway_rps: f64,
    pub direct_rps: f64,
    pub gateway: Pcts,
    pub direct: Pcts,
}

/// A concurrent-streams phase.
#[derive(Debug, Clone, Serialize)]
pub struct Streams {
    pub conc: usize,
    pub deltas: u32,
    pub interval_ms: u64,
    /// Gateway p99 − direct p99 of the time to the first content frame, ns.
    pub ttfc_added_p99: Option<i64>,
    pub gateway_ttfc: Pcts,
    pub direct_ttfc: Pcts,
    pub gateway_gap: Pcts,
    pub direct_gap: Pcts,
    pub gateway_ok: u64,
    pub gateway_lost: u64,
    pub direct_ok: u64,
    pub direct_lost: u64,
    pub gateway_max_open: u64,
    pub direct_max_open: u64,
}

/// One scenario run against one gateway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayResult {
    pub gateway: String,
    /// The scenario could not run (start-up failure, seeding refused, …).
    pub error: Option<String>,
    /// Requests: added latency at c=1. Streams: added time to the first content frame at c=1.
    pub added: Option<Added>,
    pub sweep: Option<Sweep>,
    pub closed: Option<Closed>,
    pub cpu: Option<Cpu>,
    pub rss: Rss,
    pub streams: Option<Streams>,
    /// Failed requests (or lost streams) in the measured phases, sweeps excluded.
    pub errors: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub about: String,
    pub streaming: bool,
    pub results: Vec<GatewayResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub preset: crate::cli::Preset,
    pub command: String,
    pub date_utc: String,
    pub machine: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub placement: String,
    pub gateways: Vec<(String, String)>,
    pub mock: String,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: RunInfo,
    pub scenarios: Vec<ScenarioResult>,
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

/// A duration in ns as µs or ms.
pub fn dur(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{} µs", group((ns as f64 / 1e3).round() as u64))
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// A signed difference in ns: `+62 µs`, `−3 µs`, `+1.2 ms`.
pub fn signed(ns: i64) -> String {
    let sign = if ns < 0 { "−" } else { "+" };
    format!("{sign}{}", dur(ns.unsigned_abs()))
}

/// Thousands separators.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub fn rate_cell(v: &RateVerdict, tried_from: Option<u32>) -> String {
    let mut s = match (v.best, v.reached_max, v.first_fail) {
        (Some(b), true, _) => format!("≥ {}", group(u64::from(b))),
        (Some(b), false, _) => group(u64::from(b)),
        (None, _, Some(_)) => format!("< {}", group(u64::from(tried_from.unwrap_or(0)))),
        (None, _, None) => "—".into(),
    };
    if v.rig_limited {
        s.push_str(" (rig)");
    }
    if v.generator_behind {
        s.push_str(" †");
    }
    s
}

fn rss_cell(r: &Rss) -> String {
    format!(
        "{} / {} / {}",
        mib(r.idle_kib),
        r.load_kib.map_or("—".into(), mib),
        mib(r.peak_kib)
    )
}

fn us(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| {
        if v < 10.0 {
            format!("{v:.1} µs")
        } else {
            format!("{v:.0} µs")
        }
    })
}

fn cell_or_error(r: &GatewayResult) -> Option<String> {
    r.error.as_ref().map(|e| {
        let first = e.lines().next().unwrap_or_default();
        format!("not run: {}", first.replace('|', "/"))
    })
}

/// The markdown report.
pub fn markdown(report: &Report) -> String {
    let mut o = String::new();
    let run = &report.run;
    let _ = writeln!(o, "## droid2api-bench — preset `{}`\n", run.preset.name);
    let _ = writeln!(o, "- Command: `{}`", run.command);
    let _ = writeln!(
        o,
        "- Date (UTC): {}; total run time {:.0} s",
        run.date_utc, run.duration_s
    );
    let _ = writeln!(o, "- Machine: {}; kernel {}", run.machine, run.kernel);
    let _ = writeln!(
        o,
        "- Load average (1/5/15 min): before {}, after {}",
        run.load_before, run.load_after
    );
    let _ = writeln!(o, "- Placement: {}", run.placement);
    for (label, cmd) in &run.gateways {
        let _ = writeln!(o, "- Gateway `{label}`: `{cmd}`");
    }
    let p = &run.preset;
    let _ = writeln!(
        o,
        "- Mock: `{}` (bench mode). Bodies: {} turns × {} B. c=1: {} interleaved rounds × {} requests per side after {} warm-up. \
CPU/req: open loop at {} req/s for {} s. Sweep: {} → {} req/s (×{}) against a {} ms upstream, {} s per step after {} s warm-up. \
Streams: c=1 {}×{} ms, c={} and c={} with {} deltas every {} ms.",
        run.mock,
        p.body_messages,
        p.body_bytes,
        p.rounds,
        p.per_round,
        p.warmup,
        p.cpu_rate,
        p.cpu_secs,
        p.sweep_start,
        p.sweep_max,
        p.sweep_factor,
        p.upstream_delay_ms,
        p.step_secs,
        p.step_warmup_secs,
        p.c1_deltas,
        p.c1_interval_ms,
        p.stream_conc,
        p.big_streams,
        p.deltas,
        p.interval_ms
    );
    requests_table(&mut o, report);
    streams_table(&mut o, report);
    if report.scenarios.iter().any(|s| s.results.len() > 1) {
        compare_table(&mut o, report);
    }
    notes(&mut o, report);
    legend(&mut o);
    o
}

fn requests_table(o: &mut String, report: &Report) {
    let rows: Vec<&ScenarioResult> = report.scenarios.iter().filter(|s| !s.streaming).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n### Requests\n");
    let _ = writeln!(
        o,
        "| scenario | gateway | added p50 | added p99 | added p99.9 | req/s p99<30 ms | req/s p99<100 ms | closed loop | CPU/req | RSS idle / load / peak (MiB) | errors |"
    );
    let _ = writeln!(o, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for s in rows {
        for r in &s.results {
            if let Some(e) = cell_or_error(r) {
                let _ = writeln!(o, "| {} | {} | {e} | | | | | | | | |", s.name, r.gateway);
                continue;
            }
            let (a50, a99, a999) =
                r.added.map_or(("—".into(), "—".into(), "—".into()), |a| {
                    (
                        signed(a.p50),
                        signed(a.p99),
                        a.p999.map_or("—".into(), signed),
                    )
                });
            let from = r
                .sweep
                .as_ref()
                .and_then(|w| w.steps.first())
                .map(|s| s.rate);
            let (r30, r100) = r.sweep.as_ref().map_or(("n/a".into(), "n/a".into()), |w| {
                (
                    rate_cell(&w.under_30ms, from),
                    rate_cell(&w.under_100ms, from),
                )
            });
            let closed = r.closed.as_ref().map_or("—".into(), |c| {
                format!(
                    "{} req/s (c={}; direct {})",
                    group(c.gateway_rps.round() as u64),
                    c.conc,
                    group(c.direct_rps.round() as u64)
                )
            });
            let cpu = us(r.cpu.as_ref().and_then(|c| c.per_request_us));
            let _ = writeln!(
                o,
                "| {} | {} | {a50} | {a99} | {a999} | {r30} | {r100} | {closed} | {cpu} | {} | {} |",
                s.name,
                r.gateway,
                rss_cell(&r.rss),
                r.errors
            );
        }
    }
}

fn streams_table(o: &mut String, report: &Report) {
    let rows: Vec<&ScenarioResult> = report.scenarios.iter().filter(|s| s.streaming).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n### Streams\n");
    let _ = writeln!(
        o,
        "| scenario | gateway | +TTFC c=1 p50 / p99 / p99.9 | +TTFC p99 at c=N | frame gap p99 (direct) | streams ok / lost | peak open | CPU/frame | RSS idle / load / peak (MiB) |"
    );
    let _ = writeln!(o, "|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for s in rows {
        for r in &s.results {
            if let Some(e) = cell_or_error(r) {
                let _ = writeln!(o, "| {} | {} | {e} | | | | | | |", s.name, r.gateway);
                continue;
            }
            let c1 = r.added.map_or("—".into(), |a| {
                format!(
                    "{} / {} / {}",
                    signed(a.p50),
                    signed(a.p99),
                    a.p999.map_or("—".into(), signed)
                )
            });
            let (conc, gap, okl, open) = r.streams.as_ref().map_or(
                ("—".into(), "—".into(), "—".into(), "—".into()),
                |st| {
                    (
                        format!(
                            "{} (c={})",
                            st.ttfc_added_p99.map_or("—".into(), signed),
                            st.conc
                        ),
                        format!("{} ({})", dur(st.gateway_gap.p99), dur(st.direct_gap.p99)),
                        format!("{} / {}", group(st.gateway_ok), st.gateway_lost),
                        group(st.gateway_max_open),
                    )
                },
            );
            let cpu = us(r.cpu.as_ref().and_then(|c| c.per_frame_us));
            let _ = writeln!(
                o,
                "| {} | {} | {c1} | {conc} | {gap} | {okl} | {open} | {cpu} | {} |",
                s.name,
                r.gateway,
                rss_cell(&r.rss)
            );
        }
    }
}

/// Named numeric metrics of a result, for ratios.
fn metrics(r: &GatewayResult) -> Vec<(&'static str, Option<f64>)> {
    let ns = |v: i64| Some(v as f64);
    let verdict = |v: &RateVerdict| v.best.map(f64::from);
    vec![
        ("added p50", r.added.and_then(|a| ns(a.p50))),
        ("added p99", r.added.and_then(|a| ns(a.p99))),
        (
            "req/s p99<30 ms",
            r.sweep.as_ref().and_then(|w| verdict(&w.under_30ms)),
        ),
        (
            "req/s p99<100 ms",
            r.sweep.as_ref().and_then(|w| verdict(&w.under_100ms)),
        ),
        (
            "closed-loop req/s",
            r.closed.as_ref().map(|c| c.gateway_rps),
        ),
        (
            "CPU/req",
            r.cpu
                .as_ref()
                .filter(|c| c.frames == 0)
                .and_then(|c| c.per_request_us),
        ),
        ("CPU/frame", r.cpu.as_ref().and_then(|c| c.per_frame_us)),
        (
            "+TTFC p99 at c=N",
            r.streams
                .as_ref()
                .and_then(|s| s.ttfc_added_p99)
                .map(|v| v as f64),
        ),
        (
            "frame gap p99",
            r.streams.as_ref().map(|s| s.gateway_gap.p99 as f64),
        ),
        ("RSS idle", Some(r.rss.idle_kib as f64)),
        ("RSS load", r.rss.load_kib.map(|v| v as f64)),
        ("RSS peak", Some(r.rss.peak_kib as f64)),
    ]
}

fn metric_value(name: &str, v: f64) -> String {
    match name {
        "added p50" | "added p99" | "+TTFC p99 at c=N" => signed(v as i64),
        "frame gap p99" => dur(v as u64),
        "CPU/req" | "CPU/frame" => us(Some(v)),
        n if n.starts_with("RSS") => format!("{} MiB", mib(v as u64)),
        _ => group(v.round() as u64),
    }
}

/// `second ÷ first`; `—` unless both are positive (an added latency at or below zero is
/// noise around nothing, and a ratio of it means nothing).
fn ratio(first: f64, second: f64) -> String {
    if first > 0.0 && second > 0.0 {
        format!("×{:.2}", second / first)
    } else {
        "—".into()
    }
}

fn compare_table(o: &mut String, report: &Report) {
    let _ = writeln!(o, "\n### Comparison (second gateway ÷ first)\n");
    let _ = writeln!(
        o,
        "Below ×1.00 the second gateway is lower: better for latency, CPU and RSS, worse for req/s. \
`—`: a value at or below zero (an added latency within the noise).\n"
    );
    let _ = writeln!(o, "| scenario | metric | first | second | ratio |");
    let _ = writeln!(o, "|---|---|--:|--:|--:|");
    for s in &report.scenarios {
        let [a, b, ..] = s.results.as_slice() else {
            continue;
        };
        if a.error.is_some() || b.error.is_some() {
            let _ = writeln!(o, "| {} | — | | | not comparable (a run failed) |", s.name);
            continue;
        }
        for ((name, va), (_, vb)) in metrics(a).into_iter().zip(metrics(b)) {
            let (Some(va), Some(vb)) = (va, vb) else {
                continue;
            };
            let ratio = ratio(va, vb);
            let _ = writeln!(
                o,
                "| {} | {name} | {} | {} | {ratio} |",
                s.name,
                metric_value(name, va),
                metric_value(name, vb)
            );
        }
    }
}

fn notes(o: &mut String, report: &Report) {
    let mut lines = Vec::new();
    for s in &report.scenarios {
        for r in &s.results {
            for n in &r.notes {
                lines.push(format!("- `{}` · {}: {n}", s.name, r.gateway));
            }
            if let Some(e) = &r.error {
                lines.push(format!("- `{}` · {}: not run: {e}", s.name, r.gateway));
            }
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(o, "\n### Notes\n");
        for l in lines {
            let _ = writeln!(o, "{l}");
        }
    }
}

fn legend(o: &mut String) {
    let _ = writeln!(
        o,
        "\n*added*: gateway − direct-to-mock, same mock, same run, interleaved c=1 rounds \
(p50/p99: median over rounds of the per-round difference; p99.9, and p99 when rounds hold fewer than 200 samples: all rounds pooled; each is a difference of two quantiles, so a p99.9 can come out below the p99; `—` for p99.9 below 1,000 samples a side). \
*req/s p99<X*: highest rate of the open-loop sweep (latency from each request's scheduled send time) \
with p99 under X and no error; `(rig)`: at the first rate the gateway failed, direct-to-mock failed too or the generator could not keep \
its schedule (p99 lag > 5 ms) even without the gateway, so the rig is the limit; `†`: the generator lagged \
behind its schedule during the gateway's step at that rate (latency still counts from the schedule; without `(rig)` \
the lag came from the work the slow gateway left in flight); `≥`: no step failed. *CPU/req*, *CPU/frame*: \
utime+stime of the gateway's process tree (all threads, `/proc/PID/stat`) over the phase ÷ requests or content frames. \
*RSS*: `VmRSS` before load, median of 100 ms samples during the fixed-load phase (the CPU phase; streams: the \
concurrent phase; `models`: the closed loop), peak (max of all samples, sweep included, and `VmHWM`). \
*+TTFC*: added time from sending a stream request to its first content frame. *frame gap*: time between \
consecutive content frames at the client (the mock paces them). *lost*: streams that failed, broke, or \
missed a frame or their terminal event."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(999), "999");
        assert_eq!(dur(62_400), "62 µs");
        assert_eq!(dur(9_999_000), "9,999 µs");
        assert_eq!(dur(12_340_000), "12.3 ms");
        assert_eq!(signed(-3_000), "−3 µs");
        assert_eq!(signed(1_500_000), "+1,500 µs");
    }

    #[test]
    fn ratios_only_of_positive_values() {
        assert_eq!(ratio(100.0, 150.0), "×1.50");
        assert_eq!(ratio(100.0, 25.0), "×0.25");
        assert_eq!(ratio(-8_000.0, 700.0), "—");
        assert_eq!(ratio(700.0, -8_000.0), "—");
        assert_eq!(ratio(0.0, 10.0), "—");
    }

    #[test]
    fn rate_cells_say_what_limited_the_number() {
        let v = RateVerdict {
            best: Some(5062),
            first_fail: Some(7593),
            rig_limited: true,
            generator_behind: true,
            reached_max: false,
        };
        assert_eq!(rate_cell(&v, Some(1000)), "5,062 (rig) †");
        let v = RateVerdict {
            best: Some(60_000),
            reached_max: true,
            ..RateVerdict::default()
        };
        assert_eq!(rate_cell(&v, Some(1000)), "≥ 60,000");
        let v = RateVerdict {
            first_fail: Some(1000),
            ..RateVerdict::default()
        };
        assert_eq!(rate_cell(&v, Some(1000)), "< 1,000");
    }
}
