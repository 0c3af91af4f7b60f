//! Command line: `droid2api [serve]`, `check-config`, `health` and `keys …`.
//!
//! Exit codes, for every command: 0 success; 1 failure (the gateway is unhealthy or
//! unreachable, or the admin API refused the request: its message goes to stderr); 2 usage or
//! configuration error (bad arguments, an invalid configuration, no admin key).
//!
//! `health` and `keys` talk to a running gateway over HTTP: by default the one this machine's
//! settings describe (`PORT`, `HOST`, `.env`, `data/config.json`, read as the gateway reads
//! them), else `--url`. Secrets never travel as arguments: the admin key comes from
//! `ADMIN_ACCESS_KEY` or `--admin-key-file`, keys to add from stdin or a file.

mod client;
mod health;
mod import;
mod keys;
mod output;

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::config::{Env, Redacted, Settings};
use crate::server::{Running, shutdown_signal};
use crate::telemetry;

/// Success.
pub const EXIT_OK: i32 = 0;
/// Failure: unhealthy, unreachable, or refused by the admin API.
pub const EXIT_FAILURE: i32 = 1;
/// Usage or configuration error.
pub const EXIT_USAGE: i32 = 2;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 failure (unhealthy or unreachable gateway, or an error answered by the admin API); 2 usage or configuration error.";

/// droid2api: Factory.ai models behind the OpenAI and Anthropic wire formats.
#[derive(Debug, Parser)]
#[command(name = "droid2api", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands. Each one's arguments live in its own module; `run` dispatches.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground (the default).
    #[command(after_help = EXIT_CODES)]
    Serve,
    /// Validate the configuration and print the effective settings with secrets masked.
    #[command(after_help = EXIT_CODES)]
    CheckConfig,
    /// Check that the gateway answers GET /health (exit 0 healthy, 1 not).
    #[command(after_help = EXIT_CODES)]
    Health(health::HealthArgs),
    /// Manage the key pool of a running gateway through its admin API.
    #[command(after_help = keys::AFTER_HELP)]
    Keys(keys::KeysArgs),
    /// Import a Node.js droid2api folder (key pool, config.json, usage history) into the data
    /// folder; safe to run again. Exit 0 done, 1 refused or failed, 2 configuration error.
    #[command(after_help = EXIT_CODES)]
    Migrate(crate::store::migrate::MigrateArgs),
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let env = Env::from_process();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&env).await,
        Command::CheckConfig => check_config(&env),
        Command::Health(args) => health::run(&env, args).await,
        Command::Keys(args) => keys::run(&env, args).await,
        Command::Migrate(args) => match crate::store::migrate::load_settings(&args, &env) {
            Ok(settings) => crate::store::migrate::run_cli(&args, &settings),
            Err(e) => {
                complain(e);
                EXIT_USAGE
            }
        },
    }
}

/// Prints `droid2api: <message>` on stderr.
pub(crate) fn complain(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "droid2api: {message}");
}

fn load(env: &Env) -> Result<Settings, i32> {
    Settings::load(env).map_err(|e| {
        complain(e);
        EXIT_USAGE
    })
}

fn check_config(env: &Env) -> i32 {
    let settings = match load(env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", Redacted(&settings));
    for w in &settings.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(out, "configuration OK");
    EXIT_OK
}

async fn serve(env: &Env) -> i32 {
    let settings = match load(env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _guard = match telemetry::init_logging(&settings) {
        Ok(g) => g,
        Err(e) => {
            complain(e);
            return EXIT_USAGE;
        }
    };
    let running = match Running::start(settings).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            complain(e);
            return EXIT_FAILURE;
        }
    };
    running.run_until(shutdown_signal()).await;
    EXIT_OK
}
