//! Prometheus metrics under LiteLLM's names, so existing dashboards keep working, served at
//! `/metrics` in the OpenMetrics text format.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `litellm_proxy_total_requests_metric` | counter | `requested_model`, `status_code` |
//! | `litellm_proxy_failed_requests_metric` | counter | `requested_model`, `exception_status` |
//! | `litellm_request_total_latency_metric` | histogram (s) | `requested_model` |
//! | `litellm_llm_api_latency_metric` | histogram (s) | `requested_model` |
//! | `litellm_overhead_latency_metric` | histogram (s) | `requested_model` |
//! | `litellm_deployment_success_responses` | counter | `requested_model`, `litellm_model_name`, `model_id`, `api_provider` |
//! | `litellm_deployment_failure_responses` | counter | the same, and `exception_status` |
//! | `litellm_deployment_successful_fallbacks` | counter | `requested_model`, `fallback_model` |
//! | `tollgate_retries` | counter | `requested_model` |
//! | `tollgate_cache_hits`, `tollgate_cache_misses` | counter | |
//! | `tollgate_cache_redis_errors` | counter | |
//!
//! `requested_model` is the model group the request named, or `unknown` when it named none
//! the gateway serves, so a client cannot grow the label set at will. For a stream, latency
//! is measured to its first byte.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tollgate_domain::Deployment;

/// The label for requests naming no model the gateway serves.
pub const UNKNOWN_MODEL: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    requested_model: String,
    status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    requested_model: String,
    exception_status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    requested_model: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    requested_model: String,
    fallback_model: String,
}

type Histograms = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// Request latency buckets, in seconds: 5 ms to 5 minutes.
fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
}

/// Gateway overhead buckets, in seconds: 25 µs to 100 ms.
fn overhead_histogram() -> Histogram {
    Histogram::new([0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1])
}

/// Every metric the gateway keeps; one per process, shared by all workers.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    total_latency: Histograms,
    upstream_latency: Histograms,
    overhead: Histograms,
    deployment_success: Family<DeploymentLabels, Counter>,
    deployment_failure: Family<DeploymentFailureLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    retries: Family<ModelLabels, Counter>,
    spend_log_drops: Counter,
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
    pub status: u16,
    pub total: Duration,
    /// Time inside routing (upstream attempts and the waits between them), when routed.
    pub upstream: Option<Duration>,
    pub retries: u32,
    /// The group that answered when it was a fallback.
    pub fallback_model: Option<&'a str>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "litellm_proxy_total_requests_metric",
            "Requests to the gateway, by requested model and status",
            requests.clone(),
        );
        let failures = Family::default();
        registry.register(
            "litellm_proxy_failed_requests_metric",
            "Requests answered with an error status",
            failures.clone(),
        );
        let total_latency: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "litellm_request_total_latency_metric",
            "Time from request to response (first byte for streams), seconds",
            total_latency.clone(),
        );
        let upstream_latency: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "litellm_llm_api_latency_metric",
            "Time spent waiting on upstreams, retries included, seconds",
            upstream_latency.clone(),
        );
        let overhead: Histograms = Family::new_with_constructor(overhead_histogram);
        registry.register(
            "litellm_overhead_latency_metric",
            "The gateway's own time per request, seconds",
            overhead.clone(),
        );
        let deployment_success = Family::default();
        registry.register(
            "litellm_deployment_success_responses",
            "Successful upstream calls, by deployment",
            deployment_success.clone(),
        );
        let deployment_failure = Family::default();
        registry.register(
            "litellm_deployment_failure_responses",
            "Failed upstream calls, by deployment and status",
            deployment_failure.clone(),
        );
        let fallbacks = Family::default();
        registry.register(
            "litellm_deployment_successful_fallbacks",
            "Requests answered by a fallback model group",
            fallbacks.clone(),
        );
        let retries = Family::default();
        registry.register(
            "tollgate_retries",
            "Retries of upstream calls within model groups",
            retries.clone(),
        );
        let spend_log_drops = Counter::default();
        registry.register(
            "tollgate_spend_log_rows_dropped",
            "Spend log rows dropped because the queue or the retry buffer was full",
            spend_log_drops.clone(),
        );
        let unpriced = Family::default();
        registry.register(
            "tollgate_unpriced_requests",
            "Requests to deployments without a known price, recorded at a cost of 0",
            unpriced.clone(),
        );
        let cache = CacheCounters::default();
        registry.register(
            "tollgate_cache_hits",
            "Response cache lookups answered from the cache",
            cache.hits.clone(),
        );
        registry.register(
            "tollgate_cache_misses",
            "Response cache lookups not found in the cache",
            cache.misses.clone(),
        );
        registry.register(
            "tollgate_cache_redis_errors",
            "Response cache commands to Redis that failed or timed out",
            cache.redis_errors.clone(),
        );
        Self {
            spend_log_drops,
            unpriced,
            cache,
            registry,
            requests,
            failures,
            total_latency,
            upstream_latency,
            overhead,
            deployment_success,
            deployment_failure,
            fallbacks,
            retries,
        }
    }

    pub fn record_request(&self, outcome: &RequestOutcome<'_>) {
        let model = ModelLabels { requested_model: outcome.requested_model.to_owned() };
        self.requests
            .get_or_create(&RequestLabels {
                requested_model: model.requested_model.clone(),
                status_code: outcome.status,
            })
            .inc();
        if outcome.status >= 400 {
            self.failures
                .get_or_create(&FailureLabels {
                    requested_model: model.requested_model.clone(),
                    exception_status: outcome.status,
                })
                .inc();
        }
        self.total_latency.get_or_create(&model).observe(outcome.total.as_secs_f64());
        if let Some(upstream) = outcome.upstream {
            self.upstream_latency.get_or_create(&model).observe(upstream.as_secs_f64());
            self.overhead.get_or_create(&model).observe(outcome.total.saturating_sub(upstream).as_secs_f64());
        }
        if outcome.retries > 0 {
            self.retries.get_or_create(&model).inc_by(u64::from(outcome.retries));
        }
        if let Some(fallback) = outcome.fallback_model {
            self.fallbacks
                .get_or_create(&FallbackLabels {
                    requested_model: model.requested_model,
                    fallback_model: fallback.to_owned(),
                })
                .inc();
        }
    }

    /// One upstream attempt on `deployment`: `None` for a success, else the error status.
    pub fn record_attempt(&self, requested_model: &str, deployment: &Deployment, failure: Option<u16>) {
        let (litellm_model_name, model_id, api_provider) =
            (deployment.litellm_model(), deployment.id.clone(), deployment.provider_prefix().to_owned());
        match failure {
            None => self
                .deployment_success
                .get_or_create(&DeploymentLabels {
                    requested_model: requested_model.to_owned(),
                    litellm_model_name,
                    model_id,
                    api_provider,
                })
                .inc(),
            Some(exception_status) => self
                .deployment_failure
                .get_or_create(&DeploymentFailureLabels {
                    requested_model: requested_model.to_owned(),
                    litellm_model_name,
                    model_id,
                    api_provider,
                    exception_status,
                })
                .inc(),
        };
    }

    /// The counter of spend log rows dropped (queue or retry buffer full), for the writer.
    /// Counts a request to a deployment nobody prices (it costs 0).
    pub fn record_unpriced(&self, model_group: &str) {
        self.unpriced.get_or_create(&ModelLabels { requested_model: model_group.to_owned() }).inc();
    }

    pub fn spend_log_drops(&self) -> Counter {
        self.spend_log_drops.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_show_up_under_litellm_names() {
        let metrics = Metrics::new();
        let outcome = |status, fallback_model| RequestOutcome {
            requested_model: "gp",
            status,
            total: Duration::from_millis(30),
            upstream: Some(Duration::from_millis(29)),
            retries: 1,
            fallback_model,
        };
        metrics.record_request(&outcome(200, None));
        metrics.record_request(&outcome(200, Some("backup")));
        metrics.record_request(&outcome(503, None));
        metrics.spend_log_drops().inc_by(4);
        let text = metrics.encode();
        for line in [
            "tollgate_spend_log_rows_dropped_total 4",
            r#"litellm_proxy_total_requests_metric_total{requested_model="gp",status_code="200"} 2"#,
            r#"litellm_proxy_failed_requests_metric_total{requested_model="gp",exception_status="503"} 1"#,
            r#"litellm_request_total_latency_metric_count{requested_model="gp"} 3"#,
            r#"litellm_overhead_latency_metric_bucket{le="0.0025",requested_model="gp"} 3"#,
            r#"litellm_deployment_successful_fallbacks_total{requested_model="gp",fallback_model="backup"} 1"#,
            r#"tollgate_retries_total{requested_model="gp"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
