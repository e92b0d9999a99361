//! `/user/*`: new (with a first key, as LiteLLM makes one), info, update, delete, list,
//! over `LiteLLM_UserTable`.

use http::{Method, Response};
use serde_json::{Value, json};
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_storage::{Cell, KeyRecord, ListQuery, Table, TeamRecord, UserRecord};
use uuid::Uuid;

use super::{Call, Field, Kind, budget_schedule, cells, db, not_found, now, ok, to_value, unknown_route};
use crate::ResponseBody;
use crate::tenancy::keys;

const USER_FIELDS: &[Field] = &[
    ("user_alias", Kind::Text),
    ("user_email", Kind::Text),
    ("user_role", Kind::Text),
    ("team_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("max_budget", Kind::Float),
    ("spend", Kind::Float),
    ("models", Kind::List),
    ("metadata", Kind::Json),
    ("max_parallel_requests", Kind::Int),
    ("tpm_limit", Kind::BigInt),
    ("rpm_limit", Kind::BigInt),
    ("model_max_budget", Kind::Json),
];

const ROLES: &[&str] = &["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"];

pub async fn handle(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    match (&call.method, call.path.trim_start_matches("/user/")) {
        (&Method::POST, "new") => new(call).await,
        (&Method::GET, "info") => info(call).await,
        (&Method::POST, "update") => update(call).await,
        (&Method::POST | &Method::DELETE, "delete") => delete(call).await,
        (&Method::GET, "list") => list(call).await,
        _ => Err(unknown_route(call)),
    }
}

fn check_role(call: &Call<'_>) -> Result<(), GatewayError> {
    match call.body.get("user_role").and_then(Value::as_str) {
        Some(role) if !ROLES.contains(&role) => {
            Err(GatewayError::bad_request(format!("user_role: expected one of {}", ROLES.join(", ")))
                .with_param("user_role"))
        }
        _ => Ok(()),
    }
}

async fn user(call: &Call<'_>, user_id: &str) -> Result<UserRecord, GatewayError> {
    call.tenancy
        .store
        .get::<UserRecord>(Table::Users, user_id)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(format!("User {user_id} not found"), "user_id"))
}

async fn new(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    check_role(call)?;
    let store = &call.tenancy.store;
    let user_id = call.param("user_id").unwrap_or_else(|| Uuid::new_v4().to_string());
    if store.get::<UserRecord>(Table::Users, &user_id).await.map_err(db)?.is_some() {
        return Err(GatewayError::bad_request(format!("User with id={user_id} already exists."))
            .with_param("user_id"));
    }
    let mut cells = cells(&call.body, USER_FIELDS)?;
    cells.extend(budget_schedule(&call.body)?);
    if !cells.iter().any(|(name, _)| *name == "user_role") {
        cells.push(("user_role", Cell::text("internal_user")));
    }
    if !cells.iter().any(|(name, _)| *name == "models") {
        cells.push(("models", Cell::List(Vec::new())));
    }
    let teams = call.list("teams").unwrap_or_default();
    let stamp = now();
    cells.extend([
        ("user_id", Cell::text(&user_id)),
        ("teams", Cell::List(teams)),
        ("created_at", Cell::Time(Some(stamp))),
        ("updated_at", Cell::Time(Some(stamp))),
    ]);
    store.insert(Table::Users, cells).await.map_err(db)?;
    let mut value = to_value(&user(call, &user_id).await?);
    // LiteLLM makes the user a first key unless told not to.
    if call.body.get("auto_create_key").and_then(Value::as_bool).unwrap_or(true) {
        let raw = keys::generate();
        let token = keys::hash(&raw);
        let mut key_cells = vec![
            ("token", Cell::text(&token)),
            ("key_name", Cell::text(keys::display_name(&raw))),
            ("user_id", Cell::text(&user_id)),
            ("models", Cell::List(call.list("models")?)),
            ("key_type", Cell::text("default")),
            ("created_by", Cell::text(call.actor())),
            ("updated_by", Cell::text(call.actor())),
            ("created_at", Cell::Time(Some(stamp))),
            ("updated_at", Cell::Time(Some(stamp))),
        ];
        if let Some(duration) = call.body.get("duration").and_then(Value::as_str) {
            let duration = tollgate_domain::duration::Duration::parse(duration)
                .map_err(|e| GatewayError::bad_request(e).with_param("duration"))?;
            key_cells.push(("expires", Cell::Time(Some(duration.after(stamp)))));
        }
        store.insert(Table::Keys, key_cells).await.map_err(db)?;
        if let Value::Object(map) = &mut value {
            map.insert("key".into(), json!(raw));
            map.insert("token".into(), json!(token));
            map.insert("token_id".into(), json!(token));
        }
    }
    ok(&value)
}

async fn info(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let user_id = match call.param("user_id") {
        Some(id) => id,
        None => call
            .caller_user_id()
            .map(str::to_owned)
            .ok_or_else(|| GatewayError::bad_request("user_id: Field required").with_param("user_id"))?,
    };
    if !call.can_read_all() && call.caller_user_id() != Some(user_id.as_str()) {
        return Err(GatewayError::new(
            ErrorKind::Forbidden,
            format!(
                "key not allowed to access this user's info. user_id={user_id}, key's user_id={}",
                call.caller_user_id().unwrap_or("None")
            ),
        ));
    }
    let record = user(call, &user_id).await?;
    let store = &call.tenancy.store;
    let query = ListQuery { filters: vec![("user_id", user_id.clone())], ..ListQuery::default() };
    let keys: Vec<KeyRecord> = store.list(Table::Keys, &query).await.map_err(db)?;
    let teams: Vec<TeamRecord> = if record.teams.0.is_empty() {
        Vec::new()
    } else {
        let query = ListQuery { any_of: Some(("team_id", record.teams.0.clone())), ..ListQuery::default() };
        store.list(Table::Teams, &query).await.map_err(db)?
    };
    ok(&json!({"user_id": user_id, "user_info": record, "keys": keys, "teams": teams}))
}

async fn update(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    check_role(call)?;
    let user_id = match call.param("user_id") {
        Some(id) => id,
        None => {
            let email = call.param("user_email").ok_or_else(|| {
                GatewayError::bad_request("user_id or user_email is required").with_param("user_id")
            })?;
            let query = ListQuery { filters: vec![("user_email", email.clone())], ..ListQuery::default() };
            let found: Vec<UserRecord> = call.tenancy.store.list(Table::Users, &query).await.map_err(db)?;
            found
                .first()
                .map(|u| u.user_id.clone())
                .ok_or_else(|| not_found(format!("User {email} not found"), "user_email"))?
        }
    };
    user(call, &user_id).await?;
    let mut cells = cells(&call.body, USER_FIELDS)?;
    cells.extend(budget_schedule(&call.body)?);
    cells.push(("updated_at", Cell::Time(Some(now()))));
    call.tenancy.store.update(Table::Users, &user_id, cells).await.map_err(db)?;
    call.tenancy.forget_all();
    ok(&user(call, &user_id).await?)
}

async fn delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    let ids = call.list("user_ids")?;
    if ids.is_empty() {
        return Err(GatewayError::bad_request("No user id passed in").with_param("user_ids"));
    }
    for id in &ids {
        if call.tenancy.store.get::<UserRecord>(Table::Users, id).await.map_err(db)?.is_none() {
            return Err(not_found(format!("User not found, passed user_id={id}"), "user_ids"));
        }
    }
    let store = &call.tenancy.store;
    // A deleted user's keys stop working with it.
    store.delete_where(Table::Keys, "user_id", &ids).await.map_err(db)?;
    store.delete_where(Table::TeamMemberships, "user_id", &ids).await.map_err(db)?;
    store.delete_where(Table::OrganizationMemberships, "user_id", &ids).await.map_err(db)?;
    store.delete(Table::Users, &ids).await.map_err(db)?;
    call.tenancy.forget_all();
    ok(&json!({"deleted_users": ids}))
}

async fn list(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    let page: u64 = call.query.get("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
    let page_size: u64 = call.query.get("page_size").and_then(|s| s.parse().ok()).unwrap_or(25).clamp(1, 100);
    let mut query = ListQuery { order_by: Some("created_at"), ..ListQuery::default() };
    if let Some(role) = call.query.get("role") {
        query.filters.push(("user_role", role.clone()));
    }
    if let Some(email) = call.query.get("user_email") {
        query.filters.push(("user_email", email.clone()));
    }
    if let Some(ids) = call.query.get("user_ids") {
        query.any_of = Some(("user_id", ids.split(',').map(str::to_owned).collect()));
    }
    let store = &call.tenancy.store;
    let total = store.count(Table::Users, &query).await.map_err(db)?;
    query.offset = (page - 1) * page_size;
    query.limit = Some(page_size);
    let users: Vec<UserRecord> = store.list(Table::Users, &query).await.map_err(db)?;
    let mut rows = Vec::with_capacity(users.len());
    for user in &users {
        let keys = ListQuery { filters: vec![("user_id", user.user_id.clone())], ..ListQuery::default() };
        let mut value = to_value(user);
        value["key_count"] = json!(store.count(Table::Keys, &keys).await.map_err(db)?);
        rows.push(value);
    }
    ok(
        &json!({"users": rows, "total": total, "page": page, "page_size": page_size, "total_pages": total.div_ceil(page_size)}),
    )
}
