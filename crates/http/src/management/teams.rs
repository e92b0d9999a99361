//! `/team/*`: new, update, delete, info, list, member_add, member_update, member_delete,
//! block, unblock and model/add, over `LiteLLM_TeamTable` and `LiteLLM_TeamMembership`.

use http::{Method, Response};
use serde_json::{Value, json};
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_storage::{Cell, KeyRecord, ListQuery, Table, TeamRecord, UserRecord};
use uuid::Uuid;

use super::{Call, Field, Kind, budget_schedule, cells, db, not_found, now, ok, to_value, unknown_route};
use crate::ResponseBody;

const TEAM_FIELDS: &[Field] = &[
    ("team_alias", Kind::Text),
    ("organization_id", Kind::Text),
    ("admins", Kind::List),
    ("members", Kind::List),
    ("metadata", Kind::Json),
    ("tpm_limit", Kind::BigInt),
    ("rpm_limit", Kind::BigInt),
    ("max_budget", Kind::Float),
    ("soft_budget", Kind::Float),
    ("models", Kind::List),
    ("max_parallel_requests", Kind::Int),
    ("blocked", Kind::Bool),
    ("model_max_budget", Kind::Json),
];

pub async fn handle(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    match (&call.method, call.path.trim_start_matches("/team/")) {
        (&Method::POST, "new") => new(call).await,
        (&Method::POST, "update") => update(call).await,
        (&Method::POST | &Method::DELETE, "delete") => delete(call).await,
        (&Method::GET, "info") => info(call).await,
        (&Method::GET, "list") => list(call).await,
        (&Method::POST, "member_add") => member_add(call).await,
        (&Method::POST, "member_update") => member_update(call).await,
        (&Method::POST, "member_delete") => member_delete(call).await,
        (&Method::POST, "block") => set_blocked(call, true).await,
        (&Method::POST, "unblock") => set_blocked(call, false).await,
        (&Method::POST, "model/add") => model_add(call).await,
        _ => Err(unknown_route(call)),
    }
}

pub(super) async fn team(call: &Call<'_>, team_id: &str) -> Result<TeamRecord, GatewayError> {
    call.tenancy
        .store
        .get::<TeamRecord>(Table::Teams, team_id)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(format!("Team not found, passed team_id={team_id}"), "team_id"))
}

/// Admins, or an admin of this team.
fn may_manage(call: &Call<'_>, team: &TeamRecord) -> Result<(), GatewayError> {
    if call.is_admin() || call.access.principal().is_some_and(|p| p.is_team_admin(team)) {
        return Ok(());
    }
    Err(GatewayError::new(
        ErrorKind::Forbidden,
        format!(
            "Call not allowed. User not proxy admin OR team admin. route={}, team_id={}",
            call.path, team.team_id
        ),
    ))
}

fn is_member(call: &Call<'_>, team: &TeamRecord) -> bool {
    call.access.principal().is_some_and(|principal| principal.is_team_member(team))
}

fn members(team: &TeamRecord) -> Vec<Value> {
    team.members_with_roles.0.as_array().cloned().unwrap_or_default()
}

async fn new(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    let store = &call.tenancy.store;
    let team_id = call.param("team_id").unwrap_or_else(|| Uuid::new_v4().to_string());
    if store.get::<TeamRecord>(Table::Teams, &team_id).await.map_err(db)?.is_some() {
        return Err(GatewayError::bad_request(format!(
            "Team id = {team_id} already exists. Please use a different team id."
        ))
        .with_param("team_id"));
    }
    let mut cells = cells(&call.body, TEAM_FIELDS)?;
    cells.extend(budget_schedule(&call.body)?);
    let listed = match call.body.get("members_with_roles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => {
            return Err(GatewayError::bad_request("members_with_roles: expected a list")
                .with_param("members_with_roles"));
        }
    };
    cells.push(("members_with_roles", Cell::Json(Value::Array(listed.clone()))));
    if !cells.iter().any(|(name, _)| *name == "models") {
        cells.push(("models", Cell::List(Vec::new())));
    }
    let stamp = now();
    cells.extend([
        ("team_id", Cell::text(&team_id)),
        ("created_at", Cell::Time(Some(stamp))),
        ("updated_at", Cell::Time(Some(stamp))),
    ]);
    store.insert(Table::Teams, cells).await.map_err(db)?;
    for member in &listed {
        add_membership(call, &team_id, member).await?;
    }
    ok(&team(call, &team_id).await?)
}

async fn update(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let team_id = call.required("team_id")?;
    let existing = team(call, &team_id).await?;
    may_manage(call, &existing)?;
    let mut cells = cells(&call.body, TEAM_FIELDS)?;
    cells.extend(budget_schedule(&call.body)?);
    if !call.is_admin() {
        // A team admin edits the team, not its limits.
        cells.retain(|(name, _)| matches!(*name, "team_alias" | "metadata" | "members" | "admins"));
    }
    cells.push(("updated_at", Cell::Time(Some(now()))));
    call.tenancy.store.update(Table::Teams, &team_id, cells).await.map_err(db)?;
    call.tenancy.forget_all();
    ok(&json!({"team_id": team_id, "data": team(call, &team_id).await?}))
}

async fn delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    let mut ids = call.list("team_ids")?;
    ids.dedup();
    if ids.is_empty() {
        return Err(GatewayError::bad_request("team_ids: Field required").with_param("team_ids"));
    }
    for id in &ids {
        team(call, id).await?;
    }
    let store = &call.tenancy.store;
    // The team's keys go with it, as in LiteLLM.
    store.delete_where(Table::Keys, "team_id", &ids).await.map_err(db)?;
    store.delete_where(Table::TeamMemberships, "team_id", &ids).await.map_err(db)?;
    store.delete(Table::Teams, &ids).await.map_err(db)?;
    call.tenancy.forget_all();
    ok(&json!({"deleted_teams": ids}))
}

async fn info(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let team_id = call.required("team_id")?;
    let record = team(call, &team_id).await?;
    if !call.can_read_all() && !is_member(call, &record) {
        return Err(GatewayError::new(ErrorKind::Forbidden, "You are not a member of this team."));
    }
    let query = ListQuery { filters: vec![("team_id", team_id.clone())], ..ListQuery::default() };
    let keys: Vec<KeyRecord> = call.tenancy.store.list(Table::Keys, &query).await.map_err(db)?;
    let keys: Vec<Value> = keys
        .iter()
        .map(|key| {
            let mut value = to_value(key);
            if let Value::Object(map) = &mut value {
                map.shift_remove("token");
            }
            value
        })
        .collect();
    ok(
        &json!({"team_id": team_id, "team_info": record, "keys": keys, "team_memberships": memberships(call, &team_id).await?}),
    )
}

async fn memberships(call: &Call<'_>, team_id: &str) -> Result<Vec<Value>, GatewayError> {
    let query = ListQuery { filters: vec![("team_id", team_id.to_owned())], ..ListQuery::default() };
    let rows: Vec<tollgate_storage::MembershipRecord> =
        call.tenancy.store.list(Table::TeamMemberships, &query).await.map_err(db)?;
    Ok(rows.iter().map(to_value).collect())
}

async fn list(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let mut query = ListQuery { order_by: Some("created_at"), ..ListQuery::default() };
    if let Some(organization_id) = call.query.get("organization_id") {
        query.filters.push(("organization_id", organization_id.clone()));
    }
    let teams: Vec<TeamRecord> = call.tenancy.store.list(Table::Teams, &query).await.map_err(db)?;
    let asked_user = call.query.get("user_id").cloned();
    let visible: Vec<&TeamRecord> = teams
        .iter()
        .filter(|team| call.can_read_all() || is_member(call, team))
        .filter(|team| asked_user.as_deref().is_none_or(|user_id| team.role_of(user_id).is_some()))
        .collect();
    ok(&visible)
}

/// Records one member: the team's `members_with_roles`, a membership row, and the user's
/// `teams` (creating the user if it does not exist yet, as LiteLLM does).
async fn add_membership(call: &Call<'_>, team_id: &str, member: &Value) -> Result<Value, GatewayError> {
    let store = &call.tenancy.store;
    let user_id = member.get("user_id").and_then(Value::as_str).map(str::to_owned);
    let user_email = member.get("user_email").and_then(Value::as_str).map(str::to_owned);
    let user_id = match (user_id, &user_email) {
        (Some(id), _) => id,
        (None, Some(email)) => {
            let query = ListQuery {
                filters: vec![("user_email", email.clone())],
                limit: Some(1),
                ..ListQuery::default()
            };
            let found: Vec<UserRecord> = store.list(Table::Users, &query).await.map_err(db)?;
            found.first().map(|user| user.user_id.clone()).unwrap_or_else(|| Uuid::new_v4().to_string())
        }
        (None, None) => {
            return Err(
                GatewayError::bad_request("member: user_id or user_email is required").with_param("member")
            );
        }
    };
    let role = member.get("role").and_then(Value::as_str).unwrap_or("user");
    if !matches!(role, "admin" | "user") {
        return Err(GatewayError::bad_request("member.role: expected 'admin' or 'user'").with_param("member"));
    }
    match store.get::<UserRecord>(Table::Users, &user_id).await.map_err(db)? {
        Some(user) => {
            if !user.teams.0.iter().any(|t| t == team_id) {
                let mut teams = user.teams.0.clone();
                teams.push(team_id.to_owned());
                store.update(Table::Users, &user_id, vec![("teams", Cell::List(teams))]).await.map_err(db)?;
            }
        }
        None => {
            store
                .insert(
                    Table::Users,
                    vec![
                        ("user_id", Cell::text(&user_id)),
                        ("user_email", Cell::Text(user_email.clone())),
                        ("user_role", Cell::text("internal_user")),
                        ("teams", Cell::List(vec![team_id.to_owned()])),
                        ("models", Cell::List(Vec::new())),
                    ],
                )
                .await
                .map_err(db)?;
        }
    }
    store.delete_team_membership(&user_id, team_id).await.map_err(db)?;
    store
        .insert(
            Table::TeamMemberships,
            vec![("user_id", Cell::text(&user_id)), ("team_id", Cell::text(team_id))],
        )
        .await
        .map_err(db)?;
    Ok(json!({"user_id": user_id, "user_email": user_email, "role": role}))
}

async fn write_members(call: &Call<'_>, team_id: &str, members: Vec<Value>) -> Result<(), GatewayError> {
    let cells = vec![
        ("members_with_roles", Cell::Json(Value::Array(members))),
        ("updated_at", Cell::Time(Some(now()))),
    ];
    call.tenancy.store.update(Table::Teams, team_id, cells).await.map_err(db)?;
    call.tenancy.forget_all();
    Ok(())
}

async fn member_add(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let team_id = call.required("team_id")?;
    let existing = team(call, &team_id).await?;
    may_manage(call, &existing)?;
    let added = match call.body.get("member") {
        Some(Value::Array(list)) => list.clone(),
        Some(member @ Value::Object(_)) => vec![member.clone()],
        _ => return Err(GatewayError::bad_request("member: Field required").with_param("member")),
    };
    let mut current = members(&existing);
    let mut updated_users = Vec::new();
    for member in &added {
        let recorded = add_membership(call, &team_id, member).await?;
        let user_id = recorded["user_id"].clone();
        if current.iter().any(|m| m.get("user_id") == Some(&user_id)) {
            return Err(GatewayError::bad_request(format!(
                "User={user_id} is already a member of team={team_id}"
            ))
            .with_type("team_member_already_in_team"));
        }
        current.push(recorded.clone());
        updated_users.push(recorded);
    }
    write_members(call, &team_id, current).await?;
    let mut value = to_value(&team(call, &team_id).await?);
    if let Value::Object(map) = &mut value {
        map.insert("updated_users".into(), json!(updated_users));
        map.insert("updated_team_memberships".into(), json!(memberships(call, &team_id).await?));
    }
    ok(&value)
}

async fn member_update(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let team_id = call.required("team_id")?;
    let existing = team(call, &team_id).await?;
    may_manage(call, &existing)?;
    let user_id = call.required("user_id")?;
    let role = call.param("role");
    if let Some(role) = &role
        && !matches!(role.as_str(), "admin" | "user")
    {
        return Err(GatewayError::bad_request("role: expected 'admin' or 'user'").with_param("role"));
    }
    let mut current = members(&existing);
    let Some(member) =
        current.iter_mut().find(|m| m.get("user_id").and_then(Value::as_str) == Some(&user_id))
    else {
        return Err(not_found(format!("User={user_id} is not a member of team={team_id}"), "user_id"));
    };
    if let Some(role) = &role {
        member["role"] = json!(role);
    }
    let updated = member.clone();
    write_members(call, &team_id, current).await?;
    ok(&json!({
        "team_id": team_id,
        "user_id": user_id,
        "user_email": updated.get("user_email"),
        "role": updated.get("role"),
        "max_budget_in_team": call.body.get("max_budget_in_team"),
    }))
}

async fn member_delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let team_id = call.required("team_id")?;
    let existing = team(call, &team_id).await?;
    may_manage(call, &existing)?;
    let user_id = call.param("user_id");
    let user_email = call.param("user_email");
    if user_id.is_none() && user_email.is_none() {
        return Err(GatewayError::bad_request("Either user_id or user_email needs to be passed in"));
    }
    let matches = |m: &Value| {
        (user_id.is_some() && m.get("user_id").and_then(Value::as_str) == user_id.as_deref())
            || (user_email.is_some() && m.get("user_email").and_then(Value::as_str) == user_email.as_deref())
    };
    let current = members(&existing);
    let removed: Vec<String> = current
        .iter()
        .filter(|m| matches(m))
        .filter_map(|m| m.get("user_id")?.as_str().map(str::to_owned))
        .collect();
    let kept: Vec<Value> = current.into_iter().filter(|m| !matches(m)).collect();
    for user in &removed {
        call.tenancy.store.delete_team_membership(user, &team_id).await.map_err(db)?;
        if let Some(record) = call.tenancy.store.get::<UserRecord>(Table::Users, user).await.map_err(db)? {
            let teams: Vec<String> = record.teams.0.into_iter().filter(|t| t != &team_id).collect();
            call.tenancy
                .store
                .update(Table::Users, user, vec![("teams", Cell::List(teams))])
                .await
                .map_err(db)?;
        }
    }
    write_members(call, &team_id, kept).await?;
    ok(&team(call, &team_id).await?)
}

async fn set_blocked(call: &Call<'_>, blocked: bool) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    let team_id = call.required("team_id")?;
    team(call, &team_id).await?;
    let cells = vec![("blocked", Cell::Bool(Some(blocked))), ("updated_at", Cell::Time(Some(now())))];
    call.tenancy.store.update(Table::Teams, &team_id, cells).await.map_err(db)?;
    call.tenancy.forget_all();
    ok(&team(call, &team_id).await?)
}

async fn model_add(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let team_id = call.required("team_id")?;
    let existing = team(call, &team_id).await?;
    may_manage(call, &existing)?;
    let mut models = existing.models.0.clone();
    for model in call.list("models")? {
        if !models.contains(&model) {
            models.push(model);
        }
    }
    let cells = vec![("models", Cell::List(models)), ("updated_at", Cell::Time(Some(now())))];
    call.tenancy.store.update(Table::Teams, &team_id, cells).await.map_err(db)?;
    call.tenancy.forget_all();
    ok(&team(call, &team_id).await?)
}
