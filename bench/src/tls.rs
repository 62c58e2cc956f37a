//! The TLS cells' certificate: one self-signed ECDSA P-256 certificate for 127.0.0.1 and
//! localhost, written once per run in the forms the proxies read (HAProxy wants the chain and
//! the key in one file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key, in one PEM file.
    pub combined: PathBuf,
    /// A client that trusts this certificate (and nothing else), for the readiness probe.
    pub client: Arc<rustls::ClientConfig>,
}

pub fn write(dir: &Path) -> Result<TlsFiles, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("TLS key: {e}"))?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| format!("TLS certificate: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.der().clone())
        .map_err(|e| format!("TLS root: {e}"))?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS client: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let files = TlsFiles {
        cert: dir.join("bench-cert.pem"),
        key: dir.join("bench-key.pem"),
        combined: dir.join("bench-combined.pem"),
        client: Arc::new(client),
    };
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    for (path, text) in [
        (&files.cert, cert_pem.clone()),
        (&files.key, key_pem.clone()),
        (&files.combined, cert_pem + &key_pem),
    ] {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(files)
}

/// One HTTPS request on a new connection: `idle::one`'s readiness probe, over TLS.
pub fn one(addr: std::net::SocketAddr, files: &TlsFiles) -> Result<(), String> {
    let tcp = crate::idle::dial(addr)?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(files.client.clone(), name)
        .map_err(|e| format!("TLS: {e}"))?;
    crate::idle::exchange(&mut rustls::StreamOwned::new(conn, tcp))
}
