//! Ollama's native API (`ollama_chat/…` and `ollama/…` models), spoken as LiteLLM speaks it:
//! `ollama_chat/` chat goes to `POST /api/chat`, `ollama/` chat to `POST /api/generate`
//! with the messages rendered into one prompt, legacy completions to `/api/generate`, and
//! embeddings of either to `POST /api/embed`. Streams are NDJSON, one JSON object per line,
//! the last with `done: true`, translated into OpenAI's SSE chunks as lines arrive.
//!
//! Request: OpenAI's sampling parameters go in `options` (`max_tokens` is `num_predict`),
//! with Ollama's own (`num_ctx`, `keep_alive`, `think`, …) from the deployment's
//! `litellm_params` or the request; `response_format` is `format` (`json` or the schema);
//! `reasoning_effort` is `think`; tools are sent as they are and tool call arguments as
//! objects; images go as base64 in `images`. See `request`.
//!
//! Errors are Ollama's `{"error": "text"}` with a status: a model that is not pulled is a
//! 404 with the code `model_not_found`.

mod answer;
pub(crate) mod request;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate_domain::{Deployment, Endpoint};

use self::answer::Shape;
use crate::ndjson::NdjsonStream;
use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse, transport};

pub struct OllamaProvider {
    client: HttpClient,
}

impl OllamaProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[async_trait::async_trait]
impl crate::Provider for OllamaProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let openai: Value =
            serde_json::from_slice(&request.body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
        let model = openai.get("model").and_then(Value::as_str).ok_or_else(|| bad("missing `model`"))?;
        let params = &deployment.provider_params;
        let stream = request.stream && request.endpoint != Endpoint::Embeddings;
        let (path, body, shape) = match request.endpoint {
            Endpoint::Rerank => return Err(bad("rerank is not supported by ollama models")),
            Endpoint::ChatCompletions if deployment.provider_prefix() == "ollama_chat" => {
                ("/api/chat", request::chat(&openai, model, stream, params)?, Shape::Chat)
            }
            Endpoint::ChatCompletions => (
                "/api/generate",
                request::generate_from_chat(&openai, model, stream, params)?,
                Shape::GenerateAsChat,
            ),
            Endpoint::Completions => (
                "/api/generate",
                request::generate_from_prompt(&openai, model, stream, params)?,
                Shape::Completion,
            ),
            Endpoint::Embeddings => {
                let body = request::embed(&openai, model, params)?;
                let upstream = build_request(deployment, "/api/embed", body)?;
                let response =
                    transport::exchange(&self.client, deployment, upstream, false, read_error).await?;
                let answer = read_json(response.body)?;
                let list = answer::embeddings(&answer, model)?;
                return Ok(UpstreamResponse {
                    headers: response.headers,
                    body: UpstreamBody::Complete(Bytes::from(list.to_string())),
                });
            }
        };
        let upstream = build_request(deployment, path, body)?;
        let response = transport::exchange(&self.client, deployment, upstream, stream, read_error).await?;
        let body = match response.body {
            UpstreamBody::Stream(lines) => {
                let include_usage =
                    openai.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
                let translator = answer::Translator::new(shape, model, include_usage, unix_now());
                UpstreamBody::Stream(NdjsonStream::new(lines, translator).boxed())
            }
            complete => {
                let answer = read_json(complete)?;
                UpstreamBody::Complete(Bytes::from(
                    answer::complete(&answer, shape, model, unix_now())?.to_string(),
                ))
            }
        };
        Ok(UpstreamResponse { headers: response.headers, body })
    }
}

fn read_json(body: UpstreamBody) -> Result<Value, ProviderError> {
    let UpstreamBody::Complete(bytes) = body else {
        return Err(ProviderError::Protocol("ollama streamed an answer that was asked for whole".into()));
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ProviderError::Protocol(format!("ollama answered with invalid JSON: {e}")))
}

/// The server's root: `api_base` without an endpoint path LiteLLM lets it end in
/// (`…/api/chat`, `…/api/generate`, `…/api/embed`), so one base serves every endpoint.
fn root(api_base: &str) -> &str {
    let base = api_base.trim_end_matches('/');
    ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api"]
        .iter()
        .find_map(|suffix| base.strip_suffix(suffix))
        .unwrap_or(base)
}

fn build_request(
    deployment: &Deployment,
    path: &str,
    body: Value,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let url = format!("{}{path}", root(deployment.api_base.as_deref().unwrap_or_default()));
    let mut builder =
        http::Request::post(url).header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A local Ollama needs no key; one behind a proxy or Ollama's cloud takes a bearer token.
    if let Some(key) = &deployment.api_key {
        builder = builder.header(
            AUTHORIZATION,
            transport::secret_header(&format!("Bearer {}", key.expose()), deployment)?,
        );
    }
    transport::with_extra_headers(builder, deployment)?
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| bad(format!("cannot build the request for '{}': {e}", deployment.model_name)))
}

/// Ollama's `{"error": "text"}` (or a proxy's body) as an error. A model Ollama does not
/// have is a 404 with OpenAI's code `model_not_found`.
pub(crate) fn read_error(status: u16, body: &[u8], deployment: &Deployment) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let message = match json.as_ref().and_then(|j| j.get("error")) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Object(error)) => error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| transport::quote_body(status, body), str::to_owned),
        _ => transport::quote_body(status, body),
    };
    let code = (status == 404 && message.contains("not found")).then(|| "model_not_found".to_owned());
    ProviderError::Upstream {
        status,
        message: transport::redact(deployment, message),
        error_type: None,
        param: None,
        code,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(params: &str) -> Deployment {
        tollgate_domain::GatewayConfig::from_yaml(
            &format!("model_list:\n  - model_name: l\n    litellm_params: {{model: ollama_chat/llama3.1{params}}}\n"),
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    #[test]
    fn urls_keep_one_root_and_a_key_is_a_bearer() {
        assert_eq!(root("http://localhost:11434"), "http://localhost:11434");
        assert_eq!(root("http://h:1/api/chat"), "http://h:1");
        assert_eq!(root("http://h:1/proxy/api/generate/"), "http://h:1/proxy");
        let request = build_request(&deployment(""), "/api/chat", serde_json::json!({})).unwrap();
        assert_eq!(request.uri(), "http://localhost:11434/api/chat");
        assert!(!request.headers().contains_key("authorization"));
        let request = build_request(
            &deployment(", api_key: ok-123, api_base: 'https://o.example/api/chat'"),
            "/api/embed",
            serde_json::json!({}),
        )
        .unwrap();
        assert_eq!(request.uri(), "https://o.example/api/embed");
        assert_eq!(request.headers()["authorization"], "Bearer ok-123");
        assert!(request.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn errors_read_ollamas_shape_and_name_a_missing_model() {
        let d = deployment(", api_key: ok-123");
        let read = |status, body: &str| match read_error(status, body.as_bytes(), &d) {
            ProviderError::Upstream { status, message, code, .. } => (status, message, code),
            other => panic!("{other:?}"),
        };
        let (status, message, code) =
            read(404, r#"{"error":"model \"llama9\" not found, try pulling it first"}"#);
        assert_eq!((status, code.as_deref()), (404, Some("model_not_found")));
        assert_eq!(message, "model \"llama9\" not found, try pulling it first");
        assert_eq!(
            read(400, r#"{"error":"registry.ollama.ai/library/gemma:2b does not support tools"}"#).2,
            None
        );
        assert_eq!(read(500, r#"{"error":"key ok-123 rejected"}"#).1, "key [redacted] rejected");
        assert_eq!(read(502, "Bad Gateway").1, "Bad Gateway");
    }
}
