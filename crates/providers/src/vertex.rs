//! Google Cloud's Vertex AI (`vertex_ai/…` models): Gemini models through the publisher's
//! `generateContent` / `streamGenerateContent?alt=sse` and text-embedding models through
//! `predict` (publisher `google`), and Claude models through Anthropic's Messages API
//! wrapped in `rawPredict` / `streamRawPredict` (publisher `anthropic`), all under
//! `{api_base}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}`.
//!
//! The request and answer translations are the `gemini` and `anthropic` adapters' own: Vertex
//! speaks the same JSON (Gemini turns always carry a `role`, which that translation always
//! sets). For Claude the body loses `model` (the URL names it) and gains
//! `anthropic_version: "vertex-2023-10-16"`.
//!
//! Auth is an `Authorization: Bearer` access token: the deployment's `api_key` used as it
//! is, else one from [`GoogleAuth`] (service-account key, gcloud user file, or the metadata
//! server), cached and renewed ahead of expiry; a token Vertex refuses with a 401 is dropped
//! so the next request fetches another.
//!
//! `api_base` may be a host (`http://127.0.0.1:8080`, a Private Service Connect endpoint),
//! which replaces `https://{location}-aiplatform.googleapis.com`, or, as LiteLLM takes it,
//! a full URL up to the model (a proxy such as Cloudflare's AI Gateway), to which
//! `:{method}` is appended.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use serde_json::{Value, json};
use tollgate_domain::deployment::VertexParams;
use tollgate_domain::{Deployment, Endpoint, Secret};

use crate::google_auth::GoogleAuth;
use crate::{
    HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse, anthropic, gemini, transport,
};

/// The `anthropic_version` Vertex requires in a Claude request body.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
/// Most texts Vertex embeds in one `predict` call.
const MAX_EMBEDDING_INSTANCES: usize = 250;

pub struct VertexProvider {
    client: HttpClient,
    auth: GoogleAuth,
}

impl VertexProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { auth: GoogleAuth::new(client.clone()), client }
    }
}

/// Whose API a model is published under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publisher {
    Google,
    Anthropic,
}

impl Publisher {
    fn of(model: &str) -> Result<Self, ProviderError> {
        if model.starts_with("claude") {
            return Ok(Self::Anthropic);
        }
        // Partner models other than Claude speak other APIs (OpenAI-compatible endpoints,
        // Mistral's); sending them Gemini's would only earn a confusing 404.
        const OTHER_PARTNERS: &[&str] =
            &["mistral", "codestral", "jamba", "llama", "meta/", "deepseek", "qwen"];
        if model.contains('/') || OTHER_PARTNERS.iter().any(|p| model.starts_with(p)) {
            return Err(bad(format!(
                "vertex_ai model '{model}' is not supported yet: this build serves Gemini, text-embedding \
                 and Claude models on Vertex AI"
            )));
        }
        Ok(Self::Google)
    }

    fn path(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Anthropic => "anthropic",
        }
    }
}

#[async_trait::async_trait]
impl crate::Provider for VertexProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let vertex = deployment
            .vertex
            .as_ref()
            .ok_or_else(|| bad(format!("model '{}' has no Vertex AI settings", deployment.model_name)))?;
        let openai: Value =
            serde_json::from_slice(&request.body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
        let model =
            openai.get("model").and_then(Value::as_str).ok_or_else(|| bad("missing `model`"))?.to_owned();
        let publisher = Publisher::of(&model)?;
        let include_usage =
            openai.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);

        // Translate before fetching a token, so a bad request costs no token request.
        let (method, body, read_error): (&str, Value, transport::ReadError) =
            match (publisher, request.endpoint) {
                (Publisher::Google, Endpoint::ChatCompletions) => (
                    if request.stream { "streamGenerateContent" } else { "generateContent" },
                    gemini::to_generate_request(&openai)?,
                    gemini::read_error,
                ),
                (Publisher::Google, Endpoint::Embeddings) => {
                    ("predict", to_predict_request(&openai)?, gemini::read_error)
                }
                (Publisher::Anthropic, Endpoint::ChatCompletions) => (
                    if request.stream { "streamRawPredict" } else { "rawPredict" },
                    to_raw_predict_request(&openai)?,
                    read_claude_error,
                ),
                (publisher, other) => {
                    let served = match publisher {
                        Publisher::Google => "chat completions and embeddings",
                        Publisher::Anthropic => "chat completions",
                    };
                    return Err(bad(format!(
                        "model '{}' is a Vertex AI model, which serves {served}, not {}",
                        deployment.model_name,
                        other.path()
                    )));
                }
            };

        let (token, project, fetched) = match &deployment.api_key {
            Some(key) => (key.clone(), vertex.project.clone(), false),
            None => {
                let access = self.auth.access(&vertex.credentials, vertex.project.is_none()).await?;
                (access.token, vertex.project.clone().or(access.project), true)
            }
        };
        let project = project.ok_or_else(|| {
            bad(format!(
                "model '{}' names no Google Cloud project: set vertex_project (or VERTEXAI_PROJECT), or use \
                 credentials that carry one",
                deployment.model_name
            ))
        })?;
        let url = method_url(deployment, vertex, &project, publisher, &model, method, request.stream);
        let upstream = build_request(deployment, url, &token, Bytes::from(body.to_string()))?;
        let stream = request.stream && request.endpoint == Endpoint::ChatCompletions;
        let response = match transport::exchange(&self.client, deployment, upstream, stream, read_error).await
        {
            Err(error @ ProviderError::Upstream { status: 401, .. }) => {
                if fetched {
                    self.auth.forget(&vertex.credentials, &token).await;
                }
                return Err(error);
            }
            other => other?,
        };
        match (publisher, request.endpoint) {
            (Publisher::Google, Endpoint::Embeddings) => {
                let UpstreamBody::Complete(bytes) = response.body else {
                    return Err(ProviderError::Protocol("vertex ai streamed an embeddings answer".into()));
                };
                let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    ProviderError::Protocol(format!("vertex ai answered with invalid JSON: {e}"))
                })?;
                let body = UpstreamBody::Complete(Bytes::from(to_embeddings(&answer, &model)?.to_string()));
                Ok(UpstreamResponse { headers: response.headers, body })
            }
            (Publisher::Google, _) => gemini::chat_answer(response, &model, include_usage),
            (Publisher::Anthropic, _) => anthropic::chat_answer(response, include_usage),
        }
    }
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// Whether `api_base` goes beyond scheme and host: LiteLLM's "everything up to the model"
/// form rather than a replacement host.
fn names_a_path(api_base: &str) -> bool {
    let rest = api_base.split_once("://").map_or(api_base, |(_, rest)| rest);
    rest.split_once('/').is_some_and(|(_, path)| !path.trim_matches('/').is_empty())
}

fn method_url(
    deployment: &Deployment,
    vertex: &VertexParams,
    project: &str,
    publisher: Publisher,
    model: &str,
    method: &str,
    stream: bool,
) -> String {
    let default_base = vertex.default_base();
    let base = deployment.api_base.as_deref().unwrap_or(&default_base).trim_end_matches('/');
    let alt_sse = if stream && method == "streamGenerateContent" { "?alt=sse" } else { "" };
    if names_a_path(base) {
        format!("{base}:{method}{alt_sse}")
    } else {
        format!(
            "{base}/v1/projects/{project}/locations/{}/publishers/{}/models/{model}:{method}{alt_sse}",
            vertex.location,
            publisher.path()
        )
    }
}

fn build_request(
    deployment: &Deployment,
    url: String,
    token: &Secret,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let builder = http::Request::post(url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(AUTHORIZATION, transport::secret_header(&format!("Bearer {}", token.expose()), deployment)?);
    transport::with_extra_headers(builder, deployment)?
        .body(Full::new(body))
        .map_err(|e| bad(format!("cannot build the request for '{}': {e}", deployment.model_name)))
}

/// The Anthropic Messages request as Vertex takes it: no `model` (the URL names it) and
/// Vertex's `anthropic_version` in the body rather than a header.
fn to_raw_predict_request(openai: &Value) -> Result<Value, ProviderError> {
    let mut request = anthropic::to_messages_request(openai)?;
    if let Some(object) = request.as_object_mut() {
        object.remove("model");
        object.insert("anthropic_version".into(), json!(VERTEX_ANTHROPIC_VERSION));
    }
    Ok(request)
}

/// A Claude-on-Vertex error: Anthropic's body when the model refused the request, Google's
/// (`{"error": {"code", "message", "status"}}`) when Vertex itself did (auth, quota).
fn read_claude_error(status: u16, body: &[u8], deployment: &Deployment) -> ProviderError {
    let google = serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|json| json.pointer("/error/status").is_some_and(Value::is_string));
    if google {
        gemini::read_error(status, body, deployment)
    } else {
        anthropic::read_error(status, body, deployment)
    }
}

/// The embeddings request as `predict`: one instance per input text.
fn to_predict_request(openai: &Value) -> Result<Value, ProviderError> {
    let inputs: Vec<&str> = match openai.get("input") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| bad("vertex ai embeddings take `input` as strings, not tokens"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("`input` must be a string or a non-empty array of strings")),
    };
    if inputs.len() > MAX_EMBEDDING_INSTANCES {
        return Err(bad(format!("vertex ai embeds at most {MAX_EMBEDDING_INSTANCES} inputs per request")));
    }
    let instances: Vec<Value> = inputs.into_iter().map(|text| json!({"content": text})).collect();
    let mut request = json!({"instances": instances});
    if let Some(dimensions) = openai.get("dimensions").and_then(Value::as_u64) {
        request["parameters"] = json!({"outputDimensionality": dimensions});
    }
    Ok(request)
}

/// `predict`'s `{"predictions": [{"embeddings": {"values", "statistics": {"token_count"}}}]}`
/// as an OpenAI embedding list, the token counts summed into usage.
fn to_embeddings(answer: &Value, model: &str) -> Result<Value, ProviderError> {
    let predictions = answer
        .get("predictions")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("vertex ai's embeddings answer has no predictions".into()))?;
    let mut tokens = 0;
    let data: Vec<Value> = predictions
        .iter()
        .enumerate()
        .map(|(index, prediction)| {
            tokens += prediction
                .pointer("/embeddings/statistics/token_count")
                .and_then(|count| count.as_u64().or_else(|| count.as_f64().map(|f| f as u64)))
                .unwrap_or(0);
            let values = prediction.pointer("/embeddings/values").cloned().unwrap_or(json!([]));
            json!({"object": "embedding", "index": index, "embedding": values})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(params: &str) -> Deployment {
        tollgate_domain::GatewayConfig::from_yaml(
            &format!("model_list:\n  - model_name: v\n    litellm_params: {{model: vertex_ai/gemini-2.5-flash, {params}}}\n"),
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    fn url(params: &str, publisher: Publisher, model: &str, method: &str, stream: bool) -> String {
        let d = deployment(params);
        let vertex = d.vertex.clone().unwrap();
        method_url(&d, &vertex, "proj", publisher, model, method, stream)
    }

    #[test]
    fn urls_follow_location_api_base_and_publisher() {
        assert_eq!(
            url(
                "vertex_location: europe-west4",
                Publisher::Google,
                "gemini-2.5-flash",
                "generateContent",
                false
            ),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj/locations/europe-west4/publishers/\
             google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            url(
                "vertex_location: global",
                Publisher::Google,
                "gemini-2.5-flash",
                "streamGenerateContent",
                true
            ),
            "https://aiplatform.googleapis.com/v1/projects/proj/locations/global/publishers/google/models/\
             gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            url(
                "api_base: 'http://127.0.0.1:9/'",
                Publisher::Anthropic,
                "claude-sonnet-4@20250514",
                "streamRawPredict",
                true
            ),
            "http://127.0.0.1:9/v1/projects/proj/locations/us-central1/publishers/anthropic/models/\
             claude-sonnet-4@20250514:streamRawPredict"
        );
        // LiteLLM's form: the base already names the model.
        assert_eq!(
            url(
                "api_base: 'https://gw.example/v1/acct/gw/google-vertex-ai/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash'",
                Publisher::Google,
                "gemini-2.5-flash",
                "streamGenerateContent",
                true
            ),
            "https://gw.example/v1/acct/gw/google-vertex-ai/v1/projects/p/locations/l/publishers/google/models/\
             gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn the_token_is_a_sensitive_bearer_header() {
        let d = deployment("extra_headers: {x-goog-user-project: billing}");
        let request =
            build_request(&d, "http://h/x".into(), &Secret::new("ya29.token"), Bytes::new()).unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer ya29.token");
        assert!(request.headers()["authorization"].is_sensitive());
        assert_eq!(request.headers()["x-goog-user-project"], "billing");
    }

    #[test]
    fn models_pick_their_publisher() {
        assert_eq!(Publisher::of("gemini-2.5-pro").unwrap(), Publisher::Google);
        assert_eq!(Publisher::of("text-embedding-005").unwrap(), Publisher::Google);
        assert_eq!(Publisher::of("claude-opus-4-1@20250805").unwrap(), Publisher::Anthropic);
        assert!(Publisher::of("meta/llama-4-maverick-17b-128e-instruct-maas").is_err());
        assert!(Publisher::of("mistral-large-2411").is_err());
    }

    #[test]
    fn claude_bodies_drop_model_and_carry_vertex_s_version() {
        let body = to_raw_predict_request(&json!({
            "model": "claude-sonnet-4@20250514",
            "stream": true,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        assert!(body.get("model").is_none());
        assert_eq!(body["anthropic_version"], VERTEX_ANTHROPIC_VERSION);
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn claude_errors_are_read_in_either_shape() {
        let d = deployment("api_key: ya29.secret-token");
        let ProviderError::Upstream { status, error_type, .. } = read_claude_error(
            429,
            br#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model","status":"RESOURCE_EXHAUSTED"}}"#,
            &d,
        ) else {
            panic!()
        };
        assert_eq!((status, error_type.as_deref()), (429, Some("RESOURCE_EXHAUSTED")));
        let ProviderError::Upstream { status, code, .. } = read_claude_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            &d,
        ) else {
            panic!()
        };
        assert_eq!((status, code.as_deref()), (503, Some("overloaded")));
    }

    #[test]
    fn embeddings_go_through_predict() {
        let request = to_predict_request(&json!({"input": ["a", "b"], "dimensions": 256})).unwrap();
        assert_eq!(
            request,
            json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 256}})
        );
        assert!(to_predict_request(&json!({"input": [[1, 2]]})).is_err());
        assert!(to_predict_request(&json!({"input": vec!["x"; MAX_EMBEDDING_INSTANCES + 1]})).is_err());
        let answer = json!({"predictions": [
            {"embeddings": {"values": [0.1, 0.2], "statistics": {"token_count": 3, "truncated": false}}},
            {"embeddings": {"values": [0.3], "statistics": {"token_count": 4.0, "truncated": false}}}
        ], "metadata": {"billableCharacterCount": 2}});
        let out = to_embeddings(&answer, "text-embedding-005").unwrap();
        assert_eq!(out["data"][1], json!({"object": "embedding", "index": 1, "embedding": [0.3]}));
        assert_eq!(out["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
    }

    #[test]
    fn a_path_in_api_base_is_litellm_s_full_form() {
        assert!(!names_a_path("http://127.0.0.1:8080"));
        assert!(!names_a_path("https://psc.example/"));
        assert!(names_a_path("https://gw.example/v1/projects/p/locations/l/publishers/google/models/m"));
    }
}
