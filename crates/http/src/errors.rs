//! The one place a [`GatewayError`] becomes an HTTP response: status from the error's kind,
//! LiteLLM's `{"error": {"message", "type", "param", "code"}}` body (or Anthropic's error
//! body on the `/v1/messages` front door), JSON content type.

use http::{HeaderValue, Response, StatusCode};
use tollgate_domain::GatewayError;

use crate::{ResponseBody, json_response};

pub fn error_response(error: &GatewayError, call_id: Option<&str>) -> Response<ResponseBody> {
    respond(error, call_id, error.to_json())
}

/// The same error in Anthropic's shape, for clients of `/v1/messages`.
pub fn anthropic_error_response(error: &GatewayError, call_id: Option<&str>) -> Response<ResponseBody> {
    respond(error, call_id, error.to_anthropic_json())
}

fn respond(error: &GatewayError, call_id: Option<&str>, body: Vec<u8>) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), call_id, error = %error.message, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), call_id, error = %error.message, "request rejected");
    }
    let mut response = json_response(status, body);
    if let Some(id) = call_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert("x-litellm-call-id", id);
    }
    if let Some(after) = error.retry_after {
        // Whole seconds, rounded up: a client that waits that long will not be early.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    for (name, value) in error.headers.iter().flat_map(|headers| headers.iter()) {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tollgate_domain::ErrorKind;

    #[tokio::test]
    async fn upstream_status_outside_the_valid_range_becomes_502() {
        let response = error_response(&GatewayError::new(ErrorKind::Upstream(1000), "weird"), Some("abc"));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()["x-litellm-call-id"], "abc");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["message"], "weird");
    }
}
