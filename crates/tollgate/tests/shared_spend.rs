//! Spend shared across replicas through Redis: three gateways on one database and one Redis
//! hold one key to one budget, every dollar reaches the database exactly once, and with
//! Redis away each replica still gets its own spend written.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{MASTER_KEY, Reply, TestGateway, post, send, temp_sqlite_url};
use tollgate_mock_upstream::MockUpstream;

fn config(mock: &MockUpstream, database_url: &str, redis_url: &str) -> String {
    format!(
        "model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: \"{database_url}\"
  proxy_batch_write_at: 1
router_settings:
  redis_url: \"{redis_url}\"
",
        mock.base_url()
    )
}

/// What one mock answer costs at gpt-4o's listed prices.
fn one_request_cost() -> f64 {
    tollgate_mock_upstream::PROMPT_TOKENS as f64 * 2.5e-6
        + tollgate_mock_upstream::COMPLETION_TOKENS as f64 * 1e-5
}

async fn call(gateway: &TestGateway, key: &str, path: &str, body: Value) -> Reply {
    send(post(&gateway.url(path), Some(key), body.to_string())).await
}

async fn chat(gateway: &TestGateway, key: &str) -> Reply {
    call(
        gateway,
        key,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
}

async fn new_key(gateway: &TestGateway, body: Value) -> String {
    let reply = call(gateway, MASTER_KEY, "/key/generate", body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()["key"].as_str().expect("a raw key").to_owned()
}

/// Waits (bounded) until the database says the key spent `expected`.
async fn assert_spend_reaches_database(gateway: &TestGateway, key: &str, expected: f64) {
    let started = Instant::now();
    loop {
        let info = call(gateway, MASTER_KEY, "/key/info", json!({"key": key})).await.json();
        let spend = info["info"]["spend"].as_f64().unwrap_or(f64::NAN);
        if (spend - expected).abs() < 1e-9 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the database has {spend}, expected {expected}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three replicas, one key with a budget of ten requests. Each round sends one request to
/// every replica at once, then gives the replicas a moment to share. The budget holds
/// globally: the overshoot is at most the requests in flight when it was crossed (two here),
/// and the database ends with exactly what was charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_one_key_to_one_budget() {
    let Some(redis) = support::redis_url("three_replicas_hold_one_key_to_one_budget") else { return };
    let mock = MockUpstream::start().await;
    let url = support::postgres_or_sqlite("shared_spend_budget").await;
    let yaml = config(&mock, &url, &redis);
    let replicas =
        [TestGateway::start(&yaml).await, TestGateway::start(&yaml).await, TestGateway::start(&yaml).await];
    let cost = one_request_cost();
    let key = new_key(&replicas[0], json!({"max_budget": cost * 10.0})).await;

    let mut admitted = 0;
    for round in 0..10 {
        let (a, b, c) =
            tokio::join!(chat(&replicas[0], &key), chat(&replicas[1], &key), chat(&replicas[2], &key));
        let replies = [a, b, c];
        let passed = replies.iter().filter(|reply| reply.status == 200).count();
        for reply in replies.iter().filter(|reply| reply.status != 200) {
            assert_eq!(reply.status, 422, "{}", String::from_utf8_lossy(&reply.body));
            assert_eq!(reply.json()["error"]["type"], "budget_exceeded");
        }
        admitted += passed;
        if passed == 0 {
            assert!(round >= 3, "refused after only {admitted} requests");
            break;
        }
        // One replica's hand-over and another's read (a refresher round each), with room for
        // a slow machine.
        tokio::time::sleep(Duration::from_millis(2_300)).await;
    }
    assert!((10..=12).contains(&admitted), "admitted {admitted} for a budget of 10 with 3 in flight");
    assert_eq!(mock.requests().len(), admitted, "refused requests never reach the upstream");
    assert_spend_reaches_database(&replicas[1], &key, admitted as f64 * cost).await;
}

/// Spend recorded on every replica is written once, whichever replica holds the lease,
/// including what a replica hands over as it shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_spend_is_written_exactly_once() {
    let Some(redis) = support::redis_url("shared_spend_is_written_exactly_once") else { return };
    let mock = MockUpstream::start().await;
    let url = support::postgres_or_sqlite("shared_spend_once").await;
    let yaml = config(&mock, &url, &redis);
    let first = TestGateway::start(&yaml).await;
    let mut second = TestGateway::start(&yaml).await;
    let key = new_key(&first, json!({})).await;
    for _ in 0..5 {
        assert_eq!(chat(&first, &key).await.status, 200);
        assert_eq!(chat(&second, &key).await.status, 200);
    }
    assert_eq!(chat(&second, &key).await.status, 200);
    second.begin_shutdown().await.unwrap().unwrap();
    assert_spend_reaches_database(&first, &key, 11.0 * one_request_cost()).await;
    // Nothing is written twice in the rounds that follow.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_spend_reaches_database(&first, &key, 11.0 * one_request_cost()).await;
}

/// Redis unreachable: requests are served and each replica writes its own spend.
#[tokio::test]
async fn spend_reaches_the_database_while_redis_is_away() {
    let mock = MockUpstream::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let gateway = TestGateway::start(&config(&mock, &temp_sqlite_url(), &redis)).await;
    let key = new_key(&gateway, json!({})).await;
    for _ in 0..3 {
        assert_eq!(chat(&gateway, &key).await.status, 200);
    }
    assert_spend_reaches_database(&gateway, &key, 3.0 * one_request_cost()).await;
}
