//! Models in the database (`store_model_in_db`): `/model/new`, `/model/update` and
//! `/model/delete` through one gateway reach another gateway on the same database within
//! 2 s; credentials are encrypted at rest as LiteLLM encrypts them.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tollgate::{Gateway, GatewayConfig};
use tollgate_mock_upstream::MockUpstream;
use tollgate_storage::{Cell, ModelRecord, Store, Table};

const SALT_KEY: &str = "tollgate-test-salt";
/// `UPSTREAM_KEY` encrypted by PyNaCl under SHA-256(`SALT_KEY`) with the nonce 0, 1, 2, …,
/// as LiteLLM writes it.
const LITELLM_ENCRYPTED_UPSTREAM_KEY: &str =
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXWXdcMT7bkwpUpJ63xMj2qkZdLp_FE8-fzsGv-kLfivIihOFVBg==";
const DB_SECRET: &str = "sk-stored-in-db-7f3a9c";
const ROTATED_SECRET: &str = "sk-rotated-in-db-2b8e1d";

fn salted_env() -> HashMap<String, String> {
    HashMap::from([("LITELLM_SALT_KEY".to_owned(), SALT_KEY.to_owned())])
}

fn config(mock: &MockUpstream, database_url: &str) -> String {
    format!(
        "{}  database_url: \"{database_url}\"\n  store_model_in_db: true\n",
        mock_config(&mock.base_url(), "")
    )
}

async fn start(yaml: &str) -> TestGateway {
    TestGateway::start_env(yaml, &salted_env(), |gateway| gateway).await
}

async fn admin(gateway: &TestGateway, path: &str, body: Value) -> Reply {
    send(post(&gateway.url(path), Some(MASTER_KEY), body.to_string())).await
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// Calls `model` on `gateway` until `done` accepts the answer; returns how long it took.
async fn until(gateway: &TestGateway, model: &str, done: impl Fn(&Reply) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let reply = chat(gateway, hello(model)).await;
        if done(&reply) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not seen within 5 s: {:?}", reply.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn last_upstream_key(mock: &MockUpstream) -> String {
    let requests = mock.requests();
    let last = requests.last().expect("the upstream was called");
    last.headers["authorization"].to_str().unwrap().to_owned()
}

/// The whole life of a database model across two replicas of one database; returns how
/// long each change took to reach the second replica.
async fn replicas_share_models(database_url: &str, store: &Store) -> [Duration; 3] {
    let mock = MockUpstream::start().await;
    let yaml = config(&mock, database_url);
    let (first, second) = (start(&yaml).await, start(&yaml).await);

    let added = admin(
        &first,
        "/model/new",
        json!({
            "model_name": "db-model",
            "litellm_params": {"model": "openai/mock-model", "api_base": mock.base_url(), "api_key": DB_SECRET, "rpm": 100},
            "model_info": {"mode": "chat"}
        }),
    )
    .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    let row = added.json();
    let id = row["model_id"].as_str().expect("a model id").to_owned();
    assert_eq!(row["model_name"], "db-model");
    assert!(
        !added.body.windows(DB_SECRET.len()).any(|w| w == DB_SECRET.as_bytes()),
        "no secret in the answer"
    );
    assert_ne!(row["litellm_params"]["api_key"], DB_SECRET, "stored encrypted");
    assert_eq!(row["litellm_params"]["rpm"], 100, "non-strings stay as they are");

    // Served at once where it was added, and within 2 s by the other replica.
    assert_eq!(chat(&first, hello("db-model")).await.status, 200);
    let added_after = until(&second, "db-model", |reply| reply.status == 200).await;
    assert_eq!(last_upstream_key(&mock), format!("Bearer {DB_SECRET}"), "decrypted for the upstream");

    // The database holds the ciphertext only.
    let stored: ModelRecord = store.get(Table::Models, &id).await.unwrap().expect("the row");
    let stored_text = stored.litellm_params.0.to_string();
    assert!(!stored_text.contains(DB_SECRET), "{stored_text}");
    assert!(!stored_text.contains("openai/mock-model"), "every string value is encrypted: {stored_text}");

    // /model/info shows it as a database model beside the config's, without its key.
    let info = send(get(&second.url("/model/info"), Some(MASTER_KEY))).await;
    assert!(!info.body.windows(DB_SECRET.len()).any(|w| w == DB_SECRET.as_bytes()));
    let data = info.json()["data"].as_array().unwrap().clone();
    let db_entry = data.iter().find(|m| m["model_info"]["id"] == id.as_str()).expect("listed");
    assert_eq!(db_entry["model_info"]["db_model"], true);
    assert_eq!(db_entry["model_info"]["mode"], "chat");
    let config_entry = data.iter().find(|m| m["model_name"] == "general-purpose").unwrap();
    assert_eq!(config_entry["model_info"]["db_model"], false);
    let models = send(get(&second.url("/v1/models"), Some(MASTER_KEY))).await.json();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "db-model"));

    // A rotated key reaches the other replica within 2 s.
    let updated = admin(
        &first,
        "/model/update",
        json!({"model_info": {"id": id}, "litellm_params": {"api_key": ROTATED_SECRET}}),
    )
    .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    let updated_after = until(&second, "db-model", |reply| {
        reply.status == 200 && last_upstream_key(&mock) == format!("Bearer {ROTATED_SECRET}")
    })
    .await;
    let stored: ModelRecord = store.get(Table::Models, &id).await.unwrap().expect("the row");
    assert!(!stored.litellm_params.0.to_string().contains(ROTATED_SECRET));
    assert_eq!(stored.model_info.0["mode"], "chat", "an update merges");

    let deleted = admin(&first, "/model/delete", json!({"id": id})).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(deleted.json()["message"], format!("Model: {id} deleted successfully"));
    let deleted_after = until(&second, "db-model", |reply| reply.status != 200).await;
    assert_error(&chat(&second, hello("db-model")).await, 400);
    assert_eq!(chat(&second, hello("general-purpose")).await.status, 200, "config models stay");
    assert_error(&admin(&first, "/model/delete", json!({"id": id})).await, 404);

    for (change, took) in [("add", added_after), ("update", updated_after), ("delete", deleted_after)] {
        eprintln!("database model {change} seen by the other replica after {} ms", took.as_millis());
        assert!(took < Duration::from_secs(2), "{change} took {took:?}");
    }
    [added_after, updated_after, deleted_after]
}

#[tokio::test]
async fn a_model_added_on_one_replica_is_served_by_another_within_two_seconds_on_sqlite() {
    let url = temp_sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    replicas_share_models(&url, &store).await;
    // Nowhere in the SQLite file either (its pages, free ones included).
    let path = url.trim_start_matches("sqlite://").split('?').next().unwrap().to_owned();
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    for secret in [DB_SECRET, ROTATED_SECRET] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in the file");
    }
}

#[tokio::test]
async fn a_model_added_on_one_replica_is_served_by_another_within_two_seconds_on_postgres() {
    let Some(url) = postgres_url("models_db_replicas").await else { return };
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    replicas_share_models(&url, &store).await;
}

#[tokio::test]
async fn with_redis_a_change_is_announced_at_once() {
    let Some(redis) = redis_url("with_redis_a_change_is_announced_at_once") else { return };
    let mock = MockUpstream::start().await;
    let yaml = format!("{}router_settings:\n  redis_url: \"{redis}\"\n", config(&mock, &temp_sqlite_url()));
    let (first, second) = (start(&yaml).await, start(&yaml).await);
    // The subscriptions are made in the background after start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let added = admin(
        &first,
        "/model/new",
        json!({"model_name": "announced", "litellm_params": {"model": "openai/mock-model", "api_base": mock.base_url(), "api_key": DB_SECRET}}),
    )
    .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    let took = until(&second, "announced", |reply| reply.status == 200).await;
    eprintln!("database model seen by the other replica after {} ms with redis", took.as_millis());
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn a_row_litellm_wrote_is_decrypted_and_served() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    // As LiteLLM leaves a row: its api_key encrypted with PyNaCl; a value that does not
    // decrypt (here the model, written by hand) is read as it is, as LiteLLM reads it.
    let at = chrono::Utc::now().naive_utc();
    store
        .insert(
            Table::Models,
            vec![
                ("model_id", Cell::text("litellm-row-1")),
                ("model_name", Cell::text("from-litellm")),
                (
                    "litellm_params",
                    Cell::Json(json!({
                        "model": "openai/mock-model",
                        "api_base": mock.base_url(),
                        "api_key": LITELLM_ENCRYPTED_UPSTREAM_KEY,
                    })),
                ),
                ("model_info", Cell::Json(json!({"id": "litellm-row-1"}))),
                ("created_at", Cell::Time(Some(at))),
                ("created_by", Cell::text("litellm")),
                ("updated_at", Cell::Time(Some(at))),
                ("updated_by", Cell::text("litellm")),
            ],
        )
        .await
        .unwrap();
    let gateway = start(&config(&mock, &url)).await;
    let reply = chat(&gateway, hello("from-litellm")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(last_upstream_key(&mock), format!("Bearer {UPSTREAM_KEY}"));
}

#[tokio::test]
async fn bad_models_and_non_admins_are_refused() {
    let mock = MockUpstream::start().await;
    let gateway = start(&config(&mock, &temp_sqlite_url())).await;
    let cases = [
        (json!({"litellm_params": {"model": "openai/x"}}), "model_name"),
        (json!({"model_name": "m"}), "litellm_params"),
        (json!({"model_name": "m", "litellm_params": {"api_key": "k"}}), "litellm_params.model"),
        (json!({"model_name": "m", "litellm_params": {"model": "llama3"}}), "litellm_params.model"),
        (json!({"model_name": "m", "litellm_params": {"model": "replicate/llama"}}), "litellm_params.model"),
        (json!({"model_name": "m", "litellm_params": "openai/x"}), "litellm_params"),
    ];
    for (body, param) in cases {
        let error = assert_error(&admin(&gateway, "/model/new", body.clone()).await, 400);
        assert_eq!(error["param"], param, "{body}: {error}");
    }
    // An id the config already uses is refused.
    let config_id =
        send(get(&gateway.url("/model/info"), Some(MASTER_KEY))).await.json()["data"][0]["model_info"]["id"]
            .clone();
    let taken = json!({"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": mock.base_url()}, "model_info": {"id": config_id}});
    assert_error(&admin(&gateway, "/model/new", taken).await, 400);
    // A config model is not the database's to change.
    let update = json!({"model_info": {"id": config_id}, "litellm_params": {"api_key": "x"}});
    let error = assert_error(&admin(&gateway, "/model/update", update).await, 404);
    assert!(error["message"].as_str().unwrap().contains("config file"), "{error}");

    let key = admin(&gateway, "/key/generate", json!({})).await.json()["key"].as_str().unwrap().to_owned();
    let body =
        json!({"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": mock.base_url()}});
    let reply = send(post(&gateway.url("/model/new"), Some(&key), body.to_string())).await;
    assert_error(&reply, 403);
    assert_error(&send(get(&gateway.url("/model/new"), Some(MASTER_KEY))).await, 405);
}

#[tokio::test]
async fn patch_updates_a_model_by_id() {
    let mock = MockUpstream::start().await;
    let gateway = start(&config(&mock, &temp_sqlite_url())).await;
    let body = json!({"model_name": "patched", "litellm_params": {"model": "openai/mock-model", "api_base": mock.base_url(), "api_key": DB_SECRET}, "model_info": {"id": "patch-me"}});
    assert_eq!(admin(&gateway, "/model/new", body).await.status, 200);
    let request = http::Request::patch(gateway.url("/model/patch-me/update"))
        .header("authorization", format!("Bearer {MASTER_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(json!({"model_name": "renamed"}).to_string())))
        .unwrap();
    let reply = send(request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["model_name"], "renamed");
    assert_eq!(chat(&gateway, hello("renamed")).await.status, 200, "served at once here");
    assert_eq!(last_upstream_key(&mock), format!("Bearer {DB_SECRET}"), "the key was kept");
    assert_error(&chat(&gateway, hello("patched")).await, 400);
}

#[tokio::test]
async fn store_model_in_db_needs_a_salt_key_and_models_off_are_explained() {
    let mock = MockUpstream::start().await;
    let yaml = config(&mock, &temp_sqlite_url());
    let config = GatewayConfig::from_yaml(&yaml, &HashMap::<String, String>::new()).unwrap();
    let error = Gateway::from_config(config).await.err().expect("refused without LITELLM_SALT_KEY");
    assert!(error.to_string().contains("LITELLM_SALT_KEY"), "{error}");

    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    let body = json!({"model_name": "m", "litellm_params": {"model": "openai/x"}});
    let error = assert_error(&admin(&gateway, "/model/new", body).await, 400);
    assert!(error["message"].as_str().unwrap().contains("store_model_in_db"), "{error}");
}

#[tokio::test]
async fn an_unreadable_table_keeps_the_last_known_models() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let gateway = start(&config(&mock, &url)).await;
    let body = json!({"model_name": "kept", "litellm_params": {"model": "openai/mock-model", "api_base": mock.base_url(), "api_key": DB_SECRET}});
    assert_eq!(admin(&gateway, "/model/new", body).await.status, 200);

    // The table goes away (as reads fail in an outage): the poller's reads fail for a while.
    store.execute_script(r#"ALTER TABLE "LiteLLM_ProxyModelTable" RENAME TO "away""#).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(chat(&gateway, hello("kept")).await.status, 200, "the last known list stays");

    // Back, with a change made meanwhile: seen again.
    store.execute_script(r#"DELETE FROM "away""#).await.unwrap();
    store.execute_script(r#"ALTER TABLE "away" RENAME TO "LiteLLM_ProxyModelTable""#).await.unwrap();
    until(&gateway, "kept", |reply| reply.status != 200).await;
}
