//! What a request used and cost: the upstream's `usage` read from the answer (or from the
//! stream's usage chunk), priced with the deployment's prices, recorded against the caller's
//! key, user, team, organization and end user, and queued as a spend log row.

use std::sync::Arc;

use tollgate_domain::Deployment;
use tollgate_domain::json::top_level_value_span;
use tollgate_domain::pricing::{Pricing, Usage};
use tollgate_storage::SpendLogRow;

use crate::App;
use crate::tenancy::{Access, Principal, Tenancy};

/// The request a meter accounts for, for its spend log row.
pub(crate) struct MeteredCall<'a> {
    pub(crate) call_id: &'a str,
    /// LiteLLM's call type (`acompletion`, `aembedding`, …).
    pub(crate) call_type: &'static str,
    pub(crate) started: std::time::Instant,
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
        let principal = match access {
            Access::Key(principal) => Some(Arc::clone(principal)),
            _ => None,
        };
        let row = app.tenancy.as_ref().filter(|tenancy| tenancy.spend_logs).map(|tenancy| {
            let start = chrono::Utc::now().naive_utc()
                - chrono::Duration::from_std(request.started.elapsed()).unwrap_or_default();
            let key = principal.as_ref().map(|p| &p.key);
            SpendLogRow {
                request_id: request.call_id.to_owned(),
                call_type: request.call_type.to_owned(),
                api_key: key
                    .map(|k| k.token.clone())
                    .or_else(|| tenancy.master_hash.clone())
                    .unwrap_or_default(),
                spend: 0.0,
                prompt_tokens: 0,
                completion_tokens: 0,
                start_time: start,
                end_time: start,
                model: deployment.upstream_model.clone(),
                model_group: model.to_owned(),
                model_id: deployment.id.clone(),
                custom_llm_provider: deployment.provider_prefix().to_owned(),
                api_base: deployment.api_base.clone().unwrap_or_default(),
                end_user: end_user.map(str::to_owned),
                team_id: key.and_then(|k| k.team_id.clone()),
                organization_id: principal
                    .as_ref()
                    .and_then(|p| p.organization.as_ref().map(|(o, _)| o.organization_id.clone())),
                metadata: serde_json::json!({
                    "user_api_key_alias": key.and_then(|k| k.key_alias.as_deref()),
                    "user_api_key_user_id": key.and_then(|k| k.user_id.as_deref()),
                    "user_api_key_team_id": key.and_then(|k| k.team_id.as_deref()),
                })
                .to_string(),
                status: "success".to_owned(),
            }
        });
        Self {
            tenancy: app.tenancy.clone(),
            principal,
            model: model.to_owned(),
            end_user: end_user.map(str::to_owned),
            pricing: deployment.pricing,
            row,
        }
    }

    /// Records `usage`; returns its cost (0 for a model without prices).
    pub(crate) fn record(&mut self, usage: &Usage) -> f64 {
        let cost = self.pricing.map_or(0.0, |pricing| pricing.cost(usage));
        let Some(tenancy) = &self.tenancy else { return cost };
        tenancy.record(
            self.principal.as_deref(),
            &self.model,
            self.end_user.as_deref(),
            usage.total_tokens(),
            cost,
        );
        if let Some(mut row) = self.row.take() {
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

/// The top-level `usage` object of a JSON answer or chunk, if it has one.
pub(crate) fn usage_in(json: &[u8]) -> Option<Usage> {
    let span = top_level_value_span(json, "usage")?;
    if json[span.start] != b'{' {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&json[span]).ok()?;
    Usage::from_json(&value)
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
}
