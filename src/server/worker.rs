//! One worker: an OS thread pinned to its CPU, running its own monoio runtime with its own
//! listeners and its own `CoreState`. The only cross-thread contact is a few atomics read
//! by the worker's control tick (shutdown, config generation).

use super::proxy_protocol;
use super::runtime::{self, Driver};
use super::stop::StopSignal;
use super::Shared;
use crate::config::{ListenerTls, Protocol};
use crate::proxy::logged::Logged;
use crate::proxy::prefetch::PrefetchOnWake;
use crate::proxy::state::{CoreState, StateCell, WorkerCtx};
use crate::proxy::{serve_client, serve_tls};
use crate::telemetry::{CacheCounts, Purge, ServerCounts, Snapshot, UpstreamCounts};
use monoio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a worker reports when it ends.
#[derive(Debug, Default, Clone)]
pub struct WorkerReport {
    pub id: usize,
    pub requests: u64,
    pub upstream_opened: u64,
    pub upstream_reused: u64,
    pub abandoned: usize,
    /// Response cache counters summed over zones: hits, misses, revalidations, stale answers,
    /// stores, evictions (None without a cache).
    pub cache: Option<[u64; 6]>,
}

/// The control tick: deadline sweeps run on every one, the rest less often.
const TICK: Duration = crate::deadline::SWEEP_EVERY;
/// Pool trimming runs every this many ticks (250 ms).
const TRIM_EVERY: u64 = 10;

pub fn run(
    id: usize,
    cpu: Option<usize>,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
) -> Result<WorkerReport, String> {
    if let Some(cpu) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            eprintln!("ringway: worker {id}: could not pin to CPU {cpu}; running unpinned");
        }
    }
    let config = shared.current_config();
    let (mut rt, driver) = runtime::build(config.runtime.uring_entries)
        .map_err(|e| format!("worker {id}: cannot build runtime: {e}"))?;
    if id == 0 && driver == Driver::Legacy {
        let why = if runtime::force_legacy() {
            "RINGWAY_FORCE_LEGACY is set"
        } else {
            "io_uring is not available"
        };
        eprintln!("ringway: using the legacy epoll driver ({why})");
    }
    rt.block_on(worker_main(
        id,
        listeners,
        shared,
        driver == Driver::IoUring,
    ))
}

async fn worker_main(
    id: usize,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    uring: bool,
) -> Result<WorkerReport, String> {
    let ctx = Rc::new(WorkerCtx::new(id, uring));
    let mut generation = shared.generation.load(Ordering::Acquire);
    let snap = shared.current();
    let kinds: Vec<ListenerKind> = snap
        .config
        .listeners
        .iter()
        .map(|l| ListenerKind {
            protocol: l.protocol,
            tls: l.tls.clone(),
            proxy_protocol: l.proxy_protocol,
        })
        .collect();
    let current = Rc::new(StateCell::new(CoreState::new(
        snap.config,
        snap.published,
        ctx.clone(),
        None,
    )));
    let stop = Rc::new(StopSignal::default());
    let mut accepts = Vec::new();
    for (index, (l, kind)) in listeners.into_iter().zip(kinds).enumerate() {
        let l = TcpListener::from_std(l).map_err(|e| format!("worker {id}: listener: {e}"))?;
        accepts.push(monoio::spawn(accept_loop(
            l,
            index,
            kind,
            current.clone(),
            stop.clone(),
        )));
    }
    let mut ticks: u64 = 0;
    while !shared.shutdown.load(Ordering::Acquire) {
        monoio::time::sleep(TICK).await;
        ticks += 1;
        ctx.watchdog.sweep();
        for p in shared.board.take_purges(id) {
            purge(&current.get(), &p);
        }
        let g = shared.generation.load(Ordering::Acquire);
        if g != generation {
            generation = g;
            // Open connections keep the state they started with; new ones get this one.
            let snap = shared.current();
            let old = current.get();
            current.set(CoreState::new(
                snap.config,
                snap.published,
                ctx.clone(),
                Some(&old),
            ));
        }
        if ticks % TRIM_EVERY == 0 {
            shared.board.publish(id, counters(&ctx, &current.get()));
            flush_log(&ctx, &shared);
            let now = crate::deadline::coarse_ms();
            for c in &current.get().clusters {
                c.trim(now);
            }
            ctx.trim_spares();
            crate::alloc::collect_freed();
        }
    }

    // Drain: close listeners first, then let in-flight requests finish.
    ctx.draining.set(true);
    stop.fire();
    for a in accepts {
        a.await;
    }
    let drain_timeout = current.get().config.runtime.drain_timeout;
    let deadline = Instant::now() + drain_timeout;
    while ctx.inflight.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
        // Deadlines keep firing while draining, or a stuck client could hold the drain open.
        ctx.watchdog.sweep();
    }
    flush_log(&ctx, &shared);
    let last = counters(&ctx, &current.get());
    shared.board.publish(id, last.clone());
    Ok(WorkerReport {
        id,
        requests: last.requests,
        upstream_opened: last.upstreams.iter().map(|u| u.opened).sum(),
        upstream_reused: last.upstreams.iter().map(|u| u.reused).sum(),
        abandoned: ctx.inflight.get(),
        cache: (!last.caches.is_empty()).then(|| {
            let mut t = [0; 6];
            for c in &last.caches {
                let all = [
                    c.hits,
                    c.misses,
                    c.revalidated,
                    c.stale,
                    c.stores,
                    c.evictions,
                ];
                for (i, v) in all.into_iter().enumerate() {
                    t[i] += v;
                }
            }
            t
        }),
    })
}

/// What a listener is, fixed at start: its protocol, its TLS settings then, and whether each
/// connection opens with a PROXY protocol header.
#[derive(Clone)]
struct ListenerKind {
    protocol: Protocol,
    tls: Option<ListenerTls>,
    proxy_protocol: bool,
}

/// Accepts on one listener until stopped. `index` is the listener's place in the config;
/// whether it speaks TLS is fixed at start (a reload that changes it asks for a restart), but
/// its certificates come from the config current at each accept, so a reload renews them.
async fn accept_loop(
    listener: TcpListener,
    index: usize,
    kind: ListenerKind,
    current: Rc<StateCell>,
    stop: Rc<StopSignal>,
) {
    let mut stopped = std::pin::pin!(stop.wait());
    let kind = Rc::new(kind);
    loop {
        monoio::select! {
            _ = &mut stopped => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let state = current.get();
                    if state.worker.connections.get() >= state.config.http.max_connections {
                        // Over the per-worker limit: closing at once costs less than queueing.
                        drop(stream);
                        continue;
                    }
                    if kind.proxy_protocol {
                        let timeout = state.config.http.header_timeout;
                        let worker = state.worker.clone();
                        drop(state);
                        // Counted while its header is awaited, so that max_connections bounds
                        // connections that never send one too.
                        worker.connections.set(worker.connections.get() + 1);
                        let (current, kind) = (current.clone(), kind.clone());
                        monoio::spawn(async move {
                            let header =
                                proxy_protocol::read_header(&stream, peer, &worker.watchdog, timeout);
                            let client = header.await;
                            worker.connections.set(worker.connections.get() - 1);
                            // Missing, malformed or late: closed unanswered, as HAProxy and
                            // nginx do (the balancer in front is misconfigured, not a client).
                            if let Some(client) = client {
                                serve(&current, index, &kind, stream, client);
                            }
                        });
                    } else {
                        drop(state);
                        serve(&current, index, &kind, stream, peer);
                    }
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off briefly instead of spinning.
                    eprintln!("ringway: accept failed: {e}");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
}

/// Starts the task that serves one accepted connection, as its listener's kind says.
fn serve(
    current: &Rc<StateCell>,
    index: usize,
    kind: &ListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let state = current.get();
    match (kind.protocol, &kind.tls) {
        (Protocol::Http, None) if state.config.access_log.is_some() => {
            drop(state);
            monoio::spawn(PrefetchOnWake::new(serve_client(
                current.clone(),
                Logged::new(stream),
                peer,
            )));
        }
        (Protocol::Http, None) => {
            drop(state);
            monoio::spawn(PrefetchOnWake::new(serve_client(
                current.clone(),
                stream,
                peer,
            )));
        }
        (Protocol::Http, Some(at_start)) => {
            let tls = state
                .config
                .listeners
                .get(index)
                .and_then(|l| l.tls.clone())
                .unwrap_or_else(|| at_start.clone());
            drop(state);
            monoio::spawn(PrefetchOnWake::new(serve_tls(
                current.clone(),
                stream,
                peer,
                tls,
            )));
        }
        (Protocol::Tcp(cluster), _) => {
            monoio::spawn(crate::l4::serve_tcp(state, stream, peer, cluster));
        }
    }
}

/// Hands this worker's access log lines to the writer: a quiet worker's lines are at most a
/// trim period (250 ms) late.
fn flush_log(ctx: &WorkerCtx, shared: &Shared) {
    if let Some(tx) = shared.access_log.get() {
        let mut sink = ctx.log.borrow_mut();
        sink.connect(tx);
        sink.flush();
    }
}

/// This worker's counters, for the admin endpoint (`telemetry`).
fn counters(ctx: &WorkerCtx, state: &CoreState) -> Snapshot {
    Snapshot {
        requests: ctx.requests.get(),
        responses: ctx.responses.each_ref().map(Cell::get),
        connections: ctx.connections.get() as u64,
        inflight: ctx.inflight.get() as u64,
        upstreams: state
            .clusters
            .iter()
            .map(|c| UpstreamCounts {
                name: c.cfg.name.clone(),
                opened: c.opened(),
                reused: c.reused(),
                retries: c.retries.get(),
                servers: c
                    .servers
                    .iter()
                    .map(|s| ServerCounts {
                        addr: s.addr,
                        requests: s.requests.get(),
                        failures: s.failures.get(),
                        in_flight: u64::from(s.in_flight.get()),
                    })
                    .collect(),
            })
            .collect(),
        caches: state
            .caches
            .iter()
            .map(|c| {
                let c = c.borrow();
                let s = &c.stats;
                CacheCounts {
                    name: c.zone.name.clone(),
                    hits: s.hits.get(),
                    misses: s.misses.get(),
                    revalidated: s.revalidated.get(),
                    stale: s.stale.get(),
                    stores: s.stores.get(),
                    evictions: s.evictions.get(),
                    bytes: c.bytes(),
                    entries: c.len() as u64,
                }
            })
            .collect(),
        routes: state
            .gateway
            .counters()
            .map(|(name, c)| (name.to_string(), c.snapshot()))
            .collect(),
    }
}

/// Applies a purge to this worker's share of the cache: a whole zone, or one URL as every
/// route that caches in the zone keys it (the route's name leads the key).
fn purge(state: &CoreState, p: &Purge) {
    let Some(zone) = state.config.caches.iter().position(|z| z.name == p.cache) else {
        return;
    };
    let mut cache = state.caches[zone].borrow_mut();
    let Some(url) = &p.url else {
        cache.clear();
        return;
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (host, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let target = if target.is_empty() { "/" } else { target };
    let scheme = scheme.to_ascii_lowercase();
    let mut key = Vec::new();
    for route in state.config.routes.iter().filter(|r| r.cache == Some(zone)) {
        crate::cache::write_key(&mut key, &route.name, &scheme, host, target);
        cache.remove(&key);
    }
}
