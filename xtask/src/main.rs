//! `cargo xtask`: project tasks that need more than cargo: `bench`, the gateway's overhead
//! measured against the mock upstream on loopback (see docs/benchmarks.md), and `migrate`,
//! the database migrations the gateway would run at start.

mod bench;
mod migrate;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("migrate") => migrate::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask bench [--duration SECS] [--connections 1,32,256] [--gateway-workers N] [--no-build] [--no-nginx] [--virtual-key]\n       cargo xtask migrate [--database-url URL]   (default: $DATABASE_URL, else {})",
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
