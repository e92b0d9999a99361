//! Health endpoints: `/health/liveliness` (the process answers), `/health/readiness` (it
//! can take traffic), both unauthenticated for probes; and `/health`, which calls every
//! deployment with a one-token request and reports which answered, as LiteLLM's does.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use tollgate_domain::provider_catalog::WireFormat;
use tollgate_domain::{Deployment, Endpoint, GatewayError};
use tollgate_providers::UpstreamRequest;

use crate::{App, ResponseBody, VERSION, json_response};

/// The longest one deployment's health call may take, whatever its own timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

pub fn liveliness() -> Response<ResponseBody> {
    json_response(StatusCode::OK, Bytes::from_static(b"\"I'm alive!\""))
}

/// The longest readiness waits on the database before calling it unreachable.
const DATABASE_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Ready whatever the database and Redis do: requests are served from the key cache and
/// spend is buffered while either is away, so taking every replica out of its Service
/// during a database outage would turn a degraded gateway into a dead one. The body says
/// what is connected (LiteLLM's `db` field), for dashboards and people.
pub async fn readiness(app: &App) -> Response<ResponseBody> {
    let db = match &app.tenancy {
        None => "Not connected".to_owned(),
        Some(tenancy) => match tokio::time::timeout(DATABASE_PING_TIMEOUT, tenancy.store.ping()).await {
            Ok(Ok(())) => "connected".to_owned(),
            Ok(Err(error)) => format!("unreachable: {error}"),
            Err(_) => format!("unreachable: no answer within {DATABASE_PING_TIMEOUT:?}"),
        },
    };
    let mut body = json!({
        "status": "healthy",
        "db": db,
        "cache": null,
        "litellm_version": VERSION,
        "success_callbacks": [],
    });
    // A detail, not a condition: without Redis requests are served, limits per replica.
    if let Some(global) = app.tenancy.as_ref().and_then(|tenancy| tenancy.limits.redis_status()) {
        body["redis"] = json!(if global { "connected" } else { "unavailable: rate limits are per replica" });
    }
    json_response(StatusCode::OK, body.to_string())
}

pub async fn check_all(app: &App) -> Response<ResponseBody> {
    let checks = app.router.deployments().map(|d| async move { (d, check_one(app, d).await) });
    let results = futures_util::future::join_all(checks).await;
    let mut healthy = Vec::new();
    let mut unhealthy = Vec::new();
    for (deployment, result) in results {
        let mut entry = json!({"model": deployment.litellm_model(), "model_name": deployment.model_name, "model_id": deployment.id});
        if let Some(api_base) = &deployment.api_base {
            entry["api_base"] = json!(api_base);
        }
        match result {
            Ok(()) => healthy.push(entry),
            Err(error) => {
                entry["error"] = json!(error.message);
                unhealthy.push(entry);
            }
        }
    }
    let body = json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
    });
    json_response(StatusCode::OK, body.to_string())
}

/// Embedding models are probed with an embedding, rerank models with a rerank, everything
/// else with a chat message. Without `model_info.mode` the name decides, and a provider that
/// serves no chat (Voyage, Jina) is probed with an embedding unless the name says rerank.
fn probe(deployment: &Deployment, upstream_model: &str) -> (Endpoint, Value) {
    let mode = deployment.model_info.get("mode").and_then(Value::as_str);
    let chatless = matches!(deployment.wire(), Some(WireFormat::Voyage | WireFormat::JinaAi));
    let is_embedding =
        mode == Some("embedding") || (mode.is_none() && (chatless || upstream_model.contains("embed")));
    let is_rerank = mode == Some("rerank") || (mode.is_none() && upstream_model.contains("rerank"));
    if is_rerank {
        (Endpoint::Rerank, json!({"model": upstream_model, "query": "ping", "documents": ["ping"]}))
    } else if is_embedding {
        (Endpoint::Embeddings, json!({"model": upstream_model, "input": "ping"}))
    } else {
        (
            Endpoint::ChatCompletions,
            json!({"model": upstream_model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}),
        )
    }
}

async fn check_one(app: &App, deployment: &Deployment) -> Result<(), GatewayError> {
    if deployment.upstream_model.contains('*') {
        return Err(GatewayError::bad_request(
            "wildcard deployments cannot be probed without a concrete model",
        ));
    }
    let provider = app.providers.for_deployment(deployment)?;
    let (endpoint, body) = probe(deployment, &deployment.upstream_model);
    let request =
        UpstreamRequest { endpoint, deployment, body: Bytes::from(body.to_string()), stream: false };
    tokio::time::timeout(CHECK_TIMEOUT, provider.call(request))
        .await
        .map_err(|_| GatewayError::new(tollgate_domain::ErrorKind::Timeout, "health check timed out"))??;
    Ok(())
}
