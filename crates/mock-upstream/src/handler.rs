//! Request handling: read and record the request, route it, apply the scripted behaviour,
//! answer in OpenAI's format. Bad input of any kind is an OpenAI-shaped 4xx, never a panic.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::body::{MockBody, Pacing, SseBody};
use crate::wire;
use crate::{Behavior, RecordedRequest, Shared};

/// Largest request body read; more is a 413, so a client cannot exhaust memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static OPENAI_PROCESSING_MS: HeaderName = HeaderName::from_static("openai-processing-ms");
static PROCESSING_MS: HeaderValue = HeaderValue::from_static("1");

/// The endpoints the mock knows.
enum Endpoint<'a> {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    Model(&'a str),
}

impl<'a> Endpoint<'a> {
    /// Routes `path` with or without its `/v1` prefix.
    fn route(method: &Method, path: &'a str) -> Option<Self> {
        let route = path.strip_prefix("/v1").filter(|rest| rest.starts_with('/')).unwrap_or(path);
        match (method, route) {
            (&Method::POST, "/chat/completions") => Some(Endpoint::ChatCompletions),
            (&Method::POST, "/completions") => Some(Endpoint::Completions),
            (&Method::POST, "/embeddings") => Some(Endpoint::Embeddings),
            (&Method::GET, "/models") => Some(Endpoint::Models),
            (&Method::GET, other) => other
                .strip_prefix("/models/")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(Endpoint::Model),
            _ => None,
        }
    }
}

/// How to answer a request once its behaviour has been applied.
#[derive(Clone, Copy)]
struct Answer {
    request_id: u64,
    /// Content chunks of a stream.
    chunks: usize,
    pacing: Pacing,
}

/// Counts a request as abandoned if it is dropped while armed: hyper drops the service
/// future when the client disconnects, which is the only way a Hang ends.
struct AbandonGuard<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl<'a> AbandonGuard<'a> {
    fn new(shared: &'a Shared) -> Self {
        AbandonGuard { shared, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.request_abandoned();
        }
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES).collect().await;
    let request_id = shared.next_request_id();
    let (body, read_error) = match body {
        Ok(collected) => (collected.to_bytes(), None),
        Err(err) => (Bytes::new(), Some(err.downcast_ref::<LengthLimitError>().is_some())),
    };
    if shared.records() {
        shared.record(RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }

    let Some(endpoint) = Endpoint::route(&parts.method, parts.uri.path()) else {
        let message = format!("invalid url ({} {})", parts.method, parts.uri.path());
        return Ok(error(request_id, StatusCode::NOT_FOUND, &message, "invalid_request_error", None, None));
    };
    match read_error {
        Some(true) => {
            let message = format!("request body larger than {MAX_BODY_BYTES} bytes");
            return Ok(error(
                request_id,
                StatusCode::PAYLOAD_TOO_LARGE,
                &message,
                "invalid_request_error",
                None,
                None,
            ));
        }
        Some(false) => {
            let message = "could not read the request body";
            return Ok(error(
                request_id,
                StatusCode::BAD_REQUEST,
                message,
                "invalid_request_error",
                None,
                None,
            ));
        }
        None => {}
    }

    let mut answer = Answer { request_id, chunks: wire::DEFAULT_STREAM_CHUNKS, pacing: Pacing::default() };
    match shared.next_behavior() {
        Behavior::Normal => {}
        Behavior::Error { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json(request_id, status, Bytes::from(body)));
        }
        Behavior::Delay(delay) => {
            let guard = AbandonGuard::new(&shared);
            tokio::time::sleep(delay).await;
            guard.disarm();
        }
        Behavior::Hang => {
            let _guard = AbandonGuard::new(&shared);
            let never: Infallible = std::future::pending().await;
            match never {}
        }
        Behavior::StallStream { after_chunks } => answer.pacing.stall_after = Some(after_chunks),
        Behavior::SlowStream { chunk_delay, chunks } => {
            answer.pacing.delay = Some(chunk_delay);
            answer.chunks = chunks;
        }
    }

    Ok(match endpoint {
        Endpoint::ChatCompletions => chat_completions(&shared, &body, answer),
        Endpoint::Completions => completions(&shared, &body, answer),
        Endpoint::Embeddings => embeddings(&body, request_id),
        Endpoint::Models => serialized(request_id, wire::model_list()),
        Endpoint::Model(id) => serialized(request_id, wire::model(id)),
    })
}

fn chat_completions(shared: &Arc<Shared>, body: &[u8], answer: Answer) -> Response<MockBody> {
    let request: wire::ChatRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(answer.request_id, &err),
    };
    let Some(model) = request.model else {
        return missing(answer.request_id, "model");
    };
    if request.messages.is_none() {
        return missing(answer.request_id, "messages");
    }
    if request.stream == Some(true) {
        let include_usage = request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
        stream(shared, answer, wire::chat_stream_events(&model, include_usage, answer.chunks))
    } else {
        serialized(answer.request_id, wire::chat_completion(&model))
    }
}

fn completions(shared: &Arc<Shared>, body: &[u8], answer: Answer) -> Response<MockBody> {
    let request: wire::CompletionRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(answer.request_id, &err),
    };
    let Some(model) = request.model else {
        return missing(answer.request_id, "model");
    };
    if request.prompt.is_none() {
        return missing(answer.request_id, "prompt");
    }
    if request.stream == Some(true) {
        let include_usage = request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
        stream(shared, answer, wire::completion_stream_events(&model, include_usage, answer.chunks))
    } else {
        serialized(answer.request_id, wire::text_completion(&model))
    }
}

fn embeddings(body: &[u8], request_id: u64) -> Response<MockBody> {
    let request: wire::EmbeddingRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(request_id, &err),
    };
    let Some(model) = request.model else {
        return missing(request_id, "model");
    };
    let inputs = match &request.input {
        None => return missing(request_id, "input"),
        Some(serde_json::Value::String(_)) => 1,
        // An array of token ids is one input; an array of strings or of token arrays is many.
        Some(serde_json::Value::Array(items)) if !items.is_empty() && items.iter().all(|i| i.is_number()) => {
            1
        }
        Some(serde_json::Value::Array(items)) => items.len(),
        Some(_) => return invalid(request_id, "'input' must be a string or an array", "input"),
    };
    if inputs == 0 {
        return invalid(request_id, "'input' must not be empty", "input");
    }
    if inputs > wire::MAX_EMBEDDING_INPUTS {
        let message = format!("'input' has more than {} items", wire::MAX_EMBEDDING_INPUTS);
        return invalid(request_id, &message, "input");
    }
    let dimensions = match request.dimensions {
        None => wire::EMBEDDING_DIMENSIONS,
        Some(d) if (1..=wire::MAX_EMBEDDING_DIMENSIONS as u64).contains(&d) => d as usize,
        Some(_) => {
            let message = format!("'dimensions' must be between 1 and {}", wire::MAX_EMBEDDING_DIMENSIONS);
            return invalid(request_id, &message, "dimensions");
        }
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return invalid(request_id, "'encoding_format' must be 'float' or 'base64'", "encoding_format");
        }
    };
    serialized(request_id, wire::embedding_list(&model, inputs, dimensions, base64))
}

// ---------------------------------------------------------------------------------------
// responses

/// The headers OpenAI sends on every answer, which the gateway echoes.
fn with_openai_headers(
    mut response: Response<MockBody>,
    request_id: u64,
    content_type: &HeaderValue,
) -> Response<MockBody> {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type.clone());
    if let Ok(id) = HeaderValue::try_from(format!("req-{request_id}")) {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
    headers.insert(OPENAI_PROCESSING_MS.clone(), PROCESSING_MS.clone());
    response
}

fn json(request_id: u64, status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    with_openai_headers(response, request_id, &APPLICATION_JSON)
}

fn serialized(request_id: u64, body: serde_json::Result<Vec<u8>>) -> Response<MockBody> {
    match body {
        Ok(body) => json(request_id, StatusCode::OK, Bytes::from(body)),
        Err(err) => server_error(request_id, &err),
    }
}

fn stream(
    shared: &Arc<Shared>,
    answer: Answer,
    events: serde_json::Result<Vec<Bytes>>,
) -> Response<MockBody> {
    match events {
        Ok(events) => {
            let body = SseBody::new(events, answer.pacing, Arc::clone(shared));
            with_openai_headers(Response::new(MockBody::Sse(body)), answer.request_id, &TEXT_EVENT_STREAM)
        }
        Err(err) => server_error(answer.request_id, &err),
    }
}

fn error(
    request_id: u64,
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<MockBody> {
    json(request_id, status, wire::error_body(message, kind, param, code))
}

fn server_error(request_id: u64, err: &serde_json::Error) -> Response<MockBody> {
    let message = format!("mock could not serialize its answer: {err}");
    error(request_id, StatusCode::INTERNAL_SERVER_ERROR, &message, "server_error", None, None)
}

fn bad_json(request_id: u64, err: &serde_json::Error) -> Response<MockBody> {
    let message = if err.is_data() {
        format!("invalid request body: {err}")
    } else {
        format!("could not parse the json body of your request: {err}")
    };
    error(request_id, StatusCode::BAD_REQUEST, &message, "invalid_request_error", None, None)
}

fn missing(request_id: u64, param: &str) -> Response<MockBody> {
    let message = format!("missing required parameter: '{param}'");
    error(
        request_id,
        StatusCode::BAD_REQUEST,
        &message,
        "invalid_request_error",
        Some(param),
        Some("missing_required_parameter"),
    )
}

fn invalid(request_id: u64, message: &str, param: &str) -> Response<MockBody> {
    error(request_id, StatusCode::BAD_REQUEST, message, "invalid_request_error", Some(param), None)
}
