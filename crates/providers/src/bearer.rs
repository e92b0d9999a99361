//! What the adapters for keyed JSON APIs (Cohere, Voyage AI, Jina AI) share: a JSON POST
//! carrying `Authorization: Bearer <api_key>` and the deployment's extra headers, a whole
//! JSON answer read back, and error bodies in the shapes those APIs use.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use serde_json::Value;
use tollgate_domain::Deployment;

use crate::{ProviderError, UpstreamBody, UpstreamResponse, transport};

/// A POST of `body` as JSON to `url`, with the deployment's key as a bearer token.
pub(crate) fn json_post(
    deployment: &Deployment,
    url: String,
    body: &Value,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let mut builder =
        http::Request::post(url).header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &deployment.api_key {
        builder = builder.header(
            AUTHORIZATION,
            transport::secret_header(&format!("Bearer {}", key.expose()), deployment)?,
        );
    }
    transport::with_extra_headers(builder, deployment)?
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| {
            ProviderError::BadRequest(format!(
                "cannot build the request for '{}': {e}",
                deployment.model_name
            ))
        })
}

/// A whole answer's JSON and headers; `provider` names the upstream in errors.
pub(crate) fn json_answer(
    response: UpstreamResponse,
    provider: &str,
) -> Result<(Value, http::HeaderMap), ProviderError> {
    let UpstreamBody::Complete(bytes) = response.body else {
        return Err(ProviderError::Protocol(format!("{provider} streamed an answer that should be whole")));
    };
    let answer = serde_json::from_slice(&bytes)
        .map_err(|e| ProviderError::Protocol(format!("{provider} answered with invalid JSON: {e}")))?;
    Ok((answer, response.headers))
}

/// Whether an error message says the input does not fit the model's context.
pub(crate) fn too_long(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["too many tokens", "context length", "context window", "too long", "maximum context length"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// An upstream error with `message` (the deployment's key redacted), the status kept and a
/// too-long input marked `context_length_exceeded`.
pub(crate) fn upstream_error(status: u16, message: String, deployment: &Deployment) -> ProviderError {
    let code = (status == 400 && too_long(&message)).then(|| "context_length_exceeded".to_owned());
    ProviderError::Upstream {
        status,
        message: transport::redact(deployment, message),
        error_type: None,
        param: None,
        code,
        retry_after: None,
    }
}

/// The error bodies of APIs built on FastAPI, Voyage's and Jina's: `{"detail": "text"}`, or a
/// validation failure's `{"detail": [{"loc": [...], "msg": "..."}]}` (status 422).
pub(crate) fn detail_error(status: u16, body: &[u8], deployment: &Deployment) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let detail = json.as_ref().and_then(|j| j.get("detail"));
    let message = match detail {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let field = item
                    .get("loc")
                    .and_then(Value::as_array)
                    .map(|loc| {
                        loc.iter().map(|part| part.as_str().map_or_else(|| part.to_string(), str::to_owned))
                    })
                    .map(|parts| parts.collect::<Vec<_>>().join("."));
                let text = item.get("msg").and_then(Value::as_str).unwrap_or("invalid value");
                match field {
                    Some(field) => format!("{field}: {text}"),
                    None => text.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => json
            .as_ref()
            .and_then(|j| j.get("message").or_else(|| j.pointer("/error/message")))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| transport::quote_body(status, body)),
    };
    upstream_error(status, message, deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Deployment {
        tollgate_domain::GatewayConfig::from_yaml(
            "model_list:\n  - model_name: v\n    litellm_params: {model: voyage/voyage-3.5, api_key: pa-secret-key}\n",
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    fn parts(error: ProviderError) -> (u16, String, Option<String>) {
        match error {
            ProviderError::Upstream { status, message, code, .. } => (status, message, code),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_carry_the_key_as_a_sensitive_bearer() {
        let d = deployment();
        let request =
            json_post(&d, "https://api.voyageai.com/v1/embeddings".into(), &serde_json::json!({"a": 1}))
                .unwrap();
        let authorization = &request.headers()[AUTHORIZATION];
        assert_eq!(authorization, "Bearer pa-secret-key");
        assert!(authorization.is_sensitive());
        assert_eq!(request.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn detail_bodies_become_messages() {
        let d = deployment();
        assert_eq!(
            parts(detail_error(401, br#"{"detail":"Provided API key pa-secret-key is invalid."}"#, &d)),
            (401, "Provided API key [redacted] is invalid.".into(), None)
        );
        let validation =
            br#"{"detail":[{"type":"missing","loc":["body","query"],"msg":"Field required","input":{}}]}"#;
        assert_eq!(parts(detail_error(422, validation, &d)).1, "body.query: Field required");
        let long = br#"{"detail":"Request to model 'voyage-3.5' failed. The max allowed tokens per submitted batch is 320000. Your batch has 400000 tokens after truncation. Please lower the number of tokens in the batch: too many tokens."}"#;
        assert_eq!(parts(detail_error(400, long, &d)).2.as_deref(), Some("context_length_exceeded"));
        assert_eq!(parts(detail_error(502, b"<html>bad gateway</html>", &d)).1, "<html>bad gateway</html>");
    }
}
