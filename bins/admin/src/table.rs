//! Plain-text tables: the columns worth seeing per entity, and a small aligned formatter.

use serde_json::Value;

/// The kinds of record the management API returns, each shown with its own columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Key,
    User,
    Team,
    Org,
    Customer,
    Budget,
}

impl Entity {
    /// The plural, for "no keys".
    pub fn plural(self) -> &'static str {
        match self {
            Entity::Key => "keys",
            Entity::User => "users",
            Entity::Team => "teams",
            Entity::Org => "organizations",
            Entity::Customer => "customers",
            Entity::Budget => "budgets",
        }
    }

    /// Column names are the JSON field names, so a table header tells the user exactly
    /// which field to pass to `--set` or look for in `--json`.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Entity::Key => &[
                "key_name",
                "key_alias",
                "team_id",
                "user_id",
                "models",
                "spend",
                "max_budget",
                "expires",
                "blocked",
            ],
            Entity::User => &["user_id", "user_email", "user_role", "spend", "max_budget"],
            Entity::Team => &["team_id", "team_alias", "models", "spend", "max_budget", "blocked"],
            Entity::Org => &["organization_id", "organization_alias", "spend"],
            Entity::Customer => &["user_id", "alias", "spend", "blocked"],
            Entity::Budget => &["budget_id", "max_budget", "rpm_limit", "tpm_limit", "budget_duration"],
        }
    }
}

/// A record's cells in `entity`'s column order.
pub fn row(entity: Entity, record: &Value) -> Vec<String> {
    entity.columns().iter().map(|column| cell(record.get(*column).unwrap_or(&Value::Null))).collect()
}

/// One value as a cell: absent or null as `-`, lists comma-joined, anything nested as
/// compact JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) if text.is_empty() => "-".to_owned(),
        Value::String(text) => text.replace(['\n', '\t'], " "),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => value.to_string(),
    }
}

/// Aligns `rows` under `headers`, two spaces between columns, with no trailing spaces.
/// Rows shorter than the header get empty cells rather than shifting columns.
pub fn format(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
    for line in std::iter::once(&header).chain(rows) {
        let mut text = String::new();
        for (index, width) in widths.iter().enumerate() {
            let cell = line.get(index).map_or("", String::as_str);
            if index > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|cell| (*cell).to_owned()).collect()
    }

    #[test]
    fn columns_align_to_the_widest_cell() {
        let table = format(
            &["id", "alias", "spend"],
            &[strings(&["t1", "search-team", "0.5"]), strings(&["team-two", "-", "12.25"])],
        );
        assert_eq!(
            table,
            "id        alias        spend\n\
             t1        search-team  0.5\n\
             team-two  -            12.25\n"
        );
    }

    #[test]
    fn no_rows_still_prints_the_header_and_no_trailing_spaces() {
        assert_eq!(format(&["a", "b"], &[]), "a  b\n");
        let table = format(&["name", "x"], &[strings(&["n", ""])]);
        assert_eq!(table, "name  x\nn\n");
        assert!(table.lines().all(|line| !line.ends_with(' ')));
    }

    #[test]
    fn short_rows_keep_their_columns_and_wide_characters_count_once() {
        let table = format(&["a", "b", "c"], &[strings(&["é", "x"]), strings(&["1", "2", "3"])]);
        assert_eq!(table, "a  b  c\né  x\n1  2  3\n");
    }

    #[test]
    fn cells_render_json_compactly() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!(["gpt-4o", "claude"])), "gpt-4o,claude");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(cell(&json!(5.0)), "5.0");
        assert_eq!(cell(&json!(42)), "42");
        assert_eq!(cell(&json!({"k": "v"})), "{\"k\":\"v\"}");
        assert_eq!(cell(&json!("two\nlines")), "two lines");
    }

    #[test]
    fn rows_follow_the_entity_columns() {
        let key = json!({
            "key_name": "sk-...abcd", "key_alias": "a1", "team_id": "t1", "user_id": null,
            "models": ["gpt-4o"], "spend": 0.0, "max_budget": 5.0, "blocked": true, "token": "secret"
        });
        assert_eq!(
            row(Entity::Key, &key),
            strings(&["sk-...abcd", "a1", "t1", "-", "gpt-4o", "0.0", "5.0", "-", "true"])
        );
        let budget = json!({"budget_id": "b1", "max_budget": 3.0, "rpm_limit": 10});
        assert_eq!(row(Entity::Budget, &budget), strings(&["b1", "3.0", "10", "-", "-"]));
        for entity in [Entity::Key, Entity::User, Entity::Team, Entity::Org, Entity::Customer, Entity::Budget]
        {
            assert_eq!(row(entity, &json!({})).len(), entity.columns().len());
        }
    }
}
