//! What a request used and cost: the upstream's `usage` read from the answer (or from the
//! stream's usage chunk), priced with the deployment's prices, and recorded against the
//! caller's key, user, team, organization and end user.

use std::sync::Arc;

use tollgate_domain::Deployment;
use tollgate_domain::json::top_level_value_span;
use tollgate_domain::pricing::{Pricing, Usage};

use crate::App;
use crate::tenancy::{Access, Principal, Tenancy};

/// Everything needed to account for a request once its usage is known.
pub(crate) struct Meter {
    tenancy: Option<Arc<Tenancy>>,
    principal: Option<Arc<Principal>>,
    /// The model group the request was admitted for (per-model limits and budgets).
    model: String,
    end_user: Option<String>,
    pricing: Option<Pricing>,
}

impl Meter {
    pub(crate) fn new(
        app: &App,
        access: &Access,
        model: &str,
        end_user: Option<&str>,
        deployment: &Deployment,
    ) -> Self {
        let principal = match access {
            Access::Key(principal) => Some(Arc::clone(principal)),
            _ => None,
        };
        Self {
            tenancy: app.tenancy.clone(),
            principal,
            model: model.to_owned(),
            end_user: end_user.map(str::to_owned),
            pricing: deployment.pricing,
        }
    }

    /// Records `usage`; returns its cost (0 for a model without prices).
    pub(crate) fn record(&self, usage: &Usage) -> f64 {
        let cost = self.pricing.map_or(0.0, |pricing| pricing.cost(usage));
        if let Some(tenancy) = &self.tenancy {
            tenancy.record(
                self.principal.as_deref(),
                &self.model,
                self.end_user.as_deref(),
                usage.total_tokens(),
                cost,
            );
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
