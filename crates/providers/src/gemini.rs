//! Google AI Studio's Gemini API (`gemini/…` models): the canonical OpenAI request
//! translated to `generateContent` / `streamGenerateContent?alt=sse` / `batchEmbedContents`
//! and the answers translated back.
//!
//! Request: system and developer messages become `systemInstruction`; assistant turns are
//! `model` turns, their `tool_calls` `functionCall` parts; `tool` messages become
//! `functionResponse` parts (named after the call they answer) in one user turn; data-URL
//! images become `inlineData`. `max_tokens` is `maxOutputTokens`, `stop` `stopSequences`, `n`
//! `candidateCount`; `response_format` JSON mode sets `responseMimeType` (and
//! `responseJsonSchema` for a schema); `reasoning_effort` sets a thinking budget with thoughts
//! included; tools and `tool_choice` map to `functionDeclarations` and `functionCallingConfig`.
//! OpenAI parameters Gemini lacks are rejected with a 400 naming them unless neutral.
//!
//! Answer: text parts become `content`, thought parts `reasoning_content`, `functionCall`
//! parts `tool_calls`; `finishReason` maps to `finish_reason` (`SAFETY` and its kin to
//! `content_filter`); `usageMetadata` to usage with cached and reasoning tokens. Errors keep
//! Google's message and status name; an invalid key is 401, `RESOURCE_EXHAUSTED` 429,
//! `UNAVAILABLE` 503, and an over-long prompt gets `context_length_exceeded`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};
use tollgate_domain::{Deployment, Endpoint};

use crate::body::{TranslateEvents, TranslatedStream};
use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse, transport};

pub struct GeminiProvider {
    client: HttpClient,
}

impl GeminiProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl crate::Provider for GeminiProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let openai: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ProviderError::BadRequest(format!("invalid JSON body: {e}")))?;
        let model =
            openai.get("model").and_then(Value::as_str).ok_or_else(|| bad("missing `model`"))?.to_owned();
        match request.endpoint {
            Endpoint::ChatCompletions => {
                let include_usage =
                    openai.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
                let body = to_generate_request(&openai)?;
                let method = if request.stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
                let upstream = build_request(deployment, &model, method, body)?;
                let response =
                    transport::exchange(&self.client, deployment, upstream, request.stream, read_error)
                        .await?;
                chat_answer(response, &model, include_usage)
            }
            Endpoint::Embeddings => {
                let body = to_embed_request(&openai, &model)?;
                let upstream = build_request(deployment, &model, "batchEmbedContents", body)?;
                let response =
                    transport::exchange(&self.client, deployment, upstream, false, read_error).await?;
                let UpstreamBody::Complete(bytes) = response.body else {
                    return Err(ProviderError::Protocol("gemini streamed an embeddings answer".into()));
                };
                let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    ProviderError::Protocol(format!("gemini answered with invalid JSON: {e}"))
                })?;
                let body = UpstreamBody::Complete(Bytes::from(to_embeddings(&answer, &model).to_string()));
                Ok(UpstreamResponse { headers: response.headers, body })
            }
            other => Err(ProviderError::BadRequest(format!(
                "model '{}' is a Gemini model, which serves chat completions and embeddings, not {}",
                deployment.model_name,
                other.path()
            ))),
        }
    }
}

/// A `generateContent` answer, whole or streamed, as the OpenAI chat answer.
pub(crate) fn chat_answer(
    response: UpstreamResponse,
    model: &str,
    include_usage: bool,
) -> Result<UpstreamResponse, ProviderError> {
    let body = match response.body {
        UpstreamBody::Complete(bytes) => {
            let answer: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Protocol(format!("gemini answered with invalid JSON: {e}")))?;
            UpstreamBody::Complete(Bytes::from(to_chat_completion(&answer, model, unix_now())?.to_string()))
        }
        UpstreamBody::Stream(events) => {
            let translator = Translator::new(model, include_usage, unix_now());
            UpstreamBody::Stream(TranslatedStream::new(events, translator).boxed())
        }
    };
    Ok(UpstreamResponse { headers: response.headers, body })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// `{api_base}/v1beta/models/{model}:{method}`; an `api_base` that already names the API
/// version (`…/v1beta` or `…/v1`) is used as it is.
fn method_url(api_base: &str, model: &str, method: &str) -> String {
    let base = api_base.trim_end_matches('/');
    let model = model.strip_prefix("models/").unwrap_or(model);
    if base.ends_with("/v1beta") || base.ends_with("/v1") {
        format!("{base}/models/{model}:{method}")
    } else {
        format!("{base}/v1beta/models/{model}:{method}")
    }
}

fn build_request(
    deployment: &Deployment,
    model: &str,
    method: &str,
    body: Value,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let url = method_url(deployment.api_base.as_deref().unwrap_or_default(), model, method);
    let mut builder =
        http::Request::post(url).header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The key travels in a header, never in the URL, so it cannot end up in a log line.
    if let Some(key) = &deployment.api_key {
        builder = builder.header("x-goog-api-key", transport::secret_header(key.expose(), deployment)?);
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

/// OpenAI parameters Gemini has no equivalent for, with the value that means "off".
pub(crate) const UNSUPPORTED_PARAMS: &[&str] = &["logit_bias", "top_logprobs", "logprobs"];

fn is_neutral(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// The canonical (OpenAI) chat request as a `generateContent` request.
pub(crate) fn to_generate_request(openai: &Value) -> Result<Value, ProviderError> {
    let input =
        openai.get("messages").and_then(Value::as_array).ok_or_else(|| bad("`messages` must be an array"))?;
    for name in UNSUPPORTED_PARAMS {
        if openai.get(*name).is_some_and(|value| !is_neutral(value)) {
            return Err(bad(format!("`{name}` is not supported by gemini models")));
        }
    }
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // tool_call_id -> function name: a functionResponse is named, not numbered.
    let mut call_names: Vec<(String, String)> = Vec::new();
    for (i, message) in input.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => system.extend(text_parts(message.get("content"), i)?),
            "user" => push_turn(&mut contents, "user", user_parts(message.get("content"), i)?),
            "assistant" => {
                let mut parts = match message.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    content => text_parts(content, i)?,
                };
                parts.retain(|p| p.get("text").and_then(Value::as_str).is_none_or(|t| !t.is_empty()));
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let (id, part) = function_call_part(call, i)?;
                    if let Some(name) = part.pointer("/functionCall/name").and_then(Value::as_str) {
                        call_names.push((id, name.to_owned()));
                    }
                    parts.push(part);
                }
                if !parts.is_empty() {
                    push_turn(&mut contents, "model", parts);
                }
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("messages[{i}]: a tool message needs `tool_call_id`")))?;
                let name = call_names
                    .iter()
                    .find(|(call, _)| call == id)
                    .map(|(_, name)| name.clone())
                    .or_else(|| message.get("name").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| {
                        bad(format!("messages[{i}]: no earlier assistant tool call has id '{id}'"))
                    })?;
                let text: String = text_parts(message.get("content"), i)?
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect();
                // Gemini wants an object; a JSON object answer goes as it is.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({"content": text}),
                };
                push_turn(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            other => {
                return Err(bad(format!("messages[{i}]: role '{other}' is not supported for gemini models")));
            }
        }
    }
    if contents.is_empty() {
        return Err(bad("`messages` must hold at least one user or assistant message for gemini models"));
    }

    let mut request = Map::new();
    request.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        request.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let config = generation_config(openai)?;
    if !config.is_empty() {
        request.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = openai.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        let declarations = tools.iter().map(function_declaration).collect::<Result<Vec<_>, _>>()?;
        request.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    if let Some(choice) = tool_config(openai.get("tool_choice"))? {
        request.insert("toolConfig".into(), choice);
    }
    Ok(Value::Object(request))
}

/// Appends parts to the last turn when it has the same role (Gemini expects turns to
/// alternate, and parallel function responses belong together), else starts a new turn.
fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if let Some(last) = contents.last_mut()
        && last["role"] == role
        && let Some(existing) = last["parts"].as_array_mut()
    {
        existing.extend(parts);
        return;
    }
    contents.push(json!({"role": role, "parts": parts}));
}

fn generation_config(openai: &Value) -> Result<Map<String, Value>, ProviderError> {
    let mut config = Map::new();
    let mut copy = |from: &str, to: &str| {
        if let Some(value) = openai.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), value.clone());
        }
    };
    copy("temperature", "temperature");
    copy("top_p", "topP");
    copy("top_k", "topK");
    copy("seed", "seed");
    copy("presence_penalty", "presencePenalty");
    copy("frequency_penalty", "frequencyPenalty");
    copy("n", "candidateCount");
    copy("max_tokens", "maxOutputTokens");
    copy("max_completion_tokens", "maxOutputTokens");
    match openai.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(stop)) => {
            config.insert("stopSequences".into(), json!([stop]));
        }
        Some(stops @ Value::Array(_)) => {
            config.insert("stopSequences".into(), stops.clone());
        }
        Some(_) => return Err(bad("`stop` must be a string or an array of strings")),
    }
    match openai.get("response_format") {
        None | Some(Value::Null) => {}
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    config.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => return Err(bad("`response_format.type` must be text, json_object or json_schema")),
        },
    }
    if let Some(effort) = openai.get("reasoning_effort").and_then(Value::as_str) {
        let budget = match effort {
            "none" => 0,
            "minimal" | "low" => 1024,
            "medium" => 2048,
            "high" => 4096,
            other => {
                return Err(bad(format!("`reasoning_effort` '{other}' is not one of low, medium, high")));
            }
        };
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": budget > 0}),
        );
    }
    Ok(config)
}

fn tool_config(choice: Option<&Value>) -> Result<Option<Value>, ProviderError> {
    let config = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "required" => json!({"mode": "ANY"}),
            "none" => json!({"mode": "NONE"}),
            other => return Err(bad(format!("`tool_choice` '{other}' is not one of auto, required, none"))),
        },
        Some(named) => {
            let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                bad("`tool_choice` must name a function: {\"type\": \"function\", \"function\": {\"name\": …}}")
            })?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
    };
    Ok(Some(json!({"functionCallingConfig": config})))
}

/// Text content (a string or text parts) as Gemini text parts.
fn text_parts(content: Option<&Value>, index: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"text": part.get("text").cloned().unwrap_or(json!(""))})),
                other => Err(bad(format!(
                    "messages[{index}]: content part '{}' is not allowed here",
                    other.unwrap_or("?")
                ))),
            })
            .collect(),
        Some(_) => Err(bad(format!("messages[{index}]: `content` must be a string or an array"))),
    }
}

/// A user message's parts: text, and images given as data URLs.
fn user_parts(content: Option<&Value>, index: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        Some(Value::String(text)) => Ok(vec![json!({"text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"text": part.get("text").cloned().unwrap_or(json!(""))})),
                Some("image_url") => image_part(part, index),
                other => Err(bad(format!(
                    "messages[{index}]: content part '{}' is not supported for gemini models",
                    other.unwrap_or("?")
                ))),
            })
            .collect(),
        _ => Err(bad(format!("messages[{index}]: a user message needs `content`"))),
    }
}

/// A data-URL image as `inlineData`. Google AI Studio does not fetch web URLs, so those are
/// refused rather than fetched by the gateway.
fn image_part(part: &Value, index: usize) -> Result<Value, ProviderError> {
    let url = part
        .pointer("/image_url/url")
        .or_else(|| part.get("image_url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: `image_url.url` is missing")))?;
    let rest = url.strip_prefix("data:").ok_or_else(|| {
        bad(format!("messages[{index}]: gemini models take images as data: URLs (base64), not web URLs"))
    })?;
    let (mime_type, data) = rest
        .split_once(";base64,")
        .ok_or_else(|| bad(format!("messages[{index}]: a data URL image must be base64")))?;
    Ok(json!({"inlineData": {"mimeType": mime_type, "data": data}}))
}

/// An assistant tool call as a `functionCall` part, with its id for the answer to follow.
fn function_call_part(call: &Value, index: usize) -> Result<(String, Value), ProviderError> {
    let id = call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: a tool call needs `function.name`")))?;
    let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
    let args: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments)
            .map_err(|e| bad(format!("messages[{index}]: tool call arguments are not JSON: {e}")))?
    };
    Ok((id, json!({"functionCall": {"name": name, "args": args}})))
}

fn function_declaration(tool: &Value) -> Result<Value, ProviderError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad("only tools of type 'function' are supported for gemini models"));
    }
    let function = tool.get("function").ok_or_else(|| bad("a tool needs `function`"))?;
    let name =
        function.get("name").and_then(Value::as_str).ok_or_else(|| bad("a tool needs `function.name`"))?;
    let mut declaration = json!({"name": name});
    if let Some(description) = function.get("description") {
        declaration["description"] = description.clone();
    }
    if let Some(parameters) = function.get("parameters") {
        // Standard JSON Schema, as OpenAI takes it; `parameters` would need Google's subset.
        declaration["parametersJsonSchema"] = parameters.clone();
    }
    Ok(declaration)
}

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> Value {
    match reason {
        None => Value::Null,
        Some("STOP") if has_tool_calls => json!("tool_calls"),
        Some("MAX_TOKENS") => json!("length"),
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
            | "LANGUAGE",
        ) => json!("content_filter"),
        Some("MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL") => json!("tool_calls"),
        Some(_) => json!("stop"),
    }
}

/// `usageMetadata` as OpenAI usage; thinking tokens count as completion tokens, as LiteLLM
/// counts them, and are also reported as reasoning tokens.
fn usage(metadata: &Value) -> Value {
    let count = |key: &str| metadata.get(key).and_then(Value::as_u64).unwrap_or(0);
    let prompt = count("promptTokenCount") + count("toolUsePromptTokenCount");
    let reasoning = count("thoughtsTokenCount");
    let completion = count("candidatesTokenCount") + reasoning;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": count("cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    })
}

/// The pieces of one candidate's parts.
#[derive(Default)]
struct Parts {
    text: String,
    reasoning: String,
    tool_calls: Vec<Value>,
}

fn read_parts(candidate: &Value, first_tool_index: usize) -> Parts {
    let mut parts = Parts::default();
    for part in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
        if let Some(call) = part.get("functionCall") {
            let index = first_tool_index + parts.tool_calls.len();
            parts.tool_calls.push(json!({
                "index": index,
                "id": format!("call_{}", uuid::Uuid::new_v4().simple()),
                "type": "function",
                "function": {
                    "name": call.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": call.get("args").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            }));
        } else if let Some(text) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                parts.reasoning.push_str(text);
            } else {
                parts.text.push_str(text);
            }
        }
    }
    parts
}

/// A prompt Gemini refused outright comes back with no candidates and a `blockReason`.
fn blocked_prompt(answer: &Value) -> Option<ProviderError> {
    let reason = answer.pointer("/promptFeedback/blockReason").and_then(Value::as_str)?;
    if answer.get("candidates").and_then(Value::as_array).is_some_and(|c| !c.is_empty()) {
        return None;
    }
    Some(ProviderError::Upstream {
        status: 400,
        message: format!("the prompt was blocked by gemini's safety filters (blockReason {reason})"),
        error_type: Some("invalid_request_error".into()),
        param: None,
        code: Some("content_filter".into()),
        retry_after: None,
    })
}

/// A `GenerateContentResponse` as an OpenAI `chat.completion`.
pub(crate) fn to_chat_completion(answer: &Value, model: &str, created: u64) -> Result<Value, ProviderError> {
    if let Some(error) = blocked_prompt(answer) {
        return Err(error);
    }
    let choices: Vec<Value> = answer
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(position, candidate)| {
            let Parts { text, reasoning, mut tool_calls } = read_parts(candidate, 0);
            for call in &mut tool_calls {
                if let Some(call) = call.as_object_mut() {
                    call.remove("index");
                }
            }
            let finish =
                finish_reason(candidate.get("finishReason").and_then(Value::as_str), !tool_calls.is_empty());
            let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) };
            let mut message = json!({"role": "assistant", "content": content});
            if !tool_calls.is_empty() {
                message["tool_calls"] = Value::Array(tool_calls);
            }
            if !reasoning.is_empty() {
                message["reasoning_content"] = json!(reasoning);
            }
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish})
        })
        .collect();
    let empty = json!({});
    Ok(json!({
        "id": answer.get("responseId").and_then(Value::as_str).map_or_else(
            || format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            |id| format!("chatcmpl-{id}"),
        ),
        "object": "chat.completion",
        "created": created,
        "model": answer.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": choices,
        "usage": usage(answer.get("usageMetadata").unwrap_or(&empty)),
    }))
}

/// The embeddings request as `batchEmbedContents`: one entry per input string.
fn to_embed_request(openai: &Value, model: &str) -> Result<Value, ProviderError> {
    let inputs: Vec<&str> = match openai.get("input") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| bad("gemini embeddings take `input` as strings, not tokens"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("`input` must be a string or a non-empty array of strings")),
    };
    let model = model.strip_prefix("models/").unwrap_or(model);
    let dimensions = openai.get("dimensions").and_then(Value::as_u64);
    let requests: Vec<Value> = inputs
        .into_iter()
        .map(|text| {
            let mut entry =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
            if let Some(dimensions) = dimensions {
                entry["outputDimensionality"] = json!(dimensions);
            }
            entry
        })
        .collect();
    Ok(json!({"requests": requests}))
}

fn to_embeddings(answer: &Value, model: &str) -> Value {
    let data: Vec<Value> = answer
        .get("embeddings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, embedding)| {
            json!({"object": "embedding", "index": index, "embedding": embedding.get("values").cloned().unwrap_or(json!([]))})
        })
        .collect();
    // Google does not report tokens for embeddings.
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}})
}

/// Gemini's SSE (`data: <GenerateContentResponse>` per event) as OpenAI chunks; the event
/// with a `finishReason` also carries the final usage, so the stream ends there.
struct Translator {
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    started: bool,
    tool_calls: usize,
    usage: Value,
    finished: bool,
}

impl Translator {
    fn new(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            include_usage,
            created,
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            started: false,
            tool_calls: 0,
            usage: json!({}),
            finished: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Value) -> String {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        format!("data: {chunk}\n\n")
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    fn finish(&self) -> String {
        let mut out = String::new();
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage,
            });
            out.push_str(&format!("data: {chunk}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }
}

impl TranslateEvents for Translator {
    const PROVIDER: &'static str = "gemini";

    fn finished(&self) -> bool {
        self.finished
    }

    fn event(&mut self, answer: &Value) -> Option<Bytes> {
        let mut out = String::new();
        if let Some(error) = answer.get("error") {
            self.finished = true;
            let body = json!({"error": {
                "message": error.get("message").cloned().unwrap_or(json!("gemini stream error")),
                "type": error.get("status").cloned().unwrap_or(json!("api_error")),
                "param": null,
                "code": error.get("code").map_or_else(|| "500".to_owned(), |c| c.to_string()),
            }});
            return Some(Bytes::from(format!("data: {body}\n\n")));
        }
        if let Some(version) = answer.get("modelVersion").and_then(Value::as_str)
            && !self.started
        {
            self.model = version.to_owned();
        }
        if !self.started {
            self.started = true;
            out.push_str(&self.chunk(json!({"role": "assistant", "content": ""}), Value::Null));
        }
        if let Some(metadata) = answer.get("usageMetadata") {
            self.usage = usage(metadata);
        }
        // A refused prompt ends the stream the way a filtered answer does.
        if blocked_prompt(answer).is_some() {
            self.finished = true;
            out.push_str(&self.chunk(json!({}), json!("content_filter")));
            out.push_str(&self.finish());
            return Some(Bytes::from(out));
        }
        let candidate = answer.pointer("/candidates/0")?;
        let Parts { text, reasoning, tool_calls } = read_parts(candidate, self.tool_calls);
        self.tool_calls += tool_calls.len();
        if !reasoning.is_empty() {
            out.push_str(&self.chunk(json!({"reasoning_content": reasoning}), Value::Null));
        }
        if !text.is_empty() {
            out.push_str(&self.chunk(json!({"content": text}), Value::Null));
        }
        if !tool_calls.is_empty() {
            out.push_str(&self.chunk(json!({"tool_calls": tool_calls}), Value::Null));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finished = true;
            out.push_str(&self.chunk(json!({}), finish_reason(Some(reason), self.tool_calls > 0)));
            out.push_str(&self.finish());
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

/// Google's error body (`{"error": {"code", "message", "status", "details"}}`) as an error.
pub(crate) fn read_error(status: u16, body: &[u8], deployment: &Deployment) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    // streamGenerateContent without alt=sse wraps errors in an array; accept both.
    let error = json.as_ref().and_then(|j| j.get("error").or_else(|| j.pointer("/0/error")));
    let status_name = error.and_then(|e| e.get("status")).and_then(Value::as_str).map(str::to_owned);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| transport::quote_body(status, body));
    let invalid_key = message.contains("API key not valid")
        || error.and_then(|e| e.get("details")).is_some_and(|d| d.to_string().contains("API_KEY_INVALID"));
    let too_long = message.contains("exceeds the maximum number of tokens");
    let (status, code) = match status_name.as_deref() {
        _ if invalid_key => (401, None),
        _ if status == 400 && too_long => (400, Some("context_length_exceeded".to_owned())),
        Some("RESOURCE_EXHAUSTED") => (429, None),
        Some("UNAVAILABLE") => (503, Some("overloaded".to_owned())),
        Some("UNAUTHENTICATED") => (401, None),
        Some("PERMISSION_DENIED") => (403, None),
        _ => (status, None),
    };
    ProviderError::Upstream {
        status,
        message: transport::redact(deployment, message),
        error_type: status_name,
        param: None,
        code,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::translate_raw;

    fn deployment(params: &str) -> Deployment {
        tollgate_domain::GatewayConfig::from_yaml(
            &format!("model_list:\n  - model_name: g\n    litellm_params: {{model: gemini/gemini-2.5-flash, {params}}}\n"),
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    #[test]
    fn urls_and_the_key_header() {
        assert_eq!(
            method_url("https://generativelanguage.googleapis.com", "gemini-2.5-flash", "generateContent"),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(method_url("http://h:1/v1beta/", "models/m", "x"), "http://h:1/v1beta/models/m:x");
        let request = build_request(
            &deployment("api_key: AIza-secret"),
            "gemini-2.5-flash",
            "generateContent",
            json!({}),
        )
        .unwrap();
        assert_eq!(request.headers()["x-goog-api-key"], "AIza-secret");
        assert!(!request.uri().to_string().contains("AIza"), "the key never goes in the URL");
    }

    #[test]
    fn request_translation_covers_system_tools_images_results_and_json_mode() {
        let openai = json!({
            "model": "gemini-2.5-flash",
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
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"sky\": \"clear\"}"},
                {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 100,
            "temperature": 0.2,
            "stop": "END",
            "n": 2,
            "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "reasoning_effort": "low",
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        });
        let out = to_generate_request(&openai).unwrap();
        assert_eq!(out["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
        let contents = out["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{contents:?}");
        assert_eq!(contents[0]["parts"][1], json!({"inlineData": {"mimeType": "image/png", "data": "iVBO"}}));
        assert_eq!(contents[1]["role"], "model");
        assert_eq!(
            contents[1]["parts"][0],
            json!({"functionCall": {"name": "weather", "args": {"city": "Paris"}}})
        );
        assert_eq!(contents[2]["role"], "user");
        assert_eq!(
            contents[2]["parts"][0]["functionResponse"],
            json!({"name": "weather", "response": {"sky": "clear"}})
        );
        assert_eq!(
            contents[2]["parts"][1]["functionResponse"],
            json!({"name": "time", "response": {"content": "noon"}})
        );
        assert_eq!(
            contents[2]["parts"][2],
            json!({"text": "thanks"}),
            "a user turn after the results joins them"
        );
        let config = &out["generationConfig"];
        assert_eq!(config["maxOutputTokens"], 100);
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(config["candidateCount"], 2);
        assert_eq!(config["seed"], 7);
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(config["responseJsonSchema"], json!({"type": "object"}));
        assert_eq!(config["thinkingConfig"], json!({"thinkingBudget": 1024, "includeThoughts": true}));
        assert_eq!(
            out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
            json!({"type": "object"})
        );
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
        );
    }

    #[test]
    fn bad_requests_are_named() {
        let base = |extra: Value| {
            let mut request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            to_generate_request(&request)
        };
        assert_eq!(
            base(json!({"logit_bias": {"1": 2}})).unwrap_err().to_string(),
            "`logit_bias` is not supported by gemini models"
        );
        assert!(base(json!({"logprobs": false})).is_ok());
        let web_image = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
        assert!(base(web_image).unwrap_err().to_string().contains("data: URLs"));
        let orphan = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}]});
        assert!(base(orphan).unwrap_err().to_string().contains("no earlier assistant tool call"));
        assert!(
            to_generate_request(&json!({"model": "m", "messages": [{"role": "system", "content": "s"}]}))
                .is_err()
        );
    }

    #[test]
    fn answers_map_text_thoughts_tools_finish_and_usage() {
        let answer = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "hmm", "thought": true},
                    {"text": "checking"},
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}
                ]},
                "finishReason": "STOP", "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3, "cachedContentTokenCount": 4, "totalTokenCount": 18},
            "modelVersion": "gemini-2.5-flash", "responseId": "abc"
        });
        let out = to_chat_completion(&answer, "gemini-2.5-flash", 42).unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "checking");
        assert_eq!(choice["message"]["reasoning_content"], "hmm");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert!(choice["message"]["tool_calls"][0]["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(out["usage"]["prompt_tokens"], 10);
        assert_eq!(out["usage"]["completion_tokens"], 8);
        assert_eq!(out["usage"]["total_tokens"], 18);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(out["usage"]["completion_tokens_details"]["reasoning_tokens"], 3);
        assert_eq!(out["id"], "chatcmpl-abc");

        let filtered = json!({"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]});
        assert_eq!(
            to_chat_completion(&filtered, "m", 0).unwrap()["choices"][0]["finish_reason"],
            "content_filter"
        );
        let length =
            json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"}]});
        assert_eq!(to_chat_completion(&length, "m", 0).unwrap()["choices"][0]["finish_reason"], "length");
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        let ProviderError::Upstream { status, code, .. } = to_chat_completion(&blocked, "m", 0).unwrap_err()
        else {
            panic!()
        };
        assert_eq!((status, code.as_deref()), (400, Some("content_filter")));
    }

    #[test]
    fn errors_keep_the_message_and_map_status() {
        let d = deployment("api_key: AIza-secret");
        let error = |status: u16, body: &str| match read_error(status, body.as_bytes(), &d) {
            ProviderError::Upstream { status, message, code, error_type, .. } => {
                (status, message, code, error_type)
            }
            other => panic!("{other:?}"),
        };
        let invalid = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#;
        assert_eq!(error(400, invalid).0, 401);
        let quota =
            r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!((error(429, quota).0, error(429, quota).3.as_deref()), (429, Some("RESOURCE_EXHAUSTED")));
        let busy = r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#;
        assert_eq!(error(503, busy).2.as_deref(), Some("overloaded"));
        let long = r#"{"error":{"code":400,"message":"The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(error(400, long).2.as_deref(), Some("context_length_exceeded"));
        let leaky =
            r#"{"error":{"code":403,"message":"key AIza-secret is suspended","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(error(403, leaky).1, "key [redacted] is suspended");
    }

    #[test]
    fn stream_events_become_openai_chunks() {
        let mut t = Translator::new("gemini-2.5-flash", true, 1);
        let events = [
            r#"data: {"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 4},"modelVersion": "gemini-2.5-flash"}"#,
            r#"data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 4,"candidatesTokenCount": 6,"totalTokenCount": 10}}"#,
        ];
        let out: String = events
            .iter()
            .filter_map(|e| translate_raw(&mut t, e.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect::<String>();
        assert!(t.finished());
        let chunks: Vec<&str> =
            out.split("\n\n").filter(|s| !s.is_empty()).map(|s| s.strip_prefix("data: ").unwrap()).collect();
        assert_eq!(chunks.len(), 6, "{chunks:?}");
        let chunk = |i: usize| -> Value { serde_json::from_str(chunks[i]).unwrap() };
        assert_eq!(chunk(0)["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunk(1)["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(chunk(2)["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(chunk(2)["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(chunk(3)["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunk(4)["usage"]["total_tokens"], 10);
        assert_eq!(chunks[5], "[DONE]");
    }

    #[test]
    fn embeddings_go_in_one_batch() {
        let request =
            to_embed_request(&json!({"input": ["a", "b"], "dimensions": 8}), "text-embedding-004").unwrap();
        assert_eq!(
            request["requests"][1],
            json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8})
        );
        let answer = json!({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3]}]});
        let out = to_embeddings(&answer, "text-embedding-004");
        assert_eq!(out["data"][1], json!({"object": "embedding", "index": 1, "embedding": [0.3]}));
        assert!(to_embed_request(&json!({"input": [1, 2]}), "m").is_err());
    }
}
