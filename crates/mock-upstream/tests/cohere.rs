//! End-to-end tests of the mock's Cohere v2 routes and its Voyage and Jina routes through a
//! real hyper client: key checks, error shapes (Cohere's `{"id","message"}`, FastAPI's
//! `{"detail"}`), 404s under each prefix, scripted behaviours, and the SSE framing of a chat
//! stream.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_mock_upstream::{
    Behavior, COHERE_TEMPLATE_TOKENS, DEFAULT_STREAM_CHUNKS, EMBEDDING_TOKENS_PER_INPUT, MockUpstream,
    PROMPT_TOKENS, REPLY_TEXT, cohere_error,
};

/// Bound on every single client operation, so a broken mock fails fast instead of hanging.
const STEP: Duration = Duration::from_secs(2);

async fn post(
    mock: &MockUpstream,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut builder =
        Request::post(format!("http://{}{path}", mock.addr())).header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let request = builder.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response =
        tokio::time::timeout(STEP, client.request(request)).await.expect("answered in time").unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(STEP, body.collect()).await.expect("body in time").unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn cohere_checks_the_key_and_the_fields() {
    let mock = MockUpstream::start().await;
    let hello = json!({"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = post(&mock, "/v2/chat", None, hello.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&body)["message"], "no api key supplied");
    assert!(json_of(&body)["id"].is_string());

    let mut leaky = hello.clone();
    leaky["stream_options"] = json!({"include_usage": true});
    let (status, _, body) = post(&mock, "/v2/chat", Some("co-key"), leaky).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&body)["message"], "invalid request: unknown field: stream_options");

    let (status, _, body) = post(&mock, "/v2/chat", Some("co-key"), hello).await;
    assert_eq!(status, StatusCode::OK);
    let answer = json_of(&body);
    assert_eq!(answer["finish_reason"], "COMPLETE");
    assert_eq!(answer["message"]["content"], json!([{"type": "text", "text": REPLY_TEXT}]));
    assert_eq!(answer["usage"]["tokens"]["input_tokens"], PROMPT_TOKENS + COHERE_TEMPLATE_TOKENS);
    assert_eq!(answer["usage"]["billed_units"]["input_tokens"], PROMPT_TOKENS);

    let (status, _, body) = post(&mock, "/v2/generate", Some("co-key"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json_of(&body)["message"].as_str().unwrap().contains("/v2/generate"));
}

#[tokio::test]
async fn cohere_streams_named_events_one_per_frame() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, body) = post(&mock, "/v2/chat", Some("co-key"), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), DEFAULT_STREAM_CHUNKS + 4, "{events:#?}");
    for event in &events {
        let (name, data) = event.split_once('\n').unwrap();
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(name.strip_prefix("event: "), data["type"].as_str(), "the event line names the type");
    }
    assert!(events.last().unwrap().starts_with("event: message-end\n"));
}

#[tokio::test]
async fn behaviours_answer_in_each_api_s_shape() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::RateLimited { retry_after_secs: 3 });
    mock.push(cohere_error(401, "invalid api token"));
    mock.push(Behavior::RateLimited { retry_after_secs: 2 });
    let rerank = json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]});
    let (status, headers, body) = post(&mock, "/v2/rerank", Some("k"), rerank.clone()).await;
    assert_eq!(
        (status, &headers["retry-after"]),
        (StatusCode::TOO_MANY_REQUESTS, &"3".parse::<http::HeaderValue>().unwrap())
    );
    assert!(json_of(&body)["message"].as_str().unwrap().contains("Trial key"));
    let (status, _, body) = post(&mock, "/v2/rerank", Some("k"), rerank).await;
    assert_eq!(
        (status, json_of(&body)["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid api token"))
    );
    let embed = json!({"model": "voyage-3.5", "input": ["a"]});
    let (status, _, body) = post(&mock, "/voyage/v1/embeddings", Some("k"), embed.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(json_of(&body)["detail"].as_str().unwrap().contains("rate limit"));
    let (status, _, body) = post(&mock, "/voyage/v1/embeddings", Some("k"), embed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["data"][0]["object"], "embedding");
}

#[tokio::test]
async fn voyage_and_jina_refuse_unknown_fields_and_missing_keys() {
    let mock = MockUpstream::start().await;
    let (status, _, body) =
        post(&mock, "/jina/v1/rerank", None, json!({"model": "m", "query": "q", "documents": ["a"]})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(json_of(&body)["detail"].is_string());
    let (status, _, body) = post(
        &mock,
        "/voyage/v1/embeddings",
        Some("k"),
        json!({"model": "m", "input": ["a"], "encoding_format": "float", "dimensions": 8}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&body)["detail"], "Unrecognized argument: dimensions");
    let (status, _, body) = post(&mock, "/jina/v1/classify", Some("k"), json!({})).await;
    assert_eq!((status, json_of(&body)), (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})));
    // Under the prefixes only: the bare OpenAI path is still OpenAI's.
    let (status, _, body) =
        post(&mock, "/v1/embeddings", Some("k"), json!({"model": "m", "input": ["a"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["usage"]["prompt_tokens"], EMBEDDING_TOKENS_PER_INPUT);
}
