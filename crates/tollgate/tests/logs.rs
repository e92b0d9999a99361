//! End-to-end: with `json_logs`, each request is one JSON log line with its id, key alias,
//! team, model group, deployment, status, latency, tokens and cost, and no secret appears
//! anywhere in the log.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::{Behavior, COMPLETION_TOKENS, MockUpstream, PROMPT_TOKENS};

/// Everything the subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// One thread: the gateway's tasks run where the test's subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn one_json_line_per_request_and_no_secrets() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:
  - model_name: general-purpose
    litellm_params: {{model: openai/mock-model, api_base: {}, api_key: {UPSTREAM_KEY}}}
    model_info: {{input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
litellm_settings: {{json_logs: true}}
general_settings: {{master_key: {MASTER_KEY}}}
",
        mock.base_url()
    );
    let gateway = TestGateway::start(&yaml).await;
    let team = send(post(
        &gateway.url("/team/new"),
        Some(MASTER_KEY),
        json!({"team_alias": "research"}).to_string(),
    ))
    .await
    .json();
    let key = send(post(
        &gateway.url("/key/generate"),
        Some(MASTER_KEY),
        json!({"key_alias": "svc", "team_id": team["team_id"]}).to_string(),
    ))
    .await
    .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"model": "general-purpose", "messages": [{"role": "user", "content": "hello"}]});
    let ok = send(post(&gateway.url("/v1/chat/completions"), Some(&key), body.to_string())).await;
    assert_eq!(ok.status, 200);
    mock.push(Behavior::Error { status: 503, body: "{}".into() });
    let failed = send(post(&gateway.url("/v1/chat/completions"), Some(&key), body.to_string())).await;
    assert_eq!(failed.status, 503);
    let unauthorized =
        send(post(&gateway.url("/v1/chat/completions"), Some("sk-not-a-key-123"), body.to_string())).await;
    assert_eq!(unauthorized.status, 401);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"))
        })
        .filter(|line: &Value| line["target"] == "tollgate::request")
        .collect();
    assert_eq!(lines.len(), 3, "one line per request:\n{text}");
    let first = &lines[0];
    assert_eq!(first["request_id"], ok.header("x-litellm-call-id"));
    assert_eq!(first["key_alias"], "svc");
    assert_eq!(first["team"], team["team_id"]);
    assert_eq!(first["model_group"], "general-purpose");
    assert_eq!(first["model"], "openai/mock-model");
    assert_eq!(first["deployment"], ok.header("x-litellm-model-id"));
    assert_eq!(first["status"], 200);
    assert_eq!(first["tokens_in"], PROMPT_TOKENS);
    assert_eq!(first["tokens_out"], COMPLETION_TOKENS);
    assert!((first["cost"].as_f64().unwrap() - 0.022).abs() < 1e-9, "{first}");
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(lines[1]["status"], 503);
    assert!(lines[1]["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", lines[1]);
    assert_eq!(lines[2]["status"], 401);
    for secret in [key.as_str(), MASTER_KEY, UPSTREAM_KEY, "sk-not-a-key-123"] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
}
