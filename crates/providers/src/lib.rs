//! Upstream adapters: one module per provider API, all behind the [`Provider`] trait.
//!
//! The gateway's canonical request is OpenAI's JSON (chat, completions, embeddings), or
//! LiteLLM's rerank body (Cohere's shape). An
//! adapter takes that body, already carrying the upstream model name, and returns the
//! upstream's answer in OpenAI's wire format: a whole body, or a stream of SSE bytes
//! relayed as they arrive. Adapters whose upstream speaks OpenAI forward bytes untouched;
//! adapters for other wire formats translate at this boundary and nowhere else.
//!
//! Providers never touch the database, the router or the client connection.

mod anthropic;
mod azure_ai;
mod bearer;
mod bedrock;
mod body;
mod client;
mod cohere;
mod compat;
mod entra;
mod error;
mod fake;
mod gemini;
mod google_auth;
mod jina;
mod ndjson;
mod ollama;
mod openai;
mod retrieval;
mod transport;
mod vertex;
mod voyage;

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::BoxBody;
use tollgate_domain::provider_catalog::WireFormat;
use tollgate_domain::{Deployment, Endpoint};

pub use anthropic::AnthropicProvider;
pub use azure_ai::AzureAiProvider;
pub use bedrock::BedrockProvider;
pub use client::{HttpClient, build_http_client};
pub use cohere::CohereProvider;
pub use error::ProviderError;
pub use fake::FakeProvider;
pub use gemini::GeminiProvider;
pub use jina::JinaProvider;
pub use ollama::OllamaProvider;
pub use openai::OpenAiProvider;
pub use transport::with_traceparent;
pub use vertex::VertexProvider;
pub use voyage::VoyageProvider;

/// One call to a deployment.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    pub endpoint: Endpoint,
    pub deployment: &'a Deployment,
    /// OpenAI-shaped JSON with the upstream model name already in `model`.
    pub body: Bytes,
    pub stream: bool,
}

/// A body whose frames arrive over time: SSE bytes, as the upstream sent them.
pub type StreamBody = BoxBody<Bytes, ProviderError>;

pub enum UpstreamBody {
    Complete(Bytes),
    Stream(StreamBody),
}

/// A successful upstream answer. Failures are [`ProviderError`]s.
pub struct UpstreamResponse {
    /// The upstream's response headers, for the `llm_provider-` echo.
    pub headers: HeaderMap,
    pub body: UpstreamBody,
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// Calls the deployment. A non-streaming call completes (or fails) within the
    /// deployment's `timeout`; a streaming one gets its first byte within `stream_timeout`
    /// and fails if any later gap between chunks exceeds it.
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError>;
}

/// One adapter per wire format, sharing one HTTP client.
#[derive(Clone)]
pub struct Providers {
    openai: Arc<OpenAiProvider>,
    anthropic: Arc<AnthropicProvider>,
    gemini: Arc<GeminiProvider>,
    bedrock: Arc<BedrockProvider>,
    vertex: Arc<VertexProvider>,
    ollama: Arc<OllamaProvider>,
    azure_ai: Arc<AzureAiProvider>,
    cohere: Arc<CohereProvider>,
    voyage: Arc<VoyageProvider>,
    jina: Arc<JinaProvider>,
    fake: Arc<FakeProvider>,
}

impl Providers {
    pub fn new(client: HttpClient) -> Self {
        Self {
            openai: Arc::new(OpenAiProvider::new(client.clone())),
            anthropic: Arc::new(AnthropicProvider::new(client.clone())),
            gemini: Arc::new(GeminiProvider::new(client.clone())),
            bedrock: Arc::new(BedrockProvider::new(client.clone())),
            cohere: Arc::new(CohereProvider::new(client.clone())),
            voyage: Arc::new(VoyageProvider::new(client.clone())),
            jina: Arc::new(JinaProvider::new(client.clone())),
            vertex: Arc::new(VertexProvider::new(client.clone())),
            ollama: Arc::new(OllamaProvider::new(client.clone())),
            azure_ai: Arc::new(AzureAiProvider::new(client)),
            fake: Arc::new(FakeProvider),
        }
    }

    /// The adapter for a deployment, or an error naming a provider this build lacks.
    pub fn for_deployment(&self, deployment: &Deployment) -> Result<&dyn Provider, ProviderError> {
        match deployment.wire() {
            Some(WireFormat::OpenAi | WireFormat::AzureOpenAi) => Ok(self.openai.as_ref()),
            Some(WireFormat::Anthropic) => Ok(self.anthropic.as_ref()),
            Some(WireFormat::Gemini) => Ok(self.gemini.as_ref()),
            Some(WireFormat::Bedrock) => Ok(self.bedrock.as_ref()),
            Some(WireFormat::Vertex) => Ok(self.vertex.as_ref()),
            Some(WireFormat::Ollama) => Ok(self.ollama.as_ref()),
            Some(WireFormat::AzureAi) => Ok(self.azure_ai.as_ref()),
            Some(WireFormat::Cohere) => Ok(self.cohere.as_ref()),
            Some(WireFormat::Voyage) => Ok(self.voyage.as_ref()),
            Some(WireFormat::JinaAi) => Ok(self.jina.as_ref()),
            Some(WireFormat::Fake) => Ok(self.fake.as_ref()),
            None => Err(ProviderError::Unsupported {
                provider: deployment.provider_prefix().to_owned(),
                model_name: deployment.model_name.clone(),
            }),
        }
    }

    /// The input tokens of an Anthropic Messages `request` (its `model` the deployment's
    /// upstream model) as the deployment's provider counts them, for providers with a
    /// counting endpoint (Anthropic, Claude on Azure AI); `None` for the others, whose
    /// callers count with the gateway's tokenizer.
    pub async fn count_tokens(
        &self,
        deployment: &Deployment,
        request: &serde_json::Value,
    ) -> Result<Option<u64>, ProviderError> {
        match deployment.wire() {
            Some(WireFormat::Anthropic) => self.anthropic.count_tokens(deployment, request).await.map(Some),
            Some(WireFormat::AzureAi) => self.azure_ai.count_tokens(deployment, request).await,
            _ => Ok(None),
        }
    }
}

/// The OpenAI request parameters a deployment's provider has no equivalent for, which the
/// adapter refuses with a 400 unless they hold their neutral value; LiteLLM's `drop_params`
/// drops them instead (the gateway takes them out of the body before the adapter sees it).
pub fn unsupported_params(deployment: &Deployment) -> Vec<&'static str> {
    let claude = deployment.upstream_model.contains("claude");
    match deployment.wire() {
        Some(WireFormat::Anthropic) => anthropic::UNSUPPORTED_PARAMS.to_vec(),
        Some(WireFormat::Vertex | WireFormat::AzureAi) if claude => anthropic::UNSUPPORTED_PARAMS.to_vec(),
        Some(WireFormat::Gemini | WireFormat::Vertex) => gemini::UNSUPPORTED_PARAMS.to_vec(),
        Some(WireFormat::Bedrock) => {
            bedrock::converse::unsupported_params().iter().map(|(name, _)| *name).collect()
        }
        Some(WireFormat::Cohere) => {
            cohere::chat::unsupported_params().iter().map(|(name, _)| *name).collect()
        }
        Some(WireFormat::Ollama) => ollama::request::UNSUPPORTED_PARAMS.to_vec(),
        Some(WireFormat::OpenAi) if deployment.provider_prefix() == "mistral" => {
            compat::MISTRAL_UNSUPPORTED.to_vec()
        }
        _ => Vec::new(),
    }
}
