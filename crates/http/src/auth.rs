//! The key a client presents: `Authorization: Bearer`, `x-api-key`, `api-key` or
//! `x-litellm-api-key`. [`crate::App::access`] decides who it belongs to.

use http::HeaderMap;

/// The key the client presented, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let key = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ if value.eq_ignore_ascii_case("bearer") => "",
            _ => value,
        };
        if !key.is_empty() {
            return Some(key);
        }
    }
    ["x-api-key", "api-key", "x-litellm-api-key"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::trim)
        .find(|key| !key.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn reads_every_header_litellm_accepts() {
        assert_eq!(presented_key(&headers(&[("authorization", "Bearer sk-1")])), Some("sk-1"));
        assert_eq!(presented_key(&headers(&[("authorization", "sk-2")])), Some("sk-2"));
        assert_eq!(presented_key(&headers(&[("x-api-key", "sk-3")])), Some("sk-3"));
        assert_eq!(presented_key(&headers(&[("api-key", "sk-4")])), Some("sk-4"));
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer "), ("api-key", "sk-5")])),
            Some("sk-5")
        );
        assert_eq!(presented_key(&headers(&[])), None);
    }
}
