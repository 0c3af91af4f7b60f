//! The scenarios and their phases. Each scenario gets a fresh mock; each gateway a fresh data
//! folder, started and stopped around its run, sampled for RSS every 100 ms.

mod streams;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cli::Preset;
use crate::client::{self, CLAUDE, GPT, Shape, Target};
use crate::load::{self, ConnPool, Live, Until};
use crate::procfs::{self, CpuMark, RssSampler};
use crate::procs::{self, GatewayCmd, Placement, Proc};
use crate::progress::Progress;
use crate::report::{self, Closed, Cpu, GatewayResult, Sweep};
use crate::stats::{self, Pcts, Round, Step};

/// The key the gateways get as `FACTORY_API_KEY`, and the direct calls use.
pub const GOOD_KEY: &str = "fk-bench-0000000000000000000000000000";
/// The admin key (≥ 16 characters) the pool scenario seeds keys with.
pub const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";
/// A connection cap per open-loop pool: an overloaded target gets errors, not fd exhaustion.
const CONN_CAP: usize = 4000;

/// A client route and the upstream call it becomes.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub client: Shape,
    pub model: &'static str,
    pub upstream: Shape,
}

const MESSAGES: Route = Route {
    path: "/v1/messages",
    client: Shape::Anthropic,
    model: CLAUDE,
    upstream: Shape::Anthropic,
};
const CHAT_ANTHROPIC: Route = Route {
    path: "/v1/chat/completions",
    client: Shape::Chat,
    model: CLAUDE,
    upstream: Shape::Anthropic,
};
const CHAT_RESPONSES: Route = Route {
    path: "/v1/chat/completions",
    client: Shape::Chat,
    model: GPT,
    upstream: Shape::Responses,
};

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Requests(Route),
    Streams(Route),
    Models,
    ManyStreams(Route),
    Pool(Route),
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub kind: Kind,
}

impl Scenario {
    pub fn streaming(&self) -> bool {
        matches!(self.kind, Kind::Streams(_) | Kind::ManyStreams(_))
    }

    /// The pace of the mock's stream events: a non-streaming scenario models an upstream that
    /// answers whole, so when the gateway asks it to stream (non-streaming clients are served
    /// from a streamed upstream call since issue 13) its events come at once.
    pub fn upstream_interval_ms(&self, stream_interval_ms: u64) -> u64 {
        if self.streaming() {
            stream_interval_ms
        } else {
            0
        }
    }
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "messages",
        about: "POST /v1/messages, pass-through to Anthropic Messages, not streamed",
        kind: Kind::Requests(MESSAGES),
    },
    Scenario {
        name: "chat-anthropic",
        about: "POST /v1/chat/completions translated to Anthropic Messages, not streamed",
        kind: Kind::Requests(CHAT_ANTHROPIC),
    },
    Scenario {
        name: "chat-responses",
        about: "POST /v1/chat/completions translated to OpenAI Responses, not streamed",
        kind: Kind::Requests(CHAT_RESPONSES),
    },
    Scenario {
        name: "models",
        about: "GET /v1/models (no upstream call); closed loop for throughput",
        kind: Kind::Models,
    },
    Scenario {
        name: "pool-10k",
        about: "POST /v1/messages with a pool of 10,000 keys, 30% of them cooling (429, Retry-After 3600)",
        kind: Kind::Pool(MESSAGES),
    },
    Scenario {
        name: "messages-stream",
        about: "POST /v1/messages streamed, pass-through",
        kind: Kind::Streams(MESSAGES),
    },
    Scenario {
        name: "chat-anthropic-stream",
        about: "POST /v1/chat/completions streamed, translated from Anthropic Messages",
        kind: Kind::Streams(CHAT_ANTHROPIC),
    },
    Scenario {
        name: "chat-responses-stream",
        about: "POST /v1/chat/completions streamed, translated from OpenAI Responses",
        kind: Kind::Streams(CHAT_RESPONSES),
    },
    Scenario {
        name: "streams-1000",
        about: "1,000 concurrent /v1/messages streams (64 deltas, 20 ms apart by default)",
        kind: Kind::ManyStreams(MESSAGES),
    },
];

/// Everything a scenario run needs from the command line.
pub struct Ctx {
    pub preset: Preset,
    pub progress: Progress,
    pub live: Arc<Live>,
    pub conv: Vec<(&'static str, String)>,
    pub mock_bin: PathBuf,
    pub placement: Placement,
    pub gateway_env: Vec<(String, String)>,
    pub temp: PathBuf,
    pub max_rate: Option<u32>,
}

/// A gateway to measure.
pub struct Gw {
    pub label: String,
    pub cmd: GatewayCmd,
}

/// One scenario against one gateway, in progress.
pub(crate) struct Run<'a> {
    pub ctx: &'a Ctx,
    pub sc: &'a Scenario,
    pub gw: &'a Gw,
    pub gw_addr: SocketAddr,
    pub gw_pid: u32,
    pub mock: SocketAddr,
    pub res: GatewayResult,
    /// Time windows under load (for the RSS median).
    pub windows: Vec<(Instant, Instant)>,
}

impl Run<'_> {
    pub fn phase(&self, what: &str) {
        self.ctx.live.reset();
        self.ctx
            .progress
            .phase(format!("{} · {} · {what}", self.sc.name, self.gw.label));
    }

    /// Adds the failures of a measured phase to the errors and the notes.
    pub fn failures(&mut self, phase: &str, f: &BTreeMap<String, u64>) {
        let n: u64 = f.values().sum();
        if n == 0 {
            return;
        }
        self.res.errors += n;
        self.note(format!("{phase}: {}", summarize(f)));
    }

    pub fn note(&mut self, text: String) {
        self.res.notes.push(text);
    }

    pub fn gateway_target(&self, path: &str, body: Option<Bytes>) -> Target {
        let expect_marker = body.is_some();
        Target {
            addr: self.gw_addr,
            spec: Arc::new(client::gateway_spec(self.gw_addr, path, body)),
            expect_marker,
        }
    }

    pub fn direct_target(&self, shape: Shape, body: Bytes) -> Target {
        Target {
            addr: self.mock,
            spec: Arc::new(client::direct_spec(self.mock, shape, body, GOOD_KEY)),
            expect_marker: true,
        }
    }

    pub fn body(&self, shape: Shape, model: &str, stream: bool) -> Bytes {
        client::body(shape, model, &self.ctx.conv, stream)
    }
}

/// `HTTP 429 ×3, timeout ×1`
pub fn summarize(f: &BTreeMap<String, u64>) -> String {
    f.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Changes the bench mock's settings.
pub async fn mock_set(mock: SocketAddr, settings: Value) -> Result<Value, String> {
    let body = Bytes::from(settings.to_string());
    match procs::http(mock, hyper::Method::POST, "/_mock/bench", &[], Some(body)).await {
        Some((200, b)) => serde_json::from_slice(&b).map_err(|e| e.to_string()),
        Some((s, b)) => Err(format!(
            "mock control answered {s}: {}",
            String::from_utf8_lossy(&b)
        )),
        None => Err("mock control did not answer".into()),
    }
}

/// A counter of the mock: `GET /_mock/stats` (`requests`: calls it recorded, i.e. outside the
/// bench routes) or `GET /_mock/bench` (`cooled`, …); 0 when unreadable.
async fn mock_count(mock: SocketAddr, page: &str, name: &str) -> u64 {
    match procs::http(
        mock,
        hyper::Method::GET,
        &format!("/_mock/{page}"),
        &[],
        None,
    )
    .await
    {
        Some((200, b)) => serde_json::from_slice::<Value>(&b)
            .ok()
            .and_then(|v| v[name].as_u64())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Runs one scenario against one gateway; never fails (a failure is recorded in the result).
pub async fn run_one(ctx: &Ctx, sc: &Scenario, gw: &Gw, mock: &Proc) -> GatewayResult {
    let mut res = GatewayResult {
        gateway: gw.label.clone(),
        ..GatewayResult::default()
    };
    let dir = ctx.temp.join(format!("{}-{}", sc.name, gw.label));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        res.error = Some(format!("cannot create {}: {e}", dir.display()));
        return res;
    }
    let p = &ctx.preset;
    let shape = json!({"delay_ms": 0, "stream_deltas": p.deltas,
                       "stream_interval_ms": sc.upstream_interval_ms(p.interval_ms)});
    if let Err(e) = mock_set(mock.addr, shape).await {
        res.error = Some(e);
        return res;
    }
    let other_calls_before = mock_count(mock.addr, "stats", "requests").await;
    let mut env = vec![("ADMIN_ACCESS_KEY".to_owned(), ADMIN_KEY.to_owned())];
    if !matches!(sc.kind, Kind::Pool(_)) {
        env.push(("FACTORY_API_KEY".into(), GOOD_KEY.into()));
    }
    env.extend(ctx.gateway_env.iter().cloned());
    ctx.progress
        .phase(format!("{} · {} · starting", sc.name, gw.label));
    let gateway = match procs::start_gateway(
        &gw.cmd,
        &gw.label,
        ctx.placement.gateway.as_deref(),
        &dir,
        mock.addr,
        &env,
    )
    .await
    {
        Ok(g) => g,
        Err(e) => {
            res.error = Some(e.to_string());
            return res;
        }
    };
    let sampler = RssSampler::start(gateway.pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    res.rss.idle_kib = sampler.now_kib();
    let mut run = Run {
        ctx,
        sc,
        gw,
        gw_addr: gateway.addr,
        gw_pid: gateway.pid,
        mock: mock.addr,
        res,
        windows: Vec::new(),
    };
    let outcome = match sc.kind {
        Kind::Requests(route) => request_phases(&mut run, route).await,
        Kind::Models => models_phases(&mut run).await,
        Kind::Pool(route) => pool_phases(&mut run, route).await,
        Kind::Streams(route) => streams::stream_phases(&mut run, route).await,
        Kind::ManyStreams(route) => streams::many_streams(&mut run, route).await,
    };
    if let Err(e) = outcome {
        run.res.error = Some(e);
    }
    let (load, max) = procfs::rss_summary(&sampler.samples(), &run.windows);
    run.res.rss.load_kib = load;
    run.res.rss.peak_kib = max.max(sampler.hwm_kib()).max(run.res.rss.idle_kib);
    drop(sampler);
    gateway.stop(Duration::from_secs(10)).await;
    let other_calls = mock_count(mock.addr, "stats", "requests")
        .await
        .saturating_sub(other_calls_before);
    if other_calls > 0 {
        run.note(format!(
            "the gateway also made {other_calls} upstream calls outside the LLM routes (balance sync, refresh, …) during the run"
        ));
    }
    run.res
}

/// Interleaved c=1 rounds against the gateway and the mock; the differential.
async fn latency_rounds(r: &mut Run<'_>, gw: &Target, direct: &Target) {
    let p = &r.ctx.preset;
    let live = r.ctx.live.clone();
    r.phase("c=1 warm-up");
    load::closed_loop(gw, 1, Until::Count(p.warmup), &live).await;
    load::closed_loop(direct, 1, Until::Count(p.warmup), &live).await;
    let mut rounds = Vec::new();
    let mut failures = BTreeMap::new();
    for i in 0..p.rounds {
        r.phase(&format!("c=1 round {}/{}", i + 1, p.rounds));
        let n = Until::Count(p.per_round);
        // Alternate which side goes first, so a drift over time hits both.
        let (g, d) = if i % 2 == 0 {
            let d = load::closed_loop(direct, 1, n, &live).await.0;
            (load::closed_loop(gw, 1, n, &live).await.0, d)
        } else {
            let g = load::closed_loop(gw, 1, n, &live).await.0;
            (g, load::closed_loop(direct, 1, n, &live).await.0)
        };
        for (k, v) in &g.failures {
            *failures.entry(k.clone()).or_insert(0) += v;
        }
        if d.errors() > 0 {
            r.note(format!(
                "direct c=1 round {}: {}",
                i + 1,
                summarize(&d.failures)
            ));
        }
        rounds.push(Round {
            gateway: g.hist,
            direct: d.hist,
        });
    }
    r.failures("c=1 rounds", &failures);
    r.res.added = stats::added(&rounds);
}

/// Connections an open-loop run at `rate` needs to never wait: in flight × 1.5, plus slack.
fn conns_for(rate: u32, delay_ms: u64) -> usize {
    let in_flight = f64::from(rate) * (delay_ms as f64 + 5.0) / 1000.0;
    ((in_flight * 1.5).ceil() as usize + 8).min(CONN_CAP)
}

/// Open loop at a fixed rate: the gateway's CPU per request.
async fn cpu_phase(r: &mut Run<'_>, gw: &Target) {
    let p = &r.ctx.preset;
    let (rate, secs) = (p.cpu_rate, p.cpu_secs);
    r.phase(&format!("CPU at {rate} req/s for {secs} s"));
    let pool = Arc::new(ConnPool::new(gw.addr, CONN_CAP));
    pool.fill(conns_for(rate, 0)).await;
    let mark = CpuMark::now(r.gw_pid);
    let t0 = Instant::now();
    let o = load::open_loop(
        gw,
        &pool,
        f64::from(rate),
        Duration::from_secs_f64(secs),
        &r.ctx.live,
    )
    .await;
    let cpu_s = mark.elapsed_cpu_s(r.gw_pid);
    r.windows.push((t0, Instant::now()));
    pool.clear();
    r.note(format!("CPU phase by thread: {}", mark.by_thread(r.gw_pid)));
    r.res.cpu = Some(Cpu {
        phase: format!("open loop, {rate} req/s, {secs} s"),
        cpu_ms: cpu_s * 1e3,
        requests: o.out.ok,
        per_request_us: (o.out.ok > 0).then(|| cpu_s * 1e6 / o.out.ok as f64),
        frames: 0,
        per_frame_us: None,
        latency: Some(Pcts::of(&o.out.hist)),
    });
    let lat = Pcts::of(&o.out.hist);
    r.note(format!(
        "CPU phase latency: p50 {}, p99 {}, max {}",
        report::dur(lat.p50),
        report::dur(lat.p99),
        report::dur(lat.max)
    ));
    let ticks = cpu_s * procfs::ticks_per_second() as f64;
    if ticks < 50.0 {
        r.note(format!(
            "CPU/req from only {ticks:.0} clock ticks of CPU (±2 ticks): use the default or --full preset for a precise number"
        ));
    }
    r.failures("CPU phase", &o.out.failures);
}

fn step_of(rate: u32, o: &load::OpenOutcome) -> Step {
    Step {
        rate,
        sent: o.sent,
        errors: o.out.errors(),
        p99: stats::q(&o.out.hist, 0.99),
        lag_p99: stats::q(&o.lag, 0.99).unwrap_or(0),
        conn_waits: o.conn_waits,
    }
}

async fn sweep_step(
    r: &mut Run<'_>,
    t: &Target,
    pool: &Arc<ConnPool>,
    rate: u32,
    side: &str,
) -> Step {
    let p = &r.ctx.preset;
    r.phase(&format!("sweep {rate} req/s ({side})"));
    pool.fill(conns_for(rate, p.upstream_delay_ms)).await;
    let live = r.ctx.live.clone();
    load::open_loop(
        t,
        pool,
        f64::from(rate),
        Duration::from_secs_f64(p.step_warmup_secs),
        &live,
    )
    .await;
    let t0 = Instant::now();
    let o = load::open_loop(
        t,
        pool,
        f64::from(rate),
        Duration::from_secs_f64(p.step_secs),
        &live,
    )
    .await;
    if side == "gateway" {
        r.windows.push((t0, Instant::now()));
    }
    let step = step_of(rate, &o);
    if !o.out.failures.is_empty() {
        r.note(format!(
            "sweep {rate} req/s ({side}): {}",
            summarize(&o.out.failures)
        ));
    }
    step
}

/// The sustained-rate sweep against a slow upstream: up from `sweep_start` until p99 reaches
/// 100 ms (or errors), down from it when even the start fails 30 ms; then direct-to-mock at the
/// first failing rate of each limit, to tell the gateway's limit from the rig's.
async fn sweep(r: &mut Run<'_>, gw: &Target, direct: &Target) -> Result<(), String> {
    let p = r.ctx.preset.clone();
    mock_set(r.mock, json!({"delay_ms": p.upstream_delay_ms})).await?;
    let gw_pool = Arc::new(ConnPool::new(gw.addr, CONN_CAP));
    let direct_pool = Arc::new(ConnPool::new(direct.addr, CONN_CAP));
    let [limit30, limit100] = stats::LIMITS;
    let max = r.ctx.max_rate.unwrap_or(p.sweep_max);
    let up: Vec<u32> = p.sweep_rates().into_iter().filter(|x| *x <= max).collect();
    let down = p.sweep_rates_down();
    let mut steps: Vec<Step> = Vec::new();
    while let Some(rate) = stats::next_rate(&up, &down, &steps) {
        let step = sweep_step(r, gw, &gw_pool, rate, "gateway").await;
        steps.push(step);
    }
    gw_pool.clear();
    let mut direct_steps: Vec<Step> = Vec::new();
    for limit in [limit30, limit100] {
        if let Some(rate) = stats::first_failure(&steps, limit)
            && !direct_steps.iter().any(|d| d.rate == rate)
        {
            // Is it the gateway or the rig? Direct-to-mock at the same rate tells.
            let d = sweep_step(r, direct, &direct_pool, rate, "direct").await;
            direct_steps.push(d);
        }
    }
    direct_pool.clear();
    mock_set(r.mock, json!({"delay_ms": 0})).await?;
    steps.sort_by_key(|s| s.rate);
    let waits: Vec<String> = steps
        .iter()
        .filter(|s| s.conn_waits > 0)
        .map(|s| {
            format!(
                "{} req/s ×{}",
                report::group(u64::from(s.rate)),
                s.conn_waits
            )
        })
        .collect();
    if !waits.is_empty() {
        r.note(format!(
            "sweep: requests that found no idle connection and opened one (the connect is in their latency): {}",
            waits.join(", ")
        ));
    }
    let under_30ms = stats::verdict(&steps, &direct_steps, limit30);
    let under_100ms = stats::verdict(&steps, &direct_steps, limit100);
    for (name, v) in [("30 ms", &under_30ms), ("100 ms", &under_100ms)] {
        if let Some(rate) = v.first_fail {
            let g = steps.iter().find(|s| s.rate == rate);
            let d = direct_steps.iter().find(|s| s.rate == rate);
            let limit_ns = if name == "30 ms" { 30e6 } else { 100e6 };
            let headroom = d.and_then(|d| d.p99).map_or(String::new(), |p99| {
                format!(
                    " (the rig alone used {:.0}% of the budget)",
                    p99 as f64 * 100.0 / limit_ns
                )
            });
            r.note(format!(
                "p99 < {name} first failed at {} req/s: gateway {}; direct to the mock {}{headroom}",
                report::group(u64::from(rate)),
                g.map_or("—".into(), describe_step),
                d.map_or("not run".into(), describe_step)
            ));
        }
    }
    r.res.sweep = Some(Sweep {
        upstream_delay_ms: p.upstream_delay_ms,
        under_30ms,
        under_100ms,
        steps,
        direct_steps,
    });
    Ok(())
}

fn describe_step(s: &Step) -> String {
    format!(
        "p99 {}, {} errors, generator lag p99 {}",
        s.p99.map_or("—".into(), report::dur),
        s.errors,
        report::dur(s.lag_p99)
    )
}

/// Non-streaming requests: c=1 differential, CPU per request, sustained-rate sweep.
async fn request_phases(r: &mut Run<'_>, route: Route) -> Result<(), String> {
    let gw = r.gateway_target(route.path, Some(r.body(route.client, route.model, false)));
    let direct = r.direct_target(route.upstream, r.body(route.upstream, route.model, false));
    latency_rounds(r, &gw, &direct).await;
    cpu_phase(r, &gw).await;
    sweep(r, &gw, &direct).await
}

/// `GET /v1/models`: c=1 differential against the mock's static list, then closed-loop
/// throughput (its CPU per request comes from that phase).
async fn models_phases(r: &mut Run<'_>) -> Result<(), String> {
    let gw = r.gateway_target("/v1/models", None);
    let direct = Target {
        addr: r.mock,
        spec: Arc::new(client::direct_models_spec(r.mock)),
        expect_marker: false,
    };
    latency_rounds(r, &gw, &direct).await;
    let p = r.ctx.preset.clone();
    let (conc, secs) = (p.models_conc, Duration::from_secs_f64(p.models_secs));
    let live = r.ctx.live.clone();
    r.phase(&format!("closed loop c={conc} (direct)"));
    let (d, d_el) = load::closed_loop(&direct, conc, Until::Time(secs), &live).await;
    r.phase(&format!("closed loop c={conc} (gateway)"));
    let mark = CpuMark::now(r.gw_pid);
    let t0 = Instant::now();
    let (g, g_el) = load::closed_loop(&gw, conc, Until::Time(secs), &live).await;
    let cpu_s = mark.elapsed_cpu_s(r.gw_pid);
    r.windows.push((t0, Instant::now()));
    r.note(format!(
        "closed loop by thread: {}",
        mark.by_thread(r.gw_pid)
    ));
    r.failures("closed loop", &g.failures);
    r.res.cpu = Some(Cpu {
        phase: format!("closed loop c={conc}"),
        cpu_ms: cpu_s * 1e3,
        requests: g.ok,
        per_request_us: (g.ok > 0).then(|| cpu_s * 1e6 / g.ok as f64),
        frames: 0,
        per_frame_us: None,
        latency: Some(Pcts::of(&g.hist)),
    });
    r.res.closed = Some(Closed {
        conc,
        gateway_rps: g.ok as f64 / g_el.as_secs_f64().max(1e-9),
        direct_rps: d.ok as f64 / d_el.as_secs_f64().max(1e-9),
        gateway: Pcts::of(&g.hist),
        direct: Pcts::of(&d.hist),
    });
    Ok(())
}

/// Keys for the pool scenario: `pct` % of them (spread evenly) with the cooling prefix.
pub fn pool_keys(n: u32, pct: u32) -> (Vec<String>, u32) {
    let mut cooling = 0;
    let keys = (0..n)
        .map(|i| {
            // A fixed permutation of 0..100 spreads the cooling keys through the pool.
            if (u64::from(i) * 37 % 100) < u64::from(pct) {
                cooling += 1;
                format!("fk-cool-{i:06}-benchpoolkey")
            } else {
                format!("fk-bench-{i:06}-poolkey")
            }
        })
        .collect();
    (keys, cooling)
}

/// A pool of keys seeded through the admin API; the cooling ones are made to cool by traffic
/// (each answers 429 `Retry-After: 3600` once), then the request phases run.
async fn pool_phases(r: &mut Run<'_>, route: Route) -> Result<(), String> {
    let p = r.ctx.preset.clone();
    let (keys, cooling) = pool_keys(p.pool_keys, p.pool_cool_pct);
    r.phase(&format!("seeding {} keys", keys.len()));
    let body = Bytes::from(json!({"text": keys.join("\n")}).to_string());
    let admin = [("x-admin-key", ADMIN_KEY.to_owned())];
    let seeded = procs::http(
        r.gw_addr,
        hyper::Method::POST,
        "/admin/keys/batch",
        &admin,
        Some(body),
    )
    .await;
    match seeded {
        Some((200 | 201, b)) => {
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            let added = v["data"]["added"].as_u64().unwrap_or(0);
            if added != u64::from(p.pool_keys) {
                return Err(format!(
                    "the pool took {added} of {} keys: {v}",
                    p.pool_keys
                ));
            }
        }
        Some((s, b)) => {
            return Err(format!(
                "seeding keys through POST /admin/keys/batch answered {s}: {}",
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        None => return Err("seeding keys: no answer".into()),
    }
    let gw = r.gateway_target(route.path, Some(r.body(route.client, route.model, false)));
    r.phase(&format!("cooling {cooling} keys"));
    let before = mock_count(r.mock, "bench", "cooled").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let live = r.ctx.live.clone();
    loop {
        let cooled = mock_count(r.mock, "bench", "cooled")
            .await
            .saturating_sub(before);
        if cooled >= u64::from(cooling) {
            break;
        }
        if Instant::now() >= deadline {
            r.note(format!(
                "only {cooled} of {cooling} cooling keys were hit before the deadline"
            ));
            break;
        }
        load::closed_loop(&gw, 8, Until::Count(500), &live).await;
    }
    if let Some((200, b)) =
        procs::http(r.gw_addr, hyper::Method::GET, "/admin/stats", &admin, None).await
    {
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        r.note(format!(
            "pool: {} keys, {} cooling, {} active",
            v["data"]["total"], v["data"]["cooling"], v["data"]["active"]
        ));
    }
    let direct = r.direct_target(route.upstream, r.body(route.upstream, route.model, false));
    latency_rounds(r, &gw, &direct).await;
    cpu_phase(r, &gw).await;
    sweep(r, &gw, &direct).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keys_spread_the_cooling_share() {
        let (keys, cooling) = pool_keys(10_000, 30);
        assert_eq!(keys.len(), 10_000);
        assert_eq!(cooling, 3000);
        assert_eq!(
            keys.iter().filter(|k| k.starts_with("fk-cool-")).count(),
            3000
        );
        // Evenly spread: every block of 100 keys holds 30 cooling ones.
        for block in keys.chunks(100) {
            assert_eq!(
                block.iter().filter(|k| k.starts_with("fk-cool-")).count(),
                30
            );
        }
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(
            keys.iter()
                .all(|k| (8..=512).contains(&k.len()) && !k.contains(' '))
        );
    }

    #[test]
    fn connection_counts_cover_the_requests_in_flight() {
        assert_eq!(conns_for(1000, 20), 46); // 25 in flight × 1.5 + 8
        assert_eq!(conns_for(100, 0), 9);
        assert_eq!(conns_for(1_000_000, 20), CONN_CAP);
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
    }
}
