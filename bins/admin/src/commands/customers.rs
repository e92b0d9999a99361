//! `tollgate-admin customer …`: end users (LiteLLM's customers) through `/customer/*`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Limits, Overrides, Plan, deleted};
use crate::api::Call;
use crate::body::Body;
use crate::output::Output;
use crate::table::Entity;

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Creates a customer (POST /customer/new).
    Create {
        /// The id clients send as `user` in LLM requests.
        #[arg(long)]
        user_id: String,
        /// Take limits from this existing budget instead of the limit flags.
        #[arg(long, conflicts_with = "max_budget")]
        budget_id: Option<String>,
        #[command(flatten)]
        fields: CustomerFields,
    },
    /// Lists customers (GET /customer/list).
    List,
    /// Shows one customer (GET /customer/info).
    Info { user_id: String },
    /// Changes a customer's fields and limits (POST /customer/update).
    Update {
        user_id: String,
        #[command(flatten)]
        fields: CustomerFields,
    },
    /// Deletes customers (POST /customer/delete).
    Delete {
        #[arg(required = true, value_name = "USER_ID")]
        user_ids: Vec<String>,
    },
    /// Blocks customers, recording ones not seen yet (POST /customer/block).
    Block {
        #[arg(required = true, value_name = "USER_ID")]
        user_ids: Vec<String>,
    },
    /// Lifts blocks (POST /customer/unblock).
    Unblock {
        #[arg(required = true, value_name = "USER_ID")]
        user_ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CustomerFields {
    /// A display name (alias).
    #[arg(long)]
    alias: Option<String>,
    /// Models the customer may use, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "MODEL,…")]
    models: Vec<String>,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    overrides: Overrides,
}

impl CustomerFields {
    fn body(self, body: Body) -> Value {
        let body = body.opt("alias", self.alias).list("models", self.models);
        self.limits.apply(body).overrides(self.overrides.set).build()
    }
}

impl CustomerCommand {
    pub fn plan(self) -> Plan {
        match self {
            CustomerCommand::Create { user_id, budget_id, fields } => {
                let body = Body::new().with("user_id", user_id).opt("budget_id", budget_id);
                Plan::new(Call::post("/customer/new", fields.body(body)), Output::rows(Entity::Customer))
            }
            CustomerCommand::List => Plan::new(Call::get("/customer/list"), Output::rows(Entity::Customer)),
            CustomerCommand::Info { user_id } => Plan::new(
                Call::get("/customer/info").query("end_user_id", Some(user_id)),
                Output::rows(Entity::Customer),
            ),
            CustomerCommand::Update { user_id, fields } => Plan::new(
                Call::post("/customer/update", fields.body(Body::new().with("user_id", user_id))),
                Output::rows(Entity::Customer),
            ),
            CustomerCommand::Delete { user_ids } => {
                let output = deleted("customer", &user_ids);
                Plan::new(Call::post("/customer/delete", json!({ "user_ids": user_ids })), output)
            }
            CustomerCommand::Block { user_ids } => Plan::new(
                Call::post("/customer/block", json!({ "user_ids": user_ids })),
                Output::rows_at(Entity::Customer, "/blocked_users"),
            ),
            CustomerCommand::Unblock { user_ids } => Plan::new(
                Call::post("/customer/unblock", json!({ "user_ids": user_ids })),
                Output::rows_at(Entity::Customer, "/unblocked_users"),
            ),
        }
    }
}
