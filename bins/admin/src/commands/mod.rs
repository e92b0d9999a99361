//! The management subcommands: their flags, the call each one makes, and how its answer
//! is shown.

pub mod budgets;
pub mod customers;
pub mod keys;
pub mod orgs;
pub mod teams;
pub mod users;

use clap::Args;
use serde_json::Value;

use crate::api::Call;
use crate::body::{Body, parse_set};
use crate::output::Output;

/// A call and the way to show its answer.
#[derive(Debug)]
pub struct Plan {
    pub call: Call,
    pub output: Output,
}

impl Plan {
    pub fn new(call: Call, output: Output) -> Self {
        Plan { call, output }
    }
}

/// Spend and rate limits, which keys, users, teams, organizations, customers and budgets
/// all carry under the same field names.
#[derive(Debug, Args)]
pub struct Limits {
    /// Maximum spend in USD (max_budget).
    #[arg(long, value_name = "USD")]
    pub max_budget: Option<f64>,
    /// How often spend resets, e.g. 30s, 1h, 1d, 30d (budget_duration).
    #[arg(long, value_name = "DURATION")]
    pub budget_duration: Option<String>,
    /// Requests per minute (rpm_limit).
    #[arg(long, value_name = "N")]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute (tpm_limit).
    #[arg(long, value_name = "N")]
    pub tpm_limit: Option<u64>,
    /// Requests in flight at once (max_parallel_requests).
    #[arg(long, value_name = "N")]
    pub max_parallel_requests: Option<u64>,
}

impl Limits {
    pub fn apply(self, body: Body) -> Body {
        body.opt("max_budget", self.max_budget)
            .opt("budget_duration", self.budget_duration)
            .opt("rpm_limit", self.rpm_limit)
            .opt("tpm_limit", self.tpm_limit)
            .opt("max_parallel_requests", self.max_parallel_requests)
    }
}

/// The escape hatch for fields without a flag of their own.
#[derive(Debug, Args)]
pub struct Overrides {
    /// Any body field as FIELD=VALUE; VALUE is parsed as JSON when it can be, else sent as
    /// text (e.g. --set 'model_max_budget={"gpt-4o":1}' --set key_type=llm_api). Repeatable;
    /// wins over the typed flags.
    #[arg(long = "set", value_name = "FIELD=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, Value)>,
}

/// "deleted 2 keys: a, b".
pub fn deleted(what: &str, ids: &[String]) -> Output {
    let plural = if ids.len() == 1 { "" } else { "s" };
    Output::message(format!("deleted {} {what}{plural}: {}", ids.len(), ids.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_messages_count_and_name() {
        let one = deleted("key", &["sk-1".to_owned()]);
        assert_eq!(one.render(&Value::Null), "deleted 1 key: sk-1\n");
        let two = deleted("team", &["a".to_owned(), "b".to_owned()]);
        assert_eq!(two.render(&Value::Null), "deleted 2 teams: a, b\n");
    }
}
