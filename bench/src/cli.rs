//! Command-line options of the harness.
//!
//! Every knob that a bigger machine or a different build needs is an option, so a
//! user never edits the source to reproduce or extend a run.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which proxies can be measured.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Ringway,
    /// The same Ringway source built with profile-guided optimisation (`bench/pgo-build`):
    /// measured beside the plain build so the layout's effect is a same-run ratio.
    #[value(name = "ringway-pgo")]
    #[serde(rename = "ringway-pgo")]
    RingwayPgo,
    Nginx,
    Haproxy,
    /// `loadgen relay`: a featureless relay (heads passed as is, one upstream connection per
    /// client). Not a peer, and never judged: it shows the CPU per request that this machine
    /// costs any proxy, so absolute figures can be read against it.
    Floor,
    /// `loadgen raw-relay`: the same relay written on io_uring directly, with no async runtime:
    /// what is left of the floor without monoio's per-operation and per-task work.
    #[value(name = "floor-raw")]
    #[serde(rename = "floor-raw")]
    FloorRaw,
}

impl ProxyKind {
    /// Either build of Ringway: both run the same config and are judged against the targets.
    pub fn is_ringway(self) -> bool {
        matches!(self, ProxyKind::Ringway | ProxyKind::RingwayPgo)
    }

    /// Either featureless relay: shown for reference, never judged.
    pub fn is_floor(self) -> bool {
        matches!(self, ProxyKind::Floor | ProxyKind::FloorRaw)
    }

    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Ringway => "ringway",
            ProxyKind::RingwayPgo => "ringway-pgo",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::Floor => "floor",
            ProxyKind::FloorRaw => "floor-raw",
        }
    }
}

/// Which program generates the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// The workspace load generator (closed and open loop, corrected latency).
    Loadgen,
    /// Debian's wrk: closed loop only, so constant-rate cells are skipped with it.
    Wrk,
}

/// Which program serves as the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// `loadgen serve`: fixed response, counts connections and requests.
    Loadgen,
    /// nginx serving a static file: a fallback when loadgen is not built; it
    /// cannot report how many upstream connections the proxy opened.
    Nginx,
}

/// The scenario families of issue 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    Closed,
    Rate,
    Sweep,
    Bodies,
    Idle,
    Tls,
    /// Every request answered from the proxy's response cache.
    Cache,
    /// Plain proxying with each proxy's access log written to a file.
    Log,
}

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Ringway against nginx and HAProxy on the same cores: throughput, latency, CPU per request, memory",
    version
)]
pub struct Args {
    /// A tiny version of every scenario (well under a minute); targets are not checked.
    #[arg(long)]
    pub quick: bool,

    /// Ringway binary (default: target/release/ringway under the repository root).
    #[arg(long)]
    pub ringway: Option<PathBuf>,
    /// PGO build of Ringway, measured when `ringway-pgo` is among --proxies (default:
    /// target/pgo/ringway, which `bench/pgo-build` writes).
    #[arg(long)]
    pub ringway_pgo: Option<PathBuf>,
    /// loadgen binary (default: target/release/loadgen under the repository root).
    #[arg(long)]
    pub loadgen: Option<PathBuf>,
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    #[arg(long, default_value = "haproxy")]
    pub haproxy: PathBuf,
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,

    #[arg(long, value_enum, default_value = "loadgen")]
    pub driver: DriverKind,
    #[arg(long, value_enum, default_value = "loadgen")]
    pub upstream: UpstreamKind,

    /// Proxies to measure, interleaved within every repetition.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ringway,nginx,haproxy,floor"
    )]
    pub proxies: Vec<ProxyKind>,
    /// Scenario families to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "closed,rate,sweep,bodies,idle,tls,cache,log"
    )]
    pub scenarios: Vec<ScenarioKind>,

    /// CPUs the proxy runs on (one worker per CPU).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub proxy_cpus: Vec<usize>,
    /// CPUs the load generator and the upstreams run on.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub load_cpus: Vec<usize>,

    /// Repetitions of every cell; the report gives the median with min and max.
    #[arg(long)]
    pub reps: Option<usize>,
    /// Measured duration of each run, e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before each measured run (not counted), e.g. 1s.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,

    /// Client connections of the closed-loop cells.
    #[arg(long, value_delimiter = ',')]
    pub conns: Option<Vec<usize>>,
    /// Constant request rate of the rate cell (req/s).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Connections the open-loop generator may use.
    #[arg(long)]
    pub rate_conns: Option<usize>,
    /// First rate of the sweep (req/s).
    #[arg(long)]
    pub sweep_start: Option<u64>,
    /// Step of the sweep (req/s).
    #[arg(long)]
    pub sweep_step: Option<u64>,
    /// Highest rate the sweep tries (req/s).
    #[arg(long)]
    pub sweep_max: Option<u64>,
    /// Response body sizes in bytes (`--bodies` alone: none, only the chunked cells).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub bodies: Option<Vec<usize>>,
    /// Response body sizes in bytes sent chunked by the upstream (in 16 KiB chunks;
    /// `--chunked-bodies` alone: none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub chunked_bodies: Option<Vec<usize>>,
    /// Connections of the body-size cells.
    #[arg(long)]
    pub body_conns: Option<usize>,
    /// Idle keep-alive client connections of the memory cell.
    #[arg(long)]
    pub idle_conns: Option<usize>,
    /// Client connections of the TLS keep-alive cells (default 50,200; 0 runs none).
    #[arg(long, value_delimiter = ',')]
    pub tls_conns: Option<Vec<usize>>,
    /// Client connections of the TLS handshake cell (default 50; 0 runs none).
    #[arg(long)]
    pub handshake_conns: Option<usize>,
    /// Client connections of the cache-hit cells (default 50,200; 0 runs none).
    #[arg(long, value_delimiter = ',')]
    pub cache_conns: Option<Vec<usize>>,
    /// Client connections of the access-log cells (default 50,200; 0 runs none).
    #[arg(long, value_delimiter = ',')]
    pub log_conns: Option<Vec<usize>>,

    /// Where results go (JSON, markdown, SVGs). Default: bench/results, or
    /// bench/results/tmp for --quick.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Targets file (ratios against the better peer).
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// Do not check targets.
    #[arg(long)]
    pub no_targets: bool,
    /// Do not rewrite the results section of bench/README.md.
    #[arg(long)]
    pub no_readme: bool,

    /// CPU (in cores, averaged over the run) that processes outside the run may use
    /// before the run counts as disturbed and is redone.
    #[arg(long, default_value_t = 0.05)]
    pub disturb_cores: f64,
    /// How many times a disturbed run is redone before it is kept, flagged.
    #[arg(long)]
    pub max_redo: Option<usize>,

    /// Record Ringway with `perf record` during the measured part of its first run
    /// and write perf data to this file (used by flamegraphs/record).
    #[arg(long)]
    pub perf_data: Option<PathBuf>,
    /// Call-graph mode passed to perf record (`fp`, `dwarf`, `lbr`).
    #[arg(long, default_value = "dwarf")]
    pub perf_call_graph: String,
}

/// Parses `10s`, `250ms`, `1m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10s, 250ms)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("`{s}` is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Formats a duration the way loadgen and wrk accept it.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("x").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
    }
}
