//! Spend reports with LiteLLM's parameters and answer shapes: `/spend/logs`, `/spend/keys`,
//! `/spend/users`, `/spend/tags`, `/global/spend`, `/global/spend/report`,
//! `/global/spend/keys`, `/global/spend/models`, `/user/daily/activity` and
//! `/team/daily/activity`.
//!
//! Anything reported by day reads the daily roll-ups (`LiteLLM_Daily*Spend`), which the
//! spend-log writer keeps in the same transaction as the logs and which retention leaves
//! alone; only request-level answers read `LiteLLM_SpendLogs`. Admins and
//! `proxy_admin_viewer` see everything; any other key sees its own user's spend (its own
//! key's, for a key without a user) where LiteLLM lets internal users look, and gets 403
//! on the global views.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use http::{Method, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_storage::{
    DailySpendFilter, DailySpendGroup, DailySpendRecord, Dimension, KeyRecord, ListQuery, RollupTable,
    SpendLogQuery, SpendLogRecord, Table, TeamRecord, UserRecord,
};

use super::{Call, db, ok};
use crate::ResponseBody;
use crate::tenancy::keys;

/// The most spend-log rows one answer carries (LiteLLM has no bound; a bound keeps a
/// careless `/spend/logs` from reading a whole table into memory). Newest rows come first.
const MAX_LOG_ROWS: u64 = 10_000;

/// The longest date range a report accepts, so a typo cannot ask for millennia of days.
const MAX_RANGE_DAYS: i64 = 3_660;

/// The routes of this module and their one method.
const ROUTES: &[&str] = &[
    "/spend/logs",
    "/spend/keys",
    "/spend/users",
    "/spend/tags",
    "/global/spend",
    "/global/spend/report",
    "/global/spend/keys",
    "/global/spend/models",
    "/user/daily/activity",
    "/team/daily/activity",
];

/// Whether this module answers `path` (the rest of `/user/` and `/team/` is not ours).
pub fn serves(path: &str) -> bool {
    path.starts_with("/spend/") || path.starts_with("/global/") || ROUTES.contains(&path)
}

pub async fn handle(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    if !ROUTES.contains(&call.path) {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("Not Found: {} {}", call.method, call.path),
        ));
    }
    if call.method != Method::GET {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!("Method Not Allowed: {} {} (use GET)", call.method, call.path),
        ));
    }
    match call.path {
        "/spend/logs" => spend_logs(call).await,
        "/spend/keys" => spend_keys(call).await,
        "/spend/users" => spend_users(call).await,
        "/spend/tags" => spend_tags(call).await,
        "/global/spend" => global_spend(call).await,
        "/global/spend/report" => global_spend_report(call).await,
        "/global/spend/keys" => global_spend_keys(call).await,
        "/global/spend/models" => global_spend_models(call).await,
        "/user/daily/activity" => user_daily_activity(call).await,
        _ => team_daily_activity(call).await,
    }
}

/// Whose spend a caller may see.
enum Scope {
    Everything,
    User(String),
    Key(String),
}

fn scope(call: &Call<'_>) -> Scope {
    if call.can_read_all() {
        return Scope::Everything;
    }
    match call.access.principal() {
        Some(principal) => match &principal.key.user_id {
            Some(user) => Scope::User(user.clone()),
            None => Scope::Key(principal.key.token.clone()),
        },
        None => Scope::Everything,
    }
}

fn forbidden(message: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorKind::Forbidden, message)
}

/// The global views are for admins and `proxy_admin_viewer`.
fn require_reader(call: &Call<'_>) -> Result<(), GatewayError> {
    if call.can_read_all() {
        return Ok(());
    }
    Err(forbidden(format!(
        "Only proxy admins and proxy_admin_viewer users can view spend across the proxy. Route={}. Your role={}",
        call.path,
        call.access.principal().map_or("unknown", |p| p.role()),
    )))
}

/// A `YYYY-MM-DD` query parameter; anything else is a 400 naming it.
fn date_param(call: &Call<'_>, name: &str) -> Result<Option<NaiveDate>, GatewayError> {
    let Some(text) = call.param(name) else { return Ok(None) };
    NaiveDate::parse_from_str(&text, "%Y-%m-%d").map(Some).map_err(|_| {
        GatewayError::bad_request(format!("{name}: '{text}' is not a date; use YYYY-MM-DD")).with_param(name)
    })
}

/// `start_date` and `end_date`, both or neither, in order and at most ten years apart.
fn date_range(call: &Call<'_>) -> Result<Option<(NaiveDate, NaiveDate)>, GatewayError> {
    match (date_param(call, "start_date")?, date_param(call, "end_date")?) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(missing_date("end_date")),
        (None, Some(_)) => Err(missing_date("start_date")),
        (Some(start), Some(end)) => {
            if end < start {
                return Err(GatewayError::bad_request("end_date: must not be before start_date")
                    .with_param("end_date"));
            }
            if (end - start).num_days() > MAX_RANGE_DAYS {
                return Err(GatewayError::bad_request(format!(
                    "end_date: the range may span at most {MAX_RANGE_DAYS} days"
                ))
                .with_param("end_date"));
            }
            Ok(Some((start, end)))
        }
    }
}

fn missing_date(name: &str) -> GatewayError {
    GatewayError::bad_request(format!("Please provide start_date and end_date ({name} is missing)"))
        .with_param(name)
}

fn required_range(call: &Call<'_>) -> Result<(NaiveDate, NaiveDate), GatewayError> {
    date_range(call)?.ok_or_else(|| missing_date("start_date"))
}

fn day(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// A whole number parameter within `range`, else `default`; anything else is a 400.
fn number_param(
    call: &Call<'_>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, GatewayError> {
    let Some(text) = call.param(name) else { return Ok(default) };
    text.parse::<u64>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
        GatewayError::bad_request(format!(
            "{name}: expected a whole number from {} to {}, got '{text}'",
            range.start(),
            range.end()
        ))
        .with_param(name)
    })
}

/// A key named by the caller: a raw `sk-` key is hashed, a hash taken as is.
fn key_param(call: &Call<'_>) -> Option<String> {
    call.param("api_key").map(|key| keys::token_of(&key))
}

/// `name` may only name the caller's own `own`, if the caller is bound to one.
fn own_only(asked: Option<&str>, own: &str, name: &str) -> Result<(), GatewayError> {
    match asked {
        Some(asked) if asked != own => {
            Err(forbidden(format!("{name}={asked} is not yours; you may only view your own spend"))
                .with_param(name))
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// /spend/logs

async fn spend_logs(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let mut query = SpendLogQuery {
        api_key: key_param(call),
        user: call.param("user_id"),
        request_id: call.param("request_id"),
        limit: MAX_LOG_ROWS,
        ..SpendLogQuery::default()
    };
    match scope(call) {
        Scope::Everything => {}
        Scope::User(user) => {
            own_only(query.user.as_deref(), &user, "user_id")?;
            query.user = Some(user);
        }
        Scope::Key(token) => {
            own_only(query.api_key.as_deref(), &token, "api_key")?;
            query.api_key = Some(token);
        }
    }
    let summarize = match call.param("summarize").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(GatewayError::bad_request(format!(
                "summarize: expected true or false, got '{other}'"
            ))
            .with_param("summarize"));
        }
    };
    let store = &call.tenancy.store;
    let Some((start, end)) = date_range(call)? else {
        return ok(&store.spend_logs(&query).await.map_err(db)?);
    };
    if !summarize || query.request_id.is_some() {
        query.from = start.and_hms_opt(0, 0, 0);
        query.until = end.succ_opt().and_then(|next| next.and_hms_opt(0, 0, 0));
        let logs = store.spend_logs(&query).await.map_err(db)?;
        if !summarize {
            return ok(&logs);
        }
        return ok(&summarized_logs(logs.iter().map(log_group).collect(), start, end));
    }
    // By day, per key, user and model: the user roll-up holds every request.
    let filter = DailySpendFilter {
        start_date: Some(day(start)),
        end_date: Some(day(end)),
        entities: query.user.map(|user| vec![user]),
        api_keys: query.api_key.map(|key| vec![key]),
        ..DailySpendFilter::default()
    };
    let by = [Dimension::Date, Dimension::ApiKey, Dimension::Entity, Dimension::Model];
    let groups = store.daily_spend_totals(RollupTable::Users, &filter, &by).await.map_err(db)?;
    ok(&summarized_logs(groups, start, end))
}

fn log_group(log: &SpendLogRecord) -> DailySpendGroup {
    DailySpendGroup {
        entity_id: log.user.clone(),
        date: Some(log.start_time.format("%Y-%m-%d").to_string()),
        api_key: Some(log.api_key.clone()),
        model: Some(log.model.clone()),
        spend: log.spend,
        api_requests: 1,
        ..DailySpendGroup::default()
    }
}

/// LiteLLM's summarized `/spend/logs`: per day, the day's spend, spend per key (each key
/// hash is a field of its own), per user and per model; every day of the range is listed.
fn summarized_logs(groups: Vec<DailySpendGroup>, start: NaiveDate, end: NaiveDate) -> Vec<Value> {
    if groups.is_empty() {
        return Vec::new();
    }
    let mut days: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for date in start.iter_days().take_while(|date| *date <= end) {
        let mut entry = Map::new();
        entry.insert("startTime".into(), json!(day(date)));
        entry.insert("spend".into(), json!(0.0));
        entry.insert("users".into(), json!({}));
        entry.insert("models".into(), json!({}));
        days.insert(day(date), entry);
    }
    for group in groups {
        let Some(entry) = group.date.as_ref().and_then(|date| days.get_mut(date)) else { continue };
        add_to(entry, "spend", group.spend);
        if let Some(key) = &group.api_key {
            add_to(entry, key, group.spend);
        }
        if let Some(Value::Object(users)) = entry.get_mut("users") {
            add_to(users, group.entity_id.as_deref().unwrap_or(""), group.spend);
        }
        if let Some(Value::Object(models)) = entry.get_mut("models") {
            add_to(models, group.model.as_deref().unwrap_or(""), group.spend);
        }
    }
    days.into_values().map(Value::Object).collect()
}

fn add_to(map: &mut Map<String, Value>, field: &str, amount: f64) {
    let before = map.get(field).and_then(Value::as_f64).unwrap_or(0.0);
    map.insert(field.to_owned(), json!(before + amount));
}

// ---------------------------------------------------------------------------------------
// /spend/keys, /spend/users, /spend/tags

async fn spend_keys(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let query = match scope(call) {
        Scope::Everything => ListQuery::default(),
        Scope::User(user) => ListQuery { filters: vec![("user_id", user)], ..ListQuery::default() },
        Scope::Key(token) => ListQuery { filters: vec![("token", token)], ..ListQuery::default() },
    };
    let mut keys: Vec<KeyRecord> = call.tenancy.store.list(Table::Keys, &query).await.map_err(db)?;
    keys.sort_by(|a, b| b.spend.total_cmp(&a.spend));
    ok(&keys)
}

async fn spend_users(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let asked = call.param("user_id");
    let user_id = match scope(call) {
        Scope::Everything => asked,
        Scope::User(user) => {
            own_only(asked.as_deref(), &user, "user_id")?;
            Some(user)
        }
        Scope::Key(_) => return Err(forbidden("this key belongs to no user; ask an admin for /spend/users")),
    };
    let store = &call.tenancy.store;
    let mut users: Vec<UserRecord> = match user_id {
        Some(id) => store.get::<UserRecord>(Table::Users, &id).await.map_err(db)?.into_iter().collect(),
        None => store.list(Table::Users, &ListQuery::default()).await.map_err(db)?,
    };
    users.sort_by(|a, b| b.spend.total_cmp(&a.spend));
    ok(&users)
}

async fn spend_tags(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    require_reader(call)?;
    let range = date_range(call)?;
    let filter = DailySpendFilter {
        start_date: range.map(|(start, _)| day(start)),
        end_date: range.map(|(_, end)| day(end)),
        ..DailySpendFilter::default()
    };
    let mut tags = call
        .tenancy
        .store
        .daily_spend_totals(RollupTable::Tags, &filter, &[Dimension::Entity])
        .await
        .map_err(db)?;
    tags.sort_by(|a, b| b.spend.total_cmp(&a.spend));
    let rows: Vec<Value> = tags
        .into_iter()
        .map(|tag| {
            json!({"individual_request_tag": tag.entity_id, "log_count": tag.api_requests, "total_spend": tag.spend})
        })
        .collect();
    ok(&rows)
}

// ---------------------------------------------------------------------------------------
// /global/spend, /global/spend/keys, /global/spend/models

async fn global_spend(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    require_reader(call)?;
    // LiteLLM's `MonthlyGlobalSpend`: the current calendar month, UTC.
    let today = today();
    let month_start = today.with_day(1).unwrap_or(today);
    let filter = DailySpendFilter { start_date: Some(day(month_start)), ..DailySpendFilter::default() };
    let totals = call.tenancy.store.daily_spend_totals(RollupTable::Users, &filter, &[]).await.map_err(db)?;
    let spend: f64 = totals.iter().map(|total| total.spend).sum();
    ok(&json!({"spend": spend, "max_budget": 0.0}))
}

/// The roll-up rows a top-N view reads: the last 30 days for readers (LiteLLM's
/// `Last30d…` views), everything of the caller's own otherwise, with its default limit.
fn top_filter(call: &Call<'_>) -> (DailySpendFilter, Option<u64>) {
    match scope(call) {
        Scope::Everything => {
            let since = today() - chrono::Duration::days(30);
            (DailySpendFilter { start_date: Some(day(since)), ..DailySpendFilter::default() }, None)
        }
        Scope::User(user) => {
            (DailySpendFilter { entities: Some(vec![user]), ..DailySpendFilter::default() }, Some(10))
        }
        Scope::Key(token) => {
            (DailySpendFilter { api_keys: Some(vec![token]), ..DailySpendFilter::default() }, Some(10))
        }
    }
}

async fn global_spend_keys(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let (filter, default_limit) = top_filter(call);
    let limit = match call.param("limit") {
        Some(_) => Some(number_param(call, "limit", 10, 1..=u64::from(u32::MAX))?),
        None => default_limit,
    };
    let store = &call.tenancy.store;
    let mut groups =
        store.daily_spend_totals(RollupTable::Users, &filter, &[Dimension::ApiKey]).await.map_err(db)?;
    groups.sort_by(|a, b| b.spend.total_cmp(&a.spend));
    if let Some(limit) = limit {
        groups.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    let tokens: Vec<String> = groups.iter().filter_map(|group| group.api_key.clone()).collect();
    let keys = keys_by_token(call, tokens).await?;
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            let token = group.api_key.unwrap_or_default();
            let key = keys.get(&token);
            json!({
                "api_key": token,
                "total_spend": group.spend,
                "team_id": key.and_then(|k| k.team_id.clone()).unwrap_or_default(),
                "key_alias": key.and_then(|k| k.key_alias.clone()).unwrap_or_default(),
                "key_name": key.and_then(|k| k.key_name.clone()).unwrap_or_else(|| token.clone()),
                "last_refreshed_at": null,
            })
        })
        .collect();
    ok(&rows)
}

async fn global_spend_models(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let (filter, _) = top_filter(call);
    let limit = number_param(call, "limit", 10, 1..=u64::from(u32::MAX))?;
    let store = &call.tenancy.store;
    let mut groups =
        store.daily_spend_totals(RollupTable::Users, &filter, &[Dimension::Model]).await.map_err(db)?;
    groups.sort_by(|a, b| b.spend.total_cmp(&a.spend));
    groups.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            json!({
                "model": group.model.unwrap_or_default(),
                "total_spend": group.spend,
                "total_tokens": group.prompt_tokens + group.completion_tokens,
            })
        })
        .collect();
    ok(&rows)
}

async fn keys_by_token(
    call: &Call<'_>,
    tokens: Vec<String>,
) -> Result<HashMap<String, KeyRecord>, GatewayError> {
    if tokens.is_empty() {
        return Ok(HashMap::new());
    }
    let query = ListQuery { any_of: Some(("token", tokens)), ..ListQuery::default() };
    let keys: Vec<KeyRecord> = call.tenancy.store.list(Table::Keys, &query).await.map_err(db)?;
    Ok(keys.into_iter().map(|key| (key.token.clone(), key)).collect())
}

async fn teams_by_id(call: &Call<'_>, ids: Vec<String>) -> Result<HashMap<String, TeamRecord>, GatewayError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let query = ListQuery { any_of: Some(("team_id", ids)), ..ListQuery::default() };
    let teams: Vec<TeamRecord> = call.tenancy.store.list(Table::Teams, &query).await.map_err(db)?;
    Ok(teams.into_iter().map(|team| (team.team_id.clone(), team)).collect())
}

// ---------------------------------------------------------------------------------------
// /global/spend/report

async fn global_spend_report(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    require_reader(call)?;
    let (start, end) = required_range(call)?;
    for unsupported in ["team_id", "customer_id"] {
        if call.param(unsupported).is_some() {
            return Err(GatewayError::bad_request(format!(
                "{unsupported}: filtering /global/spend/report by team and customer is not supported; use group_by"
            ))
            .with_param(unsupported));
        }
    }
    let range = DailySpendFilter {
        start_date: Some(day(start)),
        end_date: Some(day(end)),
        ..DailySpendFilter::default()
    };
    // LiteLLM answers a key or user filter per key, whatever `group_by` says.
    if let Some(key) = key_param(call) {
        return ok(&by_api_key(call, DailySpendFilter { api_keys: Some(vec![key]), ..range }).await?);
    }
    if let Some(user) = call.param("internal_user_id") {
        return ok(&by_api_key(call, DailySpendFilter { entities: Some(vec![user]), ..range }).await?);
    }
    match call.param("group_by").as_deref().unwrap_or("team") {
        "team" => ok(&by_day_and_entity(call, RollupTable::Teams, &range).await?),
        "customer" => ok(&by_day_and_entity(call, RollupTable::EndUsers, &range).await?),
        "api_key" => ok(&by_api_key(call, range).await?),
        other => Err(GatewayError::bad_request(format!(
            "group_by: expected team, customer or api_key, got '{other}'"
        ))
        .with_param("group_by")),
    }
}

/// Per key, its cost and tokens, with a line per model; the most expensive key first.
async fn by_api_key(call: &Call<'_>, filter: DailySpendFilter) -> Result<Vec<Value>, GatewayError> {
    let groups = call
        .tenancy
        .store
        .daily_spend_totals(RollupTable::Users, &filter, &[Dimension::ApiKey, Dimension::Model])
        .await
        .map_err(db)?;
    let mut per_key: BTreeMap<String, (f64, i64, i64, Vec<Value>)> = BTreeMap::new();
    for group in groups {
        let entry = per_key.entry(group.api_key.clone().unwrap_or_default()).or_default();
        entry.0 += group.spend;
        entry.1 += group.prompt_tokens;
        entry.2 += group.completion_tokens;
        entry.3.push(json!({
            "model": group.model,
            "total_cost": group.spend,
            "total_input_tokens": group.prompt_tokens,
            "total_output_tokens": group.completion_tokens,
        }));
    }
    let mut rows: Vec<(f64, Value)> = per_key
        .into_iter()
        .map(|(api_key, (cost, input, output, models))| {
            let row = json!({
                "api_key": api_key,
                "total_cost": cost,
                "total_input_tokens": input,
                "total_output_tokens": output,
                "model_details": models,
            });
            (cost, row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// Per day, per team (or customer), its spend and a line per model and key. Requests with
/// no team (customer) are what the user roll-up holds beyond the team (customer) roll-up,
/// and appear as LiteLLM shows them: "Unassigned Team", or a null customer.
async fn by_day_and_entity(
    call: &Call<'_>,
    table: RollupTable,
    range: &DailySpendFilter,
) -> Result<Vec<Value>, GatewayError> {
    let store = &call.tenancy.store;
    let lines = [Dimension::Date, Dimension::Model, Dimension::ApiKey];
    let by_entity = [Dimension::Date, Dimension::Entity, Dimension::Model, Dimension::ApiKey];
    let assigned = store.daily_spend_totals(table, range, &by_entity).await.map_err(db)?;
    let everything = store.daily_spend_totals(RollupTable::Users, range, &lines).await.map_err(db)?;

    let line_key = |g: &DailySpendGroup| (g.date.clone(), g.model.clone(), g.api_key.clone());
    let mut unassigned: BTreeMap<_, DailySpendGroup> =
        everything.into_iter().map(|group| (line_key(&group), group)).collect();
    for group in &assigned {
        if let Some(rest) = unassigned.get_mut(&line_key(group)) {
            rest.spend -= group.spend;
            rest.prompt_tokens -= group.prompt_tokens;
            rest.completion_tokens -= group.completion_tokens;
            rest.api_requests -= group.api_requests;
        }
    }
    let teams = if table == RollupTable::Teams {
        teams_by_id(call, assigned.iter().filter_map(|g| g.entity_id.clone()).collect()).await?
    } else {
        HashMap::new()
    };
    let name_of = |entity: Option<&str>| -> Value {
        match (table, entity) {
            (RollupTable::Teams, Some(id)) => {
                json!(teams.get(id).and_then(|team| team.team_alias.clone()).unwrap_or_else(|| id.to_owned()))
            }
            (RollupTable::Teams, None) => json!("Unassigned Team"),
            (_, entity) => json!(entity),
        }
    };
    let mut days: BTreeMap<String, BTreeMap<String, EntityDay>> = BTreeMap::new();
    let leftovers = unassigned.into_values().filter(|rest| rest.api_requests > 0).map(|mut rest| {
        rest.entity_id = None;
        rest
    });
    for group in assigned.into_iter().chain(leftovers) {
        let name = name_of(group.entity_id.as_deref());
        let entry = days
            .entry(group.date.clone().unwrap_or_default())
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| EntityDay { name, total_spend: 0.0, lines: Vec::new() });
        entry.total_spend += group.spend;
        entry.lines.push(json!({
            "model": group.model,
            "api_key": group.api_key,
            "spend": group.spend,
            "total_tokens": group.prompt_tokens + group.completion_tokens,
        }));
    }
    let (list_field, name_field) =
        if table == RollupTable::Teams { ("teams", "team_name") } else { ("customers", "customer") };
    Ok(days
        .into_iter()
        .map(|(date, entities)| {
            let entities: Vec<Value> = entities
                .into_values()
                .map(|day| json!({name_field: day.name, "total_spend": day.total_spend, "metadata": day.lines}))
                .collect();
            json!({"group_by_day": format!("{date}T00:00:00+00:00"), list_field: entities})
        })
        .collect())
}

/// One team's (customer's) day in `/global/spend/report`: its name, spend and lines.
struct EntityDay {
    name: Value,
    total_spend: f64,
    lines: Vec<Value>,
}

// ---------------------------------------------------------------------------------------
// /user/daily/activity, /team/daily/activity

async fn user_daily_activity(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let (start, end) = required_range(call)?;
    let mut filter = DailySpendFilter {
        start_date: Some(day(start)),
        end_date: Some(day(end)),
        entities: call.param("user_id").map(|user| vec![user]),
        api_keys: key_param(call).map(|key| vec![key]),
        model: call.param("model"),
        ..DailySpendFilter::default()
    };
    match scope(call) {
        Scope::Everything => {}
        Scope::User(user) => {
            own_only(call.param("user_id").as_deref(), &user, "user_id")?;
            filter.entities = Some(vec![user]);
        }
        Scope::Key(token) => {
            own_only(key_param(call).as_deref(), &token, "api_key")?;
            filter.api_keys = Some(vec![token]);
        }
    }
    let page = number_param(call, "page", 1, 1..=u64::from(u32::MAX))?;
    let page_size = number_param(call, "page_size", 50, 1..=1_000)?;
    ok(&activity(call, RollupTable::Users, &filter, page, page_size).await?)
}

async fn team_daily_activity(call: &Call<'_>) -> Result<Response<ResponseBody>, GatewayError> {
    let (start, end) = required_range(call)?;
    let split = |name: &str| -> Option<Vec<String>> {
        call.param(name)
            .map(|ids| ids.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned).collect())
    };
    let mut team_ids = split("team_ids");
    if !call.can_read_all()
        && let Some(principal) = call.access.principal()
    {
        // A member sees the teams its user belongs to and its key's own team.
        let mut own: Vec<String> =
            principal.user.as_ref().map(|user| user.teams.0.clone()).unwrap_or_default();
        own.extend(principal.key.team_id.clone());
        if let Some(asked) = &team_ids
            && let Some(other) = asked.iter().find(|id| !own.contains(id))
        {
            return Err(forbidden(format!(
                "User does not belong to Team={other}. Call `/user/info` to see the user's teams"
            ))
            .with_param("team_ids"));
        }
        team_ids.get_or_insert(own);
    }
    let filter = DailySpendFilter {
        start_date: Some(day(start)),
        end_date: Some(day(end)),
        entities: team_ids,
        exclude_entities: split("exclude_team_ids").unwrap_or_default(),
        api_keys: key_param(call).map(|key| vec![key]),
        model: call.param("model"),
    };
    let page = number_param(call, "page", 1, 1..=u64::from(u32::MAX))?;
    let page_size = number_param(call, "page_size", 10, 1..=1_000)?;
    ok(&activity(call, RollupTable::Teams, &filter, page, page_size).await?)
}

/// LiteLLM's `SpendMetrics`.
#[derive(Clone, Debug, Default, Serialize)]
struct SpendMetrics {
    spend: f64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cache_read_input_tokens: i64,
    cache_creation_input_tokens: i64,
    total_tokens: i64,
    successful_requests: i64,
    failed_requests: i64,
    api_requests: i64,
}

impl SpendMetrics {
    fn add(&mut self, row: &DailySpendRecord) {
        self.spend += row.spend;
        self.prompt_tokens += row.prompt_tokens;
        self.completion_tokens += row.completion_tokens;
        self.cache_read_input_tokens += row.cache_read_input_tokens;
        self.cache_creation_input_tokens += row.cache_creation_input_tokens;
        self.total_tokens += row.prompt_tokens + row.completion_tokens;
        self.successful_requests += row.successful_requests;
        self.failed_requests += row.failed_requests;
        self.api_requests += row.api_requests;
    }
}

#[derive(Debug, Default, Serialize)]
struct KeyMetric {
    metrics: SpendMetrics,
    metadata: Value,
}

#[derive(Debug, Default, Serialize)]
struct MetricWithMetadata {
    metrics: SpendMetrics,
    metadata: Map<String, Value>,
    api_key_breakdown: BTreeMap<String, KeyMetric>,
}

impl MetricWithMetadata {
    fn add(&mut self, row: &DailySpendRecord, key_metadata: &Value) {
        self.metrics.add(row);
        let key = self
            .api_key_breakdown
            .entry(row.api_key.clone())
            .or_insert_with(|| KeyMetric { metadata: key_metadata.clone(), ..KeyMetric::default() });
        key.metrics.add(row);
    }
}

/// LiteLLM's `BreakdownMetrics` (MCP servers and endpoints stay empty: Tollgate records
/// neither yet).
#[derive(Debug, Default, Serialize)]
struct Breakdown {
    mcp_servers: BTreeMap<String, MetricWithMetadata>,
    models: BTreeMap<String, MetricWithMetadata>,
    model_groups: BTreeMap<String, MetricWithMetadata>,
    providers: BTreeMap<String, MetricWithMetadata>,
    endpoints: BTreeMap<String, MetricWithMetadata>,
    api_keys: BTreeMap<String, KeyMetric>,
    entities: BTreeMap<String, MetricWithMetadata>,
}

#[derive(Debug, Default, Serialize)]
struct DailySpendData {
    date: String,
    metrics: SpendMetrics,
    breakdown: Breakdown,
}

/// LiteLLM's `SpendAnalyticsPaginatedResponse`: a page of roll-up rows folded by day (newest
/// first) with breakdowns by model, model group, provider, key and entity. The metadata
/// totals cover the whole filtered range, not just the page.
async fn activity(
    call: &Call<'_>,
    table: RollupTable,
    filter: &DailySpendFilter,
    page: u64,
    page_size: u64,
) -> Result<Value, GatewayError> {
    let store = &call.tenancy.store;
    let total_rows = store.daily_spend_count(table, filter).await.map_err(db)?;
    let rows = store
        .daily_spend(table, filter, (page - 1).saturating_mul(page_size), page_size)
        .await
        .map_err(db)?;
    let totals = store.daily_spend_totals(table, filter, &[]).await.map_err(db)?;

    let mut tokens: Vec<String> = rows.iter().map(|row| row.api_key.clone()).collect();
    tokens.sort();
    tokens.dedup();
    let keys = keys_by_token(call, tokens).await?;
    let key_metadata = |token: &str| -> Value {
        let key = keys.get(token);
        json!({
            "key_alias": key.and_then(|k| k.key_alias.clone()),
            "team_id": key.and_then(|k| k.team_id.clone()),
            "user_id": key.and_then(|k| k.user_id.clone()),
            "key_exists": key.is_some(),
        })
    };
    let teams = if table == RollupTable::Teams {
        let mut ids: Vec<String> = rows.iter().filter_map(|row| row.entity_id.clone()).collect();
        ids.sort();
        ids.dedup();
        teams_by_id(call, ids).await?
    } else {
        HashMap::new()
    };

    let mut days: BTreeMap<String, DailySpendData> = BTreeMap::new();
    for row in &rows {
        let metadata = key_metadata(&row.api_key);
        let data = days
            .entry(row.date.clone())
            .or_insert_with(|| DailySpendData { date: row.date.clone(), ..DailySpendData::default() });
        data.metrics.add(row);
        let breakdown = &mut data.breakdown;
        let model = row.model.clone().unwrap_or_default();
        if !model.is_empty() {
            breakdown.models.entry(model.clone()).or_default().add(row, &metadata);
        }
        let group = row.model_group.clone().filter(|group| !group.is_empty()).unwrap_or(model);
        if !group.is_empty() {
            breakdown.model_groups.entry(group).or_default().add(row, &metadata);
        }
        let provider =
            row.custom_llm_provider.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "unknown".to_owned());
        breakdown.providers.entry(provider).or_default().add(row, &metadata);
        let key = breakdown
            .api_keys
            .entry(row.api_key.clone())
            .or_insert_with(|| KeyMetric { metadata: metadata.clone(), ..KeyMetric::default() });
        key.metrics.add(row);
        let entity =
            row.entity_id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| "Unassigned".to_owned());
        let bucket = breakdown.entities.entry(entity.clone()).or_default();
        if let Some(team) = teams.get(&entity) {
            bucket.metadata.insert("team_alias".into(), json!(team.team_alias));
        }
        bucket.add(row, &metadata);
    }
    let total = totals.first().cloned().unwrap_or_default();
    let results: Vec<DailySpendData> = days.into_values().rev().collect();
    Ok(json!({
        "results": results,
        "metadata": {
            "total_spend": total.spend,
            "total_prompt_tokens": total.prompt_tokens,
            "total_completion_tokens": total.completion_tokens,
            "total_tokens": total.prompt_tokens + total.completion_tokens,
            "total_api_requests": total.api_requests,
            "total_successful_requests": total.successful_requests,
            "total_failed_requests": total.failed_requests,
            "total_cache_read_input_tokens": total.cache_read_input_tokens,
            "total_cache_creation_input_tokens": total.cache_creation_input_tokens,
            "page": page,
            "total_pages": total_rows.div_ceil(page_size).max(1),
            "has_more": page.saturating_mul(page_size) < total_rows,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(date: &str, key: &str, user: &str, model: &str, spend: f64) -> DailySpendGroup {
        DailySpendGroup {
            entity_id: Some(user.into()),
            date: Some(date.into()),
            api_key: Some(key.into()),
            model: Some(model.into()),
            spend,
            api_requests: 1,
            ..DailySpendGroup::default()
        }
    }

    #[test]
    fn summarized_logs_list_every_day_with_spend_per_key_user_and_model() {
        let start = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let end = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let days = summarized_logs(
            vec![
                group("2026-11-20", "k1", "alice", "gpt-4o", 1.0),
                group("2026-11-20", "k2", "", "gpt-4o", 2.0),
                group("2026-11-22", "k1", "alice", "claude", 4.0),
            ],
            start,
            end,
        );
        assert_eq!(days.len(), 3, "every day of the range");
        assert_eq!(days[0]["startTime"], "2026-11-20");
        assert_eq!(days[0]["spend"], 3.0);
        assert_eq!(days[0]["k1"], 1.0);
        assert_eq!(days[0]["users"], json!({"alice": 1.0, "": 2.0}));
        assert_eq!(days[0]["models"], json!({"gpt-4o": 3.0}));
        assert_eq!(days[1], json!({"startTime": "2026-11-21", "spend": 0.0, "users": {}, "models": {}}));
        assert_eq!(days[2]["models"], json!({"claude": 4.0}));
        assert!(summarized_logs(Vec::new(), start, end).is_empty(), "no spend, no days (as LiteLLM)");
    }

    #[test]
    fn routes_of_user_and_team_stay_with_their_modules() {
        assert!(serves("/user/daily/activity"));
        assert!(serves("/team/daily/activity"));
        assert!(serves("/global/spend") && serves("/spend/logs") && serves("/spend/unknown"));
        assert!(!serves("/user/info") && !serves("/team/list") && !serves("/key/info"));
    }
}
