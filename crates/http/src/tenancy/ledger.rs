//! Spend not yet written to the database: added in memory when a request's usage is known,
//! counted by every budget check at once, and written as `spend = spend + delta` in one pass
//! every `proxy_batch_write_at` seconds (LiteLLM's setting, default 10) and at shutdown. A
//! failed write keeps the deltas for the next pass, so a database outage loses no spend.

use std::collections::HashMap;
use std::sync::Mutex;

use tollgate_storage::{Store, StoreError, Table};

/// Deltas by (table, id): keys, users, teams, organizations and end users; and each key's
/// spend per model within its `model_max_budget` period (kept in memory, per process, as
/// LiteLLM keeps it in its cache).
#[derive(Debug, Default)]
pub struct Ledger {
    pending: Mutex<HashMap<(Table, String), f64>>,
    model_windows: Mutex<HashMap<(String, String), ModelWindow>>,
}

#[derive(Debug, Clone, Copy)]
struct ModelWindow {
    started: std::time::Instant,
    spent: f64,
}

impl Ledger {
    pub fn add(&self, table: Table, id: &str, cost: f64) {
        if cost <= 0.0 || !cost.is_finite() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *pending.entry((table, id.to_owned())).or_insert(0.0) += cost;
    }

    /// Adds to a key's spend on `model` in its current period of `period` (a new period
    /// starts when the last one is over).
    pub fn add_model_spend(&self, token: &str, model: &str, period: std::time::Duration, cost: f64) {
        if cost <= 0.0 || !cost.is_finite() {
            return;
        }
        let mut windows = self.model_windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = windows
            .entry((token.to_owned(), model.to_owned()))
            .or_insert(ModelWindow { started: std::time::Instant::now(), spent: 0.0 });
        if window.started.elapsed() >= period {
            *window = ModelWindow { started: std::time::Instant::now(), spent: 0.0 };
        }
        window.spent += cost;
    }

    /// A key's spend on `model` in its current period.
    pub fn model_spend(&self, token: &str, model: &str, period: std::time::Duration) -> f64 {
        let windows = self.model_windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        windows
            .get(&(token.to_owned(), model.to_owned()))
            .filter(|window| window.started.elapsed() < period)
            .map_or(0.0, |window| window.spent)
    }

    /// Spend recorded here and not yet in the database.
    pub fn pending(&self, table: Table, id: &str) -> f64 {
        let pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A lookup by borrowed parts would need a second map; the clone is short and rare
        // (only keys with a budget ask).
        pending.get(&(table, id.to_owned())).copied().unwrap_or(0.0)
    }

    /// Writes every pending delta; what fails stays pending. Returns how many rows moved.
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let deltas: Vec<((Table, String), f64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.drain().collect()
        };
        let mut written = 0;
        let mut failure = None;
        let mut unwritten = Vec::new();
        for ((table, id), delta) in deltas {
            if failure.is_some() {
                unwritten.push(((table, id), delta));
                continue;
            }
            match store.add_spend(table, &id, delta).await {
                Ok(()) => written += 1,
                Err(error) => {
                    failure = Some(error);
                    unwritten.push(((table, id), delta));
                }
            }
        }
        if !unwritten.is_empty() {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (entity, delta) in unwritten {
                *pending.entry(entity).or_insert(0.0) += delta;
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(written),
        }
    }
}
