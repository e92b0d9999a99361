//! Azure OpenAI's and Microsoft Entra ID's wire pieces: the Azure data plane's own error
//! bodies and query check, and the client-credentials token endpoint's form parsing and
//! answers.

use bytes::Bytes;
use serde::Serialize;

/// Azure's answer when the route does not exist for it, including a deployment route
/// without `api-version` (Azure treats the version as part of the route).
pub(crate) const NOT_FOUND_BODY: &str = r#"{"error":{"code":"404","message":"Resource not found"}}"#;

/// Azure's answer when neither an `api-key` nor an `Authorization: Bearer` header is sent.
pub(crate) const ACCESS_DENIED_BODY: &str = concat!(
    r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API "#,
    r#"endpoint. Make sure to provide a valid key for an active subscription and use a correct "#,
    r#"regional API endpoint for your resource."}}"#,
);

/// `expires_in` of issued tokens unless [`crate::MockUpstream::set_token_lifetime`] says
/// otherwise; Entra answers 3599 for a fresh client-credentials token.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3599;

/// Prefix of every issued access token; `<n>` (from 1) follows it.
pub const TOKEN_PREFIX: &str = "mock-entra-token-";

/// Whether the query string carries a non-empty `api-version`, which Azure requires on
/// every data-plane call.
pub(crate) fn has_api_version(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query.split('&').any(|pair| matches!(pair.split_once('='), Some(("api-version", v)) if !v.is_empty()))
    })
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a
/// byte. `None` for a broken escape or bytes that are not UTF-8.
pub(crate) fn form_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let high = char::from(bytes.next()?).to_digit(16)?;
                let low = char::from(bytes.next()?).to_digit(16)?;
                // Two hex digits are at most 0xFF, so the cast is lossless.
                out.push((high * 16 + low) as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

/// The fields of a client-credentials token request.
#[derive(Default)]
pub(crate) struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

impl TokenRequest {
    /// Parses a form body; the first occurrence of a field wins, unknown fields are ignored.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(body).map_err(|_| "the request body is not UTF-8".to_owned())?;
        let mut request = TokenRequest::default();
        for pair in text.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || format!("malformed form field '{key}'");
            let key = form_decode(key).ok_or_else(bad)?;
            let value = form_decode(value).ok_or_else(bad)?;
            let slot = match key.as_str() {
                "grant_type" => &mut request.grant_type,
                "client_id" => &mut request.client_id,
                "client_secret" => &mut request.client_secret,
                "scope" => &mut request.scope,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        Ok(request)
    }

    /// Checks the request as Entra does for the client-credentials flow; the `Err` is the
    /// `error_description`.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self.grant_type.as_deref() {
            Some("client_credentials") => {}
            None | Some("") => return Err("The request body must contain 'grant_type'.".to_owned()),
            Some(other) => {
                return Err(format!("The grant_type '{other}' is not supported; use 'client_credentials'."));
            }
        }
        for (name, value) in
            [("client_id", &self.client_id), ("client_secret", &self.client_secret), ("scope", &self.scope)]
        {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(format!("The request body must contain a non-empty '{name}'."));
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    token_type: &'a str,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: &'a str,
}

/// The body of a successful token answer for the `n`-th token.
pub(crate) fn token_body(n: usize, lifetime: u64) -> serde_json::Result<Vec<u8>> {
    let access_token = format!("{TOKEN_PREFIX}{n}");
    serde_json::to_vec(&TokenResponse {
        token_type: "Bearer",
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token: &access_token,
    })
}

#[derive(Serialize)]
struct TokenError<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// An Entra OAuth error body, `{"error":<code>,"error_description":<description>}`.
pub(crate) fn token_error_body(code: &str, description: &str) -> Bytes {
    match serde_json::to_vec(&TokenError { error: code, error_description: description }) {
        Ok(body) => Bytes::from(body),
        // Serializing two strings cannot fail; keep a valid body all the same.
        Err(_) => Bytes::from_static(br#"{"error":"server_error","error_description":"internal error"}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%2Fd").as_deref(), Some("a b c/d"));
        assert_eq!(form_decode("%e2%82%AC").as_deref(), Some("€"));
        assert_eq!(form_decode("%2"), None);
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%ff"), None);
    }

    #[test]
    fn api_version_detection() {
        assert!(has_api_version(Some("api-version=2024-10-21")));
        assert!(has_api_version(Some("x=1&api-version=2024-10-21")));
        assert!(!has_api_version(Some("api-version=")));
        assert!(!has_api_version(Some("api-versions=1")));
        assert!(!has_api_version(None));
    }

    #[test]
    fn token_request_validation() {
        let ok = b"grant_type=client_credentials&client_id=id&client_secret=s%2B1&scope=https%3A%2F%2Fx%2F.default";
        let request = TokenRequest::parse(ok).expect("parses");
        assert!(request.validate().is_ok());
        assert_eq!(request.client_secret.as_deref(), Some("s+1"));
        assert_eq!(request.scope.as_deref(), Some("https://x/.default"));
        let missing =
            TokenRequest::parse(b"grant_type=client_credentials&client_id=id&scope=s").expect("parses");
        assert!(missing.validate().is_err());
        let empty = TokenRequest::parse(b"grant_type=client_credentials&client_id=&client_secret=s&scope=s")
            .expect("parses");
        assert!(empty.validate().is_err());
        assert!(TokenRequest::parse(b"grant_type=%G0").is_err());
    }
}
