//! `/key/*`: generate, update, delete, info, list, regenerate, block, unblock, health and
//! reset_spend, over `LiteLLM_VerificationToken`.

use http::{Method, Response};
use serde_json::{Value, json};
use tollgate_domain::duration::Duration;
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_storage::{Cell, KeyRecord, ListQuery, Table, TeamRecord};
use uuid::Uuid;

use super::{Call, Field, Kind, budget_schedule, cells, db, not_found, now, ok, to_value, unknown_route};
use crate::ResponseBody;
use crate::tenancy::keys;

/// Request fields stored as the column of the same name.
const KEY_FIELDS: &[Field] = &[
    ("key_alias", Kind::Text),
    ("models", Kind::List),
    ("spend", Kind::Float),
    ("max_budget", Kind::Float),
    ("user_id", Kind::Text),
    ("team_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("budget_id", Kind::Text),
    ("max_parallel_requests", Kind::Int),
    ("metadata", Kind::Json),
    ("tpm_limit", Kind::BigInt),
    ("rpm_limit", Kind::BigInt),
    ("allowed_cache_controls", Kind::List),
    ("allowed_routes", Kind::List),
    ("config", Kind::Json),
    ("permissions", Kind::Json),
    ("model_max_budget", Kind::Json),
    ("aliases", Kind::Json),
    ("blocked", Kind::Bool),
    ("key_type", Kind::Text),
];

pub async fn handle(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let action = call.path.trim_start_matches("/key/");
    match (&call.method, action) {
        (&Method::POST, "generate") => generate(call).await,
        (&Method::POST, "update") => update(call).await,
        (&Method::POST | &Method::DELETE, "delete") => delete(call).await,
        (&Method::GET | &Method::POST, "info") => info(call).await,
        (&Method::GET, "list") => list(call).await,
        (&Method::POST, "regenerate") => regenerate(call, None).await,
        (&Method::POST, "block") => set_blocked(call, true).await,
        (&Method::POST, "unblock") => set_blocked(call, false).await,
        (&Method::POST, "health") => ok(&json!({"key": "healthy", "logging_callbacks": null})),
        (&Method::POST, action) => match action.split_once('/') {
            Some((key, "regenerate")) => regenerate(call, Some(key)).await,
            Some((key, "reset_spend")) => reset_spend(call, key).await,
            _ => Err(unknown_route(call)),
        },
        _ => Err(unknown_route(call)),
    }
}

/// The stored fields a request sets, with LiteLLM's derived ones: `duration` becomes
/// `expires`, `budget_duration` a reset time, and `tags`, `model_rpm_limit` and
/// `model_tpm_limit` travel in `metadata`, as LiteLLM keeps them.
fn key_cells(
    call: &Call<'_>,
    existing_metadata: Option<&Value>,
) -> Result<Vec<(&'static str, Cell)>, GatewayError> {
    let body = &call.body;
    let mut cells = cells(body, KEY_FIELDS)?;
    cells.extend(budget_schedule(body)?);
    if let Some(text) = body.get("duration").and_then(Value::as_str) {
        let duration =
            Duration::parse(text).map_err(|e| GatewayError::bad_request(e).with_param("duration"))?;
        cells.push(("expires", Cell::Time(Some(duration.after(now())))));
    }
    let extras = ["tags", "model_rpm_limit", "model_tpm_limit", "guardrails"];
    if extras.iter().any(|name| body.get(*name).is_some_and(|v| !v.is_null())) {
        let mut metadata = match cells.iter().find(|(name, _)| *name == "metadata") {
            Some((_, Cell::Json(Value::Object(map)))) => map.clone(),
            _ => existing_metadata.and_then(Value::as_object).cloned().unwrap_or_default(),
        };
        for name in extras {
            if let Some(value) = body.get(name).filter(|v| !v.is_null()) {
                metadata.insert(name.to_owned(), value.clone());
            }
        }
        cells.retain(|(name, _)| *name != "metadata");
        cells.push(("metadata", Cell::Json(Value::Object(metadata))));
    }
    Ok(cells)
}

async fn generate(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let store = &call.tenancy.store;
    let raw = match call.body.get("key").and_then(Value::as_str) {
        Some(custom) => {
            keys::check_custom(custom)
                .map_err(|message| GatewayError::bad_request(message).with_param("key"))?;
            custom.to_owned()
        }
        None => keys::generate(),
    };
    let mut cells = key_cells(call, None)?;
    if !call.is_admin() {
        let own = call.caller_user_id().map(str::to_owned);
        match (cell_text(&cells, "user_id"), own.as_deref()) {
            (Some(asked), own) if Some(asked.as_str()) != own => {
                return Err(GatewayError::new(
                    ErrorKind::Forbidden,
                    format!(
                        "User can only create keys for themselves. Got user_id={asked}, Your ID={}",
                        own.unwrap_or("None")
                    ),
                ));
            }
            (None, Some(own)) => cells.push(("user_id", Cell::text(own))),
            _ => {}
        }
        if let Some(team_id) = cell_text(&cells, "team_id") {
            let team = team_or_404(call, &team_id).await?;
            if !is_member(call, &team) {
                return Err(GatewayError::bad_request(format!(
                    "User={} not assigned to team={team_id}",
                    own.as_deref().unwrap_or("None")
                )));
            }
        }
    } else if let Some(team_id) = cell_text(&cells, "team_id") {
        team_or_404(call, &team_id).await?;
    }
    if let Some(soft_budget) = call.body.get("soft_budget").and_then(Value::as_f64) {
        let budget_id = Uuid::new_v4().to_string();
        let actor = call.actor();
        store
            .insert(
                Table::Budgets,
                vec![
                    ("budget_id", Cell::text(&budget_id)),
                    ("soft_budget", Cell::Float(Some(soft_budget))),
                    ("created_by", Cell::text(&actor)),
                    ("updated_by", Cell::text(&actor)),
                ],
            )
            .await
            .map_err(db)?;
        cells.retain(|(name, _)| *name != "budget_id");
        cells.push(("budget_id", Cell::text(budget_id)));
    }
    let token = keys::hash(&raw);
    if store.get::<KeyRecord>(Table::Keys, &token).await.map_err(db)?.is_some() {
        return Err(GatewayError::bad_request("Key already exists. Use a different `key`.").with_param("key"));
    }
    let actor = call.actor();
    let stamp = now();
    cells.extend([
        ("token", Cell::text(&token)),
        ("key_name", Cell::text(keys::display_name(&raw))),
        ("created_by", Cell::text(&actor)),
        ("updated_by", Cell::text(&actor)),
        ("created_at", Cell::Time(Some(stamp))),
        ("updated_at", Cell::Time(Some(stamp))),
    ]);
    match cell_text(&cells, "key_type") {
        None => cells.push(("key_type", Cell::text("default"))),
        Some(key_type) => {
            let explicit_routes = cells.iter().any(|(name, _)| *name == "allowed_routes");
            if let Some(group) = crate::tenancy::routes_for_key_type(&key_type).filter(|_| !explicit_routes) {
                cells.push(("allowed_routes", Cell::List(vec![group.to_owned()])));
            }
        }
    }
    store.insert(Table::Keys, cells).await.map_err(db)?;
    call.tenancy.forget(&token);
    let record = fetch(call, &token).await?;
    ok(&generated(record, &raw))
}

/// LiteLLM's `GenerateKeyResponse`: the row, the raw key (shown this once) and its hash.
fn generated(record: KeyRecord, raw: &str) -> Value {
    let mut value = to_value(&record);
    if let Value::Object(map) = &mut value {
        map.insert("key".into(), json!(raw));
        map.insert("token_id".into(), json!(record.token));
        map.insert("tags".into(), record.metadata.0.get("tags").cloned().unwrap_or(Value::Null));
    }
    value
}

fn cell_text(cells: &[(&'static str, Cell)], name: &str) -> Option<String> {
    cells.iter().find(|(column, _)| *column == name).and_then(|(_, cell)| match cell {
        Cell::Text(text) => text.clone(),
        _ => None,
    })
}

async fn fetch(call: &Call<'_>, token: &str) -> Result<KeyRecord, GatewayError> {
    call.tenancy
        .store
        .get::<KeyRecord>(Table::Keys, token)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("Key not found.", "key"))
}

async fn team_or_404(call: &Call<'_>, team_id: &str) -> Result<TeamRecord, GatewayError> {
    call.tenancy.store.get::<TeamRecord>(Table::Teams, team_id).await.map_err(db)?.ok_or_else(|| {
        GatewayError::bad_request(format!("Team not found for team_id={team_id}.")).with_param("team_id")
    })
}

/// Whether the caller's user belongs to `team`.
fn is_member(call: &Call<'_>, team: &TeamRecord) -> bool {
    call.access.principal().is_some_and(|principal| principal.is_team_member(team))
}

/// The team a key belongs to, if it names one that exists.
async fn key_team(call: &Call<'_>, key: &KeyRecord) -> Result<Option<TeamRecord>, GatewayError> {
    match key.team_id.as_deref() {
        Some(team_id) => call.tenancy.store.get::<TeamRecord>(Table::Teams, team_id).await.map_err(db),
        None => Ok(None),
    }
}

/// How the caller stands to a key.
#[derive(PartialEq, Eq)]
enum Standing {
    Stranger,
    /// A member of the key's team: may read it.
    TeamMember,
    /// An admin, the key itself, its owner, or an admin of its team: may change it.
    Manager,
}

async fn standing(call: &Call<'_>, key: &KeyRecord) -> Result<Standing, GatewayError> {
    if call.is_admin() {
        return Ok(Standing::Manager);
    }
    let Some(principal) = call.access.principal() else { return Ok(Standing::Stranger) };
    if principal.key.token == key.token || (key.user_id.is_some() && key.user_id == principal.key.user_id) {
        return Ok(Standing::Manager);
    }
    Ok(match key_team(call, key).await? {
        Some(team) if principal.is_team_admin(&team) => Standing::Manager,
        Some(team) if principal.is_team_member(&team) => Standing::TeamMember,
        _ => Standing::Stranger,
    })
}

async fn may_manage(call: &Call<'_>, key: &KeyRecord) -> Result<bool, GatewayError> {
    Ok(standing(call, key).await? == Standing::Manager)
}

async fn may_read(call: &Call<'_>, key: &KeyRecord) -> Result<bool, GatewayError> {
    Ok(call.can_read_all() || standing(call, key).await? != Standing::Stranger)
}

fn not_yours(call: &Call<'_>) -> GatewayError {
    let role = call.access.principal().map_or("unknown", |p| p.role());
    GatewayError::new(
        ErrorKind::Forbidden,
        format!("You are not allowed to access this key. Your role={role}"),
    )
}

/// The key a request names, by `key` (raw or hash) or, failing that, `key_alias`.
async fn named_key(call: &Call<'_>) -> Result<(String, KeyRecord), GatewayError> {
    if let Some(key) = call.param("key") {
        let record = fetch(call, &keys::token_of(&key)).await?;
        return Ok((key, record));
    }
    let Some(alias) = call.param("key_alias") else {
        return Err(GatewayError::bad_request("key: Field required (or key_alias)").with_param("key"));
    };
    let query =
        ListQuery { filters: vec![("key_alias", alias.clone())], limit: Some(2), ..ListQuery::default() };
    let mut found: Vec<KeyRecord> = call.tenancy.store.list(Table::Keys, &query).await.map_err(db)?;
    match found.len() {
        0 => Err(not_found(format!("Key not found. No key with key_alias='{alias}'."), "key_alias")),
        1 => Ok((alias, found.remove(0))),
        _ => Err(GatewayError::bad_request(format!(
            "Multiple keys share key_alias='{alias}', so it cannot be used as an identifier."
        ))),
    }
}

async fn update(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let (named, record) = named_key(call).await?;
    if !may_manage(call, &record).await? {
        return Err(not_yours(call));
    }
    let mut cells = key_cells(call, Some(&record.metadata.0))?;
    if !call.is_admin() {
        // Owners may not hand their key to someone else or lift its limits past a team's.
        cells.retain(|(name, _)| !matches!(*name, "user_id" | "spend"));
    }
    if let Some(team_id) = cell_text(&cells, "team_id") {
        team_or_404(call, &team_id).await?;
    }
    cells.push(("updated_by", Cell::text(call.actor())));
    cells.push(("updated_at", Cell::Time(Some(now()))));
    call.tenancy.store.update(Table::Keys, &record.token, cells).await.map_err(db)?;
    call.tenancy.forget(&record.token);
    let mut value = to_value(&fetch(call, &record.token).await?);
    if let Value::Object(map) = &mut value {
        map.insert("key".into(), json!(named));
    }
    ok(&value)
}

async fn delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let store = &call.tenancy.store;
    let named = call.list("keys")?;
    let aliases = call.list("key_aliases")?;
    if named.is_empty() && aliases.is_empty() {
        return Err(GatewayError::bad_request("keys: Field required (or key_aliases)").with_param("keys"));
    }
    let mut records: Vec<KeyRecord> = Vec::new();
    for key in &named {
        if let Some(record) = store.get(Table::Keys, &keys::token_of(key)).await.map_err(db)? {
            records.push(record);
        }
    }
    if !aliases.is_empty() {
        let query = ListQuery { any_of: Some(("key_alias", aliases.clone())), ..ListQuery::default() };
        records.extend(store.list::<KeyRecord>(Table::Keys, &query).await.map_err(db)?);
    }
    if records.is_empty() {
        return Err(not_found("No keys found", "keys"));
    }
    for record in &records {
        if !may_manage(call, record).await? {
            return Err(GatewayError::new(ErrorKind::Forbidden, "You are not authorized to delete this key"));
        }
    }
    let tokens: Vec<String> = records.iter().map(|record| record.token.clone()).collect();
    store.delete(Table::Keys, &tokens).await.map_err(db)?;
    for token in &tokens {
        call.tenancy.forget(token);
    }
    let deleted = if named.is_empty() { aliases } else { named };
    ok(&json!({"deleted_keys": deleted}))
}

async fn info(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let (named, record) = match call.param("key") {
        Some(key) => {
            let record = call
                .tenancy
                .store
                .get::<KeyRecord>(Table::Keys, &keys::token_of(&key))
                .await
                .map_err(db)?
                .ok_or_else(|| not_found("Key not found in database", "key"))?;
            (key, record)
        }
        None => match call.access.principal() {
            Some(principal) => (principal.key.token.clone(), principal.key.clone()),
            None => return Err(GatewayError::bad_request("key: Field required").with_param("key")),
        },
    };
    if !may_read(call, &record).await? {
        return Err(not_yours(call));
    }
    let status = match (record.blocked, record.expires) {
        (Some(true), _) => "revoked",
        (_, Some(expires)) if expires < now() => "expired",
        _ => "active",
    };
    let mut value = to_value(&record);
    if let Value::Object(map) = &mut value {
        map.shift_remove("token");
        map.insert("status".into(), json!(status));
    }
    ok(&json!({"key": named, "info": value}))
}

async fn list(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let page: u64 = call.query.get("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
    let size: u64 = call.query.get("size").and_then(|s| s.parse().ok()).unwrap_or(10).clamp(1, 100);
    let mut query = ListQuery { order_by: Some("created_at"), ..ListQuery::default() };
    for (param, column) in [
        ("user_id", "user_id"),
        ("team_id", "team_id"),
        ("organization_id", "organization_id"),
        ("key_alias", "key_alias"),
        ("key_hash", "token"),
    ] {
        if let Some(value) = call.query.get(param).filter(|v| !v.is_empty()) {
            query.filters.push((column, value.clone()));
        }
    }
    if !call.can_read_all() {
        let Some(own) = call.caller_user_id() else {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                "You are not authorized to access this endpoint. No 'user_id' is associated with your API key.",
            ));
        };
        match query.filters.iter().find(|(column, _)| *column == "user_id") {
            Some((_, asked)) if asked != own => {
                return Err(GatewayError::new(
                    ErrorKind::Forbidden,
                    "You are not authorized to check another user's keys",
                ));
            }
            Some(_) => {}
            None => query.filters.push(("user_id", own.to_owned())),
        }
    }
    let store = &call.tenancy.store;
    let total = store.count(Table::Keys, &query).await.map_err(db)?;
    query.offset = (page - 1) * size;
    query.limit = Some(size);
    let records: Vec<KeyRecord> = store.list(Table::Keys, &query).await.map_err(db)?;
    let full = call.query.get("return_full_object").is_some_and(|v| v == "true");
    let keys: Vec<Value> =
        records.iter().map(|record| if full { to_value(record) } else { json!(record.token) }).collect();
    ok(&json!({
        "keys": keys,
        "total_count": total,
        "current_page": page,
        "total_pages": total.div_ceil(size),
    }))
}

async fn regenerate(call: &Call<'_>, path_key: Option<&str>) -> Result<Response<ResponseBody>, GatewayError> {
    let named = match path_key {
        Some(key) => key.to_owned(),
        None => call.required("key")?,
    };
    let old = fetch(call, &keys::token_of(&named))
        .await
        .map_err(|_| not_found(format!("Key {named} not found."), "key"))?;
    if !may_manage(call, &old).await? {
        return Err(GatewayError::new(ErrorKind::Forbidden, "You are not authorized to regenerate this key"));
    }
    let raw = match call.body.get("new_key").and_then(Value::as_str) {
        Some(custom) => {
            keys::check_custom(custom).map_err(|m| GatewayError::bad_request(m).with_param("new_key"))?;
            custom.to_owned()
        }
        None => keys::generate(),
    };
    let token = keys::hash(&raw);
    let mut cells = key_cells(call, Some(&old.metadata.0))?;
    cells.extend([
        ("token", Cell::text(&token)),
        ("key_name", Cell::text(keys::display_name(&raw))),
        ("updated_by", Cell::text(call.actor())),
        ("updated_at", Cell::Time(Some(now()))),
    ]);
    call.tenancy.store.update(Table::Keys, &old.token, cells).await.map_err(db)?;
    call.tenancy.forget(&old.token);
    call.tenancy.forget(&token);
    ok(&generated(fetch(call, &token).await?, &raw))
}

async fn set_blocked(call: &Call<'_>, blocked: bool) -> Result<Response<ResponseBody>, GatewayError> {
    let named = call.required("key")?;
    let record = fetch(call, &keys::token_of(&named)).await?;
    let team_admin = match call.access.principal() {
        Some(principal) => key_team(call, &record).await?.is_some_and(|team| principal.is_team_admin(&team)),
        None => false,
    };
    if !call.is_admin() && !team_admin {
        let route = if blocked { "/key/block" } else { "/key/unblock" };
        return Err(GatewayError::new(
            ErrorKind::Forbidden,
            format!("Only proxy admins, team admins, or org admins can call {route}."),
        ));
    }
    let cells = vec![
        ("blocked", Cell::Bool(Some(blocked))),
        ("updated_by", Cell::text(call.actor())),
        ("updated_at", Cell::Time(Some(now()))),
    ];
    call.tenancy.store.update(Table::Keys, &record.token, cells).await.map_err(db)?;
    call.tenancy.forget(&record.token);
    ok(&fetch(call, &record.token).await?)
}

async fn reset_spend(call: &Call<'_>, key: &str) -> Result<Response<ResponseBody>, GatewayError> {
    let record = fetch(call, &keys::token_of(key)).await?;
    if !call.is_admin() {
        return Err(GatewayError::new(
            ErrorKind::Forbidden,
            "You must be a proxy admin or team admin to reset key spend",
        ));
    }
    let reset_to = match call.body.get("reset_to") {
        Some(Value::Number(number)) => number.as_f64().unwrap_or(-1.0),
        _ => return Err(GatewayError::bad_request("reset_to: expected a number").with_param("reset_to")),
    };
    if reset_to < 0.0 {
        return Err(GatewayError::bad_request("reset_to must be >= 0").with_param("reset_to"));
    }
    if reset_to > record.spend {
        return Err(GatewayError::bad_request(format!(
            "reset_to ({reset_to}) must be <= current spend ({})",
            record.spend
        )));
    }
    call.tenancy
        .store
        .update(Table::Keys, &record.token, vec![("spend", Cell::Float(Some(reset_to)))])
        .await
        .map_err(db)?;
    call.tenancy.forget(&record.token);
    ok(&json!({
        "key_hash": record.token,
        "spend": reset_to,
        "previous_spend": record.spend,
        "max_budget": record.max_budget,
        "budget_reset_at": to_value(&record)["budget_reset_at"],
    }))
}
