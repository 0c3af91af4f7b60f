//! The `droid2api` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc (default feature `mimalloc`): request bodies become many small allocations.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits its first 1 GiB arena eagerly on Linux (`arena_eager_commit=2`), which
/// showed as 9 MiB more RSS at idle than committing on demand, with no difference in CPU per
/// request (BENCHMARKS.md, "Memory"). Its options are read by its own constructor (priority
/// 101) and the arena is reserved at the first allocation, which Rust makes only after every
/// constructor has run; this one (priority 102) allocates nothing and leaves the option alone
/// when `MIMALLOC_ARENA_EAGER_COMMIT` is set, so the environment still wins.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[allow(unsafe_code)]
mod mimalloc_options {
    use std::ffi::{c_char, c_int, c_long};

    unsafe extern "C" {
        fn getenv(name: *const c_char) -> *mut c_char;
        fn mi_option_set(option: c_int, value: c_long);
    }

    /// `mi_option_arena_eager_commit` in mimalloc 3's `mi_option_e`.
    const ARENA_EAGER_COMMIT: c_int = 4;

    extern "C" fn commit_on_demand() {
        // SAFETY: a NUL-terminated name; getenv only reads the environment, which nothing
        // writes before main.
        let set = unsafe { !getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() };
        if !set {
            // SAFETY: a valid option index and value; mimalloc's options are plain globals.
            unsafe { mi_option_set(ARENA_EAGER_COMMIT, 0) };
        }
    }

    #[used]
    #[unsafe(link_section = ".init_array.00102")]
    static COMMIT_ON_DEMAND: extern "C" fn() = commit_on_demand;
}

#[tokio::main]
async fn main() {
    let cli = droid2api::cli::Cli::parse();
    let code = droid2api::cli::run(cli).await;
    std::process::exit(code);
}
