//! The router's rules, each with a scripted call and tokio's paused clock.

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use tollgate_domain::GatewayConfig;

pub(crate) fn router(yaml: &str) -> Router {
    let config = GatewayConfig::from_yaml(yaml, &HashMap::new()).unwrap();
    Router::new(config.deployments, config.router, HealthBoard::new())
}

const CONFIG: &str = "model_list:
  - {model_name: gp, litellm_params: {model: fake/a}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b}, model_info: {id: b}}
  - {model_name: embed, litellm_params: {model: fake/e}}
  - {model_name: 'openai/*', litellm_params: {model: 'fake/*'}}
";

/// `a` before `b` by `order`, so tests know which deployment comes first.
pub(crate) fn ordered(settings: &str) -> Router {
    router(&format!(
        "model_list:
  - {{model_name: gp, litellm_params: {{model: fake/a, order: 1}}, model_info: {{id: a}}}}
  - {{model_name: gp, litellm_params: {{model: fake/b, order: 2}}, model_info: {{id: b}}}}
  - {{model_name: backup, litellm_params: {{model: fake/c}}, model_info: {{id: c}}}}
  - {{model_name: long, litellm_params: {{model: fake/d}}, model_info: {{id: d}}}}
  - {{model_name: solo, litellm_params: {{model: fake/e}}, model_info: {{id: e}}}}
router_settings: {settings}
"
    ))
}

pub(crate) fn upstream(status: u16) -> GatewayError {
    GatewayError::new(ErrorKind::Upstream(status), format!("status {status}"))
}

/// Routes `model`, answering with `script(deployment id)`, and records the ids called.
pub(crate) async fn run(
    router: &Router,
    model: &str,
    calls: &Mutex<Vec<String>>,
    script: impl Fn(&str) -> Result<(), GatewayError>,
) -> Result<Routed<()>, GatewayError> {
    run_with(router, model, &RequestOptions::default(), calls, script).await
}

pub(crate) async fn run_with(
    router: &Router,
    model: &str,
    options: &RequestOptions,
    calls: &Mutex<Vec<String>>,
    script: impl Fn(&str) -> Result<(), GatewayError>,
) -> Result<Routed<()>, GatewayError> {
    router
        .route(model, options, |selection| {
            let id = selection.deployment.id.clone();
            calls.lock().unwrap().push(id.clone());
            let result = script(&id);
            async move { result }
        })
        .await
}

#[test]
fn selects_within_the_group_and_spreads_load() {
    let router = router(CONFIG);
    let mut seen = HashMap::new();
    for _ in 0..200 {
        *seen
            .entry(router.select("gp", &RequestOptions::default()).unwrap().deployment.id.clone())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|&n| n > 40), "{seen:?}");
    assert_eq!(router.select("embed", &RequestOptions::default()).unwrap().upstream_model, "e");
}

#[test]
fn weights_shape_the_shuffle() {
    let router = router(
        "model_list:
  - {model_name: gp, litellm_params: {model: fake/a, weight: 1}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b, weight: 3}, model_info: {id: b}}
",
    );
    let picks = 8000;
    let b = (0..picks)
        .filter(|_| router.select("gp", &RequestOptions::default()).unwrap().deployment.id == "b")
        .count();
    let share = b as f64 / picks as f64;
    // Binomial(8000, 0.75): a standard deviation of 0.005; 0.03 is six of them.
    assert!((share - 0.75).abs() < 0.03, "b got {share}");
}

#[test]
fn wildcard_fills_the_upstream_model() {
    let router = router(CONFIG);
    assert_eq!(router.select("openai/gpt-4o", &RequestOptions::default()).unwrap().upstream_model, "gpt-4o");
    assert!(router.select("openai/", &RequestOptions::default()).is_err());
    assert_eq!(wildcard_match("a*z", "abcz"), Some("bc"));
    assert_eq!(wildcard_match("a*z", "az"), None);
    assert_eq!(wildcard_match("exact", "exact"), None);
}

#[test]
fn unknown_model_names_the_valid_ones() {
    let error = GatewayError::from(router(CONFIG).select("gpt-5", &RequestOptions::default()).unwrap_err());
    assert_eq!(error.status(), 400);
    assert_eq!(
        error.message,
        "Invalid model name passed in model=gpt-5. Call `/v1/models` to view available models for your key. Available models: gp, embed, openai/*"
    );
}

#[test]
fn aliases_resolve_and_hidden_ones_stay_off_the_list() {
    let router = ordered("{model_group_alias: {gpt-4: gp, legacy: {model: backup, hidden: true}}}");
    assert_eq!(router.select("gpt-4", &RequestOptions::default()).unwrap().deployment.id, "a");
    assert_eq!(router.select("legacy", &RequestOptions::default()).unwrap().deployment.id, "c");
    let names: Vec<&str> = router.model_names().collect();
    assert_eq!(names, ["gp", "backup", "long", "solo", "gpt-4"]);
}

#[tokio::test(start_paused = true)]
async fn retries_move_to_another_deployment() {
    let router = ordered("{num_retries: 2}");
    let calls = Mutex::new(Vec::new());
    let routed =
        run(&router, "gp", &calls, |id| if id == "a" { Err(upstream(503)) } else { Ok(()) }).await.unwrap();
    assert_eq!(routed.deployment.id, "b");
    assert_eq!((routed.retries, routed.fallbacks), (1, 0));
    assert_eq!(*calls.lock().unwrap(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_neither_retried_nor_fallen_back() {
    let router = ordered("{num_retries: 3, fallbacks: [{gp: [backup]}]}");
    let calls = Mutex::new(Vec::new());
    let error = run(&router, "gp", &calls, |_| Err(GatewayError::new(ErrorKind::Upstream(400), "bad")))
        .await
        .unwrap_err();
    assert_eq!(error.status(), 400);
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn repeated_failures_cool_a_deployment_down_for_cooldown_time() {
    let router = ordered("{allowed_fails: 1, cooldown_time: 10}");
    let calls = Mutex::new(Vec::new());
    for _ in 0..2 {
        let _ = run(&router, "gp", &calls, |id| if id == "a" { Err(upstream(500)) } else { Ok(()) }).await;
    }
    assert_eq!(*calls.lock().unwrap(), ["a", "a"], "two failures, each without retries");
    // More than allowed_fails: `a` cools, so `b` serves.
    let routed = run(&router, "gp", &calls, |_| Ok(())).await.unwrap();
    assert_eq!(routed.deployment.id, "b");
    tokio::time::advance(Duration::from_secs(11)).await;
    let routed = run(&router, "gp", &calls, |_| Ok(())).await.unwrap();
    assert_eq!(routed.deployment.id, "a", "back after the cooldown");
}

#[tokio::test(start_paused = true)]
async fn rate_limits_cool_down_at_once_and_a_cooled_group_says_when() {
    let router = ordered("{cooldown_time: 30}");
    let calls = Mutex::new(Vec::new());
    let _ = run(&router, "gp", &calls, |_| Err(upstream(429))).await;
    assert_eq!(
        router.select("gp", &RequestOptions::default()).unwrap().deployment.id,
        "b",
        "a 429 cools `a` at once"
    );
    let _ = run(&router, "gp", &calls, |_| Err(upstream(429))).await;
    let error = GatewayError::from(router.select("gp", &RequestOptions::default()).unwrap_err());
    assert_eq!(error.status(), 429);
    assert!(
        error.message.starts_with("No deployments available for selected model, Try again in 30 seconds"),
        "{}",
        error.message
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_lengthens_the_cooldown_and_the_wait() {
    let router = ordered("{cooldown_time: 5, num_retries: 1}");
    let calls = Mutex::new(Vec::new());
    let limited = || {
        let mut error = upstream(429);
        error.retry_after = Some(Duration::from_secs(40));
        error
    };
    let _ = run(&router, "gp", &calls, |id| if id == "a" { Err(limited()) } else { Ok(()) }).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        router.select("gp", &RequestOptions::default()).unwrap().deployment.id,
        "b",
        "still cooling after 30 s of a 40 s Retry-After"
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(router.select("gp", &RequestOptions::default()).unwrap().deployment.id, "a");

    // A lone deployment waits (up to ten seconds) before its retry.
    let started = Instant::now();
    let _ = run(&router, "solo", &calls, |_| Err(limited())).await;
    assert!(started.elapsed() >= MAX_RETRY_AFTER_WAIT, "{:?}", started.elapsed());
    let error = GatewayError::from(RouterError::NoDeployments {
        model: "m".into(),
        retry_in: Duration::from_secs(3),
    });
    assert_eq!(error.retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test(start_paused = true)]
async fn the_only_deployment_of_a_group_never_cools() {
    let router = ordered("{allowed_fails: 0}");
    let calls = Mutex::new(Vec::new());
    for _ in 0..3 {
        let _ = run(&router, "solo", &calls, |_| Err(upstream(429))).await;
    }
    assert_eq!(router.select("solo", &RequestOptions::default()).unwrap().deployment.id, "e");
}

#[tokio::test(start_paused = true)]
async fn fallbacks_follow_the_kind_of_failure() {
    let router = ordered("{fallbacks: [{gp: [backup]}], context_window_fallbacks: [{gp: [long]}]}");
    let calls = Mutex::new(Vec::new());
    let routed =
        run(&router, "gp", &calls, |id| if id == "c" { Ok(()) } else { Err(upstream(503)) }).await.unwrap();
    assert_eq!((routed.deployment.id.as_str(), routed.fallbacks), ("c", 1));

    let too_long = || {
        let mut error = upstream(400);
        error.upstream_code = Some("context_length_exceeded".into());
        error
    };
    calls.lock().unwrap().clear();
    let routed =
        run(&router, "gp", &calls, |id| if id == "d" { Ok(()) } else { Err(too_long()) }).await.unwrap();
    assert_eq!(routed.deployment.id, "d");
    assert_eq!(calls.lock().unwrap().len(), 2, "no retry of a context-window error, then its own fallback");
}

#[tokio::test(start_paused = true)]
async fn a_request_can_bring_its_own_fallbacks_retries_and_a_forced_failure() {
    let router = ordered("{fallbacks: [{gp: [backup]}]}");
    let calls = Mutex::new(Vec::new());
    let options = RequestOptions {
        fallbacks: Some(vec!["long".into()]),
        mock_testing_fallbacks: true,
        ..RequestOptions::default()
    };
    let routed = run_with(&router, "gp", &options, &calls, |_| Ok(())).await.unwrap();
    assert_eq!(routed.deployment.id, "d", "the request's fallbacks replace the configured ones");
    assert_eq!(*calls.lock().unwrap(), ["d"], "the forced failure calls nothing");

    calls.lock().unwrap().clear();
    let options = RequestOptions { num_retries: Some(1), ..RequestOptions::default() };
    let routed =
        run_with(&router, "gp", &options, &calls, |id| if id == "a" { Err(upstream(503)) } else { Ok(()) })
            .await
            .unwrap();
    assert_eq!((routed.deployment.id.as_str(), routed.retries), ("b", 1));
}

#[tokio::test(start_paused = true)]
async fn max_fallbacks_bounds_the_chain_and_the_last_error_is_returned() {
    let router = ordered("{default_fallbacks: [backup, long, solo], max_fallbacks: 2}");
    let calls = Mutex::new(Vec::new());
    let error =
        run(&router, "gp", &calls, |id| Err(upstream(if id == "d" { 502 } else { 503 }))).await.unwrap_err();
    assert_eq!(*calls.lock().unwrap(), ["a", "c", "d"]);
    assert_eq!(error.status(), 502);
}

#[tokio::test(start_paused = true)]
async fn deployment_retries_only_retryable_errors_up_to_the_limit() {
    let calls = AtomicU32::new(0);
    let result: Result<(), _> = with_retries(2, || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err(upstream(503))
    })
    .await;
    assert_eq!(result.unwrap_err().status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    calls.store(0, Ordering::SeqCst);
    let result: Result<(), _> = with_retries(2, || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err(GatewayError::bad_request("no"))
    })
    .await;
    assert!(result.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn rpm_limits_move_traffic_and_then_refuse_it() {
    let router = router(
        "model_list:
  - {model_name: gp, litellm_params: {model: fake/a, rpm: 2, order: 1}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b, order: 2}, model_info: {id: b}}
  - {model_name: solo, litellm_params: {model: fake/s, rpm: 1}, model_info: {id: s}}
",
    );
    let picks: Vec<String> = (0..3)
        .map(|_| router.select("gp", &RequestOptions::default()).unwrap().deployment.id.clone())
        .collect();
    assert_eq!(picks, ["a", "a", "b"], "a takes two a minute, then b serves");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        router.select("gp", &RequestOptions::default()).unwrap().deployment.id,
        "a",
        "a new minute, a new allowance"
    );

    assert_eq!(router.select("solo", &RequestOptions::default()).unwrap().deployment.id, "s");
    tokio::time::advance(Duration::from_secs(15)).await;
    let error = GatewayError::from(router.select("solo", &RequestOptions::default()).unwrap_err());
    assert_eq!(error.status(), 429);
    assert!(error.message.contains("Try again in 45 seconds"), "{}", error.message);
}

#[test]
fn retry_delay_grows_and_is_capped() {
    assert!(retry_delay(1) >= Duration::from_millis(100));
    assert!(retry_delay(1) <= Duration::from_millis(125));
    assert!(retry_delay(3) >= Duration::from_millis(400));
    assert!(retry_delay(30) <= Duration::from_millis(2_500));
}
