//! Microsoft Entra ID tokens for Azure deployments configured with client credentials:
//! fetched from the identity platform's token endpoint, cached per credential, and renewed
//! ahead of expiry so no request waits on a token that is about to lapse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::{Instant, timeout};
use tollgate_domain::Secret;
use tollgate_domain::deployment::EntraCredentials;

use crate::{HttpClient, ProviderError};

/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The longest a token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// The most a token response may weigh.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

struct Cached {
    token: Secret,
    renew_at: Instant,
}

/// One slot per credential; the async mutex makes concurrent requests share one fetch.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

pub(crate) struct EntraTokens {
    client: HttpClient,
    slots: Mutex<HashMap<String, Slot>>,
}

impl EntraTokens {
    pub(crate) fn new(client: HttpClient) -> Self {
        Self { client, slots: Mutex::new(HashMap::new()) }
    }

    /// A valid token for these credentials, from the cache or freshly fetched.
    pub(crate) async fn token(&self, credentials: &EntraCredentials) -> Result<Secret, ProviderError> {
        let key = format!(
            "{}\n{}\n{}\n{}",
            credentials.authority, credentials.tenant_id, credentials.client_id, credentials.scope
        );
        let slot =
            Arc::clone(self.slots.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default());
        let mut cached = slot.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.renew_at
        {
            return Ok(current.token.clone());
        }
        let (token, lifetime) = self.fetch(credentials).await?;
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(RENEW_BEFORE),
        });
        Ok(token)
    }

    async fn fetch(&self, credentials: &EntraCredentials) -> Result<(Secret, Duration), ProviderError> {
        let failed = |reason: String| ProviderError::Upstream {
            status: 401,
            message: format!(
                "could not get an Entra ID token for client {} in tenant {}: {reason}",
                credentials.client_id, credentials.tenant_id
            ),
            error_type: Some("authentication_error".to_owned()),
            param: None,
            code: None,
            retry_after: None,
        };
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            form_encode(&credentials.client_id),
            form_encode(credentials.client_secret.expose()),
            form_encode(&credentials.scope)
        );
        let url = format!("{}/{}/oauth2/v2.0/token", credentials.authority, credentials.tenant_id);
        let request = http::Request::post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| failed(e.to_string()))?;
        let response = timeout(TOKEN_TIMEOUT, async {
            let response = self.client.request(request).await.map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE)
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            Ok::<_, ProviderError>((status, body))
        })
        .await
        .map_err(|_| failed("the token endpoint did not answer in time".to_owned()))??;
        let (status, body) = response;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !status.is_success() {
            let description =
                json.get("error_description").and_then(|d| d.as_str()).unwrap_or("no description");
            // The secret never appears in the identity platform's errors, but redact anyway.
            return Err(failed(
                credentials.client_secret.redact_from(&format!("status {status}: {description}")),
            ));
        }
        let token = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| failed("the token response has no access_token".to_owned()))?;
        let lifetime = json.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(3600);
        Ok((Secret::new(token), Duration::from_secs(lifetime)))
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub(crate) fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(
            form_encode("https://cognitiveservices.azure.com/.default"),
            "https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
        );
        assert_eq!(form_encode("a b&c=d"), "a+b%26c%3Dd");
        assert_eq!(form_encode("plain-1.2_~"), "plain-1.2_~");
    }
}
