//! Amazon Bedrock Runtime's wire format: `Converse` JSON answers, `ConverseStream`'s binary
//! event stream (`application/vnd.amazon.eventstream`, both CRC32s computed), `InvokeModel`
//! for Titan and Cohere embeddings, AWS's `{"message": ...}` errors with `x-amzn-ErrorType`,
//! and a SigV4 check that recomputes the signature from the request as AWS does.
//!
//! Field names were checked against the Bedrock Runtime API reference (Converse,
//! ConverseStream and its ConverseStreamOutput events, ContentBlock, ToolConfiguration,
//! STS's AssumeRoleWithWebIdentity (query form in, XML out),
//! TokenUsage, StopReason) and the model parameter pages for Titan Text Embeddings and
//! Cohere Embed; the event-stream framing against AWS's event-stream encoding (prelude,
//! typed headers, payload, CRC32s); SigV4 against AWS's signing documentation. As real
//! ConverseStream events do, each payload carries a `p` padding field.

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::wire::{
    COMPLETION_TOKENS, EMBEDDING_TOKENS_PER_INPUT, PROMPT_TOKENS, REPLY_TEXT, embedding_vector, random_id_of,
};

/// The access key the mock accepts in SigV4 signatures, with [`BEDROCK_SECRET_ACCESS_KEY`].
pub const BEDROCK_ACCESS_KEY_ID: &str = "AKIDMOCKBEDROCK0001";
/// The secret the mock recomputes signatures with.
pub const BEDROCK_SECRET_ACCESS_KEY: &str = "mock/bedrock+secret/KEY0001";
/// The text block sent before tool calls that the model was not forced to make.
pub const BEDROCK_TOOL_USE_TEXT: &str = "calling a tool";
/// The `input` of every `toolUse` block, as serialized (compact).
pub const BEDROCK_TOOL_INPUT_JSON: &str = r#"{"location":"Paris"}"#;
/// The reasoning text sent when `additionalModelRequestFields.thinking.type` is `enabled`.
pub const BEDROCK_REASONING_TEXT: &str = "mock reasoning";
/// The signature of that reasoning.
pub const BEDROCK_REASONING_SIGNATURE: &str = "mock-signature";
/// `inferenceConfig.maxTokens` of 1 cuts the answer to this text, `stopReason: max_tokens`.
pub const BEDROCK_MAX_TOKENS_TEXT: &str = "mock";
/// `cacheReadInputTokens` and `cacheWriteInputTokens` of a request with a `cachePoint`.
pub const BEDROCK_CACHE_READ_TOKENS: u64 = 6;
pub const BEDROCK_CACHE_WRITE_TOKENS: u64 = 3;
/// Dimensions of Titan v1's vectors, Titan v2's default, and Cohere's.
pub const TITAN_V1_DIMENSIONS: usize = 1536;
pub const TITAN_V2_DIMENSIONS: usize = 1024;
pub const COHERE_DIMENSIONS: usize = 1024;
/// Most `texts` in one Cohere call, as Bedrock allows.
pub const COHERE_MAX_TEXTS: usize = 96;

/// Bedrock's operations on `/model/{modelId}/{operation}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Converse,
    ConverseStream,
    Invoke,
}

/// `/model/{modelId}/{operation}` with the model id as one (percent-encoded) segment.
pub(crate) fn route(path: &str) -> Option<(&str, Op)> {
    let (model, op) = path.strip_prefix("/model/")?.split_once('/')?;
    if model.is_empty() {
        return None;
    }
    let op = match op {
        "converse" => Op::Converse,
        "converse-stream" => Op::ConverseStream,
        "invoke" => Op::Invoke,
        _ => return None,
    };
    Some((model, op))
}

/// Whether a path is Bedrock-shaped, so an unknown operation gets AWS's 404.
pub(crate) fn is_bedrock_path(path: &str) -> bool {
    path.starts_with("/model/")
}

/// An AWS error: the status, the exception named in `x-amzn-ErrorType`, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsError {
    pub status: u16,
    pub exception: &'static str,
    pub message: String,
}

impl AwsError {
    pub(crate) fn new(status: u16, exception: &'static str, message: impl Into<String>) -> Self {
        AwsError { status, exception, message: message.into() }
    }

    fn validation(message: impl Into<String>) -> Self {
        AwsError::new(400, "ValidationException", message)
    }
}

/// AWS's error body.
pub(crate) fn error_body(message: &str) -> Bytes {
    Bytes::from(json!({"message": message}).to_string())
}

/// The `x-amzn-ErrorType` value of an exception, as Bedrock writes it.
pub(crate) fn error_type_header(exception: &str) -> String {
    format!("{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/")
}

/// The percent-decoded model id.
pub(crate) fn decode_model(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// authentication

/// What the SigV4 check needs from a request.
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The URI's authority, for HTTP/2 requests that carry no `host` header.
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

/// Accepts a Bedrock API key (`Authorization: Bearer <key>`, any non-empty key) or a SigV4
/// signature by [`BEDROCK_ACCESS_KEY_ID`] that the mock recomputes; answers as AWS does
/// otherwise (403 with the exception AWS names).
pub(crate) fn authenticate(request: &Signed<'_>) -> Result<(), AwsError> {
    let Some(authorization) = request.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
    else {
        return Err(AwsError::new(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return if token.trim().is_empty() {
            Err(AwsError::new(
                403,
                "UnrecognizedClientException",
                "Invalid API Key format: Must start with pre-defined prefix",
            ))
        } else {
            Ok(())
        };
    }
    verify_sigv4(request, authorization)
}

fn incomplete(message: impl Into<String>) -> AwsError {
    AwsError::new(403, "IncompleteSignatureException", message)
}

fn verify_sigv4(request: &Signed<'_>, authorization: &str) -> Result<(), AwsError> {
    let (algorithm, fields) = authorization.split_once(' ').unwrap_or((authorization, ""));
    if algorithm != "AWS4-HMAC-SHA256" {
        return Err(incomplete(format!("Unsupported AWS 'algorithm': '{algorithm}'")));
    }
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("Credential", value)) => credential = Some(value),
            Some(("SignedHeaders", value)) => signed_headers = Some(value),
            Some(("Signature", value)) => signature = Some(value),
            _ => {
                return Err(incomplete(format!(
                    "Authorization header has a malformed field '{}'",
                    field.trim()
                )));
            }
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature)
    else {
        return Err(incomplete(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminal] = scope[..] else {
        return Err(incomplete(format!(
            "Credential '{credential}' is not key/date/region/service/aws4_request"
        )));
    };
    if terminal != "aws4_request" || date.len() != 8 || region.is_empty() {
        return Err(incomplete(format!("Credential '{credential}' is malformed")));
    }
    if service != "bedrock" {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: 'bedrock'. (got '{service}')"),
        ));
    }
    let amz_date = request.headers.get("x-amz-date").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !amz_date.starts_with(date) || amz_date.len() != 16 {
        return Err(incomplete(format!(
            "x-amz-date '{amz_date}' does not match the credential date '{date}'"
        )));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") || names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(incomplete(format!(
            "SignedHeaders '{signed_headers}' must be sorted and include host and x-amz-date"
        )));
    }
    if access_key != BEDROCK_ACCESS_KEY_ID {
        return Err(AwsError::new(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }

    let mut canonical_headers = String::new();
    for name in &names {
        let value = if *name == "host" {
            request
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or(request.authority)
                .map(str::to_owned)
        } else {
            let values: Vec<String> = request
                .headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        let value =
            value.ok_or_else(|| incomplete(format!("signed header '{name}' is not in the request")))?;
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let payload_hash = match request.headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) {
        Some(declared) => declared.to_owned(),
        None => hex(&Sha256::digest(request.body)),
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        request.method,
        uri_encode(request.path, false),
        canonical_query(request.query),
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{BEDROCK_SECRET_ACCESS_KEY}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if expected != signature {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this branch cannot be reached.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&[]).expect("an empty HMAC key is valid")
    });
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SigV4's URI encoding: every byte but the unreserved ones (and `/` in a path) as `%XX`.
/// Applied to the path as sent, so an already encoded `%3A` becomes `%253A`: services other
/// than S3 sign the path encoded twice.
fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (byte == b'/' && !encode_slash)
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (uri_encode(&decode_model(key), true), uri_encode(&decode_model(value), true))
        })
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

// ---------------------------------------------------------------------------------------
// Converse

/// What the answer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Calls of these tools; `forced` (a named `toolChoice`) sends no text before them.
    Tools {
        names: Vec<String>,
        forced: bool,
    },
    Text,
    Truncated,
}

/// The answer a Converse request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    kind: Kind,
    reasoning: bool,
    cached: bool,
}

const CONTENT_KINDS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
];

/// Checks a Converse request as Bedrock does and decides the answer:
///
/// * **tool calls** when `toolConfig.tools` is non-empty and the last message is a user turn
///   holding no `toolResult`: a named `toolChoice.tool` calls that tool alone (no text);
///   `toolChoice.any` calls every declared tool, in parallel, after [`BEDROCK_TOOL_USE_TEXT`];
///   otherwise the first tool after that text. Each call's input is [`BEDROCK_TOOL_INPUT_JSON`]
///   and `stopReason` is `tool_use`;
/// * `inferenceConfig.maxTokens` of 1: [`BEDROCK_MAX_TOKENS_TEXT`], `max_tokens`;
/// * otherwise [`REPLY_TEXT`], `end_turn`.
///
/// A `reasoningContent` block ([`BEDROCK_REASONING_TEXT`]) comes first when
/// `additionalModelRequestFields.thinking.type` is `enabled`; a `cachePoint` anywhere in the
/// request adds cache read and write counts to `usage`.
pub(crate) fn converse_reply(body: &[u8]) -> Result<Reply, AwsError> {
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        AwsError::new(400, "SerializationException", format!("Unable to parse the request body: {e}"))
    })?;
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => {
            return Err(AwsError::validation(
                "1 validation error detected: Value at 'messages' failed to satisfy constraint: Member must not be null and must contain at least one message",
            ));
        }
    };
    let mut tool_blocks = false;
    let mut cached = false;
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "user" | "assistant") {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{role}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                i + 1
            )));
        }
        if i == 0 && role != "user" {
            return Err(AwsError::validation(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        let blocks = match message.get("content") {
            Some(Value::Array(blocks)) if !blocks.is_empty() => blocks,
            _ => {
                return Err(AwsError::validation(format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                )));
            }
        };
        for (j, block) in blocks.iter().enumerate() {
            let keys: Vec<&String> = block.as_object().map(|b| b.keys().collect()).unwrap_or_default();
            let [key] = keys[..] else {
                return Err(AwsError::validation(format!(
                    "messages.{i}.content.{j}: a ContentBlock must hold exactly one member"
                )));
            };
            if !CONTENT_KINDS.contains(&key.as_str()) {
                return Err(AwsError::validation(format!(
                    "messages.{i}.content.{j}: unknown ContentBlock member '{key}'"
                )));
            }
            match key.as_str() {
                "text" if block["text"].as_str().is_none_or(|t| t.trim().is_empty()) => {
                    return Err(AwsError::validation(format!(
                        "The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."
                    )));
                }
                "image" => {
                    let format = block.pointer("/image/format").and_then(Value::as_str).unwrap_or_default();
                    let bytes =
                        block.pointer("/image/source/bytes").and_then(Value::as_str).unwrap_or_default();
                    if !matches!(format, "png" | "jpeg" | "gif" | "webp") || bytes.is_empty() {
                        return Err(AwsError::validation(format!(
                            "messages.{i}.content.{j}.image: format must be png, jpeg, gif or webp, with source.bytes"
                        )));
                    }
                }
                "toolUse" | "toolResult" => tool_blocks = true,
                "cachePoint" => cached = true,
                _ => {}
            }
        }
    }
    if let Some(system) = request.get("system").and_then(Value::as_array) {
        cached |= system.iter().any(|block| block.get("cachePoint").is_some());
    }
    let tools: Vec<String> = request
        .pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| tool.pointer("/toolSpec/name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    if tool_blocks && request.get("toolConfig").is_none() {
        return Err(AwsError::validation(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        ));
    }
    if let Some(max) = request.pointer("/inferenceConfig/maxTokens")
        && max.as_u64().is_none_or(|m| m < 1)
    {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{max}' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1"
        )));
    }
    let choice = request.pointer("/toolConfig/toolChoice");
    let forced = choice.and_then(|c| c.pointer("/tool/name")).and_then(Value::as_str);
    if let Some(name) = forced
        && !tools.iter().any(|t| t == name)
    {
        return Err(AwsError::validation(format!(
            "The tool '{name}' named in toolChoice is not in toolConfig.tools."
        )));
    }
    let last = messages.last().unwrap_or(&Value::Null);
    let answered = last
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("toolResult").is_some()));
    let wants_tools =
        !tools.is_empty() && last.get("role").and_then(Value::as_str) == Some("user") && !answered;
    let kind = if wants_tools {
        match forced {
            Some(name) => Kind::Tools { names: vec![name.to_owned()], forced: true },
            None if choice.and_then(|c| c.get("any")).is_some() => {
                Kind::Tools { names: tools, forced: false }
            }
            None => Kind::Tools { names: vec![tools[0].clone()], forced: false },
        }
    } else if request.pointer("/inferenceConfig/maxTokens").and_then(Value::as_u64) == Some(1) {
        Kind::Truncated
    } else {
        Kind::Text
    };
    let reasoning = request.pointer("/additionalModelRequestFields/thinking/type").and_then(Value::as_str)
        == Some("enabled");
    Ok(Reply { kind, reasoning, cached })
}

impl Reply {
    fn output_tokens(&self) -> u64 {
        match self.kind {
            Kind::Truncated => 1,
            _ => COMPLETION_TOKENS,
        }
    }

    fn stop_reason(&self) -> &'static str {
        match self.kind {
            Kind::Tools { .. } => "tool_use",
            Kind::Truncated => "max_tokens",
            Kind::Text => "end_turn",
        }
    }

    fn text(&self) -> Option<&'static str> {
        match &self.kind {
            Kind::Tools { forced: true, .. } => None,
            Kind::Tools { forced: false, .. } => Some(BEDROCK_TOOL_USE_TEXT),
            Kind::Truncated => Some(BEDROCK_MAX_TOKENS_TEXT),
            Kind::Text => Some(REPLY_TEXT),
        }
    }

    fn tool_names(&self) -> &[String] {
        match &self.kind {
            Kind::Tools { names, .. } => names,
            _ => &[],
        }
    }

    fn usage(&self) -> Value {
        let output = self.output_tokens();
        let mut usage = json!({"inputTokens": PROMPT_TOKENS, "outputTokens": output});
        let mut total = PROMPT_TOKENS + output;
        if self.cached {
            usage["cacheReadInputTokens"] = json!(BEDROCK_CACHE_READ_TOKENS);
            usage["cacheWriteInputTokens"] = json!(BEDROCK_CACHE_WRITE_TOKENS);
            total += BEDROCK_CACHE_READ_TOKENS + BEDROCK_CACHE_WRITE_TOKENS;
        }
        usage["totalTokens"] = json!(total);
        usage
    }
}

fn tool_use_id() -> String {
    random_id_of("tooluse_", 22)
}

fn tool_input() -> Value {
    serde_json::from_str(BEDROCK_TOOL_INPUT_JSON).unwrap_or(Value::Null)
}

/// The body of a `Converse` answer.
pub(crate) fn converse(reply: &Reply) -> serde_json::Result<Vec<u8>> {
    let mut content = Vec::new();
    if reply.reasoning {
        content.push(json!({"reasoningContent": {"reasoningText": {"text": BEDROCK_REASONING_TEXT, "signature": BEDROCK_REASONING_SIGNATURE}}}));
    }
    if let Some(text) = reply.text() {
        content.push(json!({"text": text}));
    }
    for name in reply.tool_names() {
        content.push(json!({"toolUse": {"toolUseId": tool_use_id(), "name": name, "input": tool_input()}}));
    }
    serde_json::to_vec(&json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": reply.stop_reason(),
        "usage": reply.usage(),
        "metrics": {"latencyMs": 1},
    }))
}

/// An exception the stream sends after `after_events` events, ending it.
#[derive(Debug, Clone)]
pub(crate) struct StreamFault {
    pub after_events: usize,
    pub exception_type: String,
    pub message: String,
}

/// Real ConverseStream payloads carry a `p` field of padding letters, so that the sizes of
/// encrypted frames do not reveal the tokens.
fn padded(mut payload: Value) -> Value {
    if let Some(object) = payload.as_object_mut() {
        let pad: String = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"
            [..(object.len() * 7) % 40 + 4]
            .to_owned();
        object.insert("p".into(), json!(pad));
    }
    payload
}

/// `text` cut into `n` consecutive pieces that concatenate to it.
fn pieces(text: &str, n: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text.char_indices().map(|(at, _)| at).chain([text.len()]).collect();
    let chars = bounds.len() - 1;
    let n = n.max(1);
    (0..n)
        .map(|i| &text[bounds[i * chars / n]..bounds[(i + 1) * chars / n]])
        .filter(|p| !p.is_empty())
        .collect()
}

/// The frames of a `ConverseStream` answer, each one body frame: `messageStart`; the
/// reasoning (text, then signature) when asked for; the text cut into `chunks`
/// `contentBlockDelta`s; for each tool call `contentBlockStart` (id and name), the input in
/// two `contentBlockDelta`s, `contentBlockStop`; `messageStop`; `metadata` with the usage.
/// With a fault, its exception replaces everything after `after_events` events.
pub(crate) fn converse_stream(reply: &Reply, chunks: usize, fault: Option<&StreamFault>) -> Vec<Bytes> {
    let mut events: Vec<(&'static str, Value)> = vec![("messageStart", json!({"role": "assistant"}))];
    let mut index = 0;
    let delta = |index: usize, delta: Value| json!({"contentBlockIndex": index, "delta": delta});
    if reply.reasoning {
        events.push((
            "contentBlockDelta",
            delta(index, json!({"reasoningContent": {"text": BEDROCK_REASONING_TEXT}})),
        ));
        events.push((
            "contentBlockDelta",
            delta(index, json!({"reasoningContent": {"signature": BEDROCK_REASONING_SIGNATURE}})),
        ));
        events.push(("contentBlockStop", json!({"contentBlockIndex": index})));
        index += 1;
    }
    if let Some(text) = reply.text() {
        for piece in pieces(text, chunks) {
            events.push(("contentBlockDelta", delta(index, json!({"text": piece}))));
        }
        events.push(("contentBlockStop", json!({"contentBlockIndex": index})));
        index += 1;
    }
    for name in reply.tool_names() {
        events.push((
            "contentBlockStart",
            json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_use_id(), "name": name}}}),
        ));
        let (head, tail) = BEDROCK_TOOL_INPUT_JSON.split_at(BEDROCK_TOOL_INPUT_JSON.len() / 2);
        for part in [head, tail] {
            events.push(("contentBlockDelta", delta(index, json!({"toolUse": {"input": part}}))));
        }
        events.push(("contentBlockStop", json!({"contentBlockIndex": index})));
        index += 1;
    }
    events.push(("messageStop", json!({"stopReason": reply.stop_reason()})));
    events.push(("metadata", json!({"usage": reply.usage(), "metrics": {"latencyMs": 1}})));

    let mut frames: Vec<Bytes> = events
        .into_iter()
        .map(|(event_type, payload)| {
            let payload = padded(payload).to_string();
            encode_message(
                &[
                    (":event-type", event_type),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                payload.as_bytes(),
            )
        })
        .collect();
    if let Some(fault) = fault {
        frames.truncate(fault.after_events);
        let payload = json!({"message": fault.message}).to_string();
        frames.push(encode_message(
            &[
                (":exception-type", fault.exception_type.as_str()),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            payload.as_bytes(),
        ));
    }
    frames
}

/// One event-stream message with string headers (value type 7): prelude (total length,
/// headers length, CRC32 of those), headers, payload, CRC32 of all that.
pub(crate) fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = 16 + head.len() + payload.len();
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&(total as u32).to_be_bytes());
    frame.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&prelude_crc.to_be_bytes());
    frame.extend_from_slice(&head);
    frame.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&message_crc.to_be_bytes());
    Bytes::from(frame)
}

// ---------------------------------------------------------------------------------------
// STS AssumeRoleWithWebIdentity

/// `expires in` of the temporary keys STS issues when the request names no duration.
const STS_DEFAULT_SECONDS: u64 = 3600;

/// An STS error: status, `Code`, `Message`.
pub(crate) type StsError = (u16, &'static str, String);

/// STS's answer to `POST /` with `Action=AssumeRoleWithWebIdentity`: temporary keys the Bedrock
/// routes accept ([`BEDROCK_ACCESS_KEY_ID`], [`BEDROCK_SECRET_ACCESS_KEY`]) and session token
/// `mock-sts-session-<n>`. The form must name `Version=2011-06-15`, a role ARN
/// (`arn:aws:iam::<12 digits>:role/...`), a session name and a token.
pub(crate) fn assume_role_with_web_identity(body: &[u8], n: usize) -> Result<String, StsError> {
    let text =
        std::str::from_utf8(body).map_err(|_| (400, "MalformedInput", "the body is not UTF-8".to_owned()))?;
    let mut form = std::collections::HashMap::new();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = crate::azure::form_decode(key).zip(crate::azure::form_decode(value));
        let (key, value) = decoded.ok_or((400, "MalformedInput", format!("malformed form field '{key}'")))?;
        form.entry(key).or_insert(value);
    }
    let get = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    match get("Action") {
        Some("AssumeRoleWithWebIdentity") => {}
        other => {
            return Err((
                400,
                "InvalidAction",
                format!("Could not find operation {} for version 2011-06-15", other.unwrap_or("")),
            ));
        }
    }
    if get("Version") != Some("2011-06-15") {
        return Err((400, "InvalidParameterValue", "Version must be 2011-06-15".to_owned()));
    }
    for name in ["RoleArn", "RoleSessionName", "WebIdentityToken"] {
        if get(name).is_none() {
            return Err((400, "MissingParameter", format!("The request must contain the parameter {name}")));
        }
    }
    let role = get("RoleArn").unwrap_or_default();
    let account = role.strip_prefix("arn:aws:iam::").and_then(|rest| rest.split_once(":role/"));
    if !account.is_some_and(|(id, name)| {
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
    }) {
        return Err((400, "ValidationError", format!("{role} is invalid")));
    }
    let seconds = match get("DurationSeconds") {
        None => STS_DEFAULT_SECONDS,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if (900..=43_200).contains(&seconds) => seconds,
            _ => {
                return Err((
                    400,
                    "ValidationError",
                    format!("DurationSeconds '{text}' is not between 900 and 43200"),
                ));
            }
        },
    };
    let expiration = iso8601(crate::wire::unix_now() + seconds);
    let session = get("RoleSessionName").unwrap_or_default();
    Ok(format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleWithWebIdentityResult>\n    <Audience>sts.amazonaws.com</Audience>\n    <AssumedRoleUser>\n      <AssumedRoleId>AROAMOCK:{session}</AssumedRoleId>\n      <Arn>{role}/{session}</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <SessionToken>mock-sts-session-{n}</SessionToken>\n      <SecretAccessKey>{BEDROCK_SECRET_ACCESS_KEY}</SecretAccessKey>\n      <Expiration>{expiration}</Expiration>\n      <AccessKeyId>{BEDROCK_ACCESS_KEY_ID}</AccessKeyId>\n    </Credentials>\n  </AssumeRoleWithWebIdentityResult>\n  <ResponseMetadata>\n    <RequestId>mock-sts-{n}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleWithWebIdentityResponse>\n"
    ))
}

/// STS's XML error body.
pub(crate) fn sts_error_body(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n</ErrorResponse>\n",
        message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    )
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date, proleptic
/// Gregorian).
fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

// ---------------------------------------------------------------------------------------
// InvokeModel (embeddings)

/// An `invoke` answer: the body and the input token count (sent as
/// `X-Amzn-Bedrock-Input-Token-Count`).
pub(crate) fn invoke(model: &str, body: &[u8]) -> Result<(Vec<u8>, u64), AwsError> {
    let request: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        AwsError::validation(format!(
            "Malformed input request: {e}, please reformat your input and try again."
        ))
    })?;
    let unexpected = |allowed: &[&str]| {
        request.keys().find(|key| !allowed.contains(&key.as_str())).map(|key| {
            AwsError::validation(format!(
                "Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input and try again."
            ))
        })
    };
    if model.contains("amazon.titan-embed") {
        let v2 = model.contains("titan-embed-text-v2");
        let allowed: &[&str] =
            if v2 { &["inputText", "dimensions", "normalize", "embeddingTypes"] } else { &["inputText"] };
        if let Some(error) = unexpected(allowed) {
            return Err(error);
        }
        let text = request.get("inputText").and_then(Value::as_str).unwrap_or_default();
        if text.is_empty() {
            return Err(AwsError::validation(
                "Malformed input request: #: required key [inputText] not found, please reformat your input and try again.",
            ));
        }
        let dimensions = match request.get("dimensions") {
            None => {
                if v2 {
                    TITAN_V2_DIMENSIONS
                } else {
                    TITAN_V1_DIMENSIONS
                }
            }
            Some(d) => match d.as_u64() {
                Some(d @ (256 | 512 | 1024)) => d as usize,
                _ => {
                    return Err(AwsError::validation(
                        "Malformed input request: #/dimensions: 256, 512 or 1024 expected, please reformat your input and try again.",
                    ));
                }
            },
        };
        let vector = embedding_vector(text.len() % 16, dimensions);
        let mut answer = json!({"embedding": vector, "inputTextTokenCount": EMBEDDING_TOKENS_PER_INPUT});
        if v2 {
            answer["embeddingsByType"] = json!({"float": answer["embedding"].clone()});
        }
        let body = serde_json::to_vec(&answer)
            .map_err(|e| AwsError::new(500, "InternalServerException", e.to_string()))?;
        return Ok((body, EMBEDDING_TOKENS_PER_INPUT));
    }
    if model.contains("cohere.embed") {
        if let Some(error) = unexpected(&["texts", "input_type", "truncate", "embedding_types", "images"]) {
            return Err(error);
        }
        let texts: Vec<&str> = request
            .get("texts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if texts.is_empty() || texts.len() > COHERE_MAX_TEXTS {
            return Err(AwsError::validation(format!(
                "Malformed input request: #/texts: expected between 1 and {COHERE_MAX_TEXTS} texts, please reformat your input and try again."
            )));
        }
        match request.get("input_type").and_then(Value::as_str) {
            Some("search_document" | "search_query" | "classification" | "clustering") => {}
            _ => {
                return Err(AwsError::validation(
                    "Malformed input request: #/input_type: search_document, search_query, classification or clustering expected, please reformat your input and try again.",
                ));
            }
        }
        let embeddings: Vec<Vec<f32>> =
            (0..texts.len()).map(|i| embedding_vector(i, COHERE_DIMENSIONS)).collect();
        let tokens = EMBEDDING_TOKENS_PER_INPUT * texts.len() as u64;
        let answer = json!({
            "embeddings": embeddings,
            "id": random_id_of("", 36),
            "response_type": "embeddings_floats",
            "texts": texts,
        });
        let body = serde_json::to_vec(&answer)
            .map_err(|e| AwsError::new(500, "InternalServerException", e.to_string()))?;
        return Ok((body, tokens));
    }
    Err(AwsError::validation(format!(
        "The mock serves InvokeModel for amazon.titan-embed-* and cohere.embed-* models only, not '{model}'."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_the_model_id() {
        assert_eq!(
            route("/model/us.amazon.nova-pro-v1%3A0/converse"),
            Some(("us.amazon.nova-pro-v1%3A0", Op::Converse))
        );
        assert_eq!(route("/model/m/converse-stream"), Some(("m", Op::ConverseStream)));
        assert_eq!(route("/model/m/invoke"), Some(("m", Op::Invoke)));
        assert_eq!(route("/model/m/other"), None);
        assert_eq!(decode_model("arn%3Aaws%3Abedrock%2Fx"), "arn:aws:bedrock/x");
    }

    #[test]
    fn the_signature_check_follows_the_aws_test_suite() {
        // get-vanilla, with the suite's key pair standing in for the mock's: the canonical
        // request and signature must come out as AWS publishes them.
        let canonical = format!(
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{}",
            hex(&Sha256::digest(b""))
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20150830");
        for part in ["us-east-1", "service", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        assert_eq!(hex(&key), "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75");
        assert_eq!(
            hex(&hmac(&key, string_to_sign.as_bytes())),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(uri_encode("/model/a%3A0/converse", false), "/model/a%253A0/converse");
        assert_eq!(canonical_query(Some("b=2&a=1")), "a=1&b=2");
    }

    #[test]
    fn unsigned_or_foreign_requests_are_refused_as_aws_does() {
        let mut headers = HeaderMap::new();
        let request = |headers: &HeaderMap| {
            authenticate(&Signed {
                method: "POST",
                path: "/model/m/converse",
                query: None,
                headers,
                authority: Some("h"),
                body: b"{}",
            })
        };
        assert_eq!(request(&headers).unwrap_err().exception, "MissingAuthenticationTokenException");
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert!(request(&headers).is_ok());
        headers.insert("x-amz-date", "20240101T000000Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(request(&headers).unwrap_err().exception, "UnrecognizedClientException");
        headers.insert(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={BEDROCK_ACCESS_KEY_ID}/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
                .parse()
                .unwrap(),
        );
        assert_eq!(request(&headers).unwrap_err().exception, "InvalidSignatureException");
        headers.insert(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={BEDROCK_ACCESS_KEY_ID}/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
                .parse()
                .unwrap(),
        );
        assert!(request(&headers).unwrap_err().message.contains("'bedrock'"));
    }

    #[test]
    fn converse_requests_are_checked_and_answered() {
        let reply = |body: Value| converse_reply(body.to_string().as_bytes());
        let user = json!([{"role": "user", "content": [{"text": "hi"}]}]);
        assert_eq!(reply(json!({"messages": user})).unwrap().kind, Kind::Text);
        assert!(reply(json!({"messages": []})).is_err());
        assert!(
            reply(json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}))
                .unwrap_err()
                .message
                .contains("start with a user")
        );
        assert!(
            reply(json!({"messages": [{"role": "user", "content": [{"text": " "}]}]}))
                .unwrap_err()
                .message
                .contains("blank")
        );
        let tools = json!({"tools": [{"toolSpec": {"name": "a"}}, {"toolSpec": {"name": "b"}}]});
        let mut with_tools = json!({"messages": user, "toolConfig": tools});
        assert_eq!(
            reply(with_tools.clone()).unwrap().kind,
            Kind::Tools { names: vec!["a".into()], forced: false }
        );
        with_tools["toolConfig"]["toolChoice"] = json!({"any": {}});
        assert_eq!(
            reply(with_tools.clone()).unwrap().kind,
            Kind::Tools { names: vec!["a".into(), "b".into()], forced: false }
        );
        with_tools["toolConfig"]["toolChoice"] = json!({"tool": {"name": "b"}});
        assert_eq!(
            reply(with_tools.clone()).unwrap().kind,
            Kind::Tools { names: vec!["b".into()], forced: true }
        );
        let result = json!({"messages": [{"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "r"}]}}]}]});
        assert!(reply(result.clone()).unwrap_err().message.contains("toolConfig"));
        let mut answered = result;
        answered["toolConfig"] = tools;
        assert_eq!(reply(answered).unwrap().kind, Kind::Text);
        let truncated = reply(json!({"messages": user, "inferenceConfig": {"maxTokens": 1}})).unwrap();
        assert_eq!(truncated.stop_reason(), "max_tokens");

        let thinking = reply(json!({"messages": user, "system": [{"text": "s"}, {"cachePoint": {"type": "default"}}], "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}}})).unwrap();
        let answer: Value = serde_json::from_slice(&converse(&thinking).unwrap()).unwrap();
        assert_eq!(
            answer["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]["text"],
            BEDROCK_REASONING_TEXT
        );
        assert_eq!(answer["output"]["message"]["content"][1]["text"], REPLY_TEXT);
        assert_eq!(answer["usage"]["cacheReadInputTokens"], BEDROCK_CACHE_READ_TOKENS);
        assert_eq!(answer["stopReason"], "end_turn");
    }

    /// The headers of a frame, all strings (type 7) as the mock writes them.
    fn string_headers(mut bytes: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = bytes[0] as usize;
            let name = String::from_utf8(bytes[1..1 + n].to_vec()).unwrap();
            assert_eq!(bytes[1 + n], 7, "string header");
            let len = u16::from_be_bytes([bytes[2 + n], bytes[3 + n]]) as usize;
            out.push((name, String::from_utf8(bytes[4 + n..4 + n + len].to_vec()).unwrap()));
            bytes = &bytes[4 + n + len..];
        }
        out
    }

    #[test]
    fn stream_frames_carry_valid_checksums_and_the_whole_answer() {
        let reply = converse_reply(br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"w"}}]}}"#).unwrap();
        let frames = converse_stream(&reply, 3, None);
        let mut text = String::new();
        let mut input = String::new();
        let mut types = Vec::new();
        for frame in &frames {
            let total = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            let headers = u32::from_be_bytes(frame[4..8].try_into().unwrap()) as usize;
            assert_eq!(total, frame.len());
            assert_eq!(crc32fast::hash(&frame[..8]).to_be_bytes(), frame[8..12]);
            assert_eq!(crc32fast::hash(&frame[..total - 4]).to_be_bytes(), frame[total - 4..]);
            let event_type = string_headers(&frame[12..12 + headers])
                .into_iter()
                .find(|(name, _)| name == ":event-type")
                .map(|(_, value)| value)
                .unwrap();
            let payload: Value = serde_json::from_slice(&frame[12 + headers..total - 4]).unwrap();
            assert!(payload["p"].is_string(), "padding on every event");
            text.push_str(payload.pointer("/delta/text").and_then(Value::as_str).unwrap_or(""));
            input.push_str(payload.pointer("/delta/toolUse/input").and_then(Value::as_str).unwrap_or(""));
            types.push(event_type);
        }
        assert_eq!(text, BEDROCK_TOOL_USE_TEXT);
        assert_eq!(input, BEDROCK_TOOL_INPUT_JSON);
        assert_eq!(types.first().map(String::as_str), Some("messageStart"));
        assert_eq!(types.last().map(String::as_str), Some("metadata"));

        let fault = StreamFault {
            after_events: 2,
            exception_type: "throttlingException".into(),
            message: "slow".into(),
        };
        let frames = converse_stream(&reply, 3, Some(&fault));
        assert_eq!(frames.len(), 3);
        assert!(String::from_utf8_lossy(&frames[2]).contains("throttlingException"));
    }

    #[test]
    fn sts_issues_keys_for_a_web_identity() {
        let form = b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fbedrock&RoleSessionName=s&WebIdentityToken=eyJ";
        let xml = assume_role_with_web_identity(form, 3).unwrap();
        assert!(xml.contains(&format!("<AccessKeyId>{BEDROCK_ACCESS_KEY_ID}</AccessKeyId>")));
        assert!(xml.contains("<SessionToken>mock-sts-session-3</SessionToken>"));
        let missing = b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fb&RoleSessionName=s";
        assert_eq!(assume_role_with_web_identity(missing, 1).unwrap_err().1, "MissingParameter");
        let bad_role = b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=role&RoleSessionName=s&WebIdentityToken=t";
        assert_eq!(assume_role_with_web_identity(bad_role, 1).unwrap_err().1, "ValidationError");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_440_938_160), "2015-08-30T12:36:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn embeddings_follow_each_model_family() {
        let (body, tokens) =
            invoke("amazon.titan-embed-text-v2:0", br#"{"inputText":"hello","dimensions":256}"#).unwrap();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["embedding"].as_array().unwrap().len(), 256);
        assert_eq!(tokens, EMBEDDING_TOKENS_PER_INPUT);
        assert!(
            invoke("amazon.titan-embed-text-v1", br#"{"inputText":"hello","dimensions":256}"#)
                .unwrap_err()
                .message
                .contains("extraneous key [dimensions]")
        );
        let (body, tokens) =
            invoke("cohere.embed-english-v3", br#"{"texts":["a","b"],"input_type":"search_document"}"#)
                .unwrap();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["embeddings"].as_array().unwrap().len(), 2);
        assert_eq!(tokens, 2 * EMBEDDING_TOKENS_PER_INPUT);
        assert!(invoke("cohere.embed-english-v3", br#"{"texts":["a"]}"#).is_err());
        assert!(invoke("anthropic.claude", b"{}").is_err());
    }
}
