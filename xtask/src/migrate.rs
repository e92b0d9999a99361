//! `cargo xtask migrate`: applies Tollgate's migrations to a database, exactly as the
//! gateway does at start (and as `tollgate-admin migrate` does where there is no source tree).

use anyhow::{Context, bail};

/// The gateway's own default: a SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://tollgate.db?mode=rwc";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let url = match args {
        [] => std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()),
        [flag, url] if flag == "--database-url" => url.clone(),
        _ => bail!("usage: cargo xtask migrate [--database-url URL]"),
    };
    let redacted = tollgate_storage::redact(&url);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let applied = runtime.block_on(async {
        let store = tollgate_storage::Store::connect(&url)
            .await
            .with_context(|| format!("connecting to {redacted}"))?;
        store.migrate().await.with_context(|| format!("migrating {redacted}"))
    })?;
    println!("{redacted}: migrations applied: {applied}");
    Ok(())
}
