//! LiteLLM's model management over `LiteLLM_ProxyModelTable` (`store_model_in_db`):
//! `/model/new`, `/model/update`, `PATCH /model/{id}/update` and `/model/delete`, for
//! admins only. A model is validated as a `model_list` entry before it is written, its
//! `litellm_params` string values are written encrypted ([`crate::stored_models::crypto`]),
//! and after each write this replica reloads the table at once and the others are told
//! through Redis (else their poller sees it within a second).

use std::sync::Arc;

use http::{Method, Response};
use serde_json::{Map, Value, json};
use tollgate_domain::GatewayError;
use tollgate_domain::config::ProcessEnv;
use tollgate_storage::{Cell, ModelRecord, Table};

use super::{Call, db, not_found, now, ok, unknown_route};
use crate::ResponseBody;
use crate::stored_models::{self, StoredModels};

pub async fn handle(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let rest = call.path.trim_start_matches("/model/");
    match (&call.method, rest) {
        (&Method::POST, "new") => new(call).await,
        (&Method::POST, "update") => {
            let id = model_info_id(&call.body).ok_or_else(|| {
                GatewayError::bad_request("model_info.id: Field required").with_param("model_info.id")
            })?;
            update(call, &id).await
        }
        (&Method::POST | &Method::DELETE, "delete") => delete(call).await,
        (&Method::PATCH, path) if path.ends_with("/update") && path.matches('/').count() == 1 => {
            let id = path.trim_end_matches("/update").to_owned();
            update(call, &id).await
        }
        _ => Err(unknown_route(call)),
    }
}

/// The database's models, or LiteLLM's answer when they are off.
fn stored<'a>(call: &'a Call<'_>) -> Result<&'a Arc<StoredModels>, GatewayError> {
    call.require_admin()?;
    call.app.stored_models.as_ref().ok_or_else(|| {
        GatewayError::bad_request(
            "Models are not stored in the database on this gateway. Set `general_settings.store_model_in_db: true` (or STORE_MODEL_IN_DB=True) and LITELLM_SALT_KEY.",
        )
    })
}

fn model_info_id(body: &Map<String, Value>) -> Option<String> {
    body.get("model_info")?.get("id")?.as_str().filter(|id| !id.is_empty()).map(str::to_owned)
}

fn object<'a>(
    body: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, GatewayError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(GatewayError::bad_request(format!("{name}: expected an object")).with_param(name)),
    }
}

/// Refuses a model the gateway could not serve, with the config reader's message (which
/// names the field: an unknown provider, a missing `model`, a bad number).
fn validate(
    models: &StoredModels,
    id: &str,
    name: &str,
    params: &Map<String, Value>,
    info: &Value,
) -> Result<(), GatewayError> {
    let entry = stored_models::entry(id, name, params.clone(), info);
    let snapshot = models.live.snapshot();
    let (deployment, _) = snapshot.config.read_deployment(&entry, "", &ProcessEnv).map_err(|error| {
        // The reader names the field from the entry down: `.litellm_params.model: missing`.
        let message = error.to_string().trim_start_matches('.').to_owned();
        let param = message.split(':').next().unwrap_or("litellm_params").to_owned();
        GatewayError::bad_request(message).with_param(param)
    })?;
    if deployment.wire().is_none() {
        return Err(GatewayError::bad_request(format!(
            "litellm_params.model: provider '{}' is not supported by this gateway",
            deployment.provider_prefix()
        ))
        .with_param("litellm_params.model"));
    }
    Ok(())
}

async fn new(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let models = stored(call)?;
    let name = call.required("model_name")?;
    let params = object(&call.body, "litellm_params")?.ok_or_else(|| {
        GatewayError::bad_request("litellm_params: Field required").with_param("litellm_params")
    })?;
    let mut info = object(&call.body, "model_info")?.cloned().unwrap_or_default();
    let id = model_info_id(&call.body).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    info.insert("id".into(), json!(id));
    let info = Value::Object(info);
    validate(models, &id, &name, params, &info)?;
    let taken = models.live.snapshot().config.deployments.iter().any(|d| d.id == id)
        || call.tenancy.store.get::<ModelRecord>(Table::Models, &id).await.map_err(db)?.is_some();
    if taken {
        return Err(GatewayError::bad_request(format!("A model with id={id} already exists"))
            .with_param("model_info.id"));
    }
    let stored_params = Value::Object(models.encrypt_params(params));
    let (actor, at) = (call.actor(), now());
    call.tenancy
        .store
        .insert(
            Table::Models,
            vec![
                ("model_id", Cell::text(&id)),
                ("model_name", Cell::text(&name)),
                ("litellm_params", Cell::Json(stored_params)),
                ("model_info", Cell::Json(info)),
                ("created_at", Cell::Time(Some(at))),
                ("created_by", Cell::text(&actor)),
                ("updated_at", Cell::Time(Some(at))),
                ("updated_by", Cell::text(&actor)),
            ],
        )
        .await
        .map_err(db)?;
    tracing::info!(model_id = %id, model_name = %name, "database model added");
    answer(call, models, &id).await
}

async fn update(call: &Call<'_>, id: &str) -> Result<Response<ResponseBody>, GatewayError> {
    let models = stored(call)?;
    let Some(row) = call.tenancy.store.get::<ModelRecord>(Table::Models, id).await.map_err(db)? else {
        let in_config = models.live.file_config().deployments.iter().any(|d| d.id == id);
        let message = if in_config {
            format!("Model id={id} is defined in the config file, not in the database; change it there")
        } else {
            format!("Model with id={id} not found in db")
        };
        return Err(not_found(message, "model_id"));
    };
    let name = match call.body.get("model_name") {
        None | Some(Value::Null) => row.model_name.clone(),
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(_) => {
            return Err(GatewayError::bad_request("model_name: expected a string").with_param("model_name"));
        }
    };
    // New values over the stored ones, field by field, as LiteLLM merges an update.
    let mut params = match &row.litellm_params.0 {
        Value::Object(stored) => models.decrypt_params(stored),
        _ => Map::new(),
    };
    if let Some(changes) = object(&call.body, "litellm_params")? {
        for (field, value) in changes {
            match value {
                Value::Null => params.remove(field),
                other => params.insert(field.clone(), other.clone()),
            };
        }
    }
    let mut info = match &row.model_info.0 {
        Value::Object(info) => info.clone(),
        _ => Map::new(),
    };
    if let Some(changes) = object(&call.body, "model_info")? {
        info.extend(changes.iter().map(|(field, value)| (field.clone(), value.clone())));
    }
    info.insert("id".into(), json!(id));
    let info = Value::Object(info);
    validate(models, id, &name, &params, &info)?;
    call.tenancy
        .store
        .update(
            Table::Models,
            id,
            vec![
                ("model_name", Cell::text(&name)),
                ("litellm_params", Cell::Json(Value::Object(models.encrypt_params(&params)))),
                ("model_info", Cell::Json(info)),
                ("updated_at", Cell::Time(Some(now()))),
                ("updated_by", Cell::text(call.actor())),
            ],
        )
        .await
        .map_err(db)?;
    tracing::info!(model_id = %id, model_name = %name, "database model updated");
    answer(call, models, id).await
}

async fn delete(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let models = stored(call)?;
    let id = call.required("id")?;
    let deleted = call.tenancy.store.delete(Table::Models, std::slice::from_ref(&id)).await.map_err(db)?;
    if deleted == 0 {
        return Err(not_found(format!("Model with id={id} not found in db"), "id"));
    }
    tracing::info!(model_id = %id, "database model deleted");
    changed(call, models).await;
    ok(&json!({"message": format!("Model: {id} deleted successfully")}))
}

/// Serves the change here at once and tells the other replicas.
async fn changed(call: &Call<'_>, models: &StoredModels) {
    if let Err(error) = models.reload_now().await {
        // Written, but not yet served here: the poller retries each second.
        tracing::warn!(%error, "database models not reloaded after a change");
    }
    call.tenancy.announce_model_change();
}

/// The row as stored (its `litellm_params` encrypted), LiteLLM's answer to a write.
async fn answer(
    call: &Call<'_>,
    models: &StoredModels,
    id: &str,
) -> Result<Response<ResponseBody>, GatewayError> {
    changed(call, models).await;
    let row = call.tenancy.store.get::<ModelRecord>(Table::Models, id).await.map_err(db)?;
    let row = row.ok_or_else(|| not_found(format!("Model with id={id} not found in db"), "model_id"))?;
    ok(&row)
}
