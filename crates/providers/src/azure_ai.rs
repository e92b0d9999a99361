//! Azure AI Foundry (`azure_ai/…` models): the serverless and Foundry model endpoints that
//! speak OpenAI's chat and embeddings API, and Claude models, which Foundry serves through
//! Anthropic's Messages API, as LiteLLM calls them.
//!
//! OpenAI-compatible models: the body is forwarded as it is to `{api_base}/chat/completions`
//! (`/embeddings`), or under `/models/` on a `*.services.ai.azure.com` resource, whose
//! model-inference route also needs an `api-version` (`api_version`, else the one in
//! `api_base`'s query, else `2024-05-01-preview`). A path `api_base` already ends in is not
//! added twice. The key goes in `api-key` on Azure's own hosts (`*.services.ai.azure.com`,
//! `*.openai.azure.com`) and as a bearer token elsewhere (serverless `*.models.ai.azure.com`).
//!
//! Claude models (a model name containing `claude`): the Anthropic translation, sent to
//! `{resource}/anthropic/v1/messages` with the key in `api-key`.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use serde_json::Value;
use tollgate_domain::{Deployment, Endpoint};

use crate::{HttpClient, ProviderError, UpstreamRequest, UpstreamResponse, anthropic, openai, transport};

/// The model-inference API version used on `*.services.ai.azure.com` when none is given.
pub const DEFAULT_AZURE_AI_API_VERSION: &str = "2024-05-01-preview";

pub struct AzureAiProvider {
    client: HttpClient,
}

impl AzureAiProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }

    /// The input tokens of an Anthropic Messages `request` for a Claude deployment, as
    /// Foundry's `count_tokens` counts them; `None` for other models.
    pub async fn count_tokens(
        &self,
        deployment: &Deployment,
        request: &Value,
    ) -> Result<Option<u64>, ProviderError> {
        let model = request.get("model").and_then(Value::as_str).unwrap_or(&deployment.upstream_model);
        if !is_claude(model) {
            return Ok(None);
        }
        let url =
            format!("{}/count_tokens", anthropic_url(deployment.api_base.as_deref().unwrap_or_default()));
        let upstream = anthropic::messages_api_request(
            deployment,
            url,
            "api-key",
            anthropic::count_tokens_body(request),
        )?;
        anthropic::send_count_tokens(&self.client, deployment, upstream).await.map(Some)
    }
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

fn is_claude(model: &str) -> bool {
    model.to_ascii_lowercase().contains("claude")
}

#[async_trait::async_trait]
impl crate::Provider for AzureAiProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let api_base = deployment.api_base.as_deref().unwrap_or_default();
        let model = tollgate_domain::json::TopLevel::parse(&request.body)
            .ok()
            .and_then(|top| top.decode::<String>("model").ok().flatten())
            .unwrap_or_else(|| deployment.upstream_model.clone());
        if is_claude(&model) {
            if request.endpoint != Endpoint::ChatCompletions {
                return Err(bad(format!(
                    "model '{}' is a Claude model on Azure AI, which serves chat completions only, not {}",
                    deployment.model_name,
                    request.endpoint.path()
                )));
            }
            let openai: Value =
                serde_json::from_slice(&request.body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
            let include_usage =
                openai.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
            let body = Bytes::from(anthropic::to_messages_request(&openai)?.to_string());
            let upstream =
                anthropic::messages_api_request(deployment, anthropic_url(api_base), "api-key", body)?;
            let response = transport::exchange(
                &self.client,
                deployment,
                upstream,
                request.stream,
                anthropic::read_error,
            )
            .await?;
            return anthropic::chat_answer(response, include_usage);
        }
        if request.endpoint == Endpoint::Completions {
            return Err(bad(format!(
                "model '{}' is an Azure AI model, which serves chat completions and embeddings, not /completions",
                deployment.model_name
            )));
        }
        let url = openai_url(api_base, request.endpoint.path(), deployment.api_version.as_deref());
        let upstream = build_request(deployment, url, request.body)?;
        transport::exchange(&self.client, deployment, upstream, request.stream, openai::upstream_error).await
    }
}

/// `{resource}/anthropic/v1/messages`: `api_base` may be the resource, end in `/anthropic`,
/// or be the full messages URL, as LiteLLM accepts all three.
fn anthropic_url(api_base: &str) -> String {
    let base = api_base.trim_end_matches('/');
    if base.ends_with("/v1/messages") {
        return base.to_owned();
    }
    let resource = match base.find("/anthropic") {
        Some(at) => &base[..at],
        None => base,
    };
    format!("{resource}/anthropic/v1/messages")
}

/// Whether the host is one of Azure's own, which take the key as `api-key`.
fn azure_host(api_base: &str) -> bool {
    let rest = api_base.split_once("://").map_or(api_base, |(_, rest)| rest);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    host.ends_with(".services.ai.azure.com") || host.ends_with(".openai.azure.com")
}

/// `path` under `api_base`, without repeating segments `api_base` already ends in (a base
/// ending in `/models` gets `/models/chat/completions`, not `/models/models/…`), with the
/// base's query kept and `api-version` added where the route needs it.
fn openai_url(api_base: &str, path: &str, api_version: Option<&str>) -> String {
    let (base, query) = api_base.split_once('?').unwrap_or((api_base, ""));
    let base = base.trim_end_matches('/');
    let foundry = base.contains(".services.ai.azure.com");
    let wanted = if foundry { format!("/models{path}") } else { path.to_owned() };
    let (origin, base_path) = match base.split_once("://") {
        Some((scheme, rest)) => match rest.find('/') {
            Some(at) => (format!("{scheme}://{}", &rest[..at]), &rest[at..]),
            None => (base.to_owned(), ""),
        },
        None => (base.to_owned(), ""),
    };
    let base_segments: Vec<&str> = base_path.split('/').filter(|s| !s.is_empty()).collect();
    let wanted_segments: Vec<&str> = wanted.split('/').filter(|s| !s.is_empty()).collect();
    // The longest tail of the base that the wanted path starts with is shared, not repeated.
    let overlap = (0..=base_segments.len().min(wanted_segments.len()))
        .rev()
        .find(|&n| base_segments[base_segments.len() - n..] == wanted_segments[..n])
        .unwrap_or(0);
    let mut url = origin;
    for segment in base_segments.iter().chain(&wanted_segments[overlap..]) {
        url.push('/');
        url.push_str(segment);
    }
    let mut params: Vec<String> = query.split('&').filter(|p| !p.is_empty()).map(str::to_owned).collect();
    let has_version = params.iter().any(|p| p.starts_with("api-version="));
    match api_version {
        Some(version) if !has_version => params.push(format!("api-version={version}")),
        None if foundry && !has_version => params.push(format!("api-version={DEFAULT_AZURE_AI_API_VERSION}")),
        _ => {}
    }
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params.join("&"));
    }
    url
}

fn build_request(
    deployment: &Deployment,
    url: String,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let mut builder =
        http::Request::post(url).header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &deployment.api_key {
        builder = if azure_host(deployment.api_base.as_deref().unwrap_or_default()) {
            builder.header("api-key", transport::secret_header(key.expose(), deployment)?)
        } else {
            builder.header(
                AUTHORIZATION,
                transport::secret_header(&format!("Bearer {}", key.expose()), deployment)?,
            )
        };
    }
    transport::with_extra_headers(builder, deployment)?
        .body(Full::new(body))
        .map_err(|e| bad(format!("cannot build the request for '{}': {e}", deployment.model_name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_litellms_rules() {
        assert_eq!(
            openai_url("https://r.services.ai.azure.com", "/chat/completions", None),
            "https://r.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"
        );
        assert_eq!(
            openai_url("https://r.services.ai.azure.com/models", "/embeddings", Some("2025-01-01")),
            "https://r.services.ai.azure.com/models/embeddings?api-version=2025-01-01"
        );
        assert_eq!(
            openai_url(
                "https://r.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview",
                "/chat/completions",
                Some("2099-01-01")
            ),
            "https://r.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview",
            "a version in api_base wins"
        );
        assert_eq!(
            openai_url("https://Mistral-large.eastus2.models.ai.azure.com", "/chat/completions", None),
            "https://Mistral-large.eastus2.models.ai.azure.com/chat/completions"
        );
        assert_eq!(
            openai_url("http://127.0.0.1:9/v1", "/embeddings", None),
            "http://127.0.0.1:9/v1/embeddings"
        );
        assert_eq!(
            anthropic_url("https://r.services.ai.azure.com"),
            "https://r.services.ai.azure.com/anthropic/v1/messages"
        );
        assert_eq!(
            anthropic_url("https://r.services.ai.azure.com/anthropic/"),
            "https://r.services.ai.azure.com/anthropic/v1/messages"
        );
        assert_eq!(anthropic_url("http://h:1/anthropic/v1/messages"), "http://h:1/anthropic/v1/messages");
    }

    #[test]
    fn azure_hosts_take_api_key_and_others_a_bearer() {
        assert!(azure_host("https://r.services.ai.azure.com/models"));
        assert!(azure_host("https://R.OpenAI.Azure.com:443"));
        assert!(!azure_host("https://m.eastus2.models.ai.azure.com"));
        assert!(!azure_host("http://127.0.0.1:9"));
        let deployment = |base: &str| {
            tollgate_domain::GatewayConfig::from_yaml(
                &format!("model_list:\n  - model_name: a\n    litellm_params: {{model: azure_ai/m, api_key: az-key, api_base: '{base}'}}\n"),
                &std::collections::HashMap::new(),
            )
            .unwrap()
            .deployments
            .remove(0)
        };
        let foundry = deployment("https://r.services.ai.azure.com");
        let request = build_request(&foundry, "https://x".into(), Bytes::new()).unwrap();
        assert_eq!(request.headers()["api-key"], "az-key");
        assert!(!request.headers().contains_key("authorization"));
        let serverless = deployment("https://m.eastus2.models.ai.azure.com");
        let request = build_request(&serverless, "https://x".into(), Bytes::new()).unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer az-key");
        assert!(is_claude("Claude-Sonnet-4-5") && !is_claude("mistral-large"));
    }
}
