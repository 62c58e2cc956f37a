//! A per-core, per-server keep-alive pool. LIFO on purpose: under steady load the same warm
//! connections are reused and the rest age at the cold end, where the trimmer closes a few per
//! tick instead of letting hundreds expire (and hit the upstream) in the same instant.

use crate::deadline::Watch;
use monoio::net::TcpStream;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

struct Idle {
    stream: TcpStream,
    watch: Rc<Watch>,
    /// Checked in at this time of the worker's coarse clock: a clock read per request would
    /// cost more than the rest of the check-in.
    since_ms: u64,
}

pub struct Pool {
    idle: VecDeque<Idle>,
    max_idle: usize,
}

impl Pool {
    pub fn new(max_idle: usize) -> Self {
        Self {
            idle: VecDeque::new(),
            max_idle,
        }
    }

    /// The most recently used idle connection, if any.
    #[inline]
    pub fn checkout(&mut self) -> Option<(TcpStream, Rc<Watch>)> {
        let idle = self.idle.pop_back()?;
        // The entry the next checkout takes was checked in a while ago at high concurrency:
        // prefetched now, it is in cache by the next request.
        if let Some(next) = self.idle.back() {
            crate::hint::prefetch_value(next);
        }
        Some((idle.stream, idle.watch))
    }

    /// Returns a connection that finished a response cleanly; beyond `max_idle` it is closed.
    #[inline]
    pub fn checkin(&mut self, stream: TcpStream, watch: Rc<Watch>) {
        if self.idle.len() < self.max_idle {
            let since_ms = crate::deadline::coarse_ms();
            self.idle.push_back(Idle {
                stream,
                watch,
                since_ms,
            });
        }
    }

    pub fn set_max_idle(&mut self, max_idle: usize) {
        self.max_idle = max_idle;
        while self.idle.len() > max_idle {
            self.idle.pop_front();
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// Closes connections idle longer than `idle_timeout`, oldest first, at most
    /// max(2, idle/32) per call so that a large pool drains over a few seconds.
    /// `now_ms` is the worker's coarse clock (`deadline::coarse_ms`).
    pub fn trim(&mut self, now_ms: u64, idle_timeout: Duration) -> usize {
        let idle_ms = idle_timeout.as_millis() as u64;
        let budget = (self.idle.len() / 32).max(2);
        let mut closed = 0;
        while closed < budget {
            match self.idle.front() {
                Some(i) if now_ms.saturating_sub(i.since_ms) >= idle_ms => {
                    self.idle.pop_front();
                    closed += 1;
                }
                _ => break,
            }
        }
        closed
    }
}
