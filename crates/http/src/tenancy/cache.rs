//! The in-memory view of virtual keys and end users that every request reads.
//!
//! A request takes a read lock and clones an `Arc`; nothing waits on the database unless
//! the key was never seen. A background task ([`spawn_refresher`]) reloads the keys used in
//! the last minute once a second, so a change made elsewhere (another replica, LiteLLM
//! itself, a SQL console) is honoured within about a second; changes made through this
//! process's management API are applied at once. Unknown keys are remembered for a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use tollgate_storage::{BudgetRecord, EndUserRecord};

use super::{Principal, Tenancy};

/// How often cached entries are reloaded, and how long an unknown key stays unknown.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Entries unused for this long are dropped instead of reloaded.
const IDLE_EVICTION: Duration = Duration::from_secs(60);

type EndUser = Arc<(EndUserRecord, Option<BudgetRecord>)>;

#[derive(Debug)]
struct Entry<T> {
    value: Option<T>,
    loaded: Instant,
    /// Milliseconds since `epoch` at the last read, for idle eviction.
    last_used: AtomicU64,
}

#[derive(Debug)]
struct Map<T> {
    entries: RwLock<HashMap<String, Entry<T>>>,
}

impl<T> Default for Map<T> {
    fn default() -> Self {
        Self { entries: RwLock::default() }
    }
}

impl<T: Clone> Map<T> {
    /// `Some(None)` is a remembered miss; `None` means "ask the database".
    fn get(&self, id: &str, epoch: Instant) -> Option<Option<T>> {
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get(id)?;
        if entry.value.is_none() && entry.loaded.elapsed() >= REFRESH_INTERVAL {
            return None;
        }
        entry.last_used.store(millis_since(epoch), Ordering::Relaxed);
        Some(entry.value.clone())
    }

    fn insert(&self, id: String, value: Option<T>, epoch: Instant) {
        let entry = Entry { value, loaded: Instant::now(), last_used: AtomicU64::new(millis_since(epoch)) };
        self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, entry);
    }

    fn remove(&self, id: &str) {
        self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
    }

    /// Drops misses and idle entries; returns the ids worth reloading.
    fn sweep(&self, epoch: Instant) -> Vec<String> {
        let now = millis_since(epoch);
        let idle = IDLE_EVICTION.as_millis() as u64;
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, entry| {
            entry.value.is_some() && now.saturating_sub(entry.last_used.load(Ordering::Relaxed)) < idle
        });
        entries.keys().cloned().collect()
    }

    /// Replaces a reloaded entry, keeping its last use.
    fn refresh(&self, id: &str, value: Option<T>) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match value {
            None => {
                entries.remove(id);
            }
            Some(value) => {
                if let Some(entry) = entries.get_mut(id) {
                    entry.value = Some(value);
                    entry.loaded = Instant::now();
                }
            }
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Keys by their hash, and end users by id.
#[derive(Debug)]
pub struct PrincipalCache {
    epoch: Instant,
    keys: Map<Arc<Principal>>,
    end_users: Map<EndUser>,
}

impl Default for PrincipalCache {
    fn default() -> Self {
        Self { epoch: Instant::now(), keys: Map::default(), end_users: Map::default() }
    }
}

impl PrincipalCache {
    pub fn get(&self, token: &str) -> Option<Option<Arc<Principal>>> {
        self.keys.get(token, self.epoch)
    }

    pub fn insert(&self, token: String, principal: Option<Arc<Principal>>) {
        self.keys.insert(token, principal, self.epoch);
    }

    pub fn remove(&self, token: &str) {
        self.keys.remove(token);
    }

    pub fn end_user(&self, id: &str) -> Option<Option<EndUser>> {
        self.end_users.get(id, self.epoch)
    }

    pub fn insert_end_user(&self, id: String, end_user: Option<EndUser>) {
        self.end_users.insert(id, end_user, self.epoch);
    }

    pub fn remove_end_user(&self, id: &str) {
        self.end_users.remove(id);
    }

    /// Forgets everything (after a team, user, organization or budget change, which may
    /// touch many keys).
    pub fn clear(&self) {
        self.keys.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        self.end_users.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }
}

/// Writes pending spend (every `write_every`), resets budgets whose period ended, then
/// reloads cached keys and end users, every [`REFRESH_INTERVAL`] on the database's runtime,
/// until the tenancy is dropped. A failed reload keeps the last known state (the database
/// being down must not lock everyone out) and is retried on the next round.
pub fn spawn_refresher(tenancy: &Arc<Tenancy>) {
    let weak: Weak<Tenancy> = Arc::downgrade(tenancy);
    tenancy.store.runtime().spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_write = Instant::now();
        let mut retention = weak
            .upgrade()
            .and_then(|tenancy| tenancy.spend_logs_retention)
            .map(|(keep, every)| super::resets::Retention::new(keep, every));
        loop {
            tick.tick().await;
            let Some(tenancy) = weak.upgrade() else { return };
            // Spend goes to the database first, so the reload that follows reads it back
            // and pending and loaded spend never count the same dollars twice.
            let write_due = last_write.elapsed() >= tenancy.write_every;
            if write_due {
                last_write = Instant::now();
            }
            tenancy.sync_spend(write_due).await;
            tenancy.write_spend_logs().await;
            super::resets::reset_due_budgets(&tenancy).await;
            if let Some(retention) = &mut retention {
                super::resets::delete_expired_spend_logs(&tenancy, retention).await;
            }
            refresh_once(&tenancy).await;
            tenancy.share_now().await;
        }
    });
}

async fn refresh_once(tenancy: &Tenancy) {
    let cache = &tenancy.cache;
    let tokens = cache.keys.sweep(cache.epoch);
    if !tokens.is_empty() {
        match super::load_many(&tenancy.store, &tokens).await {
            Ok(principals) => {
                let mut found: std::collections::HashMap<String, Principal> =
                    principals.into_iter().map(|p| (p.key.token.clone(), p)).collect();
                for token in &tokens {
                    cache.keys.refresh(token, found.remove(token).map(Arc::new));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not reload virtual keys; serving the last known state");
                return;
            }
        }
    }
    for id in cache.end_users.sweep(cache.epoch) {
        match super::load_end_user(&tenancy.store, &id).await {
            Ok(end_user) => cache.end_users.refresh(&id, end_user.map(Arc::new)),
            Err(error) => {
                tracing::warn!(%error, "could not reload end users; serving the last known state");
                return;
            }
        }
    }
}
