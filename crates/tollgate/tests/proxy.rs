//! End-to-end: the real gateway on loopback in front of the mock OpenAI upstream, called
//! over HTTP as clients call it.

mod support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::json;
use support::*;
use tollgate_mock_upstream::{Behavior, MockUpstream};

fn hello(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn chat_completion_is_proxied_with_alias_and_litellm_headers() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;

    let reply = chat(&gateway, hello("general-purpose")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "general-purpose", "the alias goes back to the client");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.headers["authorization"], format!("Bearer {UPSTREAM_KEY}"));
    let sent_body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent_body["model"], "mock-model", "the upstream name goes upstream");
    assert_eq!(sent_body["messages"], hello("x")["messages"]);

    assert_eq!(reply.header("x-litellm-model-group"), "general-purpose");
    assert_eq!(reply.header("x-litellm-model-api-base"), mock.base_url());
    assert!(!reply.header("x-litellm-model-id").is_empty());
    assert_eq!(reply.header("x-litellm-call-id").len(), 36);
    assert_eq!(reply.header("x-litellm-version"), tollgate_http::VERSION);
    let total: f64 = reply.header("x-litellm-response-duration-ms").parse().unwrap();
    let overhead: f64 = reply.header("x-litellm-overhead-duration-ms").parse().unwrap();
    assert!(overhead >= 0.0 && overhead <= total, "{overhead} of {total}");
    assert!(reply.headers.contains_key("llm_provider-x-request-id"), "{:?}", reply.headers);
}

#[tokio::test]
async fn both_path_styles_and_every_openai_endpoint_work() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;

    let reply =
        send(post(&gateway.url("/chat/completions"), Some(MASTER_KEY), hello("general-purpose").to_string()))
            .await;
    assert_eq!(reply.status, 200);

    let reply = send(post(
        &gateway.url("/v1/embeddings"),
        Some(MASTER_KEY),
        json!({"model": "text-embedding-3-small", "input": ["a", "b"]}).to_string(),
    ))
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["model"], "text-embedding-3-small");

    let reply = send(post(
        &gateway.url("/completions"),
        Some(MASTER_KEY),
        json!({"model": "general-purpose", "prompt": "say hi"}).to_string(),
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["object"], "text_completion");
    assert_eq!(reply.json()["model"], "general-purpose");

    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"]);

    for path in ["/v1/models", "/models"] {
        let reply = send(get(&gateway.url(path), Some(MASTER_KEY))).await;
        assert_eq!(reply.status, 200);
        let ids: Vec<String> = reply.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["general-purpose", "text-embedding-3-small"]);
    }
    let info = send(get(&gateway.url("/model/info"), Some(MASTER_KEY))).await;
    assert_eq!(info.status, 200);
    assert!(!String::from_utf8_lossy(&info.body).contains(UPSTREAM_KEY), "keys never leave");
    assert_eq!(info.json()["data"][0]["litellm_params"]["model"], "openai/mock-model");
    let groups = send(get(&gateway.url("/v1/model_group/info"), Some(MASTER_KEY))).await;
    assert_eq!(groups.json()["data"][1]["model_group"], "text-embedding-3-small");
    assert_eq!(groups.json()["data"][1]["providers"], json!(["openai"]));
}

#[tokio::test]
async fn stream_is_relayed_chunk_by_chunk_with_usage() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(150), chunks: 4 });

    let mut body = hello("general-purpose");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let started = Instant::now();
    let response = client()
        .request(post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body.to_string()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut incoming = response.into_body();
    let mut first_frame_at = None;
    let mut bytes = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        first_frame_at.get_or_insert(started.elapsed());
        bytes.extend_from_slice(&data);
    }
    let total = started.elapsed();
    let first = first_frame_at.unwrap();
    assert!(
        total - first >= Duration::from_millis(400),
        "chunks must arrive as sent, not buffered: first {first:?}, total {total:?}"
    );

    let events = sse_events(&bytes);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["model"] == "general-purpose"), "{chunks:?}");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let usage = chunks.iter().find(|c| c["usage"].is_object()).expect("include_usage gives a usage chunk");
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let sent: serde_json::Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn auth_is_required_except_for_probes() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    let url = gateway.url("/v1/chat/completions");

    let missing = send(post(&url, None, hello("general-purpose").to_string())).await;
    assert!(assert_error(&missing, 401)["message"].as_str().unwrap().contains("No api key"));
    let wrong = send(post(&url, Some("sk-wrong"), hello("general-purpose").to_string())).await;
    assert_eq!(assert_error(&wrong, 401)["type"], "token_not_found_in_db");
    assert!(send(get(&gateway.url("/v1/models"), None)).await.status == 401);

    for header in ["x-api-key", "api-key"] {
        let request = http::Request::post(&url)
            .header(header, MASTER_KEY)
            .body(http_body_util::Full::new(bytes::Bytes::from(hello("general-purpose").to_string())))
            .unwrap();
        assert_eq!(send(request).await.status, 200, "{header}");
    }
    assert!(mock.requests().len() == 2, "rejected requests never reach the upstream");

    let live = send(get(&gateway.url("/health/liveliness"), None)).await;
    assert_eq!(live.status, 200);
    let ready = send(get(&gateway.url("/health/readiness"), None)).await;
    assert_eq!(ready.json()["status"], "healthy");
    assert_eq!(ready.json()["db"], "connected", "a master key brings a database");
}

#[tokio::test]
async fn bad_requests_get_clear_openai_errors() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    let url = gateway.url("/v1/chat/completions");

    let reply = send(post(&url, Some(MASTER_KEY), "{\"model\": ")).await;
    assert!(assert_error(&reply, 400)["message"].as_str().unwrap().starts_with("Invalid JSON"));
    let reply = send(post(&url, Some(MASTER_KEY), "[1,2]")).await;
    assert_error(&reply, 400);
    let reply = send(post(&url, Some(MASTER_KEY), json!({"messages": []}).to_string())).await;
    assert_eq!(assert_error(&reply, 400)["param"], "model");
    let reply = send(post(&url, Some(MASTER_KEY), json!({"model": "general-purpose"}).to_string())).await;
    assert_eq!(assert_error(&reply, 400)["message"], "missing required field `messages`");
    let reply = send(post(
        &url,
        Some(MASTER_KEY),
        json!({"model": "general-purpose", "messages": [], "stream": "yes"}).to_string(),
    ))
    .await;
    assert_eq!(assert_error(&reply, 400)["param"], "stream");

    let reply = chat(&gateway, hello("gpt-5")).await;
    let message = assert_error(&reply, 400)["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("model=gpt-5") && message.contains("general-purpose, text-embedding-3-small"),
        "{message}"
    );

    let reply = send(get(&gateway.url("/v1/nothing-here"), Some(MASTER_KEY))).await;
    assert_error(&reply, 404);
    let reply = send(get(&url, Some(MASTER_KEY))).await;
    assert_error(&reply, 405);
    assert_eq!(reply.header("allow"), "POST");
    assert!(mock.requests().is_empty(), "none of these reach the upstream");
}

#[tokio::test]
async fn upstream_errors_pass_through_with_credentials_redacted() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;

    mock.push(Behavior::Error {
        status: 401,
        body: json!({"error": {"message": format!("Incorrect API key provided: {UPSTREAM_KEY}"), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}).to_string(),
    });
    let reply = chat(&gateway, hello("general-purpose")).await;
    let error = assert_error(&reply, 401);
    assert_eq!(error["code"], "invalid_api_key");
    assert!(!String::from_utf8_lossy(&reply.body).contains(UPSTREAM_KEY), "{:?}", reply.body);

    mock.push(Behavior::Error { status: 400, body: json!({"error": {"message": "context too long", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}).to_string() });
    let error = assert_error(&chat(&gateway, hello("general-purpose")).await, 400);
    assert_eq!(
        (error["message"].as_str(), error["param"].as_str()),
        (Some("context too long"), Some("messages"))
    );

    mock.push(Behavior::Error { status: 503, body: "<html>upstream overloaded</html>".into() });
    let error = assert_error(&chat(&gateway, hello("general-purpose")).await, 503);
    assert_eq!(error["message"], "<html>upstream overloaded</html>");
    assert_eq!(error["code"], "503");
}

#[tokio::test]
async fn retryable_failures_are_retried_up_to_max_retries() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "max_retries: 1")).await;
    mock.push(Behavior::Error { status: 503, body: "{}".into() });
    let reply = chat(&gateway, hello("general-purpose")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(mock.requests().len(), 2);

    mock.push(Behavior::Error { status: 400, body: "{}".into() });
    assert_eq!(chat(&gateway, hello("general-purpose")).await.status, 400);
    assert_eq!(mock.requests().len(), 3, "a client error is not retried");
}

#[tokio::test]
async fn upstream_hang_times_out_as_408() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "timeout: 0.3")).await;
    mock.push(Behavior::Hang);
    let started = Instant::now();
    let reply = chat(&gateway, hello("general-purpose")).await;
    let elapsed = started.elapsed();
    let error = assert_error(&reply, 408);
    assert!(error["message"].as_str().unwrap().contains("Timeout"), "{error}");
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.requests_abandoned() == 1).await,
        "the upstream request is dropped"
    );
}

#[tokio::test]
async fn stalled_stream_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "stream_timeout: 0.3")).await;
    mock.push(Behavior::StallStream { after_chunks: 2 });
    let mut body = hello("general-purpose");
    body["stream"] = json!(true);
    let reply = chat(&gateway, body).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(events.len(), 3, "{events:?}");
    let error: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "408");
    assert!(mock.wait_until(Duration::from_secs(2), |m| m.streams_cancelled() == 1).await);
}

#[tokio::test]
async fn unreachable_upstream_is_a_connection_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let gateway = TestGateway::start(&mock_config(&base, "")).await;
    let error = assert_error(&chat(&gateway, hello("general-purpose")).await, 500);
    assert!(error["message"].as_str().unwrap().starts_with("litellm.APIConnectionError"), "{error}");
    assert!(!error["message"].as_str().unwrap().contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(100), chunks: 50 });
    let mut incoming = open_stream(&gateway, "general-purpose").await;
    let first = incoming.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(incoming);
    assert!(
        mock.wait_until(Duration::from_secs(3), |m| m.streams_cancelled() == 1).await,
        "the mock must see its stream abandoned once the client is gone"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_a_stream_in_flight_finish() {
    let mock = MockUpstream::start().await;
    let mut gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(100), chunks: 5 });
    let mut incoming = open_stream(&gateway, "general-purpose").await;
    let mut bytes = incoming.frame().await.unwrap().unwrap().into_data().unwrap().to_vec();

    let serving = gateway.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(std::net::TcpStream::connect(gateway.addr).is_err(), "no new connections once shutdown begins");
    read_rest(incoming, &mut bytes).await;
    assert_eq!(sse_events(&bytes).last().unwrap(), "[DONE]", "the stream finished");
    let result =
        tokio::time::timeout(Duration::from_secs(5), serving).await.expect("serve returns after draining");
    assert!(result.unwrap().is_ok());
    assert_eq!(mock.streams_cancelled(), 0);
}

#[tokio::test]
async fn shutdown_grace_bounds_the_wait() {
    let mock = MockUpstream::start().await;
    let mut gateway = TestGateway::start_with(&mock_config(&mock.base_url(), ""), |g| {
        g.with_shutdown_grace(Duration::from_millis(200))
    })
    .await;
    mock.push(Behavior::Hang);
    let url = gateway.url("/v1/chat/completions");
    let pending = tokio::spawn(async move {
        client().request(post(&url, Some(MASTER_KEY), hello("general-purpose").to_string())).await
    });
    assert!(mock.wait_until(Duration::from_secs(2), |m| m.requests().len() == 1).await);
    let started = Instant::now();
    let serving = gateway.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("grace bounds shutdown")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    pending.abort();
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let response = h2
        .request(post(
            &gateway.url("/v1/chat/completions"),
            Some(MASTER_KEY),
            hello("general-purpose").to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);

    // Streams are relayed over HTTP/2 too.
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(20), chunks: 3 });
    let mut body = hello("general-purpose");
    body["stream"] = json!(true);
    let response = h2
        .request(post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body.to_string()))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let events = sse_events(&bytes);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events[..events.len() - 1].iter().all(|e| e.contains("\"model\":\"general-purpose\"")),
        "{events:?}"
    );
}

#[tokio::test]
async fn wildcard_groups_and_unsupported_providers() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:
  - model_name: 'mock/*'
    litellm_params: {{model: 'openai/*', api_base: '{}'}}
  - model_name: claude
    litellm_params: {{model: replicate/meta/llama-3-70b}}
",
        mock.base_url()
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply =
        send(post(&gateway.url("/v1/chat/completions"), None, hello("mock/some-model").to_string())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["model"], "mock/some-model");
    let sent: serde_json::Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["model"], "some-model");

    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello("claude").to_string())).await;
    assert!(assert_error(&reply, 400)["message"].as_str().unwrap().contains("provider 'replicate'"));
}

#[tokio::test]
async fn health_probes_every_deployment() {
    let mock = MockUpstream::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let yaml = format!(
        "model_list:
  - {{model_name: up, litellm_params: {{model: openai/m, api_base: '{}'}}}}
  - {{model_name: down, litellm_params: {{model: openai/m, api_base: '{dead}'}}}}
  - {{model_name: offline, litellm_params: {{model: fake/x}}}}
general_settings: {{master_key: {MASTER_KEY}}}
",
        mock.base_url()
    );
    let gateway = TestGateway::start(&yaml).await;
    assert_eq!(send(get(&gateway.url("/health"), None)).await.status, 401);
    let reply = send(get(&gateway.url("/health"), Some(MASTER_KEY))).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["healthy_count"], 2, "{body}");
    assert_eq!(body["unhealthy_count"], 1);
    assert_eq!(body["unhealthy_endpoints"][0]["model_name"], "down");
}

#[tokio::test]
async fn demo_config_answers_offline() {
    let gateway = TestGateway::start(tollgate::DEMO_CONFIG).await;
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello("demo").to_string())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "Hello from Tollgate's demo model. You said: hello"
    );
    let mut body = hello("demo");
    body["stream"] = json!(true);
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, body.to_string())).await;
    let events = reply.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(events.len() > 3);
    let reply = send(post(
        &gateway.url("/v1/embeddings"),
        None,
        json!({"model": "demo-embedding", "input": "hi"}).to_string(),
    ))
    .await;
    assert_eq!(reply.json()["data"][0]["embedding"].as_array().unwrap().len(), 16);
}

#[tokio::test]
async fn worker_threads_serve_and_drain() {
    let mock = MockUpstream::start().await;
    let mut gateway =
        TestGateway::start_with(&mock_config(&mock.base_url(), ""), |g| g.with_workers(2)).await;
    for _ in 0..4 {
        let reply = chat(&gateway, hello("general-purpose")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["model"], "general-purpose");
    }
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(100), chunks: 4 });
    let mut incoming = open_stream(&gateway, "general-purpose").await;
    let mut bytes = incoming.frame().await.unwrap().unwrap().into_data().unwrap().to_vec();
    let serving = gateway.begin_shutdown();
    read_rest(incoming, &mut bytes).await;
    assert_eq!(sse_events(&bytes).last().unwrap(), "[DONE]", "the stream on a worker finished");
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("workers drain and stop")
        .unwrap()
        .unwrap();
}
