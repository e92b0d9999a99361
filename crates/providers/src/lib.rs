//! Upstream adapters: one module per provider API, all behind the [`Provider`] trait.
//!
//! The gateway's canonical request is OpenAI's JSON (chat, completions, embeddings). An
//! adapter takes that body, already carrying the upstream model name, and returns the
//! upstream's answer in OpenAI's wire format: a whole body, or a stream of SSE bytes
//! relayed as they arrive. Adapters whose upstream speaks OpenAI forward bytes untouched;
//! adapters for other wire formats translate at this boundary and nowhere else.
//!
//! Providers never touch the database, the router or the client connection.

mod anthropic;
mod bedrock;
mod body;
mod client;
mod entra;
mod error;
mod fake;
mod gemini;
mod google_auth;
mod openai;
mod transport;
mod vertex;

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::BoxBody;
use tollgate_domain::provider_catalog::WireFormat;
use tollgate_domain::{Deployment, Endpoint};

pub use anthropic::AnthropicProvider;
pub use bedrock::BedrockProvider;
pub use client::{HttpClient, build_http_client};
pub use error::ProviderError;
pub use fake::FakeProvider;
pub use gemini::GeminiProvider;
pub use openai::OpenAiProvider;
pub use transport::with_traceparent;
pub use vertex::VertexProvider;

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
    fake: Arc<FakeProvider>,
}

impl Providers {
    pub fn new(client: HttpClient) -> Self {
        Self {
            openai: Arc::new(OpenAiProvider::new(client.clone())),
            anthropic: Arc::new(AnthropicProvider::new(client.clone())),
            gemini: Arc::new(GeminiProvider::new(client.clone())),
            bedrock: Arc::new(BedrockProvider::new(client.clone())),
            vertex: Arc::new(VertexProvider::new(client)),
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
            Some(WireFormat::Fake) => Ok(self.fake.as_ref()),
            None => Err(ProviderError::Unsupported {
                provider: deployment.provider_prefix().to_owned(),
                model_name: deployment.model_name.clone(),
            }),
        }
    }
}
