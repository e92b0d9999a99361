//! One conformance suite for both backends: every test runs against a fresh SQLite file
//! and, when TOLLGATE_TEST_DATABASE_URL is set, against a fresh PostgreSQL schema.

use chrono::{NaiveDateTime, Utc};
use tollgate_storage::{Backend, Cell, KeyRecord, ListQuery, Store, Table, TeamRecord, UserRecord};

/// A store per available backend, each in a database or schema of its own.
async fn stores(test: &str) -> Vec<Store> {
    let mut stores = Vec::new();
    let path = std::env::temp_dir().join(format!("tollgate-{test}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    stores.push(Store::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.expect("sqlite"));
    match std::env::var("TOLLGATE_TEST_DATABASE_URL") {
        Ok(url) => stores.push(postgres_schema(&url, test).await),
        Err(_) => not_run(&format!("the PostgreSQL half of {test}")),
    }
    stores
}

/// Says which suite did not run, past the test harness's output capture (which only
/// catches the print macros), so `cargo test` shows it on a machine without PostgreSQL.
fn not_run(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "not run: {what} (TOLLGATE_TEST_DATABASE_URL is not set)");
}

/// A schema named after the test, dropped and created afresh, as the search path.
async fn postgres_schema(url: &str, test: &str) -> Store {
    let schema = format!("tollgate_test_{test}");
    let admin =
        Store::connect(url).await.expect("TOLLGATE_TEST_DATABASE_URL is set but PostgreSQL is unreachable");
    admin
        .execute_script(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\";"))
        .await
        .expect("creating the test schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Store::connect(&format!("{url}{separator}schema={schema}")).await.expect("postgres with schema")
}

fn key_cells(token: &str, team: Option<&str>) -> Vec<(&'static str, Cell)> {
    vec![
        ("token", Cell::text(token)),
        ("key_name", Cell::text("sk-...abcd")),
        ("key_alias", Cell::text(format!("alias-{token}"))),
        ("models", Cell::List(vec!["gpt-4o".into(), "claude".into()])),
        ("metadata", Cell::Json(serde_json::json!({"env": "prod", "tags": ["a"]}))),
        ("max_budget", Cell::Float(Some(12.5))),
        ("rpm_limit", Cell::BigInt(Some(60))),
        ("max_parallel_requests", Cell::Int(Some(4))),
        ("team_id", Cell::Text(team.map(str::to_owned))),
        (
            "expires",
            Cell::Time(Some(
                NaiveDateTime::parse_from_str("2030-01-02 03:04:05", "%Y-%m-%d %H:%M:%S").unwrap(),
            )),
        ),
        ("created_at", Cell::Time(Some(Utc::now().naive_utc()))),
        ("updated_at", Cell::Time(Some(Utc::now().naive_utc()))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_are_idempotent() {
    for store in stores("migrate").await {
        assert_eq!(
            store.migrate().await.unwrap(),
            3,
            "{:?}: the first run applies every migration",
            store.backend()
        );
        assert_eq!(
            store.migrate().await.unwrap(),
            0,
            "{:?}: the second run has nothing to do",
            store.backend()
        );
        store.ping().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_round_trip_with_lists_json_and_times() {
    for store in stores("keys").await {
        store.migrate().await.unwrap();
        store.insert(Table::Keys, key_cells("hash-1", None)).await.unwrap();
        let key: KeyRecord = store.get(Table::Keys, "hash-1").await.unwrap().expect("inserted");
        assert_eq!(key.models.0, ["gpt-4o", "claude"], "{:?}", store.backend());
        assert_eq!(key.metadata.0["tags"][0], "a");
        assert_eq!(key.max_budget, Some(12.5));
        assert_eq!(key.rpm_limit, Some(60));
        assert_eq!(key.max_parallel_requests, Some(4));
        assert_eq!(key.spend, 0.0, "the column default");
        assert_eq!(key.aliases.0, serde_json::json!({}), "the column default");
        assert!(key.allowed_routes.0.is_empty());
        assert_eq!(key.expires.unwrap().to_string(), "2030-01-02 03:04:05");
        assert_eq!(key.blocked, None);

        assert!(
            store.update(Table::Keys, "hash-1", vec![("blocked", Cell::Bool(Some(true)))]).await.unwrap()
        );
        assert!(
            !store.update(Table::Keys, "missing", vec![("blocked", Cell::Bool(Some(true)))]).await.unwrap()
        );
        let key: KeyRecord = store.get(Table::Keys, "hash-1").await.unwrap().unwrap();
        assert_eq!(key.blocked, Some(true));

        assert_eq!(store.delete(Table::Keys, &["hash-1".into(), "missing".into()]).await.unwrap(), 1);
        assert!(store.get::<KeyRecord>(Table::Keys, "hash-1").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_count_and_page() {
    for store in stores("lists").await {
        store.migrate().await.unwrap();
        store
            .insert(Table::Teams, vec![("team_id", Cell::text("t1")), ("models", Cell::List(vec![]))])
            .await
            .unwrap();
        for index in 0..5 {
            let team = if index % 2 == 0 { Some("t1") } else { None };
            store.insert(Table::Keys, key_cells(&format!("k{index}"), team)).await.unwrap();
        }
        let all = ListQuery::default();
        assert_eq!(store.count(Table::Keys, &all).await.unwrap(), 5);
        let team = ListQuery { filters: vec![("team_id", "t1".into())], ..ListQuery::default() };
        assert_eq!(store.count(Table::Keys, &team).await.unwrap(), 3);
        let page = ListQuery { offset: 2, limit: Some(2), ..team.clone() };
        let keys: Vec<KeyRecord> = store.list(Table::Keys, &page).await.unwrap();
        assert_eq!(keys.iter().map(|key| key.token.as_str()).collect::<Vec<_>>(), ["k4"]);
        let some =
            ListQuery { any_of: Some(("token", vec!["k1".into(), "k3".into()])), ..ListQuery::default() };
        assert_eq!(store.count(Table::Keys, &some).await.unwrap(), 2);
        let teams: Vec<TeamRecord> = store.list(Table::Teams, &all).await.unwrap();
        assert_eq!(teams.len(), 1);
        assert!(!teams[0].blocked);
    }
}

/// A database as LiteLLM's own migrations leave it (PostgreSQL only: the fixture is
/// Prisma's DDL), read by Tollgate after its migrations ran and left it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_database_litellm_created() {
    let Ok(url) = std::env::var("TOLLGATE_TEST_DATABASE_URL") else {
        not_run("reads_a_database_litellm_created");
        return;
    };
    let store = postgres_schema(&url, "litellm_fixture").await;
    assert_eq!(store.backend(), Backend::Postgres);
    store.execute_script(include_str!("fixtures/litellm_core_schema.sql")).await.expect("the fixture loads");
    assert_eq!(
        store.migrate().await.unwrap(),
        3,
        "every migration runs (the third does nothing on PostgreSQL)"
    );

    // SHA-256 of "sk-seed-0123456789", as LiteLLM stored it.
    let token = "cc6d746d5eac00365787fb26550b4df91cfec79729c680bed294b0fdd51dd67c";
    let key: KeyRecord = store.get(Table::Keys, token).await.unwrap().expect("the seeded key");
    assert_eq!(key.key_alias.as_deref(), Some("seed-key"));
    assert_eq!(key.models.0, ["gpt-4o-mini"]);
    assert_eq!(key.spend, 2.5);
    assert_eq!(key.metadata.0["env"], "test");
    assert_eq!(key.rpm_limit, Some(100));
    let team: TeamRecord = store.get(Table::Teams, "team-seed").await.unwrap().unwrap();
    assert_eq!(team.models.0, ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(team.organization_id.as_deref(), Some("org-seed"));
    let user: UserRecord = store.get(Table::Users, "user-seed").await.unwrap().unwrap();
    assert_eq!(user.teams.0, ["team-seed"]);
    assert_eq!(user.user_role.as_deref(), Some("internal_user"));

    // Tollgate writes into LiteLLM's tables in LiteLLM's types.
    store.insert(Table::Keys, key_cells("tollgate-written", Some("team-seed"))).await.unwrap();
    let team_keys = ListQuery { filters: vec![("team_id", "team-seed".into())], ..ListQuery::default() };
    assert_eq!(store.count(Table::Keys, &team_keys).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_come_due_and_reset_once() {
    use chrono::Duration;
    for store in stores("resets").await {
        store.migrate().await.unwrap();
        let past = Utc::now().naive_utc() - Duration::seconds(5);
        let future = Utc::now().naive_utc() + Duration::hours(1);
        for (token, reset_at) in [("due", past), ("later", future)] {
            let mut cells = key_cells(token, None);
            cells.extend([
                ("spend", Cell::Float(Some(3.0))),
                ("budget_duration", Cell::text("1h")),
                ("budget_reset_at", Cell::Time(Some(reset_at))),
            ]);
            store.insert(Table::Keys, cells).await.unwrap();
        }
        let due = store.budgets_due(Table::Keys, Utc::now().naive_utc()).await.unwrap();
        assert_eq!(due.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["due"], "{:?}", store.backend());
        assert!(store.reset_budget(Table::Keys, &due[0], future).await.unwrap());
        assert!(
            !store.reset_budget(Table::Keys, &due[0], future).await.unwrap(),
            "a second replica does nothing"
        );
        let key: KeyRecord = store.get(Table::Keys, "due").await.unwrap().unwrap();
        assert_eq!(key.spend, 0.0);
        assert!(store.budgets_due(Table::Keys, Utc::now().naive_utc()).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_logs_are_written_in_batches_and_retries_do_not_duplicate() {
    use tollgate_storage::{SpendLogRecord, SpendLogRow};
    for store in stores("spend_logs").await {
        store.migrate().await.unwrap();
        let now = Utc::now().naive_utc();
        let rows: Vec<SpendLogRow> = (0..3)
            .map(|i| SpendLogRow {
                request_id: format!("req-{i}").into(),
                call_type: "acompletion",
                api_key: "hash".into(),
                spend: 0.25,
                prompt_tokens: 10,
                completion_tokens: 5,
                start_time: now,
                end_time: now + chrono::Duration::milliseconds(120),
                model: "gpt-4o-2024-08-06".into(),
                model_group: "gpt-4o".into(),
                model_id: "dep-1".into(),
                custom_llm_provider: "openai".into(),
                api_base: "https://api.openai.com/v1".into(),
                end_user: (i == 0).then(|| "cust".into()),
                key_alias: Some("a".into()),
                user_id: Some("u-1".into()),
                status: "success",
                ..Default::default()
            })
            .collect();
        store.insert_spend_logs(&rows[..]).await.unwrap();
        store.insert_spend_logs(&rows[1..]).await.expect("a retried batch is not an error");
        let all: Vec<SpendLogRecord> = store.list(Table::SpendLogs, &ListQuery::default()).await.unwrap();
        assert_eq!(all.len(), 3, "{:?}", store.backend());
        let first = all.iter().find(|row| row.request_id == "req-0").unwrap();
        assert_eq!(first.total_tokens, 15);
        // `user` is the key's user, as LiteLLM writes it; the request's `user` is the end user.
        assert_eq!((first.user.as_deref(), first.end_user.as_deref()), (Some("u-1"), Some("cust")));
        assert_eq!(first.metadata.0["user_api_key_alias"], "a");
        assert_eq!((first.end_time - first.start_time).num_milliseconds(), 120);
    }
}

/// A database a newer build migrated (a rollback) is left alone; one whose history differs
/// from this build's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_build_is_left_alone() {
    for store in stores("newer_schema").await {
        let first = store.migrate().await.unwrap();
        assert!(first >= 3, "{:?}: {first} migrations on a fresh database", store.backend());
        store
            .execute_script(
                "INSERT INTO tollgate_migrations (version, applied_at) VALUES ('m20991231_000001_future', 0)",
            )
            .await
            .unwrap();
        assert_eq!(store.migrate().await.unwrap(), 0, "{:?}: nothing to do", store.backend());
        store
            .execute_script("DELETE FROM tollgate_migrations WHERE version = 'm20261122_000002_daily_spend'")
            .await
            .unwrap();
        let error = store.migrate().await.unwrap_err().to_string();
        assert!(error.contains("m20261122_000002_daily_spend"), "{error}");
    }
}
