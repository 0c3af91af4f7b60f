//! Command line and presets.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pin {
    /// Pin when the machine has 2+ CPUs, `taskset` exists and the CPUs named are allowed.
    Auto,
    On,
    Off,
}

/// End-to-end benchmark of droid2api (and, with --compare, of another gateway) against the
/// in-repo mock upstream. Prints a markdown table on stdout; progress goes to stderr.
#[derive(Debug, Parser)]
#[command(name = "droid2api-bench", version)]
pub struct Args {
    /// The gateway binary to measure.
    #[arg(long, default_value = "target/release/droid2api")]
    pub gateway: PathBuf,
    /// The mock upstream binary (run in bench mode).
    #[arg(long, default_value = "target/release/droid2api-mock")]
    pub mock: PathBuf,
    /// A second gateway, as a shell command (`sh -c 'exec OTHER_CMD'`), started with the same
    /// environment variables and run through the same scenarios; ratios are printed.
    #[arg(long, value_name = "OTHER_CMD")]
    pub compare: Option<String>,
    /// A few seconds per scenario at tiny rates (the CI run; numbers mean nothing).
    #[arg(long)]
    pub smoke: bool,
    /// Longer rounds, steps and stream phases.
    #[arg(long, conflicts_with = "smoke")]
    pub full: bool,
    /// Run only this scenario (repeatable; see --list).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// CPU pinning with taskset.
    #[arg(long, value_enum, default_value = "auto")]
    pub pin: Pin,
    /// CPUs of the gateway when pinned.
    #[arg(long, default_value = "1")]
    pub gateway_cpus: String,
    /// CPUs of the mock and the load generator when pinned.
    #[arg(long, default_value = "0")]
    pub rig_cpus: String,
    /// Load generator threads [default: 1 when pinned, else the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra environment for the gateways (KEY=VALUE, repeatable), e.g. LOG_LEVEL=warn.
    #[arg(long = "gateway-env", value_name = "KEY=VALUE")]
    pub gateway_env: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Build the release binaries first (`cargo build --release -p droid2api -p droid2api-mock`).
    #[arg(long)]
    pub build: bool,
    /// Keep the temporary folder (gateway and mock logs, data folders) and print its path.
    #[arg(long)]
    pub keep_temp: bool,
    /// Highest rate of the sustained-rate sweep, requests per second.
    #[arg(long)]
    pub max_rate: Option<u32>,
}

/// Sizes and durations of every phase.
#[derive(Debug, Clone, Serialize)]
pub struct Preset {
    pub name: &'static str,
    /// Requests per side before the measured rounds (discarded).
    pub warmup: u64,
    /// Interleaved c=1 rounds, and requests per side per round.
    pub rounds: u32,
    pub per_round: u64,
    /// The fixed-rate phase that measures CPU per request.
    pub cpu_rate: u32,
    pub cpu_secs: f64,
    /// Sustained-rate sweep: first rate, factor per step, last rate, seconds per step (after a
    /// discarded warm-up), upstream delay.
    pub sweep_start: u32,
    pub sweep_factor: f64,
    pub sweep_max: u32,
    /// When even `sweep_start` fails a limit, the sweep steps down (÷ factor) to this rate.
    pub sweep_floor: u32,
    pub step_secs: f64,
    pub step_warmup_secs: f64,
    pub upstream_delay_ms: u64,
    /// Streams at c=1: rounds, streams per side per round, stream shape.
    pub c1_rounds: u32,
    pub c1_streams: u64,
    pub c1_deltas: u32,
    pub c1_interval_ms: u64,
    /// Concurrent streams: how many, for how long, stream shape.
    pub stream_conc: usize,
    pub stream_secs: f64,
    pub deltas: u32,
    pub interval_ms: u64,
    /// The many-streams scenario.
    pub big_streams: usize,
    pub big_secs: f64,
    /// `/v1/models` closed loop.
    pub models_conc: usize,
    pub models_secs: f64,
    /// Pool scenario: keys, and the share of them that cool (percent).
    pub pool_keys: u32,
    pub pool_cool_pct: u32,
    /// Request bodies: conversation turns and bytes per turn.
    pub body_messages: usize,
    pub body_bytes: usize,
}

impl Preset {
    pub fn default_preset() -> Self {
        Self {
            name: "default",
            warmup: 300,
            rounds: 7,
            per_round: 500,
            cpu_rate: 2000,
            cpu_secs: 3.0,
            sweep_start: 1000,
            sweep_factor: 1.5,
            sweep_max: 60_000,
            sweep_floor: 50,
            step_secs: 2.0,
            step_warmup_secs: 0.5,
            upstream_delay_ms: 20,
            c1_rounds: 7,
            c1_streams: 30,
            c1_deltas: 4,
            c1_interval_ms: 2,
            stream_conc: 100,
            stream_secs: 4.0,
            deltas: 64,
            interval_ms: 20,
            big_streams: 1000,
            big_secs: 5.0,
            models_conc: 50,
            models_secs: 3.0,
            pool_keys: 10_000,
            pool_cool_pct: 30,
            body_messages: 20,
            body_bytes: 400,
        }
    }

    pub fn full() -> Self {
        Self {
            name: "full",
            warmup: 1000,
            rounds: 15,
            per_round: 2000,
            cpu_secs: 10.0,
            step_secs: 10.0,
            step_warmup_secs: 1.0,
            c1_rounds: 15,
            c1_streams: 100,
            stream_secs: 20.0,
            big_secs: 30.0,
            models_secs: 10.0,
            ..Self::default_preset()
        }
    }

    pub fn smoke() -> Self {
        Self {
            name: "smoke",
            warmup: 20,
            rounds: 2,
            per_round: 30,
            cpu_rate: 100,
            cpu_secs: 1.0,
            sweep_start: 100,
            sweep_max: 230,
            sweep_floor: 40,
            step_secs: 0.5,
            step_warmup_secs: 0.2,
            c1_rounds: 1,
            c1_streams: 3,
            stream_conc: 5,
            stream_secs: 1.0,
            deltas: 8,
            interval_ms: 10,
            big_streams: 20,
            big_secs: 1.0,
            models_conc: 4,
            models_secs: 0.5,
            pool_keys: 200,
            ..Self::default_preset()
        }
    }

    /// The rates of the sweep: `sweep_start × factor^k` up to `sweep_max`.
    pub fn sweep_rates(&self) -> Vec<u32> {
        let mut rates = Vec::new();
        let mut r = f64::from(self.sweep_start.max(1));
        while r <= f64::from(self.sweep_max) && rates.len() < 64 {
            rates.push(r.round() as u32);
            r *= self.sweep_factor.max(1.05);
        }
        rates
    }

    /// The rates below `sweep_start`, highest first: `sweep_start ÷ factor^k` down to
    /// `sweep_floor`.
    pub fn sweep_rates_down(&self) -> Vec<u32> {
        let mut rates = Vec::new();
        let mut r = f64::from(self.sweep_start.max(1)) / self.sweep_factor.max(1.05);
        while r >= f64::from(self.sweep_floor.max(1)) && rates.len() < 64 {
            rates.push(r.round() as u32);
            r /= self.sweep_factor.max(1.05);
        }
        rates
    }
}

/// `KEY=VALUE` pairs.
pub fn parse_env(pairs: &[String]) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("--gateway-env expects KEY=VALUE, got {p:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_rates_grow_by_the_factor() {
        let p = Preset::default_preset();
        let r = p.sweep_rates();
        assert_eq!(&r[..4], &[1000, 1500, 2250, 3375]);
        assert!(r.last().is_some_and(|l| *l <= 60_000));
        assert_eq!(Preset::smoke().sweep_rates(), vec![100, 150, 225]);
        assert_eq!(p.sweep_rates_down(), vec![667, 444, 296, 198, 132, 88, 59]);
        assert_eq!(Preset::smoke().sweep_rates_down(), vec![67, 44]);
    }

    #[test]
    fn env_pairs() {
        assert_eq!(
            parse_env(&["A=1".into(), "B=x=y".into()]),
            Ok(vec![("A".into(), "1".into()), ("B".into(), "x=y".into())])
        );
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_env(&["A".into()]).is_err());
    }
}
