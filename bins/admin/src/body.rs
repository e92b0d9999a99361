//! Request bodies from typed flags, plus the `--set field=value` escape hatch and the
//! argument parsers clap needs for JSON-valued flags.

use serde_json::{Map, Value};

/// A JSON object under construction. Flags the user did not give stay out of it, because the
/// gateway treats a present `null` as "clear this field".
#[derive(Debug, Default)]
pub struct Body(Map<String, Value>);

impl Body {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` when the flag was given.
    pub fn opt(mut self, name: &str, value: Option<impl Into<Value>>) -> Self {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), value.into());
        }
        self
    }

    /// Adds a value that is always sent (identifiers).
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    /// Adds a list flag; an empty list means the flag was not given, not "no models".
    /// Clearing a list is what `--set models=[]` is for.
    pub fn list(mut self, name: &str, values: Vec<String>) -> Self {
        if !values.is_empty() {
            self.0.insert(name.to_owned(), Value::from(values));
        }
        self
    }

    /// Applies `--set` pairs last, so they win over the typed flags.
    pub fn overrides(mut self, pairs: Vec<(String, Value)>) -> Self {
        self.0.extend(pairs);
        self
    }

    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}

/// Parses `field=value` for `--set`. The value is JSON when it parses as JSON (numbers,
/// booleans, lists, objects, `null`), otherwise the text itself, so `--set key_alias=prod`
/// needs no quoting gymnastics.
pub fn parse_set(arg: &str) -> Result<(String, Value), String> {
    let Some((name, raw)) = arg.split_once('=') else {
        return Err(format!("expected field=value, got '{arg}'"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("missing field name in '{arg}'"));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    Ok((name.to_owned(), value))
}

/// Parses a flag that must hold a JSON object, such as `--metadata`.
pub fn parse_object(arg: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(arg) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("expected a JSON object, e.g. '{\"team\":\"search\"}'".to_owned()),
        Err(error) => Err(format!("not valid JSON: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_values_parse_as_json_when_they_can() {
        assert_eq!(parse_set("max_budget=10.5"), Ok(("max_budget".to_owned(), json!(10.5))));
        assert_eq!(parse_set("blocked=true"), Ok(("blocked".to_owned(), json!(true))));
        assert_eq!(parse_set("models=[\"a\",\"b\"]"), Ok(("models".to_owned(), json!(["a", "b"]))));
        assert_eq!(parse_set("metadata={\"k\":1}"), Ok(("metadata".to_owned(), json!({"k": 1}))));
        assert_eq!(parse_set("team_id=null"), Ok(("team_id".to_owned(), Value::Null)));
        assert_eq!(parse_set("key_alias=\"quoted\""), Ok(("key_alias".to_owned(), json!("quoted"))));
    }

    #[test]
    fn set_values_fall_back_to_text() {
        assert_eq!(parse_set("key_alias=prod"), Ok(("key_alias".to_owned(), json!("prod"))));
        assert_eq!(parse_set("budget_duration=30d"), Ok(("budget_duration".to_owned(), json!("30d"))));
        assert_eq!(parse_set("note="), Ok(("note".to_owned(), json!(""))));
        // Only the first '=' separates; the rest belongs to the value.
        assert_eq!(parse_set("expr=a=b"), Ok(("expr".to_owned(), json!("a=b"))));
        assert_eq!(parse_set(" spaced =x"), Ok(("spaced".to_owned(), json!("x"))));
    }

    #[test]
    fn set_rejects_malformed_pairs() {
        assert!(parse_set("no_equals_sign").is_err());
        assert!(parse_set("=5").is_err());
        assert!(parse_set("  =5").is_err());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert_eq!(parse_object("{\"k\":\"v\"}"), Ok(json!({"k": "v"})));
        assert!(parse_object("[1]").is_err());
        assert!(parse_object("{oops").is_err());
    }

    #[test]
    fn body_keeps_only_given_flags_and_lets_set_win() {
        let body = Body::new()
            .with("team_id", "t1")
            .opt("team_alias", Some("T1"))
            .opt("max_budget", None::<f64>)
            .opt("rpm_limit", Some(5_u64))
            .list("models", Vec::new())
            .list("tags", vec!["a".to_owned()])
            .overrides(vec![("rpm_limit".to_owned(), json!(7)), ("extra".to_owned(), json!([1]))])
            .build();
        assert_eq!(
            body,
            json!({"team_id": "t1", "team_alias": "T1", "rpm_limit": 7, "tags": ["a"], "extra": [1]})
        );
    }
}
