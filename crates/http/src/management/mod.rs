//! LiteLLM's management API: keys, users, teams, organizations, customers and budgets,
//! with LiteLLM's request fields and response shapes, over the store.
//!
//! Who may do what: the master key and keys of `proxy_admin` users may do everything;
//! `proxy_admin_viewer` may read; any other key may manage its own keys, read its own user
//! and teams, and manage the teams it is an admin of. Everything else is refused with 403.
//! Each write also updates the in-memory key cache, so a change is honoured at once.

mod budgets;
mod keys;
mod models;
mod reports;
mod teams;
mod users;

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tollgate_domain::duration::Duration;
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_storage::{Cell, StoreError};

use crate::tenancy::{Access, Tenancy};
use crate::{App, BoxError, ResponseBody, errors, json_response};

/// The largest management request body.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The first path segments this module answers.
pub fn owns(path: &str) -> bool {
    [
        "/key/",
        "/user/",
        "/team/",
        "/organization/",
        "/customer/",
        "/end_user/",
        "/budget/",
        "/spend/",
        "/global/",
        "/model/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// One management request, already authenticated.
pub struct Call<'a> {
    pub app: &'a App,
    pub tenancy: &'a Tenancy,
    pub access: &'a Access,
    pub method: Method,
    /// The path without `/v1`, e.g. `/key/generate`.
    pub path: &'a str,
    pub query: HashMap<String, String>,
    pub body: Map<String, Value>,
}

pub async fn handle<B>(app: &App, access: &Access, path: &str, request: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let Some(tenancy) = app.tenancy.as_deref() else {
        return errors::error_response(
            &GatewayError::new(
                ErrorKind::StoreUnavailable,
                "No connected db. Virtual keys need a master key and a database (general_settings.database_url).",
            ),
            None,
        );
    };
    let (parts, body) = request.into_parts();
    let result = async {
        let body = read_object(body).await?;
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let call = Call { app, tenancy, access, method: parts.method, path, query, body };
        let segment = path.split('/').nth(1).unwrap_or_default();
        match segment {
            // Before "user" and "team": their daily activity reports live with the others.
            _ if reports::serves(path) => reports::handle(&call).await,
            "key" => keys::handle(&call).await,
            "user" => users::handle(&call).await,
            "team" => teams::handle(&call).await,
            "model" => models::handle(&call).await,
            _ => budgets::handle(&call, segment).await,
        }
    }
    .await;
    match result {
        Ok(response) => response,
        Err(error) => errors::error_response(&error, None),
    }
}

async fn read_object<B>(body: B) -> Result<Map<String, Value>, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let bytes = http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| GatewayError::new(ErrorKind::PayloadTooLarge, "request body too large or unreadable"))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::bad_request("the request body must be a JSON object")),
        Err(error) => Err(GatewayError::bad_request(format!("Invalid JSON in request body: {error}"))),
    }
}

impl Call<'_> {
    /// A string from the body, else the query string.
    pub fn param(&self, name: &str) -> Option<String> {
        match self.body.get(name) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            _ => self.query.get(name).filter(|text| !text.is_empty()).cloned(),
        }
    }

    pub fn required(&self, name: &str) -> Result<String, GatewayError> {
        self.param(name)
            .ok_or_else(|| GatewayError::bad_request(format!("{name}: Field required")).with_param(name))
    }

    /// A list of strings from the body (absent: empty).
    pub fn list(&self, name: &str) -> Result<Vec<String>, GatewayError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(value) => string_list(value, name),
        }
    }

    /// The caller's user id, for keys owned by a user.
    pub fn caller_user_id(&self) -> Option<&str> {
        self.access.principal().and_then(|principal| principal.key.user_id.as_deref())
    }

    pub fn is_admin(&self) -> bool {
        self.access.is_admin()
    }

    /// Readers: admins and `proxy_admin_viewer`.
    pub fn can_read_all(&self) -> bool {
        self.is_admin() || self.access.principal().is_some_and(|p| p.role() == "proxy_admin_viewer")
    }

    /// Admins only; LiteLLM's message for everyone else (403 here, as the gateway's
    /// contract says for management routes).
    pub fn require_admin(&self) -> Result<(), GatewayError> {
        if self.is_admin() || (self.method == Method::GET && self.can_read_all()) {
            return Ok(());
        }
        Err(self.forbidden_route())
    }

    pub fn forbidden_route(&self) -> GatewayError {
        let principal = self.access.principal();
        GatewayError::new(
            ErrorKind::Forbidden,
            format!(
                "Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route={}. Your role={}. Your user_id={}",
                self.path,
                principal.map_or("unknown", |p| p.role()),
                mask(principal.and_then(|p| p.key.user_id.as_deref()).unwrap_or("")),
            ),
        )
    }

    /// The user recorded as having made a change (`created_by`, `updated_by`).
    pub fn actor(&self) -> String {
        match self.access {
            Access::Key(principal) => {
                principal.key.user_id.clone().unwrap_or_else(|| principal.key.token.clone())
            }
            _ => "default_user_id".to_owned(),
        }
    }
}

/// LiteLLM masks user ids in messages: the first 6 and last 2 characters stay.
fn mask(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 4 {
        return "***".to_owned();
    }
    if chars.len() <= 8 {
        return format!("{}***", chars[0]);
    }
    let hidden = chars.len() - 8;
    format!(
        "{}{}{}",
        chars[..6].iter().collect::<String>(),
        "*".repeat(hidden),
        chars[chars.len() - 2..].iter().collect::<String>()
    )
}

/// How a request field is stored.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Text,
    List,
    Json,
    Float,
    Int,
    BigInt,
    Bool,
}

/// A request field that maps onto a column of the same name.
pub type Field = (&'static str, Kind);

/// The cells for every field of `spec` present (and not null) in the body, type-checked.
pub fn cells(body: &Map<String, Value>, spec: &[Field]) -> Result<Vec<(&'static str, Cell)>, GatewayError> {
    let mut cells = Vec::new();
    for &(name, kind) in spec {
        let Some(value) = body.get(name).filter(|value| !value.is_null()) else { continue };
        let wrong = |expected: &str| {
            GatewayError::bad_request(format!("{name}: expected {expected}")).with_param(name)
        };
        let cell = match kind {
            Kind::Text => Cell::Text(Some(value.as_str().ok_or_else(|| wrong("a string"))?.to_owned())),
            Kind::List => Cell::List(string_list(value, name)?),
            Kind::Json => match value {
                Value::Object(_) | Value::Array(_) => Cell::Json(value.clone()),
                _ => return Err(wrong("an object")),
            },
            Kind::Float => {
                let number = value.as_f64().filter(|n| n.is_finite()).ok_or_else(|| wrong("a number"))?;
                if number < 0.0 {
                    return Err(GatewayError::bad_request(format!(
                        "{name} must be a non-negative finite number. Received: {number}"
                    ))
                    .with_param(name));
                }
                Cell::Float(Some(number))
            }
            Kind::Int => Cell::Int(Some(
                value
                    .as_u64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| wrong("a non-negative integer"))?,
            )),
            Kind::BigInt => Cell::BigInt(Some(
                value
                    .as_u64()
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| wrong("a non-negative integer"))?,
            )),
            Kind::Bool => Cell::Bool(Some(value.as_bool().ok_or_else(|| wrong("true or false"))?)),
        };
        cells.push((name, cell));
    }
    Ok(cells)
}

pub fn string_list(value: &Value, name: &str) -> Result<Vec<String>, GatewayError> {
    value
        .as_array()
        .and_then(|items| {
            items.iter().map(|item| item.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            GatewayError::bad_request(format!("{name}: expected a list of strings")).with_param(name)
        })
}

/// `budget_duration` checked, with the reset time it implies.
pub fn budget_schedule(body: &Map<String, Value>) -> Result<Vec<(&'static str, Cell)>, GatewayError> {
    let Some(text) = body.get("budget_duration").and_then(Value::as_str) else { return Ok(Vec::new()) };
    let duration = Duration::parse(text).ok().filter(|duration| duration.seconds() > 0).ok_or_else(|| {
        GatewayError::bad_request(format!(
            "Invalid budget_duration '{text}'. Use a format like '1h', '24h', '7d', or '30d'."
        ))
        .with_param("budget_duration")
    })?;
    Ok(vec![
        ("budget_duration", Cell::text(text)),
        ("budget_reset_at", Cell::Time(Some(duration.next_reset(now())))),
    ])
}

pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

pub fn ok(value: &impl Serialize) -> Result<Response<ResponseBody>, GatewayError> {
    let body = serde_json::to_vec(value).map_err(|error| GatewayError::internal(error.to_string()))?;
    Ok(json_response(StatusCode::OK, body))
}

pub fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub fn not_found(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::new(ErrorKind::NotFound, message).with_param(param)
}

/// Every management route and the methods it answers, for the 405 a wrong method gets.
const ROUTES: &[(&str, &str)] = &[
    ("/key/generate", "POST"),
    ("/key/update", "POST"),
    ("/key/delete", "POST, DELETE"),
    ("/key/info", "GET, POST"),
    ("/key/list", "GET"),
    ("/key/regenerate", "POST"),
    ("/key/block", "POST"),
    ("/key/unblock", "POST"),
    ("/key/health", "POST"),
    ("/user/new", "POST"),
    ("/user/info", "GET"),
    ("/user/update", "POST"),
    ("/user/delete", "POST, DELETE"),
    ("/user/list", "GET"),
    ("/team/new", "POST"),
    ("/team/update", "POST"),
    ("/team/delete", "POST, DELETE"),
    ("/team/info", "GET"),
    ("/team/list", "GET"),
    ("/team/member_add", "POST"),
    ("/team/member_update", "POST"),
    ("/team/member_delete", "POST"),
    ("/team/block", "POST"),
    ("/team/unblock", "POST"),
    ("/team/model/add", "POST"),
    ("/organization/new", "POST"),
    ("/organization/info", "GET"),
    ("/organization/update", "PATCH, POST"),
    ("/organization/delete", "DELETE, POST"),
    ("/organization/list", "GET"),
    ("/organization/member_add", "POST"),
    ("/customer/new", "POST"),
    ("/customer/info", "GET"),
    ("/customer/update", "POST"),
    ("/customer/delete", "POST, DELETE"),
    ("/customer/block", "POST"),
    ("/customer/unblock", "POST"),
    ("/customer/list", "GET"),
    ("/budget/new", "POST"),
    ("/budget/update", "POST"),
    ("/budget/info", "POST"),
    ("/budget/delete", "POST, DELETE"),
    ("/budget/list", "GET"),
    ("/model/new", "POST"),
    ("/model/update", "POST"),
    ("/model/delete", "POST, DELETE"),
];

/// 405 when the path is a management route answering other methods, else 404.
pub fn unknown_route(call: &Call<'_>) -> GatewayError {
    let path = call.path.replacen("/end_user/", "/customer/", 1);
    let allowed =
        ROUTES.iter().find(|(route, _)| *route == path).map(|(_, methods)| *methods).or_else(|| {
            let keyed = path.starts_with("/key/")
                && (path.ends_with("/regenerate") || path.ends_with("/reset_spend"));
            let model = path.starts_with("/model/") && path.ends_with("/update");
            (keyed.then_some("POST")).or(model.then_some("PATCH"))
        });
    match allowed {
        Some(methods) => GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!("Method Not Allowed: {} {} (use {methods})", call.method, call.path),
        ),
        None => GatewayError::new(ErrorKind::NotFound, format!("Not Found: {} {}", call.method, call.path)),
    }
}

/// Database failures reach the client as 503 with LiteLLM's `no_db_connection` type.
pub fn db(error: StoreError) -> GatewayError {
    tracing::error!(%error, "management request failed in the database");
    GatewayError::new(ErrorKind::StoreUnavailable, format!("Database error: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_masked_like_litellm() {
        assert_eq!(mask("abc"), "***");
        assert_eq!(mask("user-seed-0001"), "user-s******01");
    }

    #[test]
    fn cells_check_types_and_skip_nulls() {
        let body =
            serde_json::json!({"models": ["a"], "max_budget": 5, "metadata": {"x": 1}, "key_alias": null});
        let spec = [
            ("models", Kind::List),
            ("max_budget", Kind::Float),
            ("metadata", Kind::Json),
            ("key_alias", Kind::Text),
        ];
        let cells = cells(body.as_object().unwrap(), &spec).unwrap();
        assert_eq!(cells.len(), 3);
        let negative = serde_json::json!({"max_budget": -1});
        let error = super::cells(negative.as_object().unwrap(), &spec).unwrap_err();
        assert!(error.message.contains("non-negative"));
        let wrong = serde_json::json!({"models": "gpt-4o"});
        assert_eq!(
            super::cells(wrong.as_object().unwrap(), &spec).unwrap_err().param.as_deref(),
            Some("models")
        );
    }
}
