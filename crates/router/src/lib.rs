//! Routing: from the model a client asked for to the deployment that answers, and what
//! happens when one fails.
//!
//! A model group is every deployment sharing a `model_name`; `model_group_alias` adds other
//! names for a group; a `model_name` holding `*` is a wildcard group (`openai/*`) whose
//! matched part fills the `*` of the upstream model.
//!
//! For each attempt [`Router::route`] picks a deployment: those cooling down, over their
//! `tpm` for the minute, or (with `enable_pre_call_checks`) too small for the prompt are left
//! out; the lowest `order` that has one available wins; the `routing_strategy` chooses within
//! it (`simple-shuffle`: a shuffle weighted by `weight`, else `rpm`, else `tpm`; `least-busy`,
//! `latency-based-routing`, `usage-based-routing-v2`, `cost-based-routing`); a deployment
//! whose `rpm` is spent for the minute passes its turn. On a retryable failure the router
//! tries again up to `num_retries` times (or as `retry_policy` says for that kind of
//! failure), on another deployment of the group when there is one, waiting at least
//! `retry_after`. When the group is exhausted, the fallback groups for that kind of failure
//! (`fallbacks`, `context_window_fallbacks`, `content_policy_fallbacks`,
//! `default_fallbacks`) are tried in order, at most `max_fallbacks` of them. A deployment
//! that fails more than `allowed_fails` times within a minute (or as `allowed_fails_policy`
//! allows for that kind), or answers 401, 404 or 429, cools down for `cooldown_time` unless
//! it is the only one in its group; when every deployment of a group is cooling or out of
//! its limits, the group answers 429 saying when the first returns.
//!
//! What the strategies and limits need to know about each call (tokens used, latency, time
//! to first token, requests in flight) comes back through the [`Ticket`] of the call that
//! succeeded. All of it lives in a [`HealthBoard`] shared by every worker of the process.
//! An upstream's Retry-After lengthens the cooldown it causes and, when the group has no
//! other deployment, the wait before a retry (at most ten seconds).
//!
//! Replicas share the board when something carries its sync rounds between them (the HTTP
//! crate does, through Redis: see `sync.rs`); background health checks report through
//! [`Router::record_health_check`].

mod board;
mod sync;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;
use tollgate_domain::routing::{FailureClass, FallbackKind, RouterSettings, RoutingStrategy};
use tollgate_domain::tokens::Encoding;
use tollgate_domain::{Deployment, ErrorKind, GatewayError};

use board::{DeploymentStats, Tracking, wants};
pub use board::{HealthBoard, Ticket};
pub use sync::SyncRound;

/// The longest a retry waits on an upstream's Retry-After; longer waits fail the attempt
/// instead of holding the client.
const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(10);
/// What cost-based routing assumes a token of an unpriced deployment costs, input and
/// output each (LiteLLM's default), so that priced deployments go first.
const UNKNOWN_PRICE_PER_TOKEN: f64 = 5.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error(
        "Invalid model name passed in model={requested}. Call `/v1/models` to view available models for your key. Available models: {}",
        available.join(", ")
    )]
    UnknownModel { requested: String, available: Vec<String> },
    #[error("No deployments available for selected model, Try again in {} seconds. Passed model={model}", retry_in.as_secs().max(1))]
    NoDeployments { model: String, retry_in: Duration },
    #[error(
        "Context Window exceeded for given call. No models have context window large enough for this call. Passed model={model}, prompt tokens={prompt_tokens}, largest context window={largest}"
    )]
    ContextWindowExceeded { model: String, prompt_tokens: u64, largest: u64 },
}

impl From<RouterError> for GatewayError {
    fn from(error: RouterError) -> Self {
        match &error {
            RouterError::UnknownModel { .. } => {
                GatewayError::bad_request(error.to_string()).with_param("model")
            }
            RouterError::NoDeployments { retry_in, .. } => {
                let mut gateway = GatewayError::new(ErrorKind::NoDeploymentsAvailable, error.to_string());
                gateway.retry_after = Some(*retry_in);
                gateway
            }
            RouterError::ContextWindowExceeded { .. } => {
                let mut gateway = GatewayError::bad_request(error.to_string()).with_param("messages");
                gateway.upstream_code = Some("context_length_exceeded".to_owned());
                gateway
            }
        }
    }
}

struct ModelGroup {
    name: String,
    deployments: Vec<Arc<Deployment>>,
    /// Each deployment's state on the board, in the same order.
    stats: Vec<Arc<DeploymentStats>>,
    /// Each deployment's context window in tokens, when known.
    context: Vec<Option<u64>>,
    /// Each deployment's price of an input plus an output token (cost-based routing).
    price: Vec<f64>,
}

/// The deployment chosen for one attempt.
#[derive(Debug, Clone)]
pub struct Selection<'r> {
    pub deployment: Arc<Deployment>,
    /// The model name to send upstream, with any wildcard filled in.
    pub upstream_model: Cow<'r, str>,
}

impl<'r> Selection<'r> {
    /// `deployment`, with the part of the alias a wildcard `captured` filled in.
    fn of(deployment: &'r Arc<Deployment>, captured: Option<&str>) -> Self {
        let upstream_model = match captured {
            Some(captured) if deployment.upstream_model.contains('*') => {
                Cow::Owned(deployment.upstream_model.replacen('*', captured, 1))
            }
            _ => Cow::Borrowed(deployment.upstream_model.as_str()),
        };
        Selection { deployment: Arc::clone(deployment), upstream_model }
    }
}

/// A successful call and how it was reached.
#[derive(Debug)]
pub struct Routed<T> {
    pub value: T,
    pub deployment: Arc<Deployment>,
    /// Attempts after the first, within groups.
    pub retries: u32,
    /// Fallback groups tried.
    pub fallbacks: u32,
    /// Finish it with the call's usage once the answer is complete (a stream's end).
    pub ticket: Ticket,
}

/// What a single request may change about its routing (LiteLLM's per-request parameters),
/// and what the router needs to know about it.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// `fallbacks`: groups to try after this one, instead of the configured ones.
    pub fallbacks: Option<Vec<String>>,
    /// `num_retries`: instead of the configured number.
    pub num_retries: Option<u32>,
    /// `mock_testing_fallbacks`: fail the requested group on purpose, to exercise fallbacks.
    pub mock_testing_fallbacks: bool,
    /// The client asked for a stream (latency-based routing ranks by time to first token).
    pub stream: bool,
    /// The prompt's tokens, when counted (only with `enable_pre_call_checks`): deployments
    /// whose context window or remaining `tpm` cannot take them are skipped.
    pub prompt_tokens: Option<u64>,
}

pub struct Router {
    groups: Vec<ModelGroup>,
    settings: RouterSettings,
    health: Arc<HealthBoard>,
}

impl Router {
    pub fn new(
        deployments: impl IntoIterator<Item = Deployment>,
        settings: RouterSettings,
        health: Arc<HealthBoard>,
    ) -> Self {
        let samples = settings.strategy_args.max_latency_list_size;
        let mut groups: Vec<ModelGroup> = Vec::new();
        let strategy = settings.routing_strategy;
        for deployment in deployments {
            let stats = health.stats(&deployment.id, samples);
            let mut wanted = 0;
            if deployment.rpm.is_some() {
                wanted |= wants::REQUESTS;
            }
            if deployment.tpm.is_some() || strategy == RoutingStrategy::UsageBased {
                wanted |= wants::TOKENS;
            }
            if strategy == RoutingStrategy::LatencyBased {
                wanted |= wants::LATENCY;
            }
            stats.want(wanted, settings.strategy_args.ttl);
            let context = context_window(&deployment);
            let price = deployment.pricing.map_or(2.0 * UNKNOWN_PRICE_PER_TOKEN, |p| p.input + p.output);
            let deployment = Arc::new(deployment);
            let index = match groups.iter().position(|g| g.name == deployment.model_name) {
                Some(index) => index,
                None => {
                    groups.push(ModelGroup {
                        name: deployment.model_name.clone(),
                        deployments: Vec::new(),
                        stats: Vec::new(),
                        context: Vec::new(),
                        price: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[index];
            group.deployments.push(deployment);
            group.stats.push(stats);
            group.context.push(context);
            group.price.push(price);
        }
        Self { groups, settings, health }
    }

    /// The board this router shares with the other workers.
    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }

    /// Whether requests should count their prompt tokens for this router
    /// (`enable_pre_call_checks`).
    pub fn counts_prompt_tokens(&self) -> bool {
        self.settings.enable_pre_call_checks
    }

    /// The encoding to count `model`'s prompts with: that of the upstream model of the
    /// group's first deployment.
    pub fn encoding(&self, model: &str) -> Encoding {
        let upstream = self.group(model).and_then(|group| group.first()).map(|d| d.upstream_model.as_str());
        Encoding::for_model(upstream.unwrap_or(model))
    }

    /// Whether a call to `model` should report its usage (its tokens count against a `tpm`
    /// limit, or the strategy ranks by tokens or by latency per token), so that a stream is
    /// asked for its usage even when nobody else needs it.
    pub fn wants_usage(&self, model: &str) -> bool {
        matches!(self.settings.routing_strategy, RoutingStrategy::UsageBased | RoutingStrategy::LatencyBased)
            || self.group(model).is_some_and(|group| group.iter().any(|d| d.tpm.is_some()))
    }

    /// What `/v1/models` lists: every group, then every alias not marked hidden.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        let aliases = self.settings.model_group_alias.iter().filter(|a| !a.hidden).map(|a| a.alias.as_str());
        self.groups.iter().map(|g| g.name.as_str()).chain(aliases)
    }

    /// Every deployment of every group, in config order.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.groups.iter().flat_map(|g| g.deployments.iter())
    }

    /// Records a background health check of deployment `id` (`Ok`: it answered). With
    /// `enable_health_check_routing`, a failure keeps the deployment out of rotation (while
    /// its group has another available) until a check passes or `health_check_staleness_threshold`
    /// passes without one; with an `allowed_fails_policy` the failure counts towards a
    /// cooldown instead, as a failed request does. `health_check_ignore_transient_errors`
    /// leaves 429s and timeouts out of it.
    pub fn record_health_check(&self, id: &str, outcome: Result<(), &GatewayError>) {
        let routing = &self.settings.health_check_routing;
        if !routing.enabled {
            return;
        }
        let Some((group, index)) = self
            .groups
            .iter()
            .find_map(|group| group.deployments.iter().position(|d| d.id == id).map(|index| (group, index)))
        else {
            return;
        };
        let stats = &group.stats[index];
        let now = Instant::now();
        let error = match outcome {
            Ok(()) => {
                if stats.unhealthy(now) {
                    tracing::info!(deployment = %id, "deployment passed its health check: back in rotation");
                }
                stats.set_unhealthy(None);
                return;
            }
            Err(error) => error,
        };
        let class = FailureClass::of(error);
        if routing.ignore_transient_errors
            && matches!(class, Some(FailureClass::RateLimit | FailureClass::Timeout))
        {
            return;
        }
        if self.settings.allowed_fails_policy.is_empty() {
            if !stats.unhealthy(now) {
                tracing::warn!(deployment = %id, error = %error.message, "deployment failed its health check: out of rotation until it passes");
            }
            stats.set_unhealthy(Some(now + routing.staleness));
        } else {
            let immediate = matches!(error.kind, ErrorKind::Upstream(401 | 404 | 429));
            let may_cool = group.deployments.len() > 1;
            stats.record_failure(class, immediate, error.retry_after, &self.settings, may_cool);
        }
    }

    /// Every deployment cooling down now, with the time it has left (read by the gateway's
    /// metrics and alerts; routing does not use it).
    pub fn cooling_down(&self) -> Vec<(Arc<Deployment>, Duration)> {
        let now = Instant::now();
        self.groups
            .iter()
            .flat_map(|group| group.deployments.iter().zip(&group.stats))
            .filter_map(|(deployment, stats)| {
                stats.cooling_until(now).map(|until| (Arc::clone(deployment), until.duration_since(now)))
            })
            .collect()
    }

    /// The name of the group serving `model` (an alias or wildcard resolved), if any.
    pub fn group_name(&self, model: &str) -> Option<&str> {
        self.find(model).map(|(group, _)| group.name.as_str())
    }

    /// The deployments of the group serving `model`.
    pub fn group(&self, model: &str) -> Option<&[Arc<Deployment>]> {
        self.find(model).map(|(group, _)| group.deployments.as_slice())
    }

    /// The smallest context window among `model`'s deployments (`model_info.max_input_tokens`,
    /// else `max_tokens`, else the pricing table's), for a guardrail that must fit the
    /// prompt before it knows which deployment will answer.
    pub fn context_window(&self, model: &str) -> Option<u64> {
        self.group(model)?.iter().filter_map(|deployment| context_window(deployment)).min()
    }

    /// The group for `model`: an alias, the exact name, else the first wildcard that matches.
    fn find<'m>(&self, model: &'m str) -> Option<(&ModelGroup, Option<&'m str>)> {
        let name = self
            .settings
            .model_group_alias
            .iter()
            .find(|a| a.alias == model)
            .map_or(model, |a| a.group.as_str());
        if let Some(group) = self.groups.iter().find(|g| g.name == name) {
            return Some((group, None));
        }
        self.groups.iter().find_map(|g| wildcard_match(&g.name, model).map(|captured| (g, Some(captured))))
    }

    fn unknown(&self, model: &str) -> RouterError {
        RouterError::UnknownModel {
            requested: model.to_owned(),
            available: self.model_names().map(str::to_owned).collect(),
        }
    }

    /// Picks a deployment of `model`'s group as [`Router::route`] would for a first attempt
    /// of a request with these `options` (counting it against the deployment's `rpm`).
    pub fn select(&self, model: &str, options: &RequestOptions) -> Result<Selection<'_>, RouterError> {
        let (group, captured) = self.find(model).ok_or_else(|| self.unknown(model))?;
        self.pick(group, captured, model, &[], options).map(|(_, selection)| selection)
    }

    /// Picks a deployment of `group` that this request has not failed on (`exclude`) when
    /// there is one; returns its index in the group too.
    fn pick<'r>(
        &'r self,
        group: &'r ModelGroup,
        captured: Option<&str>,
        model: &str,
        exclude: &[usize],
        options: &RequestOptions,
    ) -> Result<(usize, Selection<'r>), RouterError> {
        let prompt = options.prompt_tokens.filter(|_| self.settings.enable_pre_call_checks);
        let too_small =
            |index: usize| prompt.is_some_and(|p| group.context[index].is_some_and(|max| max < p));
        // The only deployment of a group never cools down; without a limit to check there
        // is nothing to look up.
        if let [only] = group.deployments.as_slice()
            && only.rpm.is_none()
            && only.tpm.is_none()
            && !too_small(0)
        {
            return Ok((0, Selection::of(only, captured)));
        }
        if let Some(prompt_tokens) = prompt
            && (0..group.deployments.len()).all(too_small)
        {
            let largest = group.context.iter().flatten().copied().max().unwrap_or(0);
            return Err(RouterError::ContextWindowExceeded {
                model: model.to_owned(),
                prompt_tokens,
                largest,
            });
        }
        let now = Instant::now();
        let mut first_back: Option<Instant> = None;
        let mut note_back =
            |until: Instant| first_back = Some(first_back.map_or(until, |t: Instant| t.min(until)));
        let mut available: Vec<usize> = Vec::with_capacity(group.deployments.len());
        for (index, deployment) in group.deployments.iter().enumerate() {
            let stats = &group.stats[index];
            if too_small(index) {
                continue;
            }
            if let Some(until) = stats.cooling_until(now) {
                note_back(until);
                continue;
            }
            if let Some(tpm) = deployment.tpm {
                let (used, end) = stats.tokens_used(now);
                if used >= tpm || used.saturating_add(prompt.unwrap_or(0)) > tpm {
                    note_back(end);
                    continue;
                }
            }
            available.push(index);
        }
        // Deployments that failed their last health check serve only when no other can.
        if self.settings.health_check_routing.enabled
            && available.iter().any(|index| !group.stats[*index].unhealthy(now))
        {
            available.retain(|index| !group.stats[*index].unhealthy(now));
        }
        // Prefer deployments this request has not failed on yet.
        if available.iter().any(|index| !exclude.contains(index)) {
            available.retain(|index| !exclude.contains(index));
        }
        let order = |index: usize| group.deployments[index].order.unwrap_or(u32::MAX);
        available.sort_unstable_by_key(|index| order(*index));
        while let Some(&first) = available.first() {
            let tier = available.iter().take_while(|index| order(**index) == order(first)).count();
            let at = self.choose(group, &available[..tier], options, now);
            let index = available[at];
            let deployment = &group.deployments[index];
            let stats = &group.stats[index];
            match deployment.rpm.map(|rpm| stats.take_request(rpm, now)) {
                None | Some(Ok(())) => return Ok((index, Selection::of(deployment, captured))),
                // Out of requests for this minute: try the others.
                Some(Err(end)) => {
                    note_back(end);
                    available.remove(at);
                }
            }
        }
        let retry_in = first_back.map_or(self.settings.cooldown_time, |t| t.duration_since(now));
        Err(RouterError::NoDeployments { model: model.to_owned(), retry_in })
    }

    /// The routing strategy's choice among `tier` (indices into the group, one `order`):
    /// the position of the chosen one in `tier`.
    fn choose(&self, group: &ModelGroup, tier: &[usize], options: &RequestOptions, now: Instant) -> usize {
        if tier.len() == 1 {
            return 0;
        }
        match self.settings.routing_strategy {
            RoutingStrategy::SimpleShuffle => weighted_choice(&group.deployments, tier),
            RoutingStrategy::LeastBusy => lowest(tier, 0.0, |i| group.stats[i].in_flight() as f64),
            RoutingStrategy::LatencyBased => {
                let args = &self.settings.strategy_args;
                // A deployment not measured yet counts as the fastest, so that it gets measured.
                lowest(tier, args.lowest_latency_buffer, |i| {
                    group.stats[i].latency(options.stream, now, args.ttl).unwrap_or(0.0)
                })
            }
            RoutingStrategy::UsageBased => lowest(tier, 0.0, |i| group.stats[i].tokens_used(now).0 as f64),
            RoutingStrategy::CostBased => lowest(tier, 0.0, |i| group.price[i]),
        }
    }

    /// A ticket for an attempt on deployment `index` of `group`, tracking what the strategy
    /// and the deployment's limits need.
    fn ticket(&self, group: &ModelGroup, index: usize, stream: bool) -> Ticket {
        let strategy = self.settings.routing_strategy;
        let tracking = Tracking {
            in_flight: strategy == RoutingStrategy::LeastBusy,
            latency: strategy == RoutingStrategy::LatencyBased,
            tokens: strategy == RoutingStrategy::UsageBased || group.deployments[index].tpm.is_some(),
        };
        Ticket::start(&group.stats[index], tracking, stream)
    }

    /// Calls `call` with a deployment of `model`'s group, retrying and falling back as the
    /// settings (and the request's `options`) say, and returns the first success or the last
    /// failure.
    pub async fn route<T, F, Fut>(
        &self,
        model: &str,
        options: &RequestOptions,
        mut call: F,
    ) -> Result<Routed<T>, GatewayError>
    where
        F: FnMut(Selection<'_>) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let (group, captured) = self.find(model).ok_or_else(|| self.unknown(model))?;
        let mut retries = 0;
        let first = if options.mock_testing_fallbacks {
            Err(GatewayError::new(
                ErrorKind::Upstream(500),
                format!("mock_testing_fallbacks=true: model group {} failed on purpose", group.name),
            ))
        } else {
            self.try_group(group, captured, model, options, &mut call, &mut retries).await
        };
        let error = match first {
            Ok((value, deployment, ticket)) => {
                return Ok(Routed { value, deployment, retries, fallbacks: 0, ticket });
            }
            Err(error) => error,
        };
        let Some(kind) = fallback_kind(&error) else { return Err(error) };
        let targets = match &options.fallbacks {
            Some(targets) => targets.as_slice(),
            None => self.settings.fallbacks_for(&group.name, kind),
        };
        let mut last = error;
        let mut fallbacks = 0;
        for target in targets.iter().take(self.settings.max_fallbacks) {
            let Some(fallback) = self.groups.iter().find(|g| &g.name == target) else { continue };
            fallbacks += 1;
            tracing::info!(from = %group.name, to = %fallback.name, error = %last.message, "falling back");
            match self.try_group(fallback, None, target, options, &mut call, &mut retries).await {
                Ok((value, deployment, ticket)) => {
                    return Ok(Routed { value, deployment, retries, fallbacks, ticket });
                }
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    async fn try_group<T, F, Fut>(
        &self,
        group: &ModelGroup,
        captured: Option<&str>,
        model: &str,
        options: &RequestOptions,
        call: &mut F,
        retries: &mut u32,
    ) -> Result<(T, Arc<Deployment>, Ticket), GatewayError>
    where
        F: FnMut(Selection<'_>) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let num_retries = options.num_retries.unwrap_or(self.settings.num_retries);
        let policy = self.settings.retry_policy_for(&group.name);
        let mut failed: Vec<usize> = Vec::new();
        let mut attempt = 0;
        loop {
            let (index, selection) = self.pick(group, captured, model, &failed, options)?;
            let deployment = Arc::clone(&selection.deployment);
            let mut ticket = self.ticket(group, index, options.stream);
            match call(selection).await {
                Ok(value) => {
                    ticket.answered();
                    return Ok((value, deployment, ticket));
                }
                Err(error) => {
                    drop(ticket);
                    let class = FailureClass::of(&error);
                    let policed = class.and_then(|c| self.settings.allowed_fails_policy.get(c)).is_some();
                    let stats = &group.stats[index];
                    if counts_against_deployment(&error) || policed {
                        let immediate = matches!(error.kind, ErrorKind::Upstream(401 | 404 | 429));
                        let may_cool = group.deployments.len() > 1;
                        stats.record_failure(class, immediate, error.retry_after, &self.settings, may_cool);
                    }
                    if class == Some(FailureClass::Timeout)
                        && self.settings.routing_strategy == RoutingStrategy::LatencyBased
                    {
                        stats.record_timeout(options.stream, Instant::now());
                    }
                    let allowed = if is_context_window(&error) {
                        // The same prompt will not fit on a retry; its fallbacks are for that.
                        0
                    } else {
                        match policy.for_error(&error) {
                            Some(retries) => retries,
                            None if error.retryable => num_retries,
                            None => 0,
                        }
                    };
                    if attempt >= allowed {
                        return Err(error);
                    }
                    attempt += 1;
                    *retries += 1;
                    failed.push(index);
                    // With nowhere else to go, honour the upstream's Retry-After (up to a bound).
                    let wait = match error.retry_after {
                        Some(after) if group.deployments.len() == 1 => {
                            retry_delay(attempt).max(after.min(MAX_RETRY_AFTER_WAIT))
                        }
                        _ => retry_delay(attempt),
                    };
                    tokio::time::sleep(wait.max(self.settings.retry_after)).await;
                }
            }
        }
    }
}

/// A deployment's context window: `model_info.max_input_tokens`, else `model_info.max_tokens`,
/// else the pricing table's `max_input_tokens`.
fn context_window(deployment: &Deployment) -> Option<u64> {
    let info = |key: &str| deployment.model_info.get(key).and_then(serde_json::Value::as_u64);
    info("max_input_tokens")
        .or_else(|| info("max_tokens"))
        .or_else(|| deployment.pricing.and_then(|p| p.max_input_tokens))
}

fn is_context_window(error: &GatewayError) -> bool {
    error.upstream_code.as_deref() == Some("context_length_exceeded")
}

/// Failures that say something about the deployment (not about the request).
fn counts_against_deployment(error: &GatewayError) -> bool {
    error.retryable || matches!(error.kind, ErrorKind::Upstream(401 | 403 | 404))
}

/// Which fallback list a group's final failure calls for, if any.
fn fallback_kind(error: &GatewayError) -> Option<FallbackKind> {
    match error.upstream_code.as_deref() {
        Some("context_length_exceeded") => Some(FallbackKind::ContextWindow),
        Some("content_filter" | "content_policy_violation") => Some(FallbackKind::ContentPolicy),
        _ if counts_against_deployment(error) => Some(FallbackKind::General),
        _ => None,
    }
}

/// The position in `tier` of a pick weighted by `weight`, else `rpm`, else `tpm` when every
/// candidate has one; else uniform.
fn weighted_choice(deployments: &[Arc<Deployment>], tier: &[usize]) -> usize {
    let weight = |index: usize| {
        let d = &deployments[index];
        d.weight.or(d.rpm.map(|r| r as f64)).or(d.tpm.map(|t| t as f64)).filter(|w| *w > 0.0)
    };
    let mut rng = rand::rng();
    let total: Option<f64> = tier.iter().map(|index| weight(*index)).sum();
    let Some(total) = total else { return rng.random_range(0..tier.len()) };
    let mut point = rng.random_range(0.0..total);
    for (at, index) in tier.iter().enumerate() {
        let w = weight(*index).unwrap_or(0.0);
        if point < w {
            return at;
        }
        point -= w;
    }
    tier.len() - 1
}

/// The position in `tier` of a random one among those whose `key` is within `buffer` (a
/// fraction) of the lowest.
fn lowest(tier: &[usize], buffer: f64, key: impl Fn(usize) -> f64) -> usize {
    let min = tier.iter().map(|index| key(*index)).fold(f64::INFINITY, f64::min);
    let limit = min + min.abs() * buffer;
    let mut rng = rand::rng();
    let (mut chosen, mut seen) = (0, 0u32);
    for (at, index) in tier.iter().enumerate() {
        if key(*index) <= limit {
            // Reservoir sampling: each of the `seen` ties ends up chosen with chance 1/seen.
            seen += 1;
            if rng.random_range(0..seen) == 0 {
                chosen = at;
            }
        }
    }
    chosen
}

/// Matches `model` against a pattern with at most one `*`, returning what the `*` covered.
fn wildcard_match<'m>(pattern: &str, model: &'m str) -> Option<&'m str> {
    let (prefix, suffix) = pattern.split_once('*')?;
    if model.len() < prefix.len() + suffix.len() {
        return None;
    }
    let middle = model.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!middle.is_empty()).then_some(middle)
}

/// Delay before retry number `attempt` (1-based): 100 ms doubling, at most 2 s, with jitter
/// so that replicas retrying the same outage do not arrive in step.
pub fn retry_delay(attempt: u32) -> Duration {
    let base_ms = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)).min(2_000);
    let jitter = rand::rng().random_range(0..=base_ms / 4);
    Duration::from_millis(base_ms + jitter)
}

/// Runs `call` once, then again while it fails with a retryable error, up to `max_retries`
/// extra times: a deployment's own `max_retries`, within one routing attempt.
pub async fn with_retries<T, F, Fut>(max_retries: u32, mut call: F) -> Result<T, GatewayError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, GatewayError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(error) if error.retryable && attempt < max_retries => {
                attempt += 1;
                tokio::time::sleep(retry_delay(attempt)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod strategy_tests;
#[cfg(test)]
mod tests;
