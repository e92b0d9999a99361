//! Google OAuth 2.0 access tokens for Vertex AI: from a service-account key (an RS256 JWT
//! exchanged at the key's `token_uri`), a gcloud `authorized_user` file (its refresh token
//! exchanged), or the GCE / GKE metadata server (Workload Identity). Tokens are cached per
//! credential, shared by every request, fetched by one request at a time, and renewed
//! ahead of expiry so no request waits on a token that is about to lapse.
//!
//! Key material never leaves this module except as the signed assertion or the refresh
//! request it must be sent in; errors name where the credentials came from, never what
//! they hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tollgate_domain::Secret;
use tollgate_domain::deployment::GoogleCredentials;

use crate::entra::form_encode;
use crate::transport::error_chain;
use crate::{HttpClient, ProviderError};

/// The one scope Vertex AI needs.
pub(crate) const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, for key files that do not name one.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A signed assertion is valid for an hour, the most Google accepts.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// A token is renewed this long before it expires (half its lifetime for shorter tokens).
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The longest a token (or project) request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// The most a token response, or a key file, may weigh.
const MAX_RESPONSE: usize = 64 * 1024;
const MAX_KEY_FILE: u64 = 1024 * 1024;

/// A token and the project the credentials belong to, when they name one.
pub(crate) struct Access {
    pub(crate) token: Secret,
    pub(crate) project: Option<String>,
}

struct Cached {
    token: Secret,
    renew_at: Instant,
}

#[derive(Default)]
struct SlotState {
    cached: Option<Cached>,
    /// From the key file, or asked of the metadata server once.
    project: Option<String>,
    /// The metadata server's host, once it turned out to be the source.
    metadata_host: Option<String>,
}

/// One slot per credential; the async mutex makes concurrent requests share one fetch.
type Slot = Arc<tokio::sync::Mutex<SlotState>>;

pub(crate) struct GoogleAuth {
    client: HttpClient,
    slots: Mutex<HashMap<String, Slot>>,
}

/// Where a token is fetched from, once the configured credentials are resolved.
enum Source {
    ServiceAccount { key: ServiceAccountKey, origin: String },
    AuthorizedUser { user: AuthorizedUser, origin: String },
    Metadata { host: String },
}

impl GoogleAuth {
    pub(crate) fn new(client: HttpClient) -> Self {
        Self { client, slots: Mutex::new(HashMap::new()) }
    }

    /// A valid token for these credentials, from the cache or freshly fetched, and the
    /// credentials' project when `need_project` (a metadata server is asked for it once).
    pub(crate) async fn access(
        &self,
        credentials: &GoogleCredentials,
        need_project: bool,
    ) -> Result<Access, ProviderError> {
        let slot = self.slot(credentials);
        let mut state = slot.lock().await;
        let cached = state.cached.as_ref().filter(|c| Instant::now() < c.renew_at).map(|c| c.token.clone());
        let token = match cached {
            Some(token) => token,
            None => {
                let source = resolve(credentials).await?;
                let (token, lifetime) = self.fetch(&source).await?;
                match &source {
                    Source::ServiceAccount { key, .. } => state.project = key.project_id.clone(),
                    Source::AuthorizedUser { user, .. } => state.project = user.quota_project_id.clone(),
                    Source::Metadata { host } => state.metadata_host = Some(host.clone()),
                }
                state.cached =
                    Some(Cached { token: token.clone(), renew_at: Instant::now() + renew_after(lifetime) });
                token
            }
        };
        if need_project
            && state.project.is_none()
            && let Some(host) = state.metadata_host.clone()
        {
            state.project = Some(self.metadata_project(&host).await?);
        }
        Ok(Access { token, project: state.project.clone() })
    }

    /// Drops `token` from the cache (the upstream refused it), so the next request fetches
    /// another instead of failing until the renewal time.
    pub(crate) async fn forget(&self, credentials: &GoogleCredentials, token: &Secret) {
        let slot = self.slot(credentials);
        let mut state = slot.lock().await;
        if state.cached.as_ref().is_some_and(|cached| &cached.token == token) {
            state.cached = None;
        }
    }

    fn slot(&self, credentials: &GoogleCredentials) -> Slot {
        // The key text itself may be the map key; it stays in memory and is never printed.
        let key = match credentials {
            GoogleCredentials::KeyFile { value, .. } => format!("key\n{}", value.expose()),
            GoogleCredentials::Ambient { gcloud_file, metadata_host } => {
                format!("ambient\n{}\n{metadata_host}", gcloud_file.as_deref().unwrap_or_default())
            }
        };
        Arc::clone(self.slots.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default())
    }

    async fn fetch(&self, source: &Source) -> Result<(Secret, Duration), ProviderError> {
        match source {
            Source::ServiceAccount { key, origin } => {
                let origin = format!("{origin} (service account {})", key.client_email);
                let assertion = service_account_assertion(key, unix_now())
                    .map_err(|reason| auth_error(401, &origin, &reason))?;
                let form = format!("grant_type={}&assertion={assertion}", form_encode(JWT_BEARER_GRANT));
                self.exchange(&key.token_uri, form, &origin).await
            }
            Source::AuthorizedUser { user, origin } => {
                let form = format!(
                    "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
                    form_encode(&user.client_id),
                    form_encode(user.client_secret.expose()),
                    form_encode(user.refresh_token.expose())
                );
                self.exchange(&user.token_uri, form, origin).await
            }
            Source::Metadata { host } => {
                let origin = metadata_origin(host);
                let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
                let request = http::Request::get(url)
                    .header("metadata-flavor", HeaderValue::from_static("Google"))
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| auth_error(503, &origin, &e.to_string()))?;
                let (status, body) = match self.send(request, &origin).await {
                    Ok(answer) => answer,
                    // Most often not a failing metadata server but a gateway running outside
                    // Google Cloud with no credentials configured.
                    Err(ProviderError::Upstream { status, message, error_type, .. }) => {
                        return Err(ProviderError::Upstream {
                            status,
                            message: format!(
                                "{message} (no key configured: set vertex_credentials or \
                                 GOOGLE_APPLICATION_CREDENTIALS, or run on GKE / GCE)"
                            ),
                            error_type,
                            param: None,
                            code: None,
                            retry_after: None,
                        });
                    }
                    Err(other) => return Err(other),
                };
                read_token(status, &body, &origin)
            }
        }
    }

    /// Posts a token request form to `token_uri` and reads the token out of the answer.
    async fn exchange(
        &self,
        token_uri: &str,
        form: String,
        origin: &str,
    ) -> Result<(Secret, Duration), ProviderError> {
        let request = http::Request::post(token_uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| auth_error(401, origin, &format!("token_uri '{token_uri}' is not a valid URL")))?;
        let (status, body) = self.send(request, origin).await?;
        read_token(status, &body, origin)
    }

    /// The project of the VM or GKE node pool, `/computeMetadata/v1/project/project-id`.
    async fn metadata_project(&self, host: &str) -> Result<String, ProviderError> {
        let origin = metadata_origin(host);
        let request = http::Request::get(format!("http://{host}/computeMetadata/v1/project/project-id"))
            .header("metadata-flavor", HeaderValue::from_static("Google"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| auth_error(503, &origin, &e.to_string()))?;
        let (status, body) = self.send(request, &origin).await?;
        let project = String::from_utf8_lossy(&body).trim().to_owned();
        if !status.is_success() || project.is_empty() {
            return Err(auth_error(
                503,
                &origin,
                &format!("asking the project id: status {status}; set vertex_project or VERTEXAI_PROJECT"),
            ));
        }
        Ok(project)
    }

    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        origin: &str,
    ) -> Result<(http::StatusCode, Bytes), ProviderError> {
        timeout(TOKEN_TIMEOUT, async {
            let response =
                self.client.request(request).await.map_err(|e| auth_error(503, origin, &error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| auth_error(503, origin, &format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        })
        .await
        .map_err(|_| auth_error(503, origin, "no answer in time"))?
    }
}

/// Renew `RENEW_BEFORE` ahead of expiry, or halfway through a shorter lifetime.
fn renew_after(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(RENEW_BEFORE.min(lifetime / 2))
}

fn metadata_origin(host: &str) -> String {
    format!("the GCE metadata server at {host}")
}

/// An error fetching a token: 401 when the credentials were refused or unusable, 503 when
/// the token service could not be reached (trying again may help).
fn auth_error(status: u16, origin: &str, reason: &str) -> ProviderError {
    ProviderError::Upstream {
        status,
        message: format!("could not get a Google access token from {origin}: {reason}"),
        error_type: (status == 401).then(|| "authentication_error".to_owned()),
        param: None,
        code: None,
        retry_after: None,
    }
}

/// A token endpoint's (or the metadata server's) answer: `access_token` and `expires_in`,
/// or OAuth's `error` / `error_description`.
fn read_token(
    status: http::StatusCode,
    body: &[u8],
    origin: &str,
) -> Result<(Secret, Duration), ProviderError> {
    let json: Value = serde_json::from_slice(body).unwrap_or_default();
    if !status.is_success() {
        let reason = match (json.get("error").and_then(Value::as_str), json.get("error_description")) {
            (Some(error), Some(Value::String(description))) => format!("{error}: {description}"),
            (Some(error), _) => error.to_owned(),
            _ => crate::transport::quote_body(status.as_u16(), body),
        };
        let status_code = if status.is_server_error() { 503 } else { 401 };
        return Err(auth_error(status_code, origin, &format!("status {status}: {reason}")));
    }
    let token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| auth_error(503, origin, "the answer holds no access_token"))?;
    let lifetime = json.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
    Ok((Secret::new(token), Duration::from_secs(lifetime)))
}

/// Turns the configured credentials into a token source: a key file is read (each time a
/// token is needed, so a rotated Secret is picked up) and parsed; ambient credentials are
/// gcloud's file when it exists, else the metadata server.
async fn resolve(credentials: &GoogleCredentials) -> Result<Source, ProviderError> {
    let (text, origin) = match credentials {
        GoogleCredentials::KeyFile { setting, value } => {
            let value = value.expose().trim();
            if value.starts_with('{') {
                (value.to_owned(), format!("the key in {setting}"))
            } else {
                let origin = format!("the key file {value} (from {setting})");
                (read_key_file(value).await.map_err(|reason| auth_error(401, &origin, &reason))?, origin)
            }
        }
        GoogleCredentials::Ambient { gcloud_file, metadata_host } => {
            let found = match gcloud_file {
                Some(path) => tokio::fs::try_exists(path).await.unwrap_or(false).then_some(path),
                None => None,
            };
            match found {
                Some(path) => {
                    let origin = format!("gcloud's application default credentials at {path}");
                    (read_key_file(path).await.map_err(|reason| auth_error(401, &origin, &reason))?, origin)
                }
                None => return Ok(Source::Metadata { host: metadata_host.clone() }),
            }
        }
    };
    match parse_key(&text).map_err(|reason| auth_error(401, &origin, &reason))? {
        Key::ServiceAccount(key) => Ok(Source::ServiceAccount { key, origin }),
        Key::AuthorizedUser(user) => Ok(Source::AuthorizedUser { user, origin }),
    }
}

async fn read_key_file(path: &str) -> Result<String, String> {
    let metadata = tokio::fs::metadata(path).await.map_err(|e| format!("cannot read it: {e}"))?;
    if metadata.len() > MAX_KEY_FILE {
        return Err("it is larger than any Google key file".to_owned());
    }
    tokio::fs::read_to_string(path).await.map_err(|e| format!("cannot read it: {e}"))
}

/// A service account's key, as Google's JSON key file holds it.
pub(crate) struct ServiceAccountKey {
    pub(crate) client_email: String,
    pub(crate) private_key: Secret,
    pub(crate) private_key_id: Option<String>,
    pub(crate) token_uri: String,
    pub(crate) project_id: Option<String>,
}

/// gcloud's `application-default login` file: a user's refresh token.
struct AuthorizedUser {
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
    token_uri: String,
    quota_project_id: Option<String>,
}

enum Key {
    ServiceAccount(ServiceAccountKey),
    AuthorizedUser(AuthorizedUser),
}

/// Reads a Google key file. The errors name fields, never their values.
fn parse_key(text: &str) -> Result<Key, String> {
    let json: Value = serde_json::from_str(text).map_err(|_| "it is not valid JSON".to_owned())?;
    let field =
        |name: &str| json.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    let required = |name: &str| field(name).ok_or_else(|| format!("it has no `{name}`"));
    let token_uri = field("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
    match json.get("type").and_then(Value::as_str) {
        Some("service_account") => Ok(Key::ServiceAccount(ServiceAccountKey {
            client_email: required("client_email")?,
            private_key: Secret::new(required("private_key")?),
            private_key_id: field("private_key_id"),
            token_uri,
            project_id: field("project_id"),
        })),
        Some("authorized_user") => Ok(Key::AuthorizedUser(AuthorizedUser {
            client_id: required("client_id")?,
            client_secret: Secret::new(required("client_secret")?),
            refresh_token: Secret::new(required("refresh_token")?),
            token_uri,
            quota_project_id: field("quota_project_id"),
        })),
        Some(other) => Err(format!(
            "credentials of type '{other}' are not supported (use a service_account or authorized_user key, or \
             the metadata server)"
        )),
        None => Err("it has no `type` (service_account or authorized_user)".to_owned()),
    }
}

/// The signed JWT a service account trades for an access token: RS256 over
/// `{iss: client_email, scope, aud: token_uri, iat, exp: iat + 1 h}`.
pub(crate) fn service_account_assertion(key: &ServiceAccountKey, now: u64) -> Result<String, String> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(id) = &key.private_key_id {
        header["kid"] = json!(id);
    }
    let claims = json!({
        "iss": key.client_email,
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": key.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key_pair = rsa_key_pair(key.private_key.expose())?;
    let mut signature = vec![0; key_pair.public().modulus_len()];
    key_pair
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| "signing the token request failed".to_owned())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The RSA key of a PEM `PRIVATE KEY` (PKCS#8, as Google issues) or `RSA PRIVATE KEY`.
fn rsa_key_pair(pem: &str) -> Result<ring::signature::RsaKeyPair, String> {
    let (label, der) = pem_body(pem).ok_or_else(|| "`private_key` is not a PEM private key".to_owned())?;
    let parsed = match label.as_str() {
        "PRIVATE KEY" => ring::signature::RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => ring::signature::RsaKeyPair::from_der(&der),
        _ => return Err("`private_key` is not a PEM private key".to_owned()),
    };
    // ring's rejection reason names a property of the key, never its bytes.
    parsed.map_err(|rejected| format!("`private_key` is not a usable RSA key ({rejected})"))
}

/// The label and decoded bytes of the first PEM block in `text`.
pub(crate) fn pem_body(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    Some((label.to_owned(), STANDARD.decode(body).ok()?))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_ACCOUNT: &str =
        include_str!("../../mock-upstream/fixtures/vertex-test-service-account.json");
    const PUBLIC_KEY: &str = include_str!("../../mock-upstream/fixtures/vertex-test-key.pub.pem");
    const UNTRUSTED_KEY: &str = include_str!("../../mock-upstream/fixtures/vertex-untrusted-key.pem");

    fn service_account() -> ServiceAccountKey {
        match parse_key(SERVICE_ACCOUNT).unwrap() {
            Key::ServiceAccount(key) => key,
            Key::AuthorizedUser(_) => panic!("the fixture is a service account"),
        }
    }

    fn decode_json(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn verifies(assertion: &str) -> bool {
        let (signed, signature) = assertion.rsplit_once('.').unwrap();
        let (label, public_key) = pem_body(PUBLIC_KEY).unwrap();
        assert_eq!(label, "RSA PUBLIC KEY");
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public_key)
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).unwrap())
            .is_ok()
    }

    #[test]
    fn the_assertion_has_google_s_header_and_claims() {
        let key = service_account();
        let assertion = service_account_assertion(&key, 1_700_000_000).unwrap();
        let parts: Vec<&str> = assertion.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_json(parts[0]),
            json!({"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef0123456789abcdef01234567"})
        );
        assert_eq!(
            decode_json(parts[1]),
            json!({
                "iss": "tollgate-test@tollgate-test-project.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        assert_eq!(key.project_id.as_deref(), Some("tollgate-test-project"));
    }

    #[test]
    fn the_signature_verifies_with_the_public_key_and_only_that_key() {
        let mut key = service_account();
        let assertion = service_account_assertion(&key, 1_700_000_000).unwrap();
        assert!(verifies(&assertion));
        let (signed, signature) = assertion.rsplit_once('.').unwrap();
        let tampered = format!("{}x.{signature}", signed);
        assert!(!verifies(&tampered), "a changed claim breaks the signature");

        key.private_key = Secret::new(UNTRUSTED_KEY);
        assert!(!verifies(&service_account_assertion(&key, 1_700_000_000).unwrap()));
    }

    #[test]
    fn key_file_errors_name_fields_not_values() {
        let error = |text: &str| match parse_key(text) {
            Err(reason) => reason,
            Ok(_) => panic!("accepted {text}"),
        };
        assert_eq!(error("not json"), "it is not valid JSON");
        assert_eq!(error(r#"{"type": "service_account", "private_key": "x"}"#), "it has no `client_email`");
        assert!(error(r#"{"type": "external_account"}"#).contains("'external_account' are not supported"));
        let mut key = service_account();
        key.private_key =
            Secret::new("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n");
        let reason = service_account_assertion(&key, 0).unwrap_err();
        assert!(reason.starts_with("`private_key` is not a usable RSA key"), "{reason}");
        assert!(!reason.contains("c2VjcmV0") && !reason.contains("secret-bytes"), "{reason}");
        let user = parse_key(
            r#"{"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r", "quota_project_id": "q"}"#,
        )
        .unwrap();
        let Key::AuthorizedUser(user) = user else { panic!() };
        assert_eq!(
            (user.token_uri.as_str(), user.quota_project_id.as_deref()),
            (DEFAULT_TOKEN_URI, Some("q"))
        );
    }

    #[test]
    fn tokens_renew_ahead_of_expiry() {
        assert_eq!(renew_after(Duration::from_secs(3600)), Duration::from_secs(3300));
        assert_eq!(renew_after(Duration::from_secs(60)), Duration::from_secs(30));
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn token_answers_and_refusals() {
        let ok =
            read_token(http::StatusCode::OK, br#"{"access_token":"ya29.x","expires_in":3599}"#, "o").unwrap();
        assert_eq!((ok.0.expose(), ok.1), ("ya29.x", Duration::from_secs(3599)));
        let refused = read_token(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            "the key in vertex_credentials",
        )
        .unwrap_err();
        let ProviderError::Upstream { status, message, .. } = refused else { panic!() };
        assert_eq!(status, 401);
        assert_eq!(
            message,
            "could not get a Google access token from the key in vertex_credentials: status 400 Bad Request: \
             invalid_grant: Invalid JWT Signature."
        );
        let ProviderError::Upstream { status, .. } =
            read_token(http::StatusCode::SERVICE_UNAVAILABLE, b"", "o").unwrap_err()
        else {
            panic!()
        };
        assert_eq!(status, 503);
    }
}
