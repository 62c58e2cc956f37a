//! TLS termination: a listener's rustls server config, built from PEM files, and the stream
//! a handshake yields. A leaf module (rustls and monoio only), so the config validation can
//! build the config and refuse a broken certificate the way it refuses any other key.

mod sni;
mod stream;
mod tunnel;

pub use stream::{accept, Accepted, TlsClient};
pub use tunnel::tunnel;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;

/// One certificate: its chain, its key, and the SNI names it answers (none: only the default).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Lower-case host names, exact or `*.`-wildcard.
    pub names: Vec<String>,
}

/// What a listener's TLS needs: the certificates (the first is the default) and the oldest
/// protocol version it accepts.
#[derive(Debug, Clone)]
pub struct Settings {
    pub certs: Vec<CertFiles>,
    pub tls13_only: bool,
}

/// Why a certificate cannot be used: which one (index into `Settings::certs`), which of its
/// files (`"cert"` or `"key"`), and the reason.
#[derive(Debug)]
pub struct TlsError {
    pub cert: usize,
    pub field: &'static str,
    pub reason: String,
}

/// Builds the server config for `settings`: every file is read and checked here, at start or
/// reload, so a handshake never meets a broken certificate.
pub fn server_config(settings: &Settings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(default_provider());
    let mut resolver = sni::Resolver::default();
    for (i, files) in settings.certs.iter().enumerate() {
        let key = certified_key(files, &provider).map_err(|(field, reason)| TlsError {
            cert: i,
            field,
            reason,
        })?;
        resolver.add(Arc::new(key), &files.names);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if settings.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let fail = |reason: String| TlsError {
        cert: 0,
        field: "cert",
        reason,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // Ringway speaks HTTP/1.1 to clients; a client offering h2 as well settles on it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless tickets: a client resumes on whichever worker SO_REUSEPORT hands it to.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Reads one certificate chain and its key, and checks that they belong together.
fn certified_key(
    files: &CertFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, (&'static str, String)> {
    let shown = |p: &PathBuf| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ("cert", format!("{}: {}", shown(&files.cert), pem_reason(e))))?;
    if chain.is_empty() {
        return Err((
            "cert",
            format!("{}: no CERTIFICATE block in the file", shown(&files.cert)),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ("key", format!("{}: {}", shown(&files.key), pem_reason(e))))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ("key", format!("{}: {e}", shown(&files.key))))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err((
            "key",
            format!(
                "{}: does not match the certificate in {}",
                shown(&files.key),
                shown(&files.cert)
            ),
        )),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(("cert", format!("{}: {e}", shown(&files.cert)))),
    }
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}
