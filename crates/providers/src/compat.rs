//! The few body rewrites OpenAI-compatible servers need where they differ from OpenAI,
//! applied by the `openai` adapter for their prefixes only, and only when the body holds
//! something to change: every other body is forwarded as the bytes the client sent.
//!
//! `mistral/` (Mistral's API refuses fields it does not know, as LiteLLM's mapping
//! reflects): `max_completion_tokens` is `max_tokens`, `seed` is `random_seed`,
//! `tool_choice: "required"` is `"any"`; `user`, `stream_options` (Mistral reports usage in
//! its last chunk anyway), `metadata`, `store` and `service_tier` are left out; `name` is
//! kept on tool messages only; `logit_bias`, `logprobs` and `top_logprobs` are refused
//! unless neutral. Embeddings' `dimensions` is `output_dimension`.
//!
//! `hosted_vllm/` (vLLM's structured-output backends reject some JSON Schema keywords, as
//! LiteLLM's mapping reflects): tool schemas lose `strict` and `additionalProperties: false`,
//! `custom` tools become function tools, and Anthropic-style `thinking` becomes
//! `reasoning_effort`.

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_domain::Endpoint;
use tollgate_domain::json::TopLevel;

use crate::ProviderError;

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

fn invalid_json(error: serde_json::Error) -> ProviderError {
    bad(format!("invalid JSON body: {error}"))
}

/// The body rewritten for the deployment's provider, or the same bytes when it needs nothing.
pub(crate) fn rewrite(prefix: &str, endpoint: Endpoint, body: Bytes) -> Result<Bytes, ProviderError> {
    match (prefix, endpoint) {
        ("mistral", Endpoint::ChatCompletions) => mistral_chat(body),
        ("mistral", Endpoint::Embeddings) => mistral_embeddings(body),
        ("hosted_vllm", Endpoint::ChatCompletions) => vllm_chat(body),
        _ => Ok(body),
    }
}

/// The body without the fields in `drop` and with `set` applied (replaced in place, or
/// appended), or the body itself when there is nothing to do.
fn edit(
    body: Bytes,
    top: &TopLevel<'_>,
    drop: &[&str],
    set: &[(&str, String)],
) -> Result<Bytes, ProviderError> {
    let drop: Vec<&str> = drop.iter().copied().filter(|name| top.contains(name)).collect();
    if drop.is_empty() && set.is_empty() {
        return Ok(body);
    }
    let stripped = top.without(&drop);
    let top = TopLevel::parse(&stripped).map_err(invalid_json)?;
    let set: Vec<(&str, &str)> = set.iter().map(|(name, value)| (*name, value.as_str())).collect();
    Ok(Bytes::from(top.rewrite(&set)))
}

fn decode(top: &TopLevel<'_>, name: &str) -> Result<Option<Value>, ProviderError> {
    top.decode::<Value>(name).map_err(|e| bad(format!("invalid value for `{name}`: {e}")))
}

/// Fields Mistral's chat API does not take and that carry nothing it would act on.
const MISTRAL_DROPPED: &[&str] = &["user", "stream_options", "metadata", "store", "service_tier"];
/// OpenAI parameters Mistral has no equivalent for: refused unless neutral.
pub(crate) const MISTRAL_UNSUPPORTED: &[&str] = &["logit_bias", "logprobs", "top_logprobs"];

fn mistral_chat(body: Bytes) -> Result<Bytes, ProviderError> {
    let top = TopLevel::parse(&body).map_err(invalid_json)?;
    for name in MISTRAL_UNSUPPORTED {
        if let Some(value) = decode(&top, name)?
            && !matches!(value, Value::Bool(false) | Value::Null)
            && value != json!({})
            && value != json!(0)
        {
            return Err(bad(format!("`{name}` is not supported by mistral models")));
        }
    }
    let mut drop: Vec<&str> = MISTRAL_DROPPED.iter().chain(MISTRAL_UNSUPPORTED).copied().collect();
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(raw) = top.get("max_completion_tokens") {
        drop.push("max_completion_tokens");
        set.push(("max_tokens", raw.get().to_owned()));
    }
    if let Some(raw) = top.get("seed") {
        drop.push("seed");
        if !top.contains("random_seed") {
            set.push(("random_seed", raw.get().to_owned()));
        }
    }
    if top.get("tool_choice").is_some_and(|raw| raw.get() == "\"required\"") {
        set.push(("tool_choice", "\"any\"".to_owned()));
    }
    // Mistral takes `name` on tool messages only; the scan of the raw text keeps the common
    // case (no names at all) from decoding the messages.
    if let Some(raw) = top.get("messages")
        && raw.get().contains("\"name\"")
    {
        let mut messages: Value = serde_json::from_str(raw.get()).map_err(invalid_json)?;
        let mut changed = false;
        for message in messages.as_array_mut().into_iter().flatten() {
            let is_tool = message.get("role").and_then(Value::as_str) == Some("tool");
            if let Some(object) = message.as_object_mut()
                && !is_tool
                && object.remove("name").is_some()
            {
                changed = true;
            }
        }
        if changed {
            set.push(("messages", messages.to_string()));
        }
    }
    edit(body.clone(), &top, &drop, &set)
}

fn mistral_embeddings(body: Bytes) -> Result<Bytes, ProviderError> {
    let top = TopLevel::parse(&body).map_err(invalid_json)?;
    let mut set = Vec::new();
    if let Some(raw) = top.get("dimensions") {
        set.push(("output_dimension", raw.get().to_owned()));
    }
    edit(body.clone(), &top, &["user", "dimensions"], &set)
}

fn vllm_chat(body: Bytes) -> Result<Bytes, ProviderError> {
    let top = TopLevel::parse(&body).map_err(invalid_json)?;
    let mut drop = Vec::new();
    let mut set = Vec::new();
    if let Some(raw) = top.get("tools")
        && ["\"strict\"", "\"additionalProperties\"", "\"custom\""]
            .iter()
            .any(|word| raw.get().contains(word))
    {
        let mut tools: Value = serde_json::from_str(raw.get()).map_err(invalid_json)?;
        for (index, tool) in tools.as_array_mut().into_iter().flatten().enumerate() {
            if tool.get("type").and_then(Value::as_str) == Some("custom") {
                *tool = custom_as_function(tool, index);
            }
            strip_schema_keywords(tool);
        }
        set.push(("tools", tools.to_string()));
    }
    if let Some(thinking) = decode(&top, "thinking")? {
        drop.push("thinking");
        let enabled = thinking.get("type").and_then(Value::as_str) == Some("enabled");
        if enabled && !top.contains("reasoning_effort") {
            let budget = thinking.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
            // LiteLLM's levels for a thinking budget.
            let effort = match budget {
                10_000.. => "high",
                5_000.. => "medium",
                2_000.. => "low",
                _ => "minimal",
            };
            set.push(("reasoning_effort", format!("\"{effort}\"")));
        }
    }
    edit(body.clone(), &top, &drop, &set)
}

/// A `custom` tool (free-form input) as the function tool vLLM accepts.
fn custom_as_function(tool: &Value, index: usize) -> Value {
    let custom = tool.get("custom").unwrap_or(tool);
    let name = custom
        .get("name")
        .or_else(|| tool.get("name"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("custom_tool_{index}"), str::to_owned);
    let parameters = custom
        .get("input_schema")
        .or_else(|| tool.get("input_schema"))
        .filter(|schema| schema.is_object())
        .cloned()
        .unwrap_or_else(|| {
            json!({"type": "object", "properties": {"input": {"type": "string", "description": "Raw tool input payload."}}, "required": ["input"]})
        });
    let mut function = json!({"name": name, "parameters": parameters});
    if let Some(description) =
        custom.get("description").or_else(|| tool.get("description")).filter(|d| d.is_string())
    {
        function["description"] = description.clone();
    }
    json!({"type": "function", "function": function})
}

/// Removes `strict` and `additionalProperties: false` at every depth.
fn strip_schema_keywords(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("strict");
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            map.values_mut().for_each(strip_schema_keywords);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_schema_keywords),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(prefix: &str, endpoint: Endpoint, body: Value) -> Value {
        let out = rewrite(prefix, endpoint, Bytes::from(body.to_string())).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn mistral_renames_and_drops_what_it_does_not_take() {
        let out = run(
            "mistral",
            Endpoint::ChatCompletions,
            json!({"model": "mistral-large-latest", "max_tokens": 5, "max_completion_tokens": 50, "seed": 7,
                   "tool_choice": "required", "user": "u", "stream": true, "stream_options": {"include_usage": true},
                   "logprobs": false,
                   "messages": [{"role": "user", "name": "ann", "content": "hi"},
                                {"role": "tool", "name": "weather", "tool_call_id": "c", "content": "sunny"}]}),
        );
        assert_eq!(
            out,
            json!({"model": "mistral-large-latest", "max_tokens": 50, "tool_choice": "any", "stream": true,
                   "messages": [{"role": "user", "content": "hi"},
                                {"role": "tool", "name": "weather", "tool_call_id": "c", "content": "sunny"}],
                   "random_seed": 7})
        );
        let named = json!({"type": "function", "function": {"name": "f"}});
        let out =
            run("mistral", Endpoint::ChatCompletions, json!({"tool_choice": named.clone(), "messages": []}));
        assert_eq!(out["tool_choice"], named, "Mistral takes a named tool choice as it is");
        let error = rewrite("mistral", Endpoint::ChatCompletions, Bytes::from(r#"{"logit_bias":{"1":5}}"#))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "`logit_bias` is not supported by mistral models");
        let out = run(
            "mistral",
            Endpoint::Embeddings,
            json!({"model": "mistral-embed", "input": "a", "dimensions": 8, "user": "u"}),
        );
        assert_eq!(out, json!({"model": "mistral-embed", "input": "a", "output_dimension": 8}));
    }

    #[test]
    fn bodies_that_need_nothing_keep_their_bytes() {
        let body = Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#,
        );
        for prefix in ["mistral", "hosted_vllm", "openai", "groq"] {
            let out = rewrite(prefix, Endpoint::ChatCompletions, body.clone()).unwrap();
            assert_eq!(out.as_ptr(), body.as_ptr(), "{prefix}: the same bytes, not a copy");
        }
    }

    #[test]
    fn vllm_tools_lose_strict_schema_keywords_and_thinking_becomes_an_effort() {
        let out = run(
            "hosted_vllm",
            Endpoint::ChatCompletions,
            json!({"model": "llama", "messages": [],
            "thinking": {"type": "enabled", "budget_tokens": 6000},
            "tools": [
                {"type": "function", "function": {"name": "f", "strict": true, "parameters": {
                    "type": "object", "additionalProperties": false,
                    "properties": {"a": {"type": "object", "additionalProperties": false}}}}},
                {"type": "custom", "custom": {"name": "shell", "description": "run"}}
            ]}),
        );
        assert_eq!(
            out["tools"][0],
            json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "object"}}}}})
        );
        assert_eq!(out["tools"][1]["function"]["name"], "shell");
        assert_eq!(out["tools"][1]["function"]["description"], "run");
        assert_eq!(out["tools"][1]["function"]["parameters"]["required"], json!(["input"]));
        assert_eq!(out["reasoning_effort"], "medium");
        assert!(out.get("thinking").is_none());
    }
}
