//! End-to-end: retries across deployments, fallbacks between groups and cooldowns, through
//! the gateway to scripted mock upstreams, with LiteLLM's attempt headers.

mod support;

use serde_json::json;
use support::*;
use tollgate_mock_upstream::{Behavior, MockUpstream};

fn config(primary: &MockUpstream, backup: &MockUpstream, router_settings: &str) -> String {
    format!(
        "model_list:
  - model_name: gp
    litellm_params: {{model: openai/primary-a, api_base: '{primary}', order: 1}}
    model_info: {{id: gp-a}}
  - model_name: gp
    litellm_params: {{model: openai/primary-b, api_base: '{primary}', order: 2}}
    model_info: {{id: gp-b}}
  - model_name: backup
    litellm_params: {{model: openai/backup, api_base: '{backup}'}}
    model_info: {{id: backup-1}}
router_settings: {router_settings}
",
        primary = primary.base_url(),
        backup = backup.base_url(),
    )
}

fn hello() -> serde_json::Value {
    json!({"model": "gp", "messages": [{"role": "user", "content": "hello"}]})
}

fn sent_model(request: &tollgate_mock_upstream::RecordedRequest) -> String {
    serde_json::from_slice::<serde_json::Value>(&request.body).unwrap()["model"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deployment_is_retried_on_the_next_one() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let gateway = TestGateway::start(&config(&primary, &backup, "{num_retries: 1}")).await;
    primary.push(Behavior::Error { status: 503, body: "{}".into() });
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-litellm-model-id"), "gp-b");
    assert_eq!(reply.header("x-litellm-attempted-retries"), "1");
    assert_eq!(reply.header("x-litellm-attempted-fallbacks"), "0");
    assert_eq!(reply.json()["model"], "gp");
    let models: Vec<String> = primary.requests().iter().map(sent_model).collect();
    assert_eq!(models, ["primary-a", "primary-b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_group_falls_back() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let gateway = TestGateway::start(&config(&primary, &backup, "{fallbacks: [{gp: [backup]}]}")).await;
    primary.push(Behavior::Error { status: 500, body: "{}".into() });
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-litellm-model-id"), "backup-1");
    assert_eq!(reply.header("x-litellm-attempted-fallbacks"), "1");
    assert_eq!(reply.json()["model"], "gp", "the client still sees the alias it asked for");
    assert_eq!(backup.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_deployment_cools_down_and_the_group_reports_when_all_do() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let gateway = TestGateway::start(&config(&primary, &backup, "{cooldown_time: 60}")).await;
    primary.push(Behavior::Error { status: 429, body: "{\"error\":{\"message\":\"slow down\"}}".into() });
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.status, 429);
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.header("x-litellm-model-id"), "gp-b", "gp-a cooled down at once");
    primary.push(Behavior::Error { status: 429, body: "{}".into() });
    let _ = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    let error = assert_error(&reply, 429);
    assert!(error["message"].as_str().unwrap().contains("Try again in"), "{error}");
    assert_eq!(primary.requests().len(), 3, "the cooled group was not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_are_shared_by_every_worker() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let gateway =
        TestGateway::start_with(&config(&primary, &backup, "{cooldown_time: 60}"), |g| g.with_workers(2))
            .await;
    primary.push(Behavior::Error { status: 429, body: "{}".into() });
    let _ = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    // New connections are dealt to the workers in turn: both must route around gp-a.
    for _ in 0..4 {
        let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
        assert_eq!(reply.header("x-litellm-model-id"), "gp-b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_retry_after_reaches_the_client_and_sets_the_cooldown() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let gateway = TestGateway::start(&config(&primary, &backup, "{cooldown_time: 1}")).await;
    primary.push(Behavior::RateLimited { retry_after_secs: 120 });
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    let error = assert_error(&reply, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(reply.header("retry-after"), "120");
    // The 120 s Retry-After outlasts cooldown_time: gp-a stays out of rotation.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.header("x-litellm-model-id"), "gp-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_parameters_steer_routing_and_never_reach_the_upstream() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let gateway = TestGateway::start(&config(&primary, &backup, "{}")).await;
    let mut body = hello();
    body["fallbacks"] = json!(["backup"]);
    body["mock_testing_fallbacks"] = json!(true);
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-litellm-model-id"), "backup-1");
    assert!(primary.requests().is_empty(), "the forced failure calls nothing");
    let sent: serde_json::Value = serde_json::from_slice(&backup.requests()[0].body).unwrap();
    assert_eq!(sent["model"], "backup");
    assert!(sent.get("fallbacks").is_none() && sent.get("mock_testing_fallbacks").is_none(), "{sent}");
    assert_eq!(sent["messages"], hello()["messages"]);

    let mut body = hello();
    body["num_retries"] = json!(1);
    primary.push(Behavior::Error { status: 503, body: "{}".into() });
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, body.to_string())).await;
    assert_eq!(reply.header("x-litellm-attempted-retries"), "1");
    assert!(primary.requests().iter().all(|r| !String::from_utf8_lossy(&r.body).contains("num_retries")));

    let mut body = hello();
    body["mock_response"] = json!("canned answer");
    let before = primary.requests().len();
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, body.to_string())).await;
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "canned answer");
    assert_eq!(reply.json()["model"], "gp");
    assert_eq!(primary.requests().len(), before, "a mock_response answers offline");

    let mut body = hello();
    body["fallbacks"] = json!("backup");
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, body.to_string())).await;
    assert_eq!(assert_error(&reply, 400)["param"], "fallbacks");
}

/// Two deployments of `gp`, `a` on `mock_a` and `b` on `mock_b`, with extra
/// `litellm_params` each, and these router settings.
fn pair(mock_a: &MockUpstream, mock_b: &MockUpstream, params: [&str; 2], router_settings: &str) -> String {
    format!(
        "model_list:
  - model_name: gp
    litellm_params: {{model: openai/model-a, api_base: '{a}', {pa}}}
    model_info: {{id: a}}
  - model_name: gp
    litellm_params: {{model: openai/model-b, api_base: '{b}', {pb}}}
    model_info: {{id: b}}
router_settings: {router_settings}
",
        a = mock_a.base_url(),
        b = mock_b.base_url(),
        pa = params[0],
        pb = params[1],
    )
}

async fn served_by(gateway: &TestGateway, body: &serde_json::Value) -> String {
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.header("x-litellm-model-id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_based_routing_moves_traffic_off_a_slowed_deployment() {
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml = pair(&mock_a, &mock_b, ["order: 1", "order: 1"], "{routing_strategy: latency-based-routing}");
    let gateway = TestGateway::start(&yaml).await;
    // At first b answers in 50 ms and a at once: after measuring both, a takes the traffic.
    for _ in 0..20 {
        mock_b.push(Behavior::Delay(std::time::Duration::from_millis(50)));
    }
    let mut first = Vec::new();
    for _ in 0..6 {
        first.push(served_by(&gateway, &hello()).await);
    }
    assert!(first[2..].iter().all(|id| id == "a"), "{first:?}");
    // Then a slows down to a second per answer: one slow answer is enough to leave it.
    for _ in 0..5 {
        mock_a.push(Behavior::Delay(std::time::Duration::from_secs(1)));
    }
    let before = mock_a.requests().len();
    let mut then = Vec::new();
    for _ in 0..6 {
        then.push(served_by(&gateway, &hello()).await);
    }
    assert!(mock_a.requests().len() - before <= 1, "{then:?}");
    assert!(then[1..].iter().all(|id| id == "b"), "{then:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_routes_around_a_deployment_holding_a_stream() {
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml = pair(&mock_a, &mock_b, ["order: 1", "order: 1"], "{routing_strategy: least-busy}");
    let gateway = TestGateway::start(&yaml).await;
    // Whichever deployment takes the stream keeps it open (the first event, then silence);
    // a request without a stream is answered at once by either.
    mock_a.push(Behavior::StallStream { after_chunks: 1 });
    mock_b.push(Behavior::StallStream { after_chunks: 1 });
    let stream = open_stream(&gateway, "gp").await;
    let busy = if mock_a.requests().len() == 1 { "a" } else { "b" };
    let idle = if busy == "a" { "b" } else { "a" };
    for _ in 0..4 {
        assert_eq!(served_by(&gateway, &hello()).await, idle, "{busy} has a stream in flight");
    }
    // Once the client hangs up, the stream no longer counts.
    drop(stream);
    let mut freed = false;
    for _ in 0..30 {
        if served_by(&gateway, &hello()).await == busy {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(freed, "{busy} serves again once its stream is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_limits_count_the_tokens_answers_and_streams_report() {
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    // Each mock answer uses PROMPT_TOKENS + COMPLETION_TOKENS = 17 tokens: a takes three.
    let yaml = pair(&mock_a, &mock_b, ["order: 1, tpm: 40", "order: 2"], "{}");
    let gateway = TestGateway::start(&yaml).await;
    let mut stream = hello();
    stream["stream"] = json!(true);
    let streamed = send(post(&gateway.url("/v1/chat/completions"), None, stream.to_string())).await;
    assert_eq!(streamed.header("x-litellm-model-id"), "a");
    assert!(
        streamed.events().iter().all(|event| !event.contains("\"usage\":{")),
        "the usage the router asked for stays hidden: {:?}",
        streamed.events()
    );
    let sent: serde_json::Value = serde_json::from_slice(&mock_a.requests()[0].body).unwrap();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    let mut served = Vec::new();
    for _ in 0..3 {
        served.push(served_by(&gateway, &hello()).await);
    }
    assert_eq!(served, ["a", "a", "b"], "17 + 17 tokens leave room, 51 do not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_based_routing_balances_tokens_and_cost_based_takes_the_cheapest() {
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml =
        pair(&mock_a, &mock_b, ["tpm: 100000", "tpm: 100000"], "{routing_strategy: usage-based-routing-v2}");
    let gateway = TestGateway::start(&yaml).await;
    let mut served = Vec::new();
    for _ in 0..6 {
        served.push(served_by(&gateway, &hello()).await);
    }
    // Equal answers: whoever used fewer tokens this minute goes next, so they alternate.
    for pair in served.chunks(2) {
        assert_ne!(pair[0], pair[1], "{served:?}");
    }

    let cheap = "input_cost_per_token: 0.0000001, output_cost_per_token: 0.0000002";
    let dear = "input_cost_per_token: 0.000003, output_cost_per_token: 0.000015";
    let yaml = pair(&mock_a, &mock_b, [dear, cheap], "{routing_strategy: cost-based-routing}");
    let gateway = TestGateway::start(&yaml).await;
    for _ in 0..4 {
        assert_eq!(served_by(&gateway, &hello()).await, "b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_allowed_fails_policies_apply_per_kind_of_failure() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let settings = "{num_retries: 0, cooldown_time: 60, retry_policy: {InternalServerErrorRetries: 1}, allowed_fails_policy: {RateLimitErrorAllowedFails: 5}}";
    let gateway = TestGateway::start(&config(&primary, &backup, settings)).await;
    primary.push(Behavior::Error { status: 500, body: "{}".into() });
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-litellm-attempted-retries"), "1", "the policy retries a 500 once");
    assert_eq!(reply.header("x-litellm-model-id"), "gp-b");

    primary.push(Behavior::Error { status: 429, body: "{}".into() });
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_error(&reply, 429);
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.header("x-litellm-model-id"), "gp-a", "five 429s are allowed: no cooldown yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_call_checks_send_long_prompts_where_they_fit() {
    let (small, large) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml = format!(
        "model_list:
  - model_name: gp
    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{small}', order: 1}}
    model_info: {{id: small, max_input_tokens: 50}}
  - model_name: gp
    litellm_params: {{model: openai/gpt-4o, api_base: '{large}', order: 2}}
    model_info: {{id: large, max_input_tokens: 100000}}
  - model_name: short
    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{small}'}}
    model_info: {{id: short, max_input_tokens: 50}}
  - model_name: shorter
    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{small}'}}
    model_info: {{id: shorter, max_input_tokens: 10}}
router_settings:
  enable_pre_call_checks: true
  context_window_fallbacks: [{{short: [gp]}}]
",
        small = small.base_url(),
        large = large.base_url(),
    );
    let gateway = TestGateway::start(&yaml).await;
    let long = "the quick brown fox jumps over the lazy dog ".repeat(20);
    let ask =
        |model: &str, text: &str| json!({"model": model, "messages": [{"role": "user", "content": text}]});
    assert_eq!(served_by(&gateway, &ask("gp", "hello")).await, "small");
    assert_eq!(served_by(&gateway, &ask("gp", &long)).await, "large", "about 180 tokens do not fit in 50");

    let reply = send(post(&gateway.url("/v1/chat/completions"), None, ask("short", &long).to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-litellm-model-id"), "large", "context_window_fallbacks: short -> gp");
    assert_eq!(reply.header("x-litellm-attempted-fallbacks"), "1");

    let before = small.requests().len();
    let reply =
        send(post(&gateway.url("/v1/chat/completions"), None, ask("shorter", &long).to_string())).await;
    let error = assert_error(&reply, 400);
    assert_eq!(error["code"], "context_length_exceeded");
    assert!(error["message"].as_str().unwrap().contains("Context Window exceeded"), "{error}");
    assert_eq!(small.requests().len(), before, "nothing too small is called");
}

/// `GET /health` (no master key in these configs).
async fn health(gateway: &TestGateway) -> serde_json::Value {
    let reply = send(get(&gateway.url("/health"), None)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_health_checks_take_a_failing_deployment_out_and_health_answers_from_them() {
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    // The first round's probe of a fails; every later one passes.
    mock_a.push(Behavior::Error { status: 500, body: r#"{"error":{"message":"a is down"}}"#.into() });
    let yaml = pair(&mock_a, &mock_b, ["order: 1", "order: 2"], "{}")
        + "general_settings: {background_health_checks: true, health_check_interval: 3, enable_health_check_routing: true}\n";
    let gateway = TestGateway::start(&yaml).await;
    let started = std::time::Instant::now();
    let first = loop {
        let body = health(&gateway).await;
        if body["unhealthy_count"] == 1 {
            break body;
        }
        assert!(body["healthy_count"] == 0, "the first round found a healthy: {body}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "no round ended: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(first["unhealthy_endpoints"][0]["model_id"], "a");
    assert!(first["unhealthy_endpoints"][0]["error"].as_str().unwrap().contains("a is down"), "{first}");
    assert_eq!(first["healthy_endpoints"][0]["model_id"], "b");
    assert_eq!((mock_a.requests().len(), mock_b.requests().len()), (1, 1), "one probe each");
    for _ in 0..4 {
        assert_eq!(served_by(&gateway, &hello()).await, "b", "a failed its check: traffic moved first");
    }
    // Answered from the round: a live check would find a healthy now, and nothing is called.
    assert_eq!(health(&gateway).await, first);
    assert_eq!(mock_a.requests().len(), 1, "/health called nothing");
    // The next round passes a: it is back in rotation.
    let started = std::time::Instant::now();
    while served_by(&gateway, &hello()).await != "a" {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "a never came back");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let second = health(&gateway).await;
    assert_eq!((second["healthy_count"].as_u64(), second["unhealthy_count"].as_u64()), (Some(2), Some(0)));
}
