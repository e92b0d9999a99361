//! Virtual keys end to end: the management API over a real database, and every check an
//! LLM request passes (blocked, expired, models, budgets, limits), as clients see them.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{MASTER_KEY, Reply, TestGateway, assert_error, get, post, send, temp_sqlite_url};
use tollgate_mock_upstream::{Behavior, MockUpstream};

/// Three offline models and a master key, on the database at `database_url`.
fn config(database_url: &str) -> String {
    format!(
        "model_list:
  - model_name: gpt-4o
    litellm_params: {{model: fake/gpt-4o}}
  - model_name: gemini-flash
    litellm_params: {{model: fake/gemini}}
    model_info: {{access_groups: [cheap]}}
  - model_name: claude
    litellm_params: {{model: fake/claude}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: \"{database_url}\"
"
    )
}

async fn start() -> (TestGateway, String) {
    let url = temp_sqlite_url();
    (TestGateway::start(&config(&url)).await, url)
}

async fn call(gateway: &TestGateway, key: &str, path: &str, body: Value) -> Reply {
    send(post(&gateway.url(path), Some(key), body.to_string())).await
}

async fn admin(gateway: &TestGateway, path: &str, body: Value) -> Value {
    let reply = call(gateway, MASTER_KEY, path, body).await;
    assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

async fn admin_get(gateway: &TestGateway, path: &str) -> Value {
    let reply = send(get(&gateway.url(path), Some(MASTER_KEY))).await;
    assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

async fn new_key(gateway: &TestGateway, body: Value) -> String {
    admin(gateway, "/key/generate", body).await["key"].as_str().expect("a raw key").to_owned()
}

async fn chat(gateway: &TestGateway, key: &str, model: &str) -> Reply {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    call(gateway, key, "/v1/chat/completions", body).await
}

/// The seeds' flow, as written: generate with models, budget, duration and metadata; use
/// the key; see it in info and list; delete it; see it refused at once.
#[tokio::test]
async fn the_seed_flow_works_as_written() {
    let (gateway, _) = start().await;
    let generated = admin(
        &gateway,
        "/key/generate",
        json!({"models": ["gpt-4o", "gemini-flash"], "max_budget": 100, "budget_duration": "monthly",
               "metadata": {"team": "risk-team", "environment": "prod"}}),
    )
    .await;
    let key = generated["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-") && key.len() >= 25, "{key}");
    assert_eq!(generated["token"].as_str().unwrap().len(), 64, "the hash, not the key");
    assert_eq!(generated["max_budget"], 100.0);
    assert_eq!(generated["budget_duration"], "monthly");
    assert!(
        generated["budget_reset_at"].as_str().unwrap().ends_with("-01T00:00:00.000Z"),
        "the 1st of a month"
    );
    assert_eq!(generated["metadata"]["team"], "risk-team");

    let reply = chat(&gateway, &key, "gpt-4o").await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));

    // curl -d sends a POST with the key in the body, as the seed does; GET ?key= works too.
    let info = admin(&gateway, "/key/info", json!({"key": key})).await;
    assert_eq!(info["key"], key.as_str());
    assert_eq!(info["info"]["models"], json!(["gpt-4o", "gemini-flash"]));
    assert_eq!(info["info"]["status"], "active");
    assert!(info["info"].get("token").is_none(), "info never shows the hash");
    let by_query = admin_get(&gateway, &format!("/key/info?key={key}")).await;
    assert_eq!(by_query["info"], info["info"]);

    let list = admin_get(&gateway, "/key/list").await;
    assert_eq!(list["keys"], json!([generated["token"]]));
    assert_eq!(list["total_count"], 1);

    let delete = http::Request::delete(gateway.url("/key/delete"))
        .header("authorization", format!("Bearer {MASTER_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(json!({"keys": [key]}).to_string())))
        .unwrap();
    let deleted = send(delete).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json(), json!({"deleted_keys": [key]}));
    let refused = assert_error(&chat(&gateway, &key, "gpt-4o").await, 401);
    assert_eq!(refused["type"], "token_not_found_in_db");
}

#[tokio::test]
async fn key_endpoints_update_block_regenerate_and_reset() {
    let (gateway, _) = start().await;
    let key = new_key(&gateway, json!({"key_alias": "billing", "models": ["gpt-4o"]})).await;

    // Updated by alias: the new allow-list holds at once.
    assert_eq!(chat(&gateway, &key, "claude").await.status, 403);
    let updated = admin(
        &gateway,
        "/key/update",
        json!({"key_alias": "billing", "models": ["gpt-4o", "claude"], "tags": ["t1"]}),
    )
    .await;
    assert_eq!(updated["models"], json!(["gpt-4o", "claude"]));
    assert_eq!(updated["metadata"]["tags"], json!(["t1"]));
    assert_eq!(chat(&gateway, &key, "claude").await.status, 200);

    // Blocked and unblocked.
    let blocked = admin(&gateway, "/key/block", json!({"key": key})).await;
    assert_eq!(blocked["blocked"], true);
    let error = assert_error(&chat(&gateway, &key, "gpt-4o").await, 401);
    assert!(error["message"].as_str().unwrap().contains("Key is blocked"));
    admin(&gateway, "/key/unblock", json!({"key": key})).await;
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);

    // Spent: budget_exceeded with LiteLLM's default status, then reset.
    admin(&gateway, "/key/update", json!({"key": key, "max_budget": 1.0, "spend": 1.5})).await;
    let error = assert_error(&chat(&gateway, &key, "gpt-4o").await, 422);
    assert_eq!(error["type"], "budget_exceeded");
    assert!(
        error["message"].as_str().unwrap().starts_with("Budget has been exceeded! Key=billing"),
        "{error}"
    );
    let reset = admin(&gateway, &format!("/key/{key}/reset_spend"), json!({"reset_to": 0})).await;
    assert_eq!((reset["previous_spend"].as_f64(), reset["spend"].as_f64()), (Some(1.5), Some(0.0)));
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);

    // Regenerated: the old key stops, the new one carries the same settings.
    let regenerated = admin(&gateway, "/key/regenerate", json!({"key": key})).await;
    let new = regenerated["key"].as_str().unwrap();
    assert_ne!(new, key);
    assert_eq!(regenerated["key_alias"], "billing");
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 401);
    assert_eq!(chat(&gateway, new, "gpt-4o").await.status, 200);
    assert_eq!(call(&gateway, new, "/key/health", json!({})).await.json()["key"], "healthy");
    // The path form regenerates too.
    let again = admin(&gateway, &format!("/key/{new}/regenerate"), json!({})).await;
    let newest = again["key"].as_str().unwrap();
    assert_eq!(chat(&gateway, new, "gpt-4o").await.status, 401);
    assert_eq!(chat(&gateway, newest, "gpt-4o").await.status, 200);

    // Custom keys: accepted when well-formed, refused otherwise; duplicates refused.
    let custom = new_key(&gateway, json!({"key": "sk-my-custom-key-0001"})).await;
    assert_eq!(custom, "sk-my-custom-key-0001");
    let bad = call(&gateway, MASTER_KEY, "/key/generate", json!({"key": "my-custom-key-0001"})).await;
    assert!(assert_error(&bad, 400)["message"].as_str().unwrap().contains("must start with 'sk-'"));
    assert_eq!(
        call(&gateway, MASTER_KEY, "/key/generate", json!({"key": "sk-my-custom-key-0001"})).await.status,
        400
    );

    // Bad input is a clear 400, never a 500.
    for body in [
        json!({"models": "gpt-4o"}),
        json!({"max_budget": -1}),
        json!({"duration": "soon"}),
        json!({"budget_duration": "x"}),
    ] {
        let reply = call(&gateway, MASTER_KEY, "/key/generate", body.clone()).await;
        assert_error(&reply, 400);
    }
    let malformed = send(post(&gateway.url("/key/generate"), Some(MASTER_KEY), "{not json")).await;
    assert_error(&malformed, 400);
    assert_error(&call(&gateway, MASTER_KEY, "/key/info", json!({"key": "sk-nope"})).await, 404);

    // Paging and filters.
    for i in 0..3 {
        new_key(&gateway, json!({"user_id": "pager", "key_alias": format!("p{i}")})).await;
    }
    let page = admin_get(&gateway, "/key/list?user_id=pager&size=2&page=2&return_full_object=true").await;
    assert_eq!((page["total_count"].as_u64(), page["total_pages"].as_u64()), (Some(3), Some(2)));
    assert_eq!(page["keys"].as_array().unwrap().len(), 1);
    assert_eq!(page["keys"][0]["user_id"], "pager");
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let (gateway, _) = start().await;
    let key = new_key(&gateway, json!({"duration": "1s"})).await;
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let error = assert_error(&chat(&gateway, &key, "gpt-4o").await, 401);
    assert_eq!(error["type"], "expired_key");
    let info = admin(&gateway, "/key/info", json!({"key": key})).await;
    assert_eq!(info["info"]["status"], "expired");
}

#[tokio::test]
async fn models_follow_key_team_and_access_groups() {
    let (gateway, _) = start().await;
    let cheap = new_key(&gateway, json!({"models": ["cheap"]})).await;
    assert_eq!(chat(&gateway, &cheap, "gemini-flash").await.status, 200, "an access group grants its models");
    let denied = assert_error(&chat(&gateway, &cheap, "gpt-4o").await, 403);
    assert_eq!(denied["type"], "key_model_access_denied");
    assert_eq!(denied["param"], "model");

    admin(&gateway, "/team/new", json!({"team_id": "search", "models": ["claude"]})).await;
    let team_key = new_key(&gateway, json!({"team_id": "search", "models": ["all-team-models"]})).await;
    assert_eq!(chat(&gateway, &team_key, "claude").await.status, 200);
    assert_eq!(
        assert_error(&chat(&gateway, &team_key, "gpt-4o").await, 403)["type"],
        "team_model_access_denied"
    );
    admin(&gateway, "/team/model/add", json!({"team_id": "search", "models": ["gpt-4o"]})).await;
    assert_eq!(chat(&gateway, &team_key, "gpt-4o").await.status, 200, "a team change applies at once");

    admin(&gateway, "/team/block", json!({"team_id": "search"})).await;
    assert!(
        assert_error(&chat(&gateway, &team_key, "claude").await, 401)["message"]
            .as_str()
            .unwrap()
            .contains("Team=search is blocked")
    );
}

#[tokio::test]
async fn budgets_of_team_user_organization_and_customer_hold() {
    let (gateway, _) = start().await;
    admin(&gateway, "/team/new", json!({"team_id": "t", "max_budget": 10})).await;
    let key = new_key(&gateway, json!({"team_id": "t"})).await;
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    admin(&gateway, "/team/update", json!({"team_id": "t", "max_budget": 0.0})).await;
    // A team's budget is spent only when spend exceeds it (LiteLLM's `>` for teams).
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);

    admin(&gateway, "/user/new", json!({"user_id": "u", "max_budget": 0.0, "auto_create_key": false})).await;
    let user_key = new_key(&gateway, json!({"user_id": "u"})).await;
    let error = assert_error(&chat(&gateway, &user_key, "gpt-4o").await, 422);
    assert!(error["message"].as_str().unwrap().starts_with("ExceededBudget: User=u over budget"), "{error}");

    let org = admin(
        &gateway,
        "/organization/new",
        json!({"organization_alias": "acme", "max_budget": 0.0, "models": ["gpt-4o"]}),
    )
    .await;
    let org_id = org["organization_id"].as_str().unwrap();
    assert_eq!(org["litellm_budget_table"]["max_budget"], 0.0);
    let org_key = new_key(&gateway, json!({"organization_id": org_id})).await;
    let error = assert_error(&chat(&gateway, &org_key, "gpt-4o").await, 422);
    assert!(error["message"].as_str().unwrap().contains(&format!("Organization={org_id}")));
    assert_eq!(
        assert_error(&chat(&gateway, &org_key, "claude").await, 403)["type"],
        "org_model_access_denied"
    );

    // Customers are the `user` of a request: blocked, limited to models, or over budget.
    let free = new_key(&gateway, json!({})).await;
    admin(&gateway, "/customer/new", json!({"user_id": "cust-1", "max_budget": 5, "models": ["gpt-4o"]}))
        .await;
    let with_user = |model: &str| json!({"model": model, "user": "cust-1", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(call(&gateway, &free, "/v1/chat/completions", with_user("gpt-4o")).await.status, 200);
    let denied = call(&gateway, &free, "/v1/chat/completions", with_user("claude")).await;
    assert_eq!(assert_error(&denied, 403)["type"], "customer_model_access_denied");
    admin(&gateway, "/customer/update", json!({"user_id": "cust-1", "spend": 6})).await;
    assert_eq!(
        assert_error(&call(&gateway, &free, "/v1/chat/completions", with_user("gpt-4o")).await, 422)["type"],
        "budget_exceeded"
    );
    admin(&gateway, "/customer/block", json!({"user_ids": ["cust-2"]})).await;
    let blocked =
        json!({"model": "gpt-4o", "user": "cust-2", "messages": [{"role": "user", "content": "hi"}]});
    assert_error(&call(&gateway, MASTER_KEY, "/v1/chat/completions", blocked).await, 403);
}

#[tokio::test]
async fn rate_limits_count_requests_and_streams_in_flight() {
    let (gateway, _) = start().await;
    let key = new_key(&gateway, json!({"rpm_limit": 2})).await;
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    let limited = chat(&gateway, &key, "gpt-4o").await;
    let error = assert_error(&limited, 429);
    assert!(error["message"].as_str().unwrap().contains("Limit type: requests"), "{error}");
    // Until the minute window turns, whole seconds rounded up.
    let retry_after: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // One request in flight at a time: a slow upstream holds the slot.
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let yaml = format!(
        "{}  - model_name: slow\n    litellm_params: {{model: openai/m, api_base: {}, api_key: k}}\n",
        config(&url).split("general_settings").next().unwrap(),
        mock.base_url()
    ) + &format!("general_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{url}\"\n");
    let gateway = TestGateway::start(&yaml).await;
    let key = new_key(&gateway, json!({"max_parallel_requests": 1})).await;
    mock.push(Behavior::Delay(Duration::from_millis(600)));
    let first = {
        let (gateway_url, key) = (gateway.url("/v1/chat/completions"), key.clone());
        tokio::spawn(async move {
            let body = json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]});
            send(post(&gateway_url, Some(&key), body.to_string())).await.status
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = assert_error(&chat(&gateway, &key, "slow").await, 429);
    assert!(second["message"].as_str().unwrap().contains("max_parallel_requests"), "{second}");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(chat(&gateway, &key, "slow").await.status, 200, "the slot is given back");
}

#[tokio::test]
async fn teams_users_organizations_customers_and_budgets_are_managed() {
    let (gateway, _) = start().await;
    let team = admin(
        &gateway,
        "/team/new",
        json!({"team_alias": "Search", "models": ["gpt-4o"], "max_budget": 50, "budget_duration": "1d"}),
    )
    .await;
    let team_id = team["team_id"].as_str().unwrap().to_owned();
    assert_eq!(team["team_alias"], "Search");
    assert!(team["budget_reset_at"].is_string());
    assert_error(&call(&gateway, MASTER_KEY, "/team/new", json!({"team_id": team_id})).await, 400);

    let added = admin(
        &gateway,
        "/team/member_add",
        json!({"team_id": team_id, "member": {"user_id": "ana", "role": "admin"}}),
    )
    .await;
    assert_eq!(added["updated_users"][0]["user_id"], "ana");
    assert_eq!(added["members_with_roles"][0]["role"], "admin");
    let dup = call(
        &gateway,
        MASTER_KEY,
        "/team/member_add",
        json!({"team_id": team_id, "member": {"user_id": "ana"}}),
    )
    .await;
    assert_eq!(assert_error(&dup, 400)["type"], "team_member_already_in_team");
    admin(&gateway, "/team/member_add", json!({"team_id": team_id, "member": [{"user_id": "bo"}]})).await;
    let updated =
        admin(&gateway, "/team/member_update", json!({"team_id": team_id, "user_id": "bo", "role": "admin"}))
            .await;
    assert_eq!(updated["role"], "admin");
    let info = admin_get(&gateway, &format!("/team/info?team_id={team_id}")).await;
    assert_eq!(info["team_info"]["members_with_roles"].as_array().unwrap().len(), 2);
    assert_eq!(info["team_memberships"].as_array().unwrap().len(), 2);
    let after = admin(&gateway, "/team/member_delete", json!({"team_id": team_id, "user_id": "bo"})).await;
    assert_eq!(after["members_with_roles"].as_array().unwrap().len(), 1);
    let ana = admin_get(&gateway, "/user/info?user_id=ana").await;
    assert_eq!(ana["user_info"]["teams"], json!([team_id]));
    assert_eq!(ana["teams"][0]["team_id"], team_id.as_str());
    let bo = admin_get(&gateway, "/user/info?user_id=bo").await;
    assert_eq!(bo["user_info"]["teams"], json!([]));
    assert_eq!(admin_get(&gateway, "/team/list").await.as_array().unwrap().len(), 1);
    let unblocked = admin(&gateway, "/team/unblock", json!({"team_id": team_id})).await;
    assert_eq!(unblocked["blocked"], false);

    // Users: a first key comes with a new user, unless asked otherwise.
    let user = admin(
        &gateway,
        "/user/new",
        json!({"user_email": "c@example.com", "user_role": "internal_user", "max_budget": 3}),
    )
    .await;
    let user_id = user["user_id"].as_str().unwrap().to_owned();
    let user_key = user["key"].as_str().unwrap();
    assert_eq!(chat(&gateway, user_key, "gpt-4o").await.status, 200);
    assert_error(&call(&gateway, MASTER_KEY, "/user/new", json!({"user_role": "emperor"})).await, 400);
    let changed =
        admin(&gateway, "/user/update", json!({"user_email": "c@example.com", "user_alias": "Cee"})).await;
    assert_eq!(changed["user_alias"], "Cee");
    let users = admin_get(&gateway, "/user/list?page_size=10").await;
    assert_eq!(users["total"], 3);
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user_id"] == user_id.as_str() && u["key_count"] == 1)
    );
    assert_eq!(
        admin(&gateway, "/user/delete", json!({"user_ids": [user_id]})).await["deleted_users"],
        json!([user_id])
    );
    assert_eq!(chat(&gateway, user_key, "gpt-4o").await.status, 401, "a deleted user's keys go with it");

    // Organizations.
    let org =
        admin(&gateway, "/organization/new", json!({"organization_alias": "acme", "max_budget": 20})).await;
    let org_id = org["organization_id"].as_str().unwrap().to_owned();
    let patch = http::Request::patch(gateway.url("/organization/update"))
        .header("authorization", format!("Bearer {MASTER_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"organization_id": org_id, "organization_alias": "Acme", "max_budget": 30}).to_string(),
        )))
        .unwrap();
    let patched = send(patch).await.json();
    assert_eq!(
        (patched["organization_alias"].as_str(), patched["litellm_budget_table"]["max_budget"].as_f64()),
        (Some("Acme"), Some(30.0))
    );
    admin(
        &gateway,
        "/organization/member_add",
        json!({"organization_id": org_id, "member": {"user_id": "ana", "role": "org_admin"}}),
    )
    .await;
    assert_eq!(
        admin_get(&gateway, &format!("/organization/info?organization_id={org_id}")).await["organization_alias"],
        "Acme"
    );
    assert_eq!(admin_get(&gateway, "/organization/list").await.as_array().unwrap().len(), 1);
    let deleted = admin(&gateway, "/organization/delete", json!({"organization_ids": [org_id]})).await;
    assert_eq!(deleted[0]["organization_id"], org_id.as_str());

    // Customers and budgets.
    let budget =
        admin(&gateway, "/budget/new", json!({"budget_id": "small", "max_budget": 1, "rpm_limit": 5})).await;
    assert_eq!(budget["rpm_limit"], 5);
    assert_eq!(
        admin(&gateway, "/budget/update", json!({"budget_id": "small", "max_budget": 2})).await["max_budget"],
        2.0
    );
    assert_eq!(admin(&gateway, "/budget/info", json!({"budgets": ["small"]})).await[0]["budget_id"], "small");
    let customer =
        admin(&gateway, "/customer/new", json!({"user_id": "c1", "budget_id": "small", "alias": "C"})).await;
    assert_eq!(customer["litellm_budget_table"]["max_budget"], 2.0);
    assert_error(&call(&gateway, MASTER_KEY, "/customer/new", json!({"user_id": "c1"})).await, 400);
    assert_eq!(admin_get(&gateway, "/customer/info?end_user_id=c1").await["alias"], "C");
    assert_eq!(
        admin(&gateway, "/end_user/block", json!({"user_ids": ["c1"]})).await["blocked_users"][0]["blocked"],
        true
    );
    assert_eq!(
        admin(&gateway, "/customer/unblock", json!({"user_ids": ["c1"]})).await["unblocked_users"][0]["blocked"],
        false
    );
    assert_eq!(admin_get(&gateway, "/customer/list").await.as_array().unwrap().len(), 1);
    // A budget in use may go; its users lose it (the schema's ON DELETE SET NULL).
    assert_eq!(admin(&gateway, "/budget/delete", json!({"id": "small"})).await["budget_id"], "small");
    assert_eq!(admin_get(&gateway, "/customer/info?end_user_id=c1").await["budget_id"], Value::Null);
    assert_eq!(
        admin(&gateway, "/customer/delete", json!({"user_ids": ["c1"]})).await["deleted_customers"],
        1
    );
    assert_eq!(
        admin_get(&gateway, "/budget/list").await.as_array().unwrap().len(),
        1,
        "the organization's budget row stays"
    );

    assert_eq!(
        admin(&gateway, "/team/delete", json!({"team_ids": [team_id]})).await["deleted_teams"],
        json!([team_id])
    );
    assert_error(&call(&gateway, MASTER_KEY, "/team/info", json!({"team_id": team_id})).await, 405);
    assert_error(
        &send(get(&gateway.url(&format!("/team/info?team_id={team_id}")), Some(MASTER_KEY))).await,
        404,
    );
}

/// A key can reach only what its owner may: its own keys, its team's when it is the team's
/// admin, and no admin route at all.
#[tokio::test]
async fn keys_cannot_reach_other_teams_or_admin_routes() {
    let (gateway, url) = start().await;
    admin(
        &gateway,
        "/team/new",
        json!({"team_id": "red", "members_with_roles": [{"user_id": "rita", "role": "admin"}]}),
    )
    .await;
    admin(
        &gateway,
        "/team/new",
        json!({"team_id": "blue", "members_with_roles": [{"user_id": "bob", "role": "admin"}]}),
    )
    .await;
    let rita = new_key(&gateway, json!({"user_id": "rita", "team_id": "red"})).await;
    let blue_key = new_key(&gateway, json!({"user_id": "bob", "team_id": "blue"})).await;
    let red_member_key = new_key(&gateway, json!({"team_id": "red"})).await;

    let read = call(&gateway, &rita, "/key/info", json!({"key": blue_key})).await;
    assert_error(&read, 403);
    let change = call(&gateway, &rita, "/key/update", json!({"key": blue_key, "max_budget": 1000})).await;
    assert_error(&change, 403);
    assert_error(&call(&gateway, &rita, "/key/delete", json!({"keys": [blue_key]})).await, 403);
    assert_error(&call(&gateway, &rita, "/key/block", json!({"key": blue_key})).await, 403);
    assert_error(
        &call(&gateway, &rita, "/team/update", json!({"team_id": "blue", "team_alias": "mine"})).await,
        403,
    );
    assert_error(&send(get(&gateway.url("/key/list?user_id=bob"), Some(&rita))).await, 403);
    assert_error(&send(get(&gateway.url("/user/info?user_id=bob"), Some(&rita))).await, 403);
    for (path, body) in [
        ("/team/new", json!({})),
        ("/user/new", json!({})),
        ("/organization/new", json!({"organization_alias": "x"})),
        ("/customer/new", json!({"user_id": "x"})),
        ("/budget/new", json!({})),
        ("/team/delete", json!({"team_ids": ["blue"]})),
    ] {
        let error = assert_error(&call(&gateway, &rita, path, body).await, 403);
        assert!(error["message"].as_str().unwrap().contains("Only proxy admin"), "{path}: {error}");
    }
    // A key cannot make itself a key for someone else.
    assert_error(&call(&gateway, &rita, "/key/generate", json!({"user_id": "bob"})).await, 403);
    assert_error(&call(&gateway, &rita, "/key/generate", json!({"team_id": "blue"})).await, 400);

    // What rita may do: her own keys, her team's keys as its admin, her own user.
    let own = call(&gateway, &rita, "/key/generate", json!({"team_id": "red"})).await;
    assert_eq!(own.status, 200, "{}", String::from_utf8_lossy(&own.body));
    assert_eq!(own.json()["user_id"], "rita");
    assert_eq!(call(&gateway, &rita, "/key/block", json!({"key": red_member_key})).await.status, 200);
    assert_eq!(
        call(&gateway, &rita, "/team/update", json!({"team_id": "red", "team_alias": "Red"})).await.status,
        200
    );
    assert_eq!(send(get(&gateway.url("/key/list"), Some(&rita))).await.json()["total_count"], 2);

    // The raw keys are nowhere in the database file.
    let path = url.trim_start_matches("sqlite://").split('?').next().unwrap().to_owned();
    let database = std::fs::read(&path).unwrap();
    for raw in [&rita, &blue_key, &red_member_key] {
        assert!(!database.windows(raw.len()).any(|window| window == raw.as_bytes()), "a raw key is stored");
    }
}

/// Two gateways on one database, as two replicas: a key made on one works on the other, and
/// a delete or block on one is honoured by the other within about a second.
#[tokio::test]
async fn changes_reach_another_replica_within_a_second() {
    let url = support::postgres_or_sqlite("replicas").await;
    let one = TestGateway::start(&config(&url)).await;
    let two = TestGateway::start(&config(&url)).await;
    let key = new_key(&one, json!({})).await;
    let other = new_key(&one, json!({})).await;
    assert_eq!(chat(&two, &key, "gpt-4o").await.status, 200);
    assert_eq!(chat(&two, &other, "gpt-4o").await.status, 200);

    admin(&one, "/key/delete", json!({"keys": [key]})).await;
    admin(&one, "/key/block", json!({"key": other})).await;
    let started = Instant::now();
    let mut seen = (false, false);
    while started.elapsed() < Duration::from_secs(3) && seen != (true, true) {
        seen.0 |= chat(&two, &key, "gpt-4o").await.status == 401;
        seen.1 |= chat(&two, &other, "gpt-4o").await.status == 401;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    assert_eq!(seen, (true, true), "both changes reached the other replica");
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
}

#[tokio::test]
async fn spent_budgets_reset_on_their_schedule() {
    let (gateway, _) = start().await;
    let key = new_key(&gateway, json!({"max_budget": 1, "budget_duration": "2s"})).await;
    admin(&gateway, "/key/update", json!({"key": key, "spend": 5})).await;
    assert_eq!(assert_error(&chat(&gateway, &key, "gpt-4o").await, 422)["type"], "budget_exceeded");
    // The period ends at the next 2-second boundary; the reset and a reload follow within a
    // second or so.
    let started = Instant::now();
    while chat(&gateway, &key, "gpt-4o").await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(5), "the budget was not reset");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = admin(&gateway, "/key/info", json!({"key": key})).await;
    assert_eq!(info["info"]["spend"], 0.0);
}

#[tokio::test]
async fn keys_are_held_to_their_routes_and_see_only_their_models() {
    let (gateway, _) = start().await;
    let llm_only = new_key(&gateway, json!({"key_type": "llm_api", "models": ["gpt-4o", "cheap"]})).await;
    assert_eq!(chat(&gateway, &llm_only, "gpt-4o").await.status, 200);
    let refused = send(get(&gateway.url("/key/info"), Some(&llm_only))).await;
    assert!(
        assert_error(&refused, 403)["message"].as_str().unwrap().contains("not allowed to call this route")
    );
    let models = send(get(&gateway.url("/v1/models"), Some(&llm_only))).await.json();
    let ids: Vec<&str> =
        models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o", "gemini-flash"], "the key's models and its access group's");

    let read_only = new_key(&gateway, json!({"key_type": "read_only"})).await;
    assert_eq!(send(get(&gateway.url("/key/info"), Some(&read_only))).await.status, 200);
    assert_error(&chat(&gateway, &read_only, "gpt-4o").await, 403);
    let pattern = new_key(&gateway, json!({"allowed_routes": ["/chat/*"]})).await;
    assert_eq!(chat(&gateway, &pattern, "claude").await.status, 200);
    assert_error(
        &call(&gateway, &pattern, "/v1/embeddings", json!({"model": "gpt-4o", "input": "x"})).await,
        403,
    );
}

/// A priced model (`openai/gpt-4o`, from the table) on the mock upstream.
fn priced_config(mock: &MockUpstream, database_url: &str, write_every: u32) -> String {
    format!(
        "model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: \"{database_url}\"
  proxy_batch_write_at: {write_every}
",
        mock.base_url()
    )
}

/// What one mock answer costs at gpt-4o's listed prices.
fn one_request_cost() -> f64 {
    tollgate_mock_upstream::PROMPT_TOKENS as f64 * 2.5e-6
        + tollgate_mock_upstream::COMPLETION_TOKENS as f64 * 1e-5
}

#[tokio::test]
async fn spend_accumulates_from_usage_and_budgets_hold() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let gateway = TestGateway::start(&priced_config(&mock, &url, 1)).await;
    let cost = one_request_cost();
    let key = new_key(&gateway, json!({"max_budget": cost * 1.5})).await;

    let first = chat(&gateway, &key, "gpt-4o").await;
    assert_eq!(first.status, 200);
    let charged: f64 = first.header("x-litellm-response-cost").parse().unwrap();
    assert!((charged - cost).abs() < 1e-12, "{charged} != {cost}");
    let spent: f64 = first.header("x-litellm-key-spend").parse().unwrap();
    assert!((spent - cost).abs() < 1e-12);

    // A stream is charged once, from the usage the gateway asked for; the client, which did
    // not ask, does not see the usage chunk.
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let streamed = call(&gateway, &key, "/v1/chat/completions", body).await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.events().iter().all(|e| !e.contains("\"usage\":{")), "{:?}", streamed.events());
    let sent: Value = serde_json::from_slice(&mock.requests()[1].body).unwrap();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    // Two requests' worth is past the budget: the third is refused, before any upstream call.
    let refused = assert_error(&chat(&gateway, &key, "gpt-4o").await, 422);
    assert_eq!(refused["type"], "budget_exceeded");
    assert_eq!(mock.requests().len(), 2);

    // Within a write interval the database has it too.
    let started = Instant::now();
    loop {
        let info = admin(&gateway, "/key/info", json!({"key": key})).await;
        if (info["info"]["spend"].as_f64().unwrap() - 2.0 * cost).abs() < 1e-12 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "spend never reached the database: {info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tokens_per_minute_are_limited() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&priced_config(&mock, &temp_sqlite_url(), 10)).await;
    let tokens = tollgate_mock_upstream::PROMPT_TOKENS + tollgate_mock_upstream::COMPLETION_TOKENS;
    let key = new_key(&gateway, json!({"tpm_limit": tokens})).await;
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    let limited = chat(&gateway, &key, "gpt-4o").await;
    let error = assert_error(&limited, 429);
    assert!(error["message"].as_str().unwrap().contains("Limit type: tokens"), "{error}");
}

#[tokio::test]
async fn shutdown_writes_pending_spend() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    // A write interval far longer than the test: only shutdown can write the spend.
    let mut gateway = TestGateway::start(&priced_config(&mock, &url, 3600)).await;
    let key = new_key(&gateway, json!({})).await;
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    gateway.begin_shutdown().await.unwrap().unwrap();

    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    let token = {
        use sha2::Digest;
        use std::fmt::Write;
        sha2::Sha256::digest(key.as_bytes()).iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
    };
    let record: tollgate_storage::KeyRecord =
        store.get(tollgate_storage::Table::Keys, &token).await.unwrap().unwrap();
    assert!((record.spend - one_request_cost()).abs() < 1e-12, "{}", record.spend);
}

#[tokio::test]
async fn key_aliases_and_per_model_limits_and_budgets() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&priced_config(&mock, &temp_sqlite_url(), 10)).await;

    // An alias sends a name of the key's own to a model group; the answer keeps the name.
    let aliased = new_key(&gateway, json!({"aliases": {"my-model": "gpt-4o"}, "models": ["gpt-4o"]})).await;
    let reply = chat(&gateway, &aliased, "my-model").await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["model"], "my-model");
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["model"], "gpt-4o", "the upstream gets the group's model");

    // model_rpm_limit, kept in metadata as LiteLLM keeps it.
    let limited = new_key(&gateway, json!({"model_rpm_limit": {"gpt-4o": 1}})).await;
    assert_eq!(chat(&gateway, &limited, "gpt-4o").await.status, 200);
    let error = assert_error(&chat(&gateway, &limited, "gpt-4o").await, 429);
    assert!(error["message"].as_str().unwrap().contains("model_per_key"), "{error}");

    // model_max_budget: one request's cost spends it for the period.
    let budgeted = new_key(
        &gateway,
        json!({"model_max_budget": {"gpt-4o": {"budget_limit": one_request_cost() / 2.0, "time_period": "1d"}}}),
    )
    .await;
    assert_eq!(chat(&gateway, &budgeted, "gpt-4o").await.status, 200);
    let error = assert_error(&chat(&gateway, &budgeted, "gpt-4o").await, 422);
    assert!(error["message"].as_str().unwrap().contains("exceeded budget for model=gpt-4o"), "{error}");
}

/// With Redis, replicas announce changes: another replica drops a deleted or blocked key
/// well before its once-a-second reload would have.
#[tokio::test]
async fn redis_announces_changes_to_the_other_replicas() {
    let Some(redis) = support::redis_url("redis_announces_changes_to_the_other_replicas") else { return };
    let url = temp_sqlite_url();
    let yaml = format!("{}router_settings:\n  redis_url: \"{redis}\"\n", config(&url));
    let one = TestGateway::start(&yaml).await;
    let two = TestGateway::start(&yaml).await;
    // Let both subscribers connect before anything is announced.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let key = new_key(&one, json!({})).await;
        assert_eq!(chat(&two, &key, "gpt-4o").await.status, 200, "the other replica knows the key");
        admin(&one, "/key/delete", json!({"keys": [key]})).await;
        let started = Instant::now();
        while chat(&two, &key, "gpt-4o").await.status != 401 {
            assert!(
                started.elapsed() < Duration::from_millis(300),
                "the announcement did not arrive in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    sha2::Sha256::digest(text.as_bytes()).iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Every request becomes a LiteLLM_SpendLogs row, written by the background writer.
#[tokio::test]
async fn requests_become_spend_log_rows() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let gateway = TestGateway::start(&priced_config(&mock, &url, 1)).await;
    admin(&gateway, "/team/new", json!({"team_id": "logs"})).await;
    let key = new_key(&gateway, json!({"team_id": "logs", "key_alias": "logger"})).await;
    let plain = chat(&gateway, &key, "gpt-4o").await;
    let body = json!({"model": "gpt-4o", "stream": true, "user": "cust-9", "messages": [{"role": "user", "content": "hi"}]});
    let streamed = call(&gateway, &key, "/v1/chat/completions", body).await;
    let by_master = chat(&gateway, MASTER_KEY, "gpt-4o").await;

    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    let row = |reply| support::spend_log_row(&store, reply);
    let first = row(&plain).await;
    assert_eq!(first.call_type, "acompletion");
    assert_eq!(first.api_key, sha256_hex(&key));
    assert!((first.spend - one_request_cost()).abs() < 1e-12);
    assert_eq!(first.prompt_tokens as u64, tollgate_mock_upstream::PROMPT_TOKENS);
    assert_eq!(first.completion_tokens as u64, tollgate_mock_upstream::COMPLETION_TOKENS);
    assert_eq!(first.total_tokens, first.prompt_tokens + first.completion_tokens);
    assert_eq!((first.model.as_str(), first.model_group.as_deref()), ("gpt-4o", Some("gpt-4o")));
    assert_eq!(first.custom_llm_provider.as_deref(), Some("openai"));
    assert_eq!(first.team_id.as_deref(), Some("logs"));
    assert_eq!(first.metadata.0["user_api_key_alias"], "logger");
    assert_eq!(first.status.as_deref(), Some("success"));
    assert!(first.end_time >= first.start_time);

    let stream_row = row(&streamed).await;
    assert_eq!(stream_row.end_user.as_deref(), Some("cust-9"));
    assert!((stream_row.spend - one_request_cost()).abs() < 1e-12, "a stream is charged once");
    assert_eq!(row(&by_master).await.api_key, sha256_hex(MASTER_KEY));
}

/// Spend log rows survive the database refusing writes: 1,000 requests while the table is
/// gone, then every row once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_log_rows_survive_a_database_outage() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let gateway = TestGateway::start(&priced_config(&mock, &url, 1)).await;
    let key = new_key(&gateway, json!({})).await;
    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    store.execute_script(r#"ALTER TABLE "LiteLLM_SpendLogs" RENAME TO "spend_logs_away""#).await.unwrap();

    let started = Instant::now();
    for _ in 0..1_000 {
        assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200, "requests never wait on the database");
    }
    let took = started.elapsed();
    // Let the writer fail at least once.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    store.execute_script(r#"ALTER TABLE "spend_logs_away" RENAME TO "LiteLLM_SpendLogs""#).await.unwrap();

    let all = tollgate_storage::ListQuery::default();
    let waiting = Instant::now();
    loop {
        let rows = store.count(tollgate_storage::Table::SpendLogs, &all).await.unwrap();
        if rows == 1_000 {
            break;
        }
        assert!(waiting.elapsed() < Duration::from_secs(10), "{rows} of 1000 rows written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("1,000 requests in {took:?} with the spend log table gone");
}

/// An upstream that reports no usage (a self-hosted server ignoring `include_usage`) is
/// still charged and logged: the tokens are counted with the model's tokenizer, and the row
/// says they were estimated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_usage_are_charged_from_an_estimate() {
    use tollgate_domain::tokens::{Encoding, count_chat};
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let gateway = TestGateway::start(&priced_config(&mock, &url, 1)).await;
    let key = new_key(&gateway, json!({})).await;
    let messages = json!([{"role": "user", "content": "hi"}]);
    let gpt_4o = Encoding::O200kBase;
    let prompt_tokens = count_chat(gpt_4o, &messages, None);
    let cost = |completion: u64| prompt_tokens as f64 * 2.5e-6 + completion as f64 * 1e-5;

    mock.push(Behavior::NoUsage);
    let plain = chat(&gateway, &key, "gpt-4o").await;
    assert_eq!(plain.status, 200);
    assert!(plain.json().get("usage").is_none(), "the upstream really reported none");
    let reply_tokens = gpt_4o.count(plain.json()["choices"][0]["message"]["content"].as_str().unwrap());
    let charged: f64 = plain.header("x-litellm-response-cost").parse().unwrap();
    assert!((charged - cost(reply_tokens)).abs() < 1e-12, "{charged}");

    mock.push(Behavior::NoUsage);
    let body = json!({"model": "gpt-4o", "stream": true, "messages": messages});
    let streamed = call(&gateway, &key, "/v1/chat/completions", body).await;
    assert_eq!(streamed.status, 200);
    let text = String::from_utf8(streamed.body.to_vec()).unwrap();
    assert!(!text.contains("\"usage\":{"), "no usage chunk came: {text}");
    let delta_tokens: u64 = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|payload| serde_json::from_str::<Value>(payload).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(|t| gpt_4o.count(t)))
        .sum();
    assert!(delta_tokens > 0);

    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    for (reply, completion) in [(&plain, reply_tokens), (&streamed, delta_tokens)] {
        let row = support::spend_log_row(&store, reply).await;
        assert_eq!((row.prompt_tokens as u64, row.completion_tokens as u64), (prompt_tokens, completion));
        assert!((row.spend - cost(completion)).abs() < 1e-12, "{}", row.spend);
        assert_eq!(row.metadata.0["usage_estimated"], true);
    }
    let counted = support::spend_log_row(&store, &chat(&gateway, &key, "gpt-4o").await).await;
    assert!(counted.metadata.0.get("usage_estimated").is_none(), "reported usage is not an estimate");
}
