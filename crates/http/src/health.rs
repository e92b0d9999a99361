//! Health endpoints: `/health/liveliness` (the process answers), `/health/readiness` (it
//! can take traffic), both unauthenticated for probes; and `/health`, which calls every
//! deployment with a one-token request and reports which answered, as LiteLLM's does.
//!
//! With `background_health_checks`, [`run_background_checks`] makes those calls every
//! `health_check_interval` instead (a few at once), `/health` answers from the latest round,
//! and each result goes to the router (`Router::record_health_check`), which with
//! `enable_health_check_routing` takes a failing deployment out of rotation until it passes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use tollgate_domain::provider_catalog::WireFormat;
use tollgate_domain::{BackgroundHealthChecks, Deployment, Endpoint, GatewayError};
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
    if let Some(sync) = &app.router_sync {
        body["router_redis"] =
            json!(if sync.is_shared() { "connected" } else { "unavailable: routing state is per replica" });
    }
    json_response(StatusCode::OK, body.to_string())
}

/// The background checks' settings and the body of their latest round, shared by every
/// worker's `App`.
pub struct BackgroundChecks {
    settings: BackgroundHealthChecks,
    latest: Mutex<Option<Bytes>>,
}

impl std::fmt::Debug for BackgroundChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundChecks").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl BackgroundChecks {
    pub fn new(settings: BackgroundHealthChecks) -> Arc<Self> {
        Arc::new(Self { settings, latest: Mutex::new(None) })
    }

    /// The latest round's `/health` body; `None` before the first round ends.
    pub fn latest(&self) -> Option<Bytes> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Checks every deployment (but those with `model_info.disable_background_health_check`),
/// `concurrency` at a time, then waits `health_check_interval`, and again, until dropped.
/// Each round checks the model list in force when it starts (reloads included).
pub async fn run_background_checks(apps: Arc<crate::live::Apps>, checks: Arc<BackgroundChecks>) {
    let BackgroundHealthChecks { interval, concurrency } = checks.settings;
    tracing::info!(interval_secs = interval.as_secs_f64(), concurrency, "background health checks on");
    loop {
        let app = apps.current();
        let deployments: Vec<Arc<Deployment>> = app
            .router
            .deployments()
            .filter(|d| {
                d.model_info.get("disable_background_health_check").and_then(Value::as_bool) != Some(true)
            })
            .cloned()
            .collect();
        // Owned items: a stream of borrowed ones would not be `Send` for the spawner.
        let results: Vec<(Arc<Deployment>, Result<(), GatewayError>)> =
            futures_util::stream::iter(deployments)
                .map(|deployment| {
                    let app = Arc::clone(&app);
                    async move {
                        let result = check_one(&app, &deployment).await;
                        (deployment, result)
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        for (deployment, result) in &results {
            // A wildcard is not probed at all: nothing to learn about it.
            if !deployment.upstream_model.contains('*') {
                app.router.record_health_check(&deployment.id, result.as_ref().map(|_| ()));
            }
        }
        let body = report(results.iter().map(|(d, result)| (d, result.as_ref().map(|_| ()))));
        let unhealthy = body["unhealthy_count"].as_u64().unwrap_or(0);
        tracing::debug!(
            healthy = body["healthy_count"].as_u64().unwrap_or(0),
            unhealthy,
            "background health checks done"
        );
        *checks.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(Bytes::from(body.to_string()));
        tokio::time::sleep(interval).await;
    }
}

pub async fn check_all(app: &App) -> Response<ResponseBody> {
    if let Some(checks) = &app.background_checks {
        // As LiteLLM does: the latest round, without calling anything (empty before the first).
        let body = checks.latest().unwrap_or_else(|| {
            Bytes::from(
                report(std::iter::empty::<(&Arc<Deployment>, Result<(), &GatewayError>)>()).to_string(),
            )
        });
        return json_response(StatusCode::OK, body);
    }
    let checks = app.router.deployments().map(|d| async move { (d, check_one(app, d).await) });
    let results = futures_util::future::join_all(checks).await;
    let body = report(results.iter().map(|(d, result)| (*d, result.as_ref().map(|_| ()))));
    json_response(StatusCode::OK, body.to_string())
}

/// LiteLLM's `/health` body for these results.
fn report<'a>(results: impl Iterator<Item = (&'a Arc<Deployment>, Result<(), &'a GatewayError>)>) -> Value {
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
    json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
    })
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
