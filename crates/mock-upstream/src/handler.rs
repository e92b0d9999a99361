//! Request handling: read and record the request, route it, apply the scripted behaviour,
//! answer in the format of the endpoint's API (OpenAI's, Azure OpenAI's, Anthropic's for
//! `/v1/messages`, Google's for Gemini's `models/{model}:{method}`, AWS's for Bedrock's
//! `/model/{modelId}/{operation}`, or Entra ID's for the token endpoint).
//! Bad input of any kind is a 4xx shaped like that API's errors, never a panic.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::body::{MockBody, Pacing, SseBody};
use crate::{Behavior, RecordedRequest, Shared};
use crate::{anthropic, azure, bedrock, cohere, gemini, ollama, retrieval, vertex, wire};

/// Largest request body read; more is a 413, so a client cannot exhaust memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
pub(crate) static APPLICATION_NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static OPENAI_PROCESSING_MS: HeaderName = HeaderName::from_static("openai-processing-ms");
static PROCESSING_MS: HeaderValue = HeaderValue::from_static("1");
static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
static API_KEY: HeaderName = HeaderName::from_static("api-key");
static X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store, no-cache");
static TEXT_XML: HeaderValue = HeaderValue::from_static("text/xml");
static AMAZON_EVENT_STREAM: HeaderValue = HeaderValue::from_static("application/vnd.amazon.eventstream");
static X_AMZN_REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
static X_AMZN_ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");
static INPUT_TOKEN_COUNT: HeaderName = HeaderName::from_static("x-amzn-bedrock-input-token-count");

/// The API family an endpoint belongs to, which decides the response headers and the
/// shape of error bodies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// OpenAI's, and Azure OpenAI's data plane, which answers with the same headers and
    /// bodies (only its routing and authentication errors differ).
    OpenAi,
    Anthropic,
    /// Google's Generative Language API (Gemini).
    Gemini,
    /// Amazon Bedrock Runtime.
    Bedrock,
    /// AWS STS (`AssumeRoleWithWebIdentity`), whose errors are XML.
    Sts,
    /// Microsoft Entra ID's token endpoint.
    Entra,
    /// Ollama's native API, whose errors are `{"error": "text"}`.
    Ollama,
    /// Cohere's v2 API, whose errors are `{"id", "message"}`.
    Cohere,
    /// Voyage AI's and Jina AI's APIs, whose errors are FastAPI's `{"detail": ...}`.
    Retrieval,
}

/// The endpoints the mock knows.
enum Endpoint<'a> {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    Model(&'a str),
    Messages,
    /// Azure OpenAI's `/openai/deployments/{deployment}/...`, answered like `inner` (one of
    /// the three POST endpoints above) once Azure's own checks pass.
    Azure {
        deployment: &'a str,
        inner: AzureOp,
    },
    /// Entra ID's `/{tenant}/oauth2/v2.0/token`.
    Token,
    /// Gemini's `/v1beta/models/{model}:{method}` (or `/v1/...`).
    Gemini {
        model: &'a str,
        op: GeminiOp,
    },
    /// AWS STS's query API on `POST /` (`AssumeRoleWithWebIdentity` only).
    Sts,
    /// Bedrock's `/model/{modelId}/{operation}`, the model id still percent-encoded.
    Bedrock {
        model: &'a str,
        op: bedrock::Op,
    },
    /// Vertex AI's publisher models, Google's OAuth token endpoint and the metadata server.
    Vertex(vertex::Route<'a>),
    /// Cohere's `/v2/chat`, `/v2/embed`, `/v2/rerank`.
    Cohere(cohere::Op),
    /// Voyage's and Jina's embeddings and rerank, under `/voyage/v1/` and `/jina/v1/`.
    Retrieval {
        vendor: retrieval::Vendor,
        op: retrieval::Op,
    },
    /// Anthropic's `/v1/messages/count_tokens`.
    CountTokens,
    /// Ollama's `/api/chat`, `/api/generate` and `/api/embed`.
    Ollama(ollama::Op),
    /// Azure AI Foundry's model-inference routes and Claude's Messages API under
    /// `/anthropic`, keyed with `api-key` or a bearer token.
    AzureAi(AzureAiOp),
}

/// The Azure AI Foundry routes the mock answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AzureAiOp {
    ChatCompletions,
    Embeddings,
    Messages,
    CountTokens,
}

impl AzureAiOp {
    fn route(path: &str) -> Option<Self> {
        match path {
            "/models/chat/completions" => Some(Self::ChatCompletions),
            "/models/embeddings" => Some(Self::Embeddings),
            "/anthropic/v1/messages" => Some(Self::Messages),
            "/anthropic/v1/messages/count_tokens" => Some(Self::CountTokens),
            _ => None,
        }
    }
}

/// The Gemini methods the mock answers.
#[derive(Clone, Copy)]
enum GeminiOp {
    GenerateContent,
    StreamGenerateContent,
    EmbedContent,
    BatchEmbedContents,
}

/// The OpenAI operations Azure's deployment routes expose.
#[derive(Clone, Copy)]
enum AzureOp {
    ChatCompletions,
    Completions,
    Embeddings,
}

/// A single non-empty path segment (no `/`).
fn segment(text: &str) -> Option<&str> {
    Some(text).filter(|text| !text.is_empty() && !text.contains('/'))
}

/// `path` without its `/v1` prefix, if it has one.
fn unversioned(path: &str) -> &str {
    path.strip_prefix("/v1").filter(|rest| rest.starts_with('/')).unwrap_or(path)
}

/// `path` without Gemini's `/v1beta` or `/v1` prefix, if it has one.
fn gemini_unversioned(path: &str) -> &str {
    path.strip_prefix("/v1beta").filter(|rest| rest.starts_with('/')).unwrap_or_else(|| unversioned(path))
}

/// Whether `path` is Gemini-shaped, `[/v1beta|/v1]/models/{model}:{method}`, so an unknown
/// method on it gets Google's 404.
fn gemini_path(path: &str) -> Option<(&str, &str)> {
    let (model, method) = gemini_unversioned(path).strip_prefix("/models/")?.split_once(':')?;
    Some((segment(model)?, method))
}

impl<'a> Endpoint<'a> {
    /// Routes `path`: Azure's and Entra's paths as they are, OpenAI's and Anthropic's with
    /// or without their `/v1` prefix.
    fn route(method: &Method, path: &'a str) -> Option<Self> {
        if let Some(route) = vertex::Route::parse(method, path) {
            return Some(Endpoint::Vertex(route));
        }
        if method == Method::POST {
            if let Some(rest) = path.strip_prefix("/openai/deployments/") {
                let (deployment, op) = rest.split_once('/')?;
                let inner = match op {
                    "chat/completions" => AzureOp::ChatCompletions,
                    "completions" => AzureOp::Completions,
                    "embeddings" => AzureOp::Embeddings,
                    _ => return None,
                };
                return segment(deployment).map(|deployment| Endpoint::Azure { deployment, inner });
            }
            if let Some(tenant) = path.strip_prefix('/').and_then(|p| p.strip_suffix("/oauth2/v2.0/token")) {
                return segment(tenant).map(|_| Endpoint::Token);
            }
            if path == "/" {
                return Some(Endpoint::Sts);
            }
            if let Some(op) = cohere::route(path) {
                return Some(Endpoint::Cohere(op));
            }
            if let Some((vendor, op)) = retrieval::route(path) {
                return Some(Endpoint::Retrieval { vendor, op });
            }
            if let Some((model, op)) = bedrock::route(path) {
                return Some(Endpoint::Bedrock { model, op });
            }
            if let Some(op) = ollama::route(path) {
                return Some(Endpoint::Ollama(op));
            }
            if let Some(op) = AzureAiOp::route(path) {
                return Some(Endpoint::AzureAi(op));
            }
            if let Some((model, method)) = gemini_path(path) {
                let op = match method {
                    "generateContent" => GeminiOp::GenerateContent,
                    "streamGenerateContent" => GeminiOp::StreamGenerateContent,
                    "embedContent" => GeminiOp::EmbedContent,
                    "batchEmbedContents" => GeminiOp::BatchEmbedContents,
                    _ => return None,
                };
                return Some(Endpoint::Gemini { model, op });
            }
        }
        match (method, unversioned(path)) {
            (&Method::POST, "/chat/completions") => Some(Endpoint::ChatCompletions),
            (&Method::POST, "/completions") => Some(Endpoint::Completions),
            (&Method::POST, "/embeddings") => Some(Endpoint::Embeddings),
            (&Method::POST, "/messages") => Some(Endpoint::Messages),
            (&Method::POST, "/messages/count_tokens") => Some(Endpoint::CountTokens),
            (&Method::GET, "/models") => Some(Endpoint::Models),
            (&Method::GET, other) => other
                .strip_prefix("/models/")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(Endpoint::Model),
            _ => None,
        }
    }

    fn api(&self) -> Api {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => Api::Anthropic,
            Endpoint::AzureAi(AzureAiOp::Messages | AzureAiOp::CountTokens) => Api::Anthropic,
            Endpoint::Ollama(_) => Api::Ollama,
            Endpoint::Gemini { .. } => Api::Gemini,
            Endpoint::Bedrock { .. } => Api::Bedrock,
            Endpoint::Sts => Api::Sts,
            Endpoint::Token => Api::Entra,
            Endpoint::Vertex(route) => route.api(),
            Endpoint::Cohere(_) => Api::Cohere,
            Endpoint::Retrieval { .. } => Api::Retrieval,
            _ => Api::OpenAi,
        }
    }
}

/// Whose 404 an unrouted path gets, so it is shaped as its client expects.
enum NotFound {
    OpenAi,
    /// Paths under Anthropic's `/v1/messages` (e.g. a GET, or `/v1/messages/batches`).
    Anthropic,
    /// Paths under Azure's `/openai/`.
    Azure,
    /// Paths under Gemini's `/v1beta/`, and `models/{model}:{method}` paths.
    Gemini,
    /// Paths under Bedrock's `/model/`.
    Bedrock,
    /// Paths under Ollama's `/api/`.
    Ollama,
    /// Paths under Cohere's `/v2/`.
    Cohere,
    /// Paths under `/voyage/` and `/jina/`.
    Retrieval,
}

fn not_found_kind(path: &str) -> NotFound {
    let route = unversioned(path);
    if route == "/messages" || route.starts_with("/messages/") {
        NotFound::Anthropic
    } else if path.starts_with("/v1beta/") || gemini_path(path).is_some() || vertex::is_vertex_path(path) {
        NotFound::Gemini
    } else if bedrock::is_bedrock_path(path) {
        NotFound::Bedrock
    } else if ollama::is_ollama_path(path) {
        NotFound::Ollama
    } else if cohere::is_cohere_path(path) {
        NotFound::Cohere
    } else if retrieval::is_retrieval_path(path) {
        NotFound::Retrieval
    } else if path.starts_with("/openai/") {
        NotFound::Azure
    } else {
        NotFound::OpenAi
    }
}

/// How to answer a request once its behaviour has been applied.
#[derive(Clone, Copy)]
pub(crate) struct Answer {
    api: Api,
    pub(crate) request_id: u64,
    /// Content chunks of a stream.
    pub(crate) chunks: usize,
    pacing: Pacing,
    /// Leave `usage` out of OpenAI answers and streams ([`Behavior::NoUsage`]).
    no_usage: bool,
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
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }

    let Some(endpoint) = Endpoint::route(&parts.method, parts.uri.path()) else {
        let message = format!("invalid url ({} {})", parts.method, parts.uri.path());
        return Ok(match not_found_kind(parts.uri.path()) {
            NotFound::OpenAi => {
                error(request_id, StatusCode::NOT_FOUND, &message, "invalid_request_error", None, None)
            }
            NotFound::Anthropic => {
                anthropic_error(request_id, StatusCode::NOT_FOUND, "not_found_error", &message)
            }
            NotFound::Azure => azure_not_found(request_id),
            NotFound::Gemini => gemini_error(request_id, StatusCode::NOT_FOUND, "NOT_FOUND", &message),
            NotFound::Bedrock => {
                aws_error(request_id, &bedrock::AwsError::new(404, "UnknownOperationException", message))
            }
            NotFound::Ollama => ollama::error(request_id, StatusCode::NOT_FOUND, "404 page not found"),
            NotFound::Cohere => {
                json(Api::Cohere, request_id, StatusCode::NOT_FOUND, cohere::error_body(&message))
            }
            NotFound::Retrieval => {
                json(Api::Retrieval, request_id, StatusCode::NOT_FOUND, retrieval::detail_body("Not Found"))
            }
        });
    };
    // Azure routes by API version too: without one the path does not exist, so it is a
    // 404 that, like any unknown path, consumes no scripted behaviour.
    let needs_version = matches!(
        endpoint,
        Endpoint::Azure { .. } | Endpoint::AzureAi(AzureAiOp::ChatCompletions | AzureAiOp::Embeddings)
    );
    if needs_version && !azure::has_api_version(parts.uri.query()) {
        return Ok(azure_not_found(request_id));
    }
    let api = endpoint.api();
    match read_error {
        Some(true) => {
            let message = format!("request body larger than {MAX_BODY_BYTES} bytes");
            return Ok(match api {
                Api::OpenAi => error(
                    request_id,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &message,
                    "invalid_request_error",
                    None,
                    None,
                ),
                Api::Anthropic => {
                    anthropic_error(request_id, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", &message)
                }
                // Google answers an oversized payload with a 400, not a 413.
                Api::Gemini => {
                    let message = format!("Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.");
                    invalid_gemini(request_id, &message)
                }
                Api::Bedrock => {
                    aws_error(request_id, &bedrock::AwsError::new(413, "ValidationException", message))
                }
                Api::Sts => sts_error(StatusCode::PAYLOAD_TOO_LARGE, "MalformedInput", &message),
                Api::Entra => token_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", &message),
                Api::Ollama => ollama::error(request_id, StatusCode::PAYLOAD_TOO_LARGE, &message),
                Api::Cohere => {
                    json(api, request_id, StatusCode::PAYLOAD_TOO_LARGE, cohere::error_body(&message))
                }
                Api::Retrieval => {
                    json(api, request_id, StatusCode::PAYLOAD_TOO_LARGE, retrieval::detail_body(&message))
                }
            });
        }
        Some(false) => {
            let message = "could not read the request body";
            return Ok(match api {
                Api::OpenAi => {
                    error(request_id, StatusCode::BAD_REQUEST, message, "invalid_request_error", None, None)
                }
                Api::Anthropic => invalid_anthropic(request_id, message),
                Api::Gemini => invalid_gemini(request_id, message),
                Api::Bedrock => {
                    aws_error(request_id, &bedrock::AwsError::new(400, "SerializationException", message))
                }
                Api::Sts => sts_error(StatusCode::BAD_REQUEST, "MalformedInput", message),
                Api::Entra => token_error(StatusCode::BAD_REQUEST, "invalid_request", message),
                Api::Ollama => ollama::error(request_id, StatusCode::BAD_REQUEST, message),
                Api::Cohere => json(api, request_id, StatusCode::BAD_REQUEST, cohere::error_body(message)),
                Api::Retrieval => {
                    json(api, request_id, StatusCode::BAD_REQUEST, retrieval::detail_body(message))
                }
            });
        }
        None => {}
    }
    // The token endpoint is infrastructure a gateway test sets up once, not the upstream
    // it scripts: it takes no behaviour, so a queued failure still reaches the model call.
    if let Endpoint::Token = endpoint {
        return Ok(token(&shared, &body));
    }
    // Like Entra's token endpoint, STS is set-up, not the upstream a test scripts.
    if let Endpoint::Sts = endpoint {
        return Ok(sts(&shared, &body));
    }
    if let Endpoint::Vertex(route) = &endpoint
        && route.is_infrastructure()
    {
        return Ok(vertex::infrastructure(&shared, route, &parts.headers, &body));
    }

    let mut answer = Answer {
        api,
        request_id,
        chunks: wire::DEFAULT_STREAM_CHUNKS,
        pacing: Pacing::default(),
        no_usage: false,
    };
    let mut stream_fault = None;
    match shared.next_behavior() {
        Behavior::Normal => {}
        Behavior::Error { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json(api, request_id, status, Bytes::from(body)));
        }
        Behavior::ErrorWithHeaders { status, headers, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = json(api, request_id, status, Bytes::from(body));
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    response.headers_mut().insert(name, value);
                }
            }
            return Ok(response);
        }
        Behavior::StreamException { after_events, exception_type, message } => {
            stream_fault = Some(bedrock::StreamFault { after_events, exception_type, message });
        }
        Behavior::RateLimited { retry_after_secs } if api == Api::Bedrock => {
            let error = bedrock::AwsError::new(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            );
            let mut response = aws_error(request_id, &error);
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(retry_after_secs));
            return Ok(response);
        }
        Behavior::RateLimited { retry_after_secs } => {
            let body = match api {
                // Google names the wait in the body's RetryInfo; the `retry-after` header below
                // is the mock's own, kept on every API so a client's handling of it is tested.
                Api::Gemini => Bytes::from(gemini::rate_limit_body(retry_after_secs)),
                Api::Ollama => ollama::error_body("rate limit exceeded, please retry later"),
                Api::Cohere => cohere::rate_limit_body(),
                Api::Retrieval => retrieval::detail_body("You have exceeded your rate limit. Please retry later."),
                _ => Bytes::from_static(
                    br#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                ),
            };
            let mut response = json(api, request_id, StatusCode::TOO_MANY_REQUESTS, body);
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(retry_after_secs));
            return Ok(response);
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
        Behavior::NoUsage => answer.no_usage = true,
    }

    Ok(match endpoint {
        Endpoint::ChatCompletions => chat_completions(&shared, &body, answer, None),
        Endpoint::Completions => completions(&shared, &body, answer, None),
        Endpoint::Embeddings => embeddings(&body, request_id, None),
        Endpoint::Models => serialized(api, request_id, wire::model_list()),
        Endpoint::Model(id) => serialized(api, request_id, wire::model(id)),
        Endpoint::Messages => messages(&shared, &parts.headers, &X_API_KEY, &body, answer),
        Endpoint::CountTokens => count_tokens(&parts.headers, &X_API_KEY, &body, request_id),
        Endpoint::Ollama(op) => ollama::answer(&shared, op, &body, answer),
        // Like Azure OpenAI's, the key check comes after the scripted behaviour.
        Endpoint::AzureAi(AzureAiOp::ChatCompletions | AzureAiOp::Embeddings)
            if !azure_authenticated(&parts.headers) =>
        {
            json(
                api,
                request_id,
                StatusCode::UNAUTHORIZED,
                Bytes::from_static(azure::ACCESS_DENIED_BODY.as_bytes()),
            )
        }
        Endpoint::AzureAi(op) => match op {
            AzureAiOp::ChatCompletions => chat_completions(&shared, &body, answer, None),
            AzureAiOp::Embeddings => embeddings(&body, request_id, None),
            AzureAiOp::Messages => messages(&shared, &parts.headers, &API_KEY, &body, answer),
            AzureAiOp::CountTokens => count_tokens(&parts.headers, &API_KEY, &body, request_id),
        },
        // Like Anthropic's key check, Azure's comes after the scripted behaviour.
        Endpoint::Azure { .. } if !azure_authenticated(&parts.headers) => json(
            api,
            request_id,
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(azure::ACCESS_DENIED_BODY.as_bytes()),
        ),
        // Azure does not need `model` in the body: the deployment decides it.
        Endpoint::Azure { deployment, inner } => match inner {
            AzureOp::ChatCompletions => chat_completions(&shared, &body, answer, Some(deployment)),
            AzureOp::Completions => completions(&shared, &body, answer, Some(deployment)),
            AzureOp::Embeddings => embeddings(&body, request_id, Some(deployment)),
        },
        // Like Anthropic's key check, Google's comes after the scripted behaviour.
        Endpoint::Gemini { .. } if !gemini_authenticated(&parts.headers, parts.uri.query()) => {
            gemini_error(request_id, StatusCode::FORBIDDEN, "PERMISSION_DENIED", gemini::MISSING_KEY_MESSAGE)
        }
        Endpoint::Gemini { model, op } => match op {
            GeminiOp::GenerateContent => gemini_generate(&shared, model, &body, answer, None),
            GeminiOp::StreamGenerateContent => {
                let framing = if query_value(parts.uri.query(), "alt") == Some("sse") {
                    gemini::Framing::Sse
                } else {
                    gemini::Framing::JsonArray
                };
                gemini_generate(&shared, model, &body, answer, Some(framing))
            }
            GeminiOp::EmbedContent => gemini_embed(&body, request_id),
            GeminiOp::BatchEmbedContents => gemini_batch_embed(&body, request_id),
        },
        Endpoint::Bedrock { model, op } => {
            let signed = bedrock::Signed {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                authority: parts.uri.authority().map(|a| a.as_str()),
                body: &body,
            };
            // Like the other key checks, AWS's comes after the scripted behaviour.
            match bedrock::authenticate(&signed) {
                Err(error) => aws_error(request_id, &error),
                Ok(()) => {
                    bedrock_operation(&shared, &bedrock::decode_model(model), op, &body, answer, stream_fault)
                }
            }
        }
        Endpoint::Vertex(route) => vertex::model_call(&shared, &route, &parts.headers, &body, answer),
        Endpoint::Cohere(op) => {
            cohere::call(&shared, op, &parts.headers, &body, answer, stream_fault.as_ref())
        }
        Endpoint::Retrieval { vendor, op } => retrieval::call(vendor, op, &parts.headers, &body, request_id),
        // Answered before the behaviour was taken.
        Endpoint::Token => token(&shared, &body),
        Endpoint::Sts => sts(&shared, &body),
    })
}

/// The first value of query parameter `name`, undecoded; `None` when absent.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| match pair.split_once('=') {
        Some((key, value)) if key == name => Some(value),
        None if pair == name => Some(""),
        _ => None,
    })
}

/// Whether a Gemini request carries an API key: a non-empty `x-goog-api-key` header or
/// `key` query parameter. Any key is accepted.
fn gemini_authenticated(headers: &HeaderMap, query: Option<&str>) -> bool {
    headers.get(&X_GOOG_API_KEY).is_some_and(|key| !key.is_empty())
        || query_value(query, "key").is_some_and(|key| !key.is_empty())
}

/// Whether a request carries `Authorization: Bearer <token>` with a non-empty token.
pub(crate) fn has_bearer(headers: &HeaderMap) -> bool {
    headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).is_some_and(|value| {
        value
            .split_once(' ')
            .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
    })
}

/// Whether an Azure request carries a credential: a non-empty `api-key`, or an
/// `Authorization: Bearer <token>` (an Entra ID token). Any value is accepted.
fn azure_authenticated(headers: &HeaderMap) -> bool {
    let api_key = headers.get(&API_KEY).is_some_and(|key| !key.is_empty());
    let bearer = headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).is_some_and(|value| {
        value
            .split_once(' ')
            .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
    });
    api_key || bearer
}

/// Entra ID's client-credentials token endpoint: a valid form issues the next numbered
/// token with the configured lifetime.
fn token(shared: &Shared, body: &[u8]) -> Response<MockBody> {
    let checked = azure::TokenRequest::parse(body).and_then(|request| request.validate());
    if let Err(description) = checked {
        return token_error(StatusCode::BAD_REQUEST, "invalid_request", &description);
    }
    let n = shared.issue_token();
    match azure::token_body(n, shared.token_lifetime()) {
        Ok(body) => json(Api::Entra, 0, StatusCode::OK, Bytes::from(body)),
        Err(err) => {
            let description = format!("mock could not serialize its answer: {err}");
            token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &description)
        }
    }
}

fn chat_completions(
    shared: &Arc<Shared>,
    body: &[u8],
    answer: Answer,
    default_model: Option<&str>,
) -> Response<MockBody> {
    let request: wire::ChatRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(answer.request_id, &err),
    };
    let Some(model) = request.model.as_deref().or(default_model) else {
        return missing(answer.request_id, "model");
    };
    if request.messages.is_none() {
        return missing(answer.request_id, "messages");
    }
    if request.stream == Some(true) {
        let include_usage = request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
        let include_usage = include_usage && !answer.no_usage;
        stream(shared, answer, wire::chat_stream_events(model, include_usage, answer.chunks))
    } else {
        let mut completion = wire::chat_completion(model);
        if answer.no_usage {
            completion = without_usage(completion);
        }
        serialized(Api::OpenAi, answer.request_id, completion)
    }
}

fn completions(
    shared: &Arc<Shared>,
    body: &[u8],
    answer: Answer,
    default_model: Option<&str>,
) -> Response<MockBody> {
    let request: wire::CompletionRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(answer.request_id, &err),
    };
    let Some(model) = request.model.as_deref().or(default_model) else {
        return missing(answer.request_id, "model");
    };
    if request.prompt.is_none() {
        return missing(answer.request_id, "prompt");
    }
    if request.stream == Some(true) {
        let include_usage = request.stream_options.and_then(|options| options.include_usage).unwrap_or(false);
        stream(shared, answer, wire::completion_stream_events(model, include_usage, answer.chunks))
    } else {
        serialized(Api::OpenAi, answer.request_id, wire::text_completion(model))
    }
}

fn embeddings(body: &[u8], request_id: u64, default_model: Option<&str>) -> Response<MockBody> {
    let request: wire::EmbeddingRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return bad_json(request_id, &err),
    };
    let Some(model) = request.model.as_deref().or(default_model) else {
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
    serialized(Api::OpenAi, request_id, wire::embedding_list(model, inputs, dimensions, base64))
}

/// Anthropic's Messages API. The key and version headers are checked before the body, as
/// Anthropic does; the answer calls a tool when [`anthropic::MessagesRequest::tool_to_call`]
/// says so.
fn messages(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    key_header: &HeaderName,
    body: &[u8],
    answer: Answer,
) -> Response<MockBody> {
    let request_id = answer.request_id;
    if let Some(refusal) = anthropic_headers(headers, key_header, request_id) {
        return refusal;
    }
    let request: anthropic::MessagesRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_anthropic(request_id, &parse_error_message(&err)),
    };
    let Some(model) = request.model.as_deref() else {
        return invalid_anthropic(request_id, "model: field required");
    };
    match request.max_tokens {
        None => return invalid_anthropic(request_id, "max_tokens: field required"),
        Some(0) => return invalid_anthropic(request_id, "max_tokens: must be greater than or equal to 1"),
        Some(_) => {}
    }
    match &request.messages {
        None => return invalid_anthropic(request_id, "messages: field required"),
        Some(messages) if messages.is_empty() => {
            return invalid_anthropic(request_id, "messages: at least one message is required");
        }
        Some(_) => {}
    }
    let tool = request.tool_to_call();
    if request.stream == Some(true) {
        stream(shared, answer, anthropic::message_stream_events(model, tool, answer.chunks))
    } else {
        serialized(Api::Anthropic, request_id, anthropic::message(model, tool))
    }
}

/// Anthropic's key (`x-api-key`, or Azure's `api-key` for Claude on Azure AI) and version
/// headers, checked as Anthropic checks them, before the body: the refusal, if any.
fn anthropic_headers(
    headers: &HeaderMap,
    key_header: &HeaderName,
    request_id: u64,
) -> Option<Response<MockBody>> {
    if headers.get(key_header).is_none_or(HeaderValue::is_empty) {
        let message = format!("{key_header} header is required");
        return Some(anthropic_error(request_id, StatusCode::UNAUTHORIZED, "authentication_error", &message));
    }
    if headers.get(&ANTHROPIC_VERSION).is_none_or(HeaderValue::is_empty) {
        return Some(invalid_anthropic(request_id, "anthropic-version: header is required"));
    }
    None
}

/// Anthropic's `count_tokens`: `{"input_tokens": N}` by [`anthropic::count_tokens`].
fn count_tokens(
    headers: &HeaderMap,
    key_header: &HeaderName,
    body: &[u8],
    request_id: u64,
) -> Response<MockBody> {
    if let Some(refusal) = anthropic_headers(headers, key_header, request_id) {
        return refusal;
    }
    match anthropic::count_tokens(body) {
        Ok(tokens) => json(
            Api::Anthropic,
            request_id,
            StatusCode::OK,
            Bytes::from(format!("{{\"input_tokens\":{tokens}}}")),
        ),
        Err(message) => invalid_anthropic(request_id, &message),
    }
}

/// Gemini's `generateContent`, or with a framing `streamGenerateContent`; the answer follows
/// [`gemini::GenerateContentRequest::reply`].
pub(crate) fn gemini_generate(
    shared: &Arc<Shared>,
    model: &str,
    body: &[u8],
    answer: Answer,
    framing: Option<gemini::Framing>,
) -> Response<MockBody> {
    let request_id = answer.request_id;
    let request: gemini::GenerateContentRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_gemini(request_id, &gemini_parse_error(&err)),
    };
    if request.contents.as_ref().is_none_or(Vec::is_empty) {
        return invalid_gemini(request_id, "* GenerateContentRequest.contents: contents is not specified\n");
    }
    let reply = request.reply();
    match framing {
        None => serialized(Api::Gemini, request_id, gemini::generate_content(model, reply)),
        Some(framing) => {
            let events = gemini::stream_events(model, reply, answer.chunks, framing);
            let content_type = match framing {
                gemini::Framing::Sse => &TEXT_EVENT_STREAM,
                gemini::Framing::JsonArray => &APPLICATION_JSON,
            };
            stream_as(shared, answer, events, content_type)
        }
    }
}

/// Gemini's `embedContent`: one embedding.
fn gemini_embed(body: &[u8], request_id: u64) -> Response<MockBody> {
    let request: gemini::EmbedContentRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_gemini(request_id, &gemini_parse_error(&err)),
    };
    if request.content.is_none() {
        return invalid_gemini(request_id, "* EmbedContentRequest.content: content is not specified\n");
    }
    match request.dimensions() {
        Ok(dimensions) => serialized(Api::Gemini, request_id, gemini::embed_content(dimensions)),
        Err(message) => invalid_gemini(request_id, &message),
    }
}

/// Gemini's `batchEmbedContents`: one embedding per entry of `requests`, in order.
fn gemini_batch_embed(body: &[u8], request_id: u64) -> Response<MockBody> {
    let request: gemini::BatchEmbedContentsRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_gemini(request_id, &gemini_parse_error(&err)),
    };
    let requests = match request.requests {
        Some(requests) if !requests.is_empty() => requests,
        _ => {
            let message = "* BatchEmbedContentsRequest.requests: requests is not specified\n";
            return invalid_gemini(request_id, message);
        }
    };
    if requests.len() > gemini::GEMINI_MAX_BATCH_EMBED_REQUESTS {
        let message = format!(
            "* BatchEmbedContentsRequest.requests: at most {} requests can be in one batch\n",
            gemini::GEMINI_MAX_BATCH_EMBED_REQUESTS
        );
        return invalid_gemini(request_id, &message);
    }
    let mut dimensions = Vec::with_capacity(requests.len());
    for (index, entry) in requests.iter().enumerate() {
        if entry.content.is_none() {
            let message =
                format!("* BatchEmbedContentsRequest.requests[{index}].content: content is not specified\n");
            return invalid_gemini(request_id, &message);
        }
        match entry.dimensions() {
            Ok(d) => dimensions.push(d),
            Err(message) => return invalid_gemini(request_id, &message),
        }
    }
    serialized(Api::Gemini, request_id, gemini::batch_embed_contents(&dimensions))
}

/// STS's `AssumeRoleWithWebIdentity`: temporary keys for the Bedrock routes, numbered.
fn sts(shared: &Shared, body: &[u8]) -> Response<MockBody> {
    match bedrock::assume_role_with_web_identity(body, shared.issue_sts_credentials()) {
        Ok(xml) => {
            let mut response = Response::new(MockBody::full(Bytes::from(xml)));
            response.headers_mut().insert(CONTENT_TYPE, TEXT_XML.clone());
            response
        }
        Err((status, code, message)) => {
            sts_error(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), code, &message)
        }
    }
}

fn sts_error(status: StatusCode, code: &str, message: &str) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(Bytes::from(bedrock::sts_error_body(code, message))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, TEXT_XML.clone());
    response
}

/// Bedrock's `converse`, `converse-stream` (binary event-stream frames, one per body frame)
/// and `invoke` (embeddings).
fn bedrock_operation(
    shared: &Arc<Shared>,
    model: &str,
    op: bedrock::Op,
    body: &[u8],
    answer: Answer,
    fault: Option<bedrock::StreamFault>,
) -> Response<MockBody> {
    let request_id = answer.request_id;
    match op {
        bedrock::Op::Converse | bedrock::Op::ConverseStream => {
            let reply = match bedrock::converse_reply(body) {
                Ok(reply) => reply,
                Err(error) => return aws_error(request_id, &error),
            };
            if op == bedrock::Op::Converse {
                serialized(Api::Bedrock, request_id, bedrock::converse(&reply))
            } else {
                let frames = bedrock::converse_stream(&reply, answer.chunks, fault.as_ref());
                stream_as(shared, answer, Ok(frames), &AMAZON_EVENT_STREAM)
            }
        }
        bedrock::Op::Invoke => match bedrock::invoke(model, body) {
            Ok((answer_body, tokens)) => {
                let mut response = json(Api::Bedrock, request_id, StatusCode::OK, Bytes::from(answer_body));
                response.headers_mut().insert(INPUT_TOKEN_COUNT.clone(), HeaderValue::from(tokens));
                response
            }
            Err(error) => aws_error(request_id, &error),
        },
    }
}

// ---------------------------------------------------------------------------------------
// responses

/// Anthropic's request id, sent as the `request-id` header and in error bodies.
fn anthropic_request_id(request_id: u64) -> String {
    format!("req_{request_id}")
}

/// The headers the API sends on every answer, which the gateway echoes: OpenAI's
/// `x-request-id` and `openai-processing-ms`, or Anthropic's `request-id`.
fn with_api_headers(
    mut response: Response<MockBody>,
    api: Api,
    request_id: u64,
    content_type: &HeaderValue,
) -> Response<MockBody> {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type.clone());
    match api {
        Api::OpenAi => {
            if let Ok(id) = HeaderValue::try_from(format!("req-{request_id}")) {
                headers.insert(X_REQUEST_ID.clone(), id);
            }
            headers.insert(OPENAI_PROCESSING_MS.clone(), PROCESSING_MS.clone());
        }
        Api::Anthropic => {
            if let Ok(id) = HeaderValue::try_from(anthropic_request_id(request_id)) {
                headers.insert(REQUEST_ID.clone(), id);
            }
        }
        // Google's answers carry no request-id header; `responseId` is in the body.
        Api::Gemini => {}
        Api::Sts => {}
        Api::Bedrock => {
            if let Ok(id) =
                HeaderValue::try_from(format!("mock-{request_id:08x}-0000-4000-8000-000000000000"))
            {
                headers.insert(X_AMZN_REQUEST_ID.clone(), id);
            }
        }
        // Entra forbids caching token answers; it has no request-id header the gateway uses.
        Api::Entra => {
            headers.insert(CACHE_CONTROL, NO_STORE.clone());
        }
        Api::Ollama => {}
        // Cohere's, Voyage's and Jina's answers carry their ids in the body, if at all.
        Api::Cohere | Api::Retrieval => {}
    }
    response
}

pub(crate) fn json(api: Api, request_id: u64, status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    with_api_headers(response, api, request_id, &APPLICATION_JSON)
}

/// A serialized answer with its top-level `usage` removed.
fn without_usage(body: serde_json::Result<Vec<u8>>) -> serde_json::Result<Vec<u8>> {
    let mut answer: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body?)?;
    answer.remove("usage");
    serde_json::to_vec(&answer)
}

pub(crate) fn serialized(api: Api, request_id: u64, body: serde_json::Result<Vec<u8>>) -> Response<MockBody> {
    match body {
        Ok(body) => json(api, request_id, StatusCode::OK, Bytes::from(body)),
        Err(err) => server_error(api, request_id, &err),
    }
}

pub(crate) fn stream(
    shared: &Arc<Shared>,
    answer: Answer,
    events: serde_json::Result<Vec<Bytes>>,
) -> Response<MockBody> {
    stream_as(shared, answer, events, &TEXT_EVENT_STREAM)
}

/// A streamed answer, each event its own frame, paced by the behaviour; `content_type` is
/// `text/event-stream` except for Gemini's streamed JSON array.
pub(crate) fn stream_as(
    shared: &Arc<Shared>,
    answer: Answer,
    events: serde_json::Result<Vec<Bytes>>,
    content_type: &HeaderValue,
) -> Response<MockBody> {
    match events {
        Ok(events) => {
            let body = SseBody::new(events, answer.pacing, Arc::clone(shared));
            let response = Response::new(MockBody::Sse(body));
            with_api_headers(response, answer.api, answer.request_id, content_type)
        }
        Err(err) => server_error(answer.api, answer.request_id, &err),
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
    json(Api::OpenAi, request_id, status, wire::error_body(message, kind, param, code))
}

/// An Anthropic error, `{"type":"error","error":{...},"request_id":...}`.
fn anthropic_error(request_id: u64, status: StatusCode, kind: &str, message: &str) -> Response<MockBody> {
    let id = anthropic_request_id(request_id);
    json(Api::Anthropic, request_id, status, Bytes::from(anthropic::error_body(kind, message, Some(&id))))
}

/// Azure's 404, `{"error":{"code":"404","message":"Resource not found"}}`.
fn azure_not_found(request_id: u64) -> Response<MockBody> {
    json(Api::OpenAi, request_id, StatusCode::NOT_FOUND, Bytes::from_static(azure::NOT_FOUND_BODY.as_bytes()))
}

/// An Entra OAuth error, `{"error":<code>,"error_description":...}`.
pub(crate) fn token_error(status: StatusCode, code: &str, description: &str) -> Response<MockBody> {
    json(Api::Entra, 0, status, azure::token_error_body(code, description))
}

pub(crate) fn invalid_anthropic(request_id: u64, message: &str) -> Response<MockBody> {
    anthropic_error(request_id, StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// A Google API error, `{"error":{"code","message","status"}}`.
pub(crate) fn gemini_error(
    request_id: u64,
    status: StatusCode,
    status_text: &str,
    message: &str,
) -> Response<MockBody> {
    let body = gemini::error_body(status.as_u16(), status_text, message);
    json(Api::Gemini, request_id, status, Bytes::from(body))
}

/// An AWS error: `{"message": ...}` with the exception in `x-amzn-ErrorType`.
fn aws_error(request_id: u64, error: &bedrock::AwsError) -> Response<MockBody> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(Api::Bedrock, request_id, status, bedrock::error_body(&error.message));
    if let Ok(value) = HeaderValue::try_from(bedrock::error_type_header(error.exception)) {
        response.headers_mut().insert(X_AMZN_ERROR_TYPE.clone(), value);
    }
    response
}

pub(crate) fn invalid_gemini(request_id: u64, message: &str) -> Response<MockBody> {
    gemini_error(request_id, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// Google's wording for a body it cannot read.
fn gemini_parse_error(err: &serde_json::Error) -> String {
    format!("Invalid JSON payload received. {err}")
}

fn server_error(api: Api, request_id: u64, err: &serde_json::Error) -> Response<MockBody> {
    let message = format!("mock could not serialize its answer: {err}");
    match api {
        Api::OpenAi => {
            error(request_id, StatusCode::INTERNAL_SERVER_ERROR, &message, "server_error", None, None)
        }
        Api::Anthropic => {
            anthropic_error(request_id, StatusCode::INTERNAL_SERVER_ERROR, "api_error", &message)
        }
        Api::Gemini => gemini_error(request_id, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", &message),
        Api::Bedrock => {
            aws_error(request_id, &bedrock::AwsError::new(500, "InternalServerException", message))
        }
        Api::Sts => sts_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", &message),
        Api::Entra => token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &message),
        Api::Ollama => ollama::error(request_id, StatusCode::INTERNAL_SERVER_ERROR, &message),
        Api::Cohere => json(api, request_id, StatusCode::INTERNAL_SERVER_ERROR, cohere::error_body(&message)),
        Api::Retrieval => {
            json(api, request_id, StatusCode::INTERNAL_SERVER_ERROR, retrieval::detail_body(&message))
        }
    }
}

fn parse_error_message(err: &serde_json::Error) -> String {
    if err.is_data() {
        format!("invalid request body: {err}")
    } else {
        format!("could not parse the json body of your request: {err}")
    }
}

fn bad_json(request_id: u64, err: &serde_json::Error) -> Response<MockBody> {
    let message = parse_error_message(err);
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
