//! Per-worker counters for the admin endpoint. Each worker copies its own counters (plain
//! `Cell`s on the request path) into its slot on its control tick, every 250 ms; a scrape
//! sums nothing on the request path and renders the slots as Prometheus text.

pub mod access_log;

use crate::config::Config;
use crate::upstream::published::{now_ms, Published, PublishedServer};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Counts one on a worker's own counter (a plain `Cell`: no atomic on the request path).
#[inline]
pub fn bump(c: &std::cell::Cell<u64>) {
    c.set(c.get() + 1);
}

/// One worker's counters as of its last publish.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub requests: u64,
    /// Responses to clients by status class, 1xx to 5xx.
    pub responses: [u64; 5],
    pub connections: u64,
    pub inflight: u64,
    pub upstreams: Vec<UpstreamCounts>,
    pub caches: Vec<CacheCounts>,
    /// Gateway counters of every route with filters: (route, [(counter, value)]).
    pub routes: Vec<(String, Vec<(&'static str, u64)>)>,
}

#[derive(Debug, Clone, Default)]
pub struct UpstreamCounts {
    pub name: String,
    pub opened: u64,
    pub reused: u64,
    /// Attempts made again after a failure, under the route's retry policy.
    pub retries: u64,
    pub servers: Vec<ServerCounts>,
}

/// One server of an upstream as one worker sees it.
#[derive(Debug, Clone)]
pub struct ServerCounts {
    pub addr: SocketAddr,
    /// Attempts sent to it (retries included).
    pub requests: u64,
    /// Attempts that failed in transport: connect refused or timed out, reset, no or broken
    /// response head, response timeout.
    pub failures: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Default)]
pub struct CacheCounts {
    pub name: String,
    pub hits: u64,
    pub misses: u64,
    pub revalidated: u64,
    pub stale: u64,
    pub stores: u64,
    pub evictions: u64,
    pub bytes: u64,
    pub entries: u64,
}

/// A cache purge asked of every worker (each holds its own share of the cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub cache: String,
    /// `scheme://host/target` as a client asked for it; None purges the whole zone.
    pub url: Option<String>,
}

/// The workers' slots. A slot's mutex is taken by its worker every 250 ms and by a scrape:
/// never on the request path. Purges wait in a queue per worker, which the worker drains on
/// its 25 ms tick (a flag spares it the lock while there are none).
pub struct Board {
    /// The cache zones of the config in force (set at start and on every reload).
    caches: Mutex<Vec<String>>,
    /// The upstreams' shared state (health, ejections) of the config in force.
    published: Mutex<Option<Arc<Published>>>,
    slots: Vec<Mutex<Snapshot>>,
    purges: Vec<Mutex<Vec<Purge>>>,
    purge_pending: Vec<AtomicBool>,
}

impl Board {
    pub fn new(workers: usize) -> Self {
        Self {
            caches: Mutex::default(),
            published: Mutex::default(),
            slots: (0..workers).map(|_| Mutex::default()).collect(),
            purges: (0..workers).map(|_| Mutex::default()).collect(),
            purge_pending: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Follows the config in force (at start and on every reload): its cache zones, and its
    /// upstreams' shared state.
    pub fn follow(&self, config: &Config, published: Arc<Published>) {
        let names = config.caches.iter().map(|z| z.name.clone()).collect();
        match self.caches.lock() {
            Ok(mut g) => *g = names,
            Err(poisoned) => *poisoned.into_inner() = names,
        }
        match self.published.lock() {
            Ok(mut g) => *g = Some(published),
            Err(poisoned) => *poisoned.into_inner() = Some(published),
        }
    }

    fn published(&self) -> Option<Arc<Published>> {
        match self.published.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn has_cache(&self, name: &str) -> bool {
        match self.caches.lock() {
            Ok(g) => g.iter().any(|n| n == name),
            Err(poisoned) => poisoned.into_inner().iter().any(|n| n == name),
        }
    }

    /// Queues `p` for every worker; returns how many.
    pub fn purge(&self, p: Purge) -> usize {
        for (q, flag) in self.purges.iter().zip(&self.purge_pending) {
            match q.lock() {
                Ok(mut g) => g.push(p.clone()),
                Err(poisoned) => poisoned.into_inner().push(p.clone()),
            }
            flag.store(true, Ordering::Release);
        }
        self.purges.len()
    }

    /// The purges queued for `worker` since it last asked.
    pub fn take_purges(&self, worker: usize) -> Vec<Purge> {
        let Some(flag) = self.purge_pending.get(worker) else {
            return Vec::new();
        };
        // A plain load first: the worker asks every 25 ms, and a swap would write the line
        // the admin thread sets each time.
        if !flag.load(Ordering::Relaxed) || !flag.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        match self.purges[worker].lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    pub fn publish(&self, worker: usize, s: Snapshot) {
        if let Some(slot) = self.slots.get(worker) {
            match slot.lock() {
                Ok(mut g) => *g = s,
                Err(poisoned) => *poisoned.into_inner() = s,
            }
        }
    }

    fn snapshots(&self) -> Vec<Snapshot> {
        self.slots
            .iter()
            .map(|s| match s.lock() {
                Ok(g) => g.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            })
            .collect()
    }

    /// Every worker's counters in the Prometheus text format, one series per worker.
    pub fn render(&self) -> String {
        let all = self.snapshots();
        let mut o = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(
                o,
                "# HELP ringway_{name} {help}\n# TYPE ringway_{name} {kind}"
            );
            for (labels, v) in rows {
                let _ = writeln!(o, "ringway_{name}{{{labels}}} {v}");
            }
        };
        let per_worker = |f: &dyn Fn(&Snapshot) -> u64| -> Vec<(String, u64)> {
            all.iter()
                .enumerate()
                .map(|(w, s)| (format!("worker=\"{w}\""), f(s)))
                .collect()
        };
        family(
            "requests_total",
            "counter",
            "Requests read.",
            per_worker(&|s| s.requests),
        );
        let mut rows = Vec::new();
        for (w, s) in all.iter().enumerate() {
            for (class, v) in s.responses.iter().enumerate() {
                rows.push((format!("code=\"{}xx\",worker=\"{w}\"", class + 1), *v));
            }
        }
        family(
            "responses_total",
            "counter",
            "Responses sent to clients, by status class (proxied and Ringway's own).",
            rows,
        );
        family(
            "client_connections",
            "gauge",
            "Client connections open.",
            per_worker(&|s| s.connections),
        );
        family(
            "requests_in_flight",
            "gauge",
            "Requests between head read and response sent.",
            per_worker(&|s| s.inflight),
        );
        let upstream = |f: fn(&UpstreamCounts) -> u64| {
            by_name(&all, "upstream", |s| &s.upstreams, |u| &u.name, f)
        };
        for (name, help, f) in [
            (
                "upstream_connections_opened_total",
                "Upstream connections opened.",
                (|u| u.opened) as fn(&UpstreamCounts) -> u64,
            ),
            (
                "upstream_connections_reused_total",
                "Requests sent over a pooled upstream connection.",
                |u| u.reused,
            ),
            (
                "upstream_retries_total",
                "Attempts made again after a failure, under the route's retry policy.",
                |u| u.retries,
            ),
        ] {
            family(name, "counter", help, upstream(f));
        }
        let server = |f: fn(&ServerCounts) -> u64| {
            let mut rows = Vec::new();
            for (w, s) in all.iter().enumerate() {
                for u in &s.upstreams {
                    let name = escape(&u.name);
                    for srv in &u.servers {
                        let labels =
                            format!("upstream=\"{name}\",server=\"{}\",worker=\"{w}\"", srv.addr);
                        rows.push((labels, f(srv)));
                    }
                }
            }
            rows
        };
        for (name, kind, help, f) in [
            (
                "upstream_requests_total",
                "counter",
                "Attempts sent to the server, retries included.",
                (|s| s.requests) as fn(&ServerCounts) -> u64,
            ),
            (
                "upstream_failures_total",
                "counter",
                "Attempts that failed in transport: connect refused or timed out, reset, no or broken response head, response timeout.",
                |s| s.failures,
            ),
            (
                "upstream_requests_in_flight",
                "gauge",
                "Attempts waiting on the server now.",
                |s| s.in_flight,
            ),
        ] {
            family(name, kind, help, server(f));
        }
        self.render_server_state(&mut family);
        let cache =
            |f: fn(&CacheCounts) -> u64| by_name(&all, "cache", |s| &s.caches, |c| &c.name, f);
        for (name, help, f) in [
            (
                "cache_hits_total",
                "Answers from a fresh entry.",
                (|c| c.hits) as fn(&CacheCounts) -> u64,
            ),
            ("cache_misses_total", "Requests that went upstream.", |c| {
                c.misses
            }),
            (
                "cache_revalidated_total",
                "Expired entries a 304 made fresh.",
                |c| c.revalidated,
            ),
            (
                "cache_stale_total",
                "Answers from an expired entry for a failure.",
                |c| c.stale,
            ),
            ("cache_stores_total", "Responses stored.", |c| c.stores),
            (
                "cache_evictions_total",
                "URLs evicted to stay under max_size.",
                |c| c.evictions,
            ),
        ] {
            family(name, "counter", help, cache(f));
        }
        family(
            "cache_bytes",
            "gauge",
            "Bytes held (bodies, heads, keys, bookkeeping).",
            cache(|c| c.bytes),
        );
        family("cache_urls", "gauge", "URLs held.", cache(|c| c.entries));
        let mut rows = Vec::new();
        for (w, s) in all.iter().enumerate() {
            for (route, counters) in &s.routes {
                for (what, v) in counters {
                    let route = escape(route);
                    rows.push((
                        format!("route=\"{route}\",outcome=\"{what}\",worker=\"{w}\""),
                        *v,
                    ));
                }
            }
        }
        family(
            "gateway_requests_total",
            "counter",
            "Requests on routes with gateway filters, by outcome.",
            rows,
        );
        o
    }

    /// What all workers agree on about each server: its health verdict and ejections. One row
    /// per server, with no worker label.
    fn render_server_state(&self, family: &mut impl FnMut(&str, &str, &str, Vec<(String, u64)>)) {
        let Some(p) = self.published() else { return };
        let now = now_ms();
        let rows = |f: &dyn Fn(&PublishedServer) -> u64| {
            let mut rows = Vec::new();
            for u in &p.upstreams {
                let name = escape(&u.name);
                for (addr, s) in u.addrs.iter().zip(&u.servers) {
                    rows.push((format!("upstream=\"{name}\",server=\"{addr}\""), f(s)));
                }
            }
            rows
        };
        family(
            "upstream_server_healthy",
            "gauge",
            "1 while the server passes its active health checks (always 1 without them).",
            rows(&|s| u64::from(s.healthy.load(Ordering::Relaxed))),
        );
        family(
            "upstream_server_ejected",
            "gauge",
            "1 while passive health (outlier detection) has the server ejected.",
            rows(&|s| u64::from(s.ejected_until_ms.load(Ordering::Relaxed) > now)),
        );
        family(
            "upstream_ejections_total",
            "counter",
            "Times passive health ejected the server.",
            rows(&|s| s.ejections_total.load(Ordering::Relaxed)),
        );
        family(
            "upstream_probe_failures_total",
            "counter",
            "Active health probes of the server that failed.",
            rows(&|s| s.probes_failed.load(Ordering::Relaxed)),
        );
    }
}

/// One row per worker and named item (an upstream, a cache): `LABEL="name",worker="N"`.
fn by_name<T>(
    all: &[Snapshot],
    label: &str,
    items: impl Fn(&Snapshot) -> &[T],
    name: impl Fn(&T) -> &str,
    value: fn(&T) -> u64,
) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    for (w, s) in all.iter().enumerate() {
        for item in items(s) {
            let n = escape(name(item));
            rows.push((format!("{label}=\"{n}\",worker=\"{w}\""), value(item)));
        }
    }
    rows
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_worker_and_family() {
        let b = Board::new(2);
        b.publish(
            1,
            Snapshot {
                requests: 7,
                upstreams: vec![UpstreamCounts {
                    name: "a\"b".into(),
                    opened: 2,
                    reused: 5,
                    retries: 1,
                    servers: vec![ServerCounts {
                        addr: "127.0.0.1:9".parse().unwrap(),
                        requests: 8,
                        failures: 1,
                        in_flight: 0,
                    }],
                }],
                responses: [0, 6, 0, 1, 0],
                caches: vec![CacheCounts {
                    name: "c".into(),
                    hits: 3,
                    ..Default::default()
                }],
                routes: vec![("r".into(), vec![("allowed", 4)])],
                ..Default::default()
            },
        );
        let t = b.render();
        assert!(
            t.contains("ringway_requests_total{worker=\"0\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("ringway_requests_total{worker=\"1\"} 7\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE ringway_requests_total counter\n"), "{t}");
        assert!(t.contains(
            "ringway_upstream_connections_reused_total{upstream=\"a\\\"b\",worker=\"1\"} 5\n"
        ));
        assert!(t.contains("ringway_cache_hits_total{cache=\"c\",worker=\"1\"} 3\n"));
        assert!(t.contains("ringway_responses_total{code=\"4xx\",worker=\"1\"} 1\n"));
        assert!(t.contains(
            "ringway_upstream_requests_total{upstream=\"a\\\"b\",server=\"127.0.0.1:9\",worker=\"1\"} 8\n"
        ));
        assert!(t.contains("# TYPE ringway_upstream_retries_total counter\n"));
        assert!(t.contains(
            "ringway_gateway_requests_total{route=\"r\",outcome=\"allowed\",worker=\"1\"} 4\n"
        ));
    }
}
