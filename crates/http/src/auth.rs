//! Who is calling: the key from `Authorization: Bearer`, `x-api-key`, `api-key` or
//! `x-litellm-api-key`, checked against the master key in constant time.
//!
//! With no master key configured the gateway is open (as LiteLLM's proxy is); start-up
//! warns loudly about it. Virtual keys arrive with the Tenancy issue.

use http::HeaderMap;
use tollgate_domain::{ErrorKind, GatewayError, Secret};

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

pub fn authenticate(headers: &HeaderMap, master_key: Option<&Secret>) -> Result<(), GatewayError> {
    let Some(master_key) = master_key else {
        return Ok(());
    };
    match presented_key(headers) {
        None => Err(GatewayError::new(
            ErrorKind::Authentication,
            "Authentication Error, No api key passed in. Send it as 'Authorization: Bearer <key>'.",
        )),
        Some(key) if master_key.matches(key) => Ok(()),
        Some(_) => Err(GatewayError::new(
            ErrorKind::Authentication,
            "Authentication Error, Invalid proxy server token passed.",
        )),
    }
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

    #[test]
    fn master_key_gates_access() {
        let master = Secret::new("sk-master");
        assert!(authenticate(&headers(&[("authorization", "Bearer sk-master")]), Some(&master)).is_ok());
        let wrong =
            authenticate(&headers(&[("authorization", "Bearer sk-other")]), Some(&master)).unwrap_err();
        assert_eq!(wrong.status(), 401);
        let missing = authenticate(&headers(&[]), Some(&master)).unwrap_err();
        assert!(missing.message.contains("No api key"));
        assert!(authenticate(&headers(&[]), None).is_ok());
    }
}
