//! Google Cloud's Vertex AI as the gateway meets it: the publisher model routes (Gemini's
//! `generateContent` / `streamGenerateContent` and `predict` for embeddings under
//! `publishers/google`, Anthropic's Messages API as `rawPredict` / `streamRawPredict` under
//! `publishers/anthropic`), Google's OAuth 2.0 token endpoint, which verifies a service
//! account's RS256 JWT against the test key's public half, and the GCE / GKE metadata
//! server's token and project routes.
//!
//! Checked against Google's public references: Vertex AI's `projects.locations.publishers
//! .models` (generateContent, streamGenerateContent, predict, rawPredict, streamRawPredict),
//! the text-embeddings API (`instances[].content`, `predictions[].embeddings.{values,
//! statistics}`), Claude on Vertex (`anthropic_version: "vertex-2023-10-16"` in the body),
//! OAuth 2.0 for server-to-server applications (the JWT's claims, the `jwt-bearer` grant,
//! `invalid_grant` answers) and the metadata server (`Metadata-Flavor: Google`).
//!
//! The key material in `fixtures/` is for tests only and opens nothing real.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::body::MockBody;
use crate::handler::{self, Answer, Api};
use crate::wire::{
    EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS_PER_INPUT, MAX_EMBEDDING_DIMENSIONS, embedding_vector,
};
use crate::{MockUpstream, Shared, anthropic, azure, gemini, lock};

/// A service-account key file in Google's format (test-only key); its `token_uri` is
/// Google's, so a test swaps in the mock's with [`test_service_account`].
pub const TEST_SERVICE_ACCOUNT_JSON: &str = include_str!("../fixtures/vertex-test-service-account.json");
/// The test service account's `client_email`, the only `iss` the token endpoint knows.
pub const TEST_SERVICE_ACCOUNT_EMAIL: &str = "tollgate-test@tollgate-test-project.iam.gserviceaccount.com";
/// The `project_id` in [`TEST_SERVICE_ACCOUNT_JSON`].
pub const TEST_SERVICE_ACCOUNT_PROJECT: &str = "tollgate-test-project";
/// A PKCS#8 RSA key the token endpoint does not trust, for bad-signature tests.
pub const TEST_UNTRUSTED_KEY_PEM: &str = include_str!("../fixtures/vertex-untrusted-key.pem");
/// The public half (PKCS#1) of the test service account's key.
const TRUSTED_PUBLIC_KEY_PEM: &str = include_str!("../fixtures/vertex-test-key.pub.pem");

/// Prefix of tokens the OAuth endpoint issues; `<n>` (from 1) follows.
pub const GOOGLE_TOKEN_PREFIX: &str = "mock-google-token-";
/// Prefix of tokens the metadata server issues; `<n>` (from 1) follows.
pub const METADATA_TOKEN_PREFIX: &str = "mock-metadata-token-";
/// What `/computeMetadata/v1/project/project-id` answers.
pub const METADATA_PROJECT: &str = "mock-metadata-project";
/// `expires_in` of issued Google tokens unless [`MockUpstream::set_google_token_lifetime`]
/// says otherwise, as Google answers for a fresh token.
pub const DEFAULT_GOOGLE_TOKEN_LIFETIME_SECS: u64 = 3599;
/// Most `instances` in one embeddings `predict` call.
pub const VERTEX_MAX_EMBEDDING_INSTANCES: usize = 250;

const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
/// Clock skew the token endpoint tolerates on `iat`.
const CLOCK_SKEW_SECS: u64 = 300;
const MISSING_CREDENTIAL: &str = "Request is missing required authentication credential. Expected OAuth 2 access \
     token, login cookie or other valid authentication credential. See \
     https://developers.google.com/identity/sign-in/web/devconsole-project.";
const INVALID_CREDENTIAL: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, \
     login cookie or other valid authentication credential. See \
     https://developers.google.com/identity/sign-in/web/devconsole-project.";

/// [`TEST_SERVICE_ACCOUNT_JSON`] with `token_uri` replaced, e.g. by
/// `format!("http://{}/token", mock.addr())`.
pub fn test_service_account(token_uri: &str) -> String {
    let mut key: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT_JSON).unwrap_or_default();
    key["token_uri"] = json!(token_uri);
    key.to_string()
}

/// Tokens issued so far and when each expires.
pub(crate) struct VertexState {
    google_tokens: AtomicUsize,
    metadata_tokens: AtomicUsize,
    lifetime: AtomicU64,
    expiries: Mutex<HashMap<String, Instant>>,
}

impl VertexState {
    pub(crate) fn new() -> Self {
        VertexState {
            google_tokens: AtomicUsize::new(0),
            metadata_tokens: AtomicUsize::new(0),
            lifetime: AtomicU64::new(DEFAULT_GOOGLE_TOKEN_LIFETIME_SECS),
            expiries: Mutex::new(HashMap::new()),
        }
    }

    /// Issues the next token of a kind, remembering its expiry; answers its body.
    fn issue(&self, prefix: &str, counter: &AtomicUsize) -> Bytes {
        let n = counter.fetch_add(1, Ordering::AcqRel) + 1;
        let lifetime = self.lifetime.load(Ordering::Acquire);
        let token = format!("{prefix}{n}");
        lock(&self.expiries).insert(token.clone(), Instant::now() + Duration::from_secs(lifetime));
        Bytes::from(
            json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}).to_string(),
        )
    }

    /// Whether a bearer token may call a model: any token the mock did not mint (one
    /// obtained elsewhere), or one it minted that has not expired.
    fn accepts(&self, token: &str) -> bool {
        if !token.starts_with(GOOGLE_TOKEN_PREFIX) && !token.starts_with(METADATA_TOKEN_PREFIX) {
            return true;
        }
        lock(&self.expiries).get(token).is_some_and(|expiry| Instant::now() < *expiry)
    }
}

impl MockUpstream {
    /// Tokens issued by the OAuth endpoint (`POST /token`), JWT and refresh-token grants.
    pub fn google_tokens_issued(&self) -> usize {
        self.shared.vertex.google_tokens.load(Ordering::Acquire)
    }

    /// Tokens issued by the metadata server.
    pub fn metadata_tokens_issued(&self) -> usize {
        self.shared.vertex.metadata_tokens.load(Ordering::Acquire)
    }

    /// Sets the `expires_in` of Google tokens (OAuth and metadata) issued from now on; the
    /// Vertex routes refuse a mock token once it has expired. Default
    /// [`DEFAULT_GOOGLE_TOKEN_LIFETIME_SECS`].
    pub fn set_google_token_lifetime(&self, seconds: u64) {
        self.shared.vertex.lifetime.store(seconds, Ordering::Release);
    }
}

/// The Vertex methods the mock answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum VertexMethod {
    GenerateContent,
    StreamGenerateContent,
    Predict,
    RawPredict,
    StreamRawPredict,
}

/// A route of this module.
pub(crate) enum Route<'a> {
    /// `POST /token`: Google's OAuth 2.0 token endpoint.
    Token,
    /// `GET /computeMetadata/v1/instance/service-accounts/default/token`.
    MetadataToken,
    /// `GET /computeMetadata/v1/project/project-id`.
    MetadataProject,
    /// `POST /v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}`.
    Model { model: &'a str, method: VertexMethod },
}

/// `(publisher, model, method)` of a Vertex publisher-model path (`/v1/` or `/v1beta1/`).
fn model_path(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/v1/").or_else(|| path.strip_prefix("/v1beta1/"))?;
    let mut segments = rest.splitn(8, '/');
    let ok = |segment: Option<&str>, expected: &str| segment == Some(expected);
    if !ok(segments.next(), "projects") {
        return None;
    }
    let _project = segments.next().filter(|s| !s.is_empty())?;
    if !ok(segments.next(), "locations") {
        return None;
    }
    let _location = segments.next().filter(|s| !s.is_empty())?;
    if !ok(segments.next(), "publishers") {
        return None;
    }
    let publisher = segments.next().filter(|s| !s.is_empty())?;
    if !ok(segments.next(), "models") {
        return None;
    }
    let (model, method) = segments.next()?.split_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((publisher, model, method))
}

/// Whether `path` is Vertex-shaped, so an unknown one gets Google's 404.
pub(crate) fn is_vertex_path(path: &str) -> bool {
    model_path(path).is_some() || path.starts_with("/computeMetadata/")
}

impl<'a> Route<'a> {
    pub(crate) fn parse(method: &Method, path: &'a str) -> Option<Self> {
        match (method, path) {
            (&Method::POST, "/token") => Some(Route::Token),
            (&Method::GET, "/computeMetadata/v1/instance/service-accounts/default/token") => {
                Some(Route::MetadataToken)
            }
            (&Method::GET, "/computeMetadata/v1/project/project-id") => Some(Route::MetadataProject),
            (&Method::POST, _) => {
                let (publisher, model, method) = model_path(path)?;
                let method = match (publisher, method) {
                    ("google", "generateContent") => VertexMethod::GenerateContent,
                    ("google", "streamGenerateContent") => VertexMethod::StreamGenerateContent,
                    ("google", "predict") => VertexMethod::Predict,
                    ("anthropic", "rawPredict") => VertexMethod::RawPredict,
                    ("anthropic", "streamRawPredict") => VertexMethod::StreamRawPredict,
                    _ => return None,
                };
                Some(Route::Model { model, method })
            }
            _ => None,
        }
    }

    /// Google-shaped errors on the model routes; OAuth-shaped ones on the token routes.
    pub(crate) fn api(&self) -> Api {
        match self {
            Route::Model { .. } => Api::Gemini,
            Route::Token | Route::MetadataToken | Route::MetadataProject => Api::Entra,
        }
    }

    /// Token and metadata routes are infrastructure: like Entra's, they take no scripted
    /// behaviour, so a queued failure still reaches the model call.
    pub(crate) fn is_infrastructure(&self) -> bool {
        !matches!(self, Route::Model { .. })
    }
}

/// Answers a token or metadata route.
pub(crate) fn infrastructure(
    shared: &Shared,
    route: &Route<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<MockBody> {
    match route {
        Route::Token => token(shared, headers, body),
        Route::MetadataToken | Route::MetadataProject => {
            // The metadata server refuses requests that do not say they expect it.
            if headers.get("metadata-flavor").is_none_or(|flavor| flavor != "Google") {
                return metadata_answer(
                    StatusCode::FORBIDDEN,
                    "text/html",
                    Bytes::from_static(b"Missing required header \"Metadata-Flavor\": \"Google\"\n"),
                );
            }
            if let Route::MetadataToken = route {
                let state = &shared.vertex;
                metadata_answer(
                    StatusCode::OK,
                    "application/json",
                    state.issue(METADATA_TOKEN_PREFIX, &state.metadata_tokens),
                )
            } else {
                metadata_answer(
                    StatusCode::OK,
                    "application/text",
                    Bytes::from_static(METADATA_PROJECT.as_bytes()),
                )
            }
        }
        Route::Model { .. } => {
            handler::token_error(StatusCode::NOT_FOUND, "invalid_request", "not a token route")
        }
    }
}

fn metadata_answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert("metadata-flavor", HeaderValue::from_static("Google"));
    response
}

/// Google's OAuth 2.0 token endpoint: the `jwt-bearer` grant of a service account (its
/// assertion verified) or a gcloud user's `refresh_token` grant.
fn token(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response<MockBody> {
    let refuse =
        |error: &str, description: &str| handler::token_error(StatusCode::BAD_REQUEST, error, description);
    let form = match parse_form(body) {
        Some(form) => form,
        None => return refuse("invalid_request", "The request body is not a valid form."),
    };
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    match field("grant_type") {
        Some(JWT_BEARER_GRANT) => {
            let Some(assertion) = field("assertion") else {
                return refuse("invalid_request", "Missing required parameter: assertion");
            };
            let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
            if let Err((error, description)) =
                verify_assertion(assertion, &format!("http://{host}/token"), unix_now())
            {
                return refuse(error, &description);
            }
        }
        Some("refresh_token") => {
            for name in ["client_id", "client_secret", "refresh_token"] {
                if field(name).is_none() {
                    return refuse("invalid_request", &format!("Missing required parameter: {name}"));
                }
            }
        }
        Some(other) => return refuse("unsupported_grant_type", &format!("Invalid grant_type: {other}")),
        None => return refuse("unsupported_grant_type", "Invalid grant_type: "),
    }
    let state = &shared.vertex;
    handler::json(Api::Entra, 0, StatusCode::OK, state.issue(GOOGLE_TOKEN_PREFIX, &state.google_tokens))
}

fn parse_form(body: &[u8]) -> Option<HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut form = HashMap::new();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        form.entry(azure::form_decode(key)?).or_insert(azure::form_decode(value)?);
    }
    Some(form)
}

/// Checks a service account's JWT as Google does: RS256, signed by the test key, issued by
/// the test service account for this endpoint, asking for the cloud-platform scope, and
/// short-lived. The `Err` is OAuth's `(error, error_description)`.
fn verify_assertion(assertion: &str, audience: &str, now: u64) -> Result<(), (&'static str, String)> {
    let invalid = |description: &str| ("invalid_grant", description.to_owned());
    let mut parts = assertion.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("Invalid JWT: not three base64url parts."));
    };
    let decode_json =
        |part: &str| -> Option<Value> { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok() };
    let (Some(header_json), Some(claims_json)) = (decode_json(header), decode_json(claims)) else {
        return Err(invalid("Invalid JWT: header or claims are not base64url JSON."));
    };
    if header_json.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid("Invalid JWT: the algorithm must be RS256."));
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid("Invalid JWT Signature."))?;
    let public_key =
        pem_body(TRUSTED_PUBLIC_KEY_PEM).ok_or_else(|| invalid("mock: the trusted key is unreadable"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| invalid("Invalid JWT Signature."))?;
    let claim = |name: &str| claims_json.get(name);
    if claim("iss").and_then(Value::as_str) != Some(TEST_SERVICE_ACCOUNT_EMAIL) {
        return Err(invalid("Invalid grant: account not found"));
    }
    let aud = claim("aud").and_then(Value::as_str).unwrap_or_default();
    if aud != audience {
        return Err(invalid(&format!(
            "Invalid JWT: Failed audience check. The expected value was {audience}, but the actual value was {aud}."
        )));
    }
    let scopes = claim("scope").and_then(Value::as_str).unwrap_or_default();
    if scopes.is_empty() {
        return Err(("invalid_scope", "Empty or missing scope not allowed.".to_owned()));
    }
    if !scopes.split(' ').any(|scope| scope == CLOUD_PLATFORM_SCOPE) {
        return Err(("invalid_scope", format!("Vertex AI needs the scope {CLOUD_PLATFORM_SCOPE}.")));
    }
    let (Some(iat), Some(exp)) = (claim("iat").and_then(Value::as_u64), claim("exp").and_then(Value::as_u64))
    else {
        return Err(invalid("Invalid JWT: iat and exp are required."));
    };
    if exp <= now || iat > now + CLOCK_SKEW_SECS || exp < iat || exp - iat > 3600 {
        return Err(invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your \
             iat and exp values in the JWT claim.",
        ));
    }
    Ok(())
}

/// The decoded bytes of the first PEM block.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Answers a model route once its behaviour has been applied: the bearer token is checked
/// (as Google checks it, after routing), then the publisher's API answers.
pub(crate) fn model_call(
    shared: &Arc<Shared>,
    route: &Route<'_>,
    headers: &HeaderMap,
    body: &[u8],
    answer: Answer,
) -> Response<MockBody> {
    let Route::Model { model, method } = *route else {
        return handler::gemini_error(
            answer.request_id,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "not a model route",
        );
    };
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim());
    let unauthenticated = |message| {
        handler::gemini_error(answer.request_id, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    };
    match bearer {
        None => return unauthenticated(MISSING_CREDENTIAL),
        Some(token) if !shared.vertex.accepts(token) => return unauthenticated(INVALID_CREDENTIAL),
        Some(_) => {}
    }
    match method {
        VertexMethod::GenerateContent | VertexMethod::StreamGenerateContent => {
            if let Err(message) = check_roles(body) {
                return handler::invalid_gemini(answer.request_id, message);
            }
            // Vertex streams SSE only with `?alt=sse`; the gateway always asks for it, and
            // the handler's Gemini answer takes the framing from the caller.
            let framing = (method == VertexMethod::StreamGenerateContent).then_some(gemini::Framing::Sse);
            handler::gemini_generate(shared, model, body, answer, framing)
        }
        VertexMethod::Predict => predict(body, answer.request_id),
        VertexMethod::RawPredict | VertexMethod::StreamRawPredict => {
            claude(shared, model, body, answer, method == VertexMethod::StreamRawPredict)
        }
    }
}

/// Vertex (unlike AI Studio) wants every turn's `role`, and only `user` or `model`.
fn check_roles(body: &[u8]) -> Result<(), &'static str> {
    #[derive(Deserialize)]
    struct Roles {
        #[serde(default)]
        contents: Option<Vec<RoleOnly>>,
    }
    #[derive(Deserialize)]
    struct RoleOnly {
        #[serde(default)]
        role: Option<String>,
    }
    let Ok(roles) = serde_json::from_slice::<Roles>(body) else {
        return Ok(()); // the Gemini handler reports the unreadable body
    };
    let valid = roles.contents.iter().flatten().all(|c| matches!(c.role.as_deref(), Some("user" | "model")));
    if valid { Ok(()) } else { Err("Please use a valid role: user, model.") }
}

/// The embeddings `predict`: `{"instances": [{"content": ...}], "parameters":
/// {"outputDimensionality"}}` answered with one prediction per instance.
fn predict(body: &[u8], request_id: u64) -> Response<MockBody> {
    #[derive(Deserialize)]
    struct PredictRequest {
        #[serde(default)]
        instances: Option<Vec<Instance>>,
        #[serde(default)]
        parameters: Option<Parameters>,
    }
    #[derive(Deserialize)]
    struct Instance {
        #[serde(default)]
        content: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Parameters {
        #[serde(default)]
        output_dimensionality: Option<u64>,
    }
    let request: PredictRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => {
            return handler::invalid_gemini(request_id, &format!("Invalid JSON payload received. {err}"));
        }
    };
    let instances = match request.instances {
        Some(instances) if !instances.is_empty() => instances,
        _ => return handler::invalid_gemini(request_id, "instances must not be empty"),
    };
    if instances.len() > VERTEX_MAX_EMBEDDING_INSTANCES {
        let message =
            format!("Too many instances: at most {VERTEX_MAX_EMBEDDING_INSTANCES} are allowed per request.");
        return handler::invalid_gemini(request_id, &message);
    }
    let dimensions = match request.parameters.and_then(|p| p.output_dimensionality) {
        None => EMBEDDING_DIMENSIONS,
        Some(d) if (1..=MAX_EMBEDDING_DIMENSIONS as u64).contains(&d) => d as usize,
        Some(d) => {
            return handler::invalid_gemini(request_id, &format!("outputDimensionality {d} is out of range"));
        }
    };
    let mut characters = 0;
    let mut predictions = Vec::with_capacity(instances.len());
    for (index, instance) in instances.iter().enumerate() {
        let Some(content) = instance.content.as_deref() else {
            return handler::invalid_gemini(request_id, &format!("instances[{index}].content is required"));
        };
        characters += content.chars().count();
        predictions.push(json!({"embeddings": {
            "values": embedding_vector(index, dimensions),
            "statistics": {"truncated": false, "token_count": EMBEDDING_TOKENS_PER_INPUT},
        }}));
    }
    let answer = json!({"predictions": predictions, "metadata": {"billableCharacterCount": characters}});
    handler::json(Api::Gemini, request_id, StatusCode::OK, Bytes::from(answer.to_string()))
}

/// Claude through `rawPredict` / `streamRawPredict`: Anthropic's Messages API without
/// `model` in the body (the URL names it) and with Vertex's `anthropic_version` in it;
/// errors from the model are Anthropic's, the answers are [`crate::handler`]'s Messages
/// answers (tool-call rule included) naming the model of the URL.
fn claude(
    shared: &Arc<Shared>,
    model: &str,
    body: &[u8],
    answer: Answer,
    streamed: bool,
) -> Response<MockBody> {
    #[derive(Deserialize)]
    struct VertexFields {
        #[serde(default)]
        anthropic_version: Option<String>,
        #[serde(default)]
        model: Option<IgnoredAny>,
    }
    let request_id = answer.request_id;
    let fields: VertexFields = match serde_json::from_slice(body) {
        Ok(fields) => fields,
        Err(err) => return handler::invalid_anthropic(request_id, &format!("invalid request body: {err}")),
    };
    match fields.anthropic_version.as_deref() {
        Some(VERTEX_ANTHROPIC_VERSION) => {}
        None => return handler::invalid_anthropic(request_id, "anthropic_version: field required"),
        Some(other) => {
            let message =
                format!("anthropic_version: '{other}' is not supported; use '{VERTEX_ANTHROPIC_VERSION}'");
            return handler::invalid_anthropic(request_id, &message);
        }
    }
    if fields.model.is_some() {
        return handler::invalid_anthropic(request_id, "model: Extra inputs are not permitted");
    }
    let request: anthropic::MessagesRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return handler::invalid_anthropic(request_id, &format!("invalid request body: {err}")),
    };
    match request.max_tokens {
        None => return handler::invalid_anthropic(request_id, "max_tokens: field required"),
        Some(0) => {
            return handler::invalid_anthropic(request_id, "max_tokens: must be greater than or equal to 1");
        }
        Some(_) => {}
    }
    if request.messages.as_ref().is_none_or(Vec::is_empty) {
        return handler::invalid_anthropic(request_id, "messages: at least one message is required");
    }
    if request.stream.unwrap_or(false) != streamed {
        let message = if streamed {
            "streamRawPredict needs \"stream\": true"
        } else {
            "rawPredict answers whole messages; use streamRawPredict with \"stream\": true"
        };
        return handler::invalid_anthropic(request_id, message);
    }
    let tool = request.tool_to_call();
    if streamed {
        handler::stream(shared, answer, anthropic::message_stream_events(model, tool, answer.chunks))
    } else {
        handler::serialized(Api::Gemini, request_id, anthropic::message(model, tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_paths_are_parsed() {
        let route = Route::parse(
            &Method::POST,
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
        );
        assert!(matches!(
            route,
            Some(Route::Model { model: "gemini-2.5-flash", method: VertexMethod::StreamGenerateContent })
        ));
        let route = Route::parse(
            &Method::POST,
            "/v1/projects/p/locations/l/publishers/anthropic/models/claude-x@1:rawPredict",
        );
        assert!(matches!(
            route,
            Some(Route::Model { model: "claude-x@1", method: VertexMethod::RawPredict })
        ));
        assert!(
            Route::parse(&Method::POST, "/v1/projects/p/locations/l/publishers/anthropic/models/c:predict")
                .is_none()
        );
        assert!(
            Route::parse(&Method::POST, "/v1/projects/p/locations/l/publishers/google/models/a/b:predict")
                .is_none()
        );
        assert!(Route::parse(&Method::GET, "/computeMetadata/v1/project/project-id").is_some());
        assert!(is_vertex_path("/v1/projects/p/locations/l/publishers/meta/models/llama:rawPredict"));
    }

    #[test]
    fn only_well_formed_short_lived_test_assertions_pass() {
        let now = 1_700_000_000;
        let aud = "http://127.0.0.1:9/token";
        let sign = |claims: Value, alg: &str| -> String {
            // Signed with the test key, as the gateway signs it.
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
            let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
            let key: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT_JSON).unwrap();
            let der = pem_body(key["private_key"].as_str().unwrap()).unwrap();
            let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
            let mut signature = vec![0; pair.public().modulus_len()];
            pair.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                format!("{header}.{claims}").as_bytes(),
                &mut signature,
            )
            .unwrap();
            format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(signature))
        };
        let claims = |f: &dyn Fn(&mut Value)| {
            let mut claims = json!({"iss": TEST_SERVICE_ACCOUNT_EMAIL, "scope": CLOUD_PLATFORM_SCOPE, "aud": aud, "iat": now, "exp": now + 3600});
            f(&mut claims);
            claims
        };
        assert!(verify_assertion(&sign(claims(&|_| {}), "RS256"), aud, now).is_ok());
        let error = |assertion: String| verify_assertion(&assertion, aud, now).unwrap_err();
        assert_eq!(error(sign(claims(&|_| {}), "HS256")).1, "Invalid JWT: the algorithm must be RS256.");
        assert_eq!(
            error(sign(claims(&|c| c["iss"] = json!("x@y")), "RS256")).1,
            "Invalid grant: account not found"
        );
        assert!(
            error(sign(claims(&|c| c["aud"] = json!("https://oauth2.googleapis.com/token")), "RS256"))
                .1
                .contains("audience")
        );
        assert_eq!(error(sign(claims(&|c| c["scope"] = json!("")), "RS256")).0, "invalid_scope");
        assert!(error(sign(claims(&|c| c["exp"] = json!(now + 7200)), "RS256")).1.contains("short-lived"));
        assert!(error(sign(claims(&|c| c["exp"] = json!(now - 1)), "RS256")).1.contains("short-lived"));
        let good = sign(claims(&|_| {}), "RS256");
        let (signed, _) = good.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
        assert_eq!(error(forged).1, "Invalid JWT Signature.");
    }

    #[test]
    fn the_fixture_swaps_its_token_uri() {
        let key: Value = serde_json::from_str(&test_service_account("http://h:1/token")).unwrap();
        assert_eq!(key["token_uri"], "http://h:1/token");
        assert_eq!(key["client_email"], TEST_SERVICE_ACCOUNT_EMAIL);
        assert_eq!(key["project_id"], TEST_SERVICE_ACCOUNT_PROJECT);
    }
}
