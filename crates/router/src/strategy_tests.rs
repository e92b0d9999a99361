//! The routing strategies, each driven by scripted calls and tokio's paused clock: what a
//! strategy sees is exactly what the calls reported through their tickets.

use std::collections::HashMap;

use tollgate_domain::pricing::Usage;

use super::*;
use crate::tests::{router, upstream};

/// Three deployments `a`, `b`, `c` in one group `gp`, with `params` added to each entry's
/// `litellm_params` (by id) and these router settings.
fn three(params: [&str; 3], settings: &str) -> Router {
    router(&format!(
        "model_list:
  - {{model_name: gp, litellm_params: {{model: fake/a, {}}}, model_info: {{id: a}}}}
  - {{model_name: gp, litellm_params: {{model: fake/b, {}}}, model_info: {{id: b}}}}
  - {{model_name: gp, litellm_params: {{model: fake/c, {}}}, model_info: {{id: c}}}}
router_settings: {settings}
",
        params[0], params[1], params[2]
    ))
}

fn pick(router: &Router, options: &RequestOptions) -> String {
    router.select("gp", options).unwrap().deployment.id.clone()
}

/// Routes one request to `gp`; the deployment answers after `delay(id)`. Returns the routed
/// call with its ticket still open.
async fn call(
    router: &Router,
    options: &RequestOptions,
    delay: impl Fn(&str) -> Duration,
) -> Result<Routed<()>, GatewayError> {
    router
        .route("gp", options, |selection| {
            let delay = delay(&selection.deployment.id);
            async move {
                tokio::time::sleep(delay).await;
                Ok(())
            }
        })
        .await
}

fn usage(total: u64) -> Usage {
    Usage { prompt_tokens: total / 2, completion_tokens: total - total / 2, ..Usage::default() }
}

#[test]
fn the_weighted_shuffle_matches_its_weights() {
    let router = three(["weight: 1", "weight: 3", "weight: 6"], "{}");
    let picks = 20_000;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..picks {
        *seen.entry(pick(&router, &RequestOptions::default())).or_default() += 1;
    }
    for (id, weight) in [("a", 0.1), ("b", 0.3), ("c", 0.6)] {
        let share = f64::from(seen[id]) / f64::from(picks);
        // Binomial(20000, p): a standard deviation of at most 0.0035; 0.02 is over five.
        assert!((share - weight).abs() < 0.02, "{id} got {share}, its weight says {weight}");
    }
    // rpm stands in for a missing weight, as in LiteLLM.
    let by_rpm = three(["rpm: 100000", "rpm: 300000", "rpm: 600000"], "{}");
    let a = (0..10_000).filter(|_| pick(&by_rpm, &RequestOptions::default()) == "a").count();
    assert!((a as f64 / 10_000.0 - 0.1).abs() < 0.02, "a got {a} of 10000");
}

#[tokio::test(start_paused = true)]
async fn least_busy_sends_each_request_to_the_fewest_in_flight() {
    let router = three(["order: 1", "order: 1", "order: 1"], "{routing_strategy: least-busy}");
    let options = RequestOptions::default();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(call(&router, &options, |_| Duration::ZERO).await.unwrap());
    }
    let mut ids: Vec<&str> = open.iter().map(|r| r.deployment.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "b", "c"], "one each while all three are busy");
    let b = open.iter().position(|r| r.deployment.id == "b").unwrap();
    let finished = open.remove(b);
    finished.ticket.finish(None);
    for _ in 0..3 {
        assert_eq!(pick(&router, &options), "b", "b is the only one with nothing in flight");
    }
    // A failed attempt holds nothing once it has failed.
    let failed = router.route("gp", &options, |_| async { Err::<(), _>(upstream(400)) }).await;
    assert_eq!(failed.unwrap_err().status(), 400);
    let in_flight = |id: &str| router.health().stats(id, 10).in_flight();
    assert_eq!((in_flight("a"), in_flight("b"), in_flight("c")), (1, 0, 1));
    drop(open);
    assert_eq!(
        (in_flight("a"), in_flight("c")),
        (0, 0),
        "dropping an unfinished ticket ends its time in flight"
    );
}

#[tokio::test(start_paused = true)]
async fn latency_based_routing_moves_traffic_off_a_slowed_deployment() {
    // A small buffer, so that equal delays measured a clock tick apart still tie.
    let router = three(
        ["order: 1", "order: 1", "order: 2"],
        "{routing_strategy: latency-based-routing, routing_strategy_args: {lowest_latency_buffer: 0.1}}",
    );
    let options = RequestOptions::default();
    let slow_a = std::sync::atomic::AtomicBool::new(false);
    let delay = |id: &str| match id {
        "a" if slow_a.load(std::sync::atomic::Ordering::Relaxed) => Duration::from_secs(3),
        _ => Duration::from_millis(200),
    };
    let mut served: HashMap<String, u32> = HashMap::new();
    for _ in 0..20 {
        let routed = call(&router, &options, delay).await.unwrap();
        *served.entry(routed.deployment.id.clone()).or_default() += 1;
        routed.ticket.finish(Some(&usage(20)));
    }
    assert!(served["a"] > 0 && served["b"] > 0, "equally fast, both serve: {served:?}");
    assert!(!served.contains_key("c"), "order still comes first");

    slow_a.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut after: HashMap<String, u32> = HashMap::new();
    for _ in 0..30 {
        let routed = call(&router, &options, delay).await.unwrap();
        *after.entry(routed.deployment.id.clone()).or_default() += 1;
        routed.ticket.finish(Some(&usage(20)));
    }
    assert!(after.get("a").copied().unwrap_or(0) <= 1, "a is left once it measured slow: {after:?}");
    assert!(after["b"] >= 29, "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn a_latency_buffer_shares_traffic_among_the_nearly_fastest() {
    for (buffer, slower_share) in [(0.5, true), (0.0, false)] {
        let router = three(
            ["order: 1", "order: 1", "order: 2"],
            &format!(
                "{{routing_strategy: latency-based-routing, routing_strategy_args: {{lowest_latency_buffer: {buffer}}}}}"
            ),
        );
        // a answers in 1.0 s, b in 1.3 s: within 50 % of the fastest, not within 0 %.
        let delay = |id: &str| Duration::from_millis(if id == "a" { 1000 } else { 1300 });
        let mut seen = HashMap::<String, u32>::new();
        for _ in 0..40 {
            let routed = call(&router, &RequestOptions::default(), delay).await.unwrap();
            *seen.entry(routed.deployment.id.clone()).or_default() += 1;
            routed.ticket.finish(None);
        }
        let b = seen.get("b").copied().unwrap_or(0);
        if slower_share {
            assert!(b >= 8, "b is within the buffer and shares the traffic: {seen:?}");
        } else {
            assert!(b <= 1, "b is measured once at most, then left: {seen:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn streams_rank_by_time_to_first_token_and_timeouts_count_as_very_slow() {
    let router = three(["order: 1", "order: 1", "order: 2"], "{routing_strategy: latency-based-routing}");
    let stream = RequestOptions { stream: true, ..RequestOptions::default() };
    let board = router.health();
    // a starts fast and finishes slowly; b starts slowly and finishes fast.
    for (id, first, end) in [("a", 100, 3000), ("b", 900, 1000)] {
        let stats = board.stats(id, 10);
        let mut ticket = Ticket::start(&stats, Tracking { latency: true, ..Tracking::default() }, true);
        tokio::time::advance(Duration::from_millis(first)).await;
        ticket.first_token();
        tokio::time::advance(Duration::from_millis(end - first)).await;
        ticket.finish(None);
    }
    for _ in 0..10 {
        assert_eq!(pick(&router, &stream), "a", "the first token comes sooner from a");
        assert_eq!(pick(&router, &RequestOptions::default()), "b", "whole answers come sooner from b");
    }
    let timeout = GatewayError::new(ErrorKind::Timeout, "timed out");
    let _ = router
        .route("gp", &stream, |s| {
            let result = if s.deployment.id == "a" { Err(timeout.clone()) } else { Ok(()) };
            async move { result }
        })
        .await;
    assert_eq!(pick(&router, &stream), "b", "a timed out: it counts as 1000 s slow");
}

#[tokio::test(start_paused = true)]
async fn usage_based_routing_prefers_the_fewest_tokens_this_minute_within_limits() {
    let router = three(
        ["tpm: 1000, order: 1", "tpm: 1000, rpm: 2, order: 1", "order: 2"],
        "{routing_strategy: usage-based-routing-v2}",
    );
    let options = RequestOptions::default();
    let first = call(&router, &options, |_| Duration::ZERO).await.unwrap();
    let (used, other) = if first.deployment.id == "a" { ("a", "b") } else { ("b", "a") };
    first.ticket.finish(Some(&usage(300)));
    let second = call(&router, &options, |_| Duration::ZERO).await.unwrap();
    assert_eq!(second.deployment.id, other, "{used} used 300 tokens this minute, {other} none");
    second.ticket.finish(Some(&usage(500)));
    assert_eq!(pick(&router, &options), used, "now {used} has used fewer");

    // b takes two requests a minute: whoever has fewer tokens, b is out once it had two.
    let router = three(
        ["tpm: 1000, order: 1", "rpm: 2, tpm: 1000, order: 1", "order: 2"],
        "{routing_strategy: usage-based-routing-v2}",
    );
    let mut b = 0;
    for _ in 0..6 {
        let routed = call(&router, &options, |_| Duration::ZERO).await.unwrap();
        b += u32::from(routed.deployment.id == "b");
        routed.ticket.finish(Some(&usage(10)));
    }
    assert_eq!(b, 2);
}

#[tokio::test(start_paused = true)]
async fn cost_based_routing_takes_the_cheapest_available_price() {
    let router = three(
        [
            "input_cost_per_token: 0.000001, output_cost_per_token: 0.000002",
            "input_cost_per_token: 0.0000001, output_cost_per_token: 0.0000004",
            "order: 1",
        ],
        "{routing_strategy: cost-based-routing, cooldown_time: 30}",
    );
    // c is first by order; a and b come after it only when it is gone.
    assert_eq!(pick(&router, &RequestOptions::default()), "c");
    let unordered = three(
        [
            "input_cost_per_token: 0.000001, output_cost_per_token: 0.000002",
            "input_cost_per_token: 0.0000001, output_cost_per_token: 0.0000004",
            "weight: 100",
        ],
        "{routing_strategy: cost-based-routing, cooldown_time: 30}",
    );
    for _ in 0..10 {
        assert_eq!(pick(&unordered, &RequestOptions::default()), "b", "b is the cheapest; c has no price");
    }
    let _ = unordered
        .route("gp", &RequestOptions::default(), |s| {
            let result = if s.deployment.id == "b" { Err(upstream(429)) } else { Ok(()) };
            async move { result }
        })
        .await;
    assert_eq!(pick(&unordered, &RequestOptions::default()), "a", "b cools down: a is next cheapest");
}
