//! Budgets that reset on their `budget_duration` schedule: when a key's, user's, team's or
//! budget row's period ends, its spend goes back to zero and the next reset is set, aligned
//! as LiteLLM aligns it (see `tollgate_domain::duration`).

use tollgate_domain::duration::Duration;
use tollgate_storage::Table;

use super::Tenancy;

/// One pass over every table with budgets; a failure is logged and retried next pass.
pub async fn reset_due_budgets(tenancy: &Tenancy) {
    let now = chrono::Utc::now().naive_utc();
    let mut reset = 0;
    for table in [Table::Keys, Table::Users, Table::Teams, Table::Budgets] {
        let due = match tenancy.store.budgets_due(table, now).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, table = table.name(), "could not look for budgets to reset");
                continue;
            }
        };
        for row in due {
            let Ok(duration) = Duration::parse(&row.budget_duration) else {
                tracing::warn!(id = %row.id, duration = %row.budget_duration, table = table.name(), "unreadable budget_duration; not reset");
                continue;
            };
            match tenancy.store.reset_budget(table, &row, duration.next_reset(now)).await {
                Ok(true) => reset += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, id = %row.id, "could not reset a budget"),
            }
        }
    }
    if reset > 0 {
        tracing::info!(reset, "budget periods ended; spend reset");
        // Spend sits in many cached records (a team's in each of its keys): start afresh.
        tenancy.forget_all();
    }
}

/// Statements per pass: a pass deletes at most this many thousand rows, so a large backlog
/// is worked off a second at a time without holding up spend writes.
const RETENTION_BATCHES_PER_PASS: u32 = 20;

/// When spend logs older than `maximum_spend_logs_retention_period` are next deleted.
#[derive(Debug)]
pub struct Retention {
    pub keep: std::time::Duration,
    pub every: std::time::Duration,
    next: std::time::Instant,
}

impl Retention {
    /// The first pass runs at the refresher's first round.
    pub fn new(keep: std::time::Duration, every: std::time::Duration) -> Self {
        Self { keep, every, next: std::time::Instant::now() }
    }
}

/// Deletes a bounded slice of expired spend logs when a pass is due; a backlog larger than a
/// slice keeps the pass due for the next round. Every replica may run it: deletes of rows
/// already gone are no-ops.
pub async fn delete_expired_spend_logs(tenancy: &Tenancy, retention: &mut Retention) {
    if std::time::Instant::now() < retention.next {
        return;
    }
    let Ok(keep) = chrono::Duration::from_std(retention.keep) else { return };
    let cutoff = chrono::Utc::now().naive_utc() - keep;
    match tenancy.store.delete_spend_logs_before(cutoff, RETENTION_BATCHES_PER_PASS).await {
        Ok(deleted) => {
            if deleted > 0 {
                tracing::info!(deleted, %cutoff, "spend logs past maximum_spend_logs_retention_period deleted");
            }
            let backlog =
                deleted >= u64::from(RETENTION_BATCHES_PER_PASS) * tollgate_storage::RETENTION_BATCH_ROWS;
            if !backlog {
                retention.next = std::time::Instant::now() + retention.every;
            }
        }
        Err(error) => tracing::warn!(%error, "could not delete expired spend logs; retried next round"),
    }
}
