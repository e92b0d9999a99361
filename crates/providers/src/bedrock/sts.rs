//! Temporary AWS credentials from STS `AssumeRoleWithWebIdentity`, for Bedrock deployments
//! that run with a web identity (an EKS service account's projected token, IRSA): the token
//! file is read afresh for each exchange (the platform rotates it), and the keys are cached
//! per role and renewed ahead of expiry so no request waits on credentials about to lapse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::{Instant, timeout};
use tollgate_domain::Secret;
use tollgate_domain::deployment::WebIdentity;

use crate::{HttpClient, ProviderError};

/// The session length asked for: STS's default, and the least any role allows.
const SESSION_SECONDS: u64 = 3600;
/// Keys are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The longest an STS exchange may take.
const STS_TIMEOUT: Duration = Duration::from_secs(15);
/// The most an STS answer (or a token file) may weigh.
const MAX_STS_RESPONSE: usize = 64 * 1024;

/// Keys for SigV4 that come with a session token.
#[derive(Clone)]
pub(crate) struct TemporaryKeys {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
}

struct Cached {
    keys: TemporaryKeys,
    renew_at: Instant,
}

/// One slot per role; the async mutex makes concurrent requests share one exchange.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

pub(crate) struct WebIdentityCredentials {
    client: HttpClient,
    slots: Mutex<HashMap<String, Slot>>,
}

impl WebIdentityCredentials {
    pub(crate) fn new(client: HttpClient) -> Self {
        Self { client, slots: Mutex::new(HashMap::new()) }
    }

    /// Valid keys for this identity, from the cache or freshly exchanged.
    pub(crate) async fn keys(&self, identity: &WebIdentity) -> Result<TemporaryKeys, ProviderError> {
        let key = format!(
            "{}\n{}\n{}\n{}",
            identity.sts_endpoint, identity.role_arn, identity.token_file, identity.session_name
        );
        let slot =
            Arc::clone(self.slots.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default());
        let mut cached = slot.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.renew_at
        {
            return Ok(current.keys.clone());
        }
        let keys = self.exchange(identity).await?;
        let lifetime = Duration::from_secs(SESSION_SECONDS);
        *cached = Some(Cached {
            keys: keys.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(RENEW_BEFORE),
        });
        Ok(keys)
    }

    async fn exchange(&self, identity: &WebIdentity) -> Result<TemporaryKeys, ProviderError> {
        let failed = |reason: String| ProviderError::Upstream {
            status: 401,
            message: format!("could not assume role {} with a web identity: {reason}", identity.role_arn),
            error_type: Some("authentication_error".to_owned()),
            param: None,
            code: None,
            retry_after: None,
        };
        let token = tokio::fs::read_to_string(&identity.token_file)
            .await
            .map_err(|e| failed(format!("cannot read the token file {}: {e}", identity.token_file)))?;
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_STS_RESPONSE {
            return Err(failed(format!("the token file {} holds no usable token", identity.token_file)));
        }
        let form = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&DurationSeconds={SESSION_SECONDS}&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
            form_encode(&identity.role_arn),
            form_encode(&identity.session_name),
            form_encode(token),
        );
        // AssumeRoleWithWebIdentity is not signed: the token is the credential.
        let request = http::Request::post(format!("{}/", identity.sts_endpoint))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "text/xml")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| failed(e.to_string()))?;
        let (status, body) = timeout(STS_TIMEOUT, async {
            let response = self.client.request(request).await.map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_STS_RESPONSE)
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            Ok::<_, ProviderError>((status, body))
        })
        .await
        .map_err(|_| failed("STS did not answer in time".to_owned()))??;
        let xml = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let code = xml_value(&xml, "Code").unwrap_or_else(|| status.to_string());
            let message = xml_value(&xml, "Message").unwrap_or_default();
            return Err(failed(format!("{code}: {message}")));
        }
        let field =
            |name: &str| xml_value(&xml, name).ok_or_else(|| failed(format!("the STS answer has no {name}")));
        Ok(TemporaryKeys {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: Secret::new(field("SecretAccessKey")?),
            session_token: Secret::new(field("SessionToken")?),
        })
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The text of the first `<name>…</name>` element, entities decoded. STS answers in a fixed
/// XML shape whose values are plain text, so no XML parser is needed.
fn xml_value(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    let text = xml[start..end].trim();
    Some(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_errors_are_read_from_stss_xml() {
        let answer = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleWithWebIdentityResult>\n    <Credentials>\n      <SessionToken>FwoG&amp;token</SessionToken>\n      <SecretAccessKey>wJal/secret</SecretAccessKey>\n      <Expiration>2026-11-23T00:00:00Z</Expiration>\n      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>\n    </Credentials>\n  </AssumeRoleWithWebIdentityResult>\n</AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_value(answer, "AccessKeyId").as_deref(), Some("ASIAEXAMPLE"));
        assert_eq!(xml_value(answer, "SessionToken").as_deref(), Some("FwoG&token"));
        assert_eq!(xml_value(answer, "Missing"), None);
        assert_eq!(form_encode("arn:aws:iam::1:role/r a"), "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr%20a");
    }
}
