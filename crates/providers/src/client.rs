//! The one HTTP client every adapter shares: hyper-util's pooled client over rustls (ring),
//! HTTP/1.1 and HTTP/2, Nagle off, idle connections kept for reuse.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the shared client. Trusts the Mozilla root set shipped in the binary, so the
/// gateway needs no CA bundle in its container.
pub fn build_http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_webpki_roots(rustls::crypto::ring::default_provider()) {
        Ok(builder) => builder,
        // ring supports every default protocol version, so this cannot fail; if it ever
        // did, the process-wide default provider is the only sensible fallback.
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    };
    let connector = builder.https_or_http().enable_http1().enable_http2().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
}
