//! Anthropic's Messages API as a front door: `POST /v1/messages` for every configured model,
//! so the Anthropic SDK and Anthropic-speaking tools can use any upstream.
//!
//! The Anthropic request is translated into the canonical OpenAI chat request, routed and
//! sent like any chat completion, and the answer translated back: a `message`, or the
//! named SSE events (`message_start`, `content_block_start` / `_delta` / `_stop`,
//! `message_delta`, `message_stop`). Errors come back in Anthropic's error shape.
//!
//! `POST /v1/messages/count_tokens` is answered by [`crate::count_tokens`].
//!
//! Not yet: `cache_control` on system and message blocks is dropped on the way through; an
//! `anthropic/` deployment is reached through the canonical shape rather than byte for byte.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tollgate_domain::provider_catalog::WireFormat;
use tollgate_domain::sse::first_event_end;
use tollgate_domain::tokens;
use tollgate_domain::{Endpoint, ErrorKind, GatewayError};
use tollgate_providers::{StreamBody, UpstreamBody};
use tollgate_router::{RequestOptions, Ticket};

use crate::cache;
use crate::guardrails::Mode as GuardrailMode;
use crate::guardrails::flow::{Flavor, Guard, Stopped};
use crate::observe::Observed;
use crate::proxy::{
    Attempts, Timing, add_litellm_headers, forward, new_call_id, read_body, route, sse_response,
};
use crate::spend::{Meter, MeteredCall};
use crate::tenancy::Access;
use crate::{App, BoxError, ResponseBody, errors, hold, json_response};
use tollgate_domain::pricing::Usage;

pub(crate) async fn handle<B>(
    app: &App,
    access: &Access,
    request: Request<B>,
    observed: &mut Observed,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let call_id = observed.call_id.clone();
    let (parts, body) = request.into_parts();
    match front_door(app, access, &parts.headers, body, &call_id, observed).await {
        Ok(response) => response,
        Err(error) => {
            observed.error = Some(error.message.clone());
            errors::anthropic_error_response(&error, Some(&call_id))
        }
    }
}

async fn front_door<B>(
    app: &App,
    access: &Access,
    headers: &http::HeaderMap,
    body: B,
    call_id: &str,
    observed: &mut Observed,
) -> Result<Response<ResponseBody>, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = observed.started();
    let body = read_body(body).await?;
    let mut request: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("Invalid JSON in request body: {e}")))?;
    let requested = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| GatewayError::bad_request("model: Field required").with_param("model"))?
        .to_owned();
    let requested = requested.as_str();
    let model = access.principal().and_then(|p| crate::tenancy::aliased(p, requested)).unwrap_or(requested);
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // Anthropic names the end user in `metadata.user_id`.
    let end_user_id = request.pointer("/metadata/user_id").and_then(Value::as_str).map(str::to_owned);
    let end_user = end_user_id.as_deref();
    observed.group = app.router.group_name(model).map(str::to_owned);
    let top = tollgate_domain::json::TopLevel::parse(&body)
        .map_err(|e| GatewayError::bad_request(format!("Invalid JSON in request body: {e}")))?;
    let mut guard = Guard::select(app, access, &top, model, call_id, Some(Flavor::Anthropic))?;
    if let Some(span) = &observed.span {
        span.describe("/v1/messages", "chat", requested);
        if span.logs_messages() {
            let logged = match guard.as_ref() {
                Some(guard) => guard.logged_messages(&top).await,
                None => None,
            };
            if let Some(messages) = logged.or_else(|| request.get("messages").map(Value::to_string)) {
                span.set(crate::telemetry::text("langfuse.observation.input", messages));
            }
        }
    }
    let permit = app.admit(access, model, end_user).await?;
    observed.limits(permit.as_ref(), model);
    let post_call = guard.as_ref().is_some_and(|guard| guard.has(GuardrailMode::PostCall));
    let metered =
        MeteredCall { call_id, call_type: "anthropic_messages", started, progress: Some(&observed.progress) };
    if let Some(guard) = guard.as_mut() {
        match guard.pre_call(&top).await {
            Ok(Some(rewritten)) => {
                request =
                    serde_json::from_slice(&rewritten).map_err(|e| GatewayError::internal(e.to_string()))?;
            }
            Ok(None) => {}
            Err(stopped) => {
                return Err(crate::proxy::stop(app, access, model, end_user, &metered, Vec::new(), stopped));
            }
        }
    }
    drop(top);
    if let Some(fields) = request.as_object_mut() {
        fields.remove("guardrails");
    }

    // The response cache keeps the canonical (OpenAI) answer; a hit is translated like one.
    let mut plan = None;
    if let Some(cache) = app.cache.as_ref().filter(|_| !post_call) {
        let cache_field = request.get("cache").map(Value::to_string);
        let controls = cache::Controls::read(cache_field.as_deref(), headers)?;
        let group = app.router.group_name(model).filter(|group| !group.contains('*')).unwrap_or(model);
        plan = cache.plan(cache::CallKind::Messages, &controls, access, group, &body)?;
        let cache_span = observed.span.as_ref().map(|span| span.child("cache"));
        let found = match &plan {
            Some(plan) => cache.lookup(plan).await,
            None => None,
        };
        drop(cache_span);
        if let Some(plan) = &plan
            && let Some(entry) = found
        {
            let hit = cache::Hit {
                app,
                access,
                call_type: "anthropic_messages",
                requested,
                model,
                end_user,
                call_id,
                started,
                stream,
                client_wants_usage: true,
                progress: Some(&observed.progress),
            };
            if let Some(response) = answer_from_cache(&hit, entry, plan.header()) {
                observed.cache_hit = true;
                observed.deployment = app.router.group(model).and_then(|group| group.first()).cloned();
                return Ok(hold(response, permit));
            }
        }
    }

    let mut options = RequestOptions { stream, ..RequestOptions::default() };
    if app.router.counts_prompt_tokens() {
        options.prompt_tokens = Some(prompt_tokens(app.router.encoding(model), &request));
    }
    let call = route(app, model, &options, observed, |selection, label, parent| {
        let to_anthropic = selection.deployment.wire() == Some(WireFormat::Anthropic);
        let canonical = to_chat_request(&request, to_anthropic).map(|mut canonical| {
            canonical["model"] = json!(selection.upstream_model);
            Bytes::from(canonical.to_string())
        });
        async move {
            forward(app, label, Endpoint::ChatCompletions, &selection.deployment, canonical?, stream, parent)
                .await
        }
    });
    let routed = crate::proxy::run_beside(guard.as_ref(), call).await;
    let request =
        MeteredCall { call_id, call_type: "anthropic_messages", started, progress: Some(&observed.progress) };
    let stopped = |stopped| crate::proxy::stop(app, access, model, end_user, &request, Vec::new(), stopped);
    let routed = routed.map_err(|blocked| stopped(Stopped::Blocked(blocked)))?;
    let routed = match routed {
        Ok(routed) => routed,
        Err(error) => {
            Meter::failed(app, access, model, end_user, &request, Vec::new(), &error);
            return Err(error);
        }
    };
    let upstream_time = observed.upstream.unwrap_or_default();
    let upstream = routed.value;
    let ticket = routed.ticket;

    let mut meter = Meter::new(app, access, model, end_user, &routed.deployment, &request);
    let mut response = match upstream.body {
        UpstreamBody::Complete(bytes) => {
            let bytes = match guard.as_mut().filter(|_| post_call) {
                Some(guard) => {
                    guard.post_call(bytes).await.map_err(|blocked| stopped(Stopped::Blocked(blocked)))?
                }
                None => bytes,
            };
            if let (Some(cache), Some(plan)) = (&app.cache, &plan) {
                cache.store(plan, cache::EntryKind::Complete, &bytes);
            }
            let completion: Value = serde_json::from_slice(&bytes).map_err(|e| {
                GatewayError::new(
                    ErrorKind::Upstream(502),
                    format!("the upstream answered with invalid JSON: {e}"),
                )
            })?;
            let mut response = json_response(StatusCode::OK, to_message(&completion, requested).to_string());
            let usage = completion.get("usage").and_then(Usage::from_json);
            if let Some(usage) = &usage {
                let cost = meter.record(usage);
                if let Ok(value) = http::HeaderValue::from_str(&cost.to_string()) {
                    response.headers_mut().insert("x-litellm-response-cost", value);
                }
            }
            ticket.finish(usage.as_ref());
            response
        }
        UpstreamBody::Stream(chunks) => {
            let chunks = match guard.as_mut().filter(|_| post_call) {
                Some(guard) => guard.post_call_stream(chunks).await.map_err(stopped)?,
                None => chunks,
            };
            let chunks = match (&app.cache, &plan) {
                (Some(cache), Some(plan)) => cache.record(plan, chunks),
                _ => chunks,
            };
            let events =
                EventStream::new(chunks, model, Some(meter)).tracked(ticket).observed(&observed.progress);
            sse_response(events.boxed_unsync())
        }
    };
    if let Some(key) = plan.as_ref().and_then(cache::Plan::header) {
        response.headers_mut().insert(cache::CACHE_KEY_HEADER, key);
    }
    let timing = Timing { total: started.elapsed(), upstream: upstream_time };
    let attempts = Attempts { retries: routed.retries, fallbacks: routed.fallbacks };
    add_litellm_headers(
        response.headers_mut(),
        call_id,
        model,
        &routed.deployment,
        timing,
        attempts,
        &upstream.headers,
    );
    if let Some(permit) = &permit {
        permit.add_headers(response.headers_mut());
    }
    Ok(hold(response, permit))
}

/// A cached canonical answer as Anthropic's: a `message`, or the named events of a stream
/// (an entry of the other kind converted first); `None` when it cannot be read.
fn answer_from_cache(
    hit: &cache::Hit<'_>,
    entry: cache::Entry,
    key: Option<http::HeaderValue>,
) -> Option<Response<ResponseBody>> {
    let (mut meter, deployment) = hit.meter()?;
    let response = match (entry.kind, hit.stream) {
        (cache::EntryKind::Complete | cache::EntryKind::Stream, false) => {
            let answer = match entry.kind {
                cache::EntryKind::Stream => cache::stream_to_complete(&entry.payload)?,
                _ => entry.payload,
            };
            let completion: Value = serde_json::from_slice(&answer).ok()?;
            if let Some(usage) = completion.get("usage").and_then(Usage::from_json) {
                meter.record(&usage);
            }
            json_response(StatusCode::OK, to_message(&completion, hit.requested).to_string())
        }
        (cache::EntryKind::Complete | cache::EntryKind::Stream, true) => {
            let events = match entry.kind {
                cache::EntryKind::Complete => cache::complete_to_stream(&entry.payload)?,
                _ => entry.payload,
            };
            sse_response(EventStream::new(cache::replay(events), hit.model, Some(meter)).boxed_unsync())
        }
        (cache::EntryKind::Embedding, _) => return None,
    };
    Some(hit.finish(response, &deployment, key))
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
}

/// Text of a string or of an array of text blocks.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// An Anthropic Messages request as the canonical OpenAI chat request. `to_anthropic` keeps
/// the parameters only Anthropic understands (`top_k`, `thinking`), which an OpenAI
/// upstream would reject.
pub(crate) fn to_chat_request(request: &Value, to_anthropic: bool) -> Result<Value, GatewayError> {
    let input = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages: Field required").with_param("messages"))?;
    let mut messages = Vec::new();
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(system @ (Value::String(_) | Value::Array(_))) => {
            messages.push(json!({"role": "system", "content": text_of(Some(system))}));
        }
        Some(_) => return Err(bad("system: must be a string or an array of text blocks")),
    }
    for (i, message) in input.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = message.get("content");
        match (role, content) {
            ("user" | "assistant", Some(Value::String(text))) => {
                messages.push(json!({"role": role, "content": text}));
            }
            ("user", Some(Value::Array(blocks))) => {
                let mut parts = Vec::new();
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => parts.push(json!({"type": "text", "text": block.get("text")})),
                        Some("image") => parts.push(image_part(block, i)?),
                        // Tool results answer the previous assistant turn: they go first.
                        Some("tool_result") => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": block.get("tool_use_id"),
                            "content": text_of(block.get("content")),
                        })),
                        other => {
                            return Err(bad(format!(
                                "messages.{i}: content block '{}' is not supported",
                                other.unwrap_or("?")
                            )));
                        }
                    }
                }
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            ("assistant", Some(Value::Array(blocks))) => {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
                        Some("tool_use") => tool_calls.push(json!({
                            "id": block.get("id"),
                            "type": "function",
                            "function": {
                                "name": block.get("name"),
                                "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                            },
                        })),
                        // Reasoning from an earlier turn is not replayed.
                        Some("thinking" | "redacted_thinking") => {}
                        other => {
                            return Err(bad(format!(
                                "messages.{i}: content block '{}' is not supported",
                                other.unwrap_or("?")
                            )));
                        }
                    }
                }
                let mut assistant = json!({"role": "assistant", "content": text});
                if !tool_calls.is_empty() {
                    assistant["tool_calls"] = Value::Array(tool_calls);
                }
                messages.push(assistant);
            }
            _ => return Err(bad(format!("messages.{i}: needs role user or assistant and content"))),
        }
    }

    let mut chat = Map::new();
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max_tokens) = request.get("max_tokens") {
        chat.insert("max_tokens".into(), max_tokens.clone());
    }
    for name in ["temperature", "top_p"] {
        if let Some(value) = request.get(name) {
            chat.insert(name.into(), value.clone());
        }
    }
    if to_anthropic {
        for name in ["top_k", "thinking"] {
            if let Some(value) = request.get(name) {
                chat.insert(name.into(), value.clone());
            }
        }
    }
    if let Some(stop) = request.get("stop_sequences") {
        chat.insert("stop".into(), stop.clone());
    }
    if let Some(user) = request.pointer("/metadata/user_id") {
        chat.insert("user".into(), user.clone());
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), json!(true));
        // Usage arrives last in OpenAI streams, and message_delta must report it.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        let tools = tools
            .iter()
            .map(|tool| match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => Ok(json!({"type": "function", "function": {
                    "name": tool.get("name"),
                    "description": tool.get("description").cloned().unwrap_or(json!("")),
                    "parameters": tool.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                }})),
                Some(other) => Err(bad(format!("tools: server tool '{other}' is not supported"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = request.get("tool_choice") {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice.get("name")}}),
            _ => return Err(bad("tool_choice: type must be auto, any, tool or none")),
        };
        chat.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            chat.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(Value::Object(chat))
}

fn image_part(block: &Value, index: usize) -> Result<Value, GatewayError> {
    let source = block.get("source").ok_or_else(|| bad(format!("messages.{index}: image needs a source")))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or_default()
        ),
        Some("url") => source.get("url").and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => return Err(bad(format!("messages.{index}: image source must be base64 or url"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// OpenAI usage as Anthropic usage: cached prompt tokens are reported apart.
fn anthropic_usage(usage: Option<&Value>) -> Value {
    let count = |pointer: &str| usage.and_then(|u| u.pointer(pointer)).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("/prompt_tokens_details/cached_tokens");
    json!({
        "input_tokens": count("/prompt_tokens").saturating_sub(cached),
        "output_tokens": count("/completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

fn message_id(id: Option<&Value>) -> String {
    match id.and_then(Value::as_str) {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) => format!("msg_{id}"),
        None => format!("msg_{}", new_call_id().replace('-', "")),
    }
}

/// An OpenAI `chat.completion` as an Anthropic `message` named after the alias.
pub(crate) fn to_message(completion: &Value, alias: &str) -> Value {
    let choice = completion.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(reasoning) = message.and_then(|m| m.get("reasoning_content")).and_then(Value::as_str) {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    if let Some(text) =
        message.and_then(|m| m.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.and_then(|m| m.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
        let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id"),
            "name": call.pointer("/function/name"),
            "input": serde_json::from_str::<Value>(arguments).unwrap_or(json!({})),
        }));
    }
    json!({
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": alias,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": anthropic_usage(completion.get("usage")),
    })
}

/// The prompt's tokens for the router's pre-call checks: the system prompt, the messages
/// and the tools, counted as a chat request's.
fn prompt_tokens(encoding: tokens::Encoding, request: &Value) -> u64 {
    let system = match request.get("system") {
        Some(Value::String(text)) => encoding.count(text),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .map(|t| encoding.count(t))
            .sum(),
        _ => 0,
    };
    let messages = request.get("messages").unwrap_or(&Value::Null);
    system + tokens::count_chat(encoding, messages, request.get("tools"))
}

/// Which content block is open in the Anthropic stream being written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by its OpenAI `tool_calls[].index`.
    Tool(u64),
}

/// OpenAI `chat.completion.chunk` SSE in, Anthropic's named SSE events out.
struct EventStream {
    upstream: StreamBody,
    alias: String,
    buffer: BytesMut,
    started: bool,
    /// The open block and its Anthropic index.
    open: Option<(Open, u64)>,
    next_index: u64,
    stop_reason: &'static str,
    usage: Option<Value>,
    finished: bool,
    /// Accounts for the stream's usage when it arrives.
    meter: Option<Meter>,
    /// The router's ticket for the call: told of the first event and of the end.
    ticket: Option<Ticket>,
    /// The usage the stream reported, for the ticket.
    counts: Option<Usage>,
    /// Told when the first token arrives (time to first token).
    progress: Option<std::sync::Arc<crate::observe::Progress>>,
}

impl EventStream {
    fn new(upstream: StreamBody, alias: &str, meter: Option<Meter>) -> Self {
        Self {
            meter,
            ticket: None,
            counts: None,
            progress: None,
            upstream,
            alias: alias.to_owned(),
            buffer: BytesMut::new(),
            started: false,
            open: None,
            next_index: 0,
            stop_reason: "end_turn",
            usage: None,
            finished: false,
        }
    }

    fn tracked(mut self, ticket: Ticket) -> Self {
        self.ticket = Some(ticket).filter(Ticket::is_tracked);
        self
    }

    fn observed(mut self, progress: &std::sync::Arc<crate::observe::Progress>) -> Self {
        self.progress = Some(std::sync::Arc::clone(progress));
        self
    }

    fn emit(out: &mut BytesMut, name: &str, data: &Value) {
        out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            Self::emit(out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
        }
    }

    /// Opens a block of `kind` unless it is the one open; returns its index.
    fn block(&mut self, out: &mut BytesMut, kind: Open, content_block: Value) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        Self::emit(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        );
        index
    }

    fn chunk(&mut self, chunk: &Value, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            let start = json!({"type": "message_start", "message": {
                "id": message_id(chunk.get("id")),
                "type": "message",
                "role": "assistant",
                "model": self.alias,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }});
            Self::emit(out, "message_start", &start);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let counts = Usage::from_json(usage);
            if let (Some(mut meter), Some(counts)) = (self.meter.take(), counts) {
                meter.record(&counts);
            }
            self.counts = self.counts.or(counts);
            self.usage = Some(usage.clone());
        }
        let Some(choice) = chunk.pointer("/choices/0") else { return };
        let delta = choice.get("delta");
        if let Some(thinking) =
            delta.and_then(|d| d.get("reasoning_content")).and_then(Value::as_str).filter(|t| !t.is_empty())
        {
            let index =
                self.block(out, Open::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}));
            let delta = json!({"type": "thinking_delta", "thinking": thinking});
            Self::emit(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
        if let Some(text) =
            delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty())
        {
            let index = self.block(out, Open::Text, json!({"type": "text", "text": ""}));
            let delta = json!({"type": "text_delta", "text": text});
            Self::emit(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
        for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
            let tool = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let index = if call.get("id").is_some_and(|id| !id.is_null()) {
                // A new call: its own block, even if a call with this index was open.
                if let Some((Open::Tool(open), _)) = self.open
                    && open == tool
                {
                    self.close_block(out);
                }
                let block = json!({"type": "tool_use", "id": call.get("id"), "name": call.pointer("/function/name"), "input": {}});
                self.block(out, Open::Tool(tool), block)
            } else {
                match self.open {
                    Some((Open::Tool(open), index)) if open == tool => index,
                    _ => continue,
                }
            };
            if let Some(arguments) =
                call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty())
            {
                let delta = json!({"type": "input_json_delta", "partial_json": arguments});
                Self::emit(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                );
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = stop_reason(Some(reason));
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !self.started {
            self.chunk(&json!({}), out);
        }
        self.close_block(out);
        let usage = anthropic_usage(self.usage.as_ref());
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": usage,
        });
        Self::emit(out, "message_delta", &delta);
        Self::emit(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, out: &mut BytesMut, error: GatewayError) {
        self.finished = true;
        let body: Value = serde_json::from_slice(&error.to_anthropic_json()).unwrap_or(json!({}));
        Self::emit(out, "error", &body);
    }

    /// Translates every complete OpenAI event in the buffer.
    fn drain(&mut self, out: &mut BytesMut) {
        while let Some(end) = first_event_end(&self.buffer) {
            let event = self.buffer.split_to(end);
            let Ok(text) = std::str::from_utf8(&event) else { continue };
            for data in text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim) {
                if data == "[DONE]" {
                    self.finish(out);
                } else if let Ok(chunk) = serde_json::from_str::<Value>(data) {
                    if let Some(error) = chunk.get("error") {
                        let message =
                            error.get("message").and_then(Value::as_str).unwrap_or("upstream error");
                        self.fail(out, GatewayError::new(ErrorKind::Upstream(502), message));
                    } else if !self.finished {
                        self.chunk(&chunk, out);
                    }
                }
            }
        }
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.finished && this.buffer.is_empty() {
                return Poll::Ready(None);
            }
            let mut out = BytesMut::new();
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if let Some(ticket) = &mut this.ticket {
                            ticket.first_token();
                        }
                        if let Some(progress) = this.progress.take() {
                            progress.first_token();
                        }
                        this.buffer.extend_from_slice(&data);
                        this.drain(&mut out);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.buffer.clear();
                    // A broken stream says nothing about latency or usage; it only ends.
                    this.ticket = None;
                    this.fail(&mut out, GatewayError::from(error));
                }
                Poll::Ready(None) => {
                    this.buffer.clear();
                    // An upstream that ends without [DONE] still gets a well-formed ending.
                    this.finish(&mut out);
                }
            }
            if this.finished {
                this.buffer.clear();
                if let Some(ticket) = this.ticket.take() {
                    ticket.finish(this.counts.as_ref());
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_call_checks_count_the_system_prompt_with_the_messages() {
        let encoding = tokens::Encoding::Cl100kBase;
        let messages = json!([{"role": "user", "content": "hello world"}]);
        let bare = json!({"model": "m", "max_tokens": 5, "messages": messages});
        let chat = tokens::count_chat(encoding, &messages, None);
        assert_eq!(prompt_tokens(encoding, &bare), chat);
        let system = json!({"model": "m", "system": "be brief", "messages": messages});
        assert_eq!(prompt_tokens(encoding, &system), chat + encoding.count("be brief"));
        let blocks = json!({"system": [{"type": "text", "text": "be brief"}], "messages": messages});
        assert_eq!(prompt_tokens(encoding, &blocks), chat + encoding.count("be brief"));
    }

    #[test]
    fn request_translation_covers_system_tools_images_and_results() {
        let request = json!({
            "model": "general-purpose",
            "max_tokens": 256,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
            ],
            "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "top_k": 5,
            "metadata": {"user_id": "u-1"},
            "stream": true
        });
        let chat = to_chat_request(&request, false).unwrap();
        assert_eq!(chat["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(chat["messages"][1]["content"][1]["image_url"]["url"], "data:image/jpeg;base64,AAA");
        assert_eq!(chat["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
        );
        assert_eq!(chat["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["user"], "u-1");
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert!(chat.get("top_k").is_none(), "top_k only goes to anthropic upstreams");
        assert_eq!(to_chat_request(&request, true).unwrap()["top_k"], 5);
        assert!(to_chat_request(&json!({"model": "m"}), false).is_err());
    }

    #[test]
    fn completion_becomes_a_message() {
        let completion = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "ok",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24, "prompt_tokens_details": {"cached_tokens": 8}}
        });
        let message = to_message(&completion, "general-purpose");
        assert_eq!(message["id"], "msg_chatcmpl-1");
        assert_eq!(message["model"], "general-purpose");
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(message["content"][0], json!({"type": "text", "text": "ok"}));
        assert_eq!(
            message["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(
            message["usage"],
            json!({"input_tokens": 12, "output_tokens": 4, "cache_read_input_tokens": 8, "cache_creation_input_tokens": 0})
        );
    }

    #[tokio::test]
    async fn chunks_become_named_events() {
        let openai = concat!(
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":1}\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        );
        // Split at an awkward place to check the buffering.
        let (a, b) = openai.split_at(100);
        let upstream = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok::<_, tollgate_providers::ProviderError>(Frame::data(Bytes::from(a))),
            Ok(Frame::data(Bytes::from(b))),
        ]));
        let body = EventStream::new(upstream.boxed(), "alias", None).collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let data: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(data[0]["message"]["model"], "alias");
        assert_eq!(
            data[5]["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
        );
        assert_eq!(data[6]["delta"], json!({"type": "input_json_delta", "partial_json": "{\"city\":1}"}));
        assert_eq!(data[8]["delta"]["stop_reason"], "tool_use");
        assert_eq!(data[8]["usage"]["output_tokens"], 3);
        assert_eq!(data[8]["usage"]["input_tokens"], 9);
    }
}
