//! The OpenAI wire format: request fields the mock reads and the response bodies it writes.
//!
//! Responses are serde structs over borrowed strings, serialized once per request (no
//! `serde_json::Value` trees), which keeps the benchmark's hot path cheap.

use std::borrow::Cow;
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// The assistant text of every non-stream answer.
pub const REPLY_TEXT: &str = "mock reply";
/// `usage.prompt_tokens` of every answer (fixed; the mock does not tokenize).
pub const PROMPT_TOKENS: u64 = 12;
/// `usage.completion_tokens` of a non-stream answer; a stream reports its content chunk count.
pub const COMPLETION_TOKENS: u64 = 5;
/// Content chunks in a stream unless [`crate::Behavior::SlowStream`] says otherwise.
pub const DEFAULT_STREAM_CHUNKS: usize = 5;
/// Floats per embedding when the request has no `dimensions`.
pub const EMBEDDING_DIMENSIONS: usize = 8;
/// Largest `dimensions` accepted (larger is a 400), bounding the answer's size.
pub const MAX_EMBEDDING_DIMENSIONS: usize = 4096;
/// Most inputs per embeddings request, as OpenAI allows (more is a 400).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// `usage.prompt_tokens` per embeddings input.
pub const EMBEDDING_TOKENS_PER_INPUT: u64 = 4;
/// The one model `GET /v1/models` lists.
pub const MOCK_MODEL_ID: &str = "mock-model";
/// `created` of listed models, fixed so tests can compare it.
pub const MODEL_CREATED: u64 = 1_700_000_000;
/// `owned_by` of listed models.
pub const MODEL_OWNER: &str = "tollgate-mock";
/// OpenAI stamps answers with the backend configuration; a constant one is realistic enough.
const SYSTEM_FINGERPRINT: &str = "fp_tollgate_mock";
const SERVICE_TIER: &str = "default";

// ---------------------------------------------------------------------------------------
// requests

/// `stream_options` of chat and legacy completions.
#[derive(Deserialize, Default)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The fields of a chat completion request the mock looks at; the rest is skipped unparsed.
#[derive(Deserialize)]
pub(crate) struct ChatRequest<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub messages: Option<IgnoredAny>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

/// The fields of a legacy completion request the mock looks at.
#[derive(Deserialize)]
pub(crate) struct CompletionRequest<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub prompt: Option<IgnoredAny>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

/// The fields of an embeddings request the mock looks at.
#[derive(Deserialize)]
pub(crate) struct EmbeddingRequest<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    #[serde(default)]
    pub dimensions: Option<u64>,
    #[serde(borrow, default)]
    pub encoding_format: Option<Cow<'a, str>>,
}

// ---------------------------------------------------------------------------------------
// shared pieces

/// Token counts of chat answers, with the detail objects OpenAI sends today.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize, Clone, Copy)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    fn new(completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens: PROMPT_TOKENS,
            completion_tokens,
            total_tokens: PROMPT_TOKENS + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: 0, audio_tokens: 0 },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

/// Token counts of legacy completions, which carry no detail objects.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct BasicUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl BasicUsage {
    fn new(completion_tokens: u64) -> Self {
        BasicUsage {
            prompt_tokens: PROMPT_TOKENS,
            completion_tokens,
            total_tokens: PROMPT_TOKENS + completion_tokens,
        }
    }
}

/// Seconds since the epoch, OpenAI's `created`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

thread_local! {
    /// Per-thread generator state, so ids cost no lock or shared atomic under load.
    static RNG: Cell<u64> = Cell::new(rng_seed());
}

fn rng_seed() -> u64 {
    // Distinct per thread and per process: the clock plus the address of a thread-local.
    let nanos =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos() as u64).unwrap_or(0);
    let marker = 0u8;
    nanos ^ (std::ptr::addr_of!(marker) as u64).rotate_left(32)
}

/// splitmix64: fast, good enough for ids that only need to look random and not collide.
fn next_random() -> u64 {
    RNG.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// `prefix` followed by 29 base62 characters, the shape of OpenAI's ids
/// (e.g. `chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT`).
pub(crate) fn random_id(prefix: &str) -> String {
    random_id_of(prefix, 29)
}

/// `prefix` followed by `len` base62 characters.
pub(crate) fn random_id_of(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    let mut bits = 0u64;
    for i in 0..len {
        // 10 base62 digits fit in a u64 with room to spare; draw afresh every 10.
        if i % 10 == 0 {
            bits = next_random();
        }
        id.push(char::from(ALPHABET[(bits % 62) as usize]));
        bits /= 62;
    }
    id
}

// ---------------------------------------------------------------------------------------
// chat completions

#[derive(Serialize)]
pub(crate) struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice; 1],
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ChatChoice {
    index: u32,
    message: ChatMessage,
    /// Always `null`: the mock never returns logprobs.
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage {
    role: &'static str,
    content: &'static str,
    refusal: Option<&'static str>,
}

/// The body of a non-stream chat answer.
pub(crate) fn chat_completion(model: &str) -> serde_json::Result<Vec<u8>> {
    let id = random_id("chatcmpl-");
    serde_json::to_vec(&ChatCompletion {
        id: &id,
        object: "chat.completion",
        created: unix_now(),
        model,
        choices: [ChatChoice {
            index: 0,
            message: ChatMessage { role: "assistant", content: REPLY_TEXT, refusal: None },
            logprobs: (),
            finish_reason: "stop",
        }],
        usage: Usage::new(COMPLETION_TOKENS),
        service_tier: SERVICE_TIER,
        system_fingerprint: SYSTEM_FINGERPRINT,
    })
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless `stream_options.include_usage`; then `null` on every chunk but the
    /// last, as OpenAI does.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    /// `Some(None)` writes `"refusal": null`, which OpenAI sends on the role chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<&'static str>>,
}

/// What every chunk of one stream shares.
struct StreamHead<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
}

impl<'a> StreamHead<'a> {
    fn chat_chunk<'c>(
        &'c self,
        choices: &'c [ChunkChoice<'c>],
        usage: Option<Option<Usage>>,
    ) -> ChatChunk<'c> {
        ChatChunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            service_tier: SERVICE_TIER,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage,
        }
    }

    fn text_chunk<'c>(
        &'c self,
        choices: &'c [TextChoice<'c>],
        usage: Option<Option<BasicUsage>>,
    ) -> TextCompletion<'c> {
        TextCompletion {
            id: self.id,
            object: "text_completion",
            created: self.created,
            model: self.model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage,
        }
    }
}

/// Builds SSE events into one buffer, each split off as its own `Bytes` so the body can
/// send them as separate frames without copying.
pub(crate) struct EventWriter {
    buf: BytesMut,
    events: Vec<Bytes>,
}

impl EventWriter {
    pub(crate) fn new(events: usize) -> Self {
        EventWriter { buf: BytesMut::with_capacity(events * 320), events: Vec::with_capacity(events) }
    }

    /// An unnamed event, `data: <json>`, as OpenAI sends them.
    fn push_json(&mut self, value: &impl Serialize) -> serde_json::Result<()> {
        self.buf.put_slice(b"data: ");
        serde_json::to_writer((&mut self.buf).writer(), value)?;
        self.buf.put_slice(b"\n\n");
        self.events.push(self.buf.split().freeze());
        Ok(())
    }

    /// A named event, `event: <name>` then `data: <json>`, as Anthropic sends them.
    pub(crate) fn push_named(&mut self, name: &str, value: &impl Serialize) -> serde_json::Result<()> {
        self.buf.put_slice(b"event: ");
        self.buf.put_slice(name.as_bytes());
        self.buf.put_slice(b"\n");
        self.push_json(value)
    }

    /// The events, ended by OpenAI's `data: [DONE]`.
    fn finish(mut self) -> Vec<Bytes> {
        self.buf.put_slice(b"data: [DONE]\n\n");
        self.events.push(self.buf.split().freeze());
        self.events
    }

    /// The events as pushed, for streams (Anthropic's) that end with an ordinary event.
    pub(crate) fn into_events(self) -> Vec<Bytes> {
        self.events
    }
}

/// The SSE events of a streamed chat answer, `[DONE]` included: a role chunk, `chunks`
/// content chunks `tok{i} `, a `finish_reason: "stop"` chunk, and with `include_usage` a
/// usage chunk with no choices.
pub(crate) fn chat_stream_events(
    model: &str,
    include_usage: bool,
    chunks: usize,
) -> serde_json::Result<Vec<Bytes>> {
    let id = random_id("chatcmpl-");
    let head = StreamHead { id: &id, created: unix_now(), model };
    let usage_slot = include_usage.then_some(None);
    let mut writer = EventWriter::new(chunks + 4);

    let role = [ChunkChoice {
        index: 0,
        delta: Delta { role: Some("assistant"), content: Some(""), refusal: Some(None) },
        logprobs: (),
        finish_reason: None,
    }];
    writer.push_json(&head.chat_chunk(&role, usage_slot))?;

    let mut text = String::new();
    for i in 0..chunks {
        text.clear();
        text.push_str("tok");
        text.push_str(&i.to_string());
        text.push(' ');
        let content = [ChunkChoice {
            index: 0,
            delta: Delta { content: Some(&text), ..Delta::default() },
            logprobs: (),
            finish_reason: None,
        }];
        writer.push_json(&head.chat_chunk(&content, usage_slot))?;
    }

    let stop = [ChunkChoice { index: 0, delta: Delta::default(), logprobs: (), finish_reason: Some("stop") }];
    writer.push_json(&head.chat_chunk(&stop, usage_slot))?;

    if include_usage {
        writer.push_json(&head.chat_chunk(&[], Some(Some(Usage::new(chunks as u64)))))?;
    }
    Ok(writer.finish())
}

// ---------------------------------------------------------------------------------------
// legacy completions

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [TextChoice<'a>],
    /// Always present on a non-stream answer; on stream chunks as for chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<BasicUsage>>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

/// The body of a non-stream legacy completion.
pub(crate) fn text_completion(model: &str) -> serde_json::Result<Vec<u8>> {
    let id = random_id("cmpl-");
    serde_json::to_vec(&TextCompletion {
        id: &id,
        object: "text_completion",
        created: unix_now(),
        model,
        system_fingerprint: SYSTEM_FINGERPRINT,
        choices: &[TextChoice { text: REPLY_TEXT, index: 0, logprobs: (), finish_reason: Some("stop") }],
        usage: Some(Some(BasicUsage::new(COMPLETION_TOKENS))),
    })
}

/// The SSE events of a streamed legacy completion, `[DONE]` included: `chunks` text
/// chunks, an empty-text `finish_reason: "stop"` chunk, and with `include_usage` a usage
/// chunk with no choices.
pub(crate) fn completion_stream_events(
    model: &str,
    include_usage: bool,
    chunks: usize,
) -> serde_json::Result<Vec<Bytes>> {
    let id = random_id("cmpl-");
    let head = StreamHead { id: &id, created: unix_now(), model };
    let usage_slot = include_usage.then_some(None);
    let mut writer = EventWriter::new(chunks + 3);

    let mut text = String::new();
    for i in 0..chunks {
        text.clear();
        text.push_str("tok");
        text.push_str(&i.to_string());
        text.push(' ');
        let choice = [TextChoice { text: &text, index: 0, logprobs: (), finish_reason: None }];
        writer.push_json(&head.text_chunk(&choice, usage_slot))?;
    }

    let stop = [TextChoice { text: "", index: 0, logprobs: (), finish_reason: Some("stop") }];
    writer.push_json(&head.text_chunk(&stop, usage_slot))?;

    if include_usage {
        writer.push_json(&head.text_chunk(&[], Some(Some(BasicUsage::new(chunks as u64)))))?;
    }
    Ok(writer.finish())
}

// ---------------------------------------------------------------------------------------
// embeddings

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

/// `encoding_format` `float` (the default) is a JSON array; `base64` is the little-endian
/// f32s base64-encoded, which the official OpenAI SDKs request by default.
#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// A deterministic unit vector per input index, so tests can compare answers; Gemini's
/// embeddings use the same vectors.
pub(crate) fn embedding_vector(input_index: usize, dimensions: usize) -> Vec<f32> {
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|j| {
            let seed = (input_index * 31 + j * 17 + 7) % 97;
            seed as f32 / 97.0 - 0.5
        })
        .collect();
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for v in &mut vector {
            *v /= norm;
        }
    }
    vector
}

fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b0 = group[0];
        let b1 = group.get(1).copied().unwrap_or(0);
        let b2 = group.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        out.push(char::from(ALPHABET[(n >> 18) as usize & 63]));
        out.push(char::from(ALPHABET[(n >> 12) as usize & 63]));
        if group.len() > 1 {
            out.push(char::from(ALPHABET[(n >> 6) as usize & 63]));
        } else {
            out.push('=');
        }
        if group.len() > 2 {
            out.push(char::from(ALPHABET[n as usize & 63]));
        } else {
            out.push('=');
        }
    }
    out
}

/// The body of an embeddings answer: `inputs` embeddings of `dimensions` values each.
pub(crate) fn embedding_list(
    model: &str,
    inputs: usize,
    dimensions: usize,
    base64: bool,
) -> serde_json::Result<Vec<u8>> {
    let data = (0..inputs)
        .map(|index| {
            let vector = embedding_vector(index, dimensions);
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: if base64 {
                    EmbeddingValue::Base64(base64_f32(&vector))
                } else {
                    EmbeddingValue::Floats(vector)
                },
            }
        })
        .collect();
    let tokens = EMBEDDING_TOKENS_PER_INPUT * inputs as u64;
    serde_json::to_vec(&EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
    })
}

// ---------------------------------------------------------------------------------------
// models

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: [ModelObject<'a>; 1],
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn model_object(id: &str) -> ModelObject<'_> {
    ModelObject { id, object: "model", created: MODEL_CREATED, owned_by: MODEL_OWNER }
}

/// The body of `GET /v1/models`.
pub(crate) fn model_list() -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ModelList { object: "list", data: [model_object(MOCK_MODEL_ID)] })
}

/// The body of `GET /v1/models/{id}`: any id is answered, owned by the mock.
pub(crate) fn model(id: &str) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&model_object(id))
}

// ---------------------------------------------------------------------------------------
// errors

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// An OpenAI error body, `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let body = ErrorBody { error: ErrorDetail { message, kind, param, code } };
    match serde_json::to_vec(&body) {
        Ok(bytes) => Bytes::from(bytes),
        // Serializing four strings cannot fail; keep a valid body all the same.
        Err(_) => Bytes::from_static(
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_openai_shape() {
        let a = random_id("chatcmpl-");
        let b = random_id("chatcmpl-");
        assert_eq!(a.len(), "chatcmpl-".len() + 29);
        assert!(a["chatcmpl-".len()..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn base64_matches_reference() {
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0]), "AACAPwAAgD8=");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn embeddings_are_unit_vectors() {
        let v = embedding_vector(3, 16);
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "norm² was {norm}");
    }
}
