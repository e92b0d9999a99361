//! `tollgate`: LiteLLM's proxy command line over the tollgate crate. Parses flags, reads the
//! config, runs the gateway until SIGTERM/SIGINT, and maps failures to exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tollgate::{Gateway, GatewayConfig, ProcessEnv};

/// mimalloc: glibc's malloc and free were about 8% of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an unusable configuration (sysexits' EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// An LLM gateway, compatible with LiteLLM's proxy: one OpenAI-compatible endpoint in front
/// of every model provider.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version)]
struct Args {
    /// LiteLLM config.yaml; without it the built-in demo config (offline models) is served.
    #[arg(long, short = 'c', env = "CONFIG_FILE_PATH")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 4000)]
    port: u16,
    /// Worker threads serving connections, each with its own single-threaded runtime and
    /// upstream pool (LiteLLM starts worker processes; these threads do the same work in
    /// one process). Defaults to the number of CPUs.
    #[arg(long = "num_workers", alias = "num-workers", env = "NUM_WORKERS")]
    num_workers: Option<usize>,
    /// PEM certificate chain; with --ssl_keyfile_path, serve HTTPS.
    #[arg(long = "ssl_certfile_path", env = "SSL_CERTFILE_PATH", requires = "ssl_keyfile_path")]
    ssl_certfile_path: Option<PathBuf>,
    /// PEM private key for --ssl_certfile_path.
    #[arg(long = "ssl_keyfile_path", env = "SSL_KEYFILE_PATH", requires = "ssl_certfile_path")]
    ssl_keyfile_path: Option<PathBuf>,
    /// Seconds in-flight requests and streams may run on after SIGTERM.
    #[arg(long = "shutdown_grace", env = "TOLLGATE_SHUTDOWN_GRACE", default_value_t = 30.0)]
    shutdown_grace: f64,
    /// Log at debug level (LiteLLM's --debug).
    #[arg(long)]
    debug: bool,
    /// Log at trace level (LiteLLM's --detailed_debug).
    #[arg(long = "detailed_debug")]
    detailed_debug: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The config says whether logs are JSON (`json_logs`), so it is read first; reading it
    // logs nothing.
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            init_logging(&args, false);
            eprintln!("tollgate: invalid config: {}", describe(&error));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_logging(&args, config.observability.json_logs);
    // The main runtime only accepts connections and waits for signals; the workers serve.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tollgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tollgate: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line. The library errors print their cause inside their
/// own message too, so a cause the line already says is left out (else a database that does
/// not answer is reported four times over).
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !line.contains(&message) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&message);
        }
    }
    line
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<GatewayConfig> {
    match path {
        None => Ok(GatewayConfig::demo(&ProcessEnv)?),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            GatewayConfig::from_yaml(&text, &ProcessEnv).with_context(|| path.display().to_string())
        }
    }
}

async fn run(args: Args, config: GatewayConfig) -> anyhow::Result<()> {
    let models = config.model_names().len();
    let demo = args.config.is_none();
    let workers = args
        .num_workers
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut gateway = Gateway::from_config(config)
        .await?
        .with_workers(workers)
        .with_shutdown_grace(Duration::try_from_secs_f64(args.shutdown_grace).context("--shutdown_grace")?);
    let scheme = match (&args.ssl_certfile_path, &args.ssl_keyfile_path) {
        (Some(cert), Some(key)) => {
            gateway = gateway.with_tls(cert, key)?;
            "https"
        }
        _ => "http",
    };
    let host = if args.host.contains(':') { format!("[{}]", args.host) } else { args.host.clone() };
    let address: SocketAddr = format!("{host}:{}", args.port)
        .parse()
        .with_context(|| format!("--host {} is not an IP address", args.host))?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    if demo {
        tracing::info!(
            "no --config given: serving the built-in demo models 'demo' and 'demo-embedding', which answer offline"
        );
    }
    tracing::info!(
        models,
        workers,
        version = tollgate_http::VERSION,
        "tollgate listening on {scheme}://{bound}"
    );
    // SIGHUP or a change to the file reloads the model list and router settings.
    // Without a file (the demo) there is nothing to reload: SIGHUP is answered with a
    // line instead of its default, ending the process.
    let _watching = AbortOnDrop(match args.config.clone() {
        Some(path) => tokio::spawn(gateway.reloader().watch_file(path)),
        None => tokio::spawn(ignore_hangups()),
    });
    gateway.serve(listener, tollgate::shutdown_signal()).await?;
    tracing::info!("tollgate stopped");
    Ok(())
}

/// Logs each SIGHUP (no config file to reload) until aborted.
async fn ignore_hangups() {
    #[cfg(unix)]
    if let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        while hangups.recv().await.is_some() {
            tracing::warn!("SIGHUP received, but there is no config file to reload (no --config)");
        }
    }
}

/// Stops the config watcher when serving ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// RUST_LOG wins; else LITELLM_LOG (DEBUG, INFO, ERROR …) or the debug flags. `json`
/// (`json_logs` or `JSON_LOGS=true`, as in LiteLLM) writes one JSON object per line, event
/// fields at the top level; each request's line then comes at INFO (target
/// `tollgate::request`).
fn init_logging(args: &Args, json: bool) {
    use tracing_subscriber::EnvFilter;
    let level = if args.detailed_debug {
        "trace".to_owned()
    } else if args.debug {
        "debug".to_owned()
    } else {
        std::env::var("LITELLM_LOG").map(|l| l.to_lowercase()).unwrap_or_else(|_| "info".to_owned())
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            EnvFilter::try_new(format!("{level},hyper=warn,hyper_util=warn,rustls=warn,opentelemetry=warn"))
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that, like the library errors, says its cause in its own message too.
    #[derive(Debug, thiserror::Error)]
    #[error("database: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let error = anyhow::Error::new(Outer(std::io::Error::other("pool timed out"))).context("starting");
        assert_eq!(describe(&error), "starting: database: pool timed out");
        let plain = anyhow::anyhow!("cannot listen").context("--port 1");
        assert_eq!(describe(&plain), "--port 1: cannot listen");
    }
}
