//! End-to-end: OpenTelemetry traces from the gateway to an in-process OTLP receiver (a
//! hyper server decoding the protobuf with the opentelemetry-proto types), over HTTP and
//! gRPC, and to Langfuse's OTLP endpoint with its basic credentials, exactly as the seeds
//! configure it. The client's `traceparent` is continued and the upstream receives one.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, status};
use prost::Message;
use serde_json::json;
use support::*;
use tollgate_mock_upstream::{Behavior, COMPLETION_TOKENS, MockUpstream, PROMPT_TOKENS};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// One export the receiver got.
#[derive(Debug)]
struct Export {
    path: String,
    headers: http::HeaderMap,
    service_name: Option<String>,
    spans: Vec<Span>,
}

/// An OTLP receiver: HTTP/protobuf (`POST /v1/traces` and any other path) and gRPC
/// (`TraceService/Export`, over HTTP/2 without TLS), answering success to both.
struct Receiver {
    addr: SocketAddr,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let exports: Arc<Mutex<Vec<Export>>> = Arc::default();
        let kept = Arc::clone(&exports);
        tokio::spawn(async move {
            // Bounded: a test makes a handful of connections.
            for _ in 0..64 {
                let Ok((stream, _)) = listener.accept().await else { return };
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service = service_fn(move |request| receive(Arc::clone(&kept), request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, exports }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.exports.lock().unwrap().iter().flat_map(|export| export.spans.clone()).collect()
    }
}

async fn receive(
    exports: Arc<Mutex<Vec<Export>>>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Answer>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let grpc =
        parts.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // gRPC frames the message: a compression flag and a four-byte length first.
    let message = if grpc && body.len() >= 5 { body.slice(5..) } else { body };
    let decoded = ExportTraceServiceRequest::decode(message).expect("an OTLP trace export");
    let service_name = decoded
        .resource_spans
        .first()
        .and_then(|r| r.resource.as_ref())
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?));
    let spans =
        decoded.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans).collect();
    exports.lock().unwrap().push(Export {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        service_name,
        spans,
    });
    let mut response = http::Response::new(Answer { grpc, step: 0 });
    let content_type = if grpc { "application/grpc" } else { "application/x-protobuf" };
    response.headers_mut().insert("content-type", http::HeaderValue::from_static(content_type));
    Ok(response)
}

/// The receiver's answer: an empty `ExportTraceServiceResponse`, gRPC-framed with a
/// `grpc-status: 0` trailer for gRPC.
struct Answer {
    grpc: bool,
    step: u8,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.step += 1;
        Poll::Ready(match (self.grpc, self.step) {
            (true, 1) => Some(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])))),
            (true, 2) => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

fn text(value: &Any) -> Option<String> {
    match value {
        Any::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<Any> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.clone())
}

fn string_attribute(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(Any::StringValue(text)) => text,
        other => panic!("{} has {key} = {other:?}", span.name),
    }
}

fn int_attribute(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Any::IntValue(n)) => n,
        other => panic!("{} has {key} = {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one span named {name} among {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

async fn chat_with_traceparent(gateway: &TestGateway, body: serde_json::Value) -> Reply {
    let mut request = post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body.to_string());
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    request.headers_mut().insert("traceparent", traceparent.parse().unwrap());
    send(request).await
}

/// Runs the gateway's graceful shutdown, which exports every span it still holds.
async fn shut_down(mut gateway: TestGateway) {
    let task = gateway.begin_shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(20), task)
        .await
        .expect("shut down in time")
        .expect("serve task")
        .expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_a_trace_over_otlp_http() {
    let receiver = Receiver::start().await;
    let mock = MockUpstream::start().await;
    let yaml = mock_config(&mock.base_url(), "") + "litellm_settings: {callbacks: [\"otel\"]}\n";
    let variables = env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()),
        ("OTEL_SERVICE_NAME", "gateway-under-test".into()),
    ]);
    let gateway = TestGateway::start_env(&yaml, &variables, |g| g).await;
    let reply = chat_with_traceparent(&gateway, json!({"model": "general-purpose", "temperature": 0.5, "messages": [{"role": "user", "content": "hello"}]})).await;
    assert_eq!(reply.status, 200);
    mock.push(Behavior::Error { status: 503, body: "{}".into() });
    let failed = chat(
        &gateway,
        json!({"model": "general-purpose", "messages": [{"role": "user", "content": "again"}]}),
    )
    .await;
    assert_eq!(failed.status, 503);
    shut_down(gateway).await;

    let exports = receiver.exports.lock().unwrap();
    assert!(
        exports.iter().all(|e| e.path == "/v1/traces"),
        "{:?}",
        exports.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
    assert_eq!(exports[0].service_name.as_deref(), Some("gateway-under-test"));
    drop(exports);
    let spans = receiver.spans();
    let traced: Vec<Span> = spans.iter().filter(|s| hex(&s.trace_id) == CLIENT_TRACE).cloned().collect();
    let root = find(&traced, "chat general-purpose");
    assert_eq!(hex(&root.parent_span_id), CLIENT_SPAN, "the client's trace continues");
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(string_attribute(root, "gen_ai.operation.name"), "chat");
    assert_eq!(string_attribute(root, "gen_ai.request.model"), "general-purpose");
    assert_eq!(string_attribute(root, "gen_ai.response.model"), "openai/mock-model");
    assert_eq!(int_attribute(root, "gen_ai.usage.input_tokens"), PROMPT_TOKENS as i64);
    assert_eq!(int_attribute(root, "gen_ai.usage.output_tokens"), COMPLETION_TOKENS as i64);
    assert_eq!(int_attribute(root, "http.response.status_code"), 200);
    assert_eq!(attribute(root, "gen_ai.request.temperature"), Some(Any::DoubleValue(0.5)));
    let auth = find(&traced, "auth");
    let routing = find(&traced, "routing");
    assert_eq!(auth.parent_span_id, root.span_id);
    assert_eq!(routing.parent_span_id, root.span_id);
    let attempt = find(&traced, "chat mock-model");
    assert_eq!(attempt.parent_span_id, routing.span_id, "each upstream attempt hangs from routing");
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(string_attribute(attempt, "gen_ai.provider.name"), "openai");
    assert_eq!(string_attribute(attempt, "server.address"), "127.0.0.1");
    // The upstream was told the attempt's span.
    let sent = mock.requests();
    let traceparent = sent[0].headers.get("traceparent").expect("a traceparent upstream").to_str().unwrap();
    assert_eq!(traceparent, format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id)));

    // The failed request: its own trace, an error status on the request and the attempt.
    let failed_root = spans
        .iter()
        .find(|s| s.name == "chat general-purpose" && hex(&s.trace_id) != CLIENT_TRACE)
        .expect("the failed request's span");
    assert!(failed_root.parent_span_id.is_empty(), "no traceparent: a new trace");
    assert_eq!(int_attribute(failed_root, "http.response.status_code"), 503);
    assert_eq!(failed_root.status.as_ref().map(|s| s.code), Some(status::StatusCode::Error as i32));
    let failed_attempt = spans
        .iter()
        .find(|s| s.name == "chat mock-model" && s.trace_id == failed_root.trace_id)
        .expect("the failed attempt");
    assert_eq!(string_attribute(failed_attempt, "error.type"), "503");
    assert!(
        !format!("{spans:?}").contains(UPSTREAM_KEY) && !format!("{spans:?}").contains(MASTER_KEY),
        "no keys in spans"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_over_grpc_with_headers() {
    let receiver = Receiver::start().await;
    let mock = MockUpstream::start().await;
    let yaml = mock_config(&mock.base_url(), "") + "litellm_settings: {callbacks: [otel]}\n";
    let variables = env(&[
        ("OTEL_EXPORTER", "otlp_grpc".into()),
        ("OTEL_ENDPOINT", receiver.url()),
        ("OTEL_HEADERS", "x-tenant=team-1".into()),
    ]);
    let gateway = TestGateway::start_env(&yaml, &variables, |g| g).await;
    let mut streamed = json!({"model": "general-purpose", "stream": true, "messages": [{"role": "user", "content": "hello"}]});
    let reply = chat_with_traceparent(&gateway, streamed.take()).await;
    assert_eq!(reply.status, 200);
    shut_down(gateway).await;

    let exports = receiver.exports.lock().unwrap();
    assert!(!exports.is_empty());
    for export in exports.iter() {
        assert_eq!(export.path, "/opentelemetry.proto.collector.trace.v1.TraceService/Export");
        assert_eq!(export.headers["x-tenant"], "team-1");
    }
    drop(exports);
    let spans = receiver.spans();
    let root = find(&spans, "chat general-purpose");
    assert_eq!(hex(&root.trace_id), CLIENT_TRACE);
    // A stream's span ends with the stream: its usage is known by then.
    assert_eq!(int_attribute(root, "gen_ai.usage.output_tokens"), COMPLETION_TOKENS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langfuse_as_the_seeds_configure_it() {
    let receiver = Receiver::start().await;
    let mock = MockUpstream::start().await;
    let yaml = mock_config(&mock.base_url(), "")
        + &format!(
            "litellm_settings:
  success_callback: [\"langfuse\"]
  failure_callback: [\"langfuse\"]
  langfuse_host: {}
  langfuse_public_key: os.environ/LANGFUSE_PUBLIC_KEY
  langfuse_secret_key: os.environ/LANGFUSE_SECRET_KEY
",
            receiver.url()
        );
    let variables =
        env(&[("LANGFUSE_PUBLIC_KEY", "pk-lf-test".into()), ("LANGFUSE_SECRET_KEY", "sk-lf-secret".into())]);
    let gateway = TestGateway::start_env(&yaml, &variables, |g| g).await;
    let reply = chat(
        &gateway,
        json!({"model": "general-purpose", "messages": [{"role": "user", "content": "hello langfuse"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    shut_down(gateway).await;

    let exports = receiver.exports.lock().unwrap();
    assert!(!exports.is_empty(), "langfuse got the spans");
    let basic = base64::engine::general_purpose::STANDARD.encode("pk-lf-test:sk-lf-secret");
    for export in exports.iter() {
        assert_eq!(export.path, "/api/public/otel/v1/traces");
        assert_eq!(export.headers["authorization"], format!("Basic {basic}"));
    }
    drop(exports);
    let spans = receiver.spans();
    let root = find(&spans, "chat general-purpose");
    assert_eq!(string_attribute(root, "langfuse.trace.name"), "chat general-purpose");
    assert!(string_attribute(root, "langfuse.observation.input").contains("hello langfuse"));
    let attempt = find(&spans, "chat mock-model");
    assert_eq!(string_attribute(attempt, "langfuse.observation.type"), "generation");
    let output = string_attribute(root, "langfuse.observation.output");
    assert!(output.contains("assistant"), "{output}");
}

/// A `logging_only` guardrail masks what the trace carries; the upstream gets the request
/// as the client sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logging_only_guardrail_masks_the_traced_prompt_only() {
    let receiver = Receiver::start().await;
    let mock = MockUpstream::start().await;
    let yaml = mock_config(&mock.base_url(), "")
        + &format!(
            "litellm_settings:
  success_callback: [\"langfuse\"]
  langfuse_host: {}
  langfuse_public_key: pk
  langfuse_secret_key: sk
guardrails:
  - guardrail_name: log-pii
    litellm_params: {{guardrail: pii_masking, mode: logging_only, default_on: true}}
",
            receiver.url()
        );
    let gateway = TestGateway::start(&yaml).await;
    let content = "hello langfuse, mail me at jane@example.com";
    let reply = chat(
        &gateway,
        json!({"model": "general-purpose", "messages": [{"role": "user", "content": content}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    shut_down(gateway).await;

    let spans = receiver.spans();
    let input = string_attribute(find(&spans, "chat general-purpose"), "langfuse.observation.input");
    assert!(input.contains("mail me at <EMAIL_ADDRESS>") && !input.contains("jane@"), "{input}");
    let sent: serde_json::Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["messages"][0]["content"], content);
}
