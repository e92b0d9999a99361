//! The OpenAI wire format, spoken to OpenAI and every OpenAI-compatible server (vLLM,
//! Ollama's `/v1`, LM Studio, Groq, Mistral, DeepSeek, Together, Fireworks, OpenRouter …).
//!
//! The canonical request already is OpenAI's JSON, so the body is forwarded as is and the
//! answer comes back untouched: a complete body, or the SSE stream frame by frame.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::{Instant, timeout_at};
use tollgate_domain::Deployment;

use crate::body::IdleTimeout;
use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse};

/// The most a non-streaming answer may weigh; larger is a broken upstream, not an answer.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How much of a non-JSON error body is quoted back to the client.
const MAX_QUOTED_ERROR: usize = 1000;

pub struct OpenAiProvider {
    client: HttpClient,
}

impl OpenAiProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl crate::Provider for OpenAiProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let api_base = deployment.api_base.as_deref().unwrap_or_default();
        let limit = if request.stream { deployment.stream_timeout } else { deployment.timeout };
        let deadline = Instant::now() + limit;
        let timed_out = || timeout_error(deployment, limit);

        let upstream = build_request(deployment, request.endpoint.path(), request.body)?;
        let response = timeout_at(deadline, self.client.request(upstream))
            .await
            .map_err(|_| timed_out())?
            .map_err(|error| ProviderError::Connect {
                model: deployment.model_name.clone(),
                api_base: api_base.to_owned(),
                reason: error_chain(&error),
            })?;
        let (parts, incoming) = response.into_parts();
        let incoming = incoming.map_err(|e| ProviderError::Protocol(format!("upstream body: {e}")));

        if !parts.status.is_success() {
            let body = timeout_at(deadline, Limited::new(incoming, MAX_RESPONSE_BYTES).collect())
                .await
                .map_err(|_| timed_out())?
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            return Err(upstream_error(parts.status.as_u16(), &body, deployment));
        }

        let body = if request.stream {
            UpstreamBody::Stream(IdleTimeout::new(incoming, deployment.stream_timeout, timed_out()).boxed())
        } else {
            let collected = timeout_at(deadline, Limited::new(incoming, MAX_RESPONSE_BYTES).collect())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| ProviderError::Protocol(format!("reading the upstream answer: {e}")))?;
            UpstreamBody::Complete(collected.to_bytes())
        };
        Ok(UpstreamResponse { headers: parts.headers, body })
    }
}

fn build_request(
    deployment: &Deployment,
    path: &str,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let api_base = deployment.api_base.as_deref().unwrap_or_default();
    let mut builder = http::Request::post(format!("{api_base}{path}"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &deployment.api_key {
        let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
            ProviderError::BadRequest(format!(
                "the api_key of model '{}' is not a valid header value",
                deployment.model_name
            ))
        })?;
        value.set_sensitive(true);
        builder = builder.header(AUTHORIZATION, value);
    }
    if let Some(organization) = &deployment.organization {
        builder = builder.header("openai-organization", organization.as_str());
    }
    for (name, value) in &deployment.extra_headers {
        match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(name), Ok(value)) => builder = builder.header(name, value),
            _ => {
                return Err(ProviderError::BadRequest(format!(
                    "extra_headers of model '{}' holds an invalid header '{name}'",
                    deployment.model_name
                )));
            }
        }
    }
    builder.body(Full::new(body)).map_err(|e| {
        ProviderError::BadRequest(format!(
            "cannot build the upstream request for '{}': {e}",
            deployment.model_name
        ))
    })
}

fn timeout_error(deployment: &Deployment, timeout: Duration) -> ProviderError {
    ProviderError::Timeout {
        model: deployment.model_name.clone(),
        api_base: deployment.api_base.clone().unwrap_or_default(),
        timeout,
    }
}

/// The error's message and the messages of its sources, joined.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Reads an upstream error body in the shapes OpenAI-compatible servers use: OpenAI's
/// `{"error": {...}}`, Ollama's `{"error": "text"}`, vLLM's top-level `message`, or text.
/// The deployment's key is redacted wherever it appears.
pub(crate) fn upstream_error(status: u16, body: &[u8], deployment: &Deployment) -> ProviderError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text_field = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (message, error_type, param, code) = match json.as_ref() {
        Some(root) => {
            let error = root.get("error");
            match error {
                Some(object @ serde_json::Value::Object(_)) => (
                    text_field(object.get("message")),
                    text_field(object.get("type")),
                    text_field(object.get("param")),
                    text_field(object.get("code")),
                ),
                Some(serde_json::Value::String(text)) => (Some(text.clone()), None, None, None),
                _ => (
                    text_field(root.get("message")).or_else(|| text_field(root.get("detail"))),
                    text_field(root.get("type")),
                    None,
                    text_field(root.get("code")),
                ),
            }
        }
        None => (None, None, None, None),
    };
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            format!("upstream returned status {status} with an empty body")
        } else {
            let end = text.char_indices().nth(MAX_QUOTED_ERROR).map_or(text.len(), |(i, _)| i);
            text[..end].to_owned()
        }
    });
    let redact = |text: String| match &deployment.api_key {
        Some(key) => key.redact_from(&text),
        None => text,
    };
    ProviderError::Upstream {
        status,
        message: redact(message),
        error_type,
        param: param.map(redact),
        code: code.filter(|c| c.parse::<u16>().is_err() || c != &status.to_string()).map(redact),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tollgate_domain::GatewayConfig;

    fn deployment() -> Deployment {
        GatewayConfig::from_yaml(
            "model_list:\n  - model_name: gp\n    litellm_params: {model: openai/gpt-4o, api_key: sk-secret-123, api_base: 'http://127.0.0.1:9/v1', extra_headers: {x-team: a}, organization: org-1}\n",
            &HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    #[test]
    fn request_carries_key_organization_and_extra_headers() {
        let request = build_request(&deployment(), "/chat/completions", Bytes::from_static(b"{}")).unwrap();
        assert_eq!(request.uri(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(request.headers()["authorization"], "Bearer sk-secret-123");
        assert!(request.headers()["authorization"].is_sensitive());
        assert_eq!(request.headers()["openai-organization"], "org-1");
        assert_eq!(request.headers()["x-team"], "a");
    }

    #[test]
    fn openai_error_fields_are_kept_and_the_key_redacted() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-secret-123.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let ProviderError::Upstream { status, message, error_type, code, .. } =
            upstream_error(401, body, &deployment())
        else {
            panic!("not an upstream error");
        };
        assert_eq!(status, 401);
        assert_eq!(message, "Incorrect API key provided: [redacted].");
        assert_eq!(error_type.as_deref(), Some("invalid_request_error"));
        assert_eq!(code.as_deref(), Some("invalid_api_key"));
    }

    #[test]
    fn other_error_shapes_are_read() {
        let message = |status, body: &[u8]| match upstream_error(status, body, &deployment()) {
            ProviderError::Upstream { message, .. } => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(message(404, br#"{"error":"model 'x' not found"}"#), "model 'x' not found");
        assert_eq!(
            message(400, br#"{"object":"error","message":"too long","type":"BadRequestError","code":400}"#),
            "too long"
        );
        assert_eq!(message(502, b"<html>Bad Gateway</html>"), "<html>Bad Gateway</html>");
        assert_eq!(message(503, b""), "upstream returned status 503 with an empty body");
    }
}
