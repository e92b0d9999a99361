//! End-to-end: `vertex_ai/` deployments through the gateway to the mock's Vertex AI routes:
//! Gemini and Claude models, embeddings, and every way of getting a Google access token
//! (service-account key signed into a JWT, the metadata server, a bearer given as `api_key`),
//! cached, shared and renewed, with clear errors when the credentials fail.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{
    Behavior, GEMINI_FUNCTION_CALL_ARGS_JSON, METADATA_PROJECT, MockUpstream, REPLY_TEXT, RecordedRequest,
    TEST_SERVICE_ACCOUNT_EMAIL, TEST_SERVICE_ACCOUNT_PROJECT, TEST_UNTRUSTED_KEY_PEM, TOOL_USE_TEXT,
    gemini_error, test_service_account,
};

const PROJECT: &str = "my-project";
const GEMINI_PATH: &str =
    "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash";
const CLAUDE_PATH: &str =
    "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514";

fn host(mock: &MockUpstream) -> String {
    format!("http://{}", mock.addr())
}

fn token_uri(mock: &MockUpstream) -> String {
    format!("{}/token", host(mock))
}

/// A gateway config with Gemini, Claude and embedding models on the mock, authenticated by
/// `credentials` (litellm_params lines), plus `environment_variables` lines.
fn config(mock: &MockUpstream, credentials: &str, environment: &str) -> String {
    let base = host(mock);
    format!(
        "model_list:
  - model_name: flash
    litellm_params:
      model: vertex_ai/gemini-2.5-flash
      vertex_project: {PROJECT}
      api_base: {base}
      {credentials}
  - model_name: claude
    litellm_params:
      model: vertex_ai/claude-sonnet-4@20250514
      vertex_project: {PROJECT}
      vertex_location: us-east5
      api_base: {base}
      {credentials}
  - model_name: vertex-embed
    litellm_params:
      model: vertex_ai/text-embedding-005
      vertex_project: {PROJECT}
      api_base: {base}
      {credentials}
general_settings:
  master_key: {MASTER_KEY}
environment_variables:
  PLACEHOLDER: unused
  {environment}
"
    )
}

/// The test service account's key as the JSON text of `VERTEX_KEY`, read by
/// `vertex_credentials: os.environ/VERTEX_KEY`.
fn key_config(mock: &MockUpstream, key_json: &str) -> String {
    // Single-quoted YAML keeps the JSON's backslashes as they are; the key holds no quote.
    assert!(!key_json.contains('\''));
    config(mock, "vertex_credentials: os.environ/VERTEX_KEY", &format!("VERTEX_KEY: '{key_json}'"))
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}
    }}])
}

fn model_calls(mock: &MockUpstream) -> Vec<RecordedRequest> {
    mock.requests().into_iter().filter(|r| r.path.contains("/publishers/")).collect()
}

fn token_requests(mock: &MockUpstream) -> Vec<RecordedRequest> {
    mock.requests().into_iter().filter(|r| r.path == "/token").collect()
}

fn bearer(request: &RecordedRequest) -> &str {
    request.headers["authorization"].to_str().unwrap()
}

/// The decoded claims of the assertion in a `jwt-bearer` token request.
fn assertion_claims(request: &RecordedRequest) -> Value {
    let form = String::from_utf8_lossy(&request.body).into_owned();
    assert!(form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"), "{form}");
    let assertion = form.split('&').find_map(|pair| pair.strip_prefix("assertion=")).expect("an assertion");
    let claims = assertion.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

#[tokio::test]
async fn gemini_chat_stream_and_tools_share_one_service_account_token() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&key_config(&mock, &test_service_account(&token_uri(&mock)))).await;

    let reply = chat(
        &gateway,
        json!({"model": "flash", "max_tokens": 50, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"}
        ]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["model"], "flash");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let calls = model_calls(&mock);
    assert_eq!(calls[0].path, format!("{GEMINI_PATH}:generateContent"));
    assert_eq!(bearer(&calls[0]), "Bearer mock-google-token-1");
    let sent: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(sent["systemInstruction"], json!({"parts": [{"text": "You are terse."}]}));
    assert_eq!(sent["contents"], json!([{"role": "user", "parts": [{"text": "hello"}]}]));
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 50);

    // The JWT the gateway signed: the mock verified its signature; here, its claims.
    let claims = assertion_claims(&token_requests(&mock)[0]);
    assert_eq!(claims["iss"], TEST_SERVICE_ACCOUNT_EMAIL);
    assert_eq!(claims["aud"], token_uri(&mock));
    assert_eq!(claims["scope"], "https://www.googleapis.com/auth/cloud-platform");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);

    let mut stream = hello("flash");
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let reply = chat(&gateway, stream).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    assert!(chunks.iter().all(|c| c["model"] == "flash"));
    assert!(chunks.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let calls = model_calls(&mock);
    assert_eq!(calls[1].path, format!("{GEMINI_PATH}:streamGenerateContent"));
    assert_eq!(calls[1].query.as_deref(), Some("alt=sse"));

    let called = chat(
        &gateway,
        json!({"model": "flash", "tools": weather_tool(), "messages": [{"role": "user", "content": "weather in Paris?"}]}),
    )
    .await
    .json();
    let choice = &called["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, serde_json::from_str::<Value>(GEMINI_FUNCTION_CALL_ARGS_JSON).unwrap());
    let answered = chat(
        &gateway,
        json!({"model": "flash", "tools": weather_tool(), "messages": [
            {"role": "user", "content": "weather in Paris?"},
            choice["message"].clone(),
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"sky\": \"clear\"}"}
        ]}),
    )
    .await;
    assert_eq!(answered.json()["choices"][0]["message"]["content"], REPLY_TEXT);
    let sent: Value = serde_json::from_slice(&model_calls(&mock)[3].body).unwrap();
    assert_eq!(sent["contents"][1]["role"], "model", "Vertex needs every turn's role");
    assert_eq!(sent["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather");

    assert_eq!(mock.google_tokens_issued(), 1, "one token served every request");
    assert!(model_calls(&mock).iter().all(|call| bearer(call) == "Bearer mock-google-token-1"));
}

#[tokio::test]
async fn claude_on_vertex_chats_and_streams_through_raw_predict() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&key_config(&mock, &test_service_account(&token_uri(&mock)))).await;

    let reply = chat(
        &gateway,
        json!({"model": "claude", "max_tokens": 64, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}
        ]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["model"], "claude");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let call = &model_calls(&mock)[0];
    assert_eq!(call.path, format!("{CLAUDE_PATH}:rawPredict"));
    assert_eq!(bearer(call), "Bearer mock-google-token-1");
    let sent: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(sent["anthropic_version"], "vertex-2023-10-16");
    assert!(sent.get("model").is_none(), "the URL names the model");
    assert_eq!(sent["system"], json!([{"type": "text", "text": "be brief"}]));
    assert_eq!(sent["max_tokens"], 64);

    let mut stream = hello("claude");
    stream["stream"] = json!(true);
    let reply = chat(&gateway, stream).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("tok0 "), "{text}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(model_calls(&mock)[1].path, format!("{CLAUDE_PATH}:streamRawPredict"));

    let called = chat(
        &gateway,
        json!({"model": "claude", "tools": weather_tool(), "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await
    .json();
    assert_eq!(called["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(called["choices"][0]["message"]["content"], TOOL_USE_TEXT);
    assert_eq!(called["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(mock.google_tokens_issued(), 1, "Gemini and Claude deployments share the credential's token");
}

#[tokio::test]
async fn embeddings_go_through_predict() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&key_config(&mock, &test_service_account(&token_uri(&mock)))).await;
    let reply = send(post(
        &gateway.url("/v1/embeddings"),
        Some(MASTER_KEY),
        json!({"model": "vertex-embed", "input": ["a", "b"], "dimensions": 16}).to_string(),
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["model"], "vertex-embed");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 16);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let call = &model_calls(&mock)[0];
    assert_eq!(
        call.path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    );
    let sent: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        sent,
        json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 16}})
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch_and_tokens_renew_before_they_expire() {
    let mock = MockUpstream::start().await;
    // Four-second tokens are renewed after two seconds (half their life), which leaves the
    // concurrent burst below ample time on a loaded machine.
    mock.set_google_token_lifetime(4);
    let gateway = TestGateway::start(&key_config(&mock, &test_service_account(&token_uri(&mock)))).await;

    let replies = futures_join(&gateway, 6).await;
    assert!(replies.iter().all(|status| *status == 200), "{replies:?}");
    assert_eq!(mock.google_tokens_issued(), 1, "six concurrent requests, one token fetch");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(chat(&gateway, hello("flash")).await.status, 200);
    assert_eq!(mock.google_tokens_issued(), 2, "renewed ahead of its expiry");
    assert_eq!(bearer(model_calls(&mock).last().unwrap()), "Bearer mock-google-token-2");

    // A token Vertex refuses is dropped at once rather than kept until its renewal time.
    mock.set_google_token_lifetime(3600);
    mock.push(gemini_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."));
    assert_error(&chat(&gateway, hello("flash")).await, 401);
    assert_eq!(chat(&gateway, hello("flash")).await.status, 200);
    assert_eq!(mock.google_tokens_issued(), 3);
    assert_eq!(bearer(model_calls(&mock).last().unwrap()), "Bearer mock-google-token-3");
}

/// Sends `n` chat requests at once; their statuses.
async fn futures_join(gateway: &TestGateway, n: usize) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request =
            post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), hello("flash").to_string());
        tasks.spawn(send(request));
    }
    let mut statuses = Vec::with_capacity(n);
    while let Some(reply) = tasks.join_next().await {
        statuses.push(reply.expect("request task").status);
    }
    statuses
}

#[tokio::test]
async fn without_credentials_the_metadata_server_gives_token_and_project() {
    let mock = MockUpstream::start().await;
    // Seed 003's GKE Workload Identity config: no key, no project.
    let yaml = format!(
        "model_list:
  - model_name: gemini-flash
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_location: europe-west4
      api_base: {}
environment_variables:
  GCE_METADATA_HOST: {}
",
        host(&mock),
        mock.addr()
    );
    let gateway = TestGateway::start(&yaml).await;
    for _ in 0..2 {
        let reply =
            send(post(&gateway.url("/v1/chat/completions"), None, hello("gemini-flash").to_string())).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    let calls = model_calls(&mock);
    assert_eq!(
        calls[0].path,
        format!(
            "/v1/projects/{METADATA_PROJECT}/locations/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent"
        )
    );
    assert!(calls.iter().all(|call| bearer(call) == "Bearer mock-metadata-token-1"));
    assert_eq!((mock.metadata_tokens_issued(), mock.google_tokens_issued()), (1, 0));
    let metadata: Vec<_> =
        mock.requests().into_iter().filter(|r| r.path.starts_with("/computeMetadata/")).collect();
    assert_eq!(metadata.len(), 2, "one token and one project lookup");
    assert!(metadata.iter().all(|r| r.headers["metadata-flavor"] == "Google"));
}

#[tokio::test]
async fn a_key_file_named_by_google_application_credentials_gives_the_project_too() {
    let mock = MockUpstream::start().await;
    let path = std::env::temp_dir().join(format!(
        "tollgate-vertex-key-{}-{}.json",
        std::process::id(),
        mock.addr().port()
    ));
    std::fs::write(&path, test_service_account(&token_uri(&mock))).unwrap();
    let yaml = format!(
        "model_list:
  - model_name: flash
    litellm_params: {{model: vertex_ai/gemini-2.5-flash, vertex_location: global, api_base: '{}'}}
environment_variables:
  GOOGLE_APPLICATION_CREDENTIALS: {}
",
        host(&mock),
        path.display()
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello("flash").to_string())).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(
        model_calls(&mock)[0].path,
        format!(
            "/v1/projects/{TEST_SERVICE_ACCOUNT_PROJECT}/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
        )
    );
    assert_eq!(mock.google_tokens_issued(), 1);
}

#[tokio::test]
async fn an_api_key_is_sent_as_the_bearer_with_no_token_fetch() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock, "api_key: ya29.given-token", "")).await;
    assert_eq!(chat(&gateway, hello("flash")).await.status, 200);
    assert_eq!(bearer(&model_calls(&mock)[0]), "Bearer ya29.given-token");
    assert!(token_requests(&mock).is_empty());
}

#[tokio::test]
async fn credentials_that_fail_are_clear_errors_without_key_material() {
    let mock = MockUpstream::start().await;

    // A key the token endpoint does not trust: the refusal names the source, never the key.
    let mut untrusted: Value = serde_json::from_str(&test_service_account(&token_uri(&mock))).unwrap();
    untrusted["private_key"] = json!(TEST_UNTRUSTED_KEY_PEM);
    let gateway = TestGateway::start(&key_config(&mock, &untrusted.to_string())).await;
    let reply = chat(&gateway, hello("flash")).await;
    let error = assert_error(&reply, 401);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "could not get a Google access token from the key in vertex_credentials (service account {TEST_SERVICE_ACCOUNT_EMAIL})"
        )),
        "{message}"
    );
    assert!(message.contains("invalid_grant: Invalid JWT Signature."), "{message}");
    let text = String::from_utf8_lossy(&reply.body);
    assert!(!text.contains("PRIVATE KEY") && !text.contains("MII"), "no key material: {text}");
    assert!(model_calls(&mock).is_empty(), "no model call without a token");

    // A key file that is not there.
    let gateway =
        TestGateway::start(&config(&mock, "vertex_credentials: /nonexistent/tollgate-key.json", "")).await;
    let error = assert_error(&chat(&gateway, hello("claude")).await, 401);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the key file /nonexistent/tollgate-key.json (from vertex_credentials): cannot read it"
        ),
        "{message}"
    );

    // No credentials and no metadata server: 503, which the router may retry.
    let gateway = TestGateway::start(&config(&mock, "", "GCE_METADATA_HOST: 127.0.0.1:1")).await;
    let error = assert_error(&chat(&gateway, hello("flash")).await, 503);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("the GCE metadata server at 127.0.0.1:1"), "{message}");
    assert!(message.contains("set vertex_credentials or GOOGLE_APPLICATION_CREDENTIALS"), "{message}");
    assert!(model_calls(&mock).is_empty());

    // Vertex's own refusal of the model call keeps Google's message and status.
    let gateway = TestGateway::start(&config(&mock, "api_key: ya29.revoked", "")).await;
    mock.push(gemini_error(403, "PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied"));
    let error = assert_error(&chat(&gateway, hello("flash")).await, 403);
    assert_eq!(error["message"], "Permission 'aiplatform.endpoints.predict' denied");
    mock.push(Behavior::RateLimited { retry_after_secs: 3 });
    assert_error(&chat(&gateway, hello("claude")).await, 429);
}

#[tokio::test]
async fn a_gcloud_user_file_trades_its_refresh_token() {
    let mock = MockUpstream::start().await;
    let user = json!({
        "type": "authorized_user",
        "client_id": "764086051850-test.apps.googleusercontent.com",
        "client_secret": "d-test-secret",
        "refresh_token": "1//test-refresh-token",
        "quota_project_id": "user-quota-project",
        "token_uri": token_uri(&mock),
    });
    let yaml = format!(
        "model_list:
  - model_name: flash
    litellm_params:
      model: vertex_ai/gemini-2.5-flash
      api_base: {}
      vertex_credentials: {}
",
        host(&mock),
        user
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello("flash").to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let form = String::from_utf8_lossy(&token_requests(&mock)[0].body).into_owned();
    assert!(
        form.starts_with("grant_type=refresh_token&client_id=764086051850-test.apps.googleusercontent.com"),
        "{form}"
    );
    assert!(form.contains("refresh_token=1%2F%2Ftest-refresh-token"), "{form}");
    let call = &model_calls(&mock)[0];
    assert!(call.path.starts_with("/v1/projects/user-quota-project/locations/us-central1/"), "{}", call.path);
    assert_eq!(bearer(call), "Bearer mock-google-token-1");
}
