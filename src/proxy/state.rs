//! Per-core state: everything a worker's connections read on the request path, built from one
//! config snapshot and never shared with another thread (hence `Rc`, `Cell`, no locks).

use crate::cache::Cache;
use crate::config::{Action, Config};
use crate::gateway::CoreGateway;
use crate::http::fmt::push_dec;
use crate::http::request::Limits;
use crate::http::status::reason;
use crate::route::Router;
use crate::upstream::published::Published;
use crate::upstream::retry::RetryBudget;
use crate::upstream::Cluster;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Worker-wide facts that outlive a config reload (the state is rebuilt, the worker is not).
#[derive(Default)]
pub struct WorkerCtx {
    pub id: usize,
    /// Deadlines of this worker's client and upstream sockets.
    pub watchdog: crate::deadline::Watchdog,
    pub draining: Cell<bool>,
    /// Requests between head parsed and response finished.
    pub inflight: Cell<usize>,
    pub connections: Cell<usize>,
    pub requests: Cell<u64>,
    /// Responses sent to clients by status class, 1xx to 5xx (`ringway_responses_total`).
    pub responses: [Cell<u64>; 5],
    next_id: Cell<u64>,
    /// The first 8 hex digits of every request id this worker makes.
    id_prefix: [u8; 8],
    bufs: super::spares::SpareBufs<SPARE_BUFS, SPARE_BUF_BYTES>,
    /// Reused heap blocks for the per-request exchange future.
    pub frames: super::frame::FramePool,
    /// The worker runs on io_uring, where an operation is submitted when it is made (the legacy
    /// driver performs it only when it is polled): see `http::buf::send_detached`.
    pub uring: bool,
    /// Access log lines waiting for the writer thread (empty without an access log).
    pub log: RefCell<crate::telemetry::access_log::Sink>,
}

impl WorkerCtx {
    pub fn new(id: usize, uring: bool) -> Self {
        // Distinct per process start and per worker, so ids from a restarted proxy differ too.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((std::process::id() as u64) << 20);
        Self {
            id,
            id_prefix: {
                let prefix =
                    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xffff_ff00) | (id as u64 & 0xff);
                let mut digits = [0u8; 8];
                digits.copy_from_slice(&crate::http::fmt::hex16(prefix)[8..]);
                digits
            },
            uring,
            ..Default::default()
        }
    }

    /// A new request id as 24 hex digits: 8 of process/worker prefix, 16 of counter.
    pub fn push_request_id(&self, out: &mut Vec<u8>) {
        let n = self.next_id.get().wrapping_add(1);
        self.next_id.set(n);
        out.extend_from_slice(&self.id_prefix);
        out.extend_from_slice(&crate::http::fmt::hex16(n));
    }

    /// Counts a response to a client by its status class.
    #[inline]
    pub fn count_response(&self, status: u16) {
        self.count_class(usize::from(status / 100));
    }

    /// Counts a response Ringway wrote itself, by the class digit of its head
    /// (`HTTP/1.1 NNN ...` in `out`).
    pub fn count_head(&self, head: &[u8]) {
        if let Some(&d) = head.get(9) {
            self.count_class(usize::from(d.wrapping_sub(b'0')));
        }
    }

    #[inline]
    fn count_class(&self, class: usize) {
        if let Some(c) = self.responses.get(class.wrapping_sub(1)) {
            crate::telemetry::bump(c);
        }
    }

    /// Request ids made so far: a change across a call says it made one.
    pub fn ids_made(&self) -> u64 {
        self.next_id.get()
    }

    /// The request id made last (for the access log).
    pub fn push_last_request_id(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id_prefix);
        out.extend_from_slice(&crate::http::fmt::hex16(self.next_id.get()));
    }

    /// A buffer from this worker's free list, so idle connections hold only their read buffer.
    #[inline]
    pub fn take_buf(&self, cap: usize) -> Vec<u8> {
        // The next request writes its upstream head (a few hundred bytes) at the start of the
        // buffer after this one: prefetched now, its stores do not wait for the lines.
        let warm = |next: &Vec<u8>| crate::hint::prefetch(next.as_ptr(), WARM_BUF_LINES);
        self.bufs.take(warm).unwrap_or_else(|| {
            // A burst past the spares: rare once the worker is warm.
            crate::hint::cold();
            Vec::with_capacity(cap)
        })
    }

    #[inline]
    pub fn give_buf(&self, mut buf: Vec<u8>) {
        // Buffers grown for a large body are not kept, nor empty ones, which would only be
        // reallocated by whoever takes them; the list itself keeps to its byte budget.
        if (1..=SPARE_BUF_MAX).contains(&buf.capacity()) {
            buf.clear();
            let _ = self.bufs.give(buf);
        }
    }

    /// Returns part of a burst's surplus buffers and frames to the allocator (control tick).
    pub fn trim_spares(&self) {
        self.bufs.trim(TRIM_SPARES);
        self.frames.trim(TRIM_SPARES);
    }
}

/// Lines of the next spare buffer prefetched at each take: an upstream request head's worth.
const WARM_BUF_LINES: usize = 4;
/// Free buffers kept per worker: enough for every exchange of a 1,000-connection burst, so the
/// busiest moments reuse blocks instead of allocating; the surplus is trimmed later. An
/// exchange holds two (the upstream head and the response), so twice the burst: with room for
/// one per exchange, the number in flight swinging by a few hundred at 1,000 connections freed
/// and then allocated again about one buffer in five requests.
const SPARE_BUFS: usize = 2048;
/// The largest buffer worth keeping: a head buffer is 4 KiB, an upstream buffer 16 KiB, a
/// streaming one 64 KiB, and a chunk scratch that much plus its framing.
const SPARE_BUF_MAX: usize = 65 * 1024;
/// The most memory the spare buffers hold, until trimmed: what 1,024 streaming buffers took
/// when the count was the only cap. The request path's 2,048 (4 and 16 KiB) fit in a third of
/// it; a burst of large bodies is what this bounds.
const SPARE_BUF_BYTES: usize = 1024 * SPARE_BUF_MAX;
/// Spare buffers and frames released per trim (every 250 ms): a burst's surplus of a thousand
/// goes back within a few seconds, never all in one go.
const TRIM_SPARES: usize = 32;

/// Tracks one in-flight request; the drop keeps the count right on every early return.
pub struct InflightGuard(Rc<WorkerCtx>);

impl InflightGuard {
    pub fn new(w: &Rc<WorkerCtx>) -> Self {
        w.inflight.set(w.inflight.get() + 1);
        w.requests.set(w.requests.get() + 1);
        Self(w.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get() - 1);
    }
}

/// A static response, encoded once: head up to (not including) the connection header and the
/// blank line, then the body.
pub struct StaticResponse {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

pub struct CoreState {
    pub config: Arc<Config>,
    pub worker: Rc<WorkerCtx>,
    pub router: Router,
    pub clusters: Vec<Cluster>,
    /// Indexed like `config.routes`; `Some` for `respond` routes.
    pub statics: Vec<Option<StaticResponse>>,
    /// Indexed like `config.routes`.
    pub retry_budgets: Vec<RetryBudget>,
    pub limits: Limits,
    pub published: Arc<Published>,
    /// Compiled gateway filters per route (auth, rate limit, header rules, CORS).
    pub gateway: CoreGateway,
    /// Indexed like `config.caches`: this worker's share of each response cache.
    pub caches: Vec<Rc<RefCell<Cache>>>,
}

impl CoreState {
    /// Builds the state for `config`; `previous` (the state being replaced on reload) hands
    /// over its warm upstream connections.
    pub fn new(
        config: Arc<Config>,
        published: Arc<Published>,
        worker: Rc<WorkerCtx>,
        previous: Option<&CoreState>,
    ) -> Self {
        let statics = config
            .routes
            .iter()
            .map(|r| match &r.action {
                Action::Respond(s) => Some(encode_static(s)),
                Action::Forward(_) | Action::Redirect(_) | Action::Aggregate(_) => None,
            })
            .collect();
        Self {
            router: Router::new(&config.routes),
            clusters: config
                .upstreams
                .iter()
                .zip(&published.upstreams)
                .map(|(u, p)| {
                    let old = previous
                        .and_then(|prev| prev.clusters.iter().find(|c| c.cfg.name == u.name));
                    Cluster::new(u, p.clone(), old)
                })
                .collect(),
            retry_budgets: config
                .routes
                .iter()
                .map(|r| RetryBudget::new(&r.retry))
                .collect(),
            statics,
            published,
            limits: Limits {
                max_request_line: config.http.max_request_line,
                max_head_size: config.http.max_head_size,
            },
            gateway: CoreGateway::new(&config),
            // Kept across a reload when the zone is unchanged, as nginx keeps its cache.
            caches: config
                .caches
                .iter()
                .map(|zone| {
                    previous
                        .and_then(|p| p.caches.iter().find(|c| c.borrow().zone == *zone))
                        .cloned()
                        .unwrap_or_else(|| Rc::new(RefCell::new(Cache::new(zone.clone()))))
                })
                .collect(),
            worker,
            config,
        }
    }
}

fn encode_static(s: &crate::config::StaticResponse) -> StaticResponse {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"HTTP/1.1 ");
    push_dec(&mut head, s.status as u64);
    head.push(b' ');
    head.extend_from_slice(reason(s.status).as_bytes());
    head.extend_from_slice(b"\r\nserver: ringway");
    for (n, v) in &s.headers {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(n.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
    }
    head.extend_from_slice(b"\r\ncontent-length: ");
    push_dec(&mut head, s.body.len() as u64);
    StaticResponse {
        head,
        body: s.body.as_bytes().to_vec(),
    }
}

/// The worker's current state, swapped on reload. A connection takes the current state at the
/// start of each request, so keep-alive clients move to a new config between requests while a
/// request in flight finishes on the state it started with.
pub struct StateCell(RefCell<Rc<CoreState>>);

impl StateCell {
    pub fn new(state: CoreState) -> Self {
        Self(RefCell::new(Rc::new(state)))
    }

    #[inline]
    pub fn get(&self) -> Rc<CoreState> {
        self.0.borrow().clone()
    }

    pub fn set(&self, state: CoreState) {
        *self.0.borrow_mut() = Rc::new(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The control tick's trim returns a burst's idle buffers a few at a time, and only those.
    #[test]
    fn idle_spare_buffers_are_trimmed_gradually() {
        let w = WorkerCtx::new(0, false);
        let burst: Vec<_> = (0..100).map(|_| w.take_buf(4096)).collect();
        for b in burst {
            w.give_buf(b);
        }
        w.give_buf(Vec::with_capacity(SPARE_BUF_MAX + 1));
        assert_eq!(w.bufs.len(), 100, "an oversized buffer is not kept");
        w.trim_spares(); // sets the mark: nothing drawn yet in this period's books
        assert_eq!(w.bufs.len(), 100);
        let busy = w.take_buf(4096); // one in use through the next period
        w.trim_spares();
        assert_eq!(w.bufs.len(), 99 - TRIM_SPARES);
        w.give_buf(busy);
        while w.bufs.len() > 1 {
            w.trim_spares();
        }
        w.trim_spares();
        assert_eq!(w.bufs.len(), 0);
        assert_eq!(w.bufs.bytes(), 0, "trimmed buffers leave the budget");
    }

    /// Streaming buffers are kept only up to the byte budget; the request path's own sizes fill
    /// the whole count within it, and taking or trimming gives their bytes back.
    #[test]
    fn spare_buffers_stay_within_the_byte_budget() {
        let w = WorkerCtx::new(0, false);
        for _ in 0..SPARE_BUFS {
            w.give_buf(Vec::with_capacity(SPARE_BUF_MAX));
        }
        let kept = w.bufs.len();
        assert_eq!(
            kept,
            SPARE_BUF_BYTES / SPARE_BUF_MAX,
            "as many as the budget holds"
        );
        assert_eq!(w.bufs.bytes(), kept * SPARE_BUF_MAX);
        assert!(
            kept < SPARE_BUFS,
            "the budget, not the count, stopped a large burst"
        );
        let bytes: usize = (0..kept).map(|_| w.take_buf(0).capacity()).sum();
        assert_eq!(w.bufs.bytes(), 0);
        assert!(bytes <= SPARE_BUF_BYTES);

        // 4 and 16 KiB, as an exchange holds: the full count fits.
        for i in 0..SPARE_BUFS {
            w.give_buf(Vec::with_capacity(if i % 2 == 0 {
                4096
            } else {
                16 * 1024
            }));
        }
        assert_eq!(w.bufs.len(), SPARE_BUFS);
        w.give_buf(Vec::with_capacity(4096));
        assert_eq!(w.bufs.len(), SPARE_BUFS, "the count still caps");
        let held = w.bufs.bytes();
        assert_eq!(held, SPARE_BUFS / 2 * (4096 + 16 * 1024));
        assert!(held <= SPARE_BUF_BYTES);
        w.trim_spares(); // sets the mark
        w.trim_spares();
        assert_eq!(w.bufs.len(), SPARE_BUFS - TRIM_SPARES);
        let left: usize = (0..w.bufs.len()).map(|_| w.take_buf(0).capacity()).sum();
        assert_eq!(w.bufs.bytes(), 0);
        assert!(left < held, "the trimmed buffers' bytes left the budget");
    }
}
