//! One proxied exchange: pick a server, check out (or open) a connection, send the head and
//! stream the body, read the response head, stream the response back, and return the
//! connection to the pool only when its state is certain. Failed attempts are retried on
//! another server when the route's policy, the request's safety and the retry budget allow.

use super::body::{self, BodyError, Deadlines, Encode, Failure, Side};
use super::cached::Stored;
use super::client::ClientStream;
use super::head::{connection_line, write_response, OutFraming};
use super::state::CoreState;
use super::{Next, Plan};
use crate::deadline::{Phase, Watch};
use crate::http::buf::{send_detached, ConnBuf};
use crate::http::request::{Body, Version};
use crate::http::response;
use crate::http::status::{write_error, CONTINUE_100};
use crate::upstream::{Cluster, ConnectError, Outcome, SelectError, UpstreamConn};
use monoio::io::AsyncWriteRentExt;
use monoio::time::Instant;
use std::mem::MaybeUninit;
use std::time::Duration;

/// Upstream response heads larger than this are refused (502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Responses (head and body) up to this size are read whole before they go to the client, in
/// one write. The upstream buffer grows to hold them (to at most 64 KiB, which the worker's free
/// list still keeps); larger bodies stream through the buffer as it is.
const BUFFER_WHOLE: u64 = 32 * 1024;
const RESPONSE_HEADER_SLOTS: usize = 128;
/// How long an error answer may take to leave before the connection is dropped anyway.
const ERROR_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request sent beside the read of its response (see `Exchange::run`).
const DETACHED_SEND_MAX: usize = 2048;

/// What the response head told us, kept after the head's bytes are consumed.
struct ResponsePlan {
    status: u16,
    /// How the upstream delimits the body.
    body: Body,
    framing: OutFraming,
    encode: Encode,
    /// The upstream connection may serve another request once the body is read.
    reusable: bool,
    /// The client connection stays open after this response.
    keep: bool,
    /// When not 0: the upstream's head (this many bytes) is still at the front of the upstream
    /// buffer and goes to the client as is, together with the body, without a copy.
    verbatim_head: usize,
}

/// Reads until `ubuf` holds `n` bytes when `n` is at most `BUFFER_WHOLE`, so that a small
/// response leaves in one write: a second send costs a second transmission, far more than
/// holding the body (nginx buffers responses as well). A failed read stops it early; the relay
/// that follows meets the failure and reports it.
async fn read_whole(conn: &mut UpstreamConn, ubuf: &mut ConnBuf, n: u64, timeout: Duration) {
    if n > BUFFER_WHOLE {
        return;
    }
    while (ubuf.len() as u64) < n {
        conn.watch.arm(timeout, Phase::Write);
        let res = ubuf.fill(&mut conn.stream, n as usize).await;
        conn.watch.disarm();
        if !matches!(res, Ok(k) if k > 0) {
            return;
        }
    }
}

impl ResponsePlan {
    /// Bytes to send straight from the upstream buffer when the head goes out verbatim: the
    /// head and the whole body behind it.
    fn verbatim_len(&self) -> Option<u64> {
        match self.framing {
            _ if self.verbatim_head == 0 => None,
            OutFraming::Length(n) => Some(self.verbatim_head as u64 + n),
            OutFraming::NoBody => Some(self.verbatim_head as u64),
            OutFraming::Chunked | OutFraming::Close => None,
        }
    }

    /// Bytes the upstream buffer must hold for the response to leave in one write: the head
    /// and body for a head passed on verbatim, the body alone for a rewritten head (it is in
    /// the output buffer).
    fn one_write_len(&self) -> Option<u64> {
        match self.framing {
            OutFraming::Length(n) if self.verbatim_head == 0 => Some(n),
            _ => self.verbatim_len(),
        }
    }
}

enum HeadError {
    /// Closed or reset before a single byte of response: a stale pooled connection looks so.
    Empty,
    Io,
    Timeout,
    Bad(&'static str),
    /// A status the route retries on, left unanswered because a retry will follow.
    RetryStatus(u16),
    /// The request sent beside the response read did not all go out.
    WriteFailed,
}

/// Why an attempt failed, and whether the request may go to another server.
enum AttemptError {
    /// Worth another attempt (if policy and budget allow); the answer if not.
    Retryable(u16, &'static str),
    /// The pooled connection was stale: try again on a fresh one, free of charge.
    Stale,
    /// Answered or abandoned already.
    Done(Next),
}

/// Where the retry loop stands.
#[derive(Default)]
struct Tries {
    /// Servers tried so far (bit `server % 64`), which the balancer avoids.
    tried: u64,
    attempts: u32,
    /// Retries on a fresh connection after a stale pooled one: one at most, free of charge.
    stale_retries: u32,
}

/// The attempt error for a failed connect; a timeout or refusal counts against the server.
#[cold]
#[inline(never)]
fn connect_failure(cluster: &Cluster, server: usize, e: ConnectError) -> AttemptError {
    let why = match e {
        ConnectError::Saturated => return AttemptError::Retryable(0, "upstream at capacity"),
        ConnectError::Timeout => "upstream connect timed out",
        ConnectError::Refused(_) => "upstream connect failed",
    };
    cluster.record(server, Outcome::Failure);
    AttemptError::Retryable(0, why)
}

/// The attempt error for a request that did not all reach the upstream: a stale pooled
/// connection when the request can be sent again, else a failure of the server.
#[cold]
#[inline(never)]
fn write_failure(cluster: &Cluster, server: usize, stale: bool) -> AttemptError {
    if stale {
        return AttemptError::Stale;
    }
    cluster.record(server, Outcome::Failure);
    AttemptError::Retryable(502, "upstream write failed")
}

/// The exchange of a forwarded request, as a future living in one of the worker's reused
/// frames: off the connection's future, which an idle keep-alive connection keeps.
/// `out` holds the upstream request head on entry and is reused.
pub fn in_frame<'a, C: ClientStream>(
    state: &'a CoreState,
    cluster_idx: usize,
    client: &'a mut C,
    cw: &'a Watch,
    rbuf: &'a mut ConnBuf,
    out: &'a mut Vec<u8>,
    plan: &'a Plan,
) -> impl std::future::Future<Output = Next> + 'a {
    let mut body_left = plan.body;
    // A body already received in full travels in the same write as the head and can be resent.
    if let Body::Length(n) = plan.body {
        if rbuf.len() as u64 >= n {
            out.extend_from_slice(&rbuf.data()[..n as usize]);
            rbuf.consume(n as usize);
            body_left = Body::None;
        }
    }
    let ex = Exchange {
        state,
        cw,
        cluster: &state.clusters[cluster_idx],
        plan,
        client,
        rbuf,
        ubuf: ConnBuf::from_vec(state.worker.take_buf(16 * 1024)),
        out,
        deadline: state.config.routes[plan.route]
            .timeout
            .map(|t| Instant::now() + t),
        body_left,
        resendable: body_left == Body::None,
    };
    C::framed(&state.worker.frames, ex.run())
}

impl<C: ClientStream> Drop for Exchange<'_, C> {
    /// The upstream buffer goes back to the worker however the exchange ends, abandoned
    /// midway included.
    fn drop(&mut self) {
        let ubuf = std::mem::replace(&mut self.ubuf, ConnBuf::from_vec(Vec::new()));
        self.state.worker.give_buf(ubuf.into_vec());
    }
}

/// Everything one exchange works on, held in one place: every await below borrows `self`
/// instead of taking its own copies of the connections and buffers, which keeps the
/// exchange's future (and the cache lines each request touches) small.
struct Exchange<'a, C: ClientStream> {
    state: &'a CoreState,
    /// The client connection's watch.
    cw: &'a Watch,
    cluster: &'a Cluster,
    plan: &'a Plan,
    client: &'a mut C,
    /// The client's read buffer: the rest of a streamed request body comes from it.
    rbuf: &'a mut ConnBuf,
    /// The upstream's read buffer, from the worker's free list.
    ubuf: ConnBuf,
    /// The upstream request head until the response head replaces it.
    out: &'a mut Vec<u8>,
    /// The route's overall timeout, across attempts.
    deadline: Option<Instant>,
    body_left: Body,
    /// The whole request is in `out`, so it can be sent again.
    resendable: bool,
}

impl<'a, C: ClientStream> Exchange<'a, C> {
    /// Runs the exchange to its end: attempts, retries, and the answer.
    ///
    /// One future for the whole retry loop and every attempt in it, awaiting monoio's
    /// operations directly wherever the common case goes: each poll steps through every nested
    /// future's state first, and at high concurrency each one is a cache miss. An async block
    /// rather than an `async fn`, which would keep a second copy of `self` in its state.
    #[allow(clippy::manual_async_fn)] // on purpose: see the doc comment
    fn run(mut self) -> impl std::future::Future<Output = Next> + 'a {
        async move {
            let state = self.state;
            let policy = &state.config.routes[self.plan.route].retry;
            let budget = &state.retry_budgets[self.plan.route];
            budget.on_request();
            let mut tries = Tries::default();
            loop {
                tries.attempts += 1;
                let server = match self.cluster.select(self.plan.hash, tries.tried) {
                    Ok(s) => s,
                    Err(SelectError::AtCapacity) => {
                        return self.fail(503, "upstream at capacity").await
                    }
                    Err(SelectError::NoneAvailable) => {
                        return self.fail(503, "no healthy upstream server").await
                    }
                };
                tries.tried |= 1u64 << (server % 64);
                let Some(inflight) = self.cluster.begin(server) else {
                    return self.fail(503, "upstream at capacity").await;
                };
                if C::LOGS {
                    self.client
                        .log_attempt(self.cluster.cfg.servers[server].addr);
                }
                // Status retries are only possible while another attempt is allowed.
                let may_retry_status = tries.attempts < policy.attempts
                    && self.resendable
                    && self.plan.idempotent
                    && budget.available();
                let result: Result<Next, AttemptError> = 'attempt: {
                    let cluster = self.cluster;
                    let cfg = &cluster.cfg;
                    // A stale pooled connection is only harmless when the request can be sent
                    // again.
                    let verify = !(self.plan.idempotent && self.resendable);
                    let allow_pooled = tries.stale_retries == 0;
                    let mut conn = match cluster
                        .connect(server, allow_pooled, verify, &state.worker.watchdog)
                        .await
                    {
                        Ok(c) => c,
                        Err(e) => break 'attempt Err(connect_failure(cluster, server, e)),
                    };
                    // Its wake-ups prefetch the connection's descriptor (proxy/prefetch.rs).
                    super::prefetch::upstream_socket(&conn.stream);
                    let sent_at = cluster.tracks_latency.then(std::time::Instant::now);
                    // A whole request that fits the socket's send buffer goes out beside the
                    // read of its response (see `send_detached`); anything else is written
                    // first. A short send there would leave the upstream waiting for the rest
                    // while Ringway waits for the response, so the size is kept far under the
                    // smallest send buffer Linux gives a TCP socket (tcp_wmem's 4 KiB minimum).
                    // Collected after the first response read (the loop below always makes one).
                    let mut detached = if state.worker.uring
                        && self.body_left == Body::None
                        && self.out.len() <= DETACHED_SEND_MAX
                    {
                        Some(send_detached(&mut conn.stream, std::mem::take(self.out)))
                    } else {
                        conn.watch.arm(cfg.body_timeout, Phase::Write);
                        // Kept for a resend.
                        let (written, head) = conn.stream.write_all(std::mem::take(self.out)).await;
                        *self.out = head;
                        conn.watch.disarm();
                        if written.is_err() {
                            let stale = conn.reused && self.resendable;
                            break 'attempt Err(write_failure(cluster, server, stale));
                        }
                        if self.body_left != Body::None {
                            if let Some((next, upstream_at_fault)) =
                                self.send_body(cfg.body_timeout, &mut conn).await
                            {
                                // Only the upstream's own failure counts toward its ejection:
                                // a client sending a broken or stalled body must not be able to
                                // eject servers.
                                if upstream_at_fault {
                                    cluster.record(server, Outcome::Failure);
                                }
                                break 'attempt Err(AttemptError::Done(next));
                            }
                            self.body_left = Body::None;
                        }
                        None
                    };

                    // The response head, read until complete (interim 1xx heads skipped).
                    self.ubuf.clear();
                    let keep_wanted = self.plan.keep_alive && !state.worker.draining.get();
                    let mut wait = cfg.response_timeout;
                    if let Some(d) = self.deadline {
                        wait = wait.min(d.saturating_duration_since(Instant::now()));
                    }
                    let retry_statuses = if may_retry_status {
                        &policy.on_statuses[..]
                    } else {
                        &[]
                    };
                    let mut received_any = false;
                    let head = loop {
                        match response_plan(
                            &mut self.ubuf,
                            self.plan,
                            self.out,
                            keep_wanted,
                            retry_statuses,
                        ) {
                            Ok(None) => {}
                            Ok(Some(resp)) => break Ok(resp),
                            Err(e) => break Err(e),
                        }
                        // On timeout the connection is dropped, so both directions may be shut.
                        conn.watch.arm(wait, Phase::Write);
                        let res = self.ubuf.fill(&mut conn.stream, MAX_RESPONSE_HEAD).await;
                        conn.watch.disarm();
                        // The first read has ended, and with it any wait for the request to go:
                        // its send completed long ago (and woke nothing) unless it met a full
                        // socket, so it is armed all the same. `out` must be back before a head
                        // is planned into it or the request is sent again; a send that did not
                        // all go out overrides what the read saw. (A fired deadline stays
                        // fired: `arm` does not clear it.)
                        if let Some(send) = detached.take() {
                            conn.watch.arm(cfg.body_timeout, Phase::Write);
                            let (written, buf) = send.await;
                            conn.watch.disarm();
                            let whole = matches!(written, Ok(n) if n == buf.len());
                            *self.out = buf;
                            if !whole {
                                break Err(HeadError::WriteFailed);
                            }
                        }
                        match res {
                            // Bytes came: the deadline, had it fired meanwhile, shut the socket,
                            // so the next read meets it. (`fired` loads the watch's cold line.)
                            Ok(n) if n > 0 => received_any = true,
                            _ if conn.watch.fired() => break Err(HeadError::Timeout),
                            Ok(_) | Err(_) if !received_any => break Err(HeadError::Empty),
                            // Only 0 is left: bytes were taken above.
                            Ok(_) => {
                                break Err(HeadError::Bad(
                                    "upstream closed inside the response head",
                                ))
                            }
                            Err(_) => break Err(HeadError::Io),
                        }
                    };
                    if C::LOGS {
                        if let Ok(ResponsePlan { status, .. })
                        | Err(HeadError::RetryStatus(status)) = &head
                        {
                            self.client.log_upstream_head(*status);
                        }
                    }
                    let rtt = || sent_at.map(|t| t.elapsed()).unwrap_or_default();
                    let resp = match head {
                        Err(HeadError::WriteFailed) => {
                            crate::hint::cold();
                            let stale = conn.reused && self.resendable;
                            break 'attempt Err(write_failure(cluster, server, stale));
                        }
                        Ok(resp) => resp,
                        Err(HeadError::Empty)
                            if conn.reused && self.resendable && self.plan.idempotent =>
                        {
                            crate::hint::cold();
                            break 'attempt Err(AttemptError::Stale);
                        }
                        Err(HeadError::Bad(why)) => {
                            crate::hint::cold();
                            cluster.record(server, Outcome::Failure);
                            break 'attempt Err(AttemptError::Done(self.fail(502, why).await));
                        }
                        Err(HeadError::RetryStatus(status)) => {
                            crate::hint::cold();
                            cluster.record(server, Outcome::ServerError(rtt()));
                            break 'attempt Err(AttemptError::Retryable(
                                status,
                                "upstream answered with an error",
                            ));
                        }
                        Err(HeadError::Timeout) => {
                            crate::hint::cold();
                            cluster.record(server, Outcome::Failure);
                            break 'attempt Err(AttemptError::Retryable(
                                504,
                                "upstream response timed out",
                            ));
                        }
                        Err(HeadError::Empty | HeadError::Io) => {
                            crate::hint::cold();
                            cluster.record(server, Outcome::Failure);
                            break 'attempt Err(AttemptError::Retryable(
                                502,
                                "upstream closed without a response",
                            ));
                        }
                    };
                    cluster.record(
                        server,
                        if resp.status >= 500 {
                            Outcome::ServerError(rtt())
                        } else {
                            Outcome::Success(rtt())
                        },
                    );
                    state.worker.count_response(resp.status);
                    if resp.status == 101 {
                        crate::hint::cold();
                        let tunnel = super::upgrade::tunnel(
                            state,
                            self.client,
                            self.cw,
                            &mut self.ubuf,
                            self.rbuf,
                            conn,
                            cfg,
                        );
                        break 'attempt Ok(Box::pin(tunnel).await);
                    }

                    if let Some(c) = self.plan.cache.ctx() {
                        match c.take_store_plan() {
                            Some(Stored::Body(store)) => {
                                let at = resp.verbatim_head;
                                let fill = c.fill_and_store(
                                    store,
                                    &mut self.ubuf,
                                    &mut conn,
                                    at,
                                    resp.body,
                                    cfg.body_timeout,
                                    &state.config.http,
                                );
                                Box::pin(fill).await;
                            }
                            Some(Stored::Revalidated(entry)) => {
                                // The 304 has no body: its connection is free again.
                                self.ubuf.consume(resp.verbatim_head);
                                if resp.reusable && self.ubuf.is_empty() && !conn.watch.fired() {
                                    cluster.checkin(conn);
                                }
                                let answer = c.answer_from(
                                    state,
                                    self.client,
                                    self.cw,
                                    self.out,
                                    self.plan,
                                    &entry,
                                    "REVALIDATED",
                                );
                                break 'attempt Ok(Box::pin(answer).await);
                            }
                            None => {}
                        }
                    }

                    // The response to the client. The common case, a head passed on as it came
                    // with its whole body behind it in the buffer, is one write: the step
                    // `body::copy_length` would take, awaited here to save a nested future.
                    // A small response not all here yet is read in full first, so it too
                    // leaves in one write; on a failed read `relay_response` reports it.
                    if let Some(n) = resp
                        .one_write_len()
                        .filter(|n| (self.ubuf.len() as u64) < *n)
                    {
                        read_whole(&mut conn, &mut self.ubuf, n, cfg.body_timeout).await;
                    }
                    let whole = resp.verbatim_len().filter(|n| self.ubuf.len() as u64 >= *n);
                    let relayed = match whole {
                        Some(n) => {
                            let n = n as usize;
                            self.cw.arm(state.config.http.send_timeout, Phase::Write);
                            let (res, slice) = self.client.write_all(self.ubuf.lend(n)).await;
                            self.ubuf.restore(slice.into_inner(), n, res.is_ok());
                            self.cw.disarm();
                            body::write_result(res.map(|_| ()), self.cw)
                        }
                        None => self.relay_response(&mut conn, &resp).await,
                    };
                    match relayed {
                        Ok(()) => {
                            // A deadline that fired after the response came (see the head
                            // loop) shut the socket: it is not pooled.
                            if resp.reusable && self.ubuf.is_empty() && !conn.watch.fired() {
                                cluster.checkin(conn);
                            }
                            Ok(if resp.keep {
                                Next::KeepAlive
                            } else {
                                Next::Close
                            })
                        }
                        // Head already sent: the only honest signal left is closing the client
                        // connection.
                        Err(_) => Ok(Next::Close),
                    }
                };
                drop(inflight);
                let (status, why) = match result {
                    Ok(next) | Err(AttemptError::Done(next)) => return next,
                    Err(AttemptError::Stale) if tries.stale_retries == 0 => {
                        // Not counted as an attempt, and the same server may be tried again.
                        tries.stale_retries += 1;
                        tries.attempts -= 1;
                        tries.tried &= !(1u64 << (server % 64));
                        continue;
                    }
                    Err(AttemptError::Stale) => {
                        return self.fail(502, "upstream closed the connection").await
                    }
                    Err(AttemptError::Retryable(status, why)) => (status, why),
                };
                if C::LOGS {
                    // As nginx logs a try that got no response: 502 for a refused connect.
                    self.client
                        .log_upstream_failed(if status == 0 { 502 } else { status });
                }
                let deadline_left = self.deadline.is_none_or(|d| Instant::now() < d);
                let allowed = match status {
                    // Connect failures sent nothing: safe for any method.
                    0 => policy.on_connect,
                    502 => policy.on_reset && self.plan.idempotent,
                    504 => policy.on_timeout && self.plan.idempotent,
                    s => policy.on_statuses.contains(&s) && self.plan.idempotent,
                };
                // A failed connect sent nothing: even a streamed body is still unread. Refused
                // connects cost the upstream nothing, so they do not spend the budget, which
                // exists to keep retries from piling load on a sick server.
                if allowed
                    && deadline_left
                    && tries.attempts < policy.attempts
                    && (self.resendable || status == 0)
                    && (status == 0 || budget.try_spend())
                {
                    crate::telemetry::bump(&self.cluster.retries);
                    continue;
                }
                let status = if status == 0 { 502 } else { status };
                return self.fail(status, why).await;
            }
        }
    }

    /// Answers the client with Ringway's own error and closes.
    #[cold]
    #[inline(never)]
    async fn fail(&mut self, status: u16, why: &str) -> Next {
        if let Some(c) = self.plan.cache.ctx().filter(|c| c.has_stale()) {
            let stale = c.serve_stale(
                self.state,
                self.client,
                self.cw,
                self.out,
                self.plan,
                status,
            );
            if let Some(next) = Box::pin(stale).await {
                return next;
            }
        }
        local_error(self.state, self.client, self.cw, self.out, status, why).await
    }

    /// Writes the response head (already in `out`, or at the front of `ubuf`) and streams the
    /// body to the client: every case but a verbatim head with its whole body at hand.
    async fn relay_response(
        &mut self,
        conn: &mut UpstreamConn,
        resp: &ResponsePlan,
    ) -> Result<(), BodyError> {
        let http = &self.state.config.http;
        let client_deadlines = Deadlines {
            read: self.cluster.cfg.body_timeout,
            src: &conn.watch,
            write: http.send_timeout,
            dst: self.cw,
        };
        let (client, ubuf, out) = (&mut *self.client, &mut self.ubuf, &mut *self.out);
        // Head and body straight from the upstream buffer (the head was left in it).
        if let Some(n) = resp.verbatim_len() {
            return body::copy_length(&mut conn.stream, ubuf, client, n, &client_deadlines).await;
        }
        match resp.framing {
            OutFraming::NoBody => write_client(client, self.cw, out, http.send_timeout).await,
            OutFraming::Length(n) if ubuf.len() as u64 >= n => {
                // The whole body is here: one write for head and body.
                out.extend_from_slice(&ubuf.data()[..n as usize]);
                ubuf.consume(n as usize);
                write_client(client, self.cw, out, http.send_timeout).await
            }
            OutFraming::Length(n) => {
                write_client(client, self.cw, out, http.send_timeout).await?;
                body::copy_length(&mut conn.stream, ubuf, client, n, &client_deadlines).await
            }
            OutFraming::Chunked | OutFraming::Close => {
                if resp.body == Body::Chunked && resp.encode == Encode::Chunked {
                    // A small chunked body here in full with plain framing leaves with the head
                    // in one write, as a small Content-Length body does.
                    if let Some(n) = body::whole_plain_chunked(ubuf.data()) {
                        out.extend_from_slice(&ubuf.data()[..n]);
                        ubuf.consume(n);
                        return write_client(client, self.cw, out, http.send_timeout).await;
                    }
                }
                write_client(client, self.cw, out, http.send_timeout).await?;
                if resp.body == Body::Chunked {
                    body::copy_chunked(
                        &mut conn.stream,
                        ubuf,
                        client,
                        resp.encode,
                        out,
                        body::ChunkLimits {
                            body: u64::MAX,
                            extension: http.max_chunk_extension,
                            trailer: http.max_trailer_size,
                        },
                        &client_deadlines,
                    )
                    .await
                } else {
                    body::copy_to_eof(
                        &mut conn.stream,
                        ubuf,
                        client,
                        resp.encode,
                        out,
                        &client_deadlines,
                    )
                    .await
                }
            }
        }
    }

    /// Streams the rest of the request body upstream. `Some(next)` means the exchange ended here.
    async fn send_body(
        &mut self,
        upstream_write_timeout: Duration,
        conn: &mut UpstreamConn,
    ) -> Option<(Next, bool)> {
        let http = &self.state.config.http;
        if self.plan.expect_continue && self.rbuf.is_empty() {
            let mut cont = Vec::with_capacity(CONTINUE_100.len());
            cont.extend_from_slice(CONTINUE_100);
            if write_client(self.client, self.cw, &mut cont, http.send_timeout)
                .await
                .is_err()
            {
                return Some((Next::Close, false));
            }
        }
        let deadlines = Deadlines {
            read: http.body_timeout,
            src: self.cw,
            write: upstream_write_timeout,
            dst: &conn.watch,
        };
        // `out` holds the request head; the chunk scratch must not clobber it before a failure
        // answer is written, so it gets a buffer of its own.
        let mut scratch = self.state.worker.take_buf(16 * 1024);
        let (client, rbuf) = (&mut *self.client, &mut *self.rbuf);
        let res = match self.body_left {
            Body::Length(n) => {
                body::copy_length(client, rbuf, &mut conn.stream, n, &deadlines).await
            }
            Body::Chunked => {
                body::copy_chunked(
                    client,
                    rbuf,
                    &mut conn.stream,
                    Encode::Chunked,
                    &mut scratch,
                    body::ChunkLimits {
                        body: self.state.config.routes[self.plan.route].max_body_size,
                        extension: http.max_chunk_extension,
                        trailer: http.max_trailer_size,
                    },
                    &deadlines,
                )
                .await
            }
            Body::None => Ok(()),
        };
        self.state.worker.give_buf(scratch);
        let (status, why, upstream_at_fault) = match res {
            Ok(()) => return None,
            Err(BodyError {
                side: Side::Src,
                failure,
            }) => match failure {
                Failure::TooLarge => (413, "request body too large", false),
                Failure::Framing(why) => (400, why, false),
                Failure::Timeout => (408, "request body timed out", false),
                // The client went away mid-body: nobody is left to answer.
                Failure::Io | Failure::Eof => return Some((Next::Close, false)),
            },
            Err(BodyError {
                side: Side::Dst, ..
            }) => (502, "upstream stopped reading the request body", true),
        };
        Some((self.fail(status, why).await, upstream_at_fault))
    }
}

/// Parses the upstream's response head at the front of `ubuf`: `None` until it is complete.
/// Interim heads (100 Continue, 103 Early Hints) are consumed and skipped: Ringway answers
/// Expect itself. The final head is consumed too unless it goes to the client verbatim;
/// otherwise the client's head is written into `out`, which held the request until then (for
/// a retry).
fn response_plan(
    ubuf: &mut ConnBuf,
    plan: &Plan,
    out: &mut Vec<u8>,
    keep_wanted: bool,
    retry_statuses: &[u16],
) -> Result<Option<ResponsePlan>, HeadError> {
    loop {
        if ubuf.is_empty() {
            return Ok(None);
        }
        let mut slots = [MaybeUninit::uninit(); RESPONSE_HEADER_SLOTS];
        match response::parse(
            ubuf.data(),
            &mut slots,
            plan.head_request,
            MAX_RESPONSE_HEAD,
        ) {
            Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                let n = head.head_len;
                ubuf.consume(n);
            }
            Ok(Some(head))
                if head.status == 101
                    && plan.upgrade
                    && super::upgrade::names_websocket(head.headers) =>
            {
                // Passed on as it came (its Upgrade and Connection lines are the answer to the
                // client's offer); the tunnel sends it.
                return Ok(Some(ResponsePlan {
                    status: 101,
                    body: Body::None,
                    framing: OutFraming::NoBody,
                    encode: Encode::Raw,
                    reusable: false,
                    keep: false,
                    verbatim_head: head.head_len,
                }));
            }
            Ok(Some(head)) if head.status == 101 => {
                return Err(HeadError::Bad("upstream switched protocols unasked"))
            }
            Ok(Some(head)) if retry_statuses.contains(&head.status) => {
                return Err(HeadError::RetryStatus(head.status))
            }
            Ok(Some(head)) => {
                let mut keep = keep_wanted;
                let (framing, encode) = match (head.body, head.close_delimited, plan.version) {
                    (Body::Length(n), _, _) => (OutFraming::Length(n), Encode::Raw),
                    (Body::Chunked, _, Version::Http11) | (Body::None, true, Version::Http11) => {
                        (OutFraming::Chunked, Encode::Chunked)
                    }
                    // An HTTP/1.0 client cannot take chunked: the close delimits the body.
                    (Body::Chunked, _, Version::Http10) | (Body::None, true, Version::Http10) => {
                        keep = false;
                        (OutFraming::Close, Encode::Raw)
                    }
                    (Body::None, false, _) => (OutFraming::NoBody, Encode::Raw),
                };
                if plan.cache.is_used() {
                    // The expired entry answers instead (`Exchange::fail`).
                    plan.cache
                        .plan_store(&head)
                        .map_err(HeadError::RetryStatus)?;
                }
                let n = head.head_len;
                let verbatim = head.verbatim
                    && plan.response_edits.is_none()
                    && matches!(framing, OutFraming::Length(_) | OutFraming::NoBody);
                let mut verbatim_head = 0;
                if verbatim && keep && plan.version == Version::Http11 {
                    // The common case: nothing to change, so nothing to copy either.
                    verbatim_head = n;
                } else if verbatim {
                    out.clear();
                    out.extend_from_slice(&ubuf.data()[..n - 2]);
                    out.extend_from_slice(connection_line(keep, plan.version));
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.clear();
                    write_response(
                        out,
                        &head,
                        framing,
                        keep,
                        plan.version,
                        plan.response_edits.as_deref(),
                    );
                }
                let plan = ResponsePlan {
                    status: head.status,
                    body: head.body,
                    framing,
                    encode,
                    // An upstream that declined an upgrade may still have half switched: its
                    // connection is not trusted with another client's request.
                    reusable: head.reusable && !plan.upgrade,
                    keep,
                    verbatim_head,
                };
                if verbatim_head == 0 {
                    ubuf.consume(n);
                }
                return Ok(Some(plan));
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(HeadError::Bad(e.0)),
        }
    }
}

async fn write_client<C: ClientStream>(
    client: &mut C,
    cw: &Watch,
    out: &mut Vec<u8>,
    send_timeout: Duration,
) -> Result<(), BodyError> {
    body::write(client, out, cw, send_timeout).await
}

/// Answers the client with an error of Ringway's own and closes: after a failed exchange the
/// request body may be half-read, so the connection's framing is no longer certain.
#[cold]
#[inline(never)]
pub async fn local_error<C: ClientStream>(
    state: &CoreState,
    client: &mut C,
    cw: &Watch,
    out: &mut Vec<u8>,
    status: u16,
    why: &str,
) -> Next {
    state.worker.count_response(status);
    out.clear();
    write_error(out, status, why, true);
    let _ = body::write(client, out, cw, ERROR_SEND_TIMEOUT).await;
    Next::Close
}
