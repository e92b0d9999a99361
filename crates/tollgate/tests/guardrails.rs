//! Guardrails end to end: blocks (a 400 naming the guardrail, no upstream call, a blocked
//! spend-log row), PII masked before the upstream and put back in the answer, blocked words
//! per key, selection per key and per request, caps, trimming, the webhook guardrail against
//! an in-process service in both fail modes, post-call checks of streams, during-call
//! cancellation, the two endpoints, `/v1/messages` and an embedder's own guardrail.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{Behavior, MockUpstream};

/// The mock upstream as `general-purpose`, a master key, a database, and these guardrails.
fn config(mock: &MockUpstream, database_url: &str, guardrails: &str) -> String {
    format!(
        "model_list:
  - model_name: general-purpose
    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: {UPSTREAM_KEY}}}
  - model_name: offline
    litellm_params: {{model: fake/offline}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: \"{database_url}\"
  proxy_batch_write_at: 1
guardrails:
{guardrails}",
        mock.base_url()
    )
}

async fn call(gateway: &TestGateway, key: &str, path: &str, body: Value) -> Reply {
    send(post(&gateway.url(path), Some(key), body.to_string())).await
}

fn ask(text: &str) -> Value {
    json!({"model": "general-purpose", "messages": [{"role": "user", "content": text}]})
}

async fn new_key(gateway: &TestGateway, body: Value) -> String {
    let reply = call(gateway, MASTER_KEY, "/key/generate", body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()["key"].as_str().unwrap().to_owned()
}

/// What the upstream was sent last.
fn last_upstream_body(mock: &MockUpstream) -> Value {
    let requests = mock.requests();
    serde_json::from_slice(&requests.last().expect("the upstream was called").body).unwrap()
}

const WORDS: &str = "  - guardrail_name: words
    litellm_params:
      guardrail: litellm_content_filter
      mode: pre_call
      default_on: true
      blocked_words: [{keyword: forbidden, action: BLOCK}, {keyword: internal, action: MASK}]
";

#[tokio::test]
async fn a_blocked_request_is_a_400_with_no_upstream_call_and_a_blocked_spend_row() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let gateway = TestGateway::start(&config(&mock, &url, WORDS)).await;
    let key = new_key(&gateway, json!({})).await;

    let reply = call(&gateway, &key, "/v1/chat/completions", ask("tell me the Forbidden thing")).await;
    let error = assert_error(&reply, 400);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("'words'") && message.contains("forbidden"), "{message}");
    assert_eq!(error["type"], "guardrail_violation");
    assert!(mock.requests().is_empty(), "a blocked request never goes upstream");

    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    let row = spend_log_row(&store, &reply).await;
    assert_eq!(row.status.as_deref(), Some("failure"));
    assert_eq!(row.spend, 0.0);
    let information = &row.metadata.0["guardrail_information"][0];
    assert_eq!(information["guardrail_name"], "words");
    assert_eq!(information["guardrail_mode"], "pre_call");
    assert_eq!(information["guardrail_status"], "guardrail_intervened");

    // MASK rewrites the words on their way upstream; other words pass.
    let reply = call(&gateway, &key, "/v1/chat/completions", ask("an internal memo")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(last_upstream_body(&mock)["messages"][0]["content"], "an [KEYWORD_REDACTED] memo");

    let metrics = send(get(&gateway.url("/metrics"), Some(MASTER_KEY))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"tollgate_guardrail_checks_total{guardrail_name="words",outcome="blocked"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn pii_is_masked_before_the_upstream_and_put_back_in_the_answer() {
    let mock = MockUpstream::start().await;
    let guardrails = "  - guardrail_name: pii
    litellm_params:
      guardrail: pii_masking
      mode: pre_call
      default_on: true
      output_parse_pii: true
      pii_entities_config: {EMAIL_ADDRESS: MASK, IBAN_CODE: MASK, CREDIT_CARD: BLOCK}
";
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), guardrails)).await;

    let text = "write to jane.doe@example.com about IBAN DE89 3704 0044 0532 0130 00";
    let reply = chat(&gateway, ask(text)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let sent = last_upstream_body(&mock)["messages"][0]["content"].as_str().unwrap().to_owned();
    assert_eq!(sent, "write to <EMAIL_ADDRESS> about IBAN <IBAN_CODE>");

    // The answer repeats the placeholder: the client reads the original.
    let mut offline = ask(text);
    offline["model"] = json!("offline");
    offline["mock_response"] = json!("Sure, I will write to <EMAIL_ADDRESS>.");
    let reply = chat(&gateway, offline).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "Sure, I will write to jane.doe@example.com."
    );

    // A card number (Luhn-valid) is blocked; a look-alike that fails Luhn is not a card.
    let calls = mock.requests().len();
    let error = assert_error(&chat(&gateway, ask("card 4111 1111 1111 1111 please")).await, 400);
    assert!(error["message"].as_str().unwrap().contains("CREDIT_CARD"), "{error}");
    assert_eq!(mock.requests().len(), calls);
    let reply = chat(&gateway, ask("order 4111 1111 1111 1112 please")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(last_upstream_body(&mock)["messages"][0]["content"], "order 4111 1111 1111 1112 please");
}

#[tokio::test]
async fn blocked_words_follow_the_key_and_the_team() {
    let mock = MockUpstream::start().await;
    let guardrails = "  - guardrail_name: words
    litellm_params: {guardrail: litellm_content_filter, mode: pre_call, default_on: true}
";
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), guardrails)).await;
    let strict = new_key(&gateway, json!({"metadata": {"blocked_words": ["zebra"]}})).await;
    let relaxed = new_key(&gateway, json!({})).await;
    let team =
        call(&gateway, MASTER_KEY, "/team/new", json!({"metadata": {"blocked_words": ["okapi"]}})).await;
    assert_eq!(team.status, 200, "{}", String::from_utf8_lossy(&team.body));
    let team_key = new_key(&gateway, json!({"team_id": team.json()["team_id"]})).await;

    let error =
        assert_error(&call(&gateway, &strict, "/v1/chat/completions", ask("a Zebra crossing")).await, 400);
    assert!(error["message"].as_str().unwrap().contains("zebra"), "{error}");
    assert_eq!(call(&gateway, &relaxed, "/v1/chat/completions", ask("a Zebra crossing")).await.status, 200);
    assert_error(&call(&gateway, &team_key, "/v1/chat/completions", ask("an okapi")).await, 400);
    assert_eq!(call(&gateway, &strict, "/v1/chat/completions", ask("an okapi")).await.status, 200);
}

#[tokio::test]
async fn guardrails_are_selected_per_request_per_key_and_by_default() {
    let mock = MockUpstream::start().await;
    let guardrails = "  - guardrail_name: short
    litellm_params: {guardrail: prompt_limits, mode: pre_call, max_prompt_chars: 10}
  - guardrail_name: capped
    litellm_params: {guardrail: prompt_limits, mode: pre_call, default_on: true, max_tokens: 50}
";
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), guardrails)).await;
    let long = "a prompt longer than ten characters";

    // Not named: not run. `default_on`: runs, capping max_tokens.
    let mut body = ask(long);
    body["max_tokens"] = json!(1000);
    assert_eq!(chat(&gateway, body.clone()).await.status, 200);
    let sent = last_upstream_body(&mock);
    assert_eq!(sent["max_tokens"], 50);
    assert!(sent.get("guardrails").is_none());

    // Named in the body, or in metadata: runs.
    body["guardrails"] = json!(["short"]);
    let error = assert_error(&chat(&gateway, body.clone()).await, 400);
    assert!(error["message"].as_str().unwrap().contains("'short'"), "{error}");
    let mut in_metadata = ask(long);
    in_metadata["metadata"] = json!({"guardrails": ["short"], "tags": ["a"]});
    assert_error(&chat(&gateway, in_metadata.clone()).await, 400);
    // Named in metadata and allowed: the upstream sees the metadata without them.
    in_metadata["messages"][0]["content"] = json!("short");
    assert_eq!(chat(&gateway, in_metadata).await.status, 200);
    assert_eq!(last_upstream_body(&mock)["metadata"], json!({"tags": ["a"]}));

    // A name nobody configured is the client's mistake.
    body["guardrails"] = json!(["nope"]);
    let error = assert_error(&chat(&gateway, body).await, 400);
    assert!(error["message"].as_str().unwrap().contains("'nope' is not configured"), "{error}");

    // Set on a key: runs for that key only.
    let guarded = new_key(&gateway, json!({"guardrails": ["short"]})).await;
    let plain = new_key(&gateway, json!({})).await;
    assert_error(&call(&gateway, &guarded, "/v1/chat/completions", ask(long)).await, 400);
    assert_eq!(call(&gateway, &plain, "/v1/chat/completions", ask(long)).await.status, 200);

    // A key with disable_global_guardrails escapes the default_on ones.
    let free = new_key(&gateway, json!({"metadata": {"disable_global_guardrails": true}})).await;
    let mut body = ask("hi");
    body["max_tokens"] = json!(1000);
    assert_eq!(call(&gateway, &free, "/v1/chat/completions", body).await.status, 200);
    assert_eq!(last_upstream_body(&mock)["max_tokens"], 1000);
}

#[tokio::test]
async fn trimming_keeps_the_system_prompt_and_the_newest_turn_in_the_window() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:
  - model_name: small
    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k, guardrails: [trim]}}
    model_info: {{max_input_tokens: 200}}
guardrails:
  - guardrail_name: trim
    litellm_params: {{guardrail: message_trimming, mode: pre_call}}
",
        mock.base_url()
    );
    let gateway = TestGateway::start(&yaml).await;
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for turn in 0..40 {
        messages.push(
            json!({"role": "user", "content": format!("question {turn} about the weather in some city")}),
        );
        messages
            .push(json!({"role": "assistant", "content": format!("answer {turn}: sunny and warm today")}));
    }
    messages.push(json!({"role": "user", "content": "and tomorrow?"}));
    let reply = chat(&gateway, json!({"model": "small", "messages": messages})).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let sent = last_upstream_body(&mock)["messages"].as_array().unwrap().clone();
    assert!(sent.len() < messages.len(), "trimmed: {} of {}", sent.len(), messages.len());
    assert_eq!(sent[0], messages[0], "the system prompt stays");
    assert_eq!(sent.last(), messages.last(), "the newest turn stays");
    let encoding = tollgate_domain::tokens::Encoding::for_model("gpt-4o");
    let tokens = tollgate_domain::tokens::count_chat(encoding, &Value::Array(sent), None);
    assert!(tokens <= 150, "{tokens} tokens within 75% of the 200-token window");
}

/// An in-process guardrail service speaking LiteLLM's generic guardrail API: a text with
/// `block me` is BLOCKED, `secret` becomes `[hidden]`, `slow` answers after 2 s, `fail`
/// answers 500; anything else is NONE.
struct GuardService {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl GuardService {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let counted = Arc::clone(&counted);
                        async move {
                            counted.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(request.uri().path(), "/beta/litellm_basic_guardrail_api");
                            assert_eq!(request.headers()["authorization"], "Bearer guard-key");
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let body: Value = serde_json::from_slice(&body).unwrap();
                            let texts: Vec<String> = body["texts"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|t| t.as_str().unwrap().to_owned())
                                .collect();
                            let all = texts.join(" ");
                            let (status, answer) = if all.contains("block me") {
                                (200, json!({"action": "BLOCKED", "blocked_reason": "policy 7 says no"}))
                            } else if all.contains("secret") {
                                let texts: Vec<String> =
                                    texts.iter().map(|t| t.replace("secret", "[hidden]")).collect();
                                (200, json!({"action": "GUARDRAIL_INTERVENED", "texts": texts}))
                            } else if all.contains("slow") {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                                (200, json!({"action": "NONE"}))
                            } else if all.contains("fail") {
                                (500, json!({"error": "down"}))
                            } else {
                                (200, json!({"action": "NONE"}))
                            };
                            let mut response =
                                http::Response::new(Full::new(Bytes::from(answer.to_string())));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, calls }
    }

    fn guardrail(&self, name: &str, mode: &str, fallback: &str) -> String {
        format!(
            "  - guardrail_name: {name}
    litellm_params:
      guardrail: generic_guardrail_api
      mode: {mode}
      api_base: http://{}
      api_key: guard-key
      timeout: 0.5
      unreachable_fallback: {fallback}
",
            self.addr
        )
    }
}

#[tokio::test]
async fn webhook_guardrail_allows_blocks_modifies_and_fails_open_or_closed() {
    let service = GuardService::start().await;
    let mock = MockUpstream::start().await;
    let guardrails = service.guardrail("closed", "pre_call", "fail_closed")
        + &service.guardrail("open", "pre_call", "fail_open");
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), &guardrails)).await;
    let with = |text: &str, guardrail: &str| {
        let mut body = ask(text);
        body["guardrails"] = json!([guardrail]);
        body
    };
    for guardrail in ["closed", "open"] {
        let calls = mock.requests().len();
        assert_eq!(chat(&gateway, with("hello", guardrail)).await.status, 200, "{guardrail}: allow");
        assert_eq!(last_upstream_body(&mock)["messages"][0]["content"], "hello");

        let error = assert_error(&chat(&gateway, with("please block me", guardrail)).await, 400);
        assert!(error["message"].as_str().unwrap().contains("policy 7 says no"), "{error}");
        assert_eq!(mock.requests().len(), calls + 1, "{guardrail}: a block never goes upstream");

        assert_eq!(chat(&gateway, with("my secret plan", guardrail)).await.status, 200);
        assert_eq!(
            last_upstream_body(&mock)["messages"][0]["content"],
            "my [hidden] plan",
            "{guardrail}: modify"
        );
    }
    // A service that is too slow, or fails: closed blocks, open lets the request through.
    let started = Instant::now();
    let error = assert_error(&chat(&gateway, with("slow one", "closed")).await, 400);
    assert!(error["message"].as_str().unwrap().contains("fails closed"), "{error}");
    assert!(started.elapsed() < Duration::from_millis(1500), "the timeout applies");
    assert_error(&chat(&gateway, with("fail now", "closed")).await, 400);
    assert_eq!(chat(&gateway, with("slow one", "open")).await.status, 200);
    assert_eq!(chat(&gateway, with("fail now", "open")).await.status, 200);
    assert!(service.calls.load(Ordering::SeqCst) >= 10);
}

#[tokio::test]
async fn a_streamed_answer_a_post_call_guardrail_blocks_is_a_400_before_any_byte() {
    let mock = MockUpstream::start().await;
    let guardrails = "  - guardrail_name: no-replies
    litellm_params:
      guardrail: litellm_content_filter
      mode: post_call
      blocked_words: [tok2, reply]
  - guardrail_name: masked-replies
    litellm_params:
      guardrail: litellm_content_filter
      mode: post_call
      blocked_words: [{keyword: tok2, action: MASK}]
";
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), guardrails)).await;
    let mut body = ask("hello");
    body["stream"] = json!(true);
    body["guardrails"] = json!(["no-replies"]);
    let reply = chat(&gateway, body.clone()).await;
    let error = assert_error(&reply, 400);
    assert!(error["message"].as_str().unwrap().contains("'no-replies' (post_call)"), "{error}");

    // Masking rewrites the stream: the client's assembled text is the masked one.
    body["guardrails"] = json!(["masked-replies"]);
    let reply = chat(&gateway, body.clone()).await;
    assert_eq!(reply.status, 200);
    let mut text = String::new();
    for event in reply.events() {
        if let Ok(chunk) = serde_json::from_str::<Value>(&event) {
            text.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    // The mock streams `tok0 tok1 …`.
    assert!(text.starts_with("tok0 tok1 [KEYWORD_REDACTED] tok3"), "{text}");

    // The same guardrail on a whole answer.
    body["stream"] = json!(false);
    body["guardrails"] = json!(["no-replies"]);
    assert_error(&chat(&gateway, body).await, 400);
}

#[tokio::test]
async fn a_during_call_block_cancels_the_upstream_call() {
    let service = GuardService::start().await;
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Hang);
    let guardrails = service.guardrail("parallel", "during_call", "fail_closed");
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), &guardrails)).await;
    let mut body = ask("please block me");
    body["guardrails"] = json!(["parallel"]);
    let reply = chat(&gateway, body).await;
    let error = assert_error(&reply, 400);
    assert!(error["message"].as_str().unwrap().contains("during_call"), "{error}");
    assert!(
        mock.wait_until(Duration::from_secs(5), |mock| mock.requests_abandoned() == 1).await,
        "the upstream call was dropped"
    );
    // Allowed: the answer comes through as usual.
    let mut body = ask("hello");
    body["guardrails"] = json!(["parallel"]);
    assert_eq!(chat(&gateway, body).await.status, 200);
}

#[tokio::test]
async fn guardrails_list_and_apply_guardrail_use_litellms_shapes() {
    let mock = MockUpstream::start().await;
    let guardrails = format!(
        "{WORDS}  - guardrail_name: hook
    litellm_params: {{guardrail: generic_guardrail_api, mode: [pre_call, post_call], api_base: http://127.0.0.1:9, api_key: hidden-key}}
    guardrail_info: {{owner: security}}
"
    );
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), &guardrails)).await;
    let list = send(get(&gateway.url("/guardrails/list"), Some(MASTER_KEY))).await;
    assert_eq!(list.status, 200);
    let list = list.json();
    let entries = list["guardrails"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["guardrail_name"], "words");
    assert_eq!(entries[0]["litellm_params"]["guardrail"], "litellm_content_filter");
    assert_eq!(entries[0]["litellm_params"]["default_on"], true);
    assert_eq!(entries[1]["litellm_params"]["mode"], json!(["pre_call", "post_call"]));
    assert_eq!(entries[1]["guardrail_info"]["owner"], "security");
    assert!(!list.to_string().contains("hidden-key"), "secrets are not listed");

    let apply = |text: &str| json!({"guardrail_name": "words", "text": text});
    let reply = call(&gateway, MASTER_KEY, "/guardrails/apply_guardrail", apply("an internal note")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["response_text"], "an [KEYWORD_REDACTED] note");
    assert_error(&call(&gateway, MASTER_KEY, "/guardrails/apply_guardrail", apply("forbidden")).await, 400);
    let unknown = json!({"guardrail_name": "nope", "text": "x"});
    assert_error(&call(&gateway, MASTER_KEY, "/guardrails/apply_guardrail", unknown).await, 400);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn messages_are_guarded_on_the_anthropic_front_door() {
    let mock = MockUpstream::start().await;
    let guardrails = format!(
        "{WORDS}  - guardrail_name: pii
    litellm_params: {{guardrail: pii_masking, mode: pre_call, default_on: true}}
"
    );
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), &guardrails)).await;
    let body = |text: &str| {
        json!({"model": "general-purpose", "max_tokens": 100,
               "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]})
    };
    let reply = call(&gateway, MASTER_KEY, "/v1/messages", body("the forbidden word")).await;
    assert_eq!(reply.status, 400);
    let error = reply.json();
    assert_eq!(error["type"], "error");
    assert!(error["error"]["message"].as_str().unwrap().contains("'words'"), "{error}");
    assert!(mock.requests().is_empty());

    let reply = call(&gateway, MASTER_KEY, "/v1/messages", body("mail bob@example.org")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let sent = last_upstream_body(&mock);
    assert!(sent.to_string().contains("mail <EMAIL_ADDRESS>"), "{sent}");
    assert!(!sent.to_string().contains("bob@example.org"));
}

/// An embedder's guardrail: blocks prompts that shout, and signs answers.
struct NoShouting;

#[tollgate::async_trait]
impl tollgate::Guardrail for NoShouting {
    async fn pre_call(&self, request: &mut tollgate::GuardedRequest<'_>) -> tollgate::Verdict {
        let shouting = request
            .messages
            .iter()
            .any(|m| m["content"].as_str().is_some_and(|text| text.len() > 3 && text == text.to_uppercase()));
        if shouting { tollgate::Verdict::Block("no shouting".to_owned()) } else { tollgate::Verdict::Allow }
    }

    async fn post_call(&self, answer: &mut tollgate::GuardedAnswer<'_>) -> tollgate::Verdict {
        for text in answer.texts.iter_mut() {
            text.push_str(" -- checked");
        }
        tollgate::Verdict::Modified
    }
}

#[tokio::test]
async fn an_embedders_guardrail_is_registered_and_selected_like_a_configured_one() {
    let mock = MockUpstream::start().await;
    let yaml = mock_config(&mock.base_url(), "");
    let gateway = TestGateway::start_with(&yaml, |gateway| {
        gateway.with_guardrail(
            "no-shouting",
            &[tollgate::GuardrailMode::PreCall, tollgate::GuardrailMode::PostCall],
            false,
            Arc::new(NoShouting),
        )
    })
    .await;
    let body = |text: &str, named: bool| {
        let mut body = ask(text);
        if named {
            body["guardrails"] = json!(["no-shouting"]);
        }
        body
    };
    assert_eq!(chat(&gateway, body("HELLO THERE", false)).await.status, 200);
    let error = assert_error(&chat(&gateway, body("HELLO THERE", true)).await, 400);
    assert!(error["message"].as_str().unwrap().contains("no shouting"), "{error}");
    let reply = chat(&gateway, body("hello there", true)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "mock reply -- checked");
}
