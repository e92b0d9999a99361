//! How a Bedrock request is authenticated: a SigV4 signature (aws-sigv4) over the method,
//! URL, headers and body with the deployment's access keys, or a Bedrock API key sent as a
//! bearer token.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http_body_util::Full;
use tollgate_domain::{Deployment, Secret};

use crate::{ProviderError, transport};

/// The SigV4 signing name of Bedrock's runtime API (its host is `bedrock-runtime.…`).
pub(crate) const SIGNING_NAME: &str = "bedrock";

/// The credential a request is sent with, once any temporary keys have been obtained.
pub(crate) enum Credential<'a> {
    /// A Bedrock API key.
    Bearer(&'a Secret),
    Keys {
        access_key_id: &'a str,
        secret_access_key: &'a Secret,
        session_token: Option<&'a Secret>,
    },
}

/// Adds the credential to a request whose method, URL, headers and body are final.
pub(crate) fn authenticate(
    request: &mut http::Request<Full<Bytes>>,
    body: &[u8],
    credential: &Credential<'_>,
    region: &str,
    deployment: &Deployment,
    now: SystemTime,
) -> Result<(), ProviderError> {
    match credential {
        Credential::Bearer(token) => {
            let value = transport::secret_header(&format!("Bearer {}", token.expose()), deployment)?;
            request.headers_mut().insert(AUTHORIZATION, value);
            Ok(())
        }
        Credential::Keys { access_key_id, secret_access_key, session_token } => {
            let credentials = Credentials::new(
                *access_key_id,
                secret_access_key.expose(),
                session_token.map(|t| t.expose().to_owned()),
                None,
                "tollgate-config",
            );
            sign_v4(request, body, credentials, region, SIGNING_NAME, now)
        }
    }
}

/// Signs `request` in place: adds `x-amz-date`, `authorization` and, for temporary
/// credentials, `x-amz-security-token`.
fn sign_v4(
    request: &mut http::Request<Full<Bytes>>,
    body: &[u8],
    credentials: Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), ProviderError> {
    let failed =
        |reason: String| ProviderError::BadRequest(format!("cannot sign the bedrock request: {reason}"));
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(e.to_string()))?
        .into();
    let uri = request.uri().to_string();
    let mut headers = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let value = value.to_str().map_err(|_| failed(format!("header '{name}' is not printable ASCII")))?;
        headers.push((name.as_str(), value));
    }
    let signable =
        SignableRequest::new(request.method().as_str(), &uri, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| failed(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| failed(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(request);
    if let Some(value) = request.headers_mut().get_mut(AUTHORIZATION) {
        value.set_sensitive(true);
    }
    if let Some(value) = request.headers_mut().get_mut("x-amz-security-token") {
        value.set_sensitive(true);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 2015-08-30T12:36:00Z, the date of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn suite_credentials() -> Credentials {
        Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "test")
    }

    fn signed(method: &str, url: &str) -> http::Request<Full<Bytes>> {
        let mut request =
            http::Request::builder().method(method).uri(url).body(Full::new(Bytes::new())).unwrap();
        sign_v4(&mut request, b"", suite_credentials(), "us-east-1", "service", suite_time()).unwrap();
        request
    }

    #[test]
    fn matches_the_aws_sigv4_test_suite() {
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        // get-vanilla
        let request = signed("GET", "https://example.amazonaws.com/");
        assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            request.headers()["authorization"],
            format!("{prefix}5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31").as_str()
        );
        assert!(request.headers()["authorization"].is_sensitive());
        // get-vanilla-query-order-key-case: the query is sorted before signing.
        let request = signed("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1");
        assert_eq!(
            request.headers()["authorization"],
            format!("{prefix}b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500").as_str()
        );
        // post-vanilla
        let request = signed("POST", "https://example.amazonaws.com/");
        assert_eq!(
            request.headers()["authorization"],
            format!("{prefix}5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b").as_str()
        );
    }

    #[test]
    fn temporary_credentials_send_their_session_token() {
        let mut request =
            http::Request::post("https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
        let credentials =
            Credentials::new("ASIAEXAMPLE", "secret", Some("session-token".into()), None, "test");
        sign_v4(&mut request, b"{}", credentials, "eu-west-1", SIGNING_NAME, suite_time()).unwrap();
        assert_eq!(request.headers()["x-amz-security-token"], "session-token");
        let authorization = request.headers()["authorization"].to_str().unwrap();
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20150830/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{authorization}"
        );
    }
}
