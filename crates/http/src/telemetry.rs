//! OpenTelemetry traces: a span per LLM request, with children for authentication, the
//! response cache, routing, and each upstream attempt, exported over OTLP (HTTP/protobuf or
//! gRPC) to a collector (`callbacks: ["otel"]`) and to Langfuse's OTLP endpoint
//! (`success_callback: ["langfuse"]`). Attributes follow the OpenTelemetry GenAI semantic
//! conventions (`gen_ai.*`). A client's W3C `traceparent` is continued, and every upstream
//! attempt sends its own `traceparent` on.
//!
//! Each gateway owns its tracer provider (none is installed globally), so an embedding
//! service or a test can run several gateways with their own exporters. Spans are handed to
//! batch processors that export from their own threads; a request never waits on an export.
//! With traces off nothing here runs: a request pays one `Option` check per span site.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use tollgate_domain::config::{ObservabilityConfig, OtlpConfig, OtlpProtocol};
use tollgate_domain::{Deployment, Endpoint};

mod otlp;

/// How long one export may take before the batch is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's tracer: where spans go, and what goes into them.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Whether prompts and answers go into spans: with Langfuse, unless
    /// `turn_off_message_logging`.
    pub log_messages: bool,
    /// Whether Langfuse gets the spans (and so its own attributes).
    langfuse: bool,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("traces: {0}")]
pub struct TracingError(String);

impl Tracing {
    /// The tracer for `config`'s exporters (OTLP collector, Langfuse), or `None` when traces
    /// are off. Must run inside a Tokio runtime (the gRPC exporter's channel lives there).
    pub fn start(config: &ObservabilityConfig) -> Result<Option<Arc<Self>>, TracingError> {
        let targets: Vec<&OtlpConfig> = config.otel.iter().chain(config.langfuse.as_ref()).collect();
        let Some(first) = targets.first() else { return Ok(None) };
        let mut resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(first.service_name.clone())
            .with_attribute(KeyValue::new("service.version", crate::VERSION));
        for (name, value) in &first.resource {
            resource = resource.with_attribute(KeyValue::new(name.clone(), value.clone()));
        }
        let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
        for target in targets {
            let headers = export_headers(target);
            builder = match target.protocol {
                OtlpProtocol::HttpProtobuf => {
                    let exporter =
                        otlp::HttpSpanExporter::new(blocking_client()?, &target.endpoint, &headers)?;
                    builder.with_span_processor(BatchSpanProcessor::builder(exporter).build())
                }
                OtlpProtocol::Grpc => builder.with_span_processor(
                    BatchSpanProcessor::builder(grpc_exporter(target, &headers)?).build(),
                ),
            };
        }
        let provider = builder.build();
        let tracer = provider.tracer("tollgate");
        // Prompts and answers are for Langfuse's views; a plain collector gets the metadata.
        let log_messages = config.log_messages && config.langfuse.is_some();
        Ok(Some(Arc::new(Self { provider, tracer, log_messages, langfuse: config.langfuse.is_some() })))
    }

    /// Exports what is buffered and stops the exporters (at shutdown).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "could not export the last spans");
        }
        let _ = self.provider.shutdown();
    }

    /// Exports what is buffered now.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }

    /// The span of one request, continuing the client's `traceparent` when it sent one.
    pub(crate) fn request_span(&self, headers: &http::HeaderMap, method: &str, path: &str) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder(format!("{method} {path}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", static_method(method)),
                KeyValue::new("url.path", path.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            tracer: self.tracer.clone(),
            cx: parent.with_span(span),
            log_messages: self.log_messages,
            langfuse: self.langfuse,
        }
    }
}

/// The headers an export sends: the configured ones, and Langfuse's basic credentials.
fn export_headers(target: &OtlpConfig) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> =
        target.headers.iter().map(|(name, value)| (name.clone(), value.expose().to_owned())).collect();
    if let Some((user, password)) = &target.basic_auth {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
        headers.push(("Authorization".to_owned(), format!("Basic {token}")));
    }
    headers
}

/// opentelemetry-otlp's gRPC exporter for one target (OTLP/HTTP goes through [`otlp`]).
fn grpc_exporter(
    target: &OtlpConfig,
    headers: &[(String, String)],
) -> Result<opentelemetry_otlp::SpanExporter, TracingError> {
    let mut metadata = http::HeaderMap::new();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| TracingError(format!("'{name}' is not a valid gRPC metadata name")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| TracingError(format!("the value of '{name}' is not valid gRPC metadata")))?;
        metadata.insert(name, value);
    }
    let metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(metadata);
    opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(target.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_metadata(metadata)
        .build()
        .map_err(|error| TracingError(format!("exporter to {}: {error}", target.endpoint)))
}

/// reqwest's blocking client over rustls with ring and the Mozilla roots, like the
/// gateway's own upstream client (no process-wide crypto provider needed). Built on a thread
/// of its own: the blocking client runs a runtime, which must not start or stop inside the
/// gateway's.
fn blocking_client() -> Result<reqwest::blocking::Client, TracingError> {
    std::thread::Builder::new()
        .name("tollgate-otlp-client".into())
        .spawn(build_blocking_client)
        .map_err(|error| TracingError(format!("http client thread: {error}")))?
        .join()
        .map_err(|_| TracingError("the http client thread panicked".into()))?
}

fn build_blocking_client() -> Result<reqwest::blocking::Client, TracingError> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| TracingError(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|error| TracingError(format!("http client: {error}")))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The GenAI operation of an endpoint (`gen_ai.operation.name`).
pub(crate) fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        // Not a GenAI operation the conventions name yet; LiteLLM calls it rerank too.
        Endpoint::Rerank => "rerank",
    }
}

/// `gen_ai.provider.name` for a LiteLLM provider prefix, in the conventions' names where
/// they have one.
fn provider_name(prefix: &str) -> &str {
    match prefix {
        "azure" | "azure_ai" => "azure.ai.openai",
        "bedrock" => "aws.bedrock",
        "vertex_ai" => "gcp.vertex_ai",
        "gemini" => "gcp.gemini",
        "mistral" => "mistral_ai",
        other => other,
    }
}

/// A request's span and the context its children hang from. Ended by [`RequestSpan::end`].
pub(crate) struct RequestSpan {
    tracer: SdkTracer,
    cx: Context,
    log_messages: bool,
    langfuse: bool,
}

impl RequestSpan {
    pub(crate) fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Names the span after the GenAI operation and the model asked for (`chat gpt-4o`).
    pub(crate) fn describe(&self, endpoint: &'static str, operation: &'static str, model: &str) {
        let span = self.cx.span();
        let name = format!("{operation} {model}");
        span.set_attributes([
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.request.model", model.to_owned()),
            KeyValue::new("tollgate.endpoint", endpoint),
        ]);
        if self.langfuse {
            span.set_attribute(KeyValue::new("langfuse.trace.name", name.clone()));
        }
        span.update_name(name);
    }

    /// Whether prompts and answers may be recorded.
    pub(crate) fn logs_messages(&self) -> bool {
        self.log_messages
    }

    pub(crate) fn child(&self, name: &'static str) -> ChildSpan {
        ChildSpan::start(&self.tracer, &self.cx, name.into(), SpanKind::Internal, Vec::new(), self.langfuse)
    }

    /// Ends the span with the request's final attributes; an error status for a 5xx (the
    /// gateway's or the upstream's fault), as the HTTP server conventions say.
    pub(crate) fn end(self, status: u16, error: Option<&str>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 400 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
        }
        if status >= 500 {
            span.set_status(Status::error(error.unwrap_or_default().to_owned()));
        }
        span.end();
    }
}

/// A child span, ended when dropped.
pub(crate) struct ChildSpan {
    tracer: SdkTracer,
    cx: Context,
    langfuse: bool,
}

impl ChildSpan {
    fn start(
        tracer: &SdkTracer,
        parent: &Context,
        name: std::borrow::Cow<'static, str>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        langfuse: bool,
    ) -> Self {
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        Self { tracer: tracer.clone(), cx: parent.with_span(span), langfuse }
    }

    pub(crate) fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// A handle to hang further spans from this one.
    pub(crate) fn parent(&self) -> SpanParent {
        SpanParent { tracer: self.tracer.clone(), cx: self.cx.clone(), langfuse: self.langfuse }
    }

    /// The W3C `traceparent` naming this span, for the upstream.
    pub(crate) fn traceparent(&self) -> Option<http::HeaderValue> {
        let span = self.cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return None;
        }
        // `00-<trace id>-<span id>-<flags>` in lowercase hex, written without `format!`.
        let mut value = [b'-'; 55];
        value[..2].copy_from_slice(b"00");
        hex_into(&mut value[3..35], &context.trace_id().to_bytes());
        hex_into(&mut value[36..52], &context.span_id().to_bytes());
        hex_into(&mut value[53..55], &[context.trace_flags().to_u8()]);
        http::HeaderValue::from_bytes(&value).ok()
    }

    /// Marks the attempt failed with the error's status.
    pub(crate) fn fail(&self, status: u16, message: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", status.to_string()));
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        span.set_status(Status::error(message.to_owned()));
    }
}

/// Where an attempt's span hangs from: cheap to clone, ends nothing when dropped.
#[derive(Clone)]
pub(crate) struct SpanParent {
    tracer: SdkTracer,
    cx: Context,
    langfuse: bool,
}

impl SpanParent {
    /// An upstream attempt on `deployment`, a client span under this one.
    pub(crate) fn attempt(
        &self,
        operation: &'static str,
        deployment: &Deployment,
        upstream_model: &str,
    ) -> ChildSpan {
        // One shared string for the two attributes naming the provider.
        let provider = Value::from(Arc::<str>::from(provider_name(deployment.provider_prefix())));
        let mut attributes = Vec::with_capacity(10);
        attributes.extend([
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", provider.clone()),
            KeyValue::new("gen_ai.system", provider),
            KeyValue::new("gen_ai.request.model", upstream_model.to_owned()),
            KeyValue::new("tollgate.deployment.id", deployment.id.clone()),
            KeyValue::new("tollgate.model_group", deployment.model_name.clone()),
        ]);
        if self.langfuse {
            attributes.push(KeyValue::new("langfuse.observation.type", "generation"));
        }
        if let Some((host, port)) = deployment.api_base.as_deref().and_then(server_address) {
            attributes.push(KeyValue::new("server.address", host));
            attributes.push(KeyValue::new("server.port", port));
        }
        ChildSpan::start(
            &self.tracer,
            &self.cx,
            format!("{operation} {upstream_model}").into(),
            SpanKind::Client,
            attributes,
            self.langfuse,
        )
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice their length).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// The request method as a static string for the methods the gateway serves, so the
/// attribute owns no copy of it.
fn static_method(method: &str) -> Value {
    match method {
        "GET" => Value::from("GET"),
        "POST" => Value::from("POST"),
        "PUT" => Value::from("PUT"),
        "PATCH" => Value::from("PATCH"),
        "DELETE" => Value::from("DELETE"),
        "HEAD" => Value::from("HEAD"),
        "OPTIONS" => Value::from("OPTIONS"),
        other => Value::from(other.to_owned()),
    }
}

/// The host and port of an `api_base` URL.
fn server_address(api_base: &str) -> Option<(String, i64)> {
    let (scheme, rest) = api_base.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let default_port = if scheme == "https" { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some((host.to_owned(), port.parse().unwrap_or(default_port)))
        }
        _ => Some((authority.to_owned(), default_port)),
    }
}

/// A string attribute (`Value` from a `String`).
pub(crate) fn text(name: &'static str, value: impl Into<String>) -> KeyValue {
    KeyValue::new(name, Value::from(value.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_reads_host_and_port() {
        assert_eq!(server_address("https://api.openai.com/v1"), Some(("api.openai.com".into(), 443)));
        assert_eq!(server_address("http://127.0.0.1:8080"), Some(("127.0.0.1".into(), 8080)));
        assert_eq!(server_address("http://user:pw@host:81/x"), Some(("host".into(), 81)));
        assert_eq!(server_address("not a url"), None);
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        let mut out = [0u8; 6];
        hex_into(&mut out, &[0x0a, 0xff, 0x00]);
        assert_eq!(&out, b"0aff00");
    }
}
