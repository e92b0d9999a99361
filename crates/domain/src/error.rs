//! The one error type every layer of the gateway returns, and its OpenAI-shaped JSON body.
//!
//! An error carries what happened (its [`ErrorKind`], which fixes the status code), a message
//! fit for the client, and whether trying again (on this or another deployment) may help, so
//! the router decides retries from data rather than by reading messages.

use serde_json::json;

/// What went wrong, in the terms LiteLLM's proxy reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401: no key, or a key the gateway does not know.
    Authentication,
    /// 400: the request itself is wrong (malformed JSON, a missing field, an unknown model).
    BadRequest,
    /// 403: a known caller asked for something it may not have (a model, a route, another
    /// team's key).
    Forbidden,
    /// A budget of the key, user, team, organization or end user is spent; the status is
    /// `litellm_settings.budget_exceeded_status_code` (LiteLLM's default, 422).
    BudgetExceeded(u16),
    /// 429: a key's own rpm/tpm/parallel-request limit was reached.
    RateLimited,
    /// 503: the database is needed and does not answer.
    StoreUnavailable,
    /// 404: no such route or record.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 413: the body is larger than the gateway accepts.
    PayloadTooLarge,
    /// 429: every deployment of the model group is unavailable.
    NoDeploymentsAvailable,
    /// 408: the upstream did not answer within the deployment's timeout.
    Timeout,
    /// 500: the upstream could not be reached (LiteLLM's `APIConnectionError`).
    UpstreamConnection,
    /// The upstream answered with an error status; that status is passed through.
    Upstream(u16),
    /// 500: a fault inside the gateway.
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            Self::Authentication => 401,
            Self::BadRequest => 400,
            Self::Forbidden => 403,
            Self::BudgetExceeded(status) => status,
            Self::RateLimited => 429,
            Self::StoreUnavailable => 503,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::NoDeploymentsAvailable => 429,
            Self::Timeout => 408,
            Self::UpstreamConnection | Self::Internal => 500,
            Self::Upstream(status) => status,
        }
    }

    /// The `type` field of the error body.
    fn error_type(self) -> &'static str {
        match self {
            Self::Authentication | Self::Forbidden => "auth_error",
            Self::BudgetExceeded(_) => "budget_exceeded",
            Self::RateLimited => "throttling_error",
            Self::StoreUnavailable => "no_db_connection",
            Self::BadRequest | Self::PayloadTooLarge | Self::MethodNotAllowed => "invalid_request_error",
            Self::NotFound => "not_found_error",
            Self::NoDeploymentsAvailable => "rate_limit_error",
            Self::Timeout => "timeout",
            Self::UpstreamConnection => "api_connection_error",
            Self::Upstream(429) => "rate_limit_error",
            Self::Upstream(status) if status < 500 => "invalid_request_error",
            Self::Upstream(_) | Self::Internal => "api_error",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// A provider's own error `type`/`code`, kept when an upstream error is passed through.
    /// Boxed (16 bytes, not 24) to keep the error small enough to travel in every `Result`.
    pub upstream_type: Option<Box<str>>,
    pub upstream_code: Option<String>,
    /// Whether the same request may succeed if tried again.
    pub retryable: bool,
    /// How long the upstream asked callers to wait (its `Retry-After`), when it said.
    pub retry_after: Option<std::time::Duration>,
    /// Headers the error response carries besides the usual ones (a rate limit's
    /// `x-ratelimit-*`); boxed, as few errors have any and errors travel in every `Result`.
    pub headers: Option<Box<Vec<(&'static str, String)>>>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retryable = matches!(
            kind,
            ErrorKind::Timeout | ErrorKind::UpstreamConnection | ErrorKind::NoDeploymentsAvailable
        ) || matches!(kind, ErrorKind::Upstream(s) if s == 408 || s == 409 || s == 429 || s >= 500);
        Self {
            kind,
            message: message.into(),
            param: None,
            upstream_type: None,
            upstream_code: None,
            retryable,
            retry_after: None,
            headers: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Replaces the `type` of the error body (LiteLLM's finer types, such as
    /// `key_model_access_denied` or `token_not_found_in_db`).
    pub fn with_type(mut self, error_type: &str) -> Self {
        self.upstream_type = Some(error_type.into());
        self
    }

    /// Adds a header to the error response.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.get_or_insert_default().push((name, value.into()));
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// LiteLLM's error body: `{"error": {"message", "type", "param", "code"}}`, with `code`
    /// always a string (the provider's own code when it gave one, else the status).
    pub fn to_json(&self) -> Vec<u8> {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.upstream_type.as_deref().unwrap_or(self.kind.error_type()),
                "param": self.param,
                "code": self
                    .upstream_code
                    .clone()
                    .unwrap_or_else(|| self.status().to_string()),
            }
        });
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            // Serialising a tree of strings cannot fail; keep a body anyway.
            br#"{"error":{"message":"internal error","type":"api_error","param":null,"code":"500"}}"#.to_vec()
        })
    }
}

impl GatewayError {
    /// Anthropic's error body, for clients of the `/v1/messages` front door:
    /// `{"type": "error", "error": {"type", "message"}}`, the type chosen by status.
    pub fn to_anthropic_json(&self) -> Vec<u8> {
        let error_type = match self.status() {
            400 | 405 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        let body = json!({"type": "error", "error": {"type": error_type, "message": self.message}});
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.to_json()).unwrap()
    }

    #[test]
    fn body_is_openai_shaped_with_string_code() {
        let e = GatewayError::bad_request("missing field `messages`").with_param("messages");
        assert_eq!(e.status(), 400);
        assert_eq!(
            body(&e),
            json!({"error": {
                "message": "missing field `messages`",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "400"
            }})
        );
    }

    #[test]
    fn upstream_status_passes_through_and_sets_retryability() {
        let e = GatewayError::new(ErrorKind::Upstream(503), "overloaded");
        assert_eq!(e.status(), 503);
        assert!(e.retryable);
        let e = GatewayError::new(ErrorKind::Upstream(400), "bad");
        assert!(!e.retryable);
        assert_eq!(body(&e)["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn provider_code_is_kept() {
        let mut e = GatewayError::new(ErrorKind::Upstream(400), "too long");
        e.upstream_code = Some("context_length_exceeded".into());
        assert_eq!(body(&e)["error"]["code"], "context_length_exceeded");
    }

    #[test]
    fn anthropic_body_picks_the_type_by_status() {
        let body: serde_json::Value = serde_json::from_slice(
            &GatewayError::new(ErrorKind::Authentication, "no key").to_anthropic_json(),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "no key"}})
        );
        let body: serde_json::Value =
            serde_json::from_slice(&GatewayError::new(ErrorKind::Upstream(503), "busy").to_anthropic_json())
                .unwrap();
        assert_eq!(body["error"]["type"], "overloaded_error");
    }

    #[test]
    fn timeout_and_connection_map_as_litellm_does() {
        assert_eq!(ErrorKind::Timeout.status(), 408);
        assert_eq!(ErrorKind::UpstreamConnection.status(), 500);
        assert_eq!(ErrorKind::NoDeploymentsAvailable.status(), 429);
        assert!(GatewayError::new(ErrorKind::Timeout, "t").retryable);
    }
}
