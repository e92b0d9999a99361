//! How each command shows the gateway's answer when `--json` is not given.

use serde_json::Value;

use crate::table::{self, Entity};

/// What to print from a successful answer.
#[derive(Debug, Clone)]
pub enum Output {
    Rows(Rows),
    /// A confirmation; the answer itself adds nothing worth a table (deletes).
    Message(String),
}

/// Records of one entity found at a JSON pointer of the answer.
#[derive(Debug, Clone)]
pub struct Rows {
    entity: Entity,
    /// JSON pointer to a record or a list of records; "" is the whole answer.
    at: &'static str,
    /// Print the answer's top-level `key` first: the only time a raw key is ever shown.
    reveal_key: bool,
    paging: Option<Paging>,
}

/// The field names a paged list uses; keys and users name them differently.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub page: &'static str,
    pub pages: &'static str,
    pub total: &'static str,
}

impl Output {
    pub fn rows(entity: Entity) -> Self {
        Output::Rows(Rows { entity, at: "", reveal_key: false, paging: None })
    }

    pub fn rows_at(entity: Entity, at: &'static str) -> Self {
        Output::Rows(Rows { entity, at, reveal_key: false, paging: None })
    }

    pub fn new_key(entity: Entity) -> Self {
        Output::Rows(Rows { entity, at: "", reveal_key: true, paging: None })
    }

    pub fn paged(entity: Entity, at: &'static str, paging: Paging) -> Self {
        Output::Rows(Rows { entity, at, reveal_key: false, paging: Some(paging) })
    }

    pub fn message(text: impl Into<String>) -> Self {
        Output::Message(text.into())
    }

    /// The text to print for `answer`.
    pub fn render(&self, answer: &Value) -> String {
        let rows = match self {
            Output::Message(text) => return format!("{text}\n"),
            Output::Rows(rows) => rows,
        };
        let records: Vec<&Value> = match answer.pointer(rows.at) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(Value::Null) => Vec::new(),
            Some(record) => vec![record],
            // An answer of a shape this build does not know: show it rather than nothing.
            None => return format!("{}\n", pretty(answer)),
        };
        let mut out = String::new();
        if rows.reveal_key
            && let Some(key) = answer.get("key").and_then(Value::as_str)
        {
            out.push_str(&format!("key: {key}\n"));
            out.push_str("(the key is shown only now; store it somewhere safe)\n\n");
        }
        if records.is_empty() {
            // A header over nothing reads like a glitch; say it plainly.
            out.push_str(&format!("no {}\n", rows.entity.plural()));
            return out;
        }
        let cells: Vec<Vec<String>> = records.iter().map(|record| table::row(rows.entity, record)).collect();
        out.push_str(&table::format(rows.entity.columns(), &cells));
        if let Some(paging) = rows.paging {
            let field = |name| answer.get(name).map_or_else(|| "?".to_owned(), table::cell);
            out.push_str(&format!(
                "page {} of {} ({} total)\n",
                field(paging.page),
                field(paging.pages),
                field(paging.total)
            ));
        }
        out
    }
}

pub fn pretty(value: &Value) -> String {
    // Serialising a Value cannot fail; the fallback only keeps this infallible.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn new_keys_are_shown_once_above_their_row() {
        let answer = json!({"key": "sk-abc", "key_name": "sk-...abc", "key_alias": "a1", "spend": 0.0});
        let text = Output::new_key(Entity::Key).render(&answer);
        assert!(text.starts_with("key: sk-abc\n"), "{text}");
        assert!(text.contains("key_name"));
        assert!(text.lines().any(|line| line.starts_with("sk-...abc") && line.contains("a1")), "{text}");
    }

    #[test]
    fn nested_lists_and_paging() {
        let answer = json!({"keys": [{"key_alias": "a1"}, {"key_alias": "a2"}], "total_count": 2, "current_page": 1, "total_pages": 1});
        let paging = Paging { page: "current_page", pages: "total_pages", total: "total_count" };
        let text = Output::paged(Entity::Key, "/keys", paging).render(&answer);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.ends_with("page 1 of 1 (2 total)\n"), "{text}");
    }

    #[test]
    fn empty_lists_say_so() {
        let paging = Paging { page: "page", pages: "total_pages", total: "total" };
        let answer = json!({"users": [], "page": 1, "total_pages": 0, "total": 0});
        assert_eq!(Output::paged(Entity::User, "/users", paging).render(&answer), "no users\n");
        assert_eq!(Output::rows(Entity::Budget).render(&json!([])), "no budgets\n");
    }

    #[test]
    fn unknown_shapes_fall_back_to_json_and_messages_print_as_is() {
        let answer = json!({"unexpected": true});
        assert_eq!(
            Output::rows_at(Entity::Team, "/team_info").render(&answer),
            format!("{}\n", pretty(&answer))
        );
        assert_eq!(Output::message("deleted keys sk-1").render(&answer), "deleted keys sk-1\n");
    }
}
