//! Values on their way into and out of LiteLLM's columns. PostgreSQL keeps lists as
//! `TEXT[]` and JSON as `JSONB` (Prisma's types); SQLite keeps both as JSON text. Writers
//! say what a value is and the backend decides how it is stored; readers accept either.

use chrono::NaiveDateTime;
use sea_orm::sea_query::{ArrayType, SimpleExpr, Value};
use sea_orm::{ColIdx, DbBackend, QueryResult, TryGetError, TryGetable};
use serde::Serialize;

/// A value for one column of an insert or update.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    List(Vec<String>),
    Json(serde_json::Value),
    Float(Option<f64>),
    Int(Option<i32>),
    BigInt(Option<i64>),
    Bool(Option<bool>),
    Time(Option<NaiveDateTime>),
}

impl Cell {
    pub fn text(value: impl Into<String>) -> Cell {
        Cell::Text(Some(value.into()))
    }

    pub(crate) fn into_expr(self, backend: DbBackend) -> SimpleExpr {
        let postgres = backend == DbBackend::Postgres;
        let value = match self {
            Cell::Text(text) => Value::String(text),
            Cell::List(items) if postgres => {
                Value::Array(ArrayType::String, Some(Box::new(items.into_iter().map(Value::from).collect())))
            }
            Cell::List(items) => Value::String(Some(serde_json::Value::from(items).to_string())),
            Cell::Json(json) if postgres => Value::Json(Some(Box::new(json))),
            Cell::Json(json) => Value::String(Some(json.to_string())),
            Cell::Float(number) => Value::Double(number),
            Cell::Int(number) => Value::Int(number),
            Cell::BigInt(number) => Value::BigInt(number),
            Cell::Bool(flag) => Value::Bool(flag),
            Cell::Time(time) => Value::ChronoDateTime(time),
        };
        SimpleExpr::Value(value)
    }
}

/// A `TEXT[]` column (PostgreSQL) or a JSON array in text (SQLite); NULL reads as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TextList(pub Vec<String>);

impl TryGetable for TextList {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        // A PostgreSQL array first; SQLite refuses that and hands over its text instead.
        if let Ok(items) = <Option<Vec<String>>>::try_get_by(res, index) {
            return Ok(TextList(items.unwrap_or_default()));
        }
        let text = <Option<String>>::try_get_by(res, index)?;
        let items = match text.as_deref() {
            None | Some("") => Vec::new(),
            Some(text) => serde_json::from_str(text).map_err(|error| {
                TryGetError::DbErr(sea_orm::DbErr::Type(format!("a list column holds {text:?}: {error}")))
            })?,
        };
        Ok(TextList(items))
    }
}

/// A JSON column: `JSONB` (PostgreSQL) or JSON text (SQLite); NULL reads as `null`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Json(pub serde_json::Value);

impl TryGetable for Json {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        if let Ok(value) = <Option<serde_json::Value>>::try_get_by(res, index) {
            // SQLite may hand JSON text back as a JSON string; unwrap it once.
            return Ok(Json(match value {
                Some(serde_json::Value::String(text)) => {
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                }
                other => other.unwrap_or(serde_json::Value::Null),
            }));
        }
        let text = <Option<String>>::try_get_by(res, index)?;
        Ok(Json(match text {
            None => serde_json::Value::Null,
            Some(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        }))
    }
}
