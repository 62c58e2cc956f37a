//! Per-worker counters for the admin endpoint. Each worker copies its own counters (plain
//! `Cell`s on the request path) into its slot on its control tick, every 250 ms; a scrape
//! sums nothing on the request path and renders the slots as Prometheus text.

pub mod access_log;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Counts one on a worker's own counter (a plain `Cell`: no atomic on the request path).
#[inline]
pub fn bump(c: &std::cell::Cell<u64>) {
    c.set(c.get() + 1);
}

/// One worker's counters as of its last publish.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub requests: u64,
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
    slots: Vec<Mutex<Snapshot>>,
    purges: Vec<Mutex<Vec<Purge>>>,
    purge_pending: Vec<AtomicBool>,
}

impl Board {
    pub fn new(workers: usize) -> Self {
        Self {
            caches: Mutex::default(),
            slots: (0..workers).map(|_| Mutex::default()).collect(),
            purges: (0..workers).map(|_| Mutex::default()).collect(),
            purge_pending: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    pub fn set_caches(&self, names: Vec<String>) {
        match self.caches.lock() {
            Ok(mut g) => *g = names,
            Err(poisoned) => *poisoned.into_inner() = names,
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
        family(
            "upstream_connections_opened_total",
            "counter",
            "Upstream connections opened.",
            upstream(|u| u.opened),
        );
        family(
            "upstream_connections_reused_total",
            "counter",
            "Requests sent over a pooled upstream connection.",
            upstream(|u| u.reused),
        );
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
                }],
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
        assert!(t.contains(
            "ringway_gateway_requests_total{route=\"r\",outcome=\"allowed\",worker=\"1\"} 4\n"
        ));
    }
}
