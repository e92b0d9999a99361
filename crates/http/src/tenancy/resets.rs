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
