//! Upstream clusters as one worker sees them: servers with their keep-alive pools, the balancer,
//! and connection counters (opened vs reused: the reuse ratio we publish).

pub mod balance;
pub mod pool;

use crate::config::Upstream;
use balance::Balancer;
use monoio::net::TcpStream;
use pool::Pool;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub struct ServerState {
    pub addr: SocketAddr,
    pub pool: RefCell<Pool>,
    pub opened: Cell<u64>,
    pub reused: Cell<u64>,
}

pub struct Cluster {
    pub cfg: Upstream,
    pub servers: Vec<ServerState>,
    balancer: Box<dyn Balancer>,
}

/// An upstream connection checked out for one exchange.
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub server: usize,
    /// Came from the pool: it may have been closed by the upstream while idle.
    pub reused: bool,
}

#[derive(Debug)]
pub enum ConnectError {
    Refused(io::Error),
    Timeout,
    NoServer,
}

impl Cluster {
    pub fn new(cfg: &Upstream) -> Self {
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight).collect();
        Self {
            servers: cfg
                .servers
                .iter()
                .map(|s| ServerState {
                    addr: s.addr,
                    pool: RefCell::new(Pool::new(cfg.max_idle)),
                    opened: Cell::new(0),
                    reused: Cell::new(0),
                })
                .collect(),
            balancer: balance::build(cfg.balance, &weights),
            cfg: cfg.clone(),
        }
    }

    pub fn pick(&self) -> Option<usize> {
        self.balancer.pick(self.servers.len(), &|_| true)
    }

    /// A pooled connection to `server` if one is idle, else a new one.
    pub async fn connect(
        &self,
        server: usize,
        allow_pooled: bool,
    ) -> Result<UpstreamConn, ConnectError> {
        let s = &self.servers[server];
        if allow_pooled {
            if let Some(stream) = s.pool.borrow_mut().checkout() {
                s.reused.set(s.reused.get() + 1);
                return Ok(UpstreamConn {
                    stream,
                    server,
                    reused: true,
                });
            }
        }
        let stream =
            match monoio::time::timeout(self.cfg.connect_timeout, TcpStream::connect_addr(s.addr))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(ConnectError::Refused(e)),
                Err(_) => return Err(ConnectError::Timeout),
            };
        let _ = stream.set_nodelay(true);
        s.opened.set(s.opened.get() + 1);
        Ok(UpstreamConn {
            stream,
            server,
            reused: false,
        })
    }

    pub fn checkin(&self, conn: UpstreamConn) {
        self.servers[conn.server]
            .pool
            .borrow_mut()
            .checkin(conn.stream);
    }

    pub fn trim(&self, now: Instant) -> usize {
        self.servers
            .iter()
            .map(|s| s.pool.borrow_mut().trim(now, self.cfg.idle_timeout))
            .sum()
    }

    pub fn opened(&self) -> u64 {
        self.servers.iter().map(|s| s.opened.get()).sum()
    }

    pub fn reused(&self) -> u64 {
        self.servers.iter().map(|s| s.reused.get()).sum()
    }
}
