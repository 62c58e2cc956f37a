//! One client connection: keeps a socket open, sends pre-encoded requests (closed loop or on the
//! open-loop timetable), frames the responses and records each latency.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use super::dial::Dial;
use super::schedule::Dispatch;
use super::ThreadCtx;
use crate::http::{ResponseFramer, MAX_HEAD};
use crate::stats::Failure;
use crate::target::Origin;

/// Small to start with: thousands of connections with 64 KiB buffers each measured half the
/// throughput at 500+ connections (cache and TLB misses). Grows when a read fills it.
const READ_BUF: usize = 8 * 1024;
const READ_BUF_MAX: usize = 256 * 1024;
/// Pause after a failed connect so a dead upstream costs a few attempts per second, not a spin.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// monoio's timer rounds up to whole milliseconds, so open-loop sleeps aim this far early and the
/// request leaves at or just before its due time rather than up to a millisecond late.
const TIMER_SLACK: Duration = Duration::from_millis(1);

pub struct Conn<D: Dial> {
    ctx: Rc<ThreadCtx>,
    dial: Rc<D>,
    origin: &'static Origin,
    /// Position on the origin's weighted wheel.
    cursor: usize,
    rbuf: Vec<u8>,
    /// Parsed up to here in `rbuf`.
    pos: usize,
    wbuf: Vec<u8>,
    /// Request indices of the batch in flight, to know which responses have no body (HEAD).
    batch: Vec<u16>,
    /// With a single URL every batch of a given size is identical: encode it once.
    fixed_batch: Option<usize>,
    framer: ResponseFramer,
    /// Responses completed in the exchange in flight, for counting what a timeout lost.
    done: usize,
}

/// How an exchange ended when it did not end cleanly.
struct Lost {
    kind: Failure,
    requests: u64,
}

fn classify(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::TimedOut => Failure::Timeout,
        io::ErrorKind::InvalidData => Failure::Parse,
        _ => Failure::Reset,
    }
}

impl<D: Dial> Conn<D> {
    pub fn new(ctx: Rc<ThreadCtx>, dial: Rc<D>, origin: &'static Origin, id: usize) -> Self {
        Self {
            ctx,
            dial,
            origin,
            cursor: id % origin.wheel.len().max(1),
            rbuf: Vec::with_capacity(READ_BUF),
            pos: 0,
            wbuf: Vec::new(),
            batch: Vec::new(),
            fixed_batch: None,
            framer: ResponseFramer::default(),
            done: 0,
        }
    }

    /// Connects, counting a failure against `attempts` requests when they are measured.
    async fn connect(&mut self, measured: bool, attempts: u64) -> Option<D::Stream> {
        self.rbuf.clear();
        self.pos = 0;
        self.framer = ResponseFramer::default();
        let timeout = self.ctx.cfg.timeout;
        match monoio::time::timeout(timeout, self.dial.dial()).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(_)) | Err(_) => {
                if measured {
                    let mut st = self.ctx.stats.borrow_mut();
                    st.sent(attempts);
                    st.failed(Failure::Connect, attempts);
                }
                None
            }
        }
    }

    fn encode_batch(&mut self, k: usize) {
        if self.fixed_batch == Some(k) {
            return;
        }
        self.wbuf.clear();
        self.batch.clear();
        let wheel = &self.origin.wheel;
        for _ in 0..k {
            let idx = wheel[self.cursor];
            self.cursor = (self.cursor + 1) % wheel.len();
            self.batch.push(idx);
            self.wbuf
                .extend_from_slice(self.origin.requests[usize::from(idx)].bytes);
        }
        self.fixed_batch = (wheel.len() == 1).then_some(k);
    }

    /// Writes `k` requests and reads their `k` responses, recording latency from `start`.
    /// Returns whether the connection can be reused.
    async fn exchange(
        &mut self,
        s: &mut D::Stream,
        k: usize,
        start: Instant,
        measured: bool,
    ) -> Result<bool, Lost> {
        // One timer for the whole exchange rather than one per read and write: half the timer
        // wheel work on the hot path. A timeout drops the in-flight op and the buffer it owns.
        let deadline = Instant::now() + self.ctx.cfg.timeout;
        self.done = 0;
        let inner = self.exchange_inner(s, k, start, measured);
        match monoio::time::timeout_at(deadline.into(), inner).await {
            Ok(r) => r,
            Err(_) => {
                if self.rbuf.capacity() == 0 {
                    self.rbuf = Vec::with_capacity(READ_BUF);
                }
                self.rbuf.clear();
                self.pos = 0;
                self.fixed_batch = None;
                Err(Lost {
                    kind: Failure::Timeout,
                    requests: (k - self.done) as u64,
                })
            }
        }
    }

    async fn exchange_inner(
        &mut self,
        s: &mut D::Stream,
        k: usize,
        start: Instant,
        measured: bool,
    ) -> Result<bool, Lost> {
        let lost = |kind, done: usize| Lost {
            kind,
            requests: (k - done) as u64,
        };
        self.encode_batch(k);
        if measured {
            self.ctx.stats.borrow_mut().sent(k as u64);
        }
        let wbuf = std::mem::take(&mut self.wbuf);
        let (res, wbuf) = s.write_all(wbuf).await;
        self.wbuf = wbuf;
        if let Err(e) = res {
            return Err(lost(classify(&e), 0));
        }

        let mut done = 0;
        let mut now = Instant::now();
        loop {
            while done < k {
                let head = self.origin.requests[usize::from(self.batch[done])].head;
                let (n, resp) = self
                    .framer
                    .advance(&self.rbuf[self.pos..], head)
                    .map_err(|_| lost(Failure::Parse, done))?;
                self.pos += n;
                match resp {
                    Some(r) => {
                        done += 1;
                        self.done = done;
                        self.record(measured, now, start, r.status);
                        if r.close {
                            // Requests pipelined behind a closing response are never answered.
                            self.fail(measured, Failure::Reset, (k - done) as u64);
                            return Ok(false);
                        }
                    }
                    None if n == 0 => break,
                    None => {}
                }
            }
            if done == k {
                // Bytes nobody asked for mean the framing is off: start clean on a new socket.
                return Ok(self.pos == self.rbuf.len());
            }
            if self.pos == self.rbuf.len() {
                self.rbuf.clear();
                self.pos = 0;
            } else if self.rbuf.len() == self.rbuf.capacity() {
                self.rbuf.drain(..self.pos);
                self.pos = 0;
                if self.rbuf.len() == self.rbuf.capacity() {
                    // Only a head can need more than the buffer; bodies are skipped as they come.
                    if self.rbuf.len() >= MAX_HEAD {
                        return Err(lost(Failure::Parse, done));
                    }
                    self.rbuf.reserve(READ_BUF);
                }
            }
            let buf = std::mem::take(&mut self.rbuf);
            let len = buf.len();
            let (res, slice) = s.read(buf.slice_mut(len..)).await;
            self.rbuf = slice.into_inner();
            now = Instant::now();
            match res {
                Ok(0) => {
                    if let Some(r) = self.framer.on_eof() {
                        done += 1;
                        self.record(measured, now, start, r.status);
                        self.fail(measured, Failure::Reset, (k - done) as u64);
                        return Ok(false);
                    }
                    return Err(lost(Failure::Reset, done));
                }
                Ok(n) => {
                    if measured {
                        self.ctx.stats.borrow_mut().bytes(n as u64);
                    }
                    // A full read means big responses: fewer, larger reads pay off then.
                    if self.rbuf.len() == self.rbuf.capacity()
                        && self.rbuf.capacity() < READ_BUF_MAX
                    {
                        self.rbuf.reserve(self.rbuf.capacity());
                    }
                }
                Err(e) => return Err(lost(classify(&e), done)),
            }
        }
    }

    #[inline]
    fn record(&self, measured: bool, now: Instant, start: Instant, status: u16) {
        if measured {
            let ns = now.saturating_duration_since(start).as_nanos() as u64;
            self.ctx.stats.borrow_mut().response(ns, status);
        }
    }

    fn fail(&self, measured: bool, kind: Failure, n: u64) {
        if measured && n > 0 {
            self.ctx.stats.borrow_mut().failed(kind, n);
        }
    }

    /// Closed loop: the next batch leaves as soon as the previous one is answered.
    pub async fn run_closed(mut self, mut stream: Option<D::Stream>) {
        let pipeline = self.ctx.cfg.pipeline.max(1) as u64;
        loop {
            let now = Instant::now();
            if self.ctx.end.is_some_and(|e| now >= e) {
                break;
            }
            // Without warmup everything counts, so -n is exact however the start lines up.
            let measured = self.ctx.cfg.warmup.is_zero() || now >= self.ctx.warmup_end;
            let k = if measured {
                self.ctx.budget.take(pipeline)
            } else {
                pipeline
            };
            if k == 0 {
                break;
            }
            let mut s = match stream.take() {
                Some(s) => s,
                None => match self.connect(measured, k).await {
                    Some(s) => s,
                    None => {
                        monoio::time::sleep(CONNECT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let start = Instant::now();
            match self.exchange(&mut s, k as usize, start, measured).await {
                Ok(true) => stream = Some(s),
                Ok(false) => {}
                Err(l) => self.fail(measured, l.kind, l.requests),
            }
        }
    }

    /// Open loop: takes the thread's next due request whenever this connection is free, and
    /// sends it at its due time.
    ///
    /// Latency start (the coordinated-omission correction): a request that fell due while the
    /// server held every connection waited because of the server, so its latency counts from its
    /// due time (or from when the last connection got stuck, if that came later), as wrk2
    /// counts it, until that backlog is worked off. Any other delay past the due time is this generator's own (timer
    /// resolution, CPU taken by neighbours): latency then counts from the actual send, and the
    /// lag is reported apart.
    pub async fn run_open(mut self, mut stream: Option<D::Stream>, queue: Rc<Dispatch>) {
        while let Some((j, due)) = queue.take() {
            let measured = queue.tt.measured(j);
            let taken = Instant::now();
            let stuck = queue.backlog(due, taken);
            if let Some(wake) = due.checked_sub(TIMER_SLACK) {
                if wake > taken {
                    monoio::time::sleep_until(wake.into()).await;
                }
            }
            let woke = Instant::now();
            let start = match stuck {
                Some(since) if woke > due => due.max(since).min(woke),
                _ => {
                    if measured {
                        let lag = woke.saturating_duration_since(due).as_nanos() as u64;
                        self.ctx.stats.borrow_mut().lag(lag);
                    }
                    woke
                }
            };
            let mut s = match stream.take() {
                Some(s) => s,
                None => match self.connect(measured, 1).await {
                    Some(s) => s,
                    None => {
                        // Not straight back to the queue: a dead upstream would drain it at once.
                        monoio::time::sleep(CONNECT_BACKOFF).await;
                        continue;
                    }
                },
            };
            queue.sent();
            self.ctx.last_send.set(Some(Instant::now()));
            match self.exchange(&mut s, 1, start, measured).await {
                Ok(true) => stream = Some(s),
                Ok(false) => {}
                Err(l) => self.fail(measured, l.kind, l.requests),
            }
            queue.freed();
        }
    }
}
