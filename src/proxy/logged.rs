//! The access log's view of a client connection: a wrapper stream that keeps what a line needs
//! (the request's values once planned, the status and bytes it sees written, the upstream
//! tries) and writes the line when the exchange ends. Only connections accepted while an
//! access log is configured are wrapped, so the plain path carries none of it.

use super::client::ClientStream;
use super::frame::FramePool;
use super::head::ClientInfo;
use super::state::{CoreState, StateCell, WorkerCtx};
use crate::config::{AccessLog, Action, LogVar, Piece};
use crate::deadline::Watch;
use crate::http::headers::raw_fields;
use crate::http::request::{RequestHead, Version};
use crate::telemetry::access_log::{push_seconds, push_value};
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// A record's buffer larger than this is freed after its line instead of kept for the next.
const KEEP_BYTES: usize = 1024;

/// A client stream whose requests are written to the access log.
pub struct Logged<S> {
    inner: S,
    /// Boxed: the connection's future holds the stream for as long as it is open.
    rec: Box<Record>,
}

impl<S> Logged<S> {
    pub fn new(inner: S) -> Self {
        Logged {
            inner,
            rec: Box::new(Record::new()),
        }
    }
}

/// What one request's line needs, reused from request to request on the connection.
struct Record {
    /// A request is being logged (its route does not opt out, and a log is configured).
    active: bool,
    started: Instant,
    /// The format's request-side values, in its order: raw bytes, escaped when written.
    vals: Vec<u8>,
    ends: Vec<u32>,
    /// The final response head's status; 0 until it is written.
    status: u16,
    /// A final head is still to come (interim 100 Continue heads pass).
    head_pending: bool,
    /// Keep the final head (the format reads a response header).
    keep_head: bool,
    head: Vec<u8>,
    /// Bytes written to the client, and where the final head's body began among them.
    bytes: u64,
    body_from: u64,
    tries: Vec<Try>,
    attempt_at: Instant,
    /// When the current head's first bytes came, if it did not arrive whole.
    head_at: Option<Instant>,
    /// The format reads the tries' times (`AccessLog::times_upstream`).
    times_upstream: bool,
    scratch: Vec<u8>,
}

struct Try {
    addr: SocketAddr,
    status: u16,
    took: Option<Duration>,
}

impl Record {
    fn new() -> Self {
        let now = Instant::now();
        Record {
            active: false,
            started: now,
            vals: Vec::new(),
            ends: Vec::new(),
            status: 0,
            head_pending: false,
            keep_head: false,
            head: Vec::new(),
            bytes: 0,
            body_from: 0,
            tries: Vec::new(),
            attempt_at: now,
            head_at: None,
            times_upstream: false,
            scratch: Vec::new(),
        }
    }

    fn begin(&mut self, log: &AccessLog) {
        self.active = true;
        // nginx's $request_time starts at the head's first byte; a head read whole in one
        // go (the usual case) starts now.
        let head_at = self.head_at.take();
        if log.times_request {
            self.started = head_at.unwrap_or_else(Instant::now);
        }
        self.times_upstream = log.times_upstream;
        self.keep_head = log.reads_response_headers;
        self.vals.clear();
        self.ends.clear();
        self.status = 0;
        self.head_pending = true;
        self.head.clear();
        self.bytes = 0;
        self.body_from = 0;
        self.tries.clear();
    }

    fn end_value(&mut self) {
        self.ends.push(self.vals.len() as u32);
    }

    /// Takes the status (and the head, when wanted) from the first write of each response.
    fn sniff(&mut self, b: &[u8]) {
        if b.len() < 12 || !b.starts_with(b"HTTP/1.") {
            return;
        }
        let d = &b[9..12];
        if !d.iter().all(u8::is_ascii_digit) {
            return;
        }
        let status = d.iter().fold(0u16, |n, c| n * 10 + u16::from(c - b'0'));
        if (100..200).contains(&status) && status != 101 {
            return;
        }
        self.status = status;
        self.head_pending = false;
        let head_len = head_end(b);
        self.body_from = self.bytes + head_len as u64;
        if self.keep_head {
            self.head.extend_from_slice(&b[..head_len]);
        }
    }
}

/// The length of the head at the start of `b` (through its blank line), or all of `b`. One
/// `memchr` per line: a head is a few short lines, where a substring search costs more to set
/// up than to run.
fn head_end(b: &[u8]) -> usize {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\n', &b[at..]) {
        let next = at + i + 1;
        if b[next..].starts_with(b"\r\n") {
            return next + 2;
        }
        at = next;
    }
    b.len()
}

/// A header's value in a response head (the first, trimmed); None when absent.
fn response_header<'h>(head: &'h [u8], lower: &'h str) -> Option<&'h [u8]> {
    raw_fields(head, lower.as_bytes())
        .next()
        .map(<[u8]>::trim_ascii)
}

fn join(s: &mut Vec<u8>, tries: &[Try], mut each: impl FnMut(&mut Vec<u8>, &Try)) {
    for (i, t) in tries.iter().enumerate() {
        if i > 0 {
            s.extend_from_slice(b", ");
        }
        each(s, t);
    }
}

impl<S: AsRawFd> AsRawFd for Logged<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// The caller's buffer under a type of its own, so that the wrapped stream's operations are
/// instantiated apart from the plain path's. Shared, monoio's read and write would have a
/// second caller each, and the plain path lost their inlining: 7,406 → 7,847 instructions per
/// request with no access log configured (`bench/hot-code`).
struct Own<T>(T);

// SAFETY: every method is the wrapped buffer's own.
unsafe impl<T: IoBuf> IoBuf for Own<T> {
    fn read_ptr(&self) -> *const u8 {
        self.0.read_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.bytes_init()
    }
}

// SAFETY: every method is the wrapped buffer's own.
unsafe impl<T: IoBufMut> IoBufMut for Own<T> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.0.write_ptr()
    }

    fn bytes_total(&mut self) -> usize {
        self.0.bytes_total()
    }

    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.set_init(pos) }
    }
}

impl<S: AsyncReadRent> AsyncReadRent for Logged<S> {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        let (res, buf) = self.inner.read(Own(buf)).await;
        (res, buf.0)
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.inner.readv(buf)
    }
}

impl<S: AsyncWriteRent> AsyncWriteRent for Logged<S> {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let r = &mut *self.rec;
        let head = r.head_pending && r.active;
        if head && buf.bytes_init() > 0 {
            // SAFETY: an `IoBuf` promises `bytes_init` readable bytes at `read_ptr`.
            let b = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            r.sniff(b);
        }
        let (res, buf) = self.inner.write(Own(buf)).await;
        match res {
            Ok(n) => self.rec.bytes += n as u64,
            // The head never left: the client is gone (nginx's 499).
            Err(_) if head => self.rec.status = 0,
            Err(_) => {}
        }
        (res, buf.0)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let res = self.inner.writev(buf).await;
        if let Ok(n) = res.0 {
            self.rec.bytes += n as u64;
        }
        res
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.inner.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.inner.shutdown()
    }
}

impl<S: ClientStream> ClientStream for Logged<S> {
    const TLS: bool = S::TLS;
    const LEAN_WAIT: bool = S::LEAN_WAIT;
    const LOGS: bool = true;

    fn accepted(&self) {
        self.inner.accepted()
    }

    fn wait_readable(&mut self) -> impl Future<Output = ()> {
        self.inner.wait_readable()
    }

    fn close(&mut self, watch: &Watch, cell: &StateCell) -> impl Future<Output = ()> {
        self.inner.close(watch, cell)
    }

    async fn tunnel(&mut self, upstream: TcpStream, worker: &WorkerCtx, idle: Duration) -> u64 {
        let n = self.inner.tunnel(upstream, worker, idle).await;
        self.rec.bytes += n;
        n
    }

    /// Boxed: the wrapper's own write future sits inside the exchange's, which then no longer
    /// fits a pooled frame (its size check refuses it when compiled). A logged request spends
    /// more on its line than on this allocation.
    fn framed<'p, F: Future + 'p>(
        _: &'p FramePool,
        fut: F,
    ) -> impl Future<Output = F::Output> + Unpin + 'p {
        Box::pin(fut)
    }

    /// Keeps the request-side values of the format; called once the request is planned.
    fn log_request(
        &mut self,
        state: &CoreState,
        head: &RequestHead<'_>,
        info: &ClientInfo,
        route: Option<usize>,
        ids_before: u64,
    ) {
        let r = &mut *self.rec;
        r.active = false;
        let Some(log) = &state.config.access_log else {
            return;
        };
        let route = route.and_then(|i| state.config.routes.get(i));
        if route.is_some_and(|r| !r.access_log) {
            return;
        }
        r.begin(log);
        let protocol: &[u8] = match head.version {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        };
        let (path, query) = head.path.split_once('?').unwrap_or((head.path, ""));
        for p in &log.format.pieces {
            let Piece::Var(v) = p else { continue };
            if !v.from_request() {
                continue;
            }
            let out = &mut r.vals;
            match v {
                LogVar::ClientIp => out.extend_from_slice(info.ip().as_bytes()),
                // As sent (an absolute-form target stays one), as nginx logs it.
                LogVar::Request => {
                    let line = head.raw.split(|&c| c == b'\r').next().unwrap_or_default();
                    out.extend_from_slice(line);
                }
                LogVar::Method => out.extend_from_slice(head.method.as_bytes()),
                LogVar::Target => out.extend_from_slice(head.path.as_bytes()),
                LogVar::Path => out.extend_from_slice(path.as_bytes()),
                LogVar::Query => out.extend_from_slice(query.as_bytes()),
                LogVar::Protocol => out.extend_from_slice(protocol),
                LogVar::Scheme => {
                    out.extend_from_slice(if info.tls() { b"https" } else { b"http" })
                }
                // nginx's $host: lower case, without the port (as routes match it).
                LogVar::Host => out.extend(
                    crate::route::normalize_host(head.host)
                        .bytes()
                        .map(|c| c.to_ascii_lowercase()),
                ),
                LogVar::Header(name) => {
                    if let Some(v) = crate::gateway::auth::header(head.headers, name) {
                        out.extend_from_slice(v);
                    }
                }
                LogVar::RequestId => {
                    if let Some(h) = &state.config.proxy.request_id_header {
                        match crate::gateway::auth::header(head.headers, h) {
                            Some(v) => out.extend_from_slice(v),
                            // Planning made one for this request: the worker's latest.
                            None if state.worker.ids_made() != ids_before => {
                                state.worker.push_last_request_id(out)
                            }
                            None => {}
                        }
                    }
                }
                LogVar::Route => {
                    if let Some(rt) = route {
                        out.extend_from_slice(rt.name.as_bytes());
                    }
                }
                LogVar::Upstream => {
                    if let Some(Action::Forward(c)) = route.map(|r| &r.action) {
                        out.extend_from_slice(state.config.upstreams[*c].name.as_bytes());
                    }
                }
                _ => {}
            }
            r.end_value();
        }
    }

    /// A request refused before it was understood (400, 408, 431...): only the client is known.
    fn log_reject(&mut self, state: &CoreState, info: &ClientInfo) {
        let r = &mut *self.rec;
        r.active = false;
        let Some(log) = &state.config.access_log else {
            return;
        };
        r.begin(log);
        for p in &log.format.pieces {
            match p {
                Piece::Var(LogVar::ClientIp) => r.vals.extend_from_slice(info.ip().as_bytes()),
                Piece::Var(v) if v.from_request() => {}
                _ => continue,
            }
            r.end_value();
        }
    }

    fn log_attempt(&mut self, addr: SocketAddr) {
        let r = &mut *self.rec;
        if r.active {
            if r.times_upstream {
                r.attempt_at = Instant::now();
            }
            r.tries.push(Try {
                addr,
                status: 0,
                took: None,
            });
        }
    }

    fn log_head_started(&mut self) {
        self.rec.head_at = Some(Instant::now());
    }

    fn log_upstream_failed(&mut self, status: u16) {
        if let Some(t) = self.rec.tries.last_mut().filter(|t| t.status == 0) {
            t.status = status;
        }
    }

    fn log_upstream_head(&mut self, status: u16) {
        let r = &mut *self.rec;
        let took = r.times_upstream.then(|| r.attempt_at.elapsed());
        if let Some(t) = r.tries.last_mut() {
            t.status = status;
            t.took = took;
        }
    }

    /// Writes the line of the request that just ended into the worker's log buffer.
    fn log_done(&mut self, state: &CoreState) {
        let r = &mut *self.rec;
        if !std::mem::take(&mut r.active) {
            return;
        }
        let Some(log) = &state.config.access_log else {
            return;
        };
        // No head went out: the client left (or the connection broke) before its answer.
        let status = if r.status == 0 { 499 } else { r.status };
        let mut sink = state.worker.log.borrow_mut();
        let now_ms = sink.now_ms();
        let (buf, local, iso) = sink.parts();
        let esc = log.escape;
        let mut next = 0;
        let mut start = 0u32;
        for p in &log.format.pieces {
            let v = match p {
                Piece::Lit(s) => {
                    buf.extend_from_slice(s.as_bytes());
                    continue;
                }
                Piece::Var(v) => v,
            };
            if v.from_request() {
                let end = r.ends.get(next).copied().unwrap_or(start);
                next += 1;
                let val = r.vals.get(start as usize..end as usize).unwrap_or_default();
                start = end;
                push_value(buf, val, esc);
                continue;
            }
            let s = &mut r.scratch;
            s.clear();
            match v {
                // Digits and punctuation only: nothing to escape.
                LogVar::TimeLocal => {
                    buf.extend_from_slice(local);
                    continue;
                }
                LogVar::TimeIso8601 => {
                    buf.extend_from_slice(iso);
                    continue;
                }
                LogVar::Msec => {
                    let _ = write!(s, "{}.{:03}", now_ms / 1000, now_ms % 1000);
                }
                LogVar::Status => crate::http::fmt::push_dec(s, u64::from(status)),
                LogVar::BytesSent => crate::http::fmt::push_dec(s, r.bytes),
                LogVar::BodyBytesSent => {
                    let body = if r.status == 0 {
                        0
                    } else {
                        r.bytes.saturating_sub(r.body_from)
                    };
                    crate::http::fmt::push_dec(s, body)
                }
                LogVar::RequestTime => push_seconds(s, r.started.elapsed()),
                LogVar::UpstreamAddr => join(s, &r.tries, |s, t| {
                    let _ = write!(s, "{}", t.addr);
                }),
                LogVar::UpstreamStatus => join(s, &r.tries, |s, t| match t.status {
                    0 => s.push(b'-'),
                    n => crate::http::fmt::push_dec(s, u64::from(n)),
                }),
                LogVar::UpstreamHeaderTime => join(s, &r.tries, |s, t| match t.took {
                    None => s.push(b'-'),
                    Some(d) => push_seconds(s, d),
                }),
                LogVar::ResponseHeader(name) => {
                    if let Some(v) = response_header(&r.head, name) {
                        s.extend_from_slice(v);
                    }
                }
                _ => {}
            }
            // Numbers stay numbers in a JSON line, so they are never written empty.
            push_value(buf, s, esc);
        }
        buf.push(b'\n');
        if buf.len() >= log.buffer {
            sink.flush();
        }
        // An unusually long value must not stay with the connection while it idles.
        for v in [&mut r.vals, &mut r.head, &mut r.scratch] {
            if v.capacity() > KEEP_BYTES {
                *v = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_the_final_head() {
        let cfg = crate::config::parse(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[access_log]\npath = \"stdout\"\n[[route]]\nrespond = { status = 200 }\n",
            "t.toml",
        )
        .unwrap();
        let mut r = Record::new();
        r.begin(cfg.access_log.as_ref().unwrap());
        r.keep_head = true;
        r.sniff(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(r.head_pending);
        r.bytes = 25;
        let resp = b"HTTP/1.1 404 Not Found\r\nX-Cache: HIT\r\ncontent-length: 3\r\n\r\nabc";
        r.sniff(resp);
        assert_eq!(r.status, 404);
        assert!(!r.head_pending);
        assert_eq!(r.body_from, 25 + resp.len() as u64 - 3);
        assert_eq!(response_header(&r.head, "x-cache"), Some(&b"HIT"[..]));
        assert_eq!(response_header(&r.head, "x-other"), None);
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), 19);
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), 23);
    }
}
