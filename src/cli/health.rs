//! `droid2api health`: GET `/health` on the gateway's own address (the container's
//! `HEALTHCHECK`).

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::client::{self, CliError};
use super::{EXIT_FAILURE, EXIT_OK, complain};
use crate::config::Env;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The gateway's base URL [default: the local gateway's address from PORT, HOST, .env and
    /// data/config.json; HOST 0.0.0.0 or :: is reached on the loopback]
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    timeout: u64,
}

pub async fn run(env: &Env, args: HealthArgs) -> i32 {
    match check(env, &args).await {
        Ok(line) => {
            let _ = writeln!(std::io::stdout(), "{line}");
            EXIT_OK
        }
        // Always 1, a configuration error included: Docker reserves exit code 2 of a
        // HEALTHCHECK, and either way the gateway's health could not be confirmed.
        Err(e) => {
            complain(&e);
            EXIT_FAILURE
        }
    }
}

async fn check(env: &Env, args: &HealthArgs) -> Result<String, CliError> {
    let base = client::base_url(env, args.url.as_deref())?;
    let http = client::http(Duration::from_secs(args.timeout))?;
    let url = format!("{base}/health");
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| client::unreachable(&base, &e))?;
    let status = resp.status().as_u16();
    if status == 200 {
        Ok(format!("healthy: {url} answered 200"))
    } else {
        Err(CliError::Unreachable(format!(
            "unhealthy: {url} answered {status}"
        )))
    }
}
