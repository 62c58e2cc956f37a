//! Upstream state every worker must agree on, published lock-free: health verdicts from the
//! probe threads, passive ejections, and (only when a limit asks for it) in-flight counts.
//! Written rarely, read on picks with relaxed atomic loads; no lock anywhere.

use crate::config::Config;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Milliseconds since the process's first call: a clock all threads share.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Debug)]
pub struct PublishedServer {
    pub healthy: AtomicBool,
    /// When the server last became available (health or ejection), for slow start.
    pub back_since_ms: AtomicU64,
    /// Passively ejected until this time (0: never ejected).
    pub ejected_until_ms: AtomicU64,
    /// Ejections in the current streak: each one lasts longer.
    pub ejection_streak: AtomicU32,
    pub ejections_total: AtomicU64,
    /// Requests in flight over all workers; kept only when `max_connections` is set.
    pub in_flight: AtomicU32,
    /// Connections being opened over all workers; kept only when `max_pending` is set.
    pub connecting: AtomicU32,
    pub probes_failed: AtomicU64,
}

impl PublishedServer {
    fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            back_since_ms: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejection_streak: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            connecting: AtomicU32::new(0),
            probes_failed: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Ejected right now? Reads the clock only while an ejection is pending: the first reader
    /// after it ends clears it (moving its end to `back_since_ms`, for slow start and the
    /// streak), so a server ejected once does not cost a clock read on every pick afterwards.
    #[inline]
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if until > now_ms() {
            return true;
        }
        if self
            .ejected_until_ms
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.back_since_ms.fetch_max(until, Ordering::Relaxed);
        }
        false
    }
}

#[derive(Debug)]
pub struct PublishedUpstream {
    pub name: String,
    pub addrs: Vec<std::net::SocketAddr>,
    pub servers: Vec<PublishedServer>,
}

/// One table per config generation, indexed like `Config::upstreams`.
#[derive(Debug)]
pub struct Published {
    pub upstreams: Vec<Arc<PublishedUpstream>>,
}

impl Published {
    /// Builds the table for `config`, carrying the state of servers that were already known
    /// (same upstream name and address), so a reload does not forget an unhealthy server.
    pub fn build(config: &Config, previous: Option<&Published>) -> Arc<Self> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let old = previous.and_then(|p| p.upstreams.iter().find(|o| o.name == u.name));
                let servers = u
                    .servers
                    .iter()
                    .map(|s| {
                        let fresh = PublishedServer::new();
                        if let Some(o) = old {
                            if let Some(k) = o.addrs.iter().position(|a| *a == s.addr) {
                                let prev = &o.servers[k];
                                fresh
                                    .healthy
                                    .store(prev.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
                                for (dst, src) in [
                                    (&fresh.back_since_ms, &prev.back_since_ms),
                                    (&fresh.ejected_until_ms, &prev.ejected_until_ms),
                                    (&fresh.ejections_total, &prev.ejections_total),
                                    (&fresh.probes_failed, &prev.probes_failed),
                                ] {
                                    dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
                                }
                                fresh.ejection_streak.store(
                                    prev.ejection_streak.load(Ordering::Relaxed),
                                    Ordering::Relaxed,
                                );
                            }
                        }
                        fresh
                    })
                    .collect();
                Arc::new(PublishedUpstream {
                    name: u.name.clone(),
                    addrs: u.servers.iter().map(|s| s.addr).collect(),
                    servers,
                })
            })
            .collect();
        Arc::new(Self { upstreams })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_ejection_is_cleared_into_back_since() {
        let s = PublishedServer::new();
        let now = now_ms();
        s.ejected_until_ms.store(now + 60_000, Ordering::Relaxed);
        assert!(s.is_ejected());
        s.ejected_until_ms
            .store(now.saturating_sub(1).max(1), Ordering::Relaxed);
        assert!(!s.is_ejected());
        // Cleared: later picks read no clock, and slow start still knows when it came back.
        assert_eq!(s.ejected_until_ms.load(Ordering::Relaxed), 0);
        assert_eq!(
            s.back_since_ms.load(Ordering::Relaxed),
            now.saturating_sub(1).max(1)
        );
    }
}
