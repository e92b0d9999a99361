//! `tollgate-admin org …`: organizations through `/organization/*`.

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Value, json};

use super::{Limits, Overrides, Plan, deleted};
use crate::api::Call;
use crate::body::{Body, parse_object};
use crate::output::Output;
use crate::table::Entity;

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Creates an organization (POST /organization/new).
    Create {
        /// A display name (organization_alias); the gateway requires one.
        #[arg(long)]
        alias: String,
        /// The organization's id; the gateway makes one up when absent.
        #[arg(long, visible_alias = "org-id")]
        organization_id: Option<String>,
        /// Take limits from this existing budget instead of the limit flags.
        #[arg(long)]
        budget_id: Option<String>,
        #[command(flatten)]
        fields: OrgFields,
    },
    /// Lists organizations (GET /organization/list).
    List,
    /// Shows one organization (GET /organization/info).
    Info { organization_id: String },
    /// Changes an organization's fields and limits (PATCH /organization/update).
    Update {
        organization_id: String,
        /// A new display name (organization_alias).
        #[arg(long)]
        alias: Option<String>,
        #[command(flatten)]
        fields: OrgFields,
    },
    /// Deletes organizations (DELETE /organization/delete).
    Delete {
        #[arg(required = true, value_name = "ORGANIZATION_ID")]
        organization_ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct OrgFields {
    /// Models the organization may use, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "MODEL,…")]
    models: Vec<String>,
    /// A JSON object.
    #[arg(long, value_parser = parse_object, value_name = "JSON")]
    metadata: Option<Value>,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    overrides: Overrides,
}

impl OrgFields {
    fn body(self, body: Body) -> Value {
        let body = body.list("models", self.models).opt("metadata", self.metadata);
        self.limits.apply(body).overrides(self.overrides.set).build()
    }
}

impl OrgCommand {
    pub fn plan(self) -> Plan {
        match self {
            OrgCommand::Create { alias, organization_id, budget_id, fields } => {
                let body = Body::new()
                    .with("organization_alias", alias)
                    .opt("organization_id", organization_id)
                    .opt("budget_id", budget_id);
                Plan::new(Call::post("/organization/new", fields.body(body)), Output::rows(Entity::Org))
            }
            OrgCommand::List => Plan::new(Call::get("/organization/list"), Output::rows(Entity::Org)),
            OrgCommand::Info { organization_id } => Plan::new(
                Call::get("/organization/info").query("organization_id", Some(organization_id)),
                Output::rows(Entity::Org),
            ),
            OrgCommand::Update { organization_id, alias, fields } => {
                let body =
                    Body::new().with("organization_id", organization_id).opt("organization_alias", alias);
                Plan::new(
                    Call::post("/organization/update", fields.body(body)).with_method(Method::PATCH),
                    Output::rows(Entity::Org),
                )
            }
            OrgCommand::Delete { organization_ids } => {
                let output = deleted("organization", &organization_ids);
                let body = json!({ "organization_ids": organization_ids });
                Plan::new(Call::post("/organization/delete", body).with_method(Method::DELETE), output)
            }
        }
    }
}
