//! Connection options from a database URL, and the runtime every query runs on.

use std::time::Duration;

use sea_orm::ConnectOptions;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::StoreError;

/// Options for `url`. Prisma's `?schema=` (which LiteLLM's DATABASE_URL carries) becomes the
/// PostgreSQL search path; sqlx itself would refuse the parameter.
pub(crate) fn options(url: &str) -> Result<ConnectOptions, StoreError> {
    let (url, schema) = split_schema(url);
    let sqlite = url.starts_with("sqlite:");
    if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(StoreError::InvalidUrl(format!(
            "expected sqlite://…, postgres://… or postgresql://…, got {}",
            redact(&url)
        )));
    }
    let mut options = ConnectOptions::new(url);
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if sqlite {
        // One writer at a time is all SQLite allows; two connections let a read pass a
        // write. WAL lets readers (another gateway on the same file, too) work beside a
        // writer, a busy timeout waits out a lock instead of failing, a small page cache keeps
        // a laptop's gateway small (SQLite's default is 2 MiB per connection).
        options.max_connections(2).map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
                .pragma("cache_size", "-512")
                // With WAL, NORMAL is safe against corruption and syncs at checkpoints rather
                // than at every commit.
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
        });
    } else {
        options.max_connections(10);
    }
    if let Some(schema) = schema {
        options.set_schema_search_path(schema);
    }
    Ok(options)
}

/// Removes `schema=…` from the query string, returning the URL left and the schema.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(value) if !value.is_empty() => {
                schema = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    (url, schema)
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A one-thread runtime on a thread of its own. It stops when the returned sender (held by
/// every clone of the store) is dropped, outside any async context, so dropping the last
/// store from inside a runtime is safe.
pub(crate) fn storage_runtime() -> (Handle, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tollgate-db".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the database runtime");
            handle_tx.send(runtime.handle().clone()).expect("the caller waits for the handle");
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })
        .expect("spawning the database thread");
    (handle_rx.recv().expect("the database thread sends its handle"), stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prisma_schema_parameter_becomes_the_search_path() {
        let (url, schema) = split_schema("postgresql://u:p@db:5432/litellm?schema=litellm&sslmode=disable");
        assert_eq!(url, "postgresql://u:p@db:5432/litellm?sslmode=disable");
        assert_eq!(schema.as_deref(), Some("litellm"));
        let (url, schema) = split_schema("postgresql://db/litellm?schema=proxy");
        assert_eq!((url.as_str(), schema.as_deref()), ("postgresql://db/litellm", Some("proxy")));
        assert_eq!(
            split_schema("sqlite://tollgate.db?mode=rwc"),
            ("sqlite://tollgate.db?mode=rwc".into(), None)
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://admin:hunter2@db:5432/x"), "postgres://admin:***@db:5432/x");
        assert_eq!(redact("sqlite://tollgate.db"), "sqlite://tollgate.db");
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(matches!(options("mysql://db/x"), Err(StoreError::InvalidUrl(_))));
    }
}
