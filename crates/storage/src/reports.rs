//! What the spend reports read: the daily roll-ups, row by row (paged) or summed by the
//! dimensions a report groups on, and the spend log itself for request-level answers.

use chrono::NaiveDateTime;
use sea_orm::FromQueryResult;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement, Value};

use crate::rollup::RollupTable;
use crate::{DailySpendRecord, SpendLogRecord, Store, StoreError, Table};

/// Which rows of a roll-up a report reads. Dates are `YYYY-MM-DD`, both ends included.
#[derive(Clone, Debug, Default)]
pub struct DailySpendFilter {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    /// Rows of these entities only (the table's entity column: user, team, …).
    pub entities: Option<Vec<String>>,
    pub exclude_entities: Vec<String>,
    /// Rows of these keys only (SHA-256 hashes).
    pub api_keys: Option<Vec<String>>,
    pub model: Option<String>,
}

/// A column a summed report groups on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    /// The table's entity column (user, team, organization, end user or tag).
    Entity,
    Date,
    ApiKey,
    Model,
    ModelGroup,
    Provider,
}

impl Dimension {
    const ALL: [Dimension; 6] = [
        Dimension::Entity,
        Dimension::Date,
        Dimension::ApiKey,
        Dimension::Model,
        Dimension::ModelGroup,
        Dimension::Provider,
    ];

    fn column(self, table: RollupTable) -> &'static str {
        match self {
            Dimension::Entity => table.entity_column(),
            Dimension::Date => "date",
            Dimension::ApiKey => "api_key",
            Dimension::Model => "model",
            Dimension::ModelGroup => "model_group",
            Dimension::Provider => "custom_llm_provider",
        }
    }

    fn alias(self) -> &'static str {
        match self {
            Dimension::Entity => "entity_id",
            Dimension::Date => "date",
            Dimension::ApiKey => "api_key",
            Dimension::Model => "model",
            Dimension::ModelGroup => "model_group",
            Dimension::Provider => "custom_llm_provider",
        }
    }
}

/// Sums over the roll-up rows sharing the grouped dimensions; a dimension not grouped on
/// reads as `None`.
#[derive(Clone, Debug, Default, PartialEq, FromQueryResult)]
pub struct DailySpendGroup {
    pub entity_id: Option<String>,
    pub date: Option<String>,
    pub api_key: Option<String>,
    pub model: Option<String>,
    pub model_group: Option<String>,
    pub custom_llm_provider: Option<String>,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cache_read_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub api_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
}

/// The counters of a roll-up row.
const COUNTERS: [&str; 7] = [
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "api_requests",
    "successful_requests",
    "failed_requests",
];

/// Which spend-log rows a request-level report reads; `until` is exclusive.
#[derive(Clone, Debug, Default)]
pub struct SpendLogQuery {
    /// The key's SHA-256.
    pub api_key: Option<String>,
    /// The key's user (the `user` column).
    pub user: Option<String>,
    pub request_id: Option<String>,
    pub from: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    /// The newest rows first, at most this many.
    pub limit: u64,
}

fn filtered(select: &mut SelectStatement, table: RollupTable, filter: &DailySpendFilter) {
    select.from(Alias::new(table.name()));
    if let Some(start) = &filter.start_date {
        select.and_where(Expr::col(Alias::new("date")).gte(start.as_str()));
    }
    if let Some(end) = &filter.end_date {
        select.and_where(Expr::col(Alias::new("date")).lte(end.as_str()));
    }
    let entity = Alias::new(table.entity_column());
    if let Some(entities) = &filter.entities {
        select.and_where(Expr::col(entity.clone()).is_in(entities.iter().map(String::as_str)));
    }
    if !filter.exclude_entities.is_empty() {
        select.and_where(Expr::col(entity).is_not_in(filter.exclude_entities.iter().map(String::as_str)));
    }
    if let Some(keys) = &filter.api_keys {
        select.and_where(Expr::col(Alias::new("api_key")).is_in(keys.iter().map(String::as_str)));
    }
    if let Some(model) = &filter.model {
        select.and_where(Expr::col(Alias::new("model")).eq(model.as_str()));
    }
}

impl Store {
    /// Roll-up rows matching `filter`, newest day first (ties by id, so pages are stable).
    pub async fn daily_spend(
        &self,
        table: RollupTable,
        filter: &DailySpendFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<DailySpendRecord>, StoreError> {
        let mut select = Query::select();
        select.expr_as(Expr::col(Alias::new(table.entity_column())), Alias::new("entity_id")).columns(
            ["id", "date", "api_key", "model", "model_group", "custom_llm_provider", "spend"]
                .into_iter()
                .chain(COUNTERS)
                .map(Alias::new),
        );
        filtered(&mut select, table, filter);
        select
            .order_by(Alias::new("date"), Order::Desc)
            .order_by(Alias::new("id"), Order::Asc)
            .limit(limit)
            .offset(offset);
        self.fetch(&select).await
    }

    /// How many roll-up rows match `filter`.
    pub async fn daily_spend_count(
        &self,
        table: RollupTable,
        filter: &DailySpendFilter,
    ) -> Result<u64, StoreError> {
        #[derive(FromQueryResult)]
        struct Count {
            count: i64,
        }
        let mut select = Query::select();
        select.expr_as(Expr::col(sea_orm::sea_query::Asterisk).count(), Alias::new("count"));
        filtered(&mut select, table, filter);
        let rows: Vec<Count> = self.fetch(&select).await?;
        Ok(rows.first().map_or(0, |row| u64::try_from(row.count).unwrap_or(0)))
    }

    /// Roll-up rows matching `filter`, summed per distinct value of the `group_by`
    /// dimensions (one row of totals when `group_by` is empty and anything matched).
    pub async fn daily_spend_totals(
        &self,
        table: RollupTable,
        filter: &DailySpendFilter,
        group_by: &[Dimension],
    ) -> Result<Vec<DailySpendGroup>, StoreError> {
        let mut select = Query::select();
        for dimension in Dimension::ALL {
            let value = if group_by.contains(&dimension) {
                Expr::col(Alias::new(dimension.column(table)))
            } else {
                Expr::cust("NULL")
            };
            select.expr_as(value, Alias::new(dimension.alias()));
        }
        // SUM of a BIGINT is NUMERIC on PostgreSQL, and NULL over no rows on both: cast and
        // coalesce so every backend answers the same types. Column names are constants.
        select.expr_as(
            Expr::cust(r#"CAST(COALESCE(SUM("spend"), 0) AS DOUBLE PRECISION)"#),
            Alias::new("spend"),
        );
        for counter in COUNTERS {
            select.expr_as(
                Expr::cust(format!(r#"CAST(COALESCE(SUM("{counter}"), 0) AS BIGINT)"#)),
                Alias::new(counter),
            );
        }
        filtered(&mut select, table, filter);
        for dimension in group_by {
            select.group_by_col(Alias::new(dimension.column(table)));
        }
        let groups: Vec<DailySpendGroup> = self.fetch(&select).await?;
        // An aggregate without GROUP BY answers one row even when nothing matched.
        Ok(groups.into_iter().filter(|group| group.api_requests > 0 || group.spend != 0.0).collect())
    }

    /// Spend-log rows matching `query`, newest first.
    pub async fn spend_logs(&self, query: &SpendLogQuery) -> Result<Vec<SpendLogRecord>, StoreError> {
        let mut select = Query::select();
        select.column(sea_orm::sea_query::Asterisk).from(Alias::new(Table::SpendLogs.name()));
        if let Some(api_key) = &query.api_key {
            select.and_where(Expr::col(Alias::new("api_key")).eq(api_key.as_str()));
        }
        if let Some(user) = &query.user {
            select.and_where(Expr::col(Alias::new("user")).eq(user.as_str()));
        }
        if let Some(request_id) = &query.request_id {
            select.and_where(Expr::col(Alias::new("request_id")).eq(request_id.as_str()));
        }
        if let Some(from) = query.from {
            select.and_where(Expr::col(Alias::new("startTime")).gte(Value::ChronoDateTime(Some(from))));
        }
        if let Some(until) = query.until {
            select.and_where(Expr::col(Alias::new("startTime")).lt(Value::ChronoDateTime(Some(until))));
        }
        select.order_by(Alias::new("startTime"), Order::Desc).limit(query.limit);
        self.fetch(&select).await
    }
}
