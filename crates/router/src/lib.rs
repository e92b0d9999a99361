//! Routing: from the model a client asked for to the deployment that answers, and what
//! happens when one fails.
//!
//! A model group is every deployment sharing a `model_name`; `model_group_alias` adds other
//! names for a group; a `model_name` holding `*` is a wildcard group (`openai/*`) whose
//! matched part fills the `*` of the upstream model.
//!
//! For each request [`Router::route`] picks a deployment (the lowest `order` that has one
//! available, then a shuffle weighted by `weight`, else `rpm`, else `tpm`), calls it, and on
//! a retryable failure tries again up to `num_retries` times, on another deployment of the
//! group when there is one. When the group is exhausted, the fallback groups for that kind
//! of failure (`fallbacks`, `context_window_fallbacks`, `content_policy_fallbacks`,
//! `default_fallbacks`) are tried in order, at most `max_fallbacks` of them. A deployment
//! that fails more than `allowed_fails` times within a minute, or answers 401, 404 or 429,
//! cools down for `cooldown_time` unless it is the only one in its group; when every
//! deployment of a group is cooling, the group answers 429 saying when the first returns.
//!
//! A deployment with an `rpm` limit takes no more requests in a minute than that; when none
//! of a group can, the group answers 429 like a cooled one.
//!
//! Cooldowns and rpm usage live in a [`HealthBoard`] shared by every worker of the process.
//! An upstream's Retry-After lengthens the cooldown it causes and, when the group has no
//! other deployment, the wait before a retry (at most ten seconds).
//!
//! Still to come with the Router issue: the other routing strategies, tpm enforcement,
//! per-error retry policies, pre-call context checks, and sharing the board
//! between replicas through Redis.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;
use tollgate_domain::routing::{FallbackKind, RouterSettings};
use tollgate_domain::{Deployment, ErrorKind, GatewayError};

/// Failures are counted per deployment within windows of this length.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The longest a retry waits on an upstream's Retry-After; longer waits fail the attempt
/// instead of holding the client.
const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(10);
/// `rpm` limits count requests within windows of this length.
const RPM_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error(
        "Invalid model name passed in model={requested}. Call `/v1/models` to view available models for your key. Available models: {}",
        available.join(", ")
    )]
    UnknownModel { requested: String, available: Vec<String> },
    #[error("No deployments available for selected model, Try again in {} seconds. Passed model={model}", retry_in.as_secs().max(1))]
    NoDeployments { model: String, retry_in: Duration },
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
        }
    }
}

struct ModelGroup {
    name: String,
    deployments: Vec<Arc<Deployment>>,
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
}

/// What a single request may change about its routing (LiteLLM's per-request parameters).
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// `fallbacks`: groups to try after this one, instead of the configured ones.
    pub fallbacks: Option<Vec<String>>,
    /// `num_retries`: instead of the configured number.
    pub num_retries: Option<u32>,
    /// `mock_testing_fallbacks`: fail the requested group on purpose, to exercise fallbacks.
    pub mock_testing_fallbacks: bool,
}

/// Cooldowns, failure counts and rpm usage of every deployment, shared by all workers of a
/// process.
#[derive(Debug, Default)]
pub struct HealthBoard {
    deployments: Mutex<HashMap<String, Health>>,
    /// Requests per deployment in the current minute, for deployments with an `rpm` limit.
    minute_usage: Mutex<HashMap<String, (Instant, u64)>>,
    /// Whether any deployment ever cooled down: until then, picking needs no lock.
    ever_cooled: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Health {
    window_start: Instant,
    failures: u32,
    cooldown_until: Option<Instant>,
}

impl HealthBoard {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// When the deployment's cooldown ends, if it is cooling at `now`.
    fn cooling_until(&self, id: &str, now: Instant) -> Option<Instant> {
        if !self.ever_cooled.load(Ordering::Relaxed) {
            return None;
        }
        let board = self.deployments.lock().unwrap_or_else(PoisonError::into_inner);
        board.get(id).and_then(|h| h.cooldown_until).filter(|until| *until > now)
    }

    /// Counts one request against `rpm`, or says when the deployment's minute ends if it
    /// has none left.
    fn take_rpm_slot(&self, id: &str, rpm: u64, now: Instant) -> Result<(), Instant> {
        let mut usage = self.minute_usage.lock().unwrap_or_else(PoisonError::into_inner);
        let (window_start, count) = usage.entry(id.to_owned()).or_insert((now, 0));
        if now.duration_since(*window_start) >= RPM_WINDOW {
            *window_start = now;
            *count = 0;
        }
        if *count >= rpm {
            return Err(*window_start + RPM_WINDOW);
        }
        *count += 1;
        Ok(())
    }

    /// Counts a failure; cools the deployment down for `cooldown_time` (or the upstream's
    /// longer `retry_after`) when it is `immediate` or one failure too many.
    fn record_failure(
        &self,
        id: &str,
        immediate: bool,
        retry_after: Option<Duration>,
        settings: &RouterSettings,
        may_cool: bool,
    ) {
        let now = Instant::now();
        let mut board = self.deployments.lock().unwrap_or_else(PoisonError::into_inner);
        let health = board.entry(id.to_owned()).or_insert(Health {
            window_start: now,
            failures: 0,
            cooldown_until: None,
        });
        if now.duration_since(health.window_start) >= FAILURE_WINDOW {
            health.window_start = now;
            health.failures = 0;
        }
        health.failures += 1;
        if may_cool && (immediate || health.failures > settings.allowed_fails) {
            let cooldown =
                retry_after.map_or(settings.cooldown_time, |after| after.max(settings.cooldown_time));
            health.cooldown_until = Some(now + cooldown);
            health.failures = 0;
            self.ever_cooled.store(true, Ordering::Relaxed);
            tracing::warn!(
                deployment = id,
                cooldown_secs = cooldown.as_secs_f64(),
                "deployment cooling down"
            );
        }
    }
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
        let mut groups: Vec<ModelGroup> = Vec::new();
        for deployment in deployments {
            let deployment = Arc::new(deployment);
            match groups.iter_mut().find(|g| g.name == deployment.model_name) {
                Some(group) => group.deployments.push(deployment),
                None => groups
                    .push(ModelGroup { name: deployment.model_name.clone(), deployments: vec![deployment] }),
            }
        }
        Self { groups, settings, health }
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

    /// The name of the group serving `model` (an alias or wildcard resolved), if any.
    pub fn group_name(&self, model: &str) -> Option<&str> {
        self.find(model).map(|(group, _)| group.name.as_str())
    }

    /// The deployments of the group serving `model`.
    pub fn group(&self, model: &str) -> Option<&[Arc<Deployment>]> {
        self.find(model).map(|(group, _)| group.deployments.as_slice())
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

    /// Picks a deployment of `model`'s group as [`Router::route`] would for a first attempt.
    pub fn select(&self, model: &str) -> Result<Selection<'_>, RouterError> {
        let (group, captured) = self.find(model).ok_or_else(|| self.unknown(model))?;
        self.pick(group, captured, model, &[])
    }

    fn pick<'r>(
        &'r self,
        group: &'r ModelGroup,
        captured: Option<&str>,
        model: &str,
        exclude: &[String],
    ) -> Result<Selection<'r>, RouterError> {
        // The only deployment of a group never cools down, and without an rpm limit there
        // is nothing to look up.
        if let [only] = group.deployments.as_slice()
            && only.rpm.is_none()
        {
            return Ok(Selection::of(only, captured));
        }
        let now = Instant::now();
        let mut first_back: Option<Instant> = None;
        let mut note_back =
            |until: Instant| first_back = Some(first_back.map_or(until, |t: Instant| t.min(until)));
        let mut available: Vec<&Arc<Deployment>> = Vec::with_capacity(group.deployments.len());
        for deployment in &group.deployments {
            match self.health.cooling_until(&deployment.id, now) {
                Some(until) => note_back(until),
                None => available.push(deployment),
            }
        }
        // Prefer deployments this request has not failed on yet.
        if available.iter().any(|d| !exclude.contains(&d.id)) {
            available.retain(|d| !exclude.contains(&d.id));
        }
        while !available.is_empty() {
            let best_order = available.iter().map(|d| d.order.unwrap_or(u32::MAX)).min().unwrap_or(u32::MAX);
            let tier: Vec<&Arc<Deployment>> =
                available.iter().copied().filter(|d| d.order.unwrap_or(u32::MAX) == best_order).collect();
            let chosen = weighted_choice(&tier);
            match chosen.rpm.map(|rpm| self.health.take_rpm_slot(&chosen.id, rpm, now)) {
                None | Some(Ok(())) => return Ok(Selection::of(chosen, captured)),
                // Out of requests for this minute: try the others.
                Some(Err(until)) => {
                    note_back(until);
                    available.retain(|d| d.id != chosen.id);
                }
            }
        }
        let retry_in = first_back.map_or(self.settings.cooldown_time, |t| t.duration_since(now));
        Err(RouterError::NoDeployments { model: model.to_owned(), retry_in })
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
        let num_retries = options.num_retries.unwrap_or(self.settings.num_retries);
        let mut retries = 0;
        let first = if options.mock_testing_fallbacks {
            Err(GatewayError::new(
                ErrorKind::Upstream(500),
                format!("mock_testing_fallbacks=true: model group {} failed on purpose", group.name),
            ))
        } else {
            self.try_group(group, captured, model, num_retries, &mut call, &mut retries).await
        };
        let error = match first {
            Ok((value, deployment)) => return Ok(Routed { value, deployment, retries, fallbacks: 0 }),
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
            match self.try_group(fallback, None, target, num_retries, &mut call, &mut retries).await {
                Ok((value, deployment)) => return Ok(Routed { value, deployment, retries, fallbacks }),
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
        num_retries: u32,
        call: &mut F,
        retries: &mut u32,
    ) -> Result<(T, Arc<Deployment>), GatewayError>
    where
        F: FnMut(Selection<'_>) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let mut failed: Vec<String> = Vec::new();
        let mut attempt = 0;
        loop {
            let selection = self.pick(group, captured, model, &failed)?;
            let deployment = Arc::clone(&selection.deployment);
            match call(selection).await {
                Ok(value) => return Ok((value, deployment)),
                Err(error) => {
                    if counts_against_deployment(&error) {
                        let immediate = matches!(error.kind, ErrorKind::Upstream(401 | 404 | 429));
                        let may_cool = group.deployments.len() > 1;
                        self.health.record_failure(
                            &deployment.id,
                            immediate,
                            error.retry_after,
                            &self.settings,
                            may_cool,
                        );
                    }
                    if !error.retryable || attempt >= num_retries {
                        return Err(error);
                    }
                    attempt += 1;
                    *retries += 1;
                    failed.push(deployment.id.clone());
                    // With nowhere else to go, honour the upstream's Retry-After (up to a bound).
                    let wait = match error.retry_after {
                        Some(after) if group.deployments.len() == 1 => {
                            retry_delay(attempt).max(after.min(MAX_RETRY_AFTER_WAIT))
                        }
                        _ => retry_delay(attempt),
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
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

/// Picks by `weight`, else `rpm`, else `tpm` when every candidate has one; else uniformly.
fn weighted_choice<'d>(candidates: &[&'d Arc<Deployment>]) -> &'d Arc<Deployment> {
    if candidates.len() == 1 {
        return candidates[0];
    }
    let weights: Option<Vec<f64>> = candidates
        .iter()
        .map(|d| d.weight.or(d.rpm.map(|r| r as f64)).or(d.tpm.map(|t| t as f64)).filter(|w| *w > 0.0))
        .collect();
    let mut rng = rand::rng();
    match weights {
        Some(weights) => {
            let total: f64 = weights.iter().sum();
            let mut point = rng.random_range(0.0..total);
            for (candidate, weight) in candidates.iter().zip(&weights) {
                if point < *weight {
                    return candidate;
                }
                point -= weight;
            }
            candidates[candidates.len() - 1]
        }
        None => candidates[rng.random_range(0..candidates.len())],
    }
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
mod tests;
