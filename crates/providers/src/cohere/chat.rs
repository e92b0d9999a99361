//! The canonical (OpenAI) chat request as a Cohere v2 `/v2/chat` request, and Cohere's
//! answer and stream events as OpenAI's `chat.completion` and `chat.completion.chunk`s.
//!
//! Field names follow Cohere's v2 API reference (ChatMessageV2, ToolV2, ToolCallV2,
//! ResponseFormatV2, Thinking, ChatResponseV2, Usage and the stream's `message-start` …
//! `message-end` events); the mapping follows LiteLLM's `cohere_chat` v2 transformation.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::ProviderError;
use crate::body::TranslateEvents;
use crate::retrieval::count;

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// OpenAI parameters Cohere's chat has no equivalent for, each with its neutral value.
pub(crate) fn unsupported_params() -> [(&'static str, Value); 5] {
    [
        ("logit_bias", json!({})),
        ("logprobs", json!(false)),
        ("top_logprobs", json!(0)),
        ("n", json!(1)),
        // Cohere may always call tools in parallel; it cannot be told not to.
        ("parallel_tool_calls", json!(true)),
    ]
}

/// Cohere's own chat parameters, passed through when a request sets them (LiteLLM forwards
/// provider-specific parameters the same way).
const NATIVE_PARAMS: &[&str] =
    &["documents", "citation_options", "safety_mode", "priority", "thinking", "strict_tools", "k", "p"];

fn is_neutral(value: &Value, neutral: &Value) -> bool {
    value.is_null()
        || value == neutral
        || value.as_f64().zip(neutral.as_f64()).is_some_and(|(a, b)| a == b)
        || value.as_object().is_some_and(Map::is_empty)
}

/// The canonical chat request as a `/v2/chat` body for `model`.
pub(crate) fn to_chat_request(openai: &Value, model: &str, stream: bool) -> Result<Value, ProviderError> {
    for (name, neutral) in unsupported_params() {
        if openai.get(name).is_some_and(|value| !is_neutral(value, &neutral)) {
            return Err(bad(format!("`{name}` is not supported by cohere models")));
        }
    }
    let input =
        openai.get("messages").and_then(Value::as_array).ok_or_else(|| bad("`messages` must be an array"))?;
    let mut messages = Vec::with_capacity(input.len());
    for (i, message) in input.iter().enumerate() {
        match message.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                messages.push(json!({"role": "system", "content": text_content(message.get("content"), i)?}));
            }
            "user" => {
                messages.push(json!({"role": "user", "content": user_content(message.get("content"), i)?}))
            }
            "assistant" => {
                let mut turn = json!({"role": "assistant"});
                let content = match message.get("content") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(text)) if text.is_empty() => None,
                    content => Some(text_content(content, i)?),
                };
                if let Some(content) = content {
                    turn["content"] = content;
                }
                let calls = message.get("tool_calls").and_then(Value::as_array).filter(|c| !c.is_empty());
                if let Some(calls) = calls {
                    turn["tool_calls"] =
                        Value::Array(calls.iter().map(|c| tool_call(c, i)).collect::<Result<_, _>>()?);
                }
                // Cohere refuses an assistant turn with neither text nor calls.
                if turn.get("content").is_some() || turn.get("tool_calls").is_some() {
                    messages.push(turn);
                }
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("messages[{i}]: a tool message needs `tool_call_id`")))?;
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": text_content(message.get("content"), i)?}));
            }
            other => {
                return Err(bad(format!("messages[{i}]: role '{other}' is not supported for cohere models")));
            }
        }
    }
    if messages.is_empty() {
        return Err(bad("`messages` must not be empty"));
    }

    let mut request = json!({"model": model, "messages": messages});
    if stream {
        request["stream"] = json!(true);
    }
    let max_tokens = openai
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| openai.get("max_tokens").filter(|v| !v.is_null()));
    if let Some(max) = max_tokens {
        let max = max.as_u64().ok_or_else(|| bad("`max_tokens` must be a positive integer"))?;
        request["max_tokens"] = json!(max);
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "p"),
        ("top_k", "k"),
        ("seed", "seed"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ] {
        if let Some(value) = openai.get(from).filter(|v| !v.is_null()) {
            request[to] = value.clone();
        }
    }
    match openai.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(stop)) => request["stop_sequences"] = json!([stop]),
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            request["stop_sequences"] = Value::Array(stops.clone());
        }
        Some(_) => return Err(bad("`stop` must be a string or an array of strings")),
    }
    if let Some(format) = response_format(openai.get("response_format"))? {
        request["response_format"] = format;
    }
    if let Some(effort) = openai.get("reasoning_effort").and_then(Value::as_str) {
        request["thinking"] = match effort {
            "none" => json!({"type": "disabled"}),
            "minimal" | "low" => json!({"type": "enabled", "token_budget": 1024}),
            "medium" => json!({"type": "enabled", "token_budget": 2048}),
            "high" => json!({"type": "enabled", "token_budget": 4096}),
            other => {
                return Err(bad(format!(
                    "`reasoning_effort` '{other}' is not one of none, low, medium, high"
                )));
            }
        };
    }
    let (tools, strict) = match openai.get("tools") {
        None | Some(Value::Null) => (Vec::new(), false),
        Some(Value::Array(tools)) => {
            let strict = tools.iter().any(|t| t.pointer("/function/strict") == Some(&Value::Bool(true)));
            (tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?, strict)
        }
        Some(_) => return Err(bad("`tools` must be an array")),
    };
    let (tools, choice) = tool_choice(openai.get("tool_choice"), tools)?;
    if !tools.is_empty() {
        request["tools"] = Value::Array(tools);
        if strict {
            request["strict_tools"] = json!(true);
        }
    }
    if let Some(choice) = choice {
        request["tool_choice"] = json!(choice);
    }
    crate::retrieval::pass_through(openai, &mut request, NATIVE_PARAMS);
    Ok(request)
}

/// A system, assistant or tool message's content: a string as it is, text parts as Cohere's
/// `{"type": "text", "text"}` items.
fn text_content(content: Option<&Value>, index: usize) -> Result<Value, ProviderError> {
    match content {
        Some(Value::String(text)) => Ok(json!(text)),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match (part.get("type").and_then(Value::as_str), part.get("text")) {
                (Some("text"), Some(Value::String(text))) => Ok(json!({"type": "text", "text": text})),
                (kind, _) => Err(bad(format!(
                    "messages[{index}]: content part '{}' is not allowed here for cohere models",
                    kind.unwrap_or("?")
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        None | Some(Value::Null) => Ok(json!("")),
        Some(_) => Err(bad(format!("messages[{index}]: `content` must be a string or an array"))),
    }
}

/// A user message's content: text, and images by URL or data URL (Cohere takes both).
fn user_content(content: Option<&Value>, index: usize) -> Result<Value, ProviderError> {
    match content {
        Some(Value::String(text)) => Ok(json!(text)),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => {
                    Ok(json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))}))
                }
                Some("image_url") => {
                    let url = part
                        .pointer("/image_url/url")
                        .or_else(|| part.get("image_url"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("messages[{index}]: `image_url.url` is missing")))?;
                    let mut image = json!({"url": url});
                    if let Some(detail) = part.pointer("/image_url/detail").filter(|d| !d.is_null()) {
                        image["detail"] = detail.clone();
                    }
                    Ok(json!({"type": "image_url", "image_url": image}))
                }
                other => Err(bad(format!(
                    "messages[{index}]: content part '{}' is not supported for cohere models",
                    other.unwrap_or("?")
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Err(bad(format!("messages[{index}]: a user message needs `content`"))),
    }
}

fn tool_call(call: &Value, index: usize) -> Result<Value, ProviderError> {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: a tool call needs an `id`")))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{index}]: a tool call needs `function.name`")))?;
    let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
    Ok(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
}

fn tool(tool: &Value) -> Result<Value, ProviderError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad("only tools of type 'function' are supported for cohere models"));
    }
    let function = tool.get("function").ok_or_else(|| bad("a tool needs `function`"))?;
    let name =
        function.get("name").and_then(Value::as_str).ok_or_else(|| bad("a tool needs `function.name`"))?;
    // Cohere requires `parameters`; a function without arguments takes an empty object.
    let parameters =
        function.get("parameters").cloned().unwrap_or(json!({"type": "object", "properties": {}}));
    let mut out = json!({"type": "function", "function": {"name": name, "parameters": parameters}});
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        out["function"]["description"] = json!(description);
    }
    Ok(out)
}

/// OpenAI's `tool_choice` as Cohere's (`REQUIRED` / `NONE`, or nothing for `auto`). Cohere
/// cannot name a tool, so a named choice keeps only that tool and requires a call.
fn tool_choice(
    choice: Option<&Value>,
    tools: Vec<Value>,
) -> Result<(Vec<Value>, Option<&'static str>), ProviderError> {
    match choice {
        None | Some(Value::Null) => Ok((tools, None)),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Ok((tools, None)),
            "required" if tools.is_empty() => Err(bad("`tool_choice` 'required' needs `tools`")),
            "required" => Ok((tools, Some("REQUIRED"))),
            "none" => Ok((tools, Some("NONE"))),
            other => Err(bad(format!("`tool_choice` '{other}' is not one of auto, required, none"))),
        },
        Some(named) => {
            let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                bad("`tool_choice` must name a function: {\"type\": \"function\", \"function\": {\"name\": …}}")
            })?;
            let chosen: Vec<Value> = tools
                .into_iter()
                .filter(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name))
                .collect();
            if chosen.is_empty() {
                return Err(bad(format!("`tool_choice` names '{name}', which is not in `tools`")));
            }
            Ok((chosen, Some("REQUIRED")))
        }
    }
}

/// `response_format`: JSON mode (`json_object`, or `json_schema` with its schema).
fn response_format(format: Option<&Value>) -> Result<Option<Value>, ProviderError> {
    let Some(format) = format.filter(|f| !f.is_null()) else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut out = json!({"type": "json_object"});
            if let Some(schema) = format.pointer("/json_schema/schema").filter(|s| !s.is_null()) {
                out["json_schema"] = schema.clone();
            }
            Ok(Some(out))
        }
        _ => Err(bad("`response_format.type` must be text, json_object or json_schema")),
    }
}

/// Cohere's `finish_reason` as OpenAI's; `Err` carries the status of a generation that failed
/// (`ERROR` 500, `TIMEOUT` 408), which OpenAI has no finish reason for.
pub(crate) fn finish_reason(reason: Option<&str>) -> Result<&'static str, u16> {
    match reason {
        Some("MAX_TOKENS") => Ok("length"),
        Some("TOOL_CALL") => Ok("tool_calls"),
        Some("ERROR") => Err(500),
        Some("TIMEOUT") => Err(408),
        // COMPLETE and STOP_SEQUENCE.
        _ => Ok("stop"),
    }
}

/// Cohere's `usage` as OpenAI's. `tokens` (what the model processed) is what LiteLLM counts;
/// `billed_units` stands in when an answer lacks it.
pub(crate) fn usage(usage: &Value) -> Value {
    let pick = |key: &str| {
        let tokens = usage.get("tokens").and_then(|t| t.get(key));
        count(tokens.or_else(|| usage.get("billed_units").and_then(|b| b.get(key))))
    };
    let (prompt, completion) = (pick("input_tokens"), pick("output_tokens"));
    let mut out = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    });
    let cached = count(usage.get("cached_tokens"));
    if cached > 0 {
        out["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    out
}

fn failed(status: u16, reason: &str, detail: Option<&str>) -> ProviderError {
    let message = match detail {
        Some(detail) => format!("cohere ended the generation with {reason}: {detail}"),
        None => format!("cohere ended the generation with {reason}"),
    };
    ProviderError::Upstream { status, message, error_type: None, param: None, code: None, retry_after: None }
}

/// A `/v2/chat` answer as an OpenAI `chat.completion`.
pub(crate) fn to_chat_completion(answer: &Value, model: &str, created: u64) -> Result<Value, ProviderError> {
    let reason = answer.get("finish_reason").and_then(Value::as_str);
    let finish = finish_reason(reason).map_err(|status| failed(status, reason.unwrap_or("?"), None))?;
    let message = answer
        .get("message")
        .ok_or_else(|| ProviderError::Protocol("cohere answered without `message`".into()))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    for item in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(item.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => {
                reasoning.push_str(item.get("thinking").and_then(Value::as_str).unwrap_or_default())
            }
            _ => {}
        }
    }
    let tool_calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|call| {
            json!({
                "id": call.get("id"),
                "type": "function",
                "function": {
                    "name": call.pointer("/function/name"),
                    "arguments": call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}"),
                },
            })
        })
        .collect();
    let mut out_message = json!({"role": "assistant"});
    out_message["content"] =
        if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) };
    if !tool_calls.is_empty() {
        out_message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        out_message["reasoning_content"] = json!(reasoning);
    }
    let id = answer.get("id").and_then(Value::as_str).unwrap_or("cohere");
    let empty = json!({});
    Ok(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": out_message, "logprobs": null, "finish_reason": finish}],
        "usage": usage(answer.get("usage").unwrap_or(&empty)),
    }))
}

/// Cohere's stream events (each SSE event's data holds its `type`) as OpenAI chunks. The
/// stream ends with `message-end`, which carries the finish reason and the usage.
pub(crate) struct Translator {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Cohere's tool-call index -> OpenAI's, in the order the calls started.
    tool_calls: Vec<u64>,
    finished: bool,
}

impl Translator {
    pub(crate) fn new(model: String, created: u64, include_usage: bool) -> Self {
        let id = format!("chatcmpl-{}", uuid::Uuid::new_v4());
        Self { id, model, created, include_usage, tool_calls: Vec::new(), finished: false }
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

    fn tool_position(&mut self, index: u64, start: bool) -> usize {
        match self.tool_calls.iter().position(|known| *known == index) {
            Some(position) => position,
            None if start || self.tool_calls.is_empty() => {
                self.tool_calls.push(index);
                self.tool_calls.len() - 1
            }
            None => self.tool_calls.len() - 1,
        }
    }

    fn end(&mut self, body: &Value) -> String {
        self.finished = true;
        let delta = body.get("delta").unwrap_or(&Value::Null);
        let reason = delta.get("finish_reason").and_then(Value::as_str);
        let detail = delta.get("error").and_then(Value::as_str).filter(|e| !e.is_empty());
        let finish = match (finish_reason(reason), detail) {
            (Ok(finish), None) => finish,
            (outcome, detail) => {
                let status = outcome.err().unwrap_or(500);
                let message = failed(status, reason.unwrap_or("ERROR"), detail).to_string();
                let error = json!({"error": {"message": message, "type": "cohere_error", "param": null, "code": status.to_string()}});
                return format!("data: {error}\n\n");
            }
        };
        let mut out = self.chunk(json!({}), json!(finish));
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(delta.get("usage").unwrap_or(&Value::Null)),
            });
            out.push_str(&format!("data: {chunk}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }
}

impl TranslateEvents for Translator {
    const PROVIDER: &'static str = "cohere";

    fn finished(&self) -> bool {
        self.finished
    }

    fn event(&mut self, event: &Value) -> Option<Bytes> {
        let message = event.pointer("/delta/message");
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        let out = match event.get("type").and_then(Value::as_str)? {
            "message-start" => {
                if let Some(id) = event.get("id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{id}");
                }
                self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)
            }
            "content-delta" => {
                let content = message?.get("content")?;
                if let Some(text) = content.get("text").and_then(Value::as_str) {
                    self.chunk(json!({"content": text}), Value::Null)
                } else if let Some(thinking) = content.get("thinking").and_then(Value::as_str) {
                    self.chunk(json!({"reasoning_content": thinking}), Value::Null)
                } else {
                    return None;
                }
            }
            "tool-call-start" => {
                let call = message?.get("tool_calls")?;
                let position = self.tool_position(index, true);
                self.chunk(
                    json!({"tool_calls": [{
                        "index": position,
                        "id": call.get("id"),
                        "type": "function",
                        "function": {
                            "name": call.pointer("/function/name"),
                            "arguments": call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or(""),
                        },
                    }]}),
                    Value::Null,
                )
            }
            "tool-call-delta" => {
                let arguments = message?.pointer("/tool_calls/function/arguments")?.as_str()?;
                let position = self.tool_position(index, false);
                self.chunk(
                    json!({"tool_calls": [{"index": position, "function": {"arguments": arguments}}]}),
                    Value::Null,
                )
            }
            "message-end" => self.end(event),
            // content-start/-end, tool-plan-delta, tool-call-end, citations, debug.
            _ => return None,
        };
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::translate_raw;

    fn chat(extra: Value) -> Value {
        let mut request =
            json!({"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]});
        request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        request
    }

    #[test]
    fn request_translation_covers_roles_tools_results_and_sampling() {
        let openai = json!({
            "model": "command-a-03-2025",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "thanks"}
            ],
            "max_completion_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "seed": 7,
            "frequency_penalty": 0.1,
            "stop": "END",
            "stream_options": {"include_usage": true},
            "user": "u-1",
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": "required",
            "safety_mode": "STRICT",
        });
        let out = to_chat_request(&openai, "command-a-03-2025", true).unwrap();
        assert_eq!(
            out["messages"],
            json!([
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}
                ]},
                {"role": "assistant", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "user", "content": "thanks"}
            ]),
            "an empty assistant turn is dropped"
        );
        let expected = json!({
            "model": "command-a-03-2025",
            "stream": true,
            "max_tokens": 100,
            "temperature": 0.2,
            "p": 0.9,
            "k": 40,
            "seed": 7,
            "frequency_penalty": 0.1,
            "stop_sequences": ["END"],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}],
            "strict_tools": true,
            "tool_choice": "REQUIRED",
            "safety_mode": "STRICT",
        });
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&out[key], value, "{key}");
        }
        for gone in ["stream_options", "user", "top_p", "max_completion_tokens", "stop"] {
            assert!(out.get(gone).is_none(), "{gone} is not a cohere parameter");
        }
    }

    #[test]
    fn json_mode_thinking_and_named_tools() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let out = to_chat_request(
            &chat(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}, "reasoning_effort": "medium"})),
            "m",
            false,
        )
        .unwrap();
        assert_eq!(out["response_format"], json!({"type": "json_object", "json_schema": schema}));
        assert_eq!(out["thinking"], json!({"type": "enabled", "token_budget": 2048}));
        assert!(out.get("stream").is_none());
        let tools = json!([
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}
        ]);
        let named = to_chat_request(
            &chat(json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "a"}}})),
            "m",
            false,
        )
        .unwrap();
        assert_eq!(named["tool_choice"], "REQUIRED");
        assert_eq!(
            named["tools"],
            json!([{"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {}}}}])
        );
        let none =
            to_chat_request(&chat(json!({"tools": tools, "tool_choice": "none"})), "m", false).unwrap();
        assert_eq!(none["tool_choice"], "NONE");
        let json_object =
            to_chat_request(&chat(json!({"response_format": {"type": "json_object"}})), "m", false).unwrap();
        assert_eq!(json_object["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn unsupported_requests_are_named() {
        let error = |extra: Value| to_chat_request(&chat(extra), "m", false).unwrap_err().to_string();
        assert_eq!(error(json!({"n": 2})), "`n` is not supported by cohere models");
        assert_eq!(error(json!({"logit_bias": {"1": 5}})), "`logit_bias` is not supported by cohere models");
        assert!(
            to_chat_request(
                &chat(json!({"n": 1, "logprobs": false, "parallel_tool_calls": true})),
                "m",
                false
            )
            .is_ok()
        );
        assert!(
            error(json!({"tool_choice": {"type": "function", "function": {"name": "x"}}}))
                .contains("not in `tools`")
        );
        assert!(
            error(json!({"messages": [{"role": "function", "content": "x"}]})).contains("role 'function'")
        );
        assert!(
            error(json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}))
                .contains("input_audio")
        );
        assert!(error(json!({"reasoning_effort": "extreme"})).contains("reasoning_effort"));
    }

    #[test]
    fn answers_map_text_thinking_tools_finish_and_usage() {
        let answer = json!({
            "id": "c14c80c3",
            "finish_reason": "TOOL_CALL",
            "message": {
                "role": "assistant",
                "tool_plan": "I will look it up.",
                "content": [{"type": "thinking", "thinking": "hmm"}],
                "tool_calls": [{"id": "weather_abc", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]
            },
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 9}, "tokens": {"input_tokens": 71, "output_tokens": 9}, "cached_tokens": 64}
        });
        let out = to_chat_completion(&answer, "command-a-03-2025", 42).unwrap();
        assert_eq!(out["id"], "chatcmpl-c14c80c3");
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(choice["message"]["reasoning_content"], "hmm");
        assert_eq!(
            choice["message"]["tool_calls"][0],
            json!({"id": "weather_abc", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}})
        );
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 71, "completion_tokens": 9, "total_tokens": 80, "prompt_tokens_details": {"cached_tokens": 64}}),
            "tokens, not billed units"
        );
        let text = json!({"id": "x", "finish_reason": "MAX_TOKENS", "message": {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, "usage": {"billed_units": {"input_tokens": 3.0, "output_tokens": 2.0}}});
        let out = to_chat_completion(&text, "m", 0).unwrap();
        assert_eq!(
            (out["choices"][0]["message"]["content"].as_str(), out["choices"][0]["finish_reason"].as_str()),
            (Some("ab"), Some("length"))
        );
        assert_eq!(out["usage"]["total_tokens"], 5, "billed units when tokens are missing");
        for (reason, expected) in [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop")] {
            assert_eq!(finish_reason(Some(reason)), Ok(expected));
        }
        let failed = json!({"id": "x", "finish_reason": "TIMEOUT", "message": {"role": "assistant"}});
        let ProviderError::Upstream { status, message, .. } =
            to_chat_completion(&failed, "m", 0).unwrap_err()
        else {
            panic!()
        };
        assert_eq!((status, message.as_str()), (408, "cohere ended the generation with TIMEOUT"));
    }

    /// The documented tool stream, as Cohere sends it: `event:` lines and JSON data.
    const TOOL_STREAM: &str = concat!(
        "event: message-start\ndata: {\"id\":\"2edf\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n",
        "event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will\"}}}\n\n",
        "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"sales_j3f0\",\"type\":\"function\",\"function\":{\"name\":\"sales\",\"arguments\":\"\"}}}}}\n\n",
        "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"day\\\": \"}}}}}\n\n",
        "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"\\\"2023-09-29\\\"}\"}}}}}\n\n",
        "event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":0}\n\n",
        "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"catalog_c66n\",\"type\":\"function\",\"function\":{\"name\":\"catalog\",\"arguments\":\"\"}}}}}\n\n",
        "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{}\"}}}}}\n\n",
        "event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":1}\n\n",
        "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{\"input_tokens\":126,\"output_tokens\":84},\"tokens\":{\"input_tokens\":1589,\"output_tokens\":135}}}}\n\n",
        "data: [DONE]\n\n",
    );

    fn chunks_of(out: &str) -> Vec<Value> {
        out.split("\n\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.strip_prefix("data: ").unwrap())
            .filter(|s| *s != "[DONE]")
            .map(|s| serde_json::from_str(s).unwrap())
            .collect()
    }

    #[test]
    fn tool_stream_events_become_openai_chunks() {
        let mut t = Translator::new("command-a".into(), 1, true);
        let out: String = TOOL_STREAM
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .filter_map(|e| translate_raw(&mut t, e.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert!(t.finished());
        assert!(out.ends_with("data: [DONE]\n\n"));
        let chunks = chunks_of(&out);
        assert_eq!(chunks.len(), 8, "{chunks:#?}");
        assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-2edf" && c["model"] == "command-a"));
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "sales_j3f0", "type": "function", "function": {"name": "sales", "arguments": ""}})
        );
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "function": {"arguments": "\"2023-09-29\"}"}})
        );
        assert_eq!(chunks[4]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(chunks[5]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            chunks[7]["usage"],
            json!({"prompt_tokens": 1589, "completion_tokens": 135, "total_tokens": 1724})
        );
        assert_eq!(chunks[7]["choices"], json!([]));
    }

    #[test]
    fn a_failed_generation_ends_the_stream_with_an_error_event() {
        let mut t = Translator::new("m".into(), 1, false);
        let end =
            br#"data: {"type":"message-end","delta":{"finish_reason":"ERROR","error":"internal failure"}}"#;
        let out = String::from_utf8(translate_raw(&mut t, end).unwrap().to_vec()).unwrap();
        let error: Value = serde_json::from_str(out.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(error["error"]["message"], "cohere ended the generation with ERROR: internal failure");
        assert_eq!(error["error"]["code"], "500");
        assert!(t.finished());
    }
}
