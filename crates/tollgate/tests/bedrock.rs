//! End-to-end: OpenAI-shaped requests through the gateway to `bedrock/` models on the mock's
//! Bedrock Runtime (Converse, ConverseStream's binary event stream, invoke embeddings), with
//! SigV4 signatures the mock recomputes, and the answers back.

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{
    BEDROCK_ACCESS_KEY_ID, BEDROCK_CACHE_READ_TOKENS, BEDROCK_CACHE_WRITE_TOKENS, BEDROCK_REASONING_TEXT,
    BEDROCK_SECRET_ACCESS_KEY, BEDROCK_TOOL_INPUT_JSON, BEDROCK_TOOL_USE_TEXT, Behavior, COMPLETION_TOKENS,
    MockUpstream, PROMPT_TOKENS, REPLY_TEXT, bedrock_error,
};

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20241022-v2:0";
const BEDROCK_API_KEY: &str = "ABSKbW9jay1iZWRyb2NrLWFwaS1rZXk=";

fn config(mock: &MockUpstream) -> String {
    let base = format!("http://{}", mock.addr());
    let keys = format!(
        "aws_access_key_id: {BEDROCK_ACCESS_KEY_ID}
      aws_secret_access_key: {BEDROCK_SECRET_ACCESS_KEY}
      aws_region_name: us-east-1"
    );
    format!(
        "model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/{CLAUDE}
      api_base: {base}
      {keys}
  - model_name: nova
    litellm_params:
      model: bedrock/converse/us.amazon.nova-pro-v1:0
      aws_bedrock_runtime_endpoint: {base}
      api_key: {BEDROCK_API_KEY}
  - model_name: forged
    litellm_params:
      model: bedrock/{CLAUDE}
      api_base: {base}
      aws_access_key_id: {BEDROCK_ACCESS_KEY_ID}
      aws_secret_access_key: not-the-secret
  - model_name: titan
    litellm_params:
      model: bedrock/amazon.titan-embed-text-v2:0
      api_base: {base}
      {keys}
  - model_name: cohere-embed
    litellm_params:
      model: bedrock/cohere.embed-english-v3
      api_base: {base}
      {keys}
general_settings:
  master_key: {MASTER_KEY}
"
    )
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}
    ])
}

fn chunks(reply: &Reply) -> Vec<Value> {
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test]
async fn chat_is_signed_translated_to_converse_and_back() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "claude", "max_tokens": 50, "temperature": 0.3, "stop": "END", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"}
        ]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude", "the alias, not the upstream model");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(body["usage"]["completion_tokens"], COMPLETION_TOKENS);
    assert_eq!(body["usage"]["total_tokens"], PROMPT_TOKENS + COMPLETION_TOKENS);

    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse");
    let authorization = sent.headers["authorization"].to_str().unwrap();
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={BEDROCK_ACCESS_KEY_ID}/")),
        "{authorization}"
    );
    assert!(authorization.contains("/us-east-1/bedrock/aws4_request, SignedHeaders="), "{authorization}");
    assert!(sent.headers.contains_key("x-amz-date"));
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["system"], json!([{"text": "You are terse."}]));
    assert_eq!(sent["messages"], json!([{"role": "user", "content": [{"text": "hello"}]}]));
    assert_eq!(
        sent["inferenceConfig"],
        json!({"maxTokens": 50, "temperature": 0.3, "stopSequences": ["END"]})
    );
    assert!(sent.get("model").is_none(), "the model is in the path, not the body");
}

#[tokio::test]
async fn a_bedrock_api_key_is_sent_as_a_bearer_token_and_a_bad_signature_is_a_401() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply =
        chat(&gateway, json!({"model": "nova", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["choices"][0]["message"]["content"], REPLY_TEXT);
    let sent = &mock.requests()[0];
    assert_eq!(
        sent.path, "/model/us.amazon.nova-pro-v1%3A0/converse",
        "bedrock/converse/ names the API, not the model"
    );
    assert_eq!(sent.headers["authorization"], format!("Bearer {BEDROCK_API_KEY}").as_str());
    assert!(!sent.headers.contains_key("x-amz-date"));

    // The mock recomputes the signature with its own secret: a wrong one does not match.
    let forged =
        chat(&gateway, json!({"model": "forged", "messages": [{"role": "user", "content": "hi"}]})).await;
    let error = assert_error(&forged, 401);
    assert!(error["message"].as_str().unwrap().contains("signature"), "{error}");
    assert_eq!(error["type"], "InvalidSignatureException");
    assert!(!String::from_utf8_lossy(&forged.body).contains("not-the-secret"));
}

#[tokio::test]
async fn streams_are_decoded_from_the_event_stream_with_usage() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let reply = chat(
        &gateway,
        json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let chunks = chunks(&reply);
    assert!(chunks.iter().all(|c| c["model"] == "claude" && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], PROMPT_TOKENS + COMPLETION_TOKENS);
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream");
    assert_eq!(sent.headers["accept"], "application/vnd.amazon.eventstream");
}

#[tokio::test]
async fn parallel_tool_calls_and_their_results_round_trip() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let question = json!({"role": "user", "content": "weather and time in Paris?"});
    let called = chat(
        &gateway,
        json!({"model": "claude", "tools": tools(), "tool_choice": "required", "messages": [question]}),
    )
    .await
    .json();
    let choice = &called["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], BEDROCK_TOOL_USE_TEXT);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[1]["function"]["name"], "get_time");
    let arguments: Value = serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, serde_json::from_str::<Value>(BEDROCK_TOOL_INPUT_JSON).unwrap());
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(sent["toolConfig"]["tools"][1]["toolSpec"]["description"], "get_time");

    let answered = chat(
        &gateway,
        json!({"model": "claude", "tools": tools(), "messages": [
            question,
            choice["message"].clone(),
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"}
        ]}),
    )
    .await;
    assert_eq!(answered.json()["choices"][0]["message"]["content"], REPLY_TEXT);
    let sent: Value = serde_json::from_slice(&mock.requests()[1].body).unwrap();
    let turns = sent["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[1]["content"][1]["toolUse"]["toolUseId"], calls[0]["id"]);
    assert_eq!(
        turns[2]["content"],
        json!([
            {"toolResult": {"toolUseId": calls[0]["id"], "content": [{"text": "sunny"}]}},
            {"toolResult": {"toolUseId": calls[1]["id"], "content": [{"text": "noon"}]}}
        ]),
        "both results in one user turn"
    );

    // Streamed: each call starts with its id and name; its arguments arrive in pieces.
    let streamed = chat(
        &gateway,
        json!({"model": "claude", "stream": true, "tools": tools(), "tool_choice": "required", "messages": [question]}),
    )
    .await;
    let chunks = chunks(&streamed);
    let mut arguments = [String::new(), String::new()];
    let mut names = Vec::new();
    for call in chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten() {
        let index = call["index"].as_u64().unwrap() as usize;
        if let Some(name) = call["function"]["name"].as_str() {
            names.push(name.to_owned());
            assert!(call["id"].as_str().is_some_and(|id| id.starts_with("tooluse_")));
        }
        arguments[index].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
    }
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(arguments, [BEDROCK_TOOL_INPUT_JSON, BEDROCK_TOOL_INPUT_JSON]);
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test]
async fn json_mode_reasoning_images_and_prompt_caching() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let schema = json!({"type": "object", "properties": {"location": {"type": "string"}}});
    let format = json!({"type": "json_schema", "json_schema": {"name": "place", "schema": schema}});
    let json_mode = chat(
        &gateway,
        json!({"model": "claude", "response_format": format, "messages": [{"role": "user", "content": "where?"}]}),
    )
    .await
    .json();
    assert_eq!(json_mode["choices"][0]["message"]["content"], BEDROCK_TOOL_INPUT_JSON);
    assert!(json_mode["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(json_mode["choices"][0]["finish_reason"], "stop");
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"tool": {"name": "place"}}));

    // A JSON-mode stream is answered from one whole call, as LiteLLM does.
    let streamed = chat(
        &gateway,
        json!({"model": "claude", "stream": true, "response_format": format, "messages": [{"role": "user", "content": "where?"}]}),
    )
    .await;
    let text: String =
        chunks(&streamed).iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, BEDROCK_TOOL_INPUT_JSON);
    assert!(mock.requests()[1].path.ends_with("/converse"));

    let thinking = chat(
        &gateway,
        json!({"model": "claude", "reasoning_effort": "low", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "long shared prefix", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
            ]}
        ]}),
    )
    .await
    .json();
    let message = &thinking["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], BEDROCK_REASONING_TEXT);
    assert_eq!(message["content"], REPLY_TEXT);
    let usage = &thinking["usage"];
    assert_eq!(
        usage["prompt_tokens"],
        PROMPT_TOKENS + BEDROCK_CACHE_READ_TOKENS + BEDROCK_CACHE_WRITE_TOKENS
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], BEDROCK_CACHE_READ_TOKENS);
    let sent: Value = serde_json::from_slice(&mock.requests()[2].body).unwrap();
    assert_eq!(
        sent["additionalModelRequestFields"]["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(sent["system"][1], json!({"cachePoint": {"type": "default"}}));
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}})
    );
}

#[tokio::test]
async fn embeddings_go_through_invoke_for_titan_and_cohere() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let embed = |body: Value| send(post(&gateway.url("/v1/embeddings"), Some(MASTER_KEY), body.to_string()));

    let titan = embed(json!({"model": "titan", "input": ["a", "bb"], "dimensions": 256})).await;
    assert_eq!(titan.status, 200, "{}", String::from_utf8_lossy(&titan.body));
    let body = titan.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "titan");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 256);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "Titan embeds one text per call");
    assert!(requests.iter().all(|r| r.path == "/model/amazon.titan-embed-text-v2%3A0/invoke"));
    let mut texts: Vec<String> = requests
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["inputText"].as_str().unwrap().to_owned())
        .collect();
    texts.sort();
    assert_eq!(texts, ["a", "bb"]);

    let cohere =
        embed(json!({"model": "cohere-embed", "input": ["x", "y", "z"], "input_type": "search_query"})).await;
    assert_eq!(cohere.status, 200, "{}", String::from_utf8_lossy(&cohere.body));
    let body = cohere.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 3);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "from the input token count header");
    let sent = mock.requests().pop().unwrap();
    assert_eq!(sent.path, "/model/cohere.embed-english-v3/invoke");
    assert_eq!(
        serde_json::from_slice::<Value>(&sent.body).unwrap(),
        json!({"texts": ["x", "y", "z"], "input_type": "search_query"})
    );
}

#[tokio::test]
async fn bedrock_errors_map_to_openai_errors() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let hello = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});

    mock.push(bedrock_error(
        429,
        "ThrottlingException",
        "Too many requests, please wait before trying again.",
    ));
    let error = assert_error(&chat(&gateway, hello.clone()).await, 429);
    assert_eq!(error["type"], "ThrottlingException");

    mock.push(Behavior::RateLimited { retry_after_secs: 3 });
    let throttled = chat(&gateway, hello.clone()).await;
    assert_eq!(assert_error(&throttled, 429)["type"], "ThrottlingException");
    assert_eq!(throttled.header("retry-after"), "3", "Bedrock's Retry-After reaches the client");

    mock.push(bedrock_error(400, "ValidationException", "Input is too long for requested model."));
    assert_eq!(assert_error(&chat(&gateway, hello.clone()).await, 400)["code"], "context_length_exceeded");

    mock.push(bedrock_error(
        403,
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ));
    assert_error(&chat(&gateway, hello.clone()).await, 403);

    mock.push(bedrock_error(
        400,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    ));
    assert_error(&chat(&gateway, hello.clone()).await, 401);

    mock.push(bedrock_error(408, "ModelTimeoutException", "Model has timed out in processing the request."));
    assert_error(&chat(&gateway, hello.clone()).await, 408);

    mock.push(bedrock_error(
        503,
        "ServiceUnavailableException",
        "Bedrock is unable to process your request.",
    ));
    assert_error(&chat(&gateway, hello.clone()).await, 503);

    let bad = chat(
        &gateway,
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 5}}),
    )
    .await;
    assert!(assert_error(&bad, 400)["message"].as_str().unwrap().contains("logit_bias"));
}

#[tokio::test]
async fn stream_exceptions_become_errors_or_error_events() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock)).await;
    let stream = json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]});

    // An exception before any event is the call's error, with its status.
    mock.push(Behavior::StreamException {
        after_events: 0,
        exception_type: "throttlingException".into(),
        message: "Too many tokens, please wait before trying again.".into(),
    });
    let error = assert_error(&chat(&gateway, stream.clone()).await, 429);
    assert!(error["message"].as_str().unwrap().contains("Too many tokens"));

    // One after the answer has begun ends the stream with an error event.
    mock.push(Behavior::StreamException {
        after_events: 2,
        exception_type: "modelStreamErrorException".into(),
        message: "The model stream failed.".into(),
    });
    let reply = chat(&gateway, stream).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["message"], "The model stream failed.");
    assert_eq!(last["error"]["code"], "502");
    assert!(events.iter().any(|e| e.contains("\"content\"")), "the text sent before the failure arrives");
}

#[tokio::test]
async fn a_web_identity_is_exchanged_with_sts_once_and_signs_with_a_session_token() {
    let mock = MockUpstream::start().await;
    let base = format!("http://{}", mock.addr());
    let token_file =
        std::env::temp_dir().join(format!("tollgate-bedrock-web-identity-{}", std::process::id()));
    std::fs::write(&token_file, "eyJraWQiOiJtb2NrIn0.projected-token\n").unwrap();
    let missing_file = token_file.with_extension("missing");
    let yaml = |file: &std::path::Path| {
        format!(
            "environment_variables:
  AWS_WEB_IDENTITY_TOKEN_FILE: {}
  AWS_ROLE_ARN: arn:aws:iam::123456789012:role/bedrock-invoker
  AWS_ROLE_SESSION_NAME: gateway-pod
model_list:
  - model_name: irsa
    litellm_params:
      model: bedrock/{CLAUDE}
      api_base: {base}
      aws_sts_endpoint: {base}
      aws_region_name: us-east-1
general_settings:
  master_key: {MASTER_KEY}
",
            file.display()
        )
    };
    let gateway = TestGateway::start(&yaml(&token_file)).await;
    let hello = json!({"model": "irsa", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        let reply = chat(&gateway, hello.clone()).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.json()["choices"][0]["message"]["content"], REPLY_TEXT);
    }
    assert_eq!(mock.sts_credentials_issued(), 1, "the keys are cached until shortly before they expire");
    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, "/");
    let form = String::from_utf8_lossy(&requests[0].body).into_owned();
    assert!(form.contains("Action=AssumeRoleWithWebIdentity"), "{form}");
    assert!(form.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fbedrock-invoker"), "{form}");
    assert!(form.contains("RoleSessionName=gateway-pod"), "{form}");
    assert!(
        form.contains("WebIdentityToken=eyJraWQiOiJtb2NrIn0.projected-token&")
            || form.ends_with("WebIdentityToken=eyJraWQiOiJtb2NrIn0.projected-token"),
        "{form}"
    );
    assert!(!requests[0].headers.contains_key("authorization"), "AssumeRoleWithWebIdentity is not signed");
    for converse in &requests[1..] {
        assert_eq!(converse.headers["x-amz-security-token"], "mock-sts-session-1");
        let authorization = converse.headers["authorization"].to_str().unwrap();
        assert!(
            authorization.contains("SignedHeaders=") && authorization.contains("x-amz-security-token"),
            "{authorization}"
        );
    }

    // A token file that cannot be read fails the call with a 401 naming the role.
    let broken = TestGateway::start(&yaml(&missing_file)).await;
    let error = assert_error(&chat(&broken, hello).await, 401);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("could not assume role arn:aws:iam::123456789012:role/bedrock-invoker"),
        "{error}"
    );
    let _ = std::fs::remove_file(&token_file);
}
