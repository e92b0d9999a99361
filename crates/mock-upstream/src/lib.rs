//! A mock OpenAI-, Anthropic-, Gemini-, Bedrock-, Vertex AI-, Ollama-, Azure AI-, Cohere-,
//! Voyage AI- and Jina AI-compatible upstream for Tollgate's integration tests and load benchmark.
//!
//! It speaks the real OpenAI REST wire format (`chat.completion`, `chat.completion.chunk`,
//! `text_completion`, embeddings and model lists, `{"error":{...}}` bodies), Anthropic's
//! Messages API (`message`, named SSE events, `{"type":"error",...}` bodies) and Google
//! Gemini's Generative Language API (`GenerateContentResponse`, whole, as SSE or as a streamed
//! JSON array, embeddings, google.rpc `{"error":{code,message,status}}` bodies), Amazon
//! Bedrock Runtime's Converse API (JSON, and ConverseStream's binary event stream), Titan and
//! Cohere embeddings through `invoke`, and AWS's SigV4 check, plus Azure
//! OpenAI's deployment routes and Microsoft Entra ID's token endpoint, so the gateway is
//! exercised against what it will meet in production, and it can be scripted per request
//! with a [`Behavior`] (errors, delays, hangs, stalled or slow streams).
//!
//! Endpoints (the `/v1` ones also answer without the `/v1` prefix):
//!
//! | method | path                                   | answer                                  |
//! |--------|----------------------------------------|-----------------------------------------|
//! | POST   | /v1/chat/completions                   | `chat.completion`, or SSE `chat.completion.chunk`s |
//! | POST   | /v1/completions                        | `text_completion`, or SSE `text_completion`s |
//! | POST   | /v1/embeddings                         | `list` of `embedding`s                  |
//! | GET    | /v1/models                             | `list` with one `model`                 |
//! | GET    | /v1/models/{id}                        | that `model`                            |
//! | POST   | /v1/messages                           | Anthropic `message`, or its SSE events  |
//! | POST   | /v1/messages/count_tokens              | Anthropic `{"input_tokens": N}`         |
//! | POST   | /api/chat, /api/generate               | Ollama answer, or its NDJSON lines      |
//! | POST   | /api/embed                             | Ollama `{"embeddings": [[...]]}`        |
//! | POST   | /models/chat/completions, /models/embeddings | Azure AI Foundry: as `/v1/...`    |
//! | POST   | /anthropic/v1/messages[/count_tokens]  | Azure AI Foundry: Claude, as `/v1/messages` |
//! | POST   | /v1beta/models/{m}:generateContent     | Gemini `GenerateContentResponse`        |
//! | POST   | /v1beta/models/{m}:streamGenerateContent | its chunks: SSE with `?alt=sse`, else a JSON array |
//! | POST   | /v1beta/models/{m}:embedContent        | Gemini `{"embedding":{"values":[...]}}` |
//! | POST   | /v1beta/models/{m}:batchEmbedContents  | Gemini `{"embeddings":[...]}`           |
//! | POST   | /openai/deployments/{d}/chat/completions | Azure: as `/v1/chat/completions`      |
//! | POST   | /openai/deployments/{d}/completions    | Azure: as `/v1/completions`             |
//! | POST   | /openai/deployments/{d}/embeddings     | Azure: as `/v1/embeddings`              |
//! | POST   | /{tenant}/oauth2/v2.0/token            | Entra ID client-credentials token       |
//! | POST   | /model/{modelId}/converse              | Bedrock Converse answer                 |
//! | POST   | /model/{modelId}/converse-stream       | its events, AWS event-stream frames     |
//! | POST   | /model/{modelId}/invoke                | Titan / Cohere embeddings               |
//! | POST   | /                                      | STS `AssumeRoleWithWebIdentity` (XML)   |
//! | POST   | /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:{generateContent,streamGenerateContent,predict} | Vertex AI: Gemini, embeddings |
//! | POST   | /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:{rawPredict,streamRawPredict} | Vertex AI: Claude |
//! | POST   | /token                                 | Google OAuth 2.0 token (service-account JWT, refresh token) |
//! | GET    | /computeMetadata/v1/instance/service-accounts/default/token | GCE / GKE metadata server token |
//! | GET    | /computeMetadata/v1/project/project-id | the metadata server's project           |
//! | POST   | /v2/chat, /v2/embed, /v2/rerank        | Cohere v2: chat (or its SSE events), embeddings by type, rerank |
//! | POST   | /voyage/v1/{embeddings,rerank}         | Voyage AI (prefix `/voyage`)            |
//! | POST   | /jina/v1/{embeddings,rerank}           | Jina AI (prefix `/jina`)                |
//! | other  | /v1/messages/...                       | 404, Anthropic-shaped `not_found_error` |
//! | other  | /openai/...                            | 404, Azure-shaped error                 |
//! | other  | /model/...                             | 404, AWS `UnknownOperationException`    |
//! | other  | /api/...                               | 404, Ollama `{"error": "404 page not found"}` |
//! | other  | /v2/...                                | 404, Cohere-shaped `{"id","message"}`   |
//! | other  | /voyage/..., /jina/...                 | 404, `{"detail": "Not Found"}`          |
//! | other  | /v1beta/..., .../models/{m}:{other}, Vertex paths | 404, Google-shaped `NOT_FOUND` |
//! | other  |                                        | 404, OpenAI-shaped error                |
//!
//! ## Azure OpenAI's `/openai/deployments/{deployment}/...`
//!
//! Answered exactly as the matching OpenAI endpoint (bodies, streams, headers, behaviours),
//! except that: without a non-empty `api-version` query parameter the route does not exist,
//! a 404 `{"error":{"code":"404","message":"Resource not found"}}` that consumes no
//! behaviour, as an unknown path; after the behaviour (as on `/v1/messages`) a request
//! with neither a non-empty `api-key` header nor `Authorization: Bearer <token>` is a 401
//! `{"error":{"code":"401","message":"Access denied due to invalid subscription key..."}}`
//! (any key or token is accepted); and a body without `model` is answered with the
//! deployment name as its `model`.
//!
//! ## Entra ID's `/{tenant}/oauth2/v2.0/token`
//!
//! Takes an `application/x-www-form-urlencoded` body that must hold
//! `grant_type=client_credentials` and non-empty `client_id`, `client_secret` and `scope`,
//! and answers `{"token_type":"Bearer","expires_in":L,"ext_expires_in":L,
//! "access_token":"mock-entra-token-<n>"}` with `n` counting from 1
//! ([`MockUpstream::tokens_issued`]) and `L` from [`MockUpstream::set_token_lifetime`]
//! (default [`DEFAULT_TOKEN_LIFETIME_SECS`]); anything else is a 400
//! `{"error":"invalid_request","error_description":...}`. Behaviours do not apply to it and
//! it consumes none, so a test can script the model call's failure while the gateway
//! fetches its token.
//!
//! ## Anthropic's `/v1/messages`
//!
//! Answers carry a `request-id: req_<n>` header (instead of OpenAI's `x-request-id`), and
//! the mock's own errors are `{"type":"error","error":{"type","message"},"request_id"}`.
//! After the scripted behaviour (applied first, as on every endpoint) the request is
//! checked as Anthropic does: no (or an empty) `x-api-key` header is a 401
//! `authentication_error`; no `anthropic-version` header, a body that is not JSON, a
//! missing `model`, `max_tokens` (an integer of at least 1) or `messages` (a non-empty
//! array of `{role: "user"|"assistant", content: string or blocks}`) is a 400
//! `invalid_request_error`.
//!
//! **Tool-call rule** (the gateway's tests rely on it): when the request has a non-empty
//! `tools` array and its last message is a `user` message whose content holds no
//! `tool_result` block, the answer calls the *first* tool: content is a text block
//! [`TOOL_USE_TEXT`] then `{"type":"tool_use","id":"toolu_...","name":<first tool>,
//! "input":{"location":"Paris"}}`, and `stop_reason` is `tool_use`. Otherwise (no tools,
//! or the tool result is being returned) the answer is one text block [`REPLY_TEXT`] with
//! `stop_reason` `end_turn`. `tool_choice` is not looked at. `usage` is
//! `{input_tokens: PROMPT_TOKENS, output_tokens: COMPLETION_TOKENS}` plus zero cache counts.
//!
//! A stream (`"stream": true`) sends each `event: <name>\ndata: <json>\n\n` as its own
//! frame: `message_start` (empty content, `output_tokens` 1), `content_block_start` (index
//! 0, empty text), `ping`, one `content_block_delta` `text_delta` `tok{i} ` per content
//! chunk, `content_block_stop`; under the tool-call rule then a `tool_use` block at index
//! 1 (`content_block_start` with `input: {}`, two `input_json_delta`s whose `partial_json`
//! concatenates to [`TOOL_USE_INPUT_JSON`], `content_block_stop`); then `message_delta`
//! (stop reason, `output_tokens` = the chunk count) and `message_stop`.
//!
//! `POST /v1/messages/count_tokens` checks the same headers, refuses any field but `model`,
//! `messages`, `system`, `tools`, `tool_choice`, `thinking` and `mcp_servers` (as Anthropic
//! refuses `max_tokens` there: `<field>: Extra inputs are not permitted`), and answers
//! `{"input_tokens": N}` where N is the number of whitespace-separated words of every text
//! (system, text blocks, tool results) plus [`COUNT_TOKENS_PER_MESSAGE`] per message and
//! [`COUNT_TOKENS_PER_TOOL`] per tool.
//!
//! ## Ollama's `/api/chat`, `/api/generate`, `/api/embed`
//!
//! Errors are Ollama's `{"error": "text"}` (a scripted rate limit too). `model` is required
//! (400 `model is required`); [`OLLAMA_MISSING_MODEL`] is a model the mock has not pulled,
//! a 404 `model "…" not found, try pulling it first`. A `format` other than `"json"` or a
//! schema object, `options` that are not an object, images that are not base64, and tool
//! call `arguments` that are not an object (Ollama's Go decoder refuses JSON text there) are
//! 400s. `stream` defaults to true, as Ollama's does. The answer, by the first rule that
//! applies: on `/api/chat` with `tools` and a last message from the user, a call of the first
//! tool with arguments [`OLLAMA_TOOL_ARGUMENTS_JSON`] and empty content; `options.num_predict`
//! from 1 to [`OLLAMA_MAX_TOKENS_TRIGGER`]: [`OLLAMA_LENGTH_TEXT`], `done_reason: "length"`,
//! `eval_count` 1; a `format`: [`OLLAMA_JSON_REPLY_TEXT`]; else [`REPLY_TEXT`]. With `think`
//! on, `thinking` is [`OLLAMA_THINKING_TEXT`]. No messages (or an empty prompt) only loads the
//! model: `done_reason: "load"`, no counts. Counts are `prompt_eval_count` [`PROMPT_TOKENS`]
//! and `eval_count` [`COMPLETION_TOKENS`]. A stream (`application/x-ndjson`) sends each line
//! as its own frame (an "event" for [`Behavior::StallStream`]): the thinking, the text in the
//! behaviour's chunk count of pieces (or the tool call), then the `done: true` line with
//! `done_reason`, the counts and the durations. `/api/embed` answers the same vectors as
//! `/v1/embeddings`, `dimensions` long, with `prompt_eval_count` of
//! [`EMBEDDING_TOKENS_PER_INPUT`] per input.
//!
//! ## Azure AI Foundry's `/models/…` and `/anthropic/v1/…`
//!
//! `/models/chat/completions` and `/models/embeddings` are answered like Azure OpenAI's
//! deployment routes: without `api-version` a 404 that consumes no behaviour, after the
//! behaviour a 401 without an `api-key` or bearer credential, else the OpenAI answer.
//! `/anthropic/v1/messages` and `/anthropic/v1/messages/count_tokens` are Anthropic's routes
//! with the key in `api-key` instead of `x-api-key`.
//!
//! ## Gemini's `/v1beta/models/{model}:{method}`
//!
//! Also answered under `/v1/` and without a prefix; `{model}` is one path segment (dots and
//! dashes are fine, e.g. `gemini-2.0-flash`) and becomes the answer's `modelVersion`. Google's
//! own errors are `{"error":{"code":<http code>,"message":...,"status":<google.rpc code>}}`
//! (see [`gemini_error`]). After the scripted behaviour the key is checked: without a
//! non-empty `x-goog-api-key` header or `key=` query parameter the answer is Google's 403
//! `PERMISSION_DENIED` (any key is accepted; which one carried it is in
//! [`RecordedRequest::headers`] / [`RecordedRequest::query`]). A body that is not JSON, or
//! whose `contents` is missing or empty, is a 400 `INVALID_ARGUMENT`.
//!
//! `generateContent` answers one candidate, `{"content":{"parts":[...],"role":"model"},
//! "finishReason":...,"index":0}`, with `usageMetadata` `{promptTokenCount: PROMPT_TOKENS,
//! candidatesTokenCount: COMPLETION_TOKENS, totalTokenCount, promptTokensDetails}`,
//! `modelVersion` and a random `responseId`. Its parts, by the first rule that applies:
//!
//! * **function call** (mirrors Anthropic's tool-call rule): when `tools` declares a function
//!   and the last content is a user turn (or has no role) without a `functionResponse` part,
//!   and `toolConfig.functionCallingConfig.mode` is not `NONE`: `{"functionCall":{"name":
//!   <first declared function>,"args":{"location":"Paris"}}}` ([`GEMINI_FUNCTION_CALL_ARGS_JSON`]),
//!   `finishReason` `STOP` with Google's `finishMessage`;
//! * `generationConfig.maxOutputTokens` from 1 to [`GEMINI_MAX_TOKENS_TRIGGER`]: text
//!   [`GEMINI_MAX_TOKENS_TEXT`], `finishReason` `MAX_TOKENS`, one candidates token;
//! * `generationConfig.responseMimeType` `application/json`: text [`GEMINI_JSON_REPLY_TEXT`];
//! * otherwise text [`REPLY_TEXT`], `finishReason` `STOP`.
//!
//! With `generationConfig.thinkingConfig.includeThoughts` a `{"text":GEMINI_THOUGHT_TEXT,
//! "thought":true}` part comes first and `usageMetadata.thoughtsTokenCount` is
//! [`GEMINI_THOUGHTS_TOKENS`] (counted in the total).
//!
//! `streamGenerateContent` sends the same answer as `GenerateContentResponse` chunks, each
//! its own frame (and one "event" for [`Behavior::StallStream`]): `data: <json>\r\n\r\n`
//! (`text/event-stream`) with `?alt=sse`, else one `application/json` array streamed element
//! by element. A thought is a chunk of its own; the text is cut into the behaviour's chunk
//! count ([`DEFAULT_STREAM_CHUNKS`]) of consecutive pieces that concatenate to it; a function
//! call or a `MAX_TOKENS` answer is one chunk. As Google does, every chunk carries the running
//! `usageMetadata` (`candidatesTokenCount` = text chunks so far) and the same `responseId`,
//! and only the last one has `finishReason`.
//!
//! ## Vertex AI: `/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{m}:{method}`
//!
//! (also under `/v1beta1/`.) After the scripted behaviour (Google-shaped, as on Gemini's
//! routes) the request needs `Authorization: Bearer <token>`: none is a 401
//! `UNAUTHENTICATED`; a token the mock minted (`mock-google-token-<n>`,
//! `mock-metadata-token-<n>`) must be one it issued and not expired (else 401), and any
//! other token is taken on trust, as one obtained elsewhere. `publishers/google` answers
//! `generateContent` and `streamGenerateContent` (always SSE) like Gemini's routes, but,
//! like Vertex, a content without a `user` / `model` role is a 400; `predict` takes
//! `{"instances":[{"content"}],"parameters":{"outputDimensionality"}}` (at most
//! [`VERTEX_MAX_EMBEDDING_INSTANCES`]) and answers `{"predictions":[{"embeddings":{"values",
//! "statistics":{"truncated","token_count"}}}],"metadata":{"billableCharacterCount"}}` with
//! the same vectors as `/v1/embeddings`. `publishers/anthropic` answers `rawPredict` /
//! `streamRawPredict` as `/v1/messages` does (tool-call rule, events), named after the URL's
//! model, once the body has `anthropic_version: "vertex-2023-10-16"`, no `model`, and
//! `stream: true` exactly on `streamRawPredict` (else an Anthropic-shaped 400).
//!
//! `POST /token` is Google's OAuth endpoint: the `jwt-bearer` grant's assertion must be an
//! RS256 JWT signed by the test service account's key (`fixtures/`, test-only), issued by
//! [`TEST_SERVICE_ACCOUNT_EMAIL`] for `http://{Host}/token`, with the cloud-platform scope
//! and `iat`/`exp` at most an hour apart around now; a `refresh_token` grant needs
//! `client_id`, `client_secret` and `refresh_token`. It answers `{"access_token":
//! "mock-google-token-<n>","expires_in":L,"token_type":"Bearer"}`
//! ([`MockUpstream::google_tokens_issued`], `L` from [`MockUpstream::set_google_token_lifetime`])
//! or OAuth's 400 `{"error":"invalid_grant",...}`. The metadata routes need `Metadata-Flavor:
//! Google` (else 403) and answer `mock-metadata-token-<n>` tokens
//! ([`MockUpstream::metadata_tokens_issued`]) and [`METADATA_PROJECT`]. Like Entra's, these
//! routes take no behaviour.
//!
//! ## Cohere's `/v2/chat`, `/v2/embed`, `/v2/rerank`
//!
//! After the scripted behaviour (errors Cohere-shaped, `{"id","message"}`; see
//! [`cohere_error`]) a request needs `Authorization: Bearer <key>` (any key; none is a 401
//! `no api key supplied`), a JSON body with only the fields of Cohere's v2 schema (another
//! field, `model` missing, or a malformed message is a 400 `invalid request: ...`). Chat answers
//! a `ChatResponseV2` whose usage bills [`PROMPT_TOKENS`] in and reports
//! `tokens.input_tokens` = [`PROMPT_TOKENS`] + [`COHERE_TEMPLATE_TOKENS`]; with `tools`, a last
//! message from the user and `tool_choice` not `NONE` it calls the first two tools
//! ([`COHERE_TOOL_ARGUMENTS_JSON`], `tool_plan` [`COHERE_TOOL_PLAN`], `TOOL_CALL`); else JSON
//! mode answers [`COHERE_JSON_REPLY_TEXT`], `max_tokens` up to [`COHERE_MAX_TOKENS_TRIGGER`]
//! [`COHERE_MAX_TOKENS_TEXT`] with `MAX_TOKENS`, and anything else [`REPLY_TEXT`]; `thinking`
//! enabled adds a thinking item [`COHERE_THINKING_TEXT`]. With `stream: true` the same answer
//! comes as named events (`event: <type>` + data), one frame each: `message-start`, the text
//! in the behaviour's chunk count of `content-delta`s (or per tool call `tool-call-start`,
//! two `tool-call-delta`s, `tool-call-end`), and `message-end` with the finish reason and
//! usage. Embed takes 1 to [`COHERE_MAX_EMBED_TEXTS`] `texts` (or one data-URI image), a
//! required `input_type` and `embedding_types` `float` / `base64`, and answers
//! `embeddings_by_type` with the vectors of `/v1/embeddings`; rerank takes strings only and
//! bills one search unit per [`COHERE_DOCUMENTS_PER_SEARCH_UNIT`] documents.
//!
//! ## Voyage AI and Jina AI, under `/voyage/v1/` and `/jina/v1/`
//!
//! Below the prefix, each provider's own paths and bodies (see the `retrieval` module): a
//! bearer key is required (any), unknown fields are a 400, errors are `{"detail": ...}`.
//! Embeddings are the same vectors as `/v1/embeddings` with [`EMBEDDING_TOKENS_PER_INPUT`]
//! tokens per input; rerank scores documents by the query words they hold and bills
//! `2 × EMBEDDING_TOKENS_PER_INPUT` tokens per document.
//!
//! `embedContent` answers `{"embedding":{"values":[...]}}` and `batchEmbedContents`
//! `{"embeddings":[{"values":[...]},...]}`, one per `requests` entry (at most
//! [`GEMINI_MAX_BATCH_EMBED_REQUESTS`]): the same deterministic unit vectors as
//! `/v1/embeddings`, of `outputDimensionality` values (default [`EMBEDDING_DIMENSIONS`]).

mod anthropic;
mod azure;
mod bedrock;
mod body;
mod cohere;
mod gemini;
mod handler;
mod ollama;
mod retrieval;
mod vertex;
mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::{JoinHandle, JoinSet};

pub use anthropic::{COUNT_TOKENS_PER_MESSAGE, COUNT_TOKENS_PER_TOOL, TOOL_USE_INPUT_JSON, TOOL_USE_TEXT};
pub use azure::{DEFAULT_TOKEN_LIFETIME_SECS, TOKEN_PREFIX};
pub use bedrock::{
    BEDROCK_ACCESS_KEY_ID, BEDROCK_CACHE_READ_TOKENS, BEDROCK_CACHE_WRITE_TOKENS, BEDROCK_MAX_TOKENS_TEXT,
    BEDROCK_REASONING_SIGNATURE, BEDROCK_REASONING_TEXT, BEDROCK_SECRET_ACCESS_KEY, BEDROCK_TOOL_INPUT_JSON,
    BEDROCK_TOOL_USE_TEXT, COHERE_DIMENSIONS, COHERE_MAX_TEXTS, TITAN_V1_DIMENSIONS, TITAN_V2_DIMENSIONS,
};
pub use cohere::{
    COHERE_DOCUMENTS_PER_SEARCH_UNIT, COHERE_JSON_REPLY_TEXT, COHERE_MAX_EMBED_TEXTS, COHERE_MAX_TOKENS_TEXT,
    COHERE_MAX_TOKENS_TRIGGER, COHERE_TEMPLATE_TOKENS, COHERE_THINKING_TEXT, COHERE_TOOL_ARGUMENTS_JSON,
    COHERE_TOOL_PLAN, cohere_error,
};
pub use gemini::{
    GEMINI_FUNCTION_CALL_ARGS_JSON, GEMINI_JSON_REPLY_TEXT, GEMINI_MAX_BATCH_EMBED_REQUESTS,
    GEMINI_MAX_TOKENS_TEXT, GEMINI_MAX_TOKENS_TRIGGER, GEMINI_THOUGHT_TEXT, GEMINI_THOUGHTS_TOKENS,
};
pub use ollama::{
    OLLAMA_JSON_REPLY_TEXT, OLLAMA_LENGTH_TEXT, OLLAMA_MAX_TOKENS_TRIGGER, OLLAMA_MISSING_MODEL,
    OLLAMA_THINKING_TEXT, OLLAMA_TOOL_ARGUMENTS_JSON,
};
pub use retrieval::VOYAGE_MAX_INPUTS;
pub use vertex::{
    DEFAULT_GOOGLE_TOKEN_LIFETIME_SECS, GOOGLE_TOKEN_PREFIX, METADATA_PROJECT, METADATA_TOKEN_PREFIX,
    TEST_SERVICE_ACCOUNT_EMAIL, TEST_SERVICE_ACCOUNT_JSON, TEST_SERVICE_ACCOUNT_PROJECT,
    TEST_UNTRUSTED_KEY_PEM, VERTEX_MAX_EMBEDDING_INSTANCES, test_service_account,
};
pub use wire::{
    COMPLETION_TOKENS, DEFAULT_STREAM_CHUNKS, EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS_PER_INPUT,
    MAX_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_INPUTS, MOCK_MODEL_ID, PROMPT_TOKENS, REPLY_TEXT,
};

/// One request as the mock received it, recorded before any [`Behavior`] was applied.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The URI path only (no query string), e.g. `/v1/chat/completions`.
    pub path: String,
    /// The raw query string (without `?`), e.g. `api-version=2024-10-21`; `None` when the
    /// URI had none.
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    /// The full request body (empty when it could not be read).
    pub body: Bytes,
}

/// What the mock does with one request; queued with [`MockUpstream::push`].
#[derive(Debug, Clone)]
pub enum Behavior {
    /// A normal successful answer for the endpoint.
    Normal,
    /// Answer with this status and this exact body (content-type application/json).
    /// A status that is not a valid HTTP status code becomes 500.
    Error { status: u16, body: String },
    /// Like [`Behavior::Error`], with these headers added (an AWS error names its exception
    /// in `x-amzn-ErrorType`; see [`bedrock_error`]). Invalid header names or values are
    /// left out.
    ErrorWithHeaders { status: u16, headers: Vec<(String, String)>, body: String },
    /// On Bedrock's `converse-stream`: send the first `after_events` event frames, then an
    /// exception frame (`:message-type exception`, `:exception-type` this type, payload
    /// `{"message": ...}`) and end. Other endpoints answer normally.
    StreamException { after_events: usize, exception_type: String, message: String },
    /// Answer 429 with OpenAI's rate-limit error body and `retry-after: <seconds>`, as
    /// OpenAI does when a key is over its limit. On Gemini routes the body is Google's
    /// `RESOURCE_EXHAUSTED` error with a `google.rpc.RetryInfo` detail `retryDelay:
    /// "<seconds>s"` (how Google says when to retry), and on Bedrock routes AWS's
    /// `ThrottlingException`; the `retry-after` header is sent there too, so the behaviour
    /// means the same on every API.
    RateLimited { retry_after_secs: u64 },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Accept the request and never answer (until the client disconnects).
    Hang,
    /// For stream=true requests (and Gemini's `streamGenerateContent`): send the first
    /// `after_chunks` SSE events (OpenAI's role chunk, Anthropic's `message_start`, or one
    /// Gemini chunk, counts as one), then stall forever (connection stays open, no more
    /// bytes). A count covering the whole stream lets it finish. Non-stream requests are
    /// answered normally.
    StallStream { after_chunks: usize },
    /// For stream=true requests (and Gemini's `streamGenerateContent`): send each SSE event
    /// with this delay between events, using `chunks` content chunks. Non-stream requests are
    /// answered normally.
    SlowStream { chunk_delay: Duration, chunks: usize },
    /// OpenAI chat answers without `usage`, and streams without the usage chunk even when
    /// `stream_options.include_usage` asks for it: a server that reports no usage.
    NoUsage,
}

/// A [`Behavior::Error`] whose body is Anthropic's error shape,
/// `{"type":"error","error":{"type":<error_type>,"message":<message>}}`, for scripting
/// `/v1/messages` failures such as `anthropic_error(529, "overloaded_error", "Overloaded")`.
pub fn anthropic_error(status: u16, error_type: &str, message: &str) -> Behavior {
    Behavior::Error { status, body: anthropic::error_body(error_type, message, None) }
}

/// A [`Behavior::Error`] whose body is Google's error shape,
/// `{"error":{"code":<status>,"message":<message>,"status":<status_text>}}`, for scripting
/// Gemini failures such as `gemini_error(503, "UNAVAILABLE", "The model is overloaded.")`.
pub fn gemini_error(status: u16, status_text: &str, message: &str) -> Behavior {
    Behavior::Error { status, body: gemini::error_body(status, status_text, message) }
}

/// A [`Behavior::ErrorWithHeaders`] shaped as Bedrock's errors: `{"message": <message>}`
/// with `x-amzn-ErrorType: <exception>:http://internal.amazon.com/coral/com.amazon.bedrock/`,
/// e.g. `bedrock_error(400, "ValidationException", "Input is too long for requested model.")`.
pub fn bedrock_error(status: u16, exception: &str, message: &str) -> Behavior {
    Behavior::ErrorWithHeaders {
        status,
        headers: vec![("x-amzn-errortype".to_owned(), bedrock::error_type_header(exception))],
        body: serde_json::json!({"message": message}).to_string(),
    }
}

/// How a [`MockUpstream`] is run.
#[derive(Debug, Clone, Copy)]
pub struct MockOptions {
    /// Keep every request for [`MockUpstream::requests`]. The benchmark binary turns it off
    /// so the mock neither grows without bound nor pays for copying headers and bodies.
    pub record_requests: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions { record_requests: true }
    }
}

/// State shared between the handle the test holds and every connection task.
pub(crate) struct Shared {
    record_requests: bool,
    requests: Mutex<Vec<RecordedRequest>>,
    behaviors: Mutex<VecDeque<Behavior>>,
    /// Mirror of `behaviors.len()` so the hot path skips the lock when nothing is scripted.
    queued: AtomicUsize,
    next_request_id: AtomicU64,
    streams_cancelled: AtomicUsize,
    requests_abandoned: AtomicUsize,
    tokens_issued: AtomicUsize,
    sts_issued: AtomicUsize,
    /// `expires_in` of the next issued Entra token, in seconds.
    token_lifetime: AtomicU64,
    /// Google tokens issued by the OAuth endpoint and the metadata server.
    vertex: vertex::VertexState,
}

/// Locks a mutex even if a panicking thread poisoned it: the data (a queue, a log) stays
/// consistent after any single push or pop, and the mock must keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(options: MockOptions) -> Self {
        Shared {
            record_requests: options.record_requests,
            requests: Mutex::new(Vec::new()),
            behaviors: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            next_request_id: AtomicU64::new(1),
            streams_cancelled: AtomicUsize::new(0),
            requests_abandoned: AtomicUsize::new(0),
            tokens_issued: AtomicUsize::new(0),
            sts_issued: AtomicUsize::new(0),
            token_lifetime: AtomicU64::new(DEFAULT_TOKEN_LIFETIME_SECS),
            vertex: vertex::VertexState::new(),
        }
    }

    pub(crate) fn records(&self) -> bool {
        self.record_requests
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    pub(crate) fn next_behavior(&self) -> Behavior {
        if self.queued.load(Ordering::Acquire) == 0 {
            return Behavior::Normal;
        }
        let mut queue = lock(&self.behaviors);
        let next = queue.pop_front();
        self.queued.store(queue.len(), Ordering::Release);
        next.unwrap_or(Behavior::Normal)
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn stream_cancelled(&self) {
        self.streams_cancelled.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn request_abandoned(&self) {
        self.requests_abandoned.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts an issued token and returns its number, from 1.
    pub(crate) fn issue_token(&self) -> usize {
        self.tokens_issued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Counts an issued set of STS keys and returns its number, from 1.
    pub(crate) fn issue_sts_credentials(&self) -> usize {
        self.sts_issued.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(crate) fn token_lifetime(&self) -> u64 {
        self.token_lifetime.load(Ordering::Acquire)
    }
}

/// A running mock server. Dropping it shuts the server down: the accept loop and every
/// open connection are aborted.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Binds 127.0.0.1:0 and serves on a tokio task (HTTP/1.1 keep-alive, via hyper-util
    /// auto builder so h2c works too), recording every request.
    pub async fn start() -> MockUpstream {
        Self::start_with(MockOptions::default()).await
    }

    /// Like [`MockUpstream::start`], with options.
    ///
    /// # Panics
    /// If no port can be bound on 127.0.0.1, which only a broken test machine causes.
    pub async fn start_with(options: MockOptions) -> MockUpstream {
        match Self::bind("127.0.0.1:0", options).await {
            Ok(mock) => mock,
            Err(err) => panic!("mock upstream could not bind 127.0.0.1:0: {err}"),
        }
    }

    /// Binds the given address and serves on a tokio task; used by the binary, which needs
    /// a chosen host and port and a bind error it can report instead of a panic.
    pub async fn bind(addr: impl ToSocketAddrs, options: MockOptions) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options));
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(MockUpstream { addr, shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a behaviour for the next request that reaches a known endpoint (with or
    /// without the `/v1` prefix). FIFO; each scripted behaviour is consumed by one request;
    /// with the queue empty requests get [`Behavior::Normal`]. Unknown paths (and Azure
    /// routes without `api-version`) get their 404 without consuming anything, and the
    /// Entra token endpoint never consumes a behaviour.
    pub fn push(&self, behavior: Behavior) {
        let mut queue = lock(&self.shared.behaviors);
        queue.push_back(behavior);
        self.shared.queued.store(queue.len(), Ordering::Release);
    }

    /// Every request received so far, in order (empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Number of streaming responses whose body was dropped (connection closed by the
    /// client) before the stream was finished.
    pub fn streams_cancelled(&self) -> usize {
        self.shared.streams_cancelled.load(Ordering::Acquire)
    }

    /// Number of requests whose handling was abandoned because the client went away while
    /// the mock was hanging or delaying ([`Behavior::Hang`] / [`Behavior::Delay`]).
    pub fn requests_abandoned(&self) -> usize {
        self.shared.requests_abandoned.load(Ordering::Acquire)
    }

    /// Number of Entra ID tokens issued by `/{tenant}/oauth2/v2.0/token`.
    pub fn tokens_issued(&self) -> usize {
        self.shared.tokens_issued.load(Ordering::Acquire)
    }

    /// Number of temporary key sets issued by STS's `AssumeRoleWithWebIdentity` (`POST /`).
    pub fn sts_credentials_issued(&self) -> usize {
        self.shared.sts_issued.load(Ordering::Acquire)
    }

    /// Sets the `expires_in` (and `ext_expires_in`) of tokens issued from now on, so a
    /// gateway test can make its cached token expire quickly. Default
    /// [`DEFAULT_TOKEN_LIFETIME_SECS`].
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.shared.token_lifetime.store(seconds, Ordering::Release);
    }

    /// Waits (polling every 10 ms, at most `limit`) until `cond(self)` is true; returns
    /// whether it became true.
    pub async fn wait_until(&self, limit: Duration, cond: impl Fn(&MockUpstream) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks in a JoinSet, so aborting it also
        // aborts (and closes) every open connection.
        self.server.abort();
    }
}

/// Accepts connections until aborted; each connection is served on its own task.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    // Accept errors are transient (e.g. out of file descriptors under load);
                    // back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                // SSE chunks and small JSON answers must leave immediately, not wait for
                // Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let builder = builder.clone();
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        handler::handle(Arc::clone(&shared), request)
                    });
                    // A connection error only means this client went away or spoke
                    // garbage; there is nothing to do about it here.
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
