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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
