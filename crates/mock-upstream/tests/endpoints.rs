//! End-to-end tests of the mock upstream through a real hyper client: wire format of every
//! endpoint, error shapes, and each scripted behaviour including client cancellation.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_mock_upstream::{Behavior, MockOptions, MockUpstream};

/// Bound on every single client operation, so a broken mock fails fast instead of hanging.
const STEP: Duration = Duration::from_secs(2);

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(method: Method, url: &str, body: &str) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    builder.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("test request is valid")
}

async fn send(client: &TestClient, method: Method, url: &str, body: &str) -> Response<Incoming> {
    tokio::time::timeout(STEP, client.request(request(method, url, body)))
        .await
        .expect("mock answered in time")
        .expect("request succeeded")
}

async fn read_body(response: Response<Incoming>) -> Bytes {
    tokio::time::timeout(STEP, response.into_body().collect())
        .await
        .expect("body arrived in time")
        .expect("body read")
        .to_bytes()
}

async fn call(
    mock: &MockUpstream,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, http::HeaderMap, Value) {
    let url = format!("http://{}{path}", mock.addr());
    let response = send(&client(), method, &url, body).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = read_body(response).await;
    let value = serde_json::from_slice(&bytes).expect("body is json");
    (status, headers, value)
}

/// Splits an SSE body into its `data:` payloads, checking the framing on the way.
fn sse_payloads(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("sse is utf-8");
    assert!(text.ends_with("\n\n"), "sse body ends with a blank line: {text:?}");
    text.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data prefix: {event:?}"))
                .to_owned()
        })
        .collect()
}

fn assert_openai_error(body: &Value) {
    let error = &body["error"];
    assert!(error["message"].is_string(), "error.message in {body}");
    assert!(error["type"].is_string(), "error.type in {body}");
    assert!(error.get("param").is_some(), "error.param in {body}");
    assert!(error.get("code").is_some(), "error.code in {body}");
}

#[tokio::test]
async fn chat_completion_has_openai_shape() {
    let mock = MockUpstream::start().await;
    let body = r#"{"model":"gpt-4o-mini \"quoted\"","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, headers, value) = call(&mock, Method::POST, "/v1/chat/completions", body).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["x-request-id"].to_str().unwrap_or_default().starts_with("req-"));
    assert_eq!(headers["openai-processing-ms"], "1");

    assert!(value["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(value["object"], "chat.completion");
    assert!(value["created"].as_u64().is_some_and(|t| t > 1_700_000_000));
    assert_eq!(value["model"], "gpt-4o-mini \"quoted\"");
    assert!(value["system_fingerprint"].is_string());
    let choice = &value["choices"][0];
    assert_eq!(value["choices"].as_array().map(Vec::len), Some(1));
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"], json!({"role":"assistant","content":"mock reply","refusal":null}));
    assert_eq!(choice["logprobs"], Value::Null);
    assert!(choice.get("logprobs").is_some());
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &value["usage"];
    assert_eq!(usage["prompt_tokens"], 12);
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["total_tokens"], 17);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].headers["content-type"], "application/json");
    assert_eq!(recorded[0].body, body.as_bytes());
}

#[tokio::test]
async fn request_ids_differ_and_ids_are_fresh() {
    let mock = MockUpstream::start().await;
    let body = r#"{"model":"m","messages":[]}"#;
    let (_, first_headers, first) = call(&mock, Method::POST, "/v1/chat/completions", body).await;
    let (_, second_headers, second) = call(&mock, Method::POST, "/v1/chat/completions", body).await;
    assert_ne!(first_headers["x-request-id"], second_headers["x-request-id"]);
    assert_ne!(first["id"], second["id"]);
}

#[tokio::test]
async fn chat_stream_sends_role_content_stop_done() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/chat/completions", mock.base_url());
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let response = send(&client(), Method::POST, &url, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let payloads = sse_payloads(&read_body(response).await);

    // role, 5 content chunks, stop, [DONE]
    assert_eq!(payloads.len(), 8, "{payloads:#?}");
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        payloads[..7].iter().map(|p| serde_json::from_str(p).expect("chunk is json")).collect();
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(&chunk["id"], id, "every chunk shares the id");
        assert_eq!(chunk["model"], "m1");
        assert!(chunk.get("usage").is_none(), "no usage without include_usage: {chunk}");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    for (i, chunk) in chunks[1..6].iter().enumerate() {
        assert_eq!(chunk["choices"][0]["delta"], json!({"content": format!("tok{i} ")}));
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(mock.streams_cancelled(), 0);
}

#[tokio::test]
async fn chat_stream_include_usage_adds_usage_chunk() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/chat/completions", mock.base_url());
    let body = r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#;
    let payloads = sse_payloads(&read_body(send(&client(), Method::POST, &url, body).await).await);

    // role, 5 content, stop, usage, [DONE]
    assert_eq!(payloads.len(), 9, "{payloads:#?}");
    assert_eq!(payloads[8], "[DONE]");
    let chunks: Vec<Value> =
        payloads[..8].iter().map(|p| serde_json::from_str(p).expect("chunk is json")).collect();
    for chunk in &chunks[..7] {
        assert!(chunk.get("usage").is_some_and(Value::is_null), "usage: null on {chunk}");
    }
    let last = &chunks[7];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 12);
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(last["usage"]["total_tokens"], 17);
}

#[tokio::test]
async fn legacy_completions_plain_and_stream() {
    let mock = MockUpstream::start().await;
    let (status, _, value) =
        call(&mock, Method::POST, "/v1/completions", r#"{"model":"davinci","prompt":"hi"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert!(value["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")));
    assert_eq!(value["object"], "text_completion");
    assert_eq!(value["model"], "davinci");
    assert_eq!(value["choices"][0]["text"], "mock reply");
    assert_eq!(value["choices"][0]["finish_reason"], "stop");
    assert!(value["choices"][0].get("logprobs").is_some_and(Value::is_null));
    assert_eq!(value["usage"]["total_tokens"], 17);

    let url = format!("{}/completions", mock.base_url());
    let body = r#"{"model":"davinci","prompt":"hi","stream":true,"stream_options":{"include_usage":true}}"#;
    let payloads = sse_payloads(&read_body(send(&client(), Method::POST, &url, body).await).await);
    // 5 text chunks, stop, usage, [DONE]
    assert_eq!(payloads.len(), 8, "{payloads:#?}");
    assert_eq!(payloads[7], "[DONE]");
    let first: Value = serde_json::from_str(&payloads[0]).expect("json");
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "tok0 ");
    let stop: Value = serde_json::from_str(&payloads[5]).expect("json");
    assert_eq!(stop["choices"][0]["finish_reason"], "stop");
    let usage: Value = serde_json::from_str(&payloads[6]).expect("json");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn embeddings_one_per_input_with_dimensions() {
    let mock = MockUpstream::start().await;
    let (status, _, value) =
        call(&mock, Method::POST, "/v1/embeddings", r#"{"model":"emb","input":"hello"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["object"], "list");
    assert_eq!(value["model"], "emb");
    assert_eq!(value["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(value["data"][0]["object"], "embedding");
    assert_eq!(value["data"][0]["index"], 0);
    assert_eq!(value["data"][0]["embedding"].as_array().map(Vec::len), Some(8));
    assert!(value["usage"]["prompt_tokens"].is_u64());
    assert_eq!(value["usage"]["prompt_tokens"], value["usage"]["total_tokens"]);

    let body = r#"{"model":"emb","input":["a","b","c"],"dimensions":16}"#;
    let (_, _, value) = call(&mock, Method::POST, "/v1/embeddings", body).await;
    let data = value["data"].as_array().expect("data array");
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        let embedding = item["embedding"].as_array().expect("float array");
        assert_eq!(embedding.len(), 16);
        assert!(embedding.iter().all(Value::is_f64));
    }

    // base64 is what the official SDKs ask for: 16 f32 = 64 bytes = 88 base64 characters.
    let body = r#"{"model":"emb","input":"x","dimensions":16,"encoding_format":"base64"}"#;
    let (_, _, value) = call(&mock, Method::POST, "/v1/embeddings", body).await;
    assert_eq!(value["data"][0]["embedding"].as_str().map(str::len), Some(88));

    let (status, _, value) =
        call(&mock, Method::POST, "/v1/embeddings", r#"{"model":"e","input":"x","dimensions":5000}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(value["error"]["param"], "dimensions");
}

#[tokio::test]
async fn models_list_and_unprefixed_paths() {
    let mock = MockUpstream::start().await;
    let (status, headers, value) = call(&mock, Method::GET, "/v1/models", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        value,
        json!({"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"tollgate-mock"}]})
    );
    let (status, _, unprefixed) = call(&mock, Method::GET, "/models", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unprefixed, value);

    let (status, _, chat) =
        call(&mock, Method::POST, "/chat/completions", r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat["object"], "chat.completion");
}

#[tokio::test]
async fn unknown_path_is_openai_404() {
    let mock = MockUpstream::start().await;
    for (method, path) in
        [(Method::GET, "/v1/nope"), (Method::GET, "/v1/chat/completions"), (Method::POST, "/v1")]
    {
        let (status, headers, value) = call(&mock, method, path, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(headers["content-type"], "application/json");
        assert_openai_error(&value);
    }
}

#[tokio::test]
async fn bad_json_and_missing_fields_are_400() {
    let mock = MockUpstream::start().await;
    let cases = [
        ("/v1/chat/completions", "{not json", None),
        ("/v1/chat/completions", "", None),
        ("/v1/chat/completions", r#"{"model":5,"messages":[]}"#, None),
        ("/v1/chat/completions", r#"{"messages":[]}"#, Some("model")),
        ("/v1/chat/completions", r#"{"model":"m"}"#, Some("messages")),
        ("/v1/completions", r#"{"model":"m"}"#, Some("prompt")),
        ("/v1/embeddings", r#"{"model":"m"}"#, Some("input")),
        ("/v1/embeddings", r#"{"model":"m","input":[]}"#, Some("input")),
        ("/v1/embeddings", "[1,2", None),
    ];
    for (path, body, param) in cases {
        let (status, _, value) = call(&mock, Method::POST, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_openai_error(&value);
        assert_eq!(value["error"]["type"], "invalid_request_error");
        if let Some(param) = param {
            assert_eq!(value["error"]["param"], param, "{path} {body}");
        }
    }
    // The server is still healthy afterwards.
    let (status, _, _) = call(&mock, Method::GET, "/v1/models", "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn error_behavior_returns_exact_status_and_body_then_normal() {
    let mock = MockUpstream::start().await;
    let error_body =
        r#"{"error":{"message":"rate limited","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    mock.push(Behavior::Error { status: 429, body: error_body.to_owned() });
    mock.push(Behavior::Error { status: 503, body: "{}".to_owned() });
    let url = format!("{}/chat/completions", mock.base_url());
    let body = r#"{"model":"m","messages":[]}"#;

    let response = send(&client(), Method::POST, &url, body).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(read_body(response).await, error_body.as_bytes());

    let response = send(&client(), Method::POST, &url, body).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(read_body(response).await, "{}".as_bytes());

    // Queue drained: back to normal.
    let response = send(&client(), Method::POST, &url, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn delay_behavior_delays_then_answers() {
    let mock = MockUpstream::start().await;
    let delay = Duration::from_millis(120);
    mock.push(Behavior::Delay(delay));
    let started = Instant::now();
    let (status, _, value) =
        call(&mock, Method::POST, "/v1/chat/completions", r#"{"model":"m","messages":[]}"#).await;
    assert!(started.elapsed() >= delay, "answered after {:?}", started.elapsed());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(mock.requests_abandoned(), 0);
}

#[tokio::test]
async fn hang_then_client_drop_counts_abandoned() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Hang);
    let url = format!("{}/chat/completions", mock.base_url());
    let client = client();
    let pending = client.request(request(Method::POST, &url, r#"{"model":"m","messages":[]}"#));
    let outcome = tokio::time::timeout(Duration::from_millis(150), pending).await;
    assert!(outcome.is_err(), "a hanging request must not be answered");
    assert!(mock.wait_until(STEP, |m| m.requests().len() == 1).await);
    drop(client);
    assert!(
        mock.wait_until(STEP, |m| m.requests_abandoned() == 1).await,
        "abandoned: {}",
        mock.requests_abandoned()
    );
}

#[tokio::test]
async fn delay_then_client_drop_counts_abandoned() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Delay(Duration::from_secs(30)));
    let url = format!("{}/embeddings", mock.base_url());
    let pending = client().request(request(Method::POST, &url, r#"{"model":"m","input":"x"}"#));
    assert!(tokio::time::timeout(Duration::from_millis(100), pending).await.is_err());
    assert!(mock.wait_until(STEP, |m| m.requests_abandoned() == 1).await);
}

#[tokio::test]
async fn slow_stream_relays_chunks_and_counts_cancellation() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(30), chunks: 100 });
    let url = format!("{}/chat/completions", mock.base_url());
    let body = r#"{"model":"m","messages":[],"stream":true}"#;
    let started = Instant::now();
    let mut response = send(&client(), Method::POST, &url, body).await;
    assert_eq!(response.status(), StatusCode::OK);

    // The first events arrive one by one, long before the ~3 s the whole stream would take.
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("tok1 ") {
        let frame = tokio::time::timeout(STEP, response.body_mut().frame())
            .await
            .expect("a frame in time")
            .expect("stream not finished")
            .expect("frame read");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
        assert!(started.elapsed() < Duration::from_secs(1), "chunks are relayed as they are produced");
    }
    assert!(!String::from_utf8_lossy(&received).contains("[DONE]"));
    assert_eq!(mock.streams_cancelled(), 0);

    drop(response);
    assert!(
        mock.wait_until(STEP, |m| m.streams_cancelled() == 1).await,
        "cancelled: {}",
        mock.streams_cancelled()
    );
}

#[tokio::test]
async fn slow_stream_finishes_when_read_to_end() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(5), chunks: 3 });
    let url = format!("{}/chat/completions", mock.base_url());
    let body = r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#;
    let started = Instant::now();
    let payloads = sse_payloads(&read_body(send(&client(), Method::POST, &url, body).await).await);
    // role, 3 content, stop, usage, [DONE]: 6 gaps of 5 ms
    assert_eq!(payloads.len(), 7, "{payloads:#?}");
    assert!(started.elapsed() >= Duration::from_millis(30));
    let usage: Value = serde_json::from_str(&payloads[5]).expect("json");
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let cancelled = mock.wait_until(Duration::from_millis(100), |m| m.streams_cancelled() > 0).await;
    assert!(!cancelled, "a stream read to the end is not cancelled");
}

#[tokio::test]
async fn stall_stream_stops_after_n_events() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::StallStream { after_chunks: 2 });
    let url = format!("{}/chat/completions", mock.base_url());
    let mut response =
        send(&client(), Method::POST, &url, r#"{"model":"m","messages":[],"stream":true}"#).await;

    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(150), response.body_mut().frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    received.extend_from_slice(&data);
                }
            }
            Ok(other) => panic!("stream must stall, not end: {other:?}"),
            Err(_) => break,
        }
        assert!(received.len() < 100_000, "bounded");
    }
    let payloads = sse_payloads(&received);
    assert_eq!(payloads.len(), 2, "{payloads:#?}");
    let second: Value = serde_json::from_str(&payloads[1]).expect("json");
    assert_eq!(second["choices"][0]["delta"]["content"], "tok0 ");

    drop(response);
    assert!(mock.wait_until(STEP, |m| m.streams_cancelled() == 1).await);
}

#[tokio::test]
async fn stream_behaviors_do_not_affect_non_stream_requests() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::StallStream { after_chunks: 0 });
    let (status, _, value) =
        call(&mock, Method::POST, "/v1/chat/completions", r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["choices"][0]["message"]["content"], "mock reply");
}

#[tokio::test]
async fn unknown_paths_do_not_consume_behaviors() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Error { status: 500, body: "{}".to_owned() });
    let (status, _, _) = call(&mock, Method::GET, "/v1/unknown", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&mock, Method::GET, "/v1/models", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(mock.requests().len(), 2, "404s are recorded too");
}

#[tokio::test]
async fn recording_can_be_disabled() {
    let mock = MockUpstream::start_with(MockOptions { record_requests: false }).await;
    let (status, _, _) = call(&mock, Method::GET, "/v1/models", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let mock = MockUpstream::start().await;
    let client: TestClient = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let url = format!("{}/chat/completions", mock.base_url());
    let response = send(&client, Method::POST, &url, r#"{"model":"m","messages":[],"stream":true}"#).await;
    assert_eq!(response.version(), http::Version::HTTP_2);
    let payloads = sse_payloads(&read_body(response).await);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let mock = MockUpstream::start().await;
    let stream = tokio::net::TcpStream::connect(mock.addr()).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    let driver = tokio::spawn(connection);
    for i in 0..3 {
        let body = format!(r#"{{"model":"m{i}","messages":[]}}"#);
        let request = Request::post("/v1/chat/completions")
            .header("host", mock.addr().to_string())
            .body(Full::new(Bytes::from(body)))
            .expect("valid request");
        let response = tokio::time::timeout(STEP, sender.send_request(request))
            .await
            .expect("answer in time")
            .expect("same connection still open");
        let value: Value = serde_json::from_slice(&read_body(response).await).expect("json");
        assert_eq!(value["model"], format!("m{i}"));
    }
    assert_eq!(mock.requests().len(), 3);
    driver.abort();
}

#[tokio::test]
async fn dropping_the_mock_stops_the_server() {
    let mock = MockUpstream::start().await;
    let addr = mock.addr();
    assert_eq!(mock.base_url(), format!("http://{addr}/v1"));
    drop(mock);
    let refused = async {
        // Bounded: the abort lands within a few scheduler turns.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    assert!(refused.await, "listener closed after drop");
}
