//! End-to-end: OpenAI-shaped requests through the gateway to an `anthropic/` model on the
//! mock's Anthropic Messages API, and the answers back in OpenAI's shape.

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{MockUpstream, anthropic_error};

const ANTHROPIC_KEY: &str = "sk-ant-test-key";

fn config(base_url: &str) -> String {
    format!(
        "model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {base_url}
      api_key: {ANTHROPIC_KEY}
general_settings:
  master_key: {MASTER_KEY}
"
    )
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
    }}])
}

#[tokio::test]
async fn chat_is_translated_to_messages_and_back() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let reply = chat(
        &gateway,
        json!({"model": "claude", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"}
        ]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude");
    assert_eq!(body["choices"][0]["message"]["content"], tollgate_mock_upstream::REPLY_TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], tollgate_mock_upstream::PROMPT_TOKENS);
    assert_eq!(body["usage"]["completion_tokens"], tollgate_mock_upstream::COMPLETION_TOKENS);

    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(!sent.headers.contains_key("authorization"));
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["system"], json!([{"type": "text", "text": "You are terse."}]));
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "hello"}]));
    assert_eq!(sent["max_tokens"], 4096);
}

#[tokio::test]
async fn tool_calls_come_back_as_openai_tool_calls() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let reply = chat(
        &gateway,
        json!({"model": "claude", "tools": weather_tool(), "tool_choice": "auto",
               "messages": [{"role": "user", "content": "weather in Paris?"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let choice = &reply.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"location": "Paris"}));
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["location"]));
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));

    // The tool's result goes back as a tool_result block, and the model answers in text.
    let call_id = call["id"].as_str().unwrap().to_owned();
    let reply = chat(
        &gateway,
        json!({"model": "claude", "tools": weather_tool(), "messages": [
            {"role": "user", "content": "weather in Paris?"},
            choice["message"].clone(),
            {"role": "tool", "tool_call_id": call_id, "content": "18C and sunny"}
        ]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["choices"][0]["finish_reason"], "stop");
    let sent: Value = serde_json::from_slice(&mock.requests()[1].body).unwrap();
    assert_eq!(sent["messages"][1]["content"][1]["type"], "tool_use");
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], call_id.as_str());
}

#[tokio::test]
async fn stream_is_translated_event_by_event() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let reply = chat(
        &gateway,
        json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
               "tools": weather_tool(), "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/event-stream");
    let events = reply.events();
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["model"] == "claude" && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect();
    assert!(text.starts_with("tok0 "), "{text:?}");
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments").and_then(Value::as_str))
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"location": "Paris"}));
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    let usage = chunks.iter().find(|c| c["usage"].is_object()).expect("include_usage gives a usage chunk");
    assert_eq!(usage["usage"]["prompt_tokens"], tollgate_mock_upstream::PROMPT_TOKENS);
}

#[tokio::test]
async fn anthropic_errors_map_to_openai_errors() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    mock.push(anthropic_error(529, "overloaded_error", "Overloaded"));
    let error = assert_error(
        &chat(&gateway, json!({"model": "claude", "messages": [{"role": "user", "content": "x"}]})).await,
        503,
    );
    assert_eq!((error["message"].as_str(), error["code"].as_str()), (Some("Overloaded"), Some("overloaded")));

    let reply =
        chat(&gateway, json!({"model": "claude", "seed": 7, "messages": [{"role": "user", "content": "x"}]}))
            .await;
    assert!(assert_error(&reply, 400)["message"].as_str().unwrap().contains("`seed`"));
    let reply = send(post(
        &gateway.url("/v1/embeddings"),
        Some(MASTER_KEY),
        json!({"model": "claude", "input": "x"}).to_string(),
    ))
    .await;
    assert!(assert_error(&reply, 400)["message"].as_str().unwrap().contains("chat completions only"));
    assert_eq!(mock.requests().len(), 1, "rejected requests never reach the upstream");
}

#[tokio::test]
async fn messages_front_door_serves_an_openai_upstream() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    let url = gateway.url("/v1/messages");
    let request = |key: &str, body: Value| {
        http::Request::post(&url)
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap()
    };
    let hello = json!({"model": "general-purpose", "max_tokens": 32, "system": "terse",
                       "messages": [{"role": "user", "content": "hello"}]});

    let reply = send(request(MASTER_KEY, hello.clone())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let message = reply.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], "general-purpose");
    assert_eq!(message["content"], json!([{"type": "text", "text": tollgate_mock_upstream::REPLY_TEXT}]));
    assert_eq!(message["stop_reason"], "end_turn");
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["model"], "mock-model");
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "terse"}));
    assert_eq!(sent["max_tokens"], 32);

    let denied = send(request("sk-wrong", hello)).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["type"], "error");
    assert_eq!(denied.json()["error"]["type"], "authentication_error");
    let unknown = send(request(MASTER_KEY, json!({"model": "nope", "max_tokens": 8, "messages": []}))).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"]["type"], "invalid_request_error");
}

/// `response_format` JSON mode reaches Claude as LiteLLM sends it (a forced `json_tool_call`
/// tool with the schema) and comes back as the message's content.
#[tokio::test]
async fn json_mode_comes_back_as_content() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let schema =
        json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]});
    let reply = chat(
        &gateway,
        json!({"model": "claude", "messages": [{"role": "user", "content": "where?"}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let choice = &reply.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none());
    let content: Value = serde_json::from_str(choice["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"location": "Paris"}));
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["tools"][0]["name"], "json_tool_call");
    assert_eq!(sent["tools"][0]["input_schema"], schema);
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "json_tool_call"}));
}

/// A parameter Anthropic lacks is a 400 by default; LiteLLM's `drop_params` (per request,
/// per deployment or in `litellm_settings`) drops it instead, and `additional_drop_params`
/// drops named ones always.
#[tokio::test]
async fn drop_params_drops_what_the_provider_lacks() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let with_seed = |extra: Value| {
        let mut body = json!({"model": "claude", "seed": 7, "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let refused = chat(&gateway, with_seed(json!({}))).await;
    assert!(assert_error(&refused, 400)["message"].as_str().unwrap().contains("seed"));
    let dropped = chat(&gateway, with_seed(json!({"drop_params": true}))).await;
    assert_eq!(dropped.status, 200, "{}", String::from_utf8_lossy(&dropped.body));
    let sent: Value = serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
    assert!(sent.get("seed").is_none() && sent.get("drop_params").is_none(), "{sent}");

    let everywhere = config(&mock.base_url())
        .replace("general_settings:", "litellm_settings:\n  drop_params: true\ngeneral_settings:");
    let everywhere = everywhere.replace(
        "      api_key: sk-ant-test-key\n",
        "      api_key: sk-ant-test-key\n      additional_drop_params: [temperature]\n",
    );
    let gateway = TestGateway::start(&everywhere).await;
    let reply = chat(&gateway, with_seed(json!({"temperature": 0.2}))).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let sent: Value = serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
    assert!(sent.get("seed").is_none() && sent.get("temperature").is_none(), "{sent}");
    let kept = chat(&gateway, with_seed(json!({"drop_params": false}))).await;
    assert_eq!(kept.status, 400, "the request's own drop_params wins");
}
