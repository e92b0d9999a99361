//! `cargo xtask`: project tasks that need more than cargo: `bench`, the gateway's overhead
//! measured against the mock upstream on loopback (see docs/benchmarks.md), and `migrate`,
//! the database migrations the gateway would run at start, and `pricing`, which refreshes
//! the pricing table from LiteLLM's.

mod bench;
mod migrate;
mod pricing;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("migrate") => migrate::run(&args[1..]),
        Some("pricing") => pricing::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask bench [--duration SECS] [--connections 1,32,256] [--gateway-workers N] [--no-build] [--no-nginx] [--virtual-key]\n       cargo xtask migrate [--database-url URL]   (default: $DATABASE_URL, else {})\n       cargo xtask pricing [--from model_prices_and_context_window.json]",
                migrate::DEFAULT_URL
            );
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's root: the folder above this crate.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
