//! Limits and policies: `tpm`, `retry_policy`, `model_group_retry_policy`,
//! `allowed_fails_policy`, `retry_after`, and the pre-call context-window check.

use std::sync::Mutex;

use tollgate_domain::pricing::Usage;

use super::*;
use crate::tests::{ordered, router, run, run_with, upstream};

fn options() -> RequestOptions {
    RequestOptions::default()
}

/// Routes `model` with every call succeeding and finishing with `tokens` used.
async fn spend(router: &Router, model: &str, tokens: u64) -> String {
    let routed = router.route(model, &options(), |_| async { Ok(()) }).await.unwrap();
    let usage = Usage { prompt_tokens: tokens, ..Usage::default() };
    let id = routed.deployment.id.clone();
    routed.ticket.finish(Some(&usage));
    id
}

#[tokio::test(start_paused = true)]
async fn tpm_limits_move_traffic_once_the_minute_is_spent_and_then_refuse_it() {
    let router = router(
        "model_list:
  - {model_name: gp, litellm_params: {model: fake/a, tpm: 100, order: 1}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b, order: 2}, model_info: {id: b}}
  - {model_name: solo, litellm_params: {model: fake/s, tpm: 50}, model_info: {id: s}}
",
    );
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(spend(&router, "gp", 40).await);
    }
    assert_eq!(served, ["a", "a", "a", "b"], "a used 120 of its 100 tokens after three calls");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(spend(&router, "gp", 40).await, "a", "a new minute, a new allowance");

    assert_eq!(spend(&router, "solo", 50).await, "s");
    tokio::time::advance(Duration::from_secs(20)).await;
    let error = GatewayError::from(router.select("solo", &options()).unwrap_err());
    assert_eq!(error.status(), 429);
    assert!(error.message.contains("Try again in 40 seconds"), "{}", error.message);
}

#[tokio::test(start_paused = true)]
async fn a_counted_prompt_must_fit_in_the_tpm_left() {
    let router = router(
        "model_list:
  - {model_name: gp, litellm_params: {model: fake/a, tpm: 100, order: 1}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b, order: 2}, model_info: {id: b}}
router_settings: {enable_pre_call_checks: true}
",
    );
    spend(&router, "gp", 70).await;
    let small = RequestOptions { prompt_tokens: Some(30), ..options() };
    let large = RequestOptions { prompt_tokens: Some(31), ..options() };
    assert_eq!(router.select("gp", &small).unwrap().deployment.id, "a");
    assert_eq!(router.select("gp", &large).unwrap().deployment.id, "b", "70 + 31 is over a's 100");
}

#[tokio::test(start_paused = true)]
async fn retry_policy_sets_retries_per_kind_of_failure() {
    let router = ordered(
        "{num_retries: 3, retry_policy: {RateLimitErrorRetries: 0, BadRequestErrorRetries: 1, AuthenticationErrorRetries: 1}}",
    );
    let calls = Mutex::new(Vec::new());
    let error = run(&router, "gp", &calls, |_| Err(upstream(429))).await.unwrap_err();
    assert_eq!((error.status(), calls.lock().unwrap().len()), (429, 1), "no retry for a 429");
    tokio::time::advance(Duration::from_secs(6)).await;

    calls.lock().unwrap().clear();
    let routed =
        run(&router, "gp", &calls, |id| if id == "a" { Err(upstream(400)) } else { Ok(()) }).await.unwrap();
    assert_eq!(routed.deployment.id, "b", "a 400 is retried once, on the other deployment");
    assert_eq!(routed.retries, 1);

    calls.lock().unwrap().clear();
    let error = run(&router, "gp", &calls, |_| Err(upstream(401))).await.unwrap_err();
    assert_eq!((error.status(), calls.lock().unwrap().len()), (401, 2), "one retry of a 401");

    calls.lock().unwrap().clear();
    let _ = run(&router, "solo", &calls, |_| Err(upstream(503))).await;
    assert_eq!(calls.lock().unwrap().len(), 4, "a kind the policy does not name keeps num_retries");

    // A per-request num_retries does not override the policy for the kinds it names.
    calls.lock().unwrap().clear();
    let five = RequestOptions { num_retries: Some(5), ..options() };
    let _ = run_with(&router, "solo", &five, &calls, |_| Err(upstream(429))).await;
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_group_retry_policy_replaces_the_global_one_for_that_group() {
    let router = ordered(
        "{num_retries: 0, retry_policy: {InternalServerErrorRetries: 2}, model_group_retry_policy: {solo: {TimeoutErrorRetries: 1}}}",
    );
    let calls = Mutex::new(Vec::new());
    let _ = run(&router, "backup", &calls, |_| Err(upstream(500))).await;
    assert_eq!(calls.lock().unwrap().len(), 3, "the global policy: two retries of a 500");

    calls.lock().unwrap().clear();
    let _ = run(&router, "solo", &calls, |_| Err(upstream(500))).await;
    assert_eq!(calls.lock().unwrap().len(), 1, "solo's own policy names no 500: num_retries (0)");

    calls.lock().unwrap().clear();
    let _ = run(&router, "solo", &calls, |_| Err(GatewayError::new(ErrorKind::Timeout, "slow"))).await;
    assert_eq!(calls.lock().unwrap().len(), 2, "solo's policy: one retry of a timeout");
}

#[tokio::test(start_paused = true)]
async fn context_window_errors_are_not_retried_even_when_bad_requests_are() {
    let router = ordered("{retry_policy: {BadRequestErrorRetries: 2}}");
    let calls = Mutex::new(Vec::new());
    let mut too_long = upstream(400);
    too_long.upstream_code = Some("context_length_exceeded".into());
    let _ = run(&router, "gp", &calls, |_| Err(too_long.clone())).await;
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn allowed_fails_policy_sets_the_allowance_per_kind_of_failure() {
    let router = ordered(
        "{cooldown_time: 30, allowed_fails: 3, allowed_fails_policy: {RateLimitErrorAllowedFails: 2, InternalServerErrorAllowedFails: 0, BadRequestErrorAllowedFails: 1}}",
    );
    let calls = Mutex::new(Vec::new());
    let a_fails = |status| move |id: &str| if id == "a" { Err(upstream(status)) } else { Ok(()) };
    for _ in 0..2 {
        let _ = run(&router, "gp", &calls, a_fails(429)).await;
        assert_eq!(router.select("gp", &options()).unwrap().deployment.id, "a", "429s allowed: no cooldown");
    }
    let _ = run(&router, "gp", &calls, a_fails(429)).await;
    assert_eq!(router.select("gp", &options()).unwrap().deployment.id, "b", "the third 429 is one too many");

    let router = ordered("{cooldown_time: 30, allowed_fails_policy: {InternalServerErrorAllowedFails: 0}}");
    let _ = run(&router, "gp", &calls, a_fails(500)).await;
    assert_eq!(router.select("gp", &options()).unwrap().deployment.id, "b", "no 500 allowed");

    // A kind the policy names counts even when the router would not blame the deployment.
    let router = ordered("{cooldown_time: 30, allowed_fails_policy: {BadRequestErrorAllowedFails: 1}}");
    let _ = run(&router, "gp", &calls, a_fails(400)).await;
    assert_eq!(router.select("gp", &options()).unwrap().deployment.id, "a", "one 400 is allowed");
    let _ = run(&router, "gp", &calls, a_fails(400)).await;
    assert_eq!(router.select("gp", &options()).unwrap().deployment.id, "b", "the second 400 cools a");

    // Other kinds share allowed_fails as before.
    let router = ordered(
        "{cooldown_time: 30, allowed_fails: 1, allowed_fails_policy: {RateLimitErrorAllowedFails: 9}}",
    );
    let _ = run(&router, "gp", &calls, a_fails(500)).await;
    assert_eq!(router.select("gp", &options()).unwrap().deployment.id, "a");
    let _ = run(&router, "gp", &calls, a_fails(503)).await;
    assert_eq!(router.select("gp", &options()).unwrap().deployment.id, "b");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_least_wait_before_a_retry() {
    let router = ordered("{num_retries: 1, retry_after: 3}");
    let calls = Mutex::new(Vec::new());
    let started = Instant::now();
    let routed =
        run(&router, "gp", &calls, |id| if id == "a" { Err(upstream(503)) } else { Ok(()) }).await.unwrap();
    assert_eq!(routed.deployment.id, "b");
    assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

    let quick = ordered("{num_retries: 1}");
    let started = Instant::now();
    let _ = run(&quick, "gp", &calls, |id| if id == "a" { Err(upstream(503)) } else { Ok(()) }).await;
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
}

/// Deployments with context windows of 1000 (`small`, by `model_info.max_input_tokens`),
/// 8000 (`big`, by `max_tokens`) and unknown (`other` group), with pre-call checks `on`.
fn windows(on: bool) -> Router {
    router(&format!(
        "model_list:
  - {{model_name: gp, litellm_params: {{model: fake/small, order: 1}}, model_info: {{id: small, max_input_tokens: 1000}}}}
  - {{model_name: gp, litellm_params: {{model: fake/big, order: 2}}, model_info: {{id: big, max_tokens: 8000}}}}
  - {{model_name: long, litellm_params: {{model: fake/long}}, model_info: {{id: long, max_input_tokens: 100000}}}}
  - {{model_name: tiny, litellm_params: {{model: fake/tiny}}, model_info: {{id: tiny, max_input_tokens: 10}}}}
router_settings: {{enable_pre_call_checks: {on}, context_window_fallbacks: [{{gp: [long]}}]}}
"
    ))
}

#[tokio::test(start_paused = true)]
async fn pre_call_checks_skip_deployments_too_small_for_the_prompt() {
    let router = windows(true);
    let prompt = |tokens| RequestOptions { prompt_tokens: Some(tokens), ..options() };
    assert_eq!(router.select("gp", &prompt(900)).unwrap().deployment.id, "small");
    assert_eq!(router.select("gp", &prompt(1001)).unwrap().deployment.id, "big");

    let error = GatewayError::from(router.select("gp", &prompt(9000)).unwrap_err());
    assert_eq!(error.status(), 400);
    assert_eq!(error.upstream_code.as_deref(), Some("context_length_exceeded"));
    assert!(error.message.contains("largest context window=8000"), "{}", error.message);

    // Through route: nothing in gp is called, and context_window_fallbacks take over.
    let calls = Mutex::new(Vec::new());
    let routed = run_with(&router, "gp", &prompt(9000), &calls, |_| Ok(())).await.unwrap();
    assert_eq!((routed.deployment.id.as_str(), routed.fallbacks), ("long", 1));
    assert_eq!(*calls.lock().unwrap(), ["long"]);

    // A lone deployment is checked too.
    let error = run_with(&router, "tiny", &prompt(11), &calls, |_| Ok(())).await.unwrap_err();
    assert_eq!(error.upstream_code.as_deref(), Some("context_length_exceeded"));
}

#[tokio::test(start_paused = true)]
async fn without_pre_call_checks_a_counted_prompt_changes_nothing() {
    let router = windows(false);
    let options = RequestOptions { prompt_tokens: Some(9000), ..options() };
    assert_eq!(router.select("gp", &options).unwrap().deployment.id, "small");
    assert!(!router.counts_prompt_tokens() && windows(true).counts_prompt_tokens());
}

/// `a` before `b` by `order`, with background health checks steering routing.
fn health_routed(general: &str, router_settings: &str) -> Router {
    router(&format!(
        "model_list:
  - {{model_name: gp, litellm_params: {{model: fake/a, order: 1}}, model_info: {{id: a}}}}
  - {{model_name: gp, litellm_params: {{model: fake/b, order: 2}}, model_info: {{id: b}}}}
general_settings: {{background_health_checks: true, health_check_interval: 10, {general}}}
router_settings: {router_settings}
"
    ))
}

fn first(router: &Router) -> String {
    router.select("gp", &options()).unwrap().deployment.id.clone()
}

#[tokio::test(start_paused = true)]
async fn a_failed_health_check_takes_a_deployment_out_until_one_passes() {
    let router = health_routed("enable_health_check_routing: true", "{}");
    router.record_health_check("a", Err(&upstream(500)));
    assert_eq!(first(&router), "b", "a failed its check");
    router.record_health_check("b", Err(&upstream(500)));
    assert_eq!(first(&router), "a", "with every deployment failing, the filter steps aside");
    router.record_health_check("b", Ok(()));
    assert_eq!(first(&router), "b");
    router.record_health_check("a", Ok(()));
    assert_eq!(first(&router), "a", "back in rotation");
    router.record_health_check("a", Err(&upstream(401)));
    tokio::time::advance(Duration::from_secs(19)).await;
    assert_eq!(first(&router), "b", "the staleness threshold (twice the interval) not passed");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(first(&router), "a", "no check for longer than that: the mark lapses");
}

#[tokio::test(start_paused = true)]
async fn health_checks_steer_nothing_unless_asked_and_transient_errors_can_be_ignored() {
    let passive = health_routed("", "{}");
    passive.record_health_check("a", Err(&upstream(500)));
    assert_eq!(first(&passive), "a", "enable_health_check_routing is off");

    let tolerant =
        health_routed("enable_health_check_routing: true, health_check_ignore_transient_errors: true", "{}");
    tolerant.record_health_check("a", Err(&upstream(429)));
    tolerant.record_health_check("a", Err(&GatewayError::new(ErrorKind::Timeout, "timed out")));
    assert_eq!(first(&tolerant), "a", "429s and timeouts are ignored");
    tolerant.record_health_check("a", Err(&upstream(503)));
    assert_eq!(first(&tolerant), "b");
}

#[tokio::test(start_paused = true)]
async fn with_an_allowed_fails_policy_failed_checks_count_towards_a_cooldown() {
    let router = health_routed(
        "enable_health_check_routing: true",
        "{cooldown_time: 60, allowed_fails_policy: {AuthenticationErrorAllowedFails: 1}}",
    );
    router.record_health_check("a", Err(&upstream(401)));
    assert_eq!(first(&router), "a", "one authentication failure is allowed");
    router.record_health_check("a", Err(&upstream(401)));
    assert_eq!(first(&router), "b", "the second cools a down");
    router.record_health_check("a", Ok(()));
    assert_eq!(first(&router), "b", "a passing check does not end a cooldown");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(first(&router), "a");
}
