//! `loadgen raw-relay`: the same featureless HTTP/1.1 relay as `loadgen relay`, written directly
//! on io_uring with no async runtime: one ring and one hand-written state machine per thread.
//! It exists so `bench` can show the user-space CPU floor of relaying a request on this machine,
//! and so how much of `relay`'s (and a proxy's) cost is the runtime's rather than the work's.
//! `--kernel` switches on io_uring features a runtime could use (multishot receives, registered
//! files, POLL_FIRST), to measure what each would save in the kernel's share of a request.

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

/// A kernel-side variant of the relay (`raw-relay --kernel ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Knob {
    /// IORING_RECVSEND_POLL_FIRST on every receive.
    PollFirst,
    /// Sockets in the ring's registered file table.
    FixedFiles,
    /// One multishot receive per socket into a provided buffer ring. Small responses only:
    /// one larger than the connection's buffer, or bytes arriving while the relay still sends,
    /// close the connection (they show in loadgen's errors).
    Multishot,
    /// The request sent upstream beside the response's receive, as Ringway does. Small
    /// requests on loopback only: the send's completion is not checked.
    DetachedSend,
}

/// The variants in force, to measure what each saves in the kernel's share of a request.
#[derive(Clone, Copy, Default, Debug)]
pub struct Knobs {
    /// IORING_RECVSEND_POLL_FIRST on every Recv: wait for data instead of trying first.
    poll_first: bool,
    /// Both sockets of a connection in the ring's registered file table (no fget/fput per op).
    fixed: bool,
    /// One multishot Recv per socket for the connection's life, into a provided buffer ring,
    /// copied out into the connection's buffer.
    multishot: bool,
    /// Send the request upstream without waiting for its completion and read the response
    /// beside it, as Ringway's `send_detached` does (single-shot receives only).
    detached: bool,
}

impl From<&[Knob]> for Knobs {
    fn from(list: &[Knob]) -> Knobs {
        Knobs {
            poll_first: list.contains(&Knob::PollFirst),
            fixed: list.contains(&Knob::FixedFiles),
            multishot: list.contains(&Knob::Multishot),
            detached: list.contains(&Knob::DetachedSend),
        }
    }
}

/// Slots in the registered file table: two per connection.
const MAX_SLOTS: usize = 8192;
/// Provided buffers for multishot receives.
/// Enough that 1,000 connections' receives in one completion batch do not run the ring dry.
const PBUF_COUNT: u16 = 4096;
const PBUF_SIZE: usize = 2048;
const PBUF_GROUP: u16 = 7;

/// A provided-buffer ring: the ring of entries the kernel takes buffers from, and the buffers.
struct BufRing {
    entries: *mut types::BufRingEntry,
    bufs: *mut u8,
    tail: u16,
}

impl BufRing {
    fn new(submitter: &Submitter) -> io::Result<BufRing> {
        let ring_bytes = PBUF_COUNT as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mappings; checked for failure below.
        let entries = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let bufs = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PBUF_COUNT as usize * PBUF_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if entries == libc::MAP_FAILED || bufs == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = BufRing {
            entries: entries.cast(),
            bufs: bufs.cast(),
            tail: 0,
        };
        // SAFETY: the mapping is page-aligned and lives for the thread (never unmapped).
        unsafe { submitter.register_buf_ring(entries as u64, PBUF_COUNT, PBUF_GROUP)? };
        for bid in 0..PBUF_COUNT {
            r.give(bid);
        }
        r.publish();
        Ok(r)
    }

    fn buf(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < PBUF_COUNT, inside the mapping.
        unsafe { self.bufs.add(bid as usize * PBUF_SIZE) }
    }

    /// Puts buffer `bid` back at the tail (seen by the kernel after `publish`).
    fn give(&mut self, bid: u16) {
        let i = (self.tail & (PBUF_COUNT - 1)) as usize;
        // SAFETY: i < PBUF_COUNT.
        let e = unsafe { &mut *self.entries.add(i) };
        e.set_addr(self.buf(bid) as u64);
        e.set_len(PBUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field of the first entry, shared with the kernel.
        unsafe {
            let t = types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*t).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Sets IORING_RECVSEND_POLL_FIRST (the sqe's `ioprio`, bytes 2..4) on a Recv or Send entry.
fn poll_first(e: Entry) -> Entry {
    // SAFETY: Entry is a repr(C) wrapper around the 64-byte io_uring_sqe.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(e) };
    raw[2..4].copy_from_slice(&1u16.to_ne_bytes());
    unsafe { std::mem::transmute(raw) }
}

/// Starts the relay's threads on `listener` (see `relay::relay`, which binds and announces).
pub fn spawn(
    listener: std::net::TcpListener,
    upstreams: Vec<SocketAddr>,
    threads: usize,
    cpus: Option<&[usize]>,
    knobs: Knobs,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    if knobs.multishot && knobs.detached {
        return Err(
            "--kernel multishot already reads beside every send: drop detached-send".into(),
        );
    }
    // io_uring parks a blocking socket's accept on poll by itself; a nonblocking one only adds a
    // way for EAGAIN to reach us.
    listener
        .set_nonblocking(false)
        .map_err(|e| format!("listener: {e}"))?;
    // Leaked so every Connect can point at its address for as long as the op is in flight.
    let upstreams: &'static [SockAddr] =
        Vec::leak(upstreams.into_iter().map(SockAddr::from).collect());
    crate::serve::spawn_accepters(listener, threads, cpus, "raw-relay", move |l, cpu| {
        thread_main(cpu, l, upstreams, knobs)
    })
}

fn thread_main(
    cpu: Option<usize>,
    listener: std::net::TcpListener,
    upstreams: &'static [SockAddr],
    knobs: Knobs,
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
    if knobs.fixed {
        ring.submitter()
            .register_files_sparse(2 * MAX_SLOTS as u32)?;
    }
    let bufs = if knobs.multishot {
        Some(BufRing::new(&ring.submitter())?)
    } else {
        None
    };
    let mut w = Worker {
        listener: listener.as_raw_fd(),
        upstreams,
        next_upstream: 0,
        conns: Vec::new(),
        free: Vec::new(),
        knobs,
        bufs,
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
    /// Multishot mode: ops of this slot in flight (the slot is freed when it drops to 0 after
    /// `closing`), the Recv tag whose data the state machine waits for (0: none).
    inflight: u8,
    wait: u8,
    closing: bool,
}

const _: () = assert!(
    std::mem::size_of::<Conn>() <= 64,
    "Conn outgrew its cache line"
);

/// What a connection waits for next. Each connection has exactly one op in flight at any time
/// (with `--kernel multishot`, `Conn::inflight` counts them), so a slot is freed only in the
/// completion of its last op and no stale completion can reach a slot that was reused: no
/// generation counter needed. (A detached send's completion is ignored; its buffer is never
/// freed, so it cannot outlive what it reads.)
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
            inflight: 0,
            wait: 0,
            closing: false,
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
    knobs: Knobs,
    bufs: Option<BufRing>,
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
            w.complete(&mut q, cqe.user_data(), cqe.result(), cqe.flags())?;
        }
        if let Some(b) = &w.bufs {
            b.publish();
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

/// Builds `$op` on the connection's socket: its registered index with `fixed`, else its fd.
macro_rules! on_fd {
    ($fixed:expr, $fd:expr, $idx:expr, |$t:ident| $body:expr) => {
        if $fixed {
            let $t = types::Fixed($idx);
            $body
        } else {
            let $t = types::Fd($fd);
            $body
        }
    };
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

    fn complete(&mut self, q: &mut Queue, ud: u64, res: i32, flags: u32) -> io::Result<()> {
        let slot = (ud >> 3) as usize;
        match ud & 7 {
            ACCEPT => self.accepted(q, res),
            ACCEPT_BACKOFF => self.arm_accept(q),
            CLOSE => Ok(()),
            tag if self.knobs.multishot => self.complete_multishot(q, slot, tag, res, flags),
            tag => {
                let next = self.advance(slot, tag, res);
                self.issue(q, slot, next)
            }
        }
    }

    fn complete_multishot(
        &mut self,
        q: &mut Queue,
        slot: usize,
        tag: u64,
        res: i32,
        flags: u32,
    ) -> io::Result<()> {
        let recv = tag == CLIENT_RECV || tag == UPSTREAM_RECV;
        let more = recv && io_uring::cqueue::more(flags);
        if !more {
            self.conns[slot].inflight -= 1;
        }
        let mut next = None;
        if recv {
            if let Some(bid) = io_uring::cqueue::buffer_select(flags) {
                let bufs = self.bufs.as_mut().expect("multishot has a buffer ring");
                let src = bufs.buf(bid);
                let c = &mut self.conns[slot];
                if res > 0 && !c.closing {
                    let n = res as u32;
                    if c.wait as u64 != tag {
                        // Bytes the state machine is not waiting for (a pipelined request):
                        // more than this relay frames.
                        next = Some(Next::Close);
                    } else {
                        let (at, room) = if tag == CLIENT_RECV {
                            (c.filled as usize, BUF as u32 - c.filled)
                        } else {
                            ((c.base + c.filled) as usize, c.upstream_recv_len())
                        };
                        if n > room {
                            next = Some(Next::Close);
                        } else {
                            // SAFETY: the kernel wrote n bytes into buffer bid.
                            let data = unsafe { std::slice::from_raw_parts(src, n as usize) };
                            c.buf()[at..at + n as usize].copy_from_slice(data);
                            c.wait = 0;
                            next = Some(if tag == CLIENT_RECV {
                                c.client_received(n)
                            } else {
                                c.upstream_received(n)
                            });
                        }
                    }
                }
                bufs.give(bid);
            } else if res == -libc::ENOBUFS && !more && !self.conns[slot].closing {
                // Ran dry: the buffers come back at the end of this batch; listen again.
                self.arm_recv(q, slot, tag)?;
                return Ok(());
            } else if !self.conns[slot].closing {
                next = Some(Next::Close); // EOF or error
            }
            // Ended (a full completion queue ends it too) on a connection that goes on.
            if !more && !self.conns[slot].closing && next != Some(Next::Close) {
                self.arm_recv(q, slot, tag)?;
            }
        } else if !self.conns[slot].closing {
            let c = &mut self.conns[slot];
            next = Some(if res < 0 || (res == 0 && tag != CONNECT) {
                Next::Close
            } else {
                match tag {
                    CONNECT => {
                        self.arm_recv(q, slot, CLIENT_RECV)?;
                        self.arm_recv(q, slot, UPSTREAM_RECV)?;
                        Next::RecvClient
                    }
                    UPSTREAM_SEND => c.upstream_sent(res as u32),
                    CLIENT_SEND => c.client_sent(res as u32),
                    _ => Next::Close,
                }
            });
        }
        if let Some(n) = next {
            self.issue(q, slot, n)?;
        }
        if self.conns[slot].closing && self.conns[slot].inflight == 0 {
            self.release(q, slot)?;
        }
        Ok(())
    }

    fn arm_recv(&mut self, q: &mut Queue, slot: usize, tag: u64) -> io::Result<()> {
        let fixed = self.knobs.fixed;
        let c = &mut self.conns[slot];
        let (fd, idx) = if tag == CLIENT_RECV {
            (c.client, 2 * slot as u32)
        } else {
            (c.upstream, 2 * slot as u32 + 1)
        };
        c.inflight += 1;
        let e = on_fd!(fixed, fd, idx, |t| opcode::RecvMulti::new(t, PBUF_GROUP)
            .build()
            .user_data(user_data(slot, tag)));
        // SAFETY: the buffers belong to the ring's registered group, mapped for the thread's life.
        unsafe { q.push(&e) }
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
                if self.knobs.fixed && self.conns.len() == MAX_SLOTS {
                    self.close_fd(q, upstream)?;
                    return self.close_fd(q, client);
                }
                self.conns.push(Conn::new(client, upstream, None));
                self.conns.len() - 1
            }
        };
        if self.knobs.fixed {
            q.submitter
                .register_files_update(2 * slot as u32, &[client, upstream])?;
        }
        self.conns[slot].inflight = 1;
        let e = on_fd!(self.knobs.fixed, upstream, 2 * slot as u32 + 1, |t| {
            opcode::Connect::new(t, up.as_ptr(), up.len())
                .build()
                .user_data(user_data(slot, CONNECT))
        });
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
        let Knobs {
            fixed,
            multishot,
            poll_first: pf,
            ..
        } = self.knobs;
        let c = &mut self.conns[slot];
        let (client, upstream) = (c.client, c.upstream);
        let (ci, ui) = (2 * slot as u32, 2 * slot as u32 + 1);
        let e = match next {
            Next::RecvClient if multishot => {
                c.wait = CLIENT_RECV as u8;
                return Ok(());
            }
            Next::RecvUpstream if multishot => {
                c.wait = UPSTREAM_RECV as u8;
                return Ok(());
            }
            Next::RecvClient => {
                let at = c.filled as usize;
                let len = (BUF - at) as u32;
                let ptr = c.buf()[at..].as_mut_ptr();
                let e = on_fd!(fixed, client, ci, |t| opcode::Recv::new(t, ptr, len)
                    .build()
                    .user_data(user_data(slot, CLIENT_RECV)));
                if pf {
                    poll_first(e)
                } else {
                    e
                }
            }
            Next::SendUpstream if self.knobs.detached && c.done == 0 && c.filled == c.req_len => {
                let len = c.req_len;
                let ptr = c.buf().as_ptr();
                // Its completion is ignored as a close's is; loopback sends this small are whole.
                let e = on_fd!(fixed, upstream, ui, |t| opcode::Send::new(t, ptr, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data(slot, CLOSE)));
                // SAFETY: as below; the buffer is never freed.
                unsafe { q.push(&e)? };
                let next = c.upstream_sent(len);
                return self.issue(q, slot, next);
            }
            Next::SendUpstream => {
                let (at, len) = (c.done as usize, c.req_len - c.done);
                let ptr = c.buf()[at..].as_ptr();
                on_fd!(fixed, upstream, ui, |t| opcode::Send::new(t, ptr, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data(slot, UPSTREAM_SEND)))
            }
            Next::RecvUpstream => {
                let at = (c.base + c.filled) as usize;
                let len = c.upstream_recv_len();
                let ptr = c.buf()[at..].as_mut_ptr();
                let e = on_fd!(fixed, upstream, ui, |t| opcode::Recv::new(t, ptr, len)
                    .build()
                    .user_data(user_data(slot, UPSTREAM_RECV)));
                if pf {
                    poll_first(e)
                } else {
                    e
                }
            }
            Next::SendClient => {
                let (at, len) = ((c.base + c.done) as usize, c.filled - c.done);
                let ptr = c.buf()[at..].as_ptr();
                on_fd!(fixed, client, ci, |t| opcode::Send::new(t, ptr, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data(slot, CLIENT_SEND)))
            }
            Next::Close if multishot => {
                c.closing = true;
                c.wait = 0;
                // Ends both multishot receives (they see EOF); the slot is released when the
                // last op of it completes.
                // SAFETY: plain shutdown(2) on our own sockets.
                unsafe {
                    libc::shutdown(client, libc::SHUT_RDWR);
                    libc::shutdown(upstream, libc::SHUT_RDWR);
                }
                return Ok(());
            }
            Next::Close => return self.release(q, slot),
        };
        if multishot {
            c.inflight += 1;
        }
        // SAFETY: the buffer is boxed, so it stays put when `conns` grows, and it is neither
        // freed nor reused before this op completes: the slot stays taken until then (one op in
        // flight per connection) and a freed slot keeps its buffer for the next connection.
        unsafe { q.push(&e) }
    }

    /// Closes both sockets of `slot`, which has no op in flight, and frees it.
    fn release(&mut self, q: &mut Queue, slot: usize) -> io::Result<()> {
        let (client, upstream) = (self.conns[slot].client, self.conns[slot].upstream);
        if self.knobs.fixed {
            q.submitter
                .register_files_update(2 * slot as u32, &[-1, -1])?;
        }
        self.free.push(slot as u32);
        self.close_fd(q, client)?;
        self.close_fd(q, upstream)
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
