//! End-to-end: the OpenAI-compatible providers with quirks (`mistral/`, `hosted_vllm/`), whose
//! bodies the gateway rewrites only where they differ from OpenAI, and Azure AI Foundry
//! (`azure_ai/`): its model-inference routes, serverless endpoints and Claude models.

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{Behavior, COMPLETION_TOKENS, MockUpstream, PROMPT_TOKENS, REPLY_TEXT};

const MISTRAL_KEY: &str = "mistral-key-123";
const AZURE_AI_KEY: &str = "azure-ai-key-456";

fn config(mock: &MockUpstream) -> String {
    let base = mock.base_url();
    let host = format!("http://{}", mock.addr());
    format!(
        "model_list:
  - model_name: mistral
    litellm_params:
      model: mistral/mistral-large-latest
      api_base: {base}
      api_key: {MISTRAL_KEY}
  - model_name: vllm
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: {base}
  - model_name: plain
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}
      api_key: sk-plain
  - model_name: foundry
    litellm_params:
      model: azure_ai/mistral-large-2411
      api_base: {host}/models
      api_version: 2024-05-01-preview
      api_key: {AZURE_AI_KEY}
  - model_name: serverless
    litellm_params:
      model: azure_ai/Meta-Llama-3.1-70B-Instruct
      api_base: {base}
      api_key: {AZURE_AI_KEY}
  - model_name: foundry-claude
    litellm_params:
      model: azure_ai/claude-sonnet-4-5
      api_base: {host}/anthropic
      api_key: {AZURE_AI_KEY}
general_settings:
  master_key: {MASTER_KEY}
"
    )
}

fn sent(mock: &MockUpstream, index: usize) -> Value {
    serde_json::from_slice(&mock.requests()[index].body).unwrap()
}

#[tokio::test]
async fn mistral_bodies_are_rewritten_where_mistral_differs() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "mistral", "max_completion_tokens": 50, "seed": 7, "tool_choice": "required", "user": "u-1",
               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
               "messages": [{"role": "user", "name": "ann", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["model"], "mistral");
    let request = &mock.requests()[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], format!("Bearer {MISTRAL_KEY}").as_str());
    let body = sent(&mock, 0);
    assert_eq!(body["model"], "mistral-large-latest");
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["random_seed"], 7);
    assert_eq!(body["tool_choice"], "any");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    for dropped in ["max_completion_tokens", "seed", "user"] {
        assert!(body.get(dropped).is_none(), "{dropped} is not sent to mistral: {body}");
    }

    // A stream is metered from Mistral's own usage: no stream_options is sent.
    let reply = chat(
        &gateway,
        json!({"model": "mistral", "stream": true, "stream_options": {"include_usage": true},
                                      "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(sent(&mock, 1).get("stream_options").is_none());

    let refused = chat(
        &gateway,
        json!({"model": "mistral", "logit_bias": {"50256": -100},
                                        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(assert_error(&refused, 400)["message"], "`logit_bias` is not supported by mistral models");
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn plain_openai_bodies_pass_untouched_and_vllm_tools_lose_strict_keywords() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let body = r#"{"model":"plain","seed":7,"max_completion_tokens":5,"user":"u","messages":[{"role":"user","name":"ann","content":"hi"}]}"#;
    let reply = send(post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        std::str::from_utf8(&mock.requests()[0].body).unwrap(),
        body.replace("\"plain\"", "\"gpt-4o\""),
        "an OpenAI body is forwarded byte for byte, only the model spliced in"
    );

    let tools = json!([{"type": "function", "function": {"name": "f", "strict": true,
        "parameters": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}}}}]);
    let reply = chat(
        &gateway,
        json!({"model": "vllm", "tools": tools, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let sent = sent(&mock, 1);
    assert_eq!(sent["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}])
    );
    assert!(!mock.requests()[1].headers.contains_key("authorization"), "vLLM without a key gets none");
}

#[tokio::test]
async fn azure_ai_foundry_models_use_the_model_inference_route_and_api_key() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply =
        chat(&gateway, json!({"model": "foundry", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["model"], "foundry");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    let request = &mock.requests()[0];
    assert_eq!(request.path, "/models/chat/completions", "/models in api_base is not doubled");
    assert_eq!(request.query.as_deref(), Some("api-version=2024-05-01-preview"));
    // The mock is on 127.0.0.1, not an Azure host: the key goes as a bearer there. An Azure
    // host gets `api-key` (the adapter's unit tests check both).
    assert_eq!(request.headers["authorization"], format!("Bearer {AZURE_AI_KEY}").as_str());
    assert_eq!(sent(&mock, 0)["model"], "mistral-large-2411");

    let url = gateway.url("/v1/embeddings");
    let reply =
        send(post(&url, Some(MASTER_KEY), json!({"model": "foundry", "input": "x"}).to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(mock.requests()[1].path, "/models/embeddings");

    let reply = chat(
        &gateway,
        json!({"model": "serverless", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.events().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(mock.requests()[2].path, "/v1/chat/completions");

    mock.push(Behavior::Error {
        status: 429,
        body: r#"{"error":{"code":"429","message":"Rate limit is exceeded."}}"#.into(),
    });
    let error = assert_error(
        &chat(&gateway, json!({"model": "foundry", "messages": [{"role": "user", "content": "hi"}]})).await,
        429,
    );
    assert_eq!(error["message"], "Rate limit is exceeded.");
}

#[tokio::test]
async fn azure_ai_claude_speaks_anthropics_messages_api_with_api_key() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "foundry-claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!(body["usage"]["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(body["usage"]["completion_tokens"], COMPLETION_TOKENS);
    let request = &mock.requests()[0];
    assert_eq!(request.path, "/anthropic/v1/messages");
    assert_eq!(request.headers["api-key"], AZURE_AI_KEY);
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert!(!request.headers.contains_key("x-api-key"));
    let sent = sent(&mock, 0);
    assert_eq!((sent["model"].clone(), sent["max_tokens"].clone()), (json!("claude-sonnet-4-5"), json!(64)));

    let reply = chat(
        &gateway,
        json!({"model": "foundry-claude", "stream": true, "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert!(!text.is_empty());
}
