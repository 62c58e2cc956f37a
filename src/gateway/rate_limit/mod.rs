//! Rate limiting per route: request rate (GCRA) and requests in flight, keyed by client IP,
//! consumer, a header or the whole route. The per-core `RouteLimiter` only extracts the key and
//! talks to the process-wide table in `published`; see there for how the limit holds across
//! workers without a lock.

pub mod gcra;
pub mod published;

use crate::config::{RateKey, RateLimit};
use crate::http::fmt::push_dec;
use gcra::Gcra;
use httparse::Header;
use published::{Outcome, SharedTable};
use std::rc::Rc;
use std::sync::Arc;

/// A route's limiter as one worker holds it.
pub struct RouteLimiter {
    pub cfg: RateLimit,
    table: Arc<SharedTable>,
}

/// Gives back an in-flight slot when the request ends, on every path (drop).
pub struct InflightGuard {
    limiter: Rc<RouteLimiter>,
    slot: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.limiter.table.release(self.slot);
    }
}

/// What the limiter says about one request.
pub enum Verdict {
    Allow {
        guard: Option<InflightGuard>,
        remaining: u64,
        reset_ns: u64,
    },
    /// Over the rate; retry after this many whole seconds (at least 1).
    RateLimited {
        retry_after_s: u64,
    },
    TooManyInFlight,
    TableFull,
}

impl RouteLimiter {
    /// `identity` names the route; the same identity and limit share one table process-wide.
    pub fn new(identity: &str, cfg: &RateLimit) -> Self {
        let gcra =
            (cfg.rate > 0).then(|| Gcra::new(cfg.rate, cfg.per.as_nanos() as u64, cfg.burst));
        let id = format!("{identity}|{cfg:?}");
        let table =
            published::table_for(&id, || SharedTable::new(cfg.max_keys, gcra, cfg.concurrent));
        Self {
            cfg: cfg.clone(),
            table,
        }
    }

    /// Decides for one request. `consumer` is empty when the route has no auth.
    pub fn check(
        self: &Rc<Self>,
        client_ip: &str,
        consumer: &str,
        headers: &[Header<'_>],
    ) -> Verdict {
        let key: &[u8] = match &self.cfg.key {
            RateKey::ClientIp => client_ip.as_bytes(),
            RateKey::Consumer => consumer.as_bytes(),
            RateKey::Route => b"",
            RateKey::Header(name) => headers
                .iter()
                .find(|h| h.name.len() == name.len() && h.name.eq_ignore_ascii_case(name))
                .map_or(client_ip.as_bytes(), |h| h.value),
        };
        let h = self.table.hash(key);
        match self.table.acquire(h) {
            Outcome::Allow {
                slot,
                remaining,
                reset_ns,
            } => Verdict::Allow {
                guard: slot.map(|slot| InflightGuard {
                    limiter: self.clone(),
                    slot,
                }),
                remaining,
                reset_ns,
            },
            Outcome::RateLimited { retry_after_ns } => Verdict::RateLimited {
                retry_after_s: retry_after_ns.div_ceil(1_000_000_000).max(1),
            },
            Outcome::TooManyInFlight => Verdict::TooManyInFlight,
            Outcome::TableFull => Verdict::TableFull,
        }
    }

    /// Appends the RateLimit-* header lines (IETF httpapi draft) for an allowed request.
    pub fn write_headers(&self, out: &mut Vec<u8>, remaining: u64, reset_ns: u64) {
        if self.cfg.rate == 0 {
            return;
        }
        self.write_policy(out);
        out.extend_from_slice(b"ratelimit-remaining: ");
        push_dec(out, remaining);
        out.extend_from_slice(b"\r\nratelimit-reset: ");
        push_dec(out, reset_ns.div_ceil(1_000_000_000));
        out.extend_from_slice(b"\r\n");
    }

    /// Appends the header lines of a 429.
    pub fn write_reject_headers(&self, out: &mut Vec<u8>, retry_after_s: u64) {
        out.extend_from_slice(b"retry-after: ");
        push_dec(out, retry_after_s);
        out.extend_from_slice(b"\r\n");
        if self.cfg.rate > 0 {
            self.write_policy(out);
            out.extend_from_slice(b"ratelimit-remaining: 0\r\nratelimit-reset: ");
            push_dec(out, retry_after_s);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn write_policy(&self, out: &mut Vec<u8>) {
        let window = self.cfg.per.as_secs().max(1);
        out.extend_from_slice(b"ratelimit-limit: ");
        push_dec(out, self.cfg.burst);
        out.extend_from_slice(b"\r\nratelimit-policy: ");
        push_dec(out, self.cfg.rate);
        out.extend_from_slice(b";w=");
        push_dec(out, window);
        out.extend_from_slice(b";burst=");
        push_dec(out, self.cfg.burst);
        out.extend_from_slice(b"\r\n");
    }
}
