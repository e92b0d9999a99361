//! Tollgate's HTTP surface: one hyper service, one route table.
//!
//! Endpoints (each OpenAI route also answers without the `/v1` prefix):
//!
//! | method | path                      | auth | handler                         |
//! |--------|---------------------------|------|---------------------------------|
//! | POST   | /v1/chat/completions      | yes  | [`proxy`], chat                 |
//! | POST   | /v1/completions           | yes  | [`proxy`], legacy completions   |
//! | POST   | /v1/embeddings            | yes  | [`proxy`], embeddings           |
//! | POST   | /v1/rerank, /v2/rerank    | yes  | [`proxy`], LiteLLM's rerank     |
//! | POST   | /v1/messages              | yes  | [`messages`], Anthropic's API   |
//! | POST   | /v1/messages/count_tokens | yes  | [`count_tokens`], Anthropic's   |
//! | POST   | /utils/token_counter      | yes  | [`count_tokens`], LiteLLM's     |
//! | GET    | /v1/models                | yes  | [`models`], the aliases         |
//! | GET    | /model/info, /v1/model/info | yes | [`models`], deployments       |
//! | GET    | /model_group/info         | yes  | [`models`], groups              |
//! | GET    | /health/liveliness        | no   | [`health`], process is up       |
//! | GET    | /health/readiness         | no   | [`health`], ready for traffic   |
//! | GET    | /health                   | yes  | [`health`], probes each model   |
//! | GET    | /metrics                  | opt. | [`metrics`], Prometheus text    |
//! | GET    | /cache/ping               | admin | [`cache`], cache health        |
//! | POST   | /cache/delete, /cache/flushall | admin | [`cache`], remove entries |
//! | GET    | /guardrails/list          | yes  | [`guardrails`], configured ones |
//! | POST   | /guardrails/apply_guardrail | yes | [`guardrails`], run one on a text |
//! | any    | /key/*, /user/*, /team/*, /organization/*, /customer/*, /budget/* | yes | [`management`] |
//! | POST   | /model/new, /model/update, /model/delete; PATCH /model/{id}/update | admin | [`management`], database models |
//!
//! The layers a request passes, outermost first: panic guard ([`App::serve`]), route
//! match, authentication ([`auth`]), handler. Every failure becomes an OpenAI-shaped body
//! in exactly one place, [`errors::error_response`].

pub mod alerts;
pub mod auth;
pub mod cache;
pub mod count_tokens;
pub mod errors;
mod estimate;
pub mod guardrails;
pub mod health;
pub mod live;
pub mod management;
pub mod messages;
pub mod metrics;
pub mod models;
mod observe;
pub mod proxy;
mod relay;
pub mod router_sync;
mod spend;
pub mod stored_models;
pub mod telemetry;
pub mod tenancy;
pub mod watch;

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tollgate_domain::{Endpoint, ErrorKind, GatewayConfig, GatewayError, Secret};
use tollgate_providers::{HttpClient, Providers};
use tollgate_router::{HealthBoard, Router};

use crate::metrics::Metrics;
use crate::tenancy::{Access, Permit, Tenancy};

/// The error type of request bodies the gateway can read.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway writes. It never fails: a stream that breaks
/// upstream ends with an error event instead.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// Tollgate's version, sent as `x-litellm-version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything a request needs, shared by all connections.
pub struct App {
    pub router: Router,
    pub providers: Providers,
    pub master_key: Option<Secret>,
    pub metrics: Arc<Metrics>,
    /// Whether `/metrics` asks for a key (`require_auth_for_metrics_endpoint`).
    pub metrics_require_auth: bool,
    /// Virtual keys, when the gateway has a master key and a database.
    pub tenancy: Option<Arc<Tenancy>>,
    /// The response cache (`litellm_settings.cache`); `None` when caching is off.
    pub cache: Option<Arc<cache::ResponseCache>>,
    /// The background health checks' latest results (`background_health_checks`).
    pub background_checks: Option<Arc<health::BackgroundChecks>>,
    /// The router's board shared with the other replicas through Redis, when there is one.
    pub router_sync: Option<Arc<router_sync::RouterSync>>,
    /// Traces (`callbacks: ["otel"]`, Langfuse); `None` when off.
    pub tracing: Option<Arc<telemetry::Tracing>>,
    /// Slack and webhook alerts (`general_settings.alerting`); `None` when off.
    pub alerts: Option<Arc<alerts::Alerts>>,
    /// Whether each request's log line is written at INFO (with `json_logs`) or DEBUG.
    pub request_log: bool,
    /// The models in the database (`store_model_in_db`), for `/model/new` and the like.
    pub stored_models: Option<Arc<stored_models::StoredModels>>,
    /// The [`live::Snapshot`] this `App` was built from (0 outside [`live::Apps`]).
    pub generation: u64,
    /// The configured and registered guardrails; `None` when there are none.
    pub guardrails: Option<Arc<guardrails::Guardrails>>,
}

/// State every `App` of one process shares, whichever worker runs it.
#[derive(Clone, Default)]
pub struct Shared {
    /// Each deployment's cooldown, per-minute requests and tokens, requests in flight and
    /// recent latencies (the router's state).
    pub health: Arc<HealthBoard>,
    pub metrics: Arc<Metrics>,
    /// Virtual keys: one database pool, one key cache and one set of limit counters.
    pub tenancy: Option<Arc<Tenancy>>,
    /// The response cache: one in-process store (or Redis client) for every worker.
    pub cache: Option<Arc<cache::ResponseCache>>,
    /// What the background health checks found last, when they run.
    pub background_checks: Option<Arc<health::BackgroundChecks>>,
    /// Keeps `health` in step with the other replicas' boards through Redis.
    pub router_sync: Option<Arc<router_sync::RouterSync>>,
    /// One tracer (and its exporters' threads) for every worker.
    pub tracing: Option<Arc<telemetry::Tracing>>,
    pub alerts: Option<Arc<alerts::Alerts>>,
    /// The database's models, when `store_model_in_db` is on.
    pub stored_models: Option<Arc<stored_models::StoredModels>>,
    /// The guardrails, built once (webhook clients included) for every worker.
    pub guardrails: Option<Arc<guardrails::Guardrails>>,
}

enum Route {
    Proxy(Endpoint),
    Messages,
    CountTokens,
    TokenCounter,
    Models,
    ModelInfo,
    ModelGroupInfo,
    Liveliness,
    Readiness,
    Health,
    Metrics,
    Management,
    CachePing,
    CacheDelete,
    CacheFlushAll,
    GuardrailsList,
    ApplyGuardrail,
}

impl Route {
    /// Matches a path (already without `/v1`) and method. `Err` carries the methods the
    /// path does accept, for a 405.
    fn recognize(method: &Method, path: &str) -> Option<Result<Self, &'static str>> {
        let (route, allowed) = match path {
            "/chat/completions" => (Self::Proxy(Endpoint::ChatCompletions), "POST"),
            "/completions" => (Self::Proxy(Endpoint::Completions), "POST"),
            "/embeddings" => (Self::Proxy(Endpoint::Embeddings), "POST"),
            "/rerank" | "/v2/rerank" => (Self::Proxy(Endpoint::Rerank), "POST"),
            "/messages" => (Self::Messages, "POST"),
            "/messages/count_tokens" => (Self::CountTokens, "POST"),
            "/utils/token_counter" => (Self::TokenCounter, "POST"),
            "/models" => (Self::Models, "GET"),
            "/model/info" => (Self::ModelInfo, "GET"),
            "/model_group/info" => (Self::ModelGroupInfo, "GET"),
            "/health/liveliness" | "/health/liveness" => (Self::Liveliness, "GET"),
            "/health/readiness" => (Self::Readiness, "GET"),
            "/health" => (Self::Health, "GET"),
            "/metrics" => (Self::Metrics, "GET"),
            "/cache/ping" => (Self::CachePing, "GET"),
            "/cache/delete" => (Self::CacheDelete, "POST"),
            "/cache/flushall" => (Self::CacheFlushAll, "POST"),
            "/guardrails/list" => (Self::GuardrailsList, "GET"),
            "/guardrails/apply_guardrail" => (Self::ApplyGuardrail, "POST"),
            // Each management handler checks its own methods.
            path if management::owns(path) => return Some(Ok(Self::Management)),
            _ => return None,
        };
        Some(if method.as_str() == allowed || (allowed == "GET" && *method == Method::HEAD) {
            Ok(route)
        } else {
            Err(allowed)
        })
    }

    fn needs_auth(&self, app: &App) -> bool {
        match self {
            Self::Liveliness | Self::Readiness => false,
            Self::Metrics => app.metrics_require_auth,
            _ => true,
        }
    }
}

/// `/v1/x` and `/x` are the same route; a trailing slash is ignored.
fn normalize(path: &str) -> &str {
    let path = path.strip_prefix("/v1").filter(|p| p.starts_with('/')).unwrap_or(path);
    if path.len() > 1 { path.trim_end_matches('/') } else { path }
}

impl App {
    pub fn new(config: GatewayConfig, client: HttpClient, shared: &Shared) -> Self {
        Self {
            router: Router::new(config.deployments, config.router, Arc::clone(&shared.health)),
            providers: Providers::new(client),
            master_key: config.master_key,
            metrics: Arc::clone(&shared.metrics),
            metrics_require_auth: config.metrics_require_auth,
            tenancy: shared.tenancy.clone(),
            cache: shared.cache.clone(),
            background_checks: shared.background_checks.clone(),
            router_sync: shared.router_sync.clone(),
            tracing: shared.tracing.clone(),
            alerts: shared.alerts.clone(),
            request_log: config.observability.json_logs,
            stored_models: shared.stored_models.clone(),
            generation: 0,
            guardrails: shared.guardrails.clone().filter(|guardrails| !guardrails.is_empty()),
        }
    }

    /// Who is calling: nobody in particular when no master key is set, else the master key
    /// or a virtual key the database knows.
    pub async fn access(&self, headers: &http::HeaderMap) -> Result<Access, GatewayError> {
        let Some(master_key) = &self.master_key else { return Ok(Access::Open) };
        let key = auth::presented_key(headers).ok_or_else(|| {
            GatewayError::new(
                ErrorKind::Authentication,
                "Authentication Error, No api key passed in. Send it as 'Authorization: Bearer <key>'.",
            )
        })?;
        if master_key.matches(key) {
            return Ok(Access::Master);
        }
        let invalid = || {
            GatewayError::new(ErrorKind::Authentication, "Authentication Error, Invalid API key provided.")
                .with_type("token_not_found_in_db")
                .with_param("key")
        };
        let Some(tenancy) = &self.tenancy else { return Err(invalid()) };
        tenancy.resolve(key).await?.map(Access::Key).ok_or_else(invalid)
    }

    /// The checks before an LLM call (see [`Tenancy::admit`]); the permit holds the
    /// caller's parallel-request slots.
    pub(crate) async fn admit(
        &self,
        access: &Access,
        model: &str,
        end_user: Option<&str>,
    ) -> Result<Option<Permit>, GatewayError> {
        let Some(tenancy) = &self.tenancy else { return Ok(None) };
        match access {
            Access::Key(principal) => {
                tenancy.admit(Some(principal), &self.router, model, end_user).await.map(Some)
            }
            _ if end_user.is_some() => tenancy.admit(None, &self.router, model, end_user).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Serves one request. Never fails and never unwinds: a panic inside becomes a 500
    /// with an OpenAI-shaped body, and the connection stays usable.
    pub async fn serve<B>(self: Arc<Self>, request: Request<B>) -> Result<Response<ResponseBody>, Infallible>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let response = AssertUnwindSafe(self.dispatch(request)).catch_unwind().await;
        Ok(response.unwrap_or_else(|_| {
            tracing::error!("request handler panicked");
            errors::error_response(
                &GatewayError::internal("internal error: the request handler failed"),
                None,
            )
        }))
    }

    async fn dispatch<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let route = match Route::recognize(request.method(), normalize(request.uri().path())) {
            Some(Ok(route)) => route,
            Some(Err(allowed)) => {
                let error = GatewayError::new(
                    ErrorKind::MethodNotAllowed,
                    format!(
                        "Method Not Allowed: {} {} (use {allowed})",
                        request.method(),
                        request.uri().path()
                    ),
                );
                let mut response = errors::error_response(&error, None);
                if let Ok(value) = http::HeaderValue::from_str(allowed) {
                    response.headers_mut().insert(http::header::ALLOW, value);
                }
                return response;
            }
            None => {
                let error = GatewayError::new(
                    ErrorKind::NotFound,
                    format!("Not Found: {} {}", request.method(), request.uri().path()),
                );
                return errors::error_response(&error, None);
            }
        };
        let route = match route {
            Route::Proxy(endpoint) => return self.llm(Some(endpoint), request).await,
            Route::Messages => return self.llm(None, request).await,
            other => other,
        };
        let access = if route.needs_auth(self) {
            match self.access(request.headers()).await {
                Ok(access) => access,
                Err(error) => {
                    return match route {
                        Route::Messages | Route::CountTokens => {
                            errors::anthropic_error_response(&error, None)
                        }
                        _ => errors::error_response(&error, None),
                    };
                }
            }
        } else {
            Access::Open
        };
        if let Access::Key(principal) = &access
            && let Err(error) = tenancy::route_allowed(principal, normalize(request.uri().path()))
        {
            return match route {
                Route::Messages | Route::CountTokens => errors::anthropic_error_response(&error, None),
                _ => errors::error_response(&error, None),
            };
        }
        match route {
            // Answered by `llm` above.
            Route::Proxy(_) | Route::Messages => {
                errors::error_response(&GatewayError::internal("unrouted"), None)
            }
            Route::CountTokens => count_tokens::messages(self, &access, request).await,
            Route::TokenCounter => count_tokens::token_counter(self, &access, request).await,
            Route::Management => {
                let path = normalize(request.uri().path()).to_owned();
                management::handle(self, &access, &path, request).await
            }
            Route::Models => models::list(self, &access),
            Route::ModelInfo => models::info(self, request.uri().query()),
            Route::ModelGroupInfo => models::group_info(self, request.uri().query()),
            Route::Liveliness => health::liveliness(),
            Route::Readiness => health::readiness(self).await,
            Route::Health => health::check_all(self).await,
            Route::CachePing => cache::ping(self, &access).await,
            Route::CacheFlushAll => cache::flushall(self, &access).await,
            Route::GuardrailsList => guardrails::endpoints::list(self),
            Route::ApplyGuardrail => {
                let applied = match proxy::read_body(request.into_body()).await {
                    Ok(body) => guardrails::endpoints::apply(self, &access, &body).await,
                    Err(error) => Err(error),
                };
                applied.unwrap_or_else(|error| errors::error_response(&error, None))
            }
            Route::CacheDelete => match proxy::read_body(request.into_body()).await {
                Ok(body) => cache::delete(self, &access, &body).await,
                Err(error) => errors::error_response(&error, None),
            },
            Route::Metrics => {
                self.metrics.set_scraped(&self.scrape().await);
                let mut response = json_response(StatusCode::OK, self.metrics.encode());
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
        }
    }
}

impl App {
    /// An LLM call (an OpenAI endpoint, or Anthropic's messages when `endpoint` is `None`):
    /// authenticated, handled and observed (metrics, log line, trace span).
    async fn llm<B>(&self, endpoint: Option<Endpoint>, request: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let path = endpoint.map_or("/v1/messages", Endpoint::path);
        let mut observed =
            observe::Observed::start(self, path, request.method(), request.uri().path(), request.headers());
        let fail = |error: &GatewayError| match endpoint {
            None => errors::anthropic_error_response(error, None),
            Some(_) => errors::error_response(error, None),
        };
        let auth_span = observed.span.as_ref().map(|span| span.child("auth"));
        let access = self.access(request.headers()).await.and_then(|access| match &access {
            Access::Key(principal) => {
                tenancy::route_allowed(principal, normalize(request.uri().path())).map(|()| access)
            }
            _ => Ok(access),
        });
        drop(auth_span);
        let access = match access {
            Ok(access) => access,
            Err(error) => {
                observed.error = Some(error.message.clone());
                return observed.respond(fail(&error));
            }
        };
        observed.caller(&access);
        let response = match endpoint {
            Some(endpoint) => proxy::handle(self, &access, endpoint, request, &mut observed).await,
            None => messages::handle(self, &access, request, &mut observed).await,
        };
        observed.respond(response)
    }

    /// The state `/metrics` reports at scrape time.
    async fn scrape(&self) -> metrics::Scraped {
        let mut scraped = metrics::Scraped::default();
        if let Some(tenancy) = &self.tenancy {
            scraped.spend_log_rows = tenancy.spend_log.waiting();
            scraped.spend_updates = tenancy.ledger.unwritten();
            let backend = match tenancy.store.backend() {
                tollgate_storage::Backend::Postgres => "postgres",
                _ => "sqlite",
            };
            let answered = matches!(
                tokio::time::timeout(std::time::Duration::from_millis(500), tenancy.store.ping()).await,
                Ok(Ok(()))
            );
            scraped.database_up = Some((backend, answered));
            if let Some(up) = tenancy.limits.redis_status() {
                scraped.redis.push(("rate_limits", up));
            }
            if let Some(up) = tenancy.spend_sharing() {
                scraped.redis.push(("spend", up));
            }
        }
        if let Some(up) = self.cache.as_ref().and_then(|cache| cache.redis_status()) {
            scraped.redis.push(("cache", up));
        }
        scraped
    }
}

/// Keeps a request's rate-limit permit until its response body is finished or dropped, so
/// a stream holds its parallel-request slot for as long as it runs.
pub(crate) fn hold(response: Response<ResponseBody>, permit: Option<Permit>) -> Response<ResponseBody> {
    match permit {
        None => response,
        Some(permit) => response.map(|body| HeldBody { body, _permit: permit }.boxed_unsync()),
    }
}

struct HeldBody {
    body: ResponseBody,
    _permit: Permit,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A complete JSON response.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    use http_body_util::{BodyExt, Full};
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_prefix_and_trailing_slash_are_ignored() {
        assert_eq!(normalize("/v1/chat/completions"), "/chat/completions");
        assert_eq!(normalize("/chat/completions/"), "/chat/completions");
        assert_eq!(normalize("/v1models"), "/v1models");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/v1"), "/v1");
    }

    #[test]
    fn routes_know_their_methods() {
        assert!(matches!(
            Route::recognize(&Method::POST, "/embeddings"),
            Some(Ok(Route::Proxy(Endpoint::Embeddings)))
        ));
        assert!(matches!(Route::recognize(&Method::GET, "/chat/completions"), Some(Err("POST"))));
        assert!(matches!(
            Route::recognize(&Method::POST, normalize("/v1/rerank")),
            Some(Ok(Route::Proxy(Endpoint::Rerank)))
        ));
        assert!(matches!(
            Route::recognize(&Method::POST, "/v2/rerank"),
            Some(Ok(Route::Proxy(Endpoint::Rerank)))
        ));
        assert!(matches!(Route::recognize(&Method::HEAD, "/health/readiness"), Some(Ok(Route::Readiness))));
        assert!(Route::recognize(&Method::GET, "/nope").is_none());
        assert!(matches!(
            Route::recognize(&Method::POST, normalize("/v1/messages/count_tokens")),
            Some(Ok(Route::CountTokens))
        ));
        assert!(matches!(Route::recognize(&Method::GET, "/utils/token_counter"), Some(Err("POST"))));
    }
}
