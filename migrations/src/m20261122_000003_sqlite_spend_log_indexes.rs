//! On SQLite only: drops the spend-log indexes Tollgate never reads. Every request writes a
//! `LiteLLM_SpendLogs` row, and each index is one more B-tree insert per row; profiled, these
//! four cost a third of SQLite's work per row. They serve LiteLLM's UI (sessions, call ids,
//! end-user lookups on raw logs), which never runs against SQLite (LiteLLM supports only
//! PostgreSQL), so on PostgreSQL, a database LiteLLM may share, they stay as its schema has
//! them. What Tollgate reads keeps its index: `request_id` (the key), `api_key` with
//! `startTime` (a key's logs), `startTime` (date ranges, retention).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UNREAD_ON_SQLITE: [&str; 4] = [
    "LiteLLM_SpendLogs_startTime_request_id_idx",
    "LiteLLM_SpendLogs_end_user_idx",
    "LiteLLM_SpendLogs_session_id_idx",
    "LiteLLM_SpendLogs_litellm_call_id_idx",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DbBackend::Sqlite {
            return Ok(());
        }
        for index in UNREAD_ON_SQLITE {
            manager.get_connection().execute_unprepared(&format!("DROP INDEX IF EXISTS \"{index}\"")).await?;
        }
        Ok(())
    }
}
