//! End-to-end tests of Azure OpenAI's deployment routes and Entra ID's token endpoint
//! through a real hyper client: routing, api-version and credential checks, the deployment
//! standing in for `model`, and tokens that consume no scripted behaviour.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_mock_upstream::{Behavior, DEFAULT_STREAM_CHUNKS, MockUpstream};

/// Bound on every single client operation, so a broken mock fails fast instead of hanging.
const STEP: Duration = Duration::from_secs(2);

const CHAT_BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const TOKEN_FORM: &str = "grant_type=client_credentials&client_id=app-id&client_secret=s3cr%2Bt\
                          &scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default";

/// Sends `body` to `path` (which may carry a query) with the given extra headers and
/// returns the status, headers and raw body.
async fn send(
    mock: &MockUpstream,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = Request::builder().method(method).uri(format!("http://{}{path}", mock.addr()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("valid request");
    let response = tokio::time::timeout(STEP, client.request(request))
        .await
        .expect("mock answered in time")
        .expect("request succeeded");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = tokio::time::timeout(STEP, response.into_body().collect())
        .await
        .expect("body arrived in time")
        .expect("body read")
        .to_bytes();
    (status, headers, bytes)
}

async fn send_json(
    mock: &MockUpstream,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value) {
    let mut with_type = vec![("content-type", "application/json")];
    with_type.extend_from_slice(headers);
    let (status, _, bytes) = send(mock, Method::POST, path, &with_type, body).await;
    (status, serde_json::from_slice(&bytes).expect("body is json"))
}

async fn token(mock: &MockUpstream, form: &str) -> (StatusCode, http::HeaderMap, Value) {
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, bytes) =
        send(mock, Method::POST, "/tenant-1/oauth2/v2.0/token", &headers, form).await;
    (status, headers, serde_json::from_slice(&bytes).expect("body is json"))
}

const CHAT: &str = "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21";
const KEY: [(&str, &str); 1] = [("api-key", "azure-key")];

#[tokio::test]
async fn chat_with_api_key_answers_like_openai_and_records_the_query() {
    let mock = MockUpstream::start().await;
    let (status, body) = send_json(&mock, CHAT, &KEY, CHAT_BODY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o", "a model in the body is answered as it is");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(body["usage"]["total_tokens"].is_u64());

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/openai/deployments/my-gpt/chat/completions");
    let query = recorded[0].query.as_deref().expect("query recorded");
    assert!(query.contains("api-version="), "{query}");
    assert_eq!(recorded[0].headers["api-key"], "azure-key");
}

#[tokio::test]
async fn query_is_none_without_one() {
    let mock = MockUpstream::start().await;
    let (status, _) = send_json(&mock, "/v1/chat/completions", &[], CHAT_BODY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mock.requests()[0].query, None);
}

#[tokio::test]
async fn bearer_token_is_accepted() {
    let mock = MockUpstream::start().await;
    let (status, body) =
        send_json(&mock, CHAT, &[("authorization", "Bearer mock-entra-token-1")], CHAT_BODY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
}

#[tokio::test]
async fn missing_api_version_is_azure_404_and_consumes_no_behavior() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Error { status: 503, body: "{}".to_owned() });
    for path in [
        "/openai/deployments/my-gpt/chat/completions",
        "/openai/deployments/my-gpt/chat/completions?api-version=",
        "/openai/deployments/my-gpt/embeddings?foo=bar",
    ] {
        let (status, body) = send_json(&mock, path, &KEY, CHAT_BODY).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, json!({"error": {"code": "404", "message": "Resource not found"}}), "{path}");
    }
    // Unknown Azure paths are Azure-shaped too.
    let (status, body) =
        send_json(&mock, "/openai/deployments/my-gpt/images?api-version=1", &KEY, "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "404");
    // The scripted error is still queued for the next real request.
    let (status, _) = send_json(&mock, CHAT, &KEY, CHAT_BODY).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn missing_credentials_are_401() {
    let mock = MockUpstream::start().await;
    for headers in [
        &[][..],
        &[("api-key", "")][..],
        &[("authorization", "Basic abc")][..],
        &[("authorization", "Bearer ")][..],
    ] {
        let (status, body) = send_json(&mock, CHAT, headers, CHAT_BODY).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(body["error"]["code"], "401");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.starts_with("Access denied due to invalid subscription key"), "{message}");
    }
}

#[tokio::test]
async fn body_without_model_answers_with_the_deployment() {
    let mock = MockUpstream::start().await;
    let (status, body) =
        send_json(&mock, CHAT, &KEY, r#"{"messages":[{"role":"user","content":"hi"}]}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "my-gpt");

    let path = "/openai/deployments/my-davinci/completions?api-version=2024-10-21";
    let (status, body) = send_json(&mock, path, &KEY, r#"{"prompt":"hi"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "my-davinci");

    // OpenAI's validation of the rest still applies.
    let (status, body) = send_json(&mock, CHAT, &KEY, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "messages");
}

#[tokio::test]
async fn stream_via_azure_ends_with_done() {
    let mock = MockUpstream::start().await;
    let body = r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let headers = [("content-type", "application/json"), ("api-key", "k")];
    let (status, response_headers, bytes) = send(&mock, Method::POST, CHAT, &headers, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response_headers["content-type"], "text/event-stream");
    let text = std::str::from_utf8(&bytes).expect("utf-8");
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    // Role chunk, content chunks, finish chunk, [DONE].
    assert_eq!(events.len(), DEFAULT_STREAM_CHUNKS + 3, "{text}");
    let first: Value = serde_json::from_str(&events[0]["data: ".len()..]).expect("chunk is json");
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "my-gpt");
}

#[tokio::test]
async fn behaviors_apply_to_azure_routes() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Error { status: 429, body: r#"{"error":{"code":"429"}}"#.to_owned() });
    let (status, body) = send_json(&mock, CHAT, &KEY, CHAT_BODY).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "429");
}

#[tokio::test]
async fn embeddings_via_azure() {
    let mock = MockUpstream::start().await;
    let path = "/openai/deployments/my-embedder/embeddings?api-version=2024-10-21";
    let (status, body) = send_json(&mock, path, &KEY, r#"{"input":["a","b"]}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "my-embedder");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["data"][1]["object"], "embedding");
}

#[tokio::test]
async fn token_endpoint_issues_numbered_tokens() {
    let mock = MockUpstream::start().await;
    assert_eq!(mock.tokens_issued(), 0);
    let (status, headers, body) = token(&mock, TOKEN_FORM).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
               "access_token": "mock-entra-token-1"})
    );
    let (_, _, body) = token(&mock, TOKEN_FORM).await;
    assert_eq!(body["access_token"], "mock-entra-token-2");
    assert_eq!(mock.tokens_issued(), 2);
    let recorded = mock.requests();
    assert_eq!(recorded[0].path, "/tenant-1/oauth2/v2.0/token");
    assert_eq!(recorded[0].body, TOKEN_FORM.as_bytes());
}

#[tokio::test]
async fn token_lifetime_is_configurable() {
    let mock = MockUpstream::start().await;
    mock.set_token_lifetime(2);
    let (status, _, body) = token(&mock, TOKEN_FORM).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 2);
    assert_eq!(body["ext_expires_in"], 2);
}

#[tokio::test]
async fn bad_token_requests_are_400() {
    let mock = MockUpstream::start().await;
    for form in [
        "grant_type=password&client_id=a&client_secret=b&scope=c",
        "client_id=a&client_secret=b&scope=c",
        "grant_type=client_credentials&client_secret=b&scope=c",
        "grant_type=client_credentials&client_id=a&client_secret=&scope=c",
        "grant_type=client_credentials&client_id=a&client_secret=b",
        "grant_type=client_credentials&client_id=%zz&client_secret=b&scope=c",
        "",
    ] {
        let (status, _, body) = token(&mock, form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form}");
        assert_eq!(body["error"], "invalid_request", "{form}");
        assert!(body["error_description"].is_string(), "{form}");
    }
    assert_eq!(mock.tokens_issued(), 0);
}

#[tokio::test]
async fn token_request_does_not_consume_a_behavior() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Error { status: 500, body: r#"{"error":{"code":"500"}}"#.to_owned() });
    let (status, _, body) = token(&mock, TOKEN_FORM).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(mock.tokens_issued(), 1);
    let (status, _) =
        send_json(&mock, CHAT, &[("authorization", "Bearer mock-entra-token-1")], CHAT_BODY).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "the scripted error reached the model call");
    let (status, _) = send_json(&mock, CHAT, &KEY, CHAT_BODY).await;
    assert_eq!(status, StatusCode::OK);
}
