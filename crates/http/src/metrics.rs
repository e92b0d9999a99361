//! Prometheus metrics under LiteLLM's names, so existing dashboards keep working, served at
//! `/metrics` in the OpenMetrics text format. docs/observability.md lists every metric, its
//! labels and the LiteLLM metric it stands for.
//!
//! `requested_model` is the model group the request named, or `unknown` when it named none
//! the gateway serves, so a client cannot grow the label set at will. Key and team labels
//! come from the virtual key's records (empty for the master key or an open gateway).
//!
//! Counters and histograms move on the request path; gauges of state kept elsewhere (queue
//! depths, Redis and database health, deployment state) are read when `/metrics` is
//! scraped, or by the background watcher (deployment cooldowns).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tollgate_domain::Deployment;

/// The label for requests naming no model the gateway serves.
pub const UNKNOWN_MODEL: &str = "unknown";

/// Who made a request, as labels: the key's hash and alias, its team's id and alias.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    pub hashed_api_key: String,
    pub api_key_alias: String,
    pub team: String,
    pub team_alias: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    requested_model: String,
    #[prometheus(flatten)]
    caller: CallerLabels,
    status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    requested_model: String,
    #[prometheus(flatten)]
    caller: CallerLabels,
    exception_status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    requested_model: String,
}

/// Tokens and spend: the group asked for, the deployment's model, and the caller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    requested_model: String,
    model: String,
    #[prometheus(flatten)]
    caller: CallerLabels,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabels {
    requested_model: String,
    litellm_model_name: String,
    model_id: String,
    api_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentFailureLabels {
    requested_model: String,
    litellm_model_name: String,
    model_id: String,
    api_provider: String,
    exception_status: u16,
}

/// A deployment, without the group it was asked for under.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentStateLabels {
    litellm_model_name: String,
    model_id: String,
    api_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    requested_model: String,
    fallback_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    hashed_api_key: String,
    api_key_alias: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyModelLabels {
    hashed_api_key: String,
    api_key_alias: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamLabels {
    team: String,
    team_alias: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardrailLabels {
    guardrail_name: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    alert_type: &'static str,
    channel: &'static str,
}

type Histograms = Family<ModelLabels, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Request latency buckets, in seconds: 5 ms to 5 minutes.
fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
}

/// Gateway overhead buckets, in seconds: 25 µs to 100 ms.
fn overhead_histogram() -> Histogram {
    Histogram::new([0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1])
}

/// The value of `litellm_deployment_state`: LiteLLM's 0, 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    /// The last call succeeded.
    Healthy = 0,
    /// The last call failed.
    PartialOutage = 1,
    /// Cooling down: the router sends it nothing.
    CoolingDown = 2,
}

/// Every metric the gateway keeps; one per process, shared by all workers.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    total_latency: Histograms,
    upstream_latency: Histograms,
    overhead: Histograms,
    time_to_first_token: Histograms,
    deployment_success: Family<DeploymentLabels, Counter>,
    deployment_failure: Family<DeploymentFailureLabels, Counter>,
    deployment_total: Family<DeploymentLabels, Counter>,
    deployment_state: Family<DeploymentStateLabels, Gauge>,
    deployment_cooled_down: Family<DeploymentStateLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    failed_fallbacks: Family<FallbackLabels, Counter>,
    retries: Family<ModelLabels, Counter>,
    input_tokens: Family<UsageLabels, Counter>,
    output_tokens: Family<UsageLabels, Counter>,
    total_tokens: Family<UsageLabels, Counter>,
    spend: Family<UsageLabels, FloatCounter>,
    key_budget_remaining: Family<KeyLabels, FloatGauge>,
    key_budget_max: Family<KeyLabels, FloatGauge>,
    team_budget_remaining: Family<TeamLabels, FloatGauge>,
    team_budget_max: Family<TeamLabels, FloatGauge>,
    key_requests_remaining: Family<KeyModelLabels, Gauge>,
    key_tokens_remaining: Family<KeyModelLabels, Gauge>,
    team_requests_remaining: Family<TeamLabels, Gauge>,
    team_tokens_remaining: Family<TeamLabels, Gauge>,
    spend_log_drops: Counter,
    spend_log_queue: Gauge,
    spend_updates_queue: Gauge,
    redis_up: Family<ComponentLabels, Gauge>,
    database_up: Family<BackendLabels, Gauge>,
    alerts: Family<AlertLabels, Counter>,
    guardrails: Family<GuardrailLabels, Counter>,
    unpriced: Family<ModelLabels, Counter>,
    cache: CacheCounters,
}

/// The response cache's counters.
#[derive(Clone, Default)]
pub struct CacheCounters {
    /// Lookups answered from the cache (an embedding batch counts each item).
    pub hits: Counter,
    /// Lookups the cache could not answer.
    pub misses: Counter,
    /// Redis commands that failed or timed out.
    pub redis_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// One request's outcome, as the handlers report it.
pub struct RequestOutcome<'a> {
    pub requested_model: &'a str,
    pub caller: &'a CallerLabels,
    pub status: u16,
    pub total: Duration,
    /// Time inside routing (upstream attempts and the waits between them), when routed.
    pub upstream: Option<Duration>,
    /// For a stream: time from the request to its first token.
    pub time_to_first_token: Option<Duration>,
    pub retries: u32,
    /// The group that answered when it was a fallback.
    pub fallback_model: Option<&'a str>,
    /// The last fallback group tried when the request failed after falling back.
    pub failed_fallback: Option<&'a str>,
    /// The answering deployment's model (`openai/gpt-4o`), its tokens in and out and the cost.
    pub usage: Option<UsageOutcome<'a>>,
}

/// What a request used, for the token and spend counters.
pub struct UsageOutcome<'a> {
    pub model: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
}

/// A key's or team's budget after a request: its spend and its maximum.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub spend: f64,
    pub max: f64,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        macro_rules! register {
            ($name:expr, $help:expr, $metric:expr) => {{
                let metric = $metric;
                registry.register($name, $help, metric.clone());
                metric
            }};
        }
        let requests = register!(
            "litellm_proxy_total_requests_metric",
            "Requests to the gateway, by requested model, caller and status",
            Family::default()
        );
        let failures = register!(
            "litellm_proxy_failed_requests_metric",
            "Requests answered with an error status",
            Family::default()
        );
        let total_latency: Histograms = register!(
            "litellm_request_total_latency_metric",
            "Time from request to the end of the response (of the stream for streams), seconds",
            Family::new_with_constructor(latency_histogram as fn() -> Histogram)
        );
        let upstream_latency: Histograms = register!(
            "litellm_llm_api_latency_metric",
            "Time spent waiting on upstreams, retries included, seconds",
            Family::new_with_constructor(latency_histogram as fn() -> Histogram)
        );
        let overhead: Histograms = register!(
            "litellm_overhead_latency_metric",
            "The gateway's own time per request, seconds",
            Family::new_with_constructor(overhead_histogram as fn() -> Histogram)
        );
        let time_to_first_token: Histograms = register!(
            "litellm_llm_api_time_to_first_token_metric",
            "Time from request to the first token of a stream, seconds",
            Family::new_with_constructor(latency_histogram as fn() -> Histogram)
        );
        let deployment_success = register!(
            "litellm_deployment_success_responses",
            "Successful upstream calls, by deployment",
            Family::default()
        );
        let deployment_failure = register!(
            "litellm_deployment_failure_responses",
            "Failed upstream calls, by deployment and status",
            Family::default()
        );
        let deployment_total = register!(
            "litellm_deployment_total_requests",
            "Upstream calls, successful or not, by deployment",
            Family::default()
        );
        let deployment_state = register!(
            "litellm_deployment_state",
            "Deployment state: 0 healthy, 1 last call failed, 2 cooling down",
            Family::default()
        );
        let deployment_cooled_down = register!(
            "litellm_deployment_cooled_down",
            "Times a deployment was put in cooldown",
            Family::default()
        );
        let fallbacks = register!(
            "litellm_deployment_successful_fallbacks",
            "Requests answered by a fallback model group",
            Family::default()
        );
        let failed_fallbacks = register!(
            "litellm_deployment_failed_fallbacks",
            "Requests that failed after trying fallback model groups",
            Family::default()
        );
        let retries =
            register!("tollgate_retries", "Retries of upstream calls within model groups", Family::default());
        let input_tokens =
            register!("litellm_input_tokens_metric", "Prompt tokens of answered requests", Family::default());
        let output_tokens = register!(
            "litellm_output_tokens_metric",
            "Completion tokens of answered requests",
            Family::default()
        );
        let total_tokens = register!(
            "litellm_total_tokens_metric",
            "Prompt and completion tokens of answered requests",
            Family::default()
        );
        let spend = register!("litellm_spend_metric", "Spend in USD", Family::default());
        let key_budget_remaining = register!(
            "litellm_remaining_api_key_budget_metric",
            "A virtual key's budget left, USD (as of its last request here)",
            Family::default()
        );
        let key_budget_max = register!(
            "litellm_api_key_max_budget_metric",
            "A virtual key's max budget, USD",
            Family::default()
        );
        let team_budget_remaining = register!(
            "litellm_remaining_team_budget_metric",
            "A team's budget left, USD (as of its last request here)",
            Family::default()
        );
        let team_budget_max =
            register!("litellm_team_max_budget_metric", "A team's max budget, USD", Family::default());
        let key_requests_remaining = register!(
            "litellm_remaining_api_key_requests_for_model",
            "Requests a virtual key has left this minute under its tightest rpm limit",
            Family::default()
        );
        let key_tokens_remaining = register!(
            "litellm_remaining_api_key_tokens_for_model",
            "Tokens a virtual key has left this minute under its tightest tpm limit",
            Family::default()
        );
        let team_requests_remaining = register!(
            "tollgate_remaining_team_requests",
            "Requests a team has left this minute under its rpm limit",
            Family::default()
        );
        let team_tokens_remaining = register!(
            "tollgate_remaining_team_tokens",
            "Tokens a team has left this minute under its tpm limit",
            Family::default()
        );
        let spend_log_drops = register!(
            "tollgate_spend_log_rows_dropped",
            "Spend log rows dropped because the queue or the retry buffer was full",
            Counter::default()
        );
        let spend_log_queue = register!(
            "tollgate_spend_log_queue_rows",
            "Spend log rows waiting to be written (queue and retry buffer)",
            Gauge::default()
        );
        let spend_updates_queue = register!(
            "litellm_in_memory_spend_update_queue_size",
            "Keys, users, teams, organizations and end users with spend not yet written",
            Gauge::default()
        );
        let redis_up = register!(
            "tollgate_redis_up",
            "Whether Redis answers, per use (rate_limits, spend, cache): 1 yes, 0 no",
            Family::default()
        );
        let database_up = register!(
            "tollgate_database_up",
            "Whether the database (postgres or sqlite) answered a ping at scrape time: 1 yes, 0 no",
            Family::default()
        );
        let alerts = register!("tollgate_alerts_sent", "Alerts sent, by type and channel", Family::default());
        let guardrails = register!(
            "tollgate_guardrail_checks",
            "Guardrail runs, by guardrail and outcome (allowed, modified, blocked)",
            Family::default()
        );
        let unpriced = register!(
            "tollgate_unpriced_requests",
            "Requests to deployments without a known price, recorded at a cost of 0",
            Family::default()
        );
        let cache = CacheCounters::default();
        // One count under both names: LiteLLM's for ported dashboards, Tollgate's older one.
        for (name, help, counter) in [
            ("litellm_cache_hits_metric", "Response cache lookups answered from the cache", &cache.hits),
            ("tollgate_cache_hits", "Response cache lookups answered from the cache", &cache.hits),
            ("litellm_cache_misses_metric", "Response cache lookups not found in the cache", &cache.misses),
            ("tollgate_cache_misses", "Response cache lookups not found in the cache", &cache.misses),
            (
                "tollgate_cache_redis_errors",
                "Response cache commands to Redis that failed or timed out",
                &cache.redis_errors,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        Self {
            registry,
            requests,
            failures,
            total_latency,
            upstream_latency,
            overhead,
            time_to_first_token,
            deployment_success,
            deployment_failure,
            deployment_total,
            deployment_state,
            deployment_cooled_down,
            fallbacks,
            failed_fallbacks,
            retries,
            input_tokens,
            output_tokens,
            total_tokens,
            spend,
            key_budget_remaining,
            key_budget_max,
            team_budget_remaining,
            team_budget_max,
            key_requests_remaining,
            key_tokens_remaining,
            team_requests_remaining,
            team_tokens_remaining,
            spend_log_drops,
            spend_log_queue,
            spend_updates_queue,
            redis_up,
            database_up,
            alerts,
            guardrails,
            unpriced,
            cache,
        }
    }

    pub fn record_request(&self, outcome: &RequestOutcome<'_>) {
        let model = ModelLabels { requested_model: outcome.requested_model.to_owned() };
        self.requests
            .get_or_create(&RequestLabels {
                requested_model: model.requested_model.clone(),
                caller: outcome.caller.clone(),
                status_code: outcome.status,
            })
            .inc();
        if outcome.status >= 400 {
            self.failures
                .get_or_create(&FailureLabels {
                    requested_model: model.requested_model.clone(),
                    caller: outcome.caller.clone(),
                    exception_status: outcome.status,
                })
                .inc();
        }
        self.total_latency.get_or_create(&model).observe(outcome.total.as_secs_f64());
        if let Some(upstream) = outcome.upstream {
            self.upstream_latency.get_or_create(&model).observe(upstream.as_secs_f64());
        }
        if let Some(ttft) = outcome.time_to_first_token {
            self.time_to_first_token.get_or_create(&model).observe(ttft.as_secs_f64());
        }
        if outcome.retries > 0 {
            self.retries.get_or_create(&model).inc_by(u64::from(outcome.retries));
        }
        if let Some(fallback) = outcome.fallback_model {
            self.fallbacks
                .get_or_create(&FallbackLabels {
                    requested_model: model.requested_model.clone(),
                    fallback_model: fallback.to_owned(),
                })
                .inc();
        }
        if let Some(fallback) = outcome.failed_fallback {
            self.failed_fallbacks
                .get_or_create(&FallbackLabels {
                    requested_model: model.requested_model.clone(),
                    fallback_model: fallback.to_owned(),
                })
                .inc();
        }
        if let Some(usage) = &outcome.usage {
            let labels = UsageLabels {
                requested_model: model.requested_model,
                model: usage.model.to_owned(),
                caller: outcome.caller.clone(),
            };
            self.input_tokens.get_or_create(&labels).inc_by(usage.input_tokens);
            self.output_tokens.get_or_create(&labels).inc_by(usage.output_tokens);
            self.total_tokens.get_or_create(&labels).inc_by(usage.input_tokens + usage.output_tokens);
            if usage.cost > 0.0 && usage.cost.is_finite() {
                self.spend.get_or_create(&labels).inc_by(usage.cost);
            }
        }
    }

    /// The gateway's own time for a request: its whole time less the upstream's, for a
    /// stream measured when its headers went out.
    pub fn record_overhead(&self, requested_model: &str, overhead: Duration) {
        self.overhead
            .get_or_create(&ModelLabels { requested_model: requested_model.to_owned() })
            .observe(overhead.as_secs_f64());
    }

    /// One upstream attempt on `deployment`: `None` for a success, else the error status.
    /// One guardrail run and what it decided.
    pub fn record_guardrail(&self, guardrail_name: &str, outcome: &'static str) {
        self.guardrails
            .get_or_create(&GuardrailLabels { guardrail_name: guardrail_name.to_owned(), outcome })
            .inc();
    }

    pub fn record_attempt(&self, requested_model: &str, deployment: &Deployment, failure: Option<u16>) {
        let state = deployment_labels(deployment);
        let labels = DeploymentLabels {
            requested_model: requested_model.to_owned(),
            litellm_model_name: state.litellm_model_name.clone(),
            model_id: state.model_id.clone(),
            api_provider: state.api_provider.clone(),
        };
        self.deployment_total.get_or_create(&labels).inc();
        match failure {
            None => {
                self.deployment_success.get_or_create(&labels).inc();
                self.set_state(&state, DeploymentState::Healthy, false);
            }
            Some(exception_status) => {
                self.deployment_failure
                    .get_or_create(&DeploymentFailureLabels {
                        requested_model: labels.requested_model,
                        litellm_model_name: labels.litellm_model_name,
                        model_id: labels.model_id,
                        api_provider: labels.api_provider,
                        exception_status,
                    })
                    .inc();
                self.set_state(&state, DeploymentState::PartialOutage, false);
            }
        }
    }

    /// A deployment's cooldown began (`true`) or ended (`false`), as the watcher saw it.
    pub fn record_cooldown(&self, deployment: &Deployment, cooling: bool) {
        let labels = deployment_labels(deployment);
        if cooling {
            self.deployment_cooled_down.get_or_create(&labels).inc();
            self.set_state(&labels, DeploymentState::CoolingDown, true);
        } else {
            self.set_state(&labels, DeploymentState::PartialOutage, true);
        }
    }

    /// Sets a deployment's state; a call's outcome does not overwrite a cooldown (calls
    /// under way when it began still finish), only the watcher ends it.
    fn set_state(&self, labels: &DeploymentStateLabels, state: DeploymentState, from_watcher: bool) {
        let gauge = self.deployment_state.get_or_create(labels);
        if from_watcher || gauge.get() != DeploymentState::CoolingDown as i64 {
            gauge.set(state as i64);
        }
    }

    /// Shows a deployment as healthy before its first call, so dashboards list every one.
    pub fn register_deployment(&self, deployment: &Deployment) {
        let _ = self.deployment_state.get_or_create(&deployment_labels(deployment));
    }

    /// A deployment's state as the gauge shows it.
    pub fn deployment_state(&self, deployment: &Deployment) -> i64 {
        self.deployment_state.get_or_create(&deployment_labels(deployment)).get()
    }

    /// A key's budget after a request.
    pub fn record_key_budget(&self, caller: &CallerLabels, budget: Budget) {
        let labels = KeyLabels {
            hashed_api_key: caller.hashed_api_key.clone(),
            api_key_alias: caller.api_key_alias.clone(),
        };
        self.key_budget_max.get_or_create(&labels).set(budget.max);
        self.key_budget_remaining.get_or_create(&labels).set(budget.max - budget.spend);
    }

    /// A team's budget after a request.
    pub fn record_team_budget(&self, caller: &CallerLabels, budget: Budget) {
        let labels = TeamLabels { team: caller.team.clone(), team_alias: caller.team_alias.clone() };
        self.team_budget_max.get_or_create(&labels).set(budget.max);
        self.team_budget_remaining.get_or_create(&labels).set(budget.max - budget.spend);
    }

    /// What a key has left of its rpm and tpm limits this minute, for `model`.
    pub fn record_key_limits(
        &self,
        caller: &CallerLabels,
        model: &str,
        requests: Option<u64>,
        tokens: Option<u64>,
    ) {
        let labels = KeyModelLabels {
            hashed_api_key: caller.hashed_api_key.clone(),
            api_key_alias: caller.api_key_alias.clone(),
            model: model.to_owned(),
        };
        if let Some(requests) = requests {
            self.key_requests_remaining.get_or_create(&labels).set(gauge_value(requests));
        }
        if let Some(tokens) = tokens {
            self.key_tokens_remaining.get_or_create(&labels).set(gauge_value(tokens));
        }
    }

    /// What a team has left of its rpm and tpm limits this minute.
    pub fn record_team_limits(&self, caller: &CallerLabels, requests: Option<u64>, tokens: Option<u64>) {
        let labels = TeamLabels { team: caller.team.clone(), team_alias: caller.team_alias.clone() };
        if let Some(requests) = requests {
            self.team_requests_remaining.get_or_create(&labels).set(gauge_value(requests));
        }
        if let Some(tokens) = tokens {
            self.team_tokens_remaining.get_or_create(&labels).set(gauge_value(tokens));
        }
    }

    /// Counts a request to a deployment nobody prices (it costs 0).
    pub fn record_unpriced(&self, model_group: &str) {
        self.unpriced.get_or_create(&ModelLabels { requested_model: model_group.to_owned() }).inc();
    }

    /// Counts an alert sent (or attempted) on `channel`.
    pub fn record_alert(&self, alert_type: &'static str, channel: &'static str) {
        self.alerts.get_or_create(&AlertLabels { alert_type, channel }).inc();
    }

    /// The counter of spend log rows dropped (queue or retry buffer full), for the writer.
    pub fn spend_log_drops(&self) -> Counter {
        self.spend_log_drops.clone()
    }

    /// The state read at scrape time: spend log rows waiting, spend deltas not yet written,
    /// whether the database answered, and each Redis use's health (`None`: not configured).
    pub fn set_scraped(&self, scraped: &Scraped) {
        self.spend_log_queue.set(gauge_value(scraped.spend_log_rows));
        self.spend_updates_queue.set(gauge_value(scraped.spend_updates));
        if let Some((backend, up)) = scraped.database_up {
            self.database_up.get_or_create(&BackendLabels { backend }).set(i64::from(up));
        }
        for (component, up) in &scraped.redis {
            self.redis_up.get_or_create(&ComponentLabels { component }).set(i64::from(*up));
        }
    }

    /// The response cache's counters.
    pub fn cache_counters(&self) -> CacheCounters {
        self.cache.clone()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The state `/metrics` reads when scraped.
#[derive(Debug, Default)]
pub struct Scraped {
    pub spend_log_rows: u64,
    pub spend_updates: u64,
    /// The database's backend (`postgres`, `sqlite`) and whether it answered.
    pub database_up: Option<(&'static str, bool)>,
    pub redis: Vec<(&'static str, bool)>,
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn deployment_labels(deployment: &Deployment) -> DeploymentStateLabels {
    DeploymentStateLabels {
        litellm_model_name: deployment.litellm_model(),
        model_id: deployment.id.clone(),
        api_provider: deployment.provider_prefix().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_show_up_under_litellm_names() {
        let metrics = Metrics::new();
        let caller = CallerLabels {
            hashed_api_key: "abc".into(),
            api_key_alias: "svc".into(),
            team: "t1".into(),
            team_alias: "research".into(),
        };
        let outcome = |status, fallback_model| RequestOutcome {
            requested_model: "gp",
            caller: &caller,
            status,
            total: Duration::from_millis(30),
            upstream: Some(Duration::from_millis(29)),
            retries: 1,
            fallback_model,
            usage: (status == 200).then_some(UsageOutcome {
                model: "openai/gpt-4o",
                input_tokens: 7,
                output_tokens: 3,
                cost: 0.25,
            }),
            time_to_first_token: None,
            failed_fallback: None,
        };
        metrics.record_request(&outcome(200, None));
        metrics.record_request(&outcome(200, Some("backup")));
        metrics.record_request(&outcome(503, None));
        metrics.record_overhead("gp", Duration::from_millis(1));
        metrics.spend_log_drops().inc_by(4);
        metrics.record_key_budget(&caller, Budget { spend: 2.5, max: 10.0 });
        metrics.set_scraped(&Scraped {
            spend_log_rows: 3,
            spend_updates: 2,
            database_up: Some(("sqlite", true)),
            redis: vec![("rate_limits", false)],
        });
        let text = metrics.encode();
        let who = r#"hashed_api_key="abc",api_key_alias="svc",team="t1",team_alias="research""#;
        for line in [
            "tollgate_spend_log_rows_dropped_total 4".to_owned(),
            format!(r#"litellm_proxy_total_requests_metric_total{{requested_model="gp",{who},status_code="200"}} 2"#),
            format!(r#"litellm_proxy_failed_requests_metric_total{{requested_model="gp",{who},exception_status="503"}} 1"#),
            r#"litellm_request_total_latency_metric_count{requested_model="gp"} 3"#.to_owned(),
            r#"litellm_overhead_latency_metric_bucket{le="0.0025",requested_model="gp"} 1"#.to_owned(),
            r#"litellm_deployment_successful_fallbacks_total{requested_model="gp",fallback_model="backup"} 1"#
                .to_owned(),
            r#"tollgate_retries_total{requested_model="gp"} 3"#.to_owned(),
            format!(r#"litellm_input_tokens_metric_total{{requested_model="gp",model="openai/gpt-4o",{who}}} 14"#),
            format!(r#"litellm_total_tokens_metric_total{{requested_model="gp",model="openai/gpt-4o",{who}}} 20"#),
            format!(r#"litellm_spend_metric_total{{requested_model="gp",model="openai/gpt-4o",{who}}} 0.5"#),
            r#"litellm_remaining_api_key_budget_metric{hashed_api_key="abc",api_key_alias="svc"} 7.5"#.to_owned(),
            "tollgate_spend_log_queue_rows 3".to_owned(),
            "litellm_in_memory_spend_update_queue_size 2".to_owned(),
            r#"tollgate_database_up{backend="sqlite"} 1"#.to_owned(),
            r#"tollgate_redis_up{component="rate_limits"} 0"#.to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_cooldown_holds_the_state_until_the_watcher_ends_it() {
        let deployment = tollgate_domain::GatewayConfig::demo(&std::collections::HashMap::new())
            .unwrap()
            .deployments
            .remove(0);
        let metrics = Metrics::new();
        metrics.record_attempt("demo", &deployment, Some(503));
        assert_eq!(metrics.deployment_state(&deployment), 1);
        metrics.record_cooldown(&deployment, true);
        metrics.record_attempt("demo", &deployment, None);
        assert_eq!(metrics.deployment_state(&deployment), 2, "a late success does not end a cooldown");
        metrics.record_cooldown(&deployment, false);
        metrics.record_attempt("demo", &deployment, None);
        assert_eq!(metrics.deployment_state(&deployment), 0);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"litellm_deployment_cooled_down_total{litellm_model_name="fake/demo",model_id=""#
            ),
            "{text}"
        );
    }

    #[test]
    fn the_grafana_dashboard_queries_only_metrics_that_exist() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/grafana/tollgate.json")).unwrap();
        // A family shows only once it has a series: give every one a value.
        let metrics = Metrics::new();
        let caller = CallerLabels::default();
        metrics.record_request(&RequestOutcome {
            requested_model: "gp",
            caller: &caller,
            status: 500,
            total: Duration::from_millis(3),
            upstream: Some(Duration::from_millis(2)),
            time_to_first_token: Some(Duration::from_millis(1)),
            retries: 1,
            fallback_model: Some("b"),
            failed_fallback: Some("b"),
            usage: Some(UsageOutcome { model: "m", input_tokens: 1, output_tokens: 1, cost: 1.0 }),
        });
        metrics.record_overhead("gp", Duration::from_micros(30));
        let deployment = tollgate_domain::GatewayConfig::demo(&std::collections::HashMap::new())
            .unwrap()
            .deployments
            .remove(0);
        metrics.record_attempt("gp", &deployment, None);
        metrics.record_attempt("gp", &deployment, Some(500));
        metrics.record_cooldown(&deployment, true);
        metrics.record_key_budget(&caller, Budget { spend: 1.0, max: 2.0 });
        metrics.record_team_budget(&caller, Budget { spend: 1.0, max: 2.0 });
        metrics.record_key_limits(&caller, "gp", Some(1), Some(1));
        metrics.record_team_limits(&caller, Some(1), Some(1));
        metrics.record_unpriced("gp");
        metrics.record_alert("budget_alerts", "slack");
        metrics.set_scraped(&Scraped {
            spend_log_rows: 1,
            spend_updates: 1,
            database_up: Some(("postgres", true)),
            redis: vec![("cache", true)],
        });
        let text = metrics.encode();
        let known: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{} has no query", panel["title"]);
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                let names = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("litellm_") || word.starts_with("tollgate_"))
                    // A label, not a metric.
                    .filter(|word| *word != "litellm_model_name");
                for name in names {
                    let base = ["_bucket", "_count", "_sum", "_total"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .unwrap_or(name);
                    assert!(
                        known.contains(&base),
                        "{} queries {name}, which /metrics does not have",
                        panel["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried > 40, "the dashboard queries the metrics ({queried})");
    }
}
