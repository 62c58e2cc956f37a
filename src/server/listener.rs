//! Listening sockets: one SO_REUSEPORT socket per worker per listener, so the kernel spreads
//! connections over cores with no accept lock. A port another process holds is refused first,
//! because SO_REUSEPORT would otherwise silently share it.

use crate::config::Listener;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Fails if anything already listens on `addr` (a bind without SO_REUSEPORT conflicts with
/// every socket on the port, reuseport or not).
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
}

fn reuseport_socket(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nodelay(true)?;
    // The legacy (epoll) driver needs it; io_uring does not care.
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Binds `workers` sockets for each listener; returns them grouped per worker, plus the address
/// each listener ended up on (port 0 is resolved once and shared by all workers).
pub fn bind_all(
    listeners: &[Listener],
    workers: usize,
) -> Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>), String> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for l in listeners {
        let mut addr = l.bind;
        if addr.port() != 0 {
            probe_free(addr)
                .map_err(|e| format!("listener {:?}: cannot bind {addr}: {e}", l.name))?;
        }
        for (w, socks) in per_worker.iter_mut().enumerate() {
            let sock = reuseport_socket(addr, 4096)
                .map_err(|e| format!("listener {:?}: cannot bind {addr}: {e}", l.name))?;
            if w == 0 {
                addr = sock.local_addr().map_err(|e| e.to_string())?;
            }
            socks.push(sock);
        }
        bound.push(addr);
    }
    Ok((per_worker, bound))
}
