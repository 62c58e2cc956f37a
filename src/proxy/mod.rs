//! The per-connection pipeline: read a request head, route it, answer locally or forward it,
//! and loop while the connection stays keep-alive. One task per client connection.

pub mod body;
mod cached;
pub mod client;
mod forward;
mod frame;
pub mod head;
pub mod logged;
pub(crate) mod prefetch;
mod spares;
pub mod state;
pub(crate) mod upgrade;

use crate::config::{Action, HashKey, ListenerTls};
use crate::deadline::{coarse_ms, Phase, Watch};
use crate::gateway::rate_limit::InflightGuard as LimitGuard;
use crate::gateway::{aggregate, local_head, Outcome, Passed, ResponseEdits};
use crate::http::buf::ConnBuf;
use crate::http::request::{self, Body, RequestHead, Version};
use crate::http::status::write_error;
use crate::http::Reject;
use crate::route::strip_prefix;
use crate::tls::Accepted;
use crate::upstream::balance::stable_hash;
use client::ClientStream;
use frame::OneOf;
use head::{ClientInfo, UpstreamHead};
use monoio::net::TcpStream;
use state::{CoreState, InflightGuard, StateCell};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// Upper bound for `http.max_headers`; the slots live on the stack, uninitialised until used.
const MAX_HEADER_SLOTS: usize = 512;
/// A client connection's first read buffer (nginx's client_header_buffer_size is 1 KiB).
const INITIAL_READ_BUF: usize = 1024;
/// A read buffer grown past this (by a large head, or an upload read in large pieces) goes to
/// the worker's free list at the next keep-alive wait, and the connection back to a small one.
const SHRINK_READ_BUF_ABOVE: usize = 4 * 1024;
/// A keep-alive wait at least this long marks the connection as one that idles: its next wait
/// frees the read buffer and waits for readability first (see `read_request`).
const LEAN_AFTER_MS: u32 = 1000;

const NO_ROUTE: &str = "no route";

/// What the connection does after a response.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Next {
    KeepAlive,
    Close,
    /// Nothing answered yet: forward the request after all (`Answer::CacheWait`).
    Upstream,
}

/// Everything the exchange needs from the request head, owned, so the read buffer is free again.
pub struct Plan {
    action: PlanAction,
    /// Index into `config.routes` (meaningful for forwarded requests).
    route: usize,
    /// Consistent-hash key of the request, when its upstream hashes.
    hash: u64,
    body: Body,
    version: Version,
    keep_alive: bool,
    expect_continue: bool,
    head_request: bool,
    idempotent: bool,
    /// The client's `Upgrade` offer went upstream: a 101 turns the exchange into a tunnel.
    upgrade: bool,
    /// Response header changes of a gateway route (None on plain routes).
    response_edits: Option<Box<ResponseEdits>>,
    /// Holds a concurrent-request slot of the route's rate limit until the exchange ends.
    _limit_guard: Option<LimitGuard>,
    /// A request on a cached route: its hit, or what it carries upstream (empty elsewhere).
    cache: cached::CacheSlot,
}

enum PlanAction {
    /// Forward to this cluster; the upstream head is already in the output buffer.
    Forward(usize),
    /// Answer from Ringway itself.
    Answer(Answer),
}

impl PlanAction {
    /// The forwarding a cache wait stood for (`Next::Upstream`).
    #[cold]
    #[inline(never)]
    fn forwarded(&self) -> PlanAction {
        match self {
            PlanAction::Answer(Answer::CacheWait(cluster)) => PlanAction::Forward(*cluster),
            _ => Answer::Error(500, "nothing to forward").into(),
        }
    }
}

impl From<Answer> for PlanAction {
    fn from(a: Answer) -> Self {
        PlanAction::Answer(a)
    }
}

/// A request Ringway answers itself.
enum Answer {
    /// The static response of this route.
    Static(usize),
    /// An error status; the connection may stay open.
    Error(u16, &'static str),
    /// A gateway answer (401, 429, redirect, preflight...) is in the output buffer: head up to
    /// this length (no connection header, no blank line), then the body.
    Local(usize),
    /// Send the sub-requests of an aggregate route and answer with the merged JSON.
    Aggregate(Box<aggregate::Job>),
    /// A fresh response from the route's cache (the entry is in `Plan::cache`).
    Cached,
    /// Another request on this worker is fetching the same key from this cluster: wait for
    /// its answer, and forward only if it stored none.
    CacheWait(usize),
}

/// Where a client connection stands between requests.
struct KeepAlive {
    /// Requests read so far (saturating: a limit past 4 billion is no limit).
    served: u32,
    /// The next keep-alive wait frees the read buffer first (see `read_request`).
    lean: bool,
}

enum HeadEnd {
    /// Closed, reset or idle too long between requests: nothing to answer.
    Gone,
    Reject(Reject),
}

/// Serves one TLS client connection: the handshake, under its own deadline, then its requests.
pub async fn serve_tls(cell: Rc<StateCell>, tcp: TcpStream, peer: SocketAddr, tls: ListenerTls) {
    tcp.accepted();
    let worker = cell.get().worker.clone();
    // A connection in its handshake counts toward `http.max_connections` like any other.
    worker.connections.set(worker.connections.get() + 1);
    let watch = worker.watchdog.watch(tcp.as_raw_fd());
    watch.arm(tls.handshake_timeout, Phase::Read);
    let shaken = match crate::tls::accept(tls.server, tcp).await {
        Ok(Accepted::Tls(client)) => Some(client),
        Ok(Accepted::PlainHttp(mut tcp)) => {
            // As nginx does: a clear answer beats a TLS alert the client cannot read.
            crate::hint::cold();
            let mut out = Vec::with_capacity(256);
            write_error(&mut out, 400, "plain HTTP sent to the HTTPS port", true);
            worker.count_response(400);
            let send_timeout = cell.get().config.http.send_timeout;
            let _ = body::write(&mut tcp, &mut out, &watch, send_timeout).await;
            discard_received(&tcp);
            None
        }
        Err(_) => None,
    };
    watch.disarm();
    drop(watch);
    worker.connections.set(worker.connections.get() - 1);
    if let Some(client) = shaken {
        if cell.get().config.access_log.is_some() {
            Box::pin(serve_client(cell, logged::Logged::new(client), peer)).await;
        } else {
            serve_client(cell, client, peer).await;
        }
    }
}

/// Takes what the client has sent off the socket, without waiting: a socket closed with
/// unread bytes resets the connection, and the reset can destroy the answer before the client
/// reads it.
fn discard_received(tcp: &TcpStream) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(
            crate::sock::recv_now(tcp.as_raw_fd(), &mut sink, 0),
            Ok(1..)
        ) {
            break;
        }
    }
}

/// Serves one client connection until it closes.
#[allow(clippy::manual_async_fn)] // on purpose: see the first comment in the body
pub fn serve_client<C: ClientStream>(
    cell: Rc<StateCell>,
    mut client: C,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> {
    // An async block, not an `async fn`: that would keep a second copy of its arguments (the
    // socket alone is 80 bytes) in every connection's future. The peer address is rendered
    // here, before it, so the future does not carry the address beside its rendering.
    let info = ClientInfo::new(peer.ip(), C::TLS);
    async move {
        let worker = cell.get().worker.clone();
        worker.connections.set(worker.connections.get() + 1);
        client.accepted();
        // Declared after `client` so it is dropped first: no armed watch outlives its socket.
        let watch = worker.watchdog.watch(client.as_raw_fd());
        // Small on purpose: an idle keep-alive connection holds only this buffer and its task;
        // a larger head grows it on demand (up to http.max_head_size).
        let mut rbuf = ConnBuf::with_capacity(INITIAL_READ_BUF);
        // The first keep-alive wait is lean, so a client that sends one request and stays
        // connected (a browser's spare connection) costs only its task while it waits.
        let mut ka = KeepAlive {
            served: 0,
            lean: true,
        };
        // The loop's value, not a variable beside it: one kept across the wait for the next
        // request would cost every idle connection its room.
        let rejected = loop {
            // Taken apart in the `let`, so the result is not kept beside its parts while the
            // exchange runs.
            let (state, mut plan, mut out) =
                match read_request(&cell, &mut client, &watch, &mut rbuf, &mut ka, &info).await {
                    Ok(request) => request,
                    Err(HeadEnd::Gone) => break None,
                    Err(HeadEnd::Reject(r)) => break Some(r),
                };
            ka.served = ka.served.saturating_add(1);
            let inflight = InflightGuard::new(&worker);
            // Every answer runs in a pooled frame, awaited at this one point: the connection's
            // own future, which an idle keep-alive connection holds, keeps room for its wait
            // for the next request and a frame pointer, not for the largest answer.
            let next = loop {
                let next = match &plan.action {
                    // Forwarding is framed by `in_frame` itself: the exchange is its frame's
                    // future directly, with no wrapper to poll (every poll of a nested future
                    // first reads its state tag, a cache miss per level at high concurrency).
                    PlanAction::Forward(cluster) => OneOf::First(forward::in_frame(
                        &state,
                        *cluster,
                        &mut client,
                        &watch,
                        &mut rbuf,
                        &mut out,
                        &plan,
                    )),
                    PlanAction::Answer(a) => OneOf::Second(C::framed(
                        &worker.frames,
                        answer(&state, &mut client, &watch, &mut rbuf, &mut out, &plan, a),
                    )),
                }
                .await;
                // A request that waited on the cache for nothing goes upstream after all, from
                // this one call site of the exchange: a second would cost it its inlining.
                if next != Next::Upstream {
                    break next;
                }
                plan.action = plan.action.forwarded();
            };
            drop(inflight);
            if C::LOGS {
                client.log_done(&state);
            }
            worker.give_buf(out);
            if next == Next::Close
                || u64::from(ka.served) >= state.config.http.max_keepalive_requests
                || worker.draining.get()
            {
                break None;
            }
        };
        if let Some(r) = rejected {
            let mut out = Vec::with_capacity(256);
            write_error(&mut out, r.status, r.reason, true);
            worker.count_response(r.status);
            // One state for the line's start and end, even across a reload.
            let state = cell.get();
            let send_timeout = state.config.http.send_timeout;
            if C::LOGS {
                client.log_reject(&state, &info);
            }
            let _ = C::framed(
                &worker.frames,
                body::write(&mut client, &mut out, &watch, send_timeout),
            )
            .await;
            if C::LOGS {
                client.log_done(&state);
            }
        }
        client.close(&watch, &cell).await;
        worker.connections.set(worker.connections.get() - 1);
    }
}

/// Answers a request from Ringway itself: static, error, gateway and aggregate answers.
async fn answer<C: ClientStream>(
    state: &CoreState,
    client: &mut C,
    cw: &Watch,
    rbuf: &mut ConnBuf,
    out: &mut Vec<u8>,
    plan: &Plan,
    answer: &Answer,
) -> Next {
    match answer {
        Answer::Local(head_len) => {
            let keep = plan.keep_alive
                && discard_buffered_body(rbuf, plan.body)
                && !state.worker.draining.get();
            terminate_local_head(out, *head_len, keep, plan.head_request);
            finish_local(state, client, cw, out, keep).await
        }
        Answer::Aggregate(job) => {
            let keep = plan.keep_alive
                && discard_buffered_body(rbuf, plan.body)
                && !state.worker.draining.get();
            let (Action::Aggregate(agg), Some(gw)) = (
                &state.config.routes[job.route].action,
                state.gateway.route(job.route),
            ) else {
                return forward::local_error(
                    state,
                    client,
                    cw,
                    out,
                    500,
                    "aggregate route changed",
                )
                .await;
            };
            // Off the connection's future like forwarding: the fan-out's state must not grow
            // every connection (aggregate routes are rare enough for a plain Box).
            let merged = Box::pin(aggregate::run(
                agg,
                job,
                &state.clusters,
                &gw.counters,
                &state.worker.watchdog,
            ))
            .await;
            out.clear();
            let head_len = local_head(out, merged.status, &merged.body, |o| {
                if let Some(e) = &plan.response_edits {
                    o.extend_from_slice(&e.extra);
                }
                o.extend_from_slice(b"content-type: application/json\r\n");
            });
            terminate_local_head(out, head_len, keep, plan.head_request);
            finish_local(state, client, cw, out, keep).await
        }
        Answer::Static(route) => {
            let route = *route;
            let keep = plan.keep_alive
                && discard_buffered_body(rbuf, plan.body)
                && !state.worker.draining.get();
            out.clear();
            if let Some(s) = &state.statics[route] {
                out.extend_from_slice(&s.head);
                out.extend_from_slice(if keep {
                    b"\r\n\r\n"
                } else {
                    b"\r\nconnection: close\r\n\r\n"
                });
                if !plan.head_request {
                    out.extend_from_slice(&s.body);
                }
            }
            finish_local(state, client, cw, out, keep).await
        }
        Answer::Cached => {
            let keep = plan.keep_alive
                && discard_buffered_body(rbuf, plan.body)
                && !state.worker.draining.get();
            cached::answer_hit(state, client, cw, out, plan, keep).await
        }
        Answer::CacheWait(_) => {
            if let Some(c) = plan.cache.ctx() {
                let waited = c.await_other(state, client, cw, out, plan);
                if let Some(next) = Box::pin(waited).await {
                    return next;
                }
            }
            Next::Upstream
        }
        Answer::Error(status, why) => {
            let keep = plan.keep_alive
                && discard_buffered_body(rbuf, plan.body)
                && !state.worker.draining.get();
            out.clear();
            write_error(out, *status, why, !keep);
            finish_local(state, client, cw, out, keep).await
        }
    }
}

/// Ends a local head written by the gateway: connection header, blank line, and no body for HEAD.
fn terminate_local_head(out: &mut Vec<u8>, head_len: usize, keep: bool, head_request: bool) {
    if head_request {
        out.truncate(head_len);
    }
    let end: &[u8] = if keep {
        b"\r\n\r\n"
    } else {
        b"\r\nconnection: close\r\n\r\n"
    };
    out.splice(head_len..head_len, end.iter().copied());
}

async fn finish_local<C: ClientStream>(
    state: &CoreState,
    client: &mut C,
    cw: &Watch,
    out: &mut Vec<u8>,
    keep: bool,
) -> Next {
    state.worker.count_head(out);
    match body::write(client, out, cw, state.config.http.send_timeout).await {
        Ok(()) if keep => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// A request answered locally may still carry a body; if it is already here in full it is
/// skipped and the connection stays usable, otherwise the connection must close.
fn discard_buffered_body(rbuf: &mut ConnBuf, body: Body) -> bool {
    match body {
        Body::None => true,
        Body::Length(n) if rbuf.len() as u64 >= n => {
            rbuf.consume(n as usize);
            true
        }
        _ => false,
    }
}

/// Reads one request head (under the idle, then the header deadline) and plans its exchange.
/// The output buffer (holding the upstream head for a
/// forwarded request) is taken from the worker's free list only now, so idle connections
/// hold none.
///
/// A keep-alive wait reads straight into the connection's buffer, one operation, unless
/// `ka.lean`: then the buffer is freed and the wait is for readability first, one operation
/// more, as nginx waits. `lean` is set by how long the wait before took (`LEAN_AFTER_MS`), so
/// a busy connection pays nothing and an idling one holds no buffer. A pending read cannot
/// simply be cancelled instead: bytes it received in the meantime would be lost.
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (see `serve_client`)
fn read_request<'a, C: ClientStream>(
    cell: &'a StateCell,
    client: &'a mut C,
    cw: &'a Watch,
    rbuf: &'a mut ConnBuf,
    ka: &'a mut KeepAlive,
    info: &'a ClientInfo,
) -> impl std::future::Future<Output = Result<(Rc<CoreState>, Plan, Vec<u8>), HeadEnd>> + 'a {
    async move {
        // The state is taken when bytes are there to parse, so a request that arrives after a
        // reload is served by the new config even on an old keep-alive connection.
        let mut state = cell.get();
        let mut head_started = false;
        // When the keep-alive wait began, on the worker's coarse clock (wrapping). A u32, not a
        // u64: this lives in every idle connection's future.
        let mut waiting_since = 0u32;
        loop {
            let http = &state.config.http;
            if !rbuf.is_empty() {
                let mut slots = [MaybeUninit::uninit(); MAX_HEADER_SLOTS];
                let n = http.max_headers.min(MAX_HEADER_SLOTS);
                match request::parse(rbuf.data(), &mut slots[..n], &state.limits) {
                    Ok(Some(head)) => {
                        cw.disarm();
                        let len = head.head_len;
                        let mut out = state.worker.take_buf(4096);
                        let ids = if C::LOGS { state.worker.ids_made() } else { 0 };
                        let mut plan = plan(&state, &head, &mut out, info);
                        if C::LOGS {
                            // The one answer planning gives a request no route matched.
                            let routed = !matches!(
                                plan.action,
                                PlanAction::Answer(Answer::Error(404, NO_ROUTE))
                            );
                            let route = routed.then_some(plan.route);
                            client.log_request(&state, &head, info, route, ids);
                        }
                        // The last request a connection may carry says so in its response.
                        if u64::from(ka.served) + 1 >= http.max_keepalive_requests {
                            plan.keep_alive = false;
                        }
                        rbuf.consume(len);
                        return Ok((state, plan, out));
                    }
                    Ok(None) => {}
                    Err(r) => {
                        crate::hint::cold();
                        cw.disarm();
                        return Err(HeadEnd::Reject(r));
                    }
                }
                // The first byte of a head starts its deadline: a slow sender gets the whole head's
                // time, not a fresh wait per byte.
                if !head_started {
                    head_started = true;
                    cw.arm(http.header_timeout, Phase::Read);
                    if C::LOGS {
                        client.log_head_started();
                    }
                }
            } else if !head_started {
                let idle = if ka.served == 0 {
                    http.header_timeout
                } else {
                    http.keepalive_timeout
                };
                cw.arm(idle, Phase::Read);
                if ka.served > 0 {
                    waiting_since = coarse_ms() as u32;
                    // Between requests the connection keeps a small buffer, or none while it
                    // idles; one grown by a large head or body goes to the free list.
                    let lean = ka.lean && C::LEAN_WAIT;
                    if lean || rbuf.capacity() > SHRINK_READ_BUF_ABOVE {
                        // An idling connection's path: it waits anyway.
                        crate::hint::cold();
                        // Gone before the wait below, not held across it.
                        let old = rbuf.release();
                        if old.capacity() > SHRINK_READ_BUF_ABOVE {
                            state.worker.give_buf(old);
                        } else {
                            drop(old);
                        }
                        if lean {
                            // (On the legacy epoll driver the wait may return at once on
                            // cached readiness, so the saving is io_uring's.)
                            client.wait_readable().await;
                        }
                        rbuf.reserve_total(INITIAL_READ_BUF);
                    }
                }
            }
            let res = rbuf.fill(client, http.max_head_size).await;
            // A read with no head begun and no byte before it was the keep-alive wait (a
            // buffered partial head always starts the head's deadline first).
            if ka.served > 0 && !head_started {
                ka.lean = (coarse_ms() as u32).wrapping_sub(waiting_since) >= LEAN_AFTER_MS;
            }
            match res {
                // Bytes came: parsed even if the deadline fired meanwhile, which only shut the
                // read side, so the next read ends and meets it below. Not asking `fired` here
                // spares the poll a load of the watch's cold line.
                Ok(n) if n > 0 => state = cell.get(),
                // The deadline shut the read side: an idle connection just closes, a half-sent
                // head gets its 408 (the write side still works).
                _ if cw.fired() && rbuf.is_empty() => return Err(HeadEnd::Gone),
                _ if cw.fired() => {
                    return Err(HeadEnd::Reject(Reject::new(408, "request head timed out")))
                }
                _ => {
                    crate::hint::cold();
                    cw.disarm();
                    return Err(HeadEnd::Gone);
                }
            }
        }
    }
}

/// Routes the request and writes the upstream head into `out` when it is to be forwarded.
fn plan(state: &CoreState, head: &RequestHead<'_>, out: &mut Vec<u8>, info: &ClientInfo) -> Plan {
    let mut plan = Plan {
        action: Answer::Error(404, NO_ROUTE).into(),
        route: 0,
        hash: 0,
        body: head.body,
        version: head.version,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        head_request: head.method == "HEAD",
        idempotent: head.idempotent(),
        upgrade: false,
        response_edits: None,
        _limit_guard: None,
        cache: Default::default(),
    };
    let Some(route_idx) = state
        .router
        .find(head.method, head.host, head.path, head.headers)
    else {
        return plan;
    };
    let route = &state.config.routes[route_idx];
    plan.route = route_idx;
    if let Body::Length(n) = head.body {
        if n > route.max_body_size {
            plan.action = Answer::Error(413, "request body too large").into();
            return plan;
        }
    }
    if let Action::Forward(cluster) = &route.action {
        if let Some(key) = &state.config.upstreams[*cluster].hash_key {
            plan.hash = hash_key(key, head, info);
        }
    }
    let Some(gw) = state.gateway.route(route_idx) else {
        // A plain route: no gateway work at all.
        let mut cache_step = cached::Step::Forward;
        if let Some(zone) = route.cache {
            cache_step = cached::plan_request(state, zone, head, info.tls(), &mut plan);
            if cache_step == cached::Step::Answered {
                return plan;
            }
        }
        // One call site: a second would cost the common path its inlining.
        plan.action = plain_action(state, route_idx, head, out, info);
        cache_step.apply(&mut plan, out);
        if head.conn.upgrade {
            upgrade::offer(&mut plan, head, out);
        }
        return plan;
    };
    let ip = info.ip();
    let req = crate::gateway::Request {
        method: head.method,
        host: head.host,
        target: head.path,
        headers: head.headers,
        client_ip: ip.as_str(),
    };
    let id_header = state.config.proxy.request_id_header.as_deref();
    let mut passed = match gw.check(&req, id_header, |o| state.worker.push_request_id(o), out) {
        Outcome::Local { head_len } => {
            plan.action = Answer::Local(head_len).into();
            return plan;
        }
        Outcome::Pass(p) => p,
    };
    plan.response_edits = passed.response.take();
    plan._limit_guard = passed.guard.take();
    // After the filters: a request they refuse never sees the cache.
    let mut cache_step = cached::Step::Forward;
    if let Some(zone) = route.cache {
        cache_step = cached::plan_request(state, zone, head, info.tls(), &mut plan);
        if cache_step == cached::Step::Answered {
            return plan;
        }
    }
    let passed: &Passed = &passed;
    plan.action = match &route.action {
        Action::Respond(_) => Answer::Static(route_idx).into(),
        Action::Redirect(r) => {
            out.clear();
            let vars = gw.vars(&req, passed, id_header);
            let head_len = local_head(out, r.status, b"", |o| {
                crate::gateway::redirect::write_location(r, &vars, o);
                if let Some(e) = &plan.response_edits {
                    o.extend_from_slice(&e.extra);
                }
            });
            Answer::Local(head_len).into()
        }
        Action::Aggregate(agg) => {
            let edits = gw.upstream_edits(gw.vars(&req, passed, id_header), passed);
            let mut heads = Vec::with_capacity(agg.parts.len());
            // One request id for every part, so the services' logs line up.
            let mut own_id = Vec::new();
            let request_id: Option<&[u8]> = match id_header {
                None => None,
                Some(idh) => match edits
                    .request_id
                    .or_else(|| crate::gateway::auth::header(head.headers, idh))
                {
                    Some(id) => Some(id),
                    None => {
                        state.worker.push_request_id(&mut own_id);
                        Some(&own_id)
                    }
                },
            };
            for part in &agg.parts {
                let upstream = &state.config.upstreams[part.upstream];
                let mut h = Vec::with_capacity(256);
                h.extend_from_slice(part.method.as_bytes());
                h.push(b' ');
                edits.render_path(&part.path, &mut h);
                h.extend_from_slice(b" HTTP/1.1\r\nhost: ");
                h.extend_from_slice(upstream.name.as_bytes());
                h.extend_from_slice(b"\r\n");
                if state.config.proxy.x_forwarded_for {
                    info.push_forwarded_for(&mut h, |_| {});
                }
                if let (Some(idh), Some(id)) = (id_header, request_id) {
                    h.extend_from_slice(idh.as_bytes());
                    h.extend_from_slice(b": ");
                    h.extend(id.iter().copied().filter(|c| *c >= 0x20 && *c != 0x7f));
                    h.extend_from_slice(b"\r\n");
                }
                edits.write_extra(&mut h);
                if matches!(part.method.as_str(), "POST" | "PUT" | "PATCH") {
                    h.extend_from_slice(b"content-length: 0\r\n");
                }
                h.extend_from_slice(b"\r\n");
                heads.push(h);
            }
            Answer::Aggregate(Box::new(aggregate::Job {
                route: route_idx,
                heads,
            }))
            .into()
        }
        Action::Forward(cluster) => {
            // The filters' target (credential parameter removed, or rewritten; a rewrite never
            // comes with strip_prefix) is still subject to strip_prefix.
            let base = passed.target.as_deref().unwrap_or(head.path);
            let edits = gw.upstream_edits(gw.vars(&req, passed, id_header), passed);
            forward_action(state, route, *cluster, base, head, out, info, Some(&edits))
        }
    };
    cache_step.apply(&mut plan, out);
    if head.conn.upgrade {
        upgrade::offer(&mut plan, head, out);
    }
    plan
}

/// Where a forwarded request goes: its path (with the route's prefix stripped) and the Host
/// to send (the client's, or the upstream's name when `preserve_host` is off).
fn upstream_target<'a>(
    state: &'a CoreState,
    route: &'a crate::config::Route,
    cluster: usize,
    path: &'a str,
    host: &str,
) -> UpstreamHead<'a> {
    let (path_prefix, path) = match (&route.matcher.path_prefix, route.strip_prefix) {
        (Some(prefix), true) => strip_prefix(path, prefix),
        _ => ("", path),
    };
    let host_override = if state.config.proxy.preserve_host && !host.is_empty() {
        None
    } else {
        Some(state.config.upstreams[cluster].name.as_str())
    };
    UpstreamHead {
        path_prefix,
        path,
        host_override,
    }
}

/// The action of a route without gateway filters: the fast path, exactly as before the gateway.
fn plain_action(
    state: &CoreState,
    route_idx: usize,
    head: &RequestHead<'_>,
    out: &mut Vec<u8>,
    info: &ClientInfo,
) -> PlanAction {
    let route = &state.config.routes[route_idx];
    match &route.action {
        Action::Respond(_) => Answer::Static(route_idx).into(),
        // Redirect and aggregate routes always have a RouteGateway; this is unreachable.
        Action::Redirect(_) | Action::Aggregate(_) => {
            Answer::Error(500, "gateway route without filters").into()
        }
        Action::Forward(cluster) => {
            forward_action(state, route, *cluster, head.path, head, out, info, None)
        }
    }
}

/// Writes the upstream request head for `path` (before strip_prefix) into `out`.
#[allow(clippy::too_many_arguments)]
fn forward_action(
    state: &CoreState,
    route: &crate::config::Route,
    cluster: usize,
    path: &str,
    head: &RequestHead<'_>,
    out: &mut Vec<u8>,
    info: &ClientInfo,
    edits: Option<&crate::gateway::UpstreamEdits<'_>>,
) -> PlanAction {
    let target = upstream_target(state, route, cluster, path, head.host);
    out.clear();
    head::write_request(
        out,
        head,
        &target,
        &state.config.proxy,
        info,
        &state.worker,
        edits,
    );
    PlanAction::Forward(cluster)
}

/// The consistent-hash key of a request; a missing header or cookie hashes as empty, so such
/// requests still land together on one server.
fn hash_key(key: &HashKey, head: &RequestHead<'_>, info: &ClientInfo) -> u64 {
    match key {
        HashKey::ClientIp => stable_hash(info.ip().as_bytes()),
        HashKey::Path => stable_hash(
            head.path
                .split_once('?')
                .map_or(head.path, |(p, _)| p)
                .as_bytes(),
        ),
        HashKey::Header(name) => {
            let v = head
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map_or(&b""[..], |h| h.value);
            stable_hash(v)
        }
        HashKey::Cookie(name) => {
            let v = head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
                .flat_map(|h| h.value.split(|b| *b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
                    (k == name.as_bytes()).then(|| &v[1..])
                })
                .unwrap_or(b"");
            stable_hash(v)
        }
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn idle_connection_future_stays_small() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let c = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
            let cfg = std::sync::Arc::new(crate::config::builtin());
            let published = crate::upstream::published::Published::build(&cfg, None);
            let w = std::rc::Rc::new(super::state::WorkerCtx::new(0, false));
            let cell = std::rc::Rc::new(super::state::StateCell::new(
                super::state::CoreState::new(cfg, published, w, None),
            ));
            // Spawned as the worker spawns it.
            let f = super::prefetch::PrefetchOnWake::new(super::serve_client(cell, c, addr));
            // Every idle keep-alive connection holds this future: every answer runs in a frame
            // of its own (proxy/frame.rs) so its state stays out of it (3.4 KB once, 992 bytes
            // before the answers were all framed). 464 bytes in a release build today, with the
            // four prefetch slots: exactly what keeps monoio's task cell (the future plus 48
            // bytes) within mimalloc's 512-byte size class; a byte more costs every connection
            // 128.
            let size = std::mem::size_of_val(&f);
            eprintln!("connection task future: {size} bytes");
            assert!(size <= 464, "connection task future grew to {size} bytes");
        });
    }
}
