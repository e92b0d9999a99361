//! `tollgate-admin team …`: teams and their members through `/team/*`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{Limits, Overrides, Plan, deleted};
use crate::api::Call;
use crate::body::{Body, parse_object};
use crate::output::Output;
use crate::table::Entity;

#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Creates a team (POST /team/new).
    Create {
        /// The team's id; the gateway makes one up when absent.
        #[arg(long)]
        team_id: Option<String>,
        #[command(flatten)]
        fields: TeamFields,
    },
    /// Lists teams (GET /team/list).
    List {
        /// Only teams of this organization.
        #[arg(long, visible_alias = "org-id")]
        organization_id: Option<String>,
        /// Only teams this user belongs to.
        #[arg(long)]
        user_id: Option<String>,
    },
    /// Shows one team (GET /team/info).
    Info { team_id: String },
    /// Changes a team's fields (POST /team/update).
    Update {
        team_id: String,
        #[command(flatten)]
        fields: TeamFields,
    },
    /// Deletes teams and their keys (POST /team/delete).
    Delete {
        #[arg(required = true, value_name = "TEAM_ID")]
        team_ids: Vec<String>,
    },
    /// Blocks a team: its keys are refused until unblocked (POST /team/block).
    Block { team_id: String },
    /// Lifts a block (POST /team/unblock).
    Unblock { team_id: String },
    /// Adds a user to a team, creating the user if needed (POST /team/member_add).
    AddMember {
        team_id: String,
        user_id: String,
        #[arg(long, value_enum, default_value_t = Role::User)]
        role: Role,
    },
    /// Removes a user from a team (POST /team/member_delete).
    RemoveMember { team_id: String, user_id: String },
}

/// A member's role within a team.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

#[derive(Debug, Args)]
pub struct TeamFields {
    /// A display name (team_alias).
    #[arg(long)]
    alias: Option<String>,
    /// Models the team's keys may call, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "MODEL,…")]
    models: Vec<String>,
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

impl TeamFields {
    fn body(self, body: Body) -> Value {
        let body = body
            .opt("team_alias", self.alias)
            .list("models", self.models)
            .opt("organization_id", self.organization_id)
            .opt("metadata", self.metadata);
        self.limits.apply(body).overrides(self.overrides.set).build()
    }
}

impl TeamCommand {
    pub fn plan(self) -> Plan {
        match self {
            TeamCommand::Create { team_id, fields } => Plan::new(
                Call::post("/team/new", fields.body(Body::new().opt("team_id", team_id))),
                Output::rows(Entity::Team),
            ),
            TeamCommand::List { organization_id, user_id } => Plan::new(
                Call::get("/team/list").query("organization_id", organization_id).query("user_id", user_id),
                Output::rows(Entity::Team),
            ),
            TeamCommand::Info { team_id } => Plan::new(
                Call::get("/team/info").query("team_id", Some(team_id)),
                Output::rows_at(Entity::Team, "/team_info"),
            ),
            TeamCommand::Update { team_id, fields } => Plan::new(
                Call::post("/team/update", fields.body(Body::new().with("team_id", team_id))),
                Output::rows_at(Entity::Team, "/data"),
            ),
            TeamCommand::Delete { team_ids } => {
                let output = deleted("team", &team_ids);
                Plan::new(Call::post("/team/delete", json!({ "team_ids": team_ids })), output)
            }
            TeamCommand::Block { team_id } => Plan::new(
                Call::post("/team/block", json!({ "team_id": team_id })),
                Output::rows(Entity::Team),
            ),
            TeamCommand::Unblock { team_id } => Plan::new(
                Call::post("/team/unblock", json!({ "team_id": team_id })),
                Output::rows(Entity::Team),
            ),
            TeamCommand::AddMember { team_id, user_id, role } => Plan::new(
                Call::post(
                    "/team/member_add",
                    json!({ "team_id": team_id, "member": { "user_id": user_id, "role": role.as_str() } }),
                ),
                Output::rows(Entity::Team),
            ),
            TeamCommand::RemoveMember { team_id, user_id } => Plan::new(
                Call::post("/team/member_delete", json!({ "team_id": team_id, "user_id": user_id })),
                Output::rows(Entity::Team),
            ),
        }
    }
}
