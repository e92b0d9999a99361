//! `tollgate-admin migrate`: brings a database to the schema this build expects, the same
//! migrations the gateway runs at startup, for deployments that start it with
//! `DISABLE_SCHEMA_UPDATE`.

use anyhow::anyhow;
use tollgate_storage::{Store, redact};

/// Connects, applies pending migrations and returns how many ran. Every message names the
/// database by its redacted URL: these end up in CI logs.
pub async fn run(url: &str) -> anyhow::Result<usize> {
    let shown = redact(url);
    let store = Store::connect(url)
        .await
        .map_err(|error| anyhow!("cannot connect to {shown}: {}", scrub(&error, url)))?;
    store.migrate().await.map_err(|error| anyhow!("migrating {shown}: {}", scrub(&error, url)))
}

/// The error's text with the URL's password masked, in case a driver quotes the URL back.
fn scrub(error: &dyn std::fmt::Display, url: &str) -> String {
    let text = error.to_string();
    match password(url) {
        Some(password) => text.replace(password, "***"),
        None => text,
    }
}

/// The password in `scheme://user:password@host…`, if any.
fn password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let credentials = &rest[..rest.rfind('@')?];
    let (_, password) = credentials.split_once(':')?;
    Some(password).filter(|password| !password.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_and_masked() {
        let url = "postgres://app:s3cr%40t@db:5432/litellm";
        assert_eq!(password(url), Some("s3cr%40t"));
        assert_eq!(scrub(&"bad login for app:s3cr%40t", url), "bad login for app:***");
        assert_eq!(password("postgres://app@db/x"), None);
        assert_eq!(password("sqlite://tollgate.db?mode=rwc"), None);
        assert_eq!(password("postgres://app:@db/x"), None);
    }
}
