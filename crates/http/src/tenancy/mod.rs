//! Virtual keys on the hot path: who the caller is (master key, a virtual key with its
//! team, user and organization, or nobody when the gateway is open) and whether this
//! request may go ahead (blocked, expired, model allowed, budgets, rate limits), in
//! LiteLLM's order and with its error types.
//!
//! Keys are resolved from an in-memory cache ([`cache`]) that a background task refreshes
//! from the database every second; a miss reads the database once, and unknown keys are
//! remembered briefly so a flood of bad keys does not become a flood of queries.

pub mod cache;
pub mod keys;
pub mod ledger;
pub mod limits;
mod resets;
pub mod spend_log;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_router::Router;
use tollgate_storage::shared_spend::SharedSpend;
use tollgate_storage::{
    BudgetRecord, EndUserRecord, KeyRecord, ListQuery, OrganizationRecord, Record, Store, StoreError, Table,
    TeamRecord, UserRecord,
};

pub use cache::PrincipalCache;
pub use ledger::Ledger;
pub use limits::{Caller, Limits, Permit, Remaining};

/// A virtual key and the records it answers to, as loaded together.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: KeyRecord,
    pub team: Option<TeamRecord>,
    pub user: Option<UserRecord>,
    pub organization: Option<(OrganizationRecord, Option<BudgetRecord>)>,
    /// The key's own budget row (`budget_id`), where its `soft_budget` lives.
    pub key_budget: Option<BudgetRecord>,
}

impl Principal {
    /// The key's soft budget: past it, an alert, not a refusal.
    pub fn key_soft_budget(&self) -> Option<f64> {
        self.key_budget.as_ref().and_then(|budget| budget.soft_budget)
    }

    /// The owning user's role; a key without a user is an internal user (LiteLLM's rule).
    pub fn role(&self) -> &str {
        self.user.as_ref().and_then(|user| user.user_role.as_deref()).unwrap_or("internal_user")
    }

    pub fn is_admin(&self) -> bool {
        self.role() == "proxy_admin"
    }

    /// Whether every allow-list on the way (key, team, organization, and the user for keys
    /// without a team) lets this key call `model`.
    pub fn may_use(&self, router: &Router, model: &str) -> bool {
        let key_models = &self.key.models.0;
        (key_models.iter().any(|m| m == "all-team-models") || model_allowed(key_models, router, model))
            && self.team.as_ref().is_none_or(|team| model_allowed(&team.models.0, router, model))
            && self.organization.as_ref().is_none_or(|(org, _)| model_allowed(&org.models.0, router, model))
            && (self.team.is_some()
                || self.user.as_ref().is_none_or(|user| model_allowed(&user.models.0, router, model)))
    }

    /// Whether the owning user is an admin of `team`.
    pub fn is_team_admin(&self, team: &TeamRecord) -> bool {
        self.key.user_id.as_deref().is_some_and(|user_id| team.role_of(user_id) == Some("admin"))
    }

    /// Whether the owning user belongs to `team` (by the team's lists or the user's `teams`).
    pub fn is_team_member(&self, team: &TeamRecord) -> bool {
        self.key.user_id.as_deref().is_some_and(|user_id| team.role_of(user_id).is_some())
            || self.user.as_ref().is_some_and(|user| user.teams.0.contains(&team.team_id))
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Access {
    /// No master key is configured: the gateway is open, as LiteLLM's is.
    Open,
    /// The master key: a proxy admin.
    Master,
    Key(Arc<Principal>),
}

impl Access {
    pub fn is_admin(&self) -> bool {
        match self {
            Access::Open | Access::Master => true,
            Access::Key(principal) => principal.is_admin(),
        }
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Access::Key(principal) => Some(principal),
            _ => None,
        }
    }
}

/// The announcement of a change to `LiteLLM_ProxyModelTable`.
const MODELS_CHANGED: &str = "models";

/// The database, the key cache and the in-process limit counters, shared by all workers.
#[derive(Debug)]
pub struct Tenancy {
    pub store: Store,
    pub cache: PrincipalCache,
    pub limits: Limits,
    /// Spend recorded since the last write to the database.
    pub ledger: Ledger,
    /// Spend log rows waiting to be written.
    pub spend_log: spend_log::SpendLog,
    /// The SHA-256 of the master key, the `api_key` of its spend log rows.
    pub master_hash: Option<String>,
    /// Whether requests become `LiteLLM_SpendLogs` rows (off with `disable_spend_logs`).
    pub spend_logs: bool,
    /// The status of a spent budget (`budget_exceeded_status_code`).
    pub budget_status: u16,
    /// How often spend is written to the database (`proxy_batch_write_at`).
    pub write_every: std::time::Duration,
    /// How long spend logs are kept and how often older ones are deleted
    /// (`maximum_spend_logs_retention_period` / `_interval`); kept forever when unset.
    pub spend_logs_retention: Option<(std::time::Duration, std::time::Duration)>,
    /// Change announcements to and from the other replicas, when Redis is configured.
    bus: std::sync::OnceLock<tollgate_storage::redis::ChangeBus>,
    /// Spend shared with the other replicas, when Redis is configured.
    shared_spend: std::sync::OnceLock<SharedSpend>,
    /// Whether the last hand-over to Redis worked (to warn once per outage).
    sharing: std::sync::atomic::AtomicBool,
    /// Woken when a replica announces a change to the database's models
    /// (`store_model_in_db`): their poller reloads at once instead of at its next tick.
    pub model_changes: Arc<tokio::sync::Notify>,
}

impl Tenancy {
    pub fn new(
        store: Store,
        budget_status: u16,
        write_every: std::time::Duration,
        master_key: Option<&tollgate_domain::Secret>,
    ) -> Self {
        Self {
            store,
            cache: PrincipalCache::default(),
            limits: Limits::default(),
            ledger: Ledger::default(),
            spend_log: spend_log::SpendLog::default(),
            master_hash: master_key.map(|key| keys::hash(key.expose())),
            spend_logs: true,
            budget_status,
            write_every,
            spend_logs_retention: None,
            bus: std::sync::OnceLock::new(),
            shared_spend: std::sync::OnceLock::new(),
            sharing: std::sync::atomic::AtomicBool::new(true),
            model_changes: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Shares spend with the other replicas through Redis at `url`, under `prefix` (the
    /// refresher hands it over and reads it back every round).
    pub fn share_spend(&self, url: &str, prefix: &str) -> Result<(), StoreError> {
        let shared = SharedSpend::start(url, prefix, self.store.runtime())?;
        let _ = self.shared_spend.set(shared);
        Ok(())
    }

    /// Counts rate limits in Redis at `url`, shared by every replica using `namespace`.
    pub fn connect_limits(&self, url: &str, namespace: &str) -> Result<(), StoreError> {
        self.limits.connect_redis(url, namespace, self.store.runtime())
    }

    /// Joins the replicas' change announcements on Redis at `url`.
    pub fn connect_bus(self: &Arc<Self>, url: &str) -> Result<(), StoreError> {
        let weak = Arc::downgrade(self);
        let bus = tollgate_storage::redis::ChangeBus::start(url, self.store.runtime(), move |change| {
            if let Some(tenancy) = weak.upgrade() {
                tenancy.apply_change(change);
            }
        })?;
        let _ = self.bus.set(bus);
        Ok(())
    }

    /// Drops what an announcement names: `key:<hash>`, `end_user:<id>`, `models` (the
    /// database's model list), or `*` (everything).
    fn apply_change(&self, change: &str) {
        if change == MODELS_CHANGED {
            self.model_changes.notify_one();
        } else if let Some(token) = change.strip_prefix("key:") {
            self.cache.remove(token);
        } else if let Some(id) = change.strip_prefix("end_user:") {
            self.cache.remove_end_user(id);
        } else {
            self.cache.clear();
            self.model_changes.notify_one();
        }
    }

    /// Tells every replica (this one included) that the database's models changed.
    pub fn announce_model_change(&self) {
        self.announce(MODELS_CHANGED.to_owned());
    }

    fn announce(&self, change: String) {
        if let Some(bus) = self.bus.get() {
            bus.announce(change);
        }
    }

    /// Forgets every cached key and end user here and on the other replicas (after a
    /// change to a team, user, organization or budget, which many keys may carry).
    pub fn forget_all(&self) {
        self.cache.clear();
        self.announce(tollgate_storage::redis::EVERYTHING.to_owned());
    }

    /// Forgets an end user here and on the other replicas.
    pub fn forget_end_user(&self, id: &str) {
        self.cache.remove_end_user(id);
        self.announce(format!("end_user:{id}"));
    }

    /// Spend of a record: what the database said when it was loaded plus what this process
    /// recorded since and has not written yet.
    fn spent(&self, table: Table, id: &str, loaded: f64) -> f64 {
        loaded + self.ledger.pending(table, id)
    }

    /// Records a finished request's tokens and cost against its key, user, team,
    /// organization and end user (spend), and against their token-per-minute windows.
    pub fn record(
        &self,
        principal: Option<&Principal>,
        model: &str,
        end_user: Option<&str>,
        tokens: u64,
        cost: f64,
    ) {
        if principal.is_some() || end_user.is_some() {
            let customer = end_user.and_then(|id| self.cache.end_user(id).flatten());
            let caller = Caller { principal, customer: customer_limits(customer.as_deref()) };
            self.limits.add_tokens(&caller, model, tokens);
        }
        if let Some(principal) = principal {
            self.ledger.add(Table::Keys, &principal.key.token, cost);
            if let Some((_, period)) = model_budget(principal, model) {
                self.ledger.add_model_spend(&principal.key.token, model, period, cost);
            }
            if let Some(user) = &principal.user {
                self.ledger.add(Table::Users, &user.user_id, cost);
            }
            if let Some(team) = &principal.team {
                self.ledger.add(Table::Teams, &team.team_id, cost);
            }
            if let Some((organization, _)) = &principal.organization {
                self.ledger.add(Table::Organizations, &organization.organization_id, cost);
            }
        }
        if let Some(end_user) = end_user {
            self.ledger.add(Table::EndUsers, end_user, cost);
        }
    }

    /// The key's spend so far, written or not (the `x-litellm-key-spend` header).
    pub fn key_spend(&self, principal: &Principal) -> f64 {
        self.spent(Table::Keys, &principal.key.token, principal.key.spend)
    }

    /// The key's team's spend so far, written or not (0 without a team).
    pub fn team_spend(&self, principal: &Principal) -> f64 {
        principal.team.as_ref().map_or(0.0, |team| self.spent(Table::Teams, &team.team_id, team.spend))
    }

    /// `None` without Redis; else whether spend is shared through it now.
    pub fn spend_sharing(&self) -> Option<bool> {
        self.shared_spend.get().map(|_| self.sharing.load(Ordering::Acquire))
    }

    /// Writes unwritten spend to the database when `write_due` (every
    /// `proxy_batch_write_at`): this process's own, or, with Redis, everyone's from Redis when
    /// this replica holds the writer's lease. Redis being away falls back to this process's own.
    pub async fn sync_spend(&self, write_due: bool) {
        if !write_due {
            return;
        }
        match self.shared_spend.get() {
            Some(shared) if self.sharing.load(Ordering::Acquire) => self.write_shared_spend(shared).await,
            _ => self.flush_local_spend().await,
        }
    }

    /// Hands this process's spend to Redis and reads everyone's back (see [`Ledger::share`]).
    /// The refresher calls it right after reloading keys from the database, so the spend read
    /// from the database and the spend read from Redis describe nearly the same moment: a
    /// batch another replica writes in between is counted twice or not at all for one round.
    pub async fn share_now(&self) {
        let Some(shared) = self.shared_spend.get() else { return };
        // While Redis is away this process writes its own spend; only a Redis that answers
        // again gets it back (a hand-over that waits out a timeout holds the spend meanwhile).
        if !self.sharing.load(Ordering::Acquire) && shared.ping().await.is_err() {
            return;
        }
        match self.ledger.share(shared).await {
            Ok(()) => {
                if !self.sharing.swap(true, Ordering::AcqRel) {
                    tracing::info!("redis is back: spend is shared across replicas again");
                }
            }
            Err(error) => {
                if self.sharing.swap(false, Ordering::AcqRel) {
                    tracing::warn!(%error, "redis unreachable: each replica writes its own spend, and budgets count only this replica's unwritten spend");
                }
                self.ledger.forget_shared();
            }
        }
    }

    /// The writer's turn: the batch every replica handed to Redis, into the database.
    async fn write_shared_spend(&self, shared: &SharedSpend) {
        let lease = (self.write_every * 3).max(std::time::Duration::from_secs(5));
        match shared.lead(lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => return, // sync_spend reports Redis being away
        }
        let batch = match shared.take_batch().await {
            Ok(batch) if batch.is_empty() => return,
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "could not take the shared spend batch from redis; retried next round");
                return;
            }
        };
        if let Err(error) = self.store.add_spend_many(&batch).await {
            tracing::warn!(%error, "could not write shared spend; it stays in redis and is retried");
            return;
        }
        if let Err(error) = shared.finish_batch().await {
            tracing::warn!(%error, "shared spend written but not cleared from redis");
        }
        tracing::debug!(rows = batch.len(), "shared spend written");
    }

    async fn flush_local_spend(&self) {
        match self.ledger.flush(&self.store).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "spend written"),
            Err(error) => tracing::warn!(%error, "could not write spend; it stays pending and is retried"),
        }
    }

    /// Writes pending spend and spend log rows now (shutdown calls this): with Redis, hands
    /// this process's spend over (the writer, this one included, stores it).
    pub async fn write_spend(&self) {
        self.share_now().await;
        if let Some(shared) = self.shared_spend.get().filter(|_| self.sharing.load(Ordering::Acquire)) {
            self.write_shared_spend(shared).await;
            if let Err(error) = shared.release().await {
                tracing::debug!(%error, "could not give up the spend writer's lease; it expires on its own");
            }
        } else {
            self.flush_local_spend().await;
        }
        self.write_spend_logs().await;
    }

    /// Writes queued spend log rows (the refresher does it every second, so the queue stays
    /// short whatever `proxy_batch_write_at` says).
    pub async fn write_spend_logs(&self) {
        match self.spend_log.write(&self.store).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "spend log rows written"),
            Err(error) => tracing::warn!(%error, "could not write spend log rows; they are kept and retried"),
        }
    }

    /// The principal behind a presented key: from the cache, else the database.
    pub async fn resolve(&self, presented: &str) -> Result<Option<Arc<Principal>>, GatewayError> {
        let token = keys::hash(presented);
        if let Some(cached) = self.cache.get(&token) {
            return Ok(cached);
        }
        let loaded = load(&self.store, &token).await.map_err(store_unavailable)?.map(Arc::new);
        self.cache.insert(token, loaded.clone());
        Ok(loaded)
    }

    /// Forgets a key so the next request reads it afresh (after an update, block or
    /// delete), here and on the other replicas.
    pub fn forget(&self, token: &str) {
        self.cache.remove(token);
        self.announce(format!("key:{token}"));
    }

    /// Every check LiteLLM makes before an LLM call, in its order. On success the permit
    /// holds the caller's parallel-request slots until it is dropped.
    pub async fn admit(
        &self,
        principal: Option<&Principal>,
        router: &Router,
        model: &str,
        end_user: Option<&str>,
    ) -> Result<Permit, GatewayError> {
        if let Some(principal) = principal {
            self.admit_key(principal, router, model)?;
        }
        let customer = match end_user {
            Some(end_user) => self.admit_end_user(end_user, router, model).await?,
            None => None,
        };
        let caller = Caller { principal, customer: customer_limits(customer.as_deref()) };
        self.limits.acquire(&caller, model).await
    }

    fn admit_key(&self, principal: &Principal, router: &Router, model: &str) -> Result<(), GatewayError> {
        let key = &principal.key;
        if key.blocked == Some(true) {
            return Err(GatewayError::new(
                ErrorKind::Authentication,
                "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.",
            ));
        }
        let team = principal.team.as_ref();
        let key_models = &key.models.0;
        let defers_to_team = key_models.iter().any(|m| m == "all-team-models");
        if !defers_to_team && !model_allowed(key_models, router, model) {
            return Err(model_denied(model, "key_model_access_denied"));
        }
        let now = Utc::now().naive_utc();
        if let Some(expires) = key.expires
            && expires < now
        {
            return Err(GatewayError::new(
                ErrorKind::Authentication,
                format!(
                    "Authentication Error - Expired Key. Key Expiry time {} and current time {}",
                    expires.and_utc(),
                    now.and_utc()
                ),
            )
            .with_type("expired_key")
            .with_param(key.key_name.clone().unwrap_or_default()));
        }
        if let Some(max) = key.max_budget
            && let key_spend = self.spent(Table::Keys, &key.token, key.spend)
            && key_spend >= max
        {
            let name = key.key_alias.as_deref().unwrap_or("key");
            let tail = key.key_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            return Err(self.budget_error(format!(
                "Budget has been exceeded! Key={name}{tail} Current cost: {key_spend}, Max budget: {max}"
            )));
        }
        if let Some((limit, period)) = model_budget(principal, model) {
            let spent = self.ledger.model_spend(&key.token, model, period);
            if spent >= limit {
                return Err(self.budget_error(format!(
                    "LiteLLM Virtual Key: {}, key_alias: {}, exceeded budget for model={model}. Current cost: {spent}, Max budget: {limit}",
                    key.token,
                    key.key_alias.as_deref().unwrap_or("None")
                )));
            }
        }
        if let Some(team) = team {
            if team.blocked {
                return Err(GatewayError::new(
                    ErrorKind::Authentication,
                    format!(
                        "Authentication Error, Team={} is blocked. Update via `/team/unblock` if you're an admin.",
                        team.team_id
                    ),
                ));
            }
            if !model_allowed(&team.models.0, router, model) {
                return Err(model_denied(model, "team_model_access_denied"));
            }
            if let Some(max) = team.max_budget
                && let team_spend = self.spent(Table::Teams, &team.team_id, team.spend)
                && team_spend > max
            {
                return Err(self.budget_error(format!(
                    "Budget has been exceeded! Team={} Current cost: {team_spend}, Max budget: {max}",
                    team.team_id
                )));
            }
        }
        if let Some((organization, budget)) = &principal.organization {
            if !model_allowed(&organization.models.0, router, model) {
                return Err(model_denied(model, "org_model_access_denied"));
            }
            if let Some(max) = budget.as_ref().and_then(|b| b.max_budget)
                && let spend =
                    self.spent(Table::Organizations, &organization.organization_id, organization.spend)
                && spend >= max
            {
                return Err(self.budget_error(format!(
                    "Budget has been exceeded! Organization={} Current cost: {spend}, Max budget: {max}",
                    organization.organization_id
                )));
            }
        }
        // A user's own budget binds the keys that are not a team's (LiteLLM's default).
        if let Some(user) = &principal.user
            && team.is_none()
        {
            if !model_allowed(&user.models.0, router, model) {
                return Err(model_denied(model, "user_model_access_denied"));
            }
            if let Some(max) = user.max_budget
                && let spend = self.spent(Table::Users, &user.user_id, user.spend)
                && spend >= max
            {
                return Err(self.budget_error(format!(
                    "ExceededBudget: User={} over budget. Spend={spend}, Budget={max}",
                    user.user_id
                )));
            }
        }
        Ok(())
    }

    /// The customer's checks; returns the customer (with its budget row) when it is known.
    async fn admit_end_user(
        &self,
        end_user: &str,
        router: &Router,
        model: &str,
    ) -> Result<Option<Arc<(EndUserRecord, Option<BudgetRecord>)>>, GatewayError> {
        let customer = match self.cache.end_user(end_user) {
            Some(cached) => cached,
            None => {
                let loaded =
                    load_end_user(&self.store, end_user).await.map_err(store_unavailable)?.map(Arc::new);
                self.cache.insert_end_user(end_user.to_owned(), loaded.clone());
                loaded
            }
        };
        let Some(customer) = customer else { return Ok(None) };
        let (record, budget) = &*customer;
        if record.blocked {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!(
                    "End User={end_user} is blocked. Unblock via `/customer/unblock` if you're an admin."
                ),
            ));
        }
        if !model_allowed(&record.models.0, router, model) {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!(
                    "The requested model '{model}' is not in the allowed models for this customer. Check the models this customer can use and try again."
                ),
            )
            .with_type("customer_model_access_denied")
            .with_param("model"));
        }
        if let Some(max) = budget.as_ref().and_then(|b| b.max_budget)
            && let spend = self.spent(Table::EndUsers, end_user, record.spend)
            && spend > max
        {
            return Err(self.budget_error(format!(
                "ExceededBudget: End User={end_user} over budget. Spend={spend}, Budget={max}"
            )));
        }
        Ok(Some(customer))
    }

    fn budget_error(&self, message: String) -> GatewayError {
        GatewayError::new(ErrorKind::BudgetExceeded(self.budget_status), message)
    }
}

/// A customer's id and budget row, where its rate limits live.
fn customer_limits(
    customer: Option<&(EndUserRecord, Option<BudgetRecord>)>,
) -> Option<(&str, &BudgetRecord)> {
    let (record, budget) = customer?;
    Some((record.user_id.as_str(), budget.as_ref()?))
}

/// A key's budget for `model` (`model_max_budget: {model: {budget_limit, time_period}}`)
/// and its period; `budget_limit` may be a number or a numeric string, as LiteLLM accepts.
fn model_budget(principal: &Principal, model: &str) -> Option<(f64, std::time::Duration)> {
    let entry = principal.key.model_max_budget.0.get(model)?;
    let limit = match entry.get("budget_limit")? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(text) => text.parse().ok()?,
        _ => return None,
    };
    let period = entry.get("time_period").and_then(|p| p.as_str()).unwrap_or("30d");
    let seconds = tollgate_domain::duration::Duration::parse(period).ok()?.seconds();
    Some((limit, std::time::Duration::from_secs(u64::try_from(seconds).ok()?)))
}

/// The model a key's `aliases` send `requested` to, if it names one.
pub fn aliased<'a>(principal: &'a Principal, requested: &str) -> Option<&'a str> {
    principal.key.aliases.0.get(requested).and_then(|target| target.as_str())
}

/// A key's `allowed_routes`: empty allows every route; else the path (without `/v1`) must
/// match an entry: a path, a `prefix*` pattern, or one of LiteLLM's route groups.
pub fn route_allowed(principal: &Principal, path: &str) -> Result<(), GatewayError> {
    let allowed = &principal.key.allowed_routes.0;
    if allowed.is_empty() || allowed.iter().any(|entry| route_matches(entry, path)) {
        return Ok(());
    }
    Err(GatewayError::new(
        ErrorKind::Forbidden,
        format!(
            "Virtual key is not allowed to call this route. Only allowed to call routes: {allowed:?}. Tried to call route: {path}"
        ),
    ))
}

const LLM_API_ROUTES: &[&str] = &[
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/messages",
    "/messages/count_tokens",
    "/models",
    "/rerank",
    "/utils/token_counter",
    "/v2/rerank",
];
const INFO_ROUTES: &[&str] = &[
    "/key/info",
    "/key/list",
    "/key/health",
    "/team/info",
    "/team/list",
    "/user/info",
    "/model/info",
    "/model_group/info",
    "/models",
    "/organization/list",
    "/organization/info",
];
const MANAGEMENT_PREFIXES: &[&str] =
    &["/key/", "/user/", "/team/", "/organization/", "/customer/", "/end_user/", "/budget/"];

fn route_matches(entry: &str, path: &str) -> bool {
    let entry = entry.strip_prefix("/v1").filter(|e| e.starts_with('/')).unwrap_or(entry);
    match entry {
        "llm_api_routes" | "openai_routes" => LLM_API_ROUTES.contains(&path),
        "info_routes" => INFO_ROUTES.contains(&path),
        "management_routes" => MANAGEMENT_PREFIXES.iter().any(|prefix| path.starts_with(prefix)),
        _ => match entry.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => entry == path,
        },
    }
}

/// The `allowed_routes` a `key_type` implies, as LiteLLM presets them.
pub fn routes_for_key_type(key_type: &str) -> Option<&'static str> {
    match key_type {
        "llm_api" => Some("llm_api_routes"),
        "management" => Some("management_routes"),
        "read_only" => Some("info_routes"),
        _ => None,
    }
}

pub(crate) fn model_denied(model: &str, error_type: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::Forbidden,
        format!(
            "The requested model '{model}' is not available for this API key, or the model name is invalid. Check the models available to you and try again."
        ),
    )
    .with_type(error_type)
    .with_param("model")
}

/// LiteLLM's allow-list rule: empty allows all; `*` and `all-proxy-models` allow all; else
/// the model itself, the group it resolves to, an access group of that group, or a
/// `prefix/*` pattern must be listed.
pub fn model_allowed(allowed: &[String], router: &Router, model: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let group = router.group_name(model).unwrap_or(model);
    allowed.iter().any(|entry| {
        entry == "*"
            || entry == "all-proxy-models"
            || entry == model
            || entry == group
            || entry.strip_suffix('*').is_some_and(|prefix| !prefix.is_empty() && model.starts_with(prefix))
            || router.deployments().any(|deployment| {
                deployment.model_name == group
                    && deployment
                        .model_info
                        .get("access_groups")
                        .and_then(|groups| groups.as_array())
                        .is_some_and(|groups| groups.iter().any(|g| g.as_str() == Some(entry)))
            })
    })
}

fn store_unavailable(error: StoreError) -> GatewayError {
    tracing::error!(%error, "the database did not answer a key lookup");
    GatewayError::new(
        ErrorKind::StoreUnavailable,
        "No connected db. The database did not answer; try again shortly.",
    )
}

/// A key with its team, user and organization (and that organization's budget).
pub async fn load(store: &Store, token: &str) -> Result<Option<Principal>, StoreError> {
    Ok(load_many(store, &[token.to_owned()]).await?.into_iter().next())
}

/// The keys among `tokens` that exist, each with its records, in a fixed number of queries
/// whatever the count (one per table per chunk), so the refresher's cost does not grow with
/// queries per key.
pub async fn load_many(store: &Store, tokens: &[String]) -> Result<Vec<Principal>, StoreError> {
    const CHUNK: usize = 500;
    let mut principals = Vec::with_capacity(tokens.len());
    for chunk in tokens.chunks(CHUNK) {
        let keys: Vec<KeyRecord> = store.list(Table::Keys, &any_of("token", chunk.iter().cloned())).await?;
        let teams: HashMap<String, TeamRecord> =
            by_id(store, Table::Teams, keys.iter().filter_map(|k| k.team_id.clone()), |t: &TeamRecord| {
                &t.team_id
            })
            .await?;
        let users: HashMap<String, UserRecord> =
            by_id(store, Table::Users, keys.iter().filter_map(|k| k.user_id.clone()), |u: &UserRecord| {
                &u.user_id
            })
            .await?;
        let organization_of = |key: &KeyRecord| {
            key.organization_id.clone().or_else(|| {
                key.team_id.as_ref().and_then(|id| teams.get(id)).and_then(|t| t.organization_id.clone())
            })
        };
        let organizations: HashMap<String, OrganizationRecord> = by_id(
            store,
            Table::Organizations,
            keys.iter().filter_map(organization_of),
            |o: &OrganizationRecord| &o.organization_id,
        )
        .await?;
        let budgets: HashMap<String, BudgetRecord> = by_id(
            store,
            Table::Budgets,
            organizations
                .values()
                .map(|o| o.budget_id.clone())
                .chain(keys.iter().filter_map(|k| k.budget_id.clone())),
            |b: &BudgetRecord| &b.budget_id,
        )
        .await?;
        for key in keys {
            let organization = organization_of(&key)
                .and_then(|id| organizations.get(&id))
                .map(|organization| (organization.clone(), budgets.get(&organization.budget_id).cloned()));
            principals.push(Principal {
                key_budget: key.budget_id.as_ref().and_then(|id| budgets.get(id)).cloned(),
                team: key.team_id.as_ref().and_then(|id| teams.get(id)).cloned(),
                user: key.user_id.as_ref().and_then(|id| users.get(id)).cloned(),
                organization,
                key,
            });
        }
    }
    Ok(principals)
}

fn any_of(column: &'static str, values: impl Iterator<Item = String>) -> ListQuery {
    let mut values: Vec<String> = values.collect();
    values.sort_unstable();
    values.dedup();
    ListQuery { any_of: Some((column, values)), ..ListQuery::default() }
}

/// Rows of `table` whose primary key is among `ids`, by id.
async fn by_id<R>(
    store: &Store,
    table: Table,
    ids: impl Iterator<Item = String>,
    id_of: impl Fn(&R) -> &String,
) -> Result<HashMap<String, R>, StoreError>
where
    R: Record,
{
    let query = any_of(table.id_column(), ids);
    if query.any_of.as_ref().is_some_and(|(_, values)| values.is_empty()) {
        return Ok(HashMap::new());
    }
    let rows: Vec<R> = store.list(table, &query).await?;
    Ok(rows.into_iter().map(|row| (id_of(&row).clone(), row)).collect())
}

/// An end user (customer) and its budget row.
pub async fn load_end_user(
    store: &Store,
    end_user: &str,
) -> Result<Option<(EndUserRecord, Option<BudgetRecord>)>, StoreError> {
    let Some(record) = store.get::<EndUserRecord>(Table::EndUsers, end_user).await? else { return Ok(None) };
    let budget = match record.budget_id.as_deref() {
        Some(id) => store.get::<BudgetRecord>(Table::Budgets, id).await?,
        None => None,
    };
    Ok(Some((record, budget)))
}
