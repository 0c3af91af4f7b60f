//! `droid2api-bench`: the end-to-end benchmark of droid2api.
//!
//! It starts the in-repo mock upstream in bench mode (`droid2api-mock --bench`: fixed delay,
//! streams of N content deltas paced M ms, no recording) and the gateway binary with a fresh
//! data folder, optionally pinned with `taskset` (gateway on CPU 1, mock and this load
//! generator on CPU 0), and measures each scenario the same way, through the gateway and
//! directly against the mock in the same run:
//!
//! * **added latency** at c=1: interleaved rounds, gateway − direct (p50, p99, p99.9);
//! * **CPU per request / per frame**: utime + stime of the gateway's process tree (all
//!   threads, `/proc/PID/stat`) over a fixed-rate phase, divided by requests or frames;
//! * **sustained rate**: an open-loop sweep (×1.5 steps) against a 20 ms upstream, latency
//!   from each request's *scheduled* send time (coordinated omission corrected), reporting the
//!   highest rate with p99 < 30 ms and < 100 ms and whether the rig (direct also failing, or the
//!   generator behind schedule) rather than the gateway was the limit;
//! * **RSS** idle, under load (median of 100 ms samples) and peak (with `VmHWM`);
//! * **streams**: added time to the first content frame (c=1, c=100), frame-gap p99, streams
//!   lost, up to 1,000 concurrent streams.
//!
//! `--compare 'OTHER_CMD'` runs a second gateway (an older build, the Node version, any gateway
//! speaking the same API and environment variables) through the same scenarios and prints
//! ratios. Output: a markdown table on stdout, progress on stderr, `--json PATH` optional.
//! Presets: `--smoke` (CI), default (a few minutes), `--full`; `--scenario NAME` runs one.

mod cli;
mod client;
mod load;
mod procfs;
mod procs;
mod progress;
mod report;
mod scenario;
mod sse;
mod stats;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::cli::{Args, Pin, Preset};
use crate::procs::{GatewayCmd, MockStart, Placement};
use crate::report::{GatewayResult, Report, RunInfo, ScenarioResult};
use crate::scenario::{Ctx, Gw, SCENARIOS, Scenario};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        let mut out = std::io::stdout().lock();
        for s in SCENARIOS {
            let _ = writeln!(out, "{:<22} {}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    match start(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("droid2api-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn selected(names: &[String]) -> Result<Vec<Scenario>, String> {
    if names.is_empty() {
        return Ok(SCENARIOS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            SCENARIOS
                .iter()
                .find(|s| s.name == n)
                .copied()
                .ok_or_else(|| {
                    let all: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    format!("unknown scenario {n:?}; known: {}", all.join(", "))
                })
        })
        .collect()
}

fn absolute(p: &Path, what: &str) -> Result<PathBuf, String> {
    std::fs::canonicalize(p).map_err(|e| {
        format!(
            "{what} {}: {e} (build the release binaries with `cargo build --release --workspace`, or pass --build, or point --gateway/--mock at other builds)",
            p.display()
        )
    })
}

fn start(args: Args) -> Result<ExitCode, String> {
    let scenarios = selected(&args.scenarios)?;
    let gateway_env = cli::parse_env(&args.gateway_env)?;
    if args.build {
        let status = std::process::Command::new("cargo")
            .args([
                "build",
                "--release",
                "-p",
                "droid2api",
                "-p",
                "droid2api-mock",
            ])
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() {
            return Err("cargo build --release failed".into());
        }
    }
    let gateway = absolute(&args.gateway, "gateway")?;
    let mock = absolute(&args.mock, "mock")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rig = procs::parse_cpu_list(&args.rig_cpus)
        .ok_or_else(|| format!("--rig-cpus: not a CPU list: {:?}", args.rig_cpus))?;
    let gateway_cpus = procs::parse_cpu_list(&args.gateway_cpus)
        .ok_or_else(|| format!("--gateway-cpus: not a CPU list: {:?}", args.gateway_cpus))?;
    let pinned = match args.pin {
        Pin::Off => false,
        Pin::On => true,
        // Only when both CPU lists exist for this process: elsewhere (a container showing
        // CPUs 4-5, say) the run goes unpinned rather than failing to start the gateway.
        Pin::Auto => {
            cpus >= 2
                && procs::have_taskset()
                && procs::cpus_allowed(&rig)
                && procs::cpus_allowed(&gateway_cpus)
        }
    };
    let placement = if pinned {
        procs::pin_self(&rig).map_err(|e| format!("pinning the generator to {rig:?}: {e}"))?;
        Placement {
            gateway: Some(args.gateway_cpus.clone()),
            rig: Some(args.rig_cpus.clone()),
        }
    } else {
        Placement {
            gateway: None,
            rig: None,
        }
    };
    procs::raise_fd_limit();
    let threads = args.threads.unwrap_or(if pinned { 1 } else { cpus }).max(1);
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("tokio runtime: {e}"))?;
    let preset = if args.smoke {
        Preset::smoke()
    } else if args.full {
        Preset::full()
    } else {
        Preset::default_preset()
    };
    let temp = tempfile::Builder::new()
        .prefix("droid2api-bench-")
        .tempdir()
        .map_err(|e| format!("temporary folder: {e}"))?;
    let mut gws = vec![Gw {
        label: gateway
            .file_name()
            .map_or("gateway".into(), |n| n.to_string_lossy().into_owned()),
        cmd: GatewayCmd::Binary(gateway),
    }];
    if let Some(other) = &args.compare {
        gws.push(Gw {
            label: "compare".into(),
            cmd: GatewayCmd::Shell(other.clone()),
        });
    }
    let info = RunInfo {
        preset: preset.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date_utc: utc_now(),
        machine: machine(cpus),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        load_before: procfs::loadavg().unwrap_or_default(),
        load_after: String::new(),
        placement: placement.describe(threads),
        gateways: gws
            .iter()
            .map(|g| (g.label.clone(), g.cmd.describe()))
            .collect(),
        mock: format!("{} --bench", mock.display()),
        duration_s: 0.0,
    };
    let live = Arc::new(load::Live::default());
    let temp_path = temp.path().to_path_buf();
    let report = rt.block_on(async {
        let ctx = Ctx {
            conv: client::conversation(preset.body_messages, preset.body_bytes),
            progress: progress::Progress::new((scenarios.len() * gws.len()) as u64, live.clone()),
            preset,
            live,
            mock_bin: mock,
            placement,
            gateway_env,
            temp: temp_path,
            max_rate: args.max_rate,
        };
        run(ctx, &scenarios, &gws, info).await
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let md = report::markdown(&report);
    let mut out = std::io::stdout().lock();
    out.write_all(md.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if args.keep_temp {
        let kept = temp.keep();
        eprintln!("droid2api-bench: logs and data kept in {}", kept.display());
    }
    let failed = report
        .scenarios
        .iter()
        .flat_map(|s| &s.results)
        .any(|r| r.error.is_some() || r.errors > 0);
    Ok(if failed {
        eprintln!("droid2api-bench: some scenarios failed or had errors (see the notes)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run(ctx: Ctx, scenarios: &[Scenario], gws: &[Gw], mut info: RunInfo) -> Report {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    for sc in scenarios {
        ctx.progress
            .phase(format!("{} · starting the mock", sc.name));
        let dir = ctx.temp.join(sc.name);
        let _ = std::fs::create_dir_all(&dir);
        let start = MockStart {
            delay_ms: 0,
            stream_deltas: ctx.preset.deltas,
            stream_interval_ms: sc.upstream_interval_ms(ctx.preset.interval_ms),
        };
        let results =
            match procs::start_mock(&ctx.mock_bin, ctx.placement.rig.as_deref(), &dir, start).await
            {
                Ok(mock) => {
                    let mut results = Vec::new();
                    for gw in gws {
                        let r = scenario::run_one(&ctx, sc, gw, &mock).await;
                        ctx.progress.line(&summary_line(sc, &r));
                        results.push(r);
                        ctx.progress.advance();
                    }
                    mock.stop(Duration::from_secs(5)).await;
                    results
                }
                Err(e) => gws
                    .iter()
                    .map(|gw| GatewayResult {
                        gateway: gw.label.clone(),
                        error: Some(e.to_string()),
                        ..GatewayResult::default()
                    })
                    .collect(),
            };
        out.push(ScenarioResult {
            name: sc.name.into(),
            about: sc.about.into(),
            streaming: sc.streaming(),
            results,
        });
    }
    ctx.progress.finish();
    info.load_after = procfs::loadavg().unwrap_or_default();
    info.duration_s = started.elapsed().as_secs_f64();
    Report {
        run: info,
        scenarios: out,
    }
}

fn summary_line(sc: &Scenario, r: &GatewayResult) -> String {
    if let Some(e) = &r.error {
        return format!(
            "{} · {}: not run: {}",
            sc.name,
            r.gateway,
            e.lines().next().unwrap_or_default()
        );
    }
    let added = r
        .added
        .map(|a| {
            format!(
                "added p50 {} p99 {}",
                report::signed(a.p50),
                report::signed(a.p99)
            )
        })
        .unwrap_or_default();
    format!(
        "{} · {}: done {added}, {} errors",
        sc.name, r.gateway, r.errors
    )
}

fn machine(cpus: usize) -> String {
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(String::new(), |kib| {
            format!(", {:.0} GiB RAM", kib / 1024.0 / 1024.0)
        });
    format!(
        "{cpus} CPUs ({}){mem_gib}",
        procfs::cpu_model().unwrap_or_else(|| "unknown CPU".into())
    )
}

/// `YYYY-MM-DD HH:MM` (UTC) for a Unix time.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn utc_now() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_798_761_599), "2026-12-31 23:59");
    }

    #[test]
    fn scenario_selection() {
        assert_eq!(selected(&[]).map(|s| s.len()), Ok(SCENARIOS.len()));
        let one = selected(&["models".into()]).expect("known");
        assert_eq!(one[0].name, "models");
        assert!(selected(&["nope".into()]).is_err_and(|e| e.contains("messages")));
    }
}
