//! Models kept in the database (`general_settings.store_model_in_db`), as LiteLLM keeps them:
//! rows of `LiteLLM_ProxyModelTable` whose `litellm_params` string values are encrypted
//! with `LITELLM_SALT_KEY` ([`crypto`]).
//!
//! Every replica polls the table's fingerprint (row count and latest `updated_at`) each
//! second on the database's own runtime; when it moved, when a replica announces a change
//! through Redis, and every 30 s regardless (an update stamped by a replica whose clock runs
//! behind may not move the fingerprint), the rows are read, and if they differ from the last
//! ones, decrypted, validated as config entries and swapped into the [`LiveConfig`]. A database that does not answer leaves the last
//! known list in force. No request ever waits on this.

pub mod crypto;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::{Map, Value, json};
use tollgate_domain::Deployment;
use tollgate_domain::config::ProcessEnv;
use tollgate_storage::{ListQuery, ModelRecord, Store, StoreError, Table};

use crate::live::LiveConfig;
pub use crypto::SaltKey;

/// How often each replica looks for changes to the table (its fingerprint).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the rows are read whatever the fingerprint says: an update stamped by a
/// replica whose clock runs behind may leave the latest `updated_at` as it was.
pub const FULL_READ_EVERY: u32 = 30;

/// What was read last: the table's fingerprint (row count, latest `updated_at`) and a
/// digest of its rows.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    fingerprint: (u64, Option<NaiveDateTime>),
    rows: u64,
}

/// The database's models of one process.
pub struct StoredModels {
    pub store: Store,
    pub salt: SaltKey,
    pub live: Arc<LiveConfig>,
    /// Woken by a write here or an announcement from another replica.
    changes: Arc<tokio::sync::Notify>,
    seen: Mutex<Option<Seen>>,
}

impl StoredModels {
    pub fn new(
        store: Store,
        salt: SaltKey,
        live: Arc<LiveConfig>,
        changes: Arc<tokio::sync::Notify>,
    ) -> Arc<Self> {
        Arc::new(Self { store, salt, live, changes, seen: Mutex::new(None) })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<Seen>> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the rows if the table's fingerprint moved since the last read.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let fingerprint = self.store.fingerprint(Table::Models, "updated_at").await?;
        if self.seen().is_some_and(|seen| seen.fingerprint == fingerprint) {
            return Ok(());
        }
        self.reload(fingerprint).await
    }

    /// Reads the rows whatever the fingerprint says (after a write, an announcement, and
    /// every [`FULL_READ_EVERY`] polls).
    pub async fn reload_now(&self) -> Result<(), StoreError> {
        let fingerprint = self.store.fingerprint(Table::Models, "updated_at").await?;
        self.reload(fingerprint).await
    }

    /// Swaps the model list only when the rows differ from the last ones read: every
    /// swap makes each worker rebuild its handler, and providers' cached tokens with it.
    async fn reload(&self, fingerprint: (u64, Option<NaiveDateTime>)) -> Result<(), StoreError> {
        let rows: Vec<ModelRecord> = self.store.list(Table::Models, &ListQuery::default()).await?;
        let seen = Seen { fingerprint, rows: digest(&rows) };
        let unchanged = self.seen().is_some_and(|last| last.rows == seen.rows);
        if !unchanged {
            let deployments = self.deployments(&rows);
            tracing::info!(models = deployments.len(), rows = rows.len(), "database models loaded");
            self.live.replace_database_models(deployments);
        }
        *self.seen() = Some(seen);
        Ok(())
    }

    /// The rows that read as valid deployments; the others are named in a log line (never
    /// with their parameters, which hold credentials) and left out.
    fn deployments(&self, rows: &[ModelRecord]) -> Vec<Deployment> {
        let snapshot = self.live.snapshot();
        rows.iter()
            .filter_map(|row| {
                let params = match &row.litellm_params.0 {
                    Value::Object(params) => self.decrypt_params(params),
                    _ => {
                        tracing::warn!(model_id = %row.model_id, "database model skipped: litellm_params is not an object");
                        return None;
                    }
                };
                let entry = entry(&row.model_id, &row.model_name, params, &row.model_info.0);
                match snapshot.config.read_deployment(&entry, "litellm_params", &ProcessEnv) {
                    Ok((deployment, unsupported)) => {
                        if !unsupported.is_empty() {
                            tracing::warn!(model_id = %row.model_id, settings = %unsupported.join(", "), "database model settings this build of tollgate does not support yet are ignored");
                        }
                        Some(deployment)
                    }
                    Err(error) => {
                        tracing::warn!(model_id = %row.model_id, %error, "database model skipped: it does not read as a deployment (was LITELLM_SALT_KEY changed?)");
                        None
                    }
                }
            })
            .collect()
    }

    /// Every string value encrypted, as LiteLLM stores `litellm_params`.
    pub fn encrypt_params(&self, params: &Map<String, Value>) -> Map<String, Value> {
        map_strings(params, |text| self.salt.encrypt(text))
    }

    /// Every string value decrypted; one that does not decrypt is kept as written (a value
    /// entered by hand, e.g. `os.environ/…`), as LiteLLM reads them.
    pub fn decrypt_params(&self, params: &Map<String, Value>) -> Map<String, Value> {
        map_strings(params, |text| self.salt.decrypt(text).unwrap_or_else(|_| text.to_owned()))
    }

    /// Runs [`StoredModels::refresh`] every [`POLL_INTERVAL`] and on every announcement,
    /// on the database's runtime, until the process drops the last handle.
    pub fn spawn_poller(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let changes = Arc::clone(&self.changes);
        self.store.runtime().spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut failing, mut polls) = (false, 0u32);
            loop {
                let announced = tokio::select! {
                    _ = tick.tick() => false,
                    () = changes.notified() => true,
                };
                let Some(models) = weak.upgrade() else { return };
                polls = polls.wrapping_add(1);
                let result = if announced || polls % FULL_READ_EVERY == 0 {
                    models.reload_now().await
                } else {
                    models.refresh().await
                };
                match result {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("database models readable again");
                    }
                    Ok(()) => {}
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "database models not readable; the last known list stays in force");
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

/// A digest of the rows as stored (a new encryption of the same value differs too).
fn digest(rows: &[ModelRecord]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for row in rows {
        row.model_id.hash(&mut hasher);
        row.model_name.hash(&mut hasher);
        row.litellm_params.0.to_string().hash(&mut hasher);
        row.model_info.0.to_string().hash(&mut hasher);
        row.updated_at.hash(&mut hasher);
    }
    hasher.finish()
}

/// `params` with `change` applied to each top-level string value, other values as they are.
fn map_strings(params: &Map<String, Value>, change: impl Fn(&str) -> String) -> Map<String, Value> {
    params
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) => Value::String(change(text)),
                other => other.clone(),
            };
            (name.clone(), value)
        })
        .collect()
}

/// A stored model as a `model_list` entry, its `model_info` carrying the row's id and
/// `db_model: true` (what `/model/info` shows).
pub fn entry(model_id: &str, model_name: &str, params: Map<String, Value>, model_info: &Value) -> Value {
    let mut info = match model_info {
        Value::Object(info) => info.clone(),
        _ => Map::new(),
    };
    info.insert("id".into(), json!(model_id));
    info.insert("db_model".into(), json!(true));
    json!({"model_name": model_name, "litellm_params": params, "model_info": info})
}
