//! `tollgate-admin`: operator commands. Today it checks a config the way the gateway will
//! read it; keys, teams, spend, migrations and imports join as their issues land.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate_domain::GatewayConfig;
use tollgate_domain::config::ProcessEnv;

/// Exit code for an unusable configuration (sysexits' EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "tollgate-admin", version, about = "Operator commands for Tollgate")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reads a LiteLLM config.yaml exactly as `tollgate --config` would (environment
    /// references included) and reports its models and any settings it would ignore.
    CheckConfig {
        #[arg(long, short = 'c', env = "CONFIG_FILE_PATH")]
        config: PathBuf,
        /// Exit non-zero when some settings would be ignored, not only when invalid.
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::CheckConfig { config, strict } => check_config(&config, strict),
    }
}

fn check_config(path: &std::path::Path, strict: bool) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("tollgate-admin: reading {}: {error}", path.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let config = match GatewayConfig::from_yaml(&text, &ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tollgate-admin: {}: {error}", path.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    println!("{}: valid", path.display());
    for deployment in &config.deployments {
        let api_base = deployment.api_base.as_deref().unwrap_or("(offline)");
        println!(
            "  {} -> {} at {} (id {})",
            deployment.model_name,
            deployment.litellm_model(),
            api_base,
            deployment.id
        );
    }
    println!(
        "  master key: {}",
        if config.master_key.is_some() { "set" } else { "NOT SET: the gateway will accept every request" }
    );
    if config.unsupported.is_empty() {
        return ExitCode::SUCCESS;
    }
    println!("  ignored by this build: {}", config.unsupported.join(", "));
    if strict { ExitCode::from(EXIT_BAD_CONFIG) } else { ExitCode::SUCCESS }
}
