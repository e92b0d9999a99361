//! `cargo xtask`: project tasks that need more than cargo. Today: `bench`, the gateway's
//! overhead measured against the mock upstream on loopback (see docs/benchmarks.md).

mod bench;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask bench [--duration SECS] [--connections 1,32,256] [--gateway-workers N] [--no-build] [--no-nginx]"
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
