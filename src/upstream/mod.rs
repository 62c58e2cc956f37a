//! Upstream clusters as one worker sees them: servers with their keep-alive pools and per-core
//! counters, the balancer, and the link to the process-wide published state (health,
//! ejections, limits). Picking, connecting and recording outcomes all happen here.

pub mod balance;
pub mod health;
pub mod latency;
pub mod pool;
pub mod published;
pub mod retry;

use crate::config::{AllDown, Server, Upstream};
use crate::deadline::{Watch, Watchdog};
use balance::{Balancer, Rng};
use latency::PeakEwma;
use monoio::net::TcpStream;
use pool::Pool;
use published::{now_ms, PublishedServer, PublishedUpstream};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One server as this worker sees it.
pub struct ServerState {
    pub addr: SocketAddr,
    pub weight: u32,
    pub drain: bool,
    pub pool: RefCell<Pool>,
    pub opened: Cell<u64>,
    pub reused: Cell<u64>,
    /// Requests this worker has in flight to the server.
    pub in_flight: Cell<u32>,
    pub latency: PeakEwma,
    pub requests: Cell<u64>,
    pub failures: Cell<u64>,
    consecutive_failures: Cell<u32>,
    consecutive_5xx: Cell<u32>,
    /// Slow-start ramp in 0.0..=1.0, refreshed by `Cluster::select`; 1.0 outside slow start.
    ramp: Cell<f64>,
}

impl ServerState {
    pub fn new(s: &Server, max_idle: usize) -> Self {
        Self {
            addr: s.addr,
            weight: s.weight,
            drain: s.drain,
            pool: RefCell::new(Pool::new(max_idle)),
            opened: Cell::new(0),
            reused: Cell::new(0),
            in_flight: Cell::new(0),
            latency: PeakEwma::default(),
            requests: Cell::new(0),
            failures: Cell::new(0),
            consecutive_failures: Cell::new(0),
            consecutive_5xx: Cell::new(0),
            ramp: Cell::new(1.0),
        }
    }

    /// The configured weight (what balancers that weigh servers use).
    #[inline]
    pub fn effective_weight(&self) -> u32 {
        self.weight
    }
}

/// How an attempt ended, for passive health and the latency balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success(Duration),
    /// A 5xx response (counted toward `consecutive_5xx`).
    ServerError(Duration),
    /// Connect refused/timed out, reset, response timeout.
    Failure,
}

#[derive(Debug)]
pub enum ConnectError {
    Refused(io::Error),
    Timeout,
    /// `max_pending` reached for this server.
    Saturated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectError {
    /// Every server is unhealthy, ejected or draining.
    NoneAvailable,
    /// Servers are up but at `max_connections`.
    AtCapacity,
}

pub struct Cluster {
    pub cfg: Upstream,
    pub servers: Vec<ServerState>,
    pub published: Arc<PublishedUpstream>,
    balancer: Box<dyn Balancer>,
    rng: Rng,
    /// Whether any server could be in slow start (skip the clock otherwise).
    slow_start: Option<Duration>,
    pub tracks_latency: bool,
    /// Attempts made again under a retry policy (for the admin endpoint).
    pub retries: Cell<u64>,
}

/// An upstream connection checked out for one attempt.
pub struct UpstreamConn {
    pub stream: TcpStream,
    /// Deadlines for this connection's reads and writes; travels with it through the pool.
    pub watch: Rc<Watch>,
    pub server: usize,
    /// Came from the pool: the upstream may have closed it while it sat idle.
    pub reused: bool,
}

/// Marks one request in flight to a server; the drop undoes the counts on every path.
pub struct InFlight<'a> {
    cluster: &'a Cluster,
    pub server: usize,
    global: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let s = &self.cluster.servers[self.server];
        s.in_flight.set(s.in_flight.get().saturating_sub(1));
        if self.global {
            self.cluster.published.servers[self.server]
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Cluster {
    pub fn new(
        cfg: &Upstream,
        published: Arc<PublishedUpstream>,
        previous: Option<&Cluster>,
    ) -> Self {
        let servers: Vec<ServerState> = cfg
            .servers
            .iter()
            .map(|s| ServerState::new(s, cfg.max_idle))
            .collect();
        // Warm connections survive a reload: the new state takes the old pools of servers it
        // still has (Monolake does the same), so a reload costs no reconnect storm.
        if let Some(old) = previous {
            for s in &servers {
                if let Some(o) = old.servers.iter().find(|o| o.addr == s.addr) {
                    std::mem::swap(&mut *s.pool.borrow_mut(), &mut *o.pool.borrow_mut());
                    s.pool.borrow_mut().set_max_idle(cfg.max_idle);
                    // Counters keep counting across the reload (they are published as totals).
                    for (dst, src) in [
                        (&s.opened, &o.opened),
                        (&s.reused, &o.reused),
                        (&s.requests, &o.requests),
                        (&s.failures, &o.failures),
                    ] {
                        dst.set(src.get());
                    }
                }
            }
        }
        Self {
            retries: Cell::new(previous.map_or(0, |o| o.retries.get())),
            balancer: balance::build(cfg.balance, &servers),
            servers,
            published,
            rng: Rng::new(),
            slow_start: cfg.slow_start,
            tracks_latency: cfg.balance == crate::config::Balance::P2cEwma,
            cfg: cfg.clone(),
        }
    }

    #[inline]
    fn available(&self, i: usize, ignore_health: bool) -> bool {
        let s = &self.servers[i];
        if s.drain {
            return false;
        }
        let p = &self.published.servers[i];
        ignore_health || (p.is_healthy() && !p.is_ejected())
    }

    #[inline]
    fn under_limit(&self, p: &PublishedServer) -> bool {
        match self.cfg.max_connections {
            Some(max) => p.in_flight.load(Ordering::Relaxed) < max,
            None => true,
        }
    }

    /// Picks a server for an attempt. `tried` has bit `i % 64` set for servers already tried
    /// by this request; they are avoided while another server is available.
    pub fn select(&self, hash: u64, tried: u64) -> Result<usize, SelectError> {
        if let Some(window) = self.slow_start {
            self.refresh_ramps(window);
        }
        let fail_open = self.cfg.on_all_down == AllDown::FailOpen;
        let mut saw_capacity = false;
        // Pass 0 avoids tried servers; pass 1 allows them again (a single-server upstream
        // must still be retried); pass 2, only with fail_open, ignores health.
        for pass in 0..3 {
            if pass == 2 && !fail_open {
                break;
            }
            let eligible = |i: usize| {
                if pass == 0 && tried & (1u64 << (i % 64)) != 0 {
                    return false;
                }
                if !self.available(i, pass == 2) {
                    return false;
                }
                if !self.under_limit(&self.published.servers[i]) {
                    return false;
                }
                // Slow start: a returning server is admitted with probability equal to its
                // ramp, whatever the algorithm; the later passes ignore it.
                let ramp = self.servers[i].ramp.get();
                pass > 0
                    || ramp >= 1.0
                    || ((self.rng.next() >> 11) as f64 / (1u64 << 53) as f64) < ramp
            };
            if let Some(i) = self.balancer.pick(&self.servers, &eligible, hash) {
                return Ok(i);
            }
            if self.cfg.max_connections.is_some() {
                saw_capacity |= (0..self.servers.len()).any(|i| self.available(i, pass == 2));
            }
        }
        if saw_capacity {
            Err(SelectError::AtCapacity)
        } else {
            Err(SelectError::NoneAvailable)
        }
    }

    /// Slow start: a server back for less than `window` has its weight scaled down.
    fn refresh_ramps(&self, window: Duration) {
        let now = now_ms();
        let w = window.as_millis().max(1) as u64;
        for (s, p) in self.servers.iter().zip(&self.published.servers) {
            let back = p
                .back_since_ms
                .load(Ordering::Relaxed)
                .max(p.ejected_until_ms.load(Ordering::Relaxed));
            let ramp = if back == 0 || now >= back + w {
                1.0
            } else if now <= back {
                0.1
            } else {
                0.1 + 0.9 * (now - back) as f64 / w as f64
            };
            s.ramp.set(ramp);
        }
    }

    /// Counts a request in flight to `server`; `None` when `max_connections` is reached.
    pub fn begin(&self, server: usize) -> Option<InFlight<'_>> {
        let s = &self.servers[server];
        let mut global = false;
        if let Some(max) = self.cfg.max_connections {
            let p = &self.published.servers[server];
            if p.in_flight.fetch_add(1, Ordering::Relaxed) >= max {
                p.in_flight.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            global = true;
        }
        s.in_flight.set(s.in_flight.get() + 1);
        s.requests.set(s.requests.get() + 1);
        Some(InFlight {
            cluster: self,
            server,
            global,
        })
    }

    /// A pooled connection to `server` if one is idle (and `allow_pooled`), else a new one.
    pub async fn connect(
        &self,
        server: usize,
        allow_pooled: bool,
        verify: bool,
        dog: &Watchdog,
    ) -> Result<UpstreamConn, ConnectError> {
        match allow_pooled.then(|| self.pooled(server, verify)).flatten() {
            Some(conn) => Ok(conn),
            // Boxed: the connect timeout's timer entry is cache-line aligned (128 bytes), which
            // would over-align (and grow) every future that awaits this one, the per-request
            // exchange included. Fresh connects are the rare case on a warm pool, so only they
            // pay for this allocation.
            None => {
                crate::hint::cold();
                Box::pin(self.connect_new(server, dog)).await
            }
        }
    }

    /// An idle pooled connection to `server`, if there is one still usable.
    fn pooled(&self, server: usize, verify: bool) -> Option<UpstreamConn> {
        let s = &self.servers[server];
        loop {
            let (stream, watch) = s.pool.borrow_mut().checkout()?;
            // A request that could not be sent again (not idempotent, or its body streams) must
            // not land on a connection the upstream closed while it sat idle: one non-blocking
            // peek tells. Retryable requests skip it and rely on the retry instead.
            if verify && !still_open(&stream) {
                continue;
            }
            s.reused.set(s.reused.get() + 1);
            return Some(UpstreamConn {
                stream,
                watch,
                server,
                reused: true,
            });
        }
    }

    /// Opens a new connection to `server` under the connect timeout and `max_pending`.
    async fn connect_new(
        &self,
        server: usize,
        dog: &Watchdog,
    ) -> Result<UpstreamConn, ConnectError> {
        let s = &self.servers[server];
        let pending = self
            .cfg
            .max_pending
            .map(|max| (max, &self.published.servers[server].connecting));
        if let Some((max, c)) = pending {
            if c.fetch_add(1, Ordering::Relaxed) >= max {
                c.fetch_sub(1, Ordering::Relaxed);
                return Err(ConnectError::Saturated);
            }
        }
        let res =
            monoio::time::timeout(self.cfg.connect_timeout, TcpStream::connect_addr(s.addr)).await;
        if let Some((_, c)) = pending {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        let stream = match res {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        s.opened.set(s.opened.get() + 1);
        let watch = dog.watch(stream.as_raw_fd());
        Ok(UpstreamConn {
            stream,
            watch,
            server,
            reused: false,
        })
    }

    pub fn checkin(&self, conn: UpstreamConn) {
        self.servers[conn.server]
            .pool
            .borrow_mut()
            .checkin(conn.stream, conn.watch);
    }

    /// Feeds an attempt's outcome to passive health and the latency tracker.
    pub fn record(&self, server: usize, outcome: Outcome) {
        let s = &self.servers[server];
        match outcome {
            Outcome::Success(rtt) => {
                s.consecutive_failures.set(0);
                s.consecutive_5xx.set(0);
                if self.tracks_latency {
                    s.latency.observe(rtt);
                }
            }
            Outcome::ServerError(rtt) => {
                s.consecutive_failures.set(0);
                let n = s.consecutive_5xx.get() + 1;
                s.consecutive_5xx.set(n);
                if self.tracks_latency {
                    s.latency.observe(rtt);
                }
                if let Some(o) = &self.cfg.outlier {
                    if o.consecutive_5xx > 0 && n >= o.consecutive_5xx {
                        s.consecutive_5xx.set(0);
                        self.eject(server);
                    }
                }
            }
            Outcome::Failure => {
                s.failures.set(s.failures.get() + 1);
                let n = s.consecutive_failures.get() + 1;
                // 0 turns failure-based ejection off.
                s.consecutive_failures.set(n);
                if self.tracks_latency {
                    s.latency
                        .penalize(self.cfg.response_timeout.min(Duration::from_secs(10)));
                }
                if let Some(o) = &self.cfg.outlier {
                    if o.consecutive_failures > 0 && n >= o.consecutive_failures {
                        s.consecutive_failures.set(0);
                        self.eject(server);
                    }
                }
            }
        }
    }

    /// Ejects a server for a backoff that doubles with each ejection in a streak, unless that
    /// would take more than `max_ejected_percent` of the servers out.
    fn eject(&self, server: usize) {
        let Some(o) = &self.cfg.outlier else { return };
        let now = now_ms();
        let p = &self.published.servers[server];
        let until = p.ejected_until_ms.load(Ordering::Relaxed);
        if until > now {
            return;
        }
        let ejected = self
            .published
            .servers
            .iter()
            .filter(|s| s.ejected_until_ms.load(Ordering::Relaxed) > now)
            .count();
        if (ejected + 1) * 100 > o.max_ejected_percent as usize * self.servers.len() {
            return;
        }
        // A server that stayed in for a full max_ejection since it was last back starts over
        // (an ended ejection is cleared into back_since_ms by `is_ejected`).
        let last_back = until.max(p.back_since_ms.load(Ordering::Relaxed));
        if last_back != 0 && now > last_back + o.max_ejection.as_millis() as u64 {
            p.ejection_streak.store(0, Ordering::Relaxed);
        }
        let streak = p.ejection_streak.load(Ordering::Relaxed).min(20);
        let backoff = o
            .base_ejection
            .saturating_mul(1 << streak)
            .min(o.max_ejection);
        let new_until = now + backoff.as_millis() as u64;
        // Another worker may eject the same server at the same moment: one of them wins.
        if p.ejected_until_ms
            .compare_exchange(until, new_until, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            p.ejection_streak.fetch_add(1, Ordering::Relaxed);
            p.ejections_total.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "ringway: upstream {} server {} ejected for {:?}",
                self.cfg.name, self.servers[server].addr, backoff
            );
        }
    }

    /// Closes a few connections idle past the idle timeout; `now_ms` is the worker's clock.
    pub fn trim(&self, now_ms: u64) -> usize {
        self.servers
            .iter()
            .map(|s| s.pool.borrow_mut().trim(now_ms, self.cfg.idle_timeout))
            .sum()
    }

    pub fn opened(&self) -> u64 {
        self.servers.iter().map(|s| s.opened.get()).sum()
    }

    pub fn reused(&self) -> u64 {
        self.servers.iter().map(|s| s.reused.get()).sum()
    }
}

/// Whether an idle pooled connection is still open: a non-blocking `MSG_PEEK` sees the FIN (0)
/// or unexpected bytes (> 0) that a live idle HTTP connection never has.
fn still_open(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv into a valid one-byte buffer on a socket this worker owns; MSG_DONTWAIT
    // keeps the runtime thread from blocking. Not `sock::recv_now`: this runs for every pooled
    // connection taken, and the raw call kept the request path's hot code smaller.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN)
        )
}
