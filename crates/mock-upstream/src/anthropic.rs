//! Anthropic's Messages API wire format: the request fields the mock reads, the `message`
//! answer, its named SSE events and `{"type":"error",...}` bodies.
//!
//! Like the OpenAI side, responses are serde structs over borrowed strings serialized once
//! per request, and the request is read without building a `serde_json::Value` tree: of
//! each message only the role and whether its content holds a `tool_result` are kept.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::wire::{COMPLETION_TOKENS, EventWriter, PROMPT_TOKENS, REPLY_TEXT, random_id_of};

/// The text block that precedes the `tool_use` block of a tool-call answer (non-stream).
pub const TOOL_USE_TEXT: &str = "calling a tool";
/// The `input` of every `tool_use` block, as the streamed `partial_json` pieces concatenate
/// (a non-stream answer carries the same object, compactly serialized).
pub const TOOL_USE_INPUT_JSON: &str = r#"{"location": "Paris"}"#;
/// The two `input_json_delta` pieces of a streamed tool call; they concatenate to
/// [`TOOL_USE_INPUT_JSON`].
const TOOL_USE_INPUT_PIECES: [&str; 2] = [r#"{"location": "#, r#""Paris"}"#];
const TOOL_USE_LOCATION: &str = "Paris";

// ---------------------------------------------------------------------------------------
// requests

/// The fields of a Messages request the mock looks at; the rest (`system`, `temperature`,
/// `tool_choice`, `stop_sequences`, ...) is skipped unparsed.
#[derive(Deserialize)]
pub(crate) struct MessagesRequest<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub messages: Option<Vec<InputMessage>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(borrow, default)]
    pub tools: Option<Vec<Tool<'a>>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    User,
    Assistant,
}

/// One entry of `messages`: a role the API accepts and a content it could read.
#[derive(Deserialize)]
pub(crate) struct InputMessage {
    pub role: Role,
    pub content: MessageContent,
}

/// One entry of `tools`; custom and server tools alike have a `name`.
#[derive(Deserialize)]
pub(crate) struct Tool<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// What the mock needs of a message's `content` (a string or an array of typed blocks):
/// whether it holds a `tool_result` block.
pub(crate) struct MessageContent {
    pub has_tool_result: bool,
}

/// Only a block's `type` is read; its other fields are skipped.
#[derive(Deserialize)]
struct BlockType<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = bool;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }

            fn visit_str<E: de::Error>(self, _text: &str) -> Result<bool, E> {
                Ok(false)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut blocks: A) -> Result<bool, A::Error> {
                let mut has_tool_result = false;
                while let Some(block) = blocks.next_element::<BlockType<'de>>()? {
                    has_tool_result |= block.kind == "tool_result";
                }
                Ok(has_tool_result)
            }
        }

        let has_tool_result = deserializer.deserialize_any(ContentVisitor)?;
        Ok(MessageContent { has_tool_result })
    }
}

impl MessagesRequest<'_> {
    /// The tool the answer calls, if any: the first tool when `tools` is not empty and the
    /// last message is a user turn that does not carry a `tool_result` (so a conversation
    /// that already answered the tool call gets plain text and ends).
    pub(crate) fn tool_to_call(&self) -> Option<&str> {
        let first = self.tools.as_ref()?.first()?;
        let last = self.messages.as_ref()?.last()?;
        (last.role == Role::User && !last.content.has_tool_result).then_some(first.name.as_ref())
    }
}

// ---------------------------------------------------------------------------------------
// answers

/// Token counts of a `message`, with the prompt-caching fields Anthropic always sends.
#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

impl Usage {
    fn new(output_tokens: u64) -> Self {
        Usage {
            input_tokens: PROMPT_TOKENS,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            output_tokens,
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [ContentBlock<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: ToolInput },
}

/// `{}` when a streamed `tool_use` block starts, `{"location":"Paris"}` when complete.
#[derive(Serialize)]
struct ToolInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'static str>,
}

/// Anthropic's ids: a prefix, `01`, then 22 base62 characters
/// (e.g. `msg_013Zva2CMHLNnXjNJJKqJ2EF`, `toolu_01A09q90qw90lq917835lq9`).
fn anthropic_id(prefix: &str) -> String {
    let mut with_version = String::with_capacity(prefix.len() + 2);
    with_version.push_str(prefix);
    with_version.push_str("01");
    random_id_of(&with_version, 22)
}

/// The body of a non-stream answer: one text block ending the turn, or, when `tool` is
/// given, a text block and a `tool_use` block calling it.
pub(crate) fn message(model: &str, tool: Option<&str>) -> serde_json::Result<Vec<u8>> {
    let id = anthropic_id("msg_");
    let tool_id;
    let (blocks, stop_reason) = match tool {
        Some(name) => {
            tool_id = anthropic_id("toolu_");
            let call = ContentBlock::ToolUse {
                id: &tool_id,
                name,
                input: ToolInput { location: Some(TOOL_USE_LOCATION) },
            };
            (vec![ContentBlock::Text { text: TOOL_USE_TEXT }, call], "tool_use")
        }
        None => (vec![ContentBlock::Text { text: REPLY_TEXT }], "end_turn"),
    };
    serde_json::to_vec(&Message {
        id: &id,
        kind: "message",
        role: "assistant",
        model,
        content: &blocks,
        stop_reason: Some(stop_reason),
        stop_sequence: None,
        usage: Usage::new(COMPLETION_TOKENS),
    })
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart { message: Message<'a> },
    ContentBlockStart { index: u32, content_block: ContentBlock<'a> },
    Ping,
    ContentBlockDelta { index: u32, delta: BlockDelta<'a> },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: MessageDeltaBody, usage: OutputUsage },
    MessageStop,
}

impl StreamEvent<'_> {
    /// The SSE event name, which Anthropic makes equal to the payload's `type`.
    fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDeltaBody {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

/// `message_delta` reports only the (cumulative) output tokens.
#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

fn push(writer: &mut EventWriter, event: &StreamEvent<'_>) -> serde_json::Result<()> {
    writer.push_named(event.name(), event)
}

/// The SSE events of a streamed answer: `message_start`, a text block (start, `ping`,
/// `chunks` `text_delta`s `tok{i} `, stop), with `tool` a `tool_use` block (start, two
/// `input_json_delta`s, stop), `message_delta` with the stop reason and `message_stop`.
pub(crate) fn message_stream_events(
    model: &str,
    tool: Option<&str>,
    chunks: usize,
) -> serde_json::Result<Vec<Bytes>> {
    let id = anthropic_id("msg_");
    let mut writer = EventWriter::new(chunks + 10);

    // Anthropic counts the first output token in message_start already.
    let start = Message {
        id: &id,
        kind: "message",
        role: "assistant",
        model,
        content: &[],
        stop_reason: None,
        stop_sequence: None,
        usage: Usage::new(1),
    };
    push(&mut writer, &StreamEvent::MessageStart { message: start })?;
    let text_block = ContentBlock::Text { text: "" };
    push(&mut writer, &StreamEvent::ContentBlockStart { index: 0, content_block: text_block })?;
    push(&mut writer, &StreamEvent::Ping)?;
    let mut text = String::new();
    for i in 0..chunks {
        text.clear();
        text.push_str("tok");
        text.push_str(&i.to_string());
        text.push(' ');
        let delta = BlockDelta::TextDelta { text: &text };
        push(&mut writer, &StreamEvent::ContentBlockDelta { index: 0, delta })?;
    }
    push(&mut writer, &StreamEvent::ContentBlockStop { index: 0 })?;

    let stop_reason = match tool {
        Some(name) => {
            let tool_id = anthropic_id("toolu_");
            let call = ContentBlock::ToolUse { id: &tool_id, name, input: ToolInput { location: None } };
            push(&mut writer, &StreamEvent::ContentBlockStart { index: 1, content_block: call })?;
            for piece in TOOL_USE_INPUT_PIECES {
                let delta = BlockDelta::InputJsonDelta { partial_json: piece };
                push(&mut writer, &StreamEvent::ContentBlockDelta { index: 1, delta })?;
            }
            push(&mut writer, &StreamEvent::ContentBlockStop { index: 1 })?;
            "tool_use"
        }
        None => "end_turn",
    };

    let delta = MessageDeltaBody { stop_reason, stop_sequence: None };
    let usage = OutputUsage { output_tokens: chunks as u64 };
    push(&mut writer, &StreamEvent::MessageDelta { delta, usage })?;
    push(&mut writer, &StreamEvent::MessageStop)?;
    Ok(writer.into_events())
}

// ---------------------------------------------------------------------------------------
// errors

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
    /// Anthropic repeats the `request-id` header here; a scripted body has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// An Anthropic error body, `{"type":"error","error":{"type","message"}}`, with a
/// top-level `request_id` when given.
/// What `count_tokens` adds for each message besides the words of its text.
pub const COUNT_TOKENS_PER_MESSAGE: u64 = 3;
/// What `count_tokens` adds for each tool definition.
pub const COUNT_TOKENS_PER_TOOL: u64 = 10;
/// The fields `POST /v1/messages/count_tokens` takes; any other is refused, as Anthropic
/// refuses `max_tokens` there.
const COUNT_TOKENS_FIELDS: &[&str] =
    &["model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"];

/// The words of the text in a `system` value or a message's `content` (a string, or blocks
/// whose `text` or `tool_result` content is counted).
fn words(content: Option<&serde_json::Value>) -> u64 {
    use serde_json::Value;
    match content {
        Some(Value::String(text)) => text.split_whitespace().count() as u64,
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|block| match block.get("type").and_then(Value::as_str) {
                Some("text") => words(block.get("text")),
                Some("tool_result") => words(block.get("content")),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// The mock's count of a `count_tokens` request: the words of every text (system, messages,
/// tool results), [`COUNT_TOKENS_PER_MESSAGE`] per message and [`COUNT_TOKENS_PER_TOOL`]
/// per tool; `Err` is the `invalid_request_error` message of a request Anthropic refuses.
pub(crate) fn count_tokens(body: &[u8]) -> Result<u64, String> {
    use serde_json::Value;
    let request: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| format!("could not parse the json body of your request: {e}"))?;
    if let Some(extra) = request.keys().find(|key| !COUNT_TOKENS_FIELDS.contains(&key.as_str())) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    if !request.get("model").is_some_and(Value::is_string) {
        return Err("model: field required".to_owned());
    }
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => return Err("messages: at least one message is required".to_owned()),
    };
    let tools = request.get("tools").and_then(Value::as_array).map_or(0, Vec::len) as u64;
    let message_tokens: u64 =
        messages.iter().map(|message| COUNT_TOKENS_PER_MESSAGE + words(message.get("content"))).sum();
    Ok(words(request.get("system")) + message_tokens + tools * COUNT_TOKENS_PER_TOOL)
}

pub(crate) fn error_body(kind: &str, message: &str, request_id: Option<&str>) -> String {
    let body = ErrorBody { kind: "error", error: ErrorDetail { kind, message }, request_id };
    match serde_json::to_string(&body) {
        Ok(text) => text,
        // Serializing three strings cannot fail; keep a valid body all the same.
        Err(_) => r#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_anthropic_shape() {
        let id = anthropic_id("msg_");
        assert_eq!(id.len(), "msg_01".len() + 22);
        assert!(id.starts_with("msg_01"));
        assert!(id["msg_01".len()..].bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn tool_input_pieces_make_the_input() {
        assert_eq!(TOOL_USE_INPUT_PIECES.concat(), TOOL_USE_INPUT_JSON);
        let parsed: serde_json::Value = serde_json::from_str(TOOL_USE_INPUT_JSON).expect("valid json");
        let full = serde_json::to_value(ToolInput { location: Some(TOOL_USE_LOCATION) }).expect("serializes");
        assert_eq!(parsed, full);
    }

    #[test]
    fn content_reads_strings_and_blocks() {
        let parse = |json: &str| serde_json::from_str::<MessageContent>(json).map(|c| c.has_tool_result);
        assert!(matches!(parse(r#""hi""#), Ok(false)));
        assert!(matches!(parse(r#"[{"type":"text","text":"hi"}]"#), Ok(false)));
        let result =
            r#"[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"ok"}]}]"#;
        assert!(matches!(parse(result), Ok(true)));
        assert!(parse("5").is_err());
        assert!(parse(r#"[{"text":"no type"}]"#).is_err());
    }
}
