//! End-to-end tests of the mock's Anthropic Messages API (`/v1/messages`) through a real
//! hyper client: the `message` shape, the tool-call rule, the named SSE events, Anthropic's
//! error bodies, and scripted behaviours on this endpoint.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_mock_upstream::{Behavior, MockUpstream, anthropic_error};

/// Bound on every single client operation, so a broken mock fails fast instead of hanging.
const STEP: Duration = Duration::from_secs(2);

const TOOLS: &str = r#"[{"name":"get_weather","description":"weather for a city","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}},{"name":"get_time","input_schema":{"type":"object"}}]"#;

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The headers an Anthropic client sends; `skip` leaves one out.
fn request(mock: &MockUpstream, path: &str, body: &str, skip: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(Method::POST).uri(format!("http://{}{path}", mock.addr()));
    for (name, value) in [
        ("content-type", "application/json"),
        ("x-api-key", "sk-ant-test"),
        ("anthropic-version", "2023-06-01"),
    ] {
        if skip != Some(name) {
            builder = builder.header(name, value);
        }
    }
    builder.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("test request is valid")
}

async fn send(request: Request<Full<Bytes>>) -> Response<Incoming> {
    tokio::time::timeout(STEP, client().request(request))
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

/// Sends a request with every header but `skip`; returns status, headers and JSON body.
async fn post(mock: &MockUpstream, body: &str, skip: Option<&str>) -> (StatusCode, http::HeaderMap, Value) {
    let response = send(request(mock, "/v1/messages", body, skip)).await;
    let status = response.status();
    let headers = response.headers().clone();
    let value = serde_json::from_slice(&read_body(response).await).expect("body is json");
    (status, headers, value)
}

/// Splits an Anthropic SSE body into `(event name, data)`, checking the framing and that
/// each payload's `type` repeats the event name.
fn named_events(body: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(body).expect("sse is utf-8");
    assert!(text.ends_with("\n\n"), "sse body ends with a blank line: {text:?}");
    text.split_terminator("\n\n")
        .map(|event| {
            let (name_line, data_line) =
                event.split_once('\n').unwrap_or_else(|| panic!("event is two lines: {event:?}"));
            let name = name_line.strip_prefix("event: ").unwrap_or_else(|| panic!("event line: {event:?}"));
            let data = data_line.strip_prefix("data: ").unwrap_or_else(|| panic!("data line: {event:?}"));
            let data: Value = serde_json::from_str(data).expect("data is json");
            assert_eq!(data["type"], name, "payload type matches the event name");
            (name.to_owned(), data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

fn assert_anthropic_error(body: &Value, kind: &str) {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"].get("param").is_none(), "no OpenAI fields: {body}");
}

#[tokio::test]
async fn message_has_anthropic_shape() {
    let mock = MockUpstream::start().await;
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"system":"be brief","temperature":0.2,
        "messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},
        {"role":"user","content":[{"type":"text","text":"again"}]}]}"#;
    let (status, headers, value) = post(&mock, body, None).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["request-id"].to_str().unwrap_or_default().starts_with("req_"));
    assert!(headers.get("x-request-id").is_none(), "no OpenAI headers");

    let id = value["id"].as_str().expect("id is a string");
    assert!(id.starts_with("msg_") && id.len() > 20, "{id}");
    assert_eq!(
        value,
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "mock reply"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 5
            }
        })
    );

    // Without the /v1 prefix too, with a fresh id.
    let response = send(request(&mock, "/messages", body, None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second: Value = serde_json::from_slice(&read_body(response).await).expect("json");
    assert_eq!(second["type"], "message");
    assert_ne!(second["id"], value["id"]);

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].path, "/v1/messages");
    assert_eq!(recorded[0].headers["x-api-key"], "sk-ant-test");
    assert_eq!(recorded[0].body, body.as_bytes());
}

#[tokio::test]
async fn tools_get_a_tool_call_until_the_result_comes_back() {
    let mock = MockUpstream::start().await;

    let asking = format!(
        r#"{{"model":"m","max_tokens":64,"tools":{TOOLS},"tool_choice":{{"type":"auto"}},
        "messages":[{{"role":"user","content":"weather in paris?"}}]}}"#
    );
    let (status, _, value) = post(&mock, &asking, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["stop_reason"], "tool_use");
    let content = value["content"].as_array().expect("content array");
    assert_eq!(content.len(), 2, "{value}");
    assert_eq!(content[0], json!({"type": "text", "text": "calling a tool"}));
    assert_eq!(content[1]["type"], "tool_use");
    assert!(content[1]["id"].as_str().is_some_and(|id| id.starts_with("toolu_")), "{value}");
    assert_eq!(content[1]["name"], "get_weather", "the first tool is called");
    assert_eq!(content[1]["input"], json!({"location": "Paris"}));

    // The tool result is the last user content: a plain answer ends the turn.
    let answered = format!(
        r#"{{"model":"m","max_tokens":64,"tools":{TOOLS},"messages":[
        {{"role":"user","content":"weather in paris?"}},
        {{"role":"assistant","content":[{{"type":"text","text":"calling a tool"}},
            {{"type":"tool_use","id":"toolu_01abc","name":"get_weather","input":{{"location":"Paris"}}}}]}},
        {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01abc","content":"sunny"}}]}}]}}"#
    );
    let (status, _, value) = post(&mock, &answered, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["stop_reason"], "end_turn");
    assert_eq!(value["content"], json!([{"type": "text", "text": "mock reply"}]));

    // No tools (or an empty list): plain text.
    let empty = r#"{"model":"m","max_tokens":64,"tools":[],"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, _, value) = post(&mock, empty, None).await;
    assert_eq!(value["stop_reason"], "end_turn");
}

#[tokio::test]
async fn stream_sends_named_events_in_order() {
    let mock = MockUpstream::start().await;
    let body =
        r#"{"model":"claude-x","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = send(request(&mock, "/v1/messages", body, None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("request-id"));
    let events = named_events(&read_body(response).await);

    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);

    let message = &events[0].1["message"];
    assert!(message["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-x");
    assert_eq!(message["content"], json!([]));
    assert!(message.get("stop_reason").is_some_and(Value::is_null));
    assert!(message.get("stop_sequence").is_some_and(Value::is_null));
    assert_eq!(message["usage"]["input_tokens"], 12);
    assert_eq!(message["usage"]["output_tokens"], 1);

    assert_eq!(
        events[1].1,
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})
    );
    assert_eq!(events[2].1, json!({"type": "ping"}));
    let mut text = String::new();
    for (_, delta) in &events[3..8] {
        assert_eq!(delta["index"], 0);
        assert_eq!(delta["delta"]["type"], "text_delta");
        text.push_str(delta["delta"]["text"].as_str().expect("text delta"));
    }
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(events[8].1, json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        events[9].1,
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}})
    );
    assert_eq!(events[10].1, json!({"type": "message_stop"}));

    let cancelled = mock.wait_until(Duration::from_millis(50), |m| m.streams_cancelled() > 0).await;
    assert!(!cancelled, "a stream read to the end is not cancelled");
}

#[tokio::test]
async fn tool_stream_adds_a_tool_use_block_with_partial_json() {
    let mock = MockUpstream::start().await;
    let body = format!(
        r#"{{"model":"m","max_tokens":64,"stream":true,"tools":{TOOLS},"messages":[{{"role":"user","content":"weather?"}}]}}"#
    );
    let events = named_events(&read_body(send(request(&mock, "/v1/messages", &body, None)).await).await);

    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend([
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);

    let start = &events[9].1;
    assert_eq!(start["index"], 1);
    let block = &start["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().is_some_and(|id| id.starts_with("toolu_")), "{block}");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));

    let mut partial = String::new();
    for (_, delta) in &events[10..12] {
        assert_eq!(delta["index"], 1);
        assert_eq!(delta["delta"]["type"], "input_json_delta");
        partial.push_str(delta["delta"]["partial_json"].as_str().expect("partial_json string"));
    }
    let input: Value = serde_json::from_str(&partial).expect("pieces concatenate to valid json");
    assert_eq!(input, json!({"location": "Paris"}));
    assert_eq!(partial, tollgate_mock_upstream::TOOL_USE_INPUT_JSON);

    assert_eq!(events[12].1, json!({"type": "content_block_stop", "index": 1}));
    assert_eq!(events[13].1["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn missing_api_key_is_401_and_still_recorded() {
    let mock = MockUpstream::start().await;
    let body = r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, headers, value) = post(&mock, body, Some("x-api-key")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "application/json");
    assert_anthropic_error(&value, "authentication_error");
    assert_eq!(value["request_id"], headers["request-id"].to_str().unwrap_or_default());
    assert_eq!(mock.requests().len(), 1);
    assert!(mock.requests()[0].headers.get("x-api-key").is_none());

    let (status, _, value) = post(&mock, body, Some("anthropic-version")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_anthropic_error(&value, "invalid_request_error");
    assert!(value["error"]["message"].as_str().unwrap_or_default().contains("anthropic-version"));
}

#[tokio::test]
async fn bad_requests_are_400_invalid_request_error() {
    let mock = MockUpstream::start().await;
    let cases = [
        (r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#, Some("max_tokens")),
        (r#"{"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#, Some("model")),
        (r#"{"model":"m","max_tokens":8}"#, Some("messages")),
        (r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}"#, Some("max_tokens")),
        (r#"{"model":"m","max_tokens":8,"messages":[]}"#, Some("messages")),
        (r#"{"model":"m","max_tokens":"8","messages":[{"role":"user","content":"hi"}]}"#, None),
        (r#"{"model":"m","max_tokens":8,"messages":[{"role":"system","content":"hi"}]}"#, None),
        (r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":5}]}"#, None),
        ("{not json", None),
        ("", None),
    ];
    for (body, field) in cases {
        let (status, _, value) = post(&mock, body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_anthropic_error(&value, "invalid_request_error");
        if let Some(field) = field {
            let message = value["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(&format!("{field}: ")), "{body}: {message}");
        }
    }
    // The server is still healthy afterwards.
    let (status, _, _) =
        post(&mock, r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#, None)
            .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_messages_paths_are_anthropic_404s() {
    let mock = MockUpstream::start().await;
    for (method, path) in [(Method::GET, "/v1/messages"), (Method::POST, "/v1/messages/batches")] {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", mock.addr()))
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let response = send(request).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let value: Value = serde_json::from_slice(&read_body(response).await).expect("json");
        assert_anthropic_error(&value, "not_found_error");
    }
}

#[tokio::test]
async fn anthropic_error_behavior_returns_529_overloaded_then_normal() {
    let mock = MockUpstream::start().await;
    mock.push(anthropic_error(529, "overloaded_error", "Overloaded"));
    let body = r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;

    let response = send(request(&mock, "/v1/messages", body, None)).await;
    assert_eq!(response.status().as_u16(), 529);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("request-id"));
    let value: Value = serde_json::from_slice(&read_body(response).await).expect("json");
    assert_eq!(value, json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}));

    let (status, _, value) = post(&mock, body, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["type"], "message");
}

#[tokio::test]
async fn slow_stream_on_messages_counts_cancellation() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(30), chunks: 100 });
    let body = r#"{"model":"m","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let started = Instant::now();
    let mut response = send(request(&mock, "/v1/messages", body, None)).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Events arrive one by one, long before the ~3 s the whole stream would take.
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
        assert!(started.elapsed() < Duration::from_secs(1), "events are relayed as they are produced");
    }
    assert!(!String::from_utf8_lossy(&received).contains("message_stop"));
    assert_eq!(mock.streams_cancelled(), 0);

    drop(response);
    assert!(
        mock.wait_until(STEP, |m| m.streams_cancelled() == 1).await,
        "cancelled: {}",
        mock.streams_cancelled()
    );
}

#[tokio::test]
async fn stall_stream_on_messages_stops_after_n_events() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::StallStream { after_chunks: 4 });
    let body = r#"{"model":"m","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut response = send(request(&mock, "/v1/messages", body, None)).await;

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
    let events = named_events(&received);
    assert_eq!(names(&events), ["message_start", "content_block_start", "ping", "content_block_delta"]);
    assert_eq!(events[3].1["delta"]["text"], "tok0 ");

    drop(response);
    assert!(mock.wait_until(STEP, |m| m.streams_cancelled() == 1).await);
}
