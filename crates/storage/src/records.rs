//! Rows of LiteLLM's tables as Tollgate reads them. Only the columns Tollgate uses are
//! named; the rest of each row is left untouched. Serialized, they are the management
//! API's answers, with times in RFC 3339 UTC.

use std::sync::Arc;

use chrono::NaiveDateTime;
use sea_orm::FromQueryResult;
use serde::{Serialize, Serializer};

pub use crate::cell::{Json, TextList};

fn utc<S: Serializer>(time: &Option<NaiveDateTime>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => {
            serializer.serialize_str(&time.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
        None => serializer.serialize_none(),
    }
}

/// A virtual key (`LiteLLM_VerificationToken`); `token` is the SHA-256 of the key.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct KeyRecord {
    pub token: String,
    pub key_name: Option<String>,
    pub key_alias: Option<String>,
    pub spend: f64,
    #[serde(serialize_with = "utc")]
    pub expires: Option<NaiveDateTime>,
    pub models: TextList,
    pub aliases: Json,
    pub config: Json,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub permissions: Json,
    pub max_parallel_requests: Option<i32>,
    pub metadata: Json,
    pub blocked: Option<bool>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    #[serde(serialize_with = "utc")]
    pub budget_reset_at: Option<NaiveDateTime>,
    pub allowed_cache_controls: TextList,
    pub allowed_routes: TextList,
    pub key_type: Option<String>,
    pub model_spend: Json,
    pub model_max_budget: Json,
    pub budget_id: Option<String>,
    pub organization_id: Option<String>,
    #[serde(serialize_with = "utc")]
    pub created_at: Option<NaiveDateTime>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "utc")]
    pub updated_at: Option<NaiveDateTime>,
    pub updated_by: Option<String>,
}

/// A model stored in the database (`LiteLLM_ProxyModelTable`); the string values of
/// `litellm_params` are encrypted, as LiteLLM writes them.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct ModelRecord {
    pub model_id: String,
    pub model_name: String,
    pub litellm_params: Json,
    pub model_info: Json,
    #[serde(serialize_with = "utc")]
    pub created_at: Option<NaiveDateTime>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "utc")]
    pub updated_at: Option<NaiveDateTime>,
    pub updated_by: Option<String>,
}

/// `LiteLLM_UserTable`, without the password column.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct UserRecord {
    pub user_id: String,
    pub user_alias: Option<String>,
    pub team_id: Option<String>,
    pub organization_id: Option<String>,
    pub teams: TextList,
    pub user_role: Option<String>,
    pub max_budget: Option<f64>,
    pub spend: f64,
    pub user_email: Option<String>,
    pub models: TextList,
    pub metadata: Json,
    pub max_parallel_requests: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget_duration: Option<String>,
    #[serde(serialize_with = "utc")]
    pub budget_reset_at: Option<NaiveDateTime>,
    pub model_spend: Json,
    pub model_max_budget: Json,
    #[serde(serialize_with = "utc")]
    pub created_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "utc")]
    pub updated_at: Option<NaiveDateTime>,
}

/// `LiteLLM_TeamTable`.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    pub admins: TextList,
    pub members: TextList,
    pub members_with_roles: Json,
    pub metadata: Json,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub spend: f64,
    pub models: TextList,
    pub max_parallel_requests: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget_duration: Option<String>,
    #[serde(serialize_with = "utc")]
    pub budget_reset_at: Option<NaiveDateTime>,
    pub blocked: bool,
    #[serde(serialize_with = "utc")]
    pub created_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "utc")]
    pub updated_at: Option<NaiveDateTime>,
    pub model_spend: Json,
    pub model_max_budget: Json,
}

impl TeamRecord {
    /// The user's role in the team (`admin` or `user`), from `members_with_roles`, `admins`
    /// or `members`, as LiteLLM keeps membership in all three; `None` for a non-member.
    pub fn role_of(&self, user_id: &str) -> Option<&str> {
        let listed = self.members_with_roles.0.as_array().and_then(|members| {
            members.iter().find(|member| member.get("user_id").and_then(|v| v.as_str()) == Some(user_id))
        });
        if let Some(member) = listed {
            return Some(member.get("role").and_then(|v| v.as_str()).unwrap_or("user"));
        }
        if self.admins.0.iter().any(|admin| admin == user_id) {
            Some("admin")
        } else if self.members.0.iter().any(|member| member == user_id) {
            Some("user")
        } else {
            None
        }
    }
}

/// `LiteLLM_OrganizationTable`; its limits live in the budget row `budget_id` names.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct OrganizationRecord {
    pub organization_id: String,
    pub organization_alias: String,
    pub budget_id: String,
    pub metadata: Json,
    pub models: TextList,
    pub spend: f64,
    pub model_spend: Json,
    #[serde(serialize_with = "utc")]
    pub created_at: Option<NaiveDateTime>,
    pub created_by: String,
    #[serde(serialize_with = "utc")]
    pub updated_at: Option<NaiveDateTime>,
    pub updated_by: String,
}

/// `LiteLLM_EndUserTable`: the customers named by the `user` field of requests.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct EndUserRecord {
    pub user_id: String,
    pub alias: Option<String>,
    pub spend: f64,
    pub allowed_model_region: Option<String>,
    pub default_model: Option<String>,
    pub models: TextList,
    pub budget_id: Option<String>,
    pub blocked: bool,
}

/// `LiteLLM_BudgetTable`: limits shared by organizations, end users and memberships.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct BudgetRecord {
    pub budget_id: String,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub max_parallel_requests: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub model_max_budget: Json,
    pub budget_duration: Option<String>,
    #[serde(serialize_with = "utc")]
    pub budget_reset_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "utc")]
    pub created_at: Option<NaiveDateTime>,
    pub created_by: String,
    #[serde(serialize_with = "utc")]
    pub updated_at: Option<NaiveDateTime>,
    pub updated_by: String,
}

/// `LiteLLM_TeamMembership`: a user's spend and budget within one team.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct MembershipRecord {
    pub user_id: String,
    pub team_id: String,
    pub spend: f64,
    pub budget_id: Option<String>,
}

/// One row of `LiteLLM_SpendLogs`, as the gateway writes it. Text is shared (`Arc<str>`)
/// so the writer binds it without copying, and a failed batch is kept for the next pass
/// without copying either; the `metadata` and `request_tags` JSON is written by the writer
/// from the fields below it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpendLogRow {
    pub request_id: Arc<str>,
    /// LiteLLM's call type: `acompletion`, `atext_completion`, `aembedding`, `anthropic_messages`.
    pub call_type: &'static str,
    /// The SHA-256 of the key that paid (the master key's, for the master key).
    pub api_key: Arc<str>,
    pub spend: f64,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub start_time: NaiveDateTime,
    pub end_time: NaiveDateTime,
    /// The upstream model (`gpt-4o-2024-08-06`), the group (`gpt-4o`) and the deployment id.
    pub model: Arc<str>,
    pub model_group: Arc<str>,
    pub model_id: Arc<str>,
    pub custom_llm_provider: Arc<str>,
    pub api_base: Arc<str>,
    /// The request's `user` (end user), also written to `end_user`.
    pub end_user: Option<Arc<str>>,
    pub team_id: Option<Arc<str>>,
    pub organization_id: Option<Arc<str>>,
    /// The key's alias and user (`metadata.user_api_key_alias` / `_user_id`; the user is
    /// also LiteLLM's `user` column).
    pub key_alias: Option<Arc<str>>,
    pub user_id: Option<Arc<str>>,
    /// The request's tags and its key's and team's, each once (`request_tags`, `metadata.tags`).
    pub tags: Vec<Arc<str>>,
    /// Prompt tokens read from and written to the provider's prompt cache
    /// (`metadata.usage_object`).
    pub cache_read_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    /// Why the request failed (`metadata.error_information`), for a `failure` row.
    pub error: Option<SpendLogError>,
    /// The upstream reported no usage, so the tokens were counted with a tokenizer
    /// (`metadata.usage_estimated`).
    pub usage_estimated: bool,
    /// The guardrail that blocked the request (`metadata.guardrail_information`).
    pub guardrail: Option<SpendLogGuardrail>,
    /// `success` or `failure`.
    pub status: &'static str,
    /// Answered from the response cache (written as LiteLLM's `"True"` / `"False"`).
    pub cache_hit: bool,
}

/// LiteLLM's `error_information` of a failed request's spend log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpendLogError {
    pub error_code: String,
    pub error_class: String,
    pub error_message: String,
}

/// One entry of LiteLLM's `guardrail_information`, for a request a guardrail blocked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpendLogGuardrail {
    pub guardrail_name: String,
    /// `pre_call`, `during_call` or `post_call`.
    pub guardrail_mode: &'static str,
    /// LiteLLM's status for a guardrail that stopped the request: `guardrail_intervened`.
    pub guardrail_status: &'static str,
    /// The guardrail's reason.
    pub guardrail_response: String,
}

/// A `LiteLLM_SpendLogs` row as read back (the columns Tollgate writes).
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct SpendLogRecord {
    pub request_id: String,
    pub call_type: String,
    pub api_key: String,
    pub spend: f64,
    pub total_tokens: i32,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    #[sea_orm(alias = "startTime")]
    #[serde(rename = "startTime", serialize_with = "utc_required")]
    pub start_time: NaiveDateTime,
    #[sea_orm(alias = "endTime")]
    #[serde(rename = "endTime", serialize_with = "utc_required")]
    pub end_time: NaiveDateTime,
    pub model: String,
    pub model_group: Option<String>,
    pub model_id: Option<String>,
    pub custom_llm_provider: Option<String>,
    pub api_base: Option<String>,
    pub user: Option<String>,
    pub end_user: Option<String>,
    pub team_id: Option<String>,
    pub organization_id: Option<String>,
    pub metadata: Json,
    pub request_tags: Json,
    pub cache_hit: Option<String>,
    pub request_duration_ms: Option<i32>,
    pub status: Option<String>,
}

/// A row of one of LiteLLM's daily roll-ups (`LiteLLM_DailyUserSpend`, `…TeamSpend`,
/// `…OrganizationSpend`, `…EndUserSpend`, `…TagSpend`), its entity column read as
/// `entity_id`.
#[derive(Clone, Debug, FromQueryResult, Serialize)]
pub struct DailySpendRecord {
    pub id: String,
    pub entity_id: Option<String>,
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    pub api_key: String,
    pub model: Option<String>,
    pub model_group: Option<String>,
    pub custom_llm_provider: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cache_read_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub spend: f64,
    pub api_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
}

fn utc_required<S: Serializer>(time: &NaiveDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    utc(&Some(*time), serializer)
}
