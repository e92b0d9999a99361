//! End-to-end: two gateways sharing their router state through one Redis, as replicas do
//! (cooldowns, per-minute requests of deployments, a restart), and one whose Redis is away.
//! Each test's deployments point at mock upstreams on fresh ports, which gives it a Redis
//! namespace of its own.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{Behavior, MockUpstream};

/// `gp`: `a` (order 1, on `mock_a`) then `b` (order 2, on `mock_b`); `solo`: one deployment
/// on `mock_b` with 5 requests a minute. Shared through `redis`.
fn config(mock_a: &MockUpstream, mock_b: &MockUpstream, redis: &str) -> String {
    format!(
        "model_list:
  - model_name: gp
    litellm_params: {{model: openai/model-a, api_base: '{a}', order: 1}}
    model_info: {{id: a}}
  - model_name: gp
    litellm_params: {{model: openai/model-b, api_base: '{b}', order: 2}}
    model_info: {{id: b}}
  - model_name: solo
    litellm_params: {{model: openai/model-s, api_base: '{b}', rpm: 5}}
    model_info: {{id: s}}
router_settings:
  redis_url: '{redis}'
  cooldown_time: 60
",
        a = mock_a.base_url(),
        b = mock_b.base_url(),
    )
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

async fn ask(gateway: &TestGateway, model: &str) -> Reply {
    send(post(&gateway.url("/v1/chat/completions"), None, hello(model).to_string())).await
}

/// Waits until the gateway's readiness says its routing state is shared (or not).
async fn wait_shared(gateway: &TestGateway, shared: bool) {
    let started = Instant::now();
    loop {
        let ready = send(get(&gateway.url("/health/readiness"), None)).await.json();
        let state =
            ready["router_redis"].as_str().expect("router_redis is reported with a redis_url").to_owned();
        if (state == "connected") == shared {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never {shared}: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two replicas on one Redis, both sharing already.
async fn replicas(yaml: &str) -> (TestGateway, TestGateway) {
    let (one, two) = (TestGateway::start(yaml).await, TestGateway::start(yaml).await);
    wait_shared(&one, true).await;
    wait_shared(&two, true).await;
    (one, two)
}

/// Sleeps into the next minute when this one ends within `needed`, so counts made now stay
/// in one window (Redis runs on this machine: its clock is ours).
async fn room_in_this_minute(needed: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let left = Duration::from_secs(60 - now.as_secs() % 60)
        .saturating_sub(Duration::from_nanos(now.subsec_nanos().into()));
    if left < needed {
        tokio::time::sleep(left + Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_caused_through_one_replica_is_honoured_by_the_other() {
    let Some(redis) = redis_url("a_cooldown_caused_through_one_replica_is_honoured_by_the_other") else {
        return;
    };
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    let (one, two) = replicas(&config(&mock_a, &mock_b, &redis)).await;
    assert_eq!(ask(&two, "gp").await.header("x-litellm-model-id"), "a", "a serves first");
    mock_a.push(Behavior::Error { status: 429, body: r#"{"error":{"message":"slow down"}}"#.into() });
    let cooled = Instant::now();
    assert_eq!(ask(&one, "gp").await.status, 429, "a answered 429 through one");
    // Announced as it started: two routes around a within milliseconds, not a round.
    loop {
        let reply = ask(&two, "gp").await;
        assert_eq!(reply.status, 200);
        if reply.header("x-litellm-model-id") == "b" {
            break;
        }
        assert!(cooled.elapsed() < Duration::from_secs(2), "two kept sending to a");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let honoured = cooled.elapsed();
    let calls_to_a = mock_a.requests().len();
    for _ in 0..5 {
        assert_eq!(ask(&two, "gp").await.header("x-litellm-model-id"), "b");
        assert_eq!(ask(&one, "gp").await.header("x-litellm-model-id"), "b");
    }
    assert_eq!(mock_a.requests().len(), calls_to_a, "nothing reached a once two heard of its cooldown");
    eprintln!("cooldown honoured by the other replica after {honoured:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_rpm_holds_across_replicas() {
    let Some(redis) = redis_url("a_deployments_rpm_holds_across_replicas") else { return };
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    let (one, two) = replicas(&config(&mock_a, &mock_b, &redis)).await;
    room_in_this_minute(Duration::from_secs(8)).await;
    // s takes 5 requests a minute. Three through one, then (a round later) through two.
    for _ in 0..3 {
        assert_eq!(ask(&one, "solo").await.status, 200);
    }
    let settle = || tokio::time::sleep(Duration::from_millis(600));
    settle().await;
    for _ in 0..2 {
        assert_eq!(ask(&two, "solo").await.status, 200, "two more fit in the minute");
    }
    let refused = ask(&two, "solo").await;
    let error = assert_error(&refused, 429);
    assert!(error["message"].as_str().unwrap().contains("No deployments available"), "{error}");
    settle().await;
    assert_eq!(ask(&one, "solo").await.status, 429, "one sees two's requests too");
    assert_eq!(
        mock_b.requests().iter().filter(|r| String::from_utf8_lossy(&r.body).contains("model-s")).count(),
        5,
        "five requests a minute, across both replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_picks_up_a_running_cooldown() {
    let Some(redis) = redis_url("a_restarted_replica_picks_up_a_running_cooldown") else { return };
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml = config(&mock_a, &mock_b, &redis);
    let mut first = TestGateway::start(&yaml).await;
    wait_shared(&first, true).await;
    mock_a.push(Behavior::Error { status: 429, body: "{}".into() });
    assert_eq!(ask(&first, "gp").await.status, 429);
    assert_eq!(ask(&first, "gp").await.header("x-litellm-model-id"), "b");
    // The announcement is one script call, sent as the cooldown starts; let it land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = first.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shut down").unwrap().unwrap();
    drop(first);

    let restarted = TestGateway::start(&yaml).await;
    wait_shared(&restarted, true).await;
    let before = mock_a.requests().len();
    for _ in 0..5 {
        assert_eq!(ask(&restarted, "gp").await.header("x-litellm-model-id"), "b", "still cooling");
    }
    assert_eq!(mock_a.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_replica_routes_on_its_own() {
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let gateway = TestGateway::start(&config(&mock_a, &mock_b, &redis)).await;
    wait_shared(&gateway, false).await;
    mock_a.push(Behavior::Error { status: 429, body: "{}".into() });
    assert_eq!(ask(&gateway, "gp").await.status, 429);
    for _ in 0..3 {
        assert_eq!(ask(&gateway, "gp").await.header("x-litellm-model-id"), "b", "its own cooldown holds");
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(ask(&gateway, "solo").await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "its own rpm count holds: {statuses:?}");
}
