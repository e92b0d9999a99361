//! End-to-end: OpenAI-shaped requests through the gateway to `cohere/` models on the mock's
//! Cohere v2 API (chat, SSE streams, tools, JSON mode, embeddings), to `voyage/` and
//! `jina_ai/` embeddings, and LiteLLM's `/rerank` to all three, priced and logged; upstream
//! errors come back OpenAI-shaped.

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{
    Behavior, COHERE_JSON_REPLY_TEXT, COHERE_TEMPLATE_TOKENS, COHERE_TOOL_ARGUMENTS_JSON, COMPLETION_TOKENS,
    DEFAULT_STREAM_CHUNKS, EMBEDDING_TOKENS_PER_INPUT, MockUpstream, PROMPT_TOKENS, REPLY_TEXT, cohere_error,
};

const COHERE_KEY: &str = "co-upstream-secret-1";
const VOYAGE_KEY: &str = "pa-upstream-secret-2";
const JINA_KEY: &str = "jina-upstream-secret-3";
/// Cohere's price of one search unit of rerank-v3.5 in the pricing table.
const RERANK_V35_PER_QUERY: f64 = 0.002;
/// Voyage's and Jina's rerankers' price per token in the pricing table.
const RERANK_2_PER_TOKEN: f64 = 5e-8;

fn config(mock: &MockUpstream, general: &str) -> String {
    let base = format!("http://{}", mock.addr());
    format!(
        "model_list:
  - model_name: command
    litellm_params: {{model: cohere/command-a-03-2025, api_base: \"{base}\", api_key: {COHERE_KEY}}}
  - model_name: command-r
    litellm_params: {{model: cohere_chat/command-r, api_base: \"{base}/v1/chat\", api_key: {COHERE_KEY}}}
  - model_name: cohere-embed
    litellm_params: {{model: cohere/embed-v4.0, api_base: \"{base}\", api_key: {COHERE_KEY}}}
  - model_name: cohere-rerank
    litellm_params: {{model: cohere/rerank-v3.5, api_base: \"{base}\", api_key: {COHERE_KEY}}}
  - model_name: voyage-embed
    litellm_params: {{model: voyage/voyage-3.5, api_base: \"{base}/voyage/v1\", api_key: {VOYAGE_KEY}}}
  - model_name: voyage-rerank
    litellm_params: {{model: voyage/rerank-2, api_base: \"{base}/voyage/v1\", api_key: {VOYAGE_KEY}}}
  - model_name: jina-embed
    litellm_params: {{model: jina_ai/jina-embeddings-v3, api_base: \"{base}/jina/v1\", api_key: {JINA_KEY}}}
  - model_name: jina-rerank
    litellm_params: {{model: jina_ai/jina-reranker-v2-base-multilingual, api_base: \"{base}/jina/v1\", api_key: {JINA_KEY}}}
general_settings:
  master_key: {MASTER_KEY}
{general}"
    )
}

async fn start(mock: &MockUpstream) -> TestGateway {
    TestGateway::start(&config(mock, "")).await
}

async fn call(gateway: &TestGateway, path: &str, key: &str, body: Value) -> Reply {
    send(post(&gateway.url(path), Some(key), body.to_string())).await
}

fn sent(mock: &MockUpstream, i: usize) -> Value {
    serde_json::from_slice(&mock.requests()[i].body).unwrap()
}

fn chunks(reply: &Reply) -> Vec<Value> {
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time"}}
    ])
}

fn documents() -> Value {
    json!(["Berlin is a city", "Paris is the capital of France", {"text": "France exports wine"}])
}

/// A virtual key allowed `models`.
async fn new_key(gateway: &TestGateway, models: Value) -> String {
    let reply = call(gateway, "/key/generate", MASTER_KEY, json!({"models": models})).await;
    reply.json()["key"].as_str().expect("a raw key").to_owned()
}

fn cost(reply: &Reply) -> f64 {
    reply.header("x-litellm-response-cost").parse().unwrap()
}

#[tokio::test]
async fn chat_is_translated_to_v2_and_back() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let reply = chat(
        &gateway,
        json!({"model": "command", "max_tokens": 50, "temperature": 0.3, "top_p": 0.8, "stop": "END", "user": "u-7",
               "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "command", "the alias, not the upstream model");
    assert_eq!(body["choices"][0]["message"], json!({"role": "assistant", "content": REPLY_TEXT}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let prompt = PROMPT_TOKENS + COHERE_TEMPLATE_TOKENS;
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": COMPLETION_TOKENS, "total_tokens": prompt + COMPLETION_TOKENS})
    );

    let request = &mock.requests()[0];
    assert_eq!(request.path, "/v2/chat");
    assert_eq!(request.headers["authorization"], format!("Bearer {COHERE_KEY}").as_str());
    assert_eq!(
        sent(&mock, 0),
        json!({"model": "command-a-03-2025", "max_tokens": 50, "temperature": 0.3, "p": 0.8, "stop_sequences": ["END"],
               "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello"}]}),
        "the mock refuses fields outside Cohere's schema; these are all there is"
    );

    // LiteLLM configs often give the full chat URL as api_base; it reaches /v2/chat all the same.
    let full_url =
        chat(&gateway, json!({"model": "command-r", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(full_url.status, 200, "{}", String::from_utf8_lossy(&full_url.body));
    assert_eq!(mock.requests()[1].path, "/v2/chat");
    assert_eq!(sent(&mock, 1)["model"], "command-r");
}

#[tokio::test]
async fn streams_become_openai_chunks_with_usage() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let hello = json!({"role": "user", "content": "hello"});
    let reply = chat(
        &gateway,
        json!({"model": "command", "stream": true, "stream_options": {"include_usage": true}, "messages": [hello]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), "text/event-stream");
    let streamed = chunks(&reply);
    assert!(streamed.iter().all(|c| c["model"] == "command" && c["object"] == "chat.completion.chunk"));
    assert_eq!(streamed[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = streamed.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    assert!(streamed.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = &streamed.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], DEFAULT_STREAM_CHUNKS as u64);
    assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS + COHERE_TEMPLATE_TOKENS);
    assert_eq!(sent(&mock, 0)["stream"], true);
    assert!(sent(&mock, 0).get("stream_options").is_none());

    // Without include_usage the client gets no usage chunk, whatever the gateway metered.
    let plain = chat(&gateway, json!({"model": "command", "stream": true, "messages": [hello]})).await;
    assert!(chunks(&plain).iter().all(|c| c.get("usage").is_none_or(Value::is_null)), "{:?}", plain.events());
}

#[tokio::test]
async fn a_generation_that_fails_mid_stream_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    mock.push(Behavior::StreamException {
        after_events: 3,
        exception_type: String::new(),
        message: "internal generation failure".into(),
    });
    let reply = chat(
        &gateway,
        json!({"model": "command", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(
        last["error"]["message"],
        "cohere ended the generation with ERROR: internal generation failure"
    );
    assert_eq!(last["error"]["code"], "500");
    assert!(events.iter().any(|e| e.contains("\"content\"")), "the text sent before the failure arrives");
}

#[tokio::test]
async fn parallel_tool_calls_and_their_results_round_trip() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let question = json!({"role": "user", "content": "weather and time in Paris?"});
    let called = chat(
        &gateway,
        json!({"model": "command", "tools": tools(), "tool_choice": "required", "messages": [question]}),
    )
    .await
    .json();
    let choice = &called["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0]["function"]["name"].as_str(), calls[1]["function"]["name"].as_str()),
        (Some("get_weather"), Some("get_time"))
    );
    assert_eq!(calls[1]["function"]["arguments"], COHERE_TOOL_ARGUMENTS_JSON);
    let request = sent(&mock, 0);
    assert_eq!(request["tool_choice"], "REQUIRED");
    assert_eq!(
        request["tools"][1],
        json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}),
        "Cohere requires parameters"
    );

    let answered = chat(
        &gateway,
        json!({"model": "command", "tools": tools(), "messages": [
            question,
            choice["message"].clone(),
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"}
        ]}),
    )
    .await;
    assert_eq!(answered.status, 200, "{}", String::from_utf8_lossy(&answered.body));
    assert_eq!(answered.json()["choices"][0]["message"]["content"], REPLY_TEXT);
    let turns = sent(&mock, 1)["messages"].clone();
    assert_eq!(turns[1]["tool_calls"][0]["id"], calls[0]["id"]);
    assert!(turns[1].get("content").is_none(), "a null content is left out");
    assert_eq!(turns[3], json!({"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"}));

    let streamed = chat(
        &gateway,
        json!({"model": "command", "stream": true, "tools": tools(), "tool_choice": "required", "messages": [question]}),
    )
    .await;
    let mut arguments = [String::new(), String::new()];
    let mut names = Vec::new();
    let chunks = chunks(&streamed);
    for call in chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten() {
        let index = call["index"].as_u64().unwrap() as usize;
        if let Some(name) = call["function"]["name"].as_str() {
            names.push(name.to_owned());
            assert!(call["id"].as_str().is_some_and(|id| id.starts_with(name)));
        }
        arguments[index].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
    }
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(arguments, [COHERE_TOOL_ARGUMENTS_JSON, COHERE_TOOL_ARGUMENTS_JSON]);
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test]
async fn json_mode_and_unsupported_parameters() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}});
    let reply = chat(
        &gateway,
        json!({"model": "command", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
               "messages": [{"role": "user", "content": "answer in JSON"}]}),
    )
    .await
    .json();
    assert_eq!(reply["choices"][0]["message"]["content"], COHERE_JSON_REPLY_TEXT);
    assert_eq!(sent(&mock, 0)["response_format"], json!({"type": "json_object", "json_schema": schema}));

    let bad =
        chat(&gateway, json!({"model": "command", "n": 3, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    assert_eq!(assert_error(&bad, 400)["message"], "`n` is not supported by cohere models");
    assert_eq!(mock.requests().len(), 1, "refused before any upstream call");
}

#[tokio::test]
async fn cohere_embeddings_batch_and_follow_litellm_defaults() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let reply = call(
        &gateway,
        "/v1/embeddings",
        MASTER_KEY,
        json!({"model": "cohere-embed", "input": ["a", "b"], "dimensions": 256}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!((body["object"].as_str(), body["model"].as_str()), (Some("list"), Some("cohere-embed")));
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 256);
    assert_eq!(body["usage"]["prompt_tokens"], 2 * EMBEDDING_TOKENS_PER_INPUT);
    assert_eq!(mock.requests()[0].path, "/v2/embed");
    assert_eq!(
        sent(&mock, 0),
        json!({"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"], "output_dimension": 256})
    );

    // More texts than one call takes go in batches, answered in order as one list.
    let many: Vec<String> = (0..100).map(|i| format!("text {i}")).collect();
    let reply = call(&gateway, "/embeddings", MASTER_KEY, json!({"model": "cohere-embed", "input": many, "input_type": "search_query", "encoding_format": "base64"})).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 100);
    assert!(data.iter().enumerate().all(|(i, item)| item["index"] == i && item["embedding"].is_string()));
    assert_eq!(body["usage"]["total_tokens"], 100 * EMBEDDING_TOKENS_PER_INPUT);
    let batches: Vec<usize> = (1..3).map(|i| sent(&mock, i)["texts"].as_array().unwrap().len()).collect();
    assert_eq!(batches, [96, 4]);
    assert_eq!(sent(&mock, 2)["input_type"], "search_query");
    assert_eq!(sent(&mock, 2)["embedding_types"], json!(["base64"]));
}

#[tokio::test]
async fn voyage_and_jina_embeddings_use_their_own_fields() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let voyage = call(
        &gateway,
        "/v1/embeddings",
        MASTER_KEY,
        json!({"model": "voyage-embed", "input": ["a", "b"], "dimensions": 512, "input_type": "query"}),
    )
    .await;
    assert_eq!(voyage.status, 200, "{}", String::from_utf8_lossy(&voyage.body));
    let body = voyage.json();
    assert_eq!(body["model"], "voyage-embed");
    assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 512);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 2 * EMBEDDING_TOKENS_PER_INPUT, "total_tokens": 2 * EMBEDDING_TOKENS_PER_INPUT})
    );
    let request = &mock.requests()[0];
    assert_eq!(request.path, "/voyage/v1/embeddings");
    assert_eq!(request.headers["authorization"], format!("Bearer {VOYAGE_KEY}").as_str());
    assert_eq!(
        sent(&mock, 0),
        json!({"model": "voyage-3.5", "input": ["a", "b"], "output_dimension": 512, "input_type": "query"})
    );

    let jina = call(
        &gateway,
        "/v1/embeddings",
        MASTER_KEY,
        json!({"model": "jina-embed", "input": "a", "dimensions": 64, "task": "retrieval.passage"}),
    )
    .await;
    assert_eq!(jina.status, 200, "{}", String::from_utf8_lossy(&jina.body));
    let body = jina.json();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 64);
    assert_eq!(body["usage"]["prompt_tokens"], EMBEDDING_TOKENS_PER_INPUT);
    assert_eq!(mock.requests()[1].path, "/jina/v1/embeddings");
    assert_eq!(
        sent(&mock, 1),
        json!({"model": "jina-embeddings-v3", "input": ["a"], "dimensions": 64, "task": "retrieval.passage"})
    );

    // A rerank or embedding model does not chat.
    let refused =
        chat(&gateway, json!({"model": "voyage-embed", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    assert!(
        assert_error(&refused, 400)["message"].as_str().unwrap().contains("serves embeddings and rerank")
    );
}

#[tokio::test]
async fn rerank_reaches_each_provider_and_is_priced() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let query = "capital of France";

    let cohere = call(
        &gateway,
        "/v1/rerank",
        MASTER_KEY,
        json!({"model": "cohere-rerank", "query": query, "documents": documents(), "top_n": 2}),
    )
    .await;
    assert_eq!(cohere.status, 200, "{}", String::from_utf8_lossy(&cohere.body));
    let body = cohere.json();
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 1);
    assert_eq!(
        results[0]["document"],
        json!({"text": "Paris is the capital of France"}),
        "documents are returned by default"
    );
    assert!(results[0]["relevance_score"].as_f64() > results[1]["relevance_score"].as_f64());
    assert_eq!(body["meta"]["billed_units"]["search_units"], 1);
    assert!((cost(&cohere) - RERANK_V35_PER_QUERY).abs() < 1e-12, "one search unit at rerank-v3.5's price");
    assert_eq!(mock.requests()[0].path, "/v2/rerank");
    assert_eq!(
        sent(&mock, 0),
        json!({"model": "rerank-v3.5", "query": query, "documents": ["Berlin is a city", "Paris is the capital of France", "France exports wine"], "top_n": 2})
    );

    let voyage = call(
        &gateway,
        "/rerank",
        MASTER_KEY,
        json!({"model": "voyage-rerank", "query": query, "documents": documents(), "top_n": 1}),
    )
    .await;
    assert_eq!(voyage.status, 200, "{}", String::from_utf8_lossy(&voyage.body));
    let body = voyage.json();
    assert_eq!(
        body["results"],
        json!([{"index": 1, "relevance_score": body["results"][0]["relevance_score"], "document": {"text": "Paris is the capital of France"}}])
    );
    let tokens = 2 * EMBEDDING_TOKENS_PER_INPUT * 3;
    assert_eq!(
        body["meta"],
        json!({"billed_units": {"total_tokens": tokens}, "tokens": {"input_tokens": tokens, "output_tokens": 0}})
    );
    assert!((cost(&voyage) - tokens as f64 * RERANK_2_PER_TOKEN).abs() < 1e-15);
    assert_eq!(mock.requests()[1].path, "/voyage/v1/rerank");
    assert_eq!(sent(&mock, 1)["top_k"], 1);

    let jina = call(
        &gateway,
        "/v2/rerank",
        MASTER_KEY,
        json!({"model": "jina-rerank", "query": query, "documents": documents(), "return_documents": false}),
    )
    .await;
    assert_eq!(jina.status, 200, "{}", String::from_utf8_lossy(&jina.body));
    let results = jina.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.get("document").is_none()));
    assert!((cost(&jina) - tokens as f64 * RERANK_2_PER_TOKEN).abs() < 1e-15);
    assert_eq!(mock.requests()[2].path, "/jina/v1/rerank");
    assert_eq!(sent(&mock, 2)["return_documents"], false);
}

#[tokio::test]
async fn rerank_is_checked_authorized_and_logged_for_virtual_keys() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let gateway = TestGateway::start(&config(
        &mock,
        &format!("  database_url: \"{url}\"\n  proxy_batch_write_at: 1\n"),
    ))
    .await;
    let chat_only = new_key(&gateway, json!(["command"])).await;
    let rerank_key = new_key(&gateway, json!(["cohere-rerank"])).await;
    let body = json!({"model": "cohere-rerank", "query": "q", "documents": ["a", "b"]});

    let denied = call(&gateway, "/v1/rerank", &chat_only, body.clone()).await;
    assert_eq!(assert_error(&denied, 403)["param"], "model");
    let missing =
        call(&gateway, "/v1/rerank", &rerank_key, json!({"model": "cohere-rerank", "query": "q"})).await;
    assert_eq!(assert_error(&missing, 400)["param"], "documents");
    assert!(mock.requests().is_empty(), "neither reached the upstream");

    let reply = call(&gateway, "/v1/rerank", &rerank_key, body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-litellm-model-group"), "cohere-rerank");
    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    let row = spend_log_row(&store, &reply).await;
    assert_eq!(row.call_type, "arerank");
    assert_eq!(row.model_group.as_deref(), Some("cohere-rerank"));
    assert_eq!(row.custom_llm_provider.as_deref(), Some("cohere"));
    assert!((row.spend - RERANK_V35_PER_QUERY).abs() < 1e-12, "{}", row.spend);
    assert!(
        (reply.header("x-litellm-key-spend").parse::<f64>().unwrap() - RERANK_V35_PER_QUERY).abs() < 1e-12
    );
}

#[tokio::test]
async fn upstream_errors_come_back_openai_shaped() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let hello = json!({"model": "command", "messages": [{"role": "user", "content": "hi"}]});

    mock.push(cohere_error(401, &format!("invalid api token {COHERE_KEY}")));
    let error = assert_error(&chat(&gateway, hello.clone()).await, 401);
    assert_eq!(error["message"], "invalid api token [redacted]");

    mock.push(cohere_error(
        400,
        "too many tokens: total number of tokens in the prompt cannot exceed 128000 - received 200000.",
    ));
    let error = assert_error(&chat(&gateway, hello.clone()).await, 400);
    assert_eq!(error["code"], "context_length_exceeded");

    mock.push(Behavior::RateLimited { retry_after_secs: 7 });
    let limited = chat(&gateway, hello).await;
    let error = assert_error(&limited, 429);
    assert!(error["message"].as_str().unwrap().contains("Trial key"), "{error}");

    mock.push(Behavior::Error {
        status: 400,
        body: json!({"detail": "Input text exceeds the context length of the model."}).to_string(),
    });
    let error = assert_error(
        &call(&gateway, "/v1/embeddings", MASTER_KEY, json!({"model": "voyage-embed", "input": "x"})).await,
        400,
    );
    assert_eq!(error["message"], "Input text exceeds the context length of the model.");
    assert_eq!(error["code"], "context_length_exceeded");

    mock.push(Behavior::Error { status: 401, body: json!({"detail": "Unauthorized"}).to_string() });
    let error = assert_error(
        &call(
            &gateway,
            "/v1/rerank",
            MASTER_KEY,
            json!({"model": "jina-rerank", "query": "q", "documents": ["a"]}),
        )
        .await,
        401,
    );
    assert_eq!(error["message"], "Unauthorized");

    let unranked = call(
        &gateway,
        "/v1/rerank",
        MASTER_KEY,
        json!({"model": "jina-rerank", "query": "q", "documents": [{"title": "t"}]}),
    )
    .await;
    assert!(assert_error(&unranked, 400)["message"].as_str().unwrap().contains("documents[0]"));
}

#[tokio::test]
async fn health_probes_rerank_models_with_a_rerank() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock).await;
    let reply = send(get(&gateway.url("/health"), Some(MASTER_KEY))).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["unhealthy_count"], 0, "{body}");
    assert_eq!(body["healthy_count"], 8);
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    for path in ["/v2/rerank", "/voyage/v1/rerank", "/jina/v1/rerank", "/v2/embed", "/v2/chat"] {
        assert!(paths.iter().any(|p| p == path), "{path} in {paths:?}");
    }
}

#[tokio::test]
async fn rerank_answers_are_cached_like_litellm_s() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock, "litellm_settings:\n  cache: true\n")).await;
    let body = json!({"model": "cohere-rerank", "query": "capital of France", "documents": documents()});
    let first = call(&gateway, "/v1/rerank", MASTER_KEY, body.clone()).await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let second = call(&gateway, "/v1/rerank", MASTER_KEY, body).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.json(), first.json(), "the same answer, id included");
    assert_eq!(mock.requests().len(), 1, "the second came from the cache");
    assert_eq!(cost(&second), 0.0);
    let other = call(
        &gateway,
        "/v1/rerank",
        MASTER_KEY,
        json!({"model": "cohere-rerank", "query": "other", "documents": documents()}),
    )
    .await;
    assert_ne!(other.json()["id"], first.json()["id"]);
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn an_openai_compatible_deployment_gets_the_rerank_body_as_it_is() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: vllm-rerank\n    litellm_params: {{model: hosted_vllm/BAAI/bge-reranker-v2-m3, api_base: \"{}\"}}\ngeneral_settings:\n  master_key: {MASTER_KEY}\n",
        mock.base_url()
    );
    let gateway = TestGateway::start(&yaml).await;
    let body = json!({"model": "vllm-rerank", "query": "q", "documents": ["a", "b"], "top_n": 1});
    // The mock's OpenAI side has no rerank route: its 404 comes back as the answer.
    let reply = call(&gateway, "/v1/rerank", MASTER_KEY, body).await;
    assert_error(&reply, 404);
    let request = &mock.requests()[0];
    assert_eq!(request.path, "/v1/rerank");
    assert_eq!(
        serde_json::from_slice::<Value>(&request.body).unwrap(),
        json!({"model": "BAAI/bge-reranker-v2-m3", "query": "q", "documents": ["a", "b"], "top_n": 1})
    );
}
