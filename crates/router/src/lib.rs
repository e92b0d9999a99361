//! Routing: from the model a client asked for to the deployment that serves it.
//!
//! A model group is every deployment sharing a `model_name`; a `model_name` holding `*` is a
//! wildcard group (`openai/*`) whose matched part fills the `*` of the upstream model. The
//! router picks one deployment of the group (LiteLLM's default `simple-shuffle`) and retries
//! retryable failures on it up to its `max_retries`.
//!
//! Still to come with the Router issue: weights and the other strategies, fallbacks across
//! groups, cooldowns, and rpm/tpm accounting.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tollgate_domain::{Deployment, ErrorKind, GatewayError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error(
        "Invalid model name passed in model={requested}. Call `/v1/models` to view available models for your key. Available models: {}",
        available.join(", ")
    )]
    UnknownModel { requested: String, available: Vec<String> },
    #[error("No deployments available for selected model={0}")]
    NoDeployments(String),
}

impl From<RouterError> for GatewayError {
    fn from(error: RouterError) -> Self {
        match &error {
            RouterError::UnknownModel { .. } => {
                GatewayError::bad_request(error.to_string()).with_param("model")
            }
            RouterError::NoDeployments(_) => {
                GatewayError::new(ErrorKind::NoDeploymentsAvailable, error.to_string())
            }
        }
    }
}

struct ModelGroup {
    name: String,
    deployments: Vec<Arc<Deployment>>,
}

/// The deployment chosen for one request.
#[derive(Debug, Clone)]
pub struct Selection<'r> {
    pub deployment: Arc<Deployment>,
    /// The model name to send upstream, with any wildcard filled in.
    pub upstream_model: Cow<'r, str>,
}

pub struct Router {
    groups: Vec<ModelGroup>,
}

impl Router {
    pub fn new(deployments: impl IntoIterator<Item = Deployment>) -> Self {
        let mut groups: Vec<ModelGroup> = Vec::new();
        for deployment in deployments {
            let deployment = Arc::new(deployment);
            match groups.iter_mut().find(|g| g.name == deployment.model_name) {
                Some(group) => group.deployments.push(deployment),
                None => groups
                    .push(ModelGroup { name: deployment.model_name.clone(), deployments: vec![deployment] }),
            }
        }
        Self { groups }
    }

    /// Every group name, in config order: what `/v1/models` lists.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| g.name.as_str())
    }

    /// Every deployment of every group, in config order.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.groups.iter().flat_map(|g| g.deployments.iter())
    }

    /// The deployments of the group serving `model`: the exact name first, else the first
    /// wildcard that matches.
    pub fn group(&self, model: &str) -> Option<&[Arc<Deployment>]> {
        self.find(model).map(|(group, _)| group.deployments.as_slice())
    }

    fn find<'m>(&self, model: &'m str) -> Option<(&ModelGroup, Option<&'m str>)> {
        if let Some(group) = self.groups.iter().find(|g| g.name == model) {
            return Some((group, None));
        }
        self.groups.iter().find_map(|g| wildcard_match(&g.name, model).map(|captured| (g, Some(captured))))
    }

    /// Picks the deployment for `model`, uniformly at random within its group.
    pub fn select(&self, model: &str) -> Result<Selection<'_>, RouterError> {
        let (group, captured) = self.find(model).ok_or_else(|| RouterError::UnknownModel {
            requested: model.to_owned(),
            available: self.model_names().map(str::to_owned).collect(),
        })?;
        let deployment = match group.deployments.len() {
            0 => return Err(RouterError::NoDeployments(model.to_owned())),
            1 => &group.deployments[0],
            n => &group.deployments[rand::rng().random_range(0..n)],
        };
        let upstream_model = match captured {
            Some(captured) if deployment.upstream_model.contains('*') => {
                Cow::Owned(deployment.upstream_model.replacen('*', captured, 1))
            }
            _ => Cow::Borrowed(deployment.upstream_model.as_str()),
        };
        Ok(Selection { deployment: Arc::clone(deployment), upstream_model })
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
/// extra times.
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
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tollgate_domain::GatewayConfig;

    fn router(yaml: &str) -> Router {
        Router::new(GatewayConfig::from_yaml(yaml, &HashMap::new()).unwrap().deployments)
    }

    const CONFIG: &str = "model_list:
  - {model_name: gp, litellm_params: {model: fake/a}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b}, model_info: {id: b}}
  - {model_name: embed, litellm_params: {model: fake/e}}
  - {model_name: 'openai/*', litellm_params: {model: 'fake/*'}}
";

    #[test]
    fn selects_within_the_group_and_spreads_load() {
        let router = router(CONFIG);
        let mut seen = HashMap::new();
        for _ in 0..200 {
            *seen.entry(router.select("gp").unwrap().deployment.id.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.values().all(|&n| n > 40), "{seen:?}");
        assert_eq!(router.select("embed").unwrap().upstream_model, "e");
    }

    #[test]
    fn wildcard_fills_the_upstream_model() {
        let router = router(CONFIG);
        assert_eq!(router.select("openai/gpt-4o").unwrap().upstream_model, "gpt-4o");
        assert!(router.select("openai/").is_err());
        assert_eq!(wildcard_match("a*z", "abcz"), Some("bc"));
        assert_eq!(wildcard_match("a*z", "az"), None);
        assert_eq!(wildcard_match("exact", "exact"), None);
    }

    #[test]
    fn unknown_model_names_the_valid_ones() {
        let error = router(CONFIG).select("gpt-5").unwrap_err();
        let error = GatewayError::from(error);
        assert_eq!(error.status(), 400);
        assert_eq!(
            error.message,
            "Invalid model name passed in model=gpt-5. Call `/v1/models` to view available models for your key. Available models: gp, embed, openai/*"
        );
        assert_eq!(router(CONFIG).model_names().collect::<Vec<_>>(), ["gp", "embed", "openai/*"]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_retryable_errors_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_retries(2, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(GatewayError::new(ErrorKind::Upstream(503), "down"))
        })
        .await;
        assert_eq!(result.unwrap_err().status(), 503);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = with_retries(2, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(GatewayError::bad_request("no"))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let result = with_retries(3, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(GatewayError::new(ErrorKind::Timeout, "slow"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert!(retry_delay(1) >= Duration::from_millis(100));
        assert!(retry_delay(1) <= Duration::from_millis(125));
        assert!(retry_delay(3) >= Duration::from_millis(400));
        assert!(retry_delay(30) <= Duration::from_millis(2_500));
    }
}
