//! End-to-end: OpenAI-shaped requests through the gateway to `ollama_chat/` and `ollama/`
//! models on the mock's native Ollama API (`/api/chat`, `/api/generate`, `/api/embed`,
//! NDJSON streams), and the answers back in OpenAI's shape.

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{
    Behavior, COMPLETION_TOKENS, EMBEDDING_TOKENS_PER_INPUT, MockUpstream, OLLAMA_JSON_REPLY_TEXT,
    OLLAMA_LENGTH_TEXT, OLLAMA_MISSING_MODEL, OLLAMA_THINKING_TEXT, OLLAMA_TOOL_ARGUMENTS_JSON,
    PROMPT_TOKENS, REPLY_TEXT,
};

fn config(mock: &MockUpstream) -> String {
    let base = format!("http://{}", mock.addr());
    format!(
        "model_list:
  - model_name: llama
    litellm_params:
      model: ollama_chat/llama3.1
      api_base: {base}
      num_ctx: 8192
      keep_alive: 10m
  - model_name: qwen
    litellm_params:
      model: ollama/qwen3
      api_base: {base}/api/generate
  - model_name: embed
    litellm_params:
      model: ollama/nomic-embed-text
      api_base: {base}
  - model_name: missing
    litellm_params:
      model: ollama_chat/{OLLAMA_MISSING_MODEL}
      api_base: {base}
general_settings:
  master_key: {MASTER_KEY}
"
    )
}

fn sent(mock: &MockUpstream, index: usize) -> (String, Value) {
    let request = &mock.requests()[index];
    (request.path.clone(), serde_json::from_slice(&request.body).unwrap())
}

/// The chunks of an SSE body, which must end with `[DONE]`.
fn chunks(reply: &Reply) -> Vec<Value> {
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test]
async fn chat_goes_to_api_chat_with_options_and_comes_back_openai_shaped() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "llama", "max_tokens": 100, "temperature": 0.2, "stop": "END", "seed": 1, "num_ctx": 4096,
               "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "llama", "the alias, not the upstream model");
    assert_eq!(body["choices"][0]["message"], json!({"role": "assistant", "content": REPLY_TEXT}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
               "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
    );

    let (path, sent) = sent(&mock, 0);
    assert_eq!(path, "/api/chat");
    assert_eq!(sent["model"], "llama3.1");
    assert_eq!(sent["stream"], false);
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello"}])
    );
    assert_eq!(
        sent["options"],
        json!({"num_ctx": 4096, "num_predict": 100, "temperature": 0.2, "stop": ["END"], "seed": 1}),
        "the request's num_ctx wins over the config's"
    );
    assert_eq!(sent["keep_alive"], "10m", "from litellm_params");
    assert!(!mock.requests()[0].headers.contains_key("authorization"), "a local Ollama takes no key");
}

#[tokio::test]
async fn a_stream_of_ndjson_lines_becomes_openai_chunks_with_usage() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "llama", "stream": true, "stream_options": {"include_usage": true},
               "reasoning_effort": "low", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), "text/event-stream");
    let chunks = chunks(&reply);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["model"] == "llama" && c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    let thinking: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    assert_eq!(thinking, OLLAMA_THINKING_TEXT);
    let finish: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!("stop")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(usage["completion_tokens"], COMPLETION_TOKENS);
    let (_, sent) = sent(&mock, 0);
    assert_eq!((sent["stream"].clone(), sent["think"].clone()), (json!(true), json!(true)));
}

#[tokio::test]
async fn tools_images_and_tool_results_map_both_ways() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let reply = chat(
        &gateway,
        json!({"model": "llama", "tools": tools, "tool_choice": "auto", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "weather here?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ]}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let choice = &reply.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, serde_json::from_str::<Value>(OLLAMA_TOOL_ARGUMENTS_JSON).unwrap());
    let (_, first) = sent(&mock, 0);
    assert_eq!(
        first["messages"][0],
        json!({"role": "user", "content": "weather here?", "images": ["iVBORw0KGgo="]})
    );
    assert_eq!(first["tools"], tools);
    assert!(first.get("tool_choice").is_none());

    // The tool's result goes back with the call's arguments as an object, as Ollama requires.
    let id = call["id"].as_str().unwrap();
    let reply = chat(
        &gateway,
        json!({"model": "llama", "tools": tools, "messages": [
            {"role": "user", "content": "weather here?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "sunny"}
        ]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["choices"][0]["message"]["content"], REPLY_TEXT);
    let (_, second) = sent(&mock, 1);
    assert_eq!(second["messages"][1]["tool_calls"][0]["function"]["arguments"], arguments);
    assert_eq!(
        second["messages"][2],
        json!({"role": "tool", "content": "sunny", "tool_name": "get_weather"})
    );

    let web_image = chat(
        &gateway,
        json!({"model": "llama", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
    )
    .await;
    assert!(assert_error(&web_image, 400)["message"].as_str().unwrap().contains("data: URLs"));
    assert_eq!(mock.requests().len(), 2, "a refused request never reaches Ollama");
}

#[tokio::test]
async fn ollama_prefix_chat_uses_api_generate_with_litellms_prompt() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "qwen", "max_tokens": 2, "think": true,
               "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let choice = &reply.json()["choices"][0];
    assert_eq!(choice["message"]["content"], OLLAMA_LENGTH_TEXT);
    assert_eq!(choice["message"]["reasoning_content"], OLLAMA_THINKING_TEXT);
    assert_eq!(choice["finish_reason"], "length");
    let (path, sent) = sent(&mock, 0);
    assert_eq!(path, "/api/generate", "an api_base ending in /api/generate is not doubled");
    assert_eq!(sent["prompt"], "### System:\nbe brief\n\n### User:\nhi\n\n");
    assert_eq!(sent["options"], json!({"num_predict": 2}));
    assert_eq!(sent["think"], true);

    let tools = chat(
        &gateway,
        json!({"model": "qwen", "tools": [{"type": "function", "function": {"name": "f"}}],
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(assert_error(&tools, 400)["message"].as_str().unwrap().contains("ollama_chat/qwen3"));
}

#[tokio::test]
async fn json_mode_sets_format_and_completions_stream_text() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "llama", "response_format": {"type": "json_schema",
                 "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"reply": {"type": "string"}}}}},
               "messages": [{"role": "user", "content": "answer in JSON"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["choices"][0]["message"]["content"], OLLAMA_JSON_REPLY_TEXT);
    let (_, sent_chat) = sent(&mock, 0);
    assert_eq!(sent_chat["format"]["properties"]["reply"]["type"], "string");

    let url = gateway.url("/v1/completions");
    let body = json!({"model": "qwen", "prompt": "def add(a, b):", "suffix": "return c", "stream": true});
    let reply = send(post(&url, Some(MASTER_KEY), body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let chunks = chunks(&reply);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion" && c["model"] == "qwen"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    let (path, sent_completion) = sent(&mock, 1);
    assert_eq!(path, "/api/generate");
    assert_eq!(sent_completion["prompt"], "def add(a, b):");
    assert_eq!(sent_completion["suffix"], "return c");
}

#[tokio::test]
async fn embeddings_go_to_api_embed_in_one_call() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let url = gateway.url("/v1/embeddings");
    let body = json!({"model": "embed", "input": ["one", "two", "three"], "dimensions": 4});
    let reply = send(post(&url, Some(MASTER_KEY), body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let list = reply.json();
    assert_eq!(list["object"], "list");
    assert_eq!(list["model"], "embed");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(list["usage"]["prompt_tokens"], 3 * EMBEDDING_TOKENS_PER_INPUT);
    assert_eq!(mock.requests().len(), 1);
    let (path, sent) = sent(&mock, 0);
    assert_eq!(path, "/api/embed");
    assert_eq!(sent, json!({"model": "nomic-embed-text", "input": ["one", "two", "three"], "dimensions": 4}));
}

#[tokio::test]
async fn ollama_errors_come_back_openai_shaped() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let hello = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});

    let missing = chat(&gateway, hello("missing")).await;
    let error = assert_error(&missing, 404);
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("try pulling it first"), "{error}");

    mock.push(Behavior::Error {
        status: 500,
        body: r#"{"error":"model requires more system memory"}"#.into(),
    });
    let error = assert_error(&chat(&gateway, hello("llama")).await, 500);
    assert_eq!(error["message"], "model requires more system memory");

    // A stream that breaks after its first line ends with an error event, not a hang.
    mock.push(Behavior::StallStream { after_chunks: 1 });
    let stalled = TestGateway::start(
        &config(&mock).replace("num_ctx: 8192", "num_ctx: 8192\n      stream_timeout: 0.3"),
    )
    .await;
    let reply = chat(
        &stalled,
        json!({"model": "llama", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let last = reply.events().last().cloned().unwrap();
    assert!(last.contains("\"error\"") && last.contains("timed out"), "{last}");

    // Ollama not running: a clear connection error naming the address.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let down = TestGateway::start(&format!(
        "model_list:\n  - model_name: llama\n    litellm_params: {{model: ollama_chat/llama3.1, api_base: 'http://{closed}'}}\ngeneral_settings:\n  master_key: {MASTER_KEY}\n"
    ))
    .await;
    let error = assert_error(&chat(&down, hello("llama")).await, 500);
    assert!(error["message"].as_str().unwrap().contains(&closed.to_string()), "{error}");
}

#[tokio::test]
async fn the_anthropic_front_door_reaches_ollama() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let request = http::Request::post(gateway.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "llama", "max_tokens": 64, "system": "terse",
                   "messages": [{"role": "user", "content": "hello"}]})
            .to_string(),
        )))
        .unwrap();
    let reply = send(request).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let message = reply.json();
    assert_eq!(message["content"], json!([{"type": "text", "text": REPLY_TEXT}]));
    assert_eq!(message["usage"]["input_tokens"], PROMPT_TOKENS);
    let (path, sent) = sent(&mock, 0);
    assert_eq!(path, "/api/chat");
    assert_eq!(sent["options"]["num_predict"], 64);
}
