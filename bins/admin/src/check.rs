//! `tollgate-admin check-config`: reads a LiteLLM config exactly as `tollgate --config` would
//! (environment references included) and reports every setting in it as supported, ignored
//! with the reason, or unknown, as a table or as JSON.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};
use tollgate_domain::GatewayConfig;
use tollgate_domain::config::{ConfigError, ProcessEnv, SettingReport, SettingStatus};

use crate::table;

/// Exit code for an unreadable or invalid configuration (sysexits' EX_USAGE), as `tollgate`
/// itself exits on one.
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Exit code, with `--strict` only, for a valid config holding settings this build does not
/// know (sysexits' EX_DATAERR). Ignored settings never fail the check: they are recognized.
pub const EXIT_UNKNOWN_SETTINGS: u8 = 65;

/// How many settings got each verdict.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    supported: usize,
    ignored: usize,
    unknown: usize,
}

impl Counts {
    fn of(settings: &[SettingReport]) -> Self {
        let mut counts = Self::default();
        for setting in settings {
            match setting.status {
                SettingStatus::Supported => counts.supported += 1,
                SettingStatus::Ignored(_) => counts.ignored += 1,
                SettingStatus::Unknown => counts.unknown += 1,
            }
        }
        counts
    }
}

/// Checks the config at `path`, prints the report and picks the exit code.
pub fn run(path: &Path, strict: bool, json: bool) -> ExitCode {
    let shown = path.display();
    let config = std::fs::read_to_string(path)
        .map_err(|error| (None, format!("reading {shown}: {error}")))
        .and_then(|text| {
            GatewayConfig::from_yaml(&text, &ProcessEnv).map_err(|error| {
                let at = match &error {
                    ConfigError::Invalid { path, .. } => Some(path.clone()),
                    ConfigError::Syntax(_) => None,
                };
                (at, format!("{shown}: {error}"))
            })
        });
    let config = match config {
        Ok(config) => config,
        Err((at, message)) => {
            if json {
                print(&pretty(&json!({
                    "file": shown.to_string(),
                    "valid": false,
                    "error": {"path": at, "message": message},
                })));
            }
            eprintln!("tollgate-admin: {message}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let counts = Counts::of(&config.settings);
    print(&if json {
        pretty(&report_json(&shown.to_string(), &config, counts))
    } else {
        report_text(&shown.to_string(), &config, counts)
    });
    if strict && counts.unknown > 0 {
        eprintln!(
            "tollgate-admin: {shown}: {} unknown setting{} (--strict)",
            counts.unknown,
            if counts.unknown == 1 { "" } else { "s" }
        );
        return ExitCode::from(EXIT_UNKNOWN_SETTINGS);
    }
    ExitCode::SUCCESS
}

/// The models, the master key, the settings table and a summary line.
fn report_text(file: &str, config: &GatewayConfig, counts: Counts) -> String {
    let mut out = format!("{file}: valid\n");
    for deployment in &config.deployments {
        out.push_str(&format!(
            "  {} -> {} at {} (id {})\n",
            deployment.model_name,
            deployment.litellm_model(),
            deployment.api_base.as_deref().unwrap_or("(offline)"),
            deployment.id
        ));
    }
    out.push_str(&format!(
        "  master key: {}\n\n",
        if config.master_key.is_some() { "set" } else { "NOT SET: the gateway will accept every request" }
    ));
    let rows: Vec<Vec<String>> = config
        .settings
        .iter()
        .map(|setting| {
            let reason = match &setting.status {
                SettingStatus::Ignored(reason) => reason.clone(),
                SettingStatus::Supported | SettingStatus::Unknown => "-".to_owned(),
            };
            vec![setting.path.clone(), setting.status.name().to_owned(), reason]
        })
        .collect();
    out.push_str(&table::format(&["setting", "status", "reason"], &rows));
    out.push_str(&format!(
        "\n{} settings: {} supported, {} ignored, {} unknown\n",
        config.settings.len(),
        counts.supported,
        counts.ignored,
        counts.unknown
    ));
    out
}

fn report_json(file: &str, config: &GatewayConfig, counts: Counts) -> Value {
    let settings: Vec<Value> = config
        .settings
        .iter()
        .map(|setting| {
            let reason = match &setting.status {
                SettingStatus::Ignored(reason) => Value::String(reason.clone()),
                SettingStatus::Supported | SettingStatus::Unknown => Value::Null,
            };
            json!({"path": setting.path, "status": setting.status.name(), "reason": reason})
        })
        .collect();
    let models: Vec<Value> = config
        .deployments
        .iter()
        .map(|deployment| {
            json!({
                "model_name": deployment.model_name,
                "model": deployment.litellm_model(),
                "api_base": deployment.api_base,
                "id": deployment.id,
            })
        })
        .collect();
    json!({
        "file": file,
        "valid": true,
        "master_key_set": config.master_key.is_some(),
        "models": models,
        "settings": settings,
        "summary": {
            "settings": config.settings.len(),
            "supported": counts.supported,
            "ignored": counts.ignored,
            "unknown": counts.unknown,
        },
    })
}

fn pretty(value: &Value) -> String {
    format!("{}\n", crate::output::pretty(value))
}

/// Writes the report; a closed pipe (`| head`) is the reader's choice, not a failure.
fn print(text: &str) {
    if let Err(error) = crate::emit(text) {
        eprintln!("tollgate-admin: {error:#}");
    }
}
