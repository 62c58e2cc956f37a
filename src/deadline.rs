//! Deadlines for socket operations without a timer per operation. Each connection owns a
//! `Watch` (its fd and a deadline in a Cell); arming or disarming one is a couple of plain
//! stores. The worker's tick sweeps its watches every few milliseconds and shuts down the socket
//! of an expired one, which ends the pending io_uring read (EOF) or write (EPIPE); the task then
//! sees `fired()` and answers with its timeout status. monoio's own timer costs a wheel insert
//! and removal per operation, three times per proxied request; this costs nothing per request.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the worker sweeps; a deadline fires at most about this late.
pub const SWEEP_EVERY: Duration = Duration::from_millis(25);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Waiting to read: the sweep shuts down only the read side, so an answer can still go out.
    Read,
    /// Waiting for a write to drain: the sweep shuts down both sides.
    Write,
}

pub struct Watch {
    fd: RawFd,
    /// Milliseconds on the worker clock; 0 when disarmed.
    deadline: Cell<u64>,
    phase: Cell<Phase>,
    fired: Cell<bool>,
}

// The request path only writes a watch (`arm`, `disarm`) and reads `fired` only once an
// operation has failed: at 1,000 connections a watch's line is cold whenever its connection
// comes back, and a store waits for it in the store buffer where a load stalls the poll.

impl Watch {
    /// Arms the watch: the pending operation must end within `after` (plus one sweep).
    #[inline]
    pub fn arm(&self, after: Duration, phase: Phase) {
        // The clock is coarse (set at each sweep), so one sweep period is added: a deadline may
        // fire a little late, never early.
        // u64 milliseconds: `Duration::as_millis` works in u128, which costs more than the rest.
        let after_ms = after
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(after.subsec_millis() as u64);
        let ms = coarse_ms() + after_ms + SWEEP_EVERY.as_millis() as u64;
        self.deadline.set(ms);
        self.phase.set(phase);
    }

    #[inline]
    pub fn disarm(&self) {
        self.deadline.set(0);
    }

    /// Whether the sweep ended an operation of this connection. A load of the watch's line:
    /// asked only when an operation failed or found the socket closed, since that is what a
    /// fired deadline does to it.
    #[inline]
    pub fn fired(&self) -> bool {
        self.fired.get()
    }
}

thread_local! {
    /// The worker's coarse clock in milliseconds, advanced by its sweep so that arming reads
    /// no clock. Per thread, since a worker is one: its watches are armed and swept on it.
    /// Another watchdog on the same thread (tests) advances it from the same real clock.
    static COARSE_MS: Cell<u64> = const { Cell::new(0) };
}

/// The worker's coarse clock in milliseconds (as of its last sweep): cheap enough to stamp
/// every request with, and a thread-local, so reading it touches no per-connection line.
#[inline]
pub fn coarse_ms() -> u64 {
    COARSE_MS.get()
}

fn real_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The watches of one worker.
pub struct Watchdog {
    watches: RefCell<Vec<Weak<Watch>>>,
}

impl Default for Watchdog {
    fn default() -> Self {
        // The clock runs from the first watchdog of a thread on, before its first sweep.
        COARSE_MS.set(real_ms());
        Self {
            watches: RefCell::new(Vec::new()),
        }
    }
}

impl Watchdog {
    /// A watch for `fd`. The caller keeps the socket and the watch together: the socket must
    /// not be closed while its watch is armed (the sweep would shut down a reused fd).
    pub fn watch(&self, fd: RawFd) -> Rc<Watch> {
        let w = Rc::new(Watch {
            fd,
            deadline: Cell::new(0),
            phase: Cell::new(Phase::Read),
            fired: Cell::new(false),
        });
        self.watches.borrow_mut().push(Rc::downgrade(&w));
        w
    }

    /// Advances the clock, fires expired watches and forgets dropped ones.
    pub fn sweep(&self) {
        let now = real_ms();
        COARSE_MS.set(now);
        self.watches.borrow_mut().retain(|weak| {
            let Some(w) = weak.upgrade() else {
                return false;
            };
            let d = w.deadline.get();
            if d != 0 && d <= now {
                w.deadline.set(0);
                w.fired.set(true);
                let how = match w.phase.get() {
                    Phase::Read => libc::SHUT_RD,
                    Phase::Write => libc::SHUT_RDWR,
                };
                // SAFETY: shutdown on an fd its owner keeps open while the watch lives (see `watch`).
                unsafe {
                    libc::shutdown(w.fd, how);
                }
            }
            true
        });
    }

    pub fn len(&self) -> usize {
        self.watches.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn sweep_ends_a_blocked_read_and_spares_disarmed_ones() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut server, _) = l.accept().unwrap();
        let _client2 = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server2, _) = l.accept().unwrap();
        use std::os::fd::AsRawFd;
        let dog = Watchdog::default();
        let w = dog.watch(server.as_raw_fd());
        let w2 = dog.watch(server2.as_raw_fd());
        w.arm(Duration::ZERO, Phase::Read);
        w2.arm(Duration::from_secs(60), Phase::Read);
        // Armed against the thread's clock, which the watchdog started: never early.
        let armed_at = coarse_ms();
        assert!(armed_at > 0, "the clock did not start with the watchdog");
        assert!(w2.deadline.get() >= armed_at + 60_000);
        std::thread::sleep(SWEEP_EVERY * 2);
        dog.sweep();
        assert!(
            coarse_ms() >= armed_at + SWEEP_EVERY.as_millis() as u64,
            "the sweep did not advance the clock"
        );
        assert!(w.fired());
        assert!(!w2.fired());
        let mut b = [0u8; 8];
        // The read side is shut: read returns EOF at once instead of blocking.
        assert_eq!(server.read(&mut b).unwrap(), 0);
        drop(w2);
        dog.sweep();
        assert_eq!(dog.len(), 1);
    }
}
