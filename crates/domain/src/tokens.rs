//! Counting the tokens of a request before it is sent, for the router's pre-call checks:
//! OpenAI's BPE encodings (`o200k_base` for the gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and o-series
//! families, `cl100k_base` for older OpenAI models and, as LiteLLM does by default, as the
//! approximation for every other family).
//!
//! The encoders are built once, on first use; building one takes a noticeable fraction of a
//! second, so a gateway that counts calls [`warm`] at start-up on a blocking thread and no
//! request pays for it. The vocabularies are compiled into the binary: nothing is read from
//! disk or the network.

use serde_json::Value;
use tiktoken_rs::{CoreBPE, cl100k_base_singleton, o200k_base_singleton};

/// The framing every chat message costs besides its text (OpenAI's cookbook: 3 tokens).
const TOKENS_PER_MESSAGE: u64 = 3;
/// A message's `name` costs one token more than its text.
const TOKENS_PER_NAME: u64 = 1;
/// The assistant's reply is primed with 3 tokens (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING: u64 = 3;
/// The framing of a tool (or legacy function) call inside a message.
const TOKENS_PER_TOOL_CALL: u64 = 1;
/// The framing of the tool definitions as a whole, as LiteLLM adds it.
const TOOLS_OVERHEAD: u64 = 9;
/// An image at `detail: low`, as OpenAI prices it.
const LOW_DETAIL_IMAGE_TOKENS: u64 = 85;
/// Any other image: a 1024×1024 image at high detail (85 + 4 tiles of 170). The real count
/// depends on the image's size, which would mean fetching or decoding it before the call.
const IMAGE_TOKENS: u64 = 85 + 4 * 170;

/// One of OpenAI's byte-pair encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4 (and gpt-oss, whose encoding extends it).
    O200kBase,
    /// gpt-4, gpt-3.5-turbo, text-embedding-3-*, and the approximation for everything else.
    Cl100kBase,
}

impl Encoding {
    /// The encoding for a model name, with or without a provider prefix (`openai/gpt-4o`,
    /// an Azure deployment named `prod-gpt-4o`).
    pub fn for_model(model: &str) -> Self {
        let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        let o_series = ["o1", "o3", "o4"].iter().any(|prefix| {
            name.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        });
        let o200k_family = ["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss"]
            .iter()
            .any(|family| name.contains(family));
        if o_series || o200k_family { Self::O200kBase } else { Self::Cl100kBase }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Self::O200kBase => o200k_base_singleton(),
            Self::Cl100kBase => cl100k_base_singleton(),
        }
    }

    /// The tokens of plain text. Special-token markers in the text count as ordinary text,
    /// as they would be sent.
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        self.bpe().count_ordinary(text) as u64
    }
}

/// Builds both encoders now, so that the first request to count does not wait for them.
/// Call it on a blocking thread: it takes a fraction of a second.
pub fn warm() {
    let _ = Encoding::O200kBase.bpe();
    let _ = Encoding::Cl100kBase.bpe();
}

/// The prompt tokens of an OpenAI chat request: its `messages` (the JSON array as sent) and
/// its `tools` (when present), counted as OpenAI frames them: 3 tokens per message, 1 more
/// for a `name`, 3 to prime the reply. Tool definitions are counted as their JSON text plus
/// a fixed overhead, an approximation of the model's internal rendering of them.
pub fn count_chat(encoding: Encoding, messages: &Value, tools: Option<&Value>) -> u64 {
    let count = |text: &str| encoding.count(text);
    let messages = messages.as_array().map_or(&[][..], Vec::as_slice);
    REPLY_PRIMING
        + messages.iter().map(|message| count_message_with(&count, message)).sum::<u64>()
        + count_tools_with(&count, tools)
}

/// One chat message's tokens, framing included, with `count` as the text counter: the
/// tokenizer, or `str::len` for an upper bound (a BPE token is at least one byte).
pub fn count_message_with(count: &dyn Fn(&str) -> u64, message: &Value) -> u64 {
    TOKENS_PER_MESSAGE + count_message(count, message)
}

/// The tool definitions' tokens (0 without tools), with `count` as the text counter.
pub fn count_tools_with(count: &dyn Fn(&str) -> u64, tools: Option<&Value>) -> u64 {
    let Some(tools) = tools.and_then(Value::as_array).filter(|tools| !tools.is_empty()) else { return 0 };
    TOOLS_OVERHEAD
        + tools
            .iter()
            .map(|tool| {
                let function = tool.get("function").unwrap_or(tool);
                count_json_text(count, function)
            })
            .sum::<u64>()
}

/// The tokens of a completions `prompt` or an embeddings `input`: a string, a list of
/// strings, a list of token ids, or a list of such lists.
pub fn count_prompt(encoding: Encoding, prompt: &Value) -> u64 {
    match prompt {
        Value::String(text) => encoding.count(text),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Number(_) => 1,
                other => count_prompt(encoding, other),
            })
            .sum(),
        _ => 0,
    }
}

fn count_message(count: &dyn Fn(&str) -> u64, message: &Value) -> u64 {
    let Some(fields) = message.as_object() else { return 0 };
    let mut tokens = 0;
    for (key, value) in fields {
        tokens += match (key.as_str(), value) {
            ("content", content) => count_content(count, content),
            ("name", Value::String(name)) => count(name) + TOKENS_PER_NAME,
            ("tool_calls", Value::Array(calls)) => calls
                .iter()
                .map(|call| count_call(count, call.get("function").unwrap_or(call)) + TOKENS_PER_TOOL_CALL)
                .sum(),
            ("function_call", call) => count_call(count, call) + TOKENS_PER_TOOL_CALL,
            (_, Value::String(text)) => count(text),
            _ => 0,
        };
    }
    tokens
}

/// A message's `content`: a string, or parts (`text`, `image_url`, `input_audio`, …).
fn count_content(count: &dyn Fn(&str) -> u64, content: &Value) -> u64 {
    match content {
        Value::String(text) => count(text),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part.get("text").and_then(Value::as_str).map_or(0, count),
                Some("image_url") => {
                    let detail = part.pointer("/image_url/detail").and_then(Value::as_str);
                    if detail == Some("low") { LOW_DETAIL_IMAGE_TOKENS } else { IMAGE_TOKENS }
                }
                _ => part.get("text").and_then(Value::as_str).map_or(0, count),
            })
            .sum(),
        _ => 0,
    }
}

/// A tool call's (or legacy function call's) name and arguments.
fn count_call(count: &dyn Fn(&str) -> u64, call: &Value) -> u64 {
    ["name", "arguments"].iter().filter_map(|key| call.get(key).and_then(Value::as_str)).map(count).sum()
}

fn count_json_text(count: &dyn Fn(&str) -> u64, value: &Value) -> u64 {
    match value {
        Value::String(text) => count(text),
        other => count(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn models_get_their_family_encoding() {
        for model in ["gpt-4o", "gpt-4o-mini", "openai/gpt-4.1-nano", "o1", "o3-mini", "o4-mini", "gpt-5"] {
            assert_eq!(Encoding::for_model(model), Encoding::O200kBase, "{model}");
        }
        assert_eq!(Encoding::for_model("azure/prod-gpt-4o"), Encoding::O200kBase);
        for model in
            ["gpt-4", "gpt-3.5-turbo", "text-embedding-3-small", "claude-sonnet-4-5", "llama3", "o1x"]
        {
            assert_eq!(Encoding::for_model(model), Encoding::Cl100kBase, "{model}");
        }
    }

    #[test]
    fn text_counts_match_openai_encodings() {
        // Reference counts from OpenAI's tokenizer for these strings.
        assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
        assert_eq!(Encoding::O200kBase.count("hello world"), 2);
        assert_eq!(Encoding::Cl100kBase.count("tiktoken is great!"), 6);
        assert_eq!(Encoding::Cl100kBase.count(""), 0);
        assert!(Encoding::Cl100kBase.count("<|endoftext|>") > 1, "a special token's marker counts as text");
        let long = "What is the meaning of 42? ".repeat(100);
        assert!(Encoding::O200kBase.count(&long) >= 800, "about 9 tokens per sentence");
    }

    #[test]
    fn chat_messages_are_framed_as_openai_counts_them() {
        let encoding = Encoding::Cl100kBase;
        let messages = json!([
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "hello world", "name": "ann"},
        ]);
        let expected = 3
            + (3 + encoding.count("system") + encoding.count("You are helpful."))
            + (3 + encoding.count("user") + encoding.count("hello world") + encoding.count("ann") + 1);
        assert_eq!(count_chat(encoding, &messages, None), expected);

        let parts = json!([{"role": "user", "content": [
            {"type": "text", "text": "hello world"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        ]}]);
        assert_eq!(count_chat(encoding, &parts, None), 3 + 3 + 1 + 2 + LOW_DETAIL_IMAGE_TOKENS);

        let calls = json!([{"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]}]);
        let call = encoding.count("weather") + encoding.count("{\"city\":\"Paris\"}") + 1;
        assert_eq!(count_chat(encoding, &calls, None), 3 + 3 + encoding.count("assistant") + call);
    }

    #[test]
    fn tools_add_their_definitions() {
        let encoding = Encoding::O200kBase;
        let messages = json!([{"role": "user", "content": "hi"}]);
        let tools =
            json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
        let without = count_chat(encoding, &messages, None);
        let with = count_chat(encoding, &messages, Some(&tools));
        let definition = encoding.count(&tools[0]["function"].to_string());
        assert_eq!(with, without + TOOLS_OVERHEAD + definition);
        assert_eq!(count_chat(encoding, &messages, Some(&json!([]))), without);
    }

    #[test]
    fn prompts_and_inputs_of_every_shape_count() {
        let encoding = Encoding::Cl100kBase;
        assert_eq!(count_prompt(encoding, &json!("hello world")), 2);
        assert_eq!(count_prompt(encoding, &json!(["hello world", "hello world"])), 4);
        assert_eq!(count_prompt(encoding, &json!([1, 2, 3])), 3);
        assert_eq!(count_prompt(encoding, &json!([[1, 2], [3]])), 3);
        assert_eq!(count_prompt(encoding, &json!(null)), 0);
    }
}
