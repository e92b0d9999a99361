//! Tollgate, an LLM gateway that is a drop-in replacement for LiteLLM's proxy: the facade
//! a Rust service embeds and the `tollgate` binary runs.
//!
//! ```no_run
//! # async fn run() -> Result<(), tollgate::Error> {
//! let config = tollgate::GatewayConfig::from_yaml(
//!     "model_list: [{model_name: demo, litellm_params: {model: fake/demo}}]",
//!     &tollgate::ProcessEnv,
//! )?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//! let gateway = tollgate::Gateway::from_config(config).await?;
//! gateway.serve(listener, tollgate::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod reload;
mod server;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
pub use tollgate_domain::GatewayConfig;
pub use tollgate_domain::config::{ConfigError, DEMO_CONFIG, EnvSource, ProcessEnv};
use tollgate_http::health::BackgroundChecks;
use tollgate_http::live::{Apps, LiveConfig};
use tollgate_http::router_sync::RouterSync;
use tollgate_http::stored_models::{SaltKey, StoredModels};
use tollgate_http::tenancy::Tenancy;
use tollgate_http::{App, Shared};

pub use async_trait::async_trait;
pub use reload::Reloader;
pub use server::shutdown_signal;
pub use tollgate_domain::config::GuardrailMode;
pub use tollgate_http::guardrails::{CallContext, GuardedAnswer, GuardedRequest, Guardrail, Verdict};

/// How long in-flight requests and streams may run on after shutdown begins, by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Storage(#[from] tollgate_storage::StoreError),
    #[error(transparent)]
    Tracing(#[from] tollgate_http::telemetry::TracingError),
    /// A combination of settings the gateway refuses to start with.
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Guardrail(#[from] tollgate_http::guardrails::BuildError),
}

/// Where virtual keys live when no `database_url` is configured: a SQLite file beside the
/// process, so a laptop needs nothing else.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tollgate.db?mode=rwc";

/// A configured gateway, ready to serve on a listener.
pub struct Gateway {
    /// The configuration in force, swapped by reloads and database model changes.
    live: Arc<LiveConfig>,
    options: server::Options,
    workers: usize,
    /// The router's deployment state and the metrics, shared by every worker and every `app()`.
    shared: Shared,
    /// The cooldown watcher (deployment state metric, cooldown alerts); stops when dropped.
    _watching: tollgate_http::watch::Watching,
}

impl Gateway {
    /// Builds the gateway from its config. Logs, once, every setting it will not act on and
    /// whether the gateway is open to anyone. With a master key it connects to the database
    /// (migrating it unless `DISABLE_SCHEMA_UPDATE` is set) to serve virtual keys.
    pub async fn from_config(config: GatewayConfig) -> Result<Self, Error> {
        if !config.unsupported.is_empty() {
            tracing::warn!(
                settings = %config.unsupported.join(", "),
                "config settings this build of tollgate does not support yet are ignored"
            );
        }
        let unpriced: Vec<&str> = config
            .deployments
            .iter()
            .filter(|d| d.pricing.is_none() && d.provider_prefix() != "fake")
            .map(|d| d.model_name.as_str())
            .collect();
        if !unpriced.is_empty() {
            tracing::warn!(
                models = %unpriced.join(", "),
                "no price is known for these deployments: their requests cost 0 (set input_cost_per_token and output_cost_per_token in model_info)"
            );
        }
        if config.master_key.is_none() {
            tracing::warn!(
                "no master key set (general_settings.master_key or LITELLM_MASTER_KEY): every request is accepted without authentication"
            );
        }
        if config.router.enable_pre_call_checks {
            // Building the token encoders takes a noticeable fraction of a second: do it now,
            // off the runtime's threads, so that no request waits for it.
            tokio::task::spawn_blocking(tollgate_domain::tokens::warm);
        }
        let mut shared = Shared::default();
        if config.master_key.is_some() {
            shared.tenancy = match (open_tenancy(&config, &shared).await, &config.database_url) {
                (Ok(tenancy), _) => Some(tenancy),
                (Err(error), Some(_)) => return Err(error),
                // The implicit SQLite file may be impossible (a read-only root in a pod):
                // the master key still works, virtual keys do not.
                (Err(error), None) => {
                    tracing::error!(%error, url = DEFAULT_DATABASE_URL, "virtual keys are off: the default database could not be opened; set database_url");
                    None
                }
            };
        } else if config.database_url.is_some() {
            tracing::warn!(
                "a database_url is set but no master key: virtual keys need a master key, so the database is not used"
            );
        }
        if let Some(cache) = &config.cache {
            let cache =
                tollgate_http::cache::ResponseCache::open(cache, shared.metrics.cache_counters()).await?;
            tracing::info!(cache_type = cache.kind(), "response cache on");
            shared.cache = Some(Arc::new(cache));
        }
        if let Some(redis) = &config.redis_url {
            let namespace = router_namespace(&config, shared.tenancy.is_some());
            shared.router_sync = Some(RouterSync::start(&shared.health, redis.expose(), &namespace)?);
        }
        let live = LiveConfig::new(config.clone());
        if config.store_model_in_db {
            shared.stored_models = Some(open_stored_models(&config, &shared, &live).await?);
        }
        shared.background_checks = config.background_health_checks.map(BackgroundChecks::new);
        shared.tracing = tollgate_http::telemetry::Tracing::start(&config.observability)?;
        if let Some(otel) = &config.observability.otel {
            tracing::info!(endpoint = %otel.endpoint, protocol = ?otel.protocol, "traces exported over OTLP");
        }
        if let Some(langfuse) = &config.observability.langfuse {
            tracing::info!(endpoint = %langfuse.endpoint, "traces exported to langfuse");
        }
        if let Some(alerting) = &config.observability.alerting {
            let channels: Vec<&str> =
                [("slack", alerting.slack.is_some()), ("webhook", alerting.webhook.is_some())]
                    .into_iter()
                    .filter_map(|(name, on)| on.then_some(name))
                    .collect();
            tracing::info!(channels = %channels.join(", "), "alerts on");
            shared.alerts =
                Some(tollgate_http::alerts::Alerts::start(alerting.clone(), Arc::clone(&shared.metrics)));
        }
        if !config.guardrails.is_empty() {
            // One client for every worker's webhook calls (a few per request at most).
            let guardrails = tollgate_http::guardrails::Guardrails::from_config(
                &config.guardrails,
                &tollgate_providers::build_http_client(),
            )?;
            let names: Vec<&str> = guardrails.entries().iter().map(|entry| entry.name.as_str()).collect();
            tracing::info!(guardrails = %names.join(", "), "guardrails on");
            if guardrails.entries().iter().any(|entry| {
                entry.modes.contains(&GuardrailMode::PreCall) && entry.kind == "message_trimming"
            }) {
                tokio::task::spawn_blocking(tollgate_domain::tokens::warm);
            }
            shared.guardrails = Some(Arc::new(guardrails));
        }
        let watched =
            Arc::new(Apps::new(Arc::clone(&live), shared.clone(), tollgate_providers::build_http_client()));
        let _watching =
            tollgate_http::watch::spawn(watched, Arc::clone(&shared.metrics), shared.alerts.clone());
        let options = server::Options { tls: None, shutdown_grace: DEFAULT_SHUTDOWN_GRACE };
        Ok(Self { live, options, workers: 0, shared, _watching })
    }

    /// Registers a guardrail of the embedding service under `name` (replacing a configured
    /// one of that name). It runs in `modes` when selected like a configured one: on every
    /// request with `default_on`, else when a request, key or team names it.
    pub fn with_guardrail(
        mut self,
        name: &str,
        modes: &[GuardrailMode],
        default_on: bool,
        guardrail: Arc<dyn Guardrail>,
    ) -> Self {
        let mut guardrails = self.shared.guardrails.as_deref().cloned().unwrap_or_default();
        guardrails.register(tollgate_http::guardrails::Registered {
            name: name.to_owned(),
            modes: modes.to_vec(),
            default_on,
            kind: "custom".to_owned(),
            params: serde_json::Map::new(),
            info: None,
            guardrail,
        });
        self.shared.guardrails = Some(Arc::new(guardrails));
        self
    }

    /// The gateway's metrics (for embedding and tests).
    pub fn metrics(&self) -> &Arc<tollgate_http::metrics::Metrics> {
        &self.shared.metrics
    }

    /// Exports the spans buffered so far (for tests; the exporters flush on their own).
    pub async fn flush_traces(&self) {
        if let Some(tracing) = self.shared.tracing.clone() {
            let _ = tokio::task::spawn_blocking(move || tracing.flush()).await;
        }
    }

    /// The store behind virtual keys, when there is one (for embedding and tests).
    pub fn store(&self) -> Option<&tollgate_storage::Store> {
        self.shared.tenancy.as_ref().map(|tenancy| &tenancy.store)
    }

    /// Serves HTTPS with the PEM certificate chain and private key at these paths.
    pub fn with_tls(
        mut self,
        cert_path: &std::path::Path,
        key_path: &std::path::Path,
    ) -> Result<Self, Error> {
        self.options.tls = Some(tls::acceptor(cert_path, key_path)?);
        Ok(self)
    }

    /// How long in-flight requests may continue once shutdown begins.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.options.shutdown_grace = grace;
        self
    }

    /// The longest a request waits on Redis for its rate limits before this replica decides
    /// on its own (100 ms by default); only matters with a `redis_url`.
    pub fn with_redis_timeout(self, timeout: Duration) -> Self {
        if let Some(tenancy) = &self.shared.tenancy {
            tenancy.limits.set_redis_timeout(timeout);
        }
        self
    }

    /// Serves connections on `workers` threads of its own, each a single-threaded runtime
    /// with its own upstream connection pool, connections dealt to them in turn. A request
    /// then never crosses threads, which saves the cross-thread wake-ups a work-stealing
    /// runtime pays on every upstream read. With 0 (the default) connections are served as
    /// tasks on the caller's runtime.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// A request handler with its own upstream client, for embedding in a server of one's own.
    /// It serves the configuration in force now; [`Gateway::apps`] follows reloads.
    pub fn app(&self) -> Arc<App> {
        self.apps().current()
    }

    /// A source of request handlers with its own upstream client that follows reloads and
    /// database model changes: call [`Apps::current`] for each request (one atomic load
    /// when nothing changed). One per worker thread, as [`Gateway::serve`] does.
    pub fn apps(&self) -> Arc<Apps> {
        let client = tollgate_providers::build_http_client();
        Arc::new(Apps::new(Arc::clone(&self.live), self.shared.clone(), client))
    }

    /// A handle that swaps in a new config (model list, router settings) while the
    /// gateway serves, without dropping requests in flight: see [`Reloader`].
    pub fn reloader(&self) -> Reloader {
        Reloader::new(Arc::clone(&self.live))
    }

    /// The background health checks (`background_health_checks: true`), to run beside the
    /// apps of [`Gateway::app`] when embedding: a future that checks every deployment each
    /// `health_check_interval` until dropped. [`Gateway::serve`] runs it itself.
    pub fn background_health_checks(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let checks = Arc::clone(self.shared.background_checks.as_ref()?);
        Some(tollgate_http::health::run_background_checks(self.apps(), checks))
    }

    /// Accepts connections (HTTP/1.1 with keep-alive, HTTP/2 with or without TLS) until
    /// `shutdown` completes; then stops accepting, lets in-flight requests and streams
    /// finish for up to the shutdown grace, writes pending spend, and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        // On this runtime (the acceptor's, with workers): a few calls every few minutes.
        let checks = self.background_health_checks().map(tokio::spawn);
        let _stop_checks = AbortOnDrop(checks);
        if self.workers == 0 {
            let apps = self.apps();
            server::serve_here(apps, self.options, listener, shutdown).await;
        } else {
            let apps = (0..self.workers).map(|_| {
                let (live, shared) = (Arc::clone(&self.live), self.shared.clone());
                // Built on the worker's own runtime: the client's pool lives there.
                move || Arc::new(Apps::new(live, shared, tollgate_providers::build_http_client()))
            });
            server::serve_on_workers(apps.collect(), self.options, listener, shutdown).await?;
        }
        // Requests have drained: what they spent goes to the database before the process ends.
        if let Some(tenancy) = &self.shared.tenancy {
            tenancy.write_spend().await;
        }
        // And their spans to the collectors (the exporters block: off the runtime's threads).
        if let Some(tracing) = self.shared.tracing.clone() {
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        }
        Ok(())
    }
}

/// Stops a background task when the serving ends, however it ends.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Where the router's shared state lives in Redis: `tollgate:router:` and 16 hex digits of a
/// SHA-256. With a database, of its URL: the replicas of one deployment share state (as they
/// share rate limits and spend), through a rollout that changes the model list too. Without
/// one, of the model list (each deployment's id, group, model and API base): replicas serving
/// the same deployments share, other gateways on the same Redis keep theirs apart.
fn router_namespace(config: &GatewayConfig, has_database: bool) -> String {
    let source = if has_database {
        config.database_url.as_ref().map_or(DEFAULT_DATABASE_URL, |url| url.expose()).to_owned()
    } else {
        let mut lines: Vec<String> = config
            .deployments
            .iter()
            .map(|d| {
                format!(
                    "{}\t{}\t{}\t{}",
                    d.id,
                    d.model_name,
                    d.litellm_model(),
                    d.api_base.as_deref().unwrap_or("")
                )
            })
            .collect();
        lines.sort();
        lines.join("\n")
    };
    let hash = tollgate_http::tenancy::keys::hash(&source);
    format!("tollgate:router:{}", &hash[..16])
}

/// The database's models (`store_model_in_db`): needs the database of virtual keys and
/// `LITELLM_SALT_KEY` (the master key never stands in for it). Loads them once before the
/// gateway serves (a database that does not answer then only delays them), then polls.
async fn open_stored_models(
    config: &GatewayConfig,
    shared: &Shared,
    live: &Arc<LiveConfig>,
) -> Result<Arc<StoredModels>, Error> {
    let Some(tenancy) = &shared.tenancy else {
        return Err(Error::Settings(
            "store_model_in_db needs a master key and a database (general_settings.master_key, database_url)"
                .into(),
        ));
    };
    let Some(salt_key) = &config.salt_key else {
        return Err(Error::Settings(
            "store_model_in_db needs LITELLM_SALT_KEY: model credentials are encrypted with it in the database (set it to your old master key to read a LiteLLM database written without one)".into(),
        ));
    };
    let models = StoredModels::new(
        tenancy.store.clone(),
        SaltKey::new(salt_key.expose()),
        Arc::clone(live),
        Arc::clone(&tenancy.model_changes),
    );
    if let Err(error) = models.reload_now().await {
        tracing::warn!(%error, "database models not loaded yet; retrying every second");
    }
    models.spawn_poller();
    Ok(models)
}

/// Connects the database, applies pending migrations and starts the key cache's refresher.
async fn open_tenancy(config: &GatewayConfig, shared: &Shared) -> Result<Arc<Tenancy>, Error> {
    let url = config.database_url.as_ref().map_or(DEFAULT_DATABASE_URL, |url| url.expose());
    let store = tollgate_storage::Store::connect(url).await?;
    if config.schema_updates {
        let applied = store.migrate().await?;
        tracing::info!(database = %tollgate_storage::redact(url), applied, "database ready");
    } else {
        tracing::info!(database = %tollgate_storage::redact(url), "database connected; migrations left to the operator (DISABLE_SCHEMA_UPDATE)");
    }
    let mut tenancy = Tenancy::new(
        store,
        config.budget_exceeded_status,
        config.spend_write_interval,
        config.master_key.as_ref(),
    );
    tenancy.spend_logs = !config.disable_spend_logs;
    tenancy.spend_logs_retention =
        config.spend_logs_retention.map(|keep| (keep, config.spend_logs_retention_interval));
    tenancy.spend_log =
        tollgate_http::tenancy::spend_log::SpendLog::counting(shared.metrics.spend_log_drops());
    let tenancy = Arc::new(tenancy);
    tollgate_http::tenancy::cache::spawn_refresher(&tenancy);
    if let Some(redis) = &config.redis_url {
        tenancy.connect_bus(redis.expose())?;
        // Rate limits are counted once per database too (replicas of one deployment).
        let limits = tollgate_http::tenancy::keys::hash(url);
        tenancy.connect_limits(redis.expose(), &format!("tollgate:limits:{}", &limits[..16]))?;
        // Replicas of one database share one ledger; other databases on the same Redis
        // (staging beside production, parallel tests) keep theirs apart.
        let ledger = tollgate_http::tenancy::keys::hash(url);
        tenancy.share_spend(redis.expose(), &format!("tollgate:spend:{}", &ledger[..16]))?;
        tracing::info!(
            redis = %tollgate_storage::redact(redis.expose()),
            "redis: key, team and customer changes are announced to every replica, and spend is shared"
        );
    }
    Ok(tenancy)
}
