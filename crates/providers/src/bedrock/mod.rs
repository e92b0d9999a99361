//! Amazon Bedrock Runtime (`bedrock/…` and `bedrock/converse/…` models): chat through the
//! Converse API (`POST /model/{modelId}/converse`, and `converse-stream`, whose answer is
//! AWS's binary event stream), embeddings through `invoke` (Titan and Cohere bodies), each
//! request signed with SigV4 or sent with a Bedrock API key.
//!
//! Errors are read from Bedrock's `{"message": …}` body and its `x-amzn-ErrorType` header:
//! `ThrottlingException` is 429, `AccessDeniedException` 403, an unrecognised or expired
//! credential 401, `ValidationException` 400 (code `context_length_exceeded` for an input
//! that is too long), `ModelTimeoutException` 408, `ServiceUnavailableException` and
//! `ModelNotReadyException` 503. An exception that opens a stream is returned the same way;
//! one that arrives mid-stream becomes an error event, as on the other adapters.

mod auth;
pub(crate) mod converse;
mod embed;
mod eventstream;
mod sts;

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate_domain::deployment::{AwsAuth, AwsSettings};
use tollgate_domain::provider_catalog::bedrock_model_id;
use tollgate_domain::{Deployment, Endpoint};

use crate::body::{Chunks, TranslatedStream};
use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse, transport};

use self::auth::Credential;
use self::eventstream::EventStreamAsSse;
use self::sts::{TemporaryKeys, WebIdentityCredentials};

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static EVENT_STREAM: HeaderValue = HeaderValue::from_static("application/vnd.amazon.eventstream");
/// The input tokens of an `invoke` call, which Cohere's body does not report.
const INPUT_TOKEN_COUNT: &str = "x-amzn-bedrock-input-token-count";

pub struct BedrockProvider {
    client: HttpClient,
    web_identity: WebIdentityCredentials,
}

impl BedrockProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { web_identity: WebIdentityCredentials::new(client.clone()), client }
    }

    /// The deployment's temporary keys when it runs with a web identity (exchanged with STS
    /// and cached), else `None`: its credentials are in its settings.
    async fn temporary_keys(&self, aws: &AwsSettings) -> Result<Option<TemporaryKeys>, ProviderError> {
        match &aws.auth {
            AwsAuth::WebIdentity(identity) => self.web_identity.keys(identity).await.map(Some),
            _ => Ok(None),
        }
    }
}

/// The credential to send: the settings' own, or the temporary keys obtained for them.
fn credential<'a>(
    aws: &'a AwsSettings,
    temporary: Option<&'a TemporaryKeys>,
) -> Result<Credential<'a>, ProviderError> {
    Ok(match (&aws.auth, temporary) {
        (_, Some(keys)) => Credential::Keys {
            access_key_id: &keys.access_key_id,
            secret_access_key: &keys.secret_access_key,
            session_token: Some(&keys.session_token),
        },
        (AwsAuth::BearerToken(token), None) => Credential::Bearer(token),
        (AwsAuth::Keys { access_key_id, secret_access_key, session_token }, None) => {
            Credential::Keys { access_key_id, secret_access_key, session_token: session_token.as_ref() }
        }
        (AwsAuth::WebIdentity(identity), None) => {
            return Err(ProviderError::Protocol(format!(
                "no temporary keys were obtained for role {}",
                identity.role_arn
            )));
        }
    })
}

#[async_trait::async_trait]
impl crate::Provider for BedrockProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let aws = deployment.aws.as_ref().ok_or_else(|| {
            ProviderError::BadRequest(format!("model '{}' has no AWS settings", deployment.model_name))
        })?;
        let openai: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ProviderError::BadRequest(format!("invalid JSON body: {e}")))?;
        let model = openai
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::BadRequest("missing `model`".into()))?;
        let model_id = bedrock_model_id(model);
        match request.endpoint {
            Endpoint::ChatCompletions => self.chat(deployment, aws, &openai, model_id, request.stream).await,
            Endpoint::Embeddings => self.embed(deployment, aws, &openai, model_id).await,
            other => Err(ProviderError::BadRequest(format!(
                "model '{}' is a Bedrock model, which serves chat completions and embeddings, not {}",
                deployment.model_name,
                other.path()
            ))),
        }
    }
}

impl BedrockProvider {
    async fn chat(
        &self,
        deployment: &Deployment,
        aws: &AwsSettings,
        openai: &Value,
        model_id: &str,
        stream: bool,
    ) -> Result<UpstreamResponse, ProviderError> {
        let include_usage =
            openai.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
        let converse = converse::to_converse_request(openai, model_id)?;
        // JSON mode's answer is a tool call turned into text, so LiteLLM (and this adapter)
        // makes one whole call and sends the result as a stream.
        let fake_stream = stream && converse.json_tool.is_some();
        let upstream_stream = stream && !fake_stream;
        let action = if upstream_stream { "converse-stream" } else { "converse" };
        let body = Bytes::from(converse.body.to_string());
        let temporary = self.temporary_keys(aws).await?;
        let credential = credential(aws, temporary.as_ref())?;
        let upstream = build_request(deployment, aws, &credential, model_id, action, body, upstream_stream)?;
        let response = transport::exchange_reading_headers(
            &self.client,
            deployment,
            upstream,
            upstream_stream,
            read_error,
        )
        .await?;
        let id = format!("chatcmpl-{}", uuid::Uuid::new_v4());
        let created = unix_now();
        let body = match response.body {
            UpstreamBody::Complete(bytes) => {
                let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    ProviderError::Protocol(format!("bedrock answered with invalid JSON: {e}"))
                })?;
                let completion = converse::to_chat_completion(
                    &answer,
                    model_id,
                    &id,
                    created,
                    converse.json_tool.as_deref(),
                );
                if fake_stream {
                    let chunks = converse::completion_as_chunks(&completion, include_usage);
                    UpstreamBody::Stream(Chunks(VecDeque::from(chunks)).boxed())
                } else {
                    UpstreamBody::Complete(Bytes::from(completion.to_string()))
                }
            }
            UpstreamBody::Stream(events) => {
                let mut events = EventStreamAsSse::new(events);
                if let Some((exception, message)) = events.leading_exception().await? {
                    return Err(exception_error(&exception, message, deployment));
                }
                let translator = converse::Translator::new(id, model_id.to_owned(), created, include_usage);
                UpstreamBody::Stream(TranslatedStream::new(events.boxed(), translator).boxed())
            }
        };
        Ok(UpstreamResponse { headers: response.headers, body })
    }

    async fn embed(
        &self,
        deployment: &Deployment,
        aws: &AwsSettings,
        openai: &Value,
        model_id: &str,
    ) -> Result<UpstreamResponse, ProviderError> {
        let inputs = embed::inputs(openai)?;
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut tokens = 0;
        let mut headers = http::HeaderMap::new();
        let temporary = self.temporary_keys(aws).await?;
        let credential = &credential(aws, temporary.as_ref())?;
        match embed::family(model_id)? {
            embed::Family::Titan { accepts_dimensions } => {
                for batch in inputs.chunks(embed::TITAN_CONCURRENCY) {
                    let calls = batch.iter().map(|text| async move {
                        let body = embed::titan_body(text, openai, accepts_dimensions)?;
                        self.invoke(deployment, aws, credential, model_id, body).await
                    });
                    for (answer, answer_headers) in futures_util::future::try_join_all(calls).await? {
                        let (vector, count) = embed::titan_answer(&answer)?;
                        vectors.push(vector);
                        tokens += count;
                        headers = answer_headers;
                    }
                }
            }
            embed::Family::Cohere => {
                for batch in inputs.chunks(embed::COHERE_BATCH) {
                    let body = embed::cohere_body(batch, openai)?;
                    let (answer, answer_headers) =
                        self.invoke(deployment, aws, credential, model_id, body).await?;
                    vectors.extend(embed::cohere_answer(&answer, batch.len())?);
                    tokens += input_token_count(&answer_headers);
                    headers = answer_headers;
                }
            }
        }
        let list = embed::embedding_list(vectors, model_id, tokens);
        Ok(UpstreamResponse { headers, body: UpstreamBody::Complete(Bytes::from(list.to_string())) })
    }

    /// One `InvokeModel` call: the JSON answer and the response headers.
    async fn invoke(
        &self,
        deployment: &Deployment,
        aws: &AwsSettings,
        credential: &Credential<'_>,
        model_id: &str,
        body: Value,
    ) -> Result<(Value, http::HeaderMap), ProviderError> {
        let body = Bytes::from(body.to_string());
        let upstream = build_request(deployment, aws, credential, model_id, "invoke", body, false)?;
        let response =
            transport::exchange_reading_headers(&self.client, deployment, upstream, false, read_error)
                .await?;
        let UpstreamBody::Complete(bytes) = response.body else {
            return Err(ProviderError::Protocol("bedrock streamed an invoke answer".into()));
        };
        let answer = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Protocol(format!("bedrock answered with invalid JSON: {e}")))?;
        Ok((answer, response.headers))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn input_token_count(headers: &http::HeaderMap) -> u64 {
    headers
        .get(INPUT_TOKEN_COUNT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Percent-encodes a model id as one path segment: ARNs carry `/` and `:`, and inference
/// profile ids `:`, which AWS expects encoded (the signature encodes the path once more).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `{api_base}/model/{modelId}/{action}`.
fn action_url(api_base: &str, model_id: &str, action: &str) -> String {
    format!("{}/model/{}/{action}", api_base.trim_end_matches('/'), encode_segment(model_id))
}

fn build_request(
    deployment: &Deployment,
    aws: &AwsSettings,
    credential: &Credential<'_>,
    model_id: &str,
    action: &str,
    body: Bytes,
    stream: bool,
) -> Result<http::Request<Full<Bytes>>, ProviderError> {
    let url = action_url(deployment.api_base.as_deref().unwrap_or_default(), model_id, action);
    let accept = if stream { &EVENT_STREAM } else { &APPLICATION_JSON };
    let builder = http::Request::post(url)
        .header(CONTENT_TYPE, APPLICATION_JSON.clone())
        .header(ACCEPT, accept.clone());
    // Extra headers go in before signing, so the signature covers them.
    let mut request =
        transport::with_extra_headers(builder, deployment)?.body(Full::new(body.clone())).map_err(|e| {
            ProviderError::BadRequest(format!(
                "cannot build the request for '{}': {e}",
                deployment.model_name
            ))
        })?;
    auth::authenticate(&mut request, &body, credential, &aws.region, deployment, SystemTime::now())?;
    Ok(request)
}

/// The status an AWS exception name stands for, as the gateway reports it (a stream's
/// exceptions are named in camel case, `throttlingException`; headers use `ThrottlingException`).
pub(crate) fn exception_status(name: &str) -> u16 {
    let name = name.strip_suffix("Exception").unwrap_or(name).to_ascii_lowercase();
    match name.as_str() {
        "throttling" | "servicequotaexceeded" | "toomanyrequests" => 429,
        "accessdenied" => 403,
        "unrecognizedclient"
        | "expiredtoken"
        | "invalidsignature"
        | "incompletesignature"
        | "missingauthenticationtoken"
        | "invalidclienttokenid"
        | "signaturedoesnotmatch" => 401,
        "validation" => 400,
        "resourcenotfound" => 404,
        "modeltimeout" => 408,
        "serviceunavailable" | "modelnotready" => 503,
        "modelerror" | "modelstreamerror" => 502,
        _ => 500,
    }
}

/// Whether a validation message says the input does not fit the model's context.
fn too_long(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "input is too long",
        "prompt is too long",
        "too many input tokens",
        "too many tokens",
        "context window",
        "context length",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

fn exception_error(exception: &str, message: String, deployment: &Deployment) -> ProviderError {
    let status = exception_status(exception);
    let code = (status == 400 && too_long(&message)).then(|| "context_length_exceeded".to_owned());
    let mut name = exception.to_owned();
    // The stream's camel-case names read like the header's once capitalised.
    if let Some(first) = name.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    ProviderError::Upstream {
        status,
        message: transport::redact(deployment, message),
        error_type: Some(name),
        param: None,
        code,
        retry_after: None,
    }
}

/// Bedrock's error response: the exception named in `x-amzn-ErrorType`
/// (`ThrottlingException:http://internal.amazon.com/coral/...`) or the body's `__type`
/// (`com.amazon.coral.service#UnrecognizedClientException`), the text in `message`.
fn read_error(status: u16, headers: &http::HeaderMap, body: &[u8], deployment: &Deployment) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let from_header = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).trim().to_owned());
    let from_body = json
        .as_ref()
        .and_then(|j| j.get("__type"))
        .and_then(Value::as_str)
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned());
    let exception = from_header.or(from_body).filter(|name| !name.is_empty());
    let message = json
        .as_ref()
        .and_then(|j| j.get("message").or_else(|| j.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| transport::quote_body(status, body));
    match exception {
        Some(exception) => exception_error(&exception, message, deployment),
        None => ProviderError::Upstream {
            status,
            message: transport::redact(deployment, message),
            error_type: None,
            param: None,
            code: None,
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(params: &str) -> Deployment {
        tollgate_domain::GatewayConfig::from_yaml(
            &format!("model_list:\n  - model_name: b\n    litellm_params: {{model: bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0, {params}}}\n"),
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    #[test]
    fn urls_encode_the_model_id_as_one_segment() {
        assert_eq!(
            action_url(
                "https://bedrock-runtime.us-east-1.amazonaws.com",
                "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                "converse"
            ),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
        );
        assert_eq!(
            action_url(
                "http://h:1/",
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3",
                "converse-stream"
            ),
            "http://h:1/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3/converse-stream"
        );
    }

    #[test]
    fn requests_are_signed_or_carry_the_api_key() {
        let signed = deployment(
            "aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret, aws_region_name: eu-central-1",
        );
        assert_eq!(signed.api_base.as_deref(), Some("https://bedrock-runtime.eu-central-1.amazonaws.com"));
        let aws = signed.aws.as_ref().unwrap();
        let request = build_request(
            &signed,
            aws,
            &credential(aws, None).unwrap(),
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "converse",
            Bytes::from_static(b"{}"),
            false,
        )
        .unwrap();
        let authorization = request.headers()["authorization"].to_str().unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{authorization}");
        assert!(authorization.contains("/eu-central-1/bedrock/aws4_request"), "{authorization}");
        assert!(request.headers().contains_key("x-amz-date"));

        let keyed = deployment("api_key: bedrock-api-key-123");
        let aws = keyed.aws.as_ref().unwrap();
        let request = build_request(
            &keyed,
            aws,
            &credential(aws, None).unwrap(),
            "m",
            "converse-stream",
            Bytes::new(),
            true,
        )
        .unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer bedrock-api-key-123");
        assert_eq!(request.headers()["accept"], "application/vnd.amazon.eventstream");
        assert!(!request.headers().contains_key("x-amz-date"));
    }

    #[test]
    fn errors_map_by_exception_name() {
        let d = deployment("api_key: bedrock-api-key-123");
        let error = |status: u16, header: Option<&'static str>, body: &str| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = header {
                headers.insert("x-amzn-errortype", HeaderValue::from_static(value));
            }
            match read_error(status, &headers, body.as_bytes(), &d) {
                ProviderError::Upstream { status, message, code, error_type, .. } => {
                    (status, message, code, error_type)
                }
                other => panic!("{other:?}"),
            }
        };
        let throttled = error(
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            r#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!((throttled.0, throttled.3.as_deref()), (429, Some("ThrottlingException")));
        assert_eq!(throttled.1, "Too many requests, please wait before trying again.");
        let long = error(
            400,
            Some("ValidationException"),
            r#"{"message":"Input is too long for requested model."}"#,
        );
        assert_eq!((long.0, long.2.as_deref()), (400, Some("context_length_exceeded")));
        let invalid = error(400, Some("ValidationException"), r#"{"message":"messages: field required"}"#);
        assert_eq!((invalid.0, invalid.2), (400, None));
        let unknown_key = error(
            403,
            None,
            r#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!((unknown_key.0, unknown_key.3.as_deref()), (401, Some("UnrecognizedClientException")));
        assert_eq!(error(403, Some("AccessDeniedException"), r#"{"Message":"no access"}"#).0, 403);
        assert_eq!(error(408, Some("ModelTimeoutException"), "{}").0, 408);
        assert_eq!(error(503, Some("ServiceUnavailableException"), "{}").0, 503);
        assert_eq!(error(429, Some("ModelNotReadyException"), "{}").0, 503);
        assert_eq!(error(424, Some("ModelErrorException"), "{}").0, 502);
        assert_eq!(error(502, None, "<html>bad gateway</html>").1, "<html>bad gateway</html>");
        let leaky = error(400, Some("ValidationException"), r#"{"message":"bad key bedrock-api-key-123"}"#);
        assert_eq!(leaky.1, "bad key [redacted]");
        assert_eq!(exception_status("throttlingException"), 429);
        assert_eq!(exception_status("modelStreamErrorException"), 502);
    }
}
