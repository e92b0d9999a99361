//! What this build does with each setting of a config: supported, ignored (a LiteLLM setting
//! Tollgate recognizes and deliberately does not act on, with the reason) or unknown.
//!
//! The reader records a verdict for every key it meets while it reads them, so the list
//! `tollgate-admin check-config` prints and the start-up warning
//! ([`GatewayConfig::unsupported`](super::GatewayConfig::unsupported)) come from one place.

use serde_json::{Map, Value};

/// The verdict on one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingStatus {
    /// Read and acted on.
    Supported,
    /// A LiteLLM setting this build recognizes and does not act on, and why.
    Ignored(String),
    /// Not a LiteLLM setting this build knows (a typo, or something newer than this build).
    Unknown,
}

impl SettingStatus {
    /// `supported`, `ignored` or `unknown`: the word tables and JSON show.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Supported => "supported",
            Self::Ignored(_) => "ignored",
            Self::Unknown => "unknown",
        }
    }
}

/// One setting present in the config, by path: `litellm_settings.cache_params.ttl`,
/// `model_list[1].litellm_params.temperature`; a value the reader passes over is named after
/// an `=` (`litellm_settings.success_callback=datadog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingReport {
    pub path: String,
    pub status: SettingStatus,
}

impl SettingReport {
    /// The setting as the start-up warning names it (`path`, or `path (reason)`), or `None`
    /// when it is supported.
    pub fn warning(&self) -> Option<String> {
        match &self.status {
            SettingStatus::Supported => None,
            SettingStatus::Ignored(reason) => Some(format!("{} ({reason})", self.path)),
            SettingStatus::Unknown => Some(self.path.clone()),
        }
    }
}

/// The verdicts recorded so far, one per path.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    rows: Vec<SettingReport>,
}

impl Verdicts {
    /// Records `status` for `path`. A setting first met as supported may turn out to be
    /// ignored once its value is read (`routing_strategy_args` under another strategy), so a
    /// later verdict that something is not acted on wins; two reasons are both kept.
    pub(super) fn record(&mut self, path: String, status: SettingStatus) {
        let Some(row) = self.rows.iter_mut().find(|row| row.path == path) else {
            self.rows.push(SettingReport { path, status });
            return;
        };
        row.status = match (std::mem::replace(&mut row.status, SettingStatus::Supported), status) {
            (SettingStatus::Ignored(first), SettingStatus::Ignored(second)) => {
                if first.split("; ").any(|reason| reason == second) {
                    SettingStatus::Ignored(first)
                } else {
                    SettingStatus::Ignored(format!("{first}; {second}"))
                }
            }
            (earlier, SettingStatus::Supported) => earlier,
            (_, later) => later,
        };
    }

    pub(super) fn ignored(&mut self, path: String, reason: impl Into<String>) {
        self.record(path, SettingStatus::Ignored(reason.into()));
    }

    /// Records every key of `map` (at `path`): supported when `known` lists it, ignored with
    /// its reason when `ignored` does, unknown otherwise.
    pub(super) fn classify(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        known: &[&str],
        ignored: &[(&str, &str)],
    ) {
        for key in map.keys() {
            let status = if known.contains(&key.as_str()) {
                SettingStatus::Supported
            } else if let Some((_, reason)) = ignored.iter().find(|(name, _)| name == key) {
                SettingStatus::Ignored((*reason).to_owned())
            } else {
                SettingStatus::Unknown
            };
            let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            self.record(path, status);
        }
    }

    /// The verdicts grouped by top-level section in the file's order (the reader visits the
    /// sections in the order it needs them), each section's rows in the order met.
    pub(super) fn into_rows(mut self, root: &Map<String, Value>) -> Vec<SettingReport> {
        let section_of = |path: &str| {
            let end = path.find(['.', '[', '=']).unwrap_or(path.len());
            root.keys().position(|key| key == &path[..end]).unwrap_or(usize::MAX)
        };
        self.rows.sort_by_key(|row| section_of(&row.path));
        self.rows
    }
}

/// Top-level sections of LiteLLM's config that this build does not read.
pub(super) const IGNORED_SECTIONS: &[(&str, &str)] = &[
    ("include", "other files are not read; merge them into this one"),
    ("callback_settings", "per-callback settings are not read"),
    ("credential_list", "reusable credentials are not read; set api_key in each litellm_params"),
    ("mcp_servers", "no MCP gateway in this build"),
    ("mcp_aliases", "no MCP gateway in this build"),
    ("vector_store_registry", "no vector store endpoints in this build"),
    ("search_tools", "no search endpoints in this build"),
    ("assistant_settings", "no assistants endpoints in this build"),
    ("files_settings", "no files endpoints in this build"),
    ("finetune_settings", "no fine-tuning endpoints in this build"),
    ("prompts", "no prompt management in this build"),
];

/// `litellm_settings` keys LiteLLM documents that this build does not act on.
pub(super) const IGNORED_LITELLM_SETTINGS: &[(&str, &str)] = &[
    ("set_verbose", "deprecated in LiteLLM; use LITELLM_LOG or --debug"),
    ("service_callbacks", "no health-event callbacks; Redis and database failures are logged"),
    ("redact_user_api_key_info", "traces always carry the key's hash and alias"),
    ("langfuse_default_tags", "Langfuse gets OTLP spans without LiteLLM's tags"),
    ("force_ipv4", "upstream addresses are used as resolved"),
    ("modify_params", "requests are not rewritten for providers beyond drop_params"),
    ("enable_preview_features", "no preview features"),
    ("disable_end_user_cost_tracking", "end-user spend is always tracked"),
    ("disable_end_user_cost_tracking_prometheus_only", "end-user spend is always tracked"),
    ("key_generation_settings", "not read by this build"),
    ("default_key_generate_params", "new keys get no configured defaults"),
    ("upperbound_key_generate_params", "new keys are not capped by configured upper bounds"),
    ("default_team_settings", "teams get no configured defaults"),
    ("default_internal_user_params", "users get no configured defaults"),
    ("max_budget", "no proxy-wide budget; set budgets on keys, teams or users"),
    ("budget_duration", "no proxy-wide budget; set budgets on keys, teams or users"),
    ("telemetry", "this build sends no telemetry"),
    ("max_parallel_requests", "no proxy-wide parallel request limit"),
    ("mcp_aliases", "no MCP gateway in this build"),
    ("enable_json_schema_validation", "responses are not validated against json_schema"),
    ("disable_hf_tokenizer_download", "no Hugging Face tokenizers are downloaded"),
    ("ssl_verify", "upstream TLS is always verified against the built-in roots"),
];

/// `router_settings` keys LiteLLM documents that this build does not act on.
pub(super) const IGNORED_ROUTER_SETTINGS: &[(&str, &str)] = &[
    ("redis_db", "name the database in redis_url (redis://host:6379/2)"),
    ("disable_cooldowns", "cooldowns are always on; raise allowed_fails to make them rarer"),
    ("enable_tag_filtering", "no tag-based routing"),
    ("tag_filtering_match_any", "no tag-based routing"),
    ("default_max_parallel_requests", "no per-deployment parallel request limit"),
    ("default_priority", "no request scheduler"),
    ("polling_interval", "no request scheduler"),
    ("default_litellm_params", "request defaults are not applied; send them in the request"),
    ("debug_level", "use RUST_LOG or LITELLM_LOG"),
    ("client_ttl", "upstream clients are kept for the process's life"),
    ("cache_kwargs", "the Redis of router_settings is read from redis_url / redis_host"),
    ("caching_groups", "cache entries are not shared across model groups"),
    ("cache_responses", "use litellm_settings.cache"),
    ("set_verbose", "deprecated in LiteLLM; use LITELLM_LOG or --debug"),
    ("provider_budget_config", "no provider budgets"),
    ("optional_pre_call_checks", "not read; enable_pre_call_checks is"),
    ("ignore_invalid_deployments", "an invalid deployment is a config error"),
    ("search_tools", "no search endpoints in this build"),
    ("guardrail_list", "guardrails are not run by this build"),
];

/// `general_settings` keys LiteLLM documents that this build does not act on.
pub(super) const IGNORED_GENERAL_SETTINGS: &[(&str, &str)] = &[
    ("completion_model", "the request's model is always used"),
    ("embedding_model", "the request's model is always used"),
    ("image_generation_model", "the request's model is always used"),
    ("moderation_model", "no moderation endpoint in this build"),
    ("store_prompts_in_spend_logs", "not read by this build"),
    ("forward_client_headers_to_llm_api", "not read by this build"),
    ("forward_openai_org_id", "set organization in litellm_params"),
    ("disable_spend_updates", "spend is always recorded"),
    ("disable_master_key_return", "no admin UI"),
    ("disable_retry_on_max_parallel_request_limit_error", "no parallel request limit"),
    ("disable_reset_budget", "budget periods are always reset"),
    ("disable_adding_master_key_hash_to_db", "not read by this build"),
    ("disable_responses_id_security", "no Responses API in this build"),
    ("enable_jwt_auth", "no JWT authentication; use virtual keys"),
    ("litellm_jwtauth", "no JWT authentication; use virtual keys"),
    ("enforce_user_param", "requests without user are accepted"),
    ("reject_clientside_metadata_tags", "not read by this build"),
    ("allowed_routes", "no JWT authentication; use virtual keys"),
    ("public_routes", "no per-route access lists"),
    ("admin_only_routes", "no per-route access lists"),
    ("key_management_system", "secrets come from the environment (os.environ/)"),
    ("key_management_settings", "secrets come from the environment (os.environ/)"),
    ("use_azure_key_vault", "secrets come from the environment (os.environ/)"),
    ("use_google_kms", "secrets come from the environment (os.environ/)"),
    ("database_connection_pool_limit", "each replica keeps up to 10 PostgreSQL connections"),
    ("database_connection_timeout", "connecting times out after 5 seconds"),
    ("allow_requests_on_db_unavailable", "keys already seen are served from memory during an outage"),
    ("custom_auth", "no custom authentication hooks"),
    ("custom_key_generate", "no custom key generation hooks"),
    ("custom_sso", "no admin UI"),
    ("max_parallel_requests", "no per-deployment parallel request limit"),
    ("global_max_parallel_requests", "no proxy-wide parallel request limit"),
    ("infer_model_from_keys", "models come from model_list"),
    ("alerting_threshold", "slow-request alerts are not sent"),
    ("alert_to_webhook_url", "alerts go to SLACK_WEBHOOK_URL / WEBHOOK_URL"),
    ("spend_report_frequency", "no scheduled spend reports"),
    ("use_client_credentials_pass_through_routes", "no pass-through routes"),
    ("pass_through_endpoints", "no pass-through routes"),
    ("health_check_details", "/health always lists each deployment's result"),
    ("enforced_params", "no required request parameters"),
    ("enable_oauth2_auth", "no OAuth2 authentication; use virtual keys"),
    ("enable_oauth2_proxy_auth", "no OAuth2 authentication; use virtual keys"),
    ("oauth2_config_mappings", "no OAuth2 authentication; use virtual keys"),
    ("use_x_forwarded_for", "client addresses are not used"),
    ("allowed_ips", "no address allow-list; use a NetworkPolicy"),
    ("service_account_settings", "service-account keys get no separate settings"),
    ("supported_db_objects", "models come from config.yaml"),
    ("max_request_size_mb", "request bodies are limited to 64 MiB"),
    ("max_response_size_mb", "not read by this build"),
    ("proxy_budget_rescheduler_min_time", "budget periods are checked every second"),
    ("proxy_budget_rescheduler_max_time", "budget periods are checked every second"),
    ("proxy_batch_polling_interval", "no batch endpoints in this build"),
    ("default_team_disabled", "keys without a team are allowed"),
    ("allow_user_auth", "deprecated in LiteLLM"),
    ("user_api_key_cache_ttl", "keys in use are reloaded every second and on change announcements"),
    ("disable_prisma_schema_update", "use DISABLE_SCHEMA_UPDATE=true"),
    ("litellm_key_header_name", "keys come in Authorization, x-api-key, api-key or x-litellm-api-key"),
    ("allow_client_side_credentials", "not read by this build"),
    ("ui_access_mode", "no admin UI"),
    ("litellm_license", "no enterprise features to license"),
    ("user_mcp_management_mode", "no MCP gateway in this build"),
];

/// `litellm_params` keys LiteLLM documents that this build does not act on. OpenAI request
/// parameters set here are defaults LiteLLM adds to every call; this build does not.
pub(super) const IGNORED_LITELLM_PARAMS: &[(&str, &str)] = &[
    ("temperature", REQUEST_DEFAULT),
    ("top_p", REQUEST_DEFAULT),
    ("max_tokens", REQUEST_DEFAULT),
    ("max_completion_tokens", REQUEST_DEFAULT),
    ("stop", REQUEST_DEFAULT),
    ("seed", REQUEST_DEFAULT),
    ("presence_penalty", REQUEST_DEFAULT),
    ("frequency_penalty", REQUEST_DEFAULT),
    ("response_format", REQUEST_DEFAULT),
    ("reasoning_effort", REQUEST_DEFAULT),
    ("user", REQUEST_DEFAULT),
    ("litellm_credential_name", "reusable credentials are not read; set api_key here"),
    ("tags", "no tag-based routing"),
    ("max_parallel_requests", "no per-deployment parallel request limit"),
    ("max_budget", "no provider budgets"),
    ("budget_duration", "no provider budgets"),
    ("input_cost_per_second", "only per-token and per-query prices"),
    ("output_cost_per_second", "only per-token and per-query prices"),
    ("region_name", "no region-based routing"),
    ("use_in_pass_through", "no pass-through routes"),
    ("merge_reasoning_content_in_choices", "not read by this build"),
    ("cache_control_injection_points", "prompts are not rewritten for caching"),
];

const REQUEST_DEFAULT: &str = "not added to requests; send it in the request";

/// `model_info` keys the gateway reads besides prices; any other is metadata `/model/info`
/// returns as is.
pub(super) const MODEL_INFO_READ: &[&str] = &[
    "id",
    "mode",
    "base_model",
    "max_tokens",
    "max_input_tokens",
    "max_output_tokens",
    "access_groups",
    "disable_background_health_check",
];

/// Why a `model_info` key the gateway does not read is still no error.
pub(super) const MODEL_INFO_METADATA: &str = "metadata returned by /model/info, not acted on";

/// `cache_params` keys LiteLLM documents that this build does not act on.
pub(super) const IGNORED_CACHE_PARAMS: &[(&str, &str)] = &[
    ("max_connections", "each use of Redis keeps one multiplexed connection"),
    ("max_in_memory_cache_size", "the in-process cache holds up to 64 MiB, not a number of entries"),
    ("similarity_threshold", "no semantic cache"),
    ("qdrant_semantic_cache_embedding_model", "no semantic cache"),
    ("qdrant_collection_name", "no semantic cache"),
    ("qdrant_quantization_config", "no semantic cache"),
    ("qdrant_semantic_cache_vector_size", "no semantic cache"),
    ("redis_semantic_cache_embedding_model", "no semantic cache"),
    ("s3_bucket_name", "no S3 cache"),
    ("s3_region_name", "no S3 cache"),
    ("s3_aws_access_key_id", "no S3 cache"),
    ("s3_aws_secret_access_key", "no S3 cache"),
    ("s3_endpoint_url", "no S3 cache"),
    ("gcs_bucket_name", "no GCS cache"),
    ("gcs_path_service_account", "no GCS cache"),
    ("gcs_path", "no GCS cache"),
    ("gcp_service_account", "no Memorystore IAM authentication; use a password"),
    ("gcp_ssl_ca_certs", "no custom CA file for Redis TLS"),
    ("ssl_cert_reqs", "not read by this build"),
    ("ssl_check_hostname", "not read by this build"),
    ("redis_flush_size", "cache writes are not batched"),
    ("disable_copilot_system_to_assistant", "deprecated in LiteLLM"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn status(verdicts: &Verdicts, path: &str) -> SettingStatus {
        verdicts.rows.iter().find(|row| row.path == path).map(|row| row.status.clone()).unwrap()
    }

    #[test]
    fn a_later_verdict_that_something_is_not_acted_on_wins() {
        let mut verdicts = Verdicts::default();
        verdicts.record("a".into(), SettingStatus::Supported);
        verdicts.ignored("a".into(), "first");
        verdicts.record("a".into(), SettingStatus::Supported);
        assert_eq!(status(&verdicts, "a"), SettingStatus::Ignored("first".into()));
        verdicts.ignored("a".into(), "second");
        verdicts.ignored("a".into(), "second");
        assert_eq!(status(&verdicts, "a"), SettingStatus::Ignored("first; second".into()));
        assert_eq!(verdicts.rows.len(), 1, "one row per path");
    }

    #[test]
    fn rows_follow_the_files_sections() {
        let root: Map<String, Value> =
            serde_json::from_str(r#"{"model_list": [], "guardrails": [], "litellm_settings": {}}"#).unwrap();
        let mut verdicts = Verdicts::default();
        verdicts.record("litellm_settings.x".into(), SettingStatus::Unknown);
        verdicts.record("guardrails".into(), SettingStatus::Ignored("no".into()));
        verdicts.record("model_list[0].litellm_params.model".into(), SettingStatus::Supported);
        verdicts.record("litellm_settings.callbacks=x".into(), SettingStatus::Unknown);
        let paths: Vec<String> = verdicts.into_rows(&root).into_iter().map(|row| row.path).collect();
        assert_eq!(
            paths,
            [
                "model_list[0].litellm_params.model",
                "guardrails",
                "litellm_settings.x",
                "litellm_settings.callbacks=x"
            ]
        );
    }
}
