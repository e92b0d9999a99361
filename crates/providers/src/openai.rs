//! The OpenAI wire format, spoken to OpenAI and every OpenAI-compatible server (vLLM,
//! LM Studio, Groq, Mistral, DeepSeek, Together, Fireworks, OpenRouter …).
//!
//! The canonical request already is OpenAI's JSON, so the body is forwarded as is and the
//! answer comes back untouched: a complete body, or the SSE stream frame by frame. The
//! servers that differ (Mistral, vLLM) get a small rewrite of the body first, and only when
//! it holds something to change (`compat`).
//!
//! Azure OpenAI (`azure/…`) is the same API at another address: the deployment name and
//! `api-version` go in the URL, and the key in an `api-key` header, or an Entra ID token
//! (fixed, or obtained with client credentials) as a bearer.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use tollgate_domain::config::DEFAULT_AZURE_API_VERSION;
use tollgate_domain::provider_catalog::WireFormat;
use tollgate_domain::{Deployment, Secret};

use crate::entra::EntraTokens;
use crate::{HttpClient, ProviderError, UpstreamRequest, UpstreamResponse, compat, transport};

pub struct OpenAiProvider {
    client: HttpClient,
    entra: EntraTokens,
}

impl OpenAiProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { entra: EntraTokens::new(client.clone()), client }
    }
}

#[async_trait::async_trait]
impl crate::Provider for OpenAiProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let entra_token = match &deployment.entra {
            Some(credentials) if deployment.api_key.is_none() => Some(self.entra.token(credentials).await?),
            _ => None,
        };
        // Servers that differ from OpenAI (Mistral, vLLM) get their few rewrites; every other
        // body goes as the client sent it.
        let body = compat::rewrite(deployment.provider_prefix(), request.endpoint, request.body)?;
        let upstream = build_request(deployment, request.endpoint.path(), body, entra_token.as_ref())?;
        transport::exchange(&self.client, deployment, upstream, request.stream, upstream_error).await
    }
}

fn build_request(
    deployment: &Deployment,
    path: &str,
    body: Bytes,
    entra_token: Option<&Secret>,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let api_base = deployment.api_base.as_deref().unwrap_or_default();
    let azure = deployment.wire() == Some(WireFormat::AzureOpenAi);
    let url = if azure {
        format!(
            "{api_base}/openai/deployments/{}{path}?api-version={}",
            deployment.upstream_model,
            deployment.api_version.as_deref().unwrap_or(DEFAULT_AZURE_API_VERSION)
        )
    } else {
        format!("{api_base}{path}")
    };
    let mut builder =
        http::Request::post(url).header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let bearer = |token: &str| transport::secret_header(&format!("Bearer {token}"), deployment);
    match (&deployment.api_key, azure) {
        (Some(key), true) => {
            builder = builder.header("api-key", transport::secret_header(key.expose(), deployment)?)
        }
        (Some(key), false) => builder = builder.header(AUTHORIZATION, bearer(key.expose())?),
        (None, _) => {
            if let Some(token) = deployment.azure_ad_token.as_ref().or(entra_token) {
                builder = builder.header(AUTHORIZATION, bearer(token.expose())?);
            }
        }
    }
    if let Some(organization) = &deployment.organization {
        builder = builder.header("openai-organization", organization.as_str());
    }
    transport::with_extra_headers(builder, deployment)?.body(Full::new(body)).map_err(|e| {
        ProviderError::BadRequest(format!(
            "cannot build the upstream request for '{}': {e}",
            deployment.model_name
        ))
    })
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
    let message = message.unwrap_or_else(|| transport::quote_body(status, body));
    let redact = |text: String| transport::redact(deployment, text);
    ProviderError::Upstream {
        status,
        message: redact(message),
        error_type,
        param: param.map(redact),
        code: code.filter(|c| c.parse::<u16>().is_err() || c != &status.to_string()).map(redact),
        retry_after: None,
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
        let request =
            build_request(&deployment(), "/chat/completions", Bytes::from_static(b"{}"), None).unwrap();
        assert_eq!(request.uri(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(request.headers()["authorization"], "Bearer sk-secret-123");
        assert!(request.headers()["authorization"].is_sensitive());
        assert_eq!(request.headers()["openai-organization"], "org-1");
        assert_eq!(request.headers()["x-team"], "a");
    }

    #[test]
    fn azure_puts_deployment_and_version_in_the_url_and_the_key_in_api_key() {
        let config = |params: &str| {
            GatewayConfig::from_yaml(
                &format!("model_list:\n  - model_name: gp\n    litellm_params: {{model: azure/prod-4o, api_base: 'https://r.openai.azure.com', api_version: 2024-06-01{params}}}\n"),
                &HashMap::new(),
            )
            .unwrap()
            .deployments
            .remove(0)
        };
        let request = build_request(&config(", api_key: az-key"), "/embeddings", Bytes::new(), None).unwrap();
        assert_eq!(
            request.uri(),
            "https://r.openai.azure.com/openai/deployments/prod-4o/embeddings?api-version=2024-06-01"
        );
        assert_eq!(request.headers()["api-key"], "az-key");
        assert!(!request.headers().contains_key("authorization"));
        let request =
            build_request(&config(", azure_ad_token: ad-tok"), "/chat/completions", Bytes::new(), None)
                .unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer ad-tok");
        let entra = config(", tenant_id: t, client_id: c, client_secret: s");
        let token = Secret::new("fetched");
        let request = build_request(&entra, "/chat/completions", Bytes::new(), Some(&token)).unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer fetched");
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
