//! What every HTTP adapter shares: sending one request with the deployment's deadlines,
//! turning connection failures and timeouts into errors, reading error bodies, and
//! guarding streams against stalls.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::{Instant, timeout_at};
use tollgate_domain::Deployment;

use crate::body::IdleTimeout;
use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamResponse};

/// The most a non-streaming answer may weigh; larger is a broken upstream, not an answer.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How much of a non-JSON error body is quoted back to the client.
const MAX_QUOTED_ERROR: usize = 1000;

/// Reads a provider's error body into an error, given the status.
pub(crate) type ReadError = fn(u16, &[u8], &Deployment) -> ProviderError;

tokio::task_local! {
    /// The W3C `traceparent` of the upstream attempt under way, when traces are on.
    static TRACEPARENT: HeaderValue;
}

/// Runs `call` (a provider call) sending `traceparent` on every upstream request it makes,
/// so the upstream's own spans join the gateway's trace. The header is added at the last
/// step, after any request signing: a signature never covers it.
pub async fn with_traceparent<F: std::future::Future>(traceparent: HeaderValue, call: F) -> F::Output {
    TRACEPARENT.scope(traceparent, call).await
}

/// Sends `request` and returns the upstream's answer as it came: a whole body within the
/// deployment's `timeout`, or a stream whose first byte arrives within `stream_timeout` and
/// whose gaps never exceed it. A non-2xx answer becomes `read_error`'s error.
pub(crate) async fn exchange(
    client: &HttpClient,
    deployment: &Deployment,
    request: http::Request<Full<Bytes>>,
    stream: bool,
    read_error: ReadError,
) -> Result<UpstreamResponse, ProviderError> {
    let read_error = |status, _: &http::HeaderMap, body: &[u8], deployment: &Deployment| {
        read_error(status, body, deployment)
    };
    exchange_reading_headers(client, deployment, request, stream, read_error).await
}

/// [`exchange`] for a provider whose error responses name the error in a header (Bedrock's
/// `x-amzn-ErrorType`): `read_error` gets the response headers too.
pub(crate) async fn exchange_reading_headers(
    client: &HttpClient,
    deployment: &Deployment,
    request: http::Request<Full<Bytes>>,
    stream: bool,
    read_error: impl FnOnce(u16, &http::HeaderMap, &[u8], &Deployment) -> ProviderError,
) -> Result<UpstreamResponse, ProviderError> {
    let mut request = request;
    if let Ok(traceparent) = TRACEPARENT.try_with(HeaderValue::clone) {
        request.headers_mut().insert(HeaderName::from_static("traceparent"), traceparent);
    }
    let limit = if stream { deployment.stream_timeout } else { deployment.timeout };
    let deadline = Instant::now() + limit;
    let timed_out = || timeout_error(deployment, limit);

    let response =
        timeout_at(deadline, client.request(request)).await.map_err(|_| timed_out())?.map_err(|error| {
            ProviderError::Connect {
                model: deployment.model_name.clone(),
                api_base: deployment.api_base.clone().unwrap_or_default(),
                reason: error_chain(&error),
            }
        })?;
    let (parts, incoming) = response.into_parts();
    let incoming = incoming.map_err(|e| ProviderError::Protocol(format!("upstream body: {e}")));

    if !parts.status.is_success() {
        let body = timeout_at(deadline, Limited::new(incoming, MAX_RESPONSE_BYTES).collect())
            .await
            .map_err(|_| timed_out())?
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let mut error = read_error(parts.status.as_u16(), &parts.headers, &body, deployment);
        if let ProviderError::Upstream { retry_after, .. } = &mut error {
            *retry_after = parse_retry_after(&parts.headers);
        }
        return Err(error);
    }

    let body = if stream {
        UpstreamBody::Stream(IdleTimeout::new(incoming, deployment.stream_timeout, timed_out()).boxed())
    } else {
        let collected = timeout_at(deadline, Limited::new(incoming, MAX_RESPONSE_BYTES).collect())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| ProviderError::Protocol(format!("reading the upstream answer: {e}")))?;
        UpstreamBody::Complete(collected.to_bytes())
    };
    Ok(UpstreamResponse { headers: parts.headers, body })
}

/// Adds the deployment's `extra_headers`.
pub(crate) fn with_extra_headers(
    mut builder: http::request::Builder,
    deployment: &Deployment,
) -> Result<http::request::Builder, ProviderError> {
    for (name, value) in &deployment.extra_headers {
        match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(name), Ok(value)) => builder = builder.header(name, value),
            _ => {
                return Err(ProviderError::BadRequest(format!(
                    "extra_headers of model '{}' holds an invalid header '{name}'",
                    deployment.model_name
                )));
            }
        }
    }
    Ok(builder)
}

/// A credential as a header value marked sensitive (kept out of debug output and HPACK tables).
pub(crate) fn secret_header(value: &str, deployment: &Deployment) -> Result<HeaderValue, ProviderError> {
    let mut header = HeaderValue::try_from(value).map_err(|_| {
        ProviderError::BadRequest(format!(
            "the api_key of model '{}' is not a valid header value",
            deployment.model_name
        ))
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// `text` with the deployment's key replaced wherever it appears.
pub(crate) fn redact(deployment: &Deployment, text: String) -> String {
    match &deployment.api_key {
        Some(key) => key.redact_from(&text),
        None => text,
    }
}

/// An error body that is not the provider's JSON, quoted (shortened) as the message.
pub(crate) fn quote_body(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("upstream returned status {status} with an empty body")
    } else {
        let end = text.char_indices().nth(MAX_QUOTED_ERROR).map_or(text.len(), |(i, _)| i);
        text[..end].to_owned()
    }
}

/// `retry-after-ms` (OpenAI's) or `retry-after` in seconds; an HTTP date is not read.
fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

fn timeout_error(deployment: &Deployment, timeout: Duration) -> ProviderError {
    ProviderError::Timeout {
        model: deployment.model_name.clone(),
        api_base: deployment.api_base.clone().unwrap_or_default(),
        timeout,
    }
}

/// The error's message and the messages of its sources, joined.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_milliseconds_then_seconds() {
        let headers = |pairs: &[(&'static str, &'static str)]| -> http::HeaderMap {
            pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
        };
        assert_eq!(parse_retry_after(&headers(&[("retry-after", "7")])), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "7"), ("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), None);
        assert_eq!(parse_retry_after(&headers(&[])), None);
    }
}
