//! `tollgate-admin key …`: virtual keys through `/key/*`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Limits, Overrides, Plan, deleted};
use crate::api::Call;
use crate::body::{Body, parse_object};
use crate::output::{Output, Paging};
use crate::table::Entity;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Creates a key (POST /key/generate) and prints it; it is not shown again.
    Create {
        /// Use this key instead of a generated one (must start with sk-).
        #[arg(long, value_name = "SK")]
        key: Option<String>,
        #[command(flatten)]
        fields: KeyFields,
    },
    /// Lists keys, oldest first (GET /key/list).
    List {
        #[arg(long)]
        page: Option<u64>,
        /// Keys per page (the gateway allows 1 to 100; default 10).
        #[arg(long)]
        size: Option<u64>,
        /// Only keys of this user.
        #[arg(long)]
        user_id: Option<String>,
        /// Only keys of this team.
        #[arg(long)]
        team_id: Option<String>,
        /// Only keys of this organization.
        #[arg(long, visible_alias = "org-id")]
        organization_id: Option<String>,
        /// Only the key with this alias.
        #[arg(long)]
        alias: Option<String>,
    },
    /// Shows one key (GET /key/info).
    Info {
        /// The key (sk-…) or its hash.
        key: String,
    },
    /// Changes a key's fields (POST /key/update).
    Update {
        /// The key (sk-…) or its hash.
        key: String,
        #[command(flatten)]
        fields: KeyFields,
    },
    /// Deletes keys (POST /key/delete).
    Delete {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Blocks a key: requests with it are refused until unblocked (POST /key/block).
    Block { key: String },
    /// Lifts a block (POST /key/unblock).
    Unblock { key: String },
    /// Replaces a key's secret, keeping its settings and spend (POST /key/regenerate).
    Regenerate { key: String },
}

/// The key fields with flags of their own.
#[derive(Debug, Args)]
pub struct KeyFields {
    /// A name for the key (key_alias).
    #[arg(long)]
    alias: Option<String>,
    /// Models the key may call, comma-separated; none means all.
    #[arg(long, value_delimiter = ',', value_name = "MODEL,…")]
    models: Vec<String>,
    /// How long until the key expires, e.g. 7d, 12h.
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// The team it belongs to (team_id).
    #[arg(long)]
    team_id: Option<String>,
    /// The user it belongs to (user_id).
    #[arg(long)]
    user_id: Option<String>,
    /// The organization it belongs to (organization_id).
    #[arg(long, visible_alias = "org-id")]
    organization_id: Option<String>,
    /// A budget row to take limits from (budget_id).
    #[arg(long)]
    budget_id: Option<String>,
    /// Tags for spend tracking, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "TAG,…")]
    tags: Vec<String>,
    /// A JSON object, e.g. '{"owner":"search"}'.
    #[arg(long, value_parser = parse_object, value_name = "JSON")]
    metadata: Option<Value>,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    overrides: Overrides,
}

impl KeyFields {
    fn body(self, body: Body) -> Value {
        let body = body
            .opt("key_alias", self.alias)
            .list("models", self.models)
            .opt("duration", self.duration)
            .opt("team_id", self.team_id)
            .opt("user_id", self.user_id)
            .opt("organization_id", self.organization_id)
            .opt("budget_id", self.budget_id)
            .list("tags", self.tags)
            .opt("metadata", self.metadata);
        self.limits.apply(body).overrides(self.overrides.set).build()
    }
}

impl KeyCommand {
    pub fn plan(self) -> Plan {
        match self {
            KeyCommand::Create { key, fields } => Plan::new(
                Call::post("/key/generate", fields.body(Body::new().opt("key", key))),
                Output::new_key(Entity::Key),
            ),
            KeyCommand::List { page, size, user_id, team_id, organization_id, alias } => Plan::new(
                Call::get("/key/list")
                    .query("page", page)
                    .query("size", size)
                    .query("user_id", user_id)
                    .query("team_id", team_id)
                    .query("organization_id", organization_id)
                    .query("key_alias", alias)
                    .query("return_full_object", Some("true")),
                Output::paged(
                    Entity::Key,
                    "/keys",
                    Paging { page: "current_page", pages: "total_pages", total: "total_count" },
                ),
            ),
            KeyCommand::Info { key } => Plan::new(
                Call::get("/key/info").query("key", Some(key)),
                Output::rows_at(Entity::Key, "/info"),
            ),
            KeyCommand::Update { key, fields } => Plan::new(
                Call::post("/key/update", fields.body(Body::new().with("key", key))),
                Output::rows(Entity::Key),
            ),
            KeyCommand::Delete { keys } => {
                let output = deleted("key", &keys);
                Plan::new(Call::post("/key/delete", json!({ "keys": keys })), output)
            }
            KeyCommand::Block { key } => {
                Plan::new(Call::post("/key/block", json!({ "key": key })), Output::rows(Entity::Key))
            }
            KeyCommand::Unblock { key } => {
                Plan::new(Call::post("/key/unblock", json!({ "key": key })), Output::rows(Entity::Key))
            }
            KeyCommand::Regenerate { key } => {
                Plan::new(Call::post("/key/regenerate", json!({ "key": key })), Output::new_key(Entity::Key))
            }
        }
    }
}
