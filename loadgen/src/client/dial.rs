//! Opening connections: plain TCP, or TLS through rustls (ring provider) with optional
//! certificate verification for self-signed test upstreams.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio_rustls::TlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Opens one connection of a fixed kind; a connection task redials through it after errors.
pub(crate) trait Dial {
    type Stream: AsyncReadRent + AsyncWriteRent;
    async fn dial(&self) -> io::Result<Self::Stream>;
}

pub struct PlainDial {
    pub addr: SocketAddr,
}

async fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_addr(addr).await?;
    // Requests are written whole; Nagle would only delay pipelined batches.
    s.set_nodelay(true)?;
    Ok(s)
}

impl Dial for PlainDial {
    type Stream = TcpStream;
    async fn dial(&self) -> io::Result<TcpStream> {
        tcp(self.addr).await
    }
}

pub struct TlsDial {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl Dial for TlsDial {
    type Stream = monoio_rustls::ClientTlsStream<TcpStream>;
    async fn dial(&self) -> io::Result<Self::Stream> {
        let s = tcp(self.addr).await?;
        self.connector
            .connect(self.name.clone(), s)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))
    }
}

/// rustls client settings shared by all threads.
pub fn tls_config(insecure: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(browser_order(rustls::crypto::ring::default_provider()));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The provider with its cipher suites in the order browsers offer them (Chrome and Firefox
/// put AES-128-GCM first), rather than rustls' own (AES-256 first): servers that follow the
/// client's order, as nginx and HAProxy do by default, then run what they run for real
/// traffic, including SHA-256 rather than SHA-384 in every handshake.
fn browser_order(mut p: rustls::crypto::CryptoProvider) -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let rank = |s: S| match s {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        _ => 4,
    };
    // Stable: the TLS 1.2 suites keep rustls' order among themselves.
    p.cipher_suites.sort_by_key(|s| rank(s.suite()));
    p
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("TLS server name {host}: {e}"))
}

/// `--insecure`: accepts any certificate but still checks handshake signatures, so the
/// cryptographic cost being measured stays that of a real handshake.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::CipherSuite as S;

    #[test]
    fn suites_are_offered_in_browser_order() {
        let p = super::browser_order(rustls::crypto::ring::default_provider());
        let order: Vec<S> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            order[..3],
            [
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        // Nothing offered before is lost.
        assert_eq!(
            order.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }
}
