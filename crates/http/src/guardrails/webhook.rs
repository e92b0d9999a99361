//! `generic_guardrail_api`: LiteLLM's webhook contract. The texts of the request (or of the
//! answer) are POSTed to `{api_base}/beta/litellm_basic_guardrail_api`; the service answers
//! `NONE` (go on), `BLOCKED` with a `blocked_reason`, or `GUARDRAIL_INTERVENED` with the
//! modified `texts`. A service that does not answer in time, or answers with something
//! else, lets the request through with `unreachable_fallback: fail_open` and blocks it
//! otherwise.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_domain::config::WebhookConfig;
use tollgate_providers::HttpClient;

use super::{CallContext, GuardedAnswer, GuardedRequest, Guardrail, Verdict, all_texts};

/// The path LiteLLM's contract puts under `api_base`.
const PATH: &str = "/beta/litellm_basic_guardrail_api";
/// The largest answer read from the service.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

pub(super) struct Webhook {
    config: WebhookConfig,
    url: String,
    client: HttpClient,
}

impl Webhook {
    pub(super) fn new(config: &WebhookConfig, client: HttpClient) -> Self {
        let url = format!("{}{PATH}", config.api_base.trim_end_matches('/'));
        Self { config: config.clone(), url, client }
    }

    /// Asks the service about `texts`; on `GUARDRAIL_INTERVENED` the texts are replaced.
    async fn check(&self, context: &CallContext<'_>, texts: Vec<&mut String>, input_type: &str) -> Verdict {
        let body = json!({
            "texts": texts.iter().map(|text| text.as_str()).collect::<Vec<_>>(),
            "request_data": {
                "user_api_key_hash": context.key_hash,
                "user_api_key_alias": context.key_alias,
                "user_api_key_team_id": context.team_id,
            },
            "input_type": input_type,
            "litellm_call_id": context.call_id,
            "model": context.model,
            "additional_provider_specific_params": self.config.additional_params,
        });
        let answer = match tokio::time::timeout(self.config.timeout, self.call(body)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(problem)) => return self.unreachable(&problem),
            Err(_) => return self.unreachable(&format!("no answer within {:?}", self.config.timeout)),
        };
        match answer.get("action").and_then(Value::as_str) {
            Some("NONE") => Verdict::Allow,
            Some("BLOCKED") => Verdict::Block(
                answer
                    .get("blocked_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("blocked by the guardrail service")
                    .to_owned(),
            ),
            Some("GUARDRAIL_INTERVENED") => {
                let Some(new_texts) = answer.get("texts").and_then(Value::as_array) else {
                    return Verdict::Allow;
                };
                if new_texts.len() != texts.len() {
                    return self.unreachable(&format!(
                        "answered {} texts for the {} it was sent",
                        new_texts.len(),
                        texts.len()
                    ));
                }
                for (text, new_text) in texts.into_iter().zip(new_texts) {
                    if let Some(new_text) = new_text.as_str() {
                        new_text.clone_into(text);
                    }
                }
                Verdict::Modified
            }
            other => self.unreachable(&format!("unknown action {other:?}")),
        }
    }

    async fn call(&self, body: Value) -> Result<Value, String> {
        let mut request =
            http::Request::post(&self.url).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.expose());
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("invalid request: {e}"))?;
        let response = self.client.request(request).await.map_err(|e| format!("unreachable: {e}"))?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))
    }

    fn unreachable(&self, problem: &str) -> Verdict {
        if self.config.fail_open {
            tracing::warn!(url = %self.url, problem, "guardrail service failed; letting the request through (fail_open)");
            Verdict::Allow
        } else {
            tracing::warn!(url = %self.url, problem, "guardrail service failed; blocking the request (fail_closed)");
            Verdict::Block(format!("the guardrail service failed ({problem}) and the guardrail fails closed"))
        }
    }
}

#[async_trait::async_trait]
impl Guardrail for Webhook {
    async fn pre_call(&self, request: &mut GuardedRequest<'_>) -> Verdict {
        let context = request.context;
        self.check(&context, all_texts(request.messages), "request").await
    }

    async fn post_call(&self, answer: &mut GuardedAnswer<'_>) -> Verdict {
        let context = answer.context;
        self.check(&context, answer.texts.iter_mut().collect(), "response").await
    }
}
