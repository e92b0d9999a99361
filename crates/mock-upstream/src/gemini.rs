//! Google Gemini's Generative Language API (Google AI Studio, `v1beta`) wire format: the
//! request fields the mock reads, `GenerateContentResponse` answers (whole, as SSE events or
//! as a streamed JSON array), embeddings, and google.rpc `{"error":{code,message,status}}`
//! bodies.
//!
//! Field names and shapes were checked against Google's reference pages:
//! ai.google.dev/api/generate-content (models.generateContent, models.streamGenerateContent,
//! GenerateContentResponse, Candidate, FinishReason, UsageMetadata), ai.google.dev/api/caching
//! (Content, Part, FunctionCall, FunctionResponse), ai.google.dev/api/embeddings
//! (models.embedContent, models.batchEmbedContents, ContentEmbedding),
//! ai.google.dev/gemini-api/docs/troubleshooting (HTTP code and status of each error), and
//! against captured API traffic for what the reference leaves open: `alt=sse` events end in
//! `\r\n\r\n`, every streamed chunk repeats `usageMetadata` with running totals (only the last
//! has `finishReason`), a function call ends with `finishReason: "STOP"` and `finishMessage`,
//! a request without a key is a 403 `PERMISSION_DENIED`, and a 429 names its delay in a
//! `google.rpc.RetryInfo` detail.
//!
//! As on the other formats, answers are serde structs over borrowed strings and the request is
//! read without building a `serde_json::Value` tree. Google's JSON parser also takes the proto
//! (snake_case) field names, so the fields the mock reads accept both spellings.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::wire::{
    COMPLETION_TOKENS, EMBEDDING_DIMENSIONS, MAX_EMBEDDING_DIMENSIONS, PROMPT_TOKENS, REPLY_TEXT,
    embedding_vector, random_id_of,
};

/// The `args` of every `functionCall` part, as serialized (compact).
pub const GEMINI_FUNCTION_CALL_ARGS_JSON: &str = r#"{"location":"Paris"}"#;
/// The answer text when `generationConfig.responseMimeType` is `application/json`: a JSON
/// object holding [`REPLY_TEXT`], so a JSON-mode client can parse it.
pub const GEMINI_JSON_REPLY_TEXT: &str = r#"{"answer": "mock reply"}"#;
/// The text of the `thought: true` part sent first when
/// `generationConfig.thinkingConfig.includeThoughts` is true.
pub const GEMINI_THOUGHT_TEXT: &str = "mock thoughts";
/// `usageMetadata.thoughtsTokenCount` of an answer that includes thoughts (absent otherwise).
pub const GEMINI_THOUGHTS_TOKENS: u64 = 8;
/// A `generationConfig.maxOutputTokens` from 1 up to this value makes the answer stop early:
/// text [`GEMINI_MAX_TOKENS_TEXT`], `finishReason: "MAX_TOKENS"`, one candidates token.
pub const GEMINI_MAX_TOKENS_TRIGGER: u64 = 1;
/// The truncated text of a `MAX_TOKENS` answer (the first word of [`REPLY_TEXT`]).
pub const GEMINI_MAX_TOKENS_TEXT: &str = "mock";
/// Most `requests` in one `batchEmbedContents` call, as Google allows (more is a 400).
pub const GEMINI_MAX_BATCH_EMBED_REQUESTS: usize = 100;

const FUNCTION_CALL_LOCATION: &str = "Paris";
/// Google's `finishMessage` on a candidate that ends in function calls.
const FUNCTION_CALL_FINISH_MESSAGE: &str = "Model generated function call(s).";
/// What Google answers (403 `PERMISSION_DENIED`) to a request that carries no API key.
pub(crate) const MISSING_KEY_MESSAGE: &str = "Method doesn't allow unregistered callers (callers without \
     established identity). Please use API Key or other form of API consumer identity to call this API.";
/// Length of a `responseId`, like Google's (e.g. `4HkhaaajEJaY0-kPyI_b2A4`).
const RESPONSE_ID_LEN: usize = 23;

// ---------------------------------------------------------------------------------------
// requests

/// The fields of a `generateContent` / `streamGenerateContent` request the mock looks at; the
/// rest (`systemInstruction`, `safetySettings`, `cachedContent`, the other
/// `generationConfig` fields, ...) is skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentRequest<'a> {
    #[serde(default)]
    pub contents: Option<Vec<Content>>,
    #[serde(borrow, default)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow, default, alias = "tool_config")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(borrow, default, alias = "generation_config")]
    generation_config: Option<GenerationConfig<'a>>,
}

/// A turn's author. Gemini has no system role (that is `systemInstruction`); `function` is
/// the older role of a turn carrying `functionResponse` parts.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Model,
    Function,
}

/// One entry of `contents`: of its parts only whether one is a `functionResponse` is kept.
#[derive(Deserialize)]
pub(crate) struct Content {
    /// Optional in Google's API; a single-turn request often leaves it out, meaning `user`.
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    parts: Option<Vec<Part>>,
}

/// A part is one of `text`, `inlineData`, `fileData`, `functionCall`, `functionResponse`,
/// ...; only the presence of `functionResponse` matters to the answer.
#[derive(Deserialize)]
struct Part {
    #[serde(default, rename = "functionResponse", alias = "function_response")]
    function_response: Option<IgnoredAny>,
}

/// One entry of `tools`: function declarations, or a built-in tool (`googleSearch`,
/// `codeExecution`, ...) that has none.
#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow, default, rename = "functionDeclarations", alias = "function_declarations")]
    function_declarations: Option<Vec<FunctionDeclaration<'a>>>,
}

#[derive(Deserialize)]
struct FunctionDeclaration<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolConfig<'a> {
    #[serde(borrow, default, rename = "functionCallingConfig", alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig<'a>>,
}

/// `mode` is `AUTO`, `ANY`, `NONE` or `VALIDATED`; only `NONE` changes the mock's answer.
#[derive(Deserialize)]
struct FunctionCallingConfig<'a> {
    #[serde(borrow, default)]
    mode: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(default, alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(borrow, default, alias = "response_mime_type")]
    response_mime_type: Option<Cow<'a, str>>,
    #[serde(default, alias = "thinking_config")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    #[serde(default, alias = "include_thoughts")]
    include_thoughts: Option<bool>,
}

/// What the answer holds besides an optional thought.
#[derive(Clone, Copy)]
pub(crate) enum ReplyKind<'a> {
    /// A call of this declared function.
    Call(&'a str),
    /// [`REPLY_TEXT`], ending the turn.
    Text,
    /// [`GEMINI_JSON_REPLY_TEXT`], ending the turn.
    Json,
    /// [`GEMINI_MAX_TOKENS_TEXT`], cut off by `maxOutputTokens`.
    Truncated,
}

/// The answer a request gets; see [`GenerateContentRequest::reply`].
#[derive(Clone, Copy)]
pub(crate) struct Reply<'a> {
    pub thoughts: bool,
    pub kind: ReplyKind<'a>,
}

impl GenerateContentRequest<'_> {
    /// The answer, by the first rule that applies: a function call (see
    /// [`Self::function_to_call`]), `MAX_TOKENS` when `maxOutputTokens` is at most
    /// [`GEMINI_MAX_TOKENS_TRIGGER`], JSON text when `responseMimeType` is
    /// `application/json`, else plain text; with a thought first when asked for.
    pub(crate) fn reply(&self) -> Reply<'_> {
        let config = self.generation_config.as_ref();
        let thoughts = config
            .and_then(|config| config.thinking_config.as_ref())
            .and_then(|thinking| thinking.include_thoughts)
            .unwrap_or(false);
        let truncated = config
            .and_then(|config| config.max_output_tokens)
            .is_some_and(|max| (1..=GEMINI_MAX_TOKENS_TRIGGER).contains(&max));
        let json = config
            .and_then(|config| config.response_mime_type.as_deref())
            .is_some_and(|mime| mime.eq_ignore_ascii_case("application/json"));
        let kind = match self.function_to_call() {
            Some(name) => ReplyKind::Call(name),
            None if truncated => ReplyKind::Truncated,
            None if json => ReplyKind::Json,
            None => ReplyKind::Text,
        };
        Reply { thoughts, kind }
    }

    /// The function the answer calls, if any: the first declared function when the last
    /// content is a user turn without a `functionResponse` part (so a conversation that
    /// already returned the result gets text and ends), unless `toolConfig` says `NONE`.
    fn function_to_call(&self) -> Option<&str> {
        let mode = self.tool_config.as_ref().and_then(|config| config.function_calling_config.as_ref());
        if mode
            .and_then(|config| config.mode.as_deref())
            .is_some_and(|mode| mode.eq_ignore_ascii_case("NONE"))
        {
            return None;
        }
        let first = self
            .tools
            .as_ref()?
            .iter()
            .filter_map(|tool| tool.function_declarations.as_ref())
            .flatten()
            .next()?;
        let last = self.contents.as_ref()?.last()?;
        let from_user = matches!(last.role, None | Some(Role::User));
        let answered = last.parts.iter().flatten().any(|part| part.function_response.is_some());
        (from_user && !answered).then_some(first.name.as_ref())
    }
}

/// The fields of an `embedContent` request (and of each `batchEmbedContents` entry) the mock
/// looks at; `taskType`, `title` and the content's parts are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EmbedContentRequest {
    #[serde(default)]
    pub content: Option<EmbedInput>,
    #[serde(default, alias = "output_dimensionality")]
    pub output_dimensionality: Option<u64>,
}

/// The `Content` to embed; it must be an object, but its parts are not looked at.
#[derive(Deserialize)]
pub(crate) struct EmbedInput {
    #[serde(default, rename = "parts")]
    _parts: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub(crate) struct BatchEmbedContentsRequest {
    #[serde(default)]
    pub requests: Option<Vec<EmbedContentRequest>>,
}

impl EmbedContentRequest {
    /// Values per embedding: `outputDimensionality`, or [`EMBEDDING_DIMENSIONS`] without one.
    pub(crate) fn dimensions(&self) -> Result<usize, String> {
        match self.output_dimensionality {
            None => Ok(EMBEDDING_DIMENSIONS),
            Some(d) if (1..=MAX_EMBEDDING_DIMENSIONS as u64).contains(&d) => Ok(d as usize),
            Some(d) => Err(format!(
                "* EmbedContentRequest.output_dimensionality: {d} is out of range, it must be between 1 \
                 and {MAX_EMBEDDING_DIMENSIONS}\n"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// answers

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: CandidateContent<'a>,
    /// Absent on every streamed chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_message: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct CandidateContent<'a> {
    parts: Vec<OutPart<'a>>,
    role: &'static str,
}

/// A part of the answer: text (a thought when `thought` is set) or a function call.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall<'a>>,
}

impl<'a> OutPart<'a> {
    fn text(text: &'a str) -> Self {
        OutPart { text: Some(text), thought: None, function_call: None }
    }

    fn thought() -> Self {
        OutPart { text: Some(GEMINI_THOUGHT_TEXT), thought: Some(true), function_call: None }
    }

    fn call(name: &'a str) -> Self {
        let args = CallArgs { location: FUNCTION_CALL_LOCATION };
        OutPart { text: None, thought: None, function_call: Some(FunctionCall { name, args }) }
    }
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: CallArgs,
}

/// `{"location":"Paris"}`, [`GEMINI_FUNCTION_CALL_ARGS_JSON`].
#[derive(Serialize)]
struct CallArgs {
    location: &'static str,
}

/// Token counts. Google's JSON leaves out zero counts, so `candidatesTokenCount` is absent
/// on a chunk that only carries a thought and `thoughtsTokenCount` without thoughts; the
/// total is prompt + candidates + thoughts, as Google sums it.
#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    candidates_token_count: u64,
    total_token_count: u64,
    prompt_tokens_details: [ModalityTokenCount; 1],
    #[serde(skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
}

#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct ModalityTokenCount {
    modality: &'static str,
    token_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl UsageMetadata {
    fn new(candidates: u64, thoughts: u64) -> Self {
        UsageMetadata {
            prompt_token_count: PROMPT_TOKENS,
            candidates_token_count: candidates,
            total_token_count: PROMPT_TOKENS + candidates + thoughts,
            prompt_tokens_details: [ModalityTokenCount { modality: "TEXT", token_count: PROMPT_TOKENS }],
            thoughts_token_count: thoughts,
        }
    }
}

/// What every response (or every chunk of one stream) shares.
struct Head<'a> {
    model: &'a str,
    response_id: String,
}

impl<'a> Head<'a> {
    fn new(model: &'a str) -> Self {
        Head { model, response_id: random_id_of("", RESPONSE_ID_LEN) }
    }

    fn response<'c>(
        &'c self,
        parts: Vec<OutPart<'c>>,
        finish: Option<Finish>,
        usage: UsageMetadata,
    ) -> GenerateContentResponse<'c> {
        GenerateContentResponse {
            candidates: [Candidate {
                content: CandidateContent { parts, role: "model" },
                finish_reason: finish.map(|finish| finish.reason),
                finish_message: finish.and_then(|finish| finish.message),
                index: 0,
            }],
            usage_metadata: usage,
            model_version: self.model,
            response_id: &self.response_id,
        }
    }
}

#[derive(Clone, Copy)]
struct Finish {
    reason: &'static str,
    message: Option<&'static str>,
}

const STOP: Finish = Finish { reason: "STOP", message: None };
const MAX_TOKENS: Finish = Finish { reason: "MAX_TOKENS", message: None };
const CALLED: Finish = Finish { reason: "STOP", message: Some(FUNCTION_CALL_FINISH_MESSAGE) };

impl ReplyKind<'_> {
    /// The answer's text and how it ends, or `None` for a function call.
    fn text(self) -> Option<(&'static str, Finish)> {
        match self {
            ReplyKind::Call(_) => None,
            ReplyKind::Text => Some((REPLY_TEXT, STOP)),
            ReplyKind::Json => Some((GEMINI_JSON_REPLY_TEXT, STOP)),
            ReplyKind::Truncated => Some((GEMINI_MAX_TOKENS_TEXT, MAX_TOKENS)),
        }
    }

    /// `candidatesTokenCount` of the whole answer.
    fn candidates_tokens(self) -> u64 {
        match self {
            ReplyKind::Truncated => 1,
            _ => COMPLETION_TOKENS,
        }
    }
}

fn thoughts_tokens(reply: Reply<'_>) -> u64 {
    if reply.thoughts { GEMINI_THOUGHTS_TOKENS } else { 0 }
}

/// The body of a non-stream answer: one candidate whose parts are the thought (when asked
/// for) then the text or the function call.
pub(crate) fn generate_content(model: &str, reply: Reply<'_>) -> serde_json::Result<Vec<u8>> {
    let head = Head::new(model);
    let mut parts = Vec::with_capacity(2);
    if reply.thoughts {
        parts.push(OutPart::thought());
    }
    let finish = match (reply.kind, reply.kind.text()) {
        (ReplyKind::Call(name), _) => {
            parts.push(OutPart::call(name));
            CALLED
        }
        (_, Some((text, finish))) => {
            parts.push(OutPart::text(text));
            finish
        }
        (_, None) => STOP,
    };
    let usage = UsageMetadata::new(reply.kind.candidates_tokens(), thoughts_tokens(reply));
    serde_json::to_vec(&head.response(parts, Some(finish), usage))
}

/// How `streamGenerateContent` frames its chunks, chosen by the `alt` query parameter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `alt=sse`: `data: <json>\r\n\r\n` per chunk, as Google sends them.
    Sse,
    /// Google's default (`alt=json`): one JSON array of the chunks, streamed element by
    /// element (`[<json>`, `,\r\n<json>`, ..., the last followed by `]`).
    JsonArray,
}

/// `text` cut into `n` consecutive pieces of (nearly) equal character counts; with more
/// pieces than characters the extra pieces are empty.
fn split_even(text: &str, n: usize) -> impl Iterator<Item = &str> {
    let bounds: Vec<usize> = text.char_indices().map(|(at, _)| at).chain([text.len()]).collect();
    let chars = bounds.len() - 1;
    (0..n).map(move |i| {
        let start = bounds[i * chars / n];
        let end = bounds[(i + 1) * chars / n];
        &text[start..end]
    })
}

/// The chunks of a streamed answer, each one frame: a thought chunk first when asked for;
/// then the text cut into `chunks` pieces (at least one), one text part each, or for a
/// function call or a `MAX_TOKENS` answer a single chunk. Every chunk carries the running
/// `usageMetadata` (one candidates token per text chunk so far), and only the last one
/// `finishReason`.
pub(crate) fn stream_events(
    model: &str,
    reply: Reply<'_>,
    chunks: usize,
    framing: Framing,
) -> serde_json::Result<Vec<Bytes>> {
    let head = Head::new(model);
    let thoughts = thoughts_tokens(reply);
    let mut responses = Vec::with_capacity(chunks + 2);
    if reply.thoughts {
        responses.push(head.response(vec![OutPart::thought()], None, UsageMetadata::new(0, thoughts)));
    }
    match (reply.kind, reply.kind.text()) {
        (ReplyKind::Call(name), _) => {
            let usage = UsageMetadata::new(reply.kind.candidates_tokens(), thoughts);
            responses.push(head.response(vec![OutPart::call(name)], Some(CALLED), usage));
        }
        (ReplyKind::Truncated, Some((text, finish))) => {
            let usage = UsageMetadata::new(reply.kind.candidates_tokens(), thoughts);
            responses.push(head.response(vec![OutPart::text(text)], Some(finish), usage));
        }
        (_, Some((text, finish))) => {
            let n = chunks.max(1);
            for (i, piece) in split_even(text, n).enumerate() {
                let last = i + 1 == n;
                let usage = UsageMetadata::new(i as u64 + 1, thoughts);
                responses.push(head.response(vec![OutPart::text(piece)], last.then_some(finish), usage));
            }
        }
        (_, None) => {}
    }

    let mut buf = BytesMut::with_capacity(responses.len() * 400);
    let mut events = Vec::with_capacity(responses.len());
    let count = responses.len();
    for (i, response) in responses.iter().enumerate() {
        match framing {
            Framing::Sse => {
                buf.put_slice(b"data: ");
                serde_json::to_writer((&mut buf).writer(), response)?;
                buf.put_slice(b"\r\n\r\n");
            }
            Framing::JsonArray => {
                buf.put_slice(if i == 0 { b"[" } else { b",\r\n" });
                serde_json::to_writer((&mut buf).writer(), response)?;
                if i + 1 == count {
                    buf.put_slice(b"]");
                }
            }
        }
        events.push(buf.split().freeze());
    }
    Ok(events)
}

#[derive(Serialize)]
struct ContentEmbedding {
    values: Vec<f32>,
}

#[derive(Serialize)]
struct EmbedContentResponse {
    embedding: ContentEmbedding,
}

#[derive(Serialize)]
struct BatchEmbedContentsResponse {
    embeddings: Vec<ContentEmbedding>,
}

/// The body of an `embedContent` answer: the first of the mock's deterministic vectors
/// (the same as the OpenAI embeddings' first), of `dimensions` values.
pub(crate) fn embed_content(dimensions: usize) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&EmbedContentResponse {
        embedding: ContentEmbedding { values: embedding_vector(0, dimensions) },
    })
}

/// The body of a `batchEmbedContents` answer: one embedding per request, in order, the
/// `i`-th being the mock's `i`-th deterministic vector of that request's dimensions.
pub(crate) fn batch_embed_contents(dimensions: &[usize]) -> serde_json::Result<Vec<u8>> {
    let embeddings = dimensions
        .iter()
        .enumerate()
        .map(|(index, &dimensions)| ContentEmbedding { values: embedding_vector(index, dimensions) })
        .collect();
    serde_json::to_vec(&BatchEmbedContentsResponse { embeddings })
}

// ---------------------------------------------------------------------------------------
// errors

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: u16,
    message: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [RetryInfo],
}

/// A `google.rpc.RetryInfo` detail, `{"@type": ..., "retryDelay": "<seconds>s"}`.
#[derive(Serialize)]
struct RetryInfo {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "retryDelay")]
    retry_delay: String,
}

fn serialize_error(detail: ErrorDetail<'_>) -> String {
    match serde_json::to_string(&ErrorBody { error: detail }) {
        Ok(text) => text,
        // Serializing a few strings cannot fail; keep a valid body all the same.
        Err(_) => {
            r#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#.to_owned()
        }
    }
}

/// A Google API error body, `{"error":{"code":<code>,"message":...,"status":<status>}}`.
pub(crate) fn error_body(code: u16, status: &str, message: &str) -> String {
    serialize_error(ErrorDetail { code, message, status, details: &[] })
}

/// Google's 429 for a project over its quota, with the wait in a `RetryInfo` detail.
pub(crate) fn rate_limit_body(retry_after_secs: u64) -> String {
    let retry = [RetryInfo {
        kind: "type.googleapis.com/google.rpc.RetryInfo",
        retry_delay: format!("{retry_after_secs}s"),
    }];
    serialize_error(ErrorDetail {
        code: 429,
        message: "You exceeded your current quota, please check your plan and billing details. For more \
                  information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        status: "RESOURCE_EXHAUSTED",
        details: &retry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_of(json: &str) -> (bool, &'static str) {
        let request: GenerateContentRequest<'_> = serde_json::from_str(json).expect("valid request");
        let reply = request.reply();
        let kind = match reply.kind {
            ReplyKind::Call(_) => "call",
            ReplyKind::Text => "text",
            ReplyKind::Json => "json",
            ReplyKind::Truncated => "truncated",
        };
        (reply.thoughts, kind)
    }

    #[test]
    fn constants_agree_with_what_is_serialized() {
        let args = serde_json::to_string(&CallArgs { location: FUNCTION_CALL_LOCATION }).expect("serializes");
        assert_eq!(args, GEMINI_FUNCTION_CALL_ARGS_JSON);
        let json: serde_json::Value = serde_json::from_str(GEMINI_JSON_REPLY_TEXT).expect("valid json");
        assert_eq!(json, serde_json::json!({ "answer": REPLY_TEXT }));
        assert!(REPLY_TEXT.starts_with(GEMINI_MAX_TOKENS_TEXT));
    }

    #[test]
    fn split_even_keeps_the_text() {
        for n in 1..=25 {
            let pieces: Vec<&str> = split_even("mock reply", n).collect();
            assert_eq!(pieces.len(), n);
            assert_eq!(pieces.concat(), "mock reply");
        }
        let pieces: Vec<&str> = split_even("mock reply", 5).collect();
        assert_eq!(pieces, ["mo", "ck", " r", "ep", "ly"]);
        assert_eq!(split_even("héllo", 2).collect::<String>(), "héllo");
    }

    #[test]
    fn reply_rules() {
        let tools = r#""tools":[{"googleSearch":{}},{"functionDeclarations":[{"name":"get_weather"}]}]"#;
        let user = r#""contents":[{"role":"user","parts":[{"text":"hi"}]}]"#;
        assert_eq!(reply_of(&format!("{{{user}}}")), (false, "text"));
        assert_eq!(reply_of(&format!("{{{user},{tools}}}")), (false, "call"));
        // A content without a role is a user turn.
        assert_eq!(
            reply_of(&format!(r#"{{"contents":[{{"parts":[{{"text":"hi"}}]}}],{tools}}}"#)),
            (false, "call")
        );
        let answered = r#""contents":[{"role":"user","parts":[{"text":"hi"}]},
            {"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{}}}]},
            {"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"t":1}}}]}]"#;
        assert_eq!(reply_of(&format!("{{{answered},{tools}}}")), (false, "text"));
        let none = r#""toolConfig":{"functionCallingConfig":{"mode":"NONE"}}"#;
        assert_eq!(reply_of(&format!("{{{user},{tools},{none}}}")), (false, "text"));
        let config = r#""generationConfig":{"maxOutputTokens":1,"responseMimeType":"application/json"}"#;
        assert_eq!(reply_of(&format!("{{{user},{config}}}")), (false, "truncated"));
        let config = r#""generation_config":{"response_mime_type":"application/json",
            "thinking_config":{"include_thoughts":true}}"#;
        assert_eq!(reply_of(&format!("{{{user},{config}}}")), (true, "json"));
    }

    #[test]
    fn bad_requests_do_not_parse() {
        for body in [
            r#"{"contents":[{"role":"system","parts":[]}]}"#,
            r#"{"contents":"hi"}"#,
            r#"{"contents":[],"tools":[{"functionDeclarations":[{"description":"no name"}]}]}"#,
            r#"{"contents":[],"generationConfig":{"maxOutputTokens":-1}}"#,
        ] {
            assert!(serde_json::from_str::<GenerateContentRequest<'_>>(body).is_err(), "{body}");
        }
    }

    #[test]
    fn rate_limit_body_names_the_delay() {
        let body: serde_json::Value = serde_json::from_str(&rate_limit_body(7)).expect("json");
        assert_eq!(body["error"]["code"], 429);
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["error"]["details"][0]["@type"], "type.googleapis.com/google.rpc.RetryInfo");
        assert_eq!(body["error"]["details"][0]["retryDelay"], "7s");
        let plain: serde_json::Value =
            serde_json::from_str(&error_body(400, "INVALID_ARGUMENT", "x")).expect("json");
        assert_eq!(
            plain,
            serde_json::json!({"error": {"code": 400, "message": "x", "status": "INVALID_ARGUMENT"}})
        );
    }
}
