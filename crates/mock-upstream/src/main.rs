//! The mock OpenAI upstream as a standalone server, for the gateway load benchmark.
//!
//! `tollgate-mock-upstream [--port N] [--host 127.0.0.1] [--workers N]` serves every
//! endpoint with normal answers and without recording requests, prints one line
//! `listening on HOST:PORT` once bound (so a parent started with `--port 0` can read the
//! port), and exits 0 on SIGTERM or SIGINT.

use std::io::Write;
use std::process::ExitCode;

use tollgate_mock_upstream::{MockOptions, MockUpstream};

const USAGE: &str = "usage: tollgate-mock-upstream [--port N] [--host 127.0.0.1] [--workers N]";

/// sysexits.h `EX_USAGE`: the command was used incorrectly.
const EXIT_USAGE: u8 = 64;

/// Upper bound on `--workers`, far above any sensible value, to catch typos.
const MAX_WORKERS: usize = 1024;

#[derive(Debug)]
struct Args {
    host: String,
    port: u16,
    workers: usize,
}

/// What the command line asks for.
enum Command {
    Serve(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args { host: "127.0.0.1".to_owned(), port: 0, workers: 1 };
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(Command::Help);
        }
        if !matches!(flag.as_str(), "--port" | "--host" | "--workers") {
            return Err(format!("unknown argument '{flag}'"));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--port" => {
                parsed.port =
                    value.parse().map_err(|_| format!("invalid --port '{value}': expected 0-65535"))?;
            }
            "--host" => {
                if value.is_empty() {
                    return Err("--host must not be empty".to_owned());
                }
                parsed.host = value;
            }
            _ => {
                parsed.workers = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_WORKERS).contains(n))
                    .ok_or_else(|| format!("invalid --workers '{value}': expected 1-{MAX_WORKERS}"))?;
            }
        }
    }
    Ok(Command::Serve(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tollgate-mock-upstream: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.workers).enable_all().build();
    match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(err) => {
            eprintln!("tollgate-mock-upstream: could not start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    // Recording is off: the benchmark sends millions of requests nobody inspects.
    let options = MockOptions { record_requests: false };
    let mock = match MockUpstream::bind((args.host.as_str(), args.port), options).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("tollgate-mock-upstream: could not bind {}:{}: {err}", args.host, args.port);
            return ExitCode::FAILURE;
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        // The parent reads this line to learn the port; if it went away there is no one
        // to serve, so a failed write ends the process.
        if writeln!(stdout, "listening on {}", mock.addr()).and_then(|()| stdout.flush()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    match wait_for_shutdown().await {
        Ok(()) => {
            drop(mock);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("tollgate-mock-upstream: could not listen for signals: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
#[cfg(unix)]
async fn wait_for_shutdown() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
async fn wait_for_shutdown() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults() {
        let Ok(Command::Serve(args)) = parse(&[]) else {
            panic!("empty args must serve");
        };
        assert_eq!((args.host.as_str(), args.port, args.workers), ("127.0.0.1", 0, 1));
    }

    #[test]
    fn flags_with_and_without_equals() {
        let Ok(Command::Serve(args)) = parse(&["--port", "8080", "--host=0.0.0.0", "--workers=4"]) else {
            panic!("valid args must serve");
        };
        assert_eq!((args.host.as_str(), args.port, args.workers), ("0.0.0.0", 8080, 4));
    }

    #[test]
    fn rejects_bad_args() {
        for bad in [
            &["--port"][..],
            &["--port", "70000"],
            &["--workers", "0"],
            &["--workers", "x"],
            &["--host", ""],
            &["--verbose"],
            &["8080"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
    }
}
