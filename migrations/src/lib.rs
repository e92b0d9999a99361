//! Schema migrations for Tollgate's database, LiteLLM's core tables first (see
//! `shared/reference/litellm/schema.prisma`), run by `tollgate-admin migrate` and
//! `cargo xtask migrate`.
//!
//! There are none yet: the gateway keeps no state until virtual keys arrive (the Tenancy
//! issue), which brings the first migration and the sea-orm-migration dependency with it.
