//! A deployment: one entry of `model_list`, resolved into everything needed to call it.

use std::time::Duration;

use crate::Secret;
use crate::provider_catalog::WireFormat;

/// The endpoints a deployment can serve: OpenAI's three, and LiteLLM's rerank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// LiteLLM's `/rerank` (Cohere's request and answer shape), served by rerank models.
    Rerank,
}

impl Endpoint {
    /// The path below the API base, as OpenAI names it.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Rerank => "/rerank",
        }
    }
}

/// How a deployment is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// A provider this build can call, with its wire format.
    Supported { prefix: &'static str, wire: WireFormat },
    /// A provider LiteLLM knows that this build does not speak yet; calling it is a clear
    /// error, never a guess.
    NotYetSupported { prefix: String },
}

#[derive(Debug, Clone)]
pub struct Deployment {
    /// `model_info.id` when given, else a stable id derived from the entry.
    pub id: String,
    /// The alias clients ask for (`model_name`): the model group. May hold a `*` wildcard.
    pub model_name: String,
    pub provider: ProviderKind,
    /// The model name sent upstream (`litellm_params.model` without its prefix). May end in
    /// `*`, replaced by the part of the alias the wildcard matched.
    pub upstream_model: String,
    /// Base URL without a trailing slash; `None` only for the fake provider.
    pub api_base: Option<String>,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    pub organization: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Deadline for a whole non-streaming call.
    pub timeout: Duration,
    /// Deadline for a streaming call's first byte, and for each gap between chunks.
    pub stream_timeout: Duration,
    /// Extra attempts on this deployment after a retryable failure.
    pub max_retries: u32,
    /// Share of the group's traffic under simple-shuffle (`weight`, else `rpm`, else `tpm`).
    pub weight: Option<f64>,
    /// Priority within the group: the lowest `order` with an available deployment serves.
    pub order: Option<u32>,
    pub extra_headers: Vec<(String, String)>,
    /// LiteLLM's `drop_params`: request parameters this provider lacks are dropped instead of
    /// refused with a 400 (`litellm_params.drop_params`, else `litellm_settings.drop_params`).
    pub drop_params: bool,
    /// LiteLLM's `additional_drop_params`: parameters always dropped for this deployment.
    pub additional_drop_params: Vec<String>,
    /// LiteLLM's `mock_response`: answer with this text instead of calling the provider.
    pub mock_response: Option<String>,
    /// `model_info` as written, reported by `/model/info`.
    pub model_info: serde_json::Map<String, serde_json::Value>,
    /// Azure only: a fixed Entra ID bearer token (`azure_ad_token`), used when no `api_key`.
    pub azure_ad_token: Option<Secret>,
    /// Azure only: client credentials to obtain Entra ID tokens, used when neither `api_key`
    /// nor `azure_ad_token` is given.
    pub entra: Option<EntraCredentials>,
    /// Vertex AI only: project, location and Google credentials.
    pub vertex: Option<VertexParams>,
    /// What its tokens cost; `None` when neither the pricing table nor the config knows.
    pub pricing: Option<crate::pricing::Pricing>,
    /// Bedrock only: the region and how requests are authenticated.
    pub aws: Option<AwsSettings>,
    /// Provider-specific `litellm_params` sent upstream with every call unless the request
    /// sets them (Ollama's `num_ctx`, `keep_alive`, …; see `provider_catalog::provider_params`).
    pub provider_params: serde_json::Map<String, serde_json::Value>,
}

/// Where a Bedrock deployment lives and how its requests are authenticated.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// The region signed into SigV4's scope (`us-east-1`).
    pub region: String,
    pub auth: AwsAuth,
}

/// A Bedrock deployment's credentials.
#[derive(Debug, Clone)]
pub enum AwsAuth {
    /// A Bedrock API key (`api_key` or `AWS_BEARER_TOKEN_BEDROCK`), sent as
    /// `Authorization: Bearer`.
    BearerToken(Secret),
    /// Access keys (and a session token for temporary ones), for SigV4 signatures.
    Keys { access_key_id: String, secret_access_key: Secret, session_token: Option<Secret> },
    /// Temporary keys from STS `AssumeRoleWithWebIdentity`, as EKS service accounts (IRSA)
    /// provide: the token is read from a file that the platform rotates.
    WebIdentity(WebIdentity),
}

/// Where web identity credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// The role to assume (`AWS_ROLE_ARN`).
    pub role_arn: String,
    /// The file holding the OIDC token (`AWS_WEB_IDENTITY_TOKEN_FILE`), read at each renewal.
    pub token_file: String,
    /// `RoleSessionName` (`AWS_ROLE_SESSION_NAME`, else `tollgate`).
    pub session_name: String,
    /// STS's base URL, without a trailing slash (`aws_sts_endpoint`, `AWS_ENDPOINT_URL_STS`,
    /// else `https://sts.{region}.amazonaws.com`).
    pub sts_endpoint: String,
}

/// Microsoft Entra ID client credentials (`tenant_id`, `client_id`, `client_secret`).
#[derive(Debug, Clone)]
pub struct EntraCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The token's scope; `https://cognitiveservices.azure.com/.default` for Azure OpenAI.
    pub scope: String,
    /// The identity platform's base URL (`AZURE_AUTHORITY_HOST`), without a trailing slash.
    pub authority: String,
}

/// Where and as whom a `vertex_ai/` deployment calls Google Cloud.
#[derive(Debug, Clone)]
pub struct VertexParams {
    /// `vertex_project`, else `VERTEXAI_PROJECT`, else `GOOGLE_CLOUD_PROJECT`; `None` leaves
    /// it to the credentials (a key file's `project_id`, or the metadata server's project).
    pub project: Option<String>,
    /// `vertex_location`, else `VERTEXAI_LOCATION` / `VERTEX_LOCATION`, else `us-central1`.
    pub location: String,
    pub credentials: GoogleCredentials,
}

impl VertexParams {
    /// The regional endpoint, `https://{location}-aiplatform.googleapis.com`, or the global
    /// one for `location: global`.
    pub fn default_base(&self) -> String {
        if self.location == "global" {
            "https://aiplatform.googleapis.com".to_owned()
        } else {
            format!("https://{}-aiplatform.googleapis.com", self.location)
        }
    }
}

/// Where Google access tokens come from when the deployment gives no `api_key` (a bearer
/// token used as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoogleCredentials {
    /// A key file in Google's JSON format (a service account's, or a gcloud user's
    /// `authorized_user` file): its path, or the JSON text itself. Read when a token is
    /// needed, so a rotated file is picked up at the next renewal.
    KeyFile {
        /// The setting that named it (`vertex_credentials`, `GOOGLE_APPLICATION_CREDENTIALS`,
        /// …), for error messages.
        setting: &'static str,
        value: Secret,
    },
    /// Nothing configured: Application Default Credentials as Google's libraries find
    /// them, gcloud's well-known file when it exists, else the GCE / GKE metadata server
    /// (Workload Identity on GKE).
    Ambient {
        /// `$CLOUDSDK_CONFIG/application_default_credentials.json`, or the one under
        /// `$HOME/.config/gcloud`; `None` when neither variable is set.
        gcloud_file: Option<String>,
        /// `GCE_METADATA_HOST`, else `metadata.google.internal` (host and optional port).
        metadata_host: String,
    },
}

impl Deployment {
    /// The provider prefix, as written in `litellm_params.model`.
    pub fn provider_prefix(&self) -> &str {
        match &self.provider {
            ProviderKind::Supported { prefix, .. } => prefix,
            ProviderKind::NotYetSupported { prefix } => prefix,
        }
    }

    /// The wire format, or `None` for a provider this build does not speak.
    pub fn wire(&self) -> Option<WireFormat> {
        if self.mock_response.is_some() {
            return Some(WireFormat::Fake);
        }
        match &self.provider {
            ProviderKind::Supported { wire, .. } => Some(*wire),
            ProviderKind::NotYetSupported { .. } => None,
        }
    }

    /// `litellm_params.model` as the user wrote it (`openai/gpt-4o`).
    pub fn litellm_model(&self) -> String {
        format!("{}/{}", self.provider_prefix(), self.upstream_model)
    }
}
