//! End-to-end tests of the mock's Gemini API (`/v1beta/models/{model}:{method}`) through a
//! real hyper client: the `GenerateContentResponse` shape, SSE and JSON-array streams, the
//! function-call rule, generation-config triggers, embeddings, Google's error bodies, key
//! handling, and scripted behaviours on these routes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_mock_upstream::{
    Behavior, COMPLETION_TOKENS, DEFAULT_STREAM_CHUNKS, EMBEDDING_DIMENSIONS, GEMINI_FUNCTION_CALL_ARGS_JSON,
    GEMINI_JSON_REPLY_TEXT, GEMINI_MAX_TOKENS_TEXT, GEMINI_MAX_TOKENS_TRIGGER, GEMINI_THOUGHT_TEXT,
    GEMINI_THOUGHTS_TOKENS, MockUpstream, PROMPT_TOKENS, REPLY_TEXT, gemini_error,
};

/// Bound on every single client operation, so a broken mock fails fast instead of hanging.
const STEP: Duration = Duration::from_secs(2);

const MODEL: &str = "gemini-2.0-flash";
const KEY: &str = "AIza-test-key";
const HELLO: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
const TOOLS: &str = r#"[{"functionDeclarations":[{"name":"get_weather","description":"weather for a city",
    "parameters":{"type":"OBJECT","properties":{"location":{"type":"STRING"}},"required":["location"]}},
    {"name":"get_time"}]}]"#;

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A POST to `path` (query included) with the key in `x-goog-api-key` when `key` is given.
fn request(mock: &MockUpstream, path: &str, body: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{path}", mock.addr()))
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("x-goog-api-key", key);
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

/// `/v1beta/models/{MODEL}:{method}`
fn path(method: &str) -> String {
    format!("/v1beta/models/{MODEL}:{method}")
}

/// Posts with the key header; returns status, headers and the JSON body.
async fn post(mock: &MockUpstream, path: &str, body: &str) -> (StatusCode, http::HeaderMap, Value) {
    post_with(mock, path, body, Some(KEY)).await
}

async fn post_with(
    mock: &MockUpstream,
    path: &str,
    body: &str,
    key: Option<&str>,
) -> (StatusCode, http::HeaderMap, Value) {
    let response = send(request(mock, path, body, key)).await;
    let status = response.status();
    let headers = response.headers().clone();
    let value = serde_json::from_slice(&read_body(response).await).expect("body is json");
    (status, headers, value)
}

/// Splits a Gemini SSE body into its `data:` payloads: each event is `data: <json>\r\n\r\n`.
fn sse_chunks(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("sse is utf-8");
    assert!(text.ends_with("\r\n\r\n"), "events end with CRLF CRLF: {text:?}");
    text.split_terminator("\r\n\r\n")
        .map(|event| {
            let data = event.strip_prefix("data: ").unwrap_or_else(|| panic!("data line: {event:?}"));
            assert!(!data.contains('\n'), "one line per event: {event:?}");
            serde_json::from_str(data).expect("data is json")
        })
        .collect()
}

/// The concatenated text of the non-thought parts of `chunks`' first candidates.
fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|chunk| chunk["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default())
        .filter(|part| part.get("thought").is_none())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect()
}

fn assert_google_error(body: &Value, code: u16, status: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"].get("type").is_none(), "no OpenAI fields: {body}");
}

fn usage(candidates: u64) -> Value {
    json!({
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": candidates,
        "totalTokenCount": PROMPT_TOKENS + candidates,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}]
    })
}

#[tokio::test]
async fn generate_content_has_gemini_shape() {
    let mock = MockUpstream::start().await;
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}]},
        {"role":"model","parts":[{"text":"hello"}]},{"role":"user","parts":[{"text":"again"}]}],
        "systemInstruction":{"parts":[{"text":"be brief"}]},
        "safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"}],
        "generationConfig":{"temperature":0.2,"topP":0.9,"topK":40,"maxOutputTokens":64,"stopSequences":["x"],
        "candidateCount":1,"seed":7}}"#;
    let (status, headers, value) = post(&mock, &path("generateContent"), body).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers.get("x-request-id").is_none() && headers.get("request-id").is_none(),
        "no other API's headers"
    );
    let id = value["responseId"].as_str().expect("responseId is a string");
    assert!(id.len() > 16 && id.bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
    assert_eq!(
        value,
        json!({
            "candidates": [{
                "content": {"parts": [{"text": REPLY_TEXT}], "role": "model"},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": usage(COMPLETION_TOKENS),
            "modelVersion": MODEL,
            "responseId": id
        })
    );

    // Under /v1 and without a prefix too, with a fresh responseId; any model name.
    for path in
        ["/v1/models/gemini-1.5-pro-002:generateContent", "/models/gemini-2.5-flash-lite:generateContent"]
    {
        let (status, _, second) = post(&mock, path, HELLO).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(second["candidates"][0]["content"]["parts"][0]["text"], REPLY_TEXT);
        assert_ne!(second["responseId"], value["responseId"]);
        let model = path.split_once("models/").and_then(|(_, rest)| rest.split_once(':')).map(|(m, _)| m);
        assert_eq!(second["modelVersion"].as_str(), model);
    }

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].path, format!("/v1beta/models/{MODEL}:generateContent"));
    assert_eq!(recorded[0].query, None);
    assert_eq!(recorded[0].headers["x-goog-api-key"], KEY);
    assert_eq!(recorded[0].body, body.as_bytes());
}

#[tokio::test]
async fn key_in_the_query_is_accepted_and_recorded() {
    let mock = MockUpstream::start().await;
    let path = format!("{}?key=AIza-query-key", path("generateContent"));
    let (status, _, value) = post_with(&mock, &path, HELLO, None).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["candidates"][0]["content"]["parts"][0]["text"], REPLY_TEXT);

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, format!("/v1beta/models/{MODEL}:generateContent"));
    assert_eq!(recorded[0].query.as_deref(), Some("key=AIza-query-key"));
    assert!(recorded[0].headers.get("x-goog-api-key").is_none());
}

#[tokio::test]
async fn missing_key_is_403_permission_denied_and_still_recorded() {
    let mock = MockUpstream::start().await;
    for (path, key) in [
        (path("generateContent"), None),
        (path("generateContent"), Some("")),
        (format!("{}?key=", path("streamGenerateContent")), None),
        (format!("{}?alt=sse", path("streamGenerateContent")), None),
        (path("embedContent"), None),
    ] {
        let (status, headers, value) = post_with(&mock, &path, HELLO, key).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(headers["content-type"], "application/json");
        assert_google_error(&value, 403, "PERMISSION_DENIED");
        assert!(value["error"]["message"].as_str().is_some_and(|m| m.contains("API Key")), "{value}");
    }
    assert_eq!(mock.requests().len(), 5);
}

#[tokio::test]
async fn sse_stream_sends_chunks_whose_texts_make_the_reply() {
    let mock = MockUpstream::start().await;
    let response =
        send(request(&mock, &format!("{}?alt=sse", path("streamGenerateContent")), HELLO, Some(KEY))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunks = sse_chunks(&read_body(response).await);

    assert_eq!(chunks.len(), DEFAULT_STREAM_CHUNKS);
    assert_eq!(text_of(&chunks), REPLY_TEXT);
    let id = chunks[0]["responseId"].as_str().expect("responseId");
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let candidate = &chunk["candidates"][0];
        assert_eq!(candidate["content"]["role"], "model");
        assert_eq!(candidate["content"]["parts"].as_array().map(Vec::len), Some(1), "{chunk}");
        assert_eq!(candidate["index"], 0);
        assert_eq!(candidate.get("finishReason"), last.then(|| json!("STOP")).as_ref(), "{chunk}");
        // Running totals on every chunk, as Google sends them.
        assert_eq!(chunk["usageMetadata"], usage(i as u64 + 1), "{chunk}");
        assert_eq!(chunk["modelVersion"], MODEL);
        assert_eq!(chunk["responseId"], id, "one responseId per stream");
    }
    assert_eq!(chunks[DEFAULT_STREAM_CHUNKS - 1]["usageMetadata"], usage(COMPLETION_TOKENS));
}

#[tokio::test]
async fn stream_without_alt_sse_is_a_json_array() {
    let mock = MockUpstream::start().await;
    let mut response = send(request(&mock, &path("streamGenerateContent"), HELLO, Some(KEY))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");

    // One array element per frame; the whole body is one JSON array.
    let mut frames = Vec::new();
    while let Some(frame) =
        tokio::time::timeout(STEP, response.body_mut().frame()).await.expect("frame in time")
    {
        if let Ok(data) = frame.expect("frame read").into_data() {
            frames.push(data);
        }
    }
    assert_eq!(frames.len(), DEFAULT_STREAM_CHUNKS);
    assert!(frames[0].starts_with(b"[{"), "{:?}", frames[0]);
    assert!(frames[1].starts_with(b",\r\n{"), "{:?}", frames[1]);
    assert!(frames[DEFAULT_STREAM_CHUNKS - 1].ends_with(b"}]"));
    let body: Vec<u8> = frames.concat();
    let chunks: Vec<Value> = serde_json::from_slice(&body).expect("body is a json array");
    assert_eq!(chunks.len(), DEFAULT_STREAM_CHUNKS);
    assert_eq!(text_of(&chunks), REPLY_TEXT);
    assert_eq!(chunks[DEFAULT_STREAM_CHUNKS - 1]["candidates"][0]["finishReason"], "STOP");
    assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
}

#[tokio::test]
async fn tools_get_a_function_call_until_the_response_comes_back() {
    let mock = MockUpstream::start().await;
    let body = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"weather in Paris?"}}]}}],"tools":{TOOLS}}}"#
    );
    let (status, _, value) = post(&mock, &path("generateContent"), &body).await;
    assert_eq!(status, StatusCode::OK);
    let args: Value = serde_json::from_str(GEMINI_FUNCTION_CALL_ARGS_JSON).expect("constant is json");
    assert_eq!(args, json!({"location": "Paris"}));
    let id = value["responseId"].clone();
    assert_eq!(
        value,
        json!({
            "candidates": [{
                "content": {"parts": [{"functionCall": {"name": "get_weather", "args": args}}], "role": "model"},
                "finishReason": "STOP",
                "finishMessage": "Model generated function call(s).",
                "index": 0
            }],
            "usageMetadata": usage(COMPLETION_TOKENS),
            "modelVersion": MODEL,
            "responseId": id
        })
    );
    // The args are serialized exactly as the constant says.
    let response = send(request(&mock, &path("generateContent"), &body, Some(KEY))).await;
    let raw = String::from_utf8(read_body(response).await.to_vec()).expect("utf-8");
    assert!(raw.contains(&format!(r#""args":{GEMINI_FUNCTION_CALL_ARGS_JSON}"#)), "{raw}");

    // Streamed, the call is one chunk.
    let sse = format!("{}?alt=sse", path("streamGenerateContent"));
    let chunks = sse_chunks(&read_body(send(request(&mock, &sse, &body, Some(KEY))).await).await);
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert_eq!(chunks[0]["candidates"], value["candidates"]);

    // Once the function's result is returned (under role user or the older role function),
    // or with function calling off, the answer is text.
    for contents in [
        r#"[{"role":"user","parts":[{"text":"weather?"}]},
            {"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris"}}}]},
            {"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"temp":21}}}]}]"#,
        r#"[{"role":"user","parts":[{"text":"weather?"}]},
            {"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris"}}}]},
            {"role":"function","parts":[{"functionResponse":{"name":"get_weather","response":{"temp":21}}}]}]"#,
    ] {
        let body = format!(r#"{{"contents":{contents},"tools":{TOOLS}}}"#);
        let (status, _, value) = post(&mock, &path("generateContent"), &body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(value["candidates"][0]["content"]["parts"], json!([{"text": REPLY_TEXT}]));
        assert_eq!(value["candidates"][0]["finishReason"], "STOP");
    }
    let body = format!(
        r#"{{"contents":[{{"parts":[{{"text":"hi"}}]}}],"tools":{TOOLS},
        "toolConfig":{{"functionCallingConfig":{{"mode":"NONE"}}}}}}"#
    );
    let (_, _, value) = post(&mock, &path("generateContent"), &body).await;
    assert_eq!(value["candidates"][0]["content"]["parts"], json!([{"text": REPLY_TEXT}]));
}

#[tokio::test]
async fn generation_config_scripts_json_max_tokens_and_thoughts() {
    let mock = MockUpstream::start().await;
    let with = |config: &str| {
        format!(r#"{{"contents":[{{"parts":[{{"text":"hi"}}]}}],"generationConfig":{config}}}"#)
    };

    // JSON mode: the text is a JSON object, whole or streamed.
    let body = with(r#"{"responseMimeType":"application/json","responseSchema":{"type":"OBJECT"}}"#);
    let (_, _, value) = post(&mock, &path("generateContent"), &body).await;
    let text = value["candidates"][0]["content"]["parts"][0]["text"].as_str().expect("text");
    assert_eq!(text, GEMINI_JSON_REPLY_TEXT);
    let parsed: Value = serde_json::from_str(text).expect("JSON mode text parses");
    assert_eq!(parsed, json!({"answer": REPLY_TEXT}));
    let sse = format!("{}?alt=sse", path("streamGenerateContent"));
    let chunks = sse_chunks(&read_body(send(request(&mock, &sse, &body, Some(KEY))).await).await);
    assert_eq!(text_of(&chunks), GEMINI_JSON_REPLY_TEXT);

    // A tiny maxOutputTokens stops the answer early.
    let body = with(&format!(r#"{{"maxOutputTokens":{GEMINI_MAX_TOKENS_TRIGGER}}}"#));
    let (_, _, value) = post(&mock, &path("generateContent"), &body).await;
    assert_eq!(value["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(value["candidates"][0]["content"]["parts"], json!([{"text": GEMINI_MAX_TOKENS_TEXT}]));
    assert_eq!(value["usageMetadata"], usage(1));
    let chunks = sse_chunks(&read_body(send(request(&mock, &sse, &body, Some(KEY))).await).await);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "MAX_TOKENS");

    // Thoughts come first and are counted.
    let body = with(r#"{"thinkingConfig":{"includeThoughts":true,"thinkingBudget":1024}}"#);
    let (_, _, value) = post(&mock, &path("generateContent"), &body).await;
    assert_eq!(
        value["candidates"][0]["content"]["parts"],
        json!([{"text": GEMINI_THOUGHT_TEXT, "thought": true}, {"text": REPLY_TEXT}])
    );
    let total = PROMPT_TOKENS + COMPLETION_TOKENS + GEMINI_THOUGHTS_TOKENS;
    assert_eq!(value["usageMetadata"]["thoughtsTokenCount"], GEMINI_THOUGHTS_TOKENS);
    assert_eq!(value["usageMetadata"]["totalTokenCount"], total);
    let chunks = sse_chunks(&read_body(send(request(&mock, &sse, &body, Some(KEY))).await).await);
    assert_eq!(chunks.len(), DEFAULT_STREAM_CHUNKS + 1);
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"],
        json!([{"text": GEMINI_THOUGHT_TEXT, "thought": true}])
    );
    assert!(chunks[0]["usageMetadata"].get("candidatesTokenCount").is_none(), "zero counts are left out");
    assert_eq!(text_of(&chunks), REPLY_TEXT);
    assert_eq!(chunks[DEFAULT_STREAM_CHUNKS]["usageMetadata"]["totalTokenCount"], total);

    // Without includeThoughts there is no thought and no thoughtsTokenCount.
    let (_, _, value) = post(&mock, &path("generateContent"), HELLO).await;
    assert!(value["usageMetadata"].get("thoughtsTokenCount").is_none());
}

#[tokio::test]
async fn embed_content_single_and_batch() {
    let mock = MockUpstream::start().await;
    let single = r#"{"model":"models/text-embedding-004","content":{"parts":[{"text":"hello"}]},"taskType":"RETRIEVAL_QUERY"}"#;
    let (status, _, one) = post(&mock, "/v1beta/models/text-embedding-004:embedContent", single).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(
        one.as_object().map(|o| o.keys().map(String::as_str).collect::<Vec<_>>()),
        Some(vec!["embedding"])
    );
    let values = one["embedding"]["values"].as_array().expect("values");
    assert_eq!(values.len(), EMBEDDING_DIMENSIONS);
    let norm: f64 = values.iter().filter_map(Value::as_f64).map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-4, "unit vector, norm² {norm}");

    let batch = r#"{"requests":[
        {"model":"models/text-embedding-004","content":{"parts":[{"text":"a"}]}},
        {"model":"models/text-embedding-004","content":{"parts":[{"text":"b"}]},"outputDimensionality":16},
        {"model":"models/text-embedding-004","content":{"parts":[{"text":"c"}]}}]}"#;
    let (status, _, many) = post(&mock, "/v1/models/text-embedding-004:batchEmbedContents", batch).await;
    assert_eq!(status, StatusCode::OK, "{many}");
    let embeddings = many["embeddings"].as_array().expect("embeddings");
    let lengths: Vec<usize> = embeddings.iter().map(|e| e["values"].as_array().map_or(0, Vec::len)).collect();
    assert_eq!(lengths, [EMBEDDING_DIMENSIONS, 16, EMBEDDING_DIMENSIONS]);
    // Deterministic: the first batch entry is the single answer; entries differ.
    assert_eq!(embeddings[0], one["embedding"]);
    assert_ne!(embeddings[0], embeddings[2]);

    // Same vectors as the OpenAI embeddings endpoint.
    let url = format!("http://{}/v1/embeddings", mock.addr());
    let openai = Request::builder()
        .method(Method::POST)
        .uri(url)
        .body(Full::new(Bytes::from_static(br#"{"model":"m","input":["a","b"]}"#)))
        .expect("request");
    let openai: Value = serde_json::from_slice(&read_body(send(openai).await).await).expect("json");
    assert_eq!(openai["data"][0]["embedding"], one["embedding"]["values"]);

    for (path, body) in [
        ("/v1beta/models/text-embedding-004:embedContent", r#"{"taskType":"RETRIEVAL_QUERY"}"#),
        ("/v1beta/models/text-embedding-004:embedContent", r#"{"content":"hello"}"#),
        (
            "/v1beta/models/text-embedding-004:embedContent",
            r#"{"content":{"parts":[]},"outputDimensionality":0}"#,
        ),
        ("/v1beta/models/text-embedding-004:batchEmbedContents", r#"{"requests":[]}"#),
        ("/v1beta/models/text-embedding-004:batchEmbedContents", r#"{"requests":[{"model":"x"}]}"#),
    ] {
        let (status, _, value) = post(&mock, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_google_error(&value, 400, "INVALID_ARGUMENT");
    }
}

#[tokio::test]
async fn bad_requests_are_400_invalid_argument() {
    let mock = MockUpstream::start().await;
    for body in [
        "",
        "not json",
        "{}",
        r#"{"contents":[]}"#,
        r#"{"contents":null}"#,
        r#"{"contents":"hi"}"#,
        r#"{"contents":[{"role":"assistant","parts":[{"text":"hi"}]}]}"#,
    ] {
        for method in ["generateContent", "streamGenerateContent"] {
            let (status, headers, value) = post(&mock, &path(method), body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {body:?}");
            assert_eq!(headers["content-type"], "application/json");
            assert_google_error(&value, 400, "INVALID_ARGUMENT");
        }
    }
    let (_, _, value) = post(&mock, &path("generateContent"), r#"{"contents":[]}"#).await;
    assert_eq!(
        value,
        json!({"error": {
            "code": 400,
            "message": "* GenerateContentRequest.contents: contents is not specified\n",
            "status": "INVALID_ARGUMENT"
        }})
    );
}

#[tokio::test]
async fn unknown_gemini_paths_are_google_404s_and_consume_no_behavior() {
    let mock = MockUpstream::start().await;
    mock.push(gemini_error(500, "INTERNAL", "scripted"));
    for (method, path) in [
        (Method::POST, format!("/v1beta/models/{MODEL}:countTokens")),
        (Method::POST, format!("/v1/models/{MODEL}:predict")),
        (Method::GET, path("generateContent")),
        (Method::POST, "/v1beta/tunedModels/x:generateContent".to_owned()),
        (Method::POST, "/v1beta/models/:generateContent".to_owned()),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", mock.addr()))
            .header("x-goog-api-key", KEY)
            .body(Full::new(Bytes::from_static(HELLO.as_bytes())))
            .expect("valid request");
        let response = send(request).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let value: Value = serde_json::from_slice(&read_body(response).await).expect("json");
        assert_google_error(&value, 404, "NOT_FOUND");
    }
    let (status, _, value) = post(&mock, &path("generateContent"), HELLO).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "the scripted error was still queued");
    assert_eq!(value, json!({"error": {"code": 500, "message": "scripted", "status": "INTERNAL"}}));
}

#[tokio::test]
async fn gemini_error_behavior_returns_exact_body_then_normal() {
    let mock = MockUpstream::start().await;
    mock.push(gemini_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."));

    let response = send(request(&mock, &path("generateContent"), HELLO, Some(KEY))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = read_body(response).await;
    assert_eq!(
        body,
        r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#
    );

    let (status, _, value) = post(&mock, &path("generateContent"), HELLO).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["candidates"][0]["content"]["parts"][0]["text"], REPLY_TEXT);

    // A behaviour comes before the key check, as on the other APIs.
    mock.push(gemini_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."));
    let (status, _, value) = post_with(&mock, &path("generateContent"), HELLO, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_google_error(&value, 400, "FAILED_PRECONDITION");
}

#[tokio::test]
async fn rate_limited_is_resource_exhausted_with_retry_info() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::RateLimited { retry_after_secs: 17 });
    let (status, headers, value) =
        post(&mock, &format!("{}?alt=sse", path("streamGenerateContent")), HELLO).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["retry-after"], "17");
    assert_google_error(&value, 429, "RESOURCE_EXHAUSTED");
    assert_eq!(
        value["error"]["details"],
        json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}])
    );

    let (status, _, _) = post(&mock, &path("generateContent"), HELLO).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn delay_behavior_applies_to_gemini() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let (status, _, _) = post(&mock, &path("embedContent"), r#"{"content":{"parts":[{"text":"a"}]}}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn slow_stream_relays_chunks_and_counts_cancellation() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(30), chunks: 100 });
    let started = Instant::now();
    let sse = format!("{}?alt=sse", path("streamGenerateContent"));
    let mut response = send(request(&mock, &sse, HELLO, Some(KEY))).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Chunks arrive one by one, long before the ~3 s the whole stream would take.
    let mut frames = 0;
    let mut received = Vec::new();
    while frames < 3 {
        let frame = tokio::time::timeout(STEP, response.body_mut().frame())
            .await
            .expect("a frame in time")
            .expect("stream not finished")
            .expect("frame read");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
            frames += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "chunks are relayed as they are produced");
    }
    let chunks = sse_chunks(&received);
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|c| c["candidates"][0].get("finishReason").is_none()));
    assert_eq!(mock.streams_cancelled(), 0);

    drop(response);
    assert!(
        mock.wait_until(STEP, |m| m.streams_cancelled() == 1).await,
        "cancelled: {}",
        mock.streams_cancelled()
    );
}

#[tokio::test]
async fn slow_stream_with_few_chunks_finishes_with_the_whole_reply() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(20), chunks: 3 });
    let started = Instant::now();
    let sse = format!("{}?alt=sse", path("streamGenerateContent"));
    let chunks = sse_chunks(&read_body(send(request(&mock, &sse, HELLO, Some(KEY))).await).await);
    assert!(started.elapsed() >= Duration::from_millis(40), "two delays between three chunks");
    assert_eq!(chunks.len(), 3);
    assert_eq!(text_of(&chunks), REPLY_TEXT);
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[2]["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(mock.streams_cancelled(), 0);
}

#[tokio::test]
async fn stall_stream_stops_after_n_chunks() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::StallStream { after_chunks: 2 });
    let mut response = send(request(&mock, &path("streamGenerateContent"), HELLO, Some(KEY))).await;

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
    // Two elements of the JSON array, which is left open.
    let text = String::from_utf8(received).expect("utf-8");
    assert!(text.starts_with('[') && !text.ends_with(']'), "{text}");
    let chunks: Vec<Value> = serde_json::from_str(&format!("{text}]")).expect("two complete elements");
    assert_eq!(chunks.len(), 2);

    drop(response);
    assert!(mock.wait_until(STEP, |m| m.streams_cancelled() == 1).await);
}
