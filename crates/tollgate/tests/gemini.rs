//! End-to-end: OpenAI- and Anthropic-shaped requests through the gateway to a `gemini/`
//! model on the mock's Gemini API, and the answers back.

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{
    Behavior, GEMINI_FUNCTION_CALL_ARGS_JSON, GEMINI_JSON_REPLY_TEXT, MockUpstream, REPLY_TEXT, gemini_error,
};

const GEMINI_KEY: &str = "AIza-test-key";

fn config(base_url: &str) -> String {
    let host = base_url.trim_end_matches("/v1");
    format!(
        "model_list:
  - model_name: flash
    litellm_params:
      model: gemini/gemini-2.5-flash
      api_base: {host}
      api_key: {GEMINI_KEY}
  - model_name: gemini-embed
    litellm_params:
      model: gemini/text-embedding-004
      api_base: {host}
      api_key: {GEMINI_KEY}
general_settings:
  master_key: {MASTER_KEY}
"
    )
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}
    }}])
}

#[tokio::test]
async fn chat_is_translated_to_generate_content_and_back() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
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
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "flash", "the alias, not the upstream model");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        body["usage"]["total_tokens"].as_u64().unwrap(),
        body["usage"]["prompt_tokens"].as_u64().unwrap()
            + body["usage"]["completion_tokens"].as_u64().unwrap()
    );

    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.headers["x-goog-api-key"], GEMINI_KEY);
    assert!(sent.query.is_none(), "the key never travels in the URL");
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["systemInstruction"], json!({"parts": [{"text": "You are terse."}]}));
    assert_eq!(sent["contents"], json!([{"role": "user", "parts": [{"text": "hello"}]}]));
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 50);
}

#[tokio::test]
async fn streams_are_translated_chunk_by_chunk_with_usage() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let reply = chat(
        &gateway,
        json!({"model": "flash", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["model"] == "flash"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<String>();
    assert_eq!(text, REPLY_TEXT);
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert!(chunks.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(sent.query.as_deref(), Some("alt=sse"));
}

#[tokio::test]
async fn tools_json_mode_and_thoughts() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
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

    // The tool's answer goes back as a functionResponse named after the call.
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
    let sent: Value = serde_json::from_slice(&mock.requests()[1].body).unwrap();
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"sky": "clear"}})
    );

    let json_mode = chat(
        &gateway,
        json!({"model": "flash", "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "json"}]}),
    )
    .await
    .json();
    assert_eq!(json_mode["choices"][0]["message"]["content"], GEMINI_JSON_REPLY_TEXT);

    let thinking = chat(
        &gateway,
        json!({"model": "flash", "reasoning_effort": "low", "messages": [{"role": "user", "content": "think"}]}),
    )
    .await
    .json();
    assert!(thinking["choices"][0]["message"]["reasoning_content"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(thinking["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap() > 0);

    // A streamed tool call arrives as one tool_calls delta.
    let streamed = chat(
        &gateway,
        json!({"model": "flash", "stream": true, "tools": weather_tool(), "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    let events = streamed.events();
    let calls: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn embeddings_go_through_batch_embed_contents() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let reply = send(post(
        &gateway.url("/v1/embeddings"),
        Some(MASTER_KEY),
        json!({"model": "gemini-embed", "input": ["a", "b"]}).to_string(),
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "gemini-embed");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert!(body["data"][1]["embedding"].as_array().is_some_and(|v| !v.is_empty()));
    assert_eq!(mock.requests()[0].path, "/v1beta/models/text-embedding-004:batchEmbedContents");
}

#[tokio::test]
async fn gemini_errors_map_to_openai_errors() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let hello = json!({"model": "flash", "messages": [{"role": "user", "content": "hi"}]});

    mock.push(gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."));
    let error = assert_error(&chat(&gateway, hello.clone()).await, 401);
    assert!(error["message"].as_str().unwrap().contains("API key not valid"));

    mock.push(Behavior::RateLimited { retry_after_secs: 7 });
    assert_error(&chat(&gateway, hello.clone()).await, 429);

    mock.push(gemini_error(
        400,
        "INVALID_ARGUMENT",
        "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
    ));
    assert_eq!(assert_error(&chat(&gateway, hello.clone()).await, 400)["code"], "context_length_exceeded");

    let bad = chat(
        &gateway,
        json!({"model": "flash", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 5}}),
    )
    .await;
    assert!(assert_error(&bad, 400)["message"].as_str().unwrap().contains("logit_bias"));
}

#[tokio::test]
async fn the_anthropic_front_door_reaches_gemini_models() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock.base_url())).await;
    let reply = send(post(
        &gateway.url("/v1/messages"),
        Some(MASTER_KEY),
        json!({"model": "flash", "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]})
            .to_string(),
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], REPLY_TEXT);
    assert_eq!(body["stop_reason"], "end_turn");
}
