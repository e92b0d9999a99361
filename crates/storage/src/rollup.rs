//! Daily spend roll-ups, LiteLLM's `LiteLLM_Daily*Spend` tables: one row per entity, UTC
//! day, key, model and provider, summed from the spend-log rows a batch actually inserted,
//! in the batch's own transaction. A batch retried after an unanswered commit inserts no
//! row twice (`ON CONFLICT DO NOTHING`), so it adds nothing twice either.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, InsertStatement, OnConflict, Query};
use sea_orm::{DbBackend, DbErr};
use serde_json::Value;

use crate::{Cell, SpendLogRow};

/// Roll-up rows per statement: 18 values each stays far below both backends' bind limits.
const ROWS_PER_STATEMENT: usize = 500;

/// The five daily roll-ups, by what they are per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RollupTable {
    Users,
    Teams,
    Organizations,
    EndUsers,
    Tags,
}

impl RollupTable {
    pub const ALL: [RollupTable; 5] = [
        RollupTable::Users,
        RollupTable::Teams,
        RollupTable::Organizations,
        RollupTable::EndUsers,
        RollupTable::Tags,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RollupTable::Users => "LiteLLM_DailyUserSpend",
            RollupTable::Teams => "LiteLLM_DailyTeamSpend",
            RollupTable::Organizations => "LiteLLM_DailyOrganizationSpend",
            RollupTable::EndUsers => "LiteLLM_DailyEndUserSpend",
            RollupTable::Tags => "LiteLLM_DailyTagSpend",
        }
    }

    /// The column naming the entity a row is for.
    pub fn entity_column(self) -> &'static str {
        match self {
            RollupTable::Users => "user_id",
            RollupTable::Teams => "team_id",
            RollupTable::Organizations => "organization_id",
            RollupTable::EndUsers => "end_user_id",
            RollupTable::Tags => "tag",
        }
    }
}

/// What the roll-ups need from one spend-log row, owned so the write can run on the
/// database's runtime.
#[derive(Clone, Debug)]
pub(crate) struct LoggedRequest {
    pub request_id: String,
    pub date: String,
    pub api_key: String,
    pub model: String,
    pub model_group: String,
    pub provider: String,
    /// The key's user (`user_api_key_user_id`), `""` when the key has none: LiteLLM's user
    /// roll-up keeps such requests under the empty user, which makes it the one table that
    /// holds every request (the global reports read it).
    pub user_id: String,
    pub team_id: Option<String>,
    pub organization_id: Option<String>,
    pub end_user: Option<String>,
    pub tags: Vec<String>,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cache_read_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub succeeded: bool,
}

impl LoggedRequest {
    /// `metadata` is the row's metadata already parsed (the insert parses it once for both).
    pub fn new(row: &SpendLogRow, metadata: &Value) -> Self {
        let usage = metadata.get("usage_object");
        let usage_count = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_i64).unwrap_or(0);
        Self {
            request_id: row.request_id.clone(),
            date: row.start_time.format("%Y-%m-%d").to_string(),
            api_key: row.api_key.clone(),
            model: row.model.clone(),
            model_group: row.model_group.clone(),
            provider: row.custom_llm_provider.clone(),
            user_id: key_user(metadata).to_owned(),
            team_id: row.team_id.clone().filter(|id| !id.is_empty()),
            organization_id: row.organization_id.clone().filter(|id| !id.is_empty()),
            end_user: row.end_user.clone().filter(|id| !id.is_empty()),
            tags: tags(metadata),
            spend: row.spend,
            prompt_tokens: i64::from(row.prompt_tokens),
            completion_tokens: i64::from(row.completion_tokens),
            cache_read_input_tokens: usage_count("cache_read_input_tokens"),
            cache_creation_input_tokens: usage_count("cache_creation_input_tokens"),
            succeeded: row.status == "success",
        }
    }
}

/// The key's user, as LiteLLM writes it to the spend log's `user` column.
pub(crate) fn key_user(metadata: &Value) -> &str {
    metadata.get("user_api_key_user_id").and_then(Value::as_str).unwrap_or("")
}

/// The request's tags (`metadata.tags`), as LiteLLM writes them to `request_tags`.
/// A tag named twice counts once.
pub(crate) fn tags(metadata: &Value) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in metadata.get("tags").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    {
        if !tags.iter().any(|seen| seen == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

/// One roll-up row's identity; ordered so every replica touches rows in the same order
/// (fewer deadlocks between concurrent writers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RollupKey {
    pub table: RollupTable,
    pub entity: String,
    pub date: String,
    pub api_key: String,
    pub model: String,
    pub provider: String,
}

/// What a batch adds to one roll-up row.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RollupSums {
    pub model_group: String,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cache_read_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub api_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    /// The last request counted (the tag roll-up's `request_id`, as LiteLLM keeps it).
    pub request_id: String,
}

impl RollupSums {
    fn add(&mut self, request: &LoggedRequest) {
        self.model_group.clone_from(&request.model_group);
        self.spend += request.spend;
        self.prompt_tokens += request.prompt_tokens;
        self.completion_tokens += request.completion_tokens;
        self.cache_read_input_tokens += request.cache_read_input_tokens;
        self.cache_creation_input_tokens += request.cache_creation_input_tokens;
        self.api_requests += 1;
        if request.succeeded {
            self.successful_requests += 1;
        } else {
            self.failed_requests += 1;
        }
        self.request_id.clone_from(&request.request_id);
    }
}

/// Sums `requests` per roll-up row: every request into the user roll-up, into the team,
/// organization and end-user roll-ups when it has one, and into the tag roll-up once per tag.
pub(crate) fn sums<'a>(
    requests: impl IntoIterator<Item = &'a LoggedRequest>,
) -> BTreeMap<RollupKey, RollupSums> {
    let mut sums: BTreeMap<RollupKey, RollupSums> = BTreeMap::new();
    for request in requests {
        let entities = std::iter::once((RollupTable::Users, Some(request.user_id.as_str())))
            .chain([
                (RollupTable::Teams, request.team_id.as_deref()),
                (RollupTable::Organizations, request.organization_id.as_deref()),
                (RollupTable::EndUsers, request.end_user.as_deref()),
            ])
            .chain(request.tags.iter().map(|tag| (RollupTable::Tags, Some(tag.as_str()))));
        for (table, entity) in entities {
            let Some(entity) = entity else { continue };
            let key = RollupKey {
                table,
                entity: entity.to_owned(),
                date: request.date.clone(),
                api_key: request.api_key.clone(),
                model: request.model.clone(),
                provider: request.provider.clone(),
            };
            sums.entry(key).or_default().add(request);
        }
    }
    sums
}

/// The counters an upsert adds to an existing row.
const COUNTERS: [&str; 9] = [
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "spend",
    "api_requests",
    "successful_requests",
    "failed_requests",
    "updated_at",
];

/// `INSERT … ON CONFLICT (the roll-up key) DO UPDATE SET counter = counter + excluded.counter`
/// statements for `sums`, table by table. The MCP tool and endpoint parts of LiteLLM's
/// unique key are written as `''`, as LiteLLM writes them when absent: a NULL would never
/// conflict, and every batch would add a row instead of adding to one.
pub(crate) fn upserts(
    sums: &BTreeMap<RollupKey, RollupSums>,
    backend: DbBackend,
    now: NaiveDateTime,
) -> Result<Vec<InsertStatement>, DbErr> {
    let mut statements = Vec::new();
    for table in RollupTable::ALL {
        let rows: Vec<(&RollupKey, &RollupSums)> =
            sums.iter().filter(|(key, _)| key.table == table).collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            statements.push(upsert(table, chunk, backend, now)?);
        }
    }
    Ok(statements)
}

fn upsert(
    table: RollupTable,
    rows: &[(&RollupKey, &RollupSums)],
    backend: DbBackend,
    now: NaiveDateTime,
) -> Result<InsertStatement, DbErr> {
    let tags = table == RollupTable::Tags;
    let mut columns = vec![
        "id",
        table.entity_column(),
        "date",
        "api_key",
        "model",
        "model_group",
        "custom_llm_provider",
        "mcp_namespaced_tool_name",
        "endpoint",
    ];
    columns.extend(COUNTERS);
    columns.push("created_at");
    if tags {
        columns.push("request_id");
    }
    let mut insert = Query::insert();
    insert.into_table(Alias::new(table.name())).columns(columns.iter().map(|column| Alias::new(*column)));
    for (key, sums) in rows {
        let mut cells = vec![
            Cell::text(uuid::Uuid::new_v4().to_string()),
            Cell::text(&key.entity),
            Cell::text(&key.date),
            Cell::text(&key.api_key),
            Cell::text(&key.model),
            Cell::text(&sums.model_group),
            Cell::text(&key.provider),
            Cell::text(""),
            Cell::text(""),
            Cell::BigInt(Some(sums.prompt_tokens)),
            Cell::BigInt(Some(sums.completion_tokens)),
            Cell::BigInt(Some(sums.cache_read_input_tokens)),
            Cell::BigInt(Some(sums.cache_creation_input_tokens)),
            Cell::Float(Some(sums.spend)),
            Cell::BigInt(Some(sums.api_requests)),
            Cell::BigInt(Some(sums.successful_requests)),
            Cell::BigInt(Some(sums.failed_requests)),
            Cell::Time(Some(now)),
            Cell::Time(Some(now)),
        ];
        if tags {
            cells.push(Cell::text(&sums.request_id));
        }
        insert
            .values(cells.into_iter().map(|cell| cell.into_expr(backend)))
            .map_err(|error| DbErr::Custom(error.to_string()))?;
    }
    let target = [
        table.entity_column(),
        "date",
        "api_key",
        "model",
        "custom_llm_provider",
        "mcp_namespaced_tool_name",
        "endpoint",
    ];
    let mut on_conflict = OnConflict::columns(target.map(Alias::new));
    for counter in COUNTERS {
        let excluded = Expr::col((Alias::new("excluded"), Alias::new(counter)));
        let value = if counter == "updated_at" {
            excluded
        } else {
            Expr::col((Alias::new(table.name()), Alias::new(counter))).add(excluded)
        };
        on_conflict.value(Alias::new(counter), value);
    }
    if tags {
        on_conflict
            .value(Alias::new("request_id"), Expr::col((Alias::new("excluded"), Alias::new("request_id"))));
    }
    insert.on_conflict(on_conflict);
    Ok(insert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, user: &str, team: Option<&str>, tags: &[&str], succeeded: bool) -> LoggedRequest {
        LoggedRequest {
            request_id: id.into(),
            date: "2026-11-22".into(),
            api_key: "hash".into(),
            model: "gpt-4o".into(),
            model_group: "gpt-4o".into(),
            provider: "openai".into(),
            user_id: user.into(),
            team_id: team.map(str::to_owned),
            organization_id: None,
            end_user: None,
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            spend: 0.5,
            prompt_tokens: 10,
            completion_tokens: 5,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
            succeeded,
        }
    }

    #[test]
    fn every_request_reaches_the_user_roll_up_and_only_its_own_entities() {
        let requests = [
            request("a", "", Some("t1"), &["x", "y"], true),
            request("b", "", None, &["x"], false),
            request("c", "u1", Some("t1"), &[], true),
        ];
        let sums = sums(&requests);
        let of = |table: RollupTable, entity: &str| {
            sums.iter()
                .find(|(key, _)| key.table == table && key.entity == entity)
                .map(|(_, sums)| sums.clone())
                .unwrap_or_default()
        };
        let keyless = of(RollupTable::Users, "");
        assert_eq!((keyless.api_requests, keyless.successful_requests, keyless.failed_requests), (2, 1, 1));
        assert_eq!(of(RollupTable::Users, "u1").api_requests, 1);
        let team = of(RollupTable::Teams, "t1");
        assert_eq!((team.api_requests, team.spend, team.prompt_tokens), (2, 1.0, 20));
        assert_eq!(of(RollupTable::Tags, "x").api_requests, 2);
        assert_eq!(of(RollupTable::Tags, "y").request_id, "a");
        assert!(
            !sums
                .keys()
                .any(|key| key.table == RollupTable::Organizations || key.table == RollupTable::EndUsers)
        );
    }

    #[test]
    fn upserts_add_to_the_existing_row() {
        let sums = sums(&[request("a", "u1", None, &["x"], true)]);
        let statements = upserts(&sums, DbBackend::Postgres, chrono::Utc::now().naive_utc()).unwrap();
        assert_eq!(statements.len(), 2, "the user roll-up and the tag roll-up");
        let sql = DbBackend::Postgres.build(&statements[0]).sql;
        assert!(
            sql.contains(r#"ON CONFLICT ("user_id", "date", "api_key", "model", "custom_llm_provider", "mcp_namespaced_tool_name", "endpoint") DO UPDATE"#),
            "{sql}"
        );
        assert!(sql.contains(r#""spend" = "LiteLLM_DailyUserSpend"."spend" + "excluded"."spend""#), "{sql}");
        let tag_sql = DbBackend::Sqlite.build(&statements[1]).sql;
        assert!(tag_sql.contains(r#""request_id" = "excluded"."request_id""#), "{tag_sql}");
    }
}
