//! `tollgate-admin budget …`: reusable budget rows through `/budget/*`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Limits, Overrides, Plan};
use crate::api::Call;
use crate::body::Body;
use crate::output::Output;
use crate::table::Entity;

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Creates a budget (POST /budget/new).
    Create {
        /// The budget's id; the gateway makes one up when absent.
        #[arg(long)]
        budget_id: Option<String>,
        #[command(flatten)]
        fields: BudgetFields,
    },
    /// Lists budgets (GET /budget/list).
    List,
    /// Shows budgets (POST /budget/info).
    Info {
        #[arg(required = true, value_name = "BUDGET_ID")]
        budget_ids: Vec<String>,
    },
    /// Changes a budget (POST /budget/update).
    Update {
        budget_id: String,
        #[command(flatten)]
        fields: BudgetFields,
    },
    /// Deletes a budget nothing refers to any more (POST /budget/delete).
    Delete { budget_id: String },
}

#[derive(Debug, Args)]
pub struct BudgetFields {
    /// Spend in USD at which to alert, without blocking (soft_budget).
    #[arg(long, value_name = "USD")]
    soft_budget: Option<f64>,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    overrides: Overrides,
}

impl BudgetFields {
    fn body(self, body: Body) -> Value {
        let body = body.opt("soft_budget", self.soft_budget);
        self.limits.apply(body).overrides(self.overrides.set).build()
    }
}

impl BudgetCommand {
    pub fn plan(self) -> Plan {
        match self {
            BudgetCommand::Create { budget_id, fields } => Plan::new(
                Call::post("/budget/new", fields.body(Body::new().opt("budget_id", budget_id))),
                Output::rows(Entity::Budget),
            ),
            BudgetCommand::List => Plan::new(Call::get("/budget/list"), Output::rows(Entity::Budget)),
            BudgetCommand::Info { budget_ids } => Plan::new(
                Call::post("/budget/info", json!({ "budgets": budget_ids })),
                Output::rows(Entity::Budget),
            ),
            BudgetCommand::Update { budget_id, fields } => Plan::new(
                Call::post("/budget/update", fields.body(Body::new().with("budget_id", budget_id))),
                Output::rows(Entity::Budget),
            ),
            BudgetCommand::Delete { budget_id } => {
                let output = Output::message(format!("deleted budget {budget_id}"));
                Plan::new(Call::post("/budget/delete", json!({ "id": budget_id })), output)
            }
        }
    }
}
