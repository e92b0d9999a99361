//! What models the gateway serves: `/v1/models` (OpenAI's list of aliases), `/model/info`
//! (each deployment, credentials left out) and `/model_group/info` (each alias), in
//! LiteLLM's shapes.

use http::{Response, StatusCode};
use serde_json::{Map, Value, json};
use tollgate_domain::Deployment;

use crate::tenancy::Access;
use crate::{App, ResponseBody, json_response};

/// The `created` LiteLLM reports for config models.
const CREATED: u64 = 1_677_610_602;

/// The aliases the caller may use: a virtual key sees only what its key, team, user and
/// organization allow, as in LiteLLM.
pub fn list(app: &App, access: &Access) -> Response<ResponseBody> {
    let data: Vec<Value> = app
        .router
        .model_names()
        .filter(|name| access.principal().is_none_or(|principal| principal.may_use(&app.router, name)))
        .map(|name| json!({"id": name, "object": "model", "created": CREATED, "owned_by": "openai"}))
        .collect();
    json_response(StatusCode::OK, json!({"data": data, "object": "list"}).to_string())
}

/// One query parameter's value (no percent-decoding beyond `+`; ids and aliases rarely need it).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

pub fn info(app: &App, query: Option<&str>) -> Response<ResponseBody> {
    let wanted_id = query_param(query, "litellm_model_id");
    let data: Vec<Value> = app
        .router
        .deployments()
        .filter(|d| wanted_id.is_none_or(|id| d.id == id))
        .map(|d| deployment_info(d))
        .collect();
    json_response(StatusCode::OK, json!({"data": data}).to_string())
}

/// A deployment as `/model/info` shows it: never its key or extra headers.
fn deployment_info(d: &Deployment) -> Value {
    let mut params = Map::new();
    params.insert("model".into(), json!(d.litellm_model()));
    let optional = [
        ("api_base", d.api_base.as_ref().map(|v| json!(v))),
        ("api_version", d.api_version.as_ref().map(|v| json!(v))),
        ("organization", d.organization.as_ref().map(|v| json!(v))),
        ("rpm", d.rpm.map(|v| json!(v))),
        ("tpm", d.tpm.map(|v| json!(v))),
        ("mock_response", d.mock_response.as_ref().map(|v| json!(v))),
    ];
    params.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))));
    // A provider's own parameters (Ollama's `num_ctx`) are settings, not secrets.
    params.extend(d.provider_params.clone());
    params.insert("timeout".into(), json!(d.timeout.as_secs_f64()));
    params.insert("stream_timeout".into(), json!(d.stream_timeout.as_secs_f64()));
    params.insert("max_retries".into(), json!(d.max_retries));

    let mut model_info = d.model_info.clone();
    model_info.insert("id".into(), json!(d.id));
    model_info.entry("db_model").or_insert(json!(false));
    model_info.entry("litellm_provider").or_insert(json!(d.provider_prefix()));
    json!({"model_name": d.model_name, "litellm_params": params, "model_info": model_info})
}

pub fn group_info(app: &App, query: Option<&str>) -> Response<ResponseBody> {
    let wanted = query_param(query, "model_group");
    let data: Vec<Value> = app
        .router
        .model_names()
        .filter(|name| wanted.is_none_or(|w| w == *name))
        .filter_map(|name| Some((name, app.router.group(name)?)))
        .map(|(name, deployments)| {
            let mut providers: Vec<&str> = Vec::new();
            for d in deployments {
                if !providers.contains(&d.provider_prefix()) {
                    providers.push(d.provider_prefix());
                }
            }
            let sum = |f: fn(&Deployment) -> Option<u64>| -> Value {
                let values: Vec<u64> = deployments.iter().filter_map(|d| f(d)).collect();
                if values.is_empty() { Value::Null } else { json!(values.iter().sum::<u64>()) }
            };
            let from_info = |key: &str| {
                deployments.iter().find_map(|d| d.model_info.get(key).cloned()).unwrap_or(Value::Null)
            };
            json!({
                "model_group": name,
                "providers": providers,
                "max_input_tokens": from_info("max_input_tokens"),
                "max_output_tokens": from_info("max_output_tokens"),
                "input_cost_per_token": from_info("input_cost_per_token"),
                "output_cost_per_token": from_info("output_cost_per_token"),
                "mode": from_info("mode"),
                "tpm": sum(|d| d.tpm),
                "rpm": sum(|d| d.rpm),
            })
        })
        .collect();
    json_response(StatusCode::OK, json!({"data": data}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_by_name() {
        assert_eq!(query_param(Some("a=1&litellm_model_id=x"), "litellm_model_id"), Some("x"));
        assert_eq!(query_param(Some("a=1"), "b"), None);
        assert_eq!(query_param(None, "a"), None);
    }

    #[test]
    fn deployment_info_hides_credentials() {
        let config = tollgate_domain::GatewayConfig::from_yaml(
            "model_list:\n  - model_name: gp\n    litellm_params: {model: openai/gpt-4o, api_key: sk-secret, extra_headers: {x-token: t0p}, rpm: 5}\n    model_info: {mode: chat}\n",
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let info = deployment_info(&config.deployments[0]);
        let text = info.to_string();
        assert!(!text.contains("sk-secret") && !text.contains("t0p"), "{text}");
        assert_eq!(info["litellm_params"]["model"], "openai/gpt-4o");
        assert_eq!(info["litellm_params"]["rpm"], 5);
        assert_eq!(info["model_info"]["mode"], "chat");
        assert_eq!(info["model_info"]["id"], json!(config.deployments[0].id));

        let ollama = tollgate_domain::GatewayConfig::from_yaml(
            "model_list:\n  - model_name: l\n    litellm_params: {model: ollama_chat/llama3.1, num_ctx: 8192}\n",
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let info = deployment_info(&ollama.deployments[0]);
        assert_eq!(info["litellm_params"]["num_ctx"], 8192);
        assert_eq!(info["model_info"]["litellm_provider"], "ollama_chat");
    }
}
