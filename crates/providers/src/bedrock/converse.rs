//! The canonical (OpenAI) chat request as a Bedrock Converse request, and Converse's answer
//! and ConverseStream's events as OpenAI's `chat.completion` and `chat.completion.chunk`s.
//!
//! Field names follow the Bedrock Runtime API reference (Converse, ConverseStream, Message,
//! ContentBlock, ToolConfiguration, InferenceConfiguration, TokenUsage, StopReason); the
//! mapping choices follow LiteLLM's `bedrock/converse` transformation.

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value, json};

use crate::ProviderError;
use crate::body::TranslateEvents;

/// The tool LiteLLM asks the model to call for `response_format` JSON mode when the schema
/// has no name.
pub(crate) const JSON_TOOL_NAME: &str = "json_tool_call";
/// `maxTokens` added on top of a thinking budget when the request gives no `max_tokens`.
const THINKING_HEADROOM_TOKENS: u64 = 4096;

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// OpenAI parameters the Converse API has no equivalent for, each with its neutral value
/// (LiteLLM's default, `drop_params` off, rejects them).
pub(crate) fn unsupported_params() -> [(&'static str, Value); 8] {
    [
        ("frequency_penalty", json!(0)),
        ("presence_penalty", json!(0)),
        ("logit_bias", json!({})),
        ("seed", Value::Null),
        ("logprobs", json!(false)),
        ("top_logprobs", json!(0)),
        ("n", json!(1)),
        ("parallel_tool_calls", json!(true)),
    ]
}

fn is_neutral(value: &Value, neutral: &Value) -> bool {
    value.is_null()
        || value == neutral
        || value.as_f64().zip(neutral.as_f64()).is_some_and(|(a, b)| a == b)
        || value.as_object().is_some_and(Map::is_empty)
}

/// A translated chat request.
#[derive(Debug)]
pub(crate) struct ConverseRequest {
    pub body: Value,
    /// The tool standing in for `response_format` JSON mode, whose input is the answer.
    pub json_tool: Option<String>,
}

/// The canonical chat request as a Converse request for `model_id`.
pub(crate) fn to_converse_request(openai: &Value, model_id: &str) -> Result<ConverseRequest, ProviderError> {
    for (name, neutral) in unsupported_params() {
        if openai.get(name).is_some_and(|value| !is_neutral(value, &neutral)) {
            return Err(bad(format!("`{name}` is not supported by bedrock models")));
        }
    }
    let input =
        openai.get("messages").and_then(Value::as_array).ok_or_else(|| bad("`messages` must be an array"))?;
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, message) in input.iter().enumerate() {
        match message.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => system.extend(text_blocks(message.get("content"), i, false)?),
            "user" => push_turn(&mut messages, "user", user_blocks(message.get("content"), i)?),
            "assistant" => {
                let mut blocks = thinking_blocks(message, i)?;
                if !message.get("content").is_none_or(Value::is_null) {
                    blocks.extend(text_blocks(message.get("content"), i, true)?);
                }
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    blocks.push(tool_use_block(call, i)?);
                }
                if !blocks.is_empty() {
                    push_turn(&mut messages, "assistant", blocks);
                }
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("messages[{i}]: a tool message needs `tool_call_id`")))?;
                let content: Vec<Value> = text_blocks(message.get("content"), i, false)?
                    .into_iter()
                    .filter(|block| block.get("text").is_some())
                    .collect();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"toolResult": {"toolUseId": id, "content": content}})],
                );
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}]: role '{other}' is not supported for bedrock models"
                )));
            }
        }
    }
    if messages.is_empty() {
        return Err(bad("`messages` must hold at least one user or assistant message for bedrock models"));
    }

    let mut request = Map::new();
    request.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        request.insert("system".into(), Value::Array(system));
    }
    let mut additional = Map::new();
    let anthropic = model_id.contains("anthropic.");
    let nova = model_id.contains("amazon.nova");

    // Thinking (Claude on Bedrock): `thinking` as given, or `reasoning_effort` as a budget.
    let mut thinking_budget = None;
    if let Some(thinking) = openai.get("thinking").filter(|t| !t.is_null()) {
        if !anthropic {
            return Err(bad("`thinking` is supported only for anthropic models on bedrock"));
        }
        thinking_budget = thinking.get("budget_tokens").and_then(Value::as_u64);
        additional.insert("thinking".into(), thinking.clone());
    } else if let Some(effort) = openai.get("reasoning_effort").and_then(Value::as_str) {
        if !anthropic {
            return Err(bad("`reasoning_effort` is supported only for anthropic models on bedrock"));
        }
        let budget = match effort {
            "low" | "minimal" => 1024,
            "medium" => 2048,
            "high" => 4096,
            other => {
                return Err(bad(format!("`reasoning_effort` '{other}' is not one of low, medium, high")));
            }
        };
        thinking_budget = Some(budget);
        additional.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }

    let mut inference = Map::new();
    let max_tokens = openai
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| openai.get("max_tokens").filter(|v| !v.is_null()));
    match (max_tokens, thinking_budget) {
        (Some(max), _) => {
            let max = max.as_u64().ok_or_else(|| bad("`max_tokens` must be a positive integer"))?;
            inference.insert("maxTokens".into(), json!(max));
        }
        // The budget is part of maxTokens, so a thinking request needs room beyond it.
        (None, Some(budget)) => {
            inference.insert("maxTokens".into(), json!(budget + THINKING_HEADROOM_TOKENS));
        }
        (None, None) => {}
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(value) = openai.get(from).filter(|v| !v.is_null()) {
            inference.insert(to.into(), value.clone());
        }
    }
    match openai.get("stop") {
        None | Some(Value::Null) => {}
        // Converse rejects an empty stop sequence.
        Some(Value::String(stop)) if stop.is_empty() => {}
        Some(Value::String(stop)) => {
            inference.insert("stopSequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            inference.insert("stopSequences".into(), Value::Array(stops.clone()));
        }
        Some(_) => return Err(bad("`stop` must be a string or an array of strings")),
    }
    if let Some(top_k) = openai.get("top_k").filter(|v| !v.is_null()) {
        if anthropic {
            additional.insert("top_k".into(), top_k.clone());
        } else if nova {
            additional.insert("inferenceConfig".into(), json!({"topK": top_k}));
        } else {
            return Err(bad("`top_k` is supported only for anthropic and amazon nova models on bedrock"));
        }
    }
    if !inference.is_empty() {
        request.insert("inferenceConfig".into(), Value::Object(inference));
    }

    let mut tools: Vec<Value> = match openai.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools.iter().map(tool_spec).collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("`tools` must be an array")),
    };
    let mut tool_choice = match openai.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Some(json!({"auto": {}})),
            "required" => Some(json!({"any": {}})),
            "none" => {
                return Err(bad(
                    "`tool_choice` 'none' is not supported by bedrock models; leave out `tools` instead",
                ));
            }
            other => return Err(bad(format!("`tool_choice` '{other}' is not one of auto, required, none"))),
        },
        Some(named) => {
            let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                bad("`tool_choice` must name a function: {\"type\": \"function\", \"function\": {\"name\": …}}")
            })?;
            Some(json!({"tool": {"name": name}}))
        }
    };
    let json_tool = json_mode_tool(openai.get("response_format"))?;
    if let Some((name, spec)) = &json_tool {
        tools.push(spec.clone());
        // Forcing a tool is refused while Claude is thinking; the model is asked, not forced.
        if thinking_budget.is_none() {
            tool_choice = Some(json!({"tool": {"name": name}}));
        }
    }
    if !tools.is_empty() {
        let mut config = json!({"tools": tools});
        if let Some(choice) = tool_choice {
            config["toolChoice"] = choice;
        }
        request.insert("toolConfig".into(), config);
    } else if tool_choice.is_some() {
        return Err(bad("`tool_choice` needs `tools`"));
    } else if has_tool_blocks(&request) {
        // Bedrock refuses toolUse/toolResult blocks without a toolConfig.
        return Err(bad("messages hold tool calls or results, so bedrock needs `tools` in the request"));
    }
    if !additional.is_empty() {
        request.insert("additionalModelRequestFields".into(), Value::Object(additional));
    }
    Ok(ConverseRequest { body: Value::Object(request), json_tool: json_tool.map(|(name, _)| name) })
}

fn has_tool_blocks(request: &Map<String, Value>) -> bool {
    request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|message| message.get("content").and_then(Value::as_array))
        .flatten()
        .any(|block| block.get("toolUse").is_some() || block.get("toolResult").is_some())
}

/// `response_format` JSON mode as LiteLLM does it on Bedrock: a tool whose input schema is
/// the wanted schema, which the model is made to call.
fn json_mode_tool(format: Option<&Value>) -> Result<Option<(String, Value)>, ProviderError> {
    let Some(format) = format.filter(|f| !f.is_null()) else { return Ok(None) };
    let (name, schema, description) = match format.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(None),
        Some("json_object") => (
            JSON_TOOL_NAME.to_owned(),
            json!({"type": "object", "additionalProperties": true, "properties": {}}),
            None,
        ),
        Some("json_schema") => {
            let spec =
                format.get("json_schema").ok_or_else(|| bad("`response_format.json_schema` is missing"))?;
            (
                spec.get("name").and_then(Value::as_str).unwrap_or(JSON_TOOL_NAME).to_owned(),
                spec.get("schema").cloned().unwrap_or(json!({"type": "object", "properties": {}})),
                spec.get("description").and_then(Value::as_str),
            )
        }
        _ => return Err(bad("`response_format.type` must be text, json_object or json_schema")),
    };
    let spec = json!({"toolSpec": {
        "name": name,
        "description": description.unwrap_or(&name),
        "inputSchema": {"json": schema},
    }});
    Ok(Some((name, spec)))
}

/// Appends blocks to the last turn when it has the same role (Converse wants turns to
/// alternate, and results of parallel calls belong together), else starts a new turn.
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(existing) = last["content"].as_array_mut()
    {
        existing.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// A `cachePoint` block after a part that asks for prompt caching (`cache_control`).
fn cache_point(part: &Value) -> Option<Value> {
    part.get("cache_control").map(|_| json!({"cachePoint": {"type": "default"}}))
}

/// Text content (a string or text parts) as text blocks; empty texts are dropped from
/// assistant turns (Converse rejects blank text).
fn text_blocks(content: Option<&Value>, index: usize, skip_empty: bool) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if skip_empty && text.is_empty() => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"text": text})]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !(skip_empty && text.is_empty()) {
                            blocks.push(json!({"text": text}));
                        }
                        blocks.extend(cache_point(part));
                    }
                    other => {
                        return Err(bad(format!(
                            "messages[{index}]: content part '{}' is not allowed here",
                            other.unwrap_or("?")
                        )));
                    }
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(bad(format!("messages[{index}]: `content` must be a string or an array"))),
    }
}

fn user_blocks(content: Option<&Value>, index: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        Some(Value::String(text)) => Ok(vec![json!({"text": text})]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        blocks.push(json!({"text": part.get("text").cloned().unwrap_or(json!(""))}));
                    }
                    Some("image_url") => blocks.push(image_block(part, index)?),
                    other => {
                        return Err(bad(format!(
                            "messages[{index}]: content part '{}' is not supported for bedrock models",
                            other.unwrap_or("?")
                        )));
                    }
                }
                blocks.extend(cache_point(part));
            }
            Ok(blocks)
        }
        _ => Err(bad(format!("messages[{index}]: a user message needs `content`"))),
    }
}

/// A base64 data-URL image as an image block (`format` from the media type, `source.bytes`
/// the base64 text, which is how Converse's JSON carries bytes).
fn image_block(part: &Value, index: usize) -> Result<Value, ProviderError> {
    let url = part
        .pointer("/image_url/url")
        .or_else(|| part.get("image_url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: `image_url.url` is missing")))?;
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(bad(format!(
            "messages[{index}]: bedrock models take images as base64 data: URLs, not web URLs"
        )));
    };
    let (media_type, data) = rest
        .split_once(";base64,")
        .ok_or_else(|| bad(format!("messages[{index}]: a data URL image must be base64")))?;
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(bad(format!(
                "messages[{index}]: image type '{other}' is not supported by bedrock (png, jpeg, gif, webp)"
            )));
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// An assistant message's earlier reasoning (`thinking_blocks`, as LiteLLM returns them)
/// as `reasoningContent` blocks, which Claude needs back when tools are used while thinking.
fn thinking_blocks(message: &Value, index: usize) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    for block in message.get("thinking_blocks").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => {
                let mut text = json!({"text": block.get("thinking").cloned().unwrap_or(json!(""))});
                if let Some(signature) = block.get("signature").filter(|s| !s.is_null()) {
                    text["signature"] = signature.clone();
                }
                blocks.push(json!({"reasoningContent": {"reasoningText": text}}));
            }
            Some("redacted_thinking") => {
                let data = block.get("data").cloned().unwrap_or(json!(""));
                blocks.push(json!({"reasoningContent": {"redactedContent": data}}));
            }
            _ => return Err(bad(format!("messages[{index}]: unknown entry in `thinking_blocks`"))),
        }
    }
    Ok(blocks)
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
    Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
}

fn tool_spec(tool: &Value) -> Result<Value, ProviderError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad("only tools of type 'function' are supported for bedrock models"));
    }
    let function = tool.get("function").ok_or_else(|| bad("a tool needs `function`"))?;
    let name =
        function.get("name").and_then(Value::as_str).ok_or_else(|| bad("a tool needs `function.name`"))?;
    // Converse wants a description; LiteLLM sends the name when there is none.
    let description =
        function.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()).unwrap_or(name);
    let schema = function.get("parameters").cloned().unwrap_or(json!({"type": "object", "properties": {}}));
    Ok(json!({"toolSpec": {"name": name, "description": description, "inputSchema": {"json": schema}}}))
}

/// Converse's `stopReason` as OpenAI's `finish_reason`.
pub(crate) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// Converse's `usage` as OpenAI's: cache reads and writes count as prompt tokens (Bedrock's
/// `inputTokens` leaves them out), with the reads as `cached_tokens` and the writes as
/// `cache_creation_input_tokens`, as LiteLLM reports them.
pub(crate) fn usage(usage: &Value) -> Value {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    let (read, written) = (count("cacheReadInputTokens"), count("cacheWriteInputTokens"));
    let prompt = count("inputTokens") + read + written;
    let completion = count("outputTokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    })
}

/// Converse's answer as an OpenAI `chat.completion`. With `json_tool`, a call of that tool
/// is the JSON answer, given as `content`.
pub(crate) fn to_chat_completion(
    answer: &Value,
    model: &str,
    id: &str,
    created: u64,
    json_tool: Option<&str>,
) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking = Vec::new();
    let mut tool_calls = Vec::new();
    for block in answer.pointer("/output/message/content").and_then(Value::as_array).into_iter().flatten() {
        if let Some(part) = block.get("text").and_then(Value::as_str) {
            text.push_str(part);
        } else if let Some(call) = block.get("toolUse") {
            tool_calls.push(json!({
                "id": call.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": call.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": call.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            }));
        } else if let Some(content) = block.get("reasoningContent") {
            if let Some(reasoned) = content.get("reasoningText") {
                let part = reasoned.get("text").and_then(Value::as_str).unwrap_or_default();
                reasoning.push_str(part);
                let mut entry = json!({"type": "thinking", "thinking": part});
                if let Some(signature) = reasoned.get("signature") {
                    entry["signature"] = signature.clone();
                }
                thinking.push(entry);
            } else if let Some(data) = content.get("redactedContent") {
                thinking.push(json!({"type": "redacted_thinking", "data": data}));
            }
        }
    }
    let stop_reason = answer.get("stopReason").and_then(Value::as_str);
    let mut finish = finish_reason(stop_reason);
    let json_answer = json_tool.and_then(|name| match tool_calls.as_slice() {
        [only] if only.pointer("/function/name").and_then(Value::as_str) == Some(name) => {
            only.pointer("/function/arguments").cloned()
        }
        _ => None,
    });
    let mut message = json!({"role": "assistant"});
    if let Some(answer) = json_answer {
        message["content"] = answer;
        finish = "stop";
    } else {
        message["content"] =
            if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) };
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
    }
    if !reasoning.is_empty() || !thinking.is_empty() {
        message["reasoning_content"] = json!(reasoning);
        message["thinking_blocks"] = Value::Array(thinking);
    }
    let empty = json!({});
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage(answer.get("usage").unwrap_or(&empty)),
    })
}

/// A whole `chat.completion` as the chunks of a stream (for JSON mode, which LiteLLM
/// answers from a non-streaming call): role and content, tool calls, finish, usage, `[DONE]`.
pub(crate) fn completion_as_chunks(completion: &Value, include_usage: bool) -> Vec<Bytes> {
    let head = |choices: Value| {
        json!({
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "choices": choices,
        })
    };
    let message = &completion["choices"][0]["message"];
    let mut delta = json!({"role": "assistant", "content": message["content"].as_str().unwrap_or("")});
    if let Some(reasoning) = message.get("reasoning_content") {
        delta["reasoning_content"] = reasoning.clone();
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        let indexed: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let mut call = call.clone();
                call["index"] = json!(i);
                call
            })
            .collect();
        delta["tool_calls"] = Value::Array(indexed);
    }
    let mut chunks = vec![
        head(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}])),
        head(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": completion["choices"][0]["finish_reason"]}]),
        ),
    ];
    if include_usage {
        let mut last = head(json!([]));
        last["usage"] = completion["usage"].clone();
        chunks.push(last);
    }
    let mut out: Vec<Bytes> = chunks.into_iter().map(|c| Bytes::from(format!("data: {c}\n\n"))).collect();
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

/// ConverseStream's events (`messageStart`, `contentBlockStart`, `contentBlockDelta`,
/// `contentBlockStop`, `messageStop`, `metadata`, and exceptions), each an SSE event
/// `{"<eventType>": payload}`, as OpenAI `chat.completion.chunk`s. The stream ends with the
/// `metadata` event, which carries the usage and comes after `messageStop`.
pub(crate) struct Translator {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Converse content-block index -> OpenAI tool-call index.
    tool_blocks: Vec<(u64, usize)>,
    finished: bool,
}

impl Translator {
    pub(crate) fn new(id: String, model: String, created: u64, include_usage: bool) -> Self {
        Self { id, model, created, include_usage, tool_blocks: Vec::new(), finished: false }
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
}

impl TranslateEvents for Translator {
    const PROVIDER: &'static str = "bedrock";

    fn finished(&self) -> bool {
        self.finished
    }

    fn event(&mut self, event: &Value) -> Option<Bytes> {
        let (name, body) = event.as_object()?.iter().next()?;
        let index = body.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        let out = match name.as_str() {
            "messageStart" => self.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            "contentBlockStart" => {
                let tool = body.pointer("/start/toolUse")?;
                let position = self.tool_blocks.len();
                self.tool_blocks.push((index, position));
                self.chunk(
                    json!({"tool_calls": [{
                        "index": position,
                        "id": tool.get("toolUseId"),
                        "type": "function",
                        "function": {"name": tool.get("name"), "arguments": ""},
                    }]}),
                    Value::Null,
                )
            }
            "contentBlockDelta" => {
                let delta = body.get("delta")?;
                if let Some(text) = delta.get("text") {
                    self.chunk(json!({"content": text}), Value::Null)
                } else if let Some(input) = delta.pointer("/toolUse/input") {
                    let position = self.tool_blocks.iter().find(|(block, _)| *block == index)?.1;
                    self.chunk(
                        json!({"tool_calls": [{"index": position, "function": {"arguments": input}}]}),
                        Value::Null,
                    )
                } else if let Some(reasoning) = delta.get("reasoningContent") {
                    if let Some(text) = reasoning.get("text") {
                        self.chunk(json!({"reasoning_content": text}), Value::Null)
                    } else if let Some(signature) = reasoning.get("signature") {
                        self.chunk(
                            json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": signature}]}),
                            Value::Null,
                        )
                    } else {
                        return None;
                    }
                } else {
                    return None;
                }
            }
            "messageStop" => {
                let reason = body.get("stopReason").and_then(Value::as_str);
                self.chunk(json!({}), json!(finish_reason(reason)))
            }
            "metadata" => {
                self.finished = true;
                let mut out = String::new();
                if self.include_usage {
                    let empty = json!({});
                    let chunk = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage(body.get("usage").unwrap_or(&empty)),
                    });
                    out.push_str(&format!("data: {chunk}\n\n"));
                }
                out.push_str("data: [DONE]\n\n");
                out
            }
            "exception" => {
                self.finished = true;
                let kind = body.get("type").and_then(Value::as_str).unwrap_or("exception");
                let message = body.get("message").and_then(Value::as_str).unwrap_or("bedrock stream error");
                let status = super::exception_status(kind);
                let error = json!({"error": {
                    "message": message,
                    "type": kind,
                    "param": null,
                    "code": status.to_string(),
                }});
                format!("data: {error}\n\n")
            }
            _ => return None,
        };
        let mut bytes = BytesMut::with_capacity(out.len());
        bytes.extend_from_slice(out.as_bytes());
        Some(bytes.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::translate_raw;

    fn chat(extra: Value) -> Value {
        let mut request = json!({"model": "anthropic.claude-3-5-sonnet-20241022-v2:0", "messages": [{"role": "user", "content": "hi"}]});
        request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        request
    }

    const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20241022-v2:0";

    #[test]
    fn request_translation_covers_system_images_tools_results_and_inference_config() {
        let openai = json!({
            "model": CLAUDE,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
                ]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END"],
            "top_k": 5,
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
        });
        let out = to_converse_request(&openai, CLAUDE).unwrap();
        assert!(out.json_tool.is_none());
        let body = out.body;
        assert_eq!(body["system"], json!([{"text": "be brief"}, {"cachePoint": {"type": "default"}}]));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(
            messages[0]["content"][1],
            json!({"image": {"format": "png", "source": {"bytes": "iVBO"}}})
        );
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(
            messages[1]["content"],
            json!([
                {"toolUse": {"toolUseId": "call_1", "name": "weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "time", "input": {}}}
            ]),
            "an empty assistant text is dropped"
        );
        assert_eq!(
            messages[2]["content"],
            json!([
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "noon"}]}},
                {"text": "thanks"}
            ]),
            "parallel results and the next user turn share one user message"
        );
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]})
        );
        assert_eq!(body["additionalModelRequestFields"], json!({"top_k": 5}));
        assert_eq!(
            body["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "weather", "description": "weather", "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"any": {}}})
        );
    }

    #[test]
    fn json_mode_is_a_forced_tool_and_its_call_is_the_answer() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let out = to_converse_request(
            &chat(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}})),
            CLAUDE,
        )
        .unwrap();
        assert_eq!(out.json_tool.as_deref(), Some("place"));
        assert_eq!(out.body["toolConfig"]["toolChoice"], json!({"tool": {"name": "place"}}));
        assert_eq!(out.body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"], schema);
        let object =
            to_converse_request(&chat(json!({"response_format": {"type": "json_object"}})), CLAUDE).unwrap();
        assert_eq!(object.json_tool.as_deref(), Some(JSON_TOOL_NAME));

        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "t1", "name": "place", "input": {"city": "Paris"}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8}
        });
        let completion = to_chat_completion(&answer, CLAUDE, "chatcmpl-1", 7, Some("place"));
        assert_eq!(completion["choices"][0]["message"]["content"], "{\"city\":\"Paris\"}");
        assert!(completion["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn thinking_and_unsupported_params() {
        let out = to_converse_request(&chat(json!({"reasoning_effort": "medium"})), CLAUDE).unwrap();
        assert_eq!(
            out.body["additionalModelRequestFields"]["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert_eq!(out.body["inferenceConfig"]["maxTokens"], 2048 + THINKING_HEADROOM_TOKENS);
        let nova = to_converse_request(&chat(json!({"top_k": 3})), "us.amazon.nova-pro-v1:0").unwrap();
        assert_eq!(nova.body["additionalModelRequestFields"], json!({"inferenceConfig": {"topK": 3}}));
        let error =
            |extra: Value, model: &str| to_converse_request(&chat(extra), model).unwrap_err().to_string();
        assert_eq!(error(json!({"seed": 4}), CLAUDE), "`seed` is not supported by bedrock models");
        assert!(
            to_converse_request(
                &chat(json!({"n": 1, "presence_penalty": 0, "parallel_tool_calls": true})),
                CLAUDE
            )
            .is_ok()
        );
        assert!(
            error(json!({"reasoning_effort": "low"}), "meta.llama3-70b-instruct-v1:0").contains("anthropic")
        );
        assert!(
            error(
                json!({"tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}]}),
                CLAUDE
            )
            .contains("'none'")
        );
        let web = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
        assert!(error(web, CLAUDE).contains("data: URLs"));
        let tiff = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AA"}}]}]});
        assert!(error(tiff, CLAUDE).contains("image/tiff"));
        let orphan = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "r"}]});
        assert!(error(orphan, CLAUDE).contains("needs `tools`"));
    }

    #[test]
    fn answers_map_text_reasoning_tools_finish_and_cache_usage() {
        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
                {"text": "checking"},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "tooluse_2", "name": "time", "input": {}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 2},
            "metrics": {"latencyMs": 100}
        });
        let out = to_chat_completion(&answer, CLAUDE, "chatcmpl-x", 42, None);
        let message = &out["choices"][0]["message"];
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(message["content"], "checking");
        assert_eq!(message["reasoning_content"], "hmm");
        assert_eq!(
            message["thinking_blocks"],
            json!([{"type": "thinking", "thinking": "hmm", "signature": "sig"}])
        );
        assert_eq!(message["tool_calls"][1]["id"], "tooluse_2");
        assert_eq!(
            message["tool_calls"][0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(out["usage"]["prompt_tokens"], 16);
        assert_eq!(out["usage"]["completion_tokens"], 5);
        assert_eq!(out["usage"]["total_tokens"], 21);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(out["usage"]["cache_creation_input_tokens"], 2);
        for (reason, expected) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(reason)), expected);
        }
    }

    #[test]
    fn stream_events_become_openai_chunks() {
        let mut t = Translator::new("chatcmpl-s".into(), CLAUDE.into(), 1, true);
        let events = [
            r#"data: {"messageStart":{"p":"abc","role":"assistant"}}"#,
            r#"data: {"contentBlockDelta":{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"think"}}}}"#,
            r#"data: {"contentBlockDelta":{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"sig"}}}}"#,
            r#"data: {"contentBlockDelta":{"contentBlockIndex":1,"delta":{"text":"Hel"}}}"#,
            r#"data: {"contentBlockStop":{"contentBlockIndex":1}}"#,
            r#"data: {"contentBlockStart":{"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"tu_1","name":"weather"}}}}"#,
            r#"data: {"contentBlockDelta":{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\"city\":"}}}}"#,
            r#"data: {"contentBlockStart":{"contentBlockIndex":3,"start":{"toolUse":{"toolUseId":"tu_2","name":"time"}}}}"#,
            r#"data: {"contentBlockDelta":{"contentBlockIndex":2,"delta":{"toolUse":{"input":"\"Paris\"}"}}}}"#,
            r#"data: {"messageStop":{"stopReason":"tool_use"}}"#,
            r#"data: {"metadata":{"usage":{"inputTokens":4,"outputTokens":6,"totalTokens":10},"metrics":{"latencyMs":5}}}"#,
        ];
        let out: String = events
            .iter()
            .filter_map(|e| translate_raw(&mut t, e.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert!(t.finished());
        let chunks: Vec<&str> =
            out.split("\n\n").filter(|s| !s.is_empty()).map(|s| s.strip_prefix("data: ").unwrap()).collect();
        let chunk = |i: usize| -> Value { serde_json::from_str(chunks[i]).unwrap() };
        assert_eq!(chunks.len(), 11, "{chunks:?}");
        assert_eq!(chunk(0)["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunk(1)["choices"][0]["delta"]["reasoning_content"], "think");
        assert_eq!(chunk(2)["choices"][0]["delta"]["thinking_blocks"][0]["signature"], "sig");
        assert_eq!(chunk(3)["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(
            chunk(4)["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "tu_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
        );
        assert_eq!(chunk(5)["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"city\":");
        assert_eq!(chunk(6)["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(
            chunk(7)["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "function": {"arguments": "\"Paris\"}"}})
        );
        assert_eq!(chunk(8)["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunk(9)["usage"]["total_tokens"], 10);
        assert_eq!(chunks[10], "[DONE]");
    }

    #[test]
    fn a_stream_exception_becomes_an_error_event() {
        let mut t = Translator::new("c".into(), CLAUDE.into(), 1, false);
        let out = translate_raw(
            &mut t,
            br#"data: {"exception":{"type":"modelStreamErrorException","message":"model failed"}}"#,
        )
        .unwrap();
        let error: Value = serde_json::from_slice(out.strip_prefix(b"data: ").unwrap().trim_ascii()).unwrap();
        assert_eq!(error["error"]["message"], "model failed");
        assert_eq!(error["error"]["code"], "502");
        assert!(t.finished());
    }

    #[test]
    fn a_whole_answer_can_be_sent_as_chunks() {
        let completion = json!({"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        let chunks = completion_as_chunks(&completion, true);
        assert_eq!(chunks.len(), 4);
        assert!(String::from_utf8_lossy(&chunks[0]).contains("\"content\":\"{}\""));
        assert!(String::from_utf8_lossy(&chunks[2]).contains("\"total_tokens\":2"));
        assert_eq!(chunks[3], "data: [DONE]\n\n");
    }
}
