//! `loadgen serve`: a fixed-response HTTP/1.1 keep-alive origin, as cheap per request as we can
//! make it (pre-encoded response, one write per batch of pipelined requests), with knobs that
//! misbehave on purpose (stall once, reset every Nth request, fixed status) for tests.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::http::{RequestFramer, MAX_HEAD};
use crate::runtime;

pub struct ServeConfig {
    pub bind: SocketAddr,
    pub body_size: usize,
    /// When not 0, the body goes out chunked (Transfer-Encoding), in chunks of this size.
    pub chunk_size: usize,
    /// Extra header lines ("Name: value") in every response.
    pub headers: Vec<String>,
    pub delay: Duration,
    pub threads: usize,
    pub cpus: Option<Vec<usize>>,
    pub status: u16,
    /// After this many requests (over all threads), stall every response once for `stall`.
    pub stall_after: Option<u64>,
    pub stall: Duration,
    /// Every Nth request (over all threads) is answered with a TCP reset instead of a response.
    pub reset_every: Option<u64>,
    /// Count requests (one shared atomic per batch) and report them on SIGTERM/SIGINT.
    pub count: bool,
}

/// Read-only after start, shared by all threads.
struct Shared {
    /// The response repeated, so a batch of pipelined requests is answered by one write.
    batch: &'static [u8],
    one_len: usize,
    /// The response head alone, for HEAD requests.
    head_only: &'static [u8],
    delay: Duration,
    stall_after: Option<u64>,
    stall: Duration,
    reset_every: Option<u64>,
    /// Any of delay, stall, reset or count set: without them the hot path skips `knobs` entirely.
    knobs: bool,
    count: bool,
    /// Only touched when a test knob needs a global request count.
    seen: AtomicU64,
    /// Nanoseconds after `epoch` until which responses are held; 0 for none.
    stall_until: AtomicU64,
    epoch: Instant,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Target size of the pre-encoded batch; 64 responses or 64 KiB, whichever is smaller.
const BATCH_BYTES: usize = 64 * 1024;
const BATCH_MAX: usize = 64;
/// Requests are small; a small buffer per connection keeps thousands of them cache-friendly.
/// It grows when a read fills it (request bodies).
const READ_BUF: usize = 4 * 1024;
const READ_BUF_MAX: usize = 64 * 1024;

pub fn serve(cfg: ServeConfig) -> Result<(), String> {
    let listener = bind(cfg.bind).map_err(|e| format!("binding {}: {e}", cfg.bind))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener: {e}"))?;

    let framing = if cfg.chunk_size > 0 {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", cfg.body_size)
    };
    let extra: String = cfg.headers.iter().map(|h| format!("{h}\r\n")).collect();
    let mut one = format!(
        "HTTP/1.1 {} {}\r\n{extra}{framing}\r\n\r\n",
        cfg.status,
        reason(cfg.status),
    )
    .into_bytes();
    let head_len = one.len();
    if cfg.chunk_size > 0 {
        let mut left = cfg.body_size;
        while left > 0 {
            let n = left.min(cfg.chunk_size);
            one.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            one.resize(one.len() + n, b'x');
            one.extend_from_slice(b"\r\n");
            left -= n;
        }
        one.extend_from_slice(b"0\r\n\r\n");
    } else {
        one.resize(one.len() + cfg.body_size, b'x');
    }
    let copies = (BATCH_BYTES / one.len()).clamp(1, BATCH_MAX);
    let batch: &'static [u8] = Vec::leak(one.repeat(copies));
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        batch,
        one_len: one.len(),
        head_only: &batch[..head_len],
        delay: cfg.delay,
        stall_after: cfg.stall_after,
        stall: cfg.stall,
        reset_every: cfg.reset_every.filter(|&n| n > 0),
        knobs: !cfg.delay.is_zero()
            || cfg.stall_after.is_some()
            || cfg.reset_every.is_some_and(|n| n > 0)
            || cfg.count,
        count: cfg.count,
        seen: AtomicU64::new(0),
        stall_until: AtomicU64::new(0),
        epoch: Instant::now(),
    }));

    // Blocked here, before any thread starts, so every thread inherits the mask and the
    // signals wait for `sigwait` below instead of killing the process.
    let mut sigs: libc::sigset_t = unsafe { std::mem::zeroed() };
    if cfg.count {
        // SAFETY: plain signal-set calls on a local, properly initialised set.
        unsafe {
            libc::sigemptyset(&mut sigs);
            libc::sigaddset(&mut sigs, libc::SIGTERM);
            libc::sigaddset(&mut sigs, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut());
        }
    }
    let handles = spawn_accepters(
        listener,
        cfg.threads,
        cfg.cpus.as_deref(),
        "serve",
        move |l, cpu| runtime::run_pinned(cpu, 1024, || accept_loop(l, shared)),
    )?;
    announce(local);
    if cfg.count {
        let mut sig = 0;
        // SAFETY: the set was initialised above; `sig` is a valid out-pointer.
        unsafe { libc::sigwait(&sigs, &mut sig) };
        let mut out = io::stdout().lock();
        let _ = writeln!(
            out,
            "served {} requests",
            shared.seen.load(Ordering::Relaxed)
        );
        let _ = out.flush();
        std::process::exit(0);
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Without SO_REUSEPORT, so a port already in use is an error here instead of a silent share
/// with another process; threads accept on clones of this one socket. The backlog is large
/// because a load generator opens all its connections at once: std's 128 would drop SYNs, and
/// the retransmits show up as seconds of latency.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(65535)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

async fn accept_loop(l: std::net::TcpListener, sh: &'static Shared) {
    let listener = match TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: listener: {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                // Each batch of responses is one write; Nagle would hold the next batch back.
                let _ = s.set_nodelay(true);
                monoio::spawn(connection(s, sh));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                eprintln!("accept: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Closes with SO_LINGER 0, so the peer sees a reset rather than an orderly close.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// Applies the test knobs to a batch of `n` requests; returns how many to answer before a reset,
/// if one is due in this batch.
async fn knobs(sh: &Shared, n: u64) -> Option<u64> {
    let mut reset_at = None;
    if sh.count || sh.stall_after.is_some() || sh.reset_every.is_some() {
        let before = sh.seen.fetch_add(n, Ordering::Relaxed);
        if let Some(after) = sh.stall_after {
            if before < after && after <= before + n {
                let until = sh.epoch.elapsed() + sh.stall;
                sh.stall_until
                    .store(until.as_nanos() as u64, Ordering::Relaxed);
            }
        }
        if let Some(every) = sh.reset_every {
            // The first multiple of `every` in (before, before + n], counted from 1.
            let next = (before / every + 1) * every;
            if next <= before + n {
                reset_at = Some(next - before - 1);
            }
        }
        let until = sh.stall_until.load(Ordering::Relaxed);
        if until > 0 {
            let until = sh.epoch + Duration::from_nanos(until);
            if until > Instant::now() {
                monoio::time::sleep_until(until.into()).await;
            }
        }
    }
    if !sh.delay.is_zero() {
        monoio::time::sleep(sh.delay).await;
    }
    reset_at
}

async fn respond(s: &mut TcpStream, sh: &Shared, mut n: u64) -> io::Result<()> {
    let per = (sh.batch.len() / sh.one_len) as u64;
    while n > 0 {
        let k = n.min(per);
        let (res, _) = s
            .write_all(sh.batch.slice(..(k as usize) * sh.one_len))
            .await;
        res?;
        n -= k;
    }
    Ok(())
}

async fn connection(mut s: TcpStream, sh: &'static Shared) {
    let mut rbuf = Vec::with_capacity(READ_BUF);
    let mut pos = 0;
    let mut framer = RequestFramer::default();
    // After answering a HEAD mid-batch, the rest of the batch is still in the buffer.
    let mut need_read = true;
    loop {
        if need_read {
            let len = rbuf.len();
            let (res, slice) = s.read(rbuf.slice_mut(len..)).await;
            rbuf = slice.into_inner();
            match res {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if rbuf.len() == rbuf.capacity() && rbuf.capacity() < READ_BUF_MAX {
                rbuf.reserve(rbuf.capacity());
            }
        }
        need_read = true;
        // Full responses owed, then possibly one bodiless (HEAD) response after them.
        let mut n = 0u64;
        let mut head = false;
        let mut close = false;
        let mut bad = false;
        while !close && !head {
            match framer.advance(&rbuf[pos..]) {
                Ok((c, r)) => {
                    pos += c;
                    match r {
                        Some(req) if req.head => {
                            head = true;
                            close = req.close;
                            need_read = false;
                        }
                        Some(req) => {
                            n += 1;
                            close = req.close;
                        }
                        None if c == 0 => break,
                        None => {}
                    }
                }
                Err(_) => {
                    bad = true;
                    break;
                }
            }
        }
        if pos == rbuf.len() {
            rbuf.clear();
            pos = 0;
        } else if rbuf.len() == rbuf.capacity() {
            rbuf.drain(..pos);
            pos = 0;
            if rbuf.len() == rbuf.capacity() {
                if rbuf.len() >= MAX_HEAD {
                    bad = true;
                } else {
                    rbuf.reserve(READ_BUF);
                }
            }
        }
        let owed = n + u64::from(head);
        if owed > 0 {
            let reset_at = if sh.knobs {
                knobs(sh, owed).await
            } else {
                None
            };
            if let Some(m) = reset_at {
                let _ = respond(&mut s, sh, m.min(n)).await;
                reset(s);
                return;
            }
            if respond(&mut s, sh, n).await.is_err() {
                return;
            }
            if head {
                let (res, _) = s.write_all(sh.head_only).await;
                if res.is_err() {
                    return;
                }
            }
        }
        if bad {
            let (_, _) = s
                .write_all(
                    &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        [..],
                )
                .await;
            return;
        }
        if close {
            return;
        }
    }
}

/// Starts `threads` (at least one) named threads, each pinned by `body` to its CPU from `cpus`
/// (taken in turn) and serving a clone of `listener`, which is closed here once every thread
/// holds its own. A thread's error is printed, not returned: the others keep serving.
pub fn spawn_accepters<F, E>(
    listener: std::net::TcpListener,
    threads: usize,
    cpus: Option<&[usize]>,
    name: &str,
    body: F,
) -> Result<Vec<std::thread::JoinHandle<()>>, String>
where
    F: Fn(std::net::TcpListener, Option<usize>) -> Result<(), E> + Clone + Send + 'static,
    E: std::fmt::Display,
{
    let mut handles = Vec::new();
    for t in 0..threads.max(1) {
        let l = listener.try_clone().map_err(|e| format!("listener: {e}"))?;
        let cpu = cpus.map(|c| c[t % c.len()]);
        let body = body.clone();
        let what = format!("{name}-{t}");
        let h = std::thread::Builder::new()
            .name(what.clone())
            .spawn(move || {
                if let Err(e) = body(l, cpu) {
                    eprintln!("error: thread {what}: {e}");
                }
            })
            .map_err(|e| format!("spawning thread: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

/// Prints the `listening on ADDR` line, flushed: tests and the harness wait on it, so it comes
/// only once every thread could be spawned.
pub fn announce(local: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on {local}");
    let _ = out.flush();
}
