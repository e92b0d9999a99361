//! End-to-end: scripted traffic through the gateway, then a scrape of `/metrics` with the
//! exact counts asserted, under LiteLLM's metric names.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest;
use support::*;
use tollgate_mock_upstream::{Behavior, COMPLETION_TOKENS, MockUpstream, PROMPT_TOKENS};

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// The value of the one sample of `metric` whose labels include all of `labels`; panics
/// when there is none or more than one.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let has = |(name, value): &(&str, &str)| set.contains(&format!("{name}=\"{value}\""));
            labels.iter().all(has).then(|| value.trim().parse::<f64>().expect("a number"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?} matched {} samples in\n{text}", found.len());
    found[0]
}

async fn scrape(gateway: &TestGateway) -> String {
    let scrape = send(get(&gateway.url("/metrics"), Some(MASTER_KEY))).await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.header("content-type").starts_with("application/openmetrics-text"));
    String::from_utf8(scrape.body.to_vec()).unwrap()
}

#[tokio::test]
async fn counters_match_the_traffic() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    for _ in 0..2 {
        assert_eq!(chat(&gateway, hello("general-purpose")).await.status, 200);
    }
    mock.push(Behavior::Error { status: 503, body: "{}".into() });
    assert_eq!(chat(&gateway, hello("general-purpose")).await.status, 503);
    assert_eq!(chat(&gateway, hello("made-up-model-name")).await.status, 400);
    let unauthenticated = send(post(
        &gateway.url("/v1/chat/completions"),
        Some("sk-wrong"),
        hello("general-purpose").to_string(),
    ))
    .await;
    assert_eq!(unauthenticated.status, 401);

    let text = scrape(&gateway).await;
    let gp = ("requested_model", "general-purpose");
    // The master key has no alias or team: those labels are empty.
    let master = [("api_key_alias", ""), ("team", "")];
    let requests = "litellm_proxy_total_requests_metric_total";
    assert_eq!(sample(&text, requests, &[gp, master[0], master[1], ("status_code", "200")]), 2.0);
    assert_eq!(sample(&text, requests, &[gp, ("status_code", "503")]), 1.0);
    assert_eq!(sample(&text, requests, &[("requested_model", "unknown"), ("status_code", "400")]), 1.0);
    assert_eq!(sample(&text, requests, &[("requested_model", "unknown"), ("status_code", "401")]), 1.0);
    let failures = "litellm_proxy_failed_requests_metric_total";
    assert_eq!(sample(&text, failures, &[gp, ("exception_status", "503")]), 1.0);
    assert_eq!(sample(&text, "litellm_request_total_latency_metric_count", &[gp]), 3.0);
    assert_eq!(sample(&text, "litellm_llm_api_latency_metric_count", &[gp]), 3.0);
    assert_eq!(sample(&text, "litellm_overhead_latency_metric_count", &[gp]), 3.0);
    let deployment = ("litellm_model_name", "openai/mock-model");
    assert_eq!(sample(&text, "litellm_deployment_success_responses_total", &[deployment]), 2.0);
    assert_eq!(
        sample(
            &text,
            "litellm_deployment_failure_responses_total",
            &[deployment, ("exception_status", "503")]
        ),
        1.0
    );
    assert_eq!(sample(&text, "litellm_deployment_total_requests_total", &[deployment]), 3.0);
    assert_eq!(sample(&text, "litellm_deployment_state", &[deployment]), 1.0, "the last call failed");
    let tokens = [gp, ("model", "openai/mock-model")];
    assert_eq!(sample(&text, "litellm_input_tokens_metric_total", &tokens), (2 * PROMPT_TOKENS) as f64);
    assert_eq!(sample(&text, "litellm_output_tokens_metric_total", &tokens), (2 * COMPLETION_TOKENS) as f64);
    assert_eq!(
        sample(&text, "litellm_total_tokens_metric_total", &tokens),
        (2 * (PROMPT_TOKENS + COMPLETION_TOKENS)) as f64
    );
    assert!(!text.contains("made-up-model-name"), "client strings never become labels");
    assert!(!text.contains("sk-wrong") && !text.contains(MASTER_KEY), "keys never become labels");
}

#[tokio::test]
async fn metrics_require_a_key_unless_turned_off() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    assert_eq!(send(get(&gateway.url("/metrics"), None)).await.status, 401, "a key by default, as LiteLLM");
    assert_eq!(send(get(&gateway.url("/metrics"), Some(MASTER_KEY))).await.status, 200);

    let yaml = mock_config(&mock.base_url(), "")
        + "litellm_settings: {require_auth_for_metrics_endpoint: false, callbacks: [prometheus]}\n";
    let open = TestGateway::start(&yaml).await;
    assert_eq!(send(get(&open.url("/metrics"), None)).await.status, 200);
}

/// A priced model, virtual keys in a team, a database.
fn tenancy_config(base_url: &str) -> String {
    format!(
        "model_list:
  - model_name: general-purpose
    litellm_params: {{model: openai/mock-model, api_base: {base_url}, api_key: {UPSTREAM_KEY}}}
    model_info: {{input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
general_settings:
  master_key: {MASTER_KEY}
"
    )
}

async fn admin(gateway: &TestGateway, path: &str, body: Value) -> Value {
    let reply = send(post(&gateway.url(path), Some(MASTER_KEY), body.to_string())).await;
    assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

fn hash(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn keys_teams_tokens_spend_budgets_and_limits() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&tenancy_config(&mock.base_url())).await;
    let team = admin(
        &gateway,
        "/team/new",
        json!({"team_alias": "research", "max_budget": 1.0, "rpm_limit": 50, "tpm_limit": 10000}),
    )
    .await;
    let team_id = team["team_id"].as_str().unwrap().to_owned();
    let key = admin(
        &gateway,
        "/key/generate",
        json!({"key_alias": "svc", "team_id": team_id, "max_budget": 0.05, "rpm_limit": 100, "tpm_limit": 1000}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |body: Value| send(post(&gateway.url("/v1/chat/completions"), Some(&key), body.to_string()));
    assert_eq!(call(hello("general-purpose")).await.status, 200);
    assert_eq!(call(hello("general-purpose")).await.status, 200);
    // A stream whose client did not ask for usage: the gateway asks, and counts it.
    let mut streamed = hello("general-purpose");
    streamed["stream"] = json!(true);
    let stream = call(streamed).await;
    assert_eq!(stream.status, 200);
    assert!(
        stream.events().iter().all(|event| !event.contains("\"usage\":{")),
        "the usage chunk is not shown"
    );
    // 3 × (12 × 0.001 + 5 × 0.002) = 0.066: past the key's 0.05.
    let refused = call(hello("general-purpose")).await;
    assert!(refused.status >= 400, "over budget");

    let text = scrape(&gateway).await;
    let hashed = hash(&key);
    let who = [
        ("hashed_api_key", hashed.as_str()),
        ("api_key_alias", "svc"),
        ("team", team_id.as_str()),
        ("team_alias", "research"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        who.iter().copied().chain(extra.iter().copied()).collect()
    };
    let requests = "litellm_proxy_total_requests_metric_total";
    assert_eq!(sample(&text, requests, &with(&[("status_code", "200")])), 3.0);
    let refused_status = refused.status.to_string();
    let mut refused_labels = with(&[]);
    refused_labels.push(("status_code", refused_status.as_str()));
    assert_eq!(sample(&text, requests, &refused_labels), 1.0);
    let usage = with(&[("requested_model", "general-purpose"), ("model", "openai/mock-model")]);
    assert_eq!(sample(&text, "litellm_input_tokens_metric_total", &usage), (3 * PROMPT_TOKENS) as f64);
    assert_eq!(sample(&text, "litellm_output_tokens_metric_total", &usage), (3 * COMPLETION_TOKENS) as f64);
    let spend = sample(&text, "litellm_spend_metric_total", &usage);
    assert!((spend - 0.066).abs() < 1e-9, "{spend}");
    let gp = ("requested_model", "general-purpose");
    assert_eq!(sample(&text, "litellm_llm_api_time_to_first_token_metric_count", &[gp]), 1.0);
    assert_eq!(sample(&text, "litellm_request_total_latency_metric_count", &[gp]), 4.0);

    let key_labels = [("hashed_api_key", hashed.as_str()), ("api_key_alias", "svc")];
    assert_eq!(sample(&text, "litellm_api_key_max_budget_metric", &key_labels), 0.05);
    let left = sample(&text, "litellm_remaining_api_key_budget_metric", &key_labels);
    assert!((left - (0.05 - 0.066)).abs() < 1e-9, "{left}");
    let team_labels = [("team", team_id.as_str()), ("team_alias", "research")];
    assert_eq!(sample(&text, "litellm_team_max_budget_metric", &team_labels), 1.0);
    let team_left = sample(&text, "litellm_remaining_team_budget_metric", &team_labels);
    assert!((team_left - (1.0 - 0.066)).abs() < 1e-9, "{team_left}");
    // Limits as they stood when the third request was admitted: three requests counted,
    // the first two's tokens (17 each) known.
    let per_model = [key_labels[0], key_labels[1], ("model", "general-purpose")];
    assert_eq!(sample(&text, "litellm_remaining_api_key_requests_for_model", &per_model), 97.0);
    assert_eq!(sample(&text, "litellm_remaining_api_key_tokens_for_model", &per_model), 966.0);
    assert_eq!(sample(&text, "tollgate_remaining_team_requests", &team_labels), 47.0);
    assert_eq!(sample(&text, "tollgate_remaining_team_tokens", &team_labels), 9966.0);
    assert_eq!(sample(&text, "tollgate_database_up", &[("backend", "sqlite")]), 1.0);
    assert!(text.contains("tollgate_spend_log_queue_rows "), "{text}");
    assert!(text.contains("litellm_in_memory_spend_update_queue_size "), "{text}");
    assert!(!text.contains(&key), "the raw key never shows");
}

fn routing_config(primary: &MockUpstream, backup: &MockUpstream) -> String {
    format!(
        "model_list:
  - model_name: gp
    litellm_params: {{model: openai/primary-a, api_base: '{primary}'}}
    model_info: {{id: gp-a}}
  - model_name: gp
    litellm_params: {{model: openai/primary-b, api_base: '{primary}'}}
    model_info: {{id: gp-b}}
  - model_name: solo
    litellm_params: {{model: openai/solo, api_base: '{primary}'}}
    model_info: {{id: solo-1}}
  - model_name: backup
    litellm_params: {{model: openai/backup, api_base: '{backup}'}}
    model_info: {{id: backup-1}}
router_settings: {{cooldown_time: 60, fallbacks: [{{solo: [backup]}}]}}
",
        primary = primary.base_url(),
        backup = backup.base_url(),
    )
}

/// Polls `/metrics` until `sample` of it is `want` (at most 5 s).
async fn eventually(gateway: &TestGateway, metric: &str, labels: &[(&str, &str)], want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(gateway).await;
        if text.lines().any(|l| l.starts_with(metric)) && sample(&text, metric, labels) == want {
            return text;
        }
        assert!(Instant::now() < deadline, "{metric} {labels:?} never became {want}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_retries_and_cooldowns_are_counted() {
    let (primary, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let gateway = TestGateway::start_env(&routing_config(&primary, &backup), &HashMap::new(), |g| g).await;
    let call = |model: &str| send(post(&gateway.url("/v1/chat/completions"), None, hello(model).to_string()));

    // solo fails, backup answers: a successful fallback.
    primary.push(Behavior::Error { status: 503, body: "{}".into() });
    assert_eq!(call("solo").await.status, 200);
    // Both fail: a failed fallback.
    primary.push(Behavior::Error { status: 503, body: "{}".into() });
    backup.push(Behavior::Error { status: 502, body: "{}".into() });
    assert_eq!(call("solo").await.status, 502);
    // A 429 cools the deployment down at once (its group has another).
    primary.push(Behavior::RateLimited { retry_after_secs: 1 });
    assert_eq!(call("gp").await.status, 429);

    let cooled = primary
        .requests()
        .last()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["model"].as_str().unwrap().to_owned());
    let model = format!("openai/{}", cooled.unwrap());
    let state = [("litellm_model_name", model.as_str())];
    let text = eventually(&gateway, "litellm_deployment_state", &state, 2.0).await;
    assert_eq!(sample(&text, "litellm_deployment_cooled_down_total", &state), 1.0);
    let solo = ("requested_model", "solo");
    assert_eq!(
        sample(&text, "litellm_deployment_successful_fallbacks_total", &[solo, ("fallback_model", "backup")]),
        1.0
    );
    assert_eq!(
        sample(&text, "litellm_deployment_failed_fallbacks_total", &[solo, ("fallback_model", "backup")]),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "litellm_deployment_failure_responses_total",
            &[solo, ("model_id", "solo-1"), ("exception_status", "503")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "litellm_deployment_success_responses_total",
            &[solo, ("model_id", "backup-1"), ("api_provider", "openai")]
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "litellm_proxy_total_requests_metric_total", &[solo, ("status_code", "502")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_redis_health_on_postgres_and_redis() {
    let Some(redis) = redis_url("database_and_redis_health_on_postgres_and_redis") else { return };
    let Some(database) = postgres_url("metrics_health").await else { return };
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:
  - model_name: general-purpose
    litellm_params: {{model: openai/mock-model, api_base: {}, api_key: k}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: \"{database}\"
router_settings:
  redis_url: \"{redis}\"
",
        mock.base_url()
    );
    let gateway = TestGateway::start(&yaml).await;
    // A key with a limit, so that rate limits are counted in Redis.
    let key = admin(&gateway, "/key/generate", json!({"rpm_limit": 1000})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply =
        send(post(&gateway.url("/v1/chat/completions"), Some(&key), hello("general-purpose").to_string()))
            .await;
    assert_eq!(reply.status, 200);
    let text = eventually(&gateway, "tollgate_redis_up", &[("component", "rate_limits")], 1.0).await;
    assert_eq!(sample(&text, "tollgate_database_up", &[("backend", "postgres")]), 1.0);
    assert_eq!(sample(&text, "tollgate_redis_up", &[("component", "spend")]), 1.0);
}
