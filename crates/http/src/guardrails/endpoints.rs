//! `GET /guardrails/list` and `POST /guardrails/apply_guardrail`, in LiteLLM's shapes.

use http::StatusCode;
use serde_json::{Value, json};
use tollgate_domain::GatewayError;
use tollgate_domain::tokens::Encoding;

use super::{CallContext, GuardedRequest, Mode, Verdict};
use crate::tenancy::Access;
use crate::{App, ResponseBody, json_response};

/// `{"guardrails": [{guardrail_name, litellm_params, guardrail_info}]}`; secrets (`api_key`,
/// `headers`) are never listed.
pub fn list(app: &App) -> http::Response<ResponseBody> {
    let guardrails: Vec<Value> = app
        .guardrails
        .iter()
        .flat_map(|guardrails| guardrails.entries())
        .map(|entry| {
            let mut params = entry.params.clone();
            params.insert("guardrail".to_owned(), json!(entry.kind));
            let modes: Vec<&str> = entry.modes.iter().map(|mode| mode.as_str()).collect();
            params.insert("mode".to_owned(), if modes.len() == 1 { json!(modes[0]) } else { json!(modes) });
            params.insert("default_on".to_owned(), json!(entry.default_on));
            json!({
                "guardrail_name": entry.name,
                "litellm_params": params,
                "guardrail_info": entry.info,
                "guardrail_definition_location": if entry.kind == "custom" { "embedder" } else { "config" },
            })
        })
        .collect();
    json_response(StatusCode::OK, json!({ "guardrails": guardrails }).to_string().into_bytes())
}

#[derive(serde::Deserialize)]
struct ApplyRequest {
    guardrail_name: String,
    text: String,
}

/// Runs one guardrail's request check on `text` (as a user message): `{"response_text"}`
/// with the text as the guardrail left it, or the guardrail's 400 when it blocks.
pub async fn apply(
    app: &App,
    access: &Access,
    body: &[u8],
) -> Result<http::Response<ResponseBody>, GatewayError> {
    let request: ApplyRequest = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid apply_guardrail request: {e}")))?;
    let entry =
        app.guardrails.as_deref().and_then(|guardrails| guardrails.get(&request.guardrail_name)).ok_or_else(
            || {
                GatewayError::bad_request(format!("guardrail '{}' is not configured", request.guardrail_name))
                    .with_param("guardrail_name")
            },
        )?;
    let principal = access.principal();
    let call_id = crate::proxy::new_call_id();
    let context = CallContext {
        call_id: &call_id,
        model: "",
        context_window: None,
        encoding: Encoding::Cl100kBase,
        key_hash: principal.map(|p| p.key.token.as_str()),
        key_alias: principal.and_then(|p| p.key.key_alias.as_deref()),
        team_id: principal.and_then(|p| p.key.team_id.as_deref()),
        key_metadata: principal.map(|p| &p.key.metadata.0),
        team_metadata: principal.and_then(|p| p.team.as_ref()).map(|team| &team.metadata.0),
    };
    let mut messages = vec![json!({"role": "user", "content": request.text})];
    let mut max_tokens = None;
    let mut memo = http::Extensions::new();
    let mut guarded =
        GuardedRequest { context, messages: &mut messages, max_tokens: &mut max_tokens, memo: &mut memo };
    let verdict = entry.guardrail.pre_call(&mut guarded).await;
    app.metrics.record_guardrail(
        &entry.name,
        match verdict {
            Verdict::Allow => "allowed",
            Verdict::Modified => "modified",
            Verdict::Block(_) => "blocked",
        },
    );
    if let Verdict::Block(reason) = verdict {
        let blocked = super::Blocked { guardrail: entry.name.clone(), mode: Mode::PreCall, reason };
        return Err(blocked.to_error());
    }
    let text = messages.first().and_then(|m| m.get("content")).and_then(Value::as_str).unwrap_or_default();
    Ok(json_response(StatusCode::OK, json!({ "response_text": text }).to_string().into_bytes()))
}
