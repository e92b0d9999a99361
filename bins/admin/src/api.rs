//! The gateway's management API over the workspace's hyper client: one JSON request, one
//! JSON answer, and errors that say whether the gateway refused or could not be reached.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate_providers::HttpClient;

/// A management call that takes longer than this is stuck, not slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a non-JSON error body to quote; proxies in front of the gateway can send
/// whole HTML pages.
const MAX_QUOTED_BODY: usize = 300;

/// One call to make.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: &'static str,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl Call {
    pub fn get(path: &'static str) -> Self {
        Call { method: Method::GET, path, query: Vec::new(), body: None }
    }

    pub fn post(path: &'static str, body: Value) -> Self {
        Call { method: Method::POST, path, query: Vec::new(), body: Some(body) }
    }

    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a query parameter when it has a value.
    pub fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    /// The path and percent-encoded query string.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.to_owned();
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.query.iter().map(|(name, value)| (*name, value.as_str())))
            .finish();
        format!("{}?{query}", self.path)
    }
}

/// Why a call failed, for the message and the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The gateway answered with an error status.
    Gateway { status: u16, kind: String, message: String },
    /// No answer: connection refused, DNS, TLS, timeout, a cut-off body.
    Unreachable { url: String, error: String },
    /// The command line named something that cannot work (a malformed `--url`); exits 64.
    Usage(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Gateway { status, kind, message } => write!(f, "{status} {kind}: {message}"),
            Failure::Unreachable { url, error } => write!(f, "cannot reach {url}: {error}"),
            Failure::Usage(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Failure {}

/// A client for one gateway.
pub struct Api {
    base: String,
    authorization: Option<HeaderValue>,
    http: HttpClient,
}

impl Api {
    /// Checks the URL and key up front, so a typo is a usage error rather than a
    /// confusing network one.
    pub fn new(url: &str, master_key: Option<&str>) -> Result<Self, Failure> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: Uri =
            base.parse().map_err(|error| Failure::Usage(format!("invalid --url '{url}': {error}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(Failure::Usage(format!(
                "invalid --url '{url}': expected http://host:port or https://host"
            )));
        }
        let authorization = match master_key.filter(|key| !key.is_empty()) {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    // Never echo the key itself: it is a credential.
                    Failure::Usage("the master key contains characters not allowed in an HTTP header".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Api { base, authorization, http: tollgate_providers::build_http_client() })
    }

    /// Sends `call` and returns the JSON answer of a 2xx response.
    pub async fn send(&self, call: &Call) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, call.path);
        let uri: Uri = format!("{}{}", self.base, call.path_and_query())
            .parse()
            .map_err(|error| Failure::Usage(format!("invalid request URL {url}: {error}")))?;
        let mut request = Request::builder().method(call.method.clone()).uri(uri);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let body = match &call.body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(body).context("encoding the request body")?)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).context("building the request")?;
        let exchange = async {
            let response = self.http.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return Err(Failure::Unreachable { url, error: format!("{error:#}") }.into()),
            Err(_) => {
                let error = format!("no answer within {}s", REQUEST_TIMEOUT.as_secs());
                return Err(Failure::Unreachable { url, error }.into());
            }
        };
        if !status.is_success() {
            return Err(gateway_error(status, &body).into());
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("{url} answered {status} with a body that is not JSON"))
    }
}

/// LiteLLM's `{"error": {"message", "type"}}`, FastAPI's `{"detail": …}`, or whatever text
/// came back.
fn gateway_error(status: StatusCode, body: &[u8]) -> Failure {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|value| value.get("error"));
    let text = |value: Option<&Value>| match value {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let kind = text(error.and_then(|error| error.get("type"))).unwrap_or_else(|| "error".to_owned());
    let message = text(error.and_then(|error| error.get("message")))
        .or_else(|| text(error))
        .or_else(|| text(parsed.as_ref().and_then(|value| value.get("detail"))))
        .unwrap_or_else(|| {
            let raw = String::from_utf8_lossy(body);
            let raw = raw.trim();
            if raw.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                raw.chars().take(MAX_QUOTED_BODY).collect()
            }
        });
    Failure::Gateway { status: status.as_u16(), kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        let call = Call::get("/key/list")
            .query("user_id", Some("a b&c=d"))
            .query("page", Some(2))
            .query("size", None::<u8>);
        assert_eq!(call.path_and_query(), "/key/list?user_id=a+b%26c%3Dd&page=2");
        assert_eq!(Call::get("/team/list").path_and_query(), "/team/list");
    }

    #[test]
    fn litellm_errors_keep_status_type_and_message() {
        let body =
            br#"{"error":{"message":"Key not found","type":"not_found_error","param":"key","code":"404"}}"#;
        let failure = gateway_error(StatusCode::NOT_FOUND, body);
        assert_eq!(failure.to_string(), "404 not_found_error: Key not found");
        let failure = gateway_error(StatusCode::UNPROCESSABLE_ENTITY, br#"{"detail":"bad field"}"#);
        assert_eq!(failure.to_string(), "422 error: bad field");
        let failure = gateway_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(failure.to_string(), "502 error: Bad Gateway");
        let failure = gateway_error(StatusCode::SERVICE_UNAVAILABLE, b"upstream down\n");
        assert_eq!(failure.to_string(), "503 error: upstream down");
    }

    #[test]
    fn bad_urls_and_keys_are_usage_errors() {
        assert!(matches!(Api::new("127.0.0.1:4000", None), Err(Failure::Usage(_))));
        assert!(matches!(Api::new("ftp://host", None), Err(Failure::Usage(_))));
        match Api::new("http://localhost:4000", Some("sk-bad\nkey")) {
            Err(Failure::Usage(message)) => assert!(!message.contains("sk-bad")),
            _ => panic!("a key with a newline must be refused"),
        }
    }
}
