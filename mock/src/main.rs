//! `droid2api-mock`: runs the mock upstream as a process (for the Python SDK conformance
//! scripts). Prints exactly one line, `MOCK_LISTENING http://HOST:PORT`, to stdout once it
//! listens, then serves until SIGTERM or Ctrl-C. Logs go to stderr (`RUST_LOG`, default `warn`).
//! Drive it through the `/_mock/` control API.
//!
//! `--bench` (or any of `--delay-ms`, `--stream-deltas`, `--stream-interval-ms`,
//! `--cool-prefix`, `--ban-prefix`) starts it in bench mode for `droid2api-bench`: the LLM
//! routes answer after a fixed delay, stream N content deltas paced M ms apart (one event per
//! write), record nothing, and give 429 `Retry-After: 3600` / 402 to keys with the cooling /
//! banned prefix.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use droid2api_mock::{BenchOptions, MockOptions, MockUpstream};

#[derive(Debug, Parser)]
#[command(name = "droid2api-mock", about = "Mock Factory.ai + WorkOS upstream")]
struct Args {
    /// Port to listen on (0 = a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Seed for the awkward SSE splitting (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Largest awkward SSE piece, in bytes.
    #[arg(long, default_value_t = droid2api_mock::DEFAULT_MAX_PIECE)]
    max_piece: usize,
    /// Smallest pause between SSE pieces, in ms.
    #[arg(long, default_value_t = 1)]
    min_piece_delay_ms: u64,
    /// Largest pause between SSE pieces, in ms.
    #[arg(long, default_value_t = 3)]
    max_piece_delay_ms: u64,
    /// Write generated SSE streams with CRLF line endings.
    #[arg(long)]
    crlf: bool,
    /// A valid WorkOS refresh token to start with (repeatable).
    #[arg(long = "refresh-token")]
    refresh_tokens: Vec<String>,
    /// Bench mode (implied by any of the flags below).
    #[arg(long)]
    bench: bool,
    /// Bench mode: pause before every LLM reply's headers, in ms [default: 0].
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Bench mode: content deltas per stream [default: 64].
    #[arg(long)]
    stream_deltas: Option<u32>,
    /// Bench mode: pause between two content deltas, in ms [default: 20].
    #[arg(long)]
    stream_interval_ms: Option<u64>,
    /// Bench mode: keys with this prefix get 429 with `Retry-After: 3600` [default: fk-cool-].
    #[arg(long)]
    cool_prefix: Option<String>,
    /// Bench mode: keys with this prefix get 402 [default: fk-ban-].
    #[arg(long)]
    ban_prefix: Option<String>,
}

impl Args {
    fn bench_options(&self) -> Option<BenchOptions> {
        let any = self.delay_ms.is_some()
            || self.stream_deltas.is_some()
            || self.stream_interval_ms.is_some()
            || self.cool_prefix.is_some()
            || self.ban_prefix.is_some();
        if !(self.bench || any) {
            return None;
        }
        let d = BenchOptions::default();
        Some(BenchOptions {
            delay_ms: self.delay_ms.unwrap_or(d.delay_ms),
            stream_deltas: self.stream_deltas.unwrap_or(d.stream_deltas),
            stream_interval_ms: self.stream_interval_ms.unwrap_or(d.stream_interval_ms),
            cool_prefix: self.cool_prefix.clone().unwrap_or(d.cool_prefix),
            ban_prefix: self.ban_prefix.clone().unwrap_or(d.ban_prefix),
        })
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let options = MockOptions {
        max_piece: args.max_piece,
        piece_delay_ms: (args.min_piece_delay_ms, args.max_piece_delay_ms),
        seed: args.seed,
        default_crlf: args.crlf,
        bench: args.bench_options(),
        ..MockOptions::default()
    };
    let mock = MockUpstream::bind(SocketAddr::new(args.host, args.port), options).await?;
    for token in args.refresh_tokens {
        mock.add_refresh_token(token);
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "MOCK_LISTENING {}", mock.url())?;
        out.flush()?;
    }
    terminated().await;
    mock.shutdown().await;
    Ok(())
}
