//! End-to-end: `azure/` deployments through the gateway to the mock's Azure OpenAI data
//! plane, with an api-key and with Entra ID client credentials.

mod support;

use serde_json::json;
use support::*;
use tollgate_mock_upstream::MockUpstream;

fn hello() -> serde_json::Value {
    json!({"model": "azure-4o", "messages": [{"role": "user", "content": "hello"}]})
}

/// The mock serves Azure's paths at its root, so the Azure resource URL is its address.
fn resource(mock: &MockUpstream) -> String {
    format!("http://{}", mock.addr())
}

#[tokio::test]
async fn api_key_deployment_uses_azure_urls() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:
  - model_name: azure-4o
    litellm_params: {{model: azure/prod-gpt-4o, api_base: '{}/', api_key: az-secret-key}}
  - model_name: azure-embed
    litellm_params: {{model: azure/prod-embed, api_base: '{}', api_key: az-secret-key, api_version: 2024-06-01}}
",
        resource(&mock),
        resource(&mock)
    );
    let gateway = TestGateway::start(&yaml).await;

    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["model"], "azure-4o");
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/openai/deployments/prod-gpt-4o/chat/completions");
    assert_eq!(sent.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(sent.headers["api-key"], "az-secret-key");
    assert!(!sent.headers.contains_key("authorization"));

    let mut stream = hello();
    stream["stream"] = json!(true);
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, stream.to_string())).await;
    assert_eq!(reply.events().last().unwrap(), "[DONE]");

    let reply = send(post(
        &gateway.url("/v1/embeddings"),
        None,
        json!({"model": "azure-embed", "input": "x"}).to_string(),
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let sent = &mock.requests()[2];
    assert_eq!(sent.path, "/openai/deployments/prod-embed/embeddings");
    assert_eq!(sent.query.as_deref(), Some("api-version=2024-06-01"));
}

fn entra_config(mock: &MockUpstream) -> String {
    format!(
        "model_list:
  - model_name: azure-4o
    litellm_params:
      model: azure/prod-gpt-4o
      api_base: {}
      tenant_id: my-tenant
      client_id: my-client
      client_secret: os.environ/AZURE_CLIENT_SECRET
environment_variables:
  AZURE_AUTHORITY_HOST: {}
  AZURE_CLIENT_SECRET: entra-secret-value
",
        resource(mock),
        resource(mock)
    )
}

#[tokio::test]
async fn entra_tokens_are_fetched_once_and_reused() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&entra_config(&mock)).await;
    for _ in 0..3 {
        let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    assert_eq!(mock.tokens_issued(), 1, "a valid token is reused");
    let requests = mock.requests();
    let token_request =
        requests.iter().find(|r| r.path == "/my-tenant/oauth2/v2.0/token").expect("token fetched");
    let form = String::from_utf8_lossy(&token_request.body);
    assert!(form.contains("grant_type=client_credentials") && form.contains("client_id=my-client"), "{form}");
    assert!(form.contains("scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"), "{form}");
    let calls: Vec<_> = requests.iter().filter(|r| r.path.ends_with("/chat/completions")).collect();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|r| r.headers["authorization"] == "Bearer mock-entra-token-1"));
}

#[tokio::test]
async fn entra_tokens_near_expiry_are_renewed() {
    let mock = MockUpstream::start().await;
    // A lifetime shorter than the renewal margin: every request needs a fresh token.
    mock.set_token_lifetime(60);
    let gateway = TestGateway::start(&entra_config(&mock)).await;
    for _ in 0..2 {
        assert_eq!(
            send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await.status,
            200
        );
    }
    assert_eq!(mock.tokens_issued(), 2);
}

#[tokio::test]
async fn entra_failure_is_an_authentication_error() {
    let mock = MockUpstream::start().await;
    let yaml = entra_config(&mock).replace("client_id: my-client", "client_id: ''");
    // An empty client_id falls back to AZURE_CLIENT_ID, which is not set: config error.
    assert!(tollgate::GatewayConfig::from_yaml(&yaml, &std::collections::HashMap::new()).is_err());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let yaml = entra_config(&mock).replace(
        &format!("AZURE_AUTHORITY_HOST: {}", resource(&mock)),
        &format!("AZURE_AUTHORITY_HOST: {dead}"),
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply = send(post(&gateway.url("/v1/chat/completions"), None, hello().to_string())).await;
    let error = assert_error(&reply, 401);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("could not get an Entra ID token"), "{message}");
    assert!(!message.contains("entra-secret-value"));
    assert!(mock.requests().is_empty(), "no call without a token");
}
