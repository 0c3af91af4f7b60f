//! `droid2api-mock`: runs the mock upstream as a process (for the Python SDK conformance
//! scripts). Prints exactly one line, `MOCK_LISTENING http://HOST:PORT`, to stdout once it
//! listens, then serves until SIGTERM or Ctrl-C. Logs go to stderr (`RUST_LOG`, default `warn`).
//! Drive it through the `/_mock/` control API.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use droid2api_mock::{MockOptions, MockUpstream};

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
