//! The providers crate's error: what went wrong talking to an upstream, and how it maps
//! to the gateway's OpenAI-shaped error.

use std::time::Duration;

use tollgate_domain::{ErrorKind, GatewayError};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("litellm.Timeout: APITimeoutError - Request timed out after {:.1}s. model={model} api_base={api_base}", timeout.as_secs_f64())]
    Timeout { model: String, api_base: String, timeout: Duration },
    #[error("litellm.APIConnectionError: could not reach {api_base} for model={model}: {reason}")]
    Connect { model: String, api_base: String, reason: String },
    /// The upstream answered with an error status; the fields come from its error body.
    #[error("{message}")]
    Upstream {
        status: u16,
        message: String,
        error_type: Option<String>,
        param: Option<String>,
        code: Option<String>,
        /// The upstream's `Retry-After` (or `retry-after-ms`), when it sent one.
        retry_after: Option<Duration>,
    },
    /// The upstream's answer could not be read (broken stream, invalid body).
    #[error("litellm.APIError: {0}")]
    Protocol(String),
    #[error(
        "model '{model_name}' is served by provider '{provider}', which this build of Tollgate does not support yet"
    )]
    Unsupported { provider: String, model_name: String },
    /// The request cannot be served by this deployment (e.g. an endpoint it lacks).
    #[error("{0}")]
    BadRequest(String),
}

impl From<ProviderError> for GatewayError {
    fn from(error: ProviderError) -> Self {
        let kind = match &error {
            ProviderError::Timeout { .. } => ErrorKind::Timeout,
            ProviderError::Connect { .. } => ErrorKind::UpstreamConnection,
            ProviderError::Upstream { status, .. } => ErrorKind::Upstream(*status),
            ProviderError::Protocol(_) => ErrorKind::Upstream(502),
            ProviderError::Unsupported { .. } | ProviderError::BadRequest(_) => ErrorKind::BadRequest,
        };
        let mut gateway = GatewayError::new(kind, error.to_string());
        if let ProviderError::Upstream { error_type, param, code, retry_after, .. } = error {
            gateway.upstream_type = error_type.map(String::into_boxed_str);
            gateway.param = param;
            gateway.upstream_code = code;
            gateway.retry_after = retry_after;
        }
        gateway
    }
}
