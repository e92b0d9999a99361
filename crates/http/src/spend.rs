//! What a request used and cost: the upstream's `usage` read from the answer (or from the
//! stream's usage chunk), priced with the deployment's prices, recorded against the caller's
//! key, user, team, organization and end user, and queued as a spend log row.

use std::sync::Arc;

use tollgate_domain::Deployment;
use tollgate_domain::json::top_level_value_span;
use tollgate_domain::pricing::{Pricing, Usage};
use tollgate_storage::{SpendLogError, SpendLogRow};

use crate::App;
use crate::tenancy::{Access, Principal, Tenancy};

/// The request a meter accounts for, for its spend log row.
pub(crate) struct MeteredCall<'a> {
    pub(crate) call_id: &'a str,
    /// LiteLLM's call type (`acompletion`, `aembedding`, …).
    pub(crate) call_type: &'static str,
    pub(crate) started: std::time::Instant,
    /// Where the request's observer learns the usage and cost.
    pub(crate) progress: Option<&'a Arc<crate::observe::Progress>>,
}

/// Everything needed to account for a request once its usage is known.
pub(crate) struct Meter {
    tenancy: Option<Arc<Tenancy>>,
    principal: Option<Arc<Principal>>,
    /// The model group the request was admitted for (per-model limits and budgets).
    model: String,
    end_user: Option<String>,
    pricing: Option<Pricing>,
    /// The spend log row, filled in when the usage arrives; `None` when rows are not kept.
    row: Option<SpendLogRow>,
    /// Answered from the response cache: nothing is charged.
    cached: bool,
    /// The request's tags and its key's and team's (`request_tags`, the tag roll-up).
    tags: Vec<String>,
    /// Counts requests nobody prices, when this one is such.
    unpriced: Option<Arc<crate::metrics::Metrics>>,
    progress: Option<Arc<crate::observe::Progress>>,
}

impl Meter {
    pub(crate) fn new(
        app: &App,
        access: &Access,
        model: &str,
        end_user: Option<&str>,
        deployment: &Deployment,
        request: &MeteredCall<'_>,
    ) -> Self {
        Self::build(app, access, model, end_user, Some(deployment), request)
    }

    /// Queues a `failure` row for a request no deployment answered (LiteLLM logs those too),
    /// with the error in its metadata as LiteLLM's `error_information`.
    pub(crate) fn failed(
        app: &App,
        access: &Access,
        model: &str,
        end_user: Option<&str>,
        request: &MeteredCall<'_>,
        tags: Vec<String>,
        error: &tollgate_domain::GatewayError,
    ) {
        Self::failed_with(app, access, model, end_user, request, tags, error, None);
    }

    /// Queues the `failure` row of a request a guardrail blocked: no upstream call, no
    /// cost, the guardrail in LiteLLM's `guardrail_information`.
    pub(crate) fn blocked(
        app: &App,
        access: &Access,
        model: &str,
        end_user: Option<&str>,
        request: &MeteredCall<'_>,
        tags: Vec<String>,
        blocked: &crate::guardrails::Blocked,
    ) {
        let guardrail = tollgate_storage::SpendLogGuardrail {
            guardrail_name: blocked.guardrail.clone(),
            guardrail_mode: blocked.mode.as_str(),
            guardrail_status: "guardrail_intervened",
            guardrail_response: blocked.reason.clone(),
        };
        let error = blocked.to_error();
        Self::failed_with(app, access, model, end_user, request, tags, &error, Some(guardrail));
    }

    #[allow(clippy::too_many_arguments)]
    fn failed_with(
        app: &App,
        access: &Access,
        model: &str,
        end_user: Option<&str>,
        request: &MeteredCall<'_>,
        tags: Vec<String>,
        error: &tollgate_domain::GatewayError,
        guardrail: Option<tollgate_storage::SpendLogGuardrail>,
    ) {
        let mut meter = Self::build(app, access, model, end_user, None, request);
        meter.tag(tags);
        let Some(tenancy) = &meter.tenancy else { return };
        if let Some(mut row) = meter.row.take() {
            row.status = "failure";
            row.end_time = chrono::Utc::now().naive_utc();
            row.tags = meter.tags.iter().map(|tag| Arc::from(tag.as_str())).collect();
            row.error = Some(SpendLogError {
                error_code: error.status().to_string(),
                error_class: format!("{:?}", error.kind),
                error_message: error.message.clone(),
            });
            row.guardrail = guardrail;
            tenancy.spend_log.push(row);
        }
    }

    fn build(
        app: &App,
        access: &Access,
        model: &str,
        end_user: Option<&str>,
        deployment: Option<&Deployment>,
        request: &MeteredCall<'_>,
    ) -> Self {
        let principal = match access {
            Access::Key(principal) => Some(Arc::clone(principal)),
            _ => None,
        };
        let row = app.tenancy.as_ref().filter(|tenancy| tenancy.spend_logs).map(|tenancy| {
            let start = chrono::Utc::now().naive_utc()
                - chrono::Duration::from_std(request.started.elapsed()).unwrap_or_default();
            let key = principal.as_ref().map(|p| &p.key);
            let shared = |text: &str| Arc::<str>::from(text);
            SpendLogRow {
                request_id: shared(request.call_id),
                call_type: request.call_type,
                api_key: key
                    .map(|k| shared(&k.token))
                    .or_else(|| tenancy.master_hash.as_deref().map(shared))
                    .unwrap_or_else(|| shared("")),
                spend: 0.0,
                prompt_tokens: 0,
                completion_tokens: 0,
                start_time: start,
                end_time: start,
                model: shared(deployment.map_or("", |d| &d.upstream_model)),
                model_group: shared(model),
                model_id: shared(deployment.map_or("", |d| &d.id)),
                custom_llm_provider: shared(deployment.map_or("", |d| d.provider_prefix())),
                api_base: shared(deployment.and_then(|d| d.api_base.as_deref()).unwrap_or("")),
                end_user: end_user.map(shared),
                team_id: key.and_then(|k| k.team_id.as_deref()).map(shared),
                organization_id: principal
                    .as_ref()
                    .and_then(|p| p.organization.as_ref().map(|(o, _)| shared(&o.organization_id))),
                key_alias: key.and_then(|k| k.key_alias.as_deref()).map(shared),
                user_id: key.and_then(|k| k.user_id.as_deref()).map(shared),
                // Completed with tags and usage when the usage arrives.
                tags: Vec::new(),
                cache_read_input_tokens: 0,
                cache_creation_input_tokens: 0,
                error: None,
                guardrail: None,
                usage_estimated: false,
                status: "success",
                cache_hit: false,
            }
        });
        let tags = principal.as_deref().map(standing_tags).unwrap_or_default();
        Self {
            tenancy: app.tenancy.clone(),
            principal,
            model: model.to_owned(),
            end_user: end_user.map(str::to_owned),
            pricing: deployment.and_then(|d| d.pricing),
            row,
            cached: false,
            tags,
            unpriced: deployment.is_some_and(|d| d.pricing.is_none()).then(|| Arc::clone(&app.metrics)),
            progress: request.progress.cloned(),
        }
    }

    /// Adds the request's own tags (`metadata.tags` or `tags` in its body).
    pub(crate) fn tag(&mut self, tags: Vec<String>) {
        for tag in tags {
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
    }

    /// A meter for an answer from the response cache: it costs 0 and uses no tokens of any
    /// limit; its spend log row says `cache_hit` and keeps the cached answer's token counts.
    pub(crate) fn cache_hit(mut self) -> Self {
        self.cached = true;
        if let Some(row) = &mut self.row {
            row.cache_hit = true;
        }
        self
    }

    /// Records `usage` counted by the gateway (the upstream reported none); its spend log row
    /// says so. Returns its cost.
    pub(crate) fn record_estimated(&mut self, usage: &Usage) -> f64 {
        if let Some(row) = &mut self.row {
            row.usage_estimated = true;
        }
        self.record(usage)
    }

    /// Records `usage`; returns its cost (0 for a model without prices, or a cache hit).
    pub(crate) fn record(&mut self, usage: &Usage) -> f64 {
        let cost = if self.cached { 0.0 } else { self.pricing.map_or(0.0, |pricing| pricing.cost(usage)) };
        if let Some(progress) = &self.progress {
            progress.usage(usage, cost);
        }
        let Some(tenancy) = &self.tenancy else { return cost };
        if !self.cached {
            tenancy.record(
                self.principal.as_deref(),
                &self.model,
                self.end_user.as_deref(),
                usage.total_tokens(),
                cost,
            );
        }
        if let Some(metrics) = self.unpriced.as_ref().filter(|_| !self.cached) {
            metrics.record_unpriced(&self.model);
        }
        if let Some(mut row) = self.row.take() {
            row.tags = self.tags.iter().map(|tag| Arc::from(tag.as_str())).collect();
            row.cache_read_input_tokens = i64::try_from(usage.cached_tokens).unwrap_or(i64::MAX);
            row.cache_creation_input_tokens = i64::try_from(usage.cache_creation_tokens).unwrap_or(i64::MAX);
            row.spend = cost;
            row.prompt_tokens = i32::try_from(usage.prompt_tokens).unwrap_or(i32::MAX);
            row.completion_tokens = i32::try_from(usage.completion_tokens).unwrap_or(i32::MAX);
            row.end_time = chrono::Utc::now().naive_utc();
            tenancy.spend_log.push(row);
        }
        cost
    }

    /// The key's spend including this request, for `x-litellm-key-spend`.
    pub(crate) fn key_spend(&self) -> Option<f64> {
        Some(self.tenancy.as_ref()?.key_spend(self.principal.as_ref()?))
    }
}

/// Tags a key carries in its metadata, and its team's (LiteLLM adds both to the request's).
fn standing_tags(principal: &Principal) -> Vec<String> {
    let of = |metadata: &serde_json::Value| -> Vec<String> {
        metadata
            .get("tags")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|tag| tag.as_str().map(str::to_owned))
            .collect()
    };
    let mut tags = of(&principal.key.metadata.0);
    if let Some(team) = &principal.team {
        for tag in of(&team.metadata.0) {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }
    tags
}

/// The tags a request body carries: `metadata.tags` (LiteLLM's place) or a top-level `tags`.
pub(crate) fn request_tags(top: &tollgate_domain::json::TopLevel<'_>) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Tagged {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let mut tags = Vec::new();
    if let Some(Ok(Tagged { tags: Some(listed) })) =
        top.get("metadata").map(|raw| serde_json::from_str(raw.get()))
    {
        tags.extend(listed);
    }
    if let Some(Ok(listed)) = top.get("tags").map(|raw| serde_json::from_str::<Vec<String>>(raw.get())) {
        tags.extend(listed);
    }
    tags
}

/// The top-level `usage` object of a JSON answer or chunk, if it has one.
pub(crate) fn usage_in(json: &[u8]) -> Option<Usage> {
    let span = top_level_value_span(json, "usage")?;
    if json[span.start] != b'{' {
        return None;
    }
    Usage::from_slice(&json[span])
}

/// The usage of a rerank answer (LiteLLM's shape), read from its `meta`: input tokens from
/// `tokens.input_tokens` (else the billed `total_tokens`), and the billed search units that
/// per-query prices apply to. `None` without `meta`.
pub(crate) fn rerank_usage_in(json: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Answer {
        meta: Option<Meta>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        billed_units: Option<Counts>,
        tokens: Option<Counts>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Counts {
        input_tokens: Option<f64>,
        output_tokens: Option<f64>,
        total_tokens: Option<f64>,
        search_units: Option<f64>,
    }
    let meta = serde_json::from_slice::<Answer>(json).ok()?.meta?;
    let billed = meta.billed_units.unwrap_or_default();
    let tokens = meta.tokens.unwrap_or_default();
    // Counts are whole numbers, though some APIs write them as floats.
    let whole = |n: Option<f64>| n.filter(|n| n.is_finite() && *n >= 0.0).map_or(0, |n| n as u64);
    Some(Usage {
        prompt_tokens: whole(tokens.input_tokens.or(billed.total_tokens).or(billed.input_tokens)),
        completion_tokens: whole(tokens.output_tokens),
        search_units: whole(billed.search_units),
        ..Usage::default()
    })
}

/// Whether a chunk carries no choices (the usage-only chunk OpenAI ends a stream with).
pub(crate) fn has_no_choices(json: &[u8]) -> bool {
    top_level_value_span(json, "choices")
        .is_some_and(|span| json[span].iter().filter(|b| !b.is_ascii_whitespace()).eq(b"[]".iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_answers_and_chunks() {
        let answer = br#"{"id":"x","model":"m","choices":[{"index":0}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        let usage = usage_in(answer).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
        assert!(usage_in(br#"{"choices":[],"usage":null}"#).is_none());
        assert!(usage_in(br#"{"choices":[]}"#).is_none());
        assert!(has_no_choices(br#"{"choices": [ ],"usage":{}}"#));
        assert!(!has_no_choices(br#"{"choices":[{"delta":{}}]}"#));
    }

    #[test]
    fn rerank_usage_is_read_from_meta() {
        let cohere = br#"{"id":"x","results":[],"meta":{"api_version":{"version":"2"},"billed_units":{"search_units":1}}}"#;
        let usage = rerank_usage_in(cohere).unwrap();
        assert_eq!((usage.search_units, usage.prompt_tokens), (1, 0));
        let voyage = br#"{"id":"x","results":[],"meta":{"billed_units":{"total_tokens":26},"tokens":{"input_tokens":26,"output_tokens":0}}}"#;
        let usage = rerank_usage_in(voyage).unwrap();
        assert_eq!((usage.search_units, usage.prompt_tokens, usage.total_tokens()), (0, 26, 26));
        assert!(rerank_usage_in(br#"{"results":[]}"#).is_none());
    }
}
