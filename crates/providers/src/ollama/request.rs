//! The canonical OpenAI requests as Ollama's request bodies: `/api/chat` for `ollama_chat/`
//! chat, `/api/generate` for `ollama/` chat (messages rendered into one prompt, as LiteLLM
//! renders them) and for legacy completions, `/api/embed` for embeddings.

use serde_json::{Map, Value, json};
use tollgate_domain::provider_catalog::OLLAMA_PARAMS;

use crate::ProviderError;

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// OpenAI parameters Ollama has no equivalent for; each is refused unless it holds its
/// neutral value (`n: 1`, `false`, `null`).
pub(crate) const UNSUPPORTED_PARAMS: &[&str] =
    &["n", "logit_bias", "logprobs", "top_logprobs", "best_of", "echo"];

fn is_neutral(name: &str, value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(if matches!(name, "n" | "best_of") { 1.0 } else { 0.0 }),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// What every Ollama body shares: the runtime `options`, the answer `format`, and the
/// top-level `keep_alive` and `think`.
#[derive(Default)]
struct Settings {
    options: Map<String, Value>,
    format: Option<Value>,
    keep_alive: Option<Value>,
    think: Option<Value>,
}

impl Settings {
    /// The deployment's parameters first, then the request's own Ollama parameters and
    /// `options`, then its OpenAI parameters: the request wins over the config, as in LiteLLM.
    fn read(
        openai: &Value,
        model: &str,
        deployment_params: &Map<String, Value>,
    ) -> Result<Self, ProviderError> {
        for name in UNSUPPORTED_PARAMS {
            if openai.get(*name).is_some_and(|value| !is_neutral(name, value)) {
                return Err(bad(format!("`{name}` is not supported by ollama models")));
            }
        }
        let mut settings = Settings::default();
        let request_params =
            OLLAMA_PARAMS.iter().filter_map(|name| openai.get(*name).map(|value| (*name, value)));
        for (name, value) in deployment_params.iter().map(|(k, v)| (k.as_str(), v)).chain(request_params) {
            if value.is_null() {
                continue;
            }
            match name {
                "keep_alive" => settings.keep_alive = Some(value.clone()),
                "think" => settings.think = Some(value.clone()),
                _ => {
                    settings.options.insert(name.to_owned(), value.clone());
                }
            }
        }
        match openai.get("options") {
            None | Some(Value::Null) => {}
            Some(Value::Object(options)) => settings.options.extend(options.clone()),
            Some(_) => return Err(bad("`options` must be an object of ollama options")),
        }
        // `max_completion_tokens` is the newer name and wins over `max_tokens`.
        for name in ["max_tokens", "max_completion_tokens"] {
            if let Some(value) = openai.get(name).filter(|v| !v.is_null()) {
                settings.options.insert("num_predict".into(), value.clone());
            }
        }
        match settings.options.get("stop") {
            Some(Value::String(stop)) => {
                let stop = json!([stop]);
                settings.options.insert("stop".into(), stop);
            }
            None | Some(Value::Array(_)) => {}
            Some(_) => return Err(bad("`stop` must be a string or an array of strings")),
        }
        settings.format = match openai.get("response_format") {
            None | Some(Value::Null) => None,
            Some(format) => match format.get("type").and_then(Value::as_str) {
                Some("text") => None,
                Some("json_object") => Some(json!("json")),
                Some("json_schema") => {
                    Some(format.pointer("/json_schema/schema").cloned().unwrap_or_else(|| json!("json")))
                }
                _ => return Err(bad("`response_format.type` must be text, json_object or json_schema")),
            },
        };
        if settings.think.is_none()
            && let Some(effort) = openai.get("reasoning_effort").and_then(Value::as_str)
        {
            let upstream = model.rsplit('/').next().unwrap_or(model);
            settings.think = Some(match effort {
                // gpt-oss takes the level itself; other thinking models take a switch.
                "low" | "medium" | "high" if upstream.starts_with("gpt-oss") => json!(effort),
                "low" | "medium" | "high" => json!(true),
                "none" | "minimal" => json!(false),
                other => {
                    return Err(bad(format!(
                        "`reasoning_effort` '{other}' is not one of none, low, medium, high"
                    )));
                }
            });
        }
        Ok(settings)
    }

    fn apply(self, body: &mut Map<String, Value>) {
        if !self.options.is_empty() {
            body.insert("options".into(), Value::Object(self.options));
        }
        if let Some(format) = self.format {
            body.insert("format".into(), format);
        }
        if let Some(keep_alive) = self.keep_alive {
            body.insert("keep_alive".into(), keep_alive);
        }
        if let Some(think) = self.think {
            body.insert("think".into(), think);
        }
    }
}

fn messages(openai: &Value) -> Result<&Vec<Value>, ProviderError> {
    openai.get("messages").and_then(Value::as_array).ok_or_else(|| bad("`messages` must be an array"))
}

/// A message's text and, for a user message, its images as Ollama takes them (base64).
fn text_and_images(message: &Value, index: usize) -> Result<(String, Vec<Value>), ProviderError> {
    let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
    match message.get("content") {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(text)) => Ok((text.clone(), Vec::new())),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(part.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some("image_url") if role == "user" => images.push(image(part, index)?),
                    other => {
                        return Err(bad(format!(
                            "messages[{index}]: content part '{}' is not supported for ollama models{}",
                            other.unwrap_or("?"),
                            if other == Some("image_url") { " outside user messages" } else { "" }
                        )));
                    }
                }
            }
            Ok((texts.join("\n"), images))
        }
        Some(_) => Err(bad(format!("messages[{index}]: `content` must be a string or an array"))),
    }
}

/// An `image_url` part as the base64 text Ollama takes. The gateway does not fetch web
/// URLs, so those are refused with a 400 rather than fetched.
fn image(part: &Value, index: usize) -> Result<Value, ProviderError> {
    let url = part
        .pointer("/image_url/url")
        .or_else(|| part.get("image_url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: `image_url.url` is missing")))?;
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(bad(format!(
            "messages[{index}]: ollama models take images as data: URLs (base64), not web URLs"
        )));
    }
    let data = match url.strip_prefix("data:") {
        Some(rest) => {
            rest.split_once(";base64,")
                .ok_or_else(|| bad(format!("messages[{index}]: a data URL image must be base64")))?
                .1
        }
        // LiteLLM also takes the bare base64 text.
        None => url,
    };
    Ok(json!(data))
}

/// An assistant tool call as Ollama's, whose `arguments` is an object, not JSON text.
fn tool_call(call: &Value, index: usize) -> Result<Value, ProviderError> {
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: a tool call needs `function.name`")))?;
    let arguments = match call.pointer("/function/arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(text)) if text.trim().is_empty() => json!({}),
        Some(Value::String(text)) => serde_json::from_str(text)
            .map_err(|e| bad(format!("messages[{index}]: tool call arguments are not JSON: {e}")))?,
        Some(object @ Value::Object(_)) => object.clone(),
        Some(_) => return Err(bad(format!("messages[{index}]: tool call arguments must be JSON text"))),
    };
    Ok(json!({"function": {"name": name, "arguments": arguments}}))
}

/// The chat request as an `/api/chat` body.
pub(super) fn chat(
    openai: &Value,
    model: &str,
    stream: bool,
    deployment_params: &Map<String, Value>,
) -> Result<Value, ProviderError> {
    let input = messages(openai)?;
    let settings = Settings::read(openai, model, deployment_params)?;
    // tool_call_id -> function name, for Ollama's `tool_name` on tool results.
    let mut call_names: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(input.len());
    for (i, message) in input.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let (text, images) = text_and_images(message, i)?;
        let mut converted = Map::new();
        match role {
            "system" | "developer" => {
                converted.insert("role".into(), json!("system"));
            }
            "user" => {
                converted.insert("role".into(), json!("user"));
            }
            "assistant" => {
                converted.insert("role".into(), json!("assistant"));
                if let Some(thinking) = message.get("reasoning_content").and_then(Value::as_str) {
                    converted.insert("thinking".into(), json!(thinking));
                }
                let calls = message.get("tool_calls").and_then(Value::as_array).into_iter().flatten();
                let calls = calls
                    .map(|call| {
                        if let (Some(id), Some(name)) = (
                            call.get("id").and_then(Value::as_str),
                            call.pointer("/function/name").and_then(Value::as_str),
                        ) {
                            call_names.push((id.to_owned(), name.to_owned()));
                        }
                        tool_call(call, i)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !calls.is_empty() {
                    converted.insert("tool_calls".into(), Value::Array(calls));
                }
            }
            "tool" | "function" => {
                converted.insert("role".into(), json!("tool"));
                let by_id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .and_then(|id| call_names.iter().find(|(call, _)| call == id))
                    .map(|(_, name)| name.as_str());
                if let Some(name) = by_id.or_else(|| message.get("name").and_then(Value::as_str)) {
                    converted.insert("tool_name".into(), json!(name));
                }
            }
            other => {
                return Err(bad(format!("messages[{i}]: role '{other}' is not supported for ollama models")));
            }
        }
        converted.insert("content".into(), json!(text));
        if !images.is_empty() {
            converted.insert("images".into(), Value::Array(images));
        }
        out.push(Value::Object(converted));
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(out));
    body.insert("stream".into(), json!(stream));
    // `tool_choice` is not sent: Ollama has no such field (LiteLLM drops it too); `none`
    // is honoured by leaving the tools out.
    let no_tools = openai.get("tool_choice").and_then(Value::as_str) == Some("none");
    if let Some(tools) = openai.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty() && !no_tools)
    {
        if tools.iter().any(|tool| tool.get("type").and_then(Value::as_str) != Some("function")) {
            return Err(bad("only tools of type 'function' are supported for ollama models"));
        }
        body.insert("tools".into(), Value::Array(tools.clone()));
    }
    settings.apply(&mut body);
    Ok(Value::Object(body))
}

/// Which section of LiteLLM's prompt a message belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    User,
    System,
    Assistant,
}

/// The chat request as an `/api/generate` body, its messages rendered into one prompt as
/// LiteLLM renders them for `ollama/` models: consecutive messages of a kind are merged into
/// a `### User:`, `### System:` or `### Assistant:` section, and user images go in `images`.
pub(super) fn generate_from_chat(
    openai: &Value,
    model: &str,
    stream: bool,
    deployment_params: &Map<String, Value>,
) -> Result<Value, ProviderError> {
    if openai.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        return Err(bad(format!(
            "`ollama/` models are called through /api/generate, which takes no tools; name the model \
             `ollama_chat/{model}` to call tools"
        )));
    }
    let input = messages(openai)?;
    let settings = Settings::read(openai, model, deployment_params)?;
    let mut prompt = String::new();
    let mut images = Vec::new();
    let mut section: Option<(Section, String)> = None;
    let close = |prompt: &mut String, section: Option<(Section, String)>| {
        if let Some((kind, text)) = section.filter(|(_, text)| !text.is_empty()) {
            let title = match kind {
                Section::User => "User",
                Section::System => "System",
                Section::Assistant => "Assistant",
            };
            prompt.push_str(&format!("### {title}:\n{text}\n\n"));
        }
    };
    for (i, message) in input.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let kind = match role {
            "user" | "tool" | "function" => Section::User,
            "system" | "developer" => Section::System,
            "assistant" => Section::Assistant,
            other => {
                return Err(bad(format!("messages[{i}]: role '{other}' is not supported for ollama models")));
            }
        };
        let (mut text, message_images) = text_and_images(message, i)?;
        images.extend(message_images);
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array).filter(|c| !c.is_empty()) {
            let calls = calls.iter().map(|call| tool_call(call, i)).collect::<Result<Vec<_>, _>>()?;
            text.push_str(&format!("Tool Calls: {}", Value::Array(calls)));
        }
        match &mut section {
            Some((open, merged)) if *open == kind => merged.push_str(&text),
            _ => {
                close(&mut prompt, section.take());
                section = Some((kind, text));
            }
        }
    }
    close(&mut prompt, section);

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("prompt".into(), json!(prompt));
    body.insert("stream".into(), json!(stream));
    if !images.is_empty() {
        body.insert("images".into(), Value::Array(images));
    }
    settings.apply(&mut body);
    Ok(Value::Object(body))
}

/// The legacy completions request as an `/api/generate` body: one prompt (Ollama generates
/// one answer per call), and `suffix` for fill-in-the-middle.
pub(super) fn generate_from_prompt(
    openai: &Value,
    model: &str,
    stream: bool,
    deployment_params: &Map<String, Value>,
) -> Result<Value, ProviderError> {
    let prompt = match openai.get("prompt") {
        Some(Value::String(prompt)) => prompt.clone(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(prompt)] => prompt.clone(),
            _ => return Err(bad("ollama models take one `prompt` string per request")),
        },
        _ => return Err(bad("`prompt` must be a string")),
    };
    let settings = Settings::read(openai, model, deployment_params)?;
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("prompt".into(), json!(prompt));
    body.insert("stream".into(), json!(stream));
    if let Some(suffix) = openai.get("suffix").and_then(Value::as_str) {
        body.insert("suffix".into(), json!(suffix));
    }
    settings.apply(&mut body);
    Ok(Value::Object(body))
}

/// The embeddings request as an `/api/embed` body: every input in one call.
pub(super) fn embed(
    openai: &Value,
    model: &str,
    deployment_params: &Map<String, Value>,
) -> Result<Value, ProviderError> {
    let input = match openai.get("input") {
        Some(Value::String(text)) => vec![json!(text)],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(_) => Ok(item.clone()),
                _ => Err(bad("ollama embeddings take `input` as strings, not tokens")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("`input` must be a string or a non-empty array of strings")),
    };
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("input".into(), Value::Array(input));
    if let Some(dimensions) = openai.get("dimensions").filter(|d| !d.is_null()) {
        body.insert("dimensions".into(), dimensions.clone());
    }
    if let Some(truncate) = openai.get("truncate").filter(|t| t.is_boolean()) {
        body.insert("truncate".into(), truncate.clone());
    }
    let mut options = Map::new();
    let request_params =
        OLLAMA_PARAMS.iter().filter_map(|name| openai.get(*name).map(|value| (*name, value)));
    for (name, value) in deployment_params.iter().map(|(k, v)| (k.as_str(), v)).chain(request_params) {
        match name {
            "keep_alive" => {
                body.insert("keep_alive".into(), value.clone());
            }
            // Generation settings mean nothing to an embedding model.
            "think" | "num_predict" | "stop" | "temperature" | "top_p" | "top_k" | "seed" => {}
            _ => {
                options.insert(name.to_owned(), value.clone());
            }
        }
    }
    if let Some(Value::Object(extra)) = openai.get("options") {
        options.extend(extra.clone());
    }
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn chat_maps_messages_tools_images_and_options() {
        let openai = json!({
            "model": "llama3.1",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "name": "ann", "content": [
                    {"type": "text", "text": "what is here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
                ]},
                {"role": "assistant", "content": null, "reasoning_content": "hmm", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "stop": "END",
            "frequency_penalty": 0.5,
            "num_ctx": 4096,
            "options": {"min_p": 0.05},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "reasoning_effort": "low",
            "keep_alive": "1m",
            "user": "u-1"
        });
        let body = chat(&openai, "llama3.1", true, &params(json!({"num_ctx": 2048, "num_gpu": 1}))).unwrap();
        assert_eq!(body["model"], "llama3.1");
        assert_eq!(body["stream"], true);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(messages[1], json!({"role": "user", "content": "what is here?", "images": ["iVBO"]}));
        assert_eq!(
            messages[2],
            json!({"role": "assistant", "content": "", "thinking": "hmm",
                   "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]})
        );
        assert_eq!(messages[3], json!({"role": "tool", "content": "sunny", "tool_name": "weather"}));
        assert_eq!(body["tools"][0]["function"]["name"], "weather");
        assert!(body.get("tool_choice").is_none());
        assert_eq!(
            body["options"],
            json!({"num_ctx": 4096, "num_gpu": 1, "num_predict": 20, "temperature": 0.2, "top_p": 0.9,
                   "seed": 7, "stop": ["END"], "frequency_penalty": 0.5, "min_p": 0.05}),
            "the request's num_ctx wins over the config's"
        );
        assert_eq!(body["format"], json!({"type": "object"}));
        assert_eq!(body["think"], true);
        assert_eq!(body["keep_alive"], "1m");
        assert!(body.get("user").is_none());

        let json_mode = json!({"messages": [], "response_format": {"type": "json_object"}, "tool_choice": "none",
            "tools": [{"type": "function", "function": {"name": "f"}}], "reasoning_effort": "high"});
        let body = chat(&json_mode, "gpt-oss:20b", false, &Map::new()).unwrap();
        assert_eq!(body["format"], "json");
        assert!(body.get("tools").is_none(), "tool_choice none leaves the tools out");
        assert_eq!(body["think"], "high", "gpt-oss takes the level");
        assert!(body.get("options").is_none());
    }

    #[test]
    fn bad_requests_are_named() {
        let base = |extra: Value| {
            let mut request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            chat(&request, "m", false, &Map::new()).map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(base(json!({"n": 2})).unwrap_err(), "`n` is not supported by ollama models");
        assert!(base(json!({"n": 1, "logprobs": false})).is_ok());
        let web = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
        assert!(base(web).unwrap_err().contains("data: URLs"));
        let bad_args = json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{nope"}}]}]});
        assert!(base(bad_args).unwrap_err().contains("not JSON"));
        assert!(
            base(json!({"messages": [{"role": "robot", "content": "x"}]})).unwrap_err().contains("robot")
        );
        assert!(base(json!({"response_format": {"type": "xml"}})).is_err());
        assert!(base(json!({"options": 3})).is_err());
    }

    #[test]
    fn generate_renders_the_prompt_as_litellm_does() {
        let openai = json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": " there"}, {"type": "image_url", "image_url": {"url": "QUJD"}}]},
                {"role": "assistant", "content": "hello", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "42"}
            ],
            "max_tokens": 5,
            "reasoning_effort": "medium"
        });
        let body = generate_from_chat(&openai, "qwen3", false, &params(json!({"keep_alive": 0}))).unwrap();
        assert_eq!(
            body["prompt"],
            "### System:\nbe brief\n\n### User:\nhi there\n\n### Assistant:\nhelloTool Calls: [{\"function\":{\"name\":\"f\",\"arguments\":{}}}]\n\n### User:\n42\n\n"
        );
        assert_eq!(body["images"], json!(["QUJD"]));
        assert_eq!(body["options"], json!({"num_predict": 5}));
        assert_eq!(body["keep_alive"], 0);
        assert_eq!(body["think"], true);
        let tools = json!({"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]});
        let error = generate_from_chat(&tools, "qwen3", false, &Map::new()).unwrap_err().to_string();
        assert!(error.contains("ollama_chat/qwen3"), "{error}");
    }

    #[test]
    fn completions_and_embeddings_bodies() {
        let body = generate_from_prompt(
            &json!({"prompt": ["def f():"], "suffix": "return x", "max_tokens": 9, "stop": ["\n\n"]}),
            "codellama",
            true,
            &Map::new(),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"model": "codellama", "prompt": "def f():", "stream": true, "suffix": "return x",
                   "options": {"num_predict": 9, "stop": ["\n\n"]}})
        );
        assert!(generate_from_prompt(&json!({"prompt": ["a", "b"]}), "m", false, &Map::new()).is_err());
        assert!(generate_from_prompt(&json!({"prompt": [1, 2]}), "m", false, &Map::new()).is_err());

        let body = embed(
            &json!({"input": "hello", "dimensions": 8, "truncate": false}),
            "nomic-embed-text",
            &params(json!({"num_ctx": 512, "keep_alive": "5m", "temperature": 0.1})),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"model": "nomic-embed-text", "input": ["hello"], "dimensions": 8, "truncate": false,
                   "keep_alive": "5m", "options": {"num_ctx": 512}})
        );
        assert!(embed(&json!({"input": [[1, 2]]}), "m", &Map::new()).is_err());
        assert!(embed(&json!({"input": []}), "m", &Map::new()).is_err());
    }
}
