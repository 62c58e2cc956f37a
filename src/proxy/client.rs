//! What the per-connection pipeline needs of a client connection: plain TCP, or TLS once its
//! handshake is done, either of them wrapped for the access log. The pipeline is generic over
//! it, so the plain path compiles as before.

use super::frame::FramePool;
use super::head::ClientInfo;
use super::state::{CoreState, StateCell, WorkerCtx};
use crate::deadline::{Phase, Watch};
use crate::http::request::RequestHead;
use crate::tls::TlsClient;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

pub trait ClientStream: AsyncReadRent + AsyncWriteRent + AsRawFd {
    /// The connection is TLS: the scheme forwarded upstream is https.
    const TLS: bool;
    /// An idle keep-alive connection may wait for the socket's readability before it takes a
    /// read buffer. Not over TLS: decrypted bytes may already wait inside the stream, and a
    /// record arriving whole says nothing of what a read will return.
    const LEAN_WAIT: bool;

    /// What the connection needs once accepted, called in its own task's first poll.
    fn accepted(&self);

    /// Waits until the socket is readable (only called where `LEAN_WAIT`).
    fn wait_readable(&mut self) -> impl Future<Output = ()>;

    /// Ends the connection in its protocol's own way before the socket closes, under `watch`.
    fn close(&mut self, watch: &Watch, cell: &StateCell) -> impl Future<Output = ()>;

    /// Runs a per-request future off the connection's own: in one of the worker's pooled
    /// frames, whose fixed size the plain path's futures are checked against when compiled.
    fn framed<'p, F: Future + 'p>(
        pool: &'p FramePool,
        fut: F,
    ) -> impl Future<Output = F::Output> + Unpin + 'p;

    /// Relays bytes both ways between this client and `upstream` (an upgraded connection,
    /// after its 101) until both directions end or neither moves for `idle`. Returns the bytes
    /// the client was sent.
    fn tunnel(
        &mut self,
        upstream: TcpStream,
        worker: &WorkerCtx,
        idle: Duration,
    ) -> impl Future<Output = u64>;

    /// Its requests go to the access log (`proxy::logged`). The hooks below do nothing
    /// elsewhere, and their callers test this constant first, so an unlogged connection's
    /// code is what it was without them.
    const LOGS: bool = false;

    /// The first bytes of a request head that did not arrive whole: its time starts here.
    fn log_head_started(&mut self) {}

    /// The request is planned, on this route (None: none matched); `ids_before` is the
    /// worker's request-id count before planning.
    fn log_request(
        &mut self,
        _: &CoreState,
        _: &RequestHead<'_>,
        _: &ClientInfo,
        _route: Option<usize>,
        _ids_before: u64,
    ) {
    }

    /// A request is refused before it was understood.
    fn log_reject(&mut self, _: &CoreState, _: &ClientInfo) {}

    /// An upstream try begins on this server.
    fn log_attempt(&mut self, _: SocketAddr) {}

    /// The try's response head came with this status.
    fn log_upstream_head(&mut self, _: u16) {}

    /// The try failed with this status (502, 504...) before a response head.
    fn log_upstream_failed(&mut self, _: u16) {}

    /// The exchange ended: the line is written.
    fn log_done(&mut self, _: &CoreState) {}
}

impl ClientStream for TcpStream {
    const TLS: bool = false;
    const LEAN_WAIT: bool = true;

    fn accepted(&self) {
        let _ = self.set_nodelay(true);
        // In the task's poll: the note goes to this connection's prefetch slots.
        super::prefetch::client_socket(self);
    }

    async fn wait_readable(&mut self) {
        // Any outcome (ready, shut down by the deadline, an error) is for the read after it to
        // meet; a spurious wake-up just reads as usual.
        let _ = TcpStream::readable(self, true).await;
    }

    /// Nothing to say: dropping the socket closes it.
    async fn close(&mut self, _: &Watch, _: &StateCell) {}

    fn framed<'p, F: Future + 'p>(
        pool: &'p FramePool,
        fut: F,
    ) -> impl Future<Output = F::Output> + Unpin + 'p {
        pool.frame(fut)
    }

    /// The L4 relay, on a second descriptor of the socket: it takes its streams by value to
    /// split them, and the connection's task still owns this one.
    async fn tunnel(&mut self, upstream: TcpStream, worker: &WorkerCtx, idle: Duration) -> u64 {
        match super::upgrade::dup_socket(self) {
            Some(client) => crate::l4::relay(worker, client, upstream, idle).await,
            None => 0,
        }
    }
}

impl ClientStream for TlsClient {
    const TLS: bool = true;
    const LEAN_WAIT: bool = false;

    /// Done on the socket before its handshake (`serve_tls`).
    fn accepted(&self) {}

    async fn wait_readable(&mut self) {}

    /// A close_notify alert, so the client can tell the end of a response delimited by the
    /// close from a truncation.
    async fn close(&mut self, watch: &Watch, cell: &StateCell) {
        watch.arm(cell.get().config.http.send_timeout, Phase::Write);
        // No shutdown(2) after it: the socket closes right after, which sends the FIN.
        let _ = self.close_notify().await;
    }

    /// A plain box: the TLS stream's writes make the exchange larger than a pooled frame, and
    /// a TLS request spends far more on its crypto than on this allocation.
    fn framed<'p, F: Future + 'p>(
        _: &'p FramePool,
        fut: F,
    ) -> impl Future<Output = F::Output> + Unpin + 'p {
        Box::pin(fut)
    }

    fn tunnel(
        &mut self,
        upstream: TcpStream,
        worker: &WorkerCtx,
        idle: Duration,
    ) -> impl Future<Output = u64> {
        crate::tls::tunnel(self, upstream, worker, idle)
    }
}
