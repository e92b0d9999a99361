//! `tollgate-admin`: operator commands. Checks a config the way the gateway will read it,
//! migrates the database, and manages keys, users, teams, organizations, customers and
//! budgets through a running gateway's LiteLLM management API.

mod api;
mod body;
mod check;
mod commands;
mod migrate;
mod output;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::{Api, Failure};
use crate::commands::Plan;
use crate::commands::budgets::BudgetCommand;
use crate::commands::customers::CustomerCommand;
use crate::commands::keys::KeyCommand;
use crate::commands::orgs::OrgCommand;
use crate::commands::teams::TeamCommand;
use crate::commands::users::UserCommand;

/// Exit code when the gateway refused, could not be reached, or the database failed.
const EXIT_FAILED: u8 = 1;

/// Exit code for a command line clap accepts but that cannot work (a malformed `--url`).
const EXIT_USAGE: u8 = 64;

/// Read when `--master-key` and `LITELLM_MASTER_KEY` are both absent, for deployments that
/// name their secrets after Tollgate.
const FALLBACK_MASTER_KEY_ENV: &str = "TOLLGATE_MASTER_KEY";

/// Where `--help` lists the options every management command shares.
const GATEWAY_OPTIONS: &str = "Gateway options";

#[derive(Debug, Parser)]
#[command(name = "tollgate-admin", version, about = "Operator commands for Tollgate")]
struct Args {
    #[command(flatten)]
    gateway: GatewayOptions,
    #[command(subcommand)]
    command: Command,
}

/// Where the gateway is and how to talk to it. Global, so they may follow the subcommand
/// (`tollgate-admin key list --json`), as operators tend to type them.
#[derive(Debug, clap::Args)]
struct GatewayOptions {
    /// The gateway's base URL.
    #[arg(long, global = true, help_heading = GATEWAY_OPTIONS, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:4000")]
    url: String,
    /// The gateway's master key (falls back to TOLLGATE_MASTER_KEY).
    #[arg(long, global = true, help_heading = GATEWAY_OPTIONS, env = "LITELLM_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// Print JSON, pretty-printed, instead of a table: the gateway's answer, or
    /// check-config's report.
    // Listed with each command's own options, not the gateway's: check-config takes it too.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reads a LiteLLM config.yaml exactly as `tollgate --config` would (environment
    /// references included) and lists every setting in it as supported, ignored (with the
    /// reason) or unknown. Exits 0 when valid, 64 when invalid (naming the path at fault),
    /// and with --strict 65 when valid but holding unknown settings.
    CheckConfig {
        /// The config file.
        #[arg(value_name = "CONFIG")]
        file: Option<PathBuf>,
        /// The config file, as `tollgate --config` takes it.
        #[arg(long, short = 'c', env = "CONFIG_FILE_PATH")]
        config: Option<PathBuf>,
        /// Also exit non-zero (65) when some settings are unknown to this build.
        #[arg(long)]
        strict: bool,
    },
    /// Applies pending database migrations (SQLite or PostgreSQL) and reports how many ran.
    Migrate {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Virtual keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Internal users.
    #[command(subcommand)]
    User(UserCommand),
    /// Teams and their members.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Organizations.
    #[command(subcommand, visible_alias = "organization")]
    Org(OrgCommand),
    /// Customers: the end users clients name in the `user` field of LLM requests.
    #[command(subcommand, visible_alias = "end-user")]
    Customer(CustomerCommand),
    /// Reusable budgets that customers and organizations point to.
    #[command(subcommand)]
    Budget(BudgetCommand),
}

fn main() -> ExitCode {
    let Args { gateway, command } = Args::parse();
    let plan = match command {
        Command::CheckConfig { file, config, strict } => {
            // The positional path wins over `-c` and CONFIG_FILE_PATH.
            let Some(path) = file.or(config) else {
                eprintln!("tollgate-admin: check-config needs a config file: check-config config.yaml");
                return ExitCode::from(EXIT_USAGE);
            };
            return check::run(&path, strict, gateway.json);
        }
        Command::Migrate { database_url } => {
            log_storage_warnings();
            let applied = block_on(migrate::run(&database_url));
            return finish(applied.and_then(|applied| emit(&format!("migrations applied: {applied}\n"))));
        }
        Command::Key(command) => command.plan(),
        Command::User(command) => command.plan(),
        Command::Team(command) => command.plan(),
        Command::Org(command) => command.plan(),
        Command::Customer(command) => command.plan(),
        Command::Budget(command) => command.plan(),
    };
    finish(block_on(manage(&gateway, plan)))
}

/// Makes one management call and prints its answer.
async fn manage(options: &GatewayOptions, plan: Plan) -> anyhow::Result<()> {
    // An exported-but-empty LITELLM_MASTER_KEY (a blank line in an .env file) means unset.
    let master_key = options
        .master_key
        .clone()
        .filter(|key| !key.is_empty())
        .or_else(|| std::env::var(FALLBACK_MASTER_KEY_ENV).ok().filter(|key| !key.is_empty()));
    let api = Api::new(&options.url, master_key.as_deref())?;
    let answer = api.send(&plan.call).await?;
    let text =
        if options.json { format!("{}\n", output::pretty(&answer)) } else { plan.output.render(&answer) };
    emit(&text)
}

/// Writes to stdout. A closed pipe (`tollgate-admin key list | head`) is the reader's choice,
/// not a failure; `print!` would panic on it.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("writing the output: {error}"))
        }
        _ => Ok(()),
    }
}

/// Shows the storage layer's warnings on stderr, where a migration Job's log keeps them:
/// above all that the database was migrated by a newer Tollgate (a rollback), which is no
/// error. `RUST_LOG` widens it.
fn log_storage_warnings() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tollgate_storage=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
}

/// Runs `work` on a single-threaded runtime: one request at a time needs no more, and it
/// starts faster than a pool of workers.
fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("starting the async runtime: {error}"))?;
    runtime.block_on(work)
}

/// Prints a failure and picks its exit code.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tollgate-admin: {error:#}");
            match error.downcast_ref::<Failure>() {
                Some(Failure::Usage(_)) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::from(EXIT_FAILED),
            }
        }
    }
}
