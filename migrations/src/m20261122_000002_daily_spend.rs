//! LiteLLM's daily spend roll-ups (per user, team, organization, end user and tag), column
//! for column and index for index as in LiteLLM's schema.prisma, plus the spend-log
//! indexes the reports and the retention job lean on.
//!
//! Index names are Prisma's, truncated to PostgreSQL's 63 characters the way Prisma does,
//! so a database LiteLLM already migrated keeps its indexes and gets no duplicates.

use sea_orm_migration::prelude::*;

use crate::schema::{Index, Table, create_index, create_table};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let connection = manager.get_connection();
        for table in TABLES {
            connection.execute_unprepared(&create_table(backend, table)).await?;
        }
        for index in INDEXES.iter().flat_map(|group| group.iter()) {
            connection.execute_unprepared(&create_index(index)).await?;
        }
        Ok(())
    }
}

/// The columns every daily table shares after its entity column; `updated_at` has no
/// default because Prisma (`@updatedAt`) sets it on every write, and so does Tollgate.
macro_rules! daily_columns {
    ($entity:literal, $extra:literal) => {
        concat!(
            "
            id text!
            ",
            $entity,
            "
            date text!
            api_key text!
            model text
            model_group text
            custom_llm_provider text
            mcp_namespaced_tool_name text
            endpoint text
            prompt_tokens bigint! =0
            completion_tokens bigint! =0
            cache_read_input_tokens bigint! =0
            cache_creation_input_tokens bigint! =0
            compression_saved_tokens bigint! =0
            compression_savings_spend float! =0
            prompt_caching_savings_spend float! =0
            gateway_injected_caching_savings_spend float! =0
            autorouter_savings_spend float! =0
            spend float! =0
            api_requests bigint! =0
            successful_requests bigint! =0
            failed_requests bigint! =0
            total_response_time_ms bigint! =0
            timed_requests bigint! =0
            ",
            $extra,
            "
            created_at timestamp! =now
            updated_at timestamp!"
        )
    };
}

pub const TABLES: &[Table] = &[
    Table {
        name: "LiteLLM_DailyUserSpend",
        columns: daily_columns!("user_id text", ""),
        primary_key: &["id"],
        foreign_keys: &[],
    },
    Table {
        name: "LiteLLM_DailyTeamSpend",
        columns: daily_columns!("team_id text", "ptu_flat_cost float! =0"),
        primary_key: &["id"],
        foreign_keys: &[],
    },
    Table {
        name: "LiteLLM_DailyOrganizationSpend",
        columns: daily_columns!("organization_id text", ""),
        primary_key: &["id"],
        foreign_keys: &[],
    },
    Table {
        name: "LiteLLM_DailyEndUserSpend",
        columns: daily_columns!("end_user_id text", ""),
        primary_key: &["id"],
        foreign_keys: &[],
    },
    Table {
        name: "LiteLLM_DailyTagSpend",
        columns: daily_columns!("request_id text\n            tag text", ""),
        primary_key: &["id"],
        foreign_keys: &[],
    },
];

const fn index(name: &'static str, table: &'static str, columns: &'static [&'static str]) -> Index {
    Index { name, table, columns, unique: false }
}

const fn unique(name: &'static str, table: &'static str, columns: &'static [&'static str]) -> Index {
    Index { name, table, columns, unique: true }
}

/// The roll-up key after the entity column: one row per entity, day, key, model, provider,
/// MCP tool and endpoint.
macro_rules! daily_indexes {
    ($table:literal, $entity:literal, $unique_name:literal) => {
        [
            unique(
                $unique_name,
                $table,
                &[
                    $entity,
                    "date",
                    "api_key",
                    "model",
                    "custom_llm_provider",
                    "mcp_namespaced_tool_name",
                    "endpoint",
                ],
            ),
            index(concat!($table, "_date_idx"), $table, &["date"]),
            index(concat!($table, "_", $entity, "_date_idx"), $table, &[$entity, "date"]),
            index(concat!($table, "_api_key_idx"), $table, &["api_key"]),
            index(concat!($table, "_model_idx"), $table, &["model"]),
            index(concat!($table, "_mcp_namespaced_tool_name_idx"), $table, &["mcp_namespaced_tool_name"]),
            index(concat!($table, "_endpoint_idx"), $table, &["endpoint"]),
        ]
    };
}

const USER_INDEXES: [Index; 7] = daily_indexes!(
    "LiteLLM_DailyUserSpend",
    "user_id",
    "LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_ll_key"
);
const TEAM_INDEXES: [Index; 7] = daily_indexes!(
    "LiteLLM_DailyTeamSpend",
    "team_id",
    "LiteLLM_DailyTeamSpend_team_id_date_api_key_model_custom_ll_key"
);
const ORGANIZATION_INDEXES: [Index; 7] = daily_indexes!(
    "LiteLLM_DailyOrganizationSpend",
    "organization_id",
    "LiteLLM_DailyOrganizationSpend_organization_id_date_api_key_key"
);
const END_USER_INDEXES: [Index; 7] = daily_indexes!(
    "LiteLLM_DailyEndUserSpend",
    "end_user_id",
    "LiteLLM_DailyEndUserSpend_end_user_id_date_api_key_model_cu_key"
);
const TAG_INDEXES: [Index; 7] = daily_indexes!(
    "LiteLLM_DailyTagSpend",
    "tag",
    "LiteLLM_DailyTagSpend_tag_date_api_key_model_custom_llm_pro_key"
);

/// The spend-log indexes per-key reports (`api_key`, `startTime`) and retention
/// (`startTime`) use. The first migration declares them too; repeating them here (no-ops
/// where they exist) covers databases whose first migration ran before it listed them.
const SPEND_LOG_INDEXES: [Index; 2] = [
    index("LiteLLM_SpendLogs_startTime_idx", "LiteLLM_SpendLogs", &["startTime"]),
    index("LiteLLM_SpendLogs_api_key_startTime_idx", "LiteLLM_SpendLogs", &["api_key", "startTime"]),
];

/// Every index of this migration, table by table.
const INDEXES: [&[Index]; 6] = [
    &USER_INDEXES,
    &TEAM_INDEXES,
    &ORGANIZATION_INDEXES,
    &END_USER_INDEXES,
    &TAG_INDEXES,
    &SPEND_LOG_INDEXES,
];

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm_migration::sea_orm::DbBackend;

    #[test]
    fn prisma_names_fit_postgres_identifiers() {
        let all: Vec<&Index> = INDEXES.iter().flat_map(|group| group.iter()).collect();
        for index in &all {
            assert!(index.name.len() <= 63, "{} is longer than PostgreSQL keeps", index.name);
        }
        let names: std::collections::HashSet<&str> = all.iter().map(|index| index.name).collect();
        assert_eq!(names.len(), all.len(), "no index is declared twice");
    }

    #[test]
    fn daily_tables_render_litellm_types() {
        let team = create_table(DbBackend::Postgres, &TABLES[1]);
        assert!(team.contains("\"prompt_tokens\" BIGINT NOT NULL DEFAULT 0"), "{team}");
        assert!(team.contains("\"spend\" DOUBLE PRECISION NOT NULL DEFAULT 0.0"), "{team}");
        assert!(team.contains("\"ptu_flat_cost\" DOUBLE PRECISION NOT NULL DEFAULT 0.0"), "{team}");
        assert!(team.contains("\"updated_at\" TIMESTAMP(3) NOT NULL,"), "{team}");
        let tag = create_table(DbBackend::Sqlite, &TABLES[4]);
        assert!(tag.contains("\"request_id\" TEXT,\n    \"tag\" TEXT,\n    \"date\" TEXT NOT NULL"), "{tag}");
        assert!(
            create_index(&INDEXES[0][0]).starts_with(
                "CREATE UNIQUE INDEX IF NOT EXISTS \"LiteLLM_DailyUserSpend_user_id_date_api_key_model_custom_ll_key\""
            )
        );
    }
}
