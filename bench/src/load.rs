//! Load patterns: closed-loop workers (c connections, c requests in flight), an open-loop
//! generator (a fixed schedule, latency from each request's due time, a pool of idle
//! connections large enough that it never waits for one — and a count of every time it did),
//! and stream workers that time the first content frame and every gap between frames.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Conn, Failure, Target};
use crate::sse::Scanner;
use crate::stats::{self, Hist, Schedule};

/// A request that has not been answered after this long counts as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Counters the progress display reads while a phase runs.
#[derive(Debug, Default)]
pub struct Live {
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    pub fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
    }
}

/// Latencies of served requests and the reasons of the others.
pub struct Outcome {
    pub hist: Hist,
    pub ok: u64,
    pub failures: BTreeMap<String, u64>,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            hist: stats::new_hist(),
            ok: 0,
            failures: BTreeMap::new(),
        }
    }
}

impl Outcome {
    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    fn fail(&mut self, f: &Failure, live: &Live) {
        *self.failures.entry(f.to_string()).or_default() += 1;
        live.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn served(&mut self, d: Duration, live: &Live) {
        stats::record(&mut self.hist, d);
        self.ok += 1;
        live.done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn merge(&mut self, other: &Outcome) {
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
    }
}

/// How long a closed-loop phase lasts.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    Count(u64),
    Time(Duration),
}

/// Hands out the right to send one more request.
struct Budget {
    left: AtomicU64,
    deadline: Option<Instant>,
}

impl Budget {
    fn new(until: Until) -> Self {
        match until {
            Until::Count(n) => Self {
                left: AtomicU64::new(n),
                deadline: None,
            },
            Until::Time(d) => Self {
                left: AtomicU64::new(u64::MAX),
                deadline: Some(Instant::now() + d),
            },
        }
    }

    fn take(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

async fn reconnect(conn: &mut Option<Conn>, addr: SocketAddr) -> Result<(), Failure> {
    if conn.as_ref().is_some_and(Conn::is_open) {
        return Ok(());
    }
    match client::connect(addr).await {
        Ok(c) => {
            *conn = Some(c);
            Ok(())
        }
        Err(e) => {
            // Do not spin on a target that refuses connections.
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(Failure::Transport(e.to_string()))
        }
    }
}

/// `conc` workers, each with its own connection, send requests back to back.
pub async fn closed_loop(
    target: &Target,
    conc: usize,
    until: Until,
    live: &Arc<Live>,
) -> (Outcome, Duration) {
    let budget = Arc::new(Budget::new(until));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..conc.max(1) {
        let (target, budget, live) = (target.clone(), budget.clone(), live.clone());
        set.spawn(async move {
            let mut out = Outcome::default();
            let mut conn: Option<Conn> = None;
            while budget.take() {
                if let Err(f) = reconnect(&mut conn, target.addr).await {
                    out.fail(&f, &live);
                    continue;
                }
                let Some(c) = conn.as_mut() else { continue };
                let t0 = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, client::fetch(c, &target)).await {
                    Ok(Ok(())) => out.served(t0.elapsed(), &live),
                    Ok(Err(f)) => {
                        if matches!(f, Failure::Transport(_)) {
                            conn = None;
                        }
                        out.fail(&f, &live);
                    }
                    Err(_) => {
                        conn = None;
                        out.fail(&Failure::Timeout, &live);
                    }
                }
            }
            out
        });
    }
    let mut total = Outcome::default();
    while let Some(r) = set.join_next().await {
        if let Ok(out) = r {
            total.merge(&out);
        }
    }
    (total, start.elapsed())
}

/// Idle keep-alive connections for the open-loop generator, and a cap on how many it may hold
/// open at once (so an overloaded target cannot exhaust file descriptors).
pub struct ConnPool {
    addr: SocketAddr,
    idle: Mutex<Vec<Pooled>>,
    open: Arc<AtomicUsize>,
    cap: usize,
}

/// Counts an open connection of a pool until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection that belongs to a pool.
struct Pooled {
    conn: Conn,
    _slot: Slot,
}

impl ConnPool {
    pub fn new(addr: SocketAddr, cap: usize) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            open: Arc::new(AtomicUsize::new(0)),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn take(&self) -> Option<Pooled> {
        let mut idle = self.lock();
        while let Some(c) = idle.pop() {
            if c.conn.is_open() {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, c: Pooled) {
        self.lock().push(c);
    }

    /// The right to open one more connection, if under the cap.
    fn reserve(&self) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.open.clone()))
    }

    /// Opens connections until `n` (at most the cap) are idle, 64 connects at a time; returns
    /// how many failed.
    pub async fn fill(&self, n: usize) -> usize {
        let missing = n.min(self.cap).saturating_sub(self.idle());
        let mut failed = 0;
        let mut opened = 0;
        while opened < missing {
            let batch = (missing - opened).min(64);
            let mut set = JoinSet::new();
            for _ in 0..batch {
                let Some(slot) = self.reserve() else { break };
                let addr = self.addr;
                set.spawn(async move {
                    client::connect(addr)
                        .await
                        .map(|conn| Pooled { conn, _slot: slot })
                });
            }
            if set.is_empty() {
                break;
            }
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(c)) => self.put(c),
                    _ => failed += 1,
                }
            }
            opened += batch;
        }
        failed
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// The result of an open-loop run.
pub struct OpenOutcome {
    /// Latency from each request's due time (coordinated omission corrected).
    pub out: Outcome,
    pub sent: u64,
    /// How late requests left against their schedule.
    pub lag: Hist,
    /// Requests that found no idle connection and opened one (paying the connect).
    pub conn_waits: u64,
}

/// Sends `rate` requests per second for `duration` on schedule, whatever the answers do.
pub async fn open_loop(
    target: &Target,
    pool: &Arc<ConnPool>,
    rate: f64,
    duration: Duration,
    live: &Arc<Live>,
) -> OpenOutcome {
    let schedule = Schedule::new(rate, duration);
    let acc = Arc::new(Mutex::new(Outcome::default()));
    let mut lag = stats::new_hist();
    let mut conn_waits = 0u64;
    let start = Instant::now() + Duration::from_millis(2);
    let mut set = JoinSet::new();
    for i in 0..schedule.len() {
        let due_offset = schedule.due(i);
        let due = start + due_offset;
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        stats::record(&mut lag, Instant::now().saturating_duration_since(due));
        enum Got {
            Idle(Pooled),
            New(Slot),
        }
        let got = match pool.take() {
            Some(c) => Got::Idle(c),
            None => match pool.reserve() {
                Some(slot) => {
                    conn_waits += 1;
                    Got::New(slot)
                }
                None => {
                    let cap = format!("all {} connections busy", pool.cap());
                    acc.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .fail(&Failure::Transport(cap), live);
                    continue;
                }
            },
        };
        let (target, pool, acc, live) = (target.clone(), pool.clone(), acc.clone(), live.clone());
        set.spawn(async move {
            let work = async {
                let mut c = match got {
                    Got::Idle(c) => c,
                    Got::New(slot) => Pooled {
                        conn: client::connect(target.addr)
                            .await
                            .map_err(|e| Failure::Transport(e.to_string()))?,
                        _slot: slot,
                    },
                };
                let r = client::fetch(&mut c.conn, &target).await;
                if r.is_ok() && c.conn.is_open() {
                    pool.put(c);
                }
                r
            };
            let r = tokio::time::timeout_at(due + REQUEST_TIMEOUT, work).await;
            let done = Instant::now().saturating_duration_since(start);
            let latency = stats::open_loop_latency(due_offset, done);
            let mut acc = acc.lock().unwrap_or_else(|e| e.into_inner());
            match r {
                Ok(Ok(())) => acc.served(latency, &live),
                Ok(Err(f)) => acc.fail(&f, &live),
                Err(_) => acc.fail(&Failure::Timeout, &live),
            }
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    let out = std::mem::take(&mut *acc.lock().unwrap_or_else(|e| e.into_inner()));
    OpenOutcome {
        out,
        sent: schedule.len(),
        lag,
        conn_waits,
    }
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// What one stream scenario expects.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    pub target: Target,
    /// Content deltas the mock sends per stream.
    pub deltas: u32,
    /// A stream not finished after this long is lost.
    pub timeout: Duration,
}

/// Stream measurements.
pub struct StreamOutcome {
    /// Send → first content frame.
    pub ttfc: Hist,
    /// Between consecutive content frames.
    pub gaps: Hist,
    pub started: u64,
    pub ok: u64,
    pub lost: u64,
    pub frames: u64,
    pub failures: BTreeMap<String, u64>,
    /// Most streams open at once (client side).
    pub max_open: u64,
}

impl Default for StreamOutcome {
    fn default() -> Self {
        Self {
            ttfc: stats::new_hist(),
            gaps: stats::new_hist(),
            started: 0,
            ok: 0,
            lost: 0,
            frames: 0,
            failures: BTreeMap::new(),
            max_open: 0,
        }
    }
}

impl StreamOutcome {
    pub fn merge(&mut self, o: &StreamOutcome) {
        let _ = self.ttfc.add(&o.ttfc);
        let _ = self.gaps.add(&o.gaps);
        self.started += o.started;
        self.ok += o.ok;
        self.lost += o.lost;
        self.frames += o.frames;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        self.max_open = self.max_open.max(o.max_open);
    }

    fn lose(&mut self, why: String, live: &Live) {
        self.lost += 1;
        *self.failures.entry(why).or_default() += 1;
        live.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Streams open right now and the most seen.
#[derive(Debug, Default)]
pub struct OpenGauge {
    now: AtomicU64,
    max: AtomicU64,
}

impl OpenGauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(n, Ordering::Relaxed);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// Runs one stream on `conn`; `Err` means the connection is unusable.
async fn one_stream(
    conn: &mut Conn,
    st: &StreamTarget,
    out: &mut StreamOutcome,
    live: &Live,
) -> Result<(), ()> {
    out.started += 1;
    let t0 = Instant::now();
    let resp = match conn.send(st.target.spec.build()).await {
        Ok(r) => r,
        Err(e) => {
            out.lose(format!("send: {e}"), live);
            return Err(());
        }
    };
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    if status != 200 {
        let _ = body.collect().await;
        out.lose(Failure::Status(status).to_string(), live);
        return Ok(());
    }
    let mut scanner = Scanner::new();
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let (mut deltas, mut terminal, mut error) = (0u32, false, false);
    let (ttfc, gaps) = (&mut out.ttfc, &mut out.gaps);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                out.frames += u64::from(deltas);
                out.lose(format!("stream broke: {e}"), live);
                return Err(());
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let t = Instant::now();
        scanner.feed(&data, |ev| {
            if ev.deltas > 0 {
                match last {
                    None => {
                        first = Some(t);
                        stats::record(ttfc, t - t0);
                    }
                    Some(prev) => stats::record(gaps, t - prev),
                }
                last = Some(t);
                deltas += ev.deltas;
            }
            terminal |= ev.terminal;
            error |= ev.error;
        });
    }
    out.frames += u64::from(deltas);
    if error {
        out.lose("error event in the stream".into(), live);
    } else if !terminal {
        out.lose("ended without its terminal event".into(), live);
    } else if deltas != st.deltas {
        out.lose(format!("{deltas} of {} content frames", st.deltas), live);
    } else if first.is_none() && st.deltas > 0 {
        out.lose("no content frame".into(), live);
    } else {
        out.ok += 1;
        live.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// `conc` workers run streams back to back until `until`; worker i starts `i × ramp / conc`
/// late, so connections open gradually.
pub async fn stream_workers(
    st: &StreamTarget,
    conc: usize,
    until: Until,
    ramp: Duration,
    live: &Arc<Live>,
) -> StreamOutcome {
    let budget = Arc::new(Budget::new(until));
    let gauge = Arc::new(OpenGauge::default());
    let conc = conc.max(1);
    let mut set = JoinSet::new();
    for i in 0..conc {
        let (st, budget, live, gauge) = (st.clone(), budget.clone(), live.clone(), gauge.clone());
        let delay = ramp.mul_f64(i as f64 / conc as f64);
        set.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut out = StreamOutcome::default();
            let mut conn: Option<Conn> = None;
            while budget.take() {
                if let Err(f) = reconnect(&mut conn, st.target.addr).await {
                    out.started += 1;
                    out.lose(f.to_string(), &live);
                    continue;
                }
                let Some(c) = conn.as_mut() else { continue };
                gauge.enter();
                let r = tokio::time::timeout(st.timeout, one_stream(c, &st, &mut out, &live)).await;
                gauge.leave();
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(())) => conn = None,
                    Err(_) => {
                        out.lose("timeout".into(), &live);
                        conn = None;
                    }
                }
            }
            out
        });
    }
    let mut total = StreamOutcome::default();
    while let Some(r) = set.join_next().await {
        if let Ok(o) = r {
            total.merge(&o);
        }
    }
    total.max_open = gauge.max();
    total
}
