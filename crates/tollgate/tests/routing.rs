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
