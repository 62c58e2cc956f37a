//! A client connection after its TLS handshake: monoio-rustls' stream, plus the socket's
//! descriptor, which the stream does not lend out but the connection's deadlines shut down.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::server::ServerConfig;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

pub struct TlsClient {
    stream: monoio_rustls::ServerTlsStream<TcpStream>,
    fd: RawFd,
}

/// Runs the server side of the handshake on `tcp`. Not cancel-safe: time it out by shutting
/// the socket down (as the connection's deadlines do), not by dropping the future.
pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> std::io::Result<TlsClient> {
    let fd = tcp.as_raw_fd();
    match monoio_rustls::TlsAcceptor::from(config).accept(tcp).await {
        Ok(stream) => Ok(TlsClient { stream, fd }),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

impl AsRawFd for TlsClient {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsyncReadRent for TlsClient {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.stream.read(buf)
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.stream.readv(buf)
    }
}

impl AsyncWriteRent for TlsClient {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.stream.write(buf)
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.stream.writev(buf)
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.stream.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.stream.shutdown()
    }
}
