//! The scenario families of issue 4 turned into cells: one cell is one load
//! shape, run for every proxy in every repetition.

use std::time::Duration;

use serde::Serialize;

use crate::cli::{Args, ScenarioKind};

/// Options after defaults for a full or a `--quick` run are applied.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub reps: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub closed_conns: Vec<usize>,
    pub rate: u64,
    pub rate_conns: usize,
    pub sweep_start: u64,
    pub sweep_step: u64,
    pub sweep_max: u64,
    pub bodies: Vec<usize>,
    pub chunked_bodies: Vec<usize>,
    pub body_conns: usize,
    pub idle_conns: usize,
    /// Client connections of the TLS keep-alive cells, and of the handshake cell.
    pub tls_conns: Vec<usize>,
    pub handshake_conns: usize,
    /// Client connections of the cache-hit cells.
    pub cache_conns: Vec<usize>,
    /// Client connections of the access-log cells.
    pub log_conns: Vec<usize>,
    pub max_redo: usize,
    pub scenarios: Vec<ScenarioKind>,
}

impl Plan {
    pub fn from_args(a: &Args) -> Plan {
        let q = a.quick;
        let pick = |full: f64, quick: f64| if q { quick } else { full };
        Plan {
            quick: q,
            reps: a.reps.unwrap_or(if q { 1 } else { 3 }).max(1),
            duration_s: a
                .duration
                .map(|d| d.as_secs_f64())
                .unwrap_or(pick(10.0, 0.5)),
            warmup_s: a.warmup.map(|d| d.as_secs_f64()).unwrap_or(pick(1.0, 0.0)),
            closed_conns: a.conns.clone().unwrap_or(vec![50, 200, 1000]),
            rate: a.rate.unwrap_or(if q { 5_000 } else { 40_000 }),
            rate_conns: a.rate_conns.unwrap_or(if q { 50 } else { 200 }),
            sweep_start: a.sweep_start.unwrap_or(if q { 10_000 } else { 60_000 }),
            sweep_step: a.sweep_step.unwrap_or(20_000).max(1),
            sweep_max: a.sweep_max.unwrap_or(if q { 10_000 } else { 200_000 }),
            bodies: a
                .bodies
                .clone()
                .unwrap_or(vec![0, 1024, 16 * 1024, 256 * 1024]),
            chunked_bodies: a.chunked_bodies.clone().unwrap_or(vec![256 * 1024]),
            body_conns: a.body_conns.unwrap_or(50),
            idle_conns: a.idle_conns.unwrap_or(if q { 1_000 } else { 10_000 }),
            tls_conns: a
                .tls_conns
                .clone()
                .unwrap_or(if q { vec![50] } else { vec![50, 200] })
                .into_iter()
                .filter(|&c| c > 0)
                .collect(),
            handshake_conns: a.handshake_conns.unwrap_or(50),
            cache_conns: a
                .cache_conns
                .clone()
                .unwrap_or(if q { vec![50] } else { vec![50, 200] })
                .into_iter()
                .filter(|&c| c > 0)
                .collect(),
            log_conns: a
                .log_conns
                .clone()
                .unwrap_or(if q { vec![50] } else { vec![50, 200] })
                .into_iter()
                .filter(|&c| c > 0)
                .collect(),
            max_redo: a.max_redo.unwrap_or(if q { 0 } else { 2 }),
            scenarios: a.scenarios.clone(),
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }

    pub fn has(&self, s: ScenarioKind) -> bool {
        self.scenarios.contains(&s)
    }
}

/// One load shape.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub id: String,
    pub scenario: ScenarioKind,
    pub label: String,
    pub conns: usize,
    pub rate: Option<u64>,
    pub body: usize,
    /// When not 0, the upstream sends the body chunked, in chunks of this size.
    pub chunk: usize,
    pub idle: bool,
    /// Ringway runs with its default `runtime.transparent_huge_pages = true`; false for the
    /// idle cell that shows its memory without them (only Ringway runs that cell).
    pub huge_pages: bool,
    /// Clients speak HTTPS to the proxy (the upstreams stay plain HTTP).
    pub tls: Option<TlsLoad>,
    /// The upstream marks its response cacheable and the proxy caches it: after the first
    /// request every answer comes from the proxy's cache.
    pub cache: bool,
    /// The proxy writes an access log line per request to a file.
    pub access_log: bool,
}

/// How the clients of a TLS cell use their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsLoad {
    /// Keep-alive connections: what the record layer adds to every request.
    KeepAlive,
    /// `Connection: close` on every request, so every request is a new connection and a
    /// handshake (resumed by a session ticket once the client has one, as browsers do).
    Handshake,
}

/// Body of the cache-hit cells: a small page.
pub const CACHE_BODY: usize = 1024;

/// Chunk size of the chunked-body cells: what streaming application servers commonly emit.
pub const BODY_CHUNK: usize = 16 * 1024;

impl Cell {
    pub fn closed(conns: usize, body: usize, scenario: ScenarioKind) -> Cell {
        let (id, label) = match scenario {
            ScenarioKind::Bodies => (
                format!("body-{}", size_name(body)),
                format!("{} body, {conns} conns", size_name(body)),
            ),
            _ => (
                format!("closed-c{conns}"),
                format!("closed loop, {conns} conns"),
            ),
        };
        Cell {
            id,
            scenario,
            label,
            conns,
            rate: None,
            body,
            chunk: 0,
            idle: false,
            huge_pages: true,
            tls: None,
            cache: false,
            access_log: false,
        }
    }

    /// A body-size cell whose upstream sends the body chunked.
    pub fn chunked(conns: usize, body: usize) -> Cell {
        Cell {
            id: format!("body-{}-chunked", size_name(body)),
            scenario: ScenarioKind::Bodies,
            label: format!("{} chunked body, {conns} conns", size_name(body)),
            conns,
            rate: None,
            body,
            chunk: BODY_CHUNK,
            idle: false,
            huge_pages: true,
            tls: None,
            cache: false,
            access_log: false,
        }
    }

    pub fn rate(rate: u64, conns: usize, scenario: ScenarioKind) -> Cell {
        let prefix = if scenario == ScenarioKind::Sweep {
            "sweep"
        } else {
            "rate"
        };
        Cell {
            id: format!("{prefix}-r{rate}"),
            scenario,
            label: format!("{} req/s constant rate, {conns} conns", rate),
            conns,
            rate: Some(rate),
            body: 0,
            chunk: 0,
            idle: false,
            huge_pages: true,
            tls: None,
            cache: false,
            access_log: false,
        }
    }

    pub fn idle(n: usize) -> Cell {
        Cell {
            id: format!("idle-{n}"),
            scenario: ScenarioKind::Idle,
            label: format!("{n} idle keep-alive connections"),
            conns: n,
            rate: None,
            body: 0,
            chunk: 0,
            idle: true,
            huge_pages: true,
            tls: None,
            cache: false,
            access_log: false,
        }
    }

    /// A closed-loop cell over TLS.
    pub fn tls(conns: usize, load: TlsLoad) -> Cell {
        let (id, label) = match load {
            TlsLoad::KeepAlive => (
                format!("tls-c{conns}"),
                format!("TLS keep-alive, {conns} conns"),
            ),
            TlsLoad::Handshake => (
                format!("tls-handshake-c{conns}"),
                format!("TLS, a new connection per request, {conns} conns"),
            ),
        };
        Cell {
            id,
            scenario: ScenarioKind::Tls,
            label,
            tls: Some(load),
            ..Cell::closed(conns, 0, ScenarioKind::Tls)
        }
    }

    /// A closed-loop cell where every response is a cache hit: what a proxy's cache costs per
    /// answer, with a small page's body.
    pub fn cache(conns: usize) -> Cell {
        Cell {
            id: format!("cache-c{conns}"),
            scenario: ScenarioKind::Cache,
            label: format!("cache hits, 1 KiB body, {conns} conns"),
            cache: true,
            ..Cell::closed(conns, CACHE_BODY, ScenarioKind::Cache)
        }
    }

    /// A closed-loop cell of plain proxying with every proxy's access log on, each in its
    /// customary form: what a line per request costs.
    pub fn log(conns: usize) -> Cell {
        Cell {
            id: format!("log-c{conns}"),
            scenario: ScenarioKind::Log,
            label: format!("access log on, {conns} conns"),
            access_log: true,
            ..Cell::closed(conns, 0, ScenarioKind::Log)
        }
    }

    /// The idle cell again, with Ringway's transparent huge pages off: the memory an operator
    /// gets for the CPU that huge pages save (`runtime.transparent_huge_pages`).
    pub fn idle_without_huge_pages(n: usize) -> Cell {
        Cell {
            id: format!("idle-{n}-no-thp"),
            label: format!("{n} idle keep-alive connections, Ringway without huge pages"),
            huge_pages: false,
            ..Cell::idle(n)
        }
    }
}

/// The fixed cells of a plan (the sweep's cells are made as it goes).
pub fn fixed_cells(p: &Plan) -> Vec<Cell> {
    let mut v = Vec::new();
    if p.has(ScenarioKind::Closed) {
        for &c in &p.closed_conns {
            v.push(Cell::closed(c, 0, ScenarioKind::Closed));
        }
    }
    if p.has(ScenarioKind::Rate) {
        v.push(Cell::rate(p.rate, p.rate_conns, ScenarioKind::Rate));
    }
    if p.has(ScenarioKind::Bodies) {
        for &b in &p.bodies {
            v.push(Cell::closed(p.body_conns, b, ScenarioKind::Bodies));
        }
        for &b in &p.chunked_bodies {
            v.push(Cell::chunked(p.body_conns, b));
        }
    }
    if p.has(ScenarioKind::Idle) {
        v.push(Cell::idle(p.idle_conns));
        v.push(Cell::idle_without_huge_pages(p.idle_conns));
    }
    if p.has(ScenarioKind::Tls) {
        for &c in &p.tls_conns {
            v.push(Cell::tls(c, TlsLoad::KeepAlive));
        }
        if p.handshake_conns > 0 {
            v.push(Cell::tls(p.handshake_conns, TlsLoad::Handshake));
        }
    }
    if p.has(ScenarioKind::Cache) {
        for &c in &p.cache_conns {
            v.push(Cell::cache(c));
        }
    }
    if p.has(ScenarioKind::Log) {
        for &c in &p.log_conns {
            v.push(Cell::log(c));
        }
    }
    v
}

/// The sweep's rates, lowest first.
pub fn sweep_rates(p: &Plan) -> Vec<u64> {
    let mut v = Vec::new();
    let mut r = p.sweep_start;
    while r <= p.sweep_max {
        v.push(r);
        r += p.sweep_step;
    }
    v
}

pub fn size_name(b: usize) -> String {
    if b >= 1024 && b.is_multiple_of(1024) {
        format!("{}KiB", b / 1024)
    } else {
        format!("{b}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(size_name(0), "0B");
        assert_eq!(size_name(16384), "16KiB");
        assert_eq!(Cell::closed(200, 0, ScenarioKind::Closed).id, "closed-c200");
        assert_eq!(Cell::closed(50, 1024, ScenarioKind::Bodies).id, "body-1KiB");
        assert_eq!(Cell::chunked(50, 262144).id, "body-256KiB-chunked");
        assert_eq!(Cell::rate(40000, 200, ScenarioKind::Rate).id, "rate-r40000");
        assert_eq!(Cell::tls(50, TlsLoad::KeepAlive).id, "tls-c50");
        assert_eq!(Cell::tls(50, TlsLoad::Handshake).id, "tls-handshake-c50");
        assert_eq!(
            Cell::tls(50, TlsLoad::Handshake).scenario,
            ScenarioKind::Tls
        );
    }
}
