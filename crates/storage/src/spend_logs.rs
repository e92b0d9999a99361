//! The spend-log writer's one transaction: a batch of `LiteLLM_SpendLogs` rows and what they
//! add to the daily roll-ups. This is the busiest write Tollgate makes (a row per request),
//! so it skips the query builder: the SQL is written once per batch size, and values are
//! bound straight from the rows (shared text is bound without a copy).
//!
//! A batch retried after an unanswered commit may hold rows that are already written. They
//! are skipped (`ON CONFLICT DO NOTHING`), and the roll-ups must then count only the rows
//! that were new: the first pass inserts without asking which rows went in, and only when
//! it inserted fewer rows than it was given does the transaction start again, this time
//! reading back the ids it inserted (`RETURNING`).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::NaiveDateTime;
use sea_orm::sqlx::{self, Arguments, Postgres, Row, Sqlite};
use sea_orm::{DatabaseConnection, DbBackend, DbErr};
use serde::Serialize;

use crate::records::{SpendLogError, SpendLogGuardrail};
use crate::{SpendLogRow, rollup};

/// Spend-log rows per statement: 23 values each keeps a statement within SQLite's 32,766
/// and PostgreSQL's 65,535 bound values.
const ROWS_PER_STATEMENT: usize = 1_024;

/// The columns written, in the order [`bind_row`] binds them.
const COLUMNS: [&str; 23] = [
    "request_id",
    "call_type",
    "api_key",
    "spend",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "startTime",
    "endTime",
    "request_duration_ms",
    "model",
    "model_id",
    "model_group",
    "custom_llm_provider",
    "api_base",
    "user",
    "end_user",
    "team_id",
    "organization_id",
    "metadata",
    "cache_hit",
    "request_tags",
    "status",
];

/// Columns that are JSON (`JSONB` on PostgreSQL, bound as text and cast there).
const JSON_COLUMNS: [&str; 2] = ["metadata", "request_tags"];

/// One value on its way to a placeholder.
pub(crate) enum Bound {
    Shared(Option<Arc<str>>),
    Static(&'static str),
    Owned(String),
    Float(f64),
    Int(i32),
    BigInt(i64),
    Time(NaiveDateTime),
}

/// SQL text and its values, placeholders numbered for the backend.
pub(crate) struct Statement {
    pub sql: String,
    pub values: Vec<Bound>,
    backend: DbBackend,
}

impl Statement {
    pub fn new(backend: DbBackend, sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), values: Vec::new(), backend }
    }

    /// Appends a placeholder for `value`; `cast` names a PostgreSQL type the text becomes.
    pub fn bind(&mut self, value: Bound, cast: Option<&str>) {
        use std::fmt::Write;
        self.values.push(value);
        let number = self.values.len();
        // Writing to a String cannot fail.
        let _ = match (self.backend, cast) {
            (DbBackend::Postgres, Some(cast)) => write!(self.sql, "CAST(${number} AS {cast})"),
            (DbBackend::Postgres, None) => write!(self.sql, "${number}"),
            _ => write!(self.sql, "?"),
        };
    }
}

/// A transaction on the pool under sea-orm's connection, for the backend in use.
enum Transaction {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Transaction {
    async fn begin(db: &DatabaseConnection) -> Result<Self, sqlx::Error> {
        Ok(match db.get_database_backend() {
            DbBackend::Postgres => Transaction::Postgres(db.get_postgres_connection_pool().begin().await?),
            _ => Transaction::Sqlite(db.get_sqlite_connection_pool().begin().await?),
        })
    }

    /// Runs `statement`; returns the rows it changed.
    async fn execute(&mut self, statement: Statement) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(statement.sql);
        Ok(match self {
            Transaction::Sqlite(transaction) => sqlx::query_with(sql, sqlite_arguments(statement.values)?)
                .execute(&mut **transaction)
                .await?
                .rows_affected(),
            Transaction::Postgres(transaction) => {
                sqlx::query_with(sql, postgres_arguments(statement.values)?)
                    .execute(&mut **transaction)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Runs `statement` and returns the first column of every row it answers.
    async fn first_column(&mut self, statement: Statement) -> Result<Vec<String>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(statement.sql);
        match self {
            Transaction::Sqlite(transaction) => sqlx::query_with(sql, sqlite_arguments(statement.values)?)
                .fetch_all(&mut **transaction)
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect(),
            Transaction::Postgres(transaction) => {
                sqlx::query_with(sql, postgres_arguments(statement.values)?)
                    .fetch_all(&mut **transaction)
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect()
            }
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => transaction.commit().await,
            Transaction::Postgres(transaction) => transaction.commit().await,
        }
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Transaction::Sqlite(transaction) => transaction.rollback().await,
            Transaction::Postgres(transaction) => transaction.rollback().await,
        }
    }
}

fn sqlite_arguments(values: Vec<Bound>) -> Result<sqlx::sqlite::SqliteArguments, sqlx::Error> {
    let mut arguments = sqlx::sqlite::SqliteArguments::default();
    arguments.reserve(values.len(), 0);
    for value in values {
        match value {
            Bound::Shared(text) => arguments.add(text),
            Bound::Static(text) => arguments.add(text),
            Bound::Owned(text) => arguments.add(text),
            Bound::Float(number) => arguments.add(number),
            Bound::Int(number) => arguments.add(number),
            Bound::BigInt(number) => arguments.add(number),
            // The text sqlx would write for a time, without chrono's formatter.
            Bound::Time(time) => {
                let mut text = Vec::with_capacity(29);
                write_time(&mut text, time, Fraction::Exact);
                arguments.add(String::from_utf8(text).unwrap_or_default())
            }
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

fn postgres_arguments(values: Vec<Bound>) -> Result<sqlx::postgres::PgArguments, sqlx::Error> {
    let mut arguments = sqlx::postgres::PgArguments::default();
    arguments.reserve(values.len(), 0);
    for value in values {
        match value {
            Bound::Shared(text) => arguments.add(text),
            Bound::Static(text) => arguments.add(text),
            Bound::Owned(text) => arguments.add(text),
            Bound::Float(number) => arguments.add(number),
            Bound::Int(number) => arguments.add(number),
            Bound::BigInt(number) => arguments.add(number),
            Bound::Time(time) => arguments.add(time),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

/// Writes `rows` and their roll-ups in one transaction (see the module's doc).
pub(crate) async fn insert(
    db: &DatabaseConnection,
    rows: &[SpendLogRow],
    now: NaiveDateTime,
) -> Result<(), DbErr> {
    insert_with_sqlx(db, rows, now)
        .await
        .map_err(|error| DbErr::Custom(format!("writing spend logs: {error}")))
}

async fn insert_with_sqlx(
    db: &DatabaseConnection,
    rows: &[SpendLogRow],
    now: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    let backend = db.get_database_backend();
    let mut transaction = Transaction::begin(db).await?;
    let all_new = match &mut transaction {
        // Straight into the table: a batch that is not new (a retry) collides with its own
        // rows on the primary key, which aborts the transaction; the careful pass follows.
        Transaction::Postgres(postgres) => match copy_in(postgres, rows).await {
            Ok(copied) => copied == rows.len() as u64,
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => false,
            Err(error) => return Err(error),
        },
        Transaction::Sqlite(_) => {
            let mut all_new = true;
            for chunk in in_statement_sizes(rows, ROWS_PER_STATEMENT) {
                if transaction.execute(insert_statement(chunk, backend, false)).await? != chunk.len() as u64 {
                    all_new = false;
                    break;
                }
            }
            all_new
        }
    };
    let fresh: Vec<&SpendLogRow> = if all_new {
        rows.iter().collect()
    } else {
        transaction.rollback().await?;
        transaction = Transaction::begin(db).await?;
        let mut inserted = HashSet::new();
        for chunk in in_statement_sizes(rows, ROWS_PER_STATEMENT) {
            inserted.extend(transaction.first_column(insert_statement(chunk, backend, true)).await?);
        }
        // `remove`: a request id twice in one batch was inserted (and is counted) once.
        rows.iter().filter(|row| inserted.remove(&*row.request_id)).collect()
    };
    for statement in rollup::upserts(&rollup::sums(fresh), backend, now) {
        transaction.execute(statement).await?;
    }
    transaction.commit().await
}

/// Writes `rows` with PostgreSQL's `COPY … FROM STDIN` (text format): no statement to parse
/// or plan, no bound parameter to decode, a few bytes per value. `COPY` cannot skip rows
/// that exist, so it serves a batch's first attempt only. Returns the rows written.
async fn copy_in(connection: &mut sqlx::PgConnection, rows: &[SpendLogRow]) -> Result<u64, sqlx::Error> {
    let columns: Vec<String> = COLUMNS.iter().map(|column| format!("\"{column}\"")).collect();
    let mut copy = connection
        .copy_in_raw(&format!("COPY \"LiteLLM_SpendLogs\" ({}) FROM STDIN", columns.join(", ")))
        .await?;
    // Sent in slices of about a megabyte: the buffer stays small, and PostgreSQL parses one
    // slice while the next is being written.
    const SLICE: usize = 1 << 20;
    let mut text = Vec::with_capacity(SLICE.min(rows.len() * 512));
    for row in rows {
        copy_row(&mut text, row);
        if text.len() >= SLICE
            && let Err(error) = copy.send(std::mem::take(&mut text)).await
        {
            let _ = copy.abort("spend log batch not sent").await;
            return Err(error);
        }
    }
    if !text.is_empty()
        && let Err(error) = copy.send(text).await
    {
        let _ = copy.abort("spend log batch not sent").await;
        return Err(error);
    }
    copy.finish().await
}

/// One row in `COPY`'s text format: values in [`COLUMNS`] order, tab-separated, `\N` for
/// NULL, backslash escapes for the characters the format reserves.
fn copy_row(text: &mut Vec<u8>, row: &SpendLogRow) {
    use std::io::Write;
    for (position, value) in bind_row(row).into_iter().enumerate() {
        if position > 0 {
            text.push(b'\t');
        }
        // Writing to a Vec cannot fail.
        let _ = match value {
            Bound::Shared(None) => {
                text.extend_from_slice(b"\\N");
                Ok(())
            }
            Bound::Shared(Some(value)) => {
                copy_escape(text, &value);
                Ok(())
            }
            Bound::Static(value) => {
                copy_escape(text, value);
                Ok(())
            }
            Bound::Owned(value) => {
                copy_escape(text, &value);
                Ok(())
            }
            // Rust prints floats without an exponent; a non-finite cost is no cost.
            Bound::Float(number) => write!(text, "{}", if number.is_finite() { number } else { 0.0 }),
            Bound::Int(number) => write!(text, "{number}"),
            Bound::BigInt(number) => write!(text, "{number}"),
            Bound::Time(time) => {
                write_time(text, time, Fraction::Micros);
                Ok(())
            }
        };
    }
    text.push(b'\n');
}

/// How many fractional digits [`write_time`] writes.
#[derive(Clone, Copy)]
enum Fraction {
    /// Always six: what PostgreSQL keeps of a bound time (it stores microseconds).
    Micros,
    /// None, 3, 6 or 9, the fewest that are exact: chrono's `%.f`, which sqlx writes to
    /// SQLite, so rows compare with the times sqlx binds in queries.
    Exact,
}

/// `time` as `YYYY-MM-DD HH:MM:SS[.fff…]`, written digit by digit: chrono's `format` parses
/// its pattern on every call, which cost more than the rest of a spend-log row together.
fn write_time(text: &mut Vec<u8>, time: NaiveDateTime, fraction: Fraction) {
    use chrono::{Datelike, Timelike};
    fn digits(text: &mut Vec<u8>, mut value: u32, width: usize) {
        let start = text.len();
        text.resize(start + width, b'0');
        for slot in text[start..].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // Years before 1 or after 9999 never come from a clock; clamped, they still parse.
    digits(text, time.year().clamp(1, 9_999) as u32, 4);
    text.push(b'-');
    digits(text, time.month(), 2);
    text.push(b'-');
    digits(text, time.day(), 2);
    text.push(b' ');
    digits(text, time.hour(), 2);
    text.push(b':');
    digits(text, time.minute(), 2);
    text.push(b':');
    digits(text, time.second(), 2);
    // A leap second's nanoseconds run past 1e9: it ends at the second's last digit.
    let nanos = time.nanosecond().min(999_999_999);
    match fraction {
        Fraction::Micros => {
            text.push(b'.');
            digits(text, nanos / 1_000, 6);
        }
        Fraction::Exact if nanos == 0 => {}
        Fraction::Exact if nanos.is_multiple_of(1_000_000) => {
            text.push(b'.');
            digits(text, nanos / 1_000_000, 3);
        }
        Fraction::Exact if nanos.is_multiple_of(1_000) => {
            text.push(b'.');
            digits(text, nanos / 1_000, 6);
        }
        Fraction::Exact => {
            text.push(b'.');
            digits(text, nanos, 9);
        }
    }
}

/// `value` with the backslash, tab, newline and carriage return escaped, as `COPY` reads them.
fn copy_escape(text: &mut Vec<u8>, value: &str) {
    let mut rest = value.as_bytes();
    while let Some(at) = rest.iter().position(|byte| matches!(byte, b'\\' | b'\t' | b'\n' | b'\r')) {
        text.extend_from_slice(&rest[..at]);
        text.extend_from_slice(match rest[at] {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            _ => b"\\r",
        });
        rest = &rest[at + 1..];
    }
    text.extend_from_slice(rest);
}

/// `rows` in statements of `most` rows, then the rest in powers of two (`most` is one too).
/// Both databases keep a prepared statement per SQL text, and a statement of a size never
/// seen before is parsed and planned afresh, which at a low rate of requests costs more
/// than writing the rows it carries; so only a few sizes are ever used.
pub(crate) fn in_statement_sizes<T>(mut rows: &[T], most: usize) -> Vec<&[T]> {
    debug_assert!(most.is_power_of_two());
    let mut chunks = Vec::new();
    while !rows.is_empty() {
        let size = most.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(size);
        chunks.push(chunk);
        rows = rest;
    }
    chunks
}

/// One multi-row INSERT of spend log rows that skips rows already written; with `returning`,
/// it answers the ids it did insert.
fn insert_statement(rows: &[SpendLogRow], backend: DbBackend, returning: bool) -> Statement {
    let columns: Vec<String> = COLUMNS.iter().map(|column| format!("\"{column}\"")).collect();
    let mut statement = Statement::new(
        backend,
        format!("INSERT INTO \"LiteLLM_SpendLogs\" ({}) VALUES ", columns.join(", ")),
    );
    statement.values.reserve(rows.len() * COLUMNS.len());
    for (index, row) in rows.iter().enumerate() {
        statement.sql.push_str(if index == 0 { "(" } else { ", (" });
        for (position, (column, value)) in COLUMNS.iter().zip(bind_row(row)).enumerate() {
            if position > 0 {
                statement.sql.push_str(", ");
            }
            let cast = JSON_COLUMNS.contains(column).then_some("JSONB");
            statement.bind(value, cast);
        }
        statement.sql.push(')');
    }
    statement.sql.push_str(" ON CONFLICT (\"request_id\") DO NOTHING");
    if returning {
        statement.sql.push_str(" RETURNING \"request_id\"");
    }
    statement
}

/// A row's values, in [`COLUMNS`] order.
fn bind_row(row: &SpendLogRow) -> [Bound; 23] {
    let duration = (row.end_time - row.start_time).num_milliseconds();
    let tags = serde_json::to_string(&row.tags).unwrap_or_else(|_| "[]".to_owned());
    [
        Bound::Shared(Some(row.request_id.clone())),
        Bound::Static(row.call_type),
        Bound::Shared(Some(row.api_key.clone())),
        Bound::Float(row.spend),
        Bound::Int(row.prompt_tokens.saturating_add(row.completion_tokens)),
        Bound::Int(row.prompt_tokens),
        Bound::Int(row.completion_tokens),
        Bound::Time(row.start_time),
        Bound::Time(row.end_time),
        Bound::Int(i32::try_from(duration).unwrap_or(i32::MAX)),
        Bound::Shared(Some(row.model.clone())),
        Bound::Shared(Some(row.model_id.clone())),
        Bound::Shared(Some(row.model_group.clone())),
        Bound::Shared(Some(row.custom_llm_provider.clone())),
        Bound::Shared(Some(row.api_base.clone())),
        // LiteLLM's `user` is the key's user (`/spend/logs?user_id=` reads it); the
        // request's `user` field is the end user.
        Bound::Shared(Some(row.user_id.clone().unwrap_or_else(|| Arc::from("")))),
        Bound::Shared(row.end_user.clone()),
        Bound::Shared(row.team_id.clone()),
        Bound::Shared(row.organization_id.clone()),
        Bound::Owned(metadata(row)),
        Bound::Static(if row.cache_hit { "True" } else { "False" }),
        Bound::Owned(tags),
        Bound::Static(row.status),
    ]
}

/// The `metadata` column: LiteLLM's keys for who called, the tags, the prompt-cache tokens
/// and, for a failure, the error; `usage_estimated` when the tokens were counted by the
/// gateway because the upstream reported none.
fn metadata(row: &SpendLogRow) -> String {
    #[derive(Serialize)]
    struct Metadata<'a> {
        user_api_key_alias: Option<&'a str>,
        user_api_key_user_id: Option<&'a str>,
        user_api_key_team_id: Option<&'a str>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        tags: &'a [Arc<str>],
        #[serde(skip_serializing_if = "Option::is_none")]
        usage_object: Option<UsageObject>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_information: Option<&'a SpendLogError>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        usage_estimated: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        guardrail_information: Option<[&'a SpendLogGuardrail; 1]>,
    }
    #[derive(Serialize)]
    struct UsageObject {
        cache_read_input_tokens: i64,
        cache_creation_input_tokens: i64,
    }
    let cached = row.cache_read_input_tokens > 0 || row.cache_creation_input_tokens > 0;
    let metadata = Metadata {
        user_api_key_alias: row.key_alias.as_deref(),
        user_api_key_user_id: row.user_id.as_deref(),
        user_api_key_team_id: row.team_id.as_deref(),
        tags: &row.tags,
        usage_object: cached.then_some(UsageObject {
            cache_read_input_tokens: row.cache_read_input_tokens,
            cache_creation_input_tokens: row.cache_creation_input_tokens,
        }),
        error_information: row.error.as_ref(),
        usage_estimated: row.usage_estimated,
        guardrail_information: row.guardrail.as_ref().map(|guardrail| [guardrail]),
    };
    serde_json::to_string(&metadata).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_use_few_statement_sizes() {
        let sizes = |rows: usize| -> Vec<usize> {
            in_statement_sizes(&vec![(); rows], ROWS_PER_STATEMENT).iter().map(|chunk| chunk.len()).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(7), [4, 2, 1]);
        assert_eq!(sizes(2_100), [1_024, 1_024, 32, 16, 4]);
    }

    #[test]
    fn insert_statements_number_placeholders_per_backend() {
        let rows = [SpendLogRow { request_id: "r".into(), status: "success", ..Default::default() }];
        let sqlite = insert_statement(&rows, DbBackend::Sqlite, false);
        assert!(sqlite.sql.contains("VALUES (?, ?, ?"), "{}", sqlite.sql);
        assert!(sqlite.sql.ends_with("ON CONFLICT (\"request_id\") DO NOTHING"), "{}", sqlite.sql);
        assert_eq!(sqlite.values.len(), COLUMNS.len());
        let postgres = insert_statement(&rows, DbBackend::Postgres, true);
        assert!(
            postgres.sql.contains("$19, CAST($20 AS JSONB), $21, CAST($22 AS JSONB), $23)"),
            "{}",
            postgres.sql
        );
        assert!(postgres.sql.ends_with("RETURNING \"request_id\""), "{}", postgres.sql);
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let written = |time, fraction| {
            let mut text = Vec::new();
            write_time(&mut text, time, fraction);
            String::from_utf8(text).unwrap()
        };
        for time in [
            date(2026, 1, 2).and_hms_micro_opt(3, 4, 5, 6).unwrap(),
            date(2026, 1, 2).and_hms_milli_opt(3, 4, 5, 60).unwrap(),
            date(1999, 12, 31).and_hms_nano_opt(23, 59, 59, 999_999_999).unwrap(),
            date(1, 1, 1).and_hms_opt(0, 0, 0).unwrap(),
        ] {
            assert_eq!(written(time, Fraction::Micros), time.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
            assert_eq!(written(time, Fraction::Exact), time.format("%F %T%.f").to_string());
        }
        let leap = date(2016, 12, 31).and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        assert_eq!(written(leap, Fraction::Micros), "2016-12-31 23:59:59.999999");
    }

    #[test]
    fn copy_rows_escape_what_the_text_format_reserves() {
        let start = chrono::NaiveDate::from_ymd_opt(2026, 12, 7)
            .unwrap()
            .and_hms_micro_opt(23, 5, 9, 250_000)
            .unwrap();
        let row = SpendLogRow {
            request_id: "r\t1".into(),
            api_key: "back\\slash".into(),
            model: "line\nbreak\r".into(),
            spend: 0.000_001_5,
            prompt_tokens: 10,
            completion_tokens: 5,
            start_time: start,
            end_time: start + chrono::Duration::milliseconds(1_500),
            status: "success",
            ..Default::default()
        };
        let mut text = Vec::new();
        copy_row(&mut text, &row);
        let text = String::from_utf8(text).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{text:?}");
        let fields: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), COLUMNS.len(), "{text:?}");
        let field = |column: &str| fields[COLUMNS.iter().position(|c| *c == column).unwrap()];
        assert_eq!(field("request_id"), "r\\t1");
        assert_eq!(field("api_key"), "back\\\\slash");
        assert_eq!(field("model"), "line\\nbreak\\r");
        assert_eq!(field("spend"), "0.0000015");
        assert_eq!(field("total_tokens"), "15");
        assert_eq!(field("startTime"), "2026-12-07 23:05:09.250000");
        assert_eq!(field("request_duration_ms"), "1500");
        assert_eq!(field("end_user"), "\\N");
        assert_eq!(field("cache_hit"), "False");
        assert_eq!(field("request_tags"), "[]");
    }

    #[test]
    fn metadata_is_litellms_shape() {
        let row = SpendLogRow {
            key_alias: Some("svc".into()),
            team_id: Some("t".into()),
            tags: vec!["a".into()],
            cache_read_input_tokens: 4,
            error: Some(SpendLogError {
                error_code: "429".into(),
                error_class: "RateLimit".into(),
                error_message: "slow down".into(),
            }),
            ..Default::default()
        };
        let metadata: serde_json::Value = serde_json::from_str(&metadata(&row)).unwrap();
        assert_eq!(
            metadata,
            serde_json::json!({
                "user_api_key_alias": "svc",
                "user_api_key_user_id": null,
                "user_api_key_team_id": "t",
                "tags": ["a"],
                "usage_object": {"cache_read_input_tokens": 4, "cache_creation_input_tokens": 0},
                "error_information": {"error_code": "429", "error_class": "RateLimit", "error_message": "slow down"},
            })
        );
    }
}
