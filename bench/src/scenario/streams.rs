//! Streaming phases: added time to the first content frame at c=1 (interleaved rounds of short
//! streams), then concurrent streams (time to first frame, frame gaps, lost streams, CPU per
//! frame) — c=100 for the per-route stream scenarios, 1,000 for `streams-1000`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{Route, Run, mock_set, summarize};
use crate::client::Target;
use crate::load::{self, StreamTarget, Until};
use crate::procfs::CpuMark;
use crate::report::{Cpu, Streams};
use crate::stats::{self, Pcts, Round};

fn targets(
    r: &Run<'_>,
    route: Route,
    deltas: u32,
    interval_ms: u64,
) -> (StreamTarget, StreamTarget) {
    let expected = Duration::from_millis(interval_ms * u64::from(deltas));
    let timeout = expected + Duration::from_secs(30);
    let gw = r.gateway_target(route.path, Some(r.body(route.client, route.model, true)));
    let direct: Target = r.direct_target(route.upstream, r.body(route.upstream, route.model, true));
    (
        StreamTarget {
            target: Target {
                expect_marker: false,
                ..gw
            },
            deltas,
            timeout,
        },
        StreamTarget {
            target: direct,
            deltas,
            timeout,
        },
    )
}

async fn set_shape(r: &Run<'_>, deltas: u32, interval_ms: u64) -> Result<(), String> {
    mock_set(
        r.mock,
        json!({"delay_ms": 0, "stream_deltas": deltas, "stream_interval_ms": interval_ms}),
    )
    .await
    .map(|_| ())
}

/// c=1 rounds of short streams, then c=100.
pub(super) async fn stream_phases(r: &mut Run<'_>, route: Route) -> Result<(), String> {
    let p = r.ctx.preset.clone();
    set_shape(r, p.c1_deltas, p.c1_interval_ms).await?;
    let (gw, direct) = targets(r, route, p.c1_deltas, p.c1_interval_ms);
    let live = r.ctx.live.clone();
    let none = Duration::ZERO;
    r.phase("c=1 stream warm-up");
    load::stream_workers(&gw, 1, Until::Count(3), none, &live).await;
    load::stream_workers(&direct, 1, Until::Count(3), none, &live).await;
    let mut rounds = Vec::new();
    let mut lost = BTreeMap::new();
    for i in 0..p.c1_rounds {
        r.phase(&format!("c=1 stream round {}/{}", i + 1, p.c1_rounds));
        let n = Until::Count(p.c1_streams);
        let (g, d) = if i % 2 == 0 {
            let d = load::stream_workers(&direct, 1, n, none, &live).await;
            (load::stream_workers(&gw, 1, n, none, &live).await, d)
        } else {
            let g = load::stream_workers(&gw, 1, n, none, &live).await;
            (g, load::stream_workers(&direct, 1, n, none, &live).await)
        };
        for (k, v) in &g.failures {
            *lost.entry(k.clone()).or_insert(0) += v;
        }
        if d.lost > 0 {
            r.note(format!("direct c=1 streams: {}", summarize(&d.failures)));
        }
        rounds.push(Round {
            gateway: g.ttfc,
            direct: d.ttfc,
        });
    }
    r.failures("c=1 streams", &lost);
    r.res.added = stats::added(&rounds);
    set_shape(r, p.deltas, p.interval_ms).await?;
    concurrent(r, route, p.stream_conc, p.stream_secs).await;
    Ok(())
}

/// `streams-1000`: only the concurrent phase, with many streams.
pub(super) async fn many_streams(r: &mut Run<'_>, route: Route) -> Result<(), String> {
    let p = r.ctx.preset.clone();
    set_shape(r, p.deltas, p.interval_ms).await?;
    let (gw, direct) = targets(r, route, p.deltas, p.interval_ms);
    let live = r.ctx.live.clone();
    r.phase("stream warm-up");
    load::stream_workers(&gw, 4, Until::Count(8), Duration::ZERO, &live).await;
    load::stream_workers(&direct, 4, Until::Count(8), Duration::ZERO, &live).await;
    concurrent(r, route, p.big_streams, p.big_secs).await;
    Ok(())
}

/// `conc` streams at once for `secs` (starts spread over one stream's duration), direct first,
/// then through the gateway with its CPU measured.
async fn concurrent(r: &mut Run<'_>, route: Route, conc: usize, secs: f64) {
    let p = r.ctx.preset.clone();
    let (gw, direct) = targets(r, route, p.deltas, p.interval_ms);
    let ramp =
        Duration::from_millis(p.interval_ms * u64::from(p.deltas)).max(Duration::from_millis(100));
    let until = Until::Time(Duration::from_secs_f64(secs));
    let live = r.ctx.live.clone();
    r.phase(&format!("{conc} concurrent streams (direct)"));
    let d = load::stream_workers(&direct, conc, until, ramp, &live).await;
    r.phase(&format!("{conc} concurrent streams (gateway)"));
    let mark = CpuMark::now(r.gw_pid);
    let t0 = Instant::now();
    let g = load::stream_workers(&gw, conc, until, ramp, &live).await;
    let cpu_s = mark.elapsed_cpu_s(r.gw_pid);
    r.windows.push((t0, Instant::now()));
    r.note(format!(
        "{conc} streams by thread: {}",
        mark.by_thread(r.gw_pid)
    ));
    r.failures(&format!("{conc} streams"), &g.failures);
    if d.lost > 0 {
        r.note(format!("direct {conc} streams: {}", summarize(&d.failures)));
    }
    if g.max_open < conc as u64 {
        r.note(format!(
            "only {} of {conc} streams were open at once through the gateway",
            g.max_open
        ));
    }
    let ttfc_added_p99 = match (stats::q(&g.ttfc, 0.99), stats::q(&d.ttfc, 0.99)) {
        (Some(a), Some(b)) => {
            Some(i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX))
        }
        _ => None,
    };
    r.res.cpu = Some(Cpu {
        phase: format!("{conc} concurrent streams, {secs} s"),
        cpu_ms: cpu_s * 1e3,
        requests: g.started,
        per_request_us: (g.started > 0).then(|| cpu_s * 1e6 / g.started as f64),
        frames: g.frames,
        per_frame_us: (g.frames > 0).then(|| cpu_s * 1e6 / g.frames as f64),
        latency: Some(Pcts::of(&g.ttfc)),
    });
    r.res.streams = Some(Streams {
        conc,
        deltas: p.deltas,
        interval_ms: p.interval_ms,
        ttfc_added_p99,
        gateway_ttfc: Pcts::of(&g.ttfc),
        direct_ttfc: Pcts::of(&d.ttfc),
        gateway_gap: Pcts::of(&g.gaps),
        direct_gap: Pcts::of(&d.gaps),
        gateway_ok: g.ok,
        gateway_lost: g.lost,
        direct_ok: d.ok,
        direct_lost: d.lost,
        gateway_max_open: g.max_open,
        direct_max_open: d.max_open,
    });
}
