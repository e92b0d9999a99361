//! End-to-end tests of the mock's Vertex AI side through a real hyper client: Google's OAuth
//! token endpoint (a service account's signed JWT, a refresh token), the metadata server,
//! and the publisher model routes with their bearer-token check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_mock_upstream::{
    EMBEDDING_DIMENSIONS, GOOGLE_TOKEN_PREFIX, METADATA_PROJECT, METADATA_TOKEN_PREFIX, MockUpstream,
    REPLY_TEXT, TEST_SERVICE_ACCOUNT_EMAIL, TEST_SERVICE_ACCOUNT_JSON, TEST_UNTRUSTED_KEY_PEM, gemini_error,
};

/// Bound on every single client operation, so a broken mock fails fast instead of hanging.
const STEP: Duration = Duration::from_secs(2);
const GEMINI: &str = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash";
const CLAUDE: &str = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514";
const HELLO: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

async fn send(
    mock: &MockUpstream,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(format!("http://{}{path}", mock.addr()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("valid request");
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(STEP, client.request(request)).await.expect("in time").expect("sent");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(STEP, body.collect()).await.expect("in time").expect("read").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// A service-account JWT for the mock's `/token`, signed with `pem`.
fn assertion(mock: &MockUpstream, pem: &str, iss: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "iss": iss,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "aud": format!("http://{}/token", mock.addr()),
            "iat": now,
            "exp": now + 3600,
        })
        .to_string(),
    );
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&STANDARD.decode(body).unwrap()).unwrap();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        format!("{header}.{claims}").as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn test_key_pem() -> String {
    let key: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT_JSON).unwrap();
    key["private_key"].as_str().unwrap().to_owned()
}

async fn token_for(mock: &MockUpstream, assertion: &str) -> Reply {
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}");
    send(mock, Method::POST, "/token", &[("content-type", "application/x-www-form-urlencoded")], &form).await
}

async fn google_token(mock: &MockUpstream) -> String {
    let reply = token_for(mock, &assertion(mock, &test_key_pem(), TEST_SERVICE_ACCOUNT_EMAIL)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_token_endpoint_trusts_only_the_test_service_account() {
    let mock = MockUpstream::start().await;
    let reply = token_for(&mock, &assertion(&mock, &test_key_pem(), TEST_SERVICE_ACCOUNT_EMAIL)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["access_token"], format!("{GOOGLE_TOKEN_PREFIX}1"));
    assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(3599)));
    assert_eq!(reply.headers["cache-control"], "no-store, no-cache");

    let forged =
        token_for(&mock, &assertion(&mock, TEST_UNTRUSTED_KEY_PEM, TEST_SERVICE_ACCOUNT_EMAIL)).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        forged.json(),
        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    );
    let stranger =
        token_for(&mock, &assertion(&mock, &test_key_pem(), "someone@else.iam.gserviceaccount.com")).await;
    assert_eq!(stranger.json()["error"], "invalid_grant");

    let form = "grant_type=refresh_token&client_id=c&client_secret=s&refresh_token=r";
    let user = send(&mock, Method::POST, "/token", &[], form).await;
    assert_eq!(user.json()["access_token"], format!("{GOOGLE_TOKEN_PREFIX}2"));
    let wrong = send(&mock, Method::POST, "/token", &[], "grant_type=client_credentials").await;
    assert_eq!(wrong.json()["error"], "unsupported_grant_type");
    assert_eq!(mock.google_tokens_issued(), 2);
}

#[tokio::test]
async fn the_metadata_server_wants_its_header() {
    let mock = MockUpstream::start().await;
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    assert_eq!(send(&mock, Method::GET, path, &[], "").await.status, StatusCode::FORBIDDEN);
    let reply = send(&mock, Method::GET, path, &[("metadata-flavor", "Google")], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["access_token"], format!("{METADATA_TOKEN_PREFIX}1"));
    assert_eq!(reply.headers["metadata-flavor"], "Google");
    let project = send(
        &mock,
        Method::GET,
        "/computeMetadata/v1/project/project-id",
        &[("metadata-flavor", "Google")],
        "",
    )
    .await;
    assert_eq!(project.body, METADATA_PROJECT);
    assert_eq!((mock.metadata_tokens_issued(), mock.google_tokens_issued()), (1, 0));
}

#[tokio::test]
async fn model_routes_need_a_live_bearer_token() {
    let mock = MockUpstream::start().await;
    let generate = format!("{GEMINI}:generateContent");
    let missing = send(&mock, Method::POST, &generate, &[], HELLO).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json()["error"]["status"], "UNAUTHENTICATED");

    let token = google_token(&mock).await;
    let bearer = format!("Bearer {token}");
    let reply = send(&mock, Method::POST, &generate, &[("authorization", &bearer)], HELLO).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["candidates"][0]["content"]["parts"][0]["text"], REPLY_TEXT);
    let elsewhere =
        send(&mock, Method::POST, &generate, &[("authorization", "Bearer ya29.external")], HELLO).await;
    assert_eq!(elsewhere.status, StatusCode::OK, "a token the mock did not mint is taken on trust");

    mock.set_google_token_lifetime(0);
    let expired = format!("Bearer {}", google_token(&mock).await);
    let refused = send(&mock, Method::POST, &generate, &[("authorization", &expired)], HELLO).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let forged =
        send(&mock, Method::POST, &generate, &[("authorization", "Bearer mock-google-token-99")], HELLO)
            .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);

    let no_role = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    let reply = send(&mock, Method::POST, &generate, &[("authorization", &bearer)], no_role).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["message"], "Please use a valid role: user, model.");

    mock.push(gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"));
    let limited = send(&mock, Method::POST, &generate, &[("authorization", &bearer)], HELLO).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "behaviours apply to Vertex routes");
    let stream = format!("{GEMINI}:streamGenerateContent?alt=sse");
    let reply = send(&mock, Method::POST, &stream, &[("authorization", &bearer)], HELLO).await;
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert!(reply.body.starts_with(b"data: {"));
}

#[tokio::test]
async fn claude_takes_vertex_s_body_and_predict_embeds() {
    let mock = MockUpstream::start().await;
    let auth = [("authorization", "Bearer ya29.external")];
    let raw = format!("{CLAUDE}:rawPredict");
    let body = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let reply = send(&mock, Method::POST, &raw, &auth, &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["model"], "claude-sonnet-4@20250514");
    assert_eq!(reply.json()["content"][0]["text"], REPLY_TEXT);

    let mut with_model = body.clone();
    with_model["model"] = json!("claude-sonnet-4");
    let reply = send(&mock, Method::POST, &raw, &auth, &with_model.to_string()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    let mut old_version = body.clone();
    old_version["anthropic_version"] = json!("2023-06-01");
    assert_eq!(
        send(&mock, Method::POST, &raw, &auth, &old_version.to_string()).await.status,
        StatusCode::BAD_REQUEST
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let reply =
        send(&mock, Method::POST, &format!("{CLAUDE}:streamRawPredict"), &auth, &streamed.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.starts_with("event: message_start") && text.contains("event: message_stop"), "{text}");

    let predict = "/v1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict";
    let reply =
        send(&mock, Method::POST, predict, &auth, r#"{"instances":[{"content":"a"},{"content":"bc"}]}"#)
            .await;
    let answer = reply.json();
    assert_eq!(answer["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(
        answer["predictions"][1]["embeddings"]["values"].as_array().unwrap().len(),
        EMBEDDING_DIMENSIONS
    );
    assert!(answer["predictions"][0]["embeddings"]["statistics"]["token_count"].as_u64().unwrap() > 0);
    assert_eq!(answer["metadata"]["billableCharacterCount"], 3);
    let other = "/v1/projects/p/locations/l/publishers/meta/models/llama:rawPredict";
    let reply = send(&mock, Method::POST, other, &auth, "{}").await;
    assert_eq!(
        (reply.status, reply.json()["error"]["status"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
}
