//! Load drivers behind one interface: `loadgen` (default; closed and open loop,
//! latency corrected for coordinated omission) and Debian's `wrk` (closed loop
//! only), each run pinned to the load CPUs and read back into one `LoadResult`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{fmt_duration, DriverKind};
use crate::procs;

pub struct LoadSpec<'a> {
    pub kind: DriverKind,
    pub bin: &'a Path,
    pub url: &'a str,
    pub conns: usize,
    pub duration: Duration,
    /// Open loop at this rate (req/s); None is closed loop.
    pub rate: Option<u64>,
    pub cpus: &'a [usize],
    pub json_path: &'a Path,
    /// Every request says `Connection: close`: a new connection (and handshake) each.
    pub close: bool,
}

/// The request header that makes every request a connection of its own.
const CLOSE: &str = "Connection: close";

/// Latency figures in microseconds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Latency {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub mean: Option<f64>,
    #[serde(default)]
    pub p50: Option<f64>,
    #[serde(default)]
    pub p90: Option<f64>,
    #[serde(default)]
    pub p99: Option<f64>,
    #[serde(default)]
    pub p999: Option<f64>,
    #[serde(default)]
    pub p9999: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// What one load run measured; mirrors loadgen's JSON.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub responses: u64,
    #[serde(default)]
    pub rps: f64,
    #[serde(default)]
    pub target_rps: Option<f64>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub bytes_read: Option<u64>,
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    #[serde(default)]
    pub latency_us: Latency,
    /// (percentile, microseconds) points of the latency distribution.
    #[serde(default)]
    pub percentiles: Vec<(f64, f64)>,
}

impl LoadResult {
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Runs the driver to completion and reads its result.
pub fn run(spec: &LoadSpec) -> Result<LoadResult, String> {
    match spec.kind {
        DriverKind::Loadgen => run_loadgen(spec),
        DriverKind::Wrk => run_wrk(spec),
    }
}

fn run_loadgen(spec: &LoadSpec) -> Result<LoadResult, String> {
    let cpus: Vec<String> = spec.cpus.iter().map(|c| c.to_string()).collect();
    let threads = spec.cpus.len().max(1).min(spec.conns.max(1));
    let _ = fs::remove_file(spec.json_path);
    let mut cmd = Command::new(spec.bin);
    cmd.arg("-c")
        .arg(spec.conns.to_string())
        .arg("-d")
        .arg(fmt_duration(spec.duration))
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--cpus")
        .arg(cpus.join(","))
        // The harness warms up in a run of its own so the CPU window and the
        // request count cover exactly the same requests.
        .args(["--warmup", "0s"])
        .arg("--json")
        .arg(spec.json_path)
        .arg("--quiet");
    if let Some(r) = spec.rate {
        cmd.arg("--rate").arg(r.to_string());
    }
    if spec.url.starts_with("https://") {
        // The bench's certificate is self-signed.
        cmd.arg("--insecure");
    }
    if spec.close {
        cmd.args(["-H", CLOSE]);
    }
    cmd.arg(spec.url);
    let out = procs::spawn_pinned(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        spec.cpus,
    )
    .and_then(|c| c.wait_with_output())
    .map_err(|e| format!("running loadgen ({}): {e}", spec.bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "loadgen exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = fs::read_to_string(spec.json_path).map_err(|e| format!("loadgen JSON: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("loadgen JSON {}: {e}", spec.json_path.display()))
}

fn run_wrk(spec: &LoadSpec) -> Result<LoadResult, String> {
    if spec.rate.is_some() {
        return Err("wrk has no open-loop mode".into());
    }
    let threads = spec.cpus.len().max(1).min(spec.conns.max(1));
    let secs = spec.duration.as_secs().max(1);
    let mut cmd = Command::new(spec.bin);
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{}", spec.conns.max(threads)))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    if spec.close {
        cmd.args(["-H", CLOSE]);
    }
    // wrk speaks https:// and does not verify the certificate.
    cmd.arg(spec.url);
    let out = procs::spawn_pinned(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        spec.cpus,
    )
    .and_then(|c| c.wait_with_output())
    .map_err(|e| format!("running wrk ({}): {e}", spec.bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("could not read wrk output: {text}"))
}

/// `123.45us`, `1.2ms`, `2s` -> microseconds.
fn wrk_time(s: &str) -> Option<f64> {
    let s = s.trim();
    for (suf, m) in [("us", 1.0), ("ms", 1e3), ("s", 1e6), ("m", 6e7)] {
        if let Some(n) = s.strip_suffix(suf) {
            return n.parse::<f64>().ok().map(|v| v * m);
        }
    }
    None
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> Option<LoadResult> {
    let mut r = LoadResult::default();
    let mut in_dist = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            let mut it = t.split_whitespace();
            if let (Some(p), Some(v)) = (it.next(), it.next()) {
                if let (Some(p), Some(us)) = (
                    p.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()),
                    wrk_time(v),
                ) {
                    r.percentiles.push((p, us));
                    match p as u32 {
                        50 => r.latency_us.p50 = Some(us),
                        90 => r.latency_us.p90 = Some(us),
                        99 => r.latency_us.p99 = Some(us),
                        _ => {}
                    }
                    continue;
                }
            }
            in_dist = false;
        }
        if t.starts_with("Latency ") {
            // Latency   avg   stdev   max   +/- stdev
            let v: Vec<&str> = t.split_whitespace().collect();
            r.latency_us.mean = v.get(1).and_then(|s| wrk_time(s));
            r.latency_us.max = v.get(3).and_then(|s| wrk_time(s));
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
        } else if t.contains(" requests in ") {
            let n = t.split_whitespace().next()?.parse().ok()?;
            r.requests = n;
            r.responses = n;
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut it = part.split_whitespace();
                if let (Some(k), Some(v)) =
                    (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
                {
                    let k = match k {
                        "read" | "write" => "reset",
                        other => other,
                    };
                    *r.errors.entry(k.to_string()).or_default() += v;
                }
            }
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors
                .insert("status_non2xx".into(), v.trim().parse().ok()?);
        }
    }
    if r.rps > 0.0 || r.requests > 0 {
        Some(r)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output() {
        let t = "Running 1s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.00us  100.00us   3.10ms   90.00%
    Req/Sec    90.00k     1.00k   95.00k    80.00%
  Latency Distribution
     50%  490.00us
     75%  520.00us
     90%  600.00us
     99%    1.20ms
  90000 requests in 1.00s, 10.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 5
Requests/sec:  90000.00
Transfer/sec:     10.00MB
";
        let r = parse_wrk(t).unwrap();
        assert_eq!(r.requests, 90000);
        assert_eq!(r.rps, 90000.0);
        assert_eq!(r.latency_us.p99, Some(1200.0));
        assert_eq!(r.latency_us.max, Some(3100.0));
        assert_eq!(r.errors.get("reset"), Some(&3));
        assert_eq!(r.total_errors(), 8);
        assert_eq!(r.percentiles.len(), 4);
    }

    #[test]
    fn loadgen_json() {
        let j = r#"{"mode":"closed","url":"http://x/","connections":50,"threads":1,"duration_s":1.0,"requests":10,"responses":10,"rps":10.0,"target_rps":null,"bytes_read":100,"errors":{"connect":0,"reset":1,"timeout":0,"status_4xx":0,"status_5xx":0,"parse":0},"latency_us":{"min":1,"mean":2,"p50":2,"p90":3,"p99":4,"p999":5,"p9999":6,"max":7},"percentiles":[[50.0,2.0],[99.0,4.0]]}"#;
        let r: LoadResult = serde_json::from_str(j).unwrap();
        assert_eq!(r.total_errors(), 1);
        assert_eq!(r.latency_us.p999, Some(5.0));
        assert_eq!(r.percentiles[1], (99.0, 4.0));
    }
}
