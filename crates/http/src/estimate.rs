//! Token counts for an answer whose upstream reported no usage (some self-hosted servers
//! ignore `stream_options.include_usage`): the prompt counted from the request and the
//! completion from the text the answer carried, with the tokenizer of the deployment's model
//! family. Such a request is still charged and logged, and its spend log says the counts were
//! estimated.
//!
//! A stream's events are kept (shared, not copied) only until the upstream reports usage, up
//! to [`KEPT_BYTES`]; text past that bound is extrapolated from what was kept.

use bytes::Bytes;
use serde_json::Value;
use tollgate_domain::Endpoint;
use tollgate_domain::pricing::Usage;
use tollgate_domain::tokens::{Encoding, count_chat, count_prompt};

/// The most stream bytes a request keeps for an estimate.
const KEPT_BYTES: usize = 256 * 1024;

pub(crate) struct Estimator {
    encoding: Encoding,
    endpoint: Endpoint,
    /// The request as the client sent it.
    request: Bytes,
    kept: Vec<Bytes>,
    kept_bytes: usize,
    seen_bytes: usize,
}

impl Estimator {
    /// An estimator for a call to `upstream_model`.
    pub(crate) fn new(upstream_model: &str, endpoint: Endpoint, request: Bytes) -> Self {
        Self {
            encoding: Encoding::for_model(upstream_model),
            endpoint,
            request,
            kept: Vec::new(),
            kept_bytes: 0,
            seen_bytes: 0,
        }
    }

    /// Keeps complete SSE events of the stream for [`Estimator::stream_usage`].
    pub(crate) fn keep(&mut self, events: &Bytes) {
        self.seen_bytes += events.len();
        if self.kept_bytes + events.len() <= KEPT_BYTES {
            self.kept_bytes += events.len();
            self.kept.push(events.clone());
        }
    }

    /// The usage of a whole answer that reported none.
    pub(crate) fn answer_usage(&self, answer: &[u8]) -> Usage {
        let completion = serde_json::from_slice::<Value>(answer)
            .map(|answer| self.completion_tokens(&answer, "message"))
            .unwrap_or(0);
        Usage { prompt_tokens: self.prompt_tokens(), completion_tokens: completion, ..Usage::default() }
    }

    /// The usage of the stream seen so far; text beyond what was kept counts at the rate of
    /// the text that was.
    pub(crate) fn stream_usage(&self) -> Usage {
        let mut completion = 0;
        for events in &self.kept {
            for line in events.split(|&byte| byte == b'\n') {
                let Some(payload) = line.strip_prefix(b"data:") else { continue };
                if let Ok(chunk) = serde_json::from_slice::<Value>(payload.trim_ascii()) {
                    completion += self.completion_tokens(&chunk, "delta");
                }
            }
        }
        if self.seen_bytes > self.kept_bytes && self.kept_bytes > 0 {
            completion = (completion as f64 * self.seen_bytes as f64 / self.kept_bytes as f64).ceil() as u64;
        }
        Usage { prompt_tokens: self.prompt_tokens(), completion_tokens: completion, ..Usage::default() }
    }

    fn prompt_tokens(&self) -> u64 {
        let Ok(request) = serde_json::from_slice::<Value>(&self.request) else { return 0 };
        match self.endpoint {
            Endpoint::ChatCompletions => count_chat(
                self.encoding,
                request.get("messages").unwrap_or(&Value::Null),
                request.get("tools"),
            ),
            Endpoint::Completions => {
                count_prompt(self.encoding, request.get("prompt").unwrap_or(&Value::Null))
            }
            Endpoint::Embeddings => count_prompt(self.encoding, request.get("input").unwrap_or(&Value::Null)),
            // Priced per search, not per token.
            Endpoint::Rerank => 0,
        }
    }

    /// The tokens of the text an answer (`part` = `message`) or a chunk (`delta`) carries:
    /// content, reasoning, tool calls' names and arguments, and a completion's `text`.
    fn completion_tokens(&self, body: &Value, part: &str) -> u64 {
        let mut tokens = 0;
        for choice in body.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let mut text = |value: Option<&Value>| {
                if let Some(text) = value.and_then(Value::as_str) {
                    tokens += self.encoding.count(text);
                }
            };
            text(choice.get("text"));
            let Some(part) = choice.get(part) else { continue };
            text(part.get("content"));
            text(part.get("reasoning_content"));
            for call in part.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                text(call.pointer("/function/name"));
                text(call.pointer("/function/arguments"));
            }
        }
        tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = r#"{"model":"m","messages":[{"role":"user","content":"Say hello to the world"}]}"#;

    #[test]
    fn a_stream_without_usage_is_counted_from_its_deltas() {
        let mut estimator =
            Estimator::new("gpt-4o", Endpoint::ChatCompletions, Bytes::from_static(REQUEST.as_bytes()));
        estimator.keep(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"}}]}\n\n\
              data: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\n\n",
        ));
        estimator.keep(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"greet\",\"arguments\":\"{}\"}}]}}]}\n\ndata: [DONE]\n\n",
        ));
        let usage = estimator.stream_usage();
        let o200k = Encoding::O200kBase;
        assert_eq!(
            usage.completion_tokens,
            o200k.count("Hello") + o200k.count(" world") + o200k.count("greet") + o200k.count("{}")
        );
        let messages = serde_json::from_str::<Value>(REQUEST).unwrap()["messages"].clone();
        assert_eq!(usage.prompt_tokens, count_chat(o200k, &messages, None));
        assert!(usage.prompt_tokens > 5);
    }

    #[test]
    fn an_answer_without_usage_is_counted_from_its_message() {
        let estimator =
            Estimator::new("llama3", Endpoint::ChatCompletions, Bytes::from_static(REQUEST.as_bytes()));
        let usage = estimator.answer_usage(
            br#"{"choices":[{"message":{"role":"assistant","content":"Hello there, world"}}]}"#,
        );
        assert_eq!(usage.completion_tokens, Encoding::Cl100kBase.count("Hello there, world"));
    }

    #[test]
    fn text_past_the_kept_bound_is_extrapolated() {
        let mut estimator = Estimator::new("gpt-4o", Endpoint::ChatCompletions, Bytes::new());
        let event = Bytes::from(format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
            "word ".repeat(1000)
        ));
        let copies = KEPT_BYTES / event.len() + 1;
        for _ in 0..copies * 2 {
            estimator.keep(&event);
        }
        let one = Encoding::O200kBase.count(&"word ".repeat(1000));
        let usage = estimator.stream_usage();
        let expected = (one * (copies * 2) as u64) as f64;
        assert!(
            (usage.completion_tokens as f64 - expected).abs() / expected < 0.02,
            "{} vs {expected}",
            usage.completion_tokens
        );
        assert!(estimator.kept_bytes <= KEPT_BYTES);
    }
}
