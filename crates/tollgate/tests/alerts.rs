//! End-to-end: alerts to a webhook sink and a Slack stand-in (both in-process hyper servers):
//! one alert per budget or soft budget crossed by a key or a team, one per deployment
//! cooling down, and a provider outage once its failures reach the threshold.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{Behavior, MockUpstream};

/// Records every POST: its path and JSON body.
struct Sink {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Sink {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let kept = Arc::clone(&received);
        tokio::spawn(async move {
            for _ in 0..64 {
                let Ok((stream, _)) = listener.accept().await else { return };
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            let path = request.uri().path().to_owned();
                            let body =
                                request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            kept.lock().unwrap().push((path, json));
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn at(&self, path: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Waits until `path` has received `count` posts (at most 5 s), then a moment more so
    /// that an extra one would show.
    async fn wait_for(&self, path: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.at(path).len() < count {
            assert!(Instant::now() < deadline, "{path} got {:?}", self.at(path));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.at(path)
    }
}

fn env(sink: &Sink) -> HashMap<String, String> {
    HashMap::from([
        ("SLACK_WEBHOOK_URL".to_owned(), sink.url("/slack")),
        ("WEBHOOK_URL".to_owned(), sink.url("/hook")),
    ])
}

fn config(base_url: &str, extra: &str) -> String {
    format!(
        "model_list:
  - model_name: general-purpose
    litellm_params: {{model: openai/mock-model, api_base: {base_url}, api_key: {UPSTREAM_KEY}}}
    model_info: {{input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
general_settings:
  master_key: {MASTER_KEY}
  alerting: [slack, webhook]
{extra}"
    )
}

async fn admin(gateway: &TestGateway, path: &str, body: Value) -> Value {
    let reply = send(post(&gateway.url(path), Some(MASTER_KEY), body.to_string())).await;
    assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

async fn chat_as(gateway: &TestGateway, key: &str) -> u16 {
    let body = json!({"model": "general-purpose", "messages": [{"role": "user", "content": "hi"}]});
    send(post(&gateway.url("/v1/chat/completions"), Some(key), body.to_string())).await.status
}

fn events(posts: &[Value]) -> Vec<(String, String)> {
    posts
        .iter()
        .map(|p| (p["event"].as_str().unwrap().to_owned(), p["event_group"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_per_budget_crossing() {
    let (sink, mock) = (Sink::start().await, MockUpstream::start().await);
    let gateway = TestGateway::start_env(&config(&mock.base_url(), ""), &env(&sink), |g| g).await;
    let team = admin(
        &gateway,
        "/team/new",
        json!({"team_alias": "research", "max_budget": 0.05, "soft_budget": 0.04}),
    )
    .await;
    let team_id = team["team_id"].as_str().unwrap().to_owned();
    let key = |body: Value| admin(&gateway, "/key/generate", body);
    let a = key(json!({"key_alias": "a", "team_id": team_id, "max_budget": 0.03, "soft_budget": 0.01})).await;
    let a = a["key"].as_str().unwrap().to_owned();
    let b = key(json!({"key_alias": "b", "team_id": team_id})).await["key"].as_str().unwrap().to_owned();

    // Each request costs 12 × 0.001 + 5 × 0.002 = 0.022.
    assert_eq!(chat_as(&gateway, &a).await, 200); // key 0.022: past its soft budget
    assert_eq!(chat_as(&gateway, &a).await, 200); // key 0.044: past its budget; team past its soft one
    assert!(chat_as(&gateway, &a).await >= 400, "the key is over budget");
    assert_eq!(chat_as(&gateway, &b).await, 200); // team 0.066: past its budget
    assert!(chat_as(&gateway, &b).await >= 400, "the team is over budget");
    assert_eq!(chat_as(&gateway, MASTER_KEY).await, 200, "the master key has no budget");

    let hooks = sink.wait_for("/hook", 4).await;
    assert_eq!(
        events(&hooks),
        [
            ("soft_budget_crossed".to_owned(), "key".to_owned()),
            ("budget_crossed".to_owned(), "key".to_owned()),
            ("soft_budget_crossed".to_owned(), "team".to_owned()),
            ("budget_crossed".to_owned(), "team".to_owned()),
        ],
        "one alert per crossing, in order"
    );
    assert_eq!(hooks[1]["key_alias"], "a");
    assert_eq!(hooks[1]["max_budget"], 0.03);
    assert!((hooks[1]["spend"].as_f64().unwrap() - 0.044).abs() < 1e-9);
    assert_eq!(hooks[3]["team_id"], team_id.as_str());
    assert_eq!(hooks[3]["team_alias"], "research");
    let slack = sink.wait_for("/slack", 4).await;
    assert_eq!(slack.len(), 4);
    assert!(slack[1]["text"].as_str().unwrap().contains("Budget Crossed"), "{}", slack[1]);
    let everything = format!("{hooks:?}{slack:?}");
    assert!(!everything.contains(&a) && !everything.contains(MASTER_KEY), "raw keys are never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_and_outages_alert_once_within_the_window() {
    let (sink, mock) = (Sink::start().await, MockUpstream::start().await);
    let yaml = format!(
        "model_list:
  - model_name: gp
    litellm_params: {{model: openai/a, api_base: '{base}'}}
    model_info: {{id: gp-a}}
  - model_name: gp
    litellm_params: {{model: openai/b, api_base: '{base}'}}
    model_info: {{id: gp-b}}
router_settings: {{cooldown_time: 60, allowed_fails: 100}}
general_settings:
  alerting: [webhook]
  alert_types: [cooldown_deployment, outage_alerts]
  alerting_args: {{minor_outage_alert_threshold: 3, major_outage_alert_threshold: 5, outage_alert_ttl: 60}}
",
        base = mock.base_url()
    );
    let gateway = TestGateway::start_env(&yaml, &env(&sink), |g| g).await;
    let call = || {
        send(post(
            &gateway.url("/v1/chat/completions"),
            None,
            json!({"model": "gp", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        ))
    };
    // Six 500s: allowed_fails keeps both in rotation; the provider crosses 3 then 5.
    for _ in 0..6 {
        mock.push(Behavior::Error { status: 500, body: "{}".into() });
        assert_eq!(call().await.status, 500);
    }
    // A 429 cools its deployment down at once.
    mock.push(Behavior::RateLimited { retry_after_secs: 1 });
    assert_eq!(call().await.status, 429);
    let hooks = sink.wait_for("/hook", 3).await;
    let kinds: Vec<String> = hooks.iter().map(|h| h["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["minor_outage", "major_outage", "cooldown_deployment"], "{hooks:?}");
    assert_eq!(hooks[1]["failures"], 5);
    assert_eq!(hooks[2]["model_group"], "gp");
    assert!(sink.at("/slack").is_empty(), "slack was not configured");
}
