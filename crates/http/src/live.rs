//! The configuration that may change while the gateway runs: the model list (the config
//! file's, reloaded, and the database's, `store_model_in_db`) and the router settings.
//!
//! One [`LiveConfig`] per process holds the current [`Snapshot`] behind an atomic pointer
//! and a generation number. Each worker keeps its own `App` in an [`Apps`], which compares
//! the generation once per request (one atomic load) and rebuilds its `App` from the new
//! snapshot only when it changed. A request holds the `Arc<App>` it started with until its
//! response (stream included) ends, so a swap never touches work in flight. The router's
//! per-deployment state lives on the shared `HealthBoard`, keyed by deployment id: a
//! deployment present before and after a swap keeps its cooldowns, usage and latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tollgate_domain::{Deployment, GatewayConfig};
use tollgate_providers::HttpClient;

use crate::{App, Shared};

/// One version of the gateway's swappable configuration.
pub struct Snapshot {
    /// Increases by one with every swap; the first snapshot is 1.
    pub generation: u64,
    /// The config file's settings with every deployment in force: the file's, then the
    /// database's.
    pub config: GatewayConfig,
}

/// Where each part of the model list comes from; only writers (reloads, the database
/// poller) take this lock, never a request.
struct Sources {
    file: GatewayConfig,
    database: Vec<Deployment>,
}

/// The current [`Snapshot`] and what it is made of.
pub struct LiveConfig {
    current: ArcSwap<Snapshot>,
    /// The generation of `current`, stored after it, so a reader that sees a new number
    /// finds a snapshot at least that new.
    generation: AtomicU64,
    sources: Mutex<Sources>,
}

/// The settings a reload does not change: they are wired into what the process opened
/// at start (database, Redis, tracer, cache, key cache), so a new value needs a restart.
const RESTART_ONLY: &[&str] = &[
    "general_settings.master_key",
    "general_settings.database_url",
    "redis (router_settings.redis_*, REDIS_*)",
    "litellm_settings.cache / cache_params",
    "observability (callbacks, json_logs, alerting)",
    "general_settings.store_model_in_db",
    "LITELLM_SALT_KEY",
    "general_settings.background_health_checks",
    "general_settings.proxy_batch_write_at",
    "general_settings.disable_spend_logs",
    "general_settings.maximum_spend_logs_retention_period",
    "litellm_settings.budget_exceeded_status_code",
    "guardrails (and per-model litellm_params.guardrails)",
];

impl LiveConfig {
    pub fn new(config: GatewayConfig) -> Arc<Self> {
        let snapshot = Snapshot { generation: 1, config: config.clone() };
        Arc::new(Self {
            current: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
            sources: Mutex::new(Sources { file: config, database: Vec::new() }),
        })
    }

    /// The generation in force (one atomic load: the per-request check).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in a newly read config file. Only the model list, the router settings, the
    /// deployment defaults and `require_auth_for_metrics_endpoint` change; the names of the
    /// other settings that differ from the running ones come back (they need a restart).
    pub fn replace_file_config(&self, next: GatewayConfig) -> Vec<&'static str> {
        let mut sources = self.sources.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ignored = restart_only_changes(&sources.file, &next);
        let file = &mut sources.file;
        file.deployments = next.deployments;
        file.router = next.router;
        file.deployment_defaults = next.deployment_defaults;
        file.metrics_require_auth = next.metrics_require_auth;
        file.unsupported = next.unsupported;
        self.publish(&sources);
        ignored
    }

    /// Swaps in the database's models (the caller knows they changed).
    pub fn replace_database_models(&self, deployments: Vec<Deployment>) {
        let mut sources = self.sources.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sources.database = deployments;
        self.publish(&sources);
    }

    /// The config file's settings in force (without the database's models).
    pub fn file_config(&self) -> GatewayConfig {
        self.sources.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).file.clone()
    }

    fn publish(&self, sources: &Sources) {
        let mut config = sources.file.clone();
        for deployment in &sources.database {
            // The file's deployment wins an id both claim, as a restart would have it.
            if config.deployments.iter().any(|d| d.id == deployment.id) {
                tracing::warn!(model_id = %deployment.id, "a database model has the id of a config model; the config's is served");
                continue;
            }
            config.deployments.push(deployment.clone());
        }
        let generation = self.current.load().generation + 1;
        self.current.store(Arc::new(Snapshot { generation, config }));
        self.generation.store(generation, Ordering::Release);
        tracing::debug!(generation, "configuration swapped");
    }
}

/// The settings of [`RESTART_ONLY`] whose value differs between two configs.
fn restart_only_changes(running: &GatewayConfig, next: &GatewayConfig) -> Vec<&'static str> {
    let exposed = |secret: &Option<tollgate_domain::Secret>| secret.as_ref().map(|s| s.expose().to_owned());
    let differs = [
        exposed(&running.master_key) != exposed(&next.master_key),
        exposed(&running.database_url) != exposed(&next.database_url),
        exposed(&running.redis_url) != exposed(&next.redis_url),
        format!("{:?}", running.cache) != format!("{:?}", next.cache),
        format!("{:?}", running.observability) != format!("{:?}", next.observability),
        running.store_model_in_db != next.store_model_in_db,
        exposed(&running.salt_key) != exposed(&next.salt_key),
        running.background_health_checks != next.background_health_checks,
        running.spend_write_interval != next.spend_write_interval,
        running.disable_spend_logs != next.disable_spend_logs,
        running.spend_logs_retention != next.spend_logs_retention,
        running.budget_exceeded_status != next.budget_exceeded_status,
        // Built once into the shared state (webhook clients included), like the cache.
        format!("{:?}", running.guardrails) != format!("{:?}", next.guardrails),
    ];
    RESTART_ONLY.iter().zip(differs).filter(|(_, differs)| *differs).map(|(name, _)| *name).collect()
}

/// One worker's `App`, rebuilt from the [`LiveConfig`] when its generation moves on.
pub struct Apps {
    live: Arc<LiveConfig>,
    shared: Shared,
    /// The worker's upstream client: every rebuilt `App` shares its connection pool.
    client: HttpClient,
    current: ArcSwap<App>,
}

impl Apps {
    pub fn new(live: Arc<LiveConfig>, shared: Shared, client: HttpClient) -> Self {
        let app = build(&live.snapshot(), &client, &shared);
        Self { live, shared, client, current: ArcSwap::from_pointee(app) }
    }

    /// The `App` for a new request: the current one unless a swap happened since it was
    /// built. Requests already running keep the `App` they were handed.
    pub fn current(&self) -> Arc<App> {
        let app = self.current.load_full();
        if app.generation == self.live.generation() {
            return app;
        }
        // Two requests may both rebuild after a swap; either result is the same config.
        let app = Arc::new(build(&self.live.snapshot(), &self.client, &self.shared));
        self.current.store(Arc::clone(&app));
        app
    }
}

fn build(snapshot: &Snapshot, client: &HttpClient, shared: &Shared) -> App {
    let mut app = App::new(snapshot.config.clone(), client.clone(), shared);
    app.generation = snapshot.generation;
    app
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(yaml: &str) -> GatewayConfig {
        GatewayConfig::from_yaml(yaml, &HashMap::new()).unwrap()
    }

    #[test]
    fn a_swap_bumps_the_generation_and_keeps_restart_only_settings() {
        let live = LiveConfig::new(config(
            "model_list: [{model_name: a, litellm_params: {model: fake/a}}]\ngeneral_settings: {master_key: sk-1}\n",
        ));
        assert_eq!(live.generation(), 1);
        let ignored = live.replace_file_config(config(
            "model_list: [{model_name: b, litellm_params: {model: fake/b}}]\ngeneral_settings: {master_key: sk-2}\n",
        ));
        assert_eq!(ignored, vec!["general_settings.master_key"]);
        let snapshot = live.snapshot();
        assert_eq!(snapshot.generation, 2);
        assert_eq!(live.generation(), 2);
        assert_eq!(snapshot.config.model_names(), vec!["b"]);
        assert_eq!(snapshot.config.master_key.as_ref().map(|k| k.expose()), Some("sk-1"));
    }

    #[test]
    fn database_models_join_the_file_ones() {
        let live =
            LiveConfig::new(config("model_list: [{model_name: a, litellm_params: {model: fake/a}}]\n"));
        let extra = config(
            "model_list: [{model_name: d, litellm_params: {model: fake/d}, model_info: {id: db-1}}, {model_name: x, litellm_params: {model: fake/x}, model_info: {id: file-1}}]\n",
        );
        let file_twin = config(
            "model_list: [{model_name: a, litellm_params: {model: fake/a}}, {model_name: x, litellm_params: {model: fake/x}, model_info: {id: file-1}}]\n",
        );
        live.replace_file_config(file_twin);
        live.replace_database_models(extra.deployments);
        assert_eq!(live.snapshot().config.model_names(), vec!["a", "x", "d"], "the file's id wins");
        assert_eq!(live.snapshot().config.deployments.len(), 3);
        assert_eq!(live.generation(), 3);
        // A reload of the file keeps the database's models; the one the file shadowed shows.
        live.replace_file_config(config("model_list: [{model_name: c, litellm_params: {model: fake/c}}]\n"));
        assert_eq!(live.snapshot().config.model_names(), vec!["c", "d", "x"]);
    }
}
