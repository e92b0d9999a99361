//! Schema migrations for Tollgate's database, shared by the gateway (at start-up),
//! `tollgate-admin migrate` and `cargo xtask migrate`.
//!
//! The first migration creates LiteLLM's core tables with LiteLLM's names, columns and
//! types (`shared/reference/litellm/schema.prisma`), so a database written by either proxy
//! can be read by the other. The second adds LiteLLM's daily spend roll-ups; the third drops,
//! on SQLite only, spend-log indexes nothing reads there. Tables that
//! already exist are left as they are. Migrations are forward-only: `down` is refused.

mod m20261122_000001_litellm_core_tables;
mod m20261122_000002_daily_spend;
mod m20261122_000003_sqlite_spend_log_indexes;
mod schema;

use sea_orm_migration::prelude::*;

/// Runs Tollgate's migrations in order; applied ones are recorded in `tollgate_migrations`.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_litellm_core_tables::Migration),
            Box::new(m20261122_000002_daily_spend::Migration),
            Box::new(m20261122_000003_sqlite_spend_log_indexes::Migration),
        ]
    }

    /// Tollgate-only tables carry the `tollgate_` prefix, so the bookkeeping table does
    /// too: it must not collide with anything LiteLLM creates.
    fn migration_table_name() -> DynIden {
        "tollgate_migrations".into_iden()
    }
}

pub use sea_orm_migration::MigratorTrait;
