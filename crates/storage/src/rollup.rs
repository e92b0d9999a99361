//! Daily spend roll-ups, LiteLLM's `LiteLLM_Daily*Spend` tables: one row per entity, UTC
//! day, key, model and provider, summed from the spend-log rows a batch actually inserted,
//! in the batch's own transaction. A batch retried after an unanswered commit inserts no
//! row twice (`ON CONFLICT DO NOTHING`), so it adds nothing twice either.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use sea_orm::DbBackend;

use crate::SpendLogRow;
use crate::spend_logs::{Bound, Statement, in_statement_sizes};

/// Roll-up rows per statement: 20 values each stays far below both backends' bind limits.
const ROWS_PER_STATEMENT: usize = 512;

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

/// One roll-up row's identity, borrowed from the batch's rows; ordered so every replica
/// touches rows in the same order (fewer deadlocks between concurrent writers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RollupKey<'a> {
    pub table: RollupTable,
    pub entity: &'a str,
    pub date: NaiveDate,
    pub api_key: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
}

/// What a batch adds to one roll-up row.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RollupSums<'a> {
    pub model_group: &'a str,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cache_read_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub api_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    /// The last request counted (the tag roll-up's `request_id`, as LiteLLM keeps it).
    pub request_id: &'a str,
}

impl<'a> RollupSums<'a> {
    fn add(&mut self, row: &'a SpendLogRow) {
        self.model_group = &row.model_group;
        self.spend += row.spend;
        self.prompt_tokens += i64::from(row.prompt_tokens);
        self.completion_tokens += i64::from(row.completion_tokens);
        self.cache_read_input_tokens += row.cache_read_input_tokens;
        self.cache_creation_input_tokens += row.cache_creation_input_tokens;
        self.api_requests += 1;
        if row.status == "success" {
            self.successful_requests += 1;
        } else {
            self.failed_requests += 1;
        }
        self.request_id = &row.request_id;
    }
}

/// Sums `rows` per roll-up row: every request into the user roll-up (a key without a user
/// under the empty user, as LiteLLM keeps it, which makes that the one table holding every
/// request: the global reports read it), into the team, organization and end-user
/// roll-ups when it has one, and into the tag roll-up once per tag.
pub(crate) fn sums<'a>(
    rows: impl IntoIterator<Item = &'a SpendLogRow>,
) -> BTreeMap<RollupKey<'a>, RollupSums<'a>> {
    let mut sums: BTreeMap<RollupKey<'a>, RollupSums<'a>> = BTreeMap::new();
    for row in rows {
        let present = |id: &'a Option<std::sync::Arc<str>>| id.as_deref().filter(|id| !id.is_empty());
        let entities = std::iter::once((RollupTable::Users, Some(row.user_id.as_deref().unwrap_or(""))))
            .chain([
                (RollupTable::Teams, present(&row.team_id)),
                (RollupTable::Organizations, present(&row.organization_id)),
                (RollupTable::EndUsers, present(&row.end_user)),
            ])
            .chain(row.tags.iter().map(|tag| (RollupTable::Tags, Some(&**tag))));
        for (table, entity) in entities {
            let Some(entity) = entity else { continue };
            let key = RollupKey {
                table,
                entity,
                date: row.start_time.date(),
                api_key: &row.api_key,
                model: &row.model,
                provider: &row.custom_llm_provider,
            };
            sums.entry(key).or_default().add(row);
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
    sums: &BTreeMap<RollupKey<'_>, RollupSums<'_>>,
    backend: DbBackend,
    now: NaiveDateTime,
) -> Vec<Statement> {
    let mut statements = Vec::new();
    for table in RollupTable::ALL {
        let rows: Vec<(&RollupKey, &RollupSums)> =
            sums.iter().filter(|(key, _)| key.table == table).collect();
        for chunk in in_statement_sizes(&rows, ROWS_PER_STATEMENT) {
            statements.push(upsert(table, chunk, backend, now));
        }
    }
    statements
}

fn upsert(
    table: RollupTable,
    rows: &[(&RollupKey, &RollupSums)],
    backend: DbBackend,
    now: NaiveDateTime,
) -> Statement {
    let tags = table == RollupTable::Tags;
    let key_columns = [
        table.entity_column(),
        "date",
        "api_key",
        "model",
        "custom_llm_provider",
        "mcp_namespaced_tool_name",
        "endpoint",
    ];
    let mut columns: Vec<&str> = vec!["id"];
    columns.extend(key_columns);
    columns.push("model_group");
    columns.extend(COUNTERS);
    columns.push("created_at");
    if tags {
        columns.push("request_id");
    }
    let quoted =
        |names: &[&str]| names.iter().map(|name| format!("\"{name}\"")).collect::<Vec<_>>().join(", ");
    let mut statement =
        Statement::new(backend, format!("INSERT INTO \"{}\" ({}) VALUES ", table.name(), quoted(&columns)));
    for (index, (key, sums)) in rows.iter().enumerate() {
        statement.sql.push_str(if index == 0 { "(" } else { ", (" });
        let mut values = vec![
            Bound::Owned(uuid::Uuid::new_v4().to_string()),
            Bound::Owned(key.entity.to_owned()),
            Bound::Owned(key.date.format("%Y-%m-%d").to_string()),
            Bound::Owned(key.api_key.to_owned()),
            Bound::Owned(key.model.to_owned()),
            Bound::Owned(key.provider.to_owned()),
            Bound::Static(""),
            Bound::Static(""),
            Bound::Owned(sums.model_group.to_owned()),
            Bound::BigInt(sums.prompt_tokens),
            Bound::BigInt(sums.completion_tokens),
            Bound::BigInt(sums.cache_read_input_tokens),
            Bound::BigInt(sums.cache_creation_input_tokens),
            Bound::Float(sums.spend),
            Bound::BigInt(sums.api_requests),
            Bound::BigInt(sums.successful_requests),
            Bound::BigInt(sums.failed_requests),
            Bound::Time(now),
            Bound::Time(now),
        ];
        if tags {
            values.push(Bound::Owned(sums.request_id.to_owned()));
        }
        for (position, value) in values.into_iter().enumerate() {
            if position > 0 {
                statement.sql.push_str(", ");
            }
            statement.bind(value, None);
        }
        statement.sql.push(')');
    }
    let counters: Vec<String> = COUNTERS
        .iter()
        .map(|counter| match *counter {
            "updated_at" => format!("\"{counter}\" = excluded.\"{counter}\""),
            _ => format!(
                "\"{counter}\" = \"{table}\".\"{counter}\" + excluded.\"{counter}\"",
                table = table.name()
            ),
        })
        .chain(tags.then(|| "\"request_id\" = excluded.\"request_id\"".to_owned()))
        .collect();
    statement.sql.push_str(&format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        quoted(&key_columns),
        counters.join(", ")
    ));
    statement
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn row(id: &str, user: &str, team: Option<&str>, tags: &[&str], succeeded: bool) -> SpendLogRow {
        let start = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap().and_hms_opt(12, 0, 0).unwrap();
        SpendLogRow {
            request_id: id.into(),
            call_type: "acompletion",
            api_key: "hash".into(),
            spend: 0.5,
            prompt_tokens: 10,
            completion_tokens: 5,
            start_time: start,
            end_time: start,
            model: "gpt-4o".into(),
            model_group: "gpt-4o".into(),
            model_id: "".into(),
            custom_llm_provider: "openai".into(),
            api_base: "".into(),
            end_user: None,
            team_id: team.map(Arc::from),
            organization_id: None,
            key_alias: None,
            user_id: (!user.is_empty()).then(|| Arc::from(user)),
            tags: tags.iter().map(|tag| Arc::from(*tag)).collect(),
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
            error: None,
            guardrail: None,
            usage_estimated: false,
            status: if succeeded { "success" } else { "failure" },
            cache_hit: false,
        }
    }

    #[test]
    fn every_request_reaches_the_user_roll_up_and_only_its_own_entities() {
        let rows = [
            row("a", "", Some("t1"), &["x", "y"], true),
            row("b", "", None, &["x"], false),
            row("c", "u1", Some("t1"), &[], true),
        ];
        let sums = sums(&rows);
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
        let rows = [row("a", "u1", None, &["x"], true)];
        let sums = sums(&rows);
        let now = chrono::Utc::now().naive_utc();
        let statements = upserts(&sums, DbBackend::Postgres, now);
        assert_eq!(statements.len(), 2, "the user roll-up and the tag roll-up");
        let sql = &statements[0].sql;
        assert!(
            sql.contains(r#"ON CONFLICT ("user_id", "date", "api_key", "model", "custom_llm_provider", "mcp_namespaced_tool_name", "endpoint") DO UPDATE"#),
            "{sql}"
        );
        assert!(sql.contains(r#""spend" = "LiteLLM_DailyUserSpend"."spend" + excluded."spend""#), "{sql}");
        assert!(sql.contains("($1, $2, $3,"), "{sql}");
        assert_eq!(statements[0].values.len(), 19);
        let sqlite = upserts(&sums, DbBackend::Sqlite, now);
        assert!(sqlite[1].sql.contains(r#""request_id" = excluded."request_id""#), "{}", sqlite[1].sql);
        assert!(sqlite[1].sql.contains("(?, ?, ?,"), "{}", sqlite[1].sql);
        assert_eq!(sqlite[1].values.len(), 20);
    }
}
