//! One LLM request as observed: what the handlers learn about it on the way (model group,
//! caller, deployment, upstream time, retries, fallbacks, usage and cost) and, when it is
//! over, the three records made of it: the Prometheus counters, one structured log line,
//! and the end of its trace span. Alerts on budgets are raised from here too.
//!
//! A complete answer is over when its handler returns; a stream when its body ends or is
//! dropped (the client went away), so its latency, tokens and cost are those of the whole
//! stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tollgate_domain::Deployment;
use tollgate_domain::pricing::Usage;

use crate::metrics::{Budget, CallerLabels, RequestOutcome, UNKNOWN_MODEL, UsageOutcome};
use crate::telemetry::{RequestSpan, text};
use crate::tenancy::{Access, Principal};
use crate::{App, ResponseBody};

/// The status recorded for a request whose client left before the answer.
const CLIENT_CLOSED: u16 = 499;

/// What the meter and the stream relay learn after the handler has returned: the usage
/// and cost, and when the first token came.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    usage: OnceLock<(Usage, f64)>,
    first_token: OnceLock<Instant>,
}

impl Progress {
    pub(crate) fn usage(&self, usage: &Usage, cost: f64) {
        let _ = self.usage.set((*usage, cost));
    }

    pub(crate) fn first_token(&self) {
        if self.first_token.get().is_none() {
            let _ = self.first_token.set(Instant::now());
        }
    }
}

/// One request on its way through the gateway.
pub(crate) struct Observed {
    app: ObservedApp,
    started: Instant,
    pub(crate) call_id: String,
    endpoint: &'static str,
    /// The model group asked for, when the gateway serves it.
    pub(crate) group: Option<String>,
    caller: CallerLabels,
    principal: Option<Arc<Principal>>,
    /// The deployment that answered.
    pub(crate) deployment: Option<Arc<Deployment>>,
    /// Time inside routing (attempts and the waits between them).
    pub(crate) upstream: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) fallback: Option<String>,
    pub(crate) failed_fallback: Option<String>,
    pub(crate) cache_hit: bool,
    pub(crate) progress: Arc<Progress>,
    /// When the response headers went out (a stream's body follows).
    headers_at: Option<Duration>,
    status: u16,
    pub(crate) error: Option<String>,
    pub(crate) span: Option<RequestSpan>,
    finished: bool,
}

/// The parts of the app an observed request reports to; owned, so that a stream's record
/// can outlive its handler.
struct ObservedApp {
    metrics: Arc<crate::metrics::Metrics>,
    tenancy: Option<Arc<crate::tenancy::Tenancy>>,
    alerts: Option<Arc<crate::alerts::Alerts>>,
    request_log: bool,
}

impl Observed {
    /// Starts observing a request to `endpoint` (the route, for logs and span names).
    pub(crate) fn start(
        app: &App,
        endpoint: &'static str,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Self {
        let span = app.tracing.as_ref().map(|tracing| tracing.request_span(headers, method.as_str(), path));
        Self {
            app: ObservedApp {
                metrics: Arc::clone(&app.metrics),
                tenancy: app.tenancy.clone(),
                alerts: app.alerts.clone(),
                request_log: app.request_log,
            },
            started: Instant::now(),
            call_id: crate::proxy::new_call_id(),
            endpoint,
            group: None,
            caller: CallerLabels::default(),
            principal: None,
            deployment: None,
            upstream: None,
            retries: 0,
            fallback: None,
            failed_fallback: None,
            cache_hit: false,
            progress: Arc::default(),
            headers_at: None,
            // Until a response is made: a request whose client went away before its answer
            // is recorded as 499, nginx's "client closed request".
            status: CLIENT_CLOSED,
            error: None,
            span,
            finished: false,
        }
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Who the request came from, once authenticated.
    pub(crate) fn caller(&mut self, access: &Access) {
        let Access::Key(principal) = access else { return };
        let key = &principal.key;
        self.caller = CallerLabels {
            hashed_api_key: key.token.clone(),
            api_key_alias: key.key_alias.clone().unwrap_or_default(),
            team: key.team_id.clone().unwrap_or_default(),
            team_alias: principal.team.as_ref().and_then(|t| t.team_alias.clone()).unwrap_or_default(),
        };
        if let Some(span) = &self.span {
            if let Some(alias) = &key.key_alias {
                span.set(text("tollgate.key_alias", alias.clone()));
            }
            if let Some(team) = &key.team_id {
                span.set(text("tollgate.team_id", team.clone()));
            }
            if let Some(user) = &key.user_id {
                span.set(text("langfuse.user.id", user.clone()));
                span.set(text("user.id", user.clone()));
            }
        }
        self.principal = Some(Arc::clone(principal));
    }

    /// Records what the key and its team have left of their rate limits this minute.
    pub(crate) fn limits(&self, permit: Option<&crate::tenancy::Permit>, model: &str) {
        let Some(remaining) = permit.and_then(crate::tenancy::Permit::remaining) else { return };
        let metrics = &self.app.metrics;
        if remaining.key != (None, None) {
            metrics.record_key_limits(&self.caller, model, remaining.key.0, remaining.key.1);
        }
        if remaining.team != (None, None) {
            metrics.record_team_limits(&self.caller, remaining.team.0, remaining.team.1);
        }
    }

    /// A handler's answer: a complete one finishes the record now; a stream carries it in
    /// its body until the stream ends.
    pub(crate) fn respond(mut self, response: Response<ResponseBody>) -> Response<ResponseBody> {
        self.status = response.status().as_u16();
        self.headers_at = Some(self.started.elapsed());
        let streaming = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        if !streaming {
            self.finish();
            return response;
        }
        response.map(|body| ObservedBody { body, observed: self }.boxed_unsync())
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let total = self.started.elapsed();
        let group = self.group.as_deref().unwrap_or(UNKNOWN_MODEL);
        let usage = self.progress.usage.get().copied();
        let model = self.deployment.as_ref().map(|d| d.litellm_model());
        let ttft = self.progress.first_token.get().map(|at| at.saturating_duration_since(self.started));
        let metrics = &self.app.metrics;
        metrics.record_request(&RequestOutcome {
            requested_model: group,
            caller: &self.caller,
            status: self.status,
            total,
            upstream: self.upstream,
            time_to_first_token: ttft,
            retries: self.retries,
            fallback_model: self.fallback.as_deref(),
            failed_fallback: self.failed_fallback.as_deref(),
            usage: usage.zip(model.as_deref()).map(|((usage, cost), model)| UsageOutcome {
                model,
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
                cost,
            }),
        });
        if let Some(upstream) = self.upstream {
            metrics.record_overhead(group, self.headers_at.unwrap_or(total).saturating_sub(upstream));
        }
        self.budgets(usage.is_some_and(|(_, cost)| cost > 0.0));
        let (tokens_in, tokens_out, cost) =
            usage.map_or((0, 0, 0.0), |(u, cost)| (u.prompt_tokens, u.completion_tokens, cost));
        let deployment = self.deployment.as_ref().map_or("", |d| d.id.as_str());
        let latency_ms = total.as_secs_f64() * 1000.0;
        // One line per request: INFO with `json_logs`, else DEBUG (a text log line per
        // request would drown everything else).
        macro_rules! request_line {
            ($level:ident) => {
                tracing::$level!(
                    target: "tollgate::request",
                    request_id = %self.call_id,
                    endpoint = self.endpoint,
                    key_alias = %self.caller.api_key_alias,
                    team = %self.caller.team,
                    model_group = %group,
                    deployment = %deployment,
                    model = model.as_deref().unwrap_or(""),
                    status = self.status,
                    latency_ms,
                    ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0),
                    tokens_in,
                    tokens_out,
                    cost,
                    cache_hit = self.cache_hit,
                    retries = self.retries,
                    fallback = self.fallback.as_deref(),
                    error = self.error.as_deref(),
                    "request"
                )
            };
        }
        if self.app.request_log {
            request_line!(info);
        } else {
            request_line!(debug);
        }
        if let Some(span) = self.span.take() {
            if let Some(group) = &self.group {
                span.set(text("tollgate.model_group", group.clone()));
            }
            if let Some(model) = model {
                span.set(text("gen_ai.response.model", model));
            }
            if let Some((usage, cost)) = usage {
                span.set(opentelemetry::KeyValue::new(
                    "gen_ai.usage.input_tokens",
                    usage.prompt_tokens as i64,
                ));
                span.set(opentelemetry::KeyValue::new(
                    "gen_ai.usage.output_tokens",
                    usage.completion_tokens as i64,
                ));
                span.set(opentelemetry::KeyValue::new("gen_ai.usage.cost", cost));
            }
            span.set(text("tollgate.call_id", self.call_id.clone()));
            span.set(opentelemetry::KeyValue::new("tollgate.cache_hit", self.cache_hit));
            if self.retries > 0 {
                span.set(opentelemetry::KeyValue::new("tollgate.retries", i64::from(self.retries)));
            }
            if let Some(fallback) = &self.fallback {
                span.set(text("tollgate.fallback_model", fallback.clone()));
            }
            span.end(self.status, self.error.as_deref());
        }
    }

    /// The key's and its team's budgets after this request: gauges, and alerts when a
    /// request crossed one.
    fn budgets(&self, spent: bool) {
        let (Some(principal), Some(tenancy)) = (&self.principal, &self.app.tenancy) else { return };
        let key = &principal.key;
        let key_spend = key.max_budget.or(principal.key_soft_budget()).map(|_| tenancy.key_spend(principal));
        if let (Some(max), Some(spend)) = (key.max_budget, key_spend) {
            self.app.metrics.record_key_budget(&self.caller, Budget { spend, max });
        }
        let team = principal.team.as_ref();
        let team_spend = team
            .filter(|t| t.max_budget.is_some() || t.soft_budget.is_some())
            .map(|_| tenancy.team_spend(principal));
        if let (Some(max), Some(spend)) = (team.and_then(|t| t.max_budget), team_spend) {
            self.app.metrics.record_team_budget(&self.caller, Budget { spend, max });
        }
        if let (true, Some(alerts)) = (spent, &self.app.alerts) {
            alerts.budgets(principal, key_spend, team_spend);
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A streamed body carrying its request's record, finished when the body ends or is dropped.
struct ObservedBody {
    body: ResponseBody,
    observed: Observed,
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.observed.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
