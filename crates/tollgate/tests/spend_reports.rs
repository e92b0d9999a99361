//! Spend reports end to end: requests through a real gateway with two keys in two teams
//! (and the master key), their spend logs and daily roll-ups written by the background
//! writer, then every report endpoint checked against the known cost of each request.

mod support;

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{Value, json};
use support::{MASTER_KEY, Reply, TestGateway, assert_error, get, post, send, temp_sqlite_url};
use tollgate_mock_upstream::MockUpstream;

/// `gpt-4o` at its listed prices on the mock upstream; spend written every second.
fn config(mock: &MockUpstream, database_url: &str) -> String {
    format!(
        "model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: \"{database_url}\"
  proxy_batch_write_at: 1
",
        mock.base_url()
    )
}

/// What one mock answer costs at gpt-4o's listed prices.
fn cost() -> f64 {
    tollgate_mock_upstream::PROMPT_TOKENS as f64 * 2.5e-6
        + tollgate_mock_upstream::COMPLETION_TOKENS as f64 * 1e-5
}

fn tokens() -> i64 {
    (tollgate_mock_upstream::PROMPT_TOKENS + tollgate_mock_upstream::COMPLETION_TOKENS) as i64
}

fn close(actual: &Value, expected: f64) -> bool {
    actual.as_f64().is_some_and(|actual| (actual - expected).abs() < 1e-9)
}

#[track_caller]
fn assert_spend(actual: &Value, expected: f64) {
    assert!(close(actual, expected), "spend {actual} != {expected}");
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    sha2::Sha256::digest(text.as_bytes()).iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

async fn call(gateway: &TestGateway, key: &str, path: &str, body: Value) -> Reply {
    send(post(&gateway.url(path), Some(key), body.to_string())).await
}

async fn admin(gateway: &TestGateway, path: &str, body: Value) -> Value {
    let reply = call(gateway, MASTER_KEY, path, body).await;
    assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

/// A GET as `key`, expecting 200.
async fn report(gateway: &TestGateway, key: &str, path: &str) -> Value {
    let reply = send(get(&gateway.url(path), Some(key))).await;
    assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

async fn refused(gateway: &TestGateway, key: &str, path: &str, status: u16) -> Value {
    assert_error(&send(get(&gateway.url(path), Some(key))).await, status)
}

async fn chat(gateway: &TestGateway, key: &str, end_user: Option<&str>) {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(end_user) = end_user {
        body["user"] = json!(end_user);
    }
    let reply = call(gateway, key, "/v1/chat/completions", body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
}

/// Waits until the background writer has written `rows` spend-log rows.
async fn wait_for_logs(gateway: &TestGateway, rows: usize) {
    let started = Instant::now();
    loop {
        let logs = report(gateway, MASTER_KEY, "/spend/logs").await;
        if logs.as_array().is_some_and(|logs| logs.len() == rows) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{rows} spend log rows never arrived: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The report range: the day before to the day after the requests, so a run that crosses
/// midnight UTC still sees every request.
fn range(day: NaiveDate) -> String {
    let before = day.pred_opt().unwrap();
    let after = day.succ_opt().unwrap();
    format!("start_date={before}&end_date={after}")
}

/// The scenario: alice's key in team Alpha (2 requests, one for customer cust-1), a key
/// without a user in team-b (3 requests), the master key (1 request, no team).
struct Scenario {
    gateway: TestGateway,
    alice: String,
    team_b: String,
    day: NaiveDate,
}

async fn scenario(database_url: &str) -> (Scenario, MockUpstream) {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&config(&mock, database_url)).await;
    admin(&gateway, "/user/new", json!({"user_id": "alice", "auto_create_key": false})).await;
    admin(&gateway, "/team/new", json!({"team_id": "team-a", "team_alias": "Alpha"})).await;
    admin(&gateway, "/team/new", json!({"team_id": "team-b"})).await;
    let alice = admin(
        &gateway,
        "/key/generate",
        json!({"team_id": "team-a", "user_id": "alice", "key_alias": "alpha-key"}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let team_b = admin(&gateway, "/key/generate", json!({"team_id": "team-b"})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    chat(&gateway, &alice, Some("cust-1")).await;
    chat(&gateway, &alice, None).await;
    for _ in 0..3 {
        chat(&gateway, &team_b, None).await;
    }
    chat(&gateway, MASTER_KEY, None).await;
    wait_for_logs(&gateway, 6).await;
    let logs = report(&gateway, MASTER_KEY, "/spend/logs").await;
    let day = NaiveDate::parse_from_str(&logs[0]["startTime"].as_str().unwrap()[..10], "%Y-%m-%d").unwrap();
    (Scenario { gateway, alice, team_b, day }, mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_logs_answer_rows_and_days_within_the_callers_reach() {
    let (s, _mock) = scenario(&temp_sqlite_url()).await;
    let (gateway, c) = (&s.gateway, cost());
    let alice_hash = sha256_hex(&s.alice);

    let by_key = report(gateway, MASTER_KEY, &format!("/spend/logs?api_key={}", s.alice)).await;
    let by_key = by_key.as_array().unwrap();
    assert_eq!(by_key.len(), 2, "a raw key is hashed before it is looked up");
    assert!(by_key.iter().all(|row| row["api_key"] == alice_hash && row["user"] == "alice"));
    assert_spend(&by_key[0]["spend"], c);
    assert_eq!(by_key[0]["total_tokens"], tokens());
    let one = report(
        gateway,
        MASTER_KEY,
        &format!("/spend/logs?request_id={}", by_key[1]["request_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["request_id"], by_key[1]["request_id"]);
    assert_eq!(report(gateway, MASTER_KEY, "/spend/logs?user_id=alice").await.as_array().unwrap().len(), 2);

    // With dates: per day, from the roll-ups, every day of the range listed.
    let days = report(gateway, MASTER_KEY, &format!("/spend/logs?{}", range(s.day))).await;
    let days = days.as_array().unwrap();
    assert_eq!(days.len(), 3);
    let today = days.iter().find(|d| d["startTime"] == s.day.to_string()).unwrap();
    assert_spend(&today["spend"], 6.0 * c);
    assert_spend(&today[&alice_hash], 2.0 * c);
    assert_spend(&today[sha256_hex(&s.team_b)], 3.0 * c);
    assert_spend(&today["users"]["alice"], 2.0 * c);
    assert_spend(&today["users"][""], 4.0 * c);
    assert_spend(&today["models"]["gpt-4o"], 6.0 * c);
    let rows = report(gateway, MASTER_KEY, &format!("/spend/logs?{}&summarize=false", range(s.day))).await;
    assert_eq!(rows.as_array().unwrap().len(), 6);

    // Alice sees her own rows only; the key without a user sees its own key's.
    let own = report(gateway, &s.alice, "/spend/logs").await;
    assert_eq!(own.as_array().unwrap().len(), 2);
    let own_days = report(gateway, &s.alice, &format!("/spend/logs?{}", range(s.day))).await;
    let own_today =
        own_days.as_array().unwrap().iter().find(|d| d["startTime"] == s.day.to_string()).unwrap().clone();
    assert_spend(&own_today["spend"], 2.0 * c);
    refused(gateway, &s.alice, "/spend/logs?user_id=bob", 403).await;
    assert_eq!(report(gateway, &s.team_b, "/spend/logs").await.as_array().unwrap().len(), 3);

    // Bad dates are a 400 that names the parameter.
    assert_eq!(
        refused(gateway, MASTER_KEY, "/spend/logs?start_date=2026-13-01&end_date=2026-12-01", 400).await["param"],
        "start_date"
    );
    assert_eq!(
        refused(gateway, MASTER_KEY, "/spend/logs?start_date=2026-01-01", 400).await["param"],
        "end_date"
    );
    assert_eq!(
        refused(gateway, MASTER_KEY, "/spend/logs?start_date=2026-02-01&end_date=2026-01-01", 400).await["param"],
        "end_date"
    );
    assert_eq!(
        refused(
            gateway,
            MASTER_KEY,
            "/spend/logs?summarize=maybe&start_date=2026-01-01&end_date=2026-01-02",
            400
        )
        .await["param"],
        "summarize"
    );
    let wrong_method = call(gateway, MASTER_KEY, "/spend/logs", json!({})).await;
    assert_error(&wrong_method, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_user_tag_and_global_views_add_up() {
    let url = temp_sqlite_url();
    let (s, _mock) = scenario(&url).await;
    let (gateway, c) = (&s.gateway, cost());

    // Key and user spend reach their tables with the ledger's next write.
    let started = Instant::now();
    let keys = loop {
        let keys = report(gateway, MASTER_KEY, "/spend/keys").await;
        if close(&keys[0]["spend"], 3.0 * c) && close(&keys[1]["spend"], 2.0 * c) {
            break keys;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "key spend never arrived: {keys}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(keys[0]["token"], sha256_hex(&s.team_b), "highest spend first");
    assert_eq!(keys[1]["key_alias"], "alpha-key");
    let own_keys = report(gateway, &s.alice, "/spend/keys").await;
    assert_eq!(own_keys.as_array().unwrap().len(), 1);
    assert_eq!(own_keys[0]["user_id"], "alice");

    let started = Instant::now();
    loop {
        let users = report(gateway, MASTER_KEY, "/spend/users?user_id=alice").await;
        assert_eq!(users.as_array().unwrap().len(), 1);
        if close(&users[0]["spend"], 2.0 * c) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "user spend never arrived: {users}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report(gateway, &s.alice, "/spend/users").await[0]["user_id"], "alice");
    refused(gateway, &s.alice, "/spend/users?user_id=root", 403).await;
    refused(gateway, &s.team_b, "/spend/users", 403).await;

    // Tags come from the tag roll-up; a row written with tags by another writer shows up.
    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    let now = chrono::Utc::now().naive_utc();
    store
        .insert_spend_logs(
            &[tollgate_storage::SpendLogRow {
                request_id: "tagged-1".into(),
                call_type: "acompletion",
                api_key: sha256_hex(&s.team_b).into(),
                spend: 0.5,
                prompt_tokens: 1,
                completion_tokens: 1,
                start_time: now,
                end_time: now,
                model: "gpt-4o".into(),
                model_group: "gpt-4o".into(),
                model_id: "x".into(),
                custom_llm_provider: "openai".into(),
                team_id: Some("team-b".into()),
                tags: vec!["batch-job".into(), "nightly".into()],
                status: "success",
                ..Default::default()
            }][..],
        )
        .await
        .unwrap();
    let tags = report(gateway, MASTER_KEY, "/spend/tags").await;
    assert_eq!(tags.as_array().unwrap().len(), 2, "{tags}");
    assert_eq!(tags[0]["log_count"], 1);
    assert_spend(&tags[0]["total_spend"], 0.5);
    refused(gateway, &s.alice, "/spend/tags", 403).await;

    let total = 6.0 * c + 0.5;
    assert_spend(&report(gateway, MASTER_KEY, "/global/spend").await["spend"], total);
    refused(gateway, &s.alice, "/global/spend", 403).await;

    let top = report(gateway, MASTER_KEY, "/global/spend/keys").await;
    let top = top.as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["api_key"], sha256_hex(&s.team_b));
    assert_spend(&top[0]["total_spend"], 3.0 * c + 0.5);
    assert_eq!(top[1]["key_alias"], "alpha-key");
    assert_eq!(top[2]["api_key"], sha256_hex(MASTER_KEY));
    assert_eq!(report(gateway, MASTER_KEY, "/global/spend/keys?limit=1").await.as_array().unwrap().len(), 1);
    assert_eq!(refused(gateway, MASTER_KEY, "/global/spend/keys?limit=0", 400).await["param"], "limit");
    let alice_top = report(gateway, &s.alice, "/global/spend/keys").await;
    assert_eq!(alice_top.as_array().unwrap().len(), 1, "an internal user sees their own keys");

    let models = report(gateway, MASTER_KEY, "/global/spend/models").await;
    assert_eq!(models[0]["model"], "gpt-4o");
    assert_spend(&models[0]["total_spend"], total);
    let alice_models = report(gateway, &s.alice, "/global/spend/models").await;
    assert_spend(&alice_models[0]["total_spend"], 2.0 * c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_report_groups_by_team_customer_and_key() {
    let (s, _mock) = scenario(&temp_sqlite_url()).await;
    let (gateway, c) = (&s.gateway, cost());
    let dates = range(s.day);

    let by_team = report(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&group_by=team")).await;
    assert_eq!(by_team.as_array().unwrap().len(), 1, "one day with spend: {by_team}");
    assert_eq!(by_team[0]["group_by_day"], format!("{}T00:00:00+00:00", s.day));
    let teams = by_team[0]["teams"].as_array().unwrap();
    let team = |name: &str| {
        teams.iter().find(|t| t["team_name"] == name).unwrap_or_else(|| panic!("{name}: {teams:?}"))
    };
    assert_spend(&team("Alpha")["total_spend"], 2.0 * c);
    assert_spend(&team("team-b")["total_spend"], 3.0 * c);
    assert_spend(&team("Unassigned Team")["total_spend"], c);
    let line = &team("Alpha")["metadata"][0];
    assert_eq!(
        (line["model"].as_str(), line["api_key"].as_str()),
        (Some("gpt-4o"), Some(sha256_hex(&s.alice).as_str()))
    );
    assert_eq!(line["total_tokens"], 2 * tokens());

    let by_customer =
        report(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&group_by=customer")).await;
    let customers = by_customer[0]["customers"].as_array().unwrap();
    assert_eq!(customers.len(), 2);
    let named = customers.iter().find(|c| c["customer"] == "cust-1").unwrap();
    assert_spend(&named["total_spend"], c);
    let none = customers.iter().find(|c| c["customer"].is_null()).unwrap();
    assert_spend(&none["total_spend"], 5.0 * c);

    let by_key = report(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&group_by=api_key")).await;
    let by_key = by_key.as_array().unwrap();
    assert_eq!(by_key.len(), 3);
    assert_eq!(by_key[0]["api_key"], sha256_hex(&s.team_b), "most expensive first");
    assert_spend(&by_key[0]["total_cost"], 3.0 * c);
    assert_eq!(by_key[0]["total_input_tokens"], 3 * tollgate_mock_upstream::PROMPT_TOKENS as i64);
    assert_eq!(by_key[0]["model_details"][0]["model"], "gpt-4o");
    let one_key =
        report(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&api_key={}", s.alice)).await;
    assert_eq!(one_key.as_array().unwrap().len(), 1);
    assert_spend(&one_key[0]["total_cost"], 2.0 * c);
    let one_user =
        report(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&internal_user_id=alice")).await;
    assert_spend(&one_user[0]["total_cost"], 2.0 * c);

    assert_eq!(
        refused(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&group_by=model"), 400).await["param"],
        "group_by"
    );
    assert_eq!(
        refused(gateway, MASTER_KEY, "/global/spend/report?group_by=team", 400).await["param"],
        "start_date"
    );
    refused(gateway, &s.alice, &format!("/global/spend/report?{dates}"), 403).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_activity_reads_the_roll_ups_with_breakdowns_and_pages() {
    let (s, _mock) = scenario(&temp_sqlite_url()).await;
    let (gateway, c) = (&s.gateway, cost());
    let dates = range(s.day);
    let alice_hash = sha256_hex(&s.alice);

    let all = report(gateway, MASTER_KEY, &format!("/user/daily/activity?{dates}")).await;
    let day = &all["results"][0];
    assert_eq!(day["date"], s.day.to_string());
    assert_spend(&day["metrics"]["spend"], 6.0 * c);
    assert_eq!(day["metrics"]["api_requests"], 6);
    assert_eq!(day["metrics"]["successful_requests"], 6);
    assert_eq!(day["metrics"]["total_tokens"], 6 * tokens());
    let breakdown = &day["breakdown"];
    assert_spend(&breakdown["models"]["gpt-4o"]["metrics"]["spend"], 6.0 * c);
    assert_spend(
        &breakdown["models"]["gpt-4o"]["api_key_breakdown"][&alice_hash]["metrics"]["spend"],
        2.0 * c,
    );
    assert_spend(&breakdown["providers"]["openai"]["metrics"]["spend"], 6.0 * c);
    assert_spend(&breakdown["api_keys"][&alice_hash]["metrics"]["spend"], 2.0 * c);
    assert_eq!(breakdown["api_keys"][&alice_hash]["metadata"]["key_alias"], "alpha-key");
    assert_eq!(breakdown["api_keys"][&alice_hash]["metadata"]["team_id"], "team-a");
    assert_spend(&breakdown["entities"]["alice"]["metrics"]["spend"], 2.0 * c);
    assert_spend(&breakdown["entities"]["Unassigned"]["metrics"]["spend"], 4.0 * c);
    let metadata = &all["metadata"];
    assert_spend(&metadata["total_spend"], 6.0 * c);
    assert_eq!(metadata["total_api_requests"], 6);
    assert_eq!(
        (metadata["page"].as_u64(), metadata["total_pages"].as_u64(), metadata["has_more"].as_bool()),
        (Some(1), Some(1), Some(false))
    );

    // A page of one roll-up row: the totals still cover the range.
    let paged =
        report(gateway, MASTER_KEY, &format!("/user/daily/activity?{dates}&page_size=1&page=2")).await;
    assert_eq!(paged["results"][0]["metrics"]["api_requests"].as_i64().map(|n| n < 6), Some(true));
    assert_eq!(
        (paged["metadata"]["total_pages"].as_u64(), paged["metadata"]["has_more"].as_bool()),
        (Some(3), Some(true))
    );
    assert_spend(&paged["metadata"]["total_spend"], 6.0 * c);

    // Alice sees her own; the key without a user sees its own key's.
    let own = report(gateway, &s.alice, &format!("/user/daily/activity?{dates}")).await;
    assert_spend(&own["metadata"]["total_spend"], 2.0 * c);
    assert_eq!(own["results"][0]["breakdown"]["api_keys"].as_object().unwrap().len(), 1);
    refused(gateway, &s.alice, &format!("/user/daily/activity?{dates}&user_id=bob"), 403).await;
    let keyed = report(gateway, &s.team_b, &format!("/user/daily/activity?{dates}")).await;
    assert_spend(&keyed["metadata"]["total_spend"], 3.0 * c);
    assert_eq!(
        refused(gateway, MASTER_KEY, &format!("/user/daily/activity?{dates}&page_size=0"), 400).await["param"],
        "page_size"
    );
    assert_eq!(
        refused(gateway, MASTER_KEY, "/user/daily/activity?start_date=yesterday&end_date=2026-01-01", 400)
            .await["param"],
        "start_date"
    );

    // Teams: per team with its alias; a member sees its own team only.
    let teams = report(gateway, MASTER_KEY, &format!("/team/daily/activity?{dates}")).await;
    let entities = &teams["results"][0]["breakdown"]["entities"];
    assert_spend(&entities["team-a"]["metrics"]["spend"], 2.0 * c);
    assert_eq!(entities["team-a"]["metadata"]["team_alias"], "Alpha");
    assert_spend(&entities["team-b"]["metrics"]["spend"], 3.0 * c);
    assert_spend(&teams["metadata"]["total_spend"], 5.0 * c);
    let only_b = report(gateway, MASTER_KEY, &format!("/team/daily/activity?{dates}&team_ids=team-b")).await;
    assert_spend(&only_b["metadata"]["total_spend"], 3.0 * c);
    let not_b =
        report(gateway, MASTER_KEY, &format!("/team/daily/activity?{dates}&exclude_team_ids=team-b")).await;
    assert_spend(&not_b["metadata"]["total_spend"], 2.0 * c);
    let member = report(gateway, &s.alice, &format!("/team/daily/activity?{dates}")).await;
    assert_spend(&member["metadata"]["total_spend"], 2.0 * c);
    refused(gateway, &s.alice, &format!("/team/daily/activity?{dates}&team_ids=team-b"), 403).await;

    // The rest of /user/ and /team/ still belongs to their own handlers.
    assert_eq!(report(gateway, MASTER_KEY, "/user/info?user_id=alice").await["user_id"], "alice");
    assert!(report(gateway, MASTER_KEY, "/team/list").await.is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_add_up_on_postgres() {
    let Some(url) = support::postgres_url("spend_reports").await else { return };
    let (s, _mock) = scenario(&url).await;
    let (gateway, c) = (&s.gateway, cost());
    let dates = range(s.day);

    let by_key = report(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&group_by=api_key")).await;
    let costs: Vec<f64> =
        by_key.as_array().unwrap().iter().map(|row| row["total_cost"].as_f64().unwrap()).collect();
    assert_eq!(costs.len(), 3);
    for (actual, expected) in costs.iter().zip([3.0 * c, 2.0 * c, c]) {
        assert!((actual - expected).abs() < 1e-9, "{costs:?}");
    }
    let by_team = report(gateway, MASTER_KEY, &format!("/global/spend/report?{dates}&group_by=team")).await;
    let alpha =
        by_team[0]["teams"].as_array().unwrap().iter().find(|t| t["team_name"] == "Alpha").unwrap().clone();
    assert_spend(&alpha["total_spend"], 2.0 * c);
    let activity = report(gateway, MASTER_KEY, &format!("/user/daily/activity?{dates}")).await;
    assert_spend(&activity["metadata"]["total_spend"], 6.0 * c);
    assert_eq!(activity["metadata"]["total_api_requests"], 6);
    let days = report(gateway, MASTER_KEY, &format!("/spend/logs?{dates}")).await;
    let today =
        days.as_array().unwrap().iter().find(|d| d["startTime"] == s.day.to_string()).unwrap().clone();
    assert_spend(&today["users"]["alice"], 2.0 * c);
    assert_spend(&report(gateway, MASTER_KEY, "/global/spend").await["spend"], 6.0 * c);
}

/// A request's tags (`metadata.tags`) and its key's reach the spend log and the tag report; a
/// request no deployment answered is a `failure` row with LiteLLM's `error_information`; a
/// model nobody prices costs 0 and is counted on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_failures_and_unpriced_models_are_recorded() {
    let mock = MockUpstream::start().await;
    let unpriced_model = format!(
        "  - model_name: unpriced\n    litellm_params: {{model: openai/no-such-model-anywhere, api_base: {}, api_key: k}}\ngeneral_settings:",
        mock.base_url()
    );
    let yaml = config(&mock, &temp_sqlite_url()).replace("general_settings:", &unpriced_model);
    let gateway = TestGateway::start(&yaml).await;
    let key = admin(&gateway, "/key/generate", json!({"metadata": {"tags": ["team-tag"]}})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let tagged = json!({"model": "gpt-4o", "metadata": {"tags": ["nightly"]}, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(call(&gateway, &key, "/v1/chat/completions", tagged).await.status, 200);
    mock.push(tollgate_mock_upstream::Behavior::Error {
        status: 400,
        body: r#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#.into(),
    });
    let failing = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    assert_error(&call(&gateway, &key, "/v1/chat/completions", failing).await, 400);
    let unpriced = json!({"model": "unpriced", "messages": [{"role": "user", "content": "hi"}]});
    let reply = call(&gateway, &key, "/v1/chat/completions", unpriced).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-litellm-response-cost"), "0");

    wait_for_logs(&gateway, 3).await;
    let logs = report(&gateway, MASTER_KEY, "/spend/logs").await;
    let rows = logs.as_array().unwrap();
    let failure = rows.iter().find(|row| row["status"] == "failure").expect("a failure row");
    assert_eq!(failure["spend"], 0.0);
    assert_eq!(failure["model_group"], "gpt-4o");
    assert_eq!(failure["metadata"]["error_information"]["error_code"], "400");
    let tagged =
        rows.iter().find(|row| row["status"] == "success" && row["model_group"] == "gpt-4o").unwrap();
    assert_eq!(tagged["request_tags"], json!(["team-tag", "nightly"]));
    assert_spend(&tagged["spend"], cost());

    let tags = report(&gateway, MASTER_KEY, "/spend/tags").await;
    let nightly = tags.as_array().unwrap().iter().find(|t| t["individual_request_tag"] == "nightly").unwrap();
    assert_spend(&nightly["total_spend"], cost());
    assert_eq!(nightly["log_count"], 1);

    let metrics =
        String::from_utf8(send(get(&gateway.url("/metrics"), Some(MASTER_KEY))).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("tollgate_unpriced_requests_total{requested_model=\"unpriced\"} 1"),
        "{metrics}"
    );
}

/// `maximum_spend_logs_retention_period` deletes older rows in the background and keeps the
/// day's roll-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_logs_past_their_retention_are_deleted() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let old = chrono::Utc::now().naive_utc() - chrono::Duration::days(10);
    let row = |id: &str| tollgate_storage::SpendLogRow {
        request_id: id.into(),
        call_type: "acompletion",
        api_key: "hash".into(),
        spend: 0.5,
        prompt_tokens: 1,
        completion_tokens: 1,
        start_time: old,
        end_time: old,
        model: "gpt-4o".into(),
        model_group: "gpt-4o".into(),
        model_id: "d".into(),
        custom_llm_provider: "openai".into(),
        status: "success",
        ..Default::default()
    };
    store.insert_spend_logs(vec![row("old-1"), row("old-2")]).await.unwrap();
    let yaml = config(&mock, &url).replace(
        "  proxy_batch_write_at: 1\n",
        "  proxy_batch_write_at: 1\n  maximum_spend_logs_retention_period: 7d\n",
    );
    let gateway = TestGateway::start(&yaml).await;
    chat(&gateway, MASTER_KEY, None).await;
    wait_for_logs(&gateway, 1).await;
    let logs = report(&gateway, MASTER_KEY, "/spend/logs").await;
    assert_ne!(logs[0]["request_id"], "old-1", "only the fresh row is left");
    let global = report(
        &gateway,
        MASTER_KEY,
        &format!(
            "/global/spend/report?start_date={}&end_date={}&group_by=api_key",
            (old - chrono::Duration::days(1)).date(),
            old.date()
        ),
    )
    .await;
    assert!(global.to_string().contains("hash"), "the old day's roll-up stays: {global}");
}
