//! Counting a prompt's tokens without calling a model: Anthropic's
//! `POST /v1/messages/count_tokens` on the Anthropic front door, and LiteLLM's
//! `POST /utils/token_counter`.
//!
//! `count_tokens` asks the provider when the model group has a deployment whose API counts
//! (Anthropic's own `count_tokens`, or Claude on Azure AI); for every other model it counts
//! with the gateway's tokenizer (`tollgate_domain::tokens`), the request translated to the
//! canonical chat request first, so system prompt, tool calls, tool results and images
//! count as they would be sent. Either way the answer is Anthropic's `{"input_tokens": N}`.
//! `token_counter` always counts locally, as LiteLLM's does unless asked to call the
//! provider. Neither call is metered or counted against rate limits.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tollgate_domain::tokens::{self, Encoding};
use tollgate_domain::{Deployment, GatewayError};
use tollgate_router::RouterError;

use crate::messages::to_chat_request;
use crate::proxy::{new_call_id, read_body};
use crate::tenancy::{self, Access};
use crate::{App, BoxError, ResponseBody, errors, json_response};

/// `POST /v1/messages/count_tokens`: Anthropic's request in, `{"input_tokens": N}` out, errors
/// in Anthropic's shape.
pub async fn messages<B>(app: &App, access: &Access, request: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let call_id = new_call_id();
    match count_messages(app, access, request.into_body()).await {
        Ok(tokens) => json_response(StatusCode::OK, json!({"input_tokens": tokens}).to_string()),
        Err(error) => errors::anthropic_error_response(&error, Some(&call_id)),
    }
}

async fn count_messages<B>(app: &App, access: &Access, body: B) -> Result<u64, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let body = read_body(body).await?;
    let mut request: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("Invalid JSON in request body: {e}")))?;
    let requested = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::bad_request("model: Field required").with_param("model"))?
        .to_owned();
    let model = resolve(access, &requested);
    check_access(app, access, model)?;
    let deployments = app.router.group(model).ok_or_else(|| unknown(app, model))?;
    // The canonical request is built first: a request that cannot be sent cannot be counted.
    let canonical = to_chat_request(&request, false)?;
    let counting = deployments.iter().find(|d| counts_upstream(d));
    if let Some(deployment) = counting {
        request["model"] = json!(upstream_model(app, model, deployment));
        if let Some(tokens) = app.providers.count_tokens(deployment, &request).await? {
            return Ok(tokens);
        }
    }
    let encoding = app.router.encoding(model);
    let messages = canonical.get("messages").unwrap_or(&Value::Null);
    Ok(tokens::count_chat(encoding, messages, canonical.get("tools")))
}

/// Whether the deployment's provider has a token-counting endpoint worth asking.
fn counts_upstream(deployment: &Deployment) -> bool {
    use tollgate_domain::provider_catalog::WireFormat;
    match deployment.wire() {
        Some(WireFormat::Anthropic) => true,
        Some(WireFormat::AzureAi) => deployment.upstream_model.to_ascii_lowercase().contains("claude"),
        _ => false,
    }
}

/// `POST /utils/token_counter`: `{model, prompt | messages | contents}` in, LiteLLM's
/// `{total_tokens, request_model, model_used, tokenizer_type}` out.
pub async fn token_counter<B>(app: &App, access: &Access, request: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let call_id = new_call_id();
    match count_for_utils(app, access, request.into_body()).await {
        Ok(answer) => json_response(StatusCode::OK, answer.to_string()),
        Err(error) => errors::error_response(&error, Some(&call_id)),
    }
}

async fn count_for_utils<B>(app: &App, access: &Access, body: B) -> Result<Value, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let body = read_body(body).await?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("Invalid JSON in request body: {e}")))?;
    let requested = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::bad_request("missing required field `model`").with_param("model"))?;
    let model = resolve(access, requested);
    check_access(app, access, model)?;
    // LiteLLM counts with the deployment's model, named without its provider prefix.
    let model_used = match app.router.group(model).and_then(|group| group.first()) {
        Some(deployment) => upstream_model(app, model, deployment),
        None => model.to_string(),
    };
    let encoding = Encoding::for_model(&model_used);
    let total = match (request.get("messages"), request.get("prompt"), request.get("contents")) {
        (Some(messages @ Value::Array(_)), _, _) => {
            tokens::count_chat(encoding, messages, request.get("tools"))
        }
        (_, Some(prompt @ (Value::String(_) | Value::Array(_))), _) => tokens::count_prompt(encoding, prompt),
        (_, _, Some(contents @ Value::Array(_))) => count_contents(encoding, contents),
        _ => {
            return Err(GatewayError::bad_request("prompt or messages or contents must be provided"));
        }
    };
    Ok(json!({
        "total_tokens": total,
        "request_model": requested,
        "model_used": model_used,
        "tokenizer_type": "openai_tokenizer",
        "original_response": null,
        "error": false,
        "error_message": null,
        "status_code": null,
    }))
}

/// The text of Gemini-style `contents` (`[{role, parts: [{text}]}]`).
fn count_contents(encoding: Encoding, contents: &Value) -> u64 {
    contents
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|content| content.get("parts").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .map(|text| encoding.count(text))
        .sum()
}

/// The model group a key's `aliases` send `requested` to, or `requested` itself.
fn resolve<'a>(access: &'a Access, requested: &'a str) -> &'a str {
    access.principal().and_then(|p| tenancy::aliased(p, requested)).unwrap_or(requested)
}

/// A key may count tokens for the models it may call, and no others.
fn check_access(app: &App, access: &Access, model: &str) -> Result<(), GatewayError> {
    match access.principal() {
        Some(principal) if !principal.may_use(&app.router, model) => {
            Err(tenancy::model_denied(model, "key_model_access_denied"))
        }
        _ => Ok(()),
    }
}

fn unknown(app: &App, model: &str) -> GatewayError {
    RouterError::UnknownModel {
        requested: model.to_owned(),
        available: app.router.model_names().map(str::to_owned).collect(),
    }
    .into()
}

/// The deployment's upstream model, a wildcard (`claude-*` → `claude-*`) filled in with the
/// part of `model` it matched.
fn upstream_model(app: &App, model: &str, deployment: &Arc<Deployment>) -> String {
    let upstream = &deployment.upstream_model;
    if !upstream.contains('*') {
        return upstream.clone();
    }
    let group = app.router.group_name(model).unwrap_or(model);
    let captured = group.split_once('*').and_then(|(prefix, suffix)| {
        model.strip_prefix(prefix)?.strip_suffix(suffix).filter(|middle| !middle.is_empty())
    });
    match captured {
        Some(captured) => upstream.replacen('*', captured, 1),
        None => upstream.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_count_their_text_parts() {
        let encoding = Encoding::Cl100kBase;
        let contents = json!([
            {"role": "user", "parts": [{"text": "hello world"}, {"inlineData": {}}]},
            {"role": "model", "parts": [{"text": "hello world"}]}
        ]);
        assert_eq!(count_contents(encoding, &contents), 4);
        assert_eq!(count_contents(encoding, &json!([])), 0);
    }
}
