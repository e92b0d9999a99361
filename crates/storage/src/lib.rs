//! Persistence for Tollgate: virtual keys, users, teams, organizations, end users and
//! budgets in LiteLLM's tables, on SQLite or PostgreSQL through sea-orm.
//!
//! Every query runs on a small runtime of its own (one thread), never on the gateway's
//! workers: a PostgreSQL connection belongs to the runtime that opened it, and the workers
//! are single-threaded runtimes that come and go with the server. Callers await the answer
//! from anywhere.

pub mod cache;
mod cell;
mod connect;
mod records;
pub mod redis;
pub mod redis_limits;
mod reports;
mod rollup;
pub mod router_state;
pub mod shared_spend;
mod spend_logs;

pub use connect::redact;

use std::future::Future;
use std::sync::Arc;

use chrono::NaiveDateTime;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SimpleExpr, Value};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, StatementBuilder};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub use cell::{Cell, Json, TextList};
pub use records::{
    BudgetRecord, DailySpendRecord, EndUserRecord, KeyRecord, MembershipRecord, ModelRecord,
    OrganizationRecord, SpendLogError, SpendLogGuardrail, SpendLogRecord, SpendLogRow, TeamRecord,
    UserRecord,
};
pub use reports::{DailySpendFilter, DailySpendGroup, Dimension, SpendLogQuery};
pub use rollup::RollupTable;
pub use sea_orm::DbBackend as Backend;

/// Rows one retention statement deletes at most ([`Store::delete_spend_logs_before`]).
pub const RETENTION_BATCH_ROWS: u64 = 1_000;

/// A row type the store can read: every record of [`records`], or a caller's own.
pub trait Record: FromQueryResult + Send + 'static {}

impl<R: FromQueryResult + Send + 'static> Record for R {}

/// The tables Tollgate reads and writes, by LiteLLM's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    Keys,
    Users,
    Teams,
    TeamMemberships,
    Organizations,
    OrganizationMemberships,
    EndUsers,
    Budgets,
    SpendLogs,
    /// `LiteLLM_ProxyModelTable`: models added through `/model/new` (`store_model_in_db`).
    Models,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Keys => "LiteLLM_VerificationToken",
            Table::Users => "LiteLLM_UserTable",
            Table::Teams => "LiteLLM_TeamTable",
            Table::TeamMemberships => "LiteLLM_TeamMembership",
            Table::Organizations => "LiteLLM_OrganizationTable",
            Table::OrganizationMemberships => "LiteLLM_OrganizationMembership",
            Table::EndUsers => "LiteLLM_EndUserTable",
            Table::Budgets => "LiteLLM_BudgetTable",
            Table::SpendLogs => "LiteLLM_SpendLogs",
            Table::Models => "LiteLLM_ProxyModelTable",
        }
    }

    /// The primary key column (the first one, for the two membership tables).
    pub fn id_column(self) -> &'static str {
        match self {
            Table::Keys => "token",
            Table::Users | Table::TeamMemberships | Table::OrganizationMemberships | Table::EndUsers => {
                "user_id"
            }
            Table::Teams => "team_id",
            Table::Organizations => "organization_id",
            Table::Budgets => "budget_id",
            Table::SpendLogs => "request_id",
            Table::Models => "model_id",
        }
    }
}

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    #[error("the database task stopped before answering")]
    Stopped,
    #[error("redis error: {0}")]
    Redis(String),
}

/// A row whose budget period has ended.
#[derive(Clone, Debug, FromQueryResult)]
pub struct DueBudget {
    pub id: String,
    pub budget_duration: String,
    pub budget_reset_at: Option<NaiveDateTime>,
}

/// Equality filters and paging for a list query.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub filters: Vec<(&'static str, String)>,
    /// Rows whose column is one of these values (e.g. the teams a user belongs to).
    pub any_of: Option<(&'static str, Vec<String>)>,
    pub order_by: Option<&'static str>,
    pub offset: u64,
    pub limit: Option<u64>,
}

/// A connection pool and the runtime its queries run on. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    runtime: Handle,
    _runtime_guard: std::sync::Arc<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc`, `postgres://…`, `postgresql://…?schema=s`).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let options = connect::options(url)?;
        let (runtime, guard) = connect::storage_runtime();
        let db =
            runtime.spawn(sea_orm::Database::connect(options)).await.map_err(|_| StoreError::Stopped)??;
        Ok(Store { db, runtime, _runtime_guard: std::sync::Arc::new(guard) })
    }

    /// The runtime queries run on, for background work that belongs with the database.
    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Applies pending migrations; returns how many ran.
    ///
    /// A database a newer build already migrated (a rollback, or an older replica during a
    /// rolling upgrade) is left alone when it holds every migration this build knows: the
    /// newer migrations only add, so this build works on it. Missing one of this build's
    /// migrations besides holding unknown ones is an error: the two histories differ.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        use tollgate_migrations::{Migrator, MigratorTrait};
        self.run(|db| async move {
            let known: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
            let applied: Vec<String> = match db
                .query_all_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    "SELECT version FROM tollgate_migrations",
                ))
                .await
            {
                Ok(rows) => rows.iter().filter_map(|row| row.try_get::<String>("", "version").ok()).collect(),
                // No bookkeeping table yet: a fresh database.
                Err(_) => Vec::new(),
            };
            let unknown: Vec<&String> = applied.iter().filter(|version| !known.contains(version)).collect();
            if !unknown.is_empty() {
                let missing: Vec<&String> = known.iter().filter(|version| !applied.contains(version)).collect();
                if !missing.is_empty() {
                    return Err(DbErr::Custom(format!(
                        "the database's migrations differ from this build's: it has {unknown:?}, which this build \
                         lacks, and lacks {missing:?}"
                    )));
                }
                tracing::warn!(
                    newer = ?unknown,
                    "the database was migrated by a newer Tollgate; nothing to do (migrations only add)"
                );
                return Ok(0);
            }
            let pending = Migrator::get_pending_migrations(&db).await?.len();
            Migrator::up(&db, None).await?;
            Ok(pending)
        })
        .await
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|db| async move { db.ping().await }).await
    }

    /// Runs SQL text as is (several statements allowed): fixtures and operator scripts.
    pub async fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        let sql = sql.to_owned();
        self.run(|db| async move { db.execute_unprepared(&sql).await.map(drop) }).await
    }

    async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, DbErr>> + Send + 'static,
        T: Send + 'static,
    {
        let task = work(self.db.clone());
        self.runtime.spawn(task).await.map_err(|_| StoreError::Stopped)?.map_err(StoreError::from)
    }

    async fn fetch<R>(&self, statement: &impl StatementBuilder) -> Result<Vec<R>, StoreError>
    where
        R: Record,
    {
        let statement = self.db.get_database_backend().build(statement);
        self.run(|db| async move { R::find_by_statement(statement).all(&db).await }).await
    }

    async fn execute(&self, statement: &impl StatementBuilder) -> Result<u64, StoreError> {
        let statement = self.db.get_database_backend().build(statement);
        self.run(|db| async move { Ok(db.execute_raw(statement).await?.rows_affected()) }).await
    }

    /// One row by primary key.
    pub async fn get<R>(&self, table: Table, id: &str) -> Result<Option<R>, StoreError>
    where
        R: Record,
    {
        let mut select = Query::select();
        select.column(sea_orm::sea_query::Asterisk).from(Alias::new(table.name()));
        select.and_where(Expr::col(Alias::new(table.id_column())).eq(id));
        Ok(self.fetch(&select).await?.into_iter().next())
    }

    /// Rows matching every filter, in `order_by` order, one page at a time.
    pub async fn list<R>(&self, table: Table, query: &ListQuery) -> Result<Vec<R>, StoreError>
    where
        R: Record,
    {
        let mut select = Query::select();
        select.column(sea_orm::sea_query::Asterisk).from(Alias::new(table.name()));
        for (column, value) in &query.filters {
            select.and_where(Expr::col(Alias::new(*column)).eq(value.as_str()));
        }
        if let Some((column, values)) = &query.any_of {
            select.and_where(Expr::col(Alias::new(*column)).is_in(values.iter().map(String::as_str)));
        }
        select.order_by(Alias::new(query.order_by.unwrap_or(table.id_column())), Order::Asc);
        if let Some(limit) = query.limit {
            select.limit(limit);
        }
        if query.offset > 0 {
            select.offset(query.offset);
        }
        self.fetch(&select).await
    }

    /// How many rows a table holds and the latest of their `column` times: a cheap way to
    /// notice that rows were added, changed (when writers set that column) or deleted.
    pub async fn fingerprint(
        &self,
        table: Table,
        column: &'static str,
    ) -> Result<(u64, Option<NaiveDateTime>), StoreError> {
        #[derive(FromQueryResult)]
        struct Fingerprint {
            count: i64,
            latest: Option<NaiveDateTime>,
        }
        let mut select = Query::select();
        select.expr_as(Expr::col(sea_orm::sea_query::Asterisk).count(), Alias::new("count"));
        select.expr_as(Expr::col(Alias::new(column)).max(), Alias::new("latest"));
        select.from(Alias::new(table.name()));
        let rows: Vec<Fingerprint> = self.fetch(&select).await?;
        Ok(rows.first().map_or((0, None), |row| (u64::try_from(row.count).unwrap_or(0), row.latest)))
    }

    /// How many rows match the filters of `query` (paging ignored).
    pub async fn count(&self, table: Table, query: &ListQuery) -> Result<u64, StoreError> {
        #[derive(FromQueryResult)]
        struct Count {
            count: i64,
        }
        let mut select = Query::select();
        select.expr_as(Expr::col(sea_orm::sea_query::Asterisk).count(), Alias::new("count"));
        select.from(Alias::new(table.name()));
        for (column, value) in &query.filters {
            select.and_where(Expr::col(Alias::new(*column)).eq(value.as_str()));
        }
        if let Some((column, values)) = &query.any_of {
            select.and_where(Expr::col(Alias::new(*column)).is_in(values.iter().map(String::as_str)));
        }
        let rows: Vec<Count> = self.fetch(&select).await?;
        Ok(rows.first().map_or(0, |row| u64::try_from(row.count).unwrap_or(0)))
    }

    /// Inserts one row.
    pub async fn insert(&self, table: Table, cells: Vec<(&'static str, Cell)>) -> Result<(), StoreError> {
        let backend = self.backend();
        let mut insert = Query::insert();
        insert.into_table(Alias::new(table.name()));
        insert.columns(cells.iter().map(|(column, _)| Alias::new(*column)));
        let values: Vec<SimpleExpr> = cells.into_iter().map(|(_, cell)| cell.into_expr(backend)).collect();
        insert.values(values).map_err(|error| DbErr::Custom(error.to_string()))?;
        self.execute(&insert).await.map(drop)
    }

    /// Sets `cells` on the row(s) whose `column` equals `value`; returns how many changed.
    pub async fn update_where(
        &self,
        table: Table,
        column: &'static str,
        value: &str,
        cells: Vec<(&'static str, Cell)>,
    ) -> Result<u64, StoreError> {
        if cells.is_empty() {
            return Ok(0);
        }
        let backend = self.backend();
        let mut update = Query::update();
        update.table(Alias::new(table.name()));
        for (column, cell) in cells {
            update.value(Alias::new(column), cell.into_expr(backend));
        }
        update.and_where(Expr::col(Alias::new(column)).eq(value));
        self.execute(&update).await
    }

    /// Sets `cells` on the row with primary key `id`; returns whether it existed.
    pub async fn update(
        &self,
        table: Table,
        id: &str,
        cells: Vec<(&'static str, Cell)>,
    ) -> Result<bool, StoreError> {
        Ok(self.update_where(table, table.id_column(), id, cells).await? > 0)
    }

    /// Deletes rows whose `column` is one of `values`; returns how many went.
    pub async fn delete_where(
        &self,
        table: Table,
        column: &'static str,
        values: &[String],
    ) -> Result<u64, StoreError> {
        if values.is_empty() {
            return Ok(0);
        }
        let mut delete = Query::delete();
        delete.from_table(Alias::new(table.name()));
        delete.and_where(Expr::col(Alias::new(column)).is_in(values.iter().map(String::as_str)));
        self.execute(&delete).await
    }

    /// Deletes rows by primary key; returns how many went.
    pub async fn delete(&self, table: Table, ids: &[String]) -> Result<u64, StoreError> {
        self.delete_where(table, table.id_column(), ids).await
    }

    /// Adds `delta` to a row's `spend` in the database itself (`spend = spend + delta`), so
    /// writers never overwrite each other's spend.
    pub async fn add_spend(&self, table: Table, id: &str, delta: f64) -> Result<(), StoreError> {
        let mut update = Query::update();
        update
            .table(Alias::new(table.name()))
            .value(Alias::new("spend"), Expr::col(Alias::new("spend")).add(delta))
            .and_where(Expr::col(Alias::new(table.id_column())).eq(id));
        self.execute(&update).await.map(drop)
    }

    /// Writes spend log rows and their daily roll-ups in one transaction (all or none). A
    /// row already written (a batch retried after an unanswered commit) is skipped, and only
    /// the rows this call inserted are added to the roll-ups, so a retry never counts a
    /// request twice.
    pub async fn insert_spend_logs(&self, rows: impl Into<Arc<[SpendLogRow]>>) -> Result<(), StoreError> {
        let rows = rows.into();
        if rows.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().naive_utc();
        self.run(move |db| async move { spend_logs::insert(&db, &rows, now).await }).await
    }

    /// Deletes `LiteLLM_SpendLogs` rows that started before `cutoff`, at most
    /// [`RETENTION_BATCH_ROWS`] per statement and `max_batches` statements, each its own
    /// short transaction so writers are never held up for long; returns how many went. The
    /// daily roll-ups are kept: reports over days read them, not the logs.
    pub async fn delete_spend_logs_before(
        &self,
        cutoff: NaiveDateTime,
        max_batches: u32,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for _ in 0..max_batches {
            let mut oldest = Query::select();
            oldest
                .column(Alias::new("request_id"))
                .from(Alias::new(Table::SpendLogs.name()))
                .and_where(Expr::col(Alias::new("startTime")).lt(Value::ChronoDateTime(Some(cutoff))))
                .limit(RETENTION_BATCH_ROWS);
            let mut delete = Query::delete();
            delete
                .from_table(Alias::new(Table::SpendLogs.name()))
                .and_where(Expr::col(Alias::new("request_id")).in_subquery(oldest));
            let went = self.execute(&delete).await?;
            deleted += went;
            if went < RETENTION_BATCH_ROWS {
                break;
            }
        }
        Ok(deleted)
    }

    /// Rows of `table` (keys, users, teams or budgets) whose budget period ended by `now`.
    pub async fn budgets_due(&self, table: Table, now: NaiveDateTime) -> Result<Vec<DueBudget>, StoreError> {
        let mut select = Query::select();
        select
            .expr_as(Expr::col(Alias::new(table.id_column())), Alias::new("id"))
            .columns([Alias::new("budget_duration"), Alias::new("budget_reset_at")])
            .from(Alias::new(table.name()))
            .and_where(Expr::col(Alias::new("budget_duration")).is_not_null())
            .and_where(Expr::col(Alias::new("budget_reset_at")).lte(Value::ChronoDateTime(Some(now))))
            .limit(1000);
        self.fetch(&select).await
    }

    /// Starts a row's next budget period: its spend (or, for a budget row, the spend of
    /// everything that uses it) back to zero and the next reset time. Only the replica that
    /// still sees the old reset time does it, so two replicas never reset twice.
    pub async fn reset_budget(
        &self,
        table: Table,
        due: &DueBudget,
        next: NaiveDateTime,
    ) -> Result<bool, StoreError> {
        let mut update = Query::update();
        update
            .table(Alias::new(table.name()))
            .value(Alias::new("budget_reset_at"), Value::ChronoDateTime(Some(next)))
            .and_where(Expr::col(Alias::new(table.id_column())).eq(due.id.as_str()))
            .and_where(
                Expr::col(Alias::new("budget_reset_at")).eq(Value::ChronoDateTime(due.budget_reset_at)),
            );
        if table != Table::Budgets {
            update.value(Alias::new("spend"), Value::Double(Some(0.0)));
        }
        if self.execute(&update).await? == 0 {
            return Ok(false);
        }
        if table == Table::Budgets {
            for user in [Table::EndUsers, Table::Organizations, Table::TeamMemberships] {
                self.update_where(user, "budget_id", &due.id, vec![("spend", Cell::Float(Some(0.0)))])
                    .await?;
            }
        }
        Ok(true)
    }

    /// Deletes the membership row of `user_id` in `team_id`, if any.
    pub async fn delete_team_membership(&self, user_id: &str, team_id: &str) -> Result<u64, StoreError> {
        let mut delete = Query::delete();
        delete.from_table(Alias::new(Table::TeamMemberships.name()));
        delete.and_where(Expr::col(Alias::new("user_id")).eq(user_id));
        delete.and_where(Expr::col(Alias::new("team_id")).eq(team_id));
        self.execute(&delete).await
    }
}
