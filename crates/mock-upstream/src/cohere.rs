//! Cohere's v2 API as the gateway meets it: `POST /v2/chat` (a `ChatResponseV2`, or its
//! named SSE events), `POST /v2/embed` (embeddings by type) and `POST /v2/rerank`, with
//! Cohere's `{"id", "message"}` error bodies.
//!
//! Field names and shapes are those of Cohere's OpenAPI specification
//! (`cohere-openapi.yaml`: ChatMessageV2, ToolV2, ChatResponseV2, Usage, the stream events,
//! EmbedByTypeResponse, the v2 rerank answer and ApiMeta). The mock is stricter than it needs
//! to be about unknown request fields, so a gateway that leaks OpenAI-only fields is caught.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::bedrock::StreamFault;
use crate::body::MockBody;
use crate::handler::{self, Answer, Api};
use crate::wire::{
    COMPLETION_TOKENS, EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS_PER_INPUT, EventWriter, PROMPT_TOKENS,
    REPLY_TEXT, embedding_vector, random_id_of,
};
use crate::{Behavior, Shared};

/// `usage.tokens.input_tokens` exceeds the billed input by this much: the prompt template
/// Cohere wraps around messages, which it processes but does not bill.
pub const COHERE_TEMPLATE_TOKENS: u64 = 60;
/// `tool_plan` of an answer that calls tools.
pub const COHERE_TOOL_PLAN: &str = "I will look that up.";
/// `arguments` of every tool call the mock makes.
pub const COHERE_TOOL_ARGUMENTS_JSON: &str = r#"{"location": "Paris"}"#;
/// Text of an answer in JSON mode (`response_format.type: json_object`).
pub const COHERE_JSON_REPLY_TEXT: &str = r#"{"answer": "mock reply"}"#;
/// The thinking item when `thinking.type` is `enabled`.
pub const COHERE_THINKING_TEXT: &str = "mock thinking";
/// `max_tokens` up to this ends the answer with `MAX_TOKENS`.
pub const COHERE_MAX_TOKENS_TRIGGER: u64 = 2;
/// Text of a `MAX_TOKENS` answer.
pub const COHERE_MAX_TOKENS_TEXT: &str = "mock";
/// Most texts one `/v2/embed` call takes.
pub const COHERE_MAX_EMBED_TEXTS: usize = 96;
/// Documents one search unit covers (Cohere bills rerank per search unit).
pub const COHERE_DOCUMENTS_PER_SEARCH_UNIT: usize = 100;

const CHAT_FIELDS: &[&str] = &[
    "stream",
    "model",
    "messages",
    "tools",
    "strict_tools",
    "documents",
    "citation_options",
    "response_format",
    "safety_mode",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "k",
    "p",
    "logprobs",
    "tool_choice",
    "thinking",
    "priority",
];
const EMBED_FIELDS: &[&str] = &[
    "model",
    "texts",
    "images",
    "inputs",
    "input_type",
    "max_tokens",
    "output_dimension",
    "embedding_types",
    "truncate",
    "priority",
];
const RERANK_FIELDS: &[&str] = &["model", "query", "documents", "top_n", "max_tokens_per_doc", "priority"];
const INPUT_TYPES: &[&str] = &["search_document", "search_query", "classification", "clustering", "image"];
const OUTPUT_DIMENSIONS: &[u64] = &[256, 512, 1024, 1536];

/// A [`Behavior::Error`] with Cohere's error body, e.g. `cohere_error(401, "invalid api token")`.
pub fn cohere_error(status: u16, message: &str) -> Behavior {
    Behavior::Error { status, body: String::from_utf8_lossy(&error_body(message)).into_owned() }
}

/// Cohere's error body, `{"id": <uuid>, "message": ...}`.
pub(crate) fn error_body(message: &str) -> Bytes {
    Bytes::from(json!({"id": uuid(), "message": message}).to_string())
}

/// The body of a 429, as Cohere words a trial key's limit.
pub(crate) fn rate_limit_body() -> Bytes {
    error_body(
        "You are using a Trial key, which is limited to 20 API calls / minute. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits.",
    )
}

fn uuid() -> String {
    let hex = random_id_of("", 32).to_ascii_lowercase();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The operations of Cohere's API the mock serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Chat,
    Embed,
    Rerank,
}

/// `POST /v2/chat`, `/v2/embed`, `/v2/rerank`.
pub(crate) fn route(path: &str) -> Option<Op> {
    match path {
        "/v2/chat" => Some(Op::Chat),
        "/v2/embed" => Some(Op::Embed),
        "/v2/rerank" => Some(Op::Rerank),
        _ => None,
    }
}

/// Whether `path` is under Cohere's `/v2/`, so an unknown one gets Cohere's 404.
pub(crate) fn is_cohere_path(path: &str) -> bool {
    path.starts_with("/v2/")
}

fn error(request_id: u64, status: StatusCode, message: &str) -> Response<MockBody> {
    handler::json(Api::Cohere, request_id, status, error_body(message))
}

fn invalid(request_id: u64, message: &str) -> Response<MockBody> {
    error(request_id, StatusCode::BAD_REQUEST, &format!("invalid request: {message}"))
}

/// Answers an operation once the behaviour has been applied: the key is checked first (any
/// non-empty bearer token is accepted), then the body. A [`Behavior::StreamException`]
/// fails a chat stream after its first `after_events` events with a `message-end` whose
/// `finish_reason` is `ERROR` and whose `error` is the behaviour's message.
pub(crate) fn call(
    shared: &std::sync::Arc<Shared>,
    op: Op,
    headers: &HeaderMap,
    body: &[u8],
    answer: Answer,
    fault: Option<&StreamFault>,
) -> Response<MockBody> {
    let request_id = answer.request_id;
    if !handler::has_bearer(headers) {
        return error(request_id, StatusCode::UNAUTHORIZED, "no api key supplied");
    }
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return invalid(request_id, &format!("could not parse the request body: {e}")),
    };
    let allowed = match op {
        Op::Chat => CHAT_FIELDS,
        Op::Embed => EMBED_FIELDS,
        Op::Rerank => RERANK_FIELDS,
    };
    if let Some(unknown) = request.keys().find(|key| !allowed.contains(&key.as_str())) {
        return invalid(request_id, &format!("unknown field: {unknown}"));
    }
    if request.get("model").and_then(Value::as_str).is_none_or(str::is_empty) {
        return invalid(request_id, "model is required");
    }
    let result = match op {
        Op::Chat => return chat(shared, &request, answer, fault),
        Op::Embed => embed(&request),
        Op::Rerank => rerank(&request),
    };
    match result {
        Ok(body) => handler::json(Api::Cohere, request_id, StatusCode::OK, Bytes::from(body.to_string())),
        Err(message) => invalid(request_id, &message),
    }
}

// ---------------------------------------------------------------------------------------
// chat

/// What a chat answer says.
#[derive(Debug, PartialEq)]
struct Reply {
    /// Tools the answer calls (empty for a text answer).
    calls: Vec<String>,
    text: &'static str,
    thinking: bool,
    finish: &'static str,
}

/// Checks a chat body as Cohere would and decides the reply: a call of the first two tools
/// when `tools` is set, the last message is the user's and `tool_choice` is not `NONE`; else
/// JSON mode's text, a `MAX_TOKENS` text for a tiny `max_tokens`, or [`REPLY_TEXT`].
fn chat_reply(request: &Map<String, Value>) -> Result<Reply, String> {
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => return Err("messages must be a non-empty array".into()),
    };
    for (i, message) in messages.iter().enumerate() {
        check_message(message).map_err(|e| format!("messages[{i}]: {e}"))?;
    }
    let mut tools = Vec::new();
    for (i, tool) in request.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = tool.pointer("/function/name").and_then(Value::as_str);
        let parameters = tool.pointer("/function/parameters");
        match (tool.get("type").and_then(Value::as_str), name, parameters) {
            (Some("function"), Some(name), Some(Value::Object(_))) => tools.push(name.to_owned()),
            _ => return Err(format!("tools[{i}] must be a function with a name and parameters")),
        }
    }
    let choice = request.get("tool_choice").map(|c| c.as_str().unwrap_or_default());
    match choice {
        None | Some("NONE") => {}
        Some("REQUIRED") if tools.is_empty() => return Err("tool_choice REQUIRED needs tools".into()),
        Some("REQUIRED") => {}
        Some(other) => return Err(format!("tool_choice must be REQUIRED or NONE, not '{other}'")),
    }
    if let Some(stops) = request.get("stop_sequences") {
        let fine = stops.as_array().is_some_and(|s| s.len() <= 5 && s.iter().all(Value::is_string));
        if !fine {
            return Err("stop_sequences must be at most 5 strings".into());
        }
    }
    let format =
        request.get("response_format").map(|f| f.get("type").and_then(Value::as_str).unwrap_or_default());
    if format.is_some_and(|f| f != "text" && f != "json_object") {
        return Err("response_format.type must be text or json_object".into());
    }
    let thinking = match request.get("thinking").map(|t| t.get("type").and_then(Value::as_str)) {
        None => false,
        Some(Some("enabled")) => true,
        Some(Some("disabled")) => false,
        Some(_) => return Err("thinking.type must be enabled or disabled".into()),
    };
    let last_is_user = messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("user");
    let mut reply = Reply { calls: Vec::new(), text: REPLY_TEXT, thinking, finish: "COMPLETE" };
    if !tools.is_empty() && last_is_user && choice != Some("NONE") {
        reply.calls = tools.into_iter().take(2).collect();
        reply.finish = "TOOL_CALL";
    } else if format == Some("json_object") {
        reply.text = COHERE_JSON_REPLY_TEXT;
    } else if request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .is_some_and(|m| (1..=COHERE_MAX_TOKENS_TRIGGER).contains(&m))
    {
        reply.text = COHERE_MAX_TOKENS_TEXT;
        reply.finish = "MAX_TOKENS";
    }
    Ok(reply)
}

fn check_message(message: &Value) -> Result<(), String> {
    let content = message.get("content");
    let content_ok = |content: Option<&Value>| match content {
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) => {
            items.iter().all(|item| match item.get("type").and_then(Value::as_str) {
                Some("text") => item.get("text").is_some_and(Value::is_string),
                Some("image_url") => item.pointer("/image_url/url").is_some_and(Value::is_string),
                Some("thinking") => item.get("thinking").is_some_and(Value::is_string),
                Some("document") => item.get("document").is_some(),
                _ => false,
            })
        }
        _ => false,
    };
    match message.get("role").and_then(Value::as_str) {
        Some("user" | "system") if content_ok(content) => Ok(()),
        Some("user" | "system") => Err("content must be a string or an array of content items".into()),
        Some("tool") if message.get("tool_call_id").is_some_and(Value::is_string) && content_ok(content) => {
            Ok(())
        }
        Some("tool") => Err("a tool message needs tool_call_id and content".into()),
        Some("assistant") => {
            let calls = message.get("tool_calls").and_then(Value::as_array);
            let calls_ok = calls.is_none_or(|calls| {
                calls.iter().all(|call| {
                    call.get("id").is_some_and(Value::is_string)
                        && call.get("type").and_then(Value::as_str) == Some("function")
                        && call.pointer("/function/name").is_some_and(Value::is_string)
                        && call.pointer("/function/arguments").is_some_and(Value::is_string)
                })
            });
            match (content, calls) {
                _ if !calls_ok => {
                    Err("tool_calls need an id, type function, a name and string arguments".into())
                }
                (None, None) => Err("an assistant message needs content or tool_calls".into()),
                (Some(_), _) if !content_ok(content) => {
                    Err("content must be a string or an array of content items".into())
                }
                _ => Ok(()),
            }
        }
        Some(other) => Err(format!("role must be user, assistant, system or tool, not '{other}'")),
        None => Err("role is required".into()),
    }
}

fn usage(output_tokens: u64) -> Value {
    json!({
        "billed_units": {"input_tokens": PROMPT_TOKENS, "output_tokens": output_tokens},
        "tokens": {"input_tokens": PROMPT_TOKENS + COHERE_TEMPLATE_TOKENS, "output_tokens": output_tokens},
    })
}

fn tool_call(name: &str) -> Value {
    json!({
        "id": format!("{name}_{}", random_id_of("", 12).to_ascii_lowercase()),
        "type": "function",
        "function": {"name": name, "arguments": COHERE_TOOL_ARGUMENTS_JSON},
    })
}

fn chat(
    shared: &std::sync::Arc<Shared>,
    request: &Map<String, Value>,
    answer: Answer,
    fault: Option<&StreamFault>,
) -> Response<MockBody> {
    let reply = match chat_reply(request) {
        Ok(reply) => reply,
        Err(message) => return invalid(answer.request_id, &message),
    };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let events = stream_events(&reply, answer.chunks).and_then(|mut events| {
            if let Some(fault) = fault {
                events.truncate(fault.after_events);
                let end = json!({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": fault.message}});
                let mut writer = EventWriter::new(1);
                writer.push_named("message-end", &end)?;
                events.extend(writer.into_events());
            }
            Ok(events)
        });
        return handler::stream(shared, answer, events);
    }
    let mut content = Vec::new();
    if reply.thinking {
        content.push(json!({"type": "thinking", "thinking": COHERE_THINKING_TEXT}));
    }
    let mut message = json!({"role": "assistant"});
    let output_tokens = if reply.finish == "MAX_TOKENS" { 1 } else { COMPLETION_TOKENS };
    if reply.calls.is_empty() {
        content.push(json!({"type": "text", "text": reply.text}));
    } else {
        message["tool_plan"] = json!(COHERE_TOOL_PLAN);
        message["tool_calls"] = reply.calls.iter().map(|name| tool_call(name)).collect();
    }
    if !content.is_empty() {
        message["content"] = Value::Array(content);
    }
    let body = json!({"id": uuid(), "finish_reason": reply.finish, "message": message, "usage": usage(output_tokens)});
    handler::json(Api::Cohere, answer.request_id, StatusCode::OK, Bytes::from(body.to_string()))
}

/// `text` cut into `n` consecutive non-empty pieces that concatenate to it.
fn pieces(text: &str, n: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text.char_indices().map(|(at, _)| at).chain([text.len()]).collect();
    let chars = bounds.len() - 1;
    let n = n.clamp(1, chars.max(1));
    (0..n).map(|i| &text[bounds[i * chars / n]..bounds[(i + 1) * chars / n]]).collect()
}

/// The stream of an answer, each event (`event: <type>` and its JSON) one frame:
/// `message-start`; a thinking item when asked for; then either the text as `content-start`,
/// `chunks` `content-delta`s and `content-end`, or for tool calls the plan as one
/// `tool-plan-delta` and per call `tool-call-start`, two `tool-call-delta`s and
/// `tool-call-end`; last `message-end` with the finish reason and usage (output tokens = the
/// text's chunk count).
fn stream_events(reply: &Reply, chunks: usize) -> serde_json::Result<Vec<Bytes>> {
    let mut writer = EventWriter::new(chunks + 12);
    let mut push = |value: Value| -> serde_json::Result<()> {
        let name = value["type"].as_str().unwrap_or_default().to_owned();
        writer.push_named(&name, &value)
    };
    push(json!({"type": "message-start", "id": uuid(), "delta": {"message": {"role": "assistant"}}}))?;
    let mut index = 0;
    if reply.thinking {
        push(
            json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}}),
        )?;
        push(
            json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": COHERE_THINKING_TEXT}}}}),
        )?;
        push(json!({"type": "content-end", "index": 0}))?;
        index = 1;
    }
    let output_tokens;
    if reply.calls.is_empty() {
        let text = if reply.finish == "MAX_TOKENS" { vec![reply.text] } else { pieces(reply.text, chunks) };
        output_tokens = text.len() as u64;
        push(
            json!({"type": "content-start", "index": index, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
        )?;
        for piece in text {
            push(
                json!({"type": "content-delta", "index": index, "delta": {"message": {"content": {"text": piece}}}}),
            )?;
        }
        push(json!({"type": "content-end", "index": index}))?;
    } else {
        output_tokens = COMPLETION_TOKENS;
        push(json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": COHERE_TOOL_PLAN}}}))?;
        let (head, tail) = COHERE_TOOL_ARGUMENTS_JSON.split_at(COHERE_TOOL_ARGUMENTS_JSON.len() / 2);
        for (i, name) in reply.calls.iter().enumerate() {
            let mut call = tool_call(name);
            call["function"]["arguments"] = json!("");
            push(json!({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": call}}}))?;
            for part in [head, tail] {
                push(
                    json!({"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": part}}}}}),
                )?;
            }
            push(json!({"type": "tool-call-end", "index": i}))?;
        }
    }
    push(
        json!({"type": "message-end", "delta": {"finish_reason": reply.finish, "usage": usage(output_tokens)}}),
    )?;
    Ok(writer.into_events())
}

// ---------------------------------------------------------------------------------------
// embed and rerank

fn embed(request: &Map<String, Value>) -> Result<Value, String> {
    let input_type = request.get("input_type").and_then(Value::as_str).ok_or("input_type is required")?;
    if !INPUT_TYPES.contains(&input_type) {
        return Err(format!("input_type must be one of {}", INPUT_TYPES.join(", ")));
    }
    let strings = |name: &str| -> Option<Vec<String>> {
        let items = request.get(name)?.as_array()?;
        items.iter().map(|i| i.as_str().map(str::to_owned)).collect()
    };
    let (texts, images) = (strings("texts"), strings("images"));
    let count = match (&texts, &images) {
        (Some(texts), None) if (1..=COHERE_MAX_EMBED_TEXTS).contains(&texts.len()) => texts.len(),
        (Some(_), None) => {
            return Err(format!("texts must hold between 1 and {COHERE_MAX_EMBED_TEXTS} strings"));
        }
        (None, Some(images)) if images.len() == 1 && images[0].starts_with("data:image/") => 1,
        (None, Some(_)) => return Err("images must hold one image as a data URI".into()),
        _ => return Err("one of texts or images must be given".into()),
    };
    let dimensions = match request.get("output_dimension") {
        None => EMBEDDING_DIMENSIONS,
        Some(d) => match d.as_u64().filter(|d| OUTPUT_DIMENSIONS.contains(d)) {
            Some(d) => d as usize,
            None => return Err("output_dimension must be one of 256, 512, 1024, 1536".into()),
        },
    };
    let types: Vec<&str> = match request.get("embedding_types") {
        None => vec!["float"],
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err("embedding_types must be an array".into()),
    };
    let mut embeddings = Map::new();
    for kind in types {
        let vectors: Vec<Value> = (0..count)
            .map(|i| {
                let vector = embedding_vector(i, dimensions);
                match kind {
                    "float" => Ok(json!(vector)),
                    "base64" => {
                        use base64::Engine as _;
                        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                        Ok(json!(base64::engine::general_purpose::STANDARD.encode(bytes)))
                    }
                    other => Err(format!("the mock serves float and base64 embeddings, not {other}")),
                }
            })
            .collect::<Result<_, _>>()?;
        embeddings.insert(kind.to_owned(), Value::Array(vectors));
    }
    let billed = match &texts {
        Some(_) => json!({"input_tokens": EMBEDDING_TOKENS_PER_INPUT * count as u64}),
        None => json!({"images": count}),
    };
    let mut answer = json!({
        "id": uuid(),
        "embeddings": embeddings,
        "meta": {"api_version": {"version": "2"}, "billed_units": billed},
        "response_type": "embeddings_by_type",
    });
    if let Some(texts) = texts {
        answer["texts"] = json!(texts);
    }
    Ok(answer)
}

/// A deterministic relevance: the share of the query's words a document holds, nudged by
/// its position so that no two documents tie.
pub(crate) fn relevance(query: &str, document: &str, index: usize) -> f64 {
    let words = |text: &str| -> Vec<String> { text.split_whitespace().map(str::to_lowercase).collect() };
    let query = words(query);
    let held = words(document);
    let shared = query.iter().filter(|word| held.contains(word)).count();
    let share = if query.is_empty() { 0.0 } else { shared as f64 / query.len() as f64 };
    (share * 0.9 + 0.05 / (index as f64 + 1.0)).min(1.0)
}

/// The documents ranked by [`relevance`], best first, cut to `top`.
pub(crate) fn rank(query: &str, documents: &[String], top: Option<u64>) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> =
        documents.iter().enumerate().map(|(i, document)| (i, relevance(query, document, i))).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(top.map_or(usize::MAX, |n| n as usize));
    ranked
}

fn rerank(request: &Map<String, Value>) -> Result<Value, String> {
    let query = request.get("query").and_then(Value::as_str).ok_or("query is required")?;
    let documents: Vec<String> = match request.get("documents").and_then(Value::as_array) {
        Some(items) if !items.is_empty() && items.len() <= 1000 => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or("documents must be strings"))
            .collect::<Result<_, _>>()?,
        _ => return Err("documents must hold between 1 and 1000 strings".into()),
    };
    let top = match request.get("top_n") {
        None => None,
        Some(n) => Some(n.as_u64().filter(|n| *n >= 1).ok_or("top_n must be at least 1")?),
    };
    let results: Vec<Value> = rank(query, &documents, top)
        .into_iter()
        .map(|(index, score)| json!({"index": index, "relevance_score": score}))
        .collect();
    let search_units = documents.len().div_ceil(COHERE_DOCUMENTS_PER_SEARCH_UNIT);
    Ok(json!({
        "id": uuid(),
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": search_units}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn chat_rules() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let tools = json!([
            {"type": "function", "function": {"name": "a", "parameters": {}}},
            {"type": "function", "function": {"name": "b", "parameters": {}}},
            {"type": "function", "function": {"name": "c", "parameters": {}}}
        ]);
        let reply = |extra: Value| {
            let mut body = json!({"model": "m", "messages": user});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            chat_reply(&request(body))
        };
        assert_eq!(reply(json!({})).unwrap().text, REPLY_TEXT);
        assert_eq!(reply(json!({"tools": tools})).unwrap().calls, ["a", "b"]);
        assert!(reply(json!({"tools": tools, "tool_choice": "NONE"})).unwrap().calls.is_empty());
        assert_eq!(
            reply(json!({"response_format": {"type": "json_object"}})).unwrap().text,
            COHERE_JSON_REPLY_TEXT
        );
        assert_eq!(reply(json!({"max_tokens": 1})).unwrap().finish, "MAX_TOKENS");
        assert!(reply(json!({"thinking": {"type": "enabled", "token_budget": 10}})).unwrap().thinking);
        assert!(reply(json!({"tool_choice": "REQUIRED"})).is_err());
        assert!(reply(json!({"tool_choice": "required", "tools": tools})).is_err());
        assert!(reply(json!({"stop_sequences": "END"})).is_err());
        let answered = json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_plan": "p", "tool_calls": [{"id": "a_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a_1", "content": [{"type": "text", "text": "sunny"}]}
        ]});
        assert!(
            chat_reply(&request(answered)).unwrap().calls.is_empty(),
            "a tool result is answered with text"
        );
        let orphan = json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]});
        assert!(chat_reply(&request(orphan)).unwrap_err().contains("messages[0]"));
        let null_content = json!({"model": "m", "messages": [{"role": "assistant", "content": null}]});
        assert!(chat_reply(&request(null_content)).is_err());
    }

    #[test]
    fn streams_spell_the_text_and_end_with_usage() {
        let reply = Reply { calls: Vec::new(), text: REPLY_TEXT, thinking: false, finish: "COMPLETE" };
        let events = stream_events(&reply, 3).unwrap();
        assert_eq!(events.len(), 1 + 1 + 3 + 1 + 1);
        let text: String = events
            .iter()
            .filter_map(|e| {
                let data = std::str::from_utf8(e).unwrap().split("data: ").nth(1)?;
                let value: Value = serde_json::from_str(data.trim()).ok()?;
                value.pointer("/delta/message/content/text").and_then(Value::as_str).map(str::to_owned)
            })
            .collect();
        assert_eq!(text, REPLY_TEXT);
        let last = std::str::from_utf8(events.last().unwrap()).unwrap();
        assert!(last.starts_with("event: message-end\ndata: "), "{last}");
        assert!(last.contains("\"output_tokens\":3"));
        let calls = Reply { calls: vec!["a".into()], text: REPLY_TEXT, thinking: true, finish: "TOOL_CALL" };
        let events = stream_events(&calls, 3).unwrap();
        let arguments: String = events
            .iter()
            .filter_map(|e| {
                let data = std::str::from_utf8(e).unwrap().split("data: ").nth(1)?;
                let value: Value = serde_json::from_str(data.trim()).ok()?;
                (value["type"] == "tool-call-delta").then(|| {
                    value.pointer("/delta/message/tool_calls/function/arguments")?.as_str().map(str::to_owned)
                })?
            })
            .collect();
        assert_eq!(arguments, COHERE_TOOL_ARGUMENTS_JSON);
    }

    #[test]
    fn embed_and_rerank_answers() {
        let answer = embed(&request(json!({"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_query", "embedding_types": ["float", "base64"]}))).unwrap();
        assert_eq!(answer["embeddings"]["float"].as_array().unwrap().len(), 2);
        assert_eq!(answer["embeddings"]["float"][0].as_array().unwrap().len(), EMBEDDING_DIMENSIONS);
        assert!(answer["embeddings"]["base64"][1].is_string());
        assert_eq!(answer["meta"]["billed_units"]["input_tokens"], 2 * EMBEDDING_TOKENS_PER_INPUT);
        assert!(embed(&request(json!({"model": "m", "texts": ["a"]}))).unwrap_err().contains("input_type"));
        assert!(
            embed(&request(
                json!({"model": "m", "texts": ["a"], "input_type": "search_query", "output_dimension": 7})
            ))
            .is_err()
        );
        let many: Vec<String> = (0..=COHERE_MAX_EMBED_TEXTS).map(|i| i.to_string()).collect();
        assert!(embed(&request(json!({"model": "m", "texts": many, "input_type": "search_query"}))).is_err());

        let ranked = rerank(&request(json!({"model": "rerank-v3.5", "query": "capital of France", "documents": ["Berlin", "Paris is the capital of France", "a capital"], "top_n": 2}))).unwrap();
        assert_eq!(ranked["results"][0]["index"], 1);
        assert_eq!(ranked["results"].as_array().unwrap().len(), 2);
        assert_eq!(ranked["meta"]["billed_units"]["search_units"], 1);
        let documents: Vec<String> = (0..101).map(|i| format!("doc {i}")).collect();
        let two_units =
            rerank(&request(json!({"model": "m", "query": "q", "documents": documents}))).unwrap();
        assert_eq!(two_units["meta"]["billed_units"]["search_units"], 2);
    }
}
