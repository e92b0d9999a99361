//! Daily spend roll-ups and spend-log retention, on a fresh SQLite file and, when
//! TOLLGATE_TEST_DATABASE_URL is set, on a fresh PostgreSQL schema.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDateTime, Utc};
use tollgate_storage::{
    DailySpendFilter, Dimension, ListQuery, RollupTable, SpendLogQuery, SpendLogRow, Store, Table,
};

async fn stores(test: &str) -> Vec<Store> {
    let mut stores = Vec::new();
    let path = std::env::temp_dir().join(format!("tollgate-daily-{test}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    stores.push(Store::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.expect("sqlite"));
    match std::env::var("TOLLGATE_TEST_DATABASE_URL") {
        Ok(url) => stores.push(postgres_schema(&url, test).await),
        Err(_) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "not run: the PostgreSQL half of {test} (TOLLGATE_TEST_DATABASE_URL is not set)"
            );
        }
    }
    for store in &stores {
        store.migrate().await.expect("migrations");
    }
    stores
}

async fn postgres_schema(url: &str, test: &str) -> Store {
    let schema = format!("tollgate_test_daily_{test}");
    let admin = Store::connect(url).await.expect("TOLLGATE_TEST_DATABASE_URL is set but unreachable");
    admin
        .execute_script(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\";"))
        .await
        .expect("creating the test schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Store::connect(&format!("{url}{separator}schema={schema}")).await.expect("postgres with schema")
}

fn at(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// A request of `key` (owned by `user`, in `team`) at `start`, costing `spend`.
#[allow(clippy::too_many_arguments)]
fn row(
    id: &str,
    start: NaiveDateTime,
    key: &str,
    user: Option<&str>,
    team: Option<&str>,
    end_user: Option<&str>,
    tags: &[&str],
    spend: f64,
    status: &'static str,
) -> SpendLogRow {
    SpendLogRow {
        request_id: id.into(),
        call_type: "acompletion",
        api_key: key.into(),
        spend,
        prompt_tokens: 100,
        completion_tokens: 20,
        start_time: start,
        end_time: start + Duration::milliseconds(250),
        model: if key == "key-b" { "claude-sonnet".into() } else { "gpt-4o".into() },
        model_group: "general".into(),
        model_id: "dep".into(),
        custom_llm_provider: if key == "key-b" { "anthropic".into() } else { "openai".into() },
        api_base: "http://upstream".into(),
        end_user: end_user.map(Into::into),
        team_id: team.map(Into::into),
        organization_id: team.map(|_| "org-1".into()),
        user_id: user.map(Into::into),
        tags: tags.iter().map(|tag| (*tag).into()).collect(),
        cache_read_input_tokens: 7,
        status,
        ..Default::default()
    }
}

/// Two days of requests from two keys, with and without users, teams, end users and tags.
fn batch() -> Vec<SpendLogRow> {
    let day1 = at("2026-11-20 23:59:59");
    let day2 = at("2026-11-21 00:00:00");
    vec![
        row(
            "r1",
            day1,
            "key-a",
            Some("alice"),
            Some("team-1"),
            Some("cust-1"),
            &["prod", "chat"],
            0.25,
            "success",
        ),
        row("r2", day1, "key-a", Some("alice"), Some("team-1"), None, &["prod"], 0.5, "failure"),
        row("r3", day2, "key-a", Some("alice"), Some("team-1"), Some("cust-1"), &[], 1.0, "success"),
        row("r4", day2, "key-b", None, None, Some("cust-2"), &["prod"], 2.0, "success"),
        row("r5", day2, "key-b", None, None, None, &[], 4.0, "success"),
    ]
}

type Sums = (f64, i64, i64, i64, i64, i64, i64);

/// What each roll-up should hold, computed naively from `rows`: (entity, date, key, model,
/// provider) -> (spend, prompt, completion, cache read, requests, succeeded, failed).
fn expected(rows: &[SpendLogRow], table: RollupTable) -> BTreeMap<Vec<String>, Sums> {
    let mut sums: BTreeMap<Vec<String>, Sums> = BTreeMap::new();
    for row in rows {
        let text = |id: &Option<std::sync::Arc<str>>| id.as_deref().map(str::to_owned);
        let entities: Vec<String> = match table {
            RollupTable::Users => vec![text(&row.user_id).unwrap_or_default()],
            RollupTable::Teams => text(&row.team_id).into_iter().collect(),
            RollupTable::Organizations => text(&row.organization_id).into_iter().collect(),
            RollupTable::EndUsers => text(&row.end_user).into_iter().collect(),
            RollupTable::Tags => row.tags.iter().map(|tag| tag.to_string()).collect(),
        };
        for entity in entities {
            let key = vec![
                entity,
                row.start_time.format("%Y-%m-%d").to_string(),
                row.api_key.to_string(),
                row.model.to_string(),
                row.custom_llm_provider.to_string(),
            ];
            let entry = sums.entry(key).or_default();
            let ok = i64::from(row.status == "success");
            entry.0 += row.spend;
            entry.1 += i64::from(row.prompt_tokens);
            entry.2 += i64::from(row.completion_tokens);
            entry.3 += 7;
            entry.4 += 1;
            entry.5 += ok;
            entry.6 += 1 - ok;
        }
    }
    sums
}

/// What a roll-up holds, in the same shape as [`expected`].
async fn stored(store: &Store, table: RollupTable) -> BTreeMap<Vec<String>, Sums> {
    let by = [Dimension::Entity, Dimension::Date, Dimension::ApiKey, Dimension::Model, Dimension::Provider];
    let groups = store.daily_spend_totals(table, &DailySpendFilter::default(), &by).await.unwrap();
    groups
        .into_iter()
        .map(|g| {
            let key = [g.entity_id, g.date, g.api_key, g.model, g.custom_llm_provider]
                .map(|part| part.expect("every grouped dimension is answered"))
                .to_vec();
            let sums = (
                g.spend,
                g.prompt_tokens,
                g.completion_tokens,
                g.cache_read_input_tokens,
                g.api_requests,
                g.successful_requests,
                g.failed_requests,
            );
            (key, sums)
        })
        .collect()
}

async fn assert_roll_ups_hold(store: &Store, rows: &[SpendLogRow]) {
    for table in RollupTable::ALL {
        let want = expected(rows, table);
        let got = stored(store, table).await;
        assert_eq!(got.len(), want.len(), "{:?} {table:?}: {got:?}", store.backend());
        for (key, sums) in &want {
            let found =
                got.get(key).unwrap_or_else(|| panic!("{:?} {table:?}: no row for {key:?}", store.backend()));
            assert!((found.0 - sums.0).abs() < 1e-9, "{table:?} {key:?}: spend {} != {}", found.0, sums.0);
            assert_eq!(
                (found.1, found.2, found.3, found.4, found.5, found.6),
                (sums.1, sums.2, sums.3, sums.4, sums.5, sums.6),
                "{table:?} {key:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_ups_match_the_inserted_rows() {
    for store in stores("match").await {
        let rows = batch();
        store.insert_spend_logs(&rows[..]).await.unwrap();
        assert_roll_ups_hold(&store, &rows).await;

        // A later batch adds to the rows already there rather than adding rows.
        let later = vec![
            row("r6", at("2026-11-21 12:00:00"), "key-b", None, None, None, &[], 8.0, "success"),
            row(
                "r7",
                at("2026-11-21 13:00:00"),
                "key-a",
                Some("alice"),
                Some("team-1"),
                None,
                &["prod"],
                16.0,
                "success",
            ),
        ];
        store.insert_spend_logs(&later[..]).await.unwrap();
        let all: Vec<SpendLogRow> = rows.iter().chain(&later).cloned().collect();
        assert_roll_ups_hold(&store, &all).await;

        // LiteLLM's row shape: the keyless user as '', the MCP tool and endpoint as ''.
        let keyless = DailySpendFilter { entities: Some(vec![String::new()]), ..DailySpendFilter::default() };
        let records = store.daily_spend(RollupTable::Users, &keyless, 0, 10).await.unwrap();
        assert_eq!(records.len(), 1, "{:?}", store.backend());
        assert_eq!((records[0].date.as_str(), records[0].api_requests), ("2026-11-21", 3));
        assert_eq!(records[0].spend, 14.0);
        assert_eq!(records[0].model_group.as_deref(), Some("general"));
        let count = store.daily_spend_count(RollupTable::Users, &DailySpendFilter::default()).await.unwrap();
        assert_eq!(count, 3, "alice on two days with key-a, the keyless user on one day with key-b");
        let day = DailySpendFilter {
            start_date: Some("2026-11-21".into()),
            end_date: Some("2026-11-21".into()),
            ..DailySpendFilter::default()
        };
        let totals = store.daily_spend_totals(RollupTable::Users, &day, &[]).await.unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!((totals[0].spend, totals[0].api_requests), (1.0 + 2.0 + 4.0 + 8.0 + 16.0, 5));

        // The spend log keeps the key's user in `user` and the tags in `request_tags`.
        let logs = store
            .spend_logs(&SpendLogQuery { user: Some("alice".into()), limit: 100, ..SpendLogQuery::default() })
            .await
            .unwrap();
        assert_eq!(logs.len(), 4);
        assert_eq!(logs[0].request_id, "r7", "newest first");
        let r1 = logs.iter().find(|log| log.request_id == "r1").unwrap();
        assert_eq!(r1.request_tags.0, serde_json::json!(["prod", "chat"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_twice_counts_once() {
    for store in stores("twice").await {
        let rows = batch();
        store.insert_spend_logs(&rows[..]).await.unwrap();
        // The writer retries a batch whose commit went unanswered: nothing is added twice.
        store.insert_spend_logs(&rows[..]).await.unwrap();
        assert_roll_ups_hold(&store, &rows).await;

        // A retry that carries old rows and new ones adds only the new ones; a request id
        // twice in one batch is one request.
        let extra = row(
            "r8",
            at("2026-11-21 09:00:00"),
            "key-a",
            Some("bob"),
            None,
            None,
            &["prod"],
            0.125,
            "success",
        );
        let mixed: Vec<SpendLogRow> =
            rows[2..].iter().cloned().chain([extra.clone(), extra.clone()]).collect();
        store.insert_spend_logs(&mixed[..]).await.unwrap();
        let all: Vec<SpendLogRow> = rows.iter().cloned().chain([extra]).collect();
        assert_roll_ups_hold(&store, &all).await;
        assert_eq!(store.count(Table::SpendLogs, &ListQuery::default()).await.unwrap(), 6);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_old_rows_in_batches() {
    for store in stores("retention").await {
        let now = Utc::now().naive_utc();
        let old: Vec<SpendLogRow> = (0..2_500)
            .map(|i| {
                let start = now - Duration::days(40) + Duration::seconds(i);
                row(&format!("old-{i}"), start, "key-a", Some("alice"), None, None, &[], 0.5, "success")
            })
            .collect();
        let recent: Vec<SpendLogRow> = (0..10)
            .map(|i| {
                row(
                    &format!("new-{i}"),
                    now - Duration::days(1),
                    "key-a",
                    Some("alice"),
                    None,
                    None,
                    &[],
                    1.0,
                    "success",
                )
            })
            .collect();
        store.insert_spend_logs(&old[..]).await.unwrap();
        store.insert_spend_logs(&recent[..]).await.unwrap();
        let cutoff = now - Duration::days(30);

        assert_eq!(
            store.delete_spend_logs_before(cutoff, 2).await.unwrap(),
            2_000,
            "two statements of 1,000"
        );
        assert_eq!(store.delete_spend_logs_before(cutoff, 2).await.unwrap(), 500, "the rest, then it stops");
        assert_eq!(store.delete_spend_logs_before(cutoff, 2).await.unwrap(), 0);

        let left =
            store.spend_logs(&SpendLogQuery { limit: 10_000, ..SpendLogQuery::default() }).await.unwrap();
        assert_eq!(left.len(), 10, "{:?}", store.backend());
        assert!(left.iter().all(|log| log.request_id.starts_with("new-")));
        // Reports over days read the roll-ups, which retention leaves alone.
        let totals =
            store.daily_spend_totals(RollupTable::Users, &DailySpendFilter::default(), &[]).await.unwrap();
        assert_eq!(totals[0].api_requests, 2_510);
        assert!((totals[0].spend - (2_500.0 * 0.5 + 10.0)).abs() < 1e-6);
    }
}
