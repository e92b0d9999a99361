//! Reads and rewrites the top level of a JSON object without decoding what lies below it.
//!
//! The hot path needs a handful of top-level fields of a request or response (`model`,
//! `stream`, `usage`) and must change one of them (`model`) while forwarding everything else
//! byte for byte. [`TopLevel`] tokenizes the object once, keeps each value as a borrowed raw
//! slice, and [`TopLevel::rewrite`] splices new values in at those slices' offsets.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields of a top-level JSON object, in order, each value left undecoded.
pub struct TopLevel<'a> {
    source: &'a [u8],
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> TopLevel<'a> {
    /// Tokenizes `source`, which must be exactly one JSON object.
    pub fn parse(source: &'a [u8]) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(source);
        let fields = de.deserialize_map(FieldsVisitor)?;
        de.end()?;
        Ok(Self { source, fields })
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The field decoded as `T`; `None` when absent or `null`, an error when of another type.
    pub fn decode<T: serde::Deserialize<'a>>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The object without the fields named in `drop`, the others copied as they were.
    pub fn without(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.source.len());
        out.push(b'{');
        for (key, value) in self.fields.iter().filter(|(key, _)| !drop.contains(&key.as_ref())) {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(quote(key).as_bytes());
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        out
    }

    /// The object with each `(key, raw JSON)` replacement applied: an existing key keeps its
    /// place and gets the new value, a missing key is appended. Everything else is copied.
    pub fn rewrite(&self, replacements: &[(&str, &str)]) -> Vec<u8> {
        let extra: usize = replacements.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(self.source.len() + extra);
        let base = self.source.as_ptr() as usize;
        let mut in_place = Vec::with_capacity(replacements.len());
        let mut new_keys = Vec::new();
        for &(key, value) in replacements {
            match self.get(key) {
                // The raw value borrows from `source`, so its address gives its offset.
                Some(raw) => in_place.push((raw.get().as_ptr() as usize - base, raw.get().len(), value)),
                None => new_keys.push((key, value)),
            }
        }
        in_place.sort_unstable_by_key(|(start, _, _)| *start);
        let mut copied_to = 0;
        for (start, len, value) in in_place {
            out.extend_from_slice(&self.source[copied_to..start]);
            out.extend_from_slice(value.as_bytes());
            copied_to = start + len;
        }
        // New keys go just before the closing brace.
        let close = if new_keys.is_empty() {
            self.source.len()
        } else {
            self.source.iter().rposition(|&b| b == b'}').unwrap_or(self.source.len())
        };
        out.extend_from_slice(&self.source[copied_to..close]);
        let mut needs_comma = !self.fields.is_empty();
        for (key, value) in new_keys {
            if needs_comma {
                out.push(b',');
            }
            out.extend_from_slice(quote(key).as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            needs_comma = true;
        }
        out.extend_from_slice(&self.source[close..]);
        out
    }
}

/// The byte range of the value of top-level `key` in a JSON object, scanning no further
/// than that key. Cheaper than [`TopLevel::parse`] for a stream chunk whose `model` comes
/// fourth of a dozen fields. Keys written with escapes are not matched, and input that is
/// not a JSON object gives `None`; the input is not validated beyond what the scan needs.
pub fn top_level_value_span(source: &[u8], key: &str) -> Option<std::ops::Range<usize>> {
    let mut at = skip_whitespace(source, 0);
    if source.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_whitespace(source, at);
        if source.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(source, at)?;
        let this_key = &source[at + 1..key_end - 1];
        at = skip_whitespace(source, key_end);
        if source.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_whitespace(source, at + 1);
        let value_end = value_end(source, value_start)?;
        if this_key == key.as_bytes() {
            return Some(value_start..value_end);
        }
        at = skip_whitespace(source, value_end);
        match source.get(at) {
            Some(b',') => at += 1,
            _ => return None,
        }
    }
}

fn skip_whitespace(source: &[u8], mut at: usize) -> usize {
    while source.get(at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
        at += 1;
    }
    at
}

/// The offset just past the string literal starting at `start` (which holds `"`).
fn string_end(source: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        let offset = memchr::memchr2(b'"', b'\\', source.get(at..)?)?;
        at += offset;
        if source[at] == b'\\' {
            at += 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// The offset just past the JSON value starting at `start`.
fn value_end(source: &[u8], start: usize) -> Option<usize> {
    match source.get(start)? {
        b'"' => string_end(source, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match source.get(at)? {
                    b'"' => {
                        at = string_end(source, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let len = source[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(source.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

/// A JSON string literal for `text`.
pub fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| String::from("\"\""))
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            fields.push((key.0, value));
        }
        Ok(fields)
    }
}

/// A map key that borrows from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn reads_top_level_fields_only() {
        let src = br#"{"model":"gpt","messages":[{"model":"inner"}],"stream":true}"#;
        let top = TopLevel::parse(src).unwrap();
        assert_eq!(top.decode::<String>("model").unwrap().as_deref(), Some("gpt"));
        assert_eq!(top.decode::<bool>("stream").unwrap(), Some(true));
        assert!(top.decode::<bool>("absent").unwrap().is_none());
        assert!(top.decode::<bool>("model").is_err());
    }

    #[test]
    fn rewrite_replaces_in_place_and_copies_the_rest_verbatim() {
        let src = br#"{ "model" : "alias", "messages": [{"role":"user","content":"hi \"there\""}], "n": 1 }"#;
        let top = TopLevel::parse(src).unwrap();
        let out = top.rewrite(&[("model", r#""gpt-4o""#)]);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "model" : "gpt-4o", "messages": [{"role":"user","content":"hi \"there\""}], "n": 1 }"#
        );
    }

    #[test]
    fn rewrite_appends_missing_keys() {
        let top = TopLevel::parse(br#"{"a":1}"#).unwrap();
        let out = top.rewrite(&[("b", "true"), ("a", "2")]);
        assert_eq!(parsed(&out), json!({"a": 2, "b": true}));
        let empty = TopLevel::parse(b"{ }").unwrap();
        assert_eq!(parsed(&empty.rewrite(&[("x", "null")])), json!({"x": null}));
    }

    #[test]
    fn without_drops_the_named_fields_only() {
        let top = TopLevel::parse(br#"{"model":"m", "fallbacks":["b"],"messages":[{"fallbacks":1}],"n":1}"#)
            .unwrap();
        assert_eq!(top.without(&["fallbacks", "n"]), br#"{"model":"m","messages":[{"fallbacks":1}]}"#);
        assert_eq!(TopLevel::parse(br#"{"a":1}"#).unwrap().without(&["a"]), b"{}");
    }

    #[test]
    fn escaped_keys_are_matched_decoded() {
        let top = TopLevel::parse(br#"{"mo\u0064el":"x"}"#).unwrap();
        assert_eq!(top.decode::<String>("model").unwrap().as_deref(), Some("x"));
        assert_eq!(parsed(&top.rewrite(&[("model", "\"y\"")])), json!({"model": "y"}));
    }

    #[test]
    fn value_span_finds_top_level_keys_only() {
        let src = br#"{"id":"x","choices":[{"model":"inner","s":"a\"}"}],"n":{"model":1}, "model" : "gpt-4o","z":1}"#;
        let span = top_level_value_span(src, "model").unwrap();
        assert_eq!(&src[span], br#""gpt-4o""#);
        assert_eq!(&src[top_level_value_span(src, "n").unwrap()], br#"{"model":1}"#);
        assert_eq!(&src[top_level_value_span(src, "z").unwrap()], b"1");
        assert_eq!(top_level_value_span(src, "absent"), None);
        assert_eq!(top_level_value_span(b"[1]", "model"), None);
        assert_eq!(top_level_value_span(br#"{"model":"#, "model"), None);
        assert_eq!(top_level_value_span(br#"{"a":"unterminated"#, "model"), None);
    }

    #[test]
    fn rejects_non_objects_and_trailing_garbage() {
        assert!(TopLevel::parse(b"[1,2]").is_err());
        assert!(TopLevel::parse(br#"{"a":1} x"#).is_err());
        assert!(TopLevel::parse(br#"{"a":"#).is_err());
        assert!(TopLevel::parse(b"").is_err());
    }
}
