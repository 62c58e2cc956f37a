//! A client connection over TLS: rustls' server connection on a monoio socket. Everything
//! rustls has to send goes out in one send (a handshake flight of several records, the
//! session tickets together with the first response), where a writer taking one record per
//! call (monoio-rustls') makes a send, and on loopback a wake-up of the peer, of each.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::server::{ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// The receive buffer's size to begin with and to come back to: a request's records fit, and
/// an idle connection's pending receive holds no more than this.
const MIN_READ: usize = 2 * 1024;
/// The most a receive asks for: one full TLS record and its header.
const MAX_READ: usize = 16 * 1024 + 5;
/// A send buffer grown past this by a large response goes back to the allocator after it.
const KEEP_WRITE_BUF: usize = 4 * 1024;

pub struct TlsClient {
    tcp: TcpStream,
    conn: ServerConnection,
    /// Ciphertext received from the socket (reused for every receive); rustls has taken it
    /// up to `rstart`.
    rbuf: Vec<u8>,
    rstart: usize,
    /// What the next receive asks for: doubled after a receive that filled its buffer (an
    /// upload), back to `MIN_READ` after a small one.
    read_size: usize,
    /// Ciphertext rustls produced, until sent (reused).
    wbuf: Vec<u8>,
    /// The socket has reported its end.
    eof: bool,
    /// A tunnel ran on the connection (`super::tunnel`): whatever it ended with, nothing more
    /// may be written, not even close_notify (the tunnel sent its own, or was cut mid-record).
    tunnelled: bool,
}

/// What a new connection turned out to be.
// Returned once per connection and moved straight into its task: boxing the large variant
// would cost every TLS connection an allocation and a pointer to follow for its whole life.
#[allow(clippy::large_enum_variant)]
pub enum Accepted {
    /// The handshake is done.
    Tls(TlsClient),
    /// The client's first bytes are a plain HTTP request (an upper-case method, where a TLS
    /// record starts with 22): the socket comes back for an answer it can read.
    PlainHttp(TcpStream),
}

/// Runs the server side of the handshake on `tcp`. Not cancel-safe: time it out by shutting
/// the socket down (as the connection's deadlines do), not by dropping the future. Session
/// tickets issued at the end stay queued: they leave with the first response, or before the
/// first wait for the client's next bytes.
pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<Accepted> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut c = TlsClient {
        tcp,
        conn,
        rbuf: Vec::new(),
        rstart: 0,
        read_size: MIN_READ,
        wbuf: Vec::new(),
        eof: false,
        tunnelled: false,
    };
    // The client speaks first: its first bytes are looked at before rustls takes them. The
    // wait for them comes first and alone: with the receive submitted before the bytes
    // arrived, the handshake cell ran 15% fewer handshakes per second at the same CPU per
    // handshake, the worker idle meanwhile (likely the receive's retry waiting in deferred
    // task work for the next ring entry).
    let _ = c.tcp.readable(true).await;
    c.read_socket().await?;
    if c.rbuf.first().is_some_and(u8::is_ascii_uppercase) {
        return Ok(Accepted::PlainHttp(c.tcp));
    }
    while c.conn.is_handshaking() {
        if c.conn.wants_write() {
            c.send_pending().await?;
        } else if c.receive().await? == 0 && (c.eof || !c.conn.wants_read()) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Accepted::Tls(c))
}

impl TlsClient {
    /// Sends everything rustls has queued, in one write.
    async fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            // `Vec`'s `write_vectored` takes every queued record in one call.
            self.conn.write_tls(&mut self.wbuf)?;
        }
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let (res, mut buf) = self.tcp.write_all(std::mem::take(&mut self.wbuf)).await;
        if buf.capacity() <= KEEP_WRITE_BUF {
            buf.clear();
            self.wbuf = buf;
        }
        res.map(drop)
    }

    /// Hands rustls ciphertext: what it left of the last receive, else one receive from the
    /// socket. Returns the bytes it took, 0 at the socket's end. rustls takes only while it
    /// wants to read (not while decrypted bytes wait to be read); the rest waits in `rbuf`. A
    /// protocol error sends rustls' alert (best effort) before it is returned.
    async fn receive(&mut self) -> io::Result<usize> {
        if self.rstart == self.rbuf.len() && self.read_socket().await? == 0 {
            return Ok(0);
        }
        let before = self.rstart;
        while self.rstart < self.rbuf.len() && self.conn.wants_read() {
            let mut rest = &self.rbuf[self.rstart..];
            self.rstart += self.conn.read_tls(&mut rest)?;
            self.process().await?;
        }
        Ok(self.rstart - before)
    }

    /// One receive from the socket into `rbuf`, which rustls has taken whole; 0 at the
    /// socket's end, which rustls is told of.
    async fn read_socket(&mut self) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.rbuf);
        buf.clear();
        if buf.capacity() < self.read_size || buf.capacity() > 2 * self.read_size {
            buf = Vec::with_capacity(self.read_size);
        }
        let (res, buf) = self.tcp.read(buf).await;
        self.rbuf = buf;
        self.rstart = 0;
        let n = res?;
        if n == self.rbuf.capacity() {
            self.read_size = (2 * self.read_size).min(MAX_READ);
        } else if n < MIN_READ / 2 {
            self.read_size = MIN_READ;
        }
        if n == 0 {
            self.eof = true;
            // Tells rustls the stream ended, so its reader can say whether cleanly.
            self.conn.read_tls(&mut io::empty())?;
            self.process().await?;
        }
        Ok(n)
    }

    async fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.send_pending().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    /// Hands over the ciphertext received that rustls has not taken yet, and whether the
    /// socket has ended (for the tunnel, `super::tunnel`).
    pub(super) fn take_unread(&mut self) -> (Vec<u8>, bool) {
        let rest = self.rbuf[self.rstart..].to_vec();
        self.rstart = self.rbuf.len();
        self.tunnelled = true;
        (rest, self.eof)
    }

    pub(super) fn connection(&mut self) -> &mut ServerConnection {
        &mut self.conn
    }

    /// Sends close_notify, so the client can tell the end of a response delimited by the
    /// close from a truncation.
    pub async fn close_notify(&mut self) -> io::Result<()> {
        if self.tunnelled {
            return Ok(());
        }
        self.conn.send_close_notify();
        self.send_pending().await
    }
}

impl AsRawFd for TlsClient {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl AsyncReadRent for TlsClient {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: an IoBufMut's `bytes_total` bytes from `write_ptr` are writable memory (the
        // same contract monoio's own reads rely on); rustls only writes into them.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        loop {
            match self.conn.reader().read(dst) {
                Ok(n) => {
                    // SAFETY: rustls wrote `n` bytes at the start of `dst`.
                    unsafe { buf.set_init(n) };
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !self.eof => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
            // Nothing decrypted is waiting: whatever rustls still has to say (session tickets,
            // a key update) goes before the wait, which could otherwise be for an answer to it.
            if let Err(e) = self.send_pending().await {
                return (Err(e), buf);
            }
            if let Err(e) = self.receive().await {
                return (Err(e), buf);
            }
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer points into `buf`'s first iovec, which outlives the read.
        let n = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(raw) => self.read(raw).await.0,
            None => Ok(0),
        };
        if let Ok(n) = n {
            // SAFETY: `n` bytes were written into the first iovec.
            unsafe { buf.set_init(n) };
        }
        (n, buf)
    }
}

impl AsyncWriteRent for TlsClient {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: an IoBuf's first `bytes_init` bytes at `read_ptr` are initialised.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        // rustls takes up to its buffer limit (64 KiB) and frames it in records; what it
        // produced, with anything queued before it, goes out in one send.
        let n = match self.conn.writer().write(src) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        match self.send_pending().await {
            Ok(()) => (Ok(n), buf),
            Err(e) => (Err(e), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer points into `buf`'s first iovec, which outlives the write.
        let n = match unsafe { RawBuf::new_from_iovec(&buf) } {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (n, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.send_pending().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.close_notify().await?;
        self.tcp.shutdown().await
    }
}
