//! End-to-end: scripted traffic through the gateway, then a scrape of `/metrics` with the
//! exact counts asserted, under LiteLLM's metric names.

mod support;

use serde_json::json;
use support::*;
use tollgate_mock_upstream::{Behavior, MockUpstream};

fn hello(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
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

    // Open by default, as LiteLLM's is.
    let scrape = send(get(&gateway.url("/metrics"), None)).await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.header("content-type").starts_with("application/openmetrics-text"));
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    let deployment = r#"litellm_model_name="openai/mock-model""#;
    for line in [
        r#"litellm_proxy_total_requests_metric_total{requested_model="general-purpose",status_code="200"} 2"#,
        r#"litellm_proxy_total_requests_metric_total{requested_model="general-purpose",status_code="503"} 1"#,
        r#"litellm_proxy_total_requests_metric_total{requested_model="unknown",status_code="400"} 1"#,
        r#"litellm_proxy_failed_requests_metric_total{requested_model="general-purpose",exception_status="503"} 1"#,
        r#"litellm_request_total_latency_metric_count{requested_model="general-purpose"} 3"#,
        r#"litellm_llm_api_latency_metric_count{requested_model="general-purpose"} 3"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let success = text
        .lines()
        .find(|l| l.starts_with("litellm_deployment_success_responses_total") && l.contains(deployment))
        .unwrap_or_else(|| panic!("no deployment success line in\n{text}"));
    assert!(success.ends_with(" 2"), "{success}");
    let failure = text
        .lines()
        .find(|l| l.starts_with("litellm_deployment_failure_responses_total") && l.contains(deployment))
        .unwrap_or_else(|| panic!("no deployment failure line in\n{text}"));
    assert!(failure.contains(r#"exception_status="503""#) && failure.ends_with(" 1"), "{failure}");
    assert!(!text.contains("made-up-model-name"), "client strings never become labels");
}

#[tokio::test]
async fn metrics_can_require_a_key() {
    let mock = MockUpstream::start().await;
    let yaml =
        mock_config(&mock.base_url(), "") + "litellm_settings: {require_auth_for_metrics_endpoint: true}\n";
    let gateway = TestGateway::start(&yaml).await;
    assert_eq!(send(get(&gateway.url("/metrics"), None)).await.status, 401);
    assert_eq!(send(get(&gateway.url("/metrics"), Some(MASTER_KEY))).await.status, 200);
}
