//! `/organization/*`, `/customer/*` (also `/end_user/*`) and `/budget/*`: the records whose
//! limits live in a `LiteLLM_BudgetTable` row, as LiteLLM links them.

use http::{Method, Response};
use serde_json::{Map, Value, json};
use tollgate_domain::GatewayError;
use tollgate_storage::{BudgetRecord, Cell, EndUserRecord, ListQuery, OrganizationRecord, Table};
use uuid::Uuid;

use super::{Call, Field, Kind, budget_schedule, cells, db, not_found, now, ok, to_value, unknown_route};
use crate::ResponseBody;

const BUDGET_FIELDS: &[Field] = &[
    ("max_budget", Kind::Float),
    ("soft_budget", Kind::Float),
    ("max_parallel_requests", Kind::Int),
    ("tpm_limit", Kind::BigInt),
    ("rpm_limit", Kind::BigInt),
    ("model_max_budget", Kind::Json),
];

const ORGANIZATION_FIELDS: &[Field] =
    &[("organization_alias", Kind::Text), ("models", Kind::List), ("metadata", Kind::Json)];

const CUSTOMER_FIELDS: &[Field] = &[
    ("alias", Kind::Text),
    ("allowed_model_region", Kind::Text),
    ("default_model", Kind::Text),
    ("models", Kind::List),
    ("blocked", Kind::Bool),
    ("spend", Kind::Float),
];

pub async fn handle(call: &Call<'_>, segment: &str) -> Result<Response<ResponseBody>, GatewayError> {
    call.require_admin()?;
    let action = call.path.splitn(3, '/').nth(2).unwrap_or_default();
    let method = &call.method;
    match (segment, method, action) {
        ("organization", &Method::POST, "new") => organization_new(call).await,
        ("organization", &Method::GET, "info") => organization_info(call).await,
        ("organization", &Method::PATCH | &Method::POST, "update") => organization_update(call).await,
        ("organization", &Method::DELETE | &Method::POST, "delete") => organization_delete(call).await,
        ("organization", &Method::GET, "list") => organization_list(call).await,
        ("organization", &Method::POST, "member_add") => organization_member_add(call).await,
        ("customer" | "end_user", &Method::POST, "new") => customer_new(call).await,
        ("customer" | "end_user", &Method::GET, "info") => customer_info(call).await,
        ("customer" | "end_user", &Method::POST, "update") => customer_update(call).await,
        ("customer" | "end_user", &Method::POST | &Method::DELETE, "delete") => customer_delete(call).await,
        ("customer" | "end_user", &Method::POST, "block") => customer_block(call, true).await,
        ("customer" | "end_user", &Method::POST, "unblock") => customer_block(call, false).await,
        ("customer" | "end_user", &Method::GET, "list") => customer_list(call).await,
        ("budget", &Method::POST, "new") => budget_new(call).await,
        ("budget", &Method::POST, "update") => budget_update(call).await,
        ("budget", &Method::POST, "info") => budget_info(call).await,
        ("budget", &Method::POST | &Method::DELETE, "delete") => budget_delete(call).await,
        ("budget", &Method::GET, "list") => budget_list(call).await,
        _ => Err(unknown_route(call)),
    }
}

/// Inserts a budget row from the budget fields of `body`; returns its id.
async fn insert_budget(
    call: &Call<'_>,
    body: &Map<String, Value>,
    id: Option<String>,
) -> Result<String, GatewayError> {
    let budget_id = id.unwrap_or_else(|| Uuid::new_v4().to_string());
    let mut cells = cells(body, BUDGET_FIELDS)?;
    cells.extend(budget_schedule(body)?);
    let actor = call.actor();
    cells.extend([
        ("budget_id", Cell::text(&budget_id)),
        ("created_by", Cell::text(&actor)),
        ("updated_by", Cell::text(&actor)),
    ]);
    call.tenancy.store.insert(Table::Budgets, cells).await.map_err(db)?;
    Ok(budget_id)
}

async fn update_budget(call: &Call<'_>, budget_id: &str) -> Result<(), GatewayError> {
    let mut cells = cells(&call.body, BUDGET_FIELDS)?;
    cells.extend(budget_schedule(&call.body)?);
    if cells.is_empty() {
        return Ok(());
    }
    cells.push(("updated_by", Cell::text(call.actor())));
    cells.push(("updated_at", Cell::Time(Some(now()))));
    call.tenancy.store.update(Table::Budgets, budget_id, cells).await.map_err(db)?;
    Ok(())
}

async fn budget(call: &Call<'_>, budget_id: Option<&str>) -> Result<Option<BudgetRecord>, GatewayError> {
    match budget_id {
        Some(id) => call.tenancy.store.get(Table::Budgets, id).await.map_err(db),
        None => Ok(None),
    }
}

/// A record with its budget row under `litellm_budget_table`, as LiteLLM answers.
async fn with_budget(
    call: &Call<'_>,
    record: &impl serde::Serialize,
    budget_id: Option<&str>,
) -> Result<Value, GatewayError> {
    let mut value = to_value(record);
    value["litellm_budget_table"] = to_value(&budget(call, budget_id).await?);
    Ok(value)
}

async fn organization(call: &Call<'_>, id: &str) -> Result<OrganizationRecord, GatewayError> {
    call.tenancy
        .store
        .get::<OrganizationRecord>(Table::Organizations, id)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(format!("Organization={id} not found"), "organization_id"))
}

async fn organization_new(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    call.required("organization_alias")?;
    let id = call.param("organization_id").unwrap_or_else(|| Uuid::new_v4().to_string());
    if call.tenancy.store.get::<OrganizationRecord>(Table::Organizations, &id).await.map_err(db)?.is_some() {
        return Err(GatewayError::bad_request(format!("Organization id = {id} already exists."))
            .with_param("organization_id"));
    }
    let budget_id = match call.param("budget_id") {
        Some(id) => budget(call, Some(&id))
            .await?
            .map(|b| b.budget_id)
            .ok_or_else(|| not_found(format!("Budget {id} not found"), "budget_id"))?,
        None => insert_budget(call, &call.body, None).await?,
    };
    let mut cells = cells(&call.body, ORGANIZATION_FIELDS)?;
    if !cells.iter().any(|(name, _)| *name == "models") {
        cells.push(("models", Cell::List(Vec::new())));
    }
    let actor = call.actor();
    cells.extend([
        ("organization_id", Cell::text(&id)),
        ("budget_id", Cell::text(&budget_id)),
        ("created_by", Cell::text(&actor)),
        ("updated_by", Cell::text(&actor)),
    ]);
    call.tenancy.store.insert(Table::Organizations, cells).await.map_err(db)?;
    let record = organization(call, &id).await?;
    ok(&with_budget(call, &record, Some(&record.budget_id)).await?)
}

async fn organization_info(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let record = organization(call, &call.required("organization_id")?).await?;
    let mut value = with_budget(call, &record, Some(&record.budget_id)).await?;
    let query = ListQuery {
        filters: vec![("organization_id", record.organization_id.clone())],
        ..ListQuery::default()
    };
    let teams: Vec<tollgate_storage::TeamRecord> =
        call.tenancy.store.list(Table::Teams, &query).await.map_err(db)?;
    value["teams"] = to_value(&teams);
    ok(&value)
}

async fn organization_update(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call.required("organization_id")?;
    let record = organization(call, &id).await?;
    let mut cells = cells(&call.body, ORGANIZATION_FIELDS)?;
    cells.push(("updated_by", Cell::text(call.actor())));
    cells.push(("updated_at", Cell::Time(Some(now()))));
    call.tenancy.store.update(Table::Organizations, &id, cells).await.map_err(db)?;
    update_budget(call, &record.budget_id).await?;
    call.tenancy.forget_all();
    let record = organization(call, &id).await?;
    ok(&with_budget(call, &record, Some(&record.budget_id)).await?)
}

async fn organization_delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let ids = call.list("organization_ids")?;
    if ids.is_empty() {
        return Err(
            GatewayError::bad_request("organization_ids: Field required").with_param("organization_ids")
        );
    }
    let mut deleted = Vec::new();
    for id in &ids {
        deleted.push(organization(call, id).await?);
    }
    let store = &call.tenancy.store;
    store.delete_where(Table::OrganizationMemberships, "organization_id", &ids).await.map_err(db)?;
    store.delete(Table::Organizations, &ids).await.map_err(db)?;
    call.tenancy.forget_all();
    ok(&deleted)
}

async fn organization_list(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let mut query = ListQuery::default();
    if let Some(id) = call.query.get("org_id") {
        query.filters.push(("organization_id", id.clone()));
    }
    if let Some(alias) = call.query.get("org_alias") {
        query.filters.push(("organization_alias", alias.clone()));
    }
    let records: Vec<OrganizationRecord> =
        call.tenancy.store.list(Table::Organizations, &query).await.map_err(db)?;
    let mut rows = Vec::with_capacity(records.len());
    for record in &records {
        rows.push(with_budget(call, record, Some(&record.budget_id)).await?);
    }
    ok(&rows)
}

async fn organization_member_add(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call.required("organization_id")?;
    organization(call, &id).await?;
    let members = match call.body.get("member") {
        Some(Value::Array(list)) => list.clone(),
        Some(member @ Value::Object(_)) => vec![member.clone()],
        _ => return Err(GatewayError::bad_request("member: Field required").with_param("member")),
    };
    let store = &call.tenancy.store;
    let mut updated = Vec::new();
    for member in members {
        let user_id = member.get("user_id").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            GatewayError::bad_request("member.user_id: Field required").with_param("member")
        })?;
        let role = member.get("role").and_then(Value::as_str).unwrap_or("internal_user").to_owned();
        if store.get::<tollgate_storage::UserRecord>(Table::Users, &user_id).await.map_err(db)?.is_none() {
            store
                .insert(
                    Table::Users,
                    vec![
                        ("user_id", Cell::text(&user_id)),
                        ("user_role", Cell::text(&role)),
                        ("models", Cell::List(Vec::new())),
                    ],
                )
                .await
                .map_err(db)?;
        }
        store.update(Table::Users, &user_id, vec![("organization_id", Cell::text(&id))]).await.map_err(db)?;
        store
            .delete_where(Table::OrganizationMemberships, "user_id", std::slice::from_ref(&user_id))
            .await
            .map_err(db)?;
        store
            .insert(
                Table::OrganizationMemberships,
                vec![
                    ("user_id", Cell::text(&user_id)),
                    ("organization_id", Cell::text(&id)),
                    ("user_role", Cell::text(&role)),
                ],
            )
            .await
            .map_err(db)?;
        updated.push(json!({"user_id": user_id, "organization_id": id, "user_role": role}));
    }
    call.tenancy.forget_all();
    ok(&json!({"organization_id": id, "updated_users": updated, "updated_organization_memberships": updated}))
}

async fn customer(call: &Call<'_>, id: &str) -> Result<EndUserRecord, GatewayError> {
    call.tenancy
        .store
        .get::<EndUserRecord>(Table::EndUsers, id)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(format!("End User Id={id} does not exist in db"), "end_user_id"))
}

async fn customer_new(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call.required("user_id")?;
    if call.tenancy.store.get::<EndUserRecord>(Table::EndUsers, &id).await.map_err(db)?.is_some() {
        return Err(GatewayError::bad_request(format!(
            "Customer already exists, passed user_id={id}. Please pass a new user_id."
        )));
    }
    let has_budget_fields =
        BUDGET_FIELDS.iter().any(|(name, _)| call.body.get(*name).is_some_and(|v| !v.is_null()));
    if call.param("budget_id").is_some() && call.body.get("max_budget").is_some_and(|v| !v.is_null()) {
        return Err(GatewayError::bad_request("Set either 'max_budget' or 'budget_id', not both."));
    }
    let budget_id = match call.param("budget_id") {
        Some(id) => Some(id),
        None if has_budget_fields => Some(insert_budget(call, &call.body, None).await?),
        None => None,
    };
    let mut cells = cells(&call.body, CUSTOMER_FIELDS)?;
    cells.push(("user_id", Cell::text(&id)));
    cells.push(("budget_id", Cell::Text(budget_id)));
    call.tenancy.store.insert(Table::EndUsers, cells).await.map_err(db)?;
    call.tenancy.forget_end_user(&id);
    let record = customer(call, &id).await?;
    ok(&with_budget(call, &record, record.budget_id.as_deref()).await?)
}

async fn customer_info(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call
        .param("end_user_id")
        .or_else(|| call.param("user_id"))
        .ok_or_else(|| GatewayError::bad_request("end_user_id: Field required").with_param("end_user_id"))?;
    let record = customer(call, &id).await?;
    ok(&with_budget(call, &record, record.budget_id.as_deref()).await?)
}

async fn customer_update(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call.required("user_id")?;
    let record = customer(call, &id).await?;
    let mut cells = cells(&call.body, CUSTOMER_FIELDS)?;
    match record.budget_id.as_deref() {
        Some(budget_id) => update_budget(call, budget_id).await?,
        None if BUDGET_FIELDS.iter().any(|(name, _)| call.body.get(*name).is_some_and(|v| !v.is_null())) => {
            cells.push(("budget_id", Cell::text(insert_budget(call, &call.body, None).await?)));
        }
        None => {}
    }
    call.tenancy.store.update(Table::EndUsers, &id, cells).await.map_err(db)?;
    call.tenancy.forget_end_user(&id);
    let record = customer(call, &id).await?;
    ok(&with_budget(call, &record, record.budget_id.as_deref()).await?)
}

async fn customer_delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let ids = call.list("user_ids")?;
    let mut missing = Vec::new();
    for id in &ids {
        if call.tenancy.store.get::<EndUserRecord>(Table::EndUsers, id).await.map_err(db)?.is_none() {
            missing.push(id.as_str());
        }
    }
    if ids.is_empty() || !missing.is_empty() {
        return Err(not_found(
            format!("End User Id(s)={} do not exist in db", missing.join(", ")),
            "user_ids",
        ));
    }
    let deleted = call.tenancy.store.delete(Table::EndUsers, &ids).await.map_err(db)?;
    for id in &ids {
        call.tenancy.forget_end_user(id);
    }
    ok(
        &json!({"deleted_customers": deleted, "message": format!("Successfully deleted customers with ids: {ids:?}")}),
    )
}

async fn customer_block(call: &Call<'_>, blocked: bool) -> Result<Response<ResponseBody>, GatewayError> {
    let ids = call.list("user_ids")?;
    let mut rows = Vec::new();
    for id in &ids {
        // Blocking someone never seen before records them, so the block holds when they come.
        if call.tenancy.store.get::<EndUserRecord>(Table::EndUsers, id).await.map_err(db)?.is_none() {
            call.tenancy
                .store
                .insert(Table::EndUsers, vec![("user_id", Cell::text(id))])
                .await
                .map_err(db)?;
        }
        call.tenancy
            .store
            .update(Table::EndUsers, id, vec![("blocked", Cell::Bool(Some(blocked)))])
            .await
            .map_err(db)?;
        call.tenancy.forget_end_user(id);
        rows.push(customer(call, id).await?);
    }
    let field = if blocked { "blocked_users" } else { "unblocked_users" };
    ok(&json!({ field: rows }))
}

async fn customer_list(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let records: Vec<EndUserRecord> =
        call.tenancy.store.list(Table::EndUsers, &ListQuery::default()).await.map_err(db)?;
    let mut rows = Vec::with_capacity(records.len());
    for record in &records {
        rows.push(with_budget(call, record, record.budget_id.as_deref()).await?);
    }
    ok(&rows)
}

async fn budget_new(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call.param("budget_id");
    if let Some(id) = &id
        && budget(call, Some(id)).await?.is_some()
    {
        return Err(GatewayError::bad_request(format!("Budget with id '{id}' already exists."))
            .with_param("budget_id"));
    }
    let id = insert_budget(call, &call.body, id).await?;
    ok(&budget(call, Some(&id)).await?)
}

async fn budget_update(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call.required("budget_id")?;
    budget(call, Some(&id)).await?.ok_or_else(|| not_found(format!("Budget {id} not found"), "budget_id"))?;
    update_budget(call, &id).await?;
    call.tenancy.forget_all();
    ok(&budget(call, Some(&id)).await?)
}

async fn budget_info(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let ids = call.list("budgets")?;
    if ids.is_empty() {
        return Err(GatewayError::bad_request("Specify list of budget id's to query.").with_param("budgets"));
    }
    let query = ListQuery { any_of: Some(("budget_id", ids)), ..ListQuery::default() };
    let rows: Vec<BudgetRecord> = call.tenancy.store.list(Table::Budgets, &query).await.map_err(db)?;
    ok(&rows)
}

async fn budget_delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let id = call.required("id")?;
    let record =
        budget(call, Some(&id)).await?.ok_or_else(|| not_found(format!("Budget {id} not found"), "id"))?;
    call.tenancy.store.delete(Table::Budgets, std::slice::from_ref(&id)).await.map_err(|error| {
        GatewayError::bad_request(format!("Budget {id} is still in use and cannot be deleted: {error}"))
    })?;
    call.tenancy.forget_all();
    ok(&record)
}

async fn budget_list(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let rows: Vec<BudgetRecord> =
        call.tenancy.store.list(Table::Budgets, &ListQuery::default()).await.map_err(db)?;
    ok(&rows)
}
