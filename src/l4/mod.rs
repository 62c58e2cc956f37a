//! L4 TCP proxying: a `protocol = "tcp"` listener relays each connection to a server of its
//! upstream (same balancing, health, ejection and limits as HTTP), copying bytes both ways with
//! io_uring reads and writes through one buffer per direction, and passing half-closes on.

use crate::deadline::Watchdog;
use crate::proxy::state::CoreState;
use crate::upstream::balance::stable_hash;
use crate::upstream::{Cluster, ConnectError, Outcome};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const RELAY_BUF: usize = 32 * 1024;
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
    if let Some((upstream, _inflight)) = connect(cluster, hash, &worker.watchdog).await {
        let _ = client.set_nodelay(true);
        relay(client, upstream, cluster.cfg.body_timeout).await;
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

async fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let activity = Cell::new(Instant::now());
    let both = async {
        monoio::join!(
            pump(&mut cr, &mut uw, &activity),
            pump(&mut ur, &mut cw, &activity)
        );
    };
    // Reads carry no timeout of their own (a cancelled read can lose bytes); a watchdog ends
    // the whole relay once neither direction moved for `idle`.
    monoio::select! {
        _ = both => {}
        _ = watchdog(&activity, idle) => {}
    }
}

async fn watchdog(activity: &Cell<Instant>, idle: Duration) {
    let step = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        monoio::time::sleep(step).await;
        if activity.get().elapsed() >= idle {
            return;
        }
    }
}

/// Copies one direction until EOF (then half-closes the other side) or an error.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(r: &mut R, w: &mut W, activity: &Cell<Instant>) {
    let mut buf = Vec::with_capacity(RELAY_BUF);
    loop {
        buf.clear();
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                activity.set(Instant::now());
                let (res, b) = w.write_all(buf).await;
                buf = b;
                if res.is_err() {
                    return;
                }
                activity.set(Instant::now());
            }
        }
    }
    let _ = w.shutdown().await;
}
