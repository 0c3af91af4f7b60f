//! Command line: `droid2api [serve]` and `droid2api check-config`.

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::config::{Env, Redacted, Settings};
use crate::server::{Running, shutdown_signal};
use crate::telemetry;

/// droid2api: Factory.ai models behind the OpenAI and Anthropic wire formats.
#[derive(Debug, Parser)]
#[command(name = "droid2api", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground (the default).
    Serve,
    /// Validate the configuration and print the effective settings with secrets masked.
    CheckConfig,
    /// Import a Node.js droid2api folder (key pool, config.json, usage history) into the data
    /// folder; safe to run again. Exit 0 done, 1 refused or failed.
    Migrate(crate::store::migrate::MigrateArgs),
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let env = Env::from_process();
    let settings = match Settings::load(&env) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "droid2api: {e}");
            return 2;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{}", Redacted(&settings));
            for w in &settings.warnings {
                let _ = writeln!(out, "warning: {w}");
            }
            let _ = writeln!(out, "configuration OK");
            0
        }
        Command::Migrate(args) => crate::store::migrate::run_cli(&args, &settings),
        Command::Serve => {
            let _guard = match telemetry::init_logging(&settings) {
                Ok(g) => g,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "droid2api: {e}");
                    return 2;
                }
            };
            let running = match Running::start(settings).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("{e}");
                    let _ = writeln!(std::io::stderr(), "droid2api: {e}");
                    return 1;
                }
            };
            running.run_until(shutdown_signal()).await;
            0
        }
    }
}
