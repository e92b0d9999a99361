//! HTTPS: the gateway serves TLS from PEM files, as LiteLLM's --ssl_certfile_path /
//! --ssl_keyfile_path flags configure it.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::TestGateway;

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();

    let gateway =
        TestGateway::start_with(tollgate::DEMO_CONFIG, |g| g.with_tls(&cert_path, &key_path).unwrap()).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let url = format!("https://localhost:{}/v1/chat/completions", gateway.addr.port());
    let body = r#"{"model":"demo","messages":[{"role":"user","content":"over tls"}]}"#;
    let request = http::Request::post(url).body(Full::new(Bytes::from(body))).unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2, "ALPN offers h2");
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Tollgate's demo model. You said: over tls"
    );

    assert!(
        tollgate::Gateway::from_config(
            tollgate::GatewayConfig::demo(&std::collections::HashMap::new()).unwrap()
        )
        .await
        .unwrap()
        .with_tls(&dir.join("missing.pem"), &key_path)
        .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
