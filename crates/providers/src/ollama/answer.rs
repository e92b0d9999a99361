//! Ollama's answers as OpenAI's: `/api/chat` and `/api/generate` objects (whole, or one per
//! NDJSON line) as `chat.completion` / `chat.completion.chunk` or `text_completion`, and
//! `/api/embed` as an embedding list.
//!
//! `done_reason` becomes `finish_reason` (`length` stays, anything else is `stop`, and
//! `tool_calls` when the answer called tools); `prompt_eval_count` and `eval_count` become
//! the usage; `thinking` becomes `reasoning_content`; tool calls get OpenAI ids and their
//! `arguments` object is sent as JSON text.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::ProviderError;
use crate::body::TranslateEvents;

/// Which Ollama answer is read, and which OpenAI object it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// `/api/chat` as a chat completion.
    Chat,
    /// `/api/generate` as a chat completion (`ollama/` chat models).
    GenerateAsChat,
    /// `/api/generate` as a legacy text completion.
    Completion,
}

impl Shape {
    fn text(self, answer: &Value) -> &str {
        let text = match self {
            Shape::Chat => answer.pointer("/message/content"),
            Shape::GenerateAsChat | Shape::Completion => answer.get("response"),
        };
        text.and_then(Value::as_str).unwrap_or_default()
    }

    fn thinking(self, answer: &Value) -> &str {
        let thinking = match self {
            Shape::Chat => answer.pointer("/message/thinking"),
            Shape::GenerateAsChat | Shape::Completion => answer.get("thinking"),
        };
        thinking.and_then(Value::as_str).unwrap_or_default()
    }

    fn tool_calls(self, answer: &Value) -> &[Value] {
        match self {
            Shape::Chat => {
                answer.pointer("/message/tool_calls").and_then(Value::as_array).map_or(&[], Vec::as_slice)
            }
            _ => &[],
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Shape::Completion => "cmpl",
            _ => "chatcmpl",
        }
    }
}

fn new_id(shape: Shape) -> String {
    format!("{}-{}", shape.id_prefix(), uuid::Uuid::new_v4().simple())
}

/// An Ollama tool call as OpenAI's: an id of the gateway's making, `arguments` as JSON text.
fn tool_call(call: &Value, index: Option<usize>) -> Value {
    let arguments = match call.pointer("/function/arguments") {
        Some(Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
        None => "{}".to_owned(),
    };
    let mut converted = json!({
        "id": format!("call_{}", uuid::Uuid::new_v4().simple()),
        "type": "function",
        "function": {"name": call.pointer("/function/name").cloned().unwrap_or(Value::Null), "arguments": arguments},
    });
    if let Some(index) = index {
        converted["index"] = json!(index);
    }
    converted
}

fn finish_reason(answer: &Value, called_tools: bool) -> &'static str {
    match answer.get("done_reason").and_then(Value::as_str) {
        Some("length") => "length",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

fn usage(answer: &Value) -> Value {
    let count = |key: &str| answer.get(key).and_then(Value::as_u64).unwrap_or(0);
    let (prompt, completion) = (count("prompt_eval_count"), count("eval_count"));
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn model_of<'a>(answer: &'a Value, requested: &'a str) -> &'a str {
    answer.get("model").and_then(Value::as_str).unwrap_or(requested)
}

/// A whole (non-streamed) Ollama answer as the OpenAI object `shape` names.
pub(super) fn complete(
    answer: &Value,
    shape: Shape,
    model: &str,
    created: u64,
) -> Result<Value, ProviderError> {
    if let Some(error) = answer.get("error") {
        return Err(ProviderError::Protocol(format!("ollama answered with an error: {}", error_text(error))));
    }
    let text = shape.text(answer);
    let thinking = shape.thinking(answer);
    let calls: Vec<Value> = shape.tool_calls(answer).iter().map(|call| tool_call(call, None)).collect();
    let finish = finish_reason(answer, !calls.is_empty());
    let choice = match shape {
        Shape::Completion => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        Shape::Chat | Shape::GenerateAsChat => {
            let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) };
            let mut message = json!({"role": "assistant", "content": content});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            if !thinking.is_empty() {
                message["reasoning_content"] = json!(thinking);
            }
            json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish})
        }
    };
    let object = if shape == Shape::Completion { "text_completion" } else { "chat.completion" };
    Ok(json!({
        "id": new_id(shape),
        "object": object,
        "created": created,
        "model": model_of(answer, model),
        "choices": [choice],
        "usage": usage(answer),
    }))
}

/// `/api/embed`'s `{"embeddings": [[...]], "prompt_eval_count"}` as an OpenAI embedding list.
pub(super) fn embeddings(answer: &Value, model: &str) -> Result<Value, ProviderError> {
    let vectors = answer
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("ollama's embeddings answer has no `embeddings`".into()))?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| json!({"object": "embedding", "index": index, "embedding": vector}))
        .collect();
    let tokens = answer.get("prompt_eval_count").and_then(Value::as_u64).unwrap_or(0);
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model_of(answer, model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

fn error_text(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Ollama's stream, one JSON object per line, as OpenAI chunks: a role chunk first, then a
/// chunk per line that carries text, thinking or tool calls, and on the `done: true` line a
/// `finish_reason` chunk, the usage chunk when asked for, and `[DONE]`.
pub(super) struct Translator {
    shape: Shape,
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    started: bool,
    tool_calls: usize,
    finished: bool,
}

impl Translator {
    pub(super) fn new(shape: Shape, model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            shape,
            include_usage,
            id: new_id(shape),
            model: model.to_owned(),
            created,
            started: false,
            tool_calls: 0,
            finished: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let chunk = match self.shape {
            Shape::Completion => json!({
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                             "logprobs": null, "finish_reason": finish}],
            }),
            _ => json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            }),
        };
        format!("data: {chunk}\n\n")
    }

    fn usage_chunk(&self, usage: Value) -> String {
        let object =
            if self.shape == Shape::Completion { "text_completion" } else { "chat.completion.chunk" };
        let chunk = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        });
        format!("data: {chunk}\n\n")
    }
}

impl TranslateEvents for Translator {
    const PROVIDER: &'static str = "ollama";

    fn finished(&self) -> bool {
        self.finished
    }

    fn event(&mut self, line: &Value) -> Option<Bytes> {
        if let Some(error) = line.get("error") {
            self.finished = true;
            let body = json!({"error": {
                "message": error_text(error),
                "type": "api_error",
                "param": null,
                "code": "500",
            }});
            return Some(Bytes::from(format!("data: {body}\n\n")));
        }
        let mut out = String::new();
        if !self.started {
            self.started = true;
            if let Some(model) = line.get("model").and_then(Value::as_str) {
                self.model = model.to_owned();
            }
            if self.shape != Shape::Completion {
                out.push_str(&self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
        }
        let thinking = self.shape.thinking(line);
        if !thinking.is_empty() && self.shape != Shape::Completion {
            out.push_str(&self.chunk(json!({"reasoning_content": thinking}), None));
        }
        let text = self.shape.text(line);
        if !text.is_empty() {
            out.push_str(&self.chunk(json!({"content": text}), None));
        }
        let calls = self.shape.tool_calls(line);
        if !calls.is_empty() {
            let first = self.tool_calls;
            self.tool_calls += calls.len();
            let calls: Vec<Value> =
                calls.iter().enumerate().map(|(i, call)| tool_call(call, Some(first + i))).collect();
            out.push_str(&self.chunk(json!({"tool_calls": calls}), None));
        }
        if line.get("done").and_then(Value::as_bool) == Some(true) {
            self.finished = true;
            let finish = finish_reason(line, self.tool_calls > 0);
            out.push_str(&self.chunk(json!({}), Some(finish)));
            if self.include_usage {
                out.push_str(&self.usage_chunk(usage(line)));
            }
            out.push_str("data: [DONE]\n\n");
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_answer_becomes_a_chat_completion() {
        let answer = json!({
            "model": "llama3.1", "created_at": "2024-07-22T20:33:28.123648Z",
            "message": {"role": "assistant", "content": "", "thinking": "let me see",
                "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
            "done_reason": "stop", "done": true, "prompt_eval_count": 122, "eval_count": 33
        });
        let out = complete(&answer, Shape::Chat, "requested", 7).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["model"], "llama3.1");
        assert_eq!(out["created"], 7);
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(choice["message"]["reasoning_content"], "let me see");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["function"], json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"}));
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert!(call.get("index").is_none());
        assert_eq!(out["usage"], json!({"prompt_tokens": 122, "completion_tokens": 33, "total_tokens": 155}));
    }

    #[test]
    fn generate_answers_become_chat_or_text_completions() {
        let answer = json!({"model": "qwen3", "response": "Hi", "done": true, "done_reason": "length",
                            "prompt_eval_count": 4, "eval_count": 1});
        let chat = complete(&answer, Shape::GenerateAsChat, "qwen3", 0).unwrap();
        assert_eq!(chat["choices"][0]["message"], json!({"role": "assistant", "content": "Hi"}));
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
        let text = complete(&answer, Shape::Completion, "qwen3", 0).unwrap();
        assert_eq!(text["object"], "text_completion");
        assert!(text["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(text["choices"][0]["text"], "Hi");
        assert_eq!(text["usage"]["total_tokens"], 5);
        assert!(complete(&json!({"error": "boom"}), Shape::Chat, "m", 0).is_err());
    }

    #[test]
    fn embed_answers_become_embedding_lists() {
        let answer =
            json!({"model": "all-minilm", "embeddings": [[0.1, 0.2], [0.3]], "prompt_eval_count": 8});
        let out = embeddings(&answer, "all-minilm").unwrap();
        assert_eq!(out["data"][1], json!({"object": "embedding", "index": 1, "embedding": [0.3]}));
        assert_eq!(out["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));
        assert!(embeddings(&json!({"model": "m"}), "m").is_err());
    }

    fn translate(shape: Shape, include_usage: bool, lines: &[Value]) -> (Vec<String>, bool) {
        let mut translator = Translator::new(shape, "requested", include_usage, 1);
        let out: String = lines
            .iter()
            .filter_map(|line| translator.event(line))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        let events =
            out.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap().to_owned());
        (events.collect(), translator.finished())
    }

    #[test]
    fn chat_lines_become_chunks_with_finish_and_usage() {
        let lines = [
            json!({"model": "llama3.1", "message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": false}),
            json!({"model": "llama3.1", "message": {"role": "assistant", "content": "Hel"}, "done": false}),
            json!({"model": "llama3.1", "message": {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]}, "done": false}),
            json!({"model": "llama3.1", "message": {"role": "assistant", "content": ""}, "done": true,
                   "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 3}),
        ];
        let (events, finished) = translate(Shape::Chat, true, &lines);
        assert!(finished);
        assert_eq!(events.len(), 7, "{events:?}");
        let chunk = |i: usize| -> Value { serde_json::from_str(&events[i]).unwrap() };
        assert_eq!(chunk(0)["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(chunk(0)["model"], "llama3.1");
        assert_eq!(chunk(1)["choices"][0]["delta"]["reasoning_content"], "hm");
        assert_eq!(chunk(2)["choices"][0]["delta"]["content"], "Hel");
        let call = &chunk(3)["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(
            (call["index"].clone(), call["function"]["arguments"].clone()),
            (json!(0), json!("{\"city\":\"Paris\"}"))
        );
        assert_eq!(chunk(4)["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunk(5)["choices"], json!([]));
        assert_eq!(
            chunk(5)["usage"],
            json!({"prompt_tokens": 26, "completion_tokens": 3, "total_tokens": 29})
        );
        assert_eq!(events[6], "[DONE]");
        let ids: Vec<Value> = (0..6).map(|i| chunk(i)["id"].clone()).collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "one id for the whole stream");
    }

    #[test]
    fn generate_lines_become_text_completion_chunks() {
        let lines = [
            json!({"model": "codellama", "response": "def", "done": false}),
            json!({"model": "codellama", "response": "", "done": true, "done_reason": "length", "eval_count": 1}),
        ];
        let (events, finished) = translate(Shape::Completion, false, &lines);
        assert!(finished);
        assert_eq!(events.len(), 3, "{events:?}");
        let first: Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(first["object"], "text_completion");
        assert_eq!(first["choices"][0]["text"], "def");
        let last: Value = serde_json::from_str(&events[1]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert_eq!(events[2], "[DONE]");
    }

    #[test]
    fn an_error_line_ends_the_stream_with_an_error_event() {
        let lines = [
            json!({"model": "m", "response": "a", "done": false}),
            json!({"error": "an error was encountered while running the model: unexpected EOF"}),
        ];
        let (events, finished) = translate(Shape::GenerateAsChat, false, &lines);
        assert!(finished);
        let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(
            error["error"]["message"],
            "an error was encountered while running the model: unexpected EOF"
        );
    }
}
