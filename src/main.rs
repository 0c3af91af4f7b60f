//! The `droid2api` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc (default feature `mimalloc`): request bodies become many small allocations.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = droid2api::cli::Cli::parse();
    let code = droid2api::cli::run(cli).await;
    std::process::exit(code);
}
