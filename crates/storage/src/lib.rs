//! Persistence for Tollgate: keys, teams, users, budgets and spend logs in SQLite or
//! PostgreSQL through sea-orm, and shared counters, cache and cooldowns in Redis through fred,
//! each with an in-memory twin behind the same trait.
//!
//! Nothing lives here yet: the first repositories arrive with virtual keys (the Tenancy
//! issue). Until then the gateway keeps no state, and says so at start-up when a
//! `database_url` or Redis setting is given.
