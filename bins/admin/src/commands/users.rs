//! `tollgate-admin user …`: internal users through `/user/*`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Limits, Overrides, Plan, deleted};
use crate::api::Call;
use crate::body::{Body, parse_object};
use crate::output::{Output, Paging};
use crate::table::Entity;

/// LiteLLM's user roles; the gateway refuses any other.
const ROLES: [&str; 4] = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"];

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user (POST /user/new); like LiteLLM, also a first key unless --no-key.
    Create {
        /// The user's id; the gateway makes one up when absent.
        #[arg(long)]
        user_id: Option<String>,
        /// Do not create a first key for the user (auto_create_key=false).
        #[arg(long)]
        no_key: bool,
        /// How long until the first key expires, e.g. 30d.
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
        #[command(flatten)]
        fields: UserFields,
    },
    /// Lists users (GET /user/list).
    List {
        #[arg(long)]
        page: Option<u64>,
        /// Users per page (1 to 100; default 25).
        #[arg(long)]
        page_size: Option<u64>,
        /// Only users with this role.
        #[arg(long, value_parser = ROLES)]
        role: Option<String>,
    },
    /// Shows one user (GET /user/info).
    Info { user_id: String },
    /// Changes a user's fields (POST /user/update).
    Update {
        user_id: String,
        #[command(flatten)]
        fields: UserFields,
    },
    /// Deletes users and their keys (POST /user/delete).
    Delete {
        #[arg(required = true, value_name = "USER_ID")]
        user_ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct UserFields {
    /// user_email.
    #[arg(long)]
    email: Option<String>,
    /// user_role.
    #[arg(long, value_parser = ROLES)]
    role: Option<String>,
    /// A display name (user_alias).
    #[arg(long)]
    alias: Option<String>,
    /// Models the user may call, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "MODEL,…")]
    models: Vec<String>,
    /// The team it belongs to (team_id).
    #[arg(long)]
    team_id: Option<String>,
    /// The organization it belongs to (organization_id).
    #[arg(long, visible_alias = "org-id")]
    organization_id: Option<String>,
    /// A JSON object.
    #[arg(long, value_parser = parse_object, value_name = "JSON")]
    metadata: Option<Value>,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    overrides: Overrides,
}

impl UserFields {
    fn body(self, body: Body) -> Value {
        let body = body
            .opt("user_email", self.email)
            .opt("user_role", self.role)
            .opt("user_alias", self.alias)
            .list("models", self.models)
            .opt("team_id", self.team_id)
            .opt("organization_id", self.organization_id)
            .opt("metadata", self.metadata);
        self.limits.apply(body).overrides(self.overrides.set).build()
    }
}

impl UserCommand {
    pub fn plan(self) -> Plan {
        match self {
            UserCommand::Create { user_id, no_key, duration, fields } => {
                let body = Body::new()
                    .opt("user_id", user_id)
                    .opt("auto_create_key", no_key.then_some(false))
                    .opt("duration", duration);
                Plan::new(Call::post("/user/new", fields.body(body)), Output::new_key(Entity::User))
            }
            UserCommand::List { page, page_size, role } => Plan::new(
                Call::get("/user/list").query("page", page).query("page_size", page_size).query("role", role),
                Output::paged(
                    Entity::User,
                    "/users",
                    Paging { page: "page", pages: "total_pages", total: "total" },
                ),
            ),
            UserCommand::Info { user_id } => Plan::new(
                Call::get("/user/info").query("user_id", Some(user_id)),
                Output::rows_at(Entity::User, "/user_info"),
            ),
            UserCommand::Update { user_id, fields } => Plan::new(
                Call::post("/user/update", fields.body(Body::new().with("user_id", user_id))),
                Output::rows(Entity::User),
            ),
            UserCommand::Delete { user_ids } => {
                let output = deleted("user", &user_ids);
                Plan::new(Call::post("/user/delete", json!({ "user_ids": user_ids })), output)
            }
        }
    }
}
