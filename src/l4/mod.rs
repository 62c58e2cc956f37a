//! L4 TCP proxying: a `protocol = "tcp"` listener relays each connection to a server of its
//! upstream (same balancing, health, ejection and limits as HTTP), copying bytes both ways with
//! io_uring reads and writes through one buffer per direction, held only while bytes flow, and
//! passing half-closes on; a PROXY protocol header first, if the upstream asks for one.

use crate::deadline::Watchdog;
use crate::proxy::state::{CoreState, WorkerCtx};
use crate::server::proxy_protocol;
use crate::upstream::balance::stable_hash;
use crate::upstream::{Cluster, ConnectError, Outcome};
use monoio::io::{
    AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller, Splitable,
};
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const RELAY_BUF: usize = 32 * 1024;
/// After this long without a byte either way, a relayed connection gives its buffers back.
const LEAN_AFTER: Duration = Duration::from_secs(1);
/// Servers tried before giving up on a connection.
const CONNECT_ATTEMPTS: u32 = 3;

/// Relays one client connection until both directions are closed.
pub async fn serve_tcp(
    state: Rc<CoreState>,
    client: TcpStream,
    peer: SocketAddr,
    cluster_idx: usize,
) {
    let worker = state.worker.clone();
    worker.connections.set(worker.connections.get() + 1);
    let cluster = &state.clusters[cluster_idx];
    let hash = if cluster.cfg.hash_key.is_some() {
        stable_hash(peer.ip().to_string().as_bytes())
    } else {
        0
    };
    if let Some((mut upstream, _inflight)) = connect(cluster, hash, &worker.watchdog).await {
        let _ = client.set_nodelay(true);
        let told = match cluster.cfg.send_proxy_protocol {
            None => true,
            Some(version) => {
                // The server learns the client (named by this listener's own PROXY header, if
                // it reads one) and the address it connected to. A few dozen bytes into a
                // fresh socket's empty buffer: the write does not wait.
                let dest = client.local_addr().unwrap_or(peer);
                let mut header = Vec::with_capacity(64);
                proxy_protocol::encode(version, peer, dest, &mut header);
                upstream.write_all(header).await.0.is_ok()
            }
        };
        if told {
            relay(&worker, client, upstream, cluster.cfg.body_timeout).await;
        }
    }
    worker.connections.set(worker.connections.get() - 1);
}

/// Connects to an eligible server, trying others on failure. The connection's watch is not
/// kept: the relay has its own idle watchdog.
async fn connect<'a>(
    cluster: &'a Cluster,
    hash: u64,
    dog: &Watchdog,
) -> Option<(TcpStream, crate::upstream::InFlight<'a>)> {
    let mut tried = 0u64;
    for _ in 0..CONNECT_ATTEMPTS {
        let server = cluster.select(hash, tried).ok()?;
        tried |= 1u64 << (server % 64);
        let inflight = cluster.begin(server)?;
        match cluster.connect(server, false, false, dog).await {
            Ok(c) => {
                cluster.record(server, Outcome::Success(Duration::ZERO));
                return Some((c.stream, inflight));
            }
            Err(ConnectError::Saturated) => {}
            Err(_) => cluster.record(server, Outcome::Failure),
        }
    }
    None
}

/// Copies both ways between `client` and `upstream` until both directions are closed or
/// neither moved for `idle`; returns the bytes the client was sent. Also the tunnel of an
/// upgraded HTTP connection (`proxy::upgrade`).
pub(crate) async fn relay(
    worker: &WorkerCtx,
    client: TcpStream,
    upstream: TcpStream,
    idle: Duration,
) -> u64 {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let activity = Cell::new(Instant::now());
    let quiet = RefCell::new(Canceller::new());
    let (up, down) = (Cell::new(0), Cell::new(0));
    let both = async {
        monoio::join!(
            pump(worker, &mut cr, &mut uw, &activity, &quiet, &up),
            pump(worker, &mut ur, &mut cw, &activity, &quiet, &down)
        );
    };
    // Reads carry no timeout of their own (dropping a pending read can lose bytes); a watchdog
    // ends the whole relay once neither direction moved for `idle`.
    monoio::select! {
        _ = both => {}
        _ = watchdog(&activity, idle, &quiet) => {}
    }
    down.get()
}

/// Ends the relay after `idle` without a byte either way; after `LEAN_AFTER` of quiet it
/// cancels the pending reads once, so that both directions give their buffers back and wait
/// for readability instead (see `pump`).
pub(crate) async fn watchdog(activity: &Cell<Instant>, idle: Duration, quiet: &RefCell<Canceller>) {
    let step = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    // The activity stamp at which the reads were last cancelled.
    let mut thinned = None;
    loop {
        monoio::time::sleep(step).await;
        let last = activity.get();
        let still = last.elapsed();
        if still >= idle {
            return;
        }
        if still >= LEAN_AFTER && thinned != Some(last) {
            thinned = Some(last);
            let c = std::mem::take(&mut *quiet.borrow_mut());
            *quiet.borrow_mut() = c.cancel();
        }
    }
}

/// Copies one direction until EOF (then half-closes the other side) or an error, counting
/// the bytes written in `copied`.
///
/// The buffer comes from the worker's free list and goes back to it whenever this direction
/// is quiet: a relayed connection that idles holds no buffer, where one per direction held for
/// its life would cost 64 KiB. The first wait, and every wait after the watchdog cancelled a
/// read as quiet, is for readability alone; a busy direction reads straight into the buffer
/// it kept. The cancel is monoio's: a read that completed before it keeps its bytes.
async fn pump(
    worker: &WorkerCtx,
    r: &mut TcpOwnedReadHalf,
    w: &mut TcpOwnedWriteHalf,
    activity: &Cell<Instant>,
    quiet: &RefCell<Canceller>,
    copied: &Cell<u64>,
) {
    let mut buf = Vec::new();
    let mut lean = true;
    loop {
        if lean {
            worker.give_buf(std::mem::take(&mut buf));
            // SAFETY: a shared borrow of the stream behind the read half, only to submit a
            // readiness wait on its fd. The halves themselves borrow it mutably for every read
            // and write (monoio's split is built so); no read of this half is in flight now.
            let stream: &TcpStream = unsafe { &*r.0.get() };
            // Readiness, an error or EOF alike: the read below meets it.
            let _ = stream.readable(true).await;
            lean = false;
        }
        if buf.capacity() < RELAY_BUF {
            buf = worker.take_buf(RELAY_BUF);
            buf.reserve(RELAY_BUF);
        }
        buf.clear();
        let handle = quiet.borrow().handle();
        let (res, b) = r.cancelable_read(buf, handle).await;
        buf = b;
        match res {
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => lean = true,
            Ok(0) | Err(_) => break,
            Ok(_) => {
                activity.set(Instant::now());
                let (res, b) = w.write_all(buf).await;
                buf = b;
                match res {
                    Ok(n) => copied.set(copied.get() + n as u64),
                    Err(_) => break,
                }
                activity.set(Instant::now());
            }
        }
    }
    worker.give_buf(buf);
    let _ = w.shutdown().await;
}
