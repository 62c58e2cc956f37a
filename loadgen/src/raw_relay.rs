//! `loadgen raw-relay`: the same featureless HTTP/1.1 relay as `loadgen relay`, written directly
//! on io_uring with no async runtime: one ring and one hand-written state machine per thread.
//! It exists so `bench` can show the user-space CPU floor of relaying a request on this machine,
//! and so how much of `relay`'s (and a proxy's) cost is the runtime's rather than the work's.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::squeue::Entry;
use io_uring::{opcode, types, IoUring, SubmissionQueue, Submitter};
use socket2::SockAddr;

use crate::relay::{head_end, response_len, Framing};

/// Per-connection buffer, the same size as `relay`'s.
const BUF: usize = 16 * 1024;
const RING_ENTRIES: u32 = 4096;

// Operation tags in the low 3 bits of user_data; the slot index sits above them.
const ACCEPT: u64 = 0;
const CONNECT: u64 = 1;
const CLIENT_RECV: u64 = 2;
const UPSTREAM_SEND: u64 = 3;
const UPSTREAM_RECV: u64 = 4;
const CLIENT_SEND: u64 = 5;
const CLOSE: u64 = 6;
const ACCEPT_BACKOFF: u64 = 7;

/// `Conn::left` before the response head has been parsed.
const UNKNOWN: u64 = u64::MAX;

/// How long to wait before accepting again after EMFILE and the like, instead of spinning.
static BACKOFF: types::Timespec = types::Timespec::new().nsec(10_000_000);

/// Starts the relay's threads on `listener` (see `relay::relay`, which binds and announces).
pub fn spawn(
    listener: std::net::TcpListener,
    upstreams: Vec<SocketAddr>,
    threads: usize,
    cpus: Option<&[usize]>,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    // io_uring parks a blocking socket's accept on poll by itself; a nonblocking one only adds a
    // way for EAGAIN to reach us.
    listener
        .set_nonblocking(false)
        .map_err(|e| format!("listener: {e}"))?;
    // Leaked so every Connect can point at its address for as long as the op is in flight.
    let upstreams: &'static [SockAddr] =
        Vec::leak(upstreams.into_iter().map(SockAddr::from).collect());
    crate::serve::spawn_accepters(listener, threads, cpus, "raw-relay", move |l, cpu| {
        thread_main(cpu, l, upstreams)
    })
}

fn thread_main(
    cpu: Option<usize>,
    listener: std::net::TcpListener,
    upstreams: &'static [SockAddr],
) -> io::Result<()> {
    if let Some(id) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            eprintln!("warning: could not pin thread to CPU {id}");
        }
    }
    // The setup `relay` and Ringway get from their runtime (COOP_TASKRUN: completion work waits
    // for our next io_uring_enter instead of interrupting us), so the two floors compare.
    let mut ring = match IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(RING_ENTRIES)
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warning: io_uring COOP_TASKRUN refused ({e}); using a plain ring");
            IoUring::new(RING_ENTRIES)?
        }
    };
    let mut w = Worker {
        listener: listener.as_raw_fd(),
        upstreams,
        next_upstream: 0,
        conns: Vec::new(),
        free: Vec::new(),
    };
    let res = event_loop(&mut ring, &mut w);
    // Ops may still be in flight into the buffers, and dropping the ring does not wait for the
    // kernel to let go of them: never free them.
    std::mem::forget(w);
    drop(ring);
    drop(listener);
    res
}

/// One client connection and its upstream connection. Kept to one cache line: all a request
/// touches besides the buffer.
struct Conn {
    /// Allocated at the first Recv and kept when the slot is reused. Holds the request, then the
    /// response; HTTP/1.1 without pipelining alternates, so one buffer serves both.
    buf: Option<Box<[u8; BUF]>>,
    /// Response bytes still to come from upstream beyond those in the buffer; `UNKNOWN` until
    /// the response head has been parsed.
    left: u64,
    client: RawFd,
    upstream: RawFd,
    /// Request phase: bytes received at `buf[..filled]`. Response phase: bytes at
    /// `buf[base..base + filled]`.
    filled: u32,
    /// Bytes of the current Send already sent (sends may be short).
    done: u32,
    /// Length of the request head being forwarded.
    req_len: u32,
    /// Pipelined request bytes that arrived after the forwarded head, kept at `buf[..base]`
    /// while the response passes through `buf[base..]`.
    base: u32,
}

const _: () = assert!(
    std::mem::size_of::<Conn>() <= 64,
    "Conn outgrew its cache line"
);

/// What a connection waits for next. Each connection has exactly one op in flight at any time,
/// so a slot is freed only in the completion of its last op and no stale completion can reach a
/// slot that was reused: no generation counter needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    RecvClient,
    SendUpstream,
    RecvUpstream,
    SendClient,
    Close,
}

impl Conn {
    fn new(client: RawFd, upstream: RawFd, buf: Option<Box<[u8; BUF]>>) -> Conn {
        Conn {
            buf,
            left: UNKNOWN,
            client,
            upstream,
            filled: 0,
            done: 0,
            req_len: 0,
            base: 0,
        }
    }

    fn buf(&mut self) -> &mut [u8; BUF] {
        self.buf.get_or_insert_with(|| {
            // Through a Vec so the 16 KiB never sit on the stack.
            let v: Box<[u8]> = vec![0u8; BUF].into_boxed_slice();
            match v.try_into() {
                Ok(b) => b,
                Err(_) => unreachable!("the slice has BUF bytes"),
            }
        })
    }

    /// `n` (> 0) more request bytes arrived.
    fn client_received(&mut self, n: u32) -> Next {
        // The end marker may straddle the previous read.
        let from = self.filled.saturating_sub(3) as usize;
        self.filled += n;
        self.next_request(from)
    }

    /// Forwards the request at `buf[..filled]` once its head is complete.
    fn next_request(&mut self, from: usize) -> Next {
        let filled = self.filled as usize;
        let buf = &self.buf()[..filled];
        match head_end(buf, from) {
            Some(end) => {
                if !bodiless_request(&buf[..end]) {
                    return Next::Close;
                }
                self.req_len = end as u32;
                self.done = 0;
                Next::SendUpstream
            }
            None if filled == BUF => Next::Close,
            None => Next::RecvClient,
        }
    }

    fn upstream_sent(&mut self, n: u32) -> Next {
        self.done += n;
        if self.done < self.req_len {
            return Next::SendUpstream;
        }
        let (req, filled) = (self.req_len as usize, self.filled as usize);
        if filled > req {
            self.buf().copy_within(req..filled, 0);
        }
        self.base = (filled - req) as u32;
        self.filled = 0;
        self.done = 0;
        self.left = UNKNOWN;
        Next::RecvUpstream
    }

    /// Room for the next upstream Recv: never past the end of this response, so bytes of a
    /// (bogus) second response cannot end up in front of the client.
    fn upstream_recv_len(&self) -> u32 {
        let room = (BUF as u32) - self.base - self.filled;
        if self.left == UNKNOWN {
            room
        } else {
            room.min(self.left.min(u32::MAX as u64) as u32)
        }
    }

    /// `n` (> 0) more response bytes arrived.
    fn upstream_received(&mut self, n: u32) -> Next {
        self.filled += n;
        let full = (self.base + self.filled) as usize == BUF;
        if self.left == UNKNOWN {
            let (base, filled) = (self.base as usize, self.filled as usize);
            match response_len(&self.buf()[base..base + filled]) {
                Framing::Partial if full => return Next::Close,
                Framing::Partial => return Next::RecvUpstream,
                Framing::Unframed => return Next::Close,
                Framing::Length(total) if (filled as u64) > total => return Next::Close,
                Framing::Length(total) => self.left = total - filled as u64,
            }
        } else {
            self.left -= n as u64;
        }
        if self.left == 0 || full {
            self.done = 0;
            Next::SendClient
        } else {
            Next::RecvUpstream
        }
    }

    fn client_sent(&mut self, n: u32) -> Next {
        self.done += n;
        if self.done < self.filled {
            return Next::SendClient;
        }
        self.done = 0;
        if self.left > 0 {
            // A response larger than the buffer goes through in pieces.
            self.filled = 0;
            return Next::RecvUpstream;
        }
        // Exchange over; what the client pipelined is the start of the next request.
        self.filled = self.base;
        self.base = 0;
        self.left = UNKNOWN;
        self.next_request(0)
    }
}

/// A request head without a body (the only kind this relay forwards: it frames nothing but heads
/// on the way up). Malformed heads count as not bodiless.
fn bodiless_request(head: &[u8]) -> bool {
    let mut slots = [MaybeUninit::uninit(); 64];
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, head, &mut slots)
    {
        Ok(httparse::Status::Complete(_)) => req.headers.iter().all(|h| {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                false
            } else if h.name.eq_ignore_ascii_case("content-length") {
                h.value.trim_ascii() == b"0"
            } else {
                true
            }
        }),
        _ => false,
    }
}

/// The submission side of one thread's ring.
struct Queue<'a> {
    submitter: Submitter<'a>,
    sq: SubmissionQueue<'a>,
}

impl Queue<'_> {
    /// Queues `e`, submitting first when the queue is full.
    ///
    /// # Safety
    /// Every pointer in `e` must stay valid until its completion has been reaped.
    unsafe fn push(&mut self, e: &Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.sq.push(e) }.is_ok() {
                return Ok(());
            }
            self.sq.sync();
            match self.submitter.submit() {
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
                // EBUSY would need the completion queue drained first, which the caller is
                // in the middle of; with IORING_FEAT_NODROP (5.5+) it does not happen.
                Err(err) => return Err(err),
            }
            self.sq.sync();
        }
    }
}

struct Worker {
    listener: RawFd,
    upstreams: &'static [SockAddr],
    next_upstream: usize,
    conns: Vec<Conn>,
    free: Vec<u32>,
}

fn event_loop(ring: &mut IoUring, w: &mut Worker) -> io::Result<()> {
    let (submitter, sq, mut cq) = ring.split();
    let mut q = Queue { submitter, sq };
    w.arm_accept(&mut q)?;
    loop {
        q.sq.sync();
        match q.submitter.submit_and_wait(1) {
            Ok(_) => {}
            // EBUSY: completions pile up; reaping them below is the cure.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        cq.sync();
        for cqe in &mut cq {
            w.complete(&mut q, cqe.user_data(), cqe.result())?;
        }
        // Hand the reaped entries back now: the kernel counts unreaped ones as ready, and would
        // return from the next wait at once.
        cq.sync();
    }
}

fn user_data(slot: usize, tag: u64) -> u64 {
    (slot as u64) << 3 | tag
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from a live local; a bad fd only makes
    // it fail, which costs nothing but Nagle.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Worker {
    fn arm_accept(&mut self, q: &mut Queue) -> io::Result<()> {
        let e = opcode::Accept::new(
            types::Fd(self.listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(user_data(0, ACCEPT));
        // SAFETY: no addresses to fill in; the listener fd lives as long as the thread.
        unsafe { q.push(&e) }
    }

    fn complete(&mut self, q: &mut Queue, ud: u64, res: i32) -> io::Result<()> {
        let slot = (ud >> 3) as usize;
        match ud & 7 {
            ACCEPT => self.accepted(q, res),
            ACCEPT_BACKOFF => self.arm_accept(q),
            CLOSE => Ok(()),
            tag => {
                let next = self.advance(slot, tag, res);
                self.issue(q, slot, next)
            }
        }
    }

    fn accepted(&mut self, q: &mut Queue, res: i32) -> io::Result<()> {
        if res < 0 {
            if matches!(-res, libc::EINTR | libc::EAGAIN | libc::ECONNABORTED) {
                return self.arm_accept(q);
            }
            // Typically EMFILE: wait a little instead of spinning on the error.
            eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
            let e = opcode::Timeout::new(&BACKOFF)
                .build()
                .user_data(user_data(0, ACCEPT_BACKOFF));
            // SAFETY: BACKOFF is a static.
            return unsafe { q.push(&e) };
        }
        let client = res;
        self.arm_accept(q)?;
        let up = &self.upstreams[self.next_upstream % self.upstreams.len()];
        self.next_upstream = self.next_upstream.wrapping_add(1);
        // SAFETY: plain socket(2); the result is checked.
        let upstream = unsafe {
            libc::socket(
                up.family() as i32,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if upstream < 0 {
            return self.close_fd(q, client);
        }
        set_nodelay(client);
        set_nodelay(upstream);
        let slot = match self.free.pop() {
            Some(s) => {
                let s = s as usize;
                let buf = self.conns[s].buf.take();
                self.conns[s] = Conn::new(client, upstream, buf);
                s
            }
            None => {
                self.conns.push(Conn::new(client, upstream, None));
                self.conns.len() - 1
            }
        };
        let e = opcode::Connect::new(types::Fd(upstream), up.as_ptr(), up.len())
            .build()
            .user_data(user_data(slot, CONNECT));
        // SAFETY: the address is in the leaked, never freed upstream list.
        unsafe { q.push(&e) }
    }

    /// The state machine: what the connection in `slot` does after its op `tag` returned `res`.
    fn advance(&mut self, slot: usize, tag: u64, res: i32) -> Next {
        let c = &mut self.conns[slot];
        // Errors and EOF on either side end both; so does a Send that made no progress.
        if res < 0 || (res == 0 && tag != CONNECT) {
            return Next::Close;
        }
        let n = res as u32;
        match tag {
            CONNECT => Next::RecvClient,
            CLIENT_RECV => c.client_received(n),
            UPSTREAM_SEND => c.upstream_sent(n),
            UPSTREAM_RECV => c.upstream_received(n),
            CLIENT_SEND => c.client_sent(n),
            _ => Next::Close,
        }
    }

    fn issue(&mut self, q: &mut Queue, slot: usize, next: Next) -> io::Result<()> {
        let c = &mut self.conns[slot];
        let (client, upstream) = (types::Fd(c.client), types::Fd(c.upstream));
        let e = match next {
            Next::RecvClient => {
                let at = c.filled as usize;
                let len = (BUF - at) as u32;
                opcode::Recv::new(client, c.buf()[at..].as_mut_ptr(), len)
                    .build()
                    .user_data(user_data(slot, CLIENT_RECV))
            }
            Next::SendUpstream => {
                let (at, len) = (c.done as usize, c.req_len - c.done);
                opcode::Send::new(upstream, c.buf()[at..].as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data(slot, UPSTREAM_SEND))
            }
            Next::RecvUpstream => {
                let at = (c.base + c.filled) as usize;
                let len = c.upstream_recv_len();
                opcode::Recv::new(upstream, c.buf()[at..].as_mut_ptr(), len)
                    .build()
                    .user_data(user_data(slot, UPSTREAM_RECV))
            }
            Next::SendClient => {
                let (at, len) = ((c.base + c.done) as usize, c.filled - c.done);
                opcode::Send::new(client, c.buf()[at..].as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data(slot, CLIENT_SEND))
            }
            Next::Close => {
                let (client, upstream) = (c.client, c.upstream);
                // The op that brought us here was this slot's only one, so nothing in flight
                // still points into it.
                self.free.push(slot as u32);
                self.close_fd(q, client)?;
                return self.close_fd(q, upstream);
            }
        };
        // SAFETY: the buffer is boxed, so it stays put when `conns` grows, and it is neither
        // freed nor reused before this op completes: the slot stays taken until then (one op in
        // flight per connection) and a freed slot keeps its buffer for the next connection.
        unsafe { q.push(&e) }
    }

    fn close_fd(&mut self, q: &mut Queue, fd: RawFd) -> io::Result<()> {
        let e = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(user_data(0, CLOSE));
        // SAFETY: no memory involved; the fd number stays taken until the close completes, so
        // nothing else can be using it by then.
        unsafe { q.push(&e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn::new(-1, -1, None)
    }

    /// Feeds `bytes` as if one Recv had put them at the Recv's offset.
    fn recv(c: &mut Conn, client: bool, bytes: &[u8]) -> Next {
        let at = if client {
            c.filled as usize
        } else {
            (c.base + c.filled) as usize
        };
        c.buf()[at..at + bytes.len()].copy_from_slice(bytes);
        if client {
            c.client_received(bytes.len() as u32)
        } else {
            c.upstream_received(bytes.len() as u32)
        }
    }

    #[test]
    fn split_head_pipelined_request_and_response_in_pieces() {
        let mut c = conn();
        assert_eq!(
            recv(&mut c, true, b"GET / HTTP/1.1\r\nHost: a\r"),
            Next::RecvClient
        );
        // The rest of the first request and the start of a pipelined second one.
        assert_eq!(
            recv(&mut c, true, b"\n\r\nGET /2 HTTP/1.1\r\n"),
            Next::SendUpstream
        );
        assert_eq!(c.req_len, 27);
        assert_eq!(c.upstream_sent(10), Next::SendUpstream);
        assert_eq!(c.upstream_sent(17), Next::RecvUpstream);
        let base = c.base as usize;
        assert_eq!(&c.buf()[..base], b"GET /2 HTTP/1.1\r\n");
        let body = 40_000u64;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n");
        assert_eq!(recv(&mut c, false, head.as_bytes()), Next::RecvUpstream);
        let mut sent = 0u64;
        let total = head.len() as u64 + body;
        let mut got = head.len() as u64;
        loop {
            let len = c.upstream_recv_len() as usize;
            assert!(got + len as u64 <= total, "never reads past the response");
            got += len as u64;
            let next = recv(&mut c, false, &vec![b'x'; len]);
            if next == Next::RecvUpstream {
                continue;
            }
            assert_eq!(next, Next::SendClient);
            let n = c.filled;
            sent += n as u64;
            match c.client_sent(n) {
                Next::RecvUpstream => continue,
                // Response done; the pipelined request still lacks its end.
                Next::RecvClient => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sent, total);
        assert_eq!(c.filled, 17);
        assert_eq!(recv(&mut c, true, b"\r\n"), Next::SendUpstream);
        assert_eq!(c.req_len, 19);
    }

    #[test]
    fn what_this_relay_cannot_frame_closes() {
        let mut c = conn();
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(recv(&mut c, true, post), Next::Close);
        let mut c = conn();
        let chunked = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(recv(&mut c, true, chunked), Next::Close);
        let mut c = conn();
        assert_eq!(recv(&mut c, true, &[b'a'; BUF]), Next::Close);
        let mut c = conn();
        let ok = b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(recv(&mut c, true, ok), Next::SendUpstream);
        assert_eq!(c.upstream_sent(ok.len() as u32), Next::RecvUpstream);
        let unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        assert_eq!(recv(&mut c, false, unframed), Next::Close);
    }
}
