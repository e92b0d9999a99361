//! Anthropic's Messages API (`anthropic/…` models): the canonical OpenAI chat request
//! translated to `POST /v1/messages` and the answer translated back, streams included.
//!
//! Request: system and developer messages become `system`; `tool` messages become
//! `tool_result` blocks in a user turn; assistant `tool_calls` become `tool_use` blocks;
//! `image_url` parts become `image` blocks; `max_tokens` (required by Anthropic) defaults to
//! [`DEFAULT_MAX_TOKENS`]; `stop` becomes `stop_sequences`; tools and `tool_choice` map
//! one to one (`required` is `any`, `parallel_tool_calls: false` is
//! `disable_parallel_tool_use`). OpenAI parameters Anthropic lacks are rejected with a 400
//! naming them unless they hold their neutral value (LiteLLM's default, `drop_params`
//! off). `response_format` JSON mode is LiteLLM's: a `json_tool_call` tool whose input schema
//! is the requested schema, forced through `tool_choice` (unless thinking is on, which
//! Anthropic does not allow with a forced tool); that call's input comes back as the
//! message's `content`, with `finish_reason` `stop`.
//!
//! Answer: text blocks become `content`, `tool_use` blocks `tool_calls`, `thinking` blocks
//! `reasoning_content`; `stop_reason` maps to `finish_reason`; usage counts cached input in
//! `prompt_tokens` and reports it as `prompt_tokens_details.cached_tokens`. Errors keep
//! Anthropic's message and type; `overloaded_error` (529) becomes 503 and a prompt that is
//! too long gets the code `context_length_exceeded`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};
use tollgate_domain::{Deployment, Endpoint};

use crate::body::{TranslateEvents, TranslatedStream};
use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse, transport};

/// The API version sent as `anthropic-version` unless `extra_headers` sets another.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` when the request gives none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub struct AnthropicProvider {
    client: HttpClient,
}

impl AnthropicProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl crate::Provider for AnthropicProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        if request.endpoint != Endpoint::ChatCompletions {
            return Err(ProviderError::BadRequest(format!(
                "model '{}' is an Anthropic model, which serves chat completions only, not {}",
                deployment.model_name,
                request.endpoint.path()
            )));
        }
        let openai: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ProviderError::BadRequest(format!("invalid JSON body: {e}")))?;
        let include_usage =
            openai.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
        let messages_request = to_messages_request(&openai)?;
        let upstream = build_request(deployment, Bytes::from(messages_request.to_string()))?;
        let response =
            transport::exchange(&self.client, deployment, upstream, request.stream, read_error).await?;
        chat_answer(response, include_usage)
    }
}

/// A Messages API answer, whole or streamed, as the OpenAI chat answer.
pub(crate) fn chat_answer(
    response: UpstreamResponse,
    include_usage: bool,
) -> Result<UpstreamResponse, ProviderError> {
    let body = match response.body {
        UpstreamBody::Complete(bytes) => {
            let message: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Protocol(format!("anthropic answered with invalid JSON: {e}")))?;
            UpstreamBody::Complete(Bytes::from(to_chat_completion(&message, unix_now()).to_string()))
        }
        UpstreamBody::Stream(events) => UpstreamBody::Stream(
            TranslatedStream::new(events, Translator::new(include_usage, unix_now())).boxed(),
        ),
    };
    Ok(UpstreamResponse { headers: response.headers, body })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `api_base` may be the host (`https://api.anthropic.com`), end in `/v1`, or be the full
/// messages URL, as LiteLLM accepts all three.
fn messages_url(api_base: &str) -> String {
    if api_base.ends_with("/v1/messages") {
        api_base.to_owned()
    } else if api_base.ends_with("/v1") {
        format!("{api_base}/messages")
    } else {
        format!("{api_base}/v1/messages")
    }
}

fn build_request(deployment: &Deployment, body: Bytes) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let url = messages_url(deployment.api_base.as_deref().unwrap_or_default());
    messages_api_request(deployment, url, "x-api-key", body)
}

/// A request to a Messages API route at `url`: `anthropic-version`, the deployment's key in
/// the `key_header` its host expects (Anthropic's `x-api-key`, Azure's `api-key`), and the
/// deployment's extra headers.
pub(crate) fn messages_api_request(
    deployment: &Deployment,
    url: String,
    key_header: &'static str,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let mut builder =
        http::Request::post(url).header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // An `anthropic-version` in extra_headers replaces the default rather than doubling it.
    if !deployment.extra_headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("anthropic-version")) {
        builder = builder.header("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
    }
    if let Some(key) = &deployment.api_key {
        builder = builder.header(key_header, transport::secret_header(key.expose(), deployment)?);
    }
    transport::with_extra_headers(builder, deployment)?.body(Full::new(body)).map_err(|e| {
        ProviderError::BadRequest(format!("cannot build the request for '{}': {e}", deployment.model_name))
    })
}

/// What `POST /v1/messages/count_tokens` takes from a Messages request; it refuses the
/// rest (`max_tokens`, `stream`, sampling parameters).
const COUNTED_FIELDS: &[&str] =
    &["model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"];

/// A Messages request cut down to what `count_tokens` takes.
pub(crate) fn count_tokens_body(request: &Value) -> Bytes {
    let mut body = Map::new();
    for name in COUNTED_FIELDS {
        if let Some(value) = request.get(*name).filter(|v| !v.is_null()) {
            body.insert((*name).to_owned(), value.clone());
        }
    }
    Bytes::from(Value::Object(body).to_string())
}

/// Sends a `count_tokens` request and reads `{"input_tokens": N}` from the answer.
pub(crate) async fn send_count_tokens(
    client: &HttpClient,
    deployment: &Deployment,
    upstream: http::Request<Full<Bytes>>,
) -> Result<u64, ProviderError> {
    let response = transport::exchange(client, deployment, upstream, false, read_error).await?;
    let UpstreamBody::Complete(bytes) = response.body else {
        return Err(ProviderError::Protocol("anthropic streamed a count_tokens answer".into()));
    };
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::Protocol(format!("anthropic answered count_tokens with invalid JSON: {e}"))
    })?;
    answer.get("input_tokens").and_then(Value::as_u64).ok_or_else(|| {
        ProviderError::Protocol("anthropic's count_tokens answer has no `input_tokens`".into())
    })
}

impl AnthropicProvider {
    /// The input tokens of an Anthropic Messages `request` (its `model` the upstream's), as
    /// Anthropic's `POST /v1/messages/count_tokens` counts them.
    pub async fn count_tokens(&self, deployment: &Deployment, request: &Value) -> Result<u64, ProviderError> {
        let url =
            format!("{}/count_tokens", messages_url(deployment.api_base.as_deref().unwrap_or_default()));
        let upstream = messages_api_request(deployment, url, "x-api-key", count_tokens_body(request))?;
        send_count_tokens(&self.client, deployment, upstream).await
    }
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// OpenAI parameters Anthropic has no equivalent for, with the value that means "off".
pub(crate) const UNSUPPORTED_PARAMS: &[&str] =
    &["frequency_penalty", "presence_penalty", "logit_bias", "seed", "logprobs", "top_logprobs", "n"];

fn is_neutral(name: &str, value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(if name == "n" { 1.0 } else { 0.0 }),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// The canonical (OpenAI) chat request as an Anthropic Messages request.
pub(crate) fn to_messages_request(openai: &Value) -> Result<Value, ProviderError> {
    let model = openai.get("model").and_then(Value::as_str).ok_or_else(|| bad("missing `model`"))?;
    let input =
        openai.get("messages").and_then(Value::as_array).ok_or_else(|| bad("`messages` must be an array"))?;
    for name in UNSUPPORTED_PARAMS {
        if let Some(value) = openai.get(*name)
            && !is_neutral(name, value)
        {
            return Err(bad(format!("`{name}` is not supported by anthropic models")));
        }
    }
    let json_tool = json_mode_tool(openai.get("response_format"))?;

    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, message) in input.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => system.extend(text_blocks(message.get("content"), i)?),
            "user" => {
                messages.push(json!({"role": "user", "content": user_content(message.get("content"), i)?}))
            }
            "assistant" => {
                let mut blocks = match message.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    content => text_blocks(content, i)?,
                };
                blocks.retain(|b| b.get("text").and_then(Value::as_str).is_none_or(|t| !t.is_empty()));
                if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                    for call in calls {
                        blocks.push(tool_use_block(call, i)?);
                    }
                }
                if !blocks.is_empty() {
                    messages.push(json!({"role": "assistant", "content": blocks}));
                }
            }
            "tool" => {
                let tool_use_id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("messages[{i}]: a tool message needs `tool_call_id`")))?;
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": tool_use_id,
                    "content": text_blocks(message.get("content"), i)?,
                });
                // Results of parallel calls belong in one user turn.
                match messages.last_mut() {
                    Some(last) if last["role"] == "user" && is_tool_results(&last["content"]) => {
                        if let Some(blocks) = last["content"].as_array_mut() {
                            blocks.push(result);
                        }
                    }
                    _ => messages.push(json!({"role": "user", "content": [result]})),
                }
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}]: role '{other}' is not supported for anthropic models"
                )));
            }
        }
    }

    let mut request = Map::new();
    request.insert("model".into(), json!(model));
    request.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        request.insert("system".into(), Value::Array(system));
    }
    let max_tokens = openai
        .get("max_completion_tokens")
        .or_else(|| openai.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    request.insert("max_tokens".into(), json!(max_tokens));
    for name in ["temperature", "top_p", "top_k", "thinking"] {
        if let Some(value) = openai.get(name).filter(|v| !v.is_null()) {
            request.insert(name.into(), value.clone());
        }
    }
    if let Some(effort) = openai.get("reasoning_effort").and_then(Value::as_str) {
        let budget = match effort {
            "low" => 1024,
            "medium" => 2048,
            "high" => 4096,
            other => {
                return Err(bad(format!("`reasoning_effort` '{other}' is not one of low, medium, high")));
            }
        };
        request.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    match openai.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(stop)) => {
            request.insert("stop_sequences".into(), json!([stop]));
        }
        Some(stops @ Value::Array(_)) => {
            request.insert("stop_sequences".into(), stops.clone());
        }
        Some(_) => return Err(bad("`stop` must be a string or an array of strings")),
    }
    if openai.get("stream").and_then(Value::as_bool) == Some(true) {
        request.insert("stream".into(), json!(true));
    }
    if let Some(user) = openai.get("user").and_then(Value::as_str) {
        request.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = openai.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        request.insert(
            "tools".into(),
            Value::Array(tools.iter().map(tool_definition).collect::<Result<_, _>>()?),
        );
    }
    let json_mode = json_tool.is_some();
    if let Some(tool) = json_tool
        && let Some(tools) = request.entry("tools").or_insert_with(|| json!([])).as_array_mut()
    {
        tools.push(tool);
    }
    let parallel = openai.get("parallel_tool_calls").and_then(Value::as_bool);
    let mut choice = match openai.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => Some(match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => return Err(bad(format!("`tool_choice` '{other}' is not one of auto, required, none"))),
        }),
        Some(named) => {
            let name = named
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("`tool_choice` must name a function: {\"type\": \"function\", \"function\": {\"name\": …}}"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    // Anthropic refuses a forced tool while thinking; the model is then asked, not forced.
    if json_mode && choice.is_none() && !request.contains_key("thinking") {
        choice = Some(json!({"type": "tool", "name": JSON_TOOL_NAME}));
    }
    if parallel == Some(false) && request.contains_key("tools") {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(choice) = choice {
        request.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(request))
}

fn is_tool_results(content: &Value) -> bool {
    content.as_array().is_some_and(|blocks| blocks.iter().all(|b| b["type"] == "tool_result"))
}

/// Text content (a string or text parts) as Anthropic text blocks, `cache_control` kept.
fn text_blocks(content: Option<&Value>, index: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(text_block(part)),
                other => Err(bad(format!(
                    "messages[{index}]: content part '{}' is not allowed here",
                    other.unwrap_or("?")
                ))),
            })
            .collect(),
        Some(_) => Err(bad(format!("messages[{index}]: `content` must be a string or an array"))),
    }
}

fn text_block(part: &Value) -> Value {
    let mut block = json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))});
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    block
}

/// A user message's content: a string stays a string; parts become text and image blocks.
fn user_content(content: Option<&Value>, index: usize) -> Result<Value, ProviderError> {
    match content {
        Some(Value::String(text)) => Ok(json!(text)),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(text_block(part)),
                Some("image_url") => image_block(part, index),
                other => Err(bad(format!(
                    "messages[{index}]: content part '{}' is not supported for anthropic models",
                    other.unwrap_or("?")
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Err(bad(format!("messages[{index}]: a user message needs `content`"))),
    }
}

/// `image_url` (a data URL or an https URL) as an Anthropic image block.
fn image_block(part: &Value, index: usize) -> Result<Value, ProviderError> {
    let url = part
        .pointer("/image_url/url")
        .or_else(|| part.get("image_url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: `image_url.url` is missing")))?;
    let source = match url.strip_prefix("data:") {
        Some(rest) => {
            let (media_type, data) = rest
                .split_once(";base64,")
                .ok_or_else(|| bad(format!("messages[{index}]: a data URL image must be base64")))?;
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None => json!({"type": "url", "url": url}),
    };
    Ok(json!({"type": "image", "source": source}))
}

fn tool_use_block(call: &Value, index: usize) -> Result<Value, ProviderError> {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: a tool call needs an `id`")))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: a tool call needs `function.name`")))?;
    let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
    let input: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments)
            .map_err(|e| bad(format!("messages[{index}]: tool call arguments are not JSON: {e}")))?
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn tool_definition(tool: &Value) -> Result<Value, ProviderError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad("only tools of type 'function' are supported for anthropic models"));
    }
    let function = tool.get("function").ok_or_else(|| bad("a tool needs `function`"))?;
    let name =
        function.get("name").and_then(Value::as_str).ok_or_else(|| bad("a tool needs `function.name`"))?;
    let mut definition = json!({
        "name": name,
        "input_schema": function.get("parameters").cloned().unwrap_or(json!({"type": "object", "properties": {}})),
    });
    if let Some(description) = function.get("description") {
        definition["description"] = description.clone();
    }
    if let Some(cache) = tool.get("cache_control") {
        definition["cache_control"] = cache.clone();
    }
    Ok(definition)
}

/// The tool that stands in for `response_format` JSON mode (LiteLLM's name for it).
const JSON_TOOL_NAME: &str = "json_tool_call";

/// The tool for `response_format` JSON mode, if the request asks for JSON.
fn json_mode_tool(format: Option<&Value>) -> Result<Option<Value>, ProviderError> {
    let Some(format) = format.filter(|format| !format.is_null()) else { return Ok(None) };
    let schema = match format.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(None),
        Some("json_object") => json!({"type": "object"}),
        Some("json_schema") => format
            .pointer("/json_schema/schema")
            .cloned()
            .ok_or_else(|| bad("`response_format.json_schema.schema` is missing"))?,
        _ => return Err(bad("`response_format.type` must be text, json_object or json_schema")),
    };
    let description = format
        .pointer("/json_schema/description")
        .and_then(Value::as_str)
        .unwrap_or("Respond with a JSON object.");
    Ok(Some(json!({"name": JSON_TOOL_NAME, "description": description, "input_schema": schema})))
}

fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        None => Value::Null,
        Some("end_turn" | "stop_sequence" | "pause_turn") => json!("stop"),
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
        Some(_) => json!("stop"),
    }
}

/// Anthropic usage as OpenAI usage: cached and cache-written input count as prompt tokens.
fn usage(input: &Value, output_tokens: u64) -> Value {
    let count = |key: &str| input.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    let prompt = count("input_tokens") + cached + count("cache_creation_input_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output_tokens,
        "total_tokens": prompt + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// An Anthropic `message` as an OpenAI `chat.completion`.
pub(crate) fn to_chat_completion(message: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    // The JSON-mode tool's input is the answer itself (any text beside it is not).
    let mut json_answer: Option<String> = None;
    for block in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") if block.get("name").and_then(Value::as_str) == Some(JSON_TOOL_NAME) => {
                json_answer = Some(block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string));
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let json_mode = json_answer.is_some();
    if let Some(json) = json_answer {
        text = json;
    }
    let mut assistant = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        assistant["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        assistant["reasoning_content"] = json!(reasoning);
    }
    let empty = json!({});
    let usage_in = message.get("usage").unwrap_or(&empty);
    json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": assistant,
            "logprobs": null,
            "finish_reason": match message.get("stop_reason").and_then(Value::as_str) {
                Some("tool_use") if json_mode && assistant.get("tool_calls").is_none() => json!("stop"),
                reason => finish_reason(reason),
            },
        }],
        "usage": usage(usage_in, usage_in.get("output_tokens").and_then(Value::as_u64).unwrap_or(0)),
    })
}

/// Anthropic's SSE events (`message_start`, `content_block_*`, `message_delta`,
/// `message_stop`, `ping`, `error`) as OpenAI `chat.completion.chunk` events. The state
/// carried across events: ids, which content block is which tool call, usage.
struct Translator {
    include_usage: bool,
    created: u64,
    id: Value,
    model: Value,
    input_usage: Value,
    output_tokens: u64,
    /// Anthropic content-block index -> OpenAI tool-call index.
    tool_blocks: Vec<(u64, usize)>,
    /// The content block of the JSON-mode tool, whose input streams as `content`.
    json_block: Option<u64>,
    finished: bool,
}

impl Translator {
    fn new(include_usage: bool, created: u64) -> Self {
        Self {
            include_usage,
            created,
            id: Value::Null,
            model: Value::Null,
            input_usage: json!({}),
            output_tokens: 0,
            tool_blocks: Vec::new(),
            json_block: None,
            finished: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Value) -> Bytes {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    }
}

impl TranslateEvents for Translator {
    const PROVIDER: &'static str = "anthropic";

    fn finished(&self) -> bool {
        self.finished
    }

    fn event(&mut self, event: &Value) -> Option<Bytes> {
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match event.get("type").and_then(Value::as_str)? {
            "message_start" => {
                let message = event.get("message")?;
                self.id = message.get("id").cloned().unwrap_or(Value::Null);
                self.model = message.get("model").cloned().unwrap_or(Value::Null);
                if let Some(usage) = message.get("usage") {
                    self.input_usage = usage.clone();
                    self.output_tokens = usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                }
                Some(self.chunk(json!({"role": "assistant", "content": ""}), Value::Null))
            }
            "content_block_start" => {
                let block = event.get("content_block")?;
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return None;
                }
                if block.get("name").and_then(Value::as_str) == Some(JSON_TOOL_NAME) {
                    self.json_block = Some(index);
                    return None;
                }
                let position = self.tool_blocks.len();
                self.tool_blocks.push((index, position));
                Some(self.chunk(
                    json!({"tool_calls": [{
                        "index": position,
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""},
                    }]}),
                    Value::Null,
                ))
            }
            "content_block_delta" => {
                let delta = event.get("delta")?;
                match delta.get("type").and_then(Value::as_str)? {
                    "text_delta" => Some(self.chunk(json!({"content": delta.get("text")}), Value::Null)),
                    "thinking_delta" => {
                        Some(self.chunk(json!({"reasoning_content": delta.get("thinking")}), Value::Null))
                    }
                    "input_json_delta" if self.json_block == Some(index) => {
                        Some(self.chunk(json!({"content": delta.get("partial_json")}), Value::Null))
                    }
                    "input_json_delta" => {
                        let position = self.tool_blocks.iter().find(|(block, _)| *block == index)?.1;
                        Some(self.chunk(
                            json!({"tool_calls": [{"index": position, "function": {"arguments": delta.get("partial_json")}}]}),
                            Value::Null,
                        ))
                    }
                    _ => None,
                }
            }
            "message_delta" => {
                if let Some(tokens) = event.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.output_tokens = tokens;
                }
                let finish = match event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some("tool_use") if self.json_block.is_some() && self.tool_blocks.is_empty() => {
                        json!("stop")
                    }
                    reason => finish_reason(reason),
                };
                Some(self.chunk(json!({}), finish))
            }
            "message_stop" => {
                self.finished = true;
                let mut out = BytesMut::new();
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage(&self.input_usage, self.output_tokens),
                    });
                    out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Some(out.freeze())
            }
            "error" => {
                self.finished = true;
                let error = event.get("error").cloned().unwrap_or(json!({}));
                let body = json!({"error": {
                    "message": error.get("message").cloned().unwrap_or(json!("anthropic stream error")),
                    "type": error.get("type").cloned().unwrap_or(json!("api_error")),
                    "param": null,
                    "code": if error.get("type").and_then(Value::as_str) == Some("overloaded_error") { "503" } else { "500" },
                }});
                Some(Bytes::from(format!("data: {body}\n\n")))
            }
            _ => None,
        }
    }
}

/// Anthropic's error body (`{"type": "error", "error": {"type", "message"}}`) as an error.
pub(crate) fn read_error(status: u16, body: &[u8], deployment: &Deployment) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error = json.as_ref().and_then(|j| j.get("error"));
    let error_type = error.and_then(|e| e.get("type")).and_then(Value::as_str).map(str::to_owned);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| transport::quote_body(status, body));
    let too_long = message.contains("prompt is too long") || message.contains("too many tokens");
    let (status, code) = match (status, error_type.as_deref()) {
        (529, _) | (_, Some("overloaded_error")) => (503, Some("overloaded".to_owned())),
        (400, _) if too_long => (400, Some("context_length_exceeded".to_owned())),
        (status, _) => (status, None),
    };
    ProviderError::Upstream {
        status,
        message: transport::redact(deployment, message),
        error_type,
        param: None,
        code,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::translate_raw;

    #[test]
    fn version_header_defaults_and_can_be_overridden() {
        let deployment = |extra: &str| {
            tollgate_domain::GatewayConfig::from_yaml(
                &format!("model_list:\n  - model_name: c\n    litellm_params: {{model: anthropic/claude, api_key: k{extra}}}\n"),
                &std::collections::HashMap::new(),
            )
            .unwrap()
            .deployments
            .remove(0)
        };
        let request = build_request(&deployment(""), Bytes::new()).unwrap();
        assert_eq!(request.uri(), "https://api.anthropic.com/v1/messages");
        assert_eq!(request.headers()["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(request.headers()["x-api-key"], "k");
        let request =
            build_request(&deployment(", extra_headers: {Anthropic-Version: 2099-01-01}"), Bytes::new())
                .unwrap();
        let versions: Vec<_> = request.headers().get_all("anthropic-version").iter().collect();
        assert_eq!(versions, ["2099-01-01"]);
    }

    #[test]
    fn api_base_in_every_form_litellm_accepts() {
        assert_eq!(messages_url("https://api.anthropic.com"), "https://api.anthropic.com/v1/messages");
        assert_eq!(messages_url("http://h:1/v1"), "http://h:1/v1/messages");
        assert_eq!(messages_url("http://h:1/v1/messages"), "http://h:1/v1/messages");
    }

    #[test]
    fn request_translation_covers_system_tools_images_and_results() {
        let openai = json!({
            "model": "claude-sonnet-4",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "noon"}
            ],
            "max_tokens": 100,
            "temperature": 0.2,
            "stop": "END",
            "user": "u-1",
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "presence_penalty": 0
        });
        let out = to_messages_request(&openai).unwrap();
        assert_eq!(out["system"], json!([{"type": "text", "text": "be brief"}]));
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(out["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(
            out["tools"][0],
            json!({"name": "weather", "description": "d", "input_schema": {"type": "object"}})
        );
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(
            messages[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBO"})
        );
        assert_eq!(
            messages[1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(messages[1]["content"][1]["input"], json!({}));
        assert_eq!(messages[2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(messages[2]["content"][1]["tool_use_id"], "call_2");
        assert!(out.get("presence_penalty").is_none());
    }

    #[test]
    fn unsupported_parameters_are_named() {
        let base = |extra: Value| {
            let mut request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            to_messages_request(&request)
        };
        assert_eq!(
            base(json!({"seed": 7})).unwrap_err().to_string(),
            "`seed` is not supported by anthropic models"
        );
        assert!(base(json!({"n": 2})).is_err());
        assert!(base(json!({"n": 1, "seed": null})).is_ok());
        assert!(base(json!({"response_format": {"type": "yaml"}})).is_err());
        assert!(
            base(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})).is_err()
        );
        assert_eq!(base(json!({})).unwrap()["max_tokens"], DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn json_mode_is_a_forced_tool_whose_input_is_the_answer() {
        let schema =
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let request = to_messages_request(&json!({
            "model": "m", "messages": [{"role": "user", "content": "where?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
        }))
        .unwrap();
        assert_eq!(request["tools"][0]["name"], JSON_TOOL_NAME);
        assert_eq!(request["tools"][0]["input_schema"], schema);
        assert_eq!(request["tool_choice"], json!({"type": "tool", "name": JSON_TOOL_NAME}));
        let thinking = to_messages_request(&json!({
            "model": "m", "messages": [{"role": "user", "content": "where?"}],
            "response_format": {"type": "json_object"}, "reasoning_effort": "low",
        }))
        .unwrap();
        assert_eq!(thinking["tools"][0]["input_schema"], json!({"type": "object"}));
        assert!(thinking.get("tool_choice").is_none(), "a forced tool is refused while thinking");
        let plain = to_messages_request(&json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"},
        }))
        .unwrap();
        assert!(plain.get("tools").is_none());

        let answer = to_chat_completion(
            &json!({"id": "msg_1", "model": "claude", "stop_reason": "tool_use", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL_NAME, "input": {"city": "Paris"}}],
                "usage": {"input_tokens": 3, "output_tokens": 4}}),
            1,
        );
        let choice = &answer["choices"][0];
        assert_eq!(
            serde_json::from_str::<Value>(choice["message"]["content"].as_str().unwrap()).unwrap(),
            json!({"city": "Paris"})
        );
        assert!(choice["message"].get("tool_calls").is_none());
        assert_eq!(choice["finish_reason"], "stop");

        let mut t = Translator::new(false, 1);
        let events = [
            r#"data: {"type":"message_start","message":{"id":"msg_2","model":"claude","usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_2","name":"json_tool_call","input":{}}}"#,
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":" \"Paris\"}"}}"#,
            r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":5}}"#,
        ];
        let chunks: Vec<Value> = events
            .iter()
            .filter_map(|e| translate_raw(&mut t, e.as_bytes()))
            .map(|b| {
                serde_json::from_str(
                    String::from_utf8(b.to_vec()).unwrap().trim().strip_prefix("data: ").unwrap(),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(chunks.len(), 4, "the tool's start says nothing: {chunks:?}");
        let text: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "{\"city\": \"Paris\"}");
        assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn response_translation_maps_tools_reasoning_and_usage() {
        let message = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0}
        });
        let out = to_chat_completion(&message, 42);
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "checking");
        assert_eq!(choice["message"]["reasoning_content"], "hmm");
        assert_eq!(choice["message"]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 3}})
        );
        assert_eq!(out["object"], "chat.completion");
    }

    #[test]
    fn errors_keep_the_message_and_map_overload_and_length() {
        let deployment = tollgate_domain::GatewayConfig::from_yaml(
            "model_list:\n  - model_name: c\n    litellm_params: {model: anthropic/claude, api_key: sk-ant-secret}\n",
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0);
        let overloaded = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let ProviderError::Upstream { status, code, .. } = read_error(529, overloaded, &deployment) else {
            panic!()
        };
        assert_eq!((status, code.as_deref()), (503, Some("overloaded")));
        let long = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 300000 tokens > 200000 maximum"}}"#;
        let ProviderError::Upstream { code, .. } = read_error(400, long, &deployment) else { panic!() };
        assert_eq!(code.as_deref(), Some("context_length_exceeded"));
        let auth = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-secret"}}"#;
        let ProviderError::Upstream { status, message, error_type, .. } = read_error(401, auth, &deployment)
        else {
            panic!()
        };
        assert_eq!(
            (status, message.as_str(), error_type.as_deref()),
            (401, "invalid x-api-key [redacted]", Some("authentication_error"))
        );
    }

    #[test]
    fn stream_events_become_openai_chunks() {
        let mut t = Translator::new(true, 1);
        let events = [
            r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#,
            "event: ping\ndata: {\"type\": \"ping\"}",
            r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
            r#"event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
            r#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":7}}"#,
            "event: message_stop\ndata: {\"type\":\"message_stop\"}",
        ];
        let out: Vec<String> = events
            .iter()
            .filter_map(|e| translate_raw(&mut t, e.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(out.len(), 6, "{out:?}");
        let chunk = |i: usize| -> Value {
            serde_json::from_str(out[i].trim().strip_prefix("data: ").unwrap()).unwrap()
        };
        assert_eq!(chunk(0)["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunk(0)["id"], "msg_1");
        assert_eq!(chunk(1)["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(chunk(2)["choices"][0]["delta"]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(chunk(3)["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"city\":");
        assert_eq!(chunk(4)["choices"][0]["finish_reason"], "tool_calls");
        let last: Vec<&str> = out[5].split("\n\n").filter(|s| !s.is_empty()).collect();
        let usage: Value = serde_json::from_str(last[0].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 7);
        assert_eq!(usage["usage"]["prompt_tokens"], 10);
        assert_eq!(last[1], "data: [DONE]");
    }
}
