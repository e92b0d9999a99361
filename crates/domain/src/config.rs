//! LiteLLM's `config.yaml`, read into a [`GatewayConfig`].
//!
//! Reading is pure: the text and an [`EnvSource`] go in, typed deployments come out. Every
//! `os.environ/NAME` reference is resolved here, every invalid value is reported with its
//! exact path (`model_list[2].litellm_params.model: missing`), and every key met gets a
//! verdict in [`GatewayConfig::settings`] (supported, ignored with the reason, unknown), from
//! which [`GatewayConfig::unsupported`] names those not acted on in one start-up warning
//! instead of dropping them silently.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::deployment::{
    AwsAuth, AwsSettings, Deployment, EntraCredentials, GoogleCredentials, ProviderKind, VertexParams,
    WebIdentity,
};
use crate::pricing::{PriceTable, Pricing};
use crate::provider_catalog::{self, WireFormat};
use crate::routing::{
    DEFAULT_HEALTH_CHECK_INTERVAL, FailureClass, FailurePolicy, ModelGroupAlias, RouterSettings,
    RoutingStrategy, StrategyArgs,
};
use crate::secret::Secret;

mod guardrails;
pub use guardrails::{
    BlockedWord, ContentFilterConfig, DEFAULT_WEBHOOK_TIMEOUT, FilterAction, FilterPattern, GUARDRAIL_TYPES,
    GuardrailConfig, GuardrailKind, GuardrailMode, GuardrailsConfig, PREBUILT_PATTERNS, PiiMaskingConfig,
    PromptLimitsConfig, TrimmingConfig, WebhookConfig, blocked_words,
};
mod observability;
mod report;
pub use observability::{
    ALERT_TYPES, AlertingConfig, DEFAULT_LANGFUSE_HOST, ObservabilityConfig, OtlpConfig, OtlpProtocol,
};
use report::{
    IGNORED_CACHE_PARAMS, IGNORED_GENERAL_SETTINGS, IGNORED_LITELLM_PARAMS, IGNORED_LITELLM_SETTINGS,
    IGNORED_ROUTER_SETTINGS, IGNORED_SECTIONS, MODEL_INFO_METADATA, MODEL_INFO_READ, Verdicts,
};
pub use report::{SettingReport, SettingStatus};

/// LiteLLM's default `request_timeout`, in seconds.
const DEFAULT_TIMEOUT_SECS: f64 = 6000.0;

/// The config the gateway serves when started without `--config`: models that answer
/// offline, so a first request works with no provider key.
pub const DEMO_CONFIG: &str = r#"
model_list:
  - model_name: demo
    litellm_params:
      model: fake/demo
  - model_name: demo-embedding
    litellm_params:
      model: fake/embedding
"#;

/// Where `os.environ/NAME` and the environment variables LiteLLM reads come from.
/// Injected so tests never touch the process environment.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid YAML: {0}")]
    Syntax(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn invalid(path: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_owned(), reason: reason.into() }
}

/// Everything the gateway needs from `config.yaml` and the environment.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub deployments: Vec<Deployment>,
    /// `general_settings.master_key`, else `LITELLM_MASTER_KEY`, else `TOLLGATE_MASTER_KEY`.
    pub master_key: Option<Secret>,
    /// Retries, fallbacks, cooldowns and aliases (`router_settings`, `litellm_settings`).
    pub router: RouterSettings,
    /// `litellm_settings.require_auth_for_metrics_endpoint` (default true, as LiteLLM's):
    /// `/metrics` asks for a key.
    pub metrics_require_auth: bool,
    /// `general_settings.database_url`, else `DATABASE_URL`. Without one, a gateway with a
    /// master key keeps its virtual keys in a SQLite file.
    pub database_url: Option<Secret>,
    /// Whether the gateway applies pending migrations at start (off with
    /// `DISABLE_SCHEMA_UPDATE=true`, as LiteLLM's flag).
    pub schema_updates: bool,
    /// `litellm_settings.budget_exceeded_status_code`: the status of a spent budget.
    pub budget_exceeded_status: u16,
    /// `general_settings.proxy_batch_write_at`: how often spend is written (default 10 s).
    pub spend_write_interval: Duration,
    /// `general_settings.disable_spend_logs`: no `LiteLLM_SpendLogs` rows.
    pub disable_spend_logs: bool,
    /// `general_settings.maximum_spend_logs_retention_period` (`7d`, `30d`, …): spend-log
    /// rows older than this are deleted; `None` keeps them all.
    pub spend_logs_retention: Option<Duration>,
    /// `general_settings.maximum_spend_logs_retention_interval`: how often that deletion
    /// runs (default 1 day, as LiteLLM's); read only when a retention period is set.
    pub spend_logs_retention_interval: Duration,
    /// Redis, from `router_settings.redis_url` / `redis_host` (+ `redis_port`,
    /// `redis_password`), else `REDIS_URL`, else `REDIS_HOST` (+ `REDIS_PORT`,
    /// `REDIS_PASSWORD`), as LiteLLM reads them.
    pub redis_url: Option<Secret>,
    /// The response cache (`litellm_settings.cache: true` with `cache_params`); `None`, the
    /// default, is no caching at all.
    pub cache: Option<CacheConfig>,
    /// `general_settings.background_health_checks`; `None` (the default): `/health` calls
    /// every deployment when asked.
    pub background_health_checks: Option<BackgroundHealthChecks>,
    /// Traces, request logs and alerts (metrics are always on).
    pub observability: ObservabilityConfig,
    /// The `guardrails:` section and the per-model guardrail lists.
    pub guardrails: GuardrailsConfig,
    /// Every setting present in the config with what this build does with it, grouped by
    /// top-level section in the file's order.
    pub settings: Vec<SettingReport>,
    /// `general_settings.store_model_in_db` (or `STORE_MODEL_IN_DB=true`): models added
    /// through `/model/new` live in `LiteLLM_ProxyModelTable` beside the config's.
    pub store_model_in_db: bool,
    /// `LITELLM_SALT_KEY`: the key the credentials of database models are encrypted with.
    /// Unlike LiteLLM, the master key never stands in for it.
    pub salt_key: Option<Secret>,
    /// What a deployment inherits from the config (timeouts, `drop_params`), kept so that
    /// deployments read later (from the database) get the same defaults.
    pub deployment_defaults: DeploymentDefaults,
    /// The settings of [`Self::settings`] this build does not act on, as the start-up warning
    /// names them: `path` when unknown, `path (reason)` when ignored
    /// (`litellm_settings.cache_params.type=s3 (the in-process cache is used instead)`).
    pub unsupported: Vec<String>,
}

/// Checks of every deployment on a timer (`general_settings.background_health_checks: true`):
/// `/health` answers from the latest round instead of calling every deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundHealthChecks {
    /// `health_check_interval`: the pause after each round (LiteLLM's default 300 s).
    pub interval: Duration,
    /// `health_check_concurrency`: checks under way at once.
    pub concurrency: usize,
}

/// Background checks under way at once unless `health_check_concurrency` says otherwise.
pub const DEFAULT_HEALTH_CHECK_CONCURRENCY: usize = 4;

impl GatewayConfig {
    /// The built-in demo config.
    pub fn demo(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        Self::from_yaml(DEMO_CONFIG, env)
    }

    pub fn from_yaml(text: &str, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let root: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Self::from_value(&root, env)
    }

    pub fn from_value(root: &Value, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let empty = Map::new();
        let root = match root {
            Value::Null => &empty,
            other => as_object(other, "config")?,
        };
        let environment_variables = match root.get("environment_variables") {
            None | Some(Value::Null) => HashMap::new(),
            Some(v) => as_object(v, "environment_variables")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), scalar_to_string(v, &format!("environment_variables.{k}"))?)))
                .collect::<Result<_, ConfigError>>()?,
        };
        let mut reader = Reader {
            env: Layered { config: &environment_variables, process: env },
            verdicts: Verdicts::default(),
        };

        reader.verdicts.classify(
            root,
            "",
            &[
                "model_list",
                "litellm_settings",
                "router_settings",
                "general_settings",
                "environment_variables",
                "guardrails",
            ],
            IGNORED_SECTIONS,
        );
        for name in environment_variables.keys() {
            reader.verdicts.record(format!("environment_variables.{name}"), SettingStatus::Supported);
        }

        let section = |name: &str| -> Result<&Map<String, Value>, ConfigError> {
            match root.get(name) {
                None | Some(Value::Null) => Ok(&empty),
                Some(v) => as_object(v, name),
            }
        };
        let litellm_settings = section("litellm_settings")?;
        let router_settings = section("router_settings")?;
        let general_settings = section("general_settings")?;

        // Timeouts cascade: deployment, then router_settings, then litellm_settings.
        let request_timeout = reader.seconds(litellm_settings, "request_timeout", "litellm_settings")?;
        let router_timeout = reader.seconds(router_settings, "timeout", "router_settings")?;
        let router_stream_timeout = reader.seconds(router_settings, "stream_timeout", "router_settings")?;
        let mut router = reader.router_settings(router_settings, litellm_settings)?;
        // Current LiteLLM asks for a key on `/metrics` unless told otherwise (older releases did not).
        let metrics_require_auth = match litellm_settings.get("require_auth_for_metrics_endpoint") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(required)) => *required,
            Some(_) => {
                return Err(invalid(
                    "litellm_settings.require_auth_for_metrics_endpoint",
                    "must be true or false",
                ));
            }
        };
        let budget_exceeded_status = match litellm_settings.get("budget_exceeded_status_code") {
            None | Some(Value::Null) => 422,
            Some(value) => value
                .as_u64()
                .and_then(|status| u16::try_from(status).ok())
                .filter(|status| (400..600).contains(status))
                .ok_or_else(|| {
                    invalid(
                        "litellm_settings.budget_exceeded_status_code",
                        "must be an HTTP status from 400 to 599",
                    )
                })?,
        };
        let mut litellm_known = vec![
            "drop_params",
            "budget_exceeded_status_code",
            "request_timeout",
            "require_auth_for_metrics_endpoint",
            "callbacks",
            "success_callback",
            "failure_callback",
            "json_logs",
            "turn_off_message_logging",
            "langfuse_host",
            "langfuse_public_key",
            "langfuse_secret_key",
            "cache",
            "cache_params",
            "guardrails",
        ];
        litellm_known.extend_from_slice(ROUTER_KEYS);
        reader.verdicts.classify(
            litellm_settings,
            "litellm_settings",
            &litellm_known,
            IGNORED_LITELLM_SETTINGS,
        );
        let mut router_known = vec![
            "timeout",
            "stream_timeout",
            "routing_strategy",
            "routing_strategy_args",
            "retry_policy",
            "model_group_retry_policy",
            "allowed_fails_policy",
            "retry_after",
            "enable_pre_call_checks",
            "model_group_alias",
            "redis_host",
            "redis_port",
            "redis_password",
            "redis_url",
        ];
        router_known.extend_from_slice(ROUTER_KEYS);
        reader.verdicts.classify(router_settings, "router_settings", &router_known, IGNORED_ROUTER_SETTINGS);

        let default_timeout =
            router_timeout.or(request_timeout).unwrap_or(Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS));
        let drop_params = reader.flag(litellm_settings, "drop_params", "litellm_settings")?.unwrap_or(false);
        let defaults = DeploymentDefaults {
            timeout: default_timeout,
            stream_timeout: router_stream_timeout,
            drop_params,
        };

        let mut deployments = Vec::new();
        match root.get("model_list") {
            None | Some(Value::Null) => {}
            Some(Value::Array(entries)) => {
                for (i, entry) in entries.iter().enumerate() {
                    deployments.push(reader.deployment(entry, &format!("model_list[{i}]"), &defaults)?);
                }
            }
            Some(_) => return Err(invalid("model_list", "must be a list")),
        }
        for (i, d) in deployments.iter().enumerate() {
            if deployments[..i].iter().any(|other| other.id == d.id) {
                return Err(invalid(
                    &format!("model_list[{i}].model_info.id"),
                    format!("duplicate id '{}'", d.id),
                ));
            }
        }

        let master_key = reader
            .string(general_settings, "master_key", "general_settings")?
            .or_else(|| reader.env.var("LITELLM_MASTER_KEY"))
            .or_else(|| reader.env.var("TOLLGATE_MASTER_KEY"))
            .filter(|k| !k.is_empty())
            .map(Secret::new);
        let database_url = reader
            .string(general_settings, "database_url", "general_settings")?
            .or_else(|| reader.env.var("DATABASE_URL"))
            .filter(|url| !url.is_empty())
            .map(Secret::new);
        let schema_updates = !reader
            .env
            .var("DISABLE_SCHEMA_UPDATE")
            .is_some_and(|value| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        let spend_write_interval = reader
            .seconds(general_settings, "proxy_batch_write_at", "general_settings")?
            .unwrap_or(Duration::from_secs(10));
        let disable_spend_logs = match general_settings.get("disable_spend_logs") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(disabled)) => *disabled,
            Some(_) => return Err(invalid("general_settings.disable_spend_logs", "must be true or false")),
        };
        let spend_logs_retention =
            reader.litellm_duration(general_settings, "maximum_spend_logs_retention_period")?;
        let spend_logs_retention_interval = reader
            .litellm_duration(general_settings, "maximum_spend_logs_retention_interval")?
            .unwrap_or(Duration::from_secs(86_400));
        let background_health_checks = reader.background_health_checks(general_settings, &mut router)?;
        reader.verdicts.classify(
            general_settings,
            "general_settings",
            &[
                "master_key",
                "database_url",
                "proxy_batch_write_at",
                "disable_spend_logs",
                "maximum_spend_logs_retention_period",
                "maximum_spend_logs_retention_interval",
                "background_health_checks",
                "health_check_interval",
                "health_check_concurrency",
                "enable_health_check_routing",
                "health_check_staleness_threshold",
                "health_check_ignore_transient_errors",
                "alerting",
                "alert_types",
                "alerting_args",
                "store_model_in_db",
            ],
            IGNORED_GENERAL_SETTINGS,
        );
        let store_model_in_db = match general_settings.get("store_model_in_db") {
            None | Some(Value::Null) => reader
                .env
                .var("STORE_MODEL_IN_DB")
                .is_some_and(|value| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes")),
            Some(Value::Bool(stored)) => *stored,
            Some(_) => return Err(invalid("general_settings.store_model_in_db", "must be true or false")),
        };
        let salt_key = reader.env.var("LITELLM_SALT_KEY").filter(|key| !key.is_empty()).map(Secret::new);
        let observability = reader.observability(litellm_settings, general_settings)?;
        let guardrails = reader.guardrails(root, litellm_settings)?;
        let redis_url = reader.redis_url(router_settings)?;
        let cache = reader.cache(litellm_settings, redis_url.as_ref())?;
        // LiteLLM counts limits in the cache's Redis when the router names none: so do we,
        // and share spend and change announcements there too.
        let redis_url = redis_url.or_else(|| match cache.as_ref().map(|cache| &cache.backend) {
            Some(CacheBackend::Redis { url }) => Some(url.clone()),
            _ => None,
        });

        for (name, fallbacks) in [
            ("fallbacks", &router.fallbacks),
            ("context_window_fallbacks", &router.context_window_fallbacks),
            ("content_policy_fallbacks", &router.content_policy_fallbacks),
        ] {
            // Read from router_settings, else litellm_settings: name the one it came from.
            let section =
                if router_settings.contains_key(name) { "router_settings" } else { "litellm_settings" };
            for (model, groups) in fallbacks {
                for group in std::iter::once(model).chain(groups) {
                    if !deployments.iter().any(|d| &d.model_name == group) {
                        reader
                            .verdicts
                            .ignored(format!("{section}.{name}={group}"), "no such model_name in model_list");
                    }
                }
            }
        }
        let settings = reader.verdicts.into_rows(root);
        let unsupported = settings.iter().filter_map(SettingReport::warning).collect();

        Ok(Self {
            deployments,
            master_key,
            router,
            metrics_require_auth,
            database_url,
            schema_updates,
            budget_exceeded_status,
            spend_write_interval,
            disable_spend_logs,
            spend_logs_retention,
            spend_logs_retention_interval,
            redis_url,
            cache,
            background_health_checks,
            observability,
            settings,
            store_model_in_db,
            salt_key,
            deployment_defaults: defaults,
            guardrails,
            unsupported,
        })
    }

    /// Reads one `model_list` entry (`{model_name, litellm_params, model_info}`) outside the
    /// file, e.g. a model stored in the database, with this config's defaults. Errors name
    /// the path under `path`; the second value lists the settings it will not act on.
    pub fn read_deployment(
        &self,
        entry: &Value,
        path: &str,
        env: &dyn EnvSource,
    ) -> Result<(Deployment, Vec<String>), ConfigError> {
        let no_config_variables = HashMap::new();
        let mut reader = Reader {
            env: Layered { config: &no_config_variables, process: env },
            verdicts: Verdicts::default(),
        };
        let deployment = reader.deployment(entry, path, &self.deployment_defaults)?;
        let unsupported =
            reader.verdicts.into_rows(&Map::new()).iter().filter_map(SettingReport::warning).collect();
        Ok((deployment, unsupported))
    }

    /// The aliases clients may ask for, in config order, without duplicates.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for d in &self.deployments {
            if !names.contains(&d.model_name.as_str()) {
                names.push(&d.model_name);
            }
        }
        names
    }
}

/// The response cache, from `litellm_settings.cache: true` and `litellm_settings.cache_params`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub backend: CacheBackend,
    /// `namespace`: the prefix of every key (`litellm_cache` makes `litellm_cache:<sha256>`).
    pub namespace: Option<String>,
    /// How long entries live: `default_in_memory_ttl` / `default_in_redis_ttl` for the type in
    /// use, else `ttl`; without any, [`DEFAULT_LOCAL_CACHE_TTL`] in process and no expiry in
    /// Redis, as LiteLLM does.
    pub ttl: Option<Duration>,
    /// `supported_call_types`, LiteLLM's names (`acompletion`, `aembedding`, …); `None`
    /// caches every call type.
    pub supported_call_types: Option<Vec<String>>,
    /// `cache_scope` (a Tollgate setting): who shares entries.
    pub scope: CacheScope,
    /// `mode: default_off` makes the cache opt-in per request (`cache: {use-cache: true}`).
    pub default_on: bool,
    /// `socket_timeout`: the longest one Redis command may take before the request goes on
    /// without it.
    pub redis_timeout: Duration,
}

/// Where cached answers are kept.
#[derive(Debug, Clone)]
pub enum CacheBackend {
    /// `type: local`: in process, per replica.
    Local,
    /// `type: redis`: shared by every replica, the in-process cache standing in while Redis
    /// is away.
    Redis { url: Secret },
}

/// Which callers share cache entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheScope {
    /// Everyone: an identical request from any key is answered from the cache (LiteLLM's
    /// behaviour).
    #[default]
    Global,
    /// The keys of one team (a key without a team keeps its own entries).
    Team,
    /// Each virtual key alone.
    Key,
}

/// How long in-process entries live without a configured TTL (LiteLLM's in-memory default).
pub const DEFAULT_LOCAL_CACHE_TTL: Duration = Duration::from_secs(600);
/// The Redis command timeout without `cache_params.socket_timeout`.
pub const DEFAULT_REDIS_CACHE_TIMEOUT: Duration = Duration::from_millis(500);
/// The call types `supported_call_types` may name (LiteLLM's; the gateway serves the chat,
/// text completion, embedding and Anthropic messages ones).
pub const CACHE_CALL_TYPES: &[&str] = &[
    "completion",
    "acompletion",
    "text_completion",
    "atext_completion",
    "embedding",
    "aembedding",
    "transcription",
    "atranscription",
    "rerank",
    "arerank",
    "responses",
    "aresponses",
    "anthropic_messages",
];

/// What every deployment inherits unless its `litellm_params` say otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeploymentDefaults {
    /// `timeout` of `router_settings`, else `request_timeout` of `litellm_settings`.
    pub timeout: Duration,
    /// `router_settings.stream_timeout`.
    pub stream_timeout: Option<Duration>,
    /// `litellm_settings.drop_params`.
    pub drop_params: bool,
}

/// The config's `environment_variables` over the process environment, as LiteLLM copies
/// them into `os.environ` at start-up.
struct Layered<'a> {
    config: &'a HashMap<String, String>,
    process: &'a dyn EnvSource,
}

impl Layered<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.config.get(name).cloned().or_else(|| self.process.var(name))
    }
}

struct Reader<'a> {
    env: Layered<'a>,
    verdicts: Verdicts,
}

const LITELLM_PARAMS: &[&str] = &[
    "model",
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "organization",
    "rpm",
    "tpm",
    "timeout",
    "stream_timeout",
    "max_retries",
    "extra_headers",
    "drop_params",
    "additional_drop_params",
    "mock_response",
    "tenant_id",
    "client_id",
    "client_secret",
    "azure_ad_token",
    "azure_scope",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "aws_bedrock_runtime_endpoint",
    "aws_sts_endpoint",
    "vertex_project",
    "vertex_ai_project",
    "vertex_location",
    "vertex_ai_location",
    "vertex_credentials",
    "vertex_ai_credentials",
    "weight",
    "order",
    "guardrails",
];

/// Prices, read from `litellm_params` or `model_info` (see [`Reader::pricing`]).
const PRICE_KEYS: &[&str] = &[
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
    "input_cost_per_query",
];

/// Router keys read from `router_settings`, or from `litellm_settings` when the router
/// section does not set them.
const ROUTER_KEYS: &[&str] = &[
    "num_retries",
    "allowed_fails",
    "cooldown_time",
    "max_fallbacks",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "default_fallbacks",
];

/// The Azure OpenAI data-plane version used when neither `api_version` nor
/// `AZURE_API_VERSION` gives one (the latest GA version).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";
/// The region of a Bedrock deployment that names none, as LiteLLM defaults it.
pub const DEFAULT_AWS_REGION: &str = "us-west-2";
/// Where Entra ID tokens come from unless `AZURE_AUTHORITY_HOST` says otherwise.
pub const DEFAULT_AZURE_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The scope of tokens for Azure OpenAI.
pub const DEFAULT_AZURE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// Vertex AI's location when neither `vertex_location` nor the environment gives one, as
/// LiteLLM's default.
pub const DEFAULT_VERTEX_LOCATION: &str = "us-central1";
/// The GCE / GKE metadata server unless `GCE_METADATA_HOST` names another.
pub const DEFAULT_GCE_METADATA_HOST: &str = "metadata.google.internal";

impl Reader<'_> {
    fn deployment(
        &mut self,
        entry: &Value,
        path: &str,
        defaults: &DeploymentDefaults,
    ) -> Result<Deployment, ConfigError> {
        let entry = as_object(entry, path)?;
        let model_name = self
            .string(entry, "model_name", path)?
            .ok_or_else(|| invalid(&format!("{path}.model_name"), "missing"))?;
        let params_path = format!("{path}.litellm_params");
        let params = match entry.get("litellm_params") {
            None | Some(Value::Null) => return Err(invalid(&params_path, "missing")),
            Some(v) => as_object(v, &params_path)?,
        };
        let model_info = match entry.get("model_info") {
            None | Some(Value::Null) => Map::new(),
            Some(v) => as_object(v, &format!("{path}.model_info"))?.clone(),
        };
        self.verdicts.classify(entry, path, &["model_name", "litellm_params", "model_info"], &[]);
        // A provider's own parameters (Ollama's `num_ctx`) are known for its models only.
        let own_params = match params.get("model").and_then(Value::as_str).and_then(|m| m.split_once('/')) {
            Some((prefix, _)) => provider_catalog::provider_params(prefix),
            None => &[],
        };
        let known: Vec<&str> = LITELLM_PARAMS.iter().chain(PRICE_KEYS).chain(own_params).copied().collect();
        self.verdicts.classify(params, &params_path, &known, IGNORED_LITELLM_PARAMS);
        // LiteLLM lets model_info carry any metadata: what the gateway does not read is
        // returned by /model/info, which is no error.
        for key in model_info.keys() {
            let status = if MODEL_INFO_READ.contains(&key.as_str()) || PRICE_KEYS.contains(&key.as_str()) {
                SettingStatus::Supported
            } else {
                SettingStatus::Ignored(MODEL_INFO_METADATA.to_owned())
            };
            self.verdicts.record(format!("{path}.model_info.{key}"), status);
        }

        let model = self
            .string(params, "model", &params_path)?
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid(&format!("{params_path}.model"), "missing"))?;
        let (prefix, upstream_model) = match model.split_once('/') {
            Some((prefix, rest)) if !rest.is_empty() => (prefix.to_owned(), rest.to_owned()),
            _ => match provider_catalog::infer_prefix(&model) {
                Some(prefix) => (prefix.to_owned(), model.clone()),
                None => {
                    return Err(invalid(
                        &format!("{params_path}.model"),
                        format!(
                            "'{model}' names no provider; write it as provider/model, e.g. openai/{model}"
                        ),
                    ));
                }
            },
        };
        let spec = provider_catalog::lookup(&prefix);
        let provider = match spec {
            Some(spec) => ProviderKind::Supported { prefix: spec.prefix, wire: spec.wire },
            None if provider_catalog::NOT_YET_SUPPORTED.contains(&prefix.as_str()) => {
                self.verdicts
                    .ignored(format!("{params_path}.model={prefix}/…"), "provider not supported yet");
                ProviderKind::NotYetSupported { prefix }
            }
            None => {
                return Err(invalid(
                    &format!("{params_path}.model"),
                    format!("unknown provider '{prefix}' in '{model}'"),
                ));
            }
        };

        let mut api_base = match self.string(params, "api_base", &params_path)? {
            Some(base) => Some(base),
            None => self.string(params, "base_url", &params_path)?,
        };
        let mut api_key = self.string(params, "api_key", &params_path)?;
        let mut aws = None;
        if spec.is_some_and(|s| s.wire == WireFormat::Bedrock) {
            let region = self.aws_region(params, &params_path, &upstream_model)?;
            if api_base.is_none() {
                api_base = match self.string(params, "aws_bedrock_runtime_endpoint", &params_path)? {
                    Some(endpoint) => Some(endpoint),
                    None => self
                        .env
                        .var("AWS_BEDROCK_RUNTIME_ENDPOINT")
                        .or_else(|| Some(format!("https://bedrock-runtime.{region}.amazonaws.com"))),
                };
            }
            let auth = self.aws_auth(params, &params_path, api_key.as_deref(), &region)?;
            if let AwsAuth::BearerToken(token) = &auth {
                // Kept as the deployment's key too, so it is redacted from upstream errors.
                api_key = Some(token.expose().to_owned());
            }
            aws = Some(AwsSettings { region, auth });
        }
        let vertex = match spec {
            Some(spec) if spec.wire == WireFormat::Vertex => Some(self.vertex(params, &params_path)?),
            _ => None,
        };
        if api_base.is_none() {
            api_base = vertex.as_ref().map(VertexParams::default_base);
        }
        if let Some(spec) = spec {
            if api_base.is_none() {
                api_base = spec.base_env.iter().find_map(|name| self.env.var(name));
            }
            if api_base.is_none() {
                api_base = spec.default_base.map(str::to_owned);
            }
            if api_key.is_none() {
                api_key = spec.key_env.iter().find_map(|name| self.env.var(name));
            }
            if api_base.is_none() && spec.wire != WireFormat::Fake {
                return Err(invalid(
                    &format!("{params_path}.api_base"),
                    format!("missing; provider '{}' has no default", spec.prefix),
                ));
            }
        }
        let api_base = match api_base {
            Some(base) if base.starts_with("http://") || base.starts_with("https://") => {
                Some(base.trim_end_matches('/').to_owned())
            }
            Some(base) => {
                return Err(invalid(
                    &format!("{params_path}.api_base"),
                    format!("'{base}' is not an http:// or https:// URL"),
                ));
            }
            None => None,
        };

        let timeout = self.seconds(params, "timeout", &params_path)?.unwrap_or(defaults.timeout);
        let stream_timeout = self
            .seconds(params, "stream_timeout", &params_path)?
            .or(defaults.stream_timeout)
            .unwrap_or(timeout);
        let rpm = self.unsigned(params, "rpm", &params_path)?;
        let tpm = self.unsigned(params, "tpm", &params_path)?;
        let weight = self.number(params, "weight", &params_path)?;
        let order = self
            .unsigned(params, "order", &params_path)?
            .map(|o| u32::try_from(o).map_err(|_| invalid(&format!("{params_path}.order"), "too large")))
            .transpose()?;
        let max_retries = self.unsigned(params, "max_retries", &params_path)?.unwrap_or(0);
        let max_retries = u32::try_from(max_retries)
            .map_err(|_| invalid(&format!("{params_path}.max_retries"), "too large"))?;

        let drop_params = self.flag(params, "drop_params", &params_path)?.unwrap_or(defaults.drop_params);
        let additional_drop_params = match params.get("additional_drop_params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|name| {
                    name.as_str().map(str::to_owned).ok_or_else(|| {
                        invalid(
                            &format!("{params_path}.additional_drop_params"),
                            "must be a list of parameter names",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(invalid(
                    &format!("{params_path}.additional_drop_params"),
                    "must be a list of parameter names",
                ));
            }
        };
        let extra_headers = match params.get("extra_headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => {
                let headers_path = format!("{params_path}.extra_headers");
                let map = as_object(v, &headers_path)?;
                let mut headers = Vec::with_capacity(map.len());
                for key in map.keys() {
                    let value = self.string(map, key, &headers_path)?.unwrap_or_default();
                    headers.push((key.clone(), value));
                }
                headers
            }
        };
        let mock_response = match params.get("mock_response") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => return Err(invalid(&format!("{params_path}.mock_response"), "must be a string")),
        };

        let api_key = api_key.filter(|k| !k.is_empty()).map(Secret::new);
        let mut api_version = self.string(params, "api_version", &params_path)?;
        let (mut azure_ad_token, mut entra) = (None, None);
        if spec.is_some_and(|s| s.wire == WireFormat::AzureOpenAi) {
            api_version = api_version
                .or_else(|| self.env.var("AZURE_API_VERSION"))
                .or_else(|| Some(DEFAULT_AZURE_API_VERSION.to_owned()));
            if api_key.is_none() {
                azure_ad_token = self
                    .string(params, "azure_ad_token", &params_path)?
                    .or_else(|| self.env.var("AZURE_AD_TOKEN"))
                    .filter(|t| !t.is_empty())
                    .map(Secret::new);
            }
            if api_key.is_none() && azure_ad_token.is_none() {
                entra = Some(self.entra(params, &params_path)?);
            }
        }

        let mut provider_params = Map::new();
        for name in own_params {
            let value = match params.get(*name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(raw)) => {
                    let Some(text) = self.string(params, name, &params_path)? else { continue };
                    // A number or flag read from the environment is sent as one.
                    let from_env = raw.starts_with("os.environ/");
                    match serde_json::from_str::<Value>(&text) {
                        Ok(parsed) if from_env && (parsed.is_number() || parsed.is_boolean()) => parsed,
                        _ => Value::String(text),
                    }
                }
                Some(other) => other.clone(),
            };
            provider_params.insert((*name).to_owned(), value);
        }

        let id = match model_info.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => stable_id(&[&model_name, &model, api_base.as_deref().unwrap_or("")]),
        };

        let mut deployment = Deployment {
            pricing: None,
            id,
            model_name,
            provider,
            upstream_model,
            api_base,
            api_key,
            api_version,
            organization: self.string(params, "organization", &params_path)?,
            rpm,
            tpm,
            timeout,
            stream_timeout,
            max_retries,
            weight,
            order,
            extra_headers,
            drop_params,
            additional_drop_params,
            mock_response,
            model_info,
            azure_ad_token,
            entra,
            aws,
            vertex,
            provider_params,
        };
        // `bedrock/converse/<id>` is priced as `<id>`: the route prefix names no model.
        let priced_model = match deployment.wire() {
            Some(WireFormat::Bedrock) => provider_catalog::bedrock_model_id(&deployment.upstream_model),
            _ => &deployment.upstream_model,
        };
        deployment.pricing = self.pricing(
            params,
            &deployment.model_info,
            &params_path,
            deployment.provider_prefix(),
            priced_model,
        )?;
        Ok(deployment)
    }

    /// The response cache, when `litellm_settings.cache` is true.
    fn cache(
        &mut self,
        litellm: &Map<String, Value>,
        router_redis: Option<&Secret>,
    ) -> Result<Option<CacheConfig>, ConfigError> {
        let path = "litellm_settings.cache_params";
        let enabled = match litellm.get("cache") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(enabled)) => *enabled,
            Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => true,
            Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(invalid("litellm_settings.cache", "must be true or false")),
        };
        let empty = Map::new();
        let params = match litellm.get("cache_params") {
            None | Some(Value::Null) => &empty,
            Some(value) => as_object(value, path)?,
        };
        if !enabled {
            if litellm.contains_key("cache_params") {
                self.verdicts.ignored(path.to_owned(), "litellm_settings.cache is not true");
            }
            return Ok(None);
        }
        let redis = match self.string(params, "type", path)?.as_deref() {
            None | Some("local") => false,
            Some("redis") => true,
            Some(other) => {
                self.verdicts.ignored(format!("{path}.type={other}"), "the in-process cache is used instead");
                false
            }
        };
        let namespace = self.string(params, "namespace", path)?.filter(|n| !n.is_empty());
        let typed_ttl = if redis { "default_in_redis_ttl" } else { "default_in_memory_ttl" };
        let ttl = match self.seconds(params, typed_ttl, path)? {
            Some(ttl) => Some(ttl),
            None => self.seconds(params, "ttl", path)?,
        }
        .or(if redis { None } else { Some(DEFAULT_LOCAL_CACHE_TTL) });
        let supported_call_types = match params.get("supported_call_types") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let at = format!("{path}.supported_call_types");
                let names = value.as_array().ok_or_else(|| invalid(&at, "must be a list of call types"))?;
                let mut list = Vec::with_capacity(names.len());
                for name in names {
                    match name.as_str() {
                        Some(name) if CACHE_CALL_TYPES.contains(&name) => list.push(name.to_owned()),
                        _ => {
                            let name = name.as_str().map_or_else(|| name.to_string(), str::to_owned);
                            return Err(invalid(
                                &at,
                                format!(
                                    "'{name}' is not a call type (one of {})",
                                    CACHE_CALL_TYPES.join(", ")
                                ),
                            ));
                        }
                    }
                }
                Some(list)
            }
        };
        let scope = match self.string(params, "cache_scope", path)?.as_deref() {
            None | Some("global") => CacheScope::Global,
            Some("team") => CacheScope::Team,
            Some("key") => CacheScope::Key,
            Some(other) => {
                return Err(invalid(
                    &format!("{path}.cache_scope"),
                    format!("'{other}' is not global, team or key"),
                ));
            }
        };
        let default_on = match self.string(params, "mode", path)?.as_deref() {
            None | Some("default_on") => true,
            Some("default_off") => false,
            Some(other) => {
                return Err(invalid(
                    &format!("{path}.mode"),
                    format!("'{other}' is not default_on or default_off"),
                ));
            }
        };
        let redis_timeout =
            self.seconds(params, "socket_timeout", path)?.unwrap_or(DEFAULT_REDIS_CACHE_TIMEOUT);
        let backend = if redis {
            CacheBackend::Redis { url: self.cache_redis_url(params, path, router_redis)? }
        } else {
            CacheBackend::Local
        };
        self.verdicts.classify(
            params,
            path,
            &[
                "type",
                "host",
                "port",
                "password",
                "username",
                "url",
                "ssl",
                "namespace",
                "ttl",
                "default_in_memory_ttl",
                "default_in_redis_ttl",
                "supported_call_types",
                "cache_scope",
                "mode",
                "socket_timeout",
                "redis_startup_nodes",
                "sentinel_nodes",
                "service_name",
                "sentinel_password",
            ],
            IGNORED_CACHE_PARAMS,
        );
        Ok(Some(CacheConfig {
            backend,
            namespace,
            ttl,
            supported_call_types,
            scope,
            default_on,
            redis_timeout,
        }))
    }

    /// The Redis of a `type: redis` cache: `cache_params.url`, else `host` (+ `port`,
    /// `username`, `password`, `ssl`) each falling back to `REDIS_HOST`, `REDIS_PORT`,
    /// `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_SSL`; else `REDIS_URL`; else the Redis of
    /// `router_settings`.
    fn cache_redis_url(
        &self,
        params: &Map<String, Value>,
        path: &str,
        router_redis: Option<&Secret>,
    ) -> Result<Secret, ConfigError> {
        if let Some(url) = self.string(params, "url", path)?.filter(|url| !url.is_empty()) {
            return Ok(Secret::new(url));
        }
        let password = match self.string(params, "password", path)? {
            Some(password) => Some(password),
            None => self.env.var("REDIS_PASSWORD"),
        };
        let ssl = self.string(params, "ssl", path)?.or_else(|| self.env.var("REDIS_SSL"));
        if let Some(url) = self.redis_topology(params, path, password.as_deref(), ssl.as_deref())? {
            return Ok(url);
        }
        let host = match self.string(params, "host", path)? {
            Some(host) => Some(host),
            None => self.env.var("REDIS_HOST"),
        }
        .filter(|host| !host.is_empty());
        let Some(host) = host else {
            return self
                .env
                .var("REDIS_URL")
                .filter(|url| !url.is_empty())
                .map(Secret::new)
                .or_else(|| router_redis.cloned())
                .ok_or_else(|| {
                    invalid(
                        &format!("{path}.host"),
                        "missing: a redis cache needs host (or REDIS_HOST or REDIS_URL)",
                    )
                });
        };
        self.host_redis_url(params, path, "", host)
    }

    /// `redis://` (or `rediss://`) for `host`, with `{prefix}port`, `{prefix}username`,
    /// `{prefix}password` and `{prefix}ssl` read from `params`, each falling back to
    /// `REDIS_PORT`, `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_SSL`; credentials
    /// percent-encoded.
    fn host_redis_url(
        &self,
        params: &Map<String, Value>,
        path: &str,
        prefix: &str,
        host: String,
    ) -> Result<Secret, ConfigError> {
        let field = |key: &str, env: &str| -> Result<Option<String>, ConfigError> {
            Ok(match self.string(params, &format!("{prefix}{key}"), path)? {
                Some(value) => Some(value),
                None => self.env.var(env),
            }
            .filter(|value| !value.is_empty()))
        };
        let port = field("port", "REDIS_PORT")?.unwrap_or_else(|| "6379".to_owned());
        if port.parse::<u16>().is_err() {
            return Err(invalid(&format!("{path}.{prefix}port"), format!("'{port}' is not a port number")));
        }
        let ssl = match field("ssl", "REDIS_SSL")? {
            None => false,
            Some(flag) => match flag.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(invalid(&format!("{path}.{prefix}ssl"), "must be true or false")),
            },
        };
        let credentials = match (field("username", "REDIS_USERNAME")?, field("password", "REDIS_PASSWORD")?) {
            (None, None) => String::new(),
            (user, password) => format!(
                "{}:{}@",
                percent_encode(user.as_deref().unwrap_or_default()),
                percent_encode(password.as_deref().unwrap_or_default())
            ),
        };
        let scheme = if ssl { "rediss" } else { "redis" };
        Ok(Secret::new(format!("{scheme}://{credentials}{host}:{port}")))
    }

    /// A Redis Cluster or Sentinel deployment, as LiteLLM names them, as one fred URL
    /// (`redis-cluster://…?node=…`, `redis-sentinel://…?sentinelServiceName=…`):
    /// `redis_startup_nodes` (`[{host, port}]`) or `REDIS_CLUSTER_NODES` (the same, as JSON);
    /// `sentinel_nodes` (`[[host, port]]`) with `service_name` and `sentinel_password`, or
    /// `REDIS_SENTINEL_NODES`, `REDIS_SERVICE_NAME`, `REDIS_SENTINEL_PASSWORD`.
    fn redis_topology(
        &self,
        params: &Map<String, Value>,
        path: &str,
        password: Option<&str>,
        ssl: Option<&str>,
    ) -> Result<Option<Secret>, ConfigError> {
        let from_env = |name: &str, at: &str| -> Result<Option<Value>, ConfigError> {
            match self.env.var(name).filter(|text| !text.trim().is_empty()) {
                None => Ok(None),
                Some(text) => serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|error| invalid(at, format!("{name} is not a JSON list: {error}"))),
            }
        };
        let listed = |key: &str, env: &str| -> Result<Option<Value>, ConfigError> {
            match params.get(key) {
                None | Some(Value::Null) => from_env(env, &format!("{path}.{key}")),
                Some(value) => Ok(Some(value.clone())),
            }
        };
        let node = |value: &Value, at: &str| -> Result<String, ConfigError> {
            let (host, port) = match value {
                Value::Object(fields) => (fields.get("host"), fields.get("port")),
                Value::Array(pair) if pair.len() == 2 => (pair.first(), pair.get(1)),
                _ => (None, None),
            };
            let host = host.and_then(Value::as_str).filter(|host| !host.is_empty());
            let port = match port {
                Some(Value::Number(port)) => port.as_u64().and_then(|port| u16::try_from(port).ok()),
                Some(Value::String(port)) => port.parse::<u16>().ok(),
                _ => None,
            };
            match (host, port) {
                (Some(host), Some(port)) => Ok(format!("{host}:{port}")),
                _ => Err(invalid(at, "each node needs a host and a port ({host, port} or [host, port])")),
            }
        };
        let nodes = |list: Value, at: &str| -> Result<Vec<String>, ConfigError> {
            let items = list
                .as_array()
                .filter(|items| !items.is_empty())
                .ok_or_else(|| invalid(at, "must be a non-empty list of nodes"))?;
            items.iter().map(|item| node(item, at)).collect()
        };
        let tls = match ssl.map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no" | "") => false,
            Some("true" | "1" | "yes") => true,
            Some(_) => return Err(invalid(&format!("{path}.ssl"), "must be true or false")),
        };
        let credentials = password
            .filter(|p| !p.is_empty())
            .map(|p| format!(":{}@", percent_encode(p)))
            .unwrap_or_default();
        let secure = if tls { "s" } else { "" };
        let join = |first: &str, rest: &[String], extra: &str| {
            let mut query: Vec<String> = rest.iter().map(|node| format!("node={node}")).collect();
            if !extra.is_empty() {
                query.push(extra.to_owned());
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            format!("{first}{query}")
        };
        if let Some(list) = listed("redis_startup_nodes", "REDIS_CLUSTER_NODES")? {
            let nodes = nodes(list, &format!("{path}.redis_startup_nodes"))?;
            let url = join(&nodes[0], &nodes[1..], "");
            return Ok(Some(Secret::new(format!("redis{secure}-cluster://{credentials}{url}"))));
        }
        if let Some(list) = listed("sentinel_nodes", "REDIS_SENTINEL_NODES")? {
            let at = format!("{path}.sentinel_nodes");
            let nodes = nodes(list, &at)?;
            let service = self
                .string(params, "service_name", path)?
                .or_else(|| self.env.var("REDIS_SERVICE_NAME"))
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    invalid(
                        &format!("{path}.service_name"),
                        "missing: sentinel_nodes need the service_name of the primary",
                    )
                })?;
            let mut extra = format!("sentinelServiceName={}", percent_encode(&service));
            if let Some(sentinel_password) = self
                .string(params, "sentinel_password", path)?
                .or_else(|| self.env.var("REDIS_SENTINEL_PASSWORD"))
                .filter(|p| !p.is_empty())
            {
                extra.push_str(&format!("&sentinelPassword={}", percent_encode(&sentinel_password)));
            }
            let url = join(&nodes[0], &nodes[1..], &extra);
            return Ok(Some(Secret::new(format!("redis{secure}-sentinel://{credentials}{url}"))));
        }
        Ok(None)
    }

    /// The Redis URL the settings name, if any.
    fn redis_url(&self, router_settings: &Map<String, Value>) -> Result<Option<Secret>, ConfigError> {
        let path = "router_settings";
        if let Some(url) =
            self.string(router_settings, "redis_url", path)?.or_else(|| self.env.var("REDIS_URL"))
        {
            return Ok(Some(Secret::new(url)).filter(|url| !url.expose().is_empty()));
        }
        if self.string(router_settings, "redis_host", path)?.is_none() {
            let password = self
                .string(router_settings, "redis_password", path)?
                .or_else(|| self.env.var("REDIS_PASSWORD"));
            let ssl = self.env.var("REDIS_SSL");
            if let Some(url) =
                self.redis_topology(&Map::new(), "environment", password.as_deref(), ssl.as_deref())?
            {
                return Ok(Some(url));
            }
        }
        let host = self
            .string(router_settings, "redis_host", path)?
            .or_else(|| self.env.var("REDIS_HOST"))
            .filter(|host| !host.is_empty());
        match host {
            Some(host) => self.host_redis_url(router_settings, path, "redis_", host).map(Some),
            None => Ok(None),
        }
    }

    /// The deployment's prices: the table's entry for its model (or `model_info.base_model`,
    /// as LiteLLM prices Azure deployments), with any price set in `litellm_params` or
    /// `model_info` on top. `None` when neither knows the model.
    fn pricing(
        &self,
        params: &Map<String, Value>,
        model_info: &Map<String, Value>,
        params_path: &str,
        prefix: &str,
        upstream_model: &str,
    ) -> Result<Option<Pricing>, ConfigError> {
        // Offline answers cost nothing unless the config prices them.
        let listed = prefix != "fake";
        let base_model = model_info.get("base_model").and_then(Value::as_str).filter(|_| listed);
        let table = PriceTable::load();
        let mut pricing = base_model
            .and_then(|base| {
                let (provider, model) = base.split_once('/').unwrap_or((prefix, base));
                table.lookup(provider, model)
            })
            .or_else(|| if listed { table.lookup(prefix, upstream_model) } else { None });
        let info_path = params_path.replace("litellm_params", "model_info");
        for (key, set) in [
            ("input_cost_per_token", (|p: &mut Pricing, v| p.input = v) as fn(&mut Pricing, f64)),
            ("output_cost_per_token", |p, v| p.output = v),
            ("cache_read_input_token_cost", |p, v| p.cache_read = Some(v)),
            ("cache_creation_input_token_cost", |p, v| p.cache_creation = Some(v)),
            ("output_cost_per_reasoning_token", |p, v| p.reasoning = Some(v)),
            ("input_cost_per_query", |p, v| p.per_query = Some(v)),
        ] {
            let value = match self.number(params, key, params_path)? {
                Some(value) => Some(value),
                None => self.number(model_info, key, &info_path)?,
            };
            if let Some(value) = value {
                if value < 0.0 {
                    return Err(invalid(&format!("{params_path}.{key}"), "must not be negative"));
                }
                set(pricing.get_or_insert_with(Pricing::default), value);
            }
        }
        Ok(pricing)
    }

    /// Entra ID client credentials from the params or Azure's usual environment variables;
    /// an Azure deployment with no key, no token and no credentials is a config error.
    fn entra(&self, params: &Map<String, Value>, path: &str) -> Result<EntraCredentials, ConfigError> {
        let field = |key: &str, env: &str| -> Result<Option<String>, ConfigError> {
            Ok(self.string(params, key, path)?.or_else(|| self.env.var(env)).filter(|v| !v.is_empty()))
        };
        match (
            field("tenant_id", "AZURE_TENANT_ID")?,
            field("client_id", "AZURE_CLIENT_ID")?,
            field("client_secret", "AZURE_CLIENT_SECRET")?,
        ) {
            (Some(tenant_id), Some(client_id), Some(client_secret)) => Ok(EntraCredentials {
                tenant_id,
                client_id,
                client_secret: Secret::new(client_secret),
                scope: self
                    .string(params, "azure_scope", path)?
                    .unwrap_or_else(|| DEFAULT_AZURE_SCOPE.to_owned()),
                authority: self
                    .env
                    .var("AZURE_AUTHORITY_HOST")
                    .unwrap_or_else(|| DEFAULT_AZURE_AUTHORITY.to_owned())
                    .trim_end_matches('/')
                    .to_owned(),
            }),
            _ => Err(invalid(
                path,
                "an azure model needs api_key, azure_ad_token, or tenant_id + client_id + client_secret (or AZURE_API_KEY / AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)",
            )),
        }
    }

    /// Vertex AI's project, location and credentials from the params or the variables
    /// LiteLLM and Google's libraries read.
    fn vertex(&self, params: &Map<String, Value>, path: &str) -> Result<VertexParams, ConfigError> {
        let first = |keys: &[&str], envs: &[&str]| -> Result<Option<(String, String)>, ConfigError> {
            for key in keys {
                if let Some(value) = self.string(params, key, path)?.filter(|v| !v.is_empty()) {
                    return Ok(Some((format!("{path}.{key}"), value)));
                }
            }
            Ok(envs.iter().find_map(|name| {
                self.env.var(name).filter(|v| !v.is_empty()).map(|v| ((*name).to_owned(), v))
            }))
        };
        // Both end up in a URL path, so only the characters Google allows in them pass.
        let checked = |found: Option<(String, String)>, extra: &[char]| match found {
            Some((at, value))
                if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || extra.contains(&c)) =>
            {
                Err(invalid(&at, format!("'{value}' is not a valid Google Cloud name")))
            }
            other => Ok(other.map(|(_, value)| value)),
        };
        let project = checked(
            first(&["vertex_project", "vertex_ai_project"], &["VERTEXAI_PROJECT", "GOOGLE_CLOUD_PROJECT"])?,
            // Legacy project ids carry a domain: `example.com:my-project`.
            &['.', ':', '_'],
        )?;
        let location = checked(
            first(&["vertex_location", "vertex_ai_location"], &["VERTEXAI_LOCATION", "VERTEX_LOCATION"])?,
            &[],
        )?
        .unwrap_or_else(|| DEFAULT_VERTEX_LOCATION.to_owned());

        let mut key_file = None;
        for (key, setting) in
            [("vertex_credentials", "vertex_credentials"), ("vertex_ai_credentials", "vertex_ai_credentials")]
        {
            if key_file.is_some() {
                break;
            }
            key_file = match params.get(key) {
                // LiteLLM also takes the key file's JSON written out as a YAML mapping.
                Some(object @ Value::Object(_)) => Some((setting, object.to_string())),
                _ => self.string(params, key, path)?.filter(|v| !v.is_empty()).map(|v| (setting, v)),
            };
        }
        for name in ["VERTEXAI_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"] {
            if key_file.is_none() {
                key_file = self.env.var(name).filter(|v| !v.is_empty()).map(|v| (name, v));
            }
        }
        let credentials = match key_file {
            Some((setting, value)) => GoogleCredentials::KeyFile { setting, value: Secret::new(value) },
            None => GoogleCredentials::Ambient {
                gcloud_file: self
                    .env
                    .var("CLOUDSDK_CONFIG")
                    .filter(|dir| !dir.is_empty())
                    .or_else(|| {
                        self.env
                            .var("HOME")
                            .filter(|home| !home.is_empty())
                            .map(|home| format!("{home}/.config/gcloud"))
                    })
                    .map(|dir| format!("{}/application_default_credentials.json", dir.trim_end_matches('/'))),
                metadata_host: self
                    .env
                    .var("GCE_METADATA_HOST")
                    .filter(|host| !host.is_empty())
                    .unwrap_or_else(|| DEFAULT_GCE_METADATA_HOST.to_owned()),
            },
        };
        Ok(VertexParams { project, location, credentials })
    }

    /// A Bedrock deployment's region, as LiteLLM finds it: `aws_region_name`, the region of a
    /// model ARN, `AWS_REGION_NAME`, `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-west-2`.
    fn aws_region(
        &self,
        params: &Map<String, Value>,
        path: &str,
        upstream_model: &str,
    ) -> Result<String, ConfigError> {
        let from_arn = provider_catalog::bedrock_model_id(upstream_model)
            .strip_prefix("arn:")
            .and_then(|arn| arn.split(':').nth(2))
            .filter(|region| !region.is_empty())
            .map(str::to_owned);
        let region = match self.string(params, "aws_region_name", path)? {
            Some(region) => region,
            None => from_arn
                .or_else(|| self.env.var("AWS_REGION_NAME"))
                .or_else(|| self.env.var("AWS_REGION"))
                .or_else(|| self.env.var("AWS_DEFAULT_REGION"))
                .filter(|region| !region.is_empty())
                .unwrap_or_else(|| DEFAULT_AWS_REGION.to_owned()),
        };
        // The region becomes part of a host name and of the signature's scope.
        if region.is_empty()
            || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                &format!("{path}.aws_region_name"),
                format!("'{region}' is not an AWS region name"),
            ));
        }
        Ok(region)
    }

    /// A Bedrock deployment's credentials: `api_key` (a Bedrock API key), then
    /// `aws_access_key_id` + `aws_secret_access_key` (+ `aws_session_token`) from the params,
    /// then `AWS_BEARER_TOKEN_BEDROCK`, then the `AWS_ACCESS_KEY_ID` family from the
    /// environment, then web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, as EKS
    /// injects them). Settings in `litellm_params` win over the environment.
    fn aws_auth(
        &self,
        params: &Map<String, Value>,
        path: &str,
        api_key: Option<&str>,
        region: &str,
    ) -> Result<AwsAuth, ConfigError> {
        if let Some(key) = api_key.filter(|k| !k.is_empty()) {
            return Ok(AwsAuth::BearerToken(Secret::new(key)));
        }
        let field = |key: &str| -> Result<Option<String>, ConfigError> {
            Ok(self.string(params, key, path)?.filter(|v| !v.is_empty()))
        };
        let keys = |id: String, secret: String, token: Option<String>| AwsAuth::Keys {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: token.map(Secret::new),
        };
        match (field("aws_access_key_id")?, field("aws_secret_access_key")?) {
            (Some(id), Some(secret)) => return Ok(keys(id, secret, field("aws_session_token")?)),
            (Some(_), None) => {
                return Err(invalid(
                    &format!("{path}.aws_secret_access_key"),
                    "missing; aws_access_key_id is set",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &format!("{path}.aws_access_key_id"),
                    "missing; aws_secret_access_key is set",
                ));
            }
            (None, None) => {}
        }
        let env = |name: &str| self.env.var(name).filter(|v| !v.is_empty());
        if let Some(token) = env("AWS_BEARER_TOKEN_BEDROCK") {
            return Ok(AwsAuth::BearerToken(Secret::new(token)));
        }
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(keys(id, secret, env("AWS_SESSION_TOKEN")));
        }
        match (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
            (Some(token_file), Some(role_arn)) => {
                let sts_endpoint = match field("aws_sts_endpoint")? {
                    Some(endpoint) => endpoint,
                    None => env("AWS_ENDPOINT_URL_STS")
                        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
                };
                if !sts_endpoint.starts_with("http://") && !sts_endpoint.starts_with("https://") {
                    return Err(invalid(
                        &format!("{path}.aws_sts_endpoint"),
                        format!("'{sts_endpoint}' is not an http:// or https:// URL"),
                    ));
                }
                return Ok(AwsAuth::WebIdentity(WebIdentity {
                    role_arn,
                    token_file,
                    session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "tollgate".to_owned()),
                    sts_endpoint: sts_endpoint.trim_end_matches('/').to_owned(),
                }));
            }
            (Some(_), None) => {
                return Err(invalid(path, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not"));
            }
            _ => {}
        }
        Err(invalid(
            path,
            "a bedrock model needs credentials: api_key (a Bedrock API key), aws_access_key_id + aws_secret_access_key, or AWS_BEARER_TOKEN_BEDROCK / AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY / AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN in the environment",
        ))
    }

    fn router_settings(
        &mut self,
        router: &Map<String, Value>,
        litellm: &Map<String, Value>,
    ) -> Result<RouterSettings, ConfigError> {
        // router_settings wins over litellm_settings for the keys both may hold.
        let source = |key: &str| {
            if router.contains_key(key) { (router, "router_settings") } else { (litellm, "litellm_settings") }
        };
        let mut settings = RouterSettings::default();
        let (map, path) = source("num_retries");
        if let Some(n) = self.unsigned(map, "num_retries", path)? {
            settings.num_retries =
                u32::try_from(n).map_err(|_| invalid(&format!("{path}.num_retries"), "too large"))?;
        }
        let (map, path) = source("allowed_fails");
        if let Some(n) = self.unsigned(map, "allowed_fails", path)? {
            settings.allowed_fails =
                u32::try_from(n).map_err(|_| invalid(&format!("{path}.allowed_fails"), "too large"))?;
        }
        let (map, path) = source("cooldown_time");
        if let Some(secs) = self.number(map, "cooldown_time", path)? {
            settings.cooldown_time = Duration::try_from_secs_f64(secs)
                .map_err(|_| invalid(&format!("{path}.cooldown_time"), "too large"))?;
        }
        let (map, path) = source("max_fallbacks");
        if let Some(n) = self.unsigned(map, "max_fallbacks", path)? {
            settings.max_fallbacks = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let (map, path) = source("fallbacks");
        settings.fallbacks = fallback_lists(map.get("fallbacks"), &format!("{path}.fallbacks"))?;
        let (map, path) = source("context_window_fallbacks");
        settings.context_window_fallbacks =
            fallback_lists(map.get("context_window_fallbacks"), &format!("{path}.context_window_fallbacks"))?;
        let (map, path) = source("content_policy_fallbacks");
        settings.content_policy_fallbacks =
            fallback_lists(map.get("content_policy_fallbacks"), &format!("{path}.content_policy_fallbacks"))?;
        let (map, path) = source("default_fallbacks");
        settings.default_fallbacks = match map.get("default_fallbacks") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => string_list(value, &format!("{path}.default_fallbacks"))?,
        };
        self.routing(router, &mut settings)?;
        if let Some(aliases) = router.get("model_group_alias").filter(|v| !v.is_null()) {
            let aliases = as_object(aliases, "router_settings.model_group_alias")?;
            for (alias, target) in aliases {
                let at = format!("router_settings.model_group_alias.{alias}");
                let (group, hidden) = match target {
                    Value::String(group) => (group.clone(), false),
                    Value::Object(object) => (
                        object
                            .get("model")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(&at, "needs `model`"))?
                            .to_owned(),
                        object.get("hidden").and_then(Value::as_bool).unwrap_or(false),
                    ),
                    _ => return Err(invalid(&at, "must be a model name or {model, hidden}")),
                };
                settings.model_group_alias.push(ModelGroupAlias { alias: alias.clone(), group, hidden });
            }
        }
        Ok(settings)
    }

    /// The router-only keys: `routing_strategy` and its args, the retry and allowed-fails
    /// policies, `retry_after` and `enable_pre_call_checks`.
    fn routing(
        &mut self,
        router: &Map<String, Value>,
        settings: &mut RouterSettings,
    ) -> Result<(), ConfigError> {
        let path = "router_settings";
        if let Some(name) = self.string(router, "routing_strategy", path)? {
            settings.routing_strategy = RoutingStrategy::from_name(&name).ok_or_else(|| {
                invalid(
                    "router_settings.routing_strategy",
                    format!(
                        "unknown strategy '{name}'; expected one of {}",
                        RoutingStrategy::NAMES.join(", ")
                    ),
                )
            })?;
            if name == "usage-based-routing" {
                self.verdicts.ignored(
                    "router_settings.routing_strategy=usage-based-routing".to_owned(),
                    "served as usage-based-routing-v2",
                );
            }
        }
        if let Some(args) = router.get("routing_strategy_args").filter(|v| !v.is_null()) {
            let at = "router_settings.routing_strategy_args";
            let args = as_object(args, at)?;
            let defaults = StrategyArgs::default();
            settings.strategy_args = StrategyArgs {
                lowest_latency_buffer: self
                    .number(args, "lowest_latency_buffer", at)?
                    .unwrap_or(defaults.lowest_latency_buffer),
                ttl: self.seconds(args, "ttl", at)?.unwrap_or(defaults.ttl),
                max_latency_list_size: match self.unsigned(args, "max_latency_list_size", at)? {
                    None => defaults.max_latency_list_size,
                    Some(n @ 1..=1000) => n as usize,
                    Some(_) => {
                        return Err(invalid(&format!("{at}.max_latency_list_size"), "must be 1 to 1000"));
                    }
                },
            };
            self.verdicts.classify(args, at, &["lowest_latency_buffer", "ttl", "max_latency_list_size"], &[]);
            if settings.routing_strategy != RoutingStrategy::LatencyBased {
                self.verdicts.ignored(at.to_owned(), "read by latency-based-routing only");
            }
        }
        if let Some(policy) = router.get("retry_policy").filter(|v| !v.is_null()) {
            settings.retry_policy =
                self.failure_policy(policy, "router_settings.retry_policy", "ErrorRetries")?;
        }
        if let Some(groups) = router.get("model_group_retry_policy").filter(|v| !v.is_null()) {
            let at = "router_settings.model_group_retry_policy";
            for (group, policy) in as_object(groups, at)? {
                let policy = self.failure_policy(policy, &format!("{at}.{group}"), "ErrorRetries")?;
                settings.model_group_retry_policy.push((group.clone(), policy));
            }
        }
        if let Some(policy) = router.get("allowed_fails_policy").filter(|v| !v.is_null()) {
            settings.allowed_fails_policy =
                self.failure_policy(policy, "router_settings.allowed_fails_policy", "ErrorAllowedFails")?;
        }
        if let Some(secs) = self.number(router, "retry_after", path)? {
            settings.retry_after = Duration::try_from_secs_f64(secs)
                .map_err(|_| invalid("router_settings.retry_after", "too large"))?;
        }
        settings.enable_pre_call_checks = match router.get("enable_pre_call_checks") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(on)) => *on,
            Some(_) => {
                return Err(invalid("router_settings.enable_pre_call_checks", "must be true or false"));
            }
        };
        Ok(())
    }

    /// A `retry_policy` or `allowed_fails_policy` mapping: `{BadRequestErrorRetries: 0, …}`,
    /// each key a failure class's LiteLLM name followed by `suffix`. Keys naming classes
    /// this build does not tell apart are reported, not dropped silently.
    fn failure_policy(
        &mut self,
        value: &Value,
        path: &str,
        suffix: &str,
    ) -> Result<FailurePolicy, ConfigError> {
        let map = as_object(value, path)?;
        let mut policy = FailurePolicy::default();
        for key in map.keys() {
            let class = FailureClass::ALL
                .into_iter()
                .find(|class| key.strip_suffix(suffix) == Some(class.litellm_name()));
            match class {
                Some(class) => {
                    let n = self.unsigned(map, key, path)?.unwrap_or(0);
                    let n = u32::try_from(n).map_err(|_| invalid(&format!("{path}.{key}"), "too large"))?;
                    policy.set(class, n);
                    self.verdicts.record(format!("{path}.{key}"), SettingStatus::Supported);
                }
                None => self.verdicts.record(format!("{path}.{key}"), SettingStatus::Unknown),
            }
        }
        Ok(policy)
    }

    /// A `general_settings` field in LiteLLM's duration form (`30s`, `12h`, `7d`, `1mo`),
    /// longer than zero.
    fn litellm_duration(
        &self,
        general_settings: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = self.string(general_settings, key, "general_settings")? else { return Ok(None) };
        let path = format!("general_settings.{key}");
        let parsed = crate::duration::Duration::parse(&text).map_err(|reason| invalid(&path, reason))?;
        match u64::try_from(parsed.seconds()) {
            Ok(seconds) if seconds > 0 => Ok(Some(Duration::from_secs(seconds))),
            _ => Err(invalid(&path, format!("'{text}' must be longer than zero (e.g. 7d, 30d)"))),
        }
    }

    /// `background_health_checks` and its companions in `general_settings`; the routing ones
    /// go into `router`.
    fn background_health_checks(
        &mut self,
        general: &Map<String, Value>,
        router: &mut RouterSettings,
    ) -> Result<Option<BackgroundHealthChecks>, ConfigError> {
        const PATH: &str = "general_settings";
        let on = self.flag(general, "background_health_checks", PATH)?.unwrap_or(false);
        // LiteLLM runs no checks with an interval of 0.
        let interval = match self.number(general, "health_check_interval", PATH)? {
            None => DEFAULT_HEALTH_CHECK_INTERVAL,
            Some(secs) => Duration::try_from_secs_f64(secs)
                .map_err(|_| invalid(&format!("{PATH}.health_check_interval"), "too large"))?,
        };
        let concurrency = match self.unsigned(general, "health_check_concurrency", PATH)? {
            None => DEFAULT_HEALTH_CHECK_CONCURRENCY,
            Some(0) => {
                return Err(invalid(&format!("{PATH}.health_check_concurrency"), "must be at least 1"));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let routing = &mut router.health_check_routing;
        routing.enabled = self.flag(general, "enable_health_check_routing", PATH)?.unwrap_or(false);
        routing.staleness = self
            .seconds(general, "health_check_staleness_threshold", PATH)?
            .unwrap_or(interval.saturating_mul(2));
        routing.ignore_transient_errors =
            self.flag(general, "health_check_ignore_transient_errors", PATH)?.unwrap_or(false);
        let checks = (on && !interval.is_zero()).then_some(BackgroundHealthChecks { interval, concurrency });
        if routing.enabled && checks.is_none() {
            // Nothing would ever mark a deployment: say so rather than pretend.
            routing.enabled = false;
            self.verdicts.ignored(
                format!("{PATH}.enable_health_check_routing"),
                "needs background_health_checks: true",
            );
        }
        Ok(checks)
    }

    /// A boolean field: YAML's `true`/`false`, or their text (`os.environ/…`, `"True"`).
    fn flag(&self, map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, ConfigError> {
        if let Some(Value::Bool(value)) = map.get(key) {
            return Ok(Some(*value));
        }
        match self.string(map, key, path)?.map(|text| text.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(text) if text == "true" => Ok(Some(true)),
            Some(text) if text == "false" => Ok(Some(false)),
            Some(_) => Err(invalid(&format!("{path}.{key}"), "must be true or false")),
        }
    }

    /// A string field with `os.environ/NAME` resolved. Numbers and booleans are accepted
    /// as their text, since YAML turns `api_version: 2024` into a number.
    fn string(&self, map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, ConfigError> {
        let field_path = format!("{path}.{key}");
        let text = match map.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => scalar_to_string(v, &field_path)?,
        };
        match text.strip_prefix("os.environ/") {
            Some(name) => self
                .env
                .var(name)
                .map(Some)
                .ok_or_else(|| invalid(&field_path, format!("environment variable {name} is not set"))),
            None => Ok(Some(text)),
        }
    }

    fn number(&self, map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<f64>, ConfigError> {
        let field_path = format!("{path}.{key}");
        match self.string(map, key, path)? {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(Some)
                .ok_or_else(|| invalid(&field_path, format!("'{text}' is not a non-negative number"))),
        }
    }

    fn seconds(
        &self,
        map: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        let secs = self.number(map, key, path)?;
        match secs {
            Some(0.0) => Err(invalid(&format!("{path}.{key}"), "must be greater than 0")),
            Some(s) => Duration::try_from_secs_f64(s)
                .map(Some)
                .map_err(|_| invalid(&format!("{path}.{key}"), "too large")),
            None => Ok(None),
        }
    }

    fn unsigned(&self, map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>, ConfigError> {
        match self.number(map, key, path)? {
            Some(n) if n.fract() == 0.0 && n <= u64::MAX as f64 => Ok(Some(n as u64)),
            Some(_) => Err(invalid(&format!("{path}.{key}"), "must be a whole number")),
            None => Ok(None),
        }
    }
}

/// LiteLLM's fallback lists: `[{group: [fallback, …]}, …]`.
fn fallback_lists(value: Option<&Value>, path: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let entries = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(invalid(path, "must be a list of {model_name: [fallbacks]}")),
    };
    let mut lists = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{path}[{i}]");
        for (group, targets) in as_object(entry, &at)? {
            lists.push((group.clone(), string_list(targets, &format!("{at}.{group}"))?));
        }
    }
    Ok(lists)
}

fn string_list(value: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    match value {
        Value::String(one) => Ok(vec![one.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| invalid(path, "must hold model names"))
            })
            .collect(),
        _ => Err(invalid(path, "must be a list of model names")),
    }
}

fn as_object<'v>(value: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ConfigError> {
    value.as_object().ok_or_else(|| invalid(path, "must be a mapping"))
}

fn scalar_to_string(value: &Value, path: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid(path, "must be a string")),
    }
}

/// `text` with everything but URL-safe characters percent-encoded, for credentials in a URL.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// FNV-1a over the parts: an id that stays the same across restarts and replicas.
fn stable_id(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load(yaml: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_yaml(yaml, &env(&[("OPENAI_KEY", "sk-from-env")]))
    }

    fn error_of(yaml: &str) -> String {
        load(yaml).unwrap_err().to_string()
    }

    #[test]
    fn reads_a_seed_style_config() {
        let config = load(
            r#"
model_list:
  - model_name: general-purpose
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_KEY
      timeout: 30
      max_retries: 2
      extra_headers: {X-Team: search}
  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_key: os.environ/OPENAI_KEY
  - model_name: local-llama
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: http://vllm:8000/v1/
    model_info: {id: llama-1}
general_settings:
  master_key: sk-1234
"#,
        )
        .unwrap();
        assert_eq!(config.model_names(), ["general-purpose", "text-embedding-3-small", "local-llama"]);
        let gp = &config.deployments[0];
        assert_eq!(gp.upstream_model, "gpt-4o");
        assert_eq!(gp.api_base.as_deref(), Some("https://api.openai.com/v1"));
        assert_eq!(gp.api_key.as_ref().unwrap().expose(), "sk-from-env");
        assert_eq!(gp.timeout, Duration::from_secs(30));
        assert_eq!(gp.stream_timeout, Duration::from_secs(30));
        assert_eq!(gp.max_retries, 2);
        assert_eq!(gp.extra_headers, [("X-Team".to_string(), "search".to_string())]);
        let llama = &config.deployments[2];
        assert_eq!(llama.upstream_model, "meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(llama.api_base.as_deref(), Some("http://vllm:8000/v1"));
        assert_eq!(llama.id, "llama-1");
        assert_eq!(config.master_key.unwrap().expose(), "sk-1234");
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
    }

    #[test]
    fn errors_name_the_exact_path() {
        let yaml = "model_list:\n  - model_name: a\n    litellm_params: {model: fake/a}\n  - model_name: b\n    litellm_params: {model: fake/b}\n  - model_name: c\n    litellm_params: {api_key: x}\n";
        assert_eq!(error_of(yaml), "model_list[2].litellm_params.model: missing");
        assert_eq!(
            error_of("model_list:\n  - litellm_params: {model: fake/a}\n"),
            "model_list[0].model_name: missing"
        );
        assert_eq!(error_of("model_list:\n  - model_name: a\n"), "model_list[0].litellm_params: missing");
        assert_eq!(error_of("model_list: {}\n"), "model_list: must be a list");
        assert_eq!(
            error_of(
                "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: os.environ/NOPE}\n"
            ),
            "model_list[0].litellm_params.api_key: environment variable NOPE is not set"
        );
        assert_eq!(
            error_of(
                "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, timeout: soon}\n"
            ),
            "model_list[0].litellm_params.timeout: 'soon' is not a non-negative number"
        );
        assert_eq!(
            error_of("model_list:\n  - model_name: a\n    litellm_params: {model: llama3}\n"),
            "model_list[0].litellm_params.model: 'llama3' names no provider; write it as provider/model, e.g. openai/llama3"
        );
        assert_eq!(
            error_of("model_list:\n  - model_name: a\n    litellm_params: {model: hosted_vllm/x}\n"),
            "model_list[0].litellm_params.api_base: missing; provider 'hosted_vllm' has no default"
        );
        assert!(error_of("model_list: [").starts_with("config is not valid YAML"));
    }

    #[test]
    fn store_model_in_db_salt_key_and_later_deployments_are_read() {
        let off = load("model_list: []\n").unwrap();
        assert!(!off.store_model_in_db && off.salt_key.is_none());
        let from_env = GatewayConfig::from_yaml(
            "model_list: []\n",
            &env(&[("STORE_MODEL_IN_DB", "True"), ("LITELLM_SALT_KEY", "salt")]),
        )
        .unwrap();
        assert!(from_env.store_model_in_db);
        assert_eq!(from_env.salt_key.as_ref().map(Secret::expose), Some("salt"));
        assert_eq!(
            error_of("general_settings: {store_model_in_db: maybe}\n"),
            "general_settings.store_model_in_db: must be true or false"
        );

        // A deployment read later gets the file's defaults and names its own path.
        let config = load("router_settings: {timeout: 7}\nlitellm_settings: {drop_params: true}\n").unwrap();
        let entry: Value = serde_json::json!({"model_name": "m", "litellm_params": {"model": "openai/x", "api_key": "k"}, "model_info": {"id": "row-1"}});
        let (deployment, unsupported) = config.read_deployment(&entry, "row", &env(&[])).unwrap();
        assert_eq!((deployment.id.as_str(), deployment.timeout), ("row-1", Duration::from_secs(7)));
        assert!(deployment.drop_params && unsupported.is_empty());
        let missing = serde_json::json!({"model_name": "m", "litellm_params": {}});
        assert_eq!(
            config.read_deployment(&missing, "row", &env(&[])).unwrap_err().to_string(),
            "row.litellm_params.model: missing"
        );
    }

    #[test]
    fn spend_log_retention_reads_litellm_durations() {
        let config = load(
            "general_settings: {maximum_spend_logs_retention_period: 30d, maximum_spend_logs_retention_interval: 12h}\n",
        )
        .unwrap();
        assert_eq!(config.spend_logs_retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(config.spend_logs_retention_interval, Duration::from_secs(12 * 3_600));
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);

        let defaults = load("general_settings: {maximum_spend_logs_retention_period: \"7d\"}\n").unwrap();
        assert_eq!(defaults.spend_logs_retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(defaults.spend_logs_retention_interval, Duration::from_secs(86_400), "daily, as LiteLLM");
        assert_eq!(load("model_list: []\n").unwrap().spend_logs_retention, None, "kept forever by default");

        assert_eq!(
            error_of("general_settings: {maximum_spend_logs_retention_period: soon}\n"),
            "general_settings.maximum_spend_logs_retention_period: Invalid duration format: \"soon\" (use e.g. 30s, 10m, 1h, 7d, 1mo)"
        );
        assert!(error_of("general_settings: {maximum_spend_logs_retention_interval: 0d}\n").starts_with(
            "general_settings.maximum_spend_logs_retention_interval: '0d' must be longer than zero"
        ));
    }

    #[test]
    fn unsupported_settings_are_named_not_dropped() {
        let config = load(
            r#"
model_list:
  - model_name: claude
    litellm_params: {model: replicate/meta/llama-3-70b, tpm: 10, hf_model_name: p}
litellm_settings: {cache: true, request_timeout: 5}
router_settings:
  num_retries: 2
  routing_strategy: usage-based-routing
  retry_policy: {NotFoundErrorRetries: 1}
  redis_host: r
  redis_password: pw
general_settings: {master_key: sk-1, database_url: "postgresql://x"}
include: [other.yaml]
"#,
        )
        .unwrap();
        assert_eq!(
            config.unsupported,
            [
                "model_list[0].litellm_params.hf_model_name",
                "model_list[0].litellm_params.model=replicate/… (provider not supported yet)",
                "router_settings.routing_strategy=usage-based-routing (served as usage-based-routing-v2)",
                "router_settings.retry_policy.NotFoundErrorRetries",
                "include (other files are not read; merge them into this one)",
            ]
        );
        assert_eq!(config.deployments[0].timeout, Duration::from_secs(5));
        assert!(config.deployments[0].wire().is_none());
        assert_eq!(config.database_url.unwrap().expose(), "postgresql://x");
        assert_eq!(config.redis_url.unwrap().expose(), "redis://:pw@r:6379");
        assert_eq!(config.budget_exceeded_status, 422);
        let cache = config.cache.expect("cache: true turns the in-process cache on");
        assert!(matches!(cache.backend, CacheBackend::Local));
        assert_eq!(cache.ttl, Some(DEFAULT_LOCAL_CACHE_TTL));
    }

    #[test]
    fn cache_params_are_read_as_litellm_reads_them() {
        let seed = GatewayConfig::from_yaml(
            r#"
litellm_settings:
  cache: true
  cache_params:
    type: redis
    host: os.environ/CACHE_HOST
    port: 6380
    namespace: litellm_cache
    ttl: 86400
    supported_call_types: [acompletion, aembedding]
    cache_scope: team
    socket_timeout: 0.2
"#,
            &env(&[("CACHE_HOST", "redis.redis.svc"), ("REDIS_PASSWORD", "p@ss:word")]),
        )
        .unwrap();
        let cache = seed.cache.unwrap();
        match &cache.backend {
            CacheBackend::Redis { url } => {
                assert_eq!(
                    url.expose(),
                    "redis://:p%40ss%3Aword@redis.redis.svc:6380",
                    "REDIS_PASSWORD fills in"
                )
            }
            CacheBackend::Local => panic!("type: redis"),
        }
        assert_eq!(cache.namespace.as_deref(), Some("litellm_cache"));
        assert_eq!(cache.ttl, Some(Duration::from_secs(86400)));
        assert_eq!(
            cache.supported_call_types.as_deref(),
            Some(&["acompletion".to_owned(), "aembedding".to_owned()][..])
        );
        assert_eq!((cache.scope, cache.default_on), (CacheScope::Team, true));
        assert_eq!(cache.redis_timeout, Duration::from_millis(200));
        assert!(seed.unsupported.is_empty(), "{:?}", seed.unsupported);

        let from_env = GatewayConfig::from_yaml(
            "litellm_settings: {cache: true, cache_params: {type: redis, ssl: true, mode: default_off, similarity_threshold: 0.8}}",
            &env(&[("REDIS_HOST", "r"), ("REDIS_PORT", "6379")]),
        )
        .unwrap();
        let cache = from_env.cache.unwrap();
        assert!(matches!(&cache.backend, CacheBackend::Redis { url } if url.expose() == "rediss://r:6379"));
        assert_eq!((cache.ttl, cache.default_on, cache.scope), (None, false, CacheScope::Global));
        assert_eq!(
            from_env.unsupported,
            ["litellm_settings.cache_params.similarity_threshold (no semantic cache)"]
        );

        let off = load("litellm_settings: {cache: false, cache_params: {type: redis}}").unwrap();
        assert!(off.cache.is_none(), "cache_params alone turn nothing on");
        let s3 = load("litellm_settings: {cache: true, cache_params: {type: s3, ttl: 5}}").unwrap();
        assert!(matches!(s3.cache.as_ref().unwrap().backend, CacheBackend::Local));
        assert_eq!(
            s3.unsupported,
            ["litellm_settings.cache_params.type=s3 (the in-process cache is used instead)"]
        );
        assert_eq!(
            error_of("litellm_settings: {cache: true, cache_params: {type: redis}}"),
            "litellm_settings.cache_params.host: missing: a redis cache needs host (or REDIS_HOST or REDIS_URL)"
        );
        assert!(
            error_of("litellm_settings: {cache: true, cache_params: {supported_call_types: [chat]}}")
                .starts_with("litellm_settings.cache_params.supported_call_types: 'chat' is not a call type")
        );
        assert!(
            error_of("litellm_settings: {cache: true, cache_params: {cache_scope: user}}")
                .contains("cache_scope")
        );
    }

    #[test]
    fn router_redis_from_host_settings_encodes_credentials_and_honours_ssl() {
        let settings = GatewayConfig::from_yaml(
            "router_settings: {redis_host: r.svc, redis_port: 6380, redis_password: 'p@ss:w/rd'}",
            &env(&[("REDIS_USERNAME", "gw user"), ("REDIS_SSL", "true")]),
        )
        .unwrap();
        assert_eq!(settings.redis_url.unwrap().expose(), "rediss://gw%20user:p%40ss%3Aw%2Frd@r.svc:6380");
        let from_env = GatewayConfig::from_yaml(
            "model_list: []",
            &env(&[("REDIS_HOST", "r"), ("REDIS_PASSWORD", "a#b")]),
        )
        .unwrap();
        assert_eq!(from_env.redis_url.unwrap().expose(), "redis://:a%23b@r:6379");
        let bad_port =
            GatewayConfig::from_yaml("router_settings: {redis_host: r, redis_port: http}", &env(&[]))
                .unwrap_err();
        assert!(bad_port.to_string().contains("router_settings.redis_port"), "{bad_port}");
    }

    #[test]
    fn redis_cluster_and_sentinel_become_fred_urls() {
        let cluster = GatewayConfig::from_yaml(
            r#"
litellm_settings:
  cache: true
  cache_params:
    type: redis
    password: pw
    redis_startup_nodes: [{"host": "10.0.0.1", "port": "7001"}, {"host": "10.0.0.2", "port": 7002}]
"#,
            &env(&[]),
        )
        .unwrap();
        let expected = "redis-cluster://:pw@10.0.0.1:7001?node=10.0.0.2:7002";
        assert!(
            matches!(&cluster.cache.unwrap().backend, CacheBackend::Redis { url } if url.expose() == expected)
        );
        assert_eq!(
            cluster.redis_url.unwrap().expose(),
            expected,
            "limits, spend and announcements use the cache's Redis when the router names none"
        );

        let sentinel = GatewayConfig::from_yaml(
            "litellm_settings: {cache: true, cache_params: {type: redis, ssl: true, service_name: mymaster, sentinel_nodes: [[s1, 26379], [s2, 26380]]}}",
            &env(&[("REDIS_SENTINEL_PASSWORD", "sp")]),
        )
        .unwrap();
        assert_eq!(
            sentinel.redis_url.unwrap().expose(),
            "rediss-sentinel://s1:26379?node=s2:26380&sentinelServiceName=mymaster&sentinelPassword=sp"
        );

        let from_env = GatewayConfig::from_yaml(
            "model_list: []",
            &env(&[("REDIS_CLUSTER_NODES", r#"[{"host": "c1", "port": 6379}]"#), ("REDIS_PASSWORD", "x")]),
        )
        .unwrap();
        assert_eq!(from_env.redis_url.unwrap().expose(), "redis-cluster://:x@c1:6379");
        assert!(
            error_of(
                "litellm_settings: {cache: true, cache_params: {type: redis, sentinel_nodes: [[s1, 26379]]}}"
            )
            .contains("service_name")
        );
        assert!(
            error_of("litellm_settings: {cache: true, cache_params: {type: redis, redis_startup_nodes: [{host: a}]}}")
                .contains("host and a port")
        );
    }

    #[test]
    fn prices_come_from_the_table_base_model_or_the_config() {
        let config = load(
            r#"
model_list:
  - model_name: listed
    litellm_params: {model: openai/gpt-4o, api_key: k}
  - model_name: azure-named
    litellm_params: {model: azure/my-deployment, api_base: "https://x.openai.azure.com", api_key: k}
    model_info: {base_model: azure/gpt-4o}
  - model_name: own-price
    litellm_params: {model: hosted_vllm/llama, api_base: "http://v", input_cost_per_token: 0.000001}
    model_info: {output_cost_per_token: 0.000002}
  - model_name: unknown
    litellm_params: {model: hosted_vllm/llama, api_base: "http://v"}
  - model_name: offline
    litellm_params: {model: fake/gpt-4o}
"#,
        )
        .unwrap();
        let price = |i: usize| config.deployments[i].pricing;
        assert_eq!(price(0).map(|p| (p.input, p.output)), Some((2.5e-6, 1e-5)));
        assert_eq!(price(1).map(|p| p.input), Some(2.5e-6), "priced by base_model");
        assert_eq!(price(2).map(|p| (p.input, p.output)), Some((1e-6, 2e-6)));
        assert!(price(3).is_none());
        assert!(price(4).is_none(), "offline answers cost nothing");
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
    }

    #[test]
    fn cohere_voyage_and_jina_have_defaults_and_query_prices() {
        let config = GatewayConfig::from_yaml(
            r#"
model_list:
  - model_name: command
    litellm_params: {model: cohere/command-a-03-2025}
  - model_name: rerank
    litellm_params: {model: cohere/rerank-v3.5, input_cost_per_query: 0.003}
  - model_name: voyage
    litellm_params: {model: voyage/voyage-3.5}
  - model_name: jina
    litellm_params: {model: jina_ai/jina-reranker-v2-base-multilingual}
"#,
            &env(&[("CO_API_KEY", "co-key"), ("VOYAGE_API_KEY", "vo-key"), ("JINA_AI_API_KEY", "jina-key")]),
        )
        .unwrap();
        let d = &config.deployments;
        assert_eq!(d[0].api_base.as_deref(), Some("https://api.cohere.com"));
        assert_eq!(d[0].api_key.as_ref().map(|k| k.expose()), Some("co-key"));
        assert_eq!(d[0].wire(), Some(WireFormat::Cohere));
        assert_eq!(d[1].pricing.and_then(|p| p.per_query), Some(0.003), "the config's price wins");
        assert_eq!(d[2].api_base.as_deref(), Some("https://api.voyageai.com/v1"));
        assert_eq!(d[2].api_key.as_ref().map(|k| k.expose()), Some("vo-key"));
        assert_eq!(d[3].api_base.as_deref(), Some("https://api.jina.ai/v1"));
        assert_eq!(d[3].pricing.map(|p| p.input), Some(5e-8), "priced from the table by bare name");
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
    }

    #[test]
    fn environment_variables_section_overrides_the_process() {
        let config = GatewayConfig::from_yaml(
            "environment_variables: {MY_KEY: from-config}\nmodel_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: os.environ/MY_KEY}\n",
            &env(&[("MY_KEY", "from-process")]),
        )
        .unwrap();
        assert_eq!(config.deployments[0].api_key.as_ref().unwrap().expose(), "from-config");
    }

    #[test]
    fn master_key_falls_back_to_the_environment() {
        let config = GatewayConfig::from_yaml("", &env(&[("LITELLM_MASTER_KEY", "sk-env")])).unwrap();
        assert_eq!(config.master_key.unwrap().expose(), "sk-env");
        let config = GatewayConfig::from_yaml("", &env(&[("TOLLGATE_MASTER_KEY", "sk-t")])).unwrap();
        assert_eq!(config.master_key.unwrap().expose(), "sk-t");
        assert!(GatewayConfig::from_yaml("", &env(&[])).unwrap().master_key.is_none());
    }

    #[test]
    fn vertex_params_come_from_the_config_or_the_environment() {
        let vertex = |params: &str, pairs: &[(&str, &str)]| -> Result<Deployment, ConfigError> {
            GatewayConfig::from_yaml(
                &format!("model_list:\n  - model_name: v\n    litellm_params: {{model: vertex_ai/gemini-2.5-flash{params}}}\n"),
                &env(pairs),
            )
            .map(|mut config| config.deployments.remove(0))
        };
        let d = vertex(
            ", vertex_project: p1, vertex_location: europe-west4, vertex_credentials: /keys/sa.json",
            &[],
        )
        .unwrap();
        assert_eq!(d.wire(), Some(WireFormat::Vertex));
        assert_eq!(d.api_base.as_deref(), Some("https://europe-west4-aiplatform.googleapis.com"));
        let params = d.vertex.unwrap();
        assert_eq!((params.project.as_deref(), params.location.as_str()), (Some("p1"), "europe-west4"));
        assert_eq!(
            params.credentials,
            GoogleCredentials::KeyFile { setting: "vertex_credentials", value: Secret::new("/keys/sa.json") }
        );

        // LiteLLM's variables, and Google's for the key file and the metadata server.
        let d =
            vertex("", &[("VERTEXAI_PROJECT", "p2"), ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json")]).unwrap();
        let params = d.vertex.unwrap();
        assert_eq!(
            (params.project.as_deref(), params.location.as_str()),
            (Some("p2"), DEFAULT_VERTEX_LOCATION)
        );
        assert!(matches!(
            params.credentials,
            GoogleCredentials::KeyFile { setting: "GOOGLE_APPLICATION_CREDENTIALS", .. }
        ));
        let d =
            vertex(", vertex_location: global", &[("GCE_METADATA_HOST", "127.0.0.1:9"), ("HOME", "/home/u")])
                .unwrap();
        assert_eq!(d.api_base.as_deref(), Some("https://aiplatform.googleapis.com"));
        let params = d.vertex.unwrap();
        assert_eq!(params.project, None, "left to the credentials");
        assert_eq!(
            params.credentials,
            GoogleCredentials::Ambient {
                gcloud_file: Some("/home/u/.config/gcloud/application_default_credentials.json".into()),
                metadata_host: "127.0.0.1:9".into(),
            }
        );

        // A key written out as a mapping is kept as its JSON text; api_base overrides.
        let d = vertex(
            ", vertex_credentials: {type: service_account, project_id: x}, api_base: 'http://h:1'",
            &[],
        )
        .unwrap();
        assert_eq!(d.api_base.as_deref(), Some("http://h:1"));
        let GoogleCredentials::KeyFile { value, .. } = d.vertex.unwrap().credentials else { panic!() };
        assert_eq!(value.expose(), r#"{"type":"service_account","project_id":"x"}"#);

        let error = vertex(", vertex_location: 'us-central1/../x'", &[]).unwrap_err().to_string();
        assert!(error.contains("model_list[0].litellm_params.vertex_location"), "{error}");
        assert!(GatewayConfig::from_yaml(
            "model_list:\n  - model_name: v\n    litellm_params: {model: vertex_ai/m, vertex_project: p}\n",
            &env(&[])
        )
        .unwrap()
        .unsupported
        .is_empty());
    }

    #[test]
    fn provider_env_supplies_key_and_base() {
        let config = GatewayConfig::from_yaml(
            "model_list:\n  - model_name: a\n    litellm_params: {model: groq/llama}\n  - model_name: b\n    litellm_params: {model: hosted_vllm/m}\n",
            &env(&[("GROQ_API_KEY", "gsk"), ("HOSTED_VLLM_API_BASE", "http://v:8000/v1")]),
        )
        .unwrap();
        assert_eq!(config.deployments[0].api_key.as_ref().unwrap().expose(), "gsk");
        assert_eq!(config.deployments[0].api_base.as_deref(), Some("https://api.groq.com/openai/v1"));
        assert_eq!(config.deployments[1].api_base.as_deref(), Some("http://v:8000/v1"));
    }

    #[test]
    fn ollama_reads_its_own_params_and_its_base_from_the_environment() {
        let config = GatewayConfig::from_yaml(
            "model_list:\n  - model_name: l\n    litellm_params: {model: ollama_chat/llama3.1, num_ctx: 8192, keep_alive: 10m, num_gpu: os.environ/GPUS}\n  - model_name: o\n    litellm_params: {model: openai/gpt-4o, api_key: k, num_ctx: 1}\n  - model_name: a\n    litellm_params: {model: azure_ai/mistral-large, api_base: 'https://x.services.ai.azure.com'}\n",
            &env(&[("OLLAMA_API_BASE", "http://gpu-box:11434/"), ("GPUS", "2"), ("AZURE_AI_API_KEY", "az")]),
        )
        .unwrap();
        let ollama = &config.deployments[0];
        assert_eq!(ollama.api_base.as_deref(), Some("http://gpu-box:11434"));
        assert_eq!(ollama.wire(), Some(WireFormat::Ollama));
        assert_eq!(
            Value::Object(ollama.provider_params.clone()),
            serde_json::json!({"num_ctx": 8192, "keep_alive": "10m", "num_gpu": 2})
        );
        assert!(config.deployments[1].provider_params.is_empty());
        assert_eq!(
            config.unsupported,
            ["model_list[1].litellm_params.num_ctx"],
            "an option only Ollama takes"
        );
        assert_eq!(config.deployments[2].wire(), Some(WireFormat::AzureAi));
        assert_eq!(config.deployments[2].api_key.as_ref().unwrap().expose(), "az");
        let default = GatewayConfig::from_yaml(
            "model_list:\n  - model_name: l\n    litellm_params: {model: ollama/llama3.1}\n",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(default.deployments[0].api_base.as_deref(), Some("http://localhost:11434"));
        assert!(
            error_of("model_list:\n  - model_name: a\n    litellm_params: {model: azure_ai/m}\n")
                .contains("provider 'azure_ai' has no default")
        );
    }

    #[test]
    fn bedrock_reads_region_endpoint_and_each_kind_of_credential() {
        let yaml = |params: &str| {
            format!(
                "model_list:\n  - model_name: b\n    litellm_params: {{model: bedrock/anthropic.claude-3-5-haiku-20241022-v1:0{params}}}\n"
            )
        };
        let with_env =
            |params: &str, vars: &[(&str, &str)]| GatewayConfig::from_yaml(&yaml(params), &env(vars));
        let aws = |config: &GatewayConfig| config.deployments[0].aws.clone().unwrap();

        let config = with_env(", aws_access_key_id: AKID, aws_secret_access_key: s3cr3t, aws_session_token: tok, aws_region_name: eu-west-3", &[]).unwrap();
        let d = &config.deployments[0];
        assert_eq!(d.api_base.as_deref(), Some("https://bedrock-runtime.eu-west-3.amazonaws.com"));
        assert_eq!(d.wire(), Some(WireFormat::Bedrock));
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
        let settings = aws(&config);
        assert_eq!(settings.region, "eu-west-3");
        let AwsAuth::Keys { access_key_id, secret_access_key, session_token } = settings.auth else {
            panic!()
        };
        assert_eq!((access_key_id.as_str(), secret_access_key.expose()), ("AKID", "s3cr3t"));
        assert_eq!(session_token.unwrap().expose(), "tok");
        assert!(d.pricing.is_some(), "priced from the table");

        // The environment: AWS_REGION, then the API key before access keys.
        let config = with_env(
            "",
            &[
                ("AWS_REGION", "ap-south-1"),
                ("AWS_BEARER_TOKEN_BEDROCK", "brk"),
                ("AWS_ACCESS_KEY_ID", "A"),
                ("AWS_SECRET_ACCESS_KEY", "S"),
            ],
        )
        .unwrap();
        assert_eq!(aws(&config).region, "ap-south-1");
        assert!(matches!(aws(&config).auth, AwsAuth::BearerToken(ref t) if t.expose() == "brk"));
        assert_eq!(config.deployments[0].api_key.as_ref().unwrap().expose(), "brk", "redacted like any key");
        let config = with_env(
            "",
            &[
                ("AWS_DEFAULT_REGION", "us-east-2"),
                ("AWS_ACCESS_KEY_ID", "A"),
                ("AWS_SECRET_ACCESS_KEY", "S"),
            ],
        )
        .unwrap();
        assert_eq!(aws(&config).region, "us-east-2");
        assert!(matches!(aws(&config).auth, AwsAuth::Keys { session_token: None, .. }));
        // Params win over the environment; an endpoint override replaces the regional host.
        let config = with_env(
            ", api_key: from-params, aws_bedrock_runtime_endpoint: 'http://127.0.0.1:9/'",
            &[("AWS_BEARER_TOKEN_BEDROCK", "env")],
        )
        .unwrap();
        assert!(matches!(aws(&config).auth, AwsAuth::BearerToken(ref t) if t.expose() == "from-params"));
        assert_eq!(config.deployments[0].api_base.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(aws(&config).region, DEFAULT_AWS_REGION);
        // The region of an ARN model id, and the converse/ route prefix priced as the model.
        let arn = "model_list:\n  - model_name: b\n    litellm_params: {model: 'bedrock/converse/arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0', api_key: k}\n";
        assert_eq!(
            GatewayConfig::from_yaml(arn, &env(&[])).unwrap().deployments[0].aws.as_ref().unwrap().region,
            "eu-central-1"
        );
        let routed = with_env(", api_key: k", &[]).unwrap().deployments[0].pricing;
        let conversed = GatewayConfig::from_yaml(
            &yaml(", api_key: k").replace("bedrock/", "bedrock/converse/"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(conversed.deployments[0].pricing, routed);

        let error = |params: &str, vars: &[(&str, &str)]| with_env(params, vars).unwrap_err().to_string();
        assert!(error("", &[]).contains("a bedrock model needs credentials"), "{}", error("", &[]));
        assert!(error(", aws_access_key_id: A", &[]).contains("aws_secret_access_key: missing"));
        assert!(
            error("", &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token")]).contains("AWS_ROLE_ARN is not")
        );
        // Web identity, as EKS injects it; the STS endpoint follows the region.
        let irsa = [
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r"),
        ];
        let config = with_env(", aws_region_name: eu-north-1", &irsa).unwrap();
        let AwsAuth::WebIdentity(identity) = aws(&config).auth else { panic!() };
        assert_eq!(identity.sts_endpoint, "https://sts.eu-north-1.amazonaws.com");
        assert_eq!(
            (identity.token_file.as_str(), identity.session_name.as_str()),
            ("/var/run/token", "tollgate")
        );
        let config = with_env(", aws_sts_endpoint: 'http://127.0.0.1:1/'", &irsa).unwrap();
        assert!(
            matches!(aws(&config).auth, AwsAuth::WebIdentity(ref w) if w.sts_endpoint == "http://127.0.0.1:1")
        );
        assert!(
            error(", api_key: k, aws_region_name: 'us-east-1.evil.com/x'", &[]).contains("not an AWS region")
        );
    }

    #[test]
    fn azure_reads_version_and_each_kind_of_credential() {
        let yaml = |params: &str| {
            format!(
                "model_list:\n  - model_name: a\n    litellm_params: {{model: azure/gpt4o-prod, api_base: 'https://r.openai.azure.com/'{params}}}\n"
            )
        };
        let config = load(&yaml(", api_key: k, api_version: 2024-06-01")).unwrap();
        let d = &config.deployments[0];
        assert_eq!((d.upstream_model.as_str(), d.api_version.as_deref()), ("gpt4o-prod", Some("2024-06-01")));
        assert_eq!(d.api_base.as_deref(), Some("https://r.openai.azure.com"));
        assert!(d.entra.is_none() && d.azure_ad_token.is_none());
        let config = load(&yaml(", azure_ad_token: tok")).unwrap();
        assert_eq!(config.deployments[0].azure_ad_token.as_ref().unwrap().expose(), "tok");
        assert_eq!(config.deployments[0].api_version.as_deref(), Some(DEFAULT_AZURE_API_VERSION));
        let config = GatewayConfig::from_yaml(
            &yaml(""),
            &env(&[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s"),
                ("AZURE_AUTHORITY_HOST", "http://idp/"),
            ]),
        )
        .unwrap();
        let entra = config.deployments[0].entra.as_ref().unwrap();
        assert_eq!(
            (entra.tenant_id.as_str(), entra.client_id.as_str(), entra.authority.as_str()),
            ("t", "c", "http://idp")
        );
        assert_eq!(entra.scope, DEFAULT_AZURE_SCOPE);
        assert!(error_of(&yaml("")).contains("an azure model needs api_key"), "{}", error_of(&yaml("")));
    }

    #[test]
    fn background_health_checks_follow_litellms_settings() {
        let off = load("general_settings: {}").unwrap();
        assert_eq!(off.background_health_checks, None);
        assert!(!off.router.health_check_routing.enabled);
        let on = load("general_settings: {background_health_checks: True}").unwrap();
        assert_eq!(
            on.background_health_checks,
            Some(BackgroundHealthChecks { interval: Duration::from_secs(300), concurrency: 4 })
        );
        assert!(on.unsupported.is_empty(), "{:?}", on.unsupported);
        let routed = load(
            "general_settings:
  background_health_checks: true
  health_check_interval: 30
  health_check_concurrency: 2
  enable_health_check_routing: true
  health_check_ignore_transient_errors: 'true'
",
        )
        .unwrap();
        assert_eq!(
            routed.background_health_checks,
            Some(BackgroundHealthChecks { interval: Duration::from_secs(30), concurrency: 2 })
        );
        let routing = routed.router.health_check_routing;
        assert!(routing.enabled && routing.ignore_transient_errors);
        assert_eq!(routing.staleness, Duration::from_secs(60), "twice the interval by default");
        let stale = load(
            "general_settings: {background_health_checks: true, enable_health_check_routing: true, health_check_staleness_threshold: 45}",
        )
        .unwrap();
        assert_eq!(stale.router.health_check_routing.staleness, Duration::from_secs(45));
        let zero =
            load("general_settings: {background_health_checks: true, health_check_interval: 0}").unwrap();
        assert_eq!(zero.background_health_checks, None, "LiteLLM runs no checks at interval 0");
        let unchecked = load("general_settings: {enable_health_check_routing: true}").unwrap();
        assert!(!unchecked.router.health_check_routing.enabled);
        assert_eq!(
            unchecked.unsupported,
            ["general_settings.enable_health_check_routing (needs background_health_checks: true)"]
        );
        assert_eq!(
            error_of("general_settings: {background_health_checks: sometimes}"),
            "general_settings.background_health_checks: must be true or false"
        );
        assert_eq!(
            error_of("general_settings: {background_health_checks: true, health_check_concurrency: 0}"),
            "general_settings.health_check_concurrency: must be at least 1"
        );
    }

    #[test]
    fn router_settings_come_from_either_section() {
        let config = load(
            r#"
model_list:
  - {model_name: gp, litellm_params: {model: fake/a, weight: 3, order: 1}}
  - {model_name: backup, litellm_params: {model: fake/b}}
  - {model_name: long, litellm_params: {model: fake/c}}
litellm_settings:
  num_retries: 1
  fallbacks: [{gp: [backup]}]
router_settings:
  num_retries: 2
  allowed_fails: 1
  cooldown_time: 30
  context_window_fallbacks: [{gp: long}]
  default_fallbacks: [backup]
  model_group_alias: {gpt-4: gp, old: {model: backup, hidden: true}}
"#,
        )
        .unwrap();
        let router = &config.router;
        assert_eq!(router.num_retries, 2, "router_settings wins");
        assert_eq!(router.allowed_fails, 1);
        assert_eq!(router.cooldown_time, Duration::from_secs(30));
        assert_eq!(router.fallbacks, [("gp".to_string(), vec!["backup".to_string()])]);
        assert_eq!(router.context_window_fallbacks, [("gp".to_string(), vec!["long".to_string()])]);
        assert_eq!(router.default_fallbacks, ["backup"]);
        assert_eq!(
            router.model_group_alias[1],
            ModelGroupAlias { alias: "old".into(), group: "backup".into(), hidden: true }
        );
        assert_eq!((config.deployments[0].weight, config.deployments[0].order), (Some(3.0), Some(1)));
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
        assert_eq!(
            error_of("router_settings: {fallbacks: {gp: backup}}\n"),
            "router_settings.fallbacks: must be a list of {model_name: [fallbacks]}"
        );
        let unknown = load("model_list:\n  - {model_name: gp, litellm_params: {model: fake/a}}\nrouter_settings: {fallbacks: [{gp: [nope]}]}\n").unwrap();
        assert_eq!(
            unknown.unsupported,
            ["router_settings.fallbacks=nope (no such model_name in model_list)"]
        );
    }

    #[test]
    fn strategies_policies_and_pre_call_checks_are_read() {
        let config = load(
            r#"
model_list:
  - {model_name: gp, litellm_params: {model: fake/a, tpm: 1000}}
router_settings:
  routing_strategy: latency-based-routing
  routing_strategy_args: {lowest_latency_buffer: 0.5, ttl: 10}
  retry_policy: {BadRequestErrorRetries: 1, RateLimitErrorRetries: 4}
  model_group_retry_policy: {gp: {TimeoutErrorRetries: 2}}
  allowed_fails_policy: {RateLimitErrorAllowedFails: 100, InternalServerErrorAllowedFails: 0}
  retry_after: 2
  enable_pre_call_checks: true
"#,
        )
        .unwrap();
        let router = &config.router;
        assert_eq!(router.routing_strategy, RoutingStrategy::LatencyBased);
        assert_eq!(router.strategy_args.lowest_latency_buffer, 0.5);
        assert_eq!(router.strategy_args.ttl, Duration::from_secs(10));
        assert_eq!(router.strategy_args.max_latency_list_size, 10, "LiteLLM's default");
        assert_eq!(router.retry_policy.get(FailureClass::BadRequest), Some(1));
        assert_eq!(router.retry_policy.get(FailureClass::RateLimit), Some(4));
        assert_eq!(router.retry_policy.get(FailureClass::Timeout), None);
        assert_eq!(router.retry_policy_for("gp").get(FailureClass::Timeout), Some(2));
        assert_eq!(router.allowed_fails_policy.get(FailureClass::RateLimit), Some(100));
        assert_eq!(router.allowed_fails_policy.get(FailureClass::InternalServer), Some(0));
        assert_eq!(router.retry_after, Duration::from_secs(2));
        assert!(router.enable_pre_call_checks);
        assert_eq!(config.deployments[0].tpm, Some(1000));
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);

        assert_eq!(
            error_of("router_settings: {routing_strategy: round-robin}\n"),
            "router_settings.routing_strategy: unknown strategy 'round-robin'; expected one of simple-shuffle, least-busy, latency-based-routing, usage-based-routing-v2, usage-based-routing, cost-based-routing"
        );
        assert_eq!(
            error_of("router_settings: {retry_policy: {RateLimitErrorRetries: -1}}\n"),
            "router_settings.retry_policy.RateLimitErrorRetries: '-1' is not a non-negative number"
        );
        assert_eq!(
            error_of("router_settings: {enable_pre_call_checks: sometimes}\n"),
            "router_settings.enable_pre_call_checks: must be true or false"
        );
        let shuffled = load("router_settings: {routing_strategy_args: {ttl: 5}}\n").unwrap();
        assert_eq!(
            shuffled.unsupported,
            ["router_settings.routing_strategy_args (read by latency-based-routing only)"]
        );
    }

    #[test]
    fn prometheus_callback_is_accepted_and_others_are_named() {
        let config = load(
            "litellm_settings:\n  callbacks: [prometheus]\n  success_callback: [datadog]\n  require_auth_for_metrics_endpoint: false\n",
        )
        .unwrap();
        assert!(!config.metrics_require_auth);
        assert_eq!(
            config.unsupported,
            ["litellm_settings.success_callback=datadog (no such callback in this build)"]
        );
        assert!(load("").unwrap().metrics_require_auth, "a key is asked for by default, as LiteLLM does");
    }

    #[test]
    fn every_key_present_gets_a_verdict() {
        let config = GatewayConfig::from_yaml(
            r#"
environment_variables: {UPSTREAM_KEY: k}
model_list:
  - model_name: gp
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/UPSTREAM_KEY, temperature: 0.1, tempreture: 1}
    model_info: {mode: chat, team: search}
litellm_settings: {cache: false, cache_params: {type: redis}, set_verbose: true}
router_settings: {fallbacks: [{gp: [gone]}]}
guardrails: []
mystery: 1
"#,
            &env(&[]),
        )
        .unwrap();
        let verdicts: Vec<(&str, &SettingStatus)> =
            config.settings.iter().map(|row| (row.path.as_str(), &row.status)).collect();
        let ignored = |reason: &str| SettingStatus::Ignored(reason.to_owned());
        let expected = [
            ("environment_variables", SettingStatus::Supported),
            ("environment_variables.UPSTREAM_KEY", SettingStatus::Supported),
            ("model_list", SettingStatus::Supported),
            ("model_list[0].model_name", SettingStatus::Supported),
            ("model_list[0].litellm_params", SettingStatus::Supported),
            ("model_list[0].model_info", SettingStatus::Supported),
            ("model_list[0].litellm_params.model", SettingStatus::Supported),
            ("model_list[0].litellm_params.api_key", SettingStatus::Supported),
            (
                "model_list[0].litellm_params.temperature",
                ignored("not added to requests; send it in the request"),
            ),
            ("model_list[0].litellm_params.tempreture", SettingStatus::Unknown),
            ("model_list[0].model_info.mode", SettingStatus::Supported),
            ("model_list[0].model_info.team", ignored(report::MODEL_INFO_METADATA)),
            ("litellm_settings", SettingStatus::Supported),
            ("litellm_settings.cache", SettingStatus::Supported),
            ("litellm_settings.cache_params", ignored("litellm_settings.cache is not true")),
            ("litellm_settings.set_verbose", ignored("deprecated in LiteLLM; use LITELLM_LOG or --debug")),
            ("router_settings", SettingStatus::Supported),
            ("router_settings.fallbacks", SettingStatus::Supported),
            ("router_settings.fallbacks=gone", ignored("no such model_name in model_list")),
            ("guardrails", SettingStatus::Supported),
            ("mystery", SettingStatus::Unknown),
        ];
        let expected: Vec<(&str, &SettingStatus)> =
            expected.iter().map(|(path, status)| (*path, status)).collect();
        assert_eq!(verdicts, expected);
        // The start-up warning: every verdict but supported, in the same order.
        assert_eq!(config.unsupported.len(), 7, "{:?}", config.unsupported);
        assert_eq!(config.unsupported[1], "model_list[0].litellm_params.tempreture");
        assert_eq!(config.unsupported[6], "mystery");
    }

    #[test]
    fn every_price_key_is_read_and_reported_from_either_place() {
        for key in PRICE_KEYS {
            for place in ["litellm_params", "model_info"] {
                let yaml = if place == "model_info" {
                    format!(
                        "model_list:\n  - model_name: f\n    litellm_params: {{model: fake/f}}\n    model_info: {{{key}: 0.5}}\n"
                    )
                } else {
                    format!(
                        "model_list:\n  - model_name: f\n    litellm_params: {{model: fake/f, {key}: 0.5}}\n"
                    )
                };
                let config = load(&yaml).unwrap();
                assert!(config.deployments[0].pricing.is_some(), "{key} in {place} sets a price");
                let row =
                    config.settings.iter().find(|row| row.path == format!("model_list[0].{place}.{key}"));
                assert_eq!(row.map(|row| &row.status), Some(&SettingStatus::Supported), "{key} in {place}");
            }
        }
    }

    #[test]
    fn ids_are_stable_and_unique() {
        let yaml = "model_list:\n  - model_name: a\n    litellm_params: {model: fake/a}\n  - model_name: a\n    litellm_params: {model: fake/b}\n";
        let one = load(yaml).unwrap();
        let two = load(yaml).unwrap();
        assert_eq!(one.deployments[0].id, two.deployments[0].id);
        assert_ne!(one.deployments[0].id, one.deployments[1].id);
        let dup = "model_list:\n  - model_name: a\n    litellm_params: {model: fake/a}\n    model_info: {id: x}\n  - model_name: b\n    litellm_params: {model: fake/b}\n    model_info: {id: x}\n";
        assert_eq!(error_of(dup), "model_list[1].model_info.id: duplicate id 'x'");
    }

    #[test]
    fn demo_config_is_valid_and_offline() {
        let config = GatewayConfig::demo(&env(&[])).unwrap();
        assert_eq!(config.model_names(), ["demo", "demo-embedding"]);
        assert!(config.deployments.iter().all(|d| d.wire() == Some(WireFormat::Fake)));
    }
}
