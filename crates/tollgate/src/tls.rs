//! TLS for the listener: rustls with the ring provider, certificate and key from PEM files
//! (LiteLLM's `--ssl_certfile_path` / `--ssl_keyfile_path`), HTTP/2 and HTTP/1.1 by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

pub(crate) fn acceptor(cert_path: &Path, key_path: &Path) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| Error::Tls(format!("reading certificates from {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("no certificate found in {}", cert_path.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| Error::Tls(format!("reading the private key from {}: {e}", key_path.display())))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Tls(format!("certificate and key do not make a usable pair: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
