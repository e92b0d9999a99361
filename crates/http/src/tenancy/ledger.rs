//! Spend not yet written to the database: added in memory when a request's usage is known,
//! counted by every budget check at once, and written as `spend = spend + delta` in one
//! transaction every `proxy_batch_write_at` seconds (LiteLLM's setting, default 10) and at
//! shutdown. A failed write keeps the deltas for the next pass, so a database outage loses
//! no spend.
//!
//! With Redis the deltas go to Redis every second instead ([`SharedSpend`]), and the ledger
//! also holds what every replica has recorded there and the database does not have yet, so
//! a budget check here sees the spend of all replicas.

use std::collections::HashMap;
use std::sync::Mutex;

use tollgate_storage::shared_spend::{SharedSpend, SpendDeltas};
use tollgate_storage::{Store, StoreError, Table};

/// Deltas by (table, id): keys, users, teams, organizations and end users; and each key's
/// spend per model within its `model_max_budget` period (kept in memory, per process, as
/// LiteLLM keeps it in its cache).
#[derive(Debug, Default)]
pub struct Ledger {
    spend: Mutex<Unwritten>,
    model_windows: Mutex<HashMap<(String, String), ModelWindow>>,
}

/// Spend the database does not have yet, in three places that are all counted.
#[derive(Debug, Default)]
struct Unwritten {
    /// Recorded here since the last hand-over.
    local: SpendDeltas,
    /// Taken from `local` and being handed to Redis.
    handing_over: SpendDeltas,
    /// Every replica's unwritten spend, as Redis last said.
    shared: SpendDeltas,
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
        let mut spend = self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *spend.local.entry((table, id.to_owned())).or_insert(0.0) += cost;
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

    /// Spend not yet in the database: recorded here, and by the other replicas when shared.
    pub fn pending(&self, table: Table, id: &str) -> f64 {
        let spend = self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A lookup by borrowed parts would need a second map; the clone is short and rare
        // (only keys with a budget ask).
        let row = (table, id.to_owned());
        [&spend.local, &spend.handing_over, &spend.shared].iter().filter_map(|deltas| deltas.get(&row)).sum()
    }

    /// Writes this process's deltas to the database in one transaction; what fails stays
    /// pending. Returns how many rows moved.
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let deltas =
            std::mem::take(&mut self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).local);
        match store.add_spend_many(&deltas).await {
            Ok(()) => Ok(deltas.len()),
            Err(error) => {
                let mut spend = self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                merge(&mut spend.local, deltas);
                Err(error)
            }
        }
    }

    /// Hands this process's deltas to Redis and reads back every replica's unwritten spend.
    /// The deltas are counted throughout; on failure they return to this process's own.
    pub async fn share(&self, shared: &SharedSpend) -> Result<(), StoreError> {
        let deltas = {
            let mut spend = self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let local = std::mem::take(&mut spend.local);
            merge(&mut spend.handing_over, local);
            spend.handing_over.clone()
        };
        if let Err(error) = shared.push(&deltas).await {
            // Whether a timed-out push reached Redis is unknown; counting it again errs on
            // the side of charging rather than losing spend.
            let mut spend = self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let handing_over = std::mem::take(&mut spend.handing_over);
            merge(&mut spend.local, handing_over);
            return Err(error);
        }
        let unwritten = shared.unwritten().await;
        let mut spend = self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let handed_over = std::mem::take(&mut spend.handing_over);
        match unwritten {
            Ok(unwritten) => {
                spend.shared = unwritten;
                Ok(())
            }
            Err(error) => {
                // Redis has the deltas; keep counting them until it can be read again.
                merge(&mut spend.shared, handed_over);
                Err(error)
            }
        }
    }

    /// How many records (keys, users, teams, …) have spend recorded here and not yet
    /// written or handed over.
    pub fn unwritten(&self) -> u64 {
        let spend = self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (spend.local.len() + spend.handing_over.len()) as u64
    }

    /// Forgets the other replicas' spend (Redis is away: each replica counts its own).
    pub fn forget_shared(&self) {
        self.spend.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).shared.clear();
    }
}

fn merge(into: &mut SpendDeltas, deltas: SpendDeltas) {
    for (row, delta) in deltas {
        *into.entry(row).or_insert(0.0) += delta;
    }
}
