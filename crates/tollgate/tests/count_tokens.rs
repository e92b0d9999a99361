//! End-to-end: `POST /v1/messages/count_tokens` (forwarded to Anthropic's own endpoint for
//! `anthropic/` models, counted with the gateway's tokenizer for the others) and LiteLLM's
//! `POST /utils/token_counter`.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use support::*;
use tollgate_domain::tokens::{self, Encoding};
use tollgate_mock_upstream::{
    COUNT_TOKENS_PER_MESSAGE, COUNT_TOKENS_PER_TOOL, MockUpstream, anthropic_error,
};

const ANTHROPIC_KEY: &str = "sk-ant-count-key";

fn config(mock: &MockUpstream) -> String {
    format!(
        "model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {base}
      api_key: {ANTHROPIC_KEY}
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}
      api_key: sk-openai
  - model_name: llama
    litellm_params:
      model: ollama_chat/llama3.1
      api_base: http://{addr}
  - model_name: foundry-claude
    litellm_params:
      model: azure_ai/claude-haiku-4-5
      api_base: http://{addr}
      api_key: azure-ai-key
general_settings:
  master_key: {MASTER_KEY}
",
        base = mock.base_url(),
        addr = mock.addr(),
    )
}

fn count_request(gateway: &TestGateway, key: &str, body: &Value) -> http::Request<Full<Bytes>> {
    http::Request::post(gateway.url("/v1/messages/count_tokens"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test]
async fn anthropic_models_are_counted_by_anthropic() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let body = json!({
        "model": "claude", "max_tokens": 1024, "system": "be very brief",
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "hello there world"}]
    });
    let reply = send(count_request(&gateway, MASTER_KEY, &body)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    // The mock counts words: 3 of system, 3 of the message, plus its framing and the tool.
    let expected = 3 + COUNT_TOKENS_PER_MESSAGE + 3 + COUNT_TOKENS_PER_TOOL;
    assert_eq!(reply.json(), json!({"input_tokens": expected}));

    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5", "the upstream model, not the alias");
    assert!(sent.get("max_tokens").is_none(), "count_tokens refuses max_tokens: {sent}");

    let foundry = json!({"model": "foundry-claude", "messages": [{"role": "user", "content": "hello"}]});
    let reply = send(count_request(&gateway, MASTER_KEY, &foundry)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json(), json!({"input_tokens": COUNT_TOKENS_PER_MESSAGE + 1}));
    let sent = &mock.requests()[1];
    assert_eq!(sent.path, "/anthropic/v1/messages/count_tokens", "claude on azure ai counts there");
    assert_eq!(sent.headers["api-key"], "azure-ai-key");

    mock.push(anthropic_error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your rate limit.",
    ));
    let limited = send(count_request(&gateway, MASTER_KEY, &body)).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["type"], "error", "errors keep Anthropic's shape");
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn other_models_are_counted_with_the_gateways_tokenizer() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let body = json!({
        "model": "gpt", "system": "be brief",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is the weather in Paris?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}
        ]
    });
    let reply = send(count_request(&gateway, MASTER_KEY, &body)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let canonical = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is the weather in Paris?"}]},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    ]);
    let expected = tokens::count_chat(Encoding::O200kBase, &canonical, None);
    assert_eq!(reply.json(), json!({"input_tokens": expected}));
    assert!(expected > 20, "every part counts: {expected}");

    let ollama = send(count_request(
        &gateway,
        MASTER_KEY,
        &json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}),
    ))
    .await;
    assert_eq!(ollama.status, 200);
    let hi = tokens::count_chat(Encoding::Cl100kBase, &json!([{"role": "user", "content": "hi"}]), None);
    assert_eq!(ollama.json()["input_tokens"], hi);
    assert!(mock.requests().is_empty(), "nothing is sent upstream to count");

    let denied = send(count_request(&gateway, "sk-wrong", &body)).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"]["type"], "authentication_error");
    let unknown = send(count_request(&gateway, MASTER_KEY, &json!({"model": "nope", "messages": []}))).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["type"], "error");
}

#[tokio::test]
async fn utils_token_counter_answers_as_litellm() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let url = gateway.url("/utils/token_counter");
    let messages = json!([{"role": "user", "content": "hello world"}]);
    let reply =
        send(post(&url, Some(MASTER_KEY), json!({"model": "gpt", "messages": messages}).to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(
        reply.json(),
        json!({
            "total_tokens": tokens::count_chat(Encoding::O200kBase, &messages, None),
            "request_model": "gpt",
            "model_used": "gpt-4o",
            "tokenizer_type": "openai_tokenizer",
            "original_response": null,
            "error": false,
            "error_message": null,
            "status_code": null,
        })
    );

    let prompt =
        send(post(&url, Some(MASTER_KEY), json!({"model": "llama", "prompt": "hello world"}).to_string()))
            .await;
    assert_eq!(prompt.json()["total_tokens"], 2);
    assert_eq!(prompt.json()["model_used"], "llama3.1");
    let unconfigured = send(post(
        &url,
        Some(MASTER_KEY),
        json!({"model": "gpt-4o-mini", "prompt": "hello world"}).to_string(),
    ))
    .await;
    assert_eq!(
        unconfigured.json()["model_used"],
        "gpt-4o-mini",
        "a model no group serves is counted as named"
    );

    let empty = send(post(&url, Some(MASTER_KEY), json!({"model": "gpt"}).to_string())).await;
    assert_eq!(assert_error(&empty, 400)["message"], "prompt or messages or contents must be provided");
    let anonymous = send(post(&url, None, json!({"model": "gpt", "prompt": "x"}).to_string())).await;
    assert_error(&anonymous, 401);

    // A virtual key counts for the models it may call, and no others.
    let generated =
        send(post(&gateway.url("/key/generate"), Some(MASTER_KEY), json!({"models": ["gpt"]}).to_string()))
            .await;
    let key = generated.json()["key"].as_str().expect("a raw key").to_owned();
    let allowed = send(post(&url, Some(&key), json!({"model": "gpt", "prompt": "x"}).to_string())).await;
    assert_eq!(allowed.status, 200, "{}", String::from_utf8_lossy(&allowed.body));
    let denied = send(post(&url, Some(&key), json!({"model": "llama", "prompt": "x"}).to_string())).await;
    assert_error(&denied, 403);
    let denied = send(count_request(
        &gateway,
        &key,
        &json!({"model": "claude", "messages": [{"role": "user", "content": "x"}]}),
    ))
    .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["type"], "error");
    assert!(mock.requests().is_empty(), "a denied count reaches no upstream");
}
