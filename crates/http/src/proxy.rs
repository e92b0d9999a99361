//! The OpenAI endpoints (chat completions, completions, embeddings) and LiteLLM's rerank.
//!
//! The request's path through here: read the body (bounded), read the few top-level
//! fields routing needs, pick a deployment, put the upstream model name into the body
//! (bytes spliced, the rest untouched), call the provider with retries, put the alias back
//! into the answer, and send it, streamed frame by frame when the client asked for a stream.
//! If the client goes away, hyper drops this future or the response body, and with it the
//! upstream request.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::future::Future;
use tollgate_domain::json::{TopLevel, quote, top_level_value_span};
use tollgate_domain::tokens;
use tollgate_domain::{Deployment, Endpoint, ErrorKind, GatewayError};
use tollgate_providers::{UpstreamBody, UpstreamRequest, UpstreamResponse};

use tollgate_router::{RequestOptions, Routed, Selection};

use std::sync::Arc;

use crate::cache;
use crate::estimate::Estimator;
use crate::guardrails::Mode as GuardrailMode;
use crate::guardrails::flow::{Flavor, Guard, Stopped};
use crate::metrics::UNKNOWN_MODEL;
use crate::observe::Observed;
use crate::relay::AliasRelay;
use crate::spend::{Meter, MeteredCall, request_tags, rerank_usage_in, usage_in};
use crate::telemetry::{ChildSpan, RequestSpan, SpanParent};
use crate::tenancy::Access;
use crate::{App, BoxError, ResponseBody, VERSION, errors, hold, json_response};

/// The largest request body accepted (images travel inline as base64).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

pub(crate) async fn handle<B>(
    app: &App,
    access: &Access,
    endpoint: Endpoint,
    request: Request<B>,
    observed: &mut Observed,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let call_id = observed.call_id.clone();
    let (parts, body) = request.into_parts();
    match proxy(app, access, endpoint, &parts.headers, body, &call_id, observed).await {
        Ok(response) => response,
        Err(error) => {
            observed.error = Some(error.message.clone());
            errors::error_response(&error, Some(&call_id))
        }
    }
}

/// A v7 UUID (the time in milliseconds, then random bits from the thread-local generator:
/// no getrandom syscall per request). Time-ordered ids land at the end of the spend log's
/// primary-key index instead of on a random page of it, which keeps that index's hot pages
/// few on SQLite and PostgreSQL alike.
pub(crate) fn new_call_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid().to_string()
}

async fn proxy<B>(
    app: &App,
    access: &Access,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: B,
    call_id: &str,
    observed: &mut Observed,
) -> Result<Response<ResponseBody>, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = observed.started();
    let body = read_body(body).await?;
    let top = TopLevel::parse(&body)
        .map_err(|e| GatewayError::bad_request(format!("Invalid JSON in request body: {e}")))?;
    let requested: Cow<'_, str> = field(&top, "model")?
        .ok_or_else(|| GatewayError::bad_request("missing required field `model`").with_param("model"))?;
    // A key's `aliases` may send a name to another model group; the answer keeps the name.
    let model: Cow<'_, str> = match access.principal().and_then(|p| crate::tenancy::aliased(p, &requested)) {
        Some(target) => Cow::Owned(target.to_owned()),
        None => requested.clone(),
    };
    check_required(&top, endpoint)?;
    observed.group = app.router.group_name(&model).map(str::to_owned);
    let mut guard = Guard::select(app, access, &top, &model, call_id, Flavor::of(endpoint))?;
    if let Some(span) = &observed.span {
        // With a logging_only guardrail the span gets the messages as it leaves them.
        let logged = match guard.as_ref().filter(|_| span.logs_messages()) {
            Some(guard) => guard.logged_messages(&top).await,
            None => None,
        };
        describe_span(span, endpoint, &requested, &top, logged);
    }
    let end_user: Option<Cow<'_, str>> = field(&top, "user")?;
    let permit = app.admit(access, &model, end_user.as_deref()).await?;
    observed.limits(permit.as_ref(), &model);
    let post_call = guard.as_ref().is_some_and(|guard| guard.has(GuardrailMode::PostCall));
    let stream = matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
        && field::<bool>(&top, "stream")?.unwrap_or(false);
    let mut gateway = GatewayParams::read(&top)?;
    gateway.options.stream = stream;
    // The response cache's controls: the body's `cache` object or a Cache-Control header. A
    // per-request `mock_response` is a test's answer: neither served from nor kept in the cache.
    // Nor is an answer a post-call guardrail must see.
    let controls = match &app.cache {
        Some(_) if gateway.mock_response.is_none() && !post_call => {
            Some(cache::Controls::read(top.get("cache").map(|raw| raw.get()), headers)?)
        }
        _ => None,
    };
    // Parameters meant for the gateway never reach the upstream (OpenAI rejects unknown ones).
    let stripped;
    let (body, top) = if gateway.present {
        stripped = Bytes::from(top.without(GATEWAY_PARAMS));
        let top = TopLevel::parse(&stripped).map_err(|e| GatewayError::internal(e.to_string()))?;
        (&stripped, top)
    } else {
        (&body, top)
    };
    // Pre-call guardrails may block the request or change its messages.
    let guarded;
    let (body, top) = match guard.as_mut() {
        Some(guard) => match guard.pre_call(&top).await {
            Ok(Some(rewritten)) => {
                guarded = Bytes::from(rewritten);
                let top = TopLevel::parse(&guarded).map_err(|e| GatewayError::internal(e.to_string()))?;
                (&guarded, top)
            }
            Ok(None) => (body, top),
            Err(stopped) => {
                let request = MeteredCall {
                    call_id,
                    call_type: call_type(endpoint),
                    started,
                    progress: Some(&observed.progress),
                };
                return Err(stop(
                    app,
                    access,
                    &model,
                    end_user.as_deref(),
                    &request,
                    request_tags(&top),
                    stopped,
                ));
            }
        },
        None => (body, top),
    };
    let client_wants_usage = field::<StreamOptions>(&top, "stream_options")?.is_some_and(|o| o.include_usage);

    // The response cache: a hit answers here; embeddings send upstream only the items it
    // does not hold.
    let mut plan = None;
    let mut split = None;
    let partial;
    let (body, top) = match app.cache.as_ref().zip(controls.as_ref()) {
        None => (body, top),
        Some((cache, controls)) => {
            let group = app.router.group_name(&model).filter(|group| !group.contains('*')).unwrap_or(&model);
            let hit = cache::Hit {
                app,
                access,
                call_type: call_type(endpoint),
                requested: &requested,
                model: &model,
                end_user: end_user.as_deref(),
                call_id,
                started,
                stream,
                client_wants_usage,
                progress: Some(&observed.progress),
            };
            let cache_span = observed.span.as_ref().map(|span| span.child("cache"));
            if endpoint == Endpoint::Embeddings {
                split = cache.embeddings(controls, access, group, body).await?;
            } else {
                plan = cache.plan(cache::CallKind::of(endpoint), controls, access, group, body)?;
            }
            let answered = match (&plan, &split) {
                (Some(plan), _) => match cache.lookup(plan).await {
                    Some(entry) => hit.answer(entry, plan.header()),
                    None => None,
                },
                (_, Some(split)) if split.all_cached() => hit.answer_embeddings(split),
                _ => None,
            };
            if let Some(span) = &cache_span {
                span.set(opentelemetry::KeyValue::new("tollgate.cache_hit", answered.is_some()));
            }
            drop(cache_span);
            if let Some(response) = answered {
                observed.cache_hit = true;
                observed.deployment = app.router.group(&model).and_then(|group| group.first()).cloned();
                return Ok(hold(response, permit));
            }
            match split.as_ref().and_then(cache::EmbeddingSplit::upstream_input) {
                Some(input) => {
                    partial = Bytes::from(top.rewrite(&[("input", &input)]));
                    let top = TopLevel::parse(&partial).map_err(|e| GatewayError::internal(e.to_string()))?;
                    (&partial, top)
                }
                None => (body, top),
            }
        }
    };
    let cache_key = plan
        .as_ref()
        .and_then(cache::Plan::header)
        .or_else(|| split.as_ref().and_then(cache::EmbeddingSplit::header));
    // Every stream is metered: the token and spend metrics, the request log line and the
    // spans need its usage, as do spend, the router's tpm counts and a stream the cache keeps.
    // The upstream is asked for it when the client did not, and the usage chunk is taken out
    // of what the client receives.
    let ask_for_usage = stream && !client_wants_usage;
    // Spend is at stake (a spend log row, a key or an end user to charge): an answer without
    // usage is then charged from an estimate.
    let metered = app
        .tenancy
        .as_ref()
        .is_some_and(|tenancy| tenancy.spend_logs || access.principal().is_some() || end_user.is_some());
    let asked;
    let (body, top) = if ask_for_usage {
        asked = Bytes::from(top.rewrite(&[("stream_options", r#"{"include_usage":true}"#)]));
        let top = TopLevel::parse(&asked).map_err(|e| GatewayError::internal(e.to_string()))?;
        (&asked, top)
    } else {
        (body, top)
    };

    if app.router.counts_prompt_tokens() {
        gateway.options.prompt_tokens = Some(prompt_tokens(app, &model, endpoint, &top)?);
    }
    // Everything inside routing (attempts, backoff between them) is the upstream's time;
    // what is left of the total is the gateway's own overhead.
    let call = route(app, &model, &gateway.options, observed, |selection, label, parent| {
        let body =
            body_for(&top, body, &selection.deployment, &selection.upstream_model, &requested, &gateway.drop);
        let mock_response = gateway.mock_response.as_deref();
        async move {
            // A per-request mock_response answers offline in place of the deployment.
            let deployment = match mock_response {
                Some(text) => {
                    let mut mocked = Deployment::clone(&selection.deployment);
                    mocked.mock_response = Some(text.to_owned());
                    Cow::Owned(mocked)
                }
                None => Cow::Borrowed(&*selection.deployment),
            };
            forward(app, label, endpoint, &deployment, body?, stream, parent).await
        }
    });
    let routed = run_beside(guard.as_ref(), call).await;
    let request =
        MeteredCall { call_id, call_type: call_type(endpoint), started, progress: Some(&observed.progress) };
    let stopped =
        |stopped| stop(app, access, &model, end_user.as_deref(), &request, request_tags(&top), stopped);
    let routed = match routed.map_err(|blocked| stopped(Stopped::Blocked(blocked)))? {
        Ok(routed) => routed,
        Err(error) => {
            Meter::failed(app, access, &model, end_user.as_deref(), &request, request_tags(&top), &error);
            return Err(error);
        }
    };
    let upstream_time = observed.upstream.unwrap_or_default();
    let upstream = routed.value;
    let ticket = routed.ticket;

    let alias_json = quote(&requested);
    let mut meter = Meter::new(app, access, &model, end_user.as_deref(), &routed.deployment, &request);
    meter.tag(request_tags(&top));
    let mut spend_headers = Vec::new();
    let mut response = match upstream.body {
        UpstreamBody::Complete(bytes) => {
            let bytes = match guard.as_mut().filter(|_| post_call) {
                Some(guard) => {
                    guard.post_call(bytes).await.map_err(|blocked| stopped(Stopped::Blocked(blocked)))?
                }
                None => bytes,
            };
            let bytes = match (&app.cache, &plan, &split) {
                (Some(cache), Some(plan), _) => {
                    cache.store(plan, cache::EntryKind::Complete, &bytes);
                    bytes
                }
                (Some(cache), _, Some(split)) => split.merge_and_store(cache, bytes)?,
                _ => bytes,
            };
            let usage = match endpoint {
                Endpoint::Rerank => rerank_usage_in(&bytes),
                _ => usage_in(&bytes),
            };
            match &usage {
                Some(usage) => spend_headers.push(("x-litellm-response-cost", meter.record(usage))),
                // A rerank is priced per search; there is no text to count.
                None if metered && endpoint != Endpoint::Rerank => {
                    // Counting may build a tokenizer (once, a fraction of a second): not on
                    // the worker.
                    let estimator = Estimator::new(&routed.deployment.upstream_model, endpoint, body.clone());
                    let answer = bytes.clone();
                    if let Ok(estimated) =
                        tokio::task::spawn_blocking(move || estimator.answer_usage(&answer)).await
                    {
                        spend_headers.push(("x-litellm-response-cost", meter.record_estimated(&estimated)));
                    }
                }
                None => {}
            }
            ticket.finish(usage.as_ref());
            if let Some(spend) = meter.key_spend() {
                spend_headers.push(("x-litellm-key-spend", spend));
            }
            if let Some(span) = observed.span.as_ref().filter(|span| span.logs_messages())
                && let Some(choices) = top_level_value_span(&bytes, "choices")
            {
                span.set(crate::telemetry::text(
                    "langfuse.observation.output",
                    String::from_utf8_lossy(&bytes[choices]).into_owned(),
                ));
            }
            json_response(StatusCode::OK, with_alias(bytes, &alias_json))
        }
        UpstreamBody::Stream(stream) => {
            // A post-call guardrail sees the whole answer before the client sees any of it.
            let stream = match guard.as_mut().filter(|_| post_call) {
                Some(guard) => guard.post_call_stream(stream).await.map_err(stopped)?,
                None => stream,
            };
            let stream = match (&app.cache, &plan) {
                (Some(cache), Some(plan)) => cache.record(plan, stream),
                _ => stream,
            };
            let relay = AliasRelay::new(stream, alias_json)
                .metered(meter, ask_for_usage)
                .observed(&observed.progress);
            let relay = if metered {
                relay.estimating(Estimator::new(&routed.deployment.upstream_model, endpoint, body.clone()))
            } else {
                relay
            };
            let relay = relay.tracked(ticket);
            sse_response(relay.boxed_unsync())
        }
    };
    for (name, value) in spend_headers {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    if let Some(key) = cache_key {
        response.headers_mut().insert(cache::CACHE_KEY_HEADER, key);
    }
    let timing = Timing { total: started.elapsed(), upstream: upstream_time };
    let attempts = Attempts { retries: routed.retries, fallbacks: routed.fallbacks };
    add_litellm_headers(
        response.headers_mut(),
        call_id,
        &model,
        &routed.deployment,
        timing,
        attempts,
        &upstream.headers,
    );
    if let Some(permit) = &permit {
        permit.add_headers(response.headers_mut());
    }
    Ok(hold(response, permit))
}

/// A guardrail's stop as the client's error, with the request's `failure` spend-log row
/// (a block is logged with the guardrail and no cost).
pub(crate) fn stop(
    app: &App,
    access: &Access,
    model: &str,
    end_user: Option<&str>,
    request: &MeteredCall<'_>,
    tags: Vec<String>,
    stopped: Stopped,
) -> GatewayError {
    match stopped {
        Stopped::Blocked(blocked) => {
            Meter::blocked(app, access, model, end_user, request, tags, &blocked);
            blocked.to_error()
        }
        Stopped::Failed(error) => {
            Meter::failed(app, access, model, end_user, request, tags, &error);
            error
        }
    }
}

/// Runs the upstream call, and beside it the request's `during_call` guardrails: a block
/// drops the call (which closes its upstream connection) and wins; so does a block that
/// comes after the answer.
pub(crate) async fn run_beside<T>(
    guard: Option<&Guard<'_>>,
    call: impl Future<Output = T>,
) -> Result<T, crate::guardrails::Blocked> {
    let Some(guard) = guard.filter(|guard| guard.has(GuardrailMode::DuringCall)) else {
        return Ok(call.await);
    };
    let check = guard.during_call();
    futures_util::pin_mut!(call, check);
    match futures_util::future::select(call, check).await {
        futures_util::future::Either::Left((answer, check)) => check.await.map(|()| answer),
        futures_util::future::Either::Right((Ok(()), call)) => Ok(call.await),
        futures_util::future::Either::Right((Err(blocked), _call)) => Err(blocked),
    }
}

/// The prompt's tokens, for the router's pre-call checks: the chat `messages` and `tools`,
/// the completions `prompt` or the embeddings `input`, in the encoding of the group's model.
fn prompt_tokens(
    app: &App,
    model: &str,
    endpoint: Endpoint,
    top: &TopLevel<'_>,
) -> Result<u64, GatewayError> {
    let encoding = app.router.encoding(model);
    let value = |name: &str| field::<serde_json::Value>(top, name).map(Option::unwrap_or_default);
    Ok(match endpoint {
        Endpoint::ChatCompletions => {
            let tools = field::<serde_json::Value>(top, "tools")?;
            tokens::count_chat(encoding, &value("messages")?, tools.as_ref())
        }
        Endpoint::Completions => tokens::count_prompt(encoding, &value("prompt")?),
        Endpoint::Embeddings => tokens::count_prompt(encoding, &value("input")?),
        Endpoint::Rerank => {
            tokens::count_prompt(encoding, &value("query")?)
                + tokens::count_prompt(encoding, &value("documents")?)
        }
    })
}

/// LiteLLM's call type of an endpoint (spend logs, `supported_call_types`).
fn call_type(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "acompletion",
        Endpoint::Completions => "atext_completion",
        Endpoint::Embeddings => "aembedding",
        Endpoint::Rerank => "arerank",
    }
}

/// Routes `model` with `call` (which gets each attempt's deployment, the metrics label of
/// the group, and the routing span to hang the attempt's span from when traces are on),
/// noting in `observed` the group, the time spent routing, retries and fallbacks.
pub(crate) async fn route<'a, F, Fut>(
    app: &'a App,
    model: &str,
    options: &RequestOptions,
    observed: &mut Observed,
    mut call: F,
) -> Result<Routed<UpstreamResponse>, GatewayError>
where
    F: FnMut(Selection<'_>, &'a str, Option<SpanParent>) -> Fut,
    Fut: Future<Output = Result<UpstreamResponse, GatewayError>>,
{
    let group = app.router.group_name(model);
    observed.group = group.map(str::to_owned);
    let label = group.unwrap_or(UNKNOWN_MODEL);
    let routing_span = observed.span.as_ref().map(|span| span.child("routing"));
    let parent = routing_span.as_ref().map(ChildSpan::parent);
    let started = Instant::now();
    let mut last: Option<Arc<Deployment>> = None;
    let routed = app
        .router
        .route(model, options, |selection| {
            last = Some(Arc::clone(&selection.deployment));
            call(selection, label, parent.clone())
        })
        .await;
    observed.upstream = Some(started.elapsed());
    let routed = match routed {
        Ok(routed) => routed,
        Err(error) => {
            // The last attempt was in another group: the fallbacks failed too.
            if let Some(last) = last.filter(|last| Some(last.model_name.as_str()) != group) {
                observed.failed_fallback = Some(last.model_name.clone());
            }
            if let Some(span) = &routing_span {
                span.fail(error.status(), &error.message);
            }
            return Err(error);
        }
    };
    observed.retries = routed.retries;
    observed.deployment = Some(Arc::clone(&routed.deployment));
    if routed.fallbacks > 0 {
        observed.fallback = app.router.group_name(&routed.deployment.model_name).map(str::to_owned);
    }
    if let Some(span) = &routing_span {
        span.set(opentelemetry::KeyValue::new("tollgate.retries", i64::from(routed.retries)));
        span.set(opentelemetry::KeyValue::new("tollgate.fallbacks", i64::from(routed.fallbacks)));
        span.set(crate::telemetry::text("tollgate.deployment.id", routed.deployment.id.clone()));
    }
    Ok(routed)
}

/// The request's attributes on its span: GenAI operation and parameters, and the prompt
/// when messages may be logged.
fn describe_span(
    span: &RequestSpan,
    endpoint: Endpoint,
    requested: &str,
    top: &TopLevel<'_>,
    logged_input: Option<String>,
) {
    let operation = crate::telemetry::operation(endpoint);
    span.describe(endpoint.path(), operation, requested);
    for (field_name, attribute) in [
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
    ] {
        if let Ok(Some(value)) = top.decode::<f64>(field_name) {
            span.set(opentelemetry::KeyValue::new(attribute, value));
        }
    }
    if span.logs_messages() {
        let input = match endpoint {
            Endpoint::ChatCompletions => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings => "input",
            Endpoint::Rerank => "query",
        };
        if let Some(text) = logged_input.or_else(|| top.get(input).map(|raw| raw.get().to_owned())) {
            span.set(crate::telemetry::text("langfuse.observation.input", text));
        }
    }
}

/// Calls the deployment's provider with `body` (canonical JSON, upstream model in place),
/// retrying retryable failures up to its `max_retries`, and counts the outcome against the
/// deployment under the `group` label.
pub(crate) async fn forward(
    app: &App,
    group: &str,
    endpoint: Endpoint,
    deployment: &Deployment,
    body: Bytes,
    stream: bool,
    parent: Option<SpanParent>,
) -> Result<UpstreamResponse, GatewayError> {
    let provider = app.providers.for_deployment(deployment)?;
    let body = &body;
    let call = tollgate_router::with_retries(deployment.max_retries, || async move {
        let request = UpstreamRequest { endpoint, deployment, body: body.clone(), stream };
        provider.call(request).await.map_err(GatewayError::from)
    });
    let span = parent.map(|parent| {
        parent.attempt(crate::telemetry::operation(endpoint), deployment, &deployment.upstream_model)
    });
    let result = match span.as_ref().and_then(ChildSpan::traceparent) {
        Some(traceparent) => tollgate_providers::with_traceparent(traceparent, call).await,
        None => call.await,
    };
    let failure = result.as_ref().err().map(GatewayError::status);
    app.metrics.record_attempt(group, deployment, failure);
    if let (Some(error), Some(status)) = (result.as_ref().err(), failure) {
        if let Some(span) = &span {
            span.fail(status, &error.message);
        }
        if let Some(alerts) = &app.alerts {
            alerts.upstream_failure(deployment, status);
        }
    }
    result
}

/// Request fields that steer the gateway (LiteLLM's per-request parameters) rather than
/// the model; they are taken out of the body before it goes upstream.
const GATEWAY_PARAMS: &[&str] = &[
    "fallbacks",
    "num_retries",
    "mock_testing_fallbacks",
    "mock_response",
    "cache",
    "drop_params",
    "additional_drop_params",
    "guardrails",
];

/// LiteLLM's `drop_params` for one request: the body's `drop_params` (else the deployment's
/// setting) and `additional_drop_params`.
#[derive(Default)]
struct DropParams {
    drop_params: Option<bool>,
    additional: Vec<String>,
}

/// The body for one deployment: without the parameters `drop_params` drops for it, with its
/// upstream model in `model`. The common case (nothing to drop, same model) is the body as is.
fn body_for(
    top: &TopLevel<'_>,
    body: &Bytes,
    deployment: &Deployment,
    upstream_model: &str,
    requested: &str,
    drop: &DropParams,
) -> Result<Bytes, GatewayError> {
    let mut dropped: Vec<&str> = Vec::new();
    if drop.drop_params.unwrap_or(deployment.drop_params) {
        dropped.extend(tollgate_providers::unsupported_params(deployment));
    }
    dropped.extend(deployment.additional_drop_params.iter().chain(&drop.additional).map(String::as_str));
    dropped.retain(|name| top.contains(name));
    if dropped.is_empty() {
        return Ok(if upstream_model == requested {
            body.clone()
        } else {
            Bytes::from(top.rewrite(&[("model", &quote(upstream_model))]))
        });
    }
    let stripped = top.without(&dropped);
    let top = TopLevel::parse(&stripped).map_err(|e| GatewayError::internal(e.to_string()))?;
    Ok(Bytes::from(top.rewrite(&[("model", &quote(upstream_model))])))
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

struct GatewayParams {
    present: bool,
    options: RequestOptions,
    mock_response: Option<String>,
    drop: DropParams,
}

impl GatewayParams {
    fn read(top: &TopLevel<'_>) -> Result<Self, GatewayError> {
        if !GATEWAY_PARAMS.iter().any(|name| top.contains(name)) {
            return Ok(Self {
                present: false,
                options: RequestOptions::default(),
                mock_response: None,
                drop: DropParams::default(),
            });
        }
        let options = RequestOptions {
            fallbacks: field::<Vec<String>>(top, "fallbacks")?,
            num_retries: field::<u32>(top, "num_retries")?,
            mock_testing_fallbacks: field::<bool>(top, "mock_testing_fallbacks")?.unwrap_or(false),
            ..RequestOptions::default()
        };
        let drop = DropParams {
            drop_params: field::<bool>(top, "drop_params")?,
            additional: field::<Vec<String>>(top, "additional_drop_params")?.unwrap_or_default(),
        };
        Ok(Self { present: true, options, mock_response: field::<String>(top, "mock_response")?, drop })
    }
}

/// A `text/event-stream` response around `body`.
pub(crate) fn sse_response(body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(GatewayError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than {} MiB", MAX_REQUEST_BYTES / (1024 * 1024)),
        )),
        Err(error) => Err(GatewayError::bad_request(format!("could not read the request body: {error}"))),
    }
}

/// A top-level field decoded as `T`, with a 400 naming the field when it has another type.
fn field<'a, T: serde::Deserialize<'a>>(top: &TopLevel<'a>, name: &str) -> Result<Option<T>, GatewayError> {
    top.decode(name)
        .map_err(|e| GatewayError::bad_request(format!("invalid value for `{name}`: {e}")).with_param(name))
}

/// The fields each endpoint cannot do without (and whether each must be an array), checked
/// here so a client hears about them from the gateway rather than as an upstream's error
/// after a network round trip.
fn check_required(top: &TopLevel<'_>, endpoint: Endpoint) -> Result<(), GatewayError> {
    let required: &[(&str, bool)] = match endpoint {
        Endpoint::ChatCompletions => &[("messages", true)],
        Endpoint::Completions => &[("prompt", false)],
        Endpoint::Embeddings => &[("input", false)],
        Endpoint::Rerank => &[("query", false), ("documents", true)],
    };
    for &(name, want_array) in required {
        match top.get(name).map(|raw| raw.get()) {
            None | Some("null") => {
                return Err(
                    GatewayError::bad_request(format!("missing required field `{name}`")).with_param(name)
                );
            }
            Some(raw) if want_array && !raw.starts_with('[') => {
                return Err(GatewayError::bad_request(format!("`{name}` must be an array")).with_param(name));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The answer with its `model` set to the alias; bytes that are not a JSON object pass
/// through as they came.
pub(crate) fn with_alias(bytes: Bytes, alias_json: &str) -> Bytes {
    match top_level_value_span(&bytes, "model") {
        Some(model) if bytes[model.start] == b'"' && &bytes[model.clone()] != alias_json.as_bytes() => {
            let mut out = Vec::with_capacity(bytes.len() + alias_json.len());
            out.extend_from_slice(&bytes[..model.start]);
            out.extend_from_slice(alias_json.as_bytes());
            out.extend_from_slice(&bytes[model.end..]);
            Bytes::from(out)
        }
        _ => bytes,
    }
}

/// How many retries and fallbacks a request took, for `x-litellm-attempted-*`.
#[derive(Clone, Copy, Default)]
pub(crate) struct Attempts {
    pub(crate) retries: u32,
    pub(crate) fallbacks: u32,
}

#[derive(Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) total: Duration,
    pub(crate) upstream: Duration,
}

fn millis(duration: Duration) -> HeaderValue {
    let text = format!("{:.3}", duration.as_secs_f64() * 1000.0);
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// LiteLLM's response headers, and the upstream's own headers under `llm_provider-`.
pub(crate) fn add_litellm_headers(
    headers: &mut HeaderMap,
    call_id: &str,
    model_group: &str,
    deployment: &Deployment,
    timing: Timing,
    attempts: Attempts,
    upstream: &HeaderMap,
) {
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("x-litellm-call-id", call_id);
    put("x-litellm-model-id", &deployment.id);
    put("x-litellm-model-group", model_group);
    if let Some(api_base) = &deployment.api_base {
        put("x-litellm-model-api-base", api_base);
    }
    put("x-litellm-version", VERSION);
    headers.insert("x-litellm-attempted-retries", HeaderValue::from(attempts.retries));
    headers.insert("x-litellm-attempted-fallbacks", HeaderValue::from(attempts.fallbacks));
    headers.insert("x-litellm-response-duration-ms", millis(timing.total));
    headers.insert("x-litellm-overhead-duration-ms", millis(timing.total.saturating_sub(timing.upstream)));
    for (name, value) in upstream {
        if let Ok(name) = HeaderName::try_from(format!("llm_provider-{name}")) {
            headers.append(name, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_v7_uuids_in_time_order() {
        let first = new_call_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_call_id();
        let parsed = uuid::Uuid::parse_str(&first).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert!(later > first, "{later} sorts after {first}");
        assert_ne!(new_call_id(), new_call_id());
    }

    #[test]
    fn required_fields_are_checked_per_endpoint() {
        let top = TopLevel::parse(br#"{"model":"m","messages":"hi"}"#).unwrap();
        let error = check_required(&top, Endpoint::ChatCompletions).unwrap_err();
        assert_eq!(error.message, "`messages` must be an array");
        let top = TopLevel::parse(br#"{"model":"m"}"#).unwrap();
        let error = check_required(&top, Endpoint::Embeddings).unwrap_err();
        assert_eq!(
            (error.message.as_str(), error.param.as_deref()),
            ("missing required field `input`", Some("input"))
        );
        let top = TopLevel::parse(br#"{"model":"m","prompt":"x"}"#).unwrap();
        assert!(check_required(&top, Endpoint::Completions).is_ok());
        let top = TopLevel::parse(br#"{"model":"m","query":"q","documents":"d"}"#).unwrap();
        let error = check_required(&top, Endpoint::Rerank).unwrap_err();
        assert_eq!(
            (error.message.as_str(), error.param.as_deref()),
            ("`documents` must be an array", Some("documents"))
        );
        let top = TopLevel::parse(br#"{"model":"m","documents":["d"]}"#).unwrap();
        assert_eq!(check_required(&top, Endpoint::Rerank).unwrap_err().param.as_deref(), Some("query"));
    }

    #[test]
    fn alias_replaces_the_upstream_model_only_when_different() {
        let out = with_alias(Bytes::from_static(br#"{"id":"x","model":"gpt-4o-2024-08-06"}"#), "\"gp\"");
        assert_eq!(out, r#"{"id":"x","model":"gp"}"#);
        let same = Bytes::from_static(br#"{"model":"gp"}"#);
        assert_eq!(with_alias(same.clone(), "\"gp\"").as_ptr(), same.as_ptr());
        assert_eq!(with_alias(Bytes::from_static(b"not json"), "\"gp\""), "not json");
    }

    #[test]
    fn upstream_headers_are_echoed_with_a_prefix() {
        let deployment = tollgate_domain::GatewayConfig::demo(&std::collections::HashMap::new())
            .unwrap()
            .deployments
            .remove(0);
        let mut upstream = HeaderMap::new();
        upstream.insert("x-request-id", HeaderValue::from_static("req-1"));
        let mut headers = HeaderMap::new();
        let timing = Timing { total: Duration::from_micros(1500), upstream: Duration::from_micros(1000) };
        add_litellm_headers(
            &mut headers,
            "call-1",
            "demo",
            &deployment,
            timing,
            Attempts::default(),
            &upstream,
        );
        assert_eq!(headers["llm_provider-x-request-id"], "req-1");
        assert_eq!(headers["x-litellm-overhead-duration-ms"], "0.500");
        assert_eq!(headers["x-litellm-response-duration-ms"], "1.500");
        assert_eq!(headers["x-litellm-model-group"], "demo");
        assert!(!headers.contains_key("x-litellm-model-api-base"));
    }
}
