//! Ollama's native API as the gateway meets it: `POST /api/chat`, `POST /api/generate` and
//! `POST /api/embed`, whole answers or NDJSON streams (one JSON object per line, the last
//! with `done: true` and the counts), and `{"error": "text"}` bodies.
//!
//! Checked against Ollama's API reference (docs/api.md): request fields (`model`,
//! `messages` with `images` and `tool_calls` whose `arguments` is an object, `prompt`,
//! `suffix`, `images`, `format`, `options`, `stream` defaulting to true, `think`,
//! `keep_alive`, `input`, `dimensions`, `truncate`) and answer fields (`message` /
//! `response`, `thinking`, `done`, `done_reason`, `prompt_eval_count`, `eval_count` and the
//! durations).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::Shared;
use crate::body::MockBody;
use crate::handler::{self, Answer, Api};
use crate::wire::{
    COMPLETION_TOKENS, EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS_PER_INPUT, MAX_EMBEDDING_DIMENSIONS,
    MAX_EMBEDDING_INPUTS, PROMPT_TOKENS, REPLY_TEXT, embedding_vector,
};

/// A model the mock has not pulled: every route answers it with Ollama's 404.
pub const OLLAMA_MISSING_MODEL: &str = "not-pulled";
/// The `arguments` object of every tool call the mock makes.
pub const OLLAMA_TOOL_ARGUMENTS_JSON: &str = r#"{"location":"Paris"}"#;
/// The `thinking` of an answer to a request with `think` on.
pub const OLLAMA_THINKING_TEXT: &str = "thinking it over";
/// The answer to a request with a `format` (JSON mode or a schema).
pub const OLLAMA_JSON_REPLY_TEXT: &str = r#"{"reply":"mock"}"#;
/// `options.num_predict` from 1 to this stops the answer short: text
/// [`OLLAMA_LENGTH_TEXT`], `done_reason: "length"`, one token.
pub const OLLAMA_MAX_TOKENS_TRIGGER: u64 = 3;
pub const OLLAMA_LENGTH_TEXT: &str = "mock";
/// The `created_at` of every answer.
const CREATED_AT: &str = "2025-01-01T00:00:00.000000Z";

/// The routes of this module.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Chat,
    Generate,
    Embed,
}

pub(crate) fn route(path: &str) -> Option<Op> {
    match path {
        "/api/chat" => Some(Op::Chat),
        "/api/generate" => Some(Op::Generate),
        "/api/embed" => Some(Op::Embed),
        _ => None,
    }
}

/// Whether `path` is under Ollama's `/api/`, so an unknown one gets Ollama's 404.
pub(crate) fn is_ollama_path(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Ollama's error body.
pub(crate) fn error_body(message: &str) -> Bytes {
    Bytes::from(json!({"error": message}).to_string())
}

pub(crate) fn error(request_id: u64, status: StatusCode, message: &str) -> Response<MockBody> {
    handler::json(Api::Ollama, request_id, status, error_body(message))
}

fn bad(request_id: u64, message: &str) -> Response<MockBody> {
    error(request_id, StatusCode::BAD_REQUEST, message)
}

/// What the answer says, by the first rule that applies: a tool call (chat only: `tools`
/// given and the last message is the user's), a short answer (`num_predict` from 1 to
/// [`OLLAMA_MAX_TOKENS_TRIGGER`]), JSON (`format` set), else [`REPLY_TEXT`].
struct Reply {
    text: &'static str,
    tool: Option<String>,
    thinking: bool,
    length: bool,
    /// An empty request that only loads the model (no messages, no prompt).
    load: bool,
}

impl Reply {
    fn eval_count(&self) -> u64 {
        if self.length { 1 } else { COMPLETION_TOKENS }
    }
}

/// Checks what Ollama checks of the fields both generation routes share: the model and
/// whether to stream, or the status and message of the refusal.
fn common(request: &Map<String, Value>) -> Result<(String, bool), (StatusCode, String)> {
    let refuse = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => return Err(refuse("model is required")),
    };
    if model == OLLAMA_MISSING_MODEL {
        return Err((StatusCode::NOT_FOUND, format!("model \"{model}\" not found, try pulling it first")));
    }
    match request.get("format") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(Value::String(format)) if format == "json" || format.is_empty() => {}
        Some(other) => return Err(refuse(&format!("invalid format: {other}"))),
    }
    match request.get("options") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err(refuse("json: cannot unmarshal into Go struct field .options of type map")),
    }
    let stream = match request.get("stream") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(refuse("json: cannot unmarshal into Go struct field .stream of type bool")),
    };
    Ok((model, stream))
}

/// Images must be base64 text; the message of the refusal otherwise.
fn check_images(images: Option<&Value>) -> Result<(), String> {
    for image in images.and_then(Value::as_array).into_iter().flatten() {
        match image.as_str().map(|text| STANDARD.decode(text)) {
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("json: cannot unmarshal into Go value of type api.ImageData".to_owned()),
        }
    }
    Ok(())
}

fn reply(request: &Map<String, Value>, tool: Option<String>, load: bool) -> Reply {
    let num_predict = request.get("options").and_then(|o| o.get("num_predict")).and_then(Value::as_u64);
    let length = tool.is_none() && num_predict.is_some_and(|n| (1..=OLLAMA_MAX_TOKENS_TRIGGER).contains(&n));
    let json = request.get("format").is_some_and(|f| f.is_object() || f == "json");
    let thinking = request.get("think").is_some_and(|think| think == true || think.is_string());
    let text = if load || tool.is_some() {
        ""
    } else if length {
        OLLAMA_LENGTH_TEXT
    } else if json {
        OLLAMA_JSON_REPLY_TEXT
    } else {
        REPLY_TEXT
    };
    Reply { text, tool, thinking, length, load }
}

/// Answers one of the routes once its behaviour has been applied.
pub(crate) fn answer(shared: &Arc<Shared>, op: Op, body: &[u8], answer: Answer) -> Response<MockBody> {
    let request_id = answer.request_id;
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return bad(request_id, &error.to_string()),
    };
    if op == Op::Embed {
        return embed(&request, request_id);
    }
    let (model, stream) = match common(&request) {
        Ok(checked) => checked,
        Err((status, message)) => return error(request_id, status, &message),
    };
    let reply = match op {
        Op::Chat => {
            let messages = match request.get("messages") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(messages)) => messages.clone(),
                Some(_) => return bad(request_id, "json: cannot unmarshal into Go struct field .messages"),
            };
            for message in &messages {
                if let Err(message) = check_images(message.get("images")) {
                    return bad(request_id, &message);
                }
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    if call.pointer("/function/arguments").is_some_and(|a| !a.is_object()) {
                        return bad(
                            request_id,
                            "json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments",
                        );
                    }
                }
            }
            let last_is_user = messages.last().and_then(|m| m.get("role")).is_some_and(|role| role == "user");
            let tool = request
                .get("tools")
                .and_then(Value::as_array)
                .and_then(|tools| tools.first())
                .and_then(|tool| tool.pointer("/function/name"))
                .and_then(Value::as_str)
                .filter(|_| last_is_user)
                .map(str::to_owned);
            reply(&request, tool, messages.is_empty())
        }
        Op::Generate | Op::Embed => {
            if let Err(message) = check_images(request.get("images")) {
                return bad(request_id, &message);
            }
            let prompt = request.get("prompt").and_then(Value::as_str).unwrap_or_default();
            reply(&request, None, prompt.is_empty())
        }
    };
    if stream {
        let lines = stream_lines(op, &model, &reply, answer.chunks);
        handler::stream_as(shared, answer, Ok(lines), &handler::APPLICATION_NDJSON)
    } else {
        let mut whole = piece(op, &model, reply.text);
        if let Some(tool) = &reply.tool {
            whole["message"]["tool_calls"] = tool_calls(tool);
        }
        if reply.thinking {
            set_thinking(op, &mut whole, OLLAMA_THINKING_TEXT);
        }
        finish(&mut whole, &reply);
        handler::json(Api::Ollama, request_id, StatusCode::OK, Bytes::from(whole.to_string()))
    }
}

fn tool_calls(name: &str) -> Value {
    let arguments: Value = serde_json::from_str(OLLAMA_TOOL_ARGUMENTS_JSON).unwrap_or_default();
    json!([{"function": {"name": name, "arguments": arguments}}])
}

fn set_thinking(op: Op, line: &mut Value, thinking: &str) {
    match op {
        Op::Chat => line["message"]["thinking"] = json!(thinking),
        _ => line["thinking"] = json!(thinking),
    }
}

/// One answer object carrying `text`, not yet marked done.
fn piece(op: Op, model: &str, text: &str) -> Value {
    match op {
        Op::Chat => json!({"model": model, "created_at": CREATED_AT,
                           "message": {"role": "assistant", "content": text}, "done": false}),
        _ => json!({"model": model, "created_at": CREATED_AT, "response": text, "done": false}),
    }
}

/// Marks `line` as the last one: `done`, `done_reason` and the counts and durations.
fn finish(line: &mut Value, reply: &Reply) {
    line["done"] = json!(true);
    line["done_reason"] = json!(if reply.load {
        "load"
    } else if reply.length {
        "length"
    } else {
        "stop"
    });
    if reply.load {
        return;
    }
    line["total_duration"] = json!(5_191_566_416u64);
    line["load_duration"] = json!(2_154_458u64);
    line["prompt_eval_count"] = json!(PROMPT_TOKENS);
    line["prompt_eval_duration"] = json!(383_809_000u64);
    line["eval_count"] = json!(reply.eval_count());
    line["eval_duration"] = json!(4_799_921_000u64);
}

/// `text` cut into `n` consecutive pieces (fewer when it is shorter) that concatenate to it.
fn split_even(text: &str, n: usize) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = n.clamp(1, chars.len().max(1));
    (0..n)
        .map(|i| {
            let start = chars.get(i * chars.len() / n).map_or(text.len(), |(at, _)| *at);
            let end = chars.get((i + 1) * chars.len() / n).map_or(text.len(), |(at, _)| *at);
            &text[start..end]
        })
        .collect()
}

/// The NDJSON lines of a streamed answer: the thinking (when asked for), the text in
/// `chunks` pieces or the tool call, then the `done` line with the counts.
fn stream_lines(op: Op, model: &str, reply: &Reply, chunks: usize) -> Vec<Bytes> {
    let mut lines = Vec::new();
    let mut push = |value: Value| lines.push(Bytes::from(format!("{value}\n")));
    if reply.thinking {
        let mut line = piece(op, model, "");
        set_thinking(op, &mut line, OLLAMA_THINKING_TEXT);
        push(line);
    }
    if let Some(tool) = &reply.tool {
        let mut line = piece(op, model, "");
        line["message"]["tool_calls"] = tool_calls(tool);
        push(line);
    } else if !reply.text.is_empty() {
        for text in split_even(reply.text, chunks) {
            push(piece(op, model, text));
        }
    }
    let mut last = piece(op, model, "");
    finish(&mut last, reply);
    push(last);
    lines
}

/// `/api/embed`: one vector per input, the same deterministic unit vectors as
/// `/v1/embeddings`, cut to `dimensions`.
fn embed(request: &Map<String, Value>, request_id: u64) -> Response<MockBody> {
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => return bad(request_id, "model is required"),
    };
    if model == OLLAMA_MISSING_MODEL {
        let message = format!("model \"{model}\" not found, try pulling it first");
        return error(request_id, StatusCode::NOT_FOUND, &message);
    }
    let inputs = match request.get("input") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.len(),
        None | Some(Value::Null) => 0,
        Some(_) => return bad(request_id, "invalid input type"),
    };
    if inputs > MAX_EMBEDDING_INPUTS {
        return bad(request_id, &format!("input has more than {MAX_EMBEDDING_INPUTS} items"));
    }
    let dimensions = match request.get("dimensions").and_then(Value::as_u64) {
        None => EMBEDDING_DIMENSIONS,
        Some(d) if (1..=MAX_EMBEDDING_DIMENSIONS as u64).contains(&d) => d as usize,
        Some(_) => return bad(request_id, "dimensions must be between 1 and the model's size"),
    };
    let embeddings: Vec<Vec<f32>> = (0..inputs).map(|index| embedding_vector(index, dimensions)).collect();
    let answer = json!({
        "model": model,
        "embeddings": embeddings,
        "total_duration": 14_143_917u64,
        "load_duration": 1_019_500u64,
        "prompt_eval_count": inputs as u64 * EMBEDDING_TOKENS_PER_INPUT,
    });
    handler::json(Api::Ollama, request_id, StatusCode::OK, Bytes::from(answer.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_keeps_the_text() {
        assert_eq!(split_even("mock reply", 3).concat(), "mock reply");
        assert_eq!(split_even("mock reply", 3).len(), 3);
        assert_eq!(split_even("ab", 5), ["a", "b"]);
        assert_eq!(split_even("", 5), [""]);
    }

    #[test]
    fn streams_end_with_a_done_line_with_the_counts() {
        let request: Map<String, Value> =
            serde_json::from_value(json!({"model": "m", "think": true, "options": {"num_predict": 2}}))
                .unwrap();
        let reply = reply(&request, None, false);
        let lines = stream_lines(Op::Generate, "m", &reply, 2);
        let parsed: Vec<Value> = lines.iter().map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert!(lines.iter().all(|l| l.ends_with(b"\n") && l.iter().filter(|b| **b == b'\n').count() == 1));
        assert_eq!(parsed[0]["thinking"], OLLAMA_THINKING_TEXT);
        let text: String = parsed.iter().filter_map(|l| l["response"].as_str()).collect();
        assert_eq!(text, OLLAMA_LENGTH_TEXT);
        let last = parsed.last().unwrap();
        assert_eq!((last["done"].clone(), last["done_reason"].clone()), (json!(true), json!("length")));
        assert_eq!(last["eval_count"], 1);
        assert_eq!(last["prompt_eval_count"], PROMPT_TOKENS);
    }
}
